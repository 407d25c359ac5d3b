//! Attacks on the public listener's resources with nothing but a TCP socket: slow headers and
//! bodies (slow-loris), more connections than the gateway can hold, a `Content-Length` that
//! promises gigabytes, and an upstream crash that must not make the gateway run a generation
//! twice.

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use gateway_tests::fake_upstream::FakeUpstream;
use gateway_tests::harness::{metric_value, GatewayProc};
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const READY: Duration = Duration::from_secs(20);
const WAIT: Duration = Duration::from_secs(10);

fn config(up: &FakeUpstream, top: &str) -> String {
    format!(
        "{top}upstreams: [{{name: fake, endpoints: [\"{}\"]}}]\nroutes:\n  - {{model: \"*\", upstream: fake}}\n",
        up.addr
    )
}

async fn connect(gw: &GatewayProc) -> TcpStream {
    TcpStream::connect(("127.0.0.1", gw.port))
        .await
        .expect("connect to the gateway")
}

/// Reads until the peer closes (or `within` passes); what arrived, and whether it closed.
async fn read_until_closed(s: &mut TcpStream, within: Duration) -> (String, bool) {
    let deadline = tokio::time::Instant::now() + within;
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match tokio::time::timeout_at(deadline, s.read(&mut buf)).await {
            Ok(Ok(0) | Err(_)) => return (String::from_utf8_lossy(&out).into(), true),
            Ok(Ok(n)) => out.extend_from_slice(&buf[..n]),
            Err(_) => return (String::from_utf8_lossy(&out).into(), false),
        }
    }
}

async fn metric(gw: &GatewayProc, prefix: &str) -> f64 {
    metric_value(&gw.admin_get("/metrics").await, prefix).unwrap_or(0.0)
}

/// A client that sends its request header a byte at a time, never finishing it, is cut off at
/// `client_header_timeout` (Pingora alone bounds each read, not the header: one byte a minute
/// held a connection forever); a response stream that lasts longer than that is not.
#[tokio::test]
async fn a_trickled_header_is_cut_off_but_a_long_stream_is_not() {
    let up = FakeUpstream::start("a").await;
    let gw = GatewayProc::start(&config(&up, "client_header_timeout: 1s\n"), READY);

    // A legitimate stream, held open by the upstream for longer than the header deadline.
    let body = json!({"model": "gated", "stream": true,
        "messages": [{"role": "user", "content": "go"}]});
    let client = reqwest::Client::new();
    let stream = client
        .post(format!("{}/chat/completions", gw.base_url()))
        .bearer_auth("sk-a")
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(stream.status(), 200);

    let mut loris = connect(&gw).await;
    let started = Instant::now();
    let trickle = async {
        for b in
            b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nX-Padding: aaaaaaaaaaaaaaaaaaaaaaaa"
        {
            if loris.write_all(&[*b]).await.is_err() {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        false
    };
    // The trickle takes ~15 s; the gateway must close it well before.
    let cut = tokio::time::timeout(WAIT, trickle).await.unwrap_or(false)
        || read_until_closed(&mut loris, Duration::from_secs(1))
            .await
            .1;
    assert!(cut, "the trickling client was never cut off");
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "cut off late: {:?}",
        started.elapsed()
    );
    assert_eq!(
        metric(
            &gw,
            "reasoning_gateway_client_rejections_total{reason=\"header_timeout\"}"
        )
        .await,
        1.0
    );

    // The stream outlived the deadline and still ends whole.
    up.open_gate();
    let text = tokio::time::timeout(WAIT, stream.text())
        .await
        .unwrap()
        .unwrap();
    assert!(text.trim_end().ends_with("data: [DONE]"), "{text}");
    assert!(!text.contains("\"error\""), "{text}");
}

/// A client that sends its header and then trickles the body is answered 408 at
/// `client_body_timeout`, not held for as long as it keeps a byte coming.
#[tokio::test]
async fn a_trickled_body_is_answered_408() {
    let up = FakeUpstream::start("a").await;
    let gw = GatewayProc::start(&config(&up, "client_body_timeout: 1s\n"), READY);
    let mut s = connect(&gw).await;
    s.write_all(
        b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 400\r\n\r\n{\"model\":",
    )
    .await
    .unwrap();
    let started = Instant::now();
    let mut answer = Vec::new();
    let mut buf = [0u8; 4096];
    while started.elapsed() < WAIT {
        let _ = s.write_all(b" ").await;
        if let Ok(Ok(n)) = tokio::time::timeout(Duration::from_millis(200), s.read(&mut buf)).await
        {
            answer.extend_from_slice(&buf[..n]);
            if n == 0 || answer.windows(4).any(|w| w == b"}}\r\n") || answer.ends_with(b"}}") {
                break;
            }
        }
    }
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(answer.contains("\"code\":\"request_timeout\""), "{answer}");
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "answered late: {:?}",
        started.elapsed()
    );
    assert_eq!(
        metric(
            &gw,
            "reasoning_gateway_client_rejections_total{reason=\"body_timeout\"}"
        )
        .await,
        1.0
    );
    assert_eq!(
        up.requests.load(Ordering::Relaxed),
        0,
        "nothing reached the upstream"
    );
}

/// Past `max_connections` a new connection gets an OpenAI-style 503 and is closed; once a
/// connection closes, its slot serves the next client.
#[tokio::test]
async fn connections_past_the_cap_are_refused_and_counted() {
    let up = FakeUpstream::start("a").await;
    let gw = GatewayProc::start(&config(&up, "max_connections: 3\n"), READY);
    // The harness's readiness probe opened (and closed) one connection: wait until it is gone.
    let deadline = Instant::now() + WAIT;
    while metric(&gw, "reasoning_gateway_client_connections ").await > 0.0 {
        assert!(
            Instant::now() < deadline,
            "the probe's connection was never released"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let mut held = Vec::new();
    for _ in 0..3 {
        held.push(connect(&gw).await);
    }
    // The gateway accepts asynchronously: wait (bounded) until it holds all three.
    let deadline = Instant::now() + WAIT;
    while metric(&gw, "reasoning_gateway_client_connections ").await < 3.0 {
        assert!(
            Instant::now() < deadline,
            "the gateway never held 3 connections"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let mut extra = connect(&gw).await;
    let (answer, closed) = read_until_closed(&mut extra, WAIT).await;
    assert!(closed, "the connection over the cap was kept open");
    assert!(answer.starts_with("HTTP/1.1 503"), "{answer}");
    let body: Value = serde_json::from_str(answer.split("\r\n\r\n").nth(1).unwrap()).unwrap();
    assert_eq!(body["error"]["code"], "too_many_connections", "{body}");
    assert_eq!(
        metric(
            &gw,
            "reasoning_gateway_client_rejections_total{reason=\"max_connections\"}"
        )
        .await,
        1.0
    );

    drop(held.pop());
    let client = reqwest::Client::new();
    let deadline = Instant::now() + WAIT;
    loop {
        let r = client
            .post(format!("{}/chat/completions", gw.base_url()))
            .bearer_auth("sk-a")
            .json(&json!({"model": "echo", "messages": [{"role": "user", "content": "x"}]}))
            .send()
            .await;
        if r.is_ok_and(|r| r.status() == 200) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the freed slot never served a request"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Many clients each declaring a near-limit `Content-Length` and sending one byte make the
/// gateway reserve memory only for what arrived (it reserved the declared size up front:
/// 60 × 16 MB before a byte of body).
#[tokio::test]
async fn a_declared_content_length_reserves_nothing_before_bytes_arrive() {
    let up = FakeUpstream::start("a").await;
    let gw = GatewayProc::start(&config(&up, ""), READY);
    let vm = || -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", gw.pid())).unwrap();
        let line = status
            .lines()
            .find(|l| l.starts_with("VmSize:"))
            .unwrap()
            .to_string();
        line.split_whitespace()
            .nth(1)
            .unwrap()
            .parse::<u64>()
            .unwrap()
            * 1024
    };
    let before = vm();
    let mut held = Vec::new();
    for _ in 0..60 {
        let mut s = connect(&gw).await;
        s.write_all(
            b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Length: 16000000\r\n\r\n{",
        )
        .await
        .unwrap();
        held.push(s);
    }
    let deadline = Instant::now() + WAIT;
    while metric(&gw, "reasoning_gateway_inflight_requests ").await < 60.0 {
        assert!(
            Instant::now() < deadline,
            "the gateway never read the 60 headers"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let grown = vm().saturating_sub(before);
    assert!(
        grown < 200 << 20,
        "60 promised bodies grew the gateway by {} MiB",
        grown >> 20
    );
}

/// An upstream that reads a long non-streamed generation's request and dies before answering
/// may have done the work: the client gets one 502, and the generation is not started again on
/// another connection (Pingora resends any request that fails on a reused connection).
#[tokio::test]
async fn a_generation_the_upstream_died_on_is_not_run_twice() {
    let up = FakeUpstream::start("a").await;
    let gw = GatewayProc::start(&config(&up, ""), READY);
    // A new client connection per request: what is pooled here is the gateway's upstream
    // side. (A client connection kept alive across a 502 was seen reset: see the closing note.)
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(0)
        .build()
        .unwrap();
    let send = |model: &'static str| {
        let client = client.clone();
        let url = format!("{}/chat/completions", gw.base_url());
        async move {
            client
                .post(url)
                .bearer_auth("sk-a")
                .json(&json!({"model": model, "messages": [{"role": "user", "content": "x"}]}))
                .send()
                .await
                .unwrap()
        }
    };
    // A pooled connection is kept after each answered request; the dying request reuses one
    // whenever the pool hands it out, which is what the old retry needed. Under a loaded CI
    // run the pool hands one out less often (seen: fewer than 3 in 20), so the loop may go on
    // longer; it stops at the third reuse.
    for sent in 1..=200 {
        assert_eq!(send("echo").await.status(), 200);
        let r = send("die-after-read").await;
        assert_eq!(r.status().as_u16(), 502, "request {sent}");
        assert_eq!(
            up.died.load(Ordering::SeqCst),
            sent,
            "the upstream was asked {} times for {sent} generations",
            up.died.load(Ordering::SeqCst)
        );
        if up.died_reused.load(Ordering::SeqCst) >= 3 {
            return;
        }
    }
    panic!("no dying request ever arrived on a reused connection");
}

// Async jobs: one tenant cannot fill the job store, and jobs together cannot hold more memory
// than `async_jobs.max_bytes` (a job holds its request body and, once finished, its result:
// 1 000 jobs of 16 MiB bodies were 16 GiB).

fn jobs_config(up: &FakeUpstream, jobs: &str) -> String {
    format!(
        "async_jobs:\n{jobs}upstreams: [{{name: fake, endpoints: [\"{}\"]}}]\nroutes:\n  - {{model: \"*\", upstream: fake}}\n",
        up.addr
    )
}

async fn submit_job(gw: &GatewayProc, key: &str, content: &str) -> (u16, Value) {
    let r = reqwest::Client::new()
        .post(format!("{}/async/chat/completions", gw.base_url()))
        .bearer_auth(key)
        .json(&json!({"model": "gated", "messages": [{"role": "user", "content": content}]}))
        .send()
        .await
        .expect("submit");
    let status = r.status().as_u16();
    (status, r.json().await.expect("json"))
}

#[tokio::test]
async fn one_tenant_cannot_fill_the_job_store() {
    let up = FakeUpstream::start("a").await;
    let gw = GatewayProc::start(&jobs_config(&up, "  max_jobs_per_tenant: 2\n"), READY);
    for _ in 0..2 {
        let (s, v) = submit_job(&gw, "sk-greedy", "hold").await;
        assert_eq!(s, 202, "{v}");
    }
    let (s, e) = submit_job(&gw, "sk-greedy", "hold").await;
    assert_eq!(s, 429, "{e}");
    assert_eq!(e["error"]["code"], "tenant_job_quota_exceeded");
    assert_eq!(e["error"]["type"], "rate_limit_error");
    // Another tenant still gets in.
    let (s, v) = submit_job(&gw, "sk-other", "hold").await;
    assert_eq!(s, 202, "{v}");
    assert_eq!(
        metric(
            &gw,
            "reasoning_gateway_async_job_rejections_total{reason=\"tenant_quota\"}"
        )
        .await,
        1.0
    );
}

#[tokio::test]
async fn jobs_cannot_hold_more_than_max_bytes() {
    let up = FakeUpstream::start("a").await;
    let gw = GatewayProc::start(&jobs_config(&up, "  max_bytes: 3000\n"), READY);
    let big = "x".repeat(2000);
    let (s, v) = submit_job(&gw, "sk-a", &big).await;
    assert_eq!(s, 202, "{v}");
    // Gateway-wide: a second big body does not fit, whoever sends it.
    let (s, e) = submit_job(&gw, "sk-b", &big).await;
    assert_eq!(s, 429, "{e}");
    assert_eq!(e["error"]["code"], "job_memory_full");
    assert_eq!(e["error"]["type"], "rate_limit_error");
    // A small one still fits.
    let (s, v) = submit_job(&gw, "sk-b", "small").await;
    assert_eq!(s, 202, "{v}");
    assert_eq!(
        metric(
            &gw,
            "reasoning_gateway_async_job_rejections_total{reason=\"memory_full\"}"
        )
        .await,
        1.0
    );
}
