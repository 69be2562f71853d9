//! Channel access on the passive side (`PassiveOptions::access`): pulls limited to the
//! readable channels and narrowed by the by-channel filter, pushes checked before they are
//! stored, channels granted and revoked while a feed runs, documents routed out of the
//! readable channels, backfill of channels granted after the client's checkpoint, and the
//! removal and revocation rows on the wire.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::sync::{Arc, Mutex, Weak};

use ferrolite_protocol::messages::{
    ChangeFlags, Changes, ChangesReply, ChangesReplyEntry, Rev, RevReply, SubChanges,
};
use ferrolite_replicator::{
    ChannelChange, Direction, IncomingWrite, PassiveOptions, PeerAccess, ReplicatedDocument,
    Replicator, ReplicatorType, WriteRejected,
};
use ferrolite_storage::{Change, ObservedStore, Store};
use serde_json::{json, Value};
use tokio::sync::watch;

use crate::support::*;

/// An in-memory channel index over a store: each revision is routed to the channels named
/// by its `channels` property (a tombstone stays in its previous channels); the peer reads
/// a mutable set of channels; writes whose body says `"forbidden": true` are refused.
struct TestAccess {
    store: Arc<ObservedStore>,
    state: Mutex<State>,
    changed: watch::Sender<u64>,
}

#[derive(Default)]
struct State {
    /// `None`: every document.
    readable: Option<HashMap<String, u64>>,
    /// Per document, its changes: (sequence, channels of that revision), oldest first.
    log: HashMap<String, Vec<(u64, BTreeSet<String>)>>,
    /// The writes checked: (document, parent body).
    writes: Vec<(String, Option<Value>)>,
    /// The `since` of each `changes_in` call.
    since: Vec<u64>,
}

impl TestAccess {
    /// Indexes `store` (now and after every commit); the peer reads `readable` from the
    /// start.
    fn new(store: &Arc<ObservedStore>, readable: Option<&[&str]>) -> Arc<TestAccess> {
        let (changed, _) = watch::channel(0);
        let access = Arc::new(TestAccess {
            store: store.clone(),
            state: Mutex::new(State {
                readable: readable.map(|r| r.iter().map(|c| ((*c).to_owned(), 0)).collect()),
                ..State::default()
            }),
            changed,
        });
        let weak: Weak<TestAccess> = Arc::downgrade(&access);
        store.observe(move |summary| {
            if let Some(access) = weak.upgrade() {
                for change in &summary.changes {
                    access.index(change);
                }
                access.changed.send_modify(|n| *n += 1);
            }
        });
        let mut since = 0;
        loop {
            let page = store.changes_since(since, 100).unwrap();
            for change in &page {
                since = change.sequence;
                access.index(change);
            }
            if page.len() < 100 {
                break;
            }
        }
        access
    }

    fn index(&self, change: &Change) {
        let record = self.store.get(&change.id).unwrap();
        let body: Option<Value> = record.as_ref().and_then(|record| {
            let rev = record
                .tree
                .get(&change.rev)
                .or_else(|| record.tree.current())?;
            serde_json::from_slice(rev.body()?).ok()
        });
        let mut state = self.state.lock().unwrap();
        let log = state.log.entry(change.id.clone()).or_default();
        if log.last().is_some_and(|(seq, _)| *seq >= change.sequence) {
            return;
        }
        let channels: BTreeSet<String> = if change.deleted {
            log.last().map(|(_, c)| c.clone()).unwrap_or_default()
        } else {
            body.as_ref()
                .and_then(|b| b.get("channels"))
                .and_then(Value::as_array)
                .map(|a| {
                    a.iter()
                        .filter_map(Value::as_str)
                        .map(str::to_owned)
                        .collect()
                })
                .unwrap_or_default()
        };
        log.push((change.sequence, channels));
    }

    /// Makes `channel` readable from now on.
    fn grant(&self, channel: &str) {
        let at = self.store.last_sequence().unwrap();
        self.state
            .lock()
            .unwrap()
            .readable
            .get_or_insert_with(HashMap::new)
            .insert(channel.to_owned(), at);
        self.changed.send_modify(|n| *n += 1);
    }

    /// Takes `channel` away.
    fn revoke(&self, channel: &str) {
        if let Some(readable) = self.state.lock().unwrap().readable.as_mut() {
            readable.remove(channel);
        }
        self.changed.send_modify(|n| *n += 1);
    }

    fn writes(&self) -> Vec<(String, Option<Value>)> {
        self.state.lock().unwrap().writes.clone()
    }

    fn since(&self) -> Vec<u64> {
        self.state.lock().unwrap().since.clone()
    }
}

fn meets(a: &BTreeSet<String>, b: &HashSet<String>) -> bool {
    a.iter().any(|c| b.contains(c))
}

impl PeerAccess for TestAccess {
    fn readable_channels(&self) -> Option<HashMap<String, u64>> {
        self.state.lock().unwrap().readable.clone()
    }

    fn subscribe(&self) -> watch::Receiver<u64> {
        self.changed.subscribe()
    }

    fn changes_in(
        &self,
        channels: &HashSet<String>,
        since: u64,
        limit: usize,
    ) -> Vec<ChannelChange> {
        let mut state = self.state.lock().unwrap();
        state.since.push(since);
        let mut rows = Vec::new();
        for (doc_id, log) in &state.log {
            for i in (0..log.len()).rev() {
                let (sequence, now) = &log[i];
                if *sequence <= since {
                    break;
                }
                let inside = meets(now, channels);
                let before = i > 0 && meets(&log[i - 1].1, channels);
                if inside || before {
                    rows.push(ChannelChange {
                        sequence: *sequence,
                        doc_id: doc_id.clone(),
                        removed: !inside,
                    });
                    break;
                }
            }
        }
        rows.sort_by_key(|r| r.sequence);
        rows.truncate(limit);
        rows
    }

    fn documents_in(&self, channels: &HashSet<String>) -> Vec<String> {
        let state = self.state.lock().unwrap();
        state
            .log
            .iter()
            .filter(|(_, log)| log.last().is_some_and(|(_, c)| meets(c, channels)))
            .map(|(id, _)| id.clone())
            .collect()
    }

    fn check_write(&self, write: &IncomingWrite<'_>) -> Result<(), WriteRejected> {
        let parent = write
            .parent_body
            .map(|b| serde_json::from_slice::<Value>(b).unwrap());
        self.state
            .lock()
            .unwrap()
            .writes
            .push((write.doc_id.to_owned(), parent));
        let body: Value = serde_json::from_slice(write.body).unwrap();
        if body.get("forbidden") == Some(&Value::Bool(true)) {
            return Err(WriteRejected {
                status: 403,
                message: "forbidden".to_owned(),
            });
        }
        Ok(())
    }
}

/// A pipe transport to `remote` whose passive peer reads and writes through `access`.
fn transport(remote: &TestDb, access: &Arc<TestAccess>) -> Arc<PipeTransport> {
    let access: Arc<dyn PeerAccess> = access.clone();
    Arc::new(PipeTransport {
        remote: remote.store.clone(),
        options: PassiveOptions {
            access: Some(access),
            ..PassiveOptions::default()
        },
        connects: Default::default(),
    })
}

/// The IDs of the live documents of `db`.
fn ids(db: &TestDb) -> BTreeSet<String> {
    db.snapshot()
        .into_iter()
        .filter(|(_, (_, deleted, _, _))| !deleted)
        .map(|(id, _)| id)
        .collect()
}

fn set(ids: &[&str]) -> BTreeSet<String> {
    ids.iter().map(|id| (*id).to_owned()).collect()
}

/// The pull events of `recorder` for `id`.
fn pull_events(recorder: &Recorder, id: &str) -> Vec<ReplicatedDocument> {
    recorder
        .documents
        .lock()
        .unwrap()
        .iter()
        .filter(|d| d.direction == Direction::Pull && d.id == id)
        .cloned()
        .collect()
}

async fn stop(replicator: &Replicator) {
    replicator.stop();
    let status = tokio::time::timeout(STEP, replicator.wait_until_stopped())
        .await
        .expect("stopped in time");
    assert!(status.error.is_none(), "{:?}", status.error);
}

#[tokio::test]
async fn a_pull_gets_the_readable_channels_narrowed_by_the_channel_filter() {
    let remote = TestDb::new();
    remote.save("a1", json!({"channels": ["A"]}));
    remote.save("a2", json!({"channels": ["A", "C"]}));
    remote.save("b1", json!({"channels": ["B"]}));
    remote.save("c1", json!({"channels": ["C"]}));
    remote.save("none", json!({"n": 1}));
    remote.save("public", json!({"channels": ["!"]}));
    let access = TestAccess::new(&remote.store, Some(&["A", "B", "!"]));

    let local = TestDb::new();
    let replicator = Replicator::new(
        local.store.clone(),
        transport(&remote, &access),
        config(ReplicatorType::Pull, false),
    );
    run_once(&replicator).await;
    assert_eq!(ids(&local), set(&["a1", "a2", "b1", "public"]));

    // The by-channel filter narrows the readable channels; an unreadable channel in it
    // adds nothing.
    let narrowed = TestDb::new();
    let mut cfg = config(ReplicatorType::Pull, false);
    cfg.channels = vec!["A".into(), "C".into()];
    let replicator = Replicator::new(narrowed.store.clone(), transport(&remote, &access), cfg);
    run_once(&replicator).await;
    assert_eq!(ids(&narrowed), set(&["a1", "a2"]));

    // Without channel filtering (`None`) every document is served.
    let all = TestDb::new();
    let everything = TestAccess::new(&remote.store, None);
    let replicator = Replicator::new(
        all.store.clone(),
        transport(&remote, &everything),
        config(ReplicatorType::Pull, false),
    );
    run_once(&replicator).await;
    assert_eq!(ids(&all), set(&["a1", "a2", "b1", "c1", "none", "public"]));
}

#[tokio::test]
async fn pushed_revisions_refused_by_the_access_are_reported_and_not_stored() {
    let remote = TestDb::new();
    let access = TestAccess::new(&remote.store, Some(&["A"]));
    let local = TestDb::new();
    local.save("ok1", json!({"channels": ["A"], "v": 1}));
    local.save("bad", json!({"channels": ["A"], "forbidden": true}));
    local.save("ok2", json!({"channels": ["A"], "v": 2}));
    let replicator = Replicator::new(
        local.store.clone(),
        transport(&remote, &access),
        config(ReplicatorType::Push, false),
    );
    let recorder = Recorder::attach(&replicator);
    run_once(&replicator).await;

    assert_eq!(remote.body("ok1"), Some(json!({"channels": ["A"], "v": 1})));
    assert_eq!(remote.body("ok2"), Some(json!({"channels": ["A"], "v": 2})));
    assert!(
        remote.get("bad").is_none(),
        "a refused revision is not stored"
    );
    let events: HashMap<String, ReplicatedDocument> = recorder
        .documents
        .lock()
        .unwrap()
        .iter()
        .map(|d| (d.id.clone(), d.clone()))
        .collect();
    assert!(events["ok1"].error.is_none());
    assert!(events["ok2"].error.is_none());
    let error = events["bad"]
        .error
        .as_ref()
        .expect("bad is reported refused");
    assert_eq!(error.domain_and_code(), ("WebSocket", 403));
    assert!(error.to_string().contains("forbidden"), "{error}");
    // New documents have no parent body.
    assert!(access.writes().iter().all(|(_, parent)| parent.is_none()));

    // An update is checked with the body of the current revision.
    local.save("ok1", json!({"channels": ["A"], "v": 3}));
    run_once(&replicator).await;
    assert_eq!(remote.body("ok1"), Some(json!({"channels": ["A"], "v": 3})));
    let writes = access.writes();
    let (id, parent) = writes.last().unwrap();
    assert_eq!(id, "ok1");
    assert_eq!(parent, &Some(json!({"channels": ["A"], "v": 1})));
}

#[tokio::test]
async fn a_continuous_pull_follows_grants_and_revocations() {
    let remote = TestDb::new();
    remote.save("b1", json!({"channels": ["B"]}));
    remote.save("a1", json!({"channels": ["A"]}));
    remote.save("ab", json!({"channels": ["A", "B"]}));
    let access = TestAccess::new(&remote.store, Some(&["A"]));
    let local = TestDb::new();
    let replicator = Replicator::new(
        local.store.clone(),
        transport(&remote, &access),
        config(ReplicatorType::Pull, true),
    );
    let recorder = Recorder::attach(&replicator);
    replicator.start(false);
    eventually("the readable documents", || {
        local.get("a1").is_some() && local.get("ab").is_some()
    })
    .await;
    assert!(local.get("b1").is_none(), "B is not readable yet");

    // Granting B delivers its older document on the open connection.
    access.grant("B");
    eventually("the document of the granted channel", || {
        local.get("b1").is_some()
    })
    .await;
    // Changes in the granted channel keep coming.
    remote.save("b2", json!({"channels": ["B"]}));
    eventually("a new document of the granted channel", || {
        local.get("b2").is_some()
    })
    .await;

    // Revoking A purges what only A gave access to.
    access.revoke("A");
    eventually("the purge of the revoked document", || {
        local.get("a1").is_none()
    })
    .await;
    eventually("the access-removed event", || {
        pull_events(&recorder, "a1")
            .iter()
            .any(|d| d.access_removed && d.error.is_none())
    })
    .await;
    // "ab" is still readable through B.
    assert!(local.get("ab").is_some());
    assert!(pull_events(&recorder, "ab")
        .iter()
        .all(|d| !d.access_removed));
    assert_eq!(ids(&local), set(&["ab", "b1", "b2"]));
    stop(&replicator).await;
}

#[tokio::test]
async fn a_document_routed_out_of_the_readable_channels_is_purged() {
    let remote = TestDb::new();
    remote.save("x", json!({"channels": ["A"], "v": 1}));
    remote.save("y", json!({"channels": ["A"], "v": 1}));
    let access = TestAccess::new(&remote.store, Some(&["A"]));
    let local = TestDb::new();
    let replicator = Replicator::new(
        local.store.clone(),
        transport(&remote, &access),
        config(ReplicatorType::Pull, true),
    );
    let recorder = Recorder::attach(&replicator);
    replicator.start(false);
    eventually("the first pull", || {
        local.get("x").is_some() && local.get("y").is_some()
    })
    .await;

    remote.save("x", json!({"channels": ["Z"], "v": 2}));
    remote.save("y", json!({"channels": ["A"], "v": 2}));
    eventually("the purge of the re-routed document", || {
        local.get("x").is_none()
    })
    .await;
    eventually("the update of the other one", || {
        local.body("y") == Some(json!({"channels": ["A"], "v": 2}))
    })
    .await;
    eventually("the access-removed event", || {
        pull_events(&recorder, "x")
            .iter()
            .any(|d| d.access_removed && d.error.is_none())
    })
    .await;
    stop(&replicator).await;
}

#[tokio::test]
async fn a_pull_after_a_grant_backfills_the_granted_channel() {
    let remote = TestDb::new();
    remote.save("b1", json!({"channels": ["B"]}));
    remote.save("b2", json!({"channels": ["B"]}));
    remote.save("a1", json!({"channels": ["A"]}));
    remote.save("a2", json!({"channels": ["A"]}));
    let access = TestAccess::new(&remote.store, Some(&["A"]));
    let local = TestDb::new();
    let replicator = Replicator::new(
        local.store.clone(),
        transport(&remote, &access),
        config(ReplicatorType::Pull, false),
    );
    run_once(&replicator).await;
    assert_eq!(ids(&local), set(&["a1", "a2"]));
    let checkpoint = remote.get("a2").unwrap().sequence;
    assert!(checkpoint > remote.get("b2").unwrap().sequence);

    access.grant("B");
    remote.save("a3", json!({"channels": ["A"]}));
    run_once(&replicator).await;
    assert_eq!(ids(&local), set(&["a1", "a2", "a3", "b1", "b2"]));
    // The second run started from the checkpoint, past B's documents.
    let since = access.since();
    assert!(
        since.iter().any(|s| *s >= checkpoint),
        "changes_in calls: {since:?}"
    );
    let from_start = |since: &[u64]| since.iter().filter(|s| **s == 0).count();
    assert_eq!(
        from_start(&since),
        2,
        "the first run and the backfill read from 0: {since:?}"
    );

    // A third run starts past the grant: nothing to backfill.
    run_once(&replicator).await;
    assert_eq!(from_start(&access.since()), 2, "{:?}", access.since());
    assert_eq!(ids(&local), set(&["a1", "a2", "a3", "b1", "b2"]));
}

/// Reads `changes` requests (answering them with `wanted`, and `rev`s with success) until
/// the caught-up message; returns the rows and the revisions received.
async fn read_feed(
    client: &mut RawClient,
    wanted: impl Fn(&ferrolite_protocol::messages::ChangeRow) -> bool,
    until_caught_up: bool,
) -> (Vec<ferrolite_protocol::messages::ChangeRow>, Vec<Rev>) {
    let mut rows = Vec::new();
    let mut revs = Vec::new();
    let mut wanted_count = 0;
    let mut caught_up = !until_caught_up;
    loop {
        if caught_up && revs.len() == wanted_count && !rows.is_empty() {
            return (rows, revs);
        }
        let request = client.next_request().await;
        if request.profile() == Some("rev") {
            revs.push(Rev::from_message(&request).unwrap());
            if !request.no_reply {
                client
                    .respond(RevReply::default().to_response(&request))
                    .await;
            }
            continue;
        }
        let changes = Changes::from_message(&request).unwrap();
        if changes.is_caught_up() {
            caught_up = true;
            continue;
        }
        let entries: Vec<ChangesReplyEntry> = changes
            .rows
            .iter()
            .map(|row| {
                if wanted(row) {
                    wanted_count += 1;
                    ChangesReplyEntry::Wanted(Vec::new())
                } else {
                    ChangesReplyEntry::NotWanted
                }
            })
            .collect();
        rows.extend(changes.rows.iter().cloned());
        client
            .respond(
                ChangesReply {
                    entries,
                    max_history: Some(20),
                    ..ChangesReply::default()
                }
                .to_response(&request),
            )
            .await;
    }
}

#[tokio::test]
async fn removals_and_revocations_on_the_wire() {
    let db = TestDb::new();
    let access = TestAccess::new(&db.store, Some(&["A", "B"]));
    db.save("x", json!({"channels": ["A"]}));
    db.save("y", json!({"channels": ["A"]}));
    db.save("z", json!({"channels": ["B"]}));
    let x2 = db.save("x", json!({"channels": ["Z"]}));
    db.delete("y");
    let dyn_access: Arc<dyn PeerAccess> = access.clone();
    let options = PassiveOptions {
        access: Some(dyn_access),
        ..PassiveOptions::default()
    };

    // With revocations: x is a removal row (4), never asked for; the deleted y stays an
    // ordinary tombstone; z is ordinary.
    let mut client = RawClient::serve(&db.store, options.clone());
    let sub = SubChanges {
        revocations: true,
        continuous: true,
        ..SubChanges::default()
    };
    assert_eq!(client.request(sub.to_message()).await.error(), None);
    let (rows, _) = read_feed(&mut client, |_| false, true).await;
    let flags: HashMap<&str, u8> = rows
        .iter()
        .map(|r| (r.doc_id.as_str(), r.flags.bits()))
        .collect();
    assert_eq!(flags, HashMap::from([("x", 4), ("y", 1), ("z", 0)]));
    assert_eq!(rows.iter().find(|r| r.doc_id == "x").unwrap().rev_id, x2);

    // Revoking B while the feed runs: a revocation row (2) for z at the feed's position.
    let position = db.last_sequence();
    access.revoke("B");
    let (rows, _) = read_feed(&mut client, |_| false, false).await;
    assert_eq!(rows.len(), 1, "{rows:?}");
    assert_eq!(rows[0].doc_id, "z");
    assert_eq!(rows[0].flags, ChangeFlags::REVOKED);
    assert_eq!(rows[0].sequence, position.into());

    // Granting it back: z comes again as an ordinary row, still at the feed's position.
    access.grant("B");
    let (rows, revs) = read_feed(&mut client, |_| true, false).await;
    assert_eq!(rows.len(), 1, "{rows:?}");
    assert_eq!(
        (
            rows[0].doc_id.as_str(),
            rows[0].flags,
            rows[0].sequence.clone()
        ),
        ("z", ChangeFlags::NONE, position.into())
    );
    assert_eq!(revs.len(), 1);
    assert_eq!(&revs[0].body[..], br#"{"channels":["B"]}"#);
    client.close().await;

    // Without revocations the removal is an ordinary row, and its revision comes with the
    // removal body.
    access.revoke("B");
    let mut client = RawClient::serve(&db.store, options);
    let sub = SubChanges::default();
    assert_eq!(client.request(sub.to_message()).await.error(), None);
    let (rows, revs) = read_feed(&mut client, |row| row.doc_id == "x", true).await;
    let x = rows.iter().find(|r| r.doc_id == "x").unwrap();
    assert_eq!(x.flags, ChangeFlags::NONE);
    assert!(
        !rows.iter().any(|r| r.doc_id == "z"),
        "B is no longer readable"
    );
    assert_eq!(revs.len(), 1);
    assert_eq!((revs[0].id.as_str(), &revs[0].rev), ("x", &x2));
    assert_eq!(&revs[0].body[..], br#"{"_removed":true}"#);
    assert!(!revs[0].history.is_empty());
    client.close().await;
}
