//! Pending documents (replicator-behaviour.md §7): the local documents the next push would
//! send, read from the local checkpoint, so valid before the replicator connected.

use std::collections::HashSet;

use ferrolite_storage::{DocumentRecord, Store};

use crate::filter::Decisions;
use crate::ReplicatorError;

/// Changes read per page while listing pending documents.
const PAGE: usize = 500;

/// Whether the push would propose `record`'s current revision, changed at `sequence`: the
/// same test as the pusher's (the remote does not already have it, it has a body, the
/// document-ID list, a conflict awaiting resolution, the push filter).
fn would_push(record: &DocumentRecord, remote: u32, decisions: &Decisions) -> bool {
    let Some(current) = record.tree.current() else {
        return false;
    };
    let remote_ancestor = record.tree.remote_ancestor(remote);
    if remote_ancestor == Some(current.id()) {
        return false;
    }
    let Some(body) = current.body() else {
        return false;
    };
    decisions.pushes(record, current, body, record.sequence, remote_ancestor)
}

/// The IDs of documents (deleted ones included) changed after local sequence `since` that
/// the push would send.
pub(crate) fn pending_ids(
    store: &dyn Store,
    since: u64,
    remote: u32,
    decisions: &Decisions,
) -> Result<HashSet<String>, ReplicatorError> {
    let mut out = HashSet::new();
    let mut after = since;
    loop {
        let changes = store.changes_since(after, PAGE)?;
        let Some(last) = changes.last().map(|c| c.sequence) else {
            return Ok(out);
        };
        for change in changes {
            if let Some(record) = store.get(&change.id)? {
                if record.sequence == change.sequence && would_push(&record, remote, decisions) {
                    out.insert(change.id);
                }
            }
        }
        after = last;
    }
}

/// Whether document `id` is pending (see [`pending_ids`]).
pub(crate) fn is_pending(
    store: &dyn Store,
    id: &str,
    since: u64,
    remote: u32,
    decisions: &Decisions,
) -> Result<bool, ReplicatorError> {
    Ok(store
        .get(id)?
        .is_some_and(|record| record.sequence > since && would_push(&record, remote, decisions)))
}
