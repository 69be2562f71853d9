//! [`PeerAccess`]: what one passive peer may read and write, decided by channels (the
//! gateway's users, channels and sync function).

use std::collections::{HashMap, HashSet};

use ferrolite_document::RevId;
use tokio::sync::watch;

/// One row of a channel feed: the latest change of a document in the channels asked for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChannelChange {
    /// The sequence of the change.
    pub sequence: u64,
    /// The document.
    pub doc_id: String,
    /// At this sequence the document left every channel asked for (its new revision is routed
    /// elsewhere): a removal, sent as a `changes` row with the removed flag.
    pub removed: bool,
}

/// A revision a peer pushed, before it is stored.
#[derive(Debug, Clone, Copy)]
pub struct IncomingWrite<'a> {
    /// The document.
    pub doc_id: &'a str,
    /// The pushed revision.
    pub rev_id: &'a RevId,
    /// Its canonical JSON body (`{}` for a tombstone).
    pub body: &'a [u8],
    /// Whether it is a deletion.
    pub deleted: bool,
    /// The body of the document's current revision, if it has one with a body and is not a
    /// tombstone (the sync function's `oldDoc`); `None` for a new or deleted document.
    pub parent_body: Option<&'a [u8]>,
}

/// Why a pushed revision was refused: answered to the peer as an `HTTP` error.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{status} {message}")]
pub struct WriteRejected {
    /// The HTTP status (403 forbidden, 401 unauthorized, 500 script failure, …).
    pub status: u16,
    /// The reason given to the peer.
    pub message: String,
}

/// Channel-based access for one peer of [`serve_passive`](crate::serve_passive): which
/// documents it may pull, found through a channel index rather than a scan, and which
/// pushed revisions are accepted.
///
/// Methods are called on blocking threads, never on the async runtime.
pub trait PeerAccess: Send + Sync {
    /// The channels the peer may read now (always including the public `!`), each with the
    /// database sequence at which it became readable (0: from the start); `None` means every
    /// document, without channel filtering.
    ///
    /// A feed starting after `since` sends the whole content of the channels that became
    /// readable at or after `since` (their documents are new to the peer even when their
    /// sequences are older).
    fn readable_channels(&self) -> Option<HashMap<String, u64>>;

    /// A receiver whose value changes whenever the channel index gains an entry the peer may
    /// read (at least: an entry in a channel of the last `readable_channels()` answer, or any
    /// entry when that was `None`) or the peer's access may have changed; continuous feeds
    /// wait on it, and on nothing else.
    fn subscribe(&self) -> watch::Receiver<u64>;

    /// The changes after `since` of documents that are, or were until that change, in any
    /// of `channels`, in increasing sequence order, at most `limit` rows, one per document
    /// (its latest change).
    fn changes_in(
        &self,
        channels: &HashSet<String>,
        since: u64,
        limit: usize,
    ) -> Vec<ChannelChange>;

    /// The IDs of the documents whose current revision is in any of `channels`.
    fn documents_in(&self, channels: &HashSet<String>) -> Vec<String>;

    /// The channels the peer lost at or after sequence `since` and cannot read now (`*`: it
    /// could read every document). A feed starting at `since` that asked for revocations
    /// first tells the peer to purge their documents it can no longer reach. None by
    /// default.
    fn revoked_since(&self, since: u64) -> HashSet<String> {
        let _ = since;
        HashSet::new()
    }

    /// Checks a pushed revision before it is stored; an error refuses it.
    fn check_write(&self, write: &IncomingWrite<'_>) -> Result<(), WriteRejected>;
}
