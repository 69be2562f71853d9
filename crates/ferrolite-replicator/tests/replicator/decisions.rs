//! The replicator's decisions: conflict resolution, filters, document IDs, channels,
//! access removal and pending documents — over a real WebSocket on 127.0.0.1, or against
//! a passive peer played by the test (to see exactly what goes on the wire).

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use bytes::Bytes;
use ferrolite_document::RevId;
use ferrolite_protocol::blip::{self, Message, MessageType};
use ferrolite_protocol::messages::{
    ChangeFlags, ChangeRow, Changes, ChangesReply, EmptyReply, GetCheckpointReply, Request,
    Sequence, SetCheckpointReply,
};
use ferrolite_replicator::{
    ConflictResolution, ConflictResolver, Direction, ReplicationFilter, Replicator,
    ReplicatorError, ReplicatorType,
};
use ferrolite_transport::{pipe, Connection, Incoming, Transport, TransportError};
use serde_json::{json, Value};

use crate::support::*;

/// The current revision of `id`: (ID, deleted, parent ID, body).
fn current(db: &TestDb, id: &str) -> (RevId, bool, Option<RevId>, Option<Value>) {
    let record = db.get(id).unwrap();
    let current = record.tree.current().unwrap();
    (
        current.id().clone(),
        current.is_deleted(),
        record.tree.parent(current.id()).map(|p| p.id().clone()),
        current.body().map(|b| serde_json::from_slice(b).unwrap()),
    )
}

fn assert_resolved(db: &TestDb, id: &str) {
    let tree = db.get(id).unwrap().tree;
    assert!(!tree.is_conflicted(), "{id} still conflicted");
    assert!(
        tree.revisions().all(|r| !r.is_conflict()),
        "{id}: conflict flag left"
    );
}

#[tokio::test]
async fn default_resolution_converges_both_sides_on_the_remote_branch() {
    let local = TestDb::new();
    let remote = TestDb::new();
    let eq: Vec<String> = (0..6).map(|i| format!("eq-{i}")).collect();
    let mut ids = vec!["del-local", "del-remote", "gen-local", "gen-remote"];
    ids.extend(eq.iter().map(String::as_str));
    for id in &ids {
        local.save(id, json!({"v": 0}));
    }
    let (transport, _listener) = transport_to(&remote, Via::WebSocket).await;
    let replicator = Replicator::new(
        local.store.clone(),
        transport,
        config(ReplicatorType::PushAndPull, false),
    );
    run_once(&replicator).await;
    assert_eq!(local.snapshot(), remote.snapshot());

    // Conflicting edits on both sides.
    let deleted_here = local.delete("del-local");
    let edited_there = remote.save("del-local", json!({"v": "remote"}));
    local.save("del-remote", json!({"v": "local"}));
    let deleted_there = remote.delete("del-remote");
    local.save("gen-local", json!({"v": 1}));
    local.save("gen-local", json!({"v": "local"}));
    let gen_local_remote = remote.save("gen-local", json!({"v": "remote"}));
    let gen_remote_local = local.save("gen-remote", json!({"v": "local"}));
    remote.save("gen-remote", json!({"v": 1}));
    let gen_remote_remote = remote.save("gen-remote", json!({"v": "remote"}));
    let mut eq_revs = HashMap::new();
    for (i, id) in eq.iter().enumerate() {
        let ours = local.save(id, json!({"v": format!("local {i}")}));
        let theirs = remote.save(id, json!({"v": format!("remote {i}")}));
        eq_revs.insert(id.clone(), (ours, theirs));
    }

    let recorder = Recorder::attach(&replicator);
    run_once(&replicator).await;
    // A one-shot push-and-pull converges in at most two runs (here the pusher waits for
    // the pull's resolutions, so one is enough).
    let mut runs = 1;
    if local.snapshot() != remote.snapshot() {
        run_once(&replicator).await;
        runs += 1;
    }
    assert_eq!(
        local.snapshot(),
        remote.snapshot(),
        "converged after {runs} runs"
    );
    for id in &ids {
        assert_resolved(&local, id);
        assert_resolved(&remote, id);
    }
    // Each conflict was reported on the pull side with LiteCore's conflict code.
    let conflicts: HashSet<String> = recorder
        .documents
        .lock()
        .unwrap()
        .iter()
        .filter(|d| d.direction == Direction::Pull)
        .filter(|d| matches!(d.error, Some(ReplicatorError::Conflict { .. })))
        .inspect(|d| {
            assert_eq!(
                d.error.as_ref().unwrap().domain_and_code(),
                ("ferrolite", 8)
            )
        })
        .map(|d| d.id.clone())
        .collect();
    assert_eq!(conflicts, ids.iter().map(|s| s.to_string()).collect());

    // A deletion wins: a new tombstone, child of the remote revision; our tombstone's
    // branch is gone.
    let (rev, deleted, parent, _) = current(&local, "del-local");
    assert!(deleted);
    assert_eq!(parent.as_ref(), Some(&edited_there));
    assert_eq!(rev, RevId::compute(Some(&edited_there), true, b"{}"));
    assert!(!local.get("del-local").unwrap().tree.contains(&deleted_here));
    // The remote deletion wins as it is.
    let (rev, deleted, _, _) = current(&local, "del-remote");
    assert!(deleted);
    assert_eq!(rev, deleted_there);
    // The higher generation wins: ours, written on top of theirs.
    let (rev, _, parent, body) = current(&local, "gen-local");
    assert_eq!(parent.as_ref(), Some(&gen_local_remote));
    assert_eq!(rev.generation(), 3);
    assert_eq!(body, Some(json!({"v": "local"})));
    let (rev, _, _, body) = current(&local, "gen-remote");
    assert_eq!(rev, gen_remote_remote);
    assert_eq!(body, Some(json!({"v": "remote"})));
    assert!(!local
        .get("gen-remote")
        .unwrap()
        .tree
        .contains(&gen_remote_local));
    // Equal generations: the greater revision ID wins.
    let (mut local_won, mut remote_won) = (0, 0);
    for (i, id) in eq.iter().enumerate() {
        let (ours, theirs) = &eq_revs[id];
        let (rev, _, parent, body) = current(&local, id);
        if ours.as_str() > theirs.as_str() {
            local_won += 1;
            assert_eq!(parent.as_ref(), Some(theirs), "{id}");
            assert_eq!(body, Some(json!({"v": format!("local {i}")})));
        } else {
            remote_won += 1;
            assert_eq!(&rev, theirs, "{id}");
        }
    }
    assert!(
        local_won > 0 && remote_won > 0,
        "both outcomes are exercised"
    );

    // Nothing left to do.
    let quiet = Recorder::attach(&replicator);
    run_once(&replicator).await;
    assert!(quiet.documents.lock().unwrap().is_empty());
}

#[tokio::test]
async fn a_push_refused_as_a_conflict_is_resolved_by_the_pull_then_pushed() {
    let local = TestDb::new();
    let remote = TestDb::new();
    local.save("doc", json!({"v": 0, "a": 0}));
    let (transport, _listener) = transport_to(&remote, Via::WebSocket).await;
    let pusher = Replicator::new(
        local.store.clone(),
        transport.clone(),
        config(ReplicatorType::Push, false),
    );
    run_once(&pusher).await;
    local.save("doc", json!({"v": 1, "a": 1}));
    let theirs = remote.save("doc", json!({"v": 1, "b": 1}));

    // Push only: refused with 409, reported, counted done (not pending any more).
    let recorder = Recorder::attach(&pusher);
    run_once(&pusher).await;
    let events = recorder.documents.lock().unwrap().clone();
    assert_eq!(events.len(), 1);
    assert_eq!(events[0].direction, Direction::Push);
    assert!(matches!(
        events[0].error,
        Some(ReplicatorError::Conflict { .. })
    ));
    assert_eq!(remote.body("doc"), Some(json!({"v": 1, "b": 1})));
    assert!(pusher.pending_document_ids().await.unwrap().is_empty());

    // Push and pull with a merging resolver: resolved on the pull, then pushed.
    let mut cfg = config(ReplicatorType::PushAndPull, false);
    cfg.conflict_resolver = Some(ConflictResolver::new(|conflict| {
        let mut merged = conflict.remote.properties();
        merged.extend(conflict.local.properties());
        merged.insert("merged".into(), json!(true));
        ConflictResolution::Merged(merged)
    }));
    let both = Replicator::new(local.store.clone(), transport, cfg);
    run_once(&both).await;
    if local.snapshot() != remote.snapshot() {
        run_once(&both).await;
    }
    assert_eq!(local.snapshot(), remote.snapshot());
    let (rev, _, parent, body) = current(&remote, "doc");
    assert_eq!(parent, Some(theirs.clone()));
    let merged = json!({"v": 1, "a": 1, "b": 1, "merged": true});
    assert_eq!(body, Some(merged.clone()));
    assert_eq!(
        rev,
        RevId::compute(Some(&theirs), false, merged.to_string().as_bytes())
    );
    assert_resolved(&local, "doc");
}

#[tokio::test]
async fn pending_documents_before_connecting_and_after_a_push() {
    let local = TestDb::new();
    let remote = TestDb::new();
    local.save("a", json!({"n": 1}));
    local.save("b", json!({"n": 2}));
    local.save("draft", json!({"draft": true}));
    local.save("other", json!({"n": 3}));
    local.delete("b");
    let (transport, _listener) = transport_to(&remote, Via::WebSocket).await;
    let mut cfg = config(ReplicatorType::Push, false);
    cfg.push_filter = Some(ReplicationFilter::new(|rev, _| {
        rev.properties().get("draft").is_none()
    }));
    cfg.document_ids = vec!["a".into(), "b".into(), "draft".into()];
    let replicator = Replicator::new(local.store.clone(), transport, cfg.clone());
    let expected: HashSet<String> = ["a", "b"].map(String::from).into();
    assert_eq!(replicator.pending_document_ids().await.unwrap(), expected);
    assert!(replicator.is_document_pending("b").await.unwrap());
    assert!(!replicator.is_document_pending("draft").await.unwrap());
    assert!(!replicator.is_document_pending("other").await.unwrap());
    assert!(!replicator.is_document_pending("missing").await.unwrap());

    run_once(&replicator).await;
    assert!(replicator.pending_document_ids().await.unwrap().is_empty());
    assert!(remote.get("a").is_some() && remote.get("b").is_some());
    assert!(remote.get("draft").is_none() && remote.get("other").is_none());
    local.save("a", json!({"n": 10}));
    assert_eq!(
        replicator.pending_document_ids().await.unwrap(),
        ["a"].map(String::from).into()
    );

    // Pull-only replicators have nothing pending: an error, as in Couchbase Lite.
    let puller = Replicator::new(
        local.store.clone(),
        PipeTransport::new(&remote),
        config(ReplicatorType::Pull, false),
    );
    assert!(matches!(
        puller.pending_document_ids().await,
        Err(ReplicatorError::Config(_))
    ));
}

// ---------------------------------------------------------------------------------------
// A passive peer played by the test
// ---------------------------------------------------------------------------------------

/// What the scripted peer saw.
#[derive(Default)]
struct PeerLog {
    sub_changes: Vec<Message>,
    changes_reply: Option<ChangesReply>,
    rev_replies: Vec<(String, Message)>,
    checkpoints: Vec<Value>,
}

/// A passive peer that serves one `changes` batch and the `rev`s asked for, from a
/// script, and records what the replicator sends.
struct ScriptedPeer {
    rows: Vec<ChangeRow>,
    bodies: HashMap<String, (&'static str, bool)>,
    log: Arc<Mutex<PeerLog>>,
}

#[async_trait]
impl Transport for ScriptedPeer {
    async fn connect(&self) -> Result<Connection, TransportError> {
        let (ours, theirs) = pipe();
        tokio::spawn(play(
            theirs,
            self.rows.clone(),
            self.bodies.clone(),
            self.log.clone(),
        ));
        Ok(ours)
    }
}

async fn play(
    mut connection: Connection,
    rows: Vec<ChangeRow>,
    bodies: HashMap<String, (&'static str, bool)>,
    log: Arc<Mutex<PeerLog>>,
) {
    let mut codec = blip::Connection::default();
    let mut changes_request = None;
    let mut revs_sent: HashMap<u64, String> = HashMap::new();
    loop {
        while let Some(frame) = codec.next_frame() {
            if connection.send(Bytes::from(frame)).await.is_err() {
                return;
            }
        }
        let frame = match connection.receive().await {
            Ok(Some(Incoming::Message(frame))) => frame,
            Ok(Some(Incoming::Closed(_))) => {
                let _ = connection.close(1000, "").await;
                return;
            }
            _ => return,
        };
        let Some(message) = codec.receive(&frame).unwrap() else {
            continue;
        };
        if message.kind != MessageType::Request {
            if Some(message.number) == changes_request {
                let reply = ChangesReply::from_response(&message).unwrap();
                for (i, row) in rows.iter().enumerate() {
                    if reply.wanted(i).is_none() {
                        continue;
                    }
                    let (body, deleted) = bodies[&row.doc_id];
                    let mut rev = Message::request("rev");
                    rev.properties.set("id", row.doc_id.as_str());
                    rev.properties.set("rev", row.rev_id.as_str());
                    rev.properties.set("sequence", row.sequence.to_property());
                    if deleted {
                        rev.properties.set("deleted", "1");
                    }
                    rev.body = Bytes::from_static(body.as_bytes());
                    revs_sent.insert(codec.send(rev).unwrap(), row.doc_id.clone());
                }
                log.lock().unwrap().changes_reply = Some(reply);
                let mut caught_up = Changes::default().to_message();
                caught_up.no_reply = true;
                codec.send(caught_up).unwrap();
            } else if let Some(id) = revs_sent.remove(&message.number) {
                log.lock().unwrap().rev_replies.push((id, message));
            }
            continue;
        }
        let reply = match Request::from_message(&message).unwrap() {
            Request::GetCheckpoint(_) => GetCheckpointReply::not_found(&message),
            Request::SetCheckpoint(set) => {
                log.lock()
                    .unwrap()
                    .checkpoints
                    .push(serde_json::from_slice(&set.body).unwrap());
                SetCheckpointReply { rev: "0-1".into() }.to_response(&message)
            }
            Request::SubChanges(_) => {
                log.lock().unwrap().sub_changes.push(message.clone());
                let changes = Changes {
                    rows: rows.clone(),
                    collection: None,
                };
                changes_request = Some(codec.send(changes.to_message()).unwrap());
                EmptyReply.to_response(&message)
            }
            _ => Message::error_to(&message, "HTTP", 404, "not scripted"),
        };
        if !message.no_reply {
            codec.send(reply).unwrap();
        }
    }
}

fn row(seq: u64, id: &str, rev: &str, flags: ChangeFlags) -> ChangeRow {
    ChangeRow {
        sequence: Sequence::from(seq),
        doc_id: id.to_owned(),
        rev_id: RevId::parse(rev).unwrap(),
        flags,
        body_size: None,
    }
}

#[tokio::test]
async fn pull_filters_channels_document_ids_and_access_removal_on_the_wire() {
    let local = TestDb::new();
    local.save("revoked", json!({"mine": true}));
    local.save("gone", json!({"mine": true}));
    let rows = vec![
        row(1, "keep", "1-aa", ChangeFlags::NONE),
        row(2, "secret", "1-bb", ChangeFlags::NONE),
        row(3, "revoked", "2-cc", ChangeFlags::REVOKED),
        row(4, "gone", "2-dd", ChangeFlags::NONE),
        row(5, "outside", "1-ee", ChangeFlags::NONE),
        row(6, "tomb", "1-ff", ChangeFlags::DELETED),
    ];
    let bodies: HashMap<String, (&'static str, bool)> = [
        ("keep", (r#"{"a":1}"#, false)),
        ("secret", (r#"{"secret":true}"#, false)),
        ("gone", (r#"{"_removed":true}"#, false)),
        ("outside", (r#"{"o":1}"#, false)),
        ("tomb", ("{}", true)),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v))
    .collect();
    let log = Arc::new(Mutex::new(PeerLog::default()));
    let peer = Arc::new(ScriptedPeer {
        rows,
        bodies,
        log: log.clone(),
    });
    let mut cfg = config(ReplicatorType::Pull, false);
    cfg.channels = vec!["news".into(), "sports".into()];
    cfg.document_ids = ["keep", "secret", "revoked", "gone", "tomb"]
        .map(String::from)
        .into();
    // Refuse secrets, and refuse losing "revoked" (the local copy stays).
    cfg.pull_filter = Some(ReplicationFilter::new(|rev, flags| {
        if flags.access_removed {
            return rev.doc_id != "revoked";
        }
        rev.properties().get("secret").is_none()
    }));
    let replicator = Replicator::new(local.store.clone(), peer, cfg);
    let recorder = Recorder::attach(&replicator);
    run_once(&replicator).await;

    let log = log.lock().unwrap();
    // subChanges: the by-channel filter, the channels, the document IDs in the body.
    let sub = &log.sub_changes[0];
    assert_eq!(sub.property("filter"), Some("sync_gateway/bychannel"));
    assert_eq!(sub.property("channels"), Some("news,sports"));
    let body: Value = serde_json::from_slice(&sub.body).unwrap();
    assert_eq!(
        body,
        json!({"docIDs": ["keep", "secret", "revoked", "gone", "tomb"]})
    );
    // Wanted: everything but the revoked row and the document outside the list.
    let reply = log.changes_reply.as_ref().unwrap();
    let wanted: Vec<bool> = (0..6).map(|i| reply.wanted(i).is_some()).collect();
    assert_eq!(wanted, [true, true, false, true, false, true]);
    // The refused revision is answered 403 "rejected by validation function".
    let replies: HashMap<&str, &Message> = log
        .rev_replies
        .iter()
        .map(|(id, m)| (id.as_str(), m))
        .collect();
    assert_eq!(replies["secret"].error(), Some(("HTTP", 403)));
    assert_eq!(
        &replies["secret"].body[..],
        b"rejected by validation function"
    );
    assert_eq!(replies["keep"].error(), None);
    assert_eq!(replies["gone"].error(), None);
    // The checkpoint moved past every row.
    assert_eq!(log.checkpoints.last().unwrap()["remote"], json!(6));

    assert_eq!(local.body("keep"), Some(json!({"a": 1})));
    assert!(local.get("secret").is_none());
    assert!(local.get("outside").is_none());
    assert_eq!(
        local.body("revoked"),
        Some(json!({"mine": true})),
        "kept by the filter"
    );
    assert!(local.get("gone").is_none(), "purged");
    assert!(local
        .get("tomb")
        .unwrap()
        .tree
        .current()
        .unwrap()
        .is_deleted());

    let events: HashMap<String, _> = recorder
        .documents
        .lock()
        .unwrap()
        .iter()
        .map(|d| (d.id.clone(), d.clone()))
        .collect();
    assert!(events["keep"].error.is_none());
    assert_eq!(
        events["secret"].error.as_ref().unwrap().domain_and_code(),
        ("WebSocket", 403)
    );
    assert!(events["gone"].access_removed && events["gone"].error.is_none());
    assert!(events["revoked"].access_removed);
    assert!(matches!(
        events["revoked"].error,
        Some(ReplicatorError::Rejected { .. })
    ));
    assert!(events["tomb"].flags().deleted && !events["tomb"].flags().access_removed);
    assert!(!events.contains_key("outside"));
}
