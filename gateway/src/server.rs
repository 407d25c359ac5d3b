//! Start-up: config → shared state → Pingora server with the proxy and background services.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use pingora::server::configuration::ServerConf;
use pingora::server::{Server, ShutdownWatch};
use pingora::services::background::{background_service, BackgroundService};

use crate::admin::AdminService;
use crate::config::{self, Balance, Config, HealthCheckConfig, UpstreamConfig, ENGINE_UPSTREAM};
use crate::proxy::GatewayProxy;
use crate::state::{Gateway, Snapshot};
use crate::upstream;

/// Start-up failures.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The config file is unreadable or invalid.
    #[error("{0}")]
    Config(#[from] config::ConfigError),
    /// A listener address cannot be bound.
    #[error("cannot listen on {addr} ({what}): {source}")]
    Bind {
        /// Which listener.
        what: &'static str,
        /// Address.
        addr: SocketAddr,
        /// Cause.
        source: std::io::Error,
    },
    /// The engine's model files are missing or wrong.
    #[error("bundled engine: {0}")]
    Engine(String),
    /// The reasoning cache cannot start (model or ONNX Runtime missing).
    #[error("reasoning cache: {0}")]
    Cache(String),
    /// The config asks for the engine but this build has none.
    #[error(
        "this build has no bundled engine (cargo feature `engine`); remove the `engine:` section"
    )]
    NoEngine,
}

fn bind(what: &'static str, addr: SocketAddr) -> Result<std::net::TcpListener, StartError> {
    std::net::TcpListener::bind(addr).map_err(|source| StartError::Bind { what, addr, source })
}

/// The pool standing for the bundled engine listening on `addr`.
fn engine_pool(addr: SocketAddr) -> UpstreamConfig {
    UpstreamConfig {
        name: ENGINE_UPSTREAM.to_string(),
        endpoints: vec![(addr, addr.to_string())],
        balance: Balance::RoundRobin,
        connect_timeout: Duration::from_secs(2),
        read_timeout: Duration::from_secs(600),
        // The engine answers /health only once its model has loaded.
        health_check: HealthCheckConfig {
            interval: Duration::from_millis(500),
            timeout: Duration::from_secs(1),
            path: Some("/health".to_string()),
        },
    }
}

/// Runs the gateway until it is told to stop. Never returns on success.
pub fn run(config_path: &Path) -> Result<(), StartError> {
    let config = config::load(config_path)?;
    // Bind-test the proxy address now: Pingora binds later and would only panic.
    drop(bind("listen", config.listen)?);
    let admin_listener = bind("admin_listen", config.admin_listen)?;

    let mut extra = Vec::new();
    let engine_listener = match &config.engine {
        Some(e) => {
            let l = bind("engine.listen", e.listen)?;
            let addr = l.local_addr().map_err(|source| StartError::Bind {
                what: "engine.listen",
                addr: e.listen,
                source,
            })?;
            extra.push(engine_pool(addr));
            Some(l)
        }
        None => None,
    };
    let snapshot = Snapshot::new(config.clone(), extra, 1);
    if let Some(pool) = snapshot.pools.get(ENGINE_UPSTREAM) {
        for ep in &pool.endpoints {
            ep.set_healthy(false);
        }
    }
    let gw = Gateway::new(snapshot, Some(config_path.to_path_buf()));
    if let Some(settings) = &config.cache {
        let cache = crate::cache::Cache::start(settings.clone())
            .map_err(|e| StartError::Cache(format!("{e:#}")))?;
        cache.set_entries(&gw.metrics);
        let _ = gw.cache.set(cache);
    }

    let conf = ServerConf {
        threads: config.threads,
        // A cache with snapshots writes its last one when shutdown begins: give that task a
        // second before the runtimes stop (they drop tasks that have not run yet).
        grace_period_seconds: Some(u64::from(
            config
                .cache
                .as_ref()
                .is_some_and(|c| c.snapshot_dir.is_some()),
        )),
        graceful_shutdown_timeout_seconds: Some(5),
        ..ServerConf::default()
    };
    let mut server = Server::new_with_opt_and_conf(None, conf);
    server.bootstrap();

    let mut proxy =
        pingora::proxy::http_proxy_service(&server.configuration, GatewayProxy::new(gw.clone()));
    proxy.add_tcp(&config.listen.to_string());
    server.add_service(proxy);
    server.add_service(background_service(
        "admin",
        AdminService::new(gw.clone(), admin_listener),
    ));
    server.add_service(background_service(
        "health checks",
        HealthChecker { gw: gw.clone() },
    ));
    if gw.cache.get().is_some() {
        server.add_service(background_service(
            "reasoning cache",
            CacheMaintenance { gw: gw.clone() },
        ));
    }
    server.add_service(background_service(
        "async jobs",
        JobsService { gw: gw.clone() },
    ));
    server.add_service(background_service(
        "config reload",
        crate::reload::ReloadService::new(gw.clone(), config_path.to_path_buf()),
    ));

    match (&config.engine, engine_listener) {
        (Some(engine), Some(listener)) => {
            add_engine(&mut server, gw.clone(), engine.clone(), listener)?
        }
        _ => gw.set_ready(true),
    }
    tracing::info!(listen = %config.listen, admin = %config.admin_listen, routes = config.routes.len(), "Gateway starting.");
    server.run_forever()
}

#[cfg(feature = "engine")]
fn add_engine(
    server: &mut Server,
    gw: Arc<Gateway>,
    engine: config::EngineConfig,
    listener: std::net::TcpListener,
) -> Result<(), StartError> {
    // Missing or non-GGUF files fail start-up now, with the path, not after Pingora starts.
    reasoning_engine::preflight(&crate::engine::options(&engine))
        .map_err(|e| StartError::Engine(e.to_string()))?;
    server.add_service(background_service(
        "engine",
        crate::engine::EngineService::new(gw, engine, listener),
    ));
    Ok(())
}

#[cfg(not(feature = "engine"))]
fn add_engine(
    _: &mut Server,
    _: Arc<Gateway>,
    _: config::EngineConfig,
    _: std::net::TcpListener,
) -> Result<(), StartError> {
    Err(StartError::NoEngine)
}

/// Validates a config file; returns every error.
pub fn check(config_path: &Path) -> Result<Config, config::ConfigError> {
    config::load(config_path)
}

/// Runs active health checks for every pool of the current snapshot, each at its interval.
struct HealthChecker {
    gw: Arc<Gateway>,
}

#[async_trait]
impl BackgroundService for HealthChecker {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        let mut last: HashMap<String, Instant> = HashMap::new();
        loop {
            let snap = self.gw.snapshot.load_full();
            for (name, pool) in &snap.pools {
                let due = last
                    .get(name)
                    .is_none_or(|t| t.elapsed() >= pool.config.health_check.interval);
                if due {
                    upstream::check_pool(pool).await;
                    last.insert(name.clone(), Instant::now());
                }
            }
            let tick = upstream::tick(&snap.pools).min(Duration::from_secs(1));
            tokio::select! {
                _ = shutdown.changed() => return,
                _ = tokio::time::sleep(tick) => {}
            }
        }
    }
}

/// Expires entries, rebuilds the index when due, writes snapshots (and a last one at shutdown).
struct CacheMaintenance {
    gw: Arc<Gateway>,
}

impl CacheMaintenance {
    fn snapshot(&self, force: bool) {
        let Some(cache) = self.gw.cache.get() else {
            return;
        };
        match cache.write_snapshot(force) {
            Ok(true) => tracing::debug!("Reasoning cache snapshot written."),
            Ok(false) => {}
            Err(e) => tracing::error!(error = %e, "Reasoning cache snapshot failed."),
        }
    }
}

#[async_trait]
impl BackgroundService for CacheMaintenance {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        let Some(cache) = self.gw.cache.get().cloned() else {
            return;
        };
        let mut last_snapshot = Instant::now();
        loop {
            tokio::select! {
                _ = shutdown.changed() => {
                    self.snapshot(false);
                    return;
                }
                _ = tokio::time::sleep(Duration::from_secs(1)) => {}
            }
            let (c, gw) = (cache.clone(), self.gw.clone());
            let _ = tokio::task::spawn_blocking(move || c.maintain(&gw.metrics)).await;
            if last_snapshot.elapsed() >= cache.settings.snapshot_interval {
                self.snapshot(false);
                last_snapshot = Instant::now();
            }
        }
    }
}

/// Resumes stored async jobs once a runtime runs, then expires finished ones.
struct JobsService {
    gw: Arc<Gateway>,
}

#[async_trait]
impl BackgroundService for JobsService {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        self.gw
            .jobs
            .resume(&self.gw, tokio::runtime::Handle::current());
        loop {
            tokio::select! {
                _ = shutdown.changed() => return,
                _ = tokio::time::sleep(Duration::from_secs(1)) => {}
            }
            self.gw.jobs.expire();
        }
    }
}
