//! OpenAI `stop` semantics over streamed text: output ends right before the first stop
//! sequence, which is never sent. mistral.rs stops generating on a stop sequence but has already
//! streamed it (and sometimes a little more), so the relay filters its deltas through this.

/// Streaming stop-sequence cutter.
#[derive(Debug, Clone, Default)]
pub struct StopMatcher {
    stops: Vec<String>,
    held: String,
    stopped: bool,
}

impl StopMatcher {
    /// A matcher for these sequences (none: everything passes).
    pub fn new(stops: Vec<String>) -> Self {
        StopMatcher {
            stops: stops.into_iter().filter(|s| !s.is_empty()).collect(),
            held: String::new(),
            stopped: false,
        }
    }

    /// Whether a stop sequence was seen.
    pub fn stopped(&self) -> bool {
        self.stopped
    }

    /// Feeds a delta; returns the text that may be sent now.
    pub fn feed(&mut self, delta: &str) -> String {
        if self.stopped {
            return String::new();
        }
        if self.stops.is_empty() {
            return delta.to_string();
        }
        self.held.push_str(delta);
        let first = self
            .stops
            .iter()
            .filter_map(|s| self.held.find(s.as_str()))
            .min();
        if let Some(i) = first {
            self.stopped = true;
            let out = self.held[..i].to_string();
            self.held.clear();
            return out;
        }
        // Keep the longest tail that could still grow into a stop sequence.
        let keep = self
            .stops
            .iter()
            .map(|s| longest_prefix_suffix(&self.held, s))
            .max()
            .unwrap_or(0);
        let cut = self.held.len() - keep;
        let out = self.held[..cut].to_string();
        self.held.drain(..cut);
        out
    }

    /// End of output: held text is released (it never became a stop sequence).
    pub fn finish(&mut self) -> String {
        if self.stopped {
            return String::new();
        }
        std::mem::take(&mut self.held)
    }
}

/// Length of the longest suffix of `text` that is a proper prefix of `stop`, at a char boundary.
fn longest_prefix_suffix(text: &str, stop: &str) -> usize {
    let max = stop.len().saturating_sub(1).min(text.len());
    (1..=max)
        .rev()
        .find(|&n| {
            text.is_char_boundary(text.len() - n) && stop.starts_with(&text[text.len() - n..])
        })
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(stops: &[&str], pieces: &[&str]) -> (String, bool) {
        let mut m = StopMatcher::new(stops.iter().map(|s| s.to_string()).collect());
        let mut out: String = pieces.iter().map(|p| m.feed(p)).collect();
        out.push_str(&m.finish());
        (out, m.stopped())
    }

    #[test]
    fn output_ends_before_the_first_stop_sequence_for_any_chunking() {
        let text = "1, 2, 3, 4, 5, 6, 7";
        for cut in 0..=text.len() {
            let (a, b) = text.split_at(cut);
            assert_eq!(
                run(&[" 5", "7"], &[a, b]),
                ("1, 2, 3, 4,".to_string(), true),
                "cut {cut}"
            );
        }
    }

    #[test]
    fn text_without_stop_sequences_passes_whole() {
        assert_eq!(
            run(&["END"], &["the E", "N", "d"]),
            ("the ENd".to_string(), false)
        );
        assert_eq!(run(&[], &["a", "b"]), ("ab".to_string(), false));
        assert_eq!(
            run(&["é!"], &["caf", "é", "é"]),
            ("caféé".to_string(), false)
        );
    }
}
