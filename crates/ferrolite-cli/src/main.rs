//! `ferrolite`: the command line. `ferrolite serve` runs a Sync-Gateway-compatible server.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand};
use ferrolite_gateway::{GatewayConfig, Storage};

/// ferrolite command line.
#[derive(Debug, Parser)]
#[command(name = "ferrolite", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Runs a Sync-Gateway-compatible server (public API on 4984, admin API on 4985 by default).
    Serve {
        /// Configuration file (Sync Gateway legacy JSON shape).
        #[arg(long, value_name = "FILE")]
        config: Option<PathBuf>,
        /// Keep every database in memory (nothing is written to disk).
        #[arg(long, conflicts_with = "data")]
        in_memory: bool,
        /// Directory of the on-disk databases (overrides the configuration's `data_dir`).
        #[arg(long, value_name = "DIR")]
        data: Option<PathBuf>,
    },
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .init();
    match run(Cli::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// Runs one subcommand.
fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Serve {
            config,
            in_memory,
            data,
        } => {
            let config = match config {
                Some(path) => GatewayConfig::from_file(&path)?,
                None => GatewayConfig::default(),
            };
            let storage = if in_memory {
                Storage::InMemory
            } else {
                Storage::Directory(data.unwrap_or_else(|| config.effective_data_dir()))
            };
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()
                .context("starting the runtime")?;
            runtime.block_on(async move {
                let gateway = ferrolite_gateway::Gateway::start(&config, storage).await?;
                eprintln!(
                    "ferrolite gateway: public API on http://{}, admin API on http://{}",
                    gateway.public_addr(),
                    gateway.admin_addr()
                );
                wait_for_stop_signal().await?;
                eprintln!("ferrolite gateway: stopping");
                gateway.shutdown().await;
                Ok(())
            })
        }
    }
}

/// Waits for Ctrl-C (SIGINT) or, on Unix, SIGTERM: what a terminal or a service manager sends.
async fn wait_for_stop_signal() -> anyhow::Result<()> {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        let mut terminate = signal(SignalKind::terminate()).context("listening for SIGTERM")?;
        tokio::select! {
            result = tokio::signal::ctrl_c() => result.context("waiting for Ctrl-C"),
            _ = terminate.recv() => Ok(()),
        }
    }
    #[cfg(not(unix))]
    {
        tokio::signal::ctrl_c().await.context("waiting for Ctrl-C")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn cli_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn parses_serve() {
        let cli = Cli::try_parse_from(["ferrolite", "serve", "--in-memory"]).unwrap();
        assert!(matches!(
            cli.command,
            Command::Serve {
                in_memory: true,
                ..
            }
        ));
        assert!(Cli::try_parse_from(["ferrolite", "serve", "--in-memory", "--data", "x"]).is_err());
    }
}
