//! The process-wide cache: started once with its [`Settings`] and [`Metrics`], it stores
//! completed responses, sweeps and snapshots itself, and answers lookups (`lookup.rs`).

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, OnceLock, Weak};
use std::time::Instant;

use serde_json::{json, Value};

use crate::embed::{self, EmbedError, Embedder};
use crate::fleet::port::Fleet;
use crate::key::Digest128;
use crate::metrics::Metrics;
use crate::pending::{Completed, Pending};
use crate::settings::Settings;
use crate::snapshot;
use crate::store::{Record, Removal, Store};
use crate::util::now_unix;

/// The process-wide cache.
pub struct Cache {
    /// Settings it was started with.
    pub settings: Settings,
    pub(crate) embedder: Arc<Embedder>,
    /// Which model makes the vectors ([`embed::model_id`]); snapshots record it.
    pub(crate) model_id: String,
    /// Entries and index.
    pub store: Store,
    pub(crate) metrics: Metrics,
    /// Recent hits by exact key, for the suspect-hit signal (see `lookup.rs`).
    pub(crate) recent_hits: Mutex<(HashMap<Digest128, Instant>, VecDeque<Digest128>)>,
    /// The other replicas, in fleet mode (`fleet.rs`).
    pub(crate) fleet: OnceLock<Arc<dyn Fleet>>,
    /// This cache, for work it hands to other threads.
    pub(crate) weak: OnceLock<Weak<Cache>>,
}

impl Cache {
    /// Loads the embedding model and the snapshot (a bad snapshot is logged and ignored).
    pub fn start(settings: Settings, metrics: Metrics) -> Result<Arc<Self>, embed::LoadError> {
        let started = Instant::now();
        let (dir, ort) = (settings.model_dir.clone(), settings.onnxruntime.clone());
        let file = settings.model_file.clone();
        let (intra, spin) = (settings.embed_intra_threads, settings.embed_spin);
        let embedder =
            Embedder::start(settings.embed_threads, settings.embed_timeout, move || {
                Ok(
                    Box::new(embed::MiniLm::load(&dir, &file, &ort, intra, spin)?)
                        as Box<dyn embed::TextEmbed>,
                )
            })?;
        let cache = Self::with_embedder(settings, metrics, embedder);
        tracing::info!(elapsed = ?started.elapsed(), entries = cache.store.sizes().0, model = %cache.model_id, "Reasoning cache ready.");
        Ok(cache)
    }

    /// A cache over any embedder (tests, benchmarks); loads the snapshot if configured.
    ///
    /// Vectors in a snapshot made by another embedding model (or by a version that did not
    /// record it) are not comparable with this model's: their problems are embedded again
    /// before they are loaded, and if that fails the cache starts empty.
    pub fn with_embedder(
        settings: Settings,
        metrics: Metrics,
        embedder: Arc<Embedder>,
    ) -> Arc<Self> {
        let store = Store::new();
        store.set_ef_search(settings.ann_ef_search);
        let model_id = embed::model_id(&settings.model_dir, &settings.model_file);
        let cache = Cache {
            embedder,
            model_id,
            store,
            recent_hits: Mutex::new((HashMap::new(), VecDeque::new())),
            fleet: OnceLock::new(),
            weak: OnceLock::new(),
            metrics,
            settings,
        };
        let mut build_graph = false;
        if let Some(dir) = &cache.settings.snapshot_dir {
            let path = snapshot::path(dir);
            match cache.snapshot_entries(dir) {
                Ok(Some(entries)) => {
                    let n = entries.len();
                    // Loading marks the store changed: the next snapshot records this model.
                    build_graph = cache.store.load_unindexed(entries);
                    tracing::info!(entries = n, path = %path.display(), "Reasoning cache snapshot loaded.");
                }
                Ok(None) => {}
                Err(e) => {
                    tracing::error!(error = %e, path = %path.display(), "Reasoning cache snapshot ignored; starting empty.");
                }
            }
        }
        let cache = Arc::new(cache);
        let _ = cache.weak.set(Arc::downgrade(&cache));
        if build_graph {
            // The gateway serves meanwhile: exact matches and partitions up to
            // SCAN_WHILE_DUE_MAX entries at once, lookups in larger ones miss until the graph is
            // there.
            let c = cache.clone();
            let spawned = std::thread::Builder::new()
                .name("rg-cache-graph".into())
                .spawn(move || {
                    let started = Instant::now();
                    c.store.rebuild();
                    tracing::info!(elapsed = ?started.elapsed(), entries = c.store.sizes().0, "Reasoning cache graph built.");
                });
            if let Err(e) = spawned {
                tracing::warn!(error = %e, "Could not start the graph build; building it now.");
                cache.store.rebuild();
            }
        }
        cache
    }

    /// The snapshot's entries, with vectors of this cache's model (`None`: no snapshot yet).
    fn snapshot_entries(
        &self,
        dir: &std::path::Path,
    ) -> Result<Option<Vec<snapshot::Loaded>>, String> {
        let snap = match snapshot::read(dir, now_unix()) {
            Ok(snap) => snap,
            Err(snapshot::ReadError::Missing) => return Ok(None),
            Err(e) => return Err(e.to_string()),
        };
        if snap.model.as_deref() == Some(self.model_id.as_str()) {
            return Ok(Some(snap.entries));
        }
        tracing::warn!(
            entries = snap.entries.len(),
            snapshot_model = snap.model.as_deref().unwrap_or("unknown"),
            model = %self.model_id,
            "The cache snapshot was made with another embedding model; embedding its problems again."
        );
        self.reembed(snap.entries)
            .map(Some)
            .map_err(|e| e.to_string())
    }

    /// Replaces each loaded entry's vector with this model's embedding of its problem.
    fn reembed(
        &self,
        mut entries: Vec<snapshot::Loaded>,
    ) -> Result<Vec<snapshot::Loaded>, EmbedError> {
        let texts: Vec<String> = entries.iter().map(|e| e.0.problem.clone()).collect();
        // A thread of its own: the embedder is waited on by blocking, which must not happen
        // inside an async runtime (the gateway starts the cache from one).
        let vectors = std::thread::scope(|s| {
            s.spawn(|| self.embedder.embed_all_blocking(&texts))
                .join()
                .unwrap_or(Err(EmbedError::Failed))
        })?;
        for (e, v) in entries.iter_mut().zip(vectors) {
            e.3 = v;
        }
        Ok(entries)
    }

    /// The embedder (benchmarks).
    pub fn embedder(&self) -> &Arc<Embedder> {
        &self.embedder
    }

    /// Stores a completed response (embedding it first if the lookup could not).
    ///
    /// The store runs on tokio's blocking pool, not on the proxy worker that finished the
    /// response: adding to a large graph takes about 0.5 ms (100 k entries, measured), time the
    /// worker's other connections should not wait for.
    pub fn insert(self: &Arc<Self>, pending: Pending, done: Completed) {
        let mut pending = pending;
        let cache = self.clone();
        match pending.vector.take() {
            Some(v) => {
                tokio::task::spawn_blocking(move || cache.insert_now(pending, done, v));
            }
            None => {
                tokio::spawn(async move {
                    if let Ok(v) = cache.embedder.embed_untimed(&pending.key.problem).await {
                        tokio::task::spawn_blocking(move || cache.insert_now(pending, done, v));
                    }
                });
            }
        }
    }

    fn insert_now(&self, pending: Pending, done: Completed, vector: Vec<f32>) {
        let now = now_unix();
        let record = Record {
            route: pending.route.clone(),
            tenant: pending.key.tenant.clone(),
            partition: crate::util::hex(&pending.key.partition),
            exact: crate::util::hex(&pending.key.exact),
            problem: pending.key.problem.clone(),
            reasoning: done.reasoning,
            answer: done.answer,
            model: done.model,
            usage: done.usage,
            created: now,
            expires: now + pending.settings.ttl.as_secs().max(1),
        };
        let (partition, exact, max) = (
            pending.key.partition,
            pending.key.exact,
            pending.settings.max_entries,
        );
        let removed = if pending.keep_existing {
            match self
                .store
                .insert_if_absent(record, partition, exact, vector, max)
            {
                Some(removed) => removed,
                None => {
                    self.metrics.shared_refresh_ignored(&pending.route);
                    return;
                }
            }
        } else {
            self.store.insert(record, partition, exact, vector, max)
        };
        self.metrics.insert(&pending.route);
        self.metrics.removals(&removed);
        self.set_entries();
        self.share(&exact);
    }

    /// Sets `cache_entries` for every route the store knows.
    pub fn set_entries(&self) {
        for (route, n) in self.store.counts() {
            self.metrics.entries(&route, n);
        }
    }

    /// Removes the entries of `route` and/or `tenant` (both `None`: every entry); how many.
    pub fn purge(&self, route: Option<&str>, tenant: Option<&str>) -> usize {
        let removed = self.store.purge(route, tenant);
        self.metrics.removed(Removal::Purge, removed);
        self.set_entries();
        removed
    }

    /// Drops expired entries, updates the gauges and rebuilds the index when due (seconds on a
    /// large cache: run it off the request path).
    pub fn maintain(&self) {
        let n = self.store.sweep(now_unix());
        self.metrics.removed(Removal::Expired, n);
        self.set_entries();
        if self.store.needs_rebuild() {
            self.store.rebuild();
        }
    }

    /// Writes a snapshot if configured and anything changed.
    pub fn write_snapshot(&self, force: bool) -> std::io::Result<bool> {
        let Some(dir) = &self.settings.snapshot_dir else {
            return Ok(false);
        };
        if !force && !self.store.is_dirty() {
            return Ok(false);
        }
        let entries = self.store.export();
        snapshot::write(dir, &self.model_id, &entries)?;
        Ok(true)
    }

    /// Admin stats.
    pub fn stats(&self) -> Value {
        let (entries, tenants, tombstones) = self.store.sizes();
        json!({
            "entries": entries,
            "tenants": tenants,
            "index_tombstones": tombstones,
            "index_shards": self.store.shard_sizes().len(),
            "index_stragglers": self.store.stragglers(),
            "routes": self.store.counts(),
            "snapshot_dir": self.settings.snapshot_dir.as_ref().map(|d| d.display().to_string()),
        })
    }
}
