use super::*;

fn whole(start_in_reasoning: bool, text: &str) -> (Split, bool) {
    let mut p = ThinkParser::new(start_in_reasoning);
    let mut out = Split::default();
    p.feed(text, &mut out);
    p.finish(&mut out);
    (out, p.in_reasoning())
}

/// Every chunking into two and three pieces at char boundaries, and one char per chunk.
fn assert_chunking_invariant(start_in_reasoning: bool, text: &str) {
    let (expected, unterminated) = whole(start_in_reasoning, text);
    let bounds: Vec<usize> = (0..=text.len())
        .filter(|i| text.is_char_boundary(*i))
        .collect();
    let run = |cuts: &[usize]| {
        let mut p = ThinkParser::new(start_in_reasoning);
        let mut out = Split::default();
        let mut prev = 0;
        for &c in cuts.iter().chain(std::iter::once(&text.len())) {
            p.feed(&text[prev..c], &mut out);
            prev = c;
        }
        p.finish(&mut out);
        assert_eq!(out, expected, "cuts {cuts:?} of {text:?}");
        assert_eq!(p.in_reasoning(), unterminated);
    };
    for &a in &bounds {
        run(&[a]);
        for &b in bounds.iter().filter(|b| **b >= a) {
            run(&[a, b]);
        }
    }
    let singles: Vec<usize> = bounds[1..bounds.len() - 1].to_vec();
    run(&singles);
}

const FIXTURES: &[(bool, &str)] = &[
    (
        false,
        "<think>Let me add 2 and 2.\nWait, check: 4.</think>\n\nThe answer is 4.",
    ),
    (false, "  \n<think>x</think>y"),
    (false, "The answer is 4, no tags here."),
    (false, "Use the <think> tag like </think> this."),
    (true, "Okay, so 2+2. Hmm </thi no. </think>\n\n**4**"),
    (true, "never closes <think> still thinking"),
    (false, "<think></think>Just the answer."),
    (false, "<think>ünïcödé 🤔 reasoning</think>réponse ✓"),
    (false, "<think>a</think>b</think>c<think>d"),
    (false, "<"),
    (false, "<thin"),
    (true, "</think"),
];

#[test]
fn every_split_point_gives_the_same_result() {
    for (start, text) in FIXTURES {
        assert_chunking_invariant(*start, text);
    }
}

#[test]
fn tags_split_reasoning_from_answer_and_trim_whitespace_after_close() {
    let (out, open) = whole(false, FIXTURES[0].1);
    assert_eq!(out.reasoning, "Let me add 2 and 2.\nWait, check: 4.");
    assert_eq!(out.content, "The answer is 4.");
    assert!(!open);
}

#[test]
fn whitespace_before_the_opening_tag_is_dropped() {
    let (out, _) = whole(false, "  \n<think>x</think>y");
    assert_eq!(
        out,
        Split {
            reasoning: "x".into(),
            content: "y".into()
        }
    );
}

#[test]
fn output_without_tags_is_untouched_answer() {
    let (out, _) = whole(false, "The answer is 4, no tags here.");
    assert_eq!(out.reasoning, "");
    assert_eq!(out.content, "The answer is 4, no tags here.");
}

#[test]
fn tags_after_answer_text_are_literal() {
    let text = "Use the <think> tag like </think> this.";
    let (out, _) = whole(false, text);
    assert_eq!(out.content, text);
    assert_eq!(out.reasoning, "");
}

#[test]
fn template_opened_think_starts_in_reasoning() {
    let (out, open) = whole(true, "Okay, so 2+2. Hmm </thi no. </think>\n\n**4**");
    assert_eq!(out.reasoning, "Okay, so 2+2. Hmm </thi no. ");
    assert_eq!(out.content, "**4**");
    assert!(!open);
}

#[test]
fn missing_close_tag_is_all_reasoning_and_unterminated() {
    let (out, open) = whole(true, "never closes <think> still thinking");
    assert_eq!(out.reasoning, "never closes <think> still thinking");
    assert_eq!(out.content, "");
    assert!(open);
}

#[test]
fn empty_reasoning_yields_no_reasoning_text() {
    let (out, _) = whole(false, "<think></think>Just the answer.");
    assert_eq!(out.reasoning, "");
    assert_eq!(out.content, "Just the answer.");
}

#[test]
fn stray_close_and_second_open_in_answer_are_literal() {
    let (out, _) = whole(false, "<think>a</think>b</think>c<think>d");
    assert_eq!(out.reasoning, "a");
    assert_eq!(out.content, "b</think>c<think>d");
}

#[test]
fn a_lone_tag_prefix_at_the_end_is_released_as_text() {
    assert_eq!(whole(false, "<thin").0.content, "<thin");
    assert_eq!(whole(true, "</think").0.reasoning, "</think");
}

#[test]
fn plain_parser_never_looks_for_tags() {
    let mut p = ThinkParser::plain();
    let mut out = Split::default();
    p.feed("<think>x</think>y", &mut out);
    p.finish(&mut out);
    assert_eq!(out.content, "<think>x</think>y");
    assert!(!p.saw_reasoning());
}

#[test]
fn partial_suffix_finds_only_tag_prefixes() {
    assert_eq!(partial_suffix("abc</thi", CLOSE), 5);
    assert_eq!(partial_suffix("abc<", CLOSE), 1);
    assert_eq!(partial_suffix("abc</x", CLOSE), 0);
    assert_eq!(partial_suffix("", CLOSE), 0);
    assert_eq!(partial_suffix("é<", CLOSE), 1);
}
