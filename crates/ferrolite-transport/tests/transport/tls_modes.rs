//! `wss://` trust modes against TLS listeners, with certificates made here by rcgen.

use bytes::Bytes;
use ferrolite_transport::{
    Certificate, Incoming, Listener, ListenerConfig, ListenerTls, ServerTrust, TlsFailure,
    TlsIdentity, TransportError, UrlEndpoint,
};
use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair};

use crate::support::*;

fn params(names: &[&str], common_name: &str) -> CertificateParams {
    let mut params =
        CertificateParams::new(names.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>()).unwrap();
    params.distinguished_name = rcgen::DistinguishedName::new();
    params
        .distinguished_name
        .push(DnType::CommonName, common_name);
    params
}

fn identity(cert: &rcgen::Certificate, key: &KeyPair) -> TlsIdentity {
    TlsIdentity::from_der(
        vec![Certificate::from_der(cert.der().to_vec())],
        key.serialize_der(),
    )
    .unwrap()
}

/// A self-signed identity for `names`.
fn self_signed(names: &[&str], common_name: &str, ca_flag: bool) -> TlsIdentity {
    let key = KeyPair::generate().unwrap();
    let mut params = params(names, common_name);
    if ca_flag {
        // What `openssl req -x509` produces: basicConstraints CA:TRUE on a self-signed leaf.
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    }
    identity(&params.self_signed(&key).unwrap(), &key)
}

/// A test CA and a leaf for 127.0.0.1 issued by it: (CA certificate, leaf identity).
fn ca_and_leaf() -> (Certificate, TlsIdentity) {
    let ca_key = KeyPair::generate().unwrap();
    let mut ca_params = params(&[], "ferrolite test CA");
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca_cert = ca_params.self_signed(&ca_key).unwrap();
    let issuer = Issuer::new(ca_params, ca_key);
    let leaf_key = KeyPair::generate().unwrap();
    let leaf = params(&["127.0.0.1"], "ferrolite test server")
        .signed_by(&leaf_key, &issuer)
        .unwrap();
    (
        Certificate::from_der(ca_cert.der().to_vec()),
        identity(&leaf, &leaf_key),
    )
}

async fn tls_listener(tls: ListenerTls) -> Listener {
    Listener::bind(ListenerConfig::new(localhost(), ["db"]).with_tls(tls))
        .await
        .unwrap()
}

async fn connect(listener: &Listener, trust: ServerTrust) -> Result<(), TransportError> {
    let url = listener.url("db");
    assert!(url.starts_with("wss://127.0.0.1:"), "{url}");
    let mut client = UrlEndpoint::parse(&url)
        .unwrap()
        .with_trust(trust)
        .connect()
        .await?;
    // Prove the channel works end to end.
    let mut server = listener.accept().await.unwrap().connection;
    client.send(Bytes::from_static(b"ping")).await.unwrap();
    assert_eq!(
        recv(&mut server).await.unwrap(),
        Some(Incoming::Message(Bytes::from_static(b"ping")))
    );
    Ok(())
}

fn assert_tls(err: TransportError, expected: TlsFailure, code: i32) {
    match &err {
        TransportError::Tls { kind, .. } => assert_eq!(*kind, expected, "{err}"),
        other => panic!("expected a TLS error, got {other:?}"),
    }
    assert_eq!(err.code(), code, "{err}");
    assert!(!err.is_transient(), "{err}");
}

#[tokio::test]
async fn custom_roots_accept_a_ca_issued_certificate() {
    let (ca, leaf) = ca_and_leaf();
    let listener = tls_listener(ListenerTls::Identity(leaf)).await;
    connect(&listener, ServerTrust::CustomRoots(vec![ca]))
        .await
        .unwrap();
}

#[tokio::test]
async fn custom_roots_check_the_host_name() {
    let (first_ca, _) = ca_and_leaf();
    // A second CA and a leaf it issued for another host name.
    let (second_ca, leaf_for_another_name) = {
        let ca_key = KeyPair::generate().unwrap();
        let mut ca_params = params(&[], "second CA");
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let ca_cert = ca_params.self_signed(&ca_key).unwrap();
        let issuer = Issuer::new(ca_params, ca_key);
        let key = KeyPair::generate().unwrap();
        let leaf = params(&["sync.example.com"], "elsewhere")
            .signed_by(&key, &issuer)
            .unwrap();
        (
            Certificate::from_der(ca_cert.der().to_vec()),
            identity(&leaf, &key),
        )
    };
    let listener = tls_listener(ListenerTls::Identity(leaf_for_another_name)).await;
    let err = connect(&listener, ServerTrust::CustomRoots(vec![second_ca]))
        .await
        .unwrap_err();
    assert_tls(err, TlsFailure::NameMismatch, 15);
    let err = connect(&listener, ServerTrust::CustomRoots(vec![first_ca]))
        .await
        .unwrap_err();
    assert_tls(err, TlsFailure::UnknownRoot, 11);
}

#[tokio::test]
async fn platform_roots_refuse_a_self_signed_certificate() {
    let listener = tls_listener(ListenerTls::Identity(self_signed(
        &["127.0.0.1"],
        "self",
        false,
    )))
    .await;
    let err = connect(&listener, ServerTrust::PlatformRoots)
        .await
        .unwrap_err();
    match &err {
        TransportError::Tls { kind, .. } => {
            assert!(
                matches!(kind, TlsFailure::UnknownRoot | TlsFailure::CertUntrusted),
                "{err}"
            );
        }
        other => panic!("expected a TLS error, got {other:?}"),
    }
}

#[tokio::test]
async fn pinned_certificate_match_is_accepted() {
    // A certificate for a name that is not the address we connect to: pinning ignores
    // host names and issuers.
    let listener = tls_listener(ListenerTls::Identity(self_signed(
        &["peer.local"],
        "peer",
        false,
    )))
    .await;
    let pinned = listener.certificate().unwrap().clone();
    connect(&listener, ServerTrust::PinnedCertificate(pinned))
        .await
        .unwrap();

    // A CA-issued certificate can be pinned too, without trusting its CA.
    let (_ca, leaf) = ca_and_leaf();
    let pinned = leaf.certificate().clone();
    let listener = tls_listener(ListenerTls::Identity(leaf)).await;
    connect(&listener, ServerTrust::PinnedCertificate(pinned))
        .await
        .unwrap();
}

#[tokio::test]
async fn pinned_certificate_mismatch_is_refused() {
    let listener = tls_listener(ListenerTls::Identity(self_signed(
        &["127.0.0.1"],
        "this one",
        false,
    )))
    .await;
    let other = self_signed(&["127.0.0.1"], "other", false)
        .certificate()
        .clone();
    let err = connect(&listener, ServerTrust::PinnedCertificate(other))
        .await
        .unwrap_err();
    assert_tls(err, TlsFailure::CertUntrusted, 8);
}

#[tokio::test]
async fn self_signed_only_accepts_a_self_signed_certificate() {
    // No host-name check in this mode: the certificate names another host.
    let listener = tls_listener(ListenerTls::Identity(self_signed(
        &["peer.local"],
        "peer",
        false,
    )))
    .await;
    connect(&listener, ServerTrust::SelfSignedOnly)
        .await
        .unwrap();

    // Self-signed with CA:TRUE, as `openssl req -x509` makes them.
    let listener = tls_listener(ListenerTls::Identity(self_signed(
        &["127.0.0.1"],
        "openssl-style",
        true,
    )))
    .await;
    connect(&listener, ServerTrust::SelfSignedOnly)
        .await
        .unwrap();
}

#[tokio::test]
async fn self_signed_only_refuses_a_ca_issued_certificate() {
    let (_ca, leaf) = ca_and_leaf();
    let listener = tls_listener(ListenerTls::Identity(leaf)).await;
    let err = connect(&listener, ServerTrust::SelfSignedOnly)
        .await
        .unwrap_err();
    assert_tls(err, TlsFailure::CertUntrusted, 8);
}

#[tokio::test]
async fn identity_from_pem() {
    let key = KeyPair::generate().unwrap();
    let cert = params(&["127.0.0.1"], "pem").self_signed(&key).unwrap();
    let pem_cert = pem_encode("CERTIFICATE", cert.der());
    let pem_key = pem_encode("PRIVATE KEY", &key.serialize_der());
    let identity = TlsIdentity::from_pem(&pem_cert, &pem_key).unwrap();
    assert_eq!(identity.certificate().der(), cert.der().as_ref());
    assert_eq!(Certificate::from_pem(&pem_cert).unwrap().len(), 1);
    assert!(Certificate::from_pem("nothing here").is_err());
}

fn pem_encode(label: &str, der: &[u8]) -> String {
    use base64::Engine as _;
    let b64 = base64::engine::general_purpose::STANDARD.encode(der);
    let mut out = format!("-----BEGIN {label}-----\n");
    for line in b64.as_bytes().chunks(64) {
        out.push_str(std::str::from_utf8(line).unwrap());
        out.push('\n');
    }
    out.push_str(&format!("-----END {label}-----\n"));
    out
}

#[cfg(feature = "self-signed")]
#[tokio::test]
async fn listener_generates_a_self_signed_certificate() {
    let listener = tls_listener(ListenerTls::SelfSigned(vec!["peer.local".into()])).await;
    let generated = listener.certificate().unwrap().clone();
    connect(&listener, ServerTrust::SelfSignedOnly)
        .await
        .unwrap();
    connect(&listener, ServerTrust::PinnedCertificate(generated))
        .await
        .unwrap();
}
