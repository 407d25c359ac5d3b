//! Reasoning steps. A step starts at the first non-empty line of the reasoning, at the first
//! non-empty line after a blank line (a new paragraph), and at every line that opens a numbered
//! item or a "Step N" heading (`1.`, `2)`, `Step 3:`, `**Step 4**`), even inside a paragraph.

/// Counts the steps in a reasoning text.
pub fn count_steps(reasoning: &str) -> u32 {
    let mut c = StepCounter::default();
    c.feed(reasoning);
    c.finish()
}

/// The same count over streamed deltas: each line is judged once, when it ends.
#[derive(Debug, Clone)]
pub struct StepCounter {
    steps: u32,
    after_blank: bool,
    line: String,
}

impl Default for StepCounter {
    fn default() -> Self {
        StepCounter {
            steps: 0,
            after_blank: true,
            line: String::new(),
        }
    }
}

/// Only the start of a line decides whether it opens a step.
const LINE_PREFIX: usize = 32;

impl StepCounter {
    /// Feeds reasoning text.
    pub fn feed(&mut self, mut text: &str) {
        while let Some(i) = text.find('\n') {
            self.push(&text[..i]);
            self.end_line();
            text = &text[i + 1..];
        }
        self.push(text);
    }

    /// Steps so far, counting a line still in progress.
    pub fn steps(&self) -> u32 {
        self.steps + u32::from(self.opens(&self.line))
    }

    /// Final count.
    pub fn finish(&mut self) -> u32 {
        self.end_line();
        self.steps
    }

    fn push(&mut self, part: &str) {
        if self.line.len() < LINE_PREFIX {
            self.line.push_str(part);
        }
    }

    fn opens(&self, line: &str) -> bool {
        let t = line.trim();
        !t.is_empty() && (self.after_blank || opens_item(t))
    }

    fn end_line(&mut self) {
        let line = std::mem::take(&mut self.line);
        if line.trim().is_empty() {
            self.after_blank = true;
        } else {
            self.steps += u32::from(self.opens(&line));
            self.after_blank = false;
        }
    }
}

fn opens_item(line: &str) -> bool {
    let t = line.trim_start_matches(['*', '#', '-', ' ', '_']);
    let digits = t.bytes().take_while(u8::is_ascii_digit).count();
    if digits > 0 && digits <= 3 && matches!(t.as_bytes().get(digits), Some(b'.' | b')')) {
        return true;
    }
    let lower = t.get(..5).map(str::to_ascii_lowercase);
    lower.as_deref() == Some("step ") && t[5..].starts_with(|c: char| c.is_ascii_digit())
}

#[cfg(test)]
mod tests {
    use super::{count_steps, StepCounter};

    #[test]
    fn streamed_counts_match_whole_counts_at_every_split() {
        let text = "Plan:\n1. add\n\n2) carry\nStep 3: check\n\n\n**Step 4** done\nend";
        let whole = count_steps(text);
        assert_eq!(whole, 5);
        for cut in 0..=text.len() {
            let mut c = StepCounter::default();
            c.feed(&text[..cut]);
            assert!(c.steps() <= whole);
            c.feed(&text[cut..]);
            assert_eq!(c.finish(), whole, "cut {cut}");
        }
    }

    #[test]
    fn paragraphs_and_numbered_lines_are_steps() {
        assert_eq!(count_steps(""), 0);
        assert_eq!(count_steps("one paragraph\nstill the same one"), 1);
        assert_eq!(count_steps("first\n\nsecond\n\n\nthird"), 3);
        assert_eq!(
            count_steps("Plan:\n1. add\n2) carry\nStep 3: check\n**Step 4** done"),
            5
        );
        assert_eq!(
            count_steps("The year 2024. was odd"),
            1,
            "a number mid-line is not an item"
        );
        assert_eq!(count_steps("Steps are many\nstepping on"), 1);
    }
}
