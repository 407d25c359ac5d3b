//! The end of every request: metrics recorded once and one structured access-log line.
//! Header values (Authorization and the rest) are never logged.

use pingora::proxy::Session;
use pingora::Error;

use super::context::RequestCtx;
use crate::state::Gateway;

/// Records metrics and writes the access log for a finished request.
pub fn record(gw: &Gateway, session: &Session, e: Option<&Error>, ctx: &RequestCtx) {
    let status = ctx
        .local_status
        .or_else(|| session.response_written().map(|r| r.status.as_u16()))
        .unwrap_or(0);
    let elapsed = ctx.start.elapsed();
    let route = ctx.route_label();
    let upstream = ctx.upstream_label();
    let endpoint = ctx.endpoint.map_or("other", |e| e.label());
    let m = &gw.metrics;
    m.requests_total
        .with_label_values(&[route, upstream, endpoint, &status.to_string()])
        .inc();
    let stream = if ctx.stream_requested {
        "true"
    } else {
        "false"
    };
    m.request_duration_seconds
        .with_label_values(&[route, upstream, stream])
        .observe(elapsed.as_secs_f64());
    let ttft = ctx.first_byte_at.map(|t| t.duration_since(ctx.start));
    if let Some(t) = ttft {
        m.time_to_first_token_seconds
            .with_label_values(&[route, upstream])
            .observe(t.as_secs_f64());
    }
    // Connect failures are counted per attempt in `fail_to_connect`.
    if let Some(kind) = ctx.upstream_error.filter(|k| *k != "connect") {
        m.upstream_errors_total
            .with_label_values(&[upstream, kind])
            .inc();
    }

    let header = session.req_header();
    let peer = ctx
        .endpoint_guard
        .as_ref()
        .map(|g| g.endpoint.addr.to_string());
    let error_code = ctx.error.as_ref().map(|err| err.code);
    let proxy_error = e.map(|err| err.etype().as_str());
    tracing::info!(
        target: "access",
        request_id = %ctx.request_id,
        method = %header.method,
        path = %header.uri.path(),
        status,
        route,
        upstream,
        endpoint = peer.as_deref().unwrap_or("-"),
        stream = ctx.stream_requested,
        duration_ms = elapsed.as_secs_f64() * 1000.0,
        ttft_ms = ttft.map(|t| t.as_secs_f64() * 1000.0),
        request_bytes = ctx.request_bytes,
        response_bytes = ctx.response_bytes,
        attempts = ctx.tried.len(),
        error_code,
        proxy_error,
        "Request finished."
    );
}
