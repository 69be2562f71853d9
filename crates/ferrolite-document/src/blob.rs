//! Blob references: the `{"@type": "blob", ...}` dictionaries inside document bodies.

use std::fmt;
use std::str::FromStr;

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use serde_json::{Map, Value};
use sha1::{Digest, Sha1};

use crate::DocumentError;

/// The value of `@type` that marks a JSON object as a blob reference.
pub const BLOB_TYPE: &str = "blob";

/// A blob's content digest: SHA-1, written `sha1-<standard base64>`.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct BlobDigest([u8; 20]);

impl BlobDigest {
    /// The digest of `data`.
    pub fn of(data: &[u8]) -> BlobDigest {
        BlobDigest(Sha1::digest(data).into())
    }

    /// Parses `sha1-<base64 of 20 bytes>`.
    pub fn parse(text: &str) -> Result<BlobDigest, DocumentError> {
        let bad = || DocumentError::InvalidDigest(text.to_owned());
        let b64 = text.strip_prefix("sha1-").ok_or_else(bad)?;
        if b64.len() != 28 {
            return Err(bad());
        }
        let bytes = STANDARD.decode(b64).map_err(|_| bad())?;
        let raw: [u8; 20] = bytes.try_into().map_err(|_| bad())?;
        Ok(BlobDigest(raw))
    }

    /// The raw 20 bytes.
    pub fn as_bytes(&self) -> &[u8; 20] {
        &self.0
    }

    /// Lowercase hex of the 20 bytes: a name safe for files.
    pub fn to_hex(&self) -> String {
        self.0.iter().map(|b| format!("{b:02x}")).collect()
    }
}

impl fmt::Display for BlobDigest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "sha1-{}", STANDARD.encode(self.0))
    }
}

impl fmt::Debug for BlobDigest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "BlobDigest({self})")
    }
}

impl FromStr for BlobDigest {
    type Err = DocumentError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        BlobDigest::parse(s)
    }
}

/// Computes a [`BlobDigest`] over content that arrives in pieces.
#[derive(Default, Clone)]
pub struct BlobDigester {
    hasher: Sha1,
    length: u64,
}

impl BlobDigester {
    /// A digester that has seen nothing yet.
    pub fn new() -> BlobDigester {
        BlobDigester::default()
    }

    /// Feeds the next piece of content.
    pub fn update(&mut self, data: &[u8]) {
        self.hasher.update(data);
        self.length += data.len() as u64;
    }

    /// How many bytes were fed so far.
    pub fn length(&self) -> u64 {
        self.length
    }

    /// The digest of everything fed.
    pub fn finish(self) -> BlobDigest {
        BlobDigest(self.hasher.finalize().into())
    }
}

/// A reference to a blob, as stored in a document body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BlobRef {
    /// Content digest.
    pub digest: BlobDigest,
    /// Content length in bytes.
    pub length: u64,
    /// MIME type, when known.
    pub content_type: Option<String>,
}

impl BlobRef {
    /// Reads a blob dictionary (`@type` must be `blob`; `digest` and `length` are required).
    pub fn from_dict(dict: &Map<String, Value>) -> Result<BlobRef, DocumentError> {
        if dict.get("@type").and_then(Value::as_str) != Some(BLOB_TYPE) {
            return Err(DocumentError::InvalidBlob("\"@type\" is not \"blob\""));
        }
        let digest = dict
            .get("digest")
            .and_then(Value::as_str)
            .ok_or(DocumentError::InvalidBlob("missing \"digest\""))?;
        let length = dict
            .get("length")
            .and_then(Value::as_u64)
            .ok_or(DocumentError::InvalidBlob("missing or invalid \"length\""))?;
        let content_type = match dict.get("content_type") {
            None | Some(Value::Null) => None,
            Some(Value::String(s)) => Some(s.clone()),
            Some(_) => {
                return Err(DocumentError::InvalidBlob(
                    "\"content_type\" is not a string",
                ))
            }
        };
        Ok(BlobRef {
            digest: BlobDigest::parse(digest)?,
            length,
            content_type,
        })
    }

    /// The blob dictionary to put in a document body.
    pub fn to_dict(&self) -> Map<String, Value> {
        let mut dict = Map::new();
        dict.insert("@type".into(), Value::from(BLOB_TYPE));
        if let Some(ct) = &self.content_type {
            dict.insert("content_type".into(), Value::from(ct.as_str()));
        }
        dict.insert("digest".into(), Value::from(self.digest.to_string()));
        dict.insert("length".into(), Value::from(self.length));
        dict
    }
}

/// Whether `value` is an object marked `"@type": "blob"`.
pub fn is_blob_dict(value: &Value) -> bool {
    value
        .as_object()
        .and_then(|o| o.get("@type"))
        .and_then(Value::as_str)
        == Some(BLOB_TYPE)
}

/// Every blob referenced anywhere in `body` (nested objects and arrays included, but not under
/// a top-level `_attachments`), with its RFC 6901 JSON pointer, in document order.
///
/// A dictionary marked as a blob but malformed (no digest, say) is reported as an error.
pub fn find_blobs(body: &Value) -> Result<Vec<(String, BlobRef)>, DocumentError> {
    let mut found = Vec::new();
    let mut pointer = String::new();
    walk(body, &mut pointer, &mut found, true)?;
    Ok(found)
}

fn walk(
    value: &Value,
    pointer: &mut String,
    found: &mut Vec<(String, BlobRef)>,
    top: bool,
) -> Result<(), DocumentError> {
    match value {
        Value::Object(map) => {
            if is_blob_dict(value) {
                found.push((pointer.clone(), BlobRef::from_dict(map)?));
                return Ok(());
            }
            for (key, child) in map {
                if top && key == "_attachments" {
                    continue;
                }
                let len = pointer.len();
                pointer.push('/');
                pointer.push_str(&key.replace('~', "~0").replace('/', "~1"));
                walk(child, pointer, found, false)?;
                pointer.truncate(len);
            }
        }
        Value::Array(items) => {
            for (i, child) in items.iter().enumerate() {
                let len = pointer.len();
                pointer.push('/');
                pointer.push_str(&i.to_string());
                walk(child, pointer, found, false)?;
                pointer.truncate(len);
            }
        }
        _ => {}
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn digest_of_the_spec_example() {
        let d = BlobDigest::of(b"Hello, blob!\n");
        assert_eq!(d.to_string(), "sha1-GgXWuohWJOrFHeD9ZswSosQVmDc=");
        assert_eq!(BlobDigest::parse(&d.to_string()).unwrap(), d);
        let mut streamed = BlobDigester::new();
        streamed.update(b"Hello, ");
        streamed.update(b"blob!\n");
        assert_eq!(streamed.length(), 13);
        assert_eq!(streamed.finish(), d);
    }

    #[test]
    fn bad_digests_are_refused() {
        for bad in [
            "",
            "sha1-",
            "md5-GgXWuohWJOrFHeD9ZswSosQVmDc=",
            "sha1-GgXWuohWJOrFHeD9ZswSosQVmDc",
            "sha1-!!XWuohWJOrFHeD9ZswSosQVmDc=",
        ] {
            assert!(BlobDigest::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn finds_blobs_everywhere_with_pointers() {
        let blob = json!({"@type": "blob", "digest": "sha1-GgXWuohWJOrFHeD9ZswSosQVmDc=", "length": 13, "content_type": "image/png"});
        let body = json!({
            "avatar": blob,
            "photos": [1, blob],
            "a/b": {"c~d": blob},
            "_attachments": {"x": blob},
            "plain": {"@type": "other"}
        });
        let found = find_blobs(&body).unwrap();
        let pointers: Vec<&str> = found.iter().map(|(p, _)| p.as_str()).collect();
        assert_eq!(pointers, ["/a~1b/c~0d", "/avatar", "/photos/1"]);
        assert_eq!(found[0].1.length, 13);
        assert_eq!(found[0].1.content_type.as_deref(), Some("image/png"));
        assert_eq!(Value::Object(found[0].1.to_dict()), blob);
    }

    #[test]
    fn malformed_blob_dict_is_an_error() {
        let body = json!({"img": {"@type": "blob", "length": 3}});
        assert!(find_blobs(&body).is_err());
    }
}
