//! Async jobs across a fleet: gateway processes sharing one real `redis-server`. A job submitted
//! to one replica is polled on another; a replica killed mid-job leaves it to another, which
//! finishes it with exactly one callback; a cancellation on one replica stops the run on
//! another; with Redis gone a submission is refused (503) rather than lost, and accepted again
//! once Redis is back.

use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use gateway_tests::fake_upstream::FakeUpstream;
use gateway_tests::harness::{eventually, GatewayProc};
use gateway_tests::redis::Redis;
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const WAIT: Duration = Duration::from_secs(20);
const PREFIX: &str = "fleetjobs";

fn config(up: &FakeUpstream, redis: &Redis) -> String {
    format!(
        "{}async_jobs:\n  callback_allow: [\"127.0.0.1/32\"]\nupstreams: [{{name: fake, endpoints: [\"{}\"]}}]\nroutes:\n  - {{model: gated, upstream: fake, reasoning: {{checkpoint_every: 5}}}}\n  - {{model: think, upstream: fake}}\n",
        redis.shared_section(PREFIX),
        up.addr
    )
}

fn question(model: &str) -> Value {
    json!({"model": model, "messages": [{"role": "user", "content": "Work it out in steps."}]})
}

async fn submit(gw: &GatewayProc, body: &Value, key: &str) -> (u16, Value) {
    let r = reqwest::Client::new()
        .post(format!("{}/async/chat/completions", gw.base_url()))
        .bearer_auth(key)
        .json(body)
        .send()
        .await
        .unwrap();
    let status = r.status().as_u16();
    (status, r.json().await.unwrap())
}

async fn call(gw: &GatewayProc, method: reqwest::Method, id: &str, key: &str) -> (u16, Value) {
    let r = reqwest::Client::new()
        .request(method, format!("{}/async/jobs/{id}", gw.base_url()))
        .bearer_auth(key)
        .send()
        .await
        .unwrap();
    let status = r.status().as_u16();
    (status, r.json().await.unwrap())
}

/// A callback receiver answering 200; keeps every body it got.
async fn receiver() -> (String, Arc<Mutex<Vec<Value>>>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/hooks/job", listener.local_addr().unwrap());
    let seen = Arc::new(Mutex::new(Vec::new()));
    let log = seen.clone();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            let mut buf = Vec::new();
            let mut tmp = [0u8; 4096];
            let mut want = None;
            loop {
                let n = s.read(&mut tmp).await.unwrap_or(0);
                if n == 0 {
                    break;
                }
                buf.extend_from_slice(&tmp[..n]);
                if want.is_none() {
                    if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                        let head = String::from_utf8_lossy(&buf[..i]).to_ascii_lowercase();
                        let len: usize = head
                            .lines()
                            .find_map(|l| l.strip_prefix("content-length:"))
                            .and_then(|v| v.trim().parse().ok())
                            .unwrap_or(0);
                        want = Some(i + 4 + len);
                    }
                }
                if want.is_some_and(|w| buf.len() >= w) {
                    break;
                }
            }
            let Some(end) = want.filter(|w| buf.len() >= *w) else {
                continue;
            };
            let body_start = buf.windows(4).position(|w| w == b"\r\n\r\n").unwrap() + 4;
            if let Ok(v) = serde_json::from_slice(&buf[body_start..end]) {
                log.lock().unwrap().push(v);
            }
            let _ = s
                .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\nconnection: close\r\n\r\n")
                .await;
        }
    });
    (url, seen)
}

/// Polls `id` on `gw` as `key` until `done` holds (bounded); the job's view.
async fn job_until(gw: &GatewayProc, id: &str, done: impl Fn(&Value) -> bool) -> Value {
    gw.wait_for_job(id, "sk-a", WAIT, done).await
}

async fn held_upstream(up: &FakeUpstream) {
    eventually(WAIT, "the upstream holds the job's stream", || async {
        (up.gated_waiting.load(Ordering::SeqCst) == 1).then_some(())
    })
    .await;
}

#[tokio::test]
async fn a_job_submitted_to_one_replica_is_polled_on_another() {
    let redis = Redis::start().await;
    let up = FakeUpstream::start("up").await;
    let a = GatewayProc::start(&config(&up, &redis), WAIT);
    let b = GatewayProc::start(&config(&up, &redis), WAIT);
    let (status, created) = submit(&a, &question("gated"), "sk-a").await;
    assert_eq!(status, 202, "{created}");
    let id = created["id"].as_str().unwrap().to_string();
    held_upstream(&up).await;

    // B sees A's progress: both checkpoints and the reasoning so far.
    let running = job_until(&b, &id, |j| {
        j["checkpoints"].as_array().is_some_and(|c| c.len() == 2)
    })
    .await;
    assert_eq!(running["status"], "running", "{running:#}");
    assert_eq!(running["latest_checkpoint"]["step"], 10);
    assert!(running["progress"]["reasoning"]
        .as_str()
        .unwrap()
        .contains("Step 10: work"));
    // Another tenant gets the same 404 on any replica.
    assert_eq!(call(&b, reqwest::Method::GET, &id, "sk-other").await.0, 404);
    assert_eq!(call(&a, reqwest::Method::GET, &id, "sk-other").await.0, 404);

    up.open_gate();
    let done = job_until(&b, &id, |j| j["status"] == "succeeded").await;
    assert_eq!(
        done["result"]["choices"][0]["message"]["content"],
        "The answer is 42."
    );
    assert_eq!(done["attempts"], 1);
    let on_a = job_until(&a, &id, |j| j["status"] == "succeeded").await;
    assert_eq!(on_a["result"], done["result"]);
    // Run once, by A alone.
    assert_eq!(up.requests.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn a_job_whose_replica_dies_finishes_on_another_with_one_callback() {
    let redis = Redis::start().await;
    let up = FakeUpstream::start("up").await;
    let a = GatewayProc::start(&config(&up, &redis), WAIT);
    let b = GatewayProc::start(&config(&up, &redis), WAIT);
    let c = GatewayProc::start(&config(&up, &redis), WAIT);
    let (url, seen) = receiver().await;
    let mut body = question("gated");
    body["callback_url"] = json!(url);
    let (status, created) = submit(&a, &body, "sk-a").await;
    assert_eq!(status, 202, "{created}");
    let id = created["id"].as_str().unwrap().to_string();
    held_upstream(&up).await;
    job_until(&b, &id, |j| j["status"] == "running").await;

    // A crashes mid-job (SIGKILL: no chance to hand anything over).
    drop(a);
    eventually(WAIT, "the upstream sees A's connection go", || async {
        (up.gated_cancels.load(Ordering::SeqCst) == 1).then_some(())
    })
    .await;
    up.open_gate();

    // B or C takes it over once A's lease lapses, runs it again, and calls back once.
    let done = job_until(&b, &id, |j| j["callback"]["delivered"] == true).await;
    assert_eq!(done["status"], "succeeded", "{done:#}");
    assert_eq!(done["attempts"], 2, "{done:#}");
    assert_eq!(
        done["result"]["choices"][0]["message"]["content"],
        "The answer is 42."
    );
    assert_eq!(done["callback"]["attempts"], 1, "{done:#}");
    // Nothing is left to do for any replica: no second callback can follow.
    let open = format!("{PREFIX}:jobs:open");
    eventually(WAIT, "the job leaves the open set", || async {
        (redis.integer(&["SCARD", &open]).await == 0).then_some(())
    })
    .await;
    let callbacks = seen.lock().unwrap().clone();
    assert_eq!(callbacks.len(), 1, "{callbacks:#?}");
    assert_eq!(callbacks[0]["id"], id.as_str());
    assert_eq!(callbacks[0]["status"], "succeeded");
    // Once on A (cut), once on the replica that took over: never on both B and C.
    assert_eq!(up.requests.load(Ordering::SeqCst), 2);
    let on_c = job_until(&c, &id, |j| j["status"] == "succeeded").await;
    assert_eq!(on_c["result"], done["result"]);
}

#[tokio::test]
async fn a_job_running_on_one_replica_is_cancelled_from_another() {
    let redis = Redis::start().await;
    let up = FakeUpstream::start("up").await;
    let a = GatewayProc::start(&config(&up, &redis), WAIT);
    let b = GatewayProc::start(&config(&up, &redis), WAIT);
    let (_, created) = submit(&a, &question("gated"), "sk-a").await;
    let id = created["id"].as_str().unwrap().to_string();
    held_upstream(&up).await;

    // Another tenant cannot cancel it.
    assert_eq!(
        call(&b, reqwest::Method::DELETE, &id, "sk-other").await.0,
        404
    );
    let (status, v) = call(&b, reqwest::Method::DELETE, &id, "sk-a").await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["status"], "cancelled");
    // A's runner sees it and drops its upstream connection.
    eventually(
        Duration::from_secs(5),
        "the upstream sees A's run stop",
        || async { (up.gated_cancels.load(Ordering::SeqCst) == 1).then_some(()) },
    )
    .await;
    up.open_gate();
    let on_a = job_until(&a, &id, |j| j["status"] == "cancelled").await;
    assert_eq!(on_a["error"]["code"], "cancelled");
    // Nobody runs it again.
    let open = format!("{PREFIX}:jobs:open");
    assert_eq!(redis.integer(&["SCARD", &open]).await, 0);
    assert_eq!(up.requests.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn with_redis_down_a_submission_is_refused_and_accepted_again_once_it_is_back() {
    let mut redis = Redis::start().await;
    let up = FakeUpstream::start("up").await;
    let gw = GatewayProc::start(&config(&up, &redis), WAIT);
    let (status, created) = submit(&gw, &question("think"), "sk-a").await;
    assert_eq!(status, 202, "{created}");
    let id = created["id"].as_str().unwrap().to_string();
    job_until(&gw, &id, |j| j["status"] == "succeeded").await;

    redis.kill();
    let refused = eventually(WAIT, "a submission refused with 503", || async {
        let (status, body) = submit(&gw, &question("think"), "sk-a").await;
        (status != 202).then_some((status, body))
    })
    .await;
    assert_eq!(refused.0, 503, "{}", refused.1);
    assert_eq!(refused.1["error"]["code"], "shared_state_unavailable");
    assert_eq!(refused.1["error"]["type"], "server_error");
    // A poll cannot tell the job is gone: 503 as well, not a false 404.
    let (status, body) = call(&gw, reqwest::Method::GET, &id, "sk-a").await;
    assert_eq!(status, 503, "{body}");
    assert_eq!(body["error"]["code"], "shared_state_unavailable");

    redis.restart().await;
    let accepted = eventually(WAIT, "a submission accepted again", || async {
        let (status, body) = submit(&gw, &question("think"), "sk-a").await;
        (status == 202).then_some(body)
    })
    .await;
    let id = accepted["id"].as_str().unwrap().to_string();
    let done = job_until(&gw, &id, |j| j["status"] == "succeeded").await;
    assert_eq!(
        done["result"]["choices"][0]["message"]["content"],
        "The answer is 4 ✓"
    );
}
