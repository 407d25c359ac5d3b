//! The reasoning cache shared by a fleet (issue 26): three real gateway processes on one real
//! redis-server, the scripted upstream, real MiniLM embeddings. A miss on one replica is a hit
//! on the others, a purge anywhere reaches every replica, a replica that joins later loads what
//! exists, tenants stay apart, and losing Redis, or Redis too slow to answer, under load loses
//! no request.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use gateway_tests::fake_upstream::{FakeUpstream, THINK_ANSWER, THINK_REASONING};
use gateway_tests::harness::{eventually, metric_value, repo_root, GatewayProc};
use gateway_tests::redis::Redis;
use serde_json::{json, Value};

const WAIT: Duration = Duration::from_secs(20);
/// How soon an insert or a purge must reach every replica.
const SPREAD: Duration = Duration::from_secs(1);
const ENTRIES: &str = "reasoning_gateway_cache_entries{route=\"think\"}";
const UP: &str = "reasoning_gateway_shared_state_up{backend=\"redis\"}";
const Q: &str = "Sam has 2 apples and buys 2 more. How many apples does Sam have now?";
/// [`Q`] reworded: served only through the similarity tier (it needs the entry's vector).
const SIMILAR: &str =
    "Sam has got 2 apples and then he buys 2 more. How many apples does Sam have in total now?";

fn config(up: &FakeUpstream, redis: &Redis, prefix: &str) -> String {
    format!(
        "{}cache:\n  model_dir: {}\n  onnxruntime: {}\n  embed_timeout: 5s\nupstreams: [{{name: fake, endpoints: [\"{}\"]}}]\nroutes:\n  - model: think\n    upstream: fake\n    reasoning: {{parser: deepseek_r1}}\n    cache: {{}}\n",
        redis.shared_section(prefix),
        repo_root().join("models/minilm").display(),
        repo_root()
            .join("models/onnxruntime/libonnxruntime.so")
            .display(),
        up.addr
    )
}

struct Reply {
    cache: String,
    reason: Option<String>,
    similarity: Option<f64>,
    body: String,
}

async fn ask(gw: &GatewayProc, question: &str, key: &str) -> Reply {
    let resp = reqwest::Client::new()
        .post(format!("{}/chat/completions", gw.base_url()))
        .bearer_auth(key)
        .json(&json!({"model": "think", "messages": [{"role": "user", "content": question}]}))
        .send()
        .await
        .expect("the gateway answers");
    assert_eq!(resp.status(), 200);
    let h = |name: &str| {
        resp.headers()
            .get(name)
            .map(|v| v.to_str().unwrap().to_string())
    };
    Reply {
        cache: h("x-reasoning-cache").unwrap_or_default(),
        reason: h("x-reasoning-cache-reason"),
        similarity: h("x-reasoning-cache-similarity").and_then(|s| s.parse().ok()),
        body: resp.text().await.unwrap(),
    }
}

/// The answer's reasoning and content (JSON response).
fn texts(body: &str) -> (String, String) {
    let v: Value = serde_json::from_str(body).unwrap_or_else(|_| panic!("not JSON: {body}"));
    let m = &v["choices"][0]["message"];
    (
        m["reasoning_content"].as_str().unwrap_or_default().into(),
        m["content"].as_str().unwrap_or_default().into(),
    )
}

async fn metric(gw: &GatewayProc, name: &str) -> Option<f64> {
    metric_value(&gw.admin_get("/metrics").await, name)
}

/// Waits until `gw`'s metric `name` equals `value`.
async fn until_metric(gw: &GatewayProc, name: &str, value: f64, within: Duration, what: &str) {
    eventually(within, what, || async {
        (metric(gw, name).await == Some(value)).then_some(())
    })
    .await;
}

/// Waits until Redis holds `n` cache entries (keys under `prefix`'s entry pattern).
async fn until_redis_entries(redis: &Redis, prefix: &str, n: i64) {
    eventually(WAIT, "Redis holds the entries", || async {
        let script = format!("return #redis.call('KEYS', '{prefix}:cache:*:e:*')");
        (redis.integer(&["EVAL", &script, "0"]).await == n).then_some(())
    })
    .await;
}

/// `n` replicas on `redis`, keys under `prefix`.
fn fleet(up: &FakeUpstream, redis: &Redis, prefix: &str, n: usize) -> Vec<GatewayProc> {
    (0..n)
        .map(|_| GatewayProc::start(&config(up, redis, prefix), WAIT))
        .collect()
}

/// Two replicas, both up; A stored [`Q`] (a miss) and B applied it from the stream.
async fn two_holding_q(up: &FakeUpstream, redis: &Redis, prefix: &str) -> Vec<GatewayProc> {
    let gws = fleet(up, redis, prefix, 2);
    all_up(&gws).await;
    assert_eq!(ask(&gws[0], Q, "sk-one").await.cache, "miss");
    until_metric(&gws[1], ENTRIES, 1.0, WAIT, "B applies A's insert").await;
    gws
}

async fn all_up(gws: &[GatewayProc]) {
    for gw in gws {
        until_metric(gw, UP, 1.0, WAIT, "the replica reaches Redis").await;
    }
}

#[tokio::test]
async fn a_miss_on_one_replica_is_a_hit_on_the_others_and_a_purge_anywhere_clears_all() {
    let redis = Redis::start().await;
    let up = FakeUpstream::start("u").await;
    let gws = fleet(&up, &redis, "fc1", 3);
    let (a, b, c) = (&gws[0], &gws[1], &gws[2]);
    all_up(&gws).await;

    let first = ask(a, Q, "sk-one").await;
    assert_eq!(first.cache, "miss");
    until_redis_entries(&redis, "fc1", 1).await;
    let calls = up.requests.load(Ordering::SeqCst);

    // B, at once: the exact tier answers from Redis if the stream has not brought it yet.
    let on_b = ask(b, Q, "sk-one").await;
    assert_eq!(on_b.cache, "hit", "{:?}", on_b.reason);
    assert_eq!(on_b.reason.as_deref(), Some("exact"));
    assert_eq!(
        texts(&on_b.body),
        (THINK_REASONING.into(), THINK_ANSWER.into())
    );
    // C, through the stream within a second, vector included: a reworded question hits.
    until_metric(
        c,
        ENTRIES,
        1.0,
        SPREAD,
        "C applies A's insert from the stream",
    )
    .await;
    let on_c = ask(c, SIMILAR, "sk-one").await;
    assert_eq!(on_c.cache, "hit", "{:?} {:?}", on_c.similarity, on_c.reason);
    assert!(on_c.similarity.unwrap() < 1.0, "{:?}", on_c.similarity);
    assert_eq!(
        up.requests.load(Ordering::SeqCst),
        calls,
        "a hit went upstream"
    );

    // A purge on C reaches A and B within a second, and Redis.
    until_metric(a, ENTRIES, 1.0, WAIT, "A holds its entry").await;
    until_metric(b, ENTRIES, 1.0, WAIT, "B holds the entry").await;
    let (status, body) = c.admin_post("/admin/cache/purge").await;
    assert_eq!(status, 200, "{body}");
    let purged: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(purged["fleet"]["removed"], 1, "{body}");
    until_metric(a, ENTRIES, 0.0, SPREAD, "the purge on C reaches A").await;
    until_metric(b, ENTRIES, 0.0, SPREAD, "the purge on C reaches B").await;
    until_redis_entries(&redis, "fc1", 0).await;
    assert_eq!(ask(a, Q, "sk-one").await.cache, "miss");
    assert_eq!(up.requests.load(Ordering::SeqCst), calls + 1);
}

#[tokio::test]
async fn a_replica_started_later_loads_the_entries_without_the_upstream() {
    let redis = Redis::start().await;
    let up = FakeUpstream::start("u").await;
    let a = GatewayProc::start(&config(&up, &redis, "fc2"), WAIT);
    until_metric(&a, UP, 1.0, WAIT, "A reaches Redis").await;
    assert_eq!(ask(&a, Q, "sk-one").await.cache, "miss");
    until_redis_entries(&redis, "fc2", 1).await;
    let calls = up.requests.load(Ordering::SeqCst);

    let late = GatewayProc::start(&config(&up, &redis, "fc2"), WAIT);
    until_metric(&late, ENTRIES, 1.0, WAIT, "the new replica loads the entry").await;
    // Not the exact tier: the loaded vector is what finds it.
    let reply = ask(&late, SIMILAR, "sk-one").await;
    assert_eq!(
        reply.cache, "hit",
        "{:?} {:?}",
        reply.similarity, reply.reason
    );
    assert_eq!(
        texts(&reply.body),
        (THINK_REASONING.into(), THINK_ANSWER.into())
    );
    assert_eq!(up.requests.load(Ordering::SeqCst), calls);
}

#[tokio::test]
async fn one_tenants_entry_never_reaches_another_tenant_on_another_replica() {
    let redis = Redis::start().await;
    let up = FakeUpstream::start("u").await;
    let gws = fleet(&up, &redis, "fc3", 3);
    all_up(&gws).await;
    assert_eq!(ask(&gws[0], Q, "sk-tenant-a").await.cache, "miss");
    until_redis_entries(&redis, "fc3", 1).await;
    until_metric(&gws[1], ENTRIES, 1.0, WAIT, "replica 2 holds A's entry").await;
    let calls = up.requests.load(Ordering::SeqCst);

    // The same prompt from tenant B and a rewording from tenant C on replica 2 (each their
    // first question, so nothing of their own to find): misses, answered upstream.
    for (q, key) in [(Q, "sk-tenant-b"), (SIMILAR, "sk-tenant-c")] {
        let reply = ask(&gws[1], q, key).await;
        assert_eq!(reply.cache, "miss", "{q}: {:?}", reply.reason);
        assert_eq!(texts(&reply.body).1, THINK_ANSWER);
    }
    assert_eq!(up.requests.load(Ordering::SeqCst), calls + 2);
    // Tenant A on replica 2 is served its own entry.
    assert_eq!(ask(&gws[1], Q, "sk-tenant-a").await.cache, "hit");
}

#[tokio::test]
async fn a_purge_while_redis_is_down_answers_503_and_after_a_restart_no_replica_serves_the_entry() {
    let mut redis = Redis::start().await;
    let up = FakeUpstream::start("u").await;
    let gws = two_holding_q(&up, &redis, "fc5").await;
    let (a, b) = (&gws[0], &gws[1]);

    redis.kill();
    for gw in &gws {
        until_metric(gw, UP, 0.0, WAIT, "shared_state_up falls to 0").await;
    }
    // The purge cannot reach the fleet: the operator is told so, not handed a 200.
    let (status, body) = a.admin_post("/admin/cache/purge").await;
    assert_eq!(status, 503, "{body}");
    let purged: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(purged["removed"], 1, "{body}");
    assert!(
        purged["error"].as_str().unwrap().contains("retry"),
        "{body}"
    );
    // Meanwhile B serves from its own copy (Redis down changes no answer).
    assert_eq!(ask(b, Q, "sk-one").await.cache, "hit");

    // Redis back empty: the purge made meanwhile reached no stream, so B drops its copy on
    // reconnecting, without waiting for any other replica's traffic.
    redis.restart().await;
    all_up(&gws).await;
    until_metric(b, ENTRIES, 0.0, WAIT, "B drops its copy after the restart").await;
    let calls = up.requests.load(Ordering::SeqCst);
    assert_eq!(ask(b, Q, "sk-one").await.cache, "miss");
    assert_eq!(up.requests.load(Ordering::SeqCst), calls + 1);
}

#[tokio::test]
async fn an_operator_flushing_redis_empties_every_replicas_copy() {
    let redis = Redis::start().await;
    let up = FakeUpstream::start("u").await;
    let gws = two_holding_q(&up, &redis, "fc7").await;
    let b = &gws[1];

    // No replica writes afterwards: nothing comes through the stream to tell them. Each sees
    // Redis's epoch gone after its next `XREAD` (500 ms at most) and reloads: empty.
    assert_eq!(redis.command(&["FLUSHALL"]).await.unwrap(), "+OK");
    for gw in &gws {
        until_metric(
            gw,
            ENTRIES,
            0.0,
            2 * SPREAD,
            "the flush empties the replica's copy",
        )
        .await;
    }
    let calls = up.requests.load(Ordering::SeqCst);
    assert_eq!(ask(b, Q, "sk-one").await.cache, "miss");
    assert_eq!(up.requests.load(Ordering::SeqCst), calls + 1);
}

/// Sends `total` requests round-robin over the replicas from `workers` tasks (questions cycled
/// so that some miss and some hit); counts the answers that were a 200 with the whole body, and
/// returns the longest any request took.
async fn load(
    ports: Arc<Vec<String>>,
    total: usize,
    workers: usize,
    done: Arc<AtomicUsize>,
) -> (usize, Duration) {
    let next = Arc::new(AtomicUsize::new(0));
    let mut tasks = Vec::new();
    for _ in 0..workers {
        let (ports, next, done) = (ports.clone(), next.clone(), done.clone());
        tasks.push(tokio::spawn(async move {
            let client = reqwest::Client::new();
            let (mut ok, mut slowest) = (0, Duration::ZERO);
            loop {
                let i = next.fetch_add(1, Ordering::SeqCst);
                if i >= total {
                    return (ok, slowest);
                }
                let started = std::time::Instant::now();
                let resp = client
                    .post(format!("{}/chat/completions", ports[i % ports.len()]))
                    .bearer_auth("sk-load")
                    .json(&json!({"model": "think", "messages": [{"role": "user",
                        "content": format!("Question number {} under load: what is 2 + 2?", i % 25)}]}))
                    .send()
                    .await;
                if let Ok(r) = resp {
                    if r.status() == 200 {
                        let body = r.text().await.unwrap_or_default();
                        if serde_json::from_str::<Value>(&body).is_ok()
                            && texts(&body) == (THINK_REASONING.into(), THINK_ANSWER.into())
                        {
                            ok += 1;
                        }
                    }
                }
                slowest = slowest.max(started.elapsed());
                done.fetch_add(1, Ordering::SeqCst);
            }
        }));
    }
    let (mut ok, mut slowest) = (0, Duration::ZERO);
    for t in tasks {
        let (n, s) = t.await.unwrap();
        ok += n;
        slowest = slowest.max(s);
    }
    (ok, slowest)
}

#[tokio::test]
async fn redis_killed_under_load_loses_no_request_and_sharing_resumes_when_it_is_back() {
    let mut redis = Redis::start().await;
    let up = FakeUpstream::start("u").await;
    let gws = fleet(&up, &redis, "fc4", 3);
    all_up(&gws).await;
    let before = errors(&gws).await;

    const TOTAL: usize = 200;
    let ports = Arc::new(gws.iter().map(GatewayProc::base_url).collect::<Vec<_>>());
    let done = Arc::new(AtomicUsize::new(0));
    let running = tokio::spawn(load(ports, TOTAL, 4, done.clone()));
    eventually(WAIT, "a quarter of the load is answered", || {
        let done = done.clone();
        async move { (done.load(Ordering::SeqCst) >= TOTAL / 4).then_some(()) }
    })
    .await;
    redis.kill();
    let (ok, _) = running.await.unwrap();
    assert_eq!(
        ok, TOTAL,
        "every request under the Redis loss got its 200 and whole body"
    );
    for gw in &gws {
        until_metric(gw, UP, 0.0, WAIT, "shared_state_up falls to 0").await;
    }
    let after = errors(&gws).await;
    for (b, a) in before.iter().zip(&after) {
        assert!(
            a > b,
            "shared_state_errors_total rose: {before:?} -> {after:?}"
        );
    }

    // Back (empty): every replica reconnects by itself, and sharing works again.
    redis.restart().await;
    all_up(&gws).await;
    let q = "A fresh question after the restart: what is 2 + 2?";
    assert_eq!(ask(&gws[0], q, "sk-one").await.cache, "miss");
    until_redis_entries(&redis, "fc4", 1).await;
    let calls = up.requests.load(Ordering::SeqCst);
    let on_b = ask(&gws[1], q, "sk-one").await;
    assert_eq!(on_b.cache, "hit", "{:?}", on_b.reason);
    assert_eq!(up.requests.load(Ordering::SeqCst), calls);
}

/// Each replica's `shared_state_errors_total`, all ops added up.
async fn errors(gws: &[GatewayProc]) -> Vec<f64> {
    let mut out = Vec::new();
    for gw in gws {
        let text = gw.admin_get("/metrics").await;
        out.push(
            text.lines()
                .filter(|l| l.starts_with("reasoning_gateway_shared_state_errors_total{"))
                .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
                .sum(),
        );
    }
    out
}

async fn submit(gw: &GatewayProc) -> (u16, Value) {
    let r = reqwest::Client::new()
        .post(format!("{}/async/chat/completions", gw.base_url()))
        .bearer_auth("sk-one")
        .json(&json!({"model": "think", "messages": [{"role": "user", "content": Q}]}))
        .send()
        .await
        .expect("the gateway answers");
    let status = r.status().as_u16();
    (status, r.json().await.unwrap())
}

#[tokio::test]
async fn redis_too_slow_under_load_loses_no_request_and_nothing_waits_it_out() {
    let redis = Redis::start().await;
    let up = FakeUpstream::start("u").await;
    let gws = fleet(&up, &redis, "fc6", 2);
    all_up(&gws).await;
    let before = errors(&gws).await;

    // Redis holds every command for far longer than `shared.timeout` (200 ms) and the health
    // check's deadline (1 s): connections stay open, answers do not come.
    const PAUSE: Duration = Duration::from_secs(20);
    let reply = redis
        .command(&["CLIENT", "PAUSE", &PAUSE.as_millis().to_string(), "ALL"])
        .await
        .unwrap();
    assert_eq!(reply, "+OK");
    let paused = std::time::Instant::now();
    for gw in &gws {
        until_metric(gw, UP, 0.0, WAIT, "shared_state_up falls to 0").await;
    }
    // A job cannot be stored: refused, not accepted and lost.
    let (status, body) = submit(&gws[0]).await;
    assert_eq!(status, 503, "{body}");
    assert_eq!(body["error"]["code"], "shared_state_unavailable", "{body}");

    const TOTAL: usize = 60;
    let ports = Arc::new(gws.iter().map(GatewayProc::base_url).collect::<Vec<_>>());
    let (ok, slowest) = load(ports, TOTAL, 4, Arc::new(AtomicUsize::new(0))).await;
    assert!(
        paused.elapsed() < PAUSE,
        "the load ran while Redis was paused"
    );
    assert_eq!(ok, TOTAL, "every request got its 200 and whole body");
    // A request that waited on Redis would wait out the pause.
    assert!(
        slowest < PAUSE / 4,
        "a request waited on the paused Redis: {slowest:?}"
    );
    let after = errors(&gws).await;
    for (b, a) in before.iter().zip(&after) {
        assert!(
            a > b,
            "shared_state_errors_total rose: {before:?} -> {after:?}"
        );
    }

    // The pause ends: both replicas share again by themselves.
    all_up(&gws).await;
    let q = "A question after the pause: what is 3 + 4?";
    assert_eq!(ask(&gws[0], q, "sk-one").await.cache, "miss");
    until_redis_entries(&redis, "fc6", 1).await;
    let calls = up.requests.load(Ordering::SeqCst);
    assert_eq!(ask(&gws[1], q, "sk-one").await.cache, "hit");
    assert_eq!(up.requests.load(Ordering::SeqCst), calls);
    let (status, body) = submit(&gws[1]).await;
    assert_eq!(status, 202, "{body}");
    // Redis kept its data through the pause: once following the stream again, no replica
    // dropped its own copy (what it stored alone meanwhile stays).
    for gw in &gws {
        eventually(
            WAIT,
            "the replica follows the fleet's stream again",
            || async {
                gw.log_text()
                    .contains("The reasoning cache follows the fleet again.")
                    .then_some(())
            },
        )
        .await;
        assert_eq!(
            metric(
                gw,
                "reasoning_gateway_cache_evictions_total{reason=\"purge\"}"
            )
            .await
            .unwrap_or(0.0),
            0.0,
            "a replica dropped its copy after a pause that lost nothing"
        );
        assert!(!gw.log_text().contains("copy dropped"));
    }
}
