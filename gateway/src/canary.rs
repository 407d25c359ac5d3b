//! Canary health: a sliding window of outcomes per (route, variant), the comparison that rolls a
//! canary back, and the rollback state operators see and clear. Survives config reloads.

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::config::{CanaryConfig, RollbackConfig, RouteConfig};
use crate::metrics::labels::RouteVariant;
use crate::metrics::Metrics;

/// What a recorded outcome changed.
#[derive(Debug, Clone, PartialEq)]
pub enum Change {
    /// The variant was rolled back, for this reason.
    RolledBack(String),
    /// The canary moved to the next promotion step: its share of traffic in percent.
    Promoted(u32),
}

/// Most outcomes kept per variant, whatever the window.
const MAX_EVENTS: usize = 100_000;

/// A canary route's served variants now (one entry each, in config order).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Live {
    /// Weight in force: configured or the promotion step's, 0 when rolled back.
    pub weights: Vec<u32>,
    /// Rolled back (until an operator re-enables it).
    pub rolled_back: Vec<bool>,
}

/// How one request went. Requests a client forced onto a variant and cache hits are not
/// recorded (the caller skips them): neither says anything about the variant's health.
#[derive(Debug, Clone, Copy)]
pub struct Outcome {
    /// When it finished.
    pub at: Instant,
    /// Its [`crate::outcome::Outcome`] was not a failure (`upstream_error`, `timeout`,
    /// `step_timeout`) nor a gateway abort (`budget_exceeded`, `verification_aborted`): a
    /// stream that dies after its 200 counts against the variant.
    pub ok: bool,
    /// Total duration.
    pub latency: Duration,
    /// Some verification check failed.
    pub verification_failed: bool,
    /// A step timeout happened.
    pub step_timeout: bool,
}

#[derive(Debug, Default)]
struct Window {
    events: VecDeque<Outcome>,
    rolled_back: Option<String>,
    /// Promotion step reached (index into `steps`; clamped when a reload shortens the list).
    step: usize,
    /// When the current step's first outcome was recorded.
    step_since: Option<Instant>,
    /// Outcomes recorded on the current step.
    step_requests: usize,
}

impl Window {
    fn prune(&mut self, now: Instant, window: Duration) {
        while self
            .events
            .front()
            .is_some_and(|e| now.duration_since(e.at) > window)
            || self.events.len() > MAX_EVENTS
        {
            self.events.pop_front();
        }
    }
}

/// Rates over a set of outcomes.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Rates {
    /// Outcomes counted.
    pub requests: usize,
    /// Share not ok.
    pub error_rate: f64,
    /// 95th percentile latency (seconds).
    pub p95: f64,
    /// Share with a verification failure.
    pub verification_failure_rate: f64,
    /// Share with a step timeout.
    pub step_timeout_rate: f64,
}

/// Rates of `events`.
pub fn rates<'a>(events: impl Iterator<Item = &'a Outcome>) -> Rates {
    let mut lat = Vec::new();
    let (mut errors, mut vf, mut st) = (0usize, 0usize, 0usize);
    for e in events {
        lat.push(e.latency.as_secs_f64());
        errors += usize::from(!e.ok);
        vf += usize::from(e.verification_failed);
        st += usize::from(e.step_timeout);
    }
    let n = lat.len();
    lat.sort_by(f64::total_cmp);
    let share = |k: usize| if n == 0 { 0.0 } else { k as f64 / n as f64 };
    let p95 = if n == 0 {
        0.0
    } else {
        lat[((n as f64 * 0.95).ceil() as usize).clamp(1, n) - 1]
    };
    Rates {
        requests: n,
        error_rate: share(errors),
        p95,
        verification_failure_rate: share(vf),
        step_timeout_rate: share(st),
    }
}

/// Why the canary must be rolled back, if it must.
pub fn compare(stable: &Rates, canary: &Rates, cfg: &RollbackConfig) -> Option<String> {
    if stable.requests < cfg.min_requests || canary.requests < cfg.min_requests {
        return None;
    }
    if canary.error_rate - stable.error_rate > cfg.max_error_rate_delta {
        return Some(format!(
            "error rate {:.1} % against stable {:.1} %",
            canary.error_rate * 100.0,
            stable.error_rate * 100.0
        ));
    }
    // A ratio of sub-millisecond latencies is noise: the gap must also matter in absolute terms.
    let slower_by = canary.p95 - stable.p95;
    if stable.p95 > 0.0
        && canary.p95 / stable.p95 > cfg.max_p95_ratio
        && slower_by > cfg.min_p95_delta.as_secs_f64()
    {
        return Some(format!(
            "p95 latency {:.3} s against stable {:.3} s",
            canary.p95, stable.p95
        ));
    }
    if canary.verification_failure_rate - stable.verification_failure_rate
        > cfg.max_verification_failure_delta
    {
        return Some(format!(
            "verification failures {:.1} % against stable {:.1} %",
            canary.verification_failure_rate * 100.0,
            stable.verification_failure_rate * 100.0
        ));
    }
    if canary.step_timeout_rate - stable.step_timeout_rate > cfg.max_step_timeout_delta {
        return Some(format!(
            "step timeouts {:.1} % against stable {:.1} %",
            canary.step_timeout_rate * 100.0,
            stable.step_timeout_rate * 100.0
        ));
    }
    None
}

/// Windows and rollback flags of every (route, variant).
#[derive(Debug, Default)]
pub struct CanaryState {
    windows: Mutex<Windows>,
}

impl CanaryState {
    /// Records an outcome; returns the change it caused: a rollback, or a promotion step.
    pub fn record(
        &self,
        route: &str,
        canary: &CanaryConfig,
        variant: &str,
        o: Outcome,
    ) -> Option<Change> {
        let mut all = self
            .windows
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let window = canary.rollback.window;
        let key = (route.to_string(), variant.to_string());
        let entry = all.entry(key.clone()).or_default();
        entry.events.push_back(o);
        entry.prune(o.at, window);
        let stable = canary.variants.first()?;
        if variant == stable.name
            || entry.rolled_back.is_some()
            || canary.shadow.as_ref().is_some_and(|s| s.name == variant)
        {
            return None;
        }
        entry.step_requests += 1;
        let since = *entry.step_since.get_or_insert(o.at);
        let canary_rates = rates(entry.events.iter());
        let stable_window = all.get_mut(&(route.to_string(), stable.name.clone()))?;
        stable_window.prune(o.at, window);
        let stable_rates = rates(stable_window.events.iter());
        let entry = all.get_mut(&key)?;
        if let Some(reason) = compare(&stable_rates, &canary_rates, &canary.rollback) {
            entry.rolled_back = Some(reason.clone());
            return Some(Change::RolledBack(reason));
        }
        // Promotion: only the second served variant, only after a real comparison passed.
        let promo = canary.promotion.as_ref()?;
        if canary.variants.get(1).map(|v| v.name.as_str()) != Some(variant) {
            return None;
        }
        entry.step = promo.step(entry.step);
        let compared = stable_rates.requests >= canary.rollback.min_requests
            && canary_rates.requests >= canary.rollback.min_requests;
        if entry.step + 1 < promo.steps.len()
            && compared
            && entry.step_requests >= promo.min_requests
            && o.at.saturating_duration_since(since) >= promo.interval
        {
            entry.step += 1;
            entry.step_since = Some(o.at);
            entry.step_requests = 0;
            return Some(Change::Promoted(promo.steps[entry.step]));
        }
        None
    }

    /// Records an outcome and acts on the change it caused: a rollback or promotion is counted,
    /// logged, and the route's traffic shares are published again.
    pub fn judge(
        &self,
        metrics: &Metrics,
        route: &str,
        canary: &CanaryConfig,
        variant: &str,
        o: Outcome,
    ) {
        let labels = RouteVariant { route, variant };
        match self.record(route, canary, variant, o) {
            Some(Change::RolledBack(reason)) => {
                metrics.canary_rollbacks_total.with(&labels).inc();
                tracing::warn!(route, variant = %variant, reason = %reason, "Canary variant rolled back: it gets no traffic until re-enabled with POST /admin/canary/enable.");
            }
            Some(Change::Promoted(percent)) => {
                metrics.canary_promotions_total.with(&labels).inc();
                tracing::info!(route, variant = %variant, percent, "Canary variant promoted to the next step: it now gets this percentage of the route's weighted traffic.");
            }
            None => return,
        }
        self.publish(metrics, route, canary);
    }

    /// The served variants' weights now: configured, or the promotion step's; rolled-back
    /// variants get 0.
    pub fn weights(&self, route: &str, canary: &CanaryConfig) -> Vec<u32> {
        let all = self
            .windows
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        weights_in(&all, route, canary)
    }

    /// The served variants now, for [`crate::routing::variant::pick`]: the weights in force
    /// and which are rolled back (those cannot be forced by a header).
    pub fn live(&self, route: &str, canary: &CanaryConfig) -> Live {
        let all = self
            .windows
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let rolled_back = canary
            .variants
            .iter()
            .map(|v| {
                all.get(&(route.to_string(), v.name.clone()))
                    .is_some_and(|w| w.rolled_back.is_some())
            })
            .collect();
        Live {
            weights: weights_in(&all, route, canary),
            rolled_back,
        }
    }

    /// Sets `canary_traffic_share` for a route's served variants. Weights change only when an
    /// outcome rolls back or promotes, an operator re-enables, or the config changes: callers
    /// publish then, not per request.
    pub fn publish(&self, metrics: &Metrics, route: &str, canary: &CanaryConfig) {
        let shares = shares(&self.weights(route, canary));
        for (v, share) in canary.variants.iter().zip(shares) {
            let variant = &v.name;
            metrics
                .canary_traffic_share
                .with(&RouteVariant { route, variant })
                .set(share);
        }
    }

    /// Clears a rollback; returns whether there was one.
    pub fn enable(&self, route: &str, variant: &str) -> bool {
        let mut all = self
            .windows
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        match all.get_mut(&(route.to_string(), variant.to_string())) {
            Some(w) if w.rolled_back.is_some() => {
                // Re-enabled: a fresh window, and promotion starts again from its first step.
                *w = Window::default();
                true
            }
            _ => false,
        }
    }

    /// State for `GET /admin/canary`: each variant's window and rollback, and, for routes of the
    /// live config `routes`, the weight and traffic share in force and the promotion step.
    pub fn report(&self, routes: &[RouteConfig]) -> Value {
        let all = self
            .windows
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let mut out: Vec<Value> = all
            .iter()
            .map(|((route, variant), w)| {
                let r = rates(w.events.iter());
                let mut e = json!({"route": route, "variant": variant, "rolled_back": w.rolled_back.is_some(), "reason": w.rolled_back,
                    "promotion_step": w.step, "step_requests": w.step_requests,
                    "step_seconds": w.step_since.map(|t| t.elapsed().as_secs_f64()),
                    "window": {"requests": r.requests, "error_rate": r.error_rate, "p95_seconds": r.p95,
                        "verification_failure_rate": r.verification_failure_rate, "step_timeout_rate": r.step_timeout_rate}});
                let live = routes.iter().find(|c| &c.name == route).and_then(|c| c.canary.as_ref());
                let Some(canary) = live else { return e };
                let weights = weights_in(&all, route, canary);
                if let Some(i) = canary.variants.iter().position(|v| &v.name == variant) {
                    e["weight"] = json!(weights[i]);
                    e["traffic_share"] = json!(shares(&weights)[i]);
                }
                if let Some(p) = &canary.promotion {
                    if canary.variants.get(1).is_some_and(|v| &v.name == variant) {
                        let step = p.step(w.step);
                        e["promotion"] = json!({"steps": p.steps, "step": step, "percent": p.steps.get(step),
                            "complete": step + 1 == p.steps.len()});
                    }
                }
                e
            })
            .collect();
        out.sort_by_key(|v| (v["route"].to_string(), v["variant"].to_string()));
        Value::Array(out)
    }
}

type Windows = HashMap<(String, String), Window>;

/// [`CanaryState::weights`] with the lock held.
fn weights_in(all: &Windows, route: &str, canary: &CanaryConfig) -> Vec<u32> {
    let state = |v: &str| all.get(&(route.to_string(), v.to_string()));
    let percent = canary.promotion.as_ref().and_then(|p| {
        let reached = state(&canary.variants.get(1)?.name).map_or(0, |w| w.step);
        p.steps.get(p.step(reached)).copied()
    });
    canary
        .variants
        .iter()
        .enumerate()
        .map(|(i, v)| {
            if state(&v.name).is_some_and(|w| w.rolled_back.is_some()) {
                return 0;
            }
            match (percent, i) {
                (Some(p), 0) => 100 - p,
                (Some(p), _) => p,
                (None, _) => v.weight,
            }
        })
        .collect()
}

/// Each weight's share of their sum (all 0 when the sum is).
pub fn shares(weights: &[u32]) -> Vec<f64> {
    let total: u32 = weights.iter().sum();
    weights
        .iter()
        .map(|w| {
            if total == 0 {
                0.0
            } else {
                f64::from(*w) / f64::from(total)
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn outcome(ok: bool, ms: u64) -> Outcome {
        Outcome {
            at: Instant::now(),
            ok,
            latency: Duration::from_millis(ms),
            verification_failed: false,
            step_timeout: false,
        }
    }

    fn cfg() -> RollbackConfig {
        RollbackConfig {
            window: Duration::from_secs(60),
            min_requests: 10,
            max_error_rate_delta: 0.1,
            max_p95_ratio: 2.0,
            min_p95_delta: Duration::from_millis(100),
            max_verification_failure_delta: 0.1,
            max_step_timeout_delta: 0.1,
        }
    }

    #[test]
    fn rates_and_p95_are_exact() {
        let events: Vec<_> = (1..=100).map(|ms| outcome(ms % 10 != 0, ms)).collect();
        let r = rates(events.iter());
        assert_eq!(r.requests, 100);
        assert!((r.error_rate - 0.1).abs() < 1e-9);
        assert!((r.p95 - 0.095).abs() < 1e-9);
    }

    #[test]
    fn a_worse_canary_is_rolled_back_and_a_similar_one_is_not() {
        let stable: Vec<_> = (0..20).map(|_| outcome(true, 100)).collect();
        let s = rates(stable.iter());
        let failing: Vec<_> = (0..20).map(|i| outcome(i % 2 == 0, 100)).collect();
        assert!(compare(&s, &rates(failing.iter()), &cfg())
            .unwrap()
            .starts_with("error rate 50.0 %"));
        let slow: Vec<_> = (0..20).map(|_| outcome(true, 500)).collect();
        assert!(compare(&s, &rates(slow.iter()), &cfg())
            .unwrap()
            .starts_with("p95 latency"));
        let similar: Vec<_> = (0..20).map(|i| outcome(i != 0, 150)).collect();
        assert_eq!(compare(&s, &rates(similar.iter()), &cfg()), None);
        // Three times slower, but by 2 ms: noise, not a regression.
        let fast_stable: Vec<_> = (0..20).map(|_| outcome(true, 1)).collect();
        let fast_canary: Vec<_> = (0..20).map(|_| outcome(true, 3)).collect();
        assert_eq!(
            compare(
                &rates(fast_stable.iter()),
                &rates(fast_canary.iter()),
                &cfg()
            ),
            None
        );
        let few: Vec<_> = (0..5).map(|_| outcome(false, 100)).collect();
        assert_eq!(
            compare(&s, &rates(few.iter()), &cfg()),
            None,
            "not enough canary requests yet"
        );
    }

    fn promoted_route(steps: &[u32]) -> CanaryConfig {
        use crate::config::{PromotionConfig, VariantConfig};
        let v = |name: &str| VariantConfig {
            name: name.into(),
            upstream: "u".into(),
            weight: 0,
            upstream_model: None,
        };
        CanaryConfig {
            allow_forcing: true,
            header: None,
            sticky_header: None,
            variants: vec![v("stable"), v("canary")],
            shadow: None,
            rollback: cfg(),
            promotion: Some(PromotionConfig {
                steps: steps.to_vec(),
                interval: Duration::from_secs(60),
                min_requests: 10,
            }),
        }
    }

    fn at(base: Instant, secs: u64, ok: bool) -> Outcome {
        Outcome {
            at: base + Duration::from_secs(secs),
            ..outcome(ok, 100)
        }
    }

    #[test]
    fn a_healthy_canary_climbs_the_steps_only_after_the_interval_and_enough_requests() {
        let c = promoted_route(&[10, 50, 100]);
        let state = CanaryState::default();
        assert_eq!(state.weights("r", &c), vec![90, 10]);
        let base = Instant::now();
        // Both sides well past min_requests at t = 0..30 s: too early for the 60 s interval.
        for s in 0..30 {
            assert_eq!(state.record("r", &c, "stable", at(base, s, true)), None);
            assert_eq!(state.record("r", &c, "canary", at(base, s, true)), None);
        }
        assert_eq!(state.weights("r", &c), vec![90, 10]);
        // At 60 s after the step's first canary request, the next canary outcome promotes it.
        assert_eq!(
            state.record("r", &c, "canary", at(base, 60, true)),
            Some(Change::Promoted(50))
        );
        assert_eq!(state.weights("r", &c), vec![50, 50]);
        // The new step needs its own interval and its own 10 requests.
        for s in 61..125 {
            state.record("r", &c, "stable", at(base, s, true));
        }
        for s in 0..9 {
            assert_eq!(
                state.record("r", &c, "canary", at(base, 121 + s, true)),
                None
            );
        }
        assert_eq!(
            state.record("r", &c, "canary", at(base, 130, true)),
            Some(Change::Promoted(100))
        );
        assert_eq!(state.weights("r", &c), vec![0, 100]);
        // The last step is the end: nothing further happens.
        for s in 131..300 {
            assert_eq!(state.record("r", &c, "canary", at(base, s, true)), None);
        }
        assert_eq!(state.weights("r", &c), vec![0, 100]);
    }

    #[test]
    fn a_failing_canary_is_rolled_back_mid_promotion_and_restarts_from_the_first_step() {
        let c = promoted_route(&[10, 50, 100]);
        let state = CanaryState::default();
        let base = Instant::now();
        for s in 0..=60 {
            state.record("r", &c, "stable", at(base, s, true));
            state.record("r", &c, "canary", at(base, s, true));
        }
        assert_eq!(state.weights("r", &c), vec![50, 50]);
        let mut change = None;
        for s in 61..80 {
            change = change.or(state.record("r", &c, "canary", at(base, s, false)));
        }
        assert!(matches!(change, Some(Change::RolledBack(ref r)) if r.starts_with("error rate")));
        assert_eq!(
            state.weights("r", &c),
            vec![50, 0],
            "stable serves everything"
        );
        assert!(state.enable("r", "canary"));
        assert_eq!(
            state.weights("r", &c),
            vec![90, 10],
            "back to the first step"
        );
    }

    #[test]
    fn without_enough_stable_traffic_to_compare_there_is_no_promotion() {
        let c = promoted_route(&[10, 100]);
        let state = CanaryState::default();
        let base = Instant::now();
        for s in 0..200 {
            assert_eq!(state.record("r", &c, "canary", at(base, s, true)), None);
        }
        assert_eq!(state.weights("r", &c), vec![90, 10]);
    }

    #[test]
    fn a_reload_with_fewer_steps_keeps_the_canary_within_the_new_list() {
        let long = promoted_route(&[10, 20, 30, 40]);
        let state = CanaryState::default();
        let base = Instant::now();
        let mut t = 0;
        for _ in 0..3 {
            for _ in 0..61 {
                state.record("r", &long, "stable", at(base, t, true));
                state.record("r", &long, "canary", at(base, t, true));
                t += 1;
            }
        }
        assert_eq!(state.weights("r", &long), vec![60, 40]);
        let short = promoted_route(&[5, 25]);
        assert_eq!(state.weights("r", &short), vec![75, 25]);
        // Without promotion the configured weights apply again.
        let mut plain = promoted_route(&[5]);
        plain.promotion = None;
        plain.variants[0].weight = 3;
        plain.variants[1].weight = 1;
        assert_eq!(state.weights("r", &plain), vec![3, 1]);
    }
}
