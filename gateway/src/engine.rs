//! Runs the bundled mistral.rs engine as a background service on its loopback listener.
//! The gateway reaches it through the `engine` pool like any other upstream.

use std::sync::Arc;

use async_trait::async_trait;
use pingora::server::ShutdownWatch;
use pingora::services::background::BackgroundService;
use reasoning_engine::requant::Requantize;
use reasoning_engine::EngineOptions;

use crate::config::EngineConfig;
use crate::state::Gateway;

/// Engine options from the gateway config.
pub fn options(c: &EngineConfig) -> EngineOptions {
    EngineOptions {
        model_dir: c.model_dir.clone(),
        gguf: c.gguf.clone(),
        served_model_name: c.served_model_name.clone(),
        max_seqs: c.max_seqs,
        threads: c.threads,
        chat_template: c.chat_template.clone(),
        max_context_tokens: c.max_context_tokens,
        dequantize: c.dequantize,
        requantize: match c.requantize {
            "none" => Requantize::None,
            "q4_0" => Requantize::Q4_0,
            _ => Requantize::Auto,
        },
        cache_dir: c.cache_dir.clone(),
    }
}

/// Loads the model, then serves it; the gateway becomes ready once it is loaded.
pub struct EngineService {
    gw: Arc<Gateway>,
    options: EngineOptions,
    listener: std::sync::Mutex<Option<std::net::TcpListener>>,
}

impl EngineService {
    /// A service for `config`, serving on the already bound `listener`.
    pub fn new(gw: Arc<Gateway>, config: EngineConfig, listener: std::net::TcpListener) -> Self {
        EngineService {
            gw,
            options: options(&config),
            listener: std::sync::Mutex::new(Some(listener)),
        }
    }
}

#[async_trait]
impl BackgroundService for EngineService {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        let Some(std_listener) = self.listener.lock().ok().and_then(|mut l| l.take()) else {
            return;
        };
        let engine = match reasoning_engine::load::load(self.options.clone()).await {
            Ok(e) => Arc::new(e),
            Err(e) => {
                tracing::error!(error = %e, "The bundled engine failed to load; the gateway stops.");
                std::process::exit(1);
            }
        };
        let listener = match std_listener
            .set_nonblocking(true)
            .and_then(|_| tokio::net::TcpListener::from_std(std_listener))
        {
            Ok(l) => l,
            Err(e) => {
                tracing::error!(error = %e, "The engine listener could not be started; the gateway stops.");
                std::process::exit(1);
            }
        };
        // Requests may flow as soon as /readyz says so: no waiting for the next health check.
        if let Some(pool) = self
            .gw
            .snapshot
            .load()
            .pools
            .get(crate::config::ENGINE_UPSTREAM)
        {
            for ep in &pool.endpoints {
                ep.set_healthy(true);
            }
        }
        self.gw.set_ready(true);
        reasoning_engine::serve(engine, listener, async move {
            let _ = shutdown.changed().await;
        })
        .await;
    }
}
