//! Canonical JSON, as Couchbase Lite hashes it: sorted keys, no whitespace, minimal escapes.
//!
//! Written by hand rather than through serde's serializer: it runs for every saved revision,
//! and a direct walk of the value is about twice as fast.

use std::io;

use serde::Serialize;
use serde_json::Value;

use crate::Properties;

/// Encodes `value` as canonical JSON: object keys sorted by their UTF-8 bytes, no whitespace,
/// `"` `\` CR LF TAB escaped by name, other control bytes and 0x7F as `\u00xx`, everything
/// else raw.
pub fn canonical_json(value: &Value) -> Vec<u8> {
    let mut out = Vec::with_capacity(256);
    write_value(&mut out, value);
    out
}

/// Encodes document properties (a JSON object) as canonical JSON (see [`canonical_json`]).
pub fn canonical_json_of_properties(properties: &Properties) -> Vec<u8> {
    let mut out = Vec::with_capacity(1024);
    write_object(&mut out, properties);
    out
}

/// Writes the canonical JSON of `value` into `out` (see [`canonical_json`]).
pub fn write_canonical_json<W: io::Write>(mut out: W, value: &Value) -> io::Result<()> {
    out.write_all(&canonical_json(value))
}

fn write_value(out: &mut Vec<u8>, value: &Value) {
    match value {
        Value::Null => out.extend_from_slice(b"null"),
        Value::Bool(true) => out.extend_from_slice(b"true"),
        Value::Bool(false) => out.extend_from_slice(b"false"),
        Value::Number(n) => {
            // serde_json's own number formatting (itoa / shortest round-trip floats);
            // writing a number into a Vec cannot fail.
            let _ = n.serialize(&mut serde_json::Serializer::new(&mut *out));
        }
        Value::String(s) => write_string(out, s),
        Value::Array(items) => {
            out.push(b'[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                write_value(out, item);
            }
            out.push(b']');
        }
        Value::Object(map) => write_object(out, map),
    }
}

/// serde_json's `Map` (without `preserve_order`) is a BTreeMap: keys come out sorted
/// byte-wise, which is the canonical order.
fn write_object(out: &mut Vec<u8>, map: &Properties) {
    out.push(b'{');
    for (i, (key, item)) in map.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        write_string(out, key);
        out.push(b':');
        write_value(out, item);
    }
    out.push(b'}');
}

/// Which bytes need an escape: 0 = none, b'u' = `\u00xx`, anything else = `\` + that byte.
const ESCAPE: [u8; 256] = {
    let mut table = [0u8; 256];
    let mut i = 0;
    while i < 0x20 {
        table[i] = b'u';
        i += 1;
    }
    table[0x7f] = b'u';
    table[b'"' as usize] = b'"';
    table[b'\\' as usize] = b'\\';
    table[b'\n' as usize] = b'n';
    table[b'\r' as usize] = b'r';
    table[b'\t' as usize] = b't';
    table
};

fn write_string(out: &mut Vec<u8>, s: &str) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let bytes = s.as_bytes();
    out.reserve(bytes.len() + 2);
    out.push(b'"');
    // Nearly every string needs no escape: check that with a loop the compiler vectorizes
    // (no early exit, no table), then copy the string whole.
    let clean = !bytes.iter().fold(false, |dirty, &b| {
        dirty | (b < 0x20) | (b == b'"') | (b == b'\\') | (b == 0x7f)
    });
    if clean {
        out.extend_from_slice(bytes);
        out.push(b'"');
        return;
    }
    let mut start = 0;
    for (i, &b) in bytes.iter().enumerate() {
        let escape = ESCAPE[usize::from(b)];
        if escape == 0 {
            continue;
        }
        out.extend_from_slice(&bytes[start..i]);
        if escape == b'u' {
            out.extend_from_slice(&[
                b'\\',
                b'u',
                b'0',
                b'0',
                HEX[usize::from(b >> 4)],
                HEX[usize::from(b & 0xf)],
            ]);
        } else {
            out.extend_from_slice(&[b'\\', escape]);
        }
        start = i + 1;
    }
    out.extend_from_slice(&bytes[start..]);
    out.push(b'"');
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
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

    #[test]
    fn numbers_as_serde_json_writes_them() {
        let v = json!([
            0,
            -1,
            18446744073709551615u64,
            -9223372036854775808i64,
            1.5,
            -0.25,
            1e300
        ]);
        assert_eq!(
            String::from_utf8(canonical_json(&v)).unwrap(),
            "[0,-1,18446744073709551615,-9223372036854775808,1.5,-0.25,1e+300]"
        );
    }

    fn json_value() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::from),
            any::<i64>().prop_map(Value::from),
            any::<f64>()
                .prop_filter("finite", |f| f.is_finite())
                .prop_map(Value::from),
            "[ -~é€😀]{0,12}".prop_map(Value::from),
        ];
        leaf.prop_recursive(4, 32, 6, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
                prop::collection::btree_map("[ -~é]{0,6}", inner, 0..6)
                    .prop_map(|m| Value::Object(m.into_iter().collect())),
            ]
        })
    }

    proptest! {
        /// Without control characters, canonical JSON is serde_json's compact output.
        #[test]
        fn matches_compact_serde_json_without_control_characters(v in json_value()) {
            prop_assert_eq!(canonical_json(&v), serde_json::to_vec(&v).unwrap());
        }

        /// Canonical JSON always parses back to the same value (strings with every control
        /// character included; floats left out, as serde_json's parser may be off by an ulp).
        #[test]
        fn round_trips(key in "[\u{0}-\u{1f}\u{7f}a\"\\\\]{0,8}", control in "[\u{0}-\u{1f}\u{7f}a\"\\\\]{0,8}", n in any::<i64>()) {
            let v = json!([{ key: n }, control]);
            let back: Value = serde_json::from_slice(&canonical_json(&v)).unwrap();
            prop_assert_eq!(back, v);
        }
    }
}
