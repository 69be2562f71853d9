#![allow(clippy::unwrap_used, clippy::expect_used)]
//! The replication options the transcripts cannot show (they need a value only known at run
//! time, a signal, or TLS): `--continuous` stopped by Ctrl-C, `--session`, `--doc-ids`,
//! `--pinned-cert`, `--self-signed-only`. Real processes: the built `ferrolite` as the gateway
//! and as the client, on free ports; for TLS, a `UrlEndpointListener` in this process.

use std::io::{BufRead, BufReader};
use std::net::{TcpListener, TcpStream};
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

const TIMEOUT: Duration = Duration::from_secs(60);

/// A gateway (`ferrolite serve --in-memory`) on two free ports, with user `alice`.
struct Gateway {
    child: Child,
    public: u16,
    admin: u16,
    dir: tempfile::TempDir,
    runtime: tokio::runtime::Runtime,
    client: reqwest::Client,
}

impl Gateway {
    fn start() -> Gateway {
        let dir = tempfile::tempdir().unwrap();
        let (public, admin) = {
            let a = TcpListener::bind("127.0.0.1:0").unwrap();
            let b = TcpListener::bind("127.0.0.1:0").unwrap();
            (
                a.local_addr().unwrap().port(),
                b.local_addr().unwrap().port(),
            )
        };
        let config = dir.path().join("gateway.json");
        std::fs::write(
            &config,
            format!(
                r#"{{"interface": "127.0.0.1:{public}", "adminInterface": "127.0.0.1:{admin}",
                    "databases": {{"db": {{"users": {{"alice": {{"password": "pass", "admin_channels": ["*"]}}}}}}}}}}"#
            ),
        )
        .unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_ferrolite"))
            .args(["serve", "--in-memory", "--config"])
            .arg(&config)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let started = Instant::now();
        while [public, admin]
            .iter()
            .any(|port| TcpStream::connect(("127.0.0.1", *port)).is_err())
        {
            assert!(started.elapsed() < TIMEOUT, "the gateway did not start");
            std::thread::sleep(Duration::from_millis(50));
        }
        Gateway {
            child,
            public,
            admin,
            dir,
            runtime: tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap(),
            client: reqwest::Client::builder().no_proxy().build().unwrap(),
        }
    }

    fn url(&self) -> String {
        format!("ws://127.0.0.1:{}/db", self.public)
    }

    /// A request on the admin port; the response's JSON.
    fn admin(&self, method: reqwest::Method, path: &str, body: &str) -> serde_json::Value {
        let request = self
            .client
            .request(method, format!("http://127.0.0.1:{}{path}", self.admin))
            .header("Content-Type", "application/json")
            .body(body.to_owned());
        self.runtime.block_on(async move {
            let response = request.send().await.unwrap();
            assert!(
                response.status().is_success(),
                "{path}: {}",
                response.status()
            );
            response.json().await.unwrap()
        })
    }

    /// Runs `ferrolite ARGS` in the gateway's directory.
    fn ferrolite(&self, args: &[&str]) -> Output {
        Command::new(env!("CARGO_BIN_EXE_ferrolite"))
            .args(args)
            .current_dir(self.dir.path())
            .stdin(Stdio::null())
            .output()
            .unwrap()
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// `sync --continuous` replicates a change made on the server while it runs, and an
/// interrupt stops it cleanly: exit status 0 and the summary.
#[cfg(unix)]
#[test]
fn continuous_sync_until_interrupted() {
    let gateway = Gateway::start();
    let url = gateway.url();
    let mut client = Command::new(env!("CARGO_BIN_EXE_ferrolite"))
        .args([
            "sync",
            "phone",
            &url,
            "--continuous",
            "--user",
            "alice",
            "--password",
            "pass",
        ])
        .current_dir(gateway.dir.path())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // The progress lines (stderr is not a terminal), read on a thread.
    let (lines_tx, lines) = mpsc::channel();
    let stderr = client.stderr.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines() {
            let _ = lines_tx.send(line.unwrap_or_default());
        }
    });
    let wait_for = |wanted: &str| {
        let deadline = Instant::now() + TIMEOUT;
        let mut seen = Vec::new();
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match lines.recv_timeout(left) {
                Ok(line) if line.contains(wanted) => return,
                Ok(line) => seen.push(line),
                Err(_) => panic!("no line with {wanted:?}; saw {seen:?}"),
            }
        }
    };
    wait_for("sync: idle, 0 documents");

    gateway.admin(reqwest::Method::PUT, "/db/news::1", r#"{"title": "Hello"}"#);
    wait_for("sync: idle, 1 document");

    let interrupted = Command::new("kill")
        .args(["-s", "INT", &client.id().to_string()])
        .status()
        .unwrap();
    assert!(interrupted.success());
    let output = client.wait_with_output().unwrap();
    let stdout = text(&output.stdout);
    assert!(output.status.success(), "{:?}: {stdout}", output.status);
    assert!(
        stdout.starts_with("pushed 0 documents and pulled 1 document, "),
        "{stdout}"
    );

    let ls = gateway.ferrolite(&["ls", "phone"]);
    assert_eq!(text(&ls.stdout), "news::1\n");
}

/// `--session` logs in with a Sync Gateway session instead of a password.
#[test]
fn pull_with_a_session() {
    let gateway = Gateway::start();
    gateway.admin(reqwest::Method::PUT, "/db/news::1", r#"{"title": "Hello"}"#);
    let session = gateway.admin(
        reqwest::Method::POST,
        "/db/_session",
        r#"{"name": "alice"}"#,
    );
    let session = session["session_id"].as_str().unwrap().to_owned();

    let pulled = gateway.ferrolite(&["pull", "phone", &gateway.url(), "--session", &session]);
    assert!(pulled.status.success(), "{}", text(&pulled.stderr));
    assert!(
        text(&pulled.stdout).starts_with("pulled 1 document, "),
        "{}",
        text(&pulled.stdout)
    );

    let refused = gateway.ferrolite(&["pull", "phone", &gateway.url(), "--session", "nope"]);
    assert_eq!(refused.status.code(), Some(1));
    let stderr = text(&refused.stderr);
    // One line, nothing else (stderr is not a terminal: no progress bar either).
    assert_eq!(
        stderr,
        "error: pull failed: login refused by the server (check --user and --password, or --session) (WebSocket 401)\n"
    );
}

/// `--doc-ids` pulls only the documents named; `background-refresh` takes the same options.
#[test]
fn pull_only_some_documents() {
    let gateway = Gateway::start();
    for id in ["a", "b", "c"] {
        gateway.admin(reqwest::Method::PUT, &format!("/db/{id}"), r#"{"n": 1}"#);
    }
    let url = gateway.url();
    let auth = ["--user", "alice", "--password", "pass"];

    let mut args = vec!["pull", "phone", &url, "--doc-ids", "a,c"];
    args.extend(auth);
    let pulled = gateway.ferrolite(&args);
    assert!(pulled.status.success(), "{}", text(&pulled.stderr));
    assert_eq!(text(&gateway.ferrolite(&["ls", "phone"]).stdout), "a\nc\n");

    let mut args = vec!["background-refresh", "tablet", &url, "--doc-ids", "b"];
    args.extend(auth);
    let refreshed = gateway.ferrolite(&args);
    assert_eq!(
        refreshed.status.code(),
        Some(0),
        "{}",
        text(&refreshed.stderr)
    );
    assert_eq!(text(&refreshed.stdout), "new data: 1 document\n  b\n");
}

/// `wss://` to a peer with a self-signed certificate: refused by default (one line),
/// accepted with `--self-signed-only` or with the certificate pinned (DER or PEM).
#[test]
fn tls_trust_options() {
    use base64::Engine as _;
    use ferrolite::{
        Database, MutableDocument, UrlEndpointListener, UrlEndpointListenerConfiguration,
    };

    let served = Database::open_in_memory("db").unwrap();
    served
        .save(MutableDocument::with_id("news::1").set("title", "Hello"))
        .unwrap();
    let listener = UrlEndpointListener::start(
        UrlEndpointListenerConfiguration::new(vec![served])
            .network_interface("127.0.0.1")
            .disable_tls(false),
    )
    .unwrap();
    let url = listener.url("db");
    assert!(url.starts_with("wss://"), "{url}");
    let dir = tempfile::tempdir().unwrap();
    let der = listener.tls_certificate().unwrap();
    std::fs::write(dir.path().join("peer.der"), &der).unwrap();
    let pem = format!(
        "-----BEGIN CERTIFICATE-----\n{}\n-----END CERTIFICATE-----\n",
        base64::engine::general_purpose::STANDARD.encode(&der)
    );
    std::fs::write(dir.path().join("peer.pem"), pem).unwrap();
    let ferrolite = |args: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_ferrolite"))
            .args(args)
            .current_dir(dir.path())
            .stdin(Stdio::null())
            .output()
            .unwrap()
    };

    let refused = ferrolite(&["pull", "a", &url]);
    assert_eq!(refused.status.code(), Some(1));
    let stderr = text(&refused.stderr);
    let last = stderr.lines().last().unwrap_or_default();
    assert!(
        last.starts_with(&format!(
            "error: pull failed: the TLS connection to {url} failed: "
        )),
        "{stderr}"
    );
    assert!(
        last.contains("--pinned-cert or --self-signed-only"),
        "{stderr}"
    );

    for (database, option) in [
        ("b", vec!["--self-signed-only"]),
        ("c", vec!["--pinned-cert", "peer.der"]),
        ("d", vec!["--pinned-cert", "peer.pem"]),
    ] {
        let mut args = vec!["pull", database, &url];
        args.extend(option.iter().copied());
        let pulled = ferrolite(&args);
        assert!(
            pulled.status.success(),
            "{option:?}: {}",
            text(&pulled.stderr)
        );
        assert!(
            text(&pulled.stdout).starts_with("pulled 1 document, "),
            "{option:?}: {}",
            text(&pulled.stdout)
        );
    }
    listener.stop();
}
