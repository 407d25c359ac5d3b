//! The think/answer state machine: content deltas in, reasoning and answer deltas out.
//!
//! Pure: no I/O, no clocks. Any chunking of the same text gives the same joined output.
//!
//! Grammar (documented in docs/behaviour.md, "Reasoning split"):
//! - `<think>` opens reasoning only as the first non-whitespace text of the output (whitespace
//!   before it is dropped). Output that starts with anything else is an answer, and tags in it
//!   are literal text: content already sent cannot be taken back, and models that do not reason
//!   are never mangled.
//! - With `start_in_reasoning` the output starts inside reasoning (the template opened `<think>`).
//! - `</think>` closes reasoning; whitespace right after it is trimmed from the answer.
//! - A `<think>` inside reasoning, or a `</think>` in the answer, is literal text.
//! - Output that ends inside reasoning is all reasoning and is flagged unterminated.

const OPEN: &str = "<think>";
const CLOSE: &str = "</think>";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Nothing but whitespace seen yet; `<think>` may still open reasoning.
    Start,
    /// Inside reasoning, looking for `</think>`.
    Reasoning,
    /// In the answer; `trim` while whitespace right after `</think>` is being dropped.
    Answer { trim: bool },
    /// Tags are never looked for (parser `none`).
    Plain,
}

/// Text split out of one or more content deltas.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Split {
    /// Reasoning text.
    pub reasoning: String,
    /// Answer text.
    pub content: String,
}

impl Split {
    /// Neither reasoning nor content.
    pub fn is_empty(&self) -> bool {
        self.reasoning.is_empty() && self.content.is_empty()
    }
}

/// The streaming think/answer parser.
#[derive(Debug, Clone)]
pub struct ThinkParser {
    state: State,
    /// Held-back text that may still become a tag (whitespace + a tag prefix in `Start`,
    /// a `</think>` prefix in `Reasoning`).
    pending: String,
    saw_reasoning: bool,
    closed: bool,
}

impl ThinkParser {
    /// A parser that looks for tags; `start_in_reasoning` when the template opened `<think>`.
    pub fn new(start_in_reasoning: bool) -> Self {
        let state = if start_in_reasoning {
            State::Reasoning
        } else {
            State::Start
        };
        ThinkParser {
            state,
            pending: String::new(),
            saw_reasoning: start_in_reasoning,
            closed: false,
        }
    }

    /// A parser that never looks for tags: everything is answer.
    pub fn plain() -> Self {
        ThinkParser {
            state: State::Plain,
            pending: String::new(),
            saw_reasoning: false,
            closed: false,
        }
    }

    /// Feeds one content delta; appends what can be decided to `out`.
    pub fn feed(&mut self, text: &str, out: &mut Split) {
        if self.pending.is_empty() {
            self.run(text, out);
        } else {
            let mut joined = std::mem::take(&mut self.pending);
            joined.push_str(text);
            self.run(&joined, out);
        }
    }

    /// Ends the output: held-back text is released as what it was.
    pub fn finish(&mut self, out: &mut Split) {
        let pending = std::mem::take(&mut self.pending);
        match self.state {
            State::Reasoning => out.reasoning.push_str(&pending),
            State::Start => out.content.push_str(&pending),
            State::Answer { .. } | State::Plain => out.content.push_str(&pending),
        }
    }

    /// The output opened reasoning (by tag or template).
    pub fn saw_reasoning(&self) -> bool {
        self.saw_reasoning
    }

    /// Reasoning was opened and has not been closed.
    pub fn in_reasoning(&self) -> bool {
        self.state == State::Reasoning
    }

    /// `</think>` was seen.
    pub fn closed(&self) -> bool {
        self.closed
    }

    fn run(&mut self, mut text: &str, out: &mut Split) {
        while !text.is_empty() {
            match self.state {
                State::Plain => {
                    out.content.push_str(text);
                    return;
                }
                State::Answer { trim } => {
                    if trim {
                        let rest = text.trim_start();
                        if rest.is_empty() {
                            return;
                        }
                        self.state = State::Answer { trim: false };
                        text = rest;
                    }
                    out.content.push_str(text);
                    return;
                }
                State::Start => {
                    let body = text.trim_start();
                    if let Some(rest) = body.strip_prefix(OPEN) {
                        self.state = State::Reasoning;
                        self.saw_reasoning = true;
                        text = rest;
                    } else if OPEN.starts_with(body) {
                        // Whitespace and maybe the start of `<think>`: wait for more.
                        self.pending.push_str(text);
                        return;
                    } else {
                        self.state = State::Answer { trim: false };
                    }
                }
                State::Reasoning => match find_tag(text, CLOSE) {
                    Some(i) => {
                        out.reasoning.push_str(&text[..i]);
                        self.state = State::Answer { trim: true };
                        self.closed = true;
                        text = &text[i + CLOSE.len()..];
                    }
                    None => {
                        let keep = partial_suffix(text, CLOSE);
                        out.reasoning.push_str(&text[..text.len() - keep]);
                        self.pending.push_str(&text[text.len() - keep..]);
                        return;
                    }
                },
            }
        }
    }
}

/// First occurrence of `tag` (which starts with `<`): memchr to each `<`, then compare.
/// Much cheaper than a substring searcher for the short deltas streamed one by one.
fn find_tag(text: &str, tag: &str) -> Option<usize> {
    let bytes = text.as_bytes();
    memchr::memchr_iter(b'<', bytes).find(|&i| bytes[i..].starts_with(tag.as_bytes()))
}

/// Length of the longest suffix of `text` that is a proper prefix of `tag`.
fn partial_suffix(text: &str, tag: &str) -> usize {
    let start = text.len().saturating_sub(tag.len() - 1);
    // Tags are ASCII and start with '<', so a match starts at a char boundary.
    let bytes = text.as_bytes();
    (start..text.len())
        .find(|&i| bytes[i] == b'<' && tag.as_bytes().starts_with(&bytes[i..]))
        .map_or(0, |i| text.len() - i)
}

#[cfg(test)]
mod parity;
#[cfg(test)]
mod tests;
