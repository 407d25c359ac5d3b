//! The engine's OpenAI API on a loopback listener: `/v1/chat/completions`, `/v1/completions`,
//! `/v1/models`, `/health`.
//!
//! Generation always runs as a mistral.rs stream. A client that goes away makes the next write
//! fail, the response channel to mistral.rs is dropped, and mistral.rs cancels the sequence; a
//! non-streamed response keeps that property by sending JSON-legal whitespace while it waits.

use std::convert::Infallible;
use std::pin::Pin;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use http_body_util::{BodyExt, Limited};
use hyper::body::Incoming;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use mistralrs::{NormalRequest, Response as MrResponse};
use serde_json::{json, Map, Value};
use tokio::sync::mpsc;

use crate::error::EngineError;
use crate::load::Engine;
use crate::request::{parse, Api, Continuation, Generation};
use crate::stop::StopMatcher;
use either::Either;

const MAX_REQUEST_BYTES: usize = 16 * 1024 * 1024;
/// Tokens between whitespace heartbeats of a non-streamed response.
const HEARTBEAT_EVERY: usize = 8;

/// A response body fed from a channel; dropping it (client gone) closes the channel.
pub struct ChannelBody(mpsc::Receiver<Bytes>);

impl Body for ChannelBody {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        self.0.poll_recv(cx).map(|o| o.map(|b| Ok(Frame::data(b))))
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::default()
    }
}

type Resp = Response<ChannelBody>;

fn full(status: u16, content_type: &str, body: Vec<u8>) -> Resp {
    let (tx, rx) = mpsc::channel(1);
    let _ = tx.try_send(Bytes::from(body));
    Response::builder()
        .status(status)
        .header("content-type", content_type)
        .body(ChannelBody(rx))
        .unwrap_or_else(|_| Response::new(ChannelBody(mpsc::channel(1).1)))
}

fn error(e: &EngineError) -> Resp {
    full(e.status(), "application/json", e.body())
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// Serves until `shutdown` resolves.
pub async fn serve(
    engine: Arc<Engine>,
    listener: tokio::net::TcpListener,
    shutdown: impl std::future::Future<Output = ()>,
) {
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            _ = &mut shutdown => return,
            accepted = listener.accept() => {
                let Ok((stream, _)) = accepted else { continue };
                let _ = stream.set_nodelay(true);
                let engine = engine.clone();
                tokio::spawn(async move {
                    let svc = hyper::service::service_fn(move |req| {
                        let engine = engine.clone();
                        async move { Ok::<_, Infallible>(handle(engine, req).await) }
                    });
                    let _ = hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(stream), svc).await;
                });
            }
        }
    }
}

async fn handle(engine: Arc<Engine>, req: Request<Incoming>) -> Resp {
    let name = engine.options.served_model_name.clone();
    let api = match (req.method().as_str(), req.uri().path()) {
        ("GET", "/health") => {
            let active = engine.active.load(Ordering::Relaxed);
            let v = json!({"status": "ok", "model": name, "active_generations": active});
            return full(200, "application/json", serde_json::to_vec(&v).unwrap_or_default());
        }
        ("GET", "/v1/models") => {
            let v = json!({"object": "list", "data": [{"id": name, "object": "model", "created": 0, "owned_by": "reasoning-gateway-engine"}]});
            return full(200, "application/json", serde_json::to_vec(&v).unwrap_or_default());
        }
        ("POST", "/v1/chat/completions") => Api::Chat,
        ("POST", "/v1/completions") => Api::Completions,
        _ => return full(404, "application/json", br#"{"error":{"message":"not found","type":"invalid_request_error","param":null,"code":"unknown_url"}}"#.to_vec()),
    };
    let body = match Limited::new(req.into_body(), MAX_REQUEST_BYTES)
        .collect()
        .await
    {
        Ok(b) => b.to_bytes(),
        Err(_) => {
            return error(&EngineError::BadRequest {
                param: None,
                message: "the request body could not be read".into(),
            })
        }
    };
    let generation = match parse(api, &body, engine.options.max_context_tokens) {
        Ok(g) => g,
        Err(e) => return error(&e),
    };
    let (mut rx, prompt_tokens) = match start(&engine, &generation).await {
        Ok(started) => started,
        Err(e) => return error(&e),
    };
    // Wait for the first response so refusals (prompt too long, …) get a real status code.
    let first = match rx.recv().await {
        Some(MrResponse::ValidationError(e)) => {
            return error(&EngineError::BadRequest {
                param: None,
                message: e.to_string(),
            })
        }
        Some(MrResponse::InternalError(e)) => {
            return error(&EngineError::Generation(e.to_string()))
        }
        Some(MrResponse::ModelError(e, _)) | Some(MrResponse::CompletionModelError(e, _)) => {
            return error(&EngineError::Generation(e))
        }
        Some(r) => r,
        None => {
            return error(&EngineError::Generation(
                "the engine stopped before answering".into(),
            ))
        }
    };
    let (tx, body_rx) = mpsc::channel(32);
    let stream = generation.stream;
    let active = Active::new(engine.clone());
    tokio::spawn(async move {
        relay(first, rx, tx, api, generation, name, prompt_tokens).await;
        drop(active);
    });
    let content_type = if stream {
        "text/event-stream"
    } else {
        "application/json"
    };
    Response::builder()
        .status(200)
        .header("content-type", content_type)
        .header("cache-control", "no-cache")
        .body(ChannelBody(body_rx))
        .unwrap_or_else(|_| Response::new(ChannelBody(mpsc::channel(1).1)))
}

/// The prompt of a continuation as tokens: the earlier messages through the chat template with
/// the assistant's turn opened, then the final message's text as it is.
async fn continuation_tokens(engine: &Engine, c: &Continuation) -> Result<Vec<u32>, EngineError> {
    let mut tokens = tokenize(engine, Either::Left(c.messages.clone()), c.enable_thinking).await?;
    tokens.extend(tokenize(engine, Either::Right(c.prefix.clone()), None).await?);
    Ok(tokens)
}

async fn tokenize(
    engine: &Engine,
    text: Either<Vec<indexmap::IndexMap<String, mistralrs::MessageContent>>, String>,
    enable_thinking: Option<bool>,
) -> Result<Vec<u32>, EngineError> {
    let (tx, mut rx) = mpsc::channel(1);
    // Messages as mistral.rs renders a chat; raw text without special tokens (it continues).
    let messages = text.is_left();
    let request = mistralrs::Request::Tokenize(mistralrs::core::TokenizationRequest {
        text,
        tools: None,
        add_generation_prompt: messages,
        add_special_tokens: messages,
        enable_thinking,
        reasoning_effort: None,
        response: tx,
    });
    send(engine, request).await?;
    rx.recv()
        .await
        .ok_or_else(|| EngineError::Generation("the tokenizer did not answer".into()))?
        .map_err(|e| EngineError::Generation(e.to_string()))
}

/// Hands one request to the model's scheduler.
async fn send(engine: &Engine, request: mistralrs::Request) -> Result<(), EngineError> {
    let sender = engine
        .model
        .inner()
        .get_sender(None)
        .map_err(|e| EngineError::Generation(e.to_string()))?;
    sender
        .send(request)
        .await
        .map_err(|e| EngineError::Generation(e.to_string()))
}

/// Starts the generation; the prompt's token count when the engine counted it (continuations).
async fn start(
    engine: &Engine,
    g: &Generation,
) -> Result<(mpsc::Receiver<MrResponse>, Option<usize>), EngineError> {
    let (tx, rx) = mpsc::channel(64);
    let (messages, prompt_tokens) = match &g.continuation {
        None => (g.messages.clone(), None),
        Some(c) => {
            let tokens = continuation_tokens(engine, c).await?;
            let n = tokens.len();
            (mistralrs::RequestMessage::CompletionTokens(tokens), Some(n))
        }
    };
    let request = mistralrs::Request::Normal(Box::new(NormalRequest {
        messages,
        sampling_params: g.sampling.clone(),
        response: tx,
        return_logprobs: false,
        is_streaming: true,
        id: 0,
        constraint: mistralrs::Constraint::None,
        suffix: None,
        tools: None,
        tool_choice: None,
        logits_processors: None,
        return_raw_logits: false,
        web_search_options: None,
        model_id: None,
        truncate_sequence: false,
    }));
    send(engine, request).await?;
    Ok((rx, prompt_tokens))
}

/// Counts a generation in `Engine::active` while it is relayed.
struct Active(Arc<Engine>);

impl Active {
    fn new(engine: Arc<Engine>) -> Self {
        engine.active.fetch_add(1, Ordering::Relaxed);
        Active(engine)
    }
}

impl Drop for Active {
    fn drop(&mut self) {
        self.0.active.fetch_sub(1, Ordering::Relaxed);
    }
}

/// What a finished generation looked like.
#[derive(Default)]
struct Outcome {
    text: String,
    reasoning: String,
    finish_reason: Option<String>,
    usage: Option<Value>,
    id: String,
    created: u64,
    tokens: usize,
}

/// Moves mistral.rs responses to the client; returns when done or when the client is gone.
async fn relay(
    first: MrResponse,
    mut rx: mpsc::Receiver<MrResponse>,
    tx: mpsc::Sender<Bytes>,
    api: Api,
    g: Generation,
    name: String,
    prompt_tokens: Option<usize>,
) {
    let mut out = Outcome {
        created: now(),
        ..Outcome::default()
    };
    let object = if api == Api::Chat {
        "chat.completion.chunk"
    } else {
        "text_completion"
    };
    let mut stops = StopMatcher::new(g.stops.clone());
    let mut stop_sent = false;
    let mut next = Some(first);
    loop {
        let resp = match next.take() {
            Some(r) => r,
            None => match rx.recv().await {
                Some(r) => r,
                None => break,
            },
        };
        let (chunk, usage) = match resp {
            MrResponse::Chunk(c) => {
                let usage = c.usage.as_ref().map(|u| json!({"prompt_tokens": u.prompt_tokens, "completion_tokens": u.completion_tokens, "total_tokens": u.total_tokens}));
                (serde_json::to_value(&c).unwrap_or(Value::Null), usage)
            }
            MrResponse::CompletionChunk(c) => {
                let mut v = serde_json::to_value(&c).unwrap_or(Value::Null);
                if api == Api::Chat {
                    // A continued chat runs as a completion of tokens: its text is the delta.
                    chat_delta(&mut v);
                }
                (v, None)
            }
            MrResponse::InternalError(e) | MrResponse::ValidationError(e) => {
                let err = EngineError::Generation(e.to_string());
                let _ = tx.send(failure_bytes(&err, g.stream)).await;
                return;
            }
            MrResponse::ModelError(e, _) | MrResponse::CompletionModelError(e, _) => {
                let _ = tx
                    .send(failure_bytes(&EngineError::Generation(e), g.stream))
                    .await;
                return;
            }
            _ => continue,
        };
        let Value::Object(mut chunk) = chunk else {
            continue;
        };
        if usage.is_some() {
            out.usage = usage;
        }
        chunk.remove("usage");
        chunk.insert("model".into(), Value::String(name.clone()));
        chunk.insert("object".into(), Value::String(object.into()));
        chunk.insert("created".into(), Value::from(out.created));
        if let Some(id) = chunk.get("id").and_then(Value::as_str) {
            out.id = id.to_string();
        }
        let upstream_finished = chunk
            .get("choices")
            .and_then(|c| c.get(0))
            .is_some_and(|c| c.get("finish_reason").is_some_and(|f| !f.is_null()));
        if stop_sent {
            // Past a stop sequence nothing more is sent; reading on picks up the final usage.
            if upstream_finished {
                break;
            }
            continue;
        }
        apply_stops(&mut chunk, &mut stops);
        stop_sent = stops.stopped();
        absorb(&mut out, &chunk);
        out.tokens += 1;
        let sent = if g.stream {
            tx.send(Bytes::from(format!("data: {}\n\n", Value::Object(chunk))))
                .await
        } else if out.tokens.is_multiple_of(HEARTBEAT_EVERY) {
            tx.send(Bytes::from_static(b" ")).await
        } else {
            Ok(())
        };
        if sent.is_err() {
            tracing::debug!("The engine's client went away; generation is cancelled.");
            return;
        }
        if upstream_finished {
            break;
        }
    }
    if let (None, Some(prompt)) = (&out.usage, prompt_tokens) {
        // Completions of tokens report no usage: the prompt was counted, chunks are tokens.
        out.usage = Some(
            json!({"prompt_tokens": prompt, "completion_tokens": out.tokens,
            "total_tokens": prompt + out.tokens}),
        );
    }
    let _ = tx.send(Bytes::from(finale(&out, api, &g, &name))).await;
}

/// A completion chunk's choices as chat deltas (`text` → `delta.content`).
fn chat_delta(chunk: &mut Value) {
    let Some(choices) = chunk.get_mut("choices").and_then(Value::as_array_mut) else {
        return;
    };
    for c in choices {
        let Some(obj) = c.as_object_mut() else {
            continue;
        };
        let text = obj.remove("text").unwrap_or(Value::String(String::new()));
        obj.remove("logprobs");
        obj.insert(
            "delta".into(),
            json!({"role": "assistant", "content": text}),
        );
    }
}

/// Cuts the chunk's text at a stop sequence; a cut chunk finishes with `stop`.
fn apply_stops(chunk: &mut Map<String, Value>, stops: &mut StopMatcher) {
    let Some(choice) = chunk
        .get_mut("choices")
        .and_then(|c| c.get_mut(0))
        .and_then(Value::as_object_mut)
    else {
        return;
    };
    let finishing = choice.get("finish_reason").is_some_and(|f| !f.is_null());
    let (holder, key) = if choice.contains_key("delta") {
        (
            choice.get_mut("delta").and_then(Value::as_object_mut),
            "content",
        )
    } else {
        (Some(choice), "text")
    };
    let Some(holder) = holder else { return };
    let text = holder
        .get(key)
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_string();
    let mut emit = stops.feed(&text);
    if finishing {
        emit.push_str(&stops.finish());
    }
    if holder.contains_key(key) || !emit.is_empty() {
        holder.insert(key.into(), Value::String(emit));
    }
    if stops.stopped() {
        if let Some(choice) = chunk
            .get_mut("choices")
            .and_then(|c| c.get_mut(0))
            .and_then(Value::as_object_mut)
        {
            choice.insert("finish_reason".into(), Value::String("stop".into()));
        }
    }
}

/// Folds one chunk into the outcome.
fn absorb(out: &mut Outcome, chunk: &Map<String, Value>) {
    let Some(choice) = chunk.get("choices").and_then(|c| c.get(0)) else {
        return;
    };
    let (text, reasoning) = match choice.get("delta") {
        Some(d) => (d.get("content"), d.get("reasoning_content")),
        None => (choice.get("text"), None),
    };
    out.text
        .push_str(text.and_then(Value::as_str).unwrap_or(""));
    out.reasoning
        .push_str(reasoning.and_then(Value::as_str).unwrap_or(""));
    if let Some(r) = choice.get("finish_reason").and_then(Value::as_str) {
        out.finish_reason = Some(r.to_string());
    }
}

/// The end of the response: usage chunk and `[DONE]` for streams, the whole JSON otherwise.
fn finale(out: &Outcome, api: Api, g: &Generation, name: &str) -> Vec<u8> {
    if g.stream {
        let mut s = String::new();
        if g.include_usage {
            if let Some(u) = &out.usage {
                let object = if api == Api::Chat {
                    "chat.completion.chunk"
                } else {
                    "text_completion"
                };
                let v = json!({"id": out.id, "object": object, "created": out.created, "model": name, "choices": [], "usage": u});
                s.push_str(&format!("data: {v}\n\n"));
            }
        }
        s.push_str("data: [DONE]\n\n");
        return s.into_bytes();
    }
    let finish = out.finish_reason.clone().unwrap_or_else(|| "stop".into());
    let choice = match api {
        Api::Chat => {
            let mut message = json!({"role": "assistant", "content": out.text});
            if !out.reasoning.is_empty() {
                message["reasoning_content"] = Value::String(out.reasoning.clone());
            }
            json!({"index": 0, "message": message, "finish_reason": finish})
        }
        Api::Completions => json!({"index": 0, "text": out.text, "finish_reason": finish}),
    };
    let object = if api == Api::Chat {
        "chat.completion"
    } else {
        "text_completion"
    };
    let mut v = json!({"id": out.id, "object": object, "created": out.created, "model": name, "choices": [choice]});
    if let Some(u) = &out.usage {
        v["usage"] = u.clone();
    }
    serde_json::to_vec(&v).unwrap_or_default()
}

/// An error after the 200 was sent: an SSE error event, or an error JSON after the whitespace.
fn failure_bytes(e: &EngineError, stream: bool) -> Bytes {
    if stream {
        let mut s = b"data: ".to_vec();
        s.extend_from_slice(&e.body());
        s.extend_from_slice(b"\n\ndata: [DONE]\n\n");
        Bytes::from(s)
    } else {
        Bytes::from(e.body())
    }
}
