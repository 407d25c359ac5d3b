//! Live reload of the config file: validated fully, then swapped in as a new snapshot. The one
//! writer is serialised by a lock; requests keep the snapshot they started with.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use pingora::server::ShutdownWatch;
use pingora::services::background::BackgroundService;

use crate::config::{self, ENGINE_UPSTREAM};
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
pub fn reload(gw: &Gateway, path: &Path, trigger: &'static str) -> Result<Reloaded, Vec<String>> {
    let _writer = gw.reload_lock.lock().unwrap_or_else(|p| p.into_inner());
    let result = config::load(path)
        .map_err(|e| e.to_string().lines().map(str::to_owned).collect::<Vec<_>>());
    let mut new = match result {
        Ok(c) => c,
        Err(errors) => {
            gw.metrics
                .config_reloads_total
                .with_label_values(&["error", trigger])
                .inc();
            tracing::error!(trigger, errors = %errors.join("; "), "The new config is invalid and was not applied; the running config stays.");
            return Err(errors);
        }
    };
    let old = gw.snapshot.load_full();
    let mut restart_required = Vec::new();
    if new.listen != old.config.listen {
        restart_required.push("listen");
        new.listen = old.config.listen;
    }
    if new.admin_listen != old.config.admin_listen {
        restart_required.push("admin_listen");
        new.admin_listen = old.config.admin_listen;
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
    for (name, pool) in snapshot.pools.iter_mut() {
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
    let routes = snapshot.config.routes.len();
    gw.snapshot.store(Arc::new(snapshot));
    gw.metrics
        .config_reloads_total
        .with_label_values(&["ok", trigger])
        .inc();
    if restart_required.is_empty() {
        tracing::info!(trigger, generation, routes, "Config reloaded.");
    } else {
        tracing::warn!(trigger, generation, routes, restart_required = ?restart_required, "Config reloaded; some changed settings only take effect after a restart.");
    }
    Ok(Reloaded {
        generation,
        restart_required,
    })
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

/// Reloads on SIGHUP and when the config file changes (polled each second).
pub struct ReloadService {
    gw: Arc<Gateway>,
    path: PathBuf,
}

impl ReloadService {
    /// Watches `path` for `gw`.
    pub fn new(gw: Arc<Gateway>, path: PathBuf) -> Self {
        ReloadService { gw, path }
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
        loop {
            let trigger = tokio::select! {
                _ = shutdown.changed() => return,
                Some(()) = async { match hup.as_mut() { Some(h) => h.recv().await, None => std::future::pending().await } } => "sighup",
                _ = tick.tick() => {
                    let now = fingerprint(&self.path);
                    if now.is_none() || now == seen {
                        continue;
                    }
                    seen = now;
                    "watch"
                }
            };
            let _ = reload(&self.gw, &self.path, trigger);
        }
    }
}
