//! Client APIs beside Chat Completions: OpenAI Responses and Anthropic Messages, as thin codecs
//! around the one chat path.
//!
//! A request in another API is decoded into a chat request (`responses::decode`,
//! `messages::decode`) and then routed, cached, parsed for reasoning and measured exactly as a
//! chat request is. The chat path's output — already split into reasoning and answer by
//! `reasoning::rewrite` — is read into one [`generation::Generation`] (reasoning, answer, tool
//! calls, usage, finish) and written in the client's API by `responses::encode` or
//! `messages::encode`; [`codec::Codec`] drives that over a response body, streamed or whole,
//! cache replays included. `signature` signs Anthropic thinking blocks. A pool that serves an API
//! itself (`api:` in its config) gets such requests as they are; `meter` reads their responses
//! for the reasoning metrics.

pub mod codec;
pub mod generation;
pub mod messages;
pub mod meter;
pub mod responses;
pub mod signature;

use serde_json::{Map, Value};

pub use codec::Codec;

use crate::openai::ApiError;

/// The API a client spoke (the `api` label of `requests_total`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Api {
    /// `POST /v1/chat/completions`
    Chat,
    /// `POST /v1/completions`
    Completions,
    /// `POST /v1/responses`
    Responses,
    /// `POST /v1/messages`
    Messages,
}

impl Api {
    /// Label value.
    pub fn label(self) -> &'static str {
        match self {
            Api::Chat => "chat",
            Api::Completions => "completions",
            Api::Responses => "responses",
            Api::Messages => "messages",
        }
    }

    /// The API of an endpoint the chat path serves directly.
    pub fn of_endpoint(e: crate::openai::Endpoint) -> Option<Api> {
        match e {
            crate::openai::Endpoint::ChatCompletions => Some(Api::Chat),
            crate::openai::Endpoint::Completions => Some(Api::Completions),
            _ => None,
        }
    }

    /// The translated API a path belongs to (its errors are answered in that API's shape).
    pub fn of_path(path: &str) -> Option<Api> {
        if path.starts_with("/v1/messages") {
            Some(Api::Messages)
        } else if path.starts_with("/v1/responses") {
            Some(Api::Responses)
        } else {
            None
        }
    }

    /// `Some` for the translated APIs' paths: the API, or the error for a wrong method or a
    /// path below them (the gateway stores no responses to retrieve).
    pub fn from_request(method: &str, path: &str) -> Option<Result<Api, ApiError>> {
        let path = path.trim_end_matches('/');
        let api = match path {
            "/v1/responses" => Api::Responses,
            "/v1/messages" => Api::Messages,
            p if p.starts_with("/v1/responses/") => {
                return Some(Err(ApiError::new(
                    crate::openai::ErrorCode::UnknownUrl,
                    "The gateway does not store responses: there is nothing to retrieve, cancel or delete under /v1/responses/.",
                )))
            }
            _ => return None,
        };
        if method != "POST" {
            return Some(Err(ApiError::method_not_allowed(method, path, "POST")));
        }
        Some(Ok(api))
    }

    /// Whether the API is translated to and from chat by this module.
    pub fn translated(self) -> bool {
        matches!(self, Api::Responses | Api::Messages)
    }

    /// The path of this API on an upstream.
    pub fn path(self) -> &'static str {
        match self {
            Api::Chat => "/v1/chat/completions",
            Api::Completions => "/v1/completions",
            Api::Responses => "/v1/responses",
            Api::Messages => "/v1/messages",
        }
    }
}

/// A client request decoded into a chat request.
#[derive(Debug, Clone)]
pub struct Translated {
    /// The chat request body.
    pub chat: Map<String, Value>,
    /// Reasoning goes back to the client (Messages: only with `thinking` enabled).
    pub show_reasoning: bool,
    /// The client's own reasoning budget (Messages `thinking.budget_tokens`).
    pub reasoning_budget: Option<u64>,
    /// Thinking blocks sent back, to verify (where, thinking, signature): see
    /// [`messages::verify_signatures`].
    pub signed: Vec<(String, String, String)>,
    /// Responses `reasoning.summary` asked for a summary: the reasoning is also returned as the
    /// reasoning item's `summary`.
    pub reasoning_summary: bool,
    /// Why the request cannot be translated to chat: answered to a pool that does not serve
    /// the API itself (one that does gets the request as it is).
    pub untranslatable: Option<ApiError>,
}

/// Decodes a translated API's request body (already known to be JSON) into a chat request.
pub fn decode(api: Api, body: &[u8]) -> Result<Translated, ApiError> {
    let value: Value = serde_json::from_slice(body).map_err(|e| {
        ApiError::new(
            crate::openai::ErrorCode::InvalidJson,
            format!("We could not parse the JSON body of your request: {e}"),
        )
    })?;
    let Value::Object(map) = value else {
        return Err(ApiError::new(
            crate::openai::ErrorCode::InvalidJson,
            "The request body must be a JSON object.",
        ));
    };
    match api {
        Api::Responses => responses::decode(&map),
        Api::Messages => messages::decode(&map),
        Api::Chat | Api::Completions => Err(ApiError::new(
            crate::openai::ErrorCode::InternalError,
            "not a translated API",
        )),
    }
}

/// What a response needs besides the generation: ids, the model asked for, the client's options.
#[derive(Debug, Clone, Default)]
pub struct Meta {
    /// Base of the response and item ids (the request id).
    pub id: String,
    /// The model the client asked for (when the upstream names none).
    pub model: String,
    /// Unix seconds.
    pub created: u64,
    /// Reasoning is returned.
    pub show_reasoning: bool,
    /// The client's stop sequences (Messages `stop_sequence`).
    pub stop_sequences: Vec<String>,
    /// Responses: the reasoning is also written as the reasoning item's `summary`.
    pub summary: bool,
}
