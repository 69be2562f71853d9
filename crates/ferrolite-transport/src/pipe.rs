//! In-process connections: two [`Connection`]s joined by bounded channels.
//!
//! Used for replication between two databases in the same process (Couchbase Lite's
//! `DatabaseEndpoint`) and under the message-stream endpoint. Semantics match the
//! WebSocket transport: messages arrive whole and in order, `send` waits when the
//! channel toward the peer is full, `close(code, reason)` is seen by the peer as
//! [`Incoming::Closed`], and dropping a connection without closing is seen as an
//! abnormal close (1006).

use std::sync::{Arc, OnceLock};

use async_trait::async_trait;
use bytes::Bytes;
use tokio::sync::mpsc;

use crate::connection::{
    check_close_code, closed_error, truncate_reason, CloseInfo, Connection, Incoming,
    MessageReceiver, MessageSender,
};
use crate::error::TransportError;

/// Default number of messages buffered in each direction of a [`pipe`].
pub const DEFAULT_PIPE_CAPACITY: usize = 16;

/// What travels through a pipe channel.
#[derive(Debug)]
pub(crate) enum Frame {
    Message(Bytes),
    Close(CloseInfo),
}

/// The sending half of one direction.
pub(crate) struct PipeSender {
    tx: Option<mpsc::Sender<Frame>>,
    /// Set when this side closed.
    closed_here: Arc<OnceLock<CloseInfo>>,
    /// Set when the peer closed; sending after that fails as on a WebSocket.
    closed_there: Arc<OnceLock<CloseInfo>>,
}

/// The receiving half of one direction.
pub(crate) struct PipeReceiver {
    rx: mpsc::Receiver<Frame>,
    done: bool,
}

/// Builds one direction: a sender, the matching receiver, and the "sender closed" flag
/// the other direction's sender consults.
fn direction(capacity: usize) -> (mpsc::Sender<Frame>, PipeReceiver) {
    let (tx, rx) = mpsc::channel(capacity.max(1));
    (tx, PipeReceiver { rx, done: false })
}

/// Two connected connections with `capacity` messages of buffer in each direction.
pub(crate) fn pipe_halves(
    capacity: usize,
) -> ((PipeSender, PipeReceiver), (PipeSender, PipeReceiver)) {
    let (a_tx, b_rx) = direction(capacity);
    let (b_tx, a_rx) = direction(capacity);
    let a_closed = Arc::new(OnceLock::new());
    let b_closed = Arc::new(OnceLock::new());
    let a_sender = PipeSender {
        tx: Some(a_tx),
        closed_here: a_closed.clone(),
        closed_there: b_closed.clone(),
    };
    let b_sender = PipeSender {
        tx: Some(b_tx),
        closed_here: b_closed,
        closed_there: a_closed,
    };
    ((a_sender, a_rx), (b_sender, b_rx))
}

/// Returns two connected in-process connections with [`DEFAULT_PIPE_CAPACITY`].
///
/// ```
/// # tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(async {
/// use ferrolite_transport::{pipe, Incoming};
///
/// let (mut a, mut b) = pipe();
/// a.send("hello".into()).await?;
/// assert_eq!(b.receive().await?, Some(Incoming::Message("hello".into())));
/// # Ok::<(), ferrolite_transport::TransportError>(())
/// # }).unwrap();
/// ```
pub fn pipe() -> (Connection, Connection) {
    pipe_with_capacity(DEFAULT_PIPE_CAPACITY)
}

/// Like [`pipe`] with `capacity` messages of buffer in each direction (at least 1).
pub fn pipe_with_capacity(capacity: usize) -> (Connection, Connection) {
    let ((a_tx, a_rx), (b_tx, b_rx)) = pipe_halves(capacity);
    (
        Connection::new(Box::new(a_tx), Box::new(a_rx)),
        Connection::new(Box::new(b_tx), Box::new(b_rx)),
    )
}

impl PipeSender {
    pub(crate) async fn send_message(&mut self, message: Bytes) -> Result<(), TransportError> {
        if let Some(info) = self.closed_here.get().or_else(|| self.closed_there.get()) {
            return Err(closed_error(Some(info)));
        }
        let Some(tx) = &self.tx else {
            return Err(closed_error(self.closed_here.get()));
        };
        tx.send(Frame::Message(message))
            .await
            .map_err(|_| TransportError::abnormal("the peer dropped the connection"))
    }

    pub(crate) async fn send_close(
        &mut self,
        code: u16,
        reason: &str,
    ) -> Result<(), TransportError> {
        check_close_code(code)?;
        let Some(tx) = self.tx.take() else {
            return Ok(());
        };
        let info = CloseInfo::new(code, truncate_reason(reason));
        let _ = self.closed_here.set(info.clone());
        // A peer that is gone cannot see the close; that is not our error.
        let _ = tx.send(Frame::Close(info)).await;
        Ok(())
    }
}

#[async_trait]
impl MessageSender for PipeSender {
    async fn send(&mut self, message: Bytes) -> Result<(), TransportError> {
        self.send_message(message).await
    }

    async fn close(&mut self, code: u16, reason: &str) -> Result<(), TransportError> {
        self.send_close(code, reason).await
    }
}

impl PipeReceiver {
    pub(crate) async fn next_frame(&mut self) -> Result<Option<Incoming>, TransportError> {
        if self.done {
            return Ok(None);
        }
        match self.rx.recv().await {
            Some(Frame::Message(message)) => Ok(Some(Incoming::Message(message))),
            Some(Frame::Close(info)) => {
                self.done = true;
                self.rx.close();
                Ok(Some(Incoming::Closed(info)))
            }
            None => {
                self.done = true;
                Err(TransportError::abnormal(
                    "the peer dropped the connection without closing it",
                ))
            }
        }
    }
}

#[async_trait]
impl MessageReceiver for PipeReceiver {
    async fn receive(&mut self) -> Result<Option<Incoming>, TransportError> {
        self.next_frame().await
    }
}
