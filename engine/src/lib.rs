//! The bundled backend of reasoning-gateway: a local GGUF loaded with mistral.rs (never from a
//! hub) and served over the OpenAI API on a loopback listener, so the gateway treats it exactly
//! like a remote upstream.

pub mod error;
pub mod load;
pub mod requant;
pub mod request;
pub mod server;
pub mod stop;

pub use error::EngineError;
pub use load::{preflight, Engine, EngineOptions};
pub use server::serve;
