//! Faults injected into real connections (pipes and WebSockets on 127.0.0.1, redb on both
//! sides): after any single fault — a dropped connection, a delayed message, a reset, a
//! frame cut in half — at the 3rd, 10th or 25th message sent or received, a one-shot pull
//! and a continuous push-and-pull end with both databases identical (documents, current
//! revision IDs, bodies, blob bytes). Then the retry rules on a paused clock: transient
//! errors go offline and back off 2, 4, 8 … s up to `max_attempt_wait`, a one-shot run gives
//! up after `max_attempts`, a continuous one never does; permanent errors stop at once.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use bytes::Bytes;
use ferrolite_document::{canonical_json, find_blobs, BlobRef, RevTree};
use ferrolite_replicator::{
    serve_passive, ActivityLevel, PassiveOptions, Replicator, ReplicatorError, ReplicatorType,
};
use ferrolite_storage::{DocumentRecord, ObservedStore, Store};
use ferrolite_transport::{
    pipe, AuthDecision, AuthRequest, Connection, Listener, ListenerConfig, Transport,
    TransportError, UrlEndpoint,
};
use serde_json::{json, Value};

use crate::faulty::{At, Fault, FaultyTransport};
use crate::support::{config, eventually, Recorder, TestDb, Via, STEP};

/// Message counts at which faults are injected.
const COUNTS: [usize; 3] = [3, 10, 25];
/// The delay fault.
const DELAY: Fault = Fault::Delay(Duration::from_millis(60));

/// How a session of the passive side ended.
type Ends = Arc<Mutex<Vec<Result<(), ReplicatorError>>>>;

/// The remote database served over a pipe or a WebSocket; records how each session ended.
struct Server {
    transport: Arc<dyn Transport>,
    ends: Ends,
    _listener: Option<Arc<Listener>>,
}

/// Serves `store` over a fresh in-process pipe per connection.
struct ServePipe {
    store: Arc<ObservedStore>,
    ends: Ends,
}

#[async_trait]
impl Transport for ServePipe {
    async fn connect(&self) -> Result<Connection, TransportError> {
        let (ours, theirs) = pipe();
        let store = self.store.clone();
        let ends = self.ends.clone();
        tokio::spawn(async move {
            let end = serve_passive(store, theirs, PassiveOptions::default()).await;
            ends.lock().unwrap().push(end);
        });
        Ok(ours)
    }
}

impl Server {
    async fn start(remote: &TestDb, via: Via) -> Server {
        let ends: Ends = Arc::default();
        match via {
            Via::Pipe => Server {
                transport: Arc::new(ServePipe {
                    store: remote.store.clone(),
                    ends: ends.clone(),
                }),
                ends,
                _listener: None,
            },
            Via::WebSocket => {
                let config = ListenerConfig::new("127.0.0.1:0".parse().unwrap(), ["db"]);
                let listener = Arc::new(Listener::bind(config).await.unwrap());
                let url = listener.url("db");
                let accepting = listener.clone();
                let store = remote.store.clone();
                let recorded = ends.clone();
                tokio::spawn(async move {
                    while let Some(accepted) = accepting.accept().await {
                        let store = store.clone();
                        let recorded = recorded.clone();
                        tokio::spawn(async move {
                            let end = serve_passive(
                                store,
                                accepted.connection,
                                PassiveOptions::default(),
                            )
                            .await;
                            recorded.lock().unwrap().push(end);
                        });
                    }
                });
                Server {
                    transport: Arc::new(UrlEndpoint::parse(&url).unwrap()),
                    ends,
                    _listener: Some(listener),
                }
            }
        }
    }
}

// ----- content -----

/// Deterministic, poorly compressible bytes.
fn bytes_of(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

/// Stores a blob of `len` bytes in `db`; returns its blob dictionary.
fn blob(db: &TestDb, len: usize, seed: u64) -> Value {
    let content = bytes_of(len, seed);
    let stored = db
        .store
        .put_blob(&mut std::io::Cursor::new(content), None)
        .unwrap();
    Value::Object(
        BlobRef {
            digest: stored.digest,
            length: stored.length,
            content_type: Some("application/octet-stream".to_owned()),
        }
        .to_dict(),
    )
}

/// One edit: a new revision of `id` (a child of its current one) with `body`, or a deletion.
enum Edit {
    Save(String, Value),
    Delete(String),
}

/// Applies `edits` in one transaction.
fn apply(db: &TestDb, edits: Vec<Edit>) {
    db.store
        .write(&mut |tx| {
            for edit in &edits {
                let (id, body, deleted) = match edit {
                    Edit::Save(id, body) => (id, body.clone(), false),
                    Edit::Delete(id) => (id, json!({}), true),
                };
                let mut record = tx.get(id)?.unwrap_or_else(|| DocumentRecord {
                    id: id.clone(),
                    tree: RevTree::new(),
                    sequence: 0,
                    expiration: None,
                });
                let parent = record.tree.current().map(|c| c.id().clone());
                let sequence = tx.next_sequence()?;
                record.tree.add_child(
                    parent.as_ref(),
                    Bytes::from(canonical_json(&body)),
                    deleted,
                    sequence,
                )?;
                record.tree.drop_old_bodies(1);
                record.tree.prune(20);
                record.sequence = sequence;
                tx.put(&record)?;
            }
            Ok(())
        })
        .unwrap();
}

/// `count` documents `<prefix>-NNN`; every 40th (from the 7th) holds a blob, one of them
/// large enough to span many frames.
fn documents(db: &TestDb, prefix: &str, count: usize) {
    let edits = (0..count)
        .map(|i| {
            let mut body = json!({"n": i, "name": format!("{prefix} document {i}")});
            if i % 40 == 7 {
                let len = if i == 47 { 96 * 1024 } else { 1024 + i * 50 };
                body["file"] = blob(db, len, (i as u64) << 8 | prefix.len() as u64);
            }
            Edit::Save(format!("{prefix}-{i:03}"), body)
        })
        .collect();
    apply(db, edits);
}

// ----- comparison -----

/// Every document: ID → (current revision, deleted, current body).
fn state(db: &TestDb) -> BTreeMap<String, (String, bool, Option<String>)> {
    db.snapshot()
        .into_iter()
        .map(|(id, (rev, deleted, body, _history))| (id, (rev, deleted, body)))
        .collect()
}

/// The bytes of every blob the current revisions reference (`None`: missing).
fn blobs(db: &TestDb) -> BTreeMap<String, Option<Vec<u8>>> {
    let mut out = BTreeMap::new();
    for (_, (_, _, body)) in state(db) {
        let Some(body) = body else { continue };
        let body: Value = serde_json::from_str(&body).unwrap();
        for (_, blob) in find_blobs(&body).unwrap() {
            let bytes = db.store.open_blob(&blob.digest).unwrap().map(|mut r| {
                let mut out = Vec::new();
                std::io::Read::read_to_end(&mut r, &mut out).unwrap();
                out
            });
            out.insert(blob.digest.to_string(), bytes);
        }
    }
    out
}

fn identical(a: &TestDb, b: &TestDb) -> bool {
    state(a) == state(b)
}

fn assert_identical(a: &TestDb, b: &TestDb, label: &str) {
    let (sa, sb) = (state(a), state(b));
    if sa != sb {
        let differ: Vec<_> = sa
            .keys()
            .chain(sb.keys())
            .filter(|id| sa.get(*id) != sb.get(*id))
            .take(5)
            .map(|id| (id, sa.get(id), sb.get(id)))
            .collect();
        panic!(
            "{label}: the databases differ ({} vs {} documents), e.g. {differ:#?}",
            sa.len(),
            sb.len()
        );
    }
    let (ba, bb) = (blobs(a), blobs(b));
    assert!(
        ba.values().all(Option::is_some),
        "{label}: a blob is missing"
    );
    assert!(ba == bb, "{label}: the blobs differ");
}

// ----- one-shot pull -----

/// Where each fault is injected: every count, both directions, alternating transports so
/// each kind and direction runs over both.
fn placements() -> Vec<(At, Via)> {
    let mut out = Vec::new();
    for (i, &n) in COUNTS.iter().enumerate() {
        let (first, second) = if i % 2 == 0 {
            (Via::Pipe, Via::WebSocket)
        } else {
            (Via::WebSocket, Via::Pipe)
        };
        out.push((At::Received(n), first));
        out.push((At::Sent(n), second));
    }
    out
}

/// A one-shot pull of 200 documents (5 with blobs) whose first connection gets `fault` at
/// `at`; run again when the run stopped with an error. Returns the runs it took.
async fn pull_through(fault: Fault, at: At, via: Via) -> usize {
    let label = format!("pull, {fault:?} at {at:?} over {via:?}");
    let remote = TestDb::new();
    documents(&remote, "doc", 200);
    let local = TestDb::new();
    let server = Server::start(&remote, via).await;
    let faulty = Arc::new(FaultyTransport::new(server.transport.clone(), 1, at, fault));
    let mut cfg = config(ReplicatorType::Pull, false);
    cfg.max_attempt_wait = Duration::from_millis(20);
    let replicator = Replicator::new(local.store.clone(), faulty.clone(), cfg);
    let recorder = Recorder::attach(&replicator);
    replicator.start(false);
    let first = tokio::time::timeout(STEP, replicator.wait_until_stopped())
        .await
        .unwrap_or_else(|_| panic!("{label}: the run did not finish"));
    assert_eq!(faulty.injected(), 1, "{label}: the fault was injected");
    let mut runs = 1;
    match (fault, at, &first.error) {
        (Fault::Delay(_), _, error) => {
            assert!(error.is_none(), "{label}: {error:?}");
            assert_eq!(faulty.attempts(), 1, "{label}: no reconnection");
        }
        // A truncated frame received is a BLIP protocol error (close 1011): not retried.
        (Fault::Cut, At::Received(_), Some(error)) => {
            assert_eq!(error.domain_and_code(), ("WebSocket", 1011), "{label}");
            assert!(!error.is_transient(), "{label}");
            replicator.start(false);
            let second = tokio::time::timeout(STEP, replicator.wait_until_stopped())
                .await
                .unwrap();
            assert!(second.error.is_none(), "{label}: {:?}", second.error);
            runs = 2;
        }
        // Everything else is transient: the replicator reconnects by itself.
        (_, _, error) => {
            assert!(error.is_none(), "{label}: {error:?}");
            assert_eq!(faulty.attempts(), 2, "{label}: one reconnection");
            let offline = recorder
                .statuses
                .lock()
                .unwrap()
                .iter()
                .find(|s| s.activity == ActivityLevel::Offline)
                .and_then(|s| s.error.clone())
                .unwrap_or_else(|| panic!("{label}: went offline with the error"));
            assert!(offline.is_transient(), "{label}: {offline}");
        }
    }
    assert_identical(&local, &remote, &label);
    if fault == Fault::Drop {
        // The peer saw the connection vanish: an abnormal close (1006) on a pipe; over TCP
        // 1006, ECONNRESET when the socket was dropped with unread data, or EPIPE when the
        // peer was writing at that moment (a loaded machine makes that likelier).
        let expected = match via {
            Via::Pipe => vec![("WebSocket", 1006)],
            Via::WebSocket => vec![
                ("WebSocket", 1006),
                ("POSIX", econnreset()),
                ("POSIX", epipe()),
            ],
        };
        eventually(
            &format!("{label}: the peer sees the connection vanish"),
            || {
                server
                    .ends
                    .lock()
                    .unwrap()
                    .iter()
                    .any(|end| matches!(end, Err(e) if expected.contains(&e.domain_and_code())))
            },
        )
        .await;
    }
    runs
}

fn epipe() -> i32 {
    let broken = TransportError::Io {
        context: "test",
        source: std::io::ErrorKind::BrokenPipe.into(),
    };
    ReplicatorError::from(broken).domain_and_code().1
}

fn econnreset() -> i32 {
    let reset = TransportError::Io {
        context: "test",
        source: std::io::ErrorKind::ConnectionReset.into(),
    };
    ReplicatorError::from(reset).domain_and_code().1
}

async fn pull_survives(fault: Fault) {
    let started = Instant::now();
    for (at, via) in placements() {
        pull_through(fault, at, via).await;
    }
    eprintln!("pull with {fault:?} at 6 places: {:?}", started.elapsed());
}

#[tokio::test]
async fn a_pull_converges_after_a_dropped_connection() {
    pull_survives(Fault::Drop).await;
}

#[tokio::test]
async fn a_pull_converges_after_a_delayed_message() {
    pull_survives(DELAY).await;
}

#[tokio::test]
async fn a_pull_converges_after_a_reset() {
    pull_survives(Fault::Reset).await;
}

#[tokio::test]
async fn a_pull_converges_after_a_cut_frame() {
    pull_survives(Fault::Cut).await;
}

// ----- continuous push-and-pull -----

/// Edits on both sides while replicating: each round edits documents of its own side,
/// a shared document on both sides (a conflict), adds a blob, and deletes one document.
async fn edit_both_sides(local: Arc<TestDb>, remote: Arc<TestDb>) {
    for round in 0..3usize {
        tokio::time::sleep(Duration::from_millis(30)).await;
        let mut mine = Vec::new();
        let mut theirs = Vec::new();
        for i in 0..5 {
            let n = round * 5 + i;
            mine.push(Edit::Save(
                format!("l-{n:03}"),
                json!({"n": n, "edited": round}),
            ));
            theirs.push(Edit::Save(
                format!("r-{n:03}"),
                json!({"n": n, "edited": round}),
            ));
        }
        mine.push(Edit::Save(
            format!("s-{round:03}"),
            json!({"by": "local", "file": blob(&local, 3000 + round, 900 + round as u64)}),
        ));
        theirs.push(Edit::Save(
            format!("s-{round:03}"),
            json!({"by": "remote", "round": round}),
        ));
        mine.push(Edit::Delete(format!("l-{:03}", 30 + round)));
        theirs.push(Edit::Delete(format!("r-{:03}", 30 + round)));
        apply(&local, mine);
        apply(&remote, theirs);
    }
}

/// A continuous push-and-pull between 60 + 60 documents (with blobs), 10 of them on
/// both sides, edited on both sides while the first connection gets `fault` at `at`.
/// Restarted once if it stops with an error. Returns the restarts it took.
async fn push_and_pull_through(fault: Fault, at: At, via: Via) -> usize {
    let label = format!("push-and-pull, {fault:?} at {at:?} over {via:?}");
    let local = Arc::new(TestDb::new());
    let remote = Arc::new(TestDb::new());
    documents(&local, "l", 60);
    documents(&remote, "r", 60);
    documents(&remote, "s", 10);
    let server = Server::start(&remote, via).await;
    let faulty = Arc::new(FaultyTransport::new(server.transport.clone(), 1, at, fault));
    let mut cfg = config(ReplicatorType::PushAndPull, true);
    cfg.max_attempt_wait = Duration::from_millis(20);
    cfg.checkpoint_interval = Duration::from_millis(100);
    let replicator = Replicator::new(local.store.clone(), faulty.clone(), cfg);
    replicator.start(false);
    let edits = tokio::spawn(edit_both_sides(local.clone(), remote.clone()));
    let mut restarts = 0;
    let deadline = tokio::time::Instant::now() + STEP;
    edits.await.unwrap();
    loop {
        let status = replicator.status();
        if status.activity == ActivityLevel::Stopped {
            assert_eq!(restarts, 0, "{label}: stopped twice: {:?}", status.error);
            assert_eq!(
                (fault, matches!(at, At::Received(_))),
                (Fault::Cut, true),
                "{label}: stopped by {:?}",
                status.error
            );
            restarts += 1;
            replicator.start(false);
        } else if status.activity == ActivityLevel::Idle && identical(&local, &remote) {
            break;
        }
        if tokio::time::Instant::now() >= deadline {
            assert_identical(&local, &remote, &format!("{label} ({:?})", status.activity));
            panic!("{label}: identical but never idle ({:?})", status.activity);
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    replicator.stop();
    let status = tokio::time::timeout(STEP, replicator.wait_until_stopped())
        .await
        .unwrap();
    assert!(status.error.is_none(), "{label}: {:?}", status.error);
    assert_eq!(faulty.injected(), 1, "{label}: the fault was injected");
    assert_identical(&local, &remote, &label);
    assert_eq!(state(&local).len(), 130, "{label}");
    restarts
}

async fn push_and_pull_survives(fault: Fault) {
    let started = Instant::now();
    for (at, via) in placements() {
        push_and_pull_through(fault, at, via).await;
    }
    eprintln!(
        "push-and-pull with {fault:?} at 6 places: {:?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn continuous_push_and_pull_converges_after_a_dropped_connection() {
    push_and_pull_survives(Fault::Drop).await;
}

#[tokio::test]
async fn continuous_push_and_pull_converges_after_a_delayed_message() {
    push_and_pull_survives(DELAY).await;
}

#[tokio::test]
async fn continuous_push_and_pull_converges_after_a_reset() {
    push_and_pull_survives(Fault::Reset).await;
}

#[tokio::test]
async fn continuous_push_and_pull_converges_after_a_cut_frame() {
    push_and_pull_survives(Fault::Cut).await;
}

/// The peer stored a pushed revision but the connection dropped before its reply arrived,
/// so no remote-ancestor mark was written; the document is edited before the next run.
/// The next proposal (with no ancestor) is refused with `{"status":409,"rev":<the pushed
/// one>}`, an ancestor of ours: it is proposed again with that ancestor, and accepted.
#[tokio::test]
async fn a_push_whose_reply_was_lost_is_proposed_again_with_the_remote_revision() {
    let local = TestDb::new();
    let remote = TestDb::new();
    let first = local.save("doc", json!({"v": 1}));
    let server = Server::start(&remote, Via::Pipe).await;
    // Received by a pusher: getCheckpoint's reply, proposeChanges' reply, the rev's reply.
    let transport = Arc::new(FaultyTransport::new(
        server.transport.clone(),
        1,
        At::Received(3),
        Fault::Drop,
    ));
    let mut cfg = config(ReplicatorType::Push, false);
    cfg.max_attempts = 1;
    let replicator = Replicator::new(local.store.clone(), transport.clone(), cfg);
    replicator.start(false);
    let status = tokio::time::timeout(STEP, replicator.wait_until_stopped())
        .await
        .unwrap();
    assert_eq!(
        status.error.map(|e| e.domain_and_code().1),
        Some(1006),
        "the reply was lost"
    );
    assert_eq!(
        state(&remote)["doc"].0,
        first.to_string(),
        "the peer stored it"
    );

    local.save("doc", json!({"v": 2}));
    let recorder = Recorder::attach(&replicator);
    replicator.start(false);
    let status = tokio::time::timeout(STEP, replicator.wait_until_stopped())
        .await
        .unwrap();
    assert!(status.error.is_none(), "{:?}", status.error);
    let events = recorder.documents.lock().unwrap().clone();
    assert!(
        events.iter().all(|d| d.error.is_none()),
        "no conflict: {events:?}"
    );
    assert_identical(&local, &remote, "after the retried proposal");
    assert_eq!(status.progress.completed, status.progress.total);
}

/// A session that fails after some pushed revisions were acknowledged still records them as
/// remote ancestors: the next proposal names them, and they survive pruning. (Without the
/// marks, a document edited more than 20 times before its next push could no longer name
/// what the peer has, and its push would stay a conflict.)
#[tokio::test]
async fn acknowledged_pushes_are_recorded_even_when_the_session_fails() {
    let local = TestDb::new();
    let remote = TestDb::new();
    let a = local.save("a", json!({"v": 1}));
    let b = local.save("b", json!({"v": 1}));
    let server = Server::start(&remote, Via::Pipe).await;
    // Received by the pusher: getCheckpoint's reply, proposeChanges' reply, then the
    // replies to the `rev`s of a and b; the last one is lost with the connection.
    let transport = Arc::new(FaultyTransport::new(
        server.transport.clone(),
        1,
        At::Received(4),
        Fault::Drop,
    ));
    let mut cfg = config(ReplicatorType::Push, false);
    cfg.max_attempts = 1;
    let replicator = Replicator::new(local.store.clone(), transport.clone(), cfg);
    replicator.start(false);
    let status = tokio::time::timeout(STEP, replicator.wait_until_stopped())
        .await
        .unwrap();
    assert!(status.error.is_some(), "the session failed");
    assert_eq!(transport.injected(), 1);
    let marks = |id: &str| -> Vec<String> {
        local
            .get(id)
            .unwrap()
            .tree
            .remote_ancestors()
            .map(|(_, rev)| rev.to_string())
            .collect()
    };
    assert_eq!(marks("a"), [a.to_string()], "a's reply arrived: recorded");
    assert!(marks("b").is_empty(), "b's reply was lost: not recorded");
    assert_eq!(state(&remote)["b"].0, b.to_string(), "the peer stored b");
}

/// A document edited 30 times since the revision the peer has: its `rev` carries the whole
/// history down to that revision, beyond the peer's `maxHistory` (20), so that the peer can
/// attach it; cut at 20, it was refused as a conflict (and never pushed).
#[tokio::test]
async fn a_push_reaches_the_remote_revision_beyond_the_peers_max_history() {
    let local = TestDb::new();
    let remote = TestDb::new();
    local.save("doc", json!({"v": 0}));
    let server = Server::start(&remote, Via::Pipe).await;
    let replicator = Replicator::new(
        local.store.clone(),
        server.transport.clone(),
        config(ReplicatorType::Push, false),
    );
    replicator.start(false);
    let status = tokio::time::timeout(STEP, replicator.wait_until_stopped())
        .await
        .unwrap();
    assert!(status.error.is_none(), "{:?}", status.error);
    for v in 1..=30 {
        local.save("doc", json!({ "v": v }));
    }
    let recorder = Recorder::attach(&replicator);
    replicator.start(false);
    let status = tokio::time::timeout(STEP, replicator.wait_until_stopped())
        .await
        .unwrap();
    assert!(status.error.is_none(), "{:?}", status.error);
    let events = recorder.documents.lock().unwrap().clone();
    assert!(
        !events.is_empty() && events.iter().all(|d| d.error.is_none()),
        "pushed without a conflict: {events:?}"
    );
    assert_identical(&local, &remote, "after 30 edits");
}

// ----- retries on a paused clock -----

fn http(status: u16) -> TransportError {
    TransportError::HttpStatus {
        status,
        reason: format!("refused by the test with {status}"),
    }
}

fn abnormal() -> TransportError {
    TransportError::Closed {
        code: 1006,
        reason: "dropped during the handshake".into(),
    }
}

/// Makes a fresh transport error (they are not `Clone`).
type MakeError = fn() -> TransportError;

/// The activity levels a one-shot run shows when each of its `attempts` fails transiently.
fn offline_levels(attempts: usize) -> Vec<ActivityLevel> {
    let mut levels = Vec::new();
    for _ in 1..attempts {
        levels.extend([ActivityLevel::Connecting, ActivityLevel::Offline]);
    }
    levels.extend([ActivityLevel::Connecting, ActivityLevel::Stopped]);
    levels
}

#[tokio::test(start_paused = true)]
async fn transient_connect_errors_back_off_then_a_one_shot_run_gives_up() {
    // A refused connection: `resilience::transient_failures_retry_with_backoff_then_stop`.
    let cases: [(MakeError, (&str, i32)); 2] = [
        (|| http(503), ("WebSocket", 503)),
        (abnormal, ("WebSocket", 1006)),
    ];
    for (error, expected) in cases {
        let local = TestDb::new();
        let remote = TestDb::new();
        let server = Server::start(&remote, Via::Pipe).await;
        let transport = Arc::new(
            FaultyTransport::passthrough(server.transport).refusing(move |_| Some(error())),
        );
        let mut cfg = config(ReplicatorType::Pull, false);
        cfg.max_attempts = 5;
        cfg.max_attempt_wait = Duration::from_secs(6);
        let replicator = Replicator::new(local.store.clone(), transport.clone(), cfg);
        let recorder = Recorder::attach(&replicator);
        replicator.start(false);
        let status = replicator.wait_until_stopped().await;
        assert_eq!(transport.attempts(), 5, "{expected:?}: 4 retries");
        assert_eq!(transport.waits_secs(), [2, 4, 6, 6], "{expected:?}");
        let error = status.error.expect("stopped with the error");
        assert_eq!(error.domain_and_code(), expected);
        assert_eq!(recorder.levels(), offline_levels(5), "{expected:?}");
        for s in recorder.statuses.lock().unwrap().iter() {
            if s.activity == ActivityLevel::Offline {
                let e = s.error.as_ref().expect("offline with the error");
                assert_eq!(e.domain_and_code(), expected);
            }
        }
    }
}

#[tokio::test(start_paused = true)]
async fn a_one_shot_run_makes_ten_attempts_by_default_waiting_up_to_300_s() {
    let local = TestDb::new();
    let remote = TestDb::new();
    let server = Server::start(&remote, Via::Pipe).await;
    let transport =
        Arc::new(FaultyTransport::passthrough(server.transport).refusing(|_| Some(http(503))));
    let replicator = Replicator::new(
        local.store.clone(),
        transport.clone(),
        config(ReplicatorType::Pull, false),
    );
    replicator.start(false);
    let status = replicator.wait_until_stopped().await;
    assert_eq!(transport.attempts(), 10, "9 retries");
    assert_eq!(transport.waits_secs(), [2, 4, 8, 16, 32, 64, 128, 256, 300]);
    assert_eq!(status.error.map(|e| e.domain_and_code().1), Some(503));
}

#[tokio::test(start_paused = true)]
async fn a_continuous_replicator_retries_without_limit() {
    let local = TestDb::new();
    let remote = TestDb::new();
    remote.save_many("doc", 20);
    let server = Server::start(&remote, Via::Pipe).await;
    // Refused 14 times (past the one-shot limit), then the server is back.
    let transport = Arc::new(
        FaultyTransport::passthrough(server.transport)
            .refusing(|attempt| (attempt <= 14).then(|| http(503))),
    );
    let mut cfg = config(ReplicatorType::Pull, true);
    cfg.max_attempt_wait = Duration::from_secs(60);
    let replicator = Replicator::new(local.store.clone(), transport.clone(), cfg);
    let recorder = Recorder::attach(&replicator);
    replicator.start(false);
    // About ten virtual minutes of backoff: wait on the paused clock.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(3600);
    while replicator.status().activity != ActivityLevel::Idle {
        assert!(tokio::time::Instant::now() < deadline, "never idle");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(transport.attempts(), 15);
    assert_eq!(
        transport.waits_secs(),
        [2, 4, 8, 16, 32, 60, 60, 60, 60, 60, 60, 60, 60, 60]
    );
    assert_eq!(state(&local), state(&remote));
    let levels = recorder.levels();
    assert_eq!(
        levels[levels.len() - 3..],
        [
            ActivityLevel::Connecting,
            ActivityLevel::Busy,
            ActivityLevel::Idle
        ]
    );
    assert_eq!(
        levels
            .iter()
            .filter(|l| **l == ActivityLevel::Offline)
            .count(),
        14
    );
    replicator.stop();
    assert!(replicator.wait_until_stopped().await.error.is_none());
}

#[tokio::test]
async fn permanent_connect_errors_stop_at_once() {
    for status in [401, 403, 404, 500] {
        for continuous in [false, true] {
            let local = TestDb::new();
            let remote = TestDb::new();
            let server = Server::start(&remote, Via::Pipe).await;
            let transport = Arc::new(
                FaultyTransport::passthrough(server.transport)
                    .refusing(move |_| Some(http(status))),
            );
            let replicator = Replicator::new(
                local.store.clone(),
                transport.clone(),
                config(ReplicatorType::PushAndPull, continuous),
            );
            let recorder = Recorder::attach(&replicator);
            replicator.start(false);
            let stopped = tokio::time::timeout(STEP, replicator.wait_until_stopped())
                .await
                .unwrap();
            let error = stopped.error.expect("stopped with the error");
            assert_eq!(error.domain_and_code(), ("WebSocket", i32::from(status)));
            assert_eq!(transport.attempts(), 1, "{status}, continuous {continuous}");
            assert_eq!(
                recorder.levels(),
                [ActivityLevel::Connecting, ActivityLevel::Stopped],
                "{status}, continuous {continuous}"
            );
        }
    }
}

/// The same refusals from a real listener: 401 (login required), 404 (no such database),
/// 500 (no common subprotocol), for a continuous replicator that would retry anything
/// transient.
#[tokio::test]
async fn a_real_listener_refusing_the_upgrade_stops_a_continuous_replicator() {
    let addr = "127.0.0.1:0".parse().unwrap();
    let cases = [
        (
            ListenerConfig::new(addr, ["db"])
                .with_authenticator(|_: &AuthRequest<'_>| AuthDecision::login_required()),
            "db",
            401,
        ),
        (ListenerConfig::new(addr, ["db"]), "other", 404),
        (
            ListenerConfig::new(addr, ["db"]).with_subprotocols(["BLIP_3+CBMobile_9"]),
            "db",
            500,
        ),
    ];
    for (listener_config, database, status) in cases {
        let listener = Listener::bind(listener_config).await.unwrap();
        let endpoint = UrlEndpoint::parse(&listener.url(database)).unwrap();
        let local = TestDb::new();
        let transport = Arc::new(FaultyTransport::passthrough(Arc::new(endpoint)));
        let replicator = Replicator::new(
            local.store.clone(),
            transport.clone(),
            config(ReplicatorType::Pull, true),
        );
        replicator.start(false);
        let stopped = tokio::time::timeout(STEP, replicator.wait_until_stopped())
            .await
            .unwrap();
        let error = stopped.error.expect("stopped with the error");
        assert_eq!(error.domain_and_code(), ("WebSocket", status));
        assert_eq!(transport.attempts(), 1, "{status}: not retried");
    }
}

#[tokio::test(start_paused = true)]
async fn going_offline_and_coming_back_shows_in_the_status_sequence() {
    // One-shot: the connection drops mid-pull; the replicator reconnects after 2 s.
    let local = TestDb::new();
    let remote = TestDb::new();
    remote.save_many("doc", 300);
    let server = Server::start(&remote, Via::Pipe).await;
    let transport = Arc::new(FaultyTransport::new(
        server.transport.clone(),
        1,
        At::Received(10),
        Fault::Drop,
    ));
    let replicator = Replicator::new(
        local.store.clone(),
        transport.clone(),
        config(ReplicatorType::Pull, false),
    );
    let recorder = Recorder::attach(&replicator);
    replicator.start(false);
    let status = replicator.wait_until_stopped().await;
    assert!(status.error.is_none(), "{:?}", status.error);
    use ActivityLevel::*;
    assert_eq!(
        recorder.levels(),
        [Connecting, Busy, Offline, Connecting, Busy, Stopped]
    );
    assert_eq!(transport.waits_secs(), [2]);
    let offline = recorder
        .statuses
        .lock()
        .unwrap()
        .iter()
        .find(|s| s.activity == Offline)
        .and_then(|s| s.error.clone())
        .expect("offline with the error");
    assert_eq!(offline.domain_and_code(), ("WebSocket", 1006));
    assert_eq!(state(&local), state(&remote));

    // Continuous: offline, then back to busy and idle by itself.
    let local = TestDb::new();
    let transport = Arc::new(FaultyTransport::new(
        server.transport.clone(),
        1,
        At::Sent(5),
        Fault::Reset,
    ));
    let replicator = Replicator::new(
        local.store.clone(),
        transport.clone(),
        config(ReplicatorType::PushAndPull, true),
    );
    let recorder = Recorder::attach(&replicator);
    replicator.start(false);
    eventually("idle", || {
        replicator.status().activity == Idle && state(&local) == state(&remote)
    })
    .await;
    assert_eq!(
        recorder.levels(),
        [Connecting, Busy, Offline, Connecting, Busy, Idle]
    );
    replicator.stop();
    assert!(replicator.wait_until_stopped().await.error.is_none());
}
