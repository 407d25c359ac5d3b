use std::time::Duration;

use super::*;
use crate::config::HealthCheckConfig;

fn pool(n: usize, balance: Balance) -> Pool {
    Pool::new(UpstreamConfig {
        admission: None,
        tls: None,
        api_key: None,
        api: vec![crate::api::Api::Chat],
        continuation: Default::default(),
        name: "p".into(),
        endpoints: (0..n)
            .map(|i| {
                (
                    SocketAddr::from(([127, 0, 0, 1], 9000 + i as u16)),
                    format!("h{i}"),
                )
            })
            .collect(),
        balance,
        connect_timeout: Duration::from_secs(1),
        read_timeout: Duration::from_secs(1),
        health_check: HealthCheckConfig {
            interval: Duration::from_secs(1),
            timeout: Duration::from_millis(200),
            path: None,
        },
    })
}

#[test]
fn round_robin_rotates_and_skips_unhealthy_and_tried() {
    let p = pool(3, Balance::RoundRobin);
    let picks: Vec<usize> = (0..6).map(|_| p.pick(&[]).unwrap().0).collect();
    assert_eq!(picks, vec![0, 1, 2, 0, 1, 2]);
    p.endpoints[1].set_healthy(false);
    let picks: Vec<usize> = (0..4).map(|_| p.pick(&[]).unwrap().0).collect();
    assert!(!picks.contains(&1));
    assert_eq!(p.pick(&[0, 2]).map(|x| x.0), None);
}

#[test]
fn least_loaded_prefers_idle_endpoints() {
    let p = pool(2, Balance::LeastLoaded);
    let (first, _held) = p.pick(&[]).unwrap();
    for _ in 0..4 {
        let (i, _g) = p.pick(&[]).unwrap();
        assert_ne!(
            i, first,
            "the busy endpoint was picked while another was idle"
        );
    }
    assert_eq!(p.endpoints[first].inflight(), 1);
}

#[test]
fn inflight_counts_drop_with_the_guard() {
    let p = pool(1, Balance::RoundRobin);
    let g = p.pick(&[]).unwrap();
    assert_eq!(p.endpoints[0].inflight(), 1);
    drop(g);
    assert_eq!(p.endpoints[0].inflight(), 0);
}

#[tokio::test]
async fn health_checks_see_listening_and_closed_ports() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let open = listener.local_addr().unwrap();
    let closed = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap()
    };
    let check = |addr, path: Option<&str>| {
        let mut p = pool(1, Balance::RoundRobin);
        p.config.health_check.path = path.map(String::from);
        p.config.health_check.timeout = Duration::from_millis(500);
        p.endpoints[0] = Arc::new(Endpoint::new(addr, "x".into(), false));
        async move { check_endpoint(&p, &p.endpoints[0]).await }
    };
    assert_eq!(check(open, None).await, Ok(()));
    let refused = check(closed, None).await.unwrap_err();
    assert!(refused.contains("refused"), "{refused}");
    // HTTP checks need a 2xx status line.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let open = listener.local_addr().unwrap();
    let server = tokio::spawn(async move {
        for status in ["200 OK", "503 Service Unavailable"] {
            let (mut s, _) = listener.accept().await.unwrap();
            let mut buf = [0u8; 256];
            let _ = s.read(&mut buf).await;
            s.write_all(format!("HTTP/1.1 {status}\r\ncontent-length: 0\r\n\r\n").as_bytes())
                .await
                .unwrap();
        }
    });
    assert_eq!(check(open, Some("/health")).await, Ok(()));
    assert_eq!(
        check(open, Some("/health")).await,
        Err("GET /health answered 503".to_string())
    );
    server.await.unwrap();
}

/// The bundled engine marks its endpoint healthy the moment its model has loaded; a check that
/// was already waiting on the not-yet-answering engine must not undo that when it times out.
#[tokio::test]
async fn a_check_that_started_earlier_does_not_overwrite_a_newer_verdict() {
    // Accepts connections but never answers: the probe waits for its timeout.
    let silent = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let mut p = pool(1, Balance::RoundRobin);
    p.config.health_check.path = Some("/health".into());
    p.endpoints[0] = Arc::new(Endpoint::new(
        silent.local_addr().unwrap(),
        "x".into(),
        false,
    ));
    p.endpoints[0].set_healthy(false);
    let ep = p.endpoints[0].clone();
    let newer_verdict = async {
        // The probe has connected: now the engine reports itself ready.
        let (_conn, _) = silent.accept().await.unwrap();
        ep.set_healthy(true);
        _conn
    };
    let (_, _conn) = tokio::join!(check_pool(&p), newer_verdict);
    assert!(p.endpoints[0].is_healthy(), "the older probe's failure won");
    // A check that starts after the verdict still counts.
    drop(_conn);
    drop(silent);
    check_pool(&p).await;
    assert!(!p.endpoints[0].is_healthy());
}

#[tokio::test]
async fn admission_bounds_in_flight_queues_in_order_and_refuses_past_the_queue() {
    let a = Arc::new(Admission::new(AdmissionConfig {
        max_inflight: 2,
        max_queue: 1,
        queue_timeout: Duration::from_secs(30),
    }));
    let first = a.try_admit().expect("a free slot");
    let _second = a.try_admit().expect("a free slot");
    assert!(a.try_admit().is_none(), "both slots taken");
    assert_eq!(a.in_flight(), 2);

    let (tx, rx) = tokio::sync::oneshot::channel();
    let waiter = {
        let a = a.clone();
        tokio::spawn(async move {
            let slot = a.wait().await;
            let _ = tx.send(());
            slot
        })
    };
    // Bounded: the spawned task gets in line within a few scheduler turns.
    for _ in 0..10_000 {
        if a.waiting() == 1 {
            break;
        }
        tokio::task::yield_now().await;
    }
    assert_eq!(a.waiting(), 1);
    assert_eq!(a.wait().await.unwrap_err(), Refused::QueueFull);
    assert_eq!(a.waiting(), 1, "the refused request left the line at once");

    drop(first);
    rx.await.unwrap();
    let slot = waiter
        .await
        .unwrap()
        .expect("the waiting request got the freed slot");
    assert_eq!(a.waiting(), 0);
    assert_eq!(a.in_flight(), 2);
    drop(slot);
    assert_eq!(a.in_flight(), 1);
}

#[tokio::test]
async fn admission_gives_up_after_the_queue_timeout() {
    let a = Admission::new(AdmissionConfig {
        max_inflight: 1,
        max_queue: 4,
        queue_timeout: Duration::from_millis(50),
    });
    let _held = a.try_admit().unwrap();
    let started = std::time::Instant::now();
    assert_eq!(a.wait().await.unwrap_err(), Refused::Timeout);
    assert!(started.elapsed() >= Duration::from_millis(50));
    assert_eq!(a.waiting(), 0);
}

#[test]
fn over_tls_the_host_header_leaves_out_the_default_port() {
    let addr = SocketAddr::from(([127, 0, 0, 1], 443));
    let host = |name: &str, tls| Endpoint::new(addr, name.into(), tls).host;
    assert_eq!(host("api.example.com:443", true), "api.example.com");
    assert_eq!(host("api.example.com:8443", true), "api.example.com:8443");
    assert_eq!(host("api.example.com:443", false), "api.example.com:443");
}
