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

/// The obvious definition the fast one must agree with.
fn repeated_ngram_ratio_reference(text: &str, n: usize) -> f64 {
    let words: Vec<&str> = text.split_whitespace().collect();
    if n == 0 || words.len() < n + 19 {
        return 0.0;
    }
    let mut seen = std::collections::HashSet::new();
    let total = words.len() - n + 1;
    let repeats = words.windows(n).filter(|w| !seen.insert(*w)).count();
    repeats as f64 / total as f64
}

#[test]
fn repeated_ngram_ratio_counts_exactly_the_repeated_windows() {
    let vocab = [
        "so", "x", "=", "3", "wait", "then", "x=3", "check", "again.",
    ];
    let mut state: u64 = 12345;
    let mut next = |m: usize| {
        state = state
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (state >> 33) as usize % m
    };
    for _ in 0..500 {
        // Small vocabularies make repeats common; the size decides how common.
        let v = 2 + next(vocab.len() - 1);
        let len = next(200);
        let text: Vec<&str> = (0..len).map(|_| vocab[next(v)]).collect();
        let text = text.join(if next(2) == 0 { " " } else { "\n " });
        for n in [1, 3, 4, 8] {
            assert_eq!(
                repeated_ngram_ratio(&text, n),
                repeated_ngram_ratio_reference(&text, n),
                "n={n} text={text:?}"
            );
        }
    }
    // A loop: the same 11 words five times over; 52 windows of 4, only the first 11 new.
    let looping = "we add the two numbers and get seven then check it ".repeat(5);
    assert!((repeated_ngram_ratio(&looping, 4) - 41.0 / 52.0).abs() < 1e-9);
}

#[test]
fn tag_leak_looks_for_the_routes_tags() {
    let cfg = VerifyConfig {
        tags: crate::reasoning::Tags::new("<thinking>", "</thinking>"),
        ..all()
    };
    assert_eq!(
        failed(&cfg, &subject("x", "ok </thinking> \\boxed{1}")),
        ["tag_leak"]
    );
    assert!(
        failed(
            &cfg,
            &subject("x", "`<think>` is plain text here \\boxed{1}")
        )
        .is_empty(),
        "<think> is not a tag of this route"
    );
}
