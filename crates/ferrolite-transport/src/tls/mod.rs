//! TLS for `wss://` endpoints and TLS listeners, with rustls and its `ring` provider.
//!
//! The trust modes are described at [`ServerTrust`].

mod x509;

use std::fmt;
use std::sync::{Arc, OnceLock};

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{verify_tls12_signature, verify_tls13_signature, CryptoProvider};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::{CertificateError, DigitallySignedStruct, Error as RustlsError, RootCertStore};

use crate::error::{TlsFailure, TransportError};

/// An X.509 certificate, DER-encoded.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct Certificate(CertificateDer<'static>);

impl Certificate {
    /// Wraps DER bytes. The bytes are parsed when used.
    pub fn from_der(der: impl Into<Vec<u8>>) -> Self {
        Certificate(CertificateDer::from(der.into()))
    }

    /// Every certificate in a PEM text (`-----BEGIN CERTIFICATE-----` sections).
    pub fn from_pem(pem: &str) -> Result<Vec<Certificate>, TransportError> {
        let certs = CertificateDer::pem_slice_iter(pem.as_bytes())
            .map(|c| c.map(Certificate))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| TransportError::InvalidConfig(format!("bad certificate PEM: {e}")))?;
        if certs.is_empty() {
            return Err(TransportError::InvalidConfig(
                "no certificate found in the PEM text".into(),
            ));
        }
        Ok(certs)
    }

    /// The DER bytes.
    pub fn der(&self) -> &[u8] {
        self.0.as_ref()
    }

    fn inner(&self) -> CertificateDer<'static> {
        self.0.clone()
    }
}

impl fmt::Debug for Certificate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Certificate({} bytes)", self.0.len())
    }
}

/// A certificate chain and its private key: what a TLS [`Listener`](crate::Listener)
/// presents.
pub struct TlsIdentity {
    chain: Vec<Certificate>,
    key: PrivateKeyDer<'static>,
}

impl TlsIdentity {
    /// From a DER certificate chain (leaf first) and a DER private key (PKCS#8, PKCS#1 or
    /// SEC1).
    pub fn from_der(chain: Vec<Certificate>, key_der: Vec<u8>) -> Result<Self, TransportError> {
        if chain.is_empty() {
            return Err(TransportError::InvalidConfig(
                "a TLS identity needs at least one certificate".into(),
            ));
        }
        let key = PrivateKeyDer::try_from(key_der)
            .map_err(|e| TransportError::InvalidConfig(format!("bad private key: {e}")))?;
        Ok(TlsIdentity { chain, key })
    }

    /// From PEM texts: the certificate chain (leaf first) and the private key.
    pub fn from_pem(chain_pem: &str, key_pem: &str) -> Result<Self, TransportError> {
        let chain = Certificate::from_pem(chain_pem)?;
        let key = PrivateKeyDer::from_pem_slice(key_pem.as_bytes())
            .map_err(|e| TransportError::InvalidConfig(format!("bad private key PEM: {e}")))?;
        Ok(TlsIdentity { chain, key })
    }

    /// Generates a self-signed certificate (ECDSA P-256) for the given host names and IP
    /// addresses, as Couchbase Lite's peer-to-peer listener does when given no identity.
    #[cfg(feature = "self-signed")]
    pub fn generate_self_signed(names: &[&str]) -> Result<Self, TransportError> {
        let names: Vec<String> = names.iter().map(|s| (*s).to_owned()).collect();
        let generated = rcgen::generate_simple_self_signed(names).map_err(|e| {
            TransportError::InvalidConfig(format!("cannot generate a certificate: {e}"))
        })?;
        let key = generated.signing_key.serialize_der();
        TlsIdentity::from_der(
            vec![Certificate::from_der(generated.cert.der().to_vec())],
            key,
        )
    }

    /// The leaf certificate (what a client pins).
    pub fn certificate(&self) -> &Certificate {
        // `from_der` and `from_pem` refuse empty chains.
        &self.chain[0]
    }

    /// The certificate chain, leaf first.
    pub fn chain(&self) -> &[Certificate] {
        &self.chain
    }

    /// The identity in PEM: the certificate chain (leaf first, `CERTIFICATE` sections) and
    /// the private key (`PRIVATE KEY`, `RSA PRIVATE KEY` or `EC PRIVATE KEY`, as it was
    /// given), what [`from_pem`](Self::from_pem) reads back. Lets a generated identity be
    /// saved, so that its certificate (and a client's pin of it) outlives the process.
    ///
    /// The key text is a secret: store it where only the server can read it.
    pub fn to_pem(&self) -> (String, String) {
        let mut chain = String::new();
        for cert in &self.chain {
            chain.push_str(&pem_section("CERTIFICATE", cert.der()));
        }
        let label = match &self.key {
            PrivateKeyDer::Pkcs1(_) => "RSA PRIVATE KEY",
            PrivateKeyDer::Sec1(_) => "EC PRIVATE KEY",
            _ => "PRIVATE KEY",
        };
        (chain, pem_section(label, self.key.secret_der()))
    }

    /// A rustls server configuration presenting this identity, for a TLS server of one's
    /// own (an HTTPS listener, say): the process-wide `ring` provider, TLS 1.2 and 1.3, no
    /// client certificates, no ALPN protocols (the caller may set them). Fails when the key
    /// is unusable or does not belong to the leaf certificate.
    pub fn rustls_server_config(&self) -> Result<rustls::ServerConfig, TransportError> {
        self.server_config()
    }

    pub(crate) fn server_config(&self) -> Result<rustls::ServerConfig, TransportError> {
        let config = rustls::ServerConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .map_err(|e| TransportError::InvalidConfig(format!("TLS versions: {e}")))?
            .with_no_client_auth()
            .with_single_cert(
                self.chain.iter().map(Certificate::inner).collect(),
                self.key.clone_key(),
            )
            .map_err(|e| TransportError::InvalidConfig(format!("TLS identity: {e}")))?;
        Ok(config)
    }
}

impl Clone for TlsIdentity {
    fn clone(&self) -> Self {
        TlsIdentity {
            chain: self.chain.clone(),
            key: self.key.clone_key(),
        }
    }
}

impl fmt::Debug for TlsIdentity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TlsIdentity")
            .field("chain", &self.chain)
            .finish_non_exhaustive()
    }
}

/// One PEM section: `-----BEGIN <label>-----`, base64 in 64-character lines, `-----END`.
fn pem_section(label: &str, der: &[u8]) -> String {
    use base64::Engine as _;
    let encoded = base64::engine::general_purpose::STANDARD.encode(der);
    let mut out = format!("-----BEGIN {label}-----\n");
    // Base64 is ASCII, so every 64-byte chunk is valid UTF-8.
    for line in encoded.as_bytes().chunks(64) {
        out.push_str(&String::from_utf8_lossy(line));
        out.push('\n');
    }
    out.push_str("-----END ");
    out.push_str(label);
    out.push_str("-----\n");
    out
}

/// How a `wss://` client decides whether to trust the server.
///
/// The client verifies the server in one of four [`ServerTrust`] modes:
///
/// * [`ServerTrust::PlatformRoots`] (default): the operating system's trust store, loaded
///   once per process with `rustls-native-certs`, plus the usual host-name check. We chose
///   the platform store over a compiled-in Mozilla list (`webpki-roots`) because Couchbase
///   Lite does the same, because enterprise CAs installed on the machine then just work,
///   and because a compiled-in list goes stale with the binary. Where a platform has no
///   store (minimal containers), connecting fails with an "unknown root" TLS error and the
///   application can pass roots itself with [`ServerTrust::CustomRoots`].
/// * [`ServerTrust::CustomRoots`]: only the given CA certificates, plus the host-name check.
/// * [`ServerTrust::PinnedCertificate`]: only a server whose leaf certificate is
///   byte-for-byte the pinned one (DER equality), whoever issued it and whatever host
///   names it lists. As in Couchbase Lite, its validity period is still checked.
/// * [`ServerTrust::SelfSignedOnly`]: Couchbase Lite's
///   `acceptOnlySelfSignedServerCertificate`: a self-signed leaf (issuer equal to subject,
///   signature verified with its own key) is accepted without a host-name check; a
///   certificate issued by a CA is refused, even one the platform trusts. The validity
///   period is checked.
///
/// In every mode the TLS handshake signatures are verified by rustls.
#[derive(Debug, Clone, Default)]
#[non_exhaustive]
pub enum ServerTrust {
    /// The operating system's trust store and a host-name check (default).
    #[default]
    PlatformRoots,
    /// Only these CA certificates, and a host-name check.
    CustomRoots(Vec<Certificate>),
    /// Only a server presenting exactly this leaf certificate.
    PinnedCertificate(Certificate),
    /// Only self-signed server certificates; no host-name check.
    SelfSignedOnly,
}

/// The process-wide crypto provider: rustls with `ring`.
pub(crate) fn provider() -> Arc<CryptoProvider> {
    static PROVIDER: OnceLock<Arc<CryptoProvider>> = OnceLock::new();
    PROVIDER
        .get_or_init(|| Arc::new(rustls::crypto::ring::default_provider()))
        .clone()
}

/// The platform's root certificates, loaded once.
fn platform_roots() -> Arc<RootCertStore> {
    static ROOTS: OnceLock<Arc<RootCertStore>> = OnceLock::new();
    ROOTS
        .get_or_init(|| {
            let loaded = rustls_native_certs::load_native_certs();
            for error in &loaded.errors {
                tracing::warn!(target: "ferrolite::network", "loading platform root certificates: {error}");
            }
            let mut store = RootCertStore::empty();
            let (added, ignored) = store.add_parsable_certificates(loaded.certs);
            tracing::debug!(target: "ferrolite::network", added, ignored, "platform root certificates");
            Arc::new(store)
        })
        .clone()
}

/// Builds the rustls client configuration for a trust mode.
pub(crate) fn client_config(trust: &ServerTrust) -> Result<rustls::ClientConfig, TransportError> {
    let provider = provider();
    let builder = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| TransportError::InvalidConfig(format!("TLS versions: {e}")))?;
    let verifier: Arc<dyn ServerCertVerifier> = match trust {
        ServerTrust::PlatformRoots => webpki_verifier(platform_roots(), provider)?,
        ServerTrust::CustomRoots(roots) => {
            let mut store = RootCertStore::empty();
            for root in roots {
                store.add(root.inner()).map_err(|e| {
                    TransportError::InvalidConfig(format!("unusable root certificate: {e}"))
                })?;
            }
            webpki_verifier(Arc::new(store), provider)?
        }
        ServerTrust::PinnedCertificate(cert) => Arc::new(CustomVerifier {
            mode: Mode::Pinned(cert.inner()),
            provider,
        }),
        ServerTrust::SelfSignedOnly => Arc::new(CustomVerifier {
            mode: Mode::SelfSignedOnly,
            provider,
        }),
    };
    Ok(builder
        .dangerous()
        .with_custom_certificate_verifier(verifier)
        .with_no_client_auth())
}

fn webpki_verifier(
    roots: Arc<RootCertStore>,
    provider: Arc<CryptoProvider>,
) -> Result<Arc<dyn ServerCertVerifier>, TransportError> {
    if roots.is_empty() {
        // Building would fail with a generic message; let the handshake say it instead.
        return Ok(Arc::new(NoRoots));
    }
    let verifier = rustls::client::WebPkiServerVerifier::builder_with_provider(roots, provider)
        .build()
        .map_err(|e| TransportError::InvalidConfig(format!("TLS verifier: {e}")))?;
    Ok(verifier)
}

/// Why one of our own verifiers refused a certificate (carried inside rustls's error so
/// the handshake error can be classified).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Refusal {
    PinMismatch,
    NotSelfSigned,
    BadSelfSignature,
    Expired,
    NotYetValid,
    Malformed,
    NoRoots,
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Refusal::PinMismatch => "the server certificate is not the pinned certificate",
            Refusal::NotSelfSigned => {
                "the server certificate is not self-signed (only self-signed certificates are accepted)"
            }
            Refusal::BadSelfSignature => {
                "the server certificate claims to be self-signed but its signature does not verify"
            }
            Refusal::Expired => "the server certificate has expired",
            Refusal::NotYetValid => "the server certificate is not valid yet",
            Refusal::Malformed => "the server certificate cannot be parsed",
            Refusal::NoRoots => "no trusted root certificates are available on this platform",
        })
    }
}

impl std::error::Error for Refusal {}

impl Refusal {
    fn into_rustls(self) -> RustlsError {
        RustlsError::InvalidCertificate(CertificateError::Other(rustls::OtherError(Arc::new(self))))
    }

    fn failure(self) -> TlsFailure {
        match self {
            Refusal::Expired | Refusal::NotYetValid => TlsFailure::CertExpired,
            Refusal::NoRoots => TlsFailure::UnknownRoot,
            Refusal::PinMismatch
            | Refusal::NotSelfSigned
            | Refusal::BadSelfSignature
            | Refusal::Malformed => TlsFailure::CertUntrusted,
        }
    }
}

#[derive(Debug)]
enum Mode {
    Pinned(CertificateDer<'static>),
    SelfSignedOnly,
}

/// Pinned-certificate and self-signed-only verification. Handshake signatures are
/// delegated to rustls with the provider's algorithms.
#[derive(Debug)]
struct CustomVerifier {
    mode: Mode,
    provider: Arc<CryptoProvider>,
}

fn check_validity(view: &x509::CertView<'_>, now: UnixTime) -> Result<(), Refusal> {
    let now = i64::try_from(now.as_secs()).unwrap_or(i64::MAX);
    if now < view.not_before {
        return Err(Refusal::NotYetValid);
    }
    if now > view.not_after {
        return Err(Refusal::Expired);
    }
    Ok(())
}

impl CustomVerifier {
    fn verify(&self, end_entity: &CertificateDer<'_>, now: UnixTime) -> Result<(), Refusal> {
        match &self.mode {
            Mode::Pinned(pinned) => {
                if end_entity.as_ref() != pinned.as_ref() {
                    return Err(Refusal::PinMismatch);
                }
                let view = x509::parse(end_entity.as_ref()).ok_or(Refusal::Malformed)?;
                check_validity(&view, now)
            }
            Mode::SelfSignedOnly => {
                let view = x509::parse(end_entity.as_ref()).ok_or(Refusal::Malformed)?;
                if view.issuer != view.subject {
                    return Err(Refusal::NotSelfSigned);
                }
                let algorithms = self.provider.signature_verification_algorithms.all;
                let verified = algorithms.iter().any(|alg| {
                    alg.signature_alg_id().as_ref() == view.signature_alg
                        && alg.public_key_alg_id().as_ref() == view.spki_alg
                        && alg
                            .verify_signature(view.spki_key, view.tbs, view.signature)
                            .is_ok()
                });
                if !verified {
                    return Err(Refusal::BadSelfSignature);
                }
                check_validity(&view, now)
            }
        }
    }
}

impl ServerCertVerifier for CustomVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, RustlsError> {
        self.verify(end_entity, now)
            .map(|()| ServerCertVerified::assertion())
            .map_err(Refusal::into_rustls)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, RustlsError> {
        verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, RustlsError> {
        verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

/// The verifier used when the platform has no root certificates: refuses every server.
#[derive(Debug)]
struct NoRoots;

impl ServerCertVerifier for NoRoots {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, RustlsError> {
        Err(Refusal::NoRoots.into_rustls())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, RustlsError> {
        verify_tls12_signature(
            message,
            cert,
            dss,
            &provider().signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, RustlsError> {
        verify_tls13_signature(
            message,
            cert,
            dss,
            &provider().signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        provider()
            .signature_verification_algorithms
            .supported_schemes()
    }
}

/// The rustls server name for a URL host (a DNS name or an IP address).
pub(crate) fn server_name(host: &str) -> Result<ServerName<'static>, TransportError> {
    ServerName::try_from(host.to_owned()).map_err(|e| TransportError::InvalidUrl {
        url: host.to_owned(),
        reason: format!("not a usable TLS server name: {e}"),
    })
}

/// Classifies an I/O error from a TLS handshake.
pub(crate) fn map_handshake_error(err: std::io::Error) -> TransportError {
    let Some(tls) = err
        .get_ref()
        .and_then(|inner| inner.downcast_ref::<RustlsError>())
    else {
        return TransportError::io("TLS handshake", err);
    };
    let kind = match tls {
        RustlsError::InvalidCertificate(cert_error) => certificate_failure(cert_error),
        RustlsError::AlertReceived(rustls::AlertDescription::CertificateRequired) => {
            TlsFailure::ClientCertRequired
        }
        RustlsError::AlertReceived(
            rustls::AlertDescription::BadCertificate
            | rustls::AlertDescription::UnsupportedCertificate
            | rustls::AlertDescription::CertificateRevoked
            | rustls::AlertDescription::CertificateExpired
            | rustls::AlertDescription::CertificateUnknown,
        ) => TlsFailure::ClientCertRejected,
        _ => TlsFailure::HandshakeFailed,
    };
    let message = match tls {
        RustlsError::InvalidCertificate(CertificateError::Other(other)) => {
            match other.0.downcast_ref::<Refusal>() {
                Some(refusal) => refusal.to_string(),
                None => tls.to_string(),
            }
        }
        _ => tls.to_string(),
    };
    TransportError::Tls { kind, message }
}

fn certificate_failure(err: &CertificateError) -> TlsFailure {
    match err {
        CertificateError::Expired
        | CertificateError::ExpiredContext { .. }
        | CertificateError::NotValidYet
        | CertificateError::NotValidYetContext { .. } => TlsFailure::CertExpired,
        CertificateError::UnknownIssuer => TlsFailure::UnknownRoot,
        CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. } => {
            TlsFailure::NameMismatch
        }
        CertificateError::Revoked => TlsFailure::CertRevoked,
        CertificateError::Other(other) => other
            .0
            .downcast_ref::<Refusal>()
            .map_or(TlsFailure::CertUntrusted, |r| r.failure()),
        _ => TlsFailure::CertUntrusted,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cert(
        not_before: (i32, u8, u8),
        not_after: (i32, u8, u8),
        issuer: Option<&rcgen::Issuer<'_, rcgen::KeyPair>>,
    ) -> Vec<u8> {
        let key = rcgen::KeyPair::generate().unwrap();
        let mut params = rcgen::CertificateParams::new(vec!["peer.local".to_owned()]).unwrap();
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "leaf");
        params.not_before = rcgen::date_time_ymd(not_before.0, not_before.1, not_before.2);
        params.not_after = rcgen::date_time_ymd(not_after.0, not_after.1, not_after.2);
        let cert = match issuer {
            Some(issuer) => params.signed_by(&key, issuer).unwrap(),
            None => params.self_signed(&key).unwrap(),
        };
        cert.der().to_vec()
    }

    fn verifier(mode: Mode) -> CustomVerifier {
        CustomVerifier {
            mode,
            provider: provider(),
        }
    }

    fn now() -> UnixTime {
        UnixTime::since_unix_epoch(std::time::Duration::from_secs(1_800_000_000))
        // 2027
    }

    fn check(v: &CustomVerifier, der: &[u8]) -> Result<(), Refusal> {
        v.verify(&CertificateDer::from(der.to_vec()), now())
    }

    #[test]
    fn self_signed_only_checks_signature_issuer_and_dates() {
        let v = verifier(Mode::SelfSignedOnly);
        let good = cert((2020, 1, 1), (2040, 1, 1), None);
        assert_eq!(check(&v, &good), Ok(()));
        let expired = cert((2000, 1, 1), (2001, 1, 1), None);
        assert_eq!(check(&v, &expired), Err(Refusal::Expired));
        let future = cert((2035, 1, 1), (2040, 1, 1), None);
        assert_eq!(check(&v, &future), Err(Refusal::NotYetValid));
        // Flip a bit of the signature (the last bytes of the DER).
        let mut forged = good.clone();
        let last = forged.len() - 1;
        forged[last] ^= 0x01;
        assert_eq!(check(&v, &forged), Err(Refusal::BadSelfSignature));
        assert_eq!(check(&v, b"not a certificate"), Err(Refusal::Malformed));

        let ca_key = rcgen::KeyPair::generate().unwrap();
        let mut ca = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        ca.distinguished_name
            .push(rcgen::DnType::CommonName, "test CA");
        ca.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        let issuer = rcgen::Issuer::new(ca, ca_key);
        let issued = cert((2020, 1, 1), (2040, 1, 1), Some(&issuer));
        assert_eq!(check(&v, &issued), Err(Refusal::NotSelfSigned));
    }

    #[test]
    fn pinning_compares_bytes_and_dates() {
        let pinned = cert((2020, 1, 1), (2040, 1, 1), None);
        let v = verifier(Mode::Pinned(CertificateDer::from(pinned.clone())));
        assert_eq!(check(&v, &pinned), Ok(()));
        let other = cert((2020, 1, 1), (2040, 1, 1), None);
        assert_eq!(check(&v, &other), Err(Refusal::PinMismatch));
        let expired = cert((2000, 1, 1), (2001, 1, 1), None);
        let v = verifier(Mode::Pinned(CertificateDer::from(expired.clone())));
        assert_eq!(check(&v, &expired), Err(Refusal::Expired));
    }

    #[cfg(feature = "self-signed")]
    #[test]
    fn identity_pem_round_trips() {
        let identity = TlsIdentity::generate_self_signed(&["localhost"]).unwrap();
        let (chain, key) = identity.to_pem();
        assert!(
            chain.starts_with("-----BEGIN CERTIFICATE-----\n"),
            "{chain}"
        );
        assert!(chain.lines().all(|l| l.len() <= 64), "{chain}");
        assert!(key.starts_with("-----BEGIN PRIVATE KEY-----\n"), "{key}");
        let back = TlsIdentity::from_pem(&chain, &key).unwrap();
        assert_eq!(back.chain(), identity.chain());
        assert_eq!(back.key.secret_der(), identity.key.secret_der());
        back.rustls_server_config().unwrap();

        // A key that is not the certificate's is refused when the server config is built.
        let other = TlsIdentity::generate_self_signed(&["localhost"]).unwrap();
        let mismatched = TlsIdentity::from_pem(&chain, &other.to_pem().1).unwrap();
        assert!(mismatched.rustls_server_config().is_err());
    }

    #[test]
    fn refusals_classify() {
        let err = Refusal::Expired.into_rustls();
        let RustlsError::InvalidCertificate(cert_err) = &err else {
            panic!("{err}")
        };
        assert_eq!(certificate_failure(cert_err), TlsFailure::CertExpired);
        let err = map_handshake_error(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            Refusal::PinMismatch.into_rustls(),
        ));
        assert!(matches!(
            err,
            TransportError::Tls {
                kind: TlsFailure::CertUntrusted,
                ..
            }
        ));
        assert!(err.to_string().contains("pinned"), "{err}");
    }
}
