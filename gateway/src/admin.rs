//! The admin listener. Its endpoints (tokens and refusals: [`guard`]; reference:
//! `docs/operations.md`):
//!
//! - `GET /metrics`: every metric, Prometheus text format, or OpenMetrics with exemplars when
//!   the scraper's `Accept` asks for it (token only with `admin_public_metrics: false`).
//! - `GET /healthz`: 200 while the process runs (never a token).
//! - `GET /readyz`: 200 once the engine and stored jobs are loaded, 503 before and while
//!   draining (never a token).
//! - `GET /admin/config`: generation, routes, pools with endpoint health, admission state.
//! - `POST /admin/reload`: reloads the config file; 400 with every error, 409 without a file.
//! - `GET /admin/cache`: the reasoning cache's statistics.
//! - `POST /admin/cache/purge`: removes entries by `route`, `tenant` or `api_key` (none: all),
//!   in fleet mode from Redis and every replica too.
//! - `POST /admin/cache/snapshot`: writes a cache snapshot now.
//! - `GET /admin/canary`: each variant's window, rollback state and promotion step (the
//!   fleet's, in fleet mode: `view` says whose).
//! - `POST /admin/canary/enable?route=R&variant=V`: re-enables a rolled-back variant (on every
//!   replica, in fleet mode).
//!
//! Every request passes [`guard::vet`] first; handlers that write (reload, purge, snapshot,
//! canary enable) run on the blocking pool so the probes and the scrape never wait behind them.

pub mod guard;

use std::convert::Infallible;
use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use pingora::server::ShutdownWatch;
use pingora::services::background::BackgroundService;
use serde_json::json;

use crate::metrics::labels::ReloadTrigger;
use crate::openai::{ApiError, ErrorCode};
use crate::state::Gateway;
use guard::{Endpoint, Policy, Reason, Refusal};

/// Serves the admin API on its own listener.
pub struct AdminService {
    gw: Arc<Gateway>,
    listener: std::sync::Mutex<Option<std::net::TcpListener>>,
}

impl AdminService {
    /// Wraps an already bound listener (bound at start-up so address errors surface early).
    pub fn new(gw: Arc<Gateway>, listener: std::net::TcpListener) -> Self {
        AdminService {
            gw,
            listener: std::sync::Mutex::new(Some(listener)),
        }
    }
}

fn response(status: u16, content_type: &str, body: impl Into<Bytes>) -> Response<Full<Bytes>> {
    Response::builder()
        .status(status)
        .header("content-type", content_type)
        .body(Full::new(body.into()))
        .unwrap_or_default()
}

/// The answer to a refused request: OpenAI-shaped, `WWW-Authenticate` on a 401, `Allow` on
/// a 405.
pub fn refusal_response(refusal: &Refusal) -> Response<Full<Bytes>> {
    let err = ApiError::new(refusal.code, refusal.message);
    let mut builder = Response::builder()
        .status(refusal.status)
        .header("content-type", "application/json");
    if refusal.reason == Reason::Unauthorized {
        builder = builder.header(
            "www-authenticate",
            "Bearer realm=\"reasoning-gateway admin\"",
        );
    }
    if let Some(allow) = refusal.allow {
        builder = builder.header("allow", allow);
    }
    builder
        .body(Full::new(err.body().into()))
        .unwrap_or_default()
}

/// Vets one request, then answers it: writers on the blocking pool, the rest in place.
pub async fn serve<B>(gw: Arc<Gateway>, req: &Request<B>) -> Response<Full<Bytes>> {
    let vetted = {
        let snap = gw.snapshot.load();
        let policy = Policy {
            token: snap.config.admin_token.as_ref(),
            public_metrics: snap.config.admin_public_metrics,
        };
        guard::vet(req.method(), req.uri().path(), req.headers(), &policy)
    };
    let endpoint = match vetted {
        Ok(e) => e,
        Err(refusal) => {
            gw.metrics.admin_refusals_total.with(&refusal.reason).inc();
            if refusal.reason != Reason::NotFound {
                tracing::warn!(path = %req.uri().path(), method = %req.method(), reason = refusal.reason.label(), "An admin request was refused.");
            }
            return refusal_response(&refusal);
        }
    };
    let query = req.uri().query().map(str::to_owned);
    let accept = req.headers().get("accept").and_then(|v| v.to_str().ok());
    if endpoint == Endpoint::Metrics && crate::metrics::openmetrics::wanted(accept) {
        // A scraper that reads exemplars (Prometheus with exemplar storage) asks for these.
        let body = gw.metrics.render_openmetrics();
        return response(200, crate::metrics::openmetrics::CONTENT_TYPE, body);
    }
    if !endpoint.mutating() {
        return handle(&gw, endpoint, query.as_deref());
    }
    // A reload reads files (a config map, secrets) and a snapshot writes the whole cache:
    // either may take long, and the admin runtime has one thread.
    match tokio::task::spawn_blocking(move || handle(&gw, endpoint, query.as_deref())).await {
        Ok(resp) => resp,
        Err(e) => {
            tracing::error!(error = %e, "An admin handler failed.");
            let err = ApiError::new(ErrorCode::InternalError, "The admin handler failed.");
            response(500, "application/json", err.body())
        }
    }
}

/// Answers one admin request already vetted by [`guard::vet`].
pub fn handle(gw: &Gateway, endpoint: Endpoint, query: Option<&str>) -> Response<Full<Bytes>> {
    let param = |name: &str| {
        query?.split('&').find_map(|kv| {
            kv.split_once('=')
                .filter(|(k, _)| *k == name)
                .map(|(_, v)| v.to_string())
        })
    };
    let json_response = |status: u16, v: serde_json::Value| {
        response(
            status,
            "application/json",
            serde_json::to_vec(&v).unwrap_or_default(),
        )
    };
    match endpoint {
        Endpoint::Cache | Endpoint::CachePurge | Endpoint::CacheSnapshot
            if gw.cache.get().is_none() =>
        {
            json_response(
                404,
                json!({"error": "no route enables the reasoning cache"}),
            )
        }
        Endpoint::Cache => {
            json_response(200, gw.cache.get().map(|c| c.stats()).unwrap_or_default())
        }
        Endpoint::CachePurge => {
            let cache = gw.cache.get().expect("checked above");
            // `tenant` is a tenant id as `GET /admin/cache` and the access log show it;
            // `api_key` is hashed the way requests are.
            let tenant = param("tenant").or_else(|| {
                param("api_key")
                    .map(|k| reasoning_cache::key::tenant_id(Some(&format!("Bearer {k}"))))
            });
            let route = param("route");
            let removed = cache.purge(route.as_deref(), tenant.as_deref());
            tracing::info!(route = ?route, tenant = ?tenant, removed, "Reasoning cache purged by an operator.");
            let mut body = json!({"removed": removed, "route": route, "tenant": tenant});
            let mut status = 200;
            if gw.shared.get().is_some() {
                // Every replica purges too, on the stream's purge event (within a second).
                body["fleet"] = match crate::shared::cache::purge(
                    gw,
                    route.as_deref(),
                    tenant.as_deref(),
                ) {
                    Ok(n) => json!({"removed": n}),
                    Err(e) => {
                        tracing::warn!(error = %e, "The purge did not reach the fleet: other replicas keep these entries.");
                        // Not done: the operator must know to retry once Redis answers.
                        status = 503;
                        body["error"] = json!(format!(
                            "the purge may not have reached the fleet ({e}): this replica's entries are gone, the other replicas and Redis may keep theirs; retry when shared_state_up is 1"
                        ));
                        json!({"error": e.to_string()})
                    }
                };
            }
            json_response(status, body)
        }
        Endpoint::CacheSnapshot => {
            let cache = gw.cache.get().expect("checked above");
            match cache.write_snapshot(true) {
                Ok(written) => json_response(200, json!({"written": written})),
                Err(e) => json_response(500, json!({"error": format!("snapshot failed: {e}")})),
            }
        }
        Endpoint::Canary => {
            let report = gw.canary.report(&gw.snapshot.load().config.routes);
            response(
                200,
                "application/json",
                serde_json::to_vec(&report).unwrap_or_default(),
            )
        }
        Endpoint::CanaryEnable => match (param("route"), param("variant")) {
            (Some(r), Some(v)) => {
                // The fleet first: cleared locally before, the next sync would mirror the
                // fleet's verdict right back.
                let fleet = crate::shared::canary::clear_blocking(gw, &r, &v);
                let local = gw.canary.enable(&r, &v);
                let was = local || matches!(fleet, Some(Ok(true)));
                let view = match &fleet {
                    None => "local",
                    Some(Ok(_)) => "fleet",
                    Some(Err(e)) => {
                        tracing::warn!(route = %r, variant = %v, error = %e, "Canary variant re-enabled on this replica only: Redis could not be told, and the fleet's verdict applies again once it answers.");
                        "degraded"
                    }
                };
                if was {
                    tracing::info!(route = %r, variant = %v, view, "Canary variant re-enabled by an operator.");
                    let snap = gw.snapshot.load();
                    let live = snap.config.routes.iter().find(|c| c.name == r);
                    if let Some(canary) = live.and_then(|c| c.canary.as_ref()) {
                        gw.canary.publish(&gw.metrics, &r, canary);
                    }
                }
                let body = json!({"route": r, "variant": v, "re_enabled": was, "view": view});
                response(
                    200,
                    "application/json",
                    serde_json::to_vec(&body).unwrap_or_default(),
                )
            }
            _ => response(
                400,
                "application/json",
                r#"{"error":"route and variant query parameters are required"}"#,
            ),
        },
        Endpoint::Metrics => response(200, "text/plain; version=0.0.4", gw.metrics.render()),
        Endpoint::Healthz => response(200, "text/plain", "ok\n"),
        Endpoint::Readyz => {
            if gw.is_ready() {
                response(200, "text/plain", "ready\n")
            } else {
                response(503, "text/plain", "not ready\n")
            }
        }
        Endpoint::Reload => {
            let Some(path) = &gw.config_path else {
                return response(
                    409,
                    "application/json",
                    r#"{"error":"no config file to reload"}"#,
                );
            };
            match crate::reload::reload(gw, path, ReloadTrigger::Admin) {
                Ok(r) => {
                    let body = json!({"reloaded": true, "generation": r.generation, "restart_required": r.restart_required});
                    response(
                        200,
                        "application/json",
                        serde_json::to_vec(&body).unwrap_or_default(),
                    )
                }
                Err(errors) => {
                    let body = json!({"reloaded": false, "errors": errors});
                    response(
                        400,
                        "application/json",
                        serde_json::to_vec(&body).unwrap_or_default(),
                    )
                }
            }
        }
        Endpoint::Config => {
            let snap = gw.snapshot.load();
            let pools: serde_json::Map<_, _> = snap
                .pools
                .iter()
                .map(|(name, p)| {
                    let eps: Vec<_> = p
                        .endpoints
                        .iter()
                        .map(|e| json!({"address": e.addr.to_string(), "endpoint": e.name, "tls": p.tls.is_some(), "healthy": e.is_healthy(), "inflight": e.inflight()}))
                        .collect();
                    (name.clone(), json!(eps))
                })
                .collect();
            let routes: Vec<_> = snap
                .config
                .routes
                .iter()
                .map(|r| json!({"name": r.name, "model": r.model, "upstream": r.upstream, "upstream_model": r.upstream_model}))
                .collect();
            let admission: serde_json::Map<_, _> = snap
                .pools
                .iter()
                .filter_map(|(name, p)| {
                    let a = p.admission.as_ref()?;
                    Some((
                        name.clone(),
                        json!({"max_inflight": a.config.max_inflight, "in_flight": a.in_flight(),
                        "max_queue": a.config.max_queue, "waiting": a.waiting(),
                        "queue_timeout_seconds": a.config.queue_timeout.as_secs_f64()}),
                    ))
                })
                .collect();
            let body = json!({"generation": snap.generation, "routes": routes, "upstreams": pools, "admission": admission});
            response(
                200,
                "application/json",
                serde_json::to_vec(&body).unwrap_or_default(),
            )
        }
    }
}

#[async_trait]
impl BackgroundService for AdminService {
    /// Serves until the process exits: while a shutdown drains requests in flight, `/readyz`
    /// answers 503 and `/metrics` stays scrapeable.
    async fn start(&self, _shutdown: ShutdownWatch) {
        let Some(std_listener) = self.listener.lock().ok().and_then(|mut l| l.take()) else {
            return;
        };
        // Every refusal reason is exported from the start, at zero.
        for reason in Reason::ALL {
            self.gw.metrics.admin_refusals_total.with(&reason);
        }
        let listener = match std_listener
            .set_nonblocking(true)
            .and_then(|_| tokio::net::TcpListener::from_std(std_listener))
        {
            Ok(l) => l,
            Err(e) => {
                tracing::error!(error = %e, "The admin listener could not be started.");
                return;
            }
        };
        loop {
            tokio::select! {
                accepted = listener.accept() => {
                    let Ok((stream, _)) = accepted else { continue };
                    let gw = self.gw.clone();
                    tokio::spawn(async move {
                        let svc = hyper::service::service_fn(move |req: Request<Incoming>| {
                            let gw = gw.clone();
                            async move { Ok::<_, Infallible>(serve(gw, &req).await) }
                        });
                        let _ = hyper::server::conn::http1::Builder::new()
                            .serve_connection(TokioIo::new(stream), svc)
                            .await;
                    });
                }
            }
        }
    }
}
