//! The YAML file as written by users: serde types with `deny_unknown_fields`, no validation.
//! [`super::validate`] turns them into the runtime [`super::Config`].

use serde::Deserialize;

/// The whole gateway configuration file.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawConfig {
    /// Address of the OpenAI-compatible listener, e.g. `127.0.0.1:8080`.
    pub listen: Option<String>,
    /// Address of the admin listener (`/metrics`, `/healthz`, `/readyz`, `/admin/*`).
    pub admin_listen: Option<String>,
    /// Environment variable holding the admin token: admin endpoints then need
    /// `Authorization: Bearer <token>`. A non-loopback `admin_listen` needs a token.
    pub admin_token_env: Option<String>,
    /// File holding the admin token instead (one trailing newline ignored; reread on every
    /// reload, so a rotated token needs no restart).
    pub admin_token_file: Option<String>,
    /// `/metrics` answers without the admin token (default true; `false` needs a token).
    pub admin_public_metrics: Option<bool>,
    /// Largest accepted request body, in bytes (default 16 MiB). Larger bodies get 413.
    pub max_body_bytes: Option<u64>,
    /// Open client connections on the public listener at most (default 8192); past it a new
    /// connection is answered 503 `too_many_connections` and closed.
    pub max_connections: Option<usize>,
    /// Longest wait for a whole request header, and for the next one on a kept-alive
    /// connection (default `60s`); a late header closes the connection (slow-loris).
    pub client_header_timeout: Option<String>,
    /// Longest time to receive a whole request body (default `60s`); past it: 408.
    pub client_body_timeout: Option<String>,
    /// Worker threads of the proxy (default: the number of CPUs).
    pub threads: Option<usize>,
    /// On SIGTERM, how long requests in flight may take to finish before the gateway exits
    /// anyway (default 30s; `0s`: exit at once).
    pub drain_timeout: Option<String>,
    /// How often endpoint host names are resolved again; a name whose addresses no longer
    /// include the one in use reloads the config (default 30s; `0s`: only when loaded).
    pub dns_refresh: Option<String>,
    /// The bundled mistral.rs engine, served as upstream `engine`.
    pub engine: Option<RawEngine>,
    /// Process-wide reasoning-cache settings (embedding model, snapshots, tenancy).
    pub cache: Option<RawCacheSettings>,
    /// Async jobs (`/v1/async/...`): storage, limits, callbacks.
    pub async_jobs: Option<RawAsyncJobs>,
    /// OpenTelemetry trace export and the GenAI metric names (both off by default).
    pub telemetry: Option<RawTelemetry>,
    /// Fleet mode: the cache, canary verdicts and async jobs shared by every replica through
    /// Redis (off when absent). Read at start-up only.
    pub shared: Option<RawShared>,
    /// Named pools of OpenAI-compatible backends.
    #[serde(default)]
    pub upstreams: Vec<RawUpstream>,
    /// Model name → upstream routes, first match wins.
    #[serde(default)]
    pub routes: Vec<RawRoute>,
}

/// The bundled engine section.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawEngine {
    /// Local directory holding the GGUF file (never a hub id).
    pub model_dir: String,
    /// File name of the GGUF inside `model_dir`.
    pub gguf: String,
    /// The model name clients use and responses report.
    pub served_model_name: String,
    /// Loopback address the engine listens on (default: an ephemeral port on 127.0.0.1).
    pub listen: Option<String>,
    /// Most sequences decoded at once (default 8).
    pub max_seqs: Option<usize>,
    /// Requests in flight to the engine at most, as for an upstream pool (default: no limit;
    /// past `max_seqs` the engine queues them itself, without bound).
    pub max_inflight: Option<usize>,
    /// Requests waiting for a slot at most, beyond `max_inflight` (default 100; 0 = none wait).
    pub max_queue: Option<usize>,
    /// Longest wait for a slot (default `30s`).
    pub queue_timeout: Option<String>,
    /// CPU threads for generation (default: the number of CPUs).
    pub threads: Option<usize>,
    /// A Jinja chat template file overriding the one in the GGUF.
    pub chat_template: Option<String>,
    /// Largest context (prompt + completion tokens) accepted (default 4096).
    pub max_context_tokens: Option<usize>,
    /// `none` (default: quantized kernels), `f16` or `f32`: dequantize the weights at load for
    /// faster prompt processing (prefill) at some cost in decode speed and memory.
    pub dequantize: Option<String>,
    /// `auto` (default): convert weights that candle has only scalar kernels for (Q4_1, Q5_0,
    /// Q5_1, Q8_1) to Q8_0 once, at first load; `q4_0`: every quantized weight to Q4_0 (smaller,
    /// lossy); `none`: load the file as it is.
    pub requantize: Option<String>,
    /// Where requantized copies are kept (default `$HOME/.cache/reasoning-gateway/models`).
    pub cache_dir: Option<String>,
}

/// One named upstream pool.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawUpstream {
    /// Name used by routes; `engine` is reserved for the bundled engine.
    pub name: String,
    /// `host:port` endpoints of the pool.
    pub endpoints: Vec<String>,
    /// `round_robin` (default) or `least_loaded`.
    pub balance: Option<String>,
    /// Longest wait for a TCP connection (default `2s`).
    pub connect_timeout: Option<String>,
    /// Longest silence while reading the response (default `300s`).
    pub read_timeout: Option<String>,
    /// Active health checks.
    pub health_check: Option<RawHealthCheck>,
    /// Requests in flight to the pool at most (default: no limit).
    pub max_inflight: Option<usize>,
    /// Requests waiting for a slot at most, beyond `max_inflight` (default 100; 0 = none wait).
    pub max_queue: Option<usize>,
    /// Longest wait for a slot (default `30s`).
    pub queue_timeout: Option<String>,
    /// HTTPS to the endpoints (`tls: {}` for the defaults).
    pub tls: Option<RawTls>,
    /// Environment variable holding the key sent upstream as `Authorization: Bearer …`.
    pub api_key_env: Option<String>,
    /// File holding that key instead (re-read at every reload: rotated secrets).
    pub api_key_file: Option<String>,
    /// Client APIs the upstream itself serves: `chat` (always), `responses`, `messages`
    /// (default `[chat]`). Requests in a listed API are passed through instead of translated.
    pub api: Option<Vec<String>>,
    /// How the pool can continue a generation from an assistant prefix (budget forcing):
    /// `none` (default) or `chat_prefix` (`continue_final_message` with
    /// `add_generation_prompt: false`, as vLLM and SGLang take it, with a chat template that
    /// renders a final assistant message as it is).
    pub continuation: Option<String>,
}

/// HTTPS settings of a pool.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawTls {
    /// SNI and the certificate name to verify (default: each endpoint's host).
    pub server_name: Option<String>,
    /// PEM file of the roots to trust instead of the system's.
    pub ca_file: Option<String>,
    /// Verify the certificate (default true).
    pub verify: Option<bool>,
}

/// Active health-check settings of a pool.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawHealthCheck {
    /// Time between checks (default `5s`).
    pub interval: Option<String>,
    /// Longest a check may take (default `1s`).
    pub timeout: Option<String>,
    /// HTTP path to GET (2xx = healthy); without it a TCP connect is the check.
    pub path: Option<String>,
}

/// One route.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRoute {
    /// The request's `model`, exact or a glob with `*` and `?`.
    pub model: String,
    /// Name of the upstream pool, or `engine`.
    pub upstream: String,
    /// Rewrite of `model` sent upstream.
    pub upstream_model: Option<String>,
    /// Route name used in metrics and `x-gateway-route` (default: `model`).
    pub name: Option<String>,
    /// How reasoning is split from the answer.
    pub reasoning: Option<RawReasoning>,
    /// The reasoning cache for this route.
    pub cache: Option<RawRouteCache>,
    /// Canary split: variants with weights, header overrides, sticky users, shadow, rollback.
    pub canary: Option<RawCanary>,
}

/// Canary settings of a route.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawCanary {
    /// Header forcing a variant for one request: `true` → the second variant, `false` → the first.
    pub header: Option<String>,
    /// Header whose value keeps a user on one variant (default: the API key in Authorization).
    pub sticky_header: Option<String>,
    /// Variants; the first is the stable one.
    pub variants: Vec<RawVariant>,
    /// Automatic rollback of non-stable variants.
    pub rollback: Option<RawRollback>,
    /// Gradual promotion of the second variant through traffic percentages.
    pub promotion: Option<RawPromotion>,
    /// Honour the forcing headers (`header`, `x-gateway-variant`) from clients (default: true
    /// when `header` is set, else false).
    pub allow_forcing: Option<bool>,
}

/// Gradual promotion steps.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawPromotion {
    /// Canary percentages in order, e.g. `[5, 25, 50, 100]`.
    pub steps: Vec<u32>,
    /// Least time on each step (default `10m`).
    pub interval: Option<String>,
    /// Canary requests finished on a step before it advances (default: `rollback.min_requests`).
    pub min_requests: Option<usize>,
}

/// One variant.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawVariant {
    /// Name (metric label, `x-gateway-variant`).
    pub name: String,
    /// Upstream pool.
    pub upstream: String,
    /// Share of traffic (relative to the other variants' weights).
    pub weight: Option<u32>,
    /// Model name sent upstream (default: the route's).
    pub upstream_model: Option<String>,
    /// Receives a copy of every request; its answer is measured, never served.
    pub shadow: Option<bool>,
}

/// Rollback limits, canary against stable over a sliding window.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRollback {
    /// Window length (default `5m`).
    pub window: Option<String>,
    /// Requests each side needs in the window before comparing (default 20).
    pub min_requests: Option<usize>,
    /// Largest error-rate excess of the canary over stable (default 0.1).
    pub max_error_rate_delta: Option<f64>,
    /// Largest canary p95 latency as a multiple of stable's (default 2.0).
    pub max_p95_ratio: Option<f64>,
    /// …and only when the canary is slower by more than this (default `100ms`).
    pub min_p95_delta: Option<String>,
    /// Largest verification-failure-rate excess (default 0.1).
    pub max_verification_failure_delta: Option<f64>,
    /// Largest step-timeout-rate excess (default 0.1).
    pub max_step_timeout_delta: Option<f64>,
}

/// Reasoning settings of a route.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawReasoning {
    /// `deepseek_r1` | `qwen3` | `passthrough` | `none`.
    pub parser: Option<String>,
    /// The chat template already opened `<think>`: output starts inside reasoning.
    pub start_in_reasoning: Option<bool>,
    /// `reasoning_content` | `reasoning` | `both` | `none` (reasoning dropped from responses,
    /// still measured).
    pub output_field: Option<String>,
    /// The tags around reasoning, for models that do not use `<think>`/`</think>`.
    pub tags: Option<RawTags>,
    /// `anywhere` (default, as vLLM and SGLang: answer text before the opening tag stays answer
    /// and the reasoning after it is split out) or `leading` (the opening tag counts only as the
    /// first non-whitespace text; otherwise tags are literal answer text).
    pub open_tag: Option<String>,
    /// Longest silence between tokens while reasoning; longer gaps are counted.
    pub step_timeout: Option<String>,
    /// `continue` (count only, default) or `abort` (end the response with a `step_timeout` error).
    pub step_timeout_policy: Option<String>,
    /// Reasoning budget in tokens for streamed responses; past it the stream ends with a
    /// `reasoning_budget_exceeded` error event.
    pub max_reasoning_tokens: Option<u64>,
    /// Steps between checkpoints for clients that ask (`x-reasoning-checkpoints`).
    pub checkpoint_every: Option<u32>,
    /// Sentence-initial phrases counted as self-corrections (default: a built-in list).
    pub correction_markers: Option<Vec<String>>,
    /// Checks run on every finished response.
    pub verify: Option<RawVerify>,
    /// Add per-response `reasoning_stats` (a final `choices: []` stream chunk, or a top-level field).
    pub stats: Option<bool>,
    /// Budget forcing: what happens at the reasoning budget, a minimum, per-effort budgets.
    pub budget: Option<RawBudget>,
}

/// A route's reasoning budget (issue 30).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawBudget {
    /// Reasoning tokens allowed (the same count as `max_reasoning_tokens`, which is the
    /// `on_exceed: error` form; give one of the two).
    pub max_tokens: Option<u64>,
    /// `error` (default: the stream ends with `reasoning_budget_exceeded`) or `answer` (the
    /// reasoning is closed and the model continues to an answer; the pool needs `continuation`).
    pub on_exceed: Option<String>,
    /// Reasoning tokens the model must spend: an earlier end of its reasoning is replaced by
    /// `extend_word` and it reasons on (the pool needs `continuation`).
    pub min_tokens: Option<u64>,
    /// Text written after the closing tag of a forced answer (default `Final answer:`).
    pub bridge: Option<String>,
    /// Text that replaces an early end of reasoning (default `Wait`).
    pub extend_word: Option<String>,
    /// Extensions per request at most (default 2, at most 8).
    pub max_extensions: Option<u32>,
    /// Budget per request `reasoning_effort` (chat) or `reasoning.effort` (Responses).
    pub effort: Option<RawEffort>,
}

/// Reasoning tokens per effort level.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawEffort {
    /// Budget of `low`.
    pub low: Option<u64>,
    /// Budget of `medium`.
    pub medium: Option<u64>,
    /// Budget of `high`.
    pub high: Option<u64>,
}

/// A route's reasoning tags.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawTags {
    /// The opening tag, e.g. `<thinking>`.
    pub open: String,
    /// The closing tag, e.g. `</thinking>`.
    pub close: String,
}

/// Verification settings of a route.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawVerify {
    /// Checks to run: unterminated, empty_answer, tag_leak, json, regex, contradiction, loop.
    pub checks: Option<Vec<String>>,
    /// Regex the answer must match; enables the `regex` check.
    pub answer_regex: Option<String>,
    /// Word n-gram length of the `loop` check (default 8).
    pub loop_ngram: Option<usize>,
    /// Largest share of repeated n-grams before the reasoning counts as looping (default 0.5).
    pub loop_max_ratio: Option<f64>,
    /// Run the checks that apply to unfinished reasoning (`loop`) every N steps while streaming.
    pub every_steps: Option<u32>,
    /// What a failed periodic check does: `warn` (a `reasoning_warning` chunk) or `abort`.
    pub policy: Option<String>,
}

/// The top-level `cache:` section.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawCacheSettings {
    pub model_dir: Option<String>,
    pub model_file: Option<String>,
    pub onnxruntime: Option<String>,
    pub snapshot_dir: Option<String>,
    pub snapshot_interval: Option<String>,
    pub embed_threads: Option<usize>,
    pub embed_intra_threads: Option<usize>,
    pub embed_spin: Option<bool>,
    pub ann_ef_search: Option<usize>,
    pub embed_timeout: Option<String>,
    pub tenant_header: Option<String>,
    /// Peers (CIDRs or addresses) whose `tenant_header` is believed; from any other peer the
    /// header is ignored and the tenant comes from the request's credentials.
    pub trusted_proxies: Option<Vec<String>>,
}

/// A route's `cache:` section.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRouteCache {
    pub enabled: Option<bool>,
    pub threshold: Option<f64>,
    pub ttl: Option<String>,
    pub max_entries: Option<usize>,
    pub guard: Option<bool>,
    pub shared_across_tenants: Option<bool>,
}

/// The `async_jobs:` section.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawAsyncJobs {
    pub dir: Option<String>,
    pub max_jobs: Option<usize>,
    pub max_running: Option<usize>,
    pub ttl: Option<String>,
    /// HMAC key for callback signatures (not empty; redacted in `Debug`).
    pub callback_secret: Option<super::Secret>,
    pub callback_secret_env: Option<String>,
    pub callback_retries: Option<u32>,
    pub callback_timeout: Option<String>,
    pub callback_ca_file: Option<String>,
    pub checkpoint_every: Option<u32>,
    /// Internal callback targets allowed (CIDR blocks, addresses or host names); by default
    /// only public addresses are called back, and never the gateway's own listeners.
    pub callback_allow: Option<Vec<String>>,
    /// Jobs one tenant may have stored at once (default 100); more get 429.
    pub max_jobs_per_tenant: Option<usize>,
    /// Bytes all jobs may hold in memory (request bodies and results; default 256 MiB).
    pub max_bytes: Option<u64>,
}

/// The `shared` section: where the fleet's shared state lives.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawShared {
    /// `redis://[user:password@]host:port[/db]` (Redis or Valkey; no TLS: `rediss://` is
    /// refused). A password may instead come from `password_env`.
    pub redis_url: String,
    /// Environment variable holding the Redis password (kept out of the config file).
    pub password_env: Option<String>,
    /// Prefix of every key the gateway writes (default `rg`): replicas with the same prefix
    /// share state; another prefix on the same Redis is another fleet.
    pub key_prefix: Option<String>,
    /// Longest time one Redis command may take on a request's path before the replica goes on
    /// alone (default `50ms`).
    pub timeout: Option<String>,
}

/// The `telemetry` section.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawTelemetry {
    /// Export one trace per request over OTLP (off when absent). Read at start-up only.
    pub otlp: Option<RawOtlp>,
    /// Label the `gen_ai_*` histograms with the GenAI attributes (operation, provider, request
    /// model, error type) and export `gen_ai_server_time_per_output_token_seconds` (default
    /// false). Read at start-up only.
    pub genai_metrics: Option<bool>,
}

/// `telemetry.otlp`: where and how traces are exported.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawOtlp {
    /// Collector URL, `http://host:port`: for `http/protobuf` the path `/v1/traces` is added
    /// unless the URL already ends with it; for `grpc` it is used as given.
    pub endpoint: String,
    /// `http/protobuf` (default) or `grpc`.
    pub protocol: Option<String>,
    /// Share of the traces the gateway starts that are exported, 0.0 to 1.0 (default 1.0);
    /// a client's `traceparent` sampled flag is followed instead.
    pub sample_ratio: Option<f64>,
    /// `service.name` of the exported spans (default `reasoning-gateway`).
    pub service_name: Option<String>,
    /// Environment variable holding headers sent with each export, `key=value,key2=value2`
    /// (the `OTEL_EXPORTER_OTLP_HEADERS` format), e.g. a vendor's API key.
    pub headers_env: Option<String>,
    /// Put the prompt and the completion's text on the request span (default false).
    pub capture_content: Option<bool>,
    /// Longest time one export may take before its spans are dropped (default `10s`).
    pub timeout: Option<String>,
    /// Spans waiting for export at most; past it new spans are dropped and counted
    /// (default 4096).
    pub max_queue: Option<usize>,
}
