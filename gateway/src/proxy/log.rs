//! The end of every request: metrics recorded once and one structured access-log line.
//! Header values (Authorization and the rest) are never logged.

use std::time::Duration;

use pingora::proxy::Session;
use pingora::Error;

use super::context::RequestCtx;
use crate::metrics::labels::{
    Abort, AbortReason, Budget, BudgetAction, CheckResult, Durations, FailedCheck,
    ForcedVerification, GenAiAttrs, ReasoningLength, Requests, Route, RouteReasoningLength,
    RouteUpstream, UpstreamError, Verification,
};
use crate::openai::ErrorCode;
use crate::outcome::{decide, Facts, Headers, Outcome, UpstreamFailure};
use crate::reasoning::Report;
use crate::state::Gateway;

/// What the end of a request found, for the phases after it (canary verdict, cache store).
pub struct Finished {
    /// How the request really ended.
    pub outcome: Outcome,
    /// From arrival to now.
    pub elapsed: Duration,
    /// The reasoning report, when the response was parsed.
    pub report: Option<Report>,
}

/// Records metrics and writes the access log for a finished request.
pub fn record(gw: &Gateway, session: &Session, e: Option<&Error>, ctx: &RequestCtx) -> Finished {
    let status = ctx
        .local_status
        .or_else(|| session.response_written().map(|r| r.status.as_u16()))
        .unwrap_or(0);
    let elapsed = ctx.start.elapsed();
    let route = ctx.route_label();
    let upstream = ctx.upstream_label();
    let variant = ctx.variant_label();
    let outcome = outcome(session, e, ctx, status);
    let m = &gw.metrics;
    let exemplar = super::trace::sampled_trace_id(ctx);
    m.requests_total
        .with(&Requests {
            route,
            variant,
            upstream,
            endpoint: ctx.endpoint,
            status,
            outcome,
            api: ctx.api,
        })
        .inc();
    let durations = Durations {
        route,
        variant,
        upstream,
        stream: ctx.stream_requested,
        outcome,
    };
    m.request_duration_seconds
        .with(&durations)
        .observe(elapsed.as_secs_f64());
    if let Some(id) = &exemplar {
        m.latency_exemplar(
            "request_duration_seconds",
            &durations,
            elapsed.as_secs_f64(),
            id.clone(),
        );
    }
    let ttft = ctx.first_byte_at.map(|t| t.duration_since(ctx.start));
    if ctx.attempts() > 0 {
        m.gateway_overhead_seconds
            .with(&Route { route })
            .observe(ctx.overhead.as_secs_f64());
    }
    let ru = RouteUpstream { route, upstream };
    if let Some(t) = ttft {
        m.time_to_first_token_seconds
            .with(&ru)
            .observe(t.as_secs_f64());
        if let Some(id) = &exemplar {
            m.latency_exemplar(
                "time_to_first_token_seconds",
                &ru,
                t.as_secs_f64(),
                id.clone(),
            );
        }
    }
    let ttfat = ctx.first_answer_at.map(|t| t.duration_since(ctx.start));
    if let Some(t) = ttfat {
        m.time_to_first_answer_token_seconds
            .with(&ru)
            .observe(t.as_secs_f64());
    }
    let report = ctx
        .rewriter
        .as_ref()
        .map(super::super::reasoning::rewrite::ResponseRewriter::report)
        .or_else(|| ctx.meter.as_ref().map(crate::api::meter::Meter::report));
    if let Some(r) = &report {
        m.reasoning_tokens
            .with(&ru)
            .observe(r.reasoning_tokens as f64);
        m.answer_tokens.with(&ru).observe(r.answer_tokens as f64);
        m.reasoning_steps.with(&ru).observe(r.steps as f64);
        m.self_corrections_total
            .with(&ru)
            .inc_by(r.corrections as u64);
        for &(check, passed) in &r.verifications {
            let result = if passed {
                CheckResult::Pass
            } else {
                CheckResult::Fail
            };
            m.verifications_total
                .with(&Verification {
                    route,
                    upstream,
                    check,
                    result,
                })
                .inc();
            if ctx.budget_actions.forced_answer {
                m.reasoning_budget_forced_verifications_total
                    .with(&ForcedVerification {
                        route,
                        check,
                        result,
                    })
                    .inc();
            }
            if !passed {
                m.verification_failures_total
                    .with(&FailedCheck {
                        route,
                        upstream,
                        check,
                    })
                    .inc();
            }
        }
        m.request_duration_by_reasoning_length_seconds
            .with(&RouteReasoningLength {
                route,
                reasoning_length: ReasoningLength(r.reasoning_tokens),
            })
            .observe(elapsed.as_secs_f64());
    }
    let error_type = super::trace::error_type(ctx, status, outcome).unwrap_or("");
    m.gen_ai.observe(&crate::metrics::genai::Observation {
        attrs: GenAiAttrs {
            route,
            operation: super::trace::operation(ctx),
            provider: upstream,
            request_model: ctx.route.as_ref().map_or("", |r| r.model.as_str()),
            error_type,
        },
        duration: elapsed.as_secs_f64(),
        ttft: ttft.map(|t| t.as_secs_f64()),
        tokens: report.as_ref().and_then(|r| {
            r.prompt_tokens
                .map(|p| (p, r.reasoning_tokens + r.answer_tokens))
        }),
    });
    if report.is_some() || ctx.step_timeouts > 0 {
        m.step_timeouts_total
            .with(&ru)
            .inc_by(ctx.step_timeouts as u64);
    }
    let abort = ctx.error.as_ref().and_then(|e| AbortReason::of(e.code));
    if let Some(reason) = abort {
        m.reasoning_aborts_total
            .with(&Abort {
                route,
                upstream,
                reason,
            })
            .inc();
    }
    let budget = |action| {
        m.reasoning_budget_actions_total
            .with(&Budget { route, action })
    };
    let actions = &ctx.budget_actions;
    if actions.forced_answer {
        budget(BudgetAction::ForcedAnswer).inc();
    }
    if actions.extended > 0 {
        budget(BudgetAction::Extended).inc_by(u64::from(actions.extended));
    }
    if actions.error || abort == Some(AbortReason::ReasoningBudgetExceeded) {
        budget(BudgetAction::Error).inc();
    }
    // Connect failures are counted per attempt in `fail_to_connect`.
    if let Some(kind) = ctx.upstream_error.filter(|k| !k.per_attempt()) {
        m.upstream_errors_total
            .with(&UpstreamError { upstream, kind })
            .inc();
    }

    let header = session.req_header();
    let peer = ctx
        .endpoint_guard
        .as_ref()
        .map(|g| g.endpoint.addr.to_string());
    let error_code = ctx.error.as_ref().map(|err| err.code.as_str());
    let proxy_error = e.map(|err| err.etype().as_str());
    tracing::info!(
        target: "access",
        request_id = %ctx.request_id,
        method = %header.method,
        path = %header.uri.path(),
        status,
        outcome = outcome.as_str(),
        route,
        variant,
        upstream,
        endpoint = peer.as_deref().unwrap_or("-"),
        stream = ctx.stream_requested,
        duration_ms = elapsed.as_secs_f64() * 1000.0,
        ttft_ms = ttft.map(|t| t.as_secs_f64() * 1000.0),
        request_bytes = ctx.request_bytes,
        response_bytes = ctx.response_bytes,
        attempts = ctx.attempts(),
        error_code,
        proxy_error,
        ttfat_ms = ttfat.map(|t| t.as_secs_f64() * 1000.0),
        overhead_us = ctx.overhead.as_micros() as u64,
        step_timeouts = ctx.step_timeouts,
        reasoning_tokens = report.as_ref().map(|r| r.reasoning_tokens),
        answer_tokens = report.as_ref().map(|r| r.answer_tokens),
        tokens_estimated = report.as_ref().map(|r| r.tokens_counted),
        reasoning_steps = report.as_ref().map(|r| r.steps),
        self_corrections = report.as_ref().map(|r| r.corrections),
        unterminated = report.as_ref().map(|r| r.unterminated),
        verification_failures = report.as_ref().map(|r| r.failed().map(super::super::reasoning::verify::Check::label).collect::<Vec<_>>().join(",")),
        cache = ctx.cache_header,
        cache_similarity = ctx.cache_similarity,
        cache_reason = ctx.cache_reason.as_ref().map(reasoning_cache::Reason::header),
        budget = ctx.budget_actions.label(),
        budget_extensions = ctx.budget_actions.extended,
        "Request finished."
    );
    super::trace::record(
        gw,
        session,
        ctx,
        &super::trace::Ending {
            status,
            outcome,
            elapsed,
            report: report.as_ref(),
        },
    );
    Finished {
        outcome,
        elapsed,
        report,
    }
}

/// How the request really ended, from what its context observed (see [`crate::outcome`]).
fn outcome(session: &Session, e: Option<&Error>, ctx: &RequestCtx, status: u16) -> Outcome {
    let code = ctx.error.as_ref().map(|err| err.code);
    // Headers the gateway wrote itself went out with the error; otherwise the upstream's were
    // out before it failed.
    let headers = if ctx.local_status.is_none() && session.response_written().is_some() {
        Headers::After
    } else {
        Headers::Before
    };
    decide(&Facts {
        status,
        local_error: ctx.local_status.is_some() && ctx.error.is_some(),
        upstream: ctx
            .upstream_error
            .map(|kind| (UpstreamFailure::of_kind(kind), headers)),
        step_timeout_abort: code == Some(ErrorCode::StepTimeout),
        budget_exceeded: code == Some(ErrorCode::ReasoningBudgetExceeded),
        verification_aborted: code == Some(ErrorCode::VerificationFailed),
        client_gone: e.is_some_and(|e| e.esource() == &pingora::ErrorSource::Downstream),
        cache_hit: ctx.cache_header == Some("hit"),
    })
}
