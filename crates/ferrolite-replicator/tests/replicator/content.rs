//! The content of revisions: blobs (nested and in arrays, both directions, a corrupt blob,
//! large blobs streamed, `proveAttachment`, `_attachments` stubs on the wire) and delta
//! sync (sizes on the wire, disabled, a refused delta resent in full), on redb databases
//! over pipes and real WebSockets on 127.0.0.1.

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use bytes::Bytes;
use ferrolite_document::{canonical_json, BlobDigest, BlobRef, RevId};
use ferrolite_protocol::blip::{self, flags, FrameHeader, FrameType, Message, MessageType};
use ferrolite_protocol::delta::apply_delta;
use ferrolite_protocol::messages::{
    prove_attachment, ChangesReply, ChangesReplyEntry, GetAttachment, ProveAttachment,
    ProveAttachmentReply, SubChanges,
};
use ferrolite_replicator::{
    serve_passive, ActivityLevel, Direction, PassiveOptions, ReplicatedDocument, Replicator,
    ReplicatorConfig, ReplicatorType,
};
use ferrolite_storage::{ObservedStore, Store};
use ferrolite_transport::{
    pipe, Connection, Incoming, Listener, ListenerConfig, MessageReceiver, MessageSender,
    Transport, TransportError, UrlEndpoint,
};
use serde_json::{json, Value};

use crate::support::{config, run_once, RawClient, Recorder, TestDb, STEP};

// ----- databases -----

/// A redb database in a temporary directory whose path is known (to reach blob files).
struct Disk {
    db: TestDb,
}

/// A `Disk` is a test database with blob helpers.
impl std::ops::Deref for Disk {
    type Target = TestDb;
    fn deref(&self) -> &TestDb {
        &self.db
    }
}

impl Disk {
    fn new() -> Disk {
        Disk { db: TestDb::new() }
    }

    /// Stores `content` as a blob; returns its blob dictionary.
    fn blob(&self, content_type: &str, content: &[u8]) -> Value {
        let stored = self
            .store
            .put_blob(&mut std::io::Cursor::new(content.to_vec()), None)
            .unwrap();
        Value::Object(
            BlobRef {
                digest: stored.digest,
                length: stored.length,
                content_type: Some(content_type.to_owned()),
            }
            .to_dict(),
        )
    }

    /// Saves a local edit of `id` (a child of its current revision).
    fn save(&self, id: &str, body: &Value) -> RevId {
        self.db.save(id, body.clone())
    }

    fn current(&self, id: &str) -> Option<RevId> {
        Some(self.store.get(id).unwrap()?.tree.current()?.id().clone())
    }

    fn blob_bytes(&self, digest: &BlobDigest) -> Option<Vec<u8>> {
        let mut reader = self.store.open_blob(digest).unwrap()?;
        let mut out = Vec::new();
        std::io::Read::read_to_end(&mut reader, &mut out).unwrap();
        Some(out)
    }

    fn blob_path(&self, digest: &BlobDigest) -> PathBuf {
        self.db
            .path()
            .join("db")
            .join("blobs")
            .join(digest.to_hex())
    }

    /// Whether the blobs directory holds no leftover temporary file.
    fn no_temp_files(&self) -> bool {
        std::fs::read_dir(self.db.path().join("db").join("blobs"))
            .unwrap()
            .all(|e| !e.unwrap().file_name().to_string_lossy().ends_with(".tmp"))
    }
}

fn digest(blob: &Value) -> BlobDigest {
    BlobDigest::parse(blob["digest"].as_str().unwrap()).unwrap()
}

/// Deterministic incompressible bytes.
fn noise(len: usize, seed: u64) -> Vec<u8> {
    let mut state = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        out.extend_from_slice(&state.to_le_bytes());
    }
    out.truncate(len);
    out
}

// ----- transports -----

/// Connects by serving `store` with `serve_passive` over a pipe.
struct Serve {
    store: Arc<ObservedStore>,
    options: PassiveOptions,
}

#[async_trait]
impl Transport for Serve {
    async fn connect(&self) -> Result<Connection, TransportError> {
        let (ours, theirs) = pipe();
        tokio::spawn(serve_passive(
            self.store.clone(),
            theirs,
            self.options.clone(),
        ));
        Ok(ours)
    }
}

fn serve(store: &Arc<ObservedStore>) -> Arc<dyn Transport> {
    Arc::new(Serve {
        store: store.clone(),
        options: PassiveOptions::default(),
    })
}

/// A WebSocket listener on 127.0.0.1 serving `store`.
async fn websocket(store: &Arc<ObservedStore>) -> (Arc<dyn Transport>, Arc<Listener>) {
    let listener = Listener::bind(ListenerConfig::new("127.0.0.1:0".parse().unwrap(), ["db"]))
        .await
        .unwrap();
    let listener = Arc::new(listener);
    let url = listener.url("db");
    let accepting = listener.clone();
    let store = store.clone();
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

/// What went through a [`Counting`] transport, seen from the active side.
#[derive(Default)]
struct Traffic {
    received: AtomicU64,
    sent: AtomicU64,
    /// Bytes of frames of `rev` messages (the only compressed, non-urgent requests).
    rev_received: AtomicU64,
    rev_sent: AtomicU64,
    /// Profiles of the uncompressed one-frame requests received (`getAttachment`, …).
    requests_received: Mutex<Vec<String>>,
}

impl Traffic {
    fn reset(&self) {
        for counter in [
            &self.received,
            &self.sent,
            &self.rev_received,
            &self.rev_sent,
        ] {
            counter.store(0, Ordering::SeqCst);
        }
        self.requests_received.lock().unwrap().clear();
    }

    fn get(counter: &AtomicU64) -> u64 {
        counter.load(Ordering::SeqCst)
    }
}

/// Whether a frame belongs to a `rev` message.
fn is_rev_frame(frame: &[u8]) -> bool {
    FrameHeader::parse(frame).is_ok_and(|h| {
        h.frame_type() == FrameType::Request && h.has(flags::COMPRESSED) && !h.has(flags::URGENT)
    })
}

/// The profile of an uncompressed request that fits in one frame.
fn one_frame_profile(frame: &[u8]) -> Option<String> {
    let header = FrameHeader::parse(frame).ok()?;
    if header.frame_type() != FrameType::Request
        || header.has(flags::COMPRESSED)
        || header.has(flags::MORE_COMING)
    {
        return None;
    }
    let data = &frame[header.len..frame.len().checked_sub(4)?];
    let (len, prefix) = blip::varint::read(data).ok()?;
    let properties = blip::Properties::decode(data.get(prefix..prefix + len as usize)?).ok()?;
    properties.get("Profile").map(str::to_owned)
}

/// Wraps a transport, counting the bytes of frames both ways.
struct Counting {
    inner: Arc<dyn Transport>,
    traffic: Arc<Traffic>,
}

struct CountingSender {
    inner: Box<dyn MessageSender>,
    traffic: Arc<Traffic>,
}

struct CountingReceiver {
    inner: Box<dyn MessageReceiver>,
    traffic: Arc<Traffic>,
}

#[async_trait]
impl MessageSender for CountingSender {
    async fn send(&mut self, message: Bytes) -> Result<(), TransportError> {
        self.traffic
            .sent
            .fetch_add(message.len() as u64, Ordering::SeqCst);
        if is_rev_frame(&message) {
            self.traffic
                .rev_sent
                .fetch_add(message.len() as u64, Ordering::SeqCst);
        }
        self.inner.send(message).await
    }

    async fn close(&mut self, code: u16, reason: &str) -> Result<(), TransportError> {
        self.inner.close(code, reason).await
    }
}

#[async_trait]
impl MessageReceiver for CountingReceiver {
    async fn receive(&mut self) -> Result<Option<Incoming>, TransportError> {
        let item = self.inner.receive().await;
        if let Ok(Some(Incoming::Message(frame))) = &item {
            self.traffic
                .received
                .fetch_add(frame.len() as u64, Ordering::SeqCst);
            if is_rev_frame(frame) {
                self.traffic
                    .rev_received
                    .fetch_add(frame.len() as u64, Ordering::SeqCst);
            }
            if let Some(profile) = one_frame_profile(frame) {
                self.traffic.requests_received.lock().unwrap().push(profile);
            }
        }
        item
    }
}

#[async_trait]
impl Transport for Counting {
    async fn connect(&self) -> Result<Connection, TransportError> {
        let (sender, receiver) = self.inner.connect().await?.split();
        Ok(Connection::new(
            Box::new(CountingSender {
                inner: sender,
                traffic: self.traffic.clone(),
            }),
            Box::new(CountingReceiver {
                inner: receiver,
                traffic: self.traffic.clone(),
            }),
        ))
    }
}

fn counting(inner: Arc<dyn Transport>) -> (Arc<dyn Transport>, Arc<Traffic>) {
    let traffic = Arc::new(Traffic::default());
    (
        Arc::new(Counting {
            inner,
            traffic: traffic.clone(),
        }),
        traffic,
    )
}

/// A hand-driven BLIP peer on the far end of a pipe, for message-level checks of the
/// active replicator.
struct RawPeer {
    blip: blip::Connection,
    connection: Connection,
}

/// Hands out one pre-made connection.
struct OneConnection(Mutex<Option<Connection>>);

#[async_trait]
impl Transport for OneConnection {
    async fn connect(&self) -> Result<Connection, TransportError> {
        self.0
            .lock()
            .unwrap()
            .take()
            .ok_or_else(|| TransportError::Closed {
                code: 1001,
                reason: "used".into(),
            })
    }
}

impl RawPeer {
    fn pair() -> (Arc<dyn Transport>, RawPeer) {
        let (ours, theirs) = pipe();
        (
            Arc::new(OneConnection(Mutex::new(Some(ours)))),
            RawPeer {
                blip: blip::Connection::default(),
                connection: theirs,
            },
        )
    }

    async fn flush(&mut self) {
        while let Some(frame) = self.blip.next_frame() {
            self.connection.send(Bytes::from(frame)).await.unwrap();
        }
    }

    /// The next complete message (request or response), or `None` once closed.
    async fn next(&mut self) -> Option<Message> {
        loop {
            self.flush().await;
            let item = tokio::time::timeout(STEP, self.connection.receive())
                .await
                .expect("a message in time")
                .unwrap();
            match item {
                Some(Incoming::Message(frame)) => {
                    if let Some(message) = self.blip.receive(&frame).unwrap() {
                        self.flush().await;
                        return Some(message);
                    }
                }
                Some(Incoming::Closed(_)) => {
                    let _ = self.connection.close(1000, "").await;
                    return None;
                }
                None => return None,
            }
        }
    }

    /// The next request; answers `getCheckpoint` (404) and `setCheckpoint` on the way.
    async fn next_request(&mut self) -> Option<Message> {
        loop {
            let message = self.next().await?;
            match message.profile() {
                Some("getCheckpoint") => {
                    self.send(Message::error_to(&message, "HTTP", 404, ""))
                        .await;
                }
                Some("setCheckpoint") => {
                    let mut reply = Message::response_to(&message);
                    reply.properties.set("rev", "0-1");
                    self.send(reply).await;
                }
                _ if message.kind == MessageType::Request => return Some(message),
                _ => {}
            }
        }
    }

    async fn send(&mut self, message: Message) -> u64 {
        let number = self.blip.send(message).unwrap();
        self.flush().await;
        number
    }

    /// Sends a request and waits for its response, answering checkpoint requests and
    /// collecting other requests meanwhile.
    async fn request(&mut self, message: Message, others: &mut Vec<Message>) -> Message {
        let number = self.send(message).await;
        loop {
            let message = self.next().await.expect("the connection is open");
            match (message.kind, message.profile()) {
                (MessageType::Request, Some("getCheckpoint")) => {
                    self.send(Message::error_to(&message, "HTTP", 404, ""))
                        .await;
                }
                (MessageType::Request, _) => others.push(message),
                _ if message.number == number => return message,
                _ => {}
            }
        }
    }

    /// Serves until the active side closes: checkpoint requests answered, others ignored.
    async fn finish(&mut self) {
        while let Some(message) = self.next().await {
            if message.kind == MessageType::Request && message.profile() == Some("setCheckpoint") {
                let mut reply = Message::response_to(&message);
                reply.properties.set("rev", "0-1");
                self.send(reply).await;
            }
        }
    }
}

fn replicator(local: &Disk, transport: Arc<dyn Transport>, kind: ReplicatorType) -> Replicator {
    Replicator::new(local.store.clone(), transport, config(kind, false))
}

fn pull_errors(recorder: &Recorder) -> Vec<ReplicatedDocument> {
    recorder
        .documents
        .lock()
        .unwrap()
        .iter()
        .filter(|d| d.error.is_some())
        .cloned()
        .collect()
}

// ----- blobs -----

/// A body holding blobs at the top level, nested in an object, in arrays and under a key
/// with a `/`; the same content twice.
fn blob_body(db: &Disk) -> (Value, Vec<(Value, Vec<u8>)>) {
    let hello = b"Hello, blob!\n".to_vec();
    let picture = noise(150_000, 1);
    let json_doc = br#"{"settings":{"a":1}}"#.to_vec();
    let a = db.blob("text/plain", &hello);
    let b = db.blob("image/png", &picture);
    let c = db.blob("application/json", &json_doc);
    let body = json!({
        "name": "Alice",
        "avatar": a,
        "gallery": {"photos": [b, {"caption": "nested", "thumb": c}], "count": 2},
        "a/b": [[a]],
    });
    (body, vec![(a, hello), (b, picture), (c, json_doc)])
}

fn assert_has_blobs(db: &Disk, blobs: &[(Value, Vec<u8>)]) {
    for (blob, bytes) in blobs {
        let stored = db.blob_bytes(&digest(blob)).expect("the blob is stored");
        assert!(stored == *bytes, "blob {} differs", blob["digest"]);
        assert_eq!(BlobDigest::of(&stored), digest(blob));
    }
}

#[tokio::test]
async fn blobs_nested_and_in_arrays_are_pushed_and_pulled_byte_for_byte() {
    let alice = Disk::new();
    let (body, blobs) = blob_body(&alice);
    let rev = alice.save("profile", &body);

    // Push over a real WebSocket to a passive peer.
    let server = Disk::new();
    let (ws, _listener) = websocket(&server.store).await;
    let (transport, traffic) = counting(ws);
    let push = replicator(&alice, transport, ReplicatorType::Push);
    let recorder = Recorder::attach(&push);
    run_once(&push).await;
    assert!(pull_errors(&recorder).is_empty());
    assert_eq!(recorder.count(Direction::Push), 1);
    assert_eq!(server.current("profile"), Some(rev.clone()));
    assert_eq!(server.body("profile"), Some(body.clone()));
    assert_has_blobs(&server, &blobs);
    // The server fetched each distinct blob once (no stubs: it said `blobs=true`).
    let mut asked = traffic.requests_received.lock().unwrap().clone();
    asked.sort();
    assert_eq!(asked, ["getAttachment"; 3]);

    // Pull from that server into a third database, over a pipe and over a WebSocket.
    for via_websocket in [false, true] {
        let bob = Disk::new();
        let (transport, _listener) = if via_websocket {
            let (t, l) = websocket(&server.store).await;
            (t, Some(l))
        } else {
            (serve(&server.store), None)
        };
        let pull = replicator(&bob, transport, ReplicatorType::Pull);
        let recorder = Recorder::attach(&pull);
        run_once(&pull).await;
        assert!(pull_errors(&recorder).is_empty());
        assert_eq!(bob.current("profile"), Some(rev.clone()));
        assert_eq!(bob.body("profile"), Some(body.clone()));
        assert_has_blobs(&bob, &blobs);
        assert!(bob.no_temp_files());
    }
}

#[tokio::test]
async fn a_corrupt_blob_fails_its_revision_and_nothing_is_stored() {
    // The server's copy of one blob is damaged on disk: it serves wrong bytes.
    let server = Disk::new();
    let good = server.blob("text/plain", b"good content\n");
    let bad = server.blob("text/plain", b"original content\n");
    std::fs::write(server.blob_path(&digest(&bad)), b"tampered content\n").unwrap();
    server.save("with-good-blob", &json!({"file": good}));
    server.save("with-bad-blob", &json!({"file": bad, "n": 1}));
    server.save("plain", &json!({"n": 2}));

    let client = Disk::new();
    let pull = replicator(&client, serve(&server.store), ReplicatorType::Pull);
    let recorder = Recorder::attach(&pull);
    let status = run_once(&pull).await;
    assert!(
        status.error.is_none(),
        "one bad revision does not stop the run"
    );
    assert!(client.body("plain").is_some());
    assert!(client.body("with-good-blob").is_some());
    assert!(client.blob_bytes(&digest(&good)).is_some());
    // The revision failed: no document, no blob, no temporary file.
    assert_eq!(client.body("with-bad-blob"), None);
    assert_eq!(client.blob_bytes(&digest(&bad)), None);
    assert!(client.no_temp_files());
    let errors = pull_errors(&recorder);
    assert_eq!(errors.len(), 1);
    assert_eq!(errors[0].id, "with-bad-blob");
    assert_eq!(errors[0].direction, Direction::Pull);

    // Pushing the damaged blob: the passive side refuses the revision the same way.
    let target = Disk::new();
    let push = replicator(&server, serve(&target.store), ReplicatorType::Push);
    let recorder = Recorder::attach(&push);
    run_once(&push).await;
    assert_eq!(target.body("with-bad-blob"), None);
    assert_eq!(target.blob_bytes(&digest(&bad)), None);
    assert!(target.body("with-good-blob").is_some());
    let errors = pull_errors(&recorder);
    assert_eq!(errors.len(), 1);
    assert_eq!(errors[0].id, "with-bad-blob");
    let error = errors[0].error.as_ref().unwrap();
    assert_eq!(error.domain_and_code(), ("WebSocket", 400), "{error}");
}

/// Pulls a blob of `size` bytes over a WebSocket and pushes it back over another; returns
/// the time taken.
async fn large_blob_round_trip(size: usize) -> Duration {
    let started = Instant::now();
    let server = Disk::new();
    let content = noise(size, 9);
    let blob = server.blob("video/mp4", &content);
    server.save("movie", &json!({"title": "large", "file": blob}));
    drop(content);

    let client = Disk::new();
    let (ws, _listener) = websocket(&server.store).await;
    let pull = replicator(&client, ws, ReplicatorType::Pull);
    let recorder = Recorder::attach(&pull);
    run_once(&pull).await;
    assert!(pull_errors(&recorder).is_empty());
    assert!(client.body("movie").is_some());
    // Compare by digest and length (the store verified the digest when it kept the bytes).
    let mut reader = client.store.open_blob(&digest(&blob)).unwrap().unwrap();
    let mut digester = ferrolite_document::BlobDigester::new();
    let mut buf = vec![0; 1 << 16];
    loop {
        let n = std::io::Read::read(&mut reader, &mut buf).unwrap();
        if n == 0 {
            break;
        }
        digester.update(&buf[..n]);
    }
    assert_eq!(digester.length(), size as u64);
    assert_eq!(digester.finish(), digest(&blob));

    let target = Disk::new();
    let (ws, _listener) = websocket(&target.store).await;
    let config = ReplicatorConfig {
        remote_id: "another-remote".into(),
        ..config(ReplicatorType::Push, false)
    };
    let push = Replicator::new(client.store.clone(), ws, config);
    run_once(&push).await;
    assert!(target.body("movie").is_some());
    assert!(target.store.has_blob(&digest(&blob)).unwrap());
    started.elapsed()
}

#[tokio::test]
async fn a_5_mb_blob_goes_both_ways_over_websockets() {
    let took = large_blob_round_trip(5 << 20).await;
    eprintln!("5 MB blob pulled and pushed in {took:?}");
}

/// 50 MB, more than BLIP's 32 MiB message limit: the reply streams into the blob store.
/// `cargo test -p ferrolite-replicator -- --ignored fifty` (also `cargo xtask bench blobs`).
#[tokio::test]
#[ignore = "50 MB: about 7 s in a debug build; `cargo xtask bench blobs` runs it in release"]
async fn a_50_mb_blob_goes_both_ways_over_websockets() {
    let took = large_blob_round_trip(50 << 20).await;
    eprintln!("50 MB blob pulled and pushed in {took:?}");
}

#[tokio::test]
async fn the_passive_side_answers_get_attachment_and_prove_attachment() {
    let db = Disk::new();
    let content = b"Hello, blob!\n";
    let blob = db.blob("text/plain", content);
    let missing = BlobDigest::of(b"not stored");
    let mut client = RawClient::serve(&db.store, PassiveOptions::default());

    let nonce: Vec<u8> = (1..=20).collect();
    let prove = ProveAttachment {
        digest: digest(&blob),
        nonce: Bytes::from(nonce.clone()),
        collection: None,
    };
    let reply = client.request(prove.to_message()).await;
    let proof = ProveAttachmentReply::from_response(&reply).unwrap().proof;
    // The spec's worked example, and the protocol function.
    assert_eq!(proof, "sha1-B4fLt5PqMZJmWaNuC5GY99YrdA0=");
    assert_eq!(proof, prove_attachment(&nonce, content));

    let mut unknown = prove.clone();
    unknown.digest = missing;
    let reply = client.request(unknown.to_message()).await;
    assert_eq!(reply.error(), Some(("LiteCore", 7)));
    // No nonce: refused as Sync Gateway does.
    let mut empty = prove.to_message();
    empty.body = Bytes::new();
    let reply = client.request(empty).await;
    assert_eq!(reply.error(), Some(("HTTP", 400)));

    for compress in [false, true] {
        let get = GetAttachment {
            digest: digest(&blob),
            doc_id: Some("doc".into()),
            compress,
            collection: None,
        };
        let reply = client.request(get.to_message()).await;
        assert_eq!(reply.kind, MessageType::Response);
        assert_eq!(&reply.body[..], content);
        assert_eq!(reply.compressed, compress);
    }
    let get = GetAttachment {
        digest: missing,
        doc_id: Some("doc".into()),
        compress: false,
        collection: None,
    };
    let reply = client.request(get.to_message()).await;
    assert_eq!(reply.error(), Some(("LiteCore", 7)));
    assert_eq!(&reply.body[..], b"No such blob");
    client.close().await;
}

#[tokio::test]
async fn a_blob_the_server_already_has_is_proved_not_sent() {
    let server = Disk::new();
    let shared = server.blob("application/octet-stream", &noise(200_000, 5));
    server.save("theirs", &json!({"file": shared}));

    let client = Disk::new();
    let same = client.blob("application/octet-stream", &noise(200_000, 5));
    let fresh = client.blob("text/plain", b"only here\n");
    client.save("ours", &json!({"file": same, "note": fresh}));

    let (transport, traffic) = counting(serve(&server.store));
    let push = replicator(&client, transport, ReplicatorType::Push);
    let recorder = Recorder::attach(&push);
    run_once(&push).await;
    assert!(pull_errors(&recorder).is_empty());
    assert!(server.body("ours").is_some());
    let mut asked = traffic.requests_received.lock().unwrap().clone();
    asked.sort();
    // Proof for the blob it has, bytes for the one it lacks.
    assert_eq!(asked, ["getAttachment", "proveAttachment"]);
    assert!(
        Traffic::get(&traffic.sent) < 100_000,
        "the 200 KB blob was not sent"
    );
}

#[tokio::test]
async fn stubs_on_the_wire_and_blob_requests_served_by_the_pusher() {
    let client = Disk::new();
    let text = b"Hello, blob!\n";
    let a = client.blob("text/plain", text);
    let b = client.blob("image/png", &noise(70_000, 2));
    let body = json!({"name": "Alice", "avatar": a, "photos": [b, {"x": 1}], "a/b": {"c": a}});
    let rev = client.save("doc", &body);
    client.save("doc", &{
        let mut next = body.clone();
        next["name"] = json!("Alice B.");
        next
    });

    let (transport, mut peer) = RawPeer::pair();
    let push = replicator(&client, transport, ReplicatorType::Push);
    push.start(false);
    let propose = peer.next_request().await.unwrap();
    assert_eq!(propose.profile(), Some("proposeChanges"));
    // Accept everything, like Sync Gateway: no `blobs=true`, so stubs are needed.
    let mut reply = Message::response_to(&propose);
    reply.body = Bytes::from_static(b"[]");
    peer.send(reply).await;
    let rev_message = peer.next_request().await.unwrap();
    assert_eq!(rev_message.profile(), Some("rev"));
    assert!(
        !rev_message.no_reply,
        "a rev with attachments expects a reply"
    );
    let sent: Value = serde_json::from_slice(&rev_message.body).unwrap();
    let current = client.current("doc").unwrap();
    assert_eq!(current.generation(), 2);
    let (da, db) = (a["digest"].clone(), b["digest"].clone());
    assert_eq!(
        sent["_attachments"],
        json!({
            "blob_/avatar": {"content_type": "text/plain", "digest": da, "length": 13, "revpos": 2, "stub": true},
            "blob_/photos/0": {"content_type": "image/png", "digest": db, "length": 70_000, "revpos": 2, "stub": true},
            "blob_/a~1b/c": {"content_type": "text/plain", "digest": da, "length": 13, "revpos": 2, "stub": true}
        })
    );
    // The blob dictionaries stay in the body, untouched.
    assert_eq!(sent["avatar"], a);
    assert_eq!(sent["photos"][0], b);
    assert_eq!(sent["name"], "Alice B.");
    let _ = rev;

    // While the rev awaits its reply, the peer fetches and proves blobs, as Sync Gateway.
    let mut others = Vec::new();
    let get = GetAttachment {
        digest: digest(&b),
        doc_id: Some("doc".into()),
        compress: false,
        collection: None,
    };
    let reply = peer.request(get.to_message(), &mut others).await;
    assert_eq!(reply.kind, MessageType::Response);
    assert!(reply.body == noise(70_000, 2));
    let nonce = b"0123456789abcdefghij".to_vec();
    let prove = ProveAttachment {
        digest: digest(&a),
        nonce: Bytes::from(nonce.clone()),
        collection: None,
    };
    let reply = peer.request(prove.to_message(), &mut others).await;
    assert_eq!(
        ProveAttachmentReply::from_response(&reply).unwrap().proof,
        prove_attachment(&nonce, text)
    );
    let missing = GetAttachment {
        digest: BlobDigest::of(b"nope"),
        doc_id: Some("doc".into()),
        compress: true,
        collection: None,
    };
    let reply = peer.request(missing.to_message(), &mut others).await;
    assert_eq!(reply.error(), Some(("LiteCore", 7)));
    let mut bad = missing.to_message();
    bad.properties.set("digest", "sha1-nonsense");
    let reply = peer.request(bad, &mut others).await;
    assert_eq!(reply.error(), Some(("LiteCore", 9)));
    let mut no_nonce = prove.to_message();
    no_nonce.body = Bytes::new();
    let reply = peer.request(no_nonce, &mut others).await;
    assert_eq!(reply.error(), Some(("BLIP", 400)));
    assert!(others.is_empty());
    peer.send(Message::response_to(&rev_message)).await;
    peer.finish().await;
    let status = tokio::time::timeout(STEP, push.wait_until_stopped())
        .await
        .unwrap();
    assert_eq!(status.activity, ActivityLevel::Stopped);
    assert!(status.error.is_none(), "{:?}", status.error);
}

#[tokio::test]
async fn stubs_from_sync_gateway_are_merged_and_inline_data_stored() {
    // What Sync Gateway sends: blobs with their stubs stamped in, a legacy attachment, and
    // (from a REST upload) an attachment with its bytes inline.
    let server = Disk::new();
    let text = b"Hello, blob!\n";
    let a = server.blob("text/plain", text);
    let legacy = server.blob("text/plain", b"legacy attachment\n");
    let inline = b"inline bytes\n";
    let inline_digest = BlobDigest::of(inline);
    let body = json!({
        "name": "Alice",
        "avatar": a,
        "_attachments": {
            "blob_/avatar": {"content_type": "text/plain", "digest": a["digest"], "length": 13, "revpos": 1, "stub": true},
            "old.txt": {"content_type": "text/plain", "digest": legacy["digest"], "length": 18, "revpos": 1, "stub": true},
            "upload.txt": {"content_type": "text/plain", "data": STANDARD.encode(inline)}
        }
    });
    let (transport, mut peer) = RawPeer::pair();
    let client = Disk::new();
    let pull = replicator(&client, transport, ReplicatorType::Pull);
    pull.start(false);
    let sub = peer.next_request().await.unwrap();
    assert_eq!(sub.profile(), Some("subChanges"));
    peer.send(Message::response_to(&sub)).await;
    let mut changes = Message::request("changes");
    changes.body = Bytes::from_static(br#"[[1,"doc","1-aa",0,300]]"#);
    let mut others = Vec::new();
    let reply = peer.request(changes, &mut others).await;
    assert_eq!(reply.property("blobs"), Some("true"));
    assert_eq!(reply.property("deltas"), Some("true"));
    let mut rev = Message::request("rev");
    rev.properties.set("id", "doc");
    rev.properties.set("rev", "1-aa");
    rev.properties.set("sequence", "1");
    rev.body = Bytes::from(body.to_string());
    let rev_number = peer.send(rev).await;
    // The client fetches what it lacks, one blob after another, with LiteCore's properties.
    let mut fetched = Vec::new();
    loop {
        let message = peer.next().await.unwrap();
        if message.kind != MessageType::Request {
            assert_eq!(message.number, rev_number);
            assert_eq!(message.kind, MessageType::Response, "{message:?}");
            break;
        }
        assert_eq!(message.profile(), Some("getAttachment"));
        let get = GetAttachment::from_message(&message).unwrap();
        assert_eq!(get.doc_id.as_deref(), Some("doc"));
        assert!(get.compress, "text/plain is compressible");
        let bytes = server.blob_bytes(&get.digest).unwrap();
        fetched.push(get.digest);
        let mut reply = Message::response_to(&message);
        reply.body = Bytes::from(bytes);
        reply.compressed = true;
        peer.send(reply).await;
    }
    fetched.sort();
    let mut expected = vec![digest(&a), digest(&legacy)];
    expected.sort();
    assert_eq!(fetched, expected);
    let mut caught_up = Message::request("changes");
    caught_up.body = Bytes::from_static(b"[]");
    caught_up.no_reply = true;
    peer.send(caught_up).await;
    peer.finish().await;
    let status = tokio::time::timeout(STEP, pull.wait_until_stopped())
        .await
        .unwrap();
    assert!(status.error.is_none(), "{:?}", status.error);
    // Stored as LiteCore stores it: the blob stub dropped, the legacy attachments kept (the
    // inline one as a stub), every blob's bytes present.
    assert_eq!(
        client.body("doc"),
        Some(json!({
            "name": "Alice",
            "avatar": a,
            "_attachments": {
                "old.txt": {"content_type": "text/plain", "digest": legacy["digest"], "length": 18, "revpos": 1, "stub": true},
                "upload.txt": {"content_type": "text/plain", "digest": inline_digest.to_string(), "length": 13, "stub": true}
            }
        }))
    );
    assert_eq!(client.blob_bytes(&digest(&a)).unwrap(), text);
    assert_eq!(
        client.blob_bytes(&digest(&legacy)).unwrap(),
        b"legacy attachment\n"
    );
    assert_eq!(client.blob_bytes(&inline_digest).unwrap(), inline);
}

#[tokio::test]
async fn a_litecore_blob_pull_is_replayed() {
    // The server side of the real `pull-blob` session: our puller asks for the blob exactly
    // as LiteCore did (`digest`, `docID`, `compress: true` for text/plain).
    let (transport, mut peer) = RawPeer::pair();
    let client = Disk::new();
    let pull = replicator(&client, transport, ReplicatorType::Pull);
    pull.start(false);
    let sub = peer.next_request().await.unwrap();
    peer.send(Message::response_to(&sub)).await;
    let mut changes = Message::request("changes");
    changes.urgent = true;
    changes.compressed = true;
    changes.body = Bytes::from_static(
        br#"[[1,"blobdoc","1-b31974a9b8b3e8d0927ea7233f3deea9f46baf73",0,108]]"#,
    );
    let mut others = Vec::new();
    let reply = peer.request(changes, &mut others).await;
    assert_eq!(&reply.body[..], b"[[]]");
    let mut rev = Message::request("rev");
    rev.compressed = true;
    rev.properties.set("id", "blobdoc");
    rev.properties
        .set("rev", "1-b31974a9b8b3e8d0927ea7233f3deea9f46baf73");
    rev.properties.set("sequence", "1");
    rev.body = Bytes::from_static(br#"{"title":"doc with a blob","attachment":{"digest":"sha1-gxibxdmjh98Z5bGMduimgpa1KqI=","length":34,"content_type":"text/plain","@type":"blob"}}"#);
    peer.send(rev).await;
    let get = peer.next_request().await.unwrap();
    let properties: Vec<(&str, &str)> = get.properties.iter().collect();
    assert_eq!(
        properties,
        [
            ("Profile", "getAttachment"),
            ("digest", "sha1-gxibxdmjh98Z5bGMduimgpa1KqI="),
            ("docID", "blobdoc"),
            ("compress", "true")
        ]
    );
    let mut reply = Message::response_to(&get);
    reply.compressed = true;
    reply.body = Bytes::from_static(b"Hello from a Couchbase Lite blob!\n");
    peer.send(reply).await;
    let rev_reply = peer.next().await.unwrap();
    assert_eq!(rev_reply.kind, MessageType::Response);
    assert!(rev_reply.body.is_empty());
    let mut caught_up = Message::request("changes");
    caught_up.body = Bytes::from_static(b"[]");
    caught_up.no_reply = true;
    peer.send(caught_up).await;
    peer.finish().await;
    tokio::time::timeout(STEP, pull.wait_until_stopped())
        .await
        .unwrap();
    let digest = BlobDigest::parse("sha1-gxibxdmjh98Z5bGMduimgpa1KqI=").unwrap();
    assert_eq!(
        client.blob_bytes(&digest).unwrap(),
        b"Hello from a Couchbase Lite blob!\n"
    );
    assert_eq!(client.body("blobdoc").unwrap()["title"], "doc with a blob");
}

// ----- delta sync -----

/// A ~10 KB document: ten workload profiles.
fn team(logins: u64) -> Value {
    let members: Vec<Value> = (0..10)
        .map(|i| Value::Object(ferrolite_testkit::workload::make_doc(i, 1, "user").1))
        .collect();
    let mut team = json!({"type": "team", "name": "core", "members": members});
    team["members"][4]["stats"]["logins"] = json!(logins);
    team
}

fn pull_config(deltas: bool) -> ReplicatorConfig {
    ReplicatorConfig {
        enable_delta_sync: deltas,
        ..config(ReplicatorType::Pull, false)
    }
}

#[tokio::test]
async fn a_one_field_change_is_pulled_as_a_small_delta() {
    let server = Disk::new();
    server.save("team", &team(1));
    let full_body = canonical_json(&team(1)).len();
    assert!(full_body > 9_000, "{full_body}");

    let client = Disk::new();
    let (ws, _listener) = websocket(&server.store).await;
    let (transport, traffic) = counting(ws);
    let run = |deltas: bool| {
        Replicator::new(client.store.clone(), transport.clone(), pull_config(deltas))
    };
    run_once(&run(true)).await;
    let full = Traffic::get(&traffic.rev_received);

    // One field changes: the rev carries a delta.
    server.save("team", &team(2));
    traffic.reset();
    run_once(&run(true)).await;
    assert_eq!(client.body("team"), Some(team(2)));
    let delta = Traffic::get(&traffic.rev_received);
    eprintln!(
        "10 KB document ({full_body} bytes of JSON): full rev {full} bytes on the wire, one-field delta rev {delta} bytes"
    );
    assert!(delta * 20 < full, "delta {delta} vs full {full}");

    // Delta sync off: the full body again.
    server.save("team", &team(3));
    traffic.reset();
    run_once(&run(false)).await;
    assert_eq!(client.body("team"), Some(team(3)));
    let off = Traffic::get(&traffic.rev_received);
    assert!(
        off * 2 > full,
        "delta off sent {off} bytes, full was {full}"
    );
}

#[tokio::test]
async fn a_one_field_change_is_pushed_as_a_small_delta() {
    let client = Disk::new();
    client.save("team", &team(1));
    let server = Disk::new();
    let (transport, traffic) = counting(serve(&server.store));
    let push = || {
        Replicator::new(
            client.store.clone(),
            transport.clone(),
            config(ReplicatorType::Push, false),
        )
    };
    run_once(&push()).await;
    let full = Traffic::get(&traffic.rev_sent);
    client.save("team", &team(2));
    traffic.reset();
    run_once(&push()).await;
    let delta = Traffic::get(&traffic.rev_sent);
    assert_eq!(server.body("team"), Some(team(2)));
    assert_eq!(server.current("team"), client.current("team"));
    eprintln!("push: full rev {full} bytes, one-field delta rev {delta} bytes");
    assert!(delta * 20 < full, "delta {delta} vs full {full}");
}

/// Serves a raw client: a 10 KB document at `2-…` whose parent `1-…` keeps its body.
async fn delta_passive(options: PassiveOptions) -> (Disk, RawClient, RevId, RevId) {
    let server = Disk::new();
    let first = server.save("team", &team(1));
    let second = server.save("team", &team(2));
    let client = RawClient::serve(&server.store, options);
    (server, client, first, second)
}

/// Subscribes and answers the first `changes` with `known` and the given `deltas` flag;
/// returns the `rev` that follows.
async fn first_rev(client: &mut RawClient, known: &RevId, deltas: bool) -> Message {
    let sub = SubChanges::default().to_message();
    let reply = client.request(sub).await;
    assert_eq!(reply.kind, MessageType::Response);
    let changes = client.next_request().await;
    assert_eq!(changes.profile(), Some("changes"));
    let reply = ChangesReply {
        entries: vec![ChangesReplyEntry::Wanted(vec![known.clone()])],
        max_history: Some(20),
        blobs: true,
        deltas,
        send_replacement_revs: false,
    };
    client.respond(reply.to_response(&changes)).await;
    loop {
        let message = client.next_request().await;
        if message.profile() == Some("rev") {
            return message;
        }
    }
}

#[tokio::test]
async fn a_refused_delta_is_resent_in_full() {
    let (_server, mut client, first, second) = delta_passive(PassiveOptions::default()).await;
    let rev = first_rev(&mut client, &first, true).await;
    assert_eq!(rev.property("rev"), Some(second.as_str()));
    assert_eq!(rev.property("deltaSrc"), Some(first.as_str()));
    assert!(!rev.no_reply, "a delta expects a reply");
    let delta: Value = serde_json::from_slice(&rev.body).unwrap();
    assert_eq!(apply_delta(&team(1), &delta).unwrap(), team(2));
    assert!(rev.body.len() * 20 < canonical_json(&team(2)).len());
    // "I cannot apply it": the full revision follows.
    client
        .respond(Message::error_to(&rev, "HTTP", 422, "no base"))
        .await;
    let mut again = client.next_request().await;
    while again.profile() == Some("changes") {
        again = client.next_request().await; // the caught-up `changes`
    }
    assert_eq!(again.profile(), Some("rev"));
    assert_eq!(again.property("rev"), Some(second.as_str()));
    assert_eq!(again.property("deltaSrc"), None);
    let body: Value = serde_json::from_slice(&again.body).unwrap();
    assert_eq!(body, team(2));
    client.respond(Message::response_to(&again)).await;
    client.close().await;
}

#[tokio::test]
async fn no_delta_unless_both_sides_allow_it() {
    // The client did not say `deltas=true`.
    let (_server, mut client, first, _) = delta_passive(PassiveOptions::default()).await;
    let rev = first_rev(&mut client, &first, false).await;
    assert_eq!(rev.property("deltaSrc"), None);
    client.close().await;
    // The server has delta sync off.
    let options = PassiveOptions {
        disable_deltas: true,
        ..PassiveOptions::default()
    };
    let (_server, mut client, first, _) = delta_passive(options).await;
    let rev = first_rev(&mut client, &first, true).await;
    assert_eq!(rev.property("deltaSrc"), None);
    let body: Value = serde_json::from_slice(&rev.body).unwrap();
    assert_eq!(body, team(2));
    client.close().await;
}

#[tokio::test]
async fn the_puller_answers_422_to_a_delta_it_cannot_apply_and_takes_the_full_body() {
    let (transport, mut peer) = RawPeer::pair();
    let client = Disk::new();
    let pull = replicator(&client, transport, ReplicatorType::Pull);
    pull.start(false);
    let sub = peer.next_request().await.unwrap();
    peer.send(Message::response_to(&sub)).await;
    let mut changes = Message::request("changes");
    changes.body = Bytes::from_static(br#"[[1,"team","2-bb",0,10000]]"#);
    let mut others = Vec::new();
    let reply = peer.request(changes, &mut others).await;
    assert_eq!(reply.property("deltas"), Some("true"));
    let rev_with = |delta_src: Option<&str>, body: &Value| {
        let mut rev = Message::request("rev");
        rev.compressed = true;
        rev.properties.set("id", "team");
        rev.properties.set("rev", "2-bb");
        rev.properties.set("sequence", "1");
        rev.properties.set("history", "1-aa");
        if let Some(source) = delta_src {
            rev.properties.set("deltaSrc", source);
        }
        rev.body = Bytes::from(body.to_string());
        rev
    };
    // A delta against a revision the client never had.
    let number = peer
        .send(rev_with(Some("1-aa"), &json!({"name": "x"})))
        .await;
    let reply = peer.next().await.unwrap();
    assert_eq!(reply.number, number);
    assert_eq!(reply.error(), Some(("HTTP", 422)));
    // A second `changes` reply must not repeat `deltas=true` (LiteCore says it once).
    let mut more = Message::request("changes");
    more.body = Bytes::from_static(br#"[[2,"other","1-cc",0,10]]"#);
    let reply = peer.request(more, &mut others).await;
    assert_eq!(reply.property("deltas"), None);
    let number = peer.send(rev_with(None, &team(2))).await;
    let reply = peer.next().await.unwrap();
    assert_eq!(reply.number, number);
    assert_eq!(reply.kind, MessageType::Response);
    let mut other = Message::request("rev");
    other.properties.set("id", "other");
    other.properties.set("rev", "1-cc");
    other.properties.set("sequence", "2");
    other.body = Bytes::from_static(b"{}");
    peer.send(other).await;
    assert_eq!(peer.next().await.unwrap().kind, MessageType::Response);
    let mut caught_up = Message::request("changes");
    caught_up.body = Bytes::from_static(b"[]");
    caught_up.no_reply = true;
    peer.send(caught_up).await;
    peer.finish().await;
    let status = tokio::time::timeout(STEP, pull.wait_until_stopped())
        .await
        .unwrap();
    assert!(status.error.is_none(), "{:?}", status.error);
    assert_eq!(client.body("team"), Some(team(2)));
}

#[tokio::test]
async fn the_pusher_resends_in_full_a_delta_the_peer_refuses() {
    let client = Disk::new();
    let first = client.save("team", &team(1));
    // First push: the peer takes the full revision, which becomes the remote ancestor.
    let (transport, mut peer) = RawPeer::pair();
    let push = replicator(&client, transport, ReplicatorType::Push);
    push.start(false);
    let propose = peer.next_request().await.unwrap();
    let mut reply = Message::response_to(&propose);
    reply.body = Bytes::from_static(b"[]");
    reply.properties.set("deltas", "true");
    peer.send(reply).await;
    let rev = peer.next_request().await.unwrap();
    assert_eq!(rev.property("deltaSrc"), None);
    peer.send(Message::response_to(&rev)).await;
    peer.finish().await;
    tokio::time::timeout(STEP, push.wait_until_stopped())
        .await
        .unwrap();

    // One field changes: proposed with the remote ancestor, sent as a delta against it.
    let second = client.save("team", &team(2));
    let (transport, mut peer) = RawPeer::pair();
    let push = replicator(&client, transport, ReplicatorType::Push);
    push.start(false);
    let propose = peer.next_request().await.unwrap();
    let rows: Value = serde_json::from_slice(&propose.body).unwrap();
    assert_eq!(rows[0][2], first.as_str());
    let mut reply = Message::response_to(&propose);
    reply.body = Bytes::from_static(b"[]");
    reply.properties.set("deltas", "true");
    peer.send(reply).await;
    let rev = peer.next_request().await.unwrap();
    assert_eq!(rev.property("rev"), Some(second.as_str()));
    assert_eq!(rev.property("deltaSrc"), Some(first.as_str()));
    let delta: Value = serde_json::from_slice(&rev.body).unwrap();
    assert_eq!(apply_delta(&team(1), &delta).unwrap(), team(2));
    peer.send(Message::error_to(&rev, "HTTP", 422, "cannot apply"))
        .await;
    let again = peer.next_request().await.unwrap();
    assert_eq!(again.property("rev"), Some(second.as_str()));
    assert_eq!(again.property("deltaSrc"), None);
    assert_eq!(
        serde_json::from_slice::<Value>(&again.body).unwrap(),
        team(2)
    );
    peer.send(Message::response_to(&again)).await;
    peer.finish().await;
    let status = tokio::time::timeout(STEP, push.wait_until_stopped())
        .await
        .unwrap();
    assert!(status.error.is_none(), "{:?}", status.error);
}

#[tokio::test]
async fn many_documents_fetch_their_blobs_in_parallel() {
    let server = Disk::new();
    let mut expected = Vec::new();
    for i in 0..30 {
        let content = noise(100_000 + i * 1_000, 100 + i as u64);
        let blob = server.blob("application/octet-stream", &content);
        server.save(&format!("doc-{i:02}"), &json!({"i": i, "file": blob}));
        expected.push((blob, content));
    }
    let client = Disk::new();
    let (ws, _listener) = websocket(&server.store).await;
    let pull = replicator(&client, ws, ReplicatorType::Pull);
    let recorder = Recorder::attach(&pull);
    run_once(&pull).await;
    assert!(pull_errors(&recorder).is_empty());
    assert_eq!(recorder.count(Direction::Pull), 30);
    assert_has_blobs(&client, &expected);
}
