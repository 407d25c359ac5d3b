//! Dot products for the cache's searches: one pair at a time ([`dot`]), and one query against
//! four vectors at once ([`dot4`]), which scans rows about twice as fast as four single products
//! (the query is loaded once for all four, and the four sums are independent chains).
//!
//! With AVX2 and FMA enabled at compile time (the workspace builds for `x86-64-v3`) both use
//! 256-bit fused multiply-adds; elsewhere, plain Rust that the compiler vectorises. The results
//! agree to rounding.

/// Dot product of `a` and `b` (over the shorter one's length).
#[inline]
pub fn dot(a: &[f32], b: &[f32]) -> f32 {
    let n = a.len().min(b.len());
    #[cfg(all(
        target_arch = "x86_64",
        target_feature = "avx2",
        target_feature = "fma"
    ))]
    {
        // SAFETY: both slices hold at least `n` floats; the features are enabled at compile time.
        unsafe { avx2::dot(a.as_ptr(), b.as_ptr(), n) }
    }
    #[cfg(not(all(
        target_arch = "x86_64",
        target_feature = "avx2",
        target_feature = "fma"
    )))]
    {
        portable::dot(&a[..n], &b[..n])
    }
}

/// Dot products of `q` with each of `rows` (each over the shorter length of `q` and the row).
#[inline]
pub fn dot4(q: &[f32], rows: [&[f32]; 4]) -> [f32; 4] {
    let n = rows.iter().map(|r| r.len()).fold(q.len(), usize::min);
    #[cfg(all(
        target_arch = "x86_64",
        target_feature = "avx2",
        target_feature = "fma"
    ))]
    {
        // SAFETY: `q` and every row hold at least `n` floats; features enabled at compile time.
        unsafe { avx2::dot4(q.as_ptr(), rows.map(<[f32]>::as_ptr), n) }
    }
    #[cfg(not(all(
        target_arch = "x86_64",
        target_feature = "avx2",
        target_feature = "fma"
    )))]
    {
        rows.map(|r| portable::dot(&q[..n], &r[..n]))
    }
}

/// Dot products of `q` with the vector `row` gives for each of `items`, in order, four at a time.
pub fn dots<T>(q: &[f32], items: &[T], row: impl Fn(&T) -> &[f32]) -> Vec<f32> {
    let mut out = Vec::with_capacity(items.len());
    let mut fours = items.chunks_exact(4);
    for f in fours.by_ref() {
        out.extend(dot4(q, [row(&f[0]), row(&f[1]), row(&f[2]), row(&f[3])]));
    }
    out.extend(fours.remainder().iter().map(|item| dot(q, row(item))));
    out
}

/// Calls `score(index, similarity)` for each `dim`-long row of `matrix` against `q`, four rows
/// at a time.
#[inline]
pub fn scan(q: &[f32], matrix: &[f32], mut score: impl FnMut(usize, f32)) {
    let dim = q.len();
    if dim == 0 {
        return;
    }
    let mut blocks = matrix.chunks_exact(4 * dim);
    let mut at = 0;
    for block in blocks.by_ref() {
        let (r0, rest) = block.split_at(dim);
        let (r1, rest) = rest.split_at(dim);
        let (r2, r3) = rest.split_at(dim);
        for (k, s) in dot4(q, [r0, r1, r2, r3]).into_iter().enumerate() {
            score(at + k, s);
        }
        at += 4;
    }
    for row in blocks.remainder().chunks_exact(dim) {
        score(at, dot(q, row));
        at += 1;
    }
}

#[cfg(not(all(
    target_arch = "x86_64",
    target_feature = "avx2",
    target_feature = "fma"
)))]
mod portable {
    /// Eight independent lanes, so it vectorises.
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
}

#[cfg(all(
    target_arch = "x86_64",
    target_feature = "avx2",
    target_feature = "fma"
))]
mod avx2 {
    use std::arch::x86_64::*;

    /// The sum of the eight lanes of `v`.
    #[inline(always)]
    unsafe fn sum(v: __m256) -> f32 {
        let x = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps::<1>(v));
        let x = _mm_add_ps(x, _mm_movehl_ps(x, x));
        _mm_cvtss_f32(_mm_add_ss(x, _mm_shuffle_ps::<1>(x, x)))
    }

    /// `a·b` over `n` floats. Safety: `a` and `b` are readable for `n` floats.
    #[inline]
    pub unsafe fn dot(a: *const f32, b: *const f32, n: usize) -> f32 {
        let mut s = [_mm256_setzero_ps(); 4];
        let mut i = 0;
        while i + 32 <= n {
            for (k, acc) in s.iter_mut().enumerate() {
                let (x, y) = (a.add(i + 8 * k), b.add(i + 8 * k));
                *acc = _mm256_fmadd_ps(_mm256_loadu_ps(x), _mm256_loadu_ps(y), *acc);
            }
            i += 32;
        }
        while i + 8 <= n {
            s[0] = _mm256_fmadd_ps(_mm256_loadu_ps(a.add(i)), _mm256_loadu_ps(b.add(i)), s[0]);
            i += 8;
        }
        let mut total = sum(_mm256_add_ps(
            _mm256_add_ps(s[0], s[1]),
            _mm256_add_ps(s[2], s[3]),
        ));
        while i < n {
            total += *a.add(i) * *b.add(i);
            i += 1;
        }
        total
    }

    /// `q·r` for each of four `r`, over `n` floats. Safety: all are readable for `n` floats.
    #[inline]
    pub unsafe fn dot4(q: *const f32, r: [*const f32; 4], n: usize) -> [f32; 4] {
        let mut s = [_mm256_setzero_ps(); 4];
        let mut i = 0;
        while i + 8 <= n {
            let qv = _mm256_loadu_ps(q.add(i));
            for (acc, row) in s.iter_mut().zip(r) {
                *acc = _mm256_fmadd_ps(_mm256_loadu_ps(row.add(i)), qv, *acc);
            }
            i += 8;
        }
        let mut out = [sum(s[0]), sum(s[1]), sum(s[2]), sum(s[3])];
        while i < n {
            for (o, row) in out.iter_mut().zip(r) {
                *o += *q.add(i) * *row.add(i);
            }
            i += 1;
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::tests::unit;

    fn plain(a: &[f32], b: &[f32]) -> f64 {
        a.iter().zip(b).map(|(x, y)| *x as f64 * *y as f64).sum()
    }

    #[test]
    fn every_length_gives_the_sum_of_products() {
        // Lengths that exercise each part: 32-float rounds, 8-float rounds and single floats,
        // and rows longer than the query.
        for len in 0..=100usize {
            let q = unit(len as u64, len);
            let rows: Vec<Vec<f32>> = (0..4)
                .map(|k| unit(1000 * k + len as u64, len + k as usize))
                .collect();
            let expected: Vec<f64> = rows.iter().map(|r| plain(&q, r)).collect();
            assert!(
                (dot(&q, &rows[0]) as f64 - expected[0]).abs() < 1e-5,
                "dot, length {len}"
            );
            assert_eq!(dot(&q, &rows[1]), dot(&rows[1], &q));
            let four = dot4(&q, [&rows[0], &rows[1], &rows[2], &rows[3]]);
            for (got, want) in four.iter().zip(&expected) {
                assert!((*got as f64 - want).abs() < 1e-5, "dot4, length {len}");
            }
        }
        let ones = vec![1f32; 67];
        assert_eq!(dot(&ones, &ones), 67.0);
        assert_eq!(dot4(&ones, [&ones; 4]), [67.0; 4]);
    }

    #[test]
    fn dots_scores_every_item_in_order() {
        let q = unit(3, 64);
        for n in [0usize, 1, 4, 6, 9] {
            let items: Vec<Vec<f32>> = (0..n).map(|i| unit(200 + i as u64, 64)).collect();
            let got = dots(&q, &items, |v| v);
            assert_eq!(got.len(), n);
            for (g, v) in got.iter().zip(&items) {
                assert!((*g as f64 - plain(&q, v)).abs() < 1e-5, "{n} items");
            }
        }
    }

    #[test]
    fn a_scan_scores_every_row_in_order() {
        for rows in [0usize, 1, 3, 4, 5, 9] {
            let q = unit(7, 64);
            let vectors: Vec<Vec<f32>> = (0..rows).map(|i| unit(100 + i as u64, 64)).collect();
            let matrix: Vec<f32> = vectors.iter().flatten().copied().collect();
            let mut seen = Vec::new();
            scan(&q, &matrix, |i, s| seen.push((i, s)));
            assert_eq!(
                seen.iter().map(|x| x.0).collect::<Vec<_>>(),
                (0..rows).collect::<Vec<_>>()
            );
            for (i, s) in seen {
                assert!(
                    (s as f64 - plain(&q, &vectors[i])).abs() < 1e-5,
                    "row {i} of {rows}"
                );
            }
        }
    }
}
