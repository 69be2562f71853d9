//! Byte-stream message endpoints: WebSocket framing over bytes the application moves
//! (Couchbase Lite's `MessageEndpoint` with `ProtocolType.byteStream`).
//!
//! Couchbase Lite's replicator, given a byte stream, does the WebSocket framing itself
//! (RFC 6455 frames) with no HTTP upgrade: the active peer (the replicator) frames as a
//! WebSocket client, masking every frame it sends, and the passive peer (the
//! `MessageEndpointListener`) frames as a WebSocket server. [`byte_stream`] does the
//! same with tokio-tungstenite, and runs the result through the crate's WebSocket
//! connection machinery (the reader task, heartbeat pings, close handshake and
//! back-pressure of [`UrlEndpoint`](crate::UrlEndpoint) and [`Listener`](crate::Listener)
//! connections), so a ferrolite peer and a Couchbase Lite peer can replicate over any
//! transport that moves bytes.

use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite};
use tokio_tungstenite::tungstenite::protocol::Role;
use tokio_tungstenite::WebSocketStream;

use crate::connection::Connection;
use crate::ws::{into_connection, WsOptions, DEFAULT_HEARTBEAT, DEFAULT_INCOMING_CAPACITY};

/// The subprotocol a byte-stream connection reports by default: what both ends of a
/// Couchbase Lite 3.x `MessageEndpoint` speak, since nothing is negotiated.
pub const BYTE_STREAM_SUBPROTOCOL: &str = "BLIP_3+CBMobile_3";

/// Which end of a byte stream this peer is; it decides the WebSocket framing.
///
/// The two ends of one byte stream must take opposite roles. Two active ends reject each
/// other's masked frames, two passive ends each other's unmasked frames: the first
/// message then fails with a protocol error (WebSocket close code 1002).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ByteStreamRole {
    /// The peer that runs the replicator (Couchbase Lite's `MessageEndpoint` in a
    /// `ReplicatorConfiguration`): frames as a WebSocket **client**, masking every frame
    /// it sends, and expects unmasked frames.
    Active,
    /// The peer that accepts the connection (Couchbase Lite's
    /// `MessageEndpointListener`): frames as a WebSocket **server**, sending unmasked
    /// frames, and expects masked frames.
    Passive,
}

impl ByteStreamRole {
    fn framing(self) -> Role {
        match self {
            ByteStreamRole::Active => Role::Client,
            ByteStreamRole::Passive => Role::Server,
        }
    }
}

/// Settings of a [`byte_stream`] connection.
#[derive(Debug, Clone)]
pub struct ByteStreamConfig {
    /// Which end this peer is: [`Active`](ByteStreamRole::Active) frames as a WebSocket
    /// client, [`Passive`](ByteStreamRole::Passive) as a WebSocket server.
    pub role: ByteStreamRole,
    /// Largest message accepted in either direction, in bytes (default 64 MiB); also the
    /// largest WebSocket frame accepted. A received frame announcing more fails the
    /// connection with [`TransportError::MessageTooBig`](crate::TransportError) (1009)
    /// before its payload is read; a larger `send` is refused the same way.
    pub max_message_size: usize,
    /// Interval of WebSocket heartbeat pings (default 300 s for both roles, as LiteCore
    /// does whenever it frames a byte stream); `None` or zero disables them. A peer that
    /// sends nothing back within `min(20 s, interval − 1 s)` (the interval itself when
    /// that is 1 s or less) is reported dead with a transient
    /// [`TransportError::Timeout`](crate::TransportError). Pings from the peer are always
    /// answered.
    pub heartbeat: Option<Duration>,
    /// What [`Connection::subprotocol`] reports (default
    /// [`BYTE_STREAM_SUBPROTOCOL`], `BLIP_3+CBMobile_3`). Nothing is negotiated or sent
    /// for it: it only tells the layer above which replication protocol the peer
    /// speaks (set `BLIP_3+CBMobile_2` for a Couchbase Lite 2.x peer).
    pub subprotocol: Option<String>,
    /// When this becomes `true`, the connection is closed with code 1001 (going away), as
    /// a server shutting down does (default: none).
    pub shutdown: Option<tokio::sync::watch::Receiver<bool>>,
}

impl ByteStreamConfig {
    /// Default settings for `role`: 64 MiB messages, a heartbeat every 300 s, reporting
    /// `BLIP_3+CBMobile_3`.
    pub fn new(role: ByteStreamRole) -> Self {
        ByteStreamConfig {
            role,
            max_message_size: crate::DEFAULT_MAX_MESSAGE_SIZE,
            heartbeat: Some(DEFAULT_HEARTBEAT),
            subprotocol: Some(BYTE_STREAM_SUBPROTOCOL.to_owned()),
            shutdown: None,
        }
    }

    /// Default settings of the active end (WebSocket client framing).
    pub fn active() -> Self {
        Self::new(ByteStreamRole::Active)
    }

    /// Default settings of the passive end (WebSocket server framing).
    pub fn passive() -> Self {
        Self::new(ByteStreamRole::Passive)
    }

    /// Sets [`max_message_size`](Self::max_message_size).
    pub fn with_max_message_size(mut self, bytes: usize) -> Self {
        self.max_message_size = bytes;
        self
    }

    /// Sets [`heartbeat`](Self::heartbeat).
    pub fn with_heartbeat(mut self, interval: Option<Duration>) -> Self {
        self.heartbeat = interval;
        self
    }

    /// Sets [`subprotocol`](Self::subprotocol).
    pub fn with_subprotocol(mut self, subprotocol: Option<String>) -> Self {
        self.subprotocol = subprotocol;
        self
    }

    /// Sets [`shutdown`](Self::shutdown).
    pub fn with_shutdown(mut self, shutdown: tokio::sync::watch::Receiver<bool>) -> Self {
        self.shutdown = Some(shutdown);
        self
    }

    fn ws_options(&self) -> WsOptions {
        WsOptions {
            heartbeat: self.heartbeat,
            pong_timeout: None,
            max_message_size: self.max_message_size,
            incoming_capacity: DEFAULT_INCOMING_CAPACITY,
        }
    }
}

/// Runs a connection over a byte stream the application provides (Couchbase Lite's
/// byte-stream `MessageEndpoint` mode), framed as a WebSocket without an HTTP upgrade.
///
/// Must be awaited inside a tokio runtime: the connection runs a reader task (and a
/// heartbeat task when [`ByteStreamConfig::heartbeat`] is set). A stream that is not
/// `Unpin` can be passed as `Box::pin(stream)`.
///
/// # Framing
///
/// The bytes are RFC 6455 WebSocket frames, exactly as after an upgrade, the first frame
/// starting at the first byte of the stream:
///
/// * each message is one binary frame (`0x82`, then the length and the payload); the
///   [`Active`](ByteStreamRole::Active) end masks its frames (mask bit and a fresh 4-byte
///   key), the [`Passive`](ByteStreamRole::Passive) end does not;
/// * [`close`](Connection::close) sends a close frame (`0x88`) carrying the code
///   (2 bytes, big-endian) and the UTF-8 reason (at most 123 bytes); the peer answers
///   with its own close frame, and the peer's code and reason arrive as
///   [`Incoming::Closed`](crate::Incoming);
/// * heartbeat pings (`0x89`) and the answering pongs (`0x8a`) travel between messages;
/// * no extensions (no compression) and no subprotocol negotiation: what
///   [`Connection::subprotocol`] reports is [`ByteStreamConfig::subprotocol`].
///
/// A frame longer than [`ByteStreamConfig::max_message_size`] fails the connection with
/// [`TransportError::MessageTooBig`](crate::TransportError) (1009), a frame that breaks
/// the framing rules (a masked frame reaching the active end, an unmasked one reaching
/// the passive end, an unknown opcode) with a protocol error (1002), and the end of the
/// stream without a close frame is an abnormal close (1006).
///
/// Back-pressure comes from the stream: `send` returns once the frame was flushed into
/// it, and when the application stops reading, the reader stops reading the stream. A
/// `send` cancelled half-way leaves no torn frame: the rest is written before the next
/// frame. Dropping the connection drops the stream, which the other end reads as an
/// abnormal close (1006).
///
/// # Example
///
/// ```
/// # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
/// use ferrolite_transport::{byte_stream, ByteStreamConfig, Incoming};
///
/// // Two ends of one byte transport (here an in-memory pipe).
/// let (here, there) = tokio::io::duplex(64 * 1024);
/// let mut active = byte_stream(here, ByteStreamConfig::active()).await;
/// let mut passive = byte_stream(there, ByteStreamConfig::passive()).await;
/// assert_eq!(active.subprotocol(), Some("BLIP_3+CBMobile_3"));
///
/// active.send("getCheckpoint".into()).await?;
/// assert_eq!(passive.receive().await?, Some(Incoming::Message("getCheckpoint".into())));
/// active.close(1000, "done").await?;
/// match passive.receive().await? {
///     Some(Incoming::Closed(info)) => assert_eq!((info.code, info.reason.as_str()), (1000, "done")),
///     other => panic!("unexpected {other:?}"),
/// }
/// # Ok::<(), ferrolite_transport::TransportError>(())
/// # }).unwrap();
/// ```
pub async fn byte_stream<S>(stream: S, config: ByteStreamConfig) -> Connection
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let options = config.ws_options();
    let ws = WebSocketStream::from_raw_socket(
        stream,
        config.role.framing(),
        Some(options.tungstenite_config()),
    )
    .await;
    into_connection(ws, config.subprotocol, &options, config.shutdown, None)
}
