//! Replication, shaped like Couchbase Lite's API: a [`ReplicatorConfiguration`] names the
//! local database, an [`Endpoint`] and the options; a [`Replicator`] runs it; a
//! [`UrlEndpointListener`] or [`MessageEndpointListener`] is the passive side;
//! [`sync_once`] is the one-call background refresh.
//!
//! Everything asynchronous runs on a private, process-wide tokio runtime (two worker
//! threads named `ferrolite-rt-N`, created on first use), so the API is synchronous and
//! works without any runtime of the application's; the `_async` variants serve
//! applications that have one.

mod config;
mod decisions;
mod endpoint;
mod message_listener;
mod replicator;
mod runtime;
mod url_listener;

pub use config::ReplicatorConfiguration;
pub use decisions::{Conflict, ConflictResolution};
pub use endpoint::Endpoint;
pub use message_listener::MessageEndpointListener;
pub use replicator::{sync_once, sync_once_async, Replicator};
pub use url_listener::{UrlEndpointListener, UrlEndpointListenerConfiguration};
