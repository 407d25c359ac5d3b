//! The OpenAI wire format as the gateway needs it: endpoints, request checks, error bodies.

use serde_json::{json, Map, Value};

mod error;

pub use error::{ApiError, ErrorCode, ErrorKind};

/// The API endpoints the gateway serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Endpoint {
    /// `POST /v1/chat/completions`
    ChatCompletions,
    /// `POST /v1/completions`
    Completions,
    /// `GET /v1/models`
    Models,
    /// `GET /v1/models/{model}` (the id may contain `/`)
    Model,
    /// `POST /v1/embeddings`: routed by `model` and forwarded untouched (no reasoning, no cache)
    Embeddings,
}

impl Endpoint {
    /// Recognises a method and path (query string excluded).
    pub fn from_request(method: &str, path: &str) -> Result<Endpoint, ApiError> {
        let path = path.trim_end_matches('/');
        let (endpoint, wanted) = match path {
            "/v1/chat/completions" => (Endpoint::ChatCompletions, "POST"),
            "/v1/completions" => (Endpoint::Completions, "POST"),
            "/v1/embeddings" => (Endpoint::Embeddings, "POST"),
            "/v1/models" => (Endpoint::Models, "GET"),
            p if p.starts_with("/v1/models/") => (Endpoint::Model, "GET"),
            _ => return Err(ApiError::unknown_url(method, path)),
        };
        if method != wanted {
            return Err(ApiError::method_not_allowed(method, path, wanted));
        }
        Ok(endpoint)
    }

    /// Label value for metrics.
    pub fn label(self) -> &'static str {
        match self {
            Endpoint::ChatCompletions => "chat_completions",
            Endpoint::Completions => "completions",
            Endpoint::Models | Endpoint::Model => "models",
            Endpoint::Embeddings => "embeddings",
        }
    }

    /// Whether the response is generated text (parsed for reasoning, measured, cacheable).
    pub fn generates(self) -> bool {
        matches!(self, Endpoint::ChatCompletions | Endpoint::Completions)
    }
}

/// The model id of a `GET /v1/models/{model}` path, percent-decoded.
pub fn model_id_of_path(path: &str) -> Option<String> {
    let raw = path.trim_end_matches('/').strip_prefix("/v1/models/")?;
    let bytes = raw.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = |b: u8| (b as char).to_digit(16);
        match (
            bytes[i],
            bytes.get(i + 1).and_then(|b| hex(*b)),
            bytes.get(i + 2).and_then(|b| hex(*b)),
        ) {
            (b'%', Some(h), Some(l)) => {
                out.push((h * 16 + l) as u8);
                i += 3;
            }
            (b, _, _) => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8(out).ok().filter(|id| !id.is_empty())
}

/// What the gateway needs to know about a request body.
#[derive(Debug, Clone)]
pub struct RequestInfo {
    /// The parsed body.
    pub body: Map<String, Value>,
    /// `model`.
    pub model: String,
    /// `stream: true`.
    pub stream: bool,
}

/// Parses and type-checks a chat/completions request body.
pub fn parse_request(endpoint: Endpoint, bytes: &[u8]) -> Result<RequestInfo, ApiError> {
    let value: Value = serde_json::from_slice(bytes).map_err(|e| {
        ApiError::new(
            ErrorCode::InvalidJson,
            format!("We could not parse the JSON body of your request: {e}"),
        )
    })?;
    let Value::Object(body) = value else {
        return Err(ApiError::new(
            ErrorCode::InvalidJson,
            "The request body must be a JSON object.",
        ));
    };
    let model = match body.get("model") {
        Some(Value::String(m)) if !m.is_empty() => m.clone(),
        Some(Value::String(_) | Value::Null) | None => {
            return Err(ApiError::new(
                ErrorCode::MissingRequiredParameter,
                "you must provide a model parameter",
            ))
        }
        Some(_) => return Err(ApiError::invalid_param("model", "`model` must be a string")),
    };
    let stream = match body.get("stream") {
        None | Some(Value::Null) => false,
        Some(Value::Bool(b)) => *b,
        Some(_) => {
            return Err(ApiError::invalid_param(
                "stream",
                "`stream` must be a boolean",
            ))
        }
    };
    match endpoint {
        Endpoint::ChatCompletions => check_messages(body.get("messages"))?,
        Endpoint::Completions => check_prompt(body.get("prompt"))?,
        Endpoint::Embeddings => check_input(body.get("input"))?,
        Endpoint::Models | Endpoint::Model => {}
    }
    check_types(&body)?;
    Ok(RequestInfo {
        body,
        model,
        stream,
    })
}

fn check_input(v: Option<&Value>) -> Result<(), ApiError> {
    match v {
        Some(Value::String(_)) => Ok(()),
        Some(Value::Array(a)) if !a.is_empty() => Ok(()),
        _ => Err(ApiError::invalid_param(
            "input",
            "`input` must be a string or a non-empty array (of strings or token ids)",
        )),
    }
}

fn check_messages(v: Option<&Value>) -> Result<(), ApiError> {
    let Some(Value::Array(msgs)) = v else {
        return Err(ApiError::invalid_param(
            "messages",
            "`messages` must be an array of message objects",
        ));
    };
    if msgs.is_empty() {
        return Err(ApiError::invalid_param(
            "messages",
            "`messages` must not be empty",
        ));
    }
    for m in msgs {
        let ok = m
            .as_object()
            .is_some_and(|o| o.get("role").is_some_and(Value::is_string));
        if !ok {
            return Err(ApiError::invalid_param(
                "messages",
                "each message must be an object with a string `role`",
            ));
        }
    }
    Ok(())
}

fn check_prompt(v: Option<&Value>) -> Result<(), ApiError> {
    match v {
        Some(Value::String(_)) => Ok(()),
        Some(Value::Array(items)) if !items.is_empty() => Ok(()),
        _ => Err(ApiError::invalid_param(
            "prompt",
            "`prompt` must be a string or a non-empty array",
        )),
    }
}

fn check_types(body: &Map<String, Value>) -> Result<(), ApiError> {
    let non_negative_int = ["max_tokens", "max_completion_tokens", "n"];
    for key in non_negative_int {
        if let Some(v) = body.get(key).filter(|v| !v.is_null()) {
            if v.as_u64().is_none() {
                return Err(ApiError::invalid_param(
                    key,
                    format!("`{key}` must be a non-negative integer"),
                ));
            }
        }
    }
    for key in [
        "temperature",
        "top_p",
        "presence_penalty",
        "frequency_penalty",
    ] {
        if let Some(v) = body.get(key).filter(|v| !v.is_null()) {
            if !v.is_number() {
                return Err(ApiError::invalid_param(
                    key,
                    format!("`{key}` must be a number"),
                ));
            }
        }
    }
    if let Some(v) = body.get("seed").filter(|v| !v.is_null()) {
        if v.as_i64().is_none() && v.as_u64().is_none() {
            return Err(ApiError::invalid_param("seed", "`seed` must be an integer"));
        }
    }
    if let Some(v) = body.get("stop").filter(|v| !v.is_null()) {
        let ok = v.is_string()
            || v.as_array()
                .is_some_and(|a| a.len() <= 4 && a.iter().all(Value::is_string));
        if !ok {
            return Err(ApiError::invalid_param(
                "stop",
                "`stop` must be a string or up to 4 strings",
            ));
        }
    }
    if let Some(v) = body.get("stream_options").filter(|v| !v.is_null()) {
        if !v.is_object() {
            return Err(ApiError::invalid_param(
                "stream_options",
                "`stream_options` must be an object",
            ));
        }
    }
    Ok(())
}

/// The body of `GET /v1/models`.
pub fn models_body<'a>(names: impl Iterator<Item = &'a str>) -> Vec<u8> {
    let data: Vec<Value> = names.map(model_object).collect();
    serde_json::to_vec(&json!({"object": "list", "data": data})).unwrap_or_default()
}

/// One model as `GET /v1/models/{model}` and the list show it.
pub fn model_object(id: &str) -> Value {
    json!({"id": id, "object": "model", "created": 0, "owned_by": "reasoning-gateway"})
}

#[cfg(test)]
mod tests;
