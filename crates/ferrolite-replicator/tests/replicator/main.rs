//! Replication between real redb databases, over an in-process pipe and over a real
//! WebSocket on 127.0.0.1, plus protocol-level tests of the passive side and replays of
//! real Couchbase Lite traffic. One test binary (one link) for the whole crate.

#![allow(clippy::unwrap_used, clippy::expect_used, unreachable_pub, dead_code)]

mod access;
mod basic;
mod content;
mod decisions;
mod faults;
mod faulty;
mod interop;
mod passive;
mod resilience;
mod support;
mod sync_once;
