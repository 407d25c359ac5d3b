//! Responses the gateway writes itself, and the one mapping from proxy errors to OpenAI errors.

use bytes::Bytes;
use pingora::http::ResponseHeader;
use pingora::proxy::{FailToProxy, Session};
use pingora::{Error, ErrorSource, ErrorType};

use super::context::RequestCtx;
use crate::openai::{ApiError, ErrorCode};
use crate::outcome::UpstreamErrorKind;
use crate::reasoning::ResponseRewriter;

/// The client got a complete response, so the connection could serve its next request.
/// Pingora 0.9.1 honours this only for failures before a peer was chosen; after one it closes the
/// client connection whatever this says (its `finish` reuses the downstream only when the
/// upstream exchange succeeded), so keep-alive clients reconnect after an upstream failure.
fn reuse(session: &mut Session, written: bool) -> bool {
    written && session.as_downstream_mut().is_body_done()
}

/// Writes the last body bytes of a response already under way; true when they went out.
async fn write_last(session: &mut Session, ctx: &mut RequestCtx, body: Vec<u8>) -> bool {
    ctx.response_bytes += body.len();
    session
        .write_response_body(Some(Bytes::from(body)), true)
        .await
        .is_ok()
}

/// After a proxy error: a complete OpenAI error for the client, whatever had been sent already.
pub async fn proxy_failure(session: &mut Session, e: &Error, ctx: &mut RequestCtx) -> FailToProxy {
    if ctx.aborted {
        // The client already has its error event and `[DONE]`; only the body's end is owed.
        let written = session.write_response_body(None, true).await.is_ok();
        return FailToProxy {
            error_code: 0,
            can_reuse_downstream: reuse(session, written),
        };
    }
    let step_abort = ctx
        .route
        .as_ref()
        .is_some_and(|r| r.reasoning.step_timeout_abort);
    if step_abort
        && e.etype() == &ErrorType::ReadTimedout
        && ctx
            .rewriter
            .as_ref()
            .is_some_and(super::super::reasoning::rewrite::ResponseRewriter::in_reasoning)
    {
        ctx.step_timeouts += 1;
        if let Some(t) = ctx.trace.as_mut() {
            t.event("reasoning.step_timeout", Vec::new());
        }
        ctx.error = Some(ApiError::new(ErrorCode::StepTimeout, "No token arrived within the route's step_timeout while reasoning; generation was stopped.",
        ));
    }
    let classified = match ctx.error.clone() {
        Some(err) => Some((err, ctx.upstream_error)),
        None => classify(e),
    };
    let Some((err, kind)) = classified else {
        return FailToProxy {
            error_code: 0,
            can_reuse_downstream: false,
        };
    };
    if kind.is_some() {
        ctx.upstream_error = kind;
    }
    let code = err.status;
    let written = if session.response_written().is_some() {
        // Headers (and maybe part of the body) are out: a stream gets a final error event and
        // `[DONE]` so SDKs end cleanly; anything else can only be cut short.
        let streaming = ctx
            .rewriter
            .as_ref()
            .map_or(ctx.stream_requested, ResponseRewriter::is_stream);
        let mut ok = false;
        if let Some(agg) = ctx.aggregator.as_mut() {
            // The client waits for one JSON body. A step timeout ends it like the budget does
            // (what arrived, `finish_reason: length`); any other failure is the error itself.
            let body = if err.code == ErrorCode::StepTimeout {
                if let Some(rw) = ctx.rewriter.as_mut() {
                    agg.feed(&rw.abort());
                }
                agg.finish(Some("length"))
            } else {
                err.body()
            };
            let body = super::api::client_bytes(ctx, body, true);
            ok = write_last(session, ctx, body).await;
            ctx.error = Some(err);
            return FailToProxy {
                error_code: code,
                can_reuse_downstream: reuse(session, ok),
            };
        }
        if streaming || ctx.codec.is_some() {
            let mut tail = ctx
                .rewriter
                .as_mut()
                .map(super::super::reasoning::rewrite::ResponseRewriter::abort)
                .unwrap_or_default();
            tail.extend_from_slice(&err.sse_event());
            let tail = super::api::client_bytes(ctx, tail, true);
            ok = write_last(session, ctx, tail).await;
        }
        ctx.error = Some(err);
        ok
    } else {
        match error(session, ctx, err).await {
            Ok(()) => true,
            Err(write_err) => {
                tracing::debug!(request_id = %ctx.request_id, error = %write_err, "Writing the error response failed.");
                false
            }
        }
    };
    FailToProxy {
        error_code: code,
        can_reuse_downstream: reuse(session, written),
    }
}

/// Writes a complete JSON response.
pub async fn json(
    session: &mut Session,
    ctx: &mut RequestCtx,
    status: u16,
    body: Vec<u8>,
) -> pingora::Result<()> {
    local(session, ctx, status, "application/json", body).await
}

/// The gateway's own response headers: request id, route, variant, cache outcome.
pub fn gateway_headers(ctx: &RequestCtx, resp: &mut ResponseHeader) -> pingora::Result<()> {
    resp.insert_header("x-request-id", ctx.request_id.as_str())?;
    if let Some(route) = &ctx.route {
        resp.insert_header("x-gateway-route", route.name.as_str())?;
    }
    if let Some(variant) = &ctx.variant {
        resp.insert_header("x-gateway-variant", variant.as_str())?;
    }
    if let Some(c) = ctx.cache_header {
        resp.insert_header("x-reasoning-cache", c)?;
    }
    if let Some(s) = ctx.cache_similarity {
        resp.insert_header("x-reasoning-cache-similarity", format!("{s:.4}"))?;
    }
    if let Some(r) = &ctx.cache_reason {
        resp.insert_header("x-reasoning-cache-reason", r.header())?;
    }
    super::trace::response_header(ctx, resp)?;
    Ok(())
}

/// Answers a whole response the gateway produced itself (JSON, errors, cache replays).
pub async fn local(
    session: &mut Session,
    ctx: &mut RequestCtx,
    status: u16,
    content_type: &str,
    body: Vec<u8>,
) -> pingora::Result<()> {
    let (content_type, body) = super::api::local_body(ctx, status, content_type, body);
    let mut header = ResponseHeader::build(status, Some(8))?;
    header.insert_header("content-type", content_type)?;
    header.insert_header("content-length", body.len().to_string())?;
    gateway_headers(ctx, &mut header)?;
    if let Some(secs) = ctx.retry_after {
        // The openai SDKs wait this long before their automatic retry.
        header.insert_header("retry-after", secs.to_string())?;
    }
    ctx.local_status = Some(status);
    ctx.response_bytes += body.len();
    session
        .write_response_header(Box::new(header), false)
        .await?;
    session
        .write_response_body(Some(Bytes::from(body)), true)
        .await
}

/// Answers an error; the connection is kept only when the request body was fully read.
pub async fn error(
    session: &mut Session,
    ctx: &mut RequestCtx,
    err: ApiError,
) -> pingora::Result<()> {
    if !session.as_downstream_mut().is_body_done() {
        // Unread body bytes would be parsed as the next request.
        session.set_keepalive(None);
    }
    let body = err.body();
    let status = err.status;
    ctx.error = Some(err);
    json(session, ctx, status, body).await
}

/// The `upstream_errors_total` kind of a failure to connect: `local_resources` when it was the
/// gateway's own (Pingora reports a socket it could not create, out of file descriptors,
/// buffers or memory, or bind as `InternalError`), `tls` for a failed handshake, else `connect`.
pub fn connect_failure_kind(e: &Error) -> UpstreamErrorKind {
    match classify(e) {
        Some((_, Some(kind @ (UpstreamErrorKind::LocalResources | UpstreamErrorKind::Tls)))) => {
            kind
        }
        _ => UpstreamErrorKind::Connect,
    }
}

/// What went wrong, as an OpenAI error and, when the upstream side failed, an
/// `upstream_errors_total` kind (none for a status Pingora decided or the gateway's own failure).
pub fn classify(e: &Error) -> Option<(ApiError, Option<UpstreamErrorKind>)> {
    use ErrorType::*;
    use UpstreamErrorKind as Kind;
    let upstream = |code, kind, msg: &str| Some((ApiError::new(code, msg), Some(kind)));
    match e.etype() {
        HTTPStatus(code) => Some((
            ApiError::new(
                ErrorCode::GatewayError,
                format!("The gateway answered {code}."),
            )
            .with_status(*code),
            None,
        )),
        InternalError if e.esource() == &ErrorSource::Upstream => upstream(
            ErrorCode::GatewayOutOfResources,
            Kind::LocalResources,
            "The gateway could not open a connection to the upstream (out of sockets or memory); retry later.",
        ),
        TLSHandshakeFailure | TLSHandshakeTimedout | InvalidCert | HandshakeError
        | TLSWantX509Lookup => upstream(
            ErrorCode::UpstreamTlsError,
            Kind::Tls,
            "The TLS handshake with the upstream failed (certificate not trusted, another name, or no TLS there); the gateway log has the reason.",
        ),
        ConnectTimedout | ConnectRefused | ConnectNoRoute | ConnectError | SocketError
        | BindError => upstream(
            ErrorCode::UpstreamUnreachable,
            Kind::Connect,
            "The upstream could not be reached.",
        ),
        ReadTimedout | WriteTimedout if e.esource() == &ErrorSource::Upstream => upstream(
            ErrorCode::UpstreamTimeout,
            Kind::Timeout,
            "The upstream did not answer in time.",
        ),
        InvalidHTTPHeader | H1Error | H2Error | InvalidH2
            if e.esource() == &ErrorSource::Upstream =>
        {
            upstream(
                ErrorCode::UpstreamProtocolError,
                Kind::Protocol,
                "The upstream sent an invalid HTTP response.",
            )
        }
        _ if e.esource() == &ErrorSource::Upstream => upstream(
            ErrorCode::UpstreamDisconnected,
            Kind::Disconnect,
            "The upstream closed the connection before the response was complete.",
        ),
        // The client went away or sent garbage: nothing useful can be written back.
        _ if e.esource() == &ErrorSource::Downstream => None,
        _ => Some((
            ApiError::new(ErrorCode::InternalError, "The gateway failed to handle the request.",
            ),
            None,
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What Pingora 0.9 builds when `socket()` fails (here: EMFILE, too many open files).
    fn socket_exhausted() -> Box<Error> {
        let io = std::io::Error::from_raw_os_error(24);
        let socket = Error::because(ErrorType::SocketError, "failed to create socket", io);
        Error::because(
            ErrorType::InternalError,
            "Fail to connect to 127.0.0.1:8000",
            socket,
        )
        .into_up()
    }

    #[test]
    fn running_out_of_sockets_is_the_gateways_503_not_a_dead_upstream() {
        let e = socket_exhausted();
        assert_eq!(connect_failure_kind(&e), UpstreamErrorKind::LocalResources);
        let (err, kind) = classify(&e).unwrap();
        assert_eq!(
            (err.status, err.code, kind),
            (
                503,
                ErrorCode::GatewayOutOfResources,
                Some(UpstreamErrorKind::LocalResources)
            )
        );

        let refused = Error::explain(ErrorType::ConnectRefused, "Fail to connect").into_up();
        assert_eq!(connect_failure_kind(&refused), UpstreamErrorKind::Connect);
        let (err, kind) = classify(&refused).unwrap();
        assert_eq!(
            (err.status, err.code, kind),
            (
                502,
                ErrorCode::UpstreamUnreachable,
                Some(UpstreamErrorKind::Connect)
            )
        );

        let untrusted = Error::explain(
            ErrorType::TLSHandshakeFailure,
            "invalid peer certificate: UnknownIssuer",
        )
        .into_up();
        assert_eq!(connect_failure_kind(&untrusted), UpstreamErrorKind::Tls);
        let (err, _) = classify(&untrusted).unwrap();
        assert_eq!((err.status, err.code), (502, ErrorCode::UpstreamTlsError));
    }
}
