use thiserror::Error;

/// Everything that can be wrong with a document, a revision ID or a revision history.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum DocumentError {
    /// A revision ID that is not `<generation>-<lowercase hex digest>`.
    #[error("invalid revision ID {0:?}")]
    InvalidRevId(String),
    /// A document ID that is empty, too long, starts with `_` or holds control characters.
    #[error("invalid document ID {id:?}: {reason}")]
    InvalidDocId {
        /// The offending ID.
        id: String,
        /// Why it is refused.
        reason: &'static str,
    },
    /// A user body carrying a reserved top-level key (one starting with `_`).
    #[error("invalid top-level key {0:?} in document: keys starting with '_' are reserved")]
    ReservedKey(String),
    /// A body that is not a JSON object.
    #[error("document body is not a JSON object")]
    NotAnObject,
    /// A digest string that is not `sha1-<base64 of 20 bytes>`.
    #[error("invalid blob digest {0:?}")]
    InvalidDigest(String),
    /// A blob dictionary missing a required key or with a key of the wrong type.
    #[error("invalid blob dictionary: {0}")]
    InvalidBlob(&'static str),
    /// A revision history whose generations do not decrease by one, or that is empty.
    #[error("invalid revision history: {0}")]
    InvalidHistory(String),
    /// The change would create a conflict where conflicts are not allowed.
    #[error("document update conflict")]
    Conflict,
    /// A revision that is not in the tree.
    #[error("revision {0} not found")]
    RevisionNotFound(String),
    /// Encoded revision-tree bytes that cannot be decoded.
    #[error("corrupt revision tree: {0}")]
    CorruptTree(&'static str),
}
