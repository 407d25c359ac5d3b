//! What a cached answer is keyed on. The problem (the last user message) is embedded; everything
//! else that changes the answer must match exactly and forms the partition key: route, what
//! serves it (upstream pool, canary variant, upstream model), model, system prompt and earlier
//! turns, sampling parameters and tenant.

use serde_json::{Map, Value};
use sha2::{Digest, Sha256};

use crate::util::hex;

/// A 128-bit digest (partition and exact-match keys, tenant ids).
pub type Digest128 = [u8; 16];

/// Request fields that do not change the answer and are left out of the partition key.
const NEUTRAL_FIELDS: &[&str] = &[
    "messages",
    "stream",
    "stream_options",
    "user",
    "metadata",
    "store",
];

/// Why a request cannot use the cache at all.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Uncacheable {
    /// No user message last.
    NoProblem,
    /// Tools, several choices, log probabilities, …: the replay could not match.
    Params,
}

/// The cache key of one chat request.
#[derive(Debug, Clone)]
pub struct RequestKey {
    /// The tenant id (hex of a digest of the API key or the tenant header).
    pub tenant: String,
    /// Everything but the problem text.
    pub partition: Digest128,
    /// Partition plus the normalised problem text.
    pub exact: Digest128,
    /// The last user message.
    pub problem: String,
}

/// What answers a request: another upstream, canary variant or upstream model is another
/// partition, so a reload or a canary never replays another model's answers.
#[derive(Debug, Clone, Copy, Default)]
pub struct Served<'a> {
    /// The upstream pool's name.
    pub upstream: &'a str,
    /// The canary variant, if the route has a canary.
    pub variant: Option<&'a str>,
    /// The model name sent upstream (`upstream_model`, else the client's).
    pub model: &'a str,
}

/// The tenant id of no credentials (real ids are hex digests, so it cannot collide with one).
pub const ANONYMOUS: &str = "anonymous";

/// The tenant id for an API key or tenant header value.
pub fn tenant_id(secret: Option<&str>) -> String {
    match secret {
        None | Some("") => ANONYMOUS.to_string(),
        Some(s) => hex(&digest(&[b"tenant\0", s.as_bytes()])),
    }
}

/// Builds the key for a chat request body.
pub fn request_key(
    route: &str,
    served: &Served<'_>,
    body: &Map<String, Value>,
    tenant: &str,
) -> Result<RequestKey, Uncacheable> {
    let n = body.get("n").and_then(Value::as_u64).unwrap_or(1);
    let has = |k: &str| {
        body.get(k)
            .is_some_and(|v| !v.is_null() && v != &Value::Bool(false))
    };
    if n != 1 || has("tools") || has("functions") || has("logprobs") || has("top_logprobs") {
        return Err(Uncacheable::Params);
    }
    let messages = body
        .get("messages")
        .and_then(Value::as_array)
        .ok_or(Uncacheable::NoProblem)?;
    let (last, earlier) = messages.split_last().ok_or(Uncacheable::NoProblem)?;
    if last.get("role").and_then(Value::as_str) != Some("user") {
        return Err(Uncacheable::NoProblem);
    }
    let problem = message_text(last).ok_or(Uncacheable::NoProblem)?;
    if problem.trim().is_empty() {
        return Err(Uncacheable::NoProblem);
    }
    let mut context = String::new();
    for m in earlier {
        canonical(m, &mut context);
        context.push('\n');
    }
    let mut params = String::new();
    let mut keys: Vec<&String> = body
        .keys()
        .filter(|k| !NEUTRAL_FIELDS.contains(&k.as_str()))
        .collect();
    keys.sort();
    for k in keys {
        params.push_str(k);
        params.push('=');
        canonical(&body[k.as_str()], &mut params);
        params.push('\n');
    }
    let partition = digest(&[
        b"partition\0",
        route.as_bytes(),
        b"\0",
        served.upstream.as_bytes(),
        b"\0",
        served.variant.unwrap_or_default().as_bytes(),
        b"\0",
        served.model.as_bytes(),
        b"\0",
        tenant.as_bytes(),
        b"\0",
        params.as_bytes(),
        b"\0",
        context.as_bytes(),
    ]);
    let normalised = normalise(&problem);
    let exact = digest(&[b"exact\0", &partition, normalised.as_bytes()]);
    Ok(RequestKey {
        tenant: tenant.to_string(),
        partition,
        exact,
        problem,
    })
}

/// The text of a message: a string, or the text parts of a content array.
fn message_text(m: &Value) -> Option<String> {
    match m.get("content")? {
        Value::String(s) => Some(s.clone()),
        Value::Array(parts) => {
            let mut out = String::new();
            for p in parts {
                match p.get("type").and_then(Value::as_str) {
                    Some("text") => {
                        if !out.is_empty() {
                            out.push('\n');
                        }
                        out.push_str(p.get("text")?.as_str()?);
                    }
                    // Images, audio, files: the text alone does not identify the problem.
                    _ => return None,
                }
            }
            Some(out)
        }
        _ => None,
    }
}

/// Whitespace-collapsed, trimmed: the exact tier ignores only spacing.
pub fn normalise(text: &str) -> String {
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// JSON with object keys sorted, whatever map order serde_json was built with.
fn canonical(v: &Value, out: &mut String) {
    match v {
        Value::Object(map) => {
            let mut keys: Vec<&String> = map.keys().collect();
            keys.sort();
            out.push('{');
            for (i, k) in keys.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                out.push_str(&Value::String((*k).clone()).to_string());
                out.push(':');
                canonical(&map[k.as_str()], out);
            }
            out.push('}');
        }
        Value::Array(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                canonical(item, out);
            }
            out.push(']');
        }
        other => out.push_str(&other.to_string()),
    }
}

fn digest(parts: &[&[u8]]) -> Digest128 {
    let mut h = Sha256::new();
    for p in parts {
        h.update((p.len() as u64).to_le_bytes());
        h.update(p);
    }
    let full = h.finalize();
    let mut out = [0u8; 16];
    out.copy_from_slice(&full[..16]);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn key(body: Value, tenant: &str) -> Result<RequestKey, Uncacheable> {
        let served = Served {
            upstream: "u",
            variant: None,
            model: "m",
        };
        request_key("r", &served, body.as_object().unwrap(), tenant)
    }

    #[test]
    fn another_upstream_variant_or_upstream_model_is_another_partition() {
        let body = json!({"model":"m","messages":[{"role":"user","content":"Q"}]});
        let body = body.as_object().unwrap();
        let base = Served {
            upstream: "u",
            variant: None,
            model: "m",
        };
        let p = request_key("r", &base, body, "t").unwrap().partition;
        for other in [
            Served {
                upstream: "u2",
                ..base
            },
            Served {
                variant: Some("canary"),
                ..base
            },
            Served {
                model: "m-next",
                ..base
            },
        ] {
            assert_ne!(p, request_key("r", &other, body, "t").unwrap().partition);
        }
    }

    #[test]
    fn spacing_and_streaming_do_not_change_the_key() {
        let a = key(
            json!({"model":"m","messages":[{"role":"user","content":"What is  2+2?"}]}),
            "t",
        )
        .unwrap();
        let b = key(json!({"stream":true,"stream_options":{"include_usage":true},"model":"m","messages":[{"role":"user","content":" What is 2+2? "}]}), "t").unwrap();
        assert_eq!(a.exact, b.exact);
        assert_eq!(a.partition, b.partition);
    }

    #[test]
    fn tenant_system_prompt_history_and_sampling_change_the_partition() {
        let base = json!({"model":"m","messages":[{"role":"user","content":"Q"}]});
        let p = key(base.clone(), "t").unwrap().partition;
        assert_ne!(p, key(base.clone(), "other").unwrap().partition);
        let sys = json!({"model":"m","messages":[{"role":"system","content":"Be terse"},{"role":"user","content":"Q"}]});
        assert_ne!(p, key(sys, "t").unwrap().partition);
        let hist = json!({"model":"m","messages":[{"role":"user","content":"A"},{"role":"assistant","content":"B"},{"role":"user","content":"Q"}]});
        assert_ne!(p, key(hist, "t").unwrap().partition);
        let temp =
            json!({"model":"m","temperature":0.2,"messages":[{"role":"user","content":"Q"}]});
        assert_ne!(p, key(temp, "t").unwrap().partition);
        let other_model = json!({"model":"m2","messages":[{"role":"user","content":"Q"}]});
        assert_ne!(p, key(other_model, "t").unwrap().partition);
    }

    #[test]
    fn requests_that_cannot_be_replayed_are_refused() {
        let tools = json!({"model":"m","tools":[{"type":"function"}],"messages":[{"role":"user","content":"Q"}]});
        assert_eq!(key(tools, "t").unwrap_err(), Uncacheable::Params);
        let n2 = json!({"model":"m","n":2,"messages":[{"role":"user","content":"Q"}]});
        assert_eq!(key(n2, "t").unwrap_err(), Uncacheable::Params);
        let last_assistant = json!({"model":"m","messages":[{"role":"user","content":"Q"},{"role":"assistant","content":"A"}]});
        assert_eq!(
            key(last_assistant, "t").unwrap_err(),
            Uncacheable::NoProblem
        );
        let image = json!({"model":"m","messages":[{"role":"user","content":[{"type":"image_url","image_url":{"url":"x"}}]}]});
        assert_eq!(key(image, "t").unwrap_err(), Uncacheable::NoProblem);
    }

    #[test]
    fn tenant_ids_are_stable_digests() {
        assert_eq!(tenant_id(Some("sk-a")), tenant_id(Some("sk-a")));
        assert_ne!(tenant_id(Some("sk-a")), tenant_id(Some("sk-b")));
        assert_eq!(tenant_id(None), "anonymous");
        assert!(!tenant_id(Some("sk-a")).contains("sk-a"));
    }
}
