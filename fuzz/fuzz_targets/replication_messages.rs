//! Arbitrary properties and bodies through the typed replication decoders
//! (`ferrolite_protocol::messages`): every request by its profile, every reply type, and
//! error replies. Errors are fine, panics are not; and what decodes must encode to a message
//! that decodes to the same value.
//!
//! Input: `[selector][len: u16 BE][property block of len bytes][body…]`. The selector picks
//! the message kind (request, response, error) and, for a request, a `Profile` (or none, or
//! the block's own). The block is split at NULs into key/value pairs, malformed or not, so
//! the decoders see every shape of property; a repeated key keeps its first value (what
//! lookups see), since go-blip refuses repeated keys and their round trip means nothing.

#![no_main]

use bytes::Bytes;
use ferrolite_protocol::blip::{Message, MessageType, Properties};
use ferrolite_protocol::messages::{
    ChangesReply, EmptyReply, GetAttachmentReply, GetCheckpointReply, GetCollectionsReply,
    MessageError, ProposeChangesReply, ProveAttachmentReply, Request, RevReply, SetCheckpointReply,
    TypedReply,
};
use libfuzzer_sys::fuzz_target;

const PROFILES: [&str; 15] = [
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
    "",
    "-",
];

fn message(data: &[u8]) -> Option<Message> {
    let (&selector, rest) = data.split_first()?;
    let len = match rest {
        [a, b, ..] => usize::from(u16::from_be_bytes([*a, *b])),
        _ => 0,
    };
    let rest = rest.get(2..).unwrap_or_default();
    let (block, body) = rest.split_at(len.min(rest.len()));
    let mut pieces = block.split(|&b| b == 0);
    let mut pairs: Vec<(String, String)> = Vec::new();
    while let Some(key) = pieces.next() {
        let value = pieces.next().unwrap_or_default();
        let key = String::from_utf8_lossy(key).into_owned();
        if pairs.iter().all(|(k, _)| *k != key) {
            pairs.push((key, String::from_utf8_lossy(value).into_owned()));
        }
    }
    let properties: Properties = pairs.into_iter().collect();
    let mut message = Message::request("x");
    message.properties = properties;
    message.kind = match selector % 3 {
        0 => MessageType::Request,
        1 => MessageType::Response,
        _ => MessageType::Error,
    };
    let profile = usize::from(selector / 3) % (PROFILES.len() + 1);
    if message.kind == MessageType::Request && profile < PROFILES.len() {
        message.properties.set("Profile", PROFILES[profile]);
    }
    message.number = u64::from(selector);
    message.body = Bytes::copy_from_slice(body);
    Some(message)
}

/// A reply that decodes must survive its own encoding.
fn reply<T: TypedReply + PartialEq + std::fmt::Debug>(message: &Message, request: &Message) {
    if let Ok(decoded) = T::from_response(message) {
        let again = T::from_response(&decoded.to_response(request));
        assert_eq!(again.as_ref(), Ok(&decoded), "{message:?}");
    }
}

fuzz_target!(|data: &[u8]| {
    let Some(message) = message(data) else {
        return;
    };
    match Request::from_message(&message) {
        Ok(request) => {
            let again = Request::from_message(&request.to_message());
            assert_eq!(again.as_ref(), Ok(&request), "{message:?}");
        }
        Err(error) => {
            let reply = error.to_error_reply(&message);
            assert!(matches!(
                reply.error(),
                Some(("HTTP" | "BLIP", 400 | 404 | 502))
            ));
            let _ = MessageError::is_not_found(&error);
        }
    }
    let request = Message::request("x");
    reply::<EmptyReply>(&message, &request);
    reply::<GetCheckpointReply>(&message, &request);
    reply::<SetCheckpointReply>(&message, &request);
    reply::<GetCollectionsReply>(&message, &request);
    reply::<ChangesReply>(&message, &request);
    reply::<ProposeChangesReply>(&message, &request);
    reply::<RevReply>(&message, &request);
    reply::<GetAttachmentReply>(&message, &request);
    reply::<ProveAttachmentReply>(&message, &request);
});
