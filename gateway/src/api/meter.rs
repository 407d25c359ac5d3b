//! A response passed through in its own API (an upstream that serves Responses or Messages
//! itself): the body goes to the client as the upstream wrote it; this reads it on the way for
//! the chat path's figures (tokens, steps, self-corrections, verification), the text the cache
//! stores, and the route's reasoning budget, which ends a stream with an error event in the
//! client's API.

use std::sync::Arc;

use serde_json::{json, Value};

use super::Api;
use crate::config::{AnalysisConfig, ReasoningConfig};
use crate::openai::ApiError;
use crate::reasoning::corrections::count_corrections;
use crate::reasoning::sse::SseDecoder;
use crate::reasoning::steps::StepCounter;
use crate::reasoning::{verify, Report};

/// Largest event or body read; past it the figures are what was read so far.
const MAX_BYTES: usize = 4 * 1024 * 1024;
/// Reasoning and answer text kept for analysis and the cache (as the rewriter keeps).
const MAX_TEXT: usize = 1 << 20;
/// Finished Responses output items kept for a `response.failed` the gateway writes.
const MAX_ITEMS: usize = 64;

#[derive(Debug)]
enum Input {
    Sse(SseDecoder),
    Body(Vec<u8>),
    Off,
}

/// Text kept up to [`MAX_TEXT`], remembering whether any was left out.
#[derive(Debug, Default)]
struct Kept {
    text: String,
    chars: usize,
    /// Deltas (events) that carried text: about one token each on token-streaming servers.
    deltas: u64,
}

impl Kept {
    fn push(&mut self, t: &str) {
        if t.is_empty() {
            return;
        }
        self.chars += t.chars().count();
        self.deltas += 1;
        if self.text.len() + t.len() <= MAX_TEXT {
            self.text.push_str(t);
        }
    }

    fn whole(&self) -> bool {
        self.text.chars().count() == self.chars
    }
}

/// Reads one passed-through response.
#[derive(Debug)]
pub struct Meter {
    api: Api,
    input: Input,
    /// Upstream bytes not yet forwarded: the tail of an SSE event still arriving, held so a
    /// gateway error event can only ever follow a whole event.
    held: Vec<u8>,
    reasoning: Kept,
    /// Reasoning summary text (Responses): the reasoning when no reasoning text came.
    summary: Kept,
    answer: Kept,
    /// The reasoning came encrypted or redacted: there is no text to verify or replay.
    opaque: bool,
    model: Option<String>,
    /// Input, output and reasoning tokens, as reported.
    usage: (Option<u64>, Option<u64>, Option<u64>),
    finish: Option<String>,
    analysis: Arc<AnalysisConfig>,
    response_format: Option<Value>,
    budget: Option<u64>,
    budget_hit: bool,
    alert: bool,
    /// Responses: the last `sequence_number`, the `response` of `response.created`, and the
    /// output items finished so far.
    seq: Option<u64>,
    snapshot: Option<Value>,
    items: Vec<Value>,
}

impl Meter {
    /// A meter for a response in `api` (its SSE stream when `sse`, else one JSON body) on a
    /// route with `cfg`; `response_format` is the request's (for the `json` check).
    pub fn new(api: Api, sse: bool, cfg: &ReasoningConfig, response_format: Option<Value>) -> Self {
        Meter {
            api,
            input: if sse {
                Input::Sse(SseDecoder::new(MAX_BYTES))
            } else {
                Input::Body(Vec::new())
            },
            held: Vec::new(),
            reasoning: Kept::default(),
            summary: Kept::default(),
            answer: Kept::default(),
            opaque: false,
            model: None,
            usage: (None, None, None),
            finish: None,
            analysis: cfg.analysis.clone(),
            response_format,
            budget: cfg.max_reasoning_tokens,
            budget_hit: false,
            alert: false,
            seq: None,
            snapshot: None,
            items: Vec::new(),
        }
    }

    /// Reads more of the body; returns the bytes to forward now: a stream's whole events, up to
    /// the one that passed the budget (nothing after it is ever forwarded).
    pub fn feed(&mut self, bytes: &[u8]) -> Vec<u8> {
        match &mut self.input {
            Input::Sse(_) => {
                self.held.extend_from_slice(bytes);
                let mut start = 0;
                while let Some(len) = next_event(&self.held[start..]) {
                    let end = start + len;
                    let mut events = Vec::new();
                    if let Input::Sse(d) = &mut self.input {
                        if d.feed(&self.held[start..end], &mut |e| events.push(e))
                            .is_err()
                        {
                            self.input = Input::Off;
                        }
                    }
                    start = end;
                    for e in events {
                        if let Some(v) = e.data.and_then(|d| serde_json::from_str::<Value>(&d).ok())
                        {
                            self.event(&v);
                        }
                    }
                    self.check_budget();
                    if self.alert || matches!(self.input, Input::Off) {
                        break;
                    }
                }
                let rest = self.held.split_off(start);
                let out = std::mem::replace(&mut self.held, rest);
                if self.alert {
                    self.held.clear();
                } else if matches!(self.input, Input::Off) || self.held.len() > MAX_BYTES {
                    // Not SSE the gateway can read: the rest goes as it comes, unread.
                    self.input = Input::Off;
                    let mut out = out;
                    out.append(&mut self.held);
                    return out;
                }
                out
            }
            Input::Body(buf) if buf.len() + bytes.len() <= MAX_BYTES => {
                buf.extend_from_slice(bytes);
                bytes.to_vec()
            }
            Input::Body(_) | Input::Off => {
                self.input = Input::Off;
                let mut out = std::mem::take(&mut self.held);
                out.extend_from_slice(bytes);
                out
            }
        }
    }

    /// End of the body: what was still held.
    pub fn finish(&mut self) -> Vec<u8> {
        match std::mem::replace(&mut self.input, Input::Off) {
            Input::Body(buf) => {
                if let Ok(v) = serde_json::from_slice::<Value>(&buf) {
                    self.whole(&v);
                }
            }
            Input::Sse(mut d) => {
                let mut events = Vec::new();
                let _ = d.finish(&mut |e| events.push(e));
                for e in events {
                    if let Some(v) = e.data.and_then(|d| serde_json::from_str::<Value>(&d).ok()) {
                        self.event(&v);
                    }
                }
            }
            Input::Off => {}
        }
        std::mem::take(&mut self.held)
    }

    /// The reasoning has begun and the answer has not (for step timeouts).
    pub fn in_reasoning(&self) -> bool {
        (self.reasoning.chars > 0 || self.summary.chars > 0)
            && self.answer.chars == 0
            && self.finish.is_none()
    }

    /// The answer has begun (for time to first answer token).
    pub fn answer_started(&self) -> bool {
        self.answer.chars > 0
    }

    /// The reasoning passed the route's `max_reasoning_tokens` since the last call (once).
    pub fn take_budget_alert(&mut self) -> bool {
        std::mem::take(&mut self.alert)
    }

    fn check_budget(&mut self) {
        let Some(max) = self.budget else {
            return;
        };
        // Reasoning deltas count as tokens, as on the chat path; a stream may carry the same
        // reasoning both as text and as a summary.
        let used = self.reasoning.deltas.max(self.summary.deltas);
        if !self.budget_hit && used > max && self.answer.chars == 0 && self.finish.is_none() {
            self.budget_hit = true;
            self.alert = true;
        }
    }

    /// The stream's last event, written by the gateway after the whole events forwarded so far:
    /// `response.failed` (Responses) or an `error` event (Messages) carrying `err`.
    pub fn abort(&mut self, err: &ApiError) -> Vec<u8> {
        self.held.clear();
        self.input = Input::Off;
        let (ty, data) = match self.api {
            Api::Messages => (
                "error",
                super::messages::error_value(err.status.max(500), &err.message),
            ),
            _ => {
                let mut r = self
                    .snapshot
                    .clone()
                    .unwrap_or_else(|| json!({"object": "response"}));
                r["status"] = json!("failed");
                r["error"] = json!({"code": "server_error", "message": err.message});
                r["output"] = Value::Array(std::mem::take(&mut self.items));
                let seq = self.seq.map_or(0, |s| s + 1);
                (
                    "response.failed",
                    json!({"type": "response.failed", "sequence_number": seq, "response": r}),
                )
            }
        };
        let mut out = format!("event: {ty}\ndata: ").into_bytes();
        out.extend_from_slice(&serde_json::to_vec(&data).unwrap_or_default());
        out.extend_from_slice(b"\n\n");
        out
    }

    fn event(&mut self, v: &Value) {
        let s = |k: &str| v.get(k).and_then(Value::as_str).unwrap_or("");
        if let Some(n) = v.get("sequence_number").and_then(Value::as_u64) {
            self.seq = Some(n);
        }
        match (self.api, s("type")) {
            (Api::Responses, "response.reasoning_text.delta") => self.reasoning.push(s("delta")),
            (Api::Responses, "response.reasoning_summary_text.delta") => {
                self.summary.push(s("delta"));
            }
            (Api::Responses, "response.output_text.delta") => self.answer.push(s("delta")),
            (Api::Responses, "response.created") => {
                self.snapshot = v.get("response").cloned();
                self.model_of(v.get("response"));
            }
            (Api::Responses, "response.output_item.done") => {
                if let Some(item) = v.get("item") {
                    self.opaque |= encrypted(item);
                    if self.items.len() < MAX_ITEMS {
                        self.items.push(item.clone());
                    }
                }
            }
            (Api::Responses, "response.completed" | "response.incomplete" | "response.failed") => {
                if let Some(r) = v.get("response") {
                    self.responses_end(r);
                }
            }
            (Api::Messages, "message_start") => {
                self.usage.0 = v
                    .pointer("/message/usage/input_tokens")
                    .and_then(Value::as_u64);
                self.model_of(v.get("message"));
            }
            (Api::Messages, "content_block_start") => {
                self.opaque |=
                    v.pointer("/content_block/type") == Some(&json!("redacted_thinking"));
            }
            (Api::Messages, "content_block_delta") => {
                let text = |p: &str| v.pointer(p).and_then(Value::as_str).unwrap_or("");
                match v.pointer("/delta/type").and_then(Value::as_str) {
                    Some("thinking_delta") => self.reasoning.push(text("/delta/thinking")),
                    Some("text_delta") => self.answer.push(text("/delta/text")),
                    _ => {}
                }
            }
            (Api::Messages, "message_delta") => {
                self.usage.1 = v.pointer("/usage/output_tokens").and_then(Value::as_u64);
                self.finish = v
                    .pointer("/delta/stop_reason")
                    .and_then(Value::as_str)
                    .map(messages_finish);
            }
            _ => {}
        }
    }

    fn model_of(&mut self, v: Option<&Value>) {
        if let Some(m) = v.and_then(|v| v.get("model")).and_then(Value::as_str) {
            self.model = Some(m.to_string());
        }
    }

    fn responses_end(&mut self, r: &Value) {
        let n = |p: &str| r.pointer(p).and_then(Value::as_u64);
        self.usage = (
            n("/usage/input_tokens"),
            n("/usage/output_tokens"),
            n("/usage/output_tokens_details/reasoning_tokens"),
        );
        self.model_of(Some(r));
        let output = r["output"].as_array();
        let has_call = output.is_some_and(|o| o.iter().any(|i| i["type"] == "function_call"));
        self.opaque |= output.is_some_and(|o| o.iter().any(encrypted));
        self.finish = Some(match r["status"].as_str() {
            Some("completed") if has_call => "tool_calls".into(),
            Some("completed") => "stop".into(),
            Some("incomplete") => "length".into(),
            other => other.unwrap_or("error").to_string(),
        });
    }

    /// A whole (non-streamed) response.
    fn whole(&mut self, v: &Value) {
        let items = match self.api {
            Api::Responses => v["output"].as_array(),
            _ => v["content"].as_array(),
        };
        let text = |v: &Value, k: &str| v[k].as_str().unwrap_or("").to_string();
        for item in items.into_iter().flatten() {
            match (self.api, item["type"].as_str()) {
                (Api::Responses, Some("reasoning")) => {
                    for part in item["content"].as_array().into_iter().flatten() {
                        self.reasoning.push(&text(part, "text"));
                    }
                    for part in item["summary"].as_array().into_iter().flatten() {
                        self.summary.push(&text(part, "text"));
                    }
                }
                (Api::Responses, Some("message")) => {
                    for part in item["content"].as_array().into_iter().flatten() {
                        self.answer.push(&text(part, "text"));
                    }
                }
                (Api::Messages, Some("thinking")) => self.reasoning.push(&text(item, "thinking")),
                (Api::Messages, Some("redacted_thinking")) => self.opaque = true,
                (Api::Messages, Some("text")) => self.answer.push(&text(item, "text")),
                _ => {}
            }
        }
        match self.api {
            Api::Responses => self.responses_end(v),
            _ => {
                self.model_of(Some(v));
                self.usage.0 = v.pointer("/usage/input_tokens").and_then(Value::as_u64);
                self.usage.1 = v.pointer("/usage/output_tokens").and_then(Value::as_u64);
                self.finish = v["stop_reason"].as_str().map(messages_finish);
            }
        }
    }

    /// The reasoning: its text, else the summary.
    fn reasoning(&self) -> &Kept {
        if self.reasoning.chars == 0 {
            &self.summary
        } else {
            &self.reasoning
        }
    }

    /// The whole reasoning and answer, for the cache (`None` when some was not kept, or the
    /// reasoning was encrypted or redacted).
    pub fn full_text(&self) -> Option<(String, String)> {
        let r = self.reasoning();
        (r.whole() && self.answer.whole() && !self.opaque)
            .then(|| (r.text.clone(), self.answer.text.clone()))
    }

    /// The model the upstream named.
    pub fn model(&self) -> Option<String> {
        self.model.clone()
    }

    /// The figures, in the chat path's terms.
    pub fn report(&self) -> Report {
        let reasoning = self.reasoning();
        let mut steps = StepCounter::default();
        steps.feed(&reasoning.text);
        // About four characters a token where the upstream gave no count.
        let estimate = |chars: usize| (chars as u64).div_ceil(4);
        let (input, output, given) = self.usage;
        let reasoning_tokens = given.unwrap_or_else(|| estimate(reasoning.chars));
        let answer_tokens = match output {
            Some(o) => o.saturating_sub(reasoning_tokens),
            None => estimate(self.answer.chars),
        };
        let verifications = verify::verify(
            &self.analysis.verify,
            &verify::Subject {
                reasoning: &reasoning.text,
                answer: &self.answer.text,
                // The upstream split the reasoning itself: nothing is left open.
                unterminated: false,
                response_format: self.response_format.as_ref(),
                complete: self.finish.as_deref() == Some("stop"),
            },
        );
        Report {
            reasoning_tokens,
            answer_tokens,
            tokens_counted: given.is_none(),
            reasoning_chars: reasoning.chars,
            steps: steps.finish(),
            corrections: count_corrections(&reasoning.text, &self.analysis.correction_markers),
            unterminated: false,
            finish_reason: self.finish.clone(),
            verifications,
            prompt_tokens: input,
        }
    }
}

/// A reasoning item that carries only encrypted content.
fn encrypted(item: &Value) -> bool {
    item["type"] == "reasoning"
        && item["encrypted_content"].is_string()
        && item["content"].as_array().is_none_or(Vec::is_empty)
        && item["summary"].as_array().is_none_or(Vec::is_empty)
}

/// The length of the first whole SSE event in `b` (through the blank line that ends it), or
/// `None` while it is still arriving. Lines end in `\n`, `\r\n` or `\r`.
fn next_event(b: &[u8]) -> Option<usize> {
    let mut line_empty = true;
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'\n' | b'\r' => {
                let mut next = i + 1;
                if b[i] == b'\r' {
                    // A `\r` at the end may be the first half of `\r\n`.
                    match b.get(next) {
                        None => return None,
                        Some(b'\n') => next += 1,
                        Some(_) => {}
                    }
                }
                if line_empty {
                    return Some(next);
                }
                line_empty = true;
                i = next;
            }
            _ => {
                line_empty = false;
                i += 1;
            }
        }
    }
    None
}

fn messages_finish(stop_reason: &str) -> String {
    match stop_reason {
        "max_tokens" => "length",
        "tool_use" => "tool_calls",
        _ => "stop",
    }
    .to_string()
}

#[cfg(test)]
mod tests;
