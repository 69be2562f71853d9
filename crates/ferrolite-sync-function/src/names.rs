//! Channel and principal names, and the routing built from what a sync function asked for.

use std::collections::BTreeMap;
use std::time::SystemTime;

use serde_json::Value;

use crate::expiry::{parse_expiry, Expiry};
use crate::{Reject, Routing};

/// The prefix that marks a role among principal names (`access()`) and in `role()` grants.
pub const ROLE_PREFIX: &str = "role:";

/// Whether `name` can name a channel: any non-empty string without a comma. `*` (all
/// channels) and `!` (the public channel) are valid names.
pub fn is_valid_channel_name(name: &str) -> bool {
    !name.is_empty() && !name.contains(',')
}

/// Whether `name` can name a user or a role (without the `role:` prefix): 1 to 239 bytes,
/// at least one letter or digit, and none of `/ : , `` ` ``.
pub fn is_valid_principal_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 239
        && name.chars().any(char::is_alphanumeric)
        && !name.contains(['/', ':', ',', '`'])
}

/// Channel names in first-seen order without duplicates; invalid names are dropped, and a
/// `*` among them leaves `*` alone.
pub(crate) fn channel_set<'a>(names: impl IntoIterator<Item = &'a str>) -> Vec<String> {
    let mut channels: Vec<String> = Vec::new();
    for name in names {
        if !is_valid_channel_name(name) {
            tracing::warn!(target: "ferrolite::gateway", channel = name, "sync function: invalid channel name ignored");
        } else if !channels.iter().any(|c| c == name) {
            channels.push(name.to_owned());
        }
    }
    if channels.iter().any(|c| c == "*") {
        channels = vec!["*".to_owned()];
    }
    channels
}

/// What the JavaScript helpers collected during one call.
#[derive(Debug, Default)]
pub(crate) struct Collected {
    /// `channel()` arguments, as strings.
    pub(crate) channels: Vec<String>,
    /// `access(principals, channels)` calls.
    pub(crate) access: Vec<(Vec<String>, Vec<String>)>,
    /// `role(users, roles)` calls.
    pub(crate) roles: Vec<(Vec<String>, Vec<String>)>,
    /// `expiry()` arguments (numbers and strings), in call order.
    pub(crate) expiry: Vec<Value>,
    /// The first rejection (`reject()` or a thrown `forbidden`/`unauthorized`/exception).
    pub(crate) rejected: Option<Reject>,
    /// The exception that ended the function, for the log.
    pub(crate) exception: Option<String>,
    /// Ignored arguments, for the log.
    pub(crate) warnings: Vec<String>,
    /// `console.log()` lines: level and text.
    pub(crate) logs: Vec<(String, String)>,
}

impl Collected {
    /// Reads the JSON the JavaScript side returns; `None` if it is not of the expected shape.
    pub(crate) fn from_json(text: &str) -> Option<Collected> {
        let Value::Object(mut o) = serde_json::from_str(text).ok()? else {
            return None;
        };
        let strings = |v: &Value| -> Option<Vec<String>> {
            v.as_array()?
                .iter()
                .map(|s| s.as_str().map(str::to_owned))
                .collect()
        };
        let pairs = |v: &Value| -> Option<Vec<(Vec<String>, Vec<String>)>> {
            v.as_array()?
                .iter()
                .map(|pair| match pair.as_array()?.as_slice() {
                    [a, b] => Some((strings(a)?, strings(b)?)),
                    _ => None,
                })
                .collect()
        };
        let rejected = match o.get("rejected")? {
            Value::Null => None,
            r => Some(Reject {
                status: u16::try_from(r.get("status")?.as_u64()?).ok()?,
                message: r.get("message")?.as_str()?.to_owned(),
            }),
        };
        let Value::Array(expiry) = o.remove("expiry")? else {
            return None;
        };
        Some(Collected {
            channels: strings(o.get("channels")?)?,
            access: pairs(o.get("access")?)?,
            roles: pairs(o.get("roles")?)?,
            expiry,
            rejected,
            exception: o.get("exception")?.as_str().map(str::to_owned),
            warnings: strings(o.get("warnings")?)?,
            logs: pairs_of_strings(o.get("logs")?)?,
        })
    }

    /// The routing these calls ask for (or the rejection), with names checked: an invalid
    /// principal name or a `role()` entry without the `role:` prefix refuses the write
    /// with 500.
    pub(crate) fn into_routing(self, now: SystemTime) -> Result<Routing, Reject> {
        if let Some(reject) = self.rejected {
            return Err(reject);
        }
        let mut access: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for (principals, channels) in &self.access {
            let channels: Vec<&str> = channels
                .iter()
                .map(String::as_str)
                .filter(|c| *c != "*")
                .collect();
            let channels = channel_set(channels);
            for principal in principals {
                let name = principal.strip_prefix(ROLE_PREFIX).unwrap_or(principal);
                if !is_valid_principal_name(name) {
                    return Err(invalid("access()", principal));
                }
                if !channels.is_empty() {
                    add_all(access.entry(principal.clone()).or_default(), &channels);
                }
            }
        }
        let mut roles: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for (users, granted) in &self.roles {
            let mut names = Vec::with_capacity(granted.len());
            for role in granted {
                match role.strip_prefix(ROLE_PREFIX) {
                    Some(name) if is_valid_principal_name(name) => names.push(name.to_owned()),
                    _ => return Err(invalid("role()", role)),
                }
            }
            for user in users {
                if !is_valid_principal_name(user) {
                    return Err(invalid("role()", user));
                }
                if !names.is_empty() {
                    add_all(roles.entry(user.clone()).or_default(), &names);
                }
            }
        }
        let mut expiry = None;
        for value in &self.expiry {
            match parse_expiry(value, now) {
                Some(Expiry::Never) => expiry = None,
                Some(Expiry::At(at)) => expiry = Some(at),
                None => {
                    tracing::warn!(target: "ferrolite::gateway", %value, "sync function: invalid expiry ignored");
                }
            }
        }
        Ok(Routing {
            channels: channel_set(self.channels.iter().map(String::as_str)),
            access,
            roles,
            expiry,
        })
    }
}

fn pairs_of_strings(value: &Value) -> Option<Vec<(String, String)>> {
    value
        .as_array()?
        .iter()
        .map(|pair| match pair.as_array()?.as_slice() {
            [Value::String(a), Value::String(b)] => Some((a.clone(), b.clone())),
            _ => None,
        })
        .collect()
}

fn add_all(into: &mut Vec<String>, names: &[String]) {
    for name in names {
        if !into.contains(name) {
            into.push(name.clone());
        }
    }
}

fn invalid(helper: &str, name: &str) -> Reject {
    tracing::warn!(target: "ferrolite::gateway", helper, name, "sync function: invalid principal name");
    Reject {
        status: 500,
        message: "Error in JS sync function".to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        assert!(is_valid_channel_name("!"));
        assert!(is_valid_channel_name("*"));
        assert!(is_valid_channel_name("user.demo@example.com"));
        assert!(!is_valid_channel_name(""));
        assert!(!is_valid_channel_name("a,b"));
        assert!(is_valid_principal_name("demo@example.com"));
        assert!(!is_valid_principal_name(""));
        assert!(!is_valid_principal_name("role:x"));
        assert!(!is_valid_principal_name("a/b"));
        assert!(!is_valid_principal_name("..."));
        assert!(!is_valid_principal_name(&"a".repeat(240)));
    }

    #[test]
    fn channel_sets() {
        assert_eq!(channel_set(["b", "a", "b", "", "x,y"]), ["b", "a"]);
        assert_eq!(channel_set(["a", "*", "b"]), ["*"]);
        assert!(channel_set([]).is_empty());
    }
}
