//! Server-sent events framing: bytes in (split anywhere), whole events out.
//!
//! Pure and bounded: an event larger than the limit is an error, never unbounded buffering.
//! Lines end in `\n`, `\r\n` or `\r`; a blank line ends an event; `:` lines are comments.

/// One complete event.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Event {
    /// `data:` lines joined with `\n` (`None` when the event had no data line).
    pub data: Option<String>,
    /// `event:` field.
    pub event: Option<String>,
    /// Comment lines (without the leading `:`), kept so keep-alives can be forwarded.
    pub comments: Vec<String>,
    /// Other field lines (`id:`, `retry:`, unknown), verbatim.
    pub other: Vec<String>,
}

impl Event {
    /// Serialises the event back to SSE text (LF line endings).
    pub fn write(&self, out: &mut Vec<u8>) {
        for c in &self.comments {
            out.push(b':');
            out.extend_from_slice(c.as_bytes());
            out.push(b'\n');
        }
        for o in &self.other {
            out.extend_from_slice(o.as_bytes());
            out.push(b'\n');
        }
        if let Some(e) = &self.event {
            out.extend_from_slice(b"event: ");
            out.extend_from_slice(e.as_bytes());
            out.push(b'\n');
        }
        if let Some(d) = &self.data {
            for line in d.split('\n') {
                out.extend_from_slice(b"data: ");
                out.extend_from_slice(line.as_bytes());
                out.push(b'\n');
            }
        }
        out.push(b'\n');
    }
}

/// Framing failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SseError {
    /// One event grew past the limit.
    #[error("an SSE event exceeded {0} bytes")]
    TooLarge(usize),
    /// A line was not UTF-8.
    #[error("an SSE line was not valid UTF-8")]
    NotUtf8,
}

/// Incremental SSE decoder.
#[derive(Debug)]
pub struct SseDecoder {
    line: Vec<u8>,
    event: Event,
    has_fields: bool,
    event_bytes: usize,
    limit: usize,
    /// The previous byte was `\r`: a following `\n` belongs to the same line ending.
    after_cr: bool,
}

impl SseDecoder {
    /// A decoder refusing events over `limit` bytes.
    pub fn new(limit: usize) -> Self {
        SseDecoder {
            line: Vec::new(),
            event: Event::default(),
            has_fields: false,
            event_bytes: 0,
            limit,
            after_cr: false,
        }
    }

    /// Feeds bytes; every completed event is passed to `on_event`.
    pub fn feed(
        &mut self,
        mut input: &[u8],
        on_event: &mut impl FnMut(Event),
    ) -> Result<(), SseError> {
        while !input.is_empty() {
            if self.after_cr {
                self.after_cr = false;
                if input[0] == b'\n' {
                    input = &input[1..];
                    continue;
                }
            }
            match memchr::memchr2(b'\n', b'\r', input) {
                Some(i) => {
                    self.push_line_bytes(&input[..i])?;
                    self.after_cr = input[i] == b'\r';
                    input = &input[i + 1..];
                    self.end_line(on_event)?;
                }
                None => {
                    self.push_line_bytes(input)?;
                    return Ok(());
                }
            }
        }
        Ok(())
    }

    /// End of input: a final event without its blank line is still delivered.
    pub fn finish(&mut self, on_event: &mut impl FnMut(Event)) -> Result<(), SseError> {
        if !self.line.is_empty() {
            self.end_line(on_event)?;
        }
        if self.has_fields {
            self.dispatch(on_event);
        }
        Ok(())
    }

    fn push_line_bytes(&mut self, bytes: &[u8]) -> Result<(), SseError> {
        self.event_bytes += bytes.len();
        if self.event_bytes > self.limit {
            return Err(SseError::TooLarge(self.limit));
        }
        self.line.extend_from_slice(bytes);
        Ok(())
    }

    fn end_line(&mut self, on_event: &mut impl FnMut(Event)) -> Result<(), SseError> {
        if self.line.is_empty() {
            if self.has_fields {
                self.dispatch(on_event);
            }
            return Ok(());
        }
        let line = std::str::from_utf8(&self.line).map_err(|_| SseError::NotUtf8)?;
        if let Some(comment) = line.strip_prefix(':') {
            self.event.comments.push(comment.to_string());
        } else {
            let (field, value) = match line.split_once(':') {
                Some((f, v)) => (f, v.strip_prefix(' ').unwrap_or(v)),
                None => (line, ""),
            };
            match field {
                "data" => match &mut self.event.data {
                    Some(d) => {
                        d.push('\n');
                        d.push_str(value);
                    }
                    None => self.event.data = Some(value.to_string()),
                },
                "event" => self.event.event = Some(value.to_string()),
                _ => self.event.other.push(line.to_string()),
            }
        }
        self.has_fields = true;
        self.line.clear();
        Ok(())
    }

    fn dispatch(&mut self, on_event: &mut impl FnMut(Event)) {
        on_event(std::mem::take(&mut self.event));
        self.has_fields = false;
        self.event_bytes = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decode_in_pieces(input: &[u8], cut: usize) -> Vec<Event> {
        let mut d = SseDecoder::new(1 << 20);
        let mut events = Vec::new();
        let mut push = |e| events.push(e);
        let cut = cut.min(input.len());
        d.feed(&input[..cut], &mut push).unwrap();
        d.feed(&input[cut..], &mut push).unwrap();
        d.finish(&mut push).unwrap();
        events
    }

    #[test]
    fn events_split_anywhere_decode_the_same() {
        let input = b": keep-alive\r\n\r\ndata: {\"a\":1}\r\n\r\nevent: error\ndata: x\ndata: y\n\ndata: [DONE]\r\r";
        let whole = decode_in_pieces(input, input.len());
        assert_eq!(whole.len(), 4);
        assert_eq!(whole[0].comments, vec![" keep-alive".to_string()]);
        assert_eq!(whole[1].data.as_deref(), Some("{\"a\":1}"));
        assert_eq!(whole[2].event.as_deref(), Some("error"));
        assert_eq!(whole[2].data.as_deref(), Some("x\ny"));
        assert_eq!(whole[3].data.as_deref(), Some("[DONE]"));
        for cut in 0..input.len() {
            assert_eq!(decode_in_pieces(input, cut), whole, "cut at {cut}");
        }
    }

    #[test]
    fn a_final_event_without_blank_line_is_delivered_at_finish() {
        let events = decode_in_pieces(b"data: tail", 4);
        assert_eq!(events.len(), 1);
        assert_eq!(events[0].data.as_deref(), Some("tail"));
    }

    #[test]
    fn oversized_events_are_refused() {
        let mut d = SseDecoder::new(8);
        let err = d.feed(b"data: 0123456789", &mut |_| {}).unwrap_err();
        assert_eq!(err, SseError::TooLarge(8));
    }

    #[test]
    fn written_events_decode_back() {
        let e = Event {
            data: Some("a\nb".into()),
            event: Some("x".into()),
            comments: vec![" hi".into()],
            other: vec!["id: 7".into()],
        };
        let mut out = Vec::new();
        e.write(&mut out);
        assert_eq!(decode_in_pieces(&out, 3), vec![e]);
    }
}
