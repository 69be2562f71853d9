//! An arbitrary sequence of frames into one BLIP connection, exercising multi-frame assembly,
//! the shared inflate stream, the running CRC, ACKs and the request/response tables.
//!
//! Input format: repeated `[len: u8][len bytes of frame]`; a frame whose first byte is `0xff`
//! is instead a command: send a request of our own (so responses have something to match).

#![no_main]

use ferrolite_protocol::blip::{Config, Connection, Message};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let mut config = Config::default();
    config.max_message_size = 1 << 20;
    config.max_frame_inflate = 1 << 20;
    config.max_frame_size = 256;
    let mut conn = Connection::new(config);
    let mut rest = data;
    while let Some((&len, tail)) = rest.split_first() {
        let len = usize::from(len).min(tail.len());
        let (frame, tail) = tail.split_at(len);
        rest = tail;
        if frame.first() == Some(&0xff) {
            let mut request = Message::request("fuzz");
            request.compressed = frame.len() % 2 == 0;
            request.body = frame.to_vec().into();
            let _ = conn.send(request);
        } else {
            match conn.receive(frame) {
                Ok(Some(message)) => {
                    // Answer what can be answered; the codec refuses the rest.
                    let _ = conn.send(Message::response_to(&message));
                }
                Ok(None) => {}
                Err(_) => {
                    assert!(conn.has_failed());
                    break;
                }
            }
        }
        while conn.next_frame().is_some() {}
    }
});
