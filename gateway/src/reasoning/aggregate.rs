//! Rebuilds one non-streamed completion from the rewritten SSE stream. Used when a route needs to
//! watch tokens as they come (reasoning budget, step timeouts) but the client asked for JSON: the
//! gateway streams from the upstream and answers the client with the assembled body.

use std::collections::BTreeMap;

use serde_json::{json, Map, Value};

use super::sse::SseDecoder;
use crate::config::OutputField;

#[derive(Debug, Default)]
struct Choice {
    content: String,
    reasoning: String,
    finish_reason: Option<String>,
}

/// Collects rewritten SSE chunks into a chat/completions JSON body.
#[derive(Debug)]
pub struct Aggregator {
    decoder: SseDecoder,
    completions: bool,
    field: OutputField,
    template: Map<String, Value>,
    choices: BTreeMap<u64, Choice>,
    usage: Option<Value>,
    stats: Option<Value>,
    error: Option<Value>,
}

impl Aggregator {
    /// An aggregator for chat (`completions == false`) or text completions.
    pub fn new(completions: bool, field: OutputField) -> Self {
        Aggregator {
            decoder: SseDecoder::new(64 * 1024 * 1024),
            completions,
            field,
            template: Map::new(),
            choices: BTreeMap::new(),
            usage: None,
            stats: None,
            error: None,
        }
    }

    /// Feeds rewritten SSE bytes.
    pub fn feed(&mut self, sse: &[u8]) {
        let mut events = Vec::new();
        let _ = self.decoder.feed(sse, &mut |e| events.push(e));
        for e in events {
            let Some(Ok(Value::Object(chunk))) =
                e.data.as_deref().map(serde_json::from_str::<Value>)
            else {
                continue;
            };
            self.absorb(chunk);
        }
    }

    fn absorb(&mut self, mut chunk: Map<String, Value>) {
        if let Some(err) = chunk.remove("error") {
            self.error = Some(err);
            return;
        }
        for key in ["id", "created", "model", "system_fingerprint"] {
            if let Some(v) = chunk.get(key) {
                self.template.insert(key.to_string(), v.clone());
            }
        }
        if let Some(u) = chunk.remove("usage").filter(|u| !u.is_null()) {
            self.usage = Some(u);
        }
        if let Some(s) = chunk.remove("reasoning_stats") {
            self.stats = Some(s);
        }
        let Some(Value::Array(choices)) = chunk.remove("choices") else {
            return;
        };
        for c in choices {
            let index = c.get("index").and_then(Value::as_u64).unwrap_or(0);
            let entry = self.choices.entry(index).or_default();
            let holder = if self.completions {
                Some(&c)
            } else {
                c.get("delta")
            };
            if let Some(h) = holder {
                let text_key = if self.completions { "text" } else { "content" };
                entry
                    .content
                    .push_str(h.get(text_key).and_then(Value::as_str).unwrap_or(""));
                // With output_field `both` the same text is in both fields: read one.
                let r = h.get("reasoning_content").or_else(|| h.get("reasoning"));
                entry
                    .reasoning
                    .push_str(r.and_then(Value::as_str).unwrap_or(""));
            }
            if let Some(f) = c.get("finish_reason").and_then(Value::as_str) {
                entry.finish_reason = Some(f.to_string());
            }
        }
    }

    /// The JSON body. `forced_finish` replaces missing finish reasons (a stream the gateway ended).
    pub fn finish(&mut self, forced_finish: Option<&str>) -> Vec<u8> {
        let _ = self.decoder.finish(&mut |_| {});
        let mut body = self.template.clone();
        body.insert(
            "object".into(),
            Value::from(if self.completions {
                "text_completion"
            } else {
                "chat.completion"
            }),
        );
        let choices: Vec<Value> = self
            .choices
            .iter()
            .map(|(i, c)| {
                let reasoning = if c.reasoning.is_empty() {
                    Value::Null
                } else {
                    Value::String(c.reasoning.clone())
                };
                let mut holder = Map::new();
                if self.completions {
                    holder.insert("text".into(), Value::String(c.content.clone()));
                } else {
                    holder.insert("role".into(), Value::from("assistant"));
                    holder.insert("content".into(), Value::String(c.content.clone()));
                }
                if matches!(
                    self.field,
                    OutputField::ReasoningContent | OutputField::Both
                ) {
                    holder.insert("reasoning_content".into(), reasoning.clone());
                }
                if matches!(self.field, OutputField::Reasoning | OutputField::Both) {
                    holder.insert("reasoning".into(), reasoning);
                }
                let finish = forced_finish
                    .map(str::to_owned)
                    .or_else(|| c.finish_reason.clone());
                let mut choice = json!({"index": i, "finish_reason": finish});
                if let Some(obj) = choice.as_object_mut() {
                    if self.completions {
                        obj.extend(holder);
                    } else {
                        obj.insert("message".into(), Value::Object(holder));
                    }
                }
                choice
            })
            .collect();
        body.insert("choices".into(), Value::Array(choices));
        if let Some(u) = &self.usage {
            body.insert("usage".into(), u.clone());
        }
        if let Some(s) = &self.stats {
            body.insert("reasoning_stats".into(), s.clone());
        }
        if let Some(e) = &self.error {
            body.insert("error".into(), e.clone());
        }
        serde_json::to_vec(&body).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunks_become_one_message() {
        let mut a = Aggregator::new(false, OutputField::ReasoningContent);
        a.feed(b"data: {\"id\":\"x\",\"model\":\"m\",\"created\":1,\"choices\":[{\"index\":0,\"delta\":{\"reasoning_content\":\"think \"}}]}\n\n");
        a.feed(b"data: {\"choices\":[{\"index\":0,\"delta\":{\"reasoning_content\":\"more\"}}]}\n\ndata: {\"choices\":[{\"index\":0,\"delta\":{\"content\":\"42\"},\"finish_reason\":\"stop\"}]}\n\n");
        a.feed(b"data: {\"choices\":[],\"usage\":{\"completion_tokens\":3}}\n\ndata: [DONE]\n\n");
        let v: Value = serde_json::from_slice(&a.finish(None)).unwrap();
        assert_eq!(v["object"], "chat.completion");
        assert_eq!(v["id"], "x");
        assert_eq!(
            v["choices"][0]["message"]["reasoning_content"],
            "think more"
        );
        assert_eq!(v["choices"][0]["message"]["content"], "42");
        assert_eq!(v["choices"][0]["finish_reason"], "stop");
        assert_eq!(v["usage"]["completion_tokens"], 3);
    }

    #[test]
    fn a_forced_finish_marks_a_stopped_generation() {
        let mut a = Aggregator::new(true, OutputField::Both);
        a.feed(b"data: {\"choices\":[{\"index\":0,\"text\":\"\",\"reasoning_content\":\"r\",\"reasoning\":\"r\"}]}\n\n");
        let v: Value = serde_json::from_slice(&a.finish(Some("length"))).unwrap();
        assert_eq!(v["choices"][0]["reasoning"], "r");
        assert_eq!(v["choices"][0]["reasoning_content"], "r");
        assert_eq!(v["choices"][0]["finish_reason"], "length");
    }
}
