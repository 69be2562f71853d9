//! A Sync-Gateway-compatible server for ferrolite databases.
//!
//! [`Gateway`] serves Sync Gateway's REST API (documents, attachments, `_all_docs`,
//! `_bulk_docs`, `_changes`, users, roles, sessions) and `/{db}/_blipsync` replication on a
//! public and an admin listener, configured by a [`GatewayConfig`] in Sync Gateway's legacy
//! JSON shape. Documents written over REST go through the facade's [`Database`], so
//! replication sees them at once.
//!
//! Every write, over REST or replication, goes through the database's sync function (the
//! configured JavaScript, or [`channels::DefaultSyncRouter`], `channel(doc.channels)`),
//! which routes it into channels, grants access and roles, or refuses it. An indexer keeps
//! each channel's log of changes, so a user's feed reads only its channels. Public requests
//! see only documents in the channels their user can read (`admin_channels`, roles,
//! `access()` grants, the public `!`; `*` = all); the admin port sees everything. Users,
//! roles and sessions are saved beside the database, passwords as Argon2id hashes.
//!
//! With a certificate and key configured (`SSLCert`/`SSLKey`, or `api.https`), both
//! listeners serve HTTPS only, and replication is `wss://`.

mod blipsync;
pub mod channels;
pub mod config;
mod error;
mod feeds;
mod peer;
mod principals;
mod rest;
mod state;
mod tls;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use ferrolite::{Database, DatabaseConfiguration, ListenerToken};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;

pub use config::{ConfigError, GatewayConfig};
pub use rest::MAX_BODY_SIZE;

use crate::channels::{DefaultSyncRouter, SyncRouter};
use crate::config::DatabaseConfig;
use crate::principals::{hash_password, Principals, PrincipalsError, Role, User, GUEST};
use crate::rest::AppState;
use crate::state::{Db, Shared};
use ferrolite_sync_function::{JsOptions, JsSyncFunction};

/// How long a stopping gateway waits for its replication sessions to end.
const SESSION_DRAIN: std::time::Duration = std::time::Duration::from_secs(5);

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
    /// The saved users of a database could not be loaded or updated.
    #[error("cannot load the users of database {name:?}: {message}")]
    Users {
        /// The database.
        name: String,
        /// Why.
        message: String,
    },
    /// The configured sync function does not compile.
    #[error("database {name:?}: {message}")]
    SyncFunction {
        /// The database.
        name: String,
        /// The error, with its line and column.
        message: String,
    },
    /// The configured TLS certificate or private key cannot be read or used.
    #[error("cannot use the TLS {what} {}: {message}", path.display())]
    Tls {
        /// `"certificate"` or `"private key"`.
        what: &'static str,
        /// The file, as configured.
        path: PathBuf,
        /// Why.
        message: String,
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

/// A running gateway: a public and an admin HTTP (or HTTPS) listener on the current tokio
/// runtime.
#[derive(Debug)]
pub struct Gateway {
    public_addr: SocketAddr,
    admin_addr: SocketAddr,
    shared: Arc<Shared>,
    stop: watch::Sender<bool>,
    tasks: Vec<JoinHandle<()>>,
    /// Each database with the listener feeding its indexer thread.
    indexers: Vec<(Arc<Db>, ListenerToken)>,
    tls: bool,
}

impl Gateway {
    /// Opens the configured databases and starts both listeners. Must be called inside a
    /// multi-thread tokio runtime, which then runs the gateway.
    pub async fn start(config: &GatewayConfig, storage: Storage) -> Result<Gateway, GatewayError> {
        let public = config.public_addr()?;
        let admin = config.admin_addr()?;
        let tls = match config.tls_files()? {
            Some(files) => Some(tls::TlsServer::load(&files)?),
            None => None,
        };
        let mut databases = HashMap::new();
        let mut indexers = Vec::new();
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
            let users_file = match &storage {
                Storage::InMemory => None,
                Storage::Directory(dir) => Some(dir.join(format!("{name}.users.json"))),
            };
            let users_error = |message: String| GatewayError::Users {
                name: name.clone(),
                message,
            };
            let principals =
                Principals::open(users_file).map_err(|e| users_error(e.to_string()))?;
            let since = database
                .last_sequence()
                .map_err(|source| GatewayError::Database {
                    name: name.clone(),
                    source,
                })?;
            apply_configured_principals(&principals, &db_config, since)
                .map_err(|e| users_error(e.to_string()))?;
            let router = sync_router(&db_config).map_err(|message| GatewayError::SyncFunction {
                name: name.clone(),
                message,
            })?;
            let deltas = db_config.delta_sync.as_ref().is_some_and(|d| d.enabled);
            let db = Arc::new(Db::new(name.clone(), database, router, principals, deltas));
            db.catch_up().map_err(|source| GatewayError::Database {
                name: name.clone(),
                source,
            })?;
            indexers.push((db.clone(), start_indexer(&db)));
            databases.insert(name, db);
        }
        let (stop, stopped) = watch::channel(false);
        let shared = Arc::new(Shared::new(databases, stopped.clone()));
        let mut tasks = Vec::new();
        let mut addrs = Vec::new();
        if !admin.ip().is_loopback() {
            tracing::warn!(target: "ferrolite::gateway", %admin,
                "the admin interface, which needs no credentials, is reachable from other machines; keep it on a loopback address (127.0.0.1) unless a firewall guards it");
        }
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
                secure: tls.is_some(),
            });
            let mut stopped = stopped.clone();
            if let Some(tls) = &tls {
                tasks.push(tokio::spawn(tls::serve(
                    listener,
                    router,
                    tls.clone(),
                    stopped,
                )));
            } else {
                tasks.push(tokio::spawn(async move {
                    let serve = axum::serve(listener, router).with_graceful_shutdown(async move {
                        let _ = stopped.wait_for(|s| *s).await;
                    });
                    if let Err(e) = serve.await {
                        tracing::warn!(target: "ferrolite::gateway", %local, "listener failed: {e}");
                    }
                }));
            }
            tracing::info!(target: "ferrolite::gateway", %local, admin = is_admin, tls = tls.is_some(), "listening");
        }
        Ok(Gateway {
            public_addr: addrs[0],
            admin_addr: addrs[1],
            shared,
            stop,
            tasks,
            indexers,
            tls: tls.is_some(),
        })
    }

    /// The address of the public listener (the port the system chose for port 0).
    pub fn public_addr(&self) -> SocketAddr {
        self.public_addr
    }

    /// Whether both listeners serve HTTPS (and `wss://`).
    pub fn is_tls(&self) -> bool {
        self.tls
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
        // Sessions were told to close (1001) by the same signal; their last writes commit.
        self.shared.drain_sessions(SESSION_DRAIN).await;
        for (db, token) in self.indexers {
            db.database.remove_change_listener(token);
        }
        for db in self.shared.databases.values() {
            if let Err(e) = db.database.close() {
                tracing::warn!(target: "ferrolite::gateway", database = %db.name, "closing: {e}");
            }
        }
    }
}

/// The database's routing: its configured sync function, or the default.
fn sync_router(config: &DatabaseConfig) -> Result<Arc<dyn SyncRouter>, String> {
    match config.sync.as_deref() {
        None => Ok(Arc::new(DefaultSyncRouter)),
        Some(source) if source.trim().is_empty() => Ok(Arc::new(DefaultSyncRouter)),
        Some(source) => {
            let mut options = JsOptions::default();
            if let Some(secs) = config.javascript_timeout_secs.filter(|s| *s > 0) {
                options = options.with_time_limit(std::time::Duration::from_secs(secs));
            }
            let function = JsSyncFunction::new(source, options).map_err(|e| e.to_string())?;
            Ok(Arc::new(function))
        }
    }
}

/// Keeps the sequences of the names still listed, gives `since` to the new ones.
fn merge_grants(
    current: &std::collections::BTreeMap<String, u64>,
    configured: &[String],
    since: u64,
) -> std::collections::BTreeMap<String, u64> {
    configured
        .iter()
        .map(|c| (c.clone(), current.get(c).copied().unwrap_or(since)))
        .collect()
}

/// Creates or updates the users and roles of the configuration (a password is hashed again
/// only when it changed).
fn apply_configured_principals(
    principals: &Principals,
    config: &DatabaseConfig,
    since: u64,
) -> Result<(), PrincipalsError> {
    principals.update(|users, roles| {
        // Channels a configured role or user no longer has (a client reconnecting from an
        // older checkpoint is told; those still readable another way are left out then).
        let mut lost: std::collections::BTreeMap<String, Vec<String>> = Default::default();
        for (name, c) in &config.roles {
            let role = roles.entry(name.clone()).or_insert_with(Role::default);
            let dropped = dropped(&role.admin_channels, &c.admin_channels);
            if !dropped.is_empty() {
                for (user_name, user) in users.iter() {
                    if user.admin_roles.contains_key(name) {
                        lost.entry(user_name.clone())
                            .or_default()
                            .extend(dropped.iter().cloned());
                    }
                }
            }
            role.admin_channels = merge_grants(&role.admin_channels, &c.admin_channels, since);
        }
        for (name, c) in &config.users {
            let user = users.entry(name.clone()).or_insert_with(User::default);
            let entry = lost.entry(name.clone()).or_default();
            entry.extend(dropped(&user.admin_channels, &c.admin_channels));
            for role in dropped(&user.admin_roles, &c.admin_roles) {
                if let Some(role) = roles.get(&role) {
                    entry.extend(role.admin_channels.keys().cloned());
                }
            }
            if let Some(password) = &c.password {
                let same = user
                    .password_hash
                    .as_deref()
                    .is_some_and(|h| principals::verify_password(h, password));
                if !same {
                    user.password_hash = hash_password(password);
                }
            }
            user.admin_channels = merge_grants(&user.admin_channels, &c.admin_channels, since);
            user.admin_roles = merge_grants(&user.admin_roles, &c.admin_roles, since);
            // GUEST is disabled unless configured otherwise; other users are enabled.
            user.disabled = c.disabled.unwrap_or(name == GUEST);
            if c.email.is_some() {
                user.email.clone_from(&c.email);
            }
        }
        for (name, channels) in lost {
            if let Some(user) = users.get_mut(&name) {
                for channel in channels {
                    user.revoke(channel, since);
                }
            }
        }
    })
}

/// The names in `current` that `configured` no longer lists.
fn dropped(
    current: &std::collections::BTreeMap<String, u64>,
    configured: &[String],
) -> Vec<String> {
    current
        .keys()
        .filter(|name| !configured.contains(name))
        .cloned()
        .collect()
}

/// Indexes each database's commits on a thread of its own as they happen; the thread ends
/// when the returned listener is removed.
fn start_indexer(db: &Arc<Db>) -> ListenerToken {
    let (tx, rx) = std::sync::mpsc::channel::<()>();
    let token = db.database.add_change_listener(move |_| {
        let _ = tx.send(());
    });
    let weak = Arc::downgrade(db);
    let spawned = std::thread::Builder::new()
        .name("ferrolite-gateway-index".into())
        .spawn(move || {
            while rx.recv().is_ok() {
                while rx.try_recv().is_ok() {}
                let Some(db) = weak.upgrade() else { break };
                if let Err(e) = db.catch_up() {
                    tracing::warn!(target: "ferrolite::gateway", database = %db.name, "indexing failed: {e}");
                }
            }
        });
    if let Err(e) = spawned {
        tracing::error!(target: "ferrolite::gateway", "cannot start the indexer: {e}");
    }
    token
}
