//! Shared test support: redb stores in temp directories, local edits, transports (pipe to
//! `serve_passive`, WebSocket listener, a connection killer, a stalled peer), snapshots.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use ferrolite_document::{canonical_json, RevId, RevTree};
use ferrolite_protocol::blip::{self, Message};
use ferrolite_replicator::{
    serve_passive, ActivityLevel, Direction, PassiveOptions, ReplicatedDocument, Replicator,
    ReplicatorConfig, ReplicatorStatus, ReplicatorType,
};
use ferrolite_storage::{ChangeFeed, DocumentRecord, ObservedStore, RedbStore, Store};
use ferrolite_transport::{
    pipe, Connection, Incoming, Listener, ListenerConfig, MessageReceiver, Transport,
    TransportError, UrlEndpoint,
};
use serde_json::Value;
use tempfile::TempDir;

/// Generous bound for anything that should happen quickly.
pub const STEP: Duration = Duration::from_secs(60);

/// A redb database in its own temporary directory.
pub struct TestDb {
    pub store: Arc<ObservedStore>,
    _dir: TempDir,
}

impl TestDb {
    pub fn new() -> TestDb {
        let dir = tempfile::tempdir().unwrap();
        let redb = RedbStore::open(&dir.path().join("db")).unwrap();
        TestDb {
            store: Arc::new(ObservedStore::new(Arc::new(redb))),
            _dir: dir,
        }
    }

    /// The directory holding the database (`db/` inside it).
    pub fn path(&self) -> &std::path::Path {
        self._dir.path()
    }

    /// Saves a local edit of `id` (a child of the current revision).
    pub fn save(&self, id: &str, body: Value) -> RevId {
        self.edit(id, body, false)
    }

    /// Deletes `id` locally (a tombstone child of the current revision).
    pub fn delete(&self, id: &str) -> RevId {
        self.edit(id, serde_json::json!({}), true)
    }

    fn edit(&self, id: &str, body: Value, deleted: bool) -> RevId {
        let mut made = None;
        self.store
            .write(&mut |tx| {
                let mut record = tx.get(id)?.unwrap_or_else(|| DocumentRecord {
                    id: id.to_owned(),
                    tree: RevTree::new(),
                    sequence: 0,
                    expiration: None,
                });
                let parent = record.tree.current().map(|c| c.id().clone());
                let sequence = tx.next_sequence()?;
                let rev = record.tree.add_child(
                    parent.as_ref(),
                    Bytes::from(canonical_json(&body)),
                    deleted,
                    sequence,
                )?;
                record.tree.drop_old_bodies(1);
                record.tree.prune(20);
                record.sequence = sequence;
                tx.put(&record)?;
                made = Some(rev);
                Ok(())
            })
            .unwrap();
        made.unwrap()
    }

    /// Creates `count` documents `<prefix>-<i>` in one transaction.
    pub fn save_many(&self, prefix: &str, count: usize) {
        self.store
            .write(&mut |tx| {
                for i in 0..count {
                    let id = format!("{prefix}-{i:05}");
                    let mut record = DocumentRecord {
                        id: id.clone(),
                        tree: RevTree::new(),
                        sequence: 0,
                        expiration: None,
                    };
                    let sequence = tx.next_sequence()?;
                    let body = serde_json::json!({"n": i, "name": format!("document {i}")});
                    record.tree.add_child(
                        None,
                        Bytes::from(canonical_json(&body)),
                        false,
                        sequence,
                    )?;
                    record.sequence = sequence;
                    tx.put(&record)?;
                }
                Ok(())
            })
            .unwrap();
    }

    pub fn get(&self, id: &str) -> Option<DocumentRecord> {
        self.store.get(id).unwrap()
    }

    /// The current body of `id` as JSON.
    pub fn body(&self, id: &str) -> Option<Value> {
        let record = self.get(id)?;
        let current = record.tree.current()?;
        Some(serde_json::from_slice(current.body()?).unwrap())
    }

    /// Every document: ID → (current revision, deleted, current body, history).
    pub fn snapshot(&self) -> BTreeMap<String, (String, bool, Option<String>, Vec<String>)> {
        let mut out = BTreeMap::new();
        for change in ChangeFeed::new(self.store.clone(), 0) {
            let change = change.unwrap();
            let record = self.get(&change.id).unwrap();
            let current = record.tree.current().unwrap();
            out.insert(
                change.id.clone(),
                (
                    current.id().to_string(),
                    current.is_deleted(),
                    current
                        .body()
                        .map(|b| String::from_utf8(b.to_vec()).unwrap()),
                    record
                        .tree
                        .history(current.id())
                        .iter()
                        .map(|r| r.to_string())
                        .collect(),
                ),
            );
        }
        out
    }

    pub fn last_sequence(&self) -> u64 {
        self.store.last_sequence().unwrap()
    }
}

/// Connects by serving `remote` with `serve_passive` over a fresh in-process pipe.
pub struct PipeTransport {
    pub remote: Arc<ObservedStore>,
    pub options: PassiveOptions,
    pub connects: AtomicUsize,
}

impl PipeTransport {
    pub fn new(remote: &TestDb) -> Arc<PipeTransport> {
        Arc::new(PipeTransport {
            remote: remote.store.clone(),
            options: PassiveOptions::default(),
            connects: AtomicUsize::new(0),
        })
    }
}

#[async_trait]
impl Transport for PipeTransport {
    async fn connect(&self) -> Result<Connection, TransportError> {
        self.connects.fetch_add(1, Ordering::SeqCst);
        let (ours, theirs) = pipe();
        tokio::spawn(serve_passive(
            self.remote.clone(),
            theirs,
            self.options.clone(),
        ));
        Ok(ours)
    }
}

/// A WebSocket listener on 127.0.0.1 serving `remote` for database `db`; returns the
/// endpoint to connect to.
pub async fn websocket_server(remote: &TestDb) -> (Arc<UrlEndpoint>, Arc<Listener>) {
    let listener = Listener::bind(ListenerConfig::new("127.0.0.1:0".parse().unwrap(), ["db"]))
        .await
        .unwrap();
    let listener = Arc::new(listener);
    let url = listener.url("db");
    let accepting = listener.clone();
    let store = remote.store.clone();
    tokio::spawn(async move {
        while let Some(accepted) = accepting.accept().await {
            tokio::spawn(serve_passive(
                store.clone(),
                accepted.connection,
                PassiveOptions::default(),
            ));
        }
    });
    (Arc::new(UrlEndpoint::parse(&url).unwrap()), listener)
}

/// Which transport a scenario runs over.
#[derive(Clone, Copy, Debug)]
pub enum Via {
    Pipe,
    WebSocket,
}

/// A transport to `remote` of the given kind (keep the listener alive while it is used).
pub async fn transport_to(
    remote: &TestDb,
    via: Via,
) -> (Arc<dyn Transport>, Option<Arc<Listener>>) {
    match via {
        Via::Pipe => (PipeTransport::new(remote), None),
        Via::WebSocket => {
            let (endpoint, listener) = websocket_server(remote).await;
            (endpoint, Some(listener))
        }
    }
}

/// A pipe transport whose first connection breaks (as if the network dropped) after the
/// client received `kill_after` messages; later connections work.
pub struct KillingTransport {
    pub inner: Arc<PipeTransport>,
    pub kill_after: usize,
    pub connects: AtomicUsize,
}

struct KillingReceiver {
    inner: Option<Box<dyn MessageReceiver>>,
    left: usize,
}

#[async_trait]
impl MessageReceiver for KillingReceiver {
    async fn receive(&mut self) -> Result<Option<Incoming>, TransportError> {
        if self.left == 0 {
            self.inner = None; // the peer's sends now fail
            return Err(TransportError::Closed {
                code: 1006,
                reason: "connection killed by the test".into(),
            });
        }
        let Some(inner) = self.inner.as_mut() else {
            return Ok(None);
        };
        let item = inner.receive().await;
        if let Ok(Some(Incoming::Message(_))) = &item {
            self.left -= 1;
        }
        item
    }
}

#[async_trait]
impl Transport for KillingTransport {
    async fn connect(&self) -> Result<Connection, TransportError> {
        let connection = self.inner.connect().await?;
        if self.connects.fetch_add(1, Ordering::SeqCst) > 0 {
            return Ok(connection);
        }
        let (sender, receiver) = connection.split();
        Ok(Connection::new(
            sender,
            Box::new(KillingReceiver {
                inner: Some(receiver),
                left: self.kill_after,
            }),
        ))
    }
}

/// A peer that accepts the connection and then never answers anything.
pub struct StalledTransport {
    pub held: Mutex<Vec<Connection>>,
}

#[async_trait]
impl Transport for StalledTransport {
    async fn connect(&self) -> Result<Connection, TransportError> {
        let (ours, theirs) = ferrolite_transport::pipe_with_capacity(1024);
        self.held.lock().unwrap().push(theirs);
        Ok(ours)
    }
}

/// Transport that always fails with a refused connection, counting attempts.
pub struct RefusingTransport {
    pub attempts: AtomicUsize,
}

#[async_trait]
impl Transport for RefusingTransport {
    async fn connect(&self) -> Result<Connection, TransportError> {
        self.attempts.fetch_add(1, Ordering::SeqCst);
        Err(TransportError::Io {
            context: "connect",
            source: std::io::ErrorKind::ConnectionRefused.into(),
        })
    }
}

pub fn config(kind: ReplicatorType, continuous: bool) -> ReplicatorConfig {
    ReplicatorConfig {
        replicator_type: kind,
        continuous,
        remote_id: "test-remote".to_owned(),
        ..ReplicatorConfig::default()
    }
}

/// Records every status and document event of a replicator.
#[derive(Default)]
pub struct Recorder {
    pub statuses: Mutex<Vec<ReplicatorStatus>>,
    pub documents: Mutex<Vec<ReplicatedDocument>>,
}

impl Recorder {
    pub fn attach(replicator: &Replicator) -> Arc<Recorder> {
        let recorder = Arc::new(Recorder::default());
        let r = recorder.clone();
        replicator
            .add_change_listener(move |status| r.statuses.lock().unwrap().push(status.clone()));
        let r = recorder.clone();
        replicator.add_document_listener(move |docs| {
            r.documents.lock().unwrap().extend(docs.iter().cloned())
        });
        recorder
    }

    pub fn levels(&self) -> Vec<ActivityLevel> {
        let mut out: Vec<ActivityLevel> = Vec::new();
        for status in self.statuses.lock().unwrap().iter() {
            if out.last() != Some(&status.activity) {
                out.push(status.activity);
            }
        }
        out
    }

    pub fn count(&self, direction: Direction) -> usize {
        self.documents
            .lock()
            .unwrap()
            .iter()
            .filter(|d| d.direction == direction && d.error.is_none())
            .count()
    }
}

/// Runs a one-shot replication to the end; panics on error.
pub async fn run_once(replicator: &Replicator) -> ReplicatorStatus {
    replicator.start(false);
    let status = tokio::time::timeout(STEP, replicator.wait_until_stopped())
        .await
        .expect("replication finished in time");
    assert_eq!(status.activity, ActivityLevel::Stopped);
    assert!(
        status.error.is_none(),
        "replication failed: {:?}",
        status.error
    );
    status
}

/// Waits until `check` holds (polling), or panics.
pub async fn eventually(what: &str, mut check: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + STEP;
    while !check() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// A BLIP client driven by hand over a pipe to `serve_passive`, for protocol-level tests.
pub struct RawClient {
    blip: blip::Connection,
    connection: Connection,
    /// Requests the passive side sent us, in order.
    pub received: Vec<Message>,
}

impl RawClient {
    pub fn serve(store: &Arc<ObservedStore>, options: PassiveOptions) -> RawClient {
        let (ours, theirs) = pipe();
        tokio::spawn(serve_passive(store.clone(), theirs, options));
        RawClient {
            blip: blip::Connection::default(),
            connection: ours,
            received: Vec::new(),
        }
    }

    async fn flush(&mut self) {
        while let Some(frame) = self.blip.next_frame() {
            self.connection.send(Bytes::from(frame)).await.unwrap();
        }
    }

    /// Sends a request and waits for its response (collecting the peer's requests).
    pub async fn request(&mut self, message: Message) -> Message {
        let number = self.blip.send(message).unwrap();
        self.flush().await;
        loop {
            let item = tokio::time::timeout(STEP, self.connection.receive())
                .await
                .expect("a reply in time")
                .unwrap();
            let Some(Incoming::Message(frame)) = item else {
                panic!("connection closed: {item:?}");
            };
            if let Some(msg) = self.blip.receive(&frame).unwrap() {
                match msg.kind {
                    blip::MessageType::Request => self.received.push(msg),
                    _ if msg.number == number => {
                        self.flush().await;
                        return msg;
                    }
                    _ => {}
                }
            }
            self.flush().await;
        }
    }

    /// Sends a NoReply request.
    pub async fn send_no_reply(&mut self, mut message: Message) {
        message.no_reply = true;
        self.blip.send(message).unwrap();
        self.flush().await;
    }

    /// Waits for the next request from the peer.
    pub async fn next_request(&mut self) -> Message {
        if !self.received.is_empty() {
            return self.received.remove(0);
        }
        loop {
            let item = tokio::time::timeout(STEP, self.connection.receive())
                .await
                .expect("a request in time")
                .unwrap();
            let Some(Incoming::Message(frame)) = item else {
                panic!("connection closed: {item:?}");
            };
            if let Some(msg) = self.blip.receive(&frame).unwrap() {
                if msg.kind == blip::MessageType::Request {
                    self.flush().await;
                    return msg;
                }
            }
            self.flush().await;
        }
    }

    /// Answers a request of the peer.
    pub async fn respond(&mut self, message: Message) {
        self.blip.send(message).unwrap();
        self.flush().await;
    }

    pub async fn close(mut self) {
        self.connection.close(1000, "").await.unwrap();
    }
}
