//! Attacks on the admin listener with what its attackers reach: a container in the pod (plain
//! HTTP without the token, or with a guessed one), a web page in a browser on the host (a
//! no-CORS POST with an `Origin`, a `text/plain` form, a DNS-rebound host name), and an
//! operator's mistakes (a non-loopback listener without a token, a stale token after rotation).
//! Also: a stuck reload must not stall `/healthz` and `/metrics`.

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use std::time::{Duration, Instant};

use gateway_tests::fake_upstream::FakeUpstream;
use gateway_tests::harness::{
    free_port, gateway_bin, metric_value, repo_root, GatewayProc, TempDir,
};
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const READY: Duration = Duration::from_secs(20);
const WAIT: Duration = Duration::from_secs(10);
const TOKEN: &str = "admin-token-0123456789";
const QUESTION: &str = "Name the largest ocean on Earth.";

fn plain_config(up: &FakeUpstream, top: &str) -> String {
    format!(
        "{top}upstreams: [{{name: fake, endpoints: [\"{}\"]}}]\nroutes:\n  - {{model: \"*\", upstream: fake}}\n",
        up.addr
    )
}

/// A route with the reasoning cache, so a purge has something to destroy.
fn cache_config(up: &FakeUpstream, top: &str) -> String {
    format!(
        "{top}cache:\n  model_dir: {}\n  onnxruntime: {}\n  embed_timeout: 5s\nupstreams: [{{name: fake, endpoints: [\"{}\"]}}]\nroutes:\n  - model: think\n    upstream: fake\n    reasoning: {{parser: deepseek_r1}}\n    cache: {{}}\n",
        repo_root().join("models/minilm").display(),
        repo_root()
            .join("models/onnxruntime/libonnxruntime.so")
            .display(),
        up.addr
    )
}

/// Asks the cached route once; the `x-reasoning-cache` answer.
async fn ask(gw: &GatewayProc) -> String {
    let resp = reqwest::Client::new()
        .post(format!("{}/chat/completions", gw.base_url()))
        .bearer_auth("sk-victim")
        .json(&json!({"model": "think", "messages": [{"role": "user", "content": QUESTION}]}))
        .send()
        .await
        .expect("request");
    assert_eq!(resp.status(), 200);
    let cache = resp
        .headers()
        .get("x-reasoning-cache")
        .map(|v| v.to_str().unwrap().to_string())
        .unwrap_or_default();
    // Read the answer to its end: a client that hangs up early is a cancelled request, and the
    // cache stores only complete ones (dropping the body here made the fill step flaky).
    resp.bytes().await.expect("body");
    cache
}

/// Fills the cache with one entry and waits until it is counted (the embedding may be slow
/// while other tests load the machine).
async fn cache_one_answer(gw: &GatewayProc) {
    assert_eq!(ask(gw).await, "miss");
    gw.wait_for_metric(
        "reasoning_gateway_cache_entries{route=\"think\"}",
        1.0,
        READY,
    )
    .await;
}

/// One raw HTTP/1.1 request on the admin port, as the attacker's client writes it: the status,
/// the header block (lower-cased) and the body.
async fn raw(port: u16, request: &str) -> (u16, String, String) {
    let mut s = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .expect("connect to the admin listener");
    s.write_all(request.as_bytes()).await.unwrap();
    let mut out = Vec::new();
    tokio::time::timeout(WAIT, s.read_to_end(&mut out))
        .await
        .expect("the admin listener answers and closes")
        .unwrap();
    let text = String::from_utf8_lossy(&out).to_string();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status = head[9..12].parse().expect("status code");
    (status, head.to_ascii_lowercase(), body.to_string())
}

/// What a web page's `fetch(url, {method: "POST", mode: "no-cors", body: "x"})` sends.
fn browser_post(port: u16, path: &str, host: &str, origin: Option<&str>, ctype: &str) -> String {
    let origin = origin.map_or(String::new(), |o| format!("Origin: {o}\r\n"));
    format!(
        "POST {path} HTTP/1.1\r\nHost: {host}\r\nUser-Agent: Mozilla/5.0\r\nAccept: */*\r\n{origin}Content-Type: {ctype}\r\nContent-Length: 1\r\nSec-Fetch-Mode: no-cors\r\nConnection: close\r\n\r\nx",
        host = host.replace("PORT", &port.to_string()),
    )
}

fn error_code(body: &str) -> String {
    let v: Value = serde_json::from_str(body).unwrap_or_else(|_| panic!("not JSON: {body}"));
    assert!(v["error"]["message"].is_string(), "{body}");
    assert!(v["error"]["type"].is_string(), "{body}");
    v["error"]["code"].as_str().unwrap_or_default().to_string()
}

async fn refusals(gw: &GatewayProc, reason: &str) -> f64 {
    let text = gw.admin_get("/metrics").await;
    metric_value(
        &text,
        &format!("reasoning_gateway_admin_refusals_total{{reason=\"{reason}\"}}"),
    )
    .unwrap_or_else(|| panic!("admin_refusals_total{{reason={reason}}} missing:\n{text}"))
}

/// A container in the pod purges the cache without the token, then with a guessed one: both
/// 401 with `WWW-Authenticate: Bearer`, and the victim's cached answer is still served.
#[tokio::test]
async fn purge_without_the_right_token_is_refused_and_the_cache_survives() {
    let up = FakeUpstream::start("a").await;
    let gw = GatewayProc::start_with_admin_token(&cache_config(&up, ""), READY, TOKEN);
    cache_one_answer(&gw).await;

    let client = reqwest::Client::new();
    let url = gw.admin_url("/admin/cache/purge?route=think");
    for attempt in [
        client.post(&url),
        client.post(&url).bearer_auth("admin-token-0123456788"),
        client.post(&url).bearer_auth(""),
        client.post(&url).basic_auth("admin", Some(TOKEN)),
    ] {
        let r = attempt.send().await.unwrap();
        assert_eq!(r.status(), 401);
        let challenge = r.headers().get("www-authenticate").expect("a challenge");
        assert!(challenge.to_str().unwrap().starts_with("Bearer"));
        assert_eq!(error_code(&r.text().await.unwrap()), "invalid_admin_token");
    }
    assert_eq!(
        ask(&gw).await,
        "hit",
        "the refused purges removed the entry"
    );
    assert_eq!(refusals(&gw, "unauthorized").await, 4.0);

    // The operator, with the token, still can.
    let (status, body) = gw.admin_post("/admin/cache/purge?route=think").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(serde_json::from_str::<Value>(&body).unwrap()["removed"], 1);
    assert_eq!(ask(&gw).await, "miss");
}

/// The loopback default has no token, so a page in a browser on the host is the attacker that
/// matters: its no-CORS POST carries an `Origin` (403), a `text/plain` body without one is
/// refused too (415), and a page on a name rebound to 127.0.0.1 sends that name as `Host` (403).
/// The cache survives all of them; a plain local `curl -X POST` still works.
#[tokio::test]
async fn a_browser_on_the_host_cannot_purge_the_loopback_admin() {
    let up = FakeUpstream::start("a").await;
    let gw = GatewayProc::start(&cache_config(&up, ""), READY);
    cache_one_answer(&gw).await;
    let port = gw.admin_port;
    let path = "/admin/cache/purge?route=think";

    for (host, origin, ctype, status, code) in [
        (
            "127.0.0.1:PORT",
            Some("http://evil.example"),
            "text/plain;charset=UTF-8",
            403,
            "origin_not_allowed",
        ),
        (
            "localhost:PORT",
            Some("null"),
            "application/x-www-form-urlencoded",
            403,
            "origin_not_allowed",
        ),
        (
            "127.0.0.1:PORT",
            None,
            "text/plain",
            415,
            "unsupported_content_type",
        ),
        (
            "127.0.0.1:PORT",
            None,
            "multipart/form-data; boundary=x",
            415,
            "unsupported_content_type",
        ),
        (
            "rebind.evil.example:PORT",
            None,
            "application/json",
            403,
            "host_not_allowed",
        ),
    ] {
        let (got, _, body) = raw(port, &browser_post(port, path, host, origin, ctype)).await;
        assert_eq!(
            (got, error_code(&body).as_str()),
            (status, code),
            "{host} {origin:?} {ctype}"
        );
    }
    assert_eq!(ask(&gw).await, "hit", "a browser request purged the cache");
    assert_eq!(refusals(&gw, "origin").await, 2.0);
    assert_eq!(refusals(&gw, "content_type").await, 2.0);
    assert_eq!(refusals(&gw, "host").await, 1.0);

    // What docs/operations.md tells operators to run.
    let (status, body) = gw.admin_post(path).await;
    assert_eq!(status, 200, "{body}");
}

/// A browser's GET (an `<img src>`, a link) cannot trigger a mutating endpoint: 405 with
/// `Allow: POST`, even with the token. Unknown paths are 404.
#[tokio::test]
async fn mutating_endpoints_refuse_get() {
    let up = FakeUpstream::start("a").await;
    let gw = GatewayProc::start_with_admin_token(&plain_config(&up, ""), READY, TOKEN);
    let before = gw.admin_get("/admin/config").await;
    let generation = serde_json::from_str::<Value>(&before).unwrap()["generation"].clone();
    for path in [
        "/admin/reload",
        "/admin/cache/purge",
        "/admin/cache/snapshot",
        "/admin/canary/enable?route=r&variant=v",
    ] {
        let r = reqwest::Client::new()
            .get(gw.admin_url(path))
            .bearer_auth(TOKEN)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 405, "{path}");
        assert_eq!(r.headers()["allow"], "POST", "{path}");
        assert_eq!(error_code(&r.text().await.unwrap()), "method_not_allowed");
    }
    let after: Value = serde_json::from_str(&gw.admin_get("/admin/config").await).unwrap();
    assert_eq!(after["generation"], generation, "a GET reloaded the config");
    let r = reqwest::get(gw.admin_url("/admin/nothing")).await.unwrap();
    assert_eq!(r.status(), 404);
    assert_eq!(refusals(&gw, "method").await, 4.0);
    assert_eq!(refusals(&gw, "not_found").await, 1.0);
}

/// `check` (and `serve`) refuse an admin listener others can reach when it has no token, with
/// the YAML path; with a token the same file is fine. Nothing is bound: `check` only validates,
/// and `serve` stops at validation.
#[test]
fn a_non_loopback_admin_listener_without_a_token_is_refused() {
    let dir = TempDir::new("admin-check");
    let path = dir.0.join("gateway.yaml");
    let body = format!(
        "listen: 127.0.0.1:{}\nadmin_listen: 0.0.0.0:{}\nupstreams: [{{name: u, endpoints: [\"127.0.0.1:1\"]}}]\nroutes: [{{model: m, upstream: u}}]\n",
        free_port(),
        free_port()
    );
    std::fs::write(&path, &body).unwrap();
    for cmd in ["check", "serve"] {
        let out = std::process::Command::new(gateway_bin())
            .args([cmd, "--config"])
            .arg(&path)
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{cmd}: {stderr}");
        assert!(
            stderr.contains("admin_listen: `0.0.0.0:") && stderr.contains("admin_token_env"),
            "{cmd}: {stderr}"
        );
    }
    std::fs::write(
        &path,
        format!("admin_token_env: RG_SEC_ADMIN_TOKEN\n{body}"),
    )
    .unwrap();
    let out = std::process::Command::new(gateway_bin())
        .args(["check", "--config"])
        .arg(&path)
        .env("RG_SEC_ADMIN_TOKEN", TOKEN)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A running gateway: a reload whose file drops the token while making the listener
/// non-loopback is refused, and the token keeps guarding the admin endpoints.
#[tokio::test]
async fn a_reload_cannot_expose_the_admin_listener_without_a_token() {
    let up = FakeUpstream::start("a").await;
    let gw = GatewayProc::start_with_admin_token(&plain_config(&up, ""), READY, TOKEN);
    let text = std::fs::read_to_string(&gw.config).unwrap();
    let exposed = text
        .lines()
        .filter(|l| !l.starts_with("admin_token_env"))
        .map(|l| {
            if l.starts_with("admin_listen") {
                format!("admin_listen: 0.0.0.0:{}", gw.admin_port)
            } else {
                l.to_string()
            }
        })
        .collect::<Vec<_>>()
        .join("\n");
    std::fs::write(&gw.config, exposed).unwrap();
    let (status, body) = gw.admin_post("/admin/reload").await;
    assert_eq!(status, 400, "{body}");
    assert!(body.contains("admin_listen"), "{body}");
    let r = reqwest::get(gw.admin_url("/admin/config")).await.unwrap();
    assert_eq!(r.status(), 401, "the token was dropped");
}

/// The token file is reread on reload: after a rotation the old token stops working.
#[tokio::test]
async fn a_rotated_token_file_replaces_the_old_token_on_reload() {
    let up = FakeUpstream::start("a").await;
    let dir = TempDir::new("admin-token");
    let file = dir.0.join("admin-token");
    std::fs::write(&file, "old-token\n").unwrap();
    let mut gw = GatewayProc::start(
        &plain_config(&up, &format!("admin_token_file: {}\n", file.display())),
        READY,
    );
    gw.admin_token = Some("old-token".into());
    assert!(gw.admin_get("/admin/config").await.contains("generation"));

    std::fs::write(&file, "new-token\n").unwrap();
    let (status, body) = gw.admin_post("/admin/reload").await;
    assert_eq!(status, 200, "{body}");

    let status_with = |token: &'static str| {
        let url = gw.admin_url("/admin/config");
        async move {
            reqwest::Client::new()
                .get(url)
                .bearer_auth(token)
                .send()
                .await
                .unwrap()
                .status()
        }
    };
    assert_eq!(status_with("old-token").await, 401);
    assert_eq!(status_with("new-token").await, 200);
}

/// `/healthz` and `/readyz` answer without the token (kubelet has none); `/metrics` too by
/// default (Prometheus), and not with `admin_public_metrics: false`.
#[tokio::test]
async fn probes_are_open_and_metrics_can_be_closed() {
    let up = FakeUpstream::start("a").await;
    let gw = GatewayProc::start_with_admin_token(&plain_config(&up, ""), READY, TOKEN);
    for path in ["/healthz", "/readyz", "/metrics"] {
        let r = reqwest::get(gw.admin_url(path)).await.unwrap();
        assert_eq!(r.status(), 200, "{path}");
    }
    let r = reqwest::get(gw.admin_url("/admin/config")).await.unwrap();
    assert_eq!(r.status(), 401);

    let gw = GatewayProc::start_with_admin_token(
        &plain_config(&up, "admin_public_metrics: false\n"),
        READY,
        TOKEN,
    );
    for path in ["/healthz", "/readyz"] {
        let r = reqwest::get(gw.admin_url(path)).await.unwrap();
        assert_eq!(r.status(), 200, "{path}");
    }
    let r = reqwest::get(gw.admin_url("/metrics")).await.unwrap();
    assert_eq!(r.status(), 401);
    // With the token (what the harness sends), the scrape works and counted the refusal.
    assert_eq!(refusals(&gw, "unauthorized").await, 1.0);
}

/// Opens `fifo` for writing without blocking once a reader has it open (ENXIO until then).
fn open_writer_when_read(fifo: &Path, within: Duration) -> std::fs::File {
    let deadline = Instant::now() + within;
    loop {
        match std::fs::OpenOptions::new()
            .write(true)
            .custom_flags(libc::O_NONBLOCK)
            .open(fifo)
        {
            Ok(f) => return f,
            Err(e) if e.raw_os_error() == Some(libc::ENXIO) => {}
            Err(e) => panic!("open {}: {e}", fifo.display()),
        }
        assert!(Instant::now() < deadline, "nothing opened the FIFO");
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// A reload stuck on a slow file (here the token file turned into a FIFO nobody writes: the
/// reload blocks reading it, deterministically) must not stall the probes and the scrape.
#[tokio::test]
async fn a_stuck_reload_does_not_stall_healthz_or_metrics() {
    let up = FakeUpstream::start("a").await;
    let dir = TempDir::new("admin-fifo");
    let file = dir.0.join("admin-token");
    std::fs::write(&file, format!("{TOKEN}\n")).unwrap();
    let mut gw = GatewayProc::start(
        &plain_config(&up, &format!("admin_token_file: {}\n", file.display())),
        READY,
    );
    gw.admin_token = Some(TOKEN.into());
    std::fs::remove_file(&file).unwrap();
    nix::unistd::mkfifo(&file, nix::sys::stat::Mode::from_bits_truncate(0o600)).expect("mkfifo");

    let reload = tokio::spawn({
        let url = gw.admin_url("/admin/reload");
        async move {
            let r = reqwest::Client::new()
                .post(url)
                .bearer_auth(TOKEN)
                .send()
                .await
                .unwrap();
            (r.status().as_u16(), r.text().await.unwrap())
        }
    });
    // The reload is now inside `open(2)` of the FIFO, and stays in `read(2)` until we write.
    let fifo = file.clone();
    let mut writer = tokio::task::spawn_blocking(move || open_writer_when_read(&fifo, WAIT))
        .await
        .unwrap();

    let quick = reqwest::Client::builder()
        .timeout(Duration::from_secs(5))
        .build()
        .unwrap();
    for path in ["/healthz", "/metrics", "/readyz"] {
        let r = quick.get(gw.admin_url(path)).send().await;
        let status = r.map(|r| r.status().as_u16()).map_err(|e| e.to_string());
        assert_eq!(status, Ok(200), "{path} while a reload is stuck");
    }
    assert!(!reload.is_finished(), "the reload was not stuck after all");

    writer.write_all(format!("{TOKEN}\n").as_bytes()).unwrap();
    drop(writer);
    let (status, body) = tokio::time::timeout(WAIT, reload).await.unwrap().unwrap();
    assert_eq!(status, 200, "{body}");
}
