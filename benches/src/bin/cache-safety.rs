//! Answer safety of the reasoning cache on labelled third-party pairs (see
//! `benches/safety/make_pairs.py`): for each pair, would a request with problem `b` be served
//! the answer cached for problem `a`? Plain cosine at a threshold against cosine + the guard.
//!
//! Usage: cache-safety PAIRS.jsonl MODEL_DIR ONNXRUNTIME_SO

use std::collections::BTreeMap;
use std::path::Path;

use gateway_benches::{embed_all, model_file};
use reasoning_cache::embed::MiniLm;
use reasoning_cache::guard;
use reasoning_cache::index::dot;
use serde_json::Value;

/// A pair's similarity and the guard's refusal, if any.
type Verdict = (f32, Option<guard::Reject>);

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    anyhow::ensure!(
        args.len() == 4,
        "usage: cache-safety PAIRS.jsonl MODEL_DIR ONNXRUNTIME_SO"
    );
    let pairs: Vec<Value> = std::fs::read_to_string(&args[1])?
        .lines()
        .map(serde_json::from_str)
        .collect::<Result<_, _>>()?;
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    let mut model = MiniLm::load(
        Path::new(&args[2]),
        &model_file(Path::new(&args[2])),
        Path::new(&args[3]),
        threads,
        true,
    )?;
    let texts: Vec<String> = pairs
        .iter()
        .flat_map(|p| {
            [
                p["a"].as_str().unwrap().to_string(),
                p["b"].as_str().unwrap().to_string(),
            ]
        })
        .collect();
    let vectors = embed_all(&mut model, &texts)?;
    // (source, same) -> [(similarity, guard passed)]
    let mut by: BTreeMap<(String, bool), Vec<Verdict>> = BTreeMap::new();
    for (i, p) in pairs.iter().enumerate() {
        let sim = dot(&vectors[2 * i], &vectors[2 * i + 1]);
        let verdict = guard::check(
            &guard::features(p["b"].as_str().unwrap()),
            &guard::features(p["a"].as_str().unwrap()),
        )
        .err();
        if std::env::var_os("SAFETY_DUMP").is_some() && sim >= 0.85 {
            let same = p["same"].as_bool().unwrap();
            let wrong = (same && verdict.is_some()) || (!same && verdict.is_none());
            if wrong {
                println!(
                    "{} same={same} sim={sim:.3} verdict={:?}\n  a: {}\n  b: {}",
                    p["source"], verdict, p["a"], p["b"]
                );
            }
        }
        by.entry((
            p["source"].as_str().unwrap().to_string(),
            p["same"].as_bool().unwrap(),
        ))
        .or_default()
        .push((sim, verdict));
    }
    println!("| pairs | n | threshold | plain cosine served | cosine + guard served |");
    println!("|---|---:|---:|---:|---:|");
    for ((source, same), rows) in &by {
        for t in [0.80f32, 0.85, 0.90] {
            row(source, *same, rows.iter(), t);
        }
    }
    // All sources pooled.
    for same in [true, false] {
        let rows = by
            .iter()
            .filter(|((_, s), _)| *s == same)
            .flat_map(|(_, r)| r);
        row("**all pooled**", same, rows, 0.85);
    }
    // Why the guard refused pairs above 0.85, per group.
    println!("\nGuard rejections above 0.85 by reason:");
    for ((source, same), rows) in &by {
        let mut reasons: BTreeMap<&str, usize> = BTreeMap::new();
        for (s, v) in rows {
            if let (true, Some(r)) = (*s >= 0.85, v) {
                *reasons.entry(r.label()).or_default() += 1;
            }
        }
        println!("- {source} same={same}: {reasons:?}");
    }
    Ok(())
}

/// One table row: the share served by plain cosine and by cosine + guard at threshold `t`.
fn row<'a>(label: &str, same: bool, rows: impl Iterator<Item = &'a Verdict>, t: f32) {
    let rows: Vec<&Verdict> = rows.collect();
    let plain = rows.iter().filter(|(s, _)| *s >= t).count();
    let ours = rows.iter().filter(|(s, v)| *s >= t && v.is_none()).count();
    let kind = if same {
        "same answer (want served)"
    } else {
        "different answer (false hit if served)"
    };
    let n = rows.len().max(1) as f64;
    println!(
        "| {label}: {kind} | {} | {t:.2} | {:.1} % | {:.1} % |",
        rows.len(),
        100.0 * plain as f64 / n,
        100.0 * ours as f64 / n
    );
}
