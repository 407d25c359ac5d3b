//! The canary's keys and commands in Redis.
//!
//! - `{prefix}:canary:{route}:{variant}:{bucket}`: a hash of outcome counts ([`Tally::fields`])
//!   for one time bucket (its start, Unix seconds), added to with HINCRBY by every replica and
//!   expiring once it has left the window.
//! - `{prefix}:canary:{route}:{variant}:state`: a hash: `verdict` (a JSON [`Verdict`], set once
//!   with HSETNX), `step`, `step_since` (Unix ms) and `step_requests` of the promotion. No
//!   expiry: a rollback stands until an operator re-enables the variant.
//!
//! Route and variant names come from the config; `%` and `:` in them are escaped so two names
//! can never make the same key. Canary counts hold no tenant data.

use std::collections::HashMap;
use std::time::Duration;

use redis::aio::ConnectionManager;

use crate::canary::fleet::{bucket_width, window_buckets, FleetRoute, FleetVariant, Verdict};
use crate::canary::mirror::Pending;
use crate::canary::tally::Tally;
use crate::config::CanaryConfig;
use crate::metrics::labels::SharedOp;
use crate::shared::{Shared, SharedError};

/// Longest a sync command may take; past it the replica decides alone until the next sync
/// succeeds.
pub const DEADLINE: Duration = Duration::from_secs(1);

/// Moves the promoted variant from step ARGV[1] to the next, unless it was rolled back or
/// another replica moved it first: 1 when this call did.
const PROMOTE: &str = r"
if redis.call('HEXISTS', KEYS[1], 'verdict') == 1 then return 0 end
local step = tonumber(redis.call('HGET', KEYS[1], 'step') or '0')
if step ~= tonumber(ARGV[1]) then return 0 end
redis.call('HSET', KEYS[1], 'step', step + 1, 'step_since', ARGV[2], 'step_requests', 0)
return 1
";

/// A config name as one key part.
fn part(name: &str) -> String {
    name.replace('%', "%25").replace(':', "%3A")
}

fn counts_key(shared: &Shared, route: &str, variant: &str, bucket: u64) -> String {
    shared.key(&["canary", &part(route), &part(variant), &bucket.to_string()])
}

fn state_key(shared: &Shared, route: &str, variant: &str) -> String {
    shared.key(&["canary", &part(route), &part(variant), "state"])
}

async fn run<T, F, Fut>(shared: &Shared, f: F) -> Result<T, SharedError>
where
    F: FnOnce(ConnectionManager) -> Fut,
    Fut: std::future::Future<Output = redis::RedisResult<T>>,
{
    shared.run_with(SharedOp::Canary, DEADLINE, f).await
}

/// Adds pending counts in one pipeline: per bucket HINCRBY of each field and EXPIRE (the
/// window plus two buckets), per variant the promotion step's count (and its start, if it has
/// none yet). Counts of routes no longer configured (`windows`: route → window) are dropped.
pub async fn flush(
    shared: &Shared,
    pending: &[Pending],
    windows: &HashMap<&str, Duration>,
    now_ms: u64,
) -> Result<(), SharedError> {
    let mut pipe = redis::pipe();
    let mut per_variant: HashMap<(&str, &str), u64> = HashMap::new();
    for p in pending {
        let Some(window) = windows.get(p.route.as_str()) else {
            continue;
        };
        let key = counts_key(shared, &p.route, &p.variant, p.bucket);
        for (field, n) in p.tally.fields() {
            pipe.cmd("HINCRBY").arg(&key).arg(field).arg(n).ignore();
        }
        let ttl = window.as_secs() + 2 * bucket_width(*window);
        pipe.cmd("EXPIRE").arg(&key).arg(ttl).ignore();
        *per_variant
            .entry((p.route.as_str(), p.variant.as_str()))
            .or_default() += p.tally.requests;
    }
    for ((route, variant), n) in per_variant {
        let key = state_key(shared, route, variant);
        pipe.cmd("HINCRBY")
            .arg(&key)
            .arg("step_requests")
            .arg(n)
            .ignore();
        pipe.cmd("HSETNX")
            .arg(&key)
            .arg("step_since")
            .arg(now_ms)
            .ignore();
    }
    run(shared, |mut c| async move {
        pipe.query_async::<()>(&mut c).await
    })
    .await
}

/// Publishes a rollback unless one is published already: true when this call did.
pub async fn publish(
    shared: &Shared,
    route: &str,
    variant: &str,
    verdict: &Verdict,
) -> Result<bool, SharedError> {
    let key = state_key(shared, route, variant);
    let json = serde_json::to_string(verdict).unwrap_or_default();
    run(shared, |mut c| async move {
        redis::cmd("HSETNX")
            .arg(&key)
            .arg("verdict")
            .arg(json)
            .query_async::<bool>(&mut c)
            .await
    })
    .await
}

/// Moves `variant` from promotion step `from` to the next unless another replica did first or
/// it was rolled back: true when this call did.
pub async fn promote(
    shared: &Shared,
    route: &str,
    variant: &str,
    from: usize,
    now_ms: u64,
) -> Result<bool, SharedError> {
    let key = state_key(shared, route, variant);
    run(shared, |mut c| async move {
        redis::Script::new(PROMOTE)
            .key(key)
            .arg(from)
            .arg(now_ms)
            .invoke_async::<bool>(&mut c)
            .await
    })
    .await
}

/// Re-enables a variant for the whole fleet: its verdict, promotion step and counts are gone
/// (as a local re-enable forgets its window). True when it had a verdict.
pub async fn clear(
    shared: &Shared,
    route: &str,
    variant: &str,
    window: Option<Duration>,
    now_ms: u64,
) -> Result<bool, SharedError> {
    let state = state_key(shared, route, variant);
    let mut counts: Vec<String> = Vec::new();
    if let Some(window) = window {
        // The window, and the next bucket for a replica whose clock runs a little ahead.
        let now_s = now_ms / 1000 + bucket_width(window);
        counts.extend(
            window_buckets(window, now_s)
                .into_iter()
                .chain(window_buckets(window, now_ms / 1000).last().copied())
                .map(|b| counts_key(shared, route, variant, b)),
        );
    }
    let mut pipe = redis::pipe();
    pipe.atomic();
    pipe.cmd("HEXISTS").arg(&state).arg("verdict");
    pipe.cmd("DEL").arg(&state).ignore();
    if !counts.is_empty() {
        pipe.cmd("DEL").arg(&counts[..]).ignore();
    }
    let (had,) = run(shared, |mut c| async move {
        pipe.query_async::<(bool,)>(&mut c).await
    })
    .await?;
    Ok(had)
}

/// Reads the fleet's state of every canary route (`routes`: name → config) in one pipeline:
/// each variant's state and the counts of its window's buckets, summed.
pub async fn read(
    shared: &Shared,
    routes: &[(&str, &CanaryConfig)],
    now_ms: u64,
) -> Result<HashMap<String, FleetRoute>, SharedError> {
    let mut pipe = redis::pipe();
    let mut layout = Vec::new();
    for (route, canary) in routes {
        let buckets = window_buckets(canary.rollback.window, now_ms / 1000);
        for v in canary.variants.iter().chain(canary.shadow.as_ref()) {
            pipe.cmd("HGETALL").arg(state_key(shared, route, &v.name));
            for b in &buckets {
                pipe.cmd("HGETALL")
                    .arg(counts_key(shared, route, &v.name, *b));
            }
            layout.push((*route, v.name.as_str(), buckets.len()));
        }
    }
    if layout.is_empty() {
        return Ok(HashMap::new());
    }
    let replies = run(shared, |mut c| async move {
        pipe.query_async::<Vec<HashMap<String, String>>>(&mut c)
            .await
    })
    .await?;
    let mut replies = replies.into_iter();
    let mut out: HashMap<String, FleetRoute> = HashMap::new();
    for (route, variant, buckets) in layout {
        let state = replies.next().unwrap_or_default();
        let mut tally = Tally::default();
        for counts in replies.by_ref().take(buckets) {
            tally.merge(&Tally::from_fields(
                counts.iter().map(|(k, v)| (k.as_str(), v.as_str())),
            ));
        }
        let num = |f: &str| state.get(f).and_then(|v| v.parse::<u64>().ok());
        let fleet = FleetVariant {
            tally,
            // A verdict this version cannot read still stands: it is there to keep traffic off.
            verdict: state.get("verdict").map(|v| {
                serde_json::from_str(v).unwrap_or_else(|_| Verdict {
                    reason: "rolled back (verdict unreadable by this replica)".into(),
                    at_ms: 0,
                    by: String::new(),
                    local: false,
                })
            }),
            step: num("step").map_or(0, |s| usize::try_from(s).unwrap_or(usize::MAX)),
            step_since_ms: num("step_since"),
            step_requests: num("step_requests").unwrap_or(0),
        };
        out.entry(route.to_string())
            .or_default()
            .insert(variant.to_string(), fleet);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::part;

    #[test]
    fn names_cannot_run_into_each_other() {
        assert_ne!(
            format!("{}:{}", part("a:b"), part("c")),
            format!("{}:{}", part("a"), part("b:c"))
        );
        assert_eq!(part("a%3Ab"), "a%253Ab");
    }
}
