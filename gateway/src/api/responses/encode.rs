//! A generation in the Responses API: the `response` object, and the streaming grammar
//! (`response.created` … `response.completed`, each event with its `sequence_number`).

use serde_json::{json, Map, Value};

use crate::api::generation::{Delta, Finish, Generation};
use crate::api::Meta;

fn reasoning_id(m: &Meta) -> String {
    format!("rs_{}", m.id)
}
fn message_id(m: &Meta) -> String {
    format!("msg_{}", m.id)
}
fn call_item_id(m: &Meta, index: u64) -> String {
    format!("fc_{}_{index}", m.id)
}

/// A reasoning item. With `m.summary` the reasoning is also its summary: the gateway does not
/// summarise, so the client that asked for one gets the whole reasoning there.
fn reasoning_item(m: &Meta, text: &str, done: bool) -> Value {
    let content = if done {
        json!([{"type": "reasoning_text", "text": text}])
    } else {
        json!([])
    };
    let summary = if done && m.summary {
        json!([{"type": "summary_text", "text": text}])
    } else {
        json!([])
    };
    json!({"id": reasoning_id(m), "type": "reasoning", "summary": summary, "content": content,
        "status": if done { "completed" } else { "in_progress" }})
}

fn message_item(m: &Meta, text: &str, done: bool) -> Value {
    let content = if done {
        json!([{"type": "output_text", "text": text, "annotations": [], "logprobs": []}])
    } else {
        json!([])
    };
    json!({"id": message_id(m), "type": "message", "role": "assistant", "content": content,
        "status": if done { "completed" } else { "in_progress" }})
}

fn call_item(m: &Meta, g: &Generation, index: u64, done: bool) -> Value {
    let call = g.tools.get(&index).cloned().unwrap_or_default();
    json!({"id": call_item_id(m, index), "type": "function_call", "call_id": call.id,
        "name": call.name, "arguments": if done { call.arguments.as_str() } else { "" },
        "status": if done { "completed" } else { "in_progress" }})
}

/// The `response` object: `output` given, or built from the generation.
fn response(m: &Meta, g: &Generation, status: &str, output: Vec<Value>) -> Value {
    let usage = g.usage.map(|u| {
        json!({"input_tokens": u.input_tokens,
            "input_tokens_details": {"cached_tokens": u.cached_tokens},
            "output_tokens": u.output_tokens,
            "output_tokens_details": {"reasoning_tokens": u.reasoning_tokens},
            "total_tokens": u.input_tokens + u.output_tokens})
    });
    let incomplete = (status == "incomplete").then(|| {
        let reason = if g.finish == Some(Finish::ContentFilter) {
            "content_filter"
        } else {
            "max_output_tokens"
        };
        json!({"reason": reason})
    });
    let error = g.failure.as_ref().filter(|_| status == "failed").map(|f| {
        json!({"code": if f.status == 429 { "rate_limit_exceeded" } else { "server_error" },
            "message": f.message})
    });
    json!({"id": format!("resp_{}", m.id), "object": "response", "created_at": m.created,
        "status": status, "model": g.model.as_deref().unwrap_or(&m.model), "output": output,
        "error": error, "incomplete_details": incomplete, "instructions": null,
        "metadata": {}, "parallel_tool_calls": true, "temperature": null, "top_p": null,
        "tool_choice": "auto", "tools": [], "text": {"format": {"type": "text"}},
        "store": false, "usage": usage})
}

fn final_status(g: &Generation) -> &'static str {
    match (&g.failure, g.finish) {
        (Some(_), _) => "failed",
        (None, Some(Finish::Length | Finish::ContentFilter)) => "incomplete",
        _ => "completed",
    }
}

/// The whole response for a client that did not stream.
pub fn body(m: &Meta, g: &Generation) -> Value {
    let mut output = Vec::new();
    if m.show_reasoning && !g.reasoning.is_empty() {
        output.push(reasoning_item(m, &g.reasoning, true));
    }
    if !g.text.is_empty() || g.tools.is_empty() {
        output.push(message_item(m, &g.text, true));
    }
    for index in g.tools.keys() {
        output.push(call_item(m, g, *index, true));
    }
    response(m, g, final_status(g), output)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Open {
    Reasoning,
    Message,
    Tool(u64),
}

/// The streaming grammar, written as pieces arrive.
#[derive(Debug, Default)]
pub struct Stream {
    seq: u64,
    started: bool,
    open: Option<(Open, u64)>,
    /// Text of the open reasoning or message item.
    text: String,
    done: Vec<Value>,
}

impl Stream {
    fn event(&mut self, out: &mut Vec<u8>, ty: &str, fields: Value) {
        let mut v = Map::new();
        v.insert("type".into(), Value::String(ty.to_string()));
        v.insert("sequence_number".into(), Value::from(self.seq));
        if let Value::Object(f) = fields {
            v.extend(f);
        }
        self.seq += 1;
        out.extend_from_slice(format!("event: {ty}\ndata: ").as_bytes());
        out.extend_from_slice(&serde_json::to_vec(&v).unwrap_or_default());
        out.extend_from_slice(b"\n\n");
    }

    /// `response.created` and `response.in_progress`, once.
    pub fn start(&mut self, m: &Meta, g: &Generation, out: &mut Vec<u8>) {
        if self.started {
            return;
        }
        self.started = true;
        let r = response(m, g, "in_progress", Vec::new());
        self.event(out, "response.created", json!({"response": r}));
        self.event(out, "response.in_progress", json!({"response": r}));
    }

    fn close(&mut self, m: &Meta, g: &Generation, out: &mut Vec<u8>) {
        let Some((open, idx)) = self.open.take() else {
            return;
        };
        let text = std::mem::take(&mut self.text);
        let item = match open {
            Open::Reasoning => {
                let id = reasoning_id(m);
                if m.summary {
                    self.event(
                        out,
                        "response.reasoning_summary_text.done",
                        json!({"item_id": id, "output_index": idx, "summary_index": 0,
                        "text": text}),
                    );
                    self.event(
                        out,
                        "response.reasoning_summary_part.done",
                        json!({"item_id": id, "output_index": idx, "summary_index": 0,
                        "part": {"type": "summary_text", "text": text}}),
                    );
                }
                self.event(
                    out,
                    "response.reasoning_text.done",
                    json!({"item_id": id,
                    "output_index": idx, "content_index": 0, "text": text}),
                );
                self.event(
                    out,
                    "response.content_part.done",
                    json!({"item_id": id,
                    "output_index": idx, "content_index": 0,
                    "part": {"type": "reasoning_text", "text": text}}),
                );
                reasoning_item(m, &text, true)
            }
            Open::Message => {
                let id = message_id(m);
                self.event(
                    out,
                    "response.output_text.done",
                    json!({"item_id": id,
                    "output_index": idx, "content_index": 0, "text": text, "logprobs": []}),
                );
                self.event(out, "response.content_part.done", json!({"item_id": id,
                    "output_index": idx, "content_index": 0,
                    "part": {"type": "output_text", "text": text, "annotations": [], "logprobs": []}}));
                message_item(m, &text, true)
            }
            Open::Tool(i) => {
                let call = g.tools.get(&i).cloned().unwrap_or_default();
                self.event(
                    out,
                    "response.function_call_arguments.done",
                    json!({
                    "item_id": call_item_id(m, i), "output_index": idx,
                    "arguments": call.arguments, "name": call.name}),
                );
                call_item(m, g, i, true)
            }
        };
        self.event(
            out,
            "response.output_item.done",
            json!({"output_index": idx, "item": item}),
        );
        self.done.push(item);
    }

    fn open(&mut self, m: &Meta, g: &Generation, want: Open, out: &mut Vec<u8>) -> u64 {
        if let Some((open, idx)) = self.open {
            if open == want {
                return idx;
            }
            self.close(m, g, out);
        }
        let idx = self.done.len() as u64;
        self.open = Some((want, idx));
        match want {
            Open::Reasoning => {
                self.event(
                    out,
                    "response.output_item.added",
                    json!({"output_index": idx,
                    "item": reasoning_item(m, "", false)}),
                );
                if m.summary {
                    self.event(
                        out,
                        "response.reasoning_summary_part.added",
                        json!({"item_id": reasoning_id(m), "output_index": idx,
                        "summary_index": 0, "part": {"type": "summary_text", "text": ""}}),
                    );
                }
                self.event(
                    out,
                    "response.content_part.added",
                    json!({"item_id": reasoning_id(m),
                    "output_index": idx, "content_index": 0,
                    "part": {"type": "reasoning_text", "text": ""}}),
                );
            }
            Open::Message => {
                self.event(
                    out,
                    "response.output_item.added",
                    json!({"output_index": idx,
                    "item": message_item(m, "", false)}),
                );
                self.event(out, "response.content_part.added", json!({"item_id": message_id(m),
                    "output_index": idx, "content_index": 0,
                    "part": {"type": "output_text", "text": "", "annotations": [], "logprobs": []}}));
            }
            Open::Tool(i) => {
                self.event(
                    out,
                    "response.output_item.added",
                    json!({"output_index": idx,
                    "item": call_item(m, g, i, false)}),
                );
            }
        }
        idx
    }

    /// Events for one piece of output.
    pub fn delta(&mut self, m: &Meta, g: &Generation, d: &Delta, out: &mut Vec<u8>) {
        self.start(m, g, out);
        match d {
            Delta::Reasoning(t) if m.show_reasoning => {
                let idx = self.open(m, g, Open::Reasoning, out);
                self.text.push_str(t);
                if m.summary {
                    self.event(
                        out,
                        "response.reasoning_summary_text.delta",
                        json!({"item_id": reasoning_id(m), "output_index": idx,
                        "summary_index": 0, "delta": t}),
                    );
                }
                self.event(
                    out,
                    "response.reasoning_text.delta",
                    json!({"item_id": reasoning_id(m),
                    "output_index": idx, "content_index": 0, "delta": t}),
                );
            }
            Delta::Reasoning(_) => {}
            Delta::Text(t) => {
                let idx = self.open(m, g, Open::Message, out);
                self.text.push_str(t);
                self.event(
                    out,
                    "response.output_text.delta",
                    json!({"item_id": message_id(m),
                    "output_index": idx, "content_index": 0, "delta": t, "logprobs": []}),
                );
            }
            Delta::Tool { index, arguments } => {
                let idx = self.open(m, g, Open::Tool(*index), out);
                if !arguments.is_empty() {
                    self.event(out, "response.function_call_arguments.delta", json!({
                        "item_id": call_item_id(m, *index), "output_index": idx, "delta": arguments}));
                }
            }
        }
    }

    /// Closes what is open and ends with `response.completed`, `.incomplete` or `.failed`.
    pub fn end(&mut self, m: &Meta, g: &Generation, out: &mut Vec<u8>) {
        self.start(m, g, out);
        self.close(m, g, out);
        let status = final_status(g);
        let r = response(m, g, status, std::mem::take(&mut self.done));
        self.event(out, &format!("response.{status}"), json!({"response": r}));
    }
}
