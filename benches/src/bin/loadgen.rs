//! Open-loop, fixed-rate load generator for loopback targets.
//!
//! `loadgen URL RATE SECONDS stream|json [MODEL]` prints one JSON line: requests sent, ok,
//! errors, achieved rate, latency and time-to-first-byte percentiles (µs). Latency is measured
//! from each request's scheduled send time, so a stalled target cannot hide its queueing
//! (no coordinated omission). Requests that do not finish within 10 s count as errors.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;

#[derive(Default)]
struct Sample {
    ok: bool,
    latency_us: u64,
    ttfb_us: u64,
}

fn pct(v: &mut [u64], p: f64) -> u64 {
    if v.is_empty() {
        return 0;
    }
    v.sort_unstable();
    v[((v.len() as f64 * p).ceil() as usize).clamp(1, v.len()) - 1]
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    anyhow::ensure!(
        args.len() >= 5,
        "usage: loadgen URL RATE SECONDS stream|json [MODEL]  (every request asks another question)"
    );
    let url: hyper::Uri = args[1].parse()?;
    let rate: f64 = args[2].parse()?;
    let secs: f64 = args[3].parse()?;
    let stream = args[4] == "stream";
    let model = args.get(5).cloned().unwrap_or_else(|| "bench".into());
    // A different question per request (another number), so a cache in front can only miss:
    // what is measured is its miss path, near-misses included.
    let base = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() % 1_000_000_000) as usize;
    let body_for = |i: usize| {
        Bytes::from(
            serde_json::to_vec(&serde_json::json!({
                "model": model, "stream": stream, "max_tokens": 64,
                "messages": [{"role": "user", "content": format!("What is 17 times {}?", base + i)}]}))
            .unwrap_or_default(),
        )
    };
    let client: Client<_, Full<Bytes>> = Client::builder(TokioExecutor::new())
        .pool_max_idle_per_host(4096)
        .build_http();
    let client = Arc::new(client);
    let total = (rate * secs).round() as usize;
    let period = Duration::from_secs_f64(1.0 / rate);
    let start = Instant::now();
    let mut tasks = Vec::with_capacity(total);
    for i in 0..total {
        let scheduled = start + period.mul_f64(i as f64);
        tokio::time::sleep_until(scheduled.into()).await;
        let (client, url, body) = (client.clone(), url.clone(), body_for(i));
        tasks.push(tokio::spawn(async move {
            let run = async {
                let req = hyper::Request::post(url)
                    .header("content-type", "application/json")
                    // As OpenAI clients do; a gateway caches only requests with credentials.
                    .header("authorization", "Bearer sk-bench")
                    .body(Full::new(body))
                    .ok()?;
                let resp = client.request(req).await.ok()?;
                let ok = resp.status().is_success();
                let mut b = resp.into_body();
                let mut ttfb = None;
                while let Some(frame) = b.frame().await {
                    frame.ok()?;
                    ttfb.get_or_insert_with(|| scheduled.elapsed());
                }
                Some(Sample {
                    ok,
                    latency_us: scheduled.elapsed().as_micros() as u64,
                    ttfb_us: ttfb.unwrap_or_default().as_micros() as u64,
                })
            };
            tokio::time::timeout(Duration::from_secs(10), run)
                .await
                .ok()
                .flatten()
                .unwrap_or_default()
        }));
    }
    let sent_in = start.elapsed();
    let mut lat = Vec::new();
    let mut ttfb = Vec::new();
    let mut errors = 0;
    for t in tasks {
        let s = t.await.unwrap_or_default();
        if s.ok {
            lat.push(s.latency_us);
            ttfb.push(s.ttfb_us);
        } else {
            errors += 1;
        }
    }
    let v = serde_json::json!({
        "sent": total, "ok": lat.len(), "errors": errors,
        "achieved_rps": total as f64 / sent_in.as_secs_f64(),
        "p50_us": pct(&mut lat, 0.50), "p99_us": pct(&mut lat, 0.99),
        "ttfb_p50_us": pct(&mut ttfb, 0.50), "ttfb_p99_us": pct(&mut ttfb, 0.99),
    });
    println!("{v}");
    Ok(())
}
