//! Creating deltas, following Fleece's `JSONDelta::_write`.

use serde_json::{Map, Value};

use super::{text, MAX_NESTING, STRING_EDIT_CODE};

/// Computes the JSONDelta that turns `old` into `new`.
///
/// The result follows Fleece's generation rules: objects are diffed key by key (changed and new
/// keys, then `[]` for each removed key), non-empty arrays index by index plus an `"n-"` tail
/// when the lengths differ, strings of at least 60 bytes by a string edit when that is shorter,
/// and anything else is replaced — by the bare value inside a container when it is a scalar,
/// by `[value]` otherwise and always at the top level. Equal documents give `{}`.
///
/// Containers nested deeper than [`MAX_NESTING`] levels are replaced whole rather than diffed,
/// so the result can always be applied by [`apply_delta`](super::apply_delta).
///
/// ```
/// use ferrolite_protocol::delta::{apply_delta, create_delta};
/// use serde_json::json;
///
/// let old = json!({"name": "Alice", "tags": ["a", "b"], "pet": "cat"});
/// let new = json!({"name": "Alice", "tags": ["a", "x", "y"], "vip": true});
/// let delta = create_delta(&old, &new);
/// assert_eq!(delta, json!({"tags": {"1": "x", "2-": ["y"]}, "vip": true, "pet": []}));
/// assert_eq!(apply_delta(&old, &delta).unwrap(), new);
/// ```
#[must_use]
pub fn create_delta(old: &Value, new: &Value) -> Value {
    diff(old, new, false, 0).unwrap_or_else(|| Value::Object(Map::new()))
}

/// The delta of `old` to `new`, or `None` when they are equal. `nested` is true inside a
/// container delta (where a scalar replacement may be bare); `depth` counts the object deltas
/// around this one.
fn diff(old: &Value, new: &Value, nested: bool, depth: usize) -> Option<Value> {
    match (old, new) {
        (Value::Object(old_map), Value::Object(new_map)) if depth < MAX_NESTING => {
            let mut out = Map::new();
            for (key, new_value) in new_map {
                let entry = match old_map.get(key) {
                    Some(old_value) => diff(old_value, new_value, true, depth + 1),
                    None => Some(replacement(new_value, true)),
                };
                if let Some(entry) = entry {
                    out.insert(key.clone(), entry);
                }
            }
            for key in old_map.keys() {
                if !new_map.contains_key(key) {
                    out.insert(key.clone(), Value::Array(Vec::new()));
                }
            }
            (!out.is_empty()).then_some(Value::Object(out))
        }
        (Value::Array(old_items), Value::Array(new_items))
            if depth < MAX_NESTING && !old_items.is_empty() && !new_items.is_empty() =>
        {
            let mut out = Map::new();
            for (index, (old_item, new_item)) in old_items.iter().zip(new_items).enumerate() {
                if let Some(entry) = diff(old_item, new_item, true, depth + 1) {
                    out.insert(index.to_string(), entry);
                }
            }
            let common = old_items.len().min(new_items.len());
            if old_items.len() != new_items.len() {
                let tail = new_items.get(common..).unwrap_or_default().to_vec();
                out.insert(format!("{common}-"), Value::Array(tail));
            }
            (!out.is_empty()).then_some(Value::Object(out))
        }
        (Value::String(old_text), Value::String(new_text)) => {
            if old_text == new_text {
                return None;
            }
            Some(match text::encode(old_text, new_text) {
                Some(ops) => Value::Array(vec![
                    Value::String(ops),
                    Value::from(0),
                    Value::from(STRING_EDIT_CODE),
                ]),
                None => replacement(new, nested),
            })
        }
        _ if old == new => None,
        _ => Some(replacement(new, nested)),
    }
}

/// The generic replacement by `new`: bare when a scalar inside a container, else `[new]`.
fn replacement(new: &Value, nested: bool) -> Value {
    if nested && !matches!(new, Value::Array(_) | Value::Object(_)) {
        new.clone()
    } else {
        Value::Array(vec![new.clone()])
    }
}
