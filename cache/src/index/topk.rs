//! The best `k` so far, best first: the one small structure every search path shares.

/// Whether similarity `s` would enter `top`, the best `k` so far (best first).
pub(crate) fn makes_top<T>(top: &[(f32, T)], k: usize, s: f32) -> bool {
    top.len() < k || top.last().is_some_and(|(worst, _)| s > *worst)
}

/// Puts `item` into `top` (best first), keeping at most `k`.
pub(crate) fn insert_top<T>(top: &mut Vec<(f32, T)>, k: usize, s: f32, item: T) {
    let at = top.partition_point(|(x, _)| *x >= s);
    top.insert(at, (s, item));
    top.truncate(k);
}
