//! Rewrites upstream responses so clients see reasoning in the route's output field and the
//! answer in `content`: SSE streams event by event, JSON bodies whole.

use std::collections::BTreeMap;

use serde_json::{Map, Value};

use std::sync::Arc;

use super::corrections::count_corrections;
use super::fastpath;
use super::parser::{Split, ThinkParser};
use super::report::Report;
use super::sse::{Event, SseDecoder};
use super::steps::StepCounter;
use super::verify::{self, Check};
use crate::config::{AnalysisConfig, OutputField, ParserKind, ReasoningConfig};
use crate::openai::Endpoint;

/// Largest single SSE event accepted before the rewriter gives up and passes bytes through.
const MAX_EVENT_BYTES: usize = 4 * 1024 * 1024;
/// Largest non-streamed body rewritten; larger bodies pass through untouched.
const MAX_BODY_BYTES: usize = 64 * 1024 * 1024;

#[derive(Debug)]
struct ChoiceState {
    parser: ThinkParser,
    /// The upstream split reasoning itself: `content` is never scanned again.
    upstream_split: bool,
    finished: bool,
    reasoning_chars: usize,
    content_chars: usize,
    /// Stream chunks that carried reasoning (≈ reasoning tokens for token-per-chunk servers).
    reasoning_chunks: u64,
    /// Stream chunks that carried answer text.
    content_chunks: u64,
    /// Reasoning and answer text kept for analysis (first choice only, bounded).
    reasoning_text: String,
    answer_text: String,
    keep_text: bool,
    finish_reason: Option<String>,
    steps: StepCounter,
    /// Step count at which the next periodic check runs.
    next_check: u32,
}

/// Something the proxy must act on while the stream runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Alert {
    /// Reasoning went past `max_reasoning_tokens`.
    BudgetExceeded,
    /// A periodic check failed under policy `abort`.
    Abort(Check),
    /// A periodic check failed under policy `warn`; a `reasoning_warning` chunk was sent.
    Warned(Check),
}

/// Text kept per response for steps, corrections and verification.
const MAX_ANALYSED_BYTES: usize = 1 << 20;

impl ChoiceState {
    /// Counts one split that goes out to the client.
    fn account(&mut self, split: &Split) {
        self.reasoning_chars += split.reasoning.chars().count();
        self.content_chars += split.content.chars().count();
        if !split.reasoning.is_empty() {
            self.reasoning_chunks += 1;
        }
        if !split.content.is_empty() {
            self.content_chunks += 1;
        }
        if self.keep_text {
            self.steps.feed(&split.reasoning);
            if self.reasoning_text.len() < MAX_ANALYSED_BYTES {
                self.reasoning_text.push_str(&split.reasoning);
            }
            if self.answer_text.len() < MAX_ANALYSED_BYTES {
                self.answer_text.push_str(&split.content);
            }
        }
    }
}

/// What the rewriter saw, for metrics and logs.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Stats {
    /// Characters of reasoning across choices.
    pub reasoning_chars: usize,
    /// Characters of answer across choices.
    pub content_chars: usize,
    /// Some choice ended inside reasoning.
    pub unterminated: bool,
}

#[derive(Debug)]
enum Mode {
    Stream {
        decoder: SseDecoder,
        saw_done: bool,
    },
    Body {
        buf: Vec<u8>,
    },
    /// Framing failed: everything from here on is forwarded as it comes.
    Passthrough,
}

/// Rewrites one response.
#[derive(Debug)]
pub struct ResponseRewriter {
    mode: Mode,
    kind: ParserKind,
    start_in_reasoning: bool,
    field: OutputField,
    /// `choices[].text` (completions) instead of `delta`/`message.content` (chat).
    completions: bool,
    choices: BTreeMap<u64, ChoiceState>,
    /// id/object/created/model of the last chunk, for chunks the gateway synthesises.
    template: Map<String, Value>,
    /// Use [`fastpath`] where it applies (off only in tests comparing both paths).
    fast: bool,
    analysis: Arc<AnalysisConfig>,
    /// The request's `response_format` (for the `json` check).
    response_format: Option<Value>,
    /// The gateway asked for `include_usage`; the client did not: usage chunks are not forwarded.
    strip_usage: bool,
    /// Usage as the upstream reported it: completion tokens and reasoning tokens if given.
    usage: Option<(u64, Option<u64>)>,
    /// Prompt tokens from the upstream's usage.
    prompt_tokens: Option<u64>,
    max_reasoning_tokens: Option<u64>,
    alerts: Vec<Alert>,
    budget_hit: bool,
    /// Checks that already failed mid-stream (counted once, not re-run at the end).
    periodic_failed: Vec<Check>,
}

impl ResponseRewriter {
    /// A rewriter for a successful chat/completions response, or `None` to forward untouched.
    pub fn for_response(
        cfg: &ReasoningConfig,
        endpoint: Endpoint,
        status: u16,
        content_type: &str,
    ) -> Option<Self> {
        if cfg.parser == ParserKind::Passthrough
            || !(200..300).contains(&status)
            || endpoint == Endpoint::Models
        {
            return None;
        }
        let mode = if content_type.starts_with("text/event-stream") {
            Mode::Stream {
                decoder: SseDecoder::new(MAX_EVENT_BYTES),
                saw_done: false,
            }
        } else if content_type.starts_with("application/json") {
            Mode::Body { buf: Vec::new() }
        } else {
            return None;
        };
        Some(ResponseRewriter {
            mode,
            kind: cfg.parser,
            start_in_reasoning: cfg.start_in_reasoning,
            field: cfg.output_field,
            completions: endpoint == Endpoint::Completions,
            choices: BTreeMap::new(),
            template: Map::new(),
            fast: true,
            analysis: cfg.analysis.clone(),
            response_format: None,
            strip_usage: false,
            usage: None,
            prompt_tokens: None,
            max_reasoning_tokens: cfg.max_reasoning_tokens,
            alerts: Vec::new(),
            budget_hit: false,
            periodic_failed: Vec::new(),
        })
    }

    /// Alerts raised since the last call.
    pub fn take_alerts(&mut self) -> Vec<Alert> {
        std::mem::take(&mut self.alerts)
    }

    /// The first choice is inside reasoning.
    pub fn in_reasoning(&self) -> bool {
        self.choices
            .values()
            .next()
            .is_some_and(|c| c.parser.in_reasoning())
    }

    /// Budget and periodic checks after new text; a warning chunk goes to `out`.
    fn check_progress(&mut self, out: &mut Vec<u8>) {
        let every = self.analysis.every_steps;
        let Some(c) = self.choices.get_mut(&0) else {
            return;
        };
        if !c.parser.in_reasoning() {
            return;
        }
        if let Some(max) = self.max_reasoning_tokens {
            if !self.budget_hit && c.reasoning_chunks > max {
                self.budget_hit = true;
                self.alerts.push(Alert::BudgetExceeded);
            }
        }
        if every == 0 || c.steps.steps() < c.next_check {
            return;
        }
        let steps = c.steps.steps();
        c.next_check = (steps / every + 1) * every;
        let v = &self.analysis.verify;
        let looping = v.checks.contains(&Check::Loop)
            && verify::repeated_ngram_ratio(&c.reasoning_text, v.loop_ngram) > v.loop_max_ratio;
        if !looping || self.periodic_failed.contains(&Check::Loop) {
            return;
        }
        self.periodic_failed.push(Check::Loop);
        if self.analysis.periodic_abort {
            self.alerts.push(Alert::Abort(Check::Loop));
        } else {
            self.alerts.push(Alert::Warned(Check::Loop));
            let mut chunk = self.template.clone();
            chunk.insert("choices".into(), Value::Array(Vec::new()));
            chunk.insert(
                "reasoning_warning".into(),
                serde_json::json!({"check": "loop", "step": steps}),
            );
            Event {
                data: Some(serde_json::to_string(&chunk).unwrap_or_default()),
                ..Event::default()
            }
            .write(out);
        }
    }

    /// Adds what the request said: its `response_format`, and whether usage chunks the client did
    /// not ask for must be dropped.
    pub fn with_request(mut self, response_format: Option<Value>, strip_usage: bool) -> Self {
        self.response_format = response_format;
        self.strip_usage = strip_usage;
        self
    }

    /// The request switched Qwen3 thinking off (`chat_template_kwargs.enable_thinking: false`):
    /// a `qwen3` route then looks for no tags, even with `start_in_reasoning`.
    pub fn thinking_off(mut self) -> Self {
        if self.kind == ParserKind::Qwen3 {
            self.kind = ParserKind::None;
        }
        self
    }

    /// The answer has begun (for time to first answer token).
    pub fn answer_started(&self) -> bool {
        self.choices.values().any(|c| c.content_chars > 0)
    }

    /// Tokens, steps, corrections and verification of the response so far (complete once the
    /// upstream body has ended).
    pub fn report(&self) -> Report {
        let stream = self.is_stream();
        let first = self.choices.values().next();
        let (completion, given_reasoning) = match self.usage {
            Some((c, r)) => (Some(c), r),
            None => (None, None),
        };
        let counted = completion.is_none();
        let completion = completion.unwrap_or_else(|| {
            self.choices
                .values()
                .map(|c| {
                    if stream {
                        c.reasoning_chunks + c.content_chunks
                    } else {
                        // About four characters per token when nobody counted.
                        ((c.reasoning_chars + c.content_chars) as u64).div_ceil(4)
                    }
                })
                .sum()
        });
        let reasoning_tokens = given_reasoning
            .unwrap_or_else(|| self.estimate_reasoning_tokens(completion, stream))
            .min(completion);
        let (reasoning, answer) = first.map_or(("", ""), |c| {
            (c.reasoning_text.as_str(), c.answer_text.as_str())
        });
        let unterminated = self.stats().unterminated;
        let finish_reason = first.and_then(|c| c.finish_reason.clone());
        let mut verifications = verify::verify(
            &self.analysis.verify,
            &verify::Subject {
                reasoning,
                answer,
                unterminated,
                response_format: self.response_format.as_ref(),
                complete: finish_reason.as_deref() == Some("stop"),
            },
        );
        // Checks that failed mid-stream stay failed (and are counted once).
        for (check, passed) in &mut verifications {
            if self.periodic_failed.contains(check) {
                *passed = false;
            }
        }
        Report {
            reasoning_tokens,
            answer_tokens: completion - reasoning_tokens,
            tokens_counted: counted,
            reasoning_chars: self.choices.values().map(|c| c.reasoning_chars).sum(),
            steps: first.map_or(0, |c| c.steps.clone().finish()),
            corrections: count_corrections(reasoning, &self.analysis.correction_markers),
            unterminated,
            finish_reason,
            verifications,
            prompt_tokens: self.prompt_tokens,
        }
    }

    fn estimate_reasoning_tokens(&self, completion: u64, stream: bool) -> u64 {
        let (r_chars, c_chars, chunks) = self.choices.values().fold((0, 0, 0), |acc, c| {
            (
                acc.0 + c.reasoning_chars,
                acc.1 + c.content_chars,
                acc.2 + c.reasoning_chunks,
            )
        });
        if stream && chunks > 0 {
            chunks.min(completion)
        } else if r_chars + c_chars > 0 {
            // Share of completion tokens by share of characters.
            ((completion as f64) * (r_chars as f64) / ((r_chars + c_chars) as f64)).round() as u64
        } else {
            0
        }
    }

    fn stats_value(&self) -> Value {
        self.report().to_json()
    }

    /// Whether the response is an SSE stream.
    pub fn is_stream(&self) -> bool {
        !matches!(self.mode, Mode::Body { .. })
    }

    /// Feeds upstream bytes; returns the bytes to send downstream now.
    pub fn feed(&mut self, input: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        match &mut self.mode {
            Mode::Passthrough => out.extend_from_slice(input),
            Mode::Body { buf } => {
                buf.extend_from_slice(input);
                if buf.len() > MAX_BODY_BYTES {
                    out = std::mem::take(buf);
                    self.mode = Mode::Passthrough;
                }
            }
            Mode::Stream { decoder, .. } => {
                let mut events = Vec::new();
                let res = decoder.feed(input, &mut |e| events.push(e));
                for e in events {
                    self.on_event(e, &mut out);
                }
                self.check_progress(&mut out);
                if let Err(e) = res {
                    tracing::warn!(error = %e, "SSE framing failed; forwarding the rest of the stream untouched.");
                    self.mode = Mode::Passthrough;
                }
            }
        }
        out
    }

    /// End of the upstream body: flushes what was held back.
    pub fn finish(&mut self) -> Vec<u8> {
        let mut out = Vec::new();
        match std::mem::replace(&mut self.mode, Mode::Passthrough) {
            Mode::Passthrough => {}
            Mode::Body { buf } => out = self.rewrite_body(buf),
            Mode::Stream {
                mut decoder,
                saw_done,
            } => {
                let mut events = Vec::new();
                let _ = decoder.finish(&mut |e| events.push(e));
                for e in events {
                    self.on_event(e, &mut out);
                }
                if !saw_done {
                    self.flush_all(&mut out);
                }
            }
        }
        out
    }

    /// The upstream failed mid-response: releases held-back text, drops any partial event.
    pub fn abort(&mut self) -> Vec<u8> {
        let mut out = Vec::new();
        if matches!(self.mode, Mode::Stream { .. }) {
            self.flush_all(&mut out);
        }
        self.mode = Mode::Passthrough;
        out
    }

    /// Totals so far.
    pub fn stats(&self) -> Stats {
        let mut s = Stats::default();
        for c in self.choices.values() {
            s.reasoning_chars += c.reasoning_chars;
            s.content_chars += c.content_chars;
            s.unterminated |= c.parser.in_reasoning() && c.parser.saw_reasoning();
        }
        s
    }

    fn new_choice(&self, index: u64) -> ChoiceState {
        let parser = match self.kind {
            ParserKind::None | ParserKind::Passthrough => ThinkParser::plain(),
            ParserKind::DeepseekR1 | ParserKind::Qwen3 => ThinkParser::new(self.start_in_reasoning),
        };
        ChoiceState {
            parser,
            upstream_split: false,
            finished: false,
            reasoning_chars: 0,
            content_chars: 0,
            reasoning_chunks: 0,
            content_chunks: 0,
            reasoning_text: String::new(),
            answer_text: String::new(),
            keep_text: index == 0,
            finish_reason: None,
            steps: StepCounter::default(),
            next_check: self.analysis.every_steps,
        }
    }

    fn on_event(&mut self, event: Event, out: &mut Vec<u8>) {
        let Some(data) = event.data.as_deref() else {
            event.write(out);
            return;
        };
        if data.trim() == "[DONE]" {
            self.flush_all(out);
            if let Mode::Stream { saw_done, .. } = &mut self.mode {
                *saw_done = true;
            }
            if self.analysis.stats {
                // A `choices: []` chunk like the usage chunk: SDKs pass it through untouched.
                let mut chunk = self.template.clone();
                chunk.insert("choices".into(), Value::Array(Vec::new()));
                chunk.insert("reasoning_stats".into(), self.stats_value());
                Event {
                    data: Some(serde_json::to_string(&chunk).unwrap_or_default()),
                    ..Event::default()
                }
                .write(out);
            }
            event.write(out);
            return;
        }
        if let Some(rewritten) = self.fast_chunk(data) {
            if let Some(d) = rewritten {
                Event {
                    data: Some(d),
                    ..event
                }
                .write(out);
            }
            return;
        }
        let Ok(Value::Object(mut chunk)) = serde_json::from_str::<Value>(data) else {
            event.write(out);
            return;
        };
        let usage_only = chunk
            .get("choices")
            .and_then(Value::as_array)
            .is_some_and(|c| c.is_empty())
            && chunk.get("usage").is_some_and(|u| !u.is_null());
        if usage_only {
            // Generation is over: release held-back text before the usage that counts it.
            self.flush_all(out);
        }
        let mut all_emptied = false;
        if let Some(Value::Array(choices)) = chunk.get_mut("choices") {
            let before = choices.len();
            choices.retain_mut(|c| !self.rewrite_choice(c, true));
            all_emptied = before > 0 && choices.is_empty();
            for key in ["id", "object", "created", "model", "system_fingerprint"] {
                if let Some(v) = chunk.get(key) {
                    self.template.insert(key.to_string(), v.clone());
                }
            }
        }
        if let Some(usage) = chunk.get_mut("usage") {
            self.fill_usage(usage, true);
        }
        let has_usage = chunk.get("usage").is_some_and(|u| !u.is_null());
        if all_emptied && !has_usage || usage_only && self.strip_usage {
            return;
        }
        let data = serde_json::to_string(&chunk).unwrap_or_default();
        Event {
            data: Some(data),
            ..event
        }
        .write(out);
    }

    /// The common chunk without a JSON tree (see [`fastpath`]): `None` when it does not apply,
    /// `Some(None)` when the gateway emptied the chunk (drop it), else the rewritten data.
    fn fast_chunk(&mut self, data: &str) -> Option<Option<String>> {
        if self.completions || !self.fast {
            return None;
        }
        let chunk = fastpath::simple_chat_chunk(data)?;
        if self
            .choices
            .get(&chunk.index)
            .is_some_and(|c| c.upstream_split || c.finished)
        {
            return None;
        }
        if self.template.is_empty() {
            if let Ok(Value::Object(v)) = serde_json::from_str::<Value>(data) {
                for key in ["id", "object", "created", "model", "system_fingerprint"] {
                    if let Some(x) = v.get(key) {
                        self.template.insert(key.to_string(), x.clone());
                    }
                }
            }
        }
        let fresh = self.new_choice(chunk.index);
        let state = self.choices.entry(chunk.index).or_insert(fresh);
        let mut split = Split::default();
        state.parser.feed(&chunk.content, &mut split);
        state.account(&split);
        if split.is_empty() && chunk.content_only && !chunk.content.is_empty() {
            return Some(None);
        }
        let mut s = String::with_capacity(data.len() + split.reasoning.len() * 2 + 40);
        s.push_str(&data[..chunk.member.start]);
        if !split.reasoning.is_empty() {
            let names: &[&str] = match self.field {
                OutputField::ReasoningContent => &["reasoning_content"],
                OutputField::Reasoning => &["reasoning"],
                OutputField::Both => &["reasoning_content", "reasoning"],
            };
            for name in names {
                s.push('"');
                s.push_str(name);
                s.push_str("\":");
                fastpath::push_json_string(&mut s, &split.reasoning);
                s.push(',');
            }
        }
        if !split.content.is_empty() || split.reasoning.is_empty() {
            s.push_str("\"content\":");
            fastpath::push_json_string(&mut s, &split.content);
        } else {
            s.pop();
        }
        s.push_str(&data[chunk.member.end..]);
        Some(Some(s))
    }

    /// Rewrites one choice in place; returns true when the gateway emptied it (drop it).
    fn rewrite_choice(&mut self, choice: &mut Value, stream: bool) -> bool {
        let Some(obj) = choice.as_object_mut() else {
            return false;
        };
        let index = obj.get("index").and_then(Value::as_u64).unwrap_or(0);
        let finish_reason = obj
            .get("finish_reason")
            .and_then(Value::as_str)
            .map(str::to_owned);
        let finish = obj.get("finish_reason").is_some_and(|f| !f.is_null());
        let mut state = self
            .choices
            .remove(&index)
            .unwrap_or_else(|| self.new_choice(index));
        if finish_reason.is_some() {
            state.finish_reason = finish_reason;
        }
        let (container, text_key) = if self.completions {
            (Some(obj), "text")
        } else {
            let key = if stream { "delta" } else { "message" };
            (obj.get_mut(key).and_then(Value::as_object_mut), "content")
        };
        let mut emptied = false;
        if let Some(c) = container {
            let mut split = Split::default();
            let given = take_upstream_reasoning(c);
            if let Some(r) = given {
                state.upstream_split = true;
                split.reasoning.push_str(&r);
            }
            let text = c.get(text_key).and_then(Value::as_str).map(str::to_owned);
            if let Some(t) = &text {
                if state.upstream_split {
                    split.content.push_str(t);
                } else {
                    state.parser.feed(t, &mut split);
                }
            }
            if (finish || !stream) && !state.finished {
                state.parser.finish(&mut split);
                state.finished = true;
            }
            let had_text = text.as_deref().is_some_and(|t| !t.is_empty());
            emptied = stream && !finish && had_text && split.is_empty();
            self.apply(&mut state, c, text_key, split, text.is_some(), stream);
            emptied &= c.is_empty();
        }
        self.choices.insert(index, state);
        emptied && !self.completions
    }

    /// Writes a split back into a delta/message/choice object.
    fn apply(
        &self,
        state: &mut ChoiceState,
        c: &mut Map<String, Value>,
        text_key: &str,
        split: Split,
        had_text: bool,
        stream: bool,
    ) {
        state.account(&split);
        if !split.content.is_empty() || (had_text && (!stream || self.completions)) {
            c.insert(text_key.to_string(), Value::String(split.content));
        } else if had_text {
            c.remove(text_key);
        }
        let reasoning = if split.reasoning.is_empty() {
            // Non-streamed messages say "no reasoning" explicitly; stream deltas just omit it.
            if stream {
                return;
            }
            Value::Null
        } else {
            Value::String(split.reasoning)
        };
        match self.field {
            OutputField::ReasoningContent => {
                c.insert("reasoning_content".into(), reasoning);
            }
            OutputField::Reasoning => {
                c.insert("reasoning".into(), reasoning);
            }
            OutputField::Both => {
                c.insert("reasoning_content".into(), reasoning.clone());
                c.insert("reasoning".into(), reasoning);
            }
        }
    }

    /// Emits a synthetic chunk for every unfinished choice that still holds text.
    fn flush_all(&mut self, out: &mut Vec<u8>) {
        let indices: Vec<u64> = self.choices.keys().copied().collect();
        for index in indices {
            let Some(mut state) = self.choices.remove(&index) else {
                continue;
            };
            if !state.finished {
                let mut split = Split::default();
                state.parser.finish(&mut split);
                state.finished = true;
                if !split.is_empty() {
                    let mut delta = Map::new();
                    self.apply(
                        &mut state,
                        &mut delta,
                        if self.completions { "text" } else { "content" },
                        split,
                        false,
                        true,
                    );
                    let mut choice = Map::new();
                    choice.insert("index".into(), Value::from(index));
                    if self.completions {
                        choice.extend(delta);
                    } else {
                        choice.insert("delta".into(), Value::Object(delta));
                    }
                    choice.insert("finish_reason".into(), Value::Null);
                    let mut chunk = self.template.clone();
                    chunk.insert("choices".into(), Value::Array(vec![Value::Object(choice)]));
                    let data = serde_json::to_string(&chunk).unwrap_or_default();
                    Event {
                        data: Some(data),
                        ..Event::default()
                    }
                    .write(out);
                }
            }
            self.choices.insert(index, state);
        }
    }

    /// Fills `completion_tokens_details.reasoning_tokens` when the upstream left it out.
    fn fill_usage(&mut self, usage: &mut Value, stream: bool) {
        let Some(u) = usage.as_object_mut() else {
            return;
        };
        self.prompt_tokens = u.get("prompt_tokens").and_then(Value::as_u64);
        let completion = u
            .get("completion_tokens")
            .and_then(Value::as_u64)
            .unwrap_or(0);
        let details = u
            .entry("completion_tokens_details")
            .or_insert_with(|| Value::Object(Map::new()));
        if details.is_null() {
            *details = Value::Object(Map::new());
        }
        let Some(d) = details.as_object_mut() else {
            return;
        };
        let given = d.get("reasoning_tokens").and_then(Value::as_u64);
        self.usage = Some((completion, given));
        if given.is_none() {
            let estimate = self.estimate_reasoning_tokens(completion, stream);
            d.insert("reasoning_tokens".into(), Value::from(estimate));
        }
    }

    fn rewrite_body(&mut self, buf: Vec<u8>) -> Vec<u8> {
        let Ok(Value::Object(mut body)) = serde_json::from_slice::<Value>(&buf) else {
            return buf;
        };
        if let Some(Value::Array(choices)) = body.get_mut("choices") {
            for c in choices.iter_mut() {
                self.rewrite_choice(c, false);
            }
        }
        if let Some(usage) = body.get_mut("usage") {
            self.fill_usage(usage, false);
        }
        if self.analysis.stats {
            body.insert("reasoning_stats".into(), self.stats_value());
        }
        serde_json::to_vec(&body).unwrap_or(buf)
    }
}

/// Removes `reasoning_content` and `reasoning` from an upstream object and returns the reasoning
/// once, even when both fields carry the same text.
fn take_upstream_reasoning(c: &mut Map<String, Value>) -> Option<String> {
    let rc = c.remove("reasoning_content");
    let r = c.remove("reasoning");
    let as_text = |v: Option<Value>| match v {
        Some(Value::String(s)) => Some(s),
        _ => None,
    };
    match (as_text(rc), as_text(r)) {
        // Servers that fill both fields send the same text twice; `reasoning_content` wins.
        (Some(a), _) | (None, Some(a)) => Some(a),
        (None, None) => None,
    }
}

#[cfg(test)]
mod tests;
