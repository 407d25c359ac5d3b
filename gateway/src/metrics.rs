//! Every metric the gateway exports, defined once with its help text.
//! Label values come from config names and fixed enums, never from request text.

use prometheus::{
    Encoder, HistogramOpts, HistogramVec, IntCounterVec, IntGauge, Opts, Registry, TextEncoder,
};

const PREFIX: &str = "reasoning_gateway";

/// Latency buckets (seconds) from sub-millisecond cache/proxy work to multi-minute reasoning.
const LATENCY_BUCKETS: &[f64] = &[
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
    120.0, 300.0, 600.0,
];

/// The gateway's metrics and the registry they live in.
pub struct Metrics {
    registry: Registry,
    /// Requests answered, by route, upstream, endpoint kind and HTTP status.
    pub requests_total: IntCounterVec,
    /// Whole-request latency.
    pub request_duration_seconds: HistogramVec,
    /// Time from request start to the first response byte from upstream.
    pub time_to_first_token_seconds: HistogramVec,
    /// Upstream failures by kind.
    pub upstream_errors_total: IntCounterVec,
    /// Requests being handled right now.
    pub inflight_requests: IntGauge,
}

impl Metrics {
    /// Creates and registers every metric.
    pub fn new() -> Self {
        let registry = Registry::new();
        let counter = |name: &str, help: &str, labels: &[&str]| {
            let c = IntCounterVec::new(Opts::new(name, help).namespace(PREFIX), labels)
                .expect("metric definition is valid");
            registry
                .register(Box::new(c.clone()))
                .expect("metric is registered once");
            c
        };
        let histogram = |name: &str, help: &str, labels: &[&str], buckets: &[f64]| {
            let h = HistogramVec::new(
                HistogramOpts::new(name, help)
                    .namespace(PREFIX)
                    .buckets(buckets.to_vec()),
                labels,
            )
            .expect("metric definition is valid");
            registry
                .register(Box::new(h.clone()))
                .expect("metric is registered once");
            h
        };
        let requests_total = counter(
            "requests_total",
            "Requests answered by the gateway, by route, upstream, API endpoint and HTTP status.",
            &["route", "upstream", "endpoint", "status"],
        );
        let request_duration_seconds = histogram(
            "request_duration_seconds",
            "Time from receiving a request to sending the last response byte.",
            &["route", "upstream", "stream"],
            LATENCY_BUCKETS,
        );
        let time_to_first_token_seconds = histogram(
            "time_to_first_token_seconds",
            "Time from receiving a request to the first response body byte from the upstream (reasoning or answer).",
            &["route", "upstream"],
            LATENCY_BUCKETS,
        );
        let upstream_errors_total = counter(
            "upstream_errors_total",
            "Upstream failures: connect (refused or timed out), no_healthy_endpoint, status_5xx, disconnect (closed mid-response), timeout, protocol (not HTTP).",
            &["upstream", "kind"],
        );
        let inflight_requests = IntGauge::with_opts(
            Opts::new("inflight_requests", "Requests currently being handled.").namespace(PREFIX),
        )
        .expect("metric definition is valid");
        registry
            .register(Box::new(inflight_requests.clone()))
            .expect("metric is registered once");
        Metrics {
            registry,
            requests_total,
            request_duration_seconds,
            time_to_first_token_seconds,
            upstream_errors_total,
            inflight_requests,
        }
    }

    /// The Prometheus text exposition of every metric.
    pub fn render(&self) -> Vec<u8> {
        let mut out = Vec::new();
        // Encoding into a Vec only fails on invalid metric families, which `new` rules out.
        let _ = TextEncoder::new().encode(&self.registry.gather(), &mut out);
        out
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}
