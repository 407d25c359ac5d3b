//! What fleet mode's sync loop (`crate::shared::canary`) takes from and gives to this replica's
//! windows: outcomes still to add up in Redis, rollbacks this replica decided alone while Redis
//! was out of reach, and the fleet's verdicts and promotion steps, mirrored here so the traffic
//! split reads one place and a replica that loses Redis keeps the last state it knew.

use std::time::Duration;

use super::fleet::{bucket_width, unix_ms, FleetRoute};
use super::tally::Tally;
use super::{CanaryState, Outcome, Window};

/// Outcomes of one (route, variant, time bucket) not yet added up in Redis.
#[derive(Debug, Clone, PartialEq)]
pub struct Pending {
    /// Route name.
    pub route: String,
    /// Variant name.
    pub variant: String,
    /// Time bucket (its start, Unix seconds).
    pub bucket: u64,
    /// The counts.
    pub tally: Tally,
}

/// A change the fleet's state made to this replica's windows.
#[derive(Debug, Clone, PartialEq)]
pub enum Mirrored {
    /// The fleet rolled the variant back.
    RolledBack {
        /// The variant.
        variant: String,
        /// Why.
        reason: String,
        /// The replica that decided it.
        by: String,
    },
    /// An operator re-enabled the variant on some replica.
    ReEnabled {
        /// The variant.
        variant: String,
    },
    /// The fleet moved the variant to another promotion step.
    Stepped {
        /// The variant.
        variant: String,
        /// The step now.
        step: usize,
    },
}

/// Counts an outcome for Redis in its time bucket; buckets that have left the window are
/// dropped, so a replica cut off from Redis for long holds one window of counts at most.
pub(super) fn count(w: &mut Window, o: &Outcome, window: Duration) {
    let now_s = unix_ms() / 1000;
    let width = bucket_width(window);
    w.pending.entry(now_s - now_s % width).or_default().add(o);
    let oldest = now_s.saturating_sub(window.as_secs() + width);
    while w
        .pending
        .first_key_value()
        .is_some_and(|(b, _)| *b < oldest)
    {
        w.pending.pop_first();
    }
}

impl CanaryState {
    /// Takes the outcomes not yet added up in Redis.
    pub fn take_pending(&self) -> Vec<Pending> {
        let mut all = self.lock();
        let mut out = Vec::new();
        for ((route, variant), w) in all.iter_mut() {
            for (bucket, tally) in std::mem::take(&mut w.pending) {
                out.push(Pending {
                    route: route.clone(),
                    variant: variant.clone(),
                    bucket,
                    tally,
                });
            }
        }
        out
    }

    /// Puts back outcomes a flush could not write, to be tried again with the next ones.
    pub fn restore_pending(&self, pending: Vec<Pending>) {
        let mut all = self.lock();
        for p in pending {
            let w = all.entry((p.route, p.variant)).or_default();
            w.pending.entry(p.bucket).or_default().merge(&p.tally);
        }
    }

    /// Rollbacks decided on this replica's own window while the fleet's view was not current
    /// and not yet published: (route, variant, reason).
    pub fn unpublished(&self) -> Vec<(String, String, String)> {
        self.lock()
            .iter()
            .filter(|(_, w)| w.unpublished)
            .filter_map(|((r, v), w)| Some((r.clone(), v.clone(), w.rolled_back.clone()?)))
            .collect()
    }

    /// The fleet now holds this rollback (this replica's or another's).
    pub fn mark_published(&self, route: &str, variant: &str) {
        if let Some(w) = self
            .lock()
            .get_mut(&(route.to_string(), variant.to_string()))
        {
            w.unpublished = false;
        }
    }

    /// Mirrors the fleet's state of a route into the windows and keeps it for
    /// `GET /admin/canary`; returns what changed here (the caller logs it and publishes the
    /// traffic shares again when anything did).
    pub fn apply(&self, route: &str, view: FleetRoute) -> Vec<Mirrored> {
        let mut changes = Vec::new();
        let mut all = self.lock();
        for (variant, fleet) in &view {
            let w = all.entry((route.to_string(), variant.clone())).or_default();
            let rolled_back_here = w.rolled_back.is_some();
            match (&fleet.verdict, rolled_back_here) {
                (Some(v), false) => {
                    w.rolled_back = Some(v.reason.clone());
                    w.unpublished = false;
                    changes.push(Mirrored::RolledBack {
                        variant: variant.clone(),
                        reason: v.reason.clone(),
                        by: v.by.clone(),
                    });
                }
                (Some(v), true) => {
                    // One reason on every replica: the fleet's.
                    w.rolled_back = Some(v.reason.clone());
                    w.unpublished = false;
                }
                (None, true) if !w.unpublished => {
                    // Re-enabled on another replica: a fresh window, as a local re-enable.
                    *w = Window {
                        pending: std::mem::take(&mut w.pending),
                        ..Window::default()
                    };
                    changes.push(Mirrored::ReEnabled {
                        variant: variant.clone(),
                    });
                }
                _ => {}
            }
            if w.step != fleet.step {
                w.step = fleet.step;
                w.step_since = None;
                w.step_requests = 0;
                changes.push(Mirrored::Stepped {
                    variant: variant.clone(),
                    step: fleet.step,
                });
            }
        }
        drop(all);
        self.fleet.store(route, view);
        changes
    }
}

#[cfg(test)]
mod tests {
    use super::super::fleet::{FleetVariant, Verdict};
    use super::*;
    use std::time::Instant;

    fn outcome() -> Outcome {
        Outcome {
            at: Instant::now(),
            ok: false,
            latency: Duration::from_millis(10),
            verification_failed: false,
            step_timeout: false,
        }
    }

    #[test]
    fn pending_counts_are_taken_once_and_put_back_after_a_failed_flush() {
        let state = CanaryState::default();
        {
            let mut all = state.lock();
            let w = all.entry(("r".into(), "canary".into())).or_default();
            count(w, &outcome(), Duration::from_secs(60));
            count(w, &outcome(), Duration::from_secs(60));
        }
        let taken = state.take_pending();
        assert_eq!(taken.len(), 1);
        assert_eq!(taken[0].tally.requests, 2);
        assert_eq!(state.take_pending(), vec![]);
        state.restore_pending(taken.clone());
        assert_eq!(state.take_pending(), taken);
    }

    #[test]
    fn the_fleet_verdict_and_step_are_mirrored_and_a_re_enable_elsewhere_clears_it() {
        let state = CanaryState::default();
        let verdict = Verdict {
            reason: "error rate".into(),
            at_ms: 1,
            by: "other".into(),
            local: false,
        };
        let view = |verdict: Option<Verdict>, step| -> FleetRoute {
            [(
                "canary".to_string(),
                FleetVariant {
                    verdict,
                    step,
                    ..FleetVariant::default()
                },
            )]
            .into()
        };
        let changes = state.apply("r", view(Some(verdict.clone()), 0));
        assert!(matches!(&changes[..], [Mirrored::RolledBack { by, .. }] if by == "other"));
        assert_eq!(state.apply("r", view(Some(verdict), 0)), vec![]);
        assert_eq!(
            state.apply("r", view(None, 1)),
            vec![
                Mirrored::ReEnabled {
                    variant: "canary".into()
                },
                Mirrored::Stepped {
                    variant: "canary".into(),
                    step: 1
                }
            ]
        );
        assert_eq!(state.fleet.get("r", "canary").map(|f| f.step), Some(1));
    }

    #[test]
    fn a_rollback_decided_alone_is_kept_until_published() {
        let state = CanaryState::default();
        {
            let mut all = state.lock();
            let w = all.entry(("r".into(), "canary".into())).or_default();
            w.rolled_back = Some("error rate".into());
            w.unpublished = true;
        }
        assert_eq!(
            state.apply(
                "r",
                [("canary".to_string(), FleetVariant::default())].into()
            ),
            vec![]
        );
        assert_eq!(
            state.unpublished(),
            vec![("r".into(), "canary".into(), "error rate".into())]
        );
        state.mark_published("r", "canary");
        assert_eq!(state.unpublished(), vec![]);
    }
}
