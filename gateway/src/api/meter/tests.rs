use super::*;
use crate::openai::ErrorCode;

fn sse(events: &[Value]) -> String {
    events
        .iter()
        .map(|e| format!("event: {}\ndata: {e}\n\n", e["type"].as_str().unwrap_or("")))
        .collect()
}

fn meter(api: Api, sse: bool, budget: Option<u64>) -> Meter {
    let cfg = ReasoningConfig {
        max_reasoning_tokens: budget,
        ..ReasoningConfig::default()
    };
    Meter::new(api, sse, &cfg, None)
}

/// Feeds `body` in `step`-byte pieces; returns what was forwarded.
fn run(m: &mut Meter, body: &[u8], step: usize) -> Vec<u8> {
    let mut out = Vec::new();
    for b in body.chunks(step) {
        out.extend(m.feed(b));
    }
    out.extend(m.finish());
    out
}

fn responses_stream() -> String {
    sse(&[
        json!({"type": "response.created", "sequence_number": 0, "response": {"id": "resp_1", "object": "response", "status": "in_progress", "model": "up-model", "output": []}}),
        json!({"type": "response.reasoning_text.delta", "sequence_number": 1, "delta": "Step 1: add.\n\n"}),
        json!({"type": "response.reasoning_text.delta", "sequence_number": 2, "delta": "Wait, check again.\n\n"}),
        json!({"type": "response.reasoning_text.delta", "sequence_number": 3, "delta": "Step 2: 4."}),
        json!({"type": "response.output_item.done", "sequence_number": 4, "output_index": 0, "item": {"id": "rs_1", "type": "reasoning", "summary": []}}),
        json!({"type": "response.output_text.delta", "sequence_number": 5, "delta": "4"}),
        json!({"type": "response.completed", "sequence_number": 6, "response": {"status": "completed", "model": "up-model", "output": [], "usage": {"input_tokens": 3, "output_tokens": 20, "output_tokens_details": {"reasoning_tokens": 15}}}}),
    ])
}

#[test]
fn a_responses_stream_gives_tokens_steps_corrections_checks_and_the_text_split_anywhere() {
    let body = responses_stream();
    for step in [1, 7, 64, body.len()] {
        let mut m = meter(Api::Responses, true, None);
        let out = run(&mut m, body.as_bytes(), step);
        assert_eq!(out, body.as_bytes(), "forwarded untouched");
        let r = m.report();
        assert_eq!(
            (r.reasoning_tokens, r.answer_tokens, r.prompt_tokens),
            (15, 5, Some(3))
        );
        assert_eq!((r.steps, r.corrections), (3, 1));
        assert_eq!(r.finish_reason.as_deref(), Some("stop"));
        assert!(r.verifications.iter().all(|(_, ok)| *ok), "{r:?}");
        assert!(r
            .verifications
            .contains(&(verify::Check::EmptyAnswer, true)));
        let (reasoning, answer) = m.full_text().unwrap();
        assert_eq!(
            reasoning,
            "Step 1: add.\n\nWait, check again.\n\nStep 2: 4."
        );
        assert_eq!(answer, "4");
        assert_eq!(m.model().as_deref(), Some("up-model"));
    }
}

#[test]
fn a_summary_is_the_reasoning_when_no_reasoning_text_came() {
    let body = sse(&[
        json!({"type": "response.reasoning_summary_text.delta", "delta": "Added."}),
        json!({"type": "response.output_text.delta", "delta": "4"}),
        json!({"type": "response.completed", "response": {"status": "completed", "output": []}}),
    ]);
    let mut m = meter(Api::Responses, true, None);
    run(&mut m, body.as_bytes(), 5);
    assert_eq!(m.full_text(), Some(("Added.".into(), "4".into())));
}

#[test]
fn a_messages_body_gives_its_figures_and_a_tag_leak_fails_verification() {
    let body = br#"{"model":"claude-ish","content":[{"type":"thinking","thinking":"hmm, let me see","signature":"up"},{"type":"text","text":"ok </think>"}],"stop_reason":"end_turn","usage":{"input_tokens":4,"output_tokens":9}}"#;
    let mut m = meter(Api::Messages, false, None);
    assert_eq!(run(&mut m, body, 3), body.to_vec());
    let r = m.report();
    assert_eq!((r.reasoning_tokens, r.prompt_tokens), (4, Some(4)));
    assert!(r.tokens_counted);
    assert_eq!(r.finish_reason.as_deref(), Some("stop"));
    assert_eq!(r.failed().collect::<Vec<_>>(), vec![verify::Check::TagLeak]);
    assert_eq!(m.model().as_deref(), Some("claude-ish"));
}

#[test]
fn redacted_or_encrypted_reasoning_is_never_offered_to_the_cache() {
    let body = br#"{"content":[{"type":"redacted_thinking","data":"xx"},{"type":"text","text":"ok"}],"stop_reason":"end_turn"}"#;
    let mut m = meter(Api::Messages, false, None);
    run(&mut m, body, 64);
    assert_eq!(m.full_text(), None);
    let body = sse(&[
        json!({"type": "response.output_text.delta", "delta": "4"}),
        json!({"type": "response.completed", "response": {"status": "completed",
            "output": [{"type": "reasoning", "summary": [], "encrypted_content": "gAAA"}]}}),
    ]);
    let mut m = meter(Api::Responses, true, None);
    run(&mut m, body.as_bytes(), 64);
    assert_eq!(m.full_text(), None);
}

#[test]
fn past_the_budget_a_responses_stream_ends_with_response_failed_after_whole_events() {
    let body = responses_stream();
    for step in [1, 5, 33] {
        let mut m = meter(Api::Responses, true, Some(2));
        let mut out = Vec::new();
        let mut alerts = 0;
        for b in body.as_bytes().chunks(step) {
            out.extend(m.feed(b));
            if m.take_budget_alert() {
                alerts += 1;
                let err = ApiError::new(ErrorCode::ReasoningBudgetExceeded, "too long");
                out.extend(m.abort(&err));
                break;
            }
        }
        assert_eq!(alerts, 1);
        let text = String::from_utf8(out).unwrap();
        let events: Vec<Value> = text
            .split("\n\n")
            .filter(|e| !e.is_empty())
            .map(|e| {
                let data = e.lines().find_map(|l| l.strip_prefix("data: ")).unwrap();
                serde_json::from_str(data).unwrap()
            })
            .collect();
        let types: Vec<&str> = events.iter().map(|e| e["type"].as_str().unwrap()).collect();
        // The third reasoning delta passes the budget of 2: nothing after it is forwarded.
        assert_eq!(
            types,
            [
                "response.created",
                "response.reasoning_text.delta",
                "response.reasoning_text.delta",
                "response.reasoning_text.delta",
                "response.failed"
            ],
            "step {step}"
        );
        let failed = &events[4];
        assert_eq!(failed["sequence_number"], 4);
        assert_eq!(failed["response"]["id"], "resp_1");
        assert_eq!(failed["response"]["status"], "failed");
        assert_eq!(failed["response"]["error"]["message"], "too long");
    }
}

#[test]
fn past_the_budget_a_messages_stream_ends_with_an_error_event() {
    let body = sse(&[
        json!({"type": "message_start", "message": {"model": "m", "usage": {"input_tokens": 2}}}),
        json!({"type": "content_block_delta", "index": 0, "delta": {"type": "thinking_delta", "thinking": "a"}}),
        json!({"type": "content_block_delta", "index": 0, "delta": {"type": "thinking_delta", "thinking": "b"}}),
    ]);
    let mut m = meter(Api::Messages, true, Some(1));
    let out = m.feed(body.as_bytes());
    assert!(m.take_budget_alert());
    assert!(!m.take_budget_alert(), "alerted once");
    let err = ApiError::new(ErrorCode::ReasoningBudgetExceeded, "too long");
    let end = String::from_utf8(m.abort(&err)).unwrap();
    assert_eq!(out, body.as_bytes());
    assert!(end.starts_with("event: error\ndata: "), "{end}");
    assert!(
        end.contains("\"type\":\"error\"") && end.contains("too long"),
        "{end}"
    );
}

#[test]
fn events_end_at_a_blank_line_in_every_line_ending() {
    assert_eq!(next_event(b"data: a\n\ndata: b"), Some(9));
    assert_eq!(next_event(b"data: a\r\n\r\ndata"), Some(11));
    assert_eq!(next_event(b"data: a\r\rdat"), Some(9));
    assert_eq!(
        next_event(b"data: a\r\r"),
        None,
        "the last CR may be half a CRLF"
    );
    assert_eq!(next_event(b"data: a\n"), None);
}

#[test]
fn a_stream_that_arrives_in_one_piece_is_cut_right_after_the_event_past_the_budget() {
    let body = responses_stream();
    let mut m = meter(Api::Responses, true, Some(2));
    let out = String::from_utf8(m.feed(body.as_bytes())).unwrap();
    assert!(m.take_budget_alert());
    let last = out.trim_end().rsplit("\n\n").next().unwrap();
    assert!(last.contains("Step 2: 4."), "{out}");
    assert!(!out.contains("response.completed"), "{out}");
}
