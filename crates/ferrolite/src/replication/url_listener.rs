//! [`UrlEndpointListener`]: the passive side over WebSocket, so other peers (ferrolite or
//! Couchbase Lite) can replicate with local databases.

use std::collections::HashMap;
use std::fmt;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use ferrolite_replicator::{serve_passive, PassiveOptions};
use ferrolite_transport::{AuthDecision, Listener, ListenerConfig, ListenerTls, TlsIdentity};
use tokio::task::{JoinHandle, JoinSet};

use super::runtime;
use crate::{Database, Error, ErrorCode, Result};

/// How long a stopping listener waits for its replication sessions to end after their
/// connections were closed.
const SESSION_DRAIN: Duration = Duration::from_secs(2);

type PasswordCheck = Arc<dyn Fn(&str, &str) -> bool + Send + Sync>;

#[derive(Clone)]
enum Tls {
    Off,
    Generated,
    Identity(TlsIdentity),
}

/// Settings of a [`UrlEndpointListener`], like Couchbase Lite's
/// `URLEndpointListenerConfiguration`.
///
/// Defaults: every network interface, a port chosen by the system, read-write, no
/// authentication, **no TLS**. Couchbase Lite enables TLS by default (with a generated
/// self-signed certificate); ferrolite leaves it off so a listener works out of the box
/// with `ws://` URLs in tests and on a trusted network. Call
/// [`disable_tls(false)`](Self::disable_tls) for the same generated certificate, or
/// [`tls_identity`](Self::tls_identity) to present your own; clients then pin
/// [`UrlEndpointListener::tls_certificate`] or accept self-signed certificates.
#[derive(Clone)]
pub struct UrlEndpointListenerConfiguration {
    databases: Vec<Database>,
    port: u16,
    network_interface: Option<String>,
    read_only: bool,
    authenticator: Option<PasswordCheck>,
    tls: Tls,
}

impl UrlEndpointListenerConfiguration {
    /// Serves these databases, each under its name: `ws://host:port/<name>`.
    pub fn new(databases: Vec<Database>) -> UrlEndpointListenerConfiguration {
        UrlEndpointListenerConfiguration {
            databases,
            port: 0,
            network_interface: None,
            read_only: false,
            authenticator: None,
            tls: Tls::Off,
        }
    }

    /// The TCP port; 0 (the default) lets the system choose one (see
    /// [`UrlEndpointListener::port`]).
    pub fn port(mut self, port: u16) -> Self {
        self.port = port;
        self
    }

    /// The IP address of the interface to listen on (for example `"127.0.0.1"`); all
    /// interfaces by default.
    pub fn network_interface(mut self, address: impl Into<String>) -> Self {
        self.network_interface = Some(address.into());
        self
    }

    /// With `true`, peers may pull but not push: their pushes are refused.
    pub fn read_only(mut self, read_only: bool) -> Self {
        self.read_only = read_only;
        self
    }

    /// Requires HTTP Basic credentials, accepted when `check(username, password)` returns
    /// `true`. Refused or missing credentials get HTTP 401, which a replicator reports as
    /// a WebSocket-domain error 401 and does not retry.
    pub fn authenticator(
        mut self,
        check: impl Fn(&str, &str) -> bool + Send + Sync + 'static,
    ) -> Self {
        self.authenticator = Some(Arc::new(check));
        self
    }

    /// Serves TLS (`wss://`) with this certificate chain and key.
    pub fn tls_identity(mut self, identity: TlsIdentity) -> Self {
        self.tls = Tls::Identity(identity);
        self
    }

    /// `true` (the default): plain `ws://`. `false`: TLS with the identity given to
    /// [`tls_identity`](Self::tls_identity), or else a self-signed certificate generated
    /// at start (as Couchbase Lite does).
    pub fn disable_tls(mut self, disable: bool) -> Self {
        self.tls = match (disable, self.tls) {
            (true, _) => Tls::Off,
            (false, Tls::Off) => Tls::Generated,
            (false, other) => other,
        };
        self
    }
}

impl fmt::Debug for UrlEndpointListenerConfiguration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let tls = match &self.tls {
            Tls::Off => "off",
            Tls::Generated => "generated",
            Tls::Identity(_) => "identity",
        };
        f.debug_struct("UrlEndpointListenerConfiguration")
            .field(
                "databases",
                &self
                    .databases
                    .iter()
                    .map(Database::name)
                    .collect::<Vec<_>>(),
            )
            .field("port", &self.port)
            .field("network_interface", &self.network_interface)
            .field("read_only", &self.read_only)
            .field("authenticator", &self.authenticator.is_some())
            .field("tls", &tls)
            .finish()
    }
}

/// A WebSocket listener that lets other peers replicate with local databases (Couchbase
/// Lite's `URLEndpointListener`): the passive side of replication, as a Sync Gateway is.
///
/// Each accepted connection (`ws://host:port/<database>`) is served on ferrolite's
/// runtime by a passive peer on the database it names; pushed documents reach that
/// database's change listeners. [`stop`](Self::stop) — or dropping the listener — closes
/// every connection with WebSocket close code 1001 (going away).
///
/// ```
/// use ferrolite::{Database, UrlEndpointListener, UrlEndpointListenerConfiguration};
///
/// let db = Database::open_in_memory("userprofile")?;
/// let listener = UrlEndpointListener::start(
///     UrlEndpointListenerConfiguration::new(vec![db]).network_interface("127.0.0.1"),
/// )?;
/// assert_eq!(
///     listener.url("userprofile"),
///     format!("ws://127.0.0.1:{}/userprofile", listener.port())
/// );
/// listener.stop();
/// # Ok::<(), ferrolite::Error>(())
/// ```
pub struct UrlEndpointListener {
    listener: Arc<Listener>,
    host: IpAddr,
    accept_task: Mutex<Option<JoinHandle<()>>>,
}

impl fmt::Debug for UrlEndpointListener {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("UrlEndpointListener")
            .field("local_addr", &self.listener.local_addr())
            .field("tls", &self.listener.certificate().is_some())
            .finish()
    }
}

impl UrlEndpointListener {
    /// Binds the port and starts accepting connections. Fails when the interface address
    /// does not parse or two databases share a name ([`ErrorCode::InvalidParameter`]), or
    /// when the port cannot be bound (POSIX domain, e.g. `EADDRINUSE`).
    pub fn start(config: UrlEndpointListenerConfiguration) -> Result<UrlEndpointListener> {
        let ip = match &config.network_interface {
            None => IpAddr::V4(Ipv4Addr::UNSPECIFIED),
            Some(address) => address.parse().map_err(|_| {
                Error::new(
                    ErrorCode::InvalidParameter,
                    format!("network interface {address:?} is not an IP address"),
                )
            })?,
        };
        let mut databases = HashMap::new();
        for db in &config.databases {
            if databases.insert(db.name().to_owned(), db.clone()).is_some() {
                return Err(Error::new(
                    ErrorCode::InvalidParameter,
                    format!("two databases are named {:?}", db.name()),
                ));
            }
        }
        let mut listener_config =
            ListenerConfig::new(SocketAddr::new(ip, config.port), databases.keys().cloned());
        if let Some(check) = config.authenticator.clone() {
            listener_config =
                listener_config.with_authenticator(move |request| match request.credentials() {
                    Some(c) if check(&c.username, &c.password) => {
                        AuthDecision::user(c.username.clone())
                    }
                    Some(_) => AuthDecision::invalid_login(),
                    None => AuthDecision::login_required(),
                });
        }
        match config.tls {
            Tls::Off => {}
            Tls::Identity(identity) => {
                listener_config = listener_config.with_tls(ListenerTls::Identity(identity));
            }
            Tls::Generated => {
                let mut names = vec!["localhost".to_owned()];
                if !ip.is_unspecified() {
                    names.push(ip.to_string());
                }
                listener_config = listener_config.with_tls(ListenerTls::SelfSigned(names));
            }
        }
        let listener = Arc::new(runtime::block_on(Listener::bind(listener_config))??);
        let options = PassiveOptions::read_only(config.read_only);
        let accept_task = runtime::spawn(accept_loop(listener.clone(), databases, options))?;
        tracing::info!(target: "ferrolite::replicator", addr = %listener.local_addr(), "listener started");
        Ok(UrlEndpointListener {
            host: if ip.is_unspecified() {
                IpAddr::V4(Ipv4Addr::LOCALHOST)
            } else {
                ip
            },
            listener,
            accept_task: Mutex::new(Some(accept_task)),
        })
    }

    /// The port the listener is bound to (the one the system chose for port 0).
    pub fn port(&self) -> u16 {
        self.listener.local_addr().port()
    }

    /// The URL a replicator uses for one of the served databases:
    /// `ws://<address>:<port>/<database>` (`wss://` with TLS). The address is the
    /// configured interface, or `127.0.0.1` when listening on every interface.
    pub fn url(&self, database: &str) -> String {
        let scheme = if self.listener.certificate().is_some() {
            "wss"
        } else {
            "ws"
        };
        format!(
            "{scheme}://{}/{database}",
            SocketAddr::new(self.host, self.port())
        )
    }

    /// The TLS certificate presented to peers (DER), for them to pin; `None` without TLS.
    pub fn tls_certificate(&self) -> Option<Vec<u8>> {
        self.listener.certificate().map(|c| c.der().to_vec())
    }

    /// Stops accepting, closes every connection with close code 1001 (going away), and
    /// returns when the replication sessions have ended (at most a few seconds). Stopping
    /// twice is harmless.
    pub fn stop(&self) {
        let task = self
            .accept_task
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        let Some(task) = task else {
            return;
        };
        let listener = self.listener.clone();
        let stopped = runtime::block_on(async move {
            listener.shutdown().await;
            let _ = task.await;
        });
        if let Err(e) = stopped {
            tracing::warn!(target: "ferrolite::replicator", "stopping the listener: {e}");
        }
    }
}

impl Drop for UrlEndpointListener {
    fn drop(&mut self) {
        // Without waiting: the shutdown and the session drain finish on the runtime.
        let task = self
            .accept_task
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        if let Some(task) = task {
            let listener = self.listener.clone();
            let _ = runtime::spawn(async move {
                listener.shutdown().await;
                let _ = task.await;
            });
        }
    }
}

/// Accepts connections until the listener shuts down, serving each on its database; then
/// lets the sessions end (their connections were closed with 1001) for a while.
async fn accept_loop(
    listener: Arc<Listener>,
    databases: HashMap<String, Database>,
    options: PassiveOptions,
) {
    let mut sessions = JoinSet::new();
    while let Some(accepted) = listener.accept().await {
        // Forget the sessions that ended.
        while sessions.try_join_next().is_some() {}
        let peer = accepted.peer_addr;
        let name = accepted.database;
        let mut connection = accepted.connection;
        let store = databases.get(&name).map(Database::store);
        match store {
            Some(Ok(store)) => {
                let options = options.clone();
                sessions.spawn(async move {
                    tracing::debug!(target: "ferrolite::replicator", %peer, database = %name, "serving a peer");
                    if let Err(e) = serve_passive(store, connection, options).await {
                        tracing::debug!(target: "ferrolite::replicator", %peer, database = %name, "peer session ended: {e}");
                    }
                });
            }
            _ => {
                // The database was closed after the listener started.
                let _ = connection.close(1011, "the database is closed").await;
            }
        }
    }
    let drain = async { while sessions.join_next().await.is_some() {} };
    if tokio::time::timeout(SESSION_DRAIN, drain).await.is_err() {
        sessions.abort_all();
    }
}
