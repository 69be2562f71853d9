//! `_changes` feeds (normal, longpoll, continuous; channel filtering and removals),
//! attachments and `_purge`, over real HTTP.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use base64::Engine as _;
use ferrolite::{
    Authenticator, Endpoint, MutableDocument, ReplicatorConfiguration, ReplicatorType,
};
use ferrolite_gateway::{Gateway, GatewayConfig, Storage};
use reqwest::{Client, StatusCode};
use serde_json::{json, Value};

/// Generous bound for anything that should happen promptly.
const PATIENCE: Duration = Duration::from_secs(30);

/// A gateway whose `alice` reads everything and `ann` reads channel "a".
async fn start() -> Gateway {
    let config = GatewayConfig::from_json(
        r#"{"interface":"127.0.0.1:0","adminInterface":"127.0.0.1:0",
            "databases":{"db":{"users":{
                "alice":{"password":"secret","admin_channels":["*"]},
                "ann":{"password":"annpass","admin_channels":["a"]}}}}}"#,
    )
    .unwrap();
    Gateway::start(&config, Storage::InMemory).await.unwrap()
}

fn public(g: &Gateway, path: &str) -> String {
    format!("http://{}{path}", g.public_addr())
}

fn admin(g: &Gateway, path: &str) -> String {
    format!("http://{}{path}", g.admin_addr())
}

async fn json_of(r: reqwest::Response) -> Value {
    r.json().await.unwrap()
}

/// PUTs a document on the admin port (on top of `rev` if given); returns its new revision.
async fn put(g: &Gateway, id: &str, rev: Option<&str>, body: Value) -> String {
    let url = match rev {
        Some(rev) => admin(g, &format!("/db/{id}?rev={rev}")),
        None => admin(g, &format!("/db/{id}")),
    };
    let r = Client::new().put(url).json(&body).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::CREATED, "PUT {id}");
    json_of(r).await["rev"].as_str().unwrap().to_owned()
}

/// A `_changes` request as `ann` (public port).
async fn ann_changes(g: &Gateway, query: &str) -> Value {
    let r = Client::new()
        .get(public(g, &format!("/db/_changes{query}")))
        .basic_auth("ann", Some("annpass"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK, "{query}");
    json_of(r).await
}

async fn admin_changes(g: &Gateway, query: &str) -> Value {
    let r = Client::new()
        .get(admin(g, &format!("/db/_changes{query}")))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK, "{query}");
    json_of(r).await
}

fn ids(changes: &Value) -> Vec<String> {
    changes["results"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["id"].as_str().unwrap().to_owned())
        .collect()
}

fn last_seq(changes: &Value) -> u64 {
    changes["last_seq"].as_str().unwrap().parse().unwrap()
}

/// Reads a streamed `_changes` response line by line: `None` for a heartbeat (empty line),
/// `Some(json)` for an entry; the end of the stream ends the iteration.
struct Lines {
    response: reqwest::Response,
    buffer: Vec<u8>,
}

impl Lines {
    fn new(response: reqwest::Response) -> Lines {
        Lines {
            response,
            buffer: Vec::new(),
        }
    }

    /// The next line, or `Err(())` at the end of the stream.
    async fn next(&mut self) -> Result<Option<Value>, ()> {
        loop {
            if let Some(end) = self.buffer.iter().position(|b| *b == b'\n') {
                let line: Vec<u8> = self.buffer.drain(..=end).collect();
                let text = std::str::from_utf8(&line).unwrap().trim();
                if text.is_empty() {
                    return Ok(None);
                }
                return Ok(Some(serde_json::from_str(text).unwrap()));
            }
            let chunk = tokio::time::timeout(PATIENCE * 2, self.response.chunk())
                .await
                .expect("the feed stalled")
                .unwrap();
            match chunk {
                Some(bytes) => self.buffer.extend_from_slice(&bytes),
                None => {
                    assert!(self.buffer.is_empty(), "unterminated line");
                    return Err(());
                }
            }
        }
    }

    /// The next entry, skipping heartbeats.
    async fn entry(&mut self) -> Value {
        loop {
            if let Some(v) = self.next().await.expect("the feed ended") {
                return v;
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn longpoll_waits_for_a_later_put_or_its_timeout() {
    let g = start().await;
    put(&g, "first", None, json!({"channels": "a"})).await;
    let since = last_seq(&admin_changes(&g, "").await);
    assert_eq!(since, 1);

    // Nothing after `since`: the request waits.
    let url = public(
        &g,
        &format!("/db/_changes?feed=longpoll&since={since}&timeout=60000"),
    );
    let waiting = tokio::spawn(async move {
        let r = Client::new()
            .get(url)
            .basic_auth("ann", Some("annpass"))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::OK);
        r.text().await.unwrap()
    });
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(
        !waiting.is_finished(),
        "longpoll answered before any change"
    );
    let rev = put(&g, "second", None, json!({"channels": "a"})).await;
    let text = tokio::time::timeout(PATIENCE, waiting)
        .await
        .expect("longpoll did not wake")
        .unwrap();
    let body: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(
        body,
        json!({"results": [{"seq": 2, "id": "second", "changes": [{"rev": rev}]}],
               "last_seq": "2"})
    );

    // With changes already there, longpoll answers at once like normal.
    let body = ann_changes(&g, "?feed=longpoll&since=1").await;
    assert_eq!(ids(&body), ["second"]);

    // An idle longpoll ends at its timeout with no results.
    let body = ann_changes(&g, "?feed=longpoll&since=2&timeout=300").await;
    assert_eq!(body, json!({"results": [], "last_seq": "2"}));
    g.shutdown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn longpoll_wakes_on_a_replicated_document() {
    let g = start().await;
    let url = public(&g, "/db/_changes?feed=longpoll&timeout=60000");
    let waiting = tokio::spawn(async move {
        let r = Client::new()
            .get(url)
            .basic_auth("ann", Some("annpass"))
            .send()
            .await
            .unwrap();
        r.json::<Value>().await.unwrap()
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    let endpoint = format!("ws://{}/db", g.public_addr());
    tokio::task::spawn_blocking(move || {
        let phone = ferrolite::Database::open_in_memory("phone").unwrap();
        phone
            .save(
                MutableDocument::with_id("hidden")
                    .set("channels", "b")
                    .set("n", 1),
            )
            .unwrap();
        phone
            .save(
                MutableDocument::with_id("pushed")
                    .set("channels", "a")
                    .set("n", 2),
            )
            .unwrap();
        let config = ReplicatorConfiguration::new(&phone, Endpoint::url(&endpoint).unwrap())
            .replicator_type(ReplicatorType::Push)
            .authenticator(Authenticator::basic("alice", "secret"));
        ferrolite::sync_once(config, Duration::from_secs(20));
    })
    .await
    .unwrap();
    let body = tokio::time::timeout(PATIENCE, waiting)
        .await
        .expect("longpoll did not wake")
        .unwrap();
    // Whichever commit woke it, ann sees only "pushed" (never "hidden").
    assert_eq!(ids(&body), ["pushed"], "{body}");
    g.shutdown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn continuous_streams_changes_heartbeats_and_ends_at_its_timeout() {
    let g = start().await;
    put(&g, "d1", None, json!({"n": 1})).await;
    let r = Client::new()
        .get(admin(
            &g,
            "/db/_changes?feed=continuous&heartbeat=25000&timeout=28000",
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(r.headers()["content-type"], "application/octet-stream");
    let mut lines = Lines::new(r);
    assert_eq!(lines.entry().await["id"], "d1");
    let rev2 = put(&g, "d2", None, json!({"n": 2})).await;
    let rev3 = put(&g, "d3", None, json!({"n": 3})).await;
    let e2 = lines.entry().await;
    assert_eq!(
        e2,
        json!({"seq": 2, "id": "d2", "changes": [{"rev": rev2}]})
    );
    let e3 = lines.entry().await;
    assert_eq!(
        e3,
        json!({"seq": 3, "id": "d3", "changes": [{"rev": rev3}]})
    );
    // Idle now: a heartbeat (25 s, the minimum) comes before the timeout (28 s idle).
    assert_eq!(lines.next().await, Ok(None));
    let mut rest = Vec::new();
    while let Ok(line) = lines.next().await {
        rest.push(line);
    }
    assert_eq!(
        rest.last(),
        Some(&Some(json!({"last_seq": "3"}))),
        "{rest:?}"
    );
    assert!(
        rest[..rest.len() - 1].iter().all(Option::is_none),
        "{rest:?}"
    );
    g.shutdown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn continuous_ends_when_the_client_leaves() {
    let g = start().await;
    put(&g, "d1", None, json!({"n": 1})).await;
    let r = Client::new()
        .get(admin(&g, "/db/_changes?feed=continuous"))
        .send()
        .await
        .unwrap();
    let mut lines = Lines::new(r);
    assert_eq!(lines.entry().await["id"], "d1");
    drop(lines);
    // Shutting down waits for open responses: it finishes only if the feed ended.
    tokio::time::timeout(PATIENCE, g.shutdown())
        .await
        .expect("the feed outlived its client");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_user_sees_its_channels_and_removals_in_every_feed() {
    let g = start().await;
    let a1 = put(&g, "a1", None, json!({"channels": "a", "n": 1})).await;
    put(&g, "b1", None, json!({"channels": "b"})).await;

    let r = Client::new()
        .get(public(&g, "/db/_changes?feed=continuous&timeout=60000"))
        .basic_auth("ann", Some("annpass"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let mut lines = Lines::new(r);
    assert_eq!(lines.entry().await["id"], "a1");

    put(&g, "b2", None, json!({"channels": ["b"]})).await;
    put(&g, "a2", None, json!({"channels": ["a", "b"]})).await;
    // a1 re-routed to "b": ann can no longer read it.
    let moved = put(&g, "a1", Some(&a1), json!({"channels": "b", "n": 1})).await;

    let e = lines.entry().await;
    assert_eq!(e["id"], "a2", "{e}");
    let e = lines.entry().await;
    assert_eq!(
        e,
        json!({"seq": 5, "id": "a1", "changes": [{"rev": moved}], "removed": ["a"]})
    );
    drop(lines);

    // Normal feed: the same, and the removal carries no document body.
    let body = ann_changes(&g, "?include_docs=true").await;
    assert_eq!(ids(&body), ["a2", "a1"]);
    assert_eq!(body["last_seq"], "5");
    assert_eq!(body["results"][0]["doc"]["channels"], json!(["a", "b"]));
    assert_eq!(body["results"][1]["removed"], json!(["a"]));
    assert_eq!(
        body["results"][1]["doc"],
        json!({"_id": "a1", "_rev": moved, "_removed": true})
    );
    // active_only leaves removals out.
    let body = ann_changes(&g, "?active_only=true").await;
    assert_eq!(ids(&body), ["a2"]);
    // Longpoll from before the move answers with it at once.
    let body = ann_changes(&g, "?feed=longpoll&since=4").await;
    assert_eq!(ids(&body), ["a1"]);
    assert_eq!(body["results"][0]["removed"], json!(["a"]));
    // limit.
    let body = ann_changes(&g, "?limit=1").await;
    assert_eq!(ids(&body), ["a2"]);
    assert_eq!(body["last_seq"], "4");
    // Admin and "*" users see everything, without removals.
    let body = admin_changes(&g, "").await;
    assert_eq!(ids(&body), ["b1", "b2", "a2", "a1"]);
    assert!(body["results"][3].get("removed").is_none());
    let r = Client::new()
        .get(public(&g, "/db/_changes"))
        .basic_auth("alice", Some("secret"))
        .send()
        .await
        .unwrap();
    assert_eq!(ids(&json_of(r).await), ["b1", "b2", "a2", "a1"]);
    g.shutdown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn filters_narrow_the_feed() {
    let g = start().await;
    put(&g, "a1", None, json!({"channels": "a"})).await;
    put(&g, "b1", None, json!({"channels": "b"})).await;
    put(&g, "c1", None, json!({"channels": "c"})).await;
    put(&g, "ab", None, json!({"channels": ["a", "b"]})).await;

    let body = admin_changes(&g, "?filter=sync_gateway/bychannel&channels=b").await;
    assert_eq!(ids(&body), ["b1", "ab"]);
    let body = admin_changes(&g, "?filter=sync_gateway/bychannel&channels=b,c").await;
    assert_eq!(ids(&body), ["b1", "c1", "ab"]);
    // Intersected with what ann may read.
    let body = ann_changes(&g, "?filter=sync_gateway/bychannel&channels=b,c").await;
    assert_eq!(ids(&body), Vec::<String>::new());
    let body = ann_changes(&g, "?filter=sync_gateway/bychannel&channels=a,b").await;
    assert_eq!(ids(&body), ["a1", "ab"]);
    // POST with the parameters in the body.
    let r = Client::new()
        .post(public(&g, "/db/_changes"))
        .basic_auth("alice", Some("secret"))
        .json(&json!({"filter": "sync_gateway/bychannel", "channels": "c"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(ids(&json_of(r).await), ["c1"]);
    // _doc_ids, and ann still only gets what she may read.
    let body = admin_changes(&g, "?filter=_doc_ids&doc_ids=[\"c1\",\"a1\",\"nope\"]").await;
    assert_eq!(ids(&body), ["a1", "c1"]);
    let body = ann_changes(&g, "?filter=_doc_ids&doc_ids=c1,a1").await;
    assert_eq!(ids(&body), ["a1"]);

    for bad in [
        "?filter=app/by_type",
        "?filter=sync_gateway/bychannel",
        "?filter=_doc_ids&feed=longpoll&doc_ids=a1",
        "?feed=sideways",
    ] {
        let r = Client::new()
            .get(admin(&g, &format!("/db/_changes{bad}")))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::BAD_REQUEST, "{bad}");
        assert_eq!(json_of(r).await["error"], "Bad Request");
    }
    g.shutdown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn attachment_put_then_get() {
    let g = start().await;
    let c = Client::new();
    let bytes: Vec<u8> = (0..=255u8).cycle().take(3000).collect();
    let r = c
        .put(admin(&g, "/db/profile/photo"))
        .header("Content-Type", "image/png")
        .body(bytes.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::CREATED);
    let created = json_of(r).await;
    assert_eq!(created["id"], "profile");
    assert_eq!(created["ok"], true);
    let rev1 = created["rev"].as_str().unwrap().to_owned();
    assert!(rev1.starts_with("1-"), "{rev1}");

    for name in ["photo", "blob_%2Fphoto"] {
        let r = c
            .get(admin(&g, &format!("/db/profile/{name}")))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::OK, "{name}");
        assert_eq!(r.headers()["content-type"], "image/png");
        assert_eq!(r.bytes().await.unwrap().to_vec(), bytes, "{name}");
    }
    let doc = json_of(c.get(admin(&g, "/db/profile")).send().await.unwrap()).await;
    assert_eq!(doc["photo"]["@type"], "blob");
    assert_eq!(doc["_attachments"]["blob_/photo"]["length"], 3000);
    assert_eq!(doc["_attachments"]["blob_/photo"]["stub"], true);

    // No rev on an existing document, a stale rev, a rev on a missing document: 409.
    for url in [
        "/db/profile/other".to_owned(),
        "/db/profile/other?rev=1-00".to_owned(),
        "/db/missing/other?rev=1-00".to_owned(),
    ] {
        let r = c.put(admin(&g, &url)).body("x").send().await.unwrap();
        assert_eq!(r.status(), StatusCode::CONFLICT, "{url}");
        assert_eq!(json_of(r).await["error"], "conflict");
    }
    // A second attachment on the next revision keeps the first and the other properties.
    let doc_rev = put(
        &g,
        "profile",
        Some(&rev1),
        json!({"name": "Demo", "photo": doc["photo"]}),
    )
    .await;
    let r = c
        .put(admin(
            &g,
            &format!("/db/profile/blob_%2Fnote?rev={doc_rev}"),
        ))
        .header("Content-Type", "text/plain")
        .body("hello")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::CREATED);
    assert!(json_of(r).await["rev"].as_str().unwrap().starts_with("3-"));
    let doc = json_of(c.get(admin(&g, "/db/profile")).send().await.unwrap()).await;
    assert_eq!(doc["name"], "Demo");
    assert_eq!(doc["note"]["content_type"], "text/plain");
    assert_eq!(doc["photo"]["length"], 3000);
    let r = c.get(admin(&g, "/db/profile/note")).send().await.unwrap();
    assert_eq!(r.headers()["content-type"], "text/plain");
    assert_eq!(r.text().await.unwrap(), "hello");

    // Unsafe names are refused; other documents are not reachable by path tricks.
    for url in ["/db/profile/bad%01name", "/db/pro%00file/photo"] {
        let r = c.get(admin(&g, url)).send().await.unwrap();
        assert_eq!(r.status(), StatusCode::BAD_REQUEST, "{url}");
    }
    let r = c
        .put(admin(&g, "/db/new/blob_%2Fa%2Fb"))
        .body("x")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    let r = c
        .get(admin(&g, "/db/profile/..%2Fprofile"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
    g.shutdown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn inline_attachment_data_is_served() {
    let g = start().await;
    let c = Client::new();
    let data = base64::engine::general_purpose::STANDARD.encode(b"Hello, blob!\n");
    let r = c
        .put(admin(&g, "/db/user::demo"))
        .json(&json!({"type": "user",
            "_attachments": {"blob_/image": {"content_type": "image/jpeg", "data": data}}}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::CREATED);
    let doc = json_of(c.get(admin(&g, "/db/user::demo")).send().await.unwrap()).await;
    assert_eq!(
        doc["_attachments"]["blob_/image"],
        json!({"content_type": "image/jpeg", "digest": "sha1-GgXWuohWJOrFHeD9ZswSosQVmDc=",
               "length": 13, "revpos": 1, "stub": true})
    );
    assert_eq!(doc["image"]["digest"], "sha1-GgXWuohWJOrFHeD9ZswSosQVmDc=");
    let r = c
        .get(admin(&g, "/db/user::demo/blob_%2Fimage"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(r.headers()["content-type"], "image/jpeg");
    assert_eq!(r.bytes().await.unwrap().as_ref(), b"Hello, blob!\n");
    g.shutdown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn attachment_reads_are_filtered_by_channel() {
    let g = start().await;
    let c = Client::new();
    for (id, channel) in [("secret", "b"), ("open", "a")] {
        let r = c
            .put(admin(&g, &format!("/db/{id}")))
            .json(&json!({"channels": channel, "_attachments":
                {"file": {"content_type": "text/plain", "data": "aGk="}}}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::CREATED);
    }
    let get = |path: &str, user: &str, pass: &str| {
        c.get(public(&g, path))
            .basic_auth(user, Some(pass.to_owned()))
            .send()
    };
    let r = get("/db/secret/file", "ann", "annpass").await.unwrap();
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
    assert_eq!(
        json_of(r).await,
        json!({"error": "Forbidden", "reason": "forbidden"})
    );
    let r = get("/db/open/file", "ann", "annpass").await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(r.text().await.unwrap(), "hi");
    let r = get("/db/secret/file", "alice", "secret").await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    for path in [
        "/db/nope/file",
        "/db/open/nofile",
        "/db/open/blob_%2Fchannels",
    ] {
        let r = get(path, "ann", "annpass").await.unwrap();
        assert_eq!(r.status(), StatusCode::NOT_FOUND, "{path}");
        assert_eq!(json_of(r).await["error"], "not_found");
    }
    // Unauthenticated: 401, as for documents.
    let r = c.get(public(&g, "/db/open/file")).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    g.shutdown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn purge_removes_documents_from_reads_and_feeds() {
    let g = start().await;
    let c = Client::new();
    put(&g, "p1", None, json!({"channels": "a"})).await;
    put(&g, "p2", None, json!({"channels": "a"})).await;
    assert_eq!(ids(&ann_changes(&g, "").await), ["p1", "p2"]);

    let r = c
        .post(admin(&g, "/db/_purge"))
        .json(&json!({"p1": ["*"], "nope": ["*"]}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(json_of(r).await, json!({"purged": {"p1": ["*"]}}));

    assert_eq!(
        c.get(admin(&g, "/db/p1")).send().await.unwrap().status(),
        StatusCode::NOT_FOUND
    );
    assert_eq!(ids(&admin_changes(&g, "").await), ["p2"]);
    assert_eq!(ids(&ann_changes(&g, "").await), ["p2"]);
    // Purged documents can be created again from scratch.
    assert!(put(&g, "p1", None, json!({"channels": "a"}))
        .await
        .starts_with("1-"));

    let r = c
        .post(admin(&g, "/db/_purge"))
        .json(&json!({"p2": "*"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    // Not on the public port.
    let r = c
        .post(public(&g, "/db/_purge"))
        .basic_auth("alice", Some("secret"))
        .json(&json!({"p2": ["*"]}))
        .send()
        .await
        .unwrap();
    assert_ne!(r.status(), StatusCode::OK);
    assert_eq!(
        c.get(admin(&g, "/db/p2")).send().await.unwrap().status(),
        StatusCode::OK
    );
    g.shutdown().await;
}
