//! WebSocket client and listener behaviour on 127.0.0.1.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use ferrolite_transport::{
    AuthDecision, Authenticator, ErrorDomain, Incoming, ListenerConfig, TransportError, UrlEndpoint,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;

use crate::support::*;

/// A one-connection TCP server running `handler` on the accepted stream.
async fn raw_server<F, Fut>(handler: F) -> SocketAddr
where
    F: FnOnce(TcpStream) -> Fut + Send + 'static,
    Fut: Future<Output = ()> + Send + 'static,
{
    let listener = TcpListener::bind(localhost()).await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let (stream, _) = listener.accept().await.unwrap();
        handler(stream).await;
    });
    addr
}

/// Reads an HTTP request head and returns it.
async fn read_head(stream: &mut TcpStream) -> String {
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        stream.read_exact(&mut byte).await.unwrap();
        head.push(byte[0]);
    }
    String::from_utf8(head).unwrap()
}

/// The `101` answer to `request`, with an optional `Sec-WebSocket-Protocol`.
fn switching_protocols(request: &str, protocol: Option<&str>) -> String {
    let key = request
        .lines()
        .find_map(|l| {
            let (name, value) = l.split_once(':')?;
            name.eq_ignore_ascii_case("sec-websocket-key")
                .then(|| value.trim().to_owned())
        })
        .unwrap();
    let mut response = format!(
        "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Accept: {}\r\n",
        derive_accept_key(key.as_bytes())
    );
    if let Some(protocol) = protocol {
        response.push_str(&format!("Sec-WebSocket-Protocol: {protocol}\r\n"));
    }
    response.push_str("\r\n");
    response
}

fn endpoint(addr: SocketAddr) -> UrlEndpoint {
    UrlEndpoint::parse(&format!("ws://{addr}/db")).unwrap()
}

#[tokio::test]
async fn upgrade_and_echo() {
    let (listener, mut client, accepted) =
        ws_accepted(ListenerConfig::new(localhost(), ["db", "other"])).await;
    assert_eq!(accepted.database, "db");
    assert_eq!(accepted.subprotocol, "BLIP_3+CBMobile_3");
    assert_eq!(accepted.user, None);
    assert_eq!(accepted.peer_addr.ip(), listener.local_addr().ip());
    let header = |name: &str| {
        accepted
            .request_headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.clone())
    };
    assert_eq!(
        header("sec-websocket-protocol").as_deref(),
        Some("BLIP_3+CBMobile_3,BLIP_3+CBMobile_2")
    );
    assert!(header("user-agent").unwrap().starts_with("ferrolite/"));
    assert!(header("authorization").is_none());
    assert!(
        header("sec-websocket-extensions").is_none(),
        "no permessage-deflate"
    );

    let mut server = accepted.connection;
    tokio::spawn(async move {
        while let Ok(Some(Incoming::Message(m))) = server.receive().await {
            if server.send(m).await.is_err() {
                break;
            }
        }
    });
    for text in ["getCheckpoint", "subChanges", "changes"] {
        client.send(Bytes::from(text)).await.unwrap();
        assert_eq!(recv_message(&mut client).await, Bytes::from(text));
    }
    client.close(1000, "done").await.unwrap();
    assert!(matches!(
        recv(&mut client).await,
        Ok(Some(Incoming::Closed(_)))
    ));
}

fn password_check(request: &ferrolite_transport::AuthRequest<'_>) -> AuthDecision {
    match request.credentials() {
        Some(c) if c.username == "alice" && c.password == "secret" => AuthDecision::user("alice"),
        Some(_) => AuthDecision::invalid_login(),
        None => AuthDecision::login_required(),
    }
}

#[tokio::test]
async fn basic_auth_accepts_the_right_password() {
    let config = ListenerConfig::new(localhost(), ["db"]).with_authenticator(password_check);
    let (listener, client) = ws_connect(config, |e| {
        e.with_authenticator(Authenticator::basic("alice", "secret"))
    })
    .await;
    client.unwrap();
    let accepted = listener.accept().await.unwrap();
    assert_eq!(accepted.user.as_deref(), Some("alice"));
}

#[tokio::test]
async fn wrong_password_is_refused_with_401_and_reason() {
    let config = ListenerConfig::new(localhost(), ["db"]).with_authenticator(password_check);
    let (_listener, result) = ws_connect(config, |e| {
        e.with_authenticator(Authenticator::basic("alice", "wrong"))
    })
    .await;
    let err = result.unwrap_err();
    match &err {
        TransportError::HttpStatus { status, reason } => {
            assert_eq!(*status, 401);
            assert_eq!(reason, "Invalid login");
        }
        other => panic!("expected HTTP 401, got {other:?}"),
    }
    assert_eq!(err.domain(), ErrorDomain::WebSocket);
    assert_eq!(err.code(), 401);
    assert_eq!(err.platform_code(), 10401);
    assert!(!err.is_transient());

    let config = ListenerConfig::new(localhost(), ["db"]).with_authenticator(password_check);
    let (_listener, result) = ws_connect(config, |e| e).await;
    match result.unwrap_err() {
        TransportError::HttpStatus {
            status: 401,
            reason,
        } => assert_eq!(reason, "Login required"),
        other => panic!("expected HTTP 401, got {other:?}"),
    }
}

#[tokio::test]
async fn refusal_is_what_sync_gateway_sends() {
    // The raw bytes of a refused upgrade: status, realm header, JSON body.
    let config = ListenerConfig::new(localhost(), ["db"]).with_authenticator(password_check);
    let listener = ferrolite_transport::Listener::bind(config).await.unwrap();
    let mut stream = TcpStream::connect(listener.local_addr()).await.unwrap();
    stream
        .write_all(
            b"GET /db/_blipsync HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Basic YWxpY2U6d3JvbmdwYXNzd29yZA==\r\n\
              Connection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\n\
              Sec-WebSocket-Key: 91PcFBeSMACUafexwj1wFA==\r\n\
              Sec-WebSocket-Protocol: BLIP_3+CBMobile_3,BLIP_3+CBMobile_2\r\n\r\n",
        )
        .await
        .unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).await.unwrap();
    assert!(
        response.starts_with("HTTP/1.1 401 Unauthorized\r\n"),
        "{response}"
    );
    let lower = response.to_ascii_lowercase();
    assert!(lower.contains("www-authenticate: basic realm=\"couchbase sync gateway\"\r\n"));
    assert!(lower.contains("content-type: application/json\r\n"));
    assert!(response.ends_with("\r\n\r\n{\"error\":\"Unauthorized\",\"reason\":\"Invalid login\"}"));
}

#[tokio::test]
async fn unknown_database_is_404() {
    let listener = ferrolite_transport::Listener::bind(ListenerConfig::new(localhost(), ["db"]))
        .await
        .unwrap();
    let err = UrlEndpoint::parse(&listener.url("nope"))
        .unwrap()
        .connect()
        .await
        .unwrap_err();
    match &err {
        TransportError::HttpStatus {
            status: 404,
            reason,
        } => {
            assert_eq!(reason, "no such database \"nope\"");
        }
        other => panic!("expected 404, got {other:?}"),
    }
    assert!(!err.is_transient());
}

#[tokio::test]
async fn listener_refuses_when_no_subprotocol_matches() {
    let (_listener, result) = ws_connect(ListenerConfig::new(localhost(), ["db"]), |e| {
        e.with_subprotocols(["BLIP_3+CBMobile_9"])
    })
    .await;
    let err = result.unwrap_err();
    match &err {
        TransportError::HttpStatus {
            status: 500,
            reason,
        } => {
            assert_eq!(
                reason,
                "I only speak BLIP_3+CBMobile_3,BLIP_3+CBMobile_2 protocols"
            );
        }
        other => panic!("expected 500, got {other:?}"),
    }
    assert!(!err.is_transient(), "500 is not transient in LiteCore 3.x");
}

#[tokio::test]
async fn listener_echoes_the_clients_first_supported_entry() {
    let config = ListenerConfig::new(localhost(), ["db"]);
    let (listener, client) = ws_connect(config, |e| {
        e.with_subprotocols([
            "BLIP_3+CBMobile_4",
            "BLIP_3+CBMobile_2",
            "BLIP_3+CBMobile_3",
        ])
    })
    .await;
    assert_eq!(client.unwrap().subprotocol(), Some("BLIP_3+CBMobile_2"));
    assert_eq!(
        listener.accept().await.unwrap().subprotocol,
        "BLIP_3+CBMobile_2"
    );
}

#[tokio::test]
async fn server_without_subprotocol_is_a_protocol_error() {
    let addr = raw_server(|mut stream| async move {
        let request = read_head(&mut stream).await;
        stream
            .write_all(switching_protocols(&request, None).as_bytes())
            .await
            .unwrap();
        tokio::time::sleep(Duration::from_secs(1)).await;
    })
    .await;
    let err = endpoint(addr).connect().await.unwrap_err();
    assert!(matches!(err, TransportError::NoSubprotocol), "{err:?}");
    assert_eq!(err.domain(), ErrorDomain::WebSocket);
    assert_eq!(err.code(), 1002);
    assert!(!err.is_transient());
}

#[tokio::test]
async fn server_choosing_an_unoffered_subprotocol_is_refused() {
    let addr = raw_server(|mut stream| async move {
        let request = read_head(&mut stream).await;
        stream
            .write_all(switching_protocols(&request, Some("BLIP_3+CBMobile_1")).as_bytes())
            .await
            .unwrap();
        tokio::time::sleep(Duration::from_secs(1)).await;
    })
    .await;
    let err = endpoint(addr).connect().await.unwrap_err();
    assert!(
        matches!(err, TransportError::UnexpectedSubprotocol),
        "{err:?}"
    );
    assert_eq!(err.code(), 403);
    assert!(!err.is_transient());
}

#[tokio::test]
async fn custom_header_and_session_cookie_reach_the_server() {
    let seen = Arc::new(Mutex::new(None));
    let seen_in_callback = seen.clone();
    let config = ListenerConfig::new(localhost(), ["db"]).with_authenticator(move |request| {
        *seen_in_callback.lock().unwrap() = Some((
            request.header("X-Proxy-Token").map(str::to_owned),
            request.cookie("SyncGatewaySession").map(str::to_owned),
        ));
        match request.cookie("SyncGatewaySession") {
            Some("904ac010862f") => AuthDecision::user("bob"),
            _ => AuthDecision::Reject("Session Invalid".into()),
        }
    });
    let (listener, client) = ws_connect(config, |e| {
        e.with_header("X-Proxy-Token", "t0k3n")
            .with_authenticator(Authenticator::session("904ac010862f"))
    })
    .await;
    client.unwrap();
    assert_eq!(
        seen.lock().unwrap().clone(),
        Some((Some("t0k3n".to_owned()), Some("904ac010862f".to_owned())))
    );
    let accepted = listener.accept().await.unwrap();
    assert_eq!(accepted.user.as_deref(), Some("bob"));
    assert!(accepted
        .request_headers
        .iter()
        .any(|(n, v)| n.eq_ignore_ascii_case("x-proxy-token") && v == "t0k3n"));

    // A custom cookie name, and an invalid session.
    let config =
        ListenerConfig::new(localhost(), ["db"]).with_authenticator(|request| {
            match request.cookie("MySession") {
                Some("good") => AuthDecision::Accept(None),
                _ => AuthDecision::Reject("Session Invalid".into()),
            }
        });
    let (_listener, result) = ws_connect(config, |e| {
        e.with_authenticator(Authenticator::session_with_cookie("bad", "MySession"))
    })
    .await;
    match result.unwrap_err() {
        TransportError::HttpStatus {
            status: 401,
            reason,
        } => assert_eq!(reason, "Session Invalid"),
        other => panic!("expected 401, got {other:?}"),
    }
}

#[tokio::test]
async fn sixteen_mib_message_arrives_intact() {
    let (_listener, mut client, accepted) =
        ws_accepted(ListenerConfig::new(localhost(), ["db"])).await;
    let mut server = accepted.connection;
    let big = Bytes::from(
        (0..16 << 20)
            .map(|i: usize| (i ^ (i >> 8) ^ (i >> 16)) as u8)
            .collect::<Vec<u8>>(),
    );
    let sent = big.clone();
    let sender = tokio::spawn(async move {
        client.send(sent).await.unwrap();
        client
    });
    let received = recv_message(&mut server).await;
    assert_eq!(received.len(), big.len());
    assert!(received == big, "content differs");
    let mut client = sender.await.unwrap();
    // And back, server to client.
    let back = tokio::spawn(async move {
        server.send(received).await.unwrap();
        server
    });
    assert!(recv_message(&mut client).await == big);
    let _server = back.await.unwrap();
}

#[tokio::test]
async fn server_vanishing_mid_message_is_transient() {
    let addr = raw_server(|mut stream| async move {
        let request = read_head(&mut stream).await;
        let mut out = switching_protocols(&request, Some("BLIP_3+CBMobile_3")).into_bytes();
        // A binary frame announcing 256 bytes, then only 10 of them.
        out.extend_from_slice(&[0x82, 0x7e, 0x01, 0x00]);
        out.extend_from_slice(&[0xab; 10]);
        stream.write_all(&out).await.unwrap();
        stream.flush().await.unwrap();
        tokio::time::sleep(Duration::from_millis(50)).await;
        drop(stream);
    })
    .await;
    let mut client = endpoint(addr).connect().await.unwrap();
    let err = recv(&mut client).await.unwrap_err();
    assert!(err.is_transient(), "{err:?}");
    assert_eq!(err.close_code(), Some(1006), "{err:?}");
}

#[tokio::test]
async fn connection_refused_is_transient() {
    let port = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap().port()
    };
    let err = UrlEndpoint::parse(&format!("ws://127.0.0.1:{port}/db"))
        .unwrap()
        .connect()
        .await
        .unwrap_err();
    assert!(matches!(err, TransportError::Io { .. }), "{err:?}");
    assert_eq!(err.domain(), ErrorDomain::Posix);
    #[cfg(target_os = "linux")]
    assert_eq!(err.code(), 111); // ECONNREFUSED
    assert!(err.is_transient());
}

#[tokio::test]
async fn silent_server_hits_the_connect_timeout() {
    let addr = raw_server(|stream| async move {
        tokio::time::sleep(Duration::from_secs(3)).await;
        drop(stream);
    })
    .await;
    let started = Instant::now();
    let err = endpoint(addr)
        .with_connect_timeout(Duration::from_millis(300))
        .connect()
        .await
        .unwrap_err();
    assert!(started.elapsed() < Duration::from_secs(2));
    assert!(matches!(err, TransportError::Timeout(_)), "{err:?}");
    assert_eq!((err.domain(), err.code()), (ErrorDomain::Network, 3));
    assert!(err.is_transient());
}

#[tokio::test]
async fn heartbeat_detects_a_peer_that_stops_answering() {
    let addr = raw_server(|mut stream| async move {
        let request = read_head(&mut stream).await;
        stream
            .write_all(switching_protocols(&request, Some("BLIP_3+CBMobile_3")).as_bytes())
            .await
            .unwrap();
        // Alive at the TCP level, but never reads, so never answers a ping.
        tokio::time::sleep(Duration::from_secs(5)).await;
    })
    .await;
    let started = Instant::now();
    let mut client = endpoint(addr)
        .with_heartbeat(Some(Duration::from_millis(200)))
        .connect()
        .await
        .unwrap();
    let err = recv(&mut client).await.unwrap_err();
    let elapsed = started.elapsed();
    assert!(matches!(err, TransportError::Timeout(_)), "{err:?}");
    assert!(err.is_transient());
    assert!(elapsed < Duration::from_millis(1500), "took {elapsed:?}");
    assert!(client.send(Bytes::from_static(b"x")).await.is_err());
}

#[tokio::test]
async fn heartbeat_keeps_a_live_peer() {
    let listener = ferrolite_transport::Listener::bind(ListenerConfig::new(localhost(), ["db"]))
        .await
        .unwrap();
    let mut client = UrlEndpoint::parse(&listener.url("db"))
        .unwrap()
        .with_heartbeat(Some(Duration::from_millis(100)))
        .connect()
        .await
        .unwrap();
    let mut server = listener.accept().await.unwrap().connection;
    // The server application does not read for a while; its reader still answers pings.
    tokio::time::sleep(Duration::from_millis(700)).await;
    client
        .send(Bytes::from_static(b"still here"))
        .await
        .unwrap();
    assert_eq!(
        recv_message(&mut server).await,
        Bytes::from_static(b"still here")
    );
}

#[tokio::test]
async fn listener_shutdown_closes_connections_with_1001() {
    let (listener, mut client, accepted) =
        ws_accepted(ListenerConfig::new(localhost(), ["db"])).await;
    let mut server = accepted.connection;
    listener.shutdown().await;
    match recv(&mut client).await {
        Ok(Some(Incoming::Closed(info))) => assert_eq!(info.code, 1001),
        other => panic!("expected close 1001, got {other:?}"),
    }
    assert!(matches!(
        recv(&mut server).await,
        Ok(Some(Incoming::Closed(_)))
    ));
    assert!(listener.accept().await.is_none());
    let refused = UrlEndpoint::parse(&listener.url("db"))
        .unwrap()
        .connect()
        .await
        .unwrap_err();
    assert!(refused.is_transient(), "{refused:?}");
}

#[tokio::test]
async fn bound_port_zero_exposes_the_chosen_port() {
    let listener = ferrolite_transport::Listener::bind(ListenerConfig::new(localhost(), ["db"]))
        .await
        .unwrap();
    assert_ne!(listener.local_addr().port(), 0);
    assert_eq!(
        listener.url("db"),
        format!("ws://127.0.0.1:{}/db", listener.local_addr().port())
    );
}
