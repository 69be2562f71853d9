//! The facade's error: a domain and a code in the style of Couchbase Lite, plus a message.

use std::fmt;

use ferrolite_document::DocumentError;
use ferrolite_replicator::ReplicatorError;
use ferrolite_storage::StorageError;
use ferrolite_transport::TransportError;

/// Result of the public API.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Where an error code comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ErrorDomain {
    /// ferrolite's own codes, numbered as Couchbase Lite's (see [`ErrorCode`]).
    Ferrolite,
    /// POSIX `errno` values.
    Posix,
    /// Network errors, numbered as Couchbase Lite's network domain (1 = DNS failure, …).
    Network,
    /// HTTP statuses and WebSocket close codes from a remote peer.
    WebSocket,
}

/// Error codes of the [`ErrorDomain::Ferrolite`] domain, numbered as Couchbase Lite's.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
#[repr(i32)]
pub enum ErrorCode {
    /// A revision ID that cannot be parsed.
    BadRevisionId = 4,
    /// A document body that is not valid (not an object, reserved key, bad blob).
    CorruptRevisionData = 5,
    /// The database was closed.
    NotOpen = 6,
    /// No such document, revision or blob.
    NotFound = 7,
    /// The change conflicts with the stored document.
    Conflict = 8,
    /// An argument that is not acceptable.
    InvalidParameter = 9,
    /// Something that should not happen happened.
    UnexpectedError = 10,
    /// The database file or directory cannot be opened.
    CantOpenFile = 11,
    /// An I/O failure.
    IoError = 12,
    /// Stored data that cannot be decoded.
    CorruptData = 15,
    /// The object is busy: a replicator that is already running.
    Busy = 16,
    /// The file is not a ferrolite database.
    NotADatabaseFile = 20,
    /// The remote peer sent something that cannot be understood, or an error outside the
    /// HTTP domain.
    RemoteError = 26,
    /// A document ID that is not acceptable.
    BadDocId = 29,
    /// A [`sync_once`](crate::sync_once) ran out of time (ferrolite's own code).
    DeadlineExceeded = 1001,
}

/// An error of the public API: a domain, a code and a human-readable message.
#[derive(Debug)]
pub struct Error {
    domain: ErrorDomain,
    code: i32,
    message: String,
    source: Option<Box<dyn std::error::Error + Send + Sync>>,
}

impl Error {
    /// An error of the [`ErrorDomain::Ferrolite`] domain.
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Error {
        Error {
            domain: ErrorDomain::Ferrolite,
            code: code as i32,
            message: message.into(),
            source: None,
        }
    }

    /// An error of any domain with a raw code.
    pub fn with_domain(domain: ErrorDomain, code: i32, message: impl Into<String>) -> Error {
        Error {
            domain,
            code,
            message: message.into(),
            source: None,
        }
    }

    pub(crate) fn caused_by(
        mut self,
        source: impl std::error::Error + Send + Sync + 'static,
    ) -> Error {
        self.source = Some(Box::new(source));
        self
    }

    /// The domain of [`Error::code`].
    pub fn domain(&self) -> ErrorDomain {
        self.domain
    }

    /// The numeric code within the domain.
    pub fn code(&self) -> i32 {
        self.code
    }

    /// Whether this is the given code of the [`ErrorDomain::Ferrolite`] domain.
    pub fn is(&self, code: ErrorCode) -> bool {
        self.domain == ErrorDomain::Ferrolite && self.code == code as i32
    }

    /// The message.
    pub fn message(&self) -> &str {
        &self.message
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} ({:?} error {})",
            self.message, self.domain, self.code
        )
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.source
            .as_deref()
            .map(|e| e as &(dyn std::error::Error + 'static))
    }
}

impl From<DocumentError> for Error {
    fn from(err: DocumentError) -> Error {
        let code = match &err {
            DocumentError::InvalidRevId(_) => ErrorCode::BadRevisionId,
            DocumentError::InvalidDocId { .. } => ErrorCode::BadDocId,
            DocumentError::Conflict => ErrorCode::Conflict,
            DocumentError::RevisionNotFound(_) => ErrorCode::NotFound,
            DocumentError::CorruptTree(_) => ErrorCode::CorruptData,
            DocumentError::InvalidDigest(_) => ErrorCode::InvalidParameter,
            _ => ErrorCode::CorruptRevisionData,
        };
        Error::new(code, err.to_string()).caused_by(err)
    }
}

impl From<StorageError> for Error {
    fn from(err: StorageError) -> Error {
        match err {
            StorageError::Document(doc) => doc.into(),
            StorageError::Io(io) => {
                let message = io.to_string();
                match io.raw_os_error() {
                    Some(errno) => Error::with_domain(ErrorDomain::Posix, errno, message),
                    None => Error::new(ErrorCode::IoError, message),
                }
                .caused_by(io)
            }
            other => {
                let code = match &other {
                    StorageError::NotADatabase { .. } => ErrorCode::NotADatabaseFile,
                    StorageError::Corrupt(_) => ErrorCode::CorruptData,
                    StorageError::DigestMismatch { .. } => ErrorCode::CorruptData,
                    StorageError::InvalidRecord { .. } => ErrorCode::UnexpectedError,
                    _ => ErrorCode::IoError,
                };
                Error::new(code, other.to_string()).caused_by(other)
            }
        }
    }
}

impl From<ReplicatorError> for Error {
    /// Keeps the replicator's domain and code: `POSIX`, `Network` and `WebSocket` errors
    /// (a refused login is WebSocket 401) map to those domains, the rest to
    /// [`ErrorDomain::Ferrolite`] with LiteCore's numbering.
    fn from(err: ReplicatorError) -> Error {
        let (domain, code) = err.domain_and_code();
        use ferrolite_replicator::domain as d;
        let domain = match domain {
            d::POSIX => ErrorDomain::Posix,
            d::NETWORK => ErrorDomain::Network,
            d::WEBSOCKET => ErrorDomain::WebSocket,
            _ => ErrorDomain::Ferrolite,
        };
        Error::with_domain(domain, code, err.to_string()).caused_by(err)
    }
}

impl From<TransportError> for Error {
    fn from(err: TransportError) -> Error {
        use ferrolite_transport::ErrorDomain as D;
        let domain = match err.domain() {
            D::Posix => ErrorDomain::Posix,
            D::Network => ErrorDomain::Network,
            _ => ErrorDomain::WebSocket,
        };
        Error::with_domain(domain, err.code(), err.to_string()).caused_by(err)
    }
}
