//! What the phases record for a request's spans (data only, so the request's context names it
//! without the span-building code).

use std::time::{Instant, SystemTime};

use opentelemetry::trace::SpanId;
use opentelemetry::KeyValue;

use crate::telemetry::context::TraceContext;

/// What the phases record for the request's spans.
pub struct RequestTrace {
    /// The trace and the client's parent span.
    pub context: TraceContext,
    /// The gateway's server span.
    pub server_span: SpanId,
    /// Wall-clock time of `ctx.start`.
    pub(in crate::proxy) wall_start: SystemTime,
    /// Upstream attempts, in order.
    pub(in crate::proxy) attempts: Vec<Attempt>,
    /// The cache lookup, start and end, and its stages (embed, search, checks).
    pub(in crate::proxy) cache_lookup: Option<(Instant, Instant, reasoning_cache::Stages)>,
    /// The replay of a cache hit, start and end.
    pub(in crate::proxy) replay: Option<(Instant, Instant)>,
    /// Span events: when, name, attributes.
    pub(in crate::proxy) events: Vec<(Instant, &'static str, Vec<KeyValue>)>,
    /// Request parameters (GenAI attributes).
    pub(in crate::proxy) request: RequestParams,
    /// Put prompt text on the span.
    pub(in crate::proxy) capture_content: bool,
}

pub(in crate::proxy) struct Attempt {
    pub(in crate::proxy) span: SpanId,
    pub(in crate::proxy) start: Instant,
    pub(in crate::proxy) end: Option<Instant>,
    pub(in crate::proxy) endpoint: Option<std::net::SocketAddr>,
    pub(in crate::proxy) error: Option<&'static str>,
}

#[derive(Default)]
pub(in crate::proxy) struct RequestParams {
    pub(in crate::proxy) model: Option<String>,
    pub(in crate::proxy) max_tokens: Option<i64>,
    pub(in crate::proxy) temperature: Option<f64>,
    pub(in crate::proxy) top_p: Option<f64>,
    pub(in crate::proxy) prompt: Option<String>,
}
