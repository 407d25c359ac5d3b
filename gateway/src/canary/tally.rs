//! Outcome counts in a mergeable form: what replicas add up in Redis (fleet mode) so the
//! rollback comparison runs on the whole fleet's traffic.
//!
//! Counts add up across replicas, but a p95 of p95s does not: latency is kept as a histogram
//! of fixed log-spaced buckets, eight per doubling. Bucket `i` (≥ 1) holds latencies in
//! `(2^((i-1)/8), 2^(i/8)]` ms; bucket 0 everything up to 1 ms. The p95 read from a merged
//! histogram is the upper edge of the bucket holding the nearest-rank 95th percentile: never
//! below the exact value, and at most 9.1 % (2^(1/8)) above it, or 1 ms for sub-millisecond
//! latencies. Both sides of the comparison are measured the same way.

use std::collections::BTreeMap;
use std::time::Duration;

use super::{Outcome, Rates};

/// Buckets per doubling of latency.
const PER_DOUBLING: f64 = 8.0;
/// Highest bucket: 2^(255/8) ms is about 70 hours, far beyond any request.
const MAX_BUCKET: u16 = 255;

/// Outcome counts of one (route, variant, time bucket), or their sum over replicas.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Tally {
    /// Outcomes counted.
    pub requests: u64,
    /// Outcomes that were not ok.
    pub errors: u64,
    /// Outcomes with a verification failure.
    pub verification_failures: u64,
    /// Outcomes with a step timeout.
    pub step_timeouts: u64,
    /// Outcomes per latency bucket (see the module doc).
    pub latency: BTreeMap<u16, u64>,
}

/// The latency bucket `latency` falls in.
pub fn bucket_of(latency: Duration) -> u16 {
    let ms = latency.as_secs_f64() * 1000.0;
    if ms <= 1.0 {
        return 0;
    }
    // The small epsilon keeps an exact edge (2^(i/8)) in bucket i despite rounding.
    let i = (PER_DOUBLING * ms.log2() - 1e-9).ceil();
    (i.max(0.0) as u64).min(u64::from(MAX_BUCKET)) as u16
}

/// The upper edge of latency bucket `i`, in seconds.
pub fn bucket_edge(i: u16) -> f64 {
    2f64.powf(f64::from(i) / PER_DOUBLING) / 1000.0
}

impl Tally {
    /// Counts one outcome.
    pub fn add(&mut self, o: &Outcome) {
        self.requests += 1;
        self.errors += u64::from(!o.ok);
        self.verification_failures += u64::from(o.verification_failed);
        self.step_timeouts += u64::from(o.step_timeout);
        *self.latency.entry(bucket_of(o.latency)).or_default() += 1;
    }

    /// Adds another tally (another replica's, another time bucket's).
    pub fn merge(&mut self, other: &Tally) {
        self.requests += other.requests;
        self.errors += other.errors;
        self.verification_failures += other.verification_failures;
        self.step_timeouts += other.step_timeouts;
        for (b, n) in &other.latency {
            *self.latency.entry(*b).or_default() += n;
        }
    }

    /// The counts as Redis hash fields (`n`, `err`, `vf`, `st`, `l{bucket}`), zeros left out.
    pub fn fields(&self) -> Vec<(String, u64)> {
        let mut out: Vec<(String, u64)> = [
            ("n", self.requests),
            ("err", self.errors),
            ("vf", self.verification_failures),
            ("st", self.step_timeouts),
        ]
        .into_iter()
        .filter(|(_, v)| *v > 0)
        .map(|(k, v)| (k.to_string(), v))
        .collect();
        out.extend(self.latency.iter().map(|(b, n)| (format!("l{b}"), *n)));
        out
    }

    /// Reads the fields [`Tally::fields`] writes; anything else (or a value that is not a
    /// count) is ignored, so a key written by a newer replica does not poison the sum.
    pub fn from_fields<'a>(fields: impl IntoIterator<Item = (&'a str, &'a str)>) -> Tally {
        let mut t = Tally::default();
        for (k, v) in fields {
            let Ok(v) = v.parse::<u64>() else { continue };
            match k {
                "n" => t.requests += v,
                "err" => t.errors += v,
                "vf" => t.verification_failures += v,
                "st" => t.step_timeouts += v,
                _ => {
                    if let Some(b) = k.strip_prefix('l').and_then(|b| b.parse::<u16>().ok()) {
                        if b <= MAX_BUCKET {
                            *t.latency.entry(b).or_default() += v;
                        }
                    }
                }
            }
        }
        t
    }

    /// The rates [`super::compare`] reads; p95 is a bucket's upper edge (see the module doc).
    pub fn rates(&self) -> Rates {
        let n = self.requests;
        let share = |k: u64| if n == 0 { 0.0 } else { k as f64 / n as f64 };
        // Nearest rank, as for the local windows; over the histogram's own total, in case a
        // partial write left the counts a little apart.
        let total: u64 = self.latency.values().sum();
        let rank = ((total as f64 * 0.95).ceil() as u64).clamp(1, total.max(1));
        let mut seen = 0;
        let mut p95 = 0.0;
        for (b, count) in &self.latency {
            seen += count;
            if seen >= rank {
                p95 = bucket_edge(*b);
                break;
            }
        }
        Rates {
            requests: usize::try_from(n).unwrap_or(usize::MAX),
            error_rate: share(self.errors),
            p95,
            verification_failure_rate: share(self.verification_failures),
            step_timeout_rate: share(self.step_timeouts),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Instant;

    fn outcome(ok: bool, ms: u64) -> Outcome {
        Outcome {
            at: Instant::now(),
            ok,
            latency: Duration::from_millis(ms),
            verification_failed: !ok,
            step_timeout: false,
        }
    }

    #[test]
    fn buckets_are_an_eighth_of_a_doubling_wide() {
        assert_eq!(bucket_of(Duration::ZERO), 0);
        assert_eq!(bucket_of(Duration::from_micros(900)), 0);
        assert_eq!(bucket_of(Duration::from_millis(2)), 8);
        assert_eq!(bucket_of(Duration::from_millis(1024)), 80);
        for ms in [3u64, 17, 95, 100, 250, 999, 12_345, 600_000] {
            let b = bucket_of(Duration::from_millis(ms));
            let (lo, hi) = (bucket_edge(b - 1) * 1000.0, bucket_edge(b) * 1000.0);
            assert!(lo < ms as f64 && ms as f64 <= hi, "{ms} ms in ({lo}, {hi}]");
            assert!(hi / (ms as f64) < 1.0906, "{ms} ms: edge {hi}");
        }
        assert_eq!(bucket_of(Duration::from_secs(1 << 40)), MAX_BUCKET);
    }

    #[test]
    fn merged_tallies_give_the_rates_of_all_outcomes_and_a_p95_within_a_bucket() {
        // Two replicas' halves of 1..=100 ms, every tenth one failing.
        let (mut a, mut b) = (Tally::default(), Tally::default());
        for ms in 1..=100u64 {
            let t = if ms % 2 == 0 { &mut a } else { &mut b };
            t.add(&outcome(ms % 10 != 0, ms));
        }
        let mut sum = Tally::default();
        sum.merge(&a);
        sum.merge(&b);
        let r = sum.rates();
        assert_eq!(r.requests, 100);
        assert!((r.error_rate - 0.1).abs() < 1e-9);
        assert!((r.verification_failure_rate - 0.1).abs() < 1e-9);
        // Exact nearest-rank p95 is 95 ms: the bucket's edge is at most 9.1 % above it.
        assert!(r.p95 >= 0.095 && r.p95 < 0.095 * 1.0906, "{}", r.p95);
    }

    #[test]
    fn fields_round_trip_and_foreign_fields_are_ignored() {
        let mut t = Tally::default();
        t.add(&outcome(false, 40));
        t.add(&outcome(true, 40));
        let fields = t.fields();
        let mut read: Vec<(&str, &str)> = Vec::new();
        let text: Vec<(String, String)> = fields
            .iter()
            .map(|(k, v)| (k.clone(), v.to_string()))
            .collect();
        read.extend(text.iter().map(|(k, v)| (k.as_str(), v.as_str())));
        read.push(("future_field", "7"));
        read.push(("n", "not a number"));
        read.push(("l9999", "3"));
        assert_eq!(Tally::from_fields(read), t);
        assert_eq!(Tally::default().rates().p95, 0.0);
    }
}
