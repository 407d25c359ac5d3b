//! Fleet mode's canary end to end: three gateway processes on one real redis-server decide
//! rollback and promotion once, on all their outcomes together, and apply the verdict on every
//! replica; an operator's re-enable on one reaches all; with Redis gone each replica falls back
//! to its own window, and a verdict it reached alone is published when Redis is back.

use std::time::Duration;

use gateway_tests::fake_upstream::FakeUpstream;
use gateway_tests::harness::{eventually, metric_value, GatewayProc};
use gateway_tests::redis::Redis;
use serde_json::{json, Value};

const WAIT: Duration = Duration::from_secs(20);
/// Both sides of a comparison need this many outcomes (`rollback.min_requests`).
const MIN: usize = 10;
/// Weighted requests each replica gets: with fewer than `2 * MIN` no replica can have `MIN` on
/// both sides, so none could decide alone.
const PER_REPLICA: usize = 2 * MIN - 1;

fn config(a: &FakeUpstream, b: &FakeUpstream, redis: &Redis) -> String {
    format!(
        r#"upstreams:
  - {{name: a, endpoints: ["{a}"]}}
  - {{name: b, endpoints: ["{b}"]}}
routes:
  - model: failing
    upstream: a
    upstream_model: echo
    canary:
      rollback: {{window: 1m, min_requests: {MIN}}}
      variants:
        - {{name: stable, upstream: a, weight: 50}}
        - {{name: canary, upstream: b, weight: 50, upstream_model: error500}}
  - model: healthy
    upstream: a
    canary:
      rollback: {{window: 1m, min_requests: {MIN}}}
      promotion: {{steps: [50, 100], interval: 1ms, min_requests: {MIN}}}
      variants:
        - {{name: stable, upstream: a}}
        - {{name: canary, upstream: b}}
{shared}"#,
        a = a.addr,
        b = b.addr,
        shared = redis.shared_section("fleet"),
    )
}

struct Fleet {
    replicas: Vec<GatewayProc>,
    redis: Redis,
    _upstreams: (FakeUpstream, FakeUpstream),
}

/// Redis, the fake upstreams and three replicas whose canary view is the fleet's.
async fn fleet() -> Fleet {
    let redis = Redis::start().await;
    let (a, b) = (
        FakeUpstream::start("a").await,
        FakeUpstream::start("b").await,
    );
    let cfg = config(&a, &b, &redis);
    let replicas: Vec<_> = (0..3).map(|_| GatewayProc::start(&cfg, WAIT)).collect();
    for gw in &replicas {
        eventually(
            WAIT,
            "every replica syncs its canary state",
            || async move {
                let entries = canary(gw).await;
                (!entries.is_empty() && entries.iter().all(|e| e["view"] == "fleet")).then_some(())
            },
        )
        .await;
    }
    Fleet {
        replicas,
        redis,
        _upstreams: (a, b),
    }
}

async fn canary(gw: &GatewayProc) -> Vec<Value> {
    serde_json::from_str::<Value>(&gw.admin_get("/admin/canary").await)
        .ok()
        .and_then(|v| v.as_array().cloned())
        .unwrap_or_default()
}

async fn entry(gw: &GatewayProc, route: &str, variant: &str) -> Value {
    canary(gw)
        .await
        .into_iter()
        .find(|e| e["route"] == route && e["variant"] == variant)
        .unwrap_or(Value::Null)
}

/// A weighted request (no header forces a variant): status and the variant that served it.
async fn send(gw: &GatewayProc, model: &str) -> (u16, String) {
    let resp = reqwest::Client::new()
        .post(format!("{}/chat/completions", gw.base_url()))
        .json(&json!({"model": model, "messages": [{"role": "user", "content": "x"}]}))
        .send()
        .await
        .expect("the gateway answers");
    let status = resp.status().as_u16();
    let variant = resp
        .headers()
        .get("x-gateway-variant")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_string();
    let _ = resp.bytes().await;
    (status, variant)
}

/// `PER_REPLICA` weighted requests to each replica, round robin.
async fn spread(fleet: &Fleet, model: &str) {
    for i in 0..PER_REPLICA * fleet.replicas.len() {
        send(&fleet.replicas[i % fleet.replicas.len()], model).await;
    }
}

/// No replica's own window had `MIN` outcomes on both sides: none could have decided alone.
async fn none_could_decide_alone(fleet: &Fleet, route: &str) {
    for (i, gw) in fleet.replicas.iter().enumerate() {
        let own = |e: &Value| e["local_window"]["requests"].as_u64().unwrap_or(0);
        let (s, c) = (
            own(&entry(gw, route, "stable").await),
            own(&entry(gw, route, "canary").await),
        );
        assert!(
            (s as usize) < MIN || (c as usize) < MIN,
            "replica {i} had {s} stable and {c} canary outcomes"
        );
    }
}

fn metric_sum(texts: &[String], sample: &str) -> f64 {
    texts
        .iter()
        .map(|t| metric_value(t, sample).unwrap_or(0.0))
        .sum()
}

async fn metrics(fleet: &Fleet) -> Vec<String> {
    let mut out = Vec::new();
    for gw in &fleet.replicas {
        out.push(gw.admin_get("/metrics").await);
    }
    out
}

/// A route's `/admin/canary` entries without what differs by replica or by the moment asked.
async fn fleet_state(gw: &GatewayProc, route: &str) -> Vec<Value> {
    canary(gw)
        .await
        .into_iter()
        .filter(|e| e["route"] == route)
        .map(|mut e| {
            let m = e.as_object_mut().expect("an object");
            m.remove("local_window");
            m.remove("step_seconds");
            e
        })
        .collect()
}

/// Waits until every replica shows the same state of `route`; returns it.
async fn agreed(fleet: &Fleet, route: &str) -> Vec<Value> {
    eventually(
        WAIT,
        "GET /admin/canary agrees on every replica",
        || async move {
            let first = fleet_state(&fleet.replicas[0], route).await;
            for gw in &fleet.replicas[1..] {
                if fleet_state(gw, route).await != first {
                    return None;
                }
            }
            Some(first)
        },
    )
    .await
}

async fn rolled_back_everywhere(fleet: &Fleet) {
    spread(fleet, "failing").await;
    for (i, gw) in fleet.replicas.iter().enumerate() {
        eventually(
            Duration::from_secs(5),
            &format!("replica {i} applies the fleet's rollback"),
            || async move {
                (entry(gw, "failing", "canary").await["rolled_back"] == true).then_some(())
            },
        )
        .await;
    }
}

#[tokio::test]
async fn errors_spread_over_three_replicas_roll_the_canary_back_on_all_three() {
    let fleet = fleet().await;
    rolled_back_everywhere(&fleet).await;
    none_could_decide_alone(&fleet, "failing").await;

    let state = agreed(&fleet, "failing").await;
    let canary = state
        .iter()
        .find(|e| e["variant"] == "canary")
        .expect("the canary's entry");
    assert_eq!(canary["view"], "fleet", "{canary}");
    assert!(
        canary["reason"]
            .as_str()
            .is_some_and(|r| r.starts_with("error rate 100.0 %")),
        "{canary}"
    );
    assert!(
        canary["window"]["requests"].as_u64() >= Some(MIN as u64),
        "{canary}"
    );
    assert_eq!(canary["traffic_share"], 0.0, "{canary}");
    assert_eq!(canary["decided_locally"], false, "{canary}");

    // Decided once: one replica counted and logged it.
    let m = metrics(&fleet).await;
    let sample = "reasoning_gateway_canary_rollbacks_total{route=\"failing\",variant=\"canary\"}";
    assert_eq!(metric_sum(&m, sample), 1.0);
    let deciders = fleet
        .replicas
        .iter()
        .filter(|gw| gw.log_text().contains("Canary variant rolled back"))
        .count();
    assert_eq!(deciders, 1);

    // No replica sends weighted traffic to the canary any more.
    for gw in &fleet.replicas {
        for _ in 0..15 {
            assert_eq!(send(gw, "failing").await, (200, "stable".to_string()));
        }
    }
}

#[tokio::test]
async fn re_enabling_on_one_replica_clears_the_verdict_on_all() {
    let fleet = fleet().await;
    rolled_back_everywhere(&fleet).await;

    let (status, body) = fleet.replicas[1]
        .admin_post("/admin/canary/enable?route=failing&variant=canary")
        .await;
    assert_eq!(status, 200, "{body}");
    let body: Value = serde_json::from_str(&body).expect("JSON");
    assert_eq!(
        (&body["re_enabled"], &body["view"]),
        (&json!(true), &json!("fleet"))
    );

    let state = agreed(&fleet, "failing").await;
    let canary = state
        .iter()
        .find(|e| e["variant"] == "canary")
        .expect("entry");
    assert_eq!(canary["rolled_back"], false, "{canary}");
    assert_eq!(canary["window"]["requests"], 0, "a fresh window: {canary}");
    // Each replica sends weighted traffic to the canary again (stopping at the first, so the
    // still failing canary is not rolled back again meanwhile).
    for (i, gw) in fleet.replicas.iter().enumerate() {
        let mut seen = false;
        for _ in 0..60 {
            if send(gw, "failing").await.1 == "canary" {
                seen = true;
                break;
            }
        }
        assert!(seen, "replica {i} sends the re-enabled canary no traffic");
    }
}

#[tokio::test]
async fn a_promotion_decided_on_the_fleet_counts_applies_on_all_three() {
    let fleet = fleet().await;
    spread(&fleet, "healthy").await;
    for (i, gw) in fleet.replicas.iter().enumerate() {
        eventually(
            Duration::from_secs(5),
            &format!("replica {i} applies the fleet's promotion"),
            || async move {
                (entry(gw, "healthy", "canary").await["promotion"]["complete"] == true)
                    .then_some(())
            },
        )
        .await;
    }
    none_could_decide_alone(&fleet, "healthy").await;
    let state = agreed(&fleet, "healthy").await;
    let canary = state
        .iter()
        .find(|e| e["variant"] == "canary")
        .expect("entry");
    assert_eq!(canary["promotion"]["percent"], 100, "{canary}");
    assert_eq!(canary["traffic_share"], 1.0, "{canary}");

    let m = metrics(&fleet).await;
    let sample = "reasoning_gateway_canary_promotions_total{route=\"healthy\",variant=\"canary\"}";
    assert_eq!(metric_sum(&m, sample), 1.0, "promoted once, by one replica");
    for gw in &fleet.replicas {
        for _ in 0..15 {
            assert_eq!(send(gw, "healthy").await, (200, "canary".to_string()));
        }
    }
}

#[tokio::test]
async fn without_redis_a_replica_decides_alone_and_its_verdict_reaches_the_fleet_when_back() {
    let mut fleet = fleet().await;
    fleet.redis.kill();
    for gw in &fleet.replicas {
        eventually(WAIT, "the replica says its view is its own", || async move {
            (entry(gw, "failing", "canary").await["view"] == "degraded").then_some(())
        })
        .await;
    }
    // Replica 0 alone sees enough of the failing canary: its own window rolls it back, and it
    // keeps serving every request meanwhile.
    let lone = &fleet.replicas[0];
    let mut rolled_back = false;
    for _ in 0..300 {
        let (status, variant) = send(lone, "failing").await;
        assert!(status == 200 || variant == "canary", "{status} {variant}");
        if entry(lone, "failing", "canary").await["rolled_back"] == true {
            rolled_back = true;
            break;
        }
    }
    assert!(rolled_back, "no local rollback: {:?}", canary(lone).await);
    for gw in &fleet.replicas[1..] {
        assert_eq!(entry(gw, "failing", "canary").await["rolled_back"], false);
    }

    // Redis is back: the verdict is published and applies on the others, marked as decided
    // locally by replica 0.
    fleet.redis.restart().await;
    let state = agreed(&fleet, "failing").await;
    let canary = state
        .iter()
        .find(|e| e["variant"] == "canary")
        .expect("entry");
    assert_eq!(
        (
            &canary["view"],
            &canary["rolled_back"],
            &canary["decided_locally"]
        ),
        (&json!("fleet"), &json!(true), &json!(true)),
        "{canary}"
    );
    for gw in &fleet.replicas[1..] {
        for _ in 0..10 {
            assert_eq!(send(gw, "failing").await, (200, "stable".to_string()));
        }
    }
}
