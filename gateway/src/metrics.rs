//! Every metric the gateway exports, defined once with its help text.
//! Label values come from config names and fixed enums, never from request text.

use std::marker::PhantomData;

use prometheus::core::{Collector, MetricVec, MetricVecBuilder};
use prometheus::{
    Encoder, GaugeVec, HistogramOpts, HistogramVec, IntCounterVec, IntGauge, IntGaugeVec, Opts,
    Registry, TextEncoder,
};

pub mod genai;
pub mod labels;
pub mod openmetrics;

use crate::admin::guard::Reason as AdminRefusal;
use crate::jobs::quota::Rejection;
use crate::upstream::Refused;
use labels::{
    Abort, CallbackResult, ClientRejection, Durations, FailedCheck, JobResult, LabelSet, Reload,
    Requests, Route, RouteReasoningLength, RouteUpstream, RouteVariant, Shadow, ShadowFailedCheck,
    SpanDrop, SpanExport, TenantHeader, Upstream, UpstreamError, UpstreamRejection, Verification,
};
// Fleet mode (issue 26).
use labels::{SharedBackend, SharedOp};
// Budget forcing (issue 30).
use labels::{Budget, ForcedVerification};

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

/// A metric family whose series are selected by one label set `L` (see [`labels`]): only an
/// `L` (with any borrows) selects a series, so a swapped or missing label does not compile.
pub struct Family<V, L> {
    vec: V,
    labels: PhantomData<fn(&L)>,
}

/// Counters keyed by `L`.
pub type CounterFamily<L> = Family<IntCounterVec, L>;
/// Histograms keyed by `L`.
pub type HistogramFamily<L> = Family<HistogramVec, L>;
/// Float gauges keyed by `L`.
pub type GaugeFamily<L> = Family<GaugeVec, L>;
/// Integer gauges keyed by `L`.
pub type IntGaugeFamily<L> = Family<IntGaugeVec, L>;

impl<B: MetricVecBuilder, L> Family<MetricVec<B>, L> {
    /// The series of `labels` (created at zero on first use).
    pub fn with<S: LabelSet<Key = L>>(&self, labels: &S) -> B::M {
        labels.with_values(|values| self.vec.with_label_values(values))
    }
}

/// Registers each metric kind on one registry, label names from the label set. Definitions are
/// constants and each is registered once, so a failure is a bug caught at start-up.
struct Registrar<'a>(&'a Registry);

impl Registrar<'_> {
    fn add<C: Collector + Clone + 'static>(&self, c: Result<C, prometheus::Error>) -> C {
        let c = c.expect("metric definition is valid");
        self.0
            .register(Box::new(c.clone()))
            .expect("metric is registered once");
        c
    }

    fn family<V, L>(&self, vec: Result<V, prometheus::Error>) -> Family<V, L>
    where
        V: Collector + Clone + 'static,
    {
        Family {
            vec: self.add(vec),
            labels: PhantomData,
        }
    }

    fn counter<L: LabelSet<Key = L>>(&self, name: &str, help: &str) -> CounterFamily<L> {
        self.family(IntCounterVec::new(
            Opts::new(name, help).namespace(PREFIX),
            L::NAMES,
        ))
    }

    fn gauge<L: LabelSet<Key = L>>(&self, name: &str, help: &str) -> GaugeFamily<L> {
        self.family(GaugeVec::new(
            Opts::new(name, help).namespace(PREFIX),
            L::NAMES,
        ))
    }

    fn int_gauge<L: LabelSet<Key = L>>(&self, name: &str, help: &str) -> IntGaugeFamily<L> {
        self.family(IntGaugeVec::new(
            Opts::new(name, help).namespace(PREFIX),
            L::NAMES,
        ))
    }

    fn histogram<L: LabelSet<Key = L>>(
        &self,
        name: &str,
        help: &str,
        buckets: &[f64],
    ) -> HistogramFamily<L> {
        let opts = HistogramOpts::new(name, help).namespace(PREFIX);
        self.family(HistogramVec::new(opts.buckets(buckets.to_vec()), L::NAMES))
    }

    /// An OpenTelemetry GenAI histogram: its own name, without the gateway's prefix.
    fn gen_ai<L: LabelSet<Key = L>>(
        &self,
        name: &str,
        help: &str,
        buckets: &[f64],
    ) -> HistogramFamily<L> {
        let opts = HistogramOpts::new(name, help).buckets(buckets.to_vec());
        self.family(HistogramVec::new(opts, L::NAMES))
    }

    /// The GenAI histograms in the chosen label shape.
    fn gen_ai_families(&self, attributes: bool) -> genai::GenAi {
        const TTFT: (&str, &str) = ("gen_ai_server_time_to_first_token_seconds", "OpenTelemetry GenAI gen_ai.server.time_to_first_token: time to the first response byte from the model server.");
        const USAGE: (&str, &str) = ("gen_ai_client_token_usage", "OpenTelemetry GenAI gen_ai.client.token.usage: tokens per request by gen_ai_token_type (input|output), from upstream usage.");
        const DURATION: (&str, &str) = ("gen_ai_server_request_duration_seconds", "OpenTelemetry GenAI gen_ai.server.request.duration: time from request to the last response byte.");
        if attributes {
            genai::GenAi::Attributes {
                ttft: self.gen_ai(TTFT.0, TTFT.1, LATENCY_BUCKETS),
                usage: self.gen_ai(USAGE.0, USAGE.1, TOKEN_BUCKETS),
                duration: self.gen_ai(DURATION.0, DURATION.1, LATENCY_BUCKETS),
                tpot: self.gen_ai(
                    "gen_ai_server_time_per_output_token_seconds",
                    "OpenTelemetry GenAI gen_ai.server.time_per_output_token: decode time per output token after the first ((duration - TTFT) / (output tokens - 1)).",
                    genai::TPOT_BUCKETS,
                ),
            }
        } else {
            genai::GenAi::Route {
                ttft: self.gen_ai(TTFT.0, TTFT.1, LATENCY_BUCKETS),
                usage: self.gen_ai(USAGE.0, USAGE.1, TOKEN_BUCKETS),
                duration: self.gen_ai(DURATION.0, DURATION.1, LATENCY_BUCKETS),
            }
        }
    }

    fn plain_gauge(&self, name: &str, help: &str) -> IntGauge {
        self.add(IntGauge::with_opts(Opts::new(name, help).namespace(PREFIX)))
    }

    /// The standard process-collector names (no prefix), so existing fd dashboards and alerts
    /// apply: clients and upstream connections each hold a descriptor.
    fn process_gauge(&self, name: &str, help: &str) -> IntGauge {
        self.add(IntGauge::with_opts(Opts::new(name, help)))
    }
}

/// Queue-wait buckets (seconds).
const QUEUE_BUCKETS: &[f64] = &[
    0.001, 0.005, 0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
];

/// Gateway-overhead buckets (seconds): tens of microseconds up.
const OVERHEAD_BUCKETS: &[f64] = &[
    0.00001, 0.000025, 0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.1,
];

/// The gateway's metrics and the registry they live in.
pub struct Metrics {
    registry: Registry,
    /// Requests answered, by route, upstream, endpoint kind and HTTP status.
    pub requests_total: CounterFamily<Requests<'static>>,
    /// Whole-request latency.
    pub request_duration_seconds: HistogramFamily<Durations<'static>>,
    /// Time from request start to the first response byte from upstream.
    pub time_to_first_token_seconds: HistogramFamily<RouteUpstream<'static>>,
    /// Upstream failures by kind.
    pub upstream_errors_total: CounterFamily<UpstreamError<'static>>,
    /// Requests being handled right now.
    pub inflight_requests: IntGauge,
    /// Client connections open on the public listener.
    pub client_connections: IntGauge,
    /// Client connections and requests refused by the listener's bounds, by reason.
    pub client_rejections_total: CounterFamily<ClientRejection>,
    /// Admin requests refused by the admin listener's guard, by reason.
    pub admin_refusals_total: CounterFamily<AdminRefusal>,
    /// Open file descriptors (standard process-collector name), read at each scrape.
    process_open_fds: IntGauge,
    /// The soft open-file limit (standard process-collector name), read at each scrape.
    process_max_fds: IntGauge,
    /// Time to first answer token (the thinking time).
    pub time_to_first_answer_token_seconds: HistogramFamily<RouteUpstream<'static>>,
    /// The OpenTelemetry GenAI histograms (`gen_ai_server_time_to_first_token_seconds`,
    /// `gen_ai_client_token_usage`, `gen_ai_server_request_duration_seconds`, and with the
    /// attributes `gen_ai_server_time_per_output_token_seconds`).
    pub gen_ai: genai::GenAi,
    /// Reasoning tokens per response.
    pub reasoning_tokens: HistogramFamily<RouteUpstream<'static>>,
    /// Answer tokens per response.
    pub answer_tokens: HistogramFamily<RouteUpstream<'static>>,
    /// Reasoning steps per response.
    pub reasoning_steps: HistogramFamily<RouteUpstream<'static>>,
    /// Self-corrections in reasoning.
    pub self_corrections_total: CounterFamily<RouteUpstream<'static>>,
    /// Verification checks run, by check and result.
    pub verifications_total: CounterFamily<Verification<'static>>,
    /// Verification checks failed, by check.
    pub verification_failures_total: CounterFamily<FailedCheck<'static>>,
    /// Request duration by reasoning-length class: reasoning length against latency.
    pub request_duration_by_reasoning_length_seconds:
        HistogramFamily<RouteReasoningLength<'static>>,
    /// Gaps between tokens while reasoning longer than the route's `step_timeout`.
    pub step_timeouts_total: CounterFamily<RouteUpstream<'static>>,
    /// Streams the gateway ended itself, by reason (budget|verification).
    pub reasoning_aborts_total: CounterFamily<Abort<'static>>,
    /// What reasoning budgets did: forced answers, extensions, errors.
    pub reasoning_budget_actions_total: CounterFamily<Budget<'static>>,
    /// Verification checks of forced answers, by check and result.
    pub reasoning_budget_forced_verifications_total: CounterFamily<ForcedVerification<'static>>,
    /// Config reloads by result (ok|error) and trigger (admin|sighup|watch).
    pub config_reloads_total: CounterFamily<Reload>,
    /// Time spent in the gateway per request, upstream waits excluded.
    pub gateway_overhead_seconds: HistogramFamily<Route<'static>>,
    /// Canary variants rolled back automatically.
    pub canary_rollbacks_total: CounterFamily<RouteVariant<'static>>,
    /// Requests waiting for a slot in a pool with `max_inflight` (see [`Metrics::bounded_pool`]).
    pub upstream_queued_requests: IntGaugeFamily<Upstream<'static>>,
    /// Time requests waited for a pool slot (only those that had to wait).
    pub upstream_queue_wait_seconds: HistogramFamily<Upstream<'static>>,
    /// Requests refused a pool slot, by reason (queue_full, queue_timeout).
    pub upstream_rejections_total: CounterFamily<UpstreamRejection<'static>>,
    /// Promotion steps taken by canary variants.
    pub canary_promotions_total: CounterFamily<RouteVariant<'static>>,
    /// Each served variant's share of the route's weighted traffic now.
    pub canary_traffic_share: GaugeFamily<RouteVariant<'static>>,
    /// Shadow requests by result (ok|error|skipped).
    pub shadow_requests_total: CounterFamily<Shadow<'static>>,
    /// Shadow request duration.
    pub shadow_request_duration_seconds: HistogramFamily<RouteVariant<'static>>,
    /// Verification checks the shadow's answers failed.
    pub shadow_verification_failures_total: CounterFamily<ShadowFailedCheck<'static>>,
    /// The reasoning cache's metrics (defined in the `reasoning-cache` crate, same registry).
    pub cache: reasoning_cache::Metrics,
    /// Tenant headers ignored because the peer is not a trusted proxy (or, for the internal
    /// job header, because its secret did not match), by header name.
    pub tenant_headers_ignored_total: CounterFamily<TenantHeader<'static>>,
    /// Async jobs finished, by result (succeeded|failed|cancelled).
    pub async_jobs_total: CounterFamily<JobResult>,
    /// Async job callback attempts, by result (delivered|failed).
    pub async_job_callbacks_total: CounterFamily<CallbackResult>,
    /// Async jobs refused for lack of room, by reason (store_full|tenant_quota|memory_full).
    pub async_job_rejections_total: CounterFamily<Rejection>,
    /// Spans the OTLP collector accepted.
    pub otel_spans_exported_total: CounterFamily<SpanExport>,
    /// Spans dropped instead of exported, by reason (queue_full|export_failed).
    pub otel_spans_dropped_total: CounterFamily<SpanDrop>,
    /// 1 while this replica reaches the fleet's Redis, 0 while it goes on alone (only in fleet
    /// mode: absent when `shared` is not configured).
    pub shared_state_up: IntGaugeFamily<SharedBackend>,
    /// Redis commands of fleet mode that failed or took longer than `shared.timeout`, by what
    /// they were for.
    pub shared_state_errors_total: CounterFamily<SharedOp>,
    /// Trace ids of sampled requests on the latency histograms' buckets (OpenMetrics only).
    pub exemplars: openmetrics::Exemplars,
}

impl Metrics {
    /// Keeps `trace_id` as the exemplar of the latency-bucket `value` falls in, on the series
    /// of `family` (a histogram with [`LATENCY_BUCKETS`], its name without the prefix).
    pub fn latency_exemplar<S: LabelSet>(
        &self,
        family: &str,
        labels: &S,
        value: f64,
        trace_id: String,
    ) {
        let name = format!("{PREFIX}_{family}");
        labels.with_values(|values| {
            let pairs: Vec<(&str, &str)> = S::NAMES
                .iter()
                .copied()
                .zip(values.iter().copied())
                .collect();
            self.exemplars
                .record(&name, &pairs, LATENCY_BUCKETS, value, trace_id);
        });
    }

    /// The OpenMetrics exposition of every metric, exemplars included.
    pub fn render_openmetrics(&self) -> Vec<u8> {
        self.refresh_process_gauges();
        openmetrics::encode(&self.registry.gather(), &self.exemplars).into_bytes()
    }

    fn refresh_process_gauges(&self) {
        if let Some(n) = crate::fdlimit::open_count() {
            self.process_open_fds.set(n as i64);
        }
        if let Ok((soft, _)) = crate::fdlimit::current() {
            self.process_max_fds.set(soft.min(i64::MAX as u64) as i64);
        }
    }

    /// The counters the OTLP exporter keeps, at zero from the start.
    pub fn otlp_counters(
        &self,
        config: &crate::config::OtlpConfig,
    ) -> crate::telemetry::otlp::ExportCounters {
        let protocol = match config.protocol {
            crate::config::OtlpProtocol::HttpProtobuf => SpanExport::HttpProtobuf,
            crate::config::OtlpProtocol::Grpc => SpanExport::Grpc,
        };
        crate::telemetry::otlp::ExportCounters {
            exported: self.otel_spans_exported_total.with(&protocol),
            dropped_queue_full: self.otel_spans_dropped_total.with(&SpanDrop::QueueFull),
            dropped_export_failed: self.otel_spans_dropped_total.with(&SpanDrop::ExportFailed),
        }
    }

    /// Exports a bounded pool's admission series at 0 before anything waits or is refused, so
    /// `rate()` and alert rules see them from the start.
    pub fn bounded_pool(&self, upstream: &str) {
        self.upstream_queued_requests.with(&Upstream { upstream });
        self.upstream_queue_wait_seconds
            .with(&Upstream { upstream });
        for reason in [Refused::QueueFull, Refused::Timeout] {
            self.upstream_rejections_total
                .with(&UpstreamRejection { upstream, reason });
        }
    }

    /// Creates and registers every metric, the GenAI histograms labelled by `route` only.
    pub fn new() -> Self {
        Metrics::with_genai_attributes(false)
    }

    /// Creates and registers every metric; `genai_attributes`: the GenAI histograms carry the
    /// GenAI attributes (`telemetry.genai_metrics`).
    pub fn with_genai_attributes(genai_attributes: bool) -> Self {
        let registry = Registry::new();
        let r = Registrar(&registry);
        let tenant_headers_ignored_total = r.counter(
            "tenant_headers_ignored_total",
            "Requests whose tenant header was ignored, by header: cache.tenant_header from a peer not in cache.trusted_proxies, or the gateway's internal job-tenant header without its secret. The tenant then comes from the request's credentials.",
        );
        // Registering fixed, valid definitions once on a fresh registry cannot fail.
        let cache = reasoning_cache::Metrics::register(&registry, PREFIX)
            .expect("cache metrics are registered once");
        let async_job_rejections_total = r.counter(
            "async_job_rejections_total",
            "Async jobs refused for lack of room, by reason: store_full (async_jobs.max_jobs), tenant_quota (max_jobs_per_tenant), memory_full (max_bytes; at submission or a result that did not fit).",
        );
        for reason in [
            Rejection::StoreFull,
            Rejection::TenantQuota,
            Rejection::MemoryFull,
        ] {
            async_job_rejections_total.with(&reason);
        }
        Metrics {
            requests_total: r.counter("requests_total", "Requests answered by the gateway, by route, canary variant, upstream, API endpoint, HTTP status, outcome (how the response really ended: a stream cut after its 200 is upstream_error) and client API (chat, completions, responses, messages)."),
            request_duration_seconds: r.histogram(
                "request_duration_seconds",
                "Time from receiving a request to sending the last response byte, by outcome.",
                LATENCY_BUCKETS,
            ),
            time_to_first_token_seconds: r.histogram(
                "time_to_first_token_seconds",
                "Time from receiving a request to the first response body byte from the upstream (reasoning or answer).",
                LATENCY_BUCKETS,
            ),
            upstream_errors_total: r.counter("upstream_errors_total", "Upstream failures: connect (refused or timed out), tls (handshake failed), local_resources (the gateway could not open a socket), no_healthy_endpoint, status_5xx, disconnect (closed mid-response), timeout, protocol (not HTTP)."),
            inflight_requests: r.plain_gauge("inflight_requests", "Requests currently being handled."),
            client_connections: r.plain_gauge("client_connections", "Client connections open on the public listener (at most max_connections)."),
            client_rejections_total: r.counter("client_rejections_total", "Client connections or requests refused by the public listener's bounds: max_connections (503 at accept), header_timeout (no whole request header within client_header_timeout: closed), body_timeout (no whole body within client_body_timeout: 408)."),
            admin_refusals_total: r.counter("admin_refusals_total", "Requests refused by the admin listener: unauthorized (no or wrong admin token: 401), method (405), origin (an Origin header: 403), content_type (a form or text/plain body: 415), host (a Host that is not an IP or localhost: 403), not_found (404)."),
            process_open_fds: r.process_gauge("process_open_fds", "Number of open file descriptors."),
            process_max_fds: r.process_gauge("process_max_fds", "Maximum number of open file descriptors (the soft limit; raised to the hard limit at start-up)."),
            time_to_first_answer_token_seconds: r.histogram(
                "time_to_first_answer_token_seconds",
                "Time from receiving a request to the first answer (not reasoning) text sent: the thinking time.",
                LATENCY_BUCKETS,
            ),
            gen_ai: r.gen_ai_families(genai_attributes),
            reasoning_tokens: r.histogram("reasoning_tokens", "Reasoning tokens per response (upstream usage when given, else counted by the gateway).", TOKEN_BUCKETS),
            answer_tokens: r.histogram("answer_tokens", "Answer tokens per response (completion tokens minus reasoning tokens).", TOKEN_BUCKETS),
            reasoning_steps: r.histogram("reasoning_steps", "Reasoning steps per response: paragraphs, numbered items and `Step N` lines.", STEP_BUCKETS),
            self_corrections_total: r.counter("self_corrections_total", "Self-correction markers (wait, actually, …) at sentence starts in reasoning."),
            verifications_total: r.counter("verifications_total", "Verification checks run on finished responses, by check and result (pass|fail)."),
            verification_failures_total: r.counter(
                "verification_failures_total",
                "Verification checks that failed, by check.",
            ),
            request_duration_by_reasoning_length_seconds: r.histogram(
                "request_duration_by_reasoning_length_seconds",
                "Request duration by reasoning-length class (reasoning tokens): how reasoning length drives latency.",
                LATENCY_BUCKETS,
            ),
            step_timeouts_total: r.counter("step_timeouts_total", "Gaps between tokens while reasoning longer than the route's step_timeout."),
            reasoning_aborts_total: r.counter("reasoning_aborts_total", "Streams the gateway ended itself: reasoning_budget_exceeded, verification_failed, step_timeout."),
            reasoning_budget_actions_total: r.counter("reasoning_budget_actions_total", "What a route's reasoning budget did: forced_answer (reasoning closed at the budget, the model answered), extended (an early end of reasoning replaced, counted per extension), error (the stream ended with an error)."),
            reasoning_budget_forced_verifications_total: r.counter("reasoning_budget_forced_verifications_total", "Verification checks run on answers forced at the reasoning budget, by check and result (pass|fail): how good forced answers are."),
            config_reloads_total: r.counter("config_reloads_total", "Config reloads by result (ok: swapped in; error: invalid, the running config stayed) and trigger (admin, sighup, watch)."),
            canary_rollbacks_total: r.counter("canary_rollbacks_total", "Canary variants rolled back automatically (weight 0 until re-enabled on the admin API)."),
            upstream_queued_requests: r.int_gauge(
                "upstream_queued_requests",
                "Requests waiting for a slot in a pool with max_inflight (its queue).",
            ),
            upstream_queue_wait_seconds: r.histogram(
                "upstream_queue_wait_seconds",
                "Time admitted requests waited for a pool slot (max_inflight), counting only those that had to wait.",
                QUEUE_BUCKETS,
            ),
            upstream_rejections_total: r.counter(
                "upstream_rejections_total",
                "Requests refused with 429 because a pool with max_inflight was full: queue_full (max_queue already waiting) or queue_timeout.",
            ),
            canary_promotions_total: r.counter("canary_promotions_total", "Promotion steps canary variants took (their rollback comparison with stable passed for the step's interval)."),
            canary_traffic_share: r.gauge("canary_traffic_share", "Share of the route's weighted traffic each served variant gets now (configured weights or the promotion step; 0 when rolled back). Requests forcing a variant by header are not weighted."),
            shadow_requests_total: r.counter("shadow_requests_total", "Copies sent to shadow variants by result: ok, error, skipped (concurrency bound)."),
            shadow_request_duration_seconds: r.histogram(
                "shadow_request_duration_seconds",
                "Duration of shadow requests (measured, never served).",
                LATENCY_BUCKETS,
            ),
            shadow_verification_failures_total: r.counter(
                "shadow_verification_failures_total",
                "Verification checks failed by shadow answers, by check.",
            ),
            gateway_overhead_seconds: r.histogram(
                "gateway_overhead_seconds",
                "Time the gateway itself spent on a proxied request (intake, routing, parsing and rewriting the response), upstream waits excluded.",
                OVERHEAD_BUCKETS,
            ),
            async_jobs_total: r.counter("async_jobs_total", "Async jobs finished, by result: succeeded, failed, cancelled."),
            async_job_callbacks_total: r.counter(
                "async_job_callbacks_total",
                "Async job callback attempts, by result: delivered (2xx) or failed (retried with backoff).",
            ),
            async_job_rejections_total,
            tenant_headers_ignored_total,
            otel_spans_exported_total: r.counter("otel_spans_exported_total", "Spans the OTLP collector accepted (telemetry.otlp), by protocol."),
            exemplars: openmetrics::Exemplars::default(),
            shared_state_up: r.int_gauge("shared_state_up", "1 while this replica reaches the fleet's Redis (shared), 0 while it serves alone: local cache only, local canary windows, async submissions refused. Only in fleet mode."),
            shared_state_errors_total: r.counter("shared_state_errors_total", "Redis commands of fleet mode that failed or outlasted shared.timeout, by op: ping, cache, cache_sync, canary, jobs. The request they served went on without them."),
            otel_spans_dropped_total: r.counter("otel_spans_dropped_total", "Spans dropped instead of exported (telemetry.otlp): queue_full (the collector is slower than the traffic; max_queue spans were waiting) or export_failed (the collector refused, was unreachable or did not answer within the timeout). Requests never wait for the exporter."),
            cache,
            registry,
        }
    }
    /// The Prometheus text exposition of every metric.
    pub fn render(&self) -> Vec<u8> {
        self.refresh_process_gauges();
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

#[cfg(test)]
mod tests {
    use super::*;

    /// A family's registered name and label names, checked against the published ones (those
    /// the registrations spelled out before the label sets: dashboards and alerts use them).
    fn check<V: Collector, L>(family: &Family<V, L>, name: &str, labels: &[&str]) {
        let desc = &family.vec.desc()[0];
        assert_eq!(desc.fq_name, name);
        assert_eq!(desc.variable_labels, labels, "{name}");
    }

    #[test]
    fn families_keep_their_names_and_label_names() {
        let m = Metrics::new();
        let ru = ["route", "upstream"];
        let rv = ["route", "variant"];
        let p = |s: &str| format!("{PREFIX}_{s}");
        check(
            &m.requests_total,
            &p("requests_total"),
            &[
                "route", "variant", "upstream", "endpoint", "status", "outcome", "api",
            ],
        );
        check(
            &m.request_duration_seconds,
            &p("request_duration_seconds"),
            &["route", "variant", "upstream", "stream", "outcome"],
        );
        check(
            &m.time_to_first_token_seconds,
            &p("time_to_first_token_seconds"),
            &ru,
        );
        check(
            &m.upstream_errors_total,
            &p("upstream_errors_total"),
            &["upstream", "kind"],
        );
        check(
            &m.client_rejections_total,
            &p("client_rejections_total"),
            &["reason"],
        );
        check(
            &m.admin_refusals_total,
            &p("admin_refusals_total"),
            &["reason"],
        );
        check(
            &m.time_to_first_answer_token_seconds,
            &p("time_to_first_answer_token_seconds"),
            &ru,
        );
        let genai::GenAi::Route {
            ttft,
            usage,
            duration,
        } = &m.gen_ai
        else {
            panic!("route-only GenAI histograms by default");
        };
        check(
            ttft,
            "gen_ai_server_time_to_first_token_seconds",
            &["route"],
        );
        check(
            usage,
            "gen_ai_client_token_usage",
            &["route", "gen_ai_token_type"],
        );
        check(
            duration,
            "gen_ai_server_request_duration_seconds",
            &["route"],
        );
        let with = Metrics::with_genai_attributes(true);
        let genai::GenAi::Attributes {
            ttft,
            usage,
            duration,
            tpot,
        } = &with.gen_ai
        else {
            panic!("attributes asked for");
        };
        let attrs = [
            "route",
            "gen_ai_operation_name",
            "gen_ai_provider_name",
            "gen_ai_request_model",
            "error_type",
        ];
        check(ttft, "gen_ai_server_time_to_first_token_seconds", &attrs);
        check(duration, "gen_ai_server_request_duration_seconds", &attrs);
        check(tpot, "gen_ai_server_time_per_output_token_seconds", &attrs);
        let mut usage_labels = attrs.to_vec();
        usage_labels.push("gen_ai_token_type");
        check(usage, "gen_ai_client_token_usage", &usage_labels);
        check(&m.reasoning_tokens, &p("reasoning_tokens"), &ru);
        check(&m.answer_tokens, &p("answer_tokens"), &ru);
        check(&m.reasoning_steps, &p("reasoning_steps"), &ru);
        check(&m.self_corrections_total, &p("self_corrections_total"), &ru);
        check(
            &m.verifications_total,
            &p("verifications_total"),
            &["route", "upstream", "check", "result"],
        );
        check(
            &m.verification_failures_total,
            &p("verification_failures_total"),
            &["route", "upstream", "check"],
        );
        check(
            &m.request_duration_by_reasoning_length_seconds,
            &p("request_duration_by_reasoning_length_seconds"),
            &["route", "reasoning_length"],
        );
        check(&m.step_timeouts_total, &p("step_timeouts_total"), &ru);
        check(
            &m.reasoning_aborts_total,
            &p("reasoning_aborts_total"),
            &["route", "upstream", "reason"],
        );
        check(
            &m.reasoning_budget_actions_total,
            &p("reasoning_budget_actions_total"),
            &["route", "action"],
        );
        check(
            &m.reasoning_budget_forced_verifications_total,
            &p("reasoning_budget_forced_verifications_total"),
            &["route", "check", "result"],
        );
        check(
            &m.config_reloads_total,
            &p("config_reloads_total"),
            &["result", "trigger"],
        );
        check(
            &m.gateway_overhead_seconds,
            &p("gateway_overhead_seconds"),
            &["route"],
        );
        check(&m.canary_rollbacks_total, &p("canary_rollbacks_total"), &rv);
        check(
            &m.upstream_queued_requests,
            &p("upstream_queued_requests"),
            &["upstream"],
        );
        check(
            &m.upstream_queue_wait_seconds,
            &p("upstream_queue_wait_seconds"),
            &["upstream"],
        );
        check(
            &m.upstream_rejections_total,
            &p("upstream_rejections_total"),
            &["upstream", "reason"],
        );
        check(
            &m.canary_promotions_total,
            &p("canary_promotions_total"),
            &rv,
        );
        check(&m.canary_traffic_share, &p("canary_traffic_share"), &rv);
        check(
            &m.shadow_requests_total,
            &p("shadow_requests_total"),
            &["route", "variant", "result"],
        );
        check(
            &m.shadow_request_duration_seconds,
            &p("shadow_request_duration_seconds"),
            &rv,
        );
        check(
            &m.shadow_verification_failures_total,
            &p("shadow_verification_failures_total"),
            &["route", "variant", "check"],
        );
        check(&m.async_jobs_total, &p("async_jobs_total"), &["result"]);
        check(
            &m.async_job_callbacks_total,
            &p("async_job_callbacks_total"),
            &["result"],
        );
        check(
            &m.async_job_rejections_total,
            &p("async_job_rejections_total"),
            &["reason"],
        );
        check(
            &m.otel_spans_exported_total,
            &p("otel_spans_exported_total"),
            &["protocol"],
        );
        check(
            &m.otel_spans_dropped_total,
            &p("otel_spans_dropped_total"),
            &["reason"],
        );
        check(&m.shared_state_up, &p("shared_state_up"), &["backend"]);
        check(
            &m.shared_state_errors_total,
            &p("shared_state_errors_total"),
            &["op"],
        );
    }
}
