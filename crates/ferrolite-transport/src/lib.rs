//! Transports for ferrolite replication.
//!
//! Replication runs over a [`Connection`]: a duplex of whole binary messages (BLIP
//! frames) with back-pressure, usable from tokio. A connection splits into a
//! [`MessageSender`] and a [`MessageReceiver`] so one task can read while another writes,
//! and it reports the negotiated subprotocol. Connections come from:
//!
//! * [`UrlEndpoint`] — the active side of Couchbase Lite's WebSocket transport:
//!   `ws://host:port/db` or `wss://…`, connecting to `<url>/_blipsync` with
//!   `Sec-WebSocket-Protocol: BLIP_3+CBMobile_3,BLIP_3+CBMobile_2`, Basic or session
//!   authentication, custom headers, a connect timeout, heartbeat pings, and TLS through
//!   rustls with platform roots, custom roots, a pinned certificate or
//!   self-signed-only trust ([`ServerTrust`]).
//! * [`Listener`] — the passive side: accepts `GET /<db>/_blipsync` upgrades with Sync
//!   Gateway's refusals (404, 401 with `WWW-Authenticate`, 500 for no common
//!   subprotocol), optional TLS, and hands out [`AcceptedConnection`]s.
//! * [`pipe`] — two connected in-process connections (Couchbase Lite's
//!   `DatabaseEndpoint`).
//! * [`message_stream`] and [`byte_stream`] — Couchbase Lite's `MessageEndpoint` modes
//!   for a transport the application brings. A byte stream carries WebSocket frames
//!   without an HTTP upgrade, as Couchbase Lite's `ProtocolType.byteStream` does: the
//!   [`Active`](ByteStreamRole::Active) end frames as a WebSocket client, the
//!   [`Passive`](ByteStreamRole::Passive) end as a server, so either end can be
//!   Couchbase Lite.
//!
//! Errors are [`TransportError`]s with a Couchbase-Lite-style [`ErrorDomain`] and code and
//! the [`is_transient`](TransportError::is_transient) /
//! [`is_network_dependent`](TransportError::is_network_dependent) classification the
//! replicator's retry logic needs.
//!
//! # Async traits
//!
//! [`MessageSender`], [`MessageReceiver`] and [`Transport`] are declared with the
//! `async-trait` crate (each method returns a boxed future), so they are dyn-compatible
//! as they stand: the replicator holds `Box<dyn MessageSender>` and friends. Native
//! `async fn` in traits would need a second, boxing shim trait for `dyn` use, which
//! costs the same allocation per call; one allocation is noise next to a frame written
//! to a socket or handed through a channel.
//!
//! # Example
//!
//! ```
//! # tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(async {
//! use ferrolite_transport::{pipe, Incoming};
//!
//! let (client, mut server) = pipe();
//! let (mut tx, mut rx) = client.split();
//! tx.send("getCheckpoint".into()).await?;
//! assert_eq!(server.receive().await?, Some(Incoming::Message("getCheckpoint".into())));
//! server.send("checkpoint".into()).await?;
//! assert_eq!(rx.receive().await?, Some(Incoming::Message("checkpoint".into())));
//!
//! tx.close(1000, "done").await?;
//! match server.receive().await? {
//!     Some(Incoming::Closed(info)) => assert_eq!((info.code, info.reason.as_str()), (1000, "done")),
//!     other => panic!("unexpected {other:?}"),
//! }
//! # Ok::<(), ferrolite_transport::TransportError>(())
//! # }).unwrap();
//! ```
//!
//! Over the network (not run here):
//!
//! ```no_run
//! # async fn demo() -> Result<(), ferrolite_transport::TransportError> {
//! use ferrolite_transport::{Authenticator, UrlEndpoint};
//!
//! let endpoint = UrlEndpoint::parse("ws://localhost:4984/userprofile")?
//!     .with_authenticator(Authenticator::session("904ac010862f37c8dd99015a33ab5a3565fd8447"));
//! let connection = endpoint.connect().await?;
//! println!("speaking {:?}", connection.subprotocol());
//! # Ok(()) }
//! ```

mod byte_stream;
mod connection;
mod error;
mod message_endpoint;
mod pipe;
mod tls;
mod ws;

pub use byte_stream::{byte_stream, ByteStreamConfig, ByteStreamRole, BYTE_STREAM_SUBPROTOCOL};
pub use connection::{CloseInfo, Connection, Incoming, MessageReceiver, MessageSender, Transport};
pub use error::{
    close_code, is_network_dependent_code, is_transient_code, network_code, ErrorDomain,
    TlsFailure, TransportError,
};
pub use message_endpoint::{
    message_stream, message_stream_default, MessageInbound, MessageOutbound, MessageStreamHandle,
    Outgoing,
};
pub use pipe::{pipe, pipe_with_capacity, DEFAULT_PIPE_CAPACITY};
pub use tls::{Certificate, ServerTrust, TlsIdentity};
pub use ws::client::{
    Authenticator, UrlEndpoint, DEFAULT_CONNECT_TIMEOUT, DEFAULT_SESSION_COOKIE,
    DEFAULT_SUBPROTOCOLS,
};
pub use ws::listener::{
    AcceptedConnection, AuthCallback, AuthDecision, AuthRequest, BasicCredentials, Listener,
    ListenerConfig, ListenerTls,
};
pub use ws::DEFAULT_HEARTBEAT;

/// Default largest message, in bytes, of every transport: 64 MiB.
pub const DEFAULT_MAX_MESSAGE_SIZE: usize = 64 << 20;
