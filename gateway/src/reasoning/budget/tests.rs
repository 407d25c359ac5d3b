use serde_json::json;

use super::*;
use crate::reasoning::{OpenTag, Tags};

fn opts(start_in_reasoning: bool, tags: Tags) -> ParserOptions {
    ParserOptions {
        start_in_reasoning,
        open_tag: OpenTag::Anywhere,
        tags,
    }
}

#[test]
fn a_forced_answer_closes_the_reasoning_then_bridges() {
    let p = assistant_prefix(
        &opts(false, Tags::THINK),
        "",
        "2+2: add them",
        Continue::Answer {
            bridge: "Final answer:",
        },
    );
    assert_eq!(p, "<think>2+2: add them</think>\n\nFinal answer:");
}

#[test]
fn the_template_opened_tag_is_not_written_again_and_route_tags_are_used() {
    let p = assistant_prefix(
        &opts(true, Tags::new("<thinking>", "</thinking>")),
        "",
        "so 4",
        Continue::Answer { bridge: "" },
    );
    assert_eq!(p, "so 4</thinking>\n\n");
}

#[test]
fn answer_text_before_the_reasoning_stays_first() {
    let p = assistant_prefix(
        &opts(false, Tags::THINK),
        "Sure.",
        "checking",
        Continue::Answer { bridge: "" },
    );
    assert_eq!(p, "Sure.<think>checking</think>\n\n");
}

#[test]
fn an_extension_leaves_the_reasoning_open_and_appends_the_word() {
    let o = opts(true, Tags::THINK);
    let p = assistant_prefix(&o, "", "it is 4.", Continue::Extend { word: "Wait" });
    assert_eq!(p, "it is 4. Wait");
    let p = assistant_prefix(&o, "", "it is 4.\n", Continue::Extend { word: "Wait" });
    assert_eq!(p, "it is 4.\nWait");
    assert!(!p.contains("</think>"));
}

#[test]
fn the_chat_continuation_appends_the_prefix_and_sets_the_flags() {
    let req = json!({"model": "m", "stream": true, "max_tokens": 100,
        "messages": [{"role": "user", "content": "2+2?"}]});
    let body = chat_continuation(&req, "<think>add</think>\n\n", 30).unwrap();
    assert_eq!(
        body["messages"],
        json!([{"role": "user", "content": "2+2?"},
               {"role": "assistant", "content": "<think>add</think>\n\n"}])
    );
    assert_eq!(body["continue_final_message"], true);
    assert_eq!(body["add_generation_prompt"], false);
    assert_eq!(body["max_tokens"], 70);
    assert_eq!(body["stream"], true, "everything else is kept");
    let spent = chat_continuation(
        &json!({"messages": [], "max_completion_tokens": 10}),
        "x",
        50,
    )
    .unwrap();
    assert_eq!(spent["max_completion_tokens"], 1, "never zero or negative");
    assert!(spent.get("max_tokens").is_none(), "no limit is invented");
}

#[test]
fn a_request_without_messages_cannot_be_continued() {
    assert_eq!(
        chat_continuation(&json!({"prompt": "x"}), "p", 0),
        Err(ContinueError::NoMessages)
    );
    assert_eq!(
        chat_continuation(&json!("not an object"), "p", 0),
        Err(ContinueError::NoMessages)
    );
}
