//! Sync Gateway's sync function: what decides, for each new revision, its channels, the
//! access and roles it grants, its expiry, or that it is refused.
//!
//! [`SyncRouter`] is the contract the gateway calls on every write; [`DefaultSyncRouter`] is
//! Sync Gateway's default function, `function(doc){channel(doc.channels);}`, and needs no
//! JavaScript.

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
/// the JavaScript sync function implements the same trait.
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
/// channel. Non-string array items and empty names are ignored.
#[derive(Debug, Clone, Copy, Default)]
pub struct DefaultSyncRouter;

impl SyncRouter for DefaultSyncRouter {
    fn route(
        &self,
        doc: &Properties,
        _old: Option<&Properties>,
        _user: Option<&UserContext>,
    ) -> Result<Routing, Reject> {
        let mut channels: Vec<String> = Vec::new();
        let mut add = |name: &str| {
            if !name.is_empty() && !channels.iter().any(|c| c == name) {
                channels.push(name.to_owned());
            }
        };
        match doc.get("channels") {
            Some(Value::String(name)) => add(name),
            Some(Value::Array(items)) => items.iter().filter_map(Value::as_str).for_each(add),
            _ => {}
        }
        // `channel("*")` collapses the set to the star alone.
        if channels.iter().any(|c| c == "*") {
            channels = vec!["*".to_owned()];
        }
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
            route(json!({"channels": ["a", "b", "a", 3, ""]})),
            ["a", "b"]
        );
        assert!(route(json!({"channels": null})).is_empty());
        assert!(route(json!({"channels": {"a": 1}})).is_empty());
        assert!(route(json!({"x": 1})).is_empty());
        assert_eq!(route(json!({"channels": ["a", "*"]})), ["*"]);
    }
}
