//! `getAttachment` and `proveAttachment` (attachments.md §4–5).

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use bytes::Bytes;
use ferrolite_document::BlobDigest;
use sha1::{Digest, Sha1};

use super::props::{self, bad_body};
use super::{MessageError, Profile};
use crate::blip::Message;

/// The longest `proveAttachment` nonce (its length is written in one byte).
pub const MAX_NONCE_LEN: usize = 255;

/// The answer to `proveAttachment`: `sha1-` + base64(SHA-1(u8 len(nonce) ‖ nonce ‖ data)).
///
/// Base64 with padding, as both LiteCore and Sync Gateway compute it (the protocol document's
/// "lowercase hex" is wrong). The nonce must be 1–255 bytes; a longer one has its length byte
/// truncated, as Sync Gateway does (LiteCore refuses it).
///
/// ```
/// use ferrolite_protocol::messages::prove_attachment;
/// let nonce: Vec<u8> = (1..=20).collect();
/// assert_eq!(prove_attachment(&nonce, b"Hello, blob!\n"), "sha1-B4fLt5PqMZJmWaNuC5GY99YrdA0=");
/// ```
pub fn prove_attachment(nonce: &[u8], data: &[u8]) -> String {
    let mut hasher = Sha1::new();
    hasher.update([(nonce.len() & 0xff) as u8]);
    hasher.update(nonce);
    hasher.update(data);
    format!("sha1-{}", STANDARD.encode(hasher.finalize()))
}

/// `getAttachment`: fetch a blob's bytes by digest, from the sender of a `rev` that
/// references it. Reply: [`GetAttachmentReply`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GetAttachment {
    /// `digest`: `sha1-<base64>`. Required.
    pub digest: BlobDigest,
    /// `docID`: the document whose `rev` references the blob. LiteCore always sends it; Sync
    /// Gateway requires it on `CBMobile_3` (`HTTP 400 "Missing 'docID'"`) — that check is the
    /// handler's.
    pub doc_id: Option<String>,
    /// `compress`: ask for a compressed reply (sent as `true`).
    pub compress: bool,
    /// `collection` (collection-aware connections).
    pub collection: Option<u32>,
}

impl GetAttachment {
    /// The message to send: `digest`, `docID`, `compress` in LiteCore's order, no flags.
    pub fn to_message(&self) -> Message {
        let mut msg = Message::request(Profile::GetAttachment.as_str());
        msg.properties.set("digest", self.digest.to_string());
        props::set_opt(&mut msg, "docID", self.doc_id.as_deref());
        props::set_flag(&mut msg, "compress", self.compress, "true");
        props::set_opt(&mut msg, "collection", self.collection);
        msg
    }

    /// Decodes a received `getAttachment`.
    pub fn from_message(msg: &Message) -> Result<GetAttachment, MessageError> {
        props::check_request(msg, Profile::GetAttachment)?;
        Ok(GetAttachment {
            digest: digest_property(msg)?,
            doc_id: props::optional(msg, "docID").map(str::to_owned),
            compress: props::flag(msg, "compress"),
            collection: props::collection(msg)?,
        })
    }
}

fn digest_property(msg: &Message) -> Result<BlobDigest, MessageError> {
    let text = props::required(msg, "digest")?;
    BlobDigest::parse(text).map_err(|e| MessageError::BadProperty {
        name: "digest",
        value: text.to_owned(),
        reason: e.to_string(),
    })
}

/// The reply to `getAttachment`: the blob's raw bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GetAttachmentReply {
    /// The bytes.
    pub data: Bytes,
}

impl GetAttachmentReply {
    /// The response answering `request`, compressed when the request has `compress`.
    pub fn to_response(&self, request: &Message) -> Message {
        let mut msg = Message::response_to(request);
        msg.body = self.data.clone();
        msg.compressed = props::flag(request, "compress");
        msg
    }

    /// Decodes the reply to a `getAttachment` we sent.
    pub fn from_response(msg: &Message) -> Result<GetAttachmentReply, MessageError> {
        props::check_response(msg)?;
        Ok(GetAttachmentReply {
            data: msg.body.clone(),
        })
    }
}

/// `proveAttachment`: asks the peer to prove it has a blob without sending it (Sync Gateway,
/// during a push). Reply: [`ProveAttachmentReply`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProveAttachment {
    /// `digest`: the blob. Required.
    pub digest: BlobDigest,
    /// The body: a nonce of 1–[`MAX_NONCE_LEN`] random bytes (Sync Gateway uses 20).
    pub nonce: Bytes,
    /// `collection` (collection-aware connections).
    pub collection: Option<u32>,
}

impl ProveAttachment {
    /// The message to send.
    pub fn to_message(&self) -> Message {
        let mut msg = Message::request(Profile::ProveAttachment.as_str());
        msg.properties.set("digest", self.digest.to_string());
        props::set_opt(&mut msg, "collection", self.collection);
        msg.body = self.nonce.clone();
        msg
    }

    /// Decodes a received `proveAttachment`; the nonce must be 1–255 bytes.
    pub fn from_message(msg: &Message) -> Result<ProveAttachment, MessageError> {
        props::check_request(msg, Profile::ProveAttachment)?;
        let digest = digest_property(msg)?;
        let collection = props::collection(msg)?;
        if msg.body.is_empty() || msg.body.len() > MAX_NONCE_LEN {
            return Err(bad_body(format!(
                "the nonce must be 1 to {MAX_NONCE_LEN} bytes, got {}",
                msg.body.len()
            )));
        }
        Ok(ProveAttachment {
            digest,
            nonce: msg.body.clone(),
            collection,
        })
    }

    /// The reply proving possession of `data` (which should be the blob of `digest`).
    pub fn prove(&self, data: &[u8]) -> ProveAttachmentReply {
        ProveAttachmentReply {
            proof: prove_attachment(&self.nonce, data),
        }
    }

    /// Whether `reply` proves possession of `data`.
    pub fn verify(&self, data: &[u8], reply: &ProveAttachmentReply) -> bool {
        prove_attachment(&self.nonce, data) == reply.proof
    }
}

/// The reply to `proveAttachment`: the proof, as ASCII text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProveAttachmentReply {
    /// `sha1-<base64>` (see [`prove_attachment`]).
    pub proof: String,
}

impl ProveAttachmentReply {
    /// The response answering `request`.
    pub fn to_response(&self, request: &Message) -> Message {
        let mut msg = Message::response_to(request);
        msg.body = Bytes::copy_from_slice(self.proof.as_bytes());
        msg
    }

    /// Decodes the reply to a `proveAttachment` we sent (the body must be UTF-8).
    pub fn from_response(msg: &Message) -> Result<ProveAttachmentReply, MessageError> {
        props::check_response(msg)?;
        let proof = std::str::from_utf8(&msg.body)
            .map_err(|_| bad_body("the proof is not text"))?
            .to_owned();
        Ok(ProveAttachmentReply { proof })
    }
}
