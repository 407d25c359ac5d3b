//! Shared pieces of the benchmark binaries in `benches/src/bin/`.

use std::path::Path;

/// The embedding model file the cache benchmarks load from `model_dir`: `$MODEL_FILE` when set
/// (e.g. `model.onnx`, the model as fetched), else the gateway's default. Printed, so every
/// result names the model it came from.
pub fn model_file(model_dir: &Path) -> String {
    let file = std::env::var("MODEL_FILE").unwrap_or_else(|_| {
        reasoning_gateway::cache::embed::default_model_file(model_dir).to_string()
    });
    eprintln!("embedding model: {}", model_dir.join(&file).display());
    file
}
