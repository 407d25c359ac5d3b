//! Reasoning observability end to end: a scripted stream with known steps, corrections and a
//! failing JSON check; the exact metric deltas in `/metrics`, the access log and the stats chunk.

use std::time::Duration;

use gateway_tests::fake_upstream::FakeUpstream;
use gateway_tests::harness::{required_metric, GatewayProc};
use serde_json::{json, Value};

fn config(addr: std::net::SocketAddr) -> String {
    format!(
        r#"upstreams: [{{name: fake, endpoints: ["{addr}"]}}]
routes:
  - model: analysed
    name: r1
    upstream: fake
    reasoning:
      parser: deepseek_r1
      stats: true
      verify:
        checks: [unterminated, empty_answer, tag_leak, json, loop, contradiction]
"#
    )
}

async fn stream(gw: &GatewayProc, body: Value) -> Vec<Value> {
    let text = reqwest::Client::new()
        .post(format!("{}/chat/completions", gw.base_url()))
        .json(&body)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    text.split("\n\n")
        .filter_map(|e| e.strip_prefix("data: "))
        .map(|d| {
            if d == "[DONE]" {
                Value::String(d.into())
            } else {
                serde_json::from_str(d).unwrap()
            }
        })
        .collect()
}

#[tokio::test]
async fn steps_corrections_and_failed_checks_reach_metrics_logs_and_the_stats_chunk() {
    let up = FakeUpstream::start("a").await;
    let gw = GatewayProc::start_with_args(
        &config(up.addr),
        Duration::from_secs(20),
        &["--log-format", "json"],
    );
    let body = json!({"model": "analysed", "stream": true, "response_format": {"type": "json_object"},
        "messages": [{"role": "user", "content": "2+2 as JSON"}]});
    let events = stream(&gw, body.clone()).await;

    // No usage chunk reaches a client that did not ask for one, though the gateway asked for it.
    assert!(
        events
            .iter()
            .all(|e| e.get("usage").is_none_or(Value::is_null)),
        "{events:?}"
    );
    let stats = events
        .iter()
        .find_map(|e| e.get("reasoning_stats"))
        .expect("stats chunk");
    assert_eq!(stats["steps"], 3, "{stats}");
    assert_eq!(stats["self_corrections"], 2);
    assert_eq!(stats["verification_failures"], json!(["json"]));
    assert_eq!(
        stats["tokens_estimated"], false,
        "usage came from the upstream"
    );
    assert_eq!(events.last().unwrap(), "[DONE]");

    let _ = stream(&gw, body).await;
    let line = gw
        .wait_for_log_line("\"self_corrections\":2", Duration::from_secs(5))
        .await;
    let v: Value = serde_json::from_str(&line).unwrap();
    assert_eq!(v["reasoning_steps"], 3);
    assert_eq!(v["verification_failures"], "json");
    assert!(v["ttfat_ms"].as_f64().unwrap() >= v["ttft_ms"].as_f64().unwrap());

    // Two identical requests: every figure exactly doubled.
    gw.wait_for_requests(2, Duration::from_secs(5)).await;
    let m = gw.admin_get("/metrics").await;
    let val = |sample: &str| required_metric(&m, sample);
    assert_eq!(
        val("reasoning_gateway_reasoning_steps_sum{route=\"r1\",upstream=\"fake\"}"),
        6.0
    );
    assert_eq!(
        val("reasoning_gateway_reasoning_steps_count{route=\"r1\",upstream=\"fake\"}"),
        2.0
    );
    assert_eq!(
        val("reasoning_gateway_self_corrections_total{route=\"r1\",upstream=\"fake\"}"),
        4.0
    );
    assert_eq!(val("reasoning_gateway_verification_failures_total{check=\"json\",route=\"r1\",upstream=\"fake\"}"), 2.0);
    assert_eq!(val("reasoning_gateway_verifications_total{check=\"json\",result=\"fail\",route=\"r1\",upstream=\"fake\"}"), 2.0);
    for check in [
        "unterminated",
        "empty_answer",
        "tag_leak",
        "loop",
        "contradiction",
    ] {
        let pass = format!("reasoning_gateway_verifications_total{{check=\"{check}\",result=\"pass\",route=\"r1\",upstream=\"fake\"}}");
        assert_eq!(val(&pass), 2.0, "{check}");
    }
    // The fake's usage says 12 completion tokens; 7 of its chunks carried reasoning.
    assert_eq!(
        val("reasoning_gateway_reasoning_tokens_sum{route=\"r1\",upstream=\"fake\"}"),
        14.0
    );
    assert_eq!(
        val("reasoning_gateway_answer_tokens_sum{route=\"r1\",upstream=\"fake\"}"),
        10.0
    );
    assert_eq!(val("reasoning_gateway_time_to_first_answer_token_seconds_count{route=\"r1\",upstream=\"fake\"}"), 2.0);
    assert_eq!(val("reasoning_gateway_request_duration_by_reasoning_length_seconds_count{reasoning_length=\"1-256\",route=\"r1\"}"), 2.0);
    assert_eq!(
        val("gen_ai_client_token_usage_sum{gen_ai_token_type=\"input\",route=\"r1\"}"),
        10.0
    );
    assert_eq!(
        val("gen_ai_client_token_usage_sum{gen_ai_token_type=\"output\",route=\"r1\"}"),
        24.0
    );
    assert_eq!(
        val("gen_ai_server_request_duration_seconds_count{route=\"r1\"}"),
        2.0
    );
    assert_eq!(
        val("gen_ai_server_time_to_first_token_seconds_count{route=\"r1\"}"),
        2.0
    );
}

fn policy_config(addr: std::net::SocketAddr) -> String {
    format!(
        r#"upstreams: [{{name: fake, endpoints: ["{addr}"]}}]
routes:
  - {{model: stall, upstream: fake, reasoning: {{step_timeout: 100ms}}}}
  - {{model: stall-abort, upstream: fake, upstream_model: stall, reasoning: {{step_timeout: 100ms, step_timeout_policy: abort}}}}
  - {{model: long, upstream: fake, reasoning: {{max_reasoning_tokens: 10}}}}
  - {{model: loop, upstream: fake, reasoning: {{verify: {{every_steps: 5, policy: warn}}}}}}
  - {{model: loop-abort, upstream: fake, upstream_model: loop, reasoning: {{verify: {{every_steps: 5, policy: abort}}}}}}
"#
    )
}

fn reasoning_of(events: &[Value]) -> String {
    events
        .iter()
        .filter_map(|e| {
            e["choices"]
                .get(0)
                .and_then(|c| c["delta"]["reasoning_content"].as_str())
        })
        .collect()
}

fn answer_of(events: &[Value]) -> String {
    events
        .iter()
        .filter_map(|e| {
            e["choices"]
                .get(0)
                .and_then(|c| c["delta"]["content"].as_str())
        })
        .collect()
}

fn error_code(events: &[Value]) -> Option<String> {
    events
        .iter()
        .find_map(|e| e["error"]["code"].as_str().map(str::to_owned))
}

#[tokio::test]
async fn step_timeouts_budgets_and_periodic_checks_act_as_configured() {
    let up = FakeUpstream::start("a").await;
    let gw = GatewayProc::start(&policy_config(up.addr), Duration::from_secs(20));
    let ask = |model: &str| json!({"model": model, "stream": true, "messages": [{"role": "user", "content": "go"}]});

    // A stall while reasoning is counted; with `continue` the answer still arrives.
    let events = stream(&gw, ask("stall")).await;
    assert_eq!(answer_of(&events), "Answer.");
    assert_eq!(error_code(&events), None);
    // With `abort` the stream ends with a step_timeout error event and [DONE].
    let events = stream(&gw, ask("stall-abort")).await;
    assert_eq!(reasoning_of(&events), "first half");
    assert_eq!(
        error_code(&events).as_deref(),
        Some("step_timeout"),
        "{events:?}"
    );
    assert_eq!(events.last().unwrap(), "[DONE]");

    // The budget stops a long reasoning right after 10 reasoning tokens.
    let events = stream(&gw, ask("long")).await;
    let reasoning = reasoning_of(&events);
    assert_eq!(
        reasoning.split_whitespace().count(),
        11,
        "{reasoning} {events:?}"
    );
    assert_eq!(
        error_code(&events).as_deref(),
        Some("reasoning_budget_exceeded")
    );
    assert_eq!(answer_of(&events), "");
    assert_eq!(events.last().unwrap(), "[DONE]");

    // A looping reasoning: `warn` sends a reasoning_warning chunk and lets the answer through…
    let events = stream(&gw, ask("loop")).await;
    let warning = events
        .iter()
        .find_map(|e| e.get("reasoning_warning"))
        .expect("warning chunk");
    assert_eq!(warning["check"], "loop");
    assert_eq!(answer_of(&events), "Done.");
    // …`abort` ends it.
    let events = stream(&gw, ask("loop-abort")).await;
    assert_eq!(error_code(&events).as_deref(), Some("verification_failed"));
    assert_eq!(answer_of(&events), "");

    gw.wait_for_requests(5, Duration::from_secs(10)).await;
    let m = gw.admin_get("/metrics").await;
    let val = |sample: &str| required_metric(&m, sample);
    assert_eq!(
        val("reasoning_gateway_step_timeouts_total{route=\"stall\",upstream=\"fake\"}"),
        1.0
    );
    assert_eq!(
        val("reasoning_gateway_step_timeouts_total{route=\"stall-abort\",upstream=\"fake\"}"),
        1.0
    );
    assert_eq!(val("reasoning_gateway_reasoning_aborts_total{reason=\"step_timeout\",route=\"stall-abort\",upstream=\"fake\"}"), 1.0);
    assert_eq!(val("reasoning_gateway_reasoning_aborts_total{reason=\"reasoning_budget_exceeded\",route=\"long\",upstream=\"fake\"}"), 1.0);
    assert_eq!(val("reasoning_gateway_reasoning_aborts_total{reason=\"verification_failed\",route=\"loop-abort\",upstream=\"fake\"}"), 1.0);
    // One loop failure per response, though the periodic check and the final check both saw it.
    assert_eq!(val("reasoning_gateway_verification_failures_total{check=\"loop\",route=\"loop\",upstream=\"fake\"}"), 1.0);
    assert_eq!(val("reasoning_gateway_verification_failures_total{check=\"loop\",route=\"loop-abort\",upstream=\"fake\"}"), 1.0);
}

async fn ask_json(gw: &GatewayProc, model: &str) -> Value {
    let resp = reqwest::Client::new()
        .post(format!("{}/chat/completions", gw.base_url()))
        .json(&json!({"model": model, "messages": [{"role": "user", "content": "go"}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.headers()["content-type"], "application/json");
    resp.json::<Value>().await.unwrap()
}

#[tokio::test]
async fn budgets_and_step_timeouts_also_apply_to_json_requests() {
    let up = FakeUpstream::start("a").await;
    let gw = GatewayProc::start(&policy_config(up.addr), Duration::from_secs(20));
    // The budget stops the upstream after 10 reasoning tokens; the client gets one JSON body.
    let v = ask_json(&gw, "long").await;
    let msg = &v["choices"][0]["message"];
    assert_eq!(
        msg["reasoning_content"]
            .as_str()
            .unwrap()
            .split_whitespace()
            .count(),
        11,
        "{v}"
    );
    assert_eq!(msg["content"], "");
    assert_eq!(v["choices"][0]["finish_reason"], "length");
    assert_eq!(v["object"], "chat.completion");
    // A stall is counted and the answer still arrives…
    let v = ask_json(&gw, "stall").await;
    assert_eq!(v["choices"][0]["message"]["content"], "Answer.", "{v}");
    assert_eq!(
        v["choices"][0]["message"]["reasoning_content"],
        "first halfsecond half"
    );
    assert_eq!(v["choices"][0]["finish_reason"], "stop");
    // …or, with `abort`, ends the answer where it stalled.
    let v = ask_json(&gw, "stall-abort").await;
    assert_eq!(
        v["choices"][0]["message"]["reasoning_content"], "first half",
        "{v}"
    );
    assert_eq!(v["choices"][0]["finish_reason"], "length");

    gw.wait_for_requests(3, Duration::from_secs(10)).await;
    let m = gw.admin_get("/metrics").await;
    assert_eq!(
        required_metric(
            &m,
            "reasoning_gateway_step_timeouts_total{route=\"stall\",upstream=\"fake\"}"
        ),
        1.0
    );
    assert_eq!(required_metric(&m, "reasoning_gateway_reasoning_aborts_total{reason=\"reasoning_budget_exceeded\",route=\"long\",upstream=\"fake\"}"), 1.0);
    assert_eq!(required_metric(&m, "reasoning_gateway_reasoning_aborts_total{reason=\"step_timeout\",route=\"stall-abort\",upstream=\"fake\"}"), 1.0);
}
