//! Reasoning steps. A step starts at the first non-empty line of the reasoning, at the first
//! non-empty line after a blank line (a new paragraph), and at every line that opens a numbered
//! item or a "Step N" heading (`1.`, `2)`, `Step 3:`, `**Step 4**`), even inside a paragraph.

/// Counts the steps in a reasoning text.
pub fn count_steps(reasoning: &str) -> u32 {
    let mut steps = 0;
    let mut after_blank = true;
    for line in reasoning.lines() {
        let t = line.trim();
        if t.is_empty() {
            after_blank = true;
            continue;
        }
        if after_blank || opens_item(t) {
            steps += 1;
        }
        after_blank = false;
    }
    steps
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
    use super::count_steps;

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
