//! The gateway over real HTTP: REST calls with reqwest, replication with a ferrolite client.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use ferrolite::{Authenticator, Endpoint, ReplicatorConfiguration, ReplicatorType, SyncOutcome};
use ferrolite_gateway::{Gateway, GatewayConfig, Storage};
use reqwest::{Client, StatusCode};
use serde_json::{json, Value};

async fn start(extra_users: &str) -> Gateway {
    let config = GatewayConfig::from_json(&format!(
        r#"{{"interface":"127.0.0.1:0","adminInterface":"127.0.0.1:0",
            "databases":{{"db":{{"users":{{"alice":{{"password":"secret","admin_channels":["*"]}}{extra_users}}}}}}}}}"#
    ))
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

#[tokio::test(flavor = "multi_thread")]
async fn welcome_and_db_info() {
    let g = start("").await;
    let c = Client::new();
    let body = json_of(c.get(public(&g, "/")).send().await.unwrap()).await;
    assert_eq!(body["couchdb"], "Welcome");
    assert_eq!(body["vendor"]["name"], "Couchbase Sync Gateway");
    assert!(body.get("ADMIN").is_none());
    let body = json_of(c.get(admin(&g, "/")).send().await.unwrap()).await;
    assert_eq!(body["ADMIN"], true);

    let r = c.get(admin(&g, "/db/")).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let body = json_of(r).await;
    assert_eq!(body["db_name"], "db");
    assert_eq!(body["state"], "Online");
    assert_eq!(body["update_seq"], 0);
    assert_eq!(body["committed_update_seq"], 0);

    let r = c.get(admin(&g, "/nope/")).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
    assert_eq!(
        json_of(r).await,
        json!({"error":"not_found","reason":"no such database \"nope\""})
    );
    g.shutdown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn document_crud_with_conflicts() {
    let g = start("").await;
    let c = Client::new();
    let url = admin(&g, "/db/doc1");
    let r = c.put(&url).json(&json!({"name":"a"})).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::CREATED);
    let created = json_of(r).await;
    assert_eq!(created["ok"], true);
    assert_eq!(created["id"], "doc1");
    let rev1 = created["rev"].as_str().unwrap().to_owned();
    assert!(rev1.starts_with("1-"));

    // PUT without rev on a live doc.
    let r = c.put(&url).json(&json!({"name":"b"})).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::CONFLICT);
    assert_eq!(
        json_of(r).await,
        json!({"error":"conflict","reason":"Document exists"})
    );

    let r = c
        .put(format!("{url}?rev={rev1}"))
        .json(&json!({"name":"b"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::CREATED);
    let rev2 = json_of(r).await["rev"].as_str().unwrap().to_owned();
    assert!(rev2.starts_with("2-"));

    // Stale parent, in the body this time.
    let r = c
        .put(&url)
        .json(&json!({"_rev": rev1, "name":"c"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::CONFLICT);
    assert_eq!(json_of(r).await["reason"], "Document revision conflict");

    let r = c.get(&url).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(r.headers()["etag"], format!("\"{rev2}\"").as_str());
    assert_eq!(
        json_of(r).await,
        json!({"_id":"doc1","_rev":rev2,"name":"b"})
    );

    // _all_docs and _changes.
    c.put(admin(&g, "/db/doc2"))
        .json(&json!({"image":{"@type":"blob","content_type":"image/jpeg",
            "digest":"sha1-9OHO0QIk+kREiOaoMlrEg/jU4zU=","length":15110}}))
        .send()
        .await
        .unwrap();
    let got = json_of(c.get(admin(&g, "/db/doc2")).send().await.unwrap()).await;
    assert_eq!(
        got["_attachments"]["blob_/image"],
        json!({"content_type":"image/jpeg","digest":"sha1-9OHO0QIk+kREiOaoMlrEg/jU4zU=",
               "length":15110,"revpos":1,"stub":true})
    );
    let all = json_of(c.get(admin(&g, "/db/_all_docs")).send().await.unwrap()).await;
    assert_eq!(all["total_rows"], 2);
    assert_eq!(all["rows"][0]["id"], "doc1");
    assert_eq!(all["rows"][0]["value"]["rev"], rev2.as_str());
    let changes = json_of(c.get(admin(&g, "/db/_changes")).send().await.unwrap()).await;
    assert_eq!(changes["results"].as_array().unwrap().len(), 2);
    assert_eq!(changes["last_seq"], "3");
    let changes = json_of(
        c.get(admin(&g, "/db/_changes?since=2"))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(changes["results"][0]["id"], "doc2");

    // Delete: stale rev conflicts, the right one leaves a tombstone.
    let r = c.delete(format!("{url}?rev={rev1}")).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::CONFLICT);
    let r = c.delete(format!("{url}?rev={rev2}")).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let deleted = json_of(r).await;
    assert!(deleted["rev"].as_str().unwrap().starts_with("3-"));
    assert_eq!(
        c.get(&url).send().await.unwrap().status(),
        StatusCode::NOT_FOUND
    );
    // A PUT without rev on a tombstone recreates the document.
    let r = c
        .put(&url)
        .json(&json!({"name":"again"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::CREATED);
    assert!(json_of(r).await["rev"].as_str().unwrap().starts_with("4-"));

    // _bulk_docs.
    let r = c
        .post(admin(&g, "/db/_bulk_docs"))
        .json(&json!({"docs":[{"_id":"b1","x":1},{"_id":"doc2","x":2}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::CREATED);
    let results = json_of(r).await;
    assert!(results[0]["rev"].as_str().unwrap().starts_with("1-"));
    assert_eq!(results[1]["status"], 409);
    assert_eq!(results[1]["error"], "conflict");
    g.shutdown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn users_sessions_and_public_auth() {
    let g = start("").await;
    let c = Client::new();
    // Public requests need credentials (GUEST is disabled).
    let r = c.get(public(&g, "/db/")).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(
        r.headers()["www-authenticate"],
        "Basic realm=\"Couchbase Sync Gateway\""
    );
    assert_eq!(
        json_of(r).await,
        json!({"error":"Unauthorized","reason":"Login required"})
    );
    let r = c
        .get(public(&g, "/db/"))
        .basic_auth("alice", Some("wrong"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(json_of(r).await["reason"], "Invalid login");
    let r = c
        .get(public(&g, "/db/"))
        .basic_auth("alice", Some("secret"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);

    // Create a user on the admin port.
    let r = c
        .put(admin(&g, "/db/_user/bob"))
        .json(&json!({"password":"letmein","admin_channels":["bob"]}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::CREATED);
    let user = json_of(c.get(admin(&g, "/db/_user/bob")).send().await.unwrap()).await;
    assert_eq!(user["name"], "bob");
    assert_eq!(user["admin_channels"], json!(["bob"]));
    assert!(user.get("password").is_none());
    // Users are not served on the public port.
    assert_eq!(
        c.get(public(&g, "/db/_user/bob"))
            .basic_auth("bob", Some("letmein"))
            .send()
            .await
            .unwrap()
            .status(),
        StatusCode::NOT_FOUND
    );

    // Session with JSON credentials, then the cookie authenticates.
    let r = c
        .post(public(&g, "/db/_session"))
        .json(&json!({"name":"bob","password":"letmein"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let set_cookie = r.headers()["set-cookie"].to_str().unwrap().to_owned();
    assert!(
        set_cookie.starts_with("SyncGatewaySession="),
        "{set_cookie}"
    );
    assert!(set_cookie.contains("; Path=/db; Expires="), "{set_cookie}");
    assert_eq!(json_of(r).await["userCtx"]["name"], "bob");
    let session = set_cookie
        .split(';')
        .next()
        .unwrap()
        .trim_start_matches("SyncGatewaySession=")
        .to_owned();
    assert_eq!(session.len(), 40);
    let cookie = format!("SyncGatewaySession={session}");
    let r = c
        .put(public(&g, "/db/fromcookie"))
        .header("Cookie", &cookie)
        .json(&json!({"a":1}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::CREATED);
    let r = c
        .get(public(&g, "/db/_session"))
        .header("Cookie", &cookie)
        .send()
        .await
        .unwrap();
    assert_eq!(json_of(r).await["userCtx"]["name"], "bob");
    // Log out: the cookie no longer works.
    let r = c
        .delete(public(&g, "/db/_session"))
        .header("Cookie", &cookie)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let r = c
        .get(public(&g, "/db/fromcookie"))
        .header("Cookie", &cookie)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(json_of(r).await["reason"], "Session Invalid");
    // Wrong password for a session.
    let r = c
        .post(public(&g, "/db/_session"))
        .json(&json!({"name":"bob","password":"nope"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);

    // Deleting a user; GUEST cannot be deleted but can be enabled.
    let r = c.delete(admin(&g, "/db/_user/GUEST")).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::METHOD_NOT_ALLOWED);
    let r = c
        .put(admin(&g, "/db/_user/GUEST"))
        .json(&json!({"disabled":false}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(
        c.get(public(&g, "/db/")).send().await.unwrap().status(),
        StatusCode::OK
    );
    let r = c.delete(admin(&g, "/db/_user/bob")).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let r = c
        .get(public(&g, "/db/"))
        .basic_auth("bob", Some("letmein"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    g.shutdown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn malformed_and_oversized_bodies() {
    let g = start("").await;
    let c = Client::new();
    let r = c
        .put(admin(&g, "/db/bad"))
        .header("Content-Type", "application/json")
        .body("{not json")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    let body = json_of(r).await;
    assert_eq!(body["error"], "Bad Request");
    assert!(body["reason"].as_str().unwrap().starts_with("Invalid JSON"));

    let big = format!(
        "{{\"x\":\"{}\"}}",
        "a".repeat(ferrolite_gateway::MAX_BODY_SIZE)
    );
    let r = c.put(admin(&g, "/db/big")).body(big).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(
        json_of(r).await,
        json!({"error":"Payload Too Large","reason":"Document too large!"})
    );
    let r = c.get(admin(&g, "/db/a/b/c")).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
    assert_eq!(json_of(r).await["error"], "not_found");
    g.shutdown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn ferrolite_client_pulls_over_blipsync() {
    let g = start("").await;
    let c = Client::new();
    let r = c
        .put(public(&g, "/db/user::demo"))
        .basic_auth("alice", Some("secret"))
        .json(&json!({"type":"user","name":"Demo"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::CREATED);

    let url = format!("ws://{}/db", g.public_addr());
    let outcome = tokio::task::spawn_blocking(move || {
        let phone = ferrolite::Database::open_in_memory("phone").unwrap();
        let bad = ReplicatorConfiguration::new(&phone, Endpoint::url(&url).unwrap())
            .replicator_type(ReplicatorType::Pull)
            .authenticator(Authenticator::basic("alice", "wrong"));
        let refused = ferrolite::sync_once(bad, Duration::from_secs(20));
        let config = ReplicatorConfiguration::new(&phone, Endpoint::url(&url).unwrap())
            .replicator_type(ReplicatorType::Pull)
            .authenticator(Authenticator::basic("alice", "secret"));
        let outcome = ferrolite::sync_once(config, Duration::from_secs(20));
        let doc = phone.document("user::demo").unwrap();
        (refused, outcome, doc.map(|d| d.properties().clone()))
    })
    .await
    .unwrap();
    assert!(
        matches!(outcome.0, SyncOutcome::Failed { .. }),
        "{:?}",
        outcome.0
    );
    match &outcome.1 {
        SyncOutcome::NewData { document_ids, .. } => assert_eq!(document_ids, &["user::demo"]),
        other => panic!("expected new data, got {other:?}"),
    }
    assert_eq!(
        serde_json::Value::Object(outcome.2.unwrap()),
        json!({"type":"user","name":"Demo"})
    );
    g.shutdown().await;
}

/// Starts a gateway whose user `ann` reads channel "a", with docs "a1" in "a", "b1" in "b",
/// "ab" in both, and "none" in no channel, all written on the admin port.
async fn start_with_channels() -> Gateway {
    let g = start(r#","ann":{"password":"annpass","admin_channels":["a"]}"#).await;
    let c = Client::new();
    for (id, body) in [
        ("a1", json!({"channels":"a","n":1})),
        ("b1", json!({"channels":["b"],"n":2})),
        ("ab", json!({"channels":["a","b"],"n":3})),
        ("none", json!({"n":4})),
    ] {
        let r = c
            .put(admin(&g, &format!("/db/{id}")))
            .json(&body)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::CREATED);
    }
    g
}

fn ids(rows: &Value, key: &str) -> Vec<String> {
    let mut ids: Vec<String> = rows
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r[key].as_str().unwrap().to_owned())
        .collect();
    ids.sort();
    ids
}

#[tokio::test(flavor = "multi_thread")]
async fn public_reads_are_filtered_by_channel() {
    let g = start_with_channels().await;
    let c = Client::new();
    let get = |path: &str, user: &str, pass: &str| {
        c.get(public(&g, path))
            .basic_auth(user, Some(pass.to_owned()))
            .send()
    };
    assert_eq!(get("/db/a1", "ann", "annpass").await.unwrap().status(), 200);
    assert_eq!(get("/db/ab", "ann", "annpass").await.unwrap().status(), 200);
    for id in ["b1", "none"] {
        let r = get(&format!("/db/{id}"), "ann", "annpass").await.unwrap();
        assert_eq!(r.status(), StatusCode::FORBIDDEN, "{id}");
        assert_eq!(
            json_of(r).await,
            json!({"error":"Forbidden","reason":"forbidden"})
        );
    }
    // A missing document is still 404.
    assert_eq!(
        get("/db/nope", "ann", "annpass").await.unwrap().status(),
        404
    );

    let body = json_of(
        get("/db/_all_docs?include_docs=true", "ann", "annpass")
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(ids(&body["rows"], "id"), ["a1", "ab"]);
    assert_eq!(body["total_rows"], 2);
    let body = json_of(get("/db/_changes", "ann", "annpass").await.unwrap()).await;
    assert_eq!(ids(&body["results"], "id"), ["a1", "ab"]);

    // alice has "*": everything, as on the admin port.
    let body = json_of(get("/db/_all_docs", "alice", "secret").await.unwrap()).await;
    assert_eq!(ids(&body["rows"], "id"), ["a1", "ab", "b1", "none"]);
    assert_eq!(
        get("/db/b1", "alice", "secret").await.unwrap().status(),
        200
    );
    let body = json_of(c.get(admin(&g, "/db/_changes")).send().await.unwrap()).await;
    assert_eq!(ids(&body["results"], "id"), ["a1", "ab", "b1", "none"]);
    let body = json_of(c.get(admin(&g, "/db/_all_docs")).send().await.unwrap()).await;
    assert_eq!(ids(&body["rows"], "id"), ["a1", "ab", "b1", "none"]);
    assert_eq!(
        c.get(admin(&g, "/db/none")).send().await.unwrap().status(),
        200
    );

    // Moving a1 to "b" hides it from ann; its deletion is seen by readers of the
    // channels it was in.
    let rev = json_of(c.get(admin(&g, "/db/ab")).send().await.unwrap()).await["_rev"]
        .as_str()
        .unwrap()
        .to_owned();
    let r = c
        .delete(admin(&g, &format!("/db/ab?rev={rev}")))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let rev = json_of(c.get(admin(&g, "/db/a1")).send().await.unwrap()).await["_rev"]
        .as_str()
        .unwrap()
        .to_owned();
    let r = c
        .put(admin(&g, &format!("/db/a1?rev={rev}")))
        .json(&json!({"channels":"b"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::CREATED);
    assert_eq!(
        get("/db/a1", "ann", "annpass").await.unwrap().status(),
        StatusCode::FORBIDDEN
    );
    let body = json_of(get("/db/_changes", "ann", "annpass").await.unwrap()).await;
    // a1 left ann's channels: it shows as a removal; ab's deletion is seen.
    let results = body["results"].as_array().unwrap();
    let entry = |id: &str| results.iter().find(|r| r["id"] == id).unwrap().clone();
    assert_eq!(results.len(), 2, "{body}");
    assert_eq!(entry("a1")["removed"], json!(["a"]));
    assert_eq!(entry("ab")["deleted"], true);
    g.shutdown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn guest_reads_its_channels() {
    let g = start(r#","GUEST":{"disabled":false,"admin_channels":["pub"]}"#).await;
    let c = Client::new();
    for (id, ch) in [("p", "pub"), ("q", "priv"), ("bang", "!")] {
        let r = c
            .put(admin(&g, &format!("/db/{id}")))
            .json(&json!({ "channels": ch }))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::CREATED);
    }
    assert_eq!(
        c.get(public(&g, "/db/p")).send().await.unwrap().status(),
        200
    );
    assert_eq!(
        c.get(public(&g, "/db/bang")).send().await.unwrap().status(),
        200
    );
    assert_eq!(
        c.get(public(&g, "/db/q")).send().await.unwrap().status(),
        403
    );
    let body = json_of(c.get(public(&g, "/db/_all_docs")).send().await.unwrap()).await;
    assert_eq!(ids(&body["rows"], "id"), ["bang", "p"]);
    g.shutdown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn blipsync_pulls_only_readable_documents() {
    let g = start_with_channels().await;
    let url = format!("ws://{}/db", g.public_addr());
    let (ann, alice) = tokio::task::spawn_blocking(move || {
        let pull = |user: &str, pass: &str| {
            let phone = ferrolite::Database::open_in_memory(user).unwrap();
            let config = ReplicatorConfiguration::new(&phone, Endpoint::url(&url).unwrap())
                .replicator_type(ReplicatorType::Pull)
                .authenticator(Authenticator::basic(user, pass));
            match ferrolite::sync_once(config, Duration::from_secs(20)) {
                SyncOutcome::NewData { document_ids, .. } => {
                    let mut ids = document_ids.clone();
                    ids.sort();
                    ids
                }
                other => panic!("expected new data, got {other:?}"),
            }
        };
        (pull("ann", "annpass"), pull("alice", "secret"))
    })
    .await
    .unwrap();
    assert_eq!(ann, ["a1", "ab"]);
    assert_eq!(alice, ["a1", "ab", "b1", "none"]);
    g.shutdown().await;
}
