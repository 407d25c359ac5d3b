//! A real Prometheus (the Debian package's binary) on loopback, scraping a gateway.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::harness::{free_port, repo_root, TempDir};

/// A running Prometheus, killed on drop.
pub struct Prometheus {
    child: Child,
    /// HTTP port.
    pub port: u16,
    _dir: TempDir,
}

impl Prometheus {
    /// Starts Prometheus scraping `127.0.0.1:{admin_port}` every second with the project's alert
    /// rules loaded; waits (bounded) until the first scrape succeeded.
    pub async fn start(admin_port: u16) -> Prometheus {
        Self::start_with(admin_port, &[]).await
    }

    /// The same with exemplar storage on: it then scrapes OpenMetrics, exemplars included.
    pub async fn start_with_exemplars(admin_port: u16) -> Prometheus {
        Self::start_with(admin_port, &["--enable-feature=exemplar-storage"]).await
    }

    async fn start_with(admin_port: u16, extra_args: &[&str]) -> Prometheus {
        let dir = TempDir::new("prom");
        let rules = repo_root().join("configs/alerts.yml");
        let config = format!(
            "global: {{scrape_interval: 1s, evaluation_interval: 1s}}\nrule_files: [\"{}\"]\nscrape_configs:\n  - job_name: reasoning-gateway\n    static_configs: [{{targets: [\"127.0.0.1:{admin_port}\"]}}]\n",
            rules.display()
        );
        let path = dir.0.join("prometheus.yml");
        std::fs::write(&path, config).expect("write prometheus config");
        let port = free_port();
        let child =
            Command::new(std::env::var("RG_PROMETHEUS").unwrap_or_else(|_| "prometheus".into()))
                .arg(format!("--config.file={}", path.display()))
                .arg(format!(
                    "--storage.tsdb.path={}",
                    dir.0.join("data").display()
                ))
                .arg(format!("--web.listen-address=127.0.0.1:{port}"))
                .args(extra_args)
                .stdout(Stdio::null())
                .stderr(std::fs::File::create(dir.0.join("prometheus.log")).expect("log file"))
                .spawn()
                .expect("start prometheus (apt-get install prometheus; `make test` does)");
        let p = Prometheus {
            child,
            port,
            _dir: dir,
        };
        p.wait_until(
            "up{job=\"reasoning-gateway\"} == 1",
            |r| !r.is_empty(),
            Duration::from_secs(30),
        )
        .await;
        p
    }

    /// Runs an instant query; returns the `data.result` array.
    pub async fn query(&self, expr: &str) -> Result<Vec<Value>, String> {
        let url = format!("http://127.0.0.1:{}/api/v1/query", self.port);
        let resp = reqwest::Client::new()
            .get(url)
            .query(&[("query", expr)])
            .send()
            .await
            .map_err(|e| e.to_string())?;
        let v: Value = resp.json().await.map_err(|e| e.to_string())?;
        if v["status"] != "success" {
            return Err(format!("{expr}: {v}"));
        }
        Ok(v["data"]["result"].as_array().cloned().unwrap_or_default())
    }

    /// Polls a query (bounded) until `ok` accepts its result.
    pub async fn wait_until(
        &self,
        expr: &str,
        ok: impl Fn(&[Value]) -> bool,
        within: Duration,
    ) -> Vec<Value> {
        let deadline = Instant::now() + within;
        loop {
            if let Ok(r) = self.query(expr).await {
                if ok(&r) {
                    return r;
                }
            }
            assert!(
                Instant::now() < deadline,
                "Prometheus never satisfied `{expr}` within {within:?}"
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// `GET` on the HTTP API, as JSON.
    pub async fn api(&self, path: &str) -> Value {
        let url = format!("http://127.0.0.1:{}{path}", self.port);
        reqwest::get(url)
            .await
            .expect("prometheus answers")
            .json()
            .await
            .expect("JSON")
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The first value of an instant-query result as a number.
pub fn scalar(result: &[Value]) -> Option<f64> {
    result.first()?["value"][1].as_str()?.parse().ok()
}
