//! The cache's metrics, registered on the registry the embedding application gives it (names
//! under its prefix, e.g. `reasoning_gateway_cache_requests_total`). Each is recorded through a
//! method whose label values are the route name and a fixed enum, so a label cannot be swapped
//! or invented from request text.

use std::time::Duration;

use prometheus::{HistogramOpts, HistogramVec, IntCounterVec, IntGaugeVec, Opts, Registry};

use crate::guard::Reject;
use crate::store::Removal;

/// Similarity buckets: where the threshold (0.85 by default) is decided, finely.
const SIMILARITY_BUCKETS: &[f64] = &[
    0.5, 0.6, 0.7, 0.75, 0.8, 0.85, 0.875, 0.9, 0.925, 0.95, 0.975, 0.99, 1.0,
];
/// Lookup and embedding latency buckets (seconds): from the exact tier to a slow embedding.
const FAST_BUCKETS: &[f64] = &[
    0.0001, 0.00025, 0.0005, 0.001, 0.002, 0.004, 0.008, 0.012, 0.02, 0.05, 0.1, 0.25, 1.0,
];

/// The result of a lookup (label `result`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LookupResult {
    /// Replayed.
    Hit,
    /// Went upstream.
    Miss,
    /// The client asked to skip the cache.
    Bypass,
    /// Tools, n > 1, no user message last, …
    Uncacheable,
    /// No API key on a route not shared across tenants.
    NoCredentials,
    /// The embedding failed or timed out; served as a miss.
    Error,
    /// The embedder already had a lookup waiting per thread; served as a miss at once.
    Shed,
}

impl LookupResult {
    /// The label value.
    pub fn label(self) -> &'static str {
        match self {
            LookupResult::Hit => "hit",
            LookupResult::Miss => "miss",
            LookupResult::Bypass => "bypass",
            LookupResult::Uncacheable => "uncacheable",
            LookupResult::NoCredentials => "no_credentials",
            LookupResult::Error => "error",
            LookupResult::Shed => "shed",
        }
    }
}

/// What became of the best candidate of a lookup (label `outcome` of `cache_similarity`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Candidacy {
    /// Served.
    Hit,
    /// Above the threshold, refused by the guard.
    Rejected,
    /// Below the threshold.
    BelowThreshold,
}

impl Candidacy {
    /// The label value.
    pub fn label(self) -> &'static str {
        match self {
            Candidacy::Hit => "hit",
            Candidacy::Rejected => "rejected",
            Candidacy::BelowThreshold => "below_threshold",
        }
    }
}

/// The cache's metric families (cheap to clone: each is a shared handle).
#[derive(Clone)]
pub struct Metrics {
    requests_total: IntCounterVec,
    similarity: HistogramVec,
    entries: IntGaugeVec,
    lookup_duration_seconds: HistogramVec,
    embedding_duration_seconds: HistogramVec,
    guard_rejections_total: IntCounterVec,
    inserts_total: IntCounterVec,
    evictions_total: IntCounterVec,
    suspect_hits_total: IntCounterVec,
    shared_refreshes_ignored_total: IntCounterVec,
}

impl Metrics {
    /// Registers every cache metric on `registry` under `prefix` (no trailing underscore).
    pub fn register(registry: &Registry, prefix: &str) -> prometheus::Result<Self> {
        let counter = |name: &str, help: &str, labels: &[&str]| {
            let c = IntCounterVec::new(Opts::new(name, help).namespace(prefix), labels)?;
            registry.register(Box::new(c.clone()))?;
            Ok::<_, prometheus::Error>(c)
        };
        let histogram = |name: &str, help: &str, labels: &[&str], buckets: &[f64]| {
            let opts = HistogramOpts::new(name, help)
                .namespace(prefix)
                .buckets(buckets.to_vec());
            let h = HistogramVec::new(opts, labels)?;
            registry.register(Box::new(h.clone()))?;
            Ok::<_, prometheus::Error>(h)
        };
        let entries = IntGaugeVec::new(
            Opts::new("cache_entries", "Live reasoning-cache entries per route.").namespace(prefix),
            &["route"],
        )?;
        registry.register(Box::new(entries.clone()))?;
        Ok(Metrics {
            requests_total: counter(
                "cache_requests_total",
                "Reasoning-cache lookups by route and result: hit, miss, bypass (client asked), uncacheable (tools, n>1, no user message last), no_credentials (no API key on a route not shared across tenants: neither looked up nor stored), error (embedding failed or timed out; served as a miss).",
                &["route", "result"],
            )?,
            similarity: histogram(
                "cache_similarity",
                "Cosine similarity of the best cache candidate per lookup, by outcome: hit, rejected (guard), below_threshold.",
                &["route", "outcome"],
                SIMILARITY_BUCKETS,
            )?,
            entries,
            lookup_duration_seconds: histogram(
                "cache_lookup_duration_seconds",
                "Time for a whole cache lookup (exact tier, embedding, search, guard) by result.",
                &["route", "result"],
                FAST_BUCKETS,
            )?,
            embedding_duration_seconds: histogram(
                "cache_embedding_duration_seconds",
                "Time to embed one problem, queue wait included.",
                &["route"],
                FAST_BUCKETS,
            )?,
            guard_rejections_total: counter(
                "cache_guard_rejections_total",
                "Cache lookups whose best candidate a check refused, by check (number, unit: the guard's quantity checks; pair: the pair check's learned score).",
                &["route", "check"],
            )?,
            inserts_total: counter(
                "cache_inserts_total",
                "Complete, verified responses stored in the reasoning cache.",
                &["route"],
            )?,
            evictions_total: counter(
                "cache_evictions_total",
                "Reasoning-cache entries removed, by reason: expired, capacity, purge, replaced.",
                &["reason"],
            )?,
            suspect_hits_total: counter(
                "cache_suspect_hits_total",
                "Cache hits the same tenant re-asked within 10 minutes with the cache bypassed (Cache-Control: no-cache or x-reasoning-cache: bypass): likely wrong or unwanted replays.",
                &["route"],
            )?,
            shared_refreshes_ignored_total: counter(
                "cache_shared_refreshes_ignored_total",
                "Fresh answers (Cache-Control: no-cache or x-reasoning-cache: bypass) on a route shared across tenants, not stored because the partition already held a live entry for the problem: one tenant cannot replace what every tenant is served.",
                &["route"],
            )?,
        })
    }

    /// Metrics on a private registry nobody scrapes (tests and benchmarks).
    pub fn unregistered() -> Self {
        match Self::register(&Registry::new(), "unregistered") {
            Ok(m) => m,
            // Registering fixed, valid definitions on an empty registry cannot fail.
            Err(e) => unreachable!("cache metric definitions are valid: {e}"),
        }
    }

    /// One finished lookup.
    pub(crate) fn lookup(&self, route: &str, result: LookupResult, took: Duration) {
        self.requests_total
            .with_label_values(&[route, result.label()])
            .inc();
        self.lookup_duration_seconds
            .with_label_values(&[route, result.label()])
            .observe(took.as_secs_f64());
    }

    /// The best candidate's similarity and what became of it.
    pub(crate) fn similarity(&self, route: &str, candidacy: Candidacy, similarity: f32) {
        self.similarity
            .with_label_values(&[route, candidacy.label()])
            .observe(f64::from(similarity));
    }

    /// One embedding on the request path.
    pub(crate) fn embedding(&self, route: &str, took: Duration) {
        self.embedding_duration_seconds
            .with_label_values(&[route])
            .observe(took.as_secs_f64());
    }

    /// A lookup whose best candidate `check` refused.
    pub(crate) fn guard_rejection(&self, route: &str, check: Reject) {
        self.guard_rejections_total
            .with_label_values(&[route, check.label()])
            .inc();
    }

    /// A response stored.
    pub(crate) fn insert(&self, route: &str) {
        self.inserts_total.with_label_values(&[route]).inc();
    }

    /// Entries removed.
    pub(crate) fn removals(&self, removed: &[Removal]) {
        for r in removed {
            self.evictions_total.with_label_values(&[r.label()]).inc();
        }
    }

    /// `n` entries removed for one reason.
    pub(crate) fn removed(&self, reason: Removal, n: usize) {
        if n > 0 {
            self.evictions_total
                .with_label_values(&[reason.label()])
                .inc_by(n as u64);
        }
    }

    /// A hit asked again with the cache bypassed.
    pub(crate) fn suspect_hit(&self, route: &str) {
        self.suspect_hits_total.with_label_values(&[route]).inc();
    }

    /// A fresh answer not stored over a shared partition's live entry.
    pub(crate) fn shared_refresh_ignored(&self, route: &str) {
        self.shared_refreshes_ignored_total
            .with_label_values(&[route])
            .inc();
    }

    /// A route's live entries.
    pub(crate) fn entries(&self, route: &str, n: usize) {
        self.entries
            .with_label_values(&[route])
            .set(i64::try_from(n).unwrap_or(i64::MAX));
    }
}
