//! A Sync-Gateway-compatible server for ferrolite databases.
//!
//! [`Gateway`] serves Sync Gateway's REST API (a subset: documents, `_all_docs`,
//! `_bulk_docs`, `_changes`, users, sessions) and `/{db}/_blipsync` replication on a
//! public and an admin listener, configured by a [`GatewayConfig`] in Sync Gateway's
//! legacy JSON shape. Documents written over REST go through the facade's
//! [`Database`], so replication sees them at once.
//!
//! Reads are filtered by channel: documents are routed by the default sync function
//! ([`channels::DefaultSyncRouter`], `channel(doc.channels)`), and a public request reads
//! only documents in a channel of its user's `admin_channels` (`*` = all); the admin port
//! reads everything. Over `_blipsync`, a public peer pulls only the documents it can read.
//!
//! Not yet: a configured (JavaScript) sync function (stored, never run), persisted users and
//! sessions (kept in memory).

mod blipsync;
pub mod channels;
pub mod config;
mod error;
mod rest;
mod state;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use ferrolite::{Database, DatabaseConfiguration};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;

pub use config::{ConfigError, GatewayConfig};
pub use rest::MAX_BODY_SIZE;

use crate::rest::AppState;
use crate::state::{Db, Shared};

/// Where the gateway keeps its databases.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Storage {
    /// In memory: everything is lost when the gateway stops.
    InMemory,
    /// On disk, database `name` in `<directory>/<name>.ferrolite/`.
    Directory(PathBuf),
}

/// Why a gateway could not start.
#[derive(Debug, thiserror::Error)]
pub enum GatewayError {
    /// The configuration is invalid.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// A database could not be opened.
    #[error("cannot open database {name:?}: {source}")]
    Database {
        /// The database.
        name: String,
        /// Why.
        source: ferrolite::Error,
    },
    /// A listener could not bind its address.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// Why.
        source: std::io::Error,
    },
}

/// A running gateway: a public and an admin HTTP listener on the current tokio runtime.
#[derive(Debug)]
pub struct Gateway {
    public_addr: SocketAddr,
    admin_addr: SocketAddr,
    shared: Arc<Shared>,
    stop: watch::Sender<bool>,
    tasks: Vec<JoinHandle<()>>,
}

impl Gateway {
    /// Opens the configured databases and starts both listeners. Must be called inside a
    /// multi-thread tokio runtime, which then runs the gateway.
    pub async fn start(config: &GatewayConfig, storage: Storage) -> Result<Gateway, GatewayError> {
        let public = config.public_addr()?;
        let admin = config.admin_addr()?;
        let mut databases = HashMap::new();
        for (name, db_config) in config.effective_databases() {
            let opened = match &storage {
                Storage::InMemory => Database::open_in_memory(&name),
                Storage::Directory(dir) => {
                    let mut c = DatabaseConfiguration::new(dir);
                    if let Some(limit) = db_config.revs_limit {
                        c = c.with_max_rev_tree_depth(limit);
                    }
                    Database::open(&name, &c)
                }
            };
            let database = opened.map_err(|source| GatewayError::Database {
                name: name.clone(),
                source,
            })?;
            let db = Db::new(name.clone(), database, db_config);
            db.channels
                .rebuild(&db.database, &*db.router)
                .map_err(|source| GatewayError::Database {
                    name: name.clone(),
                    source,
                })?;
            databases.insert(name, Arc::new(db));
        }
        let shared = Arc::new(Shared { databases });
        let (stop, stopped) = watch::channel(false);
        let mut tasks = Vec::new();
        let mut addrs = Vec::new();
        for (addr, is_admin) in [(public, false), (admin, true)] {
            let listener = TcpListener::bind(addr)
                .await
                .map_err(|source| GatewayError::Bind { addr, source })?;
            let local = listener
                .local_addr()
                .map_err(|source| GatewayError::Bind { addr, source })?;
            addrs.push(local);
            let router = rest::router(AppState {
                shared: shared.clone(),
                admin: is_admin,
            });
            let mut stopped = stopped.clone();
            tasks.push(tokio::spawn(async move {
                let serve = axum::serve(listener, router).with_graceful_shutdown(async move {
                    let _ = stopped.wait_for(|s| *s).await;
                });
                if let Err(e) = serve.await {
                    tracing::warn!(target: "ferrolite::gateway", %local, "listener failed: {e}");
                }
            }));
            tracing::info!(target: "ferrolite::gateway", %local, admin = is_admin, "listening");
        }
        Ok(Gateway {
            public_addr: addrs[0],
            admin_addr: addrs[1],
            shared,
            stop,
            tasks,
        })
    }

    /// The address of the public listener (the port the system chose for port 0).
    pub fn public_addr(&self) -> SocketAddr {
        self.public_addr
    }

    /// The address of the admin listener.
    pub fn admin_addr(&self) -> SocketAddr {
        self.admin_addr
    }

    /// A served database, by name.
    pub fn database(&self, name: &str) -> Option<Database> {
        self.shared
            .databases
            .get(name)
            .map(|db| db.database.clone())
    }

    /// Stops accepting requests, waits for the HTTP requests in progress, and closes the
    /// databases.
    pub async fn shutdown(self) {
        let _ = self.stop.send(true);
        for task in self.tasks {
            let _ = task.await;
        }
        for db in self.shared.databases.values() {
            if let Err(e) = db.database.close() {
                tracing::warn!(target: "ferrolite::gateway", database = %db.name, "closing: {e}");
            }
        }
    }
}
