//! What a peer can make a connection hold: incoming messages being assembled together
//! (`Config::max_incomplete_size`), and the replies queued for a peer that does not read
//! them (`Connection::unsent_responses`, which drivers use to stop taking requests).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use bytes::Bytes;
use ferrolite_protocol::blip::{
    BlipError, Config, Connection, Message, CLOSE_MESSAGE_TOO_BIG, INCOMPLETE_MESSAGE_COST,
};

fn small_frames() -> Config {
    let mut config = Config::default();
    config.max_frame_size = 1024;
    config.small_frame_size = 1024;
    config.compression_level = 0;
    config
}

fn limited(max_incomplete_size: usize) -> Config {
    let mut config = Config::default();
    config.max_incomplete_size = max_incomplete_size;
    config
}

fn request(n: usize, len: usize) -> Message {
    let mut message = Message::request("big");
    message.properties.set("n", n.to_string());
    message.body = Bytes::from(vec![b'x'; len]);
    message
}

#[test]
fn interleaved_incomplete_messages_are_bounded_together() {
    let mut sender = Connection::new(small_frames());
    let mut receiver = Connection::new(limited(10_000));
    // Twenty 4 KiB requests go out round robin, one frame of each in turn: twenty
    // incomplete messages of about 1 KiB each exceed 10,000 bytes together.
    for n in 0..20 {
        sender.send(request(n, 4096)).unwrap();
    }
    let mut accepted = 0;
    let error = loop {
        let frame = sender
            .next_frame()
            .expect("frames until the receiver refuses");
        match receiver.receive(&frame) {
            Ok(_) => accepted += 1,
            Err(error) => break error,
        }
    };
    assert_eq!(error, BlipError::IncompleteMessagesTooLarge { max: 10_000 });
    assert_eq!(error.close_code(), CLOSE_MESSAGE_TOO_BIG);
    assert!(receiver.has_failed());
    // Each counts its data plus the bookkeeping cost: about 1 KiB + 256 bytes.
    let per_message = 1024 + INCOMPLETE_MESSAGE_COST;
    assert!(
        (10_000 / per_message - 1..=10_000 / per_message + 1).contains(&accepted),
        "{accepted} frames accepted"
    );
}

#[test]
fn completed_messages_give_their_share_back() {
    let mut sender = Connection::new(small_frames());
    let mut receiver = Connection::new(limited(10_000));
    // One 4 KiB request at a time, 100 of them: never more than one incomplete.
    let mut received = 0;
    for n in 0..100 {
        sender.send(request(n, 4096)).unwrap();
        while let Some(frame) = sender.next_frame() {
            if let Some(message) = receiver.receive(&frame).unwrap() {
                assert_eq!(message.body.len(), 4096);
                received += 1;
            }
        }
    }
    assert_eq!(received, 100);
}

#[test]
fn one_message_larger_than_the_limit_is_refused() {
    let mut sender = Connection::new(small_frames());
    let mut receiver = Connection::new(limited(10_000));
    sender.send(request(0, 20_000)).unwrap();
    let error = loop {
        let frame = sender
            .next_frame()
            .expect("frames until the receiver refuses");
        if let Err(error) = receiver.receive(&frame) {
            break error;
        }
    };
    assert_eq!(error, BlipError::IncompleteMessagesTooLarge { max: 10_000 });
}

#[test]
fn unsent_responses_count_the_replies_queued() {
    let mut client = Connection::default();
    let mut server = Connection::default();
    for n in 0..3 {
        client.send(request(n, 10)).unwrap();
    }
    let mut requests = Vec::new();
    while let Some(frame) = client.next_frame() {
        if let Some(message) = server.receive(&frame).unwrap() {
            requests.push(message);
        }
    }
    assert_eq!(server.unsent_responses(), (0, 0));
    let mut expected = 0;
    for (i, request) in requests.iter().enumerate() {
        let mut reply = Message::response_to(request);
        reply.body = Bytes::from(vec![b'r'; 100 * (i + 1)]);
        // An empty property block: its one-byte length prefix, then the body.
        expected += 1 + 100 * (i + 1);
        server.send(reply).unwrap();
    }
    // A request of the server's own does not count.
    server.send(request(9, 50)).unwrap();
    assert_eq!(server.unsent_responses(), (3, expected));
    while let Some(frame) = server.next_frame() {
        client.receive(&frame).unwrap();
    }
    assert_eq!(server.unsent_responses(), (0, 0));
}
