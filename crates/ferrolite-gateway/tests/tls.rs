//! The gateway with a configured certificate: HTTPS on both listeners, `wss://` replication,
//! and start errors for unusable certificate or key files.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::time::Duration;

use ferrolite::transport::TlsIdentity;
use ferrolite::{
    Authenticator, Endpoint, MutableDocument, ReplicatorConfiguration, ReplicatorType, SyncOutcome,
};
use ferrolite_gateway::{Gateway, GatewayConfig, GatewayError, Storage};
use reqwest::{Client, StatusCode};
use serde_json::{json, Value};

/// A self-signed certificate for `localhost` and 127.0.0.1, written as PEM files.
struct Pem {
    _dir: tempfile::TempDir,
    cert: PathBuf,
    key: PathBuf,
    identity: TlsIdentity,
}

fn self_signed() -> Pem {
    let identity = TlsIdentity::generate_self_signed(&["localhost", "127.0.0.1"]).unwrap();
    let (chain, key) = identity.to_pem();
    let dir = tempfile::tempdir().unwrap();
    let cert_path = dir.path().join("cert.pem");
    let key_path = dir.path().join("privkey.pem");
    std::fs::write(&cert_path, chain).unwrap();
    std::fs::write(&key_path, key).unwrap();
    Pem {
        _dir: dir,
        cert: cert_path,
        key: key_path,
        identity,
    }
}

/// A JSON string for a path.
fn js(path: &Path) -> String {
    serde_json::to_string(&path.display().to_string()).unwrap()
}

const USERS: &str =
    r#""databases":{"db":{"users":{"alice":{"password":"secret","admin_channels":["*"]}}}}"#;

/// Legacy `SSLCert`/`SSLKey` keys.
fn legacy_config(cert: &Path, key: &Path) -> GatewayConfig {
    GatewayConfig::from_json(&format!(
        r#"{{"interface":"127.0.0.1:0","adminInterface":"127.0.0.1:0",
            "SSLCert":{},"SSLKey":{},{USERS}}}"#,
        js(cert),
        js(key)
    ))
    .unwrap()
}

/// Sync Gateway 3.x `api.https` keys.
fn api_config(cert: &Path, key: &Path) -> GatewayConfig {
    GatewayConfig::from_json(&format!(
        r#"{{"api":{{"public_interface":"127.0.0.1:0","admin_interface":"127.0.0.1:0",
              "https":{{"tls_cert_path":{},"tls_key_path":{}}}}},{USERS}}}"#,
        js(cert),
        js(key)
    ))
    .unwrap()
}

/// An HTTPS client trusting only the test certificate.
fn https_client(pem: &Pem) -> Client {
    let root = reqwest::Certificate::from_pem(&std::fs::read(&pem.cert).unwrap()).unwrap();
    Client::builder()
        .tls_built_in_root_certs(false)
        .add_root_certificate(root)
        .build()
        .unwrap()
}

async fn welcome(c: &Client, url: String) -> Value {
    let r = c.get(url).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    r.json().await.unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn legacy_ssl_keys_serve_https_on_both_ports() {
    let pem = self_signed();
    let g = Gateway::start(&legacy_config(&pem.cert, &pem.key), Storage::InMemory)
        .await
        .unwrap();
    let c = https_client(&pem);
    let public = welcome(&c, format!("https://{}/", g.public_addr())).await;
    assert_eq!(public["couchdb"], "Welcome");
    assert!(public.get("ADMIN").is_none(), "{public}");
    let admin = welcome(&c, format!("https://{}/", g.admin_addr())).await;
    assert_eq!(admin["couchdb"], "Welcome");
    assert_eq!(admin["ADMIN"], true);

    // A document written on the admin port is read back on the public one, by host name.
    let r = c
        .put(format!("https://{}/db/doc1", g.admin_addr()))
        .json(&json!({"n": 1}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::CREATED);
    let r = c
        .get(format!(
            "https://localhost:{}/db/doc1",
            g.public_addr().port()
        ))
        .basic_auth("alice", Some("secret"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(r.json::<Value>().await.unwrap()["n"], 1);
    g.shutdown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn api_https_keys_serve_https_and_refuse_plain_http() {
    let pem = self_signed();
    let g = Gateway::start(&api_config(&pem.cert, &pem.key), Storage::InMemory)
        .await
        .unwrap();
    let c = https_client(&pem);
    for addr in [g.public_addr(), g.admin_addr()] {
        let body = welcome(&c, format!("https://{addr}/")).await;
        assert_eq!(body["couchdb"], "Welcome");
        let plain = Client::new()
            .get(format!("http://{addr}/"))
            .timeout(Duration::from_secs(10))
            .send()
            .await;
        assert!(plain.is_err(), "plain HTTP answered on {addr}: {plain:?}");
    }
    // A client that does not trust the certificate is refused by its own TLS check.
    let untrusting = Client::builder()
        .tls_built_in_root_certs(false)
        .build()
        .unwrap()
        .get(format!("https://{}/", g.public_addr()))
        .send()
        .await;
    assert!(untrusting.is_err(), "{untrusting:?}");
    // And the gateway still serves the next one.
    welcome(&c, format!("https://{}/", g.public_addr())).await;
    g.shutdown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn replicates_over_wss_with_pinned_certificate() {
    let pem = self_signed();
    let g = Gateway::start(&legacy_config(&pem.cert, &pem.key), Storage::InMemory)
        .await
        .unwrap();
    let r = https_client(&pem)
        .put(format!("https://{}/db/from-gateway", g.admin_addr()))
        .json(&json!({"type": "user", "name": "Demo"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::CREATED);

    let url = format!("wss://{}/db", g.public_addr());
    let pinned = pem.identity.certificate().der().to_vec();
    let other = TlsIdentity::generate_self_signed(&["127.0.0.1"])
        .unwrap()
        .certificate()
        .der()
        .to_vec();
    let (wrong_pin, wrong_password, synced, pulled) = tokio::task::spawn_blocking(move || {
        let phone = ferrolite::Database::open_in_memory("phone").unwrap();
        let mut doc = MutableDocument::with_id("from-phone");
        doc.set("type", "note");
        phone.save(&mut doc).unwrap();
        let config = |pin: &[u8], password: &str| {
            ReplicatorConfiguration::new(&phone, Endpoint::url(&url).unwrap())
                .replicator_type(ReplicatorType::PushAndPull)
                .pinned_server_certificate(pin.to_vec())
                .authenticator(Authenticator::basic("alice", password))
                .max_attempts(1)
        };
        let wrong_pin = ferrolite::sync_once(config(&other, "secret"), Duration::from_secs(20));
        let wrong_password =
            ferrolite::sync_once(config(&pinned, "wrong"), Duration::from_secs(20));
        let synced = ferrolite::sync_once(config(&pinned, "secret"), Duration::from_secs(20));
        let pulled = phone
            .document("from-gateway")
            .unwrap()
            .map(|d| d.properties().clone());
        (wrong_pin, wrong_password, synced, pulled)
    })
    .await
    .unwrap();
    assert!(matches!(wrong_pin, SyncOutcome::Failed(_)), "{wrong_pin:?}");
    assert!(
        matches!(wrong_password, SyncOutcome::Failed(_)),
        "{wrong_password:?}"
    );
    match &synced {
        SyncOutcome::NewData { document_ids, .. } => assert_eq!(document_ids, &["from-gateway"]),
        other => panic!("expected new data, got {other:?}"),
    }
    assert_eq!(
        Value::Object(pulled.unwrap()),
        json!({"type": "user", "name": "Demo"})
    );
    let pushed = g
        .database("db")
        .unwrap()
        .document("from-phone")
        .unwrap()
        .expect("the phone's document reached the gateway");
    assert_eq!(
        Value::Object(pushed.properties().clone()),
        json!({"type": "note"})
    );
    g.shutdown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn silent_client_holds_up_neither_others_nor_shutdown() {
    let pem = self_signed();
    let g = Gateway::start(&legacy_config(&pem.cert, &pem.key), Storage::InMemory)
        .await
        .unwrap();
    // Connects and never starts the TLS handshake.
    let silent = tokio::net::TcpStream::connect(g.public_addr())
        .await
        .unwrap();
    let c = https_client(&pem);
    welcome(&c, format!("https://{}/", g.public_addr())).await;
    // `c` keeps its connection open too; stopping closes both.
    tokio::time::timeout(Duration::from_secs(5), g.shutdown())
        .await
        .expect("shutdown waited for a silent client");
    drop(silent);
}

/// The start error for a configuration, which must be a TLS error naming `path`.
async fn tls_start_error(config: &GatewayConfig, what: &str, path: &Path) -> String {
    let err = Gateway::start(config, Storage::InMemory)
        .await
        .expect_err("the gateway started");
    let text = err.to_string();
    match &err {
        GatewayError::Tls {
            what: w, path: p, ..
        } => {
            assert_eq!(*w, what, "{text}");
            assert_eq!(p, path, "{text}");
        }
        other => panic!("expected a TLS error, got {other:?}"),
    }
    assert!(text.contains(&path.display().to_string()), "{text}");
    text
}

#[tokio::test(flavor = "multi_thread")]
async fn unusable_certificate_or_key_file_is_a_start_error() {
    let pem = self_signed();
    let dir = tempfile::tempdir().unwrap();

    let missing = dir.path().join("missing.pem");
    let text = tls_start_error(&legacy_config(&missing, &pem.key), "certificate", &missing).await;
    assert!(text.contains("TLS certificate"), "{text}");
    tls_start_error(&api_config(&pem.cert, &missing), "private key", &missing).await;

    let garbage = dir.path().join("garbage.pem");
    std::fs::write(&garbage, "not a PEM file\n").unwrap();
    tls_start_error(&legacy_config(&garbage, &pem.key), "certificate", &garbage).await;
    tls_start_error(&legacy_config(&pem.cert, &garbage), "private key", &garbage).await;
    // A certificate where the key should be.
    tls_start_error(
        &legacy_config(&pem.cert, &pem.cert),
        "private key",
        &pem.cert,
    )
    .await;

    // Another certificate's key.
    let other = self_signed();
    let text = tls_start_error(
        &legacy_config(&pem.cert, &other.key),
        "private key",
        &other.key,
    )
    .await;
    assert!(text.contains(&pem.cert.display().to_string()), "{text}");
}
