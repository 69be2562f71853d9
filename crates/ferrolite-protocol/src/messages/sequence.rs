//! Sequences as the replication protocol carries them: opaque JSON numbers or strings.

use std::fmt;

use serde_json::Value;

use super::props::bad_body;
use super::MessageError;

/// A sequence of the peer that sent it, opaque to the receiver: a JSON number (LiteCore and
/// plain Sync Gateway sequences, `42`) or a JSON string (Sync Gateway compound sequences,
/// `"3151:5"`, `"12::30"`).
///
/// Equality is JSON equality, so the `sequence` of a `rev` matches the first element of the
/// `changes` row it answers however each was written on the wire.
#[derive(Clone, PartialEq, Eq)]
pub struct Sequence(Value);

impl Sequence {
    /// A JSON value taken as a sequence: a number or a string, anything else is refused.
    pub fn from_json(value: Value) -> Result<Sequence, MessageError> {
        match value {
            Value::Number(_) | Value::String(_) => Ok(Sequence(value)),
            other => Err(bad_body(format!(
                "a sequence must be a JSON number or string, got {other}"
            ))),
        }
    }

    /// Reads a `since` or `sequence` property. Its value is JSON text (`42`, `"3151:5"` with
    /// the quotes), as LiteCore and Sync Gateway write it in `subChanges` and `rev`; text that
    /// is not a JSON number or string (Sync Gateway's `norev` writes `3151:5` without quotes)
    /// is taken verbatim as a string sequence. Never fails: the sequence is opaque.
    pub fn from_property(text: &str) -> Sequence {
        match serde_json::from_str::<Value>(text) {
            Ok(value @ (Value::Number(_) | Value::String(_))) => Sequence(value),
            _ => Sequence(Value::String(text.to_owned())),
        }
    }

    /// The JSON value.
    pub fn as_json(&self) -> &Value {
        &self.0
    }

    /// The JSON value, by value.
    pub fn into_json(self) -> Value {
        self.0
    }

    /// The sequence as an unsigned integer, if it is one.
    pub fn as_u64(&self) -> Option<u64> {
        self.0.as_u64()
    }

    /// The sequence as a string, if it is a JSON string.
    pub fn as_str(&self) -> Option<&str> {
        self.0.as_str()
    }

    /// The JSON text written in properties (`42`, `"3151:5"`).
    pub fn to_property(&self) -> String {
        self.0.to_string()
    }
}

impl From<u64> for Sequence {
    fn from(n: u64) -> Sequence {
        Sequence(Value::from(n))
    }
}

impl From<&str> for Sequence {
    fn from(s: &str) -> Sequence {
        Sequence(Value::String(s.to_owned()))
    }
}

impl From<String> for Sequence {
    fn from(s: String) -> Sequence {
        Sequence(Value::String(s))
    }
}

impl fmt::Display for Sequence {
    /// The JSON text, as [`Sequence::to_property`].
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

impl fmt::Debug for Sequence {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Sequence({})", self.0)
    }
}
