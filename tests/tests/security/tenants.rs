//! Attacks on tenants: reading another tenant's cached answers (as a keyless client, with a
//! spoofed tenant header, through an async job), being replayed another model's answers after a
//! reload or on a canary, and replacing what every tenant of a shared partition is served.

use std::net::IpAddr;
use std::time::{Duration, Instant};

use gateway_tests::fake_upstream::FakeUpstream;
use gateway_tests::harness::{metric_value, repo_root, GatewayProc};
use serde_json::{json, Value};

const WAIT: Duration = Duration::from_secs(20);

fn cache_section(extra: &str) -> String {
    format!(
        "cache:\n  model_dir: {}\n  onnxruntime: {}\n  embed_timeout: 5s\n{extra}",
        repo_root().join("models/minilm").display(),
        repo_root()
            .join("models/onnxruntime/libonnxruntime.so")
            .display()
    )
}

/// Pools `up0`, `up1`… on `upstreams`; one route `think` (`route` inside its map names the
/// upstream and the cache).
fn config(cache_extra: &str, upstreams: &[&FakeUpstream], route: &str) -> String {
    let pools: Vec<String> = upstreams
        .iter()
        .enumerate()
        .map(|(i, u)| format!("{{name: up{i}, endpoints: [\"{}\"]}}", u.addr))
        .collect();
    format!(
        "{}upstreams: [{}]\nroutes:\n  - {{model: think, reasoning: {{parser: deepseek_r1}}, {route}}}\n",
        cache_section(cache_extra),
        pools.join(", ")
    )
}

/// What the client saw.
struct Reply {
    cache: String,
    upstream: Option<String>,
}

/// Asks `question` of route `think` from `from` (a loopback source address) with `headers`.
async fn ask_from(
    gw: &GatewayProc,
    from: Option<&str>,
    question: &str,
    headers: &[(&str, &str)],
) -> Reply {
    let mut client = reqwest::Client::builder();
    if let Some(ip) = from {
        client = client.local_address(ip.parse::<IpAddr>().unwrap());
    }
    let mut req = client
        .build()
        .unwrap()
        .post(format!("{}/chat/completions", gw.base_url()))
        .json(&json!({"model": "think", "messages": [{"role": "user", "content": question}]}));
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let resp = req.send().await.expect("request");
    assert_eq!(resp.status(), 200);
    let h = |n: &str| {
        resp.headers()
            .get(n)
            .map(|v| v.to_str().unwrap().to_string())
    };
    let reply = Reply {
        cache: h("x-reasoning-cache").unwrap_or_default(),
        upstream: h("x-upstream-id"),
    };
    // Read to the end: a client gone before the last byte is an aborted answer, never stored.
    let body = resp.text().await.unwrap();
    assert!(body.contains("The answer is 4"), "{body}");
    reply
}

async fn ask(gw: &GatewayProc, question: &str, headers: &[(&str, &str)]) -> Reply {
    ask_from(gw, None, question, headers).await
}

async fn metric(gw: &GatewayProc, series: &str) -> f64 {
    metric_value(&gw.admin_get("/metrics").await, series).unwrap_or(0.0)
}

const INSERTS: &str = "reasoning_gateway_cache_inserts_total{route=\"think\"}";

/// Waits (bounded) until the route's `cache_inserts_total` is `n`: an answer is stored after
/// the response is sent.
async fn stored(gw: &GatewayProc, n: f64) {
    gw.wait_for_metric(INSERTS, n, WAIT).await;
}

/// Reloads `body` through the admin endpoint and waits for the new generation.
async fn reload(gw: &GatewayProc, body: &str) {
    let text = std::fs::read_to_string(&gw.config).unwrap();
    let head: String = text.lines().take(2).map(|l| format!("{l}\n")).collect();
    let before = generation(gw).await;
    std::fs::write(&gw.config, format!("{head}{body}")).unwrap();
    let r = reqwest::Client::new()
        .post(format!("http://127.0.0.1:{}/admin/reload", gw.admin_port))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "{}", r.text().await.unwrap());
    let deadline = Instant::now() + WAIT;
    while generation(gw).await <= before {
        assert!(Instant::now() < deadline, "no reload:\n{}", gw.log_text());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn generation(gw: &GatewayProc) -> u64 {
    let v: Value = serde_json::from_str(&gw.admin_get("/admin/config").await).unwrap();
    v["generation"].as_u64().unwrap()
}

/// Keyless client A's answer is not replayed to keyless client B (they shared one "anonymous"
/// tenant): without credentials nothing is looked up or stored, unless the route is shared.
#[tokio::test]
async fn a_keyless_clients_answer_is_not_served_to_another_keyless_client() {
    let up = FakeUpstream::start("u").await;
    let body = format!(
        "{}  - {{model: public, upstream: up0, upstream_model: think, reasoning: {{parser: deepseek_r1}}, cache: {{shared_across_tenants: true}}}}\n",
        config("", &[&up], "upstream: up0, cache: {}")
    );
    let gw = GatewayProc::start(&body, WAIT);
    let q = "What is the capital of the country where the Danube ends?";
    assert_eq!(ask(&gw, q, &[]).await.cache, "bypass", "client A");
    let b = ask(&gw, q, &[]).await;
    assert_eq!(b.cache, "bypass", "keyless client B was served A's answer");
    assert_eq!(b.upstream.as_deref(), Some("u"));
    assert_eq!(
        metric(
            &gw,
            "reasoning_gateway_cache_requests_total{result=\"no_credentials\",route=\"think\"}"
        )
        .await,
        2.0
    );
    assert_eq!(metric(&gw, INSERTS).await, 0.0);
    // A key is a tenant: the same question with one is cached for that key only.
    assert_eq!(ask(&gw, q, &[("x-api-key", "sk-a")]).await.cache, "miss");
    stored(&gw, 1.0).await;
    assert_eq!(
        ask(&gw, q, &[("authorization", "Bearer sk-a")]).await.cache,
        "hit"
    );
    assert_eq!(ask(&gw, q, &[("x-api-key", "sk-b")]).await.cache, "miss");
    // A route shared across tenants caches keyless requests, on purpose.
    let shared = |gw: &GatewayProc| {
        let client = reqwest::Client::new();
        let url = format!("{}/chat/completions", gw.base_url());
        async move {
            let r = client
                .post(url)
                .json(&json!({"model": "public", "messages": [{"role": "user", "content": q}]}))
                .send()
                .await
                .unwrap();
            let cache = r.headers()["x-reasoning-cache"]
                .to_str()
                .unwrap()
                .to_string();
            r.bytes().await.unwrap();
            cache
        }
    };
    assert_eq!(shared(&gw).await, "miss");
    gw.wait_for_metric(
        "reasoning_gateway_cache_inserts_total{route=\"public\"}",
        1.0,
        WAIT,
    )
    .await;
    assert_eq!(shared(&gw).await, "hit");
}

/// A client naming the victim in `cache.tenant_header` from a peer that is not a trusted proxy
/// does not reach the victim's partition; the ignored header is counted. The victim's proxy
/// (127.0.0.2, trusted) still names tenants. Internal job-tenant headers are not believed
/// from clients either.
#[tokio::test]
async fn a_spoofed_tenant_header_from_an_untrusted_peer_does_not_reach_the_victim() {
    let up = FakeUpstream::start("u").await;
    let cache = "  tenant_header: x-tenant\n  trusted_proxies: [\"127.0.0.2/32\"]\n";
    let gw = GatewayProc::start(&config(cache, &[&up], "upstream: up0, cache: {}"), WAIT);
    let q = "Summarise the quarterly revenue figures of our biggest client.";
    let victim = [("x-tenant", "victim-corp")];
    assert_eq!(
        ask_from(&gw, Some("127.0.0.2"), q, &victim).await.cache,
        "miss"
    );
    stored(&gw, 1.0).await;
    assert_eq!(
        ask_from(&gw, Some("127.0.0.2"), q, &victim).await.cache,
        "hit",
        "the trusted proxy's tenant header names the tenant"
    );
    // The attacker connects directly (127.0.0.1), with and without a key of its own.
    let spoofed = ask_from(&gw, Some("127.0.0.1"), q, &victim).await;
    assert_eq!(
        spoofed.cache, "bypass",
        "spoofed header served the victim's entry"
    );
    let with_key = [("x-tenant", "victim-corp"), ("x-api-key", "sk-attacker")];
    assert_eq!(
        ask_from(&gw, Some("127.0.0.1"), q, &with_key).await.cache,
        "miss"
    );
    assert_eq!(
        metric(
            &gw,
            "reasoning_gateway_tenant_headers_ignored_total{header=\"x-tenant\"}"
        )
        .await,
        2.0
    );
    // The header the gateway uses for its own job runs, forged with the victim's tenant id.
    let victim_id = reasoning_cache::key::tenant_id(Some("victim-corp"));
    let forged = format!("{} {victim_id}", "0".repeat(64));
    let relay = [("x-reasoning-gateway-tenant", forged.as_str())];
    assert_eq!(
        ask_from(&gw, Some("127.0.0.1"), q, &relay).await.cache,
        "bypass"
    );
    assert_eq!(
        metric(
            &gw,
            "reasoning_gateway_tenant_headers_ignored_total{header=\"x-reasoning-gateway-tenant\"}"
        )
        .await,
        1.0
    );
}

async fn submit(gw: &GatewayProc, question: &str, key: &str) -> String {
    let r = reqwest::Client::new()
        .post(format!("{}/async/chat/completions", gw.base_url()))
        .header("x-api-key", key)
        .json(&json!({"model": "think", "messages": [{"role": "user", "content": question}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202);
    let v: Value = r.json().await.unwrap();
    v["id"].as_str().unwrap().to_string()
}

async fn job_done(gw: &GatewayProc, id: &str, key: &str) -> Value {
    let deadline = Instant::now() + WAIT;
    loop {
        let v: Value = reqwest::Client::new()
            .get(format!("{}/async/jobs/{id}", gw.base_url()))
            .header("x-api-key", key)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        if v["status"] == "succeeded" || v["status"] == "failed" {
            return v;
        }
        assert!(Instant::now() < deadline, "job never finished: {v:#}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// An async job runs as its submitter's tenant (here an `x-api-key` client): it neither gets
/// another tenant's entry nor seeds one another tenant is served. (Jobs took their tenant from
/// `Authorization` only, so every `x-api-key` job and client shared one tenant.)
#[tokio::test]
async fn a_job_does_not_get_or_seed_another_tenants_entries() {
    let up = FakeUpstream::start("u").await;
    let gw = GatewayProc::start(&config("", &[&up], "upstream: up0, cache: {}"), WAIT);
    let requests = |up: &FakeUpstream| up.requests.load(std::sync::atomic::Ordering::SeqCst);

    // Tenant B's answer is cached; tenant A's job on the same question goes upstream.
    let q1 = "Explain how a B-tree keeps itself balanced on insert.";
    assert_eq!(ask(&gw, q1, &[("x-api-key", "sk-b")]).await.cache, "miss");
    stored(&gw, 1.0).await;
    let before = requests(&up);
    let id = submit(&gw, q1, "sk-a").await;
    let job = job_done(&gw, &id, "sk-a").await;
    assert_eq!(job["status"], "succeeded", "{job:#}");
    assert_eq!(
        requests(&up),
        before + 1,
        "tenant A's job was answered from tenant B's cache entry"
    );
    stored(&gw, 2.0).await;

    // Tenant A's job stores under A: A is replayed it, B is not.
    let q2 = "Explain how a skip list finds an element.";
    let id = submit(&gw, q2, "sk-a").await;
    assert_eq!(job_done(&gw, &id, "sk-a").await["status"], "succeeded");
    stored(&gw, 3.0).await;
    assert_eq!(
        ask(&gw, q2, &[("x-api-key", "sk-b")]).await.cache,
        "miss",
        "tenant B was served the entry tenant A's job seeded"
    );
    assert_eq!(ask(&gw, q2, &[("x-api-key", "sk-a")]).await.cache, "hit");
    // The job's owner is the same tenant: another key cannot read it.
    let other = reqwest::Client::new()
        .get(format!("{}/async/jobs/{id}", gw.base_url()))
        .header("x-api-key", "sk-b")
        .send()
        .await
        .unwrap();
    assert_eq!(other.status(), 404);
}

/// After a reload points the route at another upstream, and then at another upstream model,
/// the old answers are not replayed.
#[tokio::test]
async fn after_a_reload_to_another_upstream_or_model_old_answers_are_not_replayed() {
    let (a, b) = (
        FakeUpstream::start("a").await,
        FakeUpstream::start("b").await,
    );
    let key = [("x-api-key", "sk-a")];
    let q = "Prove that the square root of two is irrational.";
    let gw = GatewayProc::start(&config("", &[&a, &b], "upstream: up0, cache: {}"), WAIT);
    assert_eq!(ask(&gw, q, &key).await.cache, "miss");
    stored(&gw, 1.0).await;
    assert_eq!(ask(&gw, q, &key).await.cache, "hit");

    let to_b = config("", &[&a, &b], "upstream: up1, cache: {}");
    reload(&gw, &to_b).await;
    let r = ask(&gw, q, &key).await;
    assert_eq!(
        r.cache, "miss",
        "upstream a's answer replayed for upstream b"
    );
    assert_eq!(r.upstream.as_deref(), Some("b"));
    stored(&gw, 2.0).await;
    assert_eq!(ask(&gw, q, &key).await.cache, "hit");

    let other_model = config(
        "",
        &[&a, &b],
        "upstream: up1, upstream_model: think-bytes, cache: {}",
    );
    reload(&gw, &other_model).await;
    let r = ask(&gw, q, &key).await;
    assert_eq!(r.cache, "miss", "another upstream_model's answer replayed");
    assert_eq!(r.upstream.as_deref(), Some("b"));
}

/// A canary variant does not replay the stable variant's answers (nor the reverse).
#[tokio::test]
async fn a_canary_variant_does_not_replay_stables_answers() {
    let (stable, canary) = (
        FakeUpstream::start("stable").await,
        FakeUpstream::start("canary").await,
    );
    let route = "upstream: up0, cache: {}, canary: {header: x-canary, variants: [{name: stable, upstream: up0, weight: 100}, {name: next, upstream: up1, weight: 0}]}";
    let gw = GatewayProc::start(&config("", &[&stable, &canary], route), WAIT);
    let q = "Which sorting algorithm is stable and runs in n log n worst case?";
    let stable_req = [("x-api-key", "sk-a"), ("x-canary", "false")];
    let canary_req = [("x-api-key", "sk-a"), ("x-canary", "true")];
    assert_eq!(ask(&gw, q, &stable_req).await.cache, "miss");
    stored(&gw, 1.0).await;
    assert_eq!(ask(&gw, q, &stable_req).await.cache, "hit");
    let r = ask(&gw, q, &canary_req).await;
    assert_eq!(r.cache, "miss", "the canary replayed stable's answer");
    assert_eq!(r.upstream.as_deref(), Some("canary"));
    stored(&gw, 2.0).await;
    assert_eq!(ask(&gw, q, &canary_req).await.cache, "hit");
}

/// On a route shared across tenants, `Cache-Control: no-cache` from one tenant fetches a fresh
/// answer but does not replace the entry every tenant is served.
#[tokio::test]
async fn no_cache_on_a_shared_route_does_not_overwrite_the_entry() {
    let up = FakeUpstream::start("u").await;
    let gw = GatewayProc::start(
        &config(
            "",
            &[&up],
            "upstream: up0, cache: {shared_across_tenants: true}",
        ),
        WAIT,
    );
    let q = "What is the boiling point of water at the top of Everest?";
    assert_eq!(ask(&gw, q, &[("x-api-key", "sk-a")]).await.cache, "miss");
    stored(&gw, 1.0).await;
    let r = ask(
        &gw,
        q,
        &[("x-api-key", "sk-attacker"), ("cache-control", "no-cache")],
    )
    .await;
    assert_eq!(r.cache, "bypass");
    assert_eq!(r.upstream.as_deref(), Some("u"));
    // The fresh answer is offered for storage after the response; wait until it was refused.
    gw.wait_for_metric(
        "reasoning_gateway_cache_shared_refreshes_ignored_total{route=\"think\"}",
        1.0,
        WAIT,
    )
    .await;
    assert_eq!(metric(&gw, INSERTS).await, 1.0);
    assert_eq!(
        metric(
            &gw,
            "reasoning_gateway_cache_evictions_total{reason=\"replaced\"}"
        )
        .await,
        0.0,
        "the shared entry was replaced"
    );
    assert_eq!(ask(&gw, q, &[("x-api-key", "sk-c")]).await.cache, "hit");
}
