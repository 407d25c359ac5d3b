//! Async jobs in fleet mode: the job table is Redis ([`crate::shared::jobs`]), so any replica
//! answers `GET` and `DELETE` for any job, and a job whose replica died is taken over.
//!
//! A replica keeps in memory only the jobs it holds a lease on (running, queued for one of its
//! run slots, or delivering their callback); it writes each one to Redis as it changes
//! (progress at most every [`PROGRESS_EVERY`], status changes and checkpoints at once). Writes
//! of one job go one at a time, each the job's latest state, and are fenced by the lease: a
//! replica that lost its lease (Redis was gone longer than the lease, another took over) or
//! whose job was cancelled elsewhere is refused and stops the run.
//!
//! Two loops run on the fleet-mode thread: one renews the leases held here every
//! [`RENEW_EVERY`] (and so sees a cancellation made on another replica within about a second),
//! one sweeps the open jobs for lapsed leases every [`SWEEP_EVERY`] and takes over at most as
//! many as there are free run slots.
//!
//! A callback is sent only by the lease holder, after the job's end is written, and only after
//! its lease was extended past the attempt's timeout; it is marked delivered after a 2xx. A
//! replica dying between the 2xx and that mark leaves it to be sent again (at least once, never
//! twice by two live replicas).

use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use super::{Entry, Job, Jobs, Status, MAX_ATTEMPTS};
use crate::openai::{ApiError, ErrorCode};
use crate::outcome::Outcome;
use crate::shared::jobs::{
    Admission, JobTable, Renewal, Saved, Write, LEASE, RENEW_EVERY, SWEEP_EVERY,
};
use crate::util::now_unix;

/// Least time between two progress writes of one job.
const PROGRESS_EVERY: Duration = Duration::from_millis(250);
/// Pause before a write that failed (Redis down or slow) is tried again.
const RETRY_EVERY: Duration = Duration::from_millis(500);

/// What a write is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Sync {
    /// Progress: skipped when the last write is younger than [`PROGRESS_EVERY`].
    Progress,
    /// A status change, a checkpoint, a callback attempt: written now.
    Now,
    /// No work left: written, out of the open set, lease given up.
    Done,
}

/// How a write went.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Synced {
    /// Written, or nothing to write (single-process mode, a progress write not due).
    Ok,
    /// Redis did not take it (down, slow): tried again later.
    Failed,
    /// The job was cancelled elsewhere or another replica holds it: this replica stops.
    Gone,
}

/// The answer when the job table cannot be reached.
pub fn unavailable() -> ApiError {
    ApiError::new(
        ErrorCode::SharedStateUnavailable,
        "The fleet's shared job store is unreachable; retry shortly.",
    )
}

/// Whether `id` is one the gateway could have made (`job_` and 32 hex digits): anything else
/// is not looked up.
fn well_formed(id: &str) -> bool {
    id.strip_prefix("job_")
        .is_some_and(|h| h.len() == 32 && h.bytes().all(|b| b.is_ascii_hexdigit()))
}

impl Jobs {
    pub(super) fn table(&self) -> Option<&JobTable> {
        self.fleet.get()
    }

    /// Fleet mode: binds the table and starts the renew and sweep loops.
    pub(super) fn join_fleet(self: &Arc<Self>, shared: Arc<crate::shared::Shared>) {
        if self.fleet.set(JobTable::new(shared)).is_err() {
            return;
        }
        if self.settings.dir.is_some() {
            tracing::warn!("async_jobs.dir is not used in fleet mode: jobs live in Redis.");
        }
        let Some(table) = self.table() else { return };
        let weak = Arc::downgrade(self);
        table.spawn(async move {
            loop {
                tokio::time::sleep(RENEW_EVERY).await;
                let Some(jobs) = weak.upgrade() else { return };
                jobs.renew_all().await;
            }
        });
        let weak = Arc::downgrade(self);
        table.spawn(async move {
            loop {
                tokio::time::sleep(SWEEP_EVERY).await;
                let Some(jobs) = weak.upgrade() else { return };
                jobs.sweep().await;
            }
        });
    }

    /// Stores a new job fleet-wide (the counts of `max_jobs` and `max_jobs_per_tenant` are
    /// the fleet's), leased to this replica.
    pub(super) async fn store_new(&self, table: &JobTable, job: &Job) -> Result<(), ApiError> {
        let json = serde_json::to_string(job).unwrap_or_default();
        let admission = table
            .create(
                &job.tenant,
                &job.id,
                &json,
                job.status.as_str(),
                self.settings.max_jobs,
                self.settings.max_jobs_per_tenant,
                now_unix(),
            )
            .await
            .map_err(|e| {
                tracing::warn!(error = %e, "Async job refused: the shared job store did not take it.");
                unavailable()
            })?;
        let Admission::Full { stored, tenant } = admission else {
            return Ok(());
        };
        let usage = super::quota::Usage {
            stored,
            tenant,
            held: 0,
        };
        let (reason, e) = super::quota::check(&self.settings, usage, 0)
            .err()
            .unwrap_or((
                super::Rejection::StoreFull,
                ApiError::new(ErrorCode::TooManyJobs, "Async jobs are full; retry later."),
            ));
        if let Some(gw) = self.gateway() {
            gw.metrics().async_job_rejections_total.with(&reason).inc();
        }
        Err(e)
    }

    /// A job of `tenant` read from the table (fleet mode; `Ok(None)` otherwise).
    async fn read_shared(&self, id: &str, tenant: &str) -> Result<Option<Job>, ApiError> {
        let Some(table) = self.table() else {
            return Ok(None);
        };
        if !well_formed(id) {
            return Ok(None);
        }
        let json = table.get(tenant, id).await.map_err(|_| unavailable())?;
        Ok(json
            .and_then(|j| serde_json::from_str::<Job>(&j).ok())
            .filter(|j| j.tenant == tenant && j.id == id))
    }

    /// The job's view for `tenant`: held here, or from the table.
    pub async fn get(&self, id: &str, tenant: &str) -> Result<Option<Value>, ApiError> {
        if let Some(v) = self.get_local(id, tenant) {
            return Ok(Some(v));
        }
        Ok(self.read_shared(id, tenant).await?.map(|j| j.view()))
    }

    /// Cancels a job wherever it runs; its view. Its runner, here or on another replica (at
    /// its next lease renewal), drops the upstream connection.
    pub async fn cancel(&self, id: &str, tenant: &str) -> Result<Option<Value>, ApiError> {
        let Some(table) = self.table() else {
            return Ok(self.cancel_local(id, tenant));
        };
        let held = self.snapshot(id).filter(|j| j.tenant == tenant);
        let job = match held {
            Some(j) => j,
            None => match self.read_shared(id, tenant).await? {
                Some(j) => j,
                None => return Ok(None),
            },
        };
        if job.status.is_terminal() {
            return Ok(Some(job.view()));
        }
        let mut cancelled = job;
        mark_cancelled(&mut cancelled);
        let json = serde_json::to_string(&cancelled).unwrap_or_default();
        let now = table
            .cancel(tenant, id, &json, self.settings.ttl, now_unix())
            .await
            .map_err(|_| unavailable())?;
        let Some(now) = now.and_then(|j| serde_json::from_str::<Job>(&j).ok()) else {
            return Ok(None);
        };
        if now.status == Status::Cancelled {
            self.stop_held(id, true);
        }
        Ok(Some(now.view()))
    }

    /// Writes a held job to the table (see [`Sync`]); a no-op in single-process mode.
    pub(super) async fn sync(&self, id: &str, how: Sync) -> Synced {
        let Some(table) = self.table() else {
            return Synced::Ok;
        };
        let Some((lock, synced)) = self.lock().get(id).map(|e| (e.write.clone(), e.synced)) else {
            return Synced::Gone;
        };
        if how == Sync::Progress && synced.is_some_and(|t| t.elapsed() < PROGRESS_EVERY) {
            return Synced::Ok;
        }
        let _one_at_a_time = lock.lock().await;
        let Some(job) = self.snapshot(id) else {
            return Synced::Gone;
        };
        let json = serde_json::to_string(&job).unwrap_or_default();
        let write = Write {
            json: &json,
            status: job.status.as_str(),
            terminal: job.status.is_terminal(),
            done: how == Sync::Done,
        };
        match table
            .save(&job.tenant, id, write, self.settings.ttl, now_unix())
            .await
        {
            Ok(Saved::Written) => {
                if let Some(e) = self.lock().get_mut(id) {
                    e.synced = Some(Instant::now());
                }
                Synced::Ok
            }
            Ok(saved) => {
                tracing::info!(job = %id, cancelled = saved == Saved::Cancelled, "Async job stopped here: it was cancelled or another replica holds it.");
                self.stop_held(id, false);
                Synced::Gone
            }
            Err(e) => {
                tracing::debug!(job = %id, error = %e, "Async job not saved to the shared store yet.");
                Synced::Failed
            }
        }
    }

    /// Writes a held job until Redis takes it (it may be down for a while: the work done is
    /// kept here meanwhile); `false` if the job is no longer this replica's.
    pub(super) async fn settle(&self, id: &str, how: Sync) -> bool {
        loop {
            match self.sync(id, how).await {
                Synced::Ok => return true,
                Synced::Gone => return false,
                Synced::Failed => tokio::time::sleep(RETRY_EVERY).await,
            }
        }
    }

    /// After a run ended: the end written (fleet mode), then the callback or, without one,
    /// the job let go.
    pub(super) async fn conclude(self: &Arc<Self>, id: String) {
        if self.table().is_none() {
            self.deliver(id);
            return;
        }
        let owes = self
            .snapshot(&id)
            .is_some_and(|j| j.callback.as_ref().is_some_and(|c| !c.delivered));
        let how = if owes { Sync::Now } else { Sync::Done };
        if !self.settle(&id, how).await {
            return;
        }
        if owes {
            self.deliver_here(id).await;
        } else {
            self.lock().remove(&id);
        }
    }

    /// Before a callback attempt: whether this replica still holds the job, with a lease that
    /// outlasts the attempt (so no other replica can start one meanwhile). Waits while Redis
    /// cannot say.
    pub(super) async fn may_call_back(&self, id: &str) -> bool {
        let Some(table) = self.table() else {
            return true;
        };
        let lease = self.settings.callback_timeout + LEASE;
        loop {
            let Some(job) = self.snapshot(id) else {
                return false;
            };
            match table.renew(&job.tenant, id, lease).await {
                Ok(Renewal::Held(_)) => return true,
                Ok(Renewal::Missing) => {
                    if !self.settle(id, Sync::Now).await {
                        return false;
                    }
                }
                Ok(Renewal::Lost(_)) => {
                    self.stop_held(id, false);
                    return false;
                }
                Err(_) => tokio::time::sleep(RETRY_EVERY).await,
            }
        }
    }

    /// After the last callback attempt: the job let go (fleet mode).
    pub(super) async fn callbacks_over(&self, id: &str) {
        if self.table().is_some() && self.settle(id, Sync::Done).await {
            self.lock().remove(id);
        }
    }

    /// Stops working on a held job: its run aborted (the upstream connection dropped), its
    /// local copy dropped, and with `release` its lease given up.
    fn stop_held(&self, id: &str, release: bool) {
        let Some(e) = self.lock().remove(id) else {
            return;
        };
        if let Some(t) = e.task {
            t.abort();
        }
        if let (true, Some(table)) = (release, self.table()) {
            let (table, tenant, id) = (table.clone(), e.job.tenant, id.to_string());
            self.spawn(async move {
                let _ = table.release(&tenant, &id).await;
            });
        }
    }

    /// Renews every lease held here; stops the jobs cancelled or taken elsewhere, writes again
    /// the ones Redis lost.
    async fn renew_all(&self) {
        let Some(table) = self.table() else { return };
        if !table.is_up() {
            return;
        }
        let held: Vec<(String, String)> = self
            .lock()
            .values()
            .map(|e| (e.job.tenant.clone(), e.job.id.clone()))
            .collect();
        for (tenant, id) in held {
            match table.renew(&tenant, &id, LEASE).await {
                Ok(Renewal::Held(s)) if s == Status::Cancelled.as_str() => {
                    tracing::info!(job = %id, "Async job cancelled on another replica; its run stops.");
                    self.stop_held(&id, true);
                }
                Ok(Renewal::Held(_)) | Err(_) => {}
                Ok(Renewal::Lost(_)) => {
                    tracing::warn!(job = %id, "Async job's lease was taken by another replica; this replica stops it.");
                    self.stop_held(&id, false);
                }
                Ok(Renewal::Missing) => {
                    tracing::warn!(job = %id, "Async job missing from the shared store (Redis restarted empty); writing it again.");
                    self.sync(&id, Sync::Now).await;
                }
            }
        }
    }

    /// Takes over open jobs nobody holds (their replica died), up to the free run slots.
    async fn sweep(self: &Arc<Self>) {
        let Some(table) = self.table() else { return };
        let free = self.slots.available_permits();
        if free == 0 || !table.is_up() {
            return;
        }
        let held = |id: &str| self.lock().contains_key(id);
        let Ok(candidates) = table.unleased(&held).await else {
            return;
        };
        let mut taken = 0;
        for (tenant, id) in candidates {
            if taken >= free {
                break;
            }
            let Ok(Some(json)) = table.take(&tenant, &id).await else {
                continue;
            };
            taken += 1;
            match serde_json::from_str::<Job>(&json) {
                Ok(job) if job.tenant == tenant && job.id == id => self.adopt(job),
                _ => {
                    tracing::error!(job = %id, "Unreadable async job in the shared store ignored.");
                }
            }
        }
    }

    /// Resumes a job taken over: run again (a second interruption fails it, as after a
    /// restart), or its callback delivered, or let go.
    fn adopt(self: &Arc<Self>, mut job: Job) {
        let id = job.id.clone();
        tracing::info!(job = %id, status = job.status.as_str(), attempts = job.attempts, "Async job taken over from a replica that stopped renewing its lease.");
        let run = !job.status.is_terminal() && job.attempts < MAX_ATTEMPTS;
        if !job.status.is_terminal() {
            if run {
                job.status = Status::Queued;
            } else {
                job.status = Status::Failed;
                job.outcome = Some(Outcome::UpstreamError);
                job.error = Some(json!({
                    "code": "interrupted",
                    "message": format!("The replica running this job stopped, {} times; it was not run again.", job.attempts),
                }));
                job.updated = now_unix();
            }
        }
        self.lock().insert(id.clone(), Entry::new(job));
        if run {
            self.start(id);
        } else {
            let jobs = self.clone();
            self.spawn(async move { jobs.conclude(id).await });
        }
    }
}

/// The job as a client's cancellation leaves it.
pub(super) fn mark_cancelled(job: &mut Job) {
    job.status = Status::Cancelled;
    job.outcome = Some(Outcome::ClientCancelled);
    job.error = Some(json!({"code": "cancelled", "message": "Cancelled by the client."}));
    job.updated = now_unix();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_ids_the_gateway_makes_are_looked_up() {
        assert!(well_formed(&format!("job_{:032x}", 7u128)));
        for bad in [
            "",
            "job_",
            "job_123",
            "job_0000000000000000000000000000000g",
            "other_00000000000000000000000000000000",
            "job_00000000000000000000000000000000:x",
            "job_0000000000000000000000000000000:",
        ] {
            assert!(!well_formed(bad), "{bad}");
        }
    }
}
