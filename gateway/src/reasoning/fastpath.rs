//! Recognises the common streaming chunk without building a JSON tree: one choice whose `delta`
//! holds a string `content`, `finish_reason: null`, no usage and no reasoning fields. Anything
//! else returns `None` and takes the general path.
//!
//! One pass over the string literals finds the keys; string values are skipped whole, so text
//! inside them can never be taken for a key.

use std::borrow::Cow;
use std::ops::Range;

/// A chunk the fast path can rewrite.
#[derive(Debug)]
pub struct SimpleChunk<'a> {
    /// Byte range of the whole `"content":"…"` member.
    pub member: Range<usize>,
    /// The decoded content.
    pub content: Cow<'a, str>,
    /// `choices[0].index`.
    pub index: u64,
    /// The delta holds nothing but `content`.
    pub content_only: bool,
}

/// End (exclusive) of the JSON string literal starting at `start` (which holds `"`).
fn string_end(bytes: &[u8], start: usize) -> Option<usize> {
    // A plain loop: chunk strings are a few bytes long, too short for memchr to pay off.
    let mut i = start + 1;
    while i < bytes.len() {
        match bytes[i] {
            b'"' => return Some(i + 1),
            b'\\' => i += 2,
            _ => i += 1,
        }
    }
    None
}

fn skip_ws(bytes: &[u8], mut i: usize) -> usize {
    while i < bytes.len() && bytes[i].is_ascii_whitespace() {
        i += 1;
    }
    i
}

/// Keys found in one pass: (key start, value start) and how often each occurred.
#[derive(Default)]
struct Keys {
    index: Option<usize>,
    indices: usize,
    content: Option<(usize, usize)>,
    contents: usize,
    delta: Option<usize>,
    finish_reason: Option<usize>,
    usage: Option<usize>,
}

/// Walks every string literal once; strings followed by `:` are keys. String values are
/// skipped whole, so their text can never be mistaken for a key.
fn scan(data: &str) -> Option<Keys> {
    let bytes = data.as_bytes();
    let mut keys = Keys::default();
    let mut i = 0;
    while let Some(q) = memchr::memchr(b'"', &bytes[i..]) {
        let start = i + q;
        let end = string_end(bytes, start)?;
        let colon = skip_ws(bytes, end);
        if bytes.get(colon) != Some(&b':') {
            i = end;
            continue;
        }
        let value = skip_ws(bytes, colon + 1);
        match &data[start + 1..end - 1] {
            "index" => {
                keys.indices += 1;
                keys.index = Some(value);
            }
            "content" => {
                keys.contents += 1;
                keys.content = Some((start, value));
            }
            "delta" => keys.delta = Some(value),
            "finish_reason" => keys.finish_reason = Some(value),
            "usage" => keys.usage = Some(value),
            k if k.starts_with("reasoning") => return None,
            _ => {}
        }
        i = value;
    }
    Some(keys)
}

/// Matches a simple chat chunk.
pub fn simple_chat_chunk(data: &str) -> Option<SimpleChunk<'_>> {
    let keys = scan(data)?;
    if keys.indices != 1 || keys.contents != 1 {
        return None;
    }
    if keys.usage.is_some_and(|v| !data[v..].starts_with("null")) {
        return None;
    }
    if !data[keys.finish_reason?..].starts_with("null") {
        return None;
    }
    let d = keys.delta?;
    let (key_start, lit_start) = keys.content?;
    if !data[d..].starts_with('{') || key_start < d || !data[lit_start..].starts_with('"') {
        return None;
    }
    let lit_end = string_end(data.as_bytes(), lit_start)?;
    let literal = &data[lit_start..lit_end];
    let content = match serde_json::from_str::<&str>(literal) {
        Ok(s) => Cow::Borrowed(s),
        Err(_) => Cow::Owned(serde_json::from_str::<String>(literal).ok()?),
    };
    let i = keys.index?;
    let digits = data[i..].bytes().take_while(u8::is_ascii_digit).count();
    let index = data[i..i + digits].parse().ok()?;
    let content_only =
        data[d + 1..key_start].trim().is_empty() && data[lit_end..].trim_start().starts_with('}');
    Some(SimpleChunk {
        member: key_start..lit_end,
        content,
        index,
        content_only,
    })
}

/// Appends `s` as a JSON string literal.
pub fn push_json_string(out: &mut String, s: &str) {
    out.push('"');
    let mut last = 0;
    for (i, b) in s.bytes().enumerate() {
        let esc: Option<&str> = match b {
            b'"' => Some("\\\""),
            b'\\' => Some("\\\\"),
            b'\n' => Some("\\n"),
            b'\r' => Some("\\r"),
            b'\t' => Some("\\t"),
            0..=0x1f => None,
            _ => continue,
        };
        out.push_str(&s[last..i]);
        match esc {
            Some(e) => out.push_str(e),
            None => out.push_str(&format!("\\u{b:04x}")),
        }
        last = i + 1;
    }
    out.push_str(&s[last..]);
    out.push('"');
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn simple_chunks_are_recognised_and_others_are_not() {
        let d = r#"{"id":"x","choices":[{"index":0,"delta":{"content":"a\"b\n"},"finish_reason":null}]}"#;
        let c = simple_chat_chunk(d).unwrap();
        assert_eq!(c.content, "a\"b\n");
        assert_eq!(&d[c.member.clone()], r#""content":"a\"b\n""#);
        assert!(c.content_only);
        let role = r#"{"choices":[{"index":0,"delta":{"role":"assistant","content":""},"finish_reason":null}]}"#;
        assert!(!simple_chat_chunk(role).unwrap().content_only);
        for other in [
            r#"{"choices":[{"index":0,"delta":{"content":"a"},"finish_reason":"stop"}]}"#,
            r#"{"choices":[{"index":0,"delta":{"reasoning_content":"a"},"finish_reason":null}]}"#,
            r#"{"choices":[{"index":0,"delta":{"content":null},"finish_reason":null}]}"#,
            r#"{"choices":[{"index":0,"delta":{"content":"a"},"finish_reason":null},{"index":1,"delta":{"content":"b"},"finish_reason":null}]}"#,
            r#"{"choices":[{"index":0,"delta":{"content":"a"},"finish_reason":null}],"usage":{"total_tokens":1}}"#,
        ] {
            assert!(simple_chat_chunk(other).is_none(), "{other}");
        }
    }

    #[test]
    fn json_strings_round_trip() {
        for s in ["plain", "q\"uote\\", "ctl\u{1}\t\r\n", "ünï 🤔"] {
            let mut out = String::new();
            push_json_string(&mut out, s);
            assert_eq!(serde_json::from_str::<String>(&out).unwrap(), s);
        }
    }
}
