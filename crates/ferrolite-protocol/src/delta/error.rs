//! The error of applying a delta.

use serde_json::Value;

/// A delta that cannot be applied to the value it was given.
///
/// Every variant that concerns a place in the document carries `path`, a
/// [JSON Pointer](https://www.rfc-editor.org/rfc/rfc6901) to that place (`""` is the root,
/// `/addr/city` the key `city` of the object under `addr`, `/tags/2` an array item); the
/// messages print it, or "the root".
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DeltaError {
    /// The old body passed to [`apply_delta_to_body`](super::apply_delta_to_body) is not JSON.
    #[error("the old body is not valid JSON: {0}")]
    InvalidBody(#[source] serde_json::Error),
    /// The delta passed to [`apply_delta_to_body`](super::apply_delta_to_body) is not JSON.
    #[error("the delta is not valid JSON: {0}")]
    InvalidJson(#[source] serde_json::Error),
    /// The patched document could not be serialized back to JSON.
    #[error("the patched document cannot be serialized: {0}")]
    Serialize(#[source] serde_json::Error),
    /// Object deltas nest deeper than [`MAX_NESTING`](super::MAX_NESTING) levels.
    #[error("the delta nests deeper than {limit} levels at {}", display_path(.path))]
    TooDeep {
        /// Where the limit was reached.
        path: String,
        /// The limit, [`MAX_NESTING`](super::MAX_NESTING).
        limit: usize,
    },
    /// A non-empty `{…}` delta applied to a value that is neither an object nor an array.
    #[error("an object delta at {} applies to {found}, which is neither an object nor an array", display_path(.path))]
    NotAContainer {
        /// Where.
        path: String,
        /// What the old value is ("a string", "null", …).
        found: &'static str,
    },
    /// An array delta whose length is none of 0 (delete), 1 (replace), 2 (replace, JsonDiffPatch
    /// form) or 3 (`[x,0,0]` delete or `["<ops>",0,2]` string edit).
    #[error("an array delta at {} has {len} elements; a delta array has 0, 1, 2 or 3", display_path(.path))]
    BadArrayLength {
        /// Where.
        path: String,
        /// The array's length.
        len: usize,
    },
    /// A 3-element array delta that is neither `[x,0,0]` nor `["<ops>",0,2]`.
    #[error("a 3-element delta at {} must be [x,0,0] (deletion) or [\"<ops>\",0,2] (string edit), not {found}", display_path(.path))]
    UnknownMode {
        /// Where.
        path: String,
        /// The delta, as JSON (shortened when long).
        found: String,
    },
    /// A delta for a key absent from the old object that does not insert a value: only a scalar
    /// or `[value]` can create a key.
    #[error("the key at {} is absent from the old object, so its delta must be a scalar or [value] to insert it, not {form}", display_path(.path))]
    InvalidInsertion {
        /// Where.
        path: String,
        /// The kind of delta found ("a deletion", "a string edit", …).
        form: &'static str,
    },
    /// A deletion (`[]` or `[x,0,0]`) where nothing can be deleted: at the root or on an array
    /// item (items are removed by an `"n-"` tail key).
    #[error("a deletion at {} is not allowed: {reason}", display_path(.path))]
    InvalidDeletion {
        /// Where.
        path: String,
        /// Why not.
        reason: &'static str,
    },
    /// A key of an array delta that is neither a decimal index below the array's length nor an
    /// `"n-"` tail key with `n` at most the length.
    #[error("key {key:?} of the array delta at {} is not valid for an array of {len} items: {reason}", display_path(.path))]
    InvalidArrayKey {
        /// The array's place.
        path: String,
        /// The offending key.
        key: String,
        /// The old array's length.
        len: usize,
        /// Why the key is invalid.
        reason: &'static str,
    },
    /// The value of an `"n-"` tail key is not an array.
    #[error("the tail {key:?} of the array delta at {} must be an array of items, not {found}", display_path(.path))]
    TailNotArray {
        /// The array's place.
        path: String,
        /// The tail key.
        key: String,
        /// What the value is.
        found: &'static str,
    },
    /// A string edit `["<ops>",0,2]` applied to something that is not a string.
    #[error("a string edit at {} applies to {found}, not to a string", display_path(.path))]
    StringEditTarget {
        /// Where.
        path: String,
        /// What the old value is.
        found: &'static str,
    },
    /// Malformed string edit operations, or operations whose byte counts do not cover the old
    /// string exactly.
    #[error("invalid string edit at {}, at byte {offset} of its operations: {reason}", display_path(.path))]
    InvalidStringEdit {
        /// Where.
        path: String,
        /// Byte offset in the operations string where the problem was found.
        offset: usize,
        /// What is wrong.
        reason: String,
    },
    /// A string edit whose result is not valid UTF-8 (it split a multi-byte character).
    #[error("the string edit at {} produces invalid UTF-8 (it splits a multi-byte character at byte {at} of the result)", display_path(.path))]
    InvalidUtf8 {
        /// Where.
        path: String,
        /// Byte offset in the result where the invalid sequence starts.
        at: usize,
    },
}

/// Prints a JSON Pointer for messages: "the root" for the empty pointer, else quoted.
fn display_path(path: &str) -> String {
    if path.is_empty() {
        "the root".to_owned()
    } else {
        format!("\"{path}\"")
    }
}

/// Builds the JSON Pointer of a path made of delta keys.
pub(super) fn pointer(segments: &[&str]) -> String {
    let mut out = String::new();
    for segment in segments {
        out.push('/');
        for c in segment.chars() {
            match c {
                '~' => out.push_str("~0"),
                '/' => out.push_str("~1"),
                c => out.push(c),
            }
        }
    }
    out
}

/// Names the type of a value for messages, with an article.
pub(super) fn kind(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// JSON text of a value for messages, cut to a readable length on a character boundary.
pub(super) fn excerpt(value: &Value) -> String {
    const MAX: usize = 80;
    let text = value.to_string();
    if text.len() <= MAX {
        return text;
    }
    let mut end = MAX;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &text[..end])
}
