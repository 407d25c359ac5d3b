//! How a request really ended (issue 29): a stream cut after its `200` is an `upstream_error`,
//! not a success, in `requests_total`, the duration histogram, the access log and the async job
//! record; the canary rolls back a variant whose streams die after their headers.

use std::time::{Duration, Instant};

use gateway_tests::fake_upstream::FakeUpstream;
use gateway_tests::harness::GatewayProc;
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

fn config(addr: std::net::SocketAddr) -> String {
    format!(
        r#"async_jobs:
  callback_secret: outcome-test-secret
upstreams: [{{name: fake, endpoints: ["{addr}"]}}]
routes:
  - {{model: cut, upstream: fake, upstream_model: disconnect}}
  - {{model: stall, upstream: fake, reasoning: {{step_timeout: 100ms, step_timeout_policy: abort}}}}
  - {{model: long, upstream: fake, reasoning: {{max_reasoning_tokens: 10}}}}
  - {{model: gated, upstream: fake}}
  - {{model: think, upstream: fake}}
"#
    )
}

/// Sends a streamed chat request with `x-request-id: id`; the status and the body as received.
async fn stream(gw: &GatewayProc, model: &str, id: &str) -> (u16, String) {
    let resp = reqwest::Client::new()
        .post(format!("{}/chat/completions", gw.base_url()))
        .header("x-request-id", id)
        .json(&json!({"model": model, "stream": true, "messages": [{"role": "user", "content": "x"}]}))
        .send()
        .await
        .unwrap();
    let status = resp.status().as_u16();
    (status, resp.text().await.unwrap_or_default())
}

/// The access-log line of request `id` (bounded wait), parsed.
async fn access_line(gw: &GatewayProc, id: &str) -> Value {
    let needle = format!("\"request_id\":\"{id}\"");
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let log = gw.log_text();
        if let Some(line) = log
            .lines()
            .find(|l| l.contains(&needle) && l.contains("Request finished."))
        {
            return serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}"));
        }
        assert!(Instant::now() < deadline, "no access line for {id}:\n{log}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Sum of the `requests_total` samples of `route` with `status` and `outcome`.
fn requests(metrics: &str, route: &str, status: &str, outcome: &str) -> f64 {
    metrics
        .lines()
        .filter(|l| l.starts_with("reasoning_gateway_requests_total{"))
        .filter(|l| {
            l.contains(&format!("route=\"{route}\""))
                && l.contains(&format!("status=\"{status}\""))
                && l.contains(&format!("outcome=\"{outcome}\""))
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// Sum of the `request_duration_seconds_count` samples of `route` with `outcome`.
fn durations(metrics: &str, route: &str, outcome: &str) -> f64 {
    metrics
        .lines()
        .filter(|l| l.starts_with("reasoning_gateway_request_duration_seconds_count{"))
        .filter(|l| {
            l.contains(&format!("route=\"{route}\""))
                && l.contains(&format!("outcome=\"{outcome}\""))
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

#[tokio::test]
async fn each_way_a_stream_ends_has_its_outcome_in_metrics_and_the_access_log() {
    let up = FakeUpstream::start("a").await;
    let gw = GatewayProc::start_with_args(
        &config(up.addr),
        Duration::from_secs(20),
        &["--log-format", "json"],
    );

    // (route, the status line the client got, the error event it got, outcome).
    let cases = [
        ("think", 200, None, "ok"),
        // The upstream dies after a few tokens: the status line said 200 already.
        ("cut", 200, Some("upstream_disconnected"), "upstream_error"),
        ("stall", 200, Some("step_timeout"), "step_timeout"),
        (
            "long",
            200,
            Some("reasoning_budget_exceeded"),
            "budget_exceeded",
        ),
    ];
    for (route, status, event, outcome) in cases {
        let id = format!("outcome-{route}");
        let (got, body) = stream(&gw, route, &id).await;
        assert_eq!(got, status, "{route}: {body}");
        match event {
            Some(code) => assert!(body.contains(code), "{route}: {body}"),
            None => assert!(!body.contains("\"error\""), "{route}: {body}"),
        }
        assert!(body.trim_end().ends_with("data: [DONE]"), "{route}: {body}");
        let line = access_line(&gw, &id).await;
        assert_eq!(line["outcome"], outcome, "{route}: {line}");
        assert_eq!(line["status"], status, "{route}: {line}");
    }

    // A client that leaves mid-stream: raw HTTP, read the first bytes, close.
    let addr = gw
        .base_url()
        .trim_start_matches("http://")
        .trim_end_matches("/v1")
        .to_string();
    let mut conn = tokio::net::TcpStream::connect(addr).await.unwrap();
    let body =
        json!({"model": "gated", "stream": true, "messages": [{"role": "user", "content": "x"}]})
            .to_string();
    let req = format!(
        "POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nx-request-id: outcome-gone\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    conn.write_all(req.as_bytes()).await.unwrap();
    let mut buf = vec![0u8; 4096];
    let mut seen = String::new();
    while !seen.contains("Step 1") {
        let n = tokio::time::timeout(Duration::from_secs(10), conn.read(&mut buf))
            .await
            .expect("the gated stream started")
            .unwrap();
        assert!(n > 0, "closed early: {seen}");
        seen.push_str(&String::from_utf8_lossy(&buf[..n]));
    }
    assert!(seen.starts_with("HTTP/1.1 200"), "{seen}");
    drop(conn);
    let line = access_line(&gw, "outcome-gone").await;
    assert_eq!(line["outcome"], "client_cancelled", "{line}");
    assert_eq!(line["status"], 200, "{line}");

    let m = gw.admin_get("/metrics").await;
    for (route, outcome) in [
        ("think", "ok"),
        ("cut", "upstream_error"),
        ("stall", "step_timeout"),
        ("long", "budget_exceeded"),
        ("gated", "client_cancelled"),
    ] {
        assert_eq!(requests(&m, route, "200", outcome), 1.0, "{route}:\n{m}");
        assert_eq!(durations(&m, route, outcome), 1.0, "{route}:\n{m}");
    }
    // Nothing that ended badly is counted as ok.
    for route in ["cut", "stall", "long", "gated"] {
        assert_eq!(requests(&m, route, "200", "ok"), 0.0, "{route}:\n{m}");
    }
}

#[tokio::test]
async fn an_async_job_records_the_outcome_its_request_had() {
    let up = FakeUpstream::start("a").await;
    let gw = GatewayProc::start_with_args(
        &config(up.addr),
        Duration::from_secs(20),
        &["--log-format", "json"],
    );
    let client = reqwest::Client::new();
    let mut ids = Vec::new();
    for model in ["cut", "think"] {
        let v: Value = client
            .post(format!("{}/async/chat/completions", gw.base_url()))
            .bearer_auth("sk-a")
            .json(&json!({"model": model, "messages": [{"role": "user", "content": "x"}]}))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        ids.push((model, v["id"].as_str().unwrap().to_string()));
    }
    for (model, id) in ids {
        let job = gw
            .wait_for_job(&id, "sk-a", Duration::from_secs(20), |j| {
                j["outcome"].is_string()
            })
            .await;
        let expected = if model == "cut" {
            "upstream_error"
        } else {
            "ok"
        };
        assert_eq!(job["outcome"], expected, "{job}");
        // The job's request went through the gateway with the job id as its request id: its
        // access-log line says the same.
        let line = access_line(&gw, &id).await;
        assert_eq!(line["outcome"], expected, "{line}");
    }
}

#[tokio::test]
async fn a_canary_whose_streams_die_after_their_headers_is_rolled_back() {
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
    canary:
      rollback: {{window: 1m, min_requests: 5}}
      variants:
        - {{name: stable, upstream: a, weight: 50, upstream_model: think}}
        - {{name: canary, upstream: b, weight: 50, upstream_model: disconnect}}
"#,
        a.addr, b.addr
    );
    let gw = GatewayProc::start(&cfg, Duration::from_secs(20));
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(0)
        .build()
        .unwrap();
    let mut canary_statuses = Vec::new();
    let state = 'driven: {
        for _ in 0..300 {
            let resp = client
                .post(format!("{}/chat/completions", gw.base_url()))
                .json(&json!({"model": "m", "stream": true, "messages": [{"role": "user", "content": "x"}]}))
                .send()
                .await
                .unwrap();
            let status = resp.status().as_u16();
            let variant = resp.headers()["x-gateway-variant"]
                .to_str()
                .unwrap()
                .to_string();
            resp.bytes().await.ok();
            if variant == "canary" {
                canary_statuses.push(status);
            }
            let v: Value = serde_json::from_str(&gw.admin_get("/admin/canary").await).unwrap();
            if let Some(e) = v
                .as_array()
                .unwrap()
                .iter()
                .find(|e| e["variant"] == "canary" && e["rolled_back"] == true)
            {
                break 'driven e.clone();
            }
        }
        panic!("never rolled back: {}", gw.admin_get("/admin/canary").await);
    };
    assert!(
        state["reason"].as_str().unwrap().starts_with("error rate"),
        "{state}"
    );
    // Every failure the canary had was a stream whose status line said 200.
    assert!(
        !canary_statuses.is_empty() && canary_statuses.iter().all(|s| *s == 200),
        "{canary_statuses:?}"
    );
    let m = gw.admin_get("/metrics").await;
    assert_eq!(
        requests(&m, "m", "200", "upstream_error"),
        canary_statuses.len() as f64,
        "{m}"
    );
}
