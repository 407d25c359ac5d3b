//! Upstream pools: endpoint choice (round-robin or least-loaded), health state, active checks.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::config::{AdmissionConfig, Balance, UpstreamConfig};
use crate::openai::{ApiError, ErrorCode};

/// One backend address with its live state.
#[derive(Debug)]
pub struct Endpoint {
    /// Address connected to.
    pub addr: SocketAddr,
    /// What the user configured (`host:port`).
    pub name: String,
    /// `Host` header value: the configured `host:port`, without `:443` over TLS.
    pub host: String,
    /// Health in the lowest bit, above it a count of the verdicts recorded: a check compares it
    /// before and after its probe, so a verdict given while it ran is not overwritten by an older
    /// probe's.
    health: AtomicU64,
    inflight: AtomicUsize,
}

impl Endpoint {
    fn new(addr: SocketAddr, name: String, tls: bool) -> Self {
        let host = match name.strip_suffix(":443") {
            Some(host) if tls => host.to_string(),
            _ => name.clone(),
        };
        Endpoint {
            addr,
            name,
            host,
            health: AtomicU64::new(1),
            inflight: AtomicUsize::new(0),
        }
    }

    /// Whether the last health verdict was good.
    pub fn is_healthy(&self) -> bool {
        self.health.load(Ordering::Acquire) & 1 == 1
    }

    /// Records a health verdict; returns whether it changed.
    pub fn set_healthy(&self, healthy: bool) -> bool {
        let old = self
            .health
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |h| {
                Some(next_health(h, healthy))
            })
            .unwrap_or_else(|h| h);
        (old & 1 == 1) != healthy
    }

    /// Records a check's verdict unless another verdict was recorded since `seen` (the state
    /// read when the probe started): the newer fact wins. Returns whether health changed.
    fn set_healthy_since(&self, seen: u64, healthy: bool) -> bool {
        self.health
            .compare_exchange(
                seen,
                next_health(seen, healthy),
                Ordering::AcqRel,
                Ordering::Acquire,
            )
            .is_ok_and(|old| (old & 1 == 1) != healthy)
    }

    /// Requests currently using this endpoint.
    pub fn inflight(&self) -> usize {
        self.inflight.load(Ordering::Relaxed)
    }
}

/// The health state after recording `healthy` on `h`.
fn next_health(h: u64, healthy: bool) -> u64 {
    ((h >> 1).wrapping_add(1) << 1) | u64::from(healthy)
}

/// Counts a request against an endpoint for as long as it lives.
#[derive(Debug)]
pub struct InflightGuard {
    /// The endpoint in use.
    pub endpoint: Arc<Endpoint>,
}

impl InflightGuard {
    fn new(endpoint: Arc<Endpoint>) -> Self {
        endpoint.inflight.fetch_add(1, Ordering::Relaxed);
        InflightGuard { endpoint }
    }
}

impl Drop for InflightGuard {
    fn drop(&mut self) {
        self.endpoint.inflight.fetch_sub(1, Ordering::Relaxed);
    }
}

/// A named pool of endpoints.
#[derive(Debug)]
pub struct Pool {
    /// Settings it was built from.
    pub config: UpstreamConfig,
    /// Endpoints in config order.
    pub endpoints: Vec<Arc<Endpoint>>,
    /// The in-flight bound and its queue, when `max_inflight` is set.
    pub admission: Option<Arc<Admission>>,
    /// TLS for the gateway's own connections (checks, shadow), when `tls` is set.
    pub tls: Option<connect::TlsClient>,
    /// Keeps this pool's pooled upstream connections apart from every other pool's (Pingora's
    /// `HttpPeer::group_key`). Pingora reuses a connection for any peer with the same address,
    /// SNI and verify flags, but not the trusted roots: without this, a pool trusting only the
    /// system's roots could be handed a connection another pool verified against its own CA.
    pub connection_group: u64,
    /// `Authorization` sent upstream in place of the client's (`Bearer <api_key>`), made once.
    pub authorization: Option<crate::config::Secret>,
    next: AtomicUsize,
}

/// Why a request was not admitted to a pool.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refused {
    /// `max_queue` requests were already waiting.
    QueueFull,
    /// No slot came free within `queue_timeout`.
    Timeout,
}

impl Refused {
    /// Metric label.
    pub fn label(self) -> &'static str {
        match self {
            Refused::QueueFull => "queue_full",
            Refused::Timeout => "queue_timeout",
        }
    }

    /// The 429 a refused request gets from pool `name` with limits `a`.
    pub fn error(self, name: &str, a: &AdmissionConfig) -> ApiError {
        let (code, message) = match self {
            Refused::QueueFull => (ErrorCode::UpstreamQueueFull, format!(
                "Upstream `{name}` is at its limit of {} requests in flight and {} more are waiting; retry later.",
                a.max_inflight, a.max_queue
            )),
            Refused::Timeout => (ErrorCode::UpstreamQueueTimeout, format!(
                "Upstream `{name}` had no free slot (max_inflight {}) within {:?}; retry later.",
                a.max_inflight, a.queue_timeout
            )),
        };
        ApiError::new(code, message)
    }
}

/// A pool's bound on requests in flight (`max_inflight`), with a bounded FIFO queue in front.
#[derive(Debug)]
pub struct Admission {
    /// The limits it was built with.
    pub config: AdmissionConfig,
    slots: Arc<tokio::sync::Semaphore>,
    waiting: AtomicUsize,
}

/// A slot in a pool, held until the request ends.
pub type Slot = tokio::sync::OwnedSemaphorePermit;

impl Admission {
    /// A bound with every slot free.
    pub fn new(config: AdmissionConfig) -> Self {
        Admission {
            config,
            slots: Arc::new(tokio::sync::Semaphore::new(config.max_inflight)),
            waiting: AtomicUsize::new(0),
        }
    }

    /// A free slot now, if there is one.
    pub fn try_admit(&self) -> Option<Slot> {
        self.slots.clone().try_acquire_owned().ok()
    }

    /// Waits in line for a slot: refused at once when `max_queue` already wait, or after
    /// `queue_timeout`. First come, first served (tokio's semaphore is fair).
    pub async fn wait(&self) -> Result<Slot, Refused> {
        struct InLine<'a>(&'a AtomicUsize);
        impl Drop for InLine<'_> {
            fn drop(&mut self) {
                self.0.fetch_sub(1, Ordering::AcqRel);
            }
        }
        if self.waiting.fetch_add(1, Ordering::AcqRel) >= self.config.max_queue {
            self.waiting.fetch_sub(1, Ordering::AcqRel);
            return Err(Refused::QueueFull);
        }
        let _in_line = InLine(&self.waiting);
        match tokio::time::timeout(
            self.config.queue_timeout,
            self.slots.clone().acquire_owned(),
        )
        .await
        {
            Ok(Ok(slot)) => Ok(slot),
            _ => Err(Refused::Timeout),
        }
    }

    /// Requests waiting now.
    pub fn waiting(&self) -> usize {
        self.waiting.load(Ordering::Acquire)
    }

    /// Requests holding a slot now.
    pub fn in_flight(&self) -> usize {
        self.config.max_inflight - self.slots.available_permits()
    }
}

impl Pool {
    /// Builds a pool; every endpoint starts healthy until a check says otherwise.
    pub fn new(config: UpstreamConfig) -> Self {
        let endpoints = config
            .endpoints
            .iter()
            .map(|(addr, name)| Arc::new(Endpoint::new(*addr, name.clone(), config.tls.is_some())))
            .collect();
        Pool {
            admission: config.admission.map(|a| Arc::new(Admission::new(a))),
            tls: config.tls.as_ref().map(connect::TlsClient::for_pool),
            connection_group: connection_group(&config),
            authorization: config
                .api_key
                .as_ref()
                .map(|key| crate::config::Secret(format!("Bearer {}", key.0))),
            config,
            endpoints,
            next: AtomicUsize::new(0),
        }
    }

    /// Picks a healthy endpoint not in `exclude` (indices already tried by this request).
    pub fn pick(&self, exclude: &[usize]) -> Option<(usize, InflightGuard)> {
        let n = self.endpoints.len();
        if n == 0 {
            return None;
        }
        let start = self.next.fetch_add(1, Ordering::Relaxed);
        let candidates = (0..n)
            .map(|k| (start + k) % n)
            .filter(|i| !exclude.contains(i) && self.endpoints[*i].is_healthy());
        let chosen = match self.config.balance {
            Balance::RoundRobin => candidates.into_iter().next(),
            // Ties go to the round-robin order so equal load still spreads.
            Balance::LeastLoaded => candidates.min_by_key(|i| self.endpoints[*i].inflight()),
        }?;
        Some((chosen, InflightGuard::new(self.endpoints[chosen].clone())))
    }

    /// Whether any endpoint is believed healthy.
    pub fn any_healthy(&self) -> bool {
        self.endpoints.iter().any(|e| e.is_healthy())
    }
}

/// A digest of what a pool's connections were made under: its name and its TLS trust (so a
/// reload that changes the CA does not reuse connections verified under the old one).
fn connection_group(config: &UpstreamConfig) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    config.name.hash(&mut h);
    if let Some(tls) = &config.tls {
        tls.server_name.hash(&mut h);
        tls.verify.hash(&mut h);
        for cert in tls.ca.iter().flat_map(|ca| ca.iter()) {
            cert.borrow_raw_cert().hash(&mut h);
        }
    }
    h.finish()
}

/// All pools by name.
pub type Pools = HashMap<String, Arc<Pool>>;

/// One active check of one endpoint of `pool`. Without a path it is a TCP connect only (no TLS
/// handshake every interval against a hosted API; a failing handshake shows on the first request
/// as `upstream_tls_error` and takes the endpoint out until the next check). With a path it is
/// `GET path` over the pool's connection, TLS included. `Err` says why it failed.
pub async fn check_endpoint(pool: &Pool, ep: &Endpoint) -> Result<(), String> {
    let (hc, host) = (&pool.config.health_check, &ep.host);
    let attempt = async {
        let Some(path) = &hc.path else {
            return tokio::net::TcpStream::connect(ep.addr)
                .await
                .map(drop)
                .map_err(|e| e.to_string());
        };
        let mut stream = connect::open(pool, ep).await.map_err(|e| e.to_string())?;
        let req = format!("GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\nUser-Agent: reasoning-gateway-health\r\n\r\n");
        stream
            .write_all(req.as_bytes())
            .await
            .map_err(|e| e.to_string())?;
        let mut buf = [0u8; 64];
        let mut len = 0;
        // The status line fits in the first bytes: "HTTP/1.1 200 ".
        while len < 12 {
            let n = stream
                .read(&mut buf[len..])
                .await
                .map_err(|e| e.to_string())?;
            if n == 0 {
                return Err(format!("GET {path}: closed before a status line"));
            }
            len += n;
        }
        match std::str::from_utf8(&buf[9..12]) {
            Ok(status) if status.starts_with('2') => Ok(()),
            Ok(status) => Err(format!("GET {path} answered {status}")),
            Err(_) => Err(format!("GET {path}: not an HTTP answer")),
        }
    };
    tokio::time::timeout(hc.timeout, attempt)
        .await
        .unwrap_or_else(|_| Err(format!("no answer within {:?}", hc.timeout)))
}

/// Runs one round of checks on every endpoint of `pool`, updating health and logging changes.
/// Checks run one after another, each bounded by its timeout; pools are small.
pub async fn check_pool(pool: &Pool) {
    for ep in &pool.endpoints {
        let seen = ep.health.load(Ordering::Acquire);
        let result = check_endpoint(pool, ep).await;
        if ep.set_healthy_since(seen, result.is_ok()) {
            match result {
                Ok(()) => {
                    tracing::info!(upstream = %pool.config.name, endpoint = %ep.name, "Upstream endpoint is healthy again.");
                }
                Err(reason) => {
                    tracing::warn!(upstream = %pool.config.name, endpoint = %ep.name, %reason, "Upstream endpoint failed its health check and is out of rotation.");
                }
            }
        }
    }
}

/// The shortest check interval among pools (the checker's tick).
pub fn tick(pools: &Pools) -> Duration {
    pools
        .values()
        .map(|p| p.config.health_check.interval)
        .min()
        .unwrap_or(Duration::from_secs(5))
}

pub mod connect;

#[cfg(test)]
mod tests;
