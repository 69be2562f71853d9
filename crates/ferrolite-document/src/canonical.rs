//! Canonical JSON, as Couchbase Lite hashes it: sorted keys, no whitespace, minimal escapes.

use std::io;

use serde::Serialize;
use serde_json::ser::{CharEscape, Formatter};
use serde_json::Value;

use crate::Properties;

/// Encodes `value` as canonical JSON: object keys sorted by their UTF-8 bytes, no whitespace,
/// `"` `\` CR LF TAB escaped by name, other control bytes and 0x7F as `\u00xx`, everything
/// else raw.
pub fn canonical_json(value: &Value) -> Vec<u8> {
    let mut out = Vec::with_capacity(256);
    // Writing into a Vec cannot fail.
    let _ = write_canonical_json(&mut out, value);
    out
}

/// Encodes document properties (a JSON object) as canonical JSON (see [`canonical_json`]).
pub fn canonical_json_of_properties(properties: &Properties) -> Vec<u8> {
    let mut out = Vec::with_capacity(256);
    let mut ser = serde_json::Serializer::with_formatter(&mut out, CanonicalFormatter);
    // Serializing a map of JSON values into a Vec cannot fail.
    let _ = properties.serialize(&mut ser);
    out
}

/// Writes the canonical JSON of `value` into `out` (see [`canonical_json`]).
pub fn write_canonical_json<W: io::Write>(out: W, value: &Value) -> io::Result<()> {
    // serde_json's `Map` (without `preserve_order`) is a BTreeMap, so keys come out sorted
    // byte-wise; only string escapes differ from the compact formatter.
    let mut ser = serde_json::Serializer::with_formatter(out, CanonicalFormatter);
    value.serialize(&mut ser).map_err(io::Error::other)
}

struct CanonicalFormatter;

impl Formatter for CanonicalFormatter {
    fn write_string_fragment<W: ?Sized + io::Write>(
        &mut self,
        writer: &mut W,
        fragment: &str,
    ) -> io::Result<()> {
        // serde_json never treats 0x7F as needing an escape; canonical JSON does.
        let mut start = 0;
        for (i, b) in fragment.bytes().enumerate() {
            if b == 0x7f {
                writer.write_all(&fragment.as_bytes()[start..i])?;
                writer.write_all(b"\\u007f")?;
                start = i + 1;
            }
        }
        writer.write_all(&fragment.as_bytes()[start..])
    }

    fn write_char_escape<W: ?Sized + io::Write>(
        &mut self,
        writer: &mut W,
        escape: CharEscape,
    ) -> io::Result<()> {
        let text: &[u8] = match escape {
            CharEscape::Quote => b"\\\"",
            CharEscape::ReverseSolidus => b"\\\\",
            CharEscape::LineFeed => b"\\n",
            CharEscape::CarriageReturn => b"\\r",
            CharEscape::Tab => b"\\t",
            CharEscape::Solidus => b"/",
            CharEscape::Backspace => b"\\u0008",
            CharEscape::FormFeed => b"\\u000c",
            CharEscape::AsciiControl(byte) => {
                const HEX: &[u8; 16] = b"0123456789abcdef";
                let esc = [
                    b'\\',
                    b'u',
                    b'0',
                    b'0',
                    HEX[usize::from(byte >> 4)],
                    HEX[usize::from(byte & 0xf)],
                ];
                return writer.write_all(&esc);
            }
        };
        writer.write_all(text)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn keys_sorted_no_whitespace() {
        let v = json!({"name": "Alice", "age": 30, "nested": {"b": [1, 2, {"z": null, "a": true}], "a": false}});
        assert_eq!(
            String::from_utf8(canonical_json(&v)).unwrap(),
            r#"{"age":30,"name":"Alice","nested":{"a":false,"b":[1,2,{"a":true,"z":null}]}}"#
        );
    }

    #[test]
    fn escapes_follow_the_canonical_rules() {
        let v = json!("q\" b\\ n\n r\r t\t bs\u{8} ff\u{c} c\u{1} del\u{7f} slash/ é");
        assert_eq!(
            String::from_utf8(canonical_json(&v)).unwrap(),
            "\"q\\\" b\\\\ n\\n r\\r t\\t bs\\u0008 ff\\u000c c\\u0001 del\\u007f slash/ é\""
        );
    }

    #[test]
    fn keys_sort_by_utf8_bytes_shorter_prefix_first() {
        let v = json!({"é": 1, "z": 2, "Z": 3, "ab": 4, "a": 5});
        assert_eq!(
            String::from_utf8(canonical_json(&v)).unwrap(),
            r#"{"Z":3,"a":5,"ab":4,"z":2,"é":1}"#
        );
    }
}
