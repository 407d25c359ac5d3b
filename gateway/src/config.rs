//! Configuration: the raw YAML types ([`raw`]) validated into the runtime [`Config`].
//! Validation reports every error at once, each with its YAML path.

pub mod raw;
mod validate;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

pub use validate::{parse_duration, validate};

/// Name of the upstream that stands for the bundled engine.
pub const ENGINE_UPSTREAM: &str = "engine";
/// Default steps between reasoning checkpoints.
pub const DEFAULT_CHECKPOINT_EVERY: u32 = 5;
/// Default request body limit.
pub const DEFAULT_MAX_BODY_BYTES: usize = 16 * 1024 * 1024;
/// Default bound on open client connections.
pub const DEFAULT_MAX_CONNECTIONS: usize = 8192;
/// Default deadline for a whole request header (and idle kept-alive connections).
pub const DEFAULT_CLIENT_HEADER_TIMEOUT: Duration = Duration::from_secs(60);
/// Default deadline for a whole request body.
pub const DEFAULT_CLIENT_BODY_TIMEOUT: Duration = Duration::from_secs(60);
/// Default wait for requests in flight at SIGTERM.
pub const DEFAULT_DRAIN_TIMEOUT: Duration = Duration::from_secs(30);
/// Default interval between DNS checks of the endpoints' host names.
pub const DEFAULT_DNS_REFRESH: Duration = Duration::from_secs(30);

/// Validated runtime configuration.
#[derive(Debug, Clone)]
pub struct Config {
    /// OpenAI-compatible listener.
    pub listen: SocketAddr,
    /// Admin listener.
    pub admin_listen: SocketAddr,
    /// Bearer token of the admin endpoints (`None`: none needed; only on loopback).
    pub admin_token: Option<AdminToken>,
    /// `/metrics` answers without the admin token.
    pub admin_public_metrics: bool,
    /// Largest accepted request body.
    pub max_body_bytes: usize,
    /// Open client connections at most.
    pub max_connections: usize,
    /// Deadline for a whole request header (and for an idle kept-alive connection).
    pub client_header_timeout: Duration,
    /// Deadline for a whole request body.
    pub client_body_timeout: Duration,
    /// Proxy worker threads.
    pub threads: usize,
    /// How long a SIGTERM waits for requests in flight.
    pub drain_timeout: Duration,
    /// How often endpoint host names are resolved again (zero: never).
    pub dns_refresh: Duration,
    /// Bundled engine, when configured.
    pub engine: Option<EngineConfig>,
    /// Reasoning-cache settings: present when a `cache:` section exists or a route enables it.
    pub cache: Option<CacheSettings>,
    /// Async job settings (defaults when the section is absent).
    pub async_jobs: AsyncJobsConfig,
    /// Trace export and GenAI metric names.
    pub telemetry: TelemetryConfig,
    /// Fleet mode (state shared through Redis), when configured.
    pub shared: Option<SharedConfig>,
    /// Upstream pools (without the engine, which is added when it has started).
    pub upstreams: Vec<UpstreamConfig>,
    /// Routes, first match wins.
    pub routes: Vec<RouteConfig>,
}

impl Config {
    /// What a valid config does differently from what it asks for, one sentence each: shown
    /// by `check` and logged when the config is loaded or reloaded.
    pub fn notices(&self) -> Vec<String> {
        let mut out = Vec::new();
        for route in &self.routes {
            let Some(b) = route.reasoning.budget.as_ref().filter(|b| b.continues()) else {
                continue;
            };
            for pool in &b.cannot_continue {
                out.push(format!(
                    "route `{}`: upstream `{pool}` declares no `continuation`, so its requests get `on_exceed: error` instead: they stop with `reasoning_budget_exceeded` at the budget and are not extended below `min_tokens`. Declare `continuation: chat_prefix` on that pool if its server takes `continue_final_message` with a chat template that renders a final assistant message as it is (the stock DeepSeek-R1 and Qwen3 templates do not).",
                    route.name
                ));
            }
        }
        out
    }
}

/// Bundled engine settings.
#[derive(Debug, Clone)]
pub struct EngineConfig {
    /// Directory with the GGUF.
    pub model_dir: PathBuf,
    /// GGUF file name inside `model_dir`.
    pub gguf: String,
    /// Model name clients use.
    pub served_model_name: String,
    /// Loopback address to listen on (port 0: ephemeral).
    pub listen: SocketAddr,
    /// Most sequences decoded at once.
    pub max_seqs: usize,
    /// The engine pool's bound on requests in flight, when `max_inflight` is set.
    pub admission: Option<AdmissionConfig>,
    /// CPU threads for generation.
    pub threads: usize,
    /// Chat template override.
    pub chat_template: Option<PathBuf>,
    /// Largest prompt + completion length.
    pub max_context_tokens: usize,
    /// Dequantize weights at load: `None`, `Some("f16")` or `Some("f32")`.
    pub dequantize: Option<&'static str>,
    /// Weight conversion at load: `"auto"`, `"none"` or `"q4_0"`.
    pub requantize: &'static str,
    /// Where converted copies of the model are kept.
    pub cache_dir: PathBuf,
}

/// How a pool chooses an endpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Balance {
    /// Rotate through healthy endpoints.
    RoundRobin,
    /// Fewest requests in flight.
    LeastLoaded,
}

/// Active health check of a pool.
#[derive(Debug, Clone)]
pub struct HealthCheckConfig {
    /// Time between checks.
    pub interval: Duration,
    /// Longest a check may take.
    pub timeout: Duration,
    /// HTTP path to GET, or TCP connect when `None`.
    pub path: Option<String>,
}

/// One upstream pool.
#[derive(Debug, Clone)]
pub struct UpstreamConfig {
    /// Pool name.
    pub name: String,
    /// Resolved endpoint addresses with the text the user wrote (used as `Host`).
    pub endpoints: Vec<(SocketAddr, String)>,
    /// Endpoint choice.
    pub balance: Balance,
    /// TCP connect timeout.
    pub connect_timeout: Duration,
    /// Idle read timeout.
    pub read_timeout: Duration,
    /// Health checks.
    pub health_check: HealthCheckConfig,
    /// Admission limits, when `max_inflight` is set.
    pub admission: Option<AdmissionConfig>,
    /// HTTPS to the endpoints, when the `tls` section is present.
    pub tls: Option<TlsConfig>,
    /// Sent upstream as `Authorization: Bearer …` in place of the client's (`api_key_env`).
    pub api_key: Option<Secret>,
    /// Client APIs the upstream serves itself (`api`; chat always): those are passed through.
    pub api: Vec<crate::api::Api>,
    /// How the pool continues a generation from an assistant prefix (`continuation`).
    pub continuation: Continuation,
}

/// How a pool continues a generation from an assistant prefix.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Continuation {
    /// It cannot (the default): budget forcing is refused at config load.
    #[default]
    None,
    /// Chat requests with `continue_final_message: true, add_generation_prompt: false`.
    ChatPrefix,
}

/// Budget forcing settings of a route (`reasoning.budget`).
#[derive(Debug, Clone, Default)]
pub struct BudgetConfig {
    /// `on_exceed: answer`: the reasoning is closed at the budget and the model answers.
    pub answer: bool,
    /// Reasoning tokens the model must spend before it may answer.
    pub min_tokens: Option<u64>,
    /// Text after the closing tag of a forced answer.
    pub bridge: String,
    /// Text that replaces an early end of reasoning.
    pub extend_word: String,
    /// Extensions per request at most.
    pub max_extensions: u32,
    /// Budgets of `reasoning_effort` low, medium, high.
    pub effort: [Option<u64>; 3],
    /// Pools this route reaches that declare no `continuation`: there the budget falls back
    /// to the `error` form (stop at `max_tokens`, no extension below `min_tokens`).
    pub cannot_continue: Vec<String>,
}

impl BudgetConfig {
    /// The gateway continues generations on this route (forced answers or extensions).
    pub fn continues(&self) -> bool {
        self.answer || self.min_tokens.is_some()
    }

    /// Whether requests served by `pool` are continued (else: the `error` form).
    pub fn continues_on(&self, pool: &str) -> bool {
        self.continues() && !self.cannot_continue.iter().any(|p| p == pool)
    }

    /// The budget of a request's `reasoning_effort`, when the route has one for it.
    pub fn of_effort(&self, effort: &str) -> Option<u64> {
        match effort {
            "low" | "minimal" => self.effort[0],
            "medium" => self.effort[1],
            "high" => self.effort[2],
            _ => None,
        }
    }
}

/// HTTPS to a pool's endpoints.
#[derive(Debug, Clone)]
pub struct TlsConfig {
    /// SNI and the name the certificate must carry; `None`: each endpoint's host.
    pub server_name: Option<String>,
    /// Roots trusted instead of the system's (`ca_file`), in the form Pingora takes per peer.
    pub ca: Option<Arc<[pingora::utils::tls::WrappedX509]>>,
    /// Check the certificate chain and name (false only for testing).
    pub verify: bool,
}

impl TlsConfig {
    /// The name to send as SNI and to verify for an endpoint written as `host_port`.
    pub fn server_name_for<'a>(&'a self, host_port: &'a str) -> &'a str {
        self.server_name
            .as_deref()
            .unwrap_or_else(|| endpoint_host(host_port))
    }
}

/// The host part of an endpoint written `host:port` (IPv6 literals in brackets).
pub fn endpoint_host(host_port: &str) -> &str {
    let host = host_port
        .rsplit_once(':')
        .map_or(host_port, |(host, _)| host);
    host.trim_start_matches('[').trim_end_matches(']')
}

/// A value that must never reach logs, `/admin/config` or error messages.
#[derive(Clone, PartialEq, Eq, serde::Deserialize)]
#[serde(transparent)]
pub struct Secret(pub String);

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(…)")
    }
}

/// The admin token, kept only as its SHA-256 digest: the token itself never stays in memory,
/// and comparing digests takes the same time whatever the presented token shares with it.
#[derive(Clone, PartialEq, Eq)]
pub struct AdminToken([u8; 32]);

impl AdminToken {
    /// The token as configured (already trimmed and checked non-empty).
    pub fn new(token: &str) -> AdminToken {
        use sha2::Digest;
        AdminToken(sha2::Sha256::digest(token.as_bytes()).into())
    }

    /// Whether `presented` is the token, in time independent of where they differ.
    pub fn matches(&self, presented: &[u8]) -> bool {
        use sha2::Digest;
        let digest: [u8; 32] = sha2::Sha256::digest(presented).into();
        let diff = digest
            .iter()
            .zip(self.0.iter())
            .fold(0u8, |acc, (a, b)| acc | (a ^ b));
        // Keep the optimiser from turning the fold into an early-exit comparison.
        std::hint::black_box(diff) == 0
    }
}

impl std::fmt::Debug for AdminToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("AdminToken(<redacted>)")
    }
}

/// How many requests a pool takes at once and how the rest wait.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AdmissionConfig {
    /// Requests in flight to the pool at most.
    pub max_inflight: usize,
    /// Requests waiting for a slot at most (0: refuse at once).
    pub max_queue: usize,
    /// Longest wait for a slot.
    pub queue_timeout: Duration,
}

/// Where reasoning is found in the upstream's output.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ParserKind {
    /// `<think>…</think>` in content (DeepSeek-R1 and distills, QwQ).
    DeepseekR1,
    /// Qwen3 thinking: the same tags; thinking may be switched off per request.
    Qwen3,
    /// Forward the upstream byte for byte.
    Passthrough,
    /// Never look for tags; only map fields the upstream already split.
    None,
}

/// Which delta/message field carries reasoning to the client.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OutputField {
    /// `reasoning_content` (DeepSeek API, SGLang, older vLLM).
    ReasoningContent,
    /// `reasoning` (vLLM ≥ 0.16, OpenRouter).
    Reasoning,
    /// Both fields, same text.
    Both,
    /// Neither: reasoning is dropped from responses (still measured and verified).
    None,
}

impl OutputField {
    /// The response field name(s) reasoning goes to.
    pub fn names(self) -> &'static [&'static str] {
        match self {
            OutputField::ReasoningContent => &["reasoning_content"],
            OutputField::Reasoning => &["reasoning"],
            OutputField::Both => &["reasoning_content", "reasoning"],
            OutputField::None => &[],
        }
    }
}

/// Reasoning settings of a route.
#[derive(Debug, Clone)]
pub struct ReasoningConfig {
    /// Parser.
    pub parser: ParserKind,
    /// Output starts inside `<think>`.
    pub start_in_reasoning: bool,
    /// Output field.
    pub output_field: OutputField,
    /// The tags around reasoning (`<think>`/`</think>` by default).
    pub tags: crate::reasoning::Tags,
    /// Where an opening tag starts reasoning.
    pub open_tag: crate::reasoning::OpenTag,
    /// Longest silence between tokens while reasoning.
    pub step_timeout: Option<Duration>,
    /// A step timeout ends the response (else it is only counted).
    pub step_timeout_abort: bool,
    /// Reasoning budget of streamed responses, in tokens.
    pub max_reasoning_tokens: Option<u64>,
    /// Budget forcing (`budget`): what the budget does, the minimum, effort budgets.
    pub budget: Option<BudgetConfig>,
    /// Steps between checkpoints for clients that send `x-reasoning-checkpoints: true`.
    pub checkpoint_every: u32,
    /// How finished responses are analysed (shared by every request of the route).
    pub analysis: std::sync::Arc<AnalysisConfig>,
}

/// Steps, self-corrections and verification settings of a route.
#[derive(Debug, Clone)]
pub struct AnalysisConfig {
    /// Self-correction markers, lowercase.
    pub correction_markers: Vec<String>,
    /// Verification checks.
    pub verify: crate::reasoning::verify::VerifyConfig,
    /// Add `reasoning_stats` to responses (a final stream chunk with `choices: []`).
    pub stats: bool,
    /// Periodic checks every N reasoning steps while streaming (0: off).
    pub every_steps: u32,
    /// A failed periodic check ends the stream (else a warning chunk is sent).
    pub periodic_abort: bool,
}

impl Default for AnalysisConfig {
    fn default() -> Self {
        AnalysisConfig {
            correction_markers: crate::reasoning::corrections::DEFAULT_MARKERS
                .iter()
                .map(std::string::ToString::to_string)
                .collect(),
            verify: Default::default(),
            stats: false,
            every_steps: 0,
            periodic_abort: false,
        }
    }
}

impl ReasoningConfig {
    /// How the route's think parser reads output.
    pub fn parser_options(&self) -> crate::reasoning::ParserOptions {
        crate::reasoning::ParserOptions {
            start_in_reasoning: self.start_in_reasoning,
            open_tag: self.open_tag,
            tags: self.tags.clone(),
        }
    }
}

impl Default for ReasoningConfig {
    fn default() -> Self {
        ReasoningConfig {
            parser: ParserKind::DeepseekR1,
            start_in_reasoning: false,
            output_field: OutputField::ReasoningContent,
            tags: crate::reasoning::Tags::THINK,
            open_tag: crate::reasoning::OpenTag::Anywhere,
            step_timeout: None,
            step_timeout_abort: false,
            max_reasoning_tokens: None,
            budget: None,
            checkpoint_every: DEFAULT_CHECKPOINT_EVERY,
            analysis: Default::default(),
        }
    }
}

/// One route.
#[derive(Debug, Clone)]
pub struct RouteConfig {
    /// Route name (metrics label, `x-gateway-route`).
    pub name: String,
    /// Model pattern.
    pub model: String,
    /// Upstream pool name.
    pub upstream: String,
    /// Model name sent upstream.
    pub upstream_model: Option<String>,
    /// Reasoning split.
    pub reasoning: ReasoningConfig,
    /// Canary split, when configured.
    pub canary: Option<CanaryConfig>,
    /// Reasoning cache, when enabled for the route.
    pub cache: Option<reasoning_cache::RouteSettings>,
}

/// Process-wide reasoning-cache settings (a restart applies changes).
#[derive(Debug, Clone, PartialEq)]
pub struct CacheSettings {
    /// What the cache itself is started with (model, snapshots, embedding threads, search).
    pub cache: reasoning_cache::Settings,
    /// Header naming the tenant; by default a digest of the API key is the tenant.
    pub tenant_header: Option<String>,
    /// Peers whose `tenant_header` is believed (from others it is ignored and counted).
    pub trusted_proxies: Vec<crate::cidr::Cidr>,
}

/// Async jobs (a restart applies changes).
#[derive(Debug, Clone, PartialEq)]
pub struct AsyncJobsConfig {
    /// Where jobs are stored (survive restarts); `None`: in memory.
    pub dir: Option<PathBuf>,
    /// Stored jobs at most; submissions beyond get 429.
    pub max_jobs: usize,
    /// Jobs running at once; the rest wait.
    pub max_running: usize,
    /// How long finished jobs are kept.
    pub ttl: Duration,
    /// HMAC key for callback signatures (never empty).
    pub callback_secret: Option<Secret>,
    /// Callback retries after the first attempt.
    pub callback_retries: u32,
    /// Per-attempt callback timeout.
    pub callback_timeout: Duration,
    /// Roots (DER) trusted for `https://` callbacks instead of the system's.
    pub callback_ca: Option<Arc<Vec<Vec<u8>>>>,
    /// Steps between checkpoints (`None`: the route's `checkpoint_every`).
    pub checkpoint_every: Option<u32>,
    /// Internal callback targets the operator allows (`callback_allow`).
    pub callback_allow: Vec<crate::jobs::target::Allow>,
    /// Jobs one tenant may have stored at once.
    pub max_jobs_per_tenant: usize,
    /// Bytes all jobs may hold (request bodies, progress, results).
    pub max_bytes: u64,
}

/// A route's canary split.
#[derive(Debug, Clone)]
pub struct CanaryConfig {
    /// Header forcing the first (`false`) or second (`true`) variant.
    pub header: Option<String>,
    /// Clients may force a variant (`header`, `x-gateway-variant`); forced requests are never
    /// counted in the rollback and promotion windows.
    pub allow_forcing: bool,
    /// Header keeping a user on one variant (else the Authorization value).
    pub sticky_header: Option<String>,
    /// Served variants; index 0 is stable.
    pub variants: Vec<VariantConfig>,
    /// The shadow variant, if any.
    pub shadow: Option<VariantConfig>,
    /// Rollback limits.
    pub rollback: RollbackConfig,
    /// Gradual promotion of the second variant, when configured.
    pub promotion: Option<PromotionConfig>,
}

/// Gradual promotion: the canary (second served variant) gets `steps[i]` percent of the weighted
/// traffic and stable the rest; it moves to the next step after `interval` at the current one,
/// once it has served `min_requests` there and its rollback comparison with stable passes.
#[derive(Debug, Clone, PartialEq)]
pub struct PromotionConfig {
    /// Canary percentages, strictly increasing, each 1..=100.
    pub steps: Vec<u32>,
    /// Least time on a step.
    pub interval: Duration,
    /// Canary requests finished on a step before it can advance.
    pub min_requests: usize,
}

impl PromotionConfig {
    /// The step index in force for a reached step (a reload may have shortened the list).
    pub fn step(&self, reached: usize) -> usize {
        reached.min(self.steps.len().saturating_sub(1))
    }
}

/// One variant.
#[derive(Debug, Clone)]
pub struct VariantConfig {
    /// Name.
    pub name: String,
    /// Upstream pool.
    pub upstream: String,
    /// Weight.
    pub weight: u32,
    /// Model name sent upstream.
    pub upstream_model: Option<String>,
}

/// Rollback limits.
#[derive(Debug, Clone)]
pub struct RollbackConfig {
    /// Sliding window.
    pub window: Duration,
    /// Requests per side before comparing.
    pub min_requests: usize,
    /// Error-rate excess.
    pub max_error_rate_delta: f64,
    /// p95 latency ratio.
    pub max_p95_ratio: f64,
    /// Smallest p95 gap that counts (ratios of tiny latencies are noise).
    pub min_p95_delta: Duration,
    /// Verification-failure-rate excess.
    pub max_verification_failure_delta: f64,
    /// Step-timeout-rate excess.
    pub max_step_timeout_delta: f64,
}

/// Errors of loading a config file.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// File path.
        path: String,
        /// Cause.
        source: std::io::Error,
    },
    /// YAML syntax or type errors, or validation errors, one line each.
    #[error("{}", .0.join("\n"))]
    Invalid(Vec<String>),
}

/// Reads, parses and validates a config file.
pub fn load(path: &std::path::Path) -> Result<Config, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        path: path.display().to_string(),
        source,
    })?;
    parse(&text)
}

/// Parses and validates config text.
pub fn parse(text: &str) -> Result<Config, ConfigError> {
    let de = serde_yaml::Deserializer::from_str(text);
    let raw: raw::RawConfig = serde_path_to_error::deserialize(de).map_err(|e| {
        let path = e.path().to_string();
        let msg = e.into_inner().to_string();
        // serde_yaml prefixes the parent's path; the full path from serde_path_to_error replaces it.
        let msg = match msg.split_once(": ") {
            Some((head, rest)) if !head.contains(' ') => rest.to_string(),
            _ => msg,
        };
        ConfigError::Invalid(vec![if path == "." {
            msg
        } else {
            format!("{path}: {msg}")
        }])
    })?;
    validate(raw).map_err(ConfigError::Invalid)
}

/// `shared`: the Redis every replica of a fleet shares state through.
#[derive(Clone, PartialEq)]
pub struct SharedConfig {
    /// The connection URL, password included when one is configured: never logged (see the
    /// `Debug` impl and [`SharedConfig::display_url`]).
    pub redis_url: String,
    /// Prefix of every key.
    pub key_prefix: String,
    /// Deadline of one command on a request's path.
    pub timeout: Duration,
}

impl SharedConfig {
    /// The URL with any password replaced by `***`, for logs and the admin plane.
    pub fn display_url(&self) -> String {
        redact_url(&self.redis_url)
    }
}

impl std::fmt::Debug for SharedConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SharedConfig")
            .field("redis_url", &self.display_url())
            .field("key_prefix", &self.key_prefix)
            .field("timeout", &self.timeout)
            .finish()
    }
}

/// `scheme://user:secret@host…` → `scheme://user:***@host…` (unchanged without a password).
pub fn redact_url(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_string();
    };
    let authority_end = rest.find('/').unwrap_or(rest.len());
    match rest[..authority_end].rfind('@') {
        Some(at) => {
            let user = rest[..at].split(':').next().unwrap_or_default();
            format!("{scheme}://{user}:***{}", &rest[at..])
        }
        None => url.to_string(),
    }
}

/// `telemetry`: trace export and the GenAI metric names.
#[derive(Debug, Clone, Default)]
pub struct TelemetryConfig {
    /// OTLP trace export, when configured.
    pub otlp: Option<OtlpConfig>,
    /// Label the `gen_ai_*` histograms with the GenAI attributes.
    pub genai_metrics: bool,
}

/// How traces are exported.
#[derive(Debug, Clone)]
pub struct OtlpConfig {
    /// The URL spans are sent to (for HTTP, `/v1/traces` included).
    pub endpoint: String,
    /// Wire protocol.
    pub protocol: OtlpProtocol,
    /// Share of gateway-started traces exported.
    pub sample_ratio: f64,
    /// `service.name`.
    pub service_name: String,
    /// Headers sent with each export (from `headers_env`).
    pub headers: ExportHeaders,
    /// Prompt and completion text on spans.
    pub capture_content: bool,
    /// Deadline of one export.
    pub timeout: Duration,
    /// Spans waiting for export at most.
    pub max_queue: usize,
}

/// OTLP transport.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OtlpProtocol {
    /// Protobuf over HTTP POST.
    HttpProtobuf,
    /// gRPC.
    Grpc,
}

/// Export headers; their values (API keys) are never printed.
#[derive(Clone, Default)]
pub struct ExportHeaders(pub Vec<(String, String)>);

impl std::fmt::Debug for ExportHeaders {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list()
            .entries(self.0.iter().map(|(k, _)| k))
            .finish()
    }
}
