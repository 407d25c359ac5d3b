//! Splitting reasoning from the answer: the pure parser, SSE framing and response rewriting.

pub mod aggregate;
pub mod corrections;
pub mod fastpath;
pub mod parser;
pub mod report;
pub mod rewrite;
pub mod sse;
pub mod steps;
pub mod verify;

pub use parser::{OpenTag, ParserOptions, Split, Tags, ThinkParser};
pub use report::Report;
pub use rewrite::{Alert, ResponseRewriter, Stats};
