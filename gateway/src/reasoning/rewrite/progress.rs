//! The rewriter's running figures: token estimates, the per-response report, alerts raised while
//! streaming (budget, periodic checks), and usage filled in for clients.

use serde_json::{Map, Value};

use super::{Alert, ResponseRewriter, Stats};
use crate::config::OutputField;
use crate::reasoning::corrections::count_corrections;
use crate::reasoning::report::Report;
use crate::reasoning::sse::Event;
use crate::reasoning::verify::{self, Check};

impl ResponseRewriter {
    /// Alerts raised since the last call.
    pub fn take_alerts(&mut self) -> Vec<Alert> {
        std::mem::take(&mut self.alerts)
    }

    /// The first choice is inside reasoning.
    pub fn in_reasoning(&self) -> bool {
        self.choices
            .values()
            .next()
            .is_some_and(|c| c.parser.in_reasoning())
    }

    /// The reasoning budget, after every upstream event: at it an alert, and with budget
    /// forcing the stream is suspended right there.
    pub(super) fn check_budget(&mut self) {
        let (Some(max), false) = (self.max_reasoning_tokens, self.budget_hit) else {
            return;
        };
        let Some(c) = self.choices.get(&0) else {
            return;
        };
        if c.parser.in_reasoning() && c.reasoning_chunks > max {
            self.budget_hit = true;
            self.alerts.push(Alert::BudgetExceeded);
            self.suspended = self.force_answer;
        }
    }

    /// Budget and periodic checks after new text; a warning chunk goes to `out`.
    pub(super) fn check_progress(&mut self, out: &mut Vec<u8>) {
        self.check_budget();
        self.checkpoints(out);
        let every = self.analysis.every_steps;
        let Some(c) = self.choices.get_mut(&0) else {
            return;
        };
        if !c.parser.in_reasoning() {
            return;
        }
        if every == 0 || c.steps.steps() < c.next_check {
            return;
        }
        let steps = c.steps.steps();
        c.next_check = (steps / every + 1) * every;
        let v = &self.analysis.verify;
        let looping = v.checks.contains(&Check::Loop)
            && verify::repeated_ngram_ratio(&c.reasoning_text, v.loop_ngram) > v.loop_max_ratio;
        if !looping || self.periodic_failed.contains(&Check::Loop) {
            return;
        }
        self.periodic_failed.push(Check::Loop);
        if self.analysis.periodic_abort {
            self.alerts.push(Alert::Abort(Check::Loop));
        } else {
            self.alerts.push(Alert::Warned(Check::Loop));
            let mut chunk = self.template.clone();
            chunk.insert("choices".into(), Value::Array(Vec::new()));
            chunk.insert(
                "reasoning_warning".into(),
                serde_json::json!({"check": "loop", "step": steps}),
            );
            Event {
                data: Some(serde_json::to_string(&chunk).unwrap_or_default()),
                ..Event::default()
            }
            .write(out);
        }
    }

    /// The complete reasoning and answer of a one-choice response (`None` with several choices
    /// or when the text outgrew what is kept for analysis).
    pub fn full_text(&self) -> Option<(String, String)> {
        if self.choices.len() != 1 {
            return None;
        }
        let c = self.choices.values().next()?;
        let whole = c.reasoning_text.chars().count() == c.reasoning_chars
            && c.answer_text.chars().count() == c.content_chars;
        whole.then(|| (c.reasoning_text.clone(), c.answer_text.clone()))
    }

    /// The `model` the upstream's stream chunks carried.
    pub fn response_model(&self) -> Option<String> {
        self.template
            .get("model")
            .and_then(|m| m.as_str())
            .map(str::to_owned)
    }

    /// `reasoning_checkpoint` chunks streamed so far.
    pub fn checkpoints_sent(&self) -> u32 {
        match self.checkpoint_every {
            0 => 0,
            every => (self.next_checkpoint / every).saturating_sub(1),
        }
    }

    /// The answer has begun (for time to first answer token).
    pub fn answer_started(&self) -> bool {
        self.choices.values().any(|c| c.content_chars > 0)
    }

    /// Tokens, steps, corrections and verification of the response so far (complete once the
    /// upstream body has ended).
    pub fn report(&self) -> Report {
        let stream = self.is_stream();
        let first = self.choices.values().next();
        let (completion, given_reasoning) = match self.usage {
            Some((c, r)) => (Some(c), r),
            None => (None, None),
        };
        let counted = completion.is_none();
        let completion = completion.unwrap_or_else(|| {
            self.choices
                .values()
                .map(|c| {
                    if stream {
                        c.reasoning_chunks + c.content_chunks
                    } else {
                        // About four characters per token when nobody counted.
                        ((c.reasoning_chars + c.content_chars) as u64).div_ceil(4)
                    }
                })
                .sum()
        });
        let reasoning_tokens = given_reasoning
            .unwrap_or_else(|| self.estimate_reasoning_tokens(completion, stream))
            .min(completion);
        let (reasoning, answer) = first.map_or(("", ""), |c| {
            (c.reasoning_text.as_str(), c.answer_text.as_str())
        });
        let unterminated = self.stats().unterminated;
        let finish_reason = first.and_then(|c| c.finish_reason.clone());
        let mut verifications = verify::verify(
            &self.analysis.verify,
            &verify::Subject {
                reasoning,
                answer,
                unterminated,
                response_format: self.response_format.as_ref(),
                complete: finish_reason.as_deref() == Some("stop"),
            },
        );
        // Checks that failed mid-stream stay failed (and are counted once).
        for (check, passed) in &mut verifications {
            if self.periodic_failed.contains(check) {
                *passed = false;
            }
        }
        Report {
            reasoning_tokens,
            answer_tokens: completion - reasoning_tokens,
            tokens_counted: counted,
            reasoning_chars: self.choices.values().map(|c| c.reasoning_chars).sum(),
            steps: first.map_or(0, |c| c.steps.clone().finish()),
            corrections: count_corrections(reasoning, &self.analysis.correction_markers),
            unterminated,
            finish_reason,
            verifications,
            prompt_tokens: self.prompt_tokens,
        }
    }

    pub(super) fn estimate_reasoning_tokens(&self, completion: u64, stream: bool) -> u64 {
        let (r_chars, c_chars, chunks) = self.choices.values().fold((0, 0, 0), |acc, c| {
            (
                acc.0 + c.reasoning_chars,
                acc.1 + c.content_chars,
                acc.2 + c.reasoning_chunks,
            )
        });
        if stream && chunks > 0 {
            chunks.min(completion)
        } else if r_chars + c_chars > 0 {
            // Share of completion tokens by share of characters.
            ((completion as f64) * (r_chars as f64) / ((r_chars + c_chars) as f64)).round() as u64
        } else {
            0
        }
    }

    pub(super) fn stats_value(&self) -> Value {
        self.report().to_json()
    }

    /// Totals so far.
    /// Emits a checkpoint for every multiple of `checkpoint_every` steps completed so far. A step
    /// is complete once the next one has begun, or once the reasoning has ended.
    fn checkpoints(&mut self, out: &mut Vec<u8>) {
        if self.checkpoint_every == 0 || !self.is_stream() {
            return;
        }
        let Some(c) = self.choices.get(&0) else {
            return;
        };
        let counted = c.steps.steps();
        let completed = if c.parser.in_reasoning() {
            counted.saturating_sub(1)
        } else {
            counted
        };
        while completed >= self.next_checkpoint && self.next_checkpoint > 0 {
            let k = self.next_checkpoint as usize;
            let text = &c.reasoning_text;
            let start = c
                .step_starts
                .get(k - 1)
                .copied()
                .unwrap_or(0)
                .min(text.len());
            let end = c
                .step_starts
                .get(k)
                .copied()
                .unwrap_or(text.len())
                .clamp(start, text.len());
            let mut checkpoint = serde_json::json!({
                "step": k,
                "reasoning_chars": c.reasoning_chars,
            });
            // `output_field: none`: the step's text is reasoning, which clients must not see.
            if self.field != OutputField::None {
                checkpoint["summary"] =
                    Value::from(summarise(text.get(start..end).unwrap_or_default()));
            }
            let mut chunk = self.template.clone();
            chunk.insert("choices".into(), Value::Array(Vec::new()));
            chunk.insert("reasoning_checkpoint".into(), checkpoint);
            Event {
                data: Some(serde_json::to_string(&chunk).unwrap_or_default()),
                ..Event::default()
            }
            .write(out);
            self.next_checkpoint += self.checkpoint_every;
        }
    }

    pub fn stats(&self) -> Stats {
        let mut s = Stats::default();
        for c in self.choices.values() {
            s.reasoning_chars += c.reasoning_chars;
            s.content_chars += c.content_chars;
            s.unterminated |= c.parser.in_reasoning() && c.parser.saw_reasoning();
        }
        s
    }

    /// Fills `completion_tokens_details.reasoning_tokens` when the upstream left it out.
    pub(super) fn fill_usage(&mut self, usage: &mut Value, stream: bool) {
        let Some(u) = usage.as_object_mut() else {
            return;
        };
        self.prompt_tokens = u.get("prompt_tokens").and_then(Value::as_u64);
        let mut completion = u
            .get("completion_tokens")
            .and_then(Value::as_u64)
            .unwrap_or(0);
        if let Some(carried) = self.carried {
            // One usage for the whole answer: the parts cut short were generated too, and the
            // continuation's prompt holds them (counted once, as completion). Reasoning tokens
            // are the gateway's count across the parts.
            completion += carried;
            let prompt = self.prompt_tokens.map(|p| p.saturating_sub(carried));
            self.prompt_tokens = prompt;
            u.insert("completion_tokens".into(), Value::from(completion));
            if let Some(p) = prompt {
                u.insert("prompt_tokens".into(), Value::from(p));
                u.insert("total_tokens".into(), Value::from(p + completion));
            }
        }
        let details = u
            .entry("completion_tokens_details")
            .or_insert_with(|| Value::Object(Map::new()));
        if details.is_null() {
            *details = Value::Object(Map::new());
        }
        let Some(d) = details.as_object_mut() else {
            return;
        };
        let given = d
            .get("reasoning_tokens")
            .and_then(Value::as_u64)
            .filter(|_| self.carried.is_none());
        self.usage = Some((completion, given));
        if given.is_none() {
            let estimate = self.estimate_reasoning_tokens(completion, stream);
            d.insert("reasoning_tokens".into(), Value::from(estimate));
        }
    }
}

/// Longest checkpoint summary, in characters.
const SUMMARY_CHARS: usize = 240;

/// A step's text, whitespace collapsed, cut at [`SUMMARY_CHARS`] with an ellipsis.
fn summarise(step: &str) -> String {
    let collapsed = step.split_whitespace().collect::<Vec<_>>().join(" ");
    if collapsed.chars().count() <= SUMMARY_CHARS {
        return collapsed;
    }
    let mut s: String = collapsed.chars().take(SUMMARY_CHARS - 1).collect();
    s.push('…');
    s
}
