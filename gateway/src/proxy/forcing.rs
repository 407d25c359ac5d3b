//! Budget forcing (issue 30): a route's `reasoning.budget` with `on_exceed: answer` or
//! `min_tokens` continues a generation the gateway cut short, on the same client response.
//!
//! Design. Pingora proxies one upstream request per client response, and its body filter is
//! synchronous: it cannot open a second upstream request and wait for it. So a request that
//! may need a continuation is not handed to Pingora's upstream phases at all: `request_filter`
//! runs the exchange itself, with the hyper client the shadow copies and async jobs already
//! use (`upstream::connect::open`, the pool's endpoints, TLS and key). Everything else is the
//! proxy's own code, called in the same order Pingora calls it: `upstream_request_filter` for
//! the request head, `upstream_response_filter` and `response_filter` for the response head,
//! `response_body_filter` for every body chunk (reasoning split, metrics, the client's API,
//! JSON assembly). When the body filter reports that the reasoning reached the budget (or
//! ended below the minimum), the upstream response is dropped, which closes its connection and
//! stops the generation, and a continuation request goes to the pool: the original request
//! with the reasoning so far as the final assistant message, closed by the gateway
//! (`continue_final_message: true`, `add_generation_prompt: false`). Its stream is fed to the
//! same rewriter, so the client reads one stream: reasoning, the bridge, the answer, and one
//! usage that counts both parts. Requests on other routes never come here.

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use pingora::http::{RequestHeader, ResponseHeader};
use pingora::proxy::{ProxyHttp, Session};
use pingora::{Error, ErrorSource, ErrorType};
use serde_json::Value;

pub(super) mod plan;

pub use plan::{Plan, Step};

use super::context::RequestCtx;
use super::GatewayProxy;
use crate::config::{Continuation, RouteConfig};
use crate::openai::{ApiError, Endpoint, ErrorCode};
use crate::outcome::UpstreamErrorKind;
use crate::reasoning::budget::{self, Continue};
use crate::upstream::Pool;

/// The plan for a request, when the gateway must be able to continue it: a route with
/// `on_exceed: answer` or `min_tokens`, a chat request with one choice, a pool that continues
/// (decided at config load, `BudgetConfig::cannot_continue`: on the others the budget has its
/// `error` form), tags the parser reads.
pub fn plan(route: &RouteConfig, pool: &Pool, ctx: &RequestCtx) -> Option<Plan> {
    let b = route.reasoning.budget.as_ref().filter(|b| b.continues())?;
    if ctx.endpoint != Some(Endpoint::ChatCompletions)
        || ctx.passthrough
        || ctx.thinking_off
        || pool.config.continuation == Continuation::None
    {
        return None;
    }
    let request: Value = serde_json::from_slice(&ctx.upstream_body).ok()?;
    if request
        .get("n")
        .and_then(Value::as_u64)
        .is_some_and(|n| n > 1)
    {
        return None;
    }
    Some(Plan {
        answer: b.answer,
        min_tokens: b.min_tokens,
        extensions_left: if b.min_tokens.is_some() {
            b.max_extensions
        } else {
            0
        },
        bridge: b.bridge.clone(),
        extend_word: b.extend_word.clone(),
        request,
    })
}

/// Serves the request: first response, continuations, one client response.
pub async fn serve(
    proxy: &GatewayProxy,
    session: &mut Session,
    ctx: &mut RequestCtx,
) -> pingora::Result<()> {
    ctx.overhead += ctx.start.elapsed().saturating_sub(ctx.queue_wait);
    let first = match send(proxy, session, ctx).await {
        Ok(r) => r,
        Err(e) => return fail(session, ctx, &e).await,
    };
    let mut header = ResponseHeader::build(first.status().as_u16(), None)?;
    for (name, value) in first.headers() {
        if !matches!(
            name.as_str(),
            "connection" | "keep-alive" | "transfer-encoding" | "upgrade" | "trailer"
        ) {
            header.append_header(name.as_str().to_string(), value.clone())?;
        }
    }
    proxy
        .upstream_response_filter(session, &mut header, ctx)
        .await?;
    proxy.response_filter(session, &mut header, ctx).await?;
    if header.headers.get("content-length").is_none() && !session.as_downstream().is_http2() {
        header.insert_header("transfer-encoding", "chunked")?;
    }
    session
        .write_response_header(Box::new(header), false)
        .await?;
    let mut resp = first;
    loop {
        let step = match relay(proxy, session, ctx, resp).await {
            Ok(Some(step)) => step,
            Ok(None) => return Ok(()),
            Err(e) => return fail(session, ctx, &e).await,
        };
        match prepare_continuation(ctx, step) {
            Ok(seam) if seam.is_empty() => {}
            Ok(seam) => session.write_response_body(Some(seam), false).await?,
            Err(err) => {
                ctx.budget_actions.error = true;
                ctx.error = Some(err);
                let e = Error::explain(ErrorType::InternalError, "budget forcing");
                return fail(session, ctx, &e).await;
            }
        }
        resp = match send(proxy, session, ctx).await {
            Ok(r) if r.status().is_success() => r,
            Ok(r) => {
                ctx.budget_actions.error = true;
                if r.status().is_server_error() {
                    ctx.upstream_error = Some(UpstreamErrorKind::Status5xx);
                }
                ctx.error = Some(ApiError::new(
                    ErrorCode::UpstreamProtocolError,
                    format!(
                        "The upstream refused the continuation of the reasoning (status {}).",
                        r.status().as_u16()
                    ),
                ));
                let e = Error::explain(ErrorType::InternalError, "continuation refused");
                return fail(session, ctx, &e).await;
            }
            Err(e) => {
                ctx.budget_actions.error = true;
                return fail(session, ctx, &e).await;
            }
        };
    }
}

/// Relays one upstream response through the body filter; `Some` when it was cut short for a
/// continuation.
async fn relay(
    proxy: &GatewayProxy,
    session: &mut Session,
    ctx: &mut RequestCtx,
    resp: hyper::Response<hyper::body::Incoming>,
) -> pingora::Result<Option<Step>> {
    let timeout = read_timeout(ctx);
    let mut body = resp.into_body();
    loop {
        let frame = match tokio::time::timeout(timeout, body.frame()).await {
            Err(_) => return Err(upstream_error(ErrorType::ReadTimedout)),
            Ok(Some(Err(_))) => return Err(upstream_error(ErrorType::ReadError)),
            Ok(None) => {
                let mut out = None;
                proxy.response_body_filter(session, &mut out, true, ctx)?;
                session.write_response_body(out, true).await?;
                return Ok(None);
            }
            Ok(Some(Ok(frame))) => frame,
        };
        let Ok(data) = frame.into_data() else {
            continue;
        };
        let mut out = Some(data);
        proxy.response_body_filter(session, &mut out, false, ctx)?;
        if let Some(out) = out.filter(|b| !b.is_empty()) {
            session.write_response_body(Some(out), false).await?;
        }
        if ctx.aborted {
            // The budget (`on_exceed: error`) or a check ended the stream; dropping the body
            // closes the upstream connection.
            session.write_response_body(None, true).await?;
            return Ok(None);
        }
        if let Some(step) = ctx.forcing_next.take() {
            return Ok(Some(step));
        }
    }
}

/// The continuation's body in `ctx.upstream_body`; returns what the client sees of the seam (the
/// bridge or the extension word), written through the rewriter.
fn prepare_continuation(ctx: &mut RequestCtx, step: Step) -> Result<Bytes, ApiError> {
    let cannot = |why: &str| {
        ApiError::new(
            ErrorCode::ReasoningBudgetExceeded,
            format!("The reasoning reached the route's budget and could not be continued to an answer ({why}); generation was stopped."),
        )
    };
    let (Some(plan), Some(route), Some(rw)) = (
        ctx.forcing.as_mut(),
        ctx.route.as_ref(),
        ctx.rewriter.as_mut(),
    ) else {
        return Err(cannot("no plan"));
    };
    let Some((answer_before, reasoning)) = rw.said_so_far() else {
        return Err(cannot("the reasoning is longer than the gateway keeps"));
    };
    let how = match step {
        Step::Answer => Continue::Answer {
            bridge: &plan.bridge,
        },
        Step::Extend => Continue::Extend {
            word: &plan.extend_word,
        },
    };
    let prefix = budget::assistant_prefix(
        &route.reasoning.parser_options(),
        &answer_before,
        &reasoning,
        how,
    );
    let seam = rw.resume(how);
    let body = budget::chat_continuation(&plan.request, &prefix, rw.carried_tokens())
        .map_err(|e| cannot(&e.to_string()))?;
    match step {
        Step::Answer => ctx.budget_actions.forced_answer = true,
        Step::Extend => {
            ctx.budget_actions.extended += 1;
            plan.extensions_left = plan.extensions_left.saturating_sub(1);
            if plan.extensions_left == 0 {
                rw.stop_extending();
            }
        }
    }
    ctx.upstream_body = Bytes::from(serde_json::to_vec(&body).unwrap_or_default());
    Ok(super::body::emit(ctx, seam, false))
}

/// The read timeout of the route's pool, or the step timeout under `step_timeout_policy: abort`.
fn read_timeout(ctx: &RequestCtx) -> std::time::Duration {
    let pool = ctx
        .pool
        .as_ref()
        .map_or(std::time::Duration::from_secs(300), |p| {
            p.config.read_timeout
        });
    ctx.route
        .as_ref()
        .and_then(|r| {
            r.reasoning
                .step_timeout
                .filter(|_| r.reasoning.step_timeout_abort)
        })
        .unwrap_or(pool)
}

fn upstream_error(etype: ErrorType) -> Box<Error> {
    Error::create(etype, ErrorSource::Upstream, None, None)
}

/// Sends `ctx.upstream_body` to a healthy endpoint of the pool (the next one on a failed
/// connect), with the head the proxy would send; the response head.
async fn send(
    proxy: &GatewayProxy,
    session: &mut Session,
    ctx: &mut RequestCtx,
) -> pingora::Result<hyper::Response<hyper::body::Incoming>> {
    let pool = ctx
        .pool
        .clone()
        .ok_or_else(|| Error::new(ErrorType::InternalError))?;
    // Endpoints this request failed to connect to; each continuation may use any endpoint.
    let mut failed = Vec::new();
    let (io, guard) = loop {
        let Some((index, guard)) = pool.pick(&failed) else {
            ctx.error = Some(ApiError::new(
                ErrorCode::NoHealthyUpstream,
                format!(
                    "No healthy endpoint left in upstream `{}`.",
                    pool.config.name
                ),
            ));
            ctx.upstream_error = Some(UpstreamErrorKind::NoHealthyEndpoint);
            return Err(Error::explain(
                ErrorType::HTTPStatus(503),
                "no healthy upstream endpoint",
            ));
        };
        ctx.tried.push(index);
        failed.push(index);
        let ep = guard.endpoint.clone();
        let opened = tokio::time::timeout(
            pool.config.connect_timeout,
            crate::upstream::connect::open(&pool, &ep),
        )
        .await;
        match opened {
            Ok(Ok(io)) => break (io, guard),
            _ => {
                if guard.endpoint.set_healthy(false) {
                    tracing::warn!(request_id = %ctx.request_id, endpoint = %ep.name, "Connecting to an upstream endpoint failed; it is out of rotation until its health check passes.");
                }
            }
        }
    };
    ctx.endpoint_guard = Some(guard);
    let mut head: RequestHeader = session.req_header().clone();
    proxy
        .upstream_request_filter(session, &mut head, ctx)
        .await?;
    let path = head
        .uri
        .path_and_query()
        .map_or("/v1/chat/completions", |p| p.as_str())
        .to_string();
    let mut builder = hyper::Request::post(path);
    for (name, value) in &head.headers {
        if !matches!(
            name.as_str(),
            "connection" | "keep-alive" | "transfer-encoding" | "upgrade" | "te" | "trailer"
        ) {
            builder = builder.header(name, value);
        }
    }
    let request = builder
        .body(Full::new(ctx.upstream_body.clone()))
        .map_err(|_| Error::new(ErrorType::InternalError))?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(io))
        .await
        .map_err(|_| upstream_error(ErrorType::H1Error))?;
    tokio::spawn(conn);
    let resp = tokio::time::timeout(read_timeout(ctx), sender.send_request(request))
        .await
        .map_err(|_| upstream_error(ErrorType::ReadTimedout))?
        .map_err(|_| upstream_error(ErrorType::ConnectionClosed))?;
    ctx.upstream_status.get_or_insert(resp.status().as_u16());
    Ok(resp)
}

/// Ends the response with the error in `ctx.error` or the one `e` stands for, as the proxy
/// does after a failure (a JSON error, or an error event and `[DONE]` mid-stream).
async fn fail(session: &mut Session, ctx: &mut RequestCtx, e: &Error) -> pingora::Result<()> {
    super::respond::proxy_failure(session, e, ctx).await;
    Ok(())
}
