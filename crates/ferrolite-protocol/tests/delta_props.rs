//! JSON delta properties: `apply_delta(old, create_delta(old, new)) == new` for random and for
//! slightly mutated documents, and `apply_delta` never panicking on arbitrary deltas.
//!
//! Values are compared as `serde_json::Value`s, never through JSON text, and the only floats
//! generated are exactly representable, so no comparison depends on float printing.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use ferrolite_protocol::delta::{apply_delta, apply_delta_to_body, create_delta, DeltaError};
use proptest::prelude::*;
use serde_json::{Map, Value};

/// Words for strings, several with multi-byte characters (2, 3 and 4 bytes in UTF-8).
const WORDS: [&str; 16] = [
    "the",
    "quick",
    "brown",
    "fox",
    "naïve",
    "Köln",
    "Grüße",
    "日本語",
    "😀",
    "ça",
    "€10",
    "über",
    "zebra",
    "a",
    "|",
    "12+3=",
];

const KEYS: [&str; 8] = ["a", "b", "c", "name", "tags", "0", "1-", "x/y"];

fn short_string() -> impl Strategy<Value = String> {
    "[a-cé€😀| ]{0,6}"
}

/// Text of 0 to 40 words: long enough for string edits to be tried.
fn text() -> impl Strategy<Value = String> {
    prop::collection::vec(prop::sample::select(&WORDS[..]), 0..40).prop_map(|w| w.join(" "))
}

fn number() -> impl Strategy<Value = Value> {
    prop_oneof![
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        (-1000i32..1000).prop_map(|n| Value::from(f64::from(n) / 8.0)),
    ]
}

fn scalar() -> impl Strategy<Value = Value> {
    prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        number(),
        short_string().prop_map(Value::String),
        text().prop_map(Value::String),
    ]
}

fn json() -> impl Strategy<Value = Value> {
    scalar().prop_recursive(4, 48, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            prop::collection::vec((prop::sample::select(&KEYS[..]), inner), 0..6).prop_map(
                |entries| {
                    Value::Object(
                        entries
                            .into_iter()
                            .map(|(k, v)| (k.to_owned(), v))
                            .collect(),
                    )
                }
            ),
        ]
    })
}

/// A small deterministic PRNG (SplitMix64) driving the mutations, seeded by proptest.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: usize) -> usize {
        if n == 0 {
            0
        } else {
            (self.next() % n as u64) as usize
        }
    }

    fn word(&mut self) -> &'static str {
        WORDS[self.below(WORDS.len())]
    }

    fn scalar(&mut self) -> Value {
        match self.below(6) {
            0 => Value::Null,
            1 => Value::Bool(self.next() % 2 == 0),
            2 => Value::from(self.next() as i64),
            3 => Value::from(self.below(100) as f64 / 4.0),
            4 => Value::String(self.word().to_owned()),
            _ => Value::Array(vec![Value::from(self.below(10))]),
        }
    }
}

/// Changes `value` a little somewhere: edits a string, replaces, inserts or removes something.
fn mutate(value: &mut Value, rng: &mut Rng) {
    // Descend into a child most of the time, so that changes land deep in the document.
    let descend = rng.below(4) != 0;
    match value {
        Value::Object(map) if descend && !map.is_empty() => {
            let key = map.keys().nth(rng.below(map.len())).cloned().unwrap();
            mutate(map.get_mut(&key).unwrap(), rng);
        }
        Value::Array(items) if descend && !items.is_empty() => {
            let index = rng.below(items.len());
            mutate(&mut items[index], rng);
        }
        Value::Object(map) => match rng.below(3) {
            0 if !map.is_empty() => {
                let key = map.keys().nth(rng.below(map.len())).cloned().unwrap();
                map.remove(&key);
            }
            _ => {
                let key = KEYS[rng.below(KEYS.len())].to_owned();
                map.insert(key, rng.scalar());
            }
        },
        Value::Array(items) => match rng.below(4) {
            0 if !items.is_empty() => {
                items.remove(rng.below(items.len()));
            }
            1 => items.push(rng.scalar()),
            2 => items.insert(rng.below(items.len() + 1), rng.scalar()),
            _ => items.truncate(rng.below(items.len() + 1)),
        },
        Value::String(text) => {
            let boundaries: Vec<usize> = text
                .char_indices()
                .map(|(i, _)| i)
                .chain([text.len()])
                .collect();
            let a = boundaries[rng.below(boundaries.len())];
            let b = boundaries[rng.below(boundaries.len())];
            let (start, end) = (a.min(b), a.max(b));
            match rng.below(3) {
                0 => text.replace_range(start..end, ""),
                1 => text.insert_str(start, rng.word()),
                _ => text.replace_range(start..end, rng.word()),
            }
        }
        other => *other = rng.scalar(),
    }
}

fn round_trips(old: &Value, new: &Value) -> Result<(), TestCaseError> {
    let delta = create_delta(old, new);
    let applied = apply_delta(old, &delta)
        .map_err(|e| TestCaseError::fail(format!("delta {delta} refused: {e}")))?;
    prop_assert_eq!(&applied, new, "delta {}", delta);
    if old == new {
        prop_assert_eq!(delta, Value::Object(Map::new()));
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn random_pairs_round_trip(old in json(), new in json()) {
        round_trips(&old, &new)?;
        round_trips(&old, &old)?;
    }

    #[test]
    fn mutated_documents_round_trip(old in json(), seed in any::<u64>(), mutations in 1usize..5) {
        let mut rng = Rng(seed);
        let mut new = old.clone();
        for _ in 0..mutations {
            mutate(&mut new, &mut rng);
        }
        round_trips(&old, &new)?;
    }

    #[test]
    fn edited_long_strings_round_trip(
        old in prop::collection::vec(text(), 1..4).prop_map(|t| t.join(" ")),
        seed in any::<u64>(),
        edits in 1usize..4,
    ) {
        let mut rng = Rng(seed);
        let mut new = Value::String(old.clone());
        for _ in 0..edits {
            mutate(&mut new, &mut rng);
        }
        let old = Value::String(old);
        round_trips(&old, &new)?;
        let (old, new) = (serde_json::json!({"s": old}), serde_json::json!({"s": new}));
        round_trips(&old, &new)?;
    }
}

/// Values shaped like deltas (small-int codes, op strings, index and tail keys), so that
/// `apply_delta` gets past its first checks.
fn delta_like() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        scalar(),
        "([0-9]{1,2}[-=]|[0-9]\\+[aé😀|]{0,3}\\|?|[x*]){0,5}".prop_map(Value::String),
        (0u64..4).prop_map(Value::from),
    ];
    leaf.prop_recursive(5, 64, 5, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..5).prop_map(Value::Array),
            (inner.clone(), 0u64..2, 0u64..4).prop_map(|(x, a, b)| Value::Array(vec![
                x,
                Value::from(a),
                Value::from(b)
            ])),
            prop::collection::vec(
                (
                    prop_oneof![
                        prop::sample::select(&KEYS[..]).prop_map(str::to_owned),
                        "[0-9]{1,2}-?",
                    ],
                    inner,
                ),
                0..5,
            )
            .prop_map(|entries| Value::Object(entries.into_iter().collect())),
        ]
    })
}

const TOKENS: [&str; 20] = [
    "{", "}", "[", "]", ",", ":", "\"a\"", "\"0\"", "\"1-\"", "\"2-\"", "0", "2", "1", "null",
    "true", "\"3=\"", "\"1+x|\"", "\"1=2-\"", "\"é\"", " ",
];

/// JSON-ish text: serialized delta-like values with a few bytes cut or tokens inserted, or a
/// soup of JSON tokens; often, but not always, valid JSON.
fn jsonish_text() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        (delta_like(), any::<u64>(), 0usize..3).prop_map(|(value, seed, damage)| {
            let mut rng = Rng(seed);
            let mut text = serde_json::to_vec(&value).unwrap();
            for _ in 0..damage {
                let at = rng.below(text.len() + 1);
                if rng.next() % 2 == 0 {
                    let end = (at + rng.below(4)).min(text.len());
                    text.drain(at..end);
                } else {
                    let token = TOKENS[rng.below(TOKENS.len())].bytes();
                    text.splice(at..at, token);
                }
            }
            text
        }),
        prop::collection::vec(prop::sample::select(&TOKENS[..]), 0..40)
            .prop_map(|tokens| tokens.concat().into_bytes()),
    ]
}

/// String edit operations: well-formed ones with random counts (which may not add up, or may
/// split characters), sometimes with a missing check byte or a stray character.
fn edit_ops() -> impl Strategy<Value = String> {
    let op = prop_oneof![
        (0usize..5).prop_map(|n| format!("{n}=")),
        (0usize..5).prop_map(|n| format!("{n}-")),
        "[aé😀|]{0,3}".prop_map(|text| format!("{}+{text}|", text.len())),
        ("[aé😀|]{0,3}", 0usize..6).prop_map(|(text, n)| format!("{n}+{text}|")),
        "[0-9|+=x-]{1,2}",
    ];
    prop::collection::vec(op, 0..6).prop_map(|ops| ops.concat())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn arbitrary_deltas_never_panic(old in json(), delta in delta_like()) {
        let _ = apply_delta(&old, &delta);
    }

    #[test]
    fn arbitrary_values_never_panic(old in json(), delta in json()) {
        let _ = apply_delta(&old, &delta);
    }

    #[test]
    fn arbitrary_delta_text_never_panics(
        old in json(),
        delta in prop_oneof![jsonish_text(), any::<Vec<u8>>()],
    ) {
        if let Ok(delta) = serde_json::from_slice::<Value>(&delta) {
            let _ = apply_delta(&old, &delta);
        }
        let body = serde_json::to_vec(&old).unwrap();
        let _ = apply_delta_to_body(&body, &delta);
    }

    #[test]
    fn arbitrary_string_edits_never_panic(old in "[aé😀|]{0,5}", ops in edit_ops()) {
        let result = apply_delta(&Value::String(old.clone()), &serde_json::json!([ops, 0, 2]));
        // Whatever is accepted accounts for every byte of the old string.
        if let Ok(Value::String(new)) = &result {
            prop_assert!(new.len() <= old.len() + ops.len());
        }
        prop_assert!(matches!(result, Ok(Value::String(_)) | Err(_)));
    }

    #[test]
    fn byte_exact_edits_apply_or_report_split_characters(
        old in "[aé€😀]{0,6}",
        steps in prop::collection::vec((0u8..3, 0usize..5, "[aé😀|]{0,2}"), 0..8),
    ) {
        // Operations covering the old string exactly, cutting anywhere, also inside characters;
        // `expected` is what they must produce.
        let bytes = old.as_bytes();
        let (mut ops, mut expected, mut pos) = (String::new(), Vec::new(), 0);
        for (kind, count, inserted) in steps {
            let count = count.min(bytes.len() - pos);
            match kind {
                0 => {
                    ops.push_str(&format!("{count}="));
                    expected.extend_from_slice(&bytes[pos..pos + count]);
                    pos += count;
                }
                1 => {
                    ops.push_str(&format!("{count}-"));
                    pos += count;
                }
                _ => {
                    ops.push_str(&format!("{}+{inserted}|", inserted.len()));
                    expected.extend_from_slice(inserted.as_bytes());
                }
            }
        }
        ops.push_str(&format!("{}=", bytes.len() - pos));
        expected.extend_from_slice(&bytes[pos..]);
        let result = apply_delta(&Value::String(old.clone()), &serde_json::json!([ops, 0, 2]));
        match String::from_utf8(expected) {
            Ok(text) => prop_assert_eq!(result.unwrap(), Value::String(text)),
            Err(_) => prop_assert!(
                matches!(result, Err(DeltaError::InvalidUtf8 { .. })),
                "{:?}",
                result
            ),
        }
    }

    #[test]
    fn arbitrary_body_text_never_panics(old in jsonish_text(), delta in jsonish_text()) {
        let _ = apply_delta_to_body(&old, &delta);
    }
}
