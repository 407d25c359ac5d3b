//! Runs the real `reasoning-gateway` binary on ephemeral loopback ports.

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The gateway binary: `$REASONING_GATEWAY_BIN`, or next to the test executable's `deps/`.
pub fn gateway_bin() -> PathBuf {
    if let Ok(p) = std::env::var("REASONING_GATEWAY_BIN") {
        return PathBuf::from(p);
    }
    let exe = std::env::current_exe().expect("test executable path");
    let dir = exe
        .parent()
        .and_then(|d| d.parent())
        .expect("target profile dir");
    let bin = dir.join("reasoning-gateway");
    assert!(
        bin.exists(),
        "{} is missing: build it first (`cargo build --release --workspace`)",
        bin.display()
    );
    bin
}

/// The repository root: from `CARGO_MANIFEST_DIR` as cargo and nextest set it when they run a
/// test, else as it was at compile time. (The compile-time value alone goes stale when two
/// clones share one `CARGO_TARGET_DIR`: this crate is not rebuilt for a new path, and tests
/// would read the other clone's `models/`.)
pub fn repo_root() -> PathBuf {
    std::env::var_os("CARGO_MANIFEST_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")))
        .parent()
        .expect("workspace root")
        .to_path_buf()
}

/// A free loopback port (bound and released; the gateway binds it right after).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

/// `N` distinct free loopback ports: all held at once while picked, so two of them are never
/// the same (two `free_port` calls may return one port twice).
pub fn free_ports<const N: usize>() -> [u16; N] {
    let held: Vec<TcpListener> = (0..N)
        .map(|_| TcpListener::bind("127.0.0.1:0").expect("free port"))
        .collect();
    std::array::from_fn(|i| held[i].local_addr().expect("free port").port())
}

/// Polls `probe` every 20 ms until it returns `Some` (bounded by `within`, which fails the
/// test naming `what`): the one wait helper new tests use instead of sleeping.
pub async fn eventually<T, F, Fut>(within: Duration, what: &str, mut probe: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + within;
    loop {
        if let Some(v) = probe().await {
            return v;
        }
        assert!(Instant::now() < deadline, "not within {within:?}: {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A running gateway process, killed on drop.
pub struct GatewayProc {
    child: Child,
    /// Proxy port.
    pub port: u16,
    /// Admin port.
    pub admin_port: u16,
    /// Log file (stderr of the gateway).
    pub log: PathBuf,
    /// The config file it runs on.
    pub config: PathBuf,
    /// The admin token [`GatewayProc::admin_get`] and [`GatewayProc::admin_post`] send (a test
    /// that rotates it sets the new one here).
    pub admin_token: Option<String>,
    _dir: TempDir,
}

/// The environment variable [`GatewayProc::start_with_admin_token`] passes the token in.
pub const ADMIN_TOKEN_ENV: &str = "RG_TEST_ADMIN_TOKEN";

/// A directory removed on drop.
pub struct TempDir(pub PathBuf);

impl TempDir {
    /// Creates a fresh directory under the system temp dir.
    pub fn new(tag: &str) -> TempDir {
        let p =
            std::env::temp_dir().join(format!("rg-{tag}-{}-{:x}", std::process::id(), rand_u64()));
        std::fs::create_dir_all(&p).expect("create temp dir");
        TempDir(p)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn rand_u64() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u64(Instant::now().elapsed().as_nanos() as u64);
    h.finish()
}

impl GatewayProc {
    /// Writes `body` (everything but `listen`/`admin_listen`) as the config and starts the
    /// gateway, waiting (bounded by `ready_within`) until `/readyz` answers 200.
    pub fn start(body: &str, ready_within: Duration) -> GatewayProc {
        Self::start_with_args(body, ready_within, &[])
    }

    /// Like [`GatewayProc::start`] with extra CLI arguments (before `serve`).
    pub fn start_with_args(body: &str, ready_within: Duration, args: &[&str]) -> GatewayProc {
        Self::spawn(body, ready_within, args, &[], None)
    }

    /// Like [`GatewayProc::start`] with extra environment variables (API keys, say).
    pub fn start_with_env(body: &str, ready_within: Duration, env: &[(&str, &str)]) -> GatewayProc {
        Self::spawn(body, ready_within, &[], env, None)
    }

    /// Like [`GatewayProc::start`] with `admin_token_env` set and `token` in the gateway's
    /// environment; the admin helpers send it.
    pub fn start_with_admin_token(body: &str, ready_within: Duration, token: &str) -> GatewayProc {
        let body = format!("admin_token_env: {ADMIN_TOKEN_ENV}\n{body}");
        let mut gw = Self::spawn(&body, ready_within, &[], &[(ADMIN_TOKEN_ENV, token)], None);
        gw.admin_token = Some(token.to_string());
        gw
    }

    /// Like [`GatewayProc::start`], the gateway started with this (soft, hard) open-file limit,
    /// as systemd, Docker or a login shell may start it.
    pub fn start_with_fd_limit(
        body: &str,
        ready_within: Duration,
        limit: (u64, u64),
    ) -> GatewayProc {
        Self::spawn(body, ready_within, &[], &[], Some(limit))
    }

    fn spawn(
        body: &str,
        ready_within: Duration,
        args: &[&str],
        env: &[(&str, &str)],
        fd_limit: Option<(u64, u64)>,
    ) -> GatewayProc {
        let dir = TempDir::new("gw");
        let [port, admin_port] = free_ports();
        let config =
            format!("listen: 127.0.0.1:{port}\nadmin_listen: 127.0.0.1:{admin_port}\n{body}");
        let path = dir.0.join("gateway.yaml");
        std::fs::write(&path, config).expect("write config");
        let log = dir.0.join("gateway.log");
        let mut cmd = Command::new(gateway_bin());
        // A killed test run must not leave gateways (and engines) behind. `pre_exec` is `unsafe`
        // by nature (it runs between fork and exec); the closure makes two async-signal-safe
        // calls only. The one `unsafe` outside the cache's index module.
        #[allow(unsafe_code)]
        unsafe {
            use std::os::unix::process::CommandExt;
            cmd.pre_exec(move || {
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
                if let Some((soft, hard)) = fd_limit {
                    let rl = libc::rlimit {
                        rlim_cur: soft as libc::rlim_t,
                        rlim_max: hard as libc::rlim_t,
                    };
                    if libc::setrlimit(libc::RLIMIT_NOFILE, &rl) != 0 {
                        return Err(std::io::Error::last_os_error());
                    }
                }
                Ok(())
            });
        }
        let child = cmd
            .envs(env.iter().copied())
            .args(args)
            .arg("serve")
            .arg("--config")
            .arg(&path)
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).expect("log file"))
            .spawn()
            .expect("spawn gateway");
        let mut gw = GatewayProc {
            child,
            port,
            admin_port,
            log,
            config: path,
            admin_token: None,
            _dir: dir,
        };
        gw.wait_ready(ready_within);
        gw
    }

    fn wait_ready(&mut self, within: Duration) {
        let deadline = Instant::now() + within;
        loop {
            if let Some(status) = self.child.try_wait().expect("poll child") {
                panic!("gateway exited early ({status}); log:\n{}", self.log_text());
            }
            if http_status(self.admin_port, "/readyz") == Some(200)
                && std::net::TcpStream::connect(("127.0.0.1", self.port)).is_ok()
            {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "gateway not ready within {within:?}; log:\n{}",
                self.log_text()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Process id (for signals).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The proxy base URL, e.g. `http://127.0.0.1:1234/v1`.
    pub fn base_url(&self) -> String {
        format!("http://127.0.0.1:{}/v1", self.port)
    }

    /// `http://127.0.0.1:{admin_port}{path}`.
    pub fn admin_url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.admin_port)
    }

    /// `GET` on the admin listener (with the admin token, when there is one), body as text.
    pub async fn admin_get(&self, path: &str) -> String {
        let mut req = reqwest::Client::new().get(self.admin_url(path));
        if let Some(t) = &self.admin_token {
            req = req.bearer_auth(t);
        }
        match req.send().await {
            Ok(r) => r.text().await.unwrap_or_default(),
            Err(_) => String::new(),
        }
    }

    /// `POST` (no body) on the admin listener with the admin token, when there is one: status
    /// and body as text.
    pub async fn admin_post(&self, path: &str) -> (u16, String) {
        let mut req = reqwest::Client::new().post(self.admin_url(path));
        if let Some(t) = &self.admin_token {
            req = req.bearer_auth(t);
        }
        let r = req.send().await.expect("admin POST");
        (r.status().as_u16(), r.text().await.unwrap_or_default())
    }

    /// Waits (bounded) for a log line containing `needle`; the access log is written after the
    /// response, so a client can see its answer before the line exists.
    pub async fn wait_for_log_line(&self, needle: &str, within: Duration) -> String {
        let deadline = Instant::now() + within;
        loop {
            if let Some(l) = self.log_text().lines().find(|l| l.contains(needle)) {
                return l.to_string();
            }
            assert!(
                Instant::now() < deadline,
                "no log line with {needle:?} within {within:?}:\n{}",
                self.log_text()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Waits (bounded) until `n` requests have finished: metrics are recorded in the same phase
    /// as the access log, after the client already has its response.
    pub async fn wait_for_requests(&self, n: usize, within: Duration) {
        let deadline = Instant::now() + within;
        while self.log_text().matches("Request finished.").count() < n {
            assert!(
                Instant::now() < deadline,
                "fewer than {n} requests finished:\n{}",
                self.log_text()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Waits (bounded) until the metric sample starting with `prefix` reaches `value`.
    pub async fn wait_for_metric(&self, prefix: &str, value: f64, within: Duration) {
        let deadline = Instant::now() + within;
        loop {
            let text = self.admin_get("/metrics").await;
            if metric_value(&text, prefix) == Some(value) {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "{prefix} did not reach {value} within {within:?}:\n{text}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Polls async job `id` as the client holding `key` until `done` holds (bounded); returns
    /// the job's view.
    pub async fn wait_for_job(
        &self,
        id: &str,
        key: &str,
        within: Duration,
        done: impl Fn(&serde_json::Value) -> bool,
    ) -> serde_json::Value {
        let deadline = Instant::now() + within;
        loop {
            let j: serde_json::Value = reqwest::Client::new()
                .get(format!("{}/async/jobs/{id}", self.base_url()))
                .bearer_auth(key)
                .send()
                .await
                .expect("the gateway answers")
                .json()
                .await
                .expect("a JSON job view");
            if done(&j) {
                return j;
            }
            assert!(
                Instant::now() < deadline,
                "job {id} never got there within {within:?}: {j:#}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// `SIGTERM` (graceful shutdown); waits (bounded) for the process to exit.
    pub fn terminate(&mut self, within: Duration) -> std::process::ExitStatus {
        self.send_sigterm();
        self.wait_exit(within)
    }

    /// Sends `SIGTERM` and returns at once.
    pub fn send_sigterm(&self) {
        self.send_signal(libc::SIGTERM);
    }

    /// Sends `signal` (e.g. `libc::SIGINT`, what Ctrl-C sends) and returns at once.
    pub fn send_signal(&self, signal: i32) {
        if let (Ok(pid), Ok(signal)) = (
            i32::try_from(self.child.id()),
            nix::sys::signal::Signal::try_from(signal),
        ) {
            let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), signal);
        }
    }

    /// Whether the process is still running.
    pub fn is_running(&mut self) -> bool {
        self.child.try_wait().expect("poll child").is_none()
    }

    /// Waits (bounded) for the process to exit.
    pub fn wait_exit(&mut self, within: Duration) -> std::process::ExitStatus {
        let deadline = Instant::now() + within;
        loop {
            if let Some(status) = self.child.try_wait().expect("poll child") {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "gateway did not exit within {within:?}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// What the gateway logged so far.
    ///
    /// Only whole lines: the gateway may be writing the last one as it is read, and a test
    /// that parses a half-written JSON line would fail for no fault of the gateway.
    pub fn log_text(&self) -> String {
        let mut text = std::fs::read_to_string(&self.log).unwrap_or_default();
        text.truncate(text.rfind('\n').map_or(0, |i| i + 1));
        text
    }
}

impl Drop for GatewayProc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Status of a plain `GET` on loopback, `None` when nothing answers.
pub fn http_status(port: u16, path: &str) -> Option<u16> {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut buf = [0u8; 12];
    s.read_exact(&mut buf).ok()?;
    std::str::from_utf8(&buf[9..12]).ok()?.parse().ok()
}

/// Like [`metric_value`], but the sample must exist.
pub fn required_metric(text: &str, prefix: &str) -> f64 {
    metric_value(text, prefix).unwrap_or_else(|| panic!("{prefix} missing in\n{text}"))
}

/// The value of one metric sample line in Prometheus text (first line starting with `prefix`).
pub fn metric_value(text: &str, prefix: &str) -> Option<f64> {
    text.lines()
        .find(|l| l.starts_with(prefix))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

/// The Python with the `openai` SDK: `$RG_PYTHON`, else the `make venv` default.
pub fn python() -> PathBuf {
    if let Ok(p) = std::env::var("RG_PYTHON") {
        return PathBuf::from(p);
    }
    let home = std::env::var("HOME").unwrap_or_else(|_| "/root".into());
    PathBuf::from(home).join(".cache/reasoning-gateway/venv/bin/python")
}

/// Runs a script under `tests/python/` with the SDK's Python; panics with its output on failure.
pub fn run_python(script: &str, args: &[&str]) -> String {
    let path = repo_root().join("tests/python").join(script);
    let out = Command::new(python())
        .arg(&path)
        .args(args)
        .output()
        .expect("run python (make venv installs it)");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{script} failed:\n{text}");
    text
}
