use serde_json::{json, Value};

use super::*;

fn cfg(parser: ParserKind, start: bool, field: OutputField) -> ReasoningConfig {
    ReasoningConfig {
        parser,
        start_in_reasoning: start,
        output_field: field,
        ..ReasoningConfig::default()
    }
}

fn sse_chunk(content: &str) -> String {
    let v = json!({"id":"c1","object":"chat.completion.chunk","created":1,"model":"m",
        "choices":[{"index":0,"delta":{"content":content},"finish_reason":null}]});
    format!("data: {v}\n\n")
}

fn finish_chunk() -> String {
    let v = json!({"id":"c1","object":"chat.completion.chunk","created":1,"model":"m",
        "choices":[{"index":0,"delta":{},"finish_reason":"stop"}]});
    format!("data: {v}\n\n")
}

/// Runs a stream through a rewriter fed in pieces of `piece` bytes; returns (reasoning, content, events).
fn run_stream(c: &ReasoningConfig, input: &str, piece: usize) -> (String, String, Vec<Value>) {
    let mut rw =
        ResponseRewriter::for_response(c, Endpoint::ChatCompletions, 200, "text/event-stream")
            .unwrap();
    let mut out = Vec::new();
    for part in input.as_bytes().chunks(piece.max(1)) {
        out.extend(rw.feed(part));
    }
    out.extend(rw.finish());
    let text = String::from_utf8(out).unwrap();
    let mut reasoning = String::new();
    let mut content = String::new();
    let mut events = Vec::new();
    for block in text.split("\n\n").filter(|b| !b.is_empty()) {
        let data = block.strip_prefix("data: ").unwrap();
        if data == "[DONE]" {
            events.push(Value::String("[DONE]".into()));
            continue;
        }
        let v: Value = serde_json::from_str(data).unwrap();
        if let Some(d) = v["choices"].get(0).map(|c| &c["delta"]) {
            reasoning.push_str(d["reasoning_content"].as_str().unwrap_or(""));
            reasoning.push_str(d["reasoning"].as_str().unwrap_or(""));
            content.push_str(d["content"].as_str().unwrap_or(""));
        }
        events.push(v);
    }
    (reasoning, content, events)
}

#[test]
fn tags_split_across_chunks_and_tcp_reads_give_one_clean_split() {
    let tokens = [
        "<th", "ink>", "2+2", " is 4", ".</", "think", ">\n\n", "Four", " ✓",
    ];
    let mut input: String = tokens.iter().map(|t| sse_chunk(t)).collect();
    input.push_str(&finish_chunk());
    input.push_str("data: [DONE]\n\n");
    let c = cfg(ParserKind::DeepseekR1, false, OutputField::ReasoningContent);
    for piece in [1, 2, 3, 7, 64, 100_000] {
        let (r, a, events) = run_stream(&c, &input, piece);
        assert_eq!(r, "2+2 is 4.", "piece {piece}");
        assert_eq!(a, "Four ✓", "piece {piece}");
        assert_eq!(events.last().unwrap(), "[DONE]");
    }
}

#[test]
fn upstream_split_fields_are_mapped_not_duplicated_and_content_is_not_rescanned() {
    let v1 = json!({"choices":[{"index":0,"delta":{"reasoning_content":"think A","reasoning":"think A"}}]});
    let v2 = json!({"choices":[{"index":0,"delta":{"content":"<think>literal</think>"}}]});
    let input = format!("data: {v1}\n\ndata: {v2}\n\ndata: [DONE]\n\n");
    let c = cfg(ParserKind::DeepseekR1, false, OutputField::Reasoning);
    let (r, a, events) = run_stream(&c, &input, 5);
    assert_eq!(r, "think A");
    assert_eq!(a, "<think>literal</think>");
    assert!(events[0]["choices"][0]["delta"]
        .get("reasoning_content")
        .is_none());
}

#[test]
fn output_field_both_sets_both_fields() {
    let input = format!("{}{}", sse_chunk("<think>x</think>y"), "data: [DONE]\n\n");
    let c = cfg(ParserKind::DeepseekR1, false, OutputField::Both);
    let (_, _, events) = run_stream(&c, &input, 4);
    let d = &events[0]["choices"][0]["delta"];
    assert_eq!(d["reasoning_content"], "x");
    assert_eq!(d["reasoning"], "x");
    assert_eq!(d["content"], "y");
}

#[test]
fn held_back_text_is_flushed_before_done_and_usage_gets_reasoning_tokens() {
    let usage = json!({"id":"c1","choices":[],"usage":{"prompt_tokens":3,"completion_tokens":5,"total_tokens":8}});
    let input = format!(
        "{}{}{}data: {usage}\n\ndata: [DONE]\n\n",
        sse_chunk("a"),
        sse_chunk("b"),
        sse_chunk("</thi")
    );
    let c = cfg(ParserKind::DeepseekR1, true, OutputField::ReasoningContent);
    let (r, a, events) = run_stream(&c, &input, 9);
    assert_eq!(r, "ab</thi", "an unterminated tag prefix is reasoning text");
    assert_eq!(a, "");
    let usage = events.iter().find(|e| e.get("usage").is_some()).unwrap();
    assert_eq!(
        usage["usage"]["completion_tokens_details"]["reasoning_tokens"],
        3
    );
    assert_eq!(usage["choices"], json!([]));
}

#[test]
fn non_streamed_messages_are_split_with_null_for_no_reasoning() {
    let c = cfg(ParserKind::DeepseekR1, false, OutputField::ReasoningContent);
    let body = json!({"choices":[
        {"index":0,"message":{"role":"assistant","content":"<think>because</think>\n\nyes"},"finish_reason":"stop"},
        {"index":1,"message":{"role":"assistant","content":"plain"},"finish_reason":"stop"}],
        "usage":{"prompt_tokens":1,"completion_tokens":10,"total_tokens":11}});
    let mut rw =
        ResponseRewriter::for_response(&c, Endpoint::ChatCompletions, 200, "application/json")
            .unwrap();
    let bytes = serde_json::to_vec(&body).unwrap();
    let mut out = rw.feed(&bytes[..10]);
    out.extend(rw.feed(&bytes[10..]));
    out.extend(rw.finish());
    let v: Value = serde_json::from_slice(&out).unwrap();
    assert_eq!(v["choices"][0]["message"]["reasoning_content"], "because");
    assert_eq!(v["choices"][0]["message"]["content"], "yes");
    assert_eq!(v["choices"][1]["message"]["reasoning_content"], Value::Null);
    assert_eq!(v["choices"][1]["message"]["content"], "plain");
    // 7 of 15 characters are reasoning: 10 × 7/15 ≈ 5.
    assert_eq!(
        v["usage"]["completion_tokens_details"]["reasoning_tokens"],
        5
    );
}

#[test]
fn completions_text_is_split_too() {
    let c = cfg(ParserKind::DeepseekR1, false, OutputField::ReasoningContent);
    let body = json!({"choices":[{"index":0,"text":"<think>r</think>t","finish_reason":"stop"}]});
    let mut rw =
        ResponseRewriter::for_response(&c, Endpoint::Completions, 200, "application/json").unwrap();
    let mut out = rw.feed(&serde_json::to_vec(&body).unwrap());
    out.extend(rw.finish());
    let v: Value = serde_json::from_slice(&out).unwrap();
    assert_eq!(v["choices"][0]["text"], "t");
    assert_eq!(v["choices"][0]["reasoning_content"], "r");
}

#[test]
fn passthrough_errors_and_non_json_are_not_rewritten() {
    let c = cfg(
        ParserKind::Passthrough,
        false,
        OutputField::ReasoningContent,
    );
    assert!(ResponseRewriter::for_response(
        &c,
        Endpoint::ChatCompletions,
        200,
        "text/event-stream"
    )
    .is_none());
    let c = cfg(ParserKind::DeepseekR1, false, OutputField::ReasoningContent);
    assert!(
        ResponseRewriter::for_response(&c, Endpoint::ChatCompletions, 500, "application/json")
            .is_none()
    );
    assert!(
        ResponseRewriter::for_response(&c, Endpoint::ChatCompletions, 200, "text/plain").is_none()
    );
}

#[test]
fn qwen3_with_thinking_switched_off_looks_for_no_tags() {
    let input = format!("{}data: [DONE]\n\n", sse_chunk("plain answer"));
    let c = cfg(ParserKind::Qwen3, true, OutputField::ReasoningContent);
    let (r, a, _) = run_stream(&c, &input, 5);
    assert_eq!(
        (r.as_str(), a.as_str()),
        ("plain answer", ""),
        "start_in_reasoning puts it all in reasoning"
    );
    let mut rw =
        ResponseRewriter::for_response(&c, Endpoint::ChatCompletions, 200, "text/event-stream")
            .unwrap()
            .thinking_off();
    let out = String::from_utf8(rw.feed(input.as_bytes())).unwrap();
    assert!(out.contains("\"content\":\"plain answer\""), "{out}");
    assert!(!out.contains("reasoning_content"), "{out}");
}

#[test]
fn unterminated_reasoning_is_flagged() {
    let input = sse_chunk("<think>still going");
    let c = cfg(ParserKind::DeepseekR1, false, OutputField::ReasoningContent);
    let mut rw =
        ResponseRewriter::for_response(&c, Endpoint::ChatCompletions, 200, "text/event-stream")
            .unwrap();
    rw.feed(input.as_bytes());
    rw.finish();
    assert!(rw.stats().unterminated);
}

/// A small deterministic generator (xorshift64*), so failures reproduce from the seed.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

const FRAGMENTS: &[&str] = &[
    "<think>", "</think>", "<th", "ink>", "</", "think", ">", "<", " ", "\n", "\n\n", "a", "42",
    "é", "🤔", "wait", "\"", "\\", "data: ", "[DONE]",
];

fn feed_in_random_pieces(rw: &mut ResponseRewriter, input: &[u8], rng: &mut Rng) -> Vec<u8> {
    let mut out = Vec::new();
    let mut i = 0;
    while i < input.len() {
        let n = 1 + rng.below(40);
        let j = (i + n).min(input.len());
        out.extend(rw.feed(&input[i..j]));
        i = j;
    }
    out.extend(rw.finish());
    out
}

#[test]
fn arbitrary_bytes_never_panic_the_rewriters() {
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
    let c = cfg(ParserKind::DeepseekR1, false, OutputField::Both);
    for _ in 0..3000 {
        let len = rng.below(300);
        let mut input = Vec::with_capacity(len);
        while input.len() < len {
            if rng.below(4) == 0 {
                input.push(rng.next() as u8);
            } else {
                input.extend_from_slice(FRAGMENTS[rng.below(FRAGMENTS.len())].as_bytes());
            }
        }
        for content_type in ["text/event-stream", "application/json"] {
            for endpoint in [Endpoint::ChatCompletions, Endpoint::Completions] {
                let mut rw =
                    ResponseRewriter::for_response(&c, endpoint, 200, content_type).unwrap();
                feed_in_random_pieces(&mut rw, &input, &mut rng);
                let mut rw =
                    ResponseRewriter::for_response(&c, endpoint, 200, content_type).unwrap();
                rw.feed(&input);
                rw.abort();
            }
        }
    }
}

#[test]
fn random_token_streams_split_the_same_under_any_chunking() {
    let mut rng = Rng(42);
    let c = cfg(ParserKind::DeepseekR1, false, OutputField::ReasoningContent);
    for _ in 0..500 {
        let tokens: Vec<String> = (0..rng.below(30))
            .map(|_| {
                (0..1 + rng.below(3))
                    .map(|_| FRAGMENTS[rng.below(FRAGMENTS.len())])
                    .collect()
            })
            .collect();
        let mut input: String = tokens.iter().map(|t| sse_chunk(t)).collect();
        input.push_str(&finish_chunk());
        input.push_str("data: [DONE]\n\n");
        let whole = run_stream(&c, &input, usize::MAX);
        let mut rw =
            ResponseRewriter::for_response(&c, Endpoint::ChatCompletions, 200, "text/event-stream")
                .unwrap();
        // Every other stream takes the general path only, so both paths are held to one result.
        rw.fast = rng.below(2) == 0;
        let pieces = feed_in_random_pieces(&mut rw, input.as_bytes(), &mut rng);
        let text = String::from_utf8(pieces).unwrap();
        let (mut r, mut a) = (String::new(), String::new());
        for data in text
            .split("\n\n")
            .filter_map(|b| b.strip_prefix("data: "))
            .filter(|d| *d != "[DONE]")
        {
            let v: Value = serde_json::from_str(data).unwrap();
            r.push_str(
                v["choices"][0]["delta"]["reasoning_content"]
                    .as_str()
                    .unwrap_or(""),
            );
            a.push_str(v["choices"][0]["delta"]["content"].as_str().unwrap_or(""));
        }
        assert_eq!((r, a), (whole.0, whole.1), "tokens {tokens:?}");
    }
}

#[test]
fn checkpoints_come_every_n_completed_steps_with_the_step_text() {
    let c = cfg(ParserKind::DeepseekR1, false, OutputField::ReasoningContent);
    let mut input = sse_chunk("<think>");
    for i in 1..=12 {
        input.push_str(&sse_chunk(&format!("Step {i}: work")));
        input.push_str(&sse_chunk(&format!(" on part {i}.\n\n")));
    }
    input.push_str(&sse_chunk("</think>Done."));
    input.push_str(&finish_chunk());
    input.push_str("data: [DONE]\n\n");
    for piece in [1, 7, input.len()] {
        let mut rw =
            ResponseRewriter::for_response(&c, Endpoint::ChatCompletions, 200, "text/event-stream")
                .unwrap()
                .with_checkpoints(5);
        let mut out = Vec::new();
        for part in input.as_bytes().chunks(piece) {
            out.extend(rw.feed(part));
        }
        out.extend(rw.finish());
        let text = String::from_utf8(out).unwrap();
        let checkpoints: Vec<Value> = text
            .split("\n\n")
            .filter_map(|b| b.strip_prefix("data: "))
            .filter(|d| *d != "[DONE]")
            .map(|d| serde_json::from_str::<Value>(d).unwrap())
            .filter(|v| v.get("reasoning_checkpoint").is_some())
            .collect();
        let steps: Vec<u64> = checkpoints
            .iter()
            .map(|v| v["reasoning_checkpoint"]["step"].as_u64().unwrap())
            .collect();
        assert_eq!(steps, vec![5, 10], "piece {piece}");
        assert_eq!(
            checkpoints[0]["reasoning_checkpoint"]["summary"],
            "Step 5: work on part 5."
        );
        assert_eq!(checkpoints[1]["choices"], json!([]));
        assert_eq!(checkpoints[1]["id"], "c1");
    }
    // Off unless asked.
    let (_, content, events) = run_stream(&c, &input, 3);
    assert_eq!(content, "Done.");
    assert!(events
        .iter()
        .all(|e| e.get("reasoning_checkpoint").is_none()));
}

#[test]
fn output_field_none_drops_reasoning_from_streams_but_still_measures_it() {
    let tokens = [
        "<think>",
        "Step 1: 2+2",
        ".\n\nWait, ",
        "recheck: 4",
        "</think>",
        "\n\nFour",
    ];
    let mut input: String = tokens.iter().map(|t| sse_chunk(t)).collect();
    input.push_str(&finish_chunk());
    input.push_str("data: [DONE]\n\n");
    let c = cfg(ParserKind::DeepseekR1, false, OutputField::None);
    for fast in [true, false] {
        for piece in [1, 5, input.len()] {
            let mut rw = ResponseRewriter::for_response(
                &c,
                Endpoint::ChatCompletions,
                200,
                "text/event-stream",
            )
            .unwrap();
            rw.fast = fast;
            let mut out = Vec::new();
            for part in input.as_bytes().chunks(piece) {
                out.extend(rw.feed(part));
            }
            out.extend(rw.finish());
            let text = String::from_utf8(out).unwrap();
            assert!(!text.contains("reasoning"), "fast {fast}: {text}");
            assert!(!text.contains("2+2"), "fast {fast}: {text}");
            let mut content = String::new();
            for data in text
                .split("\n\n")
                .filter_map(|b| b.strip_prefix("data: "))
                .filter(|d| *d != "[DONE]")
            {
                let v: Value = serde_json::from_str(data).unwrap();
                let d = &v["choices"][0]["delta"];
                assert!(
                    d.as_object().is_none_or(|o| !o.is_empty())
                        || !v["choices"][0]["finish_reason"].is_null(),
                    "no empty chunks are forwarded: {data}"
                );
                content.push_str(d["content"].as_str().unwrap_or(""));
            }
            assert_eq!(content, "Four");
            let report = rw.report();
            assert_eq!(report.steps, 2, "fast {fast}");
            assert_eq!(report.corrections, 1, "fast {fast}");
            assert!(report.reasoning_chars > 20);
            assert!(report.reasoning_tokens >= 3, "{report:?}");
        }
    }
}

#[test]
fn output_field_none_drops_reasoning_from_whole_bodies() {
    let c = cfg(ParserKind::DeepseekR1, false, OutputField::None);
    let body = json!({"choices":[{"index":0,"message":{"role":"assistant",
        "content":"<think>because 2+2=4</think>\n\nyes"},"finish_reason":"stop"}],
        "usage":{"prompt_tokens":1,"completion_tokens":10,"total_tokens":11}});
    let mut rw =
        ResponseRewriter::for_response(&c, Endpoint::ChatCompletions, 200, "application/json")
            .unwrap();
    let mut out = rw.feed(&serde_json::to_vec(&body).unwrap());
    out.extend(rw.finish());
    let v: Value = serde_json::from_slice(&out).unwrap();
    let m = v["choices"][0]["message"].as_object().unwrap();
    assert_eq!(m["content"], "yes");
    assert!(!m.contains_key("reasoning_content") && !m.contains_key("reasoning"));
    assert!(v["usage"]["completion_tokens_details"]["reasoning_tokens"].as_u64() > Some(0));
    assert_eq!(rw.report().reasoning_chars, "because 2+2=4".len());
}

#[test]
fn route_tags_are_split_across_chunks_like_think() {
    let c = ReasoningConfig {
        tags: crate::reasoning::Tags::new("<thinking>", "</thinking>"),
        ..cfg(ParserKind::DeepseekR1, false, OutputField::ReasoningContent)
    };
    let tokens = ["<thin", "king>", "a <think>", " b</thinki", "ng>", "\n\nc"];
    let mut input: String = tokens.iter().map(|t| sse_chunk(t)).collect();
    input.push_str(&finish_chunk());
    input.push_str("data: [DONE]\n\n");
    for piece in [1, 3, 100_000] {
        let (r, a, _) = run_stream(&c, &input, piece);
        assert_eq!(r, "a <think> b", "piece {piece}");
        assert_eq!(a, "c", "piece {piece}");
    }
}
