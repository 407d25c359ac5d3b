//! Runs one job: the chat request, streamed, through the gateway's own listener.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use serde_json::{json, Value};

use super::fleet::{Sync, Synced};
use super::{keep_tail, Checkpoint, Jobs, Status, MAX_CHECKPOINTS, MAX_PROGRESS_BYTES};
use crate::config::OutputField;
use crate::metrics::labels::JobResult;
use crate::outcome::Outcome;
use crate::reasoning::aggregate::Aggregator;
use crate::reasoning::sse::SseDecoder;
use crate::util::now_unix;

/// How long a job waits for the gateway's listener at start-up.
const CONNECT_PATIENCE: Duration = Duration::from_secs(30);

/// How long after its submission a job refused by a full upstream pool (`max_inflight`) keeps
/// asking again, a second after each refusal; past that the refusal is its failure.
const ADMISSION_PATIENCE: Duration = Duration::from_secs(3600);

/// Runs a queued job to its end (or until cancelled: the task is aborted and the connection
/// dropped, which the gateway passes on to the upstream).
pub async fn run(jobs: Arc<Jobs>, id: String) {
    let Ok(_slot) = jobs.slots.clone().acquire_owned().await else {
        return;
    };
    let Some(job) = jobs.snapshot(&id) else {
        return;
    };
    if job.status.is_terminal() {
        return;
    }
    let still_wanted = jobs.update(&id, true, |j| {
        j.status = Status::Running;
        j.attempts += 1;
        j.reasoning.clear();
        j.answer.clear();
        j.steps = 0;
        j.checkpoints.clear();
    });
    // In fleet mode the other replicas see it running (and a lost lease stops it here).
    if !still_wanted || jobs.sync(&id, Sync::Now).await == Synced::Gone {
        return;
    }
    let outcome = execute(&jobs, &id, &job).await;
    // The connection to the gateway's own listener broke (the gateway is stopping, most likely):
    // the job goes back in the queue, is run again after a pause, and if the process ends first
    // it is found queued at the next start.
    if let Err(e) = &outcome {
        // The pool was full: the job never reached the upstream. It goes back in line (not
        // counted as an attempt) and asks again after the `retry-after` second.
        let refused = e["status"] == 429
            && e["error"]["code"]
                .as_str()
                .is_some_and(|c| c.starts_with("upstream_queue_"));
        if refused && now_unix() < job.created.saturating_add(ADMISSION_PATIENCE.as_secs()) {
            tracing::info!(job = %id, "Async job's upstream is at its max_inflight; it asks again shortly.");
            let requeued = jobs.update(&id, true, |j| {
                j.status = Status::Queued;
                j.attempts = j.attempts.saturating_sub(1);
            });
            if requeued && jobs.sync(&id, Sync::Now).await != Synced::Gone {
                drop(_slot);
                tokio::time::sleep(Duration::from_secs(1)).await;
                jobs.start(id);
            }
            return;
        }
        let transport = matches!(
            e["code"].as_str(),
            Some("gateway_error" | "gateway_unreachable" | "incomplete")
        );
        let attempts = jobs.snapshot(&id).map_or(u32::MAX, |j| j.attempts);
        if transport && attempts < super::MAX_ATTEMPTS {
            tracing::warn!(job = %id, error = %e, "Async job lost its connection to the gateway; queued again.");
            if jobs.update(&id, true, |j| j.status = Status::Queued)
                && jobs.sync(&id, Sync::Now).await != Synced::Gone
            {
                drop(_slot);
                tokio::time::sleep(Duration::from_secs(1)).await;
                jobs.start(id);
            }
            return;
        }
    }
    let finished = jobs.finish(
        &id,
        outcome.map_err(|err| {
            let ended = failed_outcome(&err);
            (err, ended)
        }),
    );
    if finished {
        if let Some(gw) = jobs.gateway() {
            let status = jobs.snapshot(&id).map(|j| j.status);
            let result = match status {
                Some(Status::Succeeded) => JobResult::Succeeded,
                _ => JobResult::Failed,
            };
            gw.metrics().async_jobs_total.with(&result).inc();
        }
        drop(_slot);
        jobs.conclude(id).await;
    }
}

async fn connect(addr: std::net::SocketAddr) -> std::io::Result<tokio::net::TcpStream> {
    let started = Instant::now();
    loop {
        match tokio::net::TcpStream::connect(addr).await {
            Ok(s) => return Ok(s),
            Err(e) if started.elapsed() < CONNECT_PATIENCE => {
                tracing::debug!(error = %e, "Async job waits for the gateway's listener.");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(e) => return Err(e),
        }
    }
}

fn failure(code: &str, message: impl Into<String>) -> Value {
    json!({"code": code, "message": message.into()})
}

/// The outcome of a failed run, from what the runner saw: the gateway's error (its status and
/// code, the same the gateway's own `outcome` was decided from) or the runner's own failure.
fn failed_outcome(err: &Value) -> Outcome {
    if err["code"] == "cancelled" {
        return Outcome::ClientCancelled;
    }
    let Some(code) = err["error"]["code"].as_str() else {
        // The connection to the gateway broke or its answer was cut: the work did not finish.
        return Outcome::UpstreamError;
    };
    if let Some(o) = Outcome::of_error_code(code) {
        return o;
    }
    match err["status"].as_u64() {
        Some(400..=499) => Outcome::Rejected,
        _ => Outcome::UpstreamError,
    }
}

/// Runs the request; the completion and how it ended (`ok`, or `cache_hit` when the gateway
/// replayed it).
async fn execute(jobs: &Arc<Jobs>, id: &str, job: &super::Job) -> Result<(Value, Outcome), Value> {
    let gw = jobs
        .gateway()
        .ok_or_else(|| failure("internal", "the gateway is shutting down"))?;
    let addr = super::self_addr(&*gw);
    let mut body = job.request.clone();
    if let Some(o) = body.as_object_mut() {
        o.insert("stream".into(), Value::Bool(true));
        o.insert("stream_options".into(), json!({"include_usage": true}));
    }
    let stream = connect(addr)
        .await
        .map_err(|e| failure("gateway_unreachable", format!("cannot reach {addr}: {e}")))?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| failure("gateway_unreachable", e.to_string()))?;
    tokio::spawn(conn);
    let every = jobs
        .settings
        .checkpoint_every
        .map_or("true".to_string(), |n| n.to_string());
    let mut builder = hyper::Request::post("/v1/chat/completions")
        .header("host", addr.to_string())
        .header("content-type", "application/json")
        .header("x-request-id", id)
        .header("x-reasoning-checkpoints", every);
    if let Some(a) = &job.authorization {
        builder = builder.header("authorization", a.as_str());
    }
    if let Some(tp) = &job.traceparent {
        builder = builder.header("traceparent", tp.as_str());
    }
    // The submitter's tenant, whatever it was derived from (x-api-key, a trusted proxy's
    // tenant header); sealed so no client can claim one this way.
    builder = builder.header(crate::tenant::RELAY_HEADER, gw.seal_tenant(&job.tenant));
    let request = builder
        .body(Full::new(Bytes::from(
            serde_json::to_vec(&body).unwrap_or_default(),
        )))
        .map_err(|e| failure("internal", e.to_string()))?;
    let resp = sender
        .send_request(request)
        .await
        .map_err(|e| failure("gateway_error", e.to_string()))?;
    let status = resp.status().as_u16();
    let ended = match resp.headers().get("x-reasoning-cache") {
        Some(v) if v.as_bytes() == b"hit" => Outcome::CacheHit,
        _ => Outcome::Ok,
    };
    let mut body = resp.into_body();
    if status != 200 {
        let bytes = body
            .collect()
            .await
            .map(http_body_util::Collected::to_bytes)
            .unwrap_or_default();
        let err = serde_json::from_slice::<Value>(&bytes)
            .ok()
            .and_then(|v| v.get("error").cloned())
            .unwrap_or_else(|| failure("upstream_error", String::from_utf8_lossy(&bytes)));
        return Err(json!({"status": status, "error": err}));
    }
    let mut decoder = SseDecoder::new(64 * 1024 * 1024);
    let mut aggregator = Aggregator::new(false, OutputField::ReasoningContent);
    let mut done = false;
    let mut steps = crate::reasoning::steps::StepCounter::default();
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|e| failure("gateway_error", e.to_string()))?;
        let Some(data) = frame.data_ref() else {
            continue;
        };
        aggregator.feed(data);
        let mut events = Vec::new();
        let _ = decoder.feed(data, &mut |e| events.push(e));
        let mut reasoning = String::new();
        let mut answer = String::new();
        let mut checkpoints = Vec::new();
        for e in events {
            let Some(d) = e.data.as_deref() else {
                continue;
            };
            if d.trim() == "[DONE]" {
                done = true;
                continue;
            }
            let Ok(v) = serde_json::from_str::<Value>(d) else {
                continue;
            };
            if let Some(err) = v.get("error") {
                return Err(json!({"status": 200, "error": err}));
            }
            if let Some(c) = v.get("reasoning_checkpoint") {
                checkpoints.push(Checkpoint {
                    step: c["step"].as_u64().unwrap_or(0),
                    summary: c["summary"].as_str().unwrap_or_default().to_string(),
                    reasoning_chars: c["reasoning_chars"].as_u64().unwrap_or(0),
                    at: now_unix(),
                });
            }
            if let Some(delta) = v["choices"].get(0).map(|c| &c["delta"]) {
                let r = delta
                    .get("reasoning_content")
                    .or_else(|| delta.get("reasoning"))
                    .and_then(Value::as_str);
                reasoning.push_str(r.unwrap_or_default());
                answer.push_str(delta["content"].as_str().unwrap_or_default());
            }
        }
        steps.feed(&reasoning);
        let steps_now = u64::from(steps.steps());
        let persist = !checkpoints.is_empty();
        let alive = jobs.update(id, persist, |j| {
            j.reasoning.push_str(&reasoning);
            keep_tail(&mut j.reasoning, MAX_PROGRESS_BYTES);
            j.answer.push_str(&answer);
            keep_tail(&mut j.answer, MAX_PROGRESS_BYTES);
            j.steps = steps_now;
            j.checkpoints.extend(checkpoints);
            if j.checkpoints.len() > MAX_CHECKPOINTS {
                let extra = j.checkpoints.len() - MAX_CHECKPOINTS;
                j.checkpoints.drain(..extra);
            }
        });
        // Other replicas see progress as it comes (checkpoints at once, the rest at a bounded
        // rate); a job cancelled on another replica stops here.
        let how = if persist { Sync::Now } else { Sync::Progress };
        if !alive || jobs.sync(id, how).await == Synced::Gone {
            return Err(failure("cancelled", "Cancelled by the client."));
        }
    }
    if !done {
        return Err(failure(
            "incomplete",
            "The response stream ended without [DONE].",
        ));
    }
    let result: Value = serde_json::from_slice(&aggregator.finish(None))
        .map_err(|e| failure("internal", e.to_string()))?;
    if let Some(err) = result.get("error") {
        return Err(json!({"status": 200, "error": err}));
    }
    Ok((result, ended))
}
