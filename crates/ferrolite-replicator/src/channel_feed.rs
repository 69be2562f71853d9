//! The rows of a passive `subChanges` feed when a [`PeerAccess`] decides what the peer
//! reads (sync-function.md §4–5, replication.md §4.2):
//!
//! - the **view**: the channels the peer reads (its readable channels, narrowed by a
//!   `sync_gateway/bychannel` filter), or every document when the access does no channel
//!   filtering;
//! - **channel rows**: the changes of those channels, found through
//!   [`PeerAccess::changes_in`] instead of a scan of the store; a change that took a document
//!   out of every channel is a **removal**;
//! - **backfill**: the documents of channels the peer gained — at the start of a feed, those
//!   granted at or after its `since`; later, those granted while it streams — sent once,
//!   with the feed's position as their sequence (their own sequences are older);
//! - **revocation**: the documents of channels the peer lost that it cannot reach through
//!   another channel.
//!
//! Everything here blocks (store reads, [`PeerAccess`] calls): it runs on the blocking pool.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use ferrolite_protocol::messages::{ChangeFlags, ChangeRow, Sequence};
use ferrolite_storage::{DocumentRecord, Store};

use crate::access::{ChannelChange, PeerAccess};
use crate::passive::{FeedRow, ReadFilter};
use crate::ReplicatorError;

/// What the peer reads, as far as the feed is concerned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum View {
    /// No channel filtering: every document (the store's change feed is scanned).
    All,
    /// These channels, each with the sequence at which it became readable.
    Channels(HashMap<String, u64>),
}

impl View {
    /// The view from the peer's readable channels (`None`: every document) and the channels
    /// of its by-channel filter, if it gave one.
    pub(crate) fn new(
        readable: Option<HashMap<String, u64>>,
        filter: Option<&HashSet<String>>,
    ) -> View {
        match (readable, filter) {
            (None, None) => View::All,
            (None, Some(filter)) => View::Channels(filter.iter().map(|c| (c.clone(), 0)).collect()),
            (Some(readable), None) => View::Channels(readable),
            (Some(mut readable), Some(filter)) => {
                readable.retain(|channel, _| filter.contains(channel));
                View::Channels(readable)
            }
        }
    }

    /// The channels read, `None` for every document.
    pub(crate) fn channels(&self) -> Option<HashSet<String>> {
        match self {
            View::All => None,
            View::Channels(channels) => Some(channels.keys().cloned().collect()),
        }
    }

    /// Whether both views read the same documents (the grant sequences may differ).
    pub(crate) fn same_channels(&self, other: &View) -> bool {
        self.channels() == other.channels()
    }
}

/// What every row of a feed must satisfy, besides access: the `activeOnly` and `docIDs` of
/// the `subChanges`, and the options' read filter.
#[derive(Clone)]
pub(crate) struct RowFilter {
    /// Leave out tombstones.
    pub(crate) active_only: bool,
    /// Only these documents.
    pub(crate) doc_ids: Option<Arc<HashSet<String>>>,
    /// Only the documents it accepts.
    pub(crate) read_filter: Option<ReadFilter>,
}

impl RowFilter {
    /// Whether rows of this document may be sent.
    pub(crate) fn admits(&self, doc_id: &str) -> bool {
        self.doc_ids.as_ref().is_none_or(|ids| ids.contains(doc_id))
            && self.read_filter.as_ref().is_none_or(|f| f(doc_id))
    }
}

/// The feed's position: rows sent so far had sequences up to `position`.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Position(pub(crate) u64);

/// Up to `batch` rows of the changes after `since` in `channels`. Returns the rows, the
/// last sequence read and whether the changes are exhausted.
pub(crate) fn channel_rows(
    access: &dyn PeerAccess,
    store: &dyn Store,
    channels: &HashSet<String>,
    since: u64,
    batch: usize,
    filter: &RowFilter,
    revocations: bool,
) -> Result<(Vec<FeedRow>, u64, bool), ReplicatorError> {
    let mut rows = Vec::new();
    let mut scanned = since;
    if channels.is_empty() {
        return Ok((rows, scanned, true));
    }
    loop {
        let page = access.changes_in(channels, scanned, batch);
        let short = page.len() < batch;
        let before = scanned;
        for change in page {
            // Sequences must increase in send order: an out-of-order change is dropped.
            if change.sequence <= scanned {
                continue;
            }
            scanned = change.sequence;
            if let Some(row) = change_row(store, &change, filter, revocations)? {
                rows.push(row);
                if rows.len() >= batch {
                    return Ok((rows, scanned, false));
                }
            }
        }
        if short || scanned == before {
            return Ok((rows, scanned, true));
        }
    }
}

/// The row for one change of a channel: the document's current revision, or nothing when
/// the document is gone, filtered out, or changed again since (a later change follows).
/// A removal is flagged `removed` (4, with 1 for a tombstone) when the peer asked for
/// revocations; otherwise it is an ordinary row whose revision is sent as a removal body.
fn change_row(
    store: &dyn Store,
    change: &ChannelChange,
    filter: &RowFilter,
    revocations: bool,
) -> Result<Option<FeedRow>, ReplicatorError> {
    if !filter.admits(&change.doc_id) {
        return Ok(None);
    }
    let Some(record) = store.get(&change.doc_id)? else {
        return Ok(None);
    };
    if change.removed {
        let flag = if revocations {
            ChangeFlags::REMOVED
        } else {
            ChangeFlags::NONE
        };
        return Ok(access_lost_row(&record, change.sequence, flag, filter));
    }
    if record.sequence > change.sequence {
        return Ok(None);
    }
    Ok(live_row(&record, change.sequence, filter))
}

/// An ordinary row for the current revision of `record`, at `sequence` (none for a
/// tombstone when the filter wants live documents only).
fn live_row(record: &DocumentRecord, sequence: u64, filter: &RowFilter) -> Option<FeedRow> {
    let current = record.tree.current()?;
    if filter.active_only && current.is_deleted() {
        return None;
    }
    Some(FeedRow {
        row: ChangeRow {
            sequence: Sequence::from(sequence),
            doc_id: record.id.clone(),
            rev_id: current.id().clone(),
            flags: if current.is_deleted() {
                ChangeFlags::DELETED
            } else {
                ChangeFlags::NONE
            },
            body_size: current.body().map(|b| b.len() as u64),
        },
        removed: false,
    })
}

/// A row telling the peer it lost access to the current revision of `record`: `flag`
/// (removed, revoked or none), plus deleted for a tombstone; its revision, if asked for,
/// is sent as a removal body. `activeOnly` leaves out tombstones only: access-removed rows
/// are sent even then, as the loss of access is noticed only while a feed runs and could
/// not be told later.
fn access_lost_row(
    record: &DocumentRecord,
    sequence: u64,
    flag: ChangeFlags,
    filter: &RowFilter,
) -> Option<FeedRow> {
    let current = record.tree.current()?;
    if filter.active_only && current.is_deleted() {
        return None;
    }
    let flags = if current.is_deleted() {
        flag | ChangeFlags::DELETED
    } else {
        flag
    };
    Some(FeedRow {
        row: ChangeRow {
            sequence: Sequence::from(sequence),
            doc_id: record.id.clone(),
            rev_id: current.id().clone(),
            flags,
            body_size: None,
        },
        removed: true,
    })
}

/// The rows a feed starting at `since` sends first: the documents of the channels that
/// became readable at or after `since` (none when `since` is 0: the whole feed follows).
pub(crate) fn initial_rows(
    access: &dyn PeerAccess,
    store: &dyn Store,
    view: &View,
    since: u64,
    batch: usize,
    filter: &RowFilter,
) -> Result<Vec<FeedRow>, ReplicatorError> {
    let View::Channels(channels) = view else {
        return Ok(Vec::new());
    };
    if since == 0 {
        return Ok(Vec::new());
    }
    let granted: HashSet<String> = channels
        .iter()
        .filter(|(_, granted_at)| **granted_at >= since)
        .map(|(channel, _)| channel.clone())
        .collect();
    if granted.is_empty() {
        return Ok(Vec::new());
    }
    backfill(
        access,
        store,
        Some(&granted),
        Position(since),
        batch,
        filter,
        &HashSet::new(),
    )
}

/// The revocations a feed starting at `since` sends first: for the documents of the
/// channels the peer lost since then (as far as its by-channel filter `wanted` reads them)
/// that it cannot read through its channels now.
pub(crate) fn revoked_rows(
    access: &dyn PeerAccess,
    store: &dyn Store,
    view: &View,
    wanted: Option<&HashSet<String>>,
    since: u64,
    batch: usize,
    filter: &RowFilter,
) -> Result<Vec<FeedRow>, ReplicatorError> {
    let View::Channels(now) = view else {
        // It reads every document: it lost nothing.
        return Ok(Vec::new());
    };
    let mut revoked = access.revoked_since(since);
    if revoked.is_empty() {
        return Ok(Vec::new());
    }
    let before = if revoked.contains("*") && wanted.is_none() {
        View::All
    } else {
        if let Some(wanted) = wanted {
            if revoked.contains("*") {
                revoked.extend(wanted.iter().cloned());
            }
            revoked.retain(|channel| wanted.contains(channel));
        }
        let mut before = now.clone();
        for channel in revoked {
            if channel != "*" {
                before.entry(channel).or_insert(0);
            }
        }
        View::Channels(before)
    };
    if before.same_channels(view) {
        return Ok(Vec::new());
    }
    transition_rows(
        access,
        store,
        &before,
        view,
        Position(since),
        batch,
        filter,
        true,
    )
}

/// The rows a feed at `position` sends when the peer's view changes from `old` to `new`:
/// revocations (when it asked for them) for the documents it can no longer read, then the
/// documents of the channels it gained that it could not read before.
#[allow(clippy::too_many_arguments)]
pub(crate) fn transition_rows(
    access: &dyn PeerAccess,
    store: &dyn Store,
    old: &View,
    new: &View,
    position: Position,
    batch: usize,
    filter: &RowFilter,
    revocations: bool,
) -> Result<Vec<FeedRow>, ReplicatorError> {
    let mut rows = Vec::new();
    if revocations {
        for doc_id in lost_documents(access, store, old, new, batch)? {
            if !filter.admits(&doc_id) {
                continue;
            }
            if let Some(record) = store.get(&doc_id)? {
                rows.extend(access_lost_row(
                    &record,
                    position.0,
                    ChangeFlags::REVOKED,
                    filter,
                ));
            }
        }
    }
    let old_channels = old.channels();
    let gained = match (&old_channels, new.channels()) {
        // Every document was readable: nothing is new.
        (None, _) => return Ok(rows),
        (Some(_), None) => None,
        (Some(old), Some(new)) => {
            let gained: HashSet<String> = new.difference(old).cloned().collect();
            if gained.is_empty() {
                return Ok(rows);
            }
            Some(gained)
        }
    };
    // Documents readable before were sent (or will be) by the feed itself.
    let known: HashSet<String> = match &old_channels {
        Some(old) if !old.is_empty() => access.documents_in(old).into_iter().collect(),
        _ => HashSet::new(),
    };
    rows.extend(backfill(
        access,
        store,
        gained.as_ref(),
        position,
        batch,
        filter,
        &known,
    )?);
    Ok(rows)
}

/// The documents readable under `old` and not under `new`, in ID order.
fn lost_documents(
    access: &dyn PeerAccess,
    store: &dyn Store,
    old: &View,
    new: &View,
    batch: usize,
) -> Result<Vec<String>, ReplicatorError> {
    let Some(new_channels) = new.channels() else {
        return Ok(Vec::new());
    };
    let mut candidates = match old.channels() {
        None => all_documents(store, batch)?,
        Some(old_channels) => {
            let lost: HashSet<String> = old_channels.difference(&new_channels).cloned().collect();
            if lost.is_empty() {
                return Ok(Vec::new());
            }
            access.documents_in(&lost)
        }
    };
    if !new_channels.is_empty() {
        let still: HashSet<String> = access.documents_in(&new_channels).into_iter().collect();
        candidates.retain(|id| !still.contains(id));
    }
    candidates.sort_unstable();
    candidates.dedup();
    Ok(candidates)
}

/// The IDs of every document in the store.
fn all_documents(store: &dyn Store, batch: usize) -> Result<Vec<String>, ReplicatorError> {
    let mut ids = Vec::new();
    let mut since = 0;
    loop {
        let page = store.changes_since(since, batch)?;
        let short = page.len() < batch;
        for change in page {
            since = since.max(change.sequence);
            ids.push(change.id);
        }
        if short {
            return Ok(ids);
        }
    }
}

/// Rows for the documents of `channels` (`None`: of the whole store) whose latest change is
/// at or before `position`, except those in `skip`, each carrying the sequence `position`.
/// Later changes are left to the feed, which reads past `position`.
fn backfill(
    access: &dyn PeerAccess,
    store: &dyn Store,
    channels: Option<&HashSet<String>>,
    position: Position,
    batch: usize,
    filter: &RowFilter,
    skip: &HashSet<String>,
) -> Result<Vec<FeedRow>, ReplicatorError> {
    let mut rows = Vec::new();
    let mut cursor = 0;
    loop {
        // (sequence, document, whether it left the channels there)
        let page: Vec<(u64, String, bool)> = match channels {
            Some(channels) => access
                .changes_in(channels, cursor, batch)
                .into_iter()
                .map(|c| (c.sequence, c.doc_id, c.removed))
                .collect(),
            None => store
                .changes_since(cursor, batch)?
                .into_iter()
                .map(|c| (c.sequence, c.id, false))
                .collect(),
        };
        let short = page.len() < batch;
        let before = cursor;
        for (sequence, doc_id, removed) in page {
            if sequence <= cursor {
                continue;
            }
            if sequence > position.0 {
                return Ok(rows);
            }
            cursor = sequence;
            if removed || skip.contains(&doc_id) || !filter.admits(&doc_id) {
                continue;
            }
            let Some(record) = store.get(&doc_id)? else {
                continue;
            };
            // Changed since: the later change is the feed's (or was a removal).
            if record.sequence != sequence {
                continue;
            }
            rows.extend(live_row(&record, position.0, filter));
        }
        if short || cursor == before {
            return Ok(rows);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(entries: &[(&str, u64)]) -> HashMap<String, u64> {
        entries.iter().map(|(c, s)| ((*c).to_owned(), *s)).collect()
    }

    fn set(entries: &[&str]) -> HashSet<String> {
        entries.iter().map(|c| (*c).to_owned()).collect()
    }

    #[test]
    fn views_intersect_the_readable_channels_with_the_filter() {
        assert_eq!(View::new(None, None), View::All);
        assert_eq!(
            View::new(None, Some(&set(&["a"]))),
            View::Channels(map(&[("a", 0)]))
        );
        assert_eq!(
            View::new(Some(map(&[("a", 3), ("b", 0)])), None),
            View::Channels(map(&[("a", 3), ("b", 0)]))
        );
        assert_eq!(
            View::new(Some(map(&[("a", 3), ("b", 0)])), Some(&set(&["a", "c"]))),
            View::Channels(map(&[("a", 3)]))
        );
        let a = View::Channels(map(&[("a", 3)]));
        assert!(a.same_channels(&View::Channels(map(&[("a", 9)]))));
        assert!(!a.same_channels(&View::Channels(map(&[("b", 3)]))));
        assert!(!a.same_channels(&View::All));
    }

    #[test]
    fn row_filters_combine_document_ids_and_the_read_filter() {
        let filter = RowFilter {
            active_only: false,
            doc_ids: Some(Arc::new(set(&["a", "b"]))),
            read_filter: Some(Arc::new(|id: &str| id != "b")),
        };
        assert!(filter.admits("a"));
        assert!(!filter.admits("b"));
        assert!(!filter.admits("c"));
    }
}
