//! Blobs in replication (attachments.md): translating between blob dictionaries and legacy
//! `_attachments` stubs in both directions, fetching a received revision's missing blobs
//! with `getAttachment` (or checking them with `proveAttachment`), and answering those two
//! requests from the local blob store.
//!
//! Blob bytes never sit whole in memory: a `getAttachment` reply is streamed frame by frame
//! from the BLIP codec into `Store::put_blob` (which verifies the digest before the blob is
//! kept), and a blob we serve is read from the store and appended to the reply in 64 KiB
//! chunks as the codec sends them (see the driver's streamed messages).

use std::collections::{BTreeMap, HashSet};
use std::io::{self, Read};

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use bytes::Bytes;
use ferrolite_document::{canonical_json, is_blob_dict, BlobDigest, BlobRef};
use ferrolite_protocol::blip::{Message, MessageType};
use ferrolite_protocol::messages::{
    GetAttachment, MessageError, ProveAttachment, ProveAttachmentReply,
};
use ferrolite_storage::{StorageError, Store};
use serde_json::{Map, Value};
use sha1::{Digest, Sha1};
use tokio::sync::mpsc;
use tracing::{debug, warn};

use crate::db::Db;
use crate::driver::{Blip, ReplyPart};
use crate::ReplicatorError;

/// Chunks a served blob is read and sent in.
const SERVE_CHUNK: usize = 64 * 1024;
/// Length of the `proveAttachment` nonce we send (Sync Gateway's).
const NONCE_LEN: usize = 20;
/// LiteCore's error domain, used in replies LiteCore would send.
const LITECORE: &str = "LiteCore";
/// LiteCore `kC4ErrorNotFound`.
const LITECORE_NOT_FOUND: i32 = 7;
/// LiteCore `kC4ErrorInvalidParameter`.
const LITECORE_INVALID_PARAMETER: i32 = 9;

/// Whether to ask for a compressed `getAttachment` reply (LiteCore's rule): only when the
/// content type is known, is not `image/*`, `audio/*` or `video/*`, and neither it nor the
/// encoding names an already-compressed or encrypted format.
pub(crate) fn should_compress(content_type: Option<&str>, encoding: Option<&str>) -> bool {
    const PACKED: [&str; 8] = [
        "zip", "zlib", "pkcs", "mpeg", "mp4", "crypt", ".rar", "-rar",
    ];
    let Some(content_type) = content_type else {
        return false;
    };
    let content_type = content_type.to_ascii_lowercase();
    if ["image/", "audio/", "video/"]
        .iter()
        .any(|prefix| content_type.starts_with(prefix))
    {
        return false;
    }
    let encoding = encoding.unwrap_or_default().to_ascii_lowercase();
    !PACKED
        .iter()
        .any(|word| content_type.contains(word) || encoding.contains(word))
}

// ----- incoming bodies -----

/// A blob (or legacy attachment) a received revision references, whose bytes must be in the
/// blob store before the revision is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct IncomingBlob {
    pub(crate) digest: BlobDigest,
    /// The announced length, checked while the bytes arrive (absent for encoded legacy
    /// attachments, whose stored length differs).
    pub(crate) length: Option<u64>,
    pub(crate) content_type: Option<String>,
    pub(crate) encoding: Option<String>,
    /// The bytes, when they came inline (base64 `data`).
    pub(crate) inline: Option<Bytes>,
}

impl IncomingBlob {
    fn compress(&self) -> bool {
        should_compress(self.content_type.as_deref(), self.encoding.as_deref())
    }
}

/// Decodes an inline base64 `data` value.
fn decode_data(value: &Value, what: &str) -> Result<Bytes, String> {
    let text = value
        .as_str()
        .ok_or_else(|| format!("the inline data of {what} is not a base64 string"))?;
    STANDARD
        .decode(text)
        .map(Bytes::from)
        .map_err(|e| format!("the inline data of {what} is not base64: {e}"))
}

/// Turns an object holding inline `data` into its stored form: `data` removed, `digest` and
/// `length` set (a given digest must match the bytes). Returns the bytes.
fn take_inline(dict: &mut Map<String, Value>, what: &str) -> Result<Option<Bytes>, String> {
    let Some(data) = dict.remove("data") else {
        return Ok(None);
    };
    let bytes = decode_data(&data, what)?;
    let digest = BlobDigest::of(&bytes);
    if let Some(given) = dict.get("digest").and_then(Value::as_str) {
        if BlobDigest::parse(given).ok() != Some(digest) {
            return Err(format!(
                "the inline data of {what} does not match its digest {given}"
            ));
        }
    }
    dict.insert("digest".into(), Value::from(digest.to_string()));
    dict.insert("length".into(), Value::from(bytes.len() as u64));
    Ok(Some(bytes))
}

/// Whether an `_attachments` name is CBL 2.0's `blob_<n>` form.
fn is_numbered_blob_name(name: &str) -> bool {
    name.strip_prefix("blob_")
        .and_then(|rest| rest.chars().next())
        .is_some_and(|c| c.is_ascii_digit())
}

/// Reconciles a received body with the `_attachments` it came with, as LiteCore does
/// (attachments.md §3.2), and lists the blobs whose bytes must be present.
///
/// `body` is the body without its top-level `_` keys; `attachments` is the `_attachments`
/// value that was removed from it. `blob_/<pointer>` entries pointing at a blob are dropped
/// (the blob takes `digest`, `length` and `content_type` from an entry that disagrees),
/// `blob_<n>` entries are dropped, other entries are real legacy attachments and are put
/// back under `_attachments` (as stubs). When a non-empty `_attachments` came, every blob's
/// digest must be listed in it ("There is no content for the blob…", as LiteCore). Inline `data`
/// (base64, in a blob dictionary or an attachment) is decoded and replaced by `digest` and
/// `length`. Returns each referenced digest once.
pub(crate) fn reconcile(
    body: &mut Map<String, Value>,
    attachments: Option<Value>,
) -> Result<Vec<IncomingBlob>, String> {
    let mut blobs: BTreeMap<BlobDigest, IncomingBlob> = BTreeMap::new();
    let mut listed: Option<HashSet<BlobDigest>> = None;
    let mut kept = Map::new();
    let mut root = Value::Object(std::mem::take(body));
    if let Some(attachments) = attachments {
        let Value::Object(entries) = attachments else {
            *body = take_object(root);
            return Err("_attachments is not an object".to_owned());
        };
        // Only a non-empty `_attachments` vouches for the body's blobs.
        let mut names = HashSet::new();
        let listed = if entries.is_empty() {
            &mut names
        } else {
            listed.get_or_insert_with(HashSet::new)
        };
        for (name, meta) in entries {
            let Value::Object(mut meta) = meta else {
                *body = take_object(root);
                return Err(format!("attachment {name:?} is not an object"));
            };
            let inline = match take_inline(&mut meta, &format!("attachment {name:?}")) {
                Ok(inline) => inline,
                Err(why) => {
                    *body = take_object(root);
                    return Err(why);
                }
            };
            let digest = meta
                .get("digest")
                .and_then(Value::as_str)
                .and_then(|d| BlobDigest::parse(d).ok());
            if let Some(digest) = digest {
                listed.insert(digest);
            }
            let target = name
                .strip_prefix("blob_")
                .filter(|p| p.starts_with('/'))
                .and_then(|pointer| root.pointer_mut(pointer))
                .filter(|v| is_blob_dict(v))
                .and_then(Value::as_object_mut);
            if let Some(blob) = target {
                // An entry for a blob of the body: the blob stays, the entry goes.
                if let Some(digest) = digest {
                    if blob.get("digest").and_then(Value::as_str) != Some(&digest.to_string()) {
                        for key in ["digest", "length", "content_type"] {
                            match meta.get(key) {
                                Some(value) => blob.insert(key.to_owned(), value.clone()),
                                None => blob.remove(key),
                            };
                        }
                    }
                    if let Some(bytes) = inline {
                        add_blob(&mut blobs, digest, &meta, Some(bytes));
                    }
                }
                continue;
            }
            if is_numbered_blob_name(&name) {
                if let (Some(digest), Some(bytes)) = (digest, inline) {
                    add_blob(&mut blobs, digest, &meta, Some(bytes));
                }
                continue;
            }
            // A real legacy attachment: kept, as a stub; its bytes are needed too.
            let Some(digest) = digest else {
                *body = take_object(root);
                return Err(format!("attachment {name:?} has no valid digest"));
            };
            meta.remove("follows");
            meta.insert("stub".into(), Value::Bool(true));
            add_blob(&mut blobs, digest, &meta, inline);
            kept.insert(name, Value::Object(meta));
        }
    }
    // Blobs of the body (inline data first, then the digest check).
    let mut failure = None;
    visit_blob_dicts(&mut root, &mut String::new(), true, &mut |pointer, dict| {
        if failure.is_some() {
            return;
        }
        let inline = match take_inline(dict, &format!("the blob at {pointer:?}")) {
            Ok(inline) => inline,
            Err(why) => {
                failure = Some(why);
                return;
            }
        };
        match BlobRef::from_dict(dict) {
            Ok(blob) => {
                if inline.is_none() {
                    if let Some(listed) = &listed {
                        if !listed.contains(&blob.digest) && !blobs.contains_key(&blob.digest) {
                            failure = Some(format!(
                                "There is no content for the blob with digest {}",
                                blob.digest
                            ));
                            return;
                        }
                    }
                }
                add_blob(&mut blobs, blob.digest, dict, inline);
            }
            Err(err) => failure = Some(format!("the blob at {pointer:?} is invalid: {err}")),
        }
    });
    *body = take_object(root);
    if let Some(why) = failure {
        return Err(why);
    }
    if !kept.is_empty() {
        body.insert("_attachments".into(), Value::Object(kept));
    }
    Ok(blobs.into_values().collect())
}

fn take_object(value: Value) -> Map<String, Value> {
    match value {
        Value::Object(map) => map,
        _ => Map::new(),
    }
}

/// Records a needed blob (once per digest; inline bytes win).
fn add_blob(
    blobs: &mut BTreeMap<BlobDigest, IncomingBlob>,
    digest: BlobDigest,
    meta: &Map<String, Value>,
    inline: Option<Bytes>,
) {
    let encoding = meta
        .get("encoding")
        .and_then(Value::as_str)
        .map(str::to_owned);
    let entry = blobs.entry(digest).or_insert_with(|| IncomingBlob {
        digest,
        length: if encoding.is_some() {
            None
        } else {
            meta.get("length").and_then(Value::as_u64)
        },
        content_type: meta
            .get("content_type")
            .and_then(Value::as_str)
            .map(str::to_owned),
        encoding,
        inline: None,
    });
    if entry.inline.is_none() {
        entry.inline = inline;
    }
}

/// Calls `visit` with the JSON pointer and the object of every blob dictionary in `value`
/// (not under a top-level `_attachments`).
fn visit_blob_dicts(
    value: &mut Value,
    pointer: &mut String,
    top: bool,
    visit: &mut dyn FnMut(&str, &mut Map<String, Value>),
) {
    if is_blob_dict(value) {
        if let Value::Object(dict) = value {
            visit(pointer, dict);
        }
        return;
    }
    match value {
        Value::Object(map) => {
            for (key, child) in map.iter_mut() {
                if top && key == "_attachments" {
                    continue;
                }
                let len = pointer.len();
                pointer.push('/');
                pointer.push_str(&key.replace('~', "~0").replace('/', "~1"));
                visit_blob_dicts(child, pointer, false, visit);
                pointer.truncate(len);
            }
        }
        Value::Array(items) => {
            for (i, child) in items.iter_mut().enumerate() {
                let len = pointer.len();
                pointer.push('/');
                pointer.push_str(&i.to_string());
                visit_blob_dicts(child, pointer, false, visit);
                pointer.truncate(len);
            }
        }
        _ => {}
    }
}

// ----- outgoing bodies -----

/// The body to send to a peer that did not say `blobs=true` (attachments.md §3.1): every
/// blob of the body also listed under `_attachments` as `blob_<JSON pointer>`, a stub with
/// the blob dictionary's keys except `@type` and `stub`, plus `"stub": true` and
/// `"revpos": generation`. Existing entries not named `blob_…` are kept. `None` when the
/// body has no blob and no attachment (it is sent as it is).
pub(crate) fn with_attachment_stubs(body: &[u8], generation: u32) -> Option<Bytes> {
    let value: Value = serde_json::from_slice(body).ok()?;
    let mut value = value;
    let mut pointers = Vec::new();
    visit_blob_dicts(&mut value, &mut String::new(), true, &mut |pointer, _| {
        pointers.push(pointer.to_owned());
    });
    let Value::Object(mut map) = value else {
        return None;
    };
    let existing = map.remove("_attachments");
    if pointers.is_empty() && existing.is_none() {
        return None;
    }
    let mut attachments = Map::new();
    if let Some(Value::Object(existing)) = existing {
        for (name, meta) in existing {
            if !name.starts_with("blob_") {
                attachments.insert(name, meta);
            }
        }
    }
    let root = Value::Object(map);
    for pointer in pointers {
        let Some(Value::Object(dict)) = root.pointer(&pointer) else {
            continue;
        };
        let mut stub: Map<String, Value> = dict
            .iter()
            .filter(|(key, _)| key.as_str() != "@type" && key.as_str() != "stub")
            .map(|(key, value)| (key.clone(), value.clone()))
            .collect();
        stub.insert("stub".into(), Value::Bool(true));
        stub.insert("revpos".into(), Value::from(generation));
        attachments.insert(format!("blob_{pointer}"), Value::Object(stub));
    }
    let Value::Object(mut map) = root else {
        return None;
    };
    if !attachments.is_empty() {
        map.insert("_attachments".into(), Value::Object(attachments));
    }
    Some(Bytes::from(canonical_json(&Value::Object(map))))
}

// ----- fetching -----

/// Why a received revision's blobs could not be made present.
#[derive(Debug, Clone)]
pub(crate) enum BlobFailure {
    /// The bytes received do not match the digest or the length: `HTTP 400`.
    BadData(String),
    /// The peer's proof of a blob we have is wrong: `HTTP 403`.
    BadProof(BlobDigest),
    /// The peer answered `getAttachment` with an error.
    Unavailable {
        digest: BlobDigest,
        error: ReplicatorError,
    },
    /// The local store failed.
    Failed(ReplicatorError),
    /// The connection closed meanwhile: nothing to answer, the revision comes again with
    /// the next session.
    Disconnected,
}

impl BlobFailure {
    /// The status and text to answer the `rev` with.
    pub(crate) fn status(&self) -> (i32, String) {
        match self {
            BlobFailure::BadData(why) => (400, why.clone()),
            BlobFailure::BadProof(digest) => {
                (403, format!("Incorrect proof for attachment {digest}"))
            }
            BlobFailure::Unavailable { digest, error } => (
                502,
                format!("Could not get attachment {digest} from the peer: {error}"),
            ),
            BlobFailure::Failed(error) => (500, error.to_string()),
            BlobFailure::Disconnected => (503, "The connection closed".to_owned()),
        }
    }

    /// The error reported with the document.
    pub(crate) fn to_error(&self) -> ReplicatorError {
        match self {
            BlobFailure::Failed(error) | BlobFailure::Unavailable { error, .. } => error.clone(),
            BlobFailure::Disconnected => ReplicatorError::connection_closed(),
            other => ReplicatorError::protocol(other.status().1),
        }
    }
}

/// How the bytes of a received revision's blobs are obtained.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum FetchPolicy {
    /// LiteCore's puller: `getAttachment` for every blob not in the store.
    Missing,
    /// Sync Gateway's passive side (§4.2): nothing for a digest the document's current
    /// revision already references; `proveAttachment` for a blob we have (falling back to
    /// `getAttachment` if the peer cannot prove); `getAttachment` otherwise.
    ProveOrGet,
}

/// What to do for one blob.
enum Step {
    Store(Bytes),
    Get,
    Prove,
}

/// Makes every blob of a received revision present in the store, one after another:
/// inline bytes are stored, the rest fetched (or proved) from the peer per `policy`.
pub(crate) async fn ensure_blobs(
    db: &Db,
    blip: &Blip,
    doc_id: &str,
    blobs: Vec<IncomingBlob>,
    policy: FetchPolicy,
) -> Result<(), BlobFailure> {
    let id = doc_id.to_owned();
    let needed = blobs.clone();
    let steps = db
        .call(move |store| {
            let referenced = match policy {
                FetchPolicy::Missing => HashSet::new(),
                FetchPolicy::ProveOrGet => current_digests(store, &id)?,
            };
            let mut steps = Vec::with_capacity(needed.len());
            for blob in &needed {
                let step = match &blob.inline {
                    Some(bytes) => Some(Step::Store(bytes.clone())),
                    None if !store.has_blob(&blob.digest)? => Some(Step::Get),
                    None if referenced.contains(&blob.digest) => None,
                    None => (policy == FetchPolicy::ProveOrGet).then_some(Step::Prove),
                };
                steps.push(step);
            }
            Ok(steps)
        })
        .await
        .map_err(BlobFailure::Failed)?;
    for (blob, step) in blobs.iter().zip(steps) {
        match step {
            None => {}
            Some(Step::Store(bytes)) => store_inline(db, blob, bytes).await?,
            Some(Step::Get) => get_attachment(db, blip, doc_id, blob).await?,
            Some(Step::Prove) if prove(db, blip, blob.digest).await? => {}
            // The peer could not prove it: fetch it instead.
            Some(Step::Prove) => get_attachment(db, blip, doc_id, blob).await?,
        }
    }
    Ok(())
}

/// Digests the current revision of a stored document references (blobs and attachments).
fn current_digests(store: &dyn Store, id: &str) -> Result<HashSet<BlobDigest>, ReplicatorError> {
    let Some(record) = store.get(id)? else {
        return Ok(HashSet::new());
    };
    Ok(record
        .tree
        .current()
        .and_then(|c| c.body())
        .map(|body| referenced_digests(body))
        .unwrap_or_default())
}

/// Digests a revision body references: its blobs and its `_attachments` (none when the body
/// is not JSON).
pub(crate) fn referenced_digests(body: &[u8]) -> HashSet<BlobDigest> {
    let mut out = HashSet::new();
    let Ok(mut value) = serde_json::from_slice::<Value>(body) else {
        return out;
    };
    visit_blob_dicts(&mut value, &mut String::new(), true, &mut |_, dict| {
        if let Ok(blob) = BlobRef::from_dict(dict) {
            out.insert(blob.digest);
        }
    });
    if let Some(Value::Object(attachments)) = value.get("_attachments") {
        for meta in attachments.values() {
            if let Some(digest) = meta
                .get("digest")
                .and_then(Value::as_str)
                .and_then(|d| BlobDigest::parse(d).ok())
            {
                out.insert(digest);
            }
        }
    }
    out
}

async fn store_inline(db: &Db, blob: &IncomingBlob, bytes: Bytes) -> Result<(), BlobFailure> {
    let digest = blob.digest;
    let stored = db
        .call(move |store| Ok(store.put_blob(&mut io::Cursor::new(bytes), Some(&digest))))
        .await
        .map_err(BlobFailure::Failed)?;
    match stored {
        Ok(_) => Ok(()),
        Err(StorageError::DigestMismatch { .. }) => Err(BlobFailure::BadData(format!(
            "Incorrect data sent for attachment {digest}"
        ))),
        Err(err) => Err(BlobFailure::Failed(err.into())),
    }
}

/// Fetches one blob with `getAttachment`, streaming the reply into the blob store; nothing
/// is stored unless the bytes match the digest (and do not exceed the announced length).
pub(crate) async fn get_attachment(
    db: &Db,
    blip: &Blip,
    doc_id: &str,
    blob: &IncomingBlob,
) -> Result<(), BlobFailure> {
    let request = GetAttachment {
        digest: blob.digest,
        doc_id: Some(doc_id.to_owned()),
        compress: blob.compress(),
        collection: None,
    };
    debug!(target: "ferrolite::replicator", doc = doc_id, digest = %blob.digest, length = ?blob.length, "fetching a blob");
    let parts = blip
        .request_streamed(request.to_message())
        .await
        .map_err(|_| BlobFailure::Disconnected)?;
    let reader = PartReader::new(parts, blob.length);
    let digest = blob.digest;
    let (reader, stored) = db
        .call(move |store| {
            let mut reader = reader;
            let stored = store.put_blob(&mut reader, Some(&digest));
            Ok((reader, stored))
        })
        .await
        .map_err(BlobFailure::Failed)?;
    let incorrect = || BlobFailure::BadData(format!("Incorrect data sent for attachment {digest}"));
    if let Some(reply) = reader.error_reply {
        let error = MessageError::ErrorReply {
            domain: reply.property("Error-Domain").unwrap_or("BLIP").to_owned(),
            code: reply.error().map_or(0, |(_, code)| code),
            message: String::from_utf8_lossy(&reply.body).into_owned(),
        };
        return Err(BlobFailure::Unavailable {
            digest,
            error: error.into(),
        });
    }
    if reader.too_long {
        return Err(incorrect());
    }
    if reader.disconnected {
        return Err(BlobFailure::Disconnected);
    }
    match stored {
        Ok(stored) => {
            if blob.length.is_some_and(|length| length != stored.length) {
                warn!(target: "ferrolite::replicator", %digest, announced = ?blob.length, received = stored.length, "blob length differs from its metadata");
            }
            Ok(())
        }
        Err(StorageError::DigestMismatch { .. }) => Err(incorrect()),
        Err(err) => Err(BlobFailure::Failed(err.into())),
    }
}

/// Asks the peer to prove it has a blob we have (`proveAttachment`). `Ok(false)` when it
/// cannot answer (`BLIP 404` or `HTTP 404`: fetch it instead); a wrong proof fails.
async fn prove(db: &Db, blip: &Blip, digest: BlobDigest) -> Result<bool, BlobFailure> {
    let nonce = random_nonce();
    let request = ProveAttachment {
        digest,
        nonce: Bytes::copy_from_slice(&nonce),
        collection: None,
    };
    let reply = blip
        .request(request.to_message())
        .await
        .map_err(|_| BlobFailure::Disconnected)?;
    if let Some((domain, code)) = reply.error() {
        if code == 404 && (domain == "BLIP" || domain == "HTTP") {
            return Ok(false);
        }
        return Err(BlobFailure::BadProof(digest));
    }
    let Ok(answer) = ProveAttachmentReply::from_response(&reply) else {
        return Err(BlobFailure::BadProof(digest));
    };
    match local_proof(db, digest, nonce).await? {
        Some(expected) if expected == answer.proof => Ok(true),
        Some(_) => Err(BlobFailure::BadProof(digest)),
        // The blob vanished meanwhile: fetch it.
        None => Ok(false),
    }
}

/// `prove_attachment(nonce, blob)` computed by streaming the stored blob.
async fn local_proof(
    db: &Db,
    digest: BlobDigest,
    nonce: Vec<u8>,
) -> Result<Option<String>, BlobFailure> {
    db.call(move |store| {
        let Some(mut reader) = store.open_blob(&digest)? else {
            return Ok(None);
        };
        Ok(Some(
            streamed_proof(&nonce, &mut reader).map_err(StorageError::from)?,
        ))
    })
    .await
    .map_err(BlobFailure::Failed)
}

/// The proof of `prove_attachment`, over content read from a stream.
fn streamed_proof(nonce: &[u8], reader: &mut dyn Read) -> io::Result<String> {
    let mut hasher = Sha1::new();
    hasher.update([(nonce.len() & 0xff) as u8]);
    hasher.update(nonce);
    let mut buf = vec![0u8; SERVE_CHUNK];
    loop {
        match reader.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => hasher.update(&buf[..n]),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(format!("sha1-{}", STANDARD.encode(hasher.finalize())))
}

/// A fresh random nonce (from the OS generator, through v4 UUIDs).
fn random_nonce() -> Vec<u8> {
    let mut nonce = Vec::with_capacity(NONCE_LEN + 16);
    while nonce.len() < NONCE_LEN {
        nonce.extend_from_slice(uuid::Uuid::new_v4().as_bytes());
    }
    nonce.truncate(NONCE_LEN);
    nonce
}

/// A blocking [`Read`] over the parts of a streamed `getAttachment` reply, for
/// `Store::put_blob` on the blocking pool. It fails the read (so nothing is stored) on an
/// error reply, a lost connection, or more bytes than announced.
struct PartReader {
    parts: mpsc::Receiver<ReplyPart>,
    current: Bytes,
    limit: Option<u64>,
    received: u64,
    ended: bool,
    error_reply: Option<Message>,
    too_long: bool,
    disconnected: bool,
}

impl PartReader {
    fn new(parts: mpsc::Receiver<ReplyPart>, limit: Option<u64>) -> PartReader {
        PartReader {
            parts,
            current: Bytes::new(),
            limit,
            received: 0,
            ended: false,
            error_reply: None,
            too_long: false,
            disconnected: false,
        }
    }
}

impl Read for PartReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        loop {
            if !self.current.is_empty() {
                let n = buf.len().min(self.current.len());
                buf[..n].copy_from_slice(&self.current.split_to(n));
                return Ok(n);
            }
            if self.ended {
                return Ok(0);
            }
            match self.parts.blocking_recv() {
                Some(ReplyPart::Head(message)) => {
                    if message.kind == MessageType::Error {
                        self.error_reply = Some(message);
                        return Err(io::Error::other("the peer answered with an error"));
                    }
                }
                Some(ReplyPart::Data(data)) => {
                    self.received += data.len() as u64;
                    if self.limit.is_some_and(|limit| self.received > limit) {
                        self.too_long = true;
                        return Err(io::Error::other("more bytes than the blob's length"));
                    }
                    self.current = data;
                }
                Some(ReplyPart::End) => self.ended = true,
                None => {
                    self.disconnected = true;
                    return Err(io::Error::new(
                        io::ErrorKind::ConnectionAborted,
                        "the connection closed during a blob transfer",
                    ));
                }
            }
        }
    }
}

// ----- serving -----

/// Answers a `getAttachment` for any blob we have (as LiteCore does; the caller restricts
/// it first when the peer's reads are), streaming the blob from the store; a missing blob is LiteCore's `NotFound`, a malformed digest its
/// `InvalidParameter`. Meant to run in its own task.
pub(crate) async fn serve_get_attachment(db: Db, blip: Blip, request: Message) {
    let get = match GetAttachment::from_message(&request) {
        Ok(get) => get,
        Err(err) => {
            if !request.no_reply {
                blip.respond(bad_request(&request, &err)).await;
            }
            return;
        }
    };
    if request.no_reply {
        return;
    }
    let digest = get.digest;
    let opened = db.call(move |store| Ok(store.open_blob(&digest)?)).await;
    let reader = match opened {
        Ok(Some(reader)) => reader,
        Ok(None) => {
            blip.respond(Message::error_to(
                &request,
                LITECORE,
                LITECORE_NOT_FOUND,
                "No such blob",
            ))
            .await;
            return;
        }
        Err(err) => {
            blip.respond(Message::error_to(&request, "HTTP", 500, &err.to_string()))
                .await;
            return;
        }
    };
    debug!(target: "ferrolite::replicator", %digest, doc = ?get.doc_id, "serving a blob");
    let mut head = Message::response_to(&request);
    head.compressed = get.compress;
    let Ok(mut writer) = blip.respond_streaming(head).await else {
        return;
    };
    let mut reader = Some(reader);
    loop {
        let Some(mut source) = reader.take() else {
            return;
        };
        let read = tokio::task::spawn_blocking(move || {
            let chunk = read_chunk(&mut source, SERVE_CHUNK);
            (source, chunk)
        })
        .await;
        let (chunk, last) = match read {
            Ok((source, Ok(chunk))) => {
                let last = chunk.len() < SERVE_CHUNK;
                if !last {
                    reader = Some(source);
                }
                (chunk, last)
            }
            Ok((_, Err(err))) => {
                // The reply already began: end it short; the peer's digest check fails.
                warn!(target: "ferrolite::replicator", %digest, error = %err, "reading a blob failed while serving it");
                (Bytes::new(), true)
            }
            Err(err) => {
                warn!(target: "ferrolite::replicator", %digest, error = %err, "blob reading task failed");
                (Bytes::new(), true)
            }
        };
        if writer.write(chunk, last).await.is_err() || last {
            return;
        }
    }
}

/// Reads up to `max` bytes (fewer only at the end of the stream).
fn read_chunk(reader: &mut dyn Read, max: usize) -> io::Result<Bytes> {
    let mut buf = vec![0u8; max];
    let mut filled = 0;
    while filled < max {
        match reader.read(&mut buf[filled..]) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    buf.truncate(filled);
    Ok(Bytes::from(buf))
}

/// Answers a `proveAttachment`: `sha1-base64(SHA-1(len ‖ nonce ‖ blob))`, computed by
/// streaming the blob. A missing blob is LiteCore's `NotFound`; an empty or too long nonce
/// `BLIP 400 "Missing nonce"` (LiteCore's answer).
pub(crate) async fn serve_prove_attachment(db: Db, blip: Blip, request: Message) {
    if request.no_reply {
        return;
    }
    let prove = match ProveAttachment::from_message(&request) {
        Ok(prove) => prove,
        Err(MessageError::BadBody { .. }) => {
            blip.respond(Message::error_to(&request, "BLIP", 400, "Missing nonce"))
                .await;
            return;
        }
        Err(err) => {
            blip.respond(bad_request(&request, &err)).await;
            return;
        }
    };
    let reply = match local_proof(&db, prove.digest, prove.nonce.to_vec()).await {
        Ok(Some(proof)) => ProveAttachmentReply { proof }.to_response(&request),
        Ok(None) => Message::error_to(&request, LITECORE, LITECORE_NOT_FOUND, "No such blob"),
        Err(failure) => Message::error_to(&request, "HTTP", 500, &failure.status().1),
    };
    blip.respond(reply).await;
}

/// The reply to a malformed `getAttachment`/`proveAttachment`: LiteCore's
/// `InvalidParameter` for a bad digest, else the generic refusal.
fn bad_request(request: &Message, err: &MessageError) -> Message {
    match err {
        MessageError::BadProperty { name: "digest", .. }
        | MessageError::MissingProperty { name: "digest" } => Message::error_to(
            request,
            LITECORE,
            LITECORE_INVALID_PARAMETER,
            &err.to_string(),
        ),
        other => other.to_error_reply(request),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ferrolite_protocol::messages::prove_attachment;
    use serde_json::json;

    const D1: &str = "sha1-GgXWuohWJOrFHeD9ZswSosQVmDc=";
    const D2: &str = "sha1-gxibxdmjh98Z5bGMduimgpa1KqI=";

    fn blob(digest: &str, length: u64) -> Value {
        json!({"@type": "blob", "content_type": "image/png", "digest": digest, "length": length})
    }

    fn split(body: Value) -> (Map<String, Value>, Option<Value>) {
        let Value::Object(mut map) = body else {
            panic!("not an object")
        };
        let attachments = map.remove("_attachments");
        (map, attachments)
    }

    #[test]
    fn compression_follows_litecore() {
        assert!(should_compress(Some("text/plain"), None));
        assert!(should_compress(Some("application/json"), None));
        assert!(!should_compress(None, None));
        assert!(!should_compress(Some("image/jpeg"), None));
        assert!(!should_compress(Some("Video/mp4"), None));
        assert!(!should_compress(Some("application/zip"), None));
        assert!(!should_compress(Some("application/x-gzip"), None));
        assert!(!should_compress(Some("text/plain"), Some("gzip")));
        assert!(!should_compress(Some("application/x-rar"), None));
    }

    #[test]
    fn pulled_bodies_drop_blob_stubs_and_keep_legacy_attachments() {
        let body = json!({
            "name": "Alice",
            "avatar": blob(D1, 13),
            "_attachments": {
                "blob_/avatar": {"content_type": "image/png", "digest": D1, "length": 13, "revpos": 2, "stub": true},
                "blob_1": {"digest": D1, "length": 13, "stub": true},
                "old.txt": {"content_type": "text/plain", "digest": D2, "length": 34, "revpos": 1, "stub": true}
            }
        });
        let (mut map, attachments) = split(body);
        let blobs = reconcile(&mut map, attachments).unwrap();
        assert_eq!(
            Value::Object(map),
            json!({
                "name": "Alice",
                "avatar": blob(D1, 13),
                "_attachments": {"old.txt": {"content_type": "text/plain", "digest": D2, "length": 34, "revpos": 1, "stub": true}}
            })
        );
        let digests: Vec<String> = blobs.iter().map(|b| b.digest.to_string()).collect();
        assert_eq!(digests.len(), 2);
        assert!(digests.contains(&D1.to_owned()) && digests.contains(&D2.to_owned()));
        let avatar = blobs.iter().find(|b| b.digest.to_string() == D1).unwrap();
        assert_eq!(avatar.length, Some(13));
        assert_eq!(avatar.content_type.as_deref(), Some("image/png"));
    }

    #[test]
    fn a_stub_with_another_digest_updates_the_blob() {
        let (mut map, attachments) = split(json!({
            "a": {"b": [blob(D1, 13)]},
            "_attachments": {"blob_/a/b/0": {"content_type": "text/plain", "digest": D2, "length": 34, "stub": true}}
        }));
        let blobs = reconcile(&mut map, attachments).unwrap();
        assert_eq!(
            Value::Object(map),
            json!({"a": {"b": [{"@type": "blob", "content_type": "text/plain", "digest": D2, "length": 34}]}})
        );
        assert_eq!(blobs.len(), 1);
        assert_eq!(blobs[0].digest.to_string(), D2);
    }

    #[test]
    fn a_blob_missing_from_attachments_fails_and_bodies_without_attachments_are_fine() {
        let (mut map, attachments) = split(json!({
            "avatar": blob(D1, 13),
            "_attachments": {"x": {"digest": D2, "length": 34, "stub": true}}
        }));
        let err = reconcile(&mut map, attachments).unwrap_err();
        assert!(err.contains("There is no content for the blob"), "{err}");
        let (mut map, attachments) = split(json!({"avatar": blob(D1, 13)}));
        let blobs = reconcile(&mut map, attachments).unwrap();
        assert_eq!(blobs.len(), 1);
        assert_eq!(Value::Object(map), json!({"avatar": blob(D1, 13)}));
    }

    #[test]
    fn inline_data_is_decoded_verified_and_replaced_by_the_digest() {
        let data = STANDARD.encode(b"Hello, blob!\n");
        let (mut map, attachments) = split(json!({
            "_attachments": {"hello.txt": {"content_type": "text/plain", "data": data}},
            "pic": {"@type": "blob", "content_type": "text/plain", "data": STANDARD.encode(b"xyz")}
        }));
        let blobs = reconcile(&mut map, attachments).unwrap();
        assert_eq!(blobs.len(), 2);
        assert!(blobs.iter().all(|b| b.inline.is_some()));
        let xyz = BlobDigest::of(b"xyz");
        assert_eq!(
            Value::Object(map),
            json!({
                "_attachments": {"hello.txt": {"content_type": "text/plain", "digest": D1, "length": 13, "stub": true}},
                "pic": {"@type": "blob", "content_type": "text/plain", "digest": xyz.to_string(), "length": 3}
            })
        );
        // Inline data that contradicts its digest is refused.
        let (mut map, attachments) = split(json!({
            "_attachments": {"hello.txt": {"digest": D2, "data": STANDARD.encode(b"Hello, blob!\n")}}
        }));
        assert!(reconcile(&mut map, attachments).is_err());
    }

    #[test]
    fn pushed_bodies_get_stubs_exactly_as_litecore_writes_them() {
        let body = canonical_json(&json!({
            "name": "Alice",
            "avatar": blob(D1, 13),
            "photos": [1, {"@type": "blob", "digest": D2, "length": 34, "content_type": "text/plain", "extra": "kept"}],
            "a/b": {"@type": "blob", "digest": D1, "length": 13},
            "_attachments": {"old.txt": {"digest": D2, "length": 34, "stub": true, "revpos": 1}, "blob_/gone": {"digest": D2}}
        }));
        let sent: Value =
            serde_json::from_slice(&with_attachment_stubs(&body, 3).unwrap()).unwrap();
        assert_eq!(
            sent["_attachments"],
            json!({
                "old.txt": {"digest": D2, "length": 34, "stub": true, "revpos": 1},
                "blob_/avatar": {"content_type": "image/png", "digest": D1, "length": 13, "stub": true, "revpos": 3},
                "blob_/photos/1": {"content_type": "text/plain", "digest": D2, "length": 34, "extra": "kept", "stub": true, "revpos": 3},
                "blob_/a~1b": {"digest": D1, "length": 13, "stub": true, "revpos": 3}
            })
        );
        // The blob dictionaries stay in the body.
        assert_eq!(sent["avatar"], blob(D1, 13));
        assert_eq!(with_attachment_stubs(br#"{"plain":1}"#, 1), None);
    }

    #[test]
    fn streamed_proof_matches_the_spec_example() {
        let nonce: Vec<u8> = (1..=20).collect();
        let proof =
            streamed_proof(&nonce, &mut io::Cursor::new(b"Hello, blob!\n".to_vec())).unwrap();
        assert_eq!(proof, "sha1-B4fLt5PqMZJmWaNuC5GY99YrdA0=");
        assert_eq!(prove_attachment(&nonce, b"Hello, blob!\n"), proof);
        assert_eq!(random_nonce().len(), NONCE_LEN);
        assert_ne!(random_nonce(), random_nonce());
    }
}
