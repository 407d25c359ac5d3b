use crate::config::{parse, Balance, ConfigError, OutputField, ParserKind};

fn errors(yaml: &str) -> Vec<String> {
    match parse(yaml) {
        Err(ConfigError::Invalid(e)) => e,
        other => panic!("expected validation errors, got {other:?}"),
    }
}

#[test]
fn a_full_config_validates_into_runtime_types() {
    let c = parse(
        r#"
listen: 127.0.0.1:18080
admin_listen: 127.0.0.1:19090
upstreams:
  - name: vllm
    endpoints: ["127.0.0.1:8000", "localhost:8001"]
    balance: least_loaded
    health_check: { interval: 250ms, path: /health }
routes:
  - model: deepseek-*
    upstream: vllm
    upstream_model: deepseek-ai/DeepSeek-R1-Distill-Qwen-7B
    reasoning: { parser: qwen3, start_in_reasoning: true, output_field: both }
"#,
    )
    .unwrap();
    assert_eq!(c.listen.port(), 18080);
    assert_eq!(c.upstreams[0].balance, Balance::LeastLoaded);
    assert_eq!(c.upstreams[0].endpoints.len(), 2);
    assert_eq!(c.upstreams[0].health_check.interval.as_millis(), 250);
    let r = &c.routes[0];
    assert_eq!(r.name, "deepseek-*");
    assert_eq!(r.reasoning.parser, ParserKind::Qwen3);
    assert!(r.reasoning.start_in_reasoning);
    assert_eq!(r.reasoning.output_field, OutputField::Both);
}

#[test]
fn unknown_keys_are_errors_with_their_path() {
    let e = errors("routes:\n  - model: a\n    upstream: u\n    colour: red\n");
    assert_eq!(e.len(), 1);
    assert!(
        e[0].starts_with("routes[0].colour: unknown field `colour`"),
        "{e:?}"
    );
}

#[test]
fn every_validation_error_is_reported_at_once() {
    let e = errors(
        r"
listen: nowhere
upstreams:
  - name: engine
    endpoints: []
    balance: random
    read_timeout: soon
routes:
  - model: m
    upstream: missing
    reasoning: { parser: magic, output_field: thoughts }
  - model: e
    upstream: engine
",
    );
    let expect = [
        "listen: `nowhere`",
        "upstreams[0].name: `engine` is reserved",
        "upstreams[0].endpoints: at least one",
        "upstreams[0].balance: `random`",
        "upstreams[0].read_timeout: `soon`",
        "routes[0].upstream: unknown upstream `missing`",
        "routes[0].reasoning.parser: `magic`",
        "routes[0].reasoning.output_field: `thoughts`",
        "routes[1].upstream: unknown upstream `engine` (add an `engine:` section)",
    ];
    for want in expect {
        assert!(
            e.iter().any(|l| l.starts_with(want)),
            "missing {want:?} in {e:#?}"
        );
    }
    assert_eq!(e.len(), expect.len(), "{e:#?}");
}

#[test]
fn cache_settings_are_checked_with_their_paths() {
    let e = errors(
        "cache: {model_dir: /nonexistent/minilm, onnxruntime: /nonexistent/ort.so, embed_threads: 0, tenant_header: 'bad header'}\nupstreams: [{name: u, endpoints: ['127.0.0.1:1']}]\nroutes:\n  - model: m\n    upstream: u\n    cache: {threshold: 1.5, max_entries: 0, ttl: forever, colour: red}\n",
    );
    // An unknown key fails parsing first, with its path.
    assert!(e[0].contains("colour"), "{e:?}");
    let e = errors(
        "cache: {model_dir: /nonexistent/minilm, onnxruntime: /nonexistent/ort.so, embed_threads: 0, tenant_header: 'bad header'}\nupstreams: [{name: u, endpoints: ['127.0.0.1:1']}]\nroutes:\n  - model: m\n    upstream: u\n    cache: {threshold: 1.5, max_entries: 0, ttl: forever}\n",
    );
    for want in [
        "routes[0].cache.threshold:",
        "routes[0].cache.ttl:",
        "routes[0].cache.max_entries:",
        "cache.model_dir:",
        "cache.onnxruntime:",
        "cache.embed_threads:",
        "cache.tenant_header:",
    ] {
        assert!(
            e.iter().any(|l| l.starts_with(want)),
            "missing {want:?} in {e:#?}"
        );
    }
}

#[test]
fn a_disabled_route_cache_starts_nothing() {
    let c = parse(
        "upstreams: [{name: u, endpoints: ['127.0.0.1:1']}]\nroutes:\n  - model: m\n    upstream: u\n    cache: {enabled: false}\n",
    )
    .expect("a disabled cache needs no model files");
    assert!(c.cache.is_none() && c.routes[0].cache.is_none());
}

#[test]
fn engine_settings_validate() {
    let ok = parse(
        "engine: {model_dir: m, gguf: x.gguf, served_model_name: s, dequantize: f16}\nroutes: [{model: s, upstream: engine}]\n",
    )
    .unwrap();
    let engine = ok.engine.unwrap();
    assert_eq!(engine.dequantize, Some("f16"));
    assert_eq!(engine.requantize, "auto");
    assert!(engine
        .cache_dir
        .ends_with(".cache/reasoning-gateway/models"));
    let q = parse(
        "engine: {model_dir: m, gguf: x.gguf, served_model_name: s, requantize: q4_0, cache_dir: /tmp/q}\nroutes: [{model: s, upstream: engine}]\n",
    )
    .unwrap()
    .engine
    .unwrap();
    assert_eq!(
        (q.requantize, q.cache_dir.as_path()),
        ("q4_0", std::path::Path::new("/tmp/q"))
    );
    let e = errors(
        "engine: {model_dir: m, gguf: x.bin, served_model_name: s, dequantize: int3, requantize: q2, listen: '10.0.0.1:1'}\nroutes: [{model: s, upstream: engine}]\n",
    );
    for want in [
        "engine.gguf:",
        "engine.dequantize: `int3`",
        "engine.requantize: `q2`",
        "engine.listen: the engine listens on loopback only",
    ] {
        assert!(
            e.iter().any(|l| l.starts_with(want)),
            "missing {want:?} in {e:#?}"
        );
    }
}

#[test]
fn durations_parse_with_units() {
    use super::parse_duration;
    assert_eq!(parse_duration("250ms").unwrap().as_millis(), 250);
    assert_eq!(parse_duration("10s").unwrap().as_secs(), 10);
    assert_eq!(parse_duration("2m").unwrap().as_secs(), 120);
    assert_eq!(parse_duration("3").unwrap().as_secs(), 3);
    assert!(parse_duration("10 parsecs").is_none());
    assert!(parse_duration("-1s").is_none());
}

#[test]
fn every_count_refuses_zero_by_its_path() {
    let e = errors(
        "threads: 0\nengine: {model_dir: m, gguf: x.gguf, served_model_name: s, max_seqs: 0, threads: 0, max_context_tokens: 0}\ncache: {model_dir: /nonexistent/minilm, embed_threads: 0, embed_intra_threads: 0, ann_ef_search: 0}\nasync_jobs: {max_jobs: 0, max_running: 0}\nroutes: [{model: s, upstream: engine, cache: {max_entries: 0}}]\n",
    );
    for path in [
        "threads",
        "engine.max_seqs",
        "engine.threads",
        "engine.max_context_tokens",
        "cache.embed_threads",
        "cache.embed_intra_threads",
        "cache.ann_ef_search",
        "async_jobs.max_jobs",
        "async_jobs.max_running",
        "routes[0].cache.max_entries",
    ] {
        let want = format!("{path}: must be at least 1");
        assert!(e.contains(&want), "missing {want:?} in {e:#?}");
    }
}

#[test]
fn the_embedding_model_file_defaults_to_the_derived_copy_when_there_is_one() {
    use reasoning_cache::embed::{DEFAULT_MODEL, DERIVED_MODEL, SOURCE_MODEL, TOKENIZER_FILES};
    let dir = std::env::temp_dir().join(format!("rg-model-file-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    for f in TOKENIZER_FILES.iter().chain([&SOURCE_MODEL]) {
        std::fs::write(dir.join(f), b"x").unwrap();
    }
    let ort = dir.join("libonnxruntime.so");
    std::fs::write(&ort, b"x").unwrap();
    let yaml = |extra: &str| {
        format!(
            "cache: {{model_dir: {}, onnxruntime: {}{extra}}}\nupstreams: [{{name: u, endpoints: ['127.0.0.1:1']}}]\nroutes: [{{model: m, upstream: u, cache: {{}}}}]\n",
            dir.display(),
            ort.display()
        )
    };
    let file = |extra: &str| parse(&yaml(extra)).unwrap().cache.unwrap().cache.model_file;
    // Only the fetched model: that one.
    assert_eq!(file(""), SOURCE_MODEL);
    // `make models` has derived the int8-MatMul copy: the default moves to it.
    std::fs::write(dir.join(DERIVED_MODEL), b"x").unwrap();
    assert_eq!(file(""), DERIVED_MODEL);
    // And the three-layer model the pair check is tuned for, once it is there.
    std::fs::write(dir.join(DEFAULT_MODEL), b"x").unwrap();
    assert_eq!(file(""), DEFAULT_MODEL);
    // Named explicitly: used as named, and a missing one is an error with its own path.
    assert_eq!(file(", model_file: model.onnx"), SOURCE_MODEL);
    let e = errors(&yaml(", model_file: other.onnx"));
    assert!(
        e.iter()
            .any(|l| l.starts_with("cache.model_file:") && l.contains("other.onnx")),
        "{e:#?}"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn drain_timeout_defaults_to_30s_accepts_zero_and_reports_garbage() {
    let routes =
        "routes: [{model: m, upstream: u}]\nupstreams: [{name: u, endpoints: [\"127.0.0.1:1\"]}]\n";
    assert_eq!(parse(routes).unwrap().drain_timeout.as_secs(), 30);
    let zero = parse(&format!("drain_timeout: 0s\n{routes}")).unwrap();
    assert!(zero.drain_timeout.is_zero());
    let two_min = parse(&format!("drain_timeout: 2m\n{routes}")).unwrap();
    assert_eq!(two_min.drain_timeout.as_secs(), 120);
    let e = errors(&format!("drain_timeout: soon\n{routes}"));
    assert!(e.iter().any(|e| e.starts_with("drain_timeout")), "{e:?}");
}

#[test]
fn dns_refresh_defaults_to_30s_accepts_zero_and_reports_garbage() {
    let routes =
        "routes: [{model: m, upstream: u}]\nupstreams: [{name: u, endpoints: [\"127.0.0.1:1\"]}]\n";
    assert_eq!(parse(routes).unwrap().dns_refresh.as_secs(), 30);
    assert!(parse(&format!("dns_refresh: 0s\n{routes}"))
        .unwrap()
        .dns_refresh
        .is_zero());
    let e = errors(&format!("dns_refresh: often\n{routes}"));
    assert!(e.iter().any(|e| e.starts_with("dns_refresh")), "{e:?}");
}

#[test]
fn promotion_steps_validate_and_replace_the_weights() {
    let base = |canary: &str| {
        format!(
            "upstreams:\n  - {{name: a, endpoints: [\"127.0.0.1:1\"]}}\n  - {{name: b, endpoints: [\"127.0.0.1:2\"]}}\nroutes:\n  - model: m\n    upstream: a\n    canary:\n{canary}"
        )
    };
    let ok = parse(&base(
        "      promotion: {steps: [5, 25, 100], interval: 30s}\n      rollback: {min_requests: 7}\n      variants:\n        - {name: stable, upstream: a}\n        - {name: next, upstream: b}\n",
    ))
    .unwrap();
    let p = ok.routes[0]
        .canary
        .as_ref()
        .unwrap()
        .promotion
        .clone()
        .unwrap();
    assert_eq!(p.steps, vec![5, 25, 100]);
    assert_eq!(p.interval.as_secs(), 30);
    assert_eq!(p.min_requests, 7, "defaults to rollback.min_requests");

    let errs = errors(&base(
        "      promotion: {steps: [50, 50, 101], interval: 0s}\n      variants:\n        - {name: stable, upstream: a, weight: 90}\n        - {name: next, upstream: b}\n        - {name: third, upstream: b}\n",
    ));
    let has = |needle: &str| errs.iter().any(|e| e.contains(needle));
    assert!(
        has("routes[0].canary.promotion: promotion needs exactly two served variants"),
        "{errs:?}"
    );
    assert!(
        has("routes[0].canary.variants[0].weight: promotion.steps sets the weights"),
        "{errs:?}"
    );
    assert!(
        has("routes[0].canary.promotion.steps[1]: steps must increase strictly"),
        "{errs:?}"
    );
    assert!(
        has("routes[0].canary.promotion.steps[2]: must be between 1 and 100"),
        "{errs:?}"
    );
    assert!(has("routes[0].canary.promotion.interval"), "{errs:?}");
    assert_eq!(errs.len(), 5, "{errs:?}");
}

#[test]
fn admission_limits_default_and_are_checked() {
    let cfg = |up: &str| {
        format!("upstreams:\n  - {{name: a, endpoints: [\"127.0.0.1:1\"]{up}}}\nroutes:\n  - {{model: m, upstream: a}}\n")
    };
    let c = parse(&cfg(", max_inflight: 8")).unwrap();
    let a = c.upstreams[0].admission.unwrap();
    assert_eq!(
        (a.max_inflight, a.max_queue, a.queue_timeout.as_secs()),
        (8, 100, 30)
    );
    let c = parse(&cfg(
        ", max_inflight: 2, max_queue: 0, queue_timeout: 250ms",
    ))
    .unwrap();
    let a = c.upstreams[0].admission.unwrap();
    assert_eq!((a.max_queue, a.queue_timeout.as_millis()), (0, 250));
    assert!(parse(&cfg("")).unwrap().upstreams[0].admission.is_none());

    assert_eq!(
        errors(&cfg(", max_inflight: 0")),
        vec!["upstreams[0].max_inflight: must be at least 1"]
    );
    assert_eq!(
        errors(&cfg(", max_queue: 5, queue_timeout: 1s")),
        vec![
            "upstreams[0].max_queue: only applies with max_inflight: set it too",
            "upstreams[0].queue_timeout: only applies with max_inflight: set it too"
        ]
    );

    // The engine section takes the same keys for the engine's pool.
    let engine = |keys: &str| {
        format!("engine: {{model_dir: m, gguf: x.gguf, served_model_name: s{keys}}}\nroutes:\n  - {{model: s, upstream: engine}}\n")
    };
    let e = parse(&engine(", max_inflight: 4, max_queue: 0")).unwrap();
    let a = e.engine.unwrap().admission.unwrap();
    assert_eq!(
        (a.max_inflight, a.max_queue, a.queue_timeout.as_secs()),
        (4, 0, 30)
    );
    assert!(parse(&engine(""))
        .unwrap()
        .engine
        .unwrap()
        .admission
        .is_none());
    assert_eq!(
        errors(&engine(", max_queue: 5")),
        vec!["engine.max_queue: only applies with max_inflight: set it too"]
    );
}

#[test]
fn https_upstreams_and_pool_keys_are_checked_at_load_and_the_key_never_printed() {
    let dir = std::env::temp_dir().join(format!("rg-tls-config-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let garbage = dir.join("garbage.pem");
    std::fs::write(
        &garbage,
        "-----BEGIN CERTIFICATE-----\nbm90IGEgY2VydA==\n-----END CERTIFICATE-----\n",
    )
    .unwrap();
    let empty = dir.join("empty.pem");
    std::fs::write(&empty, "no certificates here\n").unwrap();
    let pools = |c_extra: &str| {
        format!(
            r#"
upstreams:
  - name: a
    endpoints: ["127.0.0.1:8443"]
    tls: {{ ca_file: {missing:?}, server_name: "not a name" }}
    api_key_env: RG_TEST_SURELY_UNSET_KEY
  - name: b
    endpoints: ["127.0.0.1:8443"]
    tls: {{ ca_file: {garbage:?} }}
  - name: c
    endpoints: ["127.0.0.1:8443"]
    tls: {{ ca_file: {empty:?}{c_extra} }}
routes:
  - {{ model: a, upstream: a }}
"#,
            missing = dir.join("missing.pem"),
        )
    };
    let e = errors(&pools(", verify: maybe"));
    let joined = e.join("\n");
    // serde stops at the wrongly typed `verify` before validating anything else.
    assert_eq!(e.len(), 1, "{joined}");
    assert!(joined.contains("upstreams[2].tls.verify"), "{joined}");

    let e = errors(&pools(""));
    let joined = e.join("\n");
    for want in [
        "upstreams[0].tls.server_name: `not a name` is not a DNS name or IP address",
        "upstreams[0].tls.ca_file:",
        "upstreams[0].api_key_env: `RG_TEST_SURELY_UNSET_KEY` is not set",
        "upstreams[1].tls.ca_file:",
        "upstreams[2].tls.ca_file:",
        "no PEM certificate in it",
    ] {
        assert!(joined.contains(want), "missing {want:?} in:\n{joined}");
    }
    assert_eq!(e.len(), 5, "{joined}");

    // A usable pool: the key is read from the environment, and never shows in debug output.
    std::env::set_var("RG_TEST_CONFIG_UPSTREAM_KEY", "sk-very-secret-upstream-key");
    let c = parse(
        r#"
upstreams:
  - name: hosted
    endpoints: ["127.0.0.1:443"]
    tls: {}
    api_key_env: RG_TEST_CONFIG_UPSTREAM_KEY
routes:
  - { model: a, upstream: hosted }
"#,
    )
    .unwrap();
    let u = &c.upstreams[0];
    assert_eq!(u.api_key.as_ref().unwrap().0, "sk-very-secret-upstream-key");
    let tls = u.tls.as_ref().unwrap();
    assert!(tls.verify && tls.ca.is_none());
    assert_eq!(
        tls.server_name_for("api.example.com:443"),
        "api.example.com"
    );
    assert_eq!(tls.server_name_for("[::1]:8443"), "::1");
    assert!(!format!("{c:?}").contains("sk-very-secret"));
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_callback_ca_file_must_hold_certificates() {
    let e = errors(
        "async_jobs:\n  callback_ca_file: /nonexistent/hooks-ca.pem\nupstreams: [{name: u, endpoints: [\"127.0.0.1:1\"]}]\nroutes: [{model: a, upstream: u}]\n",
    );
    assert_eq!(e.len(), 1, "{e:?}");
    assert!(
        e[0].starts_with("async_jobs.callback_ca_file: `/nonexistent/hooks-ca.pem`:"),
        "{e:?}"
    );
}

#[test]
fn overflowing_durations_and_weights_are_errors_with_their_paths_not_panics() {
    let e = errors(
        r#"
upstreams:
  - name: u
    endpoints: ["127.0.0.1:1"]
    health_check: { interval: 100000000000000000000s }
routes:
  - model: m
    upstream: u
    reasoning: { step_timeout: 100000000000h }
    cache: { ttl: 9000000000000s }
    canary:
      variants:
        - { name: a, upstream: u, weight: 4294967295 }
        - { name: b, upstream: u, weight: 999999 }
        - { name: c, upstream: u, weight: 2 }
async_jobs:
  ttl: 1000000000000000000000000000000000000000h
  callback_timeout: 876001h
"#,
    );
    for path in [
        "upstreams[0].health_check.interval:",
        "routes[0].reasoning.step_timeout:",
        "routes[0].cache.ttl:",
        "routes[0].canary.variants[0].weight:",
        "async_jobs.ttl:",
        "async_jobs.callback_timeout:",
    ] {
        assert!(
            e.iter().any(|l| l.starts_with(path)),
            "{path} missing: {e:#?}"
        );
    }
    // 999999 + 2 passes each variant's bound but not their sum.
    let e = errors(
        "upstreams: [{name: u, endpoints: [\"127.0.0.1:1\"]}]\nroutes: [{model: m, upstream: u, canary: {variants: [{name: b, upstream: u, weight: 999999}, {name: c, upstream: u, weight: 2}]}}]\n",
    );
    assert!(
        e.iter()
            .any(|l| l.starts_with("routes[0].canary.variants:")),
        "{e:#?}"
    );
    // 100 years is the longest.
    assert!(crate::config::parse_duration("876000h").is_some());
    assert!(crate::config::parse_duration("876001h").is_none());
}

#[test]
fn the_callback_secret_must_not_be_empty_and_never_prints() {
    let base =
        "upstreams: [{name: u, endpoints: [\"127.0.0.1:1\"]}]\nroutes: [{model: m, upstream: u}]\n";
    let e = errors(&format!("{base}async_jobs: {{callback_secret: \"\"}}\n"));
    assert_eq!(e, vec!["async_jobs.callback_secret: must not be empty"]);
    let e = errors(&format!("{base}async_jobs: {{callback_secret: \"  \"}}\n"));
    assert_eq!(e, vec!["async_jobs.callback_secret: must not be empty"]);
    let c = parse(&format!(
        "{base}async_jobs: {{callback_secret: whsec-very-secret}}\n"
    ))
    .unwrap();
    assert_eq!(
        c.async_jobs.callback_secret.as_ref().unwrap().0,
        "whsec-very-secret"
    );
    let shown = format!("{c:?}");
    assert!(!shown.contains("whsec-very-secret"), "{shown}");
    let raw: crate::config::raw::RawConfig = serde_yaml::from_str(&format!(
        "{base}async_jobs: {{callback_secret: whsec-very-secret}}\n"
    ))
    .unwrap();
    assert!(!format!("{raw:?}").contains("whsec-very-secret"));
}

#[test]
fn job_bounds_and_the_callback_allowlist_validate() {
    let base =
        "upstreams: [{name: u, endpoints: [\"127.0.0.1:1\"]}]\nroutes: [{model: m, upstream: u}]\n";
    let c = parse(base).unwrap();
    assert_eq!(c.async_jobs.max_jobs_per_tenant, 100);
    assert_eq!(c.async_jobs.max_bytes, 256 << 20);
    assert!(c.async_jobs.callback_allow.is_empty());
    let c = parse(&format!(
        "{base}async_jobs: {{max_jobs_per_tenant: 3, max_bytes: 1000, callback_allow: [\"10.0.0.0/8\", hooks.internal, \"fd00::1\"]}}\n"
    ))
    .unwrap();
    assert_eq!(c.async_jobs.max_jobs_per_tenant, 3);
    assert_eq!(c.async_jobs.max_bytes, 1000);
    assert_eq!(c.async_jobs.callback_allow.len(), 3);
    let e = errors(&format!(
        "{base}async_jobs: {{max_jobs_per_tenant: 0, max_bytes: 0, callback_allow: [\"10.0.0.0/8\", \"http://x/\"]}}\n"
    ));
    assert_eq!(
        e,
        vec![
            "async_jobs.callback_allow[1]: `http://x/` is neither a CIDR block (10.0.0.0/8), an address nor a host name",
            "async_jobs.max_jobs_per_tenant: must be at least 1",
            "async_jobs.max_bytes: must be greater than 0",
        ]
    );
}

// --- Admin authentication -------------------------------------------------------------------

const ADMIN_ROUTES: &str =
    "upstreams: [{name: u, endpoints: [\"127.0.0.1:1\"]}]\nroutes: [{model: m, upstream: u}]\n";

#[test]
fn a_non_loopback_admin_listener_needs_a_token() {
    for addr in ["0.0.0.0:9090", "10.0.0.5:9090", "[::]:9090"] {
        let e = errors(&format!("admin_listen: \"{addr}\"\n{ADMIN_ROUTES}"));
        assert_eq!(e.len(), 1, "{e:?}");
        assert!(e[0].starts_with("admin_listen: "), "{e:?}");
        assert!(e[0].contains("admin_token_env"), "{e:?}");
    }
    // Loopback without a token stays allowed (the default), and `/metrics` open.
    for addr in ["127.0.0.1:9090", "[::1]:9090"] {
        let c = parse(&format!("admin_listen: \"{addr}\"\n{ADMIN_ROUTES}")).unwrap();
        assert!(c.admin_token.is_none());
        assert!(c.admin_public_metrics);
    }
    let e = errors(&format!("admin_public_metrics: false\n{ADMIN_ROUTES}"));
    assert!(e[0].starts_with("admin_public_metrics: "), "{e:?}");
}

#[test]
fn the_admin_token_comes_from_a_file_or_the_environment() {
    let dir = std::env::temp_dir().join(format!("rg-admin-token-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("token");
    // One trailing newline is dropped; the rest is the token.
    std::fs::write(&file, "tok-from-file\n").unwrap();
    let c = parse(&format!(
        "admin_listen: 0.0.0.0:9090\nadmin_token_file: {}\nadmin_public_metrics: false\n{ADMIN_ROUTES}",
        file.display()
    ))
    .unwrap();
    let token = c.admin_token.expect("token");
    assert!(token.matches(b"tok-from-file"));
    assert!(!token.matches(b"tok-from-file\n"));
    assert!(!c.admin_public_metrics);
    assert!(!format!("{token:?}").contains("tok-from-file"));

    std::env::set_var("RG_TEST_CONFIG_ADMIN_TOKEN", "tok-from-env");
    let c = parse(&format!(
        "admin_token_env: RG_TEST_CONFIG_ADMIN_TOKEN\n{ADMIN_ROUTES}"
    ))
    .unwrap();
    assert!(c.admin_token.expect("token").matches(b"tok-from-env"));

    let yaml = |extra: &str| format!("admin_listen: 0.0.0.0:9090\n{extra}\n{ADMIN_ROUTES}");
    std::fs::write(&file, "\n").unwrap();
    let e = errors(&yaml(&format!("admin_token_file: {}", file.display())));
    assert_eq!(e, ["admin_token_file: the admin token is empty"]);
    std::fs::write(&file, "two words\n").unwrap();
    let e = errors(&yaml(&format!("admin_token_file: {}", file.display())));
    assert!(
        e[0].starts_with("admin_token_file: the admin token must be printable"),
        "{e:?}"
    );
    let e = errors(&yaml("admin_token_file: /nonexistent/admin-token"));
    assert!(
        e[0].starts_with("admin_token_file: `/nonexistent/admin-token`"),
        "{e:?}"
    );
    let e = errors(&yaml("admin_token_env: RG_TEST_CONFIG_ADMIN_TOKEN_UNSET"));
    assert!(
        e[0].starts_with("admin_token_env: `RG_TEST_CONFIG_ADMIN_TOKEN_UNSET` is not set"),
        "{e:?}"
    );
    let e = errors(&yaml(&format!(
        "admin_token_env: RG_TEST_CONFIG_ADMIN_TOKEN\nadmin_token_file: {}",
        file.display()
    )));
    assert_eq!(
        e,
        ["admin_token_file: give either admin_token_env or admin_token_file"]
    );
    // A broken token is one error: not also "non-loopback without a token".
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn trusted_proxies_are_networks_and_a_tenant_header_needs_them() {
    let e = errors(
        "cache: {model_dir: /nonexistent/minilm, tenant_header: x-tenant, trusted_proxies: ['10.0.0.0/8', '10.0.0.1/8', 'proxy.internal', 'fd00::/200']}\nupstreams: [{name: u, endpoints: ['127.0.0.1:1']}]\nroutes: [{model: m, upstream: u}]\n",
    );
    for want in [
        "cache.trusted_proxies[1]:",
        "cache.trusted_proxies[2]:",
        "cache.trusted_proxies[3]:",
    ] {
        assert!(
            e.iter().any(|l| l.starts_with(want)),
            "missing {want:?} in {e:#?}"
        );
    }
    assert!(!e.iter().any(|l| l.starts_with("cache.trusted_proxies[0]")));
    assert!(!e.iter().any(|l| l.starts_with("cache.tenant_header")));
    // Believed from anyone, the header would let any client name any tenant.
    let e = errors(
        "cache: {model_dir: /nonexistent/minilm, tenant_header: x-tenant}\nupstreams: [{name: u, endpoints: ['127.0.0.1:1']}]\nroutes: [{model: m, upstream: u}]\n",
    );
    assert!(
        e.iter()
            .any(|l| l.starts_with("cache.tenant_header:") && l.contains("trusted_proxies")),
        "{e:#?}"
    );
}

#[test]
fn a_pools_client_apis_default_to_chat_and_are_checked() {
    use crate::api::Api;
    let c = parse(
        "upstreams:\n  - {name: a, endpoints: [\"127.0.0.1:8000\"]}\n  - {name: b, endpoints: [\"127.0.0.1:8001\"], api: [chat, responses, messages]}\nroutes:\n  - {model: m, upstream: a}\n",
    )
    .unwrap();
    assert_eq!(c.upstreams[0].api, [Api::Chat]);
    assert_eq!(
        c.upstreams[1].api,
        [Api::Chat, Api::Responses, Api::Messages]
    );
    let errs = errors(
        "upstreams:\n  - {name: a, endpoints: [\"127.0.0.1:8000\"], api: [responses, grpc]}\nroutes:\n  - {model: m, upstream: a}\n",
    );
    assert!(
        errs.iter()
            .any(|e| e.starts_with("upstreams[0].api[1]: `grpc`")),
        "{errs:?}"
    );
    assert!(
        errs.iter()
            .any(|e| e.starts_with("upstreams[0].api: list `chat`")),
        "{errs:?}"
    );
}

#[test]
fn reasoning_tags_open_tag_and_output_field_none_validate() {
    let c = parse(
        "upstreams: [{name: u, endpoints: ['127.0.0.1:1']}]\nroutes:\n  - model: m\n    upstream: u\n    reasoning: {tags: {open: '<thinking>', close: '</thinking>'}, open_tag: leading, output_field: none}\n  - model: n\n    upstream: u\n",
    )
    .unwrap();
    let r = &c.routes[0].reasoning;
    assert_eq!(r.tags.open(), "<thinking>");
    assert_eq!(r.tags.close(), "</thinking>");
    assert_eq!(r.open_tag, crate::reasoning::OpenTag::Leading);
    assert_eq!(r.output_field, OutputField::None);
    let d = &c.routes[1].reasoning;
    assert_eq!((d.tags.open(), d.tags.close()), ("<think>", "</think>"));
    assert_eq!(d.open_tag, crate::reasoning::OpenTag::Anywhere);
}

#[test]
fn bad_reasoning_tags_are_reported_with_their_paths() {
    let route = |r: &str| {
        format!("upstreams: [{{name: u, endpoints: ['127.0.0.1:1']}}]\nroutes:\n  - model: m\n    upstream: u\n    reasoning: {r}\n")
    };
    let e = errors(&route(
        "{tags: {open: '', close: ' </t>'}, open_tag: sometimes}",
    ));
    for want in [
        "routes[0].reasoning.tags.open: must not be empty",
        "routes[0].reasoning.tags.close: must not start or end with whitespace",
        "routes[0].reasoning.open_tag: `sometimes` is not one of anywhere, leading",
    ] {
        assert!(
            e.iter().any(|l| l.starts_with(want)),
            "missing {want:?} in {e:#?}"
        );
    }
    assert_eq!(e.len(), 3, "{e:#?}");
    let e = errors(&route("{tags: {open: '<t>', close: '<t>'}}"));
    assert_eq!(
        e,
        ["routes[0].reasoning.tags.close: must differ from `open`"]
    );
    let e = errors(&route("{tags: {open: '<r>', close: '<r>x'}}"));
    assert_eq!(e.len(), 1, "{e:#?}");
    assert!(
        e[0].starts_with("routes[0].reasoning.tags.close: `<r>` and `<r>x` overlap"),
        "{e:?}"
    );
    let long = "x".repeat(65);
    let e = errors(&route(&format!(
        "{{tags: {{open: '{long}', close: '</t>'}}}}"
    )));
    assert_eq!(
        e,
        ["routes[0].reasoning.tags.open: must be at most 64 bytes"]
    );
    let e = errors(&route("{tags: {open: '<t>'}}"));
    assert!(e[0].contains("close"), "a missing key is named: {e:?}");
}

// Budget forcing (issue 30).

#[test]
fn a_reasoning_budget_validates_with_its_defaults() {
    let c = parse(
        r#"
upstreams:
  - { name: vllm, endpoints: ["127.0.0.1:8000"], continuation: chat_prefix }
routes:
  - model: r1
    upstream: vllm
    reasoning:
      budget: { max_tokens: 100, on_exceed: answer, min_tokens: 10, effort: { low: 20, high: 100 } }
"#,
    )
    .unwrap();
    let r = &c.routes[0].reasoning;
    assert_eq!(
        r.max_reasoning_tokens,
        Some(100),
        "the budget is the one counted"
    );
    let b = r.budget.as_ref().unwrap();
    assert!(b.answer && b.continues());
    assert_eq!(
        (b.bridge.as_str(), b.extend_word.as_str()),
        ("Final answer:", "Wait")
    );
    assert_eq!(b.max_extensions, 2);
    assert_eq!(
        (
            b.of_effort("low"),
            b.of_effort("medium"),
            b.of_effort("high")
        ),
        (Some(20), None, Some(100))
    );
    assert_eq!(
        c.upstreams[0].continuation,
        crate::config::Continuation::ChatPrefix
    );
}

#[test]
fn a_budget_on_a_pool_that_cannot_continue_falls_back_to_the_error_form() {
    let c = parse(
        r#"
upstreams:
  - { name: vllm, endpoints: ["127.0.0.1:8000"] }
  - { name: next, endpoints: ["127.0.0.1:8001"], continuation: chat_prefix }
routes:
  - model: r1
    upstream: next
    reasoning: { budget: { max_tokens: 100, on_exceed: answer } }
    canary:
      variants:
        - { name: stable, upstream: next, weight: 90 }
        - { name: canary, upstream: vllm, weight: 10 }
  - model: r2
    upstream: vllm
    reasoning: { budget: { min_tokens: 5 } }
  - model: r3
    upstream: vllm
    reasoning: { budget: { max_tokens: 100 } }
"#,
    )
    .expect("a pool without continuation is not an error: the route falls back");
    let budget = |i: usize| c.routes[i].reasoning.budget.clone().expect("budget");
    assert_eq!(budget(0).cannot_continue, ["vllm"]);
    assert!(budget(0).continues_on("next") && !budget(0).continues_on("vllm"));
    assert_eq!(budget(1).cannot_continue, ["vllm"]);
    assert!(
        budget(2).cannot_continue.is_empty(),
        "the error form needs nothing"
    );
    let notices = c.notices();
    assert_eq!(notices.len(), 2, "{notices:?}");
    assert!(
        notices[0].starts_with("route `r1`: upstream `vllm`")
            && notices[0].contains("on_exceed: error")
            && notices[0].contains("continuation: chat_prefix"),
        "{notices:?}"
    );
    assert!(notices[1].starts_with("route `r2`"), "{notices:?}");
}

#[test]
fn budget_settings_are_checked_with_their_paths() {
    let e = errors(
        r#"
upstreams:
  - { name: vllm, endpoints: ["127.0.0.1:8000"], continuation: prefix }
routes:
  - model: r1
    upstream: vllm
    reasoning:
      max_reasoning_tokens: 50
      budget: { max_tokens: 100, on_exceed: retry, min_tokens: 200, max_extensions: 9, extend_word: " ", effort: { low: 0, high: 500 } }
"#,
    );
    for path in [
        "upstreams[0].continuation",
        "routes[0].reasoning.budget.max_tokens",
        "routes[0].reasoning.budget.on_exceed",
        "routes[0].reasoning.budget.min_tokens",
        "routes[0].reasoning.budget.max_extensions",
        "routes[0].reasoning.budget.extend_word",
        "routes[0].reasoning.budget.effort.low",
        "routes[0].reasoning.budget.effort.high",
    ] {
        assert!(e.iter().any(|m| m.starts_with(path)), "{path} in {e:?}");
    }
}
