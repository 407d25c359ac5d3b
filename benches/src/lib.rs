//! Shared pieces of the benchmark binaries in `benches/src/bin/`.

use std::path::Path;

/// The embedding model file the cache benchmarks load from `model_dir`: `$MODEL_FILE` when set
/// (e.g. `model.onnx`, the model as fetched), else the gateway's default. Printed, so every
/// result names the model it came from.
pub fn model_file(model_dir: &Path) -> String {
    let file = std::env::var("MODEL_FILE")
        .unwrap_or_else(|_| reasoning_cache::embed::default_model_file(model_dir).to_string());
    eprintln!("embedding model: {}", model_dir.join(&file).display());
    file
}

/// Embeds `texts` in batches of 64 and says how long it took (stderr).
pub fn embed_all(
    model: &mut reasoning_cache::embed::MiniLm,
    texts: &[String],
) -> anyhow::Result<Vec<Vec<f32>>> {
    use reasoning_cache::embed::TextEmbed;
    let started = std::time::Instant::now();
    let mut vectors = Vec::with_capacity(texts.len());
    for chunk in texts.chunks(64) {
        vectors.extend(model.embed(chunk).map_err(|e| anyhow::anyhow!(e))?);
    }
    eprintln!(
        "embedded {} texts in {:.1?}",
        vectors.len(),
        started.elapsed()
    );
    Ok(vectors)
}

/// A small deterministic generator (Knuth's MMIX constants): benchmark inputs that are the same
/// on every run.
pub struct Lcg(pub u64);

impl Lcg {
    /// The next state.
    pub fn step(&mut self) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        self.0
    }

    /// 31 random bits.
    pub fn bits31(&mut self) -> u64 {
        self.step() >> 33
    }

    /// Uniform in (0, 1).
    pub fn uniform(&mut self) -> f32 {
        ((self.step() >> 40) as f32 + 0.5) / (1u64 << 24) as f32
    }

    /// Standard normal (Box-Muller).
    pub fn gauss(&mut self) -> f32 {
        let (u1, u2) = (self.uniform(), self.uniform());
        (-2.0 * u1.ln()).sqrt() * (2.0 * std::f32::consts::PI * u2).cos()
    }
}
