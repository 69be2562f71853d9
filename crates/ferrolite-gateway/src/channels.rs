//! Channels: routing documents into channels (the sync function's `channel()`), the index of
//! each document's channels, and what a user may read.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt::Debug;
use std::sync::{PoisonError, RwLock, RwLockReadGuard, RwLockWriteGuard};

pub use ferrolite_sync_function::{DefaultSyncRouter, Reject, Routing, SyncRouter, UserContext};

/// The routing of one document's latest change, as the index keeps it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct DocEntry {
    /// The sequence of the change.
    pub(crate) sequence: u64,
    /// The current revision.
    pub(crate) rev: String,
    /// Whether the current revision is a deletion.
    pub(crate) deleted: bool,
    /// The channels of the current revision (a tombstone keeps those of the revision it
    /// deleted, so readers of those channels see the deletion).
    pub(crate) channels: Vec<String>,
    /// `access()` grants of the current revision: principal → channels.
    pub(crate) access: BTreeMap<String, Vec<String>>,
    /// `role()` grants of the current revision: user → roles.
    pub(crate) roles: BTreeMap<String, Vec<String>>,
}

/// A document's `access()` and `role()` grants, as the index keeps them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Grants {
    /// Principal → channels.
    pub(crate) access: BTreeMap<String, Vec<String>>,
    /// User → roles.
    pub(crate) roles: BTreeMap<String, Vec<String>>,
}

impl DocEntry {
    /// A copy of its grants.
    pub(crate) fn grants(&self) -> Grants {
        Grants {
            access: self.access.clone(),
            roles: self.roles.clone(),
        }
    }
}

/// What an index update changed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Touched {
    /// The channels whose logs gained an entry.
    pub(crate) channels: Vec<String>,
    /// Whether `access()` or `role()` grants changed (anyone's access may have changed).
    pub(crate) grants: bool,
}

/// An entry of a channel's log: the document's latest change touching the channel.
#[derive(Debug, Clone, PartialEq, Eq)]
struct LogEntry {
    doc_id: String,
    /// The document left the channel at this change.
    removed: bool,
}

#[derive(Debug, Default)]
struct IndexState {
    docs: HashMap<String, DocEntry>,
    /// Per channel: sequence → the document changed then (one entry per document).
    logs: HashMap<String, BTreeMap<u64, LogEntry>>,
    /// Per principal (user name or `role:<name>`): document → (sequence, channels granted).
    access: HashMap<String, HashMap<String, (u64, Vec<String>)>>,
    /// Per user: document → (sequence, roles granted).
    roles: HashMap<String, HashMap<String, (u64, Vec<String>)>>,
}

/// The channel index of a database: each document's channels and grants, each channel's log
/// of changes (so a feed of some channels reads only their entries, never the whole
/// database), and the grants of `access()` and `role()` by principal.
///
/// Built at start from the change feed and kept up to date, in sequence order, by the
/// gateway's indexer as commits happen.
#[derive(Debug, Default)]
pub(crate) struct ChannelIndex {
    state: RwLock<IndexState>,
}

impl ChannelIndex {
    fn read(&self) -> RwLockReadGuard<'_, IndexState> {
        self.state.read().unwrap_or_else(PoisonError::into_inner)
    }

    fn write(&self) -> RwLockWriteGuard<'_, IndexState> {
        self.state.write().unwrap_or_else(PoisonError::into_inner)
    }

    /// The indexed state of document `id`.
    pub(crate) fn entry(&self, id: &str) -> Option<DocEntry> {
        self.read().docs.get(id).cloned()
    }

    /// The grants of document `id`'s indexed change (none when unknown).
    pub(crate) fn grants(&self, id: &str) -> Grants {
        self.read()
            .docs
            .get(id)
            .map(DocEntry::grants)
            .unwrap_or_default()
    }

    /// The channels of document `id` (empty when unknown).
    pub(crate) fn channels_of(&self, id: &str) -> Vec<String> {
        self.read()
            .docs
            .get(id)
            .map(|e| e.channels.clone())
            .unwrap_or_default()
    }

    /// Records the change of `id` at `entry.sequence`, unless the index already holds a
    /// later one. A deletion whose routing names no channel keeps the previous channels.
    /// Returns the channels whose logs changed and whether grants changed.
    pub(crate) fn update(&self, id: &str, mut entry: DocEntry) -> Touched {
        let mut state = self.write();
        let old = state.docs.get(id).cloned();
        if let Some(old) = &old {
            if old.sequence > entry.sequence {
                return Touched::default();
            }
            if entry.deleted && entry.channels.is_empty() {
                entry.channels.clone_from(&old.channels);
            }
        }
        let seq = entry.sequence;
        let mut touched: Vec<String> = entry.channels.clone();
        if let Some(old) = &old {
            for c in &old.channels {
                if !touched.contains(c) {
                    touched.push(c.clone());
                }
            }
            // Drop the old log entries of the channels it was in (one entry per document).
            for c in &old.channels {
                if let Some(log) = state.logs.get_mut(c) {
                    if log.get(&old.sequence).is_some_and(|e| e.doc_id == id) {
                        log.remove(&old.sequence);
                    }
                }
            }
            for principal in old.access.keys() {
                if let Some(m) = state.access.get_mut(principal) {
                    m.remove(id);
                }
            }
            for user in old.roles.keys() {
                if let Some(m) = state.roles.get_mut(user) {
                    m.remove(id);
                }
            }
        }
        let grants = !entry.access.is_empty()
            || !entry.roles.is_empty()
            || old
                .as_ref()
                .is_some_and(|o| !o.access.is_empty() || !o.roles.is_empty());
        let result = Touched {
            channels: touched.clone(),
            grants,
        };
        for c in touched {
            let removed = !entry.channels.contains(&c);
            state.logs.entry(c).or_default().insert(
                seq,
                LogEntry {
                    doc_id: id.to_owned(),
                    removed,
                },
            );
        }
        for (principal, channels) in &entry.access {
            state
                .access
                .entry(principal.clone())
                .or_default()
                .insert(id.to_owned(), (seq, channels.clone()));
        }
        for (user, roles) in &entry.roles {
            state
                .roles
                .entry(user.clone())
                .or_default()
                .insert(id.to_owned(), (seq, roles.clone()));
        }
        state.docs.insert(id.to_owned(), entry);
        result
    }

    /// Forgets a purged document.
    pub(crate) fn remove(&self, id: &str) {
        let mut state = self.write();
        let Some(old) = state.docs.remove(id) else {
            return;
        };
        for c in &old.channels {
            if let Some(log) = state.logs.get_mut(c) {
                if log.get(&old.sequence).is_some_and(|e| e.doc_id == id) {
                    log.remove(&old.sequence);
                }
            }
        }
        for principal in old.access.keys() {
            if let Some(m) = state.access.get_mut(principal) {
                m.remove(id);
            }
        }
        for user in old.roles.keys() {
            if let Some(m) = state.roles.get_mut(user) {
                m.remove(id);
            }
        }
    }

    /// Channels granted to `principal` by documents' `access()` calls: channel → sequence
    /// of the earliest granting document.
    pub(crate) fn granted_channels(&self, principal: &str) -> HashMap<String, u64> {
        let mut out: HashMap<String, u64> = HashMap::new();
        if let Some(grants) = self.read().access.get(principal) {
            for (seq, channels) in grants.values() {
                for c in channels {
                    let e = out.entry(c.clone()).or_insert(*seq);
                    *e = (*e).min(*seq);
                }
            }
        }
        out
    }

    /// Roles granted to `user` by documents' `role()` calls: role → sequence of the earliest
    /// granting document.
    pub(crate) fn granted_roles(&self, user: &str) -> HashMap<String, u64> {
        let mut out: HashMap<String, u64> = HashMap::new();
        if let Some(grants) = self.read().roles.get(user) {
            for (seq, roles) in grants.values() {
                for r in roles {
                    let e = out.entry(r.clone()).or_insert(*seq);
                    *e = (*e).min(*seq);
                }
            }
        }
        out
    }

    /// The latest changes after `since` of documents that are, or were until that change, in
    /// any of `channels`: (sequence, ID, removed), in sequence order, at most `limit`, one per
    /// document.
    pub(crate) fn changes_in<'a>(
        &self,
        channels: impl IntoIterator<Item = &'a String>,
        since: u64,
        limit: usize,
    ) -> Vec<(u64, String, bool)> {
        let state = self.read();
        let logs: Vec<&BTreeMap<u64, LogEntry>> = channels
            .into_iter()
            .filter_map(|c| state.logs.get(c))
            .collect();
        let start = since.saturating_add(1);
        // Read `take` entries of each log; entries up to the smallest last sequence of a log
        // that had more are complete. Read further while that gives fewer than `limit` rows.
        let mut take = limit.max(16);
        loop {
            // Per sequence: the document and whether every asked channel saw it leave.
            let mut merged: BTreeMap<u64, (String, bool)> = BTreeMap::new();
            let mut cutoff = u64::MAX;
            for log in &logs {
                for (taken, (seq, e)) in log.range(start..).enumerate() {
                    if taken == take {
                        cutoff = cutoff.min(seq.saturating_sub(1));
                        break;
                    }
                    merged
                        .entry(*seq)
                        .and_modify(|(_, removed)| *removed &= e.removed)
                        .or_insert_with(|| (e.doc_id.clone(), e.removed));
                }
            }
            let rows: Vec<(u64, String, bool)> = merged
                .into_iter()
                .take_while(|(seq, _)| *seq <= cutoff)
                // An older entry of a document whose latest change is also listed comes
                // later.
                .filter(|(seq, (id, _))| {
                    state.docs.get(id).is_none_or(|d| {
                        d.sequence == *seq
                            || !logs
                                .iter()
                                .any(|log| log.get(&d.sequence).is_some_and(|e| &e.doc_id == id))
                    })
                })
                .take(limit)
                .map(|(seq, (id, removed))| (seq, id, removed))
                .collect();
            if rows.len() >= limit || cutoff == u64::MAX {
                return rows;
            }
            take = take.saturating_mul(2);
        }
    }

    /// The IDs of the documents whose current revision is in any of `channels`.
    pub(crate) fn documents_in<'a>(
        &self,
        channels: impl IntoIterator<Item = &'a String>,
    ) -> HashSet<String> {
        let state = self.read();
        let mut out = HashSet::new();
        for c in channels {
            if let Some(log) = state.logs.get(c) {
                out.extend(
                    log.values()
                        .filter(|e| !e.removed)
                        .map(|e| e.doc_id.clone()),
                );
            }
        }
        out
    }
}

/// What a request may read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Access {
    /// Everything: the admin port, or a user with the `*` channel.
    All,
    /// Documents in at least one of these channels (always including the public `!`), each
    /// with the sequence at which it became readable.
    Channels(HashMap<String, u64>),
}

impl Access {
    /// Whether a document in `channels` may be read.
    pub(crate) fn can_read(&self, channels: &[String]) -> bool {
        match self {
            Access::All => true,
            Access::Channels(set) => channels.iter().any(|c| set.contains_key(c)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(seq: u64, channels: &[&str]) -> DocEntry {
        DocEntry {
            sequence: seq,
            rev: format!("{seq}-a"),
            channels: channels.iter().map(|c| (*c).to_owned()).collect(),
            ..DocEntry::default()
        }
    }

    fn names(v: &[&str]) -> Vec<String> {
        v.iter().map(|c| (*c).to_owned()).collect()
    }

    #[test]
    fn channel_logs_keep_the_latest_change_and_removals() {
        let index = ChannelIndex::default();
        index.update("d1", entry(1, &["a"]));
        index.update("d2", entry(2, &["b"]));
        index.update("d1", entry(3, &["b"]));
        let a = names(&["a"]);
        let b = names(&["b"]);
        assert_eq!(index.changes_in(&a, 0, 10), vec![(3, "d1".into(), true)]);
        assert_eq!(
            index.changes_in(&b, 0, 10),
            vec![(2, "d2".into(), false), (3, "d1".into(), false)]
        );
        assert_eq!(index.changes_in(&b, 2, 10), vec![(3, "d1".into(), false)]);
        let ab = names(&["a", "b"]);
        assert_eq!(index.changes_in(&ab, 2, 10), vec![(3, "d1".into(), false)]);
        assert_eq!(index.documents_in(&a).len(), 0);
        assert_eq!(index.documents_in(&b).len(), 2);
        // A stale (older) update is ignored.
        index.update("d1", entry(2, &["a"]));
        assert_eq!(index.channels_of("d1"), names(&["b"]));
    }

    #[test]
    fn small_pages_never_come_back_empty_while_changes_remain() {
        let index = ChannelIndex::default();
        // Documents rewritten many times leave stale entries in other channels' logs.
        for seq in 1..=100u64 {
            let channel = if seq % 2 == 0 { "a" } else { "b" };
            index.update(&format!("d{}", seq % 5), entry(seq, &[channel]));
        }
        let ab = names(&["a", "b"]);
        let mut since = 0;
        let mut seen = Vec::new();
        loop {
            let page = index.changes_in(&ab, since, 1);
            let Some(last) = page.last() else { break };
            since = last.0;
            seen.extend(page.into_iter().map(|(s, id, _)| (s, id)));
        }
        assert_eq!(seen.len(), 5, "{seen:?}");
        assert!(seen.iter().all(|(s, _)| *s > 95));
    }

    #[test]
    fn tombstones_keep_their_channels_and_grants_follow_the_current_revision() {
        let index = ChannelIndex::default();
        let mut e = entry(1, &["a"]);
        e.access.insert("alice".into(), names(&["x"]));
        index.update("d", e);
        assert_eq!(index.granted_channels("alice").get("x"), Some(&1));
        let mut tomb = entry(2, &[]);
        tomb.deleted = true;
        index.update("d", tomb);
        assert_eq!(index.channels_of("d"), names(&["a"]));
        assert!(index.granted_channels("alice").is_empty());
        assert_eq!(
            index.changes_in(&names(&["a"]), 1, 10),
            vec![(2, "d".into(), false)]
        );
    }

    #[test]
    fn access() {
        let a = Access::Channels([("a".to_owned(), 0), ("!".to_owned(), 0)].into());
        assert!(a.can_read(&["b".to_owned(), "a".to_owned()]));
        assert!(!a.can_read(&["b".to_owned()]));
        assert!(!a.can_read(&[]));
        assert!(a.can_read(&["!".to_owned()]));
        assert!(Access::All.can_read(&[]));
    }
}
