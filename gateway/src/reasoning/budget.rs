//! Budget forcing (issue 30), the pure part: what the gateway sends upstream to continue a
//! generation whose reasoning it cut short (`on_exceed: answer`) or ended too early
//! (`min_tokens`). Nothing here talks to an upstream or keeps time; the proxy decides when
//! (`proxy/forcing.rs`).

use serde_json::{Map, Value};

use super::parser::ParserOptions;

/// Why the generation is continued.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Continue<'a> {
    /// The budget is spent: close the reasoning, then `bridge` (e.g. "Final answer:"; may be
    /// empty), and let the model answer.
    Answer {
        /// Text after the closing tag that steers the model to answer.
        bridge: &'a str,
    },
    /// The model closed its reasoning below the minimum: the closing tag is dropped and `word`
    /// (e.g. "Wait") appended so it reasons on.
    Extend {
        /// Text that keeps the reasoning going.
        word: &'a str,
    },
}

/// Why a request cannot be continued.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ContinueError {
    /// The request body is not a chat request with a `messages` array.
    #[error("the request has no `messages` array to continue")]
    NoMessages,
}

/// The assistant text the continuation starts from: what the model said, ending so that its
/// next token is the answer (`Answer`) or more reasoning (`Extend`). The opening tag is written
/// unless the chat template opens reasoning itself (`start_in_reasoning`); answer text the model
/// gave before its reasoning (`open_tag: anywhere`) comes first, as it was said.
pub fn assistant_prefix(
    options: &ParserOptions,
    answer_before: &str,
    reasoning: &str,
    how: Continue<'_>,
) -> String {
    let tags = &options.tags;
    let mut s = String::with_capacity(
        answer_before.len() + reasoning.len() + tags.open().len() + tags.close().len() + 32,
    );
    s.push_str(answer_before);
    if !options.start_in_reasoning {
        s.push_str(tags.open());
    }
    s.push_str(reasoning);
    match how {
        Continue::Answer { bridge } => {
            s.push_str(tags.close());
            s.push_str("\n\n");
            s.push_str(bridge);
        }
        Continue::Extend { word } => {
            // A word glued to the last one reads as a typo to the model.
            if !reasoning.is_empty() && !reasoning.ends_with(char::is_whitespace) {
                s.push(' ');
            }
            s.push_str(word);
        }
    }
    s
}

/// A chat request that continues `prefix` as the final assistant message, for servers that take
/// `continue_final_message` (vLLM, SGLang): `add_generation_prompt: false`, and `max_tokens` /
/// `max_completion_tokens` reduced by the `used` tokens already generated (at least 1 left).
///
/// Caveats for the proxy, from the templates themselves: the DeepSeek-R1 template renders only
/// the text after `</think>` of an assistant message, so the reasoning would be lost from the
/// prefix; the Qwen3 template re-renders the last assistant message as a think block followed
/// by the answer, so an `Extend` prefix (no `</think>`) would land after an empty think block.
/// Such routes need the completions endpoint with the rendered prompt instead.
pub fn chat_continuation(request: &Value, prefix: &str, used: u64) -> Result<Value, ContinueError> {
    let mut body: Map<String, Value> = request.as_object().cloned().unwrap_or_default();
    let Some(Value::Array(messages)) = body.get_mut("messages") else {
        return Err(ContinueError::NoMessages);
    };
    let mut assistant = Map::new();
    assistant.insert("role".into(), Value::from("assistant"));
    assistant.insert("content".into(), Value::from(prefix));
    messages.push(Value::Object(assistant));
    body.insert("continue_final_message".into(), Value::Bool(true));
    body.insert("add_generation_prompt".into(), Value::Bool(false));
    for key in ["max_tokens", "max_completion_tokens"] {
        if let Some(n) = body.get(key).and_then(Value::as_u64) {
            body.insert(key.into(), Value::from(n.saturating_sub(used).max(1)));
        }
    }
    Ok(Value::Object(body))
}

#[cfg(test)]
mod tests;
