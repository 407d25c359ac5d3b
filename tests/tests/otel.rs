//! OpenTelemetry traces end to end: a collector in the test decodes what the gateway exports
//! with the official OTLP protobuf definitions (`opentelemetry-proto`), over HTTP/protobuf and
//! gRPC; the fake upstream records the `traceparent` it was sent.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use gateway_tests::fake_upstream::FakeUpstream;
use gateway_tests::harness::{metric_value, GatewayProc};
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{
    TraceService, TraceServiceServer,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::any_value::Value as Any;
use opentelemetry_proto::tonic::trace::v1::span::SpanKind;
use opentelemetry_proto::tonic::trace::v1::Span;
use prost::Message;
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

/// What a collector received: each span with its resource's `service.name`.
#[derive(Clone, Default)]
struct Received(Arc<Mutex<Vec<(String, Span)>>>);

impl Received {
    fn add(&self, req: ExportTraceServiceRequest) {
        let mut all = self.0.lock().unwrap();
        for rs in req.resource_spans {
            let service = rs
                .resource
                .as_ref()
                .and_then(|r| r.attributes.iter().find(|a| a.key == "service.name"))
                .and_then(|a| a.value.as_ref())
                .and_then(|v| match &v.value {
                    Some(Any::StringValue(s)) => Some(s.clone()),
                    _ => None,
                })
                .unwrap_or_default();
            for ss in rs.scope_spans {
                for span in ss.spans {
                    all.push((service.clone(), span));
                }
            }
        }
    }

    fn spans(&self) -> Vec<(String, Span)> {
        self.0.lock().unwrap().clone()
    }

    /// Waits (bounded) until the spans of trace `trace` number at least `n`.
    async fn wait_for_trace(&self, trace: &[u8], n: usize) -> Vec<(String, Span)> {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let spans: Vec<_> = self
                .spans()
                .into_iter()
                .filter(|(_, s)| s.trace_id == trace)
                .collect();
            if spans.len() >= n {
                return spans;
            }
            assert!(
                Instant::now() < deadline,
                "fewer than {n} spans of the trace arrived: {:?}",
                self.spans()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

/// An OTLP/HTTP collector: `POST /v1/traces` with a protobuf body, answered 200.
async fn http_collector() -> (SocketAddr, Received) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let received = Received::default();
    let r = received.clone();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            let r = r.clone();
            tokio::spawn(async move {
                let mut buf = Vec::new();
                loop {
                    let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") else {
                        let mut tmp = [0u8; 65536];
                        match s.read(&mut tmp).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => buf.extend_from_slice(&tmp[..n]),
                        }
                        continue;
                    };
                    let head = String::from_utf8_lossy(&buf[..end]).to_ascii_lowercase();
                    assert!(head.starts_with("post /v1/traces "), "{head}");
                    assert!(
                        head.contains("content-type: application/x-protobuf"),
                        "{head}"
                    );
                    let len: usize = head
                        .lines()
                        .find_map(|l| l.strip_prefix("content-length:"))
                        .and_then(|v| v.trim().parse().ok())
                        .unwrap_or(0);
                    while buf.len() < end + 4 + len {
                        let mut tmp = [0u8; 65536];
                        match s.read(&mut tmp).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => buf.extend_from_slice(&tmp[..n]),
                        }
                    }
                    let body: Vec<u8> = buf.drain(..end + 4 + len).skip(end + 4).collect();
                    r.add(ExportTraceServiceRequest::decode(body.as_slice()).unwrap());
                    let reply = ExportTraceServiceResponse::default().encode_to_vec();
                    let head = format!("HTTP/1.1 200 OK\r\ncontent-type: application/x-protobuf\r\ncontent-length: {}\r\n\r\n", reply.len());
                    if s.write_all(head.as_bytes()).await.is_err()
                        || s.write_all(&reply).await.is_err()
                    {
                        return;
                    }
                }
            });
        }
    });
    (addr, received)
}

struct GrpcCollector(Received);

#[tonic::async_trait]
impl TraceService for GrpcCollector {
    async fn export(
        &self,
        request: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        self.0.add(request.into_inner());
        Ok(tonic::Response::new(ExportTraceServiceResponse::default()))
    }
}

/// An OTLP/gRPC collector (the generated `TraceService` server).
async fn grpc_collector() -> (SocketAddr, Received) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let received = Received::default();
    let service = TraceServiceServer::new(GrpcCollector(received.clone()));
    tokio::spawn(async move {
        let incoming = tokio_stream::wrappers::TcpListenerStream::new(listener);
        let _ = tonic::transport::Server::builder()
            .add_service(service)
            .serve_with_incoming(incoming)
            .await;
    });
    (addr, received)
}

fn config(upstream: SocketAddr, otlp: &str) -> String {
    format!(
        r#"upstreams: [{{name: fake, endpoints: ["{upstream}"]}}]
routes:
  - model: think
    name: r1
    upstream: fake
    reasoning:
      parser: deepseek_r1
telemetry:
  otlp: {otlp}
"#
    )
}

fn attr<'a>(span: &'a Span, key: &str) -> Option<&'a Any> {
    span.attributes
        .iter()
        .find(|a| a.key == key)
        .and_then(|a| a.value.as_ref())
        .and_then(|v| v.value.as_ref())
}

fn str_attr(span: &Span, key: &str) -> Option<String> {
    match attr(span, key) {
        Some(Any::StringValue(s)) => Some(s.clone()),
        _ => None,
    }
}

fn int_attr(span: &Span, key: &str) -> Option<i64> {
    match attr(span, key) {
        Some(Any::IntValue(n)) => Some(*n),
        _ => None,
    }
}

fn float_attr(span: &Span, key: &str) -> Option<f64> {
    match attr(span, key) {
        Some(Any::DoubleValue(n)) => Some(*n),
        _ => None,
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex(s: &str) -> Vec<u8> {
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
        .collect()
}

/// A streamed reasoning request; the response's `traceparent` and its body text.
async fn stream(gw: &GatewayProc, traceparent: Option<&str>) -> (u16, Option<String>, String) {
    let mut req = reqwest::Client::new()
        .post(format!("{}/chat/completions", gw.base_url()))
        .json(
            &json!({"model": "think", "stream": true, "max_tokens": 64, "temperature": 0.5,
            "top_p": 0.9, "messages": [{"role": "user", "content": "2+2?"}]}),
        );
    if let Some(tp) = traceparent {
        req = req
            .header("traceparent", tp)
            .header("tracestate", "vendor=opaque");
    }
    let resp = req.send().await.unwrap();
    let status = resp.status().as_u16();
    let tp = resp
        .headers()
        .get("traceparent")
        .map(|v| v.to_str().unwrap().to_string());
    (status, tp, resp.text().await.unwrap())
}

/// The server span and its children.
fn server_and_children(spans: &[(String, Span)]) -> (&Span, Vec<&Span>) {
    let server = spans
        .iter()
        .map(|(_, s)| s)
        .find(|s| s.kind == SpanKind::Server as i32)
        .expect("a server span");
    let children = spans
        .iter()
        .map(|(_, s)| s)
        .filter(|s| s.parent_span_id == server.span_id)
        .collect();
    (server, children)
}

#[tokio::test]
async fn a_streamed_request_is_one_trace_with_genai_attributes_and_the_upstream_as_a_child() {
    let up = FakeUpstream::start("a").await;
    let (collector, received) = http_collector().await;
    let gw = GatewayProc::start_with_args(
        &config(
            up.addr,
            &format!("{{endpoint: \"http://{collector}\", service_name: rg-test}}"),
        ),
        Duration::from_secs(20),
        &["--log-format", "json"],
    );
    let (status, tp, body) = stream(&gw, None).await;
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("data: [DONE]"), "{body}");

    // The gateway started the trace, so it tells the client which one.
    let tp = tp.expect("traceparent in the response");
    let parts: Vec<&str> = tp.split('-').collect();
    assert_eq!((parts.len(), parts[0], parts[3]), (4, "00", "01"), "{tp}");
    let trace = unhex(parts[1]);
    let spans = received.wait_for_trace(&trace, 2).await;
    assert!(spans.iter().all(|(svc, _)| svc == "rg-test"));
    let (server, children) = server_and_children(&spans);
    assert_eq!(
        hex(&server.span_id),
        parts[2],
        "the response names the server span"
    );
    assert!(server.parent_span_id.is_empty(), "a root span");
    assert_eq!(server.name, "chat think");
    assert_eq!(
        str_attr(server, "gen_ai.operation.name").as_deref(),
        Some("chat")
    );
    assert_eq!(
        str_attr(server, "gen_ai.provider.name").as_deref(),
        Some("fake")
    );
    assert_eq!(
        str_attr(server, "gen_ai.request.model").as_deref(),
        Some("think")
    );
    assert_eq!(
        str_attr(server, "gen_ai.response.model").as_deref(),
        Some("think")
    );
    assert_eq!(int_attr(server, "gen_ai.request.max_tokens"), Some(64));
    assert_eq!(float_attr(server, "gen_ai.request.temperature"), Some(0.5));
    assert_eq!(float_attr(server, "gen_ai.request.top_p"), Some(0.9));
    // The fake upstream's usage chunk: 5 prompt tokens, 12 completion tokens.
    assert_eq!(int_attr(server, "gen_ai.usage.input_tokens"), Some(5));
    assert_eq!(int_attr(server, "gen_ai.usage.output_tokens"), Some(12));
    match attr(server, "gen_ai.response.finish_reasons") {
        Some(Any::ArrayValue(a)) => assert_eq!(a.values.len(), 1, "{a:?}"),
        other => panic!("finish_reasons: {other:?}"),
    }
    assert_eq!(
        str_attr(server, "server.address").as_deref(),
        Some("127.0.0.1")
    );
    assert_eq!(
        int_attr(server, "server.port"),
        Some(i64::from(up.addr.port()))
    );
    assert_eq!(int_attr(server, "http.response.status_code"), Some(200));
    assert_eq!(str_attr(server, "error.type"), None);
    assert_eq!(
        str_attr(server, "reasoning_gateway.route").as_deref(),
        Some("r1")
    );
    assert_eq!(
        str_attr(server, "reasoning_gateway.variant").as_deref(),
        Some("default")
    );
    assert!(float_attr(server, "reasoning_gateway.time_to_first_answer_token").unwrap() > 0.0);
    // Reasoning figures are the access log's (one report for both).
    let line = gw
        .wait_for_log_line("Request finished.", Duration::from_secs(10))
        .await;
    let log: Value = serde_json::from_str(&line).unwrap();
    assert_eq!(
        int_attr(server, "gen_ai.usage.reasoning_tokens"),
        log["reasoning_tokens"].as_i64()
    );
    assert_eq!(
        int_attr(server, "reasoning_gateway.reasoning.steps"),
        log["reasoning_steps"].as_i64()
    );
    assert_eq!(
        int_attr(server, "reasoning_gateway.reasoning.self_corrections"),
        Some(1),
        "`Wait,` in the fixture"
    );
    assert!(
        server
            .events
            .iter()
            .any(|e| e.name == "reasoning.answer_started"),
        "{:?}",
        server.events
    );
    // No content without capture_content.
    assert_eq!(str_attr(server, "gen_ai.input.messages"), None);

    // The upstream attempt is a client span under the server span, and the upstream was told
    // its span id as the parent.
    let upstream: Vec<&&Span> = children
        .iter()
        .filter(|s| s.kind == SpanKind::Client as i32)
        .collect();
    assert_eq!(upstream.len(), 1, "{children:?}");
    let attempt = upstream[0];
    assert!(attempt.start_time_unix_nano >= server.start_time_unix_nano);
    assert!(attempt.end_time_unix_nano <= server.end_time_unix_nano);
    let seen = up.traceparents.lock().unwrap().clone();
    assert_eq!(
        seen,
        vec![format!("00-{}-{}-01", parts[1], hex(&attempt.span_id))]
    );
}

#[tokio::test]
async fn grpc_export_continues_the_clients_trace_and_captures_content_when_asked() {
    let up = FakeUpstream::start("a").await;
    let (collector, received) = grpc_collector().await;
    let gw = GatewayProc::start(
        &config(
            up.addr,
            &format!("{{endpoint: \"http://{collector}\", protocol: grpc, sample_ratio: 0.0, capture_content: true}}"),
        ),
        Duration::from_secs(20),
    );
    let client_trace = "4bf92f3577b34da6a3ce929d0e0e4736";
    let client_span = "00f067aa0ba902b7";
    let (status, tp, _) = stream(&gw, Some(&format!("00-{client_trace}-{client_span}-01"))).await;
    assert_eq!(status, 200);
    assert_eq!(tp, None, "the client started the trace; it is not answered");
    // Sampled by the client despite sample_ratio 0.
    let spans = received.wait_for_trace(&unhex(client_trace), 2).await;
    let (server, children) = server_and_children(&spans);
    assert_eq!(hex(&server.parent_span_id), client_span);
    assert_eq!(server.trace_state, "vendor=opaque");
    assert!(!children.is_empty());
    assert!(spans.iter().all(|(svc, _)| svc == "reasoning-gateway"));
    let prompt = str_attr(server, "gen_ai.input.messages").expect("captured prompt");
    assert!(prompt.contains("2+2?"), "{prompt}");
    let output = str_attr(server, "gen_ai.output.messages").expect("captured completion");
    assert!(output.contains("The answer is 4"), "{output}");
    let seen = up.traceparents.lock().unwrap().clone();
    assert_eq!(seen.len(), 1);
    assert!(
        seen[0].starts_with(&format!("00-{client_trace}-")),
        "{seen:?}"
    );

    // A malformed traceparent is no error: a new trace (not sampled at ratio 0, so none of
    // its spans is exported, and the response says so with flag 00).
    let (status, tp, body) = stream(&gw, Some("00-not-a-trace-01")).await;
    assert_eq!(status, 200, "{body}");
    let tp = tp.expect("a new trace is answered");
    assert!(tp.ends_with("-00") && !tp.contains(client_trace), "{tp}");
}

#[tokio::test]
async fn sampling_zero_exports_nothing_the_gateway_starts() {
    let up = FakeUpstream::start("a").await;
    let (collector, received) = http_collector().await;
    let gw = GatewayProc::start(
        &config(
            up.addr,
            &format!("{{endpoint: \"http://{collector}\", sample_ratio: 0}}"),
        ),
        Duration::from_secs(20),
    );
    for _ in 0..5 {
        let (status, tp, _) = stream(&gw, None).await;
        assert_eq!(status, 200);
        assert!(tp.unwrap().ends_with("-00"));
    }
    // A trace the client sampled is exported; spans leave in order on one exporter, so once
    // it has arrived anything exported before it would have too.
    let marker = "0af7651916cd43dd8448eb211c80319c";
    let (status, _, _) = stream(&gw, Some(&format!("00-{marker}-b7ad6b7169203331-01"))).await;
    assert_eq!(status, 200);
    received.wait_for_trace(&unhex(marker), 2).await;
    let traces: std::collections::HashSet<String> = received
        .spans()
        .iter()
        .map(|(_, s)| hex(&s.trace_id))
        .collect();
    assert_eq!(traces.len(), 1, "only the client-sampled trace: {traces:?}");
}

/// A collector that accepts connections and never answers.
async fn silent_collector() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((s, _)) = listener.accept().await {
            held.push(s);
        }
    });
    addr
}

/// A port nothing listens on.
async fn closed_port() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    listener.local_addr().unwrap()
}

#[tokio::test]
async fn a_collector_that_is_down_or_silent_costs_no_request() {
    let up = FakeUpstream::start("a").await;
    let timeout = Duration::from_secs(3);
    for (what, collector, reason) in [
        ("closed port", closed_port().await, "export_failed"),
        ("silent collector", silent_collector().await, "queue_full"),
    ] {
        let gw = GatewayProc::start(
            &config(
                up.addr,
                &format!("{{endpoint: \"http://{collector}\", timeout: 3s, max_queue: 4}}"),
            ),
            Duration::from_secs(20),
        );
        // Every request succeeds, whole, and none waits for the exporter: each finishes well
        // within one export timeout although every export hangs or fails.
        for i in 0..20 {
            let started = Instant::now();
            let (status, _, body) = stream(&gw, None).await;
            let took = started.elapsed();
            assert_eq!(status, 200, "{what}, request {i}: {body}");
            assert!(body.contains("data: [DONE]"), "{what}, request {i}: {body}");
            assert!(
                took < timeout,
                "{what}: request {i} took {took:?}, an export timeout is {timeout:?}"
            );
        }
        // The lost spans are counted.
        let deadline = Instant::now() + Duration::from_secs(20);
        let series = format!("reasoning_gateway_otel_spans_dropped_total{{reason=\"{reason}\"}}");
        loop {
            let text = gw.admin_get("/metrics").await;
            if metric_value(&text, &series).is_some_and(|n| n > 0.0) {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "{what}: {series} stayed 0:\n{text}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

#[tokio::test]
async fn latency_buckets_carry_a_sampled_trace_id_into_a_real_prometheus() {
    let up = FakeUpstream::start("a").await;
    let (collector, _received) = http_collector().await;
    let gw = GatewayProc::start(
        &config(up.addr, &format!("{{endpoint: \"http://{collector}\"}}")),
        Duration::from_secs(20),
    );
    let (status, tp, _) = stream(&gw, None).await;
    assert_eq!(status, 200);
    let trace = tp.unwrap().split('-').nth(1).unwrap().to_string();
    gw.wait_for_requests(1, Duration::from_secs(10)).await;

    // OpenMetrics only when asked; each latency family has the trace on one bucket.
    let resp = reqwest::Client::new()
        .get(gw.admin_url("/metrics"))
        .header(
            "accept",
            "application/openmetrics-text;version=1.0.0,text/plain;q=0.5",
        )
        .send()
        .await
        .unwrap();
    let ct = resp.headers()["content-type"].to_str().unwrap().to_string();
    assert!(ct.starts_with("application/openmetrics-text"), "{ct}");
    let text = resp.text().await.unwrap();
    assert!(text.ends_with("# EOF\n"));
    for family in ["request_duration_seconds", "time_to_first_token_seconds"] {
        let lines: Vec<&str> = text
            .lines()
            .filter(|l| l.starts_with(&format!("reasoning_gateway_{family}_bucket")))
            .filter(|l| l.contains(&format!("# {{trace_id=\"{trace}\"}}")))
            .collect();
        assert_eq!(lines.len(), 1, "{family}:\n{text}");
    }
    let plain = gw.admin_get("/metrics").await;
    assert!(!plain.contains("trace_id") && !plain.contains("# EOF"));

    // A real Prometheus with exemplar storage scrapes them and answers them by query.
    let prom = gateway_tests::prometheus::Prometheus::start_with_exemplars(gw.admin_port).await;
    let deadline = Instant::now() + Duration::from_secs(30);
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    loop {
        let v = prom
            .api(&format!(
                "/api/v1/query_exemplars?query=reasoning_gateway_request_duration_seconds_bucket&start={}&end={}",
                now - 600,
                now + 600
            ))
            .await;
        let found = v["data"].as_array().is_some_and(|series| {
            series.iter().any(|s| {
                s["exemplars"]
                    .as_array()
                    .is_some_and(|e| e.iter().any(|x| x["labels"]["trace_id"] == trace.as_str()))
            })
        });
        if found {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no exemplar with trace {trace}: {v}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// A callback receiver answering 200; keeps each request's `traceparent` (empty: none).
async fn callback_receiver() -> (String, Arc<Mutex<Vec<String>>>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/hooks/job", listener.local_addr().unwrap());
    let seen = Arc::new(Mutex::new(Vec::new()));
    let log = seen.clone();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            let mut buf = Vec::new();
            let mut tmp = [0u8; 4096];
            let end = loop {
                match s.read(&mut tmp).await {
                    Ok(0) | Err(_) => break None,
                    Ok(n) => buf.extend_from_slice(&tmp[..n]),
                }
                if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                    break Some(i);
                }
            };
            let Some(end) = end else { continue };
            let head = String::from_utf8_lossy(&buf[..end]).to_ascii_lowercase();
            let tp = head
                .lines()
                .find_map(|l| l.strip_prefix("traceparent:"))
                .map(|v| v.trim().to_string())
                .unwrap_or_default();
            log.lock().unwrap().push(tp);
            let _ = s
                .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\nconnection: close\r\n\r\n")
                .await;
        }
    });
    (url, seen)
}

#[tokio::test]
async fn an_async_job_runs_and_calls_back_in_the_submitters_trace() {
    let up = FakeUpstream::start("a").await;
    let (collector, received) = http_collector().await;
    let (hook, hooks) = callback_receiver().await;
    let config = format!(
        "async_jobs:\n  callback_allow: [\"127.0.0.1/32\"]\n{}",
        config(up.addr, &format!("{{endpoint: \"http://{collector}\"}}"))
    );
    let gw = GatewayProc::start(&config, Duration::from_secs(20));
    let trace = "5bf92f3577b34da6a3ce929d0e0e4736";
    let resp = reqwest::Client::new()
        .post(format!("{}/async/chat/completions", gw.base_url()))
        .header("traceparent", format!("00-{trace}-10f067aa0ba902b7-01"))
        .json(&json!({"model": "think", "callback_url": hook,
            "messages": [{"role": "user", "content": "2+2?"}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(
        resp.status().as_u16(),
        202,
        "{}",
        resp.text().await.unwrap()
    );
    let deadline = Instant::now() + Duration::from_secs(30);
    while hooks.lock().unwrap().is_empty() {
        assert!(Instant::now() < deadline, "no callback");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let callback = hooks.lock().unwrap()[0].clone();
    assert!(
        callback.starts_with(&format!("00-{trace}-")),
        "{callback:?}"
    );
    // The run reached the upstream in the same trace, and its server span is a child of the
    // submitting request's.
    let seen = up.traceparents.lock().unwrap().clone();
    assert!(
        seen.iter()
            .all(|tp| tp.starts_with(&format!("00-{trace}-")))
            && !seen.is_empty(),
        "{seen:?}"
    );
    let spans = received.wait_for_trace(&unhex(trace), 3).await;
    let servers: Vec<&Span> = spans
        .iter()
        .map(|(_, s)| s)
        .filter(|s| s.kind == SpanKind::Server as i32)
        .collect();
    assert_eq!(servers.len(), 2, "{spans:?}");
    let submit = servers
        .iter()
        .find(|s| hex(&s.parent_span_id) == "10f067aa0ba902b7")
        .expect("submit span");
    let run = servers
        .iter()
        .find(|s| s.parent_span_id == submit.span_id)
        .expect("run span under it");
    assert_eq!(run.name, "chat think");
    assert_eq!(callback, format!("00-{trace}-{}-01", hex(&submit.span_id)));
}

#[tokio::test]
async fn genai_metrics_carry_the_genai_attributes_and_time_per_output_token() {
    let up = FakeUpstream::start("a").await;
    let config = format!(
        "upstreams: [{{name: fake, endpoints: [\"{}\"]}}]\nroutes:\n  - {{model: think, name: r1, upstream: fake, reasoning: {{parser: deepseek_r1}}}}\ntelemetry: {{genai_metrics: true}}\n",
        up.addr
    );
    let gw = GatewayProc::start(&config, Duration::from_secs(20));
    let (status, tp, _) = stream(&gw, None).await;
    assert_eq!(status, 200);
    assert_eq!(tp, None, "no trace without telemetry.otlp");
    gw.wait_for_requests(1, Duration::from_secs(10)).await;
    let text = gw.admin_get("/metrics").await;
    let attrs = "error_type=\"\",gen_ai_operation_name=\"chat\",gen_ai_provider_name=\"fake\",gen_ai_request_model=\"think\"";
    let value = |series: String| {
        metric_value(&text, &series).unwrap_or_else(|| panic!("{series} missing:\n{text}"))
    };
    assert_eq!(
        value(format!(
            "gen_ai_server_request_duration_seconds_count{{{attrs},route=\"r1\"}}"
        )),
        1.0
    );
    assert_eq!(
        value(format!(
            "gen_ai_server_time_to_first_token_seconds_count{{{attrs},route=\"r1\"}}"
        )),
        1.0
    );
    // The fake upstream's usage: 5 prompt tokens, 12 completion tokens.
    for (token_type, n) in [("input", 5.0), ("output", 12.0)] {
        assert_eq!(
            value(format!("gen_ai_client_token_usage_sum{{{attrs},gen_ai_token_type=\"{token_type}\",route=\"r1\"}}")),
            n
        );
    }
    assert_eq!(
        value(format!(
            "gen_ai_server_time_per_output_token_seconds_count{{{attrs},route=\"r1\"}}"
        )),
        1.0
    );
}

#[tokio::test]
async fn a_cache_lookup_span_has_its_embed_search_and_checks_stages_as_children() {
    let up = FakeUpstream::start("a").await;
    let (collector, received) = http_collector().await;
    let root = gateway_tests::harness::repo_root();
    let cfg = format!(
        "cache:\n  model_dir: {}\n  onnxruntime: {}\n  embed_timeout: 5s\n{}",
        root.join("models/minilm").display(),
        root.join("models/onnxruntime/libonnxruntime.so").display(),
        config(up.addr, &format!("{{endpoint: \"http://{collector}\"}}")).replace(
            "      parser: deepseek_r1\n",
            "      parser: deepseek_r1\n    cache: {}\n"
        )
    );
    let gw = GatewayProc::start(&cfg, Duration::from_secs(60));
    let ask =
        |question: &'static str, traceparent: Option<&'static str>| {
            let url = format!("{}/chat/completions", gw.base_url());
            async move {
                let mut req = reqwest::Client::new().post(url).bearer_auth("sk-trace").json(
                &json!({"model": "think", "messages": [{"role": "user", "content": question}]}),
            );
                if let Some(tp) = traceparent {
                    req = req.header("traceparent", tp);
                }
                let resp = req.send().await.unwrap();
                assert_eq!(resp.status(), 200);
                let cache = resp.headers()["x-reasoning-cache"]
                    .to_str()
                    .unwrap()
                    .to_string();
                // The whole body: a client gone before it is a cancelled request, not stored.
                resp.text().await.unwrap();
                cache
            }
        };
    // The first problem of the partition is stored without a lookup embedding.
    assert_eq!(ask("Name the largest ocean on Earth.", None).await, "miss");
    gw.wait_for_metric(
        "reasoning_gateway_cache_inserts_total{route=\"r1\"}",
        1.0,
        Duration::from_secs(20),
    )
    .await;
    // Another problem in that partition is embedded, searched and checked.
    let trace = "4bf92f3577b34da6a3ce929d0e0e4736";
    ask(
        "Which river is the longest in South America?",
        Some("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"),
    )
    .await;
    let spans = received.wait_for_trace(&unhex(trace), 6).await;
    let named = |name: &str| -> Vec<&Span> {
        spans
            .iter()
            .map(|(_, s)| s)
            .filter(|s| s.name == name)
            .collect()
    };
    let (server, _) = server_and_children(&spans);
    let lookup = named("cache lookup");
    assert_eq!(lookup.len(), 1, "{spans:#?}");
    let lookup = lookup[0];
    assert_eq!(lookup.parent_span_id, server.span_id);
    for stage in ["cache embed", "cache search", "cache checks"] {
        let s = named(stage);
        assert_eq!(s.len(), 1, "{stage}: {spans:#?}");
        assert_eq!(s[0].parent_span_id, lookup.span_id, "{stage}");
        assert!(
            s[0].start_time_unix_nano >= lookup.start_time_unix_nano
                && s[0].end_time_unix_nano <= lookup.end_time_unix_nano
                && s[0].start_time_unix_nano <= s[0].end_time_unix_nano,
            "{stage} lies within the lookup: {:?} in {:?}",
            s[0],
            lookup
        );
    }
}

#[tokio::test]
async fn a_forced_answer_says_so_on_its_span_and_is_not_cached_for_other_budgets() {
    let up = FakeUpstream::start("a").await;
    let (collector, received) = http_collector().await;
    let root = gateway_tests::harness::repo_root();
    let cfg = format!(
        r#"cache:
  model_dir: {}
  onnxruntime: {}
upstreams:
  - name: vllm
    endpoints: ["{}"]
    continuation: chat_prefix
routes:
  - model: budget-long
    name: forced
    upstream: vllm
    reasoning:
      budget: {{ max_tokens: 10, on_exceed: answer }}
    cache: {{}}
  - model: think
    name: plain
    upstream: vllm
    reasoning: {{ parser: deepseek_r1 }}
    cache: {{}}
telemetry:
  otlp: {{endpoint: "http://{collector}"}}
"#,
        root.join("models/minilm").display(),
        root.join("models/onnxruntime/libonnxruntime.so").display(),
        up.addr
    );
    let gw = GatewayProc::start(&cfg, Duration::from_secs(60));
    let ask = |traceparent: &'static str| {
        let url = format!("{}/chat/completions", gw.base_url());
        async move {
            let resp = reqwest::Client::new()
                .post(url)
                .bearer_auth("sk-budget")
                .header("traceparent", traceparent)
                .json(&json!({"model": "budget-long",
                    "messages": [{"role": "user", "content": "Think hard, then answer."}]}))
                .send()
                .await
                .unwrap();
            assert_eq!(resp.status(), 200);
            let cache = resp.headers()["x-reasoning-cache"]
                .to_str()
                .unwrap()
                .to_string();
            let body: Value = resp.json().await.unwrap();
            (cache, body)
        }
    };
    let trace = "0af7651916cd43dd8448eb211c80319c";
    let (cache, body) = ask("00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01").await;
    assert_eq!(cache, "miss");
    assert_eq!(body["choices"][0]["finish_reason"], "stop", "{body}");
    let spans = received.wait_for_trace(&unhex(trace), 2).await;
    let (server, _) = server_and_children(&spans);
    assert_eq!(
        str_attr(server, "reasoning_gateway.budget.action").as_deref(),
        Some("forced_answer"),
        "{server:#?}"
    );
    // A barrier: an ordinary answer on another route is stored; inserts are embedded in the
    // order they were asked for, so once it is in, anything the forced answer queued is too.
    let plain = reqwest::Client::new()
        .post(format!("{}/chat/completions", gw.base_url()))
        .bearer_auth("sk-budget")
        .json(&json!({"model": "think", "messages": [{"role": "user", "content": "2+2?"}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(plain.status(), 200);
    gw.wait_for_metric(
        "reasoning_gateway_cache_inserts_total{route=\"plain\"}",
        1.0,
        Duration::from_secs(20),
    )
    .await;
    // The same problem again: the forced answer was not stored, so it goes upstream.
    let (again, _) = ask("00-0af7651916cd43dd8448eb211c80319d-b7ad6b7169203331-01").await;
    assert_eq!(again, "miss");
    let metrics = gw.admin_get("/metrics").await;
    assert_eq!(
        metric_value(
            &metrics,
            "reasoning_gateway_cache_inserts_total{route=\"forced\"}"
        )
        .unwrap_or(0.0),
        0.0,
        "{metrics}"
    );
}
