//! Entries, the exact-match tier and the HNSW index (cosine on unit vectors).
//!
//! hnsw_rs cannot delete points: removed entries become tombstones the search filter skips, and
//! the index is rebuilt from the live entries once tombstones outnumber them. Partitions small
//! enough to scan (`BRUTE_FORCE_MAX`) are scanned exactly instead: a filtered graph search over a
//! large index can miss a tiny partition's points. Only a partition that has outgrown the scan
//! is in the graph at all: adding a point to it costs more than embedding a short prompt
//! (measured: about 0.26 ms per insert at 3 000 entries, against 1.1–1.3 ms per embedding), work
//! wasted on the many small partitions (one per tenant and route) that never search it.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, RwLock};

use arc_swap::ArcSwap;
use serde::{Deserialize, Serialize};

use crate::guard::{self, Features};
use crate::index::shards::{
    centroids, graph_with_capacity, nearest, Index, GRAPH_CANDIDATES, HNSW_EF_SEARCH,
    SHARD_PROBE_MARGIN, SHARD_TARGET,
};
use crate::index::{dots, insert_top, makes_top, scan, Projection};
use crate::key::Digest128;

/// Partitions up to this size are scanned exactly.
pub const BRUTE_FORCE_MAX: usize = 4096;

/// A partition waiting for its graph (bulk-loaded past [`BRUTE_FORCE_MAX`]) is scanned meanwhile
/// up to this size (about 1 ms of scan); a larger one's lookups miss until the rebuild.
pub const SCAN_WHILE_DUE_MAX: usize = 4 * BRUTE_FORCE_MAX;

/// Token usage of the original response.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Usage {
    /// Prompt tokens.
    pub prompt_tokens: u64,
    /// Completion tokens (reasoning included).
    pub completion_tokens: u64,
    /// Reasoning tokens.
    pub reasoning_tokens: u64,
}

/// What is persisted of an entry (its vector is stored beside it).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Record {
    /// Route name.
    pub route: String,
    /// Tenant id.
    pub tenant: String,
    /// Partition key (hex).
    pub partition: String,
    /// Exact key (hex).
    pub exact: String,
    /// The problem as asked.
    pub problem: String,
    /// The reasoning chain.
    pub reasoning: String,
    /// The answer.
    pub answer: String,
    /// The response's `model`.
    pub model: String,
    /// Original usage.
    pub usage: Option<Usage>,
    /// Unix seconds.
    pub created: u64,
    /// Unix seconds after which the entry is not served.
    pub expires: u64,
}

/// One cached answer.
#[derive(Debug)]
pub struct Entry {
    /// Index id.
    pub id: usize,
    /// Persisted fields.
    pub record: Record,
    /// Partition key.
    pub partition: Digest128,
    /// Exact key.
    pub exact: Digest128,
    /// Guard features of the problem.
    pub features: Features,
    /// Unit embedding of the problem.
    pub vector: Vec<f32>,
}

/// A search result.
#[derive(Debug, Clone)]
pub struct Candidate {
    /// The entry.
    pub entry: Arc<Entry>,
    /// Cosine similarity.
    pub similarity: f32,
}

/// Why entries left.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Removal {
    /// TTL passed.
    Expired,
    /// Over `max_entries`.
    Capacity,
    /// Admin purge.
    Purge,
    /// Replaced by a fresh answer to the same exact problem.
    Replaced,
}

impl Removal {
    /// Metric label.
    pub fn label(self) -> &'static str {
        match self {
            Removal::Expired => "expired",
            Removal::Capacity => "capacity",
            Removal::Purge => "purge",
            Removal::Replaced => "replaced",
        }
    }
}

/// Whether a partition's entries are in the graph.
#[derive(Clone, Copy, Default, PartialEq, Eq, Debug)]
enum Graph {
    /// Small enough to scan: none of its entries is in the graph.
    #[default]
    No,
    /// Outgrown the scan by an insert, which is adding the earlier entries (fill number `n`:
    /// only that fill may finish it); scanned until they are in. New entries go into the graph
    /// at once.
    Filling(u64),
    /// Outgrown the scan by a bulk load: in the graph from the next rebuild (which is due);
    /// scanned until then up to [`SCAN_WHILE_DUE_MAX`] entries.
    Due,
    /// Every entry is in the graph.
    Yes,
}

/// A partition's live entries with their vectors side by side in one matrix, so the exact scan
/// reads memory in order instead of chasing one allocation per entry.
#[derive(Default)]
struct Partition {
    entries: Vec<Arc<Entry>>,
    /// `entries[i].vector` at `matrix[i * dim..(i + 1) * dim]`.
    matrix: Vec<f32>,
    dim: usize,
    /// Entry id → position.
    position: HashMap<usize, usize>,
    graph: Graph,
}

impl Partition {
    fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether searches go through the graph (a partition that shrank back is scanned again).
    fn searched_in_graph(&self) -> bool {
        self.graph == Graph::Yes && self.len() > BRUTE_FORCE_MAX
    }

    /// Whether a lookup finds nothing in it for now: it waits for a rebuild and is too large to
    /// scan meanwhile.
    fn waiting_for_graph(&self) -> bool {
        self.graph == Graph::Due && self.len() > SCAN_WHILE_DUE_MAX
    }

    fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    fn push(&mut self, entry: Arc<Entry>) {
        if self.entries.is_empty() {
            self.dim = entry.vector.len();
        }
        if entry.vector.len() != self.dim {
            // Vectors of another length (another embedding model) are never compared; keep
            // them out of the matrix rather than misalign it.
            return;
        }
        self.position.insert(entry.id, self.entries.len());
        self.matrix.extend_from_slice(&entry.vector);
        self.entries.push(entry);
    }

    fn remove(&mut self, id: usize) {
        let Some(at) = self.position.remove(&id) else {
            return;
        };
        let last = self.entries.len() - 1;
        self.entries.swap_remove(at);
        if at != last {
            let (head, tail) = self.matrix.split_at_mut(last * self.dim);
            head[at * self.dim..(at + 1) * self.dim].copy_from_slice(&tail[..self.dim]);
            self.position.insert(self.entries[at].id, at);
        }
        self.matrix.truncate(last * self.dim);
    }

    /// The best `k` live entries by dot product with `vector`, best first.
    fn scan(&self, vector: &[f32], now: u64, k: usize) -> Vec<(f32, &Arc<Entry>)> {
        let mut top: Vec<(f32, &Arc<Entry>)> = Vec::with_capacity(k + 1);
        if vector.len() != self.dim || self.dim == 0 {
            return top;
        }
        scan(vector, &self.matrix, |row, s| {
            // Expiry is read only for entries that would make the list.
            if makes_top(&top, k, s) {
                if let Some(e) = self.entries.get(row).filter(|e| e.record.expires > now) {
                    insert_top(&mut top, k, s, e);
                }
            }
        });
        top
    }
}

#[derive(Default)]
struct Inner {
    entries: HashMap<usize, Arc<Entry>>,
    exact: HashMap<Digest128, usize>,
    /// Live entries per partition (scanned directly for small partitions).
    partitions: HashMap<Digest128, Partition>,
    /// Insertion order per route (may hold removed ids, skipped lazily).
    order: HashMap<String, VecDeque<usize>>,
    counts: HashMap<String, usize>,
    next_id: usize,
    tombstones: usize,
    dirty: bool,
    /// Partitions that have outgrown the scan by an insert (numbers their fills).
    fills: u64,
}

impl Inner {
    /// Files a new entry under every map (the caller has taken `id` from `next_id`); where its
    /// graph point goes.
    fn add(&mut self, entry: Arc<Entry>) -> Placed {
        let (id, route) = (entry.id, entry.record.route.clone());
        if let Some(old) = self.exact.insert(entry.exact, id) {
            self.remove(old);
        }
        let part = self.partitions.entry(entry.partition).or_default();
        part.push(entry.clone());
        let placed = match part.graph {
            Graph::No if part.len() > BRUTE_FORCE_MAX => {
                self.fills += 1;
                part.graph = Graph::Filling(self.fills);
                Placed::Outgrown(part.entries.clone(), self.fills)
            }
            Graph::No => Placed::Scanned,
            Graph::Filling(_) | Graph::Due | Graph::Yes => Placed::Graph,
        };
        self.entries.insert(id, entry);
        self.order.entry(route.clone()).or_default().push_back(id);
        *self.counts.entry(route).or_default() += 1;
        self.dirty = true;
        placed
    }

    /// The entries of partitions in the graph that a graph built from `covered`'s entries below
    /// id `cutoff` lacks: the later ones, and every entry of a partition not in `covered` (with
    /// nothing covered: every entry the graph should hold).
    fn missing(&self, covered: &HashSet<Digest128>, cutoff: usize) -> Vec<Arc<Entry>> {
        let mut out = Vec::new();
        for (key, p) in &self.partitions {
            if p.graph == Graph::No {
                continue;
            }
            let whole = !covered.contains(key);
            out.extend(
                p.entries
                    .iter()
                    .filter(|e| whole || e.id >= cutoff)
                    .cloned(),
            );
        }
        out
    }

    /// The partitions in the graph.
    fn graphed(&self) -> HashSet<Digest128> {
        self.partitions
            .iter()
            .filter(|(_, p)| p.graph != Graph::No)
            .map(|(k, _)| *k)
            .collect()
    }

    /// Live entries of partitions in the graph.
    fn in_graph(&self) -> usize {
        self.partitions
            .values()
            .filter(|p| p.graph != Graph::No)
            .map(Partition::len)
            .sum()
    }

    fn remove(&mut self, id: usize) -> Option<Arc<Entry>> {
        let e = self.entries.remove(&id)?;
        if self.exact.get(&e.exact) == Some(&id) {
            self.exact.remove(&e.exact);
        }
        if let Some(ids) = self.partitions.get_mut(&e.partition) {
            ids.remove(id);
            if ids.graph != Graph::No {
                self.tombstones += 1;
            }
            if ids.is_empty() {
                self.partitions.remove(&e.partition);
            }
        }
        if let Some(c) = self.counts.get_mut(&e.record.route) {
            *c = c.saturating_sub(1);
        }
        self.dirty = true;
        Some(e)
    }
}

/// Where a new entry's graph point goes.
enum Placed {
    /// Nowhere: its partition is scanned.
    Scanned,
    /// Into the graph.
    Graph,
    /// Its partition has just outgrown the scan: every entry of it, this one included, and the
    /// fill's number.
    Outgrown(Vec<Arc<Entry>>, u64),
}

/// All cached entries of the process.
pub struct Store {
    inner: RwLock<Inner>,
    index: ArcSwap<Index>,
    rebuilding: Arc<AtomicBool>,
    ef_search: std::sync::atomic::AtomicUsize,
    shard_target: std::sync::atomic::AtomicUsize,
    /// [`SHARD_PROBE_MARGIN`] (f32 bits).
    probe_margin: std::sync::atomic::AtomicU32,
    projection: std::sync::OnceLock<Projection>,
}

impl Default for Store {
    fn default() -> Self {
        Store::new()
    }
}

impl Store {
    /// An empty store.
    pub fn new() -> Self {
        Store {
            inner: RwLock::new(Inner::default()),
            index: ArcSwap::from_pointee(Index::new(1024)),
            rebuilding: Arc::new(AtomicBool::new(false)),
            ef_search: std::sync::atomic::AtomicUsize::new(HNSW_EF_SEARCH),
            shard_target: std::sync::atomic::AtomicUsize::new(SHARD_TARGET),
            probe_margin: std::sync::atomic::AtomicU32::new(SHARD_PROBE_MARGIN.to_bits()),
            projection: std::sync::OnceLock::new(),
        }
    }

    /// The graph's (projected) vector.
    fn graph_vector(&self, v: &[f32]) -> Vec<f32> {
        self.projection
            .get_or_init(|| Projection::new(v.len()))
            .apply(v)
    }

    /// Sets the graph search's candidate-list size (recall against time).
    pub fn set_ef_search(&self, ef: usize) {
        self.ef_search.store(ef.max(1), Ordering::Relaxed);
    }

    /// Sets the entries per graph shard (taking effect at the next rebuild; tests and
    /// benchmarks).
    pub fn set_shard_target(&self, n: usize) {
        self.shard_target.store(n.max(1), Ordering::Relaxed);
    }

    /// Sets how much less similar (cosine) than the nearest a shard's centroid may be for a
    /// search to visit it too (recall near boundaries against time; benchmarks).
    pub fn set_probe_margin(&self, margin: f32) {
        self.probe_margin
            .store(margin.max(0.0).to_bits(), Ordering::Relaxed);
    }

    fn probe_margin(&self) -> f32 {
        f32::from_bits(self.probe_margin.load(Ordering::Relaxed))
    }

    /// Entries the graph does not lead to, scanned beside it (see [`MAX_STRAGGLERS`]).
    pub fn stragglers(&self) -> usize {
        self.index.load().straggler_count()
    }

    /// Points per graph shard (tombstones included).
    pub fn shard_sizes(&self) -> Vec<usize> {
        self.index.load().sizes()
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, Inner> {
        self.inner
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, Inner> {
        self.inner
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The live entry for an exact key.
    pub fn exact(&self, key: &Digest128, now: u64) -> Option<Arc<Entry>> {
        let inner = self.read();
        let id = inner.exact.get(key)?;
        inner
            .entries
            .get(id)
            .filter(|e| e.record.expires > now)
            .cloned()
    }

    /// Whether a partition holds any entry (live or not yet swept): when it holds none, a
    /// lookup has nothing to compare with and need not embed its problem.
    pub fn has_entries(&self, partition: &Digest128) -> bool {
        self.read()
            .partitions
            .get(partition)
            .is_some_and(|p| !p.is_empty())
    }

    /// The `k` most similar live entries of a partition, most similar first.
    pub fn search(
        &self,
        vector: &[f32],
        partition: &Digest128,
        now: u64,
        k: usize,
    ) -> Vec<Candidate> {
        let inner = self.read();
        let Some(ids) = inner
            .partitions
            .get(partition)
            .filter(|p| !p.waiting_for_graph())
        else {
            return Vec::new();
        };
        let live = |e: &Arc<Entry>| e.record.expires > now;
        let mut out: Vec<Candidate> = if !ids.searched_in_graph() {
            ids.scan(vector, now, k)
                .into_iter()
                .map(|(similarity, e)| Candidate {
                    entry: e.clone(),
                    similarity,
                })
                .collect()
        } else {
            let wanted_entry = |e: &&Arc<Entry>| &e.partition == partition && live(e);
            let index = self.index.load();
            let wanted = k.max(GRAPH_CANDIDATES);
            let ef = self.ef_search.load(Ordering::Relaxed).max(wanted);
            let query = self.graph_vector(vector);
            // The entries lie anywhere in memory: ask for them all before reading any.
            let keep = |ids: Vec<usize>| -> Vec<Arc<Entry>> {
                let entries: Vec<&Arc<Entry>> =
                    ids.iter().filter_map(|id| inner.entries.get(id)).collect();
                for e in &entries {
                    crate::index::flat::prefetch_value(Arc::as_ptr(e));
                }
                entries.into_iter().filter(wanted_entry).cloned().collect()
            };
            let probes = index.probes(&query, self.probe_margin());
            // The scanned entries first: an entry leaves the recent rows only once a flat copy
            // that holds it is in place, so a copy made meanwhile cannot hide it from both.
            let scanned = keep(index.scanned_candidates(&query, &probes, wanted));
            // Unfiltered first: the filter touches every visited entry (most of the search time
            // when measured); fall back to a filtered search when other partitions or dead
            // entries crowd the candidates out.
            let mut found = keep(index.graph_candidates(&query, &probes, wanted, ef, None));
            if found.len() < wanted / 2 {
                let accepts = |id: usize| inner.entries.get(&id).is_some_and(|e| wanted_entry(&e));
                found = keep(index.graph_candidates(&query, &probes, wanted, ef, Some(&accepts)));
            }
            found.extend(scanned);
            // The candidates' full vectors lie anywhere in memory: ask for them all first.
            for e in &found {
                crate::index::flat::prefetch(&e.vector);
            }
            let sims = dots(vector, &found, |e| &e.vector);
            found
                .into_iter()
                .zip(sims)
                .map(|(entry, similarity)| Candidate { entry, similarity })
                .collect()
        };
        out.sort_by(|a, b| b.similarity.total_cmp(&a.similarity));
        // A straggler the graph has come to lead to since may be there twice.
        out.dedup_by(|a, b| a.entry.id == b.entry.id);
        out.truncate(k);
        out
    }

    /// Adds an entry (replacing one with the same exact key); evicts the route's oldest entries
    /// beyond `max_entries`. Returns the removals by reason.
    pub fn insert(
        &self,
        record: Record,
        partition: Digest128,
        exact: Digest128,
        vector: Vec<f32>,
        max_entries: usize,
    ) -> Vec<Removal> {
        self.insert_with(record, partition, exact, vector, max_entries, true)
            .unwrap_or_default()
    }

    /// [`Store::insert`], unless a live entry with the same exact key exists (`None`: nothing
    /// stored). A shared partition's refresh must not replace what other tenants are served.
    pub fn insert_if_absent(
        &self,
        record: Record,
        partition: Digest128,
        exact: Digest128,
        vector: Vec<f32>,
        max_entries: usize,
    ) -> Option<Vec<Removal>> {
        self.insert_with(record, partition, exact, vector, max_entries, false)
    }

    fn insert_with(
        &self,
        record: Record,
        partition: Digest128,
        exact: Digest128,
        vector: Vec<f32>,
        max_entries: usize,
        replace: bool,
    ) -> Option<Vec<Removal>> {
        let mut removed = Vec::new();
        let features = guard::features(&record.problem);
        let route = record.route.clone();
        let now = record.created;
        let (entry, placed) = {
            let mut inner = self.write();
            if let Some(old) = inner.exact.get(&exact).copied() {
                let live = inner
                    .entries
                    .get(&old)
                    .is_some_and(|e| e.record.expires > now);
                if live && !replace {
                    return None;
                }
                inner.remove(old);
                removed.push(Removal::Replaced);
            }
            let id = inner.next_id;
            inner.next_id += 1;
            let entry = Arc::new(Entry {
                id,
                record,
                partition,
                exact,
                features,
                vector,
            });
            let placed = inner.add(entry.clone());
            while inner.counts.get(&route).copied().unwrap_or(0) > max_entries.max(1) {
                let Some(oldest) = inner.order.get_mut(&route).and_then(VecDeque::pop_front) else {
                    break;
                };
                if inner.remove(oldest).is_some() {
                    removed.push(Removal::Capacity);
                }
            }
            (entry, placed)
        };
        match placed {
            Placed::Scanned => {}
            Placed::Graph => self.insert_points(&self.index.load(), [&entry]),
            Placed::Outgrown(all, fill) => {
                // Once per partition, on this (background) thread: about 1 s for 4 097 entries.
                // The partition is scanned until every entry is in; a rebuild meanwhile takes
                // them all (it files partitions it did not copy), so none is lost to the swap.
                self.insert_points(&self.index.load(), &all);
                if let Some(p) = self.write().partitions.get_mut(&entry.partition) {
                    if p.graph == Graph::Filling(fill) {
                        p.graph = Graph::Yes;
                    }
                }
            }
        }
        Some(removed)
    }

    /// Adds `entries`' points to `index`.
    fn insert_points<'a>(&self, index: &Index, entries: impl IntoIterator<Item = &'a Arc<Entry>>) {
        let ef = self.ef_search.load(Ordering::Relaxed);
        for e in entries {
            index.insert(&self.graph_vector(&e.vector), e.id, ef);
        }
    }

    /// Removes expired entries; returns how many.
    pub fn sweep(&self, now: u64) -> usize {
        let expired: Vec<usize> = self
            .read()
            .entries
            .values()
            .filter(|e| e.record.expires <= now)
            .map(|e| e.id)
            .collect();
        if expired.is_empty() {
            return 0;
        }
        let mut inner = self.write();
        let n = expired
            .iter()
            .filter(|id| inner.remove(**id).is_some())
            .count();
        n
    }

    /// Removes entries matching a route and/or tenant (both `None`: everything).
    pub fn purge(&self, route: Option<&str>, tenant: Option<&str>) -> usize {
        let mut inner = self.write();
        let ids: Vec<usize> = inner
            .entries
            .values()
            .filter(|e| route.is_none_or(|r| e.record.route == r))
            .filter(|e| tenant.is_none_or(|t| e.record.tenant == t))
            .map(|e| e.id)
            .collect();
        ids.iter().filter(|id| inner.remove(**id).is_some()).count()
    }

    /// Live entries per route.
    pub fn counts(&self) -> HashMap<String, usize> {
        self.read().counts.clone()
    }

    /// Live entries, tenants and tombstones.
    pub fn sizes(&self) -> (usize, usize, usize) {
        let inner = self.read();
        let tenants: std::collections::HashSet<&str> = inner
            .entries
            .values()
            .map(|e| e.record.tenant.as_str())
            .collect();
        (inner.entries.len(), tenants.len(), inner.tombstones)
    }

    /// Every live entry (for snapshots), oldest first, and clears the dirty flag.
    pub fn export(&self) -> Vec<Arc<Entry>> {
        let mut inner = self.write();
        inner.dirty = false;
        let mut all: Vec<Arc<Entry>> = inner.entries.values().cloned().collect();
        all.sort_by_key(|e| e.id);
        all
    }

    /// Whether anything changed since the last export.
    pub fn is_dirty(&self) -> bool {
        self.read().dirty
    }

    /// A new graph over `entries`' projected vectors, split into shards when there are more than
    /// twice the shard target, each shard built in parallel.
    fn build_index(&self, entries: &[Arc<Entry>]) -> Index {
        let graph: Vec<Vec<f32>> = entries
            .iter()
            .map(|e| self.graph_vector(&e.vector))
            .collect();
        let target = self.shard_target.load(Ordering::Relaxed);
        let k = if graph.len() > 2 * target {
            graph.len().div_ceil(target)
        } else {
            1
        };
        let cents = centroids(&graph, k);
        let mut members: Vec<Vec<(&Vec<f32>, usize)>> = vec![Vec::new(); cents.len().max(1)];
        for (g, e) in graph.iter().zip(entries) {
            members[nearest(&cents, g).0].push((g, e.id));
        }
        let index = Index {
            shards: members
                .iter()
                .map(|m| graph_with_capacity(m.len()))
                .collect(),
            centroids: cents,
            sides: members.iter().map(|_| RwLock::default()).collect(),
            writers: members.iter().map(|_| Mutex::default()).collect(),
        };
        for (shard, data) in index.shards.iter().zip(&members) {
            shard.parallel_insert(data);
        }
        let ef = self.ef_search.load(Ordering::Relaxed);
        for shard in 0..index.shards.len() {
            index.copy(shard, ef, true);
        }
        index
    }

    /// Loads entries in bulk and builds the graph over them (one parallel build) before
    /// returning.
    pub fn load(&self, items: Vec<(Record, Digest128, Digest128, Vec<f32>)>) {
        self.load_unindexed(items);
        self.rebuild();
    }

    /// Loads entries in bulk without adding them to the graph (start-up from a snapshot: the
    /// build takes about 15 s per 100 k entries on 2 cores). The exact tier and the exact scans
    /// of partitions up to [`SCAN_WHILE_DUE_MAX`] entries find them at once; larger partitions
    /// only once [`Store::rebuild`] has run (until then their lookups miss; a rebuild is due).
    /// A partition already in the graph keeps searching it, and finds what was loaded into it
    /// from the rebuild on. Returns whether any partition is large enough to need the graph.
    pub fn load_unindexed(&self, items: Vec<(Record, Digest128, Digest128, Vec<f32>)>) -> bool {
        let mut inner = self.write();
        for (record, partition, exact, vector) in items {
            let id = inner.next_id;
            inner.next_id += 1;
            let entry = Arc::new(Entry {
                id,
                features: guard::features(&record.problem),
                record,
                partition,
                exact,
                vector,
            });
            inner.add(entry);
        }
        inner.tombstones = 0;
        // A partition that outgrew the scan waits for the graph the caller builds next (one
        // already in it keeps searching it; what was loaded into it is found from the rebuild).
        let mut large = false;
        for p in inner.partitions.values_mut() {
            if p.len() > BRUTE_FORCE_MAX {
                if p.graph != Graph::Yes {
                    p.graph = Graph::Due;
                }
                large = true;
            }
        }
        large
    }

    /// Whether the index is due a rebuild: tombstones outnumber live entries, or the cache has
    /// grown past twice the shard target per shard (the rebuild splits it further).
    pub fn needs_rebuild(&self) -> bool {
        let inner = self.read();
        let live = inner.in_graph();
        let shards = self.index.load().shards.len();
        let target = self.shard_target.load(Ordering::Relaxed);
        (inner.tombstones >= 1024 && inner.tombstones > live)
            || live > 2 * target * shards
            || inner.partitions.values().any(|p| p.graph == Graph::Due)
    }

    /// Builds a fresh index from the live entries of the partitions in the graph and swaps it
    /// in (seconds for large caches: call it off the request path).
    pub fn rebuild(&self) {
        if self.rebuilding.swap(true, Ordering::AcqRel) {
            return;
        }
        let (snapshot, cutoff, covered) = {
            let inner = self.read();
            let nothing = HashSet::new();
            (inner.missing(&nothing, 0), inner.next_id, inner.graphed())
        };
        let index = self.build_index(&snapshot);
        // What came meanwhile — entries, and whole partitions that outgrew the scan (4 097
        // inserts or more) — goes in before the write lock, which lookups wait for.
        let (late, cutoff, covered) = {
            let inner = self.read();
            (
                inner.missing(&covered, cutoff),
                inner.next_id,
                inner.graphed(),
            )
        };
        self.insert_points(&index, &late);
        let mut inner = self.write();
        self.insert_points(&index, &inner.missing(&covered, cutoff));
        for p in inner.partitions.values_mut() {
            if p.graph != Graph::No {
                p.graph = Graph::Yes;
            }
        }
        // Removals during the build are tombstones in the new index too.
        let removed_since = snapshot
            .iter()
            .chain(&late)
            .filter(|e| !inner.entries.contains_key(&e.id))
            .count();
        inner.tombstones = removed_since;
        self.index.store(Arc::new(index));
        self.rebuilding.store(false, Ordering::Release);
    }
}

#[cfg(test)]
pub(crate) mod tests;
