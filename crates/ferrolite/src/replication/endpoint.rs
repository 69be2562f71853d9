//! Where a replicator replicates to: a URL, another database, or a transport the
//! application brings.

use std::fmt;
use std::sync::Arc;

use async_trait::async_trait;
use ferrolite_replicator::{serve_passive, PassiveOptions};
use ferrolite_storage::Store as _;
use ferrolite_transport::{
    pipe, Connection, Transport, TransportError, UrlEndpoint, DEFAULT_SUBPROTOCOLS,
};

use crate::{Database, Error, ErrorCode, Result};

/// The target of a replication, like Couchbase Lite's `URLEndpoint`, `DatabaseEndpoint` and
/// `MessageEndpoint`.
///
/// * [`Endpoint::url`]: a Sync Gateway or a peer's [`UrlEndpointListener`]
///   (`ws://host:port/db`, or `wss://` for TLS).
/// * [`Endpoint::database`]: another database in the same process, reached through an
///   in-process pipe (no sockets).
/// * [`Endpoint::message`]: any [`Transport`] the application implements (Bluetooth,
///   Multipeer Connectivity, a serial link…), usually built with
///   [`transport::message_stream`](crate::transport::message_stream) or
///   [`transport::byte_stream`](crate::transport::byte_stream).
///
/// [`UrlEndpointListener`]: crate::UrlEndpointListener
#[derive(Clone)]
pub struct Endpoint {
    pub(crate) kind: EndpointKind,
}

#[derive(Clone)]
pub(crate) enum EndpointKind {
    Url {
        url: String,
        endpoint: Box<UrlEndpoint>,
    },
    Database(Database),
    Message {
        id: String,
        transport: Arc<dyn Transport>,
    },
}

impl Endpoint {
    /// A WebSocket endpoint: `ws://host[:port]/<database>` or `wss://…`. Other schemes,
    /// URLs without a database name and URLs with credentials in them (use an
    /// [`Authenticator`](crate::Authenticator)) are refused with
    /// [`ErrorCode::InvalidParameter`].
    pub fn url(url: &str) -> Result<Endpoint> {
        let endpoint = UrlEndpoint::parse(url)
            .map_err(|e| Error::new(ErrorCode::InvalidParameter, e.to_string()).caused_by(e))?;
        Ok(Endpoint {
            kind: EndpointKind::Url {
                url: url.to_owned(),
                endpoint: Box::new(endpoint),
            },
        })
    }

    /// Another database of this process (Couchbase Lite's `DatabaseEndpoint`). Each
    /// connection is an in-process pipe whose far end is served by a passive peer on
    /// `database`; its change listeners hear of what the replicator writes. Delta sync is
    /// never used with it (as in Couchbase Lite); blobs are copied.
    pub fn database(database: &Database) -> Endpoint {
        Endpoint {
            kind: EndpointKind::Database(database.clone()),
        }
    }

    /// A transport the application brings (Couchbase Lite's `MessageEndpoint`).
    /// `remote_id` names the remote peer stably across runs (it keys the replication
    /// checkpoint, as the URL does for a URL endpoint); `transport` opens one connection
    /// per replication attempt. Delta sync is used (as in Couchbase Lite) unless
    /// [`ReplicatorConfiguration::enable_delta_sync`](crate::ReplicatorConfiguration::enable_delta_sync)
    /// turns it off.
    pub fn message(remote_id: impl Into<String>, transport: Arc<dyn Transport>) -> Endpoint {
        Endpoint {
            kind: EndpointKind::Message {
                id: remote_id.into(),
                transport,
            },
        }
    }

    /// The URL of a URL endpoint.
    pub fn url_string(&self) -> Option<&str> {
        match &self.kind {
            EndpointKind::Url { url, .. } => Some(url),
            _ => None,
        }
    }
}

impl fmt::Debug for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.kind {
            EndpointKind::Url { url, .. } => f.debug_tuple("Url").field(url).finish(),
            EndpointKind::Database(db) => f.debug_tuple("Database").field(&db.name()).finish(),
            EndpointKind::Message { id, .. } => f.debug_tuple("Message").field(id).finish(),
        }
    }
}

/// The public UUID of a database, as lowercase hex.
pub(crate) fn public_uuid_hex(database: &Database) -> Result<String> {
    let uuids = database.store()?.uuids()?;
    Ok(uuids.public.iter().map(|b| format!("{b:02x}")).collect())
}

/// The transport of a database endpoint: each connection is a [`pipe`] whose far end is
/// served by [`serve_passive`] on the target database.
pub(crate) struct DatabaseTransport {
    pub(crate) target: Database,
}

#[async_trait]
impl Transport for DatabaseTransport {
    async fn connect(&self) -> std::result::Result<Connection, TransportError> {
        // A closed target database is as permanent as a missing one: 404, no retry.
        let store = self
            .target
            .store()
            .map_err(|e| TransportError::HttpStatus {
                status: 404,
                reason: format!("database {:?}: {}", self.target.name(), e.message()),
            })?;
        let (active, passive) = pipe();
        let subprotocol = Some(DEFAULT_SUBPROTOCOLS[0].to_owned());
        let name = self.target.name().to_owned();
        tokio::spawn(async move {
            let passive = passive.with_subprotocol(subprotocol);
            // No delta sync between two databases of one process (Couchbase Lite's rule).
            let options = PassiveOptions {
                disable_deltas: true,
                ..PassiveOptions::default()
            };
            if let Err(e) = serve_passive(store, passive, options).await {
                tracing::debug!(target: "ferrolite::replicator", database = %name, "passive peer ended: {e}");
            }
        });
        Ok(active.with_subprotocol(Some(DEFAULT_SUBPROTOCOLS[0].to_owned())))
    }
}
