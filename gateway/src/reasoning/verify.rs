//! Verification of a finished response. Each check is pure, runs only when configured and
//! applicable, and reports pass or fail under a fixed name (the metrics' `check` label).

use serde_json::Value;

/// The checks, by metric label.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Check {
    /// Reasoning opened and never closed.
    Unterminated,
    /// No answer text after the reasoning.
    EmptyAnswer,
    /// `<think>`/`</think>` in the answer.
    TagLeak,
    /// `response_format` asked for JSON and the answer is not (or breaks the schema).
    Json,
    /// The answer does not match the route's `answer_regex`.
    Regex,
    /// The answer's numbers do not include the reasoning's last stated number.
    Contradiction,
    /// The reasoning repeats itself (word n-grams) past the configured ratio.
    Loop,
}

impl Check {
    /// Every check.
    pub const ALL: [Check; 7] = [
        Check::Unterminated,
        Check::EmptyAnswer,
        Check::TagLeak,
        Check::Json,
        Check::Regex,
        Check::Contradiction,
        Check::Loop,
    ];

    /// The metric label and config name.
    pub fn label(self) -> &'static str {
        match self {
            Check::Unterminated => "unterminated",
            Check::EmptyAnswer => "empty_answer",
            Check::TagLeak => "tag_leak",
            Check::Json => "json",
            Check::Regex => "regex",
            Check::Contradiction => "contradiction",
            Check::Loop => "loop",
        }
    }

    /// Parses a config name.
    pub fn from_label(s: &str) -> Option<Check> {
        Check::ALL.into_iter().find(|c| c.label() == s)
    }
}

/// Verification settings of a route.
#[derive(Debug, Clone)]
pub struct VerifyConfig {
    /// Enabled checks.
    pub checks: Vec<Check>,
    /// Pattern the answer must match (the `regex` check).
    pub answer_regex: Option<regex::Regex>,
    /// Word n-gram length of the loop check.
    pub loop_ngram: usize,
    /// Largest share of repeated n-grams before the reasoning counts as looping.
    pub loop_max_ratio: f64,
    /// The route's reasoning tags (the `tag_leak` check).
    pub tags: super::parser::Tags,
}

impl Default for VerifyConfig {
    fn default() -> Self {
        VerifyConfig {
            checks: vec![
                Check::Unterminated,
                Check::EmptyAnswer,
                Check::TagLeak,
                Check::Json,
                Check::Loop,
            ],
            answer_regex: None,
            loop_ngram: 8,
            loop_max_ratio: 0.5,
            tags: super::parser::Tags::THINK,
        }
    }
}

/// What a check looks at.
pub struct Subject<'a> {
    /// Reasoning text.
    pub reasoning: &'a str,
    /// Answer text.
    pub answer: &'a str,
    /// Reasoning was opened and not closed.
    pub unterminated: bool,
    /// The request's `response_format`, if any.
    pub response_format: Option<&'a Value>,
    /// The response ended normally (`finish_reason: stop`): an empty answer after `length` is a
    /// budget matter, not a verification failure.
    pub complete: bool,
}

/// Runs the enabled, applicable checks; returns (check, passed).
pub fn verify(cfg: &VerifyConfig, s: &Subject<'_>) -> Vec<(Check, bool)> {
    let mut out = Vec::new();
    let reasoned = !s.reasoning.is_empty();
    for &check in &cfg.checks {
        let result = match check {
            Check::Unterminated => reasoned.then_some(!s.unterminated),
            Check::EmptyAnswer => s.complete.then(|| !s.answer.trim().is_empty()),
            Check::TagLeak => {
                Some(!s.answer.contains(cfg.tags.open()) && !s.answer.contains(cfg.tags.close()))
            }
            Check::Json => s.response_format.and_then(|f| json_check(f, s.answer)),
            Check::Regex => cfg.answer_regex.as_ref().map(|r| r.is_match(s.answer)),
            Check::Contradiction => contradiction_check(s.reasoning, s.answer),
            Check::Loop => reasoned
                .then(|| repeated_ngram_ratio(s.reasoning, cfg.loop_ngram) <= cfg.loop_max_ratio),
        };
        if let Some(passed) = result {
            out.push((check, passed));
        }
    }
    out
}

fn json_check(format: &Value, answer: &str) -> Option<bool> {
    let kind = format.get("type").and_then(Value::as_str)?;
    if kind != "json_object" && kind != "json_schema" {
        return None;
    }
    let Ok(v) = serde_json::from_str::<Value>(strip_fence(answer)) else {
        return Some(false);
    };
    if kind == "json_object" {
        return Some(v.is_object());
    }
    let schema = format.get("json_schema").and_then(|j| j.get("schema"));
    Some(schema.is_none_or(|s| schema_accepts(s, &v)))
}

/// Models often wrap JSON in a Markdown fence; the fence is not part of the value.
fn strip_fence(answer: &str) -> &str {
    let t = answer.trim();
    let Some(inner) = t.strip_prefix("```") else {
        return t;
    };
    let inner = inner.trim_start_matches(|c: char| c.is_ascii_alphabetic());
    inner.strip_suffix("```").unwrap_or(inner).trim()
}

/// A JSON Schema subset: `type`, `properties`, `required`, `additionalProperties: false`,
/// `items`, `enum`, `const`.
pub fn schema_accepts(schema: &Value, v: &Value) -> bool {
    if let Some(e) = schema.get("enum").and_then(Value::as_array) {
        if !e.contains(v) {
            return false;
        }
    }
    if let Some(c) = schema.get("const") {
        if c != v {
            return false;
        }
    }
    let type_ok = |t: &str| match t {
        "object" => v.is_object(),
        "array" => v.is_array(),
        "string" => v.is_string(),
        "number" => v.is_number(),
        "integer" => v.as_i64().is_some() || v.as_u64().is_some(),
        "boolean" => v.is_boolean(),
        "null" => v.is_null(),
        _ => true,
    };
    match schema.get("type") {
        Some(Value::String(t)) if !type_ok(t) => return false,
        Some(Value::Array(ts)) if !ts.iter().filter_map(Value::as_str).any(type_ok) => {
            return false
        }
        _ => {}
    }
    if let Some(obj) = v.as_object() {
        let props = schema.get("properties").and_then(Value::as_object);
        if let Some(req) = schema.get("required").and_then(Value::as_array) {
            if !req
                .iter()
                .filter_map(Value::as_str)
                .all(|k| obj.contains_key(k))
            {
                return false;
            }
        }
        for (k, val) in obj {
            match props.and_then(|p| p.get(k)) {
                Some(sub) if !schema_accepts(sub, val) => return false,
                None if schema.get("additionalProperties") == Some(&Value::Bool(false)) => {
                    return false
                }
                _ => {}
            }
        }
    }
    if let (Some(items), Some(arr)) = (schema.get("items"), v.as_array()) {
        if !arr.iter().all(|x| schema_accepts(items, x)) {
            return false;
        }
    }
    true
}

/// Numbers written in a text (`1,234.5` → 1234.5), in order.
pub fn numbers(text: &str) -> Vec<f64> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let flush = |cur: &mut String, out: &mut Vec<f64>| {
        let t = cur.trim_end_matches(['.', ',']).replace(',', "");
        if let Ok(n) = t.parse::<f64>() {
            out.push(n);
        }
        cur.clear();
    };
    let chars: Vec<char> = text.chars().collect();
    for (i, &c) in chars.iter().enumerate() {
        let joins = (c == '.' || c == ',')
            && !cur.is_empty()
            && chars.get(i + 1).is_some_and(char::is_ascii_digit);
        let sign = c == '-' && cur.is_empty() && chars.get(i + 1).is_some_and(char::is_ascii_digit);
        if c.is_ascii_digit() || joins || sign {
            cur.push(c);
        } else if !cur.is_empty() {
            flush(&mut cur, &mut out);
        }
    }
    if !cur.is_empty() {
        flush(&mut cur, &mut out);
    }
    out
}

/// Passes when the answer states no number or one of its numbers equals the reasoning's last.
fn contradiction_check(reasoning: &str, answer: &str) -> Option<bool> {
    let last = *numbers(reasoning).last()?;
    let stated = numbers(answer);
    if stated.is_empty() {
        return None;
    }
    Some(
        stated
            .iter()
            .any(|n| (n - last).abs() <= 1e-9 * last.abs().max(1.0)),
    )
}

/// Share of word n-grams that repeat an earlier one (0 when there are fewer than 20).
pub fn repeated_ngram_ratio(text: &str, n: usize) -> f64 {
    let words: Vec<&str> = text.split_whitespace().collect();
    if n == 0 || words.len() < n + 19 {
        return 0.0;
    }
    // Each n-gram as a 64-bit digest of its words' FNV-1a hashes, then sorted: repeats are the
    // n-grams minus the distinct ones. A quarter of the time of a `HashSet<&[&str]>` (SipHash
    // over every word of every window, and rehashing as it grows) at the end of every stream.
    let word_hashes: Vec<u64> = words
        .iter()
        .map(|w| crate::util::fnv1a(w.as_bytes()))
        .collect();
    let mut grams: Vec<u64> = word_hashes
        .windows(n)
        .map(|w| {
            w.iter().fold(0u64, |acc, h| {
                (acc.rotate_left(23) ^ h).wrapping_mul(0x9e37_79b9_7f4a_7c15)
            })
        })
        .collect();
    let total = grams.len();
    grams.sort_unstable();
    grams.dedup();
    (total - grams.len()) as f64 / total as f64
}

#[cfg(test)]
mod tests;
