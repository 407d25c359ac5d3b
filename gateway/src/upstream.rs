//! Upstream pools: endpoint choice (round-robin or least-loaded), health state, active checks.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::config::{Balance, HealthCheckConfig, UpstreamConfig};

/// One backend address with its live state.
#[derive(Debug)]
pub struct Endpoint {
    /// Address connected to.
    pub addr: SocketAddr,
    /// `Host` header value (what the user configured).
    pub host: String,
    healthy: AtomicBool,
    inflight: AtomicUsize,
}

impl Endpoint {
    fn new(addr: SocketAddr, host: String) -> Self {
        Endpoint {
            addr,
            host,
            healthy: AtomicBool::new(true),
            inflight: AtomicUsize::new(0),
        }
    }

    /// Whether the last health verdict was good.
    pub fn is_healthy(&self) -> bool {
        self.healthy.load(Ordering::Relaxed)
    }

    /// Records a health verdict; returns whether it changed.
    pub fn set_healthy(&self, healthy: bool) -> bool {
        self.healthy.swap(healthy, Ordering::Relaxed) != healthy
    }

    /// Requests currently using this endpoint.
    pub fn inflight(&self) -> usize {
        self.inflight.load(Ordering::Relaxed)
    }
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
    next: AtomicUsize,
}

impl Pool {
    /// Builds a pool; every endpoint starts healthy until a check says otherwise.
    pub fn new(config: UpstreamConfig) -> Self {
        let endpoints = config
            .endpoints
            .iter()
            .map(|(addr, host)| Arc::new(Endpoint::new(*addr, host.clone())))
            .collect();
        Pool {
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

/// All pools by name.
pub type Pools = HashMap<String, Arc<Pool>>;

/// One active check of one endpoint.
pub async fn check_endpoint(addr: SocketAddr, host: &str, hc: &HealthCheckConfig) -> bool {
    let attempt = async {
        let mut stream = TcpStream::connect(addr).await.ok()?;
        let Some(path) = &hc.path else {
            return Some(true);
        };
        let req = format!("GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\nUser-Agent: reasoning-gateway-health\r\n\r\n");
        stream.write_all(req.as_bytes()).await.ok()?;
        let mut buf = [0u8; 64];
        let mut len = 0;
        // The status line fits in the first bytes: "HTTP/1.1 200 ".
        while len < 12 {
            let n = stream.read(&mut buf[len..]).await.ok()?;
            if n == 0 {
                return Some(false);
            }
            len += n;
        }
        let status = std::str::from_utf8(&buf[9..12]).ok()?;
        Some(status.starts_with('2'))
    };
    matches!(
        tokio::time::timeout(hc.timeout, attempt).await,
        Ok(Some(true))
    )
}

/// Runs one round of checks on every endpoint of `pool`, updating health and logging changes.
/// Checks run one after another, each bounded by its timeout; pools are small.
pub async fn check_pool(pool: &Pool) {
    for ep in &pool.endpoints {
        let ok = check_endpoint(ep.addr, &ep.host, &pool.config.health_check).await;
        if ep.set_healthy(ok) {
            if ok {
                tracing::info!(upstream = %pool.config.name, endpoint = %ep.addr, "Upstream endpoint is healthy again.");
            } else {
                tracing::warn!(upstream = %pool.config.name, endpoint = %ep.addr, "Upstream endpoint failed its health check and is out of rotation.");
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

#[cfg(test)]
mod tests;
