//! The transport error type and its Couchbase-Lite-style classification.
//!
//! Every [`TransportError`] maps to a `(domain, code)` pair the way LiteCore reports
//! transport failures (`C4Error`): POSIX errno values for socket errors, LiteCore's
//! Network-domain codes for DNS, timeouts and TLS, and the WebSocket domain for HTTP
//! statuses of a refused upgrade and for WebSocket close codes. Whether an error is
//! *transient* (worth a retry) or *network-dependent* (worth a retry once the network
//! is back) follows LiteCore's `mayBeTransient` / `mayBeNetworkDependent` tables
//! (replicator-behaviour.md §4.1).

use std::io;

/// The error domain of a [`TransportError`], named after LiteCore's `C4ErrorDomain`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ErrorDomain {
    /// An operating-system error number (`errno`) from a socket operation.
    Posix,
    /// A LiteCore Network-domain code; see [`network_code`].
    Network,
    /// An HTTP status of a refused WebSocket upgrade, or a WebSocket close code.
    WebSocket,
}

/// LiteCore's Network-domain error codes (`C4NetworkErrorCode`).
pub mod network_code {
    /// DNS lookup failed temporarily (transient).
    pub const DNS_FAILURE: i32 = 1;
    /// The host name does not exist.
    pub const UNKNOWN_HOST: i32 = 2;
    /// Connect timeout, or the peer stopped answering heartbeats (transient).
    pub const TIMEOUT: i32 = 3;
    /// The endpoint URL is invalid.
    pub const INVALID_URL: i32 = 4;
    /// Too many redirects.
    pub const TOO_MANY_REDIRECTS: i32 = 5;
    /// The TLS handshake failed.
    pub const TLS_HANDSHAKE_FAILED: i32 = 6;
    /// The server certificate has expired (or is not yet valid).
    pub const TLS_CERT_EXPIRED: i32 = 7;
    /// The server certificate is not trusted.
    pub const TLS_CERT_UNTRUSTED: i32 = 8;
    /// The server requires a client certificate.
    pub const TLS_CLIENT_CERT_REQUIRED: i32 = 9;
    /// The server rejected the client certificate.
    pub const TLS_CLIENT_CERT_REJECTED: i32 = 10;
    /// The server certificate chains to an unknown root.
    pub const TLS_CERT_UNKNOWN_ROOT: i32 = 11;
    /// Invalid redirect.
    pub const INVALID_REDIRECT: i32 = 12;
    /// Unknown network error.
    pub const UNKNOWN: i32 = 13;
    /// The server certificate has been revoked.
    pub const TLS_CERT_REVOKED: i32 = 14;
    /// The server certificate does not match the host name.
    pub const TLS_CERT_NAME_MISMATCH: i32 = 15;
    /// The network was reset (transient).
    pub const NETWORK_RESET: i32 = 16;
    /// The connection was aborted (transient).
    pub const CONNECTION_ABORTED: i32 = 17;
    /// The connection was reset (transient).
    pub const CONNECTION_RESET: i32 = 18;
    /// The connection was refused (transient).
    pub const CONNECTION_REFUSED: i32 = 19;
    /// The network is down.
    pub const NETWORK_DOWN: i32 = 20;
    /// The network is unreachable.
    pub const NETWORK_UNREACHABLE: i32 = 21;
    /// The socket is not connected.
    pub const NOT_CONNECTED: i32 = 22;
    /// The host is down.
    pub const HOST_DOWN: i32 = 23;
    /// The host is unreachable.
    pub const HOST_UNREACHABLE: i32 = 24;
    /// The address is not available.
    pub const ADDRESS_NOT_AVAILABLE: i32 = 25;
    /// Broken pipe.
    pub const BROKEN_PIPE: i32 = 26;
    /// Unknown network interface.
    pub const UNKNOWN_INTERFACE: i32 = 27;
}

/// WebSocket close codes used by Couchbase Lite and Sync Gateway (transport-websocket.md §5.1).
pub mod close_code {
    /// Normal closure.
    pub const NORMAL: u16 = 1000;
    /// The endpoint is going away (server shutdown); also what LiteCore reports when the
    /// peer closed a connection the client did not close itself.
    pub const GOING_AWAY: u16 = 1001;
    /// Protocol error, including an unusable subprotocol.
    pub const PROTOCOL_ERROR: u16 = 1002;
    /// No status code was present in the peer's close frame (never sent on the wire).
    pub const NO_STATUS: u16 = 1005;
    /// The connection dropped without a close frame (never sent on the wire; transient).
    pub const ABNORMAL: u16 = 1006;
    /// Policy violation.
    pub const POLICY_VIOLATION: u16 = 1008;
    /// A message was too big.
    pub const MESSAGE_TOO_BIG: u16 = 1009;
    /// An unexpected condition (LiteCore: BLIP parsing failed).
    pub const UNEXPECTED_CONDITION: u16 = 1011;
    /// Application-defined transient failure: the peer should retry (transient).
    pub const APP_TRANSIENT: u16 = 4001;
    /// Application-defined permanent failure: the peer should stop.
    pub const APP_PERMANENT: u16 = 4002;
}

/// Which TLS check failed, mapped to a Network-domain code by [`TransportError::code`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum TlsFailure {
    /// The handshake failed for a reason other than the certificate (Network 6).
    HandshakeFailed,
    /// The certificate has expired or is not valid yet (Network 7).
    CertExpired,
    /// The certificate is not trusted: pinned-certificate mismatch, not self-signed in
    /// self-signed-only mode, bad signature (Network 8).
    CertUntrusted,
    /// The server asked for a client certificate (Network 9).
    ClientCertRequired,
    /// The server rejected the client certificate (Network 10).
    ClientCertRejected,
    /// The certificate does not chain to a trusted root (Network 11).
    UnknownRoot,
    /// The certificate was revoked (Network 14).
    CertRevoked,
    /// The certificate is not valid for the host name (Network 15).
    NameMismatch,
}

impl TlsFailure {
    fn code(self) -> i32 {
        match self {
            TlsFailure::HandshakeFailed => network_code::TLS_HANDSHAKE_FAILED,
            TlsFailure::CertExpired => network_code::TLS_CERT_EXPIRED,
            TlsFailure::CertUntrusted => network_code::TLS_CERT_UNTRUSTED,
            TlsFailure::ClientCertRequired => network_code::TLS_CLIENT_CERT_REQUIRED,
            TlsFailure::ClientCertRejected => network_code::TLS_CLIENT_CERT_REJECTED,
            TlsFailure::UnknownRoot => network_code::TLS_CERT_UNKNOWN_ROOT,
            TlsFailure::CertRevoked => network_code::TLS_CERT_REVOKED,
            TlsFailure::NameMismatch => network_code::TLS_CERT_NAME_MISMATCH,
        }
    }
}

/// Everything that can go wrong while opening or using a connection.
///
/// Use [`domain`](Self::domain) and [`code`](Self::code) for a Couchbase-Lite-style error
/// code, [`is_transient`](Self::is_transient) to decide on a retry.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TransportError {
    /// The endpoint URL cannot be used (Network 4).
    #[error("invalid endpoint URL {url:?}: {reason}")]
    InvalidUrl {
        /// The URL as given.
        url: String,
        /// What is wrong with it.
        reason: String,
    },
    /// A configuration value is unusable: a header that is not valid HTTP, a certificate
    /// or key that does not parse, a reserved close code (POSIX `EINVAL`).
    #[error("invalid configuration: {0}")]
    InvalidConfig(String),
    /// The host name could not be resolved: Network 1 (DNS failure, transient) when the
    /// resolver said "try again", else Network 2 (unknown host, network-dependent).
    #[error("cannot resolve host {host:?}: {message}")]
    Dns {
        /// The host name.
        host: String,
        /// The resolver reported a temporary failure.
        temporary: bool,
        /// The resolver's message.
        message: String,
    },
    /// A socket operation failed; the domain is POSIX with the OS error number.
    #[error("{context}: {source}")]
    Io {
        /// What was being done.
        context: &'static str,
        /// The OS error.
        #[source]
        source: io::Error,
    },
    /// The connect timeout expired, or the peer stopped answering heartbeat pings
    /// (Network 3, transient).
    #[error("timed out: {0}")]
    Timeout(String),
    /// TLS failed (Network 6–15, never transient).
    #[error("TLS failure ({kind:?}): {message}")]
    Tls {
        /// Which check failed.
        kind: TlsFailure,
        /// Details.
        message: String,
    },
    /// The server answered the upgrade request with an HTTP error status. The domain is
    /// WebSocket and the code the status (401, 403, 404, 5xx…); `reason` is the `reason`
    /// member of Sync Gateway's JSON body when there is one.
    #[error("HTTP {status}: {reason}")]
    HttpStatus {
        /// The HTTP status.
        status: u16,
        /// The server's reason.
        reason: String,
    },
    /// The server's 101 response named no subprotocol: LiteCore's "Incompatible
    /// replication protocol", WebSocket 1002, not transient.
    #[error(
        "incompatible replication protocol: the server accepted none of the offered subprotocols"
    )]
    NoSubprotocol,
    /// The server chose a subprotocol that was not offered: LiteCore's "Server did not
    /// accept protocol", WebSocket 403, not transient.
    #[error("server did not accept protocol: it chose a subprotocol that was not offered")]
    UnexpectedSubprotocol,
    /// The peer violated the WebSocket or framing protocol (WebSocket 1002).
    #[error("protocol error: {0}")]
    Protocol(String),
    /// A message exceeded the configured maximum size (WebSocket 1009).
    #[error("message of {size} bytes exceeds the limit of {max} bytes")]
    MessageTooBig {
        /// The message size.
        size: usize,
        /// The limit.
        max: usize,
    },
    /// The connection is closed. `code` is the WebSocket close code: the peer's or our own
    /// after a close handshake, [`close_code::ABNORMAL`] (1006, transient) when the
    /// connection dropped without one.
    #[error("connection closed ({code}): {reason}")]
    Closed {
        /// The close code.
        code: u16,
        /// The close reason.
        reason: String,
    },
}

impl TransportError {
    /// The Couchbase Lite error domain.
    pub fn domain(&self) -> ErrorDomain {
        match self {
            TransportError::InvalidConfig(_) | TransportError::Io { .. } => ErrorDomain::Posix,
            TransportError::InvalidUrl { .. }
            | TransportError::Dns { .. }
            | TransportError::Timeout(_)
            | TransportError::Tls { .. } => ErrorDomain::Network,
            TransportError::HttpStatus { .. }
            | TransportError::NoSubprotocol
            | TransportError::UnexpectedSubprotocol
            | TransportError::Protocol(_)
            | TransportError::MessageTooBig { .. }
            | TransportError::Closed { .. } => ErrorDomain::WebSocket,
        }
    }

    /// The code within [`domain`](Self::domain): an errno, a [`network_code`], an HTTP
    /// status or a [`close_code`].
    pub fn code(&self) -> i32 {
        match self {
            TransportError::InvalidConfig(_) => errno::EINVAL,
            TransportError::Io { source, .. } => posix_code(source),
            TransportError::InvalidUrl { .. } => network_code::INVALID_URL,
            TransportError::Dns { temporary, .. } => {
                if *temporary {
                    network_code::DNS_FAILURE
                } else {
                    network_code::UNKNOWN_HOST
                }
            }
            TransportError::Timeout(_) => network_code::TIMEOUT,
            TransportError::Tls { kind, .. } => kind.code(),
            TransportError::HttpStatus { status, .. } => i32::from(*status),
            TransportError::UnexpectedSubprotocol => 403,
            TransportError::NoSubprotocol | TransportError::Protocol(_) => {
                i32::from(close_code::PROTOCOL_ERROR)
            }
            TransportError::MessageTooBig { .. } => i32::from(close_code::MESSAGE_TOO_BIG),
            TransportError::Closed { code, .. } => i32::from(*code),
        }
    }

    /// The code as the Couchbase Lite platform SDKs number it (`CBLErrors.h`): Network
    /// codes as `5000 + n`, HTTP statuses and close codes as `10000 + n`, POSIX errno
    /// values unchanged.
    pub fn platform_code(&self) -> i32 {
        match self.domain() {
            ErrorDomain::Posix => self.code(),
            ErrorDomain::Network => 5000 + self.code(),
            ErrorDomain::WebSocket => 10000 + self.code(),
        }
    }

    /// Whether retrying later may succeed (LiteCore `mayBeTransient`): connection refused
    /// or reset, DNS "try again", timeouts (including a dead heartbeat), HTTP 408, 429,
    /// 502, 503, 504, close codes 1006 and 4001. HTTP 500, 401, 403, 404, TLS failures and
    /// close codes 1001, 1002, 1011, 4002 are not transient.
    pub fn is_transient(&self) -> bool {
        is_transient_code(self.domain(), self.code())
    }

    /// Whether the error may go away when the network changes (LiteCore
    /// `mayBeNetworkDependent`): unknown host, network down or unreachable, host
    /// unreachable, not connected, broken pipe, timeouts. A continuous replicator retries
    /// these when the network comes back.
    pub fn is_network_dependent(&self) -> bool {
        is_network_dependent_code(self.domain(), self.code())
    }

    /// The WebSocket close code that describes this error, when it has one: the close
    /// code of a [`Closed`](Self::Closed) error, 1002 for protocol errors, 1009 for an
    /// oversized message.
    pub fn close_code(&self) -> Option<u16> {
        match self {
            TransportError::Closed { code, .. } => Some(*code),
            TransportError::Protocol(_) | TransportError::NoSubprotocol => {
                Some(close_code::PROTOCOL_ERROR)
            }
            TransportError::MessageTooBig { .. } => Some(close_code::MESSAGE_TOO_BIG),
            _ => None,
        }
    }

    pub(crate) fn io(context: &'static str, source: io::Error) -> Self {
        TransportError::Io { context, source }
    }

    pub(crate) fn abnormal(reason: impl Into<String>) -> Self {
        TransportError::Closed {
            code: close_code::ABNORMAL,
            reason: reason.into(),
        }
    }
}

/// LiteCore's `mayBeTransient` for a `(domain, code)` pair, for errors that reach the
/// replicator by other routes (for example a BLIP error `HTTP 503`, which is WebSocket 503).
pub fn is_transient_code(domain: ErrorDomain, code: i32) -> bool {
    match domain {
        ErrorDomain::Posix => [
            errno::ENETRESET,
            errno::ECONNABORTED,
            errno::ECONNRESET,
            errno::ETIMEDOUT,
            errno::ECONNREFUSED,
        ]
        .contains(&code),
        ErrorDomain::Network => [
            network_code::DNS_FAILURE,
            network_code::TIMEOUT,
            network_code::NETWORK_RESET,
            network_code::CONNECTION_ABORTED,
            network_code::CONNECTION_RESET,
            network_code::CONNECTION_REFUSED,
        ]
        .contains(&code),
        ErrorDomain::WebSocket => [
            408,
            429,
            502,
            503,
            504,
            i32::from(close_code::ABNORMAL),
            i32::from(close_code::APP_TRANSIENT),
        ]
        .contains(&code),
    }
}

/// LiteCore's `mayBeNetworkDependent` for a `(domain, code)` pair.
pub fn is_network_dependent_code(domain: ErrorDomain, code: i32) -> bool {
    match domain {
        ErrorDomain::Posix => [
            errno::ENETDOWN,
            errno::ENETUNREACH,
            errno::ENOTCONN,
            errno::ETIMEDOUT,
            errno::EHOSTDOWN,
            errno::EHOSTUNREACH,
            errno::EADDRNOTAVAIL,
            errno::EPIPE,
        ]
        .contains(&code),
        ErrorDomain::Network => [
            network_code::DNS_FAILURE,
            network_code::UNKNOWN_HOST,
            network_code::TIMEOUT,
            network_code::NETWORK_DOWN,
            network_code::NETWORK_UNREACHABLE,
            network_code::NOT_CONNECTED,
            network_code::HOST_DOWN,
            network_code::HOST_UNREACHABLE,
            network_code::ADDRESS_NOT_AVAILABLE,
            network_code::BROKEN_PIPE,
            network_code::UNKNOWN_INTERFACE,
        ]
        .contains(&code),
        ErrorDomain::WebSocket => false,
    }
}

/// The POSIX errno of an I/O error: the OS error number when the OS reported one, else
/// derived from the error kind.
fn posix_code(err: &io::Error) -> i32 {
    #[cfg(unix)]
    if let Some(code) = err.raw_os_error() {
        return code;
    }
    match err.kind() {
        io::ErrorKind::ConnectionRefused => errno::ECONNREFUSED,
        io::ErrorKind::ConnectionReset => errno::ECONNRESET,
        io::ErrorKind::ConnectionAborted => errno::ECONNABORTED,
        io::ErrorKind::NotConnected => errno::ENOTCONN,
        io::ErrorKind::AddrNotAvailable => errno::EADDRNOTAVAIL,
        io::ErrorKind::BrokenPipe => errno::EPIPE,
        io::ErrorKind::TimedOut => errno::ETIMEDOUT,
        io::ErrorKind::NetworkDown => errno::ENETDOWN,
        io::ErrorKind::NetworkUnreachable => errno::ENETUNREACH,
        io::ErrorKind::HostUnreachable => errno::EHOSTUNREACH,
        // A stream that ended in the middle of something: the peer went away.
        io::ErrorKind::UnexpectedEof => errno::ECONNRESET,
        _ => errno::EIO,
    }
}

/// errno values of this platform (libc on Unix, Linux numbering elsewhere).
#[cfg(unix)]
mod errno {
    pub(crate) use libc::{
        EADDRNOTAVAIL, ECONNABORTED, ECONNREFUSED, ECONNRESET, EHOSTDOWN, EHOSTUNREACH, EINVAL,
        EIO, ENETDOWN, ENETRESET, ENETUNREACH, ENOTCONN, EPIPE, ETIMEDOUT,
    };
}

/// errno values with Linux numbering, for platforms without POSIX errno.
#[cfg(not(unix))]
mod errno {
    pub(crate) const EIO: i32 = 5;
    pub(crate) const EINVAL: i32 = 22;
    pub(crate) const EPIPE: i32 = 32;
    pub(crate) const EADDRNOTAVAIL: i32 = 99;
    pub(crate) const ENETDOWN: i32 = 100;
    pub(crate) const ENETUNREACH: i32 = 101;
    pub(crate) const ENETRESET: i32 = 102;
    pub(crate) const ECONNABORTED: i32 = 103;
    pub(crate) const ECONNRESET: i32 = 104;
    pub(crate) const ENOTCONN: i32 = 107;
    pub(crate) const ETIMEDOUT: i32 = 110;
    pub(crate) const ECONNREFUSED: i32 = 111;
    pub(crate) const EHOSTDOWN: i32 = 112;
    pub(crate) const EHOSTUNREACH: i32 = 113;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn http_statuses_follow_litecore() {
        let status = |status| TransportError::HttpStatus {
            status,
            reason: String::new(),
        };
        for s in [408, 429, 502, 503, 504] {
            assert!(status(s).is_transient(), "{s}");
        }
        for s in [400, 401, 403, 404, 409, 500] {
            assert!(!status(s).is_transient(), "{s}");
        }
        assert_eq!(status(401).domain(), ErrorDomain::WebSocket);
        assert_eq!(status(401).platform_code(), 10401);
    }

    #[test]
    fn close_codes_follow_litecore() {
        let closed = |code| TransportError::Closed {
            code,
            reason: String::new(),
        };
        assert!(closed(1006).is_transient());
        assert!(closed(4001).is_transient());
        for c in [1000, 1001, 1002, 1009, 1011, 4002] {
            assert!(!closed(c).is_transient(), "{c}");
        }
        assert_eq!(closed(1001).platform_code(), 11001);
    }

    #[test]
    fn network_codes() {
        let dns = |temporary| TransportError::Dns {
            host: "h".into(),
            temporary,
            message: String::new(),
        };
        assert!(dns(true).is_transient());
        assert_eq!(dns(true).code(), 1);
        assert_eq!(dns(true).platform_code(), 5001);
        assert!(!dns(false).is_transient());
        assert!(dns(false).is_network_dependent());
        let timeout = TransportError::Timeout("x".into());
        assert!(timeout.is_transient() && timeout.is_network_dependent());
        let tls = TransportError::Tls {
            kind: TlsFailure::CertUntrusted,
            message: String::new(),
        };
        assert_eq!(tls.code(), 8);
        assert!(!tls.is_transient());
    }

    #[test]
    fn io_errors_map_to_posix() {
        let refused = TransportError::io("connect", io::ErrorKind::ConnectionRefused.into());
        assert_eq!(refused.domain(), ErrorDomain::Posix);
        assert_eq!(refused.code(), errno::ECONNREFUSED);
        assert!(refused.is_transient());
        let raw = TransportError::io("connect", io::Error::from_raw_os_error(errno::ECONNRESET));
        assert!(raw.is_transient());
        let unreachable = TransportError::io("connect", io::ErrorKind::HostUnreachable.into());
        assert!(!unreachable.is_transient());
        assert!(unreachable.is_network_dependent());
    }

    #[test]
    fn subprotocol_codes() {
        let missing = TransportError::NoSubprotocol;
        assert_eq!(missing.code(), 1002);
        let wrong = TransportError::UnexpectedSubprotocol;
        assert_eq!(wrong.code(), 403);
        assert!(!missing.is_transient() && !wrong.is_transient());
    }
}
