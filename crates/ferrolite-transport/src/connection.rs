//! The connection abstraction: a duplex of whole binary messages.
//!
//! # Async trait style
//!
//! [`MessageSender`], [`MessageReceiver`] and [`Transport`] use the `async-trait` crate:
//! every method returns a boxed future. The replicator holds these as `Box<dyn …>` (one
//! connection type chosen at run time per endpoint), and behind `dyn` a native
//! `async fn` would need the same boxing through a second, object-safe shim trait — two
//! traits per role for no saving. One allocation per call is noise next to what a call
//! does (a WebSocket frame written to a socket, or a channel hand-off of a BLIP frame).

use std::fmt;

use async_trait::async_trait;
use bytes::Bytes;

use crate::error::{close_code, TransportError};

/// The close code and reason of a closed connection.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct CloseInfo {
    /// The WebSocket close code (see [`close_code`](crate::close_code)).
    pub code: u16,
    /// The reason text (at most 123 bytes on a WebSocket).
    pub reason: String,
}

impl CloseInfo {
    /// A close code with a reason.
    pub fn new(code: u16, reason: impl Into<String>) -> Self {
        CloseInfo {
            code,
            reason: reason.into(),
        }
    }
}

/// What [`MessageReceiver::receive`] yields.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Incoming {
    /// One whole message.
    Message(Bytes),
    /// The peer closed the connection cleanly with this code and reason (or echoed our
    /// own close). Nothing follows: the next `receive` returns `Ok(None)`.
    Closed(CloseInfo),
}

/// The sending half of a connection.
///
/// `send` waits while the transport cannot take more (back-pressure: a full socket
/// buffer, a full channel), so a slow peer slows the sender down instead of filling
/// memory.
#[async_trait]
pub trait MessageSender: Send {
    /// Sends one whole message. Fails with [`TransportError::Closed`] once the connection
    /// is closed (by either side) and with a transport error when it broke.
    async fn send(&mut self, message: Bytes) -> Result<(), TransportError>;

    /// Starts a clean close with a WebSocket close code (1000 normal, 4001 transient…)
    /// and a reason. The peer sees [`Incoming::Closed`] with them; our own receiver then
    /// yields the peer's answer. Closing twice is not an error. Codes that must not be
    /// sent (below 1000, 1004–1006, 1015, above 4999) are refused with
    /// [`TransportError::InvalidConfig`].
    async fn close(&mut self, code: u16, reason: &str) -> Result<(), TransportError>;
}

/// The receiving half of a connection.
#[async_trait]
pub trait MessageReceiver: Send {
    /// The next incoming item: `Ok(Some(Incoming::Message))` for each message in order,
    /// `Ok(Some(Incoming::Closed))` once when the peer closed cleanly, then `Ok(None)`.
    /// A connection that broke without a close handshake yields an error instead: a
    /// [`TransportError::Closed`] with code 1006 (abnormal, transient) when the peer just
    /// vanished, or the socket, timeout (dead heartbeat) or protocol error.
    async fn receive(&mut self) -> Result<Option<Incoming>, TransportError>;
}

/// An open connection: a sender, a receiver and what was negotiated.
///
/// Use it directly (`send`, `receive`, `close`) or [`split`](Self::split) it so one task
/// reads while another writes — BLIP sends ACKs while it receives.
pub struct Connection {
    sender: Box<dyn MessageSender>,
    receiver: Box<dyn MessageReceiver>,
    subprotocol: Option<String>,
}

impl Connection {
    /// Assembles a connection from its halves (how a custom transport plugs in).
    pub fn new(sender: Box<dyn MessageSender>, receiver: Box<dyn MessageReceiver>) -> Self {
        Connection {
            sender,
            receiver,
            subprotocol: None,
        }
    }

    /// Sets the negotiated application subprotocol (e.g. `BLIP_3+CBMobile_3`).
    pub fn with_subprotocol(mut self, subprotocol: Option<String>) -> Self {
        self.subprotocol = subprotocol;
        self
    }

    /// The negotiated subprotocol: the WebSocket `Sec-WebSocket-Protocol` the server
    /// chose, or what the creator of an in-process or message connection set.
    pub fn subprotocol(&self) -> Option<&str> {
        self.subprotocol.as_deref()
    }

    /// Sends one message; see [`MessageSender::send`].
    pub async fn send(&mut self, message: Bytes) -> Result<(), TransportError> {
        self.sender.send(message).await
    }

    /// Starts a clean close; see [`MessageSender::close`].
    pub async fn close(&mut self, code: u16, reason: &str) -> Result<(), TransportError> {
        self.sender.close(code, reason).await
    }

    /// Receives the next item; see [`MessageReceiver::receive`].
    pub async fn receive(&mut self) -> Result<Option<Incoming>, TransportError> {
        self.receiver.receive().await
    }

    /// Splits into the two halves, to be used from different tasks. Dropping both halves
    /// without closing makes the peer see an abnormal close (1006).
    pub fn split(self) -> (Box<dyn MessageSender>, Box<dyn MessageReceiver>) {
        (self.sender, self.receiver)
    }
}

impl fmt::Debug for Connection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Connection")
            .field("subprotocol", &self.subprotocol)
            .finish_non_exhaustive()
    }
}

/// Something that opens connections: one call per replication attempt, so a replicator
/// can reconnect after a transient error. [`UrlEndpoint`](crate::UrlEndpoint) is one.
#[async_trait]
pub trait Transport: Send + Sync {
    /// Opens a new connection.
    async fn connect(&self) -> Result<Connection, TransportError>;
}

/// Checks that a close code may be sent in a close frame (RFC 6455 §7.4).
pub(crate) fn check_close_code(code: u16) -> Result<(), TransportError> {
    let sendable = matches!(code, 1000..=1003 | 1007..=1014 | 3000..=4999);
    if sendable {
        Ok(())
    } else {
        Err(TransportError::InvalidConfig(format!(
            "close code {code} cannot be sent"
        )))
    }
}

/// Truncates a close reason to the 123 bytes a close frame can carry, at a character
/// boundary.
pub(crate) fn truncate_reason(reason: &str) -> &str {
    const MAX: usize = 123;
    if reason.len() <= MAX {
        return reason;
    }
    let mut end = MAX;
    while !reason.is_char_boundary(end) {
        end -= 1;
    }
    &reason[..end]
}

/// The error for using a connection that was closed with `info`.
pub(crate) fn closed_error(info: Option<&CloseInfo>) -> TransportError {
    match info {
        Some(info) => TransportError::Closed {
            code: info.code,
            reason: info.reason.clone(),
        },
        None => TransportError::Closed {
            code: close_code::ABNORMAL,
            reason: "connection lost".into(),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn close_codes() {
        assert!(check_close_code(1000).is_ok());
        assert!(check_close_code(4001).is_ok());
        for code in [0, 999, 1004, 1005, 1006, 1015, 5000] {
            assert!(check_close_code(code).is_err(), "{code}");
        }
    }

    #[test]
    fn reason_truncation() {
        let long = "é".repeat(100);
        let cut = truncate_reason(&long);
        assert!(cut.len() <= 123);
        assert_eq!(cut.len(), 122);
        assert_eq!(truncate_reason("short"), "short");
    }
}
