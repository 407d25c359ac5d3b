//! Canary health: a sliding window of outcomes per (route, variant), the comparison that rolls a
//! canary back, and the rollback state operators see and clear. Survives config reloads.
//!
//! In fleet mode ([`fleet`]) the windows stay, as the fallback while Redis is out of reach, and
//! each outcome is also counted for Redis ([`tally`]); while the fleet's view is current the
//! fleet decides, and its verdict and promotion step are mirrored into these windows
//! ([`mirror`]), so the traffic split reads one place either way.

pub mod fleet;
pub mod mirror;
pub mod tally;

use std::collections::{BTreeMap, HashMap, VecDeque};
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
    /// Fleet mode: outcomes not yet added up in Redis, by time bucket (Unix seconds).
    pending: BTreeMap<u64, tally::Tally>,
    /// Fleet mode: rolled back on this replica's own window while the fleet's view was not
    /// current; published when it is again.
    unpublished: bool,
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
    /// The fleet's view, in fleet mode.
    pub fleet: fleet::Link,
}

impl CanaryState {
    fn lock(&self) -> std::sync::MutexGuard<'_, Windows> {
        self.windows
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Records an outcome; returns the change it caused: a rollback, or a promotion step.
    pub fn record(
        &self,
        route: &str,
        canary: &CanaryConfig,
        variant: &str,
        o: Outcome,
    ) -> Option<Change> {
        let mut all = self.lock();
        let window = canary.rollback.window;
        let key = (route.to_string(), variant.to_string());
        let entry = all.entry(key.clone()).or_default();
        entry.events.push_back(o);
        entry.prune(o.at, window);
        if self.fleet.enabled() {
            mirror::count(entry, &o, window);
        }
        let stable = canary.variants.first()?;
        if variant == stable.name
            || entry.rolled_back.is_some()
            || canary.shadow.as_ref().is_some_and(|s| s.name == variant)
            || self.fleet.is_live()
        {
            // While the fleet's view is current the fleet decides, on everyone's outcomes.
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
            entry.unpublished = self.fleet.enabled();
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
        let all = self.lock();
        weights_in(&all, route, canary)
    }

    /// The served variants now, for [`crate::routing::variant::pick`]: the weights in force
    /// and which are rolled back (those cannot be forced by a header).
    pub fn live(&self, route: &str, canary: &CanaryConfig) -> Live {
        let all = self.lock();
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
        let mut all = self.lock();
        match all.get_mut(&(route.to_string(), variant.to_string())) {
            Some(w) if w.rolled_back.is_some() => {
                // Re-enabled: a fresh window, and promotion starts again from its first step.
                *w = Window::default();
                self.fleet.forget(route, variant);
                true
            }
            _ => {
                self.fleet.forget(route, variant);
                false
            }
        }
    }

    /// State for `GET /admin/canary`: each variant's window and rollback, and, for routes of the
    /// live config `routes`, the weight and traffic share in force and the promotion step.
    /// `view` says whose state it is: `fleet` (every replica's outcomes, the same on every
    /// replica), `degraded` (fleet mode, Redis out of reach: this replica's own window decides)
    /// or `local` (no fleet mode).
    pub fn report(&self, routes: &[RouteConfig]) -> Value {
        let all = self.lock();
        let view = match (self.fleet.enabled(), self.fleet.is_live()) {
            (false, _) => "local",
            (true, true) => "fleet",
            (true, false) => "degraded",
        };
        let now_ms = fleet::unix_ms();
        let mut out: Vec<Value> = all
            .iter()
            .map(|((route, variant), w)| {
                let own = rates(w.events.iter());
                let shared = if view == "fleet" { self.fleet.get(route, variant) } else { None };
                let (mut e, step) = match &shared {
                    Some(f) => {
                        let v = f.verdict.as_ref();
                        (json!({"route": route, "variant": variant, "view": view,
                            "rolled_back": v.is_some(), "reason": v.map(|v| &v.reason),
                            "decided_by": v.map(|v| &v.by), "decided_at": v.map(|v| v.at_ms as f64 / 1000.0),
                            "decided_locally": v.map(|v| v.local),
                            "promotion_step": f.step, "step_requests": f.step_requests,
                            "step_seconds": f.step_since_ms.map(|t| now_ms.saturating_sub(t) as f64 / 1000.0),
                            "window": window_json(&f.rates()), "local_window": window_json(&own)}), f.step)
                    }
                    None => (json!({"route": route, "variant": variant, "view": view,
                        "rolled_back": w.rolled_back.is_some(), "reason": w.rolled_back,
                        "promotion_step": w.step, "step_requests": w.step_requests,
                        "step_seconds": w.step_since.map(|t| t.elapsed().as_secs_f64()),
                        "window": window_json(&own)}), w.step),
                };
                let live = routes.iter().find(|c| &c.name == route).and_then(|c| c.canary.as_ref());
                let Some(canary) = live else { return e };
                let weights = weights_in(&all, route, canary);
                if let Some(i) = canary.variants.iter().position(|v| &v.name == variant) {
                    e["weight"] = json!(weights[i]);
                    e["traffic_share"] = json!(shares(&weights)[i]);
                }
                if let Some(p) = &canary.promotion {
                    if canary.variants.get(1).is_some_and(|v| &v.name == variant) {
                        let step = p.step(step);
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

/// A window's rates as `GET /admin/canary` shows them.
fn window_json(r: &Rates) -> Value {
    json!({"requests": r.requests, "error_rate": r.error_rate, "p95_seconds": r.p95,
        "verification_failure_rate": r.verification_failure_rate, "step_timeout_rate": r.step_timeout_rate})
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
mod tests;
