//! The worked example frames of the BLIP protocol notes (§11), byte for byte, encoded and
//! decoded.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use bytes::Bytes;
use ferrolite_protocol::blip::{
    flags, varint, BlipError, Config, Connection, FrameHeader, FrameType, Message, MessageType,
    Properties,
};

fn hex(s: &str) -> Vec<u8> {
    let digits: String = s.split_whitespace().collect();
    (0..digits.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&digits[i..i + 2], 16).unwrap())
        .collect()
}

/// §11.1: `getCheckpoint` request #1.
const GET_CHECKPOINT: &str = "
01 00 3d 50 72 6f 66 69 6c 65 00 67 65 74 43 68
65 63 6b 70 6f 69 6e 74 00 63 6c 69 65 6e 74 00
63 70 2d 37 72 59 31 4a 78 33 51 6d 39 66 5a 30
76 32 4c 77 38 6b 54 35 75 51 34 73 41 45 3d 00
45 1f 8d 55";

/// §11.2, uncompressed: `proposeChanges` request #2, urgent.
const PROPOSE_PLAIN: &str = "
02 10 30 50 72 6f 66 69 6c 65 00 70 72 6f 70 6f
73 65 43 68 61 6e 67 65 73 00 63 6f 6e 66 6c 69
63 74 49 6e 63 6c 75 64 65 73 52 65 76 00 74 72
75 65 00 5b 5b 22 64 6f 63 31 22 2c 22 31 2d 32
39 31 63 38 61 33 63 38 39 30 34 35 33 31 33 34
30 30 39 30 34 33 61 61 30 38 39 66 63 64 39 62
35 66 38 66 32 31 37 22 2c 22 22 2c 31 36 5d 5d
40 b3 7c f3";

/// §11.2, compressed (first compressed frame of the connection).
const PROPOSE_COMPRESSED: &str = "
02 18 0c ca b1 0e 83 20 10 00 50 be 85 d9 26 77
a2 2d cc 9d ba 35 ae c6 81 1e 77 ad 09 e1 0c a8
df 5f b7 37 3c 78 57 95 35 b3 d9 aa 6e da f8 f9
8b e5 cb cd 90 16 c9 2b ed af 42 f9 48 dc 26 3e
cd 5e 0f 36 f3 6c 93 12 da ce e2 ad 0f 48 3e 3a
f2 01 86 d1 a1 1b 00 2e b9 18 c1 07 a1 14 3e a3
78 e9 f1 71 65 db e1 7d 59 fe 00 40 b3 7c f3";

/// §11.3: response #1 to `getCheckpoint`.
const CHECKPOINT_RESPONSE: &str = "
01 01 26 72 65 76 00 30 2d 33 00 43 6f 6e 74 65
6e 74 2d 54 79 70 65 00 61 70 70 6c 69 63 61 74
69 6f 6e 2f 6a 73 6f 6e 00 7b 22 72 65 6d 6f 74
65 22 3a 34 32 2c 22 74 69 6d 65 22 3a 31 37 31
38 30 30 30 30 30 30 7d 31 b2 58 a4";

/// §11.3: the empty response #2 that follows.
const EMPTY_RESPONSE: &str = "02 01 00 03 88 3a 24";

/// §11.4: error response #1, `HTTP 404 Not Found`.
const NOT_FOUND: &str = "
01 02 21 45 72 72 6f 72 2d 44 6f 6d 61 69 6e 00
48 54 54 50 00 45 72 72 6f 72 2d 43 6f 64 65 00
34 30 34 00 4e 6f 74 20 46 6f 75 6e 64 0f 42 26
78";

/// §11.5: ACK of 50,117 bytes of incoming request #3.
const ACK: &str = "03 34 c5 87 03";

const PROPOSE_BODY: &str = r#"[["doc1","1-291c8a3c890453134009043aa089fcd9b5f8f217","",16]]"#;

fn get_checkpoint() -> Message {
    let mut m = Message::request("getCheckpoint");
    m.properties
        .set("client", "cp-7rY1Jx3Qm9fZ0v2Lw8kT5uQ4sAE=");
    m
}

fn propose_changes(compressed: bool) -> Message {
    let mut m = Message::request("proposeChanges");
    m.properties.set("conflictIncludesRev", "true");
    m.urgent = true;
    m.compressed = compressed;
    m.body = Bytes::from_static(PROPOSE_BODY.as_bytes());
    m
}

fn only_frame(conn: &mut Connection) -> Vec<u8> {
    let frame = conn.next_frame().expect("a frame");
    assert!(conn.next_frame().is_none(), "exactly one frame");
    frame
}

#[test]
fn request_frames_encode_exactly() {
    for compressed in [false, true] {
        let mut client = Connection::new(Config::default());
        assert_eq!(client.send(get_checkpoint()).unwrap(), 1);
        assert_eq!(only_frame(&mut client), hex(GET_CHECKPOINT));
        assert_eq!(client.send(propose_changes(compressed)).unwrap(), 2);
        let frame = only_frame(&mut client);
        if compressed {
            // Deflate output depends on the compressor (the spec's bytes come from C zlib; we
            // use a pure-Rust one): the header and the CRC over the uncompressed bytes must be
            // exact, and the frame must decode to the same message.
            let golden = hex(PROPOSE_COMPRESSED);
            assert_eq!(frame[..2], golden[..2]);
            assert_eq!(frame[frame.len() - 4..], golden[golden.len() - 4..]);
            let mut server = Connection::new(Config::default());
            server.receive(&hex(GET_CHECKPOINT)).unwrap();
            let mut expected = propose_changes(true);
            expected.number = 2;
            assert_eq!(server.receive(&frame).unwrap().unwrap(), expected);
        } else {
            assert_eq!(frame, hex(PROPOSE_PLAIN));
        }
        assert_eq!(client.awaiting_responses(), [1, 2]);
    }
}

#[test]
fn request_frames_decode() {
    for (compressed, frame) in [(false, PROPOSE_PLAIN), (true, PROPOSE_COMPRESSED)] {
        let mut server = Connection::new(Config::default());
        let first = server.receive(&hex(GET_CHECKPOINT)).unwrap().unwrap();
        let mut expected = get_checkpoint();
        expected.number = 1;
        assert_eq!(first, expected);
        let second = server.receive(&hex(frame)).unwrap().unwrap();
        let mut expected = propose_changes(compressed);
        expected.number = 2;
        assert_eq!(second, expected);
        assert!(server.is_unanswered(1) && server.is_unanswered(2));
    }
}

#[test]
fn compressed_frame_by_hand() {
    // "Take bytes 2 … len−5, append 00 00 ff ff, inflate (raw, window 15)."
    let frame = hex(PROPOSE_COMPRESSED);
    let header = FrameHeader::parse(&frame).unwrap();
    assert_eq!((header.number, header.len), (2, 2));
    assert_eq!(header.frame_type(), FrameType::Request);
    assert!(header.has(flags::COMPRESSED | flags::URGENT));
    let mut data = frame[2..frame.len() - 4].to_vec();
    data.extend_from_slice(&[0, 0, 0xff, 0xff]);
    let mut inflate = flate2::Decompress::new(false);
    let mut plain = Vec::with_capacity(1000);
    inflate
        .decompress_vec(&data, &mut plain, flate2::FlushDecompress::Sync)
        .unwrap();
    assert_eq!(plain.len(), 110);
    assert_eq!(plain, hex(PROPOSE_PLAIN)[2..112]);
}

/// A server connection that received requests #1 and #2 from a client.
fn server_with_two_requests() -> (Connection, Connection, Message, Message) {
    let mut client = Connection::new(Config::default());
    let mut server = Connection::new(Config::default());
    client.send(get_checkpoint()).unwrap();
    client.send(Message::request("subChanges")).unwrap();
    let mut received = Vec::new();
    while let Some(frame) = client.next_frame() {
        received.extend(server.receive(&frame).unwrap());
    }
    let second = received.pop().unwrap();
    let first = received.pop().unwrap();
    (client, server, first, second)
}

fn checkpoint_response(request: &Message) -> Message {
    let mut response = Message::response_to(request);
    response.properties.set("rev", "0-3");
    response.properties.set("Content-Type", "application/json");
    response.body = Bytes::from_static(br#"{"remote":42,"time":1718000000}"#);
    response
}

#[test]
fn responses_encode_and_decode_exactly() {
    let (mut client, mut server, first, second) = server_with_two_requests();
    server.send(checkpoint_response(&first)).unwrap();
    assert_eq!(only_frame(&mut server), hex(CHECKPOINT_RESPONSE));
    server.send(Message::response_to(&second)).unwrap();
    assert_eq!(only_frame(&mut server), hex(EMPTY_RESPONSE));

    let got = client.receive(&hex(CHECKPOINT_RESPONSE)).unwrap().unwrap();
    assert_eq!(got, checkpoint_response(&first));
    assert_eq!(got.kind, MessageType::Response);
    assert_eq!(got.number, 1);
    let got = client.receive(&hex(EMPTY_RESPONSE)).unwrap().unwrap();
    assert_eq!(got.number, 2);
    assert!(got.properties.is_empty() && got.body.is_empty());
    assert!(client.awaiting_responses().is_empty());
}

#[test]
fn error_response_encodes_and_decodes_exactly() {
    let (mut client, mut server, first, _) = server_with_two_requests();
    let error = Message::error_to(&first, "HTTP", 404, "Not Found");
    server.send(error.clone()).unwrap();
    assert_eq!(only_frame(&mut server), hex(NOT_FOUND));
    let got = client.receive(&hex(NOT_FOUND)).unwrap().unwrap();
    assert_eq!(got, error);
    assert_eq!(got.kind, MessageType::Error);
    assert_eq!(got.error(), Some(("HTTP", 404)));
    assert_eq!(&got.body[..], b"Not Found");
    // Answered: a second response to #1 is refused on both sides.
    assert!(matches!(
        server.send(Message::response_to(&first)),
        Err(BlipError::NotAwaitingResponse { number: 1 })
    ));
    assert!(!client.is_awaiting_response(1));
    // An empty WebSocket message is fatal, and so is everything after it.
    assert_eq!(client.receive(&[]), Err(BlipError::EmptyFrame));
    assert_eq!(client.receive(&hex(EMPTY_RESPONSE)), Err(BlipError::Failed));
}

#[test]
fn ack_frame_exactly() {
    // The peer sends requests #1 and #2, then #3 whose first frame carries exactly 50,117
    // bytes after its flags (data + checksum): the receiver owes the §11.5 ACK.
    let header_len = 2;
    let mut config = Config::default();
    config.max_frame_size = header_len + 50_117;
    let mut peer = Connection::new(config);
    let mut receiver = Connection::new(Config::default());
    peer.send(Message::request("a")).unwrap();
    peer.send(Message::request("b")).unwrap();
    let mut big = Message::request("big");
    big.body = Bytes::from(vec![b'x'; 80_000]);
    peer.send(big).unwrap();
    for _ in 0..3 {
        let frame = peer.next_frame().unwrap();
        assert!(receiver.receive(&frame).unwrap().is_some() || frame[0] == 3);
    }
    assert!(receiver.wants_to_send());
    assert_eq!(receiver.next_frame().unwrap(), hex(ACK));
    let rest = peer.next_frame().unwrap();
    let message = receiver.receive(&rest).unwrap().unwrap();
    assert_eq!(message.number, 3);
    assert_eq!(message.body.len(), 80_000);
    // The ACK is applied by the peer without complaint.
    assert!(peer.receive(&hex(ACK)).unwrap().is_none());
    assert_eq!(peer.stats().acks_received, 1);
}

#[test]
fn properties_block_rules() {
    let props: Properties = [("Profile", "x"), ("empty", "")].into_iter().collect();
    let mut encoded = Vec::new();
    props.encode_prefixed(&mut encoded).unwrap();
    assert_eq!(encoded, b"\x11Profile\0x\0empty\0\0");
    let (len, prefix) = varint::read(&encoded).unwrap();
    assert_eq!(len as usize + prefix, encoded.len());
    assert_eq!(Properties::decode(&encoded[1..]).unwrap(), props);
    assert!(matches!(
        Properties::decode(b"Profile\0x"),
        Err(BlipError::MalformedProperties(_))
    ));
    assert!(matches!(
        Properties::decode(b"Profile\0x\0odd\0"),
        Err(BlipError::MalformedProperties(_))
    ));
    let bad: Properties = [("k", "a\0b")].into_iter().collect();
    assert!(matches!(
        bad.encode_prefixed(&mut Vec::new()),
        Err(BlipError::InvalidProperty { .. })
    ));
    let huge: Properties = [("k", "v".repeat(200_000))].into_iter().collect();
    assert!(matches!(
        huge.encode_prefixed(&mut Vec::new()),
        Err(BlipError::PropertiesTooLarge { .. })
    ));
}
