//! Blobs and delta sync through the facade, end to end: on-disk databases, a real
//! WebSocket on 127.0.0.1 (`UrlEndpointListener`), the database endpoint and a message
//! endpoint served by a `MessageEndpointListener`.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use ferrolite::transport::{
    async_trait, pipe, Connection, Incoming, MessageReceiver, MessageSender, Transport,
    TransportError,
};
use ferrolite::{
    Blob, Database, DatabaseConfiguration, Endpoint, MessageEndpointListener, MutableDocument,
    Replicator, ReplicatorConfiguration, ReplicatorStatus, ReplicatorType, UrlEndpointListener,
    UrlEndpointListenerConfiguration,
};
use serde_json::{json, Value};

const WAIT: Duration = Duration::from_secs(20);

struct Peer {
    db: Database,
    _dir: tempfile::TempDir,
}

fn peer(name: &str) -> Peer {
    let dir = tempfile::tempdir().unwrap();
    let db = Database::open(name, &DatabaseConfiguration::new(dir.path())).unwrap();
    Peer { db, _dir: dir }
}

fn run(config: ReplicatorConfiguration) -> ReplicatorStatus {
    let replicator = Replicator::new(config).unwrap();
    replicator.start();
    let status = replicator
        .wait_until_stopped(WAIT)
        .expect("stopped in time");
    assert!(status.error.is_none(), "{:?}", status.error);
    status
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

/// Counts the bytes of the frames the active side receives.
struct Counting<T> {
    inner: T,
    received: Arc<AtomicU64>,
}

struct CountingReceiver {
    inner: Box<dyn MessageReceiver>,
    received: Arc<AtomicU64>,
}

#[async_trait]
impl MessageReceiver for CountingReceiver {
    async fn receive(&mut self) -> Result<Option<Incoming>, TransportError> {
        let item = self.inner.receive().await;
        if let Ok(Some(Incoming::Message(frame))) = &item {
            self.received
                .fetch_add(frame.len() as u64, Ordering::SeqCst);
        }
        item
    }
}

/// A message endpoint: a pipe whose far end a `MessageEndpointListener` serves.
struct PipeTo(MessageEndpointListener);

#[async_trait]
impl Transport for PipeTo {
    async fn connect(&self) -> Result<Connection, TransportError> {
        let (ours, theirs) = pipe();
        self.0
            .accept(theirs)
            .map_err(|e| TransportError::InvalidConfig(e.to_string()))?;
        Ok(ours)
    }
}

#[async_trait]
impl<T: Transport> Transport for Counting<T> {
    async fn connect(&self) -> Result<Connection, TransportError> {
        let (sender, receiver): (Box<dyn MessageSender>, Box<dyn MessageReceiver>) =
            self.inner.connect().await?.split();
        Ok(Connection::new(
            sender,
            Box::new(CountingReceiver {
                inner: receiver,
                received: self.received.clone(),
            }),
        ))
    }
}

const PROFILE: &str = "user::demo@example.com";

#[test]
fn the_profile_image_replicates_over_every_endpoint() {
    let server = peer("server");
    let image = noise(300_000, 1);
    let mut profile = MutableDocument::with_id(PROFILE);
    profile.set("type", "user").set("name", "Demo User");
    profile.set_blob("image", Blob::from_bytes("image/jpeg", image.clone()));
    profile.set(
        "documents",
        json!([{"cv": {"@type": "blob", "content_type": "text/plain", "digest": "sha1-GgXWuohWJOrFHeD9ZswSosQVmDc=", "length": 13}}]),
    );
    server
        .db
        .save_blob(&mut Blob::from_bytes("text/plain", &b"Hello, blob!\n"[..]))
        .unwrap();
    server.db.save(&mut profile).unwrap();
    let listener = UrlEndpointListener::start(
        UrlEndpointListenerConfiguration::new(vec![server.db.clone()])
            .network_interface("127.0.0.1"),
    )
    .unwrap();
    let endpoints = [
        Endpoint::url(&listener.url("server")).unwrap(),
        Endpoint::database(&server.db),
        Endpoint::message(
            "message-peer",
            Arc::new(PipeTo(MessageEndpointListener::new(&server.db))),
        ),
    ];
    for endpoint in endpoints {
        let phone = peer("phone");
        run(ReplicatorConfiguration::new(&phone.db, endpoint.clone())
            .replicator_type(ReplicatorType::Pull));
        let doc = phone.db.document(PROFILE).unwrap().expect("pulled");
        let blob = doc.blob("image").expect("a blob");
        assert_eq!(blob.content_type(), Some("image/jpeg"));
        assert!(
            phone.db.blob_content(&blob).unwrap() == image,
            "{endpoint:?}"
        );
        let cv =
            Blob::from_dict(doc.get("documents").unwrap()[0]["cv"].as_object().unwrap()).unwrap();
        assert_eq!(phone.db.blob_content(&cv).unwrap(), b"Hello, blob!\n");

        // And back: a new document with a new blob, pushed.
        let avatar = noise(50_000, 2);
        let mut mine = MutableDocument::with_id(format!("avatar-{}", endpoint_name(&endpoint)));
        mine.set_blob("avatar", Blob::from_bytes("image/png", avatar.clone()));
        phone.db.save(&mut mine).unwrap();
        run(ReplicatorConfiguration::new(&phone.db, endpoint.clone())
            .replicator_type(ReplicatorType::Push));
        let pushed = server.db.document(mine.id()).unwrap().expect("pushed");
        let blob = pushed.blob("avatar").unwrap();
        assert!(server.db.blob_content(&blob).unwrap() == avatar);
    }
    listener.stop();
}

fn endpoint_name(endpoint: &Endpoint) -> &'static str {
    match format!("{endpoint:?}") {
        s if s.starts_with("Url") => "url",
        s if s.starts_with("Database") => "database",
        _ => "message",
    }
}

/// A ~10 KB document of ten workload profiles, `logins` set in one of them.
fn team(logins: u64) -> MutableDocument {
    let members: Vec<Value> = (0..10)
        .map(|i| Value::Object(ferrolite_testkit::workload::make_doc(i, 1, "user").1))
        .collect();
    let mut value = json!({"type": "team", "members": members});
    value["members"][4]["stats"]["logins"] = json!(logins);
    MutableDocument::from_json("team", &value.to_string()).unwrap()
}

fn save_team(db: &Database, logins: u64) {
    let mut doc = team(logins);
    if let Some(existing) = db.document("team").unwrap() {
        let mut next = existing.to_mutable();
        next.set_properties(doc.properties().clone());
        doc = next;
    }
    db.save(&mut doc).unwrap();
}

#[test]
fn delta_sync_is_on_for_message_endpoints_and_can_be_turned_off() {
    let server = peer("server");
    save_team(&server.db, 1);
    let phone = peer("phone");
    let received = Arc::new(AtomicU64::new(0));
    let endpoint = Endpoint::message(
        "team-server",
        Arc::new(Counting {
            inner: PipeTo(MessageEndpointListener::new(&server.db)),
            received: received.clone(),
        }),
    );
    let pull = |deltas: Option<bool>| {
        let mut config = ReplicatorConfiguration::new(&phone.db, endpoint.clone())
            .replicator_type(ReplicatorType::Pull);
        if let Some(deltas) = deltas {
            config = config.enable_delta_sync(deltas);
        }
        received.store(0, Ordering::SeqCst);
        run(config);
        received.load(Ordering::SeqCst)
    };
    let first = pull(None);
    save_team(&server.db, 2);
    let delta = pull(None);
    save_team(&server.db, 3);
    let off = pull(Some(false));
    let logins = |db: &Database| {
        db.document("team").unwrap().unwrap().properties()["members"][4]["stats"]["logins"].clone()
    };
    assert_eq!(logins(&phone.db), json!(3));
    eprintln!(
        "whole session bytes received: first pull {first}, delta pull {delta}, deltas off {off}"
    );
    // The whole second session (checkpoints, changes and the delta) is far below the first.
    assert!(delta * 4 < first, "delta session {delta} vs first {first}");
    assert!(off > delta * 4, "deltas off {off} vs delta {delta}");
}
