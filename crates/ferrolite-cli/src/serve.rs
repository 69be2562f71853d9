//! `ferrolite serve`: the gateway until interrupted.

use std::path::PathBuf;

use anyhow::Context;
use ferrolite_gateway::{GatewayConfig, Storage};

/// Runs the gateway with `config` (or the embedded defaults) until Ctrl-C or SIGTERM.
pub(crate) fn run(
    config: Option<PathBuf>,
    in_memory: bool,
    data: Option<PathBuf>,
) -> anyhow::Result<()> {
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
        let scheme = if gateway.is_tls() { "https" } else { "http" };
        eprintln!(
            "ferrolite gateway: public API on {scheme}://{}, admin API on {scheme}://{}",
            gateway.public_addr(),
            gateway.admin_addr()
        );
        wait_for_stop_signal().await?;
        eprintln!("ferrolite gateway: stopping");
        gateway.shutdown().await;
        Ok(())
    })
}

/// Waits for Ctrl-C (SIGINT) or, on Unix, SIGTERM: what a terminal or a service manager sends.
pub(crate) async fn wait_for_stop_signal() -> anyhow::Result<()> {
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
