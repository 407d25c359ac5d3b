//! Entries, the exact-match tier and the HNSW index (cosine on unit vectors).
//!
//! hnsw_rs cannot delete points: removed entries become tombstones the search filter skips, and
//! the index is rebuilt from the live entries once tombstones outnumber them. Partitions small
//! enough to scan (`BRUTE_FORCE_MAX`) are scanned exactly instead: a filtered graph search over a
//! large index can miss a tiny partition's points.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};

use arc_swap::ArcSwap;
use hnsw_rs::anndists::dist::Distance;
use hnsw_rs::prelude::Hnsw;
use serde::{Deserialize, Serialize};

use super::guard::{self, Features};
use super::key::Digest128;

/// Partitions up to this size are scanned exactly.
pub const BRUTE_FORCE_MAX: usize = 4096;
/// The graph indexes vectors randomly projected to this many dimensions (a third of the search
/// time of 384-d vectors, measured); its candidates are re-ranked with the full vectors.
pub const GRAPH_DIMS: usize = 64;
/// Graph candidates re-ranked per search (at least `k`).
pub const GRAPH_CANDIDATES: usize = 8;
pub const HNSW_M: usize = 16;
/// Candidate list while inserting. What the graph's quality hangs on (BENCHMARKS.md, 100 k
/// entries of clustered embeddings): at 64 a near-duplicate query found its entry 89 % of the
/// time even with a search width of 32; at 200, 98.5 % with a width of 8, in half the time.
/// Inserting costs about 3× more (off the request path; start-up loads build in parallel).
pub const HNSW_EF_CONSTRUCTION: usize = 200;
/// Default candidate-list size of a graph search (measured: see BENCHMARKS.md).
pub const HNSW_EF_SEARCH: usize = 8;
const HNSW_MAX_LAYER: usize = 16;

/// `1 - a·b` for unit vectors (cosine distance without the norms).
#[derive(Debug, Default, Clone, Copy)]
pub struct UnitCosine;

impl Distance<f32> for UnitCosine {
    fn eval(&self, a: &[f32], b: &[f32]) -> f32 {
        (1.0 - dot(a, b)).max(0.0)
    }
}

/// Dot product (eight independent lanes, so it vectorises).
pub fn dot(a: &[f32], b: &[f32]) -> f32 {
    let mut acc = [0f32; 8];
    let (ca, cb) = (a.chunks_exact(8), b.chunks_exact(8));
    let tail: f32 = ca
        .remainder()
        .iter()
        .zip(cb.remainder())
        .map(|(x, y)| x * y)
        .sum();
    for (x, y) in ca.zip(cb) {
        for j in 0..8 {
            acc[j] += x[j] * y[j];
        }
    }
    acc.iter().sum::<f32>() + tail
}

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
}

impl Partition {
    fn len(&self) -> usize {
        self.entries.len()
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
        for (row, e) in self.matrix.chunks_exact(self.dim).zip(&self.entries) {
            let s = dot(vector, row);
            if top.len() == k && top.last().is_some_and(|(worst, _)| s <= *worst) {
                continue;
            }
            // Expiry is read only for entries that would make the list.
            if e.record.expires <= now {
                continue;
            }
            let at = top.partition_point(|(x, _)| *x >= s);
            top.insert(at, (s, e));
            top.truncate(k);
        }
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
}

impl Inner {
    /// Files a new entry under every map (the caller has taken `id` from `next_id`).
    fn add(&mut self, entry: Arc<Entry>) {
        let (id, route) = (entry.id, entry.record.route.clone());
        if let Some(old) = self.exact.insert(entry.exact, id) {
            self.remove(old);
        }
        self.partitions
            .entry(entry.partition)
            .or_default()
            .push(entry.clone());
        self.entries.insert(id, entry);
        self.order.entry(route.clone()).or_default().push_back(id);
        *self.counts.entry(route).or_default() += 1;
        self.dirty = true;
    }

    fn remove(&mut self, id: usize) -> Option<Arc<Entry>> {
        let e = self.entries.remove(&id)?;
        if self.exact.get(&e.exact) == Some(&id) {
            self.exact.remove(&e.exact);
        }
        if let Some(ids) = self.partitions.get_mut(&e.partition) {
            ids.remove(id);
            if ids.is_empty() {
                self.partitions.remove(&e.partition);
            }
        }
        if let Some(c) = self.counts.get_mut(&e.record.route) {
            *c = c.saturating_sub(1);
        }
        self.tombstones += 1;
        self.dirty = true;
        Some(e)
    }
}

struct Index {
    hnsw: Hnsw<'static, f32, UnitCosine>,
}

/// A fixed random projection (seeded: the same in every process, so a graph built from a
/// snapshot matches new inserts).
struct Projection {
    rows: Vec<Vec<f32>>,
}

impl Projection {
    fn new(dim: usize) -> Self {
        let mut x: u64 = 0x5EED_CAC4E;
        let mut gauss = || {
            let mut u = || {
                x = x
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                ((x >> 40) as f32 + 0.5) / (1u64 << 24) as f32
            };
            let (u1, u2) = (u(), u());
            (-2.0 * u1.ln()).sqrt() * (2.0 * std::f32::consts::PI * u2).cos()
        };
        Projection {
            rows: (0..GRAPH_DIMS)
                .map(|_| (0..dim).map(|_| gauss()).collect())
                .collect(),
        }
    }

    /// The graph's vector for an entry's vector (short vectors are used as they are).
    fn apply(&self, v: &[f32]) -> Vec<f32> {
        if v.len() <= GRAPH_DIMS || self.rows.first().is_some_and(|r| r.len() != v.len()) {
            return v.to_vec();
        }
        let mut out: Vec<f32> = self.rows.iter().map(|r| dot(r, v)).collect();
        super::embed::normalise(&mut out);
        out
    }
}

impl Index {
    fn new(capacity: usize) -> Self {
        Index {
            hnsw: Hnsw::new(
                HNSW_M,
                capacity.max(1024),
                HNSW_MAX_LAYER,
                HNSW_EF_CONSTRUCTION,
                UnitCosine,
            ),
        }
    }
}

/// All cached entries of the process.
pub struct Store {
    inner: RwLock<Inner>,
    index: ArcSwap<Index>,
    rebuilding: Arc<AtomicBool>,
    ef_search: std::sync::atomic::AtomicUsize,
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

    fn read(&self) -> std::sync::RwLockReadGuard<'_, Inner> {
        self.inner.read().unwrap_or_else(|p| p.into_inner())
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, Inner> {
        self.inner.write().unwrap_or_else(|p| p.into_inner())
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

    /// The `k` most similar live entries of a partition, most similar first.
    pub fn search(
        &self,
        vector: &[f32],
        partition: &Digest128,
        now: u64,
        k: usize,
    ) -> Vec<Candidate> {
        let inner = self.read();
        let Some(ids) = inner.partitions.get(partition) else {
            return Vec::new();
        };
        let live = |e: &Arc<Entry>| e.record.expires > now;
        let mut out: Vec<Candidate> = if ids.len() <= BRUTE_FORCE_MAX {
            ids.scan(vector, now, k)
                .into_iter()
                .map(|(similarity, e)| Candidate {
                    entry: e.clone(),
                    similarity,
                })
                .collect()
        } else {
            let filter = |id: &usize| {
                inner
                    .entries
                    .get(id)
                    .is_some_and(|e| &e.partition == partition && live(e))
            };
            let index = self.index.load();
            let wanted = k.max(GRAPH_CANDIDATES);
            let ef = self.ef_search.load(Ordering::Relaxed).max(wanted);
            let query = self.graph_vector(vector);
            let keep = |id: usize| inner.entries.get(&id).filter(|_| filter(&id)).cloned();
            // Unfiltered first: the filter touches every visited entry (most of the search time
            // when measured); fall back to a filtered search when other partitions or dead
            // entries crowd the candidates out.
            let mut found: Vec<Arc<Entry>> = index
                .hnsw
                .search(&query, wanted, ef)
                .into_iter()
                .filter_map(|n| keep(n.d_id))
                .collect();
            if found.len() < wanted / 2 {
                found = index
                    .hnsw
                    .search_filter(&query, wanted, ef, Some(&filter))
                    .into_iter()
                    .filter_map(|n| keep(n.d_id))
                    .collect();
            }
            found
                .into_iter()
                .map(|e| Candidate {
                    similarity: dot(vector, &e.vector),
                    entry: e,
                })
                .collect()
        };
        out.sort_by(|a, b| b.similarity.total_cmp(&a.similarity));
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
        let mut removed = Vec::new();
        let features = guard::features(&record.problem);
        let route = record.route.clone();
        let (id, entry) = {
            let mut inner = self.write();
            if let Some(old) = inner.exact.get(&exact).copied() {
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
            inner.add(entry.clone());
            while inner.counts.get(&route).copied().unwrap_or(0) > max_entries.max(1) {
                let Some(oldest) = inner.order.get_mut(&route).and_then(VecDeque::pop_front) else {
                    break;
                };
                if inner.remove(oldest).is_some() {
                    removed.push(Removal::Capacity);
                }
            }
            (id, entry)
        };
        let graph = self.graph_vector(&entry.vector);
        self.index.load().hnsw.insert_slice((&graph, id));
        removed
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

    /// A new graph over `entries`' projected vectors, built in parallel.
    fn build_index(&self, entries: &[Arc<Entry>], capacity: usize) -> Index {
        let index = Index::new(capacity);
        let graph: Vec<Vec<f32>> = entries
            .iter()
            .map(|e| self.graph_vector(&e.vector))
            .collect();
        let data: Vec<(&Vec<f32>, usize)> =
            graph.iter().zip(entries).map(|(g, e)| (g, e.id)).collect();
        index.hnsw.parallel_insert(&data);
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
    /// of partitions up to [`BRUTE_FORCE_MAX`] entries find them at once; larger partitions only
    /// once [`Store::rebuild`] has run (until then their lookups miss). Returns whether any
    /// partition is large enough to need the graph.
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
        inner.partitions.values().any(|p| p.len() > BRUTE_FORCE_MAX)
    }

    /// Whether tombstones outnumber live entries enough to rebuild the index.
    pub fn needs_rebuild(&self) -> bool {
        let inner = self.read();
        inner.tombstones >= 1024 && inner.tombstones > inner.entries.len()
    }

    /// Builds a fresh index from the live entries and swaps it in (seconds for large caches:
    /// call it off the request path).
    pub fn rebuild(&self) {
        if self.rebuilding.swap(true, Ordering::AcqRel) {
            return;
        }
        let (snapshot, cutoff) = {
            let inner = self.read();
            let v: Vec<Arc<Entry>> = inner.entries.values().cloned().collect();
            (v, inner.next_id)
        };
        let index = self.build_index(&snapshot, snapshot.len());
        let mut inner = self.write();
        for e in inner.entries.values().filter(|e| e.id >= cutoff) {
            index
                .hnsw
                .insert_slice((&self.graph_vector(&e.vector), e.id));
        }
        // Removals during the build are tombstones in the new index too.
        let removed_since = snapshot
            .iter()
            .filter(|e| !inner.entries.contains_key(&e.id))
            .count();
        inner.tombstones = removed_since;
        self.index.store(Arc::new(index));
        self.rebuilding.store(false, Ordering::Release);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(route: &str, problem: &str, expires: u64) -> Record {
        Record {
            route: route.into(),
            tenant: "t".into(),
            partition: String::new(),
            exact: String::new(),
            problem: problem.into(),
            reasoning: "r".into(),
            answer: "a".into(),
            model: "m".into(),
            usage: None,
            created: 0,
            expires,
        }
    }

    fn unit(seed: u64, dim: usize) -> Vec<f32> {
        let mut x = seed
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        let mut v: Vec<f32> = (0..dim)
            .map(|_| {
                x = x
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                ((x >> 33) as f32 / (1u64 << 31) as f32) - 0.5
            })
            .collect();
        super::super::embed::normalise(&mut v);
        v
    }

    /// Exact key number `i`.
    fn key(i: u64) -> Digest128 {
        let mut k = [0u8; 16];
        k[..8].copy_from_slice(&i.to_le_bytes());
        k
    }

    #[test]
    fn search_finds_the_nearest_live_entry_of_the_partition_only() {
        let s = Store::new();
        let p1 = [1u8; 16];
        let p2 = [2u8; 16];
        for i in 0..50u64 {
            s.insert(record("r", "q", 100), p1, [i as u8; 16], unit(i, 32), 1000);
        }
        s.insert(record("r", "q", 100), p2, [200u8; 16], unit(7, 32), 1000);
        let hits = s.search(&unit(7, 32), &p1, 10, 3);
        assert!((hits[0].similarity - 1.0).abs() < 1e-5);
        assert_eq!(hits[0].entry.exact, [7u8; 16]);
        // Past expiry nothing is returned.
        assert!(s.search(&unit(7, 32), &p1, 100, 3).is_empty());
        assert_eq!(s.search(&unit(7, 32), &p2, 10, 3).len(), 1);
    }

    #[test]
    fn the_scan_stays_exact_as_entries_leave_from_anywhere() {
        let s = Store::new();
        let p = [1u8; 16];
        // Short-lived entries interleaved with long-lived ones; then some exact keys replaced.
        for i in 0..200u64 {
            let expires = if i % 3 == 0 { 50 } else { 100 };
            s.insert(record("r", "q", expires), p, key(i), unit(i, 24), 10_000);
        }
        assert_eq!(s.sweep(50), 67);
        for i in (1..200u64).step_by(7) {
            s.insert(
                record("r", "again", 100),
                p,
                key(i),
                unit(1000 + i, 24),
                10_000,
            );
        }
        for i in 0..200u64 {
            let (v, alive) = if i % 7 == 1 {
                (unit(1000 + i, 24), true)
            } else if i % 3 == 0 {
                (unit(i, 24), false)
            } else {
                (unit(i, 24), true)
            };
            let hits = s.search(&v, &p, 60, 1);
            if alive {
                assert_eq!(hits[0].entry.exact, key(i), "entry {i}");
                assert!((hits[0].similarity - 1.0).abs() < 1e-5, "entry {i}");
            } else {
                assert!(
                    hits.is_empty() || hits[0].similarity < 0.99,
                    "entry {i} is gone"
                );
            }
        }
        // Every replaced vector is gone with its entry.
        for i in (1..200u64).step_by(7) {
            let hits = s.search(&unit(i, 24), &p, 60, 1);
            assert!(hits[0].similarity < 0.99, "old vector of {i} still found");
        }
    }

    #[test]
    fn capacity_evicts_oldest_first_and_exact_keys_replace() {
        let s = Store::new();
        let p = [1u8; 16];
        for i in 0..5u8 {
            s.insert(record("r", "q", 100), p, [i; 16], unit(i as u64, 8), 3);
        }
        assert_eq!(s.counts()["r"], 3);
        assert!(s.exact(&[0u8; 16], 10).is_none());
        assert!(s.exact(&[4u8; 16], 10).is_some());
        let removed = s.insert(record("r", "q2", 100), p, [4u8; 16], unit(9, 8), 3);
        assert_eq!(removed, vec![Removal::Replaced]);
        assert_eq!(s.exact(&[4u8; 16], 10).unwrap().record.problem, "q2");
        assert_eq!(s.sweep(100), 3);
        assert_eq!(s.counts()["r"], 0);
    }

    /// `v` moved by `noise` (a random direction of that length), back on the unit sphere.
    fn near(v: &[f32], seed: u64, noise: f32) -> Vec<f32> {
        let d = unit(seed, v.len());
        let mut out: Vec<f32> = v.iter().zip(&d).map(|(a, b)| a + noise * b).collect();
        super::super::embed::normalise(&mut out);
        out
    }

    #[test]
    /// A problem asked again must find its entry in a large partition of clustered entries
    /// (rephrasings of the same problems sit close together, which is what makes a graph search
    /// miss): 2 000 problems in 100 families × 6 variants at cosine ≈ 0.96 to their problem,
    /// each query at cosine ≈ 0.995 to one entry, at the default search width.
    fn the_graph_finds_a_repeated_problem_among_its_close_variants() {
        let s = Store::new();
        let p = [3u8; 16];
        // Problems come in families (one template, other names and numbers): 100 families of
        // 20 problems at cosine ≈ 0.85 to their family.
        let families: Vec<Vec<f32>> = (0..100).map(|i| unit(500_000 + i, 384)).collect();
        let centres: Vec<Vec<f32>> = (0..2000u64)
            .map(|i| near(&families[(i % 100) as usize], 1_000_000 + i, 0.6))
            .collect();
        let vectors: Vec<Vec<f32>> = (0..12_000u64)
            .map(|i| near(&centres[(i % 2000) as usize], 2_000_000 + i, 0.3))
            .collect();
        let items: Vec<_> = vectors
            .iter()
            .enumerate()
            .map(|(i, v)| (record("r", "q", 100), p, key(i as u64), v.clone()))
            .collect();
        s.load(items);
        let queries = 300;
        let found = (0..queries)
            .filter(|q| {
                let target = (q * 7919) % vectors.len();
                let query = near(&vectors[target], 3_000_000 + *q as u64, 0.1);
                s.search(&query, &p, 10, 8)
                    .first()
                    .is_some_and(|c| c.entry.id == target)
            })
            .count();
        assert!(
            found * 100 >= queries * 97,
            "found the entry for {found} of {queries} queries"
        );
    }

    #[test]
    /// Start-up from a snapshot: entries serve before the graph is built (exact scans of small
    /// partitions), a large partition's lookups miss until the build, then find their entries.
    fn entries_loaded_without_the_graph_serve_small_partitions_at_once() {
        let s = Store::new();
        let (small, large) = ([1u8; 16], [2u8; 16]);
        let entry =
            |i: usize, p: Digest128| (record("r", "q", 100), p, key(i as u64), unit(i as u64, 128));
        let mut items: Vec<_> = (0..10).map(|i| entry(i, small)).collect();
        assert!(
            !s.load_unindexed(items.clone()),
            "small partitions need no graph"
        );
        let found = s.search(&unit(3, 128), &small, 10, 1);
        assert!((found[0].similarity - 1.0).abs() < 1e-5);

        let s = Store::new();
        items.extend((0..BRUTE_FORCE_MAX + 100).map(|i| entry(1000 + i, large)));
        assert!(s.load_unindexed(items), "a large partition needs the graph");
        assert!((s.search(&unit(3, 128), &small, 10, 1)[0].similarity - 1.0).abs() < 1e-5);
        assert!(s.search(&unit(1500, 128), &large, 10, 1).is_empty());
        s.rebuild();
        let found = s.search(&unit(1500, 128), &large, 10, 1);
        assert!((found[0].similarity - 1.0).abs() < 1e-5);
    }

    #[test]
    /// 128-d vectors: the graph searches their 64-d projections, candidates are re-ranked.
    fn large_partitions_use_the_graph_and_survive_rebuilds() {
        let s = Store::new();
        let p = [1u8; 16];
        let n = BRUTE_FORCE_MAX + 500;
        let items: Vec<_> = (0..n)
            .map(|i| (record("r", "q", 100), p, key(i as u64), unit(i as u64, 128)))
            .collect();
        s.load(items);
        // The same vector in another partition is never a candidate of this one.
        s.insert(
            record("r", "q", 100),
            [9u8; 16],
            [9u8; 16],
            unit(123, 128),
            usize::MAX,
        );
        let found = s.search(&unit(123, 128), &p, 10, 5);
        assert!(found.iter().all(|c| c.entry.partition == p));
        assert!(
            (found[0].similarity - 1.0).abs() < 1e-5,
            "{:?}",
            found[0].similarity
        );
        // Purge most, forcing a rebuild; the survivors are still found.
        assert_eq!(s.purge(None, Some("nobody")), 0);
        let keep: Vec<usize> = (0..n).filter(|i| i % 4 != 0).collect();
        {
            let mut inner = s.write();
            for id in &keep {
                inner.remove(*id);
            }
        }
        assert!(s.needs_rebuild());
        s.rebuild();
        assert!(!s.needs_rebuild());
        let found = s.search(&unit(124, 128), &p, 10, 5);
        assert!(
            (found[0].similarity - 1.0).abs() < 1e-5,
            "{:?}",
            found[0].similarity
        );
        let removed = s.purge(Some("r"), None);
        assert_eq!(removed, n - keep.len() + 1);
        assert!(s.search(&unit(124, 128), &p, 10, 5).is_empty());
    }
}
