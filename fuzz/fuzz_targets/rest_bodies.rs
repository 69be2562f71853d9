//! Arbitrary request bodies through the gateway's REST API: one gateway (in memory) serves
//! every input over real HTTP on 127.0.0.1. The first byte picks an endpoint on the public
//! port (as a user) or the admin port, the second whether the body is declared JSON; the
//! rest is the body. Any answer but `500` is fine, a `500` or a dropped connection is a
//! crash. Documents are purged every few thousand inputs so that memory stays flat.

#![no_main]

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;
use std::time::Duration;

use ferrolite_gateway::{Gateway, GatewayConfig, Storage};
use libfuzzer_sys::fuzz_target;

/// `fz:pw`, the user of public requests, in Basic form.
const AUTH: &str = "Basic Zno6cHc=";

/// Public (`true`) or admin port, method, path.
const ENDPOINTS: &[(bool, &str, &str)] = &[
    (true, "PUT", "/db/d"),
    (true, "POST", "/db/"),
    (true, "POST", "/db/_bulk_docs"),
    (true, "POST", "/db/_all_docs"),
    (true, "POST", "/db/_changes"),
    (true, "POST", "/db/_session"),
    (true, "PUT", "/db/d/att"),
    (false, "PUT", "/db/d"),
    (false, "POST", "/db/_bulk_docs"),
    (false, "POST", "/db/_purge"),
    (false, "PUT", "/db/_user/fz2"),
    (false, "POST", "/db/_user/"),
    (false, "PUT", "/db/_role/r"),
    (false, "POST", "/db/_role/"),
];

struct Server {
    _runtime: tokio::runtime::Runtime,
    gateway: Gateway,
}

fn server() -> &'static Server {
    static SERVER: OnceLock<Server> = OnceLock::new();
    SERVER.get_or_init(|| {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("runtime");
        let config = GatewayConfig::from_json(
            r#"{"interface":"127.0.0.1:0","adminInterface":"127.0.0.1:0",
                "databases":{"db":{"users":{"fz":{"password":"pw","admin_channels":["*"]}}}}}"#,
        )
        .expect("config");
        let gateway = runtime
            .block_on(Gateway::start(&config, Storage::InMemory))
            .expect("gateway");
        Server {
            _runtime: runtime,
            gateway,
        }
    })
}

/// Purges every document (the inputs would otherwise pile up in memory).
fn purge_all(gateway: &Gateway) {
    let Some(db) = gateway.database("db") else {
        return;
    };
    let ids: Vec<String> = match db.changes(0) {
        Ok(changes) => changes.filter_map(Result::ok).map(|c| c.id).collect(),
        Err(_) => return,
    };
    for id in ids {
        let _ = db.purge(&id);
    }
}

/// Sends one request and returns the response's status.
fn request(addr: SocketAddr, head: &str, body: &[u8]) -> u16 {
    let mut stream = TcpStream::connect(addr).expect("connect");
    stream
        .set_read_timeout(Some(Duration::from_secs(20)))
        .expect("timeout");
    stream.write_all(head.as_bytes()).expect("write head");
    stream.write_all(body).expect("write body");
    let mut response = Vec::new();
    if let Err(err) = stream.read_to_end(&mut response) {
        panic!("no complete response: {err}");
    }
    let text = String::from_utf8_lossy(&response);
    let status = text
        .strip_prefix("HTTP/1.1 ")
        .and_then(|rest| rest.get(..3))
        .and_then(|code| code.parse().ok());
    match status {
        Some(status) => status,
        None => panic!("not an HTTP response: {text:?}"),
    }
}

fuzz_target!(|data: &[u8]| {
    let [pick, kind, body @ ..] = data else {
        return;
    };
    let (public, method, path) = ENDPOINTS[*pick as usize % ENDPOINTS.len()];
    // A continuous or longpoll feed asked for in the body would never end.
    if path.ends_with("_changes") && body.windows(4).any(|w| w == b"feed") {
        return;
    }
    let server = server();
    static COUNT: AtomicU64 = AtomicU64::new(0);
    if COUNT.fetch_add(1, Ordering::Relaxed) % 4096 == 4095 {
        purge_all(&server.gateway);
    }
    let (addr, auth) = if public {
        (
            server.gateway.public_addr(),
            format!("Authorization: {AUTH}\r\n"),
        )
    } else {
        (server.gateway.admin_addr(), String::new())
    };
    let content_type = if kind % 4 == 0 {
        "application/octet-stream"
    } else {
        "application/json"
    };
    let head = format!(
        "{method} {path} HTTP/1.1\r\nHost: fuzz\r\nConnection: close\r\n{auth}\
         Content-Type: {content_type}\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    let status = request(addr, &head, body);
    assert!(
        status != 500,
        "{method} {path} answered 500 to {:?}",
        String::from_utf8_lossy(body)
    );
});
