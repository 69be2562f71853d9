//! Replication filters (replicator-behaviour.md §6): push and pull filter functions,
//! document IDs and channels, and the decisions the pusher and the puller take with them.
//!
//! - **push**: a document is proposed only if it is in the document-ID list (when one is
//!   set), is not waiting for the puller to resolve a conflict, and the push filter accepts
//!   it; a document left out counts as done: its sequence is passed by the checkpoint and it
//!   is not reconsidered until it changes again (or the checkpoint is reset).
//! - **pull**: document IDs are sent in `subChanges` (`{"docIDs":[…]}`) and also checked
//!   locally on each `changes` row; channels are sent as `filter=sync_gateway/bychannel`,
//!   `channels=a,b`; the pull filter runs after a `rev` arrived, before it is saved: a
//!   refusal is answered `HTTP 403 "rejected by validation function"`, reported with
//!   [`ReplicatorError::Rejected`], and the remote sequence counts as done.

use std::collections::HashSet;
use std::fmt;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::Arc;

use bytes::Bytes;
use ferrolite_document::{RevId, Revision};
use ferrolite_protocol::messages::{SubChanges, BYCHANNEL_FILTER};
use ferrolite_storage::DocumentRecord;
use serde_json::{Map, Value};
use tracing::warn;

use crate::conflict::ConflictResolver;
use crate::{ReplicatorConfig, ReplicatorError};

/// The text of the `HTTP 403` reply to a `rev` the pull filter refused (LiteCore's).
pub const REJECTED_BY_FILTER: &str = "rejected by validation function";

/// Flags of a revision offered to a filter or reported in a document event (Couchbase
/// Lite's `DocumentFlags`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct DocumentFlags {
    /// The revision is a deletion (tombstone).
    pub deleted: bool,
    /// The remote no longer gives access to the document (Sync Gateway revoked it or removed
    /// it from the user's channels): the document is purged locally unless the pull filter
    /// refuses.
    pub access_removed: bool,
}

/// A revision offered to a push or pull filter.
#[derive(Clone, Debug)]
pub struct FilterRevision {
    /// The document ID.
    pub doc_id: String,
    /// The revision ID.
    pub rev: RevId,
    /// The local sequence of a pushed revision; 0 for a pulled one (not saved yet).
    pub sequence: u64,
    /// The body as canonical JSON (`{}` for a tombstone or an access removal).
    pub json: Bytes,
}

impl FilterRevision {
    /// The properties (parsed from [`json`](Self::json); empty if it is not a JSON object).
    pub fn properties(&self) -> Map<String, Value> {
        match serde_json::from_slice(&self.json) {
            Ok(Value::Object(map)) => map,
            _ => Map::new(),
        }
    }
}

type FilterFn = dyn Fn(&FilterRevision, DocumentFlags) -> bool + Send + Sync;

/// A push or pull filter: `true` replicates the revision, `false` skips it.
///
/// It is called on the replicator's threads, once per candidate revision: keep it quick and
/// free of side effects (Couchbase Lite's advice). A filter that panics counts as refusing.
/// Two filters compare equal when they are the same function object (clones of one
/// `ReplicationFilter`).
#[derive(Clone)]
pub struct ReplicationFilter(Arc<FilterFn>);

impl ReplicationFilter {
    /// Wraps a filter function.
    pub fn new(
        filter: impl Fn(&FilterRevision, DocumentFlags) -> bool + Send + Sync + 'static,
    ) -> ReplicationFilter {
        ReplicationFilter(Arc::new(filter))
    }

    /// Runs the filter; a panic counts as `false`.
    pub fn accepts(&self, revision: &FilterRevision, flags: DocumentFlags) -> bool {
        match catch_unwind(AssertUnwindSafe(|| (self.0)(revision, flags))) {
            Ok(accepted) => accepted,
            Err(_) => {
                warn!(target: "ferrolite::replicator", id = %revision.doc_id, rev = %revision.rev, "a replication filter panicked; the revision is skipped");
                false
            }
        }
    }
}

impl fmt::Debug for ReplicationFilter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ReplicationFilter(..)")
    }
}

impl PartialEq for ReplicationFilter {
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.0, &other.0)
    }
}

impl Eq for ReplicationFilter {}

/// What a replication run decides with: filters, document IDs, channels and the conflict
/// resolver, from the [`ReplicatorConfig`].
pub(crate) struct Decisions {
    pub(crate) push_filter: Option<ReplicationFilter>,
    pub(crate) pull_filter: Option<ReplicationFilter>,
    pub(crate) doc_ids: Option<HashSet<String>>,
    /// The document IDs in the configured order (for `subChanges`).
    doc_id_list: Vec<String>,
    pub(crate) channels: Vec<String>,
    pub(crate) resolver: Option<ConflictResolver>,
    /// The replicator pulls too (a document in conflict waits for the puller's resolution
    /// instead of being pushed).
    pub(crate) pulls: bool,
}

impl Decisions {
    pub(crate) fn new(config: &ReplicatorConfig) -> Decisions {
        let doc_ids: HashSet<String> = config.document_ids.iter().cloned().collect();
        Decisions {
            push_filter: config.push_filter.clone(),
            pull_filter: config.pull_filter.clone(),
            doc_ids: (!doc_ids.is_empty()).then_some(doc_ids),
            doc_id_list: config.document_ids.clone(),
            channels: config.channels.clone(),
            resolver: config.conflict_resolver.clone(),
            pulls: config.replicator_type.pulls(),
        }
    }

    /// Whether the document-ID list (if any) includes `id`.
    pub(crate) fn wants_document(&self, id: &str) -> bool {
        self.doc_ids.as_ref().is_none_or(|ids| ids.contains(id))
    }

    /// Whether the pusher proposes `current`, the current revision of `record` (changed at
    /// `sequence`, with `body`): the document-ID list, a conflict the puller will resolve
    /// (the revision the remote has is not an ancestor of ours), the push filter.
    pub(crate) fn pushes(
        &self,
        record: &DocumentRecord,
        current: &Revision,
        body: &Bytes,
        sequence: u64,
        remote_ancestor: Option<&RevId>,
    ) -> bool {
        if !self.wants_document(&record.id) {
            return false;
        }
        if self.pulls {
            if let Some(known) = remote_ancestor {
                if !record.tree.history(current.id()).contains(&known) {
                    // In conflict with the remote: the puller resolves it and the resolved
                    // revision (a new sequence) is pushed then.
                    return false;
                }
            }
        }
        match &self.push_filter {
            None => true,
            Some(filter) => filter.accepts(
                &FilterRevision {
                    doc_id: record.id.clone(),
                    rev: current.id().clone(),
                    sequence,
                    json: body.clone(),
                },
                DocumentFlags {
                    deleted: current.is_deleted(),
                    access_removed: false,
                },
            ),
        }
    }

    /// Whether the pull filter (if any) accepts a received revision.
    pub(crate) fn pull_accepts(
        &self,
        doc_id: &str,
        rev: &RevId,
        json: &Bytes,
        flags: DocumentFlags,
    ) -> bool {
        match &self.pull_filter {
            None => true,
            Some(filter) => filter.accepts(
                &FilterRevision {
                    doc_id: doc_id.to_owned(),
                    rev: rev.clone(),
                    sequence: 0,
                    json: json.clone(),
                },
                flags,
            ),
        }
    }

    /// Adds the pull filters to a `subChanges` request: channels (by-channel filter) and
    /// document IDs (body).
    pub(crate) fn apply_to(&self, sub: &mut SubChanges) {
        if !self.channels.is_empty() {
            sub.filter = Some(BYCHANNEL_FILTER.to_owned());
            sub.channels = self.channels.clone();
        }
        if !self.doc_id_list.is_empty() {
            sub.doc_ids = Some(self.doc_id_list.clone());
        }
    }
}

/// The error a pull-filter refusal is reported with.
pub(crate) fn rejected(doc_id: &str, rev: &RevId) -> ReplicatorError {
    ReplicatorError::Rejected {
        doc_id: doc_id.to_owned(),
        rev: rev.to_string(),
        message: REJECTED_BY_FILTER.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use ferrolite_document::RevTree;

    #[test]
    fn push_decisions() {
        let mut tree = RevTree::new();
        let first = tree
            .add_child(None, Bytes::from_static(b"{\"a\":1}"), false, 1)
            .unwrap();
        tree.add_child(
            Some(&first),
            Bytes::from_static(b"{\"draft\":true}"),
            false,
            2,
        )
        .unwrap();
        let record = DocumentRecord {
            id: "doc".to_owned(),
            tree,
            sequence: 2,
            expiration: None,
        };
        let current = record.tree.current().unwrap().clone();
        let body = current.body().unwrap().clone();
        let config = ReplicatorConfig {
            push_filter: Some(ReplicationFilter::new(|rev, flags| {
                !flags.deleted && rev.properties().get("draft").is_none()
            })),
            ..ReplicatorConfig::default()
        };
        let decisions = Decisions::new(&config);
        assert!(!decisions.pushes(&record, &current, &body, 2, Some(&first)));
        let decisions = Decisions::new(&ReplicatorConfig {
            document_ids: vec!["other".to_owned()],
            ..ReplicatorConfig::default()
        });
        assert!(!decisions.pushes(&record, &current, &body, 2, None));
        let decisions = Decisions::new(&ReplicatorConfig {
            document_ids: vec!["doc".to_owned()],
            ..ReplicatorConfig::default()
        });
        assert!(decisions.pushes(&record, &current, &body, 2, Some(&first)));
        // The remote has a revision that is not our ancestor: the puller resolves first.
        let theirs = RevId::parse("2-ffff").unwrap();
        assert!(!decisions.pushes(&record, &current, &body, 2, Some(&theirs)));
        let push_only = Decisions::new(&ReplicatorConfig {
            replicator_type: crate::ReplicatorType::Push,
            ..ReplicatorConfig::default()
        });
        assert!(push_only.pushes(&record, &current, &body, 2, Some(&theirs)));
        // A panicking filter refuses.
        let panicking = ReplicationFilter::new(|_, _| panic!("boom"));
        let view = FilterRevision {
            doc_id: "doc".to_owned(),
            rev: first,
            sequence: 0,
            json: Bytes::from_static(b"{}"),
        };
        assert!(!panicking.accepts(&view, DocumentFlags::default()));
        assert_eq!(panicking, panicking.clone());
    }

    #[test]
    fn sub_changes_carry_channels_and_document_ids() {
        let decisions = Decisions::new(&ReplicatorConfig {
            channels: vec!["a".to_owned(), "b".to_owned()],
            document_ids: vec!["x".to_owned()],
            ..ReplicatorConfig::default()
        });
        let mut sub = SubChanges::default();
        decisions.apply_to(&mut sub);
        let message = sub.to_message();
        assert_eq!(message.property("filter"), Some(BYCHANNEL_FILTER));
        assert_eq!(message.property("channels"), Some("a,b"));
        assert_eq!(sub.doc_ids, Some(vec!["x".to_owned()]));
        let mut plain = SubChanges::default();
        Decisions::new(&ReplicatorConfig::default()).apply_to(&mut plain);
        assert_eq!(plain.filter, None);
        assert_eq!(plain.doc_ids, None);
    }
}
