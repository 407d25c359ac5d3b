//! `POST /v1/responses` and `POST /v1/messages` over a chat upstream, end to end through the real
//! binary: the official `openai` SDK (Responses), the `anthropic` SDK with thinking, the OpenAI
//! Agents SDK with a function tool, raw HTTP for bad input, and `requests_total{api}`.

use std::time::Duration;

use gateway_tests::fake_upstream::{FakeUpstream, THINK_ANSWER, THINK_REASONING};
use gateway_tests::harness::{metric_value, run_python, GatewayProc};
use serde_json::{json, Value};

const READY: Duration = Duration::from_secs(20);

fn chat_config(up: &FakeUpstream, extra: &str) -> String {
    format!(
        "upstreams: [{{name: fake, endpoints: [\"{}\"]}}]\nroutes:\n  - {{model: \"think*\", upstream: fake}}\n  - {{model: tool, upstream: fake}}\n  - {{model: \"echo*\", upstream: fake}}\n{extra}",
        up.addr
    )
}

async fn post(
    gw: &GatewayProc,
    path: &str,
    headers: &[(&str, &str)],
    body: Value,
) -> (u16, String) {
    let mut req = reqwest::Client::new()
        .post(format!("http://127.0.0.1:{}{path}", gw.port))
        .header("content-type", "application/json");
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let resp = req.json(&body).send().await.expect("gateway answers");
    let status = resp.status().as_u16();
    (status, resp.text().await.unwrap_or_default())
}

async fn python(script: &'static str, args: Vec<String>) -> String {
    tokio::task::spawn_blocking(move || {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        run_python(script, &args)
    })
    .await
    .unwrap()
}

#[tokio::test]
async fn the_openai_sdk_reads_reasoning_items_and_calls_tools_over_responses() {
    let up = FakeUpstream::start("a").await;
    let gw = GatewayProc::start(&chat_config(&up, ""), READY);
    let args = vec![gw.base_url(), THINK_REASONING.into(), THINK_ANSWER.into()];
    let out = python("sdk_responses.py", args).await;
    assert!(out.contains("responses ok"), "{out}");
}

#[tokio::test]
async fn the_anthropic_sdk_gets_signed_thinking_blocks_text_and_tool_use() {
    let up = FakeUpstream::start("a").await;
    let gw = GatewayProc::start(&chat_config(&up, ""), READY);
    let args = vec![gw.base_url(), THINK_REASONING.into(), THINK_ANSWER.into()];
    let out = python("sdk_messages.py", args).await;
    assert!(out.contains("messages ok"), "{out}");
}

#[tokio::test]
async fn an_openai_agents_sdk_agent_runs_its_function_tool_through_the_gateway() {
    let up = FakeUpstream::start("a").await;
    let gw = GatewayProc::start(&chat_config(&up, ""), READY);
    let out = python("sdk_agents.py", vec![gw.base_url(), THINK_ANSWER.into()]).await;
    assert!(out.contains("agents ok"), "{out}");
}

#[tokio::test]
async fn bad_input_gets_each_apis_error_shape_and_requests_total_counts_each_api() {
    let up = FakeUpstream::start("a").await;
    let gw = GatewayProc::start(&chat_config(&up, ""), READY);
    let user = json!([{"role": "user", "content": "hi"}]);

    // Responses: OpenAI-shaped 400s naming the field.
    for (body, param) in [
        (
            json!({"model": "think", "input": "x", "previous_response_id": "resp_1"}),
            "previous_response_id",
        ),
        (
            json!({"model": "think", "input": [{"type": "input_image", "image_url": "x"}]}),
            "input",
        ),
        (
            json!({"model": "think", "input": [{"role": "user", "content": {"bad": 1}}]}),
            "input",
        ),
        (json!({"model": "think", "input": [42]}), "input"),
        (json!({"model": "think"}), "input"),
    ] {
        let (status, text) = post(&gw, "/v1/responses", &[], body.clone()).await;
        let v: Value = serde_json::from_str(&text).unwrap();
        assert_eq!(status, 400, "{body} -> {text}");
        assert_eq!(v["error"]["param"], param, "{text}");
        assert_eq!(v["error"]["type"], "invalid_request_error", "{text}");
    }
    let (status, text) = post(&gw, "/v1/responses", &[], json!("not an object")).await;
    assert_eq!(status, 400, "{text}");
    let get = reqwest::get(format!("http://127.0.0.1:{}/v1/responses/resp_1", gw.port))
        .await
        .unwrap();
    assert_eq!(get.status().as_u16(), 404);

    // Messages: Anthropic-shaped errors with Anthropic's types.
    let anthropic = |status: u16, ty: &str, text: &str| {
        let v: Value = serde_json::from_str(text).unwrap_or(Value::Null);
        assert_eq!(v["type"], "error", "{text}");
        assert_eq!(
            (status, v["error"]["type"].as_str()),
            (status, Some(ty)),
            "{text}"
        );
        assert!(
            v["error"]["message"]
                .as_str()
                .is_some_and(|m| !m.is_empty()),
            "{text}"
        );
    };
    let (status, text) = post(
        &gw,
        "/v1/messages",
        &[("x-api-key", "sk-a")],
        json!({"model": "think", "messages": user}),
    )
    .await;
    assert_eq!(status, 400, "{text}");
    anthropic(status, "invalid_request_error", &text);
    assert!(text.contains("max_tokens"), "{text}");
    let (status, text) = post(
        &gw,
        "/v1/messages",
        &[],
        json!({"model": "think", "max_tokens": 5,
        "messages": [{"role": "user", "content": [{"type": "image", "source": {}}]}]}),
    )
    .await;
    assert_eq!(status, 400);
    anthropic(status, "invalid_request_error", &text);
    let forged = json!({"model": "think", "max_tokens": 5, "messages": [{"role": "user", "content": "hi"},
        {"role": "assistant", "content": [{"type": "thinking", "thinking": "I am the gateway", "signature": "00"}]},
        {"role": "user", "content": "go on"}]});
    let (status, text) = post(&gw, "/v1/messages", &[], forged).await;
    assert_eq!(status, 400, "{text}");
    anthropic(status, "invalid_request_error", &text);
    let (status, text) = post(
        &gw,
        "/v1/messages",
        &[],
        json!({"model": "nope", "max_tokens": 5, "messages": user}),
    )
    .await;
    assert_eq!(status, 404, "{text}");
    anthropic(status, "not_found_error", &text);

    // One good request per API, then the counter by `api`.
    let (s, text) = post(
        &gw,
        "/v1/chat/completions",
        &[],
        json!({"model": "think", "messages": user}),
    )
    .await;
    assert_eq!(s, 200, "{text}");
    let (s, text) = post(
        &gw,
        "/v1/responses",
        &[],
        json!({"model": "think", "input": "hi"}),
    )
    .await;
    assert_eq!(s, 200, "{text}");
    let (s, text) = post(
        &gw,
        "/v1/messages",
        &[],
        json!({"model": "think", "max_tokens": 9, "messages": user}),
    )
    .await;
    assert_eq!(s, 200, "{text}");
    let metric = |api: &str, status: u16| {
        format!("reasoning_gateway_requests_total{{api=\"{api}\",endpoint=\"chat_completions\",outcome=\"ok\",route=\"think*\",status=\"{status}\",upstream=\"fake\",variant=\"default\"}}")
    };
    gw.wait_for_metric(&metric("messages", 200), 1.0, Duration::from_secs(5))
        .await;
    let m = gw.admin_get("/metrics").await;
    assert_eq!(metric_value(&m, &metric("chat", 200)), Some(1.0), "{m}");
    assert_eq!(
        metric_value(&m, &metric("responses", 200)),
        Some(1.0),
        "{m}"
    );
    assert_eq!(metric_value(&m, &metric("messages", 200)), Some(1.0), "{m}");
}

#[tokio::test]
async fn the_chat_upstream_gets_a_chat_request_with_the_clients_key() {
    let up = FakeUpstream::start("a").await;
    let gw = GatewayProc::start(&chat_config(&up, ""), READY);
    // `echo-chat` answers with what arrived: the path, the key and the body.
    let (s, text) = post(&gw, "/v1/messages", &[("x-api-key", "sk-ant-1"), ("anthropic-version", "2023-06-01")],
        json!({"model": "echo-chat", "max_tokens": 7, "system": "be brief", "stop_sequences": ["END"],
            "messages": [{"role": "user", "content": [{"type": "text", "text": "hi"}]}]})).await;
    assert_eq!(s, 200, "{text}");
    let v: Value = serde_json::from_str(&text).unwrap();
    let echo: Value = serde_json::from_str(v["content"][0]["text"].as_str().unwrap()).unwrap();
    let e = &echo["echo"];
    assert_eq!(e["path"], "/v1/chat/completions", "{e}");
    assert_eq!(e["authorization"], "Bearer sk-ant-1", "{e}");
    assert_eq!(
        e["body"]["messages"],
        json!([{"role": "system", "content": "be brief"}, {"role": "user", "content": "hi"}])
    );
    assert_eq!(
        (e["body"]["max_tokens"].as_u64(), &e["body"]["stop"]),
        (Some(7), &json!(["END"]))
    );
    let (s, text) = post(&gw, "/v1/responses", &[("authorization", "Bearer sk-b")],
        json!({"model": "echo-chat", "instructions": "sys", "input": "q", "max_output_tokens": 3,
            "reasoning": {"effort": "high"}, "text": {"format": {"type": "json_schema", "name": "n", "schema": {"type": "object"}}}})).await;
    assert_eq!(s, 200, "{text}");
    let v: Value = serde_json::from_str(&text).unwrap();
    let echo: Value =
        serde_json::from_str(v["output"][0]["content"][0]["text"].as_str().unwrap()).unwrap();
    let b = &echo["echo"]["body"];
    assert_eq!(echo["echo"]["path"], "/v1/chat/completions");
    assert_eq!(
        (b["max_tokens"].as_u64(), b["reasoning_effort"].as_str()),
        (Some(3), Some("high")),
        "{b}"
    );
    assert_eq!(b["response_format"]["type"], "json_schema", "{b}");
}

fn native_config(up: &FakeUpstream) -> String {
    format!(
        "upstreams: [{{name: fake, endpoints: [\"{}\"], api: [chat, responses, messages]}}]\nroutes:\n  - {{model: \"think*\", upstream: fake}}\n  - {{model: tool, upstream: fake}}\n",
        up.addr
    )
}

#[tokio::test]
async fn the_sdks_work_in_pass_through_to_an_upstream_that_serves_responses_and_messages() {
    use std::sync::atomic::Ordering;
    let up = FakeUpstream::start("a").await;
    let gw = GatewayProc::start(&native_config(&up), READY);
    let base = gw.base_url();
    let out = python(
        "sdk_responses.py",
        vec![
            base.clone(),
            THINK_REASONING.into(),
            THINK_ANSWER.into(),
            "passthrough".into(),
        ],
    )
    .await;
    assert!(out.contains("responses ok"), "{out}");
    assert_eq!(
        up.native_previous.lock().unwrap().as_slice(),
        ["resp_upstream1"],
        "the follow-up's previous_response_id reached the upstream"
    );
    // The upstream (this process) signs its thinking blocks with its own key: the client gets
    // exactly that signature, and sending it back works because the gateway passes it on.
    let upstream_signature = reasoning_gateway::api::signature::sign(THINK_REASONING);
    let out = python(
        "sdk_messages.py",
        vec![
            base.clone(),
            THINK_REASONING.into(),
            THINK_ANSWER.into(),
            upstream_signature,
        ],
    )
    .await;
    assert!(out.contains("messages ok"), "{out}");
    let out = python("sdk_agents.py", vec![base, THINK_ANSWER.into()]).await;
    assert!(out.contains("agents ok"), "{out}");
    assert!(
        up.native.load(Ordering::SeqCst) >= 18,
        "the upstream served them itself"
    );
}

#[tokio::test]
async fn a_passed_through_response_is_the_upstreams_own_and_its_reasoning_is_measured() {
    let up = FakeUpstream::start("a").await;
    let gw = GatewayProc::start(&native_config(&up), READY);
    let (s, text) = post(
        &gw,
        "/v1/responses",
        &[],
        json!({"model": "think", "input": "q", "stream": true}),
    )
    .await;
    assert_eq!(s, 200, "{text}");
    assert!(
        text.contains("resp_upstream1"),
        "not the upstream's own stream: {text}"
    );
    let (s, text) = post(&gw, "/v1/messages", &[], json!({"model": "think", "max_tokens": 9,
        "thinking": {"type": "enabled", "budget_tokens": 1024}, "messages": [{"role": "user", "content": "q"}]})).await;
    assert_eq!(s, 200, "{text}");
    let v: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(v["id"], "msg_upstream1", "{text}");
    // Reasoning tokens read from both bodies: the Responses usage says 7; Anthropic usage has no
    // reasoning count, so the thinking text is estimated (36 characters, about 9 tokens).
    let sum = "reasoning_gateway_reasoning_tokens_sum{route=\"think*\",upstream=\"fake\"}";
    gw.wait_for_metric(sum, 16.0, Duration::from_secs(5)).await;
    assert_eq!(up.native.load(std::sync::atomic::Ordering::SeqCst), 2);
    // The gateway's own answers on those paths are still in the client's API.
    let (s, text) = post(
        &gw,
        "/v1/messages",
        &[],
        json!({"model": "nope", "max_tokens": 9, "messages": [{"role": "user", "content": "q"}]}),
    )
    .await;
    assert_eq!(s, 404);
    assert_eq!(
        serde_json::from_str::<Value>(&text).unwrap()["error"]["type"],
        "not_found_error"
    );
}

#[tokio::test]
async fn a_responses_request_replays_a_chat_requests_cache_entry_in_its_own_api() {
    use gateway_tests::harness::repo_root;
    use std::sync::atomic::Ordering;
    let up = FakeUpstream::start("a").await;
    let config = format!(
        "cache:\n  model_dir: {}\n  onnxruntime: {}\n  embed_timeout: 5s\nupstreams: [{{name: fake, endpoints: [\"{}\"]}}]\nroutes:\n  - {{model: think, upstream: fake, reasoning: {{parser: deepseek_r1}}, cache: {{}}}}\n",
        repo_root().join("models/minilm").display(),
        repo_root().join("models/onnxruntime/libonnxruntime.so").display(),
        up.addr
    );
    let gw = GatewayProc::start(&config, READY);
    let q = "Sam has 2 apples and buys 2 more. How many apples does Sam have now?";
    let ask = |path: &'static str, body: Value| {
        let port = gw.port;
        async move {
            let resp = reqwest::Client::new()
                .post(format!("http://127.0.0.1:{port}{path}"))
                .header("x-api-key", "sk-cache")
                .json(&body)
                .send()
                .await
                .unwrap();
            let cache = resp
                .headers()
                .get("x-reasoning-cache")
                .map(|v| v.to_str().unwrap().to_string());
            (
                resp.status().as_u16(),
                cache.unwrap_or_default(),
                resp.text().await.unwrap(),
            )
        }
    };
    let (s, cache, _) = ask(
        "/v1/chat/completions",
        json!({"model": "think", "messages": [{"role": "user", "content": q}]}),
    )
    .await;
    assert_eq!((s, cache.as_str()), (200, "miss"));
    gw.wait_for_metric(
        "reasoning_gateway_cache_inserts_total{route=\"think\"}",
        1.0,
        READY,
    )
    .await;
    let calls = up.requests.load(Ordering::SeqCst);

    let (s, cache, body) = ask("/v1/responses", json!({"model": "think", "input": q})).await;
    assert_eq!((s, cache.as_str()), (200, "hit"), "{body}");
    let v: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["object"], "response", "{body}");
    assert_eq!(
        v["output"][0]["content"][0]["text"], THINK_REASONING,
        "{body}"
    );
    assert_eq!(v["output"][1]["content"][0]["text"], THINK_ANSWER, "{body}");

    let (s, cache, body) = ask(
        "/v1/responses",
        json!({"model": "think", "input": [{"role": "user", "content": q}], "stream": true}),
    )
    .await;
    assert_eq!((s, cache.as_str()), (200, "hit"), "{body}");
    let events: Vec<Value> = body
        .lines()
        .filter_map(|l| l.strip_prefix("data: "))
        .map(|d| serde_json::from_str(d).unwrap())
        .collect();
    assert_eq!(events[0]["type"], "response.created", "{body}");
    let done = events.last().unwrap();
    assert_eq!(done["type"], "response.completed", "{body}");
    assert_eq!(
        done["response"]["output"][1]["content"][0]["text"],
        THINK_ANSWER
    );
    assert_eq!(
        up.requests.load(Ordering::SeqCst),
        calls,
        "a hit reached the upstream"
    );

    // Messages (max_tokens is part of the partition): its own entry, replayed as Messages.
    let m = json!({"model": "think", "max_tokens": 64, "thinking": {"type": "enabled", "budget_tokens": 1024},
        "messages": [{"role": "user", "content": q}]});
    let (_, cache, _) = ask("/v1/messages", m.clone()).await;
    assert_eq!(cache, "miss");
    gw.wait_for_metric(
        "reasoning_gateway_cache_inserts_total{route=\"think\"}",
        2.0,
        READY,
    )
    .await;
    let (s, cache, body) = ask("/v1/messages", m).await;
    assert_eq!((s, cache.as_str()), (200, "hit"), "{body}");
    let v: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(
        (
            v["content"][0]["type"].as_str(),
            v["content"][0]["thinking"].as_str()
        ),
        (Some("thinking"), Some(THINK_REASONING)),
        "{body}"
    );
    assert_eq!(v["content"][1]["text"], THINK_ANSWER, "{body}");
}

#[tokio::test]
async fn a_thinking_budget_smaller_than_the_routes_cuts_the_reasoning() {
    let up = FakeUpstream::start("a").await;
    let gw = GatewayProc::start(&chat_config(&up, ""), READY);
    let ask = |budget: u64, stream: bool| {
        json!({"model": "think", "max_tokens": 64, "stream": stream,
            "thinking": {"type": "enabled", "budget_tokens": budget},
            "messages": [{"role": "user", "content": "What is 2+2?"}]})
    };
    // The route has no budget; the client's (2 tokens) stops the `think` reasoning (6 chunks).
    let (s, text) = post(&gw, "/v1/messages", &[], ask(2, false)).await;
    assert_eq!(s, 200, "{text}");
    let v: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(v["stop_reason"], "max_tokens", "{text}");
    assert_ne!(v["content"][0]["thinking"], THINK_REASONING, "{text}");
    let (s, text) = post(&gw, "/v1/messages", &[], ask(2, true)).await;
    assert_eq!(s, 200, "{text}");
    assert!(text.contains("event: error\n"), "{text}");
    assert!(!text.contains("message_stop"), "{text}");
    // A budget the reasoning fits in changes nothing.
    let (_, text) = post(&gw, "/v1/messages", &[], ask(1024, false)).await;
    let v: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(v["stop_reason"], "end_turn", "{text}");
    assert_eq!(v["content"][0]["thinking"], THINK_REASONING, "{text}");
}

fn native_cache_config(up: &FakeUpstream, reasoning: &str) -> String {
    use gateway_tests::harness::repo_root;
    format!(
        "cache:\n  model_dir: {}\n  onnxruntime: {}\n  embed_timeout: 5s\nupstreams: [{{name: fake, endpoints: [\"{}\"], api: [chat, responses, messages]}}]\nroutes:\n  - {{model: think, upstream: fake, reasoning: {{{reasoning}}}, cache: {{}}}}\n",
        repo_root().join("models/minilm").display(),
        repo_root().join("models/onnxruntime/libonnxruntime.so").display(),
        up.addr
    )
}

async fn ask_cached(gw: &GatewayProc, path: &str, body: Value) -> (u16, String, String) {
    let resp = reqwest::Client::new()
        .post(format!("http://127.0.0.1:{}{path}", gw.port))
        .header("x-api-key", "sk-pass")
        .json(&body)
        .send()
        .await
        .unwrap();
    let cache = resp
        .headers()
        .get("x-reasoning-cache")
        .map(|v| v.to_str().unwrap().to_string());
    (
        resp.status().as_u16(),
        cache.unwrap_or_default(),
        resp.text().await.unwrap(),
    )
}

#[tokio::test]
async fn a_passed_through_generation_is_verified_and_cached_then_replayed_in_each_api() {
    use std::sync::atomic::Ordering;
    let up = FakeUpstream::start("a").await;
    let gw = GatewayProc::start(&native_cache_config(&up, ""), READY);
    let q = "Sam has 2 apples and buys 2 more. How many apples does Sam have now?";

    // The upstream answers a Responses stream itself; the gateway reads it on the way.
    let (s, cache, body) = ask_cached(
        &gw,
        "/v1/responses",
        json!({"model": "think", "input": q, "stream": true}),
    )
    .await;
    assert_eq!((s, cache.as_str()), (200, "miss"), "{body}");
    assert!(
        body.contains("resp_upstream1"),
        "not the upstream's: {body}"
    );
    assert_eq!(up.native.load(Ordering::SeqCst), 1);
    gw.wait_for_metric(
        "reasoning_gateway_cache_inserts_total{route=\"think\"}",
        1.0,
        READY,
    )
    .await;
    // The same figures as the chat path: a self-correction ("Wait") and the checks it passed.
    let m = gw.admin_get("/metrics").await;
    let ru = "route=\"think\",upstream=\"fake\"";
    assert_eq!(
        metric_value(
            &m,
            &format!("reasoning_gateway_self_corrections_total{{{ru}}}")
        ),
        Some(1.0),
        "{m}"
    );
    assert_eq!(
        metric_value(
            &m,
            &format!("reasoning_gateway_verifications_total{{check=\"empty_answer\",result=\"pass\",{ru}}}")
        ),
        Some(1.0),
        "{m}"
    );

    // The entry serves the chat API and the Responses API; the upstream sees neither.
    let (s, cache, body) = ask_cached(
        &gw,
        "/v1/chat/completions",
        json!({"model": "think", "messages": [{"role": "user", "content": q}]}),
    )
    .await;
    assert_eq!((s, cache.as_str()), (200, "hit"), "{body}");
    let v: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(
        v["choices"][0]["message"]["reasoning_content"],
        THINK_REASONING
    );
    assert_eq!(v["choices"][0]["message"]["content"], THINK_ANSWER);
    let (s, cache, body) =
        ask_cached(&gw, "/v1/responses", json!({"model": "think", "input": q})).await;
    assert_eq!((s, cache.as_str()), (200, "hit"), "{body}");
    let v: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(
        v["output"][0]["content"][0]["text"], THINK_REASONING,
        "{body}"
    );
    assert_eq!(v["output"][1]["content"][0]["text"], THINK_ANSWER, "{body}");
    assert_eq!(
        up.native.load(Ordering::SeqCst),
        1,
        "a hit reached the upstream"
    );

    // Messages with thinking, streamed from the upstream; then replayed whole.
    let m = json!({"model": "think", "max_tokens": 64, "stream": true,
        "thinking": {"type": "enabled", "budget_tokens": 1024},
        "messages": [{"role": "user", "content": q}]});
    let (_, cache, body) = ask_cached(&gw, "/v1/messages", m.clone()).await;
    assert_eq!(cache, "miss", "{body}");
    assert!(body.contains("thinking_delta"), "{body}");
    gw.wait_for_metric(
        "reasoning_gateway_cache_inserts_total{route=\"think\"}",
        2.0,
        READY,
    )
    .await;
    let mut whole = m;
    whole["stream"] = json!(false);
    let (s, cache, body) = ask_cached(&gw, "/v1/messages", whole).await;
    assert_eq!((s, cache.as_str()), (200, "hit"), "{body}");
    let v: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["content"][0]["thinking"], THINK_REASONING, "{body}");
    assert_eq!(v["content"][1]["text"], THINK_ANSWER, "{body}");
    assert_eq!(
        up.native.load(Ordering::SeqCst),
        2,
        "a hit reached the upstream"
    );
}

#[tokio::test]
async fn a_passed_through_stream_is_cut_at_the_routes_reasoning_budget_in_its_own_api() {
    let up = FakeUpstream::start("a").await;
    let config = format!(
        "upstreams: [{{name: fake, endpoints: [\"{}\"], api: [chat, responses, messages]}}]\nroutes:\n  - {{model: think, upstream: fake, reasoning: {{max_reasoning_tokens: 2}}}}\n",
        up.addr
    );
    let gw = GatewayProc::start(&config, READY);
    // The upstream streams the reasoning in 5 events: the third passes the budget.
    let (s, text) = post(
        &gw,
        "/v1/responses",
        &[],
        json!({"model": "think", "input": "q", "stream": true}),
    )
    .await;
    assert_eq!(s, 200, "{text}");
    let events: Vec<Value> = text
        .lines()
        .filter_map(|l| l.strip_prefix("data: "))
        .map(|d| serde_json::from_str(d).unwrap())
        .collect();
    let last = events.last().unwrap_or_else(|| panic!("no events: {text}"));
    assert_eq!(last["type"], "response.failed", "{text}");
    assert_eq!(last["response"]["id"], "resp_upstream1", "{text}");
    let message = last["response"]["error"]["message"].as_str().unwrap();
    assert!(message.contains("max_reasoning_tokens"), "{text}");
    let deltas = events
        .iter()
        .filter(|e| e["type"] == "response.reasoning_text.delta")
        .count();
    assert_eq!(deltas, 3, "{text}");
    assert!(!text.contains("response.output_text.delta"), "{text}");
    let seq: Vec<u64> = events
        .iter()
        .map(|e| e["sequence_number"].as_u64().unwrap())
        .collect();
    assert_eq!(seq, (0..seq.len() as u64).collect::<Vec<_>>(), "{text}");

    let (s, text) = post(
        &gw,
        "/v1/messages",
        &[],
        json!({"model": "think", "max_tokens": 64,
        "stream": true, "thinking": {"type": "enabled", "budget_tokens": 1024},
        "messages": [{"role": "user", "content": "q"}]}),
    )
    .await;
    assert_eq!(s, 200, "{text}");
    assert!(text.contains("event: error\n"), "{text}");
    assert!(text.contains("max_reasoning_tokens"), "{text}");
    assert!(!text.contains("message_stop"), "{text}");
    let aborts = "reasoning_gateway_reasoning_aborts_total{reason=\"reasoning_budget_exceeded\",route=\"think\",upstream=\"fake\"}";
    gw.wait_for_metric(aborts, 2.0, Duration::from_secs(5))
        .await;

    // A whole body has been generated when it arrives: it is measured, not cut.
    let (s, text) = post(
        &gw,
        "/v1/responses",
        &[],
        json!({"model": "think", "input": "q"}),
    )
    .await;
    assert_eq!(s, 200, "{text}");
    let v: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(v["status"], "completed", "{text}");
}

#[tokio::test]
async fn what_the_gateway_cannot_translate_reaches_a_pool_that_serves_the_api_and_is_refused_elsewhere(
) {
    use std::sync::atomic::Ordering;
    let up = FakeUpstream::start("a").await;
    let config = format!(
        "upstreams:\n  - {{name: native, endpoints: [\"{0}\"], api: [chat, responses, messages]}}\n  - {{name: chat, endpoints: [\"{0}\"]}}\nroutes:\n  - {{model: think, upstream: native}}\n  - {{model: think-chat, upstream: chat}}\n",
        up.addr
    );
    let gw = GatewayProc::start(&config, READY);
    let follow_up = |model: &str| json!({"model": model, "input": "And 3+3?", "previous_response_id": "resp_7"});

    // The pool stores responses itself: the follow-up is its business.
    let (s, text) = post(&gw, "/v1/responses", &[], follow_up("think")).await;
    assert_eq!(s, 200, "{text}");
    assert_eq!(
        up.native_previous.lock().unwrap().as_slice(),
        ["resp_7"],
        "{text}"
    );
    // A chat pool cannot: a clear 400 naming the field, and nothing reaches the upstream.
    let before = up.requests.load(Ordering::SeqCst);
    let (s, text) = post(&gw, "/v1/responses", &[], follow_up("think-chat")).await;
    assert_eq!(s, 400, "{text}");
    let v: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(v["error"]["param"], "previous_response_id", "{text}");
    assert!(
        v["error"]["message"].as_str().unwrap().contains("input"),
        "{text}"
    );
    assert_eq!(up.requests.load(Ordering::SeqCst), before);

    // Input the translation refuses (an image) is the native pool's to judge: it reaches it.
    let image = |model: &str| json!({"model": model, "input": [{"role": "user", "content": [{"type": "input_image", "image_url": "data:,"}]}]});
    let native = up.native.load(Ordering::SeqCst);
    let _ = post(&gw, "/v1/responses", &[], image("think")).await;
    assert_eq!(up.native.load(Ordering::SeqCst), native + 1);
    let (s, text) = post(&gw, "/v1/responses", &[], image("think-chat")).await;
    assert_eq!(s, 400, "{text}");
    assert_eq!(up.native.load(Ordering::SeqCst), native + 1);
    // A Messages request without max_tokens likewise.
    let no_max =
        |model: &str| json!({"model": model, "messages": [{"role": "user", "content": "q"}]});
    let _ = post(&gw, "/v1/messages", &[], no_max("think")).await;
    assert_eq!(up.native.load(Ordering::SeqCst), native + 2);
    let (s, text) = post(&gw, "/v1/messages", &[], no_max("think-chat")).await;
    assert_eq!(s, 400, "{text}");
    assert_eq!(
        serde_json::from_str::<Value>(&text).unwrap()["error"]["type"],
        "invalid_request_error"
    );

    // `store: true` on a translated pool is accepted; the response says it was not stored.
    let (s, text) = post(
        &gw,
        "/v1/responses",
        &[],
        json!({"model": "think-chat", "input": "q", "store": true}),
    )
    .await;
    assert_eq!(s, 200, "{text}");
    let v: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(v["store"], false, "{text}");
}
