//! The bundled mistral.rs engine on the real SmolLM2-135M GGUF, through the real gateway.
//! Needs `models/smollm2/` (`make models`).

use std::time::{Duration, Instant};

use gateway_tests::harness::{free_port, http_status, repo_root, run_python, GatewayProc};
use serde_json::{json, Value};

const LOAD: Duration = Duration::from_secs(120);

struct Engine {
    gw: GatewayProc,
    engine_port: u16,
}

fn start(max_seqs: usize) -> Engine {
    start_with(max_seqs, "")
}

/// `extra`: more `engine:` keys, each on its own line indented by two spaces.
fn start_with(max_seqs: usize, extra: &str) -> Engine {
    let dir = repo_root().join("models/smollm2");
    assert!(
        dir.join("SmolLM2-135M-Instruct.Q4_1.gguf").is_file(),
        "run `make models` first"
    );
    let engine_port = free_port();
    let config = format!(
        "engine:\n  model_dir: {}\n  gguf: SmolLM2-135M-Instruct.Q4_1.gguf\n  served_model_name: smollm2\n  listen: 127.0.0.1:{engine_port}\n  max_seqs: {max_seqs}\n  max_context_tokens: 2048\n{extra}routes:\n  - model: smollm2\n    upstream: engine\n",
        dir.display()
    );
    Engine {
        gw: GatewayProc::start(&config, LOAD),
        engine_port,
    }
}

async fn chat(gw: &GatewayProc, body: Value) -> (u16, Value) {
    let resp = reqwest::Client::new()
        .post(format!("{}/chat/completions", gw.base_url()))
        .json(&body)
        .send()
        .await
        .expect("gateway answers");
    let status = resp.status().as_u16();
    (status, resp.json().await.expect("JSON body"))
}

fn user(text: &str) -> Value {
    json!([{"role": "user", "content": text}])
}

#[tokio::test]
async fn real_generation_streamed_and_not_reports_the_served_model_name() {
    let e = start(4);
    let (status, v) = chat(&e.gw, json!({"model": "smollm2", "messages": user("Name three colors."), "max_tokens": 24, "temperature": 0})).await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["model"], "smollm2");
    let content = v["choices"][0]["message"]["content"].as_str().unwrap();
    assert!(!content.trim().is_empty(), "{v}");
    assert!(v["usage"]["completion_tokens"].as_u64().unwrap() <= 24);

    let resp = reqwest::Client::new()
        .post(format!("{}/chat/completions", e.gw.base_url()))
        .json(&json!({"model": "smollm2", "messages": user("Name three colors."), "max_tokens": 24, "temperature": 0,
            "stream": true, "stream_options": {"include_usage": true}}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.headers()["content-type"], "text/event-stream");
    let text = resp.text().await.unwrap();
    let mut streamed = String::new();
    let mut usage = None;
    for data in text
        .split("\n\n")
        .filter_map(|ev| ev.strip_prefix("data: "))
    {
        if data == "[DONE]" {
            continue;
        }
        let c: Value = serde_json::from_str(data).unwrap();
        assert_eq!(c["model"], "smollm2");
        if !c["usage"].is_null() {
            usage = Some(c["usage"].clone());
        }
        streamed.push_str(
            c["choices"]
                .get(0)
                .and_then(|c| c["delta"]["content"].as_str())
                .unwrap_or(""),
        );
    }
    assert!(text.trim_end().ends_with("data: [DONE]"));
    assert_eq!(
        streamed, content,
        "greedy decoding gives the same text streamed and not"
    );
    assert!(usage.is_some_and(|u| u["completion_tokens"].as_u64().unwrap() > 0));
}

#[tokio::test]
async fn max_tokens_and_stop_sequences_are_honoured_and_seed_is_refused() {
    let e = start(4);
    let base = json!({"model": "smollm2", "messages": user("Count from 1 to 20, separated by commas."), "temperature": 0});
    let mut long = base.clone();
    long["max_tokens"] = json!(40);
    let (_, v) = chat(&e.gw, long).await;
    let full = v["choices"][0]["message"]["content"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(full.len() > 8, "{full:?}");

    let mut short = base.clone();
    short["max_tokens"] = json!(3);
    let (_, v) = chat(&e.gw, short).await;
    assert_eq!(v["choices"][0]["finish_reason"], "length");
    assert_eq!(v["usage"]["completion_tokens"], 3);

    // A stop sequence taken from the middle of the unstopped output: the answer ends right
    // before its first occurrence, without it.
    let mid = full
        .char_indices()
        .map(|(i, _)| i)
        .find(|&i| i >= full.len() / 2)
        .unwrap();
    let stop: String = full[mid..].chars().take(2).collect();
    let expected = &full[..full.find(&stop).unwrap()];
    let mut stopped = base.clone();
    stopped["max_tokens"] = json!(40);
    stopped["stop"] = json!([stop]);
    let (_, v) = chat(&e.gw, stopped).await;
    assert_eq!(
        v["choices"][0]["message"]["content"], expected,
        "stop {stop:?} in {full:?}"
    );
    assert_eq!(v["choices"][0]["finish_reason"], "stop");

    let mut seeded = base.clone();
    seeded["seed"] = json!(7);
    let (status, v) = chat(&e.gw, seeded).await;
    assert_eq!(status, 400);
    assert_eq!(v["error"]["param"], "seed");
    let (status, v) = chat(
        &e.gw,
        json!({"model": "smollm2", "messages": user("x"), "max_tokens": 100000}),
    )
    .await;
    assert_eq!(
        (status, v["error"]["param"].as_str()),
        (400, Some("max_tokens"))
    );
}

#[tokio::test]
async fn a_client_disconnect_cancels_generation() {
    // One sequence at a time: a generation left running would hold the engine for minutes.
    let e = start(1);
    let client = reqwest::Client::new();
    let mut resp = client
        .post(format!("{}/chat/completions", e.gw.base_url()))
        .json(&json!({"model": "smollm2", "messages": user("Write a very long story about a dragon."), "max_tokens": 1500, "stream": true}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    // Read a few events so generation is surely under way, then hang up.
    let mut seen = String::new();
    for _ in 0..3 {
        let chunk = resp
            .chunk()
            .await
            .unwrap()
            .expect("the stream is still going");
        seen.push_str(&String::from_utf8_lossy(&chunk));
    }
    assert!(!seen.contains("[DONE]"), "{seen}");
    drop(resp);
    drop(client);
    let health = format!("http://127.0.0.1:{}/health", e.engine_port);
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let v: Value = reqwest::get(&health).await.unwrap().json().await.unwrap();
        if v["active_generations"] == 0 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "generation still running after the client left: {v}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // With one sequence slot, this completes only if the abandoned one was cancelled.
    let (status, v) = tokio::time::timeout(
        Duration::from_secs(60),
        chat(
            &e.gw,
            json!({"model": "smollm2", "messages": user("Hi"), "max_tokens": 4}),
        ),
    )
    .await
    .expect("the engine is free again");
    assert_eq!(status, 200, "{v}");
}

/// `max_inflight` on the engine bounds it like any pool: with its one slot taken by a running
/// generation the next request is refused at once with 429 and `retry-after` (the engine would
/// otherwise queue it without bound), and it is served again once the slot is free.
#[tokio::test]
async fn the_engine_pool_honours_max_inflight() {
    let e = start_with(1, "  max_inflight: 1\n  max_queue: 0\n");
    let client = reqwest::Client::new();
    let mut held = client
        .post(format!("{}/chat/completions", e.gw.base_url()))
        .json(&json!({"model": "smollm2", "messages": user("Write a very long story about a dragon."), "max_tokens": 1500, "stream": true}))
        .send()
        .await
        .unwrap();
    assert_eq!(held.status(), 200);
    let first = held.chunk().await.unwrap().expect("the stream started");
    assert!(!String::from_utf8_lossy(&first).contains("[DONE]"));

    let refused = client
        .post(format!("{}/chat/completions", e.gw.base_url()))
        .json(&json!({"model": "smollm2", "messages": user("Hi"), "max_tokens": 4}))
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), 429);
    assert_eq!(
        refused
            .headers()
            .get("retry-after")
            .and_then(|v| v.to_str().ok()),
        Some("1")
    );
    let v: Value = refused.json().await.unwrap();
    assert_eq!(v["error"]["code"], "upstream_queue_full", "{v}");

    // The client leaves; its slot is released when the gateway has finished the request.
    drop(held);
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let (status, v) = chat(
            &e.gw,
            json!({"model": "smollm2", "messages": user("Hi"), "max_tokens": 4}),
        )
        .await;
        if status == 200 {
            break;
        }
        assert_eq!(status, 429, "{v}");
        assert!(
            Instant::now() < deadline,
            "the slot was never released: {v}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn concurrent_requests_all_complete() {
    let e = start(4);
    let mut tasks = Vec::new();
    for i in 0..8 {
        let url = format!("{}/chat/completions", e.gw.base_url());
        tasks.push(tokio::spawn(async move {
            let body = json!({"model": "smollm2", "messages": user(&format!("Say the number {i}.")), "max_tokens": 12, "stream": i % 2 == 0});
            let resp = reqwest::Client::new().post(url).json(&body).send().await.unwrap();
            (resp.status().as_u16(), resp.text().await.unwrap())
        }));
    }
    for t in tasks {
        let (status, body) = t.await.unwrap();
        assert_eq!(status, 200, "{body}");
        assert!(body.contains("smollm2"), "{body}");
    }
}

#[tokio::test]
async fn the_openai_sdk_talks_to_the_engine_and_readiness_waits_for_the_model() {
    let e = start(2);
    let log = e.gw.log_text();
    assert!(
        log.contains("model is loaded"),
        "ready before the model loaded:\n{log}"
    );
    assert_eq!(http_status(e.gw.admin_port, "/readyz"), Some(200));
    let base = e.gw.base_url();
    let out = tokio::task::spawn_blocking(move || run_python("sdk_engine.py", &[&base]))
        .await
        .unwrap();
    assert!(out.contains("sdk engine ok"), "{out}");
}

#[test]
fn a_missing_model_file_stops_start_up_with_its_path() {
    let dir = gateway_tests::harness::TempDir::new("nomodel");
    let config = dir.0.join("g.yaml");
    std::fs::write(
        &config,
        format!(
            "listen: 127.0.0.1:{}\nadmin_listen: 127.0.0.1:{}\nengine: {{model_dir: {}, gguf: absent.gguf, served_model_name: m}}\nroutes: [{{model: m, upstream: engine}}]\n",
            free_port(),
            free_port(),
            dir.0.display()
        ),
    )
    .unwrap();
    let out = std::process::Command::new(gateway_tests::harness::gateway_bin())
        .args(["serve", "--config"])
        .arg(&config)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("absent.gguf") && err.contains("does not exist"),
        "{err}"
    );
}

async fn says_something(gw: &GatewayProc) {
    let (status, v) = chat(gw, json!({"model": "smollm2", "messages": user("Name three colors."), "max_tokens": 16, "temperature": 0})).await;
    assert_eq!(status, 200, "{v}");
    let content = v["choices"][0]["message"]["content"].as_str().unwrap();
    assert!(!content.trim().is_empty(), "{v}");
}

#[tokio::test]
async fn q4_1_weights_are_requantized_once_and_a_read_only_cache_only_costs_speed() {
    let dir = gateway_tests::harness::TempDir::new("requant");
    let copies = dir.0.join("copies");
    let extra = format!("  cache_dir: {}\n", copies.display());
    {
        let e = start_with(1, &extra);
        let log = e.gw.log_text();
        assert!(log.contains("Requantized."), "{log}");
        says_something(&e.gw).await;
    }
    let written: Vec<_> = std::fs::read_dir(&copies)
        .unwrap()
        .flatten()
        .filter(|e| e.path().extension().is_some_and(|x| x == "gguf"))
        .collect();
    assert_eq!(written.len(), 1, "{written:?}");
    let name = written[0].file_name().to_string_lossy().into_owned();
    assert!(
        name.starts_with("SmolLM2-135M-Instruct.Q4_1.") && name.ends_with(".gguf"),
        "{name}"
    );
    let modified = written[0].metadata().unwrap().modified().unwrap();
    {
        // The second start finds the copy instead of converting again.
        let e = start_with(1, &extra);
        let log = e.gw.log_text();
        assert!(log.contains("Using the requantized copy"), "{log}");
        assert!(!log.contains("Requantized."), "{log}");
        says_something(&e.gw).await;
    }
    assert_eq!(written[0].metadata().unwrap().modified().unwrap(), modified);

    // A cache directory that cannot be created: the original file is served, with a warning.
    let blocker = dir.0.join("a-file");
    std::fs::write(&blocker, b"not a directory").unwrap();
    let e = start_with(
        1,
        &format!("  cache_dir: {}\n", blocker.join("copies").display()),
    );
    let log = e.gw.log_text();
    assert!(log.contains("Loading the model file as it is"), "{log}");
    says_something(&e.gw).await;
}

/// Responses and Messages translated to chat for the bundled engine, streamed and not.
#[tokio::test]
async fn responses_and_messages_are_translated_for_the_engine() {
    let e = start(4);
    let post = |path: &'static str, body: Value| {
        let port = e.gw.port;
        async move {
            let resp = reqwest::Client::new()
                .post(format!("http://127.0.0.1:{port}{path}"))
                .json(&body)
                .send()
                .await
                .expect("gateway answers");
            (
                resp.status().as_u16(),
                resp.text().await.unwrap_or_default(),
            )
        }
    };
    let (s, text) = post("/v1/responses", json!({"model": "smollm2", "input": "Name three colors.", "max_output_tokens": 24, "temperature": 0})).await;
    assert_eq!(s, 200, "{text}");
    let v: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(v["object"], "response", "{text}");
    let message = v["output"]
        .as_array()
        .unwrap()
        .iter()
        .find(|o| o["type"] == "message")
        .cloned()
        .unwrap();
    assert!(
        !message["content"][0]["text"]
            .as_str()
            .unwrap()
            .trim()
            .is_empty(),
        "{text}"
    );
    assert!(v["usage"]["output_tokens"].as_u64().unwrap() > 0, "{text}");
    let (s, text) = post("/v1/responses", json!({"model": "smollm2", "input": "Name three colors.", "max_output_tokens": 24, "stream": true})).await;
    assert_eq!(s, 200, "{text}");
    assert!(text.contains("event: response.output_text.delta"), "{text}");
    assert!(
        text.contains("event: response.completed") || text.contains("event: response.incomplete"),
        "{text}"
    );
    let (s, text) = post(
        "/v1/messages",
        json!({"model": "smollm2", "max_tokens": 24, "messages": user("Name three colors.")}),
    )
    .await;
    assert_eq!(s, 200, "{text}");
    let v: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(v["type"], "message", "{text}");
    assert!(
        matches!(v["stop_reason"].as_str(), Some("end_turn" | "max_tokens")),
        "{text}"
    );
    let (s, text) = post("/v1/messages", json!({"model": "smollm2", "max_tokens": 24, "stream": true, "messages": user("Name three colors.")})).await;
    assert_eq!(s, 200, "{text}");
    assert!(
        text.contains("event: message_start") && text.contains("event: message_stop"),
        "{text}"
    );
}

/// Budget forcing (issue 30) on the real engine: SmolLM2 does not reason, so with
/// `start_in_reasoning` all it says is reasoning and never ends by itself; at a small budget the
/// gateway closes it and the engine continues the final assistant message to an answer.
#[tokio::test]
async fn a_small_reasoning_budget_on_a_long_prompt_still_ends_in_a_complete_answer() {
    let dir = repo_root().join("models/smollm2");
    assert!(
        dir.join("SmolLM2-135M-Instruct.Q4_1.gguf").is_file(),
        "run `make models` first"
    );
    let config = format!(
        "engine:\n  model_dir: {}\n  gguf: SmolLM2-135M-Instruct.Q4_1.gguf\n  served_model_name: smollm2\n  listen: 127.0.0.1:{}\n  max_seqs: 2\n  max_context_tokens: 2048\nroutes:\n  - model: smollm2\n    upstream: engine\n    reasoning:\n      start_in_reasoning: true\n      budget: {{ max_tokens: 16, on_exceed: answer }}\n",
        dir.display(),
        free_port()
    );
    let gw = GatewayProc::start(&config, LOAD);
    let paragraph = "The committee reviewed the quarterly figures for each of the four regional offices and asked every office to explain any shortfall. ";
    let prompt = format!(
        "{}How many regional offices are there?",
        paragraph.repeat(8)
    );
    let (status, v) = chat(
        &gw,
        json!({"model": "smollm2", "messages": user(&prompt), "max_tokens": 200, "temperature": 0}),
    )
    .await;
    assert_eq!(status, 200, "{v}");
    let choice = &v["choices"][0];
    let reasoning = choice["message"]["reasoning_content"]
        .as_str()
        .unwrap_or("");
    let answer = choice["message"]["content"].as_str().unwrap_or("");
    assert!(!reasoning.trim().is_empty(), "{v}");
    assert!(answer.starts_with("Final answer:"), "{v}");
    assert!(
        answer.len() > "Final answer:".len(),
        "the model answered after the bridge: {v}"
    );
    assert_eq!(
        choice["finish_reason"], "stop",
        "a complete answer, not cut: {v}"
    );
    let usage = &v["usage"];
    let reasoning_tokens = usage["completion_tokens_details"]["reasoning_tokens"]
        .as_u64()
        .unwrap();
    assert!((16..=18).contains(&reasoning_tokens), "{usage}");
    assert!(
        usage["completion_tokens"].as_u64().unwrap() > reasoning_tokens,
        "{usage}"
    );
    let metrics = gw.admin_get("/metrics").await;
    assert!(
        metrics.contains("reasoning_gateway_reasoning_budget_actions_total{action=\"forced_answer\",route=\"smollm2\"} 1"),
        "{metrics}"
    );
}
