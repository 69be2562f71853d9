//! The replicator's decisions through the facade, end to end: on-disk databases in
//! temporary directories, a "server" database served over a real WebSocket on 127.0.0.1 by
//! a `UrlEndpointListener`, and a "phone" database replicating with it — conflict
//! resolution (default rule, custom resolver, 409 on push, continuous), push and pull
//! filters, document IDs, channels, pending documents and document events with flags.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use ferrolite::{
    ActivityLevel, ConflictResolution, Database, DatabaseConfiguration, Direction, Endpoint,
    ErrorDomain, MutableDocument, ReplicatedDocument, Replicator, ReplicatorConfiguration,
    ReplicatorError, ReplicatorType, RevId, UrlEndpointListener, UrlEndpointListenerConfiguration,
};
use serde_json::{json, Value};

/// Longest wait for something that should happen quickly.
const WAIT: Duration = Duration::from_secs(10);

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

/// The phone, the server, and the listener serving the server over WebSocket.
struct Setup {
    phone: Peer,
    server: Peer,
    listener: UrlEndpointListener,
}

fn setup() -> Setup {
    let phone = peer("phone");
    let server = peer("server");
    let listener = UrlEndpointListener::start(
        UrlEndpointListenerConfiguration::new(vec![server.db.clone()])
            .network_interface("127.0.0.1"),
    )
    .unwrap();
    Setup {
        phone,
        server,
        listener,
    }
}

impl Setup {
    fn config(&self, replicator_type: ReplicatorType) -> ReplicatorConfiguration {
        let target = Endpoint::url(&self.listener.url(self.server.db.name())).unwrap();
        ReplicatorConfiguration::new(&self.phone.db, target).replicator_type(replicator_type)
    }
}

/// Saves `properties` as the next revision of `id`; returns the new revision ID.
fn put(db: &Database, id: &str, properties: Value) -> RevId {
    let mut doc = match db.document(id).unwrap() {
        Some(existing) => existing.to_mutable(),
        None => MutableDocument::with_id(id),
    };
    doc.set_properties(properties.as_object().unwrap().clone());
    db.save(&mut doc).unwrap();
    db.document(id).unwrap().unwrap().revision_id().clone()
}

fn delete(db: &Database, id: &str) {
    let doc = db.document(id).unwrap().unwrap();
    db.delete(&doc).unwrap();
}

fn properties(db: &Database, id: &str) -> Option<Value> {
    db.document(id)
        .unwrap()
        .map(|d| Value::Object(d.properties().clone()))
}

/// Every document's current revision, deleted flag and properties.
fn snapshot(db: &Database) -> Vec<(String, String, bool, Option<Value>)> {
    let mut out: Vec<_> = db
        .changes(0)
        .unwrap()
        .map(|c| {
            let c = c.unwrap();
            let props = properties(db, &c.id);
            (c.id, c.rev.to_string(), c.deleted, props)
        })
        .collect();
    out.sort_by(|a, b| a.0.cmp(&b.0));
    out
}

/// The current revision of `id` (deleted or not).
fn current_rev(db: &Database, id: &str) -> (RevId, bool) {
    db.changes(0)
        .unwrap()
        .map(Result::unwrap)
        .find(|c| c.id == id)
        .map(|c| (c.rev, c.deleted))
        .unwrap()
}

/// Runs a one-shot replicator to the end; panics on error.
fn run(replicator: &Replicator) {
    replicator.start();
    let status = replicator
        .wait_until_stopped(WAIT)
        .expect("a one-shot replicator stops by itself");
    assert_eq!(status.activity, ActivityLevel::Stopped);
    assert!(status.error.is_none(), "{:?}", status.error);
}

/// Records every document event.
fn record_documents(replicator: &Replicator) -> Arc<Mutex<Vec<Vec<ReplicatedDocument>>>> {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let sink = seen.clone();
    let _token = replicator.add_document_replication_listener(move |batch| {
        sink.lock().unwrap().push(batch.to_vec());
    });
    seen
}

fn flat(batches: &Mutex<Vec<Vec<ReplicatedDocument>>>) -> Vec<ReplicatedDocument> {
    batches.lock().unwrap().iter().flatten().cloned().collect()
}

fn eventually(what: &str, check: impl Fn() -> bool) {
    let start = Instant::now();
    while !check() {
        assert!(start.elapsed() < WAIT, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

// ---------------------------------------------------------------------------------------
// Conflicts
// ---------------------------------------------------------------------------------------

#[test]
fn default_resolution_writes_on_the_remote_revision_and_both_sides_converge() {
    let s = setup();
    let (phone, server) = (&s.phone.db, &s.server.db);
    for id in ["deleted-here", "longer-here", "longer-there"] {
        put(phone, id, json!({"v": 0}));
    }
    let replicator = Replicator::new(s.config(ReplicatorType::PushAndPull)).unwrap();
    run(&replicator);

    delete(phone, "deleted-here");
    let edited_there = put(server, "deleted-here", json!({"v": "server"}));
    put(phone, "longer-here", json!({"v": 1}));
    put(phone, "longer-here", json!({"v": "phone"}));
    let shorter_there = put(server, "longer-here", json!({"v": "server"}));
    put(phone, "longer-there", json!({"v": "phone"}));
    put(server, "longer-there", json!({"v": 1}));
    let longer_there = put(server, "longer-there", json!({"v": "server"}));

    let events = record_documents(&replicator);
    run(&replicator);
    if snapshot(phone) != snapshot(server) {
        run(&replicator); // a one-shot push-and-pull converges in at most two runs
    }
    assert_eq!(snapshot(phone), snapshot(server));

    // Deletion wins: a tombstone on top of the server's revision.
    let (rev, deleted) = current_rev(server, "deleted-here");
    assert!(deleted);
    assert_eq!(rev, RevId::compute(Some(&edited_there), true, b"{}"));
    // The higher generation wins: the phone's body, on top of the server's revision.
    let merged = server.document("longer-here").unwrap().unwrap();
    assert_eq!(
        merged.revision_id(),
        &RevId::compute(Some(&shorter_there), false, merged.json())
    );
    assert_eq!(
        properties(server, "longer-here"),
        Some(json!({"v": "phone"}))
    );
    // The server's longer branch wins as it is.
    assert_eq!(current_rev(phone, "longer-there").0, longer_there);
    assert_eq!(
        properties(phone, "longer-there"),
        Some(json!({"v": "server"}))
    );

    // The conflicts were reported on the pull side, LiteCore's conflict code 8.
    let conflicted: HashSet<String> = flat(&events)
        .into_iter()
        .filter(|d| d.direction == Direction::Pull)
        .filter(|d| {
            d.error
                .clone()
                .map(ferrolite::Error::from)
                .is_some_and(|e| e.domain() == ErrorDomain::Ferrolite && e.code() == 8)
        })
        .map(|d| d.id)
        .collect();
    assert_eq!(
        conflicted,
        ["deleted-here", "longer-here", "longer-there"]
            .map(String::from)
            .into()
    );
}

#[test]
fn a_custom_resolver_merges_properties() {
    let s = setup();
    let (phone, server) = (&s.phone.db, &s.server.db);
    put(phone, "profile", json!({"name": "Ann", "city": "Oslo"}));
    let seen = Arc::new(Mutex::new(Vec::new()));
    let sink = seen.clone();
    let config = s
        .config(ReplicatorType::PushAndPull)
        .conflict_resolver(move |conflict| {
            let local = conflict.local_document().expect("live");
            let remote = conflict.remote_document().expect("live");
            sink.lock().unwrap().push((
                conflict.document_id().to_owned(),
                local.revision_id().clone(),
                conflict.remote_revision_id().clone(),
            ));
            let mut merged = remote.properties().clone();
            for (key, value) in local.properties() {
                merged.entry(key.clone()).or_insert(value.clone());
            }
            merged.insert("merged".into(), json!(true));
            ConflictResolution::Merged(merged)
        });
    let replicator = Replicator::new(config).unwrap();
    run(&replicator);

    let ours = put(
        phone,
        "profile",
        json!({"name": "Ann", "city": "Oslo", "phone": "123"}),
    );
    let theirs = put(server, "profile", json!({"name": "Ann B.", "city": "Oslo"}));
    run(&replicator);
    if snapshot(phone) != snapshot(server) {
        run(&replicator);
    }
    assert_eq!(snapshot(phone), snapshot(server));
    let expected = json!({"name": "Ann B.", "city": "Oslo", "phone": "123", "merged": true});
    assert_eq!(properties(server, "profile"), Some(expected));
    let doc = server.document("profile").unwrap().unwrap();
    assert_eq!(
        doc.revision_id(),
        &RevId::compute(Some(&theirs), false, doc.json())
    );
    assert_eq!(
        *seen.lock().unwrap(),
        vec![("profile".to_owned(), ours, theirs)]
    );
}

#[test]
fn a_push_refused_with_409_is_resolved_by_the_next_pull_and_pushed() {
    let s = setup();
    let (phone, server) = (&s.phone.db, &s.server.db);
    put(phone, "doc", json!({"v": 0}));
    let push = Replicator::new(s.config(ReplicatorType::Push)).unwrap();
    run(&push);
    put(phone, "doc", json!({"v": 1}));
    put(phone, "doc", json!({"v": 2, "by": "phone"}));
    let theirs = put(server, "doc", json!({"v": 1, "by": "server"}));

    let events = record_documents(&push);
    run(&push);
    let refused = flat(&events);
    assert_eq!(refused.len(), 1);
    assert_eq!(refused[0].direction, Direction::Push);
    assert!(matches!(
        refused[0].error,
        Some(ReplicatorError::Conflict { .. })
    ));
    assert_eq!(
        properties(server, "doc"),
        Some(json!({"v": 1, "by": "server"}))
    );

    let both = Replicator::new(s.config(ReplicatorType::PushAndPull)).unwrap();
    run(&both);
    if snapshot(phone) != snapshot(server) {
        run(&both);
    }
    assert_eq!(snapshot(phone), snapshot(server));
    // The phone's higher generation won, written on top of the server's revision.
    let doc = server.document("doc").unwrap().unwrap();
    assert_eq!(
        doc.revision_id(),
        &RevId::compute(Some(&theirs), false, doc.json())
    );
    assert_eq!(
        properties(server, "doc"),
        Some(json!({"v": 2, "by": "phone"}))
    );
}

#[test]
fn continuous_push_and_pull_converges_after_conflicting_edits() {
    let s = setup();
    let (phone, server) = (&s.phone.db, &s.server.db);
    put(phone, "doc", json!({"v": 0}));
    let once = Replicator::new(s.config(ReplicatorType::PushAndPull)).unwrap();
    run(&once);
    put(phone, "doc", json!({"v": 1, "by": "phone"}));
    put(server, "doc", json!({"v": 1, "by": "server"}));
    put(server, "doc", json!({"v": 2, "by": "server"}));

    let replicator =
        Replicator::new(s.config(ReplicatorType::PushAndPull).continuous(true)).unwrap();
    replicator.start();
    eventually("both sides converge", || {
        snapshot(phone) == snapshot(server)
            && properties(phone, "doc") == Some(json!({"v": 2, "by": "server"}))
    });
    eventually("idle", || {
        replicator.status().activity == ActivityLevel::Idle
    });
    // Edits keep flowing afterwards.
    put(phone, "doc", json!({"v": 3, "by": "phone"}));
    eventually("the next edit", || {
        properties(server, "doc") == Some(json!({"v": 3, "by": "phone"}))
    });
    replicator.stop();
    replicator.wait_until_stopped(WAIT).unwrap();
}

// ---------------------------------------------------------------------------------------
// Filters, document IDs, channels, pending documents
// ---------------------------------------------------------------------------------------

#[test]
fn push_filter_skips_until_the_document_changes_and_pending_documents_follow() {
    let s = setup();
    let (phone, server) = (&s.phone.db, &s.server.db);
    put(phone, "note", json!({"type": "note"}));
    put(phone, "draft", json!({"type": "draft"}));
    put(phone, "gone", json!({"type": "note"}));
    delete(phone, "gone");
    let allow_drafts = Arc::new(AtomicBool::new(false));
    let allow = allow_drafts.clone();
    let flags_seen = Arc::new(Mutex::new(Vec::new()));
    let flags_sink = flags_seen.clone();
    let config = s
        .config(ReplicatorType::Push)
        .push_filter(move |doc, flags| {
            flags_sink
                .lock()
                .unwrap()
                .push((doc.id().to_owned(), flags));
            allow.load(Ordering::SeqCst) || doc.get("type") != Some(&json!("draft"))
        });
    let replicator = Replicator::new(config).unwrap();

    // Before connecting: from the (absent) local checkpoint, through the push filter.
    assert_eq!(
        replicator.pending_document_ids().unwrap(),
        ["note", "gone"].map(String::from).into()
    );
    assert!(replicator.is_document_pending("gone").unwrap());
    assert!(!replicator.is_document_pending("draft").unwrap());

    let events = record_documents(&replicator);
    run(&replicator);
    assert!(replicator.pending_document_ids().unwrap().is_empty());
    assert!(server.document("note").unwrap().is_some());
    assert!(current_rev(server, "gone").1, "the deletion was pushed");
    assert!(server.document("draft").unwrap().is_none());
    let pushed: Vec<_> = flat(&events);
    assert!(pushed
        .iter()
        .all(|d| d.direction == Direction::Push && d.error.is_none()));
    let gone = pushed.iter().find(|d| d.id == "gone").unwrap();
    assert!(gone.flags().deleted && gone.deleted);
    assert!(flags_seen
        .lock()
        .unwrap()
        .iter()
        .any(|(id, flags)| id == "gone" && flags.deleted));

    // Allowing drafts does not reconsider the skipped revision…
    allow_drafts.store(true, Ordering::SeqCst);
    assert!(!replicator.is_document_pending("draft").unwrap());
    run(&replicator);
    assert!(server.document("draft").unwrap().is_none());
    // …until the document changes.
    put(phone, "draft", json!({"type": "draft", "v": 2}));
    assert!(replicator.is_document_pending("draft").unwrap());
    run(&replicator);
    assert_eq!(
        properties(server, "draft"),
        Some(json!({"type": "draft", "v": 2}))
    );

    // A pull-only replicator has no pending documents.
    let puller = Replicator::new(s.config(ReplicatorType::Pull)).unwrap();
    let error = puller.pending_document_ids().unwrap_err();
    assert_eq!(error.domain(), ErrorDomain::Ferrolite);
    assert_eq!(error.code(), 9);
}

#[test]
fn pull_filter_rejects_with_403_and_the_checkpoint_moves_past() {
    let s = setup();
    let (phone, server) = (&s.phone.db, &s.server.db);
    put(server, "public", json!({"secret": false}));
    put(server, "private", json!({"secret": true}));
    put(server, "removed", json!({"secret": false}));
    delete(server, "removed");
    put(phone, "mine", json!({"v": 0})); // not empty: tombstones are pulled too
    let calls = Arc::new(Mutex::new(Vec::new()));
    let sink = calls.clone();
    let config = s
        .config(ReplicatorType::Pull)
        .pull_filter(move |doc, flags| {
            sink.lock()
                .unwrap()
                .push((doc.id().to_owned(), doc.sequence()));
            flags.deleted || doc.get("secret") != Some(&json!(true))
        });
    let replicator = Replicator::new(config.clone()).unwrap();
    let events = record_documents(&replicator);
    run(&replicator);
    assert!(phone.document("public").unwrap().is_some());
    assert!(phone.document("private").unwrap().is_none());
    assert!(current_rev(phone, "removed").1);
    let events = flat(&events);
    let private = events.iter().find(|d| d.id == "private").unwrap();
    let error = ferrolite::Error::from(private.error.clone().unwrap());
    assert_eq!(
        (error.domain(), error.code()),
        (ErrorDomain::WebSocket, 403)
    );
    assert!(error
        .to_string()
        .contains("rejected by validation function"));
    let removed = events.iter().find(|d| d.id == "removed").unwrap();
    assert!(removed.flags().deleted && removed.error.is_none());
    let seen: HashSet<(String, u64)> = calls.lock().unwrap().iter().cloned().collect();
    assert_eq!(
        seen,
        ["public", "private", "removed"]
            .map(|id| (id.to_owned(), 0))
            .into(),
        "called before saving (sequence 0)"
    );

    // The refused revision counts as done: a second run does not ask for it again.
    calls.lock().unwrap().clear();
    let again = Replicator::new(config).unwrap();
    let second = record_documents(&again);
    run(&again);
    assert!(flat(&second).is_empty());
    assert!(calls.lock().unwrap().is_empty());
    // A new revision is offered again.
    put(server, "private", json!({"secret": false}));
    run(&again);
    assert!(phone.document("private").unwrap().is_some());
}

#[test]
fn document_ids_limit_push_and_pull() {
    let s = setup();
    let (phone, server) = (&s.phone.db, &s.server.db);
    for id in ["p1", "p2", "p3"] {
        put(phone, id, json!({"from": "phone"}));
    }
    for id in ["s1", "s2", "s3"] {
        put(server, id, json!({"from": "server"}));
    }
    let push = s.config(ReplicatorType::Push).document_ids(["p1", "p3"]);
    run(&Replicator::new(push).unwrap());
    let pull = s
        .config(ReplicatorType::Pull)
        .document_ids(vec!["s2".to_owned()]);
    run(&Replicator::new(pull).unwrap());
    let ids =
        |db: &Database| -> Vec<String> { snapshot(db).into_iter().map(|(id, ..)| id).collect() };
    assert_eq!(ids(server), ["p1", "p3", "s1", "s2", "s3"]);
    assert_eq!(ids(phone), ["p1", "p2", "p3", "s2"]);
    // Another list is another checkpoint: the new documents come.
    let pull_more = s.config(ReplicatorType::Pull).document_ids(["s1", "s2"]);
    run(&Replicator::new(pull_more).unwrap());
    assert_eq!(ids(phone), ["p1", "p2", "p3", "s1", "s2"]);
}

#[test]
fn channels_are_sent_and_a_ferrolite_listener_ignores_them() {
    let s = setup();
    put(&s.server.db, "news-1", json!({"channels": ["news"]}));
    put(&s.server.db, "sports-1", json!({"channels": ["sports"]}));
    let config = s.config(ReplicatorType::Pull).channels(["news"]);
    let replicator = Replicator::new(config).unwrap();
    run(&replicator);
    // Without a gateway no document has channels: everything is served.
    assert!(s.phone.db.document("news-1").unwrap().is_some());
    assert!(s.phone.db.document("sports-1").unwrap().is_some());
}

#[test]
fn document_events_come_in_batches_with_flags() {
    let s = setup();
    let (phone, server) = (&s.phone.db, &s.server.db);
    phone
        .in_batch(|batch| {
            for i in 0..30 {
                batch.save(MutableDocument::with_id(format!("doc-{i:02}")).set("i", i))?;
            }
            Ok(())
        })
        .unwrap();
    put(server, "old", json!({"v": 0}));
    delete(server, "old");
    let replicator = Replicator::new(s.config(ReplicatorType::PushAndPull)).unwrap();
    let events = record_documents(&replicator);
    run(&replicator);
    let batches = events.lock().unwrap().clone();
    let push_batches: Vec<_> = batches
        .iter()
        .filter(|b| b.iter().all(|d| d.direction == Direction::Push))
        .collect();
    assert!(batches
        .iter()
        .all(|b| b.iter().all(|d| d.direction == b[0].direction)));
    assert_eq!(push_batches.iter().map(|b| b.len()).sum::<usize>(), 30);
    assert!(
        push_batches.len() < 30,
        "pushed documents are reported in batches"
    );
    let old = batches.iter().flatten().find(|d| d.id == "old").unwrap();
    assert_eq!(old.direction, Direction::Pull);
    assert!(old.flags().deleted && !old.flags().access_removed);
    assert!(old.error.is_none());
}
