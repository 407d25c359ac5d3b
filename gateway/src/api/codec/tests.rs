use serde_json::{json, Value};

use super::*;

fn chat_stream() -> Vec<u8> {
    let chunks = [
        json!({"model": "up", "choices": [{"index": 0, "delta": {"role": "assistant", "reasoning_content": "Let me"}}]}),
        json!({"choices": [{"index": 0, "delta": {"reasoning_content": " think."}}]}),
        json!({"choices": [{"index": 0, "delta": {"content": "The answer"}}]}),
        json!({"choices": [{"index": 0, "delta": {"content": " is 4"}, "finish_reason": "stop"}]}),
        json!({"choices": [], "usage": {"prompt_tokens": 5, "completion_tokens": 12,
            "completion_tokens_details": {"reasoning_tokens": 7}}}),
    ];
    let mut s = String::new();
    for c in chunks {
        s.push_str(&format!("data: {c}\n\n"));
    }
    s.push_str("data: [DONE]\n\n");
    s.into_bytes()
}

fn meta(show: bool) -> Meta {
    Meta {
        id: "r1".into(),
        model: "m".into(),
        created: 1,
        show_reasoning: show,
        stop_sequences: vec![],
        summary: false,
    }
}

/// Every `data:` JSON of an SSE body.
fn events(body: &[u8]) -> Vec<Value> {
    String::from_utf8_lossy(body)
        .split("\n\n")
        .filter_map(|e| e.lines().find_map(|l| l.strip_prefix("data: ")))
        .map(|d| serde_json::from_str(d).unwrap())
        .collect()
}

/// Feeds `input` split at every byte offset `at` and returns the whole output.
fn run(api: Api, show: bool, stream: bool, input: &[u8], at: usize) -> Vec<u8> {
    let mut c = Codec::new(api, meta(show), stream);
    c.begin(200, true);
    let mut out = c.feed(&input[..at]);
    out.extend(c.feed(&input[at..]));
    out.extend(c.finish());
    out
}

#[test]
fn a_chat_stream_becomes_the_responses_grammar_in_order_at_every_split() {
    let input = chat_stream();
    let want = run(Api::Responses, true, true, &input, 0);
    for at in 1..input.len() {
        assert_eq!(
            run(Api::Responses, true, true, &input, at),
            want,
            "split at {at}"
        );
    }
    let ev = events(&want);
    let types: Vec<&str> = ev.iter().map(|e| e["type"].as_str().unwrap()).collect();
    assert_eq!(
        types,
        [
            "response.created",
            "response.in_progress",
            "response.output_item.added",
            "response.content_part.added",
            "response.reasoning_text.delta",
            "response.reasoning_text.delta",
            "response.reasoning_text.done",
            "response.content_part.done",
            "response.output_item.done",
            "response.output_item.added",
            "response.content_part.added",
            "response.output_text.delta",
            "response.output_text.delta",
            "response.output_text.done",
            "response.content_part.done",
            "response.output_item.done",
            "response.completed",
        ]
    );
    let seqs: Vec<u64> = ev
        .iter()
        .map(|e| e["sequence_number"].as_u64().unwrap())
        .collect();
    assert_eq!(seqs, (0..ev.len() as u64).collect::<Vec<_>>());
    let done = &ev.last().unwrap()["response"];
    assert_eq!(done["output"][0]["content"][0]["text"], "Let me think.");
    assert_eq!(done["output"][1]["content"][0]["text"], "The answer is 4");
    assert_eq!(
        done["usage"]["output_tokens_details"]["reasoning_tokens"],
        7
    );
    assert_eq!(done["usage"]["total_tokens"], 17);
}

#[test]
fn a_chat_stream_becomes_a_responses_object_for_a_client_that_did_not_stream() {
    let body = run(Api::Responses, true, false, &chat_stream(), 10);
    let v: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(v["object"], "response");
    assert_eq!(v["status"], "completed");
    assert_eq!(v["output"][0]["type"], "reasoning");
    assert_eq!(v["output"][1]["content"][0]["type"], "output_text");
}

#[test]
fn messages_stream_signs_its_thinking_and_ends_with_end_turn() {
    let out = run(Api::Messages, true, true, &chat_stream(), 33);
    let ev = events(&out);
    let types: Vec<&str> = ev.iter().map(|e| e["type"].as_str().unwrap()).collect();
    assert_eq!(
        types,
        [
            "message_start",
            "ping",
            "content_block_start",
            "content_block_delta",
            "content_block_delta",
            "content_block_delta",
            "content_block_stop",
            "content_block_start",
            "content_block_delta",
            "content_block_delta",
            "content_block_stop",
            "message_delta",
            "message_stop",
        ]
    );
    let sig = ev[5]["delta"]["signature"].as_str().unwrap();
    assert!(crate::api::signature::verify("Let me think.", sig));
    assert_eq!(ev[11]["delta"]["stop_reason"], "end_turn");
    // Without `thinking` the reasoning stays out.
    let hidden = events(&run(Api::Messages, false, true, &chat_stream(), 0));
    assert!(hidden
        .iter()
        .all(|e| e["content_block"]["type"] != "thinking"));
}

#[test]
fn a_mid_stream_error_ends_the_clients_stream_in_its_api() {
    let mut input = chat_stream();
    input.truncate(200);
    input.extend_from_slice(
        b"\n\ndata: {\"error\":{\"message\":\"budget\",\"code\":\"x\"}}\n\ndata: [DONE]\n\n",
    );
    let ev = events(&run(Api::Responses, true, true, &input, 0));
    assert_eq!(ev.last().unwrap()["type"], "response.failed");
    assert_eq!(ev.last().unwrap()["response"]["error"]["message"], "budget");
    let out = run(Api::Messages, true, true, &input, 0);
    assert!(String::from_utf8_lossy(&out).contains("event: error\n"));
    let last = events(&out).pop().unwrap();
    assert_eq!(
        (last["type"].as_str(), last["error"]["message"].as_str()),
        (Some("error"), Some("budget"))
    );
}

#[test]
fn upstream_errors_and_tool_calls_are_translated() {
    let mut c = Codec::new(Api::Messages, meta(true), true);
    let body = c.whole(
        429,
        "application/json",
        br#"{"error":{"message":"slow down"}}"#,
    );
    let v: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(v["error"]["type"], "rate_limit_error");
    let completion = json!({"choices": [{"index": 0, "finish_reason": "tool_calls", "message": {"role": "assistant",
        "content": null, "tool_calls": [{"id": "call_9", "type": "function",
        "function": {"name": "get_weather", "arguments": "{\"city\":\"Paris\"}"}}]}}]});
    let bytes = serde_json::to_vec(&completion).unwrap();
    let mut c = Codec::new(Api::Messages, meta(true), false);
    let v: Value = serde_json::from_slice(&c.whole(200, "application/json", &bytes)).unwrap();
    assert_eq!(v["stop_reason"], "tool_use");
    assert_eq!(v["content"][0]["input"]["city"], "Paris");
    let mut c = Codec::new(Api::Responses, meta(true), false);
    let v: Value = serde_json::from_slice(&c.whole(200, "application/json", &bytes)).unwrap();
    assert_eq!(v["output"][0]["type"], "function_call");
    assert_eq!(v["output"][0]["call_id"], "call_9");
}

#[test]
fn a_summary_asked_for_is_the_reasoning_streamed_as_summary_parts_and_in_the_item() {
    let input = chat_stream();
    let summary = Meta {
        summary: true,
        ..meta(true)
    };
    let mut c = Codec::new(Api::Responses, summary.clone(), true);
    c.begin(200, true);
    let mut out = c.feed(&input);
    out.extend(c.finish());
    let ev = events(&out);
    let types: Vec<&str> = ev.iter().map(|e| e["type"].as_str().unwrap()).collect();
    assert_eq!(
        types[2..15],
        [
            "response.output_item.added",
            "response.reasoning_summary_part.added",
            "response.content_part.added",
            "response.reasoning_summary_text.delta",
            "response.reasoning_text.delta",
            "response.reasoning_summary_text.delta",
            "response.reasoning_text.delta",
            "response.reasoning_summary_text.done",
            "response.reasoning_summary_part.done",
            "response.reasoning_text.done",
            "response.content_part.done",
            "response.output_item.done",
            "response.output_item.added",
        ]
    );
    let seqs: Vec<u64> = ev
        .iter()
        .map(|e| e["sequence_number"].as_u64().unwrap())
        .collect();
    assert_eq!(seqs, (0..ev.len() as u64).collect::<Vec<_>>());
    assert_eq!(ev[9]["text"], "Let me think.");
    assert_eq!(
        ev[10]["part"],
        json!({"type": "summary_text", "text": "Let me think."})
    );
    let done = &ev[13]["item"];
    assert_eq!(
        done["summary"],
        json!([{"type": "summary_text", "text": "Let me think."}])
    );
    assert_eq!(done["content"][0]["text"], "Let me think.");
    // Whole: the item carries both.
    let mut c = Codec::new(Api::Responses, summary, false);
    let body: Value = serde_json::from_slice(&c.whole(200, "text/event-stream", &input)).unwrap();
    assert_eq!(body["output"][0]["summary"][0]["text"], "Let me think.");
    // Not asked for: no summary events, an empty summary.
    let plain = run(Api::Responses, true, true, &input, 0);
    assert!(!String::from_utf8_lossy(&plain).contains("summary_text"));
}
