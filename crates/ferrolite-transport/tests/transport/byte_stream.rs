//! Byte-stream endpoints: the bytes on the wire are RFC 6455 WebSocket frames, masked
//! from the active end and unmasked from the passive end, as Couchbase Lite's
//! `ProtocolType.byteStream` writes and expects them.

use std::time::Duration;

use bytes::Bytes;
use ferrolite_transport::{
    byte_stream, ByteStreamConfig, ByteStreamRole, Connection, Incoming, TransportError,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt, DuplexStream};

use crate::support::*;

const STEP: Duration = Duration::from_secs(5);

/// One frame as read off the wire.
#[derive(Debug)]
struct RawFrame {
    /// The first byte: FIN, RSV1–3 and the opcode.
    head: u8,
    /// Whether the mask bit was set.
    masked: bool,
    /// The payload, unmasked.
    payload: Vec<u8>,
}

/// Reads one WebSocket frame from the raw end of the pipe.
async fn read_frame(raw: &mut DuplexStream) -> RawFrame {
    tokio::time::timeout(STEP, async {
        let mut head = [0u8; 2];
        raw.read_exact(&mut head).await.unwrap();
        let masked = head[1] & 0x80 != 0;
        let len = match head[1] & 0x7f {
            126 => u64::from(raw.read_u16().await.unwrap()),
            127 => raw.read_u64().await.unwrap(),
            n => u64::from(n),
        };
        let mut key = [0u8; 4];
        if masked {
            raw.read_exact(&mut key).await.unwrap();
        }
        let mut payload = vec![0u8; usize::try_from(len).unwrap()];
        raw.read_exact(&mut payload).await.unwrap();
        if masked {
            for (i, byte) in payload.iter_mut().enumerate() {
                *byte ^= key[i % 4];
            }
        }
        RawFrame {
            head: head[0],
            masked,
            payload,
        }
    })
    .await
    .expect("a frame in time")
}

/// Encodes a final frame with `opcode` (short payloads only), masked with `key` if given.
fn encode_frame(opcode: u8, payload: &[u8], key: Option<[u8; 4]>) -> Vec<u8> {
    assert!(payload.len() < 126);
    let mut frame = vec![0x80 | opcode];
    match key {
        Some(key) => {
            frame.push(0x80 | payload.len() as u8);
            frame.extend_from_slice(&key);
            frame.extend(payload.iter().enumerate().map(|(i, b)| b ^ key[i % 4]));
        }
        None => {
            frame.push(payload.len() as u8);
            frame.extend_from_slice(payload);
        }
    }
    frame
}

fn close_payload(code: u16, reason: &str) -> Vec<u8> {
    let mut payload = code.to_be_bytes().to_vec();
    payload.extend_from_slice(reason.as_bytes());
    payload
}

/// A byte-stream connection with `config` and the raw other end of its pipe.
async fn with_raw_peer(config: ByteStreamConfig) -> (Connection, DuplexStream) {
    let (ours, raw) = tokio::io::duplex(64 * 1024);
    (byte_stream(ours, config).await, raw)
}

#[tokio::test]
async fn active_end_writes_masked_websocket_frames() {
    let (mut active, mut raw) = with_raw_peer(ByteStreamConfig::active()).await;

    active.send(Bytes::from_static(b"hello")).await.unwrap();
    let frame = read_frame(&mut raw).await;
    assert_eq!(frame.head, 0x82, "binary, final");
    assert!(frame.masked, "a client masks its frames");
    assert_eq!(frame.payload, b"hello");

    // 300 bytes: the 16-bit extended length form.
    let long: Vec<u8> = (0..300u16).map(|i| i as u8).collect();
    active.send(Bytes::from(long.clone())).await.unwrap();
    let frame = read_frame(&mut raw).await;
    assert_eq!((frame.head, frame.masked), (0x82, true));
    assert_eq!(frame.payload, long);

    active.close(4001, "going offline").await.unwrap();
    let frame = read_frame(&mut raw).await;
    assert_eq!(frame.head, 0x88, "close, final");
    assert!(frame.masked);
    assert_eq!(frame.payload, close_payload(4001, "going offline"));
}

#[tokio::test]
async fn passive_end_writes_unmasked_websocket_frames() {
    let (mut passive, mut raw) = with_raw_peer(ByteStreamConfig::passive()).await;

    passive.send(Bytes::from_static(b"hello")).await.unwrap();
    let mut bytes = [0u8; 7];
    raw.read_exact(&mut bytes).await.unwrap();
    assert_eq!(bytes, [0x82, 0x05, b'h', b'e', b'l', b'l', b'o']);

    passive.close(1000, "bye").await.unwrap();
    let mut bytes = [0u8; 7];
    raw.read_exact(&mut bytes).await.unwrap();
    assert_eq!(bytes, [0x88, 0x05, 0x03, 0xe8, b'b', b'y', b'e']);
}

#[tokio::test]
async fn hand_written_frames_are_received() {
    // Into the passive end: masked frames, a fragmented message reassembled.
    let (mut passive, mut raw) = with_raw_peer(ByteStreamConfig::passive()).await;
    let key = Some([0x37, 0xfa, 0x21, 0x3d]);
    raw.write_all(&encode_frame(0x2, b"getCheckpoint", key))
        .await
        .unwrap();
    let mut first = vec![0x02]; // binary, not final
    first.extend_from_slice(&encode_frame(0x0, b"rev", key)[1..]);
    raw.write_all(&first).await.unwrap();
    raw.write_all(&encode_frame(0x0, b"ision", key)) // continuation, final
        .await
        .unwrap();
    assert_eq!(
        recv(&mut passive).await.unwrap(),
        Some(Incoming::Message(Bytes::from_static(b"getCheckpoint")))
    );
    assert_eq!(
        recv_message(&mut passive).await,
        Bytes::from_static(b"revision")
    );

    // Into the active end: unmasked frames.
    let (mut active, mut raw) = with_raw_peer(ByteStreamConfig::active()).await;
    raw.write_all(&encode_frame(0x2, b"checkpoint", None))
        .await
        .unwrap();
    assert_eq!(
        recv_message(&mut active).await,
        Bytes::from_static(b"checkpoint")
    );
}

#[tokio::test]
async fn close_frame_from_the_peer_is_reported_and_answered() {
    let (mut passive, mut raw) = with_raw_peer(ByteStreamConfig::passive()).await;
    raw.write_all(&encode_frame(
        0x8,
        &close_payload(4001, "going offline"),
        Some([1, 2, 3, 4]),
    ))
    .await
    .unwrap();
    match recv(&mut passive).await {
        Ok(Some(Incoming::Closed(info))) => {
            assert_eq!((info.code, info.reason.as_str()), (4001, "going offline"));
        }
        other => panic!("expected the close, got {other:?}"),
    }
    assert_eq!(recv(&mut passive).await.unwrap(), None);
    let answer = read_frame(&mut raw).await;
    assert_eq!((answer.head, answer.masked), (0x88, false));
    assert_eq!(answer.payload[..2], 4001u16.to_be_bytes());
    let err = passive.send(Bytes::from_static(b"late")).await.unwrap_err();
    assert!(
        matches!(err, TransportError::Closed { code: 4001, .. }),
        "{err}"
    );
}

#[tokio::test]
async fn pings_are_answered_with_pongs() {
    let (_passive, mut raw) = with_raw_peer(ByteStreamConfig::passive()).await;
    raw.write_all(&encode_frame(0x9, b"are you there", Some([9, 8, 7, 6])))
        .await
        .unwrap();
    let pong = read_frame(&mut raw).await;
    assert_eq!((pong.head, pong.masked), (0x8a, false));
    assert_eq!(pong.payload, b"are you there");
}

#[tokio::test]
async fn heartbeat_pings_the_peer() {
    let config = ByteStreamConfig::active().with_heartbeat(Some(Duration::from_millis(100)));
    let (mut active, mut raw) = with_raw_peer(config).await;
    let ping = read_frame(&mut raw).await;
    assert_eq!((ping.head, ping.masked), (0x89, true));
    // Answered: the connection stays up.
    raw.write_all(&encode_frame(0xa, &ping.payload, None))
        .await
        .unwrap();
    raw.write_all(&encode_frame(0x2, b"still here", None))
        .await
        .unwrap();
    assert_eq!(
        recv_message(&mut active).await,
        Bytes::from_static(b"still here")
    );
    // Not answered: the peer is declared dead.
    let err = recv(&mut active).await.unwrap_err();
    assert!(matches!(err, TransportError::Timeout(_)), "{err}");
    assert!(err.is_transient(), "{err}");
}

#[tokio::test]
async fn oversized_frames_are_refused() {
    let config = ByteStreamConfig::passive().with_max_message_size(10);
    let (mut passive, mut raw) = with_raw_peer(config).await;

    let err = passive
        .send(Bytes::from_static(b"eleven byte"))
        .await
        .unwrap_err();
    assert!(matches!(err, TransportError::MessageTooBig { .. }), "{err}");

    // A masked binary frame announcing 1 TiB: refused from its header.
    let mut header = vec![0x82, 0x80 | 127];
    header.extend_from_slice(&(1u64 << 40).to_be_bytes());
    header.extend_from_slice(&[1, 2, 3, 4]);
    raw.write_all(&header).await.unwrap();
    let err = recv(&mut passive).await.unwrap_err();
    assert!(matches!(err, TransportError::MessageTooBig { .. }), "{err}");
    assert_eq!(err.close_code(), Some(1009));
}

#[tokio::test]
async fn both_ends_in_the_same_role_fail_with_a_protocol_error() {
    for role in [ByteStreamRole::Active, ByteStreamRole::Passive] {
        let (x, y) = tokio::io::duplex(64 * 1024);
        let mut a = byte_stream(x, ByteStreamConfig::new(role)).await;
        let mut b = byte_stream(y, ByteStreamConfig::new(role)).await;
        a.send(Bytes::from_static(b"hello")).await.unwrap();
        let err = recv(&mut b).await.unwrap_err();
        assert!(
            matches!(err, TransportError::Protocol(_)),
            "{role:?}: {err}"
        );
        assert_eq!(err.close_code(), Some(1002), "{role:?}");
    }
}

#[tokio::test]
async fn cancelled_send_does_not_tear_frames() {
    let (ours, mut raw) = tokio::io::duplex(16);
    let mut sender = byte_stream(ours, ByteStreamConfig::active()).await;
    let big = vec![7u8; 1000];
    // Nobody reads the 16-byte pipe yet: this send cannot finish; cancel it half-way.
    let cancelled = tokio::time::timeout(
        Duration::from_millis(20),
        sender.send(Bytes::from(big.clone())),
    )
    .await;
    assert!(cancelled.is_err());
    let reader = tokio::spawn(async move {
        let first = read_frame(&mut raw).await;
        let second = read_frame(&mut raw).await;
        (first, second)
    });
    sender.send(Bytes::from_static(b"next")).await.unwrap();
    let (first, second) = reader.await.unwrap();
    assert_eq!((first.head, first.payload), (0x82, big));
    assert_eq!((second.head, second.payload), (0x82, b"next".to_vec()));
}
