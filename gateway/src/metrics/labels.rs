//! The label sets of the gateway's metrics. Each set is one type that names its labels once
//! ([`LabelSet::NAMES`], used at registration) and gives their values in the same order at each
//! observation, so a swapped, missing or extra label does not compile. Values are config names
//! (route, variant, upstream) or closed enums, never request text.

use crate::admin::guard::Reason as AdminRefusal;
use crate::api::Api;
use crate::jobs::quota::Rejection;
use crate::openai::{Endpoint, ErrorCode};
use crate::outcome::{Outcome, UpstreamErrorKind};
use crate::reasoning::verify::Check;
use crate::upstream::Refused;

/// One metric's set of labels.
pub trait LabelSet {
    /// The same set with every borrow `'static`: what a [`super::Family`] is declared with, so
    /// that one family takes the set whatever its values borrow from.
    type Key: 'static;
    /// Label names, in registration order.
    const NAMES: &'static [&'static str];
    /// Calls `f` with the label values, in the order of [`LabelSet::NAMES`].
    fn with_values<R>(&self, f: impl FnOnce(&[&str]) -> R) -> R;
}

/// A value of one label.
pub trait LabelValue {
    /// The exported string.
    fn label_value(&self) -> &str;
}

impl LabelValue for &str {
    fn label_value(&self) -> &str {
        self
    }
}

/// `stream`: whether the client asked for a stream.
impl LabelValue for bool {
    fn label_value(&self) -> &str {
        if *self {
            "true"
        } else {
            "false"
        }
    }
}

/// `endpoint`: the API endpoint, `other` before one was recognised.
impl LabelValue for Option<Endpoint> {
    fn label_value(&self) -> &str {
        self.map_or("other", Endpoint::label)
    }
}

/// `api`: the client API spoken (chat, completions, responses, messages), `other` for the
/// rest (models, embeddings, unknown paths).
impl LabelValue for Option<Api> {
    fn label_value(&self) -> &str {
        self.map_or("other", Api::label)
    }
}

macro_rules! label_values {
    ($($ty:ty => $f:expr),+ $(,)?) => {
        $(impl LabelValue for $ty {
            fn label_value(&self) -> &str {
                $f(*self)
            }
        })+
    };
}

label_values! {
    Outcome => Outcome::as_str,
    Check => Check::label,
    Refused => Refused::label,
    AdminRefusal => AdminRefusal::label,
    Rejection => Rejection::label,
    UpstreamErrorKind => UpstreamErrorKind::label,
}

/// A struct of label fields: each field one label, named by the string after it.
macro_rules! label_set {
    ($(#[$doc:meta])* $name:ident { $($field:ident: $ty:ty => $label:literal),+ $(,)? }) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy)]
        pub struct $name<'a> {
            $(#[doc = concat!("The `", $label, "` label.")] pub $field: $ty,)+
        }

        impl LabelSet for $name<'_> {
            type Key = $name<'static>;
            const NAMES: &'static [&'static str] = &[$($label),+];
            fn with_values<R>(&self, f: impl FnOnce(&[&str]) -> R) -> R {
                f(&[$(self.$field.label_value()),+])
            }
        }
    };
}

/// A closed enum that is a whole label set of one label: its variants are the values.
macro_rules! enum_label {
    ($(#[$doc:meta])* $name:ident => $label:literal { $($(#[$vdoc:meta])* $variant:ident => $value:literal),+ $(,)? }) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq)]
        pub enum $name {
            $($(#[$vdoc])* $variant,)+
        }

        impl $name {
            /// Every value, in declaration order.
            pub const ALL: &'static [$name] = &[$($name::$variant),+];

            /// The label value.
            pub fn label(self) -> &'static str {
                match self {
                    $($name::$variant => $value,)+
                }
            }
        }

        impl LabelValue for $name {
            fn label_value(&self) -> &str {
                self.label()
            }
        }

        single_label!($name => $label);
    };
}

/// An enum defined elsewhere used as a one-label set.
macro_rules! single_label {
    ($ty:ty => $label:literal) => {
        impl LabelSet for $ty {
            type Key = $ty;
            const NAMES: &'static [&'static str] = &[$label];
            fn with_values<R>(&self, f: impl FnOnce(&[&str]) -> R) -> R {
                f(&[self.label_value()])
            }
        }
    };
}

single_label!(AdminRefusal => "reason");
single_label!(Rejection => "reason");

label_set! {
    /// Per route and canary variant: rollbacks, promotions, traffic share, shadow durations.
    RouteVariant { route: &'a str => "route", variant: &'a str => "variant" }
}

label_set! {
    /// Per route and upstream: latencies, token and step counts, corrections, step timeouts.
    RouteUpstream { route: &'a str => "route", upstream: &'a str => "upstream" }
}

label_set! {
    /// Per route: the OpenTelemetry GenAI series and the gateway's own overhead.
    Route { route: &'a str => "route" }
}

label_set! {
    /// `tenant_headers_ignored_total`: the header's name (a config name or the gateway's own).
    TenantHeader { header: &'a str => "header" }
}

label_set! {
    /// Per upstream pool: its admission queue.
    Upstream { upstream: &'a str => "upstream" }
}

label_set! {
    /// `request_duration_seconds`.
    Durations {
        route: &'a str => "route",
        variant: &'a str => "variant",
        upstream: &'a str => "upstream",
        stream: bool => "stream",
        outcome: Outcome => "outcome",
    }
}

label_set! {
    /// `upstream_errors_total`.
    UpstreamError { upstream: &'a str => "upstream", kind: UpstreamErrorKind => "kind" }
}

label_set! {
    /// `upstream_rejections_total`.
    UpstreamRejection { upstream: &'a str => "upstream", reason: Refused => "reason" }
}

label_set! {
    /// `gen_ai_client_token_usage`.
    TokenUsage { route: &'a str => "route", token_type: TokenType => "gen_ai_token_type" }
}

label_set! {
    /// `verifications_total`.
    Verification {
        route: &'a str => "route",
        upstream: &'a str => "upstream",
        check: Check => "check",
        result: CheckResult => "result",
    }
}

label_set! {
    /// `verification_failures_total`.
    FailedCheck { route: &'a str => "route", upstream: &'a str => "upstream", check: Check => "check" }
}

label_set! {
    /// `request_duration_by_reasoning_length_seconds`.
    RouteReasoningLength { route: &'a str => "route", reasoning_length: ReasoningLength => "reasoning_length" }
}

label_set! {
    /// `reasoning_aborts_total`.
    Abort { route: &'a str => "route", upstream: &'a str => "upstream", reason: AbortReason => "reason" }
}

label_set! {
    /// `shadow_requests_total`.
    Shadow { route: &'a str => "route", variant: &'a str => "variant", result: ShadowResult => "result" }
}

label_set! {
    /// `shadow_verification_failures_total`.
    ShadowFailedCheck { route: &'a str => "route", variant: &'a str => "variant", check: Check => "check" }
}

/// `requests_total`.
#[derive(Debug, Clone, Copy)]
pub struct Requests<'a> {
    /// Route name.
    pub route: &'a str,
    /// Canary variant.
    pub variant: &'a str,
    /// Upstream pool.
    pub upstream: &'a str,
    /// API endpoint (`other` when none was recognised).
    pub endpoint: Option<Endpoint>,
    /// HTTP status sent (0: none was).
    pub status: u16,
    /// How the request really ended.
    pub outcome: Outcome,
    /// The client API spoken.
    pub api: Option<Api>,
}

impl LabelSet for Requests<'_> {
    type Key = Requests<'static>;
    const NAMES: &'static [&'static str] = &[
        "route", "variant", "upstream", "endpoint", "status", "outcome", "api",
    ];
    fn with_values<R>(&self, f: impl FnOnce(&[&str]) -> R) -> R {
        let status = self.status.to_string();
        f(&[
            self.route,
            self.variant,
            self.upstream,
            self.endpoint.label_value(),
            &status,
            self.outcome.label_value(),
            self.api.label_value(),
        ])
    }
}

/// `config_reloads_total`.
#[derive(Debug, Clone, Copy)]
pub struct Reload {
    /// Swapped in or refused.
    pub result: ReloadResult,
    /// What asked for it.
    pub trigger: ReloadTrigger,
}

impl LabelSet for Reload {
    type Key = Reload;
    const NAMES: &'static [&'static str] = &["result", "trigger"];
    fn with_values<R>(&self, f: impl FnOnce(&[&str]) -> R) -> R {
        f(&[self.result.label(), self.trigger.label()])
    }
}

/// The reasoning-length class of a response's reasoning tokens.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReasoningLength(pub u64);

impl LabelValue for ReasoningLength {
    fn label_value(&self) -> &str {
        super::reasoning_length_class(self.0)
    }
}

enum_label! {
    /// `gen_ai_token_type`.
    TokenType => "gen_ai_token_type" {
        /// Prompt tokens.
        Input => "input",
        /// Completion tokens (reasoning and answer).
        Output => "output",
    }
}

enum_label! {
    /// A verification check's result.
    CheckResult => "result" {
        /// Passed.
        Pass => "pass",
        /// Failed.
        Fail => "fail",
    }
}

// Budget forcing (issue 30).
enum_label! {
    /// What a route's reasoning budget did to a request.
    BudgetAction => "action" {
        /// The reasoning was closed at the budget and the model continued to an answer.
        ForcedAnswer => "forced_answer",
        /// An end of reasoning below `min_tokens` was replaced and the reasoning went on.
        Extended => "extended",
        /// The budget ended the stream with an error.
        Error => "error",
    }
}

label_set! {
    /// `reasoning_budget_actions_total`.
    Budget { route: &'a str => "route", action: BudgetAction => "action" }
}

label_set! {
    /// `reasoning_budget_forced_verifications_total`: the checks of forced answers.
    ForcedVerification { route: &'a str => "route", check: Check => "check", result: CheckResult => "result" }
}

enum_label! {
    /// Why the gateway ended a stream itself: the codes of the errors it sent.
    AbortReason => "reason" {
        /// Over `max_reasoning_tokens`.
        ReasoningBudgetExceeded => "reasoning_budget_exceeded",
        /// An `abort` check failed.
        VerificationFailed => "verification_failed",
        /// No token within `step_timeout`.
        StepTimeout => "step_timeout",
    }
}

impl AbortReason {
    /// The abort an error sent to the client stands for, if it is one.
    pub fn of(code: ErrorCode) -> Option<AbortReason> {
        match code {
            ErrorCode::ReasoningBudgetExceeded => Some(AbortReason::ReasoningBudgetExceeded),
            ErrorCode::VerificationFailed => Some(AbortReason::VerificationFailed),
            ErrorCode::StepTimeout => Some(AbortReason::StepTimeout),
            _ => None,
        }
    }
}

enum_label! {
    /// A config reload's result.
    ReloadResult => "result" {
        /// Validated and swapped in.
        Ok => "ok",
        /// Invalid: the running config stayed.
        Error => "error",
    }
}

enum_label! {
    /// What asked for a config reload (also its log field).
    ReloadTrigger => "trigger" {
        /// `POST /admin/reload`.
        Admin => "admin",
        /// SIGHUP.
        Sighup => "sighup",
        /// The config file changed.
        Watch => "watch",
        /// An upstream name resolves to other addresses.
        Dns => "dns",
    }
}

enum_label! {
    /// A shadow copy's result.
    ShadowResult => "result" {
        /// The shadow answered.
        Ok => "ok",
        /// The shadow failed.
        Error => "error",
        /// Not sent: the concurrency bound.
        Skipped => "skipped",
    }
}

enum_label! {
    /// Why the public listener refused a connection or request (`client_rejections_total`).
    ClientRejection => "reason" {
        /// `max_connections` open: 503 at accept.
        MaxConnections => "max_connections",
        /// No whole header within `client_header_timeout`: closed.
        HeaderTimeout => "header_timeout",
        /// No whole body within `client_body_timeout`: 408.
        BodyTimeout => "body_timeout",
    }
}

enum_label! {
    /// How an async job finished (`async_jobs_total`).
    JobResult => "result" {
        /// Completed.
        Succeeded => "succeeded",
        /// Failed.
        Failed => "failed",
        /// Cancelled by its client.
        Cancelled => "cancelled",
    }
}

enum_label! {
    /// A job callback attempt's result (`async_job_callbacks_total`).
    CallbackResult => "result" {
        /// A 2xx answer.
        Delivered => "delivered",
        /// Anything else (retried with backoff).
        Failed => "failed",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn values<L: LabelSet>(l: &L) -> Vec<String> {
        l.with_values(|v| v.iter().map(std::string::ToString::to_string).collect())
    }

    fn labels<T: Copy>(all: &[T], label: fn(T) -> &'static str) -> Vec<&'static str> {
        all.iter().map(|v| label(*v)).collect()
    }

    /// The strings each value had when call sites wrote them out (dashboards and alert rules
    /// match them).
    #[test]
    fn enum_values_keep_their_strings() {
        assert_eq!(
            labels(TokenType::ALL, TokenType::label),
            ["input", "output"]
        );
        assert_eq!(
            labels(CheckResult::ALL, CheckResult::label),
            ["pass", "fail"]
        );
        assert_eq!(
            labels(AbortReason::ALL, AbortReason::label),
            [
                "reasoning_budget_exceeded",
                "verification_failed",
                "step_timeout"
            ]
        );
        for r in AbortReason::ALL {
            let code = ErrorCode::parse(r.label()).unwrap();
            assert_eq!(AbortReason::of(code), Some(*r));
        }
        assert_eq!(AbortReason::of(ErrorCode::UpstreamTimeout), None);
        assert_eq!(
            labels(ReloadResult::ALL, ReloadResult::label),
            ["ok", "error"]
        );
        assert_eq!(
            labels(ReloadTrigger::ALL, ReloadTrigger::label),
            ["admin", "sighup", "watch", "dns"]
        );
        assert_eq!(
            labels(ShadowResult::ALL, ShadowResult::label),
            ["ok", "error", "skipped"]
        );
        assert_eq!(
            labels(ClientRejection::ALL, ClientRejection::label),
            ["max_connections", "header_timeout", "body_timeout"]
        );
        assert_eq!(
            labels(JobResult::ALL, JobResult::label),
            ["succeeded", "failed", "cancelled"]
        );
        assert_eq!(
            labels(CallbackResult::ALL, CallbackResult::label),
            ["delivered", "failed"]
        );
        assert_eq!(
            labels(UpstreamErrorKind::ALL, UpstreamErrorKind::label),
            [
                "connect",
                "tls",
                "local_resources",
                "no_healthy_endpoint",
                "status_5xx",
                "disconnect",
                "timeout",
                "protocol"
            ]
        );
    }

    #[test]
    fn sets_give_one_value_per_name_in_order() {
        let mut r = Requests {
            route: "r",
            variant: "v",
            upstream: "u",
            endpoint: None,
            status: 503,
            outcome: Outcome::UpstreamError,
            api: None,
        };
        assert_eq!(
            values(&r),
            ["r", "v", "u", "other", "503", "upstream_error", "other"]
        );
        r.endpoint = Some(Endpoint::ChatCompletions);
        r.api = Some(Api::Responses);
        assert_eq!(values(&r)[3], "chat_completions");
        assert_eq!(values(&r)[6], "responses");
        let d = Durations {
            route: "r",
            variant: "v",
            upstream: "u",
            stream: true,
            outcome: Outcome::CacheHit,
        };
        assert_eq!(values(&d), ["r", "v", "u", "true", "cache_hit"]);
        assert_eq!(
            Durations::NAMES,
            ["route", "variant", "upstream", "stream", "outcome"]
        );
        let l = RouteReasoningLength {
            route: "r",
            reasoning_length: ReasoningLength(300),
        };
        assert_eq!(values(&l), ["r", "257-1024"]);
        let reload = Reload {
            result: ReloadResult::Error,
            trigger: ReloadTrigger::Sighup,
        };
        assert_eq!(values(&reload), ["error", "sighup"]);
    }
}

enum_label! {
    /// Why spans were not exported (`otel_spans_dropped_total`).
    SpanDrop => "reason" {
        /// The export queue was full.
        QueueFull => "queue_full",
        /// The export failed or timed out.
        ExportFailed => "export_failed",
    }
}

enum_label! {
    /// The OTLP protocol spans went out on (`otel_spans_exported_total`).
    SpanExport => "protocol" {
        /// Protobuf over HTTP.
        HttpProtobuf => "http/protobuf",
        /// gRPC.
        Grpc => "grpc",
    }
}

label_set! {
    /// The OpenTelemetry GenAI attributes (`telemetry.genai_metrics`): operation, provider (the
    /// upstream pool), request model (the route's configured `model`), `error.type` (empty when
    /// none).
    GenAiAttrs {
        route: &'a str => "route",
        operation: &'a str => "gen_ai_operation_name",
        provider: &'a str => "gen_ai_provider_name",
        request_model: &'a str => "gen_ai_request_model",
        error_type: &'a str => "error_type",
    }
}

label_set! {
    /// `gen_ai_client_token_usage` with the GenAI attributes.
    GenAiUsage {
        route: &'a str => "route",
        operation: &'a str => "gen_ai_operation_name",
        provider: &'a str => "gen_ai_provider_name",
        request_model: &'a str => "gen_ai_request_model",
        error_type: &'a str => "error_type",
        token_type: TokenType => "gen_ai_token_type",
    }
}

enum_label! {
    /// What a Redis command of fleet mode was for (`shared_state_errors_total`).
    SharedOp => "op" {
        /// Health check and connecting.
        Ping => "ping",
        /// Cache lookups and inserts on a request's path.
        Cache => "cache",
        /// Tailing and loading the cache's stream of inserts and purges.
        CacheSync => "cache_sync",
        /// Canary outcome counts and verdicts.
        Canary => "canary",
        /// Async jobs: the table, leases and callbacks.
        Jobs => "jobs",
    }
}

enum_label! {
    /// The store fleet state is shared through (`shared_state_up`).
    SharedBackend => "backend" {
        /// Redis or Valkey.
        Redis => "redis",
    }
}
