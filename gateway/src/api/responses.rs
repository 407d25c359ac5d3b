//! OpenAI Responses (`POST /v1/responses`): the request decoded into a chat request; the
//! output written by [`encode`].

pub mod encode;

use serde_json::{json, Map, Value};

use super::Translated;
use crate::openai::ApiError;

/// Decodes a Responses request body into a chat request.
pub fn decode(body: &Map<String, Value>) -> Result<Translated, ApiError> {
    // A pool that serves Responses itself gets such requests as they are (see
    // `proxy::api::decode_request`); these errors are for the pools the gateway translates for.
    if body
        .get("previous_response_id")
        .is_some_and(|v| !v.is_null())
    {
        return Err(ApiError::invalid_param(
            "previous_response_id",
            "This model's upstream does not serve the Responses API itself and the gateway stores no responses, so `previous_response_id` cannot be used: send the whole conversation in `input` instead.",
        ));
    }
    if body.get("background") == Some(&Value::Bool(true)) {
        return Err(ApiError::invalid_param(
            "background",
            "Background responses are not supported; use `POST /v1/async/chat/completions` for queued jobs.",
        ));
    }
    if body.get("conversation").is_some_and(|v| !v.is_null()) {
        return Err(ApiError::invalid_param(
            "conversation",
            "The gateway does not store conversations: send the whole conversation in `input`.",
        ));
    }
    let mut chat = Map::new();
    copy(
        body,
        &mut chat,
        &[
            "model",
            "stream",
            "temperature",
            "top_p",
            "user",
            "parallel_tool_calls",
            "seed",
        ],
    );
    let mut messages = Vec::new();
    match body.get("instructions") {
        None | Some(Value::Null) => {}
        Some(Value::String(s)) => messages.push(json!({"role": "system", "content": s})),
        Some(_) => {
            return Err(ApiError::invalid_param(
                "instructions",
                "`instructions` must be a string",
            ))
        }
    }
    match body.get("input") {
        Some(Value::String(s)) => messages.push(json!({"role": "user", "content": s})),
        Some(Value::Array(items)) if !items.is_empty() => {
            for (i, item) in items.iter().enumerate() {
                input_item(item, i, &mut messages)?;
            }
        }
        _ => {
            return Err(ApiError::invalid_param(
                "input",
                "`input` must be a string or a non-empty array of input items",
            ))
        }
    }
    if messages.is_empty() {
        return Err(ApiError::invalid_param(
            "input",
            "`input` holds no message the model could answer",
        ));
    }
    chat.insert("messages".into(), Value::Array(messages));
    if let Some(v) = body.get("max_output_tokens").filter(|v| !v.is_null()) {
        chat.insert("max_tokens".into(), v.clone());
    }
    let mut reasoning_summary = false;
    if let Some(r) = body.get("reasoning").filter(|v| !v.is_null()) {
        let Some(r) = r.as_object() else {
            return Err(ApiError::invalid_param(
                "reasoning",
                "`reasoning` must be an object",
            ));
        };
        // `generate_summary` is the field's deprecated name.
        for key in ["summary", "generate_summary"] {
            match r.get(key) {
                None | Some(Value::Null) => {}
                Some(Value::String(s)) if matches!(s.as_str(), "auto" | "concise" | "detailed") => {
                    reasoning_summary = true;
                }
                Some(Value::String(s)) if s == "none" => {}
                Some(_) => {
                    return Err(ApiError::invalid_param(
                        "reasoning",
                        format!("`reasoning.{key}` must be auto, concise or detailed"),
                    ))
                }
            }
        }
        match r.get("effort") {
            None | Some(Value::Null) => {}
            Some(Value::String(e)) => {
                chat.insert("reasoning_effort".into(), Value::String(e.clone()));
            }
            Some(_) => {
                return Err(ApiError::invalid_param(
                    "reasoning",
                    "`reasoning.effort` must be a string",
                ))
            }
        }
    }
    if let Some(format) = body.get("text").and_then(|t| t.get("format")) {
        if let Some(rf) = response_format(format)? {
            chat.insert("response_format".into(), rf);
        }
    }
    if let Some(tools) = body.get("tools").filter(|v| !v.is_null()) {
        let tools = tools
            .as_array()
            .ok_or_else(|| ApiError::invalid_param("tools", "`tools` must be an array"))?;
        let mut out = Vec::new();
        for t in tools {
            out.push(tool(t)?);
        }
        if !out.is_empty() {
            chat.insert("tools".into(), Value::Array(out));
        }
    }
    if let Some(tc) = body.get("tool_choice").filter(|v| !v.is_null()) {
        chat.insert("tool_choice".into(), tool_choice(tc)?);
    }
    if chat.get("stream") == Some(&Value::Bool(true)) {
        chat.insert("stream_options".into(), json!({"include_usage": true}));
    }
    Ok(Translated {
        chat,
        show_reasoning: true,
        reasoning_budget: None,
        signed: Vec::new(),
        reasoning_summary,
        untranslatable: None,
    })
}

fn copy(from: &Map<String, Value>, to: &mut Map<String, Value>, keys: &[&str]) {
    for k in keys {
        if let Some(v) = from.get(*k).filter(|v| !v.is_null()) {
            to.insert((*k).to_string(), v.clone());
        }
    }
}

fn bad_item(i: usize, what: &str) -> ApiError {
    ApiError::invalid_param("input", format!("input[{i}]: {what}"))
}

/// Text of a message's `content`: a string, or parts of type input_text / output_text / text.
fn content_text(content: Option<&Value>, i: usize) -> Result<String, ApiError> {
    match content {
        Some(Value::String(s)) => Ok(s.clone()),
        Some(Value::Array(parts)) => {
            let mut text = String::new();
            for p in parts {
                let ty = p.get("type").and_then(Value::as_str).unwrap_or("");
                match (ty, p.get("text").and_then(Value::as_str)) {
                    ("input_text" | "output_text" | "text", Some(t)) => text.push_str(t),
                    ("refusal", _) => {}
                    ("input_text" | "output_text" | "text", None) => {
                        return Err(bad_item(i, "a text part needs a string `text`"))
                    }
                    _ => {
                        return Err(bad_item(
                            i,
                            &format!(
                            "content part type `{ty}` is not supported by this gateway (text only)"
                        ),
                        ))
                    }
                }
            }
            Ok(text)
        }
        _ => Err(bad_item(
            i,
            "`content` must be a string or an array of content parts",
        )),
    }
}

fn input_item(item: &Value, i: usize, messages: &mut Vec<Value>) -> Result<(), ApiError> {
    let Some(o) = item.as_object() else {
        return Err(bad_item(i, "each input item must be an object"));
    };
    let ty = o.get("type").and_then(Value::as_str);
    match ty {
        None | Some("message") => {
            let role = match o.get("role").and_then(Value::as_str) {
                Some(r @ ("user" | "assistant" | "system")) => r,
                Some("developer") => "system",
                _ => {
                    return Err(bad_item(
                        i,
                        "a message needs `role` user, assistant, system or developer",
                    ))
                }
            };
            let text = content_text(o.get("content"), i)?;
            messages.push(json!({"role": role, "content": text}));
        }
        Some("function_call") => {
            let s = |k: &str| o.get(k).and_then(Value::as_str);
            let (Some(call_id), Some(name)) = (s("call_id"), s("name")) else {
                return Err(bad_item(
                    i,
                    "a function_call needs string `call_id` and `name`",
                ));
            };
            let call = json!({"id": call_id, "type": "function",
                "function": {"name": name, "arguments": s("arguments").unwrap_or("{}")}});
            // Consecutive calls belong to one assistant turn.
            match messages.last_mut() {
                Some(Value::Object(last))
                    if last.get("role").and_then(Value::as_str) == Some("assistant")
                        && last.get("tool_calls").is_some() =>
                {
                    if let Some(Value::Array(calls)) = last.get_mut("tool_calls") {
                        calls.push(call);
                    }
                }
                _ => messages
                    .push(json!({"role": "assistant", "content": null, "tool_calls": [call]})),
            }
        }
        Some("function_call_output") => {
            let Some(call_id) = o.get("call_id").and_then(Value::as_str) else {
                return Err(bad_item(
                    i,
                    "a function_call_output needs a string `call_id`",
                ));
            };
            let output = match o.get("output") {
                Some(Value::String(s)) => s.clone(),
                Some(v @ Value::Array(_)) => content_text(Some(v), i)?,
                _ => return Err(bad_item(i, "`output` must be a string")),
            };
            messages.push(json!({"role": "tool", "tool_call_id": call_id, "content": output}));
        }
        // Earlier reasoning is not sent back to the model (reasoning models are not trained on
        // their own past chains); the item is accepted so agents can replay whole turns.
        Some("reasoning") => {}
        Some(other) => {
            return Err(bad_item(
                i,
                &format!("input item type `{other}` is not supported by this gateway"),
            ))
        }
    }
    Ok(())
}

fn response_format(format: &Value) -> Result<Option<Value>, ApiError> {
    let bad = |m: &str| ApiError::invalid_param("text", m.to_string());
    match format.get("type").and_then(Value::as_str) {
        Some("text") => Ok(None),
        Some("json_object") => Ok(Some(json!({"type": "json_object"}))),
        Some("json_schema") => {
            let schema = format
                .get("schema")
                .filter(|s| s.is_object())
                .ok_or_else(|| bad("`text.format.schema` must be an object"))?;
            let name = format
                .get("name")
                .and_then(Value::as_str)
                .unwrap_or("response");
            let mut js = json!({"name": name, "schema": schema});
            if let Some(strict) = format.get("strict").filter(|v| v.is_boolean()) {
                js["strict"] = strict.clone();
            }
            Ok(Some(json!({"type": "json_schema", "json_schema": js})))
        }
        _ => Err(bad(
            "`text.format.type` must be text, json_object or json_schema",
        )),
    }
}

fn tool(t: &Value) -> Result<Value, ApiError> {
    match t.get("type").and_then(Value::as_str) {
        Some("function") => {
            let name = t.get("name").and_then(Value::as_str).ok_or_else(|| {
                ApiError::invalid_param("tools", "a function tool needs a string `name`")
            })?;
            let mut f = json!({"name": name});
            for k in ["description", "parameters", "strict"] {
                if let Some(v) = t.get(k).filter(|v| !v.is_null()) {
                    f[k] = v.clone();
                }
            }
            Ok(json!({"type": "function", "function": f}))
        }
        other => Err(ApiError::invalid_param(
            "tools",
            format!(
                "tool type `{}` is not supported by this gateway (function tools only)",
                other.unwrap_or("")
            ),
        )),
    }
}

fn tool_choice(tc: &Value) -> Result<Value, ApiError> {
    match tc {
        Value::String(s) if matches!(s.as_str(), "auto" | "none" | "required") => Ok(tc.clone()),
        Value::Object(o) if o.get("type").and_then(Value::as_str) == Some("function") => {
            let name = o.get("name").and_then(Value::as_str).ok_or_else(|| {
                ApiError::invalid_param("tool_choice", "a function tool_choice needs `name`")
            })?;
            Ok(json!({"type": "function", "function": {"name": name}}))
        }
        _ => Err(ApiError::invalid_param(
            "tool_choice",
            "`tool_choice` must be auto, none, required or a function",
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dec(v: Value) -> Result<Map<String, Value>, ApiError> {
        decode(v.as_object().unwrap()).map(|t| t.chat)
    }

    #[test]
    fn items_instructions_and_options_become_a_chat_request() {
        let chat = dec(
            json!({"model": "m", "instructions": "be brief", "stream": true,
            "input": [{"role": "user", "content": [{"type": "input_text", "text": "hi"}]},
                {"type": "function_call", "call_id": "c1", "name": "f", "arguments": "{}"},
                {"type": "function_call_output", "call_id": "c1", "output": "42"}],
            "reasoning": {"effort": "low", "summary": "auto"}, "max_output_tokens": 50,
            "text": {"format": {"type": "json_schema", "name": "a", "schema": {"type": "object"}}},
            "tools": [{"type": "function", "name": "f", "parameters": {"type": "object"}}],
            "store": false}),
        )
        .unwrap();
        assert_eq!(
            chat["messages"][0],
            json!({"role": "system", "content": "be brief"})
        );
        assert_eq!(
            chat["messages"][1],
            json!({"role": "user", "content": "hi"})
        );
        assert_eq!(chat["messages"][2]["tool_calls"][0]["id"], "c1");
        assert_eq!(chat["messages"][3]["tool_call_id"], "c1");
        assert_eq!(chat["reasoning_effort"], "low");
        assert_eq!(chat["max_tokens"], 50);
        assert_eq!(chat["response_format"]["json_schema"]["name"], "a");
        assert_eq!(chat["tools"][0]["function"]["name"], "f");
        assert_eq!(chat["stream_options"]["include_usage"], true);
    }

    #[test]
    fn what_cannot_be_served_is_a_400_naming_the_field() {
        for (body, param) in [
            (
                json!({"model": "m", "input": "x", "previous_response_id": "resp_1"}),
                "previous_response_id",
            ),
            (
                json!({"model": "m", "input": [{"type": "input_image"}]}),
                "input",
            ),
            (
                json!({"model": "m", "input": [{"role": "user", "content": 5}]}),
                "input",
            ),
            (json!({"model": "m", "input": []}), "input"),
            (
                json!({"model": "m", "input": "x", "tools": [{"type": "web_search"}]}),
                "tools",
            ),
        ] {
            let err = dec(body).unwrap_err();
            assert_eq!((err.status, err.param), (400, Some(param)));
        }
    }
}
