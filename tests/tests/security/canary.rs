//! Canary control from the public listener: a client cannot pick a variant the route does not
//! let it pick, cannot steer the rollback decision with requests it forced, and cannot reach a
//! variant the gateway rolled back.

use std::time::Duration;

use gateway_tests::fake_upstream::FakeUpstream;
use gateway_tests::harness::GatewayProc;
use serde_json::{json, Value};

/// Sends a chat request; (status, variant served, upstream that answered).
async fn send(gw: &GatewayProc, model: &str, headers: &[(&str, &str)]) -> (u16, String, String) {
    let mut req = reqwest::Client::new()
        .post(format!("{}/chat/completions", gw.base_url()))
        .json(&json!({"model": model, "messages": [{"role": "user", "content": "x"}]}));
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let resp = req.send().await.unwrap();
    let status = resp.status().as_u16();
    let header = |name: &str| {
        resp.headers()
            .get(name)
            .map(|v| v.to_str().unwrap().to_string())
            .unwrap_or_default()
    };
    let (variant, upstream) = (header("x-gateway-variant"), header("x-upstream-id"));
    resp.bytes().await.ok();
    (status, variant, upstream)
}

/// The `/admin/canary` entry of `route`'s variant `canary`.
async fn canary_state(gw: &GatewayProc, route: &str) -> Option<Value> {
    let v: Value = serde_json::from_str(&gw.admin_get("/admin/canary").await).unwrap();
    v.as_array()?
        .iter()
        .find(|e| e["route"] == route && e["variant"] == "canary")
        .cloned()
}

#[tokio::test]
async fn forcing_headers_are_ignored_on_routes_that_do_not_allow_forcing() {
    let (a, b) = (
        FakeUpstream::start("a").await,
        FakeUpstream::start("b").await,
    );
    // The canary gets no weighted traffic: only forcing could reach it.
    let cfg = format!(
        r#"upstreams:
  - {{name: a, endpoints: ["{}"]}}
  - {{name: b, endpoints: ["{}"]}}
routes:
  - model: plain
    upstream: a
    canary:
      variants:
        - {{name: stable, upstream: a, weight: 100}}
        - {{name: canary, upstream: b, weight: 0}}
  - model: closed
    upstream: a
    canary:
      header: x-canary
      allow_forcing: false
      variants:
        - {{name: stable, upstream: a, weight: 100}}
        - {{name: canary, upstream: b, weight: 0}}
  - model: open
    upstream: a
    canary:
      header: x-canary
      variants:
        - {{name: stable, upstream: a, weight: 100}}
        - {{name: canary, upstream: b, weight: 0}}
"#,
        a.addr, b.addr
    );
    let gw = GatewayProc::start(&cfg, Duration::from_secs(20));
    let stable = (200, "stable".to_string(), "a".to_string());
    for _ in 0..10 {
        assert_eq!(
            send(&gw, "plain", &[("x-gateway-variant", "canary")]).await,
            stable,
            "a route without canary.header does not let clients pick by name"
        );
        for forcing in [("x-gateway-variant", "canary"), ("x-canary", "true")] {
            assert_eq!(
                send(&gw, "closed", &[forcing]).await,
                stable,
                "allow_forcing: false ignores {forcing:?}"
            );
        }
    }
    assert_eq!(b.requests.load(std::sync::atomic::Ordering::SeqCst), 0);
    // Where the route enables it (a canary header set, allow_forcing by default), it works.
    assert_eq!(
        send(&gw, "open", &[("x-canary", "true")]).await,
        (200, "canary".to_string(), "b".to_string())
    );
}

/// The attacker pins requests that make any backend fail (here: a model the upstream answers
/// 500) onto a healthy canary. Counted, they would push its error rate past stable's and roll it
/// back for everyone; forced requests are not counted.
#[tokio::test]
async fn forced_failing_requests_do_not_roll_back_a_healthy_canary() {
    let (a, b) = (
        FakeUpstream::start("a").await,
        FakeUpstream::start("b").await,
    );
    let cfg = format!(
        r#"upstreams:
  - {{name: a, endpoints: ["{}"]}}
  - {{name: b, endpoints: ["{}"]}}
routes:
  - model: "*"
    name: any
    upstream: a
    canary:
      header: x-canary
      rollback: {{window: 1m, min_requests: 5}}
      variants:
        - {{name: stable, upstream: a, weight: 50}}
        - {{name: canary, upstream: b, weight: 50}}
"#,
        a.addr, b.addr
    );
    let gw = GatewayProc::start(&cfg, Duration::from_secs(20));
    // Honest weighted traffic until both variants have a full window of healthy requests.
    let mut served = [0usize; 2];
    for _ in 0..300 {
        let (status, variant, _) = send(&gw, "echo", &[]).await;
        assert_eq!(status, 200);
        served[usize::from(variant == "canary")] += 1;
        if served.iter().all(|n| *n >= 10) {
            break;
        }
    }
    assert!(served.iter().all(|n| *n >= 10), "{served:?}");
    // The attack: 30 forced requests that fail on the canary.
    for _ in 0..30 {
        let (status, variant, _) = send(&gw, "error500", &[("x-canary", "true")]).await;
        assert_eq!((status, variant.as_str()), (500, "canary"));
    }
    // One more honest canary request makes the gateway compare the windows again.
    for _ in 0..300 {
        if send(&gw, "echo", &[]).await.1 == "canary" {
            break;
        }
    }
    let state = canary_state(&gw, "any").await.unwrap();
    assert_eq!(state["rolled_back"], false, "{state}");
    assert_eq!(state["window"]["error_rate"], 0.0, "{state}");
    let m = gw.admin_get("/metrics").await;
    assert!(
        !m.contains("reasoning_gateway_canary_rollbacks_total{"),
        "{m}"
    );
}

/// A canary the gateway rolled back stays out of reach: the forcing headers get the weighted
/// pick (stable) instead of the failing variant.
#[tokio::test]
async fn a_rolled_back_variant_cannot_be_forced() {
    let (a, b) = (
        FakeUpstream::start("a").await,
        FakeUpstream::start("b").await,
    );
    let cfg = format!(
        r#"upstreams:
  - {{name: a, endpoints: ["{}"]}}
  - {{name: b, endpoints: ["{}"]}}
routes:
  - model: m
    upstream: a
    upstream_model: echo
    canary:
      header: x-canary
      rollback: {{window: 1m, min_requests: 5}}
      variants:
        - {{name: stable, upstream: a, weight: 50}}
        - {{name: canary, upstream: b, weight: 50, upstream_model: error500}}
"#,
        a.addr, b.addr
    );
    let gw = GatewayProc::start(&cfg, Duration::from_secs(20));
    let mut rolled_back = false;
    for _ in 0..300 {
        send(&gw, "m", &[]).await;
        if canary_state(&gw, "m")
            .await
            .is_some_and(|s| s["rolled_back"] == true)
        {
            rolled_back = true;
            break;
        }
    }
    assert!(rolled_back, "{}", gw.admin_get("/admin/canary").await);
    let before = b.requests.load(std::sync::atomic::Ordering::SeqCst);
    for forcing in [("x-canary", "true"), ("x-gateway-variant", "canary")] {
        for _ in 0..5 {
            assert_eq!(
                send(&gw, "m", &[forcing]).await,
                (200, "stable".to_string(), "a".to_string()),
                "{forcing:?}"
            );
        }
    }
    assert_eq!(
        b.requests.load(std::sync::atomic::Ordering::SeqCst),
        before,
        "the rolled-back canary's backend got traffic"
    );
}
