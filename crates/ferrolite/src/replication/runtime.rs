//! The process-wide tokio runtime that runs every replicator, listener and passive peer.
//!
//! The public API is synchronous: a blocking call spawns its work here and waits for the
//! answer on the calling thread. That is safe from any thread, including one that runs a
//! tokio runtime of the application: the wait never calls `Runtime::block_on` (which would
//! panic there), and on a multi-threaded runtime it goes through
//! [`tokio::task::block_in_place`] so the application's other tasks keep running.

use std::future::Future;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{mpsc, OnceLock};

use tokio::runtime::{Builder, Handle, Runtime, RuntimeFlavor};
use tokio::task::JoinHandle;

use crate::{Error, ErrorCode, Result};

/// Worker threads of the runtime: replication is I/O-bound, and storage work runs on the
/// blocking pool.
const WORKER_THREADS: usize = 2;
/// Most threads of the blocking pool. Storage work is short and the machine has few cores:
/// beyond this, work waits in line rather than starting a thread whose allocator arena and
/// stack stay behind (a thousand busy peers otherwise grow the pool to tokio's 512).
const MAX_BLOCKING_THREADS: usize = 64;

static RUNTIME: OnceLock<std::result::Result<Runtime, String>> = OnceLock::new();

/// The runtime's handle, creating the runtime on first use.
pub(crate) fn handle() -> Result<Handle> {
    let runtime = RUNTIME.get_or_init(|| {
        Builder::new_multi_thread()
            .worker_threads(WORKER_THREADS)
            .max_blocking_threads(MAX_BLOCKING_THREADS)
            .thread_name_fn(|| {
                static NEXT: AtomicUsize = AtomicUsize::new(0);
                format!("ferrolite-rt-{}", NEXT.fetch_add(1, Ordering::Relaxed))
            })
            .enable_all()
            .build()
            .map_err(|e| e.to_string())
    });
    match runtime {
        Ok(runtime) => Ok(runtime.handle().clone()),
        Err(message) => Err(Error::new(
            ErrorCode::UnexpectedError,
            format!("cannot start the replication runtime: {message}"),
        )),
    }
}

/// Spawns `future` on the runtime.
pub(crate) fn spawn<F>(future: F) -> Result<JoinHandle<F::Output>>
where
    F: Future + Send + 'static,
    F::Output: Send + 'static,
{
    Ok(handle()?.spawn(future))
}

/// Runs `future` on the runtime and blocks the calling thread until it finishes.
///
/// Callable from anywhere, including from inside a tokio runtime (see the module
/// documentation); on a current-thread runtime the application's tasks are paused
/// meanwhile, so async code should prefer [`run`].
pub(crate) fn block_on<F>(future: F) -> Result<F::Output>
where
    F: Future + Send + 'static,
    F::Output: Send + 'static,
{
    let (tx, rx) = mpsc::sync_channel(1);
    spawn(async move {
        // The receiver is gone only if the caller stopped waiting, which it does not.
        let _ = tx.send(future.await);
    })?;
    let wait = move || rx.recv();
    let output = match Handle::try_current() {
        Ok(current) if current.runtime_flavor() == RuntimeFlavor::MultiThread => {
            tokio::task::block_in_place(wait)
        }
        _ => wait(),
    };
    output.map_err(|_| {
        Error::new(
            ErrorCode::UnexpectedError,
            "a replication task ended without an answer (it panicked)",
        )
    })
}

/// Runs `future` on the runtime and awaits it from any executor.
pub(crate) async fn run<F>(future: F) -> Result<F::Output>
where
    F: Future + Send + 'static,
    F::Output: Send + 'static,
{
    spawn(future)?.await.map_err(|e| {
        Error::new(
            ErrorCode::UnexpectedError,
            format!("a replication task failed: {e}"),
        )
    })
}
