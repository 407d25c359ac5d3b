//! The reasoning cache in fleet mode (issue 26), against a real Redis.
//!
//! Usage: fleet-bench hits MODEL_DIR ONNXRUNTIME_SO REDIS_URL
//!        fleet-bench memory N REDIS_URL
//!
//! `hits` plays one request sequence (word problems, each asked four times: twice the same,
//! once with other spacing, once reworded; shuffled with a fixed seed) against one cache alone
//! and, in the same run, round-robin against three caches sharing through Redis exactly as the
//! gateway's replicas do (`reasoning_gateway::shared::cache`). Each miss is answered and stored
//! at once, and the next request comes `GAP` later (an upstream's answer takes longer than
//! that). It prints both hit rates and the lookup times with sharing off (the lone cache) and
//! on (the three), of all lookups and of the misses alone.
//!
//! `memory` writes N entries in the gateway's format (2 KB reasoning, 384-dimension vectors)
//! and prints Redis's `used_memory` before and after. It uses the key prefix `rg-bench-memory`
//! and deletes its keys afterwards; use a Redis of its own.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use gateway_benches::{model_file, Lcg};
use reasoning_cache::embed::{normalise, BoxError, Embedder, MiniLm, TextEmbed};
use reasoning_cache::store::Record;
use reasoning_cache::util::{hex, now_unix};
use reasoning_cache::{Cache, Completed, Lookup, Metrics, Query, RouteSettings, Settings};
use reasoning_gateway::config::SharedConfig;
use reasoning_gateway::metrics::labels::SharedOp;
use reasoning_gateway::shared::cache::{share, Routes};
use reasoning_gateway::shared::Shared;
use serde_json::json;

/// Time between two requests of the sequence.
const GAP: Duration = Duration::from_millis(20);
/// Distinct problems in the sequence.
const PROBLEMS: usize = 150;
const ROUTE: RouteSettings = RouteSettings {
    threshold: 0.85,
    ttl: Duration::from_secs(3600),
    max_entries: 1_000_000,
    guard: true,
    shared_across_tenants: false,
};

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let rt = tokio::runtime::Runtime::new()?;
    match args.get(1).map(String::as_str) {
        Some("hits") if args.len() == 5 => rt.block_on(hits(&args[2], &args[3], &args[4])),
        Some("memory") if args.len() == 4 => rt.block_on(memory(args[2].parse()?, &args[3])),
        _ => anyhow::bail!("usage: see the header of benches/src/bin/fleet-bench.rs"),
    }
}

fn settings(model_dir: &str, model_file: String, ort: &str) -> Settings {
    Settings {
        model_dir: model_dir.into(),
        model_file,
        onnxruntime: ort.into(),
        snapshot_dir: None,
        snapshot_interval: Duration::from_secs(3600),
        embed_threads: 1,
        embed_intra_threads: 1,
        embed_spin: false,
        ann_ef_search: 32,
        embed_timeout: Duration::from_secs(5),
    }
}

fn shared(
    url: &str,
    prefix: &str,
    timeout: Duration,
    metrics: &reasoning_gateway::metrics::Metrics,
) -> Arc<Shared> {
    let config = SharedConfig {
        redis_url: url.into(),
        key_prefix: prefix.into(),
        timeout,
    };
    Shared::start(config, metrics).expect("a Redis URL")
}

async fn until_up(s: &Shared) -> anyhow::Result<()> {
    let started = Instant::now();
    while !s.is_up() {
        anyhow::ensure!(
            started.elapsed() < Duration::from_secs(10),
            "Redis is not reachable"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Ok(())
}

/// The request sequence: every problem four times, shuffled.
fn sequence() -> Vec<String> {
    let names = ["Sam", "Ana", "Li", "Omar", "Kate", "Ravi"];
    let items = ["apples", "pencils", "stamps", "marbles", "books"];
    let mut out = Vec::new();
    for i in 0..PROBLEMS {
        let (name, item) = (names[i % names.len()], items[(i / 6) % items.len()]);
        let (a, b) = (3 + i % 17, 2 + i / 17);
        let q = format!(
            "{name} has {a} {item} and buys {b} more. How many {item} does {name} have now?"
        );
        out.push(q.clone());
        out.push(q.clone());
        out.push(format!("  {}  ", q.replace(' ', "  ")));
        out.push(format!("{name} has got {a} {item} and then buys {b} more. How many {item} does {name} have in total now?"));
    }
    let mut rng = Lcg(26);
    for i in (1..out.len()).rev() {
        let j = (rng.bits31() % (i as u64 + 1)) as usize;
        out.swap(i, j);
    }
    out
}

/// Looks `q` up; on a miss stores an answer at once. Whether it hit, and the lookup's time.
async fn serve(cache: &Arc<Cache>, q: &str) -> (bool, Duration) {
    let body = json!({"model": "m", "messages": [{"role": "user", "content": q}]});
    let no_headers = |_: &str| None;
    let started = Instant::now();
    let l = cache
        .lookup(&Query {
            route: "bench",
            served: Default::default(),
            settings: &ROUTE,
            body: body.as_object().expect("an object"),
            tenant: Some("bench-tenant"),
            header: &no_headers,
        })
        .await;
    let took = started.elapsed();
    match l {
        Lookup::Hit { .. } => (true, took),
        Lookup::Miss { pending, .. } => {
            let done = Completed {
                reasoning: "Let me work through this step by step. ".repeat(50),
                answer: "The answer is 42.".into(),
                model: "m".into(),
                usage: None,
            };
            cache.insert(pending, done);
            (false, took)
        }
        _ => (false, took),
    }
}

fn pct(v: &mut [Duration], p: f64) -> Duration {
    v.sort();
    v[((v.len() as f64 - 1.0) * p).round() as usize]
}

async fn hits(model_dir: &str, ort: &str, url: &str) -> anyhow::Result<()> {
    let file = model_file(Path::new(model_dir));
    let (md, o, f) = (model_dir.to_string(), ort.to_string(), file.clone());
    let embedder = Embedder::start(1, Duration::from_secs(5), move || {
        Ok(
            Box::new(MiniLm::load(Path::new(&md), &f, Path::new(&o), 1, false)?)
                as Box<dyn TextEmbed>,
        )
    })?;
    let settings = settings(model_dir, file, ort);
    let make = || Cache::with_embedder(settings.clone(), Metrics::unregistered(), embedder.clone());
    let alone = make();
    let metrics = reasoning_gateway::metrics::Metrics::new();
    let prefix = format!("rg-bench-hits-{}", now_unix());
    let routes: Routes = Arc::new(|| HashMap::from([("bench".to_string(), 1_000_000)]));
    let mut fleet = Vec::new();
    let mut connections = Vec::new();
    for _ in 0..3 {
        let cache = make();
        // The design's default `shared.timeout`.
        let s = shared(url, &prefix, Duration::from_millis(50), &metrics);
        until_up(&s).await?;
        share(&cache, &s, routes.clone());
        fleet.push(cache);
        connections.push(s);
    }
    let seq = sequence();
    let (mut hits_alone, mut hits_fleet) = (0, 0);
    let (mut off, mut on) = (Vec::new(), Vec::new());
    // Misses alone: where sharing asks Redis (the exact tier) before going upstream.
    let (mut off_miss, mut on_miss) = (Vec::new(), Vec::new());
    for (i, q) in seq.iter().enumerate() {
        let (hit, took) = serve(&alone, q).await;
        hits_alone += usize::from(hit);
        off.push(took);
        if !hit {
            off_miss.push(took);
        }
        let (hit, took) = serve(&fleet[i % 3], q).await;
        hits_fleet += usize::from(hit);
        on.push(took);
        if !hit {
            on_miss.push(took);
        }
        tokio::time::sleep(GAP).await;
    }
    let n = seq.len();
    println!("{n} requests, {PROBLEMS} problems, {GAP:?} apart");
    println!(
        "hit rate: one cache {:.1}% ({hits_alone}), three replicas round-robin {:.1}% ({hits_fleet})",
        100.0 * hits_alone as f64 / n as f64,
        100.0 * hits_fleet as f64 / n as f64
    );
    for (label, v) in [
        ("shared off (one cache)", &mut off),
        ("shared on (three replicas)", &mut on),
        ("of a miss, shared off", &mut off_miss),
        ("of a miss, shared on", &mut on_miss),
    ] {
        println!(
            "lookup {label}: p50 {:.3} ms, p90 {:.3} ms, p99 {:.3} ms",
            pct(v, 0.5).as_secs_f64() * 1e3,
            pct(v, 0.9).as_secs_f64() * 1e3,
            pct(v, 0.99).as_secs_f64() * 1e3
        );
    }
    delete(&connections[0], &format!("{prefix}:*")).await;
    Ok(())
}

/// Every text embeds to one vector (the memory run embeds nothing).
struct Constant;

impl TextEmbed for Constant {
    fn embed(&mut self, texts: &[String]) -> Result<Vec<Vec<f32>>, BoxError> {
        Ok(texts.iter().map(|_| vec![1.0]).collect())
    }
}

async fn used_memory(s: &Shared) -> anyhow::Result<u64> {
    let info: String = s
        .run_with(SharedOp::Ping, Duration::from_secs(5), |mut c| async move {
            redis::cmd("INFO").arg("memory").query_async(&mut c).await
        })
        .await?;
    info.lines()
        .find_map(|l| l.strip_prefix("used_memory:"))
        .and_then(|v| v.trim().parse().ok())
        .ok_or_else(|| anyhow::anyhow!("no used_memory in INFO"))
}

async fn delete(s: &Shared, pattern: &str) {
    let pattern = pattern.to_string();
    let _ = s
        .run_with(
            SharedOp::Ping,
            Duration::from_secs(120),
            |mut c| async move {
                let mut cursor = 0u64;
                loop {
                    let (next, keys): (u64, Vec<String>) = redis::cmd("SCAN")
                        .arg(cursor)
                        .arg("MATCH")
                        .arg(&pattern)
                        .arg("COUNT")
                        .arg(1000)
                        .query_async(&mut c)
                        .await?;
                    if !keys.is_empty() {
                        redis::cmd("UNLINK")
                            .arg(&keys)
                            .query_async::<()>(&mut c)
                            .await?;
                    }
                    if next == 0 {
                        return Ok(());
                    }
                    cursor = next;
                }
            },
        )
        .await;
}

async fn memory(n: usize, url: &str) -> anyhow::Result<()> {
    let embedder = Embedder::start(1, Duration::from_secs(5), || {
        Ok(Box::new(Constant) as Box<dyn TextEmbed>)
    })?;
    let cache = Cache::with_embedder(
        settings("/nonexistent", "model.onnx".into(), "/nonexistent"),
        Metrics::unregistered(),
        embedder,
    );
    let metrics = reasoning_gateway::metrics::Metrics::new();
    let prefix = "rg-bench-memory";
    let s = shared(url, prefix, Duration::from_secs(2), &metrics);
    until_up(&s).await?;
    delete(&s, &format!("{prefix}:*")).await;
    let routes: Routes = Arc::new(HashMap::new);
    let fleet = share(&cache, &s, routes);
    let before = used_memory(&s).await?;
    let started = Instant::now();
    let reasoning = "Let me work through this step by step. ".repeat(50);
    let mut rng = Lcg(7);
    for chunk in (0..n).collect::<Vec<_>>().chunks(256) {
        let writes = chunk.iter().map(|i| {
            let mut v: Vec<f32> = (0..384).map(|_| rng.bits31() as f32 / (1u64 << 31) as f32 - 0.5).collect();
            normalise(&mut v);
            let id = format!("{i:032x}");
            let record = Record {
                route: "think".into(),
                tenant: hex(format!("tenant-{}", i % 50).as_bytes()),
                partition: id.clone(),
                exact: id,
                problem: format!("Problem {i}: a train leaves at 3 pm going 60 km/h; another leaves an hour later at 80 km/h. When does the second catch up?"),
                reasoning: reasoning.clone(),
                answer: "The second train catches up at 7 pm, 240 km out.".into(),
                model: "deepseek-r1".into(),
                usage: None,
                created: now_unix(),
                expires: now_unix() + 3600,
            };
            let json = serde_json::to_vec(&record).expect("a record serialises");
            let vector = reasoning_cache::fleet::encode_vector(&v);
            let fleet = fleet.clone();
            async move { fleet.write(&record, json, vector).await }
        });
        let results = futures_util::future::join_all(writes.collect::<Vec<_>>()).await;
        anyhow::ensure!(results.iter().all(Result::is_ok), "a write failed");
    }
    let after = used_memory(&s).await?;
    let per = (after - before) as f64 / n as f64;
    println!(
        "{n} entries written in {:.1?}: used_memory {before} -> {after} bytes, {per:.0} bytes per entry, {:.0} MiB per 100 k entries (stream of the last ~20 k events included)",
        started.elapsed(),
        per * 100_000.0 / (1024.0 * 1024.0)
    );
    delete(&s, &format!("{prefix}:*")).await;
    Ok(())
}
