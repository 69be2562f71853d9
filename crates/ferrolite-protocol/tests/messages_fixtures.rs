//! Decodes the real Couchbase Lite 3.1 traffic in `fixtures/litecore-3.1/*.jsonl` with the
//! typed messages, checks key fields, and checks that re-encoding the typed value gives the
//! same properties, body bytes and flags.
//!
//! The BLIP frames are decoded by a minimal decoder local to this file (the codec proper is
//! developed separately; this keeps the two independent).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashMap;
use std::path::PathBuf;

use bytes::Bytes;
use ferrolite_document::{BlobDigest, RevId};
use ferrolite_protocol::blip::{Message, MessageType, Properties};
use ferrolite_protocol::messages::{
    ChangeFlags, ChangesReply, ChangesReplyEntry, EmptyReply, GetAttachmentReply,
    GetCheckpointReply, ProposeChangesReply, ProposeStatus, Request, RevReply, Sequence,
    SetCheckpointReply,
};
use flate2::{Decompress, FlushDecompress};

// ---------------------------------------------------------------------------------------------
// Minimal BLIP 3 decoder (test only).

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Dir {
    C2s,
    S2c,
}

/// A decoded message with the direction it travelled in.
#[derive(Debug, Clone)]
struct Captured {
    dir: Dir,
    msg: Message,
}

fn uvarint(data: &[u8], pos: &mut usize) -> u64 {
    let mut value = 0u64;
    let mut shift = 0;
    loop {
        let byte = data[*pos];
        *pos += 1;
        value |= u64::from(byte & 0x7f) << shift;
        if byte & 0x80 == 0 {
            return value;
        }
        shift += 7;
    }
}

fn inflate(inflater: &mut Decompress, data: &[u8]) -> Vec<u8> {
    let mut input = data.to_vec();
    input.extend_from_slice(&[0x00, 0x00, 0xff, 0xff]);
    let mut out = Vec::with_capacity(input.len() * 4 + 1024);
    let mut pos = 0;
    loop {
        if out.capacity() - out.len() < 1024 {
            out.reserve(out.capacity().max(4096));
        }
        let before = inflater.total_in();
        inflater
            .decompress_vec(&input[pos..], &mut out, FlushDecompress::Sync)
            .expect("inflate");
        pos += usize::try_from(inflater.total_in() - before).unwrap();
        if pos >= input.len() && out.len() < out.capacity() {
            return out;
        }
    }
}

fn unhex(text: &str) -> Vec<u8> {
    (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&text[i..i + 2], 16).unwrap())
        .collect()
}

fn fixture_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../fixtures/litecore-3.1")
}

/// Every complete BLIP message of a fixture, in completion order.
fn decode_fixture(name: &str) -> Vec<Captured> {
    let path = fixture_dir().join(format!("{name}.jsonl"));
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path:?}: {e}"));
    let mut inflaters: HashMap<Dir, Decompress> = HashMap::new();
    // (dir, is request, number) -> (first frame's flags, plain bytes so far)
    let mut partial: HashMap<(Dir, bool, u64), (u64, Vec<u8>)> = HashMap::new();
    let mut out = Vec::new();
    for line in text.lines() {
        let record: serde_json::Value = serde_json::from_str(line).unwrap();
        if record["opcode"] != "binary" {
            continue;
        }
        let dir = match record["dir"].as_str().unwrap() {
            "c2s" => Dir::C2s,
            _ => Dir::S2c,
        };
        let frame = unhex(record["hex"].as_str().unwrap());
        let mut pos = 0;
        let number = uvarint(&frame, &mut pos);
        let flags = uvarint(&frame, &mut pos);
        let kind = flags & 0x07;
        if kind == 4 || kind == 5 {
            continue; // ACK: no CRC, nothing for the application
        }
        let data = &frame[pos..frame.len() - 4];
        let plain = if flags & 0x08 != 0 {
            let inflater = inflaters
                .entry(dir)
                .or_insert_with(|| Decompress::new(false));
            inflate(inflater, data)
        } else {
            data.to_vec()
        };
        let key = (dir, kind == 0, number);
        let entry = partial.entry(key).or_insert_with(|| (flags, Vec::new()));
        entry.1.extend_from_slice(&plain);
        if flags & 0x40 != 0 {
            continue;
        }
        let (first_flags, bytes) = partial.remove(&key).unwrap();
        let mut pos = 0;
        let props_len = usize::try_from(uvarint(&bytes, &mut pos)).unwrap();
        let props = &bytes[pos..pos + props_len];
        let body = Bytes::copy_from_slice(&bytes[pos + props_len..]);
        let mut fields = props
            .split(|&b| b == 0)
            .map(|s| String::from_utf8(s.to_vec()).unwrap());
        let mut properties = Properties::new();
        while let (Some(k), Some(v)) = (fields.next(), fields.next()) {
            properties.set(k, v);
        }
        out.push(Captured {
            dir,
            msg: Message {
                kind: match kind {
                    0 => MessageType::Request,
                    1 => MessageType::Response,
                    _ => MessageType::Error,
                },
                number,
                urgent: first_flags & 0x10 != 0,
                compressed: first_flags & 0x08 != 0,
                no_reply: first_flags & 0x20 != 0,
                properties,
                body,
            },
        });
    }
    assert!(
        partial.is_empty(),
        "{name}: unfinished messages {:?}",
        partial.keys()
    );
    out
}

// ---------------------------------------------------------------------------------------------
// Helpers.

const FIXTURES: &[&str] = &[
    "auth-refused",
    "auth-refused-nocreds",
    "bidi-conflict",
    "continuous-pull",
    "pull-basic",
    "pull-blob",
    "pull-large",
    "push-basic",
    "push-existing",
];

fn sorted_props(msg: &Message) -> Vec<(String, String)> {
    let mut props: Vec<(String, String)> = msg
        .properties
        .iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
    props.sort();
    props
}

/// Same properties (order aside), body bytes and flags.
fn assert_same_encoding(ours: &Message, theirs: &Message, what: &str) {
    assert_eq!(
        sorted_props(ours),
        sorted_props(theirs),
        "{what}: properties"
    );
    assert_eq!(ours.body, theirs.body, "{what}: body");
    assert_eq!(ours.kind, theirs.kind, "{what}: kind");
    assert_eq!(ours.number, theirs.number, "{what}: number");
    assert_eq!(ours.urgent, theirs.urgent, "{what}: urgent");
    assert_eq!(ours.compressed, theirs.compressed, "{what}: compressed");
    assert_eq!(ours.no_reply, theirs.no_reply, "{what}: no_reply");
}

/// Same properties in the same order.
fn assert_same_order(ours: &Message, theirs: &Message, what: &str) {
    let a: Vec<_> = ours.properties.iter().collect();
    let b: Vec<_> = theirs.properties.iter().collect();
    assert_eq!(a, b, "{what}: property order");
}

fn request(msgs: &[Captured], dir: Dir, number: u64) -> &Message {
    &msgs
        .iter()
        .find(|c| c.dir == dir && c.msg.kind == MessageType::Request && c.msg.number == number)
        .unwrap_or_else(|| panic!("no request #{number} {dir:?}"))
        .msg
}

fn reply(msgs: &[Captured], request_dir: Dir, number: u64) -> Option<&Message> {
    msgs.iter()
        .find(|c| {
            c.dir != request_dir && c.msg.kind != MessageType::Request && c.msg.number == number
        })
        .map(|c| &c.msg)
}

fn rev(text: &str) -> RevId {
    RevId::parse(text).unwrap()
}

fn decode(msg: &Message) -> Request {
    Request::from_message(msg).unwrap_or_else(|e| panic!("{msg:?}: {e}"))
}

fn json(bytes: &[u8]) -> serde_json::Value {
    serde_json::from_slice(bytes).unwrap()
}

// ---------------------------------------------------------------------------------------------
// Every message of every fixture.

/// Decodes every request and every reply of every fixture, and re-encodes each typed value to
/// the identical message.
#[test]
fn every_message_decodes_and_reencodes_identically() {
    let mut requests = 0;
    let mut replies = 0;
    for name in FIXTURES {
        let msgs = decode_fixture(name);
        for captured in msgs.iter().filter(|c| c.msg.kind == MessageType::Request) {
            let msg = &captured.msg;
            let what = format!(
                "{name} {:?} REQ #{} {:?}",
                captured.dir,
                msg.number,
                msg.profile()
            );
            let typed = decode(msg);
            let mut ours = typed.to_message();
            ours.number = msg.number;
            assert_same_encoding(&ours, msg, &what);
            assert_same_order(&ours, msg, &what);
            assert_eq!(
                Request::from_message(&ours).unwrap(),
                typed,
                "{what}: round trip"
            );
            requests += 1;

            let Some(answer) = reply(&msgs, captured.dir, msg.number) else {
                assert!(msg.no_reply, "{what}: no reply captured");
                continue;
            };
            let what = format!("{what} -> reply");
            if answer.kind == MessageType::Error {
                // Only getCheckpoint's "no checkpoint" occurs in the fixtures.
                let err = GetCheckpointReply::from_response(answer).unwrap_err();
                assert!(err.is_not_found(), "{what}: {err}");
                replies += 1;
                continue;
            }
            let ours = match &typed {
                Request::GetCheckpoint(_) => GetCheckpointReply::from_response(answer)
                    .unwrap()
                    .to_response(msg),
                Request::SetCheckpoint(_) => SetCheckpointReply::from_response(answer)
                    .unwrap()
                    .to_response(msg),
                Request::SubChanges(_) => {
                    EmptyReply::from_response(answer).unwrap().to_response(msg)
                }
                Request::Changes(_) => ChangesReply::from_response(answer)
                    .unwrap()
                    .to_response(msg),
                Request::ProposeChanges(_) => ProposeChangesReply::from_response(answer)
                    .unwrap()
                    .to_response(msg),
                Request::Rev(_) => RevReply::from_response(answer).unwrap().to_response(msg),
                Request::GetAttachment(_) => GetAttachmentReply::from_response(answer)
                    .unwrap()
                    .to_response(msg),
                other => panic!("{what}: unexpected request {other:?}"),
            };
            assert_same_encoding(&ours, answer, &what);
            assert_same_order(&ours, answer, &what);
            replies += 1;
        }
    }
    // 51 requests across the nine fixtures; 45 replies (ERRs included): the other 6 requests
    // are caught-up `changes`, sent NoReply.
    assert_eq!((requests, replies), (51, 45));
}

/// The auth-refused sessions never got to BLIP.
#[test]
fn auth_refused_sessions_have_no_blip_messages() {
    assert!(decode_fixture("auth-refused").is_empty());
    assert!(decode_fixture("auth-refused-nocreds").is_empty());
}

// ---------------------------------------------------------------------------------------------
// Key fields, scenario by scenario.

#[test]
fn push_basic() {
    let msgs = decode_fixture("push-basic");
    let Request::GetCheckpoint(get) = decode(request(&msgs, Dir::C2s, 1)) else {
        panic!()
    };
    assert_eq!(get.client, "cp-R26Q/efHcLItXKtsQcrxIZl7TKI=");
    assert_eq!(get.collection, None);
    let err = GetCheckpointReply::from_response(reply(&msgs, Dir::C2s, 1).unwrap()).unwrap_err();
    assert!(err.is_not_found());

    let Request::ProposeChanges(propose) = decode(request(&msgs, Dir::C2s, 2)) else {
        panic!()
    };
    assert!(propose.conflict_includes_rev);
    let rows: Vec<_> = propose
        .rows
        .iter()
        .map(|r| {
            (
                r.doc_id.as_str(),
                r.rev_id.as_str(),
                r.server_rev.clone(),
                r.body_size,
            )
        })
        .collect();
    assert_eq!(
        rows,
        vec![
            (
                "doc1",
                "1-e941a540ab9a474304f65696d1c991acdabd8c0a",
                None,
                Some(18)
            ),
            (
                "doc2",
                "2-5d0096079ec244063c95a192006ce6f57c579abb",
                None,
                Some(18)
            ),
            (
                "doc3",
                "2-1964d9636367d569c2dfd015bb91ce56a528c551",
                None,
                Some(2)
            ),
        ]
    );
    let answer = ProposeChangesReply::from_response(reply(&msgs, Dir::C2s, 2).unwrap()).unwrap();
    assert!(answer.entries.is_empty(), "[] = send everything");
    assert_eq!(answer.status(2), &ProposeStatus::Accepted);
    assert!(answer.deltas && answer.blobs);
    assert_eq!(answer.max_history, Some(50));

    let Request::Rev(doc1) = decode(request(&msgs, Dir::C2s, 3)) else {
        panic!()
    };
    assert_eq!(doc1.id, "doc1");
    assert_eq!(doc1.sequence, Some(Sequence::from(1)));
    assert!(doc1.no_conflicts && !doc1.deleted);
    assert!(doc1.history.is_empty());
    assert_eq!(&doc1.body[..], br#"{"name":"alpha","n":1}"#);

    let Request::Rev(doc2) = decode(request(&msgs, Dir::C2s, 4)) else {
        panic!()
    };
    assert_eq!(doc2.rev, rev("2-5d0096079ec244063c95a192006ce6f57c579abb"));
    assert_eq!(
        doc2.history,
        vec![rev("1-d59b7239506aaf933eda313b3a175d272d73c3db")]
    );
    assert!(doc2.has_consecutive_history());

    let Request::Rev(doc3) = decode(request(&msgs, Dir::C2s, 5)) else {
        panic!()
    };
    assert!(doc3.deleted && doc3.no_conflicts);
    assert_eq!(doc3.sequence.as_ref().and_then(Sequence::as_u64), Some(5));
    assert_eq!(
        doc3.history,
        vec![rev("1-1b9407ba1e6a9df7b2efb6268b14db8f1f2d4884")]
    );
    assert_eq!(&doc3.body[..], b"{}");
    let ok = RevReply::from_response(reply(&msgs, Dir::C2s, 5).unwrap()).unwrap();
    assert!(!ok.noop);

    let Request::SetCheckpoint(set) = decode(request(&msgs, Dir::C2s, 6)) else {
        panic!()
    };
    assert_eq!(set.rev, None, "empty rev on the first save");
    assert_eq!(json(&set.body)["local"], 5);
    let saved = SetCheckpointReply::from_response(reply(&msgs, Dir::C2s, 6).unwrap()).unwrap();
    assert_eq!(saved.rev, "1-cc");
}

#[test]
fn pull_basic() {
    let msgs = decode_fixture("pull-basic");
    let Request::SubChanges(sub) = decode(request(&msgs, Dir::C2s, 2)) else {
        panic!()
    };
    assert_eq!(sub.since, None);
    assert!(!sub.continuous);
    assert_eq!(sub.batch, Some(200));
    assert_eq!(sub.versioning.as_deref(), Some("rev-trees"));
    assert!(sub.active_only && sub.revocations && !sub.send_replacement_revs);
    assert_eq!(sub.filter, None);
    assert_eq!(sub.doc_ids, None);

    let Request::Changes(changes) = decode(request(&msgs, Dir::S2c, 1)) else {
        panic!()
    };
    assert!(!changes.is_caught_up());
    let rows: Vec<_> = changes
        .rows
        .iter()
        .map(|r| {
            (
                r.sequence.as_u64(),
                r.doc_id.as_str(),
                r.rev_id.as_str(),
                r.flags,
                r.body_size,
            )
        })
        .collect();
    assert_eq!(
        rows,
        vec![
            (
                Some(1),
                "doc1",
                "1-e941a540ab9a474304f65696d1c991acdabd8c0a",
                ChangeFlags::NONE,
                Some(18)
            ),
            (
                Some(3),
                "doc2",
                "2-5d0096079ec244063c95a192006ce6f57c579abb",
                ChangeFlags::NONE,
                Some(18)
            ),
        ]
    );

    let caught_up_msg = request(&msgs, Dir::S2c, 2);
    assert!(caught_up_msg.no_reply && caught_up_msg.urgent);
    let Request::Changes(caught_up) = decode(caught_up_msg) else {
        panic!()
    };
    assert!(caught_up.is_caught_up());

    let answer = ChangesReply::from_response(reply(&msgs, Dir::S2c, 1).unwrap()).unwrap();
    assert_eq!(answer.entries, vec![ChangesReplyEntry::Wanted(vec![]); 2]);
    assert!(answer.deltas && answer.blobs);
    assert_eq!(answer.max_history, Some(50));

    let Request::Rev(doc2) = decode(request(&msgs, Dir::S2c, 4)) else {
        panic!()
    };
    assert_eq!(doc2.id, "doc2");
    assert_eq!(doc2.sequence, Some(Sequence::from(3)));
    assert_eq!(
        doc2.sequence.as_ref().map(Sequence::as_json),
        Some(changes.rows[1].sequence.as_json())
    );
    assert_eq!(
        doc2.history,
        vec![rev("1-d59b7239506aaf933eda313b3a175d272d73c3db")]
    );
    assert!(
        !doc2.no_conflicts,
        "the passive side does not send noconflicts"
    );

    let Request::SetCheckpoint(set) = decode(request(&msgs, Dir::C2s, 3)) else {
        panic!()
    };
    assert_eq!(json(&set.body)["remote"], 3);
}

#[test]
fn pull_blob() {
    let msgs = decode_fixture("pull-blob");
    let Request::Rev(doc) = decode(request(&msgs, Dir::S2c, 3)) else {
        panic!()
    };
    assert_eq!(doc.id, "blobdoc");
    let body = json(&doc.body);
    assert_eq!(body["attachment"]["@type"], "blob");

    let Request::GetAttachment(get) = decode(request(&msgs, Dir::C2s, 3)) else {
        panic!()
    };
    assert_eq!(get.digest.to_string(), "sha1-gxibxdmjh98Z5bGMduimgpa1KqI=");
    assert_eq!(get.digest.to_string(), body["attachment"]["digest"]);
    assert_eq!(get.doc_id.as_deref(), Some("blobdoc"));
    assert!(get.compress);

    let data = GetAttachmentReply::from_response(reply(&msgs, Dir::C2s, 3).unwrap()).unwrap();
    assert_eq!(&data.data[..], b"Hello from a Couchbase Lite blob!\n");
    assert_eq!(BlobDigest::of(&data.data), get.digest);
}

#[test]
fn pull_large() {
    let msgs = decode_fixture("pull-large");
    let Request::Changes(changes) = decode(request(&msgs, Dir::S2c, 1)) else {
        panic!()
    };
    assert_eq!(changes.rows[0].body_size, Some(106_428));
    let Request::Rev(big) = decode(request(&msgs, Dir::S2c, 3)) else {
        panic!()
    };
    assert_eq!(big.id, "bigdoc");
    assert_eq!(big.body.len(), 98_024);
    assert_eq!(
        json(&big.body)["items"].as_array().map(Vec::len),
        Some(2800)
    );

    let Request::GetAttachment(get) = decode(request(&msgs, Dir::C2s, 3)) else {
        panic!()
    };
    assert_eq!(get.doc_id.as_deref(), Some("bigblob"));
    let blob = GetAttachmentReply::from_response(reply(&msgs, Dir::C2s, 3).unwrap()).unwrap();
    assert_eq!(blob.data.len(), 200_000);
    assert_eq!(BlobDigest::of(&blob.data), get.digest);
    assert_eq!(get.digest.to_string(), "sha1-pEWQva4STdyaQiAigVNcbTawxhA=");
}

#[test]
fn bidi_conflict() {
    let msgs = decode_fixture("bidi-conflict");
    let checkpoint = GetCheckpointReply::from_response(reply(&msgs, Dir::C2s, 1).unwrap()).unwrap();
    assert_eq!(checkpoint.rev, "1-cc");
    assert_eq!(checkpoint.checkpoint().unwrap()["remote"], 2);

    let Request::SubChanges(sub) = decode(request(&msgs, Dir::C2s, 2)) else {
        panic!()
    };
    assert_eq!(sub.since, Some(Sequence::from(2)));
    assert!(!sub.active_only, "a checkpoint exists: not activeOnly");

    let Request::ProposeChanges(propose) = decode(request(&msgs, Dir::C2s, 3)) else {
        panic!()
    };
    assert_eq!(propose.rows.len(), 1);
    assert_eq!(propose.rows[0].doc_id, "shared");
    assert_eq!(
        propose.rows[0].server_rev,
        Some(rev("1-6827ad3f4004977527f8c070fb43c77387c72e8c"))
    );
    assert_eq!(propose.rows[0].body_size, Some(20));
    let answer = ProposeChangesReply::from_response(reply(&msgs, Dir::C2s, 3).unwrap()).unwrap();
    assert_eq!(
        answer.entries,
        vec![ProposeStatus::Conflict {
            current: Some(rev("2-e89bb3b400c936cb9cb1261a0d3d9c7f2c0fd6fa"))
        }]
    );

    let Request::Rev(server) = decode(request(&msgs, Dir::S2c, 3)) else {
        panic!()
    };
    assert_eq!(
        server.rev,
        rev("2-e89bb3b400c936cb9cb1261a0d3d9c7f2c0fd6fa")
    );
    assert_eq!(
        server.history,
        vec![rev("1-6827ad3f4004977527f8c070fb43c77387c72e8c")]
    );

    let Request::SetCheckpoint(set) = decode(request(&msgs, Dir::C2s, 4)) else {
        panic!()
    };
    assert_eq!(set.rev.as_deref(), Some("1-cc"));
    let body = json(&set.body);
    assert_eq!(
        (body["local"].as_u64(), body["remote"].as_u64()),
        (Some(2), Some(2))
    );
}

#[test]
fn continuous_pull() {
    let msgs = decode_fixture("continuous-pull");
    let Request::SubChanges(sub) = decode(request(&msgs, Dir::C2s, 2)) else {
        panic!()
    };
    assert!(sub.continuous && sub.active_only && sub.revocations);

    // Caught up twice: after the first batch and after the revs.
    for n in [2, 5] {
        let Request::Changes(c) = decode(request(&msgs, Dir::S2c, n)) else {
            panic!()
        };
        assert!(c.is_caught_up(), "#{n}");
    }
    // A later change, pushed by the server, answered without `deltas` (first reply only).
    let Request::Changes(later) = decode(request(&msgs, Dir::S2c, 6)) else {
        panic!()
    };
    assert_eq!(
        later.rows[0].rev_id,
        rev("2-b927ced93d101993e5941923bce45d2a8ed4211c")
    );
    let first = ChangesReply::from_response(reply(&msgs, Dir::S2c, 1).unwrap()).unwrap();
    let second = ChangesReply::from_response(reply(&msgs, Dir::S2c, 6).unwrap()).unwrap();
    assert!(first.deltas);
    assert!(!second.deltas);
    assert_eq!(
        second.wanted(0),
        Some(&[rev("1-e941a540ab9a474304f65696d1c991acdabd8c0a")][..])
    );
    assert_eq!(second.wanted(1), None);
}

#[test]
fn push_existing() {
    let msgs = decode_fixture("push-existing");
    let checkpoint = GetCheckpointReply::from_response(reply(&msgs, Dir::C2s, 1).unwrap()).unwrap();
    assert_eq!(checkpoint.checkpoint().unwrap()["local"], 5);
    let Request::ProposeChanges(propose) = decode(request(&msgs, Dir::C2s, 2)) else {
        panic!()
    };
    assert_eq!(
        propose.rows[0].server_rev,
        Some(rev("1-e941a540ab9a474304f65696d1c991acdabd8c0a"))
    );
    let Request::Rev(doc1) = decode(request(&msgs, Dir::C2s, 3)) else {
        panic!()
    };
    assert_eq!(doc1.sequence, Some(Sequence::from(6)));
    assert_eq!(
        doc1.history,
        vec![propose.rows[0].server_rev.clone().unwrap()]
    );
}
