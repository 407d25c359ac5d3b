//! Routing cost per request: the route table lookup (exact names and globs), the canary variant
//! pick, and the whole intake step the proxy runs before choosing a peer (parse the body, find
//! the route, pick the variant and pool, re-encode the body for the upstream).
//! `cargo bench -p gateway-benches --bench router`

use bytes::Bytes;
use criterion::{black_box, criterion_group, criterion_main, Criterion};
use reasoning_gateway::config;
use reasoning_gateway::openai::Endpoint;
use reasoning_gateway::proxy::intake;
use reasoning_gateway::routing::variant;
use reasoning_gateway::state::Snapshot;

/// 40 exact routes, 10 glob routes, then a canary route at the end of the table (the worst case:
/// first match wins, so it is reached after every other pattern was tried).
fn table() -> String {
    let mut routes = String::new();
    for i in 0..40 {
        routes.push_str(&format!("  - {{model: model-{i}, upstream: a}}\n"));
    }
    for i in 0..10 {
        routes.push_str(&format!("  - {{model: 'family-{i}-*', upstream: a}}\n"));
    }
    routes.push_str(
        "  - model: deepseek-r1\n    upstream: a\n    canary:\n      header: x-canary\n      variants:\n        - {name: stable, upstream: a, weight: 95}\n        - {name: canary, upstream: b, weight: 5, upstream_model: r1-next}\n",
    );
    format!(
        "upstreams:\n  - {{name: a, endpoints: ['127.0.0.1:9']}}\n  - {{name: b, endpoints: ['127.0.0.1:10']}}\nroutes:\n{routes}"
    )
}

fn router(c: &mut Criterion) {
    let snapshot = Snapshot::new(config::parse(&table()).expect("valid table"), Vec::new(), 1);
    let canary = snapshot
        .routes
        .find("deepseek-r1")
        .and_then(|r| r.canary.clone())
        .expect("canary route");
    let no_header = |_: &str| None::<String>;

    c.bench_function("router: find an exact route (first of 51)", |b| {
        b.iter(|| snapshot.routes.find(black_box("model-0")).is_some())
    });
    c.bench_function("router: find the last route past 10 globs", |b| {
        b.iter(|| snapshot.routes.find(black_box("deepseek-r1")).is_some())
    });
    // The live weights come from the rollback/promotion state, as in the proxy.
    let state = reasoning_gateway::canary::CanaryState::default();
    let weights = |route: &str, c: &_| state.live(route, c);
    let mut r = 0.0f64;
    c.bench_function("router: canary pick by weight", |b| {
        b.iter(|| {
            r = (r + 0.618_033_988_75) % 1.0;
            variant::pick(
                &canary,
                &no_header,
                &state.weights("bench", &canary),
                &[],
                black_box(r),
            )
            .0
        })
    });

    let body = Bytes::from(
        serde_json::to_vec(&serde_json::json!({
            "model": "deepseek-r1",
            "messages": [
                {"role": "system", "content": "You are a careful assistant."},
                {"role": "user", "content": "A train leaves at 9:40 and arrives at 13:05. How long is the journey?"}
            ],
            "stream": true,
            "max_tokens": 2048
        }))
        .unwrap(),
    );
    let routed = intake::route(
        &snapshot,
        Endpoint::ChatCompletions,
        body.clone(),
        &no_header,
        &weights,
    )
    .unwrap_or_else(|e| panic!("the benchmark request must route: {}", e.error.message));
    assert!(
        routed.variant.is_some(),
        "the canary route was not the one chosen"
    );
    c.bench_function("router: whole intake of a streaming chat request", |b| {
        b.iter(|| {
            intake::route(
                &snapshot,
                Endpoint::ChatCompletions,
                black_box(body.clone()),
                &no_header,
                &weights,
            )
            .is_ok()
        })
    });
}

criterion_group!(benches, router);
criterion_main!(benches);
