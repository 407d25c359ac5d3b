//! The canary as the fleet sees it (fleet mode, `shared` in the config): outcome counts added
//! up over every replica, the published verdict and promotion step, and the pure rule that
//! decides from them. Redis itself is `crate::shared::canary`'s business; this module holds no
//! connection, so the local windows and the rule stay testable without one.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use super::tally::Tally;
use super::{compare, Rates};
use crate::config::CanaryConfig;

/// A rollback published for the whole fleet (the `verdict` field of a variant's state).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Verdict {
    /// Why, as [`super::compare`] said it.
    pub reason: String,
    /// When it was decided (Unix milliseconds).
    pub at_ms: u64,
    /// The replica that decided it ([`crate::shared::Shared::replica`]).
    pub by: String,
    /// Decided on that replica's own window while it could not reach Redis, and published
    /// when it could again.
    #[serde(default)]
    pub local: bool,
}

/// One (route, variant) as the fleet sees it.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct FleetVariant {
    /// Outcomes of the whole fleet over the window's buckets.
    pub tally: Tally,
    /// The published rollback, if any.
    pub verdict: Option<Verdict>,
    /// Promotion step reached (index into `promotion.steps`).
    pub step: usize,
    /// When the current step's first outcome was counted (Unix milliseconds).
    pub step_since_ms: Option<u64>,
    /// Outcomes counted on the current step, fleet-wide.
    pub step_requests: u64,
}

impl FleetVariant {
    /// The fleet window's rates.
    pub fn rates(&self) -> Rates {
        self.tally.rates()
    }
}

/// A route's variants as the fleet sees them, by variant name.
pub type FleetRoute = HashMap<String, FleetVariant>;

/// What the fleet's counts call for now.
#[derive(Debug, Clone, PartialEq)]
pub enum Decision {
    /// Roll this variant back, for this reason.
    RollBack {
        /// The variant.
        variant: String,
        /// Why.
        reason: String,
    },
    /// Move the promoted variant from step `from` to the next.
    Promote {
        /// The variant (the second served one).
        variant: String,
        /// The step it is on now.
        from: usize,
    },
}

/// The fleet's rule, the same as the local one ([`super::CanaryState::record`]) on merged
/// counts: each served variant after stable is compared with stable and rolled back when worse;
/// the second one climbs a promotion step once the comparison ran and passed, the step's
/// interval is over and it has served the step's requests.
pub fn decide(canary: &CanaryConfig, route: &FleetRoute, now_ms: u64) -> Vec<Decision> {
    let Some(stable) = canary.variants.first() else {
        return Vec::new();
    };
    let empty = FleetVariant::default();
    let stable_rates = route.get(&stable.name).unwrap_or(&empty).rates();
    let mut out = Vec::new();
    for (i, v) in canary.variants.iter().enumerate().skip(1) {
        let state = route.get(&v.name).unwrap_or(&empty);
        if state.verdict.is_some() {
            continue;
        }
        let rates = state.rates();
        if let Some(reason) = compare(&stable_rates, &rates, &canary.rollback) {
            out.push(Decision::RollBack {
                variant: v.name.clone(),
                reason,
            });
            continue;
        }
        let Some(promo) = canary.promotion.as_ref().filter(|_| i == 1) else {
            continue;
        };
        let step = promo.step(state.step);
        let compared = stable_rates.requests >= canary.rollback.min_requests
            && rates.requests >= canary.rollback.min_requests;
        let on_step = state
            .step_since_ms
            .map(|since| Duration::from_millis(now_ms.saturating_sub(since)));
        if step + 1 < promo.steps.len()
            && compared
            && state.step_requests >= promo.min_requests as u64
            && on_step.is_some_and(|d| d >= promo.interval)
        {
            out.push(Decision::Promote {
                variant: v.name.clone(),
                from: state.step,
            });
        }
    }
    out
}

/// Time buckets of a window: a tenth of it, at least a second, so ten keys cover a window.
pub fn bucket_width(window: Duration) -> u64 {
    (window.as_secs() / 10).max(1)
}

/// Start (Unix seconds) of the buckets that make up the window ending at `now_s`, newest first:
/// the current bucket and the ones before it, `window` long in all (rounded up to whole buckets).
pub fn window_buckets(window: Duration, now_s: u64) -> Vec<u64> {
    let width = bucket_width(window);
    let current = now_s - now_s % width;
    let n = window.as_secs().div_ceil(width).max(1);
    (0..n)
        .map_while(|k| current.checked_sub(k * width))
        .collect()
}

/// Milliseconds since the Unix epoch.
pub fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// A replica's link to the fleet: whether fleet mode is on, whether its view is current (the
/// last sync with Redis succeeded), and that view.
#[derive(Debug, Default)]
pub struct Link {
    enabled: AtomicBool,
    live: AtomicBool,
    view: Mutex<HashMap<String, FleetRoute>>,
}

impl Link {
    /// Fleet mode is on: outcomes are also counted for Redis.
    pub fn enabled(&self) -> bool {
        self.enabled.load(Ordering::Acquire)
    }

    /// Turns fleet mode on (once, at start-up).
    pub fn enable(&self) {
        self.enabled.store(true, Ordering::Release);
    }

    /// The fleet's view is current: the fleet decides, not this replica's window.
    pub fn is_live(&self) -> bool {
        self.live.load(Ordering::Acquire)
    }

    /// Marks the view current or not; returns what it was.
    pub fn set_live(&self, live: bool) -> bool {
        self.live.swap(live, Ordering::AcqRel)
    }

    /// Stores a route's view.
    pub fn store(&self, route: &str, view: FleetRoute) {
        self.lock().insert(route.to_string(), view);
    }

    /// A variant's view, if the last sync read it.
    pub fn get(&self, route: &str, variant: &str) -> Option<FleetVariant> {
        self.lock().get(route)?.get(variant).cloned()
    }

    /// Forgets a variant's verdict, step and counts (an operator re-enabled it).
    pub fn forget(&self, route: &str, variant: &str) {
        if let Some(v) = self.lock().get_mut(route).and_then(|r| r.get_mut(variant)) {
            *v = FleetVariant::default();
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, FleetRoute>> {
        self.view
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

#[cfg(test)]
mod tests;
