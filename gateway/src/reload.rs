//! Live reload of the config file: validated fully, then swapped in as a new snapshot. The one
//! writer is serialised by a lock; requests keep the snapshot they started with. Endpoint host
//! names are resolved again every `dns_refresh`; a moved endpoint reloads the file, which
//! resolves it anew.

use std::net::{SocketAddr, ToSocketAddrs};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use async_trait::async_trait;
use pingora::server::ShutdownWatch;
use pingora::services::background::BackgroundService;

use crate::config::{self, ENGINE_UPSTREAM};
use crate::metrics::labels::{Reload, ReloadResult, ReloadTrigger};
use crate::state::{Gateway, Snapshot};

/// What a reload did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reloaded {
    /// The new generation.
    pub generation: u64,
    /// Settings that changed in the file but need a restart (the running values stay).
    pub restart_required: Vec<&'static str>,
}

/// Reloads `path` into `gw`. On error nothing changes and every error is returned.
pub fn reload(gw: &Gateway, path: &Path, trigger: ReloadTrigger) -> Result<Reloaded, Vec<String>> {
    let _writer = gw
        .reload_lock
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let old = gw.snapshot.load_full();
    let result = config::load(path)
        .map_err(|e| e.to_string().lines().map(str::to_owned).collect::<Vec<_>>())
        .and_then(|c| admin_stays_guarded(c, old.config.admin_listen));
    let mut new = match result {
        Ok(c) => c,
        Err(errors) => {
            gw.metrics
                .config_reloads_total
                .with(&Reload {
                    result: ReloadResult::Error,
                    trigger,
                })
                .inc();
            tracing::error!(trigger = trigger.label(), errors = %errors.join("; "), "The new config is invalid and was not applied; the running config stays.");
            return Err(errors);
        }
    };
    let mut restart_required = Vec::new();
    if new.listen != old.config.listen {
        restart_required.push("listen");
        new.listen = old.config.listen;
    }
    if new.admin_listen != old.config.admin_listen {
        restart_required.push("admin_listen");
        new.admin_listen = old.config.admin_listen;
    }
    // Both are held by the listener's connection guard, built once at start.
    if new.max_connections != old.config.max_connections {
        restart_required.push("max_connections");
        new.max_connections = old.config.max_connections;
    }
    if new.client_header_timeout != old.config.client_header_timeout {
        restart_required.push("client_header_timeout");
        new.client_header_timeout = old.config.client_header_timeout;
    }
    if new.threads != old.config.threads {
        restart_required.push("threads");
        new.threads = old.config.threads;
    }
    if new.drain_timeout != old.config.drain_timeout {
        restart_required.push("drain_timeout");
        new.drain_timeout = old.config.drain_timeout;
    }
    if format!("{:?}", new.engine) != format!("{:?}", old.config.engine) {
        restart_required.push("engine");
        new.engine = old.config.engine.clone();
    }
    if new.async_jobs != old.config.async_jobs {
        restart_required.push("async_jobs");
        new.async_jobs = old.config.async_jobs.clone();
    }
    if new.cache != old.config.cache {
        restart_required.push("cache");
        new.cache = old.config.cache.clone();
    }
    if new.shared != old.config.shared {
        restart_required.push("shared");
        new.shared = old.config.shared.clone();
    }
    // The engine keeps running on its listener: its pool carries over as it is.
    let extra: Vec<_> = old
        .pools
        .get(ENGINE_UPSTREAM)
        .map(|p| p.config.clone())
        .into_iter()
        .collect();
    let generation = old.generation + 1;
    let mut snapshot = Snapshot::new(new, extra, generation);
    // Health is a fact about an address, not about a config generation: keep what is known.
    // An unchanged admission bound carries over too, so the slots requests in flight hold (and
    // the line of waiting ones) stay counted.
    for (name, pool) in &mut snapshot.pools {
        if let Some(old_pool) = old.pools.get(name) {
            if pool.config.admission.is_some() && old_pool.config.admission == pool.config.admission
            {
                if let Some(p) = Arc::get_mut(pool) {
                    p.admission = old_pool.admission.clone();
                }
            }
        }
    }
    for (name, pool) in &snapshot.pools {
        if let Some(old_pool) = old.pools.get(name) {
            for ep in &pool.endpoints {
                if let Some(prev) = old_pool.endpoints.iter().find(|o| o.addr == ep.addr) {
                    ep.set_healthy(prev.is_healthy());
                }
            }
        }
    }
    gw.export_config_series(&snapshot);
    for notice in snapshot.config.notices() {
        tracing::warn!(notice = %notice, "The reloaded config asks for something it cannot have here.");
    }
    let routes = snapshot.config.routes.len();
    gw.snapshot.store(Arc::new(snapshot));
    gw.metrics
        .config_reloads_total
        .with(&Reload {
            result: ReloadResult::Ok,
            trigger,
        })
        .inc();
    if restart_required.is_empty() {
        tracing::info!(
            trigger = trigger.label(),
            generation,
            routes,
            "Config reloaded."
        );
    } else {
        tracing::warn!(trigger = trigger.label(), generation, routes, restart_required = ?restart_required, "Config reloaded; some changed settings only take effect after a restart.");
    }
    Ok(Reloaded {
        generation,
        restart_required,
    })
}

/// `admin_listen` needs a restart to change, so the token requirement is judged against the
/// address still listening: a file moving it to loopback may not drop the token meanwhile.
fn admin_stays_guarded(
    new: config::Config,
    listening: SocketAddr,
) -> Result<config::Config, Vec<String>> {
    if new.admin_token.is_none() && !listening.ip().is_loopback() {
        return Err(vec![format!(
            "admin_listen: the running admin listener `{listening}` is not loopback (a changed address needs a restart): keep admin_token_env or admin_token_file"
        )]);
    }
    Ok(new)
}

/// The file's identity and content: a rename over it (editors) or a symlink swap (Kubernetes
/// ConfigMaps) changes it as surely as an in-place write.
fn fingerprint(path: &Path) -> Option<(SystemTime, u64, u64, u64)> {
    use std::hash::{Hash, Hasher};
    use std::os::unix::fs::MetadataExt;
    let meta = std::fs::metadata(path).ok()?;
    let mut h = std::collections::hash_map::DefaultHasher::new();
    std::fs::read(path).ok()?.hash(&mut h);
    Some((meta.modified().ok()?, meta.len(), meta.ino(), h.finish()))
}

/// An endpoint whose host name no longer resolves to the address in use.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Moved {
    /// Pool name.
    pub pool: String,
    /// The endpoint as configured (`host:port`).
    pub name: String,
    /// The address in use.
    pub was: SocketAddr,
    /// What the name resolves to now (the first address, the one a reload picks).
    pub now: SocketAddr,
}

/// The endpoints of `snapshot` that moved, by `resolve` (`host:port` → its addresses now).
/// Names written as IP addresses never move; a name that does not resolve now (a DNS hiccup)
/// or still includes the address in use (round-robin DNS reorders its answers) has not moved.
pub fn moved_endpoints(
    snapshot: &Snapshot,
    resolve: &dyn Fn(&str) -> Vec<SocketAddr>,
) -> Vec<Moved> {
    let mut moved = Vec::new();
    for u in &snapshot.config.upstreams {
        for (was, name) in &u.endpoints {
            if name.parse::<SocketAddr>().is_ok() {
                continue;
            }
            let now = resolve(name);
            match now.first() {
                Some(first) if !now.contains(was) => moved.push(Moved {
                    pool: u.name.clone(),
                    name: name.clone(),
                    was: *was,
                    now: *first,
                }),
                _ => {}
            }
        }
    }
    moved
}

/// The system resolver (blocking).
fn system_resolve(name: &str) -> Vec<SocketAddr> {
    name.to_socket_addrs()
        .map(std::iter::Iterator::collect)
        .unwrap_or_default()
}

/// Reloads on SIGHUP, when the config file changes (polled each second) and when an endpoint's
/// host name moved (checked every `dns_refresh`).
pub struct ReloadService {
    gw: Arc<Gateway>,
    path: PathBuf,
}

impl ReloadService {
    /// Watches `path` for `gw`.
    pub fn new(gw: Arc<Gateway>, path: PathBuf) -> Self {
        ReloadService { gw, path }
    }

    /// Whether `dns_refresh` has passed since `checked` and an endpoint moved (logged). Lookups
    /// block, so they run on the blocking pool.
    async fn dns_due(&self, checked: &mut Instant) -> bool {
        let snapshot = self.gw.snapshot.load_full();
        let every = snapshot.config.dns_refresh;
        if every.is_zero() || checked.elapsed() < every {
            return false;
        }
        *checked = Instant::now();
        let moved =
            tokio::task::spawn_blocking(move || moved_endpoints(&snapshot, &system_resolve))
                .await
                .unwrap_or_default();
        for m in &moved {
            tracing::info!(pool = %m.pool, endpoint = %m.name, was = %m.was, now = %m.now, "An endpoint's address changed in DNS; reloading.");
        }
        !moved.is_empty()
    }
}

#[async_trait]
impl BackgroundService for ReloadService {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        let mut hup = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()) {
            Ok(s) => Some(s),
            Err(e) => {
                tracing::warn!(error = %e, "SIGHUP reloads are unavailable.");
                None
            }
        };
        let mut seen = fingerprint(&self.path);
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        let mut dns_checked = Instant::now();
        loop {
            let trigger = tokio::select! {
                _ = shutdown.changed() => return,
                Some(()) = async { match hup.as_mut() { Some(h) => h.recv().await, None => std::future::pending().await } } => ReloadTrigger::Sighup,
                _ = tick.tick() => {
                    let now = fingerprint(&self.path);
                    if now.is_some() && now != seen {
                        seen = now;
                        ReloadTrigger::Watch
                    } else if self.dns_due(&mut dns_checked).await {
                        ReloadTrigger::Dns
                    } else {
                        continue;
                    }
                }
            };
            let _ = reload(&self.gw, &self.path, trigger);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn snapshot() -> Snapshot {
        let config = config::parse(
            "upstreams:\n  - {name: u, endpoints: [\"127.0.0.1:8000\", \"localhost:8001\"]}\nroutes: [{model: m, upstream: u}]\n",
        )
        .unwrap();
        Snapshot::new(config, Vec::new(), 1)
    }

    #[test]
    fn an_endpoint_moves_only_when_its_name_resolves_without_the_address_in_use() {
        let snap = snapshot();
        let in_use = snap.config.upstreams[0].endpoints[1].0;
        let elsewhere: SocketAddr = "127.0.0.2:8001".parse().unwrap();
        let asked = std::cell::RefCell::new(Vec::new());
        let resolve_to = |answer: Vec<SocketAddr>| {
            let asked = &asked;
            move |name: &str| {
                asked.borrow_mut().push(name.to_string());
                answer.clone()
            }
        };

        let moved = moved_endpoints(&snap, &resolve_to(vec![elsewhere]));
        assert_eq!(
            moved,
            vec![Moved {
                pool: "u".into(),
                name: "localhost:8001".into(),
                was: in_use,
                now: elsewhere,
            }]
        );
        // IP literals are never looked up.
        assert_eq!(*asked.borrow(), vec!["localhost:8001".to_string()]);

        // Round-robin DNS answering in another order, with the address in use among them.
        assert!(moved_endpoints(&snap, &resolve_to(vec![elsewhere, in_use])).is_empty());
        // A lookup that fails now keeps the endpoint where it is.
        assert!(moved_endpoints(&snap, &resolve_to(Vec::new())).is_empty());
    }
}
