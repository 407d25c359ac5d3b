//! What passes from a lookup to the store: the miss waiting for its response, and the completed
//! response offered for storage.

use crate::key::RequestKey;
use crate::settings::RouteSettings;
use crate::store::Usage;

/// A miss waiting for its response.
#[derive(Debug, Clone)]
pub struct Pending {
    /// Route name.
    pub route: String,
    /// Keys and problem.
    pub key: RequestKey,
    /// The embedding, when the lookup computed one.
    pub vector: Option<Vec<f32>>,
    /// The route's settings at lookup time.
    pub settings: RouteSettings,
    /// Store only if the partition has no live entry for this exact problem (a shared
    /// partition refreshed with `Cache-Control: no-cache`: other tenants' entry stays).
    pub keep_existing: bool,
}

/// The completed response offered for storage.
#[derive(Debug, Clone)]
pub struct Completed {
    /// Reasoning text.
    pub reasoning: String,
    /// Answer text.
    pub answer: String,
    /// Response `model`.
    pub model: String,
    /// Token usage.
    pub usage: Option<Usage>,
}
