//! [`MemoryStore`]: a [`Store`] kept in memory, for tests and throw-away databases.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::io::{Cursor, Read};
use std::ops::Bound;
use std::sync::{Mutex, PoisonError, RwLock, RwLockReadGuard, RwLockWriteGuard};

use bytes::Bytes;
use ferrolite_document::{BlobDigest, RevId};

use crate::stream::copy_chunks;
use crate::{
    Change, CommitSummary, DatabaseUuids, DocumentRecord, Result, StorageError, Store, StoredBlob,
    Transaction,
};

/// A [`Store`] kept in memory. It behaves like [`crate::RedbStore`] in every observable way
/// (both pass the same conformance suite) but keeps nothing once dropped.
///
/// A write transaction stages its changes and applies them all at once when it commits, so a
/// failed transaction leaves nothing behind and readers never see half a transaction. As with
/// the on-disk store, a failed operation inside a transaction aborts it even if the closure
/// returns `Ok` ([`StorageError::TransactionAborted`]).
#[derive(Debug)]
pub struct MemoryStore {
    uuids: DatabaseUuids,
    state: RwLock<State>,
    /// Serializes write transactions.
    writer: Mutex<()>,
    blobs: RwLock<HashMap<BlobDigest, Bytes>>,
}

/// The committed state.
#[derive(Debug, Default)]
struct State {
    docs: BTreeMap<String, DocumentRecord>,
    by_sequence: BTreeMap<u64, FeedEntry>,
    expirations: BTreeSet<(u64, String)>,
    locals: BTreeMap<String, Bytes>,
    last_sequence: u64,
    count: u64,
}

/// The change-feed entry of one document.
#[derive(Debug, Clone)]
struct FeedEntry {
    id: String,
    rev: RevId,
    deleted: bool,
}

/// What the index maintenance needs to know about a stored document.
#[derive(Debug, Clone, Copy)]
struct Indexed {
    sequence: u64,
    live: bool,
}

impl Indexed {
    fn of(record: &DocumentRecord) -> Indexed {
        Indexed {
            sequence: record.sequence,
            live: record.tree.current().is_some_and(|c| !c.is_deleted()),
        }
    }
}

fn poisoned() -> StorageError {
    StorageError::Backend("memory store: a lock was poisoned by a panic".into())
}

impl MemoryStore {
    /// A new, empty database with fresh random UUIDs.
    pub fn new() -> MemoryStore {
        MemoryStore {
            uuids: DatabaseUuids {
                public: uuid::Uuid::new_v4().into_bytes(),
                private: uuid::Uuid::new_v4().into_bytes(),
            },
            state: RwLock::new(State::default()),
            writer: Mutex::new(()),
            blobs: RwLock::new(HashMap::new()),
        }
    }

    fn read(&self) -> Result<RwLockReadGuard<'_, State>> {
        self.state.read().map_err(|_| poisoned())
    }

    fn write_state(&self) -> Result<RwLockWriteGuard<'_, State>> {
        self.state.write().map_err(|_| poisoned())
    }
}

impl Default for MemoryStore {
    fn default() -> MemoryStore {
        MemoryStore::new()
    }
}

impl Store for MemoryStore {
    fn uuids(&self) -> Result<DatabaseUuids> {
        Ok(self.uuids)
    }

    fn last_sequence(&self) -> Result<u64> {
        Ok(self.read()?.last_sequence)
    }

    fn document_count(&self) -> Result<u64> {
        Ok(self.read()?.count)
    }

    fn get(&self, id: &str) -> Result<Option<DocumentRecord>> {
        Ok(self.read()?.docs.get(id).cloned())
    }

    fn changes_since(&self, since: u64, limit: usize) -> Result<Vec<Change>> {
        let state = self.read()?;
        Ok(state
            .by_sequence
            .range((Bound::Excluded(since), Bound::Unbounded))
            .take(limit)
            .map(|(&sequence, entry)| Change {
                sequence,
                id: entry.id.clone(),
                rev: entry.rev.clone(),
                deleted: entry.deleted,
            })
            .collect())
    }

    fn get_local(&self, id: &str) -> Result<Option<Bytes>> {
        Ok(self.read()?.locals.get(id).cloned())
    }

    fn write(
        &self,
        work: &mut dyn FnMut(&mut dyn Transaction) -> Result<()>,
    ) -> Result<CommitSummary> {
        // The writer lock guards no data (a closure that panicked staged nothing): a poisoned
        // lock is as good as a free one.
        let _writer = self.writer.lock().unwrap_or_else(PoisonError::into_inner);
        let (last_sequence, count) = {
            let state = self.read()?;
            (state.last_sequence, state.count)
        };
        let mut txn = MemoryTransaction {
            store: self,
            docs: HashMap::new(),
            owners: HashMap::new(),
            locals: HashMap::new(),
            last_sequence,
            count,
            summary: CommitSummary::default(),
            failure: None,
        };
        work(&mut txn)?;
        if let Some(failure) = txn.failure {
            return Err(StorageError::TransactionAborted(failure));
        }
        let mut state = self.write_state()?;
        state.apply(txn.docs, txn.locals);
        state.last_sequence = txn.last_sequence;
        state.count = txn.count;
        Ok(txn.summary)
    }

    fn put_blob(
        &self,
        content: &mut dyn Read,
        expected: Option<&BlobDigest>,
    ) -> Result<StoredBlob> {
        let mut data = Vec::new();
        let digester = copy_chunks(content, |chunk| {
            data.extend_from_slice(chunk);
            Ok(())
        })?;
        let length = digester.length();
        let digest = digester.finish();
        if let Some(expected) = expected {
            if *expected != digest {
                return Err(StorageError::DigestMismatch {
                    expected: *expected,
                    actual: digest,
                });
            }
        }
        self.blobs
            .write()
            .map_err(|_| poisoned())?
            .entry(digest)
            .or_insert_with(|| Bytes::from(data));
        Ok(StoredBlob { digest, length })
    }

    fn open_blob(&self, digest: &BlobDigest) -> Result<Option<Box<dyn Read + Send>>> {
        let blobs = self.blobs.read().map_err(|_| poisoned())?;
        Ok(blobs
            .get(digest)
            .map(|data| Box::new(Cursor::new(data.clone())) as Box<dyn Read + Send>))
    }

    fn has_blob(&self, digest: &BlobDigest) -> Result<bool> {
        Ok(self
            .blobs
            .read()
            .map_err(|_| poisoned())?
            .contains_key(digest))
    }

    fn next_expiration(&self) -> Result<Option<u64>> {
        Ok(self.read()?.expirations.first().map(|(ms, _)| *ms))
    }
}

impl State {
    /// Applies the final states of the documents and local documents a transaction changed.
    fn apply(
        &mut self,
        docs: HashMap<String, Option<DocumentRecord>>,
        locals: HashMap<String, Option<Bytes>>,
    ) {
        // First take every changed document out of the indexes, then put the new states in:
        // a sequence freed by one document may have been taken by another.
        for id in docs.keys() {
            if let Some(old) = self.docs.remove(id) {
                if self
                    .by_sequence
                    .get(&old.sequence)
                    .is_some_and(|entry| entry.id == *id)
                {
                    self.by_sequence.remove(&old.sequence);
                }
                if let Some(ms) = old.expiration {
                    self.expirations.remove(&(ms, id.clone()));
                }
            }
        }
        for (id, record) in docs {
            let Some(record) = record else { continue };
            if let Some(current) = record.tree.current() {
                self.by_sequence.insert(
                    record.sequence,
                    FeedEntry {
                        id: id.clone(),
                        rev: current.id().clone(),
                        deleted: current.is_deleted(),
                    },
                );
            }
            if let Some(ms) = record.expiration {
                self.expirations.insert((ms, id.clone()));
            }
            self.docs.insert(id, record);
        }
        for (id, value) in locals {
            match value {
                Some(value) => self.locals.insert(id, value),
                None => self.locals.remove(&id),
            };
        }
    }
}

/// [`Transaction`] of a [`MemoryStore`]: changes are staged here until commit.
struct MemoryTransaction<'s> {
    store: &'s MemoryStore,
    /// Final state of each document changed (`None`: purged).
    docs: HashMap<String, Option<DocumentRecord>>,
    /// Owner of each sequence whose owner changed (`None`: freed).
    owners: HashMap<u64, Option<String>>,
    /// Final state of each local document changed (`None`: deleted).
    locals: HashMap<String, Option<Bytes>>,
    last_sequence: u64,
    count: u64,
    summary: CommitSummary,
    /// The first error an operation returned: the transaction cannot commit.
    failure: Option<String>,
}

impl MemoryTransaction<'_> {
    /// Remembers a failed operation so that the transaction is not committed.
    fn check<T>(&mut self, result: Result<T>) -> Result<T> {
        if let Err(e) = &result {
            if self.failure.is_none() {
                self.failure = Some(e.to_string());
            }
        }
        result
    }

    /// What the transaction sees of a stored document.
    fn indexed(&self, id: &str) -> Result<Option<Indexed>> {
        if let Some(staged) = self.docs.get(id) {
            return Ok(staged.as_ref().map(Indexed::of));
        }
        Ok(self.store.read()?.docs.get(id).map(Indexed::of))
    }

    /// The document whose change-feed entry is at `sequence`, as the transaction sees it.
    fn owner_of(&self, sequence: u64) -> Result<Option<String>> {
        if let Some(owner) = self.owners.get(&sequence) {
            return Ok(owner.clone());
        }
        Ok(self
            .store
            .read()?
            .by_sequence
            .get(&sequence)
            .map(|entry| entry.id.clone()))
    }

    fn try_put(&mut self, record: &DocumentRecord) -> Result<()> {
        let id = record.id.as_str();
        let current = record
            .tree
            .current()
            .ok_or_else(|| invalid(id, "empty revision tree"))?;
        if record.sequence == 0 {
            return Err(invalid(id, "sequence 0"));
        }
        let deleted = current.is_deleted();
        let old = self.indexed(id)?;
        let moved = old.is_some_and(|o| o.sequence != record.sequence);
        if old.is_none() || moved {
            if let Some(owner) = self.owner_of(record.sequence)? {
                if owner != id {
                    return Err(invalid(
                        id,
                        &format!("sequence {} belongs to document {owner:?}", record.sequence),
                    ));
                }
            }
        }
        if let (true, Some(old)) = (moved, old) {
            self.owners.insert(old.sequence, None);
        }
        self.owners.insert(record.sequence, Some(id.to_owned()));
        self.docs.insert(id.to_owned(), Some(record.clone()));

        let was_live = old.is_some_and(|o| o.live);
        if was_live && deleted {
            self.count = self.count.saturating_sub(1);
        } else if !was_live && !deleted {
            self.count += 1;
        }
        self.last_sequence = self.last_sequence.max(record.sequence);
        // A put that keeps the sequence (an expiration set, say) is not a change.
        if old.is_none() || moved {
            self.summary.changes.push(Change {
                sequence: record.sequence,
                id: id.to_owned(),
                rev: current.id().clone(),
                deleted,
            });
        }
        Ok(())
    }

    fn try_purge(&mut self, id: &str) -> Result<bool> {
        let Some(old) = self.indexed(id)? else {
            return Ok(false);
        };
        self.owners.insert(old.sequence, None);
        self.docs.insert(id.to_owned(), None);
        if old.live {
            self.count = self.count.saturating_sub(1);
        }
        self.summary.purged.push(id.to_owned());
        Ok(true)
    }
}

fn invalid(id: &str, reason: &str) -> StorageError {
    StorageError::InvalidRecord {
        id: id.to_owned(),
        reason: reason.to_owned(),
    }
}

impl Transaction for MemoryTransaction<'_> {
    fn get(&mut self, id: &str) -> Result<Option<DocumentRecord>> {
        if let Some(staged) = self.docs.get(id) {
            return Ok(staged.clone());
        }
        Ok(self.store.read()?.docs.get(id).cloned())
    }

    fn next_sequence(&mut self) -> Result<u64> {
        let next = self
            .last_sequence
            .checked_add(1)
            .ok_or_else(|| StorageError::Backend("sequence numbers exhausted".into()));
        let next = self.check(next)?;
        self.last_sequence = next;
        Ok(next)
    }

    fn put(&mut self, record: &DocumentRecord) -> Result<()> {
        let result = self.try_put(record);
        self.check(result)
    }

    fn purge(&mut self, id: &str) -> Result<bool> {
        let result = self.try_purge(id);
        self.check(result)
    }

    fn put_local(&mut self, id: &str, value: Option<&[u8]>) -> Result<()> {
        self.locals
            .insert(id.to_owned(), value.map(Bytes::copy_from_slice));
        Ok(())
    }

    fn expired(&mut self, now_ms: u64, limit: usize) -> Result<Vec<String>> {
        let mut found: Vec<(u64, String)> = self
            .docs
            .iter()
            .filter_map(|(id, record)| {
                let ms = record.as_ref()?.expiration?;
                (ms <= now_ms).then(|| (ms, id.clone()))
            })
            .collect();
        {
            let state = self.store.read()?;
            let upper = match now_ms.checked_add(1) {
                Some(end) => Bound::Excluded((end, String::new())),
                None => Bound::Unbounded,
            };
            let committed = state
                .expirations
                .range((Bound::Unbounded, upper))
                .filter(|(_, id)| !self.docs.contains_key(id))
                .take(limit)
                .cloned();
            found.extend(committed);
        }
        found.sort_unstable();
        found.truncate(limit);
        Ok(found.into_iter().map(|(_, id)| id).collect())
    }
}
