//! Loading a local GGUF with mistral.rs, fully offline.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::time::Instant;

use mistralrs::{GgufModelBuilder, Model, TokenSource};

use crate::error::EngineError;

/// What to load and how to run it.
#[derive(Debug, Clone)]
pub struct EngineOptions {
    /// Directory holding the GGUF (an existing local directory, never a hub id).
    pub model_dir: PathBuf,
    /// GGUF file name inside `model_dir`.
    pub gguf: String,
    /// The model name clients use; responses report it.
    pub served_model_name: String,
    /// Most sequences decoded at once.
    pub max_seqs: usize,
    /// CPU threads for generation.
    pub threads: usize,
    /// Chat template file overriding the GGUF's (Jinja text, or a tokenizer_config `.json`).
    pub chat_template: Option<PathBuf>,
    /// Largest prompt + completion length in tokens.
    pub max_context_tokens: usize,
    /// Dequantize the weights at load (`"f16"` or `"f32"`): faster prefill, slower decode.
    pub dequantize: Option<&'static str>,
    /// Convert weights candle has only scalar kernels for (see [`crate::requant`]).
    pub requantize: crate::requant::Requantize,
    /// Where converted copies of the model are kept.
    pub cache_dir: PathBuf,
}

/// A loaded model ready to serve.
pub struct Engine {
    /// The mistral.rs model.
    pub model: Model,
    /// Options it was loaded with.
    pub options: EngineOptions,
    /// Generations currently relayed to a client (reported by `/health`).
    pub active: std::sync::atomic::AtomicUsize,
}

/// Checks, before anything slow happens, that the directory and file exist and the file is a GGUF.
pub fn preflight(opts: &EngineOptions) -> Result<PathBuf, EngineError> {
    if !opts.model_dir.is_dir() {
        return Err(EngineError::NoModelDir(
            opts.model_dir.display().to_string(),
        ));
    }
    let file = opts.model_dir.join(&opts.gguf);
    if !file.is_file() {
        return Err(EngineError::NoModelFile(file.display().to_string()));
    }
    let mut magic = [0u8; 4];
    std::fs::File::open(&file)
        .and_then(|mut f| f.read_exact(&mut magic))
        .map_err(|source| EngineError::Io {
            path: file.display().to_string(),
            source,
        })?;
    if &magic != b"GGUF" {
        return Err(EngineError::NotGguf(file.display().to_string()));
    }
    if let Some(t) = &opts.chat_template {
        if !t.is_file() {
            return Err(EngineError::NoModelFile(t.display().to_string()));
        }
    }
    Ok(file)
}

fn template_arg(path: &Path) -> Result<String, EngineError> {
    // mistral.rs takes a path only for `.json` templates; Jinja text is passed literally.
    if path.extension().is_some_and(|e| e == "json") {
        return Ok(path.display().to_string());
    }
    std::fs::read_to_string(path).map_err(|source| EngineError::Io {
        path: path.display().to_string(),
        source,
    })
}

/// Loads the model. Takes seconds to minutes depending on its size.
pub async fn load(opts: EngineOptions) -> Result<Engine, EngineError> {
    let file = preflight(&opts)?;
    // candle sizes its CPU thread pool from this variable on first use.
    if std::env::var_os("RAYON_NUM_THREADS").is_none() {
        std::env::set_var("RAYON_NUM_THREADS", opts.threads.to_string());
    }
    // candle reads these once per thread, when a quantized matmul is first built.
    match opts.dequantize {
        Some("f32") => std::env::set_var("CANDLE_DEQUANTIZE_ALL", "1"),
        Some("f16") => std::env::set_var("CANDLE_DEQUANTIZE_ALL_F16", "1"),
        _ => {}
    }
    let started = Instant::now();
    let (mode, cache_dir) = (opts.requantize, opts.cache_dir.clone());
    let original = file.clone();
    let prepared =
        tokio::task::spawn_blocking(move || crate::requant::prepare(&file, &cache_dir, mode))
            .await
            .map_err(|e| EngineError::Requantize(e.to_string()))
            .and_then(|r| r);
    // A read-only cache directory (or a file candle cannot parse) costs speed, not service:
    // mistral.rs loads the original file and reports its own errors about it.
    let file = prepared.unwrap_or_else(|e| {
        tracing::warn!(error = %e, "Loading the model file as it is (slower on CPU).");
        original
    });
    let (dir, name) = match (file.parent(), file.file_name().and_then(|n| n.to_str())) {
        (Some(dir), Some(name)) => (dir.to_path_buf(), name.to_string()),
        _ => (opts.model_dir.clone(), opts.gguf.clone()),
    };
    tracing::info!(file = %file.display(), threads = opts.threads, max_seqs = opts.max_seqs, "Loading the bundled engine's model.");
    // An existing local directory as the model id and no token source: mistral.rs reads the
    // GGUF (weights, tokenizer, chat template) from disk and never contacts a hub.
    let mut builder = GgufModelBuilder::new(dir.display().to_string(), vec![name])
        .with_token_source(TokenSource::None)
        .with_max_num_seqs(opts.max_seqs);
    if !cfg!(feature = "cuda") {
        builder = builder.with_force_cpu();
    }
    if let Some(t) = &opts.chat_template {
        builder = builder.with_chat_template(template_arg(t)?);
    }
    let model = builder
        .build()
        .await
        .map_err(|e| EngineError::Load(format!("{e:#}")))?;
    tracing::info!(seconds = started.elapsed().as_secs_f64(), model = %opts.served_model_name, "The bundled engine's model is loaded.");
    Ok(Engine {
        model,
        options: opts,
        active: Default::default(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn opts(dir: &Path, gguf: &str) -> EngineOptions {
        EngineOptions {
            model_dir: dir.to_path_buf(),
            gguf: gguf.into(),
            served_model_name: "m".into(),
            max_seqs: 1,
            threads: 1,
            chat_template: None,
            max_context_tokens: 512,
            dequantize: None,
            requantize: crate::requant::Requantize::None,
            cache_dir: dir.join("cache"),
        }
    }

    #[test]
    fn preflight_names_the_missing_or_wrong_file() {
        let dir = std::env::temp_dir().join(format!("rg-engine-preflight-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let missing_dir = preflight(&opts(&dir.join("nope"), "x.gguf")).unwrap_err();
        assert!(
            matches!(missing_dir, EngineError::NoModelDir(_)),
            "{missing_dir}"
        );
        let missing = preflight(&opts(&dir, "x.gguf")).unwrap_err();
        assert!(missing.to_string().contains("x.gguf"), "{missing}");
        std::fs::write(dir.join("fake.gguf"), b"not a model").unwrap();
        let not_gguf = preflight(&opts(&dir, "fake.gguf")).unwrap_err();
        assert!(matches!(not_gguf, EngineError::NotGguf(_)), "{not_gguf}");
        std::fs::write(dir.join("ok.gguf"), b"GGUF\x03\x00\x00\x00").unwrap();
        assert!(preflight(&opts(&dir, "ok.gguf")).is_ok());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
