//! The official `openai` Python SDK as the client, through the real gateway.

use std::time::Duration;

use gateway_tests::fake_upstream::{FakeUpstream, THINK_ANSWER, THINK_REASONING};
use gateway_tests::harness::{run_python, GatewayProc};

#[tokio::test]
async fn the_openai_sdk_sees_clean_reasoning_and_answers_and_typed_errors() {
    let up = FakeUpstream::start("a").await;
    let config = format!(
        "upstreams: [{{name: fake, endpoints: [\"{}\"]}}, {{name: busy, endpoints: [\"{0}\"], max_inflight: 1, max_queue: 0}}]\nroutes:\n  - {{model: busy, upstream: busy, upstream_model: gated}}\n  - {{model: echo-rewritten, upstream: fake}}\n  - {{model: \"think*\", upstream: fake}}\n  - {{model: slow, upstream: fake}}\n  - {{model: split-fields, upstream: fake}}\n  - {{model: disconnect, upstream: fake}}\n",
        up.addr
    );
    let gw = GatewayProc::start(&config, Duration::from_secs(20));
    let base = gw.base_url();
    let out = tokio::task::spawn_blocking(move || {
        run_python(
            "sdk_fake_upstream.py",
            &[&base, THINK_REASONING, THINK_ANSWER],
        )
    })
    .await
    .unwrap();
    assert!(out.contains("sdk ok"), "{out}");
}
