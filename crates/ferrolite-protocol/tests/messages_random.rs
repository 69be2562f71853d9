//! Seeded random messages through the typed replication decoders, as the
//! `replication_messages` fuzz target does (run here on every test run): every request
//! profile and reply type gets random properties — known names with random, empty or
//! numeric values, and random names — and random or JSON-ish bodies. Decoding may fail but
//! never panics, and what decodes encodes to a message that decodes to the same value.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use bytes::Bytes;
use ferrolite_protocol::blip::{Message, MessageType};
use ferrolite_protocol::messages::{
    ChangesReply, EmptyReply, GetAttachmentReply, GetCheckpointReply, GetCollectionsReply,
    ProposeChangesReply, ProveAttachmentReply, Request, RevReply, SetCheckpointReply, TypedReply,
};

const PROFILES: [&str; 13] = [
    "getCheckpoint",
    "setCheckpoint",
    "getCollections",
    "subChanges",
    "unsubChanges",
    "changes",
    "proposeChanges",
    "rev",
    "norev",
    "getAttachment",
    "proveAttachment",
    "PING",
    "frobnicate",
];

/// Property names the decoders look at.
const NAMES: [&str; 30] = [
    "client",
    "rev",
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
    "collection",
    "id",
    "sequence",
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
    "maxHistory",
    "blobs",
    "deltas",
];

/// Values that reach the interesting branches.
const VALUES: [&str; 16] = [
    "",
    "1",
    "0",
    "true",
    "false",
    "18446744073709551616",
    "4294967295",
    "-1",
    "2-abcd",
    "3-aa,2-bb,1-cc",
    "sha1-AAAAAAAAAAAAAAAAAAAAAAAAAAA=",
    "\"42\"",
    "sync_gateway/bychannel",
    "a,b,,c",
    "rev_trees",
    "404",
];

/// Bodies: JSON of the shapes the messages carry, and garbage.
const BODIES: [&str; 12] = [
    "",
    "{}",
    "[]",
    r#"[[1,"doc","1-aa"],[2,"doc2","2-bb","",7]]"#,
    r#"[["doc","1-aa"],["doc2","2-bb","1-aa",3]]"#,
    r#"[0,["1-aa"],[],0]"#,
    r#"[0,{"status":409,"rev":"2-bb"}]"#,
    r#"{"docIDs":["a","b"]}"#,
    r#"{"checkpoints":[{"remote":1},null]}"#,
    r#"{"remote":42,"time":1}"#,
    "[[null]]",
    "{\"a\":",
];

/// xorshift64*: deterministic randomness.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }

    fn text(&mut self) -> String {
        let len = self.below(12);
        (0..len)
            .map(|_| char::from(b' ' + self.below(95) as u8))
            .collect()
    }
}

fn random_message(rng: &mut Rng) -> Message {
    let mut message = Message::request(PROFILES[rng.below(PROFILES.len())]);
    message.kind = match rng.below(4) {
        0 => MessageType::Response,
        1 => MessageType::Error,
        _ => MessageType::Request,
    };
    if rng.below(20) == 0 {
        message.properties.remove("Profile");
    }
    for _ in 0..rng.below(8) {
        let name = if rng.below(8) == 0 {
            rng.text()
        } else {
            NAMES[rng.below(NAMES.len())].to_owned()
        };
        let value = if rng.below(4) == 0 {
            rng.text()
        } else {
            VALUES[rng.below(VALUES.len())].to_owned()
        };
        // Keys are not repeated: the first value of a repeated key is the one lookups see.
        if message.properties.get(&name).is_none() {
            message.properties.set(name, value);
        }
    }
    message.body = if rng.below(5) == 0 {
        let len = rng.below(64);
        Bytes::from((0..len).map(|_| rng.next() as u8).collect::<Vec<u8>>())
    } else {
        Bytes::from_static(BODIES[rng.below(BODIES.len())].as_bytes())
    };
    message
}

fn reply<T: TypedReply + PartialEq + std::fmt::Debug>(
    message: &Message,
    request: &Message,
) -> bool {
    match T::from_response(message) {
        Ok(decoded) => {
            let again = T::from_response(&decoded.to_response(request));
            assert_eq!(again.as_ref(), Ok(&decoded), "{message:?}");
            true
        }
        Err(_) => false,
    }
}

#[test]
fn random_messages_decode_or_fail_and_round_trip() {
    let mut rng = Rng(0x6d65_7373_6167_6573);
    let (mut requests, mut replies) = (0, 0);
    for _ in 0..20_000 {
        let message = random_message(&mut rng);
        match Request::from_message(&message) {
            Ok(request) => {
                requests += 1;
                let again = Request::from_message(&request.to_message());
                assert_eq!(again.as_ref(), Ok(&request), "{message:?}");
            }
            Err(error) => {
                let answer = error.to_error_reply(&message);
                assert!(
                    matches!(answer.error(), Some(("HTTP" | "BLIP", 400 | 404 | 502))),
                    "{error:?}"
                );
            }
        }
        let request = Message::request("x");
        for decoded in [
            reply::<EmptyReply>(&message, &request),
            reply::<GetCheckpointReply>(&message, &request),
            reply::<SetCheckpointReply>(&message, &request),
            reply::<GetCollectionsReply>(&message, &request),
            reply::<ChangesReply>(&message, &request),
            reply::<ProposeChangesReply>(&message, &request),
            reply::<RevReply>(&message, &request),
            reply::<GetAttachmentReply>(&message, &request),
            reply::<ProveAttachmentReply>(&message, &request),
        ] {
            replies += usize::from(decoded);
        }
    }
    // The generator reaches the decoders, not only their refusals.
    assert!(requests > 2_000, "{requests} requests decoded");
    assert!(replies > 2_000, "{replies} replies decoded");
}
