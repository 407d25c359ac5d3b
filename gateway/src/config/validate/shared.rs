//! `shared`: the Redis a fleet of replicas shares its cache, canary verdicts and jobs through.

use std::time::Duration;

use super::super::raw::RawShared;
use super::super::SharedConfig;
use super::Errors;

/// Default deadline of one command on a request's path.
const DEFAULT_TIMEOUT: Duration = Duration::from_millis(50);
/// Default key prefix.
const DEFAULT_PREFIX: &str = "rg";
/// Longest key prefix.
const MAX_PREFIX: usize = 64;

/// Validates the section.
pub(super) fn shared(errs: &mut Errors, raw: &RawShared) -> SharedConfig {
    let mut redis_url = raw.redis_url.trim().to_string();
    match redis_url.split_once("://").map(|(scheme, _)| scheme) {
        Some("redis" | "valkey") => {}
        Some("rediss" | "valkeys") => errs.push(
            "shared.redis_url",
            "TLS (`rediss://`) is not built in: reach Redis over a private network or a local TLS proxy (stunnel, a service mesh sidecar) and use `redis://`",
        ),
        _ => errs.push(
            "shared.redis_url",
            format!(
                "`{}` is not a `redis://host:port[/db]` URL",
                super::super::redact_url(&redis_url)
            ),
        ),
    }
    if let Some(var) = &raw.password_env {
        match std::env::var(var) {
            Ok(password) if !password.is_empty() => {
                redis_url = with_password(&redis_url, &password);
            }
            _ => errs.push(
                "shared.password_env",
                format!("`{var}` is not set (or empty) in the gateway's environment"),
            ),
        }
    }
    let key_prefix = raw
        .key_prefix
        .clone()
        .unwrap_or_else(|| DEFAULT_PREFIX.to_string());
    let prefix_ok = !key_prefix.is_empty()
        && key_prefix.len() <= MAX_PREFIX
        && key_prefix
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'));
    if !prefix_ok {
        errs.push(
            "shared.key_prefix",
            format!("`{key_prefix}` must be 1 to {MAX_PREFIX} letters, digits, `_`, `-` or `.`"),
        );
    }
    let timeout = errs.duration("shared.timeout", &raw.timeout, DEFAULT_TIMEOUT);
    SharedConfig {
        redis_url,
        key_prefix,
        timeout,
    }
}

/// The URL with `password` as its password (percent-encoded), the user kept if there is one.
fn with_password(url: &str, password: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_string();
    };
    let authority_end = rest.find('/').unwrap_or(rest.len());
    let (user, host) = match rest[..authority_end].rfind('@') {
        Some(at) => (
            rest[..at].split(':').next().unwrap_or_default(),
            &rest[at + 1..],
        ),
        None => ("", rest),
    };
    let encoded: String = password
        .bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect();
    format!("{scheme}://{user}:{encoded}@{host}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_password_from_the_environment_is_encoded_and_never_shown() {
        let url = with_password("redis://10.0.0.5:6379/2", "p@ss:w/rd");
        assert_eq!(url, "redis://:p%40ss%3Aw%2Frd@10.0.0.5:6379/2");
        let cfg = SharedConfig {
            redis_url: url,
            key_prefix: "rg".into(),
            timeout: DEFAULT_TIMEOUT,
        };
        assert_eq!(cfg.display_url(), "redis://:***@10.0.0.5:6379/2");
        assert!(!format!("{cfg:?}").contains("p%40ss"));
        let with_user = with_password("redis://gw:old@redis:6379", "new");
        assert_eq!(with_user, "redis://gw:new@redis:6379");
    }
}
