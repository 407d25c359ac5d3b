//! Per-request state shared by the proxy phases.

use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;

use crate::config::RouteConfig;
use crate::openai::{ApiError, Endpoint};
use crate::reasoning::ResponseRewriter;
use crate::state::{Gateway, Snapshot};
use crate::upstream::{InflightGuard, Pool};

/// Decrements `inflight_requests` when the request ends, however it ends.
pub struct InflightRequest(Arc<Gateway>);

impl InflightRequest {
    /// Counts one request in.
    pub fn new(gw: Arc<Gateway>) -> Self {
        gw.metrics.inflight_requests.inc();
        InflightRequest(gw)
    }
}

impl Drop for InflightRequest {
    fn drop(&mut self) {
        self.0.metrics.inflight_requests.dec();
    }
}

/// Everything one request carries from phase to phase.
pub struct RequestCtx {
    /// When the request arrived (after its header was read).
    pub start: Instant,
    /// Kept from the client's `x-request-id` or generated.
    pub request_id: String,
    /// Keeps `inflight_requests` right.
    pub _inflight: Option<InflightRequest>,
    /// The API endpoint, once recognised.
    pub endpoint: Option<Endpoint>,
    /// The config generation this request runs on, start to end.
    pub snapshot: Option<Arc<Snapshot>>,
    /// The matched route.
    pub route: Option<Arc<RouteConfig>>,
    /// The chosen canary variant.
    pub variant: Option<String>,
    /// The client forced that variant by header: not counted in the canary's windows.
    pub variant_forced: bool,
    /// The route's pool.
    pub pool: Option<Arc<Pool>>,
    /// The body sent upstream (possibly rewritten).
    pub upstream_body: Bytes,
    /// Request size as received.
    pub request_bytes: usize,
    /// `stream: true` in the request.
    pub stream_requested: bool,
    /// Endpoint indices already tried (connect failures).
    pub tried: Vec<usize>,
    /// Retries after a stale pooled connection (the endpoint stays eligible).
    pub stale_retries: usize,
    /// The endpoint in use.
    pub endpoint_guard: Option<InflightGuard>,
    /// Upstream response status.
    pub upstream_status: Option<u16>,
    /// Status of a response the gateway answered itself.
    pub local_status: Option<u16>,
    /// The pool slot this request holds (pools with `max_inflight`), released when it ends.
    pub slot: Option<crate::upstream::Slot>,
    /// Time spent waiting for that slot.
    pub queue_wait: std::time::Duration,
    /// `retry-after` seconds on a local error (refused admission).
    pub retry_after: Option<u32>,
    /// First upstream body byte.
    pub first_byte_at: Option<Instant>,
    /// Response body bytes sent downstream.
    pub response_bytes: usize,
    /// The error answered (or appended to a stream).
    pub error: Option<ApiError>,
    /// Upstream failure kind counted in `upstream_errors_total`.
    pub upstream_error: Option<crate::outcome::UpstreamErrorKind>,
    /// Rewrites the response body (reasoning split); `None` forwards it untouched.
    pub rewriter: Option<ResponseRewriter>,
    /// The request's `response_format`, handed to the rewriter for the `json` check.
    pub response_format: Option<serde_json::Value>,
    /// The gateway asked the upstream for usage the client did not want.
    pub strip_usage: bool,
    /// `chat_template_kwargs.enable_thinking: false` in the request.
    pub thinking_off: bool,
    /// JSON for the client, assembled from an upstream stream (budgets and step timeouts).
    pub aggregator: Option<crate::reasoning::aggregate::Aggregator>,
    /// The request is served that way.
    pub aggregate: bool,
    /// First answer (not reasoning) text sent to the client.
    pub first_answer_at: Option<Instant>,
    /// Last upstream body bytes (for step timeouts).
    pub last_body_at: Option<Instant>,
    /// Gaps between tokens while reasoning longer than `step_timeout`.
    pub step_timeouts: u32,
    /// The gateway ended the stream itself (budget, periodic check).
    pub aborted: bool,
    /// Time spent in the gateway itself: request intake up to choosing a peer, plus every
    /// response-body filter call (upstream waits excluded).
    pub overhead: std::time::Duration,
    /// Socket of the upstream connection in use (to stop a stream the gateway ended).
    pub upstream_fd: Option<std::os::unix::io::RawFd>,
    /// `x-reasoning-cache` value, when the route has a cache.
    pub cache_header: Option<&'static str>,
    /// Similarity of the hit, or of the best candidate of a miss.
    pub cache_similarity: Option<f32>,
    /// Why the hit was served, or why the best candidate of a miss was refused.
    pub cache_reason: Option<reasoning_cache::Reason>,
    /// Where to store the response if it qualifies.
    pub cache_pending: Option<reasoning_cache::Pending>,
    /// Steps between `reasoning_checkpoint` chunks the streaming client asked for (0: none).
    pub checkpoints: u32,
    /// The API the client spoke, once recognised.
    pub api: Option<crate::api::Api>,
    /// Writes the chat output in the client's API (Responses, Messages); `None` for chat.
    pub codec: Option<crate::api::Codec>,
    /// The client's own reasoning budget, when smaller than the route's.
    pub reasoning_budget: Option<u64>,
    /// The request is forwarded in its own API to an upstream that speaks it.
    pub passthrough: bool,
    /// Reads such a passed-through response for the reasoning metrics.
    pub meter: Option<crate::api::meter::Meter>,
    /// The request's trace, when traces are exported (`telemetry.otlp`).
    pub trace: Option<Box<super::trace::record::RequestTrace>>,
    /// Budget forcing: the gateway drives the upstream exchange and continues it.
    pub forcing: Option<super::forcing::plan::Plan>,
    /// The continuation the body filter asked for.
    pub forcing_next: Option<super::forcing::plan::Step>,
    /// What the reasoning budget did to this request.
    pub budget_actions: super::forcing::plan::Actions,
}

impl RequestCtx {
    /// A fresh context.
    pub fn new() -> Self {
        RequestCtx {
            start: Instant::now(),
            request_id: String::new(),
            _inflight: None,
            endpoint: None,
            snapshot: None,
            route: None,
            variant: None,
            variant_forced: false,
            pool: None,
            upstream_body: Bytes::new(),
            request_bytes: 0,
            stream_requested: false,
            tried: Vec::new(),
            stale_retries: 0,
            endpoint_guard: None,
            upstream_status: None,
            local_status: None,
            slot: None,
            queue_wait: std::time::Duration::ZERO,
            retry_after: None,
            first_byte_at: None,
            response_bytes: 0,
            error: None,
            upstream_error: None,
            rewriter: None,
            response_format: None,
            strip_usage: false,
            thinking_off: false,
            aggregator: None,
            aggregate: false,
            first_answer_at: None,
            last_body_at: None,
            step_timeouts: 0,
            aborted: false,
            upstream_fd: None,
            cache_header: None,
            cache_similarity: None,
            cache_reason: None,
            cache_pending: None,
            checkpoints: 0,
            api: None,
            codec: None,
            reasoning_budget: None,
            passthrough: false,
            meter: None,
            trace: None,
            forcing: None,
            forcing_next: None,
            budget_actions: Default::default(),
            overhead: std::time::Duration::ZERO,
        }
    }

    /// Upstream attempts so far (each endpoint picked, including one picked again after a
    /// stale pooled connection).
    pub fn attempts(&self) -> usize {
        self.tried.len() + self.stale_retries
    }

    /// Route label for metrics and logs.
    pub fn route_label(&self) -> &str {
        self.route.as_ref().map_or("none", |r| r.name.as_str())
    }

    /// Upstream label for metrics and logs.
    pub fn upstream_label(&self) -> &str {
        match (&self.pool, &self.route) {
            (Some(p), _) => p.config.name.as_str(),
            (None, Some(r)) => r.upstream.as_str(),
            (None, None) => "none",
        }
    }

    /// Variant label: the canary variant, or `default` for routes without one.
    pub fn variant_label(&self) -> &str {
        self.variant.as_deref().unwrap_or("default")
    }
}

impl Default for RequestCtx {
    fn default() -> Self {
        RequestCtx::new()
    }
}

impl RequestCtx {
    /// Stops the upstream now, so it stops generating: the error event must go out with this chunk,
    /// and returning an error from a body filter would drop the whole batch of chunks it belongs to.
    /// Shutting the socket makes Pingora's next upstream read fail instead; the connection is not
    /// pooled after an error, so the descriptor cannot belong to anyone else yet.
    pub fn stop_upstream(&self) {
        if let Some(fd) = self.upstream_fd {
            let _ = nix::sys::socket::shutdown(fd, nix::sys::socket::Shutdown::Both);
        }
    }
}
