use super::*;

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

fn sa(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

#[test]
fn internal_addresses_are_classified() {
    for (a, class) in [
        ("127.0.0.1", Class::Loopback),
        ("127.255.0.9", Class::Loopback),
        ("::1", Class::Loopback),
        ("0.0.0.0", Class::Unspecified),
        ("0.1.2.3", Class::Unspecified),
        ("::", Class::Unspecified),
        ("169.254.169.254", Class::LinkLocal),
        ("fe80::1", Class::LinkLocal),
        ("10.1.2.3", Class::Private),
        ("172.16.0.1", Class::Private),
        ("172.31.255.255", Class::Private),
        ("192.168.1.1", Class::Private),
        ("fc00::1", Class::Private),
        ("fd12:3456::1", Class::Private),
        ("100.64.0.1", Class::SharedAddressSpace),
        ("100.127.255.255", Class::SharedAddressSpace),
        ("224.0.0.1", Class::Multicast),
        ("ff02::1", Class::Multicast),
        ("255.255.255.255", Class::Broadcast),
        ("240.0.0.1", Class::Reserved),
        ("192.0.2.7", Class::Reserved),
        ("2001:db8::1", Class::Reserved),
        // IPv4 inside IPv6: mapped, compatible, NAT64.
        ("::ffff:127.0.0.1", Class::Loopback),
        ("::ffff:169.254.169.254", Class::LinkLocal),
        ("::ffff:10.0.0.1", Class::Private),
        ("::ffff:0.0.0.0", Class::Unspecified),
        ("::127.0.0.1", Class::Loopback),
        ("64:ff9b::10.0.0.1", Class::Private),
    ] {
        assert_eq!(classify(ip(a)), Some(class), "{a}");
    }
}

#[test]
fn public_addresses_pass() {
    for a in [
        "8.8.8.8",
        "93.184.216.34",
        "172.32.0.1",
        "100.128.0.1",
        "169.253.1.1",
        "2606:4700::1111",
        "::ffff:8.8.8.8",
        "64:ff9b::8.8.8.8",
    ] {
        assert_eq!(classify(ip(a)), None, "{a}");
    }
}

#[test]
fn cidr_blocks_parse_and_match() {
    let c = "10.0.0.0/8".parse::<Cidr>().unwrap();
    assert!(c.contains(ip("10.255.1.1")));
    assert!(c.contains(ip("::ffff:10.0.0.1")), "mapped form matches");
    assert!(!c.contains(ip("11.0.0.1")));
    assert!(!c.contains(ip("fd00::1")));
    let one = "127.0.0.1".parse::<Cidr>().unwrap();
    assert!(one.contains(ip("127.0.0.1")) && !one.contains(ip("127.0.0.2")));
    assert!("0.0.0.0/0".parse::<Cidr>().unwrap().contains(ip("1.2.3.4")));
    assert!("fd00::/8".parse::<Cidr>().unwrap().contains(ip("fdff::1")));
    assert!("::/0".parse::<Cidr>().unwrap().contains(ip("2001::1")));
    assert!("10.0.0.0/33".parse::<Cidr>().ok().is_none());
    assert!("10.0.0/8".parse::<Cidr>().ok().is_none());
    assert!("fd00::/129".parse::<Cidr>().ok().is_none());
}

#[test]
fn allow_entries_are_blocks_or_host_names() {
    assert!(matches!(Allow::parse("10.0.0.0/8"), Ok(Allow::Net(_))));
    assert_eq!(
        Allow::parse("Hooks.Internal."),
        Ok(Allow::Host("hooks.internal".into()))
    );
    for bad in [
        "",
        "10.0.0.0/99",
        "a b",
        "-x.internal",
        "http://x",
        "x/8",
        "a..b",
    ] {
        assert!(Allow::parse(bad).is_err(), "{bad:?}");
    }
}

fn none_local(_: IpAddr) -> bool {
    false
}

#[test]
fn every_resolved_address_must_pass() {
    let p = Policy::default();
    assert_eq!(
        p.vet("example.com", &[sa("93.184.216.34:443")], none_local),
        Ok(vec![sa("93.184.216.34:443")])
    );
    // One internal address among public ones refuses the name.
    assert_eq!(
        p.vet(
            "mixed.example",
            &[sa("93.184.216.34:80"), sa("10.0.0.1:80")],
            none_local
        ),
        Err(Refusal::NotPublic(ip("10.0.0.1"), Class::Private))
    );
    assert!(matches!(
        p.vet("nothing.example", &[], none_local),
        Err(Refusal::Unresolved(..))
    ));
    // Mapped addresses are vetted (and connected to) as IPv4.
    assert_eq!(
        p.vet("x", &[sa("[::ffff:127.0.0.1]:80")], none_local),
        Err(Refusal::NotPublic(ip("127.0.0.1"), Class::Loopback))
    );
}

#[test]
fn the_allowlist_opens_blocks_and_names_but_never_the_gateway_itself() {
    let p = Policy {
        allow: vec![
            Allow::parse("127.0.0.1/32").unwrap(),
            Allow::parse("hooks.internal").unwrap(),
        ],
        own: vec![sa("127.0.0.1:8080"), sa("0.0.0.0:9090")],
    };
    assert!(p
        .vet("127.0.0.1", &[sa("127.0.0.1:7000")], none_local)
        .is_ok());
    assert_eq!(
        p.vet("127.0.0.2", &[sa("127.0.0.2:7000")], none_local),
        Err(Refusal::NotPublic(ip("127.0.0.2"), Class::Loopback))
    );
    assert!(p
        .vet("HOOKS.internal", &[sa("10.9.9.9:443")], none_local)
        .is_ok());
    // The public listener, by address; the admin listener (on 0.0.0.0) by any local address.
    assert_eq!(
        p.vet("127.0.0.1", &[sa("127.0.0.1:8080")], none_local),
        Err(Refusal::OwnListener(sa("127.0.0.1:8080")))
    );
    assert_eq!(
        p.vet("127.0.0.1", &[sa("127.0.0.1:9090")], |i| i.is_loopback()),
        Err(Refusal::OwnListener(sa("127.0.0.1:9090")))
    );
    assert_eq!(
        p.vet("hooks.internal", &[sa("10.9.9.9:9090")], |i| i
            == ip("10.9.9.9")),
        Err(Refusal::OwnListener(sa("10.9.9.9:9090")))
    );
    // Another machine's port 9090 is not the gateway.
    assert!(p
        .vet("hooks.internal", &[sa("10.9.9.8:9090")], |i| i
            == ip("10.9.9.9"))
        .is_ok());
}

#[test]
fn local_addresses_are_recognised() {
    assert!(is_local(ip("127.0.0.1")));
    assert!(is_local(ip("0.0.0.0")));
    // TEST-NET-1 is assigned to no interface.
    assert!(!is_local(ip("192.0.2.1")));
}
