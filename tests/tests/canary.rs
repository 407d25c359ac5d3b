//! Canary routing end to end: header overrides, sticky users, weights, shadow isolation and
//! automatic rollback of a failing or slow canary.

use std::collections::HashMap;
use std::time::Duration;

use gateway_tests::fake_upstream::FakeUpstream;
use gateway_tests::harness::{metric_value, GatewayProc};
use serde_json::{json, Value};

fn config(a: &FakeUpstream, b: &FakeUpstream, c: &FakeUpstream) -> String {
    format!(
        r#"upstreams:
  - {{name: a, endpoints: ["{}"]}}
  - {{name: b, endpoints: ["{}"]}}
  - {{name: c, endpoints: ["{}"]}}
  - {{name: dead, endpoints: ["127.0.0.1:1"], health_check: {{interval: 100ms}}}}
routes:
  - model: m
    upstream: a
    canary:
      header: x-canary
      sticky_header: x-user-id
      variants:
        - {{name: stable, upstream: a, weight: 50}}
        - {{name: canary, upstream: b, weight: 50}}
        - {{name: mirror, upstream: c, shadow: true}}
  - model: s
    upstream: a
    canary:
      variants:
        - {{name: stable, upstream: a, weight: 100}}
        - {{name: mirror, upstream: dead, shadow: true}}
  - model: failing
    upstream: a
    upstream_model: echo
    canary:
      header: x-canary
      rollback: {{window: 1m, min_requests: 5}}
      variants:
        - {{name: stable, upstream: a, weight: 50}}
        - {{name: canary, upstream: b, weight: 50, upstream_model: error500}}
  - model: down
    upstream: a
    canary:
      header: x-canary
      rollback: {{window: 1m, min_requests: 5}}
      variants:
        - {{name: stable, upstream: a, weight: 50}}
        - {{name: canary, upstream: dead, weight: 50}}
  - model: slowing
    upstream: a
    upstream_model: think
    canary:
      header: x-canary
      rollback: {{window: 1m, min_requests: 5, max_p95_ratio: 3}}
      variants:
        - {{name: stable, upstream: a, weight: 50}}
        - {{name: canary, upstream: b, weight: 50, upstream_model: slow}}
"#,
        a.addr, b.addr, c.addr
    )
}

async fn send(
    gw: &GatewayProc,
    model: &str,
    headers: &[(&str, &str)],
    stream: bool,
) -> (u16, String, String) {
    let mut req = reqwest::Client::new()
        .post(format!("{}/chat/completions", gw.base_url()))
        .json(&json!({"model": model, "stream": stream, "messages": [{"role": "user", "content": "x"}]}));
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let resp = req.send().await.unwrap();
    let status = resp.status().as_u16();
    let variant = resp
        .headers()
        .get("x-gateway-variant")
        .map(|v| v.to_str().unwrap().to_string())
        .unwrap_or_default();
    let served_by = resp
        .headers()
        .get("x-upstream-id")
        .map(|v| v.to_str().unwrap().to_string())
        .unwrap_or_default();
    resp.bytes().await.unwrap();
    (status, variant, served_by)
}

#[tokio::test]
async fn headers_stickiness_weights_and_shadow_isolation() {
    let (a, b, c) = (
        FakeUpstream::start("a").await,
        FakeUpstream::start("b").await,
        FakeUpstream::start("c").await,
    );
    let gw = GatewayProc::start(&config(&a, &b, &c), Duration::from_secs(20));

    assert_eq!(
        send(&gw, "m", &[("x-canary", "true")], false).await,
        (200, "canary".into(), "b".into())
    );
    assert_eq!(
        send(&gw, "m", &[("x-canary", "false")], false).await,
        (200, "stable".into(), "a".into())
    );
    assert_eq!(
        send(&gw, "m", &[("x-gateway-variant", "canary")], false)
            .await
            .1,
        "canary"
    );

    // Sticky users keep their variant.
    for user in ["alice", "bob", "carol", "dave"] {
        let first = send(&gw, "m", &[("x-user-id", user)], false).await.1;
        for _ in 0..5 {
            assert_eq!(
                send(&gw, "m", &[("x-user-id", user)], false).await.1,
                first,
                "{user}"
            );
        }
    }

    // Weights 50/50 over 200 anonymous requests: 100 ± 40 (more than 5 σ).
    let mut counts: HashMap<String, usize> = HashMap::new();
    for _ in 0..200 {
        *counts
            .entry(send(&gw, "m", &[], false).await.1)
            .or_default() += 1;
    }
    for v in ["stable", "canary"] {
        assert!((60..=140).contains(&counts[v]), "{counts:?}");
    }

    // Every served request on `m` was copied to the shadow `c`, which never answered a client.
    gw.wait_for_requests(227, Duration::from_secs(10)).await;
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while c.requests.load(std::sync::atomic::Ordering::Relaxed) < 227 {
        assert!(
            std::time::Instant::now() < deadline,
            "shadow copies missing: {}",
            c.requests.load(std::sync::atomic::Ordering::Relaxed)
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    // A shadow that cannot be reached changes nothing for the client.
    for _ in 0..10 {
        assert_eq!(
            send(&gw, "s", &[], false).await,
            (200, "stable".into(), "a".into())
        );
    }
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let m = gw.admin_get("/metrics").await;
        if metric_value(&m, "reasoning_gateway_shadow_requests_total{result=\"error\",route=\"s\",variant=\"mirror\"}") == Some(10.0) {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "shadow errors not counted:\n{m}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn rolled_back(gw: &GatewayProc, route: &str) -> Option<Value> {
    let v: Value = serde_json::from_str(&gw.admin_get("/admin/canary").await).unwrap();
    v.as_array()
        .unwrap()
        .iter()
        .find(|e| e["route"] == route && e["variant"] == "canary" && e["rolled_back"] == true)
        .cloned()
}

/// Sends weighted requests (no forcing header: forced requests are not counted in the rollback
/// window) until `route`'s canary is rolled back, at most 300; returns its `/admin/canary` entry
/// and what each request got (status, variant).
async fn drive_until_rolled_back(
    gw: &GatewayProc,
    route: &str,
    stream: bool,
) -> (Value, Vec<(u16, String)>) {
    let mut sent = Vec::new();
    for _ in 0..300 {
        let (status, variant, _) = send(gw, route, &[], stream).await;
        sent.push((status, variant));
        if let Some(s) = rolled_back(gw, route).await {
            return (s, sent);
        }
    }
    panic!(
        "{route}: no rollback after 300 weighted requests: {}",
        gw.admin_get("/admin/canary").await
    );
}

#[tokio::test]
async fn failing_and_slow_canaries_are_rolled_back_until_re_enabled() {
    let (a, b, c) = (
        FakeUpstream::start("a").await,
        FakeUpstream::start("b").await,
        FakeUpstream::start("c").await,
    );
    let gw = GatewayProc::start(&config(&a, &b, &c), Duration::from_secs(20));

    for (route, stream) in [("failing", false), ("slowing", true)] {
        let (state, _) = drive_until_rolled_back(&gw, route, stream).await;
        let reason = state["reason"].as_str().unwrap();
        let expected = if route == "failing" {
            "error rate"
        } else {
            "p95 latency"
        };
        assert!(reason.starts_with(expected), "{route}: {reason}");
        // Rolled back: weighted traffic all goes to stable.
        for _ in 0..20 {
            assert_eq!(send(&gw, route, &[], stream).await.1, "stable", "{route}");
        }
    }
    let m = gw.admin_get("/metrics").await;
    assert_eq!(
        metric_value(
            &m,
            "reasoning_gateway_canary_rollbacks_total{route=\"failing\",variant=\"canary\"}"
        ),
        Some(1.0)
    );
    assert_eq!(
        metric_value(
            &m,
            "reasoning_gateway_canary_rollbacks_total{route=\"slowing\",variant=\"canary\"}"
        ),
        Some(1.0)
    );
    assert!(gw.log_text().contains("Canary variant rolled back"));

    // An operator re-enables it.
    let url = format!(
        "http://127.0.0.1:{}/admin/canary/enable?route=failing&variant=canary",
        gw.admin_port
    );
    let v: Value = reqwest::Client::new()
        .post(url)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(v["re_enabled"], true);
    assert!(rolled_back(&gw, "failing").await.is_none());
    let mut seen_canary = false;
    for _ in 0..60 {
        seen_canary |= send(&gw, "failing", &[], false).await.1 == "canary";
    }
    assert!(seen_canary, "the re-enabled canary gets traffic again");
}

#[tokio::test]
async fn a_healthy_canary_is_promoted_step_by_step_to_all_traffic() {
    let (a, b) = (
        FakeUpstream::start("a").await,
        FakeUpstream::start("b").await,
    );
    let config = format!(
        r#"upstreams:
  - {{name: a, endpoints: ["{}"]}}
  - {{name: b, endpoints: ["{}"]}}
routes:
  - model: p
    upstream: a
    canary:
      allow_forcing: true
      rollback: {{window: 1m, min_requests: 5}}
      promotion: {{steps: [20, 60, 100], interval: 1ms, min_requests: 5}}
      variants:
        - {{name: stable, upstream: a}}
        - {{name: canary, upstream: b}}
"#,
        a.addr, b.addr
    );
    let gw = GatewayProc::start(&config, Duration::from_secs(20));
    let promotion = |v: &Value| {
        v.as_array()
            .unwrap()
            .iter()
            .find(|e| e["variant"] == "canary")
            .map(|e| e["promotion"].clone())
    };

    // Weighted traffic only; the canary climbs as its outcomes are recorded. Bounded: with a
    // 20 % first step, 5 canary outcomes take ~25 requests; 2 000 is far beyond any healthy run.
    let mut served = HashMap::<String, usize>::new();
    let mut complete = false;
    for _ in 0..2000 {
        let (status, variant, _) = send(&gw, "p", &[], false).await;
        assert_eq!(status, 200);
        *served.entry(variant).or_default() += 1;
        let state: Value = serde_json::from_str(&gw.admin_get("/admin/canary").await).unwrap();
        if promotion(&state).is_some_and(|p| p["complete"] == true) {
            complete = true;
            break;
        }
    }
    assert!(
        complete,
        "never promoted: {}",
        gw.admin_get("/admin/canary").await
    );
    assert!(served["stable"] > 0 && served["canary"] > 0, "{served:?}");

    // Fully promoted: every weighted request goes to the canary; the header still reaches stable.
    for _ in 0..30 {
        assert_eq!(send(&gw, "p", &[], true).await.1, "canary");
    }
    assert_eq!(
        send(&gw, "p", &[("x-gateway-variant", "stable")], false)
            .await
            .1,
        "stable"
    );
    let state: Value = serde_json::from_str(&gw.admin_get("/admin/canary").await).unwrap();
    let p = promotion(&state).unwrap();
    assert_eq!(p["percent"], 100, "{state}");
    assert_eq!(p["steps"], json!([20, 60, 100]));
    let m = gw.admin_get("/metrics").await;
    assert_eq!(
        metric_value(
            &m,
            "reasoning_gateway_canary_promotions_total{route=\"p\",variant=\"canary\"}"
        ),
        Some(2.0)
    );
    assert_eq!(
        metric_value(
            &m,
            "reasoning_gateway_canary_traffic_share{route=\"p\",variant=\"canary\"}"
        ),
        Some(1.0)
    );
    assert_eq!(
        metric_value(
            &m,
            "reasoning_gateway_canary_traffic_share{route=\"p\",variant=\"stable\"}"
        ),
        Some(0.0)
    );
    assert_eq!(gw.log_text().matches("Canary variant promoted").count(), 2);
}

/// A shadow copy holds a slot of its pool (`max_inflight`) while it runs and never waits for
/// one: while the pool is full the copies are skipped, so a backend sized for one request at a
/// time gets one, and the clients' requests are served as usual.
#[tokio::test]
async fn shadow_copies_take_only_free_slots_of_the_shadow_pool() {
    let (a, c) = (
        FakeUpstream::start("a").await,
        FakeUpstream::start("c").await,
    );
    let cfg = format!(
        r#"upstreams:
  - {{name: a, endpoints: ["{}"]}}
  - {{name: c, endpoints: ["{}"], max_inflight: 1, max_queue: 0}}
routes:
  - model: m
    upstream: a
    canary:
      variants:
        - {{name: stable, upstream: a, weight: 100}}
        - {{name: mirror, upstream: c, shadow: true, upstream_model: gated}}
"#,
        a.addr, c.addr
    );
    let gw = GatewayProc::start(&cfg, Duration::from_secs(20));
    let shadow = |result: &str| {
        format!("reasoning_gateway_shadow_requests_total{{result=\"{result}\",route=\"m\",variant=\"mirror\"}}")
    };
    let served = (200, "stable".to_string(), "a".to_string());
    assert_eq!(send(&gw, "m", &[], false).await, served);
    // Its copy is held at c's gate, in c's only slot.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while c.gated_waiting.load(std::sync::atomic::Ordering::SeqCst) < 1 {
        assert!(
            std::time::Instant::now() < deadline,
            "the first copy never reached c"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    for _ in 0..3 {
        assert_eq!(send(&gw, "m", &[], false).await, served);
    }
    gw.wait_for_metric(&shadow("skipped"), 3.0, Duration::from_secs(10))
        .await;
    assert_eq!(c.requests.load(std::sync::atomic::Ordering::SeqCst), 1);

    // Once the held copy is done its slot is free, and the next copy goes through.
    c.open_gate();
    gw.wait_for_metric(&shadow("ok"), 1.0, Duration::from_secs(10))
        .await;
    assert_eq!(send(&gw, "m", &[], false).await, served);
    gw.wait_for_metric(&shadow("ok"), 2.0, Duration::from_secs(10))
        .await;
    assert_eq!(c.requests.load(std::sync::atomic::Ordering::SeqCst), 2);
    let m = gw.admin_get("/metrics").await;
    assert_eq!(metric_value(&m, &shadow("skipped")), Some(3.0), "{m}");
}

/// A canary whose whole pool is down is refused (503 `no_healthy_upstream`) before any endpoint
/// is tried. Those refusals count against the canary, under its own pool, so it is rolled back
/// and its share of the traffic goes to stable instead of failing for as long as it is down.
#[tokio::test]
async fn a_canary_whose_pool_is_down_is_rolled_back() {
    let (a, b, c) = (
        FakeUpstream::start("a").await,
        FakeUpstream::start("b").await,
        FakeUpstream::start("c").await,
    );
    let gw = GatewayProc::start(&config(&a, &b, &c), Duration::from_secs(20));
    // Wait until the health checks know `dead` is down.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let v: Value = serde_json::from_str(&gw.admin_get("/admin/config").await).unwrap();
        if v["upstreams"]["dead"][0]["healthy"] == false {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "`dead` never marked down: {v}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let (state, sent) = drive_until_rolled_back(&gw, "down", false).await;
    for got in &sent {
        assert!(
            *got == (200, "stable".into()) || *got == (503, "canary".into()),
            "{got:?}"
        );
    }
    let canary_refusals = sent.iter().filter(|(s, _)| *s == 503).count();
    assert!(
        state["reason"].as_str().unwrap().starts_with("error rate"),
        "{state}"
    );
    for _ in 0..20 {
        assert_eq!(send(&gw, "down", &[], false).await.0, 200);
    }
    // The refusals are counted under the canary and its pool, not under stable's.
    let m = gw.admin_get("/metrics").await;
    let refused: f64 = m
        .lines()
        .filter(|l| {
            l.starts_with("reasoning_gateway_requests_total{")
                && l.contains("route=\"down\"")
                && l.contains("status=\"503\"")
        })
        .inspect(|l| {
            assert!(
                l.contains("upstream=\"dead\"") && l.contains("variant=\"canary\""),
                "{l}"
            );
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum();
    assert_eq!(refused, canary_refusals as f64, "{m}");
}
