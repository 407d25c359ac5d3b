//! Live reload under continuous load: no request fails, invalid configs stay out, every trigger
//! (admin endpoint, file change, SIGHUP) swaps the routes.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use gateway_tests::fake_upstream::FakeUpstream;
use gateway_tests::harness::{metric_value, GatewayProc};
use serde_json::{json, Value};

fn routes_to(addr: std::net::SocketAddr) -> String {
    format!("upstreams: [{{name: fake, endpoints: [\"{addr}\"], health_check: {{interval: 200ms}}}}]\nroutes: [{{model: m, upstream: fake}}]\n")
}

/// Rewrites the config the way editors do: write a new file, rename it over the old one.
fn replace_config(gw: &GatewayProc, body: &str) {
    let text = std::fs::read_to_string(&gw.config).unwrap();
    let head: String = text.lines().take(2).map(|l| format!("{l}\n")).collect();
    let tmp = gw.config.with_extension("tmp");
    std::fs::write(&tmp, format!("{head}{body}")).unwrap();
    std::fs::rename(&tmp, &gw.config).unwrap();
}

async fn ask(gw: &GatewayProc) -> reqwest::Response {
    reqwest::Client::new()
        .post(format!("{}/chat/completions", gw.base_url()))
        .json(&json!({"model": "m", "messages": [{"role": "user", "content": "x"}]}))
        .send()
        .await
        .unwrap()
}

async fn generation(gw: &GatewayProc) -> u64 {
    let v: Value = serde_json::from_str(&gw.admin_get("/admin/config").await).unwrap();
    v["generation"].as_u64().unwrap()
}

async fn wait_generation(gw: &GatewayProc, at_least: u64) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while generation(gw).await < at_least {
        assert!(
            Instant::now() < deadline,
            "generation {at_least} never reached:\n{}",
            gw.log_text()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn reloads_under_load_lose_no_request_and_keep_invalid_configs_out() {
    let a = FakeUpstream::start("a").await;
    let b = FakeUpstream::start("b").await;
    let gw = GatewayProc::start(&routes_to(a.addr), Duration::from_secs(20));
    let url = format!("{}/chat/completions", gw.base_url());

    // Continuous load on loopback: a bounded loop of requests, recording who answered.
    let stop = Arc::new(AtomicBool::new(false));
    let (ok, failed) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let served_by_b = Arc::new(AtomicUsize::new(0));
    let load = {
        let (stop, ok, failed, served_by_b, url) = (
            stop.clone(),
            ok.clone(),
            failed.clone(),
            served_by_b.clone(),
            url.clone(),
        );
        tokio::spawn(async move {
            let client = reqwest::Client::new();
            for _ in 0..20_000 {
                if stop.load(Ordering::Relaxed) {
                    break;
                }
                let body = json!({"model": "m", "messages": [{"role": "user", "content": "x"}]});
                match client.post(&url).json(&body).send().await {
                    Ok(r) if r.status() == 200 => {
                        if r.headers()["x-upstream-id"] == "b" {
                            served_by_b.fetch_add(1, Ordering::Relaxed);
                        }
                        ok.fetch_add(1, Ordering::Relaxed);
                    }
                    _ => {
                        failed.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
        })
    };

    // 1. An invalid config through the admin endpoint: refused with every error, nothing changes.
    replace_config(
        &gw,
        "routes: [{model: m, upstream: nowhere, colour: red}]\n",
    );
    let resp = reqwest::Client::new()
        .post(format!("http://127.0.0.1:{}/admin/reload", gw.admin_port))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 400);
    let v: Value = resp.json().await.unwrap();
    assert_eq!(v["reloaded"], false);
    assert!(v["errors"][0].as_str().unwrap().contains("colour"), "{v}");
    assert_eq!(generation(&gw).await, 1);

    // 2. A valid config written over it: the file watcher swaps it in.
    replace_config(&gw, &routes_to(b.addr));
    wait_generation(&gw, 2).await;

    // 3. SIGHUP reloads too (same file: a new generation, same routes).
    let pid = gw.pid();
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid as i32),
        nix::sys::signal::Signal::SIGHUP,
    )
    .expect("SIGHUP");
    wait_generation(&gw, 3).await;

    // Let the load see the new routes, then stop it.
    let deadline = Instant::now() + Duration::from_secs(10);
    while served_by_b.load(Ordering::Relaxed) < 20 {
        assert!(
            Instant::now() < deadline,
            "no request reached the new upstream"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    stop.store(true, Ordering::Relaxed);
    load.await.unwrap();
    assert_eq!(
        failed.load(Ordering::Relaxed),
        0,
        "requests failed during reloads"
    );
    assert!(ok.load(Ordering::Relaxed) > 20);

    let m = gw.admin_get("/metrics").await;
    assert!(
        metric_value(
            &m,
            "reasoning_gateway_config_reloads_total{result=\"error\""
        )
        .is_some(),
        "{m}"
    );
    assert!(
        m.contains("reasoning_gateway_config_reloads_total{result=\"ok\",trigger=\"watch\"} 1"),
        "{m}"
    );
    assert!(
        m.contains("reasoning_gateway_config_reloads_total{result=\"ok\",trigger=\"sighup\"} 1"),
        "{m}"
    );
    assert!(gw.log_text().contains("The new config is invalid"));
}

#[tokio::test]
async fn listener_changes_are_reported_as_needing_a_restart() {
    let a = FakeUpstream::start("a").await;
    let gw = GatewayProc::start(&routes_to(a.addr), Duration::from_secs(20));
    let text = std::fs::read_to_string(&gw.config).unwrap();
    let moved = text.replacen(&format!("127.0.0.1:{}", gw.port), "127.0.0.1:1", 1);
    std::fs::write(gw.config.with_extension("tmp"), moved).unwrap();
    std::fs::rename(gw.config.with_extension("tmp"), &gw.config).unwrap();
    let resp = reqwest::Client::new()
        .post(format!("http://127.0.0.1:{}/admin/reload", gw.admin_port))
        .send()
        .await
        .unwrap();
    let v: Value = resp.json().await.unwrap();
    assert_eq!(v["restart_required"], json!(["listen"]), "{v}");
    // Still serving on the old port.
    let r = ask(&gw).await;
    assert_eq!(r.status(), 200);
}

#[tokio::test]
async fn a_configmap_style_symlink_swap_is_picked_up() {
    let a = FakeUpstream::start("a").await;
    let b = FakeUpstream::start("b").await;
    let gw = GatewayProc::start(&routes_to(a.addr), Duration::from_secs(20));
    // Kubernetes mounts a ConfigMap as `file -> ..data/file`, `..data -> ..2024_v1`, and swaps
    // `..data` atomically to a new directory on update. Recreate that layout over the config.
    let dir = gw.config.parent().unwrap().to_path_buf();
    let head: String = std::fs::read_to_string(&gw.config)
        .unwrap()
        .lines()
        .take(2)
        .map(|l| format!("{l}\n"))
        .collect();
    for (version, addr) in [("v1", a.addr), ("v2", b.addr)] {
        std::fs::create_dir_all(dir.join(format!("..{version}"))).unwrap();
        std::fs::write(
            dir.join(format!("..{version}/gateway.yaml")),
            format!("{head}{}", routes_to(addr)),
        )
        .unwrap();
    }
    std::os::unix::fs::symlink("..v1", dir.join("..data")).unwrap();
    let tmp_link = dir.join("gateway.yaml.link");
    std::os::unix::fs::symlink("..data/gateway.yaml", &tmp_link).unwrap();
    std::fs::rename(&tmp_link, &gw.config).unwrap();
    wait_generation(&gw, 2).await;
    // The atomic swap of `..data`.
    std::os::unix::fs::symlink("..v2", dir.join("..data_tmp")).unwrap();
    std::fs::rename(dir.join("..data_tmp"), dir.join("..data")).unwrap();
    wait_generation(&gw, 3).await;
    let r = ask(&gw).await;
    assert_eq!(r.headers()["x-upstream-id"], "b");
}
