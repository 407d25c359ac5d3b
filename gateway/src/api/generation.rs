//! One generation as every client API sees it: reasoning, answer, tool calls, usage and how it
//! finished, read from the chat path's (already rewritten) output, a stream chunk or a whole
//! completion at a time.

use std::collections::BTreeMap;

use serde_json::Value;

/// A piece of output, in arrival order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Delta {
    /// Reasoning text.
    Reasoning(String),
    /// Answer text.
    Text(String),
    /// A tool call, or more of one: `index` is the chat `tool_calls[].index`.
    Tool {
        /// Which call.
        index: u64,
        /// Arguments text added by this piece.
        arguments: String,
    },
}

/// A function call the model made.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ToolCall {
    /// The upstream's call id (clients send it back with the result).
    pub id: String,
    /// Function name.
    pub name: String,
    /// JSON arguments as text.
    pub arguments: String,
}

/// Token counts.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Usage {
    /// Prompt tokens.
    pub input_tokens: u64,
    /// Completion tokens, reasoning included.
    pub output_tokens: u64,
    /// Of those, reasoning.
    pub reasoning_tokens: u64,
    /// Prompt tokens served from the upstream's prefix cache.
    pub cached_tokens: u64,
}

/// Why generation ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Finish {
    /// Natural end or a stop sequence.
    Stop,
    /// The token limit (or the gateway's reasoning budget) cut it.
    Length,
    /// The model called tools.
    ToolCalls,
    /// The upstream's content filter.
    ContentFilter,
}

/// An error reported instead of (or in the middle of) the output.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    /// HTTP status it was (or would have been) answered with.
    pub status: u16,
    /// OpenAI error `code`, when given.
    pub code: Option<String>,
    /// Human-readable message.
    pub message: String,
}

/// Everything read so far.
#[derive(Debug, Clone, Default)]
pub struct Generation {
    /// The upstream's model name, when it said.
    pub model: Option<String>,
    /// Reasoning text.
    pub reasoning: String,
    /// Answer text.
    pub text: String,
    /// Tool calls by chat index.
    pub tools: BTreeMap<u64, ToolCall>,
    /// Token counts, when the upstream reported them.
    pub usage: Option<Usage>,
    /// How it ended, once known.
    pub finish: Option<Finish>,
    /// The stop string that ended it, when the upstream names it (vLLM's `stop_reason`).
    pub stop_string: Option<String>,
    /// The error that ended it.
    pub failure: Option<Failure>,
}

impl Generation {
    /// Reads one chat stream chunk (`data:` JSON), first choice only; returns its pieces.
    pub fn read_chunk(&mut self, chunk: &Value) -> Vec<Delta> {
        self.read(chunk, 500, "delta")
    }

    /// Reads a whole chat completion (or an OpenAI error body); returns its pieces.
    pub fn read_completion(&mut self, body: &Value, status: u16) -> Vec<Delta> {
        self.read(body, status, "message")
    }

    /// Reads a chunk or a completion: an `error` object (failing with `status`), else the
    /// metadata and the first choice's `part` (`delta` or `message`) and finish.
    fn read(&mut self, v: &Value, status: u16, part: &str) -> Vec<Delta> {
        let mut out = Vec::new();
        if let Some(err) = v.get("error").filter(|e| e.is_object()) {
            self.failure = Some(failure_of(status, err));
            return out;
        }
        self.read_meta(v);
        if let Some(choice) = first_choice(v) {
            if let Some(m) = choice.get(part) {
                self.read_message(m, &mut out);
            }
            self.read_finish(choice);
        }
        out
    }

    fn read_meta(&mut self, v: &Value) {
        if let Some(m) = v.get("model").and_then(Value::as_str) {
            self.model = Some(m.to_string());
        }
        if let Some(u) = v.get("usage").filter(|u| u.is_object()) {
            let n = |p: &[&str]| {
                p.iter()
                    .try_fold(u, |v, k| v.get(*k))
                    .and_then(Value::as_u64)
                    .unwrap_or(0)
            };
            self.usage = Some(Usage {
                input_tokens: n(&["prompt_tokens"]),
                output_tokens: n(&["completion_tokens"]),
                reasoning_tokens: n(&["completion_tokens_details", "reasoning_tokens"]),
                cached_tokens: n(&["prompt_tokens_details", "cached_tokens"]),
            });
        }
    }

    fn read_finish(&mut self, choice: &Value) {
        let finish = match choice.get("finish_reason").and_then(Value::as_str) {
            Some("stop") => Finish::Stop,
            Some("length") => Finish::Length,
            Some("tool_calls" | "function_call") => Finish::ToolCalls,
            Some("content_filter") => Finish::ContentFilter,
            Some(_) => Finish::Stop,
            None => return,
        };
        self.finish = Some(finish);
        if let Some(s) = choice.get("stop_reason").and_then(Value::as_str) {
            self.stop_string = Some(s.to_string());
        }
    }

    /// A `delta` or `message` object: reasoning (either field, once), content, tool calls.
    fn read_message(&mut self, m: &Value, out: &mut Vec<Delta>) {
        let reasoning = m
            .get("reasoning_content")
            .and_then(Value::as_str)
            .or_else(|| m.get("reasoning").and_then(Value::as_str))
            .filter(|s| !s.is_empty());
        if let Some(r) = reasoning {
            self.reasoning.push_str(r);
            out.push(Delta::Reasoning(r.to_string()));
        }
        if let Some(t) = m
            .get("content")
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty())
        {
            self.text.push_str(t);
            out.push(Delta::Text(t.to_string()));
        }
        let calls = m.get("tool_calls").and_then(Value::as_array);
        for (pos, call) in calls.into_iter().flatten().enumerate() {
            let index = call
                .get("index")
                .and_then(Value::as_u64)
                .unwrap_or(pos as u64);
            let entry = self.tools.entry(index).or_default();
            if let Some(id) = call.get("id").and_then(Value::as_str) {
                entry.id = id.to_string();
            }
            let f = call.get("function");
            if let Some(name) = f.and_then(|f| f.get("name")).and_then(Value::as_str) {
                entry.name.push_str(name);
            }
            let args = f
                .and_then(|f| f.get("arguments"))
                .and_then(Value::as_str)
                .unwrap_or("");
            entry.arguments.push_str(args);
            if entry.id.is_empty() {
                entry.id = format!("call_{index}");
            }
            out.push(Delta::Tool {
                index,
                arguments: args.to_string(),
            });
        }
    }
}

fn first_choice(v: &Value) -> Option<&Value> {
    v.get("choices")?
        .as_array()?
        .iter()
        .find(|c| c.get("index").and_then(Value::as_u64).unwrap_or(0) == 0)
}

fn failure_of(status: u16, err: &Value) -> Failure {
    Failure {
        status,
        code: err.get("code").and_then(Value::as_str).map(str::to_owned),
        message: err
            .get("message")
            .and_then(Value::as_str)
            .unwrap_or("The upstream failed.")
            .to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn stream_chunks_give_reasoning_text_tools_usage_and_finish() {
        let mut g = Generation::default();
        let d = g.read_chunk(&json!({"model": "m", "choices": [{"index": 0, "delta":
            {"reasoning_content": "think", "reasoning": "think"}}]}));
        assert_eq!(d, vec![Delta::Reasoning("think".into())]);
        g.read_chunk(&json!({"choices": [{"index": 0, "delta": {"content": "hi"}}]}));
        g.read_chunk(&json!({"choices": [{"index": 0, "delta": {"tool_calls": [
            {"index": 0, "id": "call_1", "function": {"name": "f", "arguments": "{\"a\""}}]}}]}));
        g.read_chunk(&json!({"choices": [{"index": 0, "delta": {"tool_calls": [
            {"index": 0, "function": {"arguments": ":1}"}}]}, "finish_reason": "tool_calls"}]}));
        g.read_chunk(
            &json!({"choices": [], "usage": {"prompt_tokens": 3, "completion_tokens": 9,
            "completion_tokens_details": {"reasoning_tokens": 4}}}),
        );
        assert_eq!((g.reasoning.as_str(), g.text.as_str()), ("think", "hi"));
        assert_eq!(g.tools[&0].arguments, "{\"a\":1}");
        assert_eq!(g.tools[&0].name, "f");
        assert_eq!(g.finish, Some(Finish::ToolCalls));
        assert_eq!(g.usage.map(|u| u.reasoning_tokens), Some(4));
        g.read_chunk(&json!({"error": {"message": "cut", "code": "x"}}));
        assert_eq!(g.failure.map(|f| f.message), Some("cut".to_string()));
    }
}
