//! `rev`, its reply, and `norev` (replication.md §6–7).

use bytes::Bytes;
use ferrolite_document::RevId;

use super::props;
use super::{MessageError, Profile, Sequence};
use crate::blip::Message;

/// `rev`: one revision, full body or delta. Reply: [`RevReply`] once stored, or an error
/// (`HTTP 409` conflict, `403` rejected, `422` delta not applicable, …) — unless sent NoReply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rev {
    /// `id`: the document ID. Required.
    pub id: String,
    /// `rev`: this revision's ID. Required.
    pub rev: RevId,
    /// `sequence`: the sender's sequence of this revision (LiteCore: local sequence in
    /// decimal; Sync Gateway: the JSON of the `changes` row's sequence). A LiteCore puller
    /// refuses a `rev` without it; decoding leaves that check to the receiver.
    pub sequence: Option<Sequence>,
    /// `history`: ancestors, newest first, excluding `rev`; comma-separated on the wire,
    /// omitted when empty. Generations should decrease by exactly one (see
    /// [`Rev::has_consecutive_history`]).
    pub history: Vec<RevId>,
    /// `deleted`: a tombstone (sent as `1`).
    pub deleted: bool,
    /// `noconflicts`: insert only if this extends the receiver's current revision, else 409
    /// (sent as `1`; LiteCore sets it on revisions accepted by `proposeChanges`).
    pub no_conflicts: bool,
    /// `deltaSrc`: the body is a delta to apply to this revision's body.
    pub delta_src: Option<RevId>,
    /// `replacedRev`: the revision originally asked for, when this one replaces it
    /// (`sendReplacementRevs`); `sequence` stays the original row's.
    pub replaced_rev: Option<RevId>,
    /// `deleted_branch`: history of a local tombstone on the server's branch (rare; Sync
    /// Gateway 3.x ignores it). Kept verbatim.
    pub deleted_branch: Option<String>,
    /// `collection` (collection-aware connections).
    pub collection: Option<u32>,
    /// The body: the document's JSON (`{}` for a tombstone, `{"_removed":true}` for a
    /// removal), or a JSON delta when `delta_src` is set. Kept as received, not parsed.
    pub body: Bytes,
}

impl Rev {
    /// The message to send: properties in LiteCore's order (`id`, `rev`, `sequence`,
    /// `noconflicts`, `deleted`, `history`, then `deltaSrc`, `replacedRev`, `deleted_branch`,
    /// `collection`), compressed. It expects a reply; set `no_reply` on the result to send
    /// it NoReply (Sync Gateway does when no `getAttachment` can follow and it is no delta).
    pub fn to_message(&self) -> Message {
        let mut msg = Message::request(Profile::Rev.as_str());
        msg.properties.set("id", self.id.as_str());
        msg.properties.set("rev", self.rev.as_str());
        props::set_opt(
            &mut msg,
            "sequence",
            self.sequence.as_ref().map(Sequence::to_property),
        );
        props::set_flag(&mut msg, "noconflicts", self.no_conflicts, "1");
        props::set_flag(&mut msg, "deleted", self.deleted, "1");
        if !self.history.is_empty() {
            let history: Vec<&str> = self.history.iter().map(RevId::as_str).collect();
            msg.properties.set("history", history.join(","));
        }
        props::set_opt(&mut msg, "deltaSrc", self.delta_src.as_ref());
        props::set_opt(&mut msg, "replacedRev", self.replaced_rev.as_ref());
        props::set_opt(&mut msg, "deleted_branch", self.deleted_branch.as_deref());
        props::set_opt(&mut msg, "collection", self.collection);
        msg.body = self.body.clone();
        msg.compressed = true;
        msg
    }

    /// Decodes a received `rev` (the body is not looked at).
    pub fn from_message(msg: &Message) -> Result<Rev, MessageError> {
        props::check_request(msg, Profile::Rev)?;
        let history = match props::optional(msg, "history") {
            None => Vec::new(),
            Some(list) => list
                .split(',')
                .map(str::trim)
                .filter(|r| !r.is_empty())
                .map(|r| props::parse_rev_id("history", r))
                .collect::<Result<_, _>>()?,
        };
        Ok(Rev {
            id: props::required(msg, "id")?.to_owned(),
            rev: props::required_rev_id(msg, "rev")?,
            sequence: props::optional(msg, "sequence").map(Sequence::from_property),
            history,
            deleted: props::flag(msg, "deleted"),
            no_conflicts: props::flag(msg, "noconflicts"),
            delta_src: props::optional_rev_id(msg, "deltaSrc")?,
            replaced_rev: props::optional_rev_id(msg, "replacedRev")?,
            deleted_branch: props::optional(msg, "deleted_branch").map(str::to_owned),
            collection: props::collection(msg)?,
            body: msg.body.clone(),
        })
    }

    /// Whether `[rev] + history` has generations decreasing by exactly one, as the receiver
    /// expects (LiteCore tolerates a gap only past its pruning depth).
    pub fn has_consecutive_history(&self) -> bool {
        std::iter::once(&self.rev)
            .chain(&self.history)
            .zip(&self.history)
            .all(|(newer, older)| newer.generation().checked_sub(1) == Some(older.generation()))
    }
}

/// The reply to `rev`: empty once stored, `noop=true` when the receiver already had it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct RevReply {
    /// `noop`: the receiver already had this revision (LiteCore).
    pub noop: bool,
}

impl RevReply {
    /// The response answering `request`.
    pub fn to_response(&self, request: &Message) -> Message {
        let mut msg = Message::response_to(request);
        props::set_flag(&mut msg, "noop", self.noop, "true");
        msg
    }

    /// Decodes the reply to a `rev` we sent; refusals (`HTTP 409`, `403`, `422`, …) arrive as
    /// [`MessageError::ErrorReply`].
    pub fn from_response(msg: &Message) -> Result<RevReply, MessageError> {
        props::check_response(msg)?;
        Ok(RevReply {
            noop: props::flag(msg, "noop"),
        })
    }
}

/// `norev`: the revision asked for cannot be sent. NoReply, no body. The receiver counts the
/// row's sequence as done.
///
/// Also decodes a `rev` carrying an `error` property, which LiteCore treats the same way.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NoRev {
    /// `id`: the document ID. Required.
    pub id: String,
    /// `rev`: the revision asked for. Required.
    pub rev: RevId,
    /// `sequence` (or `seq`, Sync Gateway toward a `CBMobile_2` peer): the row's sequence.
    /// Sync Gateway writes a compound sequence without JSON quotes here; both forms decode
    /// to the same [`Sequence`]. Encoded as JSON.
    pub sequence: Option<Sequence>,
    /// `error`: a status (`404` not found, `410` obsolete, `500`, …).
    pub error: Option<i32>,
    /// `reason`: text (Sync Gateway: `missing`, …).
    pub reason: Option<String>,
    /// `collection` (collection-aware connections).
    pub collection: Option<u32>,
}

impl NoRev {
    /// The message to send: NoReply, no body.
    pub fn to_message(&self) -> Message {
        let mut msg = Message::request(Profile::NoRev.as_str());
        msg.properties.set("id", self.id.as_str());
        msg.properties.set("rev", self.rev.as_str());
        props::set_opt(
            &mut msg,
            "sequence",
            self.sequence.as_ref().map(Sequence::to_property),
        );
        props::set_opt(&mut msg, "error", self.error);
        props::set_opt(&mut msg, "reason", self.reason.as_deref());
        props::set_opt(&mut msg, "collection", self.collection);
        msg.no_reply = true;
        msg
    }

    /// Decodes a received `norev` (or a `rev` with an `error` property).
    pub fn from_message(msg: &Message) -> Result<NoRev, MessageError> {
        let is_rev_error =
            msg.profile() == Some(Profile::Rev.as_str()) && props::optional(msg, "error").is_some();
        let profile = if is_rev_error {
            Profile::Rev
        } else {
            Profile::NoRev
        };
        props::check_request(msg, profile)?;
        let error = match props::optional(msg, "error") {
            None => None,
            Some(text) => {
                Some(
                    text.trim()
                        .parse::<i32>()
                        .map_err(|_| MessageError::BadProperty {
                            name: "error",
                            value: text.to_owned(),
                            reason: "not an integer status".to_owned(),
                        })?,
                )
            }
        };
        Ok(NoRev {
            id: props::required(msg, "id")?.to_owned(),
            rev: props::required_rev_id(msg, "rev")?,
            sequence: props::optional(msg, "sequence")
                .or_else(|| props::optional(msg, "seq"))
                .map(Sequence::from_property),
            error,
            reason: props::optional(msg, "reason").map(str::to_owned),
            collection: props::collection(msg)?,
        })
    }
}
