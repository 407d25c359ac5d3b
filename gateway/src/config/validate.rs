//! Raw → runtime config. Every problem is collected with its YAML path; nothing stops early.

use std::collections::HashSet;
use std::net::{SocketAddr, ToSocketAddrs};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use super::raw::*;
use super::*;
use crate::reasoning::{OpenTag, Tags};

/// The longest duration any setting takes (100 years): past it, deadlines computed from now
/// overflow clocks and timestamps (a TTL past year 9999).
pub const MAX_DURATION: Duration = Duration::from_secs(100 * 365 * 24 * 3600);

/// Parses `250ms`, `10s`, `5m`, `1h` (a bare number is seconds); `None` for anything else,
/// negative, or longer than [`MAX_DURATION`].
pub fn parse_duration(text: &str) -> Option<Duration> {
    let t = text.trim();
    let (num, unit) = match t.find(|c: char| !c.is_ascii_digit() && c != '.') {
        Some(i) => t.split_at(i),
        None => (t, "s"),
    };
    let n: f64 = num.parse().ok()?;
    let secs = match unit.trim() {
        "ms" => n / 1000.0,
        "s" => n,
        "m" => n * 60.0,
        "h" => n * 3600.0,
        _ => return None,
    };
    Duration::try_from_secs_f64(secs)
        .ok()
        .filter(|d| *d <= MAX_DURATION)
}

/// The largest canary weight, and the largest sum of a route's weights (shares are computed
/// in `u32`).
const MAX_WEIGHT: u32 = 1_000_000;

struct Errors(Vec<String>);

impl Errors {
    fn push(&mut self, path: &str, msg: impl std::fmt::Display) {
        self.0.push(format!("{path}: {msg}"));
    }

    /// A count that must be at least 1; `default` when absent (or refused).
    fn positive(&mut self, path: &str, v: Option<usize>, default: usize) -> usize {
        if v == Some(0) {
            self.push(path, "must be at least 1");
        }
        v.filter(|n| *n > 0).unwrap_or(default)
    }

    fn duration(&mut self, path: &str, v: &Option<String>, default: Duration) -> Duration {
        match v {
            None => default,
            Some(s) => match parse_duration(s) {
                Some(d) if !d.is_zero() => d,
                _ => {
                    self.push(
                        path,
                        format!("`{s}` is not a positive duration of at most 100 years (e.g. 500ms, 10s, 5m)"),
                    );
                    default
                }
            },
        }
    }

    /// A duration where `0s` means "off" (or "at once").
    fn duration_or_zero(&mut self, path: &str, v: &Option<String>, default: Duration) -> Duration {
        match v.as_deref().map(|s| (s, parse_duration(s))) {
            None => default,
            Some((_, Some(d))) => d,
            Some((s, None)) => {
                self.push(
                    path,
                    format!("`{s}` is not a duration of at most 100 years (e.g. 30s, 2m, 0s)"),
                );
                default
            }
        }
    }

    fn addr(&mut self, path: &str, v: &Option<String>, default: &str) -> SocketAddr {
        let text = v.as_deref().unwrap_or(default);
        match text.parse::<SocketAddr>() {
            Ok(a) => a,
            Err(_) => {
                self.push(path, format!("`{text}` is not an IP:port address"));
                SocketAddr::from(([127, 0, 0, 1], 0))
            }
        }
    }
}

/// Validates a parsed file; returns every error found.
pub fn validate(raw: RawConfig) -> Result<Config, Vec<String>> {
    let mut errs = Errors(Vec::new());
    let listen = errs.addr("listen", &raw.listen, "127.0.0.1:8080");
    let admin_listen = errs.addr("admin_listen", &raw.admin_listen, "127.0.0.1:9090");
    if listen == admin_listen && listen.port() != 0 {
        errs.push("admin_listen", "must differ from `listen`");
    }
    let (admin_token, admin_public_metrics) = admin_auth(&mut errs, &raw, admin_listen);
    let max_body_bytes = match raw.max_body_bytes {
        Some(0) => {
            errs.push("max_body_bytes", "must be greater than 0");
            DEFAULT_MAX_BODY_BYTES
        }
        Some(n) => n as usize,
        None => DEFAULT_MAX_BODY_BYTES,
    };
    let max_connections = errs.positive(
        "max_connections",
        raw.max_connections,
        DEFAULT_MAX_CONNECTIONS,
    );
    let client_header_timeout = errs.duration(
        "client_header_timeout",
        &raw.client_header_timeout,
        DEFAULT_CLIENT_HEADER_TIMEOUT,
    );
    let client_body_timeout = errs.duration(
        "client_body_timeout",
        &raw.client_body_timeout,
        DEFAULT_CLIENT_BODY_TIMEOUT,
    );
    let cpus = std::thread::available_parallelism().map_or(2, std::num::NonZero::get);
    let threads = errs.positive("threads", raw.threads, cpus);
    let drain_timeout =
        errs.duration_or_zero("drain_timeout", &raw.drain_timeout, DEFAULT_DRAIN_TIMEOUT);
    let dns_refresh = errs.duration_or_zero("dns_refresh", &raw.dns_refresh, DEFAULT_DNS_REFRESH);

    let engine = raw.engine.as_ref().map(|e| engine(&mut errs, e, cpus));

    let mut names = HashSet::new();
    let mut upstreams = Vec::new();
    for (i, u) in raw.upstreams.iter().enumerate() {
        let path = format!("upstreams[{i}]");
        if u.name == ENGINE_UPSTREAM {
            errs.push(
                &format!("{path}.name"),
                "`engine` is reserved for the bundled engine",
            );
        } else if u.name.is_empty() {
            errs.push(&format!("{path}.name"), "must not be empty");
        } else if !names.insert(u.name.clone()) {
            errs.push(
                &format!("{path}.name"),
                format!("duplicate upstream `{}`", u.name),
            );
        }
        upstreams.push(upstream(&mut errs, &path, u));
    }
    if engine.is_some() {
        names.insert(ENGINE_UPSTREAM.to_string());
    }

    if raw.routes.is_empty() {
        errs.push("routes", "at least one route is needed");
    }
    let mut routes = Vec::new();
    let mut route_names = HashSet::new();
    for (i, r) in raw.routes.iter().enumerate() {
        let path = format!("routes[{i}]");
        if r.model.is_empty() {
            errs.push(&format!("{path}.model"), "must not be empty");
        }
        if !names.contains(&r.upstream) {
            let hint = if r.upstream == ENGINE_UPSTREAM {
                " (add an `engine:` section)"
            } else {
                ""
            };
            errs.push(
                &format!("{path}.upstream"),
                format!("unknown upstream `{}`{hint}", r.upstream),
            );
        }
        let cache = r
            .cache
            .as_ref()
            .and_then(|c| route_cache(&mut errs, &format!("{path}.cache"), c));
        let canary = r
            .canary
            .as_ref()
            .map(|c| canary(&mut errs, &format!("{path}.canary"), c, &names));
        let name = r.name.clone().unwrap_or_else(|| r.model.clone());
        if !route_names.insert(name.clone()) {
            errs.push(
                &format!("{path}.name"),
                format!("duplicate route name `{name}`"),
            );
        }
        let reasoning = r
            .reasoning
            .as_ref()
            .map(|x| reasoning(&mut errs, &format!("{path}.reasoning"), x))
            .unwrap_or_default();
        let route = RouteConfig {
            name,
            model: r.model.clone(),
            upstream: r.upstream.clone(),
            upstream_model: r.upstream_model.clone(),
            reasoning,
            canary,
            cache,
        };
        let mut route = route;
        let cannot = budget_pools(&route, &upstreams, engine.is_some());
        if let Some(b) = route.reasoning.budget.as_mut() {
            b.cannot_continue = cannot;
        }
        routes.push(route);
    }
    let cache = match (&raw.cache, routes.iter().any(|r| r.cache.is_some())) {
        (None, false) => None,
        (c, _) => Some(cache_settings(&mut errs, c.as_ref())),
    };

    let async_jobs = async_jobs(&mut errs, raw.async_jobs.as_ref());
    let telemetry = telemetry::telemetry(&mut errs, raw.telemetry.as_ref());
    let shared = raw.shared.as_ref().map(|s| shared::shared(&mut errs, s));
    if errs.0.is_empty() {
        Ok(Config {
            listen,
            admin_listen,
            admin_token,
            admin_public_metrics,
            max_body_bytes,
            max_connections,
            client_header_timeout,
            client_body_timeout,
            threads,
            drain_timeout,
            dns_refresh,
            engine,
            cache,
            async_jobs,
            telemetry,
            shared,
            upstreams,
            routes,
        })
    } else {
        Err(errs.0)
    }
}

/// The admin token (from `admin_token_env` or `admin_token_file`) and whether `/metrics` is
/// open. A listener others can reach must have a token.
fn admin_auth(
    errs: &mut Errors,
    raw: &RawConfig,
    admin_listen: SocketAddr,
) -> (Option<AdminToken>, bool) {
    // One trailing newline is what `echo` and editors add; anything else is part of the token.
    let trim = |t: String| -> String {
        let t = t.strip_suffix('\n').unwrap_or(&t);
        t.strip_suffix('\r').unwrap_or(t).to_string()
    };
    let (path, token) = match (&raw.admin_token_env, &raw.admin_token_file) {
        (Some(_), Some(_)) => {
            errs.push(
                "admin_token_file",
                "give either admin_token_env or admin_token_file",
            );
            ("admin_token_file", Err(()))
        }
        (Some(var), None) => match std::env::var(var) {
            Ok(t) => ("admin_token_env", Ok(Some(trim(t)))),
            Err(_) => {
                errs.push(
                    "admin_token_env",
                    format!("`{var}` is not set in the gateway's environment"),
                );
                ("admin_token_env", Err(()))
            }
        },
        (None, Some(file)) => match std::fs::read_to_string(file) {
            Ok(t) => ("admin_token_file", Ok(Some(trim(t)))),
            Err(e) => {
                errs.push("admin_token_file", format!("`{file}`: {e}"));
                ("admin_token_file", Err(()))
            }
        },
        (None, None) => ("admin_token_env", Ok(None)),
    };
    let token = match token {
        Ok(Some(t)) if t.is_empty() => {
            errs.push(path, "the admin token is empty");
            Err(())
        }
        // It travels as `Authorization: Bearer <token>`: visible ASCII only.
        Ok(Some(t)) if !t.bytes().all(|b| b.is_ascii_graphic()) => {
            errs.push(
                path,
                "the admin token must be printable ASCII without spaces",
            );
            Err(())
        }
        Ok(t) => Ok(t.map(|t| AdminToken::new(&t))),
        Err(()) => Err(()),
    };
    let public_metrics = raw.admin_public_metrics.unwrap_or(true);
    if let Ok(None) = token {
        if !admin_listen.ip().is_loopback() {
            errs.push(
                "admin_listen",
                format!("`{admin_listen}` is not a loopback address: set admin_token_env or admin_token_file, or anyone who can connect may purge the cache, reload and steer canaries"),
            );
        }
        if !public_metrics {
            errs.push(
                "admin_public_metrics",
                "`false` needs admin_token_env or admin_token_file",
            );
        }
    }
    (token.ok().flatten(), public_metrics)
}

fn canary(
    errs: &mut Errors,
    path: &str,
    c: &RawCanary,
    upstreams: &HashSet<String>,
) -> CanaryConfig {
    let mut variants = Vec::new();
    let mut shadow = None;
    let mut seen = HashSet::new();
    for (i, v) in c.variants.iter().enumerate() {
        let vp = format!("{path}.variants[{i}]");
        if !seen.insert(v.name.clone()) {
            errs.push(
                &format!("{vp}.name"),
                format!("duplicate variant `{}`", v.name),
            );
        }
        if v.name.is_empty()
            || !v
                .name
                .chars()
                .all(|ch| ch.is_ascii_alphanumeric() || ch == '-' || ch == '_')
        {
            errs.push(&format!("{vp}.name"), "use letters, digits, `-` and `_`");
        }
        if !upstreams.contains(&v.upstream) {
            errs.push(
                &format!("{vp}.upstream"),
                format!("unknown upstream `{}`", v.upstream),
            );
        }
        if v.weight.is_some_and(|w| w > MAX_WEIGHT) {
            errs.push(
                &format!("{vp}.weight"),
                format!("must be at most {MAX_WEIGHT} (weights are relative)"),
            );
        }
        let variant = VariantConfig {
            name: v.name.clone(),
            upstream: v.upstream.clone(),
            weight: v.weight.unwrap_or(0),
            upstream_model: v.upstream_model.clone(),
        };
        if v.shadow.unwrap_or(false) {
            if shadow.is_some() {
                errs.push(&format!("{vp}.shadow"), "only one shadow variant per route");
            }
            shadow = Some(variant);
        } else {
            variants.push(variant);
        }
    }
    if variants.is_empty() {
        errs.push(
            &format!("{path}.variants"),
            "at least one served (non-shadow) variant is needed",
        );
    } else if variants.iter().map(|v| u64::from(v.weight)).sum::<u64>() > u64::from(MAX_WEIGHT) {
        errs.push(
            &format!("{path}.variants"),
            format!("the served variants' weights add up to more than {MAX_WEIGHT}"),
        );
    } else if c.promotion.is_none() && variants.iter().all(|v| v.weight == 0) {
        errs.push(
            &format!("{path}.variants"),
            "the served variants' weights must not all be 0",
        );
    }
    let rb = c.rollback.as_ref();
    let ratio = |errs: &mut Errors, key: &str, v: Option<f64>, default: f64, max: f64| match v {
        Some(x) if !(0.0..=max).contains(&x) => {
            errs.push(
                &format!("{path}.rollback.{key}"),
                format!("must be between 0 and {max}"),
            );
            default
        }
        Some(x) => x,
        None => default,
    };
    let rollback = RollbackConfig {
        window: errs.duration(
            &format!("{path}.rollback.window"),
            &rb.and_then(|r| r.window.clone()),
            Duration::from_secs(300),
        ),
        min_requests: rb.and_then(|r| r.min_requests).unwrap_or(20).max(1),
        max_error_rate_delta: ratio(
            errs,
            "max_error_rate_delta",
            rb.and_then(|r| r.max_error_rate_delta),
            0.1,
            1.0,
        ),
        max_p95_ratio: ratio(
            errs,
            "max_p95_ratio",
            rb.and_then(|r| r.max_p95_ratio),
            2.0,
            1000.0,
        ),
        min_p95_delta: errs.duration(
            &format!("{path}.rollback.min_p95_delta"),
            &rb.and_then(|r| r.min_p95_delta.clone()),
            Duration::from_millis(100),
        ),
        max_verification_failure_delta: ratio(
            errs,
            "max_verification_failure_delta",
            rb.and_then(|r| r.max_verification_failure_delta),
            0.1,
            1.0,
        ),
        max_step_timeout_delta: ratio(
            errs,
            "max_step_timeout_delta",
            rb.and_then(|r| r.max_step_timeout_delta),
            0.1,
            1.0,
        ),
    };
    let promotion = c
        .promotion
        .as_ref()
        .map(|p| promotion(errs, path, p, c, variants.len(), rollback.min_requests));
    CanaryConfig {
        header: c.header.clone(),
        allow_forcing: c.allow_forcing.unwrap_or(c.header.is_some()),
        sticky_header: c.sticky_header.clone(),
        variants,
        shadow,
        rollback,
        promotion,
    }
}

fn promotion(
    errs: &mut Errors,
    path: &str,
    p: &RawPromotion,
    c: &RawCanary,
    served: usize,
    rollback_min_requests: usize,
) -> PromotionConfig {
    let pp = format!("{path}.promotion");
    if served != 2 {
        errs.push(
            &pp,
            format!("promotion needs exactly two served variants (stable, then the canary); this route has {served}"),
        );
    }
    for (i, v) in c.variants.iter().enumerate() {
        if v.weight.is_some() && !v.shadow.unwrap_or(false) {
            errs.push(
                &format!("{path}.variants[{i}].weight"),
                "promotion.steps sets the weights: remove `weight`",
            );
        }
    }
    if p.steps.is_empty() {
        errs.push(&format!("{pp}.steps"), "list at least one percentage");
    }
    for (i, s) in p.steps.iter().enumerate() {
        if !(1..=100).contains(s) {
            errs.push(&format!("{pp}.steps[{i}]"), "must be between 1 and 100");
        } else if i > 0 && *s <= p.steps[i - 1] {
            errs.push(&format!("{pp}.steps[{i}]"), "steps must increase strictly");
        }
    }
    PromotionConfig {
        steps: p.steps.clone(),
        interval: errs.duration(
            &format!("{pp}.interval"),
            &p.interval,
            Duration::from_secs(600),
        ),
        min_requests: p.min_requests.unwrap_or(rollback_min_requests).max(1),
    }
}

/// A pool's `max_inflight`, `max_queue` and `queue_timeout` (under `path`).
fn admission(
    errs: &mut Errors,
    path: &str,
    max_inflight: Option<usize>,
    max_queue: Option<usize>,
    queue_timeout: &Option<String>,
) -> Option<AdmissionConfig> {
    let admission = max_inflight.map(|n| AdmissionConfig {
        max_inflight: errs.positive(&format!("{path}.max_inflight"), Some(n), 1),
        max_queue: max_queue.unwrap_or(100),
        queue_timeout: errs.duration(
            &format!("{path}.queue_timeout"),
            queue_timeout,
            Duration::from_secs(30),
        ),
    });
    if admission.is_none() {
        for (key, set) in [
            ("max_queue", max_queue.is_some()),
            ("queue_timeout", queue_timeout.is_some()),
        ] {
            if set {
                errs.push(
                    &format!("{path}.{key}"),
                    "only applies with max_inflight: set it too",
                );
            }
        }
    }
    admission
}

fn engine(errs: &mut Errors, e: &RawEngine, cpus: usize) -> EngineConfig {
    let model_dir = PathBuf::from(&e.model_dir);
    if e.served_model_name.is_empty() {
        errs.push("engine.served_model_name", "must not be empty");
    }
    if e.gguf.is_empty() || !e.gguf.ends_with(".gguf") {
        errs.push(
            "engine.gguf",
            format!("`{}` is not a .gguf file name", e.gguf),
        );
    }
    let listen = errs.addr("engine.listen", &e.listen, "127.0.0.1:0");
    if !listen.ip().is_loopback() {
        errs.push("engine.listen", "the engine listens on loopback only");
    }
    EngineConfig {
        model_dir,
        gguf: e.gguf.clone(),
        served_model_name: e.served_model_name.clone(),
        listen,
        max_seqs: errs.positive("engine.max_seqs", e.max_seqs, 8),
        admission: admission(
            errs,
            "engine",
            e.max_inflight,
            e.max_queue,
            &e.queue_timeout,
        ),
        threads: errs.positive("engine.threads", e.threads, cpus),
        chat_template: e.chat_template.as_ref().map(PathBuf::from),
        max_context_tokens: errs.positive("engine.max_context_tokens", e.max_context_tokens, 4096),
        dequantize: match e.dequantize.as_deref() {
            None | Some("none") => None,
            Some("f16") => Some("f16"),
            Some("f32") => Some("f32"),
            Some(other) => {
                errs.push(
                    "engine.dequantize",
                    format!("`{other}` is not one of none, f16, f32"),
                );
                None
            }
        },
        requantize: match e.requantize.as_deref() {
            None | Some("auto") => "auto",
            Some("none") => "none",
            Some("q4_0") => "q4_0",
            Some(other) => {
                errs.push(
                    "engine.requantize",
                    format!("`{other}` is not one of auto, none, q4_0"),
                );
                "none"
            }
        },
        cache_dir: e.cache_dir.as_ref().map(PathBuf::from).unwrap_or_else(|| {
            std::env::var_os("HOME")
                .map(PathBuf::from)
                .unwrap_or_default()
                .join(".cache/reasoning-gateway/models")
        }),
    }
}

fn upstream(errs: &mut Errors, path: &str, u: &RawUpstream) -> UpstreamConfig {
    if u.endpoints.is_empty() {
        errs.push(
            &format!("{path}.endpoints"),
            "at least one endpoint is needed",
        );
    }
    let mut endpoints = Vec::new();
    for (j, ep) in u.endpoints.iter().enumerate() {
        match ep.to_socket_addrs().map(|mut a| a.next()) {
            Ok(Some(addr)) => endpoints.push((addr, ep.clone())),
            _ => errs.push(
                &format!("{path}.endpoints[{j}]"),
                format!("`{ep}` is not a resolvable host:port"),
            ),
        }
    }
    let balance = match u.balance.as_deref() {
        None | Some("round_robin") => Balance::RoundRobin,
        Some("least_loaded") => Balance::LeastLoaded,
        Some(other) => {
            errs.push(
                &format!("{path}.balance"),
                format!("`{other}` is not one of round_robin, least_loaded"),
            );
            Balance::RoundRobin
        }
    };
    let hc = u.health_check.as_ref();
    let health_check = HealthCheckConfig {
        interval: errs.duration(
            &format!("{path}.health_check.interval"),
            &hc.and_then(|h| h.interval.clone()),
            Duration::from_secs(5),
        ),
        timeout: errs.duration(
            &format!("{path}.health_check.timeout"),
            &hc.and_then(|h| h.timeout.clone()),
            Duration::from_secs(1),
        ),
        path: hc.and_then(|h| h.path.clone()),
    };
    if let Some(p) = &health_check.path {
        if !p.starts_with('/') || p.contains(char::is_whitespace) {
            errs.push(
                &format!("{path}.health_check.path"),
                format!("`{p}` is not an absolute path"),
            );
        }
    }
    let admission = admission(errs, path, u.max_inflight, u.max_queue, &u.queue_timeout);
    let api_key = match (&u.api_key_env, &u.api_key_file) {
        (Some(_), Some(_)) => {
            errs.push(
                &format!("{path}.api_key_file"),
                "give either api_key_env or api_key_file",
            );
            None
        }
        (Some(var), None) => match std::env::var(var) {
            Ok(key) if !key.trim().is_empty() => Some(Secret(key.trim().to_string())),
            _ => {
                errs.push(
                    &format!("{path}.api_key_env"),
                    format!("`{var}` is not set (or empty) in the gateway's environment"),
                );
                None
            }
        },
        (None, Some(file)) => match std::fs::read_to_string(file) {
            Ok(key) if !key.trim().is_empty() => Some(Secret(key.trim().to_string())),
            Ok(_) => {
                errs.push(
                    &format!("{path}.api_key_file"),
                    format!("`{file}` is empty"),
                );
                None
            }
            Err(e) => {
                errs.push(&format!("{path}.api_key_file"), format!("`{file}`: {e}"));
                None
            }
        },
        (None, None) => None,
    };
    let tls = u.tls.as_ref().map(|t| tls(errs, path, t, &endpoints));
    let api = upstream_api(errs, path, u.api.as_deref());
    let continuation = match u.continuation.as_deref() {
        None | Some("none") => Continuation::None,
        Some("chat_prefix") => Continuation::ChatPrefix,
        Some(other) => {
            errs.push(
                &format!("{path}.continuation"),
                format!("`{other}` is not one of none, chat_prefix"),
            );
            Continuation::None
        }
    };
    UpstreamConfig {
        continuation,
        admission,
        tls,
        api_key,
        api,
        name: u.name.clone(),
        endpoints,
        balance,
        connect_timeout: errs.duration(
            &format!("{path}.connect_timeout"),
            &u.connect_timeout,
            Duration::from_secs(2),
        ),
        read_timeout: errs.duration(
            &format!("{path}.read_timeout"),
            &u.read_timeout,
            Duration::from_secs(300),
        ),
        health_check,
    }
}

/// A pool's `api` list: what it serves itself besides chat.
fn upstream_api(errs: &mut Errors, path: &str, given: Option<&[String]>) -> Vec<crate::api::Api> {
    use crate::api::Api;
    let Some(given) = given else {
        return vec![Api::Chat];
    };
    let mut out = Vec::new();
    for (i, name) in given.iter().enumerate() {
        match name.as_str() {
            "chat" => out.push(Api::Chat),
            "responses" => out.push(Api::Responses),
            "messages" => out.push(Api::Messages),
            other => errs.push(
                &format!("{path}.api[{i}]"),
                format!("`{other}` is not one of chat, responses, messages"),
            ),
        }
    }
    if !given.is_empty() && !out.contains(&Api::Chat) {
        errs.push(
            &format!("{path}.api"),
            "list `chat`: the gateway sends chat and completions requests to every pool",
        );
    }
    out
}

fn reasoning(errs: &mut Errors, path: &str, r: &RawReasoning) -> ReasoningConfig {
    let parser = match r.parser.as_deref() {
        None | Some("deepseek_r1") => ParserKind::DeepseekR1,
        Some("qwen3") => ParserKind::Qwen3,
        Some("passthrough") => ParserKind::Passthrough,
        Some("none") => ParserKind::None,
        Some(other) => {
            errs.push(
                &format!("{path}.parser"),
                format!("`{other}` is not one of deepseek_r1, qwen3, passthrough, none"),
            );
            ParserKind::DeepseekR1
        }
    };
    let output_field = match r.output_field.as_deref() {
        None | Some("reasoning_content") => OutputField::ReasoningContent,
        Some("reasoning") => OutputField::Reasoning,
        Some("both") => OutputField::Both,
        Some("none") => OutputField::None,
        Some(other) => {
            errs.push(
                &format!("{path}.output_field"),
                format!("`{other}` is not one of reasoning_content, reasoning, both, none"),
            );
            OutputField::ReasoningContent
        }
    };
    let open_tag = match r.open_tag.as_deref() {
        None | Some("anywhere") => OpenTag::Anywhere,
        Some("leading") => OpenTag::Leading,
        Some(other) => {
            errs.push(
                &format!("{path}.open_tag"),
                format!("`{other}` is not one of anywhere, leading"),
            );
            OpenTag::Anywhere
        }
    };
    let tags = r.tags.as_ref().map_or(Tags::THINK, |t| {
        reasoning_tags(errs, &format!("{path}.tags"), t)
    });
    let step_timeout = r.step_timeout.as_ref().map(|_| {
        errs.duration(
            &format!("{path}.step_timeout"),
            &r.step_timeout,
            Duration::from_secs(10),
        )
    });
    let step_timeout_abort = match r.step_timeout_policy.as_deref() {
        None | Some("continue") => false,
        Some("abort") => true,
        Some(other) => {
            errs.push(
                &format!("{path}.step_timeout_policy"),
                format!("`{other}` is not one of continue, abort"),
            );
            false
        }
    };
    if step_timeout_abort && step_timeout.is_none() {
        errs.push(
            &format!("{path}.step_timeout_policy"),
            "`abort` needs `step_timeout`",
        );
    }
    if r.max_reasoning_tokens == Some(0) {
        errs.push(
            &format!("{path}.max_reasoning_tokens"),
            "must be at least 1",
        );
    }
    if r.checkpoint_every == Some(0) {
        errs.push(&format!("{path}.checkpoint_every"), "must be at least 1");
    }
    let budget = r
        .budget
        .as_ref()
        .map(|b| budget(errs, &format!("{path}.budget"), b, r.max_reasoning_tokens));
    if budget.as_ref().is_some_and(BudgetConfig::continues)
        && matches!(parser, ParserKind::Passthrough | ParserKind::None)
    {
        errs.push(
            &format!("{path}.budget"),
            "`on_exceed: answer` and `min_tokens` need a parser that finds the reasoning (deepseek_r1 or qwen3)",
        );
    }
    let max_reasoning_tokens = r
        .max_reasoning_tokens
        .or(r.budget.as_ref().and_then(|b| b.max_tokens));
    let mut analysis = analysis(errs, path, r);
    analysis.verify.tags = tags.clone();
    ReasoningConfig {
        parser,
        start_in_reasoning: r.start_in_reasoning.unwrap_or(false),
        output_field,
        tags,
        open_tag,
        step_timeout,
        step_timeout_abort,
        max_reasoning_tokens,
        budget,
        checkpoint_every: r
            .checkpoint_every
            .unwrap_or(DEFAULT_CHECKPOINT_EVERY)
            .max(1),
        analysis: std::sync::Arc::new(analysis),
    }
}

/// Extensions per request at most (`budget.max_extensions`).
const MAX_EXTENSIONS: u32 = 8;

/// `reasoning.budget`: the token counts positive and ordered, the texts short.
fn budget(errs: &mut Errors, path: &str, b: &RawBudget, legacy: Option<u64>) -> BudgetConfig {
    if legacy.is_some() && b.max_tokens.is_some() {
        errs.push(
            &format!("{path}.max_tokens"),
            "give either budget.max_tokens or max_reasoning_tokens (its `on_exceed: error` form)",
        );
    }
    let max = b.max_tokens.or(legacy);
    let answer = match b.on_exceed.as_deref() {
        None | Some("error") => false,
        Some("answer") => true,
        Some(other) => {
            errs.push(
                &format!("{path}.on_exceed"),
                format!("`{other}` is not one of answer, error"),
            );
            false
        }
    };
    for (key, v) in [("max_tokens", b.max_tokens), ("min_tokens", b.min_tokens)] {
        if v == Some(0) {
            errs.push(&format!("{path}.{key}"), "must be at least 1");
        }
    }
    if let (Some(min), Some(max)) = (b.min_tokens, max) {
        if min >= max {
            errs.push(
                &format!("{path}.min_tokens"),
                format!("must be below the budget ({max})"),
            );
        }
    }
    let max_extensions = b.max_extensions.unwrap_or(2);
    if max_extensions == 0 || max_extensions > MAX_EXTENSIONS {
        errs.push(
            &format!("{path}.max_extensions"),
            format!("must be from 1 to {MAX_EXTENSIONS}"),
        );
    }
    let mut texts = Vec::new();
    for (key, v, default) in [
        ("bridge", &b.bridge, "Final answer:"),
        ("extend_word", &b.extend_word, "Wait"),
    ] {
        let text = v.clone().unwrap_or_else(|| default.to_string());
        if text.len() > MAX_TAG_BYTES * 4 {
            errs.push(
                &format!("{path}.{key}"),
                format!("at most {} bytes", MAX_TAG_BYTES * 4),
            );
        }
        texts.push(text);
    }
    if texts[1].trim().is_empty() {
        errs.push(&format!("{path}.extend_word"), "must not be empty");
    }
    let mut effort = [None; 3];
    if let Some(e) = &b.effort {
        for (i, (key, v)) in [("low", e.low), ("medium", e.medium), ("high", e.high)]
            .into_iter()
            .enumerate()
        {
            match (v, max) {
                (Some(0), _) => errs.push(&format!("{path}.effort.{key}"), "must be at least 1"),
                (Some(n), Some(max)) if n > max => errs.push(
                    &format!("{path}.effort.{key}"),
                    format!("must not exceed the route's budget ({max})"),
                ),
                _ => {}
            }
            effort[i] = v;
        }
    }
    let extend_word = texts.pop().unwrap_or_default();
    let bridge = texts.pop().unwrap_or_default();
    BudgetConfig {
        answer,
        min_tokens: b.min_tokens,
        bridge,
        extend_word,
        max_extensions: max_extensions.clamp(1, MAX_EXTENSIONS),
        effort,
        cannot_continue: Vec::new(),
    }
}

/// The pools a route that continues generations (`on_exceed: answer`, `min_tokens`) reaches
/// that declare no way to continue one: requests they serve fall back to the `error` form.
/// Decided here, at config load, so no request finds out by trying; [`Config::notices`] says it.
fn budget_pools(route: &RouteConfig, pools: &[UpstreamConfig], engine: bool) -> Vec<String> {
    if !route
        .reasoning
        .budget
        .as_ref()
        .is_some_and(BudgetConfig::continues)
    {
        return Vec::new();
    }
    let mut names = vec![route.upstream.as_str()];
    if let Some(c) = &route.canary {
        names.extend(c.variants.iter().map(|v| v.upstream.as_str()));
    }
    let mut cannot: Vec<String> = Vec::new();
    for name in names {
        let can = if name == ENGINE_UPSTREAM {
            engine
        } else {
            pools
                .iter()
                .find(|p| p.name == name)
                .is_none_or(|p| p.continuation != Continuation::None)
        };
        if !can && !cannot.iter().any(|c| c == name) {
            cannot.push(name.to_string());
        }
    }
    cannot
}

/// Longest reasoning tag: the parser holds back at most this much of a split tag.
const MAX_TAG_BYTES: usize = 64;

/// Reasoning tags: each non-empty, short, without surrounding whitespace; distinct, and neither
/// inside the other (the parser could not tell them apart).
fn reasoning_tags(errs: &mut Errors, path: &str, t: &RawTags) -> Tags {
    let mut ok = true;
    for (key, tag) in [("open", &t.open), ("close", &t.close)] {
        let problem = if tag.is_empty() {
            Some("must not be empty".to_string())
        } else if tag.len() > MAX_TAG_BYTES {
            Some(format!("must be at most {MAX_TAG_BYTES} bytes"))
        } else if tag.trim() != tag {
            Some("must not start or end with whitespace".to_string())
        } else {
            None
        };
        if let Some(p) = problem {
            errs.push(&format!("{path}.{key}"), p);
            ok = false;
        }
    }
    if ok && t.open == t.close {
        errs.push(&format!("{path}.close"), "must differ from `open`");
        ok = false;
    } else if ok && (t.open.contains(t.close.as_str()) || t.close.contains(t.open.as_str())) {
        errs.push(
            &format!("{path}.close"),
            format!(
                "`{}` and `{}` overlap: one contains the other",
                t.open, t.close
            ),
        );
        ok = false;
    }
    if ok {
        Tags::new(t.open.clone(), t.close.clone())
    } else {
        Tags::THINK
    }
}

fn analysis(errs: &mut Errors, path: &str, r: &RawReasoning) -> AnalysisConfig {
    use crate::reasoning::verify::Check;
    let mut a = AnalysisConfig::default();
    if let Some(m) = &r.correction_markers {
        a.correction_markers = m
            .iter()
            .map(|x| x.trim().to_lowercase())
            .filter(|x| !x.is_empty())
            .collect();
    }
    a.stats = r.stats.unwrap_or(false);
    let Some(v) = &r.verify else { return a };
    if let Some(names) = &v.checks {
        a.verify.checks.clear();
        for (i, n) in names.iter().enumerate() {
            match Check::from_label(n) {
                Some(c) => a.verify.checks.push(c),
                None => errs.push(
                    &format!("{path}.verify.checks[{i}]"),
                    format!("`{n}` is not one of unterminated, empty_answer, tag_leak, json, regex, contradiction, loop"),
                ),
            }
        }
    }
    if let Some(re) = &v.answer_regex {
        match regex::Regex::new(re) {
            Ok(r) => {
                a.verify.answer_regex = Some(r);
                if !a.verify.checks.contains(&Check::Regex) {
                    a.verify.checks.push(Check::Regex);
                }
            }
            Err(e) => errs.push(
                &format!("{path}.verify.answer_regex"),
                format!("invalid regex: {e}"),
            ),
        }
    } else if a.verify.checks.contains(&Check::Regex) {
        errs.push(
            &format!("{path}.verify.checks"),
            "the `regex` check needs `answer_regex`",
        );
    }
    match v.loop_ngram {
        Some(0) => errs.push(&format!("{path}.verify.loop_ngram"), "must be at least 1"),
        Some(n) => a.verify.loop_ngram = n,
        None => {}
    }
    a.every_steps = v.every_steps.unwrap_or(0);
    a.periodic_abort = match v.policy.as_deref() {
        None | Some("warn") => false,
        Some("abort") => true,
        Some(other) => {
            errs.push(
                &format!("{path}.verify.policy"),
                format!("`{other}` is not one of warn, abort"),
            );
            false
        }
    };
    match v.loop_max_ratio {
        Some(x) if !(0.0..=1.0).contains(&x) => errs.push(
            &format!("{path}.verify.loop_max_ratio"),
            "must be between 0 and 1",
        ),
        Some(x) => a.verify.loop_max_ratio = x,
        None => {}
    }
    a
}

mod shared;
mod telemetry;

#[cfg(test)]
mod tests;

fn route_cache(
    errs: &mut Errors,
    path: &str,
    c: &RawRouteCache,
) -> Option<reasoning_cache::RouteSettings> {
    let threshold = c
        .threshold
        .unwrap_or(f64::from(reasoning_cache::settings::DEFAULT_THRESHOLD));
    if !(threshold > 0.0 && threshold <= 1.0) {
        errs.push(&format!("{path}.threshold"), "must be in (0, 1]");
    }
    let ttl = errs.duration(
        &format!("{path}.ttl"),
        &c.ttl,
        Duration::from_secs(24 * 3600),
    );
    let max_entries = errs.positive(&format!("{path}.max_entries"), c.max_entries, 100_000);
    if c.enabled == Some(false) {
        return None;
    }
    Some(reasoning_cache::RouteSettings {
        threshold: threshold as f32,
        ttl,
        max_entries,
        guard: c.guard.unwrap_or(true),
        shared_across_tenants: c.shared_across_tenants.unwrap_or(false),
    })
}

fn cache_settings(errs: &mut Errors, c: Option<&RawCacheSettings>) -> CacheSettings {
    let model_dir = PathBuf::from(
        c.and_then(|c| c.model_dir.clone())
            .unwrap_or_else(|| "models/minilm".to_string()),
    );
    let explicit_file = c.and_then(|c| c.model_file.clone());
    let model_file = explicit_file
        .clone()
        .unwrap_or_else(|| reasoning_cache::embed::default_model_file(&model_dir).to_string());
    if model_dir.is_dir() {
        if !model_dir.join(&model_file).is_file() {
            let path = if explicit_file.is_some() {
                "cache.model_file"
            } else {
                "cache.model_dir"
            };
            errs.push(
                path,
                format!(
                    "{} has no {model_file} (run `make models`)",
                    model_dir.display()
                ),
            );
        }
        for f in reasoning_cache::embed::TOKENIZER_FILES {
            if !model_dir.join(f).is_file() {
                errs.push(
                    "cache.model_dir",
                    format!("{} has no {f} (run `make models`)", model_dir.display()),
                );
            }
        }
    } else {
        errs.push(
            "cache.model_dir",
            format!(
                "{} is not a directory with the embedding model (run `make models`)",
                model_dir.display()
            ),
        );
    }
    let onnxruntime = c
        .and_then(|c| c.onnxruntime.clone())
        .map(PathBuf::from)
        .unwrap_or_else(|| reasoning_cache::embed::default_onnxruntime(&model_dir));
    if !onnxruntime.is_file() {
        errs.push(
            "cache.onnxruntime",
            format!(
                "{} is not the ONNX Runtime library (run `make models`)",
                onnxruntime.display()
            ),
        );
    }
    let embed_threads = errs.positive("cache.embed_threads", c.and_then(|c| c.embed_threads), 1);
    // One: a second ONNX Runtime thread shortened a 48-word hit by 0.7 ms in one run of two but
    // cost 20–115 % more CPU per lookup (BENCHMARKS.md), CPU the proxy needs under load.
    let embed_intra_threads = errs.positive(
        "cache.embed_intra_threads",
        c.and_then(|c| c.embed_intra_threads),
        1,
    );
    let tenant_header = c.and_then(|c| c.tenant_header.clone());
    if let Some(h) = &tenant_header {
        if http::HeaderName::from_bytes(h.as_bytes()).is_err() {
            errs.push("cache.tenant_header", format!("`{h}` is not a header name"));
        }
    }
    let mut trusted_proxies = Vec::new();
    for (i, t) in c
        .and_then(|c| c.trusted_proxies.as_ref())
        .into_iter()
        .flatten()
        .enumerate()
    {
        match t.parse::<crate::cidr::Cidr>() {
            Ok(n) => trusted_proxies.push(n),
            Err(e) => errs.push(&format!("cache.trusted_proxies[{i}]"), e),
        }
    }
    // Believed from anyone, a tenant header lets any client read any tenant's answers; silently
    // ignoring it instead would turn the cache off for every client behind the proxy.
    if tenant_header.is_some()
        && c.and_then(|c| c.trusted_proxies.as_ref())
            .is_none_or(Vec::is_empty)
    {
        errs.push(
            "cache.tenant_header",
            "is honoured only from `cache.trusted_proxies`: list the proxies (CIDRs) that set it",
        );
    }
    CacheSettings {
        cache: reasoning_cache::Settings {
            model_dir,
            model_file,
            onnxruntime,
            snapshot_dir: c.and_then(|c| c.snapshot_dir.clone()).map(PathBuf::from),
            snapshot_interval: errs.duration(
                "cache.snapshot_interval",
                &c.and_then(|c| c.snapshot_interval.clone()),
                Duration::from_secs(30),
            ),
            embed_threads,
            embed_intra_threads,
            embed_spin: c.and_then(|c| c.embed_spin).unwrap_or(false),
            ann_ef_search: errs.positive(
                "cache.ann_ef_search",
                c.and_then(|c| c.ann_ef_search),
                reasoning_cache::index::shards::HNSW_EF_SEARCH,
            ),
            embed_timeout: errs.duration(
                "cache.embed_timeout",
                &c.and_then(|c| c.embed_timeout.clone()),
                Duration::from_millis(50),
            ),
        },
        tenant_header: tenant_header.map(|h| h.to_ascii_lowercase()),
        trusted_proxies,
    }
}

fn async_jobs(errs: &mut Errors, a: Option<&RawAsyncJobs>) -> AsyncJobsConfig {
    let mut c = crate::jobs::default_settings();
    let Some(a) = a else {
        return c;
    };
    c.dir = a.dir.clone().map(PathBuf::from);
    for (path, v, slot) in [
        ("async_jobs.max_jobs", a.max_jobs, &mut c.max_jobs),
        ("async_jobs.max_running", a.max_running, &mut c.max_running),
    ] {
        *slot = errs.positive(path, v, *slot);
    }
    c.ttl = errs.duration("async_jobs.ttl", &a.ttl, c.ttl);
    c.callback_timeout = errs.duration(
        "async_jobs.callback_timeout",
        &a.callback_timeout,
        c.callback_timeout,
    );
    if let Some(r) = a.callback_retries {
        c.callback_retries = r;
    }
    if a.checkpoint_every == Some(0) {
        errs.push("async_jobs.checkpoint_every", "must be at least 1");
    }
    c.checkpoint_every = a.checkpoint_every.filter(|n| *n > 0);
    c.callback_secret = match (&a.callback_secret, &a.callback_secret_env) {
        (Some(_), Some(_)) => {
            errs.push(
                "async_jobs.callback_secret_env",
                "give either callback_secret or callback_secret_env",
            );
            None
        }
        // An empty key signs with a key anyone can guess: refuse it rather than pretend.
        (Some(s), None) if s.0.trim().is_empty() => {
            errs.push("async_jobs.callback_secret", "must not be empty");
            None
        }
        (Some(s), None) => Some(s.clone()),
        (None, Some(var)) => match std::env::var(var) {
            Ok(s) if !s.trim().is_empty() => Some(Secret(s)),
            Ok(_) => {
                errs.push(
                    "async_jobs.callback_secret_env",
                    format!("environment variable `{var}` is empty"),
                );
                None
            }
            Err(_) => {
                errs.push(
                    "async_jobs.callback_secret_env",
                    format!("environment variable `{var}` is not set"),
                );
                None
            }
        },
        (None, None) => None,
    };
    c.callback_allow = a
        .callback_allow
        .iter()
        .flatten()
        .enumerate()
        .filter_map(|(i, entry)| {
            crate::jobs::target::Allow::parse(entry)
                .map_err(|why| errs.push(&format!("async_jobs.callback_allow[{i}]"), why))
                .ok()
        })
        .collect();
    c.max_jobs_per_tenant = errs.positive(
        "async_jobs.max_jobs_per_tenant",
        a.max_jobs_per_tenant,
        c.max_jobs_per_tenant,
    );
    c.max_bytes = match a.max_bytes {
        Some(0) => {
            errs.push("async_jobs.max_bytes", "must be greater than 0");
            c.max_bytes
        }
        Some(n) => n,
        None => c.max_bytes,
    };
    c.callback_ca = a
        .callback_ca_file
        .as_ref()
        .and_then(|file| match read_pem_roots(file) {
            Ok(roots) => Some(Arc::new(roots)),
            Err(why) => {
                errs.push("async_jobs.callback_ca_file", format!("`{file}`: {why}"));
                None
            }
        });
    c
}

fn tls(errs: &mut Errors, path: &str, t: &RawTls, endpoints: &[(SocketAddr, String)]) -> TlsConfig {
    let valid_name = |name: &str| pingora::tls::ServerName::try_from(name.to_string()).is_ok();
    match &t.server_name {
        Some(name) if !valid_name(name) => errs.push(
            &format!("{path}.tls.server_name"),
            format!("`{name}` is not a DNS name or IP address"),
        ),
        Some(_) => {}
        None => {
            for (j, (_, ep)) in endpoints.iter().enumerate() {
                let host = endpoint_host(ep);
                if !valid_name(host) {
                    errs.push(
                        &format!("{path}.endpoints[{j}]"),
                        format!(
                            "`{host}` cannot be checked against a certificate; set tls.server_name"
                        ),
                    );
                }
            }
        }
    }
    let ca = t
        .ca_file
        .as_ref()
        .and_then(|file| match read_ca_file(file) {
            Ok(certs) => Some(Arc::from(certs)),
            Err(why) => {
                errs.push(&format!("{path}.tls.ca_file"), format!("`{file}`: {why}"));
                None
            }
        });
    TlsConfig {
        server_name: t.server_name.clone(),
        ca,
        verify: t.verify.unwrap_or(true),
    }
}

/// The certificates of a PEM file (DER), each checked to be usable as a trust anchor.
fn read_pem_roots(file: &str) -> Result<Vec<Vec<u8>>, String> {
    let pem = std::fs::read(file).map_err(|e| e.to_string())?;
    let mut certs = Vec::new();
    for item in rustls_pemfile::certs(&mut pem.as_slice()) {
        let der = item.map_err(|e| format!("not a PEM certificate file ({e})"))?;
        let mut store = pingora::tls::RootCertStore::empty();
        store
            .add(der.clone())
            .map_err(|e| format!("a certificate in it is not usable as a root ({e})"))?;
        certs.push(der.to_vec());
    }
    if certs.is_empty() {
        return Err("no PEM certificate in it".to_string());
    }
    Ok(certs)
}

/// A pool's `ca_file` in the form Pingora takes per peer.
fn read_ca_file(file: &str) -> Result<Vec<pingora::utils::tls::WrappedX509>, String> {
    use pingora::utils::tls::{parse_x509, WrappedX509};
    read_pem_roots(file)?
        .into_iter()
        .map(|raw| {
            // Pingora's parser panics on what it cannot parse; webpki accepted it already, so
            // this is a last line of defence for certificates only one of the two understands.
            std::panic::catch_unwind(|| WrappedX509::new(raw, parse_x509))
                .map_err(|_| "a certificate in it could not be parsed".to_string())
        })
        .collect()
}
