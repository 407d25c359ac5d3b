//! HTTPS upstreams: hosted OpenAI-compatible APIs and TLS-terminating ingresses in front of vLLM
//! or SGLang. A private CA is made for each test; the fake upstream serves behind TLS.

use std::sync::atomic::Ordering;
use std::time::Duration;

use gateway_tests::fake_upstream::{FakeUpstream, THINK_ANSWER, THINK_REASONING};
use gateway_tests::harness::{metric_value, GatewayProc, TempDir};
use gateway_tests::tls::TestPki;
use serde_json::{json, Value};

const READY: Duration = Duration::from_secs(20);

async fn chat(gw: &GatewayProc, model: &str, stream: bool) -> (u16, String) {
    let body = json!({"model": model, "stream": stream,
        "messages": [{"role": "user", "content": "What is 2 + 2?"}]});
    let resp = reqwest::Client::new()
        .post(format!("http://127.0.0.1:{}/v1/chat/completions", gw.port))
        .header("authorization", "Bearer sk-client-key")
        .json(&body)
        .send()
        .await
        .expect("request reaches the gateway");
    (resp.status().as_u16(), resp.text().await.unwrap())
}

/// Reasoning and answer text of an SSE body.
fn split_stream(body: &str) -> (String, String) {
    let (mut reasoning, mut content) = (String::new(), String::new());
    for line in body.lines() {
        let Some(data) = line.strip_prefix("data: ") else {
            continue;
        };
        let Ok(v) = serde_json::from_str::<Value>(data) else {
            continue;
        };
        let delta = &v["choices"][0]["delta"];
        reasoning.push_str(delta["reasoning_content"].as_str().unwrap_or(""));
        content.push_str(delta["content"].as_str().unwrap_or(""));
    }
    (reasoning, content)
}

/// The fake upstream behind TLS with a certificate from a fresh private CA, and that CA's PEM
/// file (in the returned directory, removed on drop).
async fn https_upstream(tag: &str) -> (FakeUpstream, TempDir, std::path::PathBuf) {
    let pki = TestPki::new();
    let dir = TempDir::new(tag);
    let ca = dir.0.join("ca.pem");
    std::fs::write(&ca, &pki.ca_pem).unwrap();
    (
        FakeUpstream::start_tls("tls", pki.acceptor()).await,
        dir,
        ca,
    )
}

/// One pool per way of configuring TLS, all in front of the same HTTPS upstream.
#[tokio::test]
async fn https_upstreams_are_verified_against_their_ca_and_name_and_get_the_pools_key() {
    let (up, _dir, ca) = https_upstream("tls").await;
    let addr = up.addr;
    // One route per pool, the model naming the pool (the upstream sees `echo`).
    let routes: String = [
        "by-name",
        "other-name",
        "system-roots",
        "unverified",
        "untrusted-checked",
    ]
    .iter()
    .map(|p| format!("  - {{ model: {p}, upstream: {p}, upstream_model: echo }}\n"))
    .collect();
    let config = format!(
        r#"upstreams:
  - name: https
    endpoints: ["{addr}"]
    tls: {{ ca_file: {ca:?} }}
    api_key_env: RG_TEST_UPSTREAM_KEY
    health_check: {{ interval: 100ms, timeout: 1s, path: /health }}
  - {{ name: by-name, endpoints: ["{addr}"], tls: {{ ca_file: {ca:?}, server_name: upstream.test }} }}
  - {{ name: other-name, endpoints: ["{addr}"], tls: {{ ca_file: {ca:?}, server_name: other.test }} }}
  - {{ name: system-roots, endpoints: ["{addr}"], tls: {{}} }}
  - {{ name: unverified, endpoints: ["{addr}"], tls: {{ verify: false }} }}
  - name: untrusted-checked
    endpoints: ["{addr}"]
    tls: {{}}
    health_check: {{ interval: 100ms, timeout: 1s, path: /health }}
routes:
  - {{ model: think, upstream: https }}
  - {{ model: echo, upstream: https }}
{routes}"#
    );
    let gw = GatewayProc::start_with_env(
        &config,
        READY,
        &[("RG_TEST_UPSTREAM_KEY", "sk-upstream-key")],
    );

    // Over TLS, reasoning is split as from any upstream.
    let (status, body) = chat(&gw, "think", true).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        split_stream(&body),
        (THINK_REASONING.to_string(), THINK_ANSWER.to_string())
    );
    assert!(body.ends_with("data: [DONE]\n\n"));

    // The pool's key replaces the client's; a pool without one passes the client's through.
    let (status, body) = chat(&gw, "echo", false).await;
    assert_eq!(status, 200, "{body}");
    let echo: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(echo["echo"]["authorization"], "Bearer sk-upstream-key");
    let (status, body) = chat(&gw, "unverified", false).await;
    assert_eq!(status, 200, "verify: false accepts any certificate: {body}");
    let echo: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(echo["echo"]["authorization"], "Bearer sk-client-key");
    let (status, body) = chat(&gw, "by-name", false).await;
    assert_eq!(status, 200, "the certificate names upstream.test: {body}");

    // A certificate for another name, or from a CA the pool does not trust: refused.
    for pool in ["other-name", "system-roots"] {
        let (status, body) = chat(&gw, pool, false).await;
        let err: Value = serde_json::from_str(&body).unwrap();
        assert_eq!(
            (status, err["error"]["code"].as_str()),
            (502, Some("upstream_tls_error")),
            "{pool}: {body}"
        );
    }
    let m = gw.admin_get("/metrics").await;
    for pool in ["other-name", "system-roots"] {
        let series =
            format!("reasoning_gateway_upstream_errors_total{{kind=\"tls\",upstream=\"{pool}\"}}");
        assert_eq!(metric_value(&m, &series), Some(1.0), "{series}");
    }
    let log = gw.log_text();
    assert!(
        log.contains("UnknownIssuer") && log.contains("not valid for name \"other.test\""),
        "the reasons are logged:\n{log}"
    );

    // Health checks with a path speak TLS too: the untrusted pool's check fails its handshake
    // (the reason logged) and its requests find no healthy endpoint, while the `https` pool's
    // checks reach `/health` (the upstream counts them beside the 4 requests it answered).
    let line = gw
        .wait_for_log_line("failed its health check", Duration::from_secs(10))
        .await;
    assert!(
        line.contains("untrusted-checked") && line.contains("UnknownIssuer"),
        "{line}"
    );
    let (status, body) = chat(&gw, "untrusted-checked", false).await;
    assert_eq!(status, 503, "{body}");
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while up.requests.load(Ordering::SeqCst) < 4 + 3 {
        assert!(
            std::time::Instant::now() < deadline,
            "no health check reached /health over TLS"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(
        !gw.log_text()
            .lines()
            .any(|l| l.contains("failed its health check") && l.contains("upstream=https")),
        "{}",
        gw.log_text()
    );
}

/// Secrets mounted as files (Kubernetes, Vault agents) are rotated in place: `api_key_file` is
/// read again at every reload, so the new key is used without a restart.
#[tokio::test]
async fn a_rotated_api_key_file_is_used_after_a_reload() {
    let up = FakeUpstream::start("keys").await;
    let dir = TempDir::new("api-key");
    let key = dir.0.join("upstream.key");
    std::fs::write(&key, "sk-first\n").unwrap();
    let config = format!(
        "upstreams: [{{name: u, endpoints: [\"{}\"], api_key_file: {key:?}}}]\nroutes: [{{model: echo, upstream: u}}]\n",
        up.addr
    );
    let gw = GatewayProc::start(&config, READY);
    let seen = |body: String| -> Value {
        let v: Value = serde_json::from_str(&body).unwrap_or_else(|e| panic!("{e}: {body}"));
        v["echo"]["authorization"].clone()
    };
    let reload = || async {
        reqwest::Client::new()
            .post(format!("http://127.0.0.1:{}/admin/reload", gw.admin_port))
            .send()
            .await
            .unwrap()
    };
    assert_eq!(seen(chat(&gw, "echo", false).await.1), "Bearer sk-first");

    std::fs::write(&key, "sk-second\n").unwrap();
    assert_eq!(reload().await.status(), 200);
    assert_eq!(seen(chat(&gw, "echo", false).await.1), "Bearer sk-second");

    // An emptied file is refused like any invalid config: the last good key stays in use.
    std::fs::write(&key, "").unwrap();
    let refused = reload().await;
    assert_eq!(refused.status(), 400);
    let v: Value = refused.json().await.unwrap();
    assert!(
        v["errors"][0].as_str().unwrap().contains("api_key_file"),
        "{v}"
    );
    assert_eq!(seen(chat(&gw, "echo", false).await.1), "Bearer sk-second");
}

/// Shadow copies are sent with the shadow pool's TLS settings too: counted `ok` when its
/// certificate is trusted, `error` when not, and the client is served either way.
#[tokio::test]
async fn shadow_copies_use_the_shadow_pools_tls() {
    let (up, _dir, ca) = https_upstream("tls-shadow").await;
    let addr = up.addr;
    let variants = |shadow: &str| {
        format!("{{variants: [{{name: stable, upstream: live, weight: 100}}, {{name: copy, upstream: {shadow}, shadow: true}}]}}")
    };
    let config = format!(
        r#"upstreams:
  - {{ name: live, endpoints: ["{addr}"], tls: {{ ca_file: {ca:?} }} }}
  - {{ name: mirror, endpoints: ["{addr}"], tls: {{ ca_file: {ca:?} }} }}
  - {{ name: untrusted, endpoints: ["{addr}"], tls: {{}} }}
routes:
  - {{ model: think, upstream: live, canary: {trusted} }}
  - {{ model: echo, upstream: live, canary: {untrusted} }}
"#,
        trusted = variants("mirror"),
        untrusted = variants("untrusted"),
    );
    let gw = GatewayProc::start(&config, READY);
    for model in ["think", "echo", "think", "echo", "think", "echo"] {
        let (status, body) = chat(&gw, model, false).await;
        assert_eq!(status, 200, "{model}: {body}");
    }
    for (route, result) in [("think", "ok"), ("echo", "error")] {
        gw.wait_for_metric(
            &format!("reasoning_gateway_shadow_requests_total{{result=\"{result}\",route=\"{route}\",variant=\"copy\"}}"),
            3.0,
            Duration::from_secs(10),
        )
        .await;
    }
}
