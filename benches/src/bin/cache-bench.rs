//! Reasoning-cache latency: whole lookups (exact tier; embedding + search + guard) plus replay
//! rendering on the real MiniLM embedder, and ANN search time on large indexes.
//!
//! Usage: cache-bench lookup PAIRS.jsonl MODEL_DIR ONNXRUNTIME_SO
//!        cache-bench ann N[,N…] QUERIES CORPUS.jsonl MODEL_DIR ONNXRUNTIME_SO
//!
//! `ann` indexes N vectors: the real MiniLM embeddings of the corpus texts
//! (`benches/safety/make_corpus.py`), then variants of them (noise of norm ≈ 0.3, renormalised)
//! up to N, and times searches for slightly perturbed copies of indexed vectors (cosine ≈ 0.995,
//! the same problem asked again), with recall@1 against an exact scan.

use std::path::Path;
use std::time::{Duration, Instant};

use gateway_benches::{embed_all, model_file, Lcg};
use reasoning_cache::embed::{normalise, Embedder, MiniLm, TextEmbed};
use reasoning_cache::index::dot;
use reasoning_cache::index::shards::{
    GRAPH_CANDIDATES, GRAPH_DIMS, HNSW_EF_CONSTRUCTION, HNSW_M, RECOPY_AFTER, SHARD_PROBE_MARGIN,
    SHARD_TARGET,
};
use reasoning_cache::replay::{self, Shape};
use reasoning_cache::store::{Record, Store};
use reasoning_cache::util::hex;
use reasoning_cache::{Cache, Lookup};
use reasoning_cache::{Metrics, Query, RouteSettings, Settings};
use serde_json::{json, Value};

fn pct(v: &mut [Duration], p: f64) -> Duration {
    v.sort();
    v[((v.len() as f64 - 1.0) * p).round() as usize]
}

fn pairs(path: &str) -> anyhow::Result<Vec<Value>> {
    Ok(std::fs::read_to_string(path)?
        .lines()
        .map(serde_json::from_str)
        .collect::<Result<_, _>>()?)
}

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    match args.get(1).map(String::as_str) {
        Some("lookup") if args.len() == 5 => {
            tokio::runtime::Runtime::new()?.block_on(lookup(&args[2], &args[3], &args[4]))
        }
        Some("ann") if args.len() == 7 => ann(
            &args[2]
                .split(',')
                .map(str::parse)
                .collect::<Result<Vec<usize>, _>>()?,
            args[3].parse()?,
            &args[4],
            &args[5],
            &args[6],
        ),
        _ => anyhow::bail!("usage: see the header of benches/src/bin/cache-bench.rs"),
    }
}

async fn lookup(pairs_path: &str, model_dir: &str, ort: &str) -> anyhow::Result<()> {
    let pairs = pairs(pairs_path)?;
    let settings = Settings {
        model_dir: model_dir.into(),
        model_file: model_file(Path::new(model_dir)),
        onnxruntime: ort.into(),
        snapshot_dir: None,
        snapshot_interval: Duration::from_secs(3600),
        embed_threads: 1,
        embed_intra_threads: 1,
        embed_spin: true,
        ann_ef_search: 32,
        embed_timeout: Duration::from_secs(5),
    };
    let (md, o) = (settings.model_dir.clone(), settings.onnxruntime.clone());
    let file = settings.model_file.clone();
    // As the gateway's default (`cache.embed_intra_threads`): 1; INTRA overrides.
    let intra = std::env::var("INTRA")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1);
    // As the gateway's default (`cache.embed_spin: false`); SPIN=1 turns it on.
    let spin = std::env::var("SPIN").is_ok_and(|v| v == "1");
    println!("one embedding thread, {intra} ONNX Runtime thread(s) per embedding, spinning {spin}");
    let embedder = Embedder::start(1, settings.embed_timeout, move || {
        Ok(Box::new(MiniLm::load(&md, &file, &o, intra, spin)?) as Box<dyn TextEmbed>)
    })?;
    let cache = Cache::with_embedder(settings, Metrics::unregistered(), embedder.clone());
    let route = RouteSettings {
        threshold: 0.85,
        ttl: Duration::from_secs(3600),
        max_entries: 1_000_000,
        guard: true,
        shared_across_tenants: false,
    };
    let body = |q: &str| {
        json!({"model": "m", "messages": [{"role": "user", "content": q}]})
            .as_object()
            .unwrap()
            .clone()
    };
    let no_headers = |_: &str| None;
    for corpus in ["gsm_wrapped", "mrpc"] {
        let selected: Vec<&Value> = pairs.iter().filter(|p| p["source"] == corpus).collect();
        let words: usize = selected
            .iter()
            .map(|p| p["b"].as_str().unwrap().split_whitespace().count())
            .sum::<usize>()
            / selected.len().max(1);
        cache.store.purge(None, None);
        // Fill with every `a` problem and a realistic reasoning chain (~2 KB).
        let reasoning = "Let me work through this step by step. ".repeat(50);
        for p in &selected {
            let l = cache
                .lookup(&Query {
                    route: "bench",
                    served: Default::default(),
                    settings: &route,
                    body: &body(p["a"].as_str().unwrap()),
                    tenant: Some("bench-tenant"),
                    header: &no_headers,
                })
                .await;
            let Lookup::Miss { pending, .. } = l else {
                continue;
            };
            // The first problem of a partition is not embedded by the lookup (nothing to
            // compare with); the gateway's insert embeds it, as here.
            let v = match pending.vector.clone() {
                Some(v) => v,
                None => embedder.embed(&pending.key.problem).await?,
            };
            cache.store.insert(
                Record {
                    route: "bench".into(),
                    tenant: pending.key.tenant.clone(),
                    partition: hex(&pending.key.partition),
                    exact: hex(&pending.key.exact),
                    problem: pending.key.problem.clone(),
                    reasoning: reasoning.clone(),
                    answer: "The answer is 42.".into(),
                    model: "m".into(),
                    usage: None,
                    created: 0,
                    expires: u64::MAX / 2,
                },
                pending.key.partition,
                pending.key.exact,
                v,
                1_000_000,
            );
        }
        println!(
            "{corpus}: {} entries, queries of {words} words on average",
            cache.store.sizes().0
        );
        for (label, exact) in [
            ("exact tier (same text)", true),
            (
                "similarity tier (the pair's other text: embed + search + guard, replay on a hit)",
                false,
            ),
        ] {
            let (mut times, mut cpus) = (Vec::new(), Vec::new());
            let mut hits = 0;
            for _round in 0..3 {
                for p in &selected {
                    let q = if exact {
                        p["a"].as_str().unwrap()
                    } else {
                        p["b"].as_str().unwrap()
                    };
                    let cpu_before = process_cpu();
                    let started = Instant::now();
                    let l = cache
                        .lookup(&Query {
                            route: "bench",
                            served: Default::default(),
                            settings: &route,
                            body: &body(q),
                            tenant: Some("bench-tenant"),
                            header: &no_headers,
                        })
                        .await;
                    if let Lookup::Hit { entry, .. } = &l {
                        let shape = Shape {
                            stream: true,
                            include_usage: false,
                            reasoning_fields: &["reasoning_content"],
                            model: "m",
                            id: "chatcmpl-bench",
                            created: 0,
                        };
                        std::hint::black_box(replay::body(&entry.record, &shape));
                        hits += 1;
                    }
                    times.push(started.elapsed());
                    cpus.push(process_cpu().saturating_sub(cpu_before));
                }
            }
            let n = times.len();
            println!(
                "  {label}: {n} lookups, {hits} hits, p50 {:.2?}, p99 {:.2?}, max {:.2?}; CPU of the whole process per lookup p50 {:.2?}, p99 {:.2?}",
                pct(&mut times, 0.5),
                pct(&mut times, 0.99),
                pct(&mut times, 1.0),
                pct(&mut cpus, 0.5),
                pct(&mut cpus, 0.99),
            );
        }
        // The miss path: problems of the other corpus (none of them cached), one at a time, with
        // the process's CPU time (every thread: the embedder's and ONNX Runtime's included).
        let others: Vec<&Value> = pairs
            .iter()
            .filter(|p| p["source"] != corpus && p["split"] == "heldout")
            .take(300)
            .collect();
        let (mut times, mut cpus) = (Vec::new(), Vec::new());
        for p in &others {
            let cpu_before = process_cpu();
            let started = Instant::now();
            let l = cache
                .lookup(&Query {
                    route: "bench",
                    served: Default::default(),
                    settings: &route,
                    body: &body(p["b"].as_str().unwrap()),
                    tenant: Some("bench-tenant"),
                    header: &no_headers,
                })
                .await;
            std::hint::black_box(&l);
            times.push(started.elapsed());
            cpus.push(process_cpu().saturating_sub(cpu_before));
        }
        let n = times.len();
        let mean = cpus.iter().sum::<Duration>() / u32::try_from(n.max(1)).unwrap_or(u32::MAX);
        println!(
            "  miss path (uncached problems, other sources): {n} lookups, p50 {:.2?}, p99 {:.2?}; CPU of the whole process per lookup p50 {:.2?}, p99 {:.2?}, mean {mean:.2?}",
            pct(&mut times, 0.5),
            pct(&mut times, 0.99),
            pct(&mut cpus, 0.5),
            pct(&mut cpus, 0.99),
        );
    }
    Ok(())
}

/// CPU time of the whole process so far (user + system, every thread).
fn process_cpu() -> Duration {
    use nix::sys::resource::{getrusage, UsageWho};
    getrusage(UsageWho::RUSAGE_SELF).map_or(Duration::ZERO, |u| {
        let t = |tv: nix::sys::time::TimeVal| {
            Duration::from_secs(tv.tv_sec().unsigned_abs())
                + Duration::from_micros(tv.tv_usec().unsigned_abs())
        };
        t(u.user_time()) + t(u.system_time())
    })
}

fn ann(
    sizes: &[usize],
    queries: usize,
    corpus: &str,
    model_dir: &str,
    ort: &str,
) -> anyhow::Result<()> {
    let texts: Vec<String> = std::fs::read_to_string(corpus)?
        .lines()
        .map(serde_json::from_str)
        .collect::<Result<_, _>>()?;
    let threads = std::thread::available_parallelism().map_or(1, |t| t.get());
    let file = model_file(Path::new(model_dir));
    // The corpus's embeddings are kept beside it per model file (minutes to compute; the
    // search, not the embedding, is what this measures).
    let saved = format!("{corpus}.{file}.f32");
    let mut centres: Vec<Vec<f32>> = match std::fs::read(&saved) {
        Ok(bytes) if bytes.len() == texts.len() * 384 * 4 => bytes
            .chunks_exact(384 * 4)
            .map(|v| {
                v.chunks_exact(4)
                    .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                    .collect()
            })
            .collect(),
        _ => Vec::new(),
    };
    if centres.is_empty() {
        let mut model = MiniLm::load(Path::new(model_dir), &file, Path::new(ort), threads, true)?;
        centres = embed_all(&mut model, &texts)?;
        let bytes: Vec<u8> = centres
            .iter()
            .flatten()
            .flat_map(|x| x.to_le_bytes())
            .collect();
        std::fs::write(&saved, bytes)?;
    } else {
        println!("{} corpus embeddings from {saved}", centres.len());
    }
    for &n in sizes {
        let mut rng = Lcg(42);
        let noisy = |c: &[f32], rng: &mut Lcg, sigma: f32| {
            let mut v: Vec<f32> = c.iter().map(|x| x + sigma * rng.gauss()).collect();
            normalise(&mut v);
            v
        };
        // The real embeddings first; beyond them, variants of them (noise of norm ≈ 0.3, cosine
        // ≈ 0.95 to their text, the spread of rephrasings).
        let vectors: Vec<Vec<f32>> = (0..n)
            .map(|i| {
                let c = &centres[i % centres.len()];
                if i < centres.len() {
                    c.clone()
                } else {
                    noisy(c, &mut rng, 0.015)
                }
            })
            .collect();
        let partition = [7u8; 16];
        // Entry number `i`: an empty record (only the vector matters here) and its exact key.
        let blank = |i: usize| {
            let mut exact = [0u8; 16];
            exact[..8].copy_from_slice(&(i as u64).to_le_bytes());
            let r = Record {
                route: "bench".into(),
                tenant: "t".into(),
                partition: hex(&partition),
                exact: hex(&exact),
                problem: String::new(),
                reasoning: String::new(),
                answer: String::new(),
                model: String::new(),
                usage: None,
                created: 0,
                expires: u64::MAX / 2,
            };
            (r, exact)
        };
        let items: Vec<_> = vectors
            .iter()
            .enumerate()
            .map(|(i, v)| {
                let (r, exact) = blank(i);
                (r, partition, exact, v.clone())
            })
            .collect();
        let store = Store::new();
        // `ANN_SHARD=…` sets the entries per graph shard (default SHARD_TARGET).
        let shard_target = std::env::var("ANN_SHARD")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(SHARD_TARGET);
        store.set_shard_target(shard_target);
        let started = Instant::now();
        store.load(items);
        let build = started.elapsed();
        let shards = store.shard_sizes();
        println!(
            "ann: {n} entries (384-d; graph on {GRAPH_DIMS}-d projections, {GRAPH_CANDIDATES} candidates re-ranked), parallel build {build:.1?} on {threads} threads (M {HNSW_M}, ef_construction {HNSW_EF_CONSTRUCTION}); {} shard(s) (target {shard_target}, smallest {}, largest {}); {} entries the graph does not lead to, searched beside it",
            shards.len(),
            shards.iter().min().unwrap_or(&0),
            shards.iter().max().unwrap_or(&0),
            store.stragglers()
        );
        // One insert at a time after the build, as responses are stored (graph insert included).
        let mut times = Vec::new();
        let mut irng = Lcg(11);
        // `ANN_INSERTS=…` inserts more (a shard's next copy comes after a 32nd of its size).
        let inserts: usize = std::env::var("ANN_INSERTS")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(1000);
        for i in 0..inserts {
            let (r, exact) = blank(n + i);
            let v = noisy(&vectors[(i * 104_729) % n], &mut irng, 0.015);
            let started = Instant::now();
            store.insert(r, partition, exact, v, usize::MAX);
            times.push(started.elapsed());
        }
        let mean = times.iter().sum::<Duration>() / times.len() as u32;
        println!(
            "  insert one entry: mean {mean:.1?}, p50 {:.1?}, p99 {:.1?}, max {:.1?} (a shard's graph is copied for searching again after max({RECOPY_AFTER}, its size / 32) inserts)",
            pct(&mut times, 0.5),
            pct(&mut times, 0.99),
            pct(&mut times, 1.0)
        );
        // `ANN_EF=8,16` measures other search widths.
        let efs: Vec<usize> = std::env::var("ANN_EF")
            .ok()
            .and_then(|v| v.split(',').map(|x| x.parse().ok()).collect())
            .unwrap_or_else(|| vec![16, 32, 64]);
        // `ANN_MARGIN=0,0.03` measures other shard-probe margins (with more than one shard).
        let margins: Vec<f32> = std::env::var("ANN_MARGIN")
            .ok()
            .and_then(|v| v.split(',').map(|x| x.parse().ok()).collect())
            .unwrap_or_else(|| vec![SHARD_PROBE_MARGIN]);
        let margins = if shards.len() > 1 {
            margins
        } else {
            vec![SHARD_PROBE_MARGIN]
        };
        for (margin, &ef) in margins
            .iter()
            .flat_map(|m| efs.iter().map(move |e| (*m, e)))
        {
            store.set_ef_search(ef);
            store.set_probe_margin(margin);
            let mut times = Vec::new();
            let mut recall_hits = 0;
            let mut threshold_hits = 0;
            let recall_n = queries.min(200);
            let mut qrng = Lcg(7);
            for q in 0..queries {
                let target = (q * 7919) % n;
                let query = noisy(&vectors[target], &mut qrng, 0.005);
                let started = Instant::now();
                let found = store.search(&query, &partition, 1, 1);
                times.push(started.elapsed());
                if q < recall_n {
                    let best = vectors
                        .iter()
                        .enumerate()
                        .max_by(|a, b| dot(&query, a.1).total_cmp(&dot(&query, b.1)))
                        .map(|(i, _)| i)
                        .unwrap();
                    if found.first().map(|c| c.entry.id) == Some(best) {
                        recall_hits += 1;
                    }
                    // What the cache needs: some entry at or above the threshold is found.
                    if found.first().is_some_and(|c| c.similarity >= 0.85) {
                        threshold_hits += 1;
                    }
                }
            }
            println!(
                "  ef_search {ef}, probe margin {margin}: {queries} searches, p50 {:.1?}, p99 {:.1?}; recall@1 {:.1} %, an entry >= 0.85 found {:.1} % ({recall_n} queries vs exact scan, whose best is always >= 0.85)",
                pct(&mut times, 0.5),
                pct(&mut times, 0.99),
                100.0 * recall_hits as f64 / recall_n as f64,
                100.0 * threshold_hits as f64 / recall_n as f64
            );
        }
        // The exact scan used for partitions up to BRUTE_FORCE_MAX entries.
        let scan: Vec<&Vec<f32>> = vectors.iter().take(4096).collect();
        let mut times = Vec::new();
        for q in 0..queries {
            let query = noisy(&vectors[q % 4096], &mut rng, 0.005);
            let started = Instant::now();
            let best = scan.iter().map(|v| dot(&query, v)).fold(f32::MIN, f32::max);
            std::hint::black_box(best);
            times.push(started.elapsed());
        }
        println!(
            "  exact scan of 4096 entries: p50 {:.1?}, p99 {:.1?}",
            pct(&mut times, 0.5),
            pct(&mut times, 0.99)
        );
    }
    Ok(())
}
