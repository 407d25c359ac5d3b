//! Live gateway state: the config snapshot every request loads once, plus process-wide parts.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use arc_swap::ArcSwap;

use crate::config::{Config, UpstreamConfig};
use crate::metrics::Metrics;
use crate::routing::RouteTable;
use crate::upstream::{Pool, Pools};

/// One generation of configuration, immutable once built.
#[derive(Debug)]
pub struct Snapshot {
    /// The validated config.
    pub config: Arc<Config>,
    /// Routes.
    pub routes: RouteTable,
    /// Pools by name (including `engine` when it runs).
    pub pools: Pools,
    /// Increases by one with every swap.
    pub generation: u64,
}

impl Snapshot {
    /// Builds a snapshot; `extra` adds pools not in the file (the bundled engine).
    pub fn new(config: Config, extra: Vec<UpstreamConfig>, generation: u64) -> Self {
        let pools: HashMap<_, _> = config
            .upstreams
            .iter()
            .cloned()
            .chain(extra)
            .map(|u| (u.name.clone(), Arc::new(Pool::new(u))))
            .collect();
        Snapshot {
            routes: RouteTable::new(&config),
            config: Arc::new(config),
            pools,
            generation,
        }
    }
}

/// Everything the proxy, the admin listener and background tasks share.
pub struct Gateway {
    /// The current snapshot; requests `load_full` it once and keep it.
    pub snapshot: ArcSwap<Snapshot>,
    /// Metrics registry.
    pub metrics: Metrics,
    /// The config file reloads read (none in tests that build state in memory).
    pub config_path: Option<std::path::PathBuf>,
    /// Serialises reloads: one writer at a time.
    pub reload_lock: std::sync::Mutex<()>,
    /// Canary windows and rollbacks (kept across reloads).
    pub canary: crate::canary::CanaryState,
    /// The reasoning cache, when the config enables it (started once, kept across reloads).
    pub cache: std::sync::OnceLock<Arc<reasoning_cache::Cache>>,
    /// Async jobs.
    pub jobs: Arc<crate::jobs::Jobs>,
    /// The OTLP trace exporter, when `telemetry.otlp` is set (started once at start-up).
    pub traces: std::sync::OnceLock<crate::telemetry::otlp::Traces>,
    /// Fleet mode's Redis connection, when `shared` is configured (started once at start-up).
    pub shared: std::sync::OnceLock<Arc<crate::shared::Shared>>,
    /// Seals the tenant a job runs as (see [`crate::tenant`]); random per process.
    pub tenant_relay: crate::tenant::Relay,
    ready: AtomicBool,
}

impl Gateway {
    /// Creates the shared state; not ready until [`Gateway::set_ready`].
    pub fn new(snapshot: Snapshot, config_path: Option<std::path::PathBuf>) -> Arc<Self> {
        // Chosen once: a family's labels cannot change under a running scraper.
        let genai_attributes = snapshot.config.telemetry.genai_metrics;
        Arc::new(Gateway {
            jobs: crate::jobs::Jobs::new(snapshot.config.async_jobs.clone()),
            snapshot: ArcSwap::from_pointee(snapshot),
            metrics: Metrics::with_genai_attributes(genai_attributes),
            config_path,
            reload_lock: std::sync::Mutex::new(()),
            canary: Default::default(),
            cache: std::sync::OnceLock::new(),
            traces: std::sync::OnceLock::new(),
            shared: std::sync::OnceLock::new(),
            tenant_relay: crate::tenant::Relay::new(),
            ready: AtomicBool::new(false),
        })
    }

    /// The request's tenant ([`crate::tenant::derive`] with the current settings), counting an
    /// ignored tenant header in `tenant_headers_ignored_total`.
    pub fn tenant_of(
        &self,
        header: &dyn Fn(&str) -> Option<String>,
        peer: Option<std::net::IpAddr>,
    ) -> crate::tenant::Derived {
        let snapshot = self.snapshot.load();
        let derived = crate::tenant::derive(
            header,
            peer,
            &crate::tenant::Policy::of(snapshot.config.cache.as_ref()),
            &self.tenant_relay,
        );
        if let Some(name) = &derived.ignored {
            self.metrics
                .tenant_headers_ignored_total
                .with(&crate::metrics::labels::TenantHeader {
                    header: name.as_str(),
                })
                .inc();
        }
        derived
    }

    /// Whether the gateway can serve (engine loaded, listeners up, stored async jobs loaded).
    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::Acquire) && self.jobs.is_loaded()
    }

    /// Marks the gateway ready or not.
    pub fn set_ready(&self, ready: bool) {
        self.ready.store(ready, Ordering::Release);
    }

    /// Exports the series a config generation defines before any traffic: the admission series
    /// of bounded pools (at 0) and each canary route's traffic shares. At start-up and reload.
    pub fn export_config_series(&self, snapshot: &Snapshot) {
        for (name, pool) in &snapshot.pools {
            if pool.admission.is_some() {
                self.metrics.bounded_pool(name);
            }
        }
        for route in &snapshot.config.routes {
            if let Some(canary) = &route.canary {
                self.canary.publish(&self.metrics, &route.name, canary);
            }
        }
    }
}

impl crate::jobs::Host for Gateway {
    fn metrics(&self) -> &Metrics {
        &self.metrics
    }

    fn config(&self) -> Arc<Config> {
        self.snapshot.load().config.clone()
    }

    fn seal_tenant(&self, tenant: &str) -> String {
        self.tenant_relay.seal(tenant)
    }

    fn shared(&self) -> Option<Arc<crate::shared::Shared>> {
        self.shared.get().cloned()
    }
}
