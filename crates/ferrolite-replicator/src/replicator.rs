//! [`Replicator`]: the active replicator's handle, its run loop (connect, session, retry
//! with backoff), status and listeners, and [`Replicator::sync_once`].

use std::collections::hash_map::{Entry, RandomState};
use std::collections::{HashMap, HashSet};
use std::hash::BuildHasher;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use ferrolite_storage::{ObservedStore, Store};
use ferrolite_transport::Transport;
use tokio::runtime::Handle;
use tokio::sync::{mpsc, watch};
use tracing::{debug, info, warn};

use crate::active::{run_session, wait_stop, RunContext, SessionEnd};
use crate::checkpoint;
use crate::config::{
    ActivityLevel, Progress, ReplicatedDocument, ReplicatorConfig, ReplicatorStatus,
    ReplicatorType, SyncOutcome,
};
use crate::db::Db;
use crate::filter::Decisions;
use crate::{pending, ListenerToken, ReplicatorError};

/// Progress-only status changes are reported at most this often (Couchbase Lite's throttle).
const PROGRESS_THROTTLE: Duration = Duration::from_millis(200);
/// The first retry waits this long; each next one twice as long.
const FIRST_RETRY_DELAY: Duration = Duration::from_secs(2);

type StatusListener = Arc<dyn Fn(&ReplicatorStatus) + Send + Sync>;
type DocumentListener = Arc<dyn Fn(&[ReplicatedDocument]) + Send + Sync>;

/// An active replicator: pushes local changes to a remote and/or pulls the remote's
/// changes, one-shot or continuously, over connections opened by a [`Transport`].
///
/// A cheap handle: clones control the same replicator. See the crate documentation for
/// how it works and an example.
#[derive(Clone)]
pub struct Replicator {
    inner: Arc<Inner>,
}

struct Inner {
    db: Db,
    transport: Arc<dyn Transport>,
    config: ReplicatorConfig,
    runtime: Option<Handle>,
    state: Mutex<RunState>,
    /// `(run number, status)` after listeners received it.
    delivered: watch::Sender<(u64, ReplicatorStatus)>,
    listeners: Mutex<Listeners>,
}

struct RunState {
    /// Incremented by every start.
    run: u64,
    running: bool,
    status: ReplicatorStatus,
    stop: Option<watch::Sender<bool>>,
}

#[derive(Default)]
struct Listeners {
    next: u64,
    status: Vec<(u64, StatusListener)>,
    documents: Vec<(u64, DocumentListener)>,
}

fn locked<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

impl std::fmt::Debug for Replicator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Replicator")
            .field("config", &self.inner.config)
            .field("status", &self.status())
            .finish_non_exhaustive()
    }
}

impl Replicator {
    /// A replicator of `store` with the remote that `transport` connects to.
    ///
    /// Must be called inside a tokio runtime (its tasks run there); spawns nothing until
    /// [`start`](Self::start).
    pub fn new(
        store: Arc<ObservedStore>,
        transport: Arc<dyn Transport>,
        config: ReplicatorConfig,
    ) -> Replicator {
        let (delivered, _) = watch::channel((0, ReplicatorStatus::stopped()));
        Replicator {
            inner: Arc::new(Inner {
                db: Db::new(store),
                transport,
                config,
                runtime: Handle::try_current().ok(),
                state: Mutex::new(RunState {
                    run: 0,
                    running: false,
                    status: ReplicatorStatus::stopped(),
                    stop: None,
                }),
                delivered,
                listeners: Mutex::new(Listeners::default()),
            }),
        }
    }

    /// The configuration.
    pub fn config(&self) -> &ReplicatorConfig {
        &self.inner.config
    }

    /// Starts replicating (does nothing if already running). With `reset_checkpoint`, the
    /// local checkpoint is forgotten first: everything is compared again (revisions
    /// already present cost only a `proposeChanges` 304 or a `changes` 0).
    pub fn start(&self, reset_checkpoint: bool) {
        self.start_run(reset_checkpoint, self.inner.config.continuous, false);
    }

    /// Asks the replicator to stop: it commits what arrived, saves the checkpoint, closes
    /// the connection with 1000 and reports [`ActivityLevel::Stopped`].
    pub fn stop(&self) {
        let state = locked(&self.inner.state);
        if let Some(stop) = &state.stop {
            let _ = stop.send(true);
        }
    }

    /// The current status.
    pub fn status(&self) -> ReplicatorStatus {
        locked(&self.inner.state).status.clone()
    }

    /// Registers a listener called with every status change, in order, from one task
    /// (never while a lock is held). Progress-only changes come at most every 200 ms.
    pub fn add_change_listener(
        &self,
        listener: impl Fn(&ReplicatorStatus) + Send + Sync + 'static,
    ) -> ListenerToken {
        let mut listeners = locked(&self.inner.listeners);
        listeners.next += 1;
        let id = listeners.next;
        listeners.status.push((id, Arc::new(listener)));
        ListenerToken(id)
    }

    /// Registers a listener called with documents as they finish replicating (pushed or
    /// pulled, with their error if any), from the same task as status listeners.
    pub fn add_document_listener(
        &self,
        listener: impl Fn(&[ReplicatedDocument]) + Send + Sync + 'static,
    ) -> ListenerToken {
        let mut listeners = locked(&self.inner.listeners);
        listeners.next += 1;
        let id = listeners.next;
        listeners.documents.push((id, Arc::new(listener)));
        ListenerToken(id)
    }

    /// Removes a listener (status or document); harmless if already removed.
    pub fn remove_change_listener(&self, token: ListenerToken) {
        let mut listeners = locked(&self.inner.listeners);
        listeners.status.retain(|(id, _)| *id != token.0);
        listeners.documents.retain(|(id, _)| *id != token.0);
    }

    /// The IDs of the local documents the next push would send (deleted ones included):
    /// changed since the local checkpoint, not already on the remote, and passing the
    /// document-ID list and the push filter (Couchbase Lite's `pendingDocumentIDs`).
    ///
    /// Reads the local checkpoint, so it answers before the replicator ever connected;
    /// while it runs, documents pushed since the last checkpoint save may still be listed.
    /// Fails with [`ReplicatorError::Config`] for a pull-only replicator.
    pub async fn pending_document_ids(&self) -> Result<HashSet<String>, ReplicatorError> {
        let (since, remote, decisions) = self.pending_context().await?;
        self.inner
            .db
            .call(move |store| pending::pending_ids(store, since, remote, &decisions))
            .await
    }

    /// Whether document `id` is pending: the next push would send it (see
    /// [`pending_document_ids`](Self::pending_document_ids)).
    pub async fn is_document_pending(&self, id: &str) -> Result<bool, ReplicatorError> {
        let (since, remote, decisions) = self.pending_context().await?;
        let id = id.to_owned();
        self.inner
            .db
            .call(move |store| pending::is_pending(store, &id, since, remote, &decisions))
            .await
    }

    /// The local checkpoint's pushed sequence, the remote's number and the decisions.
    async fn pending_context(&self) -> Result<(u64, u32, Decisions), ReplicatorError> {
        let config = &self.inner.config;
        if !config.replicator_type.pushes() {
            return Err(ReplicatorError::Config(
                "pending documents are known only to a push or push-and-pull replicator".to_owned(),
            ));
        }
        let (id, remote) = prepare(&self.inner, config.replicator_type, false).await?;
        let since = self
            .inner
            .db
            .local_json(checkpoint::local_doc_id(&id))
            .await?
            .map_or(0, |body| {
                checkpoint::CheckpointState::from_json(&body).local
            });
        Ok((since, remote, Decisions::new(config)))
    }

    /// Waits until the replicator is stopped (at once if it is not running) and returns
    /// the final status, after the listeners received it.
    pub async fn wait_until_stopped(&self) -> ReplicatorStatus {
        let run = locked(&self.inner.state).run;
        let mut delivered = self.inner.delivered.subscribe();
        loop {
            {
                let (delivered_run, status) = &*delivered.borrow_and_update();
                if *delivered_run >= run && status.activity == ActivityLevel::Stopped {
                    return status.clone();
                }
            }
            if delivered.changed().await.is_err() {
                return self.status();
            }
        }
    }

    /// Runs a one-shot replication of the configured type (even if the configuration says
    /// continuous) and reports before `deadline` whether new documents arrived.
    ///
    /// It begins stopping at `deadline − min(500 ms, 10 % of the time left)` if not done
    /// by then: what arrived is committed and the checkpoint saved when the peer allows it,
    /// and the call returns by the deadline in any case (the stop finishes in the
    /// background). Outcomes: [`SyncOutcome::NewData`] when documents were received (even
    /// if the run then failed or ran out of time), [`SyncOutcome::NoData`] when it
    /// finished with nothing new, [`SyncOutcome::Failed`] otherwise
    /// ([`ReplicatorError::DeadlineExceeded`] when time ran out with nothing received,
    /// [`ReplicatorError::AlreadyRunning`] when the replicator was running).
    pub async fn sync_once(&self, deadline: tokio::time::Instant) -> SyncOutcome {
        if locked(&self.inner.state).running {
            return SyncOutcome::Failed(ReplicatorError::AlreadyRunning);
        }
        let started = tokio::time::Instant::now();
        let reporter = match self.start_run(false, false, true) {
            Some(reporter) => reporter,
            None => {
                return SyncOutcome::Failed(
                    self.status()
                        .error
                        .unwrap_or(ReplicatorError::AlreadyRunning),
                )
            }
        };
        let budget = deadline.saturating_duration_since(started);
        let margin = (budget / 10).min(Duration::from_millis(500));
        let stop_at = deadline.checked_sub(margin).unwrap_or(deadline);
        let status = match tokio::time::timeout_at(stop_at, self.wait_until_stopped()).await {
            Ok(status) => Some(status),
            Err(_) => {
                debug!(target: "ferrolite::replicator", "sync_once: deadline near, stopping");
                self.stop();
                // The stop commits what arrived and saves the checkpoint; a run stopped for
                // the deadline did not finish, whatever its final status says.
                let _ = tokio::time::timeout_at(deadline, self.wait_until_stopped()).await;
                None
            }
        };
        let received = reporter.take_received_ids();
        if !received.is_empty() {
            return SyncOutcome::NewData {
                count: received.len() as u64,
                document_ids: received,
            };
        }
        match status {
            Some(ReplicatorStatus { error: None, .. }) => SyncOutcome::NoData,
            Some(ReplicatorStatus {
                error: Some(err), ..
            }) => SyncOutcome::Failed(err),
            None => SyncOutcome::Failed(ReplicatorError::DeadlineExceeded),
        }
    }

    /// Starts a run unless one is going; returns its reporter. Only a `sync_once` run keeps
    /// the IDs of the documents it receives (`collect_received`): a long continuous run must
    /// not grow with every document.
    fn start_run(
        &self,
        reset: bool,
        continuous: bool,
        collect_received: bool,
    ) -> Option<Arc<Reporter>> {
        let inner = &self.inner;
        let runtime = inner.runtime.clone().or_else(|| Handle::try_current().ok());
        let mut state = locked(&inner.state);
        if state.running {
            return None;
        }
        state.run += 1;
        let run = state.run;
        let (events_tx, events_rx) = mpsc::unbounded_channel();
        let reporter = Arc::new(Reporter::new(
            self.inner.clone(),
            run,
            events_tx,
            collect_received,
        ));
        let Some(runtime) = runtime else {
            drop(state);
            warn!(target: "ferrolite::replicator", "Replicator::start called outside a tokio runtime");
            let error = ReplicatorError::Config("the replicator needs a tokio runtime".to_owned());
            reporter.set_level(ActivityLevel::Stopped, Some(error));
            return None;
        };
        let (stop_tx, stop_rx) = watch::channel(false);
        state.running = true;
        state.stop = Some(stop_tx);
        state.status = ReplicatorStatus {
            activity: ActivityLevel::Connecting,
            progress: Progress::default(),
            error: None,
        };
        drop(state);
        runtime.spawn(deliver(self.inner.clone(), events_rx));
        reporter.set_level(ActivityLevel::Connecting, None);
        let inner = self.inner.clone();
        let run_reporter = reporter.clone();
        runtime.spawn(async move {
            let error =
                run_replication(&inner, run_reporter.clone(), reset, continuous, stop_rx).await;
            {
                let mut state = locked(&inner.state);
                if state.run == run {
                    state.running = false;
                    state.stop = None;
                }
            }
            run_reporter.set_level(ActivityLevel::Stopped, error);
        });
        Some(reporter)
    }
}

/// Delivers a run's events to the listeners, in order, from one task; publishes each
/// delivered status for [`Replicator::wait_until_stopped`].
async fn deliver(inner: Arc<Inner>, mut events: mpsc::UnboundedReceiver<Event>) {
    while let Some(event) = events.recv().await {
        match event {
            Event::Status(run, status) => {
                let listeners: Vec<StatusListener> = locked(&inner.listeners)
                    .status
                    .iter()
                    .map(|(_, l)| l.clone())
                    .collect();
                for listener in listeners {
                    call_listener(|| listener(&status));
                }
                inner.delivered.send_if_modified(|current| {
                    if current.0 <= run {
                        *current = (run, status);
                        true
                    } else {
                        false
                    }
                });
            }
            Event::Documents(documents) => {
                let listeners: Vec<DocumentListener> = locked(&inner.listeners)
                    .documents
                    .iter()
                    .map(|(_, l)| l.clone())
                    .collect();
                for listener in listeners {
                    call_listener(|| listener(&documents));
                }
            }
        }
    }
}

/// Calls a listener; a panicking listener is logged and does not stop the deliveries.
fn call_listener(call: impl FnOnce()) {
    if std::panic::catch_unwind(std::panic::AssertUnwindSafe(call)).is_err() {
        warn!(target: "ferrolite::replicator", "a replicator listener panicked");
    }
}

/// One replication run: sessions and retries until finished, stopped or failed. Returns
/// the error it stopped with, if any.
async fn run_replication(
    inner: &Arc<Inner>,
    reporter: Arc<Reporter>,
    reset: bool,
    continuous: bool,
    mut stop: watch::Receiver<bool>,
) -> Option<ReplicatorError> {
    let config = &inner.config;
    let prepared = prepare(inner, config.replicator_type, reset).await;
    let (checkpoint_id, remote) = match prepared {
        Ok(pair) => pair,
        Err(err) => return Some(err),
    };
    let ctx = RunContext {
        db: inner.db.clone(),
        transport: inner.transport.clone(),
        kind: config.replicator_type,
        continuous,
        checkpoint_interval: config.checkpoint_interval.max(Duration::from_millis(1)),
        checkpoint_id,
        remote,
        reporter: reporter.clone(),
        decisions: Arc::new(Decisions::new(config)),
        delta_sync: config.enable_delta_sync,
    };
    let max_attempts = config.attempts(continuous).max(1);
    let mut failures: u32 = 0;
    info!(target: "ferrolite::replicator", kind = ?config.replicator_type, continuous, remote = %config.remote_id, "replicator starting");
    loop {
        reporter.set_level(ActivityLevel::Connecting, None);
        let mut connected = false;
        let result = run_session(&ctx, &mut stop, &mut connected).await;
        if connected {
            failures = 0;
        }
        let err = match result {
            Ok(SessionEnd::Finished) | Ok(SessionEnd::Stopped) => return None,
            Err(err) => err,
        };
        if *stop.borrow() {
            return None;
        }
        failures = failures.saturating_add(1);
        let retry = (err.is_transient() || (continuous && err.is_network_dependent()))
            && failures < max_attempts;
        if !retry {
            warn!(target: "ferrolite::replicator", error = %err, "replicator stopped by an error");
            return Some(err);
        }
        let delay = FIRST_RETRY_DELAY
            .saturating_mul(
                1u32.checked_shl(failures.saturating_sub(1))
                    .unwrap_or(u32::MAX),
            )
            .min(config.max_attempt_wait);
        info!(target: "ferrolite::replicator", error = %err, attempt = failures, ?delay, "offline; will retry");
        reporter.set_level(ActivityLevel::Offline, Some(err));
        tokio::select! {
            _ = tokio::time::sleep(delay) => {}
            _ = wait_stop(&mut stop) => return None,
        }
    }
}

/// Computes the checkpoint ID and the remote's number; applies a checkpoint reset.
async fn prepare(
    inner: &Inner,
    kind: ReplicatorType,
    reset: bool,
) -> Result<(String, u32), ReplicatorError> {
    let uuids = inner.db.call(|store| Ok(store.uuids()?)).await?;
    let config = &inner.config;
    let id = checkpoint::checkpoint_id(
        &uuids.private,
        &config.remote_id,
        kind,
        &config.channels,
        &config.document_ids,
    );
    if reset {
        inner
            .db
            .put_local_json(checkpoint::local_doc_id(&id), None)
            .await?;
    }
    let remote = inner
        .db
        .remote_number(inner.config.remote_id.clone())
        .await?;
    Ok((id, remote))
}

/// An event for the listeners.
enum Event {
    Status(u64, ReplicatorStatus),
    Documents(Vec<ReplicatedDocument>),
}

/// Collects a run's activity, progress and documents, and reports them.
pub(crate) struct Reporter {
    inner: Arc<Inner>,
    run: u64,
    events: mpsc::UnboundedSender<Event>,
    state: Mutex<ReporterState>,
}

struct ReporterState {
    /// Whether `received` is kept (a `sync_once` run reports it).
    collect_received: bool,
    activity: ActivityLevel,
    progress: Progress,
    last_emit: tokio::time::Instant,
    received: Vec<String>,
    /// The hash of each ID in `received` → its index there, so that an ID is not kept
    /// twice (this run's memory grows by one ID per document received, not two).
    received_index: HashMap<u64, usize>,
    hasher: RandomState,
}

impl ReporterState {
    /// Adds `id` to the received IDs unless it is there already.
    fn note_received(&mut self, id: &str) {
        let hash = self.hasher.hash_one(id);
        match self.received_index.entry(hash) {
            Entry::Vacant(entry) => {
                entry.insert(self.received.len());
                self.received.push(id.to_owned());
            }
            Entry::Occupied(entry) => {
                // A repeat, or (rarely) another ID with the same hash: then compare them all.
                let seen = self.received.get(*entry.get()).is_some_and(|r| r == id)
                    || self.received.iter().any(|r| r == id);
                if !seen {
                    self.received.push(id.to_owned());
                }
            }
        }
    }
}

impl Reporter {
    fn new(
        inner: Arc<Inner>,
        run: u64,
        events: mpsc::UnboundedSender<Event>,
        collect_received: bool,
    ) -> Reporter {
        Reporter {
            inner,
            run,
            events,
            state: Mutex::new(ReporterState {
                collect_received,
                activity: ActivityLevel::Stopped,
                progress: Progress::default(),
                last_emit: tokio::time::Instant::now(),
                received: Vec::new(),
                received_index: HashMap::new(),
                hasher: RandomState::new(),
            }),
        }
    }

    /// Sets the activity level; reported when it changes or carries an error.
    pub(crate) fn set_level(&self, activity: ActivityLevel, error: Option<ReplicatorError>) {
        let mut state = locked(&self.state);
        if state.activity == activity && error.is_none() && activity != ActivityLevel::Stopped {
            return;
        }
        state.activity = activity;
        let status = ReplicatorStatus {
            activity,
            progress: state.progress,
            error,
        };
        self.publish(&mut state, status);
    }

    /// Adds units of work found.
    pub(crate) fn add_total(&self, units: u64) {
        if units == 0 {
            return;
        }
        let mut state = locked(&self.state);
        state.progress.total = state.progress.total.saturating_add(units);
        self.progressed(&mut state);
    }

    /// Adds units of work done and documents finished without error.
    pub(crate) fn completed(&self, units: u64, documents: usize) {
        let mut state = locked(&self.state);
        state.progress.completed = state.progress.completed.saturating_add(units);
        state.progress.document_count = state
            .progress
            .document_count
            .saturating_add(documents as u64);
        self.progressed(&mut state);
    }

    /// Reports finished documents; those flagged `true` are new data received.
    pub(crate) fn documents(&self, documents: Vec<(ReplicatedDocument, bool)>) {
        if documents.is_empty() {
            return;
        }
        let mut out = Vec::with_capacity(documents.len());
        {
            let mut state = locked(&self.state);
            for (document, received) in documents {
                if received && state.collect_received {
                    state.note_received(&document.id);
                }
                out.push(document);
            }
        }
        let _ = self.events.send(Event::Documents(out));
    }

    /// IDs of the documents received so far, in arrival order, taken out (the run's outcome
    /// owns them; a later call lists only documents received since).
    pub(crate) fn take_received_ids(&self) -> Vec<String> {
        let mut state = locked(&self.state);
        state.received_index = HashMap::new();
        std::mem::take(&mut state.received)
    }

    fn progressed(&self, state: &mut ReporterState) {
        let status = ReplicatorStatus {
            activity: state.activity,
            progress: state.progress,
            error: None,
        };
        if state.last_emit.elapsed() >= PROGRESS_THROTTLE {
            self.publish(state, status);
        } else {
            self.store(status);
        }
    }

    fn store(&self, status: ReplicatorStatus) {
        let mut run_state = locked(&self.inner.state);
        if run_state.run == self.run {
            run_state.status = status;
        }
    }

    fn publish(&self, state: &mut ReporterState, status: ReplicatorStatus) {
        state.last_emit = tokio::time::Instant::now();
        debug!(target: "ferrolite::replicator", activity = ?status.activity, progress = ?status.progress, error = ?status.error.as_ref().map(ToString::to_string), "status");
        self.store(status.clone());
        let _ = self.events.send(Event::Status(self.run, status));
    }
}
