//! A lookup: tenant → bypass headers → key (tenant, partition, problem) → exact tier (same
//! problem text, spacing aside; in a fleet, then the fleet's store) → embedding (dedicated
//! threads, bounded wait) → nearest entries of the partition (HNSW or an exact scan) → for each,
//! best first: the guard's quantity checks (numbers, units) → the pair check (a surface repeat
//! at any similarity above [`SURFACE_FLOOR`]; else the threshold and the learned score). Every
//! verdict carries its [`Reason`].

use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{Map, Value};

use crate::cache::Cache;
use crate::embed::EmbedError;
use crate::guard::{self, Reject};
use crate::key::{self, Digest128};
use crate::metrics::{Candidacy, LookupResult};
use crate::pair::{self, Verdict};
use crate::pending::Pending;
use crate::settings::RouteSettings;
use crate::store::{Candidate, Entry};
use crate::util::now_unix;

/// Candidates examined per lookup.
const CANDIDATES: usize = 8;
/// Candidates less similar than this are not compared at all, not even as a surface repeat (a
/// typo or two moves MiniLM's vector, but not this far).
pub const SURFACE_FLOOR: f32 = 0.5;
/// How long a hit is remembered for the suspect-hit signal.
const SUSPECT_WINDOW: Duration = Duration::from_secs(600);
/// Hits remembered for the suspect-hit signal.
const SUSPECT_MEMORY: usize = 10_000;

/// One request as the cache sees it.
#[derive(Clone, Copy)]
pub struct Query<'a> {
    /// Route name (partitions entries; the metrics' `route` label).
    pub route: &'a str,
    /// Which upstream, variant and model would answer (part of the partition).
    pub served: key::Served<'a>,
    /// The route's cache settings.
    pub settings: &'a RouteSettings,
    /// The chat request body.
    pub body: &'a Map<String, Value>,
    /// The request's tenant (`None`: no credentials; see the gateway's tenant derivation).
    pub tenant: Option<&'a str>,
    /// Reads a request header (lower-case name).
    pub header: &'a (dyn Fn(&str) -> Option<String> + Sync),
}

/// What to do with a request.
#[derive(Debug)]
pub enum Lookup {
    /// Replay this entry.
    Hit {
        /// The entry.
        entry: Arc<Entry>,
        /// Its similarity (1 for the exact tier).
        similarity: f32,
        /// Why it was served.
        reason: Reason,
    },
    /// Go upstream; store the response if it qualifies.
    Miss {
        /// What to store under.
        pending: Pending,
        /// Best candidate's similarity, if there was one.
        best: Option<f32>,
        /// Why the best candidate was refused, when one was.
        rejected: Option<Reason>,
    },
    /// The client asked to skip the cache (`store`: whether the fresh answer may be stored).
    Bypass(Option<Pending>),
    /// The request cannot be answered from a cache (tools, n > 1, no user message last, …).
    Uncacheable,
    /// The request has no credentials and the route is not shared across tenants: it is
    /// neither looked up nor stored (keyless clients would otherwise share one partition).
    NoCredentials,
}

/// When a lookup's stages ran, each `(start, end)`; a stage the lookup never reached is `None`.
#[derive(Debug, Clone, Copy, Default)]
pub struct Stages {
    /// Waiting for and computing the problem's embedding.
    pub embed: Option<(Instant, Instant)>,
    /// The nearest entries of the partition.
    pub search: Option<(Instant, Instant)>,
    /// The quantity checks and the pair check over the candidates.
    pub checks: Option<(Instant, Instant)>,
}

/// Why a lookup served an entry or refused a candidate (`x-reasoning-cache-reason`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Reason {
    /// The same problem text, spacing aside (the exact tier).
    Exact,
    /// The same words but for typos, case, spacing, punctuation or a rotated clause.
    Surface,
    /// The pair check's learned score passed.
    Pair {
        /// The score (0..1).
        score: f32,
    },
    /// The route runs without the guard: the threshold alone decided.
    Unguarded,
    /// No candidate was compared: the problem could not be embedded in time (the embedder was
    /// busy with other lookups, timed out or failed), so the request went on as a miss.
    Unembedded(EmbedError),
    /// A candidate was refused by a check.
    Refused {
        /// Which check.
        check: Reject,
        /// The learned score, for the pair check.
        score: Option<f32>,
        /// The refused candidate's similarity.
        similarity: f32,
    },
}

impl Reason {
    /// The header value: the check's name, then its figures (`pair; score=0.31; similarity=0.912`).
    pub fn header(&self) -> String {
        match *self {
            Reason::Exact => "exact".into(),
            Reason::Surface => "surface".into(),
            Reason::Pair { score } => format!("pair; score={score:.3}"),
            Reason::Unguarded => "threshold".into(),
            Reason::Unembedded(e) => match e {
                EmbedError::Busy => "embedding; busy".into(),
                EmbedError::Timeout => "embedding; timeout".into(),
                EmbedError::Failed => "embedding; failed".into(),
            },
            Reason::Refused {
                check,
                score,
                similarity,
            } => match score {
                Some(s) => format!(
                    "{}; score={s:.3}; similarity={similarity:.3}",
                    check.label()
                ),
                None => format!("{}; similarity={similarity:.3}", check.label()),
            },
        }
    }

    /// The refusing check, if this is a refusal.
    pub fn refused(&self) -> Option<Reject> {
        match self {
            Reason::Refused { check, .. } => Some(*check),
            _ => None,
        }
    }
}

impl Lookup {
    /// The `x-reasoning-cache` header value.
    pub fn header(&self) -> &'static str {
        match self {
            Lookup::Hit { .. } => "hit",
            Lookup::Miss { .. } => "miss",
            Lookup::Bypass(_) | Lookup::Uncacheable | Lookup::NoCredentials => "bypass",
        }
    }
}

impl Cache {
    /// Looks a chat request up (records `cache_requests_total` and the lookup's duration).
    pub async fn lookup(&self, q: &Query<'_>) -> Lookup {
        self.lookup_staged(q).await.0
    }

    /// [`Cache::lookup`], and when each of its stages ran (for a trace's child spans).
    pub async fn lookup_staged(&self, q: &Query<'_>) -> (Lookup, Stages) {
        let started = Instant::now();
        let mut embed_error = None;
        let mut stages = Stages::default();
        let result = self.lookup_inner(q, &mut embed_error, &mut stages).await;
        let label = match &result {
            Lookup::Hit { .. } => LookupResult::Hit,
            Lookup::Miss { .. } if embed_error == Some(EmbedError::Busy) => LookupResult::Shed,
            Lookup::Miss { .. } if embed_error.is_some() => LookupResult::Error,
            Lookup::Miss { .. } => LookupResult::Miss,
            Lookup::Bypass(_) => LookupResult::Bypass,
            Lookup::Uncacheable => LookupResult::Uncacheable,
            Lookup::NoCredentials => LookupResult::NoCredentials,
        };
        self.metrics.lookup(q.route, label, started.elapsed());
        (result, stages)
    }

    /// `embed_error` is set when the embedder was busy, failed or timed out (the miss went on
    /// without it).
    async fn lookup_inner(
        &self,
        q: &Query<'_>,
        embed_error: &mut Option<EmbedError>,
        stages: &mut Stages,
    ) -> Lookup {
        let Query {
            route,
            served,
            settings,
            body,
            tenant,
            header,
        } = *q;
        let shared = settings.shared_across_tenants;
        let tenant = match tenant {
            _ if shared => "shared",
            Some(t) => t,
            None => return Lookup::NoCredentials,
        };
        let Ok(key) = key::request_key(route, &served, body, tenant) else {
            return Lookup::Uncacheable;
        };
        let pending = Pending {
            route: route.to_string(),
            key,
            vector: None,
            settings: *settings,
            keep_existing: false,
        };
        let cache_control = header("cache-control")
            .unwrap_or_default()
            .to_ascii_lowercase();
        let bypass = cache_control.contains("no-cache")
            || cache_control.contains("no-store")
            || header("x-reasoning-cache").is_some_and(|v| v.eq_ignore_ascii_case("bypass"));
        if bypass {
            if self.was_recent_hit(&pending.key.exact) {
                self.metrics.suspect_hit(route);
            }
            let store = !cache_control.contains("no-store");
            // One tenant asking for a fresh answer must not replace what every tenant of a
            // shared partition is served.
            let pending = Pending {
                keep_existing: shared,
                ..pending
            };
            return Lookup::Bypass(store.then_some(pending));
        }
        let now = now_unix();
        if let Some(entry) = self.store.exact(&pending.key.exact, now) {
            self.metrics.similarity(route, Candidacy::Hit, 1.0);
            self.remember_hit(pending.key.exact);
            return Lookup::Hit {
                entry,
                similarity: 1.0,
                reason: Reason::Exact,
            };
        }
        // In a fleet, another replica may have stored this very problem a moment ago (before
        // its stream of inserts reaches this one): the fleet answers the exact tier too.
        if let Some(entry) = self
            .fleet_exact(route, &pending.key, settings.max_entries)
            .await
        {
            self.metrics.similarity(route, Candidacy::Hit, 1.0);
            self.remember_hit(pending.key.exact);
            return Lookup::Hit {
                entry,
                similarity: 1.0,
                reason: Reason::Exact,
            };
        }
        if !self.store.has_entries(&pending.key.partition) {
            // Nothing to compare with: no embedding on the request path. If the response is
            // stored, the insert embeds it in the background; if not, it is never embedded.
            return Lookup::Miss {
                pending,
                best: None,
                rejected: None,
            };
        }
        let embed_started = Instant::now();
        let embedded = self.embedder.embed(&pending.key.problem).await;
        stages.embed = Some((embed_started, Instant::now()));
        let vector = match embedded {
            Ok(v) => v,
            Err(e) => {
                tracing::debug!(error = %e, "Cache lookup without an embedding.");
                *embed_error = Some(e);
                return Lookup::Miss {
                    pending,
                    best: None,
                    rejected: Some(Reason::Unembedded(e)),
                };
            }
        };
        self.metrics.embedding(route, embed_started.elapsed());
        let search_started = Instant::now();
        let candidates = self
            .store
            .search(&vector, &pending.key.partition, now, CANDIDATES);
        let checks_started = Instant::now();
        let decision = decide(&pending.key.problem, &candidates, settings);
        stages.search = Some((search_started, checks_started));
        stages.checks = Some((checks_started, Instant::now()));
        let best = candidates.first().map(|c| c.similarity);
        let candidacy = match &decision {
            Decision::Hit(..) => Candidacy::Hit,
            Decision::Rejected(_) => Candidacy::Rejected,
            Decision::Below => Candidacy::BelowThreshold,
        };
        if let Some(b) = best {
            self.metrics.similarity(route, candidacy, b);
        }
        match decision {
            Decision::Hit(c, reason) => {
                self.remember_hit(pending.key.exact);
                Lookup::Hit {
                    entry: c.entry.clone(),
                    similarity: c.similarity,
                    reason,
                }
            }
            Decision::Rejected(reason) => {
                if let Some(check) = reason.refused() {
                    self.metrics.guard_rejection(route, check);
                }
                Lookup::Miss {
                    pending: Pending {
                        vector: Some(vector),
                        ..pending
                    },
                    best,
                    rejected: Some(reason),
                }
            }
            Decision::Below => Lookup::Miss {
                pending: Pending {
                    vector: Some(vector),
                    ..pending
                },
                best,
                rejected: None,
            },
        }
    }

    fn remember_hit(&self, exact: Digest128) {
        let Ok(mut g) = self.recent_hits.lock() else {
            return;
        };
        let (map, order) = &mut *g;
        if map.insert(exact, Instant::now()).is_none() {
            order.push_back(exact);
        }
        while order.len() > SUSPECT_MEMORY {
            if let Some(old) = order.pop_front() {
                map.remove(&old);
            }
        }
    }

    fn was_recent_hit(&self, exact: &Digest128) -> bool {
        let Ok(mut g) = self.recent_hits.lock() else {
            return false;
        };
        match g.0.get(exact) {
            Some(t) if t.elapsed() <= SUSPECT_WINDOW => {
                g.0.remove(exact);
                true
            }
            _ => false,
        }
    }
}

enum Decision<'a> {
    Hit(&'a Candidate, Reason),
    Rejected(Reason),
    Below,
}

/// The best candidate that passes every check, or why the best one examined was refused.
fn decide<'a>(
    problem: &str,
    candidates: &'a [Candidate],
    settings: &RouteSettings,
) -> Decision<'a> {
    let mut rejected = None;
    let (mut features, mut words) = (None, None);
    for c in candidates {
        if c.similarity < SURFACE_FLOOR {
            break;
        }
        if !settings.guard {
            if c.similarity < settings.threshold {
                break;
            }
            return Decision::Hit(c, Reason::Unguarded);
        }
        let f = features.get_or_insert_with(|| guard::features(problem));
        if let Err(check) = guard::check(f, &c.entry.features) {
            if c.similarity >= settings.threshold {
                rejected.get_or_insert(Reason::Refused {
                    check,
                    score: None,
                    similarity: c.similarity,
                });
            }
            continue;
        }
        match pair::judge(
            words.get_or_insert_with(|| pair::words(problem)),
            &c.entry.record.problem,
            c.similarity,
            settings.threshold,
        ) {
            Some(Verdict::Surface) => return Decision::Hit(c, Reason::Surface),
            Some(Verdict::Same { score }) => return Decision::Hit(c, Reason::Pair { score }),
            Some(Verdict::Different { score }) => {
                rejected.get_or_insert(Reason::Refused {
                    check: Reject::Pair,
                    score: Some(score),
                    similarity: c.similarity,
                });
            }
            None => {}
        }
    }
    match rejected {
        Some(r) => Decision::Rejected(r),
        None => Decision::Below,
    }
}
