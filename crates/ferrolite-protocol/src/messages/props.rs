//! Property and body helpers shared by the message types.

use bytes::Bytes;
use ferrolite_document::RevId;
use serde_json::Value;

use super::{MessageError, Profile};
use crate::blip::{Message, MessageType};

/// Checks that `msg` is a request of `profile`.
pub(crate) fn check_request(msg: &Message, profile: Profile) -> Result<(), MessageError> {
    if msg.kind != MessageType::Request {
        return Err(MessageError::WrongType {
            expected: MessageType::Request,
            found: msg.kind,
        });
    }
    match msg.profile() {
        Some(name) if name == profile.as_str() => Ok(()),
        found => Err(MessageError::WrongProfile {
            expected: profile,
            found: found.map(str::to_owned),
        }),
    }
}

/// Checks that `msg` is a successful response; an error response becomes
/// [`MessageError::ErrorReply`].
pub(crate) fn check_response(msg: &Message) -> Result<(), MessageError> {
    match msg.kind {
        MessageType::Response => Ok(()),
        MessageType::Error => {
            let (domain, code) = msg.error().unwrap_or(("BLIP", 0));
            Err(MessageError::ErrorReply {
                domain: domain.to_owned(),
                code,
                message: String::from_utf8_lossy(&msg.body).into_owned(),
            })
        }
        found => Err(MessageError::WrongType {
            expected: MessageType::Response,
            found,
        }),
    }
}

/// A property's value; an empty value counts as absent.
pub(crate) fn optional<'a>(msg: &'a Message, name: &str) -> Option<&'a str> {
    msg.property(name).filter(|v| !v.is_empty())
}

/// A required property's value (absent or empty → [`MessageError::MissingProperty`]).
pub(crate) fn required<'a>(msg: &'a Message, name: &'static str) -> Result<&'a str, MessageError> {
    optional(msg, name).ok_or(MessageError::MissingProperty { name })
}

/// Decodes a boolean the way both LiteCore and Sync Gateway accept them.
pub(crate) fn parse_bool(value: &str) -> bool {
    let value = value.trim();
    if ["true", "yes", "t", "y"]
        .iter()
        .any(|t| value.eq_ignore_ascii_case(t))
    {
        return true;
    }
    value.parse::<i64>().is_ok_and(|n| n != 0)
}

/// A boolean property (absent = false).
pub(crate) fn flag(msg: &Message, name: &str) -> bool {
    msg.property(name).is_some_and(parse_bool)
}

/// A boolean property whose absence means something (absent = `None`).
pub(crate) fn optional_flag(msg: &Message, name: &str) -> Option<bool> {
    optional(msg, name).map(parse_bool)
}

/// Parses unsigned decimal digits strictly.
pub(crate) fn parse_decimal<T: std::str::FromStr>(
    name: &'static str,
    value: &str,
) -> Result<T, MessageError> {
    let bad = |reason: &str| MessageError::BadProperty {
        name,
        value: value.to_owned(),
        reason: reason.to_owned(),
    };
    if value.is_empty() || !value.bytes().all(|b| b.is_ascii_digit()) {
        return Err(bad("not an unsigned decimal number"));
    }
    value.parse().map_err(|_| bad("number out of range"))
}

/// An optional unsigned number property.
pub(crate) fn optional_number<T: std::str::FromStr>(
    msg: &Message,
    name: &'static str,
) -> Result<Option<T>, MessageError> {
    optional(msg, name)
        .map(|v| parse_decimal(name, v))
        .transpose()
}

/// The `collection` property.
pub(crate) fn collection(msg: &Message) -> Result<Option<u32>, MessageError> {
    optional_number(msg, "collection")
}

/// Parses a revision ID property.
pub(crate) fn parse_rev_id(name: &'static str, value: &str) -> Result<RevId, MessageError> {
    RevId::parse(value).map_err(|e| MessageError::BadProperty {
        name,
        value: value.to_owned(),
        reason: e.to_string(),
    })
}

/// A required revision ID property.
pub(crate) fn required_rev_id(msg: &Message, name: &'static str) -> Result<RevId, MessageError> {
    parse_rev_id(name, required(msg, name)?)
}

/// An optional revision ID property.
pub(crate) fn optional_rev_id(
    msg: &Message,
    name: &'static str,
) -> Result<Option<RevId>, MessageError> {
    optional(msg, name)
        .map(|v| parse_rev_id(name, v))
        .transpose()
}

/// Parses a JSON body.
pub(crate) fn json_body(body: &[u8]) -> Result<Value, MessageError> {
    serde_json::from_slice(body).map_err(|e| MessageError::BadBody {
        detail: format!("not JSON: {e}"),
    })
}

/// Checks that a body is a JSON object.
pub(crate) fn check_json_object(body: &[u8]) -> Result<(), MessageError> {
    match json_body(body)? {
        Value::Object(_) => Ok(()),
        _ => Err(bad_body("expected a JSON object")),
    }
}

/// A [`MessageError::BadBody`].
pub(crate) fn bad_body(detail: impl Into<String>) -> MessageError {
    MessageError::BadBody {
        detail: detail.into(),
    }
}

/// Sets `name` when `value` is present.
pub(crate) fn set_opt(msg: &mut Message, name: &str, value: Option<impl ToString>) {
    if let Some(value) = value {
        msg.properties.set(name, value.to_string());
    }
}

/// Sets `name` to `text` when `value` is true.
pub(crate) fn set_flag(msg: &mut Message, name: &str, value: bool, text: &str) {
    if value {
        msg.properties.set(name, text);
    }
}

/// The body bytes of a JSON text.
pub(crate) fn bytes_of(text: String) -> Bytes {
    Bytes::from(text.into_bytes())
}

/// The JSON text of a string (quoted and escaped).
pub(crate) fn json_string(s: &str) -> String {
    Value::String(s.to_owned()).to_string()
}

/// Reads a JSON value as an unsigned integer that fits `T`, for a body element.
pub(crate) fn json_uint<T: TryFrom<u64>>(value: &Value, what: &str) -> Result<T, MessageError> {
    value
        .as_u64()
        .and_then(|n| T::try_from(n).ok())
        .ok_or_else(|| bad_body(format!("{what}: expected an unsigned integer, got {value}")))
}

/// Reads a JSON value as a revision ID, for a body element.
pub(crate) fn json_rev_id(value: &Value, what: &str) -> Result<RevId, MessageError> {
    let text = value.as_str().ok_or_else(|| {
        bad_body(format!(
            "{what}: expected a revision ID string, got {value}"
        ))
    })?;
    RevId::parse(text).map_err(|e| bad_body(format!("{what}: {e}")))
}
