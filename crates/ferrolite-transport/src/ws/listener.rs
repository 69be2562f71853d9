//! The passive side: [`Listener`] accepts `GET /<db>/_blipsync` upgrades.

use std::collections::BTreeSet;
use std::fmt;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex as StdMutex};
use std::time::Duration;

use base64::Engine as _;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch, Mutex};
use tokio::task::JoinHandle;
use tokio_rustls::TlsAcceptor;
use tokio_tungstenite::tungstenite::handshake::server::{
    Callback, ErrorResponse, Request, Response,
};
use tokio_tungstenite::tungstenite::http::{header, HeaderValue, StatusCode};

use super::client::DEFAULT_SUBPROTOCOLS;
use super::{into_connection, map_error, WsOptions, DEFAULT_INCOMING_CAPACITY};
use crate::connection::Connection;
use crate::error::TransportError;
use crate::tls::{Certificate, TlsIdentity};

/// The realm Sync Gateway names in `WWW-Authenticate`.
const REALM: &str = "Basic realm=\"Couchbase Sync Gateway\"";

/// User name and password from an `Authorization: Basic` header.
#[derive(Clone, PartialEq, Eq)]
pub struct BasicCredentials {
    /// The user name.
    pub username: String,
    /// The password.
    pub password: String,
}

impl fmt::Debug for BasicCredentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BasicCredentials")
            .field("username", &self.username)
            .field("password", &"<redacted>")
            .finish()
    }
}

/// What the authentication callback sees of an upgrade request.
#[derive(Debug)]
pub struct AuthRequest<'a> {
    database: &'a str,
    credentials: Option<BasicCredentials>,
    headers: &'a [(String, String)],
    peer_addr: SocketAddr,
}

impl AuthRequest<'_> {
    /// The database named in the path.
    pub fn database(&self) -> &str {
        self.database
    }

    /// Basic credentials, if the request carried a well-formed `Authorization: Basic`.
    pub fn credentials(&self) -> Option<&BasicCredentials> {
        self.credentials.as_ref()
    }

    /// All request headers in wire order (names as received).
    pub fn headers(&self) -> &[(String, String)] {
        self.headers
    }

    /// The first header with this name (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        find_header(self.headers, name)
    }

    /// The value of a cookie (e.g. `SyncGatewaySession`) from the `Cookie` headers.
    pub fn cookie(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .filter(|(n, _)| n.eq_ignore_ascii_case("cookie"))
            .flat_map(|(_, v)| v.split(';'))
            .filter_map(|pair| pair.trim().split_once('='))
            .find(|(n, _)| *n == name)
            .map(|(_, v)| v)
    }

    /// The client's address.
    pub fn peer_addr(&self) -> SocketAddr {
        self.peer_addr
    }
}

fn find_header<'h>(headers: &'h [(String, String)], name: &str) -> Option<&'h str> {
    headers
        .iter()
        .find(|(n, _)| n.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.as_str())
}

/// The authentication callback's answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AuthDecision {
    /// Let the client in, as this user (`None`: anonymous, Sync Gateway's GUEST).
    Accept(Option<String>),
    /// Refuse with 401 and this reason in the JSON body (Sync Gateway uses
    /// "Invalid login", "Login required" and "Session Invalid").
    Reject(String),
}

impl AuthDecision {
    /// Accept as a named user.
    pub fn user(name: impl Into<String>) -> Self {
        AuthDecision::Accept(Some(name.into()))
    }

    /// Refuse wrong credentials: 401 "Invalid login".
    pub fn invalid_login() -> Self {
        AuthDecision::Reject("Invalid login".into())
    }

    /// Refuse a request without credentials: 401 "Login required".
    pub fn login_required() -> Self {
        AuthDecision::Reject("Login required".into())
    }
}

/// The authentication callback type.
pub type AuthCallback = Arc<dyn Fn(&AuthRequest<'_>) -> AuthDecision + Send + Sync>;

/// TLS for a listener.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum ListenerTls {
    /// Present this certificate chain and key.
    Identity(TlsIdentity),
    /// Generate a self-signed certificate for these names when binding.
    #[cfg(feature = "self-signed")]
    SelfSigned(Vec<String>),
}

/// Settings of a [`Listener`].
#[derive(Clone)]
pub struct ListenerConfig {
    addr: SocketAddr,
    databases: BTreeSet<String>,
    subprotocols: Vec<String>,
    authenticator: Option<AuthCallback>,
    tls: Option<ListenerTls>,
    handshake_timeout: Duration,
    accept_queue: usize,
    options: WsOptions,
}

impl fmt::Debug for ListenerConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ListenerConfig")
            .field("addr", &self.addr)
            .field("databases", &self.databases)
            .field("subprotocols", &self.subprotocols)
            .field("authenticator", &self.authenticator.is_some())
            .field("tls", &self.tls)
            .field("handshake_timeout", &self.handshake_timeout)
            .finish_non_exhaustive()
    }
}

impl ListenerConfig {
    /// Listens on `addr` (port 0 picks a free port) and serves the given databases; no
    /// authentication, no TLS, subprotocols `BLIP_3+CBMobile_3` and `BLIP_3+CBMobile_2`,
    /// no heartbeat (Sync Gateway does not ping clients).
    pub fn new<I, D>(addr: SocketAddr, databases: I) -> Self
    where
        I: IntoIterator<Item = D>,
        D: Into<String>,
    {
        ListenerConfig {
            addr,
            databases: databases.into_iter().map(Into::into).collect(),
            subprotocols: DEFAULT_SUBPROTOCOLS
                .iter()
                .map(|s| (*s).to_owned())
                .collect(),
            authenticator: None,
            tls: None,
            handshake_timeout: Duration::from_secs(15),
            accept_queue: 16,
            options: WsOptions {
                heartbeat: None,
                pong_timeout: None,
                max_message_size: crate::DEFAULT_MAX_MESSAGE_SIZE,
                incoming_capacity: DEFAULT_INCOMING_CAPACITY,
            },
        }
    }

    /// Sets the authentication callback. It runs on every upgrade request for a known
    /// database; [`AuthDecision::Reject`] answers 401 with
    /// `WWW-Authenticate: Basic realm="Couchbase Sync Gateway"` and the JSON body
    /// `{"error":"Unauthorized","reason":…}`.
    pub fn with_authenticator<F>(mut self, callback: F) -> Self
    where
        F: Fn(&AuthRequest<'_>) -> AuthDecision + Send + Sync + 'static,
    {
        self.authenticator = Some(Arc::new(callback));
        self
    }

    /// Serves TLS (`wss://`).
    pub fn with_tls(mut self, tls: ListenerTls) -> Self {
        self.tls = Some(tls);
        self
    }

    /// Replaces the accepted subprotocols, in the server's preference order (the
    /// client's order decides; see [`Listener`]).
    pub fn with_subprotocols<I, P>(mut self, subprotocols: I) -> Self
    where
        I: IntoIterator<Item = P>,
        P: Into<String>,
    {
        self.subprotocols = subprotocols.into_iter().map(Into::into).collect();
        self
    }

    /// Pings accepted clients every `interval` and drops those that stop answering.
    pub fn with_heartbeat(mut self, interval: Option<Duration>) -> Self {
        self.options.heartbeat = interval;
        self
    }

    /// Sets the largest message accepted or sent, in bytes (default 64 MiB).
    pub fn with_max_message_size(mut self, bytes: usize) -> Self {
        self.options.max_message_size = bytes;
        self
    }

    /// Sets the time a client gets for the TLS handshake and the upgrade (default 15 s).
    pub fn with_handshake_timeout(mut self, timeout: Duration) -> Self {
        self.handshake_timeout = timeout;
        self
    }
}

/// A connection accepted by a [`Listener`].
#[derive(Debug)]
#[non_exhaustive]
pub struct AcceptedConnection {
    /// The connection.
    pub connection: Connection,
    /// The database from the path.
    pub database: String,
    /// The user the authentication callback named (`None`: anonymous).
    pub user: Option<String>,
    /// The negotiated subprotocol (also [`Connection::subprotocol`]).
    pub subprotocol: String,
    /// The client's address.
    pub peer_addr: SocketAddr,
    /// The upgrade request's headers in wire order.
    pub request_headers: Vec<(String, String)>,
}

/// Everything the per-connection tasks need.
struct Context {
    databases: BTreeSet<String>,
    subprotocols: Vec<String>,
    authenticator: Option<AuthCallback>,
    tls: Option<TlsAcceptor>,
    handshake_timeout: Duration,
    options: WsOptions,
}

/// Accepts WebSocket replication connections, like Sync Gateway's `/{db}/_blipsync` or
/// Couchbase Lite's `URLEndpointListener`.
///
/// For each upgrade request it checks, in Sync Gateway's order: the path is
/// `/<db>/_blipsync` for a served database (else 404 with a JSON body), the
/// authentication callback accepts (else 401), and one of the client's
/// `Sec-WebSocket-Protocol` entries is supported — the first such entry **in the
/// client's order** is echoed (else 500 with go-blip's plain-text body
/// `I only speak … protocols`). Accepted connections are handed out by
/// [`accept`](Self::accept).
///
/// [`shutdown`](Self::shutdown) — or dropping the listener, without waiting — stops
/// accepting and closes every connection it accepted with close code 1001.
pub struct Listener {
    local_addr: SocketAddr,
    certificate: Option<Certificate>,
    incoming: Mutex<mpsc::Receiver<AcceptedConnection>>,
    shutdown: watch::Sender<bool>,
    accept_task: StdMutex<Option<JoinHandle<()>>>,
    /// Becomes "all senders dropped" when every live connection sent its close frame.
    closing: Mutex<Option<mpsc::Receiver<()>>>,
}

impl fmt::Debug for Listener {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Listener")
            .field("local_addr", &self.local_addr)
            .field("tls", &self.certificate.is_some())
            .finish_non_exhaustive()
    }
}

impl Listener {
    /// Binds and starts accepting.
    pub async fn bind(config: ListenerConfig) -> Result<Listener, TransportError> {
        let identity = match &config.tls {
            None => None,
            Some(ListenerTls::Identity(identity)) => Some(identity.clone()),
            #[cfg(feature = "self-signed")]
            Some(ListenerTls::SelfSigned(names)) => {
                let names: Vec<&str> = names.iter().map(String::as_str).collect();
                Some(TlsIdentity::generate_self_signed(&names)?)
            }
        };
        let tls = match &identity {
            Some(identity) => Some(TlsAcceptor::from(Arc::new(identity.server_config()?))),
            None => None,
        };
        let tcp = TcpListener::bind(config.addr)
            .await
            .map_err(|e| TransportError::io("binding the listener", e))?;
        let local_addr = tcp
            .local_addr()
            .map_err(|e| TransportError::io("reading the listener address", e))?;
        let context = Arc::new(Context {
            databases: config.databases,
            subprotocols: config.subprotocols,
            authenticator: config.authenticator,
            tls,
            handshake_timeout: config.handshake_timeout,
            options: config.options,
        });
        let (shutdown, shutdown_rx) = watch::channel(false);
        let (incoming_tx, incoming_rx) = mpsc::channel(config.accept_queue.max(1));
        let (closing_tx, closing_rx) = mpsc::channel(1);
        let accept_task = tokio::spawn(accept_loop(
            tcp,
            context,
            incoming_tx,
            shutdown_rx,
            closing_tx,
        ));
        Ok(Listener {
            local_addr,
            certificate: identity.map(|i| i.certificate().clone()),
            incoming: Mutex::new(incoming_rx),
            shutdown,
            accept_task: StdMutex::new(Some(accept_task)),
            closing: Mutex::new(Some(closing_rx)),
        })
    }

    /// The bound address (with the port chosen when binding to port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// The URL a client uses for a database: `ws://<addr>/<db>` or `wss://…`.
    pub fn url(&self, database: &str) -> String {
        let scheme = if self.certificate.is_some() {
            "wss"
        } else {
            "ws"
        };
        format!("{scheme}://{}/{database}", self.local_addr)
    }

    /// The TLS certificate presented to clients (for them to pin), if serving TLS.
    pub fn certificate(&self) -> Option<&Certificate> {
        self.certificate.as_ref()
    }

    /// The next accepted connection; `None` once the listener was shut down.
    pub async fn accept(&self) -> Option<AcceptedConnection> {
        if *self.shutdown.borrow() {
            return None;
        }
        let mut incoming = self.incoming.lock().await;
        let mut stopped = self.shutdown.subscribe();
        tokio::select! {
            accepted = incoming.recv() => accepted,
            _ = stopped.wait_for(|stop| *stop) => None,
        }
    }

    /// Stops accepting and closes every connection it accepted with close code 1001
    /// (going away). Returns when the close frames were sent (at most about 2 s).
    pub async fn shutdown(&self) {
        self.shutdown.send_replace(true);
        let task = self.accept_task.lock().ok().and_then(|mut t| t.take());
        if let Some(task) = task {
            let _ = task.await;
        }
        let closing = self.closing.lock().await.take();
        if let Some(mut closing) = closing {
            let _ = tokio::time::timeout(Duration::from_secs(3), closing.recv()).await;
        }
    }
}

impl Drop for Listener {
    fn drop(&mut self) {
        self.shutdown.send_replace(true);
    }
}

async fn accept_loop(
    tcp: TcpListener,
    context: Arc<Context>,
    incoming: mpsc::Sender<AcceptedConnection>,
    mut shutdown: watch::Receiver<bool>,
    closing: mpsc::Sender<()>,
) {
    loop {
        let accepted = tokio::select! {
            _ = shutdown.wait_for(|stop| *stop) => return,
            accepted = tcp.accept() => accepted,
        };
        let (stream, peer_addr) = match accepted {
            Ok(pair) => pair,
            Err(e) => {
                // Out of file descriptors and the like: back off briefly.
                tracing::warn!(target: "ferrolite::network", "accept failed: {e}");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        tokio::spawn(handle_connection(
            stream,
            peer_addr,
            context.clone(),
            incoming.clone(),
            shutdown.clone(),
            closing.clone(),
        ));
    }
}

async fn handle_connection(
    stream: TcpStream,
    peer_addr: SocketAddr,
    context: Arc<Context>,
    incoming: mpsc::Sender<AcceptedConnection>,
    shutdown: watch::Receiver<bool>,
    closing: mpsc::Sender<()>,
) {
    let handshake = async {
        match &context.tls {
            Some(acceptor) => {
                let tls = acceptor
                    .accept(stream)
                    .await
                    .map_err(|e| TransportError::io("TLS handshake", e))?;
                upgrade(tls, peer_addr, &context, shutdown, closing).await
            }
            None => upgrade(stream, peer_addr, &context, shutdown, closing).await,
        }
    };
    match tokio::time::timeout(context.handshake_timeout, handshake).await {
        Ok(Ok(accepted)) => {
            let _ = incoming.send(accepted).await;
        }
        Ok(Err(e)) => {
            tracing::debug!(target: "ferrolite::network", %peer_addr, "upgrade refused or failed: {e}");
        }
        Err(_) => {
            tracing::debug!(target: "ferrolite::network", %peer_addr, "upgrade timed out");
        }
    }
}

/// What the handshake callback decided for an accepted request.
struct Admitted {
    database: String,
    user: Option<String>,
    subprotocol: String,
    headers: Vec<(String, String)>,
}

async fn upgrade<S>(
    stream: S,
    peer_addr: SocketAddr,
    context: &Context,
    shutdown: watch::Receiver<bool>,
    closing: mpsc::Sender<()>,
) -> Result<AcceptedConnection, TransportError>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let mut admitted: Option<Admitted> = None;
    let callback = Admission {
        context,
        peer_addr,
        admitted: &mut admitted,
    };
    let ws = tokio_tungstenite::accept_hdr_async_with_config(
        stream,
        callback,
        Some(context.options.tungstenite_config()),
    )
    .await
    .map_err(map_error)?;
    let Some(admitted) = admitted else {
        return Err(TransportError::Protocol(
            "upgrade without a decision".into(),
        ));
    };
    let connection = into_connection(
        ws,
        Some(admitted.subprotocol.clone()),
        &context.options,
        Some(shutdown),
        Some(closing),
    );
    Ok(AcceptedConnection {
        connection,
        database: admitted.database,
        user: admitted.user,
        subprotocol: admitted.subprotocol,
        peer_addr,
        request_headers: admitted.headers,
    })
}

/// The handshake callback: decides on the request, records the decision.
struct Admission<'a> {
    context: &'a Context,
    peer_addr: SocketAddr,
    admitted: &'a mut Option<Admitted>,
}

impl Callback for Admission<'_> {
    fn on_request(
        self,
        request: &Request,
        mut response: Response,
    ) -> Result<Response, ErrorResponse> {
        let result = admit(self.context, request, self.peer_addr).map_err(|r| *r)?;
        let value = HeaderValue::from_str(&result.subprotocol)
            .map_err(|_| error_response(StatusCode::INTERNAL_SERVER_ERROR, None, String::new()))?;
        response
            .headers_mut()
            .insert(header::SEC_WEBSOCKET_PROTOCOL, value);
        *self.admitted = Some(result);
        Ok(response)
    }
}

/// Applies Sync Gateway's checks to an upgrade request; a refusal is the response to send.
fn admit(
    context: &Context,
    request: &Request,
    peer_addr: SocketAddr,
) -> Result<Admitted, Box<ErrorResponse>> {
    let headers: Vec<(String, String)> = request
        .headers()
        .iter()
        .map(|(n, v)| {
            (
                n.as_str().to_owned(),
                String::from_utf8_lossy(v.as_bytes()).into_owned(),
            )
        })
        .collect();

    // 1. The route and the database.
    let database = request
        .uri()
        .path()
        .strip_prefix('/')
        .and_then(|p| p.strip_suffix("/_blipsync"))
        .filter(|db| !db.is_empty() && !db.contains('/'))
        .ok_or_else(|| Box::new(not_found("unknown URL".into())))?;
    if !context.databases.contains(database) {
        return Err(Box::new(not_found(format!(
            "no such database \"{database}\""
        ))));
    }

    // 2. Authentication.
    let credentials = find_header(&headers, "authorization").and_then(parse_basic);
    let user = match &context.authenticator {
        None => None,
        Some(callback) => {
            let auth = AuthRequest {
                database,
                credentials,
                headers: &headers,
                peer_addr,
            };
            match callback(&auth) {
                AuthDecision::Accept(user) => user,
                AuthDecision::Reject(reason) => return Err(Box::new(unauthorized(&reason))),
            }
        }
    };

    // 3. The subprotocol: the first of the client's entries we support.
    let offered = headers
        .iter()
        .filter(|(n, _)| n.eq_ignore_ascii_case("sec-websocket-protocol"))
        .flat_map(|(_, v)| v.split(','))
        .map(str::trim);
    let mut chosen = None;
    for entry in offered {
        if context.subprotocols.iter().any(|s| s == entry) {
            chosen = Some(entry.to_owned());
            break;
        }
    }
    let Some(subprotocol) = chosen else {
        return Err(Box::new(error_response(
            StatusCode::INTERNAL_SERVER_ERROR,
            Some("text/plain; charset=utf-8"),
            format!(
                "I only speak {} protocols\n",
                context.subprotocols.join(",")
            ),
        )));
    };

    Ok(Admitted {
        database: database.to_owned(),
        user,
        subprotocol,
        headers,
    })
}

fn parse_basic(value: &str) -> Option<BasicCredentials> {
    let (scheme, token) = value.trim().split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(token.trim())
        .ok()?;
    let text = String::from_utf8(decoded).ok()?;
    let (username, password) = text.split_once(':')?;
    Some(BasicCredentials {
        username: username.to_owned(),
        password: password.to_owned(),
    })
}

fn json_error(status: StatusCode, error: &str, reason: &str) -> ErrorResponse {
    let body = serde_json::json!({ "error": error, "reason": reason }).to_string();
    error_response(status, Some("application/json"), body)
}

fn not_found(reason: String) -> ErrorResponse {
    json_error(StatusCode::NOT_FOUND, "not_found", &reason)
}

fn unauthorized(reason: &str) -> ErrorResponse {
    let mut response = json_error(StatusCode::UNAUTHORIZED, "Unauthorized", reason);
    response
        .headers_mut()
        .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static(REALM));
    response
}

fn error_response(status: StatusCode, content_type: Option<&str>, body: String) -> ErrorResponse {
    let mut response = ErrorResponse::new(None);
    *response.status_mut() = status;
    let headers = response.headers_mut();
    if let Some(content_type) = content_type.and_then(|c| HeaderValue::from_str(c).ok()) {
        headers.insert(header::CONTENT_TYPE, content_type);
    }
    headers.insert(header::CONTENT_LENGTH, HeaderValue::from(body.len()));
    headers.insert(header::CONNECTION, HeaderValue::from_static("close"));
    *response.body_mut() = Some(body);
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn basic_credentials() {
        let c = parse_basic("Basic YWxpY2U6d3JvbmdwYXNzd29yZA==").unwrap();
        assert_eq!(c.username, "alice");
        assert_eq!(c.password, "wrongpassword");
        assert!(parse_basic("Bearer abc").is_none());
        assert!(parse_basic("Basic !!!").is_none());
    }

    #[test]
    fn refusal_bodies_match_sync_gateway() {
        let r = unauthorized("Invalid login");
        assert_eq!(r.status(), 401);
        assert_eq!(r.headers()["www-authenticate"], REALM);
        assert_eq!(
            r.body().as_deref(),
            Some(r#"{"error":"Unauthorized","reason":"Invalid login"}"#)
        );
        assert_eq!(r.headers()["content-length"], "49");
        let r = not_found("no such database \"x\"".into());
        assert_eq!(
            r.body().as_deref(),
            Some(r#"{"error":"not_found","reason":"no such database \"x\""}"#)
        );
    }
}
