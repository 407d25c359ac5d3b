use super::*;

fn whole(start_in_reasoning: bool, text: &str) -> (Split, bool) {
    whole_with(&opts(start_in_reasoning), text)
}

fn opts(start_in_reasoning: bool) -> ParserOptions {
    ParserOptions {
        start_in_reasoning,
        ..ParserOptions::default()
    }
}

fn leading(start_in_reasoning: bool) -> ParserOptions {
    ParserOptions {
        start_in_reasoning,
        open_tag: OpenTag::Leading,
        tags: Tags::THINK,
    }
}

fn tagged(start_in_reasoning: bool, open: &str, close: &str) -> ParserOptions {
    ParserOptions {
        start_in_reasoning,
        open_tag: OpenTag::Anywhere,
        tags: Tags::new(open, close),
    }
}

fn whole_with(o: &ParserOptions, text: &str) -> (Split, bool) {
    let mut p = ThinkParser::with(o.clone());
    let mut out = Split::default();
    p.feed(text, &mut out);
    p.finish(&mut out);
    (out, p.in_reasoning())
}

/// Every chunking into two and three pieces at char boundaries, and one char per chunk.
fn assert_chunking_invariant(o: &ParserOptions, text: &str) {
    let (expected, unterminated) = whole_with(o, text);
    let bounds: Vec<usize> = (0..=text.len())
        .filter(|i| text.is_char_boundary(*i))
        .collect();
    let run = |cuts: &[usize]| {
        let mut p = ThinkParser::with(o.clone());
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
    (false, "Sure.<think>checking</think>Done."),
    (false, "Sure. <thi"),
    (true, " \n<think>re-emitted</think> answer"),
    (true, "<thin"),
    (true, "  "),
];

#[test]
fn every_split_point_gives_the_same_result() {
    for (start, text) in FIXTURES {
        assert_chunking_invariant(&opts(*start), text);
        assert_chunking_invariant(&leading(*start), text);
    }
}

#[test]
fn other_tags_split_at_every_point_like_think() {
    for (open, close) in [("<thinking>", "</thinking>"), ("◁think▷", "◁/think▷")] {
        for (start, text) in FIXTURES {
            let text = text.replace("</think>", close).replace("<think>", open);
            assert_chunking_invariant(&tagged(*start, open, close), &text);
        }
    }
}

#[test]
fn other_tags_replace_think() {
    let o = tagged(false, "<thinking>", "</thinking>");
    let (out, open) = whole_with(&o, "<thinking>a <think>b</think> c</thinking>\n\nanswer");
    assert_eq!(out.reasoning, "a <think>b</think> c");
    assert_eq!(out.content, "answer");
    assert!(!open);
    let (out, _) = whole_with(&o, "<think>x</think>y");
    assert_eq!(
        out.content, "<think>x</think>y",
        "<think> is not a tag of this route"
    );
    let (out, _) = whole_with(&tagged(false, "◁think▷", "◁/think▷"), "◁think▷r◁/think▷a");
    assert_eq!((out.reasoning.as_str(), out.content.as_str()), ("r", "a"));
}

#[test]
fn answer_text_before_the_opening_tag_stays_answer_and_reasoning_is_split() {
    let (out, open) = whole(false, "Sure.<think>checking</think>Done.");
    assert_eq!(out.reasoning, "checking");
    assert_eq!(out.content, "Sure.Done.");
    assert!(!open);
}

#[test]
fn open_tag_leading_keeps_tags_after_answer_text_literal() {
    let text = "Sure.<think>checking</think>Done.";
    let (out, _) = whole_with(&leading(false), text);
    assert_eq!(out.content, text);
    assert_eq!(out.reasoning, "");
}

#[test]
fn a_reemitted_opener_is_dropped_when_the_template_opened_reasoning() {
    let (out, open) = whole(true, "<think>Model re-emitted the opener.");
    assert_eq!(out.reasoning, "Model re-emitted the opener.");
    assert!(open);
    let (out, _) = whole(true, "\n<think>x</think>y");
    assert_eq!((out.reasoning.as_str(), out.content.as_str()), ("x", "y"));
    // Only as the first thing said: later it is literal reasoning text.
    let (out, _) = whole(true, "a <think>b</think>c");
    assert_eq!(out.reasoning, "a <think>b");
    // `leading` changes nothing here.
    let (out, _) = whole_with(&leading(true), "<think>x</think>y");
    assert_eq!(out.reasoning, "x");
}

#[test]
fn reasoning_opens_once() {
    let (out, _) = whole(false, "a<think>b</think>c<think>d</think>e");
    assert_eq!(out.reasoning, "b");
    assert_eq!(out.content, "ac<think>d</think>e");
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
fn tags_after_answer_text_are_literal_with_open_tag_leading() {
    let text = "Use the <think> tag like </think> this.";
    let (out, _) = whole_with(&leading(false), text);
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
    const CLOSE: &str = "</think>";
    assert_eq!(partial_suffix("abc</thi", CLOSE), 5);
    assert_eq!(partial_suffix("abc<", CLOSE), 1);
    assert_eq!(partial_suffix("abc</x", CLOSE), 0);
    assert_eq!(partial_suffix("", CLOSE), 0);
    assert_eq!(partial_suffix("é<", CLOSE), 1);
    assert_eq!(partial_suffix("é◁/th", "◁/think▷"), "◁/th".len());
    assert_eq!(find_tag("é◁think▷", "◁think▷"), Some("é".len()));
}
