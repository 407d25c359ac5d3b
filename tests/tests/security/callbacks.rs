//! Attacks through async job callbacks (SSRF): a client of the public listener names a
//! `callback_url` and the gateway POSTs to it from inside the operator's network. Aimed at the
//! admin listener it reloaded the config or purged the cache; aimed at a closed port, the job's
//! `last_error` told the client what was listening there.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use gateway_tests::fake_upstream::FakeUpstream;
use gateway_tests::harness::{free_port, metric_value, GatewayProc, TempDir};
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const READY: Duration = Duration::from_secs(20);
const WAIT: Duration = Duration::from_secs(20);
const RELOADS: &str = "reasoning_gateway_config_reloads_total{result=\"ok\",trigger=\"admin\"}";

fn config(up: &FakeUpstream, jobs_extra: &str) -> String {
    format!(
        "async_jobs:\n  callback_secret: s3cret\n  callback_retries: 0\n{jobs_extra}upstreams: [{{name: fake, endpoints: [\"{}\"]}}]\nroutes:\n  - {{model: \"*\", upstream: fake}}\n",
        up.addr
    )
}

async fn submit(gw: &GatewayProc, callback_url: &str) -> (u16, Value) {
    let r = reqwest::Client::new()
        .post(format!("{}/async/chat/completions", gw.base_url()))
        .bearer_auth("sk-attacker")
        .json(&json!({
            "model": "think",
            "messages": [{"role": "user", "content": "2+2?"}],
            "callback_url": callback_url,
        }))
        .send()
        .await
        .unwrap();
    let status = r.status().as_u16();
    (status, r.json().await.unwrap())
}

async fn job_until(gw: &GatewayProc, id: &str, done: impl Fn(&Value) -> bool) -> Value {
    gw.wait_for_job(id, "sk-attacker", WAIT, done).await
}

async fn metric(gw: &GatewayProc, prefix: &str) -> f64 {
    metric_value(&gw.admin_get("/metrics").await, prefix).unwrap_or(0.0)
}

fn assert_refused(status: u16, e: &Value, url: &str) {
    assert_eq!(status, 400, "{url} was accepted: {e}");
    assert_eq!(e["error"]["code"], "invalid_callback_url", "{url}: {e}");
    assert_eq!(e["error"]["param"], "callback_url", "{url}: {e}");
    assert_eq!(e["error"]["type"], "invalid_request_error", "{url}: {e}");
}

/// A hook on loopback that answers 200 and counts the requests it got.
async fn hook() -> (u16, Arc<AtomicUsize>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let hits = Arc::new(AtomicUsize::new(0));
    let seen = hits.clone();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            let mut buf = Vec::new();
            let mut tmp = [0u8; 4096];
            while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
                match s.read(&mut tmp).await {
                    Ok(0) | Err(_) => break,
                    Ok(n) => buf.extend_from_slice(&tmp[..n]),
                }
            }
            seen.fetch_add(1, Ordering::SeqCst);
            let _ = s
                .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\nconnection: close\r\n\r\n")
                .await;
        }
    });
    (port, hits)
}

/// The reported attack: a callback to the admin listener's mutating endpoints. Refused at
/// submission, also when the operator allows loopback hooks: the gateway's own listeners are
/// never called back. The admin plane sees nothing (no reload happened).
#[tokio::test]
async fn a_callback_cannot_reach_the_admin_listener() {
    let up = FakeUpstream::start("a").await;
    for extra in ["", "  callback_allow: [\"127.0.0.1/32\", \"localhost\"]\n"] {
        let gw = GatewayProc::start(&config(&up, extra), READY);
        let admin = gw.admin_port;
        for url in [
            format!("http://127.0.0.1:{admin}/admin/cache/purge"),
            format!("http://127.0.0.1:{admin}/admin/reload"),
            format!("http://localhost:{admin}/admin/reload"),
            format!("http://[::ffff:127.0.0.1]:{admin}/admin/reload"),
            // The public listener itself (a job calling back into the gateway).
            format!("http://127.0.0.1:{}/v1/chat/completions", gw.port),
        ] {
            let (status, e) = submit(&gw, &url).await;
            assert_refused(status, &e, &url);
        }
        // Had a job been accepted, its callback would have come within this job's run: one
        // harmless job with no callback runs to the end first.
        let r: Value = reqwest::Client::new()
            .post(format!("{}/async/chat/completions", gw.base_url()))
            .bearer_auth("sk-attacker")
            .json(&json!({"model": "think", "messages": [{"role": "user", "content": "hi"}]}))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let id = r["id"].as_str().unwrap().to_string();
        job_until(&gw, &id, |j| j["status"] == "succeeded").await;
        assert_eq!(
            metric(&gw, RELOADS).await,
            0.0,
            "the admin plane was reached"
        );
        assert!(!gw.log_text().contains("Reasoning cache purged"));
    }
}

/// Loopback, link-local (cloud metadata), private, unspecified and their IPv6 and numeric
/// spellings are refused at submission with an OpenAI error.
#[tokio::test]
async fn internal_callback_targets_are_refused_at_submission() {
    let up = FakeUpstream::start("a").await;
    let gw = GatewayProc::start(&config(&up, ""), READY);
    let (port, hits) = hook().await;
    for host in [
        "127.0.0.1".to_string(),
        "localhost".into(),
        "[::1]".into(),
        "0.0.0.0".into(),
        "169.254.169.254".into(),
        "10.0.0.1".into(),
        "192.168.1.1".into(),
        "[::ffff:127.0.0.1]".into(),
        "[::ffff:169.254.169.254]".into(),
        "[fe80::1]".into(),
        "[fd00::1]".into(),
        // Names that resolve to loopback: the decimal and short forms of 127.0.0.1.
        "2130706433".into(),
        "127.1".into(),
    ] {
        let url = format!("http://{host}:{port}/hook");
        let (status, e) = submit(&gw, &url).await;
        assert_refused(status, &e, &url);
        // The refusal does not say what the name resolved to, or what kind of address it is.
        let msg = e["error"]["message"].as_str().unwrap_or_default();
        for leak in ["Loopback", "Private", "LinkLocal", "Unspecified"] {
            assert!(!msg.contains(leak), "{msg}");
        }
        if !host.contains("127.0.0.1") {
            assert!(!msg.contains("127.0.0.1"), "{msg}");
        }
    }
    assert_eq!(hits.load(Ordering::SeqCst), 0);
}

/// An operator's `callback_allow` opens an internal hook, by block or by name; the callback
/// arrives.
#[tokio::test]
async fn an_allowlisted_internal_hook_gets_its_callback() {
    let up = FakeUpstream::start("a").await;
    let (port, hits) = hook().await;
    for (allow, host) in [("127.0.0.1/32", "127.0.0.1"), ("localhost", "localhost")] {
        let before = hits.load(Ordering::SeqCst);
        let gw = GatewayProc::start(
            &config(&up, &format!("  callback_allow: [\"{allow}\"]\n")),
            READY,
        );
        let (status, created) = submit(&gw, &format!("http://{host}:{port}/hook")).await;
        assert_eq!(status, 202, "{created}");
        let id = created["id"].as_str().unwrap().to_string();
        let done = job_until(&gw, &id, |j| j["callback"]["delivered"] == true).await;
        assert_eq!(done["callback"]["last_status"], 200);
        assert_eq!(hits.load(Ordering::SeqCst), before + 1);
    }
}

/// The port scanner: a failed delivery's job view says "delivery failed", never the connection
/// error (refused, reset, TLS alert) that told the submitter what listens where.
#[tokio::test]
async fn the_job_view_does_not_leak_why_a_delivery_failed() {
    let up = FakeUpstream::start("a").await;
    let gw = GatewayProc::start(
        &config(&up, "  callback_allow: [\"127.0.0.1/32\"]\n"),
        READY,
    );
    // Nothing listens here.
    let closed = free_port();
    let (status, created) = submit(&gw, &format!("http://127.0.0.1:{closed}/probe")).await;
    assert_eq!(status, 202, "{created}");
    let id = created["id"].as_str().unwrap().to_string();
    let failed = job_until(&gw, &id, |j| j["callback"]["attempts"] == 1).await;
    assert_eq!(failed["callback"]["delivered"], false);
    assert_eq!(
        failed["callback"]["last_error"], "delivery failed",
        "{failed:#}"
    );
    let text = failed.to_string().to_ascii_lowercase();
    for leak in ["refused", "connect", "os error", "reset"] {
        assert!(!text.contains(leak), "the view says {leak:?}: {failed:#}");
    }
    // The operator still has the reason.
    gw.wait_for_log_line("Async job callback attempt failed", WAIT)
        .await;
}

/// Checked again at delivery, against the address actually connected to: a job accepted while
/// the operator allowed its loopback hook, and delivered after that allowance was removed (a
/// restart with the new config), is not called back.
#[tokio::test]
async fn a_callback_is_vetted_again_at_delivery() {
    let up = FakeUpstream::start("a").await;
    let dir = TempDir::new("callback-recheck");
    let (port, hits) = hook().await;
    let stored = format!("  dir: {}\n", dir.0.display());
    let mut gw = GatewayProc::start(
        &config(
            &up,
            &format!("{stored}  callback_allow: [\"127.0.0.1/32\"]\n"),
        ),
        READY,
    );
    let r = reqwest::Client::new()
        .post(format!("{}/async/chat/completions", gw.base_url()))
        .bearer_auth("sk-attacker")
        .json(&json!({
            "model": "gated",
            "messages": [{"role": "user", "content": "2+2?"}],
            "callback_url": format!("http://127.0.0.1:{port}/hook"),
        }))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202);
    let deadline = Instant::now() + WAIT;
    while up.gated_waiting.load(Ordering::SeqCst) < 1 {
        assert!(
            Instant::now() < deadline,
            "the job never reached the upstream"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(gw.terminate(WAIT).success());
    drop(gw);

    // The same stored job, under a config that no longer allows loopback hooks.
    up.open_gate();
    let gw = GatewayProc::start(&config(&up, &stored), READY);
    gw.wait_for_metric(
        "reasoning_gateway_async_job_callbacks_total{result=\"failed\"}",
        1.0,
        WAIT,
    )
    .await;
    gw.wait_for_log_line("callback target refused", WAIT).await;
    assert_eq!(hits.load(Ordering::SeqCst), 0, "the hook was called");
}
