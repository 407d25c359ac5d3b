//! The response body on its way to the client: reasoning split, thinking time, step timeouts,
//! reasoning budget and periodic checks.

use std::time::Instant;

use bytes::Bytes;

use super::context::RequestCtx;
use crate::openai::{ApiError, ErrorCode};
use crate::reasoning::Alert;

/// Rewrites one body chunk in place and applies the route's reasoning policies.
pub fn filter(ctx: &mut RequestCtx, body: &mut Option<Bytes>, end_of_stream: bool) {
    if ctx.aborted {
        // The client has its error event and `[DONE]`; whatever the upstream still sends
        // before its socket shuts is dropped.
        *body = None;
        return;
    }
    let now = Instant::now();
    let has_bytes = body.as_ref().is_some_and(|b| !b.is_empty());
    if ctx.first_byte_at.is_none() && has_bytes {
        ctx.first_byte_at = Some(now);
    }
    let step_timeout = ctx.route.as_ref().and_then(|r| r.reasoning.step_timeout);
    let Some(rw) = ctx.rewriter.as_mut() else {
        if super::api::passthrough_body(ctx, body, end_of_stream) {
            return;
        }
        if ctx.codec.is_some() {
            let out = body.take().map(|b| b.to_vec()).unwrap_or_default();
            let out = super::api::client_bytes(ctx, out, end_of_stream);
            *body = Some(Bytes::from(out));
        }
        ctx.response_bytes += body.as_ref().map_or(0, Bytes::len);
        return;
    };
    if let (Some(limit), Some(last)) = (step_timeout, ctx.last_body_at) {
        if has_bytes && rw.in_reasoning() && now.duration_since(last) > limit {
            ctx.step_timeouts += 1;
            if let Some(t) = ctx.trace.as_mut() {
                t.event("reasoning.step_timeout", Vec::new());
            }
        }
    }
    if has_bytes {
        ctx.last_body_at = Some(now);
    }
    let checkpoints_before = rw.checkpoints_sent();
    let mut out = body.take().map(|b| rw.feed(&b)).unwrap_or_default();
    if let Some(t) = ctx.trace.as_mut() {
        for n in checkpoints_before..rw.checkpoints_sent() {
            let step = i64::from((n + 1) * ctx.checkpoints);
            t.event(
                "reasoning.checkpoint",
                vec![opentelemetry::KeyValue::new("steps", step)],
            );
        }
    }
    if end_of_stream {
        out.extend_from_slice(&rw.finish());
    }
    if ctx.first_answer_at.is_none() && rw.answer_started() {
        ctx.first_answer_at = Some(now);
    }
    let answers = ctx.forcing.as_ref().is_some_and(|p| p.answer);
    for alert in rw.take_alerts() {
        if let Some(t) = ctx.trace.as_mut() {
            let (name, attributes) = match alert {
                Alert::Warned(check) | Alert::Abort(check) => (
                    "reasoning.verification_failure",
                    vec![
                        opentelemetry::KeyValue::new("check", check.label()),
                        opentelemetry::KeyValue::new("aborted", matches!(alert, Alert::Abort(_))),
                    ],
                ),
                Alert::BudgetExceeded => ("reasoning.budget_exceeded", Vec::new()),
                Alert::EndedEarly => ("reasoning.ended_below_min_tokens", Vec::new()),
            };
            t.event(name, attributes);
        }
        let err = match alert {
            Alert::Warned(_) => continue,
            // Budget forcing: the driver (`forcing`) continues the generation.
            Alert::BudgetExceeded if answers => {
                ctx.forcing_next = Some(super::forcing::plan::Step::Answer);
                continue;
            }
            Alert::EndedEarly => {
                ctx.forcing_next = Some(super::forcing::plan::Step::Extend);
                continue;
            }
            Alert::BudgetExceeded => ApiError::new(
                ErrorCode::ReasoningBudgetExceeded,
                budget_message(ctx.route.as_deref(), ctx.pool.as_deref()),
            ),
            Alert::Abort(check) => ApiError::new(
                ErrorCode::VerificationFailed,
                format!(
                    "The reasoning failed the `{}` check; generation was stopped.",
                    check.label()
                ),
            ),
        };
        out.extend_from_slice(&rw.abort());
        if ctx.aggregator.is_none() {
            out.extend_from_slice(&err.sse_event());
        }
        ctx.error = Some(err);
        ctx.aborted = true;
        ctx.stop_upstream();
        break;
    }
    *body = Some(emit(ctx, out, end_of_stream));
}

/// Rewritten bytes on their way out: assembled into JSON for a client that wants JSON, written
/// in the client's API.
pub fn emit(ctx: &mut RequestCtx, mut out: Vec<u8>, end_of_stream: bool) -> Bytes {
    if let Some(agg) = ctx.aggregator.as_mut() {
        // JSON for the client: collect until the end; a stream the gateway ended is reported as
        // `finish_reason: length` (the reasoning budget or step timeout cut it).
        agg.feed(&out);
        out = if end_of_stream || ctx.aborted {
            agg.finish(ctx.aborted.then_some("length"))
        } else {
            Vec::new()
        };
    }
    let out = super::api::client_bytes(ctx, out, end_of_stream || ctx.aborted);
    ctx.response_bytes += out.len();
    Bytes::from(out)
}

/// The budget error's message: a route that asked for a forced answer says why it got none.
fn budget_message(
    route: Option<&crate::config::RouteConfig>,
    pool: Option<&crate::upstream::Pool>,
) -> String {
    let wanted_answer = route
        .and_then(|r| r.reasoning.budget.as_ref())
        .is_some_and(|b| b.answer);
    match pool {
        Some(pool) if wanted_answer => format!(
            "The reasoning reached the route's budget; upstream `{}` cannot continue a generation (its pool declares no `continuation`), so the generation was stopped instead of answering.",
            pool.config.name
        ),
        _ => "The reasoning exceeded the route's max_reasoning_tokens; generation was stopped."
            .to_string(),
    }
}
