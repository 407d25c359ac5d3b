//! The cache's side of fleet mode, with an in-memory fleet: the exact tier answered by the
//! fleet (for the asking tenant only), inserts offered to it, entries from it applied.

use std::sync::Mutex;
use std::time::Duration;

use serde_json::{json, Map, Value};

use super::*;
use crate::embed::{BoxError, Embedder, TextEmbed};
use crate::key::{request_key, Served};
use crate::pending::Completed;
use crate::settings::{RouteSettings, Settings};
use crate::store::Record;
use crate::{Lookup, Metrics, Query, Reason};

/// Every text embeds to the same unit vector.
struct Flat;

impl TextEmbed for Flat {
    fn embed(&mut self, texts: &[String]) -> Result<Vec<Vec<f32>>, BoxError> {
        Ok(texts.iter().map(|_| vec![0.6, 0.8]).collect())
    }
}

/// A fleet that answers every exact lookup with the entry it holds, whatever was asked (the
/// cache must check what comes back), and records what it is offered.
#[derive(Default)]
struct Memory {
    held: Mutex<Option<Exchanged>>,
    offered: Mutex<Vec<Record>>,
}

impl Fleet for Memory {
    fn exact<'a>(
        &'a self,
        _route: &'a str,
        _tenant: &'a str,
        _exact: &'a Digest128,
    ) -> BoxFuture<'a, Option<Exchanged>> {
        Box::pin(async move { self.held.lock().unwrap().clone() })
    }

    fn inserted(&self, entry: &Arc<Entry>) {
        self.offered.lock().unwrap().push(entry.record.clone());
    }
}

const ROUTE: RouteSettings = RouteSettings {
    threshold: 0.85,
    ttl: Duration::from_secs(3600),
    max_entries: 100,
    guard: true,
    shared_across_tenants: false,
};

fn cache() -> (Arc<Cache>, Arc<Memory>) {
    let settings = Settings {
        model_dir: "/nonexistent".into(),
        model_file: "flat.onnx".into(),
        onnxruntime: "/nonexistent".into(),
        snapshot_dir: None,
        snapshot_interval: Duration::from_secs(3600),
        embed_threads: 1,
        embed_intra_threads: 1,
        embed_spin: false,
        ann_ef_search: 32,
        embed_timeout: Duration::from_secs(5),
    };
    let embedder = Embedder::start(1, Duration::from_secs(5), || {
        Ok(Box::new(Flat) as Box<dyn TextEmbed>)
    })
    .unwrap();
    let cache = Cache::with_embedder(settings, Metrics::unregistered(), embedder);
    let fleet = Arc::new(Memory::default());
    assert!(cache.set_fleet(fleet.clone()));
    (cache, fleet)
}

fn body(problem: &str) -> Map<String, Value> {
    json!({"model": "m", "messages": [{"role": "user", "content": problem}]})
        .as_object()
        .unwrap()
        .clone()
}

/// What another replica stored for `tenant` asking `problem`.
fn stored_by_tenant(tenant: &str, problem: &str, expires: u64) -> Exchanged {
    let key = request_key("r", &Served::default(), &body(problem), tenant).unwrap();
    Exchanged {
        record: Record {
            route: "r".into(),
            tenant: tenant.into(),
            partition: hex(&key.partition),
            exact: hex(&key.exact),
            problem: problem.into(),
            reasoning: "because".into(),
            answer: "4".into(),
            model: "m".into(),
            usage: None,
            created: now_unix(),
            expires,
        },
        vector: vec![0.6, 0.8],
    }
}

async fn ask(cache: &Cache, problem: &str, tenant: &str) -> Lookup {
    let no_headers = |_: &str| None;
    cache
        .lookup(&Query {
            route: "r",
            served: Served::default(),
            settings: &ROUTE,
            body: &body(problem),
            tenant: Some(tenant),
            header: &no_headers,
        })
        .await
}

#[tokio::test]
async fn the_fleet_answers_the_exact_tier_and_the_entry_is_kept_here() {
    let (cache, fleet) = cache();
    let q = "What is 2 + 2?";
    *fleet.held.lock().unwrap() = Some(stored_by_tenant("ta", q, now_unix() + 60));
    match ask(&cache, q, "ta").await {
        Lookup::Hit { entry, reason, .. } => {
            assert_eq!(reason, Reason::Exact);
            assert_eq!(entry.record.answer, "4");
        }
        other => panic!("expected a hit from the fleet, got {other:?}"),
    }
    // Stored locally in the background: found without the fleet from then on.
    *fleet.held.lock().unwrap() = None;
    for _ in 0..200 {
        if cache.store.sizes().0 == 1 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert!(matches!(ask(&cache, q, "ta").await, Lookup::Hit { .. }));
}

#[tokio::test]
async fn another_tenants_or_an_expired_fleet_entry_is_not_served() {
    let (cache, fleet) = cache();
    let q = "What is 2 + 2?";
    *fleet.held.lock().unwrap() = Some(stored_by_tenant("ta", q, now_unix() + 60));
    assert!(matches!(ask(&cache, q, "tb").await, Lookup::Miss { .. }));
    *fleet.held.lock().unwrap() = Some(stored_by_tenant("tb", q, now_unix() - 1));
    assert!(matches!(ask(&cache, q, "tb").await, Lookup::Miss { .. }));
    assert_eq!(cache.store.sizes().0, 0);
}

#[tokio::test]
async fn a_stored_response_is_offered_to_the_fleet_once() {
    let (cache, fleet) = cache();
    let Lookup::Miss { pending, .. } = ask(&cache, "What is 3 + 3?", "ta").await else {
        panic!("expected a miss");
    };
    let done = Completed {
        reasoning: "3 and 3".into(),
        answer: "6".into(),
        model: "m".into(),
        usage: None,
    };
    cache.insert(pending, done);
    for _ in 0..200 {
        if !fleet.offered.lock().unwrap().is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let offered = fleet.offered.lock().unwrap().clone();
    assert_eq!(offered.len(), 1);
    assert_eq!(offered[0].answer, "6");
    assert_eq!(offered[0].tenant, "ta");
    // What came from the fleet is not offered back to it.
    cache.apply(
        stored_by_tenant("tc", "What is 5 + 5?", now_unix() + 60),
        100,
    );
    assert_eq!(fleet.offered.lock().unwrap().len(), 1);
}

#[test]
fn apply_keeps_the_newer_entry_and_refuses_what_cannot_be_compared() {
    let (cache, _) = cache();
    let mut e = stored_by_tenant("ta", "Q", now_unix() + 60);
    assert_eq!(cache.apply(e.clone(), 100), Applied::Stored);
    assert_eq!(cache.apply(e.clone(), 100), Applied::Known);
    e.record.created += 1;
    e.record.answer = "newer".into();
    assert_eq!(cache.apply(e.clone(), 100), Applied::Stored);
    assert_eq!(cache.store.sizes().0, 1);
    let mut bad = e.clone();
    bad.vector = vec![f32::NAN, 1.0];
    assert_eq!(cache.apply(bad, 100), Applied::Refused);
    let mut bad = e.clone();
    bad.record.exact = "zz".into();
    assert_eq!(cache.apply(bad, 100), Applied::Refused);
    let mut old = e;
    old.record.expires = now_unix() - 1;
    assert_eq!(cache.apply(old, 100), Applied::Refused);
}

#[test]
fn vectors_round_trip_and_damaged_bytes_are_refused() {
    let v = vec![0.25f32, -1.5, 3.0];
    assert_eq!(decode_vector(&encode_vector(&v)), Some(v));
    assert_eq!(decode_vector(&[1, 2, 3]), None);
    assert_eq!(decode_vector(&[]), None);
}

#[test]
fn a_bulk_load_skips_what_is_known_and_is_searchable() {
    let (cache, _) = cache();
    let a = stored_by_tenant("ta", "Q1", now_unix() + 60);
    let b = stored_by_tenant("ta", "Q2", now_unix() + 60);
    assert_eq!(cache.apply(a.clone(), 100), Applied::Stored);
    assert_eq!(cache.load_exchanged(vec![a, b.clone()]), 1);
    cache.index_loaded();
    assert_eq!(cache.store.sizes().0, 2);
    let exact = unhex(&b.record.exact).unwrap();
    assert!(cache.store.exact(&exact, now_unix()).is_some());
}
