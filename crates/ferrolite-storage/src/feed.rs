//! [`ChangeFeed`]: the change feed as an iterator that reads it page by page.

use std::iter::FusedIterator;
use std::ops::Deref;

use crate::{Change, Result, Store};

/// How many changes [`ChangeFeed`] asks the store for at a time.
const PAGE_SIZE: usize = 512;

/// Iterates over the changes of a store after a sequence, in sequence order, fetching them
/// from [`Store::changes_since`] a page at a time: memory stays flat however long the feed.
///
/// Each page is read in its own read transaction, so changes committed while iterating may or
/// may not be seen (a document changed meanwhile can show up again at its new sequence). The
/// iterator ends when a page comes back short, or after returning an error.
///
/// `S` is anything that leads to a store: `&RedbStore`, `&dyn Store`, `Arc<dyn Store>`, …
///
/// ```
/// use std::sync::Arc;
/// use ferrolite_storage::{ChangeFeed, MemoryStore, Store};
///
/// let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
/// for change in ChangeFeed::new(store.clone(), 0) {
///     let change = change?;
///     println!("{} {} {}", change.sequence, change.id, change.rev);
/// }
/// # Ok::<(), ferrolite_storage::StorageError>(())
/// ```
pub struct ChangeFeed<S> {
    store: S,
    /// The sequence of the last change returned (or the starting point).
    since: u64,
    page: std::vec::IntoIter<Change>,
    /// Set when the store has nothing after the current page, or failed.
    done: bool,
}

impl<S> ChangeFeed<S> {
    /// A feed of the changes with a sequence greater than `since`.
    pub fn new(store: S, since: u64) -> ChangeFeed<S> {
        ChangeFeed {
            store,
            since,
            page: Vec::new().into_iter(),
            done: false,
        }
    }

    /// The sequence of the last change returned (or the starting point when none was).
    pub fn since(&self) -> u64 {
        self.since
    }
}

impl<S> std::fmt::Debug for ChangeFeed<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChangeFeed")
            .field("since", &self.since)
            .field("buffered", &self.page.len())
            .field("done", &self.done)
            .finish_non_exhaustive()
    }
}

impl<S: Deref> Iterator for ChangeFeed<S>
where
    S::Target: Store,
{
    type Item = Result<Change>;

    fn next(&mut self) -> Option<Result<Change>> {
        loop {
            if let Some(change) = self.page.next() {
                self.since = change.sequence;
                return Some(Ok(change));
            }
            if self.done {
                return None;
            }
            match self.store.changes_since(self.since, PAGE_SIZE) {
                Ok(page) => {
                    if page.len() < PAGE_SIZE {
                        self.done = true;
                    }
                    if page.is_empty() {
                        return None;
                    }
                    self.page = page.into_iter();
                }
                Err(e) => {
                    self.done = true;
                    return Some(Err(e));
                }
            }
        }
    }
}

impl<S: Deref> FusedIterator for ChangeFeed<S> where S::Target: Store {}
