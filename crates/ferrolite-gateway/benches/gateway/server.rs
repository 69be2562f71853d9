//! The server role (`--role server --config FILE --dir DIR`): a gateway on its own, in its
//! own process, so that its CPU time and peak memory are its alone.
//!
//! It raises its open-file limit, starts [`Gateway`] with the configuration (listeners on
//! 127.0.0.1, ports chosen by the system) and on-disk databases in `DIR`, on a
//! multi-thread tokio runtime as the command-line server does, and prints one line,
//! `{"public":P,"admin":A,"nofile":N}`. It stops when it reads `quit` (or its stdin
//! closes), then prints `{"stopped":true}`.

use std::io::BufRead;
use std::path::Path;

use ferrolite_gateway::{Gateway, GatewayConfig, Storage};
use serde_json::json;

use crate::{procfs, Result};

/// Runs the gateway until `quit`.
pub(crate) fn run(config: &Path, dir: &Path) -> Result<()> {
    let nofile = procfs::raise_nofile()?;
    let config = GatewayConfig::from_file(config)?;
    let storage = Storage::Directory(dir.to_owned());
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async move {
        let gateway = Gateway::start(&config, storage).await?;
        println!(
            "{}",
            json!({
                "public": gateway.public_addr().port(),
                "admin": gateway.admin_addr().port(),
                "nofile": nofile,
            })
        );
        tokio::task::spawn_blocking(|| {
            for line in std::io::stdin().lock().lines() {
                match line {
                    Ok(line) if line.trim() == "quit" => break,
                    Ok(_) => {}
                    Err(_) => break,
                }
            }
        })
        .await?;
        gateway.shutdown().await;
        println!("{}", json!({ "stopped": true }));
        Ok(())
    })
}
