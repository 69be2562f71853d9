//! The active side of one connection (a "session"): checkpoints, the puller and the pusher
//! running concurrently over one BLIP connection, until a one-shot replication is done, the
//! replicator is stopped, or the connection fails.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use bytes::Bytes;
use ferrolite_document::{InsertMode, RevId, DEFAULT_MAX_DEPTH};
use ferrolite_protocol::blip::Message;
use ferrolite_protocol::messages::{
    ChangeRow, Changes, ChangesReply, ChangesReplyEntry, EmptyReply, NoRev, ProposeChanges,
    ProposeChangesReply, ProposeStatus, ProposedChange, Request, Rev, RevReply, SubChanges,
    VERSIONING_REV_TREES,
};
use ferrolite_storage::Store;
use ferrolite_transport::{close_code, Transport, TransportError};
use tokio::sync::{mpsc, watch, Notify, Semaphore};
use tokio::task::JoinHandle;
use tracing::{debug, info, warn};

use crate::blobs::FetchPolicy;
use crate::checkpoint::{self, CheckpointState, Checkpointer, PullTracker, PushTracker};
use crate::config::{ActivityLevel, Direction, ReplicatedDocument, ReplicatorType};
use crate::conflict;
use crate::content::{OnBlobFailure, RevContent};
use crate::db::{self, Db, Inserted, Inserter, RevToInsert};
use crate::delta_sync;
use crate::driver::{self, decode_reply, Blip, Driven, DriverEnd, PendingReply};
use crate::filter::{self, Decisions, DocumentFlags};
use crate::passive::{find_revs, prepare_rev, ObserverGuard};
use crate::push_retry;
use crate::replicator::Reporter;
use crate::ReplicatorError;

/// Rows per `changes` message asked from the peer, and per `proposeChanges` we send.
const BATCH: u32 = 200;
/// Most revisions requested by our `changes` replies and not yet stored.
const MAX_PENDING_PULLS: usize = 200;
/// Most pushed `rev`s awaiting their reply: two of the receiver's insertion batches
/// (`db::MAX_BATCH`), so a batch fills and commits at once instead of waiting for the
/// inserter's timer while the next one is on its way (64 made every 64 revisions wait 25 ms:
/// see `docs/src/reference/benchmarks.md`).
const MAX_REVS_IN_FLIGHT: usize = 400;
/// Longest history computed for a pushed revision (cut to the peer's `maxHistory`).
const MAX_PUSH_HISTORY: usize = 50;
/// Remote-ancestor marks collected before they are written.
const MARKS_PER_WRITE: usize = 100;
/// Longest a busy pusher keeps collected marks before writing them (a stale mark makes the
/// next proposal of the document a conflict, answered with a retry).
const MARKS_MAX_AGE: Duration = Duration::from_millis(250);
/// How long a stopping session waits for its last checkpoint save and the close.
const STOP_TIMEOUT: Duration = Duration::from_secs(5);

/// What a replication run needs for each session.
pub(crate) struct RunContext {
    pub(crate) db: Db,
    pub(crate) transport: Arc<dyn Transport>,
    pub(crate) kind: ReplicatorType,
    pub(crate) continuous: bool,
    pub(crate) checkpoint_interval: Duration,
    pub(crate) checkpoint_id: String,
    pub(crate) remote: u32,
    pub(crate) reporter: Arc<Reporter>,
    /// Filters, document IDs, channels, conflict resolver.
    pub(crate) decisions: Arc<Decisions>,
    /// Deltas allowed ([`ReplicatorConfig::enable_delta_sync`](crate::ReplicatorConfig::enable_delta_sync)).
    pub(crate) delta_sync: bool,
}

/// How a session ended without error.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum SessionEnd {
    /// A one-shot replication completed.
    Finished,
    /// [`Replicator::stop`](crate::Replicator::stop) was called.
    Stopped,
}

/// Resolves when `stop` turns true (never, if its sender is gone).
pub(crate) async fn wait_stop(stop: &mut watch::Receiver<bool>) {
    loop {
        if *stop.borrow_and_update() {
            return;
        }
        if stop.changed().await.is_err() {
            std::future::pending::<()>().await;
        }
    }
}

/// Push and pull progress of a session.
struct Tracker {
    pull: PullTracker,
    push: PushTracker,
    start: CheckpointState,
    /// The peer acknowledged `subChanges`.
    subscribed: bool,
    /// Conflicted documents handed to the resolver task and not resolved yet.
    resolving: usize,
    /// Conflicted documents the resolver task dealt with in this session.
    resolved: u64,
}

impl Tracker {
    fn state(&self, kind: ReplicatorType) -> CheckpointState {
        CheckpointState {
            local: if kind.pushes() {
                self.push.checkpoint()
            } else {
                self.start.local
            },
            remote: if kind.pulls() {
                self.pull.checkpoint.clone()
            } else {
                self.start.remote.clone()
            },
        }
    }

    fn pull_idle(&self) -> bool {
        self.subscribed
            && self.pull.caught_up
            && self.pull.outstanding() == 0
            && self.resolving == 0
    }
}

type SharedTracker = Arc<Mutex<Tracker>>;

fn lock(tracker: &SharedTracker) -> std::sync::MutexGuard<'_, Tracker> {
    tracker.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Revisions the remote is known to have (acknowledged pushes), not yet written as
/// remote-ancestor marks. Shared by the pusher and its session, so that the session writes
/// them when it ends, however it ends: a mark lost with an aborted pusher leaves the next
/// push to propose an older ancestor, and once that one is pruned the push is a conflict.
type PendingMarks = Arc<Mutex<Vec<(String, RevId)>>>;

fn take_marks(marks: &PendingMarks) -> Vec<(String, RevId)> {
    std::mem::take(&mut *marks.lock().unwrap_or_else(PoisonError::into_inner))
}

/// Runs one session. `connected` is set once the transport connected (the caller resets
/// its retry count then).
pub(crate) async fn run_session(
    ctx: &RunContext,
    stop: &mut watch::Receiver<bool>,
    connected: &mut bool,
) -> Result<SessionEnd, ReplicatorError> {
    let connection = tokio::select! {
        biased;
        _ = wait_stop(stop) => return Ok(SessionEnd::Stopped),
        connection = ctx.transport.connect() => connection?,
    };
    *connected = true;
    info!(target: "ferrolite::replicator", kind = ?ctx.kind, continuous = ctx.continuous, subprotocol = ?connection.subprotocol(), "connected");
    let Driven {
        blip,
        requests,
        task,
    } = driver::spawn(connection, "active");
    let mut session = Session {
        ctx,
        blip,
        driver: task,
        driver_end: None,
        tasks: Vec::new(),
        inserter: None,
        resolver: None,
        checkpointer: None,
        tracker: None,
        marks: None,
    };
    // Whatever the session is waiting for (a stalled peer included), a stop ends it.
    let result = tokio::select! {
        result = session.run(requests) => result,
        _ = wait_stop(stop) => Ok(SessionEnd::Stopped),
    };
    session.finish(result).await
}

struct Session<'a> {
    ctx: &'a RunContext,
    blip: Blip,
    driver: JoinHandle<DriverEnd>,
    driver_end: Option<DriverEnd>,
    tasks: Vec<JoinHandle<()>>,
    inserter: Option<Inserter>,
    /// The conflict resolver task (pull): it ends once the inserter's callback is gone.
    resolver: Option<JoinHandle<()>>,
    checkpointer: Option<Checkpointer>,
    tracker: Option<SharedTracker>,
    /// The pusher's marks not yet written.
    marks: Option<PendingMarks>,
}

/// The error a connection end stands for.
fn end_error(end: &DriverEnd) -> ReplicatorError {
    match end {
        DriverEnd::Failed(err) => err.clone(),
        DriverEnd::Closed { info, .. } => {
            // A peer closing normally a connection we did not close: LiteCore reports
            // "going away" (1001), which is not retried.
            let code = if info.code == close_code::NORMAL {
                close_code::GOING_AWAY
            } else {
                info.code
            };
            TransportError::Closed {
                code,
                reason: info.reason.clone(),
            }
            .into()
        }
    }
}

impl Session<'_> {
    /// The better error to report for `err`: the connection's own failure when the
    /// connection is what broke.
    async fn explain(&mut self, err: ReplicatorError) -> ReplicatorError {
        if self.driver_end.is_none() {
            if let Ok(end) =
                tokio::time::timeout(Duration::from_millis(200), &mut self.driver).await
            {
                self.driver_end = Some(end.unwrap_or_else(|e| {
                    DriverEnd::Failed(ReplicatorError::protocol(format!(
                        "connection task failed: {e}"
                    )))
                }));
            }
        }
        match &self.driver_end {
            Some(end @ DriverEnd::Failed(_)) => end_error(end),
            Some(end @ DriverEnd::Closed { by_us: false, .. }) => end_error(end),
            _ => err,
        }
    }

    async fn run(
        &mut self,
        requests: mpsc::Receiver<Message>,
    ) -> Result<SessionEnd, ReplicatorError> {
        let ctx = self.ctx;
        ctx.reporter.set_level(ActivityLevel::Busy, None);
        // Checkpoints: our copy and the peer's.
        let local = ctx
            .db
            .local_json(checkpoint::local_doc_id(&ctx.checkpoint_id))
            .await?
            .map(|body| CheckpointState::from_json(&body));
        let remote = match checkpoint::get_remote(&self.blip, &ctx.checkpoint_id).await {
            Ok(remote) => remote,
            Err(err) => return Err(self.explain(err).await),
        };
        let (peer_rev, remote_state) = match remote {
            Some((rev, state)) => (Some(rev), Some(state)),
            None => (None, None),
        };
        let matched = local.is_some() && local == remote_state;
        let start = CheckpointState::reconcile(local, remote_state);
        debug!(target: "ferrolite::replicator", checkpoint = %ctx.checkpoint_id, local = start.local, remote = ?start.remote, "starting from checkpoint");
        self.checkpointer = Some(Checkpointer {
            id: ctx.checkpoint_id.clone(),
            peer_rev,
            saved: matched.then(|| start.clone()),
        });
        let tracker: SharedTracker = Arc::new(Mutex::new(Tracker {
            pull: PullTracker::new(start.remote.clone()),
            push: PushTracker::new(start.local),
            start: start.clone(),
            subscribed: !ctx.kind.pulls(),
            resolving: 0,
            resolved: 0,
        }));
        self.tracker = Some(tracker.clone());
        let changed = Arc::new(Notify::new());
        let (fatal_tx, mut fatal_rx) = mpsc::channel::<ReplicatorError>(4);

        // Blobs and deltas of this connection (blob requests are served in both roles).
        let content = RevContent::new(ctx.db.clone(), self.blip.clone(), ctx.delta_sync);

        // Pull: the inserter, the `changes` handler, the request dispatcher, `subChanges`.
        let pull = if ctx.kind.pulls() {
            let permits = Arc::new(Semaphore::new(MAX_PENDING_PULLS));
            let (resolve, resolver_task) = conflict::spawn_resolver(
                ctx.db.clone(),
                ctx.decisions.resolver.clone(),
                ctx.reporter.clone(),
                resolved_callback(tracker.clone(), changed.clone()),
            );
            self.resolver = Some(resolver_task);
            let on_commit = pulled_callback(
                ctx.reporter.clone(),
                tracker.clone(),
                changed.clone(),
                permits.clone(),
                resolve,
            );
            let (inserter, inserter_task) =
                Inserter::spawn(ctx.db.clone(), self.blip.clone(), on_commit);
            self.tasks.push(inserter_task);
            self.inserter = Some(inserter.clone());
            let (changes_tx, changes_rx) = mpsc::channel(4);
            let puller = Puller {
                content: content.clone(),
                inserter: inserter.clone(),
                db: ctx.db.clone(),
                blip: self.blip.clone(),
                tracker: tracker.clone(),
                changed: changed.clone(),
                permits,
                reporter: ctx.reporter.clone(),
                remote: ctx.remote,
                decisions: ctx.decisions.clone(),
            };
            self.tasks
                .push(tokio::spawn(puller.clone().changes_loop(changes_rx)));
            Some((puller, inserter, changes_tx))
        } else {
            None
        };
        self.tasks.push(tokio::spawn(dispatch(
            self.blip.clone(),
            content.clone(),
            requests,
            pull.as_ref()
                .map(|(p, i, c)| (p.clone(), i.clone(), c.clone())),
        )));
        if ctx.kind.pulls() {
            let empty = ctx.db.call(|store| Ok(store.last_sequence()? == 0)).await?;
            let mut sub = SubChanges {
                since: start.remote.clone(),
                continuous: ctx.continuous,
                batch: Some(BATCH),
                versioning: Some(VERSIONING_REV_TREES.to_owned()),
                active_only: start.remote.is_none() && empty,
                revocations: true,
                ..SubChanges::default()
            };
            ctx.decisions.apply_to(&mut sub);
            let blip = self.blip.clone();
            let tracker = tracker.clone();
            let changed = changed.clone();
            let fatal = fatal_tx.clone();
            self.tasks.push(tokio::spawn(async move {
                let result = match blip.request(sub.to_message()).await {
                    Ok(reply) => decode_reply(&reply, EmptyReply::from_response).map(|_| ()),
                    Err(err) => Err(err),
                };
                match result {
                    Ok(()) => {
                        lock(&tracker).subscribed = true;
                        changed.notify_one();
                    }
                    Err(err) => {
                        let _ = fatal.send(err).await;
                    }
                }
            }));
        }

        // Push.
        let mut _observer = None;
        let wake = Arc::new(Notify::new());
        if ctx.kind.pushes() {
            let wake = wake.clone();
            if ctx.continuous {
                _observer = Some(ObserverGuard::notify_on_commit(
                    ctx.db.store(),
                    wake.clone(),
                ));
            }
            let marks = PendingMarks::default();
            self.marks = Some(marks.clone());
            let pusher = Pusher {
                content: content.clone(),
                db: ctx.db.clone(),
                blip: self.blip.clone(),
                tracker: tracker.clone(),
                changed: changed.clone(),
                reporter: ctx.reporter.clone(),
                remote: ctx.remote,
                continuous: ctx.continuous,
                wake,
                max_history: DEFAULT_MAX_DEPTH as usize,
                marks,
                marks_written: tokio::time::Instant::now(),
                decisions: ctx.decisions.clone(),
                events: Vec::new(),
                retries: Vec::new(),
            };
            let fatal = fatal_tx.clone();
            self.tasks.push(tokio::spawn(async move {
                if let Err(err) = pusher.run().await {
                    let _ = fatal.send(err).await;
                }
            }));
        }
        drop(fatal_tx);

        // Watch the directions; save checkpoints; report the activity.
        let mut ticker = tokio::time::interval_at(
            tokio::time::Instant::now() + ctx.checkpoint_interval,
            ctx.checkpoint_interval,
        );
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        // Directions that do not run count as already idle (no save for them).
        let mut was_idle = (!ctx.kind.pulls(), !ctx.kind.pushes());
        loop {
            let (pull_idle, push_idle, state) = {
                let t = lock(&tracker);
                (
                    !ctx.kind.pulls() || t.pull_idle(),
                    !ctx.kind.pushes() || t.push.caught_up,
                    t.state(ctx.kind),
                )
            };
            let newly_idle = (pull_idle && !was_idle.0) || (push_idle && !was_idle.1);
            if pull_idle && !was_idle.0 {
                // A one-shot pusher waits for the pull (and its conflict resolutions).
                wake.notify_one();
            }
            was_idle = (pull_idle, push_idle);
            if newly_idle && self.is_dirty(&state) {
                if let Err(err) = self.save(&state).await {
                    return Err(self.explain(err).await);
                }
            }
            if pull_idle && push_idle {
                if !ctx.continuous {
                    return Ok(SessionEnd::Finished);
                }
                if !self.is_dirty(&state) {
                    ctx.reporter.set_level(ActivityLevel::Idle, None);
                }
            } else {
                ctx.reporter.set_level(ActivityLevel::Busy, None);
            }
            tokio::select! {
                _ = changed.notified() => {}
                _ = ticker.tick() => {
                    let state = lock(&tracker).state(ctx.kind);
                    if let Err(err) = self.save(&state).await {
                        return Err(self.explain(err).await);
                    }
                }
                Some(err) = fatal_rx.recv() => return Err(self.explain(err).await),
                end = &mut self.driver => {
                    let end = end.unwrap_or_else(|e| DriverEnd::Failed(ReplicatorError::protocol(format!("connection task failed: {e}"))));
                    let err = end_error(&end);
                    self.driver_end = Some(end);
                    return Err(err);
                }
            }
        }
    }

    fn is_dirty(&self, state: &CheckpointState) -> bool {
        self.checkpointer
            .as_ref()
            .is_some_and(|c| c.is_dirty(state))
    }

    async fn save(&mut self, state: &CheckpointState) -> Result<(), ReplicatorError> {
        match self.checkpointer.as_mut() {
            Some(checkpointer) => checkpointer.save(&self.blip, &self.ctx.db, state).await,
            None => Ok(()),
        }
    }

    /// Stops the session's tasks, commits what arrived and, when the connection still
    /// works, saves the checkpoint and closes with 1000.
    async fn finish(
        mut self,
        result: Result<SessionEnd, ReplicatorError>,
    ) -> Result<SessionEnd, ReplicatorError> {
        // Producers stop first; the inserter commits what it holds (and answers it).
        let mut inserter_task = None;
        let tasks = std::mem::take(&mut self.tasks);
        if let Some(inserter) = self.inserter.take() {
            inserter.flush().await;
        }
        for (i, task) in tasks.into_iter().enumerate() {
            // The first task is the inserter when pulling: it ends once every handle is gone.
            if i == 0 && self.ctx.kind.pulls() {
                inserter_task = Some(task);
            } else {
                task.abort();
            }
        }
        if let Some(task) = inserter_task {
            if tokio::time::timeout(STOP_TIMEOUT, task).await.is_err() {
                debug!(target: "ferrolite::replicator", "inserter did not stop in time");
            }
        }
        // Acknowledged pushes the pusher had not recorded yet: recorded now, whether the
        // session ends well or not (the replies did arrive).
        if let Some(marks) = self.marks.take() {
            let marks = take_marks(&marks);
            if !marks.is_empty() {
                let remote = self.ctx.remote;
                let write = self
                    .ctx
                    .db
                    .call(move |store| db::mark_remote_ancestors(store, remote, &marks));
                match tokio::time::timeout(STOP_TIMEOUT, write).await {
                    Ok(Ok(())) => {}
                    Ok(Err(err)) => {
                        warn!(target: "ferrolite::replicator", error = %err, "could not record what the remote has")
                    }
                    Err(_) => {
                        warn!(target: "ferrolite::replicator", "recording what the remote has timed out")
                    }
                }
            }
        }
        // Conflicts of committed revisions are resolved before the checkpoint is saved.
        if let Some(task) = self.resolver.take() {
            if tokio::time::timeout(STOP_TIMEOUT, task).await.is_err() {
                debug!(target: "ferrolite::replicator", "conflict resolver did not stop in time");
            }
        }
        let ctx = self.ctx;
        match result {
            Ok(end) => {
                if let Some(tracker) = self.tracker.clone() {
                    let state = lock(&tracker).state(ctx.kind);
                    match tokio::time::timeout(STOP_TIMEOUT, self.save(&state)).await {
                        Ok(Ok(())) => {}
                        Ok(Err(err)) => {
                            warn!(target: "ferrolite::replicator", error = %err, "could not save the checkpoint")
                        }
                        Err(_) => {
                            warn!(target: "ferrolite::replicator", "saving the checkpoint timed out")
                        }
                    }
                }
                let _ = tokio::time::timeout(STOP_TIMEOUT, self.blip.close(close_code::NORMAL, ""))
                    .await;
                if self.driver_end.is_none()
                    && tokio::time::timeout(STOP_TIMEOUT, &mut self.driver)
                        .await
                        .is_err()
                {
                    self.driver.abort();
                }
                info!(target: "ferrolite::replicator", ?end, "session ended");
                Ok(end)
            }
            Err(err) => {
                info!(target: "ferrolite::replicator", error = %err, "session failed");
                if self.driver_end.is_none() {
                    let _ = tokio::time::timeout(
                        Duration::from_secs(1),
                        self.blip
                            .close(close_code::UNEXPECTED_CONDITION, "replication failed"),
                    )
                    .await;
                    self.driver.abort();
                }
                Err(err)
            }
        }
    }
}

/// Routes the peer's requests: `changes` to the puller's handler, `rev` and `norev` to the
/// puller, `getAttachment` and `proveAttachment` to the blob server, anything else answered
/// with an error.
async fn dispatch(
    blip: Blip,
    content: Arc<RevContent>,
    mut requests: mpsc::Receiver<Message>,
    pull: Option<(Puller, Inserter, mpsc::Sender<Message>)>,
) {
    while let Some(message) = requests.recv().await {
        let profile = message.profile().unwrap_or_default().to_owned();
        match (&pull, profile.as_str()) {
            (Some((_, _, changes)), "changes") => {
                if changes.send(message).await.is_err() {
                    return;
                }
            }
            (Some((puller, inserter, _)), "rev" | "norev") => {
                puller.handle_rev(inserter, message).await;
            }
            (_, "getAttachment" | "proveAttachment") => {
                content.serve(&message).await;
            }
            _ => {
                if message.no_reply {
                    continue;
                }
                let reply = match Request::from_message(&message) {
                    Err(err) => err.to_error_reply(&message),
                    Ok(Request::Ping(_)) => EmptyReply.to_response(&message),
                    Ok(other) => Message::error_to(
                        &message,
                        "HTTP",
                        403,
                        &format!("'{}' is not served by this replicator", other.profile()),
                    ),
                };
                blip.respond(reply).await;
            }
        }
    }
}

/// The callback of the resolver task: `count` conflicted documents were dealt with.
fn resolved_callback(
    tracker: SharedTracker,
    changed: Arc<Notify>,
) -> Box<dyn Fn(usize) + Send + Sync> {
    Box::new(move |count| {
        {
            let mut t = lock(&tracker);
            t.resolving = t.resolving.saturating_sub(count);
            t.resolved += count as u64;
        }
        changed.notify_one();
    })
}

/// The `on_commit` callback of the puller's inserter. Revisions added as conflicting
/// branches are reported with [`ReplicatorError::Conflict`] and handed to the resolver
/// task (`resolve`).
fn pulled_callback(
    reporter: Arc<Reporter>,
    tracker: SharedTracker,
    changed: Arc<Notify>,
    permits: Arc<Semaphore>,
    resolve: mpsc::UnboundedSender<Vec<String>>,
) -> db::OnCommit {
    Box::new(move |batch: Vec<Inserted>| {
        let mut units = 0;
        let mut released = 0;
        let conflicted: Vec<String> = batch
            .iter()
            .filter(|i| i.conflict && matches!(i.result, Ok(true)))
            .map(|i| i.doc_id.clone())
            .collect();
        {
            let mut t = lock(&tracker);
            for inserted in &batch {
                if let Some(u) = t.pull.complete(&inserted.doc_id, inserted.rev.as_str()) {
                    units += u;
                    released += 1;
                }
            }
            if !conflicted.is_empty() {
                let count = conflicted.len();
                t.resolving += count;
                if resolve.send(conflicted).is_err() {
                    t.resolving -= count; // the session is ending
                }
            }
        }
        permits.add_permits(released);
        let mut documents = Vec::with_capacity(batch.len());
        let mut ok = 0;
        for inserted in batch {
            let error = match &inserted.result {
                Ok(true) if inserted.conflict => {
                    // Stored, as a conflict that the resolver task resolves (a warning in
                    // LiteCore's terms: it counts as replicated).
                    ok += 1;
                    Some(ReplicatorError::Conflict {
                        doc_id: inserted.doc_id.clone(),
                        rev: inserted.rev.to_string(),
                    })
                }
                Ok(_) => {
                    ok += 1;
                    None
                }
                Err(failure) => Some(ReplicatorError::protocol(format!(
                    "could not store the revision: {failure:?}"
                ))),
            };
            documents.push((
                ReplicatedDocument {
                    direction: Direction::Pull,
                    id: inserted.doc_id,
                    rev: inserted.rev.to_string(),
                    deleted: inserted.deleted,
                    access_removed: false,
                    error,
                },
                matches!(inserted.result, Ok(true)),
            ));
        }
        reporter.completed(units, ok);
        reporter.documents(documents);
        changed.notify_one();
    })
}

/// The puller's shared pieces (cheap to clone).
#[derive(Clone)]
struct Puller {
    /// Blobs and deltas of received revisions.
    content: Arc<RevContent>,
    inserter: Inserter,
    db: Db,
    blip: Blip,
    tracker: SharedTracker,
    changed: Arc<Notify>,
    permits: Arc<Semaphore>,
    reporter: Arc<Reporter>,
    remote: u32,
    decisions: Arc<Decisions>,
}

impl Puller {
    /// Answers `changes` messages in order: which revisions we want, with our possible
    /// ancestors. Waits while too many requested revisions are outstanding (which slows
    /// the peer down).
    async fn changes_loop(self, mut messages: mpsc::Receiver<Message>) {
        while let Some(message) = messages.recv().await {
            let changes = match Changes::from_message(&message) {
                Ok(changes) => changes,
                Err(err) => {
                    if !message.no_reply {
                        self.blip.respond(err.to_error_reply(&message)).await;
                    }
                    continue;
                }
            };
            if changes.is_caught_up() {
                debug!(target: "ferrolite::replicator", "pull: caught up");
                // Commit what is queued now rather than at the batch timer.
                self.inserter.flush().await;
                lock(&self.tracker).pull.caught_up = true;
                self.changed.notify_one();
                if !message.no_reply {
                    self.blip
                        .respond(ChangesReply::default().to_response(&message))
                        .await;
                }
                continue;
            }
            if let Err(err) = self.answer_changes(&message, changes).await {
                warn!(target: "ferrolite::replicator", error = %err, "pull: could not answer 'changes'");
                if !message.no_reply {
                    self.blip
                        .respond(Message::error_to(&message, "HTTP", 500, &err.to_string()))
                        .await;
                }
            }
        }
    }

    async fn answer_changes(
        &self,
        message: &Message,
        changes: Changes,
    ) -> Result<(), ReplicatorError> {
        // Rows after the caught-up message (continuous) keep the puller busy only while
        // the revisions they ask for are outstanding.
        let rows = changes.rows;
        // Rows not asked for: access removed, or outside the document-ID list (the peer
        // should have left them out).
        let skip = |row: &ChangeRow| {
            row.flags.is_access_removed() || !self.decisions.wants_document(&row.doc_id)
        };
        // Access removed (revoked, or removed from the user's channels): purge, never ask.
        let removed: Vec<(String, RevId, bool)> = rows
            .iter()
            .filter(|r| r.flags.is_access_removed() && self.decisions.wants_document(&r.doc_id))
            .map(|r| (r.doc_id.clone(), r.rev_id.clone(), r.flags.is_deleted()))
            .collect();
        if !removed.is_empty() {
            self.access_removed(removed).await?;
        }
        let lookup: Vec<_> = rows.iter().filter(|r| !skip(r)).cloned().collect();
        let mut found = find_revs(&self.db, lookup).await?.into_iter();
        let entries: Vec<ChangesReplyEntry> = rows
            .iter()
            .map(|row| {
                if skip(row) {
                    ChangesReplyEntry::NotWanted
                } else {
                    found.next().unwrap_or(ChangesReplyEntry::NotWanted)
                }
            })
            .collect();
        let wanted = entries
            .iter()
            .filter(|e| matches!(e, ChangesReplyEntry::Wanted(_)))
            .count();
        if wanted > 0 {
            let n = u32::try_from(wanted.min(MAX_PENDING_PULLS)).unwrap_or(1);
            if let Ok(permit) = self.permits.acquire_many(n).await {
                permit.forget();
            }
        }
        let mut total = 0;
        {
            let mut t = lock(&self.tracker);
            for (row, entry) in rows.iter().zip(&entries) {
                let want = matches!(entry, ChangesReplyEntry::Wanted(_));
                let units = row.body_size.unwrap_or(1).max(1);
                if want {
                    total += units;
                }
                t.pull.add_row(
                    row.sequence.clone(),
                    &row.doc_id,
                    row.rev_id.as_str(),
                    want,
                    units,
                );
            }
        }
        self.reporter.add_total(total);
        debug!(target: "ferrolite::replicator", rows = rows.len(), wanted, "pull: answering 'changes'");
        self.changed.notify_one();
        if !message.no_reply {
            let reply = ChangesReply {
                entries,
                max_history: Some(DEFAULT_MAX_DEPTH),
                blobs: true,
                deltas: self.content.offer_deltas(),
                send_replacement_revs: false,
            };
            self.blip.respond(reply.to_response(message)).await;
        }
        Ok(())
    }

    /// Checks a received `rev` (or `norev`) and queues it for insertion.
    async fn handle_rev(&self, inserter: &Inserter, message: Message) {
        let reply_error = |code: i32, text: &str| {
            (!message.no_reply).then(|| Message::error_to(&message, "HTTP", code, text))
        };
        let rev: Rev = match Request::from_message(&message) {
            Ok(Request::Rev(rev)) => *rev,
            Ok(Request::NoRev(norev)) => {
                self.norev(&norev);
                return;
            }
            Ok(_) => return,
            Err(err) => {
                if !message.no_reply {
                    self.blip.respond(err.to_error_reply(&message)).await;
                }
                return;
            }
        };
        if rev.sequence.is_none() {
            if let Some(reply) = reply_error(400, "received 'rev' message with missing 'sequence'")
            {
                self.blip.respond(reply).await;
            }
            return;
        }
        let rev = match self.content.expand_delta(rev).await {
            Ok(rev) => rev,
            Err((status, why)) => {
                // HTTP 422: the sender resends the full body, which settles the row.
                if let Some(reply) = reply_error(status, &why) {
                    self.blip.respond(reply).await;
                }
                return;
            }
        };
        let prepared = match prepare_rev(&rev) {
            Ok(prepared) => prepared,
            Err(why) => {
                self.failed(&rev, ReplicatorError::protocol(why.clone()));
                if let Some(reply) = reply_error(400, &why) {
                    self.blip.respond(reply).await;
                }
                return;
            }
        };
        if prepared.removed {
            let removal = vec![(rev.id.clone(), rev.rev.clone(), rev.deleted)];
            if let Err(err) = self.access_removed(removal).await {
                warn!(target: "ferrolite::replicator", error = %err, "pull: purge failed");
            }
            self.settle(&rev.id, rev.rev.as_str());
            if !message.no_reply {
                self.blip
                    .respond(RevReply::default().to_response(&message))
                    .await;
            }
            return;
        }
        // The pull filter sees the revision as it would be saved.
        let flags = DocumentFlags {
            deleted: rev.deleted,
            access_removed: false,
        };
        if !self
            .decisions
            .pull_accepts(&rev.id, &rev.rev, &prepared.body, flags)
        {
            debug!(target: "ferrolite::replicator", id = %rev.id, rev = %rev.rev, "pull: rejected by the pull filter");
            self.failed(&rev, filter::rejected(&rev.id, &rev.rev));
            if let Some(reply) = reply_error(403, filter::REJECTED_BY_FILTER) {
                self.blip.respond(reply).await;
            }
            return;
        }
        // Its blobs are fetched first (when missing): a failure answers the `rev` with the
        // error and reports the document.
        let on_failure: OnBlobFailure = if prepared.blobs.is_empty() {
            Box::new(|_| {})
        } else {
            let puller = self.clone();
            let rev = rev.clone();
            Box::new(move |failure| puller.failed(&rev, failure.to_error()))
        };
        let to_insert = RevToInsert {
            doc_id: rev.id,
            history: prepared.history,
            body: prepared.body,
            deleted: rev.deleted,
            mode: InsertMode::AllowConflicts,
            remote: Some(self.remote),
            reply_to: (!message.no_reply).then(|| message.clone()),
        };
        let queued = self
            .content
            .insert_with_blobs(
                inserter,
                to_insert,
                prepared.blobs,
                FetchPolicy::Missing,
                on_failure,
            )
            .await;
        if let Err(err) = queued {
            debug!(target: "ferrolite::replicator", error = %err, "pull: revision dropped");
        }
    }

    /// Documents whose access the remote removed: purged and reported with the
    /// access-removed flag, unless the pull filter (offered an empty body and that flag)
    /// refuses: then the document stays and is reported with the refusal.
    async fn access_removed(
        &self,
        removed: Vec<(String, RevId, bool)>,
    ) -> Result<(), ReplicatorError> {
        let mut purge = Vec::new();
        let mut documents = Vec::with_capacity(removed.len());
        let empty = Bytes::from_static(b"{}");
        for (id, rev, deleted) in removed {
            let flags = DocumentFlags {
                deleted,
                access_removed: true,
            };
            let accepted = self.decisions.pull_accepts(&id, &rev, &empty, flags);
            let error = (!accepted).then(|| filter::rejected(&id, &rev));
            if accepted {
                purge.push(id.clone());
            }
            documents.push((
                ReplicatedDocument {
                    direction: Direction::Pull,
                    id,
                    rev: rev.to_string(),
                    deleted,
                    access_removed: true,
                    error,
                },
                false,
            ));
        }
        if !purge.is_empty() {
            let purged = self
                .db
                .call(move |store| db::purge_documents(store, &purge))
                .await?;
            debug!(target: "ferrolite::replicator", purged = purged.len(), "pull: purged documents whose access was removed");
        }
        self.reporter.documents(documents);
        Ok(())
    }

    /// A revision that will not come: its row counts as done.
    fn norev(&self, norev: &NoRev) {
        debug!(target: "ferrolite::replicator", id = %norev.id, rev = %norev.rev, error = ?norev.error, "pull: norev");
        self.settle(&norev.id, norev.rev.as_str());
    }

    /// A revision that cannot be stored: its row counts as done (not transient), and the
    /// document is reported with the error.
    fn failed(&self, rev: &Rev, error: ReplicatorError) {
        self.settle(&rev.id, rev.rev.as_str());
        self.reporter.documents(vec![(
            ReplicatedDocument {
                direction: Direction::Pull,
                id: rev.id.clone(),
                rev: rev.rev.to_string(),
                deleted: rev.deleted,
                access_removed: false,
                error: Some(error),
            },
            false,
        )]);
    }

    fn settle(&self, doc_id: &str, rev: &str) {
        let units = lock(&self.tracker).pull.complete(doc_id, rev);
        if let Some(units) = units {
            self.permits.add_permits(1);
            self.reporter.completed(units, 0);
        }
        self.changed.notify_one();
    }
}

/// A local change about to be proposed.
struct Candidate {
    sequence: u64,
    doc_id: String,
    rev: RevId,
    deleted: bool,
    remote_ancestor: Option<RevId>,
    history: Vec<RevId>,
    body: Bytes,
}

impl Candidate {
    fn units(&self) -> u64 {
        (self.body.len() as u64).max(1)
    }

    /// The `rev` to send, with the full stored body.
    fn rev(&self, max_history: usize) -> Rev {
        let mut history = self.history.clone();
        // Down to the revision the peer has even beyond its `maxHistory`: cut short, the
        // history would not reach it, and the peer would refuse the revision as a conflict.
        let reach = self
            .remote_ancestor
            .as_ref()
            .and_then(|ancestor| history.iter().position(|h| h == ancestor))
            .map_or(0, |at| at + 1);
        history.truncate(max_history.max(reach));
        Rev {
            id: self.doc_id.clone(),
            rev: self.rev.clone(),
            sequence: Some(self.sequence.into()),
            history,
            deleted: self.deleted,
            no_conflicts: true,
            delta_src: None,
            replaced_rev: None,
            deleted_branch: None,
            collection: None,
            body: self.body.clone(),
        }
    }

    fn document(&self, error: Option<ReplicatorError>) -> (ReplicatedDocument, bool) {
        (
            ReplicatedDocument {
                direction: Direction::Push,
                id: self.doc_id.clone(),
                rev: self.rev.to_string(),
                deleted: self.deleted,
                access_removed: false,
                error,
            },
            false,
        )
    }
}

/// Reads up to `limit` changes after `since` and turns them into candidates, skipping
/// documents whose current revision the remote already has and those the decisions leave
/// out (document IDs, push filter, conflict awaiting resolution). Returns the candidates and
/// the last sequence read (`since` when nothing was).
fn read_push_batch(
    store: &dyn Store,
    since: u64,
    limit: usize,
    remote: u32,
    decisions: &Decisions,
) -> Result<(Vec<Candidate>, u64), ReplicatorError> {
    let changes = store.changes_since(since, limit)?;
    let last = changes.last().map_or(since, |c| c.sequence);
    let mut out = Vec::with_capacity(changes.len());
    for change in changes {
        let Some(record) = store.get(&change.id)? else {
            continue;
        };
        if record.sequence != change.sequence {
            continue; // changed again: it comes back at its new sequence
        }
        let Some(current) = record.tree.current() else {
            continue;
        };
        let remote_ancestor = record.tree.remote_ancestor(remote).cloned();
        if remote_ancestor.as_ref() == Some(current.id()) {
            continue; // the remote has it (pulled from it, or pushed before)
        }
        let Some(body) = current.body() else {
            continue;
        };
        if !decisions.pushes(
            &record,
            current,
            body,
            change.sequence,
            remote_ancestor.as_ref(),
        ) {
            continue; // skipped: counts as done
        }
        let known: Vec<&RevId> = remote_ancestor.iter().collect();
        // Down to the revision the remote has, however far (pruning keeps that path).
        let max = if known.is_empty() {
            MAX_PUSH_HISTORY
        } else {
            usize::MAX
        };
        out.push(Candidate {
            sequence: change.sequence,
            doc_id: change.id,
            rev: current.id().clone(),
            deleted: current.is_deleted(),
            history: db::history_to_send(&record.tree, current.id(), &known, max),
            remote_ancestor,
            body: body.clone(),
        });
    }
    Ok((out, last))
}

/// The pusher: proposes local changes from the change feed and sends the accepted ones.
struct Pusher {
    /// Stubs and deltas of sent revisions.
    content: Arc<RevContent>,
    db: Db,
    blip: Blip,
    tracker: SharedTracker,
    changed: Arc<Notify>,
    reporter: Arc<Reporter>,
    remote: u32,
    continuous: bool,
    wake: Arc<Notify>,
    max_history: usize,
    /// Revisions the remote now has, to record as remote ancestors.
    marks: PendingMarks,
    /// When the marks were last written.
    marks_written: tokio::time::Instant,
    decisions: Arc<Decisions>,
    /// Document events of finished candidates, reported per batch.
    events: Vec<(ReplicatedDocument, bool)>,
    /// Candidates refused with a 409 naming one of their ancestors, to propose again
    /// with it ([`push_retry`]).
    retries: Vec<Candidate>,
}

impl Pusher {
    async fn run(mut self) -> Result<(), ReplicatorError> {
        let mut since = lock(&self.tracker).push.read_up_to;
        let mut in_flight: VecDeque<(PendingReply, Candidate)> = VecDeque::new();
        loop {
            // Replies already in: recorded now rather than when the queue fills up.
            while let Some(reply) = in_flight.front_mut().and_then(|(p, _)| p.try_take()) {
                if let Some((_, candidate)) = in_flight.pop_front() {
                    self.settle_reply(reply?, candidate).await?;
                }
            }
            let remote = self.remote;
            // Whether the pull (and the resolution of the conflicts it met) was done before
            // this read of the feed: a one-shot push waits for that, to push resolutions.
            let pull_was_idle = !self.decisions.pulls || lock(&self.tracker).pull_idle();
            let decisions = self.decisions.clone();
            let (mut candidates, last) = self
                .db
                .call(move |store| {
                    read_push_batch(store, since, BATCH as usize, remote, &decisions)
                })
                .await?;
            // Retried candidates were counted in the progress total already.
            let retried: u64 = self.retries.iter().map(Candidate::units).sum();
            candidates.append(&mut self.retries);
            if last == since && candidates.is_empty() {
                // Caught up: wait for the replies, record what the remote has.
                while let Some((pending, candidate)) = in_flight.pop_front() {
                    self.settle(pending, candidate).await?;
                }
                self.write_marks().await?;
                self.flush_events();
                if !self.continuous && !pull_was_idle {
                    // One-shot push-and-pull: wait for the pull to be done; if it resolved
                    // conflicts, read the feed again so the resolutions are pushed in this
                    // run (the pulled revisions it also reads are skipped).
                    while !lock(&self.tracker).pull_idle() {
                        self.wake.notified().await;
                    }
                    if lock(&self.tracker).resolved > 0 {
                        continue;
                    }
                }
                lock(&self.tracker).push.caught_up = true;
                self.changed.notify_one();
                debug!(target: "ferrolite::replicator", since, "push: caught up");
                if !self.continuous {
                    return Ok(());
                }
                self.wake.notified().await;
                lock(&self.tracker).push.caught_up = false;
                self.changed.notify_one();
                continue;
            }
            {
                let mut t = lock(&self.tracker);
                t.push.caught_up = false;
                t.push.read_up_to = last;
                t.push.pending.extend(candidates.iter().map(|c| c.sequence));
            }
            since = last;
            self.changed.notify_one();
            if candidates.is_empty() {
                continue;
            }
            let units: u64 = candidates.iter().map(Candidate::units).sum();
            self.reporter.add_total(units.saturating_sub(retried));
            let propose = ProposeChanges {
                rows: candidates
                    .iter()
                    .map(|c| ProposedChange {
                        doc_id: c.doc_id.clone(),
                        rev_id: c.rev.clone(),
                        server_rev: c.remote_ancestor.clone(),
                        body_size: Some(c.body.len() as u64),
                    })
                    .collect(),
                conflict_includes_rev: true,
                collection: None,
            };
            debug!(target: "ferrolite::replicator", rows = propose.rows.len(), "push: proposing changes");
            let reply = self.blip.request(propose.to_message()).await?;
            let reply = decode_reply(&reply, ProposeChangesReply::from_response)?;
            self.content.peer_said(reply.blobs, reply.deltas);
            if let Some(max) = reply.max_history {
                self.max_history = (max as usize).max(1);
            }
            for (i, candidate) in candidates.into_iter().enumerate() {
                match reply.status(i) {
                    ProposeStatus::Accepted => {
                        while in_flight.len() >= MAX_REVS_IN_FLIGHT {
                            if let Some((pending, c)) = in_flight.pop_front() {
                                self.settle(pending, c).await?;
                            }
                        }
                        let message = self
                            .content
                            .push_rev(
                                candidate.rev(self.max_history),
                                candidate.remote_ancestor.as_ref(),
                            )
                            .await;
                        let pending = self.blip.send_request(message).await?;
                        in_flight.push_back((pending, candidate));
                    }
                    ProposeStatus::AlreadyHave => {
                        self.mark(&candidate);
                        self.done(&candidate, None, false);
                    }
                    ProposeStatus::Conflict { current } => {
                        let retry = push_retry::newer_ancestor(
                            &self.db,
                            &candidate.doc_id,
                            &candidate.rev,
                            candidate.remote_ancestor.as_ref(),
                            current.as_ref(),
                            usize::MAX,
                        )
                        .await?;
                        if let Some((ancestor, history)) = retry {
                            debug!(target: "ferrolite::replicator", id = %candidate.doc_id, rev = %candidate.rev, remote_current = %ancestor, "push: the remote has an ancestor; proposing again");
                            self.retries.push(Candidate {
                                remote_ancestor: Some(ancestor),
                                history,
                                ..candidate
                            });
                            continue;
                        }
                        debug!(target: "ferrolite::replicator", id = %candidate.doc_id, rev = %candidate.rev, remote_current = ?current, "push: conflict");
                        let err = ReplicatorError::Conflict {
                            doc_id: candidate.doc_id.clone(),
                            rev: candidate.rev.to_string(),
                        };
                        self.done(&candidate, Some(err), false);
                    }
                    ProposeStatus::Other(status) => {
                        let err = ReplicatorError::Remote {
                            domain: "HTTP".to_owned(),
                            code: i32::from(*status),
                            message: "refused by proposeChanges".to_owned(),
                        };
                        let transient = err.is_transient();
                        self.done(&candidate, Some(err), transient);
                    }
                }
            }
            let pending = self.marks.lock().map_or(0, |m| m.len());
            if pending >= MARKS_PER_WRITE
                || (pending > 0 && self.marks_written.elapsed() >= MARKS_MAX_AGE)
            {
                self.write_marks().await?;
            }
            self.flush_events();
        }
    }

    /// Reports the document events collected so far, as one batch.
    fn flush_events(&mut self) {
        if !self.events.is_empty() {
            self.reporter.documents(std::mem::take(&mut self.events));
        }
    }

    /// Waits for the reply to a pushed `rev` and records the outcome.
    async fn settle(
        &mut self,
        pending: PendingReply,
        candidate: Candidate,
    ) -> Result<(), ReplicatorError> {
        let reply = pending.wait().await?;
        self.settle_reply(reply, candidate).await
    }

    /// Records the outcome of a pushed `rev` from its reply.
    async fn settle_reply(
        &mut self,
        mut reply: Message,
        candidate: Candidate,
    ) -> Result<(), ReplicatorError> {
        let delta = self
            .content
            .sent_as_delta(&candidate.doc_id, &candidate.rev);
        if delta && delta_sync::wants_full_body(&reply) {
            // A delta the peer could not apply: send the full body once.
            let full = self.content.full_rev(candidate.rev(self.max_history));
            reply = self.blip.request(full).await?;
        }
        match decode_reply(&reply, RevReply::from_response) {
            Ok(_) => {
                self.mark(&candidate);
                self.done(&candidate, None, false);
            }
            Err(ReplicatorError::Remote { code: 409, .. }) => {
                let err = ReplicatorError::Conflict {
                    doc_id: candidate.doc_id.clone(),
                    rev: candidate.rev.to_string(),
                };
                self.done(&candidate, Some(err), false);
            }
            Err(err) => {
                warn!(target: "ferrolite::replicator", id = %candidate.doc_id, error = %err, "push: revision refused");
                let transient = err.is_transient();
                self.done(&candidate, Some(err), transient);
            }
        }
        Ok(())
    }

    /// Records a finished candidate: its sequence is done (or failed, when transient: a
    /// later replication retries it), progress and the document event.
    fn done(&mut self, candidate: &Candidate, error: Option<ReplicatorError>, transient: bool) {
        {
            let mut t = lock(&self.tracker);
            t.push.pending.remove(&candidate.sequence);
            if transient {
                t.push.failed.insert(candidate.sequence);
            }
        }
        let ok = usize::from(error.is_none());
        self.reporter.completed(candidate.units(), ok);
        self.events.push(candidate.document(error));
        self.changed.notify_one();
    }

    /// Records that the remote has the candidate's revision.
    fn mark(&self, candidate: &Candidate) {
        self.marks
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push((candidate.doc_id.clone(), candidate.rev.clone()));
    }

    async fn write_marks(&mut self) -> Result<(), ReplicatorError> {
        self.marks_written = tokio::time::Instant::now();
        let marks = take_marks(&self.marks);
        if marks.is_empty() {
            return Ok(());
        }
        let remote = self.remote;
        self.db
            .call(move |store| db::mark_remote_ancestors(store, remote, &marks))
            .await
    }
}
