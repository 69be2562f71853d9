//! Documents, revision IDs, revision trees and blob references.
//!
//! This crate is the bottom of ferrolite: pure data and algorithms, no I/O, no threads.
//! Everything above it (storage, protocol, replicator, facade) speaks in these types.
//!
//! ```
//! use ferrolite_document::{RevId, RevTree, canonical_json};
//! use serde_json::json;
//!
//! let body = canonical_json(&json!({"name": "Alice", "age": 30}));
//! let mut tree = RevTree::new();
//! let rev = tree.add_child(None, body.into(), false, 1).unwrap();
//! assert_eq!(rev.as_str(), "1-291c8a3c890453134009043aa089fcd9b5f8f217");
//! assert_eq!(tree.current().unwrap().id(), &rev);
//! ```

mod blob;
mod body;
mod canonical;
mod error;
mod revid;
mod tree;

pub use blob::{find_blobs, is_blob_dict, BlobDigest, BlobDigester, BlobRef, BLOB_TYPE};
pub use body::{validate_doc_id, validate_user_properties, Properties, MAX_DOC_ID_LEN};
pub use canonical::{canonical_json, canonical_json_of_properties, write_canonical_json};
pub use error::DocumentError;
pub use revid::RevId;
pub use tree::{
    InsertMode, InsertOutcome, RevTree, Revision, DEFAULT_KEEP_ANCESTOR_BODIES, DEFAULT_MAX_DEPTH,
};
