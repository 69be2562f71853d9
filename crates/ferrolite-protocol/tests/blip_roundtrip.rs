//! Two connections shuttling frames: many concurrent messages in both directions, flow
//! control, scheduling, and the protocol errors a receiver must refuse.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::{HashMap, VecDeque};

use bytes::Bytes;
use ferrolite_protocol::blip::{
    flags, varint, BlipError, Config, Connection, FrameHeader, FrameType, Message, MessageType,
};

/// xorshift64*: deterministic test randomness.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }

    fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }
}

fn body(rng: &mut Rng, len: usize) -> Bytes {
    let mut out = Vec::with_capacity(len);
    if rng.chance(50) {
        // Compressible: JSON-ish text.
        let mut i = 0u64;
        while out.len() < len {
            out.extend_from_slice(
                format!("{{\"n\":{i},\"name\":\"item-{}\"}},", i % 97).as_bytes(),
            );
            i += 1;
        }
        out.truncate(len);
    } else {
        while out.len() < len {
            out.extend_from_slice(&rng.next().to_le_bytes());
        }
        out.truncate(len);
    }
    Bytes::from(out)
}

/// One side of the test link: its connection and what it sent.
struct Side {
    conn: Connection,
    /// Requests sent, by number: the original message.
    requests: HashMap<u64, Message>,
    /// Received responses, by number.
    responses: HashMap<u64, Message>,
    /// Requests received from the peer, by number.
    received: Vec<Message>,
}

impl Side {
    fn new(config: Config) -> Side {
        Side {
            conn: Connection::new(config),
            requests: HashMap::new(),
            responses: HashMap::new(),
            received: Vec::new(),
        }
    }
}

/// Sender-side flow-control bookkeeping from the frames themselves.
#[derive(Default)]
struct InFlight {
    /// (is response, number) → frame data bytes sent.
    sent: HashMap<(bool, u64), u64>,
    /// (is response, number) → bytes acknowledged by ACKs delivered to the sender.
    acked: HashMap<(bool, u64), u64>,
    max_outstanding: u64,
}

impl InFlight {
    fn on_sent(&mut self, frame: &[u8]) {
        let h = FrameHeader::parse(frame).unwrap();
        if h.frame_type().is_ack() {
            return;
        }
        let key = (h.frame_type() != FrameType::Request, h.number);
        let sent = self.sent.entry(key).or_default();
        *sent += (frame.len() - h.len) as u64;
        let acked = self.acked.get(&key).copied().unwrap_or(0);
        self.max_outstanding = self.max_outstanding.max(*sent - acked);
        if !h.has(flags::MORE_COMING) {
            self.sent.remove(&key);
            self.acked.remove(&key);
        }
    }

    /// An ACK frame arriving back at the sender.
    fn on_ack_delivered(&mut self, frame: &[u8]) {
        let h = FrameHeader::parse(frame).unwrap();
        if !h.frame_type().is_ack() {
            return;
        }
        let key = (h.frame_type() == FrameType::AckResponse, h.number);
        if self.sent.contains_key(&key) {
            let (bytes, _) = varint::read(&frame[h.len..]).unwrap();
            self.acked.insert(key, bytes);
        }
    }
}

/// Runs the exchange until both sides are idle: returns the sides.
fn exchange(seed: u64, messages_per_side: usize, sizes: &[usize]) -> (Side, Side, [InFlight; 2]) {
    let mut rng = Rng(seed);
    let mut sides = [Side::new(Config::default()), Side::new(Config::default())];
    let mut wires: [VecDeque<Vec<u8>>; 2] = [VecDeque::new(), VecDeque::new()];
    let mut inflight = [InFlight::default(), InFlight::default()];
    let mut to_send: [usize; 2] = [messages_per_side; 2];
    let mut index = 0u64;
    loop {
        let mut progress = false;
        for s in 0..2 {
            // Queue new requests now and then.
            if to_send[s] > 0 && rng.chance(30) {
                to_send[s] -= 1;
                let mut m = Message::request("test");
                m.properties.set("i", index.to_string());
                index += 1;
                m.urgent = rng.chance(25);
                m.compressed = rng.chance(50);
                m.no_reply = rng.chance(20);
                let len = sizes[rng.below(sizes.len() as u64) as usize];
                m.body = body(&mut rng, len);
                let number = sides[s].conn.send(m.clone()).unwrap();
                m.number = number;
                sides[s].requests.insert(number, m);
                progress = true;
            }
            // Send a few frames.
            for _ in 0..rng.below(4) {
                if let Some(frame) = sides[s].conn.next_frame() {
                    inflight[s].on_sent(&frame);
                    wires[s].push_back(frame);
                    progress = true;
                }
            }
            // Deliver a few frames from the peer.
            for _ in 0..rng.below(4) {
                let Some(frame) = wires[1 - s].pop_front() else {
                    break;
                };
                progress = true;
                inflight[s].on_ack_delivered(&frame);
                let Some(message) = sides[s].conn.receive(&frame).unwrap() else {
                    continue;
                };
                match message.kind {
                    MessageType::Request => {
                        if !message.no_reply {
                            let mut reply = if rng.chance(10) {
                                Message::error_to(&message, "HTTP", 409, "conflict")
                            } else {
                                let mut r = Message::response_to(&message);
                                r.properties.set("i", message.property("i").unwrap());
                                r.body = message.body.clone();
                                r.compressed = message.compressed;
                                r
                            };
                            reply.compressed |= rng.chance(10);
                            sides[s].conn.send(reply).unwrap();
                        }
                        sides[s].received.push(message);
                    }
                    MessageType::Response | MessageType::Error => {
                        let number = message.number;
                        assert!(sides[s].responses.insert(number, message).is_none());
                    }
                }
            }
        }
        let idle = to_send == [0, 0]
            && wires.iter().all(VecDeque::is_empty)
            && sides.iter().all(|s| !s.conn.wants_to_send());
        if idle && !progress {
            break;
        }
    }
    let [a, b] = sides;
    (a, b, inflight)
}

fn check_delivery(sender: &Side, receiver: &Side) {
    // Every request arrived intact, in number order of first frames (else `receive` fails).
    assert_eq!(receiver.received.len(), sender.requests.len());
    for got in &receiver.received {
        let sent = &sender.requests[&got.number];
        assert_eq!(got, sent, "request #{}", got.number);
    }
    // Every request that wanted an answer got exactly one, echoing it or an error.
    for (number, request) in &sender.requests {
        match sender.responses.get(number) {
            None => assert!(request.no_reply, "request #{number} unanswered"),
            Some(response) => {
                assert!(!request.no_reply);
                assert_eq!(response.urgent, request.urgent);
                match response.kind {
                    MessageType::Error => assert_eq!(response.error(), Some(("HTTP", 409))),
                    _ => {
                        assert_eq!(response.body, request.body, "response #{number}");
                        assert_eq!(response.property("i"), request.property("i"));
                    }
                }
            }
        }
    }
    assert!(sender.conn.awaiting_responses().is_empty());
}

#[test]
fn many_concurrent_messages_arrive_intact() {
    let sizes = [0, 1, 10, 300, 5_000, 16_380, 40_000, 150_000, 1_000_000];
    let (a, b, inflight) = exchange(0x5eed, 30, &sizes);
    check_delivery(&a, &b);
    check_delivery(&b, &a);
    let limit = Config::default().max_unacked_bytes + Config::default().max_frame_size as u64;
    for side in &inflight {
        assert!(
            side.max_outstanding <= limit,
            "{} unacked bytes",
            side.max_outstanding
        );
    }
    // Big messages were actually paused for ACKs.
    assert!(a.conn.stats().flow_control_pauses + b.conn.stats().flow_control_pauses > 0);
    assert!(a.conn.stats().acks_sent > 0 && b.conn.stats().acks_received > 0);
}

#[test]
fn many_small_messages_with_several_seeds() {
    for seed in 1..6 {
        let (a, b, _) = exchange(seed, 40, &[0, 1, 2, 50, 700, 4_000, 20_000]);
        check_delivery(&a, &b);
        check_delivery(&b, &a);
    }
}

#[test]
fn flow_control_pauses_until_ack() {
    let mut a = Connection::new(Config::default());
    let mut b = Connection::new(Config::default());
    let mut m = Message::request("big");
    m.body = Bytes::from(vec![7u8; 1_000_000]);
    a.send(m.clone()).unwrap();

    let mut delivered = None;
    let mut rounds = 0;
    loop {
        // Everything A can send without hearing from B.
        let mut burst = Vec::new();
        while let Some(frame) = a.next_frame() {
            burst.push(frame);
        }
        if burst.is_empty() {
            break;
        }
        rounds += 1;
        // Frame data bytes (after the 2-byte header) sent in this burst.
        let data: usize = burst.iter().map(|f| f.len() - 2).sum();
        assert!(data as u64 <= 128_000 + 16_384, "burst {data}");
        if a.paused_messages() == 1 {
            // Paused: at least the limit went out, and nothing more can until an ACK.
            assert!(data as u64 >= 128_000 - 16_384, "burst {data}");
            assert!(!a.wants_to_send());
        }
        for frame in &burst {
            if let Some(message) = b.receive(frame).unwrap() {
                delivered = Some(message);
            }
        }
        // B owes ACKs; deliver them.
        while let Some(ack) = b.next_frame() {
            assert_eq!(
                FrameHeader::parse(&ack).unwrap().frame_type(),
                FrameType::AckRequest
            );
            a.receive(&ack).unwrap();
        }
    }
    assert!(rounds >= 7, "{rounds} bursts for 1 MB at 128 KB each");
    assert!(a.stats().flow_control_pauses >= 6);
    let mut delivered = delivered.unwrap();
    assert_eq!(delivered.number, 1);
    delivered.number = 0;
    assert_eq!(delivered, m);
}

#[test]
fn urgent_messages_overtake_a_big_normal_one() {
    let mut a = Connection::new(Config::default());
    let mut big = Message::request("big");
    big.body = Bytes::from(vec![1u8; 100_000]);
    a.send(big).unwrap();
    // The big message starts with a big frame.
    assert_eq!(a.next_frame().unwrap().len(), 16_384);
    let mut urgent = Message::request("urgent");
    urgent.urgent = true;
    urgent.body = Bytes::from(vec![2u8; 30_000]);
    a.send(urgent).unwrap();
    let mut order = vec![1];
    let mut urgent_done = false;
    while let Some(frame) = a.next_frame() {
        let h = FrameHeader::parse(&frame).unwrap();
        if h.number == 1 && !urgent_done {
            // While the urgent message waits behind it, the normal one uses small frames.
            assert!(frame.len() <= 4_096, "{}", frame.len());
        } else {
            assert!(frame.len() <= 16_384);
        }
        if h.number == 2 && !h.has(flags::MORE_COMING) {
            urgent_done = true;
        }
        order.push(h.number);
    }
    // The frames alternate, so the urgent message finishes long before the big one.
    assert_eq!(order[..5], [1, 1, 2, 1, 2], "{order:?}");
    assert!(order[5..].iter().all(|&n| n == 1), "{order:?}");
}

#[test]
fn new_messages_never_overtake_new_messages() {
    let mut a = Connection::new(Config::default());
    let mut b = Connection::new(Config::default());
    for i in 0..10 {
        let mut m = Message::request("x");
        m.urgent = i % 3 == 0;
        m.body = Bytes::from(vec![0u8; 20_000 * (i % 2)]);
        a.send(m).unwrap();
    }
    let mut first_frames = Vec::new();
    while let Some(frame) = a.next_frame() {
        let h = FrameHeader::parse(&frame).unwrap();
        if !first_frames.contains(&h.number) {
            first_frames.push(h.number);
        }
        b.receive(&frame).unwrap();
    }
    assert_eq!(first_frames, (1..=10).collect::<Vec<_>>());
}

#[test]
fn no_reply_requests_are_not_tracked() {
    let mut a = Connection::new(Config::default());
    let mut b = Connection::new(Config::default());
    let mut m = Message::request("changes");
    m.no_reply = true;
    m.urgent = true;
    assert_eq!(a.send(m).unwrap(), 1);
    assert!(a.awaiting_responses().is_empty());
    let frame = a.next_frame().unwrap();
    assert_eq!(frame[1], flags::URGENT | flags::NO_REPLY);
    let got = b.receive(&frame).unwrap().unwrap();
    assert!(got.no_reply && !b.is_unanswered(1));
    assert_eq!(
        b.send(Message::response_to(&got)),
        Err(BlipError::NotAwaitingResponse { number: 1 })
    );
}

#[test]
fn compression_level_zero_sends_plain() {
    let mut config = Config::default();
    config.compression_level = 0;
    let mut a = Connection::new(config);
    let mut m = Message::request("rev");
    m.compressed = true;
    m.body = Bytes::from_static(b"{\"a\":1}");
    a.send(m).unwrap();
    let frame = a.next_frame().unwrap();
    assert_eq!(frame[1] & flags::COMPRESSED, 0);
}

#[test]
fn compressed_frames_stay_within_the_frame_size() {
    for max in [64, 200, 4_096, 16_384, 32_768] {
        let mut config = Config::default();
        config.max_frame_size = max;
        let mut a = Connection::new(config);
        let mut b = Connection::new(Config::default());
        let mut rng = Rng(max as u64);
        for len in [0, 10, 1_000, 100_000] {
            for _ in 0..2 {
                let mut m = Message::request("p");
                m.compressed = true;
                m.body = body(&mut rng, len);
                a.send(m).unwrap();
            }
        }
        let mut count = 0;
        while let Some(frame) = a.next_frame() {
            assert!(frame.len() <= max, "{} > {max}", frame.len());
            assert!(frame[1] & flags::COMPRESSED != 0);
            if b.receive(&frame).unwrap().is_some() {
                count += 1;
            }
            while let Some(ack) = b.next_frame() {
                a.receive(&ack).unwrap();
            }
        }
        assert_eq!(count, 8);
    }
}

// ----- errors a receiver must refuse -----

fn plain_frames(messages: Vec<Message>) -> Vec<Vec<u8>> {
    let mut a = Connection::new(Config::default());
    for m in messages {
        a.send(m).unwrap();
    }
    std::iter::from_fn(|| a.next_frame()).collect()
}

#[test]
fn checksum_mismatch_is_fatal_with_1011() {
    let mut frames = plain_frames(vec![Message::request("a")]);
    let last = frames[0].len() - 1;
    frames[0][last] ^= 1;
    let mut b = Connection::new(Config::default());
    let err = b.receive(&frames[0]).unwrap_err();
    assert!(matches!(err, BlipError::ChecksumMismatch { .. }), "{err}");
    assert_eq!(err.close_code(), 1011);
    assert!(b.has_failed());
    assert_eq!(b.receive(&frames[0]), Err(BlipError::Failed));
}

#[test]
fn request_numbers_must_be_sequential() {
    let frames = plain_frames(vec![Message::request("a"), Message::request("b")]);
    let mut b = Connection::new(Config::default());
    assert_eq!(
        b.receive(&frames[1]),
        Err(BlipError::UnexpectedRequest {
            number: 2,
            expected: 1
        })
    );
    let mut b = Connection::new(Config::default());
    b.receive(&frames[0]).unwrap().unwrap();
    // A replayed frame of a finished request (the CRC would also differ, but the number is
    // checked first).
    assert!(matches!(
        b.receive(&frames[0]),
        Err(BlipError::UnexpectedRequest { number: 1, .. })
    ));
}

#[test]
fn response_to_unknown_request_is_fatal() {
    let mut server = Connection::new(Config::default());
    let mut client = Connection::new(Config::default());
    let frames = plain_frames(vec![Message::request("a")]);
    let request = server.receive(&frames[0]).unwrap().unwrap();
    server.send(Message::response_to(&request)).unwrap();
    let response = server.next_frame().unwrap();
    // `client` never sent request #1.
    assert_eq!(
        client.receive(&response),
        Err(BlipError::UnexpectedResponse { number: 1 })
    );
}

#[test]
fn malformed_frames_are_refused() {
    let cases: [(&[u8], BlipError); 5] = [
        (&[], BlipError::EmptyFrame),
        (&[0x81], BlipError::TruncatedVarint),
        (&[0x01], BlipError::TruncatedVarint),
        (&[0x01, 0x00, 0x00], BlipError::FrameTooShort { number: 1 }),
        (&[0x01, 0x04, 0xff], BlipError::TruncatedVarint),
    ];
    for (frame, expected) in cases {
        let mut b = Connection::new(Config::default());
        assert_eq!(b.receive(frame), Err(expected), "{frame:02x?}");
    }
    let mut b = Connection::new(Config::default());
    let overlong = [0xffu8; 11];
    assert_eq!(b.receive(&overlong), Err(BlipError::VarintOverflow));
}

/// A frame with the given number/flags and uncompressed data, with the CRC of a fresh
/// connection.
fn raw_frame(number: u64, frame_flags: u8, data: &[u8]) -> Vec<u8> {
    let mut frame = Vec::new();
    varint::write(number, &mut frame);
    frame.push(frame_flags);
    frame.extend_from_slice(data);
    frame.extend_from_slice(&crc32fast::hash(data).to_be_bytes());
    frame
}

#[test]
fn property_errors_are_refused() {
    // Property block longer than the message.
    let mut b = Connection::new(Config::default());
    let err = b.receive(&raw_frame(1, 0, b"\x0aab\0c\0")).unwrap_err();
    assert!(matches!(
        err,
        BlipError::PropertiesExceedMessage { properties: 10 }
    ));
    // Missing final NUL.
    let mut b = Connection::new(Config::default());
    let err = b.receive(&raw_frame(1, 0, b"\x03a\0b")).unwrap_err();
    assert!(matches!(err, BlipError::MalformedProperties(_)));
    // Odd count.
    let mut b = Connection::new(Config::default());
    let err = b.receive(&raw_frame(1, 0, b"\x02a\0")).unwrap_err();
    assert!(matches!(err, BlipError::MalformedProperties(_)));
    // More than 100 KiB announced: refused on the first frame, before it arrives.
    let mut data = Vec::new();
    varint::write(200_000, &mut data);
    let mut b = Connection::new(Config::default());
    let err = b
        .receive(&raw_frame(1, flags::MORE_COMING, &data))
        .unwrap_err();
    assert!(matches!(
        err,
        BlipError::PropertiesTooLarge { size: 200_000, .. }
    ));
    // A message that ends before its property length.
    let mut b = Connection::new(Config::default());
    assert_eq!(
        b.receive(&raw_frame(1, 0, b"")),
        Err(BlipError::TruncatedVarint)
    );
}

#[test]
fn unknown_frame_types_are_ignored() {
    let mut b = Connection::new(Config::default());
    for bits in [3u8, 6, 7] {
        assert_eq!(b.receive(&[0x01, bits | 0x80, 1, 2, 3]), Ok(None));
    }
    assert_eq!(b.stats().unknown_frames_received, 3);
    // And the CRC did not move: a real first frame still verifies.
    let frames = plain_frames(vec![Message::request("a")]);
    assert!(b.receive(&frames[0]).unwrap().is_some());
}

#[test]
fn message_size_limit_is_enforced_with_1009() {
    let mut config = Config::default();
    config.max_message_size = 100_000;
    let mut a = Connection::new(Config::default());
    let mut b = Connection::new(config);
    let mut m = Message::request("big");
    m.body = Bytes::from(vec![0u8; 150_000]);
    a.send(m).unwrap();
    let mut result = Ok(None);
    while let Some(frame) = a.next_frame() {
        result = b.receive(&frame);
        if result.is_err() {
            break;
        }
    }
    let err = result.unwrap_err();
    assert_eq!(err, BlipError::MessageTooLarge { max: 100_000 });
    assert_eq!(err.close_code(), 1009);
}

/// Raw deflate of `data` with a sync flush, trailer stripped: a compressed frame's data.
fn deflate_frame_data(data: &[u8]) -> Vec<u8> {
    let mut c = flate2::Compress::new(flate2::Compression::best(), false);
    let mut out = Vec::with_capacity(data.len() / 100 + 1024);
    c.compress_vec(data, &mut out, flate2::FlushCompress::Sync)
        .unwrap();
    assert!(out.ends_with(&[0, 0, 0xff, 0xff]));
    out.truncate(out.len() - 4);
    out
}

#[test]
fn decompression_bomb_is_refused() {
    // 16 MiB of zeros deflate to ~16 KiB: one small frame, far past the per-frame limit.
    // Properties length 0, then a body of zeros.
    let plain = vec![0u8; 16 << 20];
    let data = deflate_frame_data(&plain);
    assert!(data.len() < 20_000, "{}", data.len());
    let mut frame = vec![0x01, flags::COMPRESSED];
    frame.extend_from_slice(&data);
    frame.extend_from_slice(&[0, 0, 0, 0]);
    let mut b = Connection::new(Config::default());
    let err = b.receive(&frame).unwrap_err();
    assert_eq!(
        err,
        BlipError::InflatedFrameTooLarge {
            max: Config::default().max_frame_inflate as u64
        }
    );
    assert_eq!(err.close_code(), 1009);

    // Under a small message limit, the message limit trips first.
    let mut config = Config::default();
    config.max_message_size = 1 << 20;
    let mut b = Connection::new(config);
    let err = b.receive(&frame).unwrap_err();
    assert_eq!(err, BlipError::MessageTooLarge { max: 1 << 20 });
}

#[test]
fn invalid_deflate_data_is_refused() {
    let mut b = Connection::new(Config::default());
    let err = b
        .receive(&[0x01, flags::COMPRESSED, 0xff, 0xff, 0xff, 0xff, 0, 0, 0, 0])
        .unwrap_err();
    assert!(matches!(err, BlipError::InvalidDeflate(_)), "{err}");
    assert_eq!(err.close_code(), 1011);

    // A final deflate block ends the connection's stream: refused.
    let mut c = flate2::Compress::new(flate2::Compression::default(), false);
    let mut out = Vec::with_capacity(100);
    c.compress_vec(b"\x00", &mut out, flate2::FlushCompress::Finish)
        .unwrap();
    let mut frame = vec![0x01, flags::COMPRESSED];
    frame.extend_from_slice(&out);
    frame.extend_from_slice(&crc32fast::hash(b"\x00").to_be_bytes());
    let mut b = Connection::new(Config::default());
    assert!(matches!(
        b.receive(&frame),
        Err(BlipError::InvalidDeflate(_))
    ));
}

#[test]
fn send_refuses_bad_messages_without_side_effects() {
    let mut a = Connection::new(Config::default());
    let mut m = Message::request("x");
    m.properties.set("bad", "nul\0inside");
    assert!(matches!(a.send(m), Err(BlipError::InvalidProperty { .. })));
    let mut response = Message::request("x");
    response.kind = MessageType::Response;
    response.number = 5;
    assert_eq!(
        a.send(response),
        Err(BlipError::NotAwaitingResponse { number: 5 })
    );
    assert!(!a.wants_to_send());
    // The refused request did not use up a number.
    assert_eq!(a.send(Message::request("ok")).unwrap(), 1);
}

#[test]
fn a_released_compressor_leaves_the_stream_readable() {
    let mut rng = Rng(0x5eed_c0de);
    let mut a = Connection::new(Config::default());
    let mut b = Connection::new(Config::default());
    let mut sent = Vec::new();
    let mut received = Vec::new();
    let mut compressed_frames = 0;
    for i in 0..40 {
        let mut m = Message::request("rev");
        m.no_reply = true;
        m.compressed = true;
        // Similar JSON bodies, so that a kept compressor refers back to earlier messages.
        m.body = Bytes::from(format!(
            "{{\"_id\":\"doc-{i}\",\"type\":\"profile\",\"name\":\"user {i}\",\"pad\":\"{}\"}}",
            "abcdefgh".repeat(rng.below(2000) as usize)
        ));
        sent.push(m.body.clone());
        a.send(m).unwrap();
        while let Some(frame) = a.next_frame() {
            let header = FrameHeader::parse(&frame).unwrap();
            if header.flags & flags::COMPRESSED != 0 {
                compressed_frames += 1;
            }
            if let Some(message) = b.receive(&frame).unwrap() {
                received.push(message.body);
            }
        }
        assert!(a.holds_compressor(), "message {i} was compressed");
        // Released after some messages only: kept and fresh compressors alternate.
        if rng.chance(50) {
            a.release_compressor();
            assert!(!a.holds_compressor());
        }
    }
    assert!(compressed_frames >= 40);
    assert_eq!(received, sent);
}
