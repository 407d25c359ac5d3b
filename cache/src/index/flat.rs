//! A compact, read-only copy of an hnsw_rs graph that searches without locks or allocation per
//! visited point.
//!
//! hnsw_rs builds the graph and keeps it up to date; its search, though, pays per visited point
//! for a `RwLock` read of the neighbour list, an `Arc` clone per candidate and a SipHash set of
//! visited points, and at 1 M entries that bookkeeping, not the 64-d dot products, is most of a
//! search (BENCHMARKS.md). [`FlatGraph::of`] copies the graph's points and links into
//! contiguous arrays (vectors side by side, layer 0 as one adjacency array), and
//! [`FlatGraph::search`] runs the same HNSW search over them: greedy descent through the upper
//! layers, then a beam of width `ef` on layer 0, asking for all of a node's neighbours' vectors
//! before scoring any (their memory reads overlap). The copy is a snapshot: points the graph
//! gains later are not in it (the index scans those beside it until it makes a new copy).

use std::cell::RefCell;
use std::cmp::Ordering;
use std::collections::{BinaryHeap, HashMap, HashSet};

use hnsw_rs::anndists::dist::Distance;
use hnsw_rs::prelude::Hnsw;

use super::simd::{dot, dot4};
use super::topk::{insert_top, makes_top};

/// Starts loading `v` into the cache, a 64-byte line at a time.
#[inline]
pub fn prefetch(v: &[f32]) {
    prefetch_bytes(v.as_ptr().cast(), std::mem::size_of_val(v));
}

/// Starts loading the value at `p` (its first four lines at most) into the cache.
#[inline]
pub fn prefetch_value<T>(p: *const T) {
    prefetch_bytes(p.cast(), std::mem::size_of::<T>().min(4 * 64));
}

/// Starts loading the `len` bytes from `p` into the cache, a 64-byte line at a time.
#[inline]
fn prefetch_bytes(p: *const u8, len: usize) {
    #[cfg(target_arch = "x86_64")]
    for offset in (0..len).step_by(64) {
        // SAFETY: a prefetch is a hint: it reads no value and cannot fault, whatever the address.
        unsafe {
            std::arch::x86_64::_mm_prefetch::<{ std::arch::x86_64::_MM_HINT_T0 }>(
                p.wrapping_add(offset).cast(),
            );
        };
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = (p, len);
}

/// Asks the kernel to back `memory` (not yet touched) with 2 MB pages where it can: a search
/// reads a few hundred scattered points of arrays of tens of megabytes, and with 4 kB pages
/// nearly every read also misses the TLB. Only whole 2 MB pages inside `memory` are advised;
/// a refusal (no transparent huge pages) leaves ordinary pages.
fn huge_pages<T>(memory: &[T]) {
    #[cfg(target_os = "linux")]
    {
        const HUGE: usize = 2 << 20;
        let start = memory.as_ptr() as usize;
        let end = start + std::mem::size_of_val(memory);
        let first = start.next_multiple_of(HUGE);
        let last = end - end % HUGE;
        if last > first {
            // SAFETY: the range lies inside `memory`'s allocation; MADV_HUGEPAGE changes how it
            // is backed, never its contents or whether it is mapped.
            unsafe {
                libc::madvise(
                    first as *mut libc::c_void,
                    last - first,
                    libc::MADV_HUGEPAGE,
                );
            }
        }
    }
    #[cfg(not(target_os = "linux"))]
    let _ = memory;
}

/// The graph of one hnsw_rs index, flattened.
pub struct FlatGraph {
    dim: usize,
    /// Node `n`'s vector: `vectors[n * dim..(n + 1) * dim]`.
    vectors: Vec<f32>,
    /// Node → the id the point was inserted with.
    ids: Vec<usize>,
    /// Layer 0 links of node `n`: `links[starts[n]..starts[n + 1]]`.
    starts: Vec<u32>,
    links: Vec<u32>,
    /// Links on layers 1.., lowest first.
    upper: Vec<Upper>,
    /// A point on the top layer.
    entry: u32,
}

/// Neighbour lists packed side by side: list `i` is `links[starts[i]..starts[i + 1]]`.
fn adjacency(lists: &[Vec<u32>]) -> (Vec<u32>, Vec<u32>) {
    let mut starts = Vec::with_capacity(lists.len() + 1);
    let mut links = Vec::with_capacity(lists.iter().map(Vec::len).sum());
    huge_pages(links.spare_capacity_mut());
    starts.push(0u32);
    for l in lists {
        links.extend_from_slice(l);
        starts.push(links.len() as u32);
    }
    (starts, links)
}

/// The links of one layer above layer 0, whose points are the nodes from `base` on.
struct Upper {
    base: u32,
    /// Links of node `base + i`: `links[starts[i]..starts[i + 1]]`.
    starts: Vec<u32>,
    links: Vec<u32>,
}

impl Upper {
    fn of(base: u32, lists: &[Vec<u32>]) -> Self {
        let (starts, links) = adjacency(lists);
        Upper {
            base,
            starts,
            links,
        }
    }

    /// The links of `node` on this layer (none for a node below it).
    fn out(&self, node: u32) -> &[u32] {
        let Some(i) = node.checked_sub(self.base).map(|i| i as usize) else {
            return &[];
        };
        match (self.starts.get(i), self.starts.get(i + 1)) {
            (Some(&a), Some(&b)) => &self.links[a as usize..b as usize],
            _ => &[],
        }
    }
}

/// A similarity and a node, ordered by similarity.
#[derive(Clone, Copy)]
struct Scored(f32, u32);

impl PartialEq for Scored {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}
impl Eq for Scored {}
impl PartialOrd for Scored {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Scored {
    fn cmp(&self, other: &Self) -> Ordering {
        self.0.total_cmp(&other.0).then(self.1.cmp(&other.1))
    }
}

/// The nodes a search has visited: open addressing over a table reused by the thread's next
/// search (a search visits hundreds of nodes, not the graph's million).
struct Visited {
    slots: Vec<u32>,
    len: usize,
}

impl Visited {
    const EMPTY: u32 = u32::MAX;

    fn reset(&mut self) {
        if self.slots.len() < 1024 {
            self.slots = vec![Self::EMPTY; 1024];
        } else {
            self.slots.fill(Self::EMPTY);
        }
        self.len = 0;
    }

    /// Whether `node` was new.
    fn insert(&mut self, node: u32) -> bool {
        if 2 * (self.len + 1) > self.slots.len() {
            let grown = vec![Self::EMPTY; self.slots.len() * 2];
            let old = std::mem::replace(&mut self.slots, grown);
            self.len = 0;
            for n in old.into_iter().filter(|n| *n != Self::EMPTY) {
                self.insert(n);
            }
        }
        let mask = self.slots.len() - 1;
        let mut at = (node.wrapping_mul(0x9E37_79B1) as usize) & mask;
        loop {
            match self.slots[at] {
                Self::EMPTY => {
                    self.slots[at] = node;
                    self.len += 1;
                    return true;
                }
                n if n == node => return false,
                _ => at = (at + 1) & mask,
            }
        }
    }
}

thread_local! {
    static VISITED: RefCell<Visited> = const { RefCell::new(Visited { slots: Vec::new(), len: 0 }) };
}

impl FlatGraph {
    /// A copy of `graph`'s points and links. The caller keeps inserts out while it runs
    /// (hnsw_rs's iteration holds its layer lock for reading).
    pub fn of<D: Distance<f32> + Send + Sync>(graph: &Hnsw<'static, f32, D>) -> Option<Self> {
        let points = graph.get_point_indexation();
        let top = points.get_max_level_observed() as usize;
        // A point's id in hnsw_rs is (its top layer, its slot there): nodes number layer by layer.
        let mut first = Vec::with_capacity(top + 2);
        first.push(0usize);
        for layer in 0..=top {
            let before = first[layer];
            first.push(before + points.get_layer_nb_point(layer));
        }
        let n = first[top + 1];
        if n == 0 || n >= u32::MAX as usize {
            return None;
        }
        let node_of = |layer: u8, slot: i32| -> Option<u32> {
            let (layer, slot) = (layer as usize, usize::try_from(slot).ok()?);
            (layer <= top && first[layer] + slot < first[layer + 1])
                .then(|| (first[layer] + slot) as u32)
        };
        let mut dim = 0;
        let mut vectors = Vec::new();
        let mut ids = vec![0usize; n];
        let mut lists: Vec<Vec<u32>> = vec![Vec::new(); n];
        // Nodes are numbered layer by layer, so the points of layer `l` (those whose top layer
        // is `l` or higher) are the nodes from `first[l]` on.
        let mut upper: Vec<Vec<Vec<u32>>> =
            (1..=top).map(|l| vec![Vec::new(); n - first[l]]).collect();
        for layer in 0..=top {
            for point in points.get_layer_iterator(layer) {
                let p = point.get_point_id();
                let node = node_of(p.0, p.1)?;
                let v = point.get_v();
                if dim == 0 {
                    dim = v.len();
                    vectors = vec![0f32; n * dim];
                    huge_pages(&vectors);
                }
                if v.len() != dim {
                    return None;
                }
                let at = node as usize * dim;
                vectors[at..at + dim].copy_from_slice(v);
                ids[node as usize] = point.get_origin_id();
                for (l, neighbours) in point.get_neighborhood_id().into_iter().enumerate() {
                    let nodes: Vec<u32> = neighbours
                        .iter()
                        .filter_map(|nb| node_of(nb.p_id.0, nb.p_id.1))
                        .collect();
                    match l {
                        0 => lists[node as usize] = nodes,
                        l if l <= top && node as usize >= first[l] => {
                            upper[l - 1][node as usize - first[l]] = nodes;
                        }
                        _ => {}
                    }
                }
            }
        }
        let (starts, links) = adjacency(&lists);
        Some(FlatGraph {
            dim,
            vectors,
            ids,
            starts,
            links,
            upper: upper
                .iter()
                .zip(&first[1..])
                .map(|(lists, &base)| Upper::of(base as u32, lists))
                .collect(),
            entry: first[top] as u32,
        })
    }

    /// Links each point inserted with an id in `ids` back from its own layer-0 neighbours. For
    /// points the graph does not lead to: their neighbours kept closer points and dropped the
    /// links back to them.
    pub fn link_back(&mut self, ids: &[usize]) {
        let wanted: HashSet<usize> = ids.iter().copied().collect();
        let mut extra: HashMap<u32, Vec<u32>> = HashMap::new();
        for (node, id) in self.ids.iter().enumerate() {
            if wanted.contains(id) {
                for &to in self.out(node as u32) {
                    extra.entry(to).or_default().push(node as u32);
                }
            }
        }
        if extra.is_empty() {
            return;
        }
        let mut starts = Vec::with_capacity(self.starts.len());
        let mut links =
            Vec::with_capacity(self.links.len() + extra.values().map(Vec::len).sum::<usize>());
        huge_pages(links.spare_capacity_mut());
        starts.push(0u32);
        for node in 0..self.ids.len() as u32 {
            let own = self.out(node);
            links.extend_from_slice(own);
            for &from in extra.get(&node).map(Vec::as_slice).unwrap_or(&[]) {
                if !own.contains(&from) {
                    links.push(from);
                }
            }
            starts.push(links.len() as u32);
        }
        self.starts = starts;
        self.links = links;
    }

    /// Layer-0 links of `node`.
    fn out(&self, node: u32) -> &[u32] {
        &self.links[self.starts[node as usize] as usize..self.starts[node as usize + 1] as usize]
    }

    /// Every point's vector and id.
    pub fn points(&self) -> impl Iterator<Item = (&[f32], usize)> {
        self.vectors
            .chunks_exact(self.dim.max(1))
            .zip(self.ids.iter().copied())
    }

    /// Which of `points` (vector, id), or with `all` of the copy's own points as well, a search
    /// of width `ef` for the point's own vector does not return among its `k` candidates (on
    /// every core).
    pub fn unreached(
        &self,
        points: &[(&[f32], usize)],
        all: bool,
        k: usize,
        ef: usize,
    ) -> Vec<usize> {
        let own: Vec<(&[f32], usize)> = if all {
            self.points().collect()
        } else {
            Vec::new()
        };
        let points: Vec<&(&[f32], usize)> = points.iter().chain(&own).collect();
        let threads = std::thread::available_parallelism().map_or(1, std::num::NonZero::get);
        let part = points.len().div_ceil(threads).max(1);
        std::thread::scope(|scope| {
            points
                .chunks(part)
                .map(|chunk| {
                    scope.spawn(move || {
                        chunk
                            .iter()
                            .filter(|(g, id)| {
                                !self.search(g, k, ef, None).iter().any(|x| x.1 == *id)
                            })
                            .map(|(_, id)| *id)
                            .collect::<Vec<_>>()
                    })
                })
                .collect::<Vec<_>>()
                .into_iter()
                .flat_map(|h| h.join().unwrap_or_default())
                .collect()
        })
    }

    /// Points in the copy.
    pub fn len(&self) -> usize {
        self.ids.len()
    }

    /// Whether the copy has no points.
    pub fn is_empty(&self) -> bool {
        self.ids.is_empty()
    }

    /// The ids of the points in the copy, by node.
    #[cfg(test)]
    pub fn ids(&self) -> &[usize] {
        &self.ids
    }

    fn vector(&self, node: u32) -> &[f32] {
        let at = node as usize * self.dim;
        &self.vectors[at..at + self.dim]
    }

    fn sim(&self, q: &[f32], node: u32) -> f32 {
        dot(q, self.vector(node))
    }

    /// Starts loading `node`'s vector into the cache.
    #[inline]
    fn prefetch(&self, node: u32) {
        prefetch(self.vector(node));
    }

    /// The (up to) `k` points most similar to `q` (a unit vector of the graph's dimensions) that
    /// `keep` accepts, by a search of width `ef`: `(similarity, id)`, most similar first. Points
    /// `keep` refuses are walked through but not returned (as hnsw_rs's filtered search).
    pub fn search(
        &self,
        q: &[f32],
        k: usize,
        ef: usize,
        keep: Option<&dyn Fn(usize) -> bool>,
    ) -> Vec<(f32, usize)> {
        if q.len() != self.dim || self.ids.is_empty() || k == 0 {
            return Vec::new();
        }
        let ef = ef.max(k);
        let mut at = self.entry;
        let mut best = self.sim(q, at);
        for layer in self.upper.iter().rev() {
            loop {
                let mut moved = false;
                let neighbours = layer.out(at);
                for &n in neighbours {
                    self.prefetch(n);
                }
                for &n in neighbours {
                    let s = self.sim(q, n);
                    if s > best {
                        (best, at) = (s, n);
                        moved = true;
                    }
                }
                if !moved {
                    break;
                }
            }
        }
        let accepts = |node: u32| keep.is_none_or(|f| f(self.ids[node as usize]));
        VISITED.with(|v| {
            let mut visited = v.borrow_mut();
            visited.reset();
            visited.insert(at);
            // `front`: nodes to expand, best first; `found`: the best `ef` accepted, best first.
            let mut front = BinaryHeap::with_capacity(4 * ef);
            front.push(Scored(best, at));
            let mut found: Vec<(f32, u32)> = Vec::with_capacity(ef + 1);
            if accepts(at) {
                found.push((best, at));
            }
            while let Some(Scored(s, node)) = front.pop() {
                if found.len() >= ef && found.last().is_some_and(|w| s < w.0) {
                    break;
                }
                // Ask for every neighbour's vector first: their memory reads overlap instead of
                // waiting one after another (the search is bound by memory latency).
                for &n in self.out(node) {
                    self.prefetch(n);
                }
                let mut consider = |sn: f32, n: u32| {
                    if makes_top(&found, ef, sn) {
                        front.push(Scored(sn, n));
                        if accepts(n) {
                            insert_top(&mut found, ef, sn, n);
                        }
                    }
                };
                // Scored four at a time (one pass over the query for four neighbours).
                let (mut four, mut held) = ([0u32; 4], 0);
                for &n in self.out(node) {
                    if !visited.insert(n) {
                        continue;
                    }
                    four[held] = n;
                    held += 1;
                    if held == 4 {
                        let sims = dot4(q, four.map(|n| self.vector(n)));
                        for (sn, n) in sims.into_iter().zip(four) {
                            consider(sn, n);
                        }
                        held = 0;
                    }
                }
                for &n in &four[..held] {
                    consider(self.sim(q, n), n);
                }
            }
            found.truncate(k);
            found
                .into_iter()
                .map(|(s, n)| (s, self.ids[n as usize]))
                .collect()
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::index::shards::UnitCosine;
    use crate::store::tests::unit;

    fn graph(points: &[Vec<f32>]) -> Hnsw<'static, f32, UnitCosine> {
        let g = Hnsw::new(16, points.len(), 16, 200, UnitCosine);
        let data: Vec<(&Vec<f32>, usize)> = points.iter().zip(1000..).collect();
        g.parallel_insert(&data);
        g
    }

    #[test]
    fn the_copy_finds_what_an_exact_scan_finds() {
        let points: Vec<Vec<f32>> = (0..5000).map(|i| unit(i, 32)).collect();
        let g = graph(&points);
        let flat = FlatGraph::of(&g).unwrap();
        assert_eq!(flat.len(), 5000);
        let mut ids = flat.ids().to_vec();
        ids.sort_unstable();
        assert_eq!(ids, (1000..6000).collect::<Vec<_>>(), "every point, once");
        let mut hits = 0;
        for i in 0..200u64 {
            let q = unit(10_000 + i, 32);
            let exact = points
                .iter()
                .zip(1000..)
                .map(|(p, id)| (dot(&q, p), id))
                .max_by(|a, b| a.0.total_cmp(&b.0))
                .unwrap();
            let got = flat.search(&q, 4, 32, None);
            assert!(got.windows(2).all(|w| w[0].0 >= w[1].0), "best first");
            if got.first().map(|g| g.1) == Some(exact.1) {
                hits += 1;
                assert!((got[0].0 - exact.0).abs() < 1e-5);
            }
        }
        // Random 32-d points are the hardest case for a graph (no clusters): most, not all
        // (198-199 of 200 measured).
        assert!(hits >= 190, "{hits} of 200 found their nearest point");
        // Each point's own vector finds it.
        let own = (0..500)
            .filter(|&i| {
                flat.search(&points[i], 1, 16, None).first().map(|g| g.1) == Some(1000 + i)
            })
            .count();
        assert!(own >= 495, "{own} of 500 points found by their own vector");
    }

    #[test]
    fn a_filter_keeps_refused_points_out_of_the_answer() {
        let points: Vec<Vec<f32>> = (0..3000).map(|i| unit(i, 16)).collect();
        let flat = FlatGraph::of(&graph(&points)).unwrap();
        let even = |id: usize| id.is_multiple_of(2);
        for (i, p) in points.iter().enumerate().take(50) {
            let got = flat.search(p, 5, 32, Some(&even));
            assert_eq!(got.len(), 5);
            assert!(got.iter().all(|(_, id)| even(*id)), "{got:?}");
            // The refused point itself is not there; the accepted one comes first.
            if even(1000 + i) {
                assert_eq!(got[0].1, 1000 + i);
            } else {
                assert!(got.iter().all(|(_, id)| *id != 1000 + i));
            }
        }
    }

    #[test]
    fn an_empty_graph_copies_to_nothing_and_a_wrong_query_finds_nothing() {
        let g: Hnsw<'static, f32, UnitCosine> = Hnsw::new(16, 10, 16, 200, UnitCosine);
        assert!(FlatGraph::of(&g).is_none());
        let points: Vec<Vec<f32>> = (0..10).map(|i| unit(i, 8)).collect();
        let flat = FlatGraph::of(&graph(&points)).unwrap();
        assert!(flat.search(&unit(1, 4), 1, 8, None).is_empty());
        assert_eq!(flat.search(&points[3], 1, 8, None)[0].1, 1003);
    }
}
