//! Reading the request: request id, bounded body read, validation, route choice.

use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use pingora::proxy::Session;
use serde_json::Value;

use crate::config::{CanaryConfig, RouteConfig};
use crate::metrics::labels::ClientRejection;
use crate::openai::{parse_request, ApiError, Endpoint, ErrorCode, RequestInfo};
use crate::state::Snapshot;

/// Pingora replays a body read before proxying only through its retry buffer, which holds
/// 64 KiB (pingora-core `BODY_BUF_LIMIT`). See [`read_body`].
const RETRY_BUFFER_BYTES: usize = 64 * 1024;
/// Body buffer reserved before any byte arrives (it grows as bytes do).
const INITIAL_BODY_BUFFER: usize = 16 * 1024;
/// Longest accepted client-supplied request id.
const MAX_REQUEST_ID_LEN: usize = 128;

/// A request header's value as text (`None` when absent or not visible ASCII).
pub fn request_header(session: &Session, name: &str) -> Option<String> {
    session
        .req_header()
        .headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
}

/// The client's `x-request-id` when it is sane, else a fresh random id.
pub fn request_id(session: &Session) -> String {
    let given = session
        .req_header()
        .headers
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .filter(|v| {
            !v.is_empty()
                && v.len() <= MAX_REQUEST_ID_LEN
                && v.bytes().all(|b| b.is_ascii_graphic())
        });
    match given {
        Some(id) => id.to_string(),
        None => format!("{:032x}", rand::random::<u128>()),
    }
}

/// Reads the whole request body: at most `config.max_body_bytes`, within
/// `config.client_body_timeout` (a client trickling its body is answered 408 and counted in
/// `client_rejections_total{reason="body_timeout"}`).
///
/// Pingora forwards a body that was consumed before proxying only by replaying its retry buffer
/// and handing it to `request_body_filter`, where the proxy substitutes the full body. The retry
/// buffer truncates past 64 KiB, so it is switched on only for the last 64 KiB of a body of known
/// length: it then always holds a non-empty, untruncated tail and the filter is always called.
/// A chunked body of unknown length larger than the buffer cannot be forwarded this way and is
/// refused with 411.
pub async fn read_body(
    session: &mut Session,
    config: &crate::config::Config,
    metrics: &crate::metrics::Metrics,
) -> Result<Bytes, ApiError> {
    let within = config.client_body_timeout;
    match tokio::time::timeout(within, read_body_bounded(session, config.max_body_bytes)).await {
        Ok(read) => read,
        Err(_) => {
            metrics
                .client_rejections_total
                .with(&ClientRejection::BodyTimeout)
                .inc();
            Err(ApiError::new(
                ErrorCode::RequestTimeout,
                format!(
                    "The request body did not arrive within {}s (client_body_timeout).",
                    within.as_secs_f64()
                ),
            ))
        }
    }
}

async fn read_body_bounded(session: &mut Session, limit: usize) -> Result<Bytes, ApiError> {
    let declared = session
        .req_header()
        .headers
        .get(http::header::CONTENT_LENGTH)
        .map(|v| v.to_str().ok().and_then(|s| s.trim().parse::<usize>().ok()));
    let declared = match declared {
        Some(None) => {
            return Err(ApiError::new(
                ErrorCode::InvalidRequest,
                "Invalid Content-Length header.",
            ))
        }
        Some(Some(n)) => Some(n),
        None => None,
    };
    if declared.is_some_and(|n| n > limit) {
        return Err(ApiError::body_too_large(limit));
    }
    // The body is read here, before any upstream is chosen, so no upstream will send the
    // `100 Continue` such a client waits for (curl waits a second, then sends anyway).
    if expects_continue(session.req_header()) {
        session
            .as_downstream_mut()
            .write_continue_response()
            .await
            .map_err(|e| {
                ApiError::new(
                    ErrorCode::InvalidRequest,
                    format!("100 Continue could not be sent: {}", e.etype().as_str()),
                )
            })?;
    }
    // Memory grows with the bytes that arrive, never with what a header promises.
    let mut buf = BytesMut::with_capacity(declared.unwrap_or(0).min(INITIAL_BODY_BUFFER));
    let mut buffering = false;
    loop {
        let remaining = declared.map(|n| n.saturating_sub(buf.len()));
        if !buffering && remaining.is_none_or(|r| r <= RETRY_BUFFER_BYTES) {
            session.as_downstream_mut().enable_retry_buffering();
            buffering = true;
        }
        match session.read_request_body().await {
            Ok(Some(chunk)) => {
                if buf.len() + chunk.len() > limit {
                    return Err(ApiError::body_too_large(limit));
                }
                buf.extend_from_slice(&chunk);
            }
            Ok(None) => break,
            Err(e) => {
                return Err(ApiError::new(
                    ErrorCode::InvalidRequest,
                    format!("The request body could not be read: {}", e.etype().as_str()),
                ))
            }
        }
    }
    if session.as_downstream().retry_buffer_truncated() {
        return Err(ApiError::new(ErrorCode::LengthRequired, format!("Chunked request bodies over {RETRY_BUFFER_BYTES} bytes need a Content-Length header."),
        ));
    }
    Ok(buf.freeze())
}

/// `Expect: 100-continue` on an HTTP/1.1 request (RFC 9110 §10.1.1).
pub fn expects_continue(req: &pingora::http::RequestHeader) -> bool {
    req.version == http::Version::HTTP_11
        && req
            .headers
            .get(http::header::EXPECT)
            .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"100-continue"))
}

/// A validated request with its route.
pub struct Routed {
    /// Parsed body.
    pub info: RequestInfo,
    /// Route index in the snapshot's table.
    pub route: std::sync::Arc<crate::config::RouteConfig>,
    /// The pool the route (or its chosen variant) uses.
    pub pool: std::sync::Arc<crate::upstream::Pool>,
    /// The chosen canary variant.
    pub variant: Option<String>,
    /// The client forced that variant by header (not counted in canary windows).
    pub variant_forced: bool,
    /// Bytes to send upstream.
    pub upstream_body: Bytes,
    /// The gateway added `stream_options.include_usage` for its own metrics.
    pub usage_injected: bool,
    /// The client asked for JSON; the upstream is asked to stream and the gateway assembles.
    pub aggregate: bool,
    /// A copy for the route's shadow variant: its pool and body.
    pub shadow: Option<(String, std::sync::Arc<crate::upstream::Pool>, Bytes)>,
}

fn pool_of(
    snapshot: &Snapshot,
    name: &str,
) -> Result<std::sync::Arc<crate::upstream::Pool>, ApiError> {
    snapshot.pools.get(name).cloned().ok_or_else(|| {
        ApiError::new(
            ErrorCode::UpstreamUnavailable,
            format!("Upstream `{name}` is not running."),
        )
    })
}

fn encode(body: &serde_json::Map<String, Value>) -> Result<Bytes, ApiError> {
    serde_json::to_vec(body).map(Bytes::from).map_err(|e| {
        ApiError::new(
            ErrorCode::InternalError,
            format!("re-encoding the request failed: {e}"),
        )
    })
}

/// Validates the body and finds its route, variant and pool. `header` reads a request header
/// (for canary overrides and stickiness); `live` gives a canary route's variant weights now
/// (rollbacks and promotion applied) and which variants are rolled back.
pub fn route(
    snapshot: &Snapshot,
    endpoint: Endpoint,
    body: Bytes,
    header: &dyn Fn(&str) -> Option<String>,
    live: &dyn Fn(&str, &CanaryConfig) -> crate::canary::Live,
) -> Result<Routed, NotRouted> {
    let info = parse_request(endpoint, &body)?;
    let route = snapshot
        .routes
        .find(&info.model)
        .ok_or_else(|| ApiError::model_not_found(&info.model))?;
    route_to(snapshot, endpoint, body, info, route, header, live).map_err(|mut not| {
        not.route = Some(route.clone());
        not
    })
}

/// Why a request was not routed, with the route, canary variant and pool it got as far as
/// (the error is then counted under them: a route whose upstream is down shows its own errors,
/// and a canary variant whose pool is down is rolled back like one that fails).
#[derive(Debug)]
pub struct NotRouted {
    /// The answer for the client.
    pub error: ApiError,
    /// The matched route, if any.
    pub route: Option<Arc<RouteConfig>>,
    /// The canary variant chosen, if any.
    pub variant: Option<String>,
    /// The client forced that variant by header.
    pub variant_forced: bool,
    /// The pool chosen, if any.
    pub pool: Option<Arc<crate::upstream::Pool>>,
}

impl From<ApiError> for NotRouted {
    fn from(error: ApiError) -> Self {
        NotRouted {
            error,
            route: None,
            variant: None,
            variant_forced: false,
            pool: None,
        }
    }
}

/// The part of [`route`] after the route is known: variant, pool, body for the upstream.
fn route_to(
    snapshot: &Snapshot,
    endpoint: Endpoint,
    body: Bytes,
    mut info: RequestInfo,
    route: &Arc<RouteConfig>,
    header: &dyn Fn(&str) -> Option<String>,
    live: &dyn Fn(&str, &CanaryConfig) -> crate::canary::Live,
) -> Result<Routed, NotRouted> {
    let mut forced = false;
    let (upstream, upstream_model, variant) = match &route.canary {
        Some(c) => {
            let now = live(&route.name, c);
            let (i, reason) = crate::routing::variant::pick(
                c,
                header,
                &now.weights,
                &now.rolled_back,
                rand::random::<f64>(),
            );
            forced = reason.forced();
            let v = &c.variants[i];
            (
                v.upstream.as_str(),
                v.upstream_model.as_ref().or(route.upstream_model.as_ref()),
                Some(v.name.clone()),
            )
        }
        None => (route.upstream.as_str(), route.upstream_model.as_ref(), None),
    };
    let pool = pool_of(snapshot, upstream)?;
    if !pool.any_healthy() {
        return Err(NotRouted {
            error: ApiError::new(
                ErrorCode::NoHealthyUpstream,
                format!("No healthy endpoint in upstream `{upstream}`."),
            ),
            route: None,
            variant,
            variant_forced: forced,
            pool: Some(pool),
        });
    }
    // The shadow gets the request as the client sent it (its own model rewrite only).
    let shadow = match route.canary.as_ref().and_then(|c| c.shadow.as_ref()) {
        Some(sv) => {
            let mut copy = info.body.clone();
            if let Some(m) = sv.upstream_model.as_ref().or(route.upstream_model.as_ref()) {
                copy.insert("model".into(), Value::String(m.clone()));
            }
            Some((
                sv.name.clone(),
                pool_of(snapshot, &sv.upstream)?,
                encode(&copy)?,
            ))
        }
        None => None,
    };
    let mut rewritten = false;
    if let Some(m) = upstream_model {
        info.body.insert("model".into(), Value::String(m.clone()));
        rewritten = true;
    }
    // Streams are asked for usage so token metrics come from the upstream, not estimates; the
    // usage chunk is then kept from clients that did not ask for it.
    let wants_usage = info
        .body
        .get("stream_options")
        .and_then(|o| o.get("include_usage"))
        .and_then(Value::as_bool);
    let parsing = route.reasoning.parser != crate::config::ParserKind::Passthrough;
    // A budget or step timeout needs tokens as they come: a JSON request is streamed from the
    // upstream and assembled again for the client.
    let aggregate = !info.stream
        && parsing
        && endpoint.generates()
        && (route.reasoning.max_reasoning_tokens.is_some()
            || route.reasoning.budget.is_some()
            || route.reasoning.step_timeout.is_some());
    if aggregate {
        info.body.insert("stream".into(), Value::Bool(true));
    }
    let usage_injected =
        info.stream && wants_usage != Some(true) && parsing && endpoint.generates();
    if usage_injected || aggregate {
        let opts = info
            .body
            .entry("stream_options")
            .or_insert_with(|| Value::Object(Default::default()));
        if let Value::Object(o) = opts {
            o.insert("include_usage".into(), Value::Bool(true));
        }
        rewritten = true;
    }
    let upstream_body = if rewritten { encode(&info.body)? } else { body };
    Ok(Routed {
        info,
        route: route.clone(),
        pool,
        variant,
        variant_forced: forced,
        upstream_body,
        usage_injected,
        aggregate,
        shadow,
    })
}
