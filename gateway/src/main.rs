//! `reasoning-gateway`: parses the command line and calls the library.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use reasoning_gateway::telemetry::{self, LogFormat};

/// Sidecar gateway and observability proxy for reasoning LLMs.
#[derive(Parser)]
#[command(name = "reasoning-gateway", version, about)]
struct Cli {
    /// Log line format.
    #[arg(long, value_enum, default_value = "text", global = true)]
    log_format: LogFormat,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the gateway.
    Serve {
        /// Gateway config file (YAML).
        #[arg(long)]
        config: PathBuf,
    },
    /// Validate a config file and print every error with its YAML path.
    Check {
        /// Gateway config file (YAML).
        #[arg(long)]
        config: PathBuf,
    },
    /// Size a fleet from observed latency by reasoning length: share meeting a p95 target, the
    /// reasoning-length breakpoint, replicas for a request rate.
    Capacity {
        /// The gateway's metrics: `http://HOST:PORT/metrics` (admin listener) or a saved file.
        #[arg(
            long,
            conflicts_with = "prometheus",
            required_unless_present = "prometheus"
        )]
        metrics: Option<String>,
        /// A Prometheus server scraping the gateway, e.g. `http://127.0.0.1:9091`.
        #[arg(long)]
        prometheus: Option<String>,
        /// Prometheus range to read (with --prometheus), or `all` for everything since the
        /// gateways started.
        #[arg(long, default_value = "1h")]
        window: String,
        /// Latency target for the 95th percentile, e.g. `30s`.
        #[arg(long)]
        target_p95: String,
        /// Request rate to size for (requests per second).
        #[arg(long)]
        rate: Option<f64>,
        /// Requests one replica serves at once (e.g. vLLM max_num_seqs, engine max_seqs).
        #[arg(long, default_value_t = 8)]
        slots: usize,
        /// Highest planned utilisation of those slots.
        #[arg(long, default_value_t = 0.8)]
        utilisation: f64,
        /// Only this route.
        #[arg(long)]
        route: Option<String>,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    if matches!(cli.command, Command::Serve { .. }) {
        // Before any thread starts: they inherit the blocked SIGINT.
        reasoning_gateway::server::ctrl_c_stops_gracefully();
    }
    telemetry::init(cli.log_format);
    match cli.command {
        Command::Capacity {
            metrics,
            prometheus,
            window,
            target_p95,
            rate,
            slots,
            utilisation,
            route,
        } => match capacity(
            metrics,
            prometheus,
            &window,
            &target_p95,
            rate,
            slots,
            utilisation,
            route,
        ) {
            Ok(report) => {
                print!("{report}");
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("error: {e:#}");
                ExitCode::FAILURE
            }
        },
        Command::Serve { config } => match reasoning_gateway::server::run(&config) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("error: {e}");
                ExitCode::FAILURE
            }
        },
        Command::Check { config } => match reasoning_gateway::server::check(&config) {
            Ok(c) => {
                println!(
                    "{}: ok ({} routes, {} upstreams)",
                    config.display(),
                    c.routes.len(),
                    c.upstreams.len()
                );
                for notice in c.notices() {
                    println!("  note: {notice}");
                }
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("{}: invalid", config.display());
                for line in e.to_string().lines() {
                    eprintln!("  {line}");
                }
                ExitCode::FAILURE
            }
        },
    }
}

#[allow(clippy::too_many_arguments)]
fn capacity(
    metrics: Option<String>,
    prometheus: Option<String>,
    window: &str,
    target_p95: &str,
    rate: Option<f64>,
    slots: usize,
    utilisation: f64,
    route: Option<String>,
) -> anyhow::Result<String> {
    use reasoning_gateway::capacity;
    let target = reasoning_gateway::config::parse_duration(target_p95)
        .filter(|d| !d.is_zero())
        .ok_or_else(|| anyhow::anyhow!("--target-p95 `{target_p95}` is not a duration like 30s"))?;
    anyhow::ensure!(slots > 0, "--slots must be at least 1");
    anyhow::ensure!(
        utilisation > 0.0 && utilisation <= 1.0,
        "--utilisation must be in (0, 1]"
    );
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let by = match (metrics, prometheus) {
        (_, Some(p)) => rt.block_on(capacity::from_prometheus(&p, window, route.as_deref()))?,
        (Some(m), None) if m.starts_with("http://") => {
            let text = rt.block_on(capacity::http_get(&m))?;
            capacity::from_exposition(&text, route.as_deref())
        }
        (Some(m), None) => {
            capacity::from_exposition(&std::fs::read_to_string(&m)?, route.as_deref())
        }
        (None, None) => anyhow::bail!("give --metrics or --prometheus"),
    };
    anyhow::ensure!(
        by.values().any(|h| h.count > 0.0),
        "no observations of reasoning_gateway_request_duration_by_reasoning_length_seconds yet"
    );
    let plan = capacity::Plan {
        target,
        rate,
        slots,
        utilisation,
    };
    Ok(capacity::analyse(&by, &plan).1)
}
