//! Configuration and status types of the active replicator.

use std::time::Duration;

use crate::conflict::ConflictResolver;
use crate::filter::{DocumentFlags, ReplicationFilter};
use crate::ReplicatorError;

/// Which directions a replicator runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ReplicatorType {
    /// Send local changes to the remote.
    Push,
    /// Bring the remote's changes here.
    Pull,
    /// Both, over one connection and one checkpoint.
    PushAndPull,
}

impl ReplicatorType {
    /// Whether this type pushes.
    pub fn pushes(self) -> bool {
        matches!(self, ReplicatorType::Push | ReplicatorType::PushAndPull)
    }

    /// Whether this type pulls.
    pub fn pulls(self) -> bool {
        matches!(self, ReplicatorType::Pull | ReplicatorType::PushAndPull)
    }

    /// The name hashed into the checkpoint ID.
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            ReplicatorType::Push => "push",
            ReplicatorType::Pull => "pull",
            ReplicatorType::PushAndPull => "pushAndPull",
        }
    }
}

/// The default cap on the wait between retries (Couchbase Lite's `maxAttemptWaitTime`).
pub const DEFAULT_MAX_ATTEMPT_WAIT: Duration = Duration::from_secs(300);
/// The default interval between checkpoint saves while changes flow.
pub const DEFAULT_CHECKPOINT_INTERVAL: Duration = Duration::from_secs(5);
/// Attempts of a one-shot replicator when `max_attempts` is 0 (one try and 9 retries).
pub const DEFAULT_ONE_SHOT_ATTEMPTS: u32 = 10;

/// How a [`Replicator`](crate::Replicator) replicates.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReplicatorConfig {
    /// Push, pull or both.
    pub replicator_type: ReplicatorType,
    /// Keep the connection open and replicate changes as they happen.
    pub continuous: bool,
    /// Connection attempts before giving up on a transient error; 0 = the default: 10 for
    /// a one-shot replicator, unlimited for a continuous one.
    pub max_attempts: u32,
    /// Cap on the wait between attempts (the waits double from 2 s); default 300 s.
    pub max_attempt_wait: Duration,
    /// Longest time between checkpoint saves while changes flow; default 5 s. Checkpoints
    /// are also saved whenever a direction catches up, and when the replicator stops.
    pub checkpoint_interval: Duration,
    /// Stable identity of the remote (its URL, or the other database's UUID), hashed into
    /// the checkpoint ID and naming the remote whose revisions are tracked.
    pub remote_id: String,
    /// Resolves conflicts created by pulled revisions; `None` = Couchbase Lite 3.x's default
    /// rule ([`Conflict::default_resolution`](crate::Conflict::default_resolution)).
    pub conflict_resolver: Option<ConflictResolver>,
    /// Decides which changed local documents are pushed; a skipped revision counts as done
    /// (it is not reconsidered until the document changes again).
    pub push_filter: Option<ReplicationFilter>,
    /// Decides which received revisions are saved; a refused one is answered `HTTP 403`
    /// and counts as done.
    pub pull_filter: Option<ReplicationFilter>,
    /// Replicate only these documents (push: filtered locally; pull: `docIDs` in
    /// `subChanges`, which Sync Gateway accepts for one-shot pulls only); empty = all.
    /// Part of the checkpoint ID.
    pub document_ids: Vec<String>,
    /// Pull only these Sync Gateway channels (`filter=sync_gateway/bychannel`); empty = every
    /// channel the user can read. Part of the checkpoint ID.
    pub channels: Vec<String>,
    /// Delta sync (default `true`): accept deltas on pull (`deltas=true` in the first reply
    /// to `changes`) and send them on push when the peer accepts them. Couchbase Lite
    /// disables it for a database endpoint.
    pub enable_delta_sync: bool,
}

impl Default for ReplicatorConfig {
    fn default() -> Self {
        ReplicatorConfig {
            replicator_type: ReplicatorType::PushAndPull,
            continuous: false,
            max_attempts: 0,
            max_attempt_wait: DEFAULT_MAX_ATTEMPT_WAIT,
            checkpoint_interval: DEFAULT_CHECKPOINT_INTERVAL,
            remote_id: String::new(),
            conflict_resolver: None,
            push_filter: None,
            pull_filter: None,
            document_ids: Vec::new(),
            channels: Vec::new(),
            enable_delta_sync: true,
        }
    }
}

impl ReplicatorConfig {
    /// The number of attempts in force: `max_attempts`, or the default for 0.
    pub(crate) fn attempts(&self, continuous: bool) -> u32 {
        match (self.max_attempts, continuous) {
            (0, true) => u32::MAX,
            (0, false) => DEFAULT_ONE_SHOT_ATTEMPTS,
            (n, _) => n,
        }
    }
}

/// The activity level of a replicator (Couchbase Lite's, replicator-behaviour.md §1).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ActivityLevel {
    /// Not started, finished, or stopped by a fatal error or [`Replicator::stop`](crate::Replicator::stop).
    Stopped,
    /// The connection failed; waiting to retry.
    Offline,
    /// Opening the connection.
    Connecting,
    /// Connected and caught up (continuous replicators only).
    Idle,
    /// Connected and transferring.
    Busy,
}

/// Progress of a replication (replicator-behaviour.md §2): `completed` out of `total`
/// units (roughly bytes: a revision counts its body size when known, else 1), and
/// `document_count` documents finished without error. Counted from the start of the run.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Progress {
    /// Units done.
    pub completed: u64,
    /// Units known so far.
    pub total: u64,
    /// Documents replicated without error.
    pub document_count: u64,
}

/// The status listeners receive: activity, progress, and the error (reported only with
/// [`ActivityLevel::Offline`] or [`ActivityLevel::Stopped`], as Couchbase Lite does).
#[derive(Clone, Debug)]
pub struct ReplicatorStatus {
    /// The activity level.
    pub activity: ActivityLevel,
    /// Progress so far.
    pub progress: Progress,
    /// The error that made the replicator go offline or stop, if any.
    pub error: Option<ReplicatorError>,
}

impl ReplicatorStatus {
    pub(crate) fn stopped() -> ReplicatorStatus {
        ReplicatorStatus {
            activity: ActivityLevel::Stopped,
            progress: Progress::default(),
            error: None,
        }
    }
}

/// What [`Replicator::sync_once`](crate::Replicator::sync_once) reports, in the terms of a
/// mobile OS's background refresh.
#[derive(Clone, Debug)]
pub enum SyncOutcome {
    /// Documents arrived: how many, and their IDs (in arrival order, without repeats).
    NewData {
        /// Number of documents received.
        count: u64,
        /// Their IDs.
        document_ids: Vec<String>,
    },
    /// The replication finished and nothing new arrived.
    NoData,
    /// The replication failed (or ran out of time with nothing received).
    Failed(ReplicatorError),
}

/// Identifies a listener registered with
/// [`Replicator::add_change_listener`](crate::Replicator::add_change_listener) or
/// [`Replicator::add_document_listener`](crate::Replicator::add_document_listener).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct ListenerToken(pub(crate) u64);

/// The direction a document was replicated in.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Direction {
    /// Sent to the remote.
    Push,
    /// Received from the remote.
    Pull,
}

/// One document finished by a replicator (Couchbase Lite's document replication event).
#[derive(Clone, Debug)]
pub struct ReplicatedDocument {
    /// Pushed or pulled.
    pub direction: Direction,
    /// The document ID.
    pub id: String,
    /// The revision replicated (or refused).
    pub rev: String,
    /// Whether the revision is a deletion.
    pub deleted: bool,
    /// Whether the remote removed access to the document (it was purged locally, unless
    /// the pull filter refused).
    pub access_removed: bool,
    /// Why it failed, if it did: [`ReplicatorError::Conflict`] for a push the remote
    /// refused as a conflict and for a pulled revision that conflicts with the local one
    /// (then resolved automatically), [`ReplicatorError::Rejected`] for a revision the pull
    /// filter refused.
    pub error: Option<ReplicatorError>,
}

impl ReplicatedDocument {
    /// The document's flags (deleted, access removed).
    pub fn flags(&self) -> DocumentFlags {
        DocumentFlags {
            deleted: self.deleted,
            access_removed: self.access_removed,
        }
    }
}
