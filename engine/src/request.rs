//! OpenAI request bodies → mistral.rs requests. Every sampling parameter is honoured or refused
//! with a 400; none is silently ignored.

use either::Either;
use indexmap::IndexMap;
use mistralrs::{MessageContent, RequestMessage, SamplingParams, StopTokens};
use serde_json::{Map, Value};

use crate::error::EngineError;

/// Which API was called.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Api {
    /// `/v1/chat/completions`
    Chat,
    /// `/v1/completions`
    Completions,
}

/// A validated generation request.
#[derive(Debug)]
pub struct Generation {
    /// Messages or prompt.
    pub messages: RequestMessage,
    /// Sampling settings.
    pub sampling: SamplingParams,
    /// SSE response wanted.
    pub stream: bool,
    /// Send a usage chunk before `[DONE]`.
    pub include_usage: bool,
    /// Stop sequences (also cut by the relay: mistral.rs streams them before stopping).
    pub stops: Vec<String>,
    /// The final assistant message is continued (`continue_final_message`).
    pub continuation: Option<Continuation>,
}

/// A chat whose final assistant message is continued, as vLLM's `continue_final_message` with
/// `add_generation_prompt: false`: the earlier messages are rendered by the chat template with
/// the assistant's turn opened, and the final message follows as it is, unclosed. (mistral.rs
/// has no such option; the server tokenizes both and generates from the tokens.) The gateway's
/// budget forcing relies on it.
#[derive(Debug, Clone)]
pub struct Continuation {
    /// The messages before the final assistant message.
    pub messages: Vec<IndexMap<String, MessageContent>>,
    /// The final assistant message's text.
    pub prefix: String,
    /// `chat_template_kwargs.enable_thinking`.
    pub enable_thinking: Option<bool>,
}

/// Parameters the engine cannot honour; asking for them is a 400, not a silent no-op.
const UNSUPPORTED: &[&str] = &[
    "seed",
    "logprobs",
    "top_logprobs",
    "tools",
    "tool_choice",
    "functions",
    "function_call",
    "response_format",
    "logit_bias",
    "echo",
    "best_of",
    "suffix",
    "audio",
    "modalities",
    "prediction",
];

fn number(
    body: &Map<String, Value>,
    key: &'static str,
    lo: f64,
    hi: f64,
) -> Result<Option<f64>, EngineError> {
    match body.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(v) => match v.as_f64() {
            Some(x) if (lo..=hi).contains(&x) => Ok(Some(x)),
            _ => Err(EngineError::bad(
                key,
                format!("`{key}` must be a number between {lo} and {hi}"),
            )),
        },
    }
}

fn text_of(content: &Value) -> Result<String, EngineError> {
    match content {
        Value::String(s) => Ok(s.clone()),
        Value::Null => Ok(String::new()),
        Value::Array(parts) => parts
            .iter()
            .map(|p| match (p["type"].as_str(), p["text"].as_str()) {
                (Some("text"), Some(t)) => Ok(t),
                _ => Err(EngineError::bad(
                    "messages",
                    "the bundled engine accepts text content parts only",
                )),
            })
            .collect::<Result<Vec<_>, _>>()
            .map(|v| v.concat()),
        _ => Err(EngineError::bad(
            "messages",
            "message `content` must be a string or an array of text parts",
        )),
    }
}

fn messages(body: &Map<String, Value>) -> Result<RequestMessage, EngineError> {
    let Some(Value::Array(items)) = body.get("messages") else {
        return Err(EngineError::bad("messages", "`messages` must be an array"));
    };
    let mut out = Vec::with_capacity(items.len());
    for m in items {
        let role = m["role"]
            .as_str()
            .ok_or_else(|| EngineError::bad("messages", "each message needs a string `role`"))?;
        if !matches!(role, "system" | "user" | "assistant" | "developer") {
            return Err(EngineError::bad(
                "messages",
                format!("role `{role}` is not supported by the bundled engine"),
            ));
        }
        let role = if role == "developer" { "system" } else { role };
        let mut msg: IndexMap<String, MessageContent> = IndexMap::new();
        msg.insert("role".into(), Either::Left(role.to_string()));
        msg.insert("content".into(), Either::Left(text_of(&m["content"])?));
        out.push(msg);
    }
    let enable_thinking = body
        .get("chat_template_kwargs")
        .and_then(|k| k.get("enable_thinking"))
        .and_then(Value::as_bool);
    Ok(RequestMessage::Chat {
        messages: out,
        enable_thinking,
        reasoning_effort: None,
    })
}

fn prompt(body: &Map<String, Value>) -> Result<RequestMessage, EngineError> {
    let text = match body.get("prompt") {
        Some(Value::String(s)) => s.clone(),
        Some(Value::Array(a)) if a.len() == 1 && a[0].is_string() => {
            a[0].as_str().unwrap_or_default().to_string()
        }
        _ => {
            return Err(EngineError::bad(
                "prompt",
                "`prompt` must be one string for the bundled engine",
            ))
        }
    };
    Ok(RequestMessage::Completion {
        text,
        echo_prompt: false,
        best_of: None,
    })
}

/// Validates a request body and builds the mistral.rs request parts.
pub fn parse(api: Api, body: &[u8], max_context_tokens: usize) -> Result<Generation, EngineError> {
    let Ok(Value::Object(body)) = serde_json::from_slice::<Value>(body) else {
        return Err(EngineError::BadRequest {
            param: None,
            message: "the body must be a JSON object".into(),
        });
    };
    for key in UNSUPPORTED {
        if body
            .get(*key)
            .is_some_and(|v| !v.is_null() && v != &Value::Bool(false))
        {
            return Err(EngineError::bad(
                key,
                format!("`{key}` is not supported by the bundled engine"),
            ));
        }
    }
    if body
        .get("n")
        .and_then(Value::as_u64)
        .is_some_and(|n| n != 1)
    {
        return Err(EngineError::bad(
            "n",
            "the bundled engine returns one choice (`n` must be 1)",
        ));
    }
    let messages = match api {
        Api::Chat => messages(&body)?,
        Api::Completions => prompt(&body)?,
    };
    let continuation = match (&messages, continues(&body)?) {
        (
            RequestMessage::Chat {
                messages: m,
                enable_thinking,
                ..
            },
            true,
        ) => {
            let mut m = m.clone();
            let last = m.pop();
            let prefix = match last.as_ref().map(|l| (l.get("role"), l.get("content"))) {
                Some((Some(Either::Left(role)), Some(Either::Left(text))))
                    if role == "assistant" =>
                {
                    text.clone()
                }
                _ => {
                    return Err(EngineError::bad(
                        "messages",
                        "`continue_final_message` needs a final assistant message",
                    ))
                }
            };
            Some(Continuation {
                messages: m,
                prefix,
                enable_thinking: *enable_thinking,
            })
        }
        _ => None,
    };
    let max_tokens = ["max_completion_tokens", "max_tokens"]
        .iter()
        .find_map(|k| body.get(*k).filter(|v| !v.is_null()).map(|v| (*k, v)));
    let max_len = match max_tokens {
        None => max_context_tokens,
        Some((k, v)) => match v.as_u64() {
            Some(n) if n >= 1 && (n as usize) <= max_context_tokens => n as usize,
            _ => {
                return Err(EngineError::bad(
                    if k == "max_tokens" {
                        "max_tokens"
                    } else {
                        "max_completion_tokens"
                    },
                    format!("must be an integer from 1 to {max_context_tokens}"),
                ))
            }
        },
    };
    let temperature = number(&body, "temperature", 0.0, 2.0)?;
    let top_p = number(&body, "top_p", 0.0, 1.0)?;
    let presence = number(&body, "presence_penalty", -2.0, 2.0)?;
    let frequency = number(&body, "frequency_penalty", -2.0, 2.0)?;
    let stop = match body.get("stop") {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) if !s.is_empty() => Some(vec![s.clone()]),
        Some(Value::Array(a))
            if a.len() <= 4 && a.iter().all(|s| s.as_str().is_some_and(|s| !s.is_empty())) =>
        {
            Some(
                a.iter()
                    .filter_map(|s| s.as_str().map(str::to_owned))
                    .collect(),
            )
        }
        Some(_) => {
            return Err(EngineError::bad(
                "stop",
                "`stop` must be a non-empty string or up to 4 of them",
            ))
        }
    };
    let mut sampling = SamplingParams::neutral();
    // OpenAI's default temperature is 1; 0 means greedy decoding.
    let t = temperature.unwrap_or(1.0);
    if t == 0.0 {
        sampling.top_k = Some(1);
    } else {
        sampling.temperature = Some(t);
    }
    sampling.top_p = top_p;
    sampling.presence_penalty = presence.map(|x| x as f32);
    sampling.frequency_penalty = frequency.map(|x| x as f32);
    sampling.stop_toks = stop.clone().map(StopTokens::Seqs);
    sampling.max_len = Some(max_len);
    let stream = body.get("stream").and_then(Value::as_bool).unwrap_or(false);
    let include_usage = body
        .get("stream_options")
        .and_then(|o| o.get("include_usage"))
        .and_then(Value::as_bool)
        .unwrap_or(false);
    Ok(Generation {
        messages,
        sampling,
        stream,
        include_usage,
        stops: stop.unwrap_or_default(),
        continuation,
    })
}

/// `continue_final_message: true` (chat only); `add_generation_prompt: true` with it is a
/// contradiction, refused as vLLM does.
fn continues(body: &Map<String, Value>) -> Result<bool, EngineError> {
    let flag = |k: &str| body.get(k).and_then(Value::as_bool);
    match (
        flag("continue_final_message"),
        flag("add_generation_prompt"),
    ) {
        (Some(true), Some(true)) => Err(EngineError::bad(
            "add_generation_prompt",
            "`continue_final_message` and `add_generation_prompt` cannot both be true",
        )),
        (Some(true), _) => Ok(true),
        _ => Ok(false),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err(body: &str) -> String {
        match parse(Api::Chat, body.as_bytes(), 1024) {
            Err(EngineError::BadRequest { param, .. }) => param.unwrap_or("").to_string(),
            other => panic!("expected a 400, got {other:?}"),
        }
    }

    #[test]
    fn sampling_parameters_are_honoured() {
        let g = parse(
            Api::Chat,
            br#"{"model":"m","messages":[{"role":"user","content":"hi"}],"max_tokens":7,"temperature":0.5,"top_p":0.9,"stop":["\n\n"],"stream":true,"stream_options":{"include_usage":true}}"#,
            1024,
        )
        .unwrap();
        assert_eq!(g.sampling.max_len, Some(7));
        assert_eq!(g.sampling.temperature, Some(0.5));
        assert_eq!(g.sampling.top_p, Some(0.9));
        assert!(
            matches!(g.sampling.stop_toks, Some(StopTokens::Seqs(ref s)) if s == &vec!["\n\n".to_string()])
        );
        assert!(g.stream && g.include_usage);
        let greedy = parse(
            Api::Chat,
            br#"{"messages":[{"role":"user","content":"hi"}],"temperature":0}"#,
            1024,
        )
        .unwrap();
        assert_eq!(greedy.sampling.top_k, Some(1));
        assert_eq!(greedy.sampling.temperature, None);
    }

    #[test]
    fn a_final_assistant_message_is_continued_when_asked() {
        let g = parse(
            Api::Chat,
            br#"{"messages":[{"role":"user","content":"hi"},{"role":"assistant","content":"<think>so</think>\n\nFinal answer:"}],"continue_final_message":true,"add_generation_prompt":false}"#,
            1024,
        )
        .unwrap();
        let c = g.continuation.expect("a continuation");
        assert_eq!(c.prefix, "<think>so</think>\n\nFinal answer:");
        assert_eq!(
            c.messages.len(),
            1,
            "the prefix is not rendered as a message"
        );
        let plain = parse(
            Api::Chat,
            br#"{"messages":[{"role":"user","content":"hi"},{"role":"assistant","content":"x"}]}"#,
            1024,
        )
        .unwrap();
        assert!(plain.continuation.is_none());
        assert_eq!(
            err(r#"{"messages":[{"role":"user","content":"hi"}],"continue_final_message":true}"#),
            "messages"
        );
        assert_eq!(
            err(
                r#"{"messages":[{"role":"assistant","content":"x"}],"continue_final_message":true,"add_generation_prompt":true}"#
            ),
            "add_generation_prompt"
        );
    }

    #[test]
    fn what_cannot_be_honoured_is_refused() {
        let base = r#""messages":[{"role":"user","content":"hi"}]"#;
        assert_eq!(err(&format!("{{{base},\"seed\":3}}")), "seed");
        assert_eq!(err(&format!("{{{base},\"n\":2}}")), "n");
        assert_eq!(err(&format!("{{{base},\"max_tokens\":0}}")), "max_tokens");
        assert_eq!(
            err(&format!("{{{base},\"max_tokens\":5000}}")),
            "max_tokens"
        );
        assert_eq!(err(&format!("{{{base},\"temperature\":3}}")), "temperature");
        assert_eq!(err(&format!("{{{base},\"tools\":[{{}}]}}")), "tools");
        assert_eq!(err(&format!("{{{base},\"stop\":[\"\"]}}")), "stop");
        assert_eq!(
            err(r#"{"messages":[{"role":"tool","content":"x"}]}"#),
            "messages"
        );
    }
}
