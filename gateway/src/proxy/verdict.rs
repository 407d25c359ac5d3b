//! The canary's verdict on a finished request: whether it says anything about its variant's
//! health, and if so how it went, handed to [`crate::canary::CanaryState::judge`].

use super::context::RequestCtx;
use super::log::Finished;
use crate::outcome::Outcome;
use crate::state::Gateway;

/// Records a finished request in its canary variant's window (routes with a canary only).
pub fn record(gw: &Gateway, ctx: &RequestCtx, finished: &Finished) {
    let (Some(route), Some(variant)) = (&ctx.route, &ctx.variant) else {
        return;
    };
    let Some(canary) = &route.canary else {
        return;
    };
    // A variant a client forced, or a cache replay, says nothing about the variant's health:
    // counting them would let a client roll back a healthy canary or keep a failing one alive.
    if ctx.variant_forced || finished.outcome == Outcome::CacheHit {
        return;
    }
    let outcome = crate::canary::Outcome {
        at: std::time::Instant::now(),
        ok: !finished.outcome.is_error()
            && !matches!(
                finished.outcome,
                Outcome::BudgetExceeded | Outcome::VerificationAborted
            ),
        latency: finished.elapsed,
        verification_failed: finished
            .report
            .as_ref()
            .is_some_and(|rep| rep.failed().next().is_some()),
        step_timeout: ctx.step_timeouts > 0,
    };
    gw.canary
        .judge(&gw.metrics, &route.name, canary, variant, outcome);
}
