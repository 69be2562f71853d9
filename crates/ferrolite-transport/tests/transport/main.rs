//! Integration tests of ferrolite-transport on real sockets (127.0.0.1 only).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

mod byte_stream;
mod conformance;
mod tls_modes;
mod websocket;
