//! Every metric the gateway exports, defined once with its help text.
//! Label values come from config names and fixed enums, never from request text.

use prometheus::{
    Encoder, GaugeVec, HistogramOpts, HistogramVec, IntCounterVec, IntGauge, IntGaugeVec, Opts,
    Registry, TextEncoder,
};

const PREFIX: &str = "reasoning_gateway";

/// Latency buckets (seconds) from sub-millisecond cache/proxy work to multi-minute reasoning.
const LATENCY_BUCKETS: &[f64] = &[
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
    120.0, 300.0, 600.0,
];

/// Token-count buckets, from a few tokens to very long reasoning chains.
const TOKEN_BUCKETS: &[f64] = &[
    0.0, 16.0, 64.0, 256.0, 512.0, 1024.0, 2048.0, 4096.0, 8192.0, 16384.0, 32768.0, 65536.0,
];
/// Step-count buckets.
const STEP_BUCKETS: &[f64] = &[0.0, 1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0];

/// The reasoning-length class a request falls into (label of the duration-by-length histogram).
pub fn reasoning_length_class(tokens: u64) -> &'static str {
    match tokens {
        0 => "0",
        1..=256 => "1-256",
        257..=1024 => "257-1024",
        1025..=4096 => "1025-4096",
        4097..=16384 => "4097-16384",
        _ => "16385+",
    }
}

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
    /// Client connections open on the public listener.
    pub client_connections: IntGauge,
    /// Client connections and requests refused by the listener's bounds, by reason.
    pub client_rejections_total: IntCounterVec,
    /// Admin requests refused by the admin listener's guard, by reason.
    pub admin_refusals_total: IntCounterVec,
    /// Open file descriptors (standard process-collector name), read at each scrape.
    process_open_fds: IntGauge,
    /// The soft open-file limit (standard process-collector name), read at each scrape.
    process_max_fds: IntGauge,
    /// Time to first answer token (the thinking time).
    pub time_to_first_answer_token_seconds: HistogramVec,
    /// The same TTFT under its OpenTelemetry GenAI name.
    pub gen_ai_server_time_to_first_token_seconds: HistogramVec,
    /// OpenTelemetry GenAI `gen_ai.client.token.usage`: input and output tokens per request.
    pub gen_ai_client_token_usage: HistogramVec,
    /// OpenTelemetry GenAI `gen_ai.server.request.duration`.
    pub gen_ai_server_request_duration_seconds: HistogramVec,
    /// Reasoning tokens per response.
    pub reasoning_tokens: HistogramVec,
    /// Answer tokens per response.
    pub answer_tokens: HistogramVec,
    /// Reasoning steps per response.
    pub reasoning_steps: HistogramVec,
    /// Self-corrections in reasoning.
    pub self_corrections_total: IntCounterVec,
    /// Verification checks run, by check and result.
    pub verifications_total: IntCounterVec,
    /// Verification checks failed, by check.
    pub verification_failures_total: IntCounterVec,
    /// Request duration by reasoning-length class: reasoning length against latency.
    pub request_duration_by_reasoning_length_seconds: HistogramVec,
    /// Gaps between tokens while reasoning longer than the route's `step_timeout`.
    pub step_timeouts_total: IntCounterVec,
    /// Streams the gateway ended itself, by reason (budget|verification).
    pub reasoning_aborts_total: IntCounterVec,
    /// Config reloads by result (ok|error) and trigger (admin|sighup|watch).
    pub config_reloads_total: IntCounterVec,
    /// Time spent in the gateway per request, upstream waits excluded.
    pub gateway_overhead_seconds: HistogramVec,
    /// Canary variants rolled back automatically.
    pub canary_rollbacks_total: IntCounterVec,
    /// Requests waiting for a slot in a pool with `max_inflight` (see [`Metrics::bounded_pool`]).
    pub upstream_queued_requests: IntGaugeVec,
    /// Time requests waited for a pool slot (only those that had to wait).
    pub upstream_queue_wait_seconds: HistogramVec,
    /// Requests refused a pool slot, by reason (queue_full, queue_timeout).
    pub upstream_rejections_total: IntCounterVec,
    /// Promotion steps taken by canary variants.
    pub canary_promotions_total: IntCounterVec,
    /// Each served variant's share of the route's weighted traffic now.
    pub canary_traffic_share: GaugeVec,
    /// Shadow requests by result (ok|error|skipped).
    pub shadow_requests_total: IntCounterVec,
    /// Shadow request duration.
    pub shadow_request_duration_seconds: HistogramVec,
    /// Verification checks the shadow's answers failed.
    pub shadow_verification_failures_total: IntCounterVec,
    /// The reasoning cache's metrics (defined in the `reasoning-cache` crate, same registry).
    pub cache: reasoning_cache::Metrics,
    /// Tenant headers ignored because the peer is not a trusted proxy (or, for the internal
    /// job header, because its secret did not match), by header name.
    pub tenant_headers_ignored_total: IntCounterVec,
    /// Async jobs finished, by result (succeeded|failed|cancelled).
    pub async_jobs_total: IntCounterVec,
    /// Async job callback attempts, by result (delivered|failed).
    pub async_job_callbacks_total: IntCounterVec,
    /// Async jobs refused for lack of room, by reason (store_full|tenant_quota|memory_full).
    pub async_job_rejections_total: IntCounterVec,
}

impl Metrics {
    /// Exports a bounded pool's admission series at 0 before anything waits or is refused, so
    /// `rate()` and alert rules see them from the start.
    pub fn bounded_pool(&self, upstream: &str) {
        self.upstream_queued_requests.with_label_values(&[upstream]);
        self.upstream_queue_wait_seconds
            .with_label_values(&[upstream]);
        for reason in ["queue_full", "queue_timeout"] {
            self.upstream_rejections_total
                .with_label_values(&[upstream, reason]);
        }
    }

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
        let int_gauge = |name: &str, help: &str, labels: &[&str]| {
            let g = IntGaugeVec::new(Opts::new(name, help).namespace(PREFIX), labels)
                .expect("metric definition is valid");
            registry
                .register(Box::new(g.clone()))
                .expect("metric is registered once");
            g
        };
        let gauge = |name: &str, help: &str, labels: &[&str]| {
            let g = GaugeVec::new(Opts::new(name, help).namespace(PREFIX), labels)
                .expect("metric definition is valid");
            registry
                .register(Box::new(g.clone()))
                .expect("metric is registered once");
            g
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
            "Requests answered by the gateway, by route, canary variant, upstream, API endpoint, HTTP status and outcome (how the response really ended: a stream cut after its 200 is upstream_error).",
            &["route", "variant", "upstream", "endpoint", "status", "outcome"],
        );
        let request_duration_seconds = histogram(
            "request_duration_seconds",
            "Time from receiving a request to sending the last response byte, by outcome.",
            &["route", "variant", "upstream", "stream", "outcome"],
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
            "Upstream failures: connect (refused or timed out), tls (handshake failed), local_resources (the gateway could not open a socket), no_healthy_endpoint, status_5xx, disconnect (closed mid-response), timeout, protocol (not HTTP).",
            &["upstream", "kind"],
        );
        let plain_gauge = |name: &str, help: &str| {
            let g = IntGauge::with_opts(Opts::new(name, help).namespace(PREFIX))
                .expect("metric definition is valid");
            registry
                .register(Box::new(g.clone()))
                .expect("metric is registered once");
            g
        };
        let inflight_requests =
            plain_gauge("inflight_requests", "Requests currently being handled.");
        let client_connections = plain_gauge(
            "client_connections",
            "Client connections open on the public listener (at most max_connections).",
        );
        let client_rejections_total = counter(
            "client_rejections_total",
            "Client connections or requests refused by the public listener's bounds: max_connections (503 at accept), header_timeout (no whole request header within client_header_timeout: closed), body_timeout (no whole body within client_body_timeout: 408).",
            &["reason"],
        );
        let admin_refusals_total = counter(
            "admin_refusals_total",
            "Requests refused by the admin listener: unauthorized (no or wrong admin token: 401), method (405), origin (an Origin header: 403), content_type (a form or text/plain body: 415), host (a Host that is not an IP or localhost: 403), not_found (404).",
            &["reason"],
        );
        // The standard process-collector names (no prefix), so existing fd dashboards and alerts
        // apply: clients and upstream connections each hold a descriptor.
        let process_gauge = |name: &str, help: &str| {
            let g = IntGauge::with_opts(Opts::new(name, help)).expect("metric definition is valid");
            registry
                .register(Box::new(g.clone()))
                .expect("metric is registered once");
            g
        };
        let process_open_fds =
            process_gauge("process_open_fds", "Number of open file descriptors.");
        let process_max_fds = process_gauge(
            "process_max_fds",
            "Maximum number of open file descriptors (the soft limit; raised to the hard limit at start-up).",
        );
        let rl = &["route", "upstream"];
        let time_to_first_answer_token_seconds = histogram(
            "time_to_first_answer_token_seconds",
            "Time from receiving a request to the first answer (not reasoning) text sent: the thinking time.",
            rl,
            LATENCY_BUCKETS,
        );
        let gen_ai_server_time_to_first_token_seconds = {
            let h = HistogramVec::new(
                HistogramOpts::new(
                    "gen_ai_server_time_to_first_token_seconds",
                    "OpenTelemetry GenAI gen_ai.server.time_to_first_token: time to the first response byte from the model server.",
                )
                .buckets(LATENCY_BUCKETS.to_vec()),
                &["route"],
            )
            .expect("metric definition is valid");
            registry
                .register(Box::new(h.clone()))
                .expect("metric is registered once");
            h
        };
        let gen_ai = |name: &str, help: &str, labels: &[&str], buckets: &[f64]| {
            let h = HistogramVec::new(
                HistogramOpts::new(name, help).buckets(buckets.to_vec()),
                labels,
            )
            .expect("metric definition is valid");
            registry
                .register(Box::new(h.clone()))
                .expect("metric is registered once");
            h
        };
        let gen_ai_client_token_usage = gen_ai(
            "gen_ai_client_token_usage",
            "OpenTelemetry GenAI gen_ai.client.token.usage: tokens per request by gen_ai_token_type (input|output), from upstream usage.",
            &["route", "gen_ai_token_type"],
            TOKEN_BUCKETS,
        );
        let gen_ai_server_request_duration_seconds = gen_ai(
            "gen_ai_server_request_duration_seconds",
            "OpenTelemetry GenAI gen_ai.server.request.duration: time from request to the last response byte.",
            &["route"],
            LATENCY_BUCKETS,
        );
        let reasoning_tokens = histogram(
            "reasoning_tokens",
            "Reasoning tokens per response (upstream usage when given, else counted by the gateway).",
            rl,
            TOKEN_BUCKETS,
        );
        let answer_tokens = histogram(
            "answer_tokens",
            "Answer tokens per response (completion tokens minus reasoning tokens).",
            rl,
            TOKEN_BUCKETS,
        );
        let reasoning_steps = histogram(
            "reasoning_steps",
            "Reasoning steps per response: paragraphs, numbered items and `Step N` lines.",
            rl,
            STEP_BUCKETS,
        );
        let self_corrections_total = counter(
            "self_corrections_total",
            "Self-correction markers (wait, actually, …) at sentence starts in reasoning.",
            rl,
        );
        let verifications_total = counter(
            "verifications_total",
            "Verification checks run on finished responses, by check and result (pass|fail).",
            &["route", "upstream", "check", "result"],
        );
        let verification_failures_total = counter(
            "verification_failures_total",
            "Verification checks that failed, by check.",
            &["route", "upstream", "check"],
        );
        let request_duration_by_reasoning_length_seconds = histogram(
            "request_duration_by_reasoning_length_seconds",
            "Request duration by reasoning-length class (reasoning tokens): how reasoning length drives latency.",
            &["route", "reasoning_length"],
            LATENCY_BUCKETS,
        );
        let step_timeouts_total = counter(
            "step_timeouts_total",
            "Gaps between tokens while reasoning longer than the route's step_timeout.",
            rl,
        );
        let reasoning_aborts_total = counter(
            "reasoning_aborts_total",
            "Streams the gateway ended itself: reasoning_budget_exceeded, verification_failed, step_timeout.",
            &["route", "upstream", "reason"],
        );
        let config_reloads_total = counter(
            "config_reloads_total",
            "Config reloads by result (ok: swapped in; error: invalid, the running config stayed) and trigger (admin, sighup, watch).",
            &["result", "trigger"],
        );
        let canary_rollbacks_total = counter(
            "canary_rollbacks_total",
            "Canary variants rolled back automatically (weight 0 until re-enabled on the admin API).",
            &["route", "variant"],
        );
        let upstream_queued_requests = int_gauge(
            "upstream_queued_requests",
            "Requests waiting for a slot in a pool with max_inflight (its queue).",
            &["upstream"],
        );
        let upstream_queue_wait_seconds = histogram(
            "upstream_queue_wait_seconds",
            "Time admitted requests waited for a pool slot (max_inflight), counting only those that had to wait.",
            &["upstream"],
            &[
                0.001, 0.005, 0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
            ],
        );
        let upstream_rejections_total = counter(
            "upstream_rejections_total",
            "Requests refused with 429 because a pool with max_inflight was full: queue_full (max_queue already waiting) or queue_timeout.",
            &["upstream", "reason"],
        );
        let canary_promotions_total = counter(
            "canary_promotions_total",
            "Promotion steps canary variants took (their rollback comparison with stable passed for the step's interval).",
            &["route", "variant"],
        );
        let canary_traffic_share = gauge(
            "canary_traffic_share",
            "Share of the route's weighted traffic each served variant gets now (configured weights or the promotion step; 0 when rolled back). Requests forcing a variant by header are not weighted.",
            &["route", "variant"],
        );
        let shadow_requests_total = counter(
            "shadow_requests_total",
            "Copies sent to shadow variants by result: ok, error, skipped (concurrency bound).",
            &["route", "variant", "result"],
        );
        let shadow_request_duration_seconds = histogram(
            "shadow_request_duration_seconds",
            "Duration of shadow requests (measured, never served).",
            &["route", "variant"],
            LATENCY_BUCKETS,
        );
        let shadow_verification_failures_total = counter(
            "shadow_verification_failures_total",
            "Verification checks failed by shadow answers, by check.",
            &["route", "variant", "check"],
        );
        let gateway_overhead_seconds = histogram(
            "gateway_overhead_seconds",
            "Time the gateway itself spent on a proxied request (intake, routing, parsing and rewriting the response), upstream waits excluded.",
            &["route"],
            &[0.00001, 0.000025, 0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.1],
        );
        let tenant_headers_ignored_total = counter(
            "tenant_headers_ignored_total",
            "Requests whose tenant header was ignored, by header: cache.tenant_header from a peer not in cache.trusted_proxies, or the gateway's internal job-tenant header without its secret. The tenant then comes from the request's credentials.",
            &["header"],
        );
        let async_jobs_total = counter(
            "async_jobs_total",
            "Async jobs finished, by result: succeeded, failed, cancelled.",
            &["result"],
        );
        let async_job_callbacks_total = counter(
            "async_job_callbacks_total",
            "Async job callback attempts, by result: delivered (2xx) or failed (retried with backoff).",
            &["result"],
        );
        let async_job_rejections_total = counter(
            "async_job_rejections_total",
            "Async jobs refused for lack of room, by reason: store_full (async_jobs.max_jobs), tenant_quota (max_jobs_per_tenant), memory_full (max_bytes; at submission or a result that did not fit).",
            &["reason"],
        );
        for reason in ["store_full", "tenant_quota", "memory_full"] {
            async_job_rejections_total.with_label_values(&[reason]);
        }
        // Registering fixed, valid definitions once on a fresh registry cannot fail.
        let cache = reasoning_cache::Metrics::register(&registry, PREFIX)
            .expect("cache metrics are registered once");
        Metrics {
            cache,
            registry,
            async_jobs_total,
            async_job_callbacks_total,
            async_job_rejections_total,
            tenant_headers_ignored_total,
            gateway_overhead_seconds,
            config_reloads_total,
            canary_rollbacks_total,
            canary_promotions_total,
            canary_traffic_share,
            upstream_queued_requests,
            upstream_queue_wait_seconds,
            upstream_rejections_total,
            shadow_requests_total,
            shadow_request_duration_seconds,
            shadow_verification_failures_total,
            step_timeouts_total,
            reasoning_aborts_total,
            time_to_first_answer_token_seconds,
            gen_ai_server_time_to_first_token_seconds,
            gen_ai_client_token_usage,
            gen_ai_server_request_duration_seconds,
            reasoning_tokens,
            answer_tokens,
            reasoning_steps,
            self_corrections_total,
            verifications_total,
            verification_failures_total,
            request_duration_by_reasoning_length_seconds,
            requests_total,
            request_duration_seconds,
            time_to_first_token_seconds,
            upstream_errors_total,
            inflight_requests,
            client_connections,
            client_rejections_total,
            admin_refusals_total,
            process_open_fds,
            process_max_fds,
        }
    }

    /// The Prometheus text exposition of every metric.
    pub fn render(&self) -> Vec<u8> {
        if let Some(n) = crate::fdlimit::open_count() {
            self.process_open_fds.set(n as i64);
        }
        if let Ok((soft, _)) = crate::fdlimit::current() {
            self.process_max_fds.set(soft.min(i64::MAX as u64) as i64);
        }
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
