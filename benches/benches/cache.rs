//! Cache lookup pieces without the embedder: the guard, the exact scan of a partition, the key,
//! and replay rendering. `cargo bench -p gateway-benches --bench cache`
//! (Embedding, graph search and whole lookups: `cache-bench`, see BENCHMARKS.md.)

use criterion::{black_box, criterion_group, criterion_main, Criterion};
use reasoning_cache::embed::normalise;
use reasoning_cache::key::request_key;
use reasoning_cache::replay::{body, Shape};
use reasoning_cache::store::{Record, Store};
use reasoning_cache::{guard, util::hex};
use serde_json::json;

const Q1: &str = "Natalia sold clips to 48 of her friends in April, and then she sold half as many clips in May. How many clips did Natalia sell altogether in April and May?";
const Q2: &str = "Natalia sold clips to 48 of her friends in April, and then she sold half as many clips in May. How many clips did Natalia sell in April and May altogether?";

fn unit(seed: u64) -> Vec<f32> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut v: Vec<f32> = (0..384)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 40) as f32 / (1u64 << 24) as f32 - 0.5
        })
        .collect();
    normalise(&mut v);
    v
}

fn record(i: usize) -> Record {
    Record {
        route: "r".into(),
        tenant: "t".into(),
        partition: hex(&[1; 16]),
        exact: hex(&[0; 16]),
        problem: format!("{Q1} ({i})"),
        reasoning: "Let me work through this step by step. ".repeat(50),
        answer: "72".into(),
        model: "m".into(),
        usage: None,
        created: 0,
        expires: u64::MAX / 2,
    }
}

fn cache(c: &mut Criterion) {
    let (a, b) = (guard::features(Q1), guard::features(Q2));
    c.bench_function("guard: features + check of a word problem pair", |bench| {
        bench.iter(|| guard::check(&guard::features(black_box(Q2)), black_box(&a)))
    });
    c.bench_function("guard: check only", |bench| {
        bench.iter(|| guard::check(black_box(&b), black_box(&a)))
    });
    let req = json!({"model": "m", "temperature": 0.6, "messages": [
        {"role": "system", "content": "You are a careful math tutor."},
        {"role": "user", "content": Q1}]});
    let map = req.as_object().unwrap().clone();
    c.bench_function("key: partition + exact digest of a request", |bench| {
        bench.iter(|| request_key("r", &Default::default(), black_box(&map), "tenant"))
    });
    for n in [1000usize, 4096] {
        let store = Store::new();
        let items = (0..n)
            .map(|i| {
                let mut e = [0u8; 16];
                e[..8].copy_from_slice(&(i as u64).to_le_bytes());
                (record(i), [1u8; 16], e, unit(i as u64))
            })
            .collect();
        store.load(items);
        let q = unit(7);
        c.bench_function(
            &format!("store: exact scan of a {n}-entry partition (384-d)"),
            |bench| bench.iter(|| store.search(black_box(&q), &[1u8; 16], 1, 8)),
        );
    }
    let r = record(0);
    let shape = Shape {
        stream: true,
        include_usage: true,
        reasoning_fields: &["reasoning_content"],
        model: "m",
        id: "chatcmpl-x",
        created: 0,
    };
    c.bench_function("replay: SSE body of a 2 KB reasoning chain", |bench| {
        bench.iter(|| body(black_box(&r), black_box(&shape)))
    });
}

criterion_group!(benches, cache);
criterion_main!(benches);
