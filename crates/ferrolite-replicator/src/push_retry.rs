//! A proposed revision refused with `409` although the peer's current revision is one of
//! its ancestors (LiteCore's `Pusher::shouldRetryConflictWithNewerAncestor`).
//!
//! That happens when the peer stored a revision we pushed but the connection broke before
//! its reply came back: no remote-ancestor mark was written, so the next local edit is
//! proposed with an older ancestor (or none), and the peer, whose current revision is the
//! one we pushed, answers `{"status":409,"rev":"<current>"}`. Without a retry the document
//! would never converge: the pull brings nothing (we have the peer's revision) and the
//! push is refused forever. With `conflictIncludesRev` the reply names the peer's current
//! revision; when it is an ancestor of ours, we propose again with it as the remote
//! ancestor (once: a second 409 naming the same revision is a real conflict).

use ferrolite_document::RevId;
use ferrolite_storage::Store;

use crate::db::{self, Db};
use crate::ReplicatorError;

/// Whether to propose `rev` of `doc_id` again with the peer's `server_current` as its
/// remote ancestor: the document's current revision is still `rev`, and `server_current`
/// differs from the ancestor we proposed (`proposed`) and is an ancestor of `rev` in the
/// local tree. Returns that ancestor and the history to send (newest first, up to and
/// including it, at most `max` revisions).
pub(crate) async fn newer_ancestor(
    db: &Db,
    doc_id: &str,
    rev: &RevId,
    proposed: Option<&RevId>,
    server_current: Option<&RevId>,
    max: usize,
) -> Result<Option<(RevId, Vec<RevId>)>, ReplicatorError> {
    let Some(server_current) = server_current.filter(|s| Some(*s) != proposed) else {
        return Ok(None);
    };
    let (doc_id, rev, server_current) = (doc_id.to_owned(), rev.clone(), server_current.clone());
    db.call(move |store| {
        let Some(record) = store.get(&doc_id)? else {
            return Ok(None);
        };
        if record.tree.current().map(|c| c.id()) != Some(&rev) {
            return Ok(None); // changed since: the newer revision is pushed at its sequence
        }
        let is_ancestor = record
            .tree
            .history(&rev)
            .iter()
            .skip(1)
            .any(|ancestor| **ancestor == server_current);
        if !is_ancestor {
            return Ok(None);
        }
        let history = db::history_to_send(&record.tree, &rev, &[&server_current], max);
        Ok(Some((server_current, history)))
    })
    .await
}
