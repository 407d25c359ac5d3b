//! Shared parts of the end-to-end tests: a scripted fake upstream and the gateway process harness.

pub mod fake_upstream;
pub mod harness;
pub mod prometheus;
pub mod redis;
pub mod tls;
