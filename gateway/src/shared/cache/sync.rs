//! Each replica's copy of the fleet's cache, kept in step on the fleet thread: load what Redis
//! holds (note its epoch and the stream's last id, SCAN the entry keys, load them with their
//! vectors), then tail the stream from the noted id on a connection of its own (`XREAD BLOCK`),
//! applying the other replicas' inserts and every purge. A gap: Redis's epoch is not the one
//! noted (it lost its data: restarted empty, flushed), or the stream no longer holds the last id
//! read (trimmed past it). Purges may have been missed then, so the replica drops its copy and
//! loads again: it never serves an entry the fleet purged. The epoch is checked after every
//! `XREAD`, the last id after every one that brought events and on reconnecting. On any error:
//! pause, reconnect, check, go on from the last id.

use std::collections::HashMap;
use std::sync::{Arc, Weak};
use std::time::Duration;

use reasoning_cache::fleet::Exchanged;
use reasoning_cache::Cache;
use redis::aio::ConnectionManager;
use redis::streams::{StreamId, StreamRangeReply, StreamReadReply};

use super::{parse, scan_page, FleetCache, Routes};
use crate::metrics::labels::SharedOp;
use crate::shared::HEALTH_EVERY;

/// Longest block of one `XREAD`: how long a stopped gateway may keep this loop alive.
const BLOCK: Duration = Duration::from_millis(500);
/// Stream entries read at once.
const BATCH: usize = 256;
/// The id before any stream entry (a stream that did not exist when the replica loaded).
const START: &str = "0-0";

/// Where this replica is in the fleet's data: Redis's epoch when it loaded, the last stream id
/// it applied.
#[derive(Clone)]
struct Place {
    epoch: String,
    id: String,
}

/// What one stream event asks of this replica.
enum Event {
    /// Store this entry (another replica's insert).
    Insert(Box<Exchanged>),
    /// Purge by route and/or tenant (`None`: any).
    Purge(Option<String>, Option<String>),
}

/// The loop; returns when the cache is gone.
pub(super) async fn run(cache: Weak<Cache>, routes: Routes, fleet: Arc<FleetCache>) {
    // `None`: load everything before tailing (at start, and after a gap).
    let mut last: Option<Place> = None;
    let mut conn: Option<ConnectionManager> = None;
    let mut failing = false;
    // Reconnected after an error: check the stream still holds `last` before tailing.
    let mut verify = false;
    loop {
        let Some(cache) = cache.upgrade() else { return };
        if !fleet.shared.is_up() {
            verify = true;
            drop(cache);
            tokio::time::sleep(HEALTH_EVERY).await;
            continue;
        }
        if conn.is_none() {
            let deadline = BLOCK + fleet.shared.config.timeout + Duration::from_secs(1);
            conn = fleet.shared.dedicated(deadline).await.ok();
        }
        let step = match (conn.as_mut(), &last) {
            (None, _) => Err("no connection".to_string()),
            (Some(c), None) => load(&routes, &fleet, &cache, c).await.map(Some),
            (Some(c), Some(place)) if verify => holds(&fleet, c, place).await.map(|held| {
                verify = false;
                held.then(|| place.clone())
            }),
            (Some(c), Some(place)) => tail(&routes, &fleet, &cache, c, place).await,
        };
        match step {
            Ok(next) => {
                if last.is_some() && next.is_none() {
                    // A gap: the copy here may hold entries purged meanwhile.
                    let cache2 = cache.clone();
                    let dropped = tokio::task::spawn_blocking(move || cache2.purge(None, None))
                        .await
                        .unwrap_or(0);
                    tracing::info!(dropped, "Reasoning cache: this replica's copy dropped (the fleet's stream has a gap, purges may be missing); loading the fleet's entries.");
                }
                if failing {
                    tracing::info!("The reasoning cache follows the fleet again.");
                    failing = false;
                }
                last = next;
            }
            Err(e) => {
                fleet.shared.count_error(SharedOp::CacheSync);
                if !failing {
                    tracing::warn!(error = %e, "The reasoning cache lost the fleet's stream; retrying (this replica keeps its own entries meanwhile).");
                    failing = true;
                }
                conn = None;
                verify = true;
                drop(cache);
                tokio::time::sleep(HEALTH_EVERY).await;
            }
        }
    }
}

/// Loads every entry Redis holds; returns Redis's epoch and the stream id to tail from.
async fn load(
    routes: &Routes,
    fleet: &FleetCache,
    cache: &Arc<Cache>,
    c: &mut ConnectionManager,
) -> Result<Place, String> {
    // Random: the same replica reloading within one second must not write the value back.
    let fresh = format!("{:032x}", rand::random::<u128>());
    let (epoch,): (String,) = redis::pipe()
        .cmd("SET")
        .arg(&fleet.epoch)
        .arg(&fresh)
        .arg("NX")
        .ignore()
        .cmd("GET")
        .arg(&fleet.epoch)
        .query_async(c)
        .await
        .map_err(|e| e.to_string())?;
    let newest: StreamRangeReply = redis::cmd("XREVRANGE")
        .arg(&fleet.log)
        .arg("+")
        .arg("-")
        .arg("COUNT")
        .arg(1)
        .query_async(c)
        .await
        .map_err(|e| e.to_string())?;
    let from = newest
        .ids
        .first()
        .map_or_else(|| START.to_string(), |s| s.id.clone());
    let pattern = fleet.pattern(None, None);
    let (mut cursor, mut stored, mut seen) = (0u64, 0usize, 0usize);
    loop {
        let (next, keys) = scan_page(c, cursor, &pattern)
            .await
            .map_err(|e| e.to_string())?;
        let routes = routes();
        // A route this replica does not cache (another config) is not stored here.
        let entries: Vec<Exchanged> = fetch(c, &keys)
            .await?
            .into_iter()
            .flatten()
            .filter(|e| routes.contains_key(&e.record.route))
            .collect();
        seen += entries.len();
        let cache2 = cache.clone();
        stored += tokio::task::spawn_blocking(move || cache2.load_exchanged(entries))
            .await
            .unwrap_or(0);
        if next == 0 {
            break;
        }
        cursor = next;
    }
    if stored > 0 {
        let cache2 = cache.clone();
        let _ = tokio::task::spawn_blocking(move || cache2.index_loaded()).await;
    }
    tracing::info!(
        entries = seen,
        new = stored,
        "Reasoning cache loaded from the fleet."
    );
    Ok(Place { epoch, id: from })
}

/// One `XREAD` from `place`; where to go on from (`None`: a gap, load again).
async fn tail(
    routes: &Routes,
    fleet: &FleetCache,
    cache: &Arc<Cache>,
    c: &mut ConnectionManager,
    place: &Place,
) -> Result<Option<Place>, String> {
    let last = place.id.as_str();
    let reply: Option<StreamReadReply> = redis::cmd("XREAD")
        .arg("COUNT")
        .arg(BATCH)
        .arg("BLOCK")
        .arg(BLOCK.as_millis() as u64)
        .arg("STREAMS")
        .arg(&fleet.log)
        .arg(last)
        .query_async(c)
        .await
        .map_err(|e| e.to_string())?;
    let ids: Vec<StreamId> = reply
        .map(|r| r.keys.into_iter().flat_map(|k| k.ids).collect())
        .unwrap_or_default();
    let Some(newest) = ids.last().map(|s| s.id.clone()) else {
        // Nothing new; but Redis may have restarted empty meanwhile (a reconnect that no
        // command saw fail), with a purge that will never come through this stream.
        return Ok(same_epoch(fleet, c, place).await?.then(|| place.clone()));
    };
    // Trimming drops the oldest entries first: if `last` is still there, nothing between it
    // and what was just read is missing.
    if !holds(fleet, c, place).await? {
        return Ok(None);
    }
    let events = events(fleet, c, &ids).await?;
    if !events.is_empty() {
        let routes = routes();
        let cache = cache.clone();
        let _ = tokio::task::spawn_blocking(move || apply(&cache, events, &routes)).await;
    }
    Ok(Some(Place {
        epoch: place.epoch.clone(),
        id: newest,
    }))
}

/// Whether Redis still has the data this replica loaded from (its epoch).
async fn same_epoch(
    fleet: &FleetCache,
    c: &mut ConnectionManager,
    place: &Place,
) -> Result<bool, String> {
    let now: Option<String> = redis::cmd("GET")
        .arg(&fleet.epoch)
        .query_async(c)
        .await
        .map_err(|e| e.to_string())?;
    let same = now.as_deref() == Some(place.epoch.as_str());
    if !same {
        tracing::info!("Redis lost the fleet's cache since this replica loaded it (restarted empty, or flushed).");
    }
    Ok(same)
}

/// Whether nothing is missing after `place`: the same epoch, and the stream still holds its
/// id (`START`: nothing read yet). `false`: a gap.
async fn holds(
    fleet: &FleetCache,
    c: &mut ConnectionManager,
    place: &Place,
) -> Result<bool, String> {
    if !same_epoch(fleet, c, place).await? {
        return Ok(false);
    }
    if place.id == START {
        return Ok(true);
    }
    let still: StreamRangeReply = redis::cmd("XRANGE")
        .arg(&fleet.log)
        .arg(&place.id)
        .arg(&place.id)
        .query_async(c)
        .await
        .map_err(|e| e.to_string())?;
    if still.ids.is_empty() {
        tracing::info!(
            "The cache's stream no longer holds this replica's place (trimmed past it)."
        );
    }
    Ok(!still.ids.is_empty())
}

/// The events of other replicas among `ids`, in order, with the inserted entries fetched.
async fn events(
    fleet: &FleetCache,
    c: &mut ConnectionManager,
    ids: &[StreamId],
) -> Result<Vec<Event>, String> {
    let others: Vec<&StreamId> = ids
        .iter()
        .filter(|s| s.get::<String>("w").as_deref() != Some(fleet.shared.replica.as_str()))
        .collect();
    let keys: Vec<String> = others
        .iter()
        .filter(|s| s.get::<String>("op").as_deref() == Some("insert"))
        .filter_map(|s| s.get::<String>("k"))
        .collect();
    let mut fetched = fetch(c, &keys).await?.into_iter();
    let mut out = Vec::with_capacity(others.len());
    for s in others {
        match s.get::<String>("op").as_deref() {
            Some("insert") if s.contains_key("k") => {
                // Gone already (purged or expired since): nothing to store.
                if let Some(Some(e)) = fetched.next() {
                    out.push(Event::Insert(Box::new(e)));
                }
            }
            Some("purge") => {
                let field = |f: &str| s.get::<String>(f).filter(|v| !v.is_empty());
                out.push(Event::Purge(field("route"), field("tenant")));
            }
            _ => {}
        }
    }
    Ok(out)
}

/// The entries under `keys`, in order (`None`: gone, or not an entry).
async fn fetch(
    c: &mut ConnectionManager,
    keys: &[String],
) -> Result<Vec<Option<Exchanged>>, String> {
    if keys.is_empty() {
        return Ok(Vec::new());
    }
    let mut pipe = redis::pipe();
    for k in keys {
        pipe.cmd("HGETALL").arg(k);
    }
    let replies: Vec<HashMap<String, Vec<u8>>> =
        pipe.query_async(c).await.map_err(|e| e.to_string())?;
    Ok(replies.iter().map(parse).collect())
}

/// Applies events in stream order (an insert then a purge of it leaves nothing).
fn apply(cache: &Cache, events: Vec<Event>, routes: &HashMap<String, usize>) {
    for event in events {
        match event {
            Event::Insert(e) => {
                // A route this replica does not cache (another config) is not stored here.
                if let Some(max) = routes.get(&e.record.route) {
                    cache.apply(*e, *max);
                }
            }
            Event::Purge(route, tenant) => {
                let removed = cache.purge(route.as_deref(), tenant.as_deref());
                tracing::info!(route = ?route, tenant = ?tenant, removed, "Reasoning cache purged by another replica.");
            }
        }
    }
}
