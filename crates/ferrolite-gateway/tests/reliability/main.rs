//! Reliability: the gateway and ferrolite clients under broken networks and killed
//! processes. One test binary, which also plays the child processes of the kill tests.
//!
//! - `network`: two clients replicate continuously with a gateway, each through a fault
//!   proxy that cuts, delays and stalls its TCP connections (from a seed); everyone edits
//!   the same documents; once the proxies heal, all three databases must become identical.
//! - `kills`: a client process killed with SIGKILL during a pull and during a push, and a
//!   gateway process killed during pushes from several clients: whatever was acknowledged
//!   survives, the database reopens, and the next run resumes from its checkpoint.
//!
//! `FERROLITE_SOAK=1` multiplies the seeds and the kills by ten (`cargo xtask soak`);
//! `FERROLITE_FAULT_SEED=N` replays one seed of the network test.

#![allow(clippy::unwrap_used, clippy::expect_used, unreachable_pub, dead_code)]

mod kills;
mod network;
mod proxy;
mod support;
