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
    /// The `shared` section could not be used (a URL the client refuses).
    #[error("shared: {0}")]
    Shared(String),
    /// The OTLP trace exporter could not start.
    #[error("telemetry.otlp: {0}")]
    Telemetry(#[from] crate::telemetry::otlp::StartError),
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
fn engine_pool(addr: SocketAddr, admission: Option<config::AdmissionConfig>) -> UpstreamConfig {
    UpstreamConfig {
        admission,
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
        tls: None,
        api_key: None,
        api: vec![crate::api::Api::Chat],
        // The engine continues a final assistant message itself (budget forcing).
        continuation: config::Continuation::ChatPrefix,
    }
}

/// Makes Ctrl-C (SIGINT) stop the gateway the way SIGTERM does: no new connections, the
/// requests in flight finish (up to `drain_timeout`), the cache's last snapshot is written. A
/// second Ctrl-C stops at once.
///
/// Pingora treats SIGINT as its fast shutdown, which skips all of that: a `make run` stopped with
/// Ctrl-C would lose every cache entry since the last periodic snapshot. SIGINT is blocked in every
/// thread (call this first in `main`, before any thread starts, so they all inherit the mask) and
/// a dedicated thread takes it with `sigwait`, so Pingora's own SIGINT handler never runs. The
/// gateway starts no child processes, which would inherit the blocked signal.
pub fn ctrl_c_stops_gracefully() {
    use nix::sys::signal::{kill, pthread_sigmask, SigSet, SigmaskHow, Signal};
    let mut set = SigSet::empty();
    set.add(Signal::SIGINT);
    // Changes only this thread's mask (and that of the threads it starts afterwards).
    if pthread_sigmask(SigmaskHow::SIG_BLOCK, Some(&set), None).is_err() {
        return;
    }
    let waiter = move || {
        let mut presses = 0u32;
        loop {
            // Waits for a signal of `set`, which every thread blocks.
            if set.wait().is_err() {
                continue;
            }
            presses += 1;
            if presses == 1 {
                tracing::info!("Ctrl-C: stopping as on SIGTERM (requests in flight finish, the cache is saved); press Ctrl-C again to stop at once.");
                // SIGTERM to this process, which Pingora handles.
                let _ = kill(nix::unistd::Pid::this(), Signal::SIGTERM);
            } else {
                tracing::warn!("Second Ctrl-C: stopping at once.");
                std::process::exit(130);
            }
        }
    };
    if let Err(e) = std::thread::Builder::new()
        .name("ctrl-c".into())
        .spawn(waiter)
    {
        // Without the waiter a blocked SIGINT would be ignored: unblock it, keep Pingora's way.
        tracing::warn!(error = %e, "Ctrl-C handler not started; Ctrl-C stops without draining.");
        let _ = pthread_sigmask(SigmaskHow::SIG_UNBLOCK, Some(&set), None);
    }
}

/// Runs the gateway until it is told to stop. Never returns on success.
pub fn run(config_path: &Path) -> Result<(), StartError> {
    let config = config::load(config_path)?;
    for notice in config.notices() {
        tracing::warn!(notice = %notice, "The config asks for something it cannot have here.");
    }
    crate::fdlimit::raise_and_report();
    // Bind-test the proxy address now: Pingora binds later and would only panic.
    drop(bind("listen", config.listen)?);
    let admin_listener = bind("admin_listen", config.admin_listen)?;
    if config.admin_token.is_none() {
        // Validation refuses this off loopback; on loopback every local process still can.
        tracing::warn!(admin = %config.admin_listen, "The admin listener has no token: any process on this host can purge the cache, reload and steer canaries. Set admin_token_env or admin_token_file.");
    }

    let mut extra = Vec::new();
    let engine_listener = match &config.engine {
        Some(e) => {
            let l = bind("engine.listen", e.listen)?;
            let addr = l.local_addr().map_err(|source| StartError::Bind {
                what: "engine.listen",
                addr: e.listen,
                source,
            })?;
            extra.push(engine_pool(addr, e.admission));
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
    gw.export_config_series(&gw.snapshot.load());
    if let Some(settings) = &config.cache {
        let cache = reasoning_cache::Cache::start(settings.cache.clone(), gw.metrics.cache.clone())
            .map_err(|e| StartError::Cache(e.to_string()))?;
        cache.set_entries();
        let _ = gw.cache.set(cache);
    }
    if let Some(shared) = &config.shared {
        let started = crate::shared::Shared::start(shared.clone(), &gw.metrics)
            .map_err(|e| StartError::Shared(e.to_string()))?;
        tracing::info!(redis = %shared.display_url(), key_prefix = %shared.key_prefix, replica = %started.replica, "Fleet mode: sharing state through Redis.");
        crate::shared::canary::start(&gw, &started);
        let _ = gw.shared.set(started);
        crate::shared::cache::start(&gw);
    }
    if let Some(otlp) = &config.telemetry.otlp {
        let traces = crate::telemetry::otlp::Traces::start(otlp, gw.metrics.otlp_counters(otlp))?;
        let _ = gw.traces.set(traces);
        tracing::info!(endpoint = %otlp.endpoint, sample_ratio = otlp.sample_ratio, "Exporting traces over OTLP.");
    }

    let conf = ServerConf {
        threads: config.threads,
        // On SIGTERM Pingora stops accepting and then sleeps this long before it stops its
        // runtimes (and with them every request still running). The `Drain` service below
        // exits the process as soon as the requests in flight are done; this is the backstop.
        grace_period_seconds: Some(config.drain_timeout.as_secs() + DRAIN_BACKSTOP_SECONDS),
        graceful_shutdown_timeout_seconds: Some(5),
        ..ServerConf::default()
    };
    let mut server = Server::new_with_opt_and_conf(None, conf);
    server.bootstrap();

    // The proxy behind the listener's connection guard (max_connections, header deadline).
    let app = pingora::proxy::http_proxy(&server.configuration, GatewayProxy::new(gw.clone()));
    let limits = crate::listener::Limits {
        max_connections: config.max_connections,
        header_timeout: config.client_header_timeout,
    };
    let mut proxy = pingora::services::listening::Service::new(
        "reasoning gateway".to_string(),
        crate::listener::GuardedApp::new(app, limits, gw.clone()),
    );
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
        "drain",
        Drain {
            gw: gw.clone(),
            timeout: config.drain_timeout,
        },
    ));
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
            add_engine(&mut server, gw.clone(), engine.clone(), listener)?;
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

/// Seconds Pingora waits beyond `drain_timeout` before it stops the runtimes itself.
const DRAIN_BACKSTOP_SECONDS: u64 = 5;

/// Writes the cache's snapshot if it changed (logging, never failing).
fn write_cache_snapshot(gw: &Gateway) {
    let Some(cache) = gw.cache.get() else {
        return;
    };
    match cache.write_snapshot(false) {
        Ok(true) => tracing::debug!("Reasoning cache snapshot written."),
        Ok(false) => {}
        Err(e) => tracing::error!(error = %e, "Reasoning cache snapshot failed."),
    }
}

/// On SIGTERM (Pingora has stopped accepting connections): marks the gateway unready, waits
/// up to `timeout` for the clients' requests in flight (reasoning streams run for minutes;
/// cutting them at every deploy loses the work), writes the cache's last snapshot and exits.
struct Drain {
    gw: Arc<Gateway>,
    timeout: Duration,
}

#[async_trait]
impl BackgroundService for Drain {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        if shutdown.changed().await.is_err() {
            return;
        }
        self.gw.set_ready(false);
        // Async jobs' own requests are not waited for: a job cut here is run again at the
        // next start (each running job holds at most one request).
        let inflight = || {
            let jobs = self
                .gw
                .jobs
                .counts()
                .get(&crate::jobs::Status::Running)
                .copied()
                .unwrap_or(0);
            (self.gw.metrics.inflight_requests.get() - jobs as i64).max(0)
        };
        let deadline = Instant::now() + self.timeout;
        if inflight() > 0 {
            tracing::info!(in_flight = inflight(), drain_timeout = ?self.timeout, "Shutting down: no new connections; waiting for the requests in flight.");
        }
        while inflight() > 0 && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        if inflight() > 0 {
            tracing::warn!(in_flight = inflight(), drain_timeout = ?self.timeout, "Requests still in flight after drain_timeout are cut.");
        }
        let gw = self.gw.clone();
        let _ = tokio::task::spawn_blocking(move || write_cache_snapshot(&gw)).await;
        tracing::info!("Gateway stopped.");
        std::process::exit(0);
    }
}

/// Expires entries, rebuilds the index when due, writes snapshots (the last one is `Drain`'s).
struct CacheMaintenance {
    gw: Arc<Gateway>,
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
                // `Drain` writes the last snapshot, once the requests in flight are stored.
                _ = shutdown.changed() => return,
                _ = tokio::time::sleep(Duration::from_secs(1)) => {}
            }
            let c = cache.clone();
            let _ = tokio::task::spawn_blocking(move || c.maintain()).await;
            if last_snapshot.elapsed() >= cache.settings.snapshot_interval {
                write_cache_snapshot(&self.gw);
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
