//! Parity with vLLM's and SGLang's reasoning parsers, on cases transcribed from their own tests.
//!
//! The cases are data only: (input, expected reasoning, expected content) as each server's test
//! asserts them, `None` written as "". Sources (files read at these commits):
//! - SGLang `test/srt/test_reasoning_parser.py` @ 08bdf3efa78411e6219a6ec4f4a2aad755b6df4c
//! - vLLM `tests/reasoning/test_deepseekr1_reasoning_parser.py` @ 04dbd8f32c4dc8ef1254eeaabd154a225948cf57
//! - vLLM `tests/reasoning/test_qwen3_reasoning_parser.py` @ 049d8df27dda4fd0caffa289ea12bfe5a47ac794
//! - vLLM `tests/reasoning/test_base_thinking_reasoning_parser.py` @ 11c69d49ad1887f7cb6651cd475db119525174f5
//!
//! SPLIT, fixed before the parser was changed: every SGLang case is HELD OUT (never looked at
//! while changing the parser); every vLLM case is DEVELOPMENT. The counts before and after the
//! change are in the commit messages and docs/behaviour.md ("Parity with vLLM and SGLang").
//!
//! Mapping of their parsers to route settings: SGLang `DeepSeekR1Detector`, any detector with
//! `force_reasoning=True`, vLLM `deepseek_r1`, vLLM `qwen3` (thinking on) and vLLM's base thinking
//! parser -> `start_in_reasoning: true`; SGLang `Qwen3Detector`/`Olmo3Detector`/base detector and
//! vLLM `qwen3` with `enable_thinking: false` -> `start_in_reasoning: false`; other tags -> `tags`.
//! Left out, as they test no output split: constructor/registry tests, `stream_reasoning=False`
//! (a buffering mode the gateway does not have), token-id helpers (`is_reasoning_end`,
//! `extract_content_ids`, `count_reasoning_tokens`), and intermediate per-delta values (only the
//! joined reasoning and content are compared). Where the source asserts loosely (`assertIn`), the
//! exact text its parser returns is written.
//!
//! Each case is run non-streaming (one piece) and streaming: the source's own deltas, one char at
//! a time, token-like pieces (a cut before every non-alphanumeric char) and every cut in two.

use super::*;

/// Which tags a case uses.
#[derive(Clone, Copy)]
enum T {
    Think,
    Custom(&'static str, &'static str),
}

struct Case {
    id: &'static str,
    start_in_reasoning: bool,
    tags: T,
    /// The source's deltas (one element when the source parses a whole output).
    deltas: &'static [&'static str],
    reasoning: &'static str,
    content: &'static str,
}

const fn c(
    id: &'static str,
    start_in_reasoning: bool,
    deltas: &'static [&'static str],
    reasoning: &'static str,
    content: &'static str,
) -> Case {
    Case {
        id,
        start_in_reasoning,
        tags: T::Think,
        deltas,
        reasoning,
        content,
    }
}

const KIMI: T = T::Custom("◁think▷", "◁/think▷");
const TEST_THINK: T = T::Custom("<test:think>", "</test:think>");

const fn tagged(tags: T, case: Case) -> Case {
    Case { tags, ..case }
}

const TOOL: &str = "<tool_call>\n<function=bash>\n<parameter=command>\ncat /etc/hosts\n</parameter>\n</function>\n</tool_call>";
const TOOL_AFTER_REASONING: &str = "I need to read the file.\n\n<tool_call>\n<function=bash>\n<parameter=command>\ncat /etc/hosts\n</parameter>\n</function>\n</tool_call>";
const TOOL_AFTER_THINK: &str = "<think>I need to read the file.\n\n<tool_call>\n<function=bash>\n<parameter=command>\ncat /etc/hosts\n</parameter>\n</function>\n</tool_call>";
const R1_LONG: &str = "I need to solve this step by step. First, I'll analyze the problem. The given equation is x + 2 = 5. To solve for x, I subtract 2 from both sides: x = 5 - 2 = 3.</think>The answer is x = 3.";
const R1_LONG_R: &str = "I need to solve this step by step. First, I'll analyze the problem. The given equation is x + 2 = 5. To solve for x, I subtract 2 from both sides: x = 5 - 2 = 3.";
const Q3F_LONG: &str = "Let me solve this step by step. The equation is x + 2 = 5. Subtracting 2 from both sides gives x = 3.</think>The solution is x = 3.";
const Q3F_LONG_R: &str = "Let me solve this step by step. The equation is x + 2 = 5. Subtracting 2 from both sides gives x = 3.";

/// HELD OUT: SGLang test/srt/test_reasoning_parser.py.
#[rustfmt::skip]
const SGLANG: &[Case] = &[
    c("Base.detect_and_parse_normal_text", false, &["This is normal text"], "", "This is normal text"),
    c("Base.detect_and_parse_with_start_token", false, &["<think>This is reasoning"], "This is reasoning", ""),
    c("Base.detect_and_parse_complete_reasoning", false, &["<think>This is reasoning</think>This is normal"], "This is reasoning", "This is normal"),
    c("Base.detect_and_parse_force_reasoning", true, &["This should be reasoning"], "This should be reasoning", ""),
    c("Base.parse_streaming_increment_normal", false, &["Hello world"], "", "Hello world"),
    c("Base.parse_streaming_increment_complete_start", false, &["<think>"], "", ""),
    c("Base.parse_streaming_increment_reasoning_content", false, &["<think>", "reasoning content"], "reasoning content", ""),
    c("Base.parse_streaming_increment_end_token", false, &["<think>", "reasoning", "</think>normal text"], "reasoning", "normal text"),
    c("Base.parse_streaming_increment_mixed_content", false, &["<think>reasoning</think>normal"], "reasoning", "normal"),
    c("DeepSeekR1.detect_and_parse_r1_format", true, &["I need to think about this. The answer is 42."], "I need to think about this. The answer is 42.", ""),
    c("DeepSeekR1.detect_and_parse_with_end_token", true, &["I think this is the answer</think>The final answer is 42."], "I think this is the answer", "The final answer is 42."),
    c("DeepSeekR1.detect_and_parse_with_start_token", true, &["<think>I need to think about this.</think>The answer is 42."], "I need to think about this.", "The answer is 42."),
    c("Qwen3.detect_and_parse_qwen3_format", false, &["<think>Let me think about this problem</think>The answer is 42."], "Let me think about this problem", "The answer is 42."),
    c("Qwen3.detect_and_parse_without_thinking", false, &["Direct answer without thinking."], "", "Direct answer without thinking."),
    c("Qwen3Forced.detect_and_parse_qwen3_forced_reasoning_format", true, &["I need to think about this step by step.</think>The answer is 42."], "I need to think about this step by step.", "The answer is 42."),
    c("Qwen3Forced.detect_and_parse_with_start_token", true, &["<think>I need to think about this.</think>The answer is 42."], "I need to think about this.", "The answer is 42."),
    c("Qwen3Forced.streaming_qwen3_forced_reasoning_format", true, &["I need to", " think about this.", "</think>The answer is 42."], "I need to think about this.", "The answer is 42."),
    tagged(KIMI, c("Kimi.detect_and_parse_kimi_format", false, &["◁think▷Let me consider this carefully◁/think▷The answer is 42."], "Let me consider this carefully", "The answer is 42.")),
    tagged(KIMI, c("Kimi.detect_and_parse_kimi_no_thinking", false, &["Direct answer without thinking tokens."], "", "Direct answer without thinking tokens.")),
    tagged(KIMI, c("Kimi.streaming_kimi_format", false, &["◁thi", "nk▷Start", "thinking...", "◁/think▷answer"], "Startthinking...", "answer")),
    c("Olmo3.detect_and_parse_olmo3_format", false, &["<think>Reason through it</think>The answer is 42."], "Reason through it", "The answer is 42."),
    c("Olmo3.detect_and_parse_without_tags", false, &["Direct output without reasoning markers."], "", "Direct output without reasoning markers."),
    c("Olmo3.streaming_split_tokens", false, &["<th", "ink>", "Thinking...", "</th", "ink>", "Answer."], "Thinking...", "Answer."),
    c("Olmo3.streaming_no_stream_reasoning", false, &["<think>", "step 1.", " step 2.", "</think>Final response."], "step 1. step 2.", "Final response."),
    c("Olmo3.detect_and_parse_truncated_reasoning", false, &["<think>Reasoning without closing tag"], "Reasoning without closing tag", ""),
    c("Olmo3.force_reasoning_without_tags", true, &["Reasoning output even without think tags"], "Reasoning output even without think tags", ""),
    c("ReasoningParser.parse_non_stream", false, &["<think>Let me think</think>The answer is 42."], "Let me think", "The answer is 42."),
    c("ReasoningParser.parse_stream_chunk", false, &["<think>", "thinking...", "</think>answer"], "thinking...", "answer"),
    c("Integration.deepseek_r1_complete_response", true, &[R1_LONG], R1_LONG_R, "The answer is x = 3."),
    c("Integration.qwen3_streaming_scenario", false, &["<think>", "Let me analyze this problem.", " I need to consider multiple factors.", "</think>", "Based on my analysis, the solution is to use a different approach."], "Let me analyze this problem. I need to consider multiple factors.", "Based on my analysis, the solution is to use a different approach."),
    tagged(KIMI, c("Integration.kimi_streaming_scenario", false, &["◁thi", "nk▷", "Let me analyze this problem.", " I need to consider multiple factors.", "◁/th", "ink▷", "The answer is 42."], "Let me analyze this problem. I need to consider multiple factors.", "The answer is 42.")),
    c("Integration.empty_reasoning_blocks", false, &["<think></think>Just the answer."], "", "Just the answer."),
    c("Integration.qwen3_forced_reasoning_complete_response", true, &[Q3F_LONG], Q3F_LONG_R, "The solution is x = 3."),
    c("Integration.qwen3_forced_reasoning_streaming_scenario", true, &["I need to analyze", " this problem carefully.", " Let me break it down.", "</think>", "The final answer is 42."], "I need to analyze this problem carefully. Let me break it down.", "The final answer is 42."),
    c("BufferLoss.partial_end_tag_buffer_loss_bug", false, &["</", "answer"], "", "</answer"),
    c("BufferLoss.partial_start_tag_buffer_preservation", false, &["<th", "is is text"], "", "<this is text"),
    c("BufferLoss.partial_end_tag_in_reasoning_mode", false, &["<think>", "some reasoning", "</", "think>normal text"], "some reasoning", "normal text"),
    c("BufferLoss.multiple_partial_fragments", false, &["<", "/", "random>"], "", "</random>"),
    c("BufferLoss.edge_case_exact_token_match", false, &["<", "t", "h", "i", "n", "k>"], "", ""),
];

/// DEVELOPMENT: vLLM's tests (`_s` = the source's streaming parametrisation).
#[rustfmt::skip]
const VLLM: &[Case] = &[
    // test_deepseekr1_reasoning_parser.py (vLLM's deepseek_r1 assumes reasoning from the start)
    c("r1.simple_reasoning", true, &["This is a reasoning section</think>This is the rest"], "This is a reasoning section", "This is the rest"),
    c("r1.simple_reasoning_s", true, &["This is a reasoning section</think>This is the rest"], "This is a reasoning section", "This is the rest"),
    c("r1.complete_reasoning", true, &["This is a reasoning section</think>"], "This is a reasoning section", ""),
    c("r1.complete_reasoning_s", true, &["This is a reasoning section</think>"], "This is a reasoning section", ""),
    c("r1.no_content_token", true, &["This is content"], "This is content", ""),
    c("r1.no_reasoning_token_s", true, &["This is a reasoning section"], "This is a reasoning section", ""),
    c("r1.multiple_lines", true, &["This\nThat</think>This is the rest\nThat"], "This\nThat", "This is the rest\nThat"),
    c("r1.multiple_lines_s", true, &["This\nThat</think>This is the rest\nThat"], "This\nThat", "This is the rest\nThat"),
    c("r1.shortest", true, &["</think>This is the rest"], "", "This is the rest"),
    c("r1.shortest_s", true, &["</think>This is the rest"], "", "This is the rest"),
    c("r1.reasoning_with_think", true, &["<think>This is a reasoning section</think>This is the rest"], "This is a reasoning section", "This is the rest"),
    c("r1.reasoning_with_think_s", true, &["<think>This is a reasoning section</think>This is the rest"], "This is a reasoning section", "This is the rest"),
    c("r1.complete_reasoning_with_think", true, &["<think>This is a reasoning section</think>"], "This is a reasoning section", ""),
    c("r1.complete_reasoning_with_think_s", true, &["<think>This is a reasoning section</think>"], "This is a reasoning section", ""),
    c("r1.multiple_lines_with_think", true, &["<think>This\nThat</think>This is the rest\nThat"], "This\nThat", "This is the rest\nThat"),
    c("r1.multiple_lines_with_think_s", true, &["<think>This\nThat</think>This is the rest\nThat"], "This\nThat", "This is the rest\nThat"),
    c("r1.shortest_with_think", true, &["</think>This is the rest"], "", "This is the rest"),
    c("r1.shortest_with_think_s", true, &["</think>This is the rest"], "", "This is the rest"),
    c("r1.think_no_end", true, &["<think>This is a reasoning section"], "This is a reasoning section", ""),
    c("r1.think_no_end_s", true, &["<think>This is a reasoning section"], "This is a reasoning section", ""),
    c("r1.empty", true, &[""], "", ""),
    c("r1.empty_s", true, &[""], "", ""),
    c("r1.new_line", true, &["\n<think>This is a reasoning section</think>\nThis is the rest"], "This is a reasoning section", "\nThis is the rest"),
    c("r1.new_line_s", true, &["\n<think>This is a reasoning section</think>\nThis is the rest"], "\nThis is a reasoning section", "\nThis is the rest"),
    // test_qwen3_reasoning_parser.py (thinking on: the template opened <think>)
    c("qwen3.without_start_token", true, &["This is a reasoning section</think>This is the rest"], "This is a reasoning section", "This is the rest"),
    c("qwen3.without_start_token_s", true, &["This is a reasoning section</think>This is the rest"], "This is a reasoning section", "This is the rest"),
    c("qwen3.without_start_token_complete_reasoning", true, &["This is a reasoning section</think>"], "This is a reasoning section", ""),
    c("qwen3.without_start_token_complete_reasoning_s", true, &["This is a reasoning section</think>"], "This is a reasoning section", ""),
    c("qwen3.with_think", true, &["<think>This is a reasoning section</think>This is the rest"], "This is a reasoning section", "This is the rest"),
    c("qwen3.with_think_s", true, &["<think>This is a reasoning section</think>This is the rest"], "This is a reasoning section", "This is the rest"),
    c("qwen3.without_think", true, &["This is the rest"], "This is the rest", ""),
    c("qwen3.without_think_s", true, &["This is the rest"], "This is the rest", ""),
    c("qwen3.complete_reasoning", true, &["<think>This is a reasoning section</think>"], "This is a reasoning section", ""),
    c("qwen3.complete_reasoning_s", true, &["<think>This is a reasoning section</think>"], "This is a reasoning section", ""),
    c("qwen3.multiline_reasoning", true, &["<think>This is a reasoning\nsection</think>This is the rest\nThat"], "This is a reasoning\nsection", "This is the rest\nThat"),
    c("qwen3.multiline_reasoning_s", true, &["<think>This is a reasoning\nsection</think>This is the rest\nThat"], "This is a reasoning\nsection", "This is the rest\nThat"),
    c("qwen3.only_open_tag", true, &["<think>This is a reasoning section"], "This is a reasoning section", ""),
    c("qwen3.only_open_tag_s", true, &["<think>This is a reasoning section"], "This is a reasoning section", ""),
    c("qwen3.truncated_no_start_token", true, &["This is a reasoning section"], "This is a reasoning section", ""),
    c("qwen3.truncated_no_start_token_s", true, &["This is a reasoning section"], "This is a reasoning section", ""),
    c("qwen3.tool_call_no_think_end", true, &[TOOL_AFTER_REASONING], "I need to read the file.\n\n", TOOL),
    c("qwen3.tool_call_no_think_end_s", true, &[TOOL_AFTER_REASONING], "I need to read the file.\n\n", TOOL),
    c("qwen3.tool_call_with_think_no_end", true, &[TOOL_AFTER_THINK], "I need to read the file.\n\n", TOOL),
    c("qwen3.tool_call_with_think_no_end_s", true, &[TOOL_AFTER_THINK], "I need to read the file.\n\n", TOOL),
    c("qwen3.start_token_grouped_with_text", true, &["<think>This is a reasoning section", "</think>", "This is the rest"], "This is a reasoning section", "This is the rest"),
    c("qwen3.end_token_grouped_with_content", true, &["reasoning section", "</think>This is the rest"], "reasoning section", "This is the rest"),
    c("qwen3.start_and_end_in_one_delta_no_content", true, &["<think>reasoning</think>"], "reasoning", ""),
    c("qwen3.no_start_end_grouped_with_content", true, &["reasoning section", "</think>content"], "reasoning section", "content"),
    c("qwen3.tool_call_implicit_reasoning_end", true, &["I need to read the file.\n\n", "<tool_call>\n<function=bash>"], "I need to read the file.\n\n", "<tool_call>\n<function=bash>"),
    c("qwen3.thinking_disabled_plain_content", false, &["This is plain content"], "", "This is plain content"),
    c("qwen3.thinking_disabled_no_think_tokens", false, &["Some output without think tokens"], "", "Some output without think tokens"),
    c("qwen3.thinking_disabled_with_tool_call", false, &[TOOL_AFTER_REASONING], "", TOOL_AFTER_REASONING),
    // test_base_thinking_reasoning_parser.py (custom tags, reasoning from the start)
    tagged(TEST_THINK, c("base.extract_reasoning_with_both_tokens", true, &["<test:think>This is reasoning</test:think>This is content"], "This is reasoning", "This is content")),
    tagged(TEST_THINK, c("base.extract_reasoning_only_end_token", true, &["This is reasoning</test:think>This is content"], "This is reasoning", "This is content")),
    tagged(TEST_THINK, c("base.extract_reasoning_no_end_token", true, &["This is just content"], "This is just content", "")),
    tagged(TEST_THINK, c("base.extract_reasoning_empty_output", true, &[""], "", "")),
    tagged(TEST_THINK, c("base.extract_reasoning_only_tokens", true, &["<test:think></test:think>"], "", "")),
    tagged(TEST_THINK, c("base.simple_reasoning_extraction", true, &["<test:think>", "Some ", "reasoning ", "content", "</test:think>", "Final ", "answer"], "Some reasoning content", "Final answer")),
    tagged(TEST_THINK, c("base.simple_reasoning_extraction_s", true, &["<test:think>", "Some ", "reasoning ", "content", "</test:think>", "Final ", "answer"], "Some reasoning content", "Final answer")),
    tagged(TEST_THINK, c("base.streaming_with_incremental_deltas", true, &["<test:think>", "Some ", "reasoning ", "content", "</test:think>", "Final ", "answer"], "Some reasoning content", "Final answer")),
    tagged(TEST_THINK, c("base.streaming_with_start_token", true, &["<test:think>", "Some ", "reasoning", "</test:think>", "Answer"], "Some reasoning", "Answer")),
    tagged(TEST_THINK, c("base.streaming_no_end_token", true, &["<test:think>", "Some ", "reasoning ", "without ", "end"], "Some reasoning without end", "")),
    tagged(TEST_THINK, c("base.streaming_only_end_token", true, &["<test:think>", "Reasoning ", "content", "</test:think>", "Final"], "Reasoning content", "Final")),
    tagged(TEST_THINK, c("base.streaming_start_token_grouped_with_text", true, &["<test:think>Some reasoning", "</test:think>", "Answer"], "Some reasoning", "Answer")),
    tagged(TEST_THINK, c("base.streaming_start_token_grouped_without_end", true, &["<test:think>Some reasoning"], "Some reasoning", "")),
    tagged(TEST_THINK, c("base.different_token_implementations_1", true, &["Reasoning1</test:think>Content1"], "Reasoning1", "Content1")),
    tagged(T::Custom("<alt:start>", "<alt:end>"), c("base.different_token_implementations_2", true, &["Reasoning2<alt:end>Content2"], "Reasoning2", "Content2")),
    tagged(TEST_THINK, c("base.multiple_end_tokens", true, &["First</test:think>Middle</test:think>Last"], "First", "Middle</test:think>Last")),
    tagged(TEST_THINK, c("base.nested_tokens", true, &["<test:think>Outer<test:think>Inner</test:think>Content"], "Outer<test:think>Inner", "Content")),
    tagged(TEST_THINK, c("base.malformed_tokens", true, &["<test:thinking>Not a real token</test:thinking>Content"], "<test:thinking>Not a real token</test:thinking>Content", "")),
];

/// Runs the gateway's parser over `pieces` with the route settings the case maps to.
fn run(case: &Case, pieces: &[&str]) -> Option<Split> {
    let tags = match case.tags {
        T::Think => Tags::THINK,
        T::Custom(open, close) => Tags::new(open, close),
    };
    let mut p = ThinkParser::with(ParserOptions {
        start_in_reasoning: case.start_in_reasoning,
        open_tag: OpenTag::Anywhere,
        tags,
    });
    let mut out = Split::default();
    for piece in pieces {
        p.feed(piece, &mut out);
    }
    p.finish(&mut out);
    Some(out)
}

/// Token-like pieces: a cut before every char that is not alphanumeric (`<`, `think`, `>`).
fn token_like(text: &str) -> Vec<&str> {
    let mut cuts: Vec<usize> = text
        .char_indices()
        .filter(|(i, ch)| *i > 0 && !ch.is_alphanumeric())
        .map(|(i, _)| i)
        .collect();
    cuts.push(text.len());
    let mut prev = 0;
    cuts.into_iter()
        .map(|c| {
            let p = &text[prev..c];
            prev = c;
            p
        })
        .collect()
}

/// Every streaming chunking of a case.
fn chunkings(case: &Case) -> Vec<Vec<&'static str>> {
    let text: &'static str = Box::leak(case.deltas.concat().into_boxed_str());
    let mut all = vec![case.deltas.to_vec(), token_like(text)];
    let bounds: Vec<usize> = (0..=text.len())
        .filter(|i| text.is_char_boundary(*i))
        .collect();
    all.push(bounds.windows(2).map(|w| &text[w[0]..w[1]]).collect());
    for &b in &bounds {
        all.push(vec![&text[..b], &text[b..]]);
    }
    all
}

struct Tally {
    whole: usize,
    streamed: usize,
    disagree: Vec<&'static str>,
}

fn tally(cases: &[Case]) -> Tally {
    let mut t = Tally {
        whole: 0,
        streamed: 0,
        disagree: Vec::new(),
    };
    for case in cases {
        let want = Split {
            reasoning: case.reasoning.into(),
            content: case.content.into(),
        };
        let text = case.deltas.concat();
        let whole_ok = run(case, &[&text]).as_ref() == Some(&want);
        let stream_ok = chunkings(case)
            .iter()
            .all(|pieces| run(case, pieces).as_ref() == Some(&want));
        t.whole += usize::from(whole_ok);
        t.streamed += usize::from(stream_ok);
        if !(whole_ok && stream_ok) {
            t.disagree.push(case.id);
        }
    }
    t
}

/// Cases where the gateway knowingly differs (each explained in docs/behaviour.md, "Parity with
/// vLLM and SGLang"). Before the parser change the held-out set differed on 6 of 39 and the
/// development set on 43 of 70.
const KNOWN_HELD_OUT: &[&str] = &[];
const KNOWN_DEVELOPMENT: &[&str] = &[
    // Whitespace right after `</think>` is trimmed from the answer.
    "r1.new_line",
    "r1.new_line_s",
    // `<tool_call>` does not end reasoning implicitly (vLLM's qwen3 parser only).
    "qwen3.tool_call_no_think_end",
    "qwen3.tool_call_no_think_end_s",
    "qwen3.tool_call_with_think_no_end",
    "qwen3.tool_call_with_think_no_end_s",
    "qwen3.tool_call_implicit_reasoning_end",
];

#[test]
fn agreement_with_vllm_and_sglang() {
    let held = tally(SGLANG);
    let dev = tally(VLLM);
    eprintln!(
        "held out (SGLang): {}/{} non-streamed, {}/{} under every chunking; differ: {:?}",
        held.whole,
        SGLANG.len(),
        held.streamed,
        SGLANG.len(),
        held.disagree
    );
    eprintln!(
        "development (vLLM): {}/{} non-streamed, {}/{} under every chunking; differ: {:?}",
        dev.whole,
        VLLM.len(),
        dev.streamed,
        VLLM.len(),
        dev.disagree
    );
    assert_eq!(
        held.disagree, KNOWN_HELD_OUT,
        "held-out differences changed"
    );
    assert_eq!(
        dev.disagree, KNOWN_DEVELOPMENT,
        "development differences changed"
    );
}
