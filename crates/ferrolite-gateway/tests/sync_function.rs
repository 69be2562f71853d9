//! The JavaScript sync function in a running gateway: validation on REST and `_blipsync`
//! writes, `access()` grants and their revocation reaching a ferrolite client, a runaway
//! script refused while other writes proceed, a syntax error stopping the start.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use ferrolite::{
    Authenticator, Database, Endpoint, MutableDocument, Replicator, ReplicatorConfiguration,
    ReplicatorType,
};
use ferrolite_gateway::{Gateway, GatewayConfig, GatewayError, Storage};
use reqwest::{Client, StatusCode};
use serde_json::{json, Value};

fn config_with_sync(sync: &str, extra: &str) -> GatewayConfig {
    let config = json!({
        "interface": "127.0.0.1:0",
        "adminInterface": "127.0.0.1:0",
        "databases": {"db": {
            "users": {
                "bob": {"password": "bobpass"},
                "eve": {"password": "evepass"}
            },
            "sync": sync
        }}
    });
    let mut text = config.to_string();
    if !extra.is_empty() {
        // Extra database keys, spliced into the database object.
        text = text.replacen("\"sync\":", &format!("{extra},\"sync\":"), 1);
    }
    GatewayConfig::from_json(&text).unwrap()
}

const GRANTS: &str = r#"function(doc, oldDoc) {
    if (doc.type == "grant") {
        requireAdmin();
        access(doc.user, doc.channels);
        return;
    }
    if (doc.loop) { while (true) {} }
    if (doc.owner) { requireUser(doc.owner); }
    if (doc.bad) { throw({forbidden: "bad documents are refused"}); }
    channel(doc.channels);
}"#;

fn admin(g: &Gateway, path: &str) -> String {
    format!("http://{}{path}", g.admin_addr())
}

fn public(g: &Gateway, path: &str) -> String {
    format!("http://{}{path}", g.public_addr())
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
async fn rest_writes_are_validated_by_the_function() {
    let g = Gateway::start(&config_with_sync(GRANTS, ""), Storage::InMemory)
        .await
        .unwrap();
    let c = Client::new();
    // requireUser: bob may write his own document, not eve's.
    let r = c
        .put(public(&g, "/db/mine"))
        .basic_auth("bob", Some("bobpass"))
        .json(&json!({"owner": "bob", "channels": "b"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::CREATED);
    let r = c
        .put(public(&g, "/db/theirs"))
        .basic_auth("bob", Some("bobpass"))
        .json(&json!({"owner": "eve"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["reason"], "sg wrong user");
    // The admin port passes require* checks, but a thrown forbidden still refuses.
    let r = c
        .put(admin(&g, "/db/theirs"))
        .json(&json!({"owner": "eve"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::CREATED);
    let r = c
        .put(admin(&g, "/db/bad"))
        .json(&json!({"bad": true}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["reason"], "bad documents are refused");
    // requireAdmin on a public write.
    let r = c
        .put(public(&g, "/db/g"))
        .basic_auth("bob", Some("bobpass"))
        .json(&json!({"type": "grant", "user": "bob", "channels": ["x"]}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
    g.shutdown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_runaway_function_is_stopped_while_other_writes_proceed() {
    let g = Gateway::start(
        &config_with_sync(GRANTS, r#""javascript_timeout_secs":1"#),
        Storage::InMemory,
    )
    .await
    .unwrap();
    let c = Client::new();
    let looping = {
        let c = c.clone();
        let url = admin(&g, "/db/loop");
        tokio::spawn(async move {
            let started = Instant::now();
            let r = c
                .put(url)
                .json(&json!({"loop": true}))
                .send()
                .await
                .unwrap();
            (
                r.status(),
                r.json::<Value>().await.unwrap(),
                started.elapsed(),
            )
        })
    };
    for i in 0..5 {
        let r = c
            .put(admin(&g, &format!("/db/ok{i}")))
            .json(&json!({"channels": "a"}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::CREATED);
    }
    let (status, body, took) = looping.await.unwrap();
    assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR);
    assert_eq!(body["reason"], "JS sync function timed out");
    assert!(took < Duration::from_secs(20), "took {took:?}");
    let r = c.get(admin(&g, "/db/loop")).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
    g.shutdown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_syntax_error_stops_the_start_with_its_position() {
    let config = config_with_sync("function(doc) {\n  channel(doc.channels\n}", "");
    let err = Gateway::start(&config, Storage::InMemory)
        .await
        .unwrap_err();
    assert!(matches!(err, GatewayError::SyncFunction { .. }), "{err}");
    let text = err.to_string();
    assert!(text.contains("line"), "{text}");
}

#[tokio::test(flavor = "multi_thread")]
async fn access_grants_and_revocation_reach_a_client_which_purges() {
    let g = Gateway::start(&config_with_sync(GRANTS, ""), Storage::InMemory)
        .await
        .unwrap();
    let c = Client::new();
    for i in 1..=2 {
        let r = c
            .put(admin(&g, &format!("/db/s{i}")))
            .json(&json!({"channels": "secret", "n": i}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::CREATED);
    }
    let url = format!("ws://{}/db", g.public_addr());
    let phone = Database::open_in_memory("phone").unwrap();
    let config = ReplicatorConfiguration::new(&phone, Endpoint::url(&url).unwrap())
        .replicator_type(ReplicatorType::PushAndPull)
        .continuous(true)
        .authenticator(Authenticator::basic("bob", "bobpass"));
    let replicator = Replicator::new(config).unwrap();
    let removed: Arc<Mutex<HashSet<String>>> = Arc::default();
    let rejected: Arc<Mutex<HashSet<String>>> = Arc::default();
    {
        let (removed, rejected) = (removed.clone(), rejected.clone());
        let _token = replicator.add_document_replication_listener(move |docs| {
            for d in docs {
                if d.access_removed {
                    removed.lock().unwrap().insert(d.id.clone());
                }
                if d.error.is_some() {
                    rejected.lock().unwrap().insert(d.id.clone());
                }
            }
        });
    }
    replicator.start();

    // A push the function refuses is reported rejected and never stored.
    let mut doc = MutableDocument::with_id("pushed-bad");
    doc.set("bad", true);
    phone.save(&mut doc).unwrap();
    let mut doc = MutableDocument::with_id("pushed-ok");
    doc.set("owner", "bob");
    doc.set("channels", "b");
    phone.save(&mut doc).unwrap();
    let rejected2 = rejected.clone();
    tokio::task::spawn_blocking(move || {
        wait_for("the rejected push", || {
            rejected2.lock().unwrap().contains("pushed-bad")
        });
    })
    .await
    .unwrap();
    let r = c.get(admin(&g, "/db/pushed-bad")).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
    let c2 = c.clone();
    let ok_url = admin(&g, "/db/pushed-ok");
    let start = Instant::now();
    loop {
        let status = c2.get(&ok_url).send().await.unwrap().status();
        if status == StatusCode::OK {
            break;
        }
        assert!(start.elapsed() < Duration::from_secs(30), "push not stored");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // access(): the grant document gives bob the channel; its documents arrive.
    let r = c
        .put(admin(&g, "/db/grant-bob"))
        .json(&json!({"type": "grant", "user": "bob", "channels": ["secret"]}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::CREATED);
    let grant_rev = r.json::<Value>().await.unwrap()["rev"]
        .as_str()
        .unwrap()
        .to_owned();
    let phone2 = phone.clone();
    tokio::task::spawn_blocking(move || {
        wait_for("the granted documents", || {
            phone2.document("s1").unwrap().is_some() && phone2.document("s2").unwrap().is_some()
        });
    })
    .await
    .unwrap();

    // The grant goes away: bob's client purges the documents and reports the removal.
    let r = c
        .put(admin(&g, &format!("/db/grant-bob?rev={grant_rev}")))
        .json(&json!({"type": "grant", "user": "bob", "channels": []}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::CREATED);
    let phone2 = phone.clone();
    let removed2 = removed.clone();
    tokio::task::spawn_blocking(move || {
        wait_for("the purge", || {
            phone2.document("s1").unwrap().is_none() && phone2.document("s2").unwrap().is_none()
        });
        wait_for("access-removed events", || {
            let r = removed2.lock().unwrap();
            r.contains("s1") && r.contains("s2")
        });
    })
    .await
    .unwrap();
    replicator.stop();
    g.shutdown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_grant_that_went_away_while_the_client_was_offline_purges_on_its_next_pull() {
    let g = Gateway::start(&config_with_sync(GRANTS, ""), Storage::InMemory)
        .await
        .unwrap();
    let c = Client::new();
    for (id, channel) in [("s1", "secret"), ("s2", "secret"), ("o1", "open")] {
        let r = c
            .put(admin(&g, &format!("/db/{id}")))
            .json(&json!({"channels": channel}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::CREATED);
    }
    let r = c
        .put(admin(&g, "/db/grant-bob"))
        .json(&json!({"type": "grant", "user": "bob", "channels": ["secret", "open"]}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::CREATED);
    let grant_rev = r.json::<Value>().await.unwrap()["rev"]
        .as_str()
        .unwrap()
        .to_owned();
    let url = format!("ws://{}/db", g.public_addr());
    let phone = Database::open_in_memory("phone").unwrap();
    let pull = |phone: &Database| {
        let config = ReplicatorConfiguration::new(phone, Endpoint::url(&url).unwrap())
            .replicator_type(ReplicatorType::Pull)
            .authenticator(Authenticator::basic("bob", "bobpass"));
        let phone = phone.clone();
        tokio::task::spawn_blocking(move || {
            let outcome = ferrolite::sync_once(config, Duration::from_secs(20));
            let mut ids: Vec<String> = ["s1", "s2", "o1"]
                .into_iter()
                .filter(|id| phone.document(id).unwrap().is_some())
                .map(str::to_owned)
                .collect();
            ids.sort();
            (outcome, ids)
        })
    };
    let (outcome, ids) = pull(&phone).await.unwrap();
    assert!(
        !matches!(outcome, ferrolite::SyncOutcome::Failed(_)),
        "{outcome:?}"
    );
    assert_eq!(ids, ["o1", "s1", "s2"]);

    // Offline, the grant of `secret` goes away (`open` stays); the next pull purges.
    let r = c
        .put(admin(&g, &format!("/db/grant-bob?rev={grant_rev}")))
        .json(&json!({"type": "grant", "user": "bob", "channels": ["open"]}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::CREATED);
    let (outcome, ids) = pull(&phone).await.unwrap();
    assert!(
        !matches!(outcome, ferrolite::SyncOutcome::Failed(_)),
        "{outcome:?}"
    );
    assert_eq!(ids, ["o1"]);
    g.shutdown().await;
}
