//! The active side: [`UrlEndpoint`] connects to `ws://host:port/db/_blipsync`.

use std::fmt;
use std::net::SocketAddr;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use async_trait::async_trait;
use base64::Engine as _;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_tungstenite::tungstenite::client::IntoClientRequest as _;
use tokio_tungstenite::tungstenite::error::{ProtocolError, SubProtocolError};
use tokio_tungstenite::tungstenite::handshake::client::{generate_key, Request};
use tokio_tungstenite::tungstenite::http::{header, HeaderName, HeaderValue, Uri};
use tokio_tungstenite::tungstenite::Error as WsError;

use super::{into_connection, map_error, WsOptions, DEFAULT_HEARTBEAT, DEFAULT_INCOMING_CAPACITY};
use crate::connection::{Connection, Transport};
use crate::error::TransportError;
use crate::tls::{self, ServerTrust};

/// The subprotocols Couchbase Lite 3.0–3.2 offers, most preferred first.
pub const DEFAULT_SUBPROTOCOLS: [&str; 2] = ["BLIP_3+CBMobile_3", "BLIP_3+CBMobile_2"];

/// Default connect timeout (DNS, TCP, TLS and the upgrade): 15 s, as LiteCore.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(15);

/// Default cookie name of session authentication.
pub const DEFAULT_SESSION_COOKIE: &str = "SyncGatewaySession";

/// How the client authenticates on the upgrade request.
#[derive(Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Authenticator {
    /// HTTP Basic, sent up front (`Authorization: Basic base64(user:password)`).
    Basic {
        /// The user name.
        username: String,
        /// The password.
        password: String,
    },
    /// A Sync Gateway session: `Cookie: <cookie_name>=<session_id>`.
    Session {
        /// The session ID from `POST /{db}/_session`.
        session_id: String,
        /// The cookie name (Sync Gateway's default is `SyncGatewaySession`).
        cookie_name: String,
    },
}

impl Authenticator {
    /// Basic authentication.
    pub fn basic(username: impl Into<String>, password: impl Into<String>) -> Self {
        Authenticator::Basic {
            username: username.into(),
            password: password.into(),
        }
    }

    /// Session authentication with the default cookie name `SyncGatewaySession`.
    pub fn session(session_id: impl Into<String>) -> Self {
        Self::session_with_cookie(session_id, DEFAULT_SESSION_COOKIE)
    }

    /// Session authentication with a custom cookie name (Sync Gateway's
    /// `session_cookie_name`).
    pub fn session_with_cookie(
        session_id: impl Into<String>,
        cookie_name: impl Into<String>,
    ) -> Self {
        Authenticator::Session {
            session_id: session_id.into(),
            cookie_name: cookie_name.into(),
        }
    }
}

impl fmt::Debug for Authenticator {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Authenticator::Basic { username, .. } => f
                .debug_struct("Basic")
                .field("username", username)
                .field("password", &"<redacted>")
                .finish(),
            Authenticator::Session { cookie_name, .. } => f
                .debug_struct("Session")
                .field("session_id", &"<redacted>")
                .field("cookie_name", cookie_name)
                .finish(),
        }
    }
}

/// The parts of a parsed endpoint URL.
#[derive(Debug, Clone)]
struct ParsedUrl {
    original: String,
    secure: bool,
    /// Host as written, without IPv6 brackets.
    host: String,
    port: u16,
    /// `/<db>/_blipsync` (with any prefix path), plus the query if there was one.
    path_and_query: String,
    database: String,
}

fn invalid(url: &str, reason: impl Into<String>) -> TransportError {
    TransportError::InvalidUrl {
        url: url.to_owned(),
        reason: reason.into(),
    }
}

fn parse_url(url: &str) -> Result<ParsedUrl, TransportError> {
    let uri: Uri = url
        .parse()
        .map_err(|e| invalid(url, format!("not a URL: {e}")))?;
    let scheme = uri
        .scheme_str()
        .ok_or_else(|| invalid(url, "missing scheme: use ws:// or wss://"))?
        .to_ascii_lowercase();
    let secure = match scheme.as_str() {
        "ws" => false,
        "wss" => true,
        other => {
            return Err(invalid(
                url,
                format!("unsupported scheme {other:?}: use ws:// or wss://"),
            ))
        }
    };
    let authority = uri
        .authority()
        .ok_or_else(|| invalid(url, "missing host"))?;
    if authority.as_str().contains('@') {
        return Err(invalid(
            url,
            "credentials in the URL are not supported: use an authenticator",
        ));
    }
    let host = authority
        .host()
        .trim_start_matches('[')
        .trim_end_matches(']');
    if host.is_empty() {
        return Err(invalid(url, "missing host"));
    }
    let port = authority
        .port_u16()
        .unwrap_or(if secure { 443 } else { 80 });
    let path = uri.path().trim_end_matches('/');
    let database = path.rsplit('/').next().unwrap_or_default();
    if database.is_empty() {
        return Err(invalid(
            url,
            "missing database name: use ws://host:port/<database>",
        ));
    }
    let mut path_and_query = format!("{path}/_blipsync");
    if let Some(query) = uri.query() {
        path_and_query.push('?');
        path_and_query.push_str(query);
    }
    Ok(ParsedUrl {
        original: url.to_owned(),
        secure,
        host: host.to_owned(),
        port,
        path_and_query,
        database: database.to_owned(),
    })
}

/// A Sync Gateway or peer endpoint reached over WebSocket (`ws://` or `wss://`), like
/// Couchbase Lite's `URLEndpoint` plus the connection options of its replicator
/// configuration.
///
/// ```no_run
/// # async fn demo() -> Result<(), ferrolite_transport::TransportError> {
/// use std::time::Duration;
/// use ferrolite_transport::{Authenticator, UrlEndpoint};
///
/// let endpoint = UrlEndpoint::parse("wss://sync.example.com:4984/userprofile")?
///     .with_authenticator(Authenticator::basic("demo@example.com", "password"))
///     .with_header("X-Client", "profile-app")
///     .with_heartbeat(Some(Duration::from_secs(60)));
/// let mut connection = endpoint.connect().await?;
/// assert_eq!(connection.subprotocol(), Some("BLIP_3+CBMobile_3"));
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct UrlEndpoint {
    url: ParsedUrl,
    authenticator: Option<Authenticator>,
    headers: Vec<(String, String)>,
    subprotocols: Vec<String>,
    connect_timeout: Duration,
    trust: ServerTrust,
    options: WsOptions,
    tls: Arc<OnceLock<TlsConnector>>,
}

impl fmt::Debug for UrlEndpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("UrlEndpoint")
            .field("url", &self.url.original)
            .field("authenticator", &self.authenticator)
            .field(
                "headers",
                &self.headers.iter().map(|(n, _)| n).collect::<Vec<_>>(),
            )
            .field("subprotocols", &self.subprotocols)
            .field("connect_timeout", &self.connect_timeout)
            .field("trust", &self.trust)
            .field("heartbeat", &self.options.heartbeat)
            .finish_non_exhaustive()
    }
}

impl UrlEndpoint {
    /// Parses `ws://host[:port]/<db>` or `wss://…`. The path names the database (a
    /// trailing `/` is ignored; a longer path is kept as a prefix, for reverse proxies);
    /// `/_blipsync` is appended when connecting. Other schemes, URLs without a database
    /// path and URLs with credentials are refused with [`TransportError::InvalidUrl`].
    pub fn parse(url: &str) -> Result<Self, TransportError> {
        let url = parse_url(url)?;
        Ok(UrlEndpoint {
            url,
            authenticator: None,
            headers: Vec::new(),
            subprotocols: DEFAULT_SUBPROTOCOLS
                .iter()
                .map(|s| (*s).to_owned())
                .collect(),
            connect_timeout: DEFAULT_CONNECT_TIMEOUT,
            trust: ServerTrust::default(),
            options: WsOptions {
                heartbeat: Some(DEFAULT_HEARTBEAT),
                pong_timeout: None,
                max_message_size: crate::DEFAULT_MAX_MESSAGE_SIZE,
                incoming_capacity: DEFAULT_INCOMING_CAPACITY,
            },
            tls: Arc::new(OnceLock::new()),
        })
    }

    /// The database name (last path segment of the URL).
    pub fn database(&self) -> &str {
        &self.url.database
    }

    /// The URL the upgrade request goes to: `<url>/_blipsync`.
    pub fn blipsync_url(&self) -> String {
        format!(
            "{}://{}{}",
            if self.url.secure { "wss" } else { "ws" },
            self.authority(),
            self.url.path_and_query
        )
    }

    /// Whether the endpoint uses TLS (`wss://`).
    pub fn is_secure(&self) -> bool {
        self.url.secure
    }

    /// Sets the authenticator (none by default: Sync Gateway then uses its GUEST user).
    pub fn with_authenticator(mut self, authenticator: Authenticator) -> Self {
        self.authenticator = Some(authenticator);
        self
    }

    /// Adds a header to the upgrade request (Couchbase Lite's `headers`). A `User-Agent`
    /// replaces ours; a `Cookie` is merged with the session cookie. Headers the
    /// WebSocket handshake owns (`Host`, `Connection`, `Upgrade`, `Sec-WebSocket-*`)
    /// are refused when connecting.
    pub fn with_header(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.headers.push((name.into(), value.into()));
        self
    }

    /// Replaces the offered subprotocols (default [`DEFAULT_SUBPROTOCOLS`]).
    pub fn with_subprotocols<I, P>(mut self, subprotocols: I) -> Self
    where
        I: IntoIterator<Item = P>,
        P: Into<String>,
    {
        self.subprotocols = subprotocols.into_iter().map(Into::into).collect();
        self
    }

    /// Sets the connect timeout covering DNS, TCP, TLS and the upgrade (default 15 s).
    pub fn with_connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect_timeout = timeout;
        self
    }

    /// Sets the heartbeat: a WebSocket ping every `interval` (default 300 s); `None` or
    /// zero disables it. A peer that sends nothing back within the pong timeout is
    /// reported as dead with a transient [`TransportError::Timeout`].
    pub fn with_heartbeat(mut self, interval: Option<Duration>) -> Self {
        self.options.heartbeat = interval;
        self
    }

    /// Sets how long to wait for the answer to a ping (default as LiteCore:
    /// `min(20 s, heartbeat − 1 s)`, or the interval itself when that is 1 s or less).
    pub fn with_pong_timeout(mut self, timeout: Duration) -> Self {
        self.options.pong_timeout = Some(timeout);
        self
    }

    /// Sets the largest message accepted or sent, in bytes (default 64 MiB).
    pub fn with_max_message_size(mut self, bytes: usize) -> Self {
        self.options.max_message_size = bytes;
        self
    }

    /// Sets how a `wss://` server certificate is trusted (default: platform roots).
    pub fn with_trust(mut self, trust: ServerTrust) -> Self {
        self.trust = trust;
        self.tls = Arc::new(OnceLock::new());
        self
    }

    /// Connects: resolves the host, opens TCP (trying each address), does TLS for
    /// `wss://`, sends the upgrade request and checks the answer, all within the connect
    /// timeout.
    pub async fn connect(&self) -> Result<Connection, TransportError> {
        let request = self.build_request()?;
        let attempt = async {
            let tcp = self.connect_tcp().await?;
            if self.url.secure {
                let connector = self.tls_connector()?;
                let name = tls::server_name(&self.url.host)?;
                let stream = connector
                    .connect(name, tcp)
                    .await
                    .map_err(tls::map_handshake_error)?;
                self.upgrade(request, stream).await
            } else {
                self.upgrade(request, tcp).await
            }
        };
        tokio::time::timeout(self.connect_timeout, attempt)
            .await
            .unwrap_or_else(|_| {
                Err(TransportError::Timeout(format!(
                    "connecting to {} took longer than {:?}",
                    self.url.original, self.connect_timeout
                )))
            })
    }

    /// Does the WebSocket upgrade over a stream the caller opened (no TLS is added, even
    /// for `wss://`): for tests, proxies and simulated networks. The connect timeout
    /// applies.
    pub async fn connect_over<S>(&self, stream: S) -> Result<Connection, TransportError>
    where
        S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let request = self.build_request()?;
        tokio::time::timeout(self.connect_timeout, self.upgrade(request, stream))
            .await
            .unwrap_or_else(|_| {
                Err(TransportError::Timeout(format!(
                    "WebSocket upgrade with {} took longer than {:?}",
                    self.url.original, self.connect_timeout
                )))
            })
    }

    fn authority(&self) -> String {
        let host = if self.url.host.contains(':') {
            format!("[{}]", self.url.host)
        } else {
            self.url.host.clone()
        };
        let default_port = if self.url.secure { 443 } else { 80 };
        if self.url.port == default_port {
            host
        } else {
            format!("{host}:{}", self.url.port)
        }
    }

    fn tls_connector(&self) -> Result<TlsConnector, TransportError> {
        if let Some(connector) = self.tls.get() {
            return Ok(connector.clone());
        }
        let config = tls::client_config(&self.trust)?;
        let connector = TlsConnector::from(Arc::new(config));
        Ok(self.tls.get_or_init(|| connector).clone())
    }

    async fn connect_tcp(&self) -> Result<TcpStream, TransportError> {
        let host = self.url.host.as_str();
        let addrs: Vec<SocketAddr> = tokio::net::lookup_host((host, self.url.port))
            .await
            .map_err(|e| dns_error(host, &e))?
            .collect();
        if addrs.is_empty() {
            return Err(TransportError::Dns {
                host: host.to_owned(),
                temporary: false,
                message: "no addresses found".into(),
            });
        }
        let mut last_error = None;
        for addr in addrs {
            match TcpStream::connect(addr).await {
                Ok(stream) => {
                    // Small BLIP frames must not wait for Nagle.
                    let _ = stream.set_nodelay(true);
                    return Ok(stream);
                }
                Err(e) => last_error = Some(e),
            }
        }
        Err(TransportError::io(
            "connecting",
            last_error.unwrap_or_else(|| std::io::ErrorKind::NotConnected.into()),
        ))
    }

    /// The upgrade request, in LiteCore's order where tungstenite lets us choose (it
    /// writes Host, Connection, Upgrade, Sec-WebSocket-Version and Sec-WebSocket-Key
    /// first, then the others in insertion order).
    fn build_request(&self) -> Result<Request, TransportError> {
        let mut request = self
            .blipsync_url()
            .into_client_request()
            .map_err(|e| invalid(&self.url.original, e.to_string()))?;
        let headers = request.headers_mut();
        headers.clear();
        let value = |v: &str| {
            HeaderValue::from_str(v)
                .map_err(|_| TransportError::InvalidConfig(format!("invalid header value {v:?}")))
        };
        headers.insert(header::HOST, value(&self.authority())?);

        let mut user_agent = format!("ferrolite/{}", env!("CARGO_PKG_VERSION"));
        let mut cookies: Vec<String> = Vec::new();
        let mut extra: Vec<(HeaderName, HeaderValue)> = Vec::new();
        for (name, val) in &self.headers {
            let header_name = HeaderName::from_bytes(name.as_bytes()).map_err(|_| {
                TransportError::InvalidConfig(format!("invalid header name {name:?}"))
            })?;
            if header_name == header::USER_AGENT {
                user_agent.clone_from(val);
            } else if header_name == header::COOKIE {
                cookies.push(val.clone());
            } else if is_handshake_header(&header_name) {
                return Err(TransportError::InvalidConfig(format!(
                    "header {name:?} is managed by the WebSocket handshake"
                )));
            } else {
                extra.push((header_name, value(val)?));
            }
        }
        headers.insert(header::USER_AGENT, value(&user_agent)?);
        match &self.authenticator {
            Some(Authenticator::Basic { username, password }) => {
                let token = base64::engine::general_purpose::STANDARD
                    .encode(format!("{username}:{password}"));
                headers.insert(header::AUTHORIZATION, value(&format!("Basic {token}"))?);
            }
            Some(Authenticator::Session {
                session_id,
                cookie_name,
            }) => cookies.insert(0, format!("{cookie_name}={session_id}")),
            None => {}
        }
        if !cookies.is_empty() {
            headers.insert(header::COOKIE, value(&cookies.join("; "))?);
        }
        for (name, val) in extra {
            headers.append(name, val);
        }
        headers.insert(header::CONNECTION, HeaderValue::from_static("Upgrade"));
        headers.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
        headers.insert(
            header::SEC_WEBSOCKET_VERSION,
            HeaderValue::from_static("13"),
        );
        headers.insert(header::SEC_WEBSOCKET_KEY, value(&generate_key())?);
        if !self.subprotocols.is_empty() {
            headers.insert(
                header::SEC_WEBSOCKET_PROTOCOL,
                value(&self.subprotocols.join(","))?,
            );
        }
        Ok(request)
    }

    async fn upgrade<S>(&self, request: Request, stream: S) -> Result<Connection, TransportError>
    where
        S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let config = self.options.tungstenite_config();
        let (ws, response) =
            tokio_tungstenite::client_async_with_config(request, stream, Some(config))
                .await
                .map_err(map_upgrade_error)?;
        let chosen = response
            .headers()
            .get(header::SEC_WEBSOCKET_PROTOCOL)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        if !self.subprotocols.is_empty() {
            match &chosen {
                Some(p) if self.subprotocols.contains(p) => {}
                Some(_) => return Err(TransportError::UnexpectedSubprotocol),
                None => return Err(TransportError::NoSubprotocol),
            }
        }
        tracing::debug!(
            target: "ferrolite::network",
            url = %self.url.original,
            subprotocol = ?chosen,
            correlation_id = ?response.headers().get("x-correlation-id"),
            "WebSocket connected"
        );
        Ok(into_connection(ws, chosen, &self.options, None, None))
    }
}

#[async_trait]
impl Transport for UrlEndpoint {
    async fn connect(&self) -> Result<Connection, TransportError> {
        UrlEndpoint::connect(self).await
    }
}

fn is_handshake_header(name: &HeaderName) -> bool {
    name == header::HOST
        || name == header::CONNECTION
        || name == header::UPGRADE
        || name.as_str().starts_with("sec-websocket-")
}

/// Maps a failed upgrade: HTTP statuses with Sync Gateway's reason, subprotocol errors,
/// everything else as on an open connection.
fn map_upgrade_error(err: WsError) -> TransportError {
    match err {
        WsError::Http(response) => {
            let status = response.status();
            if status.is_success() {
                return TransportError::Protocol(format!(
                    "Server failed to upgrade connection (HTTP {})",
                    status.as_u16()
                ));
            }
            let body = response.body().as_deref().unwrap_or_default();
            TransportError::HttpStatus {
                status: status.as_u16(),
                reason: http_reason(status.canonical_reason(), body),
            }
        }
        WsError::Protocol(ProtocolError::SecWebSocketSubProtocolError(e)) => match e {
            SubProtocolError::NoSubProtocol => TransportError::NoSubprotocol,
            _ => TransportError::UnexpectedSubprotocol,
        },
        other => map_error(other),
    }
}

/// The reason of a refused upgrade: the `reason` member of a JSON body
/// (`{"error":…,"reason":…}`), else a short text body, else the status text.
fn http_reason(status_text: Option<&str>, body: &[u8]) -> String {
    if let Ok(json) = serde_json::from_slice::<serde_json::Value>(body) {
        if let Some(reason) = json.get("reason").and_then(|r| r.as_str()) {
            return reason.to_owned();
        }
        if let Some(error) = json.get("error").and_then(|r| r.as_str()) {
            return error.to_owned();
        }
    }
    let text = String::from_utf8_lossy(body);
    let text = text.trim();
    if !text.is_empty() && text.len() <= 200 && !text.starts_with('{') {
        return text.to_owned();
    }
    status_text.unwrap_or("HTTP error").to_owned()
}

/// Classifies a failed host lookup: "try again" answers are temporary (Network 1,
/// transient), the rest mean an unknown host (Network 2).
fn dns_error(host: &str, err: &std::io::Error) -> TransportError {
    let message = err.to_string();
    let lower = message.to_ascii_lowercase();
    let temporary = lower.contains("temporary failure")
        || lower.contains("try again")
        || err.kind() == std::io::ErrorKind::TimedOut;
    TransportError::Dns {
        host: host.to_owned(),
        temporary,
        message,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_endpoint_urls() {
        let e = UrlEndpoint::parse("ws://localhost:4984/userprofile").unwrap();
        assert_eq!(e.database(), "userprofile");
        assert_eq!(
            e.blipsync_url(),
            "ws://localhost:4984/userprofile/_blipsync"
        );
        let e = UrlEndpoint::parse("wss://sg.example.com/db/").unwrap();
        assert!(e.is_secure());
        assert_eq!(e.blipsync_url(), "wss://sg.example.com/db/_blipsync");
        let e = UrlEndpoint::parse("WS://[::1]:4984/db").unwrap();
        assert_eq!(e.blipsync_url(), "ws://[::1]:4984/db/_blipsync");
        let e = UrlEndpoint::parse("ws://h:80/prefix/db?x=1").unwrap();
        assert_eq!(e.blipsync_url(), "ws://h/prefix/db/_blipsync?x=1");
        assert_eq!(e.database(), "db");
    }

    #[test]
    fn refuses_bad_urls() {
        for url in [
            "http://localhost:4984/db",
            "https://localhost/db",
            "ws://localhost:4984",
            "ws://localhost:4984/",
            "localhost:4984/db",
            "ws://user:pass@localhost/db",
            "not a url",
        ] {
            let err = UrlEndpoint::parse(url).unwrap_err();
            assert!(
                matches!(err, TransportError::InvalidUrl { .. }),
                "{url}: {err}"
            );
            assert_eq!(err.code(), 4, "{url}");
        }
    }

    #[test]
    fn request_headers() {
        let e = UrlEndpoint::parse("ws://127.0.0.1:4984/db")
            .unwrap()
            .with_authenticator(Authenticator::basic("demo@example.com", "password"))
            .with_header("X-Custom", "1")
            .with_header("Cookie", "a=b");
        let r = e.build_request().unwrap();
        let h = r.headers();
        assert_eq!(h["host"], "127.0.0.1:4984");
        assert_eq!(
            h["authorization"],
            "Basic ZGVtb0BleGFtcGxlLmNvbTpwYXNzd29yZA=="
        );
        assert_eq!(
            h["sec-websocket-protocol"],
            "BLIP_3+CBMobile_3,BLIP_3+CBMobile_2"
        );
        assert_eq!(h["x-custom"], "1");
        assert_eq!(h["cookie"], "a=b");
        assert!(h["user-agent"].to_str().unwrap().starts_with("ferrolite/"));

        let e = UrlEndpoint::parse("ws://h/db")
            .unwrap()
            .with_authenticator(Authenticator::session_with_cookie("abc", "MySession"))
            .with_header("User-Agent", "app/1");
        let r = e.build_request().unwrap();
        assert_eq!(r.headers()["cookie"], "MySession=abc");
        assert_eq!(r.headers()["user-agent"], "app/1");

        let e = UrlEndpoint::parse("ws://h/db")
            .unwrap()
            .with_header("Sec-WebSocket-Extensions", "permessage-deflate");
        assert!(matches!(
            e.build_request(),
            Err(TransportError::InvalidConfig(_))
        ));
    }

    #[test]
    fn reasons_from_bodies() {
        assert_eq!(
            http_reason(
                Some("Unauthorized"),
                br#"{"error":"Unauthorized","reason":"Invalid login"}"#
            ),
            "Invalid login"
        );
        assert_eq!(
            http_reason(
                Some("Internal Server Error"),
                b"I only speak BLIP_3+CBMobile_3 protocols\n"
            ),
            "I only speak BLIP_3+CBMobile_3 protocols"
        );
        assert_eq!(http_reason(Some("Not Found"), b""), "Not Found");
    }

    #[test]
    fn dns_classification() {
        let temp = dns_error(
            "h",
            &std::io::Error::other(
                "failed to lookup address information: Temporary failure in name resolution",
            ),
        );
        assert_eq!(temp.code(), 1);
        assert!(temp.is_transient());
        let unknown = dns_error(
            "h",
            &std::io::Error::other(
                "failed to lookup address information: Name or service not known",
            ),
        );
        assert_eq!(unknown.code(), 2);
        assert!(!unknown.is_transient());
        assert!(unknown.is_network_dependent());
    }
}
