//! Files and secrets on the gateway's host: job files hold prompts and the submitter's
//! `Authorization` header, so another local user must not read them; a config whose values
//! overflow is reported by `check` with their paths, not a panic (a reload watcher fed the
//! same file died silently).

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::time::{Duration, Instant};

use gateway_tests::fake_upstream::FakeUpstream;
use gateway_tests::harness::{gateway_bin, GatewayProc, TempDir};
use serde_json::json;

const READY: Duration = Duration::from_secs(20);
const WAIT: Duration = Duration::from_secs(20);

fn mode(p: &Path) -> u32 {
    std::fs::metadata(p).unwrap().permissions().mode() & 0o777
}

#[tokio::test]
async fn job_files_are_private_to_the_gateways_user() {
    let up = FakeUpstream::start("a").await;
    let tmp = TempDir::new("job-files");
    // Not there yet: the gateway creates it (and its parent).
    let dir = tmp.0.join("state").join("jobs");
    let gw = GatewayProc::start(
        &format!(
            "async_jobs:\n  dir: {}\nupstreams: [{{name: fake, endpoints: [\"{}\"]}}]\nroutes:\n  - {{model: \"*\", upstream: fake}}\n",
            dir.display(),
            up.addr
        ),
        READY,
    );
    let r = reqwest::Client::new()
        .post(format!("{}/async/chat/completions", gw.base_url()))
        .bearer_auth("sk-private-key")
        .json(
            &json!({"model": "think", "messages": [{"role": "user", "content": "secret prompt"}]}),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202);
    let id = r.json::<serde_json::Value>().await.unwrap()["id"]
        .as_str()
        .unwrap()
        .to_string();
    let file = dir.join(format!("{id}.json"));
    let deadline = Instant::now() + WAIT;
    while !file.exists() {
        assert!(Instant::now() < deadline, "no job file");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(std::fs::read_to_string(&file)
        .unwrap()
        .contains("sk-private-key"));
    assert_eq!(mode(&file), 0o600, "job file");
    assert_eq!(mode(&dir), 0o700, "job directory");
    assert_eq!(
        mode(dir.parent().unwrap()),
        0o700,
        "its parent, created with it"
    );
}

#[test]
fn check_reports_overflowing_values_with_their_paths_and_does_not_panic() {
    let tmp = TempDir::new("check-overflow");
    let path = tmp.0.join("gateway.yaml");
    std::fs::write(
        &path,
        r#"
upstreams:
  - name: u
    endpoints: ["127.0.0.1:1"]
    health_check: { interval: 100000000000000000000s }
routes:
  - model: m
    upstream: u
    reasoning: { step_timeout: 100000000000h }
    cache: { ttl: 9000000000000s }
    canary:
      variants:
        - { name: a, upstream: u, weight: 4294967295 }
        - { name: b, upstream: u, weight: 4294967295 }
async_jobs:
  ttl: 100000000000h
  callback_secret: ""
"#,
    )
    .unwrap();
    let out = std::process::Command::new(gateway_bin())
        .args(["check", "--config"])
        .arg(&path)
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!text.contains("panicked"), "{text}");
    assert_eq!(out.status.code(), Some(1), "{text}");
    for p in [
        "upstreams[0].health_check.interval",
        "routes[0].reasoning.step_timeout",
        "routes[0].cache.ttl",
        "routes[0].canary.variants[0].weight",
        "routes[0].canary.variants[1].weight",
        "async_jobs.ttl",
        "async_jobs.callback_secret",
    ] {
        assert!(text.contains(&format!("{p}:")), "{p} not reported:\n{text}");
    }
}
