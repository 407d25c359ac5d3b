//! Errors answered to clients in OpenAI shape. [`ErrorCode`] is the one table of what the
//! gateway can answer: each code's wire string (the body's `code` and the access log's
//! `error_code`), its HTTP status, its OpenAI `type` and, where it is fixed, its `param`.

use serde_json::json;

/// OpenAI error `type` values.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// The client's request is wrong.
    InvalidRequest,
    /// Something failed on the server or upstream side.
    Server,
    /// Too many requests for the capacity configured: retry later.
    RateLimit,
}

impl ErrorKind {
    /// The `type` string of the error body.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorKind::InvalidRequest => "invalid_request_error",
            ErrorKind::Server => "server_error",
            ErrorKind::RateLimit => "rate_limit_error",
        }
    }
}

/// Every OpenAI error `code` the gateway answers (a closed set: log fields and test keys).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorCode {
    /// A request field has a wrong type or value (its `param` says which).
    InvalidValue,
    /// `model` is missing or empty.
    MissingRequiredParameter,
    /// The body is not a JSON object.
    InvalidJson,
    /// The request itself is malformed (Content-Length, an unreadable body).
    InvalidRequest,
    /// A chunked body too long to buffer without a Content-Length.
    LengthRequired,
    /// The body is over `max_request_bytes`.
    RequestTooLarge,
    /// The body did not arrive within `client_body_timeout`.
    RequestTimeout,
    /// A path the gateway (or its admin listener) does not serve.
    UnknownUrl,
    /// A known path asked with another method.
    MethodNotAllowed,
    /// No route matches the request's model.
    ModelNotFound,
    /// No async job with that id.
    JobNotFound,
    /// An async job's `callback_url` is not allowed.
    InvalidCallbackUrl,
    /// `async_jobs.max_jobs` jobs are stored.
    TooManyJobs,
    /// The tenant has `async_jobs.max_jobs_per_tenant` jobs stored.
    TenantJobQuotaExceeded,
    /// Async jobs hold `async_jobs.max_bytes`.
    JobMemoryFull,
    /// A pool with `max_inflight` has `max_queue` requests waiting already.
    UpstreamQueueFull,
    /// No pool slot came free within `queue_timeout`.
    UpstreamQueueTimeout,
    /// The route's upstream is not running (the bundled engine is off).
    UpstreamUnavailable,
    /// No healthy endpoint left in the route's pool.
    NoHealthyUpstream,
    /// Connecting to the upstream failed.
    UpstreamUnreachable,
    /// The TLS handshake with the upstream failed.
    UpstreamTlsError,
    /// The upstream did not answer within `read_timeout`.
    UpstreamTimeout,
    /// The upstream answered something that is not HTTP.
    UpstreamProtocolError,
    /// The upstream closed the connection mid-response.
    UpstreamDisconnected,
    /// The gateway could not open a socket to the upstream (fds or memory).
    GatewayOutOfResources,
    /// Pingora decided a status itself; the status is Pingora's (see [`ApiError::with_status`]).
    GatewayError,
    /// The gateway failed to handle the request.
    InternalError,
    /// `max_connections` client connections are open (written raw at accept by the listener).
    TooManyConnections,
    /// The reasoning went over `max_reasoning_tokens`: generation stopped (sent in-stream).
    ReasoningBudgetExceeded,
    /// The reasoning failed an `abort` verification check: generation stopped (in-stream).
    VerificationFailed,
    /// No token within `step_timeout` while reasoning (`step_timeout_policy: abort`).
    StepTimeout,
    /// An admin request without the right `Authorization: Bearer` token.
    InvalidAdminToken,
    /// An admin request from a web page (an `Origin` header).
    OriginNotAllowed,
    /// An admin request with a form or `text/plain` body.
    UnsupportedContentType,
    /// An admin request whose `Host` is not an IP address or `localhost`.
    HostNotAllowed,
    /// Fleet mode: the shared store (Redis) an async job lives in is unreachable.
    SharedStateUnavailable,
}

impl ErrorCode {
    /// Every code, in declaration order.
    pub const ALL: [ErrorCode; 36] = [
        ErrorCode::InvalidValue,
        ErrorCode::MissingRequiredParameter,
        ErrorCode::InvalidJson,
        ErrorCode::InvalidRequest,
        ErrorCode::LengthRequired,
        ErrorCode::RequestTooLarge,
        ErrorCode::RequestTimeout,
        ErrorCode::UnknownUrl,
        ErrorCode::MethodNotAllowed,
        ErrorCode::ModelNotFound,
        ErrorCode::JobNotFound,
        ErrorCode::InvalidCallbackUrl,
        ErrorCode::TooManyJobs,
        ErrorCode::TenantJobQuotaExceeded,
        ErrorCode::JobMemoryFull,
        ErrorCode::UpstreamQueueFull,
        ErrorCode::UpstreamQueueTimeout,
        ErrorCode::UpstreamUnavailable,
        ErrorCode::NoHealthyUpstream,
        ErrorCode::UpstreamUnreachable,
        ErrorCode::UpstreamTlsError,
        ErrorCode::UpstreamTimeout,
        ErrorCode::UpstreamProtocolError,
        ErrorCode::UpstreamDisconnected,
        ErrorCode::GatewayOutOfResources,
        ErrorCode::GatewayError,
        ErrorCode::InternalError,
        ErrorCode::TooManyConnections,
        ErrorCode::ReasoningBudgetExceeded,
        ErrorCode::VerificationFailed,
        ErrorCode::StepTimeout,
        ErrorCode::InvalidAdminToken,
        ErrorCode::OriginNotAllowed,
        ErrorCode::UnsupportedContentType,
        ErrorCode::HostNotAllowed,
        ErrorCode::SharedStateUnavailable,
    ];

    /// The wire string: the body's `code` and the access log's `error_code`.
    pub fn as_str(self) -> &'static str {
        self.spec().0
    }

    /// The HTTP status answered. The budget and verification aborts go out as an error event in
    /// a stream whose 200 was sent; a [`ErrorCode::GatewayError`] carries Pingora's status.
    pub fn status(self) -> u16 {
        self.spec().1
    }

    /// The OpenAI `type`.
    pub fn kind(self) -> ErrorKind {
        self.spec().2
    }

    /// The request field at fault, for codes that always name the same one.
    pub fn param(self) -> Option<&'static str> {
        match self {
            ErrorCode::MissingRequiredParameter | ErrorCode::ModelNotFound => Some("model"),
            ErrorCode::InvalidCallbackUrl => Some("callback_url"),
            _ => None,
        }
    }

    /// The code a wire string names (an error event the async job runner read back).
    pub fn parse(s: &str) -> Option<ErrorCode> {
        ErrorCode::ALL.into_iter().find(|c| c.as_str() == s)
    }

    /// The table: wire string, status, type.
    fn spec(self) -> (&'static str, u16, ErrorKind) {
        use ErrorKind::{InvalidRequest as Client, RateLimit, Server};
        match self {
            ErrorCode::InvalidValue => ("invalid_value", 400, Client),
            ErrorCode::MissingRequiredParameter => ("missing_required_parameter", 400, Client),
            ErrorCode::InvalidJson => ("invalid_json", 400, Client),
            ErrorCode::InvalidRequest => ("invalid_request", 400, Client),
            ErrorCode::LengthRequired => ("length_required", 411, Client),
            ErrorCode::RequestTooLarge => ("request_too_large", 413, Client),
            ErrorCode::RequestTimeout => ("request_timeout", 408, Client),
            ErrorCode::UnknownUrl => ("unknown_url", 404, Client),
            ErrorCode::MethodNotAllowed => ("method_not_allowed", 405, Client),
            ErrorCode::ModelNotFound => ("model_not_found", 404, Client),
            ErrorCode::JobNotFound => ("job_not_found", 404, Client),
            ErrorCode::InvalidCallbackUrl => ("invalid_callback_url", 400, Client),
            // A 429 of type invalid_request_error: the store as a whole is full, which retrying
            // this client's request soon will not change.
            ErrorCode::TooManyJobs => ("too_many_jobs", 429, Client),
            ErrorCode::TenantJobQuotaExceeded => ("tenant_job_quota_exceeded", 429, RateLimit),
            ErrorCode::JobMemoryFull => ("job_memory_full", 429, RateLimit),
            ErrorCode::UpstreamQueueFull => ("upstream_queue_full", 429, RateLimit),
            ErrorCode::UpstreamQueueTimeout => ("upstream_queue_timeout", 429, RateLimit),
            ErrorCode::UpstreamUnavailable => ("upstream_unavailable", 503, Server),
            ErrorCode::NoHealthyUpstream => ("no_healthy_upstream", 503, Server),
            ErrorCode::UpstreamUnreachable => ("upstream_unreachable", 502, Server),
            ErrorCode::UpstreamTlsError => ("upstream_tls_error", 502, Server),
            ErrorCode::UpstreamTimeout => ("upstream_timeout", 504, Server),
            ErrorCode::UpstreamProtocolError => ("upstream_protocol_error", 502, Server),
            ErrorCode::UpstreamDisconnected => ("upstream_disconnected", 502, Server),
            ErrorCode::GatewayOutOfResources => ("gateway_out_of_resources", 503, Server),
            ErrorCode::GatewayError => ("gateway_error", 502, Server),
            ErrorCode::InternalError => ("internal_error", 500, Server),
            ErrorCode::TooManyConnections => ("too_many_connections", 503, Server),
            ErrorCode::ReasoningBudgetExceeded => ("reasoning_budget_exceeded", 200, Server),
            ErrorCode::VerificationFailed => ("verification_failed", 200, Server),
            ErrorCode::StepTimeout => ("step_timeout", 504, Server),
            ErrorCode::InvalidAdminToken => ("invalid_admin_token", 401, Client),
            ErrorCode::OriginNotAllowed => ("origin_not_allowed", 403, Client),
            ErrorCode::UnsupportedContentType => ("unsupported_content_type", 415, Client),
            ErrorCode::HostNotAllowed => ("host_not_allowed", 403, Client),
            ErrorCode::SharedStateUnavailable => ("shared_state_unavailable", 503, Server),
        }
    }
}

impl std::fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An error answered to the client in OpenAI shape.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{status} {code}: {message}")]
pub struct ApiError {
    /// HTTP status (the code's, but for [`ErrorCode::GatewayError`]).
    pub status: u16,
    /// OpenAI `code`; it gives the `type`.
    pub code: ErrorCode,
    /// Human-readable message.
    pub message: String,
    /// The request field at fault.
    pub param: Option<&'static str>,
}

impl ApiError {
    /// An error with its code's status and `param`.
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        ApiError {
            status: code.status(),
            code,
            message: message.into(),
            param: code.param(),
        }
    }

    /// The same error answered with another status (Pingora's own, for `gateway_error`).
    pub fn with_status(self, status: u16) -> Self {
        ApiError { status, ..self }
    }

    /// A 400 about one request field.
    pub fn invalid_param(param: &'static str, message: impl Into<String>) -> Self {
        ApiError {
            param: Some(param),
            ..ApiError::new(ErrorCode::InvalidValue, message)
        }
    }

    /// 404 for a path the gateway does not serve.
    pub fn unknown_url(method: &str, path: &str) -> Self {
        ApiError::new(
            ErrorCode::UnknownUrl,
            format!("Invalid URL ({method} {path})"),
        )
    }

    /// 405 for a known path asked with another method; `allowed` names the right one(s).
    pub fn method_not_allowed(method: &str, path: &str, allowed: &str) -> Self {
        ApiError::new(
            ErrorCode::MethodNotAllowed,
            format!("{method} is not allowed on {path}; use {allowed}"),
        )
    }

    /// 404 for a model no route matches.
    pub fn model_not_found(model: &str) -> Self {
        ApiError::new(
            ErrorCode::ModelNotFound,
            format!("The model `{model}` does not exist or you do not have access to it."),
        )
    }

    /// 413 for a body over the limit.
    pub fn body_too_large(limit: usize) -> Self {
        ApiError::new(
            ErrorCode::RequestTooLarge,
            format!("The request body exceeds the gateway's limit of {limit} bytes."),
        )
    }

    /// The JSON body `{"error":{…}}`.
    pub fn body(&self) -> Vec<u8> {
        let v = json!({"error": {
            "message": self.message,
            "type": self.code.kind().as_str(),
            "param": self.param,
            "code": self.code.as_str(),
        }});
        // Serialising a `json!` value cannot fail.
        serde_json::to_vec(&v).unwrap_or_default()
    }

    /// The same error as one SSE event followed by `[DONE]`, for streams already under way.
    pub fn sse_event(&self) -> Vec<u8> {
        let mut out = b"data: ".to_vec();
        out.extend_from_slice(&self.body());
        out.extend_from_slice(b"\n\ndata: [DONE]\n\n");
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The status, `type` and `code` each error had when they were written at its call site
    /// (before this table): dashboards, alert rules and SDK retries key on them.
    #[test]
    fn every_code_keeps_its_wire_string_status_and_type() {
        use ErrorKind::{InvalidRequest as I, RateLimit as R, Server as S};
        let table = [
            (ErrorCode::InvalidValue, "invalid_value", 400, I),
            (
                ErrorCode::MissingRequiredParameter,
                "missing_required_parameter",
                400,
                I,
            ),
            (ErrorCode::InvalidJson, "invalid_json", 400, I),
            (ErrorCode::InvalidRequest, "invalid_request", 400, I),
            (ErrorCode::LengthRequired, "length_required", 411, I),
            (ErrorCode::RequestTooLarge, "request_too_large", 413, I),
            (ErrorCode::RequestTimeout, "request_timeout", 408, I),
            (ErrorCode::UnknownUrl, "unknown_url", 404, I),
            (ErrorCode::MethodNotAllowed, "method_not_allowed", 405, I),
            (ErrorCode::ModelNotFound, "model_not_found", 404, I),
            (ErrorCode::JobNotFound, "job_not_found", 404, I),
            (
                ErrorCode::InvalidCallbackUrl,
                "invalid_callback_url",
                400,
                I,
            ),
            (ErrorCode::TooManyJobs, "too_many_jobs", 429, I),
            (
                ErrorCode::TenantJobQuotaExceeded,
                "tenant_job_quota_exceeded",
                429,
                R,
            ),
            (ErrorCode::JobMemoryFull, "job_memory_full", 429, R),
            (ErrorCode::UpstreamQueueFull, "upstream_queue_full", 429, R),
            (
                ErrorCode::UpstreamQueueTimeout,
                "upstream_queue_timeout",
                429,
                R,
            ),
            (
                ErrorCode::UpstreamUnavailable,
                "upstream_unavailable",
                503,
                S,
            ),
            (ErrorCode::NoHealthyUpstream, "no_healthy_upstream", 503, S),
            (
                ErrorCode::UpstreamUnreachable,
                "upstream_unreachable",
                502,
                S,
            ),
            (ErrorCode::UpstreamTlsError, "upstream_tls_error", 502, S),
            (ErrorCode::UpstreamTimeout, "upstream_timeout", 504, S),
            (
                ErrorCode::UpstreamProtocolError,
                "upstream_protocol_error",
                502,
                S,
            ),
            (
                ErrorCode::UpstreamDisconnected,
                "upstream_disconnected",
                502,
                S,
            ),
            (
                ErrorCode::GatewayOutOfResources,
                "gateway_out_of_resources",
                503,
                S,
            ),
            (ErrorCode::GatewayError, "gateway_error", 502, S),
            (ErrorCode::InternalError, "internal_error", 500, S),
            (
                ErrorCode::TooManyConnections,
                "too_many_connections",
                503,
                S,
            ),
            (
                ErrorCode::ReasoningBudgetExceeded,
                "reasoning_budget_exceeded",
                200,
                S,
            ),
            (ErrorCode::VerificationFailed, "verification_failed", 200, S),
            (ErrorCode::StepTimeout, "step_timeout", 504, S),
            (ErrorCode::InvalidAdminToken, "invalid_admin_token", 401, I),
            (ErrorCode::OriginNotAllowed, "origin_not_allowed", 403, I),
            (
                ErrorCode::UnsupportedContentType,
                "unsupported_content_type",
                415,
                I,
            ),
            (ErrorCode::HostNotAllowed, "host_not_allowed", 403, I),
            (
                ErrorCode::SharedStateUnavailable,
                "shared_state_unavailable",
                503,
                S,
            ),
        ];
        assert_eq!(table.len(), ErrorCode::ALL.len());
        for (code, (listed, s, status, kind)) in ErrorCode::ALL.into_iter().zip(table) {
            assert_eq!(code, listed);
            assert_eq!(
                (code.as_str(), code.status(), code.kind()),
                (s, status, kind)
            );
            assert_eq!(ErrorCode::parse(s), Some(code));
        }
        assert_eq!(ErrorCode::parse("no_such_code"), None);
    }

    #[test]
    fn a_gateway_error_carries_pingoras_status() {
        let e =
            ApiError::new(ErrorCode::GatewayError, "The gateway answered 503.").with_status(503);
        assert_eq!(
            (e.status, e.code.as_str(), e.param),
            (503, "gateway_error", None)
        );
    }
}
