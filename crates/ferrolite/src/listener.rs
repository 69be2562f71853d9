//! Change listeners: told, after each commit, which documents changed.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

/// What a database change listener receives: the IDs of the documents a commit changed
/// (saved, deleted, purged or expired).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DatabaseChange {
    /// IDs of the changed documents, in the order they were written.
    pub document_ids: Vec<String>,
}

/// What a document change listener receives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DocumentChange {
    /// The ID of the changed document.
    pub document_id: String,
}

/// Identifies a registered listener, to remove it with
/// [`crate::Database::remove_change_listener`] or
/// [`crate::Replicator::remove_change_listener`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[must_use = "a listener can only be removed with its token"]
pub struct ListenerToken(u64);

impl ListenerToken {
    /// A fresh token for a replicator listener: drawn from one process-wide counter in the
    /// upper half of the range, so it never equals a database listener's token.
    pub(crate) fn next_replicator_token() -> ListenerToken {
        static NEXT: AtomicU64 = AtomicU64::new(1 << 63);
        ListenerToken(NEXT.fetch_add(1, Ordering::Relaxed))
    }
}

type DatabaseListener = Arc<dyn Fn(&DatabaseChange) + Send + Sync>;
type DocumentListener = Arc<dyn Fn(&DocumentChange) + Send + Sync>;

/// Every listener of one database.
#[derive(Default)]
pub(crate) struct Listeners {
    next: AtomicU64,
    database: Mutex<Vec<(u64, DatabaseListener)>>,
    documents: Mutex<Vec<(u64, String, DocumentListener)>>,
}

impl Listeners {
    pub(crate) fn add_database(&self, listener: DatabaseListener) -> ListenerToken {
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        lock(&self.database).push((id, listener));
        ListenerToken(id)
    }

    pub(crate) fn add_document(&self, doc_id: String, listener: DocumentListener) -> ListenerToken {
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        lock(&self.documents).push((id, doc_id, listener));
        ListenerToken(id)
    }

    pub(crate) fn remove(&self, token: ListenerToken) {
        lock(&self.database).retain(|(id, _)| *id != token.0);
        lock(&self.documents).retain(|(id, _, _)| *id != token.0);
    }

    /// Calls the listeners; no lock is held while they run, so they may use the database.
    pub(crate) fn notify(&self, document_ids: Vec<String>) {
        if document_ids.is_empty() {
            return;
        }
        let database: Vec<DatabaseListener> = lock(&self.database)
            .iter()
            .map(|(_, l)| l.clone())
            .collect();
        let documents: Vec<(String, DocumentListener)> = lock(&self.documents)
            .iter()
            .filter(|(_, doc_id, _)| document_ids.contains(doc_id))
            .map(|(_, doc_id, l)| (doc_id.clone(), l.clone()))
            .collect();
        for (doc_id, listener) in documents {
            listener(&DocumentChange {
                document_id: doc_id,
            });
        }
        if !database.is_empty() {
            let change = DatabaseChange { document_ids };
            for listener in database {
                listener(&change);
            }
        }
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // A listener list stays valid even if a thread panicked while holding the lock.
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}
