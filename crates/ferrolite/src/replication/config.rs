//! [`ReplicatorConfiguration`]: what to replicate, where, and how.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use ferrolite_replicator::ReplicatorType;
use ferrolite_transport::{Authenticator, Certificate, ServerTrust, Transport, UrlEndpoint};

use super::decisions::{engine_filter, engine_resolver, FilterFn, ResolverFn};
use super::endpoint::{public_uuid_hex, DatabaseTransport, EndpointKind};
use crate::{
    Conflict, ConflictResolution, Database, Document, DocumentFlags, Endpoint, Error, ErrorCode,
    Result,
};

/// How a [`Replicator`](crate::Replicator) replicates: the local database, the target
/// [`Endpoint`], the direction, one-shot or continuous, and the connection options of a
/// URL endpoint. Built like Couchbase Lite's `ReplicatorConfiguration`:
///
/// ```
/// use std::time::Duration;
/// use ferrolite::{Authenticator, Database, Endpoint, ReplicatorConfiguration, ReplicatorType};
///
/// let db = Database::open_in_memory("userprofile")?;
/// let config = ReplicatorConfiguration::new(&db, Endpoint::url("ws://localhost:4984/userprofile")?)
///     .replicator_type(ReplicatorType::Pull)
///     .continuous(false)
///     .authenticator(Authenticator::basic("demo@example.com", "password"))
///     .header("X-Client", "profile-app")
///     .heartbeat(Duration::from_secs(60))
///     .max_attempts(3);
/// # let _ = config;
/// # Ok::<(), ferrolite::Error>(())
/// ```
///
/// The defaults are Couchbase Lite's: push and pull, one-shot, no authenticator, a
/// heartbeat every 300 s, 10 attempts for a one-shot replicator and unlimited for a
/// continuous one, at most 300 s between attempts, platform root certificates for `wss://`.
///
/// The connection options (authenticator, headers, heartbeat, certificate trust) apply to
/// URL endpoints only; the other endpoint kinds ignore them, as Couchbase Lite does.
#[derive(Clone)]
pub struct ReplicatorConfiguration {
    pub(crate) database: Database,
    pub(crate) target: Endpoint,
    pub(crate) replicator_type: ReplicatorType,
    pub(crate) continuous: bool,
    authenticator: Option<Authenticator>,
    headers: Vec<(String, String)>,
    heartbeat: Option<Duration>,
    max_attempts: u32,
    max_attempt_wait_time: Option<Duration>,
    pinned_server_certificate: Option<Vec<u8>>,
    accept_only_self_signed_server_certificate: bool,
    enable_delta_sync: bool,
    conflict_resolver: Option<ResolverFn>,
    push_filter: Option<FilterFn>,
    pull_filter: Option<FilterFn>,
    document_ids: Vec<String>,
    channels: Vec<String>,
}

impl ReplicatorConfiguration {
    /// Replicates `database` with `target`, push and pull, one-shot.
    pub fn new(database: &Database, target: Endpoint) -> ReplicatorConfiguration {
        ReplicatorConfiguration {
            database: database.clone(),
            target,
            replicator_type: ReplicatorType::PushAndPull,
            continuous: false,
            authenticator: None,
            headers: Vec::new(),
            heartbeat: None,
            max_attempts: 0,
            max_attempt_wait_time: None,
            pinned_server_certificate: None,
            accept_only_self_signed_server_certificate: false,
            enable_delta_sync: true,
            conflict_resolver: None,
            push_filter: None,
            pull_filter: None,
            document_ids: Vec::new(),
            channels: Vec::new(),
        }
    }

    /// Push, pull, or both (the default).
    pub fn replicator_type(mut self, replicator_type: ReplicatorType) -> Self {
        self.replicator_type = replicator_type;
        self
    }

    /// Continuous: stay connected and replicate changes as they happen, until
    /// [`Replicator::stop`](crate::Replicator::stop). One-shot (the default): stop once
    /// caught up.
    pub fn continuous(mut self, continuous: bool) -> Self {
        self.continuous = continuous;
        self
    }

    /// How to authenticate to a URL endpoint (Basic or a Sync Gateway session).
    pub fn authenticator(mut self, authenticator: Authenticator) -> Self {
        self.authenticator = Some(authenticator);
        self
    }

    /// Adds a header to the WebSocket upgrade request of a URL endpoint (Couchbase Lite's
    /// `headers`), for example for a proxy's own authentication.
    pub fn header(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.headers.push((name.into(), value.into()));
        self
    }

    /// The interval of WebSocket pings on a URL endpoint (default 300 s; zero means the
    /// default, as in Couchbase Lite). A server that stops answering is detected within
    /// `min(20 s, interval − 1 s)` and the connection is treated as lost (transient).
    pub fn heartbeat(mut self, interval: Duration) -> Self {
        self.heartbeat = (!interval.is_zero()).then_some(interval);
        self
    }

    /// How many times to try to connect when a connection fails with a transient error
    /// (the first attempt included); 0 means the default: 10 for a one-shot replicator,
    /// unlimited for a continuous one. 1 means no retry.
    pub fn max_attempts(mut self, attempts: u32) -> Self {
        self.max_attempts = attempts;
        self
    }

    /// The longest wait between two attempts (default 300 s; the waits double from 2 s).
    /// Zero means the default.
    pub fn max_attempt_wait_time(mut self, wait: Duration) -> Self {
        self.max_attempt_wait_time = (!wait.is_zero()).then_some(wait);
        self
    }

    /// Trusts a `wss://` server only if it presents exactly this certificate (DER bytes),
    /// whoever issued it; its validity period is still checked. Takes precedence over
    /// [`accept_only_self_signed_server_certificate`](Self::accept_only_self_signed_server_certificate).
    pub fn pinned_server_certificate(mut self, der: Vec<u8>) -> Self {
        self.pinned_server_certificate = Some(der);
        self
    }

    /// With `true`, a `wss://` server is trusted only if its certificate is self-signed
    /// (no host-name check); certificates issued by a CA are refused. Meant for peers
    /// running a [`UrlEndpointListener`](crate::UrlEndpointListener) with a generated
    /// identity.
    pub fn accept_only_self_signed_server_certificate(mut self, accept: bool) -> Self {
        self.accept_only_self_signed_server_certificate = accept;
        self
    }

    /// Delta sync (default on): pulled revisions may arrive as JSON deltas against a
    /// revision this database has, and pushed ones are sent as deltas when the remote
    /// accepts them (Sync Gateway with `delta_sync.enabled`, another ferrolite peer), which
    /// saves bandwidth when a large document changes a little. As in Couchbase Lite, a
    /// [`Endpoint::database`] replication never uses deltas (nothing to save in one
    /// process), whatever this says; URL and message endpoints follow it.
    pub fn enable_delta_sync(mut self, enable: bool) -> Self {
        self.enable_delta_sync = enable;
        self
    }

    /// Resolves conflicts between a pulled revision and the local one (Couchbase Lite's
    /// `conflictResolver`). Without one, Couchbase Lite 3.x's default rule applies: a
    /// deletion wins, else the higher generation, else the greater revision ID.
    ///
    /// Whatever it decides is written as a revision descending from the remote one (keep
    /// remote: the remote revision itself; keep local, merged properties or delete: a new
    /// child of it), the local branch is dropped, and the result is pushed. The resolver
    /// runs on a replicator thread, outside any transaction, and may be called again if the
    /// document changes meanwhile; a resolver that panics or returns invalid properties
    /// leaves the document in conflict and is reported to the document listeners.
    ///
    /// ```
    /// use ferrolite::{ConflictResolution, Database, Endpoint, ReplicatorConfiguration};
    ///
    /// # let db = Database::open_in_memory("phone")?;
    /// # let server = Database::open_in_memory("server")?;
    /// let config = ReplicatorConfiguration::new(&db, Endpoint::database(&server))
    ///     .conflict_resolver(|conflict| match (conflict.local_document(), conflict.remote_document()) {
    ///         (Some(local), Some(remote)) => {
    ///             let mut merged = remote.properties().clone();
    ///             merged.extend(local.properties().clone());
    ///             ConflictResolution::Merged(merged)
    ///         }
    ///         _ => conflict.default_resolution(),
    ///     });
    /// # let _ = config;
    /// # Ok::<(), ferrolite::Error>(())
    /// ```
    pub fn conflict_resolver(
        mut self,
        resolver: impl Fn(&Conflict) -> ConflictResolution + Send + Sync + 'static,
    ) -> Self {
        self.conflict_resolver = Some(Arc::new(resolver));
        self
    }

    /// Decides which local changes are pushed (Couchbase Lite's `pushFilter`): called with
    /// the document's current revision (a deletion has empty properties and the `deleted`
    /// flag) when it is about to be proposed. A document refused is not pushed **and counts
    /// as done**: it is not offered again until it changes (or the checkpoint is reset).
    /// Keep it quick and free of side effects; it runs on a replicator thread.
    pub fn push_filter(
        mut self,
        filter: impl Fn(&Document, DocumentFlags) -> bool + Send + Sync + 'static,
    ) -> Self {
        self.push_filter = Some(Arc::new(filter));
        self
    }

    /// Decides which received revisions are saved (Couchbase Lite's `pullFilter`): called
    /// after a revision arrives, before it is saved (its document's sequence is 0), and
    /// for an access removal (empty properties, the `access_removed` flag: refusing keeps
    /// the local copy). A revision refused is answered `HTTP 403 "rejected by validation
    /// function"`, reported to the document listeners with that error
    /// ([`ReplicatorError::Rejected`](crate::ReplicatorError::Rejected), WebSocket 403),
    /// and counts as done (the checkpoint moves past it).
    pub fn pull_filter(
        mut self,
        filter: impl Fn(&Document, DocumentFlags) -> bool + Send + Sync + 'static,
    ) -> Self {
        self.pull_filter = Some(Arc::new(filter));
        self
    }

    /// Replicates only these documents (Couchbase Lite's `documentIDs`): pushes are
    /// filtered locally; pulls send the list in `subChanges` (Sync Gateway accepts it for
    /// one-shot replications only). An empty list means every document. The list is part
    /// of the checkpoint's identity.
    pub fn document_ids<I, S>(mut self, ids: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.document_ids = ids.into_iter().map(Into::into).collect();
        self
    }

    /// Pulls only documents of these Sync Gateway channels (Couchbase Lite's `channels`):
    /// sent as `filter=sync_gateway/bychannel`, `channels=a,b`; the server does the
    /// filtering. An empty list means every channel the user can read. A ferrolite peer
    /// (`UrlEndpointListener`, database and message endpoints) has no channels and ignores
    /// the list. Part of the checkpoint's identity.
    pub fn channels<I, S>(mut self, channels: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.channels = channels.into_iter().map(Into::into).collect();
        self
    }

    /// The local database.
    pub fn database(&self) -> &Database {
        &self.database
    }

    /// The target endpoint.
    pub fn target(&self) -> &Endpoint {
        &self.target
    }

    /// Whether the replicator is continuous.
    pub fn is_continuous(&self) -> bool {
        self.continuous
    }

    /// The engine configuration: direction, retries, and the checkpoint's remote ID.
    pub(crate) fn engine_config(&self) -> Result<ferrolite_replicator::ReplicatorConfig> {
        let mut config = ferrolite_replicator::ReplicatorConfig {
            replicator_type: self.replicator_type,
            continuous: self.continuous,
            max_attempts: self.max_attempts,
            remote_id: self.remote_id()?,
            conflict_resolver: self.conflict_resolver.clone().map(engine_resolver),
            push_filter: self.push_filter.clone().map(engine_filter),
            pull_filter: self.pull_filter.clone().map(engine_filter),
            document_ids: self.document_ids.clone(),
            channels: self.channels.clone(),
            enable_delta_sync: self.enable_delta_sync
                && !matches!(self.target.kind, EndpointKind::Database(_)),
            ..Default::default()
        };
        if let Some(wait) = self.max_attempt_wait_time {
            config.max_attempt_wait = wait;
        }
        Ok(config)
    }

    /// The stable identity of the remote, keying the checkpoint: the URL, the other
    /// database's public UUID, or the application's ID for a message endpoint.
    fn remote_id(&self) -> Result<String> {
        match &self.target.kind {
            EndpointKind::Url { url, .. } => Ok(url.clone()),
            EndpointKind::Database(target) => {
                let target_uuid = public_uuid_hex(target)?;
                if target_uuid == public_uuid_hex(&self.database)? {
                    return Err(Error::new(
                        ErrorCode::InvalidParameter,
                        "a database cannot replicate with itself",
                    ));
                }
                Ok(target_uuid)
            }
            EndpointKind::Message { id, .. } => {
                if id.is_empty() {
                    return Err(Error::new(
                        ErrorCode::InvalidParameter,
                        "a message endpoint needs a non-empty remote ID",
                    ));
                }
                Ok(id.clone())
            }
        }
    }

    /// The transport that opens connections to the target, with the connection options.
    pub(crate) fn transport(&self) -> Arc<dyn Transport> {
        match &self.target.kind {
            EndpointKind::Url { endpoint, .. } => {
                let mut endpoint = UrlEndpoint::clone(endpoint);
                if let Some(authenticator) = &self.authenticator {
                    endpoint = endpoint.with_authenticator(authenticator.clone());
                }
                for (name, value) in &self.headers {
                    endpoint = endpoint.with_header(name.clone(), value.clone());
                }
                if let Some(heartbeat) = self.heartbeat {
                    endpoint = endpoint.with_heartbeat(Some(heartbeat));
                }
                if let Some(der) = &self.pinned_server_certificate {
                    endpoint = endpoint.with_trust(ServerTrust::PinnedCertificate(
                        Certificate::from_der(der.clone()),
                    ));
                } else if self.accept_only_self_signed_server_certificate {
                    endpoint = endpoint.with_trust(ServerTrust::SelfSignedOnly);
                }
                Arc::new(endpoint)
            }
            EndpointKind::Database(target) => Arc::new(DatabaseTransport {
                target: target.clone(),
            }),
            EndpointKind::Message { transport, .. } => transport.clone(),
        }
    }
}

impl fmt::Debug for ReplicatorConfiguration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ReplicatorConfiguration")
            .field("database", &self.database.name())
            .field("target", &self.target)
            .field("replicator_type", &self.replicator_type)
            .field("continuous", &self.continuous)
            .field("authenticator", &self.authenticator)
            .field(
                "headers",
                &self.headers.iter().map(|(n, _)| n).collect::<Vec<_>>(),
            )
            .field("heartbeat", &self.heartbeat)
            .field("max_attempts", &self.max_attempts)
            .field("max_attempt_wait_time", &self.max_attempt_wait_time)
            .field(
                "pinned_server_certificate",
                &self.pinned_server_certificate.is_some(),
            )
            .field(
                "accept_only_self_signed_server_certificate",
                &self.accept_only_self_signed_server_certificate,
            )
            .field("enable_delta_sync", &self.enable_delta_sync)
            .field("conflict_resolver", &self.conflict_resolver.is_some())
            .field("push_filter", &self.push_filter.is_some())
            .field("pull_filter", &self.pull_filter.is_some())
            .field("document_ids", &self.document_ids)
            .field("channels", &self.channels)
            .finish()
    }
}
