//! Canary health: a sliding window of outcomes per (route, variant), the comparison that rolls a
//! canary back, and the rollback state operators see and clear. Survives config reloads.

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::config::{CanaryConfig, RollbackConfig};

/// Most outcomes kept per variant, whatever the window.
const MAX_EVENTS: usize = 100_000;

/// How one request went.
#[derive(Debug, Clone, Copy)]
pub struct Outcome {
    /// When it finished.
    pub at: Instant,
    /// No 5xx and no error event.
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
    windows: Mutex<HashMap<(String, String), Window>>,
}

impl CanaryState {
    /// Whether the variant was rolled back (and not re-enabled).
    pub fn is_rolled_back(&self, route: &str, variant: &str) -> bool {
        let w = self.windows.lock().unwrap_or_else(|p| p.into_inner());
        w.get(&(route.to_string(), variant.to_string()))
            .is_some_and(|w| w.rolled_back.is_some())
    }

    /// Records an outcome; returns the reason when this outcome rolls the variant back.
    pub fn record(
        &self,
        route: &str,
        canary: &CanaryConfig,
        variant: &str,
        o: Outcome,
    ) -> Option<String> {
        let mut all = self.windows.lock().unwrap_or_else(|p| p.into_inner());
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
        let canary_rates = rates(entry.events.iter());
        let stable_window = all.get_mut(&(route.to_string(), stable.name.clone()))?;
        stable_window.prune(o.at, window);
        let stable_rates = rates(stable_window.events.iter());
        let reason = compare(&stable_rates, &canary_rates, &canary.rollback)?;
        all.get_mut(&key)?.rolled_back = Some(reason.clone());
        Some(reason)
    }

    /// Clears a rollback; returns whether there was one.
    pub fn enable(&self, route: &str, variant: &str) -> bool {
        let mut all = self.windows.lock().unwrap_or_else(|p| p.into_inner());
        match all.get_mut(&(route.to_string(), variant.to_string())) {
            Some(w) if w.rolled_back.is_some() => {
                w.rolled_back = None;
                w.events.clear();
                true
            }
            _ => false,
        }
    }

    /// State for `GET /admin/canary`.
    pub fn report(&self) -> Value {
        let all = self.windows.lock().unwrap_or_else(|p| p.into_inner());
        let mut out: Vec<Value> = all
            .iter()
            .map(|((route, variant), w)| {
                let r = rates(w.events.iter());
                json!({"route": route, "variant": variant, "rolled_back": w.rolled_back.is_some(), "reason": w.rolled_back,
                    "window": {"requests": r.requests, "error_rate": r.error_rate, "p95_seconds": r.p95,
                        "verification_failure_rate": r.verification_failure_rate, "step_timeout_rate": r.step_timeout_rate}})
            })
            .collect();
        out.sort_by_key(|v| (v["route"].to_string(), v["variant"].to_string()));
        Value::Array(out)
    }
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
}
