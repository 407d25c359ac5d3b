//! Async jobs: `POST /v1/async/chat/completions` queues a chat request and answers 202 with a
//! job id; the job runs through the gateway's own listener (so routing, the parser, metrics and
//! the cache apply as to any request), records reasoning progress and checkpoints, and ends with
//! the assembled chat completion. `GET /v1/async/jobs/{id}` reports it, `DELETE` cancels it
//! (the upstream sees the disconnect and stops). A callback URL gets the result, signed.
//!
//! With `async_jobs.dir` every job is a JSON file there: after a restart, finished jobs are
//! served again and unfinished ones run again (once; a second interruption fails them with the
//! reason), undelivered callbacks are retried.
//!
//! In fleet mode (`shared` configured) jobs live in Redis instead, shared by every replica:
//! see [`fleet`].

pub mod callback;
mod fleet;
pub mod quota;
mod runner;
pub mod target;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use crate::config::AsyncJobsConfig;
use crate::openai::{ApiError, ErrorCode};
use crate::outcome::Outcome;
use crate::util::now_unix;
pub use fleet::unavailable;
use quota::json_len;
pub use quota::Rejection;

/// Runs a job may get (the first, plus one after a restart interrupted it).
const MAX_ATTEMPTS: u32 = 2;
/// Reasoning kept in a job's progress (the tail beyond is dropped).
const MAX_PROGRESS_BYTES: usize = 1 << 20;
/// Checkpoints kept per job.
const MAX_CHECKPOINTS: usize = 256;
/// What a submitter sees of a failed callback attempt: the reason (a connection refused, a
/// TLS alert) would map the gateway's network for them; it goes to the log instead.
pub const DELIVERY_FAILED: &str = "delivery failed";

/// Where a job is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    /// Waiting for a run slot.
    Queued,
    /// Running.
    Running,
    /// Finished with a result.
    Succeeded,
    /// Finished with an error.
    Failed,
    /// Cancelled by the client.
    Cancelled,
}

impl Status {
    /// The status as the API spells it.
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Queued => "queued",
            Status::Running => "running",
            Status::Succeeded => "succeeded",
            Status::Failed => "failed",
            Status::Cancelled => "cancelled",
        }
    }

    /// Finished one way or another.
    pub fn is_terminal(self) -> bool {
        matches!(self, Status::Succeeded | Status::Failed | Status::Cancelled)
    }
}

/// One recorded checkpoint.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Checkpoint {
    /// Completed reasoning steps.
    pub step: u64,
    /// The last complete step, shortened.
    pub summary: String,
    /// Reasoning characters so far.
    pub reasoning_chars: u64,
    /// Unix seconds.
    pub at: u64,
}

/// Callback delivery state.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct CallbackState {
    /// Where the result is POSTed.
    pub url: String,
    /// Delivery attempts so far.
    pub attempts: u32,
    /// A 2xx was received.
    pub delivered: bool,
    /// The last attempt's HTTP status.
    pub last_status: Option<u16>,
    /// The last attempt's failure: only ever [`DELIVERY_FAILED`] (the detail is logged).
    pub last_error: Option<String>,
}

/// A job as stored and reported (the request body and credentials are stored, not reported).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Job {
    /// `job_…`.
    pub id: String,
    /// Status.
    pub status: Status,
    /// Unix seconds.
    pub created: u64,
    /// Unix seconds of the last change.
    pub updated: u64,
    /// The request's `model`.
    pub model: String,
    /// Runs started.
    pub attempts: u32,
    /// Reasoning so far.
    pub reasoning: String,
    /// Answer text so far.
    pub answer: String,
    /// Completed steps at the latest checkpoint.
    pub steps: u64,
    /// Checkpoints, oldest first.
    pub checkpoints: Vec<Checkpoint>,
    /// The chat completion, once succeeded.
    pub result: Option<Value>,
    /// Why it failed or was cancelled.
    pub error: Option<Value>,
    /// How it ended, in the `outcome` terms of `requests_total` and the access log (absent
    /// while it runs, and in records written before outcomes existed).
    #[serde(default)]
    pub outcome: Option<Outcome>,
    /// Callback delivery, when a callback URL was given.
    pub callback: Option<CallbackState>,
    /// The chat request (stream forced on by the runner).
    pub request: Value,
    /// Tenant id of the creator (only the creator may read or cancel it).
    pub tenant: String,
    /// The creator's `Authorization` header, forwarded when the job runs.
    pub authorization: Option<String>,
    /// The submitting request's W3C `traceparent` (traces exported): its run and its callbacks
    /// continue that trace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub traceparent: Option<String>,
}

impl Job {
    /// The public view.
    pub fn view(&self) -> Value {
        json!({
            "id": self.id,
            "object": "async.job",
            "status": self.status,
            "created": self.created,
            "updated": self.updated,
            "model": self.model,
            "attempts": self.attempts,
            "progress": {
                "reasoning": self.reasoning,
                "answer": self.answer,
                "steps": self.steps,
                "reasoning_chars": self.reasoning.chars().count(),
            },
            "checkpoints": self.checkpoints,
            "latest_checkpoint": self.checkpoints.last(),
            "result": self.result,
            "error": self.error,
            "outcome": self.outcome,
            "callback": self.callback.as_ref().map(|c| CallbackState {
                // Files written before errors were kept out of the view may hold one.
                last_error: c.last_error.as_ref().map(|_| DELIVERY_FAILED.to_string()),
                ..c.clone()
            }),
        })
    }
}

struct Entry {
    job: Job,
    task: Option<tokio::task::AbortHandle>,
    /// The stored request's size.
    request_bytes: u64,
    /// The stored result's and error's size, once finished.
    outcome_bytes: u64,
    /// Fleet mode: held while the job is written to Redis, so its writes go one at a time.
    write: Arc<tokio::sync::Mutex<()>>,
    /// Fleet mode: when it was last written to Redis.
    synced: Option<std::time::Instant>,
}

impl Entry {
    fn new(job: Job) -> Entry {
        let mut e = Entry {
            request_bytes: json_len(&job.request),
            outcome_bytes: 0,
            job,
            task: None,
            write: Arc::default(),
            synced: None,
        };
        e.measure_outcome();
        e
    }

    fn measure_outcome(&mut self) {
        self.outcome_bytes = self.job.result.as_ref().map_or(0, json_len)
            + self.job.error.as_ref().map_or(0, json_len);
    }

    /// Bytes this job holds: its request, progress and outcome. (Running jobs' progress
    /// grows past what admission saw by at most `MAX_PROGRESS_BYTES` twice each; the outcome
    /// is checked when it is recorded.)
    fn held_bytes(&self) -> u64 {
        let progress = (self.job.reasoning.len() + self.job.answer.len()) as u64;
        self.request_bytes + progress + self.outcome_bytes
    }
}

/// What jobs need of the gateway that runs them. `state::Gateway` implements it, so this module
/// never names the aggregate that owns the job store (which would be an import cycle).
pub trait Host: Send + Sync {
    /// The metrics.
    fn metrics(&self) -> &crate::metrics::Metrics;
    /// The config now (the listener jobs call, the callback policy).
    fn config(&self) -> Arc<crate::config::Config>;
    /// The header value that makes a job's request run as `tenant` (see [`crate::tenant`]).
    fn seal_tenant(&self, tenant: &str) -> String;
    /// Fleet mode's Redis, when `shared` is configured: jobs then live there.
    fn shared(&self) -> Option<Arc<crate::shared::Shared>>;
}

/// The job store and runner.
pub struct Jobs {
    /// Settings.
    pub settings: AsyncJobsConfig,
    entries: Mutex<HashMap<String, Entry>>,
    /// Held while a job file is written, so files are written one at a time.
    persisting: Mutex<()>,
    slots: Arc<tokio::sync::Semaphore>,
    runtime: OnceLock<tokio::runtime::Handle>,
    gw: OnceLock<std::sync::Weak<dyn Host>>,
    /// TLS for `https://` callbacks, built at the first one.
    callback_tls: OnceLock<crate::upstream::connect::TlsClient>,
    /// Stored jobs are in the store: until then the gateway is not ready (a client asking for
    /// its job right after a restart would get 404).
    loaded: std::sync::atomic::AtomicBool,
    /// Fleet mode: the job table in Redis (set once, at [`Jobs::resume`]).
    fleet: OnceLock<crate::shared::jobs::JobTable>,
}

impl Jobs {
    /// An empty store; finished and unfinished jobs from `settings.dir` are loaded by
    /// [`Jobs::resume`] once a runtime runs.
    pub fn new(settings: AsyncJobsConfig) -> Arc<Self> {
        Arc::new(Jobs {
            slots: Arc::new(tokio::sync::Semaphore::new(settings.max_running)),
            settings,
            entries: Mutex::new(HashMap::new()),
            persisting: Mutex::new(()),
            runtime: OnceLock::new(),
            gw: OnceLock::new(),
            callback_tls: OnceLock::new(),
            loaded: std::sync::atomic::AtomicBool::new(false),
            fleet: OnceLock::new(),
        })
    }

    /// The TLS client for `https://` callbacks: `callback_ca_file`'s roots, else the system's.
    pub fn callback_tls(&self) -> &crate::upstream::connect::TlsClient {
        self.callback_tls.get_or_init(|| {
            let roots = self
                .settings
                .callback_ca
                .as_ref()
                .map(|r| r.iter().map(Vec::as_slice));
            crate::upstream::connect::TlsClient::new(roots, true)
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Entry>> {
        self.entries
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn gateway(&self) -> Option<Arc<dyn Host>> {
        self.gw.get().and_then(std::sync::Weak::upgrade)
    }

    /// Whether stored jobs are loaded (part of readiness).
    pub fn is_loaded(&self) -> bool {
        self.loaded.load(std::sync::atomic::Ordering::Acquire)
    }

    /// Binds the store to a runtime and the gateway; loads stored jobs and resumes them (in
    /// fleet mode, joins the fleet's table instead: see [`fleet`]).
    pub fn resume<H: Host + 'static>(
        self: &Arc<Self>,
        gw: &Arc<H>,
        handle: tokio::runtime::Handle,
    ) {
        let _ = self.runtime.set(handle);
        let host: std::sync::Weak<H> = Arc::downgrade(gw);
        let _ = self.gw.set(host);
        match gw.shared() {
            Some(shared) => self.join_fleet(shared),
            None => self.load_stored(),
        }
        self.loaded
            .store(true, std::sync::atomic::Ordering::Release);
    }

    /// Loads the job files of `settings.dir`, restarts unfinished jobs and owed callbacks.
    fn load_stored(self: &Arc<Self>) {
        let Some(dir) = self.settings.dir.clone() else {
            return;
        };
        let now = now_unix();
        let Ok(read) = std::fs::read_dir(&dir) else {
            return;
        };
        let mut to_run = Vec::new();
        let mut to_call = Vec::new();
        let mut changed = Vec::new();
        for entry in read.flatten() {
            let path = entry.path();
            if path.extension().is_none_or(|e| e != "json") {
                continue;
            }
            let job: Job = match std::fs::read(&path)
                .map_err(|e| e.to_string())
                .and_then(|b| serde_json::from_slice(&b).map_err(|e| e.to_string()))
            {
                Ok(j) => j,
                Err(e) => {
                    tracing::error!(path = %path.display(), error = %e, "Unreadable async job file ignored.");
                    continue;
                }
            };
            if job.status.is_terminal() && job.updated + self.settings.ttl.as_secs() < now {
                let _ = std::fs::remove_file(&path);
                continue;
            }
            let mut job = job;
            if !job.status.is_terminal() {
                if job.attempts >= MAX_ATTEMPTS {
                    job.status = Status::Failed;
                    job.error = Some(json!({
                        "code": "interrupted",
                        "message": format!("The gateway restarted while this job ran, {} times; it was not run again.", job.attempts),
                    }));
                    job.updated = now;
                    to_call.push(job.id.clone());
                } else {
                    job.status = Status::Queued;
                    to_run.push(job.id.clone());
                }
                changed.push(job.clone());
            } else if job.callback.as_ref().is_some_and(|c| !c.delivered) {
                to_call.push(job.id.clone());
            }
            // In the store at once; files are rewritten after (each write is synced, and
            // clients may already ask for their jobs).
            self.lock().insert(job.id.clone(), Entry::new(job));
        }
        for job in &changed {
            self.persist(job);
        }
        tracing::info!(
            resumed = to_run.len(),
            callbacks = to_call.len(),
            "Async jobs loaded."
        );
        for id in to_run {
            self.start(id);
        }
        for id in to_call {
            self.deliver(id);
        }
    }

    /// Queues a chat request; returns the job's public view. `config` is the configuration
    /// the request arrived under (its listeners are never called back).
    pub async fn submit(
        self: &Arc<Self>,
        config: &crate::config::Config,
        mut body: serde_json::Map<String, Value>,
        tenant: String,
        authorization: Option<String>,
        traceparent: Option<String>,
    ) -> Result<Value, ApiError> {
        let invalid = |message: String| ApiError::new(ErrorCode::InvalidCallbackUrl, message);
        let callback = match body.remove("callback_url") {
            None | Some(Value::Null) => None,
            Some(Value::String(u)) => {
                let url = callback::parse_url(&u).map_err(invalid)?;
                let policy = self.policy(config);
                if let Err(why) =
                    target::resolve(&policy, &url.host, url.port, self.settings.callback_timeout)
                        .await
                {
                    // The reason (what the name resolves to) stays in the log: the submitter
                    // learns only that this target is not called.
                    tracing::info!(host = %url.host, port = url.port, reason = %why, "Async job refused: its callback target is not allowed.");
                    return Err(invalid(format!(
                        "`{u}` is not a target the gateway calls back: its host must be, and resolve only to, public addresses (or be listed in async_jobs.callback_allow), and not the gateway itself"
                    )));
                }
                Some(CallbackState {
                    url: u,
                    ..CallbackState::default()
                })
            }
            Some(_) => {
                return Err(invalid("`callback_url` must be a string".into()));
            }
        };
        let request_bytes = json_len(&Value::Object(body.clone()));
        if let Err((reason, e)) = self.admit(&tenant, request_bytes) {
            if let Some(gw) = self.gateway() {
                gw.metrics().async_job_rejections_total.with(&reason).inc();
            }
            return Err(e);
        }
        let now = now_unix();
        let id = format!("job_{:032x}", rand::random::<u128>());
        let model = body
            .get("model")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string();
        let job = Job {
            id: id.clone(),
            status: Status::Queued,
            created: now,
            updated: now,
            model,
            attempts: 0,
            reasoning: String::new(),
            answer: String::new(),
            steps: 0,
            checkpoints: Vec::new(),
            result: None,
            error: None,
            outcome: None,
            callback,
            request: Value::Object(body),
            tenant,
            authorization,
            traceparent,
        };
        let view = job.view();
        if let Some(table) = self.table() {
            self.store_new(table, &job).await?;
        }
        self.persist(&job);
        let mut entry = Entry::new(job);
        entry.synced = self.table().map(|_| std::time::Instant::now());
        self.lock().insert(id.clone(), entry);
        self.start(id);
        Ok(view)
    }

    /// Room for one more job of `tenant` holding `request_bytes`: the store, the tenant's
    /// quota and the memory bound (finished jobs past their TTL are dropped first).
    fn admit(&self, tenant: &str, request_bytes: u64) -> Result<(), (Rejection, ApiError)> {
        let mut entries = self.lock();
        let check = |entries: &HashMap<String, Entry>| {
            quota::check(
                &self.settings,
                quota::Usage {
                    stored: entries.len(),
                    tenant: entries.values().filter(|e| e.job.tenant == tenant).count(),
                    held: entries.values().map(Entry::held_bytes).sum(),
                },
                request_bytes,
            )
        };
        if check(&entries).is_err() {
            self.expire_locked(&mut entries);
        }
        check(&entries)
    }

    /// What callbacks may reach under `config`.
    pub fn policy(&self, config: &crate::config::Config) -> target::Policy {
        let mut own = vec![config.listen, config.admin_listen];
        own.extend(config.engine.as_ref().map(|e| e.listen));
        target::Policy {
            allow: self.settings.callback_allow.clone(),
            own,
        }
    }

    /// The job's view, if this process holds it and it belongs to `tenant`.
    fn get_local(&self, id: &str, tenant: &str) -> Option<Value> {
        let entries = self.lock();
        let e = entries.get(id).filter(|e| e.job.tenant == tenant)?;
        Some(e.job.view())
    }

    /// Cancels a job this process holds (stopping its upstream request); returns its view.
    fn cancel_local(&self, id: &str, tenant: &str) -> Option<Value> {
        let job = {
            let mut entries = self.lock();
            let e = entries.get_mut(id).filter(|e| e.job.tenant == tenant)?;
            if !e.job.status.is_terminal() {
                if let Some(t) = e.task.take() {
                    t.abort();
                }
                fleet::mark_cancelled(&mut e.job);
            }
            e.job.clone()
        };
        self.persist(&job);
        Some(job.view())
    }

    /// Counts by status (metrics, admin).
    pub fn counts(&self) -> HashMap<Status, usize> {
        let mut out = HashMap::new();
        for e in self.lock().values() {
            *out.entry(e.job.status).or_default() += 1;
        }
        out
    }

    /// Drops finished jobs past their TTL.
    pub fn expire(&self) {
        let mut entries = self.lock();
        self.expire_locked(&mut entries);
    }

    fn expire_locked(&self, entries: &mut HashMap<String, Entry>) {
        let cutoff = now_unix().saturating_sub(self.settings.ttl.as_secs());
        let old: Vec<String> = entries
            .values()
            .filter(|e| e.job.status.is_terminal() && e.job.updated < cutoff)
            .map(|e| e.job.id.clone())
            .collect();
        for id in old {
            entries.remove(&id);
            if let Some(dir) = &self.settings.dir {
                let _ = std::fs::remove_file(dir.join(format!("{id}.json")));
            }
        }
    }

    fn spawn<F: std::future::Future<Output = ()> + Send + 'static>(
        &self,
        fut: F,
    ) -> Option<tokio::task::AbortHandle> {
        match self.runtime.get() {
            Some(h) => Some(h.spawn(fut).abort_handle()),
            None => Some(tokio::spawn(fut).abort_handle()),
        }
    }

    fn start(self: &Arc<Self>, id: String) {
        let jobs = self.clone();
        let run_id = id.clone();
        let handle = self.spawn(async move { runner::run(jobs, run_id).await });
        if let Some(e) = self.lock().get_mut(&id) {
            e.task = handle;
        }
    }

    /// Applies `f` to a running job and optionally persists it; `false` if it is gone or no
    /// longer runnable (cancelled).
    fn update(&self, id: &str, persist: bool, f: impl FnOnce(&mut Job)) -> bool {
        let job = {
            let mut entries = self.lock();
            let Some(e) = entries.get_mut(id) else {
                return false;
            };
            if e.job.status == Status::Cancelled {
                return false;
            }
            f(&mut e.job);
            e.job.updated = now_unix();
            if !persist {
                return true;
            }
            e.job.clone()
        };
        self.persist(&job);
        true
    }

    /// Records a run's outcome; `false` if the job is gone or was cancelled. A result that
    /// would take jobs past `async_jobs.max_bytes` is dropped and the job fails.
    fn finish(&self, id: &str, outcome: Result<(Value, Outcome), (Value, Outcome)>) -> bool {
        let job = {
            let mut entries = self.lock();
            let others: u64 = entries
                .iter()
                .filter(|(k, _)| k.as_str() != id)
                .map(|(_, e)| e.held_bytes())
                .sum();
            let Some(e) = entries.get_mut(id) else {
                return false;
            };
            if e.job.status == Status::Cancelled {
                return false;
            }
            match outcome {
                Ok((result, ended)) => {
                    e.job.status = Status::Succeeded;
                    e.job.result = Some(result);
                    e.job.outcome = Some(ended);
                }
                Err((err, ended)) => {
                    e.job.status = Status::Failed;
                    e.job.error = Some(err);
                    e.job.outcome = Some(ended);
                }
            }
            e.measure_outcome();
            if others + e.held_bytes() > self.settings.max_bytes {
                e.job.status = Status::Failed;
                e.job.result = None;
                e.job.outcome = Some(Outcome::Rejected);
                e.job.error = Some(json!({
                    "code": ErrorCode::JobMemoryFull.as_str(),
                    "message": "The result did not fit in the memory async jobs may hold (async_jobs.max_bytes).",
                }));
                e.measure_outcome();
                if let Some(gw) = self.gateway() {
                    gw.metrics()
                        .async_job_rejections_total
                        .with(&Rejection::MemoryFull)
                        .inc();
                }
            }
            e.job.updated = now_unix();
            e.job.clone()
        };
        self.persist(&job);
        true
    }

    fn update_callback(&self, id: &str, f: impl FnOnce(&mut CallbackState)) {
        let job = {
            let mut entries = self.lock();
            let Some(e) = entries.get_mut(id) else {
                return;
            };
            if let Some(c) = e.job.callback.as_mut() {
                f(c);
            }
            e.job.clone()
        };
        self.persist(&job);
    }

    fn snapshot(&self, id: &str) -> Option<Job> {
        self.lock().get(id).map(|e| e.job.clone())
    }

    /// Writes the job file (atomically), if a directory is configured.
    ///
    /// Two updates of one job (the runner and a cancel, a callback) each take their copy under
    /// the entries lock and write it after releasing it, so they can arrive here in either
    /// order: writes are serialised and each writes the job's latest state, never an older one.
    fn persist(&self, job: &Job) {
        let Some(dir) = &self.settings.dir else {
            return;
        };
        if self.table().is_some() {
            return;
        }
        let _one_at_a_time = self
            .persisting
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let latest = self.snapshot(&job.id);
        let job = latest.as_ref().unwrap_or(job);
        let write = || -> std::io::Result<()> {
            reasoning_cache::files::create_private_dir(dir)?;
            let bytes = serde_json::to_vec(job).unwrap_or_default();
            // Job files hold request bodies and Authorization headers.
            reasoning_cache::files::write_atomic(
                &dir.join(format!("{}.json", job.id)),
                &bytes,
                Some(0o600),
            )
        };
        if let Err(e) = write() {
            tracing::error!(job = %job.id, error = %e, "Async job could not be saved.");
        }
    }

    /// Delivers the job's callback in the calling task (fleet mode, after its end is written).
    async fn deliver_here(self: &Arc<Self>, id: String) {
        callback::deliver(self.clone(), id).await;
    }

    fn deliver(self: &Arc<Self>, id: String) {
        let jobs = self.clone();
        self.spawn(async move { callback::deliver(jobs, id).await });
    }
}

/// Where the gateway's own listener is, for jobs to call.
fn self_addr(gw: &dyn Host) -> std::net::SocketAddr {
    let mut a = gw.config().listen;
    if a.ip().is_unspecified() {
        a.set_ip(std::net::Ipv4Addr::LOCALHOST.into());
    }
    a
}

/// Trims the front of `s` to at most `max` bytes (on a character boundary).
fn keep_tail(s: &mut String, max: usize) {
    if s.len() > max {
        let mut cut = s.len() - max;
        while !s.is_char_boundary(cut) {
            cut += 1;
        }
        s.drain(..cut);
    }
}

/// Default job settings (in memory, no callbacks signed).
pub fn default_settings() -> AsyncJobsConfig {
    AsyncJobsConfig {
        dir: None::<PathBuf>,
        max_jobs: 1000,
        max_running: 16,
        ttl: Duration::from_secs(3600),
        callback_secret: None,
        callback_retries: 5,
        callback_timeout: Duration::from_secs(10),
        callback_ca: None,
        checkpoint_every: None,
        callback_allow: Vec::new(),
        max_jobs_per_tenant: 100,
        max_bytes: 256 << 20,
    }
}
