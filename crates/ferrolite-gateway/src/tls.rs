//! HTTPS on the gateway's listeners: the configured certificate and key, a TLS handshake
//! per accepted connection, then HTTP/1.1 on the encrypted stream, with upgrades so that
//! `/{db}/_blipsync` becomes `wss://`.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use ferrolite::transport::{Certificate, TlsIdentity, TransportError};
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio_rustls::TlsAcceptor;

use crate::config::TlsFiles;
use crate::GatewayError;

/// How long a client has to complete the TLS handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a client has to send a request's headers (hyper's default, made explicit).
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(30);

/// The TLS side of both listeners, built once from the configured files.
#[derive(Clone)]
pub(crate) struct TlsServer {
    acceptor: TlsAcceptor,
}

impl std::fmt::Debug for TlsServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsServer").finish_non_exhaustive()
    }
}

fn file_error(what: &'static str, path: &Path, message: impl Into<String>) -> GatewayError {
    GatewayError::Tls {
        what,
        path: path.to_owned(),
        message: message.into(),
    }
}

/// The reason alone, without "invalid configuration: ".
fn reason(e: TransportError) -> String {
    match e {
        TransportError::InvalidConfig(reason) => reason,
        other => other.to_string(),
    }
}

impl TlsServer {
    /// Reads and checks the certificate chain and its private key.
    pub(crate) fn load(files: &TlsFiles) -> Result<TlsServer, GatewayError> {
        const CERT: &str = "certificate";
        const KEY: &str = "private key";
        let cert_pem = std::fs::read_to_string(&files.cert)
            .map_err(|e| file_error(CERT, &files.cert, e.to_string()))?;
        // Parsed on its own first, so that an error names the right file.
        Certificate::from_pem(&cert_pem).map_err(|e| file_error(CERT, &files.cert, reason(e)))?;
        let key_pem = std::fs::read_to_string(&files.key)
            .map_err(|e| file_error(KEY, &files.key, e.to_string()))?;
        let identity = TlsIdentity::from_pem(&cert_pem, &key_pem)
            .map_err(|e| file_error(KEY, &files.key, reason(e)))?;
        let mut config = identity.rustls_server_config().map_err(|e| {
            file_error(
                KEY,
                &files.key,
                format!(
                    "{} (is it the key of the certificate {}?)",
                    reason(e),
                    files.cert.display()
                ),
            )
        })?;
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(TlsServer {
            acceptor: TlsAcceptor::from(Arc::new(config)),
        })
    }
}

/// Serves `router` over HTTPS on `listener` until `stopped` turns true (or its sender is
/// dropped), then stops accepting and returns when the connections in progress are done:
/// each is told to close after its current request.
pub(crate) async fn serve(
    listener: TcpListener,
    router: Router,
    tls: TlsServer,
    mut stopped: watch::Receiver<bool>,
) {
    // Each connection task holds a receiver; `closed()` resolves when the last one is gone.
    let (open_tx, open_rx) = watch::channel(());
    loop {
        let accepted = tokio::select! {
            () = stop_signal(&mut stopped) => break,
            accepted = listener.accept() => accepted,
        };
        let (stream, peer) = match accepted {
            Ok(pair) => pair,
            Err(e) if is_connection_error(&e) => continue,
            Err(e) => {
                // Out of file descriptors and the like: back off.
                tracing::warn!(target: "ferrolite::gateway", "accept failed: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let open = open_rx.clone();
        let task = serve_connection(
            stream,
            peer,
            tls.acceptor.clone(),
            router.clone(),
            stopped.clone(),
        );
        tokio::spawn(async move {
            task.await;
            drop(open);
        });
    }
    drop(listener);
    drop(open_rx);
    open_tx.closed().await;
}

/// Resolves when the gateway stops (or was dropped without stopping).
async fn stop_signal(stopped: &mut watch::Receiver<bool>) {
    let _ = stopped.wait_for(|s| *s).await;
}

/// Errors of one connection that say nothing about the listener.
fn is_connection_error(e: &std::io::Error) -> bool {
    matches!(
        e.kind(),
        std::io::ErrorKind::ConnectionRefused
            | std::io::ErrorKind::ConnectionAborted
            | std::io::ErrorKind::ConnectionReset
    )
}

/// The TLS handshake (bounded in time, abandoned on stop), then HTTP/1.1 until the client
/// leaves, the connection is upgraded, or the gateway stops.
async fn serve_connection(
    stream: TcpStream,
    peer: SocketAddr,
    acceptor: TlsAcceptor,
    router: Router,
    mut stopped: watch::Receiver<bool>,
) {
    let handshake = tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream));
    let stream = tokio::select! {
        () = stop_signal(&mut stopped) => return,
        done = handshake => match done {
            Ok(Ok(stream)) => stream,
            Ok(Err(e)) => {
                tracing::debug!(target: "ferrolite::gateway", %peer, "TLS handshake failed: {e}");
                return;
            }
            Err(_) => {
                tracing::debug!(target: "ferrolite::gateway", %peer, "TLS handshake timed out");
                return;
            }
        },
    };
    let connection = http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_READ_TIMEOUT)
        .serve_connection(TokioIo::new(stream), TowerToHyperService::new(router))
        .with_upgrades();
    let mut connection = std::pin::pin!(connection);
    let served = tokio::select! {
        served = connection.as_mut() => served,
        () = stop_signal(&mut stopped) => {
            connection.as_mut().graceful_shutdown();
            connection.as_mut().await
        }
    };
    if let Err(e) = served {
        tracing::debug!(target: "ferrolite::gateway", %peer, "HTTPS connection ended: {e}");
    }
}
