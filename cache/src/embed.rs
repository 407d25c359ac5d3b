//! Sentence embeddings on dedicated threads (never a Pingora worker), bounded in time and queue.
//!
//! Two lanes: lookups (a request waits for them, so at most one waits per thread and they go
//! first) and background work (inserts, start-up re-embedding), which waits its turn in a longer
//! queue and is embedded one text at a time, so a lookup never waits behind a batch of it.
//!
//! The model (paraphrase-MiniLM-L3-v2 by default, int8 ONNX) is loaded by fastembed as a
//! user-defined model from a local directory; ONNX Runtime is the shared library from the `onnxruntime` wheel, loaded at
//! run time (`ort-load-dynamic`). Nothing is fetched from a hub.

use std::collections::VecDeque;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::oneshot;

mod priority;

/// all-MiniLM-L6-v2 as fetched: int8 weights, float compute.
pub const SOURCE_MODEL: &str = "model.onnx";
/// The copy `make models` derives from it with int8 MatMuls (`scripts/quantize-embedder.py`):
/// 1.6× faster on this CPU, embeddings within cosine 0.988 of the source's (BENCHMARKS.md).
pub const DERIVED_MODEL: &str = "model.dynamic-int8.onnx";
/// The default: paraphrase-MiniLM-L3-v2 (three layers, same vocabulary and width), derived by
/// `make models` with int8 MatMuls and one per-token output. About 2.5× less CPU per text than
/// [`DERIVED_MODEL`], and as good on the development pairs with the pair check's constants
/// learned for it (BENCHMARKS.md). The pair check's constants belong to this model.
pub const DEFAULT_MODEL: &str = "paraphrase-MiniLM-L3-v2.int8.onnx";

/// The model file used when `cache.model_file` is not set: the first of [`DEFAULT_MODEL`],
/// [`DERIVED_MODEL`] and [`SOURCE_MODEL`] the directory has.
pub fn default_model_file(model_dir: &Path) -> &'static str {
    [DEFAULT_MODEL, DERIVED_MODEL]
        .into_iter()
        .find(|f| model_dir.join(f).is_file())
        .unwrap_or(SOURCE_MODEL)
}

/// What identifies the vectors a model makes: its file name and the start of its SHA-256.
/// Snapshots record it, so vectors from another model are never compared with this one's.
pub fn model_id(model_dir: &Path, model_file: &str) -> String {
    use sha2::{Digest, Sha256};
    let digest = std::fs::File::open(model_dir.join(model_file)).and_then(|mut f| {
        let mut h = Sha256::new();
        std::io::copy(&mut f, &mut h)?;
        Ok(h.finalize())
    });
    match digest {
        Ok(d) => format!("{model_file} sha256:{}", crate::util::hex(&d[..8])),
        Err(_) => model_file.to_string(),
    }
}

/// Tokenizer files the model directory must hold beside the model file.
pub const TOKENIZER_FILES: &[&str] = &[
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "config.json",
];

/// Longest input, in tokens: an embedding costs about linearly in them, and it only finds
/// candidates — the guard and the pair check compare the whole texts before anything is served.
const MAX_TOKENS: usize = 128;
/// Lookups waiting for an embedding thread, per thread; more are refused at once (served as
/// misses). One: a lookup never waits behind more than the batch a thread is embedding, so under
/// more lookups than the embedder can take the cache sheds them instead of adding its timeout to
/// every request (measured with 16 places: every request at 500 req/s waited the full 50 ms).
const LOOKUPS_PER_THREAD: usize = 1;
/// Background texts (inserts) waiting; more are dropped (the answer is not stored).
const BACKGROUND: usize = 256;
/// Lookups one thread embeds in one batch.
const BATCH: usize = 16;

/// Any error an embedding model reports.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Why the embedder could not start.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// A model or tokenizer file could not be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// ONNX Runtime is missing or would not load.
    #[error("{0}")]
    Runtime(String),
    /// The model would not load.
    #[error("cannot load the embedding model: {0}")]
    Model(String),
    /// An embedding thread could not be started.
    #[error("cannot start an embedding thread: {0}")]
    Thread(#[from] std::io::Error),
    /// An embedding thread stopped before its model was ready.
    #[error("the embedding thread stopped while loading")]
    Stopped,
}

/// Something that turns texts into unit vectors.
pub trait TextEmbed: Send {
    /// One vector per text, each normalised to length 1.
    fn embed(&mut self, texts: &[String]) -> Result<Vec<Vec<f32>>, BoxError>;
}

/// fastembed's `TextEmbedding` over the local MiniLM files.
pub struct MiniLm(fastembed::TextEmbedding);

impl MiniLm {
    /// Loads `model_file` and the tokenizer files from `model_dir` with ONNX Runtime from
    /// `onnxruntime` (a `.so` path).
    pub fn load(
        model_dir: &Path,
        model_file: &str,
        onnxruntime: &Path,
        intra_threads: usize,
        spin: bool,
    ) -> Result<Self, LoadError> {
        init_ort(onnxruntime)?;
        let read = |name: &str| -> Result<Vec<u8>, LoadError> {
            let path = model_dir.join(name);
            std::fs::read(&path).map_err(|source| LoadError::Read { path, source })
        };
        let tokenizer = fastembed::TokenizerFiles {
            tokenizer_file: read("tokenizer.json")?,
            config_file: read("config.json")?,
            special_tokens_map_file: read("special_tokens_map.json")?,
            tokenizer_config_file: read("tokenizer_config.json")?,
        };
        let model = fastembed::UserDefinedEmbeddingModel::new(read(model_file)?, tokenizer)
            .with_pooling(fastembed::Pooling::Mean);
        // Spin-waiting ONNX Runtime threads answer sooner but cost CPU (BENCHMARKS.md: about 15
        // against 9 CPU ms per request at 100 req/s; latency was lower with spinning throughout).
        let options = fastembed::InitOptionsUserDefined::new()
            .with_max_length(MAX_TOKENS)
            .with_intra_threads(intra_threads.max(1))
            .with_session_config(
                "session.intra_op.allow_spinning",
                if spin { "1" } else { "0" },
            );
        let te = fastembed::TextEmbedding::try_new_from_user_defined(model, options)
            .map_err(|e| LoadError::Model(e.to_string()))?;
        Ok(MiniLm(te))
    }
}

impl TextEmbed for MiniLm {
    fn embed(&mut self, texts: &[String]) -> Result<Vec<Vec<f32>>, BoxError> {
        let mut out = self
            .0
            .embed(texts, Some(BATCH))
            .map_err(|e| format!("embedding failed: {e}"))?;
        for v in &mut out {
            normalise(v);
        }
        Ok(out)
    }
}

/// Scales to unit length (a zero vector stays zero).
pub fn normalise(v: &mut [f32]) {
    let n = v.iter().map(|x| x * x).sum::<f32>().sqrt();
    if n > 0.0 {
        v.iter_mut().for_each(|x| *x /= n);
    }
}

static ORT: std::sync::OnceLock<Result<(), String>> = std::sync::OnceLock::new();

/// Points ONNX Runtime at its shared library, once per process.
fn init_ort(path: &Path) -> Result<(), LoadError> {
    let res = ORT.get_or_init(|| {
        if !path.is_file() {
            return Err(format!(
                "ONNX Runtime library {} not found (run `make models`)",
                path.display()
            ));
        }
        // Loading the library is what matters; sessions create the default environment.
        let _builder = ort::init_from(path)
            .map_err(|e| format!("cannot load ONNX Runtime from {}: {e}", path.display()))?;
        Ok(())
    });
    res.clone().map_err(LoadError::Runtime)
}

/// Embedding failures a request sees (all served as cache misses).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum EmbedError {
    /// The queue was full.
    #[error("embedding queue full")]
    Busy,
    /// It took longer than the configured timeout.
    #[error("embedding timed out")]
    Timeout,
    /// The model failed or the threads are gone.
    #[error("embedding failed")]
    Failed,
}

struct Job {
    text: String,
    reply: oneshot::Sender<Result<Vec<f32>, EmbedError>>,
}

/// Which lane a text waits in.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Lane {
    /// A request is waiting for it.
    Lookup,
    /// Nobody waits: an insert or start-up work.
    Background,
}

#[derive(Default)]
struct Lanes {
    lookups: VecDeque<Job>,
    background: VecDeque<Job>,
    closed: bool,
}

/// The two lanes, shared by the embedding threads.
struct Queue {
    lanes: Mutex<Lanes>,
    ready: Condvar,
    lookup_places: usize,
}

impl Queue {
    fn push(&self, lane: Lane, job: Job) -> Result<(), EmbedError> {
        let mut l = self.lanes.lock().map_err(|_| EmbedError::Failed)?;
        if l.closed {
            return Err(EmbedError::Failed);
        }
        let (q, places) = match lane {
            Lane::Lookup => (&mut l.lookups, self.lookup_places),
            Lane::Background => (&mut l.background, BACKGROUND),
        };
        if q.len() >= places {
            return Err(EmbedError::Busy);
        }
        q.push_back(job);
        drop(l);
        self.ready.notify_one();
        Ok(())
    }

    /// The next batch: waiting lookups (up to [`BATCH`]), else one background text; `None` once
    /// closed.
    fn take(&self) -> Option<Vec<Job>> {
        let mut l = self.lanes.lock().ok()?;
        loop {
            if !l.lookups.is_empty() {
                let n = l.lookups.len().min(BATCH);
                return Some(l.lookups.drain(..n).collect());
            }
            if let Some(job) = l.background.pop_front() {
                return Some(vec![job]);
            }
            if l.closed {
                return None;
            }
            l = self.ready.wait(l).ok()?;
        }
    }

    fn close(&self) {
        if let Ok(mut l) = self.lanes.lock() {
            l.closed = true;
        }
        self.ready.notify_all();
    }
}

/// Embedding threads fed through two bounded lanes.
pub struct Embedder {
    queue: Arc<Queue>,
    timeout: Duration,
}

impl Drop for Embedder {
    fn drop(&mut self) {
        self.queue.close();
    }
}

impl Embedder {
    /// Starts `threads` threads, each with its own model from `make`.
    ///
    /// Each thread lowers its own scheduling priority to nice [`EMBED_NICE`] and only then builds
    /// its model, so ONNX Runtime's intra-op threads (created with the session) inherit it. When
    /// the CPUs are idle embeddings run as fast as before; when they are contended — more
    /// lookups than the embedder can take — the proxy's threads come first and the cache's work
    /// waits (and times out into a plain miss), instead of the embedder starving the traffic.
    pub fn start<F>(threads: usize, timeout: Duration, make: F) -> Result<Arc<Self>, LoadError>
    where
        F: Fn() -> Result<Box<dyn TextEmbed>, LoadError> + Send + Sync + 'static,
    {
        let queue = Arc::new(Queue {
            lanes: Mutex::new(Lanes::default()),
            ready: Condvar::new(),
            lookup_places: LOOKUPS_PER_THREAD * threads.max(1),
        });
        let make = Arc::new(make);
        for i in 0..threads.max(1) {
            let (lanes, make) = (queue.clone(), make.clone());
            let (ready_tx, ready_rx) = std::sync::mpsc::channel();
            std::thread::Builder::new()
                .name(format!("rg-embed-{i}"))
                .spawn(move || {
                    lower_priority();
                    match make() {
                        Ok(model) => {
                            let _ = ready_tx.send(Ok(()));
                            worker(model, &lanes);
                        }
                        Err(e) => {
                            let _ = ready_tx.send(Err(e));
                        }
                    }
                })?;
            if let Err(e) = ready_rx
                .recv()
                .map_err(|_| LoadError::Stopped)
                .and_then(|r| r)
            {
                queue.close();
                return Err(e);
            }
        }
        Ok(Arc::new(Embedder { queue, timeout }))
    }

    /// Queues `text` in `lane`; refused at once when the lane is full, so the caller never
    /// blocks.
    fn enqueue(
        &self,
        text: &str,
        lane: Lane,
    ) -> Result<oneshot::Receiver<Result<Vec<f32>, EmbedError>>, EmbedError> {
        let (reply, rx) = oneshot::channel();
        let job = Job {
            text: text.to_string(),
            reply,
        };
        self.queue.push(lane, job)?;
        Ok(rx)
    }

    /// Embeds one text, waiting at most the configured timeout.
    pub async fn embed(&self, text: &str) -> Result<Vec<f32>, EmbedError> {
        let rx = self.enqueue(text, Lane::Lookup)?;
        match tokio::time::timeout(self.timeout, rx).await {
            Ok(Ok(r)) => r,
            Ok(Err(_)) => Err(EmbedError::Failed),
            Err(_) => Err(EmbedError::Timeout),
        }
    }

    /// Embeds many texts without a deadline, blocking the calling thread (start-up work, never
    /// a request path, never inside an async runtime), in the background lane.
    pub fn embed_all_blocking(&self, texts: &[String]) -> Result<Vec<Vec<f32>>, EmbedError> {
        let mut out = Vec::with_capacity(texts.len());
        for window in texts.chunks(BACKGROUND) {
            let pending = window
                .iter()
                .map(|t| self.enqueue(t, Lane::Background))
                .collect::<Result<Vec<_>, _>>()?;
            for rx in pending {
                out.push(rx.blocking_recv().map_err(|_| EmbedError::Failed)??);
            }
        }
        Ok(out)
    }

    /// Embeds without a deadline (background inserts), after every waiting lookup; refused at
    /// once when the background lane is full, so it never blocks the calling thread.
    pub async fn embed_untimed(&self, text: &str) -> Result<Vec<f32>, EmbedError> {
        let rx = self.enqueue(text, Lane::Background)?;
        rx.await.map_err(|_| EmbedError::Failed)?
    }
}

/// Scheduling priority of the embedding threads (and the ONNX Runtime threads they create).
pub const EMBED_NICE: i32 = 10;

/// Lowers the calling thread's priority to [`EMBED_NICE`] (Linux priorities are per thread).
fn lower_priority() {
    // Linux priorities are per thread: `setpriority(PRIO_PROCESS, tid)` changes this one.
    let ok = priority::set_own(EMBED_NICE);
    if !ok {
        tracing::warn!(
            "Could not lower the embedding threads' priority; they compete with the proxy."
        );
    }
}

fn worker(mut model: Box<dyn TextEmbed>, queue: &Queue) {
    while let Some(mut jobs) = queue.take() {
        // Requests that already gave up are not embedded.
        jobs.retain(|j| !j.reply.is_closed());
        if jobs.is_empty() {
            continue;
        }
        let texts: Vec<String> = jobs.iter().map(|j| j.text.clone()).collect();
        let started = Instant::now();
        let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| model.embed(&texts)));
        match result {
            Ok(Ok(vectors)) if vectors.len() == jobs.len() => {
                for (job, v) in jobs.into_iter().zip(vectors) {
                    let _ = job.reply.send(Ok(v));
                }
            }
            other => {
                if let Ok(Err(e)) = &other {
                    tracing::warn!(error = %e, "Embedding failed.");
                } else {
                    tracing::warn!("Embedding panicked or returned the wrong number of vectors.");
                }
                for job in jobs {
                    let _ = job.reply.send(Err(EmbedError::Failed));
                }
            }
        }
        tracing::trace!(elapsed = ?started.elapsed(), "embedded a batch");
    }
}

/// Default ONNX Runtime library location for a model directory: `$ORT_DYLIB_PATH`, else
/// `models/onnxruntime/libonnxruntime.so` beside it.
pub fn default_onnxruntime(model_dir: &Path) -> PathBuf {
    if let Some(p) = std::env::var_os("ORT_DYLIB_PATH") {
        return PathBuf::from(p);
    }
    model_dir
        .parent()
        .unwrap_or(Path::new("."))
        .join("onnxruntime/libonnxruntime.so")
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A model that takes `delay` per batch (the queue and deadline mechanics under test).
    struct Slow(Duration);

    impl TextEmbed for Slow {
        fn embed(&mut self, texts: &[String]) -> Result<Vec<Vec<f32>>, BoxError> {
            std::thread::sleep(self.0);
            Ok(texts.iter().map(|t| vec![t.len() as f32, 1.0]).collect())
        }
    }

    #[tokio::test]
    async fn a_slow_embedding_times_out_instead_of_holding_the_request() {
        let e = Embedder::start(1, Duration::from_millis(20), || {
            Ok(Box::new(Slow(Duration::from_millis(400))) as Box<dyn TextEmbed>)
        })
        .unwrap();
        let started = Instant::now();
        assert_eq!(e.embed("question").await, Err(EmbedError::Timeout));
        assert!(started.elapsed() < Duration::from_millis(300));
    }

    #[tokio::test]
    async fn embeddings_come_back_to_their_own_request() {
        let e = Embedder::start(2, Duration::from_secs(5), || {
            Ok(Box::new(Slow(Duration::from_millis(1))) as Box<dyn TextEmbed>)
        })
        .unwrap();
        let (a, b) = tokio::join!(e.embed("ab"), e.embed("abcd"));
        assert_eq!(a.unwrap()[0], 2.0);
        assert_eq!(b.unwrap()[0], 4.0);
    }

    /// A model that records what it embeds and holds each batch until the test lets it go.
    struct Gate {
        seen: Arc<Mutex<Vec<String>>>,
        started: std::sync::mpsc::Sender<()>,
        release: Arc<Mutex<std::sync::mpsc::Receiver<()>>>,
    }

    impl TextEmbed for Gate {
        fn embed(&mut self, texts: &[String]) -> Result<Vec<Vec<f32>>, BoxError> {
            self.seen.lock().unwrap().extend(texts.iter().cloned());
            let _ = self.started.send(());
            let _ = self.release.lock().unwrap().recv();
            Ok(texts.iter().map(|t| vec![t.len() as f32, 1.0]).collect())
        }
    }

    /// One embedding thread behind a [`Gate`]: what it embedded, "it started a batch", "let
    /// one batch go".
    #[allow(clippy::type_complexity)]
    fn gated() -> (
        Arc<Embedder>,
        Arc<Mutex<Vec<String>>>,
        std::sync::mpsc::Receiver<()>,
        std::sync::mpsc::Sender<()>,
    ) {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let (started_tx, started) = std::sync::mpsc::channel();
        let (release, release_rx) = std::sync::mpsc::channel();
        let release_rx = Arc::new(Mutex::new(release_rx));
        let model_seen = seen.clone();
        let e = Embedder::start(1, Duration::from_secs(30), move || {
            Ok(Box::new(Gate {
                seen: model_seen.clone(),
                started: started_tx.clone(),
                release: release_rx.clone(),
            }) as Box<dyn TextEmbed>)
        })
        .unwrap();
        (e, seen, started, release)
    }

    #[test]
    fn a_lookup_never_queues_behind_more_than_the_batch_being_embedded() {
        let (e, _seen, started, release) = gated();
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        let first = e.enqueue("first", Lane::Lookup).unwrap();
        started.recv_timeout(Duration::from_secs(10)).unwrap();
        // The thread is busy with `first`: one more lookup may wait, the next is refused at once.
        let second = e.enqueue("second", Lane::Lookup).unwrap();
        assert_eq!(
            e.enqueue("third", Lane::Lookup).unwrap_err(),
            EmbedError::Busy
        );
        // Background work still has room: inserts are not lost to a busy lookup lane.
        let insert = e.enqueue("insert", Lane::Background).unwrap();
        for _ in 0..3 {
            release.send(()).unwrap();
        }
        rt.block_on(async {
            assert_eq!(first.await.unwrap().unwrap()[0], 5.0);
            assert_eq!(second.await.unwrap().unwrap()[0], 6.0);
            assert_eq!(insert.await.unwrap().unwrap()[0], 6.0);
        });
    }

    #[test]
    fn waiting_lookups_go_before_waiting_background_work() {
        let (e, seen, started, release) = gated();
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        let busy = e.enqueue("busy", Lane::Background).unwrap();
        started.recv_timeout(Duration::from_secs(10)).unwrap();
        let later: Vec<_> = ["insert-1", "insert-2"]
            .iter()
            .map(|t| e.enqueue(t, Lane::Background).unwrap())
            .collect();
        let lookup = e.enqueue("lookup", Lane::Lookup).unwrap();
        for _ in 0..4 {
            release.send(()).unwrap();
        }
        rt.block_on(async {
            busy.await.unwrap().unwrap();
            lookup.await.unwrap().unwrap();
            for rx in later {
                rx.await.unwrap().unwrap();
            }
        });
        assert_eq!(
            *seen.lock().unwrap(),
            ["busy", "lookup", "insert-1", "insert-2"]
        );
    }

    #[test]
    fn the_model_is_built_on_a_low_priority_thread_whose_threads_inherit_it() {
        fn nice() -> i32 {
            super::priority::own()
        }
        let seen = Arc::new(Mutex::new(Vec::new()));
        let record = seen.clone();
        let caller = nice();
        Embedder::start(1, Duration::from_secs(1), move || {
            // ONNX Runtime creates its intra-op threads here, from the embedding thread.
            let child = std::thread::spawn(nice).join().unwrap();
            let name = std::thread::current().name().map(str::to_owned);
            record.lock().unwrap().push((nice(), child, name));
            Ok(Box::new(Slow(Duration::ZERO)) as Box<dyn TextEmbed>)
        })
        .unwrap();
        let seen = seen.lock().unwrap().clone();
        assert_eq!(seen.len(), 1);
        let (own, child, name) = seen[0].clone();
        assert_eq!(name.as_deref(), Some("rg-embed-0"));
        assert!(own >= EMBED_NICE, "embedding thread at nice {own}");
        assert_eq!(child, own, "threads it creates inherit its priority");
        // The caller (a proxy thread in the gateway) keeps its own priority.
        assert_eq!(nice(), caller);
    }

    #[test]
    fn a_missing_library_is_a_clear_error() {
        // No unit test loads the real library, so this is the process's first (and only) try.
        let e = init_ort(Path::new("/nonexistent/libonnxruntime.so")).unwrap_err();
        assert!(e.to_string().contains("not found"), "{e}");
        assert!(e.to_string().contains("make models"), "{e}");
    }
}
