//! The Pingora `ProxyHttp` implementation. Each phase only dispatches to a module.

mod api;
mod body;
mod cache;
mod context;
mod forcing;
pub mod intake;
mod jobs;
mod log;
mod respond;
mod trace;
mod verdict;

use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use bytes::Bytes;
use pingora::http::{RequestHeader, ResponseHeader};
use pingora::proxy::{FailToProxy, ProxyHttp, Session};
use pingora::upstreams::peer::{HttpPeer, Peer};
use pingora::{Error, ErrorType};

pub use context::RequestCtx;

use crate::metrics::labels::{Upstream, UpstreamError, UpstreamRejection};
use crate::openai::{models_body, ApiError, Endpoint, ErrorCode};
use crate::outcome::UpstreamErrorKind;
use crate::reasoning::ResponseRewriter;
use crate::state::Gateway;

/// The OpenAI-compatible proxy.
pub struct GatewayProxy {
    gw: Arc<Gateway>,
}

impl GatewayProxy {
    /// Takes a slot in a pool with `max_inflight` (waiting in its line if need be) and keeps
    /// it in `ctx` until the request ends; the 429 to answer when refused.
    async fn admit(
        &self,
        ctx: &mut RequestCtx,
        pool: &crate::upstream::Pool,
    ) -> Result<(), ApiError> {
        let Some(admission) = &pool.admission else {
            return Ok(());
        };
        let name = pool.config.name.as_str();
        let m = &self.gw.metrics;
        let slot = match admission.try_admit() {
            Some(slot) => slot,
            None => {
                let queued = m
                    .upstream_queued_requests
                    .with(&Upstream { upstream: name });
                queued.inc();
                let since = Instant::now();
                let slot = admission.wait().await;
                queued.dec();
                ctx.queue_wait = since.elapsed();
                let slot = slot.map_err(|why| {
                    m.upstream_rejections_total
                        .with(&UpstreamRejection {
                            upstream: name,
                            reason: why,
                        })
                        .inc();
                    why.error(name, &admission.config)
                })?;
                m.upstream_queue_wait_seconds
                    .with(&Upstream { upstream: name })
                    .observe(ctx.queue_wait.as_secs_f64());
                slot
            }
        };
        ctx.slot = Some(slot);
        Ok(())
    }

    /// A proxy over the shared gateway state.
    pub fn new(gw: Arc<Gateway>) -> Self {
        GatewayProxy { gw }
    }

    /// Everything before choosing a peer. `Ok(true)`: the response was written here.
    async fn intake(&self, session: &mut Session, ctx: &mut RequestCtx) -> pingora::Result<bool> {
        if session.req_header().uri.path().starts_with("/v1/async/") {
            return jobs::handle(&self.gw, session, ctx).await.map(|_| true);
        }
        let header = session.req_header();
        let (method, path) = (header.method.as_str(), header.uri.path());
        let endpoint = match crate::api::Api::from_request(method, path) {
            // Translated APIs run the chat path; `ctx.api` remembers what the client spoke.
            Some(api) => {
                ctx.api = crate::api::Api::of_path(path);
                match api {
                    Ok(_) => Endpoint::ChatCompletions,
                    Err(err) => return respond::error(session, ctx, err).await.map(|_| true),
                }
            }
            None => match Endpoint::from_request(method, path) {
                Ok(e) => {
                    ctx.api = crate::api::Api::of_endpoint(e);
                    e
                }
                Err(err) => return respond::error(session, ctx, err).await.map(|_| true),
            },
        };
        ctx.endpoint = Some(endpoint);
        let snapshot = self.gw.snapshot.load_full();
        ctx.snapshot = Some(snapshot.clone());
        if endpoint == Endpoint::Models {
            let body = models_body(snapshot.routes.model_names());
            return respond::json(session, ctx, 200, body).await.map(|_| true);
        }
        if endpoint == Endpoint::Model {
            // Any model a route serves, globs included (what a request with it would reach).
            let id = crate::openai::model_id_of_path(session.req_header().uri.path());
            return match id.filter(|id| snapshot.routes.find(id).is_some()) {
                Some(id) => {
                    let body =
                        serde_json::to_vec(&crate::openai::model_object(&id)).unwrap_or_default();
                    respond::json(session, ctx, 200, body).await.map(|_| true)
                }
                None => {
                    let id = crate::openai::model_id_of_path(session.req_header().uri.path());
                    let err = ApiError::model_not_found(id.as_deref().unwrap_or(""));
                    respond::error(session, ctx, err).await.map(|_| true)
                }
            };
        }
        let body = match intake::read_body(session, &snapshot.config, &self.gw.metrics).await {
            Ok(b) => b,
            Err(err) => return respond::error(session, ctx, err).await.map(|_| true),
        };
        ctx.request_bytes = body.len();
        let (body, translated) = match api::decode_request(ctx.api, body) {
            Ok(b) => b,
            Err(err) => return respond::error(session, ctx, err).await.map(|_| true),
        };
        let header = |name: &str| intake::request_header(session, name);
        let live = |route: &str, c: &_| self.gw.canary.live(route, c);
        let routed = match intake::route(&snapshot, endpoint, body, &header, &live) {
            Ok(r) => r,
            Err(not) => {
                // Counted under the route, variant and pool it got as far as (an upstream
                // that is down shows there; a canary whose pool is down is rolled back).
                ctx.route = not.route;
                ctx.variant = not.variant;
                ctx.variant_forced = not.variant_forced;
                ctx.pool = not.pool;
                return respond::error(session, ctx, not.error).await.map(|_| true);
            }
        };
        ctx.stream_requested = routed.info.stream;
        let mut routed = routed;
        if let Some(t) = translated {
            if let Err(err) = api::prepare(ctx, &mut routed, t) {
                ctx.route = Some(routed.route);
                return respond::error(session, ctx, err).await.map(|_| true);
            }
        }
        // `x-reasoning-checkpoints: true` (the route's interval) or a step count; streams only.
        if routed.info.stream && !routed.aggregate {
            ctx.checkpoints = match header("x-reasoning-checkpoints").as_deref().map(str::trim) {
                Some("true" | "on") => routed.route.reasoning.checkpoint_every,
                Some(n) => n.parse().unwrap_or(0),
                None => 0,
            };
        }
        // A route's effort table turns the request's `reasoning_effort` (chat, or a Responses
        // `reasoning.effort`) into its reasoning budget.
        let effort = routed.route.reasoning.budget.as_ref().and_then(|b| {
            let e = routed.info.body.get("reasoning_effort")?.as_str()?;
            b.of_effort(e)
        });
        if let Some(n) = effort {
            ctx.reasoning_budget = Some(ctx.reasoning_budget.map_or(n, |r| r.min(n)));
        }
        ctx.response_format = routed.info.body.get("response_format").cloned();
        ctx.strip_usage = routed.usage_injected;
        ctx.aggregate = routed.aggregate;
        ctx.thinking_off = routed
            .info
            .body
            .get("chat_template_kwargs")
            .and_then(|k| k.get("enable_thinking"))
            == Some(&serde_json::Value::Bool(false));
        trace::request(ctx, &routed.info.body);
        if cache::lookup(&self.gw, session, ctx, &routed, endpoint).await? {
            return Ok(true);
        }
        if let Err(err) = self.admit(ctx, &routed.pool).await {
            ctx.route = Some(routed.route);
            ctx.pool = Some(routed.pool);
            ctx.retry_after = Some(1);
            return respond::error(session, ctx, err).await.map(|_| true);
        }
        if let Some((variant, pool, body)) = routed.shadow {
            let authorization = intake::request_header(session, "authorization").or_else(|| {
                intake::request_header(session, "x-api-key").map(|k| format!("Bearer {k}"))
            });
            crate::shadow::spawn(
                self.gw.clone(),
                crate::shadow::ShadowRequest {
                    route: routed.route.clone(),
                    variant,
                    pool,
                    body,
                    endpoint,
                    path: match ctx.api.filter(|a| a.translated()) {
                        Some(_) => crate::api::Api::Chat.path().to_string(),
                        None => session.req_header().uri.path().to_string(),
                    },
                    authorization,
                },
            );
        }
        ctx.variant = routed.variant;
        ctx.variant_forced = routed.variant_forced;
        ctx.route = Some(routed.route);
        ctx.pool = Some(routed.pool);
        ctx.upstream_body = routed.upstream_body;
        if let (Some(route), Some(pool)) = (&ctx.route, &ctx.pool) {
            let plan = forcing::plan(route, pool, ctx);
            ctx.forcing = plan;
        }
        if ctx.forcing.is_some() {
            forcing::serve(self, session, ctx).await?;
            return Ok(true);
        }
        Ok(false)
    }
}

#[async_trait]
impl ProxyHttp for GatewayProxy {
    type CTX = RequestCtx;

    fn new_ctx(&self) -> RequestCtx {
        RequestCtx::new()
    }

    async fn request_filter(
        &self,
        session: &mut Session,
        ctx: &mut RequestCtx,
    ) -> pingora::Result<bool> {
        ctx.start = Instant::now();
        if let Some(guard) = crate::listener::GuardedStream::of(session.stream()) {
            guard.header_received();
        }
        ctx._inflight = Some(context::InflightRequest::new(self.gw.clone()));
        ctx.request_id = intake::request_id(session);
        trace::start(&self.gw, session, ctx);
        self.intake(session, ctx).await
    }

    async fn upstream_peer(
        &self,
        _session: &mut Session,
        ctx: &mut RequestCtx,
    ) -> pingora::Result<Box<HttpPeer>> {
        if ctx.attempts() == 0 {
            // Waiting for a pool slot is the upstream's capacity, not gateway work.
            ctx.overhead += ctx.start.elapsed().saturating_sub(ctx.queue_wait);
        }
        let pool = ctx
            .pool
            .clone()
            .ok_or_else(|| Error::new(ErrorType::InternalError))?;
        let Some((index, guard)) = pool.pick(&ctx.tried) else {
            let err = ApiError::new(
                ErrorCode::NoHealthyUpstream,
                format!(
                    "No healthy endpoint left in upstream `{}`.",
                    pool.config.name
                ),
            );
            ctx.error = Some(err);
            ctx.upstream_error = Some(UpstreamErrorKind::NoHealthyEndpoint);
            return Err(Error::explain(
                ErrorType::HTTPStatus(503),
                "no healthy upstream endpoint",
            ));
        };
        ctx.tried.push(index);
        let ep = guard.endpoint.clone();
        trace::attempt(ctx, ep.addr);
        ctx.endpoint_guard = Some(guard);
        let tls = pool.config.tls.as_ref();
        let sni = tls.map_or(String::new(), |t| t.server_name_for(&ep.name).to_string());
        let mut peer = HttpPeer::new(ep.addr, tls.is_some(), sni);
        peer.group_key = pool.connection_group;
        if let Some(t) = tls {
            peer.options.verify_cert = t.verify;
            peer.options.verify_hostname = t.verify;
            peer.options.ca = t.ca.clone();
        }
        peer.options.connection_timeout = Some(pool.config.connect_timeout);
        peer.options.total_connection_timeout = Some(pool.config.connect_timeout);
        // With `step_timeout_policy: abort` the step timeout is the read timeout: it also bounds
        // the wait for the first byte.
        let step_abort = ctx.route.as_ref().and_then(|r| {
            r.reasoning
                .step_timeout
                .filter(|_| r.reasoning.step_timeout_abort)
        });
        peer.options.read_timeout = Some(step_abort.unwrap_or(pool.config.read_timeout));
        peer.options.write_timeout = Some(pool.config.read_timeout);
        peer.options.idle_timeout = Some(Duration::from_secs(60));
        Ok(Box::new(peer))
    }

    fn fail_to_connect(
        &self,
        _session: &mut Session,
        _peer: &HttpPeer,
        ctx: &mut RequestCtx,
        mut e: Box<Error>,
    ) -> Box<Error> {
        let kind = respond::connect_failure_kind(&e);
        trace::attempt_failed(ctx, kind.label());
        let local = kind == UpstreamErrorKind::LocalResources;
        self.gw
            .metrics
            .upstream_errors_total
            .with(&UpstreamError {
                upstream: ctx.upstream_label(),
                kind,
            })
            .inc();
        if let Some(guard) = ctx.endpoint_guard.take() {
            if local {
                // Not the endpoint's fault: taking it out of rotation would turn a moment of fd
                // exhaustion under overload into 503s for everyone until its next check.
                tracing::warn!(request_id = %ctx.request_id, endpoint = %guard.endpoint.addr, error = %e, "The gateway could not open a socket to the upstream (file-descriptor limit or memory); the endpoint stays in rotation.");
            } else if guard.endpoint.set_healthy(false) {
                tracing::warn!(request_id = %ctx.request_id, endpoint = %guard.endpoint.name, error = %e, "Connecting to an upstream endpoint failed; it is out of rotation until its health check passes.");
            }
        }
        // Nothing has reached the client yet, so another endpoint may be tried.
        let more = ctx.pool.as_ref().is_some_and(|p| {
            p.endpoints
                .iter()
                .enumerate()
                .any(|(i, ep)| !ctx.tried.contains(&i) && ep.is_healthy())
        });
        e.set_retry(more);
        e
    }

    fn error_while_proxy(
        &self,
        peer: &HttpPeer,
        session: &mut Session,
        e: Box<Error>,
        ctx: &mut RequestCtx,
        client_reused: bool,
    ) -> Box<Error> {
        let mut e = e.more_context(format!("peer {}", peer.address()));
        // The whole body is held in `ctx`, so a POST could be resent; it is only when the
        // upstream cannot have started work on it. A generation is not idempotent: resending
        // one the upstream read and then died on runs it twice (paid twice, and a second
        // long wait), so Pingora's default of retrying any failure on a reused connection is
        // overridden.
        if client_reused
            && session.response_written().is_none()
            && ctx.first_byte_at.is_none()
            && ctx.upstream_status.is_none()
            && upstream_cannot_have_started(&e)
        {
            // A pooled connection the upstream had already closed: the endpoint may be fine,
            // so it can be picked again, on a new connection once the pool's stale ones are
            // spent (retries are bounded).
            e.set_retry(true);
            trace::attempt_failed(ctx, "stale_connection");
            ctx.stale_retries += 1;
            ctx.tried.pop();
        } else {
            e.set_retry(false);
        }
        e
    }

    async fn request_body_filter(
        &self,
        _session: &mut Session,
        body: &mut Option<Bytes>,
        end_of_stream: bool,
        ctx: &mut RequestCtx,
    ) -> pingora::Result<()> {
        // The body was read whole in `request_filter`; Pingora replays only its tail (see
        // `intake::read_body`), which is swapped for the full, possibly rewritten, body.
        *body = end_of_stream.then(|| ctx.upstream_body.clone());
        Ok(())
    }

    async fn connected_to_upstream(
        &self,
        _session: &mut Session,
        _reused: bool,
        _peer: &HttpPeer,
        fd: std::os::unix::io::RawFd,
        _digest: Option<&pingora::protocols::Digest>,
        ctx: &mut RequestCtx,
    ) -> pingora::Result<()> {
        ctx.upstream_fd = Some(fd);
        Ok(())
    }

    async fn upstream_request_filter(
        &self,
        _session: &mut Session,
        req: &mut RequestHeader,
        ctx: &mut RequestCtx,
    ) -> pingora::Result<()> {
        req.remove_header("transfer-encoding");
        req.insert_header("content-length", ctx.upstream_body.len().to_string())?;
        req.insert_header("x-request-id", ctx.request_id.as_str())?;
        // The job tenant seal is the gateway's own secret, never the upstream's business.
        req.remove_header(crate::tenant::RELAY_HEADER);
        // The reasoning parser reads the response, so it must arrive uncompressed.
        req.remove_header("accept-encoding");
        // The gateway answered it when it read the body, which it sends in one go.
        req.remove_header("expect");
        if let Some(guard) = &ctx.endpoint_guard {
            req.insert_header("host", guard.endpoint.host.as_str())?;
        }
        api::upstream_request(ctx, req)?;
        trace::upstream_headers(ctx, req)?;
        // The pool's own key replaces the client's (which still names the tenant for the cache).
        if let Some(auth) = ctx.pool.as_ref().and_then(|p| p.authorization.as_ref()) {
            req.insert_header("authorization", auth.0.as_str())?;
        }
        Ok(())
    }

    async fn upstream_response_filter(
        &self,
        _session: &mut Session,
        resp: &mut ResponseHeader,
        ctx: &mut RequestCtx,
    ) -> pingora::Result<()> {
        let status = resp.status.as_u16();
        ctx.upstream_status = Some(status);
        if status >= 500 {
            ctx.upstream_error = Some(UpstreamErrorKind::Status5xx);
        }
        let content_type = resp
            .headers
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("");
        if let (Some(route), Some(endpoint), false) = (&ctx.route, ctx.endpoint, ctx.passthrough) {
            ctx.rewriter =
                ResponseRewriter::for_response(&route.reasoning, endpoint, status, content_type)
                    .map(|rw| rw.with_request(ctx.response_format.take(), ctx.strip_usage))
                    .map(|rw| rw.with_checkpoints(ctx.checkpoints))
                    .map(|rw| rw.with_reasoning_budget(ctx.reasoning_budget))
                    .map(|rw| match &ctx.forcing {
                        Some(p) => rw.with_forcing(p.answer, p.min_tokens),
                        None => rw,
                    })
                    .map(|rw| {
                        if ctx.thinking_off {
                            rw.thinking_off()
                        } else {
                            rw
                        }
                    });
        }
        if ctx.rewriter.is_some() {
            resp.remove_header("content-length");
        }
        if let (true, Some(rw), Some(route)) = (ctx.aggregate, &ctx.rewriter, &ctx.route) {
            if rw.is_stream() {
                let completions = ctx.endpoint == Some(Endpoint::Completions);
                ctx.aggregator = Some(crate::reasoning::aggregate::Aggregator::new(
                    completions,
                    route.reasoning.output_field,
                ));
                resp.insert_header("content-type", "application/json")?;
            }
        }
        api::upstream_response(ctx, resp, status)?;
        Ok(())
    }

    async fn response_filter(
        &self,
        _session: &mut Session,
        resp: &mut ResponseHeader,
        ctx: &mut RequestCtx,
    ) -> pingora::Result<()> {
        respond::gateway_headers(ctx, resp)?;
        Ok(())
    }

    fn response_body_filter(
        &self,
        _session: &mut Session,
        body: &mut Option<Bytes>,
        end_of_stream: bool,
        ctx: &mut RequestCtx,
    ) -> pingora::Result<Option<Duration>> {
        let entered = Instant::now();
        body::filter(ctx, body, end_of_stream);
        ctx.overhead += entered.elapsed();
        Ok(None)
    }

    async fn fail_to_proxy(
        &self,
        session: &mut Session,
        e: &Error,
        ctx: &mut RequestCtx,
    ) -> FailToProxy {
        respond::proxy_failure(session, e, ctx).await
    }

    async fn logging(&self, session: &mut Session, e: Option<&Error>, ctx: &mut RequestCtx) {
        let finished = log::record(&self.gw, session, e, ctx);
        verdict::record(&self.gw, ctx, &finished);
        cache::store(&self.gw, ctx, finished.report.as_ref());
        if let Some(guard) = crate::listener::GuardedStream::of(session.stream()) {
            guard.await_next_header();
        }
    }
}

/// A failure that proves the upstream never had the whole request: writing it failed, or the
/// connection was reset, which a peer's kernel does when it closed the socket with request
/// bytes unread (a keep-alive timeout firing as the request arrived). A clean close (EOF)
/// after the request was written proves nothing: the upstream may have read it and died while
/// generating, and is not sent it again.
fn upstream_cannot_have_started(e: &Error) -> bool {
    if e.esource() != &pingora::ErrorSource::Upstream {
        return false;
    }
    match e.etype() {
        ErrorType::WriteError => true,
        ErrorType::ReadError => e
            .root_cause()
            .downcast_ref::<std::io::Error>()
            .is_some_and(|io| {
                matches!(
                    io.kind(),
                    std::io::ErrorKind::ConnectionReset | std::io::ErrorKind::BrokenPipe
                )
            }),
        _ => false,
    }
}
