//! What budget forcing keeps in the request's context: the plan, the step the body filter asks
//! for, and what the budget did (data only, so the context names it without the driver).

use serde_json::Value;

/// What the gateway may do to one request's reasoning.
#[derive(Debug)]
pub struct Plan {
    /// At the budget the reasoning is closed and the model answers.
    pub answer: bool,
    /// An end of reasoning below this many tokens is extended.
    pub min_tokens: Option<u64>,
    /// Extensions still allowed.
    pub(in crate::proxy) extensions_left: u32,
    pub(in crate::proxy) bridge: String,
    pub(in crate::proxy) extend_word: String,
    /// The upstream request as first sent, which every continuation extends.
    pub(in crate::proxy) request: Value,
}

/// The continuation the body filter asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// Close the reasoning and answer.
    Answer,
    /// The reasoning ended below the minimum: reopen it.
    Extend,
}

/// What the reasoning budget did to a request (access log, `reasoning_budget_actions_total`).
#[derive(Debug, Default, Clone, Copy)]
pub struct Actions {
    /// The answer was forced at the budget.
    pub forced_answer: bool,
    /// Times the reasoning was extended.
    pub extended: u32,
    /// The budget ended the stream with an error (`on_exceed: error`, or a continuation that
    /// failed).
    pub error: bool,
}

impl Actions {
    /// The access log's `budget` field: the last thing the budget did, if anything.
    pub fn label(&self) -> Option<&'static str> {
        if self.error {
            Some("error")
        } else if self.forced_answer {
            Some("forced_answer")
        } else if self.extended > 0 {
            Some("extended")
        } else {
            None
        }
    }
}
