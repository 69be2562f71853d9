//! The connection driver: one tokio task per connection pumping between the transport and
//! the sans-IO [`blip::Connection`].
//!
//! Three tasks serve a connection:
//!
//! - the **reader** loops on [`MessageReceiver::receive`] and forwards each WebSocket
//!   message into a bounded channel;
//! - the **writer** takes frames from a bounded channel and calls [`MessageSender::send`]
//!   (and finally `close`);
//! - the **core** owns the `blip::Connection`. In one `select!` it feeds received frames to
//!   `receive`, hands complete requests to the handler channel, matches responses to the
//!   table of pending requests (oneshot senders), accepts commands (send a request, a
//!   NoReply request, a response, close) and moves frames from `next_frame` to the writer.
//!
//! The core never waits on one thing alone: while the writer is busy it keeps reading,
//! while the handler is busy it keeps writing. Back-pressure comes from bounded channels and
//! two gates: new outgoing requests are accepted only while few messages wait in the BLIP
//! outbox, and frames are read only while few received requests wait for the handler (so
//! a slow handler slows the peer down through the transport). Responses are always
//! accepted, so a handler answering a request never waits on the peer.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use bytes::Bytes;
use ferrolite_protocol::blip::{self, Message, MessageType};
use ferrolite_transport::{
    close_code, CloseInfo, Connection, Incoming, MessageReceiver, MessageSender, TransportError,
};
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;
use tracing::{debug, trace, warn};

use crate::ReplicatorError;

/// Received requests waiting for the handler before the core stops reading frames.
const MAX_INBOX: usize = 64;
/// Messages waiting in the BLIP outbox before new requests are refused for a while.
const MAX_OUTBOX: u64 = 32;
/// How long a close waits for the peer's answer.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(2);

type ReplyTx = oneshot::Sender<Result<Message, ReplicatorError>>;

/// A command for the core.
enum Command {
    /// Send a request; deliver its response to `reply` (none for NoReply requests).
    Request {
        message: Message,
        reply: Option<ReplyTx>,
    },
    /// Close the connection once everything queued is sent.
    Close {
        code: u16,
        reason: String,
        done: oneshot::Sender<()>,
    },
}

/// A reply that will arrive for a request sent with [`Blip::send_request`].
#[derive(Debug)]
pub(crate) struct PendingReply(oneshot::Receiver<Result<Message, ReplicatorError>>);

impl PendingReply {
    /// Waits for the reply (an error reply is a `Message` of type error).
    pub(crate) async fn wait(self) -> Result<Message, ReplicatorError> {
        self.0
            .await
            .unwrap_or_else(|_| Err(ReplicatorError::connection_closed()))
    }
}

/// The handle through which the rest of the replicator talks over a connection. Cheap to
/// clone; every clone talks to the same core.
#[derive(Clone)]
pub(crate) struct Blip {
    commands: mpsc::Sender<Command>,
    responses: mpsc::Sender<Message>,
}

impl Blip {
    /// Queues a request expecting a reply; returns once the core accepted it.
    pub(crate) async fn send_request(
        &self,
        message: Message,
    ) -> Result<PendingReply, ReplicatorError> {
        let (tx, rx) = oneshot::channel();
        let mut message = message;
        message.no_reply = false;
        self.commands
            .send(Command::Request {
                message,
                reply: Some(tx),
            })
            .await
            .map_err(|_| ReplicatorError::connection_closed())?;
        Ok(PendingReply(rx))
    }

    /// Sends a request and waits for its reply.
    pub(crate) async fn request(&self, message: Message) -> Result<Message, ReplicatorError> {
        self.send_request(message).await?.wait().await
    }

    /// Queues a NoReply request.
    pub(crate) async fn send_no_reply(&self, message: Message) -> Result<(), ReplicatorError> {
        let mut message = message;
        message.no_reply = true;
        self.commands
            .send(Command::Request {
                message,
                reply: None,
            })
            .await
            .map_err(|_| ReplicatorError::connection_closed())
    }

    /// Queues a response (or error) to a request of the peer. Harmless once closed.
    pub(crate) async fn respond(&self, message: Message) {
        if self.responses.send(message).await.is_err() {
            trace!(target: "ferrolite::blip", "response dropped: connection closed");
        }
    }

    /// Sends everything queued, then closes the connection with `code`; returns when the
    /// peer answered the close (or after a timeout), or at once when already closed.
    pub(crate) async fn close(&self, code: u16, reason: &str) {
        let (tx, rx) = oneshot::channel();
        let sent = self
            .commands
            .send(Command::Close {
                code,
                reason: reason.to_owned(),
                done: tx,
            })
            .await;
        if sent.is_ok() {
            let _ = rx.await;
        }
    }
}

/// How a connection ended.
#[derive(Debug)]
pub(crate) enum DriverEnd {
    /// A clean close: who started it, and the close code and reason.
    Closed {
        /// We closed it (through [`Blip::close`] or after a protocol error).
        by_us: bool,
        /// The close code and reason.
        info: CloseInfo,
    },
    /// The connection failed.
    Failed(ReplicatorError),
}

/// A running connection: the handle, the peer's requests, and the driver task.
pub(crate) struct Driven {
    pub(crate) blip: Blip,
    pub(crate) requests: mpsc::Receiver<Message>,
    pub(crate) task: JoinHandle<DriverEnd>,
}

/// Starts driving `connection`. `role` names it in logs.
pub(crate) fn spawn(connection: Connection, role: &'static str) -> Driven {
    let (sender, receiver) = connection.split();
    let (frames_tx, frames_rx) = mpsc::channel(32);
    let (writer_tx, writer_rx) = mpsc::channel(8);
    let (commands_tx, commands_rx) = mpsc::channel(16);
    let (responses_tx, responses_rx) = mpsc::channel(64);
    let (requests_tx, requests_rx) = mpsc::channel(16);
    let write_error = Arc::new(Mutex::new(None));
    let reader = tokio::spawn(read_loop(receiver, frames_tx));
    let writer = tokio::spawn(write_loop(sender, writer_rx, write_error.clone()));
    let core = Core {
        role,
        blip: blip::Connection::default(),
        pending: HashMap::new(),
        inbox: VecDeque::new(),
        queued: 0,
        write_error,
    };
    let task = tokio::spawn(async move {
        let end = core
            .run(frames_rx, writer_tx, commands_rx, responses_rx, requests_tx)
            .await;
        reader.abort();
        if tokio::time::timeout(Duration::from_secs(1), writer)
            .await
            .is_err()
        {
            debug!(target: "ferrolite::network", role, "writer did not finish in time");
        }
        match &end {
            DriverEnd::Closed { by_us, info } => {
                debug!(target: "ferrolite::network", role, by_us, code = info.code, reason = %info.reason, "connection closed");
            }
            DriverEnd::Failed(err) => {
                debug!(target: "ferrolite::network", role, error = %err, "connection failed");
            }
        }
        end
    });
    Driven {
        blip: Blip {
            commands: commands_tx,
            responses: responses_tx,
        },
        requests: requests_rx,
        task,
    }
}

/// What the reader forwards.
enum ReadEvent {
    Frame(Bytes),
    Closed(CloseInfo),
    Failed(TransportError),
}

async fn read_loop(mut receiver: Box<dyn MessageReceiver>, out: mpsc::Sender<ReadEvent>) {
    loop {
        let event = match receiver.receive().await {
            Ok(Some(Incoming::Message(bytes))) => ReadEvent::Frame(bytes),
            Ok(Some(Incoming::Closed(info))) => ReadEvent::Closed(info),
            Ok(None) => ReadEvent::Closed(CloseInfo::new(close_code::NORMAL, "")),
            Err(err) => ReadEvent::Failed(err),
        };
        let last = !matches!(event, ReadEvent::Frame(_));
        if out.send(event).await.is_err() || last {
            return;
        }
    }
}

/// What the writer is asked to do.
enum WriteCommand {
    Frame(Vec<u8>),
    Close(u16, String),
}

async fn write_loop(
    mut sender: Box<dyn MessageSender>,
    mut commands: mpsc::Receiver<WriteCommand>,
    error: Arc<Mutex<Option<TransportError>>>,
) {
    while let Some(command) = commands.recv().await {
        let result = match command {
            WriteCommand::Frame(frame) => sender.send(Bytes::from(frame)).await,
            WriteCommand::Close(code, reason) => {
                let result = sender.close(code, &reason).await;
                if let Err(err) = result {
                    debug!(target: "ferrolite::network", error = %err, "close failed");
                }
                return;
            }
        };
        if let Err(err) = result {
            *error.lock().unwrap_or_else(PoisonError::into_inner) = Some(err);
            return;
        }
    }
}

/// The state of the core task.
struct Core {
    role: &'static str,
    blip: blip::Connection,
    /// Our requests awaiting a response.
    pending: HashMap<u64, ReplyTx>,
    /// The peer's requests not yet taken by the handler.
    inbox: VecDeque<Message>,
    /// Messages queued into `blip` (requests and responses), to size its outbox.
    queued: u64,
    write_error: Arc<Mutex<Option<TransportError>>>,
}

/// Where a close stands.
struct Closing {
    code: u16,
    reason: String,
    /// Callers of [`Blip::close`] to tell when done.
    waiters: Vec<oneshot::Sender<()>>,
    /// The close went to the writer.
    sent: bool,
    /// When we stop waiting for the peer's answer.
    deadline: Option<tokio::time::Instant>,
}

impl Core {
    fn outbox_len(&self) -> u64 {
        self.queued.saturating_sub(self.blip.stats().messages_sent)
    }

    fn write_failure(&self) -> ReplicatorError {
        match self
            .write_error
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take()
        {
            Some(err) => err.into(),
            None => ReplicatorError::connection_closed(),
        }
    }

    async fn run(
        mut self,
        mut frames: mpsc::Receiver<ReadEvent>,
        writer: mpsc::Sender<WriteCommand>,
        mut commands: mpsc::Receiver<Command>,
        mut responses: mpsc::Receiver<Message>,
        handler: mpsc::Sender<Message>,
    ) -> DriverEnd {
        let role = self.role;
        let mut closing: Option<Closing> = None;
        let mut commands_open = true;
        let mut responses_open = true;
        let mut handler_open = true;
        let end = loop {
            // A requested close goes out once everything queued before it was written.
            if let Some(close) = closing.as_mut() {
                if !close.sent && !self.blip.wants_to_send() {
                    close.sent = true;
                    close.deadline = Some(tokio::time::Instant::now() + CLOSE_TIMEOUT);
                    if writer
                        .send(WriteCommand::Close(close.code, close.reason.clone()))
                        .await
                        .is_err()
                    {
                        break DriverEnd::Closed {
                            by_us: true,
                            info: CloseInfo::new(close.code, close.reason.clone()),
                        };
                    }
                }
            }
            let close_deadline = closing
                .as_ref()
                .and_then(|c| c.deadline)
                .unwrap_or_else(|| tokio::time::Instant::now() + Duration::from_secs(3600));
            let can_write = self.blip.wants_to_send() && closing.as_ref().is_none_or(|c| !c.sent);
            let accept_commands =
                commands_open && (closing.is_some() || self.outbox_len() < MAX_OUTBOX);
            tokio::select! {
                permit = writer.reserve(), if can_write => {
                    let Ok(permit) = permit else {
                        break DriverEnd::Failed(self.write_failure());
                    };
                    if let Some(frame) = self.blip.next_frame() {
                        permit.send(WriteCommand::Frame(frame));
                    }
                }
                event = frames.recv(), if self.inbox.len() < MAX_INBOX => {
                    match event {
                        Some(ReadEvent::Frame(frame)) => {
                            if let Err(err) = self.receive(&frame) {
                                warn!(target: "ferrolite::blip", role, error = %err, "BLIP protocol error: closing");
                                let code = err.close_code();
                                let _ = tokio::time::timeout(
                                    CLOSE_TIMEOUT,
                                    writer.send(WriteCommand::Close(code, err.to_string())),
                                )
                                .await;
                                break DriverEnd::Failed(err.into());
                            }
                        }
                        Some(ReadEvent::Closed(info)) => {
                            let by_us = closing.as_ref().is_some_and(|c| c.sent);
                            if !by_us {
                                // Echo the peer's close (a WebSocket does it by itself; a
                                // pipe needs it).
                                let code = if info.code == close_code::NO_STATUS { close_code::NORMAL } else { info.code };
                                let _ = writer.try_send(WriteCommand::Close(code, String::new()));
                            }
                            break DriverEnd::Closed { by_us, info };
                        }
                        Some(ReadEvent::Failed(err)) => {
                            if let Some(close) = closing.as_ref().filter(|c| c.sent) {
                                // The peer vanished after our close: that is a close.
                                break DriverEnd::Closed {
                                    by_us: true,
                                    info: CloseInfo::new(close.code, close.reason.clone()),
                                };
                            }
                            break DriverEnd::Failed(err.into());
                        }
                        None => break DriverEnd::Failed(ReplicatorError::connection_closed()),
                    }
                }
                permit = handler.reserve(), if handler_open && !self.inbox.is_empty() => {
                    match permit {
                        Ok(permit) => {
                            if let Some(message) = self.inbox.pop_front() {
                                permit.send(message);
                            }
                        }
                        Err(_) => {
                            handler_open = false;
                            self.inbox.clear();
                        }
                    }
                }
                response = responses.recv(), if responses_open => {
                    match response {
                        Some(message) => self.send(message, None),
                        None => responses_open = false,
                    }
                }
                command = commands.recv(), if accept_commands => {
                    match command {
                        Some(Command::Request { message, reply }) => {
                            if closing.is_some() {
                                // While closing, requests fail at once.
                                if let Some(reply) = reply {
                                    let _ = reply.send(Err(ReplicatorError::connection_closed()));
                                }
                            } else {
                                self.send(message, reply);
                            }
                        }
                        Some(Command::Close { code, reason, done }) => match closing.as_mut() {
                            Some(close) => close.waiters.push(done),
                            None => {
                                debug!(target: "ferrolite::network", role, code, "closing");
                                closing = Some(Closing { code, reason, waiters: vec![done], sent: false, deadline: None });
                            }
                        },
                        None => commands_open = false,
                    }
                }
                _ = tokio::time::sleep_until(close_deadline), if closing.as_ref().is_some_and(|c| c.deadline.is_some()) => {
                    let info = closing
                        .as_ref()
                        .map(|c| CloseInfo::new(c.code, c.reason.clone()))
                        .unwrap_or_else(|| CloseInfo::new(close_code::NORMAL, ""));
                    break DriverEnd::Closed { by_us: true, info };
                }
            }
        };
        for (_, reply) in self.pending.drain() {
            let _ = reply.send(Err(ReplicatorError::connection_closed()));
        }
        if let Some(close) = closing {
            for waiter in close.waiters {
                let _ = waiter.send(());
            }
        }
        end
    }

    /// Queues a message into BLIP; a request expecting a reply is remembered.
    fn send(&mut self, message: Message, reply: Option<ReplyTx>) {
        let kind = message.kind;
        let profile = message.profile().map(str::to_owned);
        match self.blip.send(message) {
            Ok(number) => {
                self.queued += 1;
                trace!(target: "ferrolite::blip", role = self.role, ?kind, number, profile = profile.as_deref().unwrap_or(""), "send");
                if let Some(reply) = reply {
                    if kind == MessageType::Request {
                        self.pending.insert(number, reply);
                    }
                }
            }
            Err(err) => {
                warn!(target: "ferrolite::blip", role = self.role, error = %err, "message refused");
                if let Some(reply) = reply {
                    let _ = reply.send(Err(ReplicatorError::protocol(err.to_string())));
                }
            }
        }
    }

    /// Feeds one frame to BLIP and routes a completed message.
    fn receive(&mut self, frame: &[u8]) -> Result<(), blip::BlipError> {
        let Some(message) = self.blip.receive(frame)? else {
            return Ok(());
        };
        trace!(target: "ferrolite::blip", role = self.role, kind = ?message.kind, number = message.number, profile = message.profile().unwrap_or(""), "received");
        match message.kind {
            MessageType::Request => self.inbox.push_back(message),
            MessageType::Response | MessageType::Error => {
                if let Some(reply) = self.pending.remove(&message.number) {
                    let _ = reply.send(Ok(message));
                }
            }
        }
        Ok(())
    }
}

/// Decodes a reply with a typed decoder; error replies become [`ReplicatorError::Remote`].
pub(crate) fn decode_reply<T>(
    reply: &Message,
    decode: impl FnOnce(&Message) -> Result<T, ferrolite_protocol::messages::MessageError>,
) -> Result<T, ReplicatorError> {
    decode(reply).map_err(ReplicatorError::from)
}
