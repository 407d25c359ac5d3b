use serde_json::json;

use super::*;

fn subject<'a>(reasoning: &'a str, answer: &'a str) -> Subject<'a> {
    Subject {
        reasoning,
        answer,
        unterminated: false,
        response_format: None,
        complete: true,
    }
}

fn failed(cfg: &VerifyConfig, s: &Subject<'_>) -> Vec<&'static str> {
    verify(cfg, s)
        .into_iter()
        .filter(|(_, ok)| !ok)
        .map(|(c, _)| c.label())
        .collect()
}

fn all() -> VerifyConfig {
    VerifyConfig {
        checks: Check::ALL.to_vec(),
        answer_regex: Some(regex::Regex::new(r"\\boxed\{[^}]+\}").unwrap()),
        ..VerifyConfig::default()
    }
}

#[test]
fn a_clean_response_passes_every_applicable_check() {
    let s = subject(
        "17 + 25 = 42. So the sum is 42.",
        "The answer is \\boxed{42}.",
    );
    let results = verify(&all(), &s);
    assert!(results.iter().all(|(_, ok)| *ok), "{results:?}");
    let ran: Vec<_> = results.iter().map(|(c, _)| c.label()).collect();
    assert_eq!(
        ran,
        [
            "unterminated",
            "empty_answer",
            "tag_leak",
            "regex",
            "contradiction",
            "loop"
        ],
        "json only runs when asked for"
    );
}

#[test]
fn each_failure_is_named() {
    let cfg = all();
    let mut s = subject("thinking", "");
    s.unterminated = true;
    assert_eq!(failed(&cfg, &s), ["unterminated", "empty_answer", "regex"]);
    assert_eq!(
        failed(&cfg, &subject("x", "ok </think> \\boxed{1}")),
        ["tag_leak"]
    );
    assert_eq!(
        failed(&cfg, &subject("so it is 41", "\\boxed{42}")),
        ["contradiction"]
    );
    let looping = "I will try again and see. ".repeat(20);
    assert_eq!(failed(&cfg, &subject(&looping, "\\boxed{x}")), ["loop"]);
    // An empty answer cut by max_tokens is not a verification failure.
    let mut cut = subject("x", "");
    cut.complete = false;
    assert!(!failed(&VerifyConfig::default(), &cut).contains(&"empty_answer"));
}

#[test]
fn json_answers_are_checked_against_the_requested_format_and_schema() {
    let cfg = VerifyConfig::default();
    let object = json!({"type": "json_object"});
    let schema = json!({"type": "json_schema", "json_schema": {"name": "p", "schema": {
        "type": "object", "required": ["name", "age"], "additionalProperties": false,
        "properties": {"name": {"type": "string"}, "age": {"type": "integer"}, "tags": {"type": "array", "items": {"enum": ["a", "b"]}}}}}});
    let check = |fmt: &serde_json::Value, answer: &str| {
        let mut s = subject("", answer);
        s.response_format = Some(fmt);
        failed(&cfg, &s).contains(&"json")
    };
    assert!(!check(&object, r#"{"a": 1}"#));
    assert!(!check(&object, "```json\n{\"a\": 1}\n```"));
    assert!(check(&object, "not json"));
    assert!(check(&object, "[1, 2]"));
    assert!(!check(
        &schema,
        r#"{"name": "Ada", "age": 36, "tags": ["a"]}"#
    ));
    assert!(check(&schema, r#"{"name": "Ada"}"#), "missing required");
    assert!(
        check(&schema, r#"{"name": "Ada", "age": "old"}"#),
        "wrong type"
    );
    assert!(
        check(&schema, r#"{"name": "Ada", "age": 3, "x": 1}"#),
        "additional property"
    );
    assert!(
        check(&schema, r#"{"name": "Ada", "age": 3, "tags": ["c"]}"#),
        "enum"
    );
    let text = json!({"type": "text"});
    assert!(!check(&text, "anything"));
}

#[test]
fn numbers_are_read_like_people_write_them() {
    assert_eq!(
        numbers("1,234.5 apples, -3 pears and 7."),
        vec![1234.5, -3.0, 7.0]
    );
    assert_eq!(numbers("no digits"), Vec::<f64>::new());
}
