//! The `Store` trait: what every storage engine offers to the layers above.

use std::io::Read;

use bytes::Bytes;
use ferrolite_document::{BlobDigest, RevId, RevTree};

use crate::StorageError;

/// Result of storage operations.
pub type Result<T, E = StorageError> = std::result::Result<T, E>;

/// A document as stored: its ID, revision tree (with the bodies it keeps), the sequence of its
/// latest change, and its expiration time.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DocumentRecord {
    /// Document ID.
    pub id: String,
    /// Every revision known, with parents, flags and kept bodies.
    pub tree: RevTree,
    /// The sequence of the document's latest change (0 until first stored).
    pub sequence: u64,
    /// When the document expires, in milliseconds since the Unix epoch.
    pub expiration: Option<u64>,
}

/// One entry of the change feed: the latest change of one document.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Change {
    /// The sequence of the change.
    pub sequence: u64,
    /// Document ID.
    pub id: String,
    /// The document's current revision after the change.
    pub rev: RevId,
    /// Whether the current revision is a deletion.
    pub deleted: bool,
}

/// The two identities of a database.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DatabaseUuids {
    /// Shown to peers (for example in checkpoint IDs).
    pub public: [u8; 16],
    /// Never leaves the device.
    pub private: [u8; 16],
}

/// What a committed write changed, for listeners (delivered after commit).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CommitSummary {
    /// Changes of documents the transaction stored at a new sequence, in the order written
    /// (a put that keeps the document's sequence, such as setting an expiration, is not one).
    pub changes: Vec<Change>,
    /// IDs of documents purged by the transaction.
    pub purged: Vec<String>,
}

/// The blob a store now holds after [`Store::put_blob`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StoredBlob {
    /// Content digest.
    pub digest: BlobDigest,
    /// Content length in bytes.
    pub length: u64,
}

/// A storage engine for one database.
///
/// All methods are synchronous and may block on disk I/O: async callers run them off the
/// runtime's threads. Implementations are shared between threads; writes are serialized.
pub trait Store: Send + Sync + 'static {
    /// The database's UUIDs, created with the database.
    fn uuids(&self) -> Result<DatabaseUuids>;

    /// The highest sequence ever assigned (0 for a new database).
    fn last_sequence(&self) -> Result<u64>;

    /// How many documents whose current revision is not a deletion are stored.
    fn document_count(&self) -> Result<u64>;

    /// Reads a document.
    fn get(&self, id: &str) -> Result<Option<DocumentRecord>>;

    /// Up to `limit` changes with a sequence greater than `since`, in sequence order.
    /// Each document appears once, at its latest sequence. See [`crate::ChangeFeed`] for a
    /// streaming iterator built on this.
    fn changes_since(&self, since: u64, limit: usize) -> Result<Vec<Change>>;

    /// Reads a local (non-replicated) document, such as a checkpoint.
    fn get_local(&self, id: &str) -> Result<Option<Bytes>>;

    /// Runs `work` in one write transaction: everything it did is committed durably when it
    /// returns `Ok`, nothing when it returns `Err` (the error is passed through).
    fn write(
        &self,
        work: &mut dyn FnMut(&mut dyn Transaction) -> Result<()>,
    ) -> Result<CommitSummary>;

    /// Stores a blob from a stream without holding it whole in memory. When `expected` is given
    /// and the content's digest differs, nothing is stored and
    /// [`StorageError::DigestMismatch`] is returned.
    fn put_blob(&self, content: &mut dyn Read, expected: Option<&BlobDigest>)
        -> Result<StoredBlob>;

    /// Opens a blob for reading as a stream, or `None` when it is not stored.
    fn open_blob(&self, digest: &BlobDigest) -> Result<Option<Box<dyn Read + Send>>>;

    /// Whether a blob is stored.
    fn has_blob(&self, digest: &BlobDigest) -> Result<bool>;

    /// The earliest expiration time of any stored document, in ms since the Unix epoch.
    fn next_expiration(&self) -> Result<Option<u64>>;
}

/// The operations available inside [`Store::write`].
pub trait Transaction {
    /// Reads a document as this transaction sees it.
    fn get(&mut self, id: &str) -> Result<Option<DocumentRecord>>;

    /// Reserves the next sequence number (it is only used if the transaction commits).
    fn next_sequence(&mut self) -> Result<u64>;

    /// Inserts or replaces a document. The change feed and the expiration index follow the
    /// record's `sequence` and `expiration`.
    fn put(&mut self, record: &DocumentRecord) -> Result<()>;

    /// Removes every trace of a document (no tombstone). Returns whether it existed.
    fn purge(&mut self, id: &str) -> Result<bool>;

    /// Writes (`Some`) or deletes (`None`) a local document.
    fn put_local(&mut self, id: &str, value: Option<&[u8]>) -> Result<()>;

    /// IDs of documents whose expiration is at or before `now_ms`, at most `limit`.
    fn expired(&mut self, now_ms: u64, limit: usize) -> Result<Vec<String>>;
}
