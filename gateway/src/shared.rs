//! Fleet mode: the state every replica shares through one Redis (`shared` in the config).
//!
//! [`Shared`] owns the connections and the rules every user of Redis follows:
//! - commands go through a small pool of multiplexed connections that reconnect by themselves
//!   ([`redis::aio::ConnectionManager`]); blocking reads (stream tails) get a connection of
//!   their own ([`Shared::dedicated`]);
//! - every command on a request's path has a deadline (`shared.timeout`): past it, or on any
//!   error, the caller goes on alone and the failure is counted in
//!   `shared_state_errors_total{op}`;
//! - a health loop pings Redis every [`HEALTH_EVERY`] and sets `shared_state_up`; callers read
//!   [`Shared::is_up`] to skip Redis while it is down instead of waiting on each request;
//! - keys are `{key_prefix}:{part}:{part}…` ([`Shared::key`]).
//!
//! What is shared is decided by its users: the cache (`shared/cache.rs`), canary outcome
//! counts and verdicts, and async jobs.

pub mod cache;
pub mod canary;
pub mod jobs;

use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwapOption;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::RedisResult;

use crate::config::SharedConfig;
use crate::metrics::labels::{SharedBackend, SharedOp};
use crate::metrics::Metrics;

/// How often the health loop pings Redis (and, while it is down, tries to connect).
pub const HEALTH_EVERY: Duration = Duration::from_millis(500);
/// Multiplexed connections in the pool (each carries any number of concurrent commands).
const POOL_SIZE: usize = 4;
/// Longest wait for a connection to open.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);

/// Why a shared-state command did not complete.
#[derive(Debug, thiserror::Error)]
pub enum SharedError {
    /// Redis is known to be unreachable (the health loop's last ping failed): not tried.
    #[error("the shared state store is unreachable")]
    Down,
    /// The command outlasted its deadline.
    #[error("the shared state store did not answer within {0:?}")]
    Timeout(Duration),
    /// Redis answered with an error, or the connection broke.
    #[error("shared state store error: {0}")]
    Redis(#[from] redis::RedisError),
}

/// The fleet's shared-state connection (one per process).
pub struct Shared {
    /// Settings it was started with.
    pub config: SharedConfig,
    /// This process's id among the replicas (random at start): leases and stream entries
    /// name their writer with it.
    pub replica: String,
    client: redis::Client,
    pool: ArcSwapOption<Vec<ConnectionManager>>,
    next: AtomicUsize,
    up: AtomicBool,
    metrics: Arc<SharedMetrics>,
    /// The runtime of the health loop, the connections' drivers and the background work of
    /// fleet mode (stream tails, leases): one thread of its own, so none of it depends on
    /// which of Pingora's runtimes a request ran on.
    runtime: Option<tokio::runtime::Runtime>,
    handle: tokio::runtime::Handle,
}

impl Drop for Shared {
    fn drop(&mut self) {
        if let Some(rt) = self.runtime.take() {
            rt.shutdown_background();
        }
    }
}

/// The two fleet-mode series.
struct SharedMetrics {
    up: prometheus::IntGauge,
    errors: Vec<(SharedOp, prometheus::IntCounter)>,
}

impl SharedMetrics {
    fn error(&self, op: SharedOp) {
        if let Some((_, c)) = self.errors.iter().find(|(o, _)| *o == op) {
            c.inc();
        }
    }
}

impl Shared {
    /// Parses the URL, starts the fleet-mode thread and its health loop; the first connection
    /// is made by that loop, so a replica whose Redis is down starts anyway (and says so).
    pub fn start(config: SharedConfig, metrics: &Metrics) -> Result<Arc<Self>, SharedError> {
        let client = redis::Client::open(config.redis_url.as_str())?;
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("rg-shared")
            .enable_all()
            .build()
            .map_err(|e| SharedError::Redis(e.into()))?;
        let series = SharedMetrics {
            up: metrics.shared_state_up.with(&SharedBackend::Redis),
            errors: SharedOp::ALL
                .iter()
                .map(|op| (*op, metrics.shared_state_errors_total.with(op)))
                .collect(),
        };
        series.up.set(0);
        let shared = Arc::new(Shared {
            replica: format!("{:016x}", rand::random::<u64>()),
            client,
            pool: ArcSwapOption::empty(),
            next: AtomicUsize::new(0),
            up: AtomicBool::new(false),
            metrics: Arc::new(series),
            config,
            handle: runtime.handle().clone(),
            runtime: Some(runtime),
        });
        let weak = Arc::downgrade(&shared);
        shared.handle.spawn(async move {
            let mut was_up = None;
            loop {
                let Some(shared) = weak.upgrade() else { return };
                let up = shared.check().await;
                if was_up != Some(up) {
                    if up {
                        tracing::info!(redis = %shared.config.display_url(), replica = %shared.replica, "Shared state reachable: this replica shares its cache, canary verdicts and jobs with the fleet.");
                    } else {
                        tracing::warn!(redis = %shared.config.display_url(), "Shared state unreachable: this replica serves alone (local cache, local canary windows, async submissions refused) until it is back.");
                    }
                    was_up = Some(up);
                }
                drop(shared);
                tokio::time::sleep(HEALTH_EVERY).await;
            }
        });
        Ok(shared)
    }

    /// Connects if needed and pings; sets the gauge.
    async fn check(&self) -> bool {
        if self.pool.load().is_none() {
            match tokio::time::timeout(CONNECT_TIMEOUT * 2, self.connect_pool()).await {
                Ok(Ok(pool)) => self.pool.store(Some(Arc::new(pool))),
                Ok(Err(e)) => {
                    tracing::debug!(error = %e, "Could not connect to the shared state store.");
                    return self.set_up(false, true);
                }
                Err(_) => return self.set_up(false, true),
            }
        }
        let ping = self
            .run_with(SharedOp::Ping, CONNECT_TIMEOUT, |mut c| async move {
                redis::cmd("PING").query_async::<String>(&mut c).await
            })
            .await;
        self.set_up(ping.is_ok(), false)
    }

    fn set_up(&self, up: bool, count_failure: bool) -> bool {
        if count_failure {
            self.metrics.error(SharedOp::Ping);
        }
        self.up.store(up, Ordering::Release);
        self.metrics.up.set(i64::from(up));
        up
    }

    async fn connect_pool(&self) -> RedisResult<Vec<ConnectionManager>> {
        let mut pool = Vec::with_capacity(POOL_SIZE);
        for _ in 0..POOL_SIZE {
            pool.push(
                self.connect(self.config.timeout.max(CONNECT_TIMEOUT))
                    .await?,
            );
        }
        Ok(pool)
    }

    async fn connect(&self, response_timeout: Duration) -> RedisResult<ConnectionManager> {
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(CONNECT_TIMEOUT))
            .set_response_timeout(Some(response_timeout))
            .set_number_of_retries(1);
        ConnectionManager::new_with_config(self.client.clone(), config).await
    }

    /// A connection of its own, for blocking commands (`XREAD BLOCK`) that would hold up a
    /// shared one; `response_timeout` must exceed the block time.
    pub async fn dedicated(
        &self,
        response_timeout: Duration,
    ) -> Result<ConnectionManager, SharedError> {
        match tokio::time::timeout(CONNECT_TIMEOUT * 2, self.connect(response_timeout)).await {
            Ok(r) => Ok(r?),
            Err(_) => Err(SharedError::Timeout(CONNECT_TIMEOUT * 2)),
        }
    }

    /// Runs `fut` on the fleet-mode thread (background loops: tails, leases, verdicts).
    pub fn spawn<F>(&self, fut: F) -> tokio::task::JoinHandle<F::Output>
    where
        F: Future + Send + 'static,
        F::Output: Send + 'static,
    {
        self.handle.spawn(fut)
    }

    /// Whether the last health check reached Redis.
    pub fn is_up(&self) -> bool {
        self.up.load(Ordering::Acquire)
    }

    /// `{key_prefix}:{parts joined by ':'}`.
    pub fn key(&self, parts: &[&str]) -> String {
        let mut k = self.config.key_prefix.clone();
        for p in parts {
            k.push(':');
            k.push_str(p);
        }
        k
    }

    /// Runs `f` on a pooled connection within `shared.timeout` (a request's path). While Redis
    /// is down it is not tried at all ([`SharedError::Down`], not counted again).
    pub async fn run<T, F, Fut>(&self, op: SharedOp, f: F) -> Result<T, SharedError>
    where
        F: FnOnce(ConnectionManager) -> Fut,
        Fut: Future<Output = RedisResult<T>>,
    {
        if !self.is_up() {
            return Err(SharedError::Down);
        }
        self.run_with(op, self.config.timeout, f).await
    }

    /// Runs `f` on a pooled connection within `deadline` (background work that may wait
    /// longer than a request should); tried even while the health check says down.
    pub async fn run_with<T, F, Fut>(
        &self,
        op: SharedOp,
        deadline: Duration,
        f: F,
    ) -> Result<T, SharedError>
    where
        F: FnOnce(ConnectionManager) -> Fut,
        Fut: Future<Output = RedisResult<T>>,
    {
        let Some(conn) = self.pick() else {
            self.metrics.error(op);
            return Err(SharedError::Down);
        };
        let result = match tokio::time::timeout(deadline, f(conn)).await {
            Ok(Ok(v)) => return Ok(v),
            Ok(Err(e)) => SharedError::Redis(e),
            Err(_) => SharedError::Timeout(deadline),
        };
        self.metrics.error(op);
        tracing::debug!(op = op.label(), error = %result, "Shared state command failed.");
        Err(result)
    }

    /// Counts a failure of `op` found by a caller (a reply that did not parse, say).
    pub fn count_error(&self, op: SharedOp) {
        self.metrics.error(op);
    }

    fn pick(&self) -> Option<ConnectionManager> {
        let pool = self.pool.load();
        let pool = pool.as_ref()?;
        let i = self.next.fetch_add(1, Ordering::Relaxed) % pool.len();
        Some(pool[i].clone())
    }
}
