//! Answer safety of the reasoning cache on labelled pairs (`benches/safety/make_eval.py`): for
//! each pair, would a request with problem `b` be served the answer cached for problem `a`?
//! Reported per part (development, held-out) and category at the default threshold, for plain
//! cosine and for the cache's decision (guard + pair check), then the precision/recall curve
//! over the threshold.
//!
//! Usage: cache-safety EVAL.jsonl MODEL_DIR ONNXRUNTIME_SO [FEATURES_OUT.jsonl]
//!
//! FEATURES_OUT gets one line per pair with the pair check's inputs, for
//! `benches/safety/train_pair_check.py` (which reads only the development part).

use std::collections::BTreeMap;
use std::io::Write;
use std::path::Path;

use gateway_benches::{embed_all, model_file};
use reasoning_cache::embed::MiniLm;
use reasoning_cache::guard;
use reasoning_cache::index::dot;
use reasoning_cache::lookup::SURFACE_FLOOR;
use reasoning_cache::pair::{self, Verdict};
use reasoning_cache::settings::DEFAULT_THRESHOLD;
use serde_json::{json, Value};

const CATEGORIES: [&str; 7] = [
    "negation",
    "antonym",
    "scope",
    "entity_swap",
    "number",
    "paraphrase",
    "near_repeat",
];

/// One labelled pair, judged.
struct Row {
    split: String,
    category: String,
    same: bool,
    similarity: f32,
    quantities_match: bool,
    shape: pair::Shape,
    a: String,
    b: String,
}

impl Row {
    /// Whether the cache serves `a`'s answer for `b` at threshold `t` (as `lookup::decide`).
    fn served(&self, t: f32) -> bool {
        self.similarity >= SURFACE_FLOOR
            && self.quantities_match
            && matches!(
                pair::judge(&pair::words(&self.b), &self.a, self.similarity, t),
                Some(Verdict::Surface | Verdict::Same { .. })
            )
    }
}

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    anyhow::ensure!(
        (4..=5).contains(&args.len()),
        "usage: cache-safety EVAL.jsonl MODEL_DIR ONNXRUNTIME_SO [FEATURES_OUT.jsonl]"
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
    let text = |p: &Value, k: &str| p[k].as_str().unwrap_or_default().to_string();
    let texts: Vec<String> = pairs
        .iter()
        .flat_map(|p| [text(p, "a"), text(p, "b")])
        .collect();
    let vectors = embed_all(&mut model, &texts)?;
    let rows: Vec<Row> = pairs
        .iter()
        .enumerate()
        .map(|(i, p)| {
            let (a, b) = (text(p, "a"), text(p, "b"));
            Row {
                split: text(p, "split"),
                category: text(p, "category"),
                same: p["same"].as_bool().unwrap_or(false),
                similarity: dot(&vectors[2 * i], &vectors[2 * i + 1]),
                quantities_match: guard::check(&guard::features(&b), &guard::features(&a)).is_ok(),
                shape: pair::shape(&b, &a),
                a,
                b,
            }
        })
        .collect();
    if let Some(out) = args.get(4) {
        let mut f = std::io::BufWriter::new(std::fs::File::create(out)?);
        for r in &rows {
            let line = json!({
                "split": r.split, "category": r.category, "same": r.same,
                "quantities_match": r.quantities_match, "surface": r.shape.surface_only(),
                "x": r.shape.vector(r.similarity),
            });
            writeln!(f, "{line}")?;
        }
        eprintln!("features written to {out}");
    }
    let t = DEFAULT_THRESHOLD;
    for split in ["dev", "heldout"] {
        let part: Vec<&Row> = rows.iter().filter(|r| r.split == split).collect();
        println!("\n### {split} part, threshold {t:.2}\n");
        println!("| category | answers | pairs | plain cosine served | the cache serves |");
        println!("|---|---|---:|---:|---:|");
        for c in CATEGORIES {
            let rs: Vec<&&Row> = part.iter().filter(|r| r.category == c).collect();
            let n = rs.len().max(1) as f64;
            let plain = rs.iter().filter(|r| r.similarity >= t).count() as f64;
            let ours = rs.iter().filter(|r| r.served(t)).count() as f64;
            let same = rs.first().is_some_and(|r| r.same);
            println!(
                "| {c} | {} | {} | {:.1} % | {:.1} % |",
                if same { "same" } else { "different" },
                rs.len(),
                100.0 * plain / n,
                100.0 * ours / n
            );
        }
        let (wrong, hits) = rates(&part, |r| r.served(t));
        let (pw, ph) = rates(&part, |r| r.similarity >= t);
        println!("| **wrong hits (all different-answer pairs)** | | | {pw:.1} % | {wrong:.1} % |");
        println!("| **hits (all same-answer pairs)** | | | {ph:.1} % | {hits:.1} % |");
        if std::env::var_os("SAFETY_DUMP").is_some() && split == "dev" {
            for r in part.iter().filter(|r| r.served(t) != r.same) {
                println!(
                    "  {} same={} sim={:.3} {:?}\n    a: {}\n    b: {}",
                    r.category, r.same, r.similarity, r.shape, r.a, r.b
                );
            }
        }
    }
    println!("\n### Over the threshold (held-out part; development in brackets)\n");
    println!("| threshold | wrong hits | same-answer hits | precision of a hit |");
    println!("|---:|---:|---:|---:|");
    let parts: BTreeMap<&str, Vec<&Row>> = ["dev", "heldout"]
        .into_iter()
        .map(|s| (s, rows.iter().filter(|r| r.split == s).collect()))
        .collect();
    for step in 0..=10 {
        let t = 0.70 + 0.025 * step as f32;
        let cell = |s: &str| {
            let part = &parts[s];
            let (wrong, hits) = rates(part, |r| r.served(t));
            let served: Vec<&&Row> = part.iter().filter(|r| r.served(t)).collect();
            let precision = 100.0 * served.iter().filter(|r| r.same).count() as f64
                / served.len().max(1) as f64;
            (wrong, hits, precision)
        };
        let (h, d) = (cell("heldout"), cell("dev"));
        println!(
            "| {t:.3} | {:.1} % ({:.1} %) | {:.1} % ({:.1} %) | {:.1} % ({:.1} %) |",
            h.0, d.0, h.1, d.1, h.2, d.2
        );
    }
    Ok(())
}

/// (wrong hits over different-answer pairs, hits over same-answer pairs), in percent.
fn rates(rows: &[&Row], served: impl Fn(&Row) -> bool) -> (f64, f64) {
    let share = |same: bool| {
        let group: Vec<&&Row> = rows.iter().filter(|r| r.same == same).collect();
        100.0 * group.iter().filter(|r| served(r)).count() as f64 / group.len().max(1) as f64
    };
    (share(false), share(true))
}
