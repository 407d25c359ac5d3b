//! Benchmarks live in `benches/`; this crate holds no library code yet.
