//! Arbitrary request intake: method, path, headers and body as a client sends them, through
//! endpoint recognition, request validation, routing (canary forcing and sticky headers
//! included) and the cache key. Whatever arrives gets a route or an OpenAI-style error, never a
//! panic.
//!
//! Input layout: first line `METHOD PATH`, then `name: value` header lines, a blank line, the
//! body.
#![no_main]

use std::sync::OnceLock;

use bytes::Bytes;
use libfuzzer_sys::fuzz_target;
use reasoning_gateway::openai::Endpoint;
use reasoning_gateway::proxy::intake;
use reasoning_gateway::state::Snapshot;

const CONFIG: &str = r#"
upstreams:
  - {name: a, endpoints: ["127.0.0.1:9"]}
  - {name: b, endpoints: ["127.0.0.1:10"]}
routes:
  - model: canaried
    upstream: a
    canary:
      header: x-canary
      variants:
        - {name: stable, upstream: a, weight: 90}
        - {name: next, upstream: b, weight: 10}
        - {name: shadow, upstream: b, shadow: true}
  - {model: "think-*", upstream: a, upstream_model: real, reasoning: {max_reasoning_tokens: 10}}
  - {model: "*", upstream: b}
"#;

fn snapshot() -> &'static Snapshot {
    static SNAPSHOT: OnceLock<Snapshot> = OnceLock::new();
    SNAPSHOT.get_or_init(|| {
        let config = reasoning_gateway::config::parse(CONFIG).expect("the fuzz config is valid");
        Snapshot::new(config, Vec::new(), 1)
    })
}

fuzz_target!(|data: &[u8]| {
    let (head, body) = match data.windows(2).position(|w| w == b"\n\n") {
        Some(i) => (&data[..i], &data[i + 2..]),
        None => (data, &[][..]),
    };
    let head = String::from_utf8_lossy(head);
    let mut lines = head.lines();
    let mut request_line = lines.next().unwrap_or("").splitn(2, ' ');
    let method = request_line.next().unwrap_or("");
    let path = request_line.next().unwrap_or("");
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    let header = |name: &str| {
        headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.clone())
    };
    let endpoint = match Endpoint::from_request(method, path) {
        Ok(e) => e,
        // Unknown paths are answered 404 before a body is read; the body is still exercised.
        Err(_) => Endpoint::ChatCompletions,
    };
    let weights = |_: &str, c: &reasoning_gateway::config::CanaryConfig| reasoning_gateway::canary::Live {
        weights: c.variants.iter().map(|v| v.weight).collect(),
        rolled_back: vec![false; c.variants.len()],
    };
    if let Ok(routed) = intake::route(snapshot(), endpoint, Bytes::copy_from_slice(body), &header, &weights) {
        let tenant = reasoning_gateway::tenant::from_credentials(&header);
        let served = reasoning_cache::key::Served {
            upstream: &routed.pool.config.name,
            variant: routed.variant.as_deref(),
            model: routed.info.body.get("model").and_then(|m| m.as_str()).unwrap_or_default(),
        };
        let _ = reasoning_cache::key::request_key(&routed.route.name, &served, &routed.info.body, tenant.as_deref().unwrap_or("shared"));
    }
});
