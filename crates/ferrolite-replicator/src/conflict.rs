//! Conflict resolution (revisions-and-delta.md §3; replicator-behaviour.md §4.3).
//!
//! A pulled revision whose parent is not the local current revision is inserted as a branch
//! flagged *conflict* (the local revision stays current) and reported with
//! [`ReplicatorError::Conflict`] (LiteCore code 8). After its batch committed, the document
//! goes to the session's **resolver task**, which, for each conflicted document:
//!
//! 1. reads it and builds a [`Conflict`]: the local current revision and the best conflicting
//!    leaf (the remote revision), outside any transaction;
//! 2. asks the configured [`ConflictResolver`], or applies Couchbase Lite 3.x's default rule
//!    ([`Conflict::default_resolution`]);
//! 3. writes the outcome in **one** transaction for the batch, after checking that neither
//!    side changed meanwhile (a document that changed is decided again, three rounds at
//!    most). The result always descends from the **remote** revision, as Couchbase Lite's
//!    `resolveConflict` does:
//!    - keep remote: no new revision;
//!    - keep local / merged: a new revision, child of the remote one, with that body;
//!    - delete: a new tombstone, child of the remote one (nothing new when the remote
//!      revision is already a deletion);
//!
//!    the local branch is removed ([`RevTree::remove_branch`]) — or closed with a tombstone
//!    flagged *closed* when removing it would drop a revision some remote is known to have —
//!    and the conflict flags of the remote branch are cleared. The document gets a new
//!    sequence, so the pusher pushes the result and listeners hear of it.
//!
//! A resolution that fails (the resolver panicked or returned invalid properties, storage
//! failed) is reported as a pull document event with the error; the document stays in
//! conflict (its local revision current) until a later pull brings it again.

use std::collections::HashSet;
use std::fmt;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::Arc;

use bytes::Bytes;
use ferrolite_document::{
    canonical_json, validate_user_properties, RevId, RevTree, DEFAULT_KEEP_ANCESTOR_BODIES,
    DEFAULT_MAX_DEPTH,
};
use ferrolite_storage::{DocumentRecord, Store};
use serde_json::{Map, Value};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tracing::{debug, warn};

use crate::config::{Direction, ReplicatedDocument};
use crate::db::Db;
use crate::replicator::Reporter;
use crate::ReplicatorError;

/// Rounds of "decide, then write if nothing changed" before giving up on a document that
/// keeps changing.
const MAX_ROUNDS: usize = 3;

/// One side of a [`Conflict`]: a revision with its body.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConflictingRevision {
    /// The revision ID.
    pub revision_id: RevId,
    /// Whether it is a deletion.
    pub deleted: bool,
    /// The local sequence it was stored at.
    pub sequence: u64,
    /// The body as canonical JSON (`{}` for a deletion).
    pub json: Bytes,
}

impl ConflictingRevision {
    /// The properties (parsed from [`json`](Self::json); empty if it is not a JSON object).
    pub fn properties(&self) -> Map<String, Value> {
        match serde_json::from_slice(&self.json) {
            Ok(Value::Object(map)) => map,
            _ => Map::new(),
        }
    }
}

/// A document whose pulled revision conflicts with the local one.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Conflict {
    /// The document ID.
    pub document_id: String,
    /// The local current revision.
    pub local: ConflictingRevision,
    /// The conflicting revision received from the remote.
    pub remote: ConflictingRevision,
}

/// What a [`ConflictResolver`] decides. Whatever it is, the outcome descends from the remote
/// revision, so the remote accepts it when it is pushed.
#[derive(Clone, Debug, PartialEq)]
pub enum ConflictResolution {
    /// The remote revision becomes current; the local branch goes.
    KeepRemote,
    /// The local body wins: written as a new revision, child of the remote one (a local
    /// deletion wins as a new tombstone).
    KeepLocal,
    /// These properties (top-level keys must not start with `_`) are written as a new
    /// revision, child of the remote one.
    Merged(Map<String, Value>),
    /// The document is deleted: a new tombstone, child of the remote revision.
    Delete,
}

impl Conflict {
    /// Couchbase Lite 3.x's default rule (couchbase-lite-C `defaultConflictResolver`): a
    /// deletion wins (on either side); otherwise the revision of higher generation wins;
    /// with equal generations, the greater revision ID (byte-wise) wins.
    pub fn default_resolution(&self) -> ConflictResolution {
        let (local, remote) = (&self.local, &self.remote);
        if local.deleted || remote.deleted {
            return ConflictResolution::Delete;
        }
        let (lg, rg) = (
            local.revision_id.generation(),
            remote.revision_id.generation(),
        );
        if lg > rg || (lg == rg && local.revision_id.as_str() > remote.revision_id.as_str()) {
            ConflictResolution::KeepLocal
        } else {
            ConflictResolution::KeepRemote
        }
    }
}

type ResolverFn = dyn Fn(&Conflict) -> ConflictResolution + Send + Sync;

/// A custom conflict resolver (Couchbase Lite's `conflictResolver`).
///
/// Called on a blocking thread of the replicator, once per conflicted document, outside
/// any transaction; if a side changes before the outcome is written, it is called again with
/// the new state. Two resolvers compare equal when they are the same function object.
#[derive(Clone)]
pub struct ConflictResolver(Arc<ResolverFn>);

impl ConflictResolver {
    /// Wraps a resolver function.
    pub fn new(
        resolver: impl Fn(&Conflict) -> ConflictResolution + Send + Sync + 'static,
    ) -> ConflictResolver {
        ConflictResolver(Arc::new(resolver))
    }

    /// Runs the resolver; a panic is an error.
    pub fn resolve(&self, conflict: &Conflict) -> Result<ConflictResolution, ReplicatorError> {
        catch_unwind(AssertUnwindSafe(|| (self.0)(conflict))).map_err(|_| {
            ReplicatorError::Config(format!(
                "the conflict resolver panicked on document {:?}",
                conflict.document_id
            ))
        })
    }
}

impl fmt::Debug for ConflictResolver {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ConflictResolver(..)")
    }
}

impl PartialEq for ConflictResolver {
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.0, &other.0)
    }
}

impl Eq for ConflictResolver {}

/// The conflict of a document, if it has one: the current revision against the best leaf
/// flagged *conflict* (live before deleted, then the higher revision ID).
pub(crate) fn find_conflict(record: &DocumentRecord) -> Option<Conflict> {
    let tree = &record.tree;
    let current = tree.current()?;
    let remote = tree
        .leaves()
        .into_iter()
        .filter(|leaf| leaf.is_conflict() && leaf.id() != current.id())
        .max_by(|a, b| (!a.is_deleted(), a.id()).cmp(&(!b.is_deleted(), b.id())))?;
    let side = |rev: &ferrolite_document::Revision| ConflictingRevision {
        revision_id: rev.id().clone(),
        deleted: rev.is_deleted(),
        sequence: rev.sequence(),
        json: rev
            .body()
            .cloned()
            .unwrap_or_else(|| Bytes::from_static(b"{}")),
    };
    Some(Conflict {
        document_id: record.id.clone(),
        local: side(current),
        remote: side(remote),
    })
}

/// What to write for a resolution: a new revision on the remote one (body, deleted), or
/// none (the remote revision wins as it is).
type Plan = Option<(Bytes, bool)>;

/// Turns a resolution into what to write; refuses invalid merged properties.
fn plan(conflict: &Conflict, resolution: &ConflictResolution) -> Result<Plan, ReplicatorError> {
    let tombstone = || {
        if conflict.remote.deleted {
            None // already a deletion: it wins as it is
        } else {
            Some((Bytes::from_static(b"{}"), true))
        }
    };
    Ok(match resolution {
        ConflictResolution::KeepRemote => None,
        ConflictResolution::Delete => tombstone(),
        ConflictResolution::KeepLocal if conflict.local.deleted => tombstone(),
        ConflictResolution::KeepLocal => Some((conflict.local.json.clone(), false)),
        ConflictResolution::Merged(properties) => {
            validate_user_properties(properties).map_err(|err| {
                ReplicatorError::Config(format!(
                    "the conflict resolver's properties for {:?} are invalid: {err}",
                    conflict.document_id
                ))
            })?;
            Some((
                Bytes::from(canonical_json(&Value::Object(properties.clone()))),
                false,
            ))
        }
    })
}

/// Applies a planned resolution to a document's tree at `sequence` (see the module
/// documentation).
fn apply(
    record: &mut DocumentRecord,
    conflict: &Conflict,
    plan: &Plan,
    sequence: u64,
) -> Result<(), ferrolite_document::DocumentError> {
    let local = &conflict.local.revision_id;
    let remote = &conflict.remote.revision_id;
    let tree: &mut RevTree = &mut record.tree;
    let mut without_local = tree.clone();
    without_local.remove_branch(local)?;
    let keeps_marks = tree
        .remote_ancestors()
        .all(|(_, rev)| without_local.contains(rev));
    if keeps_marks {
        *tree = without_local;
    } else {
        tree.close_branch(local, sequence)?;
    }
    tree.clear_conflict(remote)?;
    if let Some((body, deleted)) = plan {
        tree.add_child(Some(remote), body.clone(), *deleted, sequence)?;
    }
    tree.drop_old_bodies(DEFAULT_KEEP_ANCESTOR_BODIES);
    tree.prune(DEFAULT_MAX_DEPTH);
    record.sequence = sequence;
    Ok(())
}

/// A document whose conflict could not be resolved.
#[derive(Debug)]
pub(crate) struct ResolveFailure {
    pub(crate) doc_id: String,
    /// The remote revision of the conflict (empty when unknown).
    pub(crate) rev: String,
    pub(crate) deleted: bool,
    pub(crate) error: ReplicatorError,
}

impl ResolveFailure {
    fn of(conflict: &Conflict, error: ReplicatorError) -> ResolveFailure {
        ResolveFailure {
            doc_id: conflict.document_id.clone(),
            rev: conflict.remote.revision_id.to_string(),
            deleted: conflict.remote.deleted,
            error,
        }
    }
}

/// Resolves the conflicts of these documents (those not in conflict are skipped); returns
/// the failures. Runs store calls: call it off the async threads.
pub(crate) fn resolve_documents(
    store: &dyn Store,
    ids: &[String],
    resolver: Option<&ConflictResolver>,
) -> Vec<ResolveFailure> {
    let mut failures = Vec::new();
    let mut seen = HashSet::new();
    let mut todo: Vec<String> = ids
        .iter()
        .filter(|id| seen.insert(id.as_str()))
        .cloned()
        .collect();
    let mut last_round: Vec<Conflict> = Vec::new();
    for _ in 0..MAX_ROUNDS {
        if todo.is_empty() {
            return failures;
        }
        // Decide outside any transaction (the resolver is the application's code).
        let mut decided: Vec<(Conflict, Plan)> = Vec::new();
        for id in &todo {
            let record = match store.get(id) {
                Ok(Some(record)) => record,
                Ok(None) => continue, // purged meanwhile
                Err(err) => {
                    failures.push(ResolveFailure {
                        doc_id: id.clone(),
                        rev: String::new(),
                        deleted: false,
                        error: err.into(),
                    });
                    continue;
                }
            };
            let Some(conflict) = find_conflict(&record) else {
                continue; // resolved meanwhile
            };
            let resolution = match resolver {
                Some(resolver) => resolver.resolve(&conflict),
                None => Ok(conflict.default_resolution()),
            };
            match resolution.and_then(|r| {
                debug!(target: "ferrolite::replicator", id = %conflict.document_id, local = %conflict.local.revision_id, remote = %conflict.remote.revision_id, resolution = ?r, "resolving a conflict");
                plan(&conflict, &r)
            }) {
                Ok(plan) => decided.push((conflict, plan)),
                Err(err) => failures.push(ResolveFailure::of(&conflict, err)),
            }
        }
        // Write every outcome in one transaction, unless a side changed meanwhile.
        let mut changed: Vec<Conflict> = Vec::new();
        let mut refused: Vec<ResolveFailure> = Vec::new();
        let written = store.write(&mut |tx| {
            changed.clear();
            refused.clear();
            for (conflict, plan) in &decided {
                let Some(mut record) = tx.get(&conflict.document_id)? else {
                    continue;
                };
                match find_conflict(&record) {
                    None => continue,
                    Some(now) if now != *conflict => {
                        changed.push(now);
                        continue;
                    }
                    Some(_) => {}
                }
                let sequence = tx.next_sequence()?;
                match apply(&mut record, conflict, plan, sequence) {
                    Ok(()) => tx.put(&record)?,
                    Err(err) => refused.push(ResolveFailure::of(
                        conflict,
                        ReplicatorError::Config(format!(
                            "cannot resolve the conflict of {:?}: {err}",
                            conflict.document_id
                        )),
                    )),
                }
            }
            Ok(())
        });
        if let Err(err) = written {
            let err = ReplicatorError::from(err);
            failures.extend(
                decided
                    .iter()
                    .map(|(conflict, _)| ResolveFailure::of(conflict, err.clone())),
            );
            return failures;
        }
        failures.append(&mut refused);
        todo = changed.iter().map(|c| c.document_id.clone()).collect();
        last_round = changed;
    }
    failures.extend(last_round.iter().map(|conflict| {
        ResolveFailure::of(
            conflict,
            ReplicatorError::Config(format!(
                "document {:?} kept changing while its conflict was resolved",
                conflict.document_id
            )),
        )
    }));
    failures
}

/// Starts a session's resolver task: it receives the IDs of documents whose pulled revision
/// created a conflict (after their batch committed), resolves them, reports failures, then
/// calls `on_done` with the number of IDs of the batch. It ends when every sender is gone
/// and the queue is empty.
pub(crate) fn spawn_resolver(
    db: Db,
    resolver: Option<ConflictResolver>,
    reporter: Arc<Reporter>,
    on_done: Box<dyn Fn(usize) + Send + Sync>,
) -> (mpsc::UnboundedSender<Vec<String>>, JoinHandle<()>) {
    let (tx, mut rx) = mpsc::unbounded_channel::<Vec<String>>();
    let task = tokio::spawn(async move {
        while let Some(ids) = rx.recv().await {
            let count = ids.len();
            let resolver = resolver.clone();
            let failures = db
                .call(move |store| Ok(resolve_documents(store, &ids, resolver.as_ref())))
                .await;
            let failures = match failures {
                Ok(failures) => failures,
                Err(err) => {
                    warn!(target: "ferrolite::replicator", error = %err, "conflict resolution failed");
                    Vec::new()
                }
            };
            if !failures.is_empty() {
                for failure in &failures {
                    warn!(target: "ferrolite::replicator", id = %failure.doc_id, error = %failure.error, "conflict not resolved");
                }
                reporter.documents(
                    failures
                        .into_iter()
                        .map(|f| {
                            (
                                ReplicatedDocument {
                                    direction: Direction::Pull,
                                    id: f.doc_id,
                                    rev: f.rev,
                                    deleted: f.deleted,
                                    access_removed: false,
                                    error: Some(f.error),
                                },
                                false,
                            )
                        })
                        .collect(),
                );
            }
            on_done(count);
        }
    });
    (tx, task)
}

#[cfg(test)]
mod tests {
    use super::*;

    use ferrolite_document::InsertMode;

    fn side(rev: &str, deleted: bool, json: &'static str) -> ConflictingRevision {
        ConflictingRevision {
            revision_id: RevId::parse(rev).unwrap(),
            deleted,
            sequence: 1,
            json: Bytes::from_static(json.as_bytes()),
        }
    }

    fn conflict(local: ConflictingRevision, remote: ConflictingRevision) -> Conflict {
        Conflict {
            document_id: "doc".to_owned(),
            local,
            remote,
        }
    }

    #[test]
    fn default_rule() {
        use ConflictResolution::*;
        let live = |rev| side(rev, false, "{}");
        let dead = |rev| side(rev, true, "{}");
        assert_eq!(
            conflict(dead("2-aa"), live("3-bb")).default_resolution(),
            Delete
        );
        assert_eq!(
            conflict(live("3-aa"), dead("2-bb")).default_resolution(),
            Delete
        );
        assert_eq!(
            conflict(live("3-aa"), live("2-bb")).default_resolution(),
            KeepLocal
        );
        assert_eq!(
            conflict(live("2-ff"), live("3-00")).default_resolution(),
            KeepRemote
        );
        assert_eq!(
            conflict(live("2-bb"), live("2-aa")).default_resolution(),
            KeepLocal
        );
        assert_eq!(
            conflict(live("2-aa"), live("2-bb")).default_resolution(),
            KeepRemote
        );
        // Byte-wise comparison of the whole ID: "10-" sorts before "9-", but generations
        // decide first.
        assert_eq!(
            conflict(live("10-aa"), live("9-ff")).default_resolution(),
            KeepLocal
        );
    }

    fn conflicted_record() -> (DocumentRecord, RevId, RevId) {
        let mut tree = RevTree::new();
        let base = tree
            .add_child(None, Bytes::from_static(b"{\"v\":0}"), false, 1)
            .unwrap();
        let local = tree
            .add_child(
                Some(&base),
                Bytes::from_static(b"{\"v\":\"local\"}"),
                false,
                2,
            )
            .unwrap();
        let remote = RevId::compute(Some(&base), false, b"{\"v\":\"remote\"}");
        tree.insert_history(
            &[remote.clone(), base.clone()],
            Some(Bytes::from_static(b"{\"v\":\"remote\"}")),
            false,
            3,
            InsertMode::AllowConflicts,
        )
        .unwrap();
        tree.set_remote_ancestor(1, &remote);
        let record = DocumentRecord {
            id: "doc".to_owned(),
            tree,
            sequence: 3,
            expiration: None,
        };
        (record, local, remote)
    }

    #[test]
    fn resolutions_descend_from_the_remote_revision() {
        let (record, local, remote) = conflicted_record();
        let found = find_conflict(&record).unwrap();
        assert_eq!(found.local.revision_id, local);
        assert_eq!(found.remote.revision_id, remote);
        assert_eq!(found.remote.properties()["v"], "remote");

        let outcome = |resolution: ConflictResolution| {
            let mut record = record.clone();
            let plan = plan(&found, &resolution).unwrap();
            apply(&mut record, &found, &plan, 10).unwrap();
            assert!(find_conflict(&record).is_none());
            assert!(record.tree.revisions().all(|r| !r.is_conflict()));
            assert!(!record.tree.contains(&local), "local branch removed");
            assert_eq!(record.sequence, 10);
            record
        };
        let kept = outcome(ConflictResolution::KeepRemote);
        assert_eq!(kept.tree.current().unwrap().id(), &remote);
        for (resolution, body, deleted) in [
            (ConflictResolution::KeepLocal, r#"{"v":"local"}"#, false),
            (
                ConflictResolution::Merged(
                    serde_json::json!({"v": "both"})
                        .as_object()
                        .unwrap()
                        .clone(),
                ),
                r#"{"v":"both"}"#,
                false,
            ),
            (ConflictResolution::Delete, "{}", true),
        ] {
            let record = outcome(resolution);
            let current = record.tree.current().unwrap();
            assert_eq!(record.tree.parent(current.id()).unwrap().id(), &remote);
            assert_eq!(
                current.id(),
                &RevId::compute(Some(&remote), deleted, body.as_bytes())
            );
            assert_eq!(current.is_deleted(), deleted);
            assert_eq!(current.sequence(), 10);
        }
        let bad = serde_json::json!({"_id": "x"}).as_object().unwrap().clone();
        assert!(plan(&found, &ConflictResolution::Merged(bad)).is_err());
    }

    #[test]
    fn a_local_branch_another_remote_has_is_closed_not_removed() {
        let (mut record, local, remote) = conflicted_record();
        record.tree.set_remote_ancestor(2, &local);
        let found = find_conflict(&record).unwrap();
        apply(&mut record, &found, &None, 10).unwrap();
        let closing = RevId::compute(Some(&local), true, b"{}");
        assert!(record.tree.get(&closing).unwrap().is_closed());
        assert_eq!(record.tree.current().unwrap().id(), &remote);
        assert_eq!(record.tree.remote_ancestor(2), Some(&local));
        assert!(find_conflict(&record).is_none());
    }
}
