//! Where a callback may go. A callback URL is chosen by whoever submits a job, and the gateway
//! calls it from inside the operator's network: without a check, a job could POST to the admin
//! listener (`/admin/cache/purge`), to a cloud metadata service or to any internal host. So the
//! callback host, and every address it resolves to, must be public, unless
//! `async_jobs.callback_allow` lists it; the gateway's own listeners are never called.
//!
//! The decisions here are pure (the resolver and "is this address one of this host's" are
//! injected); [`super::callback`] resolves, vets, and connects to a vetted address itself, so
//! a name that resolves to a public address at submit and to a private one at delivery (DNS
//! rebinding) is refused at delivery.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

pub use crate::cidr::Cidr;

/// One `callback_allow` entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Allow {
    /// Addresses in this block may be called.
    Net(Cidr),
    /// This host name (lower case, exact) may be called, whatever it resolves to.
    Host(String),
}

impl Allow {
    /// Parses an entry: a CIDR block, an address, or a host name.
    pub fn parse(text: &str) -> Result<Allow, String> {
        let t = text.trim();
        if let Ok(c) = t.parse::<Cidr>() {
            return Ok(Allow::Net(c));
        }
        let host = t.trim_end_matches('.').to_ascii_lowercase();
        let label_ok = |l: &str| {
            !l.is_empty()
                && l.len() <= 63
                && l.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
                && !l.starts_with('-')
        };
        if host.is_empty() || t.contains('/') || host.len() > 253 || !host.split('.').all(label_ok)
        {
            return Err(format!(
                "`{text}` is neither a CIDR block (10.0.0.0/8), an address nor a host name"
            ));
        }
        Ok(Allow::Host(host))
    }
}

/// Why an address is not called by default.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Class {
    /// 127.0.0.0/8, ::1.
    Loopback,
    /// 169.254.0.0/16 (cloud metadata lives here), fe80::/10.
    LinkLocal,
    /// RFC 1918, fc00::/7.
    Private,
    /// 100.64.0.0/10 (carrier-grade NAT, often internal).
    SharedAddressSpace,
    /// 0.0.0.0/8, :: (Linux connects these to the host itself).
    Unspecified,
    /// 224.0.0.0/4, ff00::/8.
    Multicast,
    /// 255.255.255.255.
    Broadcast,
    /// Other special-purpose blocks (documentation, benchmarking, reserved, IETF).
    Reserved,
}

/// The class of a non-public address; `None` for a public one. IPv6 forms that carry an IPv4
/// address (mapped, compatible, NAT64) are judged by that address.
pub fn classify(ip: IpAddr) -> Option<Class> {
    match ip {
        IpAddr::V4(v4) => classify_v4(v4),
        IpAddr::V6(v6) => classify_v6(v6),
    }
}

fn classify_v4(ip: Ipv4Addr) -> Option<Class> {
    let [a, b, c, _] = ip.octets();
    Some(match (a, b, c) {
        (127, _, _) => Class::Loopback,
        (0, _, _) => Class::Unspecified,
        (169, 254, _) => Class::LinkLocal,
        (10, _, _) | (172, 16..=31, _) | (192, 168, _) => Class::Private,
        (100, 64..=127, _) => Class::SharedAddressSpace,
        (224..=239, _, _) => Class::Multicast,
        _ if ip.is_broadcast() => Class::Broadcast,
        (240..=255, _, _)
        | (192, 0, 0 | 2)
        | (198, 18..=19, _)
        | (198, 51, 100)
        | (203, 0, 113) => Class::Reserved,
        _ => return None,
    })
}

fn classify_v6(ip: Ipv6Addr) -> Option<Class> {
    if ip.is_unspecified() {
        return Some(Class::Unspecified);
    }
    if ip.is_loopback() {
        return Some(Class::Loopback);
    }
    let s = ip.segments();
    // ::ffff:a.b.c.d (mapped), ::a.b.c.d (compatible), 64:ff9b::a.b.c.d (NAT64).
    let embedded =
        s[..5] == [0; 5] && (s[5] == 0xffff || s[5] == 0) || s[..6] == [0x64, 0xff9b, 0, 0, 0, 0];
    if embedded {
        let o = ip.octets();
        return classify_v4(Ipv4Addr::new(o[12], o[13], o[14], o[15]));
    }
    Some(match s[0] {
        0xfe80..=0xfebf => Class::LinkLocal,
        0xfc00..=0xfdff => Class::Private,
        0xff00..=0xffff => Class::Multicast,
        // Documentation (2001:db8::/32), 6to4 (2002::/16, may wrap a private IPv4), discard.
        0x2001 if s[1] == 0xdb8 => Class::Reserved,
        0x2002 | 0x0100 => Class::Reserved,
        _ => return None,
    })
}

/// Why a callback target is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    /// The address is not public and `callback_allow` does not list it.
    #[error("{0} is a {1:?} address and async_jobs.callback_allow does not list it")]
    NotPublic(IpAddr, Class),
    /// The address is one of the gateway's own listeners.
    #[error("{0} is one of the gateway's own listeners")]
    OwnListener(SocketAddr),
    /// The name did not resolve.
    #[error("`{0}` does not resolve: {1}")]
    Unresolved(String, String),
}

/// What a callback may reach: the operator's allowlist and the gateway's own listeners.
#[derive(Debug, Clone, Default)]
pub struct Policy {
    /// `async_jobs.callback_allow`.
    pub allow: Vec<Allow>,
    /// The gateway's listeners (public, admin, bundled engine): never called.
    pub own: Vec<SocketAddr>,
}

impl Policy {
    /// Vets the addresses `host` resolved to: every one must pass (so a name cannot mix a
    /// public address with an internal one); returns them in order to connect to.
    /// `is_local` says whether an address belongs to this machine (a listener on 0.0.0.0
    /// answers on all of them).
    pub fn vet(
        &self,
        host: &str,
        addrs: &[SocketAddr],
        is_local: impl Fn(IpAddr) -> bool,
    ) -> Result<Vec<SocketAddr>, Refusal> {
        if addrs.is_empty() {
            return Err(Refusal::Unresolved(host.into(), "no addresses".into()));
        }
        let host = host.trim_end_matches('.').to_ascii_lowercase();
        let host_allowed = self
            .allow
            .iter()
            .any(|a| matches!(a, Allow::Host(h) if *h == host));
        addrs
            .iter()
            .map(|a| {
                let a = SocketAddr::new(a.ip().to_canonical(), a.port());
                if self.is_own(a, &is_local) {
                    return Err(Refusal::OwnListener(a));
                }
                let allowed = host_allowed
                    || self
                        .allow
                        .iter()
                        .any(|al| matches!(al, Allow::Net(c) if c.contains(a.ip())));
                match classify(a.ip()) {
                    Some(class) if !allowed => Err(Refusal::NotPublic(a.ip(), class)),
                    _ => Ok(a),
                }
            })
            .collect()
    }

    fn is_own(&self, a: SocketAddr, is_local: &impl Fn(IpAddr) -> bool) -> bool {
        self.own.iter().any(|l| {
            let lip = l.ip().to_canonical();
            l.port() == a.port() && (lip == a.ip() || (lip.is_unspecified() && is_local(a.ip())))
        })
    }
}

/// Whether `ip` is an address of this machine: loopback, unspecified, or one a socket can
/// bind (the kernel refuses to bind addresses of other hosts).
pub fn is_local(ip: IpAddr) -> bool {
    ip.is_loopback()
        || ip.is_unspecified()
        || std::net::UdpSocket::bind(SocketAddr::new(ip, 0)).is_ok()
}

/// Resolves `host:port` (within `within`) and vets every address.
pub async fn resolve(
    policy: &Policy,
    host: &str,
    port: u16,
    within: std::time::Duration,
) -> Result<Vec<SocketAddr>, Refusal> {
    let addrs: Vec<SocketAddr> =
        match tokio::time::timeout(within, tokio::net::lookup_host((host, port))).await {
            Ok(Ok(a)) => a.collect(),
            Ok(Err(e)) => return Err(Refusal::Unresolved(host.into(), e.to_string())),
            Err(_) => return Err(Refusal::Unresolved(host.into(), "timed out".into())),
        };
    policy.vet(host, &addrs, is_local)
}

#[cfg(test)]
#[path = "target/tests.rs"]
mod tests;
