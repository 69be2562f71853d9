//! [`ExpiryPurger`]: a thread that purges documents when their expiration time comes.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crate::{Result, Store};

/// How many expired documents one transaction purges at most.
const BATCH: usize = 1000;
/// How long to wait before trying again after an error.
const RETRY_DELAY: Duration = Duration::from_secs(1);
/// The longest the thread sleeps before looking again (it follows the wall clock, which may
/// be changed while it sleeps).
const MAX_SLEEP: Duration = Duration::from_secs(60);

type PurgedCallback = Box<dyn Fn(&[String]) + Send + Sync>;

/// Purges documents whose expiration time has come, on a thread of its own.
///
/// The thread sleeps until the earliest expiration in the store ([`Store::next_expiration`]),
/// or until [`ExpiryPurger::wake`] when there is none; then it purges the expired documents
/// (up to 1000 per transaction) and reports their IDs to the callback after each commit.
/// Errors are logged (target `ferrolite::database`) and retried after a delay. Dropping the
/// purger stops the thread and waits for it.
pub struct ExpiryPurger {
    shared: Arc<Shared>,
    thread: Option<JoinHandle<()>>,
}

struct Shared {
    signal: Mutex<Signal>,
    condvar: Condvar,
}

#[derive(Default)]
struct Signal {
    woken: bool,
    stop: bool,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Signal> {
        self.signal.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Waits until woken, stopped, or `timeout` (forever when `None`) has passed. Returns
    /// `false` when the thread must stop.
    fn wait(&self, timeout: Option<Duration>) -> bool {
        let deadline = timeout.and_then(|t| Instant::now().checked_add(t));
        let mut signal = self.lock();
        loop {
            if signal.stop {
                return false;
            }
            if signal.woken {
                signal.woken = false;
                return true;
            }
            signal = match deadline {
                None => self
                    .condvar
                    .wait(signal)
                    .unwrap_or_else(PoisonError::into_inner),
                Some(deadline) => {
                    let now = Instant::now();
                    if now >= deadline {
                        return true;
                    }
                    self.condvar
                        .wait_timeout(signal, deadline - now)
                        .unwrap_or_else(PoisonError::into_inner)
                        .0
                }
            };
        }
    }
}

impl ExpiryPurger {
    /// Starts the purging thread for `store`; `on_purged` receives the IDs of the documents
    /// purged by each transaction, after it committed.
    #[allow(clippy::type_complexity)]
    pub fn spawn(
        store: Arc<dyn Store>,
        on_purged: Box<dyn Fn(&[String]) + Send + Sync>,
    ) -> ExpiryPurger {
        let shared = Arc::new(Shared {
            signal: Mutex::new(Signal::default()),
            condvar: Condvar::new(),
        });
        let thread_shared = Arc::clone(&shared);
        let thread = std::thread::Builder::new()
            .name("ferrolite-expiry".into())
            .spawn(move || run(&*store, &on_purged, &thread_shared));
        let thread = match thread {
            Ok(thread) => Some(thread),
            Err(e) => {
                tracing::warn!(target: "ferrolite::database", error = %e, "cannot start the document expiration thread; expired documents will not be purged");
                None
            }
        };
        ExpiryPurger { shared, thread }
    }

    /// Makes the thread look at the store's next expiration again: call it after setting an
    /// expiration.
    pub fn wake(&self) {
        self.shared.lock().woken = true;
        self.shared.condvar.notify_all();
    }
}

impl std::fmt::Debug for ExpiryPurger {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ExpiryPurger")
            .field("running", &self.thread.is_some())
            .finish()
    }
}

impl Drop for ExpiryPurger {
    fn drop(&mut self) {
        self.shared.lock().stop = true;
        self.shared.condvar.notify_all();
        if let Some(thread) = self.thread.take() {
            // The callback may drop the purger on the purger's own thread: do not join it then.
            if thread.thread().id() != std::thread::current().id() && thread.join().is_err() {
                tracing::warn!(target: "ferrolite::database", "the document expiration thread panicked");
            }
        }
    }
}

/// What the thread does next.
enum Next {
    /// Look again right away (more may have expired).
    Again,
    /// Sleep until this time (ms since the Unix epoch).
    At(u64),
    /// Nothing expires: sleep until woken.
    Idle,
    /// Something is wrong: try again later.
    Retry,
}

fn run(store: &dyn Store, on_purged: &PurgedCallback, shared: &Shared) {
    loop {
        let timeout = match step(store, on_purged) {
            Ok(Next::Again) => Some(Duration::ZERO),
            Ok(Next::At(ms)) => {
                let delay = Duration::from_millis(ms.saturating_sub(now_ms()));
                Some(delay.min(MAX_SLEEP))
            }
            Ok(Next::Idle) => None,
            Ok(Next::Retry) => Some(RETRY_DELAY),
            Err(e) => {
                tracing::warn!(target: "ferrolite::database", error = %e, "purging expired documents failed; will retry");
                Some(RETRY_DELAY)
            }
        };
        if !shared.wait(timeout) {
            return;
        }
    }
}

/// Purges what has expired, if anything, and tells what to do next.
fn step(store: &dyn Store, on_purged: &PurgedCallback) -> Result<Next> {
    let now = now_ms();
    match store.next_expiration()? {
        None => Ok(Next::Idle),
        Some(ms) if ms > now => Ok(Next::At(ms)),
        Some(_) => {
            let summary = store.write(&mut |txn| {
                for id in txn.expired(now, BATCH)? {
                    txn.purge(&id)?;
                }
                Ok(())
            })?;
            if summary.purged.is_empty() {
                tracing::warn!(target: "ferrolite::database", "the expiration index names documents that are not stored; will retry");
                return Ok(Next::Retry);
            }
            let ids = &summary.purged;
            if catch_unwind(AssertUnwindSafe(|| on_purged(ids))).is_err() {
                tracing::warn!(target: "ferrolite::database", "the purged-documents callback panicked");
            }
            Ok(Next::Again)
        }
    }
}

/// The wall-clock time in ms since the Unix epoch.
fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}
