//! What the cache asks of a fleet and what replicas exchange: apart from [`super`] (which
//! extends the cache) so the cache can hold a [`Fleet`] without a cycle between the two.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use crate::key::Digest128;
use crate::store::{Entry, Record};

/// A boxed future ([`Fleet`] is used as a trait object).
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// An entry as replicas exchange it: the record (which holds its route, tenant, partition and
/// exact keys and expiry) and the writer's embedding of its problem.
#[derive(Debug, Clone, PartialEq)]
pub struct Exchanged {
    /// Persisted fields.
    pub record: Record,
    /// Unit embedding of the problem, made by the same embedding model ([`crate::Cache::model_tag`]).
    pub vector: Vec<f32>,
}

/// What the cache needs from the fleet.
pub trait Fleet: Send + Sync {
    /// The fleet's entry for an exact key of `route` and `tenant`, if the fleet answers in time
    /// (a request waits on this: implementations bound it and give up rather than wait).
    fn exact<'a>(
        &'a self,
        route: &'a str,
        tenant: &'a str,
        exact: &'a Digest128,
    ) -> BoxFuture<'a, Option<Exchanged>>;

    /// This replica stored `entry` (called off the request path; must not block).
    fn inserted(&self, entry: &Arc<Entry>);
}
