//! W3C Trace Context: the `traceparent` and `tracestate` headers, id generation and the
//! ratio sampling decision. Pure functions; a malformed header is simply not a parent.

use opentelemetry::trace::{SpanId, TraceId, TraceState};
use rand::RngCore;

/// Longest `tracestate` kept (the W3C limit is 32 members; 512 characters is what vendors
/// are told to propagate at least).
const MAX_TRACESTATE: usize = 512;

/// The trace a request belongs to: the client's, or one the gateway started.
#[derive(Debug, Clone)]
pub struct TraceContext {
    /// The trace.
    pub trace_id: TraceId,
    /// The client's span (the parent of the gateway's server span), if the client sent one.
    pub parent: Option<SpanId>,
    /// Whether this trace is exported.
    pub sampled: bool,
    /// The client's `tracestate`, passed on unchanged.
    pub state: TraceState,
}

impl TraceContext {
    /// Continues the client's trace when `traceparent` is valid, else starts one, sampled
    /// with probability `ratio` (decided from the trace id, as OpenTelemetry's
    /// `TraceIdRatioBased` does, so every service with the same ratio agrees).
    pub fn from_headers(traceparent: Option<&str>, tracestate: Option<&str>, ratio: f64) -> Self {
        if let Some(p) = traceparent.and_then(parse_traceparent) {
            let state = tracestate
                .filter(|s| s.len() <= MAX_TRACESTATE)
                .and_then(|s| s.parse::<TraceState>().ok())
                .unwrap_or_default();
            return TraceContext {
                trace_id: p.trace_id,
                parent: Some(p.span_id),
                sampled: p.sampled,
                state,
            };
        }
        let trace_id = new_trace_id();
        TraceContext {
            trace_id,
            parent: None,
            sampled: ratio_sampled(trace_id, ratio),
            state: TraceState::default(),
        }
    }

    /// The `traceparent` naming `span` in this trace.
    pub fn traceparent(&self, span: SpanId) -> String {
        format!(
            "00-{}-{}-{}",
            self.trace_id,
            span,
            if self.sampled { "01" } else { "00" }
        )
    }

    /// The `tracestate` to send on, when there is one.
    pub fn tracestate(&self) -> Option<String> {
        let h = self.state.header();
        (!h.is_empty()).then_some(h)
    }
}

/// A parsed `traceparent`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TraceParent {
    /// The trace id.
    pub trace_id: TraceId,
    /// The sender's span.
    pub span_id: SpanId,
    /// The sampled flag.
    pub sampled: bool,
}

/// Parses `version-traceid-spanid-flags` (W3C Trace Context level 1): lower-case hex, no
/// all-zero ids, version `ff` refused; a later version may carry more fields after a `-`.
pub fn parse_traceparent(text: &str) -> Option<TraceParent> {
    let t = text.trim();
    let b = t.as_bytes();
    // ASCII only, so the slices below fall on character boundaries.
    if !t.is_ascii() || b.len() < 55 || b[2] != b'-' || b[35] != b'-' || b[52] != b'-' {
        return None;
    }
    let hex = |s: &str| s.bytes().all(|c| matches!(c, b'0'..=b'9' | b'a'..=b'f'));
    let (version, trace, span, flags) = (&t[0..2], &t[3..35], &t[36..52], &t[53..55]);
    if !(hex(version) && hex(trace) && hex(span) && hex(flags)) || version == "ff" {
        return None;
    }
    // Version 00 is exactly 55 characters; later versions may only append `-…`.
    if b.len() > 55 && (version == "00" || b[55] != b'-') {
        return None;
    }
    let trace_id = TraceId::from_hex(trace).ok()?;
    let span_id = SpanId::from_hex(span).ok()?;
    if trace_id == TraceId::INVALID || span_id == SpanId::INVALID {
        return None;
    }
    let flags = u8::from_str_radix(flags, 16).ok()?;
    Some(TraceParent {
        trace_id,
        span_id,
        sampled: flags & 1 == 1,
    })
}

/// `TraceIdRatioBased`: the trace id's lower 8 bytes (shifted to 63 bits) below `ratio`·2⁶³.
pub fn ratio_sampled(trace_id: TraceId, ratio: f64) -> bool {
    if ratio >= 1.0 {
        return true;
    }
    if ratio <= 0.0 {
        return false;
    }
    let bytes = trace_id.to_bytes();
    let mut low = [0u8; 8];
    low.copy_from_slice(&bytes[8..]);
    let x = u64::from_be_bytes(low) >> 1;
    let bound = (ratio * (1u64 << 63) as f64) as u64;
    x < bound
}

/// A random, valid trace id.
pub fn new_trace_id() -> TraceId {
    let mut rng = rand::thread_rng();
    loop {
        let mut b = [0u8; 16];
        rng.fill_bytes(&mut b);
        let id = TraceId::from_bytes(b);
        if id != TraceId::INVALID {
            return id;
        }
    }
}

/// A random, valid span id.
pub fn new_span_id() -> SpanId {
    let mut rng = rand::thread_rng();
    loop {
        let id = SpanId::from_bytes(rng.next_u64().to_be_bytes());
        if id != SpanId::INVALID {
            return id;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const VALID: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

    #[test]
    fn a_valid_traceparent_is_continued_with_its_flag_and_state() {
        let c = TraceContext::from_headers(
            Some(VALID),
            Some("congo=t61rcWkgMzE,rojo=00f067aa0ba902b7"),
            0.0,
        );
        assert_eq!(c.trace_id.to_string(), "4bf92f3577b34da6a3ce929d0e0e4736");
        assert_eq!(
            c.parent.map(|s| s.to_string()).as_deref(),
            Some("00f067aa0ba902b7")
        );
        assert!(c.sampled, "the client's sampled flag wins over ratio 0");
        assert_eq!(
            c.tracestate().as_deref(),
            Some("congo=t61rcWkgMzE,rojo=00f067aa0ba902b7")
        );
        let unsampled = VALID.replace("-01", "-00");
        assert!(!TraceContext::from_headers(Some(&unsampled), None, 1.0).sampled);
    }

    #[test]
    fn malformed_traceparents_start_a_new_trace() {
        for bad in [
            "",
            "garbage",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-0",
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra",
            "00_4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902bz-01",
            "é0-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        ] {
            assert!(parse_traceparent(bad).is_none(), "{bad:?} was accepted");
            let c = TraceContext::from_headers(Some(bad), Some("a=b"), 1.0);
            assert!(
                c.parent.is_none() && c.sampled && c.tracestate().is_none(),
                "{bad:?}"
            );
        }
        // A later version may append fields.
        let v1 = "01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-what-ever";
        assert!(parse_traceparent(v1).is_some());
    }

    #[test]
    fn ratio_sampling_keeps_about_the_ratio_and_the_extremes_exactly() {
        let ids: Vec<TraceId> = (0..4000).map(|_| new_trace_id()).collect();
        assert!(ids.iter().all(|id| ratio_sampled(*id, 1.0)));
        assert!(ids.iter().all(|id| !ratio_sampled(*id, 0.0)));
        let kept = ids.iter().filter(|id| ratio_sampled(**id, 0.25)).count();
        assert!((800..1200).contains(&kept), "{kept} of 4000 at 0.25");
    }

    #[test]
    fn traceparent_round_trips() {
        let c = TraceContext::from_headers(None, None, 1.0);
        let span = new_span_id();
        let p = parse_traceparent(&c.traceparent(span)).unwrap();
        assert_eq!((p.trace_id, p.span_id, p.sampled), (c.trace_id, span, true));
    }
}
