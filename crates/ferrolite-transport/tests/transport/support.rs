//! Shared helpers: connection pairs for every transport and the conformance checks.

use std::any::Any;
use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use ferrolite_transport::{
    byte_stream, message_stream, pipe_with_capacity, AcceptedConnection, ByteStreamConfig,
    Connection, Incoming, Listener, ListenerConfig, Outgoing, TransportError, UrlEndpoint,
};

/// Two connected connections, plus whatever must stay alive for them to work.
pub(crate) struct Pair {
    pub(crate) a: Connection,
    pub(crate) b: Connection,
    pub(crate) _guard: Option<Box<dyn Any + Send>>,
}

pub(crate) fn localhost() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 0))
}

/// A listener serving `db` on 127.0.0.1 and a client connected to it.
pub(crate) async fn ws_connect(
    config: ListenerConfig,
    client: impl FnOnce(UrlEndpoint) -> UrlEndpoint,
) -> (Listener, Result<Connection, TransportError>) {
    let listener = Listener::bind(config).await.expect("bind");
    let endpoint = client(UrlEndpoint::parse(&listener.url("db")).expect("url"));
    let connection = endpoint.connect().await;
    (listener, connection)
}

pub(crate) async fn ws_accepted(
    config: ListenerConfig,
) -> (Listener, Connection, AcceptedConnection) {
    let (listener, client) = ws_connect(config, |e| e).await;
    let client = client.expect("connect");
    let accepted = tokio::time::timeout(Duration::from_secs(5), listener.accept())
        .await
        .expect("accept in time")
        .expect("accepted");
    (listener, client, accepted)
}

pub(crate) async fn ws_pair() -> Pair {
    let (listener, client, accepted) = ws_accepted(ListenerConfig::new(localhost(), ["db"])).await;
    Pair {
        a: client,
        b: accepted.connection,
        _guard: Some(Box::new(listener)),
    }
}

pub(crate) async fn ws_pair_reversed() -> Pair {
    let Pair { a, b, _guard } = ws_pair().await;
    Pair { a: b, b: a, _guard }
}

pub(crate) async fn in_process_pair() -> Pair {
    let (a, b) = pipe_with_capacity(4);
    Pair { a, b, _guard: None }
}

/// Two message-stream endpoints whose application sides forward to each other, as two
/// apps would over their own channel. A forwarding task ends (dropping its inbound half,
/// which the far side sees as an abnormal close) when there is nothing more to forward.
pub(crate) async fn message_stream_pair() -> Pair {
    let (a, a_app) = message_stream(4);
    let (b, b_app) = message_stream(4);
    let (a_in, mut a_out) = a_app.split();
    let (b_in, mut b_out) = b_app.split();
    tokio::spawn(async move {
        while let Some(out) = a_out.next().await {
            let delivered = match out {
                Outgoing::Message(m) => b_in.deliver(m).await,
                Outgoing::Close(c) => b_in.deliver_close(c.code, &c.reason).await,
            };
            if delivered.is_err() {
                break;
            }
        }
    });
    tokio::spawn(async move {
        while let Some(out) = b_out.next().await {
            let delivered = match out {
                Outgoing::Message(m) => a_in.deliver(m).await,
                Outgoing::Close(c) => a_in.deliver_close(c.code, &c.reason).await,
            };
            if delivered.is_err() {
                break;
            }
        }
    });
    Pair { a, b, _guard: None }
}

/// Two byte-stream endpoints over an in-memory pipe: `a` active (WebSocket client
/// framing), `b` passive (server framing).
pub(crate) async fn byte_stream_pair() -> Pair {
    let (x, y) = tokio::io::duplex(64 * 1024);
    Pair {
        a: byte_stream(x, ByteStreamConfig::active()).await,
        b: byte_stream(y, ByteStreamConfig::passive()).await,
        _guard: None,
    }
}

/// [`byte_stream_pair`] with the roles swapped: `a` passive, `b` active.
pub(crate) async fn byte_stream_pair_reversed() -> Pair {
    let Pair { a, b, _guard } = byte_stream_pair().await;
    Pair { a: b, b: a, _guard }
}

/// Two byte-stream endpoints over TCP: the connecting side active, the accepting side
/// passive.
pub(crate) async fn byte_stream_tcp_pair() -> Pair {
    let listener = tokio::net::TcpListener::bind(localhost()).await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (client, server) = tokio::join!(tokio::net::TcpStream::connect(addr), listener.accept());
    Pair {
        a: byte_stream(client.unwrap(), ByteStreamConfig::active()).await,
        b: byte_stream(server.unwrap().0, ByteStreamConfig::passive()).await,
        _guard: None,
    }
}

const STEP: Duration = Duration::from_secs(5);

pub(crate) async fn recv(c: &mut Connection) -> Result<Option<Incoming>, TransportError> {
    tokio::time::timeout(STEP, c.receive())
        .await
        .expect("receive timed out")
}

pub(crate) async fn recv_message(c: &mut Connection) -> Bytes {
    match recv(c).await {
        Ok(Some(Incoming::Message(m))) => m,
        other => panic!("expected a message, got {other:?}"),
    }
}

// ---------------------------------------------------------------------------------------
// Conformance checks: each takes a fresh pair.
// ---------------------------------------------------------------------------------------

/// Messages arrive whole and in order, in both directions at once.
pub(crate) async fn messages_in_order(pair: Pair) {
    let Pair { a, b, _guard } = pair;
    let (mut a_tx, mut a_rx) = a.split();
    let (mut b_tx, mut b_rx) = b.split();
    const N: usize = 200;
    let a_send = tokio::spawn(async move {
        for i in 0..N {
            a_tx.send(Bytes::from(format!("a-{i}"))).await.unwrap();
        }
        a_tx
    });
    let b_send = tokio::spawn(async move {
        for i in 0..N {
            b_tx.send(Bytes::from(format!("b-{i}"))).await.unwrap();
        }
        b_tx
    });
    for i in 0..N {
        let got = tokio::time::timeout(STEP, b_rx.receive())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(got, Some(Incoming::Message(Bytes::from(format!("a-{i}")))));
        let got = tokio::time::timeout(STEP, a_rx.receive())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(got, Some(Incoming::Message(Bytes::from(format!("b-{i}")))));
    }
    let _ = a_send.await.unwrap();
    let _ = b_send.await.unwrap();
}

/// Binary content and sizes survive unchanged, the empty message included.
pub(crate) async fn binary_intact(pair: Pair) {
    let Pair { a, mut b, _guard } = pair;
    let (mut a_tx, _a_rx) = a.split();
    let sizes = [0usize, 1, 125, 126, 127, 65_535, 65_536, (1 << 20) + 7];
    let messages: Vec<Bytes> = sizes
        .iter()
        .map(|&n| Bytes::from((0..n).map(|i| (i * 31 + n) as u8).collect::<Vec<u8>>()))
        .collect();
    let to_send = messages.clone();
    let sender = tokio::spawn(async move {
        for m in to_send {
            a_tx.send(m).await.unwrap();
        }
        a_tx
    });
    for expected in &messages {
        assert_eq!(&recv_message(&mut b).await, expected);
    }
    let _ = sender.await.unwrap();
}

/// A sender waits when the receiver does not read, and goes on once it reads again;
/// nothing is lost or reordered.
pub(crate) async fn back_pressure(pair: Pair) {
    use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
    use std::sync::Arc;

    let Pair { a, mut b, _guard } = pair;
    let (mut a_tx, _a_rx) = a.split();
    const SIZE: usize = 256 * 1024;
    const MAX_MESSAGES: u32 = 400; // 100 MiB: far beyond any socket buffer
    let progress = Arc::new(AtomicU32::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let sender = {
        let (progress, stop) = (progress.clone(), stop.clone());
        tokio::spawn(async move {
            let mut sent = 0u32;
            while sent < MAX_MESSAGES && !stop.load(Ordering::SeqCst) {
                let mut m = vec![0u8; SIZE];
                m[..4].copy_from_slice(&sent.to_be_bytes());
                a_tx.send(Bytes::from(m)).await.unwrap();
                sent += 1;
                progress.store(sent, Ordering::SeqCst);
            }
            (a_tx, sent)
        })
    };
    // Wait until the sender makes no progress for 300 ms.
    let mut last = u32::MAX;
    let mut still = 0;
    while still < 3 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let now = progress.load(Ordering::SeqCst);
        assert!(
            now < MAX_MESSAGES,
            "{now} messages of {SIZE} bytes were sent to a peer that does not read"
        );
        if now == last {
            still += 1;
        } else {
            (last, still) = (now, 0);
        }
    }
    stop.store(true, Ordering::SeqCst);
    assert!(!sender.is_finished(), "the sender should be waiting");
    eprintln!("back-pressure after {last} messages of {SIZE} bytes");
    // Reading again lets the blocked send finish; the messages come in order.
    read_in_order(&mut b, 0..last + 1, SIZE).await;
    let (_a_tx, sent) = tokio::time::timeout(STEP, sender).await.unwrap().unwrap();
    // Normally `last + 1`; more only if this machine stalled the sender for 300 ms.
    read_in_order(&mut b, last + 1..sent, SIZE).await;
}

async fn read_in_order(b: &mut Connection, indices: std::ops::Range<u32>, size: usize) {
    for i in indices {
        let m = recv_message(b).await;
        assert_eq!(m.len(), size);
        assert_eq!(u32::from_be_bytes([m[0], m[1], m[2], m[3]]), i);
    }
}

/// A clean close is seen by the peer with its code and reason; the peer's answer comes
/// back; afterwards sending fails.
pub(crate) async fn close_seen_by_peer(pair: Pair) {
    let Pair {
        mut a,
        mut b,
        _guard,
    } = pair;
    a.send(Bytes::from_static(b"last")).await.unwrap();
    a.close(4001, "going offline").await.unwrap();
    assert_eq!(recv_message(&mut b).await, Bytes::from_static(b"last"));
    match recv(&mut b).await {
        Ok(Some(Incoming::Closed(info))) => {
            assert_eq!(info.code, 4001);
            assert_eq!(info.reason, "going offline");
        }
        other => panic!("expected the close, got {other:?}"),
    }
    assert_eq!(recv(&mut b).await.unwrap(), None);
    let err = b.send(Bytes::from_static(b"late")).await.unwrap_err();
    assert!(matches!(err, TransportError::Closed { .. }), "{err}");
    b.close(1000, "ok").await.unwrap();
    match recv(&mut a).await {
        Ok(Some(Incoming::Closed(_))) => {}
        other => panic!("expected the close answer, got {other:?}"),
    }
    assert_eq!(recv(&mut a).await.unwrap(), None);
    let err = a.send(Bytes::from_static(b"after")).await.unwrap_err();
    assert!(matches!(err, TransportError::Closed { .. }), "{err}");
}

/// Dropping a connection without closing is an abnormal close (1006, transient).
pub(crate) async fn drop_seen_as_abnormal(pair: Pair) {
    let Pair { a, mut b, _guard } = pair;
    drop(a);
    let err = recv(&mut b).await.unwrap_err();
    assert_eq!(err.close_code(), Some(1006), "{err}");
    assert!(err.is_transient(), "{err}");
    assert_eq!(recv(&mut b).await.unwrap(), None);
}
