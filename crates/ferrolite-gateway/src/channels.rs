//! Channels: routing documents into channels (the sync function's `channel()`), the index of
//! each document's channels, and what a user may read.

use std::collections::{HashMap, HashSet};
use std::fmt::Debug;
use std::sync::{Mutex, MutexGuard, PoisonError};

use ferrolite::{Database, Document};

pub use ferrolite_sync_function::{DefaultSyncRouter, Reject, Routing, SyncRouter, UserContext};

/// The channels of every document of a database, by document ID, with the revision they were
/// computed for.
///
/// Built at start by routing the current revision of every live document of the change feed;
/// updated by every REST write; and, for revisions written by replication, refreshed when a
/// read finds a current revision other than the indexed one. A tombstone keeps the channels
/// of the revision it deleted (so readers of those channels see the deletion); a document
/// deleted before the gateway started is in no channel.
#[derive(Debug, Default)]
pub(crate) struct ChannelIndex {
    docs: Mutex<HashMap<String, Entry>>,
}

#[derive(Debug, Clone)]
struct Entry {
    rev: String,
    channels: Vec<String>,
}

impl ChannelIndex {
    fn docs(&self) -> MutexGuard<'_, HashMap<String, Entry>> {
        self.docs.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Routes the current revision of every document of `database`.
    pub(crate) fn rebuild(
        &self,
        database: &Database,
        router: &dyn SyncRouter,
    ) -> Result<(), ferrolite::Error> {
        for change in database.changes(0)? {
            let change = change?;
            if change.deleted {
                continue;
            }
            if let Some(doc) = database.document(&change.id)? {
                self.channels_of(&doc, router);
            }
        }
        Ok(())
    }

    /// Records the channels of `id` at revision `rev`.
    pub(crate) fn set(&self, id: &str, rev: &str, channels: Vec<String>) {
        self.docs().insert(
            id.to_owned(),
            Entry {
                rev: rev.to_owned(),
                channels,
            },
        );
    }

    /// Records that `id` was deleted at `rev`: the tombstone keeps the previous channels.
    pub(crate) fn set_deleted(&self, id: &str, rev: &str) {
        let mut docs = self.docs();
        let entry = docs.entry(id.to_owned()).or_insert_with(|| Entry {
            rev: String::new(),
            channels: Vec::new(),
        });
        rev.clone_into(&mut entry.rev);
    }

    /// The channels of a live document's current revision, routing it if the index holds
    /// another revision (a replicated write). A revision the router rejects (it was written
    /// by replication, which does not run the router yet) is in no channel.
    pub(crate) fn channels_of(&self, doc: &Document, router: &dyn SyncRouter) -> Vec<String> {
        let rev = doc.revision_id().to_string();
        if let Some(entry) = self.docs().get(doc.id()) {
            if entry.rev == rev {
                return entry.channels.clone();
            }
        }
        let channels = router
            .route(doc.properties(), None, None)
            .map(|r| r.channels)
            .unwrap_or_default();
        self.set(doc.id(), &rev, channels.clone());
        channels
    }

    /// The last known channels of `id` (for tombstones), whatever the revision.
    pub(crate) fn last_channels(&self, id: &str) -> Vec<String> {
        self.docs()
            .get(id)
            .map(|e| e.channels.clone())
            .unwrap_or_default()
    }
}

/// What a request may read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Access {
    /// Everything: the admin port, or a user with the `*` channel.
    All,
    /// Documents in at least one of these channels (always including the public `!`).
    Channels(HashSet<String>),
}

impl Access {
    /// The access of a user with these `admin_channels`.
    pub(crate) fn of_channels(admin_channels: &[String]) -> Access {
        if admin_channels.iter().any(|c| c == "*") {
            return Access::All;
        }
        let mut set: HashSet<String> = admin_channels.iter().cloned().collect();
        set.insert("!".to_owned());
        Access::Channels(set)
    }

    /// Whether a document in `channels` may be read.
    pub(crate) fn can_read(&self, channels: &[String]) -> bool {
        match self {
            Access::All => true,
            Access::Channels(set) => channels.iter().any(|c| set.contains(c)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn access() {
        let a = Access::of_channels(&["a".to_owned()]);
        assert!(a.can_read(&["b".to_owned(), "a".to_owned()]));
        assert!(!a.can_read(&["b".to_owned()]));
        assert!(!a.can_read(&[]));
        assert!(a.can_read(&["!".to_owned()]));
        let all = Access::of_channels(&["*".to_owned()]);
        assert!(all.can_read(&[]));
    }
}
