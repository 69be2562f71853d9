//! Who may read what: every user against every document by every read path (REST GET,
//! attachments, `_all_docs`, `_changes` in each feed mode, `_blipsync`), expired and deleted
//! sessions, and hostile document IDs and attachment names.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeSet;
use std::time::Duration;

use ferrolite::{Authenticator, Database, Endpoint, ReplicatorConfiguration, ReplicatorType};
use ferrolite_gateway::{Gateway, GatewayConfig, Storage};
use ferrolite_protocol::blip::Message;
use ferrolite_testkit::hostile::{no_answers, BlipPeer};
use reqwest::{Client, StatusCode};
use serde_json::{json, Value};

/// Users and the channels they read.
const USERS: [(&str, &[&str]); 4] = [
    ("ua", &["a"]),
    ("ub", &["b"]),
    ("uab", &["a", "b"]),
    ("unone", &[]),
];

/// Documents and their channels.
const DOCS: [(&str, &[&str]); 6] = [
    ("in-a", &["a"]),
    ("in-b", &["b"]),
    ("in-ab", &["a", "b"]),
    ("in-c", &["c"]),
    ("in-none", &[]),
    ("public", &["!"]),
];

fn expected(user_channels: &[&str]) -> BTreeSet<String> {
    DOCS.iter()
        .filter(|(_, chans)| chans.iter().any(|c| *c == "!" || user_channels.contains(c)))
        .map(|(id, _)| (*id).to_owned())
        .collect()
}

async fn start() -> Gateway {
    let users: serde_json::Map<String, Value> = USERS
        .iter()
        .map(|(name, chans)| {
            (
                (*name).to_owned(),
                json!({"password": format!("{name}-pw"), "admin_channels": chans}),
            )
        })
        .collect();
    let config = json!({"interface": "127.0.0.1:0", "adminInterface": "127.0.0.1:0",
        "databases": {"db": {"users": users}}});
    let g = Gateway::start(
        &GatewayConfig::from_json(&config.to_string()).unwrap(),
        Storage::InMemory,
    )
    .await
    .unwrap();
    let c = Client::new();
    for (id, chans) in DOCS {
        let r = c
            .put(format!("http://{}/db/{id}", g.admin_addr()))
            .json(&json!({"channels": chans, "_attachments": {"note": {
                "content_type": "text/plain",
                "data": "c2VjcmV0IGJ5dGVz"}}}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::CREATED, "{id}");
    }
    g
}

fn ids_of(rows: &Value, key: &str) -> BTreeSet<String> {
    rows.as_array()
        .unwrap()
        .iter()
        .filter(|r| r.get("removed").is_none())
        .filter_map(|r| r[key].as_str().map(str::to_owned))
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn no_user_reads_a_document_outside_its_channels_by_any_path() {
    let g = start().await;
    let c = Client::new();
    let base = format!("http://{}/db", g.public_addr());
    for (user, chans) in USERS {
        let want = expected(chans);
        let pw = format!("{user}-pw");
        let get = |path: String| {
            c.get(format!("{base}{path}"))
                .basic_auth(user, Some(pw.clone()))
                .send()
        };
        // REST GET and the attachment of each document.
        for (id, _) in DOCS {
            let readable = want.contains(id);
            let r = get(format!("/{id}")).await.unwrap();
            let status = r.status();
            let body = r.text().await.unwrap();
            if readable {
                assert_eq!(status, StatusCode::OK, "{user} GET {id}");
            } else {
                assert_eq!(status, StatusCode::FORBIDDEN, "{user} GET {id}");
                assert!(!body.contains("channels"), "{user} GET {id} leaked {body}");
            }
            let r = get(format!("/{id}/note")).await.unwrap();
            let status = r.status();
            let bytes = r.bytes().await.unwrap();
            if readable {
                assert_eq!(status, StatusCode::OK, "{user} attachment of {id}");
                assert_eq!(&bytes[..], b"secret bytes");
            } else {
                assert_eq!(status, StatusCode::FORBIDDEN, "{user} attachment of {id}");
                assert!(!String::from_utf8_lossy(&bytes).contains("secret"));
            }
        }
        // _all_docs, with and without the documents.
        let all: Value = get("/_all_docs?include_docs=true".into())
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(ids_of(&all["rows"], "id"), want, "{user} _all_docs");
        let keys: Value = c
            .post(format!("{base}/_all_docs"))
            .basic_auth(user, Some(pw.clone()))
            .json(&json!({"keys": DOCS.iter().map(|(id, _)| *id).collect::<Vec<_>>()}))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let shown: BTreeSet<String> = keys["rows"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|r| r.get("value").is_some())
            .filter_map(|r| r["id"].as_str().map(str::to_owned))
            .collect();
        assert!(shown.is_subset(&want), "{user} _all_docs keys: {shown:?}");
        // _changes in each mode.
        for feed in ["normal", "longpoll"] {
            let changes: Value = get(format!("/_changes?feed={feed}&include_docs=true"))
                .await
                .unwrap()
                .json()
                .await
                .unwrap();
            assert_eq!(
                ids_of(&changes["results"], "id"),
                want,
                "{user} _changes {feed}"
            );
        }
        let text = get("/_changes?feed=continuous&timeout=500".into())
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        let continuous: BTreeSet<String> = text
            .lines()
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
            .filter_map(|v| v["id"].as_str().map(str::to_owned))
            .collect();
        assert_eq!(continuous, want, "{user} _changes continuous");
        // Asking for a channel by name does not widen access.
        let narrowed: Value = get("/_changes?filter=sync_gateway/bychannel&channels=c".into())
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert!(
            ids_of(&narrowed["results"], "id").is_empty(),
            "{user} bychannel c"
        );
        // _blipsync.
        let url = format!("ws://{}/db", g.public_addr());
        let name = format!("phone-{user}");
        let pulled = tokio::task::spawn_blocking(move || {
            let phone = Database::open_in_memory(&name).unwrap();
            let config = ReplicatorConfiguration::new(&phone, Endpoint::url(&url).unwrap())
                .replicator_type(ReplicatorType::Pull)
                .authenticator(Authenticator::basic(user, pw));
            let _ = ferrolite::sync_once(config, Duration::from_secs(20));
            let mut ids = BTreeSet::new();
            for change in phone.changes(0).unwrap() {
                ids.insert(change.unwrap().id);
            }
            ids
        })
        .await
        .unwrap();
        assert_eq!(pulled, want, "{user} _blipsync");
    }
    g.shutdown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn expired_and_deleted_sessions_and_wrong_credentials_are_refused_everywhere() {
    let g = start().await;
    let c = Client::new();
    let session: Value = c
        .post(format!("http://{}/db/_session", g.admin_addr()))
        .json(&json!({"name": "ua", "ttl": 1}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let id = session["session_id"].as_str().unwrap().to_owned();
    let base = format!("http://{}/db", g.public_addr());
    let with_cookie = |path: &str| {
        c.get(format!("{base}{path}"))
            .header("Cookie", format!("SyncGatewaySession={id}"))
            .send()
    };
    assert_eq!(with_cookie("/in-a").await.unwrap().status(), StatusCode::OK);
    tokio::time::sleep(Duration::from_millis(2100)).await;
    for path in [
        "/in-a",
        "/_all_docs",
        "/_changes",
        "/in-a/note",
        "/_blipsync",
    ] {
        let r = with_cookie(path).await.unwrap();
        assert_eq!(
            r.status(),
            StatusCode::UNAUTHORIZED,
            "expired session {path}"
        );
        let r = c
            .get(format!("{base}{path}"))
            .basic_auth("ua", Some("wrong"))
            .send()
            .await
            .unwrap();
        assert_eq!(
            r.status(),
            StatusCode::UNAUTHORIZED,
            "wrong password {path}"
        );
        assert!(r.headers().contains_key("www-authenticate"), "{path}");
        let body: Value = r.json().await.unwrap();
        assert_eq!(body["error"], "Unauthorized", "{path}");
        let r = c.get(format!("{base}{path}")).send().await.unwrap();
        assert_eq!(
            r.status(),
            StatusCode::UNAUTHORIZED,
            "no credentials {path}"
        );
    }
    g.shutdown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn hostile_ids_and_attachment_names_are_handled_safely() {
    let g = start().await;
    let c = Client::new();
    let admin = format!("http://{}/db", g.admin_addr());
    // Path tricks name documents like any other ID (nothing is a file path): they are
    // stored under the ID given, and cannot reach another document or route.
    for id in ["..%2F..%2Fetc%2Fpasswd", "%2E%2E", "a%2Fb"] {
        let r = c
            .put(format!("{admin}/{id}"))
            .json(&json!({"x": 1}))
            .send()
            .await
            .unwrap();
        // Stored under that ID, refused, or (`..` resolved by the URL itself) not a
        // document route at all.
        assert!(
            [
                StatusCode::CREATED,
                StatusCode::BAD_REQUEST,
                StatusCode::NOT_FOUND,
                StatusCode::METHOD_NOT_ALLOWED
            ]
            .contains(&r.status()),
            "{id}: {}",
            r.status()
        );
        let r = c.get(format!("{admin}/in-a")).send().await.unwrap();
        assert_eq!(r.status(), StatusCode::OK);
    }
    // Control characters are refused.
    for id in ["bad%00id", "bad%0Aid", "bad%1Bid"] {
        let r = c
            .put(format!("{admin}/{id}"))
            .json(&json!({"x": 1}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::BAD_REQUEST, "{id}");
        let body: Value = r.json().await.unwrap();
        assert_eq!(body["error"], "Bad Request", "{id}");
    }
    let rev = c
        .get(format!("{admin}/in-a"))
        .send()
        .await
        .unwrap()
        .json::<Value>()
        .await
        .unwrap()["_rev"]
        .as_str()
        .unwrap()
        .to_owned();
    for name in ["bad%00name", "_private", "blob_%2Fa%2Fb"] {
        let r = c
            .put(format!("{admin}/in-a/{name}?rev={rev}"))
            .header("Content-Type", "text/plain")
            .body("x")
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::BAD_REQUEST, "attachment {name}");
    }
    // The server is still healthy.
    let r = c.get(format!("{admin}/in-a")).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    g.shutdown().await;
}

/// The digest of document `id`'s attachment `note` (a blob at the top level), read on the
/// admin port.
async fn note_digest(g: &Gateway, id: &str) -> String {
    let doc: Value = Client::new()
        .get(format!("http://{}/db/{id}", g.admin_addr()))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    doc["note"]["digest"]
        .as_str()
        .unwrap_or_else(|| panic!("{id}: no attachment digest in {doc}"))
        .to_owned()
}

/// `getAttachment` for `digest`, naming `doc_id` when given; the reply's error code, if any.
async fn get_attachment(peer: &mut BlipPeer, digest: &str, doc_id: Option<&str>) -> Option<i64> {
    let mut request = Message::request("getAttachment");
    request.properties.set("digest", digest);
    if let Some(doc_id) = doc_id {
        request.properties.set("docID", doc_id);
    }
    let reply = peer
        .request(request, Duration::from_secs(30), &mut no_answers())
        .await
        .unwrap();
    reply.error().map(|(_, code)| i64::from(code))
}

#[tokio::test(flavor = "multi_thread")]
async fn blobs_are_served_over_blipsync_only_for_revisions_sent_to_the_user() {
    let g = start().await;
    let c = Client::new();
    // Two documents with blobs of their own: one `ua` may read, one only `ub` may.
    for (id, chans, data) in [
        ("blob-a", ["a"], "bWluZSwgZm9yIGE="),
        ("blob-b", ["b"], "b25seSBmb3IgYg=="),
    ] {
        let r = c
            .put(format!("http://{}/db/{id}", g.admin_addr()))
            .json(&json!({"channels": chans, "_attachments": {"note": {
                "content_type": "text/plain", "data": data}}}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::CREATED, "{id}");
    }
    let digest_a = note_digest(&g, "blob-a").await;
    let digest_b = note_digest(&g, "blob-b").await;
    assert_ne!(digest_a, digest_b);

    // Outside a revision sent on the connection, no blob is served, whoever asks and
    // however the request names it: Sync Gateway's `403 Attachment's doc not being synced`.
    for (user, digest, doc_id) in [
        ("ua", &digest_b, Some("blob-b")),
        ("ua", &digest_b, Some("blob-a")),
        ("ua", &digest_b, None),
        ("ua", &digest_a, Some("blob-a")),
        ("ub", &digest_b, Some("blob-b")),
        ("uab", &digest_b, None),
    ] {
        let password = format!("{user}-pw");
        let mut peer = BlipPeer::connect(g.public_addr(), "db", Some((user, &password)))
            .await
            .unwrap();
        assert_eq!(
            get_attachment(&mut peer, digest, doc_id).await,
            Some(403),
            "{user} asked for {digest} of {doc_id:?}"
        );
        peer.close().await;
    }

    // A pull still fetches the blobs of the revisions it is sent, and only those.
    let dir = tempfile::tempdir().unwrap();
    let db = Database::open("ua", &ferrolite::DatabaseConfiguration::new(dir.path())).unwrap();
    let url = format!("ws://{}/db", g.public_addr());
    let config = ReplicatorConfiguration::new(&db, Endpoint::url(&url).unwrap())
        .replicator_type(ReplicatorType::Pull)
        .authenticator(Authenticator::basic("ua", "ua-pw"));
    let replicator = ferrolite::Replicator::new(config).unwrap();
    replicator.start();
    let status = replicator
        .wait_until_stopped(Duration::from_secs(60))
        .unwrap();
    assert!(status.error.is_none(), "{status:?}");
    let pulled = db.document("blob-a").unwrap().expect("blob-a pulled");
    let note = pulled
        .blob("note")
        .unwrap_or_else(|| panic!("blob-a's note: {:?}", pulled.properties()));
    assert_eq!(db.blob_content(&note).unwrap(), b"mine, for a");
    assert!(db.document("blob-b").unwrap().is_none());
}
