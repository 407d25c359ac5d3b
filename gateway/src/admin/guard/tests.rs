use super::*;
use http::HeaderValue;

const TOKEN: &str = "s3cret-token";

fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
    let mut h = HeaderMap::new();
    for (k, v) in pairs {
        h.append(*k, HeaderValue::from_str(v).expect("test header"));
    }
    h
}

fn vet_with(
    method: Method,
    path: &str,
    pairs: &[(&'static str, &str)],
    token: Option<&AdminToken>,
    public_metrics: bool,
) -> Result<Endpoint, Refusal> {
    let policy = Policy {
        token,
        public_metrics,
    };
    vet(&method, path, &headers(pairs), &policy)
}

/// With the token configured and `/metrics` public.
fn vet_tok(
    method: Method,
    path: &str,
    pairs: &[(&'static str, &str)],
) -> Result<Endpoint, Refusal> {
    vet_with(method, path, pairs, Some(&AdminToken::new(TOKEN)), true)
}

fn reason(r: Result<Endpoint, Refusal>) -> Option<Reason> {
    r.err().map(|r| r.reason)
}

const AUTH: (&str, &str) = ("authorization", "Bearer s3cret-token");

#[test]
fn probes_and_metrics_are_open_and_metrics_can_be_closed() {
    for path in ["/healthz", "/readyz", "/metrics"] {
        assert!(vet_tok(Method::GET, path, &[]).is_ok(), "{path}");
    }
    let token = AdminToken::new(TOKEN);
    let closed = |pairs: &[(&'static str, &str)]| {
        vet_with(Method::GET, "/metrics", pairs, Some(&token), false)
    };
    assert_eq!(reason(closed(&[])), Some(Reason::Unauthorized));
    assert_eq!(closed(&[AUTH]), Ok(Endpoint::Metrics));
    // The probes stay open even then.
    assert!(vet_with(Method::GET, "/healthz", &[], Some(&token), false).is_ok());
}

#[test]
fn every_operator_endpoint_needs_the_token() {
    let cases = [
        (Method::GET, "/admin/config"),
        (Method::GET, "/admin/cache"),
        (Method::GET, "/admin/canary"),
        (Method::POST, "/admin/cache/purge"),
        (Method::POST, "/admin/cache/snapshot"),
        (Method::POST, "/admin/canary/enable"),
        (Method::POST, "/admin/reload"),
    ];
    for (m, path) in cases {
        let refused = vet_tok(m.clone(), path, &[]).expect_err(path);
        assert_eq!(
            (refused.status, refused.reason),
            (401, Reason::Unauthorized),
            "{path}"
        );
        for wrong in [
            "Bearer s3cret-tokeN",
            "Bearer s3cret-token2",
            "Bearer ",
            "s3cret-token",
            "Basic czNjcmV0LXRva2Vu",
        ] {
            assert_eq!(
                reason(vet_tok(m.clone(), path, &[("authorization", wrong)])),
                Some(Reason::Unauthorized),
                "{path} {wrong}"
            );
        }
        assert!(vet_tok(m.clone(), path, &[AUTH]).is_ok(), "{path}");
        assert!(
            vet_tok(
                m.clone(),
                path,
                &[("authorization", "bearer  s3cret-token ")]
            )
            .is_ok(),
            "{path}: the scheme is case-insensitive"
        );
        // Without a configured token (loopback only) nothing is asked.
        assert!(vet_with(m, path, &[], None, true).is_ok(), "{path}");
    }
}

#[test]
fn two_authorization_headers_are_refused() {
    let r = vet_tok(
        Method::POST,
        "/admin/reload",
        &[AUTH, ("authorization", "Bearer other")],
    );
    assert_eq!(reason(r), Some(Reason::Unauthorized));
}

#[test]
fn mutating_endpoints_are_post_only_and_reads_get_only() {
    for path in [
        "/admin/cache/purge",
        "/admin/cache/snapshot",
        "/admin/canary/enable",
        "/admin/reload",
    ] {
        for m in [Method::GET, Method::PUT, Method::DELETE, Method::HEAD] {
            let r = vet_tok(m, path, &[AUTH]).expect_err(path);
            assert_eq!(
                (r.status, r.reason, r.allow),
                (405, Reason::Method, Some("POST"))
            );
        }
    }
    let r = vet_tok(Method::POST, "/admin/config", &[AUTH]).expect_err("POST on a read");
    assert_eq!((r.status, r.allow), (405, Some("GET")));
    let r = vet_tok(Method::POST, "/healthz", &[]).expect_err("POST on a probe");
    assert_eq!((r.status, r.allow), (405, Some("GET")));
}

#[test]
fn a_browser_origin_is_refused_on_admin_even_with_the_token() {
    for origin in ["http://evil.example", "null", "http://127.0.0.1:9090"] {
        let r = vet_tok(
            Method::POST,
            "/admin/cache/purge",
            &[AUTH, ("origin", origin)],
        )
        .expect_err(origin);
        assert_eq!((r.status, r.reason), (403, Reason::Origin));
        // Without a token as well: the loopback default.
        let r = vet_with(
            Method::POST,
            "/admin/reload",
            &[("origin", origin)],
            None,
            true,
        );
        assert_eq!(reason(r), Some(Reason::Origin));
        let r = vet_tok(Method::GET, "/admin/config", &[AUTH, ("origin", origin)]);
        assert_eq!(reason(r), Some(Reason::Origin));
    }
    // Prometheus and probes are not browsers' targets worth refusing.
    assert!(vet_tok(Method::GET, "/metrics", &[("origin", "http://grafana")]).is_ok());
}

#[test]
fn form_and_text_bodies_are_refused_on_mutating_endpoints() {
    for ct in [
        "text/plain",
        "text/plain;charset=UTF-8",
        "TEXT/PLAIN",
        "application/x-www-form-urlencoded",
        "multipart/form-data; boundary=----x",
        " text/plain ; q=1",
    ] {
        let r = vet_tok(
            Method::POST,
            "/admin/cache/purge",
            &[AUTH, ("content-type", ct)],
        )
        .expect_err(ct);
        assert_eq!((r.status, r.reason), (415, Reason::ContentType), "{ct}");
    }
    // A second, innocent-looking value does not hide a form one.
    let r = vet_tok(
        Method::POST,
        "/admin/reload",
        &[
            AUTH,
            ("content-type", "application/json"),
            ("content-type", "text/plain"),
        ],
    );
    assert_eq!(reason(r), Some(Reason::ContentType));
    for ct in ["application/json", "application/json; charset=utf-8"] {
        assert!(vet_tok(Method::POST, "/admin/reload", &[AUTH, ("content-type", ct)]).is_ok());
    }
    assert!(vet_tok(Method::POST, "/admin/reload", &[AUTH]).is_ok());
}

#[test]
fn a_rebound_host_name_is_refused_on_admin() {
    for host in [
        "evil.example",
        "evil.example:9090",
        "127.0.0.1.nip.io:9090",
        "localhost.evil.example",
        "::1",
        "127.0.0.1:",
        "127.0.0.1:port",
        "[::1",
        "",
    ] {
        let r = vet_tok(Method::POST, "/admin/reload", &[AUTH, ("host", host)]).expect_err(host);
        assert_eq!((r.status, r.reason), (403, Reason::Host), "{host}");
        assert_eq!(
            reason(vet_with(
                Method::GET,
                "/admin/config",
                &[("host", host)],
                None,
                true
            )),
            Some(Reason::Host),
            "{host}"
        );
    }
    for host in [
        "127.0.0.1",
        "127.0.0.1:9090",
        "10.1.2.3:9090",
        "localhost",
        "LocalHost:9090",
        "[::1]",
        "[::1]:9090",
        "[fd00::5]:80",
    ] {
        assert!(
            vet_tok(Method::POST, "/admin/reload", &[AUTH, ("host", host)]).is_ok(),
            "{host}"
        );
    }
    // Probes answer whatever the Host (kubelet sends the pod IP, others a name).
    assert!(vet_tok(Method::GET, "/healthz", &[("host", "gw.svc.cluster.local")]).is_ok());
}

#[test]
fn unknown_paths_are_404_before_anything_else() {
    for path in [
        "/",
        "/admin",
        "/admin/",
        "/admin/cache/purge/",
        "/admin/RELOAD",
        "/metrics/x",
    ] {
        let r = vet_tok(Method::POST, path, &[("origin", "x")]).expect_err(path);
        assert_eq!((r.status, r.reason), (404, Reason::NotFound), "{path}");
    }
}

#[test]
fn the_token_never_shows_in_debug_output() {
    let t = AdminToken::new(TOKEN);
    let shown = format!("{t:?}");
    assert_eq!(shown, "AdminToken(<redacted>)");
    assert!(t.matches(TOKEN.as_bytes()));
    assert!(!t.matches(b"s3cret-toke"));
}
