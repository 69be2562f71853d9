//! JSON delta: the worked examples of the protocol notes (`revisions-and-delta.md` §4.2), every
//! accepted delta form, the refused ones, and delta sizes on workload documents.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use ferrolite_protocol::delta::{
    apply_delta, apply_delta_to_body, create_delta, DeltaError, MAX_NESTING,
};
use serde_json::{json, Map, Value};

/// `create_delta(old, new)` is exactly `delta`, and `delta` turns `old` into `new`.
#[track_caller]
fn golden(old: Value, new: Value, delta: Value) {
    assert_eq!(
        create_delta(&old, &new),
        delta,
        "create_delta({old}, {new})"
    );
    assert_eq!(
        apply_delta(&old, &delta).unwrap(),
        new,
        "apply_delta({old}, {delta})"
    );
}

#[track_caller]
fn applies(old: Value, delta: Value, new: Value) {
    assert_eq!(
        apply_delta(&old, &delta).unwrap(),
        new,
        "apply_delta({old}, {delta})"
    );
}

#[track_caller]
fn refused(old: Value, delta: Value) -> DeltaError {
    match apply_delta(&old, &delta) {
        Ok(new) => panic!("apply_delta({old}, {delta}) gave {new}, expected an error"),
        Err(err) => err,
    }
}

#[test]
fn worked_example_document() {
    golden(
        json!({"name":"Alice","age":30,"tags":["a","b","c"],"addr":{"city":"Paris","zip":"75001"},
               "pet":"cat"}),
        json!({"name":"Alice","age":31,"tags":["a","x"],
               "addr":{"city":"Lyon","zip":"75001","country":"FR"},"vip":true,"photo":{"w":1}}),
        json!({"age":31,"tags":{"1":"x","2-":[]},"addr":{"city":"Lyon","country":"FR"},"vip":true,
               "photo":[{"w":1}],"pet":[]}),
    );
}

#[test]
fn worked_example_table() {
    golden(
        json!([1, 2, 3]),
        json!([1, 2, 3, 4, 5]),
        json!({"3-":[4,5]}),
    );
    golden(json!([]), json!([1]), json!([[1]]));
    golden(
        json!({"a":[1,2]}),
        json!({"a":{"b":1}}),
        json!({"a":[{"b":1}]}),
    );
    golden(json!({"a":null}), json!({"a":[]}), json!({"a":[[]]}));
    golden(json!({"a":1}), json!({"a":1}), json!({}));
}

#[test]
fn worked_example_string_edit() {
    let old = "The quick brown fox jumps over the lazy dog, then naps in the warm afternoon sun.";
    let new = "The quick red fox jumps over the lazy dog, then naps in the cool afternoon sun.";
    assert_eq!((old.len(), new.len()), (81, 79));
    golden(
        json!({"caption": old}),
        json!({"caption": new}),
        json!({"caption":["10=5-3+red|47=4-4+cool|15=",0,2]}),
    );
    // At the top level the edit is the same array.
    golden(
        json!(old),
        json!(new),
        json!(["10=5-3+red|47=4-4+cool|15=", 0, 2]),
    );
}

#[test]
fn generation_rules() {
    // Equal documents, whatever their type.
    for doc in [
        json!(null),
        json!(5),
        json!("s"),
        json!([1]),
        json!({"a":[{"b":null}]}),
    ] {
        golden(doc.clone(), doc, json!({}));
    }
    // Top-level replacements are always wrapped.
    golden(json!(1), json!(2), json!([2]));
    golden(json!("a"), json!(null), json!([null]));
    golden(json!({"a":1}), json!([1]), json!([[1]]));
    golden(json!([1]), json!([]), json!([[]]));
    // Inside containers scalars are bare, containers wrapped.
    golden(json!({"a":1}), json!({"a":"x"}), json!({"a":"x"}));
    golden(json!({"a":1}), json!({"a":{}}), json!({"a":[{}]}));
    golden(
        json!([1, {"b":2}]),
        json!([[], {"b":3}]),
        json!({"0":[[]],"1":{"b":3}}),
    );
    // Numbers that differ only in representation are different values.
    golden(json!({"n":1}), json!({"n":1.0}), json!({"n":1.0}));
    // Short strings are replaced; long ones with an unprofitable edit too.
    golden(json!({"s":"abc"}), json!({"s":"abd"}), json!({"s":"abd"}));
    let (a, b) = ("a".repeat(70), "b".repeat(70));
    golden(json!({"s":a}), json!({"s":b.clone()}), json!({"s":b}));
    // Truncating an array to a non-empty prefix.
    golden(json!([1, 2, 3]), json!([1]), json!({"1-":[]}));
}

#[test]
fn string_edits_count_utf8_bytes() {
    let old = format!("{}Grüße aus Köln{}", "x".repeat(30), "y".repeat(30));
    let new = format!("{}Grüße aus Zürich 🎉{}", "x".repeat(30), "y".repeat(30));
    let delta = create_delta(&json!({"s": old}), &json!({"s": new}));
    assert_eq!(delta, json!({"s":["42=5-12+Zürich 🎉|30=",0,2]}));
    applies(json!({"s": old}), delta, json!({"s": new}));
    // Inserting multi-byte characters: the count is in bytes.
    applies(json!("ab"), json!(["1=4+😀|1=", 0, 2]), json!("a😀b"));
    applies(json!("aéb"), json!(["1=2-2+è|1=", 0, 2]), json!("aèb"));
}

#[test]
fn accepts_every_form() {
    // [v] replaces with anything, at any level.
    applies(json!({"a":1}), json!([{"x":[1]}]), json!({"x":[1]}));
    applies(json!([1, 2]), json!({"1":[[3]]}), json!([1, [3]]));
    // JsonDiffPatch compatibility forms.
    applies(
        json!({"a":1,"b":2}),
        json!({"a":[1,5],"b":[2,0,0]}),
        json!({"a":5}),
    );
    applies(json!([1, 2]), json!({"0":[1,{"z":0}]}), json!([{"z":0}, 2]));
    // Inserting absent keys: bare scalar or [v].
    applies(
        json!({}),
        json!({"a":"s","b":[[1]],"c":[{"d":null}],"e":null}),
        json!({"a":"s","b":[1],"c":{"d":null},"e":null}),
    );
    // Array tails: append, truncate, replace, tail at 0.
    applies(json!([1, 2]), json!({"2-":[3]}), json!([1, 2, 3]));
    applies(json!([1, 2]), json!({"0-":[]}), json!([]));
    applies(
        json!([1, 2, 3]),
        json!({"0":9,"1-":["x","y","z"]}),
        json!([9, "x", "y", "z"]),
    );
    applies(json!([]), json!({"0-":[7]}), json!([7]));
    // {} is no change on anything.
    for doc in [
        json!(null),
        json!(true),
        json!(1),
        json!("s"),
        json!([]),
        json!({}),
    ] {
        applies(doc.clone(), json!({}), doc);
    }
    // Nested deltas inside arrays and objects, deleting a key of an object in an array.
    applies(
        json!({"list":[{"a":1,"b":2},{"c":"x"}]}),
        json!({"list":{"0":{"b":[]},"1":{"c":{}}}}),
        json!({"list":[{"a":1},{"c":"x"}]}),
    );
    // A string edit applied to the empty string, and one copying nothing.
    applies(
        json!({"s":""}),
        json!({"s":["3+abc|",0,2]}),
        json!({"s":"abc"}),
    );
    applies(json!("abc"), json!(["3-", 0, 2]), json!(""));
}

#[test]
fn refuses_invalid_deltas() {
    let cases: Vec<(Value, Value, &str)> = vec![
        // Array forms.
        (json!({"a":1}), json!({"a":[1,2,3,4]}), "has 4 elements"),
        (json!({"a":1}), json!({"a":[1,0,1]}), "must be [x,0,0]"),
        (json!({"a":1}), json!({"a":[1,1,0]}), "must be [x,0,0]"),
        (json!({"a":"s"}), json!({"a":[5,0,2]}), "must be [x,0,0]"),
        (json!({"a":"s"}), json!({"a":["1=",0,3]}), "must be [x,0,0]"),
        (json!(1), json!([]), "the document itself cannot be deleted"),
        (
            json!(1),
            json!([1, 0, 0]),
            "the document itself cannot be deleted",
        ),
        // Objects on scalars, absent keys.
        (json!({"a":1}), json!({"a":{"b":1}}), "applies to a number"),
        (json!("s"), json!({"b":1}), "applies to a string"),
        (json!({}), json!({"a":[]}), "a deletion"),
        (json!({}), json!({"a":[1,2]}), "an [old, new] replacement"),
        (json!({}), json!({"a":[1,0,0]}), "a deletion"),
        (json!({}), json!({"a":["1+x|",0,2]}), "a string edit"),
        (json!({}), json!({"a":{}}), "an object delta"),
        // Array deltas.
        (json!([1, 2]), json!({"2":1}), "out of range"),
        (json!([1, 2]), json!({"x":1}), "not a decimal index"),
        (json!([1, 2]), json!({"01":1}), "not a decimal index"),
        (json!([1, 2]), json!({"-1":1}), "not a decimal index"),
        (json!([1, 2]), json!({"+1":1}), "not a decimal index"),
        (json!([1, 2]), json!({"":1}), "not a decimal index"),
        (
            json!([1, 2]),
            json!({"99999999999999999999999":1}),
            "not a decimal index",
        ),
        (json!([1, 2]), json!({"3-":[]}), "after the end"),
        (json!([1, 2]), json!({"0-":[],"1-":[]}), "second \"n-\""),
        (json!([1, 2]), json!({"1":5,"0-":[]}), "falls in the tail"),
        (json!([1, 2]), json!({"1-":{}}), "must be an array"),
        (json!([1, 2]), json!({"0":[]}), "array items are removed"),
        (
            json!([1, 2]),
            json!({"0":[1,0,0]}),
            "array items are removed",
        ),
        // String edits.
        (
            json!({"a":1}),
            json!({"a":["1=",0,2]}),
            "applies to a number",
        ),
        (json!("hello"), json!(["", 0, 2]), "empty"),
        (
            json!("hello"),
            json!(["4=", 0, 2]),
            "cover 4 bytes of the 5-byte",
        ),
        (json!("hello"), json!(["6=", 0, 2]), "runs past the end"),
        (json!("hello"), json!(["3=3-", 0, 2]), "runs past the end"),
        (
            json!("hello"),
            json!(["5=3+x|", 0, 2]),
            "runs past the end of the operations",
        ),
        (json!("hello"), json!(["5=1+xx", 0, 2]), "check byte"),
        (json!("hello"), json!(["5=1+x", 0, 2]), "check byte"),
        (json!("hello"), json!(["5*", 0, 2]), "unknown operation"),
        (json!("hello"), json!(["=5", 0, 2]), "decimal byte count"),
        (json!("hello"), json!(["5", 0, 2]), "end after a byte count"),
        (
            json!("hello"),
            json!(["99999999999999999999999=", 0, 2]),
            "overflows",
        ),
        (
            json!("hello"),
            json!(["18446744073709551615-", 0, 2]),
            "runs past the end",
        ),
        (json!("héllo"), json!(["2=1-3=", 0, 2]), "invalid UTF-8"),
        (json!("ab"), json!(["1=1+é|1=", 0, 2]), "check byte"),
    ];
    for (old, delta, expected) in cases {
        let message = refused(old.clone(), delta.clone()).to_string();
        assert!(
            message.contains(expected),
            "apply_delta({old}, {delta}): {message:?} does not mention {expected:?}"
        );
    }
}

#[test]
fn errors_name_the_place() {
    let err = refused(
        json!({"addr":{"lines":["a","b"]}, "x/y": {"~": 1}}),
        json!({"addr":{"lines":{"5":"c"}}}),
    );
    assert_eq!(
        err.to_string(),
        "key \"5\" of the array delta at \"/addr/lines\" is not valid for an array of 2 items: \
         the index is out of range"
    );
    assert!(
        matches!(err, DeltaError::InvalidArrayKey { ref path, len: 2, .. } if path == "/addr/lines")
    );
    let err = refused(json!({"x/y": {"~": 1}}), json!({"x/y":{"~":{"k":1}}}));
    assert_eq!(
        err.to_string(),
        "an object delta at \"/x~1y/~0\" applies to a number, which is neither an object nor an array"
    );
    let err = refused(json!("s"), json!(["2=", 0, 2]));
    assert!(err.to_string().contains("at the root"), "{err}");
}

/// Nested `n` levels deep: `{"k":{"k":…{"k":leaf}}}`.
fn nest(n: usize, leaf: Value) -> Value {
    // Not `json!`, which would serialize `inner` again at each level.
    (0..n).fold(leaf, |inner, _| {
        Value::Object(Map::from_iter([("k".to_owned(), inner)]))
    })
}

#[test]
fn nesting_is_bounded() {
    // A delta as deep as the limit applies; one level more is refused.
    let old = nest(MAX_NESTING, json!(1));
    applies(
        old.clone(),
        nest(MAX_NESTING, json!(2)),
        nest(MAX_NESTING, json!(2)),
    );
    let err = refused(
        nest(MAX_NESTING + 1, json!(1)),
        nest(MAX_NESTING + 1, json!(2)),
    );
    assert!(
        matches!(
            err,
            DeltaError::TooDeep {
                limit: MAX_NESTING,
                ..
            }
        ),
        "{err}"
    );
    // A delta nested far deeper than any document is refused without exhausting the stack.
    let deep = nest(100_000, json!(1));
    assert!(matches!(
        apply_delta(&deep, &deep),
        Err(DeltaError::TooDeep { .. })
    ));
    // Dropping a 100 000-level Value recurses in serde_json itself: leak it instead.
    std::mem::forget(deep);

    // create_delta on documents deeper than the limit replaces below it, and the result applies.
    let old = nest(MAX_NESTING + 20, json!("old"));
    let new = nest(MAX_NESTING + 20, json!("new"));
    let delta = create_delta(&old, &new);
    assert_eq!(delta, nest(MAX_NESTING, json!([nest(20, json!("new"))])));
    applies(old, delta, new);
}

#[test]
fn body_convenience() {
    assert_eq!(
        apply_delta_to_body(br#"{"a":1,"b":[1,2]}"#, br#"{"a":[],"b":{"2-":[3]}}"#).unwrap(),
        br#"{"b":[1,2,3]}"#
    );
    assert!(matches!(
        apply_delta_to_body(b"{", b"{}"),
        Err(DeltaError::InvalidBody(_))
    ));
    assert!(matches!(
        apply_delta_to_body(b"{}", b"{\"a\""),
        Err(DeltaError::InvalidJson(_))
    ));
}

/// Ten workload documents (about 1 KB each) under their IDs: a document of about 10 KB.
fn ten_kb_document() -> Map<String, Value> {
    (0..10)
        .map(|i| {
            let (id, body) = ferrolite_testkit::workload::make_doc(i, 1, "user");
            (id, Value::Object(body))
        })
        .collect()
}

#[test]
fn one_field_change_in_10kb_document_gives_small_delta() {
    let old = ten_kb_document();
    let old_size = serde_json::to_vec(&old).unwrap().len();
    assert!(
        (9_000..14_000).contains(&old_size),
        "document is {old_size} bytes"
    );
    let old = Value::Object(old);

    // A scalar field deep in one of the documents.
    let mut new = old.clone();
    new["user:00000004"]["address"]["city"] = json!("Lyon");
    let delta = create_delta(&old, &new);
    let size = serde_json::to_vec(&delta).unwrap().len();
    println!("one scalar field changed in a {old_size}-byte document: {size}-byte delta {delta}");
    assert!(size < 200, "{size}-byte delta: {delta}");
    assert_eq!(apply_delta(&old, &delta).unwrap(), new);

    // A word inserted into a long string: a string edit.
    let mut new = old.clone();
    let bio = new["user:00000007"]["bio"].as_str().unwrap().to_owned();
    assert!(bio.len() >= 60, "bio is {} bytes", bio.len());
    let (head, tail) = bio.split_at(bio.find(' ').unwrap());
    new["user:00000007"]["bio"] = json!(format!("{head} indeed{tail}"));
    let delta = create_delta(&old, &new);
    let size = serde_json::to_vec(&delta).unwrap().len();
    println!("a word inserted in one bio: {size}-byte delta {delta}");
    assert!(size < 200, "{size}-byte delta: {delta}");
    assert!(delta["user:00000007"]["bio"].is_array());
    assert_eq!(apply_delta(&old, &delta).unwrap(), new);
}
