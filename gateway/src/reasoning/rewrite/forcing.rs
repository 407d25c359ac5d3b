//! Budget forcing in the rewriter (issue 30): the stream is suspended at the budget or at an
//! early end of reasoning, and resumed on the continuation's stream as if nothing happened: the
//! same choice state, reasoning and answer text, token counts and one usage at the end.

use serde_json::{Map, Value};

use super::{Mode, ResponseRewriter, MAX_EVENT_BYTES};
use crate::reasoning::budget::Continue;
use crate::reasoning::parser::Split;
use crate::reasoning::sse::{Event, SseDecoder};

impl ResponseRewriter {
    /// Budget forcing: the budget suspends the stream (`answer`) instead of only raising its
    /// alert, and an end of reasoning below `min_tokens` suspends it too.
    pub fn with_forcing(mut self, answer: bool, min_tokens: Option<u64>) -> Self {
        self.force_answer = answer;
        self.min_reasoning = min_tokens;
        self
    }

    /// No more extensions: an early end of reasoning is accepted from now on.
    pub fn stop_extending(&mut self) {
        self.min_reasoning = None;
    }

    /// Tokens generated before the continuation now under way (the first choice's chunks).
    pub fn carried_tokens(&self) -> u64 {
        self.carried.unwrap_or(0)
    }

    /// Waiting for a continuation.
    pub fn is_suspended(&self) -> bool {
        self.suspended
    }

    /// What the first choice said so far, answer text before its reasoning and the reasoning,
    /// or `None` when it cannot be continued (several choices, or more text than is kept).
    pub fn said_so_far(&self) -> Option<(String, String)> {
        let (reasoning, answer) = self.full_text()?;
        Some((answer, reasoning))
    }

    /// The continuation's stream follows: the first choice goes on in answer (`Answer`, after
    /// the bridge, which the client gets as answer text) or in reasoning (`Extend`, after the
    /// word, which the client gets as reasoning). Returns the bytes for the client.
    pub fn resume(&mut self, how: Continue<'_>) -> Vec<u8> {
        let mut out = Vec::new();
        let Some(mut state) = self.choices.remove(&0) else {
            return out;
        };
        self.carried = Some(state.reasoning_chunks + state.content_chunks);
        let mut split = Split::default();
        match how {
            Continue::Answer { bridge } => {
                state.parser.resume_answer(bridge.is_empty());
                split.content.push_str(bridge);
            }
            Continue::Extend { word } => {
                state.parser.resume_reasoning();
                let glued = state
                    .reasoning_text
                    .chars()
                    .last()
                    .is_some_and(|c| !c.is_whitespace());
                if glued {
                    split.reasoning.push(' ');
                }
                split.reasoning.push_str(word);
            }
        }
        state.finished = false;
        state.finish_reason = None;
        let (reasoning_chunks, content_chunks) = (state.reasoning_chunks, state.content_chunks);
        let mut delta = Map::new();
        let text_key = if self.completions { "text" } else { "content" };
        self.apply(&mut state, &mut delta, text_key, split, false, true);
        // Gateway text, not generated: kept in the text, not counted as tokens.
        (state.reasoning_chunks, state.content_chunks) = (reasoning_chunks, content_chunks);
        self.choices.insert(0, state);
        if !delta.is_empty() {
            let mut choice = Map::new();
            choice.insert("index".into(), Value::from(0));
            if self.completions {
                choice.extend(delta);
            } else {
                choice.insert("delta".into(), Value::Object(delta));
            }
            choice.insert("finish_reason".into(), Value::Null);
            let mut chunk = self.template.clone();
            chunk.insert("choices".into(), Value::Array(vec![Value::Object(choice)]));
            Event {
                data: Some(serde_json::to_string(&chunk).unwrap_or_default()),
                ..Event::default()
            }
            .write(&mut out);
        }
        self.mode = Mode::Stream {
            decoder: SseDecoder::new(MAX_EVENT_BYTES),
            saw_done: false,
        };
        self.suspended = false;
        out
    }
}

#[cfg(test)]
mod tests;
