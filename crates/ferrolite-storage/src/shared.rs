//! `Store` for shared stores, so that `&Arc<dyn Store>` and `&Arc<RedbStore>` can be used
//! wherever a `&dyn Store` is expected (as in [`crate::ChangeFeed::new`]).

use std::io::Read;
use std::sync::Arc;

use bytes::Bytes;
use ferrolite_document::BlobDigest;

use crate::{
    Change, CommitSummary, DatabaseUuids, DocumentRecord, Result, Store, StoredBlob, Transaction,
};

/// Forwards every call to the shared store.
impl<S: Store + ?Sized> Store for Arc<S> {
    fn uuids(&self) -> Result<DatabaseUuids> {
        (**self).uuids()
    }

    fn last_sequence(&self) -> Result<u64> {
        (**self).last_sequence()
    }

    fn document_count(&self) -> Result<u64> {
        (**self).document_count()
    }

    fn get(&self, id: &str) -> Result<Option<DocumentRecord>> {
        (**self).get(id)
    }

    fn changes_since(&self, since: u64, limit: usize) -> Result<Vec<Change>> {
        (**self).changes_since(since, limit)
    }

    fn get_local(&self, id: &str) -> Result<Option<Bytes>> {
        (**self).get_local(id)
    }

    fn write(
        &self,
        work: &mut dyn FnMut(&mut dyn Transaction) -> Result<()>,
    ) -> Result<CommitSummary> {
        (**self).write(work)
    }

    fn put_blob(
        &self,
        content: &mut dyn Read,
        expected: Option<&BlobDigest>,
    ) -> Result<StoredBlob> {
        (**self).put_blob(content, expected)
    }

    fn open_blob(&self, digest: &BlobDigest) -> Result<Option<Box<dyn Read + Send>>> {
        (**self).open_blob(digest)
    }

    fn has_blob(&self, digest: &BlobDigest) -> Result<bool> {
        (**self).has_blob(digest)
    }

    fn next_expiration(&self) -> Result<Option<u64>> {
        (**self).next_expiration()
    }
}
