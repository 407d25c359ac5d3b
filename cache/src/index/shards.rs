//! The graph, split into shards: one hnsw_rs graph per shard, each searched through a flat copy
//! (see [`FlatGraph`]), with the entries a copy does not reach scanned exactly.

use std::collections::HashSet;
use std::sync::{Arc, Mutex, RwLock};

use hnsw_rs::anndists::dist::Distance;
use hnsw_rs::prelude::Hnsw;

use super::flat::FlatGraph;
use super::simd::{dot, scan};
use super::topk::{insert_top, makes_top};

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
/// Entries per graph shard the graph is split for (see [`Index`]): beyond twice this many per
/// shard, the next rebuild splits the graph into `entries / SHARD_TARGET` shards.
pub const SHARD_TARGET: usize = 65_536;
/// A search also visits the shards whose centroid is within this cosine of the nearest one.
pub const SHARD_PROBE_MARGIN: f32 = 0.03;
/// At most this many shards per search.
pub const SHARD_MAX_PROBES: usize = 3;
/// At most this many entries per shard the graph does not lead to are searched beside it (an
/// exact scan of their graph vectors: 8 192 of them cost about as much as a graph search).
pub const MAX_STRAGGLERS: usize = 8192;
/// A shard's graph is copied for searching again once this many entries, or a 32nd of the
/// copy's, were inserted after its last copy; until then they are scanned exactly. A copy reads
/// every point's links through hnsw_rs (about 1 s per 100 k points on this VM, BENCHMARKS.md),
/// so the interval grows with the shard: about 0.3 ms per insert, and at most 4 096 rows
/// (131 072 entries, the largest shard) scanned at 10 ns each.
pub const RECOPY_AFTER: usize = 512;
const HNSW_MAX_LAYER: usize = 16;

/// `1 - a·b` for unit vectors (cosine distance without the norms).
#[derive(Debug, Default, Clone, Copy)]
pub struct UnitCosine;

impl Distance<f32> for UnitCosine {
    fn eval(&self, a: &[f32], b: &[f32]) -> f32 {
        (1.0 - dot(a, b)).max(0.0)
    }
}

/// The graph: one hnsw_rs graph per shard. A cache with more than [`SHARD_TARGET`] entries is
/// split into shards by nearest centroid (spherical k-means over the projected vectors), and a
/// search visits the query's nearest shard plus any whose centroid is nearly as close. A graph
/// search's cost grows with the graph (memory latency per visited point: 64 µs at 100 k
/// entries, 133–268 µs at 1 M, BENCHMARKS.md), so a search among 1 M entries costs about what
/// one among 64 k does. A near-duplicate sits beside its entry, on the same side of the
/// centroids' boundaries except when both are close to one; those queries search both shards.
pub(crate) struct Index {
    /// Unit centroids of the shards, in the graph's dimensions; empty: a single shard.
    pub(crate) centroids: Vec<Vec<f32>>,
    pub(crate) shards: Vec<Hnsw<'static, f32, UnitCosine>>,
    /// What searches use beside each shard's graph.
    pub(crate) sides: Vec<RwLock<Side>>,
    /// Held while a shard's graph changes or is copied (hnsw_rs iterates under its own lock).
    pub(crate) writers: Vec<Mutex<()>>,
}

/// What a search of a shard reads: a flat copy of its graph (searched instead of hnsw_rs's own
/// structure, whose per-visit locks and allocations were most of a search), the entries
/// inserted since the copy, and the entries the copy does not lead to; the last two are
/// scanned exactly.
#[derive(Default)]
pub(crate) struct Side {
    /// The shard's graph as of its last copy; `None`: search hnsw_rs's graph itself.
    pub(crate) flat: Option<Arc<FlatGraph>>,
    /// Entries the graph gained after the copy (copied again at [`RECOPY_AFTER`]).
    pub(crate) recent: Rows,
    /// Entries the graph does not lead to: a search of a copy for their own vector misses them.
    /// HNSW's blind spot: a point away from dense clusters gets links out, but its neighbours
    /// keep their closer points and drop the link back, so no search arrives (about 5 % of the
    /// entries of clustered real embeddings at width 8, measured). Every copy links them back
    /// from their neighbours.
    pub(crate) linked: Vec<usize>,
    /// Linked-back entries a search of the copy still misses (checked at every copy for the
    /// entries new to it).
    pub(crate) stragglers: Rows,
}

/// Entries with their graph vectors side by side, for an exact scan.
#[derive(Default, Clone)]
pub(crate) struct Rows {
    pub(crate) ids: Vec<usize>,
    pub(crate) matrix: Vec<f32>,
}

impl Rows {
    /// Adds a row unless full (`max`) or of another length than the rows (another embedding
    /// model would misalign them).
    fn push(&mut self, g: &[f32], id: usize, max: usize) {
        let same_dim = self.ids.is_empty() || self.matrix.len() == self.ids.len() * g.len();
        if self.ids.len() < max && same_dim {
            self.ids.push(id);
            self.matrix.extend_from_slice(g);
        }
    }

    /// Each row's vector and id.
    fn rows(&self) -> impl Iterator<Item = (&[f32], &usize)> {
        let dim = self.matrix.len() / self.ids.len().max(1);
        self.matrix.chunks_exact(dim.max(1)).zip(&self.ids)
    }

    /// Offers each row's similarity to `g` to `top` (best `k` first).
    fn scan_into(&self, g: &[f32], k: usize, top: &mut Vec<(f32, usize)>) {
        if self.matrix.len() != self.ids.len() * g.len() {
            return;
        }
        scan(g, &self.matrix, |row, sim| {
            if makes_top(top, k, sim) {
                insert_top(top, k, sim, self.ids[row]);
            }
        });
    }
}

pub(crate) fn graph_with_capacity(capacity: usize) -> Hnsw<'static, f32, UnitCosine> {
    Hnsw::new(
        HNSW_M,
        capacity.max(1024),
        HNSW_MAX_LAYER,
        HNSW_EF_CONSTRUCTION,
        UnitCosine,
    )
}

impl Index {
    pub(crate) fn new(capacity: usize) -> Self {
        Index {
            centroids: Vec::new(),
            shards: vec![graph_with_capacity(capacity)],
            sides: vec![RwLock::default()],
            writers: vec![Mutex::default()],
        }
    }

    /// The shard a graph vector belongs to.
    pub(crate) fn shard_of(&self, g: &[f32]) -> usize {
        nearest(&self.centroids, g).0
    }

    /// The shards a search visits: the nearest, then those within `margin` (cosine) of it, at
    /// most [`SHARD_MAX_PROBES`].
    pub(crate) fn probes(&self, g: &[f32], margin: f32) -> Vec<usize> {
        if self.centroids.len() < 2 {
            return vec![0];
        }
        let mut sims: Vec<(f32, usize)> = self
            .centroids
            .iter()
            .enumerate()
            .map(|(i, c)| (dot(c, g), i))
            .collect();
        sims.sort_by(|a, b| b.0.total_cmp(&a.0));
        let best = sims[0].0;
        sims.iter()
            .take(SHARD_MAX_PROBES)
            .take_while(|(s, _)| *s >= best - margin)
            .map(|(_, i)| *i)
            .collect()
    }

    /// Adds entry `id` to its shard's graph; it is scanned as recent until the shard's graph
    /// is copied again, after [`RECOPY_AFTER`] entries (more in a large shard).
    pub(crate) fn insert(&self, g: &[f32], id: usize, ef: usize) {
        let shard = self.shard_of(g);
        let _writing = self.writers[shard]
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        self.shards[shard].insert_slice((g, id));
        let due = {
            let mut side = self.side_mut(shard);
            side.recent.push(g, id, usize::MAX);
            let copied = side.flat.as_ref().map_or(0, |f| f.len());
            side.recent.ids.len() >= RECOPY_AFTER.max(copied / 32)
        };
        if due {
            self.copy(shard, ef, false);
        }
    }

    /// Replaces shard `shard`'s flat copy with one of its graph as it is now (the caller holds
    /// its writer lock, or has the index to itself). The entries it has not checked yet (those
    /// inserted since the last copy, or with `all` every one) and the stragglers are searched
    /// for by their own vectors (width `ef`); those not found are linked back from their
    /// neighbours in this and every later copy, and those still not found are scanned.
    pub(crate) fn copy(&self, shard: usize, ef: usize, all: bool) {
        let Some(mut flat) = FlatGraph::of(&self.shards[shard]) else {
            // An empty graph, or one the copy cannot number: hnsw_rs's own search covers every
            // entry (slower), and the next copy is tried after RECOPY_AFTER more inserts.
            if self.shards[shard].get_nb_point() > 0 {
                tracing::warn!(shard, "Could not copy a cache graph shard for searching; searching hnsw_rs's graph instead.");
            }
            let mut side = self.side_mut(shard);
            side.flat = None;
            side.recent = Rows::default();
            return;
        };
        let (recent, stragglers, linked) = {
            let side = self.side(shard);
            (
                side.recent.clone(),
                side.stragglers.clone(),
                side.linked.clone(),
            )
        };
        flat.link_back(&linked);
        let ef = ef.max(GRAPH_CANDIDATES);
        let mut check: Vec<(&[f32], usize)> = stragglers.rows().map(|(g, id)| (g, *id)).collect();
        if !all {
            check.extend(recent.rows().map(|(g, id)| (g, *id)));
        }
        let mut lost = flat.unreached(&check, all, GRAPH_CANDIDATES, ef);
        let mut still_lost = Rows::default();
        if !lost.is_empty() {
            flat.link_back(&lost);
            // New links change where searches go: check them all again against this copy.
            let still: HashSet<usize> = flat
                .unreached(&check, all, GRAPH_CANDIDATES, ef)
                .into_iter()
                .collect();
            lost.extend(still.iter().copied());
            let mut filed = HashSet::new();
            let own: Vec<(&[f32], usize)> = if all {
                flat.points().collect()
            } else {
                Vec::new()
            };
            for (g, id) in check.iter().chain(&own) {
                if still.contains(id) && filed.insert(*id) {
                    still_lost.push(g, *id, MAX_STRAGGLERS);
                }
            }
        }
        // One swap: a search sees the old copy with the old scanned rows, or the new with the new.
        let mut side = self.side_mut(shard);
        side.linked.append(&mut lost);
        side.linked.sort_unstable();
        side.linked.dedup();
        side.stragglers = still_lost;
        side.recent = Rows::default();
        side.flat = Some(Arc::new(flat));
    }

    pub(crate) fn side(&self, shard: usize) -> std::sync::RwLockReadGuard<'_, Side> {
        self.sides[shard]
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    pub(crate) fn side_mut(&self, shard: usize) -> std::sync::RwLockWriteGuard<'_, Side> {
        self.sides[shard]
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Entry ids from a graph search (width `ef`) of each of `shards` for `g`: the flat copy
    /// where there is one, else hnsw_rs's own search; with `keep`, only entries it accepts.
    pub(crate) fn graph_candidates(
        &self,
        g: &[f32],
        shards: &[usize],
        k: usize,
        ef: usize,
        keep: Option<&dyn Fn(usize) -> bool>,
    ) -> Vec<usize> {
        let mut out = Vec::new();
        for &s in shards {
            let flat = self.side(s).flat.clone();
            match (flat, keep) {
                (Some(flat), _) => {
                    out.extend(flat.search(g, k, ef, keep).into_iter().map(|(_, id)| id));
                }
                (None, None) => out.extend(self.shards[s].search(g, k, ef).iter().map(|n| n.d_id)),
                (None, Some(f)) => {
                    let filter = |id: &usize| f(*id);
                    out.extend(
                        self.shards[s]
                            .search_filter(g, k, ef, Some(&filter))
                            .iter()
                            .map(|n| n.d_id),
                    );
                }
            }
        }
        out
    }

    /// The `k` entries most similar to `g` among the exactly scanned ones of `shards`:
    /// stragglers, and entries newer than the shard's flat copy.
    pub(crate) fn scanned_candidates(&self, g: &[f32], shards: &[usize], k: usize) -> Vec<usize> {
        let mut top: Vec<(f32, usize)> = Vec::with_capacity(k + 1);
        for &s in shards {
            let side = self.side(s);
            side.stragglers.scan_into(g, k, &mut top);
            side.recent.scan_into(g, k, &mut top);
        }
        top.into_iter().map(|(_, id)| id).collect()
    }

    pub(crate) fn straggler_count(&self) -> usize {
        (0..self.sides.len())
            .map(|s| self.side(s).stragglers.ids.len())
            .sum()
    }

    /// Points per shard.
    pub(crate) fn sizes(&self) -> Vec<usize> {
        self.shards
            .iter()
            .map(hnsw_rs::hnsw::Hnsw::get_nb_point)
            .collect()
    }
}

/// The index of the most similar centroid and its similarity (`(0, f32::MIN)` when there are
/// none: everything belongs to the single shard 0).
pub(crate) fn nearest(centroids: &[Vec<f32>], g: &[f32]) -> (usize, f32) {
    let mut best = (0, f32::MIN);
    for (i, c) in centroids.iter().enumerate() {
        let s = dot(c, g);
        if s > best.1 {
            best = (i, s);
        }
    }
    best
}

/// `k` unit centroids of `points` (unit vectors) by spherical k-means on a sample: seeded
/// k-means++ (deterministic), then Lloyd iterations; an emptied cluster is re-seeded with the
/// point its centroids serve worst.
pub(crate) fn centroids(points: &[Vec<f32>], k: usize) -> Vec<Vec<f32>> {
    const SAMPLE_PER_CENTROID: usize = 2048;
    const ITERATIONS: usize = 10;
    let step = (points.len() / (k * SAMPLE_PER_CENTROID).max(1)).max(1);
    let sample: Vec<&[f32]> = points.iter().step_by(step).map(Vec::as_slice).collect();
    if sample.is_empty() || k < 2 {
        return Vec::new();
    }
    let dim = sample[0].len();
    let mut x: u64 = 0xC3_57E2;
    let mut uniform = || {
        x = x
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (x >> 11) as f64 / (1u64 << 53) as f64
    };
    // Greedy k-means++ (as scikit-learn): each step draws a few candidates with probability ∝
    // their distance to the seeds so far and keeps the one that lowers the total most (a
    // single draw put two seeds in one of four separated clusters in a test).
    let trials = 2 + (k as f64).ln() as usize;
    let mut cents: Vec<Vec<f32>> = vec![sample[sample.len() / 2].to_vec()];
    let mut dist: Vec<f32> = sample
        .iter()
        .map(|p| (1.0 - dot(p, &cents[0])).max(0.0))
        .collect();
    while cents.len() < k.min(sample.len()) {
        let total: f64 = dist.iter().map(|d| *d as f64).sum();
        let mut best: Option<(f64, usize, Vec<f32>)> = None;
        for _ in 0..trials {
            let mut at = uniform() * total;
            let mut pick = sample.len() - 1;
            for (i, d) in dist.iter().enumerate() {
                at -= *d as f64;
                if at <= 0.0 {
                    pick = i;
                    break;
                }
            }
            let after: Vec<f32> = dist
                .iter()
                .zip(&sample)
                .map(|(d, p)| d.min((1.0 - dot(p, sample[pick])).max(0.0)))
                .collect();
            let cost: f64 = after.iter().map(|d| *d as f64).sum();
            if best.as_ref().is_none_or(|(c, _, _)| cost < *c) {
                best = Some((cost, pick, after));
            }
        }
        let Some((_, pick, after)) = best else { break };
        cents.push(sample[pick].to_vec());
        dist = after;
    }
    for _ in 0..ITERATIONS {
        let mut sums = vec![vec![0f32; dim]; cents.len()];
        let mut counts = vec![0usize; cents.len()];
        let mut worst = (0usize, f32::MAX);
        for (i, p) in sample.iter().enumerate() {
            let (c, s) = nearest(&cents, p);
            counts[c] += 1;
            for (a, b) in sums[c].iter_mut().zip(p.iter()) {
                *a += b;
            }
            if s < worst.1 {
                worst = (i, s);
            }
        }
        for (c, sum) in sums.iter_mut().enumerate() {
            if counts[c] == 0 {
                *sum = sample[worst.0].to_vec();
            }
            crate::embed::normalise(sum);
        }
        cents = sums;
    }
    cents
}
