//! The end of every request: metrics recorded once and one structured access-log line.
//! Header values (Authorization and the rest) are never logged.

use pingora::proxy::Session;
use pingora::Error;

use super::context::RequestCtx;
use crate::openai::ErrorCode;
use crate::outcome::{decide, Facts, Headers, Outcome, UpstreamFailure};
use crate::state::Gateway;

/// Records metrics and writes the access log for a finished request; returns the reasoning
/// report (for the cache).
pub fn record(
    gw: &Gateway,
    session: &Session,
    e: Option<&Error>,
    ctx: &RequestCtx,
) -> Option<crate::reasoning::Report> {
    let status = ctx
        .local_status
        .or_else(|| session.response_written().map(|r| r.status.as_u16()))
        .unwrap_or(0);
    let elapsed = ctx.start.elapsed();
    let route = ctx.route_label();
    let upstream = ctx.upstream_label();
    let endpoint = ctx.endpoint.map_or("other", |e| e.label());
    let variant = ctx.variant_label();
    let outcome = outcome(session, e, ctx, status);
    let m = &gw.metrics;
    m.requests_total
        .with_label_values(&[
            route,
            variant,
            upstream,
            endpoint,
            &status.to_string(),
            outcome.as_str(),
        ])
        .inc();
    let stream = if ctx.stream_requested {
        "true"
    } else {
        "false"
    };
    m.request_duration_seconds
        .with_label_values(&[route, variant, upstream, stream, outcome.as_str()])
        .observe(elapsed.as_secs_f64());
    m.gen_ai_server_request_duration_seconds
        .with_label_values(&[route])
        .observe(elapsed.as_secs_f64());
    let ttft = ctx.first_byte_at.map(|t| t.duration_since(ctx.start));
    if ctx.attempts() > 0 {
        m.gateway_overhead_seconds
            .with_label_values(&[route])
            .observe(ctx.overhead.as_secs_f64());
    }
    if let Some(t) = ttft {
        m.time_to_first_token_seconds
            .with_label_values(&[route, upstream])
            .observe(t.as_secs_f64());
    }
    if let Some(t) = ttft {
        m.gen_ai_server_time_to_first_token_seconds
            .with_label_values(&[route])
            .observe(t.as_secs_f64());
    }
    let ttfat = ctx.first_answer_at.map(|t| t.duration_since(ctx.start));
    if let Some(t) = ttfat {
        m.time_to_first_answer_token_seconds
            .with_label_values(&[route, upstream])
            .observe(t.as_secs_f64());
    }
    let report = ctx.rewriter.as_ref().map(|rw| rw.report());
    if let Some(r) = &report {
        let labels = [route, upstream];
        m.reasoning_tokens
            .with_label_values(&labels)
            .observe(r.reasoning_tokens as f64);
        m.answer_tokens
            .with_label_values(&labels)
            .observe(r.answer_tokens as f64);
        if let Some(p) = r.prompt_tokens {
            m.gen_ai_client_token_usage
                .with_label_values(&[route, "input"])
                .observe(p as f64);
            m.gen_ai_client_token_usage
                .with_label_values(&[route, "output"])
                .observe((r.reasoning_tokens + r.answer_tokens) as f64);
        }
        m.reasoning_steps
            .with_label_values(&labels)
            .observe(r.steps as f64);
        m.self_corrections_total
            .with_label_values(&labels)
            .inc_by(r.corrections as u64);
        for (check, passed) in &r.verifications {
            let result = if *passed { "pass" } else { "fail" };
            m.verifications_total
                .with_label_values(&[route, upstream, check.label(), result])
                .inc();
            if !passed {
                m.verification_failures_total
                    .with_label_values(&[route, upstream, check.label()])
                    .inc();
            }
        }
        m.request_duration_by_reasoning_length_seconds
            .with_label_values(&[
                route,
                crate::metrics::reasoning_length_class(r.reasoning_tokens),
            ])
            .observe(elapsed.as_secs_f64());
    }
    if report.is_some() || ctx.step_timeouts > 0 {
        m.step_timeouts_total
            .with_label_values(&[route, upstream])
            .inc_by(ctx.step_timeouts as u64);
    }
    if let Some(code) = ctx.error.as_ref().map(|e| e.code) {
        if matches!(
            code,
            ErrorCode::ReasoningBudgetExceeded
                | ErrorCode::VerificationFailed
                | ErrorCode::StepTimeout
        ) {
            m.reasoning_aborts_total
                .with_label_values(&[route, upstream, code.as_str()])
                .inc();
        }
    }
    // A variant a client forced, or a cache replay, says nothing about the variant's health:
    // counting them would let a client roll back a healthy canary or keep a failing one alive.
    let counted = !ctx.variant_forced && outcome != Outcome::CacheHit;
    if let (Some(r), Some(v), true) = (&ctx.route, &ctx.variant, counted) {
        if let Some(canary) = &r.canary {
            let outcome = crate::canary::Outcome {
                at: std::time::Instant::now(),
                ok: !outcome.is_error()
                    && !matches!(
                        outcome,
                        Outcome::BudgetExceeded | Outcome::VerificationAborted
                    ),
                latency: elapsed,
                verification_failed: report
                    .as_ref()
                    .is_some_and(|rep| rep.failed().next().is_some()),
                step_timeout: ctx.step_timeouts > 0,
            };
            let change = gw.canary.record(&r.name, canary, v, outcome);
            match &change {
                Some(crate::canary::Change::RolledBack(reason)) => {
                    m.canary_rollbacks_total
                        .with_label_values(&[route, v])
                        .inc();
                    tracing::warn!(route, variant = %v, reason = %reason, "Canary variant rolled back: it gets no traffic until re-enabled with POST /admin/canary/enable.");
                }
                Some(crate::canary::Change::Promoted(percent)) => {
                    m.canary_promotions_total
                        .with_label_values(&[route, v])
                        .inc();
                    tracing::info!(route, variant = %v, percent, "Canary variant promoted to the next step: it now gets this percentage of the route's weighted traffic.");
                }
                None => {}
            }
            if change.is_some() {
                gw.canary.publish(m, &r.name, canary);
            }
        }
    }
    // Connect failures are counted per attempt in `fail_to_connect`.
    if let Some(kind) = ctx
        .upstream_error
        .filter(|k| !matches!(*k, "connect" | "local_resources" | "tls"))
    {
        m.upstream_errors_total
            .with_label_values(&[upstream, kind])
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
        verification_failures = report.as_ref().map(|r| r.failed().map(|c| c.label()).collect::<Vec<_>>().join(",")),
        cache = ctx.cache_header,
        cache_similarity = ctx.cache_similarity,
        "Request finished."
    );
    report
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
