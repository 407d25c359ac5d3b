//! The per-response reasoning figures: what metrics, the access log and `reasoning_stats` carry.

use serde_json::{json, Value};

use super::verify::Check;

/// Figures of one response.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Report {
    /// Reasoning tokens (upstream usage when given, else estimated).
    pub reasoning_tokens: u64,
    /// Answer tokens (completion tokens minus reasoning tokens).
    pub answer_tokens: u64,
    /// No upstream usage: token figures were counted by the gateway.
    pub tokens_counted: bool,
    /// Characters of reasoning.
    pub reasoning_chars: usize,
    /// Reasoning steps (see `steps`).
    pub steps: u32,
    /// Self-corrections (see `corrections`).
    pub corrections: u32,
    /// Reasoning opened and never closed.
    pub unterminated: bool,
    /// The first choice's finish reason.
    pub finish_reason: Option<String>,
    /// Checks run and whether each passed.
    pub verifications: Vec<(Check, bool)>,
    /// Prompt tokens, when the upstream reported usage.
    pub prompt_tokens: Option<u64>,
}

impl Report {
    /// Checks that failed.
    pub fn failed(&self) -> impl Iterator<Item = Check> + '_ {
        self.verifications
            .iter()
            .filter(|(_, ok)| !ok)
            .map(|(c, _)| *c)
    }

    /// The `reasoning_stats` object.
    pub fn to_json(&self) -> Value {
        let failed: Vec<&str> = self.failed().map(Check::label).collect();
        json!({
            "reasoning_tokens": self.reasoning_tokens,
            "answer_tokens": self.answer_tokens,
            "tokens_estimated": self.tokens_counted,
            "steps": self.steps,
            "self_corrections": self.corrections,
            "unterminated": self.unterminated,
            "verification_failures": failed,
        })
    }
}
