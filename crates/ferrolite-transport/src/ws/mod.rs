//! WebSocket connections (tokio-tungstenite) behind the [`Connection`] interface.
//!
//! An upgraded socket is split in two. A reader task reads frames continuously, so
//! tungstenite answers pings and close frames even while the application is busy, and
//! hands whole messages to the receiver through a small bounded channel: when the
//! application stops reading, the channel fills, the reader stops reading the socket and
//! TCP flow control slows the peer down. The sender writes through the sink half and
//! returns once the frame was flushed to the socket. A control task sends heartbeat
//! pings and, for listener connections, the close frame at shutdown.
//!
//! The same machinery ([`into_connection`]) serves three kinds of WebSocket: the
//! client's and the listener's upgraded sockets, and byte-stream message endpoints
//! (`crate::byte_stream`), which frame a raw byte stream as a WebSocket client or server
//! without an HTTP upgrade.

pub(crate) mod client;
pub(crate) mod listener;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex as StdMutex, Weak};
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use futures_util::stream::{SplitSink, SplitStream};
use futures_util::{SinkExt, StreamExt};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::{mpsc, oneshot, watch, Mutex, Notify};
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::error::{CapacityError, ProtocolError};
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::{CloseFrame, WebSocketConfig};
use tokio_tungstenite::tungstenite::{Error as WsError, Message};
use tokio_tungstenite::WebSocketStream;

use crate::connection::{
    check_close_code, closed_error, truncate_reason, CloseInfo, Connection, Incoming,
    MessageReceiver, MessageSender,
};
use crate::error::{close_code, TransportError};

/// Default heartbeat (WebSocket ping) interval of the client: 300 s, as Couchbase Lite.
pub const DEFAULT_HEARTBEAT: Duration = Duration::from_secs(300);

/// Default number of received messages buffered ahead of the application.
pub(crate) const DEFAULT_INCOMING_CAPACITY: usize = 8;

/// How long the reader waits for the end of the stream after a close frame.
const CLOSE_LINGER: Duration = Duration::from_secs(5);

/// Per-connection settings of the WebSocket machinery.
#[derive(Debug, Clone)]
pub(crate) struct WsOptions {
    pub(crate) heartbeat: Option<Duration>,
    pub(crate) pong_timeout: Option<Duration>,
    pub(crate) max_message_size: usize,
    pub(crate) incoming_capacity: usize,
}

impl WsOptions {
    pub(crate) fn tungstenite_config(&self) -> WebSocketConfig {
        WebSocketConfig::default()
            .max_message_size(Some(self.max_message_size))
            .max_frame_size(Some(self.max_message_size))
    }

    /// LiteCore waits `min(20 s, heartbeat − 1 s)` for the pong; with intervals of a
    /// second or less (tests) the interval itself.
    fn pong_deadline(&self, interval: Duration) -> Duration {
        self.pong_timeout.unwrap_or_else(|| {
            let litecore =
                Duration::from_secs(20).min(interval.saturating_sub(Duration::from_secs(1)));
            if litecore.is_zero() {
                interval
            } else {
                litecore
            }
        })
    }
}

type Sink<S> = SplitSink<WebSocketStream<S>, Message>;

/// State shared by the halves and tasks of one connection.
struct Shared {
    /// Frames received so far (any kind): proof of life for the heartbeat.
    frames_received: AtomicU64,
    activity: Notify,
    /// The reader is waiting for the application to take a message; the peer cannot be
    /// blamed for silence meanwhile.
    paused: AtomicBool,
    /// Set when the heartbeat declared the peer dead.
    failed: watch::Sender<bool>,
    /// The close frame we sent, or the one the peer sent.
    close: StdMutex<Option<CloseInfo>>,
}

impl Shared {
    fn record_close(&self, info: CloseInfo) {
        if let Ok(mut guard) = self.close.lock() {
            if guard.is_none() {
                *guard = Some(info);
            }
        }
    }

    fn close_info(&self) -> Option<CloseInfo> {
        self.close.lock().ok().and_then(|guard| guard.clone())
    }
}

fn heartbeat_error() -> TransportError {
    TransportError::Timeout("the peer did not answer the heartbeat ping".into())
}

/// Wraps a WebSocket into a [`Connection`] and starts its tasks: one upgraded by the
/// client or the listener, or one framed directly over a byte stream (no upgrade).
pub(crate) fn into_connection<S>(
    ws: WebSocketStream<S>,
    subprotocol: Option<String>,
    options: &WsOptions,
    shutdown: Option<watch::Receiver<bool>>,
    on_shutdown_sent: Option<mpsc::Sender<()>>,
) -> Connection
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (sink, stream) = ws.split();
    let (failed, _) = watch::channel(false);
    let shared = Arc::new(Shared {
        frames_received: AtomicU64::new(0),
        activity: Notify::new(),
        paused: AtomicBool::new(false),
        failed,
        close: StdMutex::new(None),
    });
    let sink = Arc::new(Mutex::new(Some(sink)));
    let (tx, rx) = mpsc::channel(options.incoming_capacity.max(1));
    tokio::spawn(read_loop(stream, tx, shared.clone()));

    let (dropped_tx, dropped_rx) = oneshot::channel();
    let heartbeat = options
        .heartbeat
        .filter(|d| !d.is_zero())
        .map(|interval| (interval, options.pong_deadline(interval)));
    if heartbeat.is_some() || shutdown.is_some() {
        tokio::spawn(control_loop(
            Arc::downgrade(&sink),
            shared.clone(),
            heartbeat,
            shutdown,
            on_shutdown_sent,
            dropped_rx,
        ));
    }
    let sender = WsSender {
        sink,
        failed: shared.failed.subscribe(),
        shared,
        max_message_size: options.max_message_size,
        _dropped: dropped_tx,
    };
    let receiver = WsReceiver { rx, done: false };
    Connection::new(Box::new(sender), Box::new(receiver)).with_subprotocol(subprotocol)
}

/// Hands one item to the receiver, waiting while it is full. `false` when the receiver
/// is gone.
async fn deliver(
    tx: &mpsc::Sender<Result<Incoming, TransportError>>,
    shared: &Shared,
    item: Result<Incoming, TransportError>,
) -> bool {
    shared.paused.store(true, Ordering::SeqCst);
    let delivered = tx.send(item).await.is_ok();
    shared.paused.store(false, Ordering::SeqCst);
    delivered
}

async fn read_loop<S>(
    mut stream: SplitStream<WebSocketStream<S>>,
    tx: mpsc::Sender<Result<Incoming, TransportError>>,
    shared: Arc<Shared>,
) where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let mut failed = shared.failed.subscribe();
    let mut closed_at: Option<Instant> = None;
    loop {
        let linger = closed_at.map(|at| at + CLOSE_LINGER);
        let item = tokio::select! {
            biased;
            _ = wait_dead(&mut failed) => {
                let _ = deliver(&tx, &shared, Err(heartbeat_error())).await;
                return;
            }
            _ = tx.closed() => return,
            _ = sleep_until_opt(linger) => return,
            item = stream.next() => item,
        };
        shared.frames_received.fetch_add(1, Ordering::SeqCst);
        shared.activity.notify_one();
        if closed_at.is_some() {
            // After the close frame: keep reading only so tungstenite can finish the
            // close handshake; end at the end of the stream.
            match item {
                None | Some(Err(_)) => return,
                Some(Ok(_)) => continue,
            }
        }
        let delivered = match item {
            Some(Ok(Message::Binary(data))) => {
                deliver(&tx, &shared, Ok(Incoming::Message(data))).await
            }
            Some(Ok(Message::Text(text))) => {
                deliver(&tx, &shared, Ok(Incoming::Message(Bytes::from(text)))).await
            }
            Some(Ok(Message::Ping(_) | Message::Pong(_) | Message::Frame(_))) => true,
            Some(Ok(Message::Close(frame))) => {
                let info = frame.map_or_else(
                    || CloseInfo::new(close_code::NO_STATUS, ""),
                    |f| CloseInfo::new(u16::from(f.code), f.reason.as_str()),
                );
                shared.record_close(info.clone());
                closed_at = Some(Instant::now());
                deliver(&tx, &shared, Ok(Incoming::Closed(info))).await
            }
            Some(Err(err)) => {
                let _ = deliver(&tx, &shared, Err(map_ws_error(err, &shared))).await;
                return;
            }
            None => {
                let _ = deliver(
                    &tx,
                    &shared,
                    Err(TransportError::abnormal(
                        "the connection ended without a close frame",
                    )),
                )
                .await;
                return;
            }
        };
        if !delivered {
            return;
        }
    }
}

/// Resolves when the heartbeat declared the peer dead (never if the flag's owner is
/// gone without doing so).
async fn wait_dead(failed: &mut watch::Receiver<bool>) {
    if failed.wait_for(|dead| *dead).await.is_err() {
        std::future::pending::<()>().await;
    }
}

async fn sleep_until_opt(deadline: Option<Instant>) {
    match deadline {
        Some(deadline) => tokio::time::sleep_until(deadline).await,
        None => std::future::pending().await,
    }
}

/// Heartbeat pings and the shutdown close frame.
async fn control_loop<S>(
    sink: Weak<Mutex<Option<Sink<S>>>>,
    shared: Arc<Shared>,
    heartbeat: Option<(Duration, Duration)>,
    mut shutdown: Option<watch::Receiver<bool>>,
    on_shutdown_sent: Option<mpsc::Sender<()>>,
    mut dropped: oneshot::Receiver<()>,
) where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let mut next_ping = heartbeat.map(|(interval, _)| Instant::now() + interval);
    loop {
        let shutdown_signal = async {
            match shutdown.as_mut() {
                Some(rx) => {
                    if rx.wait_for(|stop| *stop).await.is_err() {
                        // The listener is gone without a shutdown: nothing to wait for.
                        std::future::pending::<()>().await;
                    }
                }
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            _ = &mut dropped => return,
            _ = shutdown_signal => {
                if let Some(sink) = sink.upgrade() {
                    let close = async {
                        let mut guard = sink.lock().await;
                        if let Some(sink) = guard.as_mut() {
                            let frame = CloseFrame {
                                code: CloseCode::Away,
                                reason: "going away".into(),
                            };
                            shared.record_close(CloseInfo::new(close_code::GOING_AWAY, "going away"));
                            let _ = sink.send(Message::Close(Some(frame))).await;
                        }
                    };
                    let _ = tokio::time::timeout(Duration::from_secs(2), close).await;
                }
                drop(on_shutdown_sent);
                return;
            }
            _ = sleep_until_opt(next_ping) => {
                let Some((interval, pong_deadline)) = heartbeat else { return };
                let Some(strong) = sink.upgrade() else { return };
                let alive = tokio::select! {
                    alive = ping_once(&strong, &shared, pong_deadline) => alive,
                    // The application dropped the connection: let the socket go now.
                    _ = &mut dropped => return,
                };
                if !alive {
                    tracing::debug!(target: "ferrolite::network", "heartbeat: no answer within {pong_deadline:?}");
                    shared.failed.send_replace(true);
                    // Drop our half of the socket if no send holds it; a blocked send
                    // notices the failure and drops it itself.
                    if let Ok(mut guard) = strong.try_lock() {
                        guard.take();
                    }
                    return;
                }
                next_ping = Some(Instant::now() + interval);
            }
        }
    }
}

/// Sends a ping and waits for any frame from the peer. `false` if the peer stayed silent
/// (and the reader was not paused by our own application) until the deadline.
async fn ping_once<S>(sink: &Mutex<Option<Sink<S>>>, shared: &Shared, deadline: Duration) -> bool
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let deadline = Instant::now() + deadline;
    let mark = shared.frames_received.load(Ordering::SeqCst);
    let ping = async {
        let mut guard = sink.lock().await;
        match guard.as_mut() {
            Some(sink) => sink.send(Message::Ping(Bytes::new())).await.is_ok(),
            None => false,
        }
    };
    if let Ok(false) = tokio::time::timeout_at(deadline, ping).await {
        // The socket failed or was closed: the reader reports why; stop pinging.
        return true;
    }
    loop {
        if shared.frames_received.load(Ordering::SeqCst) != mark {
            return true;
        }
        if Instant::now() >= deadline {
            return shared.paused.load(Ordering::SeqCst);
        }
        let _ = tokio::time::timeout_at(deadline, shared.activity.notified()).await;
    }
}

struct WsSender<S> {
    sink: Arc<Mutex<Option<Sink<S>>>>,
    shared: Arc<Shared>,
    failed: watch::Receiver<bool>,
    max_message_size: usize,
    /// Dropped with the sender: tells the control task to stop.
    _dropped: oneshot::Sender<()>,
}

impl<S> WsSender<S>
where
    S: AsyncRead + AsyncWrite + Unpin + Send,
{
    async fn send_message(&mut self, message: Message) -> Result<(), TransportError> {
        if *self.failed.borrow() {
            return Err(heartbeat_error());
        }
        let mut guard = self.sink.lock().await;
        let outcome = match guard.as_mut() {
            None => None,
            Some(sink) => {
                let failed = &mut self.failed;
                Some(tokio::select! {
                    result = sink.send(message) => Ok(result),
                    _ = wait_dead(failed) => Err(()),
                })
            }
        };
        match outcome {
            None => Err(self.closed_error()),
            Some(Ok(result)) => result.map_err(|err| map_ws_error(err, &self.shared)),
            Some(Err(())) => {
                // The heartbeat declared the peer dead: let go of the socket.
                guard.take();
                Err(heartbeat_error())
            }
        }
    }

    fn closed_error(&self) -> TransportError {
        if *self.failed.borrow() {
            return heartbeat_error();
        }
        closed_error(self.shared.close_info().as_ref())
    }
}

#[async_trait]
impl<S> MessageSender for WsSender<S>
where
    S: AsyncRead + AsyncWrite + Unpin + Send,
{
    async fn send(&mut self, message: Bytes) -> Result<(), TransportError> {
        if message.len() > self.max_message_size {
            return Err(TransportError::MessageTooBig {
                size: message.len(),
                max: self.max_message_size,
            });
        }
        if let Some(info) = self.shared.close_info() {
            return Err(closed_error(Some(&info)));
        }
        self.send_message(Message::Binary(message)).await
    }

    async fn close(&mut self, code: u16, reason: &str) -> Result<(), TransportError> {
        check_close_code(code)?;
        if self.shared.close_info().is_some() {
            return Ok(());
        }
        let reason = truncate_reason(reason);
        self.shared.record_close(CloseInfo::new(code, reason));
        let frame = CloseFrame {
            code: CloseCode::from(code),
            reason: reason.into(),
        };
        match self.send_message(Message::Close(Some(frame))).await {
            Ok(()) => Ok(()),
            // The peer closed first or the close handshake already finished.
            Err(TransportError::Closed { code: c, .. }) if c != close_code::ABNORMAL => Ok(()),
            Err(err) => Err(err),
        }
    }
}

struct WsReceiver {
    rx: mpsc::Receiver<Result<Incoming, TransportError>>,
    done: bool,
}

#[async_trait]
impl MessageReceiver for WsReceiver {
    async fn receive(&mut self) -> Result<Option<Incoming>, TransportError> {
        if self.done {
            return Ok(None);
        }
        match self.rx.recv().await {
            Some(Ok(Incoming::Message(message))) => Ok(Some(Incoming::Message(message))),
            Some(other) => {
                self.done = true;
                other.map(Some)
            }
            None => {
                // The reader always delivers a close or an error before it ends; this
                // only happens if it died.
                self.done = true;
                Err(TransportError::abnormal("the connection's reader stopped"))
            }
        }
    }
}

/// Maps a tungstenite error on an open connection.
fn map_ws_error(err: WsError, shared: &Shared) -> TransportError {
    match err {
        WsError::ConnectionClosed | WsError::AlreadyClosed => {
            closed_error(shared.close_info().as_ref())
        }
        WsError::Protocol(ProtocolError::SendAfterClosing) => {
            closed_error(shared.close_info().as_ref())
        }
        other => map_error(other),
    }
}

/// Maps a tungstenite error (handshake or connection) to a transport error.
pub(crate) fn map_error(err: WsError) -> TransportError {
    match err {
        WsError::Io(io) => TransportError::io("WebSocket I/O", io),
        WsError::ConnectionClosed | WsError::AlreadyClosed => TransportError::Closed {
            code: close_code::NORMAL,
            reason: "connection closed".into(),
        },
        WsError::Protocol(ProtocolError::ResetWithoutClosingHandshake) => {
            TransportError::abnormal("the connection was reset without a close handshake")
        }
        WsError::Protocol(ProtocolError::HandshakeIncomplete) => {
            TransportError::abnormal("the connection ended during the WebSocket handshake")
        }
        WsError::Protocol(p) => TransportError::Protocol(p.to_string()),
        WsError::Capacity(CapacityError::MessageTooLong { size, max_size }) => {
            TransportError::MessageTooBig {
                size,
                max: max_size,
            }
        }
        WsError::Capacity(c) => TransportError::Protocol(c.to_string()),
        WsError::Utf8(m) => TransportError::Protocol(format!("invalid UTF-8: {m}")),
        WsError::Url(u) => TransportError::InvalidUrl {
            url: String::new(),
            reason: u.to_string(),
        },
        WsError::HttpFormat(h) => TransportError::InvalidConfig(h.to_string()),
        WsError::Http(response) => {
            let status = response.status().as_u16();
            TransportError::HttpStatus {
                status,
                reason: response
                    .status()
                    .canonical_reason()
                    .unwrap_or("HTTP error")
                    .to_owned(),
            }
        }
        other => TransportError::Protocol(other.to_string()),
    }
}
