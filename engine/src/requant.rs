//! Requantizing a GGUF's weights, once, to a type candle has SIMD kernels for.
//!
//! candle (mistral.rs's tensor library) picks its quantized dot products at compile time and has
//! AVX2 kernels for `Q4_0`, `Q8_0` and the K-quants, but computes `Q4_1`, `Q5_0`, `Q5_1` and
//! `Q8_1` with scalar code. Those tensors are converted to `Q8_0` (the default model,
//! SmolLM2-135M Q4_1, is all `Q4_1`): every value of a 4- or 5-bit block is re-expressed on an
//! 8-bit grid, so the model's outputs barely move while matrix products run vectorised. The
//! converted file is written into `cache_dir`, named after the source's SHA-256 (so a fresh copy
//! of the same file finds it), and reused on later starts.

use std::fs::File;
use std::io::{BufReader, BufWriter};
use std::path::{Path, PathBuf};
use std::time::Instant;

use candle_core::quantized::gguf_file::{self, Value};
use candle_core::quantized::{GgmlDType, QTensor};
use candle_core::Device;

use crate::error::EngineError;

/// What to do with weights candle only has scalar kernels for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Requantize {
    /// Load the file as it is.
    None,
    /// Convert tensors without SIMD kernels (`Q4_1`, `Q5_0`, `Q5_1`, `Q8_1`) to `Q8_0` (CPU
    /// builds; a no-op with the `cuda` feature).
    Auto,
    /// Convert every quantized tensor that is not already `Q4_0` to `Q4_0` (smaller, lossy).
    Q4_0,
}

fn scalar_only(t: GgmlDType) -> bool {
    matches!(
        t,
        GgmlDType::Q4_1 | GgmlDType::Q5_0 | GgmlDType::Q5_1 | GgmlDType::Q8_1
    )
}

fn quantized(t: GgmlDType) -> bool {
    !matches!(t, GgmlDType::F32 | GgmlDType::F16 | GgmlDType::BF16)
}

/// The type `tensor` (of `dtype` and last dimension `cols`) becomes, if it changes.
fn target(mode: Requantize, dtype: GgmlDType, cols: usize) -> Option<GgmlDType> {
    let to = match mode {
        Requantize::None => return None,
        Requantize::Auto if scalar_only(dtype) => GgmlDType::Q8_0,
        Requantize::Q4_0 if quantized(dtype) && dtype != GgmlDType::Q4_0 => GgmlDType::Q4_0,
        _ => return None,
    };
    cols.is_multiple_of(to.block_size()).then_some(to)
}

fn err(path: &Path, e: impl std::fmt::Display) -> EngineError {
    EngineError::Requantize(format!("{}: {e}", path.display()))
}

/// The file to load: `src` itself when nothing needs converting, otherwise the converted copy in
/// `cache_dir` (written now unless an up-to-date one is there).
pub fn prepare(src: &Path, cache_dir: &Path, mode: Requantize) -> Result<PathBuf, EngineError> {
    // CUDA builds run on the GPU, where candle has kernels for every type: nothing to gain.
    if mode == Requantize::None || mode == Requantize::Auto && cfg!(feature = "cuda") {
        return Ok(src.to_path_buf());
    }
    let mut reader = BufReader::new(File::open(src).map_err(|e| err(src, e))?);
    let content = gguf_file::Content::read(&mut reader).map_err(|e| err(src, e))?;
    let mut names: Vec<(&String, &gguf_file::TensorInfo)> = content.tensor_infos.iter().collect();
    names.sort_by_key(|(_, info)| info.offset);
    let plan: Vec<Option<GgmlDType>> = names
        .iter()
        .map(|(_, info)| {
            let cols = info.shape.dims().last().copied().unwrap_or(0);
            target(mode, info.ggml_dtype, cols)
        })
        .collect();
    let converted = plan.iter().filter(|t| t.is_some()).count();
    if converted == 0 {
        return Ok(src.to_path_buf());
    }
    // candle's GGUF writer takes every tensor at once: the whole converted model is in memory
    // while it is written. Refuse (and load the file as it is) when that would not fit.
    let needed: u64 = names
        .iter()
        .zip(&plan)
        .map(|((_, info), to)| {
            let t = to.unwrap_or(info.ggml_dtype);
            (info.shape.elem_count() / t.block_size() * t.type_size()) as u64
        })
        .sum();
    if let Some(available) = mem_available() {
        if !fits_in_memory(needed, available) {
            tracing::warn!(
                needed_mib = needed >> 20,
                available_mib = available >> 20,
                "Not requantizing: converting needs the whole model in memory; loading the file as it is."
            );
            return Ok(src.to_path_buf());
        }
    }
    let meta = std::fs::metadata(src).map_err(|e| err(src, e))?;
    let mtime = meta
        .modified()
        .ok()
        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
        .map_or(0, |d| d.as_nanos());
    let stem = src.file_stem().and_then(|s| s.to_str()).unwrap_or("model");
    let suffix = match mode {
        Requantize::Q4_0 => "q4_0",
        _ => "simd",
    };
    // Named by content, so a fresh copy of the same file (a new clone, a re-download) finds the
    // conversion already made instead of adding another.
    let digest = source_digest(src, cache_dir, &format!("{stem}.{}-{mtime}", meta.len()))?;
    let dst = cache_dir.join(format!("{stem}.{}.{suffix}.gguf", &digest[..16]));
    if dst.is_file() {
        tracing::info!(file = %dst.display(), "Using the requantized copy of the model.");
        return Ok(dst);
    }
    let started = Instant::now();
    tracing::info!(from = %src.display(), to = %dst.display(), tensors = converted, "Requantizing weights that candle has no SIMD kernels for (once; the copy is reused).");
    let mut tensors = Vec::with_capacity(names.len());
    for ((name, _), to) in names.iter().zip(&plan) {
        let t = content
            .tensor(&mut reader, name, &Device::Cpu)
            .map_err(|e| err(src, format!("tensor {name}: {e}")))?;
        let t = match to {
            Some(to) => {
                let dense = t
                    .dequantize(&Device::Cpu)
                    .map_err(|e| err(src, format!("tensor {name}: {e}")))?;
                QTensor::quantize(&dense, *to)
                    .map_err(|e| err(src, format!("tensor {name}: {e}")))?
            }
            None => t,
        };
        tensors.push((name.as_str(), t));
    }
    let mut metadata: Vec<(&str, &Value)> = content
        .metadata
        .iter()
        .map(|(k, v)| (k.as_str(), v))
        .collect();
    metadata.sort_by_key(|(k, _)| *k);
    std::fs::create_dir_all(cache_dir).map_err(|e| err(cache_dir, e))?;
    let tmp = dst.with_extension(format!("tmp{}", std::process::id()));
    let written = (|| {
        let mut w = BufWriter::new(File::create(&tmp).map_err(|e| err(&tmp, e))?);
        let refs: Vec<(&str, &QTensor)> = tensors.iter().map(|(n, t)| (*n, t)).collect();
        gguf_file::write(&mut w, &metadata, &refs).map_err(|e| err(&tmp, e))?;
        let f = w.into_inner().map_err(|e| err(&tmp, e.error()))?;
        f.sync_all().map_err(|e| err(&tmp, e))?;
        std::fs::rename(&tmp, &dst).map_err(|e| err(&dst, e))
    })();
    if written.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    written?;
    tracing::info!(file = %dst.display(), seconds = started.elapsed().as_secs_f64(), "Requantized.");
    Ok(dst)
}

/// The source's SHA-256 (hex). Hashing reads the whole file (0.4 s for the default model), so
/// the digest is remembered beside the copies under the file's size and mtime.
fn source_digest(src: &Path, cache_dir: &Path, identity: &str) -> Result<String, EngineError> {
    use sha2::{Digest, Sha256};

    let memo = cache_dir.join(format!("{identity}.sha256"));
    if let Ok(text) = std::fs::read_to_string(&memo) {
        let text = text.trim();
        if text.len() == 64 && text.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Ok(text.to_string());
        }
    }
    let mut hasher = Sha256::new();
    File::open(src)
        .and_then(|mut f| std::io::copy(&mut f, &mut hasher))
        .map_err(|e| err(src, e))?;
    let digest: String = hasher
        .finalize()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    // Best effort: without the memo the next start hashes again.
    if std::fs::create_dir_all(cache_dir).is_ok() {
        let _ = std::fs::write(&memo, &digest);
    }
    Ok(digest)
}

/// Converting may use at most half of the memory available now.
fn fits_in_memory(needed: u64, available: u64) -> bool {
    needed <= available / 2
}

/// `MemAvailable` from /proc/meminfo, in bytes.
fn mem_available() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/meminfo").ok()?;
    let line = text.lines().find(|l| l.starts_with("MemAvailable:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_scalar_kernel_types_change_in_auto_mode() {
        assert_eq!(
            target(Requantize::Auto, GgmlDType::Q4_1, 576),
            Some(GgmlDType::Q8_0)
        );
        assert_eq!(target(Requantize::Auto, GgmlDType::Q8_0, 576), None);
        assert_eq!(target(Requantize::Auto, GgmlDType::Q4K, 576), None);
        assert_eq!(target(Requantize::Auto, GgmlDType::F32, 576), None);
        // A row length that Q8_0 blocks cannot tile stays as it is.
        assert_eq!(target(Requantize::Auto, GgmlDType::Q4_1, 40), None);
        assert_eq!(target(Requantize::None, GgmlDType::Q4_1, 576), None);
        assert_eq!(
            target(Requantize::Q4_0, GgmlDType::Q8_0, 576),
            Some(GgmlDType::Q4_0)
        );
    }

    #[test]
    fn conversion_is_refused_when_the_converted_model_would_not_fit_in_half_the_memory() {
        const GIB: u64 = 1 << 30;
        // The default model: 145 MB converted.
        assert!(fits_in_memory(145 << 20, 8 * GIB));
        // A 7B Q4_1 model becomes about 7.5 GB of Q8_0: not on a 12 GiB machine.
        assert!(!fits_in_memory(7_500_000_000, 12 * GIB));
        assert!(fits_in_memory(7_500_000_000, 16 * GIB));
        assert!(mem_available().is_some_and(|m| m > 0));
    }

    fn write_gguf(path: &Path, tensors: &[(&str, &QTensor)]) {
        let arch = Value::String("llama".into());
        let mut f = File::create(path).unwrap();
        gguf_file::write(&mut f, &[("general.architecture", &arch)], tensors).unwrap();
    }

    fn read_gguf(path: &Path) -> (gguf_file::Content, Vec<(String, QTensor)>) {
        let mut r = BufReader::new(File::open(path).unwrap());
        let c = gguf_file::Content::read(&mut r).unwrap();
        let mut names: Vec<String> = c.tensor_infos.keys().cloned().collect();
        names.sort();
        let ts = names
            .into_iter()
            .map(|n| {
                let t = c.tensor(&mut r, &n, &Device::Cpu).unwrap();
                (n, t)
            })
            .collect();
        (c, ts)
    }

    fn values(t: &QTensor) -> Vec<f32> {
        t.dequantize(&Device::Cpu)
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1()
            .unwrap()
    }

    #[test]
    #[cfg(not(feature = "cuda"))]
    fn a_q4_1_model_is_converted_once_to_q8_0_with_the_same_values() {
        let dir = std::env::temp_dir().join(format!("rg-requant-{}", std::process::id()));
        let cache = dir.join("cache");
        std::fs::create_dir_all(&dir).unwrap();
        let dense = candle_core::Tensor::randn(0f32, 1.0, (64, 128), &Device::Cpu).unwrap();
        let weight = QTensor::quantize(&dense, GgmlDType::Q4_1).unwrap();
        let norm = QTensor::quantize(
            &candle_core::Tensor::ones(128, candle_core::DType::F32, &Device::Cpu).unwrap(),
            GgmlDType::F32,
        )
        .unwrap();
        let src = dir.join("m.gguf");
        write_gguf(&src, &[("blk.0.w", &weight), ("blk.0.norm", &norm)]);

        assert_eq!(prepare(&src, &cache, Requantize::None).unwrap(), src);
        let out = prepare(&src, &cache, Requantize::Auto).unwrap();
        assert_ne!(out, src);
        assert!(out.starts_with(&cache));
        let (content, tensors) = read_gguf(&out);
        assert_eq!(
            content.metadata["general.architecture"]
                .to_string()
                .unwrap(),
            "llama"
        );
        let by_name: std::collections::HashMap<_, _> = tensors.into_iter().collect();
        assert_eq!(by_name["blk.0.w"].dtype(), GgmlDType::Q8_0);
        assert_eq!(by_name["blk.0.norm"].dtype(), GgmlDType::F32);
        assert_eq!(by_name["blk.0.w"].shape().dims(), &[64, 128]);
        // Every 4-bit value lands on the 8-bit grid within half a step of it.
        let (before, after) = (values(&weight), values(&by_name["blk.0.w"]));
        let amax = before.iter().fold(0f32, |m, v| m.max(v.abs()));
        let worst = before
            .iter()
            .zip(&after)
            .fold(0f32, |m, (a, b)| m.max((a - b).abs()));
        assert!(worst <= amax / 127.0, "max difference {worst}, amax {amax}");

        // The second start reuses the copy instead of converting again; so does a fresh copy of
        // the same file (another mtime), while other content gets its own conversion.
        let written = std::fs::metadata(&out).unwrap().modified().unwrap();
        assert_eq!(prepare(&src, &cache, Requantize::Auto).unwrap(), out);
        File::options()
            .write(true)
            .open(&src)
            .unwrap()
            .set_modified(std::time::SystemTime::now() + std::time::Duration::from_secs(100))
            .unwrap();
        assert_eq!(prepare(&src, &cache, Requantize::Auto).unwrap(), out);
        assert_eq!(
            std::fs::metadata(&out).unwrap().modified().unwrap(),
            written
        );
        let copies = |dir: &Path| {
            std::fs::read_dir(dir)
                .unwrap()
                .flatten()
                .filter(|e| e.path().extension().is_some_and(|x| x == "gguf"))
                .count()
        };
        assert_eq!(copies(&cache), 1);
        let other = QTensor::quantize(
            &candle_core::Tensor::randn(0f32, 1.0, (64, 128), &Device::Cpu).unwrap(),
            GgmlDType::Q4_1,
        )
        .unwrap();
        write_gguf(&src, &[("blk.0.w", &other), ("blk.0.norm", &norm)]);
        let out2 = prepare(&src, &cache, Requantize::Auto).unwrap();
        assert_ne!(out2, out);
        assert_eq!(copies(&cache), 2);

        // A model with nothing to convert is loaded as it is.
        let q8 = QTensor::quantize(&dense, GgmlDType::Q8_0).unwrap();
        let plain = dir.join("plain.gguf");
        write_gguf(&plain, &[("blk.0.w", &q8)]);
        assert_eq!(prepare(&plain, &cache, Requantize::Auto).unwrap(), plain);

        // A damaged file is a clear error, not a panic.
        let broken = dir.join("broken.gguf");
        std::fs::write(&broken, b"GGUF\x03\x00\x00\x00\xff").unwrap();
        let e = prepare(&broken, &cache, Requantize::Auto).unwrap_err();
        assert!(e.to_string().contains("broken.gguf"), "{e}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
