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
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    telemetry::init(cli.log_format);
    match cli.command {
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
