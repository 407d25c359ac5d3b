//! Callbacks: the finished job POSTed to the client's URL, signed, retried with backoff.
//!
//! Signature header: `x-reasoning-gateway-signature: t=<unix seconds>,v1=<hex>` where `<hex>` is
//! HMAC-SHA256 with `async_jobs.callback_secret` over `<t>.<body>` (the Stripe scheme; check the
//! timestamp to refuse replays). Without a secret no signature is sent.
//!
//! Each attempt resolves the host again, vets every address ([`super::target`]) and connects
//! to a vetted address itself, so the name cannot be pointed elsewhere between the check and
//! the connection. A refused target is not retried.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper_util::rt::TokioIo;
use serde_json::json;
use sha2::{Digest, Sha256};

use super::Jobs;
use crate::metrics::labels::CallbackResult;
use crate::util::now_unix;

/// Header carrying the signature.
pub const SIGNATURE_HEADER: &str = "x-reasoning-gateway-signature";

/// A parsed `http[s]://host[:port]/path` URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CallbackUrl {
    /// `https://`: TLS, the certificate checked against the host.
    pub tls: bool,
    /// `host:port`.
    pub authority: String,
    /// Host alone.
    pub host: String,
    /// Port.
    pub port: u16,
    /// Path and query.
    pub path: String,
}

/// Accepts `http://` and `https://` URLs without user info.
pub fn parse_url(url: &str) -> Result<CallbackUrl, String> {
    let (tls, rest) = match (url.strip_prefix("https://"), url.strip_prefix("http://")) {
        (Some(rest), _) => (true, rest),
        (None, Some(rest)) => (false, rest),
        _ => return Err(format!("`{url}` is not an http:// or https:// URL")),
    };
    let (authority, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    if authority.is_empty() || authority.contains('@') {
        return Err(format!("`{url}` has no usable host"));
    }
    let (host, port) = match authority.rsplit_once(':') {
        Some((h, p)) if !h.ends_with(']') || authority.starts_with('[') => (
            h.to_string(),
            p.parse::<u16>()
                .map_err(|_| format!("`{url}` has an invalid port"))?,
        ),
        _ => (authority.to_string(), if tls { 443 } else { 80 }),
    };
    Ok(CallbackUrl {
        tls,
        authority: authority.to_string(),
        host: host.trim_matches(|c| c == '[' || c == ']').to_string(),
        port,
        path: path.to_string(),
    })
}

/// HMAC-SHA256 (RFC 2104).
pub fn hmac_sha256(key: &[u8], message: &[u8]) -> [u8; 32] {
    const BLOCK: usize = 64;
    let mut k = [0u8; BLOCK];
    if key.len() > BLOCK {
        k[..32].copy_from_slice(&Sha256::digest(key));
    } else {
        k[..key.len()].copy_from_slice(key);
    }
    let mut inner = Sha256::new();
    inner.update(k.map(|b| b ^ 0x36));
    inner.update(message);
    let inner = inner.finalize();
    let mut outer = Sha256::new();
    outer.update(k.map(|b| b ^ 0x5c));
    outer.update(inner);
    outer.finalize().into()
}

/// The signature header value for a body sent at `t`.
pub fn signature(secret: &str, t: u64, body: &[u8]) -> String {
    let mut msg = t.to_string().into_bytes();
    msg.push(b'.');
    msg.extend_from_slice(body);
    format!(
        "t={t},v1={}",
        crate::util::hex(&hmac_sha256(secret.as_bytes(), &msg))
    )
}

/// Delivers a finished job's callback, retrying with exponential backoff. In fleet mode only
/// the job's lease holder sends it, and the job is let go after (see [`super::fleet`]).
pub async fn deliver(jobs: Arc<Jobs>, id: String) {
    attempt(&jobs, &id).await;
    jobs.callbacks_over(&id).await;
}

async fn attempt(jobs: &Arc<Jobs>, id: &str) {
    let id = id.to_string();
    let Some(job) = jobs.snapshot(&id) else {
        return;
    };
    let Some(cb) = job.callback.clone() else {
        return;
    };
    if cb.delivered {
        return;
    }
    let Ok(url) = parse_url(&cb.url) else {
        return;
    };
    let payload = json!({
        "id": job.id,
        "object": "async.job.callback",
        "status": job.status,
        "model": job.model,
        "result": job.result,
        "error": job.error,
        "steps": job.steps,
        "checkpoints": job.checkpoints.len(),
    });
    let body = Bytes::from(serde_json::to_vec(&payload).unwrap_or_default());
    let mut backoff = Duration::from_millis(250);
    let max_attempts = jobs.settings.callback_retries + 1;
    let mut attempts = cb.attempts;
    while attempts < max_attempts {
        if !jobs.may_call_back(&id).await {
            return;
        }
        attempts += 1;
        let result = tokio::time::timeout(
            jobs.settings.callback_timeout,
            post(jobs, &url, &id, &body, job.traceparent.as_deref()),
        )
        .await
        .unwrap_or_else(|_| Err(Failure::Transport("timed out".to_string())));
        let delivered = matches!(result, Ok(s) if (200..300).contains(&s));
        // Counted before the job shows the attempt, so a reader who sees it sees the count.
        if let Some(gw) = jobs.gateway() {
            let result = if delivered {
                CallbackResult::Delivered
            } else {
                CallbackResult::Failed
            };
            gw.metrics().async_job_callbacks_total.with(&result).inc();
        }
        let n = attempts;
        jobs.update_callback(&id, |c| {
            c.attempts = n;
            c.delivered = delivered;
            match &result {
                Ok(s) => {
                    c.last_status = Some(*s);
                    c.last_error = None;
                }
                Err(_) => c.last_error = Some(super::DELIVERY_FAILED.to_string()),
            }
        });
        // Written before the next attempt: a replica taking over knows what was sent.
        if jobs.sync(&id, super::fleet::Sync::Now).await == super::fleet::Synced::Gone {
            return;
        }
        match result {
            Ok(s) if delivered => {
                tracing::debug!(job = %id, attempt = n, status = s, "Async job callback delivered.");
                return;
            }
            Err(Failure::Refused(why)) => {
                tracing::warn!(job = %id, attempt = n, reason = %why, "Async job callback target refused; not retried.");
                return;
            }
            Ok(s) => {
                tracing::warn!(job = %id, attempt = n, status = s, "Async job callback not accepted.");
            }
            Err(Failure::Transport(why)) => {
                tracing::warn!(job = %id, attempt = n, error = %why, "Async job callback attempt failed.");
            }
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(Duration::from_secs(30));
    }
}

/// Why an attempt did not get a status.
#[derive(Debug)]
enum Failure {
    /// The target is not allowed (anymore): not retried.
    Refused(String),
    /// Connection, TLS or HTTP failure: retried.
    Transport(String),
}

async fn post(
    jobs: &Jobs,
    url: &CallbackUrl,
    id: &str,
    body: &Bytes,
    traceparent: Option<&str>,
) -> Result<u16, Failure> {
    let secret = jobs.settings.callback_secret.as_ref();
    let gw = jobs
        .gateway()
        .ok_or_else(|| Failure::Transport("the gateway is stopping".into()))?;
    let policy = jobs.policy(&gw.config());
    let addrs =
        super::target::resolve(&policy, &url.host, url.port, jobs.settings.callback_timeout)
            .await
            .map_err(|e| match e {
                super::target::Refusal::Unresolved(..) => Failure::Transport(e.to_string()),
                _ => Failure::Refused(e.to_string()),
            })?;
    // The vetted addresses themselves, never the name again (DNS rebinding).
    let mut last = None;
    let mut tcp = None;
    for a in &addrs {
        match tokio::net::TcpStream::connect(a).await {
            Ok(s) => {
                tcp = Some(s);
                break;
            }
            Err(e) => last = Some(format!("connect {a}: {e}")),
        }
    }
    let tcp = tcp.ok_or_else(|| Failure::Transport(last.unwrap_or_default()))?;
    let t = |e: String| Failure::Transport(e);
    let stream: Box<dyn crate::upstream::connect::Io> = if url.tls {
        jobs.callback_tls()
            .handshake(&url.host, tcp)
            .await
            .map_err(|e| t(format!("tls: {e}")))?
    } else {
        Box::new(tcp)
    };
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| t(format!("handshake: {e}")))?;
    tokio::spawn(conn);
    let mut builder = hyper::Request::post(url.path.as_str())
        .header("host", url.authority.as_str())
        .header("content-type", "application/json")
        .header("x-reasoning-gateway-job", id);
    if let Some(s) = secret {
        builder = builder.header(SIGNATURE_HEADER, signature(&s.0, now_unix(), body));
    }
    if let Some(tp) = traceparent {
        builder = builder.header("traceparent", tp);
    }
    let req = builder
        .body(Full::new(body.clone()))
        .map_err(|e| t(e.to_string()))?;
    let resp = sender
        .send_request(req)
        .await
        .map_err(|e| t(format!("request: {e}")))?;
    Ok(resp.status().as_u16())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hmac_matches_rfc_4231_case_2() {
        let mac = hmac_sha256(b"Jefe", b"what do ya want for nothing?");
        assert_eq!(
            crate::util::hex(&mac),
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }

    #[test]
    fn urls_are_parsed_or_refused() {
        let u = parse_url("http://127.0.0.1:9000/hook?x=1").unwrap();
        assert_eq!(
            (u.host.as_str(), u.port, u.path.as_str()),
            ("127.0.0.1", 9000, "/hook?x=1")
        );
        assert_eq!(parse_url("http://example.com").unwrap().port, 80);
        let tls = parse_url("https://hooks.example.com/job").unwrap();
        assert!(tls.tls && tls.port == 443 && tls.host == "hooks.example.com");
        assert!(!parse_url("http://example.com").unwrap().tls);
        assert!(parse_url("ftp://example.com/").is_err());
        assert!(parse_url("http://user@example.com/").is_err());
        assert!(parse_url("http://h:99999/").is_err());
    }
}
