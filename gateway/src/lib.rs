//! reasoning-gateway: a Pingora sidecar proxy and observability layer for reasoning LLMs.
//!
//! Client APIs: `openai` is the chat/completions wire format the request path speaks; `api`
//! holds the other client APIs (OpenAI Responses, Anthropic Messages) as codecs around it
//! (`api/{generation,codec,responses,messages,signature}.rs`).

pub mod admin;
pub mod api;
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
pub mod shared;
pub mod state;
pub mod telemetry;
pub mod tenant;
pub mod upstream;
pub mod util;
