//! Fleet mode's canary: one verdict from every replica's outcomes.
//!
//! Requests only count their outcome in memory ([`crate::canary::CanaryState::record`]); every
//! [`SYNC_EVERY`] a loop on the fleet thread does the rest, in a few round trips:
//! 1. adds this replica's new counts to Redis (one pipeline, [`store::flush`]);
//! 2. publishes rollbacks it decided on its own window while Redis was out of reach;
//! 3. reads the whole fleet's counts over each canary window, verdicts and promotion steps;
//! 4. decides on them ([`crate::canary::fleet::decide`]): a rollback is published with HSETNX
//!    and a promotion step with a compare-and-set, so the replica that wins alone counts and
//!    logs it, whichever replicas saw the line crossed;
//! 5. mirrors the fleet's state into its windows: the traffic split follows at once.
//!
//! A sync that fails (Redis down, slow past [`store::DEADLINE`]) leaves the counts to be sent
//! with the next one, and until one succeeds this replica's own windows decide, as without
//! fleet mode.

pub mod store;

use std::collections::HashMap;
use std::sync::mpsc;
use std::sync::Arc;
use std::time::Duration;

use crate::canary::fleet::{decide, unix_ms, Decision, FleetRoute, Verdict};
use crate::canary::mirror::Mirrored;
use crate::config::CanaryConfig;
use crate::metrics::labels::RouteVariant;
use crate::shared::{Shared, SharedError};
use crate::state::Gateway;

/// How often a replica syncs its canary state with the fleet: a verdict reached anywhere is
/// applied everywhere within two of these.
pub const SYNC_EVERY: Duration = Duration::from_millis(250);

/// Turns fleet mode on for the canary and starts the sync loop on the fleet thread.
pub fn start(gw: &Arc<Gateway>, shared: &Arc<Shared>) {
    gw.canary.fleet.enable();
    let (weak_gw, weak_shared) = (Arc::downgrade(gw), Arc::downgrade(shared));
    shared.spawn(async move {
        loop {
            let (Some(gw), Some(shared)) = (weak_gw.upgrade(), weak_shared.upgrade()) else {
                return;
            };
            let synced = sync(&gw, &shared).await;
            let was = gw.canary.fleet.set_live(synced.is_ok());
            match synced {
                Ok(()) if !was => {
                    tracing::info!(replica = %shared.replica, "Canary state shared: rollbacks and promotions are decided on the whole fleet's outcomes.");
                }
                Err(e) if was => {
                    tracing::warn!(error = %e, "Canary state not shared: this replica decides rollbacks on its own window until Redis answers again.");
                }
                _ => {}
            }
            drop((gw, shared));
            tokio::time::sleep(SYNC_EVERY).await;
        }
    });
}

/// One round: flush, publish, read, decide, mirror.
async fn sync(gw: &Gateway, shared: &Shared) -> Result<(), SharedError> {
    if !shared.is_up() {
        return Err(SharedError::Down);
    }
    let snapshot = gw.snapshot.load_full();
    let routes: Vec<(&str, &CanaryConfig)> = snapshot
        .config
        .routes
        .iter()
        .filter_map(|r| Some((r.name.as_str(), r.canary.as_ref()?)))
        .collect();
    let pending = gw.canary.take_pending();
    if !pending.is_empty() {
        let windows: HashMap<&str, Duration> = routes
            .iter()
            .map(|(name, c)| (*name, c.rollback.window))
            .collect();
        if let Err(e) = store::flush(shared, &pending, &windows, unix_ms()).await {
            gw.canary.restore_pending(pending);
            return Err(e);
        }
    }
    for (route, variant, reason) in gw.canary.unpublished() {
        let verdict = Verdict {
            reason,
            at_ms: unix_ms(),
            by: shared.replica.clone(),
            local: true,
        };
        let published = store::publish(shared, &route, &variant, &verdict).await?;
        gw.canary.mark_published(&route, &variant);
        if published {
            tracing::warn!(route = %route, variant = %variant, reason = %verdict.reason, "A canary rollback this replica decided on its own window while Redis was out of reach is now the fleet's.");
        }
    }
    let now_ms = unix_ms();
    let mut views = store::read(shared, &routes, now_ms).await?;
    for (route, canary) in &routes {
        let Some(mut view) = views.remove(*route) else {
            continue;
        };
        for decision in decide(canary, &view, now_ms) {
            act(gw, shared, route, &mut view, decision, now_ms).await?;
        }
        let changes = gw.canary.apply(route, view);
        for change in &changes {
            log(route, change, &shared.replica);
        }
        if !changes.is_empty() {
            gw.canary.publish(&gw.metrics, route, canary);
        }
    }
    Ok(())
}

/// Carries out a decision; the replica whose write wins counts and logs it, as a single
/// gateway does.
async fn act(
    gw: &Gateway,
    shared: &Shared,
    route: &str,
    view: &mut FleetRoute,
    decision: Decision,
    now_ms: u64,
) -> Result<(), SharedError> {
    match decision {
        Decision::RollBack { variant, reason } => {
            let verdict = Verdict {
                reason,
                at_ms: now_ms,
                by: shared.replica.clone(),
                local: false,
            };
            if !store::publish(shared, route, &variant, &verdict).await? {
                return Ok(());
            }
            let labels = RouteVariant {
                route,
                variant: &variant,
            };
            gw.metrics.canary_rollbacks_total.with(&labels).inc();
            let fleet = view.entry(variant.clone()).or_default();
            let r = fleet.rates();
            tracing::warn!(route, variant = %variant, reason = %verdict.reason, fleet_requests = r.requests, "Canary variant rolled back on the whole fleet's outcomes: no replica sends it traffic until re-enabled with POST /admin/canary/enable.");
            fleet.verdict = Some(verdict);
        }
        Decision::Promote { variant, from } => {
            if !store::promote(shared, route, &variant, from, now_ms).await? {
                return Ok(());
            }
            let labels = RouteVariant {
                route,
                variant: &variant,
            };
            gw.metrics.canary_promotions_total.with(&labels).inc();
            let fleet = view.entry(variant.clone()).or_default();
            fleet.step = from + 1;
            fleet.step_since_ms = Some(now_ms);
            fleet.step_requests = 0;
            tracing::info!(route, variant = %variant, step = fleet.step, "Canary variant promoted to the next step on the whole fleet's outcomes: every replica now gives it that step's share of the weighted traffic.");
        }
    }
    Ok(())
}

/// Logs a change the fleet made to this replica (the deciding replica logged the decision).
fn log(route: &str, change: &Mirrored, me: &str) {
    match change {
        Mirrored::RolledBack {
            variant,
            reason,
            by,
        } if by != me => {
            tracing::info!(route, variant = %variant, reason = %reason, decided_by = %by, "The fleet's canary rollback applies here: this replica sends the variant no weighted traffic.");
        }
        Mirrored::ReEnabled { variant } => {
            tracing::info!(route, variant = %variant, "Canary variant re-enabled on another replica: it gets traffic here again.");
        }
        Mirrored::Stepped { variant, step } => {
            tracing::info!(route, variant = %variant, step, "The fleet's canary promotion step applies here.");
        }
        Mirrored::RolledBack { .. } => {}
    }
}

/// Re-enables a variant for the whole fleet (`POST /admin/canary/enable`), from a blocking
/// thread: `None` without fleet mode, else whether it had a fleet verdict, or why Redis could
/// not be told (then only this replica is re-enabled, and the fleet's verdict applies again
/// once Redis answers).
pub fn clear_blocking(
    gw: &Gateway,
    route: &str,
    variant: &str,
) -> Option<Result<bool, SharedError>> {
    let shared = gw.shared.get()?.clone();
    let window = gw
        .snapshot
        .load()
        .config
        .routes
        .iter()
        .find(|r| r.name == route)
        .and_then(|r| Some(r.canary.as_ref()?.rollback.window));
    let (route, variant) = (route.to_string(), variant.to_string());
    let (tx, rx) = mpsc::channel();
    let worker = shared.clone();
    shared.spawn(async move {
        let result = if worker.is_up() {
            store::clear(&worker, &route, &variant, window, unix_ms()).await
        } else {
            Err(SharedError::Down)
        };
        let _ = tx.send(result);
    });
    // The command has its own deadline; this one only guards against a stuck fleet thread.
    Some(
        rx.recv_timeout(store::DEADLINE * 2)
            .unwrap_or_else(|_| Err(SharedError::Timeout(store::DEADLINE * 2))),
    )
}
