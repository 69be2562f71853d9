//! ferrolite: an embedded JSON document database whose replication speaks Couchbase Mobile's
//! protocol.
//!
//! An application opens a [`Database`], saves [`MutableDocument`]s (JSON properties, with
//! [`Blob`]s for binary content), reads [`Document`]s back, and listens for changes. It
//! replicates with a Sync Gateway, a Couchbase Lite or ferrolite peer, another local
//! database or over its own transport through a [`Replicator`] (see below), and serves
//! peers with a [`UrlEndpointListener`].
//!
//! ```
//! use ferrolite::{Blob, Database, DatabaseConfiguration, MutableDocument};
//!
//! let dir = tempfile::tempdir()?;
//! let db = Database::open("userprofile", &DatabaseConfiguration::new(dir.path()))?;
//!
//! let mut profile = MutableDocument::with_id("user::demo@example.com");
//! profile.set("type", "user").set("name", "Demo User");
//! profile.set_blob("image", Blob::from_bytes("image/png", b"\x89PNG...".to_vec()));
//! db.save(&mut profile)?;
//!
//! let saved = db.document("user::demo@example.com")?.expect("saved");
//! let image = saved.blob("image").expect("a blob");
//! assert_eq!(db.blob_content(&image)?, b"\x89PNG...");
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

//! # Replication
//!
//! ```
//! use std::time::Duration;
//! use ferrolite::{
//!     Database, Endpoint, MutableDocument, ReplicatorConfiguration, ReplicatorType, SyncOutcome,
//!     UrlEndpointListener, UrlEndpointListenerConfiguration,
//! };
//!
//! // A "server" database served over WebSocket on 127.0.0.1.
//! let server = Database::open_in_memory("userprofile")?;
//! server.save(MutableDocument::with_id("user::demo").set("name", "Demo User"))?;
//! let listener = UrlEndpointListener::start(
//!     UrlEndpointListenerConfiguration::new(vec![server.clone()]).network_interface("127.0.0.1"),
//! )?;
//!
//! // The app pulls once, as a background refresh does.
//! let phone = Database::open_in_memory("phone")?;
//! let target = Endpoint::url(&listener.url("userprofile"))?;
//! let config = ReplicatorConfiguration::new(&phone, target).replicator_type(ReplicatorType::Pull);
//! match ferrolite::sync_once(config, Duration::from_secs(30)) {
//!     SyncOutcome::NewData { document_ids, .. } => assert_eq!(document_ids, ["user::demo"]),
//!     other => panic!("unexpected {other:?}"),
//! }
//! listener.stop();
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

mod blob;
mod database;
mod document;
mod error;
mod listener;
pub mod logging;
mod replication;

pub use blob::Blob;
pub use database::{
    Batch, Changes, ConcurrencyControl, Database, DatabaseConfiguration, DATABASE_DIRECTORY_SUFFIX,
};
pub use document::{Document, MutableDocument};
pub use error::{Error, ErrorCode, ErrorDomain, Result};
pub use listener::{DatabaseChange, DocumentChange, ListenerToken};
pub use replication::{
    sync_once, sync_once_async, Conflict, ConflictResolution, Endpoint, MessageEndpointListener,
    Replicator, ReplicatorConfiguration, UrlEndpointListener, UrlEndpointListenerConfiguration,
};

pub use ferrolite_replicator::{
    ActivityLevel, ChannelChange, Direction, DocumentFlags, IncomingWrite, PeerAccess, Progress,
    ReplicatedDocument, ReplicatorError, ReplicatorStatus, ReplicatorType, SyncOutcome,
    WriteRejected,
};
pub use ferrolite_transport::Authenticator;

pub use ferrolite_document::{BlobDigest, Properties, RevId, RevTree, Revision};
pub use ferrolite_storage::Change;

pub mod transport {
    //! What an application needs to bring its own transport to replication
    //! ([`Endpoint::message`](crate::Endpoint::message),
    //! [`MessageEndpointListener`](crate::MessageEndpointListener)) or to configure TLS.
    //!
    //! A transport implements [`Transport`] (with the re-exported [`macro@async_trait`]
    //! attribute): one [`Connection`] per replication attempt. Most transports build that
    //! connection with [`message_stream`] (the transport keeps message boundaries: the
    //! application shuttles messages through a [`MessageStreamHandle`]) or [`byte_stream`]
    //! (the transport moves bytes: WebSocket framing over any `AsyncRead + AsyncWrite`, the
    //! replicator's end in the [`ByteStreamRole::Active`] role).

    pub use async_trait::async_trait;
    pub use ferrolite_transport::{
        byte_stream, message_stream, message_stream_default, pipe, ByteStreamConfig,
        ByteStreamRole, Certificate, CloseInfo, Connection, ErrorDomain, Incoming, MessageInbound,
        MessageOutbound, MessageReceiver, MessageSender, MessageStreamHandle, Outgoing,
        TlsIdentity, Transport, TransportError, BYTE_STREAM_SUBPROTOCOL,
    };
}
