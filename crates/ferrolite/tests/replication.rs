//! Replication through the facade, end to end: on-disk databases in temporary directories,
//! over each endpoint kind — a real WebSocket on 127.0.0.1 through a `UrlEndpointListener`,
//! the in-process database endpoint, and message endpoints (message stream and byte
//! stream) served by a `MessageEndpointListener`.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::future::pending;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use ferrolite::transport::{
    async_trait, byte_stream, message_stream_default, ByteStreamConfig, Connection,
    MessageStreamHandle, Outgoing, Transport, TransportError,
};
use ferrolite::{
    ActivityLevel, Authenticator, Database, DatabaseConfiguration, Endpoint, ErrorDomain,
    MessageEndpointListener, MutableDocument, Replicator, ReplicatorConfiguration,
    ReplicatorStatus, ReplicatorType, SyncOutcome, UrlEndpointListener,
    UrlEndpointListenerConfiguration,
};

/// Longest wait for a replication that should finish quickly.
const WAIT: Duration = Duration::from_secs(10);

// ---------------------------------------------------------------------------------------
// Support
// ---------------------------------------------------------------------------------------

/// An on-disk database in its own temporary directory.
struct Peer {
    db: Database,
    _dir: tempfile::TempDir,
}

fn peer(name: &str) -> Peer {
    let dir = tempfile::tempdir().unwrap();
    let db = Database::open(name, &DatabaseConfiguration::new(dir.path())).unwrap();
    Peer { db, _dir: dir }
}

fn save(db: &Database, id: &str, name: &str) {
    let mut doc = match db.document(id).unwrap() {
        Some(existing) => existing.to_mutable(),
        None => MutableDocument::with_id(id),
    };
    doc.set("type", "user").set("name", name);
    db.save(&mut doc).unwrap();
}

fn name_of(db: &Database, id: &str) -> Option<String> {
    db.document(id)
        .unwrap()
        .and_then(|d| d.get("name").and_then(|v| v.as_str()).map(str::to_owned))
}

/// Polls until `check` holds, for at most `WAIT`.
fn eventually(what: &str, check: impl Fn() -> bool) {
    let start = Instant::now();
    while !check() {
        assert!(start.elapsed() < WAIT, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The ways a replicator reaches the "server" database.
#[derive(Debug, Clone, Copy)]
enum Kind {
    /// WebSocket on 127.0.0.1 through a `UrlEndpointListener`.
    Url,
    /// `Endpoint::database`: an in-process pipe.
    Database,
    /// `Endpoint::message` over two message-stream handles wired to each other.
    MessageStream,
    /// `Endpoint::message` over a WebSocket-framed byte stream on `tokio::io::duplex`.
    ByteStream,
}

const KINDS: [Kind; 4] = [
    Kind::Url,
    Kind::Database,
    Kind::MessageStream,
    Kind::ByteStream,
];

/// The target endpoint for `server`, and what must live as long as it is used.
struct Remote {
    endpoint: Endpoint,
    listener: Option<UrlEndpointListener>,
}

fn remote(kind: Kind, server: &Database) -> Remote {
    match kind {
        Kind::Url => {
            let listener = UrlEndpointListener::start(
                UrlEndpointListenerConfiguration::new(vec![server.clone()])
                    .network_interface("127.0.0.1"),
            )
            .unwrap();
            Remote {
                endpoint: Endpoint::url(&listener.url(server.name())).unwrap(),
                listener: Some(listener),
            }
        }
        Kind::Database => Remote {
            endpoint: Endpoint::database(server),
            listener: None,
        },
        Kind::MessageStream => Remote {
            endpoint: Endpoint::message(
                "message-stream-peer",
                Arc::new(WiredMessageStreams(MessageEndpointListener::new(server))),
            ),
            listener: None,
        },
        Kind::ByteStream => Remote {
            endpoint: Endpoint::message(
                "byte-stream-peer",
                Arc::new(DuplexByteStream(MessageEndpointListener::new(server))),
            ),
            listener: None,
        },
    }
}

/// A message-stream transport: each connection is a pair of `message_stream`s whose
/// application handles are wired to each other, the far one served by a listener.
struct WiredMessageStreams(MessageEndpointListener);

#[async_trait]
impl Transport for WiredMessageStreams {
    async fn connect(&self) -> Result<Connection, TransportError> {
        let (ours, our_handle) = message_stream_default();
        let (theirs, their_handle) = message_stream_default();
        wire(our_handle, their_handle);
        self.0
            .accept(theirs)
            .map_err(|e| TransportError::InvalidConfig(e.to_string()))?;
        Ok(ours)
    }
}

/// Moves what each side sends to the other side, close included.
fn wire(a: MessageStreamHandle, b: MessageStreamHandle) {
    let (a_in, mut a_out) = a.split();
    let (b_in, mut b_out) = b.split();
    tokio::spawn(async move {
        while let Some(item) = a_out.next().await {
            match item {
                Outgoing::Message(m) => {
                    if b_in.deliver(m).await.is_err() {
                        break;
                    }
                }
                Outgoing::Close(info) => {
                    let _ = b_in.deliver_close(info.code, &info.reason).await;
                    break;
                }
            }
        }
    });
    tokio::spawn(async move {
        while let Some(item) = b_out.next().await {
            match item {
                Outgoing::Message(m) => {
                    if a_in.deliver(m).await.is_err() {
                        break;
                    }
                }
                Outgoing::Close(info) => {
                    let _ = a_in.deliver_close(info.code, &info.reason).await;
                    break;
                }
            }
        }
    });
}

/// A byte-stream transport: WebSocket framing over an in-memory duplex, the passive end
/// served by a listener.
struct DuplexByteStream(MessageEndpointListener);

#[async_trait]
impl Transport for DuplexByteStream {
    async fn connect(&self) -> Result<Connection, TransportError> {
        let (ours, theirs) = tokio::io::duplex(64 * 1024);
        let passive = byte_stream(theirs, ByteStreamConfig::passive()).await;
        self.0
            .accept(passive)
            .map_err(|e| TransportError::InvalidConfig(e.to_string()))?;
        Ok(byte_stream(ours, ByteStreamConfig::active()).await)
    }
}

/// Runs a one-shot replicator to the end and returns its final status.
fn run_once(config: ReplicatorConfiguration) -> ReplicatorStatus {
    let replicator = Replicator::new(config).unwrap();
    replicator.start();
    replicator
        .wait_until_stopped(WAIT)
        .expect("a one-shot replicator stops by itself")
}

/// Activity levels as reported, without consecutive repeats.
fn activities(statuses: &Mutex<Vec<ActivityLevel>>) -> Vec<ActivityLevel> {
    let mut levels = statuses.lock().unwrap().clone();
    levels.dedup();
    levels
}

fn record_activities(replicator: &Replicator) -> Arc<Mutex<Vec<ActivityLevel>>> {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let sink = seen.clone();
    let _token = replicator.add_change_listener(move |status| {
        sink.lock().unwrap().push(status.activity);
    });
    seen
}

// ---------------------------------------------------------------------------------------
// One-shot push, pull, push-and-pull over every endpoint kind
// ---------------------------------------------------------------------------------------

/// One one-shot replication of `replicator_type` over `kind`: the client holds
/// `client-doc`, the server `server-doc`; checks who has what afterwards.
fn one_shot(kind: Kind, replicator_type: ReplicatorType) {
    let client = peer("client");
    let server = peer("server");
    save(&client.db, "client-doc", "from the client");
    save(&server.db, "server-doc", "from the server");
    let remote = remote(kind, &server.db);

    let config = ReplicatorConfiguration::new(&client.db, remote.endpoint.clone())
        .replicator_type(replicator_type);
    let status = run_once(config);
    assert_eq!(status.activity, ActivityLevel::Stopped, "{kind:?}");
    assert!(status.error.is_none(), "{kind:?}: {:?}", status.error);

    let pushed = name_of(&server.db, "client-doc");
    let pulled = name_of(&client.db, "server-doc");
    match replicator_type {
        ReplicatorType::Push => {
            assert_eq!(pushed.as_deref(), Some("from the client"), "{kind:?}");
            assert_eq!(pulled, None, "{kind:?}");
        }
        ReplicatorType::Pull => {
            assert_eq!(pushed, None, "{kind:?}");
            assert_eq!(pulled.as_deref(), Some("from the server"), "{kind:?}");
        }
        ReplicatorType::PushAndPull => {
            assert_eq!(pushed.as_deref(), Some("from the client"), "{kind:?}");
            assert_eq!(pulled.as_deref(), Some("from the server"), "{kind:?}");
        }
    }
    assert_eq!(
        client
            .db
            .document("server-doc")
            .unwrap()
            .map(|d| d.revision_id().clone()),
        if replicator_type.pulls() {
            server
                .db
                .document("server-doc")
                .unwrap()
                .map(|d| d.revision_id().clone())
        } else {
            None
        },
        "{kind:?}: pulled revisions keep their IDs"
    );
    if let Some(listener) = remote.listener {
        listener.stop();
    }
}

#[test]
fn one_shot_push_over_every_endpoint() {
    for kind in KINDS {
        one_shot(kind, ReplicatorType::Push);
    }
}

#[test]
fn one_shot_pull_over_every_endpoint() {
    for kind in KINDS {
        one_shot(kind, ReplicatorType::Pull);
    }
}

#[test]
fn one_shot_push_and_pull_over_every_endpoint() {
    for kind in KINDS {
        one_shot(kind, ReplicatorType::PushAndPull);
    }
}

// ---------------------------------------------------------------------------------------
// Continuous
// ---------------------------------------------------------------------------------------

#[test]
fn continuous_replication_carries_saves_both_ways() {
    for kind in [Kind::Url, Kind::Database] {
        let client = peer("client");
        let server = peer("server");
        let remote = remote(kind, &server.db);
        let replicator = Replicator::new(
            ReplicatorConfiguration::new(&client.db, remote.endpoint.clone()).continuous(true),
        )
        .unwrap();
        replicator.start();
        eventually("idle", || {
            replicator.status().activity == ActivityLevel::Idle
        });

        save(&client.db, "from-client", "saved on the client");
        eventually("the client's save on the server", || {
            name_of(&server.db, "from-client").is_some()
        });
        save(&server.db, "from-server", "saved on the server");
        eventually("the server's save on the client", || {
            name_of(&client.db, "from-server").is_some()
        });
        save(&server.db, "from-client", "edited on the server");
        eventually("the server's edit on the client", || {
            name_of(&client.db, "from-client").as_deref() == Some("edited on the server")
        });

        replicator.stop();
        let status = replicator.wait_until_stopped(WAIT).unwrap();
        assert!(status.error.is_none(), "{kind:?}: {:?}", status.error);
    }
}

#[test]
fn listener_stop_closes_connections_with_going_away() {
    let client = peer("client");
    let server = peer("server");
    let remote = remote(Kind::Url, &server.db);
    let replicator = Replicator::new(
        ReplicatorConfiguration::new(&client.db, remote.endpoint.clone()).continuous(true),
    )
    .unwrap();
    replicator.start();
    eventually("idle", || {
        replicator.status().activity == ActivityLevel::Idle
    });
    remote.listener.as_ref().unwrap().stop();
    let status = replicator.wait_until_stopped(WAIT).unwrap();
    let error = ferrolite::Error::from(status.error.expect("stopped by the peer"));
    assert_eq!(
        (error.domain(), error.code()),
        (ErrorDomain::WebSocket, 1001)
    );
}

// ---------------------------------------------------------------------------------------
// Listeners
// ---------------------------------------------------------------------------------------

#[test]
fn pulled_documents_reach_the_database_change_listener() {
    let client = peer("client");
    let server = peer("server");
    let ids: Vec<String> = (0..5).map(|i| format!("user::{i}")).collect();
    for id in &ids {
        save(&server.db, id, "pulled");
    }
    let remote = remote(Kind::Url, &server.db);

    let heard = Arc::new(Mutex::new(Vec::new()));
    let sink = heard.clone();
    let token = client.db.add_change_listener(move |change| {
        sink.lock()
            .unwrap()
            .extend(change.document_ids.iter().cloned());
    });
    let status = run_once(
        ReplicatorConfiguration::new(&client.db, remote.endpoint.clone())
            .replicator_type(ReplicatorType::Pull),
    );
    assert!(status.error.is_none(), "{:?}", status.error);
    client.db.remove_change_listener(token);

    let mut heard = heard.lock().unwrap().clone();
    heard.sort();
    heard.dedup();
    assert_eq!(heard, ids);
}

#[test]
fn one_shot_status_goes_connecting_busy_stopped() {
    let client = peer("client");
    let server = peer("server");
    save(&server.db, "doc", "x");
    let remote = remote(Kind::Url, &server.db);
    let replicator = Replicator::new(ReplicatorConfiguration::new(
        &client.db,
        remote.endpoint.clone(),
    ))
    .unwrap();
    let seen = record_activities(&replicator);
    let pushed_or_pulled = Arc::new(Mutex::new(Vec::new()));
    let sink = pushed_or_pulled.clone();
    let _documents = replicator.add_document_replication_listener(move |docs| {
        sink.lock()
            .unwrap()
            .extend(docs.iter().map(|d| (d.id.clone(), d.error.is_none())));
    });
    replicator.start();
    let status = replicator.wait_until_stopped(WAIT).unwrap();
    assert!(status.error.is_none(), "{:?}", status.error);
    assert_eq!(
        activities(&seen),
        [
            ActivityLevel::Connecting,
            ActivityLevel::Busy,
            ActivityLevel::Stopped
        ]
    );
    assert_eq!(
        *pushed_or_pulled.lock().unwrap(),
        [("doc".to_owned(), true)]
    );
}

#[test]
fn removed_replicator_listener_hears_nothing() {
    let client = peer("client");
    let server = peer("server");
    let replicator = Replicator::new(ReplicatorConfiguration::new(
        &client.db,
        Endpoint::database(&server.db),
    ))
    .unwrap();
    let calls = Arc::new(Mutex::new(0));
    let sink = calls.clone();
    let token = replicator.add_change_listener(move |_| *sink.lock().unwrap() += 1);
    replicator.remove_change_listener(token);
    replicator.start();
    replicator.wait_until_stopped(WAIT).unwrap();
    assert_eq!(*calls.lock().unwrap(), 0);
}

// ---------------------------------------------------------------------------------------
// Authentication and TLS
// ---------------------------------------------------------------------------------------

#[test]
fn wrong_password_stops_with_401_without_retrying() {
    let client = peer("client");
    let server = peer("server");
    save(&server.db, "secret", "x");
    let listener = UrlEndpointListener::start(
        UrlEndpointListenerConfiguration::new(vec![server.db.clone()])
            .network_interface("127.0.0.1")
            .authenticator(|user, password| user == "demo" && password == "s3cret"),
    )
    .unwrap();
    let target = || Endpoint::url(&listener.url("server")).unwrap();

    let replicator = Replicator::new(
        ReplicatorConfiguration::new(&client.db, target())
            .authenticator(Authenticator::basic("demo", "wrong")),
    )
    .unwrap();
    let seen = record_activities(&replicator);
    replicator.start();
    let status = replicator.wait_until_stopped(WAIT).unwrap();
    let error = status.error.expect("refused");
    assert_eq!(error.domain_and_code(), ("WebSocket", 401));
    assert!(!error.is_transient());
    let facade = ferrolite::Error::from(error);
    assert_eq!(
        (facade.domain(), facade.code()),
        (ErrorDomain::WebSocket, 401)
    );
    assert_eq!(
        activities(&seen),
        [ActivityLevel::Connecting, ActivityLevel::Stopped],
        "no retry"
    );
    assert!(client.db.document("secret").unwrap().is_none());

    let status = run_once(
        ReplicatorConfiguration::new(&client.db, target())
            .authenticator(Authenticator::basic("demo", "s3cret")),
    );
    assert!(status.error.is_none(), "{:?}", status.error);
    assert!(client.db.document("secret").unwrap().is_some());
}

#[test]
fn tls_listener_with_pinned_and_self_signed_trust() {
    let client = peer("client");
    let server = peer("server");
    save(&server.db, "doc", "over TLS");
    let listener = UrlEndpointListener::start(
        UrlEndpointListenerConfiguration::new(vec![server.db.clone()])
            .network_interface("127.0.0.1")
            .disable_tls(false),
    )
    .unwrap();
    let url = listener.url("server");
    assert!(url.starts_with("wss://127.0.0.1:"), "{url}");
    let certificate = listener.tls_certificate().expect("TLS is on");
    let pull = || {
        ReplicatorConfiguration::new(&client.db, Endpoint::url(&url).unwrap())
            .replicator_type(ReplicatorType::Pull)
    };

    let status = run_once(pull().pinned_server_certificate(certificate));
    assert!(status.error.is_none(), "{:?}", status.error);
    assert!(client.db.document("doc").unwrap().is_some());

    let status = run_once(pull().accept_only_self_signed_server_certificate(true));
    assert!(status.error.is_none(), "{:?}", status.error);

    // Platform roots do not know a generated certificate: a TLS error, not retried.
    let status = run_once(pull());
    let error = status.error.expect("untrusted certificate");
    assert_eq!(error.domain_and_code().0, "Network");
    assert!(!error.is_transient());
}

#[test]
fn dropping_the_listener_stops_it() {
    let phone = peer("phone");
    let server = peer("server");
    let listener = UrlEndpointListener::start(
        UrlEndpointListenerConfiguration::new(vec![server.db.clone()])
            .network_interface("127.0.0.1"),
    )
    .unwrap();
    let config =
        ReplicatorConfiguration::new(&phone.db, Endpoint::url(&listener.url("server")).unwrap())
            .max_attempts(1);
    assert!(matches!(
        ferrolite::sync_once(config.clone(), WAIT),
        SyncOutcome::NoData
    ));
    drop(listener);
    eventually("the dropped listener to refuse connections", || {
        matches!(
            ferrolite::sync_once(config.clone(), WAIT),
            SyncOutcome::Failed(_)
        )
    });
}

#[test]
fn read_only_listener_refuses_pushes() {
    let client = peer("client");
    let server = peer("server");
    save(&client.db, "pushed", "x");
    save(&server.db, "pulled", "y");
    let listener = UrlEndpointListener::start(
        UrlEndpointListenerConfiguration::new(vec![server.db.clone()])
            .network_interface("127.0.0.1")
            .read_only(true),
    )
    .unwrap();
    let status = run_once(ReplicatorConfiguration::new(
        &client.db,
        Endpoint::url(&listener.url("server")).unwrap(),
    ));
    // The pull went through; the push was answered 403, which stops the replicator.
    let error = status.error.expect("the push is refused");
    assert_eq!(error.domain_and_code(), ("WebSocket", 403), "{error}");
    assert!(client.db.document("pulled").unwrap().is_some());
    assert!(server.db.document("pushed").unwrap().is_none());
}

// ---------------------------------------------------------------------------------------
// sync_once: the background refresh
// ---------------------------------------------------------------------------------------

#[test]
fn sync_once_reports_new_data_no_data_and_failure_before_the_deadline() {
    let phone = peer("phone");
    let server = peer("userprofile");
    save(&server.db, "user::demo", "Demo User");
    let listener = UrlEndpointListener::start(
        UrlEndpointListenerConfiguration::new(vec![server.db.clone()])
            .network_interface("127.0.0.1"),
    )
    .unwrap();
    let config = ReplicatorConfiguration::new(
        &phone.db,
        Endpoint::url(&listener.url("userprofile")).unwrap(),
    )
    .replicator_type(ReplicatorType::Pull)
    .max_attempts(1);
    let deadline = Duration::from_secs(5);
    let refresh = |config: &ReplicatorConfiguration| {
        let start = Instant::now();
        let outcome = ferrolite::sync_once(config.clone(), deadline);
        assert!(start.elapsed() < deadline, "{:?}", start.elapsed());
        outcome
    };

    match refresh(&config) {
        SyncOutcome::NewData {
            count,
            document_ids,
        } => assert_eq!((count, document_ids), (1, vec!["user::demo".to_owned()])),
        other => panic!("expected new data, got {other:?}"),
    }
    assert!(matches!(refresh(&config), SyncOutcome::NoData));

    save(&server.db, "user::demo", "Demo User, edited on the server");
    match refresh(&config) {
        SyncOutcome::NewData { document_ids, .. } => assert_eq!(document_ids, ["user::demo"]),
        other => panic!("expected new data, got {other:?}"),
    }
    assert_eq!(
        name_of(&phone.db, "user::demo").as_deref(),
        Some("Demo User, edited on the server")
    );
    assert!(matches!(refresh(&config), SyncOutcome::NoData));

    // The same through a long-lived replicator.
    let replicator = Replicator::new(config.clone()).unwrap();
    assert!(matches!(
        replicator.sync_once(deadline),
        SyncOutcome::NoData
    ));

    listener.stop();
    match refresh(&config) {
        SyncOutcome::Failed(error) => {
            assert!(error.is_transient(), "{error}");
            let facade = ferrolite::Error::from(error);
            assert_eq!(facade.domain(), ErrorDomain::Posix, "{facade}");
        }
        other => panic!("expected a failure, got {other:?}"),
    }
}

#[test]
fn sync_once_returns_before_the_deadline_when_the_server_is_silent() {
    let phone = peer("phone");
    // Accepts TCP connections (the kernel does) but never answers the upgrade.
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("ws://{}/userprofile", silent.local_addr().unwrap());
    let config = ReplicatorConfiguration::new(&phone.db, Endpoint::url(&url).unwrap())
        .replicator_type(ReplicatorType::Pull);
    let deadline = Duration::from_millis(1500);
    let start = Instant::now();
    let outcome = ferrolite::sync_once(config, deadline);
    let elapsed = start.elapsed();
    assert!(elapsed < deadline, "{elapsed:?}");
    assert!(elapsed > deadline / 2, "{elapsed:?}");
    match outcome {
        SyncOutcome::Failed(error) => {
            assert_eq!(error.domain_and_code(), ("ferrolite", 1001), "{error}");
            assert!(ferrolite::Error::from(error).is(ferrolite::ErrorCode::DeadlineExceeded));
        }
        other => panic!("expected a failure, got {other:?}"),
    }
}

/// A transport whose connections never open.
struct NeverConnects;

#[async_trait]
impl Transport for NeverConnects {
    async fn connect(&self) -> Result<Connection, TransportError> {
        pending().await
    }
}

#[test]
fn sync_once_of_a_running_replicator_fails_busy() {
    let phone = peer("phone");
    let replicator = Replicator::new(ReplicatorConfiguration::new(
        &phone.db,
        Endpoint::message("nowhere", Arc::new(NeverConnects)),
    ))
    .unwrap();
    replicator.start();
    match replicator.sync_once(Duration::from_secs(1)) {
        SyncOutcome::Failed(error) => {
            assert!(ferrolite::Error::from(error).is(ferrolite::ErrorCode::Busy));
        }
        other => panic!("expected busy, got {other:?}"),
    }
    replicator.stop();
    let status = replicator.wait_until_stopped(WAIT).unwrap();
    assert_eq!(status.activity, ActivityLevel::Stopped);
}

// ---------------------------------------------------------------------------------------
// Calling from inside the application's own tokio runtime
// ---------------------------------------------------------------------------------------

fn pull_from(phone: &Database, server: &Database) -> ReplicatorConfiguration {
    ReplicatorConfiguration::new(phone, Endpoint::database(server))
        .replicator_type(ReplicatorType::Pull)
}

#[tokio::test(flavor = "current_thread")]
async fn blocking_calls_inside_a_current_thread_runtime_do_not_panic() {
    let phone = peer("phone");
    let server = peer("server");
    save(&server.db, "doc", "x");
    let outcome = ferrolite::sync_once(pull_from(&phone.db, &server.db), WAIT);
    assert!(
        matches!(outcome, SyncOutcome::NewData { count: 1, .. }),
        "{outcome:?}"
    );
    let listener = UrlEndpointListener::start(UrlEndpointListenerConfiguration::new(vec![server
        .db
        .clone()]))
    .unwrap();
    listener.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn blocking_and_async_calls_inside_a_multi_thread_runtime() {
    let phone = peer("phone");
    let server = peer("server");
    save(&server.db, "doc", "x");
    let replicator = Replicator::new(pull_from(&phone.db, &server.db)).unwrap();
    let outcome = replicator.sync_once_async(WAIT).await;
    assert!(
        matches!(outcome, SyncOutcome::NewData { count: 1, .. }),
        "{outcome:?}"
    );
    assert!(matches!(replicator.sync_once(WAIT), SyncOutcome::NoData));
    save(&server.db, "doc", "y");
    let outcome = ferrolite::sync_once_async(pull_from(&phone.db, &server.db), WAIT).await;
    assert!(
        matches!(outcome, SyncOutcome::NewData { count: 1, .. }),
        "{outcome:?}"
    );
    replicator.start();
    let status = replicator.wait_until_stopped_async().await;
    assert!(status.error.is_none(), "{:?}", status.error);
}

// ---------------------------------------------------------------------------------------
// Checkpoints
// ---------------------------------------------------------------------------------------

#[test]
fn checkpoints_persist_across_replicators_and_reset_starts_over() {
    let client = peer("client");
    let server = peer("server");
    save(&server.db, "doc", "x");
    let config = || {
        ReplicatorConfiguration::new(&client.db, Endpoint::database(&server.db))
            .replicator_type(ReplicatorType::Pull)
    };
    assert!(run_once(config()).error.is_none());
    // A purge does not replicate, and the checkpoint says "doc" was already pulled.
    client.db.purge("doc").unwrap();
    assert!(run_once(config()).error.is_none());
    assert!(client.db.document("doc").unwrap().is_none());

    let replicator = Replicator::new(config()).unwrap();
    replicator.start_with_reset_checkpoint();
    let status = replicator.wait_until_stopped(WAIT).unwrap();
    assert!(status.error.is_none(), "{:?}", status.error);
    assert!(client.db.document("doc").unwrap().is_some());
}

#[test]
fn handles_are_send_and_sync() {
    fn check<T: Send + Sync>() {}
    check::<Replicator>();
    check::<ReplicatorConfiguration>();
    check::<Endpoint>();
    check::<UrlEndpointListener>();
    check::<MessageEndpointListener>();
    check::<ReplicatorStatus>();
    check::<SyncOutcome>();
}

// ---------------------------------------------------------------------------------------
// Configuration errors
// ---------------------------------------------------------------------------------------

#[test]
fn configuration_errors() {
    let db = Database::open_in_memory("db").unwrap();
    assert!(Endpoint::url("http://localhost:4984/db")
        .unwrap_err()
        .is(ferrolite::ErrorCode::InvalidParameter));
    assert!(Endpoint::url("ws://localhost:4984/")
        .unwrap_err()
        .is(ferrolite::ErrorCode::InvalidParameter));
    let itself = Replicator::new(ReplicatorConfiguration::new(&db, Endpoint::database(&db)));
    assert!(itself
        .unwrap_err()
        .is(ferrolite::ErrorCode::InvalidParameter));
    assert!(UrlEndpointListener::start(
        UrlEndpointListenerConfiguration::new(vec![db.clone()]).network_interface("eth0")
    )
    .unwrap_err()
    .is(ferrolite::ErrorCode::InvalidParameter));

    // A closed target database: 404, not retried.
    let other = Database::open_in_memory("other").unwrap();
    let replicator = Replicator::new(ReplicatorConfiguration::new(
        &db,
        Endpoint::database(&other),
    ))
    .unwrap();
    other.close().unwrap();
    replicator.start();
    let status = replicator.wait_until_stopped(WAIT).unwrap();
    assert_eq!(
        status.error.map(|e| e.domain_and_code().1),
        Some(404),
        "closed target"
    );
}
