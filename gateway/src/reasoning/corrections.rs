//! Self-corrections: configured markers ("wait", "actually,", …) at the start of a sentence in the
//! reasoning. A sentence starts at the beginning of the text, after a line break, or after `.`, `!`
//! or `?` followed by whitespace; leading quotes, asterisks and spaces are skipped. Matching is
//! case-insensitive; a marker ending in a letter must be followed by a non-letter ("Wait," counts,
//! "Waiting" does not).

/// Markers used when a route configures none.
pub const DEFAULT_MARKERS: &[&str] = &[
    "wait",
    "let me reconsider",
    "actually,",
    "on second thought",
    "i made a mistake",
    "let me re-check",
    "let me recheck",
    "let me double-check",
    "hold on",
    "that's not right",
    "no, that's wrong",
];

/// Counts sentence-initial markers. `markers` must be lowercase.
pub fn count_corrections(reasoning: &str, markers: &[String]) -> u32 {
    if markers.is_empty() {
        return 0;
    }
    let lower = reasoning.to_lowercase();
    let bytes = lower.as_bytes();
    let mut count = 0;
    let mut at_start = true;
    let mut i = 0;
    while i < bytes.len() {
        if at_start {
            let rest = lower[i..].trim_start_matches(|c: char| {
                c.is_whitespace() || matches!(c, '*' | '"' | '\'' | '_' | '(' | '-')
            });
            let skipped = lower.len() - i - rest.len();
            if markers.iter().any(|m| starts_with_word(rest, m)) {
                count += 1;
            }
            at_start = false;
            i += skipped.max(1);
            continue;
        }
        let b = bytes[i];
        let ends_sentence = matches!(b, b'.' | b'!' | b'?')
            && bytes.get(i + 1).is_some_and(u8::is_ascii_whitespace);
        if b == b'\n' || ends_sentence {
            at_start = true;
        }
        i += 1;
    }
    count
}

fn starts_with_word(text: &str, marker: &str) -> bool {
    if !text.starts_with(marker) {
        return false;
    }
    let ends_in_letter = marker.chars().last().is_some_and(char::is_alphabetic);
    !ends_in_letter || !text[marker.len()..].starts_with(char::is_alphabetic)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn markers() -> Vec<String> {
        DEFAULT_MARKERS
            .iter()
            .map(std::string::ToString::to_string)
            .collect()
    }

    #[test]
    fn markers_count_only_at_sentence_starts() {
        let text = "So 2+2=5. Wait, that is wrong. Actually, it is 4.\n**Hold on** let me check.\nI will wait here. Waiting is fine. \"Let me recheck\" once more! ON SECOND THOUGHT, fine.";
        assert_eq!(count_corrections(text, &markers()), 5);
        assert_eq!(
            count_corrections("Actually the answer", &markers()),
            0,
            "`actually,` needs its comma"
        );
        assert_eq!(count_corrections("wait", &markers()), 1);
        assert_eq!(count_corrections("Wait, x", &[]), 0);
        assert_eq!(
            count_corrections("Hmm, no. Hmm again", &["hmm".to_string()]),
            2
        );
    }
}
