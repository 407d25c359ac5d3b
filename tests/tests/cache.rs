//! The reasoning cache end to end: real embeddings (MiniLM via fastembed and ONNX Runtime from
//! `make models`), the scripted upstream, the real gateway process.

use std::sync::atomic::Ordering;
use std::time::Duration;

use gateway_tests::fake_upstream::{FakeUpstream, THINK_ANSWER, THINK_REASONING};
use gateway_tests::harness::{repo_root, required_metric, run_python, GatewayProc, TempDir};
use reasoning_cache::index::dot;
use serde_json::{json, Value};

const WAIT: Duration = Duration::from_secs(20);

fn cache_section(extra: &str) -> String {
    format!(
        "cache:\n  model_dir: {}\n  onnxruntime: {}\n  embed_timeout: 5s\n{extra}",
        repo_root().join("models/minilm").display(),
        repo_root()
            .join("models/onnxruntime/libonnxruntime.so")
            .display()
    )
}

fn config(up: &FakeUpstream, cache_extra: &str, route_cache: &str) -> String {
    format!(
        "{}upstreams: [{{name: fake, endpoints: [\"{}\"]}}]\nroutes:\n  - model: think\n    upstream: fake\n    reasoning: {{parser: deepseek_r1}}\n    cache: {{{route_cache}}}\n  - model: long\n    upstream: fake\n    reasoning: {{parser: deepseek_r1, max_reasoning_tokens: 3}}\n    cache: {{}}\n",
        cache_section(cache_extra),
        up.addr
    )
}

struct Reply {
    cache: String,
    similarity: Option<f64>,
    /// `x-reasoning-cache-reason`: why a hit was served or a candidate refused.
    reason: Option<String>,
    body: String,
}

async fn ask(gw: &GatewayProc, question: &str, stream: bool, headers: &[(&str, &str)]) -> Reply {
    ask_model(gw, "think", question, stream, headers).await
}

async fn ask_model(
    gw: &GatewayProc,
    model: &str,
    question: &str,
    stream: bool,
    headers: &[(&str, &str)],
) -> Reply {
    let mut req = reqwest::Client::new()
        .post(format!("{}/chat/completions", gw.base_url()))
        .json(&json!({
            "model": model,
            "stream": stream,
            "messages": [{"role": "user", "content": question}],
        }));
    // Only requests with credentials are cached: one tenant unless a test names its own.
    if !headers.iter().any(|(k, _)| *k == "authorization") {
        req = req.bearer_auth("sk-cache-tests");
    }
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let resp = req.send().await.expect("request");
    assert_eq!(resp.status(), 200);
    let h = |name: &str| {
        resp.headers()
            .get(name)
            .map(|v| v.to_str().unwrap().to_string())
    };
    let cache = h("x-reasoning-cache").unwrap_or_default();
    let similarity = h("x-reasoning-cache-similarity").map(|s| s.parse().unwrap());
    let reason = h("x-reasoning-cache-reason");
    Reply {
        cache,
        similarity,
        reason,
        body: resp.text().await.unwrap(),
    }
}

/// Reasoning and answer from a JSON body or an SSE stream.
fn texts(body: &str) -> (String, String) {
    if let Ok(v) = serde_json::from_str::<Value>(body) {
        let m = &v["choices"][0]["message"];
        return (
            m["reasoning_content"].as_str().unwrap_or_default().into(),
            m["content"].as_str().unwrap_or_default().into(),
        );
    }
    let (mut r, mut a) = (String::new(), String::new());
    for data in body.lines().filter_map(|l| l.strip_prefix("data: ")) {
        if data == "[DONE]" {
            continue;
        }
        let v: Value = serde_json::from_str(data).unwrap();
        if let Some(d) = v["choices"].get(0).map(|c| &c["delta"]) {
            r += d["reasoning_content"].as_str().unwrap_or_default();
            a += d["content"].as_str().unwrap_or_default();
        }
    }
    assert!(body.trim_end().ends_with("data: [DONE]"), "{body}");
    (r, a)
}

async fn metrics(gw: &GatewayProc) -> String {
    gw.admin_get("/metrics").await
}

#[tokio::test]
async fn hits_misses_bypasses_and_near_misses() {
    let up = FakeUpstream::start("a").await;
    let gw = GatewayProc::start(&config(&up, "", ""), WAIT);
    let q = "Sam has 2 apples and buys 2 more. How many apples does Sam have now?";

    let first = ask(&gw, q, true, &[]).await;
    assert_eq!(first.cache, "miss");
    assert_eq!(
        texts(&first.body),
        (THINK_REASONING.into(), THINK_ANSWER.into())
    );
    gw.wait_for_metric(
        "reasoning_gateway_cache_inserts_total{route=\"think\"}",
        1.0,
        WAIT,
    )
    .await;

    // The same problem, spacing aside: the exact tier, in both shapes, without the upstream.
    let calls = up.requests.load(Ordering::SeqCst);
    for stream in [false, true] {
        let again = ask(&gw, &format!("  {q} "), stream, &[]).await;
        assert_eq!(again.cache, "hit");
        assert_eq!(again.similarity, Some(1.0));
        assert_eq!(again.reason.as_deref(), Some("exact"));
        assert_eq!(
            texts(&again.body),
            (THINK_REASONING.into(), THINK_ANSWER.into())
        );
    }
    assert_eq!(
        up.requests.load(Ordering::SeqCst),
        calls,
        "a hit reached the upstream"
    );

    // A rewording: the similarity tier, served on the pair check's score.
    let para = ask(
        &gw,
        "Sam has got 2 apples and then he buys 2 more. How many apples does Sam have in total now?",
        false,
        &[],
    )
    .await;
    assert_eq!(para.cache, "hit", "{:?} {:?}", para.similarity, para.reason);
    let s = para.similarity.unwrap();
    assert!((0.85..1.0).contains(&s), "{s}");
    assert!(
        para.reason.as_deref().unwrap().starts_with("pair; score="),
        "{:?}",
        para.reason
    );
    // The same words with a typo and other spacing: a surface repeat, whatever the cosine.
    let typo = ask(
        &gw,
        "sam has 2 apples and buys 2 more.  How many aplpes does Sam have now",
        false,
        &[],
    )
    .await;
    assert_eq!(typo.cache, "hit", "{:?} {:?}", typo.similarity, typo.reason);
    assert_eq!(typo.reason.as_deref(), Some("surface"));
    assert_eq!(up.requests.load(Ordering::SeqCst), calls);

    // The same problem with another number embeds above the threshold but is refused.
    let near = ask(
        &gw,
        "Sam has 2 apples and buys 3 more. How many apples does Sam have now?",
        false,
        &[],
    )
    .await;
    assert_eq!(near.cache, "miss");
    assert!(near.similarity.unwrap() >= 0.85, "{:?}", near.similarity);
    let reason = near.reason.unwrap();
    assert!(reason.starts_with("number; similarity=0."), "{reason}");
    // A negation: one small pointed edit, refused by the pair check with its score.
    let neg = ask(
        &gw,
        "Sam has 2 apples and does not buy 2 more. How many apples does Sam have now?",
        false,
        &[],
    )
    .await;
    assert_eq!(neg.cache, "miss");
    if neg.similarity.unwrap() >= 0.85 {
        let reason = neg.reason.unwrap();
        assert!(reason.starts_with("pair; score=0."), "{reason}");
    }
    assert_eq!(up.requests.load(Ordering::SeqCst), calls + 2);

    // Another tenant never sees this tenant's entries.
    let other = ask(
        &gw,
        q,
        false,
        &[("authorization", "Bearer sk-other-tenant")],
    )
    .await;
    assert_eq!(other.cache, "miss");
    assert_eq!(
        other.similarity, None,
        "another tenant's entry was a candidate"
    );

    // Bypass: the upstream answers, and re-asking right after a hit is a suspect-hit signal.
    for h in [
        ("cache-control", "no-cache"),
        ("x-reasoning-cache", "bypass"),
    ] {
        let b = ask(&gw, q, false, &[h]).await;
        assert_eq!(b.cache, "bypass");
    }
    assert_eq!(up.requests.load(Ordering::SeqCst), calls + 5);
    gw.wait_for_requests(9, WAIT).await;
    let m = metrics(&gw).await;
    assert_eq!(
        required_metric(
            &m,
            "reasoning_gateway_cache_requests_total{result=\"hit\",route=\"think\"}"
        ),
        3.0
    );
    assert_eq!(
        required_metric(
            &m,
            "reasoning_gateway_cache_requests_total{result=\"bypass\",route=\"think\"}"
        ),
        2.0
    );
    assert_eq!(
        required_metric(
            &m,
            "reasoning_gateway_cache_guard_rejections_total{check=\"number\",route=\"think\"}"
        ),
        1.0
    );
    assert_eq!(
        required_metric(
            &m,
            "reasoning_gateway_cache_suspect_hits_total{route=\"think\"}"
        ),
        1.0
    );
    assert!(
        required_metric(
            &m,
            "reasoning_gateway_cache_similarity_count{outcome=\"hit\",route=\"think\"}"
        ) >= 3.0
    );
    assert!(
        required_metric(
            &m,
            "reasoning_gateway_cache_embedding_duration_seconds_count{route=\"think\"}"
        ) >= 3.0
    );
}

#[tokio::test]
async fn only_complete_verified_answers_are_stored() {
    let up = FakeUpstream::start("a").await;
    let gw = GatewayProc::start(&config(&up, "", ""), WAIT);
    // The reasoning budget cuts this one: it must not be replayed.
    let q = "Explain the halting problem.";
    let first = ask_model(&gw, "long", q, true, &[]).await;
    assert_eq!(first.cache, "miss");
    gw.wait_for_requests(1, WAIT).await;
    let second = ask_model(&gw, "long", q, true, &[]).await;
    assert_eq!(second.cache, "miss");
    gw.wait_for_requests(2, WAIT).await;
    let m = metrics(&gw).await;
    assert!(
        !m.contains("reasoning_gateway_cache_inserts_total{route=\"long\"}"),
        "{m}"
    );
    // Requests with tools cannot be replayed and are marked bypass.
    let resp: reqwest::Response = reqwest::Client::new()
        .post(format!("{}/chat/completions", gw.base_url()))
        .json(&json!({"model": "think", "messages": [{"role": "user", "content": "hi"}],
                      "tools": [{"type": "function", "function": {"name": "f", "parameters": {}}}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.headers()["x-reasoning-cache"], "bypass");
}

#[tokio::test]
async fn entries_expire_after_their_ttl() {
    let up = FakeUpstream::start("a").await;
    let gw = GatewayProc::start(&config(&up, "", "ttl: 1s"), WAIT);
    let q = "What is the boiling point of water at sea level in Celsius?";
    assert_eq!(ask(&gw, q, false, &[]).await.cache, "miss");
    gw.wait_for_metric(
        "reasoning_gateway_cache_entries{route=\"think\"}",
        1.0,
        WAIT,
    )
    .await;
    // The sweeper removes it once the TTL has passed.
    gw.wait_for_metric(
        "reasoning_gateway_cache_entries{route=\"think\"}",
        0.0,
        WAIT,
    )
    .await;
    assert_eq!(ask(&gw, q, false, &[]).await.cache, "miss");
    let m = metrics(&gw).await;
    assert_eq!(
        required_metric(
            &m,
            "reasoning_gateway_cache_evictions_total{reason=\"expired\"}"
        ),
        1.0
    );
}

/// Starts a gateway on `cfg`, stores the answer to `q` (a miss), and stops it with `signal`
/// (SIGTERM, or SIGINT as Ctrl-C sends: the final snapshot is written either way).
async fn store_one_and_stop(cfg: &str, q: &str, signal: i32) {
    let mut gw = GatewayProc::start(cfg, WAIT);
    assert_eq!(ask(&gw, q, false, &[]).await.cache, "miss");
    gw.wait_for_metric(
        "reasoning_gateway_cache_entries{route=\"think\"}",
        1.0,
        WAIT,
    )
    .await;
    gw.send_signal(signal);
    assert!(gw.wait_exit(WAIT).success());
}

/// `make run` stopped with Ctrl-C keeps what the cache learned: the next start replays it.
#[tokio::test]
async fn the_cache_survives_ctrl_c() {
    let up = FakeUpstream::start("a").await;
    let dir = TempDir::new("cache-ctrl-c");
    let cfg = config(&up, &format!("  snapshot_dir: {}\n", dir.0.display()), "");
    let q = "Which gas do plants take in to make sugar?";
    store_one_and_stop(&cfg, q, libc::SIGINT).await;

    let gw = GatewayProc::start(&cfg, WAIT);
    let calls = up.requests.load(Ordering::SeqCst);
    assert_eq!(ask(&gw, q, true, &[]).await.cache, "hit");
    assert_eq!(up.requests.load(Ordering::SeqCst), calls);
}

#[tokio::test]
async fn the_cache_survives_a_restart_and_a_corrupt_snapshot_is_ignored() {
    let up = FakeUpstream::start("a").await;
    let dir = TempDir::new("cache-snap");
    let cfg = config(&up, &format!("  snapshot_dir: {}\n", dir.0.display()), "");
    let q = "Which planet is closest to the Sun?";
    store_one_and_stop(&cfg, q, libc::SIGTERM).await;

    let gw = GatewayProc::start(&cfg, WAIT);
    let calls = up.requests.load(Ordering::SeqCst);
    let r = ask(&gw, q, true, &[]).await;
    assert_eq!(r.cache, "hit");
    assert_eq!(texts(&r.body).1, THINK_ANSWER);
    assert_eq!(up.requests.load(Ordering::SeqCst), calls);
    let stats: Value = serde_json::from_str(&gw.admin_get("/admin/cache").await).unwrap();
    assert_eq!(stats["entries"], 1);
    assert_eq!(stats["index_shards"], 1, "{stats}");
    assert!(stats["index_stragglers"].is_u64(), "{stats}");
    drop(gw);

    let snap = dir.0.join("reasoning-cache.snapshot");
    let mut bytes = std::fs::read(&snap).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0xff;
    std::fs::write(&snap, &bytes).unwrap();
    let gw = GatewayProc::start(&cfg, WAIT);
    gw.wait_for_log_line("snapshot ignored", WAIT).await;
    assert_eq!(ask(&gw, q, false, &[]).await.cache, "miss");
}

#[tokio::test]
async fn admin_purges_by_tenant_and_route() {
    let up = FakeUpstream::start("a").await;
    let gw = GatewayProc::start(&config(&up, "", ""), WAIT);
    let q = "Name the largest ocean on Earth.";
    for key in ["Bearer sk-a", "Bearer sk-b"] {
        assert_eq!(
            ask(&gw, q, false, &[("authorization", key)]).await.cache,
            "miss"
        );
    }
    gw.wait_for_metric(
        "reasoning_gateway_cache_entries{route=\"think\"}",
        2.0,
        WAIT,
    )
    .await;
    let purge = |query: &str| {
        let url = format!(
            "http://127.0.0.1:{}/admin/cache/purge?{query}",
            gw.admin_port
        );
        async move {
            let r = reqwest::Client::new().post(url).send().await.unwrap();
            r.json::<Value>().await.unwrap()
        }
    };
    let r = purge("api_key=sk-a").await;
    assert_eq!(r["removed"], 1);
    assert_eq!(
        ask(&gw, q, false, &[("authorization", "Bearer sk-a")])
            .await
            .cache,
        "miss"
    );
    assert_eq!(
        ask(&gw, q, false, &[("authorization", "Bearer sk-b")])
            .await
            .cache,
        "hit"
    );
    let r = purge("route=think").await;
    assert!(r["removed"].as_u64().unwrap() >= 1);
    assert_eq!(
        ask(&gw, q, false, &[("authorization", "Bearer sk-b")])
            .await
            .cache,
        "miss"
    );
}

#[tokio::test]
async fn the_openai_sdk_reads_replays_in_both_modes() {
    let up = FakeUpstream::start("a").await;
    let gw = GatewayProc::start(&config(&up, "", ""), WAIT);
    let base = gw.base_url();
    let metrics_url = format!("http://127.0.0.1:{}/metrics", gw.admin_port);
    let out = tokio::task::spawn_blocking(move || {
        run_python(
            "sdk_cache.py",
            &[&base, THINK_REASONING, THINK_ANSWER, &metrics_url],
        )
    })
    .await
    .unwrap();
    assert!(out.contains("sdk cache ok"), "{out}");
    // One miss went upstream; the rest were replays.
    assert_eq!(up.requests.load(Ordering::SeqCst), 1);
}

/// Loads one of the cache's embedding models from `models/minilm` (one ONNX Runtime thread).
fn embedder(file: &str) -> reasoning_cache::embed::MiniLm {
    let root = repo_root();
    reasoning_cache::embed::MiniLm::load(
        &root.join("models/minilm"),
        file,
        &root.join("models/onnxruntime/libonnxruntime.so"),
        1,
        false,
    )
    .expect("the embedding models (run `make models`)")
}

/// The derived model (int8 MatMuls, the default) must make the cache's decisions the fetched
/// model would: each text lands within cosine 0.98 of where the fetched model puts it, and a
/// pair's similarity moves by less than 0.03.
#[test]
fn the_derived_int8_model_embeds_like_the_fetched_one() {
    use reasoning_cache::embed::{TextEmbed, DERIVED_MODEL, SOURCE_MODEL};
    let pairs = [
        ("Is the clinic open on Sundays?", "Is the clinic closed on Sundays?"),
        ("What is the capital of France?", "Name the capital city of France."),
        (
            "A train travels 60 miles per hour for 3 hours. How far does it go?",
            "A train travels 70 miles per hour for 3 hours. How far does it go?",
        ),
        (
            "Natalia sold clips to 48 of her friends in April, and then she sold half as many clips in May. How many clips did she sell altogether?",
            "Solve this: Natalia sold clips to 48 of her friends in April, and then she sold half as many clips in May. How many clips did she sell altogether? Show your work.",
        ),
        ("Which planet is closest to the Sun?", "Explain how a refrigerator keeps food cold."),
        ("Write a haiku about autumn leaves.", "Translate 'good morning' into Spanish."),
    ];
    let texts: Vec<String> = pairs
        .iter()
        .flat_map(|(a, b)| [a.to_string(), b.to_string()])
        .collect();
    let source = embedder(SOURCE_MODEL).embed(&texts).unwrap();
    let derived = embedder(DERIVED_MODEL).embed(&texts).unwrap();
    for (i, t) in texts.iter().enumerate() {
        let c = dot(&source[i], &derived[i]);
        assert!(c >= 0.98, "{t:?}: cosine {c} between the two models");
    }
    for i in (0..texts.len()).step_by(2) {
        let (s, d) = (
            dot(&source[i], &source[i + 1]),
            dot(&derived[i], &derived[i + 1]),
        );
        assert!(
            (s - d).abs() < 0.03,
            "{:?} / {:?}: similarity {s} with the fetched model, {d} with the derived one",
            texts[i],
            texts[i + 1]
        );
    }
}

/// Changing `cache.model_file` keeps the cache: the snapshot's problems are embedded again with
/// the new model (vectors of two models are not comparable), near-duplicates still hit with the
/// new model's similarity, and the next snapshot records the new model.
#[tokio::test]
async fn a_snapshot_from_another_embedding_model_is_embedded_again() {
    use reasoning_cache::embed::{TextEmbed, DERIVED_MODEL, SOURCE_MODEL};
    let up = FakeUpstream::start("a").await;
    let dir = TempDir::new("cache-model-switch");
    let with_model = |file: &str| {
        config(
            &up,
            &format!(
                "  snapshot_dir: {}\n  model_file: {file}\n",
                dir.0.display()
            ),
            "",
        )
    };
    let snapshot_model = || {
        let bytes = std::fs::read(dir.0.join("reasoning-cache.snapshot")).unwrap();
        assert_eq!(&bytes[..8], b"RGCACHE2");
        let len = u32::from_le_bytes(bytes[8..12].try_into().unwrap()) as usize;
        String::from_utf8(bytes[12..12 + len].to_vec()).unwrap()
    };
    let (q, q2) = (
        "Which planet is closest to the Sun?",
        "Tell me: which planet is closest to the Sun?",
    );

    store_one_and_stop(&with_model(SOURCE_MODEL), q, libc::SIGTERM).await;
    assert!(snapshot_model().starts_with("model.onnx sha256:"));

    let mut gw = GatewayProc::start(&with_model(DERIVED_MODEL), WAIT);
    gw.wait_for_log_line("another embedding model", WAIT).await;
    let calls = up.requests.load(Ordering::SeqCst);
    let r = ask(&gw, q2, false, &[]).await;
    assert_eq!(r.cache, "hit", "{:?}", r.reason);
    assert_eq!(up.requests.load(Ordering::SeqCst), calls);
    // The stored vector is the new model's: the reported similarity is the new model's own.
    // (One text per call, as the gateway embeds them: no padding from a batch.)
    let mut new = embedder(DERIVED_MODEL);
    let mut one = |t: &str| new.embed(&[t.to_string()]).unwrap().remove(0);
    let (vq, vq2) = (one(q), one(q2));
    let stale = embedder(SOURCE_MODEL)
        .embed(&[q.to_string()])
        .unwrap()
        .remove(0);
    let expected = dot(&vq, &vq2) as f64;
    let got = r.similarity.unwrap();
    eprintln!(
        "similarity {got}; new model {expected}; with the old vector {}",
        dot(&stale, &vq2)
    );
    assert!(
        (got - expected).abs() < 0.0005,
        "similarity {got}, the new model's {expected}"
    );
    assert!(gw.terminate(WAIT).success());
    drop(gw);
    assert!(snapshot_model().starts_with("model.dynamic-int8.onnx sha256:"));
}
