//! Storage for ferrolite databases.
//!
//! [`Store`] is the one interface the layers above use to keep documents (with their revision
//! trees), the change feed, local documents (checkpoints) and content-addressed blobs.
//! [`RedbStore`] keeps them on disk (the default); [`MemoryStore`] keeps them in memory.
//! Both pass the same conformance suite (`tests/conformance.rs`).

mod codec;
mod error;
mod expiry;
mod feed;
mod memory;
mod observed;
mod redb_store;
mod shared;
mod store;
mod stream;

pub use error::StorageError;
pub use expiry::ExpiryPurger;
pub use feed::ChangeFeed;
pub use memory::MemoryStore;
pub use observed::{ObservedStore, ObserverId};
pub use redb_store::{RedbOptions, RedbStore, DEFAULT_CACHE_SIZE};
pub use store::{
    Change, CommitSummary, DatabaseUuids, DocumentRecord, Result, Store, StoredBlob, Transaction,
};
