//! Parser throughput (bytes/s) and cost per SSE event of the response rewriter.
//! `cargo bench -p gateway-benches --bench parser`

use criterion::{black_box, criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use reasoning_gateway::config::{OutputField, ParserKind, ReasoningConfig};
use reasoning_gateway::openai::Endpoint;
use reasoning_gateway::reasoning::{ResponseRewriter, Split, ThinkParser};

fn reasoning_text(bytes: usize) -> String {
    let sentence = "Let me check the arithmetic again: 17 × 23 = 391, so the total is 391 < 400. ";
    let mut s = String::from("<think>");
    while s.len() < bytes {
        s.push_str(sentence);
    }
    s.push_str("</think>\n\nThe answer is 391.");
    s
}

fn parser(c: &mut Criterion) {
    let text = reasoning_text(1 << 20);
    let mut g = c.benchmark_group("think_parser");
    g.throughput(Throughput::Bytes(text.len() as u64));
    for chunk in [4usize, 64, 4096] {
        let pieces: Vec<&str> = {
            let mut v = Vec::new();
            let mut i = 0;
            while i < text.len() {
                let mut j = (i + chunk).min(text.len());
                while !text.is_char_boundary(j) {
                    j += 1;
                }
                v.push(&text[i..j]);
                i = j;
            }
            v
        };
        g.bench_function(format!("1MiB_in_{chunk}B_deltas"), |b| {
            b.iter(|| {
                let mut p = ThinkParser::new(false);
                let mut out = Split::default();
                for piece in &pieces {
                    p.feed(black_box(piece), &mut out);
                    // A streaming caller drains the split after every delta.
                    out.reasoning.clear();
                    out.content.clear();
                }
                p.finish(&mut out);
                out
            })
        });
    }
    g.finish();
}

fn sse_events(c: &mut Criterion) {
    let tokens: Vec<String> = reasoning_text(16 * 1024)
        .split_inclusive(' ')
        .map(str::to_owned)
        .collect();
    let mut stream = Vec::new();
    for t in &tokens {
        let v = serde_json::json!({"id":"chatcmpl-123","object":"chat.completion.chunk","created":1700000000,
            "model":"deepseek-r1","choices":[{"index":0,"delta":{"content":t},"finish_reason":null}]});
        stream.extend_from_slice(format!("data: {v}\n\n").as_bytes());
    }
    stream.extend_from_slice(b"data: [DONE]\n\n");
    let cfg = ReasoningConfig {
        parser: ParserKind::DeepseekR1,
        start_in_reasoning: false,
        output_field: OutputField::ReasoningContent,
        ..ReasoningConfig::default()
    };
    let mut g = c.benchmark_group("sse_rewrite");
    g.throughput(Throughput::Elements(tokens.len() as u64 + 1));
    g.bench_function("chat_chunk_events", |b| {
        b.iter_batched(
            || {
                ResponseRewriter::for_response(
                    &cfg,
                    Endpoint::ChatCompletions,
                    200,
                    "text/event-stream",
                )
                .unwrap()
            },
            |mut rw| {
                let mut n = 0;
                for part in stream.chunks(1460) {
                    n += rw.feed(black_box(part)).len();
                }
                n + rw.finish().len()
            },
            BatchSize::SmallInput,
        )
    });
    g.finish();
}

criterion_group!(benches, parser, sse_events);
criterion_main!(benches);
