//! Streamed messages: a response body appended chunk by chunk on the sending side
//! (`send_streaming` + `extend_body`) and handed out frame by frame on the receiving side
//! (`stream_response` + `next_response_part`), in bounded memory on both sides.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use bytes::Bytes;
use ferrolite_protocol::blip::{BlipError, Config, Connection, Message, MessageType};

/// Deterministic incompressible bytes.
fn noise(len: usize, seed: u64) -> Vec<u8> {
    let mut state = seed | 1;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        out.extend_from_slice(&state.to_le_bytes());
    }
    out.truncate(len);
    out
}

/// Moves every frame `from` wants to send into `to`, returning complete messages `to` got.
fn pump(from: &mut Connection, to: &mut Connection) -> Vec<Message> {
    let mut got = Vec::new();
    while let Some(frame) = from.next_frame() {
        if let Some(message) = to.receive(&frame).unwrap() {
            got.push(message);
        }
    }
    got
}

/// Streams `data` as the response to a request, appending `chunk` bytes whenever less than
/// `low_water` bytes wait unsent; returns the parts the client received and the largest
/// number of unsent bytes the server ever held.
fn stream(
    data: &[u8],
    chunk: usize,
    low_water: usize,
    compress: bool,
    client_config: Config,
) -> (Vec<ferrolite_protocol::blip::ResponsePart>, usize) {
    let mut client = Connection::new(client_config);
    let mut server = Connection::default();
    let number = client.send(Message::request("getAttachment")).unwrap();
    assert!(client.stream_response(number));
    assert!(!client.stream_response(number + 7), "no such request");
    let request = pump(&mut client, &mut server).pop().unwrap();
    let mut head = Message::response_to(&request);
    head.properties.set("k", "v");
    head.compressed = compress;
    server.send_streaming(head).unwrap();
    let mut offset = 0;
    let mut max_unsent = 0;
    let mut parts = Vec::new();
    loop {
        let unsent = server
            .unsent_len(MessageType::Response, request.number)
            .unwrap_or(0);
        max_unsent = max_unsent.max(unsent);
        if offset < data.len() && unsent < low_water {
            let end = (offset + chunk).min(data.len());
            let last = end == data.len();
            server
                .extend_body(
                    MessageType::Response,
                    request.number,
                    Bytes::copy_from_slice(&data[offset..end]),
                    last,
                )
                .unwrap();
            offset = end;
        }
        // One frame at a time each way, as a real link would interleave them.
        let Some(frame) = server.next_frame() else {
            if offset >= data.len() {
                break;
            }
            continue;
        };
        assert!(client.receive(&frame).unwrap().is_none());
        while let Some(part) = client.next_response_part() {
            parts.push(part);
        }
        while let Some(ack) = client.next_frame() {
            server.receive(&ack).unwrap();
        }
    }
    assert_eq!(
        server.unsent_len(MessageType::Response, request.number),
        None
    );
    assert!(!client.is_awaiting_response(number));
    (parts, max_unsent)
}

fn check_parts(parts: &[ferrolite_protocol::blip::ResponsePart], data: &[u8]) {
    let first = parts.first().unwrap();
    assert_eq!(first.properties.as_ref().unwrap().get("k"), Some("v"));
    assert!(parts[1..].iter().all(|p| p.properties.is_none()));
    assert!(parts.last().unwrap().last);
    assert_eq!(parts.iter().filter(|p| p.last).count(), 1);
    let joined: Vec<u8> = parts.iter().flat_map(|p| p.body.to_vec()).collect();
    assert_eq!(joined.len(), data.len());
    assert!(joined == data, "the streamed body differs");
}

#[test]
fn a_body_larger_than_the_message_limit_streams_in_bounded_memory() {
    let data = noise(5 << 20, 7);
    let mut config = Config::default();
    config.max_message_size = 1 << 20;
    for compress in [false, true] {
        let (parts, max_unsent) = stream(&data, 64 << 10, 64 << 10, compress, config.clone());
        check_parts(&parts, &data);
        // Never more than one chunk plus what was left when it was appended.
        assert!(max_unsent <= 128 << 10, "{max_unsent}");
        // Each part is at most one frame's data.
        let largest = parts.iter().map(|p| p.body.len()).max().unwrap();
        assert!(largest <= 16 << 10, "{largest}");
    }
}

#[test]
fn compressible_content_streams_compressed() {
    let text: Vec<u8> = (0..300_000u32)
        .flat_map(|i| format!("line {i}\n").into_bytes())
        .collect();
    let (parts, _) = stream(&text, 10_000, 4_000, true, Config::default());
    check_parts(&parts, &text);
}

#[test]
fn a_body_ended_by_an_empty_last_chunk_and_an_empty_body() {
    let mut client = Connection::default();
    let mut server = Connection::default();
    for body in [&b"abc"[..], b""] {
        let number = client.send(Message::request("getAttachment")).unwrap();
        assert!(client.stream_response(number));
        let request = pump(&mut client, &mut server).pop().unwrap();
        server
            .send_streaming(Message::response_to(&request))
            .unwrap();
        server
            .extend_body(
                MessageType::Response,
                request.number,
                Bytes::copy_from_slice(body),
                false,
            )
            .unwrap();
        assert!(pump(&mut server, &mut client).is_empty());
        // Everything so far went out; the message waits for more.
        assert_eq!(
            server.unsent_len(MessageType::Response, request.number),
            Some(0)
        );
        assert!(!server.wants_to_send());
        server
            .extend_body(MessageType::Response, request.number, Bytes::new(), true)
            .unwrap();
        assert!(pump(&mut server, &mut client).is_empty());
        let mut parts = Vec::new();
        while let Some(part) = client.next_response_part() {
            parts.push(part);
        }
        let joined: Vec<u8> = parts.iter().flat_map(|p| p.body.to_vec()).collect();
        assert_eq!(joined, body);
        assert!(parts.last().unwrap().last);
        assert!(parts[0].properties.is_some());
        assert_eq!(
            server
                .extend_body(MessageType::Response, request.number, Bytes::new(), true)
                .unwrap_err(),
            BlipError::NotStreaming {
                number: request.number
            }
        );
    }
    assert_eq!(server.stats().messages_sent, 2);
    assert_eq!(client.stats().messages_received, 2);
}

#[test]
fn an_error_reply_to_a_streamed_request_arrives_whole() {
    let mut client = Connection::default();
    let mut server = Connection::default();
    let number = client.send(Message::request("getAttachment")).unwrap();
    assert!(client.stream_response(number));
    let request = pump(&mut client, &mut server).pop().unwrap();
    server
        .send(Message::error_to(&request, "LiteCore", 7, "No such blob"))
        .unwrap();
    let reply = pump(&mut server, &mut client).pop().unwrap();
    assert_eq!(reply.error(), Some(("LiteCore", 7)));
    assert!(client.next_response_part().is_none());
    assert!(!client.is_awaiting_response(number));
}

#[test]
fn other_messages_flow_while_a_stream_waits_for_its_body() {
    let mut client = Connection::default();
    let mut server = Connection::default();
    let number = client.send(Message::request("getAttachment")).unwrap();
    client.stream_response(number);
    let request = pump(&mut client, &mut server).pop().unwrap();
    server
        .send_streaming(Message::response_to(&request))
        .unwrap();
    server
        .extend_body(
            MessageType::Response,
            request.number,
            Bytes::from(noise(40_000, 3)),
            false,
        )
        .unwrap();
    // A request of the server goes through while the stream is starved.
    let mut other = Message::request("changes");
    other.body = Bytes::from_static(b"[]");
    server.send(other).unwrap();
    let got = pump(&mut server, &mut client);
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].profile(), Some("changes"));
    server
        .extend_body(
            MessageType::Response,
            request.number,
            Bytes::from(noise(10, 4)),
            true,
        )
        .unwrap();
    pump(&mut server, &mut client);
    let mut total = 0;
    let mut last = false;
    while let Some(part) = client.next_response_part() {
        total += part.body.len();
        last = part.last;
    }
    assert_eq!(total, 40_010);
    assert!(last);
}
