//! The request's trace: W3C context taken from the client and passed upstream, the instants
//! the phases mark, and at the end the spans built from the finished context (one server span
//! `chat {model}` with the GenAI attributes, children for the cache lookup, the replay and each
//! upstream attempt) handed to the OTLP exporter. Nothing here waits on the exporter.

use std::borrow::Cow;
use std::time::{Duration, Instant, SystemTime};

use opentelemetry::trace::{Event, SpanContext, SpanId, SpanKind, Status, TraceFlags};
use opentelemetry::{InstrumentationScope, KeyValue, Value};
use opentelemetry_sdk::trace::{SpanData, SpanEvents, SpanLinks};
use pingora::http::{RequestHeader, ResponseHeader};
use pingora::proxy::Session;
use serde_json::Value as Json;

pub(super) mod record;

use record::{Attempt, RequestParams, RequestTrace};

use super::context::RequestCtx;
use crate::openai::Endpoint;
use crate::outcome::Outcome;
use crate::reasoning::Report;
use crate::state::Gateway;
use crate::telemetry::context::{new_span_id, TraceContext};

/// Captured prompt text longer than this is cut (a span attribute, not an archive).
const MAX_CONTENT_CHARS: usize = 16 * 1024;

/// Starts the request's trace context when traces are exported (from the client's
/// `traceparent`/`tracestate`; a malformed one is ignored and a new trace begins).
pub fn start(gw: &Gateway, session: &Session, ctx: &mut RequestCtx) {
    let Some(traces) = gw.traces.get() else {
        return;
    };
    let header = |name: &str| {
        session
            .req_header()
            .headers
            .get(name)
            .and_then(|v| v.to_str().ok())
    };
    let context = TraceContext::from_headers(
        header("traceparent"),
        header("tracestate"),
        traces.config.sample_ratio,
    );
    let wall_start = SystemTime::now()
        .checked_sub(ctx.start.elapsed())
        .unwrap_or_else(SystemTime::now);
    ctx.trace = Some(Box::new(RequestTrace {
        context,
        server_span: new_span_id(),
        wall_start,
        attempts: Vec::new(),
        cache_lookup: None,
        replay: None,
        events: Vec::new(),
        request: RequestParams::default(),
        capture_content: traces.config.capture_content,
    }));
}

/// Keeps the request's GenAI parameters (and, with `capture_content`, its messages).
pub fn request(ctx: &mut RequestCtx, body: &serde_json::Map<String, Json>) {
    let Some(t) = ctx.trace.as_mut() else {
        return;
    };
    t.request = RequestParams {
        model: body.get("model").and_then(Json::as_str).map(str::to_string),
        max_tokens: body
            .get("max_completion_tokens")
            .or_else(|| body.get("max_tokens"))
            .and_then(Json::as_i64),
        temperature: body.get("temperature").and_then(Json::as_f64),
        top_p: body.get("top_p").and_then(Json::as_f64),
        prompt: t
            .capture_content
            .then(|| body.get("messages").or_else(|| body.get("prompt")))
            .flatten()
            .map(|m| truncate(m.to_string())),
    };
}

/// The cache lookup ran from `started` until now, in `stages`.
pub fn cache_lookup(ctx: &mut RequestCtx, started: Instant, stages: reasoning_cache::Stages) {
    if let Some(t) = ctx.trace.as_mut() {
        t.cache_lookup = Some((started, Instant::now(), stages));
    }
}

/// A hit was replayed from `started` until now.
pub fn replay(ctx: &mut RequestCtx, started: Instant) {
    if let Some(t) = ctx.trace.as_mut() {
        t.replay = Some((started, Instant::now()));
    }
}

/// An upstream attempt begins (a peer was picked).
pub fn attempt(ctx: &mut RequestCtx, endpoint: std::net::SocketAddr) {
    if let Some(t) = ctx.trace.as_mut() {
        t.attempts.push(Attempt {
            span: new_span_id(),
            start: Instant::now(),
            end: None,
            endpoint: Some(endpoint),
            error: None,
        });
    }
}

/// The current upstream attempt failed (`kind`: connect, stale connection, …).
pub fn attempt_failed(ctx: &mut RequestCtx, kind: &'static str) {
    if let Some(a) = ctx.trace.as_mut().and_then(|t| t.attempts.last_mut()) {
        a.end.get_or_insert_with(Instant::now);
        a.error.get_or_insert(kind);
    }
}

impl RequestTrace {
    /// A span event on the server span, now.
    pub fn event(&mut self, name: &'static str, attributes: Vec<KeyValue>) {
        self.events.push((Instant::now(), name, attributes));
    }
}

/// `traceparent` (naming the current upstream attempt's span) and `tracestate` for the
/// upstream, so its own spans join the trace. Without export the client's headers pass as
/// they came.
pub fn upstream_headers(ctx: &RequestCtx, req: &mut RequestHeader) -> pingora::Result<()> {
    let Some(t) = ctx.trace.as_ref() else {
        return Ok(());
    };
    let span = t.attempts.last().map_or(t.server_span, |a| a.span);
    req.insert_header("traceparent", t.context.traceparent(span))?;
    match t.context.tracestate() {
        Some(state) => req.insert_header("tracestate", state)?,
        None => {
            req.remove_header("tracestate");
        }
    }
    Ok(())
}

/// `traceparent` in the response when the gateway started the trace (a client that sent one
/// already knows it).
pub fn response_header(ctx: &RequestCtx, resp: &mut ResponseHeader) -> pingora::Result<()> {
    if let Some(t) = ctx.trace.as_ref().filter(|t| t.context.parent.is_none()) {
        resp.insert_header("traceparent", t.context.traceparent(t.server_span))?;
    }
    Ok(())
}

/// `traceparent` for an async job submitted by this request: the job's run and its callbacks
/// continue the trace, under the submitting request's span.
pub fn job_traceparent(ctx: &RequestCtx) -> Option<String> {
    ctx.trace
        .as_ref()
        .map(|t| t.context.traceparent(t.server_span))
}

/// The trace id of a sampled request (an exemplar for the latency histograms).
pub fn sampled_trace_id(ctx: &RequestCtx) -> Option<String> {
    ctx.trace
        .as_ref()
        .filter(|t| t.context.sampled)
        .map(|t| t.context.trace_id.to_string())
}

/// What the end of the request found (see `log::record`).
pub struct Ending<'a> {
    /// HTTP status answered.
    pub status: u16,
    /// How it ended.
    pub outcome: Outcome,
    /// From arrival to the end.
    pub elapsed: Duration,
    /// The reasoning report, when the response was parsed.
    pub report: Option<&'a Report>,
}

/// Builds the request's spans and queues them for export (sampled traces only).
pub fn record(gw: &Gateway, session: &Session, ctx: &RequestCtx, end: &Ending<'_>) {
    let (Some(traces), Some(t)) = (gw.traces.get(), ctx.trace.as_ref()) else {
        return;
    };
    if !t.context.sampled {
        return;
    }
    traces.submit(spans(session, ctx, t, end));
}

fn spans(session: &Session, ctx: &RequestCtx, t: &RequestTrace, end: &Ending<'_>) -> Vec<SpanData> {
    let at = |i: Instant| t.wall_start + i.saturating_duration_since(ctx.start);
    let end_time = t.wall_start + end.elapsed;
    let scope = InstrumentationScope::builder("reasoning-gateway")
        .with_version(env!("CARGO_PKG_VERSION"))
        .build();
    let span_context = |span: SpanId| {
        SpanContext::new(
            t.context.trace_id,
            span,
            TraceFlags::SAMPLED,
            false,
            t.context.state.clone(),
        )
    };
    let operation = operation(ctx);
    let request_model = t.request.model.clone();
    // The model the upstream said it served; else the one the gateway asked it for.
    let served_model = ctx
        .rewriter
        .as_ref()
        .and_then(crate::reasoning::ResponseRewriter::response_model)
        .or_else(|| ctx.route.as_ref().and_then(|r| r.upstream_model.clone()))
        .or_else(|| request_model.clone());
    let name = match &request_model {
        Some(m) => format!("{operation} {m}"),
        None => operation.to_string(),
    };
    let error_type = error_type(ctx, end.status, end.outcome);
    let mut attrs = vec![
        KeyValue::new("gen_ai.operation.name", operation),
        KeyValue::new("gen_ai.provider.name", ctx.upstream_label().to_string()),
        KeyValue::new(
            "http.request.method",
            session.req_header().method.to_string(),
        ),
        KeyValue::new("url.path", session.req_header().uri.path().to_string()),
        KeyValue::new("http.response.status_code", i64::from(end.status)),
        KeyValue::new("reasoning_gateway.request_id", ctx.request_id.clone()),
        KeyValue::new("reasoning_gateway.route", ctx.route_label().to_string()),
        KeyValue::new("reasoning_gateway.variant", ctx.variant_label().to_string()),
        KeyValue::new("reasoning_gateway.outcome", end.outcome.as_str()),
        KeyValue::new("reasoning_gateway.stream", ctx.stream_requested),
        KeyValue::new("reasoning_gateway.upstream_attempts", ctx.attempts() as i64),
    ];
    let mut opt = |key: &'static str, v: Option<Value>| {
        if let Some(v) = v {
            attrs.push(KeyValue::new(key, v));
        }
    };
    opt("gen_ai.request.model", request_model.map(Value::from));
    opt(
        "gen_ai.response.model",
        served_model
            .filter(|_| ctx.upstream_status.is_some() || ctx.cache_header == Some("hit"))
            .map(Value::from),
    );
    opt(
        "gen_ai.request.max_tokens",
        t.request.max_tokens.map(Value::from),
    );
    opt(
        "gen_ai.request.temperature",
        t.request.temperature.map(Value::from),
    );
    opt("gen_ai.request.top_p", t.request.top_p.map(Value::from));
    opt("error.type", error_type.map(Value::from));
    opt(
        "reasoning_gateway.cache.result",
        ctx.cache_header.map(Value::from),
    );
    opt(
        "reasoning_gateway.cache.similarity",
        ctx.cache_similarity.map(|s| Value::from(f64::from(s))),
    );
    opt(
        "reasoning_gateway.budget.action",
        ctx.budget_actions.label().map(Value::from),
    );
    if ctx.budget_actions.extended > 0 {
        opt(
            "reasoning_gateway.budget.extensions",
            Some(Value::from(i64::from(ctx.budget_actions.extended))),
        );
    }
    opt(
        "reasoning_gateway.cache.reason",
        ctx.cache_reason
            .as_ref()
            .map(|r| Value::from(r.header().clone())),
    );
    opt(
        "gen_ai.server.time_to_first_token",
        ctx.first_byte_at
            .map(|i| Value::from(i.saturating_duration_since(ctx.start).as_secs_f64())),
    );
    opt(
        "reasoning_gateway.time_to_first_answer_token",
        ctx.first_answer_at
            .map(|i| Value::from(i.saturating_duration_since(ctx.start).as_secs_f64())),
    );
    if let Some(ep) = ctx.endpoint_guard.as_ref().map(|g| g.endpoint.addr) {
        opt("server.address", Some(Value::from(ep.ip().to_string())));
        opt("server.port", Some(Value::from(i64::from(ep.port()))));
    }
    if let Some(r) = end.report {
        opt(
            "gen_ai.response.finish_reasons",
            r.finish_reason.clone().map(|f| {
                Value::Array(opentelemetry::Array::String(vec![
                    opentelemetry::StringValue::from(f),
                ]))
            }),
        );
        opt(
            "gen_ai.usage.input_tokens",
            r.prompt_tokens.map(|n| Value::from(n as i64)),
        );
        opt(
            "gen_ai.usage.output_tokens",
            Some(Value::from((r.reasoning_tokens + r.answer_tokens) as i64)),
        );
        opt(
            "gen_ai.usage.reasoning_tokens",
            Some(Value::from(r.reasoning_tokens as i64)),
        );
        opt(
            "reasoning_gateway.tokens_estimated",
            Some(Value::from(r.tokens_counted)),
        );
        opt(
            "reasoning_gateway.reasoning.steps",
            Some(Value::from(i64::from(r.steps))),
        );
        opt(
            "reasoning_gateway.reasoning.self_corrections",
            Some(Value::from(i64::from(r.corrections))),
        );
        if !r.verifications.is_empty() {
            let failed: Vec<&str> = r
                .failed()
                .map(crate::reasoning::verify::Check::label)
                .collect();
            opt(
                "reasoning_gateway.verification.result",
                Some(Value::from(if failed.is_empty() { "pass" } else { "fail" })),
            );
            if !failed.is_empty() {
                opt(
                    "reasoning_gateway.verification.failed",
                    Some(Value::from(failed.join(","))),
                );
            }
        }
    }
    opt(
        "reasoning_gateway.step_timeouts",
        (ctx.step_timeouts > 0).then(|| Value::from(i64::from(ctx.step_timeouts))),
    );
    opt(
        "gen_ai.input.messages",
        t.request.prompt.clone().map(Value::from),
    );
    if t.capture_content {
        let text = ctx
            .rewriter
            .as_ref()
            .and_then(crate::reasoning::ResponseRewriter::full_text);
        if let Some((reasoning, answer)) = text {
            let output = serde_json::json!([{
                "role": "assistant",
                "parts": [
                    {"type": "reasoning", "content": reasoning},
                    {"type": "text", "content": answer},
                ],
            }]);
            opt(
                "gen_ai.output.messages",
                Some(Value::from(truncate(output.to_string()))),
            );
        }
    }

    let mut events = SpanEvents::default();
    for (i, name, a) in &t.events {
        events.events.push(Event::new(*name, at(*i), a.clone(), 0));
    }
    if let Some(i) = ctx.first_answer_at {
        events
            .events
            .push(Event::new("reasoning.answer_started", at(i), Vec::new(), 0));
    }
    if let Some(r) = end.report.filter(|r| r.corrections > 0) {
        // Counted once the reasoning is complete; placed where the reasoning ended.
        let when = ctx.first_answer_at.map_or(end_time, at);
        events.events.push(Event::new(
            "reasoning.self_corrections",
            when,
            vec![KeyValue::new("count", i64::from(r.corrections))],
            0,
        ));
    }
    if let Some(r) = end.report {
        // Verification failures seen at the end (those seen mid-stream are already events).
        for check in r.failed() {
            let seen = t.events.iter().any(|(_, n, a)| {
                *n == "reasoning.verification_failure"
                    && a.iter().any(|kv| kv.value.as_str() == check.label())
            });
            if !seen {
                events.events.push(Event::new(
                    "reasoning.verification_failure",
                    end_time,
                    vec![KeyValue::new("check", check.label())],
                    0,
                ));
            }
        }
    }
    events.events.sort_by_key(|e| e.timestamp);

    let (parent, parent_remote) = match t.context.parent {
        Some(p) => (p, true),
        None => (SpanId::INVALID, false),
    };
    let status = if error_type.is_some() {
        Status::error(error_type.unwrap_or_default())
    } else {
        Status::Unset
    };
    let mut out = vec![SpanData {
        span_context: span_context(t.server_span),
        parent_span_id: parent,
        parent_span_is_remote: parent_remote,
        span_kind: SpanKind::Server,
        name: Cow::Owned(name.clone()),
        start_time: t.wall_start,
        end_time,
        attributes: attrs,
        dropped_attributes_count: 0,
        events,
        links: SpanLinks::default(),
        status,
        instrumentation_scope: scope.clone(),
    }];
    let child = |span: SpanId,
                 kind: SpanKind,
                 name: String,
                 start: Instant,
                 stop: Instant,
                 attributes: Vec<KeyValue>,
                 failed: Option<&'static str>| SpanData {
        span_context: span_context(span),
        parent_span_id: t.server_span,
        parent_span_is_remote: false,
        span_kind: kind,
        name: Cow::Owned(name),
        start_time: at(start),
        end_time: at(stop),
        attributes,
        dropped_attributes_count: 0,
        events: SpanEvents::default(),
        links: SpanLinks::default(),
        status: failed.map_or(Status::Unset, Status::error),
        instrumentation_scope: scope.clone(),
    };
    if let Some((s, e, stages)) = t.cache_lookup {
        let mut a = Vec::new();
        if let Some(r) = ctx.cache_header {
            a.push(KeyValue::new("reasoning_gateway.cache.result", r));
        }
        if let Some(s) = ctx.cache_similarity {
            a.push(KeyValue::new(
                "reasoning_gateway.cache.similarity",
                f64::from(s),
            ));
        }
        let lookup_span = new_span_id();
        out.push(child(
            lookup_span,
            SpanKind::Internal,
            "cache lookup".into(),
            s,
            e,
            a,
            None,
        ));
        // Its stages, children of the lookup span.
        for (name, stage) in [
            ("cache embed", stages.embed),
            ("cache search", stages.search),
            ("cache checks", stages.checks),
        ] {
            if let Some((start, stop)) = stage {
                let mut span = child(
                    new_span_id(),
                    SpanKind::Internal,
                    name.into(),
                    start,
                    stop,
                    Vec::new(),
                    None,
                );
                span.parent_span_id = lookup_span;
                out.push(span);
            }
        }
    }
    if let Some((s, e)) = t.replay {
        out.push(child(
            new_span_id(),
            SpanKind::Internal,
            "cache replay".into(),
            s,
            e,
            Vec::new(),
            None,
        ));
    }
    let end_instant = ctx.start + end.elapsed;
    let upstream_model = ctx
        .route
        .as_ref()
        .and_then(|r| r.upstream_model.clone())
        .or_else(|| t.request.model.clone());
    for (n, a) in t.attempts.iter().enumerate() {
        let mut attributes = vec![
            KeyValue::new("gen_ai.operation.name", operation),
            KeyValue::new("gen_ai.provider.name", ctx.upstream_label().to_string()),
            KeyValue::new("reasoning_gateway.attempt", n as i64 + 1),
        ];
        if let Some(m) = &upstream_model {
            attributes.push(KeyValue::new("gen_ai.request.model", m.clone()));
        }
        if let Some(ep) = a.endpoint {
            attributes.push(KeyValue::new("server.address", ep.ip().to_string()));
            attributes.push(KeyValue::new("server.port", i64::from(ep.port())));
        }
        let last = n + 1 == t.attempts.len();
        if let (true, Some(s)) = (last, ctx.upstream_status) {
            attributes.push(KeyValue::new("http.response.status_code", i64::from(s)));
        }
        if let Some(e) = a.error {
            attributes.push(KeyValue::new("error.type", e));
        }
        let name = match &upstream_model {
            Some(m) => format!("{operation} {m}"),
            None => operation.to_string(),
        };
        out.push(child(
            a.span,
            SpanKind::Client,
            name,
            a.start,
            a.end.unwrap_or(end_instant),
            attributes,
            a.error,
        ));
    }
    out
}

/// `gen_ai.operation.name` of the endpoint.
pub fn operation(ctx: &RequestCtx) -> &'static str {
    match ctx.endpoint {
        Some(Endpoint::Completions) => "text_completion",
        Some(Endpoint::Embeddings) => "embeddings",
        _ => "chat",
    }
}

/// `error.type`: the gateway's error code, else the upstream failure, else the outcome of a
/// failed request. Always a fixed name (metrics use it as a label).
pub fn error_type(ctx: &RequestCtx, status: u16, outcome: Outcome) -> Option<&'static str> {
    if let Some(e) = &ctx.error {
        return Some(e.code.as_str());
    }
    if let Some(k) = ctx.upstream_error {
        return Some(k.label());
    }
    match outcome {
        Outcome::Ok => None,
        other if status >= 500 || status == 0 => Some(other.as_str()),
        _ => None,
    }
}

fn truncate(mut s: String) -> String {
    if s.len() > MAX_CONTENT_CHARS {
        let mut cut = MAX_CONTENT_CHARS;
        while !s.is_char_boundary(cut) {
            cut -= 1;
        }
        s.truncate(cut);
    }
    s
}
