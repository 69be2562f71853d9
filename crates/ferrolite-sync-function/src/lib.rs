//! Sync Gateway's sync function: what decides, for each new revision, its channels, the
//! access and roles it grants, its expiry, or that it is refused.
//!
//! [`SyncRouter`] is the contract the gateway calls on every write. Two routers implement
//! it:
//!
//! - [`DefaultSyncRouter`], Sync Gateway's default function,
//!   `function(doc){channel(doc.channels);}`, in Rust;
//! - [`JsSyncFunction`], a sync function written in JavaScript (Sync Gateway's `sync`
//!   setting), run by QuickJS engines on a small pool of worker threads, with Sync Gateway's
//!   helpers (`channel`, `access`, `role`, `expiry`, `reject`, `requireUser`, `requireRole`,
//!   `requireAccess`, `requireAdmin`), its error statuses and messages, a time limit per
//!   call and a memory limit per engine.
//!
//! ```
//! use ferrolite_sync_function::{JsOptions, JsSyncFunction, SyncRouter, UserContext};
//! use serde_json::json;
//!
//! let sync = JsSyncFunction::new(
//!     r#"function(doc, oldDoc, meta) {
//!         requireUser(doc.owner);
//!         channel("user." + doc.owner);
//!         access(doc.owner, "user." + doc.owner);
//!     }"#,
//!     JsOptions::default(),
//! )?;
//! let doc = json!({"_id": "p1", "owner": "alice"});
//! let doc = doc.as_object().unwrap();
//! let alice = UserContext { name: "alice".into(), ..UserContext::default() };
//! let routing = sync.route(doc, None, Some(&alice)).unwrap();
//! assert_eq!(routing.channels, ["user.alice"]);
//! assert_eq!(routing.access["alice"], ["user.alice"]);
//!
//! let bob = UserContext { name: "bob".into(), ..UserContext::default() };
//! let refused = sync.route(doc, None, Some(&bob)).unwrap_err();
//! assert_eq!((refused.status, refused.message.as_str()), (403, "sg wrong user"));
//! # Ok::<(), ferrolite_sync_function::CompileError>(())
//! ```

mod expiry;
mod js;
mod names;

pub use expiry::{parse_expiry, Expiry, MAX_RELATIVE_EXPIRY};
pub use js::{
    CompileError, JsOptions, JsSyncFunction, SyntaxError, DEFAULT_MEMORY_LIMIT, DEFAULT_TIME_LIMIT,
};
pub use names::{is_valid_channel_name, is_valid_principal_name, ROLE_PREFIX};

use std::collections::BTreeMap;
use std::fmt::Debug;
use std::time::SystemTime;

use serde_json::{Map, Value};

/// A document's properties: a JSON object.
pub type Properties = Map<String, Value>;

/// Where a revision goes and what it grants: the outcome of the sync function.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Routing {
    /// `channel()`: the channels of the revision, without duplicates, in first-seen order
    /// (`["*"]` alone when `*` was named).
    pub channels: Vec<String>,
    /// `access()`: channels granted to each principal, a user name or `role:<name>`
    /// (`*` is never granted this way).
    pub access: BTreeMap<String, Vec<String>>,
    /// `role()`: roles granted to each user, by role name (without the `role:` prefix).
    pub roles: BTreeMap<String, Vec<String>>,
    /// `expiry()`: when the document expires.
    pub expiry: Option<SystemTime>,
}

/// The writing user, as the sync function's `require*` helpers see it; a write on the admin
/// port has none, and every `require*` check passes.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct UserContext {
    /// The user's name (`""` for GUEST).
    pub name: String,
    /// The user's roles (plain names).
    pub roles: Vec<String>,
    /// The channels the user may read.
    pub channels: Vec<String>,
}

/// A refused write, as the sync function's `throw({forbidden: …})` or `reject()` produces.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{status} {message}")]
pub struct Reject {
    /// The HTTP status (≥ 400; 403 for `forbidden`).
    pub status: u16,
    /// The reason reported to the writer.
    pub message: String,
}

/// Decides the channels and grants of each new revision, or refuses it: the role of Sync
/// Gateway's sync function.
///
/// [`DefaultSyncRouter`] is Sync Gateway's default, `function(doc){channel(doc.channels);}`;
/// [`JsSyncFunction`] runs a JavaScript sync function.
pub trait SyncRouter: Debug + Send + Sync {
    /// The routing of `doc` (the new revision's properties plus `_id`, `_rev`, and
    /// `_deleted: true` for a deletion), given `old` (the current revision's properties
    /// plus `_id`; `None` for a new document) and the writing `user` (`None` on the admin
    /// port), or why the write is refused.
    fn route(
        &self,
        doc: &Properties,
        old: Option<&Properties>,
        user: Option<&UserContext>,
    ) -> Result<Routing, Reject>;
}

/// Sync Gateway's default sync function: the `channels` property, a string or an array of
/// strings, names the channels; anything else (absent, `null`, other types) routes to no
/// channel. Non-string array items and invalid names (empty, or with a comma) are ignored.
#[derive(Debug, Clone, Copy, Default)]
pub struct DefaultSyncRouter;

impl SyncRouter for DefaultSyncRouter {
    fn route(
        &self,
        doc: &Properties,
        _old: Option<&Properties>,
        _user: Option<&UserContext>,
    ) -> Result<Routing, Reject> {
        let channels = match doc.get("channels") {
            Some(Value::String(name)) => names::channel_set([name.as_str()]),
            Some(Value::Array(items)) => names::channel_set(items.iter().filter_map(Value::as_str)),
            _ => Vec::new(),
        };
        Ok(Routing {
            channels,
            ..Routing::default()
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn route(doc: Value) -> Vec<String> {
        let Value::Object(props) = doc else {
            panic!("not an object")
        };
        DefaultSyncRouter
            .route(&props, None, None)
            .map(|r| r.channels)
            .unwrap_or_default()
    }

    #[test]
    fn default_router() {
        assert_eq!(route(json!({"channels": "a"})), ["a"]);
        assert_eq!(
            route(json!({"channels": ["a", "b", "a", 3, "", "c,d"]})),
            ["a", "b"]
        );
        assert!(route(json!({"channels": null})).is_empty());
        assert!(route(json!({"channels": {"a": 1}})).is_empty());
        assert!(route(json!({"x": 1})).is_empty());
        assert_eq!(route(json!({"channels": ["a", "*"]})), ["*"]);
    }
}
