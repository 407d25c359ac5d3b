//! Reasoning figures of a response passed through in its own API (an upstream that serves
//! Responses or Messages itself): the body goes to the client untouched; this reads a copy of
//! it for metrics and the access log.

use serde_json::Value;

use super::Api;
use crate::reasoning::sse::SseDecoder;
use crate::reasoning::steps::StepCounter;
use crate::reasoning::Report;

/// Largest event or body read; past it the figures are what was read so far.
const MAX_BYTES: usize = 4 * 1024 * 1024;
/// Reasoning text kept for the step count.
const MAX_REASONING: usize = 1 << 20;

#[derive(Debug)]
enum Input {
    Sse(SseDecoder),
    Body(Vec<u8>),
    Off,
}

/// Reads one passed-through response.
#[derive(Debug)]
pub struct Meter {
    api: Api,
    input: Input,
    reasoning: String,
    /// Reasoning summary text (Responses), counted when no reasoning text came.
    summary: String,
    answer_chars: usize,
    /// Input, output and reasoning tokens, as reported.
    usage: (Option<u64>, Option<u64>, Option<u64>),
    finish: Option<String>,
}

impl Meter {
    /// A meter for a response in `api` (its SSE stream when `sse`, else one JSON body).
    pub fn new(api: Api, sse: bool) -> Self {
        Meter {
            api,
            input: if sse {
                Input::Sse(SseDecoder::new(MAX_BYTES))
            } else {
                Input::Body(Vec::new())
            },
            reasoning: String::new(),
            summary: String::new(),
            answer_chars: 0,
            usage: (None, None, None),
            finish: None,
        }
    }

    /// Reads more of the body.
    pub fn feed(&mut self, bytes: &[u8]) {
        let mut events = Vec::new();
        match &mut self.input {
            Input::Sse(d) => {
                if d.feed(bytes, &mut |e| events.push(e)).is_err() {
                    self.input = Input::Off;
                }
            }
            Input::Body(buf) if buf.len() + bytes.len() <= MAX_BYTES => {
                buf.extend_from_slice(bytes);
            }
            _ => self.input = Input::Off,
        }
        for e in events {
            if let Some(v) = e.data.and_then(|d| serde_json::from_str::<Value>(&d).ok()) {
                self.event(&v);
            }
        }
    }

    /// End of the body.
    pub fn finish(&mut self) {
        if let Input::Body(buf) = std::mem::replace(&mut self.input, Input::Off) {
            if let Ok(v) = serde_json::from_slice::<Value>(&buf) {
                self.whole(&v);
            }
        }
    }

    fn push_reasoning(&mut self, t: &str) {
        if self.reasoning.len() < MAX_REASONING {
            self.reasoning.push_str(t);
        }
    }

    fn event(&mut self, v: &Value) {
        let s = |k: &str| v.get(k).and_then(Value::as_str).unwrap_or("");
        match (self.api, s("type")) {
            (Api::Responses, "response.reasoning_text.delta") => self.push_reasoning(s("delta")),
            (Api::Responses, "response.reasoning_summary_text.delta") => {
                self.summary.push_str(s("delta"));
            }
            (Api::Responses, "response.output_text.delta") => {
                self.answer_chars += s("delta").chars().count();
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
            }
            (Api::Messages, "content_block_delta") => {
                match v.pointer("/delta/type").and_then(Value::as_str) {
                    Some("thinking_delta") => {
                        let t = v
                            .pointer("/delta/thinking")
                            .and_then(Value::as_str)
                            .unwrap_or("");
                        self.push_reasoning(t);
                    }
                    Some("text_delta") => {
                        let t = v
                            .pointer("/delta/text")
                            .and_then(Value::as_str)
                            .unwrap_or("");
                        self.answer_chars += t.chars().count();
                    }
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

    fn responses_end(&mut self, r: &Value) {
        let n = |p: &str| r.pointer(p).and_then(Value::as_u64);
        self.usage = (
            n("/usage/input_tokens"),
            n("/usage/output_tokens"),
            n("/usage/output_tokens_details/reasoning_tokens"),
        );
        let has_call = r["output"]
            .as_array()
            .is_some_and(|o| o.iter().any(|i| i["type"] == "function_call"));
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
        for item in items.into_iter().flatten() {
            match (self.api, item["type"].as_str()) {
                (Api::Responses, Some("reasoning")) => {
                    for part in item["content"].as_array().into_iter().flatten() {
                        self.push_reasoning(part["text"].as_str().unwrap_or(""));
                    }
                    for part in item["summary"].as_array().into_iter().flatten() {
                        self.summary.push_str(part["text"].as_str().unwrap_or(""));
                    }
                }
                (Api::Responses, Some("message")) => {
                    for part in item["content"].as_array().into_iter().flatten() {
                        self.answer_chars += part["text"].as_str().map_or(0, |t| t.chars().count());
                    }
                }
                (Api::Messages, Some("thinking")) => {
                    self.push_reasoning(item["thinking"].as_str().unwrap_or(""));
                }
                (Api::Messages, Some("text")) => {
                    self.answer_chars += item["text"].as_str().map_or(0, |t| t.chars().count());
                }
                _ => {}
            }
        }
        match self.api {
            Api::Responses => self.responses_end(v),
            _ => {
                self.usage.0 = v.pointer("/usage/input_tokens").and_then(Value::as_u64);
                self.usage.1 = v.pointer("/usage/output_tokens").and_then(Value::as_u64);
                self.finish = v["stop_reason"].as_str().map(messages_finish);
            }
        }
    }

    /// The figures, in the chat path's terms.
    pub fn report(&self) -> Report {
        let reasoning = if self.reasoning.is_empty() {
            &self.summary
        } else {
            &self.reasoning
        };
        let mut steps = StepCounter::default();
        steps.feed(reasoning);
        // About four characters a token where the upstream gave no count.
        let estimate = |chars: usize| (chars as u64).div_ceil(4);
        let reasoning_chars = reasoning.chars().count();
        let (input, output, given) = self.usage;
        let reasoning_tokens = given.unwrap_or_else(|| estimate(reasoning_chars));
        let answer_tokens = match output {
            Some(o) => o.saturating_sub(reasoning_tokens),
            None => estimate(self.answer_chars),
        };
        Report {
            reasoning_tokens,
            answer_tokens,
            tokens_counted: given.is_none(),
            reasoning_chars,
            steps: steps.steps(),
            corrections: 0,
            unterminated: false,
            finish_reason: self.finish.clone(),
            verifications: Vec::new(),
            prompt_tokens: input,
        }
    }
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
mod tests {
    use super::*;

    #[test]
    fn a_responses_stream_gives_reasoning_tokens_steps_and_finish() {
        let events = [
            r#"{"type":"response.reasoning_text.delta","delta":"Step 1: add.\n\n"}"#,
            r#"{"type":"response.reasoning_text.delta","delta":"Step 2: check."}"#,
            r#"{"type":"response.output_text.delta","delta":"4"}"#,
            r#"{"type":"response.completed","response":{"status":"completed","output":[],"usage":{"input_tokens":3,"output_tokens":20,"output_tokens_details":{"reasoning_tokens":15}}}}"#,
        ];
        let body: String = events
            .iter()
            .map(|e| format!("event: x\ndata: {e}\n\n"))
            .collect();
        let mut m = Meter::new(Api::Responses, true);
        for b in body.as_bytes().chunks(7) {
            m.feed(b);
        }
        m.finish();
        let r = m.report();
        assert_eq!(
            (r.reasoning_tokens, r.answer_tokens, r.prompt_tokens),
            (15, 5, Some(3))
        );
        assert_eq!((r.steps, r.finish_reason.as_deref()), (2, Some("stop")));
    }

    #[test]
    fn a_messages_body_gives_its_figures() {
        let body = br#"{"content":[{"type":"thinking","thinking":"hmm, let me see"},{"type":"text","text":"ok"}],"stop_reason":"max_tokens","usage":{"input_tokens":4,"output_tokens":9}}"#;
        let mut m = Meter::new(Api::Messages, false);
        m.feed(body);
        m.finish();
        let r = m.report();
        assert_eq!((r.reasoning_tokens, r.prompt_tokens), (4, Some(4)));
        assert!(r.tokens_counted);
        assert_eq!(r.finish_reason.as_deref(), Some("length"));
    }
}
