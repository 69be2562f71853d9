//! Replication for ferrolite, wire-compatible with Couchbase Lite 3.x and Sync Gateway 3.x
//! (BLIP 3, `CBMobile_3`, revision trees), in both roles:
//!
//! - **active** — [`Replicator`]: what a Couchbase Lite app runs. It pushes local changes
//!   and/or pulls the remote's, one-shot or continuously, saves checkpoints, retries
//!   transient failures with backoff, reports [`ReplicatorStatus`] to listeners, and offers
//!   [`Replicator::sync_once`] for an OS background refresh;
//! - **passive** — [`serve_passive`]: what a Couchbase Lite listener or Sync Gateway does
//!   with one accepted connection; with a [`PeerAccess`] ([`PassiveOptions::access`]) the
//!   peer reads and writes by channels, as a Sync Gateway user does.
//!
//! # How it is built
//!
//! - **Driver** (one per connection): a reader task, a writer task and a core task that
//!   owns the sans-IO `blip::Connection` of `ferrolite-protocol`. The core feeds received
//!   frames to the codec, hands the peer's requests to a handler channel, matches responses
//!   to a table of pending requests (oneshot senders), takes commands (send a request and
//!   await its reply, send a NoReply request, respond, close) and moves outgoing frames to
//!   the writer. Every channel is bounded; the core never blocks on one side while the
//!   other could progress, so a slow peer, handler or disk slows the other side down
//!   instead of filling memory or deadlocking. A BLIP protocol error closes the connection
//!   with the codec's close code (1011, or 1009 for size limits).
//! - **Storage access** runs on tokio's blocking pool (`spawn_blocking` around `Store`
//!   calls). Received revisions go through the **inserter**: each `rev` body is parsed
//!   (a JSON object; top-level `_` keys are stripped), canonicalized, and queued; a batch
//!   (200 revisions, 25 ms after the first, or on demand when a direction catches up or
//!   stops) is stored in **one** `Store::write`, then each `rev` is answered — only after
//!   the commit. Revisions are inserted with `RevTree::insert_history` (the puller allows
//!   conflicting branches; the passive side refuses them when the `rev` says
//!   `noconflicts`), then old bodies are dropped and the tree pruned to 20.
//! - **Remote ancestors**: each revision tree keeps, per remote, the latest revision known
//!   to be on that remote (`RevTree::remote_ancestor`; set when a pushed revision is
//!   accepted or answered 304, and when a revision is pulled). The pusher names it in
//!   `proposeChanges` and stops `history` there, and skips documents whose current
//!   revision the remote already has (so pulled revisions are not echoed back). Remote
//!   identities ([`ReplicatorConfig::remote_id`]) are mapped to small numbers in the local
//!   document `ferrolite/remotes`.
//! - **Checkpoints**: ID `cp-` + base64(SHA-1(private UUID ‖ remote ID ‖ type [‖ channels
//!   ‖ document IDs])); body
//!   `{"time","local","remote"}` kept locally (`ferrolite/checkpoints/<id>`) and on the peer
//!   (`setCheckpoint`, re-read and retried on 409). At the start both copies are compared;
//!   when they differ the replication rolls back to the older state. `local` is the highest
//!   local sequence with everything up to it pushed; `remote` the last remote sequence with
//!   every earlier requested revision stored. Saved every `checkpoint_interval` while
//!   changing, when a direction catches up, and when stopping.
//! - **Active session**: connect → `getCheckpoint` → pull (`subChanges`, answering
//!   `changes` with what we lack and storing `rev`s) and push (`proposeChanges` from the
//!   change feed, then `rev`s with `noconflicts`) concurrently over one connection →
//!   one-shot: save the checkpoint and close with 1000; continuous: stay idle, woken by
//!   the database's commit observer and the peer's new `changes`.
//! - **Decisions** (`filter`, `conflict`): push and pull filters, document IDs and
//!   channels decide what is proposed, requested and saved; a pulled revision that
//!   conflicts with the local one is resolved after its batch committed (custom
//!   [`ConflictResolver`] or Couchbase Lite's default rule), the result written as a child
//!   of the remote revision and then pushed. [`Replicator::pending_document_ids`] lists
//!   what the next push would send.
//! - **Content** (`blobs`, `delta_sync`, `content`): a received revision is stored only
//!   once every blob it references is in the blob store — fetched with `getAttachment`
//!   (the reply streamed by the driver, frame by frame, into `Store::put_blob`, which
//!   verifies the digest) or, on the passive side, proved with `proveAttachment`; both roles
//!   serve those requests by streaming from the store. `_attachments` stubs are translated
//!   to and from blobs for peers without `blobs=true` (Sync Gateway). Revisions travel as
//!   JSON deltas when both sides allow it ([`ReplicatorConfig::enable_delta_sync`],
//!   [`PassiveOptions::disable_deltas`]); a refused delta (`HTTP 422`) is resent in full.
//! - **Run loop**: a failure that is transient (or network-dependent, when continuous)
//!   makes the replicator go offline and retry after 2, 4, 8 … s (capped at
//!   `max_attempt_wait`) until `max_attempts`; anything else stops it with the error.
//!   Statuses and document events are delivered to listeners in order from one task,
//!   never while a lock is held.
//!
//! Logging uses `tracing` with the targets `ferrolite::replicator`, `ferrolite::blip` and
//! `ferrolite::network`.
//!
//! # Example
//!
//! Two databases in one process, the second serving the first through an in-process pipe:
//!
//! ```
//! use std::sync::Arc;
//! use async_trait::async_trait;
//! use ferrolite_replicator::*;
//! use ferrolite_storage::{MemoryStore, ObservedStore};
//! use ferrolite_transport::{pipe, Connection, Transport, TransportError};
//!
//! /// Connects to `remote` by serving it over a fresh pipe.
//! struct Local(Arc<ObservedStore>);
//!
//! #[async_trait]
//! impl Transport for Local {
//!     async fn connect(&self) -> Result<Connection, TransportError> {
//!         let (ours, theirs) = pipe();
//!         tokio::spawn(serve_passive(self.0.clone(), theirs, PassiveOptions::default()));
//!         Ok(ours)
//!     }
//! }
//!
//! # tokio::runtime::Builder::new_current_thread().enable_time().build().unwrap().block_on(async {
//! let local = Arc::new(ObservedStore::new(Arc::new(MemoryStore::new())));
//! let remote = Arc::new(ObservedStore::new(Arc::new(MemoryStore::new())));
//! let config = ReplicatorConfig { remote_id: "other-db".into(), ..Default::default() };
//! let replicator = Replicator::new(local, Arc::new(Local(remote)), config);
//! replicator.start(false);
//! let status = replicator.wait_until_stopped().await;
//! assert_eq!(status.activity, ActivityLevel::Stopped);
//! assert!(status.error.is_none());
//! # });
//! ```

mod access;
mod active;
mod blobs;
mod channel_feed;
mod checkpoint;
mod config;
mod conflict;
mod content;
mod db;
mod delta_sync;
mod driver;
mod error;
mod filter;
mod passive;
mod pending;
mod push_retry;
mod replicator;

pub use access::{ChannelChange, IncomingWrite, PeerAccess, WriteRejected};
pub use config::{
    ActivityLevel, Direction, ListenerToken, Progress, ReplicatedDocument, ReplicatorConfig,
    ReplicatorStatus, ReplicatorType, SyncOutcome, DEFAULT_CHECKPOINT_INTERVAL,
    DEFAULT_MAX_ATTEMPT_WAIT, DEFAULT_ONE_SHOT_ATTEMPTS,
};
pub use conflict::{Conflict, ConflictResolution, ConflictResolver, ConflictingRevision};
pub use error::{code, domain, ReplicatorError};
pub use filter::{DocumentFlags, FilterRevision, ReplicationFilter, REJECTED_BY_FILTER};
pub use passive::{serve_passive, PassiveOptions, ReadFilter};
pub use replicator::Replicator;
