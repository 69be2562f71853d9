//! The Couchbase Mobile wire protocol, sans I/O.
//!
//! - [`blip`]: BLIP 3 framing: frames in and out of WebSocket binary messages, varints, CRC-32,
//!   per-direction deflate, message multiplexing, ACK flow control.
//! - [`messages`]: the typed replication messages (`getCheckpoint`, `subChanges`, `changes`,
//!   `rev`, …) and their replies, to and from [`blip::Message`].
//! - [`delta`]: the JSON delta format used by delta sync (create and apply).
//!
//! The crate owns no sockets, tasks or timers: a driver (the replicator) feeds it bytes and
//! messages and sends what it yields.

pub mod blip;
pub mod delta;
pub mod messages;

mod error;

pub use error::ProtocolError;
