//! Message endpoints: replication over a transport the application brings (Bluetooth,
//! Multipeer Connectivity, a serial link, any socket), in Couchbase Lite's two modes.
//!
//! * **Message stream** ([`message_stream`]): the application's transport preserves
//!   message boundaries. Ferrolite gets a [`Connection`]; the application gets a
//!   [`MessageStreamHandle`] through which it delivers the messages it received from the
//!   remote peer ([`MessageInbound::deliver`]) and takes the messages ferrolite wants sent
//!   ([`MessageOutbound::next`]).
//! * **Byte stream** ([`byte_stream`](crate::byte_stream)): the application's transport
//!   moves bytes (any `AsyncRead + AsyncWrite`); ferrolite does WebSocket framing over
//!   them, as Couchbase Lite does, with no HTTP upgrade.

use bytes::Bytes;
use tokio::sync::Mutex;

use crate::connection::{CloseInfo, Connection, Incoming};
use crate::error::TransportError;
use crate::pipe::{pipe_halves, PipeReceiver, PipeSender, DEFAULT_PIPE_CAPACITY};

/// What ferrolite asks the application to send to the remote peer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outgoing {
    /// Send this message.
    Message(Bytes),
    /// Close the remote connection with this code and reason; nothing follows.
    Close(CloseInfo),
}

/// Creates a message-stream endpoint: ferrolite's [`Connection`] and the application's
/// [`MessageStreamHandle`], with `capacity` messages of buffer in each direction.
///
/// Dropping the handle (or its [`MessageInbound`] half) without
/// [`MessageInbound::deliver_close`] makes ferrolite see an abnormal close (1006), as for
/// a broken socket; [`MessageOutbound::next`] returns `None` when ferrolite dropped its
/// connection without closing it.
pub fn message_stream(capacity: usize) -> (Connection, MessageStreamHandle) {
    let ((sender, receiver), (app_sender, app_receiver)) = pipe_halves(capacity);
    (
        Connection::new(Box::new(sender), Box::new(receiver)),
        MessageStreamHandle {
            inbound: MessageInbound {
                sender: Mutex::new(app_sender),
            },
            outbound: MessageOutbound {
                receiver: app_receiver,
            },
        },
    )
}

/// Like [`message_stream`] with [`DEFAULT_PIPE_CAPACITY`].
pub fn message_stream_default() -> (Connection, MessageStreamHandle) {
    message_stream(DEFAULT_PIPE_CAPACITY)
}

/// The application's side of a message-stream endpoint.
#[derive(Debug)]
pub struct MessageStreamHandle {
    inbound: MessageInbound,
    outbound: MessageOutbound,
}

impl MessageStreamHandle {
    /// Splits into the delivering and the taking half, for use from two tasks.
    pub fn split(self) -> (MessageInbound, MessageOutbound) {
        (self.inbound, self.outbound)
    }

    /// See [`MessageInbound::deliver`].
    pub async fn deliver(&self, message: Bytes) -> Result<(), TransportError> {
        self.inbound.deliver(message).await
    }

    /// See [`MessageInbound::deliver_close`].
    pub async fn deliver_close(&self, code: u16, reason: &str) -> Result<(), TransportError> {
        self.inbound.deliver_close(code, reason).await
    }

    /// See [`MessageOutbound::next`].
    pub async fn next(&mut self) -> Option<Outgoing> {
        self.outbound.next().await
    }
}

/// Delivers what the remote peer sent into ferrolite.
pub struct MessageInbound {
    sender: Mutex<PipeSender>,
}

impl MessageInbound {
    /// Hands ferrolite one message received from the remote peer. Waits while ferrolite
    /// has `capacity` messages unread (back-pressure: stop reading from your transport
    /// meanwhile). Fails once ferrolite dropped its connection or after a close.
    pub async fn deliver(&self, message: Bytes) -> Result<(), TransportError> {
        self.sender.lock().await.send_message(message).await
    }

    /// Tells ferrolite the remote peer closed the connection with this code and reason.
    pub async fn deliver_close(&self, code: u16, reason: &str) -> Result<(), TransportError> {
        self.sender.lock().await.send_close(code, reason).await
    }
}

impl std::fmt::Debug for MessageInbound {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MessageInbound").finish_non_exhaustive()
    }
}

/// Takes what ferrolite wants sent to the remote peer.
pub struct MessageOutbound {
    receiver: PipeReceiver,
}

impl MessageOutbound {
    /// The next message to send, in order; [`Outgoing::Close`] when ferrolite closed the
    /// connection; `None` after that, or when ferrolite dropped its connection without
    /// closing (treat as an abnormal close of your transport).
    pub async fn next(&mut self) -> Option<Outgoing> {
        match self.receiver.next_frame().await {
            Ok(Some(Incoming::Message(message))) => Some(Outgoing::Message(message)),
            Ok(Some(Incoming::Closed(info))) => Some(Outgoing::Close(info)),
            Ok(None) | Err(_) => None,
        }
    }
}

impl std::fmt::Debug for MessageOutbound {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MessageOutbound").finish_non_exhaustive()
    }
}
