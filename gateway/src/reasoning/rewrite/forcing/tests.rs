use serde_json::{json, Value};

use super::*;
use crate::config::{ParserKind, ReasoningConfig};
use crate::openai::Endpoint;
use crate::reasoning::rewrite::Alert;

fn events(tokens: &[&str], tail: &[Value]) -> String {
    let mut s = String::new();
    for t in tokens {
        let v = json!({"id":"c1","object":"chat.completion.chunk","created":1,"model":"m",
            "choices":[{"index":0,"delta":{"content":t},"finish_reason":null}]});
        s.push_str(&format!("data: {v}\n\n"));
    }
    for v in tail {
        s.push_str(&format!("data: {v}\n\n"));
    }
    s
}

fn end(usage: Value) -> [Value; 2] {
    [
        json!({"id":"c2","object":"chat.completion.chunk","created":1,"model":"m",
            "choices":[{"index":0,"delta":{},"finish_reason":"stop"}]}),
        json!({"id":"c2","object":"chat.completion.chunk","created":1,"model":"m",
            "choices":[],"usage":usage}),
    ]
}

#[derive(Debug, Default, PartialEq)]
struct Seen {
    reasoning: String,
    content: String,
    done: usize,
    usage: Option<Value>,
}

fn read(bytes: &[u8], seen: &mut Seen) {
    let text = String::from_utf8(bytes.to_vec()).unwrap();
    for block in text.split("\n\n").filter(|b| !b.is_empty()) {
        let data = block.strip_prefix("data: ").unwrap();
        if data == "[DONE]" {
            seen.done += 1;
            continue;
        }
        let v: Value = serde_json::from_str(data).unwrap();
        if let Some(d) = v["choices"].get(0).map(|c| &c["delta"]) {
            seen.reasoning
                .push_str(d["reasoning_content"].as_str().unwrap_or(""));
            seen.content.push_str(d["content"].as_str().unwrap_or(""));
        }
        if v.get("usage").is_some_and(|u| !u.is_null()) {
            seen.usage = Some(v["usage"].clone());
        }
    }
}

fn rewriter(max: Option<u64>, answer: bool, min: Option<u64>) -> ResponseRewriter {
    let cfg = ReasoningConfig {
        parser: ParserKind::DeepseekR1,
        max_reasoning_tokens: max,
        ..ReasoningConfig::default()
    };
    ResponseRewriter::for_response(&cfg, Endpoint::ChatCompletions, 200, "text/event-stream")
        .unwrap()
        .with_forcing(answer, min)
}

/// Feeds `input` in pieces of `piece` bytes until the rewriter suspends; the rest is never read.
fn feed_until_suspended(rw: &mut ResponseRewriter, input: &str, piece: usize, seen: &mut Seen) {
    for part in input.as_bytes().chunks(piece) {
        read(&rw.feed(part), seen);
        if rw.is_suspended() {
            return;
        }
    }
}

#[test]
fn at_the_budget_the_stream_is_suspended_then_resumed_as_the_answer_with_one_usage() {
    let first = events(
        &["<think>", "a ", "b ", "c ", "d ", "</think>", "late"],
        &[],
    );
    let second = events(
        &[" 42", "."],
        &end(json!({"prompt_tokens": 13, "completion_tokens": 2, "total_tokens": 15})),
    ) + "data: [DONE]\n\n";
    for piece in [1, 7, 64, first.len()] {
        let mut rw = rewriter(Some(2), true, None);
        let mut seen = Seen::default();
        feed_until_suspended(&mut rw, &first, piece, &mut seen);
        assert!(rw.is_suspended(), "piece {piece}");
        assert_eq!(rw.take_alerts(), vec![Alert::BudgetExceeded]);
        assert_eq!(
            seen.reasoning, "a b c ",
            "piece {piece}: nothing past the budget"
        );
        assert_eq!((seen.content.as_str(), seen.done), ("", 0));
        assert_eq!(rw.said_so_far(), Some((String::new(), "a b c ".into())));
        read(
            &rw.resume(Continue::Answer {
                bridge: "Final answer:",
            }),
            &mut seen,
        );
        assert_eq!(rw.carried_tokens(), 3);
        for part in second.as_bytes().chunks(piece) {
            read(&rw.feed(part), &mut seen);
        }
        read(&rw.finish(), &mut seen);
        assert_eq!(seen.content, "Final answer: 42.", "piece {piece}");
        assert_eq!(seen.reasoning, "a b c ");
        assert_eq!(seen.done, 1);
        let u = seen.usage.clone().unwrap();
        assert_eq!(u["completion_tokens"], 5, "both parts: {u}");
        assert_eq!(
            u["prompt_tokens"], 10,
            "the continuation's prompt less the first part: {u}"
        );
        assert_eq!(u["total_tokens"], 15);
        assert_eq!(u["completion_tokens_details"]["reasoning_tokens"], 3);
        let report = rw.report();
        assert_eq!((report.reasoning_tokens, report.answer_tokens), (3, 2));
        assert_eq!(report.finish_reason.as_deref(), Some("stop"));
        assert!(!report.unterminated);
    }
}

#[test]
fn without_forcing_the_budget_only_raises_its_alert() {
    let first = events(
        &["<think>", "a ", "b ", "c ", "d ", "</think>", "late"],
        &[],
    );
    let mut rw = rewriter(Some(2), false, None);
    let mut seen = Seen::default();
    read(&rw.feed(first.as_bytes()), &mut seen);
    assert!(!rw.is_suspended());
    assert_eq!(rw.take_alerts(), vec![Alert::BudgetExceeded]);
}

#[test]
fn an_early_end_of_reasoning_is_withheld_and_the_reasoning_reopened() {
    let first = events(&["<think>", "a", " b.", "</think>", "Answer A."], &[]);
    let second = events(
        &[" more", "</think>", "Answer B."],
        &end(json!({"prompt_tokens": 9, "completion_tokens": 3, "total_tokens": 12})),
    ) + "data: [DONE]\n\n";
    for piece in [1, 5, first.len()] {
        let mut rw = rewriter(None, false, Some(5));
        let mut seen = Seen::default();
        feed_until_suspended(&mut rw, &first, piece, &mut seen);
        assert!(rw.is_suspended());
        assert_eq!(rw.take_alerts(), vec![Alert::EndedEarly]);
        assert_eq!(seen.reasoning, "a b.");
        assert_eq!(
            seen.content, "",
            "the early answer never reaches the client"
        );
        read(&rw.resume(Continue::Extend { word: "Wait" }), &mut seen);
        rw.stop_extending();
        for part in second.as_bytes().chunks(piece) {
            read(&rw.feed(part), &mut seen);
        }
        read(&rw.finish(), &mut seen);
        assert_eq!(seen.reasoning, "a b. Wait more", "piece {piece}");
        assert_eq!(seen.content, "Answer B.");
        assert_eq!(seen.done, 1);
        assert!(
            rw.take_alerts().is_empty(),
            "no second extension once stopped"
        );
    }
}

#[test]
fn a_reasoning_over_the_minimum_ends_normally() {
    let input = events(&["<think>", "a", " b.", "</think>", "Answer A."], &[]) + "data: [DONE]\n\n";
    let mut rw = rewriter(None, false, Some(2));
    let mut seen = Seen::default();
    read(&rw.feed(input.as_bytes()), &mut seen);
    read(&rw.finish(), &mut seen);
    assert!(!rw.is_suspended());
    assert_eq!(seen.content, "Answer A.");
}

#[test]
fn an_early_end_that_also_finishes_the_choice_does_not_finish_the_client_stream() {
    let closing = json!({"id":"c1","object":"chat.completion.chunk","created":1,"model":"m",
        "choices":[{"index":0,"delta":{"content":"</think>Answer A."},"finish_reason":"stop"}]});
    let first = events(&["<think>", "a"], &[closing]) + "data: [DONE]\n\n";
    let mut rw = rewriter(None, false, Some(5));
    let out = rw.feed(first.as_bytes());
    assert!(rw.is_suspended());
    let text = String::from_utf8(out).unwrap();
    assert!(
        !text.contains("\"stop\"") && !text.contains("[DONE]") && !text.contains("Answer A"),
        "{text}"
    );
}
