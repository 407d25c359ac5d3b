//! Budget forcing (issue 30), end to end through the real binary against the scripted fake
//! upstream: at the reasoning budget the gateway closes the reasoning and the model answers on
//! the same client response; an early end of reasoning is extended; per-request efforts and
//! budgets map to the route's budget.

use std::time::Duration;

use gateway_tests::fake_upstream::FakeUpstream;
use gateway_tests::harness::{run_python, GatewayProc};
use serde_json::{json, Value};

const READY: Duration = Duration::from_secs(20);

fn config(up: std::net::SocketAddr) -> String {
    format!(
        r#"upstreams:
  - name: vllm
    endpoints: ["{up}"]
    continuation: chat_prefix
  - name: plain
    endpoints: ["{up}"]
routes:
  - model: budget-long
    upstream: vllm
    reasoning:
      budget:
        max_tokens: 10
        on_exceed: answer
        effort: {{ low: 3, high: 10 }}
  - model: early
    upstream: vllm
    upstream_model: budget-early
    reasoning:
      budget: {{ min_tokens: 10, max_extensions: 1 }}
  - model: long-error
    upstream: plain
    upstream_model: budget-long
    reasoning:
      budget: {{ max_tokens: 5 }}
  - model: answer-on-plain
    upstream: plain
    upstream_model: budget-long
    reasoning:
      budget: {{ max_tokens: 5, on_exceed: answer }}
"#
    )
}

/// Reasoning, answer, finish reasons, usage, error events and `[DONE]`s of an SSE body.
#[derive(Debug, Default)]
struct Streamed {
    reasoning: String,
    answer: String,
    finish: Vec<String>,
    usage: Vec<Value>,
    errors: Vec<Value>,
    done: usize,
}

fn read_sse(text: &str) -> Streamed {
    let mut s = Streamed::default();
    for line in text.lines() {
        let Some(data) = line.strip_prefix("data: ") else {
            continue;
        };
        if data.trim() == "[DONE]" {
            s.done += 1;
            continue;
        }
        let v: Value = serde_json::from_str(data).expect("each event is JSON");
        if v.get("error").is_some() {
            s.errors.push(v["error"].clone());
        }
        if v.get("usage").is_some_and(|u| !u.is_null()) {
            s.usage.push(v["usage"].clone());
        }
        for c in v["choices"].as_array().into_iter().flatten() {
            s.reasoning
                .push_str(c["delta"]["reasoning_content"].as_str().unwrap_or(""));
            s.answer
                .push_str(c["delta"]["content"].as_str().unwrap_or(""));
            if let Some(f) = c["finish_reason"].as_str() {
                s.finish.push(f.to_string());
            }
        }
    }
    s
}

async fn chat(gw: &GatewayProc, body: Value) -> (u16, String) {
    let resp = reqwest::Client::new()
        .post(format!("{}/chat/completions", gw.base_url()))
        .json(&body)
        .send()
        .await
        .expect("request reaches the gateway");
    let status = resp.status().as_u16();
    (status, resp.text().await.unwrap_or_default())
}

fn reasoning_tokens(n: usize) -> String {
    (0..n).map(|i| format!("r{i} ")).collect()
}

#[tokio::test]
async fn at_the_budget_the_reasoning_is_closed_and_the_answer_streams_on_the_same_response() {
    let up = FakeUpstream::start("a").await;
    let gw = GatewayProc::start(&config(up.addr), READY);
    let (status, text) = chat(
        &gw,
        json!({"model": "budget-long", "stream": true, "max_tokens": 100,
            "stream_options": {"include_usage": true},
            "messages": [{"role": "user", "content": "What is 6 times 7?"}]}),
    )
    .await;
    assert_eq!(status, 200, "{text}");
    let s = read_sse(&text);
    // 11 reasoning tokens: the budget of 10 is passed by one before the gateway acts.
    assert_eq!(s.reasoning, reasoning_tokens(11), "{text}");
    assert_eq!(s.answer, "Final answer: 42.", "{text}");
    assert!(
        !text.contains("Too late"),
        "the first generation was stopped: {text}"
    );
    assert!(s.errors.is_empty(), "{text}");
    assert_eq!(s.finish, ["stop"], "one finish, at the end: {text}");
    assert_eq!(s.done, 1, "one stream: {text}");
    assert_eq!(s.usage.len(), 1, "{text}");
    let u = &s.usage[0];
    assert_eq!(u["completion_tokens"], 11 + 2, "both parts: {u}");
    assert_eq!(
        u["completion_tokens_details"]["reasoning_tokens"], 11,
        "{u}"
    );
    assert_eq!(u["prompt_tokens"], 5, "the client's prompt only: {u}");
    assert_eq!(u["total_tokens"], 5 + 13, "{u}");

    let continuations = up.continuations.lock().unwrap().clone();
    assert_eq!(continuations.len(), 1);
    let c = &continuations[0];
    assert_eq!(
        c["messages"],
        json!([{"role": "user", "content": "What is 6 times 7?"},
               {"role": "assistant",
                "content": format!("<think>{}</think>\n\nFinal answer:", reasoning_tokens(11))}]),
        "prefix: the reasoning so far, closed, then the bridge"
    );
    assert_eq!(c["continue_final_message"], true);
    assert_eq!(c["add_generation_prompt"], false);
    assert_eq!(c["stream"], true);
    assert_eq!(
        c["max_tokens"],
        100 - 11,
        "what is left of the client's max_tokens"
    );
    assert_eq!(c["model"], "budget-long");

    gw.wait_for_metric(
        "reasoning_gateway_reasoning_budget_actions_total{action=\"forced_answer\",route=\"budget-long\"}",
        1.0,
        Duration::from_secs(5),
    )
    .await;
    // The access log says the answer was forced (field names may carry colour codes).
    let log = gw
        .wait_for_log_line("\"forced_answer\"", Duration::from_secs(5))
        .await;
    assert!(
        log.contains("budget") && log.contains("budget-long"),
        "{log}"
    );
}

#[tokio::test]
async fn a_json_client_gets_reasoning_and_forced_answer_in_one_body() {
    let up = FakeUpstream::start("a").await;
    let gw = GatewayProc::start(&config(up.addr), READY);
    let (status, text) = chat(
        &gw,
        json!({"model": "budget-long",
            "messages": [{"role": "user", "content": "What is 6 times 7?"}]}),
    )
    .await;
    assert_eq!(status, 200, "{text}");
    let v: Value = serde_json::from_str(&text).expect("one JSON body");
    let choice = &v["choices"][0];
    assert_eq!(choice["message"]["content"], "Final answer: 42.", "{v}");
    assert_eq!(
        choice["message"]["reasoning_content"],
        reasoning_tokens(11),
        "{v}"
    );
    assert_eq!(choice["finish_reason"], "stop", "{v}");
    assert_eq!(v["usage"]["completion_tokens"], 13, "{v}");
}

#[tokio::test]
async fn request_efforts_and_budgets_choose_the_budget() {
    let up = FakeUpstream::start("a").await;
    let gw = GatewayProc::start(&config(up.addr), READY);
    let ask = |effort: &str| {
        json!({"model": "budget-long", "stream": true, "reasoning_effort": effort,
            "messages": [{"role": "user", "content": "6*7?"}]})
    };
    let (_, low) = chat(&gw, ask("low")).await;
    let low = read_sse(&low);
    assert_eq!(low.reasoning, reasoning_tokens(4), "effort low: 3 tokens");
    assert_eq!(low.answer, "Final answer: 42.");
    let (_, high) = chat(&gw, ask("high")).await;
    assert_eq!(
        read_sse(&high).reasoning,
        reasoning_tokens(11),
        "effort high: 10"
    );

    // Responses `reasoning.effort` maps to the same table.
    let resp: Value = reqwest::Client::new()
        .post(format!("{}/responses", gw.base_url()))
        .json(&json!({"model": "budget-long", "input": "6*7?", "reasoning": {"effort": "low"}}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let text: String = resp["output"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|o| o["type"] == "message")
        .flat_map(|o| o["content"].as_array().cloned().unwrap_or_default())
        .filter_map(|c| c["text"].as_str().map(str::to_owned))
        .collect();
    assert_eq!(text, "Final answer: 42.", "{resp}");

    // Anthropic `thinking.budget_tokens` is a budget too, answered in the Messages shape.
    let msg: Value = reqwest::Client::new()
        .post(format!("{}/messages", gw.base_url()))
        .header("x-api-key", "sk-test")
        .header("anthropic-version", "2023-06-01")
        .json(&json!({"model": "budget-long", "max_tokens": 200,
            "thinking": {"type": "enabled", "budget_tokens": 5},
            "messages": [{"role": "user", "content": "6*7?"}]}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let blocks = msg["content"].as_array().cloned().unwrap_or_default();
    let thinking: String = blocks
        .iter()
        .filter_map(|b| b["thinking"].as_str())
        .collect();
    let answer: String = blocks.iter().filter_map(|b| b["text"].as_str()).collect();
    assert_eq!(thinking, reasoning_tokens(6), "{msg}");
    assert_eq!(answer, "Final answer: 42.", "{msg}");
    assert_eq!(msg["stop_reason"], "end_turn", "{msg}");
}

#[tokio::test]
async fn an_early_end_of_reasoning_is_extended_a_bounded_number_of_times() {
    let up = FakeUpstream::start("a").await;
    let gw = GatewayProc::start(&config(up.addr), READY);
    let (status, text) = chat(
        &gw,
        json!({"model": "early", "stream": true,
            "messages": [{"role": "user", "content": "Think first."}]}),
    )
    .await;
    assert_eq!(status, 200, "{text}");
    let s = read_sse(&text);
    assert_eq!(s.reasoning, "short idea. Wait more thought", "{text}");
    assert_eq!(
        s.answer, "Answer B.",
        "the early answer is withheld: {text}"
    );
    assert_eq!(s.finish, ["stop"], "{text}");
    assert_eq!(s.done, 1, "{text}");
    let continuations = up.continuations.lock().unwrap().clone();
    // One extension (max_extensions: 1): the second early end is accepted.
    assert_eq!(continuations.len(), 1);
    let c = &continuations[0];
    let last = c["messages"].as_array().and_then(|m| m.last()).cloned();
    assert_eq!(
        last,
        Some(json!({"role": "assistant", "content": "<think>short idea. Wait"})),
        "the reasoning stays open and goes on after the word"
    );
    assert_eq!(c["continue_final_message"], true);
    assert_eq!(c["add_generation_prompt"], false);
    gw.wait_for_metric(
        "reasoning_gateway_reasoning_budget_actions_total{action=\"extended\",route=\"early\"}",
        1.0,
        Duration::from_secs(5),
    )
    .await;
}

#[tokio::test]
async fn on_exceed_error_still_ends_the_stream_with_the_budget_error() {
    let up = FakeUpstream::start("a").await;
    let gw = GatewayProc::start(&config(up.addr), READY);
    let (status, text) = chat(
        &gw,
        json!({"model": "long-error", "stream": true,
            "messages": [{"role": "user", "content": "6*7?"}]}),
    )
    .await;
    assert_eq!(status, 200, "{text}");
    let s = read_sse(&text);
    assert_eq!(s.errors.len(), 1, "{text}");
    assert_eq!(s.errors[0]["code"], "reasoning_budget_exceeded");
    assert!(up.continuations.lock().unwrap().is_empty());
    gw.wait_for_metric(
        "reasoning_gateway_reasoning_budget_actions_total{action=\"error\",route=\"long-error\"}",
        1.0,
        Duration::from_secs(5),
    )
    .await;
}

#[tokio::test]
async fn a_pool_that_cannot_continue_gets_the_error_form_with_a_reason_decided_at_load() {
    let up = FakeUpstream::start("a").await;
    let gw = GatewayProc::start(&config(up.addr), READY);
    // Said once at start-up, before any request, and by `check`.
    gw.wait_for_log_line(
        "route `answer-on-plain`: upstream `plain` declares no `continuation`",
        READY,
    )
    .await;
    let out = std::process::Command::new(gateway_tests::harness::gateway_bin())
        .args(["check", "--config"])
        .arg(&gw.config)
        .output()
        .expect("run check");
    let printed = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{printed}");
    assert!(
        printed
            .contains("note: route `answer-on-plain`: upstream `plain` declares no `continuation`"),
        "{printed}"
    );
    let (status, text) = chat(
        &gw,
        json!({"model": "answer-on-plain", "stream": true,
            "messages": [{"role": "user", "content": "6*7?"}]}),
    )
    .await;
    assert_eq!(status, 200, "{text}");
    let s = read_sse(&text);
    assert_eq!(s.errors.len(), 1, "{text}");
    assert_eq!(s.errors[0]["code"], "reasoning_budget_exceeded");
    let message = s.errors[0]["message"].as_str().unwrap_or_default();
    assert!(
        message.contains("upstream `plain` cannot continue a generation"),
        "{message}"
    );
    assert!(
        up.continuations.lock().unwrap().is_empty(),
        "no continuation was tried"
    );
    gw.wait_for_metric(
        "reasoning_gateway_reasoning_budget_actions_total{action=\"error\",route=\"answer-on-plain\"}",
        1.0,
        Duration::from_secs(5),
    )
    .await;
}

#[tokio::test]
async fn the_openai_sdk_reads_a_forced_answer_streamed_and_not() {
    let up = FakeUpstream::start("a").await;
    let gw = GatewayProc::start(&config(up.addr), READY);
    let base = gw.base_url();
    let want = reasoning_tokens(11);
    let out = tokio::task::spawn_blocking(move || {
        run_python("sdk_budget.py", &[&base, &want, "Final answer: 42."])
    })
    .await
    .unwrap();
    assert!(out.contains("sdk ok"), "{out}");
}
