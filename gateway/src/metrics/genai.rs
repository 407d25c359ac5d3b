//! The OpenTelemetry GenAI histograms under their own names: labelled by `route` only
//! (default), or with the GenAI attributes when `telemetry.genai_metrics` is on, which also
//! adds `gen_ai_server_time_per_output_token_seconds`. Chosen at start-up: a family's labels
//! cannot change while Prometheus scrapes it.

use super::labels::{GenAiAttrs, GenAiUsage, Route, TokenType, TokenUsage};
use super::HistogramFamily;

/// Time-per-output-token buckets (seconds), those the GenAI conventions advise.
pub const TPOT_BUCKETS: &[f64] = &[
    0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.75, 1.0, 2.5,
];

/// The families, in one of the two label shapes.
pub enum GenAi {
    /// `route` only.
    Route {
        /// `gen_ai_server_time_to_first_token_seconds`.
        ttft: HistogramFamily<Route<'static>>,
        /// `gen_ai_server_request_duration_seconds`.
        duration: HistogramFamily<Route<'static>>,
        /// `gen_ai_client_token_usage`.
        usage: HistogramFamily<TokenUsage<'static>>,
    },
    /// With the GenAI attributes.
    Attributes {
        /// `gen_ai_server_time_to_first_token_seconds`.
        ttft: HistogramFamily<GenAiAttrs<'static>>,
        /// `gen_ai_server_request_duration_seconds`.
        duration: HistogramFamily<GenAiAttrs<'static>>,
        /// `gen_ai_client_token_usage`.
        usage: HistogramFamily<GenAiUsage<'static>>,
        /// `gen_ai_server_time_per_output_token_seconds`.
        tpot: HistogramFamily<GenAiAttrs<'static>>,
    },
}

/// One finished request, for the GenAI histograms.
pub struct Observation<'a> {
    /// Its attributes (`route` is all the default shape uses).
    pub attrs: GenAiAttrs<'a>,
    /// From arrival to the end, seconds.
    pub duration: f64,
    /// Time to the first response byte, seconds.
    pub ttft: Option<f64>,
    /// Input and output tokens, when the upstream reported usage.
    pub tokens: Option<(u64, u64)>,
}

impl GenAi {
    /// Records one request.
    pub fn observe(&self, o: &Observation<'_>) {
        let route = o.attrs.route;
        match self {
            GenAi::Route {
                ttft,
                duration,
                usage,
            } => {
                duration.with(&Route { route }).observe(o.duration);
                if let Some(t) = o.ttft {
                    ttft.with(&Route { route }).observe(t);
                }
                if let Some((input, output)) = o.tokens {
                    let u = |token_type| TokenUsage { route, token_type };
                    usage.with(&u(TokenType::Input)).observe(input as f64);
                    usage.with(&u(TokenType::Output)).observe(output as f64);
                }
            }
            GenAi::Attributes {
                ttft,
                duration,
                usage,
                tpot,
            } => {
                let a = &o.attrs;
                duration.with(a).observe(o.duration);
                if let Some(t) = o.ttft {
                    ttft.with(a).observe(t);
                }
                if let Some((input, output)) = o.tokens {
                    let u = |token_type| GenAiUsage {
                        route,
                        operation: a.operation,
                        provider: a.provider,
                        request_model: a.request_model,
                        error_type: a.error_type,
                        token_type,
                    };
                    usage.with(&u(TokenType::Input)).observe(input as f64);
                    usage.with(&u(TokenType::Output)).observe(output as f64);
                    // Decode time per token after the first, as the conventions define it.
                    if let (Some(t), true) = (o.ttft, output > 1) {
                        let per = (o.duration - t).max(0.0) / (output - 1) as f64;
                        tpot.with(a).observe(per);
                    }
                }
            }
        }
    }
}
