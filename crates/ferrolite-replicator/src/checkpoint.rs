//! Checkpoints: where push and pull stand, kept locally and on the peer
//! (replication.md §3, §9; replicator-behaviour.md §7).

use std::collections::{BTreeSet, HashMap, VecDeque};
use std::time::{SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use ferrolite_protocol::messages::{
    GetCheckpoint, GetCheckpointReply, Sequence, SetCheckpoint, SetCheckpointReply,
};
use serde_json::{Map, Value};
use sha1::{Digest, Sha1};
use tracing::debug;

use crate::config::ReplicatorType;
use crate::db::Db;
use crate::driver::{decode_reply, Blip};
use crate::ReplicatorError;

/// The checkpoint ID (`client` property): `cp-` + base64(SHA-1(private UUID ‖ remote
/// identity ‖ 0 ‖ replicator type [‖ channels ‖ document IDs])). LiteCore hashes a Fleece
/// array of similar items; the exact value need not match it, only be stable and unique per
/// database, remote and settings (replication.md §9). As in LiteCore, the filter items are
/// added only when channels or document IDs are configured (so the ID of an unfiltered
/// replication never changes); each list is sorted and deduplicated first. Push and pull
/// filter functions are not part of it (a function has no stable identity; LiteCore hashes
/// only a named filter).
pub(crate) fn checkpoint_id(
    private_uuid: &[u8; 16],
    remote_id: &str,
    kind: ReplicatorType,
    channels: &[String],
    doc_ids: &[String],
) -> String {
    let mut hasher = Sha1::new();
    hasher.update(private_uuid);
    hasher.update(remote_id.as_bytes());
    hasher.update([0u8]);
    hasher.update(kind.as_str().as_bytes());
    if !channels.is_empty() || !doc_ids.is_empty() {
        for (tag, list) in [(b'c', channels), (b'd', doc_ids)] {
            let mut items: Vec<&String> = list.iter().collect();
            items.sort_unstable();
            items.dedup();
            hasher.update([0u8, tag]);
            hasher.update((items.len() as u64).to_be_bytes());
            for item in items {
                hasher.update((item.len() as u64).to_be_bytes());
                hasher.update(item.as_bytes());
            }
        }
    }
    format!(
        "cp-{}",
        base64::engine::general_purpose::STANDARD.encode(hasher.finalize())
    )
}

/// The local document holding our copy of checkpoint `id`.
pub(crate) fn local_doc_id(id: &str) -> String {
    format!("ferrolite/checkpoints/{id}")
}

/// Where a replication stands: `local` = every local sequence up to it was pushed;
/// `remote` = every remote sequence up to it was pulled (the peer's JSON, opaque).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct CheckpointState {
    pub(crate) local: u64,
    pub(crate) remote: Option<Sequence>,
}

impl CheckpointState {
    /// Reads a checkpoint body (`local` and `remote` members; others ignored).
    pub(crate) fn from_json(body: &Map<String, Value>) -> CheckpointState {
        CheckpointState {
            local: body.get("local").and_then(Value::as_u64).unwrap_or(0),
            remote: body
                .get("remote")
                .filter(|v| !v.is_null())
                .and_then(|v| Sequence::from_json(v.clone()).ok()),
        }
    }

    /// The body LiteCore writes: `{"time":…,"local":N,"remote":…}` (members omitted when
    /// empty).
    pub(crate) fn to_json(&self) -> Map<String, Value> {
        let mut map = Map::new();
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        map.insert("time".to_owned(), Value::from(now));
        if self.local > 0 {
            map.insert("local".to_owned(), Value::from(self.local));
        }
        if let Some(remote) = &self.remote {
            map.insert("remote".to_owned(), remote.as_json().clone());
        }
        map
    }

    /// The state to start from, given our copy and the peer's (LiteCore's
    /// `Checkpoint::validateWith`): the same → it; different → roll back to the older of
    /// each part (an opaque remote sequence that differs and cannot be compared → from the
    /// start); either missing → from the start.
    pub(crate) fn reconcile(
        local: Option<CheckpointState>,
        remote: Option<CheckpointState>,
    ) -> CheckpointState {
        match (local, remote) {
            (Some(local), Some(remote)) if local == remote => local,
            (Some(local), Some(remote)) => {
                let pulled = match (&local.remote, &remote.remote) {
                    (Some(a), Some(b)) if a == b => Some(a.clone()),
                    (Some(a), Some(b)) => match (a.as_u64(), b.as_u64()) {
                        (Some(x), Some(y)) => Some(Sequence::from(x.min(y))),
                        _ => None,
                    },
                    _ => None,
                };
                debug!(target: "ferrolite::replicator", ?local, ?remote, "local and remote checkpoints differ: rolling back");
                CheckpointState {
                    local: local.local.min(remote.local),
                    remote: pulled,
                }
            }
            _ => CheckpointState::default(),
        }
    }
}

/// Reads the peer's copy of checkpoint `id`: its `rev` and state, `None` on `HTTP 404`.
pub(crate) async fn get_remote(
    blip: &Blip,
    id: &str,
) -> Result<Option<(String, CheckpointState)>, ReplicatorError> {
    let reply = blip
        .request(
            GetCheckpoint {
                client: id.to_owned(),
                collection: None,
            }
            .to_message(),
        )
        .await?;
    match GetCheckpointReply::from_response(&reply) {
        Ok(reply) => {
            let body = reply.checkpoint()?;
            Ok(Some((reply.rev, CheckpointState::from_json(&body))))
        }
        Err(err) if err.is_not_found() => Ok(None),
        Err(err) => Err(err.into()),
    }
}

/// Saves checkpoints on the peer and locally, skipping saves that would change nothing.
pub(crate) struct Checkpointer {
    pub(crate) id: String,
    /// The peer's revision of its copy (`None` until one exists).
    pub(crate) peer_rev: Option<String>,
    /// What was last saved (or found identical in both copies at the start).
    pub(crate) saved: Option<CheckpointState>,
}

impl Checkpointer {
    /// Whether `state` differs from what is saved.
    pub(crate) fn is_dirty(&self, state: &CheckpointState) -> bool {
        self.saved.as_ref() != Some(state)
    }

    /// Saves `state` with `setCheckpoint` (re-reading the peer's revision once on `HTTP 409`,
    /// as LiteCore does), then in the local document.
    pub(crate) async fn save(
        &mut self,
        blip: &Blip,
        db: &Db,
        state: &CheckpointState,
    ) -> Result<(), ReplicatorError> {
        if !self.is_dirty(state) {
            return Ok(());
        }
        let body = state.to_json();
        let body_bytes = bytes::Bytes::from(Value::Object(body.clone()).to_string());
        let mut attempts = 0;
        loop {
            attempts += 1;
            let reply = blip
                .request(
                    SetCheckpoint {
                        client: self.id.clone(),
                        rev: self.peer_rev.clone(),
                        body: body_bytes.clone(),
                        collection: None,
                    }
                    .to_message(),
                )
                .await?;
            match decode_reply(&reply, SetCheckpointReply::from_response) {
                Ok(reply) => {
                    self.peer_rev = Some(reply.rev);
                    break;
                }
                Err(ReplicatorError::Remote { code: 409, .. }) if attempts < 3 => {
                    self.peer_rev = get_remote(blip, &self.id).await?.map(|(rev, _)| rev);
                }
                Err(err) => return Err(err),
            }
        }
        db.put_local_json(local_doc_id(&self.id), Some(body))
            .await?;
        debug!(target: "ferrolite::replicator", checkpoint = %self.id, local = state.local, remote = ?state.remote, "checkpoint saved");
        self.saved = Some(state.clone());
        Ok(())
    }
}

/// Pull progress for checkpointing: the rows of `changes` in arrival order, each done
/// once its revision is stored (or it was not wanted); the checkpoint is the sequence of
/// the last row such that it and every earlier row are done.
#[derive(Debug, Default)]
pub(crate) struct PullTracker {
    rows: VecDeque<(Sequence, bool)>,
    /// Serial number of `rows[0]`.
    base: u64,
    /// The pull checkpoint.
    pub(crate) checkpoint: Option<Sequence>,
    /// Wanted rows not done yet: `(doc ID, rev ID)` → (serial, progress units).
    wanted: HashMap<(String, String), (u64, u64)>,
    /// Set when the peer said it is caught up, cleared by new rows.
    pub(crate) caught_up: bool,
}

impl PullTracker {
    pub(crate) fn new(start: Option<Sequence>) -> PullTracker {
        PullTracker {
            checkpoint: start,
            ..PullTracker::default()
        }
    }

    /// Records a row; a wanted row stays pending until [`PullTracker::complete`].
    pub(crate) fn add_row(
        &mut self,
        sequence: Sequence,
        doc_id: &str,
        rev: &str,
        wanted: bool,
        units: u64,
    ) {
        let serial = self.base + self.rows.len() as u64;
        self.rows.push_back((sequence, !wanted));
        if wanted {
            self.wanted
                .insert((doc_id.to_owned(), rev.to_owned()), (serial, units));
        }
        self.advance();
    }

    /// Marks the wanted row of this revision done; returns its progress units if there was
    /// one.
    pub(crate) fn complete(&mut self, doc_id: &str, rev: &str) -> Option<u64> {
        let (serial, units) = self.wanted.remove(&(doc_id.to_owned(), rev.to_owned()))?;
        if let Some(row) = serial
            .checked_sub(self.base)
            .and_then(|i| usize::try_from(i).ok())
            .and_then(|i| self.rows.get_mut(i))
        {
            row.1 = true;
        }
        self.advance();
        Some(units)
    }

    /// Wanted rows whose revision has not been stored yet.
    pub(crate) fn outstanding(&self) -> usize {
        self.wanted.len()
    }

    fn advance(&mut self) {
        while let Some((_, true)) = self.rows.front() {
            if let Some((sequence, _)) = self.rows.pop_front() {
                self.checkpoint = Some(sequence);
                self.base += 1;
            }
        }
    }
}

/// Push progress for checkpointing: the change feed was read up to `read_up_to`; the
/// sequences in `pending` are being pushed, those in `failed` failed transiently (to be
/// retried by a later replication). The checkpoint is the highest N with every sequence
/// ≤ N done.
#[derive(Debug, Default)]
pub(crate) struct PushTracker {
    pub(crate) read_up_to: u64,
    pub(crate) pending: BTreeSet<u64>,
    pub(crate) failed: BTreeSet<u64>,
    /// The feed was exhausted and nothing is pending.
    pub(crate) caught_up: bool,
}

impl PushTracker {
    pub(crate) fn new(start: u64) -> PushTracker {
        PushTracker {
            read_up_to: start,
            ..PushTracker::default()
        }
    }

    pub(crate) fn checkpoint(&self) -> u64 {
        let first_pending = self.pending.first().copied();
        let first_failed = self.failed.first().copied();
        match (first_pending, first_failed) {
            (None, None) => self.read_up_to,
            (a, b) => a
                .into_iter()
                .chain(b)
                .min()
                .map_or(self.read_up_to, |s| s.saturating_sub(1)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_stable_and_distinct() {
        let uuid = [7u8; 16];
        let id = |uuid: &[u8; 16], kind, channels: &[&str], docs: &[&str]| {
            let owned = |list: &[&str]| list.iter().map(|s| s.to_string()).collect::<Vec<_>>();
            checkpoint_id(uuid, "ws://h/db", kind, &owned(channels), &owned(docs))
        };
        let a = id(&uuid, ReplicatorType::Pull, &[], &[]);
        assert_eq!(a, id(&uuid, ReplicatorType::Pull, &[], &[]));
        assert!(a.starts_with("cp-") && a.len() == 31, "{a}");
        // Unchanged for unfiltered replications (existing checkpoints stay valid).
        assert_eq!(a, "cp-qu2K34awIgiYE4kD2lcyUeqpp08=");
        assert_ne!(a, id(&uuid, ReplicatorType::Push, &[], &[]));
        assert_ne!(a, id(&[8u8; 16], ReplicatorType::Pull, &[], &[]));
        // Channels and document IDs are part of it, in any order.
        let filtered = id(&uuid, ReplicatorType::Pull, &["a", "b"], &[]);
        assert_ne!(a, filtered);
        assert_eq!(
            filtered,
            id(&uuid, ReplicatorType::Pull, &["b", "a", "a"], &[])
        );
        assert_ne!(filtered, id(&uuid, ReplicatorType::Pull, &[], &["a", "b"]));
        assert_ne!(filtered, id(&uuid, ReplicatorType::Pull, &["ab"], &[]));
    }

    #[test]
    fn reconcile_rolls_back() {
        let state = |local, remote: Option<Sequence>| CheckpointState { local, remote };
        let a = state(10, Some(Sequence::from(7)));
        assert_eq!(
            CheckpointState::reconcile(Some(a.clone()), Some(a.clone())),
            a
        );
        assert_eq!(
            CheckpointState::reconcile(Some(a.clone()), None),
            state(0, None)
        );
        assert_eq!(
            CheckpointState::reconcile(None, Some(a.clone())),
            state(0, None)
        );
        assert_eq!(
            CheckpointState::reconcile(Some(a.clone()), Some(state(4, Some(Sequence::from(9))))),
            state(4, Some(Sequence::from(7)))
        );
        assert_eq!(
            CheckpointState::reconcile(Some(a), Some(state(10, Some(Sequence::from("3:1"))))),
            state(10, None)
        );
        let body = state(5, Some(Sequence::from("12:3"))).to_json();
        assert_eq!(
            CheckpointState::from_json(&body),
            state(5, Some(Sequence::from("12:3")))
        );
        assert!(!state(0, None).to_json().contains_key("local"));
    }

    #[test]
    fn pull_tracker_checkpoints_the_contiguous_prefix() {
        let mut t = PullTracker::new(None);
        t.add_row(Sequence::from(1), "a", "1-aa", true, 5);
        t.add_row(Sequence::from(2), "b", "1-bb", false, 1);
        t.add_row(Sequence::from(3), "c", "1-cc", true, 1);
        assert_eq!(t.checkpoint, None);
        assert_eq!(t.outstanding(), 2);
        assert_eq!(t.complete("c", "1-cc"), Some(1));
        assert_eq!(t.checkpoint, None);
        assert_eq!(t.complete("a", "1-aa"), Some(5));
        assert_eq!(t.checkpoint, Some(Sequence::from(3)));
        assert_eq!(t.complete("a", "1-aa"), None);
        assert_eq!(t.outstanding(), 0);
    }

    #[test]
    fn push_tracker_respects_gaps() {
        let mut t = PushTracker::new(3);
        assert_eq!(t.checkpoint(), 3);
        t.read_up_to = 10;
        t.pending.extend([5, 8]);
        assert_eq!(t.checkpoint(), 4);
        t.pending.remove(&5);
        t.failed.insert(6);
        assert_eq!(t.checkpoint(), 5);
        t.pending.clear();
        t.failed.clear();
        assert_eq!(t.checkpoint(), 10);
    }
}
