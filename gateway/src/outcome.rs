//! How a request really ended: the `outcome` label of `requests_total` and
//! `request_duration_seconds`, the access log's `outcome` field and the async job record's.
//!
//! The HTTP status says what went out first; a stream that fails after its `200` status line
//! still ended badly. [`decide`] is a pure function of what the request context observed, so
//! every place that reports an outcome agrees on it.

use serde::{Deserialize, Serialize};

/// How a request ended (a closed set: label values).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// A complete response from the upstream (any 2xx/3xx that was not cut short).
    Ok,
    /// The upstream failed: unreachable, 5xx, invalid HTTP, or the connection dropped, before or
    /// after the response headers; also a route whose pool had no healthy endpoint.
    UpstreamError,
    /// The upstream did not answer within the pool's `read_timeout`.
    Timeout,
    /// The client went away before the response was complete.
    ClientCancelled,
    /// The gateway stopped the generation at the route's `max_reasoning_tokens`.
    BudgetExceeded,
    /// The gateway stopped the generation because the reasoning failed an `abort` check.
    VerificationAborted,
    /// No token within `step_timeout` while reasoning, with `step_timeout_policy: abort`.
    StepTimeout,
    /// Refused: a 4xx the gateway decided (invalid request, unknown model, 413, 429 of a full
    /// pool) or one the upstream answered.
    Rejected,
    /// Replayed from the reasoning cache; the upstream was not asked.
    CacheHit,
}

impl Outcome {
    /// Every outcome, in label order.
    pub const ALL: [Outcome; 9] = [
        Outcome::Ok,
        Outcome::UpstreamError,
        Outcome::Timeout,
        Outcome::ClientCancelled,
        Outcome::BudgetExceeded,
        Outcome::VerificationAborted,
        Outcome::StepTimeout,
        Outcome::Rejected,
        Outcome::CacheHit,
    ];

    /// The label value.
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Ok => "ok",
            Outcome::UpstreamError => "upstream_error",
            Outcome::Timeout => "timeout",
            Outcome::ClientCancelled => "client_cancelled",
            Outcome::BudgetExceeded => "budget_exceeded",
            Outcome::VerificationAborted => "verification_aborted",
            Outcome::StepTimeout => "step_timeout",
            Outcome::Rejected => "rejected",
            Outcome::CacheHit => "cache_hit",
        }
    }

    /// A failure of the service (what error-rate alerts and canary rollback count): the
    /// upstream failed, timed out, or stalled while reasoning. A client that cancels, a refusal
    /// and the reasoning policies (budget, verification: they have their own metrics) are not.
    pub fn is_error(self) -> bool {
        matches!(
            self,
            Outcome::UpstreamError | Outcome::Timeout | Outcome::StepTimeout
        )
    }

    /// The outcome an error the gateway wrote (its OpenAI `code`) stands for, when the code
    /// alone says: the gateway's own aborts, and a failed upstream. Used by [`decide`] and by
    /// the async job runner, which sees only the error event.
    pub fn of_error_code(code: &str) -> Option<Outcome> {
        use crate::openai::ErrorCode as C;
        Some(match C::parse(code)? {
            C::ReasoningBudgetExceeded => Outcome::BudgetExceeded,
            C::VerificationFailed => Outcome::VerificationAborted,
            C::StepTimeout => Outcome::StepTimeout,
            C::UpstreamTimeout => Outcome::Timeout,
            C::UpstreamUnreachable
            | C::UpstreamTlsError
            | C::UpstreamProtocolError
            | C::UpstreamDisconnected
            | C::UpstreamUnavailable
            | C::NoHealthyUpstream
            | C::GatewayOutOfResources => Outcome::UpstreamError,
            _ => return None,
        })
    }
}

impl std::fmt::Display for Outcome {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What went wrong talking to the upstream, if anything (`upstream_errors_total` kinds folded).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UpstreamFailure {
    /// The read (or write) timed out.
    Timeout,
    /// Anything else: connect, TLS, protocol, disconnect, a 5xx status, no healthy endpoint.
    Failed,
}

impl UpstreamFailure {
    /// From an `upstream_errors_total` kind.
    pub fn of_kind(kind: UpstreamErrorKind) -> UpstreamFailure {
        if kind == UpstreamErrorKind::Timeout {
            UpstreamFailure::Timeout
        } else {
            UpstreamFailure::Failed
        }
    }
}

/// What went wrong talking to the upstream: the `kind` label of `upstream_errors_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UpstreamErrorKind {
    /// Refused or timed out connecting.
    Connect,
    /// The TLS handshake failed.
    Tls,
    /// The gateway could not open a socket (file descriptors or memory): not the upstream's fault.
    LocalResources,
    /// No healthy endpoint left in the pool.
    NoHealthyEndpoint,
    /// The upstream answered 5xx.
    Status5xx,
    /// The connection closed mid-response.
    Disconnect,
    /// The read (or write) timed out.
    Timeout,
    /// The upstream sent something that is not HTTP.
    Protocol,
}

impl UpstreamErrorKind {
    /// Every kind, in label order.
    pub const ALL: &'static [UpstreamErrorKind] = &[
        UpstreamErrorKind::Connect,
        UpstreamErrorKind::Tls,
        UpstreamErrorKind::LocalResources,
        UpstreamErrorKind::NoHealthyEndpoint,
        UpstreamErrorKind::Status5xx,
        UpstreamErrorKind::Disconnect,
        UpstreamErrorKind::Timeout,
        UpstreamErrorKind::Protocol,
    ];

    /// The label value.
    pub fn label(self) -> &'static str {
        match self {
            UpstreamErrorKind::Connect => "connect",
            UpstreamErrorKind::Tls => "tls",
            UpstreamErrorKind::LocalResources => "local_resources",
            UpstreamErrorKind::NoHealthyEndpoint => "no_healthy_endpoint",
            UpstreamErrorKind::Status5xx => "status_5xx",
            UpstreamErrorKind::Disconnect => "disconnect",
            UpstreamErrorKind::Timeout => "timeout",
            UpstreamErrorKind::Protocol => "protocol",
        }
    }

    /// Counted per connect attempt (in `fail_to_connect`), not once per request.
    pub fn per_attempt(self) -> bool {
        matches!(
            self,
            UpstreamErrorKind::Connect | UpstreamErrorKind::LocalResources | UpstreamErrorKind::Tls
        )
    }
}

/// What the request context observed by the time the request ended.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Facts {
    /// HTTP status sent to the client (0: none was).
    pub status: u16,
    /// The gateway wrote the error response itself (before or instead of proxying).
    pub local_error: bool,
    /// The upstream failed, and whether that was before its response headers.
    pub upstream: Option<(UpstreamFailure, Headers)>,
    /// The route's step timeout stopped the stream (`step_timeout_policy: abort`).
    pub step_timeout_abort: bool,
    /// The reasoning budget stopped the stream.
    pub budget_exceeded: bool,
    /// A verification check with `abort` stopped the stream.
    pub verification_aborted: bool,
    /// The client closed its connection before the response was complete.
    pub client_gone: bool,
    /// The answer was replayed from the cache.
    pub cache_hit: bool,
}

/// When an upstream failure happened relative to the response headers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Headers {
    /// Nothing had been sent to the client yet (a 502/504 went out).
    #[default]
    Before,
    /// The status line (usually 200) was out already: a stream cut short.
    After,
}

/// The outcome of a finished request. Order matters: the gateway's own decisions (a cache
/// replay, an abort it made) explain the rest; a client gone explains the failed write that
/// follows; then the upstream's failure (before or after headers: the status does not matter),
/// and only then the status.
pub fn decide(f: &Facts) -> Outcome {
    if f.cache_hit && !f.client_gone {
        return Outcome::CacheHit;
    }
    if f.budget_exceeded {
        return Outcome::BudgetExceeded;
    }
    if f.verification_aborted {
        return Outcome::VerificationAborted;
    }
    if f.step_timeout_abort {
        return Outcome::StepTimeout;
    }
    if f.client_gone {
        return Outcome::ClientCancelled;
    }
    match f.upstream {
        Some((UpstreamFailure::Timeout, _)) => return Outcome::Timeout,
        Some((UpstreamFailure::Failed, _)) => return Outcome::UpstreamError,
        None => {}
    }
    match f.status {
        // Nothing went out and nobody said why: the proxy failed the request.
        0 => Outcome::UpstreamError,
        // A gateway-decided 5xx without an upstream failure is still a failure to serve.
        500.. => Outcome::UpstreamError,
        400..=499 => Outcome::Rejected,
        _ if f.local_error => Outcome::Rejected,
        _ => Outcome::Ok,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok200() -> Facts {
        Facts {
            status: 200,
            ..Facts::default()
        }
    }

    #[test]
    fn labels_are_unique_snake_case_and_round_trip_through_serde() {
        let labels: std::collections::HashSet<_> =
            Outcome::ALL.iter().map(|o| o.as_str()).collect();
        assert_eq!(labels.len(), Outcome::ALL.len());
        for o in Outcome::ALL {
            let json = serde_json::to_string(&o).unwrap();
            assert_eq!(json, format!("\"{}\"", o.as_str()));
            assert_eq!(serde_json::from_str::<Outcome>(&json).unwrap(), o);
        }
    }

    #[test]
    fn a_complete_response_is_ok() {
        assert_eq!(decide(&ok200()), Outcome::Ok);
    }

    #[test]
    fn an_upstream_failure_after_a_200_is_an_upstream_error_not_ok() {
        let f = Facts {
            upstream: Some((UpstreamFailure::Failed, Headers::After)),
            ..ok200()
        };
        assert_eq!(decide(&f), Outcome::UpstreamError);
        assert!(decide(&f).is_error());
    }

    #[test]
    fn an_upstream_failure_before_headers_is_an_upstream_error() {
        let f = Facts {
            status: 502,
            local_error: true,
            upstream: Some((UpstreamFailure::Failed, Headers::Before)),
            ..Facts::default()
        };
        assert_eq!(decide(&f), Outcome::UpstreamError);
        // An upstream's own 5xx status is one too.
        assert_eq!(
            decide(&Facts {
                status: 500,
                ..Facts::default()
            }),
            Outcome::UpstreamError
        );
    }

    #[test]
    fn a_read_timeout_is_a_timeout_before_or_after_headers() {
        for (status, when) in [(504, Headers::Before), (200, Headers::After)] {
            let f = Facts {
                status,
                upstream: Some((UpstreamFailure::Timeout, when)),
                ..Facts::default()
            };
            assert_eq!(decide(&f), Outcome::Timeout);
        }
    }

    #[test]
    fn a_step_timeout_abort_wins_over_the_read_timeout_it_comes_from() {
        let f = Facts {
            step_timeout_abort: true,
            upstream: Some((UpstreamFailure::Timeout, Headers::After)),
            ..ok200()
        };
        assert_eq!(decide(&f), Outcome::StepTimeout);
        assert!(Outcome::StepTimeout.is_error());
    }

    #[test]
    fn the_gateways_own_aborts_are_their_own_outcomes_and_not_errors() {
        // Stopping the upstream after an abort makes its read fail: that is not its fault.
        let budget = Facts {
            budget_exceeded: true,
            upstream: Some((UpstreamFailure::Failed, Headers::After)),
            ..ok200()
        };
        assert_eq!(decide(&budget), Outcome::BudgetExceeded);
        let verify = Facts {
            verification_aborted: true,
            ..ok200()
        };
        assert_eq!(decide(&verify), Outcome::VerificationAborted);
        assert!(!Outcome::BudgetExceeded.is_error());
        assert!(!Outcome::VerificationAborted.is_error());
    }

    #[test]
    fn a_client_that_leaves_is_cancelled_not_an_error() {
        let f = Facts {
            client_gone: true,
            ..ok200()
        };
        assert_eq!(decide(&f), Outcome::ClientCancelled);
        assert!(!Outcome::ClientCancelled.is_error());
        // Before any response too.
        let f = Facts {
            client_gone: true,
            ..Facts::default()
        };
        assert_eq!(decide(&f), Outcome::ClientCancelled);
    }

    #[test]
    fn refusals_are_rejected() {
        for status in [400, 404, 408, 413, 429] {
            let f = Facts {
                status,
                local_error: true,
                ..Facts::default()
            };
            assert_eq!(decide(&f), Outcome::Rejected, "{status}");
            assert!(!Outcome::Rejected.is_error());
        }
        // An upstream's own 4xx too.
        assert_eq!(
            decide(&Facts {
                status: 400,
                ..Facts::default()
            }),
            Outcome::Rejected
        );
    }

    #[test]
    fn a_cache_hit_is_a_cache_hit_unless_the_client_left() {
        let f = Facts {
            cache_hit: true,
            local_error: false,
            ..ok200()
        };
        assert_eq!(decide(&f), Outcome::CacheHit);
        let gone = Facts {
            client_gone: true,
            ..f
        };
        assert_eq!(decide(&gone), Outcome::ClientCancelled);
    }

    #[test]
    fn nothing_sent_and_no_reason_is_an_upstream_error() {
        assert_eq!(decide(&Facts::default()), Outcome::UpstreamError);
    }

    #[test]
    fn error_codes_map_to_the_outcome_decide_gives() {
        assert_eq!(
            Outcome::of_error_code("reasoning_budget_exceeded"),
            Some(Outcome::BudgetExceeded)
        );
        assert_eq!(
            Outcome::of_error_code("verification_failed"),
            Some(Outcome::VerificationAborted)
        );
        assert_eq!(
            Outcome::of_error_code("step_timeout"),
            Some(Outcome::StepTimeout)
        );
        assert_eq!(
            Outcome::of_error_code("upstream_timeout"),
            Some(Outcome::Timeout)
        );
        assert_eq!(
            Outcome::of_error_code("upstream_disconnected"),
            Some(Outcome::UpstreamError)
        );
        assert_eq!(Outcome::of_error_code("invalid_request"), None);
    }
}
