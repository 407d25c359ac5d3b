//! The cache in a fleet of replicas, without knowing how the fleet talks: the gateway plugs a
//! [`Fleet`] in (Redis, `gateway/src/shared/cache.rs`); the cache asks it for an entry by exact
//! key when its own exact tier misses, and tells it of every entry it stores. What other
//! replicas stored comes back through [`Cache::apply`] (one entry, from their stream of inserts)
//! and [`Cache::load_exchanged`] (everything, at start or after a gap), always with the vector
//! the writer computed: nothing is embedded again.

pub mod port;

use std::sync::Arc;

use crate::cache::Cache;
use crate::guard;
use crate::key::{Digest128, RequestKey};
use crate::store::Entry;
use crate::util::{hex, now_unix, unhex};

pub use port::{BoxFuture, Exchanged, Fleet};

/// What [`Cache::apply`] did with an entry from another replica.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Applied {
    /// Stored.
    Stored,
    /// The same entry or a newer one for the exact key is here already.
    Known,
    /// Expired, malformed keys or a vector that cannot be compared: not stored.
    Refused,
}

/// The vector as little-endian f32 bytes (the snapshot's encoding).
pub fn encode_vector(v: &[f32]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

/// The vector [`encode_vector`] wrote (`None`: not a whole number of f32 values).
pub fn decode_vector(bytes: &[u8]) -> Option<Vec<f32>> {
    if bytes.is_empty() || !bytes.len().is_multiple_of(4) {
        return None;
    }
    Some(
        bytes
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect(),
    )
}

/// The record's keys, if it is well-formed and its vector usable: finite values, about unit
/// length (another replica's bytes are checked like any input).
fn keys_of(e: &Exchanged) -> Option<(Digest128, Digest128)> {
    let partition = unhex(&e.record.partition)?;
    let exact = unhex(&e.record.exact)?;
    let norm: f32 = e.vector.iter().map(|x| x * x).sum();
    if !e.vector.iter().all(|x| x.is_finite()) || !(0.98..=1.02).contains(&norm) {
        return None;
    }
    Some((partition, exact))
}

impl Cache {
    /// Plugs the fleet in (once; `false` if one was already set).
    pub fn set_fleet(&self, fleet: Arc<dyn Fleet>) -> bool {
        self.fleet.set(fleet).is_ok()
    }

    /// The embedding model's id ([`crate::embed::model_id`]).
    pub fn model_id(&self) -> &str {
        &self.model_id
    }

    /// A short digest of [`Cache::model_id`]: replicas file their entries under it, so vectors
    /// of another embedding model are never compared with this one's.
    pub fn model_tag(&self) -> String {
        use sha2::{Digest, Sha256};
        hex(&Sha256::digest(self.model_id.as_bytes())[..6])
    }

    /// Tells the fleet of an entry just stored.
    pub(crate) fn share(&self, exact: &Digest128) {
        if let Some(fleet) = self.fleet.get() {
            if let Some(entry) = self.store.exact(exact, now_unix()) {
                fleet.inserted(&entry);
            }
        }
    }

    /// The fleet's entry for a request's exact key, checked against the request: the same
    /// route, tenant, partition and exact key, not expired. Stored here in the background, so
    /// the next lookup finds it locally.
    pub(crate) async fn fleet_exact(
        &self,
        route: &str,
        key: &RequestKey,
        max_entries: usize,
    ) -> Option<Arc<Entry>> {
        let fleet = self.fleet.get()?;
        let found = fleet.exact(route, &key.tenant, &key.exact).await?;
        let same = found.record.route == route
            && found.record.tenant == key.tenant
            && found.record.partition == hex(&key.partition)
            && found.record.exact == hex(&key.exact)
            && found.record.expires > now_unix();
        if !same || keys_of(&found).is_none() {
            return None;
        }
        let entry = Arc::new(Entry {
            // Not in the store (yet): ids are only used by the store and its index.
            id: usize::MAX,
            features: guard::features(&found.record.problem),
            record: found.record.clone(),
            partition: key.partition,
            exact: key.exact,
            vector: found.vector.clone(),
        });
        let store = self.weak.get().and_then(std::sync::Weak::upgrade);
        if let Some(cache) = store {
            tokio::task::spawn_blocking(move || cache.apply(found, max_entries));
        }
        Some(entry)
    }

    /// Stores an entry another replica wrote (its vector as it is); `max_entries` is the
    /// route's bound here.
    pub fn apply(&self, e: Exchanged, max_entries: usize) -> Applied {
        let Some((partition, exact)) = keys_of(&e) else {
            return Applied::Refused;
        };
        let now = now_unix();
        if e.record.expires <= now {
            return Applied::Refused;
        }
        if let Some(have) = self.store.exact(&exact, now) {
            if have.record.created >= e.record.created {
                return Applied::Known;
            }
        }
        let removed = self
            .store
            .insert(e.record, partition, exact, e.vector, max_entries);
        self.metrics.removals(&removed);
        self.set_entries();
        Applied::Stored
    }

    /// Stores many entries other replicas wrote (a replica joining, or catching up after a
    /// gap), skipping those known here, without adding them to the graph: call
    /// [`Cache::index_loaded`] once the last batch is in. Returns how many were stored.
    pub fn load_exchanged(&self, entries: Vec<Exchanged>) -> usize {
        let now = now_unix();
        let mut fresh = Vec::with_capacity(entries.len());
        for e in entries {
            let Some((partition, exact)) = keys_of(&e) else {
                continue;
            };
            let known = self
                .store
                .exact(&exact, now)
                .is_some_and(|have| have.record.created >= e.record.created);
            if e.record.expires > now && !known {
                fresh.push((e.record, partition, exact, e.vector));
            }
        }
        let n = fresh.len();
        if n > 0 {
            self.store.load_unindexed(fresh);
        }
        n
    }

    /// Builds the graph over what [`Cache::load_exchanged`] stored (seconds for 100 k
    /// entries: call it off the request path) and updates the gauges.
    pub fn index_loaded(&self) {
        self.store.rebuild();
        self.set_entries();
    }
}

#[cfg(test)]
mod tests;
