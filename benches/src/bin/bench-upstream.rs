//! A fast scripted OpenAI upstream for load tests (loopback only): every POST is answered with a
//! reasoning completion, streamed as SSE when the body says `"stream":true`, else as JSON.
//!
//! `bench-upstream PORT [TOKENS] [PACE_US]`: TOKENS tokens per answer (half reasoning in
//! `<think>` tags, half answer), PACE_US microseconds between streamed tokens.

use std::convert::Infallible;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, StreamBody};
use hyper::body::Frame;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;

type Body = http_body_util::combinators::BoxBody<Bytes, Infallible>;

fn tokens(n: usize) -> Vec<String> {
    let mut t = vec!["<think>".to_string()];
    t.extend((0..n / 2).map(|i| format!("step {i} ")));
    t.push("</think>".into());
    t.extend((0..n - n / 2).map(|i| format!("word{i} ")));
    t
}

fn chunk(content: &str) -> String {
    let v = serde_json::json!({"id":"chatcmpl-bench","object":"chat.completion.chunk","created":1,"model":"bench",
        "choices":[{"index":0,"delta":{"content":content},"finish_reason":null}]});
    format!("data: {v}\n\n")
}

async fn handle(
    req: Request<hyper::body::Incoming>,
    n: usize,
    pace: Duration,
) -> Result<Response<Body>, Infallible> {
    let body = req
        .into_body()
        .collect()
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default();
    let stream = memchr_stream(&body);
    if !stream {
        let text: String = tokens(n).concat();
        let v = serde_json::json!({"id":"chatcmpl-bench","object":"chat.completion","created":1,"model":"bench",
            "choices":[{"index":0,"message":{"role":"assistant","content":text},"finish_reason":"stop"}],
            "usage":{"prompt_tokens":10,"completion_tokens":n,"total_tokens":n+10}});
        let bytes = Bytes::from(serde_json::to_vec(&v).unwrap_or_default());
        return Ok(Response::builder()
            .header("content-type", "application/json")
            .body(
                http_body_util::Full::new(bytes)
                    .map_err(|e| match e {})
                    .boxed(),
            )
            .unwrap_or_default());
    }
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<Frame<Bytes>, Infallible>>(16);
    tokio::spawn(async move {
        for t in tokens(n) {
            if !pace.is_zero() {
                tokio::time::sleep(pace).await;
            }
            if tx
                .send(Ok(Frame::data(Bytes::from(chunk(&t)))))
                .await
                .is_err()
            {
                return;
            }
        }
        let end = serde_json::json!({"id":"chatcmpl-bench","object":"chat.completion.chunk","created":1,"model":"bench",
            "choices":[{"index":0,"delta":{},"finish_reason":"stop"}]});
        let usage = serde_json::json!({"id":"chatcmpl-bench","object":"chat.completion.chunk","created":1,"model":"bench",
            "choices":[],"usage":{"prompt_tokens":10,"completion_tokens":n,"total_tokens":n+10}});
        let _ = tx
            .send(Ok(Frame::data(Bytes::from(format!(
                "data: {end}\n\ndata: {usage}\n\ndata: [DONE]\n\n"
            )))))
            .await;
    });
    let s = tokio_stream_from(rx);
    Ok(Response::builder()
        .header("content-type", "text/event-stream")
        .body(StreamBody::new(s).boxed())
        .unwrap_or_default())
}

fn memchr_stream(body: &[u8]) -> bool {
    body.windows(13).any(|w| w == b"\"stream\":true")
}

fn tokio_stream_from(
    mut rx: tokio::sync::mpsc::Receiver<Result<Frame<Bytes>, Infallible>>,
) -> impl futures_core::Stream<Item = Result<Frame<Bytes>, Infallible>> {
    futures_util::stream::poll_fn(move |cx| rx.poll_recv(cx))
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let port: u16 = args.get(1).and_then(|p| p.parse().ok()).unwrap_or(18000);
    let n: usize = args.get(2).and_then(|p| p.parse().ok()).unwrap_or(64);
    let pace = Duration::from_micros(args.get(3).and_then(|p| p.parse().ok()).unwrap_or(0));
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port)).await?;
    loop {
        let (stream, _) = listener.accept().await?;
        let _ = stream.set_nodelay(true);
        tokio::spawn(async move {
            let svc = hyper::service::service_fn(move |req| handle(req, n, pace));
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), svc)
                .await;
        });
    }
}
