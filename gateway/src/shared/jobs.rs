//! Fleet mode's async job table in Redis: every job, its lease, and the fleet-wide counts the
//! quotas read. This module knows jobs only as JSON text and a status string (the job type and
//! its lifecycle are `crate::jobs`); each change that must not race another replica is one Lua
//! script, so it is atomic.
//!
//! Keys (`P` is `shared.key_prefix`; a tenant id is a hex digest or `anonymous`, a job id
//! `job_` and 32 hex digits, so neither contains `:`):
//! - `P:jobs:{tenant}:{id}`: a hash, `json` (the whole job) and `status`. Its tenant is part of
//!   its key: a lookup by another tenant names another key and finds nothing. Once finished it
//!   expires after `async_jobs.ttl`.
//! - `P:jobs:{tenant}:{id}:lease`: the id of the replica working on the job (running it, or
//!   delivering its callback), set with `SET NX PX` semantics and renewed while it works.
//! - `P:jobs:open`: a set of `{tenant}:{id}` with work left (to run or to call back); every
//!   replica sweeps it for jobs whose lease lapsed (their replica died) and takes them over.
//! - `P:jobs:stored` and `P:jobs:stored:{tenant}`: sorted sets of job ids scored by when they
//!   expire (`+inf` while open), counted by `async_jobs.max_jobs` and `max_jobs_per_tenant`.

use std::sync::{Arc, LazyLock};
use std::time::Duration;

use redis::Script;

use super::{Shared, SharedError};
use crate::metrics::labels::SharedOp;

/// How long a lease lasts unless renewed: a job whose replica died is taken over this long
/// after its last renewal (plus at most one sweep).
pub const LEASE: Duration = Duration::from_secs(3);
/// How often a replica renews the leases it holds (and sees a cancellation made elsewhere).
pub const RENEW_EVERY: Duration = Duration::from_secs(1);
/// How often a replica sweeps the open set for jobs nobody holds.
pub const SWEEP_EVERY: Duration = Duration::from_secs(1);
/// Open jobs looked at per sweep (a random sample: all are seen over a few sweeps).
const SWEEP_SAMPLE: usize = 256;

/// Stores a new job with its submitter's lease, if the fleet-wide counts leave room.
static CREATE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
redis.call('ZREMRANGEBYSCORE', KEYS[4], '-inf', ARGV[7])
redis.call('ZREMRANGEBYSCORE', KEYS[5], '-inf', ARGV[7])
local stored = redis.call('ZCARD', KEYS[4])
local mine = redis.call('ZCARD', KEYS[5])
if stored >= tonumber(ARGV[5]) or mine >= tonumber(ARGV[6]) then return {0, stored, mine} end
redis.call('HSET', KEYS[1], 'json', ARGV[1], 'status', ARGV[2])
redis.call('SET', KEYS[2], ARGV[3], 'PX', ARGV[4])
redis.call('SADD', KEYS[3], ARGV[8])
redis.call('ZADD', KEYS[4], '+inf', ARGV[9])
redis.call('ZADD', KEYS[5], '+inf', ARGV[9])
return {1, stored, mine}
",
    )
});

/// Writes the job as its lease holder sees it. Refused when another replica holds the lease,
/// when the job was cancelled, or when the lease lapsed and the job is no longer open (someone
/// else finished it). A lapsed lease on an open job is taken back; a job Redis lost (it
/// restarted empty) is written again whole.
static SAVE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
local owner = redis.call('GET', KEYS[2])
if owner and owner ~= ARGV[1] then return 'lost' end
local cur = redis.call('HGET', KEYS[1], 'status')
if cur == 'cancelled' and ARGV[3] ~= 'cancelled' then return 'cancelled' end
if not owner then
  if cur and redis.call('SISMEMBER', KEYS[3], ARGV[9]) == 0 then return 'lost' end
  if ARGV[5] ~= '1' then redis.call('SET', KEYS[2], ARGV[1], 'PX', ARGV[6]) end
end
redis.call('HSET', KEYS[1], 'json', ARGV[2], 'status', ARGV[3])
local score = '+inf'
if ARGV[4] == '1' then
  redis.call('EXPIRE', KEYS[1], ARGV[7])
  score = tonumber(ARGV[8]) + tonumber(ARGV[7])
else
  redis.call('PERSIST', KEYS[1])
end
redis.call('ZADD', KEYS[4], score, ARGV[10])
redis.call('ZADD', KEYS[5], score, ARGV[10])
if ARGV[5] == '1' then
  redis.call('SREM', KEYS[3], ARGV[9])
  redis.call('DEL', KEYS[2])
else
  redis.call('SADD', KEYS[3], ARGV[9])
end
return 'ok'
",
    )
});

/// Extends the lease if this replica holds it (never shortening a longer one taken for a
/// callback), takes a lapsed one back while the job is open, and says the job's status.
static RENEW: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
local owner = redis.call('GET', KEYS[1])
local status = redis.call('HGET', KEYS[2], 'status')
if not status then return {'missing', ''} end
if owner == ARGV[1] then
  if redis.call('PTTL', KEYS[1]) < tonumber(ARGV[2]) then redis.call('PEXPIRE', KEYS[1], ARGV[2]) end
  return {'held', status}
end
if not owner and status ~= 'cancelled' and redis.call('SISMEMBER', KEYS[3], ARGV[3]) == 1 then
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
  return {'held', status}
end
return {'lost', status}
",
    )
});

/// Takes an open job nobody holds; answers its JSON.
static TAKE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
if redis.call('EXISTS', KEYS[1]) == 1 then return false end
local json = redis.call('HGET', KEYS[2], 'json')
if not json then
  redis.call('SREM', KEYS[3], ARGV[3])
  return false
end
if redis.call('SISMEMBER', KEYS[3], ARGV[3]) == 0 then return false end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
return json
",
    )
});

/// Replaces an unfinished job with its cancelled form; answers the job as it now stands (the
/// finished one untouched when it had already ended).
static CANCEL: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
local cur = redis.call('HGET', KEYS[1], 'status')
if not cur then return false end
if cur == 'succeeded' or cur == 'failed' or cur == 'cancelled' then
  return redis.call('HGET', KEYS[1], 'json')
end
redis.call('HSET', KEYS[1], 'json', ARGV[1], 'status', 'cancelled')
redis.call('EXPIRE', KEYS[1], ARGV[2])
local score = tonumber(ARGV[3]) + tonumber(ARGV[2])
redis.call('ZADD', KEYS[3], score, ARGV[5])
redis.call('ZADD', KEYS[4], score, ARGV[5])
redis.call('SREM', KEYS[2], ARGV[4])
return ARGV[1]
",
    )
});

/// Gives a lease up, if it is still this replica's.
static RELEASE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
",
    )
});

/// Whether a new job was stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admission {
    /// Stored, leased to this replica.
    Stored,
    /// The fleet holds `stored` jobs, `tenant` of them the submitter's: one of the quotas is
    /// reached.
    Full {
        /// Jobs stored across the fleet.
        stored: usize,
        /// Of those, the tenant's.
        tenant: usize,
    },
}

/// What became of a write.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Saved {
    /// Written.
    Written,
    /// Refused: the job was cancelled (by a client on any replica).
    Cancelled,
    /// Refused: another replica holds it, or finished it.
    Lost,
}

/// A lease renewal's answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Renewal {
    /// This replica holds the lease; the job's status.
    Held(String),
    /// Another replica holds it, or it ended without this replica; the job's status.
    Lost(String),
    /// The job is not in Redis (it restarted empty): the holder writes it again.
    Missing,
}

/// One save: what a job's holder writes.
#[derive(Debug, Clone, Copy)]
pub struct Write<'a> {
    /// The whole job, JSON.
    pub json: &'a str,
    /// Its status (`queued`, `running`, `succeeded`…).
    pub status: &'a str,
    /// Finished: the key expires after `ttl`.
    pub terminal: bool,
    /// No work left (finished, callback delivered or given up): out of the open set, the
    /// lease given up.
    pub done: bool,
}

/// The job table of one process (cheap to clone: one connection pool behind).
#[derive(Clone)]
pub struct JobTable {
    shared: Arc<Shared>,
}

impl JobTable {
    /// The table on `shared`'s Redis.
    pub fn new(shared: Arc<Shared>) -> Self {
        JobTable { shared }
    }

    /// Whether Redis answered the last health check.
    pub fn is_up(&self) -> bool {
        self.shared.is_up()
    }

    /// Runs `fut` on the fleet-mode thread.
    pub fn spawn<F: std::future::Future<Output = ()> + Send + 'static>(&self, fut: F) {
        self.shared.spawn(fut);
    }

    fn job_key(&self, tenant: &str, id: &str) -> String {
        self.shared.key(&["jobs", tenant, id])
    }

    fn lease_key(&self, tenant: &str, id: &str) -> String {
        self.shared.key(&["jobs", tenant, id, "lease"])
    }

    fn open_key(&self) -> String {
        self.shared.key(&["jobs", "open"])
    }

    fn stored_keys(&self, tenant: &str) -> (String, String) {
        (
            self.shared.key(&["jobs", "stored"]),
            self.shared.key(&["jobs", "stored", tenant]),
        )
    }

    fn member(tenant: &str, id: &str) -> String {
        format!("{tenant}:{id}")
    }

    /// Stores a new job leased to this replica, within `max_jobs` and `max_per_tenant`.
    #[allow(clippy::too_many_arguments)]
    pub async fn create(
        &self,
        tenant: &str,
        id: &str,
        json: &str,
        status: &str,
        max_jobs: usize,
        max_per_tenant: usize,
        now: u64,
    ) -> Result<Admission, SharedError> {
        let (all, theirs) = self.stored_keys(tenant);
        let mut inv = CREATE.prepare_invoke();
        inv.key(self.job_key(tenant, id))
            .key(self.lease_key(tenant, id))
            .key(self.open_key())
            .key(all)
            .key(theirs)
            .arg(json)
            .arg(status)
            .arg(&self.shared.replica)
            .arg(LEASE.as_millis() as u64)
            .arg(max_jobs)
            .arg(max_per_tenant)
            .arg(now)
            .arg(Self::member(tenant, id))
            .arg(id);
        let (ok, stored, mine): (i64, usize, usize) = self
            .shared
            .run(SharedOp::Jobs, |mut c| async move {
                inv.invoke_async(&mut c).await
            })
            .await?;
        Ok(if ok == 1 {
            Admission::Stored
        } else {
            Admission::Full {
                stored,
                tenant: mine,
            }
        })
    }

    /// The job's JSON, if `tenant` has a job `id`.
    pub async fn get(&self, tenant: &str, id: &str) -> Result<Option<String>, SharedError> {
        let key = self.job_key(tenant, id);
        self.shared
            .run(SharedOp::Jobs, |mut c| async move {
                redis::cmd("HGET")
                    .arg(key)
                    .arg("json")
                    .query_async(&mut c)
                    .await
            })
            .await
    }

    /// Writes `json` (the job cancelled) unless the job already ended; the job as it stands
    /// after, `None` if there is no such job.
    pub async fn cancel(
        &self,
        tenant: &str,
        id: &str,
        json: &str,
        ttl: Duration,
        now: u64,
    ) -> Result<Option<String>, SharedError> {
        let (all, theirs) = self.stored_keys(tenant);
        let mut inv = CANCEL.prepare_invoke();
        inv.key(self.job_key(tenant, id))
            .key(self.open_key())
            .key(all)
            .key(theirs)
            .arg(json)
            .arg(ttl.as_secs().max(1))
            .arg(now)
            .arg(Self::member(tenant, id))
            .arg(id);
        self.shared
            .run(SharedOp::Jobs, |mut c| async move {
                inv.invoke_async(&mut c).await
            })
            .await
    }

    /// Writes the job as this replica, its holder, sees it (see [`Write`]).
    pub async fn save(
        &self,
        tenant: &str,
        id: &str,
        w: Write<'_>,
        ttl: Duration,
        now: u64,
    ) -> Result<Saved, SharedError> {
        let (all, theirs) = self.stored_keys(tenant);
        let flag = |b: bool| if b { "1" } else { "0" };
        let mut inv = SAVE.prepare_invoke();
        inv.key(self.job_key(tenant, id))
            .key(self.lease_key(tenant, id))
            .key(self.open_key())
            .key(all)
            .key(theirs)
            .arg(&self.shared.replica)
            .arg(w.json)
            .arg(w.status)
            .arg(flag(w.terminal))
            .arg(flag(w.done))
            .arg(LEASE.as_millis() as u64)
            .arg(ttl.as_secs().max(1))
            .arg(now)
            .arg(Self::member(tenant, id))
            .arg(id);
        let answer: String = self
            .shared
            .run(SharedOp::Jobs, |mut c| async move {
                inv.invoke_async(&mut c).await
            })
            .await?;
        Ok(match answer.as_str() {
            "ok" => Saved::Written,
            "cancelled" => Saved::Cancelled,
            _ => Saved::Lost,
        })
    }

    /// Renews this replica's lease on a job for `lease` (at least [`LEASE`]).
    pub async fn renew(
        &self,
        tenant: &str,
        id: &str,
        lease: Duration,
    ) -> Result<Renewal, SharedError> {
        let mut inv = RENEW.prepare_invoke();
        inv.key(self.lease_key(tenant, id))
            .key(self.job_key(tenant, id))
            .key(self.open_key())
            .arg(&self.shared.replica)
            .arg(lease.max(LEASE).as_millis() as u64)
            .arg(Self::member(tenant, id));
        let (what, status): (String, String) = self
            .shared
            .run(SharedOp::Jobs, |mut c| async move {
                inv.invoke_async(&mut c).await
            })
            .await?;
        Ok(match what.as_str() {
            "held" => Renewal::Held(status),
            "missing" => Renewal::Missing,
            _ => Renewal::Lost(status),
        })
    }

    /// Gives up this replica's lease on a job (it stopped working on it).
    pub async fn release(&self, tenant: &str, id: &str) -> Result<(), SharedError> {
        let mut inv = RELEASE.prepare_invoke();
        inv.key(self.lease_key(tenant, id))
            .arg(&self.shared.replica);
        self.shared
            .run(SharedOp::Jobs, |mut c| async move {
                inv.invoke_async::<i64>(&mut c).await
            })
            .await
            .map(|_| ())
    }

    /// Open jobs (with work left) that nobody holds a lease on, as `(tenant, id)`: a sample
    /// of the open set, skipping `held_here`.
    pub async fn unleased(
        &self,
        held_here: &(dyn Fn(&str) -> bool + Sync),
    ) -> Result<Vec<(String, String)>, SharedError> {
        let open = self.open_key();
        let members: Vec<String> = self
            .shared
            .run(SharedOp::Jobs, |mut c| async move {
                redis::cmd("SRANDMEMBER")
                    .arg(open)
                    .arg(SWEEP_SAMPLE)
                    .query_async(&mut c)
                    .await
            })
            .await?;
        let candidates: Vec<(String, String)> = members
            .iter()
            .filter_map(|m| m.split_once(':'))
            .filter(|(_, id)| !held_here(id))
            .map(|(t, id)| (t.to_string(), id.to_string()))
            .collect();
        if candidates.is_empty() {
            return Ok(Vec::new());
        }
        let mut pipe = redis::pipe();
        for (tenant, id) in &candidates {
            pipe.cmd("EXISTS").arg(self.lease_key(tenant, id));
        }
        let leased: Vec<bool> = self
            .shared
            .run(SharedOp::Jobs, |mut c| async move {
                pipe.query_async(&mut c).await
            })
            .await?;
        Ok(candidates
            .into_iter()
            .zip(leased)
            .filter(|(_, l)| !l)
            .map(|(c, _)| c)
            .collect())
    }

    /// Takes over an open job nobody holds; its JSON when this replica got it.
    pub async fn take(&self, tenant: &str, id: &str) -> Result<Option<String>, SharedError> {
        let mut inv = TAKE.prepare_invoke();
        inv.key(self.lease_key(tenant, id))
            .key(self.job_key(tenant, id))
            .key(self.open_key())
            .arg(&self.shared.replica)
            .arg(LEASE.as_millis() as u64)
            .arg(Self::member(tenant, id));
        self.shared
            .run(SharedOp::Jobs, |mut c| async move {
                inv.invoke_async(&mut c).await
            })
            .await
    }
}
