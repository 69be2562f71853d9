//! A fault-injecting transport: wraps any [`Transport`] and, on a chosen connection attempt
//! and message count (sent or received, counted in transport messages, i.e. BLIP frames),
//! injects one [`Fault`]. Connection attempts can also be refused with a chosen error.
//!
//! | fault | the chosen message | our side sees | the peer sees |
//! |---|---|---|---|
//! | `Drop` | lost | `Closed 1006` (transient) | abnormal close 1006 (over TCP, ECONNRESET when unread data was discarded) |
//! | `Delay(d)` | delivered `d` late | nothing else | nothing else |
//! | `Reset` | lost | `Io ECONNRESET` (transient) | abnormal close 1006 |
//! | `Cut` | its first half delivered as a message, then the connection drops | a truncated frame (received) or `Closed 1006` (sent) | a truncated frame (sent) or 1006 |
//!
//! "Dropping" the connection drops both inner halves at once, whichever task holds them:
//! an in-process pipe's peer then reads an abnormal close, a WebSocket's peer sees its TCP
//! connection end without a close frame.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use ferrolite_transport::{
    Connection, Incoming, MessageReceiver, MessageSender, Transport, TransportError,
};
use tokio::sync::watch;

/// What happens to the chosen message.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fault {
    /// The connection vanishes: the message is lost, both sides see an abnormal close (1006).
    Drop,
    /// The message is delivered after this long; nothing else happens.
    Delay(Duration),
    /// The connection fails with "connection reset" (POSIX ECONNRESET, transient) on our
    /// side; the peer sees it vanish (1006).
    Reset,
    /// The first half of the message's bytes is delivered as a message, then the connection
    /// vanishes.
    Cut,
}

/// Which message the fault hits: the n-th (from 1) sent or received on the connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum At {
    Sent(usize),
    Received(usize),
}

/// Refuses connection attempts: `attempt` (from 1) → the error, or `None` to connect.
pub type Refusal = Box<dyn Fn(usize) -> Option<TransportError> + Send + Sync>;

/// A [`Transport`] that injects faults into the connections of another.
pub struct FaultyTransport {
    inner: Arc<dyn Transport>,
    /// The connection attempt (from 1) whose connection gets the fault, where and which.
    plan: Option<(usize, At, Fault)>,
    refusal: Option<Refusal>,
    /// Connection attempts made (refused ones included).
    pub attempts: AtomicUsize,
    /// When each attempt was made (tokio time, so a paused clock shows the backoff).
    pub attempt_times: Mutex<Vec<tokio::time::Instant>>,
    /// Faults injected so far (the plan fires at most once).
    pub injected: Arc<AtomicUsize>,
}

impl FaultyTransport {
    /// Injects `fault` at `at` into the connection of attempt `attempt` (from 1).
    pub fn new(inner: Arc<dyn Transport>, attempt: usize, at: At, fault: Fault) -> FaultyTransport {
        FaultyTransport {
            plan: Some((attempt, at, fault)),
            ..FaultyTransport::passthrough(inner)
        }
    }

    /// Injects nothing (until [`refusing`](Self::refusing) says otherwise).
    pub fn passthrough(inner: Arc<dyn Transport>) -> FaultyTransport {
        FaultyTransport {
            inner,
            plan: None,
            refusal: None,
            attempts: AtomicUsize::new(0),
            attempt_times: Mutex::new(Vec::new()),
            injected: Arc::new(AtomicUsize::new(0)),
        }
    }

    /// Refuses the attempts for which `refusal` returns an error.
    pub fn refusing(
        mut self,
        refusal: impl Fn(usize) -> Option<TransportError> + Send + Sync + 'static,
    ) -> FaultyTransport {
        self.refusal = Some(Box::new(refusal));
        self
    }

    pub fn attempts(&self) -> usize {
        self.attempts.load(Ordering::SeqCst)
    }

    pub fn injected(&self) -> usize {
        self.injected.load(Ordering::SeqCst)
    }

    /// The waits between consecutive attempts, in whole seconds.
    pub fn waits_secs(&self) -> Vec<u64> {
        let times = self.attempt_times.lock().unwrap();
        times
            .windows(2)
            .map(|w| (w[1] - w[0]).as_secs_f64().round() as u64)
            .collect()
    }
}

#[async_trait]
impl Transport for FaultyTransport {
    async fn connect(&self) -> Result<Connection, TransportError> {
        let attempt = self.attempts.fetch_add(1, Ordering::SeqCst) + 1;
        self.attempt_times
            .lock()
            .unwrap()
            .push(tokio::time::Instant::now());
        if let Some(err) = self.refusal.as_ref().and_then(|refuse| refuse(attempt)) {
            return Err(err);
        }
        let connection = self.inner.connect().await?;
        let plan = match self.plan {
            Some((n, at, fault)) if n == attempt => (at, fault),
            _ => return Ok(connection),
        };
        let subprotocol = connection.subprotocol().map(str::to_owned);
        let (sender, receiver) = connection.split();
        let (dead, _) = watch::channel(None);
        let shared = Arc::new(Shared {
            sender: Mutex::new(Some(sender)),
            receiver: Mutex::new(Some(receiver)),
            dead,
            sent: AtomicUsize::new(0),
            received: AtomicUsize::new(0),
            plan,
            fired: AtomicBool::new(false),
            injected: self.injected.clone(),
        });
        Ok(Connection::new(
            Box::new(FaultySender(shared.clone())),
            Box::new(FaultyReceiver(shared)),
        )
        .with_subprotocol(subprotocol))
    }
}

/// How a killed connection fails on our side.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Death {
    Abnormal,
    Reset,
}

impl Death {
    fn error(self) -> TransportError {
        match self {
            Death::Abnormal => TransportError::Closed {
                code: 1006,
                reason: "connection dropped by the fault injector".into(),
            },
            Death::Reset => TransportError::Io {
                context: "fault injector",
                source: std::io::ErrorKind::ConnectionReset.into(),
            },
        }
    }
}

/// One faulty connection. Each inner half sits in its slot while idle; an operation takes
/// it out for its duration and watches `dead`, so a kill drops both halves at once.
struct Shared {
    sender: Mutex<Option<Box<dyn MessageSender>>>,
    receiver: Mutex<Option<Box<dyn MessageReceiver>>>,
    dead: watch::Sender<Option<Death>>,
    sent: AtomicUsize,
    received: AtomicUsize,
    plan: (At, Fault),
    fired: AtomicBool,
    injected: Arc<AtomicUsize>,
}

impl Shared {
    /// The fault for this message, if it is the chosen one.
    fn fault_for(&self, at: At) -> Option<Fault> {
        if at == self.plan.0 && !self.fired.swap(true, Ordering::SeqCst) {
            self.injected.fetch_add(1, Ordering::SeqCst);
            Some(self.plan.1)
        } else {
            None
        }
    }

    fn death(&self) -> Option<Death> {
        *self.dead.borrow()
    }

    /// The connection vanishes: both halves are dropped (those held by an operation are
    /// dropped by it, as it sees `dead`).
    fn kill(&self, death: Death) {
        self.dead.send_if_modified(|d| {
            if d.is_none() {
                *d = Some(death);
                true
            } else {
                false
            }
        });
        drop(self.sender.lock().unwrap().take());
        drop(self.receiver.lock().unwrap().take());
    }

    /// Resolves once the connection is killed.
    async fn killed(&self) -> Death {
        let mut dead = self.dead.subscribe();
        let death = dead.wait_for(Option::is_some).await.map(|d| *d);
        match death {
            Ok(death) => death.unwrap_or(Death::Abnormal),
            Err(_) => std::future::pending().await,
        }
    }
}

struct FaultySender(Arc<Shared>);

impl FaultySender {
    /// Sends through the inner half unless (or until) the connection is killed.
    async fn forward(&mut self, message: Bytes) -> Result<(), TransportError> {
        let shared = &self.0;
        let taken = shared.sender.lock().unwrap().take();
        let Some(mut inner) = taken else {
            return Err(shared.death().unwrap_or(Death::Abnormal).error());
        };
        tokio::select! {
            result = inner.send(message) => {
                if shared.death().is_none() {
                    *shared.sender.lock().unwrap() = Some(inner);
                }
                result
            }
            death = shared.killed() => Err(death.error()),
        }
    }
}

#[async_trait]
impl MessageSender for FaultySender {
    async fn send(&mut self, message: Bytes) -> Result<(), TransportError> {
        let n = self.0.sent.fetch_add(1, Ordering::SeqCst) + 1;
        match self.0.fault_for(At::Sent(n)) {
            None => self.forward(message).await,
            Some(Fault::Delay(delay)) => {
                tokio::time::sleep(delay).await;
                self.forward(message).await
            }
            Some(Fault::Drop) => {
                self.0.kill(Death::Abnormal);
                Err(Death::Abnormal.error())
            }
            Some(Fault::Reset) => {
                self.0.kill(Death::Reset);
                Err(Death::Reset.error())
            }
            Some(Fault::Cut) => {
                let half = message.slice(..message.len() / 2);
                let _ = self.forward(half).await;
                self.0.kill(Death::Abnormal);
                Err(Death::Abnormal.error())
            }
        }
    }

    async fn close(&mut self, code: u16, reason: &str) -> Result<(), TransportError> {
        let shared = &self.0;
        let taken = shared.sender.lock().unwrap().take();
        let Some(mut inner) = taken else {
            return Err(shared.death().unwrap_or(Death::Abnormal).error());
        };
        let result = inner.close(code, reason).await;
        if shared.death().is_none() {
            *shared.sender.lock().unwrap() = Some(inner);
        }
        result
    }
}

struct FaultyReceiver(Arc<Shared>);

impl FaultyReceiver {
    async fn forward(&mut self) -> Result<Option<Incoming>, TransportError> {
        let shared = &self.0;
        let taken = shared.receiver.lock().unwrap().take();
        let Some(mut inner) = taken else {
            return Err(shared.death().unwrap_or(Death::Abnormal).error());
        };
        tokio::select! {
            item = inner.receive() => {
                if shared.death().is_none() {
                    *shared.receiver.lock().unwrap() = Some(inner);
                }
                item
            }
            death = shared.killed() => Err(death.error()),
        }
    }
}

#[async_trait]
impl MessageReceiver for FaultyReceiver {
    async fn receive(&mut self) -> Result<Option<Incoming>, TransportError> {
        let item = self.forward().await?;
        let Some(Incoming::Message(message)) = item else {
            return Ok(item);
        };
        let n = self.0.received.fetch_add(1, Ordering::SeqCst) + 1;
        match self.0.fault_for(At::Received(n)) {
            None => Ok(Some(Incoming::Message(message))),
            Some(Fault::Delay(delay)) => {
                tokio::time::sleep(delay).await;
                Ok(Some(Incoming::Message(message)))
            }
            Some(Fault::Drop) => {
                self.0.kill(Death::Abnormal);
                Err(Death::Abnormal.error())
            }
            Some(Fault::Reset) => {
                self.0.kill(Death::Reset);
                Err(Death::Reset.error())
            }
            Some(Fault::Cut) => {
                // The half arrives; what follows is the connection's end.
                self.0.kill(Death::Abnormal);
                Ok(Some(Incoming::Message(message.slice(..message.len() / 2))))
            }
        }
    }
}
