//! The reasoning cache: replays a stored reasoning chain and answer when the same problem comes
//! again, and refuses near-misses.
//!
//! Lookup: tenant (none: not cached, see `tenant`) → bypass headers → key (tenant, partition,
//! problem) → exact tier (same problem text,
//! spacing aside) → embedding (dedicated threads, bounded wait) → nearest entries of the
//! partition (HNSW or an exact scan) → threshold → guard. Only complete, verified responses are
//! stored (see `proxy::log`).

pub mod embed;
mod flat;
pub mod guard;
pub mod key;
pub mod replay;
pub mod snapshot;
pub mod store;
pub mod tenant;
mod vector;

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde_json::{json, Map, Value};

use crate::config::{CacheSettings, RouteCacheConfig};
use crate::metrics::Metrics;
use embed::{EmbedError, Embedder};
use guard::Reject;
use key::RequestKey;
use store::{Candidate, Record, Removal, Store, Usage};

/// Candidates examined per lookup.
const CANDIDATES: usize = 8;
/// How long a hit is remembered for the suspect-hit signal.
const SUSPECT_WINDOW: Duration = Duration::from_secs(600);
/// Hits remembered for the suspect-hit signal.
const SUSPECT_MEMORY: usize = 10_000;

/// Unix seconds now.
pub fn now_unix() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// What to do with a request.
#[derive(Debug)]
pub enum Lookup {
    /// Replay this entry.
    Hit {
        /// The entry.
        entry: Arc<store::Entry>,
        /// Its similarity (1 for the exact tier).
        similarity: f32,
    },
    /// Go upstream; store the response if it qualifies.
    Miss {
        /// What to store under.
        pending: Pending,
        /// Best candidate's similarity, if there was one.
        best: Option<f32>,
        /// Why the best candidate above the threshold was refused.
        rejected: Option<Reject>,
    },
    /// The client asked to skip the cache (`store`: whether the fresh answer may be stored).
    Bypass(Option<Pending>),
    /// The request cannot be answered from a cache (tools, n > 1, no user message last, …).
    Uncacheable,
    /// The request has no credentials and the route is not shared across tenants: it is
    /// neither looked up nor stored (keyless clients would otherwise share one partition).
    NoCredentials,
}

impl Lookup {
    /// The `x-reasoning-cache` header value.
    pub fn header(&self) -> &'static str {
        match self {
            Lookup::Hit { .. } => "hit",
            Lookup::Miss { .. } => "miss",
            Lookup::Bypass(_) | Lookup::Uncacheable | Lookup::NoCredentials => "bypass",
        }
    }
}

/// A miss waiting for its response.
#[derive(Debug, Clone)]
pub struct Pending {
    /// Route name.
    pub route: String,
    /// Keys and problem.
    pub key: RequestKey,
    /// The embedding, when the lookup computed one.
    pub vector: Option<Vec<f32>>,
    /// The route's settings at lookup time.
    pub settings: RouteCacheConfig,
    /// Store only if the partition has no live entry for this exact problem (a shared
    /// partition refreshed with `Cache-Control: no-cache`: other tenants' entry stays).
    pub keep_existing: bool,
}

/// The completed response offered for storage.
#[derive(Debug, Clone)]
pub struct Completed {
    /// Reasoning text.
    pub reasoning: String,
    /// Answer text.
    pub answer: String,
    /// Response `model`.
    pub model: String,
    /// Token usage.
    pub usage: Option<Usage>,
}

/// The process-wide cache.
pub struct Cache {
    /// Settings it was started with.
    pub settings: CacheSettings,
    embedder: Arc<Embedder>,
    /// Which model makes the vectors ([`embed::model_id`]); snapshots record it.
    model_id: String,
    /// Entries and index.
    pub store: Store,
    recent_hits: Mutex<(HashMap<key::Digest128, Instant>, VecDeque<key::Digest128>)>,
}

impl Cache {
    /// Loads the embedding model and the snapshot (a bad snapshot is logged and ignored).
    pub fn start(settings: CacheSettings) -> anyhow::Result<Arc<Self>> {
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
        let cache = Self::with_embedder(settings, embedder);
        tracing::info!(elapsed = ?started.elapsed(), entries = cache.store.sizes().0, model = %cache.model_id, "Reasoning cache ready.");
        Ok(cache)
    }

    /// A cache over any embedder (tests, benchmarks); loads the snapshot if configured.
    ///
    /// Vectors in a snapshot made by another embedding model (or by a version that did not
    /// record it) are not comparable with this model's: their problems are embedded again
    /// before they are loaded, and if that fails the cache starts empty.
    pub fn with_embedder(settings: CacheSettings, embedder: Arc<Embedder>) -> Arc<Self> {
        let store = Store::new();
        store.set_ef_search(settings.ann_ef_search);
        let model_id = embed::model_id(&settings.model_dir, &settings.model_file);
        let cache = Cache {
            embedder,
            model_id,
            store,
            recent_hits: Mutex::new((HashMap::new(), VecDeque::new())),
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
        if build_graph {
            // The gateway serves meanwhile: exact matches and small partitions at once, lookups
            // in larger partitions miss until the graph is there.
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

    /// Looks a chat request up. `tenant` is the request's ([`tenant::derive`]; `None`: no
    /// credentials); `header` reads request headers (lower-case names).
    #[allow(clippy::too_many_arguments)]
    pub async fn lookup(
        &self,
        metrics: &Metrics,
        route: &str,
        served: &key::Served<'_>,
        settings: &RouteCacheConfig,
        body: &Map<String, Value>,
        tenant: Option<&str>,
        header: &(dyn Fn(&str) -> Option<String> + Sync),
    ) -> Lookup {
        let started = Instant::now();
        let result = self
            .lookup_inner(metrics, route, served, settings, body, tenant, header)
            .await;
        let label = match &result {
            Lookup::Hit { .. } => "hit",
            Lookup::Miss { pending, .. } if pending.vector.is_none() => "error",
            Lookup::Miss { .. } => "miss",
            Lookup::Bypass(_) => "bypass",
            Lookup::Uncacheable => "uncacheable",
            Lookup::NoCredentials => "no_credentials",
        };
        metrics
            .cache_requests_total
            .with_label_values(&[route, label])
            .inc();
        metrics
            .cache_lookup_duration_seconds
            .with_label_values(&[route, label])
            .observe(started.elapsed().as_secs_f64());
        result
    }

    #[allow(clippy::too_many_arguments)]
    async fn lookup_inner(
        &self,
        metrics: &Metrics,
        route: &str,
        served: &key::Served<'_>,
        settings: &RouteCacheConfig,
        body: &Map<String, Value>,
        tenant: Option<&str>,
        header: &(dyn Fn(&str) -> Option<String> + Sync),
    ) -> Lookup {
        let shared = settings.shared_across_tenants;
        let tenant = match tenant {
            _ if shared => "shared",
            Some(t) => t,
            None => return Lookup::NoCredentials,
        };
        let Ok(key) = key::request_key(route, served, body, tenant) else {
            return Lookup::Uncacheable;
        };
        let pending = Pending {
            route: route.to_string(),
            key,
            vector: None,
            settings: settings.clone(),
            keep_existing: false,
        };
        let cache_control = header("cache-control")
            .unwrap_or_default()
            .to_ascii_lowercase();
        let bypass = cache_control.contains("no-cache")
            || cache_control.contains("no-store")
            || header("x-reasoning-cache").is_some_and(|v| v.eq_ignore_ascii_case("bypass"));
        if bypass {
            if self.was_recent_hit(&pending.key.exact) {
                metrics
                    .cache_suspect_hits_total
                    .with_label_values(&[route])
                    .inc();
            }
            let store = !cache_control.contains("no-store");
            // One tenant asking for a fresh answer must not replace what every tenant of a
            // shared partition is served.
            let pending = Pending {
                keep_existing: shared,
                ..pending
            };
            return Lookup::Bypass(store.then_some(pending));
        }
        let now = now_unix();
        if let Some(entry) = self.store.exact(&pending.key.exact, now) {
            metrics
                .cache_similarity
                .with_label_values(&[route, "hit"])
                .observe(1.0);
            self.remember_hit(pending.key.exact);
            return Lookup::Hit {
                entry,
                similarity: 1.0,
            };
        }
        let embed_started = Instant::now();
        let vector = match self.embedder.embed(&pending.key.problem).await {
            Ok(v) => v,
            Err(e) => {
                tracing::debug!(error = %e, "Cache lookup without an embedding.");
                return Lookup::Miss {
                    pending,
                    best: None,
                    rejected: None,
                };
            }
        };
        metrics
            .cache_embedding_duration_seconds
            .with_label_values(&[route])
            .observe(embed_started.elapsed().as_secs_f64());
        let candidates = self
            .store
            .search(&vector, &pending.key.partition, now, CANDIDATES);
        let decision = decide(&pending.key.problem, &candidates, settings);
        let best = candidates.first().map(|c| c.similarity);
        let outcome = match &decision {
            Decision::Hit(_) => "hit",
            Decision::Rejected(_) => "rejected",
            Decision::Below => "below_threshold",
        };
        if let Some(b) = best {
            metrics
                .cache_similarity
                .with_label_values(&[route, outcome])
                .observe(b as f64);
        }
        match decision {
            Decision::Hit(c) => {
                self.remember_hit(pending.key.exact);
                Lookup::Hit {
                    entry: c.entry.clone(),
                    similarity: c.similarity,
                }
            }
            Decision::Rejected(reason) => {
                metrics
                    .cache_guard_rejections_total
                    .with_label_values(&[route, reason.label()])
                    .inc();
                Lookup::Miss {
                    pending: Pending {
                        vector: Some(vector),
                        ..pending
                    },
                    best,
                    rejected: Some(reason),
                }
            }
            Decision::Below => Lookup::Miss {
                pending: Pending {
                    vector: Some(vector),
                    ..pending
                },
                best,
                rejected: None,
            },
        }
    }

    fn remember_hit(&self, exact: key::Digest128) {
        let Ok(mut g) = self.recent_hits.lock() else {
            return;
        };
        let (map, order) = &mut *g;
        if map.insert(exact, Instant::now()).is_none() {
            order.push_back(exact);
        }
        while order.len() > SUSPECT_MEMORY {
            if let Some(old) = order.pop_front() {
                map.remove(&old);
            }
        }
    }

    fn was_recent_hit(&self, exact: &key::Digest128) -> bool {
        let Ok(mut g) = self.recent_hits.lock() else {
            return false;
        };
        match g.0.get(exact) {
            Some(t) if t.elapsed() <= SUSPECT_WINDOW => {
                g.0.remove(exact);
                true
            }
            _ => false,
        }
    }

    /// Stores a completed response (embedding it first if the lookup could not).
    ///
    /// The store runs on tokio's blocking pool, not on the proxy worker that finished the
    /// response: adding to a large graph takes about 0.5 ms (100 k entries, measured), time the
    /// worker's other connections should not wait for.
    pub fn insert(
        self: &Arc<Self>,
        gw: Arc<crate::state::Gateway>,
        pending: Pending,
        done: Completed,
    ) {
        let mut pending = pending;
        let cache = self.clone();
        match pending.vector.take() {
            Some(v) => {
                tokio::task::spawn_blocking(move || {
                    cache.insert_now(&gw.metrics, pending, done, v)
                });
            }
            None => {
                tokio::spawn(async move {
                    if let Ok(v) = cache.embedder.embed_untimed(&pending.key.problem).await {
                        tokio::task::spawn_blocking(move || {
                            cache.insert_now(&gw.metrics, pending, done, v)
                        });
                    }
                });
            }
        }
    }

    fn insert_now(&self, metrics: &Metrics, pending: Pending, done: Completed, vector: Vec<f32>) {
        let now = now_unix();
        let record = Record {
            route: pending.route.clone(),
            tenant: pending.key.tenant.clone(),
            partition: key::hex(&pending.key.partition),
            exact: key::hex(&pending.key.exact),
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
                    metrics
                        .cache_shared_refreshes_ignored_total
                        .with_label_values(&[pending.route.as_str()])
                        .inc();
                    return;
                }
            }
        } else {
            self.store.insert(record, partition, exact, vector, max)
        };
        metrics
            .cache_inserts_total
            .with_label_values(&[pending.route.as_str()])
            .inc();
        count_removals(metrics, &removed);
        self.set_entries(metrics);
    }

    /// Sets `cache_entries` for every route the store knows.
    pub fn set_entries(&self, metrics: &Metrics) {
        for (route, n) in self.store.counts() {
            metrics
                .cache_entries
                .with_label_values(&[route.as_str()])
                .set(n as i64);
        }
    }

    /// Drops expired entries, updates the gauges and rebuilds the index when due (seconds on a
    /// large cache: run it off the request path).
    pub fn maintain(&self, metrics: &Metrics) {
        let n = self.store.sweep(now_unix());
        count_removals(metrics, &vec![Removal::Expired; n]);
        self.set_entries(metrics);
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

/// Counts removals in `cache_evictions_total`.
pub fn count_removals(metrics: &Metrics, removed: &[Removal]) {
    for r in removed {
        metrics
            .cache_evictions_total
            .with_label_values(&[r.label()])
            .inc();
    }
}

enum Decision<'a> {
    Hit(&'a Candidate),
    Rejected(Reject),
    Below,
}

/// The first candidate above the threshold that the guard accepts.
fn decide<'a>(
    problem: &str,
    candidates: &'a [Candidate],
    settings: &RouteCacheConfig,
) -> Decision<'a> {
    let mut rejected = None;
    let mut features = None;
    for c in candidates {
        if c.similarity < settings.threshold {
            break;
        }
        if !settings.guard {
            return Decision::Hit(c);
        }
        let f = features.get_or_insert_with(|| guard::features(problem));
        match guard::check(f, &c.entry.features) {
            Ok(()) => return Decision::Hit(c),
            Err(r) => {
                rejected.get_or_insert(r);
            }
        }
    }
    match rejected {
        Some(r) => Decision::Rejected(r),
        None => Decision::Below,
    }
}
