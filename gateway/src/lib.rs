//! reasoning-gateway: a Pingora sidecar proxy and observability layer for reasoning LLMs.

pub mod admin;
pub mod canary;
pub mod capacity;
pub mod cidr;
pub mod config;
#[cfg(feature = "engine")]
pub mod engine;
pub mod fdlimit;
pub mod jobs;
pub mod listener;
pub mod metrics;
pub mod openai;
pub mod outcome;
pub mod proxy;
pub mod reasoning;
pub mod reload;
pub mod routing;
pub mod server;
pub mod shadow;
pub mod state;
pub mod telemetry;
pub mod tenant;
pub mod upstream;
pub mod util;
