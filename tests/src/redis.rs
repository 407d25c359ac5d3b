//! A real `redis-server` (Debian's package; `make test` installs it) on a free loopback port,
//! for fleet-mode tests: started by the test, killed on drop, restartable on the same port.

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use crate::harness::{eventually, free_port, TempDir};

/// A running Redis, killed on drop.
pub struct Redis {
    child: Option<Child>,
    /// Its port on 127.0.0.1.
    pub port: u16,
    dir: TempDir,
}

impl Redis {
    /// Starts `redis-server` on a free port, without persistence; waits (bounded) until it
    /// answers PING.
    pub async fn start() -> Redis {
        let mut r = Redis {
            child: None,
            port: free_port(),
            dir: TempDir::new("redis"),
        };
        r.restart().await;
        r
    }

    /// `redis://127.0.0.1:{port}/0`.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/0", self.port)
    }

    /// The `shared:` config section for a gateway using this Redis, with `prefix`.
    pub fn shared_section(&self, prefix: &str) -> String {
        format!(
            "shared:\n  redis_url: {}\n  key_prefix: {prefix}\n  timeout: 200ms\n",
            self.url()
        )
    }

    /// Kills the server at once (SIGKILL): what a crash or a lost node looks like.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Starts it again on the same port (empty: it keeps nothing on disk).
    pub async fn restart(&mut self) {
        self.kill();
        let child = Command::new(
            std::env::var("RG_REDIS_SERVER").unwrap_or_else(|_| "redis-server".into()),
        )
        .args(["--port", &self.port.to_string(), "--bind", "127.0.0.1"])
        .args([
            "--save",
            "",
            "--appendonly",
            "no",
            "--protected-mode",
            "yes",
        ])
        .arg("--dir")
        .arg(&self.dir.0)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start redis-server (apt-get install redis-server; `make test` does)");
        self.child = Some(child);
        let port = self.port;
        eventually(Duration::from_secs(20), "redis-server answers PING", || async move {
            (Self::command_at(port, &["PING"]).await.ok()? == "+PONG").then_some(())
        })
        .await;
    }

    /// Sends one command (inline RESP) and returns the first reply line, e.g. `+PONG`, `:3`.
    pub async fn command(&self, args: &[&str]) -> Result<String, String> {
        Self::command_at(self.port, args).await
    }

    async fn command_at(port: u16, args: &[&str]) -> Result<String, String> {
        use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
        let mut s = tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .map_err(|e| e.to_string())?;
        let mut req = format!("*{}\r\n", args.len());
        for a in args {
            req.push_str(&format!("${}\r\n{a}\r\n", a.len()));
        }
        s.write_all(req.as_bytes())
            .await
            .map_err(|e| e.to_string())?;
        let mut line = String::new();
        BufReader::new(s)
            .read_line(&mut line)
            .await
            .map_err(|e| e.to_string())?;
        Ok(line.trim_end().to_string())
    }

    /// The integer a command answers (`:N`), e.g. `DBSIZE`.
    pub async fn integer(&self, args: &[&str]) -> i64 {
        let reply = self.command(args).await.expect("redis command");
        reply
            .strip_prefix(':')
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("{args:?} answered {reply:?}"))
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        self.kill();
    }
}
