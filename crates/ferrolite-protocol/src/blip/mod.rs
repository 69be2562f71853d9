//! BLIP 3 framing.

mod message;

pub use message::{Message, MessageType, Properties};

/// A BLIP protocol violation; the connection must be closed with [`BlipError::close_code`].
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BlipError {
    /// Placeholder until the codec lands.
    #[error("protocol error: {0}")]
    Protocol(String),
}
