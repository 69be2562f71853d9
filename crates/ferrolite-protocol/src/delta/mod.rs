//! JSON deltas in Fleece's JSONDelta format, the body of a `rev` message sent with `deltaSrc`
//! in delta sync.
//!
//! A delta is a JSON value Δ that turns an old value O into a new value N:
//!
//! | Δ | applied to O |
//! |---|---|
//! | a scalar `v` (only inside an object or array delta) | replace with `v` |
//! | `[v]` | replace with `v` (any type; needed for objects, arrays and top-level scalars) |
//! | `[]` | delete (inside an object: remove the key) |
//! | `[old, new]` | replace with `new` (JsonDiffPatch compatibility) |
//! | `[x, 0, 0]` | delete (JsonDiffPatch compatibility) |
//! | `["<ops>", 0, 2]` | edit the string O (below) |
//! | `{…}` on an object | apply `Δ[k]` to `O[k]` for each key; an absent key is inserted, which takes a scalar or `[v]` |
//! | `{…}` on an array | `"i"` keys apply `Δ["i"]` to item `i`; one `"n-"` key replaces the items from `n` on by its array (`"<len>-"` appends, `[]` truncates) |
//! | `{}` | no change |
//!
//! A string edit's `<ops>` run left to right over the **UTF-8 bytes** of the old string:
//! `n=` copies `n` bytes, `n-` skips `n` bytes, `n+<n bytes>|` inserts `n` bytes followed by a
//! mandatory `|` check byte; the copied and skipped counts must add up to the old string's length
//! exactly. For example `["10=5-3+red|47=4-4+cool|15=",0,2]` turns "The quick brown fox … warm
//! afternoon sun." into "The quick red fox … cool afternoon sun.".
//!
//! [`create_delta`] follows Fleece's generation rules (string edits come from a character-level
//! diff-match-patch diff, for new strings of at least 60 bytes, when shorter than the string);
//! [`apply_delta`] accepts every valid delta whoever made it and refuses the rest with a
//! [`DeltaError`]. See the project's protocol notes (`revisions-and-delta.md` §4) for the full
//! format and how deltas are negotiated.
//!
//! ```
//! use ferrolite_protocol::delta::{apply_delta, create_delta};
//! use serde_json::json;
//!
//! let old = json!({"name": "Alice", "age": 30, "addr": {"city": "Paris"}});
//! let new = json!({"name": "Alice", "age": 31, "addr": {"city": "Lyon"}});
//! let delta = create_delta(&old, &new);
//! assert_eq!(delta, json!({"age": 31, "addr": {"city": "Lyon"}}));
//! assert_eq!(apply_delta(&old, &delta).unwrap(), new);
//! ```

mod apply;
mod create;
mod error;
mod text;

pub use apply::{apply_delta, apply_delta_to_body};
pub use create::create_delta;
pub use error::DeltaError;

/// The deepest nesting of object deltas that [`apply_delta`] accepts; [`create_delta`] replaces
/// containers below this depth whole instead of diffing them. It bounds the recursion on
/// untrusted deltas and matches `serde_json`'s own parsing limit.
pub const MAX_NESTING: usize = 128;

/// Third item of a `[x, 0, 0]` deletion.
const DELETION_CODE: u64 = 0;

/// Third item of a `["<ops>", 0, 2]` string edit.
const STRING_EDIT_CODE: u64 = 2;
