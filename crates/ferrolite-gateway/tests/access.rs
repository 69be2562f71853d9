//! Channel access over `_blipsync` with real clients: session and Basic authentication,
//! grants and revocations reaching one-shot and continuous pullers, roles, the users file.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use ferrolite::{
    Authenticator, Database, Endpoint, Replicator, ReplicatorConfiguration, ReplicatorType,
    SyncOutcome,
};
use ferrolite_gateway::{Gateway, GatewayConfig, Storage};
use reqwest::{Client, StatusCode};
use serde_json::{json, Value};

const USERS: &str = r#""bob":{"password":"bobpass"},
    "carol":{"password":"carolpass","admin_roles":["readers"]},
    "alice":{"password":"secret","admin_channels":["*"]}"#;

async fn start(storage: Storage) -> Gateway {
    start_on(storage, 0).await
}

/// A gateway whose public port is `port` (0: any; a fixed one stays the same across
/// restarts, so that a client's checkpoint stays its own).
async fn start_on(storage: Storage, port: u16) -> Gateway {
    let config = GatewayConfig::from_json(&format!(
        r#"{{"interface":"127.0.0.1:{port}","adminInterface":"127.0.0.1:0",
            "databases":{{"db":{{"users":{{{USERS}}},
            "roles":{{"readers":{{"admin_channels":["r"]}}}}}}}}}}"#
    ))
    .unwrap();
    Gateway::start(&config, storage).await.unwrap()
}

fn admin(g: &Gateway, path: &str) -> String {
    format!("http://{}{path}", g.admin_addr())
}

async fn put(c: &Client, url: String, body: Value) -> StatusCode {
    c.put(url).json(&body).send().await.unwrap().status()
}

/// Writes documents `<prefix>1..=n` into `channel` on the admin port.
async fn write_docs(g: &Gateway, prefix: &str, channel: &str, n: usize) {
    write_range(g, prefix, channel, 1..=n).await;
}

/// Writes documents `<prefix><i>` for `i` in `range` into `channel` on the admin port.
async fn write_range(
    g: &Gateway,
    prefix: &str,
    channel: &str,
    range: std::ops::RangeInclusive<usize>,
) {
    let c = Client::new();
    for i in range {
        let status = put(
            &c,
            admin(g, &format!("/db/{prefix}{i}")),
            json!({"channels": channel, "n": i}),
        )
        .await;
        assert_eq!(status, StatusCode::CREATED);
    }
}

fn one_shot(phone: &Database, url: &str, auth: Authenticator) -> SyncOutcome {
    let config = ReplicatorConfiguration::new(phone, Endpoint::url(url).unwrap())
        .replicator_type(ReplicatorType::Pull)
        .authenticator(auth);
    ferrolite::sync_once(config, Duration::from_secs(20))
}

fn sorted(ids: &[String]) -> Vec<String> {
    let mut ids = ids.to_vec();
    ids.sort();
    ids
}

fn wait_for(what: &str, mut done: impl FnMut() -> bool) {
    let start = Instant::now();
    while !done() {
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "timed out waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn session_authentication_replicates_and_deleted_sessions_are_refused() {
    let g = start(Storage::InMemory).await;
    write_docs(&g, "r", "r", 2).await;
    let c = Client::new();
    let session: Value = c
        .post(admin(&g, "/db/_session"))
        .json(&json!({"name": "carol"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let id = session["session_id"].as_str().unwrap().to_owned();
    let url = format!("ws://{}/db", g.public_addr());
    let (first, wrong) = {
        let (url, id) = (url.clone(), id.clone());
        tokio::task::spawn_blocking(move || {
            let phone = Database::open_in_memory("phone").unwrap();
            let first = one_shot(&phone, &url, Authenticator::session(id));
            let other = Database::open_in_memory("other").unwrap();
            let wrong = one_shot(&other, &url, Authenticator::session("0".repeat(40)));
            (first, wrong)
        })
        .await
        .unwrap()
    };
    match first {
        SyncOutcome::NewData { document_ids, .. } => {
            assert_eq!(sorted(&document_ids), ["r1", "r2"]);
        }
        other => panic!("expected new data, got {other:?}"),
    }
    assert!(matches!(wrong, SyncOutcome::Failed(_)), "{wrong:?}");

    // A deleted session is refused from then on.
    let r = c
        .delete(format!("http://{}/db/_session", g.public_addr()))
        .header("Cookie", format!("SyncGatewaySession={id}"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let after = tokio::task::spawn_blocking(move || {
        let phone = Database::open_in_memory("later").unwrap();
        one_shot(&phone, &url, Authenticator::session(id))
    })
    .await
    .unwrap();
    assert!(matches!(after, SyncOutcome::Failed(_)), "{after:?}");
    g.shutdown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_granted_channel_reaches_the_next_one_shot_pull() {
    let g = start(Storage::InMemory).await;
    write_docs(&g, "x", "x", 3).await;
    write_docs(&g, "p", "!", 1).await;
    let url = format!("ws://{}/db", g.public_addr());
    let phone = Arc::new(Database::open_in_memory("phone").unwrap());
    let before = {
        let (phone, url) = (phone.clone(), url.clone());
        tokio::task::spawn_blocking(move || {
            one_shot(&phone, &url, Authenticator::basic("bob", "bobpass"))
        })
        .await
        .unwrap()
    };
    match before {
        SyncOutcome::NewData { document_ids, .. } => assert_eq!(document_ids, ["p1"]),
        other => panic!("expected the public document, got {other:?}"),
    }
    // Written after bob's checkpoint, but in no channel of his: still invisible.
    write_docs(&g, "y", "y", 1).await;
    let c = Client::new();
    let status = put(
        &c,
        admin(&g, "/db/_user/bob"),
        json!({"admin_channels": ["x"]}),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    let after = {
        let (phone, url) = (phone.clone(), url.clone());
        tokio::task::spawn_blocking(move || {
            one_shot(&phone, &url, Authenticator::basic("bob", "bobpass"))
        })
        .await
        .unwrap()
    };
    match after {
        // Older than bob's checkpoint, yet new to him.
        SyncOutcome::NewData { document_ids, .. } => {
            assert_eq!(sorted(&document_ids), ["x1", "x2", "x3"]);
        }
        other => panic!("expected the granted channel's documents, got {other:?}"),
    }
    assert!(phone.document("y1").unwrap().is_none());
    g.shutdown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn continuous_pullers_follow_grants_and_revocations_without_reconnecting() {
    let g = start(Storage::InMemory).await;
    write_docs(&g, "z", "z", 2).await;
    write_docs(&g, "r", "r", 1).await;
    let url = format!("ws://{}/db", g.public_addr());
    let phone = Database::open_in_memory("phone").unwrap();
    let config = ReplicatorConfiguration::new(&phone, Endpoint::url(&url).unwrap())
        .replicator_type(ReplicatorType::Pull)
        .continuous(true)
        .authenticator(Authenticator::basic("bob", "bobpass"));
    let replicator = Replicator::new(config).unwrap();
    let removed: Arc<Mutex<HashSet<String>>> = Arc::default();
    {
        let removed = removed.clone();
        let _token = replicator.add_document_replication_listener(move |docs| {
            for d in docs {
                if d.access_removed {
                    removed.lock().unwrap().insert(d.id.clone());
                }
            }
        });
    }
    replicator.start();
    let c = Client::new();

    // Grant "z" through a role: the documents arrive on the open connection.
    assert_eq!(
        put(
            &c,
            admin(&g, "/db/_role/zeds"),
            json!({"admin_channels": ["z"]})
        )
        .await,
        StatusCode::CREATED
    );
    assert_eq!(
        put(
            &c,
            admin(&g, "/db/_user/bob"),
            json!({"admin_roles": ["zeds"]})
        )
        .await,
        StatusCode::OK
    );
    let phone2 = phone.clone();
    tokio::task::spawn_blocking(move || {
        wait_for("the granted documents", || {
            phone2.document("z1").unwrap().is_some() && phone2.document("z2").unwrap().is_some()
        });
    })
    .await
    .unwrap();
    assert!(phone.document("r1").unwrap().is_none());

    // A new document of the channel arrives too.
    write_range(&g, "z", "z", 3..=3).await;
    let phone2 = phone.clone();
    tokio::task::spawn_blocking(move || {
        wait_for("a new document", || {
            phone2.document("z3").unwrap().is_some()
        });
    })
    .await
    .unwrap();

    // Revoke: the client purges the documents and reports the access removal.
    assert_eq!(
        put(&c, admin(&g, "/db/_user/bob"), json!({"admin_roles": []})).await,
        StatusCode::OK
    );
    let phone2 = phone.clone();
    let removed2 = removed.clone();
    tokio::task::spawn_blocking(move || {
        wait_for("the purge of revoked documents", || {
            ["z1", "z2", "z3"]
                .iter()
                .all(|id| phone2.document(id).unwrap().is_none())
        });
        wait_for("access-removed events", || {
            removed2.lock().unwrap().len() == 3
        });
    })
    .await
    .unwrap();
    replicator.stop();
    g.shutdown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn users_roles_and_sessions_survive_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let g = start(Storage::Directory(dir.path().to_owned())).await;
    let c = Client::new();
    assert_eq!(
        put(
            &c,
            admin(&g, "/db/_user/dave"),
            json!({"password": "davepass", "admin_channels": ["d"]})
        )
        .await,
        StatusCode::CREATED
    );
    let session: Value = c
        .post(admin(&g, "/db/_session"))
        .json(&json!({"name": "dave"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let id = session["session_id"].as_str().unwrap().to_owned();
    g.shutdown().await;
    let saved = std::fs::read_to_string(dir.path().join("db.users.json")).unwrap();
    assert!(!saved.contains("davepass"), "passwords are stored hashed");

    let g = start(Storage::Directory(dir.path().to_owned())).await;
    let public = |path: &str| format!("http://{}{path}", g.public_addr());
    let r = c
        .get(public("/db/_session"))
        .basic_auth("dave", Some("davepass"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["userCtx"]["name"], "dave");
    assert!(body["userCtx"]["channels"].get("d").is_some());
    let r = c
        .get(public("/db/_session"))
        .header("Cookie", format!("SyncGatewaySession={id}"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let r = c
        .get(public("/db/_session"))
        .basic_auth("dave", Some("wrong"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    let user: Value = c
        .get(admin(&g, "/db/_user/carol"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(user["roles"], json!(["readers"]));
    assert_eq!(user["all_channels"], json!(["!", "r"]));
    g.shutdown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn stopping_closes_sessions_and_keeps_every_acknowledged_write() {
    let dir = tempfile::tempdir().unwrap();
    let g = start(Storage::Directory(dir.path().to_owned())).await;
    let url = format!("ws://{}/db", g.public_addr());
    let phone = Database::open_in_memory("phone").unwrap();
    let config = ReplicatorConfiguration::new(&phone, Endpoint::url(&url).unwrap())
        .replicator_type(ReplicatorType::PushAndPull)
        .continuous(true)
        .authenticator(Authenticator::basic("alice", "secret"));
    let replicator = Replicator::new(config).unwrap();
    let acknowledged: Arc<Mutex<HashSet<String>>> = Arc::default();
    {
        let acknowledged = acknowledged.clone();
        let _token = replicator.add_document_replication_listener(move |docs| {
            for d in docs {
                if d.error.is_none() {
                    acknowledged.lock().unwrap().insert(d.id.clone());
                }
            }
        });
    }
    replicator.start();
    for i in 0..50 {
        let mut doc = ferrolite::MutableDocument::with_id(format!("p{i}"));
        doc.set("n", i);
        phone.save(&mut doc).unwrap();
    }
    let acked = acknowledged.clone();
    tokio::task::spawn_blocking(move || {
        wait_for("some acknowledged pushes", || {
            acked.lock().unwrap().len() >= 10
        });
    })
    .await
    .unwrap();
    // Stop while the push may still be running: it must end promptly.
    tokio::time::timeout(Duration::from_secs(20), g.shutdown())
        .await
        .expect("the gateway stops while a session is open");
    replicator.stop();
    let acked: Vec<String> = acknowledged.lock().unwrap().iter().cloned().collect();
    let g = start(Storage::Directory(dir.path().to_owned())).await;
    let database = g.database("db").unwrap();
    for id in &acked {
        assert!(
            database.document(id).unwrap().is_some(),
            "{id} was acknowledged but is missing after the restart"
        );
    }
    g.shutdown().await;
}

/// IDs of the documents in `db`, deleted ones included.
fn ids_in(db: &Database) -> Vec<String> {
    let mut ids: Vec<String> = db.changes(0).unwrap().map(|c| c.unwrap().id).collect();
    ids.sort();
    ids
}

#[tokio::test(flavor = "multi_thread")]
async fn a_client_offline_when_it_lost_a_channel_purges_its_documents_on_the_next_pull() {
    let dir = tempfile::tempdir().unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let g = start_on(Storage::Directory(dir.path().to_owned()), port).await;
    write_docs(&g, "x", "x", 3).await;
    write_docs(&g, "t", "t", 2).await;
    write_docs(&g, "p", "!", 1).await;
    let c = Client::new();
    let status = put(
        &c,
        admin(&g, "/db/_user/bob"),
        json!({"admin_channels": ["x"]}),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    let status = put(
        &c,
        admin(&g, "/db/_role/team"),
        json!({"admin_channels": ["t"]}),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED);
    let status = put(
        &c,
        admin(&g, "/db/_user/dave"),
        json!({"password": "davepass", "admin_roles": ["team"]}),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED);
    let url = format!("ws://127.0.0.1:{port}/db");
    let bob = Arc::new(Database::open_in_memory("bob-phone").unwrap());
    let dave = Arc::new(Database::open_in_memory("dave-phone").unwrap());
    let pull = |phone: &Arc<Database>, user: &'static str, password: &'static str| {
        let (phone, url) = (phone.clone(), url.clone());
        tokio::task::spawn_blocking(move || {
            one_shot(&phone, &url, Authenticator::basic(user, password))
        })
    };
    let first = pull(&bob, "bob", "bobpass").await.unwrap();
    assert!(matches!(first, SyncOutcome::NewData { .. }), "{first:?}");
    assert_eq!(ids_in(&bob), ["p1", "x1", "x2", "x3"]);
    let first = pull(&dave, "dave", "davepass").await.unwrap();
    assert!(matches!(first, SyncOutcome::NewData { .. }), "{first:?}");
    assert_eq!(ids_in(&dave), ["p1", "t1", "t2"]);

    // While both are offline: bob loses channel x, the role team loses channel t, and the
    // gateway restarts.
    let status = put(
        &c,
        admin(&g, "/db/_user/bob"),
        json!({"admin_channels": []}),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    let status = put(
        &c,
        admin(&g, "/db/_role/team"),
        json!({"admin_channels": []}),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    write_range(&g, "p", "!", 2..=2).await;
    g.shutdown().await;
    let g = start_on(Storage::Directory(dir.path().to_owned()), port).await;

    // The next pull purges what each may no longer read, and keeps the rest.
    pull(&bob, "bob", "bobpass").await.unwrap();
    assert_eq!(ids_in(&bob), ["p1", "p2"]);
    pull(&dave, "dave", "davepass").await.unwrap();
    assert_eq!(ids_in(&dave), ["p1", "p2"]);
    // A pull from the same checkpoint is told again, harmlessly.
    let again = pull(&bob, "bob", "bobpass").await.unwrap();
    assert!(!matches!(again, SyncOutcome::Failed(_)), "{again:?}");
    assert_eq!(ids_in(&bob), ["p1", "p2"]);

    // Granted again: the documents come back.
    let status = put(
        &c,
        admin(&g, "/db/_user/bob"),
        json!({"admin_channels": ["x"]}),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    pull(&bob, "bob", "bobpass").await.unwrap();
    assert_eq!(ids_in(&bob), ["p1", "p2", "x1", "x2", "x3"]);
    g.shutdown().await;
}
