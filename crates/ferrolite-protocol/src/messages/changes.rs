//! The change feed: `subChanges`, `unsubChanges`, `changes`, `proposeChanges` and their replies
//! (replication.md §4–5).

use std::fmt::Write as _;
use std::ops::BitOr;

use ferrolite_document::RevId;
use serde_json::Value;

use super::props::{self, bad_body, bytes_of, json_string};
use super::{MessageError, Profile, Sequence};
use crate::blip::Message;

/// The `filter` value that selects documents by channel (the only one Sync Gateway accepts).
pub const BYCHANNEL_FILTER: &str = "sync_gateway/bychannel";
/// The `versioning` value of a revision-tree database (what we are).
pub const VERSIONING_REV_TREES: &str = "rev-trees";
/// The `versioning` value of a version-vector database (LiteCore 4).
pub const VERSIONING_VERSION_VECTORS: &str = "version-vectors";

/// Properties of `subChanges` with a meaning of their own; the others are filter parameters
/// when a named filter is used.
const SUB_CHANGES_PROPERTIES: &[&str] = &[
    "Profile",
    "Content-Type",
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
];

/// `subChanges`: asks the peer to start sending `changes` (pull). Reply:
/// [`EmptyReply`](super::EmptyReply) — possibly after the first `changes` have arrived.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct SubChanges {
    /// `since`: the checkpoint's `remote` sequence, as JSON; `None` = from the start.
    pub since: Option<Sequence>,
    /// `continuous`: keep the feed open after catching up.
    pub continuous: bool,
    /// `batch`: rows per `changes` message (LiteCore sends 200; Sync Gateway's default 200,
    /// minimum 10).
    pub batch: Option<u32>,
    /// `versioning`: [`VERSIONING_REV_TREES`] (LiteCore refuses a mismatch; Sync Gateway 3.x
    /// ignores it).
    pub versioning: Option<String>,
    /// `activeOnly`: skip tombstones (and revocation notices).
    pub active_only: bool,
    /// `revocations`: send revoked/removed rows (flags 2 and 4).
    pub revocations: bool,
    /// `sendReplacementRevs`: when the asked revision is gone, send the current one with
    /// `replacedRev` instead of a `norev`.
    pub send_replacement_revs: bool,
    /// `filter`: [`BYCHANNEL_FILTER`] or a named filter.
    pub filter: Option<String>,
    /// `channels`: with the by-channel filter (comma-separated on the wire; empty = absent).
    pub channels: Vec<String>,
    /// The remaining properties, as parameters of a named filter: only decoded when `filter`
    /// is set to something other than [`BYCHANNEL_FILTER`].
    pub filter_params: Vec<(String, String)>,
    /// `future` (Sync Gateway): start from the current last sequence.
    pub future: bool,
    /// `requestPlus` (Sync Gateway): wait for in-flight sequences; `None` = the database's
    /// default.
    pub request_plus: Option<bool>,
    /// Body `{"docIDs":[…]}`: only these documents.
    pub doc_ids: Option<Vec<String>>,
    /// `collection` (collection-aware connections).
    pub collection: Option<u32>,
}

impl SubChanges {
    /// The message to send: properties in LiteCore's order (`since`, `continuous`, `batch`,
    /// `versioning`, `activeOnly`, `revocations`, …), no flags.
    pub fn to_message(&self) -> Message {
        let mut msg = Message::request(Profile::SubChanges.as_str());
        props::set_opt(
            &mut msg,
            "since",
            self.since.as_ref().map(Sequence::to_property),
        );
        props::set_flag(&mut msg, "continuous", self.continuous, "true");
        props::set_opt(&mut msg, "batch", self.batch);
        props::set_opt(&mut msg, "versioning", self.versioning.as_deref());
        props::set_flag(&mut msg, "activeOnly", self.active_only, "true");
        props::set_flag(&mut msg, "revocations", self.revocations, "true");
        props::set_flag(
            &mut msg,
            "sendReplacementRevs",
            self.send_replacement_revs,
            "true",
        );
        props::set_opt(&mut msg, "filter", self.filter.as_deref());
        if !self.channels.is_empty() {
            msg.properties.set("channels", self.channels.join(","));
        }
        for (key, value) in &self.filter_params {
            if !SUB_CHANGES_PROPERTIES.contains(&key.as_str()) {
                msg.properties.set(key.as_str(), value.as_str());
            }
        }
        props::set_flag(&mut msg, "future", self.future, "true");
        props::set_opt(
            &mut msg,
            "requestPlus",
            self.request_plus.map(|b| if b { "true" } else { "false" }),
        );
        props::set_opt(&mut msg, "collection", self.collection);
        if let Some(ids) = &self.doc_ids {
            let ids: Vec<String> = ids.iter().map(|id| json_string(id)).collect();
            msg.body = bytes_of(format!("{{\"docIDs\":[{}]}}", ids.join(",")));
        }
        msg
    }

    /// Decodes a received `subChanges`.
    pub fn from_message(msg: &Message) -> Result<SubChanges, MessageError> {
        props::check_request(msg, Profile::SubChanges)?;
        let filter = props::optional(msg, "filter").map(str::to_owned);
        let filter_params = match filter.as_deref() {
            Some(name) if name != BYCHANNEL_FILTER => msg
                .properties
                .iter()
                .filter(|(k, _)| !SUB_CHANGES_PROPERTIES.contains(k))
                .map(|(k, v)| (k.to_owned(), v.to_owned()))
                .collect(),
            _ => Vec::new(),
        };
        let doc_ids = if msg.body.is_empty() {
            None
        } else {
            let Value::Object(body) = props::json_body(&msg.body)? else {
                return Err(bad_body("expected a JSON object"));
            };
            match body.get("docIDs") {
                None | Some(Value::Null) => None,
                Some(Value::Array(items)) => Some(
                    items
                        .iter()
                        .map(|item| {
                            item.as_str()
                                .map(str::to_owned)
                                .ok_or_else(|| bad_body("'docIDs' must be an array of strings"))
                        })
                        .collect::<Result<_, _>>()?,
                ),
                Some(_) => return Err(bad_body("'docIDs' must be an array of strings")),
            }
        };
        Ok(SubChanges {
            since: props::optional(msg, "since").map(Sequence::from_property),
            continuous: props::flag(msg, "continuous"),
            batch: props::optional_number(msg, "batch")?,
            versioning: props::optional(msg, "versioning").map(str::to_owned),
            active_only: props::flag(msg, "activeOnly"),
            revocations: props::flag(msg, "revocations"),
            send_replacement_revs: props::flag(msg, "sendReplacementRevs"),
            filter,
            channels: props::optional(msg, "channels")
                .map(|c| c.split(',').map(str::to_owned).collect())
                .unwrap_or_default(),
            filter_params,
            future: props::flag(msg, "future"),
            request_plus: props::optional_flag(msg, "requestPlus"),
            doc_ids,
            collection: props::collection(msg)?,
        })
    }
}

/// `unsubChanges` (Sync Gateway): stop the feed opened by `subChanges`. Reply:
/// [`EmptyReply`](super::EmptyReply).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct UnsubChanges {
    /// `collection` (collection-aware connections).
    pub collection: Option<u32>,
}

impl UnsubChanges {
    /// The message to send.
    pub fn to_message(&self) -> Message {
        let mut msg = Message::request(Profile::UnsubChanges.as_str());
        props::set_opt(&mut msg, "collection", self.collection);
        msg
    }

    /// Decodes a received `unsubChanges`.
    pub fn from_message(msg: &Message) -> Result<UnsubChanges, MessageError> {
        props::check_request(msg, Profile::UnsubChanges)?;
        Ok(UnsubChanges {
            collection: props::collection(msg)?,
        })
    }
}

/// The deletion/removal bits of a `changes` row (`CBMobile_3`; Sync Gateway's
/// `changesDeletedFlag`). `CBMobile_2`'s `true` decodes as [`ChangeFlags::DELETED`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct ChangeFlags(u8);

impl ChangeFlags {
    /// No flag: a live revision.
    pub const NONE: ChangeFlags = ChangeFlags(0);
    /// Bit 1: a tombstone.
    pub const DELETED: ChangeFlags = ChangeFlags(1);
    /// Bit 2: revoked — the user lost access to every channel granting the document.
    pub const REVOKED: ChangeFlags = ChangeFlags(2);
    /// Bit 4: removed from every channel the user can see.
    pub const REMOVED: ChangeFlags = ChangeFlags(4);

    /// Flags from their bits (unknown bits are kept).
    pub fn from_bits(bits: u8) -> ChangeFlags {
        ChangeFlags(bits)
    }

    /// The bits.
    pub fn bits(self) -> u8 {
        self.0
    }

    /// Whether every bit of `other` is set.
    pub fn contains(self, other: ChangeFlags) -> bool {
        self.0 & other.0 == other.0
    }

    /// Whether no bit is set.
    pub fn is_empty(self) -> bool {
        self.0 == 0
    }

    /// The row is a tombstone.
    pub fn is_deleted(self) -> bool {
        self.contains(ChangeFlags::DELETED)
    }

    /// The document was revoked.
    pub fn is_revoked(self) -> bool {
        self.contains(ChangeFlags::REVOKED)
    }

    /// The document left the user's channels.
    pub fn is_removed(self) -> bool {
        self.contains(ChangeFlags::REMOVED)
    }

    /// Whether LiteCore treats the row as "access removed" (never requests it, purges the
    /// local document): values 2, 3, 4, 6, 7 — not 5 (a tombstone pushed while leaving the
    /// channel), which is an ordinary tombstone.
    pub fn is_access_removed(self) -> bool {
        self.is_revoked() || (self.is_removed() && !self.is_deleted())
    }
}

impl BitOr for ChangeFlags {
    type Output = ChangeFlags;
    fn bitor(self, rhs: ChangeFlags) -> ChangeFlags {
        ChangeFlags(self.0 | rhs.0)
    }
}

/// One row of a `changes` body: `[sequence, docID, revID, flags?, bodySize?]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChangeRow {
    /// The sender's sequence (opaque; increases in send order).
    pub sequence: Sequence,
    /// The document ID.
    pub doc_id: String,
    /// The revision announced.
    pub rev_id: RevId,
    /// Deletion/removal flags (omitted on the wire when zero and there is no body size).
    pub flags: ChangeFlags,
    /// Approximate body size in bytes (LiteCore sends it; Sync Gateway never does).
    pub body_size: Option<u64>,
}

impl ChangeRow {
    fn write_json(&self, out: &mut String) {
        let _ = write!(
            out,
            "[{},{},{}",
            self.sequence,
            json_string(&self.doc_id),
            json_string(self.rev_id.as_str())
        );
        if !self.flags.is_empty() || self.body_size.is_some() {
            let _ = write!(out, ",{}", self.flags.bits());
        }
        if let Some(size) = self.body_size {
            let _ = write!(out, ",{size}");
        }
        out.push(']');
    }

    fn from_json(index: usize, value: &Value) -> Result<ChangeRow, MessageError> {
        let what = |field: &str| format!("changes row {index}, {field}");
        let Some(items) = value.as_array().filter(|a| a.len() >= 3) else {
            return Err(bad_body(format!(
                "changes row {index}: expected [sequence, docID, revID, …], got {value}"
            )));
        };
        let sequence = Sequence::from_json(items[0].clone())
            .map_err(|e| bad_body(format!("{}: {e}", what("sequence"))))?;
        let doc_id = items[1]
            .as_str()
            .filter(|id| !id.is_empty())
            .ok_or_else(|| bad_body(format!("{}: expected a non-empty string", what("docID"))))?
            .to_owned();
        let rev_id = props::json_rev_id(&items[2], &what("revID"))?;
        let flags = match items.get(3) {
            None | Some(Value::Null) | Some(Value::Bool(false)) => ChangeFlags::NONE,
            Some(Value::Bool(true)) => ChangeFlags::DELETED,
            Some(n) => ChangeFlags(props::json_uint(n, &what("flags"))?),
        };
        let body_size = match items.get(4) {
            None | Some(Value::Null) => None,
            Some(n) => Some(props::json_uint(n, &what("body size"))?),
        };
        Ok(ChangeRow {
            sequence,
            doc_id,
            rev_id,
            flags,
            body_size,
        })
    }
}

/// `changes`: announces revisions (the pull feed; toward peers allowing conflicts, also
/// push). Reply: [`ChangesReply`].
///
/// An empty `rows` is the caught-up signal: sent as body `[]` (LiteCore) flagged
/// urgent + NoReply; Sync Gateway's `null` body decodes the same.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Changes {
    /// The rows (at most the `batch` asked in `subChanges`).
    pub rows: Vec<ChangeRow>,
    /// `collection` (collection-aware connections).
    pub collection: Option<u32>,
}

impl Changes {
    /// Whether this is the caught-up message (no row).
    pub fn is_caught_up(&self) -> bool {
        self.rows.is_empty()
    }

    /// The message to send. With rows: urgent + compressed; without (caught up): urgent +
    /// NoReply, uncompressed — the flags LiteCore uses.
    pub fn to_message(&self) -> Message {
        let mut msg = Message::request(Profile::Changes.as_str());
        props::set_opt(&mut msg, "collection", self.collection);
        msg.body = json_array(&self.rows, |row, out| row.write_json(out));
        msg.urgent = true;
        if self.rows.is_empty() {
            msg.no_reply = true;
        } else {
            msg.compressed = true;
        }
        msg
    }

    /// Decodes a received `changes`: body an array of rows, or `[]`/`null`/empty (caught up).
    pub fn from_message(msg: &Message) -> Result<Changes, MessageError> {
        props::check_request(msg, Profile::Changes)?;
        let collection = props::collection(msg)?;
        let rows = match json_array_or_null(&msg.body)? {
            None => Vec::new(),
            Some(items) => items
                .iter()
                .enumerate()
                .map(|(i, row)| ChangeRow::from_json(i, row))
                .collect::<Result<_, _>>()?,
        };
        Ok(Changes { rows, collection })
    }
}

/// Parses a body that must be a JSON array, `null` or empty (`None` for the last two).
/// A JSON array of `items`, each written by `write`.
fn json_array<T>(items: &[T], write: impl Fn(&T, &mut String)) -> bytes::Bytes {
    let mut body = String::from("[");
    for (i, item) in items.iter().enumerate() {
        if i > 0 {
            body.push(',');
        }
        write(item, &mut body);
    }
    body.push(']');
    bytes_of(body)
}

/// The items of a JSON array body (`null` or empty = none), each read by `read` with its index.
fn json_entries<T>(
    body: &[u8],
    read: impl Fn(usize, &Value) -> Result<T, MessageError>,
) -> Result<Vec<T>, MessageError> {
    match json_array_or_null(body)? {
        None => Ok(Vec::new()),
        Some(items) => items.iter().enumerate().map(|(i, e)| read(i, e)).collect(),
    }
}

fn json_array_or_null(body: &[u8]) -> Result<Option<Vec<Value>>, MessageError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(None);
    }
    match props::json_body(body)? {
        Value::Null => Ok(None),
        Value::Array(items) => Ok(Some(items)),
        other => Err(bad_body(format!("expected a JSON array, got {other}"))),
    }
}

/// One entry of the reply to `changes`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ChangesReplyEntry {
    /// `0` or `null`: not wanted.
    NotWanted,
    /// An array: send it; the receiver has these possible ancestors (may be empty). The
    /// first is the delta source Sync Gateway uses.
    Wanted(Vec<RevId>),
    /// Another integer: refused with that status (a LiteCore passive peer in no-conflicts
    /// mode answers `409`).
    Status(u16),
}

impl ChangesReplyEntry {
    fn write_json(&self, out: &mut String) {
        match self {
            ChangesReplyEntry::NotWanted => out.push('0'),
            ChangesReplyEntry::Status(status) => {
                let _ = write!(out, "{status}");
            }
            ChangesReplyEntry::Wanted(known) => {
                out.push('[');
                for (i, rev) in known.iter().enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    out.push_str(&json_string(rev.as_str()));
                }
                out.push(']');
            }
        }
    }

    fn from_json(index: usize, value: &Value) -> Result<ChangesReplyEntry, MessageError> {
        let what = format!("changes reply entry {index}");
        match value {
            Value::Null => Ok(ChangesReplyEntry::NotWanted),
            Value::Array(items) => Ok(ChangesReplyEntry::Wanted(
                items
                    .iter()
                    .map(|item| props::json_rev_id(item, &what))
                    .collect::<Result<_, _>>()?,
            )),
            other => match props::json_uint::<u16>(other, &what)? {
                0 => Ok(ChangesReplyEntry::NotWanted),
                status => Ok(ChangesReplyEntry::Status(status)),
            },
        }
    }
}

/// Writes the reply properties shared by the replies to `changes` and `proposeChanges`.
fn set_reply_properties(msg: &mut Message, max_history: Option<u32>, blobs: bool, deltas: bool) {
    props::set_opt(msg, "maxHistory", max_history);
    props::set_flag(msg, "blobs", blobs, "true");
    props::set_flag(msg, "deltas", deltas, "true");
}

/// The reply to `changes`: one entry per row, which revisions to send.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ChangesReply {
    /// Entries parallel to the request's rows; missing trailing entries mean
    /// [`ChangesReplyEntry::NotWanted`] (see [`ChangesReply::entry`]). Encoded as given.
    pub entries: Vec<ChangesReplyEntry>,
    /// `maxHistory`: the longest `history` to send (LiteCore: 50).
    pub max_history: Option<u32>,
    /// `blobs`: the receiver understands blobs natively.
    pub blobs: bool,
    /// `deltas`: the receiver accepts deltas (LiteCore: in its first reply only).
    pub deltas: bool,
    /// `sendReplacementRevs`: send the current revision when the one asked is gone.
    pub send_replacement_revs: bool,
}

impl ChangesReply {
    /// The entry for row `index` (not wanted past the end).
    pub fn entry(&self, index: usize) -> &ChangesReplyEntry {
        self.entries
            .get(index)
            .unwrap_or(&ChangesReplyEntry::NotWanted)
    }

    /// If row `index` is wanted, the ancestors the receiver has.
    pub fn wanted(&self, index: usize) -> Option<&[RevId]> {
        match self.entry(index) {
            ChangesReplyEntry::Wanted(known) => Some(known),
            _ => None,
        }
    }

    /// The response answering `request`: compressed, properties `maxHistory`, `blobs`,
    /// `deltas`, `sendReplacementRevs` (booleans as `true`).
    pub fn to_response(&self, request: &Message) -> Message {
        let mut msg = Message::response_to(request);
        set_reply_properties(&mut msg, self.max_history, self.blobs, self.deltas);
        props::set_flag(
            &mut msg,
            "sendReplacementRevs",
            self.send_replacement_revs,
            "true",
        );
        msg.body = json_array(&self.entries, |entry, out| entry.write_json(out));
        msg.compressed = true;
        msg
    }

    /// Decodes the reply to a `changes` we sent (an empty or `null` body = want none).
    pub fn from_response(msg: &Message) -> Result<ChangesReply, MessageError> {
        props::check_response(msg)?;
        let entries = json_entries(&msg.body, ChangesReplyEntry::from_json)?;
        Ok(ChangesReply {
            entries,
            max_history: props::optional_number(msg, "maxHistory")?,
            blobs: props::flag(msg, "blobs"),
            deltas: props::flag(msg, "deltas"),
            send_replacement_revs: props::flag(msg, "sendReplacementRevs"),
        })
    }
}

/// One row of a `proposeChanges` body: `[docID, revID, serverRev, bodySize]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProposedChange {
    /// The document ID.
    pub doc_id: String,
    /// The revision proposed.
    pub rev_id: RevId,
    /// The revision the proposer believes is current on the receiver (its "remote
    /// ancestor"); `None` is written `""` (new document or never synced).
    pub server_rev: Option<RevId>,
    /// Approximate body size in bytes.
    pub body_size: Option<u64>,
}

impl ProposedChange {
    fn write_json(&self, out: &mut String) {
        let _ = write!(
            out,
            "[{},{}",
            json_string(&self.doc_id),
            json_string(self.rev_id.as_str())
        );
        if self.server_rev.is_some() || self.body_size.is_some() {
            let server = self.server_rev.as_ref().map_or("", RevId::as_str);
            let _ = write!(out, ",{}", json_string(server));
        }
        if let Some(size) = self.body_size {
            let _ = write!(out, ",{size}");
        }
        out.push(']');
    }

    fn from_json(index: usize, value: &Value) -> Result<ProposedChange, MessageError> {
        let what = |field: &str| format!("proposeChanges row {index}, {field}");
        let Some(items) = value.as_array().filter(|a| a.len() >= 2) else {
            return Err(bad_body(format!(
                "proposeChanges row {index}: expected [docID, revID, …], got {value}"
            )));
        };
        let doc_id = items[0]
            .as_str()
            .filter(|id| !id.is_empty())
            .ok_or_else(|| bad_body(format!("{}: expected a non-empty string", what("docID"))))?
            .to_owned();
        let rev_id = props::json_rev_id(&items[1], &what("revID"))?;
        let server_rev = match items.get(2) {
            None | Some(Value::Null) => None,
            Some(Value::String(s)) if s.is_empty() => None,
            Some(v) => Some(props::json_rev_id(v, &what("server revID"))?),
        };
        let body_size = match items.get(3) {
            None | Some(Value::Null) => None,
            Some(n) => Some(props::json_uint(n, &what("body size"))?),
        };
        Ok(ProposedChange {
            doc_id,
            rev_id,
            server_rev,
            body_size,
        })
    }
}

/// `proposeChanges`: announces revisions in no-conflict mode (LiteCore's pusher). Reply:
/// [`ProposeChangesReply`].
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ProposeChanges {
    /// The rows.
    pub rows: Vec<ProposedChange>,
    /// `conflictIncludesRev`: a 409 entry should carry the receiver's current revision
    /// (LiteCore always asks).
    pub conflict_includes_rev: bool,
    /// `collection` (collection-aware connections).
    pub collection: Option<u32>,
}

impl ProposeChanges {
    /// The message to send: urgent + compressed, `conflictIncludesRev: true`, like LiteCore.
    pub fn to_message(&self) -> Message {
        let mut msg = Message::request(Profile::ProposeChanges.as_str());
        props::set_flag(
            &mut msg,
            "conflictIncludesRev",
            self.conflict_includes_rev,
            "true",
        );
        props::set_opt(&mut msg, "collection", self.collection);
        msg.body = json_array(&self.rows, |row, out| row.write_json(out));
        msg.urgent = true;
        msg.compressed = true;
        msg
    }

    /// Decodes a received `proposeChanges`.
    pub fn from_message(msg: &Message) -> Result<ProposeChanges, MessageError> {
        props::check_request(msg, Profile::ProposeChanges)?;
        let collection = props::collection(msg)?;
        let rows = match json_array_or_null(&msg.body)? {
            None => Vec::new(),
            Some(items) => items
                .iter()
                .enumerate()
                .map(|(i, row)| ProposedChange::from_json(i, row))
                .collect::<Result<_, _>>()?,
        };
        Ok(ProposeChanges {
            rows,
            conflict_includes_rev: props::flag(msg, "conflictIncludesRev"),
            collection,
        })
    }
}

/// One entry of the reply to `proposeChanges`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProposeStatus {
    /// `0`: accepted — send the `rev`.
    Accepted,
    /// `304`: the receiver's current revision already is this one.
    AlreadyHave,
    /// `409`: conflict — the proposer's `server_rev` is not the receiver's current revision.
    /// With `conflictIncludesRev`, written `{"status":409,"rev":"<current>"}`.
    Conflict {
        /// The receiver's current revision, when it said.
        current: Option<RevId>,
    },
    /// Any other status (Sync Gateway: `500` when it could not read the document).
    Other(u16),
}

impl ProposeStatus {
    fn write_json(&self, out: &mut String) {
        match self {
            ProposeStatus::Accepted => out.push('0'),
            ProposeStatus::AlreadyHave => out.push_str("304"),
            ProposeStatus::Conflict { current: None } => out.push_str("409"),
            ProposeStatus::Conflict { current: Some(rev) } => {
                let _ = write!(
                    out,
                    "{{\"status\":409,\"rev\":{}}}",
                    json_string(rev.as_str())
                );
            }
            ProposeStatus::Other(status) => {
                let _ = write!(out, "{status}");
            }
        }
    }

    fn from_status(status: u16, current: Option<RevId>) -> ProposeStatus {
        match status {
            0 => ProposeStatus::Accepted,
            304 => ProposeStatus::AlreadyHave,
            409 => ProposeStatus::Conflict { current },
            other => ProposeStatus::Other(other),
        }
    }

    fn from_json(index: usize, value: &Value) -> Result<ProposeStatus, MessageError> {
        let what = format!("proposeChanges reply entry {index}");
        match value {
            Value::Null => Ok(ProposeStatus::Accepted),
            Value::Object(map) => {
                let status = props::json_uint::<u16>(
                    map.get("status").unwrap_or(&Value::Null),
                    &format!("{what}, status"),
                )?;
                let current = match map.get("rev") {
                    None | Some(Value::Null) => None,
                    Some(Value::String(s)) if s.is_empty() => None,
                    Some(rev) => Some(props::json_rev_id(rev, &format!("{what}, rev"))?),
                };
                Ok(ProposeStatus::from_status(status, current))
            }
            other => Ok(ProposeStatus::from_status(
                props::json_uint::<u16>(other, &what)?,
                None,
            )),
        }
    }
}

/// The reply to `proposeChanges`: one status per row.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ProposeChangesReply {
    /// Statuses parallel to the request's rows; missing trailing entries mean
    /// [`ProposeStatus::Accepted`] (`[]` = send everything; see
    /// [`ProposeChangesReply::status`]). Encoded as given.
    pub entries: Vec<ProposeStatus>,
    /// `maxHistory` (a LiteCore passive peer sends 50).
    pub max_history: Option<u32>,
    /// `blobs` (a LiteCore passive peer sends it).
    pub blobs: bool,
    /// `deltas`: the receiver accepts deltas in the `rev`s that follow.
    pub deltas: bool,
}

impl ProposeChangesReply {
    /// The status of row `index` (accepted past the end).
    pub fn status(&self, index: usize) -> &ProposeStatus {
        self.entries.get(index).unwrap_or(&ProposeStatus::Accepted)
    }

    /// The response answering `request`: compressed, properties `maxHistory`, `blobs`,
    /// `deltas` (booleans as `true`).
    pub fn to_response(&self, request: &Message) -> Message {
        let mut msg = Message::response_to(request);
        set_reply_properties(&mut msg, self.max_history, self.blobs, self.deltas);
        msg.body = json_array(&self.entries, |entry, out| entry.write_json(out));
        msg.compressed = true;
        msg
    }

    /// Decodes the reply to a `proposeChanges` we sent.
    pub fn from_response(msg: &Message) -> Result<ProposeChangesReply, MessageError> {
        props::check_response(msg)?;
        let entries = json_entries(&msg.body, ProposeStatus::from_json)?;
        Ok(ProposeChangesReply {
            entries,
            max_history: props::optional_number(msg, "maxHistory")?,
            blobs: props::flag(msg, "blobs"),
            deltas: props::flag(msg, "deltas"),
        })
    }
}
