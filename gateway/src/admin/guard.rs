//! Vetting of admin requests before any handler runs: a pure function of the method, path,
//! headers and admin settings. The admin listener is reachable by everything on the host (and,
//! off loopback, the network): a browser page's cross-site or DNS-rebound requests, other
//! containers of the pod. Checks run cheapest and most specific first; the first failure wins.

use std::net::{Ipv4Addr, Ipv6Addr};

use http::{HeaderMap, Method};

use crate::config::AdminToken;
use crate::openai::ErrorCode;

/// The endpoints the admin listener serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Endpoint {
    /// `GET /metrics`.
    Metrics,
    /// `GET /healthz`.
    Healthz,
    /// `GET /readyz`.
    Readyz,
    /// `GET /admin/config`.
    Config,
    /// `GET /admin/cache`.
    Cache,
    /// `POST /admin/cache/purge`.
    CachePurge,
    /// `POST /admin/cache/snapshot`.
    CacheSnapshot,
    /// `GET /admin/canary`.
    Canary,
    /// `POST /admin/canary/enable`.
    CanaryEnable,
    /// `POST /admin/reload`.
    Reload,
}

impl Endpoint {
    /// The endpoint at `path`, if any.
    pub fn from_path(path: &str) -> Option<Endpoint> {
        Some(match path {
            "/metrics" => Endpoint::Metrics,
            "/healthz" => Endpoint::Healthz,
            "/readyz" => Endpoint::Readyz,
            "/admin/config" => Endpoint::Config,
            "/admin/cache" => Endpoint::Cache,
            "/admin/cache/purge" => Endpoint::CachePurge,
            "/admin/cache/snapshot" => Endpoint::CacheSnapshot,
            "/admin/canary" => Endpoint::Canary,
            "/admin/canary/enable" => Endpoint::CanaryEnable,
            "/admin/reload" => Endpoint::Reload,
            _ => return None,
        })
    }

    /// Whether it changes state (POST only, never from a browser).
    pub fn mutating(self) -> bool {
        matches!(
            self,
            Endpoint::CachePurge
                | Endpoint::CacheSnapshot
                | Endpoint::CanaryEnable
                | Endpoint::Reload
        )
    }

    fn method(self) -> Method {
        if self.mutating() {
            Method::POST
        } else {
            Method::GET
        }
    }

    /// Under `/admin/`: the operator's endpoints, as opposed to the probes and the scrape.
    fn operator(self) -> bool {
        !matches!(
            self,
            Endpoint::Metrics | Endpoint::Healthz | Endpoint::Readyz
        )
    }
}

/// The admin settings the guard applies (from the live config snapshot).
#[derive(Debug, Clone, Copy)]
pub struct Policy<'a> {
    /// The admin token; `None`: no endpoint needs one (loopback listeners only).
    pub token: Option<&'a AdminToken>,
    /// `/metrics` answers without the token.
    pub public_metrics: bool,
}

/// Why a request was refused (the `reason` label of `admin_refusals_total`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reason {
    /// No or a wrong `Authorization: Bearer` token.
    Unauthorized,
    /// Not the endpoint's method.
    Method,
    /// An `Origin` header: the request comes from a web page.
    Origin,
    /// A body type a browser sends cross-site without asking (forms, `text/plain`).
    ContentType,
    /// A `Host` that is neither an IP literal nor `localhost`: a DNS-rebound page.
    Host,
    /// No such endpoint.
    NotFound,
}

impl Reason {
    /// Every reason, for exporting the counters at zero.
    pub const ALL: [Reason; 6] = [
        Reason::Unauthorized,
        Reason::Method,
        Reason::Origin,
        Reason::ContentType,
        Reason::Host,
        Reason::NotFound,
    ];

    /// Metric label.
    pub fn label(self) -> &'static str {
        match self {
            Reason::Unauthorized => "unauthorized",
            Reason::Method => "method",
            Reason::Origin => "origin",
            Reason::ContentType => "content_type",
            Reason::Host => "host",
            Reason::NotFound => "not_found",
        }
    }
}

/// A refused request: what to answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Refusal {
    /// HTTP status.
    pub status: u16,
    /// Why.
    pub reason: Reason,
    /// OpenAI error `code` (it gives the status and `type`).
    pub code: ErrorCode,
    /// Human-readable message.
    pub message: &'static str,
    /// The `Allow` header of a 405.
    pub allow: Option<&'static str>,
}

impl Refusal {
    fn new(reason: Reason) -> Refusal {
        let (code, message) = match reason {
            Reason::Unauthorized => (
                ErrorCode::InvalidAdminToken,
                "This admin endpoint needs `Authorization: Bearer <admin token>`.",
            ),
            Reason::Method => (ErrorCode::MethodNotAllowed, "Method not allowed on this endpoint."),
            Reason::Origin => (
                ErrorCode::OriginNotAllowed,
                "Admin endpoints refuse requests from web pages (an Origin header).",
            ),
            Reason::ContentType => (
                ErrorCode::UnsupportedContentType,
                "Admin endpoints refuse form and text/plain bodies; send no body or application/json.",
            ),
            Reason::Host => (
                ErrorCode::HostNotAllowed,
                "Admin endpoints answer only a Host that is an IP address or localhost.",
            ),
            Reason::NotFound => (ErrorCode::UnknownUrl, "No such admin endpoint."),
        };
        Refusal {
            status: code.status(),
            reason,
            code,
            message,
            allow: None,
        }
    }
}

/// Content types a browser sends cross-site without a CORS preflight (the HTML form ones).
const SIMPLE_CONTENT_TYPES: [&str; 3] = [
    "application/x-www-form-urlencoded",
    "multipart/form-data",
    "text/plain",
];

/// Decides whether a request may reach its endpoint.
pub fn vet(
    method: &Method,
    path: &str,
    headers: &HeaderMap,
    policy: &Policy<'_>,
) -> Result<Endpoint, Refusal> {
    let endpoint = Endpoint::from_path(path).ok_or(Refusal::new(Reason::NotFound))?;
    if endpoint.operator() {
        // A page the victim's browser loaded from a name the attacker rebound to 127.0.0.1 sends
        // that name as Host; tools and operators use an address or localhost.
        if !headers
            .get_all(http::header::HOST)
            .iter()
            .all(|h| h.to_str().is_ok_and(host_is_local_literal))
        {
            return Err(Refusal::new(Reason::Host));
        }
        if headers.contains_key(http::header::ORIGIN) {
            return Err(Refusal::new(Reason::Origin));
        }
    }
    if *method != endpoint.method() {
        return Err(Refusal {
            allow: Some(if endpoint.mutating() { "POST" } else { "GET" }),
            ..Refusal::new(Reason::Method)
        });
    }
    let needs_token = match endpoint {
        Endpoint::Healthz | Endpoint::Readyz => false,
        Endpoint::Metrics => !policy.public_metrics,
        _ => true,
    };
    if let (true, Some(token)) = (needs_token, policy.token) {
        if !bearer(headers).is_some_and(|t| token.matches(t)) {
            return Err(Refusal::new(Reason::Unauthorized));
        }
    }
    if endpoint.mutating()
        && headers
            .get_all(http::header::CONTENT_TYPE)
            .iter()
            .any(|v| is_simple_content_type(v.as_bytes()))
    {
        return Err(Refusal::new(Reason::ContentType));
    }
    Ok(endpoint)
}

/// The token of an `Authorization: Bearer <token>` header (scheme case-insensitive). Several
/// `Authorization` headers are ambiguous and count as none.
fn bearer(headers: &HeaderMap) -> Option<&[u8]> {
    let mut values = headers.get_all(http::header::AUTHORIZATION).iter();
    let value = values.next()?.as_bytes();
    if values.next().is_some() {
        return None;
    }
    let (scheme, token) = value.split_at(value.iter().position(|b| *b == b' ')?);
    if !scheme.eq_ignore_ascii_case(b"bearer") {
        return None;
    }
    let token = token.trim_ascii();
    (!token.is_empty()).then_some(token)
}

/// Whether a `Content-Type` value is one of the form types (its parameters ignored). A value
/// that is not text is refused too: nothing legitimate sends one.
fn is_simple_content_type(value: &[u8]) -> bool {
    let Ok(text) = std::str::from_utf8(value) else {
        return true;
    };
    let essence = text.split(';').next().unwrap_or("").trim();
    SIMPLE_CONTENT_TYPES
        .iter()
        .any(|t| t.eq_ignore_ascii_case(essence))
}

/// `127.0.0.1`, `[::1]:9090`, `localhost:9090`, `10.0.0.5`: an IP literal or `localhost`, with
/// an optional port.
fn host_is_local_literal(host: &str) -> bool {
    // A `:port` suffix, unless the colon belongs to a bare IPv6 address (refused below).
    let name = match host.rsplit_once(':') {
        Some((name, port)) if !name.contains(':') || name.ends_with(']') => {
            if port.is_empty() || port.len() > 5 || !port.bytes().all(|b| b.is_ascii_digit()) {
                return false;
            }
            name
        }
        _ => host,
    };
    if let Some(v6) = name.strip_prefix('[').and_then(|n| n.strip_suffix(']')) {
        return v6.parse::<Ipv6Addr>().is_ok();
    }
    name.eq_ignore_ascii_case("localhost") || name.parse::<Ipv4Addr>().is_ok()
}

#[cfg(test)]
mod tests;
