//! Async jobs end to end: lifecycle, checkpoints, signed callbacks with retries, cancellation
//! reaching the upstream, restarts, and checkpoints on a stream read by the openai SDK.

use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use gateway_tests::fake_upstream::{Conn, FakeUpstream};
use gateway_tests::harness::{required_metric, run_python, GatewayProc, TempDir};
use gateway_tests::tls::TestPki;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const WAIT: Duration = Duration::from_secs(20);
const SECRET: &str = "callback-test-secret";

fn config(up: &FakeUpstream, jobs_extra: &str) -> String {
    format!(
        "async_jobs:\n  callback_secret: {SECRET}\n  callback_allow: [\"127.0.0.1/32\"]\n{jobs_extra}upstreams: [{{name: fake, endpoints: [\"{}\"]}}]\nroutes:\n  - {{model: gated, upstream: fake, reasoning: {{checkpoint_every: 5}}}}\n  - {{model: think, upstream: fake}}\n",
        up.addr
    )
}

async fn submit(gw: &GatewayProc, body: Value, key: &str) -> (u16, Value) {
    let r = reqwest::Client::new()
        .post(format!("{}/async/chat/completions", gw.base_url()))
        .bearer_auth(key)
        .json(&body)
        .send()
        .await
        .unwrap();
    let status = r.status().as_u16();
    (status, r.json().await.unwrap())
}

async fn job(gw: &GatewayProc, id: &str, key: &str) -> (u16, Value) {
    let r = reqwest::Client::new()
        .get(format!("{}/async/jobs/{id}", gw.base_url()))
        .bearer_auth(key)
        .send()
        .await
        .unwrap();
    let status = r.status().as_u16();
    (status, r.json().await.unwrap())
}

/// Polls the job (bounded) until `done` holds; returns it.
async fn job_until(gw: &GatewayProc, id: &str, done: impl Fn(&Value) -> bool) -> Value {
    gw.wait_for_job(id, "sk-a", WAIT, done).await
}

async fn until(what: &str, cond: impl Fn() -> bool) {
    let deadline = Instant::now() + WAIT;
    while !cond() {
        assert!(Instant::now() < deadline, "{what} did not happen");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn question(model: &str) -> Value {
    json!({"model": model, "messages": [{"role": "user", "content": "Work it out in steps."}]})
}

/// A callback receiver: answers 500 to the first `fail` requests, then 200; keeps each
/// (signature header, body).
async fn receiver(fail: usize) -> (String, Arc<Mutex<Vec<(String, Vec<u8>)>>>) {
    receiver_with(fail, None).await
}

/// [`receiver`] behind TLS when `tls` is given (an `https://` URL).
async fn receiver_with(
    fail: usize,
    tls: Option<tokio_rustls::TlsAcceptor>,
) -> (String, Arc<Mutex<Vec<(String, Vec<u8>)>>>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let scheme = if tls.is_some() { "https" } else { "http" };
    let url = format!("{scheme}://{}/hooks/job", listener.local_addr().unwrap());
    let seen = Arc::new(Mutex::new(Vec::new()));
    let log = seen.clone();
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let mut s: Box<dyn Conn> = match &tls {
                None => Box::new(tcp),
                Some(acceptor) => match acceptor.accept(tcp).await {
                    Ok(s) => Box::new(s),
                    // The gateway refused our certificate: nothing was delivered.
                    Err(_) => continue,
                },
            };
            let mut buf = Vec::new();
            let mut tmp = [0u8; 4096];
            let (head_end, len) = loop {
                let n = s.read(&mut tmp).await.unwrap_or(0);
                if n == 0 {
                    break (0, 0);
                }
                buf.extend_from_slice(&tmp[..n]);
                if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                    let head = String::from_utf8_lossy(&buf[..i]).to_ascii_lowercase();
                    let len = head
                        .lines()
                        .find_map(|l| l.strip_prefix("content-length:"))
                        .and_then(|v| v.trim().parse().ok())
                        .unwrap_or(0);
                    break (i + 4, len);
                }
            };
            if head_end == 0 {
                continue;
            }
            while buf.len() < head_end + len {
                let n = s.read(&mut tmp).await.unwrap_or(0);
                if n == 0 {
                    break;
                }
                buf.extend_from_slice(&tmp[..n]);
            }
            let head = String::from_utf8_lossy(&buf[..head_end]).to_string();
            let sig = head
                .lines()
                .find_map(|l| {
                    l.to_ascii_lowercase()
                        .starts_with("x-reasoning-gateway-signature:")
                        .then(|| l.split_once(':').unwrap().1.trim().to_string())
                })
                .unwrap_or_default();
            let n = {
                let mut v = log.lock().unwrap();
                v.push((sig, buf[head_end..].to_vec()));
                v.len()
            };
            let status = if n <= fail {
                "500 Internal Server Error"
            } else {
                "200 OK"
            };
            let _ = s
                .write_all(
                    format!("HTTP/1.1 {status}\r\ncontent-length: 0\r\nconnection: close\r\n\r\n")
                        .as_bytes(),
                )
                .await;
        }
    });
    (url, seen)
}

/// HMAC-SHA256, written here independently of the gateway's.
fn hmac(key: &[u8], msg: &[u8]) -> String {
    let mut k = [0u8; 64];
    k[..key.len()].copy_from_slice(key);
    let inner = Sha256::new()
        .chain_update(k.map(|b| b ^ 0x36))
        .chain_update(msg)
        .finalize();
    let outer = Sha256::new()
        .chain_update(k.map(|b| b ^ 0x5c))
        .chain_update(inner)
        .finalize();
    outer.iter().map(|b| format!("{b:02x}")).collect()
}

#[tokio::test]
async fn a_job_reports_progress_and_checkpoints_then_calls_back_signed_after_retries() {
    let up = FakeUpstream::start("a").await;
    let gw = GatewayProc::start(&config(&up, ""), WAIT);
    let (url, seen) = receiver(2).await;
    let mut body = question("gated");
    body["callback_url"] = json!(url);
    let (status, created) = submit(&gw, body, "sk-a").await;
    assert_eq!(status, 202, "{created}");
    let id = created["id"].as_str().unwrap().to_string();
    assert!(id.starts_with("job_"));
    assert_eq!(created["object"], "async.job");

    // Held by the upstream after 12 steps: two checkpoints (steps 5 and 10), progress so far.
    until("the upstream to hold the stream", || {
        up.gated_waiting.load(Ordering::SeqCst) == 1
    })
    .await;
    let running = job_until(&gw, &id, |j| {
        j["checkpoints"].as_array().is_some_and(|c| c.len() == 2)
    })
    .await;
    assert_eq!(running["status"], "running");
    let steps: Vec<u64> = running["checkpoints"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["step"].as_u64().unwrap())
        .collect();
    assert_eq!(steps, vec![5, 10]);
    assert_eq!(
        running["checkpoints"][0]["summary"],
        "Step 5: work on part 5."
    );
    assert_eq!(running["latest_checkpoint"]["step"], 10);
    assert!(running["progress"]["reasoning"]
        .as_str()
        .unwrap()
        .contains("Step 12: work"));
    assert_eq!(running["progress"]["steps"], 12);
    assert!(running["result"].is_null());
    // Another key cannot see it.
    assert_eq!(job(&gw, &id, "sk-other").await.0, 404);

    up.open_gate();
    let done = job_until(&gw, &id, |j| j["status"] == "succeeded").await;
    let msg = &done["result"]["choices"][0]["message"];
    assert_eq!(msg["content"], "The answer is 42.");
    assert!(msg["reasoning_content"]
        .as_str()
        .unwrap()
        .starts_with("Step 1: work on part 1."));
    assert_eq!(done["result"]["object"], "chat.completion");

    // Two refused deliveries, then accepted; every attempt signed over "<t>.<body>".
    let delivered = job_until(&gw, &id, |j| j["callback"]["delivered"] == true).await;
    assert_eq!(delivered["callback"]["attempts"], 3);
    let attempts = seen.lock().unwrap().clone();
    assert_eq!(attempts.len(), 3);
    for (sig, body) in &attempts {
        let (t, v1) = sig.split_once(",v1=").unwrap();
        let t = t.strip_prefix("t=").unwrap();
        let mut msg = format!("{t}.").into_bytes();
        msg.extend_from_slice(body);
        assert_eq!(v1, hmac(SECRET.as_bytes(), &msg), "bad signature {sig}");
        let payload: Value = serde_json::from_slice(body).unwrap();
        assert_eq!(payload["id"], id.as_str());
        assert_eq!(payload["status"], "succeeded");
        assert_eq!(
            payload["result"]["choices"][0]["message"]["content"],
            "The answer is 42."
        );
    }
    let m = gw.admin_get("/metrics").await;
    assert_eq!(
        required_metric(
            &m,
            "reasoning_gateway_async_job_callbacks_total{result=\"failed\"}"
        ),
        2.0
    );
    assert_eq!(
        required_metric(
            &m,
            "reasoning_gateway_async_job_callbacks_total{result=\"delivered\"}"
        ),
        1.0
    );
    assert_eq!(
        required_metric(
            &m,
            "reasoning_gateway_async_jobs_total{result=\"succeeded\"}"
        ),
        1.0
    );
}

#[tokio::test]
async fn cancelling_a_job_stops_the_upstream() {
    let up = FakeUpstream::start("a").await;
    let gw = GatewayProc::start(&config(&up, ""), WAIT);
    let (_, created) = submit(&gw, question("gated"), "sk-a").await;
    let id = created["id"].as_str().unwrap().to_string();
    until("the upstream to hold the stream", || {
        up.gated_waiting.load(Ordering::SeqCst) == 1
    })
    .await;
    let r = reqwest::Client::new()
        .delete(format!("{}/async/jobs/{id}", gw.base_url()))
        .bearer_auth("sk-a")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["status"], "cancelled");
    until("the upstream to see the client leave", || {
        up.gated_cancels.load(Ordering::SeqCst) == 1
    })
    .await;
    // It stays cancelled even once the upstream could finish.
    up.open_gate();
    assert_eq!(job(&gw, &id, "sk-a").await.1["status"], "cancelled");
    let m = gw.admin_get("/metrics").await;
    assert_eq!(
        required_metric(
            &m,
            "reasoning_gateway_async_jobs_total{result=\"cancelled\"}"
        ),
        1.0
    );
}

#[tokio::test]
async fn jobs_survive_a_restart() {
    let up = FakeUpstream::start("a").await;
    let dir = TempDir::new("jobs");
    let cfg = config(&up, &format!("  dir: {}\n", dir.0.display()));
    let mut gw = GatewayProc::start(&cfg, WAIT);
    let (_, quick) = submit(&gw, question("think"), "sk-a").await;
    let quick = quick["id"].as_str().unwrap().to_string();
    job_until(&gw, &quick, |j| j["status"] == "succeeded").await;
    let (_, long) = submit(&gw, question("gated"), "sk-a").await;
    let long = long["id"].as_str().unwrap().to_string();
    job_until(&gw, &long, |j| {
        j["checkpoints"].as_array().is_some_and(|c| c.len() == 2)
    })
    .await;
    assert!(gw.terminate(WAIT).success());
    drop(gw);
    until("the upstream to see the first run end", || {
        up.gated_cancels.load(Ordering::SeqCst) == 1
    })
    .await;

    let gw = GatewayProc::start(&cfg, WAIT);
    // The finished job is still there; the interrupted one runs again.
    let (status, q) = job(&gw, &quick, "sk-a").await;
    assert_eq!(status, 200);
    assert_eq!(q["status"], "succeeded");
    assert!(q["result"]["choices"][0]["message"]["content"].is_string());
    until("the rerun to reach the upstream", || {
        up.gated_waiting.load(Ordering::SeqCst) == 1
    })
    .await;
    let rerun = job_until(&gw, &long, |j| j["status"] == "running").await;
    assert_eq!(rerun["attempts"], 2);
    up.open_gate();
    let done = job_until(&gw, &long, |j| j["status"] == "succeeded").await;
    assert_eq!(
        done["result"]["choices"][0]["message"]["content"],
        "The answer is 42."
    );
}

#[tokio::test]
async fn bad_submissions_get_openai_errors() {
    let up = FakeUpstream::start("a").await;
    let gw = GatewayProc::start(&config(&up, ""), WAIT);
    let (s, e) = submit(&gw, question("no-such-model"), "sk-a").await;
    assert_eq!(s, 404);
    assert_eq!(e["error"]["code"], "model_not_found");
    let mut body = question("think");
    body["callback_url"] = json!("ftp://example.com/x");
    let (s, e) = submit(&gw, body, "sk-a").await;
    assert_eq!(s, 400);
    assert_eq!(e["error"]["param"], "callback_url");
    let (s, e) = submit(&gw, json!({"model": "think"}), "sk-a").await;
    assert_eq!(s, 400, "{e}");
    let (s, e) = job(&gw, "job_nope", "sk-a").await;
    assert_eq!(s, 404);
    assert_eq!(e["error"]["code"], "job_not_found");
    let r = reqwest::get(format!("{}/async/chat/completions", gw.base_url()))
        .await
        .unwrap();
    assert_eq!(r.status(), 405);
    let r = reqwest::get(format!("{}/async/elsewhere", gw.base_url()))
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
}

#[tokio::test]
async fn the_openai_sdk_streams_past_checkpoint_chunks() {
    let up = FakeUpstream::start("a").await;
    up.open_gate();
    let gw = GatewayProc::start(&config(&up, ""), WAIT);
    let base = gw.base_url();
    let out = tokio::task::spawn_blocking(move || run_python("sdk_checkpoints.py", &[&base]))
        .await
        .unwrap();
    assert!(out.contains("sdk checkpoints ok"), "{out}");
}

#[tokio::test]
async fn the_job_store_is_bounded_and_finished_jobs_expire() {
    let up = FakeUpstream::start("a").await;
    let gw = GatewayProc::start(&config(&up, "  max_jobs: 1\n  ttl: 1s\n"), WAIT);
    let (s, first) = submit(&gw, question("gated"), "sk-a").await;
    assert_eq!(s, 202);
    let first = first["id"].as_str().unwrap().to_string();
    // Full while the first job runs.
    let (s, e) = submit(&gw, question("think"), "sk-a").await;
    assert_eq!(s, 429, "{e}");
    assert_eq!(e["error"]["code"], "too_many_jobs");
    up.open_gate();
    job_until(&gw, &first, |j| j["status"] == "succeeded").await;
    // Gone once its TTL has passed (the store sweeps every second).
    let deadline = Instant::now() + WAIT;
    while job(&gw, &first, "sk-a").await.0 != 404 {
        assert!(Instant::now() < deadline, "the finished job never expired");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let (s, _) = submit(&gw, question("think"), "sk-a").await;
    assert_eq!(s, 202);
}

/// A job whose upstream pool is full (`max_inflight`, no line) is not failed: it waits and asks
/// again, and runs once a slot frees; the refusals do not count as attempts.
#[tokio::test]
async fn a_job_refused_by_a_full_pool_waits_for_a_slot() {
    let up = FakeUpstream::start("a").await;
    let cfg = format!(
        "async_jobs:\n  callback_secret: {SECRET}\n  callback_allow: [\"127.0.0.1/32\"]\nupstreams: [{{name: fake, endpoints: [\"{}\"], max_inflight: 1, max_queue: 0}}]\nroutes:\n  - {{model: \"*\", upstream: fake}}\n",
        up.addr
    );
    let gw = GatewayProc::start(&cfg, WAIT);
    let (_, held) = submit(&gw, question("gated"), "sk-a").await;
    let held = held["id"].as_str().unwrap().to_string();
    until("the first job to hold the pool's only slot", || {
        up.gated_waiting.load(Ordering::SeqCst) == 1
    })
    .await;
    let (_, waiting) = submit(&gw, question("think"), "sk-a").await;
    let waiting = waiting["id"].as_str().unwrap().to_string();
    let deadline = Instant::now() + WAIT;
    loop {
        let m = gw.admin_get("/metrics").await;
        let refused = required_metric(
            &m,
            "reasoning_gateway_upstream_rejections_total{reason=\"queue_full\",upstream=\"fake\"}",
        );
        if refused >= 1.0 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the second job was never refused"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let (_, j) = job(&gw, &waiting, "sk-a").await;
    assert_ne!(j["status"], "failed", "{j:#}");
    assert_ne!(
        j["status"], "succeeded",
        "ran while the slot was held: {j:#}"
    );

    up.open_gate();
    job_until(&gw, &held, |j| j["status"] == "succeeded").await;
    let done = job_until(&gw, &waiting, |j| j["status"] == "succeeded").await;
    assert_eq!(done["attempts"], 1, "{done:#}");
    assert!(done["result"]["choices"][0]["message"]["content"].is_string());
}

/// Webhook receivers are HTTPS: the callback goes over TLS, its certificate checked against
/// `callback_ca_file` (a private CA here); a gateway that does not trust that CA does not
/// deliver: the job says only "delivery failed", the log says why.
#[tokio::test]
async fn callbacks_to_https_urls_are_delivered_over_verified_tls() {
    let pki = TestPki::new();
    let dir = TempDir::new("callback-tls");
    let ca = dir.0.join("ca.pem");
    std::fs::write(&ca, &pki.ca_pem).unwrap();
    let up = FakeUpstream::start("a").await;
    let trusting = GatewayProc::start(&config(&up, &format!("  callback_ca_file: {ca:?}\n")), WAIT);
    let (url, seen) = receiver_with(0, Some(pki.acceptor())).await;
    assert!(url.starts_with("https://"));
    let mut body = question("think");
    body["callback_url"] = json!(url);
    let (status, created) = submit(&trusting, body.clone(), "sk-a").await;
    assert_eq!(status, 202, "{created}");
    let id = created["id"].as_str().unwrap().to_string();
    let done = job_until(&trusting, &id, |j| j["callback"]["delivered"] == true).await;
    assert_eq!(done["callback"]["attempts"], 1, "{done:#}");
    let (sig, raw) = seen.lock().unwrap()[0].clone();
    let payload: Value = serde_json::from_slice(&raw).unwrap();
    assert_eq!(payload["id"], id.as_str());
    assert_eq!(payload["status"], "succeeded");
    let (t, v1) = sig.split_once(",v1=").unwrap();
    let mut signed = format!("{}.", t.strip_prefix("t=").unwrap()).into_bytes();
    signed.extend_from_slice(&raw);
    assert_eq!(
        v1,
        hmac(SECRET.as_bytes(), &signed),
        "signed as over plain HTTP"
    );

    // The system's roots do not include the private CA: the handshake fails, nothing arrives.
    let system = GatewayProc::start(&config(&up, "  callback_retries: 0\n"), WAIT);
    let (status, created) = submit(&system, body, "sk-a").await;
    assert_eq!(status, 202, "{created}");
    let id = created["id"].as_str().unwrap().to_string();
    let failed = job_until(&system, &id, |j| j["callback"]["attempts"] == 1).await;
    assert_eq!(failed["callback"]["delivered"], false);
    assert_eq!(
        failed["callback"]["last_error"], "delivery failed",
        "{failed:#}"
    );
    system.wait_for_log_line("UnknownIssuer", WAIT).await;
    assert_eq!(
        seen.lock().unwrap().len(),
        1,
        "only the trusted gateway delivered"
    );
}
