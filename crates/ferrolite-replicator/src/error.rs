//! [`ReplicatorError`]: everything that can stop or disturb a replication.

use std::sync::Arc;

use ferrolite_protocol::blip::BlipError;
use ferrolite_protocol::messages::MessageError;
use ferrolite_storage::StorageError;
use ferrolite_transport::TransportError;
use ferrolite_transport::{is_network_dependent_code, is_transient_code, ErrorDomain};

/// Codes of the `ferrolite` error domain ([`ReplicatorError::domain_and_code`]). Where
/// LiteCore has an equivalent (`C4ErrorCode`), the number is LiteCore's.
pub mod code {
    /// A document conflict (LiteCore `kC4ErrorConflict`).
    pub const CONFLICT: i32 = 8;
    /// A configuration or argument that cannot be used (LiteCore `kC4ErrorInvalidParameter`).
    pub const INVALID_PARAMETER: i32 = 9;
    /// An I/O or storage-engine failure (LiteCore `kC4ErrorIOError`).
    pub const IO_ERROR: i32 = 12;
    /// Stored data that cannot be decoded (LiteCore `kC4ErrorCorruptData`).
    pub const CORRUPT_DATA: i32 = 15;
    /// The replicator is already running (LiteCore `kC4ErrorBusy`).
    pub const BUSY: i32 = 16;
    /// The peer sent something this side cannot understand, or answered with an error
    /// outside the HTTP domain (LiteCore `kC4ErrorRemoteError`).
    pub const REMOTE_ERROR: i32 = 26;
    /// [`Replicator::sync_once`](crate::Replicator::sync_once) reached its deadline
    /// (ferrolite's own code).
    pub const DEADLINE_EXCEEDED: i32 = 1001;
}

/// The domain names [`ReplicatorError::domain_and_code`] uses, as Couchbase Lite names them.
pub mod domain {
    /// Operating-system error numbers (socket errors).
    pub const POSIX: &str = "POSIX";
    /// LiteCore's network codes (DNS, timeouts, TLS).
    pub const NETWORK: &str = "Network";
    /// HTTP statuses (of a refused upgrade, or of an `HTTP` error reply from the peer) and
    /// WebSocket close codes — Couchbase Lite's `WebSocket` domain holds both.
    pub const WEBSOCKET: &str = "WebSocket";
    /// ferrolite's own codes ([`code`](super::code)).
    pub const FERROLITE: &str = "ferrolite";
}

/// An error of the replicator.
///
/// It is `Clone` (statuses carrying it are handed to every listener): non-`Clone` sources
/// are kept behind an `Arc`. [`domain_and_code`](Self::domain_and_code) gives the
/// Couchbase-Lite-style classification and [`is_transient`](Self::is_transient) decides
/// retries, as LiteCore's `mayBeTransient` does (replicator-behaviour.md §4).
#[derive(Clone, Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ReplicatorError {
    /// Opening or using the connection failed (refused, reset, TLS, HTTP status of the
    /// upgrade, the peer's close code…).
    #[error("transport error: {0}")]
    Transport(Arc<TransportError>),
    /// The peer answered a request with an error reply: `Error-Domain` (`HTTP` from Sync
    /// Gateway and LiteCore for most errors, `BLIP` for an unknown profile), `Error-Code`
    /// and the reply's body.
    #[error("remote error {domain} {code}: {message}")]
    Remote {
        /// `Error-Domain` as received.
        domain: String,
        /// `Error-Code` as received.
        code: i32,
        /// The error's body, as text.
        message: String,
    },
    /// The peer broke the protocol: a BLIP framing error (the connection was closed with
    /// `close_code`), or a message that cannot be understood.
    #[error("protocol error: {message}")]
    Protocol {
        /// What went wrong.
        message: String,
        /// The WebSocket close code the connection was closed with, if it was.
        close_code: Option<u16>,
    },
    /// The local database failed.
    #[error("storage error: {0}")]
    Storage(Arc<StorageError>),
    /// A document conflict (LiteCore code 8): the peer refused a pushed revision as a
    /// conflict (`proposeChanges` status 409 or a `rev` answered `HTTP 409`), or a pulled
    /// revision conflicts with the local one (it is then resolved automatically, and the
    /// resolved revision pushed).
    #[error("document {doc_id:?}: revision {rev} conflicts with the remote's")]
    Conflict {
        /// The document.
        doc_id: String,
        /// The revision that was refused (push) or received (pull).
        rev: String,
    },
    /// The pull filter refused a received revision (Couchbase Lite's WebSocket 403,
    /// `rejected by validation function`): it was not saved.
    #[error("document {doc_id:?}: revision {rev} {message}")]
    Rejected {
        /// The document.
        doc_id: String,
        /// The refused revision.
        rev: String,
        /// Why (`rejected by validation function`).
        message: String,
    },
    /// The configuration or the calling context cannot be used (no tokio runtime, …).
    #[error("invalid configuration: {0}")]
    Config(String),
    /// The replicator is already running: [`Replicator::sync_once`](crate::Replicator::sync_once)
    /// needs it stopped.
    #[error("the replicator is already running")]
    AlreadyRunning,
    /// [`Replicator::sync_once`](crate::Replicator::sync_once) reached its deadline before
    /// the replication finished.
    #[error("the deadline passed before replication finished")]
    DeadlineExceeded,
}

impl ReplicatorError {
    /// The error's domain and code in Couchbase Lite's style: `("POSIX", errno)`,
    /// `("Network", n)` and `("WebSocket", status or close code)` for transport errors;
    /// `("WebSocket", status)` for a peer's `HTTP` error reply (LiteCore maps `HTTP n` to
    /// WebSocket n) and `("WebSocket", 403)` for a revision the pull filter refused;
    /// `("WebSocket", close code)` for a BLIP framing error;
    /// `("ferrolite", n)` with a [`code`] for the rest (`REMOTE_ERROR` for other remote
    /// domains and unreadable messages, `IO_ERROR`/`CORRUPT_DATA` for storage,
    /// `CONFLICT`, `INVALID_PARAMETER`, `BUSY`, `DEADLINE_EXCEEDED`).
    pub fn domain_and_code(&self) -> (&str, i32) {
        match self {
            ReplicatorError::Transport(err) => {
                let domain = match err.domain() {
                    ErrorDomain::Posix => domain::POSIX,
                    ErrorDomain::Network => domain::NETWORK,
                    _ => domain::WEBSOCKET,
                };
                (domain, err.code())
            }
            ReplicatorError::Remote {
                domain: remote,
                code: c,
                ..
            } => {
                if remote == "HTTP" {
                    (domain::WEBSOCKET, *c)
                } else {
                    (domain::FERROLITE, code::REMOTE_ERROR)
                }
            }
            ReplicatorError::Protocol {
                close_code: Some(close),
                ..
            } => (domain::WEBSOCKET, i32::from(*close)),
            ReplicatorError::Protocol { .. } => (domain::FERROLITE, code::REMOTE_ERROR),
            ReplicatorError::Storage(err) => match err.as_ref() {
                StorageError::Corrupt(_) | StorageError::NotADatabase { .. } => {
                    (domain::FERROLITE, code::CORRUPT_DATA)
                }
                _ => (domain::FERROLITE, code::IO_ERROR),
            },
            ReplicatorError::Conflict { .. } => (domain::FERROLITE, code::CONFLICT),
            ReplicatorError::Rejected { .. } => (domain::WEBSOCKET, 403),
            ReplicatorError::Config(_) => (domain::FERROLITE, code::INVALID_PARAMETER),
            ReplicatorError::AlreadyRunning => (domain::FERROLITE, code::BUSY),
            ReplicatorError::DeadlineExceeded => (domain::FERROLITE, code::DEADLINE_EXCEEDED),
        }
    }

    /// Whether retrying later may succeed (LiteCore `mayBeTransient`): transient transport
    /// errors (refused, reset, timeouts, close 1006/4001, HTTP 408/429/502/503/504) and
    /// remote `HTTP` errors with those statuses. Never for HTTP 500.
    pub fn is_transient(&self) -> bool {
        match self {
            ReplicatorError::Transport(err) => err.is_transient(),
            ReplicatorError::Remote { domain, code, .. } => {
                domain == "HTTP" && is_transient_code(ErrorDomain::WebSocket, *code)
            }
            _ => false,
        }
    }

    /// Whether the error may go away when the network changes (LiteCore
    /// `mayBeNetworkDependent`): a continuous replicator retries these too.
    pub fn is_network_dependent(&self) -> bool {
        match self {
            ReplicatorError::Transport(err) => err.is_network_dependent(),
            ReplicatorError::Remote { domain, code, .. } => {
                domain == "HTTP" && is_network_dependent_code(ErrorDomain::WebSocket, *code)
            }
            _ => false,
        }
    }

    /// The underlying transport error, if this is one.
    pub fn transport_error(&self) -> Option<&TransportError> {
        match self {
            ReplicatorError::Transport(err) => Some(err),
            _ => None,
        }
    }

    pub(crate) fn protocol(message: impl Into<String>) -> ReplicatorError {
        ReplicatorError::Protocol {
            message: message.into(),
            close_code: None,
        }
    }

    /// The connection is gone (our side's view when a reply can no longer come).
    pub(crate) fn connection_closed() -> ReplicatorError {
        ReplicatorError::Transport(Arc::new(TransportError::Closed {
            code: ferrolite_transport::close_code::ABNORMAL,
            reason: "the connection closed before the reply arrived".to_owned(),
        }))
    }
}

impl From<TransportError> for ReplicatorError {
    fn from(err: TransportError) -> Self {
        ReplicatorError::Transport(Arc::new(err))
    }
}

impl From<StorageError> for ReplicatorError {
    fn from(err: StorageError) -> Self {
        ReplicatorError::Storage(Arc::new(err))
    }
}

impl From<BlipError> for ReplicatorError {
    fn from(err: BlipError) -> Self {
        ReplicatorError::Protocol {
            close_code: Some(err.close_code()),
            message: err.to_string(),
        }
    }
}

impl From<MessageError> for ReplicatorError {
    fn from(err: MessageError) -> Self {
        match err {
            MessageError::ErrorReply {
                domain,
                code,
                message,
            } => ReplicatorError::Remote {
                domain,
                code,
                message,
            },
            other => ReplicatorError::protocol(other.to_string()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classification() {
        let remote = |domain: &str, code| ReplicatorError::Remote {
            domain: domain.into(),
            code,
            message: String::new(),
        };
        assert!(remote("HTTP", 503).is_transient());
        assert!(!remote("HTTP", 500).is_transient());
        assert_eq!(remote("HTTP", 403).domain_and_code(), ("WebSocket", 403));
        assert_eq!(remote("BLIP", 404).domain_and_code(), ("ferrolite", 26));
        let refused: ReplicatorError = TransportError::Io {
            context: "connect",
            source: std::io::ErrorKind::ConnectionRefused.into(),
        }
        .into();
        assert!(refused.is_transient());
        assert_eq!(refused.domain_and_code().0, "POSIX");
        let blip: ReplicatorError = BlipError::EmptyFrame.into();
        assert_eq!(blip.domain_and_code(), ("WebSocket", 1011));
        assert!(!blip.is_transient());
        assert_eq!(
            ReplicatorError::DeadlineExceeded.domain_and_code(),
            ("ferrolite", code::DEADLINE_EXCEEDED)
        );
        assert!(ReplicatorError::connection_closed().is_transient());
    }
}
