//! Arbitrary bytes through the SSE/JSON response rewriter and the think parser: no panics, and
//! the parser gives the same split for the input fed whole or in two pieces, under every
//! combination of `start_in_reasoning`, `open_tag`, `<think>` or other (multi-byte) tags and
//! `output_field`.
#![no_main]

use libfuzzer_sys::fuzz_target;
use reasoning_gateway::config::{OutputField, ParserKind, ReasoningConfig};
use reasoning_gateway::openai::Endpoint;
use reasoning_gateway::reasoning::{
    OpenTag, ParserOptions, ResponseRewriter, Split, Tags, ThinkParser,
};

fuzz_target!(|data: &[u8]| {
    let Some((&first, body)) = data.split_first() else { return };
    let start_in_reasoning = first % 2 == 0;
    let open_tag = if first & 2 == 0 { OpenTag::Anywhere } else { OpenTag::Leading };
    let tags = if first & 4 == 0 { Tags::THINK } else { Tags::new("◁think▷", "◁/think▷") };
    let output_field = if first & 8 == 0 { OutputField::Both } else { OutputField::None };
    let options = ParserOptions { start_in_reasoning, open_tag, tags: tags.clone() };
    let cut = (first as usize).min(body.len());
    let cfg = ReasoningConfig {
        parser: ParserKind::DeepseekR1,
        start_in_reasoning,
        output_field,
        tags,
        open_tag,
        ..ReasoningConfig::default()
    };
    for content_type in ["text/event-stream", "application/json"] {
        for endpoint in [Endpoint::ChatCompletions, Endpoint::Completions] {
            if let Some(mut rw) = ResponseRewriter::for_response(&cfg, endpoint, 200, content_type) {
                rw.feed(&body[..cut]);
                rw.feed(&body[cut..]);
                rw.finish();
                let _ = rw.report();
            }
        }
    }
    if let Ok(text) = std::str::from_utf8(body) {
        let mut whole = Split::default();
        let mut p = ThinkParser::with(options.clone());
        p.feed(text, &mut whole);
        p.finish(&mut whole);
        let mut at = cut.min(text.len());
        while !text.is_char_boundary(at) {
            at -= 1;
        }
        let mut pieces = Split::default();
        let mut p = ThinkParser::with(options);
        p.feed(&text[..at], &mut pieces);
        p.feed(&text[at..], &mut pieces);
        p.finish(&mut pieces);
        assert_eq!(whole, pieces);
    }
});
