//! A cache hit written in the client's requested shape: SSE chunks like a live response
//! (role, reasoning deltas, answer deltas, finish, optional usage, `[DONE]`) or a JSON body.

use serde_json::{json, Map, Value};

use crate::store::Record;

/// Bytes of text per replayed delta (cut at a whitespace or character boundary).
const DELTA_BYTES: usize = 48;

/// How the client asked.
#[derive(Debug, Clone, Copy)]
pub struct Shape<'a> {
    /// `stream: true`.
    pub stream: bool,
    /// `stream_options.include_usage: true`.
    pub include_usage: bool,
    /// The field(s) that carry reasoning to this client (`reasoning_content`, `reasoning`).
    pub reasoning_fields: &'a [&'a str],
    /// The `model` the client asked for.
    pub model: &'a str,
    /// The response id.
    pub id: &'a str,
    /// Unix seconds.
    pub created: u64,
}

fn usage(record: &Record) -> Option<Value> {
    record.usage.map(|u| {
        json!({
            "prompt_tokens": u.prompt_tokens,
            "completion_tokens": u.completion_tokens,
            "total_tokens": u.prompt_tokens + u.completion_tokens,
            "completion_tokens_details": {"reasoning_tokens": u.reasoning_tokens},
        })
    })
}

/// The full response body for a hit.
pub fn body(record: &Record, shape: &Shape) -> Vec<u8> {
    if shape.stream {
        sse(record, shape)
    } else {
        json_body(record, shape)
    }
}

fn json_body(record: &Record, shape: &Shape) -> Vec<u8> {
    let mut message = Map::new();
    message.insert("role".into(), json!("assistant"));
    message.insert("content".into(), json!(record.answer));
    let reasoning = if record.reasoning.is_empty() {
        Value::Null
    } else {
        json!(record.reasoning)
    };
    for f in shape.reasoning_fields {
        message.insert((*f).into(), reasoning.clone());
    }
    let mut resp = json!({
        "id": shape.id,
        "object": "chat.completion",
        "created": shape.created,
        "model": shape.model,
        "choices": [{
            "index": 0,
            "message": Value::Object(message),
            "logprobs": null,
            "finish_reason": "stop",
        }],
    });
    if let Some(u) = usage(record) {
        resp["usage"] = u;
    }
    serde_json::to_vec(&resp).unwrap_or_default()
}

fn sse(record: &Record, shape: &Shape) -> Vec<u8> {
    let mut out = Vec::with_capacity(record.reasoning.len() * 3 + record.answer.len() * 3 + 512);
    let chunk = |delta: Value, finish: Value, out: &mut Vec<u8>| {
        let c = json!({
            "id": shape.id,
            "object": "chat.completion.chunk",
            "created": shape.created,
            "model": shape.model,
            "choices": [{"index": 0, "delta": delta, "logprobs": null, "finish_reason": finish}],
        });
        event(&c, out);
    };
    chunk(
        json!({"role": "assistant", "content": ""}),
        Value::Null,
        &mut out,
    );
    // A route that shows no reasoning (`output_field: none`) replays none, not empty deltas.
    let reasoning = if shape.reasoning_fields.is_empty() {
        ""
    } else {
        record.reasoning.as_str()
    };
    for piece in pieces(reasoning) {
        let mut d = Map::new();
        for f in shape.reasoning_fields {
            d.insert((*f).into(), json!(piece));
        }
        chunk(Value::Object(d), Value::Null, &mut out);
    }
    for piece in pieces(&record.answer) {
        chunk(json!({ "content": piece }), Value::Null, &mut out);
    }
    chunk(json!({}), json!("stop"), &mut out);
    if shape.include_usage {
        if let Some(u) = usage(record) {
            let c = json!({
                "id": shape.id,
                "object": "chat.completion.chunk",
                "created": shape.created,
                "model": shape.model,
                "choices": [],
                "usage": u,
            });
            event(&c, &mut out);
        }
    }
    out.extend_from_slice(b"data: [DONE]\n\n");
    out
}

fn event(v: &Value, out: &mut Vec<u8>) {
    out.extend_from_slice(b"data: ");
    // Serialising a Value cannot fail.
    let _ = serde_json::to_writer(&mut *out, v);
    out.extend_from_slice(b"\n\n");
}

/// Splits text into deltas of about [`DELTA_BYTES`], after whitespace where possible.
pub fn pieces(text: &str) -> Vec<&str> {
    let mut out = Vec::new();
    let mut rest = text;
    while !rest.is_empty() {
        if rest.len() <= DELTA_BYTES {
            out.push(rest);
            break;
        }
        let mut cut = DELTA_BYTES;
        while !rest.is_char_boundary(cut) {
            cut -= 1;
        }
        if let Some(ws) = rest[..cut].rfind(char::is_whitespace) {
            if ws > 0 {
                cut = ws + rest[ws..].chars().next().map_or(1, char::len_utf8);
            }
        }
        out.push(&rest[..cut]);
        rest = &rest[cut..];
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record() -> Record {
        Record {
            route: "r".into(),
            tenant: "t".into(),
            partition: String::new(),
            exact: String::new(),
            problem: "What is 2+2?".into(),
            reasoning: "Two plus two. That makes four, no doubt about it at all, really — ünïcödé ✓ padding padding".into(),
            answer: "4".into(),
            model: "m".into(),
            usage: Some(crate::store::Usage {
                prompt_tokens: 10,
                completion_tokens: 20,
                reasoning_tokens: 15,
            }),
            created: 0,
            expires: 1,
        }
    }

    fn shape(stream: bool) -> Shape<'static> {
        Shape {
            stream,
            include_usage: true,
            reasoning_fields: &["reasoning_content"],
            model: "asked",
            id: "chatcmpl-x",
            created: 7,
        }
    }

    #[test]
    fn pieces_rejoin_to_the_text() {
        let r = record();
        let p = pieces(&r.reasoning);
        assert!(p.len() > 1);
        assert_eq!(p.concat(), r.reasoning);
        assert!(p.iter().all(|x| x.len() <= DELTA_BYTES));
    }

    #[test]
    fn sse_replay_carries_reasoning_then_answer_then_done() {
        let body = String::from_utf8(body(&record(), &shape(true))).unwrap();
        let events: Vec<Value> = body
            .split("\n\n")
            .filter_map(|e| e.strip_prefix("data: "))
            .filter(|d| *d != "[DONE]")
            .map(|d| serde_json::from_str(d).unwrap())
            .collect();
        assert!(body.ends_with("data: [DONE]\n\n"));
        let reasoning: String = events
            .iter()
            .filter_map(|e| e["choices"][0]["delta"]["reasoning_content"].as_str())
            .collect();
        let answer: String = events
            .iter()
            .filter_map(|e| e["choices"][0]["delta"]["content"].as_str())
            .collect();
        assert_eq!(reasoning, record().reasoning);
        assert_eq!(answer, "4");
        assert_eq!(events[0]["choices"][0]["delta"]["role"], "assistant");
        assert_eq!(events[0]["model"], "asked");
        let last = &events[events.len() - 1];
        assert_eq!(
            last["usage"]["completion_tokens_details"]["reasoning_tokens"],
            15
        );
        assert_eq!(
            events[events.len() - 2]["choices"][0]["finish_reason"],
            "stop"
        );
    }

    #[test]
    fn json_replay_is_a_chat_completion() {
        let v: Value = serde_json::from_slice(&body(&record(), &shape(false))).unwrap();
        assert_eq!(v["object"], "chat.completion");
        assert_eq!(v["choices"][0]["message"]["content"], "4");
        assert_eq!(
            v["choices"][0]["message"]["reasoning_content"],
            record().reasoning
        );
        assert_eq!(v["usage"]["total_tokens"], 30);
    }

    #[test]
    fn a_route_without_reasoning_replays_only_the_answer() {
        let hidden = Shape {
            reasoning_fields: &[],
            ..shape(true)
        };
        let text = String::from_utf8(body(&record(), &hidden)).unwrap();
        let deltas: Vec<Value> = text
            .lines()
            .filter_map(|l| l.strip_prefix("data: "))
            .filter(|d| *d != "[DONE]")
            .map(|d| serde_json::from_str::<Value>(d).unwrap())
            .filter_map(|v| v["choices"].get(0).map(|c| c["delta"].clone()))
            .collect();
        // role, the answer, the finish chunk: no empty reasoning deltas in between.
        assert_eq!(deltas.len(), 3, "{deltas:?}");
        assert_eq!(deltas[1]["content"], "4");
    }
}
