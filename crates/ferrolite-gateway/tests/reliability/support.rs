//! Shared support: the soak scale, a seeded PRNG, the gateway's configuration, database
//! snapshots compared across databases (with their blobs), and child processes that print
//! what they did on stdout.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use base64::Engine as _;
use ferrolite::{Blob, Database};
use ferrolite_gateway::GatewayConfig;
use serde_json::{Map, Value};
use sha1::{Digest as _, Sha1};

/// `FERROLITE_SOAK=1`: the long runs of `cargo xtask soak`.
pub const SOAK_ENV: &str = "FERROLITE_SOAK";

/// Whether this is a soak run.
pub fn soak() -> bool {
    std::env::var(SOAK_ENV).is_ok_and(|v| !v.is_empty() && v != "0")
}

/// `ci` normally, ten times as many in a soak run.
pub fn scaled(ci: usize) -> usize {
    if soak() {
        ci * 10
    } else {
        ci
    }
}

/// Generous bound for anything that should happen quickly, on a loaded machine.
pub const STEP: Duration = Duration::from_secs(60);

// ----- randomness -----

/// A small deterministic PRNG (SplitMix64): the same seed gives the same numbers.
#[derive(Clone, Debug)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed ^ 0x5DEE_CE66_D1CE_4E5B)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n` (0 when `n` is 0).
    pub fn below(&mut self, n: u64) -> u64 {
        if n == 0 {
            0
        } else {
            self.next_u64() % n
        }
    }

    /// Uniform in `lo..=hi`.
    pub fn between(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.below(hi.saturating_sub(lo) + 1)
    }

    /// True with probability `percent`/100.
    pub fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }

    /// An independent stream for `salt` (another connection, another actor).
    pub fn fork(&self, salt: u64) -> Rng {
        let mut forked = Rng(self.0 ^ salt.wrapping_mul(0xA24B_AED4_963E_E407));
        forked.next_u64();
        forked
    }
}

/// Deterministic, poorly compressible bytes.
pub fn bytes_of(len: usize, seed: u64) -> Vec<u8> {
    let mut rng = Rng::new(seed);
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        out.extend_from_slice(&rng.next_u64().to_le_bytes());
    }
    out.truncate(len);
    out
}

/// The base64 of `bytes` (inline attachments on the REST API).
pub fn base64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

/// `sha1-<base64>`: the digest a blob of `bytes` must carry.
pub fn digest_of(bytes: &[u8]) -> String {
    format!("sha1-{}", base64(&Sha1::digest(bytes)))
}

// ----- the gateway -----

pub const USER: &str = "alice";
pub const PASSWORD: &str = "secret";

/// One database `db` and a user who reads every channel, both listeners on 127.0.0.1.
pub fn gateway_config() -> GatewayConfig {
    GatewayConfig::from_json(&format!(
        r#"{{"interface":"127.0.0.1:0","adminInterface":"127.0.0.1:0",
            "databases":{{"db":{{"users":{{"{USER}":{{"password":"{PASSWORD}","admin_channels":["*"]}}}}}}}}}}"#
    ))
    .unwrap()
}

/// The generation of a revision ID (`3-abc` → 3).
pub fn generation(rev: &str) -> u32 {
    rev.split_once('-')
        .and_then(|(g, _)| g.parse().ok())
        .unwrap_or_else(|| panic!("not a revision ID: {rev:?}"))
}

// ----- snapshots -----

/// What a database holds for one document: its current revision, whether that is a
/// deletion, and its body as canonical JSON (none for a deletion).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DocState {
    pub rev: String,
    pub deleted: bool,
    pub body: Option<String>,
}

/// Every document of a database, deleted ones included, by ID.
pub type Snapshot = BTreeMap<String, DocState>;

/// Reads every document of `db` (the change feed has one entry per document).
pub fn snapshot(db: &Database) -> Snapshot {
    let mut out = Snapshot::new();
    for change in db.changes(0).unwrap() {
        let change = change.unwrap();
        let body = if change.deleted {
            None
        } else {
            db.document(&change.id)
                .unwrap()
                .map(|doc| String::from_utf8(doc.json().to_vec()).unwrap())
        };
        out.insert(
            change.id,
            DocState {
                rev: change.rev.to_string(),
                deleted: change.deleted,
                body,
            },
        );
    }
    out
}

/// Up to `limit` documents on which two snapshots differ, for failure messages.
pub fn differences(
    a: &Snapshot,
    b: &Snapshot,
    limit: usize,
) -> Vec<(String, Option<DocState>, Option<DocState>)> {
    let mut ids: Vec<&String> = a.keys().chain(b.keys()).collect();
    ids.sort();
    ids.dedup();
    ids.into_iter()
        .filter(|id| a.get(*id) != b.get(*id))
        .take(limit)
        .map(|id| (id.clone(), a.get(id).cloned(), b.get(id).cloned()))
        .collect()
}

/// Every blob dictionary (`"@type": "blob"`) anywhere in `value`.
fn blob_dicts(value: &Value, out: &mut Vec<Map<String, Value>>) {
    match value {
        Value::Object(map) => {
            if map.get("@type").and_then(Value::as_str) == Some("blob") {
                out.push(map.clone());
            } else {
                map.values().for_each(|v| blob_dicts(v, out));
            }
        }
        Value::Array(items) => items.iter().for_each(|v| blob_dicts(v, out)),
        _ => {}
    }
}

/// Reads every blob the current revisions of `snap` (taken from `db`) reference and checks
/// it: present, readable, of its recorded length, and hashing to its digest. Returns
/// digest → length.
pub fn check_blobs(db: &Database, snap: &Snapshot, label: &str) -> BTreeMap<String, u64> {
    let mut out = BTreeMap::new();
    for (id, state) in snap {
        let Some(body) = &state.body else { continue };
        let mut dicts = Vec::new();
        blob_dicts(&serde_json::from_str(body).unwrap(), &mut dicts);
        for dict in dicts {
            let blob = Blob::from_dict(&dict)
                .unwrap_or_else(|| panic!("{label}: {id}: not a blob: {dict:?}"));
            let digest = blob
                .digest()
                .unwrap_or_else(|| panic!("{label}: {id}: a blob without a digest"))
                .to_string();
            let content = db
                .blob_content(&blob)
                .unwrap_or_else(|e| panic!("{label}: {id}: blob {digest} unreadable: {e}"));
            assert_eq!(
                digest_of(&content),
                digest,
                "{label}: {id}: blob content does not match its digest"
            );
            if let Some(length) = blob.length() {
                assert_eq!(content.len() as u64, length, "{label}: {id}: blob length");
            }
            out.insert(digest, content.len() as u64);
        }
    }
    out
}

// ----- child processes -----

/// The environment variable that makes this test binary play a child role.
pub const ROLE_ENV: &str = "FERROLITE_RELIABILITY_ROLE";

/// A child process running this test binary in a role; its stdout arrives line by line.
/// Killed (SIGKILL) when dropped.
pub struct ChildProc {
    child: std::process::Child,
    lines: mpsc::Receiver<String>,
    reader: Option<std::thread::JoinHandle<()>>,
    /// Every complete line received so far.
    pub seen: Vec<String>,
}

impl ChildProc {
    /// Runs test `test` (its full path) of this binary with `ROLE_ENV=role` and `envs`.
    pub fn spawn(test: &str, role: &str, envs: &[(&str, String)]) -> ChildProc {
        let exe = std::env::current_exe().unwrap();
        let mut command = Command::new(exe);
        command
            .args(["--exact", test, "--nocapture", "--test-threads=1"])
            .env(ROLE_ENV, role)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit());
        for (key, value) in envs {
            command.env(key, value);
        }
        let mut child = command.spawn().unwrap();
        let stdout = child.stdout.take().unwrap();
        let (tx, lines) = mpsc::channel();
        let reader = std::thread::spawn(move || {
            let mut stdout = BufReader::new(stdout);
            let mut line = String::new();
            loop {
                line.clear();
                match stdout.read_line(&mut line) {
                    Ok(0) | Err(_) => return,
                    Ok(_) => {}
                }
                // A line cut short by the kill is not a report.
                let Some(complete) = line.strip_suffix('\n') else {
                    return;
                };
                // The test harness may have printed `test … ` before the first line.
                let complete = match complete.find(REPORT) {
                    Some(at) => &complete[at + REPORT.len()..],
                    None => continue,
                };
                if tx.send(complete.to_owned()).is_err() {
                    return;
                }
            }
        });
        ChildProc {
            child,
            lines,
            reader: Some(reader),
            seen: Vec::new(),
        }
    }

    /// The next line, waiting at most `timeout`; `None` when the time is up or the child
    /// closed its stdout.
    pub fn next_line(&mut self, timeout: Duration) -> Option<String> {
        let line = self.lines.recv_timeout(timeout).ok()?;
        self.seen.push(line.clone());
        Some(line)
    }

    /// Waits for a line for which `wanted` holds (every line is kept in `seen`); panics
    /// after `timeout` or if the child ends first.
    pub fn wait_for(&mut self, what: &str, timeout: Duration, wanted: impl Fn(&str) -> bool) {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.next_line(left) {
                Some(line) if wanted(&line) => return,
                Some(_) => {}
                None => {
                    let status = self.child.try_wait().ok().flatten();
                    panic!("the child never reported {what} (exit status {status:?})");
                }
            }
        }
    }

    /// Whether the process is still running.
    pub fn running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// SIGKILL (when still running), then every line it printed before. Returns whether the
    /// process was still running when killed.
    pub fn kill(&mut self) -> bool {
        let was_running = self.running();
        let _ = self.child.kill();
        self.child.wait().unwrap();
        self.drain();
        was_running
    }

    /// Waits (at most `timeout`) for the process to exit by itself; then every line.
    /// Returns whether it exited successfully.
    pub fn wait_exit(&mut self, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                self.drain();
                return status.success();
            }
            assert!(
                Instant::now() < deadline,
                "the child did not exit within {timeout:?}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn drain(&mut self) {
        if let Some(reader) = self.reader.take() {
            reader.join().unwrap();
        }
        self.seen.extend(self.lines.try_iter());
    }
}

impl Drop for ChildProc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The prefix of every report line a child prints (other output is ignored).
pub const REPORT: &str = "@@ ";

/// Prints one report line (whole, flushed: stdout is line-buffered).
#[macro_export]
macro_rules! report {
    ($($arg:tt)*) => {
        println!("{}{}", $crate::support::REPORT, format_args!($($arg)*))
    };
}

/// A child's environment variable, which the parent always sets.
pub fn env(key: &str) -> String {
    std::env::var(key).unwrap_or_else(|_| panic!("child: {key} is not set"))
}
