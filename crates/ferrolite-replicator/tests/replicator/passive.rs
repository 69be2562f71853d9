//! The passive side at the message level: checkpoints, proposeChanges, rev, subChanges.

use bytes::Bytes;
use ferrolite_document::RevId;
use ferrolite_protocol::messages::{
    Changes, ChangesReply, ChangesReplyEntry, GetCheckpoint, GetCheckpointReply, ProposeChanges,
    ProposeChangesReply, ProposeStatus, ProposedChange, Rev, SetCheckpoint, SetCheckpointReply,
    SubChanges,
};
use ferrolite_replicator::PassiveOptions;
use serde_json::json;

use crate::support::*;

fn rid(text: &str) -> RevId {
    RevId::parse(text).unwrap()
}

fn set(client: &str, rev: Option<&str>, body: &str) -> ferrolite_protocol::blip::Message {
    SetCheckpoint {
        client: client.into(),
        rev: rev.map(str::to_owned),
        body: Bytes::copy_from_slice(body.as_bytes()),
        collection: None,
    }
    .to_message()
}

#[tokio::test]
async fn checkpoints_are_stored_with_revisions_and_stale_saves_refused() {
    let db = TestDb::new();
    let mut client = RawClient::serve(&db.store, PassiveOptions::default());
    let get = GetCheckpoint {
        client: "cp-a".into(),
        collection: None,
    }
    .to_message();
    let reply = client.request(get.clone()).await;
    assert_eq!(reply.error(), Some(("HTTP", 404)));

    let reply = client.request(set("cp-a", None, r#"{"local":5}"#)).await;
    assert_eq!(
        SetCheckpointReply::from_response(&reply).unwrap().rev,
        "0-1"
    );
    let reply = client
        .request(set("cp-a", Some("0-1"), r#"{"local":7}"#))
        .await;
    assert_eq!(
        SetCheckpointReply::from_response(&reply).unwrap().rev,
        "0-2"
    );
    // A stale revision, or none when one exists: 409.
    let reply = client
        .request(set("cp-a", Some("0-1"), r#"{"local":9}"#))
        .await;
    assert_eq!(reply.error(), Some(("HTTP", 409)));
    let reply = client.request(set("cp-a", None, r#"{"local":9}"#)).await;
    assert_eq!(reply.error(), Some(("HTTP", 409)));
    // A revision given where none is stored: 409 too (the client re-reads, gets 404).
    let reply = client.request(set("cp-b", Some("0-3"), r#"{}"#)).await;
    assert_eq!(reply.error(), Some(("HTTP", 409)));

    let reply = GetCheckpointReply::from_response(&client.request(get).await).unwrap();
    assert_eq!(reply.rev, "0-2");
    assert_eq!(
        reply.checkpoint().unwrap(),
        json!({"local": 7}).as_object().unwrap().clone()
    );
    client.close().await;
}

#[tokio::test]
async fn propose_changes_answers_accept_have_and_conflict() {
    let db = TestDb::new();
    let r1 = db.save("doc", json!({"v": 1}));
    let r2 = db.save("doc", json!({"v": 2}));
    let gone = db.save("gone", json!({"v": 1}));
    let gone_del = db.delete("gone");
    let _ = gone;
    let mut client = RawClient::serve(&db.store, PassiveOptions::default());
    let row = |id: &str, rev: &str, server: Option<&RevId>| ProposedChange {
        doc_id: id.into(),
        rev_id: rid(rev),
        server_rev: server.cloned(),
        body_size: Some(10),
    };
    let propose = ProposeChanges {
        rows: vec![
            row("doc", "3-aa", Some(&r2)),      // extends the current: 0
            row("doc", r2.as_str(), Some(&r1)), // already current: 304
            row("doc", "3-bb", Some(&r1)),      // not the current: 409 with the current
            row("new", "1-cc", None),           // unknown document: 0
            row("doc", "1-dd", None),           // no parent, live document: 409
            row("gone", "1-ee", None),          // no parent, deleted document: 0
        ],
        conflict_includes_rev: true,
        collection: None,
    };
    let reply = client.request(propose.to_message()).await;
    let reply = ProposeChangesReply::from_response(&reply).unwrap();
    assert_eq!(
        reply.entries,
        vec![
            ProposeStatus::Accepted,
            ProposeStatus::AlreadyHave,
            ProposeStatus::Conflict {
                current: Some(r2.clone())
            },
            ProposeStatus::Accepted,
            ProposeStatus::Conflict {
                current: Some(r2.clone())
            },
        ],
        "trailing accepted entries are omitted"
    );
    assert_eq!(reply.status(5), &ProposeStatus::Accepted);
    let _ = gone_del;
    client.close().await;
}

fn rev(id: &str, rev: &str, history: &[&str], body: &str, no_conflicts: bool) -> Rev {
    Rev {
        id: id.into(),
        rev: rid(rev),
        sequence: Some(7u64.into()),
        history: history.iter().map(|h| rid(h)).collect(),
        deleted: false,
        no_conflicts,
        delta_src: None,
        replaced_rev: None,
        deleted_branch: None,
        collection: None,
        body: Bytes::copy_from_slice(body.as_bytes()),
    }
}

#[tokio::test]
async fn revs_are_stored_checked_and_refused_on_conflict() {
    let db = TestDb::new();
    let r1 = db.save("doc", json!({"v": 1}));
    let r2 = db.save("doc", json!({"v": 2}));
    let mut client = RawClient::serve(&db.store, PassiveOptions::default());

    // Extends the current revision: stored, metadata keys stripped.
    let ok = rev(
        "doc",
        "3-aa",
        &[r2.as_str(), r1.as_str()],
        r#"{"v":3,"_id":"doc","_rev":"x"}"#,
        true,
    );
    let reply = client.request(ok.to_message()).await;
    assert_eq!(
        reply.error(),
        None,
        "{:?}",
        String::from_utf8_lossy(&reply.body)
    );
    assert_eq!(db.body("doc"), Some(json!({"v": 3})));
    // Sent again: a no-op.
    let reply = client.request(ok.to_message()).await;
    assert_eq!(reply.property("noop"), Some("true"));

    // noconflicts on a history that branches off an older revision: 409.
    let conflicting = rev("doc", "2-bb", &[r1.as_str()], r#"{"v":"other"}"#, true);
    let reply = client.request(conflicting.to_message()).await;
    assert_eq!(reply.error(), Some(("HTTP", 409)));
    assert!(!db.get("doc").unwrap().tree.contains(&rid("2-bb")));
    // Without noconflicts, the branch is kept (as a LiteCore passive peer does).
    let branch = rev("doc", "2-bb", &[r1.as_str()], r#"{"v":"other"}"#, false);
    assert_eq!(client.request(branch.to_message()).await.error(), None);
    assert!(db.get("doc").unwrap().tree.is_conflicted());

    // Bad input: 400.
    for bad in [
        rev("_bad", "1-aa", &[], "{}", false),
        rev("doc2", "3-aa", &["1-aa"], "{}", false),
        rev("doc2", "1-aa", &[], "[1,2]", false),
        rev("doc2", "1-aa", &[], "{", false),
    ] {
        let reply = client.request(bad.to_message()).await;
        assert_eq!(reply.error(), Some(("HTTP", 400)), "{bad:?}");
    }
    client.close().await;

    // A read-only peer refuses revisions with 403.
    let mut client = RawClient::serve(&db.store, PassiveOptions::read_only(true));
    let reply = client
        .request(rev("doc3", "1-aa", &[], "{}", false).to_message())
        .await;
    assert_eq!(reply.error(), Some(("HTTP", 403)));
    assert!(db.get("doc3").is_none());
    client.close().await;
}

/// `activeOnly` leaves the tombstones out of the backlog only: once caught up, a continuous
/// feed sends deletions too, as the peer may hold the document by then (it may have pulled
/// it in this very feed).
#[tokio::test]
async fn a_continuous_active_only_feed_sends_deletions_made_after_catching_up() {
    let db = TestDb::new();
    db.save("a", json!({"n": 1}));
    db.save("gone", json!({"n": 2}));
    db.delete("gone");
    let mut client = RawClient::serve(&db.store, PassiveOptions::default());
    let sub = SubChanges {
        continuous: true,
        active_only: true,
        ..SubChanges::default()
    };
    assert_eq!(client.request(sub.to_message()).await.error(), None);
    let mut backlog = Vec::new();
    loop {
        let request = client.next_request().await;
        let changes = Changes::from_message(&request).unwrap();
        if changes.is_caught_up() {
            break;
        }
        backlog.extend(changes.rows.iter().map(|r| r.doc_id.clone()));
        let entries = vec![ChangesReplyEntry::NotWanted; changes.rows.len()];
        client
            .respond(
                ChangesReply {
                    entries,
                    ..ChangesReply::default()
                }
                .to_response(&request),
            )
            .await;
    }
    assert_eq!(backlog, ["a"], "the backlog leaves the tombstone out");

    let deletion = db.delete("a");
    let request = client.next_request().await;
    let changes = Changes::from_message(&request).unwrap();
    let rows: Vec<_> = changes
        .rows
        .iter()
        .map(|r| (r.doc_id.as_str(), &r.rev_id, r.flags.is_deleted()))
        .collect();
    assert_eq!(rows, [("a", &deletion, true)]);
    client
        .respond(
            ChangesReply {
                entries: vec![ChangesReplyEntry::NotWanted],
                ..ChangesReply::default()
            }
            .to_response(&request),
        )
        .await;
    client.close().await;
}

#[tokio::test]
async fn sub_changes_streams_the_feed_then_caught_up() {
    let db = TestDb::new();
    db.save("a", json!({"n": 1}));
    let b1 = db.save("b", json!({"n": 1}));
    db.save("b", json!({"n": 2}));
    db.save("c", json!({"n": 3}));
    db.delete("c");
    let mut client = RawClient::serve(&db.store, PassiveOptions::default());
    let sub = SubChanges {
        batch: Some(2),
        active_only: true,
        ..SubChanges::default()
    };
    let reply = client.request(sub.to_message()).await;
    assert_eq!(reply.error(), None);
    // Batches of at most 2 rows; the tombstone is skipped (activeOnly). The wanted `rev`
    // may come before the next batch.
    let mut rows = Vec::new();
    let mut revs = Vec::new();
    let mut caught_up = false;
    while !caught_up || revs.is_empty() {
        let request = client.next_request().await;
        if request.profile() == Some("rev") {
            let rev = Rev::from_message(&request).unwrap();
            client
                .respond(ferrolite_protocol::messages::RevReply::default().to_response(&request))
                .await;
            revs.push(rev);
            continue;
        }
        let changes = Changes::from_message(&request).unwrap();
        if changes.is_caught_up() {
            assert!(request.no_reply);
            caught_up = true;
            continue;
        }
        assert!(changes.rows.len() <= 2);
        let entries: Vec<ChangesReplyEntry> = changes
            .rows
            .iter()
            .map(|row| {
                if row.doc_id == "b" {
                    ChangesReplyEntry::Wanted(vec![b1.clone()])
                } else {
                    ChangesReplyEntry::NotWanted
                }
            })
            .collect();
        rows.extend(changes.rows.iter().map(|r| r.doc_id.clone()));
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
    assert_eq!(rows, vec!["a", "b"]);
    // The wanted revision comes with its history cut at the revision we said we have.
    assert_eq!(revs.len(), 1);
    let rev = &revs[0];
    assert_eq!(
        (rev.id.as_str(), rev.history.clone()),
        ("b", vec![b1.clone()])
    );
    assert_eq!(rev.sequence, Some(3u64.into()));
    assert_eq!(&rev.body[..], br#"{"n":2}"#);
    client.close().await;
}
