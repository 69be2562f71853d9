//! [`Replicator`]: runs a [`ReplicatorConfiguration`] on the replication runtime, and the
//! one-call background refresh, [`sync_once`].

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::future::Future;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use ferrolite_replicator::{ReplicatedDocument, ReplicatorError, ReplicatorStatus, SyncOutcome};
use tokio::runtime::Handle;

use super::runtime;
use crate::{ListenerToken, ReplicatorConfiguration, Result};

/// The longest part of a [`sync_once`] budget kept for handing the outcome from the
/// replication runtime back to the caller (the engine itself starts stopping a little
/// before the deadline it is given, and returns by it).
const MAX_HAND_BACK: Duration = Duration::from_millis(200);

/// A replicator: replicates a database with an [`Endpoint`](crate::Endpoint), once or
/// continuously, as Couchbase Lite's `Replicator` does.
///
/// The replicator runs on ferrolite's own background runtime; every method returns at once
/// except the blocking [`sync_once`](Self::sync_once) and
/// [`wait_until_stopped`](Self::wait_until_stopped). Progress and errors reach the
/// listeners added with [`add_change_listener`](Self::add_change_listener), on a runtime
/// thread. `Replicator` is a cheap handle: clones share one replicator, and dropping the
/// last clone stops it, so keep one for as long as it should run.
///
/// ```
/// use std::time::Duration;
/// use ferrolite::{
///     ActivityLevel, Database, Endpoint, MutableDocument, Replicator, ReplicatorConfiguration,
///     ReplicatorType,
/// };
///
/// let phone = Database::open_in_memory("phone")?;
/// let backup = Database::open_in_memory("backup")?;
/// phone.save(MutableDocument::with_id("user::demo").set("name", "Demo User"))?;
///
/// let config = ReplicatorConfiguration::new(&phone, Endpoint::database(&backup))
///     .replicator_type(ReplicatorType::Push);
/// let replicator = Replicator::new(config)?;
/// let token = replicator.add_change_listener(|status| println!("{:?}", status.activity));
/// replicator.start();
/// let status = replicator
///     .wait_until_stopped(Duration::from_secs(10))
///     .expect("a one-shot replication stops by itself");
/// assert_eq!(status.activity, ActivityLevel::Stopped);
/// assert!(status.error.is_none());
/// assert!(backup.document("user::demo")?.is_some());
/// replicator.remove_change_listener(token);
/// # Ok::<(), ferrolite::Error>(())
/// ```
#[derive(Clone)]
pub struct Replicator {
    inner: Arc<Inner>,
}

struct Inner {
    engine: ferrolite_replicator::Replicator,
    config: ReplicatorConfiguration,
    handle: Handle,
    listeners: Mutex<HashMap<ListenerToken, ferrolite_replicator::ListenerToken>>,
}

impl Drop for Inner {
    fn drop(&mut self) {
        let _runtime = self.handle.enter();
        self.engine.stop();
    }
}

impl fmt::Debug for Replicator {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Replicator")
            .field("config", &self.inner.config)
            .field("activity", &self.status().activity)
            .finish()
    }
}

impl Replicator {
    /// A stopped replicator for `config`. Fails when either database is closed, when a
    /// database endpoint names the replicated database itself, or when a message
    /// endpoint has an empty remote ID ([`ErrorCode::InvalidParameter`]).
    ///
    /// [`ErrorCode::InvalidParameter`]: crate::ErrorCode::InvalidParameter
    pub fn new(config: ReplicatorConfiguration) -> Result<Replicator> {
        let store = config.database.store()?;
        let engine_config = config.engine_config()?;
        let transport = config.transport();
        let handle = runtime::handle()?;
        let engine = {
            let _runtime = handle.enter();
            ferrolite_replicator::Replicator::new(store, transport, engine_config)
        };
        Ok(Replicator {
            inner: Arc::new(Inner {
                engine,
                config,
                handle,
                listeners: Mutex::new(HashMap::new()),
            }),
        })
    }

    /// The configuration the replicator was created with.
    pub fn config(&self) -> &ReplicatorConfiguration {
        &self.inner.config
    }

    /// Starts replicating from the saved checkpoint. Returns at once; a one-shot
    /// replicator stops by itself when caught up. Starting a running replicator does
    /// nothing.
    pub fn start(&self) {
        let _runtime = self.inner.handle.enter();
        self.inner.engine.start(false);
    }

    /// Starts replicating from the beginning, ignoring the saved checkpoint (documents
    /// already on both sides cost only a round trip each).
    pub fn start_with_reset_checkpoint(&self) {
        let _runtime = self.inner.handle.enter();
        self.inner.engine.start(true);
    }

    /// Asks the replicator to stop: it closes the connection, saves its checkpoint and
    /// reports [`ActivityLevel::Stopped`](crate::ActivityLevel::Stopped). Returns at once.
    pub fn stop(&self) {
        let _runtime = self.inner.handle.enter();
        self.inner.engine.stop();
    }

    /// The current status: activity level, progress, and the last error.
    pub fn status(&self) -> ReplicatorStatus {
        let _runtime = self.inner.handle.enter();
        self.inner.engine.status()
    }

    /// Registers a listener called with every status change (on a runtime thread: keep it
    /// quick, and use the `_async` methods if it must wait for something).
    pub fn add_change_listener(
        &self,
        listener: impl Fn(&ReplicatorStatus) + Send + Sync + 'static,
    ) -> ListenerToken {
        let engine_token = self.inner.engine.add_change_listener(listener);
        let token = ListenerToken::next_replicator_token();
        self.inner
            .listeners
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(token, engine_token);
        token
    }

    /// Registers a listener called with documents as they finish replicating, pushed or
    /// pulled, each with its revision, flags ([`ReplicatedDocument::flags`]: deleted,
    /// access removed) and error if it failed (Couchbase Lite's document replication
    /// listener). Each call carries one batch of one direction (a `proposeChanges` batch,
    /// or a batch of received revisions committed together). A pulled revision that
    /// conflicted with a local change is reported with
    /// [`ReplicatorError::Conflict`] (then resolved and pushed), one the pull filter
    /// refused with [`ReplicatorError::Rejected`]. Called on a runtime thread, in order
    /// with the status listeners.
    pub fn add_document_replication_listener(
        &self,
        listener: impl Fn(&[ReplicatedDocument]) + Send + Sync + 'static,
    ) -> ListenerToken {
        let engine_token = self.inner.engine.add_document_listener(listener);
        let token = ListenerToken::next_replicator_token();
        self.inner
            .listeners
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(token, engine_token);
        token
    }

    /// Removes a listener added with [`add_change_listener`](Self::add_change_listener)
    /// or [`add_document_replication_listener`](Self::add_document_replication_listener);
    /// harmless if it was already removed.
    pub fn remove_change_listener(&self, token: ListenerToken) {
        let engine_token = self
            .inner
            .listeners
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(&token);
        if let Some(engine_token) = engine_token {
            self.inner.engine.remove_change_listener(engine_token);
        }
    }

    /// The IDs of the local documents the next push would send (Couchbase Lite's
    /// `pendingDocumentIDs`): changed since the last saved checkpoint (deleted ones
    /// included), not already on the remote, and passing the document-ID list and the push
    /// filter. Valid before the replicator ever connected (it reads the local checkpoint);
    /// while it runs, documents pushed since the last checkpoint save may still be listed.
    ///
    /// Fails with [`ErrorCode::InvalidParameter`](crate::ErrorCode::InvalidParameter) for
    /// a pull-only replicator.
    pub fn pending_document_ids(&self) -> Result<HashSet<String>> {
        let engine = self.inner.engine.clone();
        runtime::block_on(async move { engine.pending_document_ids().await })?.map_err(Into::into)
    }

    /// Whether the next push would send document `id` (Couchbase Lite's
    /// `isDocumentPending`; see [`pending_document_ids`](Self::pending_document_ids)).
    pub fn is_document_pending(&self, id: &str) -> Result<bool> {
        let engine = self.inner.engine.clone();
        let id = id.to_owned();
        runtime::block_on(async move { engine.is_document_pending(&id).await })?.map_err(Into::into)
    }

    /// [`pending_document_ids`](Self::pending_document_ids) for async code.
    pub fn pending_document_ids_async(
        &self,
    ) -> impl Future<Output = Result<HashSet<String>>> + Send + 'static {
        let engine = self.inner.engine.clone();
        async move {
            runtime::run(async move { engine.pending_document_ids().await })
                .await?
                .map_err(Into::into)
        }
    }

    /// Blocks until the replicator is stopped, for at most `timeout`; the final status,
    /// or `None` if it is still running when the time is up.
    pub fn wait_until_stopped(&self, timeout: Duration) -> Option<ReplicatorStatus> {
        let engine = self.inner.engine.clone();
        runtime::block_on(async move {
            tokio::time::timeout(timeout, engine.wait_until_stopped())
                .await
                .ok()
        })
        .ok()
        .flatten()
    }

    /// Waits until the replicator is stopped and returns the final status; usable from any
    /// async executor.
    pub fn wait_until_stopped_async(&self) -> impl Future<Output = ReplicatorStatus> + Send {
        let engine = self.inner.engine.clone();
        async move {
            let fallback = engine.clone();
            match runtime::run(async move { engine.wait_until_stopped().await }).await {
                Ok(status) => status,
                Err(_) => fallback.status(),
            }
        }
    }

    /// Replicates once and reports what happened, returning before `deadline` (measured
    /// from this call) has passed: the background-refresh call of a mobile app.
    ///
    /// The replicator must be stopped. It runs one-shot whatever its configuration says;
    /// when the deadline nears (a tenth of the budget before, at most 500 ms), it is
    /// stopped: what arrived is kept and the checkpoint saved. The outcome is
    /// [`SyncOutcome::NewData`] with the IDs of the documents that arrived (pulled; even
    /// if the run then failed or ran out of time), [`SyncOutcome::NoData`], or
    /// [`SyncOutcome::Failed`] with the error (its
    /// [`domain_and_code`](crate::ReplicatorError::domain_and_code), or
    /// [`Error::from`](crate::Error) for the facade's domain and code).
    ///
    /// Blocks the calling thread; safe to call from inside a tokio runtime (async code
    /// should still prefer [`sync_once_async`](Self::sync_once_async)).
    pub fn sync_once(&self, deadline: Duration) -> SyncOutcome {
        let work = self.sync_once_from(Instant::now(), deadline);
        runtime::block_on(work).unwrap_or_else(failed)
    }

    /// [`sync_once`](Self::sync_once) for async code: the deadline is measured from this
    /// call; the replication runs on ferrolite's runtime whatever executor awaits it.
    pub fn sync_once_async(
        &self,
        deadline: Duration,
    ) -> impl Future<Output = SyncOutcome> + Send + 'static {
        let work = self.sync_once_from(Instant::now(), deadline);
        async move { runtime::run(work).await.unwrap_or_else(failed) }
    }

    /// The work of `sync_once`, to run on the replication runtime: the engine gets a
    /// deadline slightly before the caller's (a twentieth of the budget, at most 200 ms,
    /// is kept for handing the outcome back), and the work is cut off just before the
    /// caller's deadline in any case.
    fn sync_once_from(
        &self,
        started: Instant,
        budget: Duration,
    ) -> impl Future<Output = SyncOutcome> + Send + 'static {
        let engine = self.inner.engine.clone();
        // Keeps the replicator alive until the work is done, whatever the caller drops.
        let keep = self.inner.clone();
        let hand_back = (budget / 20).min(MAX_HAND_BACK);
        let engine_deadline = started + budget.saturating_sub(hand_back);
        let cut_off = started + budget.saturating_sub(hand_back / 2);
        async move {
            let _keep = keep;
            let engine_deadline = tokio::time::Instant::from_std(engine_deadline);
            let cut_off = tokio::time::Instant::from_std(cut_off);
            match tokio::time::timeout_at(cut_off, engine.sync_once(engine_deadline)).await {
                Ok(outcome) => outcome,
                Err(_) => {
                    engine.stop();
                    SyncOutcome::Failed(ReplicatorError::DeadlineExceeded)
                }
            }
        }
    }
}

/// A [`SyncOutcome::Failed`] for a facade error (the runtime cannot start, a database is
/// closed…).
fn failed(error: crate::Error) -> SyncOutcome {
    SyncOutcome::Failed(ReplicatorError::Config(error.to_string()))
}

/// Replicates once with `config` and reports what happened, returning before `deadline`
/// (measured from this call): the whole background refresh of a mobile app in one call.
///
/// The configuration runs one-shot whatever it says; an app woken in the background
/// usually pulls only. See [`Replicator::sync_once`] for the outcome.
///
/// ```
/// use std::time::Duration;
/// use ferrolite::{Database, Endpoint, MutableDocument, ReplicatorConfiguration, ReplicatorType, SyncOutcome};
///
/// let server = Database::open_in_memory("server")?;
/// let phone = Database::open_in_memory("phone")?;
/// server.save(MutableDocument::with_id("user::demo").set("name", "Demo User"))?;
///
/// let config = ReplicatorConfiguration::new(&phone, Endpoint::database(&server))
///     .replicator_type(ReplicatorType::Pull);
/// match ferrolite::sync_once(config.clone(), Duration::from_secs(30)) {
///     SyncOutcome::NewData { document_ids, .. } => assert_eq!(document_ids, ["user::demo"]),
///     other => panic!("expected new data, got {other:?}"),
/// }
/// assert!(matches!(ferrolite::sync_once(config, Duration::from_secs(30)), SyncOutcome::NoData));
/// # Ok::<(), ferrolite::Error>(())
/// ```
pub fn sync_once(config: ReplicatorConfiguration, deadline: Duration) -> SyncOutcome {
    let started = Instant::now();
    match Replicator::new(config.continuous(false)) {
        Ok(replicator) => {
            let work = replicator.sync_once_from(started, deadline);
            runtime::block_on(work).unwrap_or_else(failed)
        }
        Err(error) => failed(error),
    }
}

/// [`sync_once`] for async code: the deadline is measured from this call.
pub fn sync_once_async(
    config: ReplicatorConfiguration,
    deadline: Duration,
) -> impl Future<Output = SyncOutcome> + Send + 'static {
    let started = Instant::now();
    let work = Replicator::new(config.continuous(false))
        .map(|replicator| replicator.sync_once_from(started, deadline));
    async move {
        match work {
            Ok(work) => runtime::run(work).await.unwrap_or_else(failed),
            Err(error) => failed(error),
        }
    }
}
