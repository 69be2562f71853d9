//! Users, roles and sessions of one database: kept in memory, saved to a JSON file next to
//! the database (written to a temporary file, synced, then renamed over the old one, so a
//! crash leaves either the old or the new file), passwords as salted Argon2id hashes.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::PathBuf;
use std::sync::{mpsc, Mutex, MutexGuard, OnceLock, PoisonError};
use std::time::{Duration, SystemTime};

use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::Argon2;
use password_hash::rand_core::{OsRng, RngCore};
use serde::{Deserialize, Serialize};
use sha1::{Digest, Sha1};

/// The anonymous user's name in the API and the configuration.
pub(crate) const GUEST: &str = "GUEST";

/// A user (or `GUEST`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct User {
    /// The PHC string of the password's Argon2id hash.
    #[serde(default)]
    pub(crate) password_hash: Option<String>,
    /// Channels granted by the administrator, each with the sequence it was granted at.
    #[serde(default)]
    pub(crate) admin_channels: BTreeMap<String, u64>,
    /// Roles granted by the administrator, each with the sequence it was granted at.
    #[serde(default)]
    pub(crate) admin_roles: BTreeMap<String, u64>,
    #[serde(default)]
    pub(crate) disabled: bool,
    #[serde(default)]
    pub(crate) email: Option<String>,
    /// Channels the user lost, each with the sequence at which it last lost it (`*`: it
    /// could read everything), so that a client reconnecting from an older checkpoint is
    /// told to purge their documents.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub(crate) revoked_channels: BTreeMap<String, u64>,
}

impl User {
    /// Records that the user lost `channel` at `sequence` (the latest loss is kept).
    pub(crate) fn revoke(&mut self, channel: String, sequence: u64) {
        let at = self.revoked_channels.entry(channel).or_insert(0);
        *at = (*at).max(sequence);
    }
}

/// A role: channels its members may read.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Role {
    /// Channels granted by the administrator, each with the sequence it was granted at.
    #[serde(default)]
    pub(crate) admin_channels: BTreeMap<String, u64>,
}

/// A login session.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Session {
    pub(crate) user: String,
    /// Seconds since the Unix epoch.
    pub(crate) expires: u64,
}

/// What is saved.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct Saved {
    #[serde(default)]
    users: BTreeMap<String, User>,
    #[serde(default)]
    roles: BTreeMap<String, Role>,
    #[serde(default)]
    sessions: BTreeMap<String, Session>,
}

/// Why the principals file could not be loaded or saved.
#[derive(Debug, thiserror::Error)]
pub(crate) enum PrincipalsError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path} is not a valid users file: {source}")]
    Parse {
        path: PathBuf,
        source: serde_json::Error,
    },
    #[error("cannot save {path}: {source}")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// The users, roles and sessions of a database.
#[derive(Debug)]
pub(crate) struct Principals {
    saved: Mutex<Saved>,
    file: Option<PathBuf>,
    /// Passwords verified since start, as keyed digests, so that every request does not pay
    /// for a slow hash: user → SHA-1(key ‖ password).
    verified: Mutex<HashMap<String, [u8; 20]>>,
    cache_key: [u8; 32],
}

fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

type HashJob = Box<dyn FnOnce() + Send>;

/// Runs `work` on the one thread that hashes passwords, or in place if that thread cannot be
/// started. Argon2id takes 19 MiB per hash: done on whichever thread asks, every thread's
/// allocator arena would keep that much; done on one thread, one arena does.
fn on_hashing_thread<T: Send + 'static>(work: impl FnOnce() -> T + Send + 'static, failed: T) -> T {
    static HASHER: OnceLock<Option<Mutex<mpsc::Sender<HashJob>>>> = OnceLock::new();
    let hasher = HASHER.get_or_init(|| {
        let (tx, rx) = mpsc::channel::<HashJob>();
        std::thread::Builder::new()
            .name("ferrolite-password-hash".into())
            .spawn(move || {
                while let Ok(job) = rx.recv() {
                    job();
                }
            })
            .ok()
            .map(|_| Mutex::new(tx))
    });
    let Some(hasher) = hasher else {
        return work();
    };
    let (done_tx, done_rx) = mpsc::channel();
    let job: HashJob = Box::new(move || {
        let _ = done_tx.send(work());
    });
    let sent = hasher
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .send(job)
        .is_ok();
    if !sent {
        return failed;
    }
    done_rx.recv().unwrap_or(failed)
}

/// Hashes a password with Argon2id and a random salt.
pub(crate) fn hash_password(password: &str) -> Option<String> {
    let password = password.to_owned();
    on_hashing_thread(
        move || {
            let salt = SaltString::generate(&mut OsRng);
            Argon2::default()
                .hash_password(password.as_bytes(), &salt)
                .ok()
                .map(|h| h.to_string())
        },
        None,
    )
}

/// Whether `password` matches the PHC string `hash`.
pub(crate) fn verify_password(hash: &str, password: &str) -> bool {
    let (hash, password) = (hash.to_owned(), password.to_owned());
    on_hashing_thread(
        move || {
            PasswordHash::new(&hash).is_ok_and(|parsed| {
                Argon2::default()
                    .verify_password(password.as_bytes(), &parsed)
                    .is_ok()
            })
        },
        false,
    )
}

/// Compares without an early exit on the first differing byte.
fn constant_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

impl Principals {
    /// Loads the principals saved in `file` (none yet if it does not exist); `None` keeps
    /// them in memory only.
    pub(crate) fn open(file: Option<PathBuf>) -> Result<Principals, PrincipalsError> {
        let saved = match &file {
            Some(path) => match std::fs::read(path) {
                Ok(bytes) => {
                    serde_json::from_slice(&bytes).map_err(|source| PrincipalsError::Parse {
                        path: path.clone(),
                        source,
                    })?
                }
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => Saved::default(),
                Err(source) => {
                    return Err(PrincipalsError::Read {
                        path: path.clone(),
                        source,
                    })
                }
            },
            None => Saved::default(),
        };
        let mut cache_key = [0u8; 32];
        OsRng.fill_bytes(&mut cache_key);
        let principals = Principals {
            saved: Mutex::new(saved),
            file,
            verified: Mutex::new(HashMap::new()),
            cache_key,
        };
        {
            let mut saved = principals.lock();
            saved.users.entry(GUEST.to_owned()).or_insert_with(|| User {
                disabled: true,
                ..User::default()
            });
            let now = now_secs();
            saved.sessions.retain(|_, s| s.expires > now);
        }
        Ok(principals)
    }

    fn lock(&self) -> MutexGuard<'_, Saved> {
        self.saved.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn verified(&self) -> MutexGuard<'_, HashMap<String, [u8; 20]>> {
        self.verified.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Saves the current state (atomically replacing the file).
    fn save(&self, saved: &Saved) -> Result<(), PrincipalsError> {
        let Some(path) = &self.file else {
            return Ok(());
        };
        let write = |path: &PathBuf| -> std::io::Result<()> {
            let tmp = path.with_extension("json.tmp");
            let bytes = serde_json::to_vec_pretty(saved).map_err(std::io::Error::other)?;
            {
                use std::io::Write as _;
                let mut f = std::fs::File::create(&tmp)?;
                f.write_all(&bytes)?;
                f.sync_all()?;
            }
            std::fs::rename(&tmp, path)?;
            if let Some(dir) = path.parent() {
                if let Ok(d) = std::fs::File::open(dir) {
                    let _ = d.sync_all();
                }
            }
            Ok(())
        };
        write(path).map_err(|source| PrincipalsError::Write {
            path: path.clone(),
            source,
        })
    }

    /// Applies `change` to the saved state and saves it; the change's result.
    pub(crate) fn update<T>(
        &self,
        change: impl FnOnce(&mut BTreeMap<String, User>, &mut BTreeMap<String, Role>) -> T,
    ) -> Result<T, PrincipalsError> {
        let mut saved = self.lock();
        let state = &mut *saved;
        let out = change(&mut state.users, &mut state.roles);
        self.save(&saved)?;
        Ok(out)
    }

    /// Records that user `name` lost `channels` at `sequence` (nothing when it does not
    /// exist).
    pub(crate) fn record_revoked(
        &self,
        name: &str,
        channels: &HashSet<String>,
        sequence: u64,
    ) -> Result<(), PrincipalsError> {
        self.update(|users, _| {
            if let Some(user) = users.get_mut(name) {
                for channel in channels {
                    user.revoke(channel.clone(), sequence);
                }
            }
        })
    }

    /// A copy of user `name`.
    pub(crate) fn user(&self, name: &str) -> Option<User> {
        self.lock().users.get(name).cloned()
    }

    /// A copy of role `name`.
    pub(crate) fn role(&self, name: &str) -> Option<Role> {
        self.lock().roles.get(name).cloned()
    }

    /// The names of the users (without GUEST), sorted.
    pub(crate) fn user_names(&self) -> Vec<String> {
        self.lock()
            .users
            .keys()
            .filter(|n| *n != GUEST)
            .cloned()
            .collect()
    }

    /// The names of the roles, sorted.
    pub(crate) fn role_names(&self) -> Vec<String> {
        self.lock().roles.keys().cloned().collect()
    }

    /// Forgets what was verified of `user`'s password (it changed, or the user is gone).
    pub(crate) fn forget_verified(&self, user: &str) {
        self.verified().remove(user);
    }

    fn cache_digest(&self, password: &str) -> [u8; 20] {
        let mut h = Sha1::new();
        h.update(self.cache_key);
        h.update(password.as_bytes());
        h.finalize().into()
    }

    /// Whether `name` is an enabled user (not GUEST) whose password is `password`.
    pub(crate) fn check_password(&self, name: &str, password: &str) -> bool {
        if name == GUEST {
            return false;
        }
        let Some(user) = self.user(name) else {
            // Spend the same time as for a wrong password of a real user.
            let _ = hash_password(password);
            return false;
        };
        if user.disabled {
            return false;
        }
        let Some(hash) = user.password_hash else {
            return false;
        };
        let digest = self.cache_digest(password);
        if self
            .verified()
            .get(name)
            .is_some_and(|d| constant_eq(d, &digest))
        {
            return true;
        }
        if verify_password(&hash, password) {
            self.verified().insert(name.to_owned(), digest);
            true
        } else {
            false
        }
    }

    /// Starts a session for `user`: its ID and expiry.
    pub(crate) fn create_session(
        &self,
        user: &str,
        ttl: Duration,
    ) -> Result<(String, SystemTime), PrincipalsError> {
        let id = new_session_id();
        let expires = SystemTime::now() + ttl;
        let secs = expires
            .duration_since(SystemTime::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let mut saved = self.lock();
        saved.sessions.insert(
            id.clone(),
            Session {
                user: user.to_owned(),
                expires: secs,
            },
        );
        self.save(&saved)?;
        Ok((id, expires))
    }

    /// The user of a live session whose user exists and is enabled.
    pub(crate) fn session_user(&self, id: &str) -> Option<String> {
        let saved = self.lock();
        let session = saved.sessions.get(id)?;
        if session.expires <= now_secs() {
            return None;
        }
        match saved.users.get(&session.user) {
            Some(u) if !u.disabled => Some(session.user.clone()),
            _ => None,
        }
    }

    /// Ends a session; `false` when there was none.
    pub(crate) fn delete_session(&self, id: &str) -> Result<bool, PrincipalsError> {
        let mut saved = self.lock();
        let existed = saved.sessions.remove(id).is_some();
        if existed {
            self.save(&saved)?;
        }
        Ok(existed)
    }

    /// Ends every session of `user`.
    pub(crate) fn delete_sessions_of(&self, user: &str) -> Result<(), PrincipalsError> {
        let mut saved = self.lock();
        let before = saved.sessions.len();
        saved.sessions.retain(|_, s| s.user != user);
        if saved.sessions.len() != before {
            self.save(&saved)?;
        }
        Ok(())
    }
}

/// 160 random bits as 40 hex digits.
fn new_session_id() -> String {
    let mut bytes = [0u8; 20];
    OsRng.fill_bytes(&mut bytes);
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn session_ids_are_40_hex() {
        let id = new_session_id();
        assert_eq!(id.len(), 40);
        assert!(id.chars().all(|c| c.is_ascii_hexdigit()));
        assert_ne!(id, new_session_id());
    }

    #[test]
    fn passwords_are_salted_hashes_and_survive_reopening() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("db.users.json");
        let p = Principals::open(Some(file.clone())).unwrap();
        p.update(|users, _| {
            users.insert(
                "alice".into(),
                User {
                    password_hash: hash_password("secret"),
                    ..User::default()
                },
            );
        })
        .unwrap();
        let (session, _) = p.create_session("alice", Duration::from_secs(60)).unwrap();
        assert!(p.check_password("alice", "secret"));
        assert!(p.check_password("alice", "secret"), "cached");
        assert!(!p.check_password("alice", "wrong"));
        assert!(!p.check_password("bob", "secret"));
        assert!(!p.check_password(GUEST, ""));
        let text = std::fs::read_to_string(&file).unwrap();
        assert!(!text.contains("secret"), "no clear password on disk");
        assert!(text.contains("$argon2id$"));
        drop(p);
        let p = Principals::open(Some(file)).unwrap();
        assert!(p.check_password("alice", "secret"));
        assert_eq!(p.session_user(&session).as_deref(), Some("alice"));
        assert!(p.delete_session(&session).unwrap());
        assert_eq!(p.session_user(&session), None);
    }

    #[test]
    fn same_password_gets_different_salts() {
        let a = hash_password("pw").unwrap();
        let b = hash_password("pw").unwrap();
        assert_ne!(a, b);
        assert!(verify_password(&a, "pw") && verify_password(&b, "pw"));
    }
}
