//! `reasoning-gateway capacity`: sizes a fleet from the latency the gateway observed per
//! reasoning-length class (`request_duration_by_reasoning_length_seconds`).
//!
//! Source: the gateway's own `/metrics` (counts since it started) or a Prometheus server
//! (`increase(...[window])`). Output: the share of traffic within the target latency, each
//! reasoning-length class's latency, the breakpoint class from which requests miss the target,
//! and the replicas a request rate needs (Little's law on the mean latency).

use std::collections::BTreeMap;
use std::fmt::Write;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::TokioIo;
use serde_json::Value;

const METRIC: &str = "reasoning_gateway_request_duration_by_reasoning_length_seconds";
/// Reasoning-length classes in order (labels of the histogram).
const CLASSES: &[&str] = &[
    "0",
    "1-256",
    "257-1024",
    "1025-4096",
    "4097-16384",
    "16385+",
];
/// A class misses the target when more than this share of its requests do.
const MISS_SHARE: f64 = 0.05;

/// One histogram: cumulative counts per upper bound, plus sum and count.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Histogram {
    /// (upper bound, cumulative count), ascending; the last bound is +Inf.
    pub buckets: Vec<(f64, f64)>,
    /// Sum of observations.
    pub sum: f64,
    /// Number of observations.
    pub count: f64,
}

impl Histogram {
    fn add(&mut self, le: f64, v: f64) {
        match self.buckets.iter_mut().find(|(b, _)| *b == le) {
            Some(slot) => slot.1 += v,
            None => {
                self.buckets.push((le, v));
                self.buckets.sort_by(|a, b| a.0.total_cmp(&b.0));
            }
        }
    }

    /// Adds one sample of the `_bucket`, `_sum` or `_count` series (a bucket without `le` is
    /// skipped).
    fn record(&mut self, suffix: &str, le: Option<&str>, v: f64) {
        match (suffix, le) {
            ("_bucket", Some("+Inf")) => self.add(f64::INFINITY, v),
            ("_bucket", Some(x)) => self.add(x.parse().unwrap_or(f64::INFINITY), v),
            ("_bucket", None) => {}
            ("_sum", _) => self.sum += v,
            _ => self.count += v,
        }
    }

    fn total(&self) -> f64 {
        self.buckets
            .last()
            .map_or(self.count, |b| b.1)
            .max(self.count)
    }

    /// Observations at or under `x` (linear inside a bucket, as `histogram_quantile` assumes).
    pub fn count_le(&self, x: f64) -> f64 {
        let mut prev = (0.0, 0.0);
        for &(le, c) in &self.buckets {
            if x <= le {
                if le.is_infinite() {
                    return prev.1;
                }
                let span = le - prev.0;
                let frac = if span > 0.0 { (x - prev.0) / span } else { 1.0 };
                return prev.1 + (c - prev.1) * frac.clamp(0.0, 1.0);
            }
            prev = (le, c);
        }
        prev.1
    }

    /// The `q` quantile (like Prometheus: linear inside the bucket; the highest finite bound
    /// when it falls in +Inf).
    pub fn quantile(&self, q: f64) -> Option<f64> {
        let total = self.total();
        if total <= 0.0 {
            return None;
        }
        let rank = q * total;
        let mut prev = (0.0, 0.0);
        for &(le, c) in &self.buckets {
            if c >= rank {
                if le.is_infinite() {
                    return Some(prev.0);
                }
                let inside = c - prev.1;
                let frac = if inside > 0.0 {
                    (rank - prev.1) / inside
                } else {
                    1.0
                };
                return Some(prev.0 + (le - prev.0) * frac);
            }
            prev = (le, c);
        }
        Some(prev.0)
    }

    fn merge(&mut self, other: &Histogram) {
        for &(le, c) in &other.buckets {
            self.add(le, c);
        }
        self.sum += other.sum;
        self.count += other.count;
    }
}

/// Histograms by reasoning-length class.
pub type ByClass = BTreeMap<String, Histogram>;

fn labels(s: &str) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    let mut rest = s;
    while let Some(eq) = rest.find("=\"") {
        let key = rest[..eq].trim_start_matches(',').trim().to_string();
        let after = &rest[eq + 2..];
        let Some(end) = after.find('"') else { break };
        out.insert(key, after[..end].to_string());
        rest = &after[end + 1..];
    }
    out
}

/// Reads the histogram from Prometheus text (the gateway's `/metrics`), optionally one route.
pub fn from_exposition(text: &str, route: Option<&str>) -> ByClass {
    let mut out = ByClass::new();
    for line in text.lines() {
        let Some(rest) = line.strip_prefix(METRIC) else {
            continue;
        };
        let Some((suffix, rest)) = ["_bucket", "_sum", "_count"]
            .into_iter()
            .find_map(|sfx| rest.strip_prefix(sfx).map(|r| (sfx, r)))
        else {
            continue;
        };
        let (lbl, value) = match (rest.find('{'), rest.rfind('}')) {
            (Some(a), Some(b)) => (labels(&rest[a + 1..b]), rest[b + 1..].trim()),
            _ => (BTreeMap::new(), rest.trim()),
        };
        let Ok(v) = value.split_whitespace().next().unwrap_or("").parse::<f64>() else {
            continue;
        };
        if route.is_some_and(|r| lbl.get("route").map(String::as_str) != Some(r)) {
            continue;
        }
        let class = lbl.get("reasoning_length").cloned().unwrap_or_default();
        out.entry(class)
            .or_default()
            .record(suffix, lbl.get("le").map(String::as_str), v);
    }
    out
}

/// Reads `increase(...[window])` per class from a Prometheus server's query API (`window`
/// `all`: the current counter values).
pub async fn from_prometheus(
    base: &str,
    window: &str,
    route: Option<&str>,
) -> anyhow::Result<ByClass> {
    let sel = route.map_or(String::new(), |r| format!("{{route=\"{r}\"}}"));
    let mut out = ByClass::new();
    for (suffix, by) in [
        ("_bucket", "le, reasoning_length"),
        ("_sum", "reasoning_length"),
        ("_count", "reasoning_length"),
    ] {
        // `all`: the counters as they stand (everything since each gateway started).
        let q = if window == "all" {
            format!("sum by ({by}) ({METRIC}{suffix}{sel})")
        } else {
            format!("sum by ({by}) (increase({METRIC}{suffix}{sel}[{window}]))")
        };
        let url = format!(
            "{}/api/v1/query?query={}",
            base.trim_end_matches('/'),
            urlencode(&q)
        );
        let v: Value = serde_json::from_str(&http_get(&url).await?)?;
        anyhow::ensure!(v["status"] == "success", "Prometheus answered {v}");
        for r in v["data"]["result"].as_array().into_iter().flatten() {
            let class = r["metric"]["reasoning_length"]
                .as_str()
                .unwrap_or_default()
                .to_string();
            let value: f64 = r["value"][1]
                .as_str()
                .and_then(|s| s.parse().ok())
                .unwrap_or(0.0);
            out.entry(class)
                .or_default()
                .record(suffix, r["metric"]["le"].as_str(), value);
        }
    }
    Ok(out)
}

fn urlencode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// `GET` over plain HTTP.
pub async fn http_get(url: &str) -> anyhow::Result<String> {
    let u = crate::jobs::callback::parse_url(url).map_err(anyhow::Error::msg)?;
    let stream = tokio::net::TcpStream::connect((u.host.as_str(), u.port)).await?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
    tokio::spawn(conn);
    let req = hyper::Request::get(u.path.as_str())
        .header("host", u.authority.as_str())
        .body(Empty::<Bytes>::new())?;
    let resp = tokio::time::timeout(Duration::from_secs(30), sender.send_request(req)).await??;
    anyhow::ensure!(
        resp.status().is_success(),
        "{url} answered {}",
        resp.status()
    );
    let body = resp.into_body().collect().await?.to_bytes();
    Ok(String::from_utf8_lossy(&body).into_owned())
}

/// What the command was asked.
#[derive(Debug, Clone)]
pub struct Plan {
    /// Latency target for the 95th percentile.
    pub target: Duration,
    /// Requests per second to size for.
    pub rate: Option<f64>,
    /// Requests one replica serves at once.
    pub slots: usize,
    /// Highest utilisation to plan for.
    pub utilisation: f64,
}

/// The figures (also printed).
#[derive(Debug, Clone, PartialEq)]
pub struct Figures {
    /// Requests observed.
    pub requests: f64,
    /// Share within the target latency.
    pub within_target: f64,
    /// Overall p95 (seconds).
    pub p95: Option<f64>,
    /// Mean latency (seconds).
    pub mean: Option<f64>,
    /// First class (by reasoning length) where more than 5 % miss the target.
    pub breakpoint: Option<String>,
    /// Replicas for the requested rate.
    pub replicas: Option<u64>,
}

/// Computes the figures and the report text.
pub fn analyse(by: &ByClass, plan: &Plan) -> (Figures, String) {
    let target = plan.target.as_secs_f64();
    let mut all = Histogram::default();
    for h in by.values() {
        all.merge(h);
    }
    let requests = all.total();
    let within = if requests > 0.0 {
        all.count_le(target) / requests
    } else {
        0.0
    };
    let mean = (all.count > 0.0).then(|| all.sum / all.count);
    let mut out = String::new();
    let _ = writeln!(out, "requests observed: {requests:.0}");
    let _ = writeln!(
        out,
        "within {:.1} s: {:.1} % (overall p50 {}, p95 {}, mean {})",
        target,
        100.0 * within,
        fmt_s(all.quantile(0.5)),
        fmt_s(all.quantile(0.95)),
        fmt_s(mean)
    );
    let _ = writeln!(
        out,
        "\nreasoning tokens | share of traffic | p50 | p95 | over {target:.1} s"
    );
    let mut breakpoint = None;
    let mut ordered: Vec<(&String, &Histogram)> = by.iter().collect();
    ordered.sort_by_key(|(c, _)| CLASSES.iter().position(|k| k == c).unwrap_or(usize::MAX));
    for (class, h) in ordered {
        let n = h.total();
        if n <= 0.0 {
            continue;
        }
        let over = 1.0 - h.count_le(target) / n;
        if breakpoint.is_none() && over > MISS_SHARE {
            breakpoint = Some(class.clone());
        }
        let _ = writeln!(
            out,
            "{class:>16} | {:>15.1} % | {} | {} | {:.1} %",
            100.0 * n / requests,
            fmt_s(h.quantile(0.5)),
            fmt_s(h.quantile(0.95)),
            100.0 * over
        );
    }
    match &breakpoint {
        Some(c) => {
            let p95 = by.get(c).and_then(|h| h.quantile(0.95));
            let _ = writeln!(
                out,
                "\nbreakpoint: from {c} reasoning tokens more than {:.0} % of requests exceed {target:.1} s (that class's p95 is {}); cap reasoning there (max_reasoning_tokens) or route it to async jobs.",
                100.0 * MISS_SHARE,
                fmt_s(p95)
            );
        }
        None => {
            let _ = writeln!(out, "\nbreakpoint: none, every reasoning-length class meets {target:.1} s for at least {:.0} % of its requests.", 100.0 * (1.0 - MISS_SHARE));
        }
    }
    let replicas = match (plan.rate, mean) {
        (Some(rate), Some(m)) => {
            let concurrent = rate * m;
            let r = (concurrent / (plan.slots as f64 * plan.utilisation))
                .ceil()
                .max(1.0) as u64;
            let _ = writeln!(
                out,
                "replicas for {rate} req/s: {r} (Little's law: {rate} req/s x {m:.2} s mean = {concurrent:.1} requests in flight; {} slots per replica at {:.0} % utilisation)",
                plan.slots,
                100.0 * plan.utilisation
            );
            Some(r)
        }
        _ => None,
    };
    (
        Figures {
            requests,
            within_target: within,
            p95: all.quantile(0.95),
            mean,
            breakpoint,
            replicas,
        },
        out,
    )
}

fn fmt_s(v: Option<f64>) -> String {
    v.map_or("-".to_string(), |s| format!("{s:.2} s"))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// 100 short requests under 1 s; 100 medium, 90 under 5 s and 10 between 5 and 10 s;
    /// 50 long, 10 under 10 s and 40 between 10 and 30 s.
    pub const SYNTHETIC: &str = include_str!("capacity/synthetic.prom");

    #[test]
    fn figures_on_a_known_distribution() {
        let by = from_exposition(SYNTHETIC, None);
        assert_eq!(by.len(), 3);
        let plan = Plan {
            target: Duration::from_secs(10),
            rate: Some(10.0),
            slots: 8,
            utilisation: 0.8,
        };
        let (f, text) = analyse(&by, &plan);
        assert_eq!(f.requests, 250.0);
        // 100 + 100 + 10 of 250 within 10 s.
        assert!((f.within_target - 0.84).abs() < 1e-9, "{text}");
        assert_eq!(f.breakpoint.as_deref(), Some("1025-4096"), "{text}");
        // Mean = (60 + 400 + 1000) / 250 = 5.84 s; 10 req/s -> 58.4 in flight; / (8 x 0.8) -> 10.
        assert!((f.mean.unwrap() - 5.84).abs() < 1e-9);
        assert_eq!(f.replicas, Some(10));
        // p95: rank 237.5 of 250 falls in the long class's 10-30 s bucket once merged.
        let p95 = f.p95.unwrap();
        assert!(p95 > 10.0 && p95 < 30.0, "{p95}");
        assert!(text.contains("breakpoint: from 1025-4096"), "{text}");
    }

    #[test]
    fn a_route_filter_and_a_generous_target_have_no_breakpoint() {
        let by = from_exposition(SYNTHETIC, Some("r"));
        let plan = Plan {
            target: Duration::from_secs(60),
            rate: None,
            slots: 8,
            utilisation: 0.8,
        };
        let (f, text) = analyse(&by, &plan);
        assert_eq!(f.within_target, 1.0);
        assert_eq!(f.breakpoint, None);
        assert!(text.contains("breakpoint: none"));
        assert!(from_exposition(SYNTHETIC, Some("other")).is_empty());
    }

    #[test]
    fn quantiles_interpolate_like_prometheus() {
        let h = Histogram {
            buckets: vec![(1.0, 50.0), (2.0, 100.0), (f64::INFINITY, 100.0)],
            sum: 0.0,
            count: 100.0,
        };
        assert_eq!(h.quantile(0.5), Some(1.0));
        assert_eq!(h.quantile(0.75), Some(1.5));
        assert_eq!(h.count_le(1.5), 75.0);
    }
}
