//! Blobs: binary content (images, files) referenced from documents.

use std::fmt;
use std::io::Read;
use std::sync::Mutex;

use bytes::Bytes;
use ferrolite_document::{BlobDigest, BlobRef};
use serde_json::{Map, Value};

/// Binary content referenced from a document, stored once per content (by digest).
///
/// A blob made with [`Blob::from_bytes`] or [`Blob::from_reader`] is stored when the document
/// that holds it is saved (or by [`crate::Database::save_blob`]); a blob read from a document
/// refers to content already stored, read with [`crate::Database::blob_content`] or
/// [`crate::Database::blob_reader`].
pub struct Blob {
    content_type: Option<String>,
    saved: Option<(BlobDigest, u64)>,
    pending: Pending,
}

enum Pending {
    None,
    Bytes(Bytes),
    Reader(Mutex<Option<Box<dyn Read + Send>>>),
}

impl Blob {
    /// A blob holding `content`; its digest is known at once.
    pub fn from_bytes(content_type: &str, content: impl Into<Bytes>) -> Blob {
        let content: Bytes = content.into();
        Blob {
            content_type: Some(content_type.to_owned()),
            saved: Some((BlobDigest::of(&content), content.len() as u64)),
            pending: Pending::Bytes(content),
        }
    }

    /// A blob whose content is streamed from `reader` when it is saved; its digest and length
    /// are known only then.
    pub fn from_reader(content_type: &str, reader: impl Read + Send + 'static) -> Blob {
        Blob {
            content_type: Some(content_type.to_owned()),
            saved: None,
            pending: Pending::Reader(Mutex::new(Some(Box::new(reader)))),
        }
    }

    /// The blob a blob dictionary (`{"@type": "blob", ...}`) refers to, if it is one.
    pub fn from_dict(dict: &Map<String, Value>) -> Option<Blob> {
        let blob = BlobRef::from_dict(dict).ok()?;
        Some(Blob {
            content_type: blob.content_type,
            saved: Some((blob.digest, blob.length)),
            pending: Pending::None,
        })
    }

    /// The MIME type.
    pub fn content_type(&self) -> Option<&str> {
        self.content_type.as_deref()
    }

    /// The content digest (`sha1-…`), once known.
    pub fn digest(&self) -> Option<BlobDigest> {
        self.saved.map(|(digest, _)| digest)
    }

    /// The content length in bytes, once known.
    pub fn length(&self) -> Option<u64> {
        self.saved.map(|(_, length)| length)
    }

    /// The blob dictionary to put in a document, once the digest is known.
    pub fn to_dict(&self) -> Option<Map<String, Value>> {
        let (digest, length) = self.saved?;
        Some(
            BlobRef {
                digest,
                length,
                content_type: self.content_type.clone(),
            }
            .to_dict(),
        )
    }

    /// Whether content still has to be written to a blob store.
    pub(crate) fn has_pending_content(&self) -> bool {
        !matches!(self.pending, Pending::None)
    }

    /// Takes the content to store: its reader and the digest it must have (if known).
    pub(crate) fn take_pending(&mut self) -> Option<(Box<dyn Read + Send>, Option<BlobDigest>)> {
        match std::mem::replace(&mut self.pending, Pending::None) {
            Pending::None => None,
            Pending::Bytes(bytes) => Some((
                Box::new(std::io::Cursor::new(bytes)),
                self.saved.map(|(d, _)| d),
            )),
            Pending::Reader(cell) => {
                let reader = cell.into_inner().ok().flatten()?;
                Some((reader, None))
            }
        }
    }

    /// Records that the content is stored with this digest and length.
    pub(crate) fn mark_saved(&mut self, digest: BlobDigest, length: u64) {
        self.saved = Some((digest, length));
    }
}

impl fmt::Debug for Blob {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Blob")
            .field("content_type", &self.content_type)
            .field("digest", &self.digest())
            .field("length", &self.length())
            .field("pending", &self.has_pending_content())
            .finish()
    }
}
