//! A scripted OpenAI-compatible upstream on loopback. Behaviour is chosen by the request's model:
//!
//! | model           | behaviour                                                                 |
//! |-----------------|---------------------------------------------------------------------------|
//! | `think`         | reasoning in `<think>` tags, streamed one token per SSE event, or JSON    |
//! | `think-bytes`   | the same stream written one byte per TCP write                            |
//! | `split-fields`  | reasoning already split into `reasoning_content` and `reasoning`          |
//! | `thinking-tags` | [`THINKING_TAGS_TOKENS`]: reasoning in `<thinking>` tags (stream or JSON) |
//! | `answer-first`  | [`ANSWER_FIRST_TOKENS`]: answer text before `<think>` (stream or JSON)   |
//! | `slow`          | like `think`, 30 ms between events                                        |
//! | `disconnect`    | a few events, then the connection is dropped mid-stream                   |
//! | `error500`      | HTTP 500 with an OpenAI error body                                        |
//! | `garbage`       | bytes that are not HTTP, then close                                       |
//! | `gated`         | 12 reasoning steps streamed, then held until [`FakeUpstream::open_gate`]; |
//! |                 | a client that leaves meanwhile is counted in `gated_cancels`              |
//! | `drop-reused`   | echo, and the connection's keep-alive then expires: the next request on  |
//! |                 | it finds it closed with the request unread (reset), counted              |
//! | `die-after-read`| reads the whole request, then closes without answering (a crash while   |
//! |                 | generating), counted in `died`                                            |
//! | `tool`          | reasoning, then a `get_weather` tool call; once the request carries the   |
//! |                 | tool's result (a `tool` message), the `think` reasoning and answer        |
//! | `echo-chat`     | the echo below, with the request body, as a chat completion's content     |
//! | `budget-long`   | [`BUDGET_REASONING_TOKENS`] reasoning tokens `r0 `… then `</think>Too late.`; |
//! |                 | a continuation (`continue_final_message`) answers ` 42.` with usage       |
//! | `budget-early`  | `<think>short idea.</think>Answer A.`; a continuation of open reasoning   |
//! |                 | streams ` more thought</think>\n\nAnswer B.` Continuations are recorded in |
//! |                 | `continuations`                                                           |
//! | anything else   | echo: JSON describing what arrived (body length, checksum, model, auth)   |
//!
//! `POST /v1/responses` and `POST /v1/messages` are served natively (an upstream with `api:
//! [chat, responses, messages]`): reasoning split by the server itself, `think` and `tool` as
//! above, ids `resp_upstream…`/`msg_upstream…`; counted in `native`. Streams carry the reasoning
//! and answer of `think` a few tokens per event. A Responses `previous_response_id` is accepted
//! (the server stores responses) and recorded in `native_previous`.
//!
//! Every response carries `x-upstream-id` so tests can tell endpoints apart.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use serde_json::{json, Value};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpListener;

/// A connection the fake upstream serves: plain TCP or TLS over it.
pub trait Conn: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Conn for T {}

/// Tokens of the reasoning fixture: tags split across events on purpose.
pub const THINK_TOKENS: &[&str] = &[
    "<th",
    "ink>",
    "Let me add",
    " 2 and 2",
    ".\n\nWait, ",
    "check: 4",
    ".</",
    "think",
    ">\n\n",
    "The answer",
    " is 4",
    " ✓",
];
/// Tokens of the analysis fixture: 3 steps, 2 self-corrections, an answer that is not JSON.
pub const ANALYSED_TOKENS: &[&str] = &[
    "<think>",
    "Step 1: add 2",
    " and 2.\n\n",
    "Wait, check",
    " again. Actually,",
    " it is 4.\n\n",
    "Step 2: the",
    " answer is 4.",
    "</think>",
    "\n\n{\"answer\": 4",
];

/// The id of the `tool` model's call.
pub const TOOL_CALL_ID: &str = "call_weather_1";
/// Reasoning in `<thinking>` tags, split across events; a literal `<think>` inside.
pub const THINKING_TAGS_TOKENS: &[&str] = &[
    "<thin",
    "king>",
    "Step 1: 2+2",
    " uses <think>",
    " as text.\n\nWait, ",
    "it is 4.</thin",
    "king>",
    "\n\nFour",
];
/// Answer text before the opening tag, as some models emit it.
pub const ANSWER_FIRST_TOKENS: &[&str] = &["Sure.", "<think>", "checking", "</think>", "Done."];

/// Reasoning tokens the `budget-long` model streams before it would close its reasoning.
pub const BUDGET_REASONING_TOKENS: usize = 40;

/// The reasoning in [`THINK_TOKENS`].
pub const THINK_REASONING: &str = "Let me add 2 and 2.\n\nWait, check: 4.";
/// The answer in [`THINK_TOKENS`].
pub const THINK_ANSWER: &str = "The answer is 4 ✓";

/// A running fake upstream.
pub struct FakeUpstream {
    /// Where it listens.
    pub addr: SocketAddr,
    /// Requests handled so far.
    pub requests: Arc<AtomicUsize>,
    /// `gated` streams whose client went away while held.
    pub gated_cancels: Arc<AtomicUsize>,
    /// `gated` streams currently held at the gate.
    pub gated_waiting: Arc<AtomicUsize>,
    /// Requests that arrived on a connection whose keep-alive had expired (after a
    /// `drop-reused` answer), which was closed with them unread.
    pub dropped_reused: Arc<AtomicUsize>,
    /// `die-after-read` requests read whole (each one a generation the upstream started).
    pub died: Arc<AtomicUsize>,
    /// Of those, the ones that arrived on a reused connection.
    pub died_reused: Arc<AtomicUsize>,
    /// Requests served natively on `/v1/responses` or `/v1/messages`.
    pub native: Arc<AtomicUsize>,
    /// `previous_response_id` values native Responses requests carried.
    pub native_previous: Arc<std::sync::Mutex<Vec<String>>>,
    /// The `traceparent` header of each request (none: not recorded), in arrival order.
    pub traceparents: Arc<std::sync::Mutex<Vec<String>>>,
    /// Bodies of the continuation requests (`continue_final_message: true`) received.
    pub continuations: Arc<std::sync::Mutex<Vec<Value>>>,
    gate: tokio::sync::watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
    stop: tokio::sync::watch::Sender<bool>,
}

impl FakeUpstream {
    /// Starts one on an ephemeral loopback port; `id` is echoed in `x-upstream-id`.
    pub async fn start(id: &str) -> FakeUpstream {
        Self::start_with(id, None).await
    }

    /// The same behind TLS: every connection is a TLS handshake with `acceptor` first (an HTTPS
    /// backend, a hosted API, a TLS-terminating ingress).
    pub async fn start_tls(id: &str, acceptor: tokio_rustls::TlsAcceptor) -> FakeUpstream {
        Self::start_with(id, Some(acceptor)).await
    }

    async fn start_with(id: &str, tls: Option<tokio_rustls::TlsAcceptor>) -> FakeUpstream {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind loopback");
        let addr = listener.local_addr().expect("local addr");
        let requests = Arc::new(AtomicUsize::new(0));
        let (gate, gate_rx) = tokio::sync::watch::channel(false);
        let shared = Shared {
            count: requests.clone(),
            cancels: Arc::new(AtomicUsize::new(0)),
            waiting: Arc::new(AtomicUsize::new(0)),
            dropped: Arc::new(AtomicUsize::new(0)),
            died: Arc::new(AtomicUsize::new(0)),
            died_reused: Arc::new(AtomicUsize::new(0)),
            native: Arc::new(AtomicUsize::new(0)),
            native_previous: Arc::default(),
            traceparents: Arc::default(),
            continuations: Arc::default(),
            gate: gate_rx,
        };
        let traceparents = shared.traceparents.clone();
        let native = shared.native.clone();
        let native_previous = shared.native_previous.clone();
        let continuations = shared.continuations.clone();
        let (gated_cancels, gated_waiting) = (shared.cancels.clone(), shared.waiting.clone());
        let dropped_reused = shared.dropped.clone();
        let (died, died_reused) = (shared.died.clone(), shared.died_reused.clone());
        let id = id.to_string();
        let (stop, stopped) = tokio::sync::watch::channel(false);
        let task = tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let (id, shared, mut stopped) = (id.clone(), shared.clone(), stopped.clone());
                let tls = tls.clone();
                tokio::spawn(async move {
                    let _ = stream.set_nodelay(true);
                    let serve = async {
                        match tls {
                            None => serve_connection(stream, &id, &shared).await,
                            Some(acceptor) => {
                                serve_connection(acceptor.accept(stream).await?, &id, &shared).await
                            }
                        }
                    };
                    tokio::select! {
                        _ = stopped.changed() => {}
                        _ = serve => {}
                    }
                });
            }
        });
        FakeUpstream {
            addr,
            requests,
            gated_cancels,
            gated_waiting,
            dropped_reused,
            died,
            died_reused,
            native,
            native_previous,
            traceparents,
            continuations,
            gate,
            task,
            stop,
        }
    }

    /// Lets every held and future `gated` stream finish.
    pub fn open_gate(&self) {
        let _ = self.gate.send(true);
    }

    /// Stops listening and drops every open connection, like a crashed server.
    pub fn stop(&self) {
        self.task.abort();
        let _ = self.stop.send(true);
    }
}

impl Drop for FakeUpstream {
    fn drop(&mut self) {
        self.stop();
    }
}

#[derive(Clone)]
struct Shared {
    count: Arc<AtomicUsize>,
    cancels: Arc<AtomicUsize>,
    waiting: Arc<AtomicUsize>,
    dropped: Arc<AtomicUsize>,
    died: Arc<AtomicUsize>,
    died_reused: Arc<AtomicUsize>,
    native: Arc<AtomicUsize>,
    native_previous: Arc<std::sync::Mutex<Vec<String>>>,
    traceparents: Arc<std::sync::Mutex<Vec<String>>>,
    continuations: Arc<std::sync::Mutex<Vec<Value>>>,
    gate: tokio::sync::watch::Receiver<bool>,
}

struct Request {
    path: String,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

async fn read_request<S: Conn>(
    stream: &mut S,
    buf: &mut Vec<u8>,
) -> std::io::Result<Option<Request>> {
    let header_end = loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i;
        }
        let mut tmp = [0u8; 65536];
        let n = stream.read(&mut tmp).await?;
        if n == 0 {
            return Ok(None);
        }
        buf.extend_from_slice(&tmp[..n]);
    };
    let head = String::from_utf8_lossy(&buf[..header_end]).to_string();
    let mut lines = head.split("\r\n");
    let path = lines
        .next()
        .unwrap_or("")
        .split(' ')
        .nth(1)
        .unwrap_or("/")
        .to_string();
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    let len: usize = headers
        .iter()
        .find(|(k, _)| k == "content-length")
        .and_then(|(_, v)| v.parse().ok())
        .unwrap_or(0);
    buf.drain(..header_end + 4);
    while buf.len() < len {
        let mut tmp = [0u8; 65536];
        let n = stream.read(&mut tmp).await?;
        if n == 0 {
            return Ok(None);
        }
        buf.extend_from_slice(&tmp[..n]);
    }
    let body = buf.drain(..len).collect();
    Ok(Some(Request {
        path,
        headers,
        body,
    }))
}

async fn serve_connection<S: Conn>(
    mut stream: S,
    id: &str,
    shared: &Shared,
) -> std::io::Result<()> {
    let count = &shared.count;
    let mut buf = Vec::new();
    let mut answered_here = 0;
    let mut keepalive_expired = false;
    loop {
        if keepalive_expired {
            // Like a server whose keep-alive timeout fired as the request arrived: it closes
            // with the request unread, so its kernel resets the connection.
            let mut first = [0u8; 1];
            if stream.read(&mut first).await? > 0 {
                shared.dropped.fetch_add(1, Ordering::Relaxed);
            }
            return Ok(());
        }
        let Some(req) = read_request(&mut stream, &mut buf).await? else {
            break;
        };
        count.fetch_add(1, Ordering::Relaxed);
        if req.path == "/health" {
            write_json(&mut stream, id, 200, &json!({"status": "ok"})).await?;
            continue;
        }
        if let Some((_, v)) = req.headers.iter().find(|(k, _)| k == "traceparent") {
            if let Ok(mut seen) = shared.traceparents.lock() {
                seen.push(v.clone());
            }
        }
        let body: Value = serde_json::from_slice(&req.body).unwrap_or(Value::Null);
        let model = body["model"].as_str().unwrap_or("").to_string();
        if req.path == "/v1/responses" || req.path == "/v1/messages" {
            native_api(&mut stream, id, &req.path, &req.body, shared).await?;
            shared.native.fetch_add(1, Ordering::SeqCst);
            continue;
        }
        if req.path == "/v1/embeddings" {
            // One 4-d vector per input, from the input's length (enough to check the shape).
            let inputs = match &body["input"] {
                Value::Array(a) => a.clone(),
                other => vec![other.clone()],
            };
            let data: Vec<Value> = inputs
                .iter()
                .enumerate()
                .map(|(i, t)| {
                    let n = t.as_str().map_or(0, str::len) as f64;
                    json!({"object": "embedding", "index": i, "embedding": [n, 1.0, 0.0, -1.0]})
                })
                .collect();
            let resp = json!({"object": "list", "model": model, "data": data,
                "usage": {"prompt_tokens": inputs.len(), "total_tokens": inputs.len()},
                "received_body_len": req.body.len()});
            write_json(&mut stream, id, 200, &resp).await?;
            continue;
        }
        if model == "die-after-read" {
            shared.died.fetch_add(1, Ordering::SeqCst);
            if answered_here > 0 {
                shared.died_reused.fetch_add(1, Ordering::SeqCst);
            }
            return Ok(());
        }
        keepalive_expired = model == "drop-reused";
        answered_here += 1;
        let stream_wanted = body["stream"].as_bool().unwrap_or(false);
        let include_usage = body["stream_options"]["include_usage"]
            .as_bool()
            .unwrap_or(false);
        match model.as_str() {
            "budget-long" | "budget-early" => {
                let continued = body["continue_final_message"] == json!(true);
                if continued {
                    if let Ok(mut c) = shared.continuations.lock() {
                        c.push(body.clone());
                    }
                }
                let prefix = body["messages"]
                    .as_array()
                    .and_then(|m| m.last())
                    .and_then(|m| m["content"].as_str())
                    .unwrap_or("")
                    .to_string();
                let tokens: Vec<String> = match (model.as_str(), continued) {
                    ("budget-long", false) => std::iter::once("<think>".to_string())
                        .chain((0..BUDGET_REASONING_TOKENS).map(|i| format!("r{i} ")))
                        .chain(["</think>".into(), "Too late.".into()])
                        .collect(),
                    ("budget-long", true) => vec![" 42".into(), ".".into()],
                    (_, false) => ["<think>", "short", " idea.", "</think>", "Answer A."]
                        .map(String::from)
                        .to_vec(),
                    (_, true) => [" more", " thought", "</think>", "\n\nAnswer B."]
                        .map(String::from)
                        .to_vec(),
                };
                let events = tokens
                    .iter()
                    .map(|t| chunk(&model, json!({"content": t}), None))
                    .collect();
                // The prompt of a continuation holds what was generated before it (the `rN`
                // tokens; the gateway's closing tag and bridge are not counted).
                let generated = prefix
                    .split_whitespace()
                    .map(|w| w.trim_start_matches("<think>"))
                    .filter(|w| {
                        w.len() > 1
                            && w.starts_with('r')
                            && w[1..].bytes().all(|b| b.is_ascii_digit())
                    })
                    .count() as u64;
                let usage = include_usage.then(|| {
                    let completion = tokens.len() as u64;
                    json!({"prompt_tokens": 5 + generated, "completion_tokens": completion,
                        "total_tokens": 5 + generated + completion})
                });
                let delivery = Delivery {
                    usage,
                    ..Delivery::whole(include_usage)
                };
                // A client that hung up (the gateway stopping the generation) is no error here.
                let _ = write_stream(&mut stream, id, &model, events, delivery).await;
                if !continued {
                    return Ok(());
                }
            }
            "gated" => {
                write_head(&mut stream, id).await?;
                let mut tokens = vec!["<think>".to_string()];
                for i in 1..=12 {
                    tokens.push(format!("Step {i}: work"));
                    tokens.push(format!(" on part {i}.\n\n"));
                }
                for t in &tokens {
                    let ev = format!("data: {}\n\n", chunk(&model, json!({"content": t}), None));
                    write_chunk(&mut stream, ev.as_bytes()).await?;
                }
                let mut gate = shared.gate.clone();
                shared.waiting.fetch_add(1, Ordering::SeqCst);
                let mut probe = [0u8; 1];
                let opened = tokio::select! {
                    r = gate.wait_for(|open| *open) => r.is_ok(),
                    // The client closed the connection (a read returns 0 bytes or fails).
                    _ = stream.read(&mut probe) => false,
                };
                shared.waiting.fetch_sub(1, Ordering::SeqCst);
                if !opened {
                    shared.cancels.fetch_add(1, Ordering::SeqCst);
                    return Ok(());
                }
                let end = format!(
                    "data: {}\n\ndata: {}\n\ndata: [DONE]\n\n",
                    chunk(
                        &model,
                        json!({"content": "</think>The answer is 42."}),
                        None
                    ),
                    chunk(&model, json!({}), Some("stop"))
                );
                write_chunk(&mut stream, end.as_bytes()).await?;
                stream.write_all(b"0\r\n\r\n").await?;
            }
            "thinking-tags" | "answer-first" if stream_wanted => {
                let tokens = if model == "answer-first" {
                    ANSWER_FIRST_TOKENS
                } else {
                    THINKING_TAGS_TOKENS
                };
                let events = content_events(&model, tokens);
                write_stream(
                    &mut stream,
                    id,
                    &model,
                    events,
                    Delivery::whole(include_usage),
                )
                .await?;
            }
            "thinking-tags" | "answer-first" => {
                let tokens = if model == "answer-first" {
                    ANSWER_FIRST_TOKENS
                } else {
                    THINKING_TAGS_TOKENS
                };
                let message = json!({"role": "assistant", "content": tokens.concat()});
                write_json(&mut stream, id, 200, &completion(&model, message)).await?;
            }
            "analysed" => {
                let events = content_events(&model, ANALYSED_TOKENS);
                write_stream(
                    &mut stream,
                    id,
                    &model,
                    events,
                    Delivery::whole(include_usage),
                )
                .await?;
            }
            "stall" | "long" | "loop" => {
                let (tokens, pause_after): (Vec<String>, Option<usize>) = match model.as_str() {
                    // 300 ms of silence in the middle of the reasoning.
                    "stall" => (
                        [
                            "<think>",
                            "first",
                            " half",
                            "second half",
                            "</think>",
                            "Answer.",
                        ]
                        .map(String::from)
                        .to_vec(),
                        Some(3),
                    ),
                    // 60 reasoning tokens.
                    "long" => (
                        std::iter::once("<think>".to_string())
                            .chain((0..60).map(|i| format!("t{i} ")))
                            .chain(["</think>".into(), "Done.".into()])
                            .collect(),
                        None,
                    ),
                    // The same paragraph over and over.
                    _ => (
                        std::iter::once("<think>".to_string())
                            .chain(
                                (0..40).map(|_| "I will try the same idea again.\n\n".to_string()),
                            )
                            .chain(["</think>".into(), "Done.".into()])
                            .collect(),
                        None,
                    ),
                };
                write_head(&mut stream, id).await?;
                for (i, t) in tokens.iter().enumerate() {
                    if Some(i) == pause_after {
                        tokio::time::sleep(Duration::from_millis(300)).await;
                    }
                    let ev = format!("data: {}\n\n", chunk(&model, json!({"content": t}), None));
                    write_chunk(&mut stream, ev.as_bytes()).await?;
                }
                let end = format!(
                    "data: {}\n\ndata: [DONE]\n\n",
                    chunk(&model, json!({}), Some("stop"))
                );
                write_chunk(&mut stream, end.as_bytes()).await?;
                stream.write_all(b"0\r\n\r\n").await?;
            }
            "think" | "slow" | "think-bytes" if stream_wanted => {
                let pace = if model == "slow" {
                    Duration::from_millis(30)
                } else {
                    Duration::ZERO
                };
                let events = content_events(&model, THINK_TOKENS);
                let delivery = Delivery {
                    pace,
                    byte_by_byte: model == "think-bytes",
                    ..Delivery::whole(include_usage)
                };
                write_stream(&mut stream, id, &model, events, delivery).await?;
            }
            "think" if req.path == "/v1/completions" => {
                let v = json!({"id": "cmpl-fake", "object": "text_completion", "created": 1, "model": model,
                    "choices": [{"index": 0, "text": THINK_TOKENS.concat(), "finish_reason": "stop"}]});
                write_json(&mut stream, id, 200, &v).await?;
            }
            "think" | "slow" | "think-bytes" => {
                let text: String = THINK_TOKENS.concat();
                write_json(
                    &mut stream,
                    id,
                    200,
                    &completion(&model, json!({"role": "assistant", "content": text})),
                )
                .await?;
            }
            "tool" => {
                let answered = body["messages"]
                    .as_array()
                    .is_some_and(|m| m.iter().any(|m| m["role"] == "tool"));
                let (events, message, finish) = if answered {
                    let text: String = THINK_TOKENS.concat();
                    (
                        content_events(&model, THINK_TOKENS),
                        json!({"role": "assistant", "content": text}),
                        "stop",
                    )
                } else {
                    let call = |args: &str, first: bool| {
                        let mut c = json!({"index": 0, "function": {"arguments": args}});
                        if first {
                            c["id"] = json!(TOOL_CALL_ID);
                            c["type"] = json!("function");
                            c["function"]["name"] = json!("get_weather");
                        }
                        c
                    };
                    let events = vec![
                        chunk(
                            &model,
                            json!({"content": "<think>I need the weather.</think>"}),
                            None,
                        ),
                        chunk(
                            &model,
                            json!({"tool_calls": [call("{\"city\": ", true)]}),
                            None,
                        ),
                        chunk(
                            &model,
                            json!({"tool_calls": [call("\"Paris\"}", false)]}),
                            None,
                        ),
                    ];
                    let message = json!({"role": "assistant",
                        "content": "<think>I need the weather.</think>",
                        "tool_calls": [{"id": TOOL_CALL_ID, "type": "function",
                            "function": {"name": "get_weather", "arguments": "{\"city\": \"Paris\"}"}}]});
                    (events, message, "tool_calls")
                };
                if stream_wanted {
                    let delivery = Delivery {
                        finish,
                        ..Delivery::whole(include_usage)
                    };
                    write_stream(&mut stream, id, &model, events, delivery).await?;
                } else {
                    let mut v = completion(&model, message);
                    v["choices"][0]["finish_reason"] = json!(finish);
                    write_json(&mut stream, id, 200, &v).await?;
                }
            }
            "split-fields" if stream_wanted => {
                let mut events = vec![
                    chunk(&model, json!({"role": "assistant", "content": ""}), None),
                    chunk(
                        &model,
                        json!({"reasoning_content": "Thinking", "reasoning": "Thinking"}),
                        None,
                    ),
                    chunk(
                        &model,
                        json!({"reasoning_content": " hard.", "reasoning": " hard."}),
                        None,
                    ),
                ];
                events.push(chunk(&model, json!({"content": "Done."}), None));
                write_stream(
                    &mut stream,
                    id,
                    &model,
                    events,
                    Delivery::whole(include_usage),
                )
                .await?;
            }
            "split-fields" => {
                let msg =
                    json!({"role": "assistant", "content": "Done.", "reasoning": "Thinking hard."});
                write_json(&mut stream, id, 200, &completion(&model, msg)).await?;
            }
            "disconnect" => {
                let events = content_events(&model, &THINK_TOKENS[..4]);
                let delivery = Delivery {
                    complete: false,
                    ..Delivery::whole(include_usage)
                };
                write_stream(&mut stream, id, &model, events, delivery).await?;
                return Ok(());
            }
            "error500" => {
                let err = json!({"error": {"message": "backend exploded", "type": "server_error", "param": null, "code": "boom"}});
                write_json(&mut stream, id, 500, &err).await?;
            }
            "garbage" => {
                stream.write_all(b"this is not HTTP at all\r\n\r\n").await?;
                return Ok(());
            }
            _ => {
                let checksum: u64 = req.body.iter().map(|&b| b as u64).sum();
                let auth = req
                    .headers
                    .iter()
                    .find(|(k, _)| k == "authorization")
                    .map(|(_, v)| v.clone());
                let rid = req
                    .headers
                    .iter()
                    .find(|(k, _)| k == "x-request-id")
                    .map(|(_, v)| v.clone());
                let expect = req
                    .headers
                    .iter()
                    .find(|(k, _)| k == "expect")
                    .map(|(_, v)| v.clone());
                let echo = json!({"echo": {"body_len": req.body.len(), "checksum": checksum, "model": model,
                    "authorization": auth, "request_id": rid, "path": req.path, "expect": expect}});
                if model == "echo-chat" {
                    // The same report as a chat answer (with the request body), for translated APIs.
                    let mut echo = echo;
                    echo["echo"]["body"] = body.clone();
                    let text = echo.to_string();
                    let msg = json!({"role": "assistant", "content": text});
                    write_json(&mut stream, id, 200, &completion(&model, msg)).await?;
                    continue;
                }
                write_json(&mut stream, id, 200, &echo).await?;
            }
        }
    }
    Ok(())
}

/// A native Responses or Messages answer: the request decoded as the gateway would, the
/// scripted chat answer (reasoning already split, as reasoning servers do), encoded back.
async fn native_api<S: Conn>(
    stream: &mut S,
    id: &str,
    path: &str,
    raw: &[u8],
    shared: &Shared,
) -> std::io::Result<()> {
    use reasoning_gateway::api::{decode, Api, Codec, Meta};
    let api = if path == "/v1/responses" {
        Api::Responses
    } else {
        Api::Messages
    };
    // This server stores responses: an earlier one is recorded and the request then served
    // like any other.
    let mut owned = raw.to_vec();
    if let (Api::Responses, Ok(Value::Object(mut body))) = (api, serde_json::from_slice(raw)) {
        if let Some(Value::String(prev)) = body.remove("previous_response_id") {
            if let Ok(mut seen) = shared.native_previous.lock() {
                seen.push(prev);
            }
            owned = serde_json::to_vec(&body).unwrap_or_default();
        }
    }
    let raw = owned.as_slice();
    use reasoning_gateway::api::messages::{error_body, verify_signatures};
    let t = match decode(api, raw).and_then(|t| verify_signatures(&t).map(|()| t)) {
        Ok(t) => t,
        Err(e) => {
            let body = match api {
                Api::Messages => error_body(e.status, &e.body()),
                _ => e.body(),
            };
            let v = serde_json::from_slice(&body).unwrap_or(Value::Null);
            return write_json(stream, id, e.status, &v).await;
        }
    };
    let req = Value::Object(t.chat.clone());
    let model = req["model"].as_str().unwrap_or("").to_string();
    let answered = req["messages"]
        .as_array()
        .is_some_and(|m| m.iter().any(|m| m["role"] == "tool"));
    let (message, finish) = if model == "tool" && !answered {
        (
            json!({"role": "assistant", "reasoning_content": "I need the weather.", "content": null,
            "tool_calls": [{"id": TOOL_CALL_ID, "type": "function",
                "function": {"name": "get_weather", "arguments": "{\"city\": \"Paris\"}"}}]}),
            "tool_calls",
        )
    } else {
        (
            json!({"role": "assistant", "reasoning_content": THINK_REASONING, "content": THINK_ANSWER}),
            "stop",
        )
    };
    let mut chat = completion(&model, message);
    chat["choices"][0]["finish_reason"] = json!(finish);
    chat["usage"]["completion_tokens_details"] = json!({"reasoning_tokens": 7});
    let stream_wanted = req["stream"].as_bool().unwrap_or(false);
    let meta = Meta {
        id: "upstream1".into(),
        model: model.clone(),
        created: 1,
        show_reasoning: t.show_reasoning,
        stop_sequences: Vec::new(),
        summary: t.reasoning_summary,
    };
    let mut codec = Codec::new(api, meta, stream_wanted);
    let out = if stream_wanted && finish == "stop" {
        // A stream a few tokens per event, as a server writes it.
        let mut sse = String::new();
        let reasoning = ["Let me add", " 2 and 2", ".\n\nWait, ", "check: 4", "."];
        for r in reasoning {
            sse.push_str(&format!(
                "data: {}\n\n",
                chunk(&model, json!({"reasoning_content": r}), None)
            ));
        }
        for (i, t) in ["The answer", " is 4", " ✓"].iter().enumerate() {
            let finish = (i == 2).then_some("stop");
            sse.push_str(&format!(
                "data: {}\n\n",
                chunk(&model, json!({"content": t}), finish)
            ));
        }
        let usage = json!({"choices": [], "usage": chat["usage"]});
        sse.push_str(&format!("data: {usage}\n\ndata: [DONE]\n\n"));
        codec.whole(200, "text/event-stream", sse.as_bytes())
    } else {
        codec.whole(
            200,
            "application/json",
            &serde_json::to_vec(&chat).unwrap_or_default(),
        )
    };
    let content_type = codec.content_type(200);
    let head = format!(
        "HTTP/1.1 200 OK\r\ncontent-type: {content_type}\r\ncontent-length: {}\r\nx-upstream-id: {id}\r\n\r\n",
        out.len()
    );
    stream.write_all(head.as_bytes()).await?;
    stream.write_all(&out).await
}

/// One chat chunk per content token.
fn content_events(model: &str, tokens: &[&str]) -> Vec<Value> {
    tokens
        .iter()
        .map(|t| chunk(model, json!({"content": t}), None))
        .collect()
}

fn chunk(model: &str, delta: Value, finish: Option<&str>) -> Value {
    json!({"id": "chatcmpl-fake", "object": "chat.completion.chunk", "created": 1, "model": model,
        "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]})
}

fn completion(model: &str, message: Value) -> Value {
    json!({"id": "chatcmpl-fake", "object": "chat.completion", "created": 1, "model": model,
        "choices": [{"index": 0, "message": message, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 5, "completion_tokens": 12, "total_tokens": 17}})
}

async fn write_json<S: Conn>(
    stream: &mut S,
    id: &str,
    status: u16,
    body: &Value,
) -> std::io::Result<()> {
    let body = serde_json::to_vec(body).unwrap_or_default();
    let head = format!(
        "HTTP/1.1 {status} X\r\ncontent-type: application/json\r\ncontent-length: {}\r\nx-upstream-id: {id}\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes()).await?;
    stream.write_all(&body).await
}

async fn write_head<S: Conn>(stream: &mut S, id: &str) -> std::io::Result<()> {
    let head = format!("HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\nx-upstream-id: {id}\r\n\r\n");
    stream.write_all(head.as_bytes()).await
}

async fn write_chunk<S: Conn>(stream: &mut S, piece: &[u8]) -> std::io::Result<()> {
    stream
        .write_all(format!("{:x}\r\n", piece.len()).as_bytes())
        .await?;
    stream.write_all(piece).await?;
    stream.write_all(b"\r\n").await?;
    stream.flush().await
}

/// How a scripted stream is delivered.
#[derive(Clone)]
struct Delivery {
    /// Pause between events.
    pace: Duration,
    /// One byte per TCP write.
    byte_by_byte: bool,
    /// Finish chunk, usage (when asked) and `[DONE]`, then the terminating chunk; else the
    /// connection is cut.
    complete: bool,
    /// The request asked for `stream_options.include_usage`.
    include_usage: bool,
    /// `finish_reason` of the last chunk.
    finish: &'static str,
    /// The usage object sent when `include_usage` (default: 5 prompt, 12 completion tokens).
    usage: Option<Value>,
}

impl Delivery {
    /// Every event at once, properly ended.
    fn whole(include_usage: bool) -> Self {
        Delivery {
            pace: Duration::ZERO,
            byte_by_byte: false,
            complete: true,
            include_usage,
            finish: "stop",
            usage: None,
        }
    }
}

async fn write_stream<S: Conn>(
    stream: &mut S,
    id: &str,
    model: &str,
    events: Vec<Value>,
    d: Delivery,
) -> std::io::Result<()> {
    let Delivery {
        pace,
        byte_by_byte,
        complete,
        include_usage,
        finish,
        usage,
    } = d;
    write_head(stream, id).await?;
    let mut payloads: Vec<String> = vec![": keep-alive\r\n\r\n".to_string()];
    payloads.extend(events.iter().map(|e| format!("data: {e}\r\n\r\n")));
    if complete {
        payloads.push(format!(
            "data: {}\n\n",
            chunk(model, json!({}), Some(finish))
        ));
        if include_usage {
            let usage = json!({"id": "chatcmpl-fake", "object": "chat.completion.chunk", "created": 1, "model": model,
            "choices": [], "usage": usage.unwrap_or_else(|| json!({"prompt_tokens": 5, "completion_tokens": 12, "total_tokens": 17}))});
            payloads.push(format!("data: {usage}\n\n"));
        }
        payloads.push("data: [DONE]\n\n".to_string());
    }
    for p in payloads {
        let pieces: Vec<&[u8]> = if byte_by_byte {
            p.as_bytes().chunks(1).collect()
        } else {
            vec![p.as_bytes()]
        };
        for piece in pieces {
            write_chunk(stream, piece).await?;
        }
        if !pace.is_zero() {
            tokio::time::sleep(pace).await;
        }
    }
    if complete {
        stream.write_all(b"0\r\n\r\n").await?;
    } else {
        // Abrupt end: no terminating chunk; the socket closes when the caller returns.
        stream.shutdown().await?;
    }
    Ok(())
}
