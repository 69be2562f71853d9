//! JSON delta (the Fleece JSONDelta format).

/// A delta that cannot be applied.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DeltaError {
    /// Placeholder until the codec lands.
    #[error("invalid delta: {0}")]
    Invalid(String),
}
