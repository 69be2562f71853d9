//! Served databases, their users and sessions, and request authentication.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, SystemTime};

use axum::http::{header, HeaderMap};
use base64::Engine as _;
use ferrolite::Database;

use crate::channels::{Access, ChannelIndex, DefaultSyncRouter, SyncRouter};
use crate::config::{DatabaseConfig, UserConfig};
use crate::error::ApiError;

/// Sync Gateway's session cookie name.
pub(crate) const SESSION_COOKIE: &str = "SyncGatewaySession";
/// How long a session lives.
pub(crate) const SESSION_TTL: Duration = Duration::from_secs(24 * 60 * 60);
/// The anonymous user's name in the API and the configuration.
pub(crate) const GUEST: &str = "GUEST";

/// A user (or `GUEST`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct User {
    pub(crate) password: Option<String>,
    pub(crate) admin_channels: Vec<String>,
    pub(crate) disabled: bool,
    pub(crate) email: Option<String>,
}

#[derive(Debug, Clone)]
pub(crate) struct Session {
    pub(crate) user: String,
    pub(crate) expires: SystemTime,
}

/// One served database.
#[derive(Debug)]
pub(crate) struct Db {
    pub(crate) name: String,
    pub(crate) database: Database,
    /// The configuration (sync function, delta sync: stored for later issues).
    #[expect(
        dead_code,
        reason = "stored only until the sync function and delta sync land"
    )]
    pub(crate) config: DatabaseConfig,
    /// Microseconds since the epoch when the database was loaded.
    pub(crate) start_time: u64,
    /// Routes written revisions into channels (the default sync function for now).
    pub(crate) router: Arc<dyn SyncRouter>,
    /// The channels of every document.
    pub(crate) channels: ChannelIndex,
    users: Mutex<HashMap<String, User>>,
    sessions: Mutex<HashMap<String, Session>>,
}

/// Who made a request: a named user, or `None` for GUEST / the admin port.
pub(crate) type Principal = Option<String>;

impl Db {
    pub(crate) fn new(name: String, database: Database, config: DatabaseConfig) -> Db {
        let mut users = HashMap::new();
        users.insert(
            GUEST.to_owned(),
            User {
                disabled: true,
                ..User::default()
            },
        );
        for (user, c) in &config.users {
            users.insert(user.clone(), user_from_config(user, c));
        }
        let start_time = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map_or(0, |d| u64::try_from(d.as_micros()).unwrap_or(u64::MAX));
        Db {
            name,
            database,
            config,
            start_time,
            router: Arc::new(DefaultSyncRouter),
            channels: ChannelIndex::default(),
            users: Mutex::new(users),
            sessions: Mutex::new(HashMap::new()),
        }
    }

    pub(crate) fn users(&self) -> MutexGuard<'_, HashMap<String, User>> {
        self.users.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn sessions(&self) -> MutexGuard<'_, HashMap<String, Session>> {
        self.sessions.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Checks a name and password: `Ok(())`, or 401 "Invalid login".
    pub(crate) fn check_password(&self, name: &str, password: &str) -> Result<(), ApiError> {
        let users = self.users();
        match users.get(name) {
            Some(u)
                if name != GUEST
                    && !u.disabled
                    && u.password
                        .as_deref()
                        .is_some_and(|p| constant_eq(p, password)) =>
            {
                Ok(())
            }
            _ => Err(ApiError::unauthorized("Invalid login")),
        }
    }

    /// Starts a session for `user`: its ID and expiry.
    pub(crate) fn create_session(&self, user: &str, ttl: Duration) -> (String, SystemTime) {
        let id = new_session_id();
        let expires = SystemTime::now() + ttl;
        self.sessions().insert(
            id.clone(),
            Session {
                user: user.to_owned(),
                expires,
            },
        );
        (id, expires)
    }

    /// The user of a live session whose user is still enabled.
    pub(crate) fn session_user(&self, id: &str) -> Option<String> {
        let mut sessions = self.sessions();
        let session = sessions.get(id)?.clone();
        if session.expires <= SystemTime::now() {
            sessions.remove(id);
            return None;
        }
        drop(sessions);
        let users = self.users();
        match users.get(&session.user) {
            Some(u) if !u.disabled => Some(session.user),
            _ => None,
        }
    }

    pub(crate) fn delete_session(&self, id: &str) -> bool {
        self.sessions().remove(id).is_some()
    }

    pub(crate) fn delete_sessions_of(&self, user: &str) {
        self.sessions().retain(|_, s| s.user != user);
    }

    /// Authenticates a public request: Basic, then the session cookie, then GUEST.
    pub(crate) fn authenticate(&self, headers: &HeaderMap) -> Result<Principal, ApiError> {
        if let Some(auth) = headers.get(header::AUTHORIZATION) {
            let (name, password) = auth
                .to_str()
                .ok()
                .and_then(parse_basic)
                .ok_or_else(|| ApiError::unauthorized("Invalid login"))?;
            self.check_password(&name, &password)?;
            return Ok(Some(name));
        }
        if let Some(id) = cookie(headers, SESSION_COOKIE) {
            return self
                .session_user(&id)
                .map(Some)
                .ok_or_else(|| ApiError::unauthorized("Session Invalid"));
        }
        if self.guest_enabled() {
            Ok(None)
        } else {
            Err(ApiError::unauthorized("Login required"))
        }
    }

    /// What a public request of `principal` (`None` = GUEST) may read: its user's
    /// `admin_channels` (`*` = everything) and the public channel `!`.
    pub(crate) fn access_of(&self, principal: &Principal) -> Access {
        let name = principal.as_deref().unwrap_or(GUEST);
        let users = self.users();
        Access::of_channels(users.get(name).map_or(&[][..], |u| &u.admin_channels))
    }

    /// Whether `access` may read the live document `doc`.
    pub(crate) fn can_read(&self, access: &Access, doc: &ferrolite::Document) -> bool {
        *access == Access::All || access.can_read(&self.channels.channels_of(doc, &*self.router))
    }

    /// Whether `access` may read document `id`: its current revision's channels, or a
    /// tombstone's last channels.
    pub(crate) fn can_read_id(&self, access: &Access, id: &str) -> bool {
        if *access == Access::All {
            return true;
        }
        match self.database.document(id) {
            Ok(Some(doc)) => self.can_read(access, &doc),
            Ok(None) => access.can_read(&self.channels.last_channels(id)),
            Err(_) => false,
        }
    }

    pub(crate) fn guest_enabled(&self) -> bool {
        self.users().get(GUEST).is_some_and(|g| !g.disabled)
    }
}

fn user_from_config(name: &str, c: &UserConfig) -> User {
    User {
        password: c.password.clone(),
        admin_channels: c.admin_channels.clone(),
        // GUEST is disabled unless configured otherwise; other users are enabled.
        disabled: c.disabled.unwrap_or(name == GUEST),
        email: c.email.clone(),
    }
}

/// Compares without an early exit on the first differing byte.
fn constant_eq(a: &str, b: &str) -> bool {
    a.len() == b.len()
        && a.bytes()
            .zip(b.bytes())
            .fold(0u8, |acc, (x, y)| acc | (x ^ y))
            == 0
}

/// 160 random bits as 40 hex digits.
fn new_session_id() -> String {
    let a = uuid::Uuid::new_v4().simple().to_string();
    let b = uuid::Uuid::new_v4().simple().to_string();
    // Skip each UUID's version nibble (position 12) so every digit is random.
    let random: String = a
        .chars()
        .enumerate()
        .chain(b.chars().enumerate())
        .filter(|(i, _)| *i != 12 && *i != 16)
        .map(|(_, c)| c)
        .collect();
    random.chars().take(40).collect()
}

/// Name and password of an `Authorization: Basic …` value.
pub(crate) fn parse_basic(value: &str) -> Option<(String, String)> {
    let (scheme, encoded) = value.trim().split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(encoded.trim())
        .ok()?;
    let text = String::from_utf8(decoded).ok()?;
    let (name, password) = text.split_once(':')?;
    Some((name.to_owned(), password.to_owned()))
}

/// A cookie's value from the `Cookie` headers.
pub(crate) fn cookie(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(n, _)| *n == name)
        .map(|(_, v)| v.to_owned())
}

/// An HTTP date (RFC 7231 IMF-fixdate), for `Expires`.
pub(crate) fn http_date(time: SystemTime) -> String {
    let secs = time
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let days = i64::try_from(secs / 86_400).unwrap_or(0);
    let rem = secs % 86_400;
    let (h, m, s) = (rem / 3600, (rem % 3600) / 60, rem % 60);
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    let weekday = ["Thu", "Fri", "Sat", "Sun", "Mon", "Tue", "Wed"]
        [usize::try_from(days.rem_euclid(7)).unwrap_or(0)];
    let month_name = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ][usize::try_from(month - 1).unwrap_or(0)];
    format!("{weekday}, {d:02} {month_name} {year} {h:02}:{m:02}:{s:02} GMT")
}

/// Shared by the listeners: the databases by name.
#[derive(Debug, Default)]
pub(crate) struct Shared {
    pub(crate) databases: HashMap<String, Arc<Db>>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates() {
        assert_eq!(
            http_date(SystemTime::UNIX_EPOCH),
            "Thu, 01 Jan 1970 00:00:00 GMT"
        );
        assert_eq!(
            http_date(SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000)),
            "Tue, 14 Nov 2023 22:13:20 GMT"
        );
    }

    #[test]
    fn session_ids_are_40_hex() {
        let id = new_session_id();
        assert_eq!(id.len(), 40);
        assert!(id.chars().all(|c| c.is_ascii_hexdigit()));
    }

    #[test]
    fn basic() {
        assert_eq!(
            parse_basic("Basic YWxpY2U6cGFzcw=="),
            Some(("alice".into(), "pass".into()))
        );
        assert_eq!(parse_basic("Bearer x"), None);
    }
}
