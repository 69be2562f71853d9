use std::path::PathBuf;

use ferrolite_document::{BlobDigest, DocumentError};
use thiserror::Error;

/// Errors of the storage layer.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum StorageError {
    /// The file or directory exists but is not a ferrolite database (foreign or corrupt file).
    #[error("{path}: not a ferrolite database: {reason}")]
    NotADatabase {
        /// What was opened.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// Stored data that cannot be decoded.
    #[error("corrupt data: {0}")]
    Corrupt(String),
    /// An error of the underlying engine (disk full, I/O failure, …).
    #[error("storage engine error: {0}")]
    Backend(String),
    /// A file-system error (blob files, database directory).
    #[error("I/O error: {0}")]
    Io(#[from] std::io::Error),
    /// Blob content whose digest is not the one announced.
    #[error("blob content does not match its digest: expected {expected}, got {actual}")]
    DigestMismatch {
        /// The digest the caller announced.
        expected: BlobDigest,
        /// The digest of the bytes received.
        actual: BlobDigest,
    },
    /// A record that [`crate::Transaction::put`] cannot store: an empty revision tree,
    /// sequence 0, or a sequence that belongs to another document.
    #[error("cannot store document {id:?}: {reason}")]
    InvalidRecord {
        /// The document's ID.
        id: String,
        /// What is wrong with the record.
        reason: String,
    },
    /// An operation inside a write transaction failed (its error was returned to the
    /// transaction's closure), yet the closure returned `Ok`: the transaction was aborted and
    /// nothing was written.
    #[error("transaction aborted after one of its operations failed: {0}")]
    TransactionAborted(String),
    /// A document-level rule was broken inside a transaction (conflict, bad history, …).
    #[error(transparent)]
    Document(#[from] DocumentError),
}
