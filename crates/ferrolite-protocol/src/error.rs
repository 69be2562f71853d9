use thiserror::Error;

use crate::{blip::BlipError, delta::DeltaError, messages::MessageError};

/// Any error of the protocol crate.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum ProtocolError {
    /// A BLIP framing error: the connection must be closed.
    #[error(transparent)]
    Blip(#[from] BlipError),
    /// A replication message that cannot be understood.
    #[error(transparent)]
    Message(#[from] MessageError),
    /// A JSON delta that cannot be applied.
    #[error(transparent)]
    Delta(#[from] DeltaError),
}
