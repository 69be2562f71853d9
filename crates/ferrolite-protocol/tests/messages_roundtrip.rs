//! Typed messages survive encoding: `from_message(to_message(x)) == x` for every request and
//! `from_response(to_response(x)) == x` for every reply; property tests over changes rows,
//! revision histories and every message; arbitrary input never panics a decoder; the
//! `proveAttachment` golden value; error replies.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::fmt::Debug;

use bytes::Bytes;
use ferrolite_document::{BlobDigest, RevId};
use ferrolite_protocol::blip::{Message, MessageType, Properties};
use ferrolite_protocol::messages::{
    prove_attachment, ChangeFlags, ChangeRow, Changes, ChangesReply, ChangesReplyEntry, EmptyReply,
    GetAttachment, GetAttachmentReply, GetCheckpoint, GetCheckpointReply, GetCollections,
    GetCollectionsReply, MessageError, NoRev, Ping, Profile, ProposeChanges, ProposeChangesReply,
    ProposeStatus, ProposedChange, ProveAttachment, ProveAttachmentReply, Request, Rev, RevReply,
    Sequence, SetCheckpoint, SetCheckpointReply, SubChanges, TypedReply, TypedRequest,
    UnsubChanges,
};
use proptest::prelude::*;
use serde_json::{json, Map, Value};

// ---------------------------------------------------------------------------------------------
// Helpers.

fn rev(text: &str) -> RevId {
    RevId::parse(text).unwrap()
}

/// Round-trips a request through its own codec and through [`Request`].
fn check_request<T: TypedRequest + PartialEq + Debug>(value: &T) -> Message {
    let msg = value.to_message();
    assert_eq!(msg.kind, MessageType::Request);
    assert_eq!(msg.profile(), Some(T::PROFILE.as_str()));
    let back = T::from_message(&msg).unwrap_or_else(|e| panic!("{value:?}: {e}"));
    assert_eq!(&back, value);
    let any = Request::from_message(&msg).unwrap_or_else(|e| panic!("{value:?}: {e}"));
    assert_eq!(any.profile(), T::PROFILE);
    assert_eq!(any.to_message(), msg, "Request re-encodes identically");
    msg
}

/// Round-trips a reply to a request numbered 7.
fn check_reply<R: TypedReply + PartialEq + Debug>(request: &Message, value: &R) -> Message {
    let mut request = request.clone();
    request.number = 7;
    let msg = value.to_response(&request);
    assert_eq!(msg.kind, MessageType::Response);
    assert_eq!(msg.number, 7);
    let back = R::from_response(&msg).unwrap_or_else(|e| panic!("{value:?}: {e}"));
    assert_eq!(&back, value);
    msg
}

fn sample_rev() -> Rev {
    Rev {
        id: "doc\"1\\é".into(),
        rev: rev("3-abcdef"),
        sequence: Some(Sequence::from("3151:5")),
        history: vec![rev("2-aa"), rev("1-bb")],
        deleted: true,
        no_conflicts: true,
        delta_src: Some(rev("2-aa")),
        replaced_rev: Some(rev("2-cc")),
        deleted_branch: Some("2-dd,1-bb".into()),
        collection: Some(3),
        body: Bytes::from_static(br#"{"a":[1,2,3]}"#),
    }
}

// ---------------------------------------------------------------------------------------------
// Examples: every message and reply.

#[test]
fn checkpoints_round_trip() {
    let get = GetCheckpoint {
        client: "cp-7rY1Jx3Qm9fZ0v2Lw8kT5uQ4sAE=".into(),
        collection: None,
    };
    let req = check_request(&get);
    assert_eq!(
        req.property("client"),
        Some("cp-7rY1Jx3Qm9fZ0v2Lw8kT5uQ4sAE=")
    );
    check_request(&GetCheckpoint {
        collection: Some(0),
        ..get
    });
    let reply = GetCheckpointReply {
        rev: "0-3".into(),
        body: Bytes::from_static(br#"{"remote":"3151:5","time":1718000000}"#),
    };
    let msg = check_reply(&req, &reply);
    assert_eq!(msg.property("rev"), Some("0-3"));
    let map = reply.checkpoint().unwrap();
    assert_eq!(map["remote"], "3151:5");
    assert_eq!(
        GetCheckpointReply::from_json("0-3", &map)
            .checkpoint()
            .unwrap(),
        map
    );

    let not_found = GetCheckpointReply::not_found(&req);
    assert_eq!(not_found.error(), Some(("HTTP", 404)));
    let err = GetCheckpointReply::from_response(&not_found).unwrap_err();
    assert!(err.is_not_found());
    assert!(matches!(err, MessageError::ErrorReply { ref message, .. } if message == "Not Found"));

    for rev in [None, Some("0-4".to_owned())] {
        let set = SetCheckpoint {
            client: "cp-x".into(),
            rev: rev.clone(),
            body: Bytes::from_static(br#"{"time":1,"local":17}"#),
            collection: Some(1),
        };
        let req = check_request(&set);
        // LiteCore writes `rev` with an empty value when it knows none.
        assert_eq!(req.property("rev"), Some(rev.as_deref().unwrap_or("")));
        check_reply(&req, &SetCheckpointReply { rev: "0-5".into() });
        let conflict = SetCheckpointReply::conflict(&req);
        assert!(SetCheckpointReply::from_response(&conflict)
            .unwrap_err()
            .is_error_reply("HTTP", 409));
    }

    let collections = GetCollections {
        uuid: Some("a1b2".into()),
        checkpoint_ids: vec!["cp-1".into(), "cp-2".into()],
        collections: vec!["users".into(), "inventory.hotels".into()],
    };
    let req = check_request(&collections);
    assert_eq!(
        &req.body[..],
        br#"{"checkpoint_ids":["cp-1","cp-2"],"collections":["users","inventory.hotels"]}"#
    );
    let mut stored = Map::new();
    stored.insert("_rev".into(), json!("0-2"));
    stored.insert("remote".into(), json!(42));
    let reply = GetCollectionsReply {
        checkpoints: vec![Some(stored), Some(Map::new()), None],
    };
    check_reply(&req, &reply);
    assert_eq!(reply.rev(0), Some("0-2"), "SG's _rev is read");
    assert_eq!(reply.rev(1), None);
    assert_eq!(reply.rev(2), None);
}

#[test]
fn get_collections_refuses_mismatched_lengths() {
    let mut msg = Message::request("getCollections");
    msg.body = Bytes::from_static(br#"{"checkpoint_ids":["a"],"collections":[]}"#);
    let err = GetCollections::from_message(&msg).unwrap_err();
    assert!(matches!(err, MessageError::BadBody { .. }), "{err}");
    assert_eq!(err.reply_code(), ("HTTP", 400));
}

#[test]
fn sub_changes_round_trip() {
    let sub = SubChanges {
        since: Some(Sequence::from("3151:5")),
        continuous: true,
        batch: Some(200),
        versioning: Some("rev-trees".into()),
        active_only: true,
        revocations: true,
        send_replacement_revs: true,
        filter: Some("sync_gateway/bychannel".into()),
        channels: vec!["a".into(), "b c".into()],
        filter_params: vec![],
        future: true,
        request_plus: Some(false),
        doc_ids: Some(vec!["d1".into(), "d\"2".into()]),
        collection: Some(2),
    };
    let msg = check_request(&sub);
    // The since value is JSON: the 8 bytes "3151:5" including both quotes.
    assert_eq!(msg.property("since"), Some("\"3151:5\""));
    assert_eq!(msg.property("channels"), Some("a,b c"));
    assert_eq!(msg.property("continuous"), Some("true"));
    assert_eq!(msg.property("sendReplacementRevs"), Some("true"));
    assert_eq!(&msg.body[..], br#"{"docIDs":["d1","d\"2"]}"#);

    check_request(&SubChanges::default());
    check_request(&SubChanges {
        since: Some(Sequence::from(42)),
        filter: Some("app/byOwner".into()),
        filter_params: vec![("owner".into(), "alice".into())],
        ..SubChanges::default()
    });
    let msg = SubChanges {
        since: Some(Sequence::from(42)),
        ..SubChanges::default()
    }
    .to_message();
    assert_eq!(msg.property("since"), Some("42"));
    check_request(&UnsubChanges {
        collection: Some(1),
    });
    check_request(&UnsubChanges::default());
    check_request(&Ping);
    check_reply(&SubChanges::default().to_message(), &EmptyReply);
}

#[test]
fn sub_changes_booleans_accept_1_and_true() {
    for (value, expected) in [
        ("true", true),
        ("1", true),
        ("TRUE", true),
        ("yes", true),
        ("0", false),
        ("false", false),
        ("", false),
        ("nonsense", false),
    ] {
        let mut msg = Message::request("subChanges");
        for name in [
            "continuous",
            "activeOnly",
            "revocations",
            "sendReplacementRevs",
            "future",
        ] {
            msg.properties.set(name, value);
        }
        let sub = SubChanges::from_message(&msg).unwrap();
        assert_eq!(
            [
                sub.continuous,
                sub.active_only,
                sub.revocations,
                sub.send_replacement_revs,
                sub.future
            ],
            [expected; 5],
            "{value:?}"
        );
    }
}

#[test]
fn numbers_are_parsed_strictly() {
    for bad in [
        "-1",
        "+5",
        "1.5",
        " 5",
        "5x",
        "99999999999999999999",
        "0x10",
    ] {
        let mut msg = Message::request("subChanges");
        msg.properties.set("batch", bad);
        match SubChanges::from_message(&msg) {
            Err(MessageError::BadProperty {
                name: "batch",
                value,
                ..
            }) => assert_eq!(value, bad),
            other => panic!("{bad:?}: {other:?}"),
        }
        let mut msg = GetCheckpoint {
            client: "cp".into(),
            collection: None,
        }
        .to_message();
        msg.properties.set("collection", bad);
        assert!(GetCheckpoint::from_message(&msg).is_err(), "{bad:?}");
    }
}

#[test]
fn changes_round_trip_and_caught_up_forms() {
    let changes = Changes {
        rows: vec![
            ChangeRow {
                sequence: Sequence::from(3152),
                doc_id: "doc1".into(),
                rev_id: rev("2-ab"),
                flags: ChangeFlags::NONE,
                body_size: None,
            },
            ChangeRow {
                sequence: Sequence::from("3155:2"),
                doc_id: "doc2".into(),
                rev_id: rev("2-cd"),
                flags: ChangeFlags::DELETED,
                body_size: None,
            },
            ChangeRow {
                sequence: Sequence::from(3160),
                doc_id: "doc3".into(),
                rev_id: rev("3-ef"),
                flags: ChangeFlags::NONE,
                body_size: Some(18),
            },
        ],
        collection: None,
    };
    let msg = check_request(&changes);
    assert_eq!(
        &msg.body[..],
        br#"[[3152,"doc1","2-ab"],["3155:2","doc2","2-cd",1],[3160,"doc3","3-ef",0,18]]"#
    );
    assert!(msg.urgent && msg.compressed && !msg.no_reply);

    let caught_up = Changes::default();
    let msg = check_request(&caught_up);
    assert_eq!(&msg.body[..], b"[]");
    assert!(msg.urgent && msg.no_reply && !msg.compressed);

    // Sync Gateway's caught-up body is the JSON literal null.
    for body in [&b"null"[..], b"[]", b"", b" null "] {
        let mut msg = Message::request("changes");
        msg.body = Bytes::copy_from_slice(body);
        assert!(
            Changes::from_message(&msg).unwrap().is_caught_up(),
            "{body:?}"
        );
    }
}

#[test]
fn changes_row_forms() {
    let decode = |body: &str| {
        let mut msg = Message::request("changes");
        msg.body = Bytes::copy_from_slice(body.as_bytes());
        Changes::from_message(&msg).map(|c| c.rows)
    };
    let rows = decode(
        r#"[[1,"a","1-aa"],[2,"b","1-bb",1],[3,"c","1-cc",0,18],["4:1","d","1-dd",true],
            [5,"e","1-ee",false],[6,"f","1-ff",null,null],[7,"g","1-ab",6],[8,"h","1-ac",5,2]]"#,
    )
    .unwrap();
    let flags: Vec<u8> = rows.iter().map(|r| r.flags.bits()).collect();
    assert_eq!(flags, [0, 1, 0, 1, 0, 0, 6, 5]);
    assert_eq!(rows[2].body_size, Some(18));
    assert_eq!(rows[3].sequence.as_str(), Some("4:1"));
    assert!(rows[6].flags.is_access_removed() && rows[6].flags.is_revoked());
    assert!(
        !rows[7].flags.is_access_removed(),
        "5 is an ordinary tombstone"
    );
    assert!(ChangeFlags::REMOVED.is_access_removed());
    assert!((ChangeFlags::REVOKED | ChangeFlags::DELETED).is_access_removed());

    for bad in [
        r#"{"a":1}"#,
        r#"[[1,"a"]]"#,
        r#"[[1,"a","nope"]]"#,
        r#"[[1,"","1-aa"]]"#,
        r#"[[null,"a","1-aa"]]"#,
        r#"[[[1],"a","1-aa"]]"#,
        r#"[[1,"a","1-aa",-1]]"#,
        r#"[[1,"a","1-aa",256]]"#,
        r#"[[1,"a","1-aa",0,-5]]"#,
        r#"[[1,"a","1-aa",0,1.5]]"#,
        r#"[1,"a","1-aa"]"#,
        "[",
    ] {
        let err = decode(bad).unwrap_err();
        assert!(
            matches!(err, MessageError::BadBody { .. }),
            "{bad}: {err:?}"
        );
    }
}

#[test]
fn changes_reply_round_trip() {
    let request = Changes::default().to_message();
    let reply = ChangesReply {
        entries: vec![
            ChangesReplyEntry::Wanted(vec![rev("1-aa"), rev("1-bb")]),
            ChangesReplyEntry::Wanted(vec![]),
            ChangesReplyEntry::NotWanted,
            ChangesReplyEntry::Status(409),
        ],
        max_history: Some(50),
        blobs: true,
        deltas: true,
        send_replacement_revs: true,
    };
    let msg = check_reply(&request, &reply);
    assert_eq!(&msg.body[..], br#"[["1-aa","1-bb"],[],0,409]"#);
    assert_eq!(msg.property("maxHistory"), Some("50"));
    assert_eq!(msg.property("blobs"), Some("true"));
    assert_eq!(msg.property("deltas"), Some("true"));
    assert!(msg.compressed);
    assert_eq!(reply.wanted(0), Some(&[rev("1-aa"), rev("1-bb")][..]));
    assert_eq!(reply.entry(10), &ChangesReplyEntry::NotWanted);
    check_reply(&request, &ChangesReply::default());

    let mut msg = Message::response_to(&request);
    msg.body = Bytes::from_static(b"[null,0,[\"1-aa\"]]");
    let decoded = ChangesReply::from_response(&msg).unwrap();
    assert_eq!(decoded.entry(0), &ChangesReplyEntry::NotWanted);
    assert_eq!(decoded.entry(1), &ChangesReplyEntry::NotWanted);
    assert_eq!(decoded.wanted(2), Some(&[rev("1-aa")][..]));
}

#[test]
fn propose_changes_round_trip() {
    let propose = ProposeChanges {
        rows: vec![
            ProposedChange {
                doc_id: "doc1".into(),
                rev_id: rev("2-ab"),
                server_rev: Some(rev("1-bb")),
                body_size: Some(123),
            },
            ProposedChange {
                doc_id: "doc2".into(),
                rev_id: rev("1-cc"),
                server_rev: None,
                body_size: Some(57),
            },
            ProposedChange {
                doc_id: "doc3".into(),
                rev_id: rev("1-dd"),
                server_rev: None,
                body_size: None,
            },
            ProposedChange {
                doc_id: "doc4".into(),
                rev_id: rev("2-ee"),
                server_rev: Some(rev("1-ee")),
                body_size: None,
            },
        ],
        conflict_includes_rev: true,
        collection: Some(0),
    };
    let msg = check_request(&propose);
    assert_eq!(
        &msg.body[..],
        br#"[["doc1","2-ab","1-bb",123],["doc2","1-cc","",57],["doc3","1-dd"],["doc4","2-ee","1-ee"]]"#
    );
    assert_eq!(msg.property("conflictIncludesRev"), Some("true"));
    assert!(msg.urgent && msg.compressed);
    check_request(&ProposeChanges::default());

    let reply = ProposeChangesReply {
        entries: vec![
            ProposeStatus::Accepted,
            ProposeStatus::Conflict {
                current: Some(rev("2-ff")),
            },
            ProposeStatus::AlreadyHave,
            ProposeStatus::Conflict { current: None },
            ProposeStatus::Other(500),
        ],
        max_history: None,
        blobs: false,
        deltas: true,
    };
    let out = check_reply(&msg, &reply);
    assert_eq!(
        &out.body[..],
        br#"[0,{"status":409,"rev":"2-ff"},304,409,500]"#
    );
    assert_eq!(reply.status(9), &ProposeStatus::Accepted);
    check_reply(&msg, &ProposeChangesReply::default());
}

#[test]
fn rev_round_trip() {
    let full = sample_rev();
    let msg = check_request(&full);
    assert_eq!(msg.property("sequence"), Some("\"3151:5\""));
    assert_eq!(msg.property("history"), Some("2-aa,1-bb"));
    assert_eq!(msg.property("deleted"), Some("1"));
    assert_eq!(msg.property("noconflicts"), Some("1"));
    assert!(msg.compressed && !msg.no_reply);
    assert_eq!(msg.body, full.body);

    let minimal = Rev {
        id: "d".into(),
        rev: rev("1-aa"),
        sequence: None,
        history: vec![],
        deleted: false,
        no_conflicts: false,
        delta_src: None,
        replaced_rev: None,
        deleted_branch: None,
        collection: None,
        body: Bytes::new(),
    };
    let msg = check_request(&minimal);
    assert_eq!(msg.properties.len(), 3, "Profile, id, rev");

    check_reply(&msg, &RevReply { noop: false });
    let out = check_reply(&msg, &RevReply { noop: true });
    assert_eq!(out.property("noop"), Some("true"));

    // LiteCore sends `true` for some booleans, `1` for others: accept both.
    let mut msg = minimal.to_message();
    msg.properties.set("deleted", "true");
    msg.properties.set("noconflicts", "true");
    let decoded = Rev::from_message(&msg).unwrap();
    assert!(decoded.deleted && decoded.no_conflicts);
    // History tolerates spaces.
    msg.properties.set("history", " 2-aa , 1-bb ");
    assert_eq!(
        Rev::from_message(&msg).unwrap().history,
        vec![rev("2-aa"), rev("1-bb")]
    );
    msg.properties.set("history", "2-aa,bogus");
    assert!(matches!(
        Rev::from_message(&msg),
        Err(MessageError::BadProperty {
            name: "history",
            ..
        })
    ));
}

#[test]
fn rev_requires_id_and_rev() {
    let mut msg = Message::request("rev");
    msg.properties.set("rev", "1-aa");
    assert_eq!(
        Rev::from_message(&msg),
        Err(MessageError::MissingProperty { name: "id" })
    );
    msg.properties.set("id", "doc");
    msg.properties.set("rev", "");
    assert_eq!(
        Rev::from_message(&msg),
        Err(MessageError::MissingProperty { name: "rev" })
    );
    let err = Request::from_message(&msg).unwrap_err();
    let reply = err.to_error_reply(&msg);
    assert_eq!(reply.error(), Some(("HTTP", 400)));
    assert_eq!(&reply.body[..], b"missing property 'rev'");
}

#[test]
fn consecutive_history() {
    let mut r = sample_rev();
    assert!(r.has_consecutive_history());
    r.history = vec![rev("2-aa"), rev("5-bb")];
    assert!(!r.has_consecutive_history());
    r.history.clear();
    assert!(r.has_consecutive_history());
}

#[test]
fn norev_round_trip() {
    let norev = NoRev {
        id: "doc1".into(),
        rev: rev("2-ab"),
        sequence: Some(Sequence::from(42)),
        error: Some(404),
        reason: Some("missing".into()),
        collection: Some(1),
    };
    let msg = check_request(&norev);
    assert!(msg.no_reply);
    assert!(msg.body.is_empty());
    check_request(&NoRev {
        sequence: Some(Sequence::from("12::30")),
        error: None,
        reason: None,
        collection: None,
        ..norev.clone()
    });

    // Sync Gateway writes a compound sequence without quotes here, and `seq` on CBMobile_2.
    let mut msg = Message::request("norev");
    msg.properties.set("id", "doc1");
    msg.properties.set("rev", "2-ab");
    msg.properties.set("seq", "3151:5");
    msg.properties.set("error", "404");
    let decoded = NoRev::from_message(&msg).unwrap();
    assert_eq!(decoded.sequence, Some(Sequence::from("3151:5")));
    assert_eq!(decoded.error, Some(404));
    msg.properties.set("error", "four");
    assert!(matches!(
        NoRev::from_message(&msg),
        Err(MessageError::BadProperty { name: "error", .. })
    ));

    // A `rev` with an `error` property is a norev.
    let mut msg = Message::request("rev");
    msg.properties.set("id", "doc1");
    msg.properties.set("rev", "2-ab");
    msg.properties.set("sequence", "7");
    msg.properties.set("error", "410");
    match Request::from_message(&msg).unwrap() {
        Request::NoRev(n) => {
            assert_eq!(n.error, Some(410));
            assert_eq!(n.sequence, Some(Sequence::from(7)));
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn attachments_round_trip() {
    let digest = BlobDigest::of(b"Hello, blob!\n");
    let get = GetAttachment {
        digest,
        doc_id: Some("doc1".into()),
        compress: true,
        collection: None,
    };
    let req = check_request(&get);
    assert_eq!(req.property("compress"), Some("true"));
    assert_eq!(req.property("digest"), Some(digest.to_string().as_str()));
    let reply = GetAttachmentReply {
        data: Bytes::from_static(b"Hello, blob!\n"),
    };
    assert!(check_reply(&req, &reply).compressed);
    let plain = check_request(&GetAttachment {
        doc_id: None,
        compress: false,
        collection: Some(4),
        ..get
    });
    assert!(!check_reply(&plain, &reply).compressed);

    let mut bad = req.clone();
    bad.properties.set("digest", "sha1-nope");
    assert!(matches!(
        GetAttachment::from_message(&bad),
        Err(MessageError::BadProperty { name: "digest", .. })
    ));

    let prove = ProveAttachment {
        digest,
        nonce: Bytes::from((1..=20).collect::<Vec<u8>>()),
        collection: None,
    };
    let req = check_request(&prove);
    let proof = prove.prove(b"Hello, blob!\n");
    assert!(prove.verify(b"Hello, blob!\n", &proof));
    assert!(!prove.verify(b"Hello, blob?\n", &proof));
    let out = check_reply(&req, &proof);
    assert_eq!(&out.body[..], b"sha1-B4fLt5PqMZJmWaNuC5GY99YrdA0=");

    for len in [0, 256] {
        let mut msg = req.clone();
        msg.body = Bytes::from(vec![7u8; len]);
        assert!(matches!(
            ProveAttachment::from_message(&msg),
            Err(MessageError::BadBody { .. })
        ));
    }
}

/// attachments.md §5: nonce 01..14 (20 bytes), attachment `Hello, blob!\n`.
#[test]
fn prove_attachment_golden() {
    let nonce: Vec<u8> = (1..=20).collect();
    assert_eq!(
        prove_attachment(&nonce, b"Hello, blob!\n"),
        "sha1-B4fLt5PqMZJmWaNuC5GY99YrdA0="
    );
    let reply = ProveAttachmentReply {
        proof: prove_attachment(&nonce, b"Hello, blob!\n"),
    };
    assert_eq!(reply.proof.len(), 5 + 28);
}

#[test]
fn unknown_profile_is_blip_404() {
    let msg = Message::request("getRev");
    let err = Request::from_message(&msg).unwrap_err();
    assert_eq!(err, MessageError::UnknownProfile("getRev".into()));
    let reply = err.to_error_reply(&msg);
    assert_eq!(reply.kind, MessageType::Error);
    assert_eq!(reply.error(), Some(("BLIP", 404)));
    assert_eq!(&reply.body[..], b"No handler for BLIP request");

    let mut no_profile = Message::request("x");
    no_profile.properties.remove("Profile");
    assert_eq!(
        Request::from_message(&no_profile).unwrap_err().reply_code(),
        ("BLIP", 404)
    );
}

#[test]
fn wrong_profile_and_kind() {
    let msg = GetCheckpoint {
        client: "cp".into(),
        collection: None,
    }
    .to_message();
    assert_eq!(
        SetCheckpoint::from_message(&msg),
        Err(MessageError::WrongProfile {
            expected: Profile::SetCheckpoint,
            found: Some("getCheckpoint".into()),
        })
    );
    let response = Message::response_to(&msg);
    assert!(matches!(
        GetCheckpoint::from_message(&response),
        Err(MessageError::WrongType { .. })
    ));
    assert!(matches!(
        Request::from_message(&response),
        Err(MessageError::WrongType { .. })
    ));
    assert!(matches!(
        EmptyReply::from_response(&msg),
        Err(MessageError::WrongType { .. })
    ));
}

#[test]
fn profiles_by_name() {
    for profile in Profile::ALL {
        assert_eq!(Profile::from_name(profile.as_str()), Some(profile));
        assert_eq!(profile.to_string().parse::<Profile>().unwrap(), profile);
    }
    assert_eq!(Profile::from_name("Rev"), None, "names are case-sensitive");
}

#[test]
fn unknown_properties_are_ignored() {
    let mut msg = sample_rev().to_message();
    msg.properties.set("Content-Type", "application/json");
    msg.properties.set("sgShowHandler", "true");
    assert_eq!(Rev::from_message(&msg).unwrap(), sample_rev());
}

// ---------------------------------------------------------------------------------------------
// Strategies.

fn rev_id() -> impl Strategy<Value = RevId> {
    (
        1u32..=u32::MAX,
        proptest::collection::vec(any::<u8>(), 1..=20),
    )
        .prop_map(|(gen, digest)| {
            let hex: String = digest.iter().map(|b| format!("{b:02x}")).collect();
            RevId::parse(&format!("{gen}-{hex}")).unwrap()
        })
}

fn sequence() -> impl Strategy<Value = Sequence> {
    prop_oneof![
        any::<u64>().prop_map(Sequence::from),
        "[0-9]{1,6}:[0-9]{1,6}".prop_map(Sequence::from),
        "[0-9]{1,4}::[0-9]{1,4}".prop_map(Sequence::from),
        "\\PC{0,12}".prop_map(Sequence::from),
    ]
}

/// Non-empty text with JSON-escaped characters; no NUL (properties are NUL-separated).
fn text() -> impl Strategy<Value = String> {
    "[a-zA-Z0-9_\\-.:/\"\\\\ é😀\t]{1,16}"
}

fn digest() -> impl Strategy<Value = BlobDigest> {
    proptest::collection::vec(any::<u8>(), 0..32).prop_map(|d| BlobDigest::of(&d))
}

fn json_object() -> impl Strategy<Value = Bytes> {
    proptest::collection::btree_map("[a-z]{1,6}", any::<i64>(), 0..4)
        .prop_map(|m| Bytes::from(serde_json::to_vec(&m).unwrap()))
}

fn change_row() -> impl Strategy<Value = ChangeRow> {
    (
        sequence(),
        text(),
        rev_id(),
        any::<u8>(),
        proptest::option::of(any::<u64>()),
    )
        .prop_map(|(sequence, doc_id, rev_id, flags, body_size)| ChangeRow {
            sequence,
            doc_id,
            rev_id,
            flags: ChangeFlags::from_bits(flags),
            body_size,
        })
}

fn collection() -> impl Strategy<Value = Option<u32>> {
    proptest::option::of(any::<u32>())
}

fn rev_message() -> impl Strategy<Value = Rev> {
    (
        (text(), rev_id(), proptest::option::of(sequence())),
        proptest::collection::vec(rev_id(), 0..12),
        (any::<bool>(), any::<bool>()),
        (
            proptest::option::of(rev_id()),
            proptest::option::of(rev_id()),
            proptest::option::of(text()),
        ),
        collection(),
        proptest::collection::vec(any::<u8>(), 0..64),
    )
        .prop_map(
            |(
                (id, rev, sequence),
                history,
                (deleted, no_conflicts),
                (delta_src, replaced_rev, deleted_branch),
                collection,
                body,
            )| Rev {
                id,
                rev,
                sequence,
                history,
                deleted,
                no_conflicts,
                delta_src,
                replaced_rev,
                deleted_branch,
                collection,
                body: Bytes::from(body),
            },
        )
}

fn sub_changes() -> impl Strategy<Value = SubChanges> {
    (
        (
            proptest::option::of(sequence()),
            any::<bool>(),
            proptest::option::of(any::<u32>()),
        ),
        (
            proptest::option::of("[a-z\\-]{1,16}"),
            any::<bool>(),
            any::<bool>(),
            any::<bool>(),
        ),
        prop_oneof![
            Just((None, vec![], vec![])),
            proptest::collection::vec("[a-zA-Z0-9_ *]{1,8}", 1..4).prop_map(|c| (
                Some("sync_gateway/bychannel".to_owned()),
                c,
                vec![]
            )),
            proptest::collection::btree_map("[a-z]{1,6}", text(), 0..3).prop_map(|params| (
                Some("app/custom".to_owned()),
                vec![],
                params
                    .into_iter()
                    .filter(|(k, _)| k != "since" && k != "batch" && k != "filter" && k != "future")
                    .collect()
            )),
        ],
        (any::<bool>(), proptest::option::of(any::<bool>())),
        proptest::option::of(proptest::collection::vec(text(), 0..4)),
        collection(),
    )
        .prop_map(
            |(
                (since, continuous, batch),
                (versioning, active_only, revocations, send_replacement_revs),
                (filter, channels, filter_params),
                (future, request_plus),
                doc_ids,
                collection,
            )| SubChanges {
                since,
                continuous,
                batch,
                versioning,
                active_only,
                revocations,
                send_replacement_revs,
                filter,
                channels,
                filter_params,
                future,
                request_plus,
                doc_ids,
                collection,
            },
        )
}

fn changes_reply_entry() -> impl Strategy<Value = ChangesReplyEntry> {
    prop_oneof![
        Just(ChangesReplyEntry::NotWanted),
        proptest::collection::vec(rev_id(), 0..5).prop_map(ChangesReplyEntry::Wanted),
        (1u16..).prop_map(ChangesReplyEntry::Status),
    ]
}

fn propose_status() -> impl Strategy<Value = ProposeStatus> {
    prop_oneof![
        Just(ProposeStatus::Accepted),
        Just(ProposeStatus::AlreadyHave),
        proptest::option::of(rev_id()).prop_map(|current| ProposeStatus::Conflict { current }),
        any::<u16>()
            .prop_filter("specific statuses", |s| ![0, 304, 409].contains(s))
            .prop_map(ProposeStatus::Other),
    ]
}

fn proposed_change() -> impl Strategy<Value = ProposedChange> {
    (
        text(),
        rev_id(),
        proptest::option::of(rev_id()),
        proptest::option::of(any::<u64>()),
    )
        .prop_map(|(doc_id, rev_id, server_rev, body_size)| ProposedChange {
            doc_id,
            rev_id,
            server_rev,
            body_size,
        })
}

fn checkpoint_map() -> impl Strategy<Value = Option<Map<String, Value>>> {
    proptest::option::of(
        proptest::collection::btree_map("[a-z_]{1,6}", text(), 0..3)
            .prop_map(|m| m.into_iter().map(|(k, v)| (k, Value::String(v))).collect()),
    )
}

// ---------------------------------------------------------------------------------------------
// Property tests: round trips.

proptest! {
    #[test]
    fn prop_changes_rows_round_trip(rows in proptest::collection::vec(change_row(), 0..20), collection in collection()) {
        let changes = Changes { rows, collection };
        check_request(&changes);
        // The body is JSON a generic parser agrees with.
        let msg = changes.to_message();
        let parsed: Value = serde_json::from_slice(&msg.body).unwrap();
        let parsed = parsed.as_array().unwrap();
        prop_assert_eq!(parsed.len(), changes.rows.len());
        for (row, json) in changes.rows.iter().zip(parsed) {
            let items = json.as_array().unwrap();
            prop_assert_eq!(&items[0], row.sequence.as_json());
            prop_assert_eq!(items[1].as_str(), Some(row.doc_id.as_str()));
            prop_assert_eq!(items[2].as_str(), Some(row.rev_id.as_str()));
            let expected_len = if row.body_size.is_some() { 5 } else if row.flags.is_empty() { 3 } else { 4 };
            prop_assert_eq!(items.len(), expected_len);
        }
    }

    #[test]
    fn prop_rev_round_trip(rev in rev_message()) {
        let msg = check_request(&rev);
        let expected: Option<String> = (!rev.history.is_empty())
            .then(|| rev.history.iter().map(RevId::as_str).collect::<Vec<_>>().join(","));
        prop_assert_eq!(msg.property("history").map(str::to_owned), expected);
        prop_assert_eq!(&msg.body, &rev.body);
    }

    #[test]
    fn prop_history_consecutive(start in 2u32..1000, len in 0usize..20, gap in proptest::option::of(0usize..20)) {
        let len = len.min(start as usize - 1);
        let mut history: Vec<RevId> = (1..=len as u32).map(|i| rev(&format!("{}-aa", start - i))).collect();
        let mut consecutive = true;
        if let Some(at) = gap.filter(|&g| g < history.len()) {
            let g = history[at].generation();
            if g > 1 {
                history[at] = rev(&format!("{}-ab", g - 1));
                consecutive = false;
            }
        }
        let mut r = sample_rev();
        r.rev = rev(&format!("{start}-ff"));
        r.history = history;
        prop_assert_eq!(r.has_consecutive_history(), consecutive);
        check_request(&r);
    }

    #[test]
    fn prop_sub_changes_round_trip(sub in sub_changes()) {
        check_request(&sub);
    }

    #[test]
    fn prop_propose_changes_round_trip(rows in proptest::collection::vec(proposed_change(), 0..20), conflict_includes_rev in any::<bool>(), collection in collection()) {
        check_request(&ProposeChanges { rows, conflict_includes_rev, collection });
    }

    #[test]
    fn prop_replies_round_trip(
        changes_entries in proptest::collection::vec(changes_reply_entry(), 0..12),
        propose_entries in proptest::collection::vec(propose_status(), 0..12),
        flags in (any::<bool>(), any::<bool>(), any::<bool>(), proptest::option::of(any::<u32>())),
        checkpoints in proptest::collection::vec(checkpoint_map(), 0..4),
        data in proptest::collection::vec(any::<u8>(), 0..64),
        rev in "[0-9]{1,3}-[a-z]{1,3}",
    ) {
        let request = Changes::default().to_message();
        let (blobs, deltas, send_replacement_revs, max_history) = flags;
        check_reply(&request, &ChangesReply { entries: changes_entries, max_history, blobs, deltas, send_replacement_revs });
        check_reply(&request, &ProposeChangesReply { entries: propose_entries, max_history, blobs, deltas });
        check_reply(&request, &GetCollectionsReply { checkpoints });
        check_reply(&request, &GetAttachmentReply { data: Bytes::from(data.clone()) });
        check_reply(&request, &ProveAttachmentReply { proof: prove_attachment(&data, &data) });
        check_reply(&request, &SetCheckpointReply { rev: rev.clone() });
        check_reply(&request, &GetCheckpointReply { rev, body: Bytes::from_static(b"{}") });
        check_reply(&request, &RevReply { noop: blobs });
        check_reply(&request, &EmptyReply);
    }

    #[test]
    fn prop_small_requests_round_trip(
        client in text(),
        rev in proptest::option::of(text()),
        body in json_object(),
        collection in collection(),
        ids in proptest::collection::vec((text(), text()), 0..4),
        uuid in proptest::option::of(text()),
        norev in (text(), rev_id(), proptest::option::of(sequence()), proptest::option::of(any::<i32>()), proptest::option::of(text())),
        attachment in (digest(), proptest::option::of(text()), any::<bool>(), proptest::collection::vec(any::<u8>(), 1..=255)),
    ) {
        check_request(&GetCheckpoint { client: client.clone(), collection });
        check_request(&SetCheckpoint { client, rev, body, collection });
        let (checkpoint_ids, collections) = ids.into_iter().unzip();
        check_request(&GetCollections { uuid, checkpoint_ids, collections });
        let (id, rev, sequence, error, reason) = norev;
        check_request(&NoRev { id, rev, sequence, error, reason, collection });
        let (digest, doc_id, compress, nonce) = attachment;
        check_request(&GetAttachment { digest, doc_id, compress, collection });
        check_request(&ProveAttachment { digest, nonce: Bytes::from(nonce), collection });
        check_request(&UnsubChanges { collection });
    }
}

// ---------------------------------------------------------------------------------------------
// Robustness: arbitrary input never panics a decoder.

/// Decodes `msg` with every decoder; each may fail, none may panic.
fn decode_everything(msg: &Message) {
    let _ = Request::from_message(msg);
    let _ = GetCheckpoint::from_message(msg);
    let _ = SetCheckpoint::from_message(msg);
    let _ = GetCollections::from_message(msg);
    let _ = SubChanges::from_message(msg);
    let _ = UnsubChanges::from_message(msg);
    let _ = Changes::from_message(msg);
    let _ = ProposeChanges::from_message(msg);
    let _ = Rev::from_message(msg);
    let _ = NoRev::from_message(msg);
    let _ = GetAttachment::from_message(msg);
    let _ = ProveAttachment::from_message(msg);
    let _ = Ping::from_message(msg);
    let _ = EmptyReply::from_response(msg);
    let _ = GetCheckpointReply::from_response(msg);
    let _ = SetCheckpointReply::from_response(msg);
    let _ = GetCollectionsReply::from_response(msg);
    let _ = ChangesReply::from_response(msg);
    let _ = ProposeChangesReply::from_response(msg);
    let _ = RevReply::from_response(msg);
    let _ = GetAttachmentReply::from_response(msg);
    let _ = ProveAttachmentReply::from_response(msg);
    if let Err(e) = Request::from_message(msg) {
        let reply = e.to_error_reply(msg);
        assert_eq!(reply.kind, MessageType::Error);
        let _ = e.to_string();
    }
}

const NAMES: &[&str] = &[
    "Profile",
    "client",
    "rev",
    "collection",
    "since",
    "continuous",
    "batch",
    "versioning",
    "activeOnly",
    "revocations",
    "sendReplacementRevs",
    "filter",
    "channels",
    "future",
    "requestPlus",
    "id",
    "sequence",
    "seq",
    "history",
    "deleted",
    "noconflicts",
    "deltaSrc",
    "replacedRev",
    "deleted_branch",
    "error",
    "reason",
    "digest",
    "docID",
    "compress",
    "conflictIncludesRev",
    "maxHistory",
    "blobs",
    "deltas",
    "noop",
    "uuid",
    "Error-Domain",
    "Error-Code",
    "x",
];

fn property_value() -> impl Strategy<Value = String> {
    prop_oneof![
        Just(String::new()),
        "[0-9]{1,25}",
        "-?[0-9]{1,5}(\\.[0-9])?",
        Just("true".to_owned()),
        Just("1".to_owned()),
        "[1-9][0-9]{0,2}-[0-9a-f]{0,8}",
        "([1-9]-[0-9a-f]{2},){0,4}[1-9]-[0-9a-f]{2}",
        "\"[0-9:]{0,8}\"",
        Just("sha1-B4fLt5PqMZJmWaNuC5GY99YrdA0=".to_owned()),
        Just("sync_gateway/bychannel".to_owned()),
        "\\PC{0,20}",
    ]
}

fn profile_name() -> impl Strategy<Value = String> {
    prop_oneof![
        proptest::sample::select(Profile::ALL.to_vec()).prop_map(|p| p.as_str().to_owned()),
        "\\PC{0,12}",
    ]
}

fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        (-1e300f64..1e300).prop_map(Value::from),
        "[0-9]-[0-9a-f]{2}".prop_map(Value::String),
        "\\PC{0,8}".prop_map(Value::String),
    ];
    leaf.prop_recursive(4, 48, 6, |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            proptest::collection::btree_map(
                prop_oneof![
                    Just("docIDs".to_owned()),
                    Just("checkpoint_ids".to_owned()),
                    Just("collections".to_owned()),
                    Just("status".to_owned()),
                    Just("rev".to_owned()),
                    "[a-z]{1,4}"
                ],
                inner,
                0..4
            )
            .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

fn arbitrary_message() -> impl Strategy<Value = Message> {
    (
        0u8..3,
        proptest::option::of(profile_name()),
        proptest::collection::vec(
            (proptest::sample::select(NAMES.to_vec()), property_value()),
            0..10,
        ),
        prop_oneof![
            proptest::collection::vec(any::<u8>(), 0..300).prop_map(Bytes::from),
            json_value().prop_map(|v| Bytes::from(v.to_string())),
        ],
        any::<(bool, bool, bool)>(),
    )
        .prop_map(
            |(kind, profile, pairs, body, (urgent, compressed, no_reply))| {
                let mut properties: Properties = pairs.into_iter().collect();
                if let Some(profile) = profile {
                    properties.set("Profile", profile);
                }
                Message {
                    kind: match kind {
                        0 => MessageType::Request,
                        1 => MessageType::Response,
                        _ => MessageType::Error,
                    },
                    number: 1,
                    urgent,
                    compressed,
                    no_reply,
                    properties,
                    body,
                }
            },
        )
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn prop_arbitrary_messages_never_panic(msg in arbitrary_message()) {
        decode_everything(&msg);
    }

    /// Valid messages with one property or the body replaced.
    #[test]
    fn prop_mutated_messages_never_panic(
        base in prop_oneof![
            rev_message().prop_map(|r| r.to_message()),
            sub_changes().prop_map(|s| s.to_message()),
            proptest::collection::vec(change_row(), 0..4).prop_map(|rows| Changes { rows, collection: None }.to_message()),
            proptest::collection::vec(proposed_change(), 0..4).prop_map(|rows| ProposeChanges { rows, conflict_includes_rev: true, collection: None }.to_message()),
        ],
        name in proptest::sample::select(NAMES.to_vec()),
        value in property_value(),
        body in proptest::option::of(json_value()),
    ) {
        let mut msg = base;
        msg.properties.set(name, value);
        if let Some(body) = body {
            msg.body = Bytes::from(body.to_string());
        }
        decode_everything(&msg);
        let mut response = msg.clone();
        response.kind = MessageType::Response;
        decode_everything(&response);
    }
}

/// Found by fuzzing: a `since` with more significant digits than a double holds must parse to
/// the nearest double, or its re-encoding decodes to another value.
#[test]
fn a_long_numeric_sequence_survives_encoding() {
    let mut message = Message::request("subChanges");
    message
        .properties
        .set("since", format!("\n\n{}", "5".repeat(52)));
    let decoded = Request::from_message(&message).unwrap();
    let again = Request::from_message(&decoded.to_message()).unwrap();
    assert_eq!(again, decoded);
    for text in [
        "0.30000000000000004",
        "1.7976931348623157e308",
        "123456789012345678901.5",
    ] {
        let value: Value = serde_json::from_str(text).unwrap();
        let back: Value = serde_json::from_str(&value.to_string()).unwrap();
        assert_eq!(back, value, "{text}");
    }
}
