//! Gateway core, end to end through the real binary: routing, bodies, errors, pools, metrics.

use std::sync::atomic::Ordering;
use std::time::Duration;

use gateway_tests::fake_upstream::{FakeUpstream, THINK_ANSWER, THINK_REASONING};
use gateway_tests::harness::{http_status, metric_value, GatewayProc};
use serde_json::{json, Value};

const READY: Duration = Duration::from_secs(20);

fn config(endpoints: &[std::net::SocketAddr], extra_route: &str) -> String {
    let eps: Vec<String> = endpoints.iter().map(|a| format!("\"{a}\"")).collect();
    format!(
        r#"upstreams:
  - name: fake
    endpoints: [{}]
    health_check: {{ interval: 100ms, timeout: 200ms }}
routes:
  - model: echo-rewritten
    upstream: fake
    upstream_model: echo-upstream
  - model: "*"
    upstream: fake
{extra_route}"#,
        eps.join(", ")
    )
}

async fn post(gw: &GatewayProc, path: &str, body: impl Into<reqwest::Body>) -> reqwest::Response {
    reqwest::Client::new()
        .post(format!("http://127.0.0.1:{}{path}", gw.port))
        .header("content-type", "application/json")
        .header("authorization", "Bearer sk-test-secret")
        .body(body)
        .send()
        .await
        .expect("request reaches the gateway")
}

async fn error_of(resp: reqwest::Response) -> (u16, Value) {
    let status = resp.status().as_u16();
    let v: Value = resp.json().await.expect("error body is JSON");
    (status, v["error"].clone())
}

#[tokio::test]
async fn requests_are_proxied_with_headers_body_and_model_rewrite_intact() {
    let up = FakeUpstream::start("a").await;
    let gw = GatewayProc::start(&config(&[up.addr], ""), READY);
    let body = json!({"model": "echo-rewritten", "messages": [{"role": "user", "content": "hi"}]});
    let resp = reqwest::Client::new()
        .post(format!("{}/chat/completions", gw.base_url()))
        .header("authorization", "Bearer sk-test-secret")
        .header("x-request-id", "req-123")
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["x-request-id"], "req-123");
    assert_eq!(resp.headers()["x-gateway-route"], "echo-rewritten");
    let v: Value = resp.json().await.unwrap();
    assert_eq!(
        v["echo"]["model"], "echo-upstream",
        "upstream_model rewrite reaches the upstream"
    );
    assert_eq!(v["echo"]["authorization"], "Bearer sk-test-secret");
    assert_eq!(v["echo"]["request_id"], "req-123");
    // Header values never reach the log.
    gw.wait_for_log_line("req-123", Duration::from_secs(5))
        .await;
    let log = gw.log_text();
    assert!(
        !log.contains("sk-test-secret"),
        "the API key leaked into the log:\n{log}"
    );
}

#[tokio::test]
async fn a_one_mebibyte_prompt_arrives_byte_for_byte() {
    let up = FakeUpstream::start("a").await;
    let gw = GatewayProc::start(&config(&[up.addr], ""), READY);
    let prompt: String = (0..1024 * 1024)
        .map(|i| (b'a' + (i % 26) as u8) as char)
        .collect();
    let body = serde_json::to_vec(
        &json!({"model": "echo", "messages": [{"role": "user", "content": prompt}]}),
    )
    .unwrap();
    let checksum: u64 = body.iter().map(|&b| b as u64).sum();
    let len = body.len();
    let v: Value = post(&gw, "/v1/chat/completions", body)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(v["echo"]["body_len"], len);
    assert_eq!(v["echo"]["checksum"], checksum);
}

#[tokio::test]
async fn bodies_over_the_limit_get_413() {
    let up = FakeUpstream::start("a").await;
    let gw = GatewayProc::start(
        &format!("max_body_bytes: 1000\n{}", config(&[up.addr], "")),
        READY,
    );
    let big = json!({"model": "echo", "messages": [{"role": "user", "content": "x".repeat(2000)}]});
    let (status, err) = error_of(post(&gw, "/v1/chat/completions", big.to_string()).await).await;
    assert_eq!(status, 413);
    assert_eq!(err["code"], "request_too_large");
    assert_eq!(
        up.requests.load(std::sync::atomic::Ordering::Relaxed),
        0,
        "nothing reached the upstream"
    );
}

#[tokio::test]
async fn bad_input_gets_openai_errors() {
    let up = FakeUpstream::start("a").await;
    let gw = GatewayProc::start(
        "upstreams: [{name: fake, endpoints: [\"ADDR\"]}]\nroutes: [{model: known, upstream: fake}]\n".replace("ADDR", &up.addr.to_string()).as_str(),
        READY,
    );
    let cases: &[(&str, &str, u16, &str)] = &[
        ("/v1/chat/completions", "{\"model\": ", 400, "invalid_json"),
        (
            "/v1/chat/completions",
            "{\"messages\":[{\"role\":\"user\",\"content\":\"x\"}]}",
            400,
            "missing_required_parameter",
        ),
        (
            "/v1/chat/completions",
            "{\"model\":1,\"messages\":[]}",
            400,
            "invalid_value",
        ),
        (
            "/v1/chat/completions",
            "{\"model\":\"known\",\"messages\":[{\"role\":\"user\"}],\"stream\":\"yes\"}",
            400,
            "invalid_value",
        ),
        (
            "/v1/chat/completions",
            "{\"model\":\"nope\",\"messages\":[{\"role\":\"user\",\"content\":\"x\"}]}",
            404,
            "model_not_found",
        ),
        (
            "/v1/completions",
            "{\"model\":\"known\"}",
            400,
            "invalid_value",
        ),
        ("/v1/audio/speech", "{}", 404, "unknown_url"),
        ("/v1/embeddings", "{}", 400, "missing_required_parameter"),
    ];
    for (path, body, status, code) in cases {
        let (got, err) = error_of(post(&gw, path, body.to_string()).await).await;
        assert_eq!(
            (got, err["code"].as_str().unwrap()),
            (*status, *code),
            "{path} {body}"
        );
        assert!(err["message"].as_str().is_some_and(|m| !m.is_empty()));
        assert!(err.get("type").is_some() && err.get("param").is_some());
    }
    let models: Value = reqwest::get(format!("{}/models", gw.base_url()))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(models["data"][0]["id"], "known");
}

#[tokio::test]
async fn streams_split_reasoning_and_survive_byte_by_byte_delivery() {
    let up = FakeUpstream::start("a").await;
    let gw = GatewayProc::start(&config(&[up.addr], ""), READY);
    for model in ["think", "think-bytes"] {
        let body = json!({"model": model, "stream": true, "messages": [{"role": "user", "content": "2+2?"}]});
        let resp = post(&gw, "/v1/chat/completions", body.to_string()).await;
        assert_eq!(resp.status(), 200);
        let text = resp.text().await.unwrap();
        let (mut reasoning, mut answer) = (String::new(), String::new());
        for data in text
            .split("\n\n")
            .filter_map(|e| e.lines().find_map(|l| l.strip_prefix("data: ")))
        {
            if data == "[DONE]" {
                continue;
            }
            let v: Value = serde_json::from_str(data).unwrap();
            if let Some(d) = v["choices"].get(0).map(|c| &c["delta"]) {
                reasoning.push_str(d["reasoning_content"].as_str().unwrap_or(""));
                answer.push_str(d["content"].as_str().unwrap_or(""));
            }
        }
        assert_eq!(reasoning, THINK_REASONING, "{model}");
        assert_eq!(answer, THINK_ANSWER, "{model}");
        assert!(text.trim_end().ends_with("data: [DONE]"), "{model}");
    }
}

#[tokio::test]
async fn upstream_failures_become_clear_errors_and_are_counted() {
    let up = FakeUpstream::start("a").await;
    let gw = GatewayProc::start(&config(&[up.addr], ""), READY);
    let msg = |model: &str, stream: bool| {
        json!({"model": model, "stream": stream, "messages": [{"role": "user", "content": "x"}]})
            .to_string()
    };

    // Mid-stream death: the client still gets a final error event and [DONE].
    let resp = post(&gw, "/v1/chat/completions", msg("disconnect", true)).await;
    assert_eq!(resp.status(), 200);
    let text = resp.text().await.unwrap();
    let events: Vec<&str> = text
        .split("\n\n")
        .filter(|e| !e.trim().is_empty())
        .collect();
    assert_eq!(events.last().unwrap().trim(), "data: [DONE]", "{text}");
    let err: Value = serde_json::from_str(
        events[events.len() - 2]
            .trim()
            .strip_prefix("data: ")
            .unwrap(),
    )
    .unwrap();
    assert_eq!(err["error"]["code"], "upstream_disconnected", "{text}");

    // A 500 from the upstream is passed through as it is.
    let resp = post(&gw, "/v1/chat/completions", msg("error500", false)).await;
    let (status, err) = error_of(resp).await;
    assert_eq!((status, err["code"].as_str()), (500, Some("boom")));

    // Garbage instead of HTTP: 502 in OpenAI shape.
    let (status, err) =
        error_of(post(&gw, "/v1/chat/completions", msg("garbage", false)).await).await;
    assert_eq!(
        (status, err["code"].as_str()),
        (502, Some("upstream_protocol_error"))
    );

    gw.wait_for_requests(3, Duration::from_secs(5)).await;
    let metrics = gw.admin_get("/metrics").await;
    let disconnects = metric_value(
        &metrics,
        "reasoning_gateway_upstream_errors_total{kind=\"disconnect\",upstream=\"fake\"}",
    );
    assert_eq!(disconnects, Some(1.0), "{metrics}");
    assert_eq!(
        metric_value(
            &metrics,
            "reasoning_gateway_upstream_errors_total{kind=\"status_5xx\",upstream=\"fake\"}"
        ),
        Some(1.0)
    );
    assert_eq!(
        metric_value(
            &metrics,
            "reasoning_gateway_upstream_errors_total{kind=\"protocol\",upstream=\"fake\"}"
        ),
        Some(1.0)
    );
    assert!(metrics.contains("reasoning_gateway_request_duration_seconds_bucket"));
    assert!(metrics.contains("reasoning_gateway_time_to_first_token_seconds_bucket"));
    assert_eq!(
        metric_value(&metrics, "reasoning_gateway_inflight_requests"),
        Some(0.0)
    );
}

#[tokio::test]
async fn a_dead_endpoint_fails_over_and_no_healthy_endpoint_gives_503() {
    let a = FakeUpstream::start("a").await;
    let b = FakeUpstream::start("b").await;
    let gw = GatewayProc::start(&config(&[a.addr, b.addr], ""), READY);
    let body = json!({"model": "echo", "messages": [{"role": "user", "content": "x"}]}).to_string();
    let mut seen = std::collections::HashSet::new();
    for _ in 0..4 {
        let resp = post(&gw, "/v1/chat/completions", body.clone()).await;
        seen.insert(
            resp.headers()["x-upstream-id"]
                .to_str()
                .unwrap()
                .to_string(),
        );
    }
    assert_eq!(seen.len(), 2, "round-robin uses both endpoints");

    // `a` dies: every request still succeeds (connect retry on `b`, then health checks).
    a.stop();
    drop(a);
    for _ in 0..6 {
        let resp = post(&gw, "/v1/chat/completions", body.clone()).await;
        assert_eq!(resp.status(), 200);
        assert_eq!(resp.headers()["x-upstream-id"], "b");
    }
    b.stop();
    drop(b);
    let (status, err) = error_of(post(&gw, "/v1/chat/completions", body.clone()).await).await;
    assert!(status == 503 || status == 502, "status {status}");
    assert!(
        ["no_healthy_upstream", "upstream_unreachable"].contains(&err["code"].as_str().unwrap()),
        "{err}"
    );
    // Once the checks have marked both down, the answer is a plain 503.
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    loop {
        let resp = post(&gw, "/v1/chat/completions", body.clone()).await;
        let route = resp.headers().get("x-gateway-route").cloned();
        let (status, err) = error_of(resp).await;
        if status == 503 {
            assert_eq!(err["code"], "no_healthy_upstream");
            // Counted under its route (not "none"), so the route's error ratio shows the outage.
            assert_eq!(route.unwrap(), "*");
            // The counter moves in the logging phase, which may end after the client has the
            // response: wait (bounded) until it does.
            let counted = std::time::Instant::now() + Duration::from_secs(5);
            loop {
                let m = gw.admin_get("/metrics").await;
                if m.lines().any(|l| {
                    l.starts_with("reasoning_gateway_requests_total{")
                        && l.contains("route=\"*\"")
                        && l.contains("status=\"503\"")
                }) {
                    break;
                }
                assert!(
                    std::time::Instant::now() < counted,
                    "503 never counted:\n{m}"
                );
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            break;
        }
        assert!(std::time::Instant::now() < deadline, "never reported 503");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Upstreams close idle keep-alive connections on their own schedule; a request the gateway
/// sends on one that was just closed must go out again on a new connection, not fail, even
/// when the pool has a single endpoint.
#[tokio::test]
async fn a_pooled_connection_the_upstream_closed_is_retried_on_a_new_one() {
    let up = FakeUpstream::start("a").await;
    let gw = GatewayProc::start(&config(&[up.addr], ""), READY);
    let body =
        json!({"model": "drop-reused", "messages": [{"role": "user", "content": "x"}]}).to_string();
    // Each request after the first on a connection finds it closed; how many requests reuse
    // one depends on when the pool takes it back, so send until a few have.
    for sent in 1..=50 {
        let resp = post(&gw, "/v1/chat/completions", body.clone()).await;
        assert_eq!(resp.status(), 200, "request {sent}");
        let v: Value = resp.json().await.unwrap();
        assert_eq!(v["echo"]["model"], "drop-reused", "{v}");
        if up.dropped_reused.load(Ordering::Relaxed) >= 3 {
            return;
        }
    }
    panic!("the gateway never reused a pooled connection");
}

/// Clients that send `Expect: 100-continue` (curl for large bodies, .NET, Java) hold the body
/// back until the server says to go on; the gateway says so itself, since it reads the body
/// before choosing an upstream, and does not pass the expectation on.
#[tokio::test]
async fn a_client_expecting_100_continue_is_told_to_send_its_body() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let up = FakeUpstream::start("a").await;
    let gw = GatewayProc::start(&config(&[up.addr], ""), READY);
    let body = json!({"model": "echo", "messages": [{"role": "user", "content": "x"}]}).to_string();
    let mut conn = tokio::net::TcpStream::connect(("127.0.0.1", gw.port))
        .await
        .unwrap();
    let head = format!(
        "POST /v1/chat/completions HTTP/1.1\r\nHost: gw\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\nExpect: 100-continue\r\nConnection: close\r\n\r\n",
        body.len()
    );
    conn.write_all(head.as_bytes()).await.unwrap();
    let mut interim = [0u8; 25];
    tokio::time::timeout(Duration::from_secs(5), conn.read_exact(&mut interim))
        .await
        .expect("no 100 Continue while the client held its body back")
        .unwrap();
    assert_eq!(&interim, b"HTTP/1.1 100 Continue\r\n\r\n");
    conn.write_all(body.as_bytes()).await.unwrap();
    let mut resp = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), conn.read_to_end(&mut resp))
        .await
        .expect("no response after the body")
        .unwrap();
    let resp = String::from_utf8_lossy(&resp);
    assert!(resp.starts_with("HTTP/1.1 200"), "{resp}");
    let json_at = resp.find("{\"echo\"").expect("the upstream's answer");
    let v: Value = serde_json::Deserializer::from_str(&resp[json_at..])
        .into_iter()
        .next()
        .unwrap()
        .unwrap();
    assert_eq!(v["echo"]["body_len"], body.len());
    assert_eq!(
        v["echo"]["expect"],
        Value::Null,
        "the expectation was passed upstream"
    );
}

/// A stream through the gateway held by the upstream (model `gated`) until it opens its gate;
/// returns the body the client read once the stream ends.
async fn held_stream(gw: &GatewayProc, up: &FakeUpstream) -> tokio::task::JoinHandle<String> {
    held_stream_of(gw, up, "gated", 1).await
}

/// `held_stream` with the request's model (routed to a `gated` upstream model) and the number
/// of streams the upstream holds once this one is held.
async fn held_stream_of(
    gw: &GatewayProc,
    up: &FakeUpstream,
    model: &str,
    held: usize,
) -> tokio::task::JoinHandle<String> {
    let body =
        json!({"model": model, "stream": true, "messages": [{"role": "user", "content": "x"}]});
    let resp = post(gw, "/v1/chat/completions", body.to_string()).await;
    assert_eq!(resp.status(), 200);
    let read = tokio::spawn(async move {
        let mut text = String::new();
        let mut resp = resp;
        while let Ok(Some(chunk)) = resp.chunk().await {
            text.push_str(&String::from_utf8_lossy(&chunk));
        }
        text
    });
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while up.gated_waiting.load(Ordering::SeqCst) != held {
        assert!(
            std::time::Instant::now() < deadline,
            "the upstream never held the stream"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    read
}

/// A gateway told to stop by `signal` while a stream is held at the upstream's gate: it has
/// started draining (unready, no new connections), is still running and the stream is whole.
async fn draining_with_a_stream_held(
    signal: i32,
) -> (FakeUpstream, GatewayProc, tokio::task::JoinHandle<String>) {
    let up = FakeUpstream::start("a").await;
    let mut gw = GatewayProc::start(&config(&[up.addr], ""), READY);
    let read = held_stream(&gw, &up).await;
    gw.send_signal(signal);
    gw.wait_for_log_line(
        "waiting for the requests in flight",
        Duration::from_secs(10),
    )
    .await;
    assert_eq!(http_status(gw.admin_port, "/readyz"), Some(503));
    assert!(gw.is_running(), "exited with a stream in flight");
    assert!(!read.is_finished(), "the stream was cut");
    (up, gw, read)
}

/// Deploys and restarts send SIGTERM while reasoning streams are running (for minutes): they
/// finish, while the gateway takes no new connections and reports itself unready, and then it
/// exits at once.
#[tokio::test]
async fn sigterm_lets_the_streams_in_flight_finish_then_exits() {
    let (up, mut gw, read) = draining_with_a_stream_held(libc::SIGTERM).await;
    up.open_gate();
    let text = tokio::time::timeout(Duration::from_secs(10), read)
        .await
        .expect("the stream did not finish")
        .unwrap();
    assert!(text.trim_end().ends_with("data: [DONE]"), "{text}");
    assert!(gw.wait_exit(Duration::from_secs(10)).success());
    assert!(gw.log_text().contains("Gateway stopped."));
}

/// `make run` is stopped with Ctrl-C: SIGINT drains like SIGTERM (Pingora's own SIGINT handling
/// would cut the streams and skip the cache's snapshot), and a second Ctrl-C stops at once.
#[tokio::test]
async fn ctrl_c_drains_like_sigterm_and_a_second_ctrl_c_stops_at_once() {
    let (_up, mut gw, read) = draining_with_a_stream_held(libc::SIGINT).await;
    gw.send_signal(libc::SIGINT);
    let status = gw.wait_exit(Duration::from_secs(10));
    assert_eq!(status.code(), Some(130), "{status:?}");
    let text = tokio::time::timeout(Duration::from_secs(10), read)
        .await
        .expect("the client was left hanging")
        .unwrap();
    assert!(!text.contains("[DONE]"), "{text}");
    assert!(gw.log_text().contains("Second Ctrl-C: stopping at once."));
}

/// `drain_timeout` bounds the wait: a stream still running then is cut and the gateway exits.
#[tokio::test]
async fn a_stream_outlasting_drain_timeout_is_cut_and_the_gateway_exits() {
    let up = FakeUpstream::start("a").await;
    let cfg = format!("drain_timeout: 300ms\n{}", config(&[up.addr], ""));
    let mut gw = GatewayProc::start(&cfg, READY);
    let read = held_stream(&gw, &up).await;
    gw.send_sigterm();
    assert!(gw.wait_exit(Duration::from_secs(10)).success());
    let text = tokio::time::timeout(Duration::from_secs(10), read)
        .await
        .expect("the client was left hanging")
        .unwrap();
    assert!(!text.contains("[DONE]"), "{text}");
    assert!(gw
        .log_text()
        .contains("still in flight after drain_timeout"));
}

/// Clients look models up one by one (ids may contain `/`), and send embeddings requests to the
/// same base URL: those are routed by `model` and forwarded byte for byte.
#[tokio::test]
async fn single_models_and_embeddings_are_served() {
    let up = FakeUpstream::start("a").await;
    let cfg = format!(
        "upstreams: [{{name: fake, endpoints: [\"{}\"]}}]\nroutes:\n  - {{model: deepseek-ai/DeepSeek-R1, upstream: fake, reasoning: {{step_timeout: 5s}}}}\n  - {{model: \"qwq-*\", upstream: fake}}\n",
        up.addr
    );
    let gw = GatewayProc::start(&cfg, READY);
    let get = |path: &str| reqwest::get(format!("http://127.0.0.1:{}{path}", gw.port));
    for (path, id) in [
        (
            "/v1/models/deepseek-ai/DeepSeek-R1",
            "deepseek-ai/DeepSeek-R1",
        ),
        (
            "/v1/models/deepseek-ai%2FDeepSeek-R1",
            "deepseek-ai/DeepSeek-R1",
        ),
        ("/v1/models/qwq-32b", "qwq-32b"),
    ] {
        let resp = get(path).await.unwrap();
        assert_eq!(resp.status(), 200, "{path}");
        let v: Value = resp.json().await.unwrap();
        assert_eq!(v["id"], id);
        assert_eq!(v["object"], "model");
    }
    let (status, err) = error_of(get("/v1/models/gpt-4").await.unwrap()).await;
    assert_eq!(
        (status, err["code"].as_str()),
        (404, Some("model_not_found"))
    );

    // The body reaches the upstream untouched: no model rewrite, no `stream` forced by the
    // route's step timeout, no usage options.
    let body = r#"{"model":"qwq-32b","input":"the same bytes","encoding_format":"float"}"#;
    let resp = post(&gw, "/v1/embeddings", body).await;
    assert_eq!(resp.status(), 200);
    let v: Value = resp.json().await.unwrap();
    assert_eq!(v["data"][0]["embedding"][0], 14.0, "{v}");
    assert_eq!(v["received_body_len"], body.len());
    let body = r#"{"model":"deepseek-ai/DeepSeek-R1","input":["a","bc"]}"#;
    let v: Value = post(&gw, "/v1/embeddings", body)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(v["data"].as_array().unwrap().len(), 2, "{v}");
    assert_eq!(v["received_body_len"], body.len(), "the body was rewritten");
    let (status, err) = error_of(post(&gw, "/v1/embeddings", r#"{"model":"qwq-32b"}"#).await).await;
    assert_eq!((status, err["param"].as_str()), (400, Some("input")));
    let (status, err) =
        error_of(post(&gw, "/v1/embeddings", r#"{"model":"gpt-4","input":"x"}"#).await).await;
    assert_eq!(
        (status, err["code"].as_str()),
        (404, Some("model_not_found"))
    );
}

#[tokio::test]
async fn json_logs_carry_one_structured_line_per_request() {
    let up = FakeUpstream::start("a").await;
    let gw =
        GatewayProc::start_with_args(&config(&[up.addr], ""), READY, &["--log-format", "json"]);
    let body = json!({"model": "echo", "messages": [{"role": "user", "content": "x"}]}).to_string();
    let resp = post(&gw, "/v1/chat/completions", body).await;
    let rid = resp.headers()["x-request-id"].to_str().unwrap().to_string();
    assert_eq!(rid.len(), 32, "a generated id");
    resp.bytes().await.unwrap();
    let line = gw.wait_for_log_line(&rid, Duration::from_secs(5)).await;
    let v: Value = serde_json::from_str(&line).expect("JSON log line");
    assert_eq!(v["status"], 200);
    assert_eq!(v["route"], "*");
    assert!(v["duration_ms"].as_f64().is_some());
}

/// A pool with `max_inflight` lets that many requests through, queues the next ones up to
/// `max_queue` (first come, first served), answers 429 with `retry-after` past the queue or after
/// `queue_timeout`, and a queued request goes through as soon as a slot frees.
#[tokio::test]
async fn a_busy_pool_queues_then_refuses_with_429_and_retry_after() {
    let (up, tight) = (
        FakeUpstream::start("a").await,
        FakeUpstream::start("b").await,
    );
    let gw = GatewayProc::start(
        &format!(
            r#"upstreams:
  - {{name: fake, endpoints: ["{}"], max_inflight: 2, max_queue: 1}}
  - {{name: tight, endpoints: ["{}"], max_inflight: 1, queue_timeout: 200ms}}
routes:
  - {{model: tight-gated, upstream: tight, upstream_model: gated}}
  - {{model: "*", upstream: fake}}
"#,
            up.addr, tight.addr
        ),
        READY,
    );
    let admission = |gw_config: &str, pool: &str| -> Value {
        serde_json::from_str::<Value>(gw_config).unwrap()["admission"][pool].clone()
    };
    let first = held_stream_of(&gw, &up, "gated", 1).await;
    let second = held_stream_of(&gw, &up, "gated", 2).await;
    let queued = {
        let body = json!({"model": "echo", "messages": [{"role": "user", "content": "queued"}]});
        let gw_port = gw.port;
        tokio::spawn(async move {
            let r = reqwest::Client::new()
                .post(format!("http://127.0.0.1:{gw_port}/v1/chat/completions"))
                .json(&body)
                .send()
                .await
                .unwrap();
            (r.status().as_u16(), r.text().await.unwrap())
        })
    };
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let state = admission(&gw.admin_get("/admin/config").await, "fake");
        if state["waiting"] == 1 {
            assert_eq!(state["in_flight"], 2, "{state}");
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "never queued: {state}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }

    // The line is full: refused at once, in OpenAI shape, with a hint when to retry.
    let body = json!({"model": "echo", "messages": [{"role": "user", "content": "x"}]});
    let resp = post(&gw, "/v1/chat/completions", body.to_string()).await;
    assert_eq!(resp.headers()["retry-after"], "1");
    let (status, err) = error_of(resp).await;
    assert_eq!(status, 429);
    assert_eq!(err["code"], "upstream_queue_full");
    assert_eq!(err["type"], "rate_limit_error");
    assert!(
        !queued.is_finished(),
        "the queued request went through while both slots were held"
    );

    // Slots free up: the queued request is served, the held streams end normally.
    up.open_gate();
    let (status, text) = queued.await.unwrap();
    assert_eq!(status, 200, "{text}");
    assert!(
        text.contains("body_len"),
        "the upstream answered it: {text}"
    );
    for s in [first, second] {
        assert!(s.await.unwrap().contains("[DONE]"));
    }
    // The slots are released in the gateway's logging phase, which can end after the client
    // already has `[DONE]`: wait (bounded) for the release instead of reading at once.
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    loop {
        let state = admission(&gw.admin_get("/admin/config").await, "fake");
        if state["in_flight"] == 0 {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "slots never released: {state}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }

    // A full pool whose slot does not free in time: 429 after queue_timeout.
    let held = held_stream_of(&gw, &tight, "tight-gated", 1).await;
    let started = std::time::Instant::now();
    let body = json!({"model": "tight-gated", "messages": [{"role": "user", "content": "x"}]});
    let (status, err) = error_of(post(&gw, "/v1/chat/completions", body.to_string()).await).await;
    assert_eq!(
        (status, err["code"].as_str()),
        (429, Some("upstream_queue_timeout"))
    );
    assert!(started.elapsed() >= Duration::from_millis(200));
    tight.open_gate();
    assert!(held.await.unwrap().contains("[DONE]"));

    let m = gw.admin_get("/metrics").await;
    for (series, want) in [
        ("reasoning_gateway_upstream_rejections_total{reason=\"queue_full\",upstream=\"fake\"}", 1.0),
        ("reasoning_gateway_upstream_rejections_total{reason=\"queue_timeout\",upstream=\"tight\"}", 1.0),
        ("reasoning_gateway_upstream_queue_wait_seconds_count{upstream=\"fake\"}", 1.0),
        ("reasoning_gateway_upstream_queued_requests{upstream=\"fake\"}", 0.0),
    ] {
        assert_eq!(metric_value(&m, series), Some(want), "{series}");
    }
}

/// systemd, Docker and login shells often start services with a soft limit of 1 024 open files
/// while allowing many more, and every running stream holds two (client and upstream). The
/// gateway raises its soft limit to the hard one: started at 256, it carries 300 held streams
/// (600 descriptors) to the end, reports the limit it runs with, and warns when even the hard
/// limit is low.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_low_soft_open_file_limit_is_raised_so_hundreds_of_streams_complete() {
    const STREAMS: usize = 300;
    let up = FakeUpstream::start("fd").await;
    let gw = GatewayProc::start_with_fd_limit(&config(&[up.addr], ""), READY, (256, 4096));
    let body =
        json!({"model": "gated", "stream": true, "messages": [{"role": "user", "content": "x"}]})
            .to_string();
    let streams: Vec<_> = (0..STREAMS)
        .map(|_| {
            let (port, body) = (gw.port, body.clone());
            tokio::spawn(async move {
                let resp = reqwest::Client::new()
                    .post(format!("http://127.0.0.1:{port}/v1/chat/completions"))
                    .header("content-type", "application/json")
                    .body(body)
                    .send()
                    .await;
                match resp {
                    Ok(r) => (r.status().as_u16(), r.text().await.unwrap_or_default()),
                    Err(e) => (0, e.to_string()),
                }
            })
        })
        .collect();
    // All of them open at once, held by the upstream mid-reasoning.
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while up.gated_waiting.load(Ordering::SeqCst) < STREAMS {
        if streams.iter().any(tokio::task::JoinHandle::is_finished)
            || std::time::Instant::now() > deadline
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let m = gw.admin_get("/metrics").await;
    assert_eq!(metric_value(&m, "process_max_fds"), Some(4096.0));
    let open = metric_value(&m, "process_open_fds").unwrap();
    assert!(
        open >= (2 * STREAMS) as f64,
        "{open} descriptors open with {} streams held",
        up.gated_waiting.load(Ordering::SeqCst)
    );
    up.open_gate();
    for s in streams {
        let (status, text) = s.await.unwrap();
        assert_eq!(status, 200, "{text}");
        assert!(
            text.contains("[DONE]") && !text.contains("\"error\""),
            "{text}"
        );
    }
    assert!(gw.log_text().contains("Raised the open-file limit"));

    // A hard limit that low cannot be raised: said at start-up, with what it means.
    let low = GatewayProc::start_with_fd_limit(&config(&[up.addr], ""), READY, (256, 256));
    let m = low.admin_get("/metrics").await;
    assert_eq!(metric_value(&m, "process_max_fds"), Some(256.0));
    assert!(
        low.log_text().contains("about 128 streams can run at once"),
        "{}",
        low.log_text()
    );
}
