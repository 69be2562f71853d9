//! [`ObservedStore`]: a store that tells observers about every committed write.

use std::io::Read;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, PoisonError, RwLock};

use bytes::Bytes;
use ferrolite_document::BlobDigest;

use crate::{
    Change, CommitSummary, DatabaseUuids, DocumentRecord, Result, Store, StoredBlob, Transaction,
};

type Observer = Arc<dyn Fn(&CommitSummary) + Send + Sync>;

/// Identifies an observer registered with [`ObservedStore::observe`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ObserverId(u64);

/// Wraps a store so that every write that changed something is reported, after its commit,
/// to the registered observers: the database's change listeners, a replicator waiting for
/// new changes to push, a passive peer streaming a continuous feed.
///
/// Observers run on the committing thread, with no lock held; they should be quick (hand
/// the news to another thread or task rather than doing work in place).
pub struct ObservedStore {
    inner: Arc<dyn Store>,
    observers: RwLock<Vec<(u64, Observer)>>,
    next_id: AtomicU64,
}

impl ObservedStore {
    /// Observes writes to `inner`.
    pub fn new(inner: Arc<dyn Store>) -> ObservedStore {
        ObservedStore {
            inner,
            observers: RwLock::new(Vec::new()),
            next_id: AtomicU64::new(0),
        }
    }

    /// Registers `observer`, called after each commit that stored or purged a document.
    pub fn observe(&self, observer: impl Fn(&CommitSummary) + Send + Sync + 'static) -> ObserverId {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        self.observers
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .push((id, Arc::new(observer)));
        ObserverId(id)
    }

    /// Removes an observer; harmless if it was already removed.
    pub fn unobserve(&self, id: ObserverId) {
        self.observers
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .retain(|(i, _)| *i != id.0);
    }

    fn notify(&self, summary: &CommitSummary) {
        if summary.changes.is_empty() && summary.purged.is_empty() {
            return;
        }
        let observers: Vec<Observer> = self
            .observers
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .iter()
            .map(|(_, o)| o.clone())
            .collect();
        for observer in observers {
            observer(summary);
        }
    }
}

impl std::fmt::Debug for ObservedStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let observers = self
            .observers
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .len();
        f.debug_struct("ObservedStore")
            .field("observers", &observers)
            .finish_non_exhaustive()
    }
}

impl Store for ObservedStore {
    fn uuids(&self) -> Result<DatabaseUuids> {
        self.inner.uuids()
    }

    fn last_sequence(&self) -> Result<u64> {
        self.inner.last_sequence()
    }

    fn document_count(&self) -> Result<u64> {
        self.inner.document_count()
    }

    fn get(&self, id: &str) -> Result<Option<DocumentRecord>> {
        self.inner.get(id)
    }

    fn changes_since(&self, since: u64, limit: usize) -> Result<Vec<Change>> {
        self.inner.changes_since(since, limit)
    }

    fn get_local(&self, id: &str) -> Result<Option<Bytes>> {
        self.inner.get_local(id)
    }

    fn write(
        &self,
        work: &mut dyn FnMut(&mut dyn Transaction) -> Result<()>,
    ) -> Result<CommitSummary> {
        let summary = self.inner.write(work)?;
        self.notify(&summary);
        Ok(summary)
    }

    fn put_blob(
        &self,
        content: &mut dyn Read,
        expected: Option<&BlobDigest>,
    ) -> Result<StoredBlob> {
        self.inner.put_blob(content, expected)
    }

    fn open_blob(&self, digest: &BlobDigest) -> Result<Option<Box<dyn Read + Send>>> {
        self.inner.open_blob(digest)
    }

    fn has_blob(&self, digest: &BlobDigest) -> Result<bool> {
        self.inner.has_blob(digest)
    }

    fn next_expiration(&self) -> Result<Option<u64>> {
        self.inner.next_expiration()
    }
}
