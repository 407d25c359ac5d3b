//! IP networks in CIDR notation (`10.0.0.0/8`, `fd00::/8`, a bare address for one host): parsed
//! from config, matched against peer addresses. IPv4-mapped IPv6 (`::ffff:10.0.0.1`, what a
//! dual-stack listener reports for an IPv4 client) matches the IPv4 network and vice versa.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::str::FromStr;

/// One IP network.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr {
    /// The network address (host bits cleared).
    addr: IpAddr,
    /// Prefix length in bits.
    prefix: u8,
}

impl Cidr {
    /// Whether `ip` is inside the network.
    pub fn contains(&self, ip: IpAddr) -> bool {
        match (self.addr, ip.to_canonical()) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => {
                mask_v4(u32::from(ip), self.prefix) == u32::from(net)
            }
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                mask_v6(u128::from(ip), self.prefix) == u128::from(net)
            }
            _ => false,
        }
    }
}

/// Whether any network of `nets` contains `ip`.
pub fn any_contains(nets: &[Cidr], ip: IpAddr) -> bool {
    nets.iter().any(|n| n.contains(ip))
}

fn mask_v4(v: u32, prefix: u8) -> u32 {
    match prefix {
        0 => 0,
        p => v & (u32::MAX << (32 - u32::from(p.min(32)))),
    }
}

fn mask_v6(v: u128, prefix: u8) -> u128 {
    match prefix {
        0 => 0,
        p => v & (u128::MAX << (128 - u32::from(p.min(128)))),
    }
}

/// Why a CIDR does not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CidrError {
    /// The part before `/` is not an IP address.
    #[error("`{0}` is not an IP address or network (e.g. 10.0.0.0/8, fd00::/8)")]
    Address(String),
    /// The prefix is not a number within the address's width.
    #[error("`{0}` has a prefix length outside 0..={1}")]
    Prefix(String, u8),
    /// Bits are set past the prefix (`10.0.0.1/8`): probably not the network meant.
    #[error("`{0}` has host bits set; the network is {1}")]
    HostBits(String, Cidr),
}

impl FromStr for Cidr {
    type Err = CidrError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let text = s.trim();
        let (addr_text, prefix_text) = match text.split_once('/') {
            Some((a, p)) => (a, Some(p)),
            None => (text, None),
        };
        let addr: IpAddr = addr_text
            .trim_start_matches('[')
            .trim_end_matches(']')
            .parse()
            .map_err(|_| CidrError::Address(text.to_string()))?;
        let width: u8 = if addr.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix_text {
            None => width,
            Some(p) => p
                .parse::<u8>()
                .ok()
                .filter(|p| *p <= width)
                .ok_or_else(|| CidrError::Prefix(text.to_string(), width))?,
        };
        // `::ffff:10.0.0.0/104` is the IPv4 network 10.0.0.0/8.
        let (addr, prefix) = match addr {
            IpAddr::V6(v6) if prefix >= 96 => match v6.to_ipv4_mapped() {
                Some(v4) => (IpAddr::V4(v4), prefix - 96),
                None => (addr, prefix),
            },
            _ => (addr, prefix),
        };
        let net = match addr {
            IpAddr::V4(a) => IpAddr::V4(Ipv4Addr::from(mask_v4(u32::from(a), prefix))),
            IpAddr::V6(a) => IpAddr::V6(Ipv6Addr::from(mask_v6(u128::from(a), prefix))),
        };
        let cidr = Cidr { addr: net, prefix };
        if net != addr {
            return Err(CidrError::HostBits(text.to_string(), cidr));
        }
        Ok(cidr)
    }
}

impl fmt::Display for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn net(s: &str) -> Cidr {
        s.parse().unwrap()
    }

    #[test]
    fn ipv4_networks_contain_their_addresses_only() {
        let n = net("10.0.0.0/8");
        assert!(n.contains(ip("10.0.0.1")));
        assert!(n.contains(ip("10.255.255.255")));
        assert!(!n.contains(ip("11.0.0.0")));
        assert!(!n.contains(ip("127.0.0.1")));
        let host = net("192.168.1.7");
        assert!(host.contains(ip("192.168.1.7")));
        assert!(!host.contains(ip("192.168.1.8")));
        let all = net("0.0.0.0/0");
        assert!(all.contains(ip("8.8.8.8")));
        assert!(!all.contains(ip("2001:db8::1")));
        assert!(net("172.16.0.0/12").contains(ip("172.31.0.1")));
        assert!(!net("172.16.0.0/12").contains(ip("172.32.0.1")));
    }

    #[test]
    fn ipv6_networks_contain_their_addresses_only() {
        let n = net("fd00::/8");
        assert!(n.contains(ip("fd12:3456::1")));
        assert!(!n.contains(ip("fe80::1")));
        assert!(!n.contains(ip("10.0.0.1")));
        assert!(net("::1/128").contains(ip("::1")));
        assert!(!net("::1").contains(ip("::2")));
        assert!(net("[2001:db8::]/32").contains(ip("2001:db8:ffff::1")));
        assert!(net("::/0").contains(ip("2001:db8::1")));
    }

    #[test]
    fn ipv4_mapped_addresses_match_ipv4_networks_both_ways() {
        assert!(net("10.0.0.0/8").contains(ip("::ffff:10.1.2.3")));
        assert!(!net("10.0.0.0/8").contains(ip("::ffff:11.1.2.3")));
        let mapped = net("::ffff:10.0.0.0/104");
        assert_eq!(mapped, net("10.0.0.0/8"));
        assert!(mapped.contains(ip("10.9.9.9")));
        assert!(mapped.contains(ip("::ffff:10.9.9.9")));
        // Loopback in its mapped form is still loopback, not in a private range.
        assert!(!net("10.0.0.0/8").contains(ip("::ffff:127.0.0.1")));
        assert!(net("127.0.0.0/8").contains(ip("::ffff:127.0.0.1")));
    }

    #[test]
    fn malformed_networks_are_refused() {
        for bad in [
            "",
            "10.0.0",
            "10.0.0.0/33",
            "fd00::/129",
            "10.0.0.0/-1",
            "hosts",
            "10.0.0.0/8/8",
            "10.0.0.0/",
        ] {
            assert!(bad.parse::<Cidr>().is_err(), "{bad} parsed");
        }
        assert!(matches!(
            "10.0.0.1/8".parse::<Cidr>(),
            Err(CidrError::HostBits(_, n)) if n == net("10.0.0.0/8")
        ));
        assert_eq!(net(" 10.0.0.0/8 ").to_string(), "10.0.0.0/8");
    }
}
