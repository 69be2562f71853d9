//! Delta sync (revisions-and-delta.md §4.3): encoding an outgoing `rev` as a JSON delta
//! against a revision the peer has, and expanding a received delta against our body of its
//! `deltaSrc`.
//!
//! - A delta is sent only when the peer accepts them (`deltas=true` in its reply to
//!   `changes` or `proposeChanges`) and our configuration allows them, for a live revision
//!   of at least [`MIN_BODY_SIZE_FOR_DELTA`] bytes, against a source revision whose body
//!   we keep and that is not a tombstone, and only when the delta is smaller than the full
//!   body (LiteCore's bound is 1.2 × the body; a delta that is not smaller saves nothing).
//! - A received delta that cannot be applied (no body for `deltaSrc`, a tombstone, a
//!   malformed delta) is answered `HTTP 422`; the sender then resends the full body, and so
//!   do we when a peer answers one of our deltas with 422 (or 404, as Sync Gateway does).

use bytes::Bytes;
use ferrolite_document::RevId;
use ferrolite_protocol::blip::Message;
use ferrolite_protocol::delta::{apply_delta, create_delta};
use ferrolite_protocol::messages::Rev;
use ferrolite_storage::Store;
use serde_json::Value;

use crate::blobs;
use crate::driver::{Blip, PendingReply};
use crate::ReplicatorError;

/// Bodies smaller than this are always sent whole (LiteCore `kMinBodySizeForDelta`).
pub(crate) const MIN_BODY_SIZE_FOR_DELTA: usize = 200;

/// How outgoing revisions are encoded for the peer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) struct Encoding {
    /// Add `_attachments` stubs for blobs (the peer did not say `blobs=true`).
    pub(crate) stubs: bool,
    /// Send deltas where worth it.
    pub(crate) deltas: bool,
}

/// An outgoing `rev`, and the full-body message to resend if its delta is refused.
pub(crate) struct OutgoingRev {
    pub(crate) message: Message,
    pub(crate) full: Option<Message>,
}

/// The body as the peer receives it: with `_attachments` stubs when `encoding` says so.
fn wire_body(body: &Bytes, generation: u32, encoding: Encoding) -> Bytes {
    if encoding.stubs {
        if let Some(stubbed) = blobs::with_attachment_stubs(body, generation) {
            return stubbed;
        }
    }
    body.clone()
}

/// The delta turning `base` into `target` (both JSON bodies), when `target` is large enough
/// and the delta is smaller than it.
pub(crate) fn make_delta(base: &[u8], target: &[u8]) -> Option<Bytes> {
    if target.len() < MIN_BODY_SIZE_FOR_DELTA {
        return None;
    }
    let old: Value = serde_json::from_slice(base).ok()?;
    let new: Value = serde_json::from_slice(target).ok()?;
    if !old.is_object() || !new.is_object() {
        return None;
    }
    let delta = serde_json::to_vec(&create_delta(&old, &new)).ok()?;
    (delta.len() < target.len()).then(|| Bytes::from(delta))
}

/// Builds the message for `rev` (whose body is the stored full body): stubs added per
/// `encoding`, and, when `encoding.deltas` and `base` (a revision the peer has, with its
/// body, not a tombstone) make it worth it, a delta with `deltaSrc`.
pub(crate) fn encode_rev(
    rev: Rev,
    base: Option<(&RevId, &Bytes)>,
    encoding: Encoding,
) -> OutgoingRev {
    let mut rev = rev;
    rev.body = wire_body(&rev.body, rev.rev.generation(), encoding);
    if encoding.deltas && !rev.deleted {
        if let Some((base_id, base_body)) = base {
            let base_body = wire_body(base_body, base_id.generation(), encoding);
            if let Some(delta) = make_delta(&base_body, &rev.body) {
                let full = rev.to_message();
                rev.delta_src = Some(base_id.clone());
                rev.body = delta;
                return OutgoingRev {
                    message: rev.to_message(),
                    full: Some(full),
                };
            }
        }
    }
    OutgoingRev {
        message: rev.to_message(),
        full: None,
    }
}

/// A `rev` sent and awaiting its reply, with the full-body message to resend if the peer
/// refuses its delta.
pub(crate) struct SentRev {
    pending: PendingReply,
    full: Option<Message>,
}

impl SentRev {
    /// Sends `out` expecting a reply.
    pub(crate) async fn send(blip: &Blip, out: OutgoingRev) -> Result<SentRev, ReplicatorError> {
        Ok(SentRev {
            pending: blip.send_request(out.message).await?,
            full: out.full,
        })
    }

    /// The reply; when it refuses the delta, the reply to the full body sent again.
    pub(crate) async fn reply(self, blip: &Blip) -> Result<Message, ReplicatorError> {
        let reply = self.pending.wait().await?;
        match self.full {
            Some(full) if wants_full_body(&reply) => blip.request(full).await,
            _ => Ok(reply),
        }
    }
}

/// Whether the reply to a `rev` sent as a delta asks for the full body: `HTTP 422` (delta
/// not applicable) or `HTTP 404` (source unknown, Sync Gateway).
pub(crate) fn wants_full_body(reply: &Message) -> bool {
    matches!(reply.error(), Some(("HTTP", 422 | 404)))
}

/// Why a received delta cannot be used: the `HTTP 422` text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct DeltaRefusal(pub(crate) String);

/// The full body of a received delta `rev`: the delta applied to our body of its
/// `deltaSrc` (with `_attachments` stubs re-added to it first when the delta mentions
/// `_attachments`, as LiteCore does). The result still has to go through the usual body
/// checks (`_` keys stripped, blobs reconciled).
pub(crate) fn expand(
    store: &dyn Store,
    rev: &Rev,
) -> Result<Result<Bytes, DeltaRefusal>, ReplicatorError> {
    let Some(source) = &rev.delta_src else {
        return Ok(Ok(rev.body.clone()));
    };
    let refuse = |why: String| Ok(Err(DeltaRefusal(why)));
    let Some(record) = store.get(&rev.id)? else {
        return refuse(format!("Unknown document {:?} for delta source", rev.id));
    };
    let Some(base) = record.tree.get(source) else {
        return refuse(format!("Unknown delta source revision {source}"));
    };
    if base.is_deleted() {
        return refuse(format!("The delta source revision {source} is a deletion"));
    }
    let Some(base_body) = base.body() else {
        return refuse(format!("No body for the delta source revision {source}"));
    };
    let delta: Value = match serde_json::from_slice(&rev.body) {
        Ok(delta) => delta,
        Err(err) => return refuse(format!("Invalid delta: {err}")),
    };
    let base_body = if delta.get("_attachments").is_some() {
        blobs::with_attachment_stubs(base_body, source.generation())
            .unwrap_or_else(|| base_body.clone())
    } else {
        base_body.clone()
    };
    let old: Value = match serde_json::from_slice(&base_body) {
        Ok(old) => old,
        Err(err) => return refuse(format!("Unreadable delta source body: {err}")),
    };
    match apply_delta(&old, &delta) {
        Ok(new) => match serde_json::to_vec(&new) {
            Ok(bytes) => Ok(Ok(Bytes::from(bytes))),
            Err(err) => refuse(format!("Invalid delta result: {err}")),
        },
        Err(err) => refuse(format!("Invalid delta: {err}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ferrolite_document::canonical_json;
    use ferrolite_protocol::messages::Rev;
    use serde_json::json;

    fn rev(body: &Value) -> Rev {
        Rev {
            id: "doc".into(),
            rev: RevId::parse("2-bb").unwrap(),
            sequence: None,
            history: vec![RevId::parse("1-aa").unwrap()],
            deleted: false,
            no_conflicts: false,
            delta_src: None,
            replaced_rev: None,
            deleted_branch: None,
            collection: None,
            body: Bytes::from(canonical_json(body)),
        }
    }

    fn big(n: u64) -> Value {
        json!({"n": n, "text": "x".repeat(400), "list": [1, 2, 3]})
    }

    #[test]
    fn deltas_only_when_smaller_and_the_body_is_large_enough() {
        let base = Bytes::from(canonical_json(&big(1)));
        let base_id = RevId::parse("1-aa").unwrap();
        let enc = Encoding {
            stubs: false,
            deltas: true,
        };
        let out = encode_rev(rev(&big(2)), Some((&base_id, &base)), enc);
        assert_eq!(out.message.property("deltaSrc"), Some("1-aa"));
        assert_eq!(&out.message.body[..], br#"{"n":2}"#);
        let full = out.full.unwrap();
        assert_eq!(full.property("deltaSrc"), None);
        assert_eq!(full.body, Bytes::from(canonical_json(&big(2))));
        // Small bodies, tombstones, no source, deltas off: full body.
        let small = encode_rev(rev(&json!({"a": 1})), Some((&base_id, &base)), enc);
        assert!(small.full.is_none() && small.message.property("deltaSrc").is_none());
        let mut tombstone = rev(&big(2));
        tombstone.deleted = true;
        assert!(encode_rev(tombstone, Some((&base_id, &base)), enc)
            .full
            .is_none());
        assert!(encode_rev(rev(&big(2)), None, enc).full.is_none());
        let off = Encoding::default();
        assert!(encode_rev(rev(&big(2)), Some((&base_id, &base)), off)
            .full
            .is_none());
        // A delta that is not smaller than the body is not sent.
        let other = Bytes::from(canonical_json(&json!({"completely": "different"})));
        assert!(encode_rev(rev(&big(2)), Some((&base_id, &other)), enc)
            .full
            .is_none());
    }

    #[test]
    fn stubs_are_part_of_both_bodies() {
        let blob =
            json!({"@type": "blob", "digest": "sha1-GgXWuohWJOrFHeD9ZswSosQVmDc=", "length": 13});
        let mut old = big(1);
        old["pic"] = blob.clone();
        let mut new = big(2);
        new["pic"] = blob;
        let base = Bytes::from(canonical_json(&old));
        let base_id = RevId::parse("1-aa").unwrap();
        let enc = Encoding {
            stubs: true,
            deltas: true,
        };
        let out = encode_rev(rev(&new), Some((&base_id, &base)), enc);
        let delta: Value = serde_json::from_slice(&out.message.body).unwrap();
        // Only the field and the stub's revpos change.
        assert_eq!(
            delta,
            json!({"n": 2, "_attachments": {"blob_/pic": {"revpos": 2}}})
        );
        let full: Value = serde_json::from_slice(&out.full.unwrap().body).unwrap();
        assert_eq!(full["_attachments"]["blob_/pic"]["stub"], json!(true));
    }

    #[test]
    fn refusals_ask_for_the_full_body() {
        let mut msg = rev(&json!({})).to_message();
        msg.number = 1;
        assert!(wants_full_body(&Message::error_to(&msg, "HTTP", 422, "x")));
        assert!(wants_full_body(&Message::error_to(&msg, "HTTP", 404, "x")));
        assert!(!wants_full_body(&Message::error_to(&msg, "HTTP", 409, "x")));
        assert!(!wants_full_body(&Message::response_to(&msg)));
    }
}
