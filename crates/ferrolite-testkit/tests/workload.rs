//! The workload generator against the reference output of the JavaScript generator
//! (`peer-pouchdb/lib/docs.js`), kept in `testdata/` as one JSON document per line.

use ferrolite_testkit::workload::{doc_id, make_doc, make_doc_json};

/// Compares the first documents of `(seed 1, prefix)` with a reference file, line by line.
fn assert_matches_reference(prefix: &str, reference: &str, expected_lines: usize) {
    let lines: Vec<&str> = reference.lines().collect();
    assert_eq!(
        lines.len(),
        expected_lines,
        "reference file for prefix {prefix}"
    );
    for (i, want) in (0u32..).zip(lines) {
        let got = make_doc_json(i, 1, prefix);
        assert_eq!(got, want, "document {i} of prefix {prefix}");
    }
}

#[test]
fn user_seed1_first100_match_the_javascript_generator() {
    assert_matches_reference(
        "user",
        include_str!("../testdata/workload-user-seed1-first100.jsonl"),
        100,
    );
}

#[test]
fn fresh_seed1_first20_match_the_javascript_generator() {
    assert_matches_reference(
        "fresh",
        include_str!("../testdata/workload-fresh-seed1-first20.jsonl"),
        20,
    );
}

#[test]
fn ids_are_prefix_and_eight_digits() {
    assert_eq!(doc_id("user", 0), "user:00000000");
    assert_eq!(doc_id("fresh", 12_345), "fresh:00012345");
    assert_eq!(doc_id("user", 123_456_789), "user:123456789");
}

#[test]
fn make_doc_splits_off_the_id() {
    let (id, body) = make_doc(3, 1, "user");
    assert_eq!(id, "user:00000003");
    assert!(!body.contains_key("_id"));
    assert_eq!(body["type"], "user");
    assert_eq!(body["version"], 1);
    assert!(body["address"]["geo"]["lat"].is_f64());
}
