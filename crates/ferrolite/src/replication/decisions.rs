//! The replicator's decisions in the facade's terms: [`Conflict`] and
//! [`ConflictResolution`] for a conflict resolver, [`Document`]s for push and pull filters.

use std::sync::Arc;

use ferrolite_document::RevId;
use ferrolite_replicator::{
    ConflictResolver, ConflictingRevision, DocumentFlags, FilterRevision, ReplicationFilter,
};

use crate::Document;

pub use ferrolite_replicator::ConflictResolution;

/// A conflict resolver of the facade.
pub(crate) type ResolverFn = Arc<dyn Fn(&Conflict) -> ConflictResolution + Send + Sync>;
/// A push or pull filter of the facade.
pub(crate) type FilterFn = Arc<dyn Fn(&Document, DocumentFlags) -> bool + Send + Sync>;

/// A document whose pulled revision conflicts with the local one, as a
/// [`ReplicatorConfiguration::conflict_resolver`](crate::ReplicatorConfiguration::conflict_resolver)
/// sees it (Couchbase Lite's `Conflict`): the document ID, the local document and the
/// remote one, each `None` when that side is a deletion.
#[derive(Debug, Clone)]
pub struct Conflict {
    document_id: String,
    local: Side,
    remote: Side,
}

#[derive(Debug, Clone)]
struct Side {
    revision_id: RevId,
    document: Option<Document>,
}

impl Side {
    fn new(document_id: &str, revision: &ConflictingRevision) -> Side {
        Side {
            revision_id: revision.revision_id.clone(),
            document: (!revision.deleted).then(|| {
                Document::new(
                    document_id.to_owned(),
                    revision.revision_id.clone(),
                    revision.sequence,
                    revision.json.clone(),
                )
            }),
        }
    }
}

impl Conflict {
    fn from_engine(conflict: &ferrolite_replicator::Conflict) -> Conflict {
        Conflict {
            document_id: conflict.document_id.clone(),
            local: Side::new(&conflict.document_id, &conflict.local),
            remote: Side::new(&conflict.document_id, &conflict.remote),
        }
    }

    /// The document ID.
    pub fn document_id(&self) -> &str {
        &self.document_id
    }

    /// The local current revision, or `None` if it is a deletion.
    pub fn local_document(&self) -> Option<&Document> {
        self.local.document.as_ref()
    }

    /// The conflicting revision received from the remote, or `None` if it is a deletion.
    pub fn remote_document(&self) -> Option<&Document> {
        self.remote.document.as_ref()
    }

    /// The local revision's ID (also for a deletion).
    pub fn local_revision_id(&self) -> &RevId {
        &self.local.revision_id
    }

    /// The remote revision's ID (also for a deletion).
    pub fn remote_revision_id(&self) -> &RevId {
        &self.remote.revision_id
    }

    /// What Couchbase Lite 3.x's default resolver decides: a deletion wins; otherwise the
    /// higher generation; with equal generations, the greater revision ID. Use it as the
    /// fallback of a custom resolver.
    pub fn default_resolution(&self) -> ConflictResolution {
        let side = |side: &Side| ConflictingRevision {
            revision_id: side.revision_id.clone(),
            deleted: side.document.is_none(),
            sequence: 0,
            json: bytes::Bytes::new(),
        };
        ferrolite_replicator::Conflict {
            document_id: self.document_id.clone(),
            local: side(&self.local),
            remote: side(&self.remote),
        }
        .default_resolution()
    }
}

/// The engine's resolver calling a facade resolver.
pub(crate) fn engine_resolver(resolver: ResolverFn) -> ConflictResolver {
    ConflictResolver::new(move |conflict| resolver(&Conflict::from_engine(conflict)))
}

/// The engine's filter calling a facade filter with a [`Document`] (its sequence is 0 for a
/// pulled revision, which is not saved yet).
pub(crate) fn engine_filter(filter: FilterFn) -> ReplicationFilter {
    ReplicationFilter::new(move |revision: &FilterRevision, flags| {
        let document = Document::new(
            revision.doc_id.clone(),
            revision.rev.clone(),
            revision.sequence,
            revision.json.clone(),
        );
        filter(&document, flags)
    })
}
