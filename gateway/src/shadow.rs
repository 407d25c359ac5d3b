//! Shadow traffic: a copy of a request goes to the route's shadow variant; the answer is read,
//! measured and verified, never served. It runs in its own task with its own timeouts, so it
//! cannot slow or fail the served request. Copies are skipped (counted) past the gateway-wide
//! bound of copies in flight, and when the shadow pool has `max_inflight` and no slot is free
//! now: a copy holds one of the pool's slots while it runs and never waits in its line.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;

use crate::canary::Outcome;
use crate::config::RouteConfig;
use crate::metrics::labels::{RouteVariant, Shadow, ShadowFailedCheck, ShadowResult};
use crate::openai::Endpoint;
use crate::reasoning::ResponseRewriter;
use crate::state::Gateway;
use crate::upstream::Pool;

/// Shadow requests in flight at most; more are skipped (counted).
const MAX_INFLIGHT: usize = 64;
static INFLIGHT: AtomicUsize = AtomicUsize::new(0);

/// One copy to send.
pub struct ShadowRequest {
    /// Route it belongs to.
    pub route: Arc<RouteConfig>,
    /// Shadow variant name.
    pub variant: String,
    /// Its pool.
    pub pool: Arc<Pool>,
    /// Body to send.
    pub body: Bytes,
    /// API endpoint.
    pub endpoint: Endpoint,
    /// Request path.
    pub path: String,
    /// `Authorization` to pass on (the shadow backend may need it).
    pub authorization: Option<String>,
}

/// Sends the copy in the background.
pub fn spawn(gw: Arc<Gateway>, req: ShadowRequest) {
    let labels = [req.route.name.clone(), req.variant.clone()];
    let skipped = || {
        gw.metrics
            .shadow_requests_total
            .with(&Shadow {
                route: &labels[0],
                variant: &labels[1],
                result: ShadowResult::Skipped,
            })
            .inc();
    };
    // The pool's own bound first: a backend sized for `max_inflight` requests gets no more
    // because some of them are copies.
    let slot = match &req.pool.admission {
        Some(admission) => match admission.try_admit() {
            Some(slot) => Some(slot),
            None => return skipped(),
        },
        None => None,
    };
    if INFLIGHT.fetch_add(1, Ordering::AcqRel) >= MAX_INFLIGHT {
        INFLIGHT.fetch_sub(1, Ordering::AcqRel);
        return skipped();
    }
    tokio::spawn(async move {
        let start = Instant::now();
        let timeout = req.pool.config.read_timeout;
        let result = tokio::time::timeout(timeout, send(&req))
            .await
            .unwrap_or(Err("timeout"));
        drop(slot);
        INFLIGHT.fetch_sub(1, Ordering::AcqRel);
        let elapsed = start.elapsed();
        let m = &gw.metrics;
        let (ok, report) = match result {
            Ok((status, report)) => (status < 500, report),
            Err(kind) => {
                tracing::debug!(route = %labels[0], variant = %labels[1], kind, "The shadow request failed.");
                (false, None)
            }
        };
        let (route, variant) = (labels[0].as_str(), labels[1].as_str());
        let result = if ok {
            ShadowResult::Ok
        } else {
            ShadowResult::Error
        };
        m.shadow_requests_total
            .with(&Shadow {
                route,
                variant,
                result,
            })
            .inc();
        m.shadow_request_duration_seconds
            .with(&RouteVariant { route, variant })
            .observe(elapsed.as_secs_f64());
        let mut verification_failed = false;
        if let Some(r) = &report {
            for check in r.failed() {
                verification_failed = true;
                m.shadow_verification_failures_total
                    .with(&ShadowFailedCheck {
                        route,
                        variant,
                        check,
                    })
                    .inc();
            }
        }
        if let Some(canary) = &req.route.canary {
            let outcome = Outcome {
                at: Instant::now(),
                ok,
                latency: elapsed,
                verification_failed,
                step_timeout: false,
            };
            gw.canary.record(&labels[0], canary, &labels[1], outcome);
        }
    });
}

/// Sends the copy and reads the whole answer through the route's parser.
async fn send(
    req: &ShadowRequest,
) -> Result<(u16, Option<crate::reasoning::Report>), &'static str> {
    let (_, guard) = req.pool.pick(&[]).ok_or("no_healthy_endpoint")?;
    let ep = guard.endpoint.clone();
    let stream = tokio::time::timeout(
        req.pool.config.connect_timeout,
        crate::upstream::connect::open(&req.pool, &ep),
    )
    .await
    .map_err(|_| "connect")?
    .map_err(|_| "connect")?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|_| "protocol")?;
    tokio::spawn(conn);
    let mut builder = hyper::Request::post(req.path.as_str())
        .header("host", ep.host.as_str())
        .header("content-type", "application/json")
        .header("x-gateway-shadow", "true");
    if let Some(a) = req
        .pool
        .authorization
        .as_ref()
        .map(|a| &a.0)
        .or(req.authorization.as_ref())
    {
        builder = builder.header("authorization", a.as_str());
    }
    let request = builder
        .body(Full::new(req.body.clone()))
        .map_err(|_| "internal")?;
    let resp = sender
        .send_request(request)
        .await
        .map_err(|_| "disconnect")?;
    let status = resp.status().as_u16();
    let content_type = resp
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string();
    let mut rw =
        ResponseRewriter::for_response(&req.route.reasoning, req.endpoint, status, &content_type);
    let mut body = resp.into_body();
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|_| "disconnect")?;
        if let (Some(rw), Some(data)) = (rw.as_mut(), frame.data_ref()) {
            rw.feed(data);
        }
    }
    Ok((
        status,
        rw.map(|mut rw| {
            rw.finish();
            rw.report()
        }),
    ))
}
