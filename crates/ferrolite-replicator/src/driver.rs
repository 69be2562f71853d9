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
//! three gates: new outgoing requests are accepted only while few messages wait in the BLIP
//! outbox; frames are read only while few received requests wait for the handler (so
//! a slow handler slows the peer down through the transport); and frames are read and
//! requests handed to the handler only while our replies to the peer do not pile up unsent
//! (so a peer that sends requests without reading the replies stalls itself instead of
//! filling our memory). Responses are always accepted, so a handler answering a request
//! never waits on the peer.

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
/// A connection that sent nothing for this long frees its compressor (a few hundred KiB;
/// most continuous replications are idle most of the time).
const COMPRESSOR_IDLE: Duration = Duration::from_secs(2);
/// Parts of streamed replies waiting for their consumers before the core stops reading.
const MAX_PARTS_WAITING: usize = 8;
/// A streamed message's producer may append its next chunk once fewer bytes than this wait
/// unsent in the codec.
const STREAM_LOW_WATER: usize = 64 * 1024;
/// Replies to the peer queued and not yet sent beyond which the core stops reading the
/// peer's frames and handing its requests to the handler, until the peer reads: a peer
/// that sends requests without reading the replies cannot make us hold them all. A
/// well-behaved peer never has that many requests unanswered (a few hundred at most).
const MAX_UNSENT_REPLIES: usize = 1024;
/// The same limit in bytes: replies are small, except checkpoints and streamed blobs
/// (whose unsent part stays under two chunks).
const MAX_UNSENT_REPLY_BYTES: usize = 16 << 20;

type ReplyTx = oneshot::Sender<Result<Message, ReplicatorError>>;

/// A command for the core.
enum Command {
    /// Send a request; deliver its response to `reply` (none for NoReply requests).
    Request {
        message: Message,
        reply: Option<ReplyTx>,
    },
    /// Send a request whose response is delivered in parts to `parts` (see
    /// [`Blip::request_streamed`]).
    StreamedRequest {
        message: Message,
        parts: mpsc::Sender<ReplyPart>,
    },
    /// Close the connection once everything queued is sent.
    Close {
        code: u16,
        reason: String,
        done: oneshot::Sender<()>,
    },
}

/// A piece of a streamed reply (see [`Blip::request_streamed`]): the head (the response
/// with its properties and no body, or the whole error reply), body bytes, then the end.
/// A channel closed before `End` means the connection was lost.
#[derive(Debug)]
pub(crate) enum ReplyPart {
    Head(Message),
    Data(Bytes),
    End,
}

/// What streams a message's body into the codec (see [`Blip::respond_streaming`]).
enum StreamCommand {
    /// Queue the head of a streamed message.
    Start(Message),
    /// Append to its body; `credit` fires once the codec is ready for the next chunk.
    Chunk {
        kind: MessageType,
        number: u64,
        data: Bytes,
        last: bool,
        credit: oneshot::Sender<()>,
    },
}

/// Writes the body of a streamed response chunk by chunk (see [`Blip::respond_streaming`]).
pub(crate) struct BodyWriter {
    streams: mpsc::Sender<StreamCommand>,
    kind: MessageType,
    number: u64,
}

impl BodyWriter {
    /// Appends `data` (ending the body with `last`); returns once the codec is ready for
    /// the next chunk, so at most about two chunks are ever buffered.
    pub(crate) async fn write(&mut self, data: Bytes, last: bool) -> Result<(), ReplicatorError> {
        let (credit, ready) = oneshot::channel();
        self.streams
            .send(StreamCommand::Chunk {
                kind: self.kind,
                number: self.number,
                data,
                last,
                credit,
            })
            .await
            .map_err(|_| ReplicatorError::connection_closed())?;
        ready
            .await
            .map_err(|_| ReplicatorError::connection_closed())
    }
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

    /// The reply if it already arrived (or the connection is gone), without waiting.
    pub(crate) fn try_take(&mut self) -> Option<Result<Message, ReplicatorError>> {
        match self.0.try_recv() {
            Ok(reply) => Some(reply),
            Err(oneshot::error::TryRecvError::Empty) => None,
            Err(oneshot::error::TryRecvError::Closed) => {
                Some(Err(ReplicatorError::connection_closed()))
            }
        }
    }
}

/// The handle through which the rest of the replicator talks over a connection. Cheap to
/// clone; every clone talks to the same core.
#[derive(Clone)]
pub(crate) struct Blip {
    commands: mpsc::Sender<Command>,
    responses: mpsc::Sender<Message>,
    streams: mpsc::Sender<StreamCommand>,
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

    /// Sends a request whose response is delivered in parts as its frames arrive, instead
    /// of being assembled in memory: what a large `getAttachment` reply needs. The
    /// receiver gets [`ReplyPart::Head`], then body [`ReplyPart::Data`], then
    /// [`ReplyPart::End`]; an error reply comes whole as the head, then `End`. A slow
    /// consumer slows the connection down (the core stops reading while a few parts wait).
    pub(crate) async fn request_streamed(
        &self,
        message: Message,
    ) -> Result<mpsc::Receiver<ReplyPart>, ReplicatorError> {
        let (tx, rx) = mpsc::channel(MAX_PARTS_WAITING);
        let mut message = message;
        message.no_reply = false;
        self.commands
            .send(Command::StreamedRequest { message, parts: tx })
            .await
            .map_err(|_| ReplicatorError::connection_closed())?;
        Ok(rx)
    }

    /// Queues the head of a response whose body follows through the returned writer, chunk
    /// by chunk (a blob streamed from disk). Harmless once closed (writes then fail).
    pub(crate) async fn respond_streaming(
        &self,
        head: Message,
    ) -> Result<BodyWriter, ReplicatorError> {
        let kind = head.kind;
        let number = head.number;
        self.streams
            .send(StreamCommand::Start(head))
            .await
            .map_err(|_| ReplicatorError::connection_closed())?;
        Ok(BodyWriter {
            streams: self.streams.clone(),
            kind,
            number,
        })
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
    let (streams_tx, streams_rx) = mpsc::channel(16);
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
        streams: HashMap::new(),
        parts_out: VecDeque::new(),
        credits: Vec::new(),
    };
    let task = tokio::spawn(async move {
        let end = core
            .run(
                frames_rx,
                writer_tx,
                commands_rx,
                (responses_rx, streams_rx),
                requests_tx,
            )
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
            streams: streams_tx,
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
    /// Our requests whose response is streamed: where its parts go.
    streams: HashMap<u64, mpsc::Sender<ReplyPart>>,
    /// Parts of streamed responses waiting for their consumer.
    parts_out: VecDeque<(mpsc::Sender<ReplyPart>, ReplyPart)>,
    /// Producers of streamed bodies waiting until the codec is ready for more.
    credits: Vec<(MessageType, u64, oneshot::Sender<()>)>,
}

/// Waits for room in the channel of the first waiting reply part (never, when none waits).
async fn reserve_front(
    front: &Option<mpsc::Sender<ReplyPart>>,
) -> Result<mpsc::Permit<'_, ReplyPart>, mpsc::error::SendError<()>> {
    match front {
        Some(tx) => tx.reserve().await,
        None => std::future::pending().await,
    }
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

    /// Whether our replies to the peer pile up unsent (it does not read them): then the
    /// peer's requests wait, in its socket.
    fn replies_backlogged(&self) -> bool {
        let (count, bytes) = self.blip.unsent_responses();
        count >= MAX_UNSENT_REPLIES || bytes >= MAX_UNSENT_REPLY_BYTES
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
        (mut responses, mut streams): (mpsc::Receiver<Message>, mpsc::Receiver<StreamCommand>),
        handler: mpsc::Sender<Message>,
    ) -> DriverEnd {
        let role = self.role;
        let mut closing: Option<Closing> = None;
        let mut commands_open = true;
        let mut responses_open = true;
        let mut streams_open = true;
        let mut handler_open = true;
        let mut last_sent = tokio::time::Instant::now();
        let end = loop {
            self.release_credits();
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
            let backlogged = self.replies_backlogged();
            let can_read = self.inbox.len() < MAX_INBOX
                && self.parts_out.len() < MAX_PARTS_WAITING
                && !backlogged;
            let front = self.parts_out.front().map(|(tx, _)| tx.clone());
            tokio::select! {
                permit = writer.reserve(), if can_write => {
                    let Ok(permit) = permit else {
                        break DriverEnd::Failed(self.write_failure());
                    };
                    if let Some(frame) = self.blip.next_frame() {
                        permit.send(WriteCommand::Frame(frame));
                        last_sent = tokio::time::Instant::now();
                    }
                }
                _ = tokio::time::sleep_until(last_sent + COMPRESSOR_IDLE), if !can_write && self.blip.holds_compressor() => {
                    self.blip.release_compressor();
                }
                event = frames.recv(), if can_read => {
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
                            if let TransportError::MessageTooBig { .. } | TransportError::Protocol(_) = err {
                                // The peer broke the WebSocket rules (a message over the
                                // limit, a malformed frame): tell it why, with 1009 or 1002,
                                // instead of just dropping the connection.
                                if let Some(code) = err.close_code() {
                                    warn!(target: "ferrolite::network", role, error = %err, "closing");
                                    let _ = tokio::time::timeout(
                                        CLOSE_TIMEOUT,
                                        writer.send(WriteCommand::Close(code, err.to_string())),
                                    )
                                    .await;
                                }
                            }
                            break DriverEnd::Failed(err.into());
                        }
                        None => break DriverEnd::Failed(ReplicatorError::connection_closed()),
                    }
                }
                permit = handler.reserve(), if handler_open && !self.inbox.is_empty() && !backlogged => {
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
                permit = reserve_front(&front), if front.is_some() => {
                    match permit {
                        Ok(permit) => {
                            if let Some((_, part)) = self.parts_out.pop_front() {
                                permit.send(part);
                            }
                        }
                        // The consumer is gone: drop what was meant for it.
                        Err(_) => {
                            if let Some((gone, _)) = self.parts_out.pop_front() {
                                self.parts_out.retain(|(tx, _)| !tx.same_channel(&gone));
                                self.streams.retain(|_, tx| !tx.same_channel(&gone));
                            }
                        }
                    }
                }
                stream = streams.recv(), if streams_open => {
                    match stream {
                        Some(command) => self.stream(command),
                        None => streams_open = false,
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
                        Some(Command::StreamedRequest { message, parts }) => {
                            // While closing, dropping `parts` tells the caller at once.
                            if closing.is_none() {
                                self.send_streamed(message, parts);
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

    /// Queues a request whose response streams to `parts`.
    fn send_streamed(&mut self, message: Message, parts: mpsc::Sender<ReplyPart>) {
        let profile = message.profile().map(str::to_owned);
        match self.blip.send(message) {
            Ok(number) => {
                self.queued += 1;
                trace!(target: "ferrolite::blip", role = self.role, number, profile = profile.as_deref().unwrap_or(""), "send (streamed reply)");
                self.blip.stream_response(number);
                self.streams.insert(number, parts);
            }
            Err(err) => {
                warn!(target: "ferrolite::blip", role = self.role, error = %err, "message refused");
            }
        }
    }

    /// Starts or extends a streamed message.
    fn stream(&mut self, command: StreamCommand) {
        match command {
            StreamCommand::Start(message) => match self.blip.send_streaming(message) {
                Ok(number) => {
                    self.queued += 1;
                    trace!(target: "ferrolite::blip", role = self.role, number, "send (streamed body)");
                }
                Err(err) => {
                    warn!(target: "ferrolite::blip", role = self.role, error = %err, "message refused");
                }
            },
            StreamCommand::Chunk {
                kind,
                number,
                data,
                last,
                credit,
            } => {
                // Refused (unknown or ended message): dropping `credit` fails the writer.
                if self.blip.extend_body(kind, number, data, last).is_ok() {
                    self.credits.push((kind, number, credit));
                }
            }
        }
    }

    /// Tells streamed-body producers whose message runs low that they may append more.
    fn release_credits(&mut self) {
        let mut i = 0;
        while i < self.credits.len() {
            let (kind, number, _) = &self.credits[i];
            let low = self
                .blip
                .unsent_len(*kind, *number)
                .is_none_or(|n| n < STREAM_LOW_WATER);
            if low {
                let (_, _, credit) = self.credits.swap_remove(i);
                let _ = credit.send(());
            } else {
                i += 1;
            }
        }
    }

    /// Feeds one frame to BLIP and routes a completed message or streamed parts.
    fn receive(&mut self, frame: &[u8]) -> Result<(), blip::BlipError> {
        let received = self.blip.receive(frame)?;
        while let Some(part) = self.blip.next_response_part() {
            let Some(tx) = self.streams.get(&part.number) else {
                continue;
            };
            let tx = tx.clone();
            if let Some(properties) = part.properties {
                let head = Message {
                    kind: MessageType::Response,
                    number: part.number,
                    urgent: false,
                    compressed: false,
                    no_reply: false,
                    properties,
                    body: Bytes::new(),
                };
                self.parts_out
                    .push_back((tx.clone(), ReplyPart::Head(head)));
            }
            if !part.body.is_empty() {
                self.parts_out
                    .push_back((tx.clone(), ReplyPart::Data(part.body)));
            }
            if part.last {
                self.streams.remove(&part.number);
                self.parts_out.push_back((tx, ReplyPart::End));
            }
        }
        let Some(message) = received else {
            return Ok(());
        };
        trace!(target: "ferrolite::blip", role = self.role, kind = ?message.kind, number = message.number, profile = message.profile().unwrap_or(""), "received");
        match message.kind {
            MessageType::Request => self.inbox.push_back(message),
            MessageType::Response | MessageType::Error => {
                if let Some(reply) = self.pending.remove(&message.number) {
                    let _ = reply.send(Ok(message));
                } else if let Some(tx) = self.streams.remove(&message.number) {
                    // An error reply to a streamed request: whole, then the end.
                    self.parts_out
                        .push_back((tx.clone(), ReplyPart::Head(message)));
                    self.parts_out.push_back((tx, ReplyPart::End));
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
