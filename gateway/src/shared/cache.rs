//! The reasoning cache shared by the fleet: Redis holds every entry, a stream tells every
//! replica of inserts and purges, and each replica keeps its own index (`reasoning_cache`).
//!
//! Keys (`{base}` = `{key_prefix}:cache:{model tag}`, the tag a digest of the embedding model's
//! id, so replicas running another model never read these entries):
//! - `{base}:e:{hex route}:{hex tenant}:{exact}`: a HASH per entry, `r` the record (JSON),
//!   `v` the vector (f32 LE), `w` the writing replica; its TTL is the entry's. Route and tenant
//!   are in the key (hex: no glob characters) so a purge finds them with SCAN MATCH; the exact
//!   key already digests the tenant, and a lookup checks the record's tenant again.
//! - `{base}:log`: a stream of `op=insert k={entry key}` and `op=purge route= tenant=`
//!   (empty: any), each with `w`, trimmed to about [`LOG_MAX`]. Replicas tail it
//!   (`cache/sync.rs`).
//! - `{base}:epoch`: a random value set once (`SET NX`, no TTL) by the first replica that loads
//!   from this Redis. A replica that finds another value (or none) knows Redis lost its data
//!   since it loaded (a restart without persistence, a flush) and loads again.
//!
//! Everything a request waits on is bounded by `shared.timeout` and skipped while Redis is
//! down ([`Shared::run`]); writes go out after the local insert, on the fleet thread.

mod sync;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use reasoning_cache::fleet::{decode_vector, encode_vector, BoxFuture, Exchanged, Fleet};
use reasoning_cache::key::Digest128;
use reasoning_cache::store::{Entry, Record};
use reasoning_cache::util::{hex, now_unix};
use reasoning_cache::Cache;

use super::{Shared, SharedError};
use crate::metrics::labels::SharedOp;
use crate::state::Gateway;

/// Stream entries kept (approximately): a replica further behind than this reloads by SCAN.
const LOG_MAX: usize = 20_000;
/// Keys asked per SCAN step (a purge or a load walks the whole keyspace of the cache).
const SCAN_COUNT: usize = 1_000;
/// Longest a purge may take in Redis (SCAN over every entry key, then UNLINK).
const PURGE_DEADLINE: Duration = Duration::from_secs(5);

/// The cache's keys in Redis and the commands on them.
#[derive(Clone)]
pub struct FleetCache {
    shared: Arc<Shared>,
    /// `{key_prefix}:cache:{model tag}`.
    base: String,
    /// The stream of inserts and purges.
    log: String,
    /// The data's generation in this Redis (see the module's keys).
    epoch: String,
}

/// The routes a replica caches, with their `max_entries` (read at each use: a reload may
/// change them). Entries of other routes are not stored by this replica.
pub type Routes = Arc<dyn Fn() -> HashMap<String, usize> + Send + Sync>;

/// Starts sharing `gw`'s cache through `gw`'s Redis (both configured; else nothing).
pub fn start(gw: &Arc<Gateway>) {
    let (Some(cache), Some(shared)) = (gw.cache.get(), gw.shared.get()) else {
        return;
    };
    let weak = Arc::downgrade(gw);
    let routes: Routes = Arc::new(move || {
        weak.upgrade()
            .map(|gw| {
                gw.snapshot
                    .load()
                    .config
                    .routes
                    .iter()
                    .filter_map(|r| Some((r.name.clone(), r.cache?.max_entries)))
                    .collect()
            })
            .unwrap_or_default()
    });
    share(cache, shared, routes);
}

/// Plugs the fleet into `cache`'s lookups and inserts and starts following the fleet's
/// entries on the fleet thread (until the cache is dropped).
pub fn share(cache: &Arc<Cache>, shared: &Arc<Shared>, routes: Routes) -> Arc<FleetCache> {
    let fleet = Arc::new(FleetCache::new(shared.clone(), cache));
    cache.set_fleet(fleet.clone());
    tracing::info!(model = %cache.model_id(), keys = %fleet.base, "The reasoning cache is shared with the fleet.");
    shared.spawn(sync::run(Arc::downgrade(cache), routes, fleet.clone()));
    fleet
}

/// Purges the fleet's copy of the entries of `route` and/or `tenant` (both `None`: all) and
/// tells every replica to purge theirs. Waits at most [`PURGE_DEADLINE`] (an admin request,
/// on a blocking thread); returns how many entries Redis held.
pub fn purge(
    gw: &Gateway,
    route: Option<&str>,
    tenant: Option<&str>,
) -> Result<usize, SharedError> {
    let (Some(cache), Some(shared)) = (gw.cache.get(), gw.shared.get()) else {
        return Ok(0);
    };
    let fleet = FleetCache::new(shared.clone(), cache);
    let (route, tenant) = (route.map(str::to_owned), tenant.map(str::to_owned));
    let (tx, rx) = std::sync::mpsc::channel();
    shared.spawn(async move {
        let _ = tx.send(fleet.purge(route.as_deref(), tenant.as_deref()).await);
    });
    rx.recv_timeout(PURGE_DEADLINE + Duration::from_secs(1))
        .unwrap_or(Err(SharedError::Timeout(PURGE_DEADLINE)))
}

impl FleetCache {
    fn new(shared: Arc<Shared>, cache: &Cache) -> Self {
        let base = shared.key(&["cache", &cache.model_tag()]);
        let log = format!("{base}:log");
        let epoch = format!("{base}:epoch");
        FleetCache {
            shared,
            base,
            log,
            epoch,
        }
    }

    /// The HASH key of an entry.
    fn entry_key(&self, route: &str, tenant: &str, exact: &str) -> String {
        format!(
            "{}:e:{}:{}:{exact}",
            self.base,
            hex(route.as_bytes()),
            hex(tenant.as_bytes())
        )
    }

    /// The SCAN pattern of the entries of `route` and/or `tenant`.
    fn pattern(&self, route: Option<&str>, tenant: Option<&str>) -> String {
        let part = |v: Option<&str>| v.map_or_else(|| "*".to_string(), |v| hex(v.as_bytes()));
        match (route, tenant) {
            (None, None) => format!("{}:e:*", self.base),
            (r, t) => format!("{}:e:{}:{}:*", self.base, part(r), part(t)),
        }
    }

    /// Writes an entry, its TTL and its stream event in one transaction.
    pub async fn write(
        &self,
        record: &Record,
        json: Vec<u8>,
        vector: Vec<u8>,
    ) -> Result<(), SharedError> {
        let ttl_ms = record.expires.saturating_sub(now_unix()).max(1) * 1000;
        let key = self.entry_key(&record.route, &record.tenant, &record.exact);
        let (log, replica) = (self.log.clone(), self.shared.replica.clone());
        self.shared
            .run(SharedOp::Cache, |mut c| async move {
                redis::pipe()
                    .atomic()
                    .cmd("HSET")
                    .arg(&key)
                    .arg("r")
                    .arg(json)
                    .arg("v")
                    .arg(vector)
                    .arg("w")
                    .arg(&replica)
                    .ignore()
                    .cmd("PEXPIRE")
                    .arg(&key)
                    .arg(ttl_ms)
                    .ignore()
                    .cmd("XADD")
                    .arg(&log)
                    .arg("MAXLEN")
                    .arg("~")
                    .arg(LOG_MAX)
                    .arg("*")
                    .arg("op")
                    .arg("insert")
                    .arg("w")
                    .arg(&replica)
                    .arg("k")
                    .arg(&key)
                    .ignore()
                    .query_async::<()>(&mut c)
                    .await
            })
            .await
    }

    /// Deletes the matching entry keys, then publishes the purge (after: a replica that reads
    /// an insert event meanwhile finds its key gone). Returns how many keys were deleted.
    pub async fn purge(
        &self,
        route: Option<&str>,
        tenant: Option<&str>,
    ) -> Result<usize, SharedError> {
        let pattern = self.pattern(route, tenant);
        let (log, replica) = (self.log.clone(), self.shared.replica.clone());
        let (route, tenant) = (route.unwrap_or_default(), tenant.unwrap_or_default());
        self.shared
            .run_with(SharedOp::Cache, PURGE_DEADLINE, |mut c| async move {
                let mut cursor = 0u64;
                let mut removed = 0usize;
                loop {
                    let (next, keys) = scan_page(&mut c, cursor, &pattern).await?;
                    if !keys.is_empty() {
                        removed += redis::cmd("UNLINK")
                            .arg(&keys)
                            .query_async::<usize>(&mut c)
                            .await?;
                    }
                    if next == 0 {
                        break;
                    }
                    cursor = next;
                }
                redis::cmd("XADD")
                    .arg(&log)
                    .arg("MAXLEN")
                    .arg("~")
                    .arg(LOG_MAX)
                    .arg("*")
                    .arg("op")
                    .arg("purge")
                    .arg("w")
                    .arg(&replica)
                    .arg("route")
                    .arg(route)
                    .arg("tenant")
                    .arg(tenant)
                    .query_async::<String>(&mut c)
                    .await?;
                Ok(removed)
            })
            .await
    }
}

/// One page of entry keys matching `pattern`: the next cursor (0 at the end) and the keys.
async fn scan_page(
    c: &mut redis::aio::ConnectionManager,
    cursor: u64,
    pattern: &str,
) -> redis::RedisResult<(u64, Vec<String>)> {
    redis::cmd("SCAN")
        .arg(cursor)
        .arg("MATCH")
        .arg(pattern)
        .arg("COUNT")
        .arg(SCAN_COUNT)
        .query_async(c)
        .await
}

/// An entry from its HASH fields (`None`: gone, or not written by this code).
fn parse(fields: &HashMap<String, Vec<u8>>) -> Option<Exchanged> {
    let record: Record = serde_json::from_slice(fields.get("r")?).ok()?;
    let vector = decode_vector(fields.get("v")?)?;
    Some(Exchanged { record, vector })
}

impl Fleet for FleetCache {
    fn exact<'a>(
        &'a self,
        route: &'a str,
        tenant: &'a str,
        exact: &'a Digest128,
    ) -> BoxFuture<'a, Option<Exchanged>> {
        Box::pin(async move {
            let key = self.entry_key(route, tenant, &hex(exact));
            let fields = self
                .shared
                .run(SharedOp::Cache, |mut c| async move {
                    redis::cmd("HGETALL")
                        .arg(&key)
                        .query_async::<HashMap<String, Vec<u8>>>(&mut c)
                        .await
                })
                .await
                .ok()?;
            if fields.is_empty() {
                return None;
            }
            let found = parse(&fields);
            if found.is_none() {
                self.shared.count_error(SharedOp::Cache);
            }
            found
        })
    }

    fn inserted(&self, entry: &Arc<Entry>) {
        if !self.shared.is_up() {
            return;
        }
        let Ok(json) = serde_json::to_vec(&entry.record) else {
            return;
        };
        let (record, vector) = (entry.record.clone(), encode_vector(&entry.vector));
        let this = self.clone();
        self.shared.spawn(async move {
            if let Err(e) = this.write(&record, json, vector).await {
                tracing::debug!(error = %e, "A cache entry was not shared with the fleet.");
            }
        });
    }
}
