//! What candle's CPU quantized matrix products alone cost per token, on a model's own weights.
//!
//! The bundled engine (mistral.rs on candle) runs every linear layer of a GGUF model through
//! candle's `QMatMul`. This times exactly those products, nothing else of the model (no
//! attention, norms, sampling or scheduling), for one decode token (one row of activations) and
//! for a prefill of `rows` tokens, so it bounds what any engine built on these kernels can reach:
//! tokens/s here is a ceiling, not a prediction.
//!
//! Each pass is timed twice: called from a thread outside rayon's pool (how mistral.rs calls it:
//! its engine thread is not a pool worker, so every product is injected into the pool and the
//! caller sleeps until it is done) and from inside a pool of the same size (`install`), which
//! shows what that hand-off costs.
//!
//! `qmatmul-ceiling <model.gguf> [rows=302] [reps=10] [as=file|q8_0|q4_0]` (`as` converts the
//! weights in memory the way `engine.requantize` does; `RAYON_NUM_THREADS` sets the threads).

use std::time::Instant;

use anyhow::Context;
use candle_core::quantized::{gguf_file, GgmlDType, QMatMul, QTensor};
use candle_core::{Device, Module, Tensor};

struct Layer {
    cols: usize,
    mm: QMatMul,
}

fn convert(t: QTensor, to: Option<GgmlDType>) -> anyhow::Result<QTensor> {
    let (_, cols) = t.shape().dims2()?;
    match to {
        Some(to) if t.dtype() != to && cols % to.block_size() == 0 => {
            let dense = t.dequantize(&Device::Cpu)?;
            Ok(QTensor::quantize(&dense, to)?)
        }
        _ => Ok(t),
    }
}

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let path = args
        .get(1)
        .context("usage: qmatmul-ceiling <model.gguf> [rows] [reps] [as]")?;
    let rows: usize = args.get(2).map_or(Ok(302), |s| s.parse())?;
    let reps: usize = args.get(3).map_or(Ok(10), |s| s.parse())?;
    let to = match args.get(4).map(String::as_str) {
        None | Some("file") => None,
        Some("q8_0") => Some(GgmlDType::Q8_0),
        Some("q4_0") => Some(GgmlDType::Q4_0),
        Some(other) => anyhow::bail!("unknown weight type `{other}` (file, q8_0, q4_0)"),
    };
    anyhow::ensure!(rows > 0 && reps > 0, "rows and reps must be positive");
    let mut file = std::fs::File::open(path).with_context(|| path.clone())?;
    let content = gguf_file::Content::read(&mut file)?;

    // The linear layers in layer order, as the model applies them.
    let mut names: Vec<&String> = content
        .tensor_infos
        .iter()
        .filter(|(n, info)| {
            n.starts_with("blk.") && n.ends_with(".weight") && info.shape.dims().len() == 2
        })
        .map(|(n, _)| n)
        .collect();
    let layer_of = |n: &str| -> usize {
        n.split('.')
            .nth(1)
            .and_then(|s| s.parse().ok())
            .unwrap_or(0)
    };
    names.sort_by_key(|n| (layer_of(n), n.to_string()));
    let mut layers = Vec::with_capacity(names.len());
    let mut params = 0usize;
    let mut types = std::collections::BTreeMap::<String, usize>::new();
    for name in names {
        let t = convert(content.tensor(&mut file, name, &Device::Cpu)?, to)?;
        let (n, k) = t.shape().dims2()?;
        params += n * k;
        *types.entry(format!("{:?}", t.dtype())).or_default() += 1;
        layers.push(Layer {
            cols: k,
            mm: QMatMul::from_qtensor(t)?,
        });
    }
    // The output projection (the token embedding when the model ties them), last row only.
    let head_name = if content.tensor_infos.contains_key("output.weight") {
        "output.weight"
    } else {
        "token_embd.weight"
    };
    let head = convert(content.tensor(&mut file, head_name, &Device::Cpu)?, to)?;
    let (vocab, hidden) = head.shape().dims2()?;
    params += vocab * hidden;
    *types.entry(format!("{:?}", head.dtype())).or_default() += 1;
    let head = QMatMul::from_qtensor(head)?;
    println!(
        "{path}: {} matrices + output ({types:?}), {:.1} M parameters, {} threads",
        layers.len(),
        params as f64 / 1e6,
        rayon::current_num_threads()
    );

    let inputs = |m: usize| -> anyhow::Result<Vec<Tensor>> {
        layers
            .iter()
            .map(|l| Ok(Tensor::randn(0f32, 1.0, (1, m, l.cols), &Device::Cpu)?))
            .collect()
    };
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(rayon::current_num_threads())
        .build()?;
    for (label, m) in [("decode", 1), ("prefill", rows)] {
        let xs = inputs(m)?;
        let last = Tensor::randn(0f32, 1.0, (1, 1, hidden), &Device::Cpu)?;
        let pass = || -> candle_core::Result<()> {
            for (l, x) in layers.iter().zip(&xs) {
                l.mm.forward(x)?;
            }
            head.forward(&last)?;
            Ok(())
        };
        pass()?; // warm-up: pages the weights in, starts the pool's threads
        let started = Instant::now();
        for _ in 0..reps {
            pass()?;
        }
        let outside = started.elapsed().as_secs_f64() / reps as f64;
        let started = Instant::now();
        pool.install(|| (0..reps).try_for_each(|_| pass()))?;
        let inside = started.elapsed().as_secs_f64() / reps as f64;
        println!(
            "{label} ({m} row{}): {:.2} ms per pass from outside the pool (at most {:.0} tok/s), \
             {:.2} ms inside it (at most {:.0} tok/s)",
            if m == 1 { "" } else { "s" },
            outside * 1e3,
            m as f64 / outside,
            inside * 1e3,
            m as f64 / inside,
        );
    }
    Ok(())
}
