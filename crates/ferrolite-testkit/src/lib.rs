//! Test and benchmark support shared by ferrolite's tests and benches (unpublished).
//!
//! - [`workload`]: the deterministic "user profile" document generator shared with the peer
//!   benchmark harness (`peer-pouchdb/lib/docs.js`), byte-identical to it.
//! - `hostile` (feature `hostile`): misbehaving WebSocket and BLIP peers, decompression
//!   bombs, mutated transcript frames and resident-memory readings, for the robustness and
//!   load tests of the replication servers.
//!
//! ```
//! use ferrolite_testkit::workload;
//!
//! let json = workload::make_doc_json(0, 1, "user");
//! assert!(json.starts_with(r#"{"_id":"user:00000000","type":"user","#));
//! ```

#[cfg(feature = "hostile")]
pub mod hostile;
pub mod workload;
