//! Store access for the replicator: every `Store` call runs off the async threads
//! (`spawn_blocking`), and incoming revisions are inserted in batches, one transaction each.

use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use bytes::Bytes;
use ferrolite_document::{
    canonical_json, DocumentError, InsertMode, RevId, RevTree, DEFAULT_KEEP_ANCESTOR_BODIES,
    DEFAULT_MAX_DEPTH,
};
use ferrolite_protocol::blip::Message;
use ferrolite_protocol::messages::RevReply;
use ferrolite_storage::{DocumentRecord, ObservedStore, StorageError, Store};
use serde_json::{Map, Value};
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;
use tracing::{debug, warn};

use crate::driver::Blip;
use crate::ReplicatorError;

/// Most revisions inserted in one transaction.
pub(crate) const MAX_BATCH: usize = 200;
/// Longest time a received revision waits for its batch to be committed.
pub(crate) const BATCH_DELAY: Duration = Duration::from_millis(25);
/// Most ancestors offered in a reply to `changes`.
const MAX_KNOWN_ANCESTORS: usize = 20;
/// The local document mapping remote identities to remote numbers.
const REMOTES_DOC: &str = "ferrolite/remotes";

/// Serializes read-modify-write cycles of local documents (the `Transaction` API cannot
/// read them), across every store in the process. They are rare and short.
static LOCAL_DOC_LOCK: Mutex<()> = Mutex::new(());

/// A shared store, used from async code.
#[derive(Clone)]
pub(crate) struct Db {
    store: Arc<ObservedStore>,
}

impl Db {
    pub(crate) fn new(store: Arc<ObservedStore>) -> Db {
        Db { store }
    }

    pub(crate) fn store(&self) -> &Arc<ObservedStore> {
        &self.store
    }

    /// Runs `work` on the blocking pool.
    pub(crate) async fn call<T, F>(&self, work: F) -> Result<T, ReplicatorError>
    where
        F: FnOnce(&ObservedStore) -> Result<T, ReplicatorError> + Send + 'static,
        T: Send + 'static,
    {
        let store = self.store.clone();
        match tokio::task::spawn_blocking(move || work(&store)).await {
            Ok(result) => result,
            Err(err) => Err(StorageError::Backend(format!("storage task failed: {err}")).into()),
        }
    }

    /// Reads a local document holding a JSON object.
    pub(crate) async fn local_json(
        &self,
        id: String,
    ) -> Result<Option<Map<String, Value>>, ReplicatorError> {
        self.call(move |store| read_local_json(store, &id)).await
    }

    /// Writes (or deletes, with `None`) a local document holding a JSON object.
    pub(crate) async fn put_local_json(
        &self,
        id: String,
        value: Option<Map<String, Value>>,
    ) -> Result<(), ReplicatorError> {
        self.call(move |store| {
            let bytes = value.map(|v| Value::Object(v).to_string());
            store.write(&mut |tx| tx.put_local(&id, bytes.as_deref().map(str::as_bytes)))?;
            Ok(())
        })
        .await
    }

    /// The small number standing for `remote_id` in revision trees' remote-ancestor marks,
    /// assigned on first use and kept in a local document.
    pub(crate) async fn remote_number(&self, remote_id: String) -> Result<u32, ReplicatorError> {
        self.call(move |store| {
            let _guard = LOCAL_DOC_LOCK
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            let mut doc = read_local_json(store, REMOTES_DOC)?.unwrap_or_default();
            if let Some(n) = doc
                .get(&remote_id)
                .and_then(Value::as_u64)
                .and_then(|n| u32::try_from(n).ok())
            {
                return Ok(n);
            }
            let next = doc
                .values()
                .filter_map(Value::as_u64)
                .max()
                .unwrap_or(0)
                .saturating_add(1);
            let number = u32::try_from(next)
                .map_err(|_| ReplicatorError::Config("too many remotes".to_owned()))?;
            doc.insert(remote_id, Value::from(number));
            let bytes = Value::Object(doc).to_string();
            store.write(&mut |tx| tx.put_local(REMOTES_DOC, Some(bytes.as_bytes())))?;
            Ok(number)
        })
        .await
    }
}

/// Reads a local document as a JSON object (`None` when absent or not an object).
pub(crate) fn read_local_json(
    store: &dyn Store,
    id: &str,
) -> Result<Option<Map<String, Value>>, ReplicatorError> {
    let Some(bytes) = store.get_local(id)? else {
        return Ok(None);
    };
    match serde_json::from_slice::<Value>(&bytes) {
        Ok(Value::Object(map)) => Ok(Some(map)),
        _ => {
            warn!(target: "ferrolite::replicator", id, "local document is not a JSON object; ignored");
            Ok(None)
        }
    }
}

/// Runs `work` while holding the process-wide local-document lock (read-modify-write of
/// checkpoints on the passive side).
pub(crate) fn with_local_doc_lock<T>(work: impl FnOnce() -> T) -> T {
    let _guard = LOCAL_DOC_LOCK
        .lock()
        .unwrap_or_else(PoisonError::into_inner);
    work()
}

/// An incoming revision body, parsed: canonical JSON of the properties without the
/// top-level `_`-prefixed keys (but with real legacy `_attachments`), whether it was Sync
/// Gateway's removal marker, and the blobs whose bytes must be stored before it.
pub(crate) struct ParsedBody {
    pub(crate) canonical: Bytes,
    pub(crate) removed: bool,
    pub(crate) blobs: Vec<crate::blobs::IncomingBlob>,
}

/// Parses a received `rev` body: a JSON object (an empty body counts as `{}`). Top-level
/// keys starting with `_` (`_id`, `_rev`, `_deleted`, `_revisions`, `_exp`, …) are metadata
/// and are stripped, as LiteCore does; `_attachments` is reconciled with the body's blobs
/// ([`crate::blobs::reconcile`]: stubs of blobs dropped, real legacy attachments kept);
/// `{"_removed":true}` is reported as a removal.
pub(crate) fn parse_body(body: &[u8]) -> Result<ParsedBody, String> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(ParsedBody {
            canonical: Bytes::from_static(b"{}"),
            removed: false,
            blobs: Vec::new(),
        });
    }
    let value: Value =
        serde_json::from_slice(body).map_err(|e| format!("invalid JSON body: {e}"))?;
    let Value::Object(mut map) = value else {
        return Err("the body is not a JSON object".to_owned());
    };
    let removed = map.get("_removed") == Some(&Value::Bool(true));
    let attachments = map.remove("_attachments");
    map.retain(|key, _| !key.starts_with('_'));
    let blobs = crate::blobs::reconcile(&mut map, attachments)?;
    Ok(ParsedBody {
        canonical: Bytes::from(canonical_json(&Value::Object(map))),
        removed,
        blobs,
    })
}

/// The history to send with `rev` in a `rev` message: its ancestors, newest first,
/// stopping after the first one the receiver is known to have (`known`), at most `max`.
pub(crate) fn history_to_send(
    tree: &RevTree,
    rev: &RevId,
    known: &[&RevId],
    max: usize,
) -> Vec<RevId> {
    let mut out = Vec::new();
    for ancestor in tree.history(rev).into_iter().skip(1) {
        if out.len() >= max {
            break;
        }
        out.push(ancestor.clone());
        if known.contains(&ancestor) {
            break;
        }
    }
    out
}

/// The revisions of a document offered as possible ancestors of `offered` in a reply to
/// `changes`: the current revision, the other leaves (newest first), then older ancestors
/// of the current revision, all of a lower generation than `offered`, at most 20.
pub(crate) fn known_ancestors(tree: &RevTree, offered: &RevId) -> Vec<RevId> {
    let mut out: Vec<RevId> = Vec::new();
    let lower = |rev: &RevId| rev.generation() < offered.generation();
    let current = tree.current();
    if let Some(current) = current.filter(|c| lower(c.id())) {
        out.push(current.id().clone());
    }
    let mut leaves: Vec<&RevId> = tree
        .leaves()
        .into_iter()
        .map(|r| r.id())
        .filter(|id| lower(id) && !out.contains(id))
        .collect();
    leaves.sort_unstable_by(|a, b| b.cmp(a));
    out.extend(leaves.into_iter().cloned());
    if let Some(current) = current {
        for ancestor in tree.history(current.id()).into_iter().skip(1) {
            if out.len() >= MAX_KNOWN_ANCESTORS {
                break;
            }
            if lower(ancestor) && !out.contains(ancestor) {
                out.push(ancestor.clone());
            }
        }
    }
    out.truncate(MAX_KNOWN_ANCESTORS);
    out
}

/// A revision received from a peer, waiting to be inserted.
pub(crate) struct RevToInsert {
    /// The document.
    pub(crate) doc_id: String,
    /// `[rev] + history`, newest first, generations decreasing by one.
    pub(crate) history: Vec<RevId>,
    /// Canonical JSON body.
    pub(crate) body: Bytes,
    /// A tombstone.
    pub(crate) deleted: bool,
    /// Conflict policy.
    pub(crate) mode: InsertMode,
    /// Mark the revision as this remote's ancestor (pulled revisions).
    pub(crate) remote: Option<u32>,
    /// The `rev` request to answer after the commit (none for NoReply).
    pub(crate) reply_to: Option<Message>,
}

/// Why one revision of a batch was not stored.
#[derive(Debug, Clone)]
pub(crate) enum InsertFailure {
    /// It does not extend a leaf where conflicts are not allowed: `HTTP 409`.
    Conflict,
    /// Its history is unusable: `HTTP 400`.
    Invalid(String),
    /// The transaction failed: `HTTP 500`.
    Storage(ReplicatorError),
}

/// What happened to one revision of a committed batch.
#[derive(Debug)]
pub(crate) struct Inserted {
    pub(crate) doc_id: String,
    pub(crate) rev: RevId,
    pub(crate) deleted: bool,
    /// `Ok(true)` added, `Ok(false)` already there.
    pub(crate) result: Result<bool, InsertFailure>,
    /// It was added as a conflicting branch (its parent is not the current revision).
    pub(crate) conflict: bool,
}

impl Inserted {
    /// The reply to the `rev` request this revision came in.
    pub(crate) fn reply(&self, request: &Message) -> Message {
        match &self.result {
            Ok(added) => RevReply { noop: !added }.to_response(request),
            Err(InsertFailure::Conflict) => {
                Message::error_to(request, "HTTP", 409, "Document revision conflict")
            }
            Err(InsertFailure::Invalid(why)) => Message::error_to(request, "HTTP", 400, why),
            Err(InsertFailure::Storage(err)) => {
                Message::error_to(request, "HTTP", 500, &err.to_string())
            }
        }
    }
}

/// Called with each committed batch (on the inserter task; keep it short).
pub(crate) type OnCommit = Box<dyn FnMut(Vec<Inserted>) + Send>;

enum InserterCommand {
    Rev(Box<RevToInsert>),
    Flush(oneshot::Sender<()>),
}

/// The batch inserter: a task that collects received revisions and stores each batch in
/// one transaction (up to [`MAX_BATCH`] revisions, or [`BATCH_DELAY`] after the first, or on
/// [`Inserter::flush`]), then answers their `rev` requests and reports the batch.
#[derive(Clone)]
pub(crate) struct Inserter {
    commands: mpsc::Sender<InserterCommand>,
}

impl Inserter {
    pub(crate) fn spawn(db: Db, blip: Blip, on_commit: OnCommit) -> (Inserter, JoinHandle<()>) {
        let (tx, rx) = mpsc::channel(2 * MAX_BATCH);
        let task = tokio::spawn(insert_loop(db, blip, rx, on_commit));
        (Inserter { commands: tx }, task)
    }

    /// Queues a revision (waits while the queue is full).
    pub(crate) async fn insert(&self, rev: RevToInsert) -> Result<(), ReplicatorError> {
        self.commands
            .send(InserterCommand::Rev(Box::new(rev)))
            .await
            .map_err(|_| ReplicatorError::protocol("the inserter stopped"))
    }

    /// A handle that does not keep the inserter running (for tasks that may outlive the
    /// session, such as blob fetches).
    pub(crate) fn downgrade(&self) -> WeakInserter {
        WeakInserter(self.commands.downgrade())
    }

    /// Commits everything queued so far; returns after the commit.
    pub(crate) async fn flush(&self) {
        let (tx, rx) = oneshot::channel();
        if self.commands.send(InserterCommand::Flush(tx)).await.is_ok() {
            let _ = rx.await;
        }
    }
}

/// An [`Inserter`] handle that does not keep it running ([`Inserter::downgrade`]).
pub(crate) struct WeakInserter(mpsc::WeakSender<InserterCommand>);

impl WeakInserter {
    /// The inserter, while it still runs.
    pub(crate) fn upgrade(&self) -> Option<Inserter> {
        self.0.upgrade().map(|commands| Inserter { commands })
    }
}

async fn insert_loop(
    db: Db,
    blip: Blip,
    mut commands: mpsc::Receiver<InserterCommand>,
    mut on_commit: OnCommit,
) {
    let mut batch: Vec<RevToInsert> = Vec::new();
    let mut waiters: Vec<oneshot::Sender<()>> = Vec::new();
    let mut deadline = tokio::time::Instant::now();
    loop {
        let mut finished = false;
        tokio::select! {
            command = commands.recv() => match command {
                Some(InserterCommand::Rev(rev)) => {
                    if batch.is_empty() {
                        deadline = tokio::time::Instant::now() + BATCH_DELAY;
                    }
                    batch.push(*rev);
                    if batch.len() < MAX_BATCH {
                        continue;
                    }
                }
                Some(InserterCommand::Flush(waiter)) => waiters.push(waiter),
                None => finished = true,
            },
            _ = tokio::time::sleep_until(deadline), if !batch.is_empty() => {}
        }
        if !batch.is_empty() {
            commit(&db, &blip, std::mem::take(&mut batch), &mut on_commit).await;
        }
        for waiter in waiters.drain(..) {
            let _ = waiter.send(());
        }
        if finished {
            return;
        }
    }
}

async fn commit(db: &Db, blip: &Blip, batch: Vec<RevToInsert>, on_commit: &mut OnCommit) {
    let count = batch.len();
    let (batch, (results, conflicts)) = match db
        .call(move |store| {
            let results = write_batch(store, &batch);
            Ok((batch, results))
        })
        .await
    {
        Ok(pair) => pair,
        Err(err) => {
            warn!(target: "ferrolite::replicator", error = %err, "storage task failed");
            return;
        }
    };
    debug!(target: "ferrolite::replicator", revisions = count, "committed a batch of received revisions");
    let mut out = Vec::with_capacity(batch.len());
    for (i, (rev, result)) in batch.into_iter().zip(results).enumerate() {
        let inserted = Inserted {
            conflict: conflicts.contains(&i),
            doc_id: rev.doc_id,
            rev: rev
                .history
                .into_iter()
                .next()
                .unwrap_or_else(placeholder_rev),
            deleted: rev.deleted,
            result,
        };
        if let Some(request) = &rev.reply_to {
            blip.respond(inserted.reply(request)).await;
        }
        out.push(inserted);
    }
    on_commit(out);
}

/// Never used: histories are checked to be non-empty before they are queued.
fn placeholder_rev() -> RevId {
    RevId::compute(None, false, b"{}")
}

/// Inserts a batch in one transaction; one result per revision, and the positions of the
/// revisions added as conflicting branches.
fn write_batch(
    store: &ObservedStore,
    batch: &[RevToInsert],
) -> (Vec<Result<bool, InsertFailure>>, Vec<usize>) {
    let mut results: Vec<Result<bool, InsertFailure>> = Vec::with_capacity(batch.len());
    let mut conflicts: Vec<usize> = Vec::new();
    let written = store.write(&mut |tx| {
        results.clear();
        conflicts.clear();
        for rev in batch {
            let Some(newest) = rev.history.first() else {
                results.push(Err(InsertFailure::Invalid("empty history".to_owned())));
                continue;
            };
            let mut record = tx.get(&rev.doc_id)?.unwrap_or_else(|| DocumentRecord {
                id: rev.doc_id.clone(),
                tree: RevTree::new(),
                sequence: 0,
                expiration: None,
            });
            if let Some(existing) = record.tree.get(newest) {
                // Already there: fill in a missing body, update the remote mark.
                let missing_body = existing.body().is_none();
                let mark_changes = rev
                    .remote
                    .is_some_and(|r| record.tree.remote_ancestor(r) != Some(newest));
                if missing_body || mark_changes {
                    if missing_body {
                        record.tree.set_body(newest, Some(rev.body.clone()))?;
                    }
                    if let Some(remote) = rev.remote {
                        record.tree.set_remote_ancestor(remote, newest);
                    }
                    tx.put(&record)?;
                }
                results.push(Ok(false));
                continue;
            }
            let sequence = tx.next_sequence()?;
            match record.tree.insert_history(
                &rev.history,
                Some(rev.body.clone()),
                rev.deleted,
                sequence,
                rev.mode,
            ) {
                Ok(outcome) => {
                    if outcome.conflict {
                        conflicts.push(results.len());
                    }
                    if let Some(remote) = rev.remote {
                        record.tree.set_remote_ancestor(remote, newest);
                    }
                    record.tree.drop_old_bodies(DEFAULT_KEEP_ANCESTOR_BODIES);
                    record.tree.prune(DEFAULT_MAX_DEPTH);
                    record.sequence = sequence;
                    tx.put(&record)?;
                    results.push(Ok(true));
                }
                Err(DocumentError::Conflict) => results.push(Err(InsertFailure::Conflict)),
                Err(other) => results.push(Err(InsertFailure::Invalid(other.to_string()))),
            }
        }
        Ok(())
    });
    match written {
        Ok(_) => (results, conflicts),
        Err(err) => {
            let err = ReplicatorError::from(err);
            let failed = batch
                .iter()
                .map(|_| Err(InsertFailure::Storage(err.clone())))
                .collect();
            (failed, Vec::new())
        }
    }
}

/// Purges documents (access removed by the remote); returns the IDs that existed.
pub(crate) fn purge_documents(
    store: &dyn Store,
    ids: &[String],
) -> Result<Vec<String>, ReplicatorError> {
    let mut purged = Vec::new();
    store.write(&mut |tx| {
        purged.clear();
        for id in ids {
            if tx.purge(id)? {
                purged.push(id.clone());
            }
        }
        Ok(())
    })?;
    Ok(purged)
}

/// Sets remote-ancestor marks (`remote` has these revisions) without changing sequences.
pub(crate) fn mark_remote_ancestors(
    store: &dyn Store,
    remote: u32,
    marks: &[(String, RevId)],
) -> Result<(), ReplicatorError> {
    store.write(&mut |tx| {
        for (id, rev) in marks {
            if let Some(mut record) = tx.get(id)? {
                if record.tree.contains(rev) && record.tree.remote_ancestor(remote) != Some(rev) {
                    record.tree.set_remote_ancestor(remote, rev);
                    tx.put(&record)?;
                }
            }
        }
        Ok(())
    })?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bodies_are_stripped_and_canonical() {
        let parsed =
            parse_body(br#"{"b":1,"_id":"x","_rev":"1-aa","a":{"_keep":true},"_attachments":{}}"#)
                .unwrap();
        assert_eq!(&parsed.canonical[..], br#"{"a":{"_keep":true},"b":1}"#);
        assert!(!parsed.removed);
        assert!(parse_body(br#"{"_removed":true}"#).unwrap().removed);
        assert_eq!(&parse_body(b"").unwrap().canonical[..], b"{}");
        assert!(parse_body(b"[1]").is_err());
        assert!(parse_body(b"{").is_err());
    }

    #[test]
    fn history_stops_at_a_known_revision() {
        let mut tree = RevTree::new();
        let mut last = None;
        let mut made = Vec::new();
        for i in 0..5 {
            let id = tree
                .add_child(
                    last.as_ref(),
                    Bytes::from(format!("{{\"n\":{i}}}")),
                    false,
                    i + 1,
                )
                .unwrap();
            made.push(id.clone());
            last = Some(id);
        }
        let newest = &made[4];
        assert_eq!(history_to_send(&tree, newest, &[], 20).len(), 4);
        assert_eq!(
            history_to_send(&tree, newest, &[], 2),
            vec![made[3].clone(), made[2].clone()]
        );
        assert_eq!(
            history_to_send(&tree, newest, &[&made[2]], 20),
            vec![made[3].clone(), made[2].clone()]
        );
        let offered = RevId::parse("9-aa").unwrap();
        let known = known_ancestors(&tree, &offered);
        assert_eq!(known.first(), Some(&made[4]));
        assert_eq!(known.len(), 5);
        let offered = RevId::parse("3-aa").unwrap();
        assert_eq!(
            known_ancestors(&tree, &offered),
            vec![made[1].clone(), made[0].clone()]
        );
    }
}
