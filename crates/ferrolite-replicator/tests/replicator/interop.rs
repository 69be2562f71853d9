//! Replays of real Couchbase Lite 3.1 traffic (`fixtures/litecore-3.1`): a real LiteCore
//! push served by our passive side, and our active puller against a real LiteCore
//! passive peer's messages.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use bytes::Bytes;
use ferrolite_document::RevId;
use ferrolite_protocol::blip::{self, Message, MessageType};
use ferrolite_protocol::messages::{
    ChangesReply, ChangesReplyEntry, ProposeChangesReply, SetCheckpoint, SetCheckpointReply,
};
use ferrolite_replicator::{PassiveOptions, Replicator, ReplicatorType};
use ferrolite_transport::{pipe, Connection, Incoming, Transport, TransportError};

use crate::support::*;

fn unhex(text: &str) -> Vec<u8> {
    (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&text[i..i + 2], 16).unwrap())
        .collect()
}

/// Every complete BLIP message sent in direction `dir` ("c2s" or "s2c") of a fixture.
fn fixture_messages(name: &str, dir: &str) -> Vec<Message> {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../fixtures/litecore-3.1")
        .join(format!("{name}.jsonl"));
    let text = std::fs::read_to_string(&path).unwrap();
    // The decoder must await responses to accept them: prime it with requests of its own.
    let mut decoder = blip::Connection::default();
    for _ in 0..16 {
        decoder.send(Message::request("prime")).unwrap();
    }
    while decoder.next_frame().is_some() {}
    let mut out = Vec::new();
    for line in text.lines() {
        let record: serde_json::Value = serde_json::from_str(line).unwrap();
        if record["opcode"] != "binary" || record["dir"] != dir {
            continue;
        }
        let frame = unhex(record["hex"].as_str().unwrap());
        if let Some(message) = decoder.receive(&frame).unwrap() {
            out.push(message);
        }
    }
    out
}

fn rid(text: &str) -> RevId {
    RevId::parse(text).unwrap()
}

#[tokio::test]
async fn a_real_couchbase_lite_push_is_served() {
    let requests = fixture_messages("push-basic", "c2s");
    let profiles: Vec<&str> = requests.iter().map(|m| m.profile().unwrap()).collect();
    assert_eq!(
        profiles,
        [
            "getCheckpoint",
            "proposeChanges",
            "rev",
            "rev",
            "rev",
            "setCheckpoint"
        ]
    );
    let server = TestDb::new();
    let mut client = RawClient::serve(&server.store, PassiveOptions::default());
    for request in requests {
        let profile = request.profile().unwrap().to_owned();
        let reply = client.request(request.clone()).await;
        match profile.as_str() {
            "getCheckpoint" => assert_eq!(reply.error(), Some(("HTTP", 404))),
            "proposeChanges" => {
                let reply = ProposeChangesReply::from_response(&reply).unwrap();
                assert!(
                    reply.entries.is_empty(),
                    "all accepted: {:?}",
                    reply.entries
                );
                assert!(reply.blobs);
                assert!(reply.max_history.is_some());
            }
            "rev" => {
                assert_eq!(
                    reply.kind,
                    MessageType::Response,
                    "{}",
                    String::from_utf8_lossy(&reply.body)
                );
                assert!(reply.body.is_empty());
            }
            "setCheckpoint" => {
                let set = SetCheckpoint::from_message(&request).unwrap();
                assert_eq!(set.rev, None, "LiteCore sends an empty rev first");
                assert_eq!(
                    SetCheckpointReply::from_response(&reply).unwrap().rev,
                    "0-1"
                );
            }
            other => panic!("unexpected {other}"),
        }
    }
    client.close().await;

    // The server now holds what `cblite revs` showed on LiteCore's own server.
    let doc1 = server.get("doc1").unwrap();
    assert_eq!(
        doc1.tree.current().unwrap().id(),
        &rid("1-e941a540ab9a474304f65696d1c991acdabd8c0a")
    );
    assert_eq!(
        server.body("doc1"),
        Some(serde_json::json!({"name": "alpha", "n": 1}))
    );
    let doc2 = server.get("doc2").unwrap();
    let current = doc2.tree.current().unwrap().id().clone();
    assert_eq!(current, rid("2-5d0096079ec244063c95a192006ce6f57c579abb"));
    assert_eq!(
        doc2.tree.history(&current)[1],
        &rid("1-d59b7239506aaf933eda313b3a175d272d73c3db")
    );
    let doc3 = server.get("doc3").unwrap();
    let current = doc3.tree.current().unwrap();
    assert!(current.is_deleted());
    assert_eq!(
        current.id(),
        &rid("2-1964d9636367d569c2dfd015bb91ce56a528c551")
    );
}

/// Plays LiteCore's passive side of `pull-basic` to whoever connects.
struct ScriptedPeer {
    script: Vec<Message>,
    log: Arc<Mutex<Vec<Message>>>,
}

#[async_trait]
impl Transport for ScriptedPeer {
    async fn connect(&self) -> Result<Connection, TransportError> {
        let (ours, theirs) = pipe();
        tokio::spawn(play(theirs, self.script.clone(), self.log.clone()));
        Ok(ours)
    }
}

async fn play(connection: Connection, script: Vec<Message>, log: Arc<Mutex<Vec<Message>>>) {
    let (mut tx, mut rx) = connection.split();
    let mut blip = blip::Connection::default();
    let of = |kind: MessageType, profile: &str| -> Vec<Message> {
        script
            .iter()
            .filter(|m| {
                m.kind == kind && (kind != MessageType::Request || m.profile() == Some(profile))
            })
            .cloned()
            .collect()
    };
    let changes = of(MessageType::Request, "changes");
    let revs = of(MessageType::Request, "rev");
    let mut changes_number = None;
    loop {
        while let Some(frame) = blip.next_frame() {
            if tx.send(Bytes::from(frame)).await.is_err() {
                return;
            }
        }
        let frame = match rx.receive().await {
            Ok(Some(Incoming::Message(frame))) => frame,
            Ok(Some(Incoming::Closed(_))) => {
                let _ = tx.close(1000, "").await;
                return;
            }
            _ => return,
        };
        let Some(message) = blip.receive(&frame).unwrap() else {
            continue;
        };
        log.lock().unwrap().push(message.clone());
        match (message.kind, message.profile()) {
            (MessageType::Request, Some("getCheckpoint")) => {
                blip.send(Message::error_to(&message, "HTTP", 404, ""))
                    .unwrap();
            }
            (MessageType::Request, Some("subChanges")) => {
                blip.send(Message::response_to(&message)).unwrap();
                for (i, change) in changes.iter().enumerate() {
                    let number = blip.send(change.clone()).unwrap();
                    if i == 0 {
                        changes_number = Some(number);
                    }
                }
            }
            (MessageType::Request, Some("setCheckpoint")) => {
                let mut reply = Message::response_to(&message);
                reply.properties.set("rev", "1-cc");
                blip.send(reply).unwrap();
            }
            (MessageType::Response, _) if Some(message.number) == changes_number => {
                for rev in &revs {
                    blip.send(rev.clone()).unwrap();
                }
            }
            _ => {}
        }
    }
}

#[tokio::test]
async fn our_puller_against_a_real_couchbase_lite_passive_peer() {
    let script = fixture_messages("pull-basic", "s2c");
    let log = Arc::new(Mutex::new(Vec::new()));
    let local = TestDb::new();
    let replicator = Replicator::new(
        local.store.clone(),
        Arc::new(ScriptedPeer {
            script,
            log: log.clone(),
        }),
        config(ReplicatorType::Pull, false),
    );
    run_once(&replicator).await;

    let log = log.lock().unwrap().clone();
    let sub = log
        .iter()
        .find(|m| m.profile() == Some("subChanges"))
        .unwrap();
    // What LiteCore sends for a first pull into an empty database.
    assert_eq!(sub.property("batch"), Some("200"));
    assert_eq!(sub.property("versioning"), Some("rev-trees"));
    assert_eq!(sub.property("activeOnly"), Some("true"));
    assert_eq!(sub.property("revocations"), Some("true"));
    assert_eq!(sub.property("since"), None);
    assert_eq!(sub.property("continuous"), None);
    // Our answer to the `changes`: both wanted, no ancestors known — LiteCore's `[[],[]]`.
    let reply = log
        .iter()
        .find(|m| m.kind == MessageType::Response && !m.body.is_empty())
        .unwrap();
    assert_eq!(&reply.body[..], b"[[],[]]");
    let reply = ChangesReply::from_response(reply).unwrap();
    assert_eq!(reply.entries, vec![ChangesReplyEntry::Wanted(vec![]); 2]);
    // Both revs answered without error, after being stored; then the checkpoint.
    let rev_replies = log
        .iter()
        .filter(|m| m.kind == MessageType::Response && m.body.is_empty())
        .count();
    assert_eq!(rev_replies, 2);
    let set = log
        .iter()
        .find(|m| m.profile() == Some("setCheckpoint"))
        .unwrap();
    let set = SetCheckpoint::from_message(set).unwrap();
    assert_eq!(set.rev, None);
    let body: serde_json::Value = serde_json::from_slice(&set.body).unwrap();
    assert_eq!(body["remote"], 3);
    assert!(set.client.starts_with("cp-"));

    assert_eq!(
        local.get("doc2").unwrap().tree.current().unwrap().id(),
        &rid("2-5d0096079ec244063c95a192006ce6f57c579abb")
    );
    assert_eq!(
        local.body("doc1"),
        Some(serde_json::json!({"name": "alpha", "n": 1}))
    );
    assert_eq!(local.snapshot().len(), 2);
}
