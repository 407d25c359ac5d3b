//! Who a request belongs to: the one tenant derivation the cache and async jobs share.
//!
//! A tenant is a digest of the request's credentials (`Authorization: Bearer …` or
//! `x-api-key`), or of `cache.tenant_header` when the TCP peer is one of
//! `cache.trusted_proxies`. From any other peer that header is ignored (and counted): a client
//! that could name its tenant could read anyone's cached answers. A request without credentials
//! has no tenant.
//!
//! Async jobs run later through the gateway's own listener. The runner carries the submitter's
//! tenant in [`RELAY_HEADER`], sealed with a random secret of this process; the proxy believes
//! the header only when the secret matches and strips it before the upstream.

use std::net::IpAddr;

use crate::cidr::Cidr;
use crate::config::CacheSettings;

use reasoning_cache::key::tenant_id;

/// The internal header carrying a job's tenant from the runner to the proxy.
pub const RELAY_HEADER: &str = "x-reasoning-gateway-tenant";

/// The tenant id of requests without credentials where an id is needed (async job ownership):
/// the same id the cache's key derivation gives no credentials.
pub use reasoning_cache::key::ANONYMOUS;

/// The outcome of [`derive`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Derived {
    /// The tenant id; `None` when the request carries no credentials.
    pub tenant: Option<String>,
    /// A tenant header that was present but not believed (its name, a config name or
    /// [`RELAY_HEADER`]).
    pub ignored: Option<String>,
}

impl Derived {
    /// The tenant id, [`ANONYMOUS`] without credentials.
    pub fn id(&self) -> &str {
        self.tenant.as_deref().unwrap_or(ANONYMOUS)
    }
}

/// Which headers name a tenant, and from whom.
#[derive(Debug, Clone, Copy, Default)]
pub struct Policy<'a> {
    /// `cache.tenant_header` (lower case).
    pub tenant_header: Option<&'a str>,
    /// `cache.trusted_proxies`.
    pub trusted_proxies: &'a [Cidr],
}

impl<'a> Policy<'a> {
    /// The policy of the process-wide cache settings (none: credentials only).
    pub fn of(settings: Option<&'a CacheSettings>) -> Self {
        match settings {
            Some(s) => Policy {
                tenant_header: s.tenant_header.as_deref(),
                trusted_proxies: &s.trusted_proxies,
            },
            None => Policy::default(),
        }
    }
}

/// The per-process secret that seals [`RELAY_HEADER`].
pub struct Relay {
    secret: String,
}

impl Default for Relay {
    fn default() -> Self {
        Relay::new()
    }
}

impl std::fmt::Debug for Relay {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Relay(<redacted>)")
    }
}

impl Relay {
    /// A fresh random secret (256 bits).
    pub fn new() -> Self {
        let bytes: [u8; 32] = rand::random();
        Relay {
            secret: crate::util::hex(&bytes),
        }
    }

    /// The header value carrying `tenant` (an id from [`Derived::id`]).
    pub fn seal(&self, tenant: &str) -> String {
        format!("{} {tenant}", self.secret)
    }

    /// The tenant id in a header value, when it was sealed by this process.
    fn open<'v>(&self, value: &'v str) -> Option<&'v str> {
        let (secret, tenant) = value.split_once(' ')?;
        constant_time_eq(secret.as_bytes(), self.secret.as_bytes()).then_some(tenant)
    }
}

/// Equal without revealing through timing how long a prefix matched.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// The tenant of a request's credentials: `Authorization: Bearer <key>` or `x-api-key: <key>`
/// (the same key gives the same tenant either way).
pub fn from_credentials(header: &dyn Fn(&str) -> Option<String>) -> Option<String> {
    let bearer = header("authorization").and_then(|v| {
        let (scheme, token) = v.trim().split_once(' ')?;
        let token = token.trim();
        (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty()).then(|| token.to_string())
    });
    let key = bearer.or_else(|| {
        header("x-api-key")
            .map(|k| k.trim().to_string())
            .filter(|k| !k.is_empty())
    })?;
    Some(tenant_id(Some(&format!("Bearer {key}"))))
}

/// Derives a request's tenant. `header` reads request headers (lower-case names); `peer` is
/// the TCP peer's address.
pub fn derive(
    header: &dyn Fn(&str) -> Option<String>,
    peer: Option<IpAddr>,
    policy: &Policy<'_>,
    relay: &Relay,
) -> Derived {
    let mut ignored = None;
    if let Some(value) = header(RELAY_HEADER) {
        match relay.open(&value) {
            Some(id) => {
                return Derived {
                    tenant: (id != ANONYMOUS && !id.is_empty()).then(|| id.to_string()),
                    ignored: None,
                }
            }
            None => ignored = Some(RELAY_HEADER.to_string()),
        }
    }
    if let Some(name) = policy.tenant_header {
        if let Some(value) = header(name).filter(|v| !v.trim().is_empty()) {
            let trusted =
                peer.is_some_and(|ip| crate::cidr::any_contains(policy.trusted_proxies, ip));
            if trusted {
                return Derived {
                    tenant: Some(tenant_id(Some(value.trim()))),
                    ignored,
                };
            }
            ignored = Some(name.to_string());
        }
    }
    Derived {
        tenant: from_credentials(header),
        ignored,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn headers(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let map: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        move |name: &str| map.get(name).cloned()
    }

    fn ip(s: &str) -> Option<IpAddr> {
        Some(s.parse().unwrap())
    }

    #[test]
    fn credentials_are_a_bearer_token_or_an_api_key() {
        let relay = Relay::new();
        let p = Policy::default();
        let bearer = derive(
            &headers(&[("authorization", "Bearer sk-a")]),
            None,
            &p,
            &relay,
        );
        let api_key = derive(&headers(&[("x-api-key", "sk-a")]), None, &p, &relay);
        assert!(bearer.tenant.is_some());
        assert_eq!(bearer.tenant, api_key.tenant);
        // Compatible with the admin purge's `api_key` parameter and existing snapshots.
        assert_eq!(
            bearer.tenant.as_deref(),
            Some(tenant_id(Some("Bearer sk-a")).as_str())
        );
        let other = derive(&headers(&[("x-api-key", "sk-b")]), None, &p, &relay);
        assert_ne!(bearer.tenant, other.tenant);
        for none in [
            headers(&[]),
            headers(&[("authorization", "Bearer ")]),
            headers(&[("authorization", "Basic")]),
            headers(&[("x-api-key", "  ")]),
        ] {
            let d = derive(&none, None, &p, &relay);
            assert_eq!(d.tenant, None);
            assert_eq!(d.id(), ANONYMOUS);
        }
    }

    #[test]
    fn the_tenant_header_is_believed_only_from_trusted_proxies() {
        let relay = Relay::new();
        let nets = ["10.0.0.0/8".parse().unwrap()];
        let p = Policy {
            tenant_header: Some("x-tenant"),
            trusted_proxies: &nets,
        };
        let h = headers(&[
            ("x-tenant", "victim"),
            ("authorization", "Bearer sk-attacker"),
        ]);
        let from_proxy = derive(&h, ip("10.1.2.3"), &p, &relay);
        assert_eq!(from_proxy.tenant, Some(tenant_id(Some("victim"))));
        assert_eq!(from_proxy.ignored, None);
        let mapped = derive(&h, ip("::ffff:10.1.2.3"), &p, &relay);
        assert_eq!(mapped.tenant, from_proxy.tenant);
        for untrusted in [ip("127.0.0.1"), ip("192.168.0.1"), ip("::1"), None] {
            let d = derive(&h, untrusted, &p, &relay);
            assert_eq!(d.tenant, Some(tenant_id(Some("Bearer sk-attacker"))));
            assert_eq!(d.ignored.as_deref(), Some("x-tenant"));
        }
        let keyless = derive(
            &headers(&[("x-tenant", "victim")]),
            ip("127.0.0.1"),
            &p,
            &relay,
        );
        assert_eq!(keyless.tenant, None);
    }

    #[test]
    fn the_relay_header_is_believed_only_with_this_process_secret() {
        let relay = Relay::new();
        let p = Policy::default();
        let victim = tenant_id(Some("Bearer sk-victim"));
        let sealed = relay.seal(&victim);
        let ok = derive(&headers(&[(RELAY_HEADER, &sealed)]), None, &p, &relay);
        assert_eq!(ok.tenant.as_deref(), Some(victim.as_str()));
        let anonymous = relay.seal(ANONYMOUS);
        let none = derive(&headers(&[(RELAY_HEADER, &anonymous)]), None, &p, &relay);
        assert_eq!(none.tenant, None);
        // Another process's secret, a guessed one, no secret at all.
        let forged = Relay::new().seal(&victim);
        for bad in [forged.as_str(), victim.as_str(), "x y", ""] {
            let h = headers(&[(RELAY_HEADER, bad), ("authorization", "Bearer sk-a")]);
            let d = derive(&h, ip("127.0.0.1"), &p, &relay);
            assert_eq!(d.tenant, Some(tenant_id(Some("Bearer sk-a"))));
            assert_eq!(d.ignored.as_deref(), Some(RELAY_HEADER));
        }
        assert!(!format!("{relay:?}").contains(&relay.secret));
    }
}
