//! A counting TCP proxy on 127.0.0.1 for S5: forwards every connection to the server and
//! counts the TCP payload bytes each way (HTTP upgrade and WebSocket frames as sent; TCP/IP
//! headers and handshakes are not counted), as the peer harness's proxy does.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream};
use tokio::runtime::Runtime;

use crate::Result;

/// Bytes counted since the last reset.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Bytes {
    /// Client to server.
    pub(crate) up: u64,
    /// Server to client.
    pub(crate) down: u64,
    /// Connections accepted.
    pub(crate) connections: u64,
}

impl Bytes {
    /// Both directions.
    pub(crate) fn total(&self) -> u64 {
        self.up + self.down
    }
}

#[derive(Default)]
struct Counters {
    up: AtomicU64,
    down: AtomicU64,
    connections: AtomicU64,
    open: AtomicUsize,
}

/// The proxy: its own small tokio runtime, so the harness stays synchronous.
pub(crate) struct Proxy {
    runtime: Runtime,
    port: u16,
    counters: Arc<Counters>,
}

impl Proxy {
    /// Listens on 127.0.0.1 (a port the system chooses) and forwards to `target_port`.
    pub(crate) fn start(target_port: u16) -> Result<Proxy> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("bench-proxy")
            .enable_io()
            .build()?;
        let listener = runtime.block_on(TcpListener::bind("127.0.0.1:0"))?;
        let port = listener.local_addr()?.port();
        let counters = Arc::new(Counters::default());
        let shared = counters.clone();
        runtime.spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let counters = shared.clone();
                counters.connections.fetch_add(1, Ordering::SeqCst);
                counters.open.fetch_add(1, Ordering::SeqCst);
                tokio::spawn(async move {
                    if let Ok(server) = TcpStream::connect(("127.0.0.1", target_port)).await {
                        forward(client, server, &counters).await;
                    }
                    counters.open.fetch_sub(1, Ordering::SeqCst);
                });
            }
        });
        Ok(Proxy {
            runtime,
            port,
            counters,
        })
    }

    /// The port clients connect to.
    pub(crate) fn port(&self) -> u16 {
        self.port
    }

    /// Zeroes the counters.
    pub(crate) fn reset(&self) {
        self.counters.up.store(0, Ordering::SeqCst);
        self.counters.down.store(0, Ordering::SeqCst);
        self.counters.connections.store(0, Ordering::SeqCst);
    }

    /// The counts so far, once every proxied connection has closed (at most 3 s of waiting:
    /// a one-shot replicator closes its WebSocket as it stops, and the last close frames
    /// may pass just after `sync_once` returned).
    pub(crate) fn snapshot(&self) -> Bytes {
        let until = Instant::now() + Duration::from_secs(3);
        while self.counters.open.load(Ordering::SeqCst) > 0 && Instant::now() < until {
            std::thread::sleep(Duration::from_millis(1));
        }
        Bytes {
            up: self.counters.up.load(Ordering::SeqCst),
            down: self.counters.down.load(Ordering::SeqCst),
            connections: self.counters.connections.load(Ordering::SeqCst),
        }
    }

    /// Stops accepting and drops every connection.
    pub(crate) fn stop(self) {
        self.runtime.shutdown_timeout(Duration::from_secs(1));
    }
}

/// Copies both ways until both directions ended.
async fn forward(client: TcpStream, server: TcpStream, counters: &Counters) {
    let _ = client.set_nodelay(true);
    let _ = server.set_nodelay(true);
    let (client_read, client_write) = client.into_split();
    let (server_read, server_write) = server.into_split();
    tokio::join!(
        copy(client_read, server_write, &counters.up),
        copy(server_read, client_write, &counters.down),
    );
}

/// Copies one direction, counting, and passes the end of stream on.
async fn copy(mut from: OwnedReadHalf, mut to: OwnedWriteHalf, count: &AtomicU64) {
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        match from.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                count.fetch_add(n as u64, Ordering::SeqCst);
                if to.write_all(&buf[..n]).await.is_err() {
                    break;
                }
            }
        }
    }
    let _ = to.shutdown().await;
}
