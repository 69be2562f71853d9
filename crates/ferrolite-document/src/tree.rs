//! Revision trees: every revision of one document, with parents, flags and (some) bodies.

use bytes::Bytes;

use crate::{DocumentError, RevId};

/// The default maximum depth of a revision tree (Couchbase Lite 3.0's `maxRevTreeDepth`).
pub const DEFAULT_MAX_DEPTH: u32 = 20;

/// How many ancestors of the current revision keep their bodies by default (as delta sources).
pub const DEFAULT_KEEP_ANCESTOR_BODIES: usize = 1;

/// One revision in a [`RevTree`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Revision {
    id: RevId,
    parent: Option<u32>,
    deleted: bool,
    conflict: bool,
    closed: bool,
    sequence: u64,
    body: Option<Bytes>,
}

impl Revision {
    /// The revision ID.
    pub fn id(&self) -> &RevId {
        &self.id
    }
    /// Whether this revision is a deletion (tombstone).
    pub fn is_deleted(&self) -> bool {
        self.deleted
    }
    /// Whether this revision came in on a branch that conflicts with the local one and has not
    /// been resolved (such a branch never becomes current by itself).
    pub fn is_conflict(&self) -> bool {
        self.conflict
    }
    /// Whether this leaf closes a branch (a tombstone written by conflict resolution).
    pub fn is_closed(&self) -> bool {
        self.closed
    }
    /// The local sequence at which this revision was stored.
    pub fn sequence(&self) -> u64 {
        self.sequence
    }
    /// The body (canonical JSON bytes), if it is still kept.
    pub fn body(&self) -> Option<&Bytes> {
        self.body.as_ref()
    }
}

/// How [`RevTree::insert_history`] treats a revision that does not extend a leaf.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InsertMode {
    /// Insert it as a new branch, flagged as a conflict (what a puller does).
    AllowConflicts,
    /// Refuse it with [`DocumentError::Conflict`] unless it extends a leaf, or the tree is empty
    /// (what a `rev` with `noconflicts` asks).
    NoConflicts,
}

/// What [`RevTree::insert_history`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InsertOutcome {
    /// How many revisions were added (0 when the revision was already there).
    pub added: usize,
    /// The newest revision of the history that the tree already had, if any.
    pub common_ancestor: Option<RevId>,
    /// Whether the insertion created a conflicting branch.
    pub conflict: bool,
}

/// The revision tree of one document.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RevTree {
    revs: Vec<Revision>,
}

impl RevTree {
    /// An empty tree.
    pub fn new() -> RevTree {
        RevTree::default()
    }

    /// Whether the tree has no revision.
    pub fn is_empty(&self) -> bool {
        self.revs.is_empty()
    }

    /// Number of revisions in the tree.
    pub fn len(&self) -> usize {
        self.revs.len()
    }

    /// Every revision, in no particular order.
    pub fn revisions(&self) -> impl Iterator<Item = &Revision> {
        self.revs.iter()
    }

    /// The revision with this ID.
    pub fn get(&self, id: &RevId) -> Option<&Revision> {
        todo!("{id}")
    }

    /// Whether the tree holds this revision.
    pub fn contains(&self, id: &RevId) -> bool {
        self.get(id).is_some()
    }

    /// The parent of a revision (`None` for a root, or when the parent was pruned).
    pub fn parent(&self, id: &RevId) -> Option<&Revision> {
        todo!("{id}")
    }

    /// The leaves: revisions without children.
    pub fn leaves(&self) -> Vec<&Revision> {
        todo!()
    }

    /// The current (winning) revision by Couchbase Lite's rule: leaves first, then revisions
    /// not flagged conflict, then live before deleted, then not closed, then the higher revID.
    pub fn current(&self) -> Option<&Revision> {
        todo!()
    }

    /// Whether more than one leaf is live (not deleted).
    pub fn is_conflicted(&self) -> bool {
        todo!()
    }

    /// The revision and its ancestors, newest first (as far as the tree still knows them).
    pub fn history(&self, id: &RevId) -> Vec<&RevId> {
        todo!("{id}")
    }

    /// Adds a revision made locally as a child of `parent` (or as the first revision when
    /// `parent` is `None`), computing its ID from the canonical JSON `body`.
    ///
    /// Fails with [`DocumentError::Conflict`] when `parent` is not a leaf, or is `None` while
    /// the tree is not empty; with [`DocumentError::RevisionNotFound`] when `parent` is unknown.
    pub fn add_child(
        &mut self,
        parent: Option<&RevId>,
        body: Bytes,
        deleted: bool,
        sequence: u64,
    ) -> Result<RevId, DocumentError> {
        let _ = (parent, body, deleted, sequence);
        todo!()
    }

    /// Inserts a revision received from a peer with its history: `history[0]` is the new
    /// revision, then its ancestors, newest first, generations decreasing by exactly one.
    ///
    /// The newest history entry already in the tree is the attachment point; the entries
    /// before it are added as its descendants (only `history[0]` gets `body`). With no entry
    /// in the tree, the oldest becomes a new root. A new branch beside the current revision is
    /// flagged conflict with [`InsertMode::AllowConflicts`] and refused with
    /// [`InsertMode::NoConflicts`] (which also requires the attachment point to be a leaf).
    /// Inserting a revision that is already there adds nothing (its body is filled in if it
    /// had none).
    pub fn insert_history(
        &mut self,
        history: &[RevId],
        body: Option<Bytes>,
        deleted: bool,
        sequence: u64,
        mode: InsertMode,
    ) -> Result<InsertOutcome, DocumentError> {
        let _ = (history, body, deleted, sequence, mode);
        todo!()
    }

    /// Replaces (or removes, with `None`) the kept body of a revision.
    pub fn set_body(&mut self, id: &RevId, body: Option<Bytes>) -> Result<(), DocumentError> {
        let _ = (id, body);
        todo!()
    }

    /// Removes every revision that is `max_depth` or more generations above all of its
    /// leaf descendants. Never removes a leaf. Returns how many revisions were removed.
    pub fn prune(&mut self, max_depth: u32) -> usize {
        let _ = max_depth;
        todo!()
    }

    /// Drops bodies no longer needed: keeps those of every leaf and of the `keep_ancestors`
    /// nearest ancestors of the current revision.
    pub fn drop_old_bodies(&mut self, keep_ancestors: usize) {
        let _ = keep_ancestors;
        todo!()
    }

    /// Removes a leaf and its ancestors up to (not including) the first ancestor that has
    /// other children: the branch disappears as if never received. Returns how many revisions
    /// were removed.
    pub fn remove_branch(&mut self, leaf: &RevId) -> Result<usize, DocumentError> {
        let _ = leaf;
        todo!()
    }

    /// Encodes the tree (IDs, parents, flags, sequences, kept bodies) into a compact binary
    /// form for storage.
    pub fn encode(&self) -> Vec<u8> {
        todo!()
    }

    /// Decodes what [`RevTree::encode`] produced; refuses anything malformed with
    /// [`DocumentError::CorruptTree`], never panics.
    pub fn decode(bytes: &[u8]) -> Result<RevTree, DocumentError> {
        let _ = bytes;
        todo!()
    }
}
