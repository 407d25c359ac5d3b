//! What the cache is started with (process-wide) and what each route asks of it. The gateway
//! builds both from its validated config; the cache reads no config file itself.

use std::path::PathBuf;
use std::time::Duration;

/// Process-wide settings (a restart applies changes).
#[derive(Debug, Clone, PartialEq)]
pub struct Settings {
    /// Directory with the embedding model and its tokenizer files.
    pub model_dir: PathBuf,
    /// The ONNX file inside `model_dir` (see [`crate::embed::default_model_file`]).
    pub model_file: String,
    /// ONNX Runtime shared library.
    pub onnxruntime: PathBuf,
    /// Where snapshots go; `None`: the cache lives in memory only.
    pub snapshot_dir: Option<PathBuf>,
    /// How often a changed cache is written.
    pub snapshot_interval: Duration,
    /// Embedding threads (each embeds one batch at a time).
    pub embed_threads: usize,
    /// ONNX Runtime threads per embedding (2 halves a long problem's latency on 2 cores).
    pub embed_intra_threads: usize,
    /// Let ONNX Runtime threads spin between work items (lower latency, more CPU).
    pub embed_spin: bool,
    /// Candidate list of the graph search (recall against time; partitions over
    /// [`crate::store::BRUTE_FORCE_MAX`] entries).
    pub ann_ef_search: usize,
    /// Longest wait for an embedding before the request goes on as a miss.
    pub embed_timeout: Duration,
}

/// The similarity threshold of a route that does not set one.
pub const DEFAULT_THRESHOLD: f32 = 0.85;

/// A route's cache settings.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RouteSettings {
    /// Cosine similarity needed for a hit.
    pub threshold: f32,
    /// How long an entry is served.
    pub ttl: Duration,
    /// Entries kept for the route (oldest evicted first).
    pub max_entries: usize,
    /// Run the near-miss guard (off only to measure plain cosine).
    pub guard: bool,
    /// Serve entries across tenants (off by default).
    pub shared_across_tenants: bool,
}
