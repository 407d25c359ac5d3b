//! A real Prometheus scrapes the real gateway under a scripted workload; every dashboard panel's
//! query returns data, every metric a dashboard or rule names exists, and the rules load.

use std::collections::BTreeSet;
use std::time::Duration;

use gateway_tests::fake_upstream::FakeUpstream;
use gateway_tests::harness::{repo_root, GatewayProc};
use gateway_tests::prometheus::{scalar, Prometheus};
use serde_json::{json, Value};

fn config(addr: std::net::SocketAddr) -> String {
    let root = repo_root();
    format!(
        r#"cache:
  model_dir: {}
  onnxruntime: {}
  embed_timeout: 5s
upstreams: [{{name: fake, endpoints: ["{addr}"], max_inflight: 1000}}]
routes:
  - {{model: cached, upstream: fake, upstream_model: think, cache: {{}}}}
  - {{model: analysed, upstream: fake, reasoning: {{stats: true}}}}
  - {{model: stall, upstream: fake, reasoning: {{step_timeout: 100ms}}}}
  - {{model: long, upstream: fake, reasoning: {{max_reasoning_tokens: 10}}}}
  - model: canaried
    upstream: fake
    canary:
      header: x-canary
      rollback: {{min_requests: 2}}
      variants:
        - {{name: stable, upstream: fake, weight: 90, upstream_model: think}}
        - {{name: canary, upstream: fake, weight: 10, upstream_model: error500}}
        - {{name: mirror, upstream: fake, upstream_model: think, shadow: true}}
  - {{model: "*", upstream: fake}}
"#,
        root.join("models/minilm").display(),
        root.join("models/onnxruntime/libonnxruntime.so").display(),
    )
}

/// Cache traffic: a miss, an exact hit, a paraphrase hit, a guard rejection, a bypass right
/// after a hit (a suspect hit), then a purge. Returns the number of proxied requests.
async fn cache_workload(gw: &GatewayProc, client: &reqwest::Client, url: &str) -> usize {
    let ask = |q: &'static str, bypass: bool| {
        let mut req = client
            .post(url)
            .bearer_auth("sk-prometheus")
            .json(&json!({"model": "cached", "messages": [{"role": "user", "content": q}]}));
        if bypass {
            req = req.header("cache-control", "no-cache");
        }
        async move {
            let resp = req.send().await.unwrap();
            let cache = resp.headers()["x-reasoning-cache"]
                .to_str()
                .unwrap()
                .to_string();
            resp.bytes().await.ok();
            cache
        }
    };
    let q = "Sam has 2 apples and buys 2 more. How many apples does Sam have now?";
    assert_eq!(ask(q, false).await, "miss");
    gw.wait_for_metric(
        "reasoning_gateway_cache_inserts_total{route=\"cached\"}",
        1.0,
        Duration::from_secs(20),
    )
    .await;
    assert_eq!(ask(q, false).await, "hit");
    let paraphrase =
        "Sam has got 2 apples and then he buys 2 more. How many apples does Sam have in total now?";
    assert_eq!(ask(paraphrase, false).await, "hit");
    let other_number = "Sam has 2 apples and buys 3 more. How many apples does Sam have now?";
    assert_eq!(ask(other_number, false).await, "miss");
    assert_eq!(ask(q, true).await, "bypass");
    let purge = format!(
        "http://127.0.0.1:{}/admin/cache/purge?route=cached",
        gw.admin_port
    );
    assert!(client
        .post(purge)
        .send()
        .await
        .unwrap()
        .status()
        .is_success());
    5
}

/// Every `expr` of every panel of every dashboard, with template variables filled in.
fn dashboard_queries() -> Vec<(String, String)> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(repo_root().join("dashboards")).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_none_or(|e| e != "json") {
            continue;
        }
        let d: Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
        for p in d["panels"].as_array().unwrap() {
            for t in p["targets"].as_array().unwrap() {
                let expr = t["expr"]
                    .as_str()
                    .unwrap()
                    .replace("$route", ".*")
                    .replace("$upstream", ".*")
                    .replace("$variant", ".*")
                    .replace("$__rate_interval", "1m");
                out.push((
                    format!(
                        "{} / {}",
                        d["title"].as_str().unwrap(),
                        p["title"].as_str().unwrap()
                    ),
                    expr,
                ));
            }
        }
    }
    out
}

/// Metric names (`reasoning_gateway_…`, `gen_ai_…`) in a text.
fn metric_names(text: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    for prefix in ["reasoning_gateway_", "gen_ai_"] {
        for (i, _) in text.match_indices(prefix) {
            let name: String = text[i..]
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect();
            names.insert(name);
        }
    }
    names
}

#[tokio::test]
async fn dashboards_and_rules_work_against_a_real_prometheus() {
    let up = FakeUpstream::start("a").await;
    // In fleet mode, with a real Redis: the fleet's series (and its alert) are exported only then.
    let redis = gateway_tests::redis::Redis::start().await;
    let body = format!("{}{}", redis.shared_section("prom"), config(up.addr));
    let gw = GatewayProc::start(&body, Duration::from_secs(20));
    let prom = Prometheus::start(gw.admin_port).await;

    // A fresh connection per request: after an upstream failure the gateway closes the client
    // connection (see the closing notes), and reqwest does not retry a POST on a closed one.
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(0)
        .build()
        .unwrap();
    let url = format!("{}/chat/completions", gw.base_url());
    let workload = [
        ("think", true),
        ("think", false),
        ("analysed", true),
        ("stall", true),
        ("long", true),
        ("error500", false),
        ("disconnect", true),
        ("echo", false),
    ];
    for round in 0..2 {
        for (model, stream) in workload {
            let body = json!({"model": model, "stream": stream, "response_format": {"type": "json_object"},
                "messages": [{"role": "user", "content": format!("round {round}")}]});
            let resp = client
                .post(&url)
                .json(&body)
                .send()
                .await
                .unwrap_or_else(|e| panic!("{model} (stream {stream}, round {round}): {e}"));
            resp.bytes().await.ok();
        }
    }
    // Canary traffic, weighted (forced requests are not counted in the rollback window): the
    // canary fails and is rolled back; every request is shadowed. Bounded: with a 10 % canary
    // and min_requests 2, about 20 requests do it; 500 without a rollback is a bug.
    let mut canaried = 0;
    loop {
        let body = json!({"model": "canaried", "messages": [{"role": "user", "content": "x"}]});
        let resp = client.post(&url).json(&body).send().await.unwrap();
        resp.bytes().await.ok();
        canaried += 1;
        let state: Value = serde_json::from_str(&gw.admin_get("/admin/canary").await).unwrap();
        if state
            .as_array()
            .unwrap()
            .iter()
            .any(|v| v["rolled_back"] == true)
        {
            break;
        }
        assert!(
            canaried < 500,
            "the failing canary was never rolled back: {state}"
        );
    }
    let n = 2 * workload.len() + canaried + cache_workload(&gw, &client, &url).await;
    gw.wait_for_requests(n, Duration::from_secs(10)).await;
    prom.wait_until(
        "sum(reasoning_gateway_requests_total)",
        |r| scalar(r) == Some(n as f64),
        Duration::from_secs(30),
    )
    .await;
    // rate() needs two samples of a series. Every series but the cache's was born before the
    // last request was logged, so two samples of each requests_total series mean two of those;
    // the cache's last series (bypass, suspect hit, the purge's evictions) are waited for by name.
    for metric in [
        "reasoning_gateway_requests_total",
        "reasoning_gateway_cache_requests_total",
        "reasoning_gateway_cache_suspect_hits_total",
        "reasoning_gateway_cache_evictions_total",
    ] {
        prom.wait_until(
            &format!("min(count_over_time({metric}[1m]))"),
            |r| scalar(r).is_some_and(|c| c >= 2.0),
            Duration::from_secs(30),
        )
        .await;
    }

    let mut empty = Vec::new();
    for (panel, expr) in dashboard_queries() {
        let result = prom
            .query(&expr)
            .await
            .unwrap_or_else(|e| panic!("{panel}: {e}"));
        if result.is_empty() {
            empty.push(format!("{panel}: {expr}"));
        }
    }
    assert!(
        empty.is_empty(),
        "panels without data:\n{}",
        empty.join("\n")
    );

    let metrics = gw.admin_get("/metrics").await;
    let mut used = BTreeSet::new();
    for entry in std::fs::read_dir(repo_root().join("dashboards")).unwrap() {
        let path = entry.unwrap().path();
        if path.is_file() {
            used.extend(metric_names(&std::fs::read_to_string(path).unwrap()));
        }
    }
    used.extend(metric_names(
        &std::fs::read_to_string(repo_root().join("configs/alerts.yml")).unwrap(),
    ));
    assert!(used.len() > 10, "{used:?}");
    let missing: Vec<_> = used
        .iter()
        .filter(|name| !metrics.contains(name.as_str()))
        .collect();
    assert!(
        missing.is_empty(),
        "used by dashboards or rules but not exported: {missing:?}"
    );

    let rules = prom.api("/api/v1/rules").await;
    let loaded: Vec<&Value> = rules["data"]["groups"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|g| g["rules"].as_array().unwrap())
        .collect();
    let written = std::fs::read_to_string(repo_root().join("configs/alerts.yml"))
        .unwrap()
        .matches("- alert:")
        .count();
    assert_eq!(
        loaded.len(),
        written,
        "every rule in configs/alerts.yml is loaded"
    );
    assert!(loaded.iter().all(|r| r["health"] == "ok"), "{loaded:?}");

    // Capacity planning from the gateway's own histograms and from Prometheus.
    let observed: f64 = metrics
        .lines()
        .filter(|l| {
            l.starts_with("reasoning_gateway_request_duration_by_reasoning_length_seconds_count")
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum();
    assert!(observed > 0.0);
    let capacity = |source: &[&str]| {
        let out = std::process::Command::new(gateway_tests::harness::gateway_bin())
            .arg("capacity")
            .args(source)
            .args(["--target-p95", "5s", "--rate", "2", "--slots", "4"])
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout).to_string();
        assert!(
            out.status.success(),
            "{text}{}",
            String::from_utf8_lossy(&out.stderr)
        );
        text
    };
    let own = capacity(&[
        "--metrics",
        &format!("http://127.0.0.1:{}/metrics", gw.admin_port),
    ]);
    assert!(
        own.contains(&format!("requests observed: {observed:.0}\n")),
        "{own}"
    );
    assert!(own.contains("replicas for 2 req/s:"), "{own}");
    let from_prom = capacity(&[
        "--prometheus",
        &format!("http://127.0.0.1:{}", prom.port),
        "--window",
        "all",
    ]);
    assert!(
        from_prom.contains("requests observed:") && from_prom.contains("breakpoint:"),
        "{from_prom}"
    );

    if let Ok(png) = std::env::var("RG_DASHBOARD_PNG") {
        let base = format!("http://127.0.0.1:{}", prom.port);
        let out = gateway_tests::harness::run_python("render_panels.py", &[&base, &png]);
        assert!(out.contains("wrote"), "{out}");
    }
}
