//! Applying deltas, following Fleece's `JSONDelta::_apply` but refusing what it would silently
//! ignore (stray keys in array deltas, deletions of array items, unknown codes).

use serde_json::{Map, Value};

use super::error::{excerpt, kind, pointer};
use super::{text, DeltaError, DELETION_CODE, MAX_NESTING, STRING_EDIT_CODE};

/// Applies `delta` to `old` and returns the new value.
///
/// Every form of the JSONDelta format is accepted, including the JsonDiffPatch compatibility
/// forms `[old, new]` and `[x, 0, 0]`; anything else is refused with a [`DeltaError`] naming the
/// place in the document, never a panic. Object deltas may nest at most [`MAX_NESTING`] levels.
///
/// # Errors
///
/// A [`DeltaError`] when the delta is malformed or does not fit `old`: an object delta on a
/// scalar, an array delta key out of range, a string edit whose byte counts do not add up to the
/// old string's length or that splits a character, nesting beyond [`MAX_NESTING`], …
///
/// ```
/// use ferrolite_protocol::delta::apply_delta;
/// use serde_json::json;
///
/// let old = json!({"age": 30, "tags": ["a", "b", "c"], "pet": "cat"});
/// let delta = json!({"age": 31, "tags": {"1": "x", "2-": []}, "pet": []});
/// assert_eq!(apply_delta(&old, &delta).unwrap(), json!({"age": 31, "tags": ["a", "x"]}));
///
/// // A string edit must account for every byte of the old string.
/// assert!(apply_delta(&json!("hello"), &json!(["4=", 0, 2])).is_err());
/// ```
pub fn apply_delta(old: &Value, delta: &Value) -> Result<Value, DeltaError> {
    let mut path = Vec::new();
    match apply_value(Some(old), delta, &mut path, 0)? {
        Applied::Value(value) => Ok(value),
        Applied::Deleted => Err(DeltaError::InvalidDeletion {
            path: String::new(),
            reason: "the document itself cannot be deleted",
        }),
    }
}

/// Parses `old_body` and `delta_json` as JSON, applies the delta and returns the new body as
/// compact JSON.
///
/// # Errors
///
/// [`DeltaError::InvalidBody`] or [`DeltaError::InvalidJson`] when a text is not JSON, else
/// whatever [`apply_delta`] returns.
///
/// ```
/// use ferrolite_protocol::delta::apply_delta_to_body;
///
/// let new = apply_delta_to_body(br#"{"a":1,"b":2}"#, br#"{"b":[]}"#).unwrap();
/// assert_eq!(new, br#"{"a":1}"#);
/// ```
pub fn apply_delta_to_body(old_body: &[u8], delta_json: &[u8]) -> Result<Vec<u8>, DeltaError> {
    let old: Value = serde_json::from_slice(old_body).map_err(DeltaError::InvalidBody)?;
    let delta: Value = serde_json::from_slice(delta_json).map_err(DeltaError::InvalidJson)?;
    let new = apply_delta(&old, &delta)?;
    serde_json::to_vec(&new).map_err(DeltaError::Serialize)
}

/// What applying a delta to a value gives.
enum Applied {
    Value(Value),
    /// The value is deleted (`[]` or `[x,0,0]`).
    Deleted,
}

/// Applies `delta` to `old` (`None`: a key absent from the parent object). `path` holds the
/// delta keys leading here; `depth` counts the object deltas around this one.
fn apply_value<'d>(
    old: Option<&Value>,
    delta: &'d Value,
    path: &mut Vec<&'d str>,
    depth: usize,
) -> Result<Applied, DeltaError> {
    match delta {
        Value::Array(items) => apply_array_form(old, items, path),
        Value::Object(entries) => {
            if depth >= MAX_NESTING {
                return Err(DeltaError::TooDeep {
                    path: pointer(path),
                    limit: MAX_NESTING,
                });
            }
            match old {
                None => Err(DeltaError::InvalidInsertion {
                    path: pointer(path),
                    form: "an object delta",
                }),
                Some(Value::Object(old_map)) => {
                    patch_object(old_map, entries, path, depth).map(Applied::Value)
                }
                Some(Value::Array(old_items)) => {
                    patch_array(old_items, entries, path, depth).map(Applied::Value)
                }
                Some(old) if entries.is_empty() => Ok(Applied::Value(old.clone())),
                Some(old) => Err(DeltaError::NotAContainer {
                    path: pointer(path),
                    found: kind(old),
                }),
            }
        }
        scalar => Ok(Applied::Value(scalar.clone())),
    }
}

/// Applies the array forms: `[]`, `[v]`, `[old, new]`, `[x, 0, 0]`, `["<ops>", 0, 2]`.
fn apply_array_form(
    old: Option<&Value>,
    items: &[Value],
    path: &[&str],
) -> Result<Applied, DeltaError> {
    let absent = |form| DeltaError::InvalidInsertion {
        path: pointer(path),
        form,
    };
    match items {
        [] => old
            .map(|_| Applied::Deleted)
            .ok_or_else(|| absent("a deletion")),
        [value] => Ok(Applied::Value(value.clone())),
        [_, value] => old
            .map(|_| Applied::Value(value.clone()))
            .ok_or_else(|| absent("an [old, new] replacement")),
        [first, zero, code] if zero.as_u64() == Some(0) => match code.as_u64() {
            Some(DELETION_CODE) => old
                .map(|_| Applied::Deleted)
                .ok_or_else(|| absent("a deletion")),
            Some(STRING_EDIT_CODE) => {
                let Value::String(ops) = first else {
                    return Err(unknown_mode(items, path));
                };
                let old = old.ok_or_else(|| absent("a string edit"))?;
                let Value::String(old_text) = old else {
                    return Err(DeltaError::StringEditTarget {
                        path: pointer(path),
                        found: kind(old),
                    });
                };
                let bytes = text::apply(old_text, ops).map_err(|(offset, reason)| {
                    DeltaError::InvalidStringEdit {
                        path: pointer(path),
                        offset,
                        reason,
                    }
                })?;
                String::from_utf8(bytes)
                    .map(|new| Applied::Value(Value::String(new)))
                    .map_err(|e| DeltaError::InvalidUtf8 {
                        path: pointer(path),
                        at: e.utf8_error().valid_up_to(),
                    })
            }
            _ => Err(unknown_mode(items, path)),
        },
        [_, _, _] => Err(unknown_mode(items, path)),
        _ => Err(DeltaError::BadArrayLength {
            path: pointer(path),
            len: items.len(),
        }),
    }
}

fn unknown_mode(items: &[Value], path: &[&str]) -> DeltaError {
    DeltaError::UnknownMode {
        path: pointer(path),
        found: excerpt(&Value::Array(items.to_vec())),
    }
}

/// Applies an object delta to an object: old keys keep their order (deleted ones dropped),
/// inserted keys follow in the delta's order.
fn patch_object<'d>(
    old: &Map<String, Value>,
    delta: &'d Map<String, Value>,
    path: &mut Vec<&'d str>,
    depth: usize,
) -> Result<Value, DeltaError> {
    let mut out = Map::new();
    for (key, old_value) in old {
        let Some((key_ref, entry)) = delta.get_key_value(key) else {
            out.insert(key.clone(), old_value.clone());
            continue;
        };
        path.push(key_ref);
        if let Applied::Value(value) = apply_value(Some(old_value), entry, path, depth + 1)? {
            out.insert(key.clone(), value);
        }
        path.pop();
    }
    for (key, entry) in delta {
        if old.contains_key(key) {
            continue;
        }
        path.push(key);
        let value = match entry {
            Value::Object(_) => {
                return Err(DeltaError::InvalidInsertion {
                    path: pointer(path),
                    form: "an object delta",
                })
            }
            Value::Array(items) => match apply_array_form(None, items, path)? {
                Applied::Value(value) => value,
                Applied::Deleted => {
                    return Err(DeltaError::InvalidInsertion {
                        path: pointer(path),
                        form: "a deletion",
                    })
                }
            },
            scalar => scalar.clone(),
        };
        path.pop();
        out.insert(key.clone(), value);
    }
    Ok(Value::Object(out))
}

/// Applies an object delta to an array: keys are canonical decimal indexes below the length,
/// plus at most one `"n-"` tail key (`n` ≤ length) replacing the items from `n` on.
fn patch_array<'d>(
    old: &[Value],
    delta: &'d Map<String, Value>,
    path: &mut Vec<&'d str>,
    depth: usize,
) -> Result<Value, DeltaError> {
    let len = old.len();
    let bad_key = |path: &[&str], key: &str, reason| DeltaError::InvalidArrayKey {
        path: pointer(path),
        key: key.to_owned(),
        len,
        reason,
    };
    let mut tail: Option<(usize, &'d str, &'d Vec<Value>)> = None;
    let mut edits: Vec<(usize, &'d str, &'d Value)> = Vec::with_capacity(delta.len());
    for (key, entry) in delta {
        if let Some(number) = key.strip_suffix('-') {
            let start = parse_index(number)
                .ok_or_else(|| bad_key(path, key, "not a decimal index nor \"n-\""))?;
            if start > len {
                return Err(bad_key(
                    path,
                    key,
                    "the tail starts after the end of the array",
                ));
            }
            if tail.is_some() {
                return Err(bad_key(path, key, "a second \"n-\" tail key"));
            }
            let Value::Array(items) = entry else {
                return Err(DeltaError::TailNotArray {
                    path: pointer(path),
                    key: key.clone(),
                    found: kind(entry),
                });
            };
            tail = Some((start, key, items));
        } else {
            let index = parse_index(key)
                .ok_or_else(|| bad_key(path, key, "not a decimal index nor \"n-\""))?;
            if index >= len {
                return Err(bad_key(path, key, "the index is out of range"));
            }
            edits.push((index, key, entry));
        }
    }
    let cut = tail.map_or(len, |(start, _, _)| start);
    edits.sort_unstable_by_key(|&(index, _, _)| index);
    if let Some(&(_, key, _)) = edits.iter().find(|&&(index, _, _)| index >= cut) {
        return Err(bad_key(
            path,
            key,
            "the index falls in the tail replaced by the \"n-\" key",
        ));
    }

    let mut out = Vec::with_capacity(cut + tail.map_or(0, |(_, _, items)| items.len()));
    let mut edits = edits.into_iter().peekable();
    for (index, old_item) in old.iter().take(cut).enumerate() {
        match edits.next_if(|&(i, _, _)| i == index) {
            None => out.push(old_item.clone()),
            Some((_, key, entry)) => {
                path.push(key);
                match apply_value(Some(old_item), entry, path, depth + 1)? {
                    Applied::Value(value) => out.push(value),
                    Applied::Deleted => {
                        return Err(DeltaError::InvalidDeletion {
                            path: pointer(path),
                            reason: "array items are removed by an \"n-\" tail key, not deleted",
                        })
                    }
                }
                path.pop();
            }
        }
    }
    if let Some((_, _, items)) = tail {
        out.extend(items.iter().cloned());
    }
    Ok(Value::Array(out))
}

/// Parses a canonical decimal index (`"0"`, `"17"`; not `"017"`, `"+1"` or `""`).
fn parse_index(text: &str) -> Option<usize> {
    let canonical = !text.is_empty()
        && text.bytes().all(|b| b.is_ascii_digit())
        && (text == "0" || !text.starts_with('0'));
    canonical.then(|| text.parse().ok()).flatten()
}
