//! Anthropic Messages (`POST /v1/messages`): the request decoded into a chat request, errors in
//! Anthropic's shape; the output written by [`encode`].

pub mod encode;

use serde_json::{json, Map, Value};

use super::{signature, Translated};
use crate::openai::{ApiError, ErrorCode};

/// Decodes a Messages request body into a chat request.
pub fn decode(body: &Map<String, Value>) -> Result<Translated, ApiError> {
    let mut chat = Map::new();
    for k in ["model", "stream", "temperature", "top_p", "top_k"] {
        if let Some(v) = body.get(k).filter(|v| !v.is_null()) {
            chat.insert(k.to_string(), v.clone());
        }
    }
    match body.get("max_tokens") {
        Some(v) if v.as_u64().is_some_and(|n| n >= 1) => {
            chat.insert("max_tokens".into(), v.clone());
        }
        Some(_) => {
            return Err(ApiError::invalid_param(
                "max_tokens",
                "max_tokens: must be a positive integer",
            ))
        }
        None => {
            return Err(ApiError::new(
                ErrorCode::MissingRequiredParameter,
                "max_tokens: Field required",
            ))
        }
    }
    let mut messages = Vec::new();
    match body.get("system") {
        None | Some(Value::Null) => {}
        Some(s) => {
            let text = blocks_text(s, "system")?;
            messages.push(json!({"role": "system", "content": text}));
        }
    }
    let Some(Value::Array(turns)) = body.get("messages") else {
        return Err(ApiError::invalid_param(
            "messages",
            "messages: Field required (an array)",
        ));
    };
    if turns.is_empty() {
        return Err(ApiError::invalid_param(
            "messages",
            "messages: at least one message is required",
        ));
    }
    let mut signed = Vec::new();
    for (i, turn) in turns.iter().enumerate() {
        turn_messages(turn, i, &mut messages, &mut signed)?;
    }
    chat.insert("messages".into(), Value::Array(messages));
    if let Some(stops) = body.get("stop_sequences").filter(|v| !v.is_null()) {
        let ok = stops
            .as_array()
            .is_some_and(|a| a.iter().all(Value::is_string));
        if !ok {
            return Err(ApiError::invalid_param(
                "stop_sequences",
                "stop_sequences: must be an array of strings",
            ));
        }
        chat.insert("stop".into(), stops.clone());
    }
    if let Some(tools) = body.get("tools").filter(|v| !v.is_null()) {
        let tools = tools
            .as_array()
            .ok_or_else(|| ApiError::invalid_param("tools", "tools: must be an array"))?;
        let mut out = Vec::new();
        for t in tools {
            let name = t.get("name").and_then(Value::as_str).ok_or_else(|| {
                ApiError::invalid_param(
                    "tools",
                    "tools: each tool needs a string `name` (server tools are not supported)",
                )
            })?;
            if t.get("type")
                .and_then(Value::as_str)
                .is_some_and(|ty| ty != "custom")
            {
                return Err(ApiError::invalid_param(
                    "tools",
                    format!(
                        "tools: tool `{name}` is a server tool, which this gateway does not run"
                    ),
                ));
            }
            let mut f = json!({"name": name, "parameters": t.get("input_schema").cloned().unwrap_or(json!({"type": "object"}))});
            if let Some(d) = t.get("description").filter(|v| v.is_string()) {
                f["description"] = d.clone();
            }
            out.push(json!({"type": "function", "function": f}));
        }
        if !out.is_empty() {
            chat.insert("tools".into(), Value::Array(out));
        }
    }
    if let Some(tc) = body.get("tool_choice").filter(|v| !v.is_null()) {
        let choice = match tc.get("type").and_then(Value::as_str) {
            Some("auto") => json!("auto"),
            Some("any") => json!("required"),
            Some("none") => json!("none"),
            Some("tool") => match tc.get("name").and_then(Value::as_str) {
                Some(n) => json!({"type": "function", "function": {"name": n}}),
                None => {
                    return Err(ApiError::invalid_param(
                        "tool_choice",
                        "tool_choice: `tool` needs a `name`",
                    ))
                }
            },
            _ => {
                return Err(ApiError::invalid_param(
                    "tool_choice",
                    "tool_choice.type: must be auto, any, tool or none",
                ))
            }
        };
        chat.insert("tool_choice".into(), choice);
    }
    let (show_reasoning, reasoning_budget) = match body.get("thinking") {
        None | Some(Value::Null) => (false, None),
        Some(t) => match t.get("type").and_then(Value::as_str) {
            Some("enabled") => match t.get("budget_tokens").and_then(Value::as_u64) {
                Some(b) if b >= 1 => (true, Some(b)),
                _ => {
                    return Err(ApiError::invalid_param(
                        "thinking",
                        "thinking.budget_tokens: a positive integer is required",
                    ))
                }
            },
            Some("disabled") => (false, None),
            _ => {
                return Err(ApiError::invalid_param(
                    "thinking",
                    "thinking.type: must be enabled or disabled",
                ))
            }
        },
    };
    if chat.get("stream") == Some(&Value::Bool(true)) {
        chat.insert("stream_options".into(), json!({"include_usage": true}));
    }
    Ok(Translated {
        chat,
        show_reasoning,
        reasoning_budget,
        signed,
        reasoning_summary: false,
        untranslatable: None,
    })
}

/// Checks the thinking blocks a client sent back carry this gateway's signatures.
pub fn verify_signatures(t: &Translated) -> Result<(), ApiError> {
    match t
        .signed
        .iter()
        .find(|(_, thinking, sig)| !signature::verify(thinking, sig))
    {
        Some((at, _, _)) => Err(ApiError::invalid_param(
            "messages",
            format!("{at}: Invalid `signature` in `thinking` block"),
        )),
        None => Ok(()),
    }
}

fn bad(i: usize, what: &str) -> ApiError {
    ApiError::invalid_param("messages", format!("messages.{i}: {what}"))
}

/// A string or an array of text blocks, as text.
fn blocks_text(v: &Value, field: &'static str) -> Result<String, ApiError> {
    match v {
        Value::String(s) => Ok(s.clone()),
        Value::Array(blocks) => {
            let mut text = String::new();
            for b in blocks {
                match (
                    b.get("type").and_then(Value::as_str),
                    b.get("text").and_then(Value::as_str),
                ) {
                    (Some("text"), Some(t)) => text.push_str(t),
                    _ => {
                        return Err(ApiError::invalid_param(
                            field,
                            format!("{field}: only text blocks are supported here"),
                        ))
                    }
                }
            }
            Ok(text)
        }
        _ => Err(ApiError::invalid_param(
            field,
            format!("{field}: must be a string or an array of text blocks"),
        )),
    }
}

fn turn_messages(
    turn: &Value,
    i: usize,
    messages: &mut Vec<Value>,
    signed: &mut Vec<(String, String, String)>,
) -> Result<(), ApiError> {
    let Some(role @ ("user" | "assistant")) = turn.get("role").and_then(Value::as_str) else {
        return Err(bad(i, "role: must be user or assistant"));
    };
    let blocks = match turn.get("content") {
        Some(Value::String(s)) => {
            messages.push(json!({"role": role, "content": s}));
            return Ok(());
        }
        Some(Value::Array(b)) => b,
        _ => {
            return Err(bad(
                i,
                "content: must be a string or an array of content blocks",
            ))
        }
    };
    let mut text = String::new();
    let mut calls = Vec::new();
    let mut results = Vec::new();
    for (j, b) in blocks.iter().enumerate() {
        let s = |k: &str| b.get(k).and_then(Value::as_str);
        match s("type") {
            Some("text") => text.push_str(
                s("text").ok_or_else(|| bad(i, &format!("content.{j}.text: Field required")))?,
            ),
            Some("thinking") if role == "assistant" => {
                let (Some(thinking), Some(sig)) = (s("thinking"), s("signature")) else {
                    return Err(bad(
                        i,
                        &format!("content.{j}: a thinking block needs `thinking` and `signature`"),
                    ));
                };
                // Checked once the pool is known (a pool serving Messages itself signed its own);
                // then left out: the model is not shown its earlier reasoning.
                signed.push((
                    format!("messages.{i}.content.{j}"),
                    thinking.to_string(),
                    sig.to_string(),
                ));
            }
            Some("redacted_thinking") if role == "assistant" => {}
            Some("tool_use") if role == "assistant" => {
                let (Some(id), Some(name)) = (s("id"), s("name")) else {
                    return Err(bad(
                        i,
                        &format!("content.{j}: a tool_use block needs `id` and `name`"),
                    ));
                };
                let input = b.get("input").cloned().unwrap_or(json!({}));
                calls.push(
                    json!({"id": id, "type": "function", "function": {"name": name,
                    "arguments": serde_json::to_string(&input).unwrap_or_default()}}),
                );
            }
            Some("tool_result") if role == "user" => {
                let Some(id) = s("tool_use_id") else {
                    return Err(bad(
                        i,
                        &format!("content.{j}: a tool_result block needs `tool_use_id`"),
                    ));
                };
                let content = match b.get("content") {
                    None | Some(Value::Null) => String::new(),
                    Some(c) => blocks_text(c, "messages")?,
                };
                results.push(json!({"role": "tool", "tool_call_id": id, "content": content}));
            }
            Some(other) => {
                return Err(bad(
                    i,
                    &format!("content.{j}: block type `{other}` is not supported here"),
                ))
            }
            None => return Err(bad(i, &format!("content.{j}.type: Field required"))),
        }
    }
    messages.extend(results);
    if !calls.is_empty() {
        let content = if text.is_empty() {
            Value::Null
        } else {
            Value::String(text)
        };
        messages.push(json!({"role": role, "content": content, "tool_calls": calls}));
    } else if !text.is_empty()
        || role == "user" && messages.last().is_none_or(|m| m["role"] != "tool")
    {
        messages.push(json!({"role": role, "content": text}));
    }
    Ok(())
}

/// Anthropic's error `type` for a status.
pub fn error_type(status: u16) -> &'static str {
    match status {
        400 | 405 | 408 | 411 | 422 => "invalid_request_error",
        401 => "authentication_error",
        403 => "permission_error",
        404 => "not_found_error",
        413 => "request_too_large",
        429 => "rate_limit_error",
        503 | 529 => "overloaded_error",
        _ => "api_error",
    }
}

/// The Anthropic error object for a status and message.
pub fn error_value(status: u16, message: &str) -> Value {
    json!({"type": "error", "error": {"type": error_type(status), "message": message}})
}

/// An OpenAI error body (the gateway's or an upstream's) rewritten in Anthropic's shape.
pub fn error_body(status: u16, openai: &[u8]) -> Vec<u8> {
    let parsed: Option<Value> = serde_json::from_slice(openai).ok();
    let message = parsed
        .as_ref()
        .and_then(|v| v.get("error"))
        .and_then(|e| e.get("message").and_then(Value::as_str).or(e.as_str()))
        .map_or_else(
            || String::from_utf8_lossy(openai).into_owned(),
            str::to_owned,
        );
    serde_json::to_vec(&error_value(status, &message)).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dec(v: Value) -> Result<Translated, ApiError> {
        decode(v.as_object().unwrap())
    }

    #[test]
    fn system_blocks_tools_and_thinking_become_a_chat_request() {
        let t = dec(json!({"model": "m", "max_tokens": 64, "system": [{"type": "text", "text": "sys"}],
            "stop_sequences": ["END"], "thinking": {"type": "enabled", "budget_tokens": 2000},
            "tools": [{"name": "f", "input_schema": {"type": "object"}}],
            "messages": [{"role": "user", "content": "hi"},
                {"role": "assistant", "content": [{"type": "text", "text": "calling"},
                    {"type": "tool_use", "id": "t1", "name": "f", "input": {"a": 1}}]},
                {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "t1", "content": "42"}]}]}))
        .unwrap();
        let c = &t.chat;
        assert_eq!(
            c["messages"][0],
            json!({"role": "system", "content": "sys"})
        );
        assert_eq!(
            c["messages"][2]["tool_calls"][0]["function"]["arguments"],
            "{\"a\":1}"
        );
        assert_eq!(
            c["messages"][3],
            json!({"role": "tool", "tool_call_id": "t1", "content": "42"})
        );
        assert_eq!(c["messages"].as_array().unwrap().len(), 4);
        assert_eq!(c["stop"], json!(["END"]));
        assert_eq!(
            c["tools"][0]["function"]["parameters"],
            json!({"type": "object"})
        );
        assert_eq!((t.show_reasoning, t.reasoning_budget), (true, Some(2000)));
    }

    #[test]
    fn missing_max_tokens_and_forged_thinking_are_refused() {
        let err =
            dec(json!({"model": "m", "messages": [{"role": "user", "content": "x"}]})).unwrap_err();
        assert_eq!(err.status, 400);
        let forged = json!({"model": "m", "max_tokens": 5, "messages": [{"role": "user", "content": "x"},
            {"role": "assistant", "content": [{"type": "thinking", "thinking": "evil", "signature": signature::sign("good")}]},
            {"role": "user", "content": "y"}]});
        let forged = dec(forged).unwrap();
        assert!(verify_signatures(&forged)
            .unwrap_err()
            .message
            .contains("signature"));
        let genuine = json!({"model": "m", "max_tokens": 5, "messages": [{"role": "user", "content": "x"},
            {"role": "assistant", "content": [{"type": "thinking", "thinking": "good", "signature": signature::sign("good")}]},
            {"role": "user", "content": "y"}]});
        assert!(verify_signatures(&dec(genuine).unwrap()).is_ok());
    }

    #[test]
    fn errors_take_anthropics_shape_and_types() {
        let b = error_body(
            404,
            br#"{"error":{"message":"no such model","type":"invalid_request_error"}}"#,
        );
        let v: Value = serde_json::from_slice(&b).unwrap();
        assert_eq!(
            v,
            json!({"type": "error", "error": {"type": "not_found_error", "message": "no such model"}})
        );
        assert_eq!(error_type(429), "rate_limit_error");
        assert_eq!(error_type(502), "api_error");
        assert_eq!(error_type(503), "overloaded_error");
    }
}
