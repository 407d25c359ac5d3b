//! The think/answer state machine: content deltas in, reasoning and answer deltas out.
//!
//! Pure: no I/O, no clocks. Any chunking of the same text gives the same joined output.
//!
//! Grammar (documented in docs/behaviour.md, "Reasoning split"; `<think>`/`</think>` stand for
//! the route's tags):
//! - Whitespace before the first `<think>` at the start of the output is dropped.
//! - With `open_tag: anywhere` (the default, as vLLM and SGLang) answer text may come before
//!   `<think>`: it stays answer, and the first `<think>` opens reasoning. With `open_tag: leading`
//!   `<think>` opens reasoning only as the first non-whitespace text; in output that starts with
//!   anything else tags are literal, so models that do not reason are never mangled.
//! - With `start_in_reasoning` the output starts inside reasoning (the template opened `<think>`);
//!   a `<think>` the model emits again as its first non-whitespace text is dropped.
//! - `</think>` closes reasoning; whitespace right after it is trimmed from the answer. Reasoning
//!   opens once: after `</think>` tags are literal answer text.
//! - A `<think>` inside reasoning, or a `</think>` in the answer, is literal text.
//! - Output that ends inside reasoning is all reasoning and is flagged unterminated.

use std::borrow::Cow;

const THINK_OPEN: &str = "<think>";
const THINK_CLOSE: &str = "</think>";

/// The tags around reasoning.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tags {
    open: Cow<'static, str>,
    close: Cow<'static, str>,
}

impl Tags {
    /// `<think>` / `</think>`.
    pub const THINK: Tags = Tags {
        open: Cow::Borrowed(THINK_OPEN),
        close: Cow::Borrowed(THINK_CLOSE),
    };

    /// Other tags; the config layer has checked them (non-empty, distinct, neither inside the
    /// other, no surrounding whitespace).
    pub fn new(open: impl Into<String>, close: impl Into<String>) -> Self {
        Tags {
            open: Cow::Owned(open.into()),
            close: Cow::Owned(close.into()),
        }
    }

    /// The opening tag.
    pub fn open(&self) -> &str {
        &self.open
    }

    /// The closing tag.
    pub fn close(&self) -> &str {
        &self.close
    }
}

impl Default for Tags {
    fn default() -> Self {
        Tags::THINK
    }
}

/// Where an opening tag starts reasoning.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum OpenTag {
    /// Anywhere before reasoning was opened; answer text before it stays answer (vLLM, SGLang).
    #[default]
    Anywhere,
    /// Only as the first non-whitespace text; otherwise tags are literal answer text.
    Leading,
}

/// How a parser reads the output.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ParserOptions {
    /// The template opened reasoning: output starts inside it.
    pub start_in_reasoning: bool,
    /// Where an opening tag starts reasoning.
    pub open_tag: OpenTag,
    /// The tags.
    pub tags: Tags,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Nothing but whitespace seen yet; the opening tag may still open reasoning.
    Start,
    /// Inside reasoning the template opened, nothing but whitespace seen yet: an opening tag
    /// here is the model repeating it, and is dropped.
    Lead,
    /// Inside reasoning, looking for the closing tag.
    Reasoning,
    /// In the answer; `trim` while whitespace right after the closing tag is being dropped;
    /// `open` while the opening tag still starts reasoning.
    Answer { trim: bool, open: bool },
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
    /// Held-back text that may still become a tag (whitespace + an opening-tag prefix in
    /// `Start`/`Lead`, an opening-tag prefix in `Answer`, a closing-tag prefix in `Reasoning`).
    pending: String,
    saw_reasoning: bool,
    closed: bool,
    anywhere: bool,
    /// The tags are `<think>`/`</think>` (the fast path).
    think: bool,
    tags: Tags,
}

impl ThinkParser {
    /// A `<think>` parser with default options; `start_in_reasoning` when the template opened
    /// `<think>`.
    pub fn new(start_in_reasoning: bool) -> Self {
        Self::with(ParserOptions {
            start_in_reasoning,
            ..ParserOptions::default()
        })
    }

    /// A parser with the given options.
    pub fn with(options: ParserOptions) -> Self {
        let state = if options.start_in_reasoning {
            State::Lead
        } else {
            State::Start
        };
        ThinkParser {
            state,
            pending: String::new(),
            saw_reasoning: options.start_in_reasoning,
            closed: false,
            anywhere: options.open_tag == OpenTag::Anywhere,
            think: options.tags == Tags::THINK,
            tags: options.tags,
        }
    }

    /// A parser that never looks for tags: everything is answer.
    pub fn plain() -> Self {
        ThinkParser {
            state: State::Plain,
            pending: String::new(),
            saw_reasoning: false,
            closed: false,
            anywhere: false,
            think: true,
            tags: Tags::THINK,
        }
    }

    /// Feeds one content delta; appends what can be decided to `out`.
    pub fn feed(&mut self, text: &str, out: &mut Split) {
        if self.think {
            // Constant tags: the compiler specialises the search for the common case.
            self.feed_with(THINK_OPEN, THINK_CLOSE, text, out);
        } else {
            // Moved out and back (the placeholder is the borrowed `<think>` pair): no allocation.
            let tags = std::mem::take(&mut self.tags);
            self.feed_with(tags.open(), tags.close(), text, out);
            self.tags = tags;
        }
    }

    #[inline(always)]
    fn feed_with(&mut self, open: &str, close: &str, text: &str, out: &mut Split) {
        if self.pending.is_empty() {
            self.run(open, close, text, out);
        } else {
            let mut joined = std::mem::take(&mut self.pending);
            joined.push_str(text);
            self.run(open, close, &joined, out);
        }
    }

    /// Ends the output: held-back text is released as what it was.
    pub fn finish(&mut self, out: &mut Split) {
        let pending = std::mem::take(&mut self.pending);
        match self.state {
            State::Reasoning | State::Lead => out.reasoning.push_str(&pending),
            State::Start | State::Answer { .. } | State::Plain => out.content.push_str(&pending),
        }
    }

    /// The output opened reasoning (by tag or template).
    pub fn saw_reasoning(&self) -> bool {
        self.saw_reasoning
    }

    /// Reasoning was opened and has not been closed.
    pub fn in_reasoning(&self) -> bool {
        matches!(self.state, State::Reasoning | State::Lead)
    }

    /// The closing tag was seen.
    pub fn closed(&self) -> bool {
        self.closed
    }

    /// Budget forcing: the output goes on after a prefix the gateway closed itself, so what
    /// follows is answer (`trim`: whitespace at its start is dropped). Held-back text is dropped.
    pub fn resume_answer(&mut self, trim: bool) {
        self.pending.clear();
        self.closed = true;
        self.saw_reasoning = true;
        self.state = State::Answer { trim, open: false };
    }

    /// Budget forcing: the output goes on inside reasoning the gateway kept open. Held-back
    /// text is dropped.
    pub fn resume_reasoning(&mut self) {
        self.pending.clear();
        self.closed = false;
        self.saw_reasoning = true;
        self.state = State::Reasoning;
    }

    #[inline(always)]
    fn run(&mut self, open: &str, close: &str, mut text: &str, out: &mut Split) {
        while !text.is_empty() {
            match self.state {
                State::Plain => {
                    out.content.push_str(text);
                    return;
                }
                State::Answer {
                    trim,
                    open: may_open,
                } => {
                    if trim {
                        let rest = text.trim_start();
                        if rest.is_empty() {
                            return;
                        }
                        self.state = State::Answer {
                            trim: false,
                            open: may_open,
                        };
                        text = rest;
                    }
                    if !may_open {
                        out.content.push_str(text);
                        return;
                    }
                    match find_tag(text, open) {
                        Some(i) => {
                            out.content.push_str(&text[..i]);
                            self.state = State::Reasoning;
                            self.saw_reasoning = true;
                            text = &text[i + open.len()..];
                        }
                        None => {
                            let keep = partial_suffix(text, open);
                            out.content.push_str(&text[..text.len() - keep]);
                            self.pending.push_str(&text[text.len() - keep..]);
                            return;
                        }
                    }
                }
                State::Start | State::Lead => {
                    let body = text.trim_start();
                    if let Some(rest) = body.strip_prefix(open) {
                        self.state = State::Reasoning;
                        self.saw_reasoning = true;
                        text = rest;
                    } else if open.starts_with(body) {
                        // Whitespace and maybe the start of the opening tag: wait for more.
                        self.pending.push_str(text);
                        return;
                    } else if self.state == State::Lead {
                        self.state = State::Reasoning;
                    } else {
                        self.state = State::Answer {
                            trim: false,
                            open: self.anywhere,
                        };
                    }
                }
                State::Reasoning => match find_tag(text, close) {
                    Some(i) => {
                        out.reasoning.push_str(&text[..i]);
                        self.state = State::Answer {
                            trim: true,
                            open: false,
                        };
                        self.closed = true;
                        text = &text[i + close.len()..];
                    }
                    None => {
                        let keep = partial_suffix(text, close);
                        out.reasoning.push_str(&text[..text.len() - keep]);
                        self.pending.push_str(&text[text.len() - keep..]);
                        return;
                    }
                },
            }
        }
    }
}

/// First occurrence of `tag`: memchr to each occurrence of its first byte, then compare.
/// Much cheaper than a substring searcher for the short deltas streamed one by one.
#[inline(always)]
fn find_tag(text: &str, tag: &str) -> Option<usize> {
    let bytes = text.as_bytes();
    let first = *tag.as_bytes().first()?;
    memchr::memchr_iter(first, bytes).find(|&i| bytes[i..].starts_with(tag.as_bytes()))
}

/// Length of the longest suffix of `text` that is a proper prefix of `tag`.
#[inline(always)]
fn partial_suffix(text: &str, tag: &str) -> usize {
    let Some(&first) = tag.as_bytes().first() else {
        return 0;
    };
    let start = text.len().saturating_sub(tag.len() - 1);
    // A tag's first byte starts a UTF-8 char, so a match starts at a char boundary.
    let bytes = text.as_bytes();
    (start..text.len())
        .find(|&i| bytes[i] == first && tag.as_bytes().starts_with(&bytes[i..]))
        .map_or(0, |i| text.len() - i)
}

#[cfg(test)]
mod parity;
#[cfg(test)]
mod tests;
