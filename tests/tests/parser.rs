//! The reasoning split's route settings end to end, through the real binary: `reasoning.tags`,
//! `open_tag` and `output_field: none` (reasoning hidden from clients, still measured).

use std::time::Duration;

use gateway_tests::fake_upstream::FakeUpstream;
use gateway_tests::harness::{required_metric, GatewayProc};
use serde_json::{json, Value};

fn config(addr: std::net::SocketAddr) -> String {
    format!(
        r#"upstreams: [{{name: fake, endpoints: ["{addr}"]}}]
routes:
  - model: tags
    upstream: fake
    upstream_model: thinking-tags
    reasoning: {{tags: {{open: "<thinking>", close: "</thinking>"}}}}
  - model: hidden
    upstream: fake
    upstream_model: thinking-tags
    reasoning:
      tags: {{open: "<thinking>", close: "</thinking>"}}
      output_field: none
      verify: {{checks: [unterminated, empty_answer]}}
  - model: answer-first
    upstream: fake
  - model: answer-first-leading
    upstream: fake
    upstream_model: answer-first
    reasoning: {{open_tag: leading}}
"#
    )
}

/// (reasoning, content, raw response text) of one request.
async fn ask(gw: &GatewayProc, model: &str, stream: bool) -> (String, String, String) {
    let text = reqwest::Client::new()
        .post(format!("{}/chat/completions", gw.base_url()))
        .json(&json!({"model": model, "stream": stream,
            "messages": [{"role": "user", "content": "2+2?"}]}))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let (mut reasoning, mut content) = (String::new(), String::new());
    let mut take = |m: &Value| {
        reasoning.push_str(m["reasoning_content"].as_str().unwrap_or(""));
        content.push_str(m["content"].as_str().unwrap_or(""));
    };
    if stream {
        for data in text
            .split("\n\n")
            .filter_map(|e| e.strip_prefix("data: "))
            .filter(|d| *d != "[DONE]")
        {
            let v: Value = serde_json::from_str(data).unwrap();
            if let Some(c) = v["choices"].get(0) {
                take(&c["delta"]);
            }
        }
    } else {
        let v: Value = serde_json::from_str(&text).unwrap();
        take(&v["choices"][0]["message"]);
    }
    (reasoning, content, text)
}

#[tokio::test]
async fn route_tags_open_tag_and_hidden_reasoning() {
    let up = FakeUpstream::start("a").await;
    let gw = GatewayProc::start(&config(up.addr), Duration::from_secs(20));

    for stream in [true, false] {
        // Other tags, split across events; `<think>` is only text on this route.
        let (r, c, _) = ask(&gw, "tags", stream).await;
        assert_eq!(
            r, "Step 1: 2+2 uses <think> as text.\n\nWait, it is 4.",
            "stream {stream}"
        );
        assert_eq!(c, "Four", "stream {stream}");

        // Answer text before the tag stays answer, the reasoning is split out (vLLM/SGLang)…
        let (r, c, _) = ask(&gw, "answer-first", stream).await;
        assert_eq!((r.as_str(), c.as_str()), ("checking", "Sure.Done."));
        // …or, with `open_tag: leading`, everything is literal answer as before.
        let (r, c, _) = ask(&gw, "answer-first-leading", stream).await;
        assert_eq!(
            (r.as_str(), c.as_str()),
            ("", "Sure.<think>checking</think>Done.")
        );

        // `output_field: none`: no reasoning field and no reasoning text reaches the client.
        let (r, c, raw) = ask(&gw, "hidden", stream).await;
        assert_eq!((r.as_str(), c.as_str()), ("", "Four"), "stream {stream}");
        assert!(
            !raw.contains("reasoning_content") && !raw.contains("\"reasoning\""),
            "stream {stream}: {raw}"
        );
        assert!(!raw.contains("2+2"), "stream {stream}: {raw}");
    }

    // The hidden reasoning was still measured: 2 steps and 1 self-correction per response.
    gw.wait_for_requests(8, Duration::from_secs(5)).await;
    let m = gw.admin_get("/metrics").await;
    let val = |sample: &str| required_metric(&m, sample);
    let ru = "route=\"hidden\",upstream=\"fake\"";
    assert_eq!(
        val(&format!("reasoning_gateway_reasoning_steps_sum{{{ru}}}")),
        4.0
    );
    assert_eq!(
        val(&format!("reasoning_gateway_self_corrections_total{{{ru}}}")),
        2.0
    );
    assert!(val(&format!("reasoning_gateway_reasoning_tokens_sum{{{ru}}}")) > 0.0);
    assert_eq!(
        val(&format!(
            "reasoning_gateway_verifications_total{{check=\"unterminated\",result=\"pass\",{ru}}}"
        )),
        2.0
    );
}
