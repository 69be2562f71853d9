//! Served databases, their users and sessions, and request authentication.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, PoisonError, Weak};
use std::time::{Duration, SystemTime};

use axum::http::{header, HeaderMap};
use base64::Engine as _;
use ferrolite::{Database, Properties};
use serde_json::Value;
use tokio::sync::watch;

use crate::channels::{
    Access, ChannelIndex, DocEntry, Grants, Routing, SyncRouter, Touched, UserContext,
};
use crate::error::ApiError;
use crate::principals::Principals;
pub(crate) use crate::principals::GUEST;

/// Sync Gateway's session cookie name.
pub(crate) const SESSION_COOKIE: &str = "SyncGatewaySession";
/// How long a session lives.
pub(crate) const SESSION_TTL: Duration = Duration::from_secs(24 * 60 * 60);

/// One served database.
#[derive(Debug)]
pub(crate) struct Db {
    pub(crate) name: String,
    pub(crate) database: Database,
    /// Microseconds since the epoch when the database was loaded.
    pub(crate) start_time: u64,
    /// Routes written revisions into channels: the configured sync function or the default.
    pub(crate) router: Arc<dyn SyncRouter>,
    /// The channels and grants of every document.
    pub(crate) channels: ChannelIndex,
    /// Users, roles and sessions.
    pub(crate) principals: Principals,
    /// Whether deltas are offered to and accepted from peers (`delta_sync.enabled`).
    pub(crate) deltas: bool,
    /// Bumped when the channel index gains entries or anyone's access may have changed.
    changed: watch::Sender<u64>,
    /// The replication feeds' signals.
    subscribers: Mutex<Vec<Weak<Subscriber>>>,
    /// Routings computed when a revision was checked, used when its commit is indexed:
    /// (document, revision) → routing.
    pending: Mutex<HashMap<(String, String), Routing>>,
    /// The last sequence indexed; held while indexing so commits are indexed in order.
    indexed: Mutex<u64>,
}

/// One replication feed's wake-up signal, and the channels it reads.
#[derive(Debug)]
pub(crate) struct Subscriber {
    changed: watch::Sender<u64>,
    /// The channels the feed last read (`None`: every document).
    readable: Mutex<Option<HashSet<String>>>,
}

impl Subscriber {
    /// Records the channels the feed reads now.
    pub(crate) fn set_readable(&self, readable: Option<HashSet<String>>) {
        *self.readable.lock().unwrap_or_else(PoisonError::into_inner) = readable;
    }

    /// A receiver woken by the changes the feed may read.
    pub(crate) fn subscribe(&self) -> watch::Receiver<u64> {
        self.changed.subscribe()
    }
}

/// Who made a request: a named user, or `None` for GUEST / the admin port.
pub(crate) type Principal = Option<String>;

impl Db {
    pub(crate) fn new(
        name: String,
        database: Database,
        router: Arc<dyn SyncRouter>,
        principals: Principals,
        deltas: bool,
    ) -> Db {
        let start_time = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map_or(0, |d| u64::try_from(d.as_micros()).unwrap_or(u64::MAX));
        Db {
            name,
            database,
            start_time,
            router,
            channels: ChannelIndex::default(),
            principals,
            deltas,
            changed: watch::channel(0).0,
            subscribers: Mutex::new(Vec::new()),
            pending: Mutex::new(HashMap::new()),
            indexed: Mutex::new(0),
        }
    }

    /// Signals every feed that the index or someone's access changed.
    pub(crate) fn notify_changed(&self) {
        self.changed.send_modify(|n| *n = n.wrapping_add(1));
        self.wake_subscribers(|_| true);
    }

    /// Signals the feeds that may read one of `channels`, and the REST feeds.
    fn notify_channels(&self, channels: &HashSet<String>) {
        self.changed.send_modify(|n| *n = n.wrapping_add(1));
        self.wake_subscribers(|readable| match readable {
            None => true,
            Some(readable) => channels.iter().any(|c| readable.contains(c)),
        });
    }

    fn wake_subscribers(&self, wants: impl Fn(Option<&HashSet<String>>) -> bool) {
        let mut subscribers = self
            .subscribers
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        subscribers.retain(|weak| {
            let Some(subscriber) = weak.upgrade() else {
                return false;
            };
            let readable = subscriber
                .readable
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            if wants(readable.as_ref()) {
                subscriber.changed.send_modify(|n| *n = n.wrapping_add(1));
            }
            true
        });
    }

    /// Wakes on every index or access change.
    pub(crate) fn subscribe(&self) -> watch::Receiver<u64> {
        self.changed.subscribe()
    }

    /// A signal for one replication feed, woken only by changes in the channels it last
    /// said it reads (see [`Subscriber::set_readable`]) and by access changes.
    pub(crate) fn subscriber(&self) -> Arc<Subscriber> {
        let subscriber = Arc::new(Subscriber {
            changed: watch::channel(0).0,
            readable: Mutex::new(None),
        });
        self.subscribers
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(Arc::downgrade(&subscriber));
        subscriber
    }

    /// Indexes every commit not indexed yet, in sequence order.
    pub(crate) fn catch_up(&self) -> Result<(), ferrolite::Error> {
        let mut indexed = self.indexed.lock().unwrap_or_else(PoisonError::into_inner);
        let mut channels = HashSet::new();
        let mut grants = false;
        let mut any = false;
        for change in self.database.changes(*indexed)? {
            let change = change?;
            *indexed = (*indexed).max(change.sequence);
            let touched = self.index_change(&change)?;
            channels.extend(touched.channels);
            grants |= touched.grants;
            any = true;
        }
        drop(indexed);
        if grants {
            self.notify_changed();
        } else if any {
            self.notify_channels(&channels);
        }
        Ok(())
    }

    fn index_change(&self, change: &ferrolite::Change) -> Result<Touched, ferrolite::Error> {
        let rev = change.rev.to_string();
        let pending = self
            .pending
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(&(change.id.clone(), rev.clone()));
        let routing = match pending {
            Some(routing) => routing,
            None => {
                let mut props = Properties::new();
                if change.deleted {
                    props.insert("_deleted".into(), Value::Bool(true));
                } else {
                    match self.database.document(&change.id)? {
                        Some(doc) if doc.revision_id() == &change.rev => {
                            props = doc.properties().clone();
                        }
                        // Changed again since: its later change is indexed instead.
                        _ => return Ok(Touched::default()),
                    }
                }
                props.insert("_id".into(), Value::String(change.id.clone()));
                props.insert("_rev".into(), Value::String(rev.clone()));
                // A revision the function refuses (written before it was configured, or by
                // the database's own API) is in no channel.
                self.router.route(&props, None, None).unwrap_or_default()
            }
        };
        if let Some(at) = routing.expiry {
            if let Err(e) = self.database.set_document_expiration(&change.id, Some(at)) {
                tracing::debug!(target: "ferrolite::gateway", id = %change.id, "expiry not set: {e}");
            }
        }
        Ok(self.update_index(
            &change.id,
            DocEntry {
                sequence: change.sequence,
                rev,
                deleted: change.deleted,
                channels: routing.channels,
                access: routing.access,
                roles: routing.roles,
            },
        ))
    }

    /// Indexes a document's latest change, recording the channels its grants took away from
    /// anyone.
    fn update_index(&self, id: &str, entry: DocEntry) -> Touched {
        // Only the grants are read (usually none): this runs for every indexed change.
        let old = self.channels.grants(id);
        let users = self.grant_holders(&old, &entry.grants());
        let sequence = entry.sequence;
        self.watching_access(&users, sequence, || self.channels.update(id, entry))
    }

    /// Forgets a purged document, recording the channels its grants gave.
    pub(crate) fn purge_from_index(&self, id: &str) {
        let Some(old) = self.channels.entry(id) else {
            return;
        };
        let users = self.grant_holders(&old.grants(), &Grants::default());
        let sequence = self.database.last_sequence().unwrap_or(old.sequence);
        self.watching_access(&users, sequence, || self.channels.remove(id));
    }

    /// The users whose access may change when a document's grants go from `old` to `new`.
    fn grant_holders(&self, old: &Grants, new: &Grants) -> Vec<String> {
        let mut users: HashSet<String> = HashSet::new();
        for principal in old.access.keys().chain(new.access.keys()) {
            if old.access.get(principal) == new.access.get(principal) {
                continue;
            }
            match principal.strip_prefix("role:") {
                Some(role) => users.extend(self.members_of(role)),
                None => {
                    users.insert(principal.clone());
                }
            }
        }
        for user in old.roles.keys().chain(new.roles.keys()) {
            if old.roles.get(user) != new.roles.get(user) {
                users.insert(user.clone());
            }
        }
        users.into_iter().collect()
    }

    /// The users (GUEST included) holding `role`, from the administrator or a `role()` grant.
    pub(crate) fn members_of(&self, role: &str) -> Vec<String> {
        let mut names = self.principals.user_names();
        names.push(GUEST.to_owned());
        names.retain(|name| self.roles_of(name).contains_key(role));
        names
    }

    /// The channels user `name` reads now (`*`: everything).
    fn readable_set(&self, name: &str) -> HashSet<String> {
        match self.access_of(&Some(name.to_owned())) {
            Access::All => HashSet::from(["*".to_owned()]),
            Access::Channels(channels) => channels.into_keys().collect(),
        }
    }

    /// Runs `change`, which may take channels away from `users`, and records each channel a
    /// user could read before and cannot read after as revoked at `sequence`: a client of
    /// that user reconnecting from an older checkpoint is then told to purge their
    /// documents.
    pub(crate) fn watching_access<T>(
        &self,
        users: &[String],
        sequence: u64,
        change: impl FnOnce() -> T,
    ) -> T {
        if users.is_empty() {
            return change();
        }
        let before: Vec<HashSet<String>> = users.iter().map(|u| self.readable_set(u)).collect();
        let out = change();
        for (user, before) in users.iter().zip(before) {
            let after = self.readable_set(user);
            if after.contains("*") {
                continue;
            }
            let lost: HashSet<String> = before.difference(&after).cloned().collect();
            if lost.is_empty() {
                continue;
            }
            tracing::debug!(target: "ferrolite::gateway", %user, ?lost, sequence, "channels revoked");
            if let Err(e) = self.principals.record_revoked(user, &lost, sequence) {
                tracing::warn!(target: "ferrolite::gateway", %user, "revocation not recorded: {e}");
            }
        }
        out
    }

    /// The channels user `name` lost at or after sequence `since` and cannot read now (`*`:
    /// it could read everything).
    pub(crate) fn revoked_since(&self, name: &str, since: u64) -> HashSet<String> {
        let Some(user) = self.principals.user(name) else {
            return HashSet::new();
        };
        let mut revoked: HashSet<String> = user
            .revoked_channels
            .into_iter()
            .filter(|(_, at)| *at >= since)
            .map(|(channel, _)| channel)
            .collect();
        if revoked.is_empty() {
            return revoked;
        }
        let now = self.readable_set(name);
        if now.contains("*") {
            return HashSet::new();
        }
        revoked.retain(|channel| !now.contains(channel));
        revoked
    }

    /// Records the routing of a revision about to be stored; its commit is indexed with it.
    pub(crate) fn expect_routing(&self, id: &str, rev: &str, routing: Routing) {
        self.pending
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert((id.to_owned(), rev.to_owned()), routing);
    }

    /// Indexes a revision just written through REST with its routing (computed with the
    /// writer's context), so the writer's next read sees it.
    pub(crate) fn index_written(&self, id: &str, rev: &str, routing: Routing) {
        self.expect_routing(id, rev, routing);
        if let Err(e) = self.catch_up() {
            tracing::warn!(target: "ferrolite::gateway", database = %self.name, "indexing failed: {e}");
        }
        // Indexed before the routing was recorded (by the indexer thread): index it again.
        let late = self
            .pending
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(&(id.to_owned(), rev.to_owned()));
        if let (Some(routing), Some(entry)) = (late, self.channels.entry(id)) {
            let same = entry.access == routing.access
                && entry.roles == routing.roles
                && (entry.channels == routing.channels
                    || (entry.deleted && routing.channels.is_empty()));
            if entry.rev == rev && !same {
                let touched = self.update_index(
                    id,
                    DocEntry {
                        channels: routing.channels,
                        access: routing.access,
                        roles: routing.roles,
                        ..entry
                    },
                );
                if touched.grants {
                    self.notify_changed();
                } else {
                    self.notify_channels(&touched.channels.into_iter().collect());
                }
            }
        }
    }

    /// Checks a name and password: `Ok(())`, or 401 "Invalid login".
    pub(crate) fn check_password(&self, name: &str, password: &str) -> Result<(), ApiError> {
        if self.principals.check_password(name, password) {
            Ok(())
        } else {
            Err(ApiError::unauthorized("Invalid login"))
        }
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
                .principals
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

    /// The roles of user `name`: role → sequence from which it holds it.
    pub(crate) fn roles_of(&self, name: &str) -> HashMap<String, u64> {
        let mut roles: HashMap<String, u64> = self.channels.granted_roles(name);
        if let Some(user) = self.principals.user(name) {
            for (role, seq) in user.admin_roles {
                let e = roles.entry(role).or_insert(seq);
                *e = (*e).min(seq);
            }
        }
        roles
    }

    /// What a public request of `principal` (`None` = GUEST) may read: its user's channels
    /// (`admin_channels`, `access()` grants, the same for each of its roles, and the public
    /// channel `!`; `*` = everything), each with the sequence it became readable at.
    pub(crate) fn access_of(&self, principal: &Principal) -> Access {
        let name = principal.as_deref().unwrap_or(GUEST);
        let mut channels: HashMap<String, u64> = HashMap::new();
        let mut add = |c: String, seq: u64| {
            let e = channels.entry(c).or_insert(seq);
            *e = (*e).min(seq);
        };
        add("!".to_owned(), 0);
        if let Some(user) = self.principals.user(name) {
            for (c, seq) in user.admin_channels {
                add(c, seq);
            }
        }
        for (c, seq) in self.channels.granted_channels(name) {
            add(c, seq);
        }
        for (role, role_seq) in self.roles_of(name) {
            let Some(r) = self.principals.role(&role) else {
                continue;
            };
            for (c, seq) in r.admin_channels {
                add(c, seq.max(role_seq));
            }
            for (c, seq) in self.channels.granted_channels(&format!("role:{role}")) {
                add(c, seq.max(role_seq));
            }
        }
        if channels.contains_key("*") {
            Access::All
        } else {
            Access::Channels(channels)
        }
    }

    /// The writing user as the sync function sees it (`None` on the admin port).
    pub(crate) fn user_context(&self, principal: &Principal) -> UserContext {
        let mut roles: Vec<String> = self
            .roles_of(principal.as_deref().unwrap_or(GUEST))
            .into_keys()
            .collect();
        roles.sort();
        let mut channels: Vec<String> = match self.access_of(principal) {
            Access::All => vec!["*".to_owned()],
            Access::Channels(m) => m.into_keys().collect(),
        };
        channels.sort();
        UserContext {
            name: principal.clone().unwrap_or_default(),
            roles,
            channels,
        }
    }

    /// Whether `access` may read document `id` (a tombstone keeps the channels of the
    /// revision it deleted).
    pub(crate) fn can_read_id(&self, access: &Access, id: &str) -> bool {
        *access == Access::All || access.can_read(&self.channels.channels_of(id))
    }

    pub(crate) fn guest_enabled(&self) -> bool {
        self.principals.user(GUEST).is_some_and(|g| !g.disabled)
    }
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

/// Shared by the listeners: the databases by name, and the replication sessions.
#[derive(Debug)]
pub(crate) struct Shared {
    pub(crate) databases: HashMap<String, Arc<Db>>,
    /// Becomes `true` when the gateway stops: sessions close with 1001.
    pub(crate) shutdown: watch::Receiver<bool>,
    /// The `_blipsync` sessions running.
    sessions: Mutex<tokio::task::JoinSet<()>>,
}

impl Shared {
    pub(crate) fn new(
        databases: HashMap<String, Arc<Db>>,
        shutdown: watch::Receiver<bool>,
    ) -> Shared {
        Shared {
            databases,
            shutdown,
            sessions: Mutex::new(tokio::task::JoinSet::new()),
        }
    }

    /// Runs a replication session, tracked so that a stopping gateway waits for it.
    pub(crate) fn spawn_session(
        &self,
        session: impl std::future::Future<Output = ()> + Send + 'static,
    ) {
        let mut sessions = self.sessions.lock().unwrap_or_else(PoisonError::into_inner);
        // Forget the sessions that ended.
        while sessions.try_join_next().is_some() {}
        sessions.spawn(session);
    }

    /// Waits up to `limit` for the sessions to end (they were told to close), then aborts
    /// the rest.
    pub(crate) async fn drain_sessions(&self, limit: Duration) {
        let mut sessions =
            std::mem::take(&mut *self.sessions.lock().unwrap_or_else(PoisonError::into_inner));
        let drain = async { while sessions.join_next().await.is_some() {} };
        if tokio::time::timeout(limit, drain).await.is_err() {
            sessions.abort_all();
        }
    }
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
    fn basic() {
        assert_eq!(
            parse_basic("Basic YWxpY2U6cGFzcw=="),
            Some(("alice".into(), "pass".into()))
        );
        assert_eq!(parse_basic("Bearer x"), None);
    }
}
