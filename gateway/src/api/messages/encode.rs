//! A generation in the Messages API: the `message` object, and the streaming events
//! (`message_start`, `content_block_*`, `message_delta`, `message_stop`, `ping`, `error`).

use serde_json::{json, Map, Value};

use super::error_value;
use crate::api::generation::{Delta, Finish, Generation};
use crate::api::{signature, Meta};

fn tool_input(arguments: &str) -> Value {
    match serde_json::from_str::<Value>(arguments) {
        Ok(v @ Value::Object(_)) => v,
        _ if arguments.trim().is_empty() => json!({}),
        // Not an object: still returned, so the client sees what the model produced.
        _ => json!({"arguments": arguments}),
    }
}

fn stop(m: &Meta, g: &Generation) -> (&'static str, Value) {
    match g.finish {
        Some(Finish::Length) => ("max_tokens", Value::Null),
        Some(Finish::ToolCalls) => ("tool_use", Value::Null),
        _ if !g.tools.is_empty() => ("tool_use", Value::Null),
        _ => match g
            .stop_string
            .as_ref()
            .filter(|s| m.stop_sequences.contains(s))
        {
            Some(s) => ("stop_sequence", Value::String(s.clone())),
            None => ("end_turn", Value::Null),
        },
    }
}

fn usage(g: &Generation) -> Value {
    let u = g.usage.unwrap_or_default();
    json!({"input_tokens": u.input_tokens, "output_tokens": u.output_tokens,
        "cache_creation_input_tokens": 0, "cache_read_input_tokens": u.cached_tokens})
}

fn message(m: &Meta, g: &Generation, content: Vec<Value>, done: bool) -> Value {
    let (reason, seq) = if done { stop(m, g) } else { ("", Value::Null) };
    json!({"id": format!("msg_{}", m.id), "type": "message", "role": "assistant",
        "model": g.model.as_deref().unwrap_or(&m.model), "content": content,
        "stop_reason": if done { Value::from(reason) } else { Value::Null },
        "stop_sequence": seq, "usage": usage(g)})
}

/// The whole message for a client that did not stream.
pub fn body(m: &Meta, g: &Generation) -> Value {
    if let Some(f) = &g.failure {
        return error_value(f.status.max(500), &f.message);
    }
    let mut content = Vec::new();
    if m.show_reasoning && !g.reasoning.is_empty() {
        content.push(json!({"type": "thinking", "thinking": g.reasoning,
            "signature": signature::sign(&g.reasoning)}));
    }
    if !g.text.is_empty() {
        content.push(json!({"type": "text", "text": g.text}));
    }
    for call in g.tools.values() {
        content.push(json!({"type": "tool_use", "id": call.id, "name": call.name,
            "input": tool_input(&call.arguments)}));
    }
    message(m, g, content, true)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Open {
    Thinking,
    Text,
    Tool(u64),
}

/// The streaming events, written as pieces arrive.
#[derive(Debug, Default)]
pub struct Stream {
    started: bool,
    open: Option<(Open, u64)>,
    next: u64,
    /// Thinking text of the open block (what its signature covers).
    thinking: String,
}

fn event(out: &mut Vec<u8>, ty: &str, fields: Value) {
    let mut v = Map::new();
    v.insert("type".into(), Value::String(ty.to_string()));
    if let Value::Object(f) = fields {
        v.extend(f);
    }
    out.extend_from_slice(format!("event: {ty}\ndata: ").as_bytes());
    out.extend_from_slice(&serde_json::to_vec(&v).unwrap_or_default());
    out.extend_from_slice(b"\n\n");
}

impl Stream {
    /// `message_start` and a `ping`, once.
    pub fn start(&mut self, m: &Meta, g: &Generation, out: &mut Vec<u8>) {
        if self.started {
            return;
        }
        self.started = true;
        event(
            out,
            "message_start",
            json!({"message": message(m, g, Vec::new(), false)}),
        );
        event(out, "ping", json!({}));
    }

    fn close(&mut self, out: &mut Vec<u8>) {
        let Some((open, index)) = self.open.take() else {
            return;
        };
        if open == Open::Thinking {
            let sig = signature::sign(&std::mem::take(&mut self.thinking));
            event(
                out,
                "content_block_delta",
                json!({"index": index,
                "delta": {"type": "signature_delta", "signature": sig}}),
            );
        }
        event(out, "content_block_stop", json!({"index": index}));
    }

    fn open(&mut self, g: &Generation, want: Open, out: &mut Vec<u8>) -> u64 {
        if let Some((open, index)) = self.open {
            if open == want {
                return index;
            }
            self.close(out);
        }
        let index = self.next;
        self.next += 1;
        self.open = Some((want, index));
        let block = match want {
            Open::Thinking => json!({"type": "thinking", "thinking": "", "signature": ""}),
            Open::Text => json!({"type": "text", "text": ""}),
            Open::Tool(i) => {
                let call = g.tools.get(&i).cloned().unwrap_or_default();
                json!({"type": "tool_use", "id": call.id, "name": call.name, "input": {}})
            }
        };
        event(
            out,
            "content_block_start",
            json!({"index": index, "content_block": block}),
        );
        index
    }

    /// Events for one piece of output.
    pub fn delta(&mut self, m: &Meta, g: &Generation, d: &Delta, out: &mut Vec<u8>) {
        self.start(m, g, out);
        let (index, delta) = match d {
            Delta::Reasoning(t) if m.show_reasoning => {
                let index = self.open(g, Open::Thinking, out);
                self.thinking.push_str(t);
                (index, json!({"type": "thinking_delta", "thinking": t}))
            }
            Delta::Reasoning(_) => return,
            Delta::Text(t) => {
                let index = self.open(g, Open::Text, out);
                (index, json!({"type": "text_delta", "text": t}))
            }
            Delta::Tool {
                index: i,
                arguments,
            } => {
                let index = self.open(g, Open::Tool(*i), out);
                if arguments.is_empty() {
                    return;
                }
                (
                    index,
                    json!({"type": "input_json_delta", "partial_json": arguments}),
                )
            }
        };
        event(
            out,
            "content_block_delta",
            json!({"index": index, "delta": delta}),
        );
    }

    /// Closes the open block and ends with `message_delta` and `message_stop`, or `error`.
    pub fn end(&mut self, m: &Meta, g: &Generation, out: &mut Vec<u8>) {
        self.start(m, g, out);
        self.close(out);
        if let Some(f) = &g.failure {
            let v = error_value(f.status.max(500), &f.message);
            out.extend_from_slice(b"event: error\ndata: ");
            out.extend_from_slice(&serde_json::to_vec(&v).unwrap_or_default());
            out.extend_from_slice(b"\n\n");
            return;
        }
        let (reason, seq) = stop(m, g);
        let u = g.usage.unwrap_or_default();
        event(
            out,
            "message_delta",
            json!({"delta": {"stop_reason": reason, "stop_sequence": seq},
            "usage": {"input_tokens": u.input_tokens, "output_tokens": u.output_tokens}}),
        );
        event(out, "message_stop", json!({}));
    }
}
