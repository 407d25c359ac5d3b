//! The nearest-neighbour index behind the cache's similarity search, and the main place in the
//! workspace with `unsafe` code (the other is `embed/priority.rs`): SIMD dot products, prefetches, `madvise` for huge pages; each
//! block carries its own `SAFETY` note.
//!
//! - [`shards`]: one hnsw_rs graph per shard (spherical k-means centroids pick the shard),
//!   searched through a flat copy, with what a copy does not reach scanned exactly;
//! - [`flat`]: the flat copy of a graph and its search;
//! - [`projection`]: the seeded random projection to the graph's short vectors;
//! - [`topk`]: the best `k` so far;
//! - [`simd`]: dot products (AVX2 + FMA when compiled for them, portable otherwise).

#![allow(unsafe_code)]

pub mod flat;
pub mod projection;
pub mod shards;
pub mod simd;
pub mod topk;

pub(crate) use projection::Projection;
pub use simd::{dot, dots, scan};
pub(crate) use topk::{insert_top, makes_top};
