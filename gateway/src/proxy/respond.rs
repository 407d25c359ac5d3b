//! Responses the gateway writes itself, and the one mapping from proxy errors to OpenAI errors.

use bytes::Bytes;
use pingora::http::ResponseHeader;
use pingora::proxy::Session;
use pingora::{Error, ErrorSource, ErrorType};

use super::context::RequestCtx;
use crate::openai::{ApiError, ErrorKind};

/// Writes a complete JSON response.
pub async fn json(
    session: &mut Session,
    ctx: &mut RequestCtx,
    status: u16,
    body: Vec<u8>,
) -> pingora::Result<()> {
    let mut header = ResponseHeader::build(status, Some(4))?;
    header.insert_header("content-type", "application/json")?;
    header.insert_header("content-length", body.len().to_string())?;
    header.insert_header("x-request-id", ctx.request_id.as_str())?;
    if let Some(route) = &ctx.route {
        header.insert_header("x-gateway-route", route.name.as_str())?;
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

/// What went wrong talking to the upstream, as an OpenAI error and an `upstream_errors_total` kind.
pub fn classify(e: &Error) -> Option<(ApiError, &'static str)> {
    use ErrorType::*;
    let upstream = |status, code, kind, msg: &str| {
        Some((
            ApiError::new(status, ErrorKind::Server, code, msg.to_string()),
            kind,
        ))
    };
    match e.etype() {
        HTTPStatus(code) => Some((
            ApiError::new(
                *code,
                ErrorKind::Server,
                "gateway_error",
                format!("The gateway answered {code}."),
            ),
            "status",
        )),
        ConnectTimedout | ConnectRefused | ConnectNoRoute | ConnectError | SocketError
        | BindError => upstream(
            502,
            "upstream_unreachable",
            "connect",
            "The upstream could not be reached.",
        ),
        ReadTimedout | WriteTimedout if e.esource() == &ErrorSource::Upstream => upstream(
            504,
            "upstream_timeout",
            "timeout",
            "The upstream did not answer in time.",
        ),
        InvalidHTTPHeader | H1Error | H2Error | InvalidH2
            if e.esource() == &ErrorSource::Upstream =>
        {
            upstream(
                502,
                "upstream_protocol_error",
                "protocol",
                "The upstream sent an invalid HTTP response.",
            )
        }
        _ if e.esource() == &ErrorSource::Upstream => upstream(
            502,
            "upstream_disconnected",
            "disconnect",
            "The upstream closed the connection before the response was complete.",
        ),
        // The client went away or sent garbage: nothing useful can be written back.
        _ if e.esource() == &ErrorSource::Downstream => None,
        _ => Some((
            ApiError::new(
                500,
                ErrorKind::Server,
                "internal_error",
                "The gateway failed to handle the request.",
            ),
            "internal",
        )),
    }
}
