//! Rewrites upstream responses so clients see reasoning in the route's output field and the
//! answer in `content`: SSE streams event by event, JSON bodies whole.

use std::collections::BTreeMap;

use serde_json::{Map, Value};

use std::sync::Arc;

use super::fastpath;
use super::parser::{ParserOptions, Split, ThinkParser};
use super::sse::{Event, SseDecoder};
use super::steps::StepCounter;
use super::verify::Check;
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
    /// Offsets in `reasoning_text` where each step began (first choice, for checkpoints).
    step_starts: Vec<usize>,
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
    /// The reasoning ended below the route's `min_tokens` (budget forcing): the answer that
    /// followed was withheld and the rewriter waits for [`ResponseRewriter::resume`].
    EndedEarly,
}

/// Step offsets kept per response.
const MAX_STEP_STARTS: usize = 1 << 16;

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
            let before = self.steps.steps();
            self.steps.feed(&split.reasoning);
            let after = self.steps.steps();
            if after > before && self.step_starts.len() < MAX_STEP_STARTS {
                let line_start = split.reasoning.rfind('\n').map_or(0, |i| i + 1);
                let at = self.reasoning_text.len().min(MAX_ANALYSED_BYTES) + line_start;
                for _ in before..after {
                    self.step_starts.push(at);
                }
            }
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
    options: ParserOptions,
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
    /// Send a `reasoning_checkpoint` chunk every this many completed steps (0: never).
    checkpoint_every: u32,
    next_checkpoint: u32,
    /// Budget forcing: the budget suspends the stream instead of ending it.
    force_answer: bool,
    /// Budget forcing: an end of reasoning below this many tokens suspends the stream.
    min_reasoning: Option<u64>,
    /// Waiting for a continuation: later upstream events are dropped.
    suspended: bool,
    /// Tokens generated by the upstream responses cut short before this one (their usage never
    /// came): added to the usage of the one that finishes.
    carried: Option<u64>,
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
            || !endpoint.generates()
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
            options: cfg.parser_options(),
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
            checkpoint_every: 0,
            next_checkpoint: 0,
            force_answer: false,
            min_reasoning: None,
            suspended: false,
            carried: None,
        })
    }

    /// Adds what the request said: its `response_format`, and whether usage chunks the client did
    /// not ask for must be dropped.
    pub fn with_request(mut self, response_format: Option<Value>, strip_usage: bool) -> Self {
        self.response_format = response_format;
        self.strip_usage = strip_usage;
        self
    }

    /// Streams a `reasoning_checkpoint` chunk (`choices: []`, which SDKs pass over) every
    /// `every` completed reasoning steps; 0 turns it off.
    pub fn with_checkpoints(mut self, every: u32) -> Self {
        self.checkpoint_every = every;
        self.next_checkpoint = every;
        self
    }

    /// A client's own reasoning budget (Anthropic `thinking.budget_tokens`): the smaller of it
    /// and the route's applies.
    pub fn with_reasoning_budget(mut self, budget: Option<u64>) -> Self {
        if let Some(b) = budget {
            self.max_reasoning_tokens = Some(self.max_reasoning_tokens.map_or(b, |r| r.min(b)));
        }
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
                // Rewritten chunks grow a little (`content` → `reasoning_content`): size once.
                out.reserve(input.len() + input.len() / 4 + 64);
                let mut events = Vec::new();
                let res = decoder.feed(input, &mut |e| events.push(e));
                for e in events {
                    // Budget forcing: nothing after the point the stream was suspended at.
                    if self.suspended {
                        break;
                    }
                    self.on_event(e, &mut out);
                    self.check_budget();
                }
                if self.suspended {
                    return out;
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

    fn new_choice(&self, index: u64) -> ChoiceState {
        let parser = match self.kind {
            ParserKind::None | ParserKind::Passthrough => ThinkParser::plain(),
            ParserKind::DeepseekR1 | ParserKind::Qwen3 => ThinkParser::with(self.options.clone()),
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
            step_starts: Vec::new(),
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
            .is_some_and(std::vec::Vec::is_empty)
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
        let min = self.min_reasoning.filter(|_| chunk.index == 0);
        let state = self.choices.entry(chunk.index).or_insert(fresh);
        let mut split = Split::default();
        let was_reasoning = state.parser.in_reasoning();
        state.parser.feed(&chunk.content, &mut split);
        let early = ended_early(state, was_reasoning, &split, min);
        if early {
            split.content.clear();
        }
        state.account(&split);
        if early {
            self.suspended = true;
            self.alerts.push(Alert::EndedEarly);
        }
        // `output_field: none`: reasoning was measured above and goes no further.
        let show_reasoning = !split.reasoning.is_empty() && self.field != OutputField::None;
        if split.content.is_empty()
            && !show_reasoning
            && chunk.content_only
            && !chunk.content.is_empty()
        {
            return Some(None);
        }
        let mut s = String::with_capacity(data.len() + split.reasoning.len() * 2 + 40);
        s.push_str(&data[..chunk.member.start]);
        if show_reasoning {
            for name in self.field.names() {
                s.push('"');
                s.push_str(name);
                s.push_str("\":");
                fastpath::push_json_string(&mut s, &split.reasoning);
                s.push(',');
            }
        }
        if !split.content.is_empty() || !show_reasoning {
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
                    let was_reasoning = state.parser.in_reasoning();
                    state.parser.feed(t, &mut split);
                    let min = self.min_reasoning.filter(|_| index == 0);
                    if ended_early(&state, was_reasoning, &split, min) {
                        split.content.clear();
                        self.suspended = true;
                        self.alerts.push(Alert::EndedEarly);
                    }
                }
            }
            if (finish || !stream) && !state.finished && !self.suspended {
                state.parser.finish(&mut split);
                state.finished = true;
            }
            let had_text = text.as_deref().is_some_and(|t| !t.is_empty());
            let hidden = split.reasoning.is_empty() || self.field == OutputField::None;
            emptied = stream && !finish && had_text && split.content.is_empty() && hidden;
            self.apply(&mut state, c, text_key, split, text.is_some(), stream);
            emptied &= c.is_empty();
        }
        if self.suspended && finish {
            // Budget forcing: the generation goes on in a continuation, which finishes it.
            if let Some(obj) = choice.as_object_mut() {
                obj.insert("finish_reason".into(), Value::Null);
            }
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
            OutputField::None => {}
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
                let visible = !split.content.is_empty()
                    || !split.reasoning.is_empty() && self.field != OutputField::None;
                if !visible {
                    state.account(&split);
                } else {
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

/// The reasoning of the first choice closed in this split, below the route's minimum.
fn ended_early(state: &ChoiceState, was_reasoning: bool, split: &Split, min: Option<u64>) -> bool {
    let Some(min) = min else {
        return false;
    };
    let reasoning = state.reasoning_chunks + u64::from(!split.reasoning.is_empty());
    was_reasoning && !state.parser.in_reasoning() && state.parser.closed() && reasoning < min
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

mod forcing;
mod progress;

#[cfg(test)]
mod tests;
