//! ferrolite: an embedded JSON document database whose replication speaks Couchbase Mobile's
//! protocol.
//!
//! An application opens a [`Database`], saves [`MutableDocument`]s (JSON properties, with
//! [`Blob`]s for binary content), reads [`Document`]s back, and listens for changes.
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

mod blob;
mod database;
mod document;
mod error;
mod listener;

pub use blob::Blob;
pub use database::{
    Batch, Changes, ConcurrencyControl, Database, DatabaseConfiguration, DATABASE_DIRECTORY_SUFFIX,
};
pub use document::{Document, MutableDocument};
pub use error::{Error, ErrorCode, ErrorDomain, Result};
pub use listener::{DatabaseChange, DocumentChange, ListenerToken};

pub use ferrolite_document::{BlobDigest, Properties, RevId};
pub use ferrolite_storage::Change;
