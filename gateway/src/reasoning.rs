//! Splitting reasoning from the answer: the pure parser, SSE framing and response rewriting.

pub mod fastpath;
pub mod parser;
pub mod rewrite;
pub mod sse;

pub use parser::{Split, ThinkParser};
pub use rewrite::{ResponseRewriter, Stats};
