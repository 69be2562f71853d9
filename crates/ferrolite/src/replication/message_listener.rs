//! [`MessageEndpointListener`]: the passive side of a message endpoint.

use std::fmt;
use std::future::Future;
use std::sync::Arc;

use ferrolite_replicator::{serve_passive, PassiveOptions, PeerAccess};
use ferrolite_transport::Connection;

use super::runtime;
use crate::{Database, Error, Result};

/// Serves replication connections that arrive over a transport the application brings
/// (Couchbase Lite's `MessageEndpointListener`): the passive peer for the other side's
/// [`Endpoint::message`](crate::Endpoint::message).
///
/// The application accepts a connection on its transport, turns it into a
/// [`Connection`] (with [`transport::message_stream`](crate::transport::message_stream)
/// or [`transport::byte_stream`](crate::transport::byte_stream) in the
/// [`Passive`](crate::transport::ByteStreamRole::Passive) role) and hands it to
/// [`accept`](Self::accept). Sessions run on ferrolite's runtime until the peer closes.
#[derive(Clone)]
pub struct MessageEndpointListener {
    database: Database,
    options: PassiveOptions,
}

impl fmt::Debug for MessageEndpointListener {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MessageEndpointListener")
            .field("database", &self.database.name())
            .field("read_only", &self.options.read_only)
            .field("read_filter", &self.options.read_filter.is_some())
            .field("peer_access", &self.options.access.is_some())
            .finish()
    }
}

impl MessageEndpointListener {
    /// Serves `database`, read-write.
    pub fn new(database: &Database) -> MessageEndpointListener {
        MessageEndpointListener {
            database: database.clone(),
            options: PassiveOptions::default(),
        }
    }

    /// With `true`, no delta sync with peers: deltas are neither sent nor offered, and a
    /// received delta is refused.
    pub fn disable_deltas(mut self, disable: bool) -> Self {
        self.options.disable_deltas = disable;
        self
    }

    /// With `true`, peers may pull but not push.
    pub fn read_only(mut self, read_only: bool) -> Self {
        self.options.read_only = read_only;
        self
    }

    /// Peers pull only the documents for which `filter` (called with the document ID, on a
    /// blocking thread) returns `true`; the others are left out of their change feeds.
    /// Used by the gateway for channel access.
    pub fn read_filter(mut self, filter: impl Fn(&str) -> bool + Send + Sync + 'static) -> Self {
        self.options.read_filter = Some(Arc::new(filter));
        self
    }

    /// Peers read and write through `access`, decided by channels (used by the gateway for
    /// its users, channels and sync function): their change feeds follow their readable
    /// channels — documents of channels granted later are sent when granted, and documents
    /// they lose access to are announced so that they purge them — and each revision they
    /// push is checked with [`PeerAccess::check_write`] before it is stored (a refusal is
    /// answered with its HTTP status). Its methods are called on blocking threads.
    ///
    /// ```
    /// use std::collections::{HashMap, HashSet};
    /// use std::sync::Arc;
    /// use ferrolite::{
    ///     ChannelChange, Database, IncomingWrite, MessageEndpointListener, PeerAccess,
    ///     WriteRejected,
    /// };
    /// use tokio::sync::watch;
    ///
    /// /// Reads everything, refuses deletions.
    /// struct NoDeletions(watch::Sender<u64>);
    ///
    /// impl PeerAccess for NoDeletions {
    ///     fn readable_channels(&self) -> Option<HashMap<String, u64>> {
    ///         None
    ///     }
    ///     fn subscribe(&self) -> watch::Receiver<u64> {
    ///         self.0.subscribe()
    ///     }
    ///     fn changes_in(&self, _: &HashSet<String>, _: u64, _: usize) -> Vec<ChannelChange> {
    ///         Vec::new()
    ///     }
    ///     fn documents_in(&self, _: &HashSet<String>) -> Vec<String> {
    ///         Vec::new()
    ///     }
    ///     fn check_write(&self, write: &IncomingWrite<'_>) -> Result<(), WriteRejected> {
    ///         if write.deleted {
    ///             return Err(WriteRejected { status: 403, message: "no deletions".into() });
    ///         }
    ///         Ok(())
    ///     }
    /// }
    ///
    /// let db = Database::open_in_memory("shared")?;
    /// let access = Arc::new(NoDeletions(watch::channel(0).0));
    /// let listener = MessageEndpointListener::new(&db).peer_access(access);
    /// # drop(listener);
    /// # Ok::<(), ferrolite::Error>(())
    /// ```
    pub fn peer_access(mut self, access: Arc<dyn PeerAccess>) -> Self {
        self.options.access = Some(access);
        self
    }

    /// Serves one connection in the background and returns at once. Fails when the
    /// database is closed.
    pub fn accept(&self, connection: Connection) -> Result<()> {
        let store = self.database.store()?;
        let options = self.options.clone();
        let name = self.database.name().to_owned();
        runtime::spawn(async move {
            if let Err(e) = serve_passive(store, connection, options).await {
                tracing::debug!(target: "ferrolite::replicator", database = %name, "message endpoint session ended: {e}");
            }
        })?;
        Ok(())
    }

    /// Serves one connection and completes when the session ends: `Ok` when the peer
    /// closed normally, else the error. Runs on ferrolite's runtime, whatever executor
    /// awaits it.
    pub fn serve(&self, connection: Connection) -> impl Future<Output = Result<()>> + Send {
        let store = self.database.store();
        let options = self.options.clone();
        async move {
            let store = store?;
            runtime::run(serve_passive(store, connection, options))
                .await?
                .map_err(Error::from)
        }
    }
}
