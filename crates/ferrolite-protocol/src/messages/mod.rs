//! Typed replication messages.

/// A replication message that cannot be understood.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum MessageError {
    /// Placeholder until the messages land.
    #[error("bad message: {0}")]
    Invalid(String),
}
