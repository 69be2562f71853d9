//! Arbitrary bytes as an old body and a JSON delta, through `apply_delta_to_body` (parse both,
//! apply, serialize): errors are fine, panics are not.
//!
//! Input: `old JSON` `0x00` `delta JSON`. Without a `0x00` byte the whole input is the delta,
//! applied to a fixed sample document, so plain JSON inputs exercise the delta code directly.

#![no_main]

use ferrolite_protocol::delta::apply_delta_to_body;
use libfuzzer_sys::fuzz_target;

/// The old document of the worked example in the protocol notes (`revisions-and-delta.md` §4.2),
/// with a long string for string edits.
const SAMPLE: &[u8] = br#"{"name":"Alice","age":30,"tags":["a","b","c"],"addr":{"city":"Paris","zip":"75001"},"pet":"cat","caption":"The quick brown fox jumps over the lazy dog, then naps in the warm afternoon sun."}"#;

fuzz_target!(|data: &[u8]| {
    let (old, delta) = match data.iter().position(|&b| b == 0) {
        Some(nul) => (&data[..nul], &data[nul + 1..]),
        None => (SAMPLE, data),
    };
    // No property beyond "no panic": re-parsing the output is not compared, because serde_json
    // without `float_roundtrip` may read a float back one ulp off.
    let _ = apply_delta_to_body(old, delta);
});
