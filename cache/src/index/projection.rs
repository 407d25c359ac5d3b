//! The random projection that makes the graph's short vectors from the embedder's.

use super::shards::GRAPH_DIMS;
use super::simd::dots;

/// A fixed random projection (seeded: the same in every process, so a graph built from a
/// snapshot matches new inserts).
pub(crate) struct Projection {
    rows: Vec<Vec<f32>>,
}

impl Projection {
    pub(crate) fn new(dim: usize) -> Self {
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
    pub(crate) fn apply(&self, v: &[f32]) -> Vec<f32> {
        if v.len() <= GRAPH_DIMS || self.rows.first().is_some_and(|r| r.len() != v.len()) {
            return v.to_vec();
        }
        let mut out = dots(v, &self.rows, |r| r);
        crate::embed::normalise(&mut out);
        out
    }
}
