//! reasoning-cache: replays a stored reasoning chain and answer when the same problem comes
//! again, and refuses near-misses. The gateway (`reasoning-gateway`) is its only user: it
//! derives the tenant, builds [`Settings`] from its config, gives a Prometheus registry for
//! [`Metrics`], and calls [`Cache::lookup`] before going upstream and [`Cache::insert`] after a
//! complete, verified response. Nothing here depends on the gateway.
//!
//! - [`cache`]: the process-wide [`Cache`]: start, insert, sweep, purge, snapshot, stats;
//! - [`lookup`]: one request's way through the tiers: key → exact → embedding → search →
//!   [`guard`] → [`pair`], each verdict with its [`lookup::Reason`];
//! - [`key`]: the tenant, partition and exact keys of a chat request, and its problem text;
//! - [`embed`]: sentence embeddings on dedicated, low-priority threads, bounded in time;
//! - [`store`]: entries, partitions and the exact tier, over the [`index`] (sharded HNSW
//!   graphs searched through flat copies; with `embed/priority.rs` the only `unsafe` code);
//! - [`guard`]: refuses a similar problem that states other quantities (numbers, units);
//! - [`pair`]: judges the rest from the shape of the difference (a learned score);
//! - [`pending`]: a miss waiting for its response, and the completed response;
//! - [`replay`]: a hit written as the client asked (SSE chunks or JSON);
//! - [`snapshot`]: entries persisted across restarts; [`files`]: atomic, private writes;
//! - [`fleet`]: the cache in a fleet of replicas (entries exchanged with their vectors);
//! - [`settings`], [`metrics`], [`util`].

pub mod cache;
pub mod embed;
pub mod files;
pub mod fleet;
pub mod guard;
pub mod index;
pub mod key;
pub mod lookup;
pub mod metrics;
pub mod pair;
pub mod pending;
pub mod replay;
pub mod settings;
pub mod snapshot;
pub mod store;
pub mod util;

pub use cache::Cache;
pub use lookup::{Lookup, Query, Reason, Stages};
pub use metrics::Metrics;
pub use pending::{Completed, Pending};
pub use settings::{RouteSettings, Settings};
