//! Arbitrary bytes as one WebSocket binary message into a fresh BLIP connection: errors are
//! fine, panics and unbounded allocations are not.

#![no_main]

use ferrolite_protocol::blip::{Config, Connection, Message};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let mut config = Config::default();
    config.max_message_size = 1 << 20;
    config.max_frame_inflate = 1 << 20;
    let mut conn = Connection::new(config);
    // One request of ours outstanding, so response frames #1 reach the assembler too.
    let _ = conn.send(Message::request("fuzz"));
    while conn.next_frame().is_some() {}
    if conn.receive(data).is_err() {
        assert!(conn.has_failed());
    }
    while conn.next_frame().is_some() {}
});
