//! The OTLP trace exporter: a bounded queue in front of one export thread. Requests hand their
//! finished spans over without waiting ([`Traces::submit`] never blocks); when the collector is
//! slow or down the queue fills and further spans are dropped and counted, so a collector's
//! trouble never reaches a request's latency.

use std::collections::HashMap;
use std::time::Duration;

use opentelemetry_otlp::{Protocol, WithExportConfig, WithHttpConfig, WithTonicConfig};
use opentelemetry_sdk::trace::{SpanData, SpanExporter as _};
use prometheus::IntCounter;
use tokio::sync::mpsc;

use crate::config::{OtlpConfig, OtlpProtocol};

/// Spans sent in one export at most.
const MAX_BATCH: usize = 512;

/// What the exporter counts (from [`crate::metrics::Metrics`]).
#[derive(Clone)]
pub struct ExportCounters {
    /// Spans the collector accepted.
    pub exported: IntCounter,
    /// Spans dropped because the queue was full.
    pub dropped_queue_full: IntCounter,
    /// Spans dropped because their export failed or timed out.
    pub dropped_export_failed: IntCounter,
}

/// Export could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The exporter thread or its runtime could not be started.
    #[error("could not start the OTLP export thread: {0}")]
    Thread(#[from] std::io::Error),
    /// The exporter refused its configuration.
    #[error("the OTLP exporter could not be built: {0}")]
    Build(String),
}

/// The running exporter; spans go in through [`Traces::submit`].
pub struct Traces {
    tx: mpsc::Sender<SpanData>,
    counters: ExportCounters,
    /// The settings it runs with (sampling and content capture are read per request).
    pub config: OtlpConfig,
}

impl Traces {
    /// Starts the export thread (start-up only).
    pub fn start(config: &OtlpConfig, counters: ExportCounters) -> Result<Self, StartError> {
        let (tx, rx) = mpsc::channel(config.max_queue);
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let cfg = config.clone();
        let worker_counters = counters.clone();
        std::thread::Builder::new()
            .name("otlp-export".to_string())
            .spawn(move || {
                let rt = match tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                {
                    Ok(rt) => rt,
                    Err(e) => {
                        let _ = ready_tx.send(Err(StartError::Thread(e)));
                        return;
                    }
                };
                rt.block_on(async move {
                    // Built inside the runtime: the gRPC channel spawns its connection task.
                    let exporter = match build(&cfg) {
                        Ok(e) => e,
                        Err(e) => {
                            let _ = ready_tx.send(Err(e));
                            return;
                        }
                    };
                    let _ = ready_tx.send(Ok(()));
                    run(exporter, rx, cfg.timeout, worker_counters).await;
                });
            })?;
        match ready_rx.recv() {
            Ok(Ok(())) => Ok(Traces {
                tx,
                counters,
                config: config.clone(),
            }),
            Ok(Err(e)) => Err(e),
            Err(_) => Err(StartError::Build("the export thread ended".to_string())),
        }
    }

    /// Queues one request's spans for export; never waits. Spans that do not fit are dropped
    /// and counted.
    pub fn submit(&self, spans: Vec<SpanData>) {
        for span in spans {
            if self.tx.try_send(span).is_err() {
                self.counters.dropped_queue_full.inc();
            }
        }
    }
}

/// The exporter for the configured protocol.
fn build(cfg: &OtlpConfig) -> Result<opentelemetry_otlp::SpanExporter, StartError> {
    let exporter = match cfg.protocol {
        OtlpProtocol::HttpProtobuf => {
            let headers: HashMap<String, String> = cfg.headers.0.iter().cloned().collect();
            opentelemetry_otlp::SpanExporter::builder()
                .with_http()
                .with_protocol(Protocol::HttpBinary)
                .with_endpoint(cfg.endpoint.clone())
                .with_timeout(cfg.timeout)
                .with_headers(headers)
                .build()
        }
        OtlpProtocol::Grpc => {
            let mut headers = http::HeaderMap::new();
            for (k, v) in &cfg.headers.0 {
                // Validated as header names and values already.
                if let (Ok(k), Ok(v)) = (
                    http::HeaderName::from_bytes(k.as_bytes()),
                    http::HeaderValue::from_str(v),
                ) {
                    headers.insert(k, v);
                }
            }
            let metadata =
                opentelemetry_otlp::tonic_types::metadata::MetadataMap::from_headers(headers);
            opentelemetry_otlp::SpanExporter::builder()
                .with_tonic()
                .with_protocol(Protocol::Grpc)
                .with_endpoint(cfg.endpoint.clone())
                .with_timeout(cfg.timeout)
                .with_metadata(metadata)
                .build()
        }
    };
    let mut exporter = exporter.map_err(|e| StartError::Build(e.to_string()))?;
    exporter.set_resource(
        &opentelemetry_sdk::Resource::builder_empty()
            .with_service_name(cfg.service_name.clone())
            .build(),
    );
    Ok(exporter)
}

/// Exports whatever is queued, one batch at a time, until every sender is gone.
async fn run(
    exporter: opentelemetry_otlp::SpanExporter,
    mut rx: mpsc::Receiver<SpanData>,
    timeout: Duration,
    counters: ExportCounters,
) {
    let mut last_warning: Option<std::time::Instant> = None;
    while let Some(first) = rx.recv().await {
        let mut batch = vec![first];
        while batch.len() < MAX_BATCH {
            match rx.try_recv() {
                Ok(span) => batch.push(span),
                Err(_) => break,
            }
        }
        let n = batch.len() as u64;
        // The exporter has the same deadline; this one also bounds a collector that accepts
        // the connection and never answers.
        let result =
            tokio::time::timeout(timeout + Duration::from_millis(100), exporter.export(batch))
                .await;
        match result {
            Ok(Ok(())) => counters.exported.inc_by(n),
            failed => {
                counters.dropped_export_failed.inc_by(n);
                // One line a minute at most: a collector that is down must not flood the log.
                if last_warning.is_none_or(|t| t.elapsed() > Duration::from_secs(60)) {
                    last_warning = Some(std::time::Instant::now());
                    let error = match failed {
                        Ok(Err(e)) => e.to_string(),
                        _ => format!("no answer within {timeout:?}"),
                    };
                    tracing::warn!(spans = n, %error, "Exporting spans to the OTLP collector failed; they were dropped (counted in reasoning_gateway_otel_spans_dropped_total).");
                }
            }
        }
    }
}
