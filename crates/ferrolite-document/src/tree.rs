//! Revision trees: every revision of one document, with parents, flags and (some) bodies.
//!
//! # Invariants
//!
//! Revisions are stored in a `Vec`; a parent link is an index into it. Every mutating method
//! keeps parents **before** their children (a parent's index is lower than its child's), and a
//! child's generation is always its parent's plus one. Revision IDs are unique in a tree.
//!
//! # Encoded form ([`RevTree::encode`], version 1)
//!
//! All integers marked *varint* are unsigned LEB128 (7 bits per byte, low bits first, at most
//! 10 bytes, no redundant trailing zero byte).
//!
//! | field | encoding |
//! |---|---|
//! | format version | 1 byte, `1` |
//! | revision count `n` | varint |
//! | then `n` times, parents before children: | |
//! | revision ID length | varint |
//! | revision ID | that many ASCII bytes (`gen-digest`) |
//! | parent | varint: `0` = none, else the parent's position + 1 (must be below the revision's own position) |
//! | flags | 1 byte: bit 0 deleted, bit 1 conflict, bit 2 closed, bit 3 has body; other bits 0 |
//! | sequence | varint |
//! | body length, body | only with bit 3: varint, then that many bytes (canonical JSON) |
//! | *optional* remote-ancestor section, written only when the tree has marks: | |
//! | section tag | 1 byte, `1` |
//! | mark count `m` | varint, at least 1 |
//! | then `m` times, remote numbers strictly increasing: | |
//! | remote number | varint (see [`RevTree::set_remote_ancestor`]) |
//! | revision | varint: the marked revision's position (below `n`) |
//!
//! Nothing may follow the last revision, or the remote-ancestor section when there is one.
//! Encodings written before the section existed (no marks) decode unchanged.

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
    /// Remote-ancestor marks: (remote number, revision), sorted by remote number, each
    /// revision present in `revs`.
    remotes: Vec<(u32, RevId)>,
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
        self.index_of(id).and_then(|i| self.revs.get(i))
    }

    /// Whether the tree holds this revision.
    pub fn contains(&self, id: &RevId) -> bool {
        self.get(id).is_some()
    }

    /// The parent of a revision (`None` for a root, or when the parent was pruned).
    pub fn parent(&self, id: &RevId) -> Option<&Revision> {
        let rev = self.get(id)?;
        self.revs.get(idx(rev.parent?))
    }

    /// The leaves: revisions without children.
    pub fn leaves(&self) -> Vec<&Revision> {
        let has_children = HasChildren::of(&self.revs);
        self.revs
            .iter()
            .enumerate()
            .filter(|&(i, _)| !has_children.get(i))
            .map(|(_, rev)| rev)
            .collect()
    }

    /// The current (winning) revision by Couchbase Lite's rule: leaves first, then revisions
    /// not flagged conflict, then live before deleted, then not closed, then the higher revID.
    pub fn current(&self) -> Option<&Revision> {
        self.current_index().and_then(|i| self.revs.get(i))
    }

    /// Whether more than one leaf is live (not deleted).
    pub fn is_conflicted(&self) -> bool {
        let has_children = HasChildren::of(&self.revs);
        self.revs
            .iter()
            .enumerate()
            .filter(|&(i, rev)| !has_children.get(i) && !rev.deleted)
            .nth(1)
            .is_some()
    }

    /// The revision and its ancestors, newest first (as far as the tree still knows them).
    pub fn history(&self, id: &RevId) -> Vec<&RevId> {
        let mut out = Vec::new();
        let mut next = self.index_of(id);
        while let Some(rev) = next.and_then(|i| self.revs.get(i)) {
            out.push(&rev.id);
            next = rev.parent.map(idx);
        }
        out
    }

    /// The latest revision known to be on remote peer number `remote` (its "remote
    /// ancestor"), if one is marked.
    ///
    /// Replicators mark the revision a peer is known to have (pushed and accepted, or
    /// pulled from it) so that the next push can name it in `proposeChanges` and send a
    /// history that stops there. Marked revisions survive [`RevTree::prune`] and keep their
    /// bodies through [`RevTree::drop_old_bodies`] (they are the delta sources of later
    /// pushes). Remote numbers are small integers a database assigns to each remote it
    /// replicates with.
    pub fn remote_ancestor(&self, remote: u32) -> Option<&RevId> {
        self.remotes
            .iter()
            .find(|(r, _)| *r == remote)
            .map(|(_, rev)| rev)
    }

    /// Marks `rev` as the latest revision known to be on remote peer number `remote`,
    /// replacing that remote's previous mark. Does nothing when `rev` is not in the tree.
    pub fn set_remote_ancestor(&mut self, remote: u32, rev: &RevId) {
        if !self.contains(rev) {
            return;
        }
        match self.remotes.binary_search_by_key(&remote, |(r, _)| *r) {
            Ok(i) => {
                if let Some(entry) = self.remotes.get_mut(i) {
                    entry.1 = rev.clone();
                }
            }
            Err(i) => self.remotes.insert(i, (remote, rev.clone())),
        }
    }

    /// Removes the remote-ancestor mark of remote peer number `remote`, if any.
    pub fn clear_remote_ancestor(&mut self, remote: u32) {
        self.remotes.retain(|(r, _)| *r != remote);
    }

    /// Every remote-ancestor mark, as (remote number, revision), by remote number.
    pub fn remote_ancestors(&self) -> impl Iterator<Item = (u32, &RevId)> {
        self.remotes.iter().map(|(r, rev)| (*r, rev))
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
        let parent_index = match parent {
            None if !self.revs.is_empty() => return Err(DocumentError::Conflict),
            None => None,
            Some(parent_id) => {
                let i = self
                    .index_of(parent_id)
                    .ok_or_else(|| DocumentError::RevisionNotFound(parent_id.to_string()))?;
                if self.has_child(i) {
                    return Err(DocumentError::Conflict);
                }
                if parent_id.generation() == u32::MAX {
                    return Err(DocumentError::InvalidHistory(format!(
                        "revision {parent_id} has the highest possible generation"
                    )));
                }
                Some(as_u32(i)?)
            }
        };
        let id = RevId::compute(parent, deleted, &body);
        if self.contains(&id) {
            return Err(DocumentError::Conflict);
        }
        self.next_index()?;
        self.revs.push(Revision {
            id: id.clone(),
            parent: parent_index,
            deleted,
            conflict: false,
            closed: false,
            sequence,
            body: Some(body),
        });
        Ok(id)
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
        validate_history(history)?;
        let attachment = self.find_attachment(history);
        if let Some((0, i)) = attachment {
            if let Some(rev) = self.revs.get_mut(i) {
                if rev.body.is_none() {
                    rev.body = body;
                }
                return Ok(InsertOutcome {
                    added: 0,
                    common_ancestor: Some(rev.id.clone()),
                    conflict: false,
                });
            }
        }
        let (added, parent_index) = match attachment {
            Some((k, i)) => (k, Some(i)),
            None => (history.len(), None),
        };
        let parent_is_conflict = parent_index
            .and_then(|i| self.revs.get(i))
            .is_some_and(|rev| rev.conflict);
        let conflict = match mode {
            InsertMode::NoConflicts => {
                let allowed = match parent_index {
                    Some(i) => !self.has_child(i),
                    None => self.revs.is_empty(),
                };
                if !allowed {
                    return Err(DocumentError::Conflict);
                }
                // Extending a leaf of a conflicting branch keeps extending that conflict.
                parent_is_conflict
            }
            InsertMode::AllowConflicts => {
                parent_is_conflict
                    || (!self.revs.is_empty() && parent_index != self.current_index())
            }
        };
        if u32::try_from(self.revs.len() + added).is_err() {
            return Err(DocumentError::InvalidHistory(
                "revision tree would be too large".to_owned(),
            ));
        }
        let common_ancestor = parent_index
            .and_then(|i| self.revs.get(i))
            .map(|r| r.id.clone());
        let mut parent = match parent_index {
            Some(i) => Some(as_u32(i)?),
            None => None,
        };
        let mut body = body;
        self.revs.reserve(added);
        for k in (0..added).rev() {
            let Some(id) = history.get(k) else { break };
            let newest = k == 0;
            let own = self.next_index()?;
            self.revs.push(Revision {
                id: id.clone(),
                parent,
                deleted: newest && deleted,
                conflict,
                closed: false,
                sequence,
                body: if newest { body.take() } else { None },
            });
            parent = Some(own);
        }
        Ok(InsertOutcome {
            added,
            common_ancestor,
            conflict,
        })
    }

    /// Replaces (or removes, with `None`) the kept body of a revision.
    pub fn set_body(&mut self, id: &RevId, body: Option<Bytes>) -> Result<(), DocumentError> {
        let rev = self
            .index_of(id)
            .and_then(|i| self.revs.get_mut(i))
            .ok_or_else(|| DocumentError::RevisionNotFound(id.to_string()))?;
        rev.body = body;
        Ok(())
    }

    /// Removes every revision that is `max_depth` or more generations above all of its
    /// leaf descendants, except remote ancestors ([`RevTree::remote_ancestor`]) and the
    /// revisions between them and their leaves. Never removes a leaf, and never makes one:
    /// a remote ancestor cut off from its descendants would be a leaf of its own, which
    /// could outrank the current revision, and the history of the next push would no
    /// longer reach it. Returns how many revisions were removed.
    pub fn prune(&mut self, max_depth: u32) -> usize {
        // Distance from each revision to its nearest leaf descendant. Children come after
        // their parents, so one backward pass sees every child before its parent.
        let mut distance = vec![u32::MAX; self.revs.len()];
        for i in (0..self.revs.len()).rev() {
            let Some(rev) = self.revs.get(i) else {
                continue;
            };
            let own = match distance.get_mut(i) {
                Some(d) => {
                    if *d == u32::MAX {
                        *d = 0; // no child has lowered it: a leaf
                    }
                    *d
                }
                None => continue,
            };
            if let Some(d) = rev.parent.and_then(|p| distance.get_mut(idx(p))) {
                *d = (*d).min(own.saturating_add(1));
            }
        }
        // Remote ancestors and their descendants. Parents come before their children, so
        // one forward pass sees every parent first.
        let marked = self.marked_indexes();
        let mut from_marked = vec![false; self.revs.len()];
        for (i, rev) in self.revs.iter().enumerate() {
            let inherited = rev
                .parent
                .and_then(|p| from_marked.get(idx(p)).copied())
                .unwrap_or(false);
            if let Some(f) = from_marked.get_mut(i) {
                *f = inherited || marked.contains(&i);
            }
        }
        let keep: Vec<bool> = distance
            .iter()
            .zip(&from_marked)
            .map(|(&d, &from_marked)| d < max_depth || d == 0 || from_marked)
            .collect();
        self.retain_indexes(&keep)
    }

    /// Drops bodies no longer needed: keeps those of every leaf, of the `keep_ancestors`
    /// nearest ancestors of the current revision, and of every remote ancestor
    /// ([`RevTree::remote_ancestor`]).
    pub fn drop_old_bodies(&mut self, keep_ancestors: usize) {
        let has_children = HasChildren::of(&self.revs);
        let mut keep: Vec<bool> = (0..self.revs.len()).map(|i| !has_children.get(i)).collect();
        for i in self.marked_indexes() {
            if let Some(k) = keep.get_mut(i) {
                *k = true;
            }
        }
        let mut next = self.current_index();
        let mut ancestors_left = keep_ancestors;
        while let Some(i) = next {
            next = None;
            if let Some(k) = keep.get_mut(i) {
                *k = true;
            }
            if ancestors_left > 0 {
                if let Some(p) = self.revs.get(i).and_then(|rev| rev.parent) {
                    ancestors_left -= 1;
                    next = Some(idx(p));
                }
            }
        }
        for (rev, keep) in self.revs.iter_mut().zip(keep) {
            if !keep {
                rev.body = None;
            }
        }
    }

    /// Removes a leaf and its ancestors up to (not including) the first ancestor that has
    /// other children: the branch disappears as if never received. Returns how many revisions
    /// were removed.
    pub fn remove_branch(&mut self, leaf: &RevId) -> Result<usize, DocumentError> {
        let start = self
            .index_of(leaf)
            .ok_or_else(|| DocumentError::RevisionNotFound(leaf.to_string()))?;
        let mut child_count = vec![0u32; self.revs.len()];
        for rev in &self.revs {
            if let Some(c) = rev.parent.and_then(|p| child_count.get_mut(idx(p))) {
                *c += 1;
            }
        }
        if child_count.get(start).copied().unwrap_or(0) != 0 {
            return Err(DocumentError::InvalidHistory(format!(
                "revision {leaf} is not a leaf"
            )));
        }
        let mut keep = vec![true; self.revs.len()];
        let mut next = Some(start);
        while let Some(i) = next {
            if let Some(k) = keep.get_mut(i) {
                *k = false;
            }
            next = self
                .revs
                .get(i)
                .and_then(|rev| rev.parent)
                .map(idx)
                .filter(|&p| child_count.get(p).copied().unwrap_or(0) <= 1);
        }
        Ok(self.retain_indexes(&keep))
    }

    /// Clears the *conflict* flag of a revision and of all its ancestors: the branch it ends
    /// is no longer a pulled conflict (conflict resolution kept it). Returns how many
    /// revisions were flagged.
    pub fn clear_conflict(&mut self, rev: &RevId) -> Result<usize, DocumentError> {
        let mut next = Some(
            self.index_of(rev)
                .ok_or_else(|| DocumentError::RevisionNotFound(rev.to_string()))?,
        );
        let mut cleared = 0;
        while let Some(r) = next.and_then(|i| self.revs.get_mut(i)) {
            if r.conflict {
                r.conflict = false;
                cleared += 1;
            }
            next = r.parent.map(idx);
        }
        Ok(cleared)
    }

    /// Closes the branch ending at `leaf` (a losing branch of conflict resolution that must
    /// stay in the tree, for example because a remote is known to have it): adds a tombstone
    /// child flagged *closed*, with an empty body, stored at `sequence`. A closed tombstone
    /// ranks below every other leaf when choosing the current revision. Returns its ID.
    ///
    /// Fails like [`RevTree::add_child`] when `leaf` is unknown or has children.
    pub fn close_branch(&mut self, leaf: &RevId, sequence: u64) -> Result<RevId, DocumentError> {
        let id = self.add_child(Some(leaf), Bytes::from_static(b"{}"), true, sequence)?;
        if let Some(rev) = self.index_of(&id).and_then(|i| self.revs.get_mut(i)) {
            rev.closed = true;
        }
        Ok(id)
    }

    /// Encodes the tree (IDs, parents, flags, sequences, kept bodies) into a compact binary
    /// form for storage.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::new();
        self.encode_into(&mut out);
        out
    }

    /// Appends the encoding of [`RevTree::encode`] to `out`, reusing its allocation.
    pub fn encode_into(&self, out: &mut Vec<u8>) {
        let mut size = 1 + varint_len(self.revs.len() as u64);
        for rev in &self.revs {
            let id_len = rev.id.as_str().len();
            size += varint_len(id_len as u64)
                + id_len
                + varint_len(rev.parent.map_or(0, |p| u64::from(p) + 1))
                + 1
                + varint_len(rev.sequence);
            if let Some(body) = &rev.body {
                size += varint_len(body.len() as u64) + body.len();
            }
        }
        let marks: Vec<(u32, usize)> = self
            .remotes
            .iter()
            .filter_map(|(remote, rev)| self.index_of(rev).map(|i| (*remote, i)))
            .collect();
        if !marks.is_empty() {
            size += 1 + varint_len(marks.len() as u64);
            for (remote, i) in &marks {
                size += varint_len(u64::from(*remote)) + varint_len(*i as u64);
            }
        }
        let start = out.len();
        out.reserve(size);
        out.push(FORMAT_VERSION);
        put_varint(out, self.revs.len() as u64);
        for rev in &self.revs {
            let id = rev.id.as_str().as_bytes();
            put_varint(out, id.len() as u64);
            out.extend_from_slice(id);
            put_varint(out, rev.parent.map_or(0, |p| u64::from(p) + 1));
            let mut flags = 0u8;
            if rev.deleted {
                flags |= FLAG_DELETED;
            }
            if rev.conflict {
                flags |= FLAG_CONFLICT;
            }
            if rev.closed {
                flags |= FLAG_CLOSED;
            }
            if rev.body.is_some() {
                flags |= FLAG_HAS_BODY;
            }
            out.push(flags);
            put_varint(out, rev.sequence);
            if let Some(body) = &rev.body {
                put_varint(out, body.len() as u64);
                out.extend_from_slice(body);
            }
        }
        if !marks.is_empty() {
            out.push(SECTION_REMOTES);
            put_varint(out, marks.len() as u64);
            for (remote, i) in &marks {
                put_varint(out, u64::from(*remote));
                put_varint(out, *i as u64);
            }
        }
        debug_assert_eq!(out.len() - start, size);
    }

    /// Decodes what [`RevTree::encode`] produced; refuses anything malformed with
    /// [`DocumentError::CorruptTree`], never panics.
    pub fn decode(bytes: &[u8]) -> Result<RevTree, DocumentError> {
        let mut reader = Reader { rest: bytes };
        if reader.byte()? != FORMAT_VERSION {
            return Err(DocumentError::CorruptTree("unknown format version"));
        }
        let count = reader.varint()?;
        // Every revision takes at least MIN_ENCODED_REVISION bytes: never trust the count
        // for more capacity than the input could hold.
        if count > (reader.rest.len() / MIN_ENCODED_REVISION) as u64 {
            return Err(DocumentError::CorruptTree(
                "revision count exceeds the data",
            ));
        }
        let count = usize::try_from(count)
            .map_err(|_| DocumentError::CorruptTree("revision count exceeds the data"))?;
        let mut revs: Vec<Revision> = Vec::with_capacity(count);
        for own in 0..count {
            let id_len = reader.varint()?;
            let id_text = std::str::from_utf8(reader.take(id_len)?)
                .map_err(|_| DocumentError::CorruptTree("revision ID is not UTF-8"))?;
            let id = RevId::parse(id_text)
                .map_err(|_| DocumentError::CorruptTree("invalid revision ID"))?;
            let parent = match reader.varint()? {
                0 => None,
                p => {
                    let p = usize::try_from(p - 1)
                        .ok()
                        .filter(|&p| p < own)
                        .ok_or(DocumentError::CorruptTree("parent index out of range"))?;
                    let parent_generation = revs.get(p).map_or(0, |r| r.id.generation());
                    if parent_generation.checked_add(1) != Some(id.generation()) {
                        return Err(DocumentError::CorruptTree(
                            "generation is not the parent's plus one",
                        ));
                    }
                    Some(
                        as_u32(p)
                            .map_err(|_| DocumentError::CorruptTree("parent index out of range"))?,
                    )
                }
            };
            let flags = reader.byte()?;
            if flags & !FLAG_ALL != 0 {
                return Err(DocumentError::CorruptTree("unknown revision flags"));
            }
            let sequence = reader.varint()?;
            let body = if flags & FLAG_HAS_BODY != 0 {
                let len = reader.varint()?;
                Some(Bytes::copy_from_slice(reader.take(len)?))
            } else {
                None
            };
            revs.push(Revision {
                id,
                parent,
                deleted: flags & FLAG_DELETED != 0,
                conflict: flags & FLAG_CONFLICT != 0,
                closed: flags & FLAG_CLOSED != 0,
                sequence,
                body,
            });
        }
        let mut remotes = Vec::new();
        if !reader.rest.is_empty() {
            if reader.byte()? != SECTION_REMOTES {
                return Err(DocumentError::CorruptTree("trailing bytes"));
            }
            let marks = reader.varint()?;
            // Each mark takes at least two bytes.
            if marks == 0 || marks > (reader.rest.len() / 2) as u64 {
                return Err(DocumentError::CorruptTree("invalid remote-ancestor count"));
            }
            for _ in 0..marks {
                let remote = u32::try_from(reader.varint()?)
                    .map_err(|_| DocumentError::CorruptTree("remote number out of range"))?;
                if remotes
                    .last()
                    .is_some_and(|(last, _): &(u32, RevId)| *last >= remote)
                {
                    return Err(DocumentError::CorruptTree(
                        "remote numbers not strictly increasing",
                    ));
                }
                let rev = usize::try_from(reader.varint()?)
                    .ok()
                    .and_then(|i| revs.get(i))
                    .ok_or(DocumentError::CorruptTree(
                        "remote-ancestor revision out of range",
                    ))?;
                remotes.push((remote, rev.id.clone()));
            }
            if !reader.rest.is_empty() {
                return Err(DocumentError::CorruptTree("trailing bytes"));
            }
        }
        if revs.len() > 1 {
            let mut ids: Vec<&RevId> = revs.iter().map(|r| &r.id).collect();
            ids.sort_unstable();
            if ids.windows(2).any(|pair| pair.first() == pair.get(1)) {
                return Err(DocumentError::CorruptTree("duplicate revision ID"));
            }
        }
        Ok(RevTree { revs, remotes })
    }

    /// Positions of the revisions marked as remote ancestors.
    fn marked_indexes(&self) -> Vec<usize> {
        self.remotes
            .iter()
            .filter_map(|(_, rev)| self.index_of(rev))
            .collect()
    }

    /// Position of the revision with this ID.
    fn index_of(&self, id: &RevId) -> Option<usize> {
        self.revs.iter().position(|rev| rev.id == *id)
    }

    /// Whether some revision has the one at `i` as its parent.
    fn has_child(&self, i: usize) -> bool {
        self.revs.iter().any(|rev| rev.parent.map(idx) == Some(i))
    }

    /// The index the next pushed revision will get, if it fits a parent link.
    fn next_index(&self) -> Result<u32, DocumentError> {
        as_u32(self.revs.len())
    }

    /// Position of the current revision (see [`RevTree::current`]).
    fn current_index(&self) -> Option<usize> {
        let has_children = HasChildren::of(&self.revs);
        // Higher is better: leaf, not conflict, live, not closed; then the higher revID.
        let rank = |i: usize, rev: &Revision| {
            (
                !has_children.get(i),
                !rev.conflict,
                !rev.deleted,
                !rev.closed,
            )
        };
        let mut best: Option<(usize, &Revision)> = None;
        for (i, rev) in self.revs.iter().enumerate() {
            let better = match best {
                None => true,
                Some((b, best_rev)) => rank(i, rev)
                    .cmp(&rank(b, best_rev))
                    .then_with(|| rev.id.cmp(&best_rev.id))
                    .is_gt(),
            };
            if better {
                best = Some((i, rev));
            }
        }
        best.map(|(i, _)| i)
    }

    /// Finds the newest history entry present in the tree: `(position in history, index in
    /// the tree)`. `history` must have consecutive generations (see [`validate_history`]).
    fn find_attachment(&self, history: &[RevId]) -> Option<(usize, usize)> {
        let newest = history.first()?.generation();
        let mut found: Option<(usize, usize)> = None;
        for (i, rev) in self.revs.iter().enumerate() {
            // Generations in `history` are consecutive, so each tree revision has at most
            // one position where it could appear.
            let Some(k) = newest
                .checked_sub(rev.id.generation())
                .and_then(|k| usize::try_from(k).ok())
            else {
                continue;
            };
            if history.get(k) == Some(&rev.id) && found.is_none_or(|(best, _)| k < best) {
                found = Some((k, i));
            }
        }
        found
    }

    /// Keeps the revisions whose `keep` entry is true (in order), re-linking parents: a
    /// revision whose parent goes becomes a root. Returns how many were removed.
    fn retain_indexes(&mut self, keep: &[bool]) -> usize {
        let before = self.revs.len();
        let mut new_index: Vec<Option<u32>> = Vec::with_capacity(before);
        let mut next = 0u32;
        for &k in keep.iter().chain(std::iter::repeat(&true)).take(before) {
            if k {
                new_index.push(Some(next));
                next += 1;
            } else {
                new_index.push(None);
            }
        }
        if next as usize == before {
            return 0;
        }
        let mut position = 0usize;
        self.revs.retain_mut(|rev| {
            let kept = new_index.get(position).copied().flatten().is_some();
            position += 1;
            if kept {
                rev.parent = rev
                    .parent
                    .and_then(|p| new_index.get(idx(p)).copied().flatten());
            }
            kept
        });
        let revs = &self.revs;
        self.remotes
            .retain(|(_, rev)| revs.iter().any(|r| r.id == *rev));
        before - self.revs.len()
    }
}

const FORMAT_VERSION: u8 = 1;
const FLAG_DELETED: u8 = 1 << 0;
const FLAG_CONFLICT: u8 = 1 << 1;
const FLAG_CLOSED: u8 = 1 << 2;
const FLAG_HAS_BODY: u8 = 1 << 3;
const FLAG_ALL: u8 = FLAG_DELETED | FLAG_CONFLICT | FLAG_CLOSED | FLAG_HAS_BODY;
/// Tag of the optional remote-ancestor section after the revisions.
const SECTION_REMOTES: u8 = 1;
/// The smallest encoded revision: ID length, `1-ab` (4 bytes), parent, flags, sequence.
const MIN_ENCODED_REVISION: usize = 8;

/// A stored parent link as a `Vec` index.
fn idx(parent: u32) -> usize {
    parent as usize
}

/// A `Vec` index as a stored parent link.
fn as_u32(i: usize) -> Result<u32, DocumentError> {
    u32::try_from(i)
        .map_err(|_| DocumentError::InvalidHistory("revision tree too large".to_owned()))
}

/// Checks that a history is non-empty with generations decreasing by exactly one.
fn validate_history(history: &[RevId]) -> Result<(), DocumentError> {
    if history.is_empty() {
        return Err(DocumentError::InvalidHistory("empty history".to_owned()));
    }
    for pair in history.windows(2) {
        if let [newer, older] = pair {
            if older.generation().checked_add(1) != Some(newer.generation()) {
                return Err(DocumentError::InvalidHistory(format!(
                    "{older} cannot be the parent of {newer}: generations must decrease by one"
                )));
            }
        }
    }
    Ok(())
}

/// Which revisions have at least one child; a bit mask for small trees (no allocation).
enum HasChildren {
    Small(u64),
    Large(Vec<bool>),
}

impl HasChildren {
    fn of(revs: &[Revision]) -> HasChildren {
        if revs.len() <= 64 {
            let mut mask = 0u64;
            for p in revs.iter().filter_map(|rev| rev.parent) {
                mask |= 1u64.checked_shl(p).unwrap_or(0);
            }
            HasChildren::Small(mask)
        } else {
            let mut flags = vec![false; revs.len()];
            for p in revs.iter().filter_map(|rev| rev.parent) {
                if let Some(flag) = flags.get_mut(idx(p)) {
                    *flag = true;
                }
            }
            HasChildren::Large(flags)
        }
    }

    fn get(&self, i: usize) -> bool {
        match self {
            HasChildren::Small(mask) => u32::try_from(i)
                .ok()
                .and_then(|i| mask.checked_shr(i))
                .is_some_and(|m| m & 1 == 1),
            HasChildren::Large(flags) => flags.get(i).copied().unwrap_or(false),
        }
    }
}

/// Bytes taken by `value` as a LEB128 varint.
fn varint_len(value: u64) -> usize {
    let bits = 64 - value.leading_zeros() as usize;
    bits.div_ceil(7).max(1)
}

/// Appends `value` as a LEB128 varint.
fn put_varint(out: &mut Vec<u8>, mut value: u64) {
    while value >= 0x80 {
        out.push((value as u8) | 0x80);
        value >>= 7;
    }
    out.push(value as u8);
}

/// A bounds-checked cursor over encoded bytes.
struct Reader<'a> {
    rest: &'a [u8],
}

impl<'a> Reader<'a> {
    fn byte(&mut self) -> Result<u8, DocumentError> {
        let (&first, rest) = self
            .rest
            .split_first()
            .ok_or(DocumentError::CorruptTree("truncated data"))?;
        self.rest = rest;
        Ok(first)
    }

    fn varint(&mut self) -> Result<u64, DocumentError> {
        let mut value = 0u64;
        let mut shift = 0u32;
        loop {
            let byte = self.byte()?;
            let low = u64::from(byte & 0x7f);
            if shift == 63 && low > 1 {
                return Err(DocumentError::CorruptTree("varint overflow"));
            }
            if byte == 0 && shift > 0 {
                return Err(DocumentError::CorruptTree("non-minimal varint"));
            }
            value |= low << shift;
            if byte & 0x80 == 0 {
                return Ok(value);
            }
            shift += 7;
            if shift > 63 {
                return Err(DocumentError::CorruptTree("varint overflow"));
            }
        }
    }

    fn take(&mut self, len: u64) -> Result<&'a [u8], DocumentError> {
        let len = usize::try_from(len)
            .ok()
            .filter(|&len| len <= self.rest.len())
            .ok_or(DocumentError::CorruptTree("length exceeds the data"))?;
        let (taken, rest) = self.rest.split_at(len);
        self.rest = rest;
        Ok(taken)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rid(text: &str) -> RevId {
        RevId::parse(text).unwrap()
    }

    fn ids(list: &[&str]) -> Vec<RevId> {
        list.iter().map(|t| rid(t)).collect()
    }

    fn body(text: &str) -> Bytes {
        Bytes::copy_from_slice(text.as_bytes())
    }

    /// A local chain of `n` revisions made with `add_child`; returns the tree and the IDs,
    /// oldest first.
    fn local_chain(n: usize) -> (RevTree, Vec<RevId>) {
        let mut tree = RevTree::new();
        let mut made: Vec<RevId> = Vec::new();
        for i in 0..n {
            let id = tree
                .add_child(
                    made.last(),
                    body(&format!(r#"{{"n":{i}}}"#)),
                    false,
                    i as u64 + 1,
                )
                .unwrap();
            made.push(id);
        }
        (tree, made)
    }

    fn current_id(tree: &RevTree) -> String {
        tree.current().unwrap().id().to_string()
    }

    #[test]
    fn add_child_builds_a_chain_and_the_newest_is_current() {
        let mut tree = RevTree::new();
        assert!(tree.current().is_none());
        let r1 = tree
            .add_child(None, body(r#"{"age":30,"name":"Alice"}"#), false, 1)
            .unwrap();
        assert_eq!(r1.as_str(), "1-291c8a3c890453134009043aa089fcd9b5f8f217");
        let r2 = tree
            .add_child(Some(&r1), body(r#"{"age":31,"name":"Alice"}"#), false, 2)
            .unwrap();
        assert_eq!(r2.as_str(), "2-a5adf9c3107fd2feb539362efcf947efbd2284ff");
        let r3 = tree.add_child(Some(&r2), body("{}"), true, 3).unwrap();
        assert_eq!(r3.as_str(), "3-7e8a4e770e241993e449409d56e2344e688f9418");

        assert_eq!(tree.len(), 3);
        assert_eq!(tree.current().unwrap().id(), &r3);
        assert!(tree.current().unwrap().is_deleted());
        assert_eq!(tree.current().unwrap().sequence(), 3);
        assert_eq!(tree.history(&r3), vec![&r3, &r2, &r1]);
        assert_eq!(tree.parent(&r2).unwrap().id(), &r1);
        assert!(tree.parent(&r1).is_none());
        assert_eq!(tree.leaves().len(), 1);
        assert!(!tree.is_conflicted());
        assert_eq!(
            tree.get(&r2).unwrap().body().unwrap(),
            &body(r#"{"age":31,"name":"Alice"}"#)
        );
    }

    #[test]
    fn add_child_refusals() {
        let (mut tree, made) = local_chain(2);
        // A root while the tree is not empty.
        assert_eq!(
            tree.add_child(None, body("{}"), false, 9),
            Err(DocumentError::Conflict)
        );
        // A non-leaf parent.
        assert_eq!(
            tree.add_child(Some(&made[0]), body("{}"), false, 9),
            Err(DocumentError::Conflict)
        );
        // An unknown parent.
        assert_eq!(
            tree.add_child(Some(&rid("7-abcd")), body("{}"), false, 9),
            Err(DocumentError::RevisionNotFound("7-abcd".to_owned()))
        );
        assert_eq!(tree.len(), 2);
    }

    #[test]
    fn add_child_with_an_existing_id_is_a_conflict() {
        // The same edit computed twice: build a tree where the would-be child already exists
        // as a disconnected root (possible after pruning), then repeat the edit.
        let parent = rid("1-291c8a3c890453134009043aa089fcd9b5f8f217");
        let child = RevId::compute(Some(&parent), false, b"{}");
        let mut tree = RevTree::new();
        tree.insert_history(
            std::slice::from_ref(&child),
            None,
            false,
            1,
            InsertMode::NoConflicts,
        )
        .unwrap();
        tree.insert_history(
            std::slice::from_ref(&parent),
            None,
            false,
            2,
            InsertMode::AllowConflicts,
        )
        .unwrap();
        assert_eq!(
            tree.add_child(Some(&parent), body("{}"), false, 3),
            Err(DocumentError::Conflict)
        );
    }

    #[test]
    fn conflicting_branch_stays_non_current() {
        let (mut tree, made) = local_chain(3);
        let local = made[2].clone();
        // Remote branch off revision 2, higher generation than the local leaf.
        let history = vec![rid("4-ffff"), rid("3-ffff"), made[1].clone()];
        let outcome = tree
            .insert_history(
                &history,
                Some(body(r#"{"r":1}"#)),
                false,
                10,
                InsertMode::AllowConflicts,
            )
            .unwrap();
        assert_eq!(
            outcome,
            InsertOutcome {
                added: 2,
                common_ancestor: Some(made[1].clone()),
                conflict: true
            }
        );
        assert_eq!(tree.len(), 5);
        assert!(tree.is_conflicted());
        assert_eq!(tree.current().unwrap().id(), &local);
        let remote = tree.get(&rid("4-ffff")).unwrap();
        assert!(remote.is_conflict());
        assert_eq!(remote.sequence(), 10);
        assert_eq!(remote.body().unwrap(), &body(r#"{"r":1}"#));
        let middle = tree.get(&rid("3-ffff")).unwrap();
        assert!(middle.is_conflict());
        assert!(middle.body().is_none());
        assert_eq!(middle.sequence(), 10);
        assert!(!tree.get(&local).unwrap().is_conflict());
        assert_eq!(tree.parent(&rid("3-ffff")).unwrap().id(), &made[1]);

        // Extending the conflicting branch keeps it flagged (its leaf is not current).
        let outcome = tree
            .insert_history(
                &ids(&["5-aaaa", "4-ffff", "3-ffff"]),
                None,
                false,
                11,
                InsertMode::AllowConflicts,
            )
            .unwrap();
        assert!(outcome.conflict);
        assert!(tree.get(&rid("5-aaaa")).unwrap().is_conflict());
        assert_eq!(tree.current().unwrap().id(), &local);

        // Extending the current revision is not a conflict.
        let next_gen = format!("4-{}", "ab".repeat(20));
        let outcome = tree
            .insert_history(
                &[rid(&next_gen), local.clone()],
                Some(body("{}")),
                false,
                12,
                InsertMode::AllowConflicts,
            )
            .unwrap();
        assert!(!outcome.conflict);
        assert_eq!(current_id(&tree), next_gen);

        // A history sharing nothing becomes a new root, flagged conflict.
        let outcome = tree
            .insert_history(
                &ids(&["2-cc", "1-cc"]),
                None,
                false,
                13,
                InsertMode::AllowConflicts,
            )
            .unwrap();
        assert_eq!(
            outcome,
            InsertOutcome {
                added: 2,
                common_ancestor: None,
                conflict: true
            }
        );
        assert!(tree.parent(&rid("1-cc")).is_none());
        assert!(tree.get(&rid("1-cc")).unwrap().is_conflict());
        assert_eq!(current_id(&tree), next_gen);
    }

    #[test]
    fn extending_a_conflict_flagged_revision_stays_flagged() {
        // Local chain 1..3 plus a pulled branch 3-ff; then the local branch is removed, so
        // the only leaf (and the current revision) is the flagged 3-ff.
        let (mut tree, made) = local_chain(3);
        tree.insert_history(
            &[rid("3-ff"), made[1].clone()],
            None,
            false,
            4,
            InsertMode::AllowConflicts,
        )
        .unwrap();
        assert_eq!(tree.remove_branch(&made[2]), Ok(1));
        assert_eq!(current_id(&tree), "3-ff");
        assert!(tree.current().unwrap().is_conflict());

        for (id, mode) in [
            ("4-ff", InsertMode::AllowConflicts),
            ("5-ff", InsertMode::NoConflicts),
        ] {
            let parent = tree.current().unwrap().id().clone();
            let outcome = tree
                .insert_history(&[rid(id), parent.clone()], None, false, 5, mode)
                .unwrap();
            assert_eq!(
                outcome,
                InsertOutcome {
                    added: 1,
                    common_ancestor: Some(parent),
                    conflict: true
                },
                "{mode:?}"
            );
            assert!(tree.get(&rid(id)).unwrap().is_conflict());
            assert_eq!(current_id(&tree), id);
        }
        // A local edit on top of it is not flagged.
        let edit = tree
            .add_child(Some(&rid("5-ff")), body("{}"), false, 6)
            .unwrap();
        assert!(!tree.get(&edit).unwrap().is_conflict());
    }

    #[test]
    fn no_conflicts_mode_refuses_branches() {
        let (mut tree, made) = local_chain(3);
        // Attachment point is not a leaf.
        let history = vec![rid("3-ffff"), made[1].clone()];
        assert_eq!(
            tree.insert_history(&history, None, false, 5, InsertMode::NoConflicts),
            Err(DocumentError::Conflict)
        );
        // Nothing in common with a non-empty tree.
        assert_eq!(
            tree.insert_history(
                &ids(&["2-ff", "1-ff"]),
                None,
                false,
                5,
                InsertMode::NoConflicts
            ),
            Err(DocumentError::Conflict)
        );
        assert_eq!(tree.len(), 3);
        // Extending the leaf is fine.
        let outcome = tree
            .insert_history(
                &[rid("5-ee"), rid("4-ee"), made[2].clone(), made[1].clone()],
                Some(body("{}")),
                false,
                6,
                InsertMode::NoConflicts,
            )
            .unwrap();
        assert_eq!(
            outcome,
            InsertOutcome {
                added: 2,
                common_ancestor: Some(made[2].clone()),
                conflict: false
            }
        );
        assert_eq!(current_id(&tree), "5-ee");
        // Into an empty tree, anything goes.
        let mut empty = RevTree::new();
        let outcome = empty
            .insert_history(
                &ids(&["3-aa", "2-aa"]),
                Some(body("{}")),
                true,
                1,
                InsertMode::NoConflicts,
            )
            .unwrap();
        assert_eq!(
            outcome,
            InsertOutcome {
                added: 2,
                common_ancestor: None,
                conflict: false
            }
        );
        assert!(empty.current().unwrap().is_deleted());
        assert!(!empty.get(&rid("2-aa")).unwrap().is_deleted());
    }

    #[test]
    fn deleted_leaf_loses_to_live_leaf() {
        // Two unflagged leaves (only decode can build that directly): the tombstone has the
        // higher revID but the live leaf wins.
        let mut bytes = vec![1u8, 3];
        for (id, parent, flags) in [
            ("1-aa", 0u8, 0u8),
            ("2-ff", 1, FLAG_DELETED),
            ("2-00", 1, 0),
        ] {
            bytes.push(id.len() as u8);
            bytes.extend_from_slice(id.as_bytes());
            bytes.extend_from_slice(&[parent, flags, 1]);
        }
        let tree = RevTree::decode(&bytes).unwrap();
        assert_eq!(current_id(&tree), "2-00");
        assert!(!tree.is_conflicted(), "only one live leaf");

        // Through the API: a local branch and a pulled (conflict-flagged) one.
        let (mut local, made) = local_chain(2);
        local
            .insert_history(
                &[rid("2-ffff"), made[0].clone()],
                Some(body("{}")),
                false,
                3,
                InsertMode::AllowConflicts,
            )
            .unwrap();
        assert!(local.is_conflicted());
        // Delete the local leaf: the conflict branch is now the only live leaf, but it keeps
        // its flag, so the unflagged local tombstone is still current (flag beats liveness)…
        let tomb = local
            .add_child(Some(&made[1]), body("{}"), true, 4)
            .unwrap();
        assert!(!local.is_conflicted());
        assert_eq!(local.current().unwrap().id(), &tomb);
        // …until the conflict branch is extended locally (resolution): the new revision is
        // not flagged, so it wins.
        let merged = local
            .add_child(Some(&rid("2-ffff")), body(r#"{"m":1}"#), false, 5)
            .unwrap();
        assert!(!local.get(&merged).unwrap().is_conflict());
        assert_eq!(local.current().unwrap().id(), &merged);
    }

    #[test]
    fn higher_revid_wins_among_equal_generations() {
        let mut bytes = vec![1u8, 4];
        for (id, parent) in [("1-aa", 0u8), ("2-0b", 1), ("2-c0", 1), ("2-a1", 1)] {
            bytes.push(id.len() as u8);
            bytes.extend_from_slice(id.as_bytes());
            bytes.extend_from_slice(&[parent, 0, 1]);
        }
        let tree = RevTree::decode(&bytes).unwrap();
        assert_eq!(current_id(&tree), "2-c0");
        assert!(tree.is_conflicted());
        assert_eq!(tree.leaves().len(), 3);
        // A higher generation beats a higher digest.
        let mut bytes = vec![1u8, 3];
        for (id, parent) in [("1-aa", 0u8), ("2-ff", 1), ("1-00", 0)] {
            bytes.push(id.len() as u8);
            bytes.extend_from_slice(id.as_bytes());
            bytes.extend_from_slice(&[parent, 0, 1]);
        }
        let tree = RevTree::decode(&bytes).unwrap();
        assert_eq!(current_id(&tree), "2-ff");
    }

    #[test]
    fn closed_and_conflict_flags_rank_below_live_unflagged() {
        // Leaves: 3-ff (closed), 2-ee (conflict), 2-01 (plain, lowest ID): 2-01 wins.
        let mut bytes = vec![1u8, 5];
        for (id, parent, flags) in [
            ("1-aa", 0u8, 0u8),
            ("2-aa", 1, 0),
            ("3-ff", 2, FLAG_CLOSED),
            ("2-ee", 1, FLAG_CONFLICT),
            ("2-01", 1, 0),
        ] {
            bytes.push(id.len() as u8);
            bytes.extend_from_slice(id.as_bytes());
            bytes.extend_from_slice(&[parent, flags, 1]);
        }
        let tree = RevTree::decode(&bytes).unwrap();
        assert_eq!(current_id(&tree), "2-01");
        assert!(tree.get(&rid("3-ff")).unwrap().is_closed());
    }

    #[test]
    fn invalid_histories_are_refused() {
        let mut tree = RevTree::new();
        for history in [
            ids(&[]),
            ids(&["3-aa", "1-aa"]),
            ids(&["2-aa", "2-bb"]),
            ids(&["1-aa", "2-aa"]),
        ] {
            let err = tree
                .insert_history(&history, None, false, 1, InsertMode::AllowConflicts)
                .unwrap_err();
            assert!(
                matches!(err, DocumentError::InvalidHistory(_)),
                "{history:?}: {err:?}"
            );
        }
        assert!(tree.is_empty());
    }

    #[test]
    fn inserting_a_present_revision_adds_nothing_and_fills_the_body() {
        let mut tree = RevTree::new();
        tree.insert_history(
            &ids(&["2-aa", "1-aa"]),
            None,
            false,
            1,
            InsertMode::AllowConflicts,
        )
        .unwrap();
        assert!(tree.get(&rid("2-aa")).unwrap().body().is_none());
        let outcome = tree
            .insert_history(
                &ids(&["2-aa", "1-aa"]),
                Some(body("{}")),
                false,
                7,
                InsertMode::NoConflicts,
            )
            .unwrap();
        assert_eq!(
            outcome,
            InsertOutcome {
                added: 0,
                common_ancestor: Some(rid("2-aa")),
                conflict: false
            }
        );
        assert_eq!(tree.len(), 2);
        assert_eq!(tree.get(&rid("2-aa")).unwrap().body().unwrap(), &body("{}"));
        // A kept body is not replaced; inserting a non-leaf again works in both modes.
        tree.insert_history(
            &ids(&["2-aa"]),
            Some(body("[1]")),
            false,
            8,
            InsertMode::AllowConflicts,
        )
        .unwrap();
        assert_eq!(tree.get(&rid("2-aa")).unwrap().body().unwrap(), &body("{}"));
        let outcome = tree
            .insert_history(&ids(&["1-aa"]), None, false, 9, InsertMode::NoConflicts)
            .unwrap();
        assert_eq!(outcome.added, 0);
        assert_eq!(tree.get(&rid("2-aa")).unwrap().sequence(), 1);
    }

    #[test]
    fn prune_keeps_max_depth_revisions_of_a_chain() {
        let (mut tree, made) = local_chain(30);
        assert_eq!(tree.prune(DEFAULT_MAX_DEPTH), 10);
        assert_eq!(tree.len(), 20);
        for (i, id) in made.iter().enumerate() {
            assert_eq!(tree.contains(id), i >= 10, "{id}");
        }
        assert!(
            tree.parent(&made[10]).is_none(),
            "oldest kept becomes a root"
        );
        assert_eq!(tree.history(&made[29]).len(), 20);
        assert_eq!(tree.current().unwrap().id(), &made[29]);
        assert_eq!(tree.prune(DEFAULT_MAX_DEPTH), 0);
        // The tree still encodes and decodes (parent links re-indexed correctly).
        assert_eq!(RevTree::decode(&tree.encode()).unwrap(), tree);
        // A chain of exactly max_depth loses nothing.
        let (mut short, _) = local_chain(20);
        assert_eq!(short.prune(20), 0);
    }

    #[test]
    fn prune_keeps_every_leaf_of_a_branched_tree() {
        let (mut tree, made) = local_chain(30);
        // A short branch off revision 2 and another off revision 25.
        let branch_a = vec![rid("3-aa"), made[1].clone()];
        let branch_b = vec![rid("27-bb"), rid("26-bb"), made[24].clone()];
        for history in [&branch_a, &branch_b] {
            tree.insert_history(
                history,
                Some(body("{}")),
                false,
                50,
                InsertMode::AllowConflicts,
            )
            .unwrap();
        }
        let removed = tree.prune(20);
        // made[k] (generation k + 1) is 26 - k above 27-bb and 29 - k above the main leaf,
        // so made[0..=6] are >= 20 above every leaf except that made[0] and made[1] are
        // within 2 of 3-aa: removed = made[2..=6].
        assert_eq!(removed, 5);
        for id in [&made[29], &rid("3-aa"), &rid("27-bb")] {
            assert!(tree.contains(id), "{id}");
        }
        assert_eq!(tree.leaves().len(), 3);
        assert!(tree.contains(&made[0]) && tree.contains(&made[1]));
        assert!(!tree.contains(&made[2]) && !tree.contains(&made[6]));
        assert!(tree.parent(&made[7]).is_none());
        assert_eq!(tree.parent(&made[8]).unwrap().id(), &made[7]);
        assert_eq!(tree.parent(&rid("3-aa")).unwrap().id(), &made[1]);
        assert_eq!(tree.parent(&rid("26-bb")).unwrap().id(), &made[24]);
        assert_eq!(RevTree::decode(&tree.encode()).unwrap(), tree);

        // Depth 1 keeps just the leaves.
        let mut leaves_only = tree.clone();
        leaves_only.prune(1);
        assert_eq!(leaves_only.len(), 3);
        assert!(leaves_only
            .revisions()
            .all(|r| leaves_only.parent(r.id()).is_none()));
    }

    #[test]
    fn drop_old_bodies_keeps_leaves_and_nearest_ancestors() {
        let (mut tree, made) = local_chain(5);
        tree.insert_history(
            &[rid("3-aa"), made[1].clone()],
            Some(body("{}")),
            false,
            9,
            InsertMode::AllowConflicts,
        )
        .unwrap();
        tree.drop_old_bodies(1);
        let with_body: Vec<String> = tree
            .revisions()
            .filter(|r| r.body().is_some())
            .map(|r| r.id().to_string())
            .collect();
        assert_eq!(
            with_body,
            vec![made[3].to_string(), made[4].to_string(), "3-aa".to_owned()]
        );
        tree.drop_old_bodies(0);
        assert!(tree.get(&made[3]).unwrap().body().is_none());
        assert!(tree.get(&made[4]).unwrap().body().is_some());
        assert!(tree.get(&rid("3-aa")).unwrap().body().is_some());

        let (mut chain, made) = local_chain(5);
        chain.drop_old_bodies(10);
        assert!(chain.revisions().all(|r| r.body().is_some()));
        chain.set_body(&made[0], None).unwrap();
        assert!(chain.get(&made[0]).unwrap().body().is_none());
        assert_eq!(
            chain.set_body(&rid("9-99"), None),
            Err(DocumentError::RevisionNotFound("9-99".to_owned()))
        );
    }

    #[test]
    fn remove_branch_removes_up_to_the_fork() {
        let (mut tree, made) = local_chain(3);
        tree.insert_history(
            &ids(&["5-bb", "4-bb", "3-bb"])
                .into_iter()
                .chain([made[1].clone()])
                .collect::<Vec<_>>(),
            None,
            false,
            9,
            InsertMode::AllowConflicts,
        )
        .unwrap();
        assert_eq!(tree.len(), 6);
        assert!(matches!(
            tree.remove_branch(&made[1]),
            Err(DocumentError::InvalidHistory(_))
        ));
        assert_eq!(
            tree.remove_branch(&rid("9-99")),
            Err(DocumentError::RevisionNotFound("9-99".to_owned()))
        );
        assert_eq!(tree.remove_branch(&rid("5-bb")), Ok(3));
        assert_eq!(tree.len(), 3);
        assert!(!tree.is_conflicted());
        assert_eq!(tree.history(&made[2]).len(), 3);
        assert_eq!(RevTree::decode(&tree.encode()).unwrap(), tree);

        // Removing the only branch empties the tree; the local branch can go too.
        let mut copy = tree.clone();
        assert_eq!(copy.remove_branch(&made[2]), Ok(3));
        assert!(copy.is_empty());

        // Removing the local branch leaves the other one, re-indexed.
        let (mut tree, made) = local_chain(3);
        tree.insert_history(
            &[rid("3-cc"), made[1].clone()],
            None,
            false,
            9,
            InsertMode::AllowConflicts,
        )
        .unwrap();
        assert_eq!(tree.remove_branch(&made[2]), Ok(1));
        assert_eq!(current_id(&tree), "3-cc");
        assert_eq!(tree.parent(&rid("3-cc")).unwrap().id(), &made[1]);
    }

    #[test]
    fn clearing_the_conflict_flag_and_closing_a_branch_resolve_a_conflict() {
        let (mut tree, made) = local_chain(3);
        let local = made[2].clone();
        tree.insert_history(
            &[rid("4-ee"), rid("3-ee"), made[1].clone()],
            Some(body(r#"{"r":1}"#)),
            false,
            9,
            InsertMode::AllowConflicts,
        )
        .unwrap();
        assert_eq!(current_id(&tree), local.as_str());
        assert_eq!(
            tree.clear_conflict(&rid("9-99")),
            Err(DocumentError::RevisionNotFound("9-99".to_owned()))
        );
        // Remote wins, keeping the local branch: close it, clear the remote branch's flags.
        let closed = tree.close_branch(&local, 10).unwrap();
        assert_eq!(closed, RevId::compute(Some(&local), true, b"{}"));
        assert_eq!(tree.clear_conflict(&rid("4-ee")), Ok(2));
        assert_eq!(tree.clear_conflict(&rid("4-ee")), Ok(0));
        let tombstone = tree.get(&closed).unwrap();
        assert!(tombstone.is_closed() && tombstone.is_deleted());
        assert_eq!(tombstone.sequence(), 10);
        assert_eq!(tombstone.body().unwrap(), &body("{}"));
        assert!(tree.revisions().all(|r| !r.is_conflict()), "no flag left");
        assert_eq!(current_id(&tree), "4-ee");
        assert!(!tree.is_conflicted());
        assert_eq!(RevTree::decode(&tree.encode()).unwrap(), tree);
        // A closed leaf cannot be closed twice, nor can an inner revision.
        assert_eq!(tree.close_branch(&local, 11), Err(DocumentError::Conflict));
        assert_eq!(
            tree.close_branch(&made[0], 11),
            Err(DocumentError::Conflict)
        );
        // A new revision on the remote branch (a merge) stays current.
        let merged = tree
            .add_child(Some(&rid("4-ee")), body(r#"{"m":1}"#), false, 12)
            .unwrap();
        assert_eq!(tree.current().unwrap().id(), &merged);
    }

    fn sample_tree() -> RevTree {
        let (mut tree, made) = local_chain(3);
        tree.insert_history(
            &[rid("4-bb"), rid("3-bb"), made[1].clone()],
            Some(Bytes::from(vec![b'x'; 1000])),
            true,
            300,
            InsertMode::AllowConflicts,
        )
        .unwrap();
        tree.insert_history(
            &ids(&["1-cc"]),
            None,
            false,
            u64::MAX,
            InsertMode::AllowConflicts,
        )
        .unwrap();
        tree
    }

    #[test]
    fn encode_decode_round_trip() {
        let empty = RevTree::new();
        assert_eq!(empty.encode(), vec![1, 0]);
        assert_eq!(RevTree::decode(&empty.encode()).unwrap(), empty);

        let tree = sample_tree();
        let bytes = tree.encode();
        assert_eq!(bytes.capacity(), bytes.len(), "encode pre-sizes exactly");
        let back = RevTree::decode(&bytes).unwrap();
        assert_eq!(back, tree);
        assert_eq!(back.current(), tree.current());
        assert_eq!(back.encode(), bytes);

        // One revision with a 1 KB body: the layout is the documented one.
        let mut one = RevTree::new();
        let id = one
            .add_child(None, Bytes::from(vec![b'7'; 1024]), false, 300)
            .unwrap();
        let bytes = one.encode();
        let mut expected = vec![1, 1, 42];
        expected.extend_from_slice(id.as_str().as_bytes());
        expected.extend_from_slice(&[0, FLAG_HAS_BODY, 0xac, 0x02, 0x80, 0x08]);
        expected.extend_from_slice(&[b'7'; 1024]);
        assert_eq!(bytes, expected);
        assert_eq!(RevTree::decode(&bytes).unwrap(), one);
    }

    #[test]
    fn remote_ancestors_are_set_replaced_and_cleared() {
        let (mut tree, made) = local_chain(3);
        assert_eq!(tree.remote_ancestor(1), None);
        tree.set_remote_ancestor(1, &made[1]);
        tree.set_remote_ancestor(7, &made[0]);
        tree.set_remote_ancestor(3, &made[2]);
        assert_eq!(tree.remote_ancestor(1), Some(&made[1]));
        assert_eq!(tree.remote_ancestor(3), Some(&made[2]));
        let marks: Vec<u32> = tree.remote_ancestors().map(|(r, _)| r).collect();
        assert_eq!(marks, vec![1, 3, 7]);
        // Replacing a mark; unknown revisions are ignored.
        tree.set_remote_ancestor(1, &made[2]);
        assert_eq!(tree.remote_ancestor(1), Some(&made[2]));
        tree.set_remote_ancestor(1, &rid("9-99"));
        assert_eq!(tree.remote_ancestor(1), Some(&made[2]));
        tree.set_remote_ancestor(2, &rid("9-99"));
        assert_eq!(tree.remote_ancestor(2), None);
        tree.clear_remote_ancestor(3);
        assert_eq!(tree.remote_ancestor(3), None);
        assert_eq!(tree.remote_ancestors().count(), 2);
    }

    #[test]
    fn remote_ancestors_survive_pruning_and_keep_their_bodies() {
        let (mut tree, made) = local_chain(30);
        tree.set_remote_ancestor(1, &made[2]);
        tree.drop_old_bodies(1);
        assert!(
            tree.get(&made[2]).unwrap().body().is_some(),
            "marked body kept"
        );
        assert!(tree.get(&made[3]).unwrap().body().is_none());
        assert!(tree.get(&made[28]).unwrap().body().is_some());
        // made[0..10] are 20+ generations above the leaf; made[2] is spared, with the
        // revisions between it and the leaf.
        assert_eq!(tree.prune(20), 2);
        assert!(tree.contains(&made[2]) && tree.contains(&made[3]));
        assert!(!tree.contains(&made[1]));
        assert_eq!(tree.parent(&made[3]).unwrap().id(), &made[2]);
        assert_eq!(tree.leaves().len(), 1);
        assert_eq!(tree.remote_ancestor(1), Some(&made[2]));
        assert_eq!(tree.current().unwrap().id(), &made[29]);
        assert_eq!(RevTree::decode(&tree.encode()).unwrap(), tree);
        // A mark on a removed branch disappears with it.
        tree.insert_history(
            &[rid("12-bb"), made[10].clone()],
            Some(body("{}")),
            false,
            40,
            InsertMode::AllowConflicts,
        )
        .unwrap();
        tree.set_remote_ancestor(2, &rid("12-bb"));
        tree.remove_branch(&rid("12-bb")).unwrap();
        assert_eq!(tree.remote_ancestor(2), None);
        assert_eq!(tree.remote_ancestor(1), Some(&made[2]));
    }

    /// A remote ancestor far below the leaf (the remote was unreachable while the document
    /// was edited on) stays linked to it: cut off, it would be a live leaf of its own, and
    /// once the real leaf is a deletion it would become current, with a stale body.
    #[test]
    fn pruning_never_turns_a_remote_ancestor_into_a_leaf() {
        let (mut tree, made) = local_chain(30);
        tree.set_remote_ancestor(1, &made[2]);
        let deletion = tree
            .add_child(Some(&made[29]), body("{}"), true, 31)
            .unwrap();
        tree.drop_old_bodies(1);
        tree.prune(20);
        assert_eq!(tree.leaves().len(), 1);
        assert_eq!(tree.current().unwrap().id(), &deletion);
        assert!(tree.current().unwrap().is_deleted());
        assert_eq!(
            tree.history(&deletion).last().copied(),
            Some(&made[2]),
            "the history still reaches the remote ancestor"
        );
        // Once the mark moves on, the old path is pruned as usual.
        tree.set_remote_ancestor(1, &made[29]);
        assert_eq!(tree.prune(20), 9, "made[2..=10] go");
        assert_eq!(tree.leaves().len(), 1);
        assert_eq!(tree.current().unwrap().id(), &deletion);
    }

    #[test]
    fn remote_ancestor_section_encoding() {
        let mut one = RevTree::new();
        let id = one.add_child(None, body("{}"), false, 5).unwrap();
        let plain = one.encode();
        one.set_remote_ancestor(300, &id);
        one.set_remote_ancestor(2, &id);
        let bytes = one.encode();
        assert_eq!(bytes.capacity(), bytes.len(), "encode pre-sizes exactly");
        // The old encoding, then: tag 1, two marks, (2, rev 0), (300, rev 0).
        let mut expected = plain.clone();
        expected.extend_from_slice(&[SECTION_REMOTES, 2, 2, 0, 0xac, 0x02, 0]);
        assert_eq!(bytes, expected);
        let back = RevTree::decode(&bytes).unwrap();
        assert_eq!(back, one);
        assert_eq!(back.remote_ancestor(300), Some(&id));
        // An encoding without the section still decodes, with no marks.
        assert_eq!(
            RevTree::decode(&plain).unwrap().remote_ancestors().count(),
            0
        );

        let corrupt = |tail: &[u8], why: &'static str| {
            let mut bytes = plain.clone();
            bytes.extend_from_slice(tail);
            assert_eq!(
                RevTree::decode(&bytes),
                Err(DocumentError::CorruptTree(why)),
                "{tail:?}"
            );
        };
        corrupt(&[0], "trailing bytes");
        corrupt(&[2, 1, 1, 0], "trailing bytes");
        corrupt(&[SECTION_REMOTES, 0], "invalid remote-ancestor count");
        corrupt(&[SECTION_REMOTES, 5, 1, 0], "invalid remote-ancestor count");
        corrupt(
            &[SECTION_REMOTES, 1, 1, 1],
            "remote-ancestor revision out of range",
        );
        corrupt(
            &[SECTION_REMOTES, 2, 3, 0, 3, 0],
            "remote numbers not strictly increasing",
        );
        corrupt(&[SECTION_REMOTES, 1, 1, 0, 9], "trailing bytes");
        for len in 1..3 {
            assert!(RevTree::decode(&bytes[..bytes.len() - len]).is_err());
        }
    }

    #[test]
    fn varints() {
        for value in [
            0u64,
            1,
            127,
            128,
            300,
            16_383,
            16_384,
            u64::from(u32::MAX),
            u64::MAX,
        ] {
            let mut out = Vec::new();
            put_varint(&mut out, value);
            assert_eq!(out.len(), varint_len(value), "{value}");
            let mut reader = Reader { rest: &out };
            assert_eq!(reader.varint().unwrap(), value);
            assert!(reader.rest.is_empty());
        }
        for bad in [
            &[0x80u8][..],
            &[0x80, 0x00],
            &[0xff; 10],
            &[0xff; 11],
            &[0x80; 12],
            // 2^64: ten bytes whose last holds more than the one bit left.
            &[0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x02],
        ] {
            assert!(Reader { rest: bad }.varint().is_err(), "{bad:?}");
        }
    }

    #[test]
    fn decode_refuses_truncated_and_garbage_input() {
        let bytes = sample_tree().encode();
        for len in 0..bytes.len() {
            assert!(
                matches!(
                    RevTree::decode(&bytes[..len]),
                    Err(DocumentError::CorruptTree(_))
                ),
                "prefix of {len} bytes"
            );
        }
        let mut trailing = bytes.clone();
        trailing.push(0);
        assert_eq!(
            RevTree::decode(&trailing),
            Err(DocumentError::CorruptTree("trailing bytes"))
        );
        let mut version = bytes.clone();
        version[0] = 2;
        assert_eq!(
            RevTree::decode(&version),
            Err(DocumentError::CorruptTree("unknown format version"))
        );
        // Flipping any single byte never panics (it may still decode).
        for i in 0..bytes.len() {
            for xor in [0x01u8, 0x80, 0xff] {
                let mut changed = bytes.clone();
                changed[i] ^= xor;
                let _ = RevTree::decode(&changed);
            }
        }
        // A huge count with little data is refused before allocating.
        assert!(RevTree::decode(&[1, 0xff, 0xff, 0xff, 0xff, 0x0f, 4, b'1']).is_err());

        let rev = |id: &str, parent: u8, flags: u8| {
            let mut out = vec![id.len() as u8];
            out.extend_from_slice(id.as_bytes());
            out.extend_from_slice(&[parent, flags, 1]);
            out
        };
        let tree_of = |revs: &[Vec<u8>]| {
            let mut out = vec![1u8, revs.len() as u8];
            for r in revs {
                out.extend_from_slice(r);
            }
            RevTree::decode(&out)
        };
        assert!(tree_of(&[rev("1-aa", 0, 0), rev("2-aa", 1, 0)]).is_ok());
        let corrupt = |revs: &[Vec<u8>], why: &'static str| {
            assert_eq!(tree_of(revs), Err(DocumentError::CorruptTree(why)));
        };
        corrupt(&[rev("1-aa", 1, 0)], "parent index out of range");
        corrupt(
            &[rev("1-aa", 2, 0), rev("2-aa", 1, 0)],
            "parent index out of range",
        );
        corrupt(
            &[rev("1-aa", 0, 0), rev("3-aa", 1, 0)],
            "generation is not the parent's plus one",
        );
        corrupt(&[rev("1-AA", 0, 0)], "invalid revision ID");
        corrupt(&[rev("1-aa", 0, 0x10)], "unknown revision flags");
        corrupt(
            &[rev("1-aa", 0, 0), rev("1-aa", 0, 0)],
            "duplicate revision ID",
        );
        let mut not_utf8 = rev("1-aa", 0, 0);
        not_utf8[3] = 0xff;
        corrupt(&[not_utf8], "revision ID is not UTF-8");
        // A body length beyond the data.
        corrupt(
            &[[rev("1-aa", 0, FLAG_HAS_BODY), vec![5, b'{', b'}']].concat()],
            "length exceeds the data",
        );
    }
}
