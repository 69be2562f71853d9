//! Crash safety: a child process writes documents and acknowledges each commit on stdout;
//! the parent kills it with SIGKILL at a random moment and checks, after reopening the
//! database, that every acknowledged write is there. The database accumulates across kills.
//!
//! The child is this very test binary, run with `--exact crash_child` and the database
//! directory in `FERROLITE_CRASH_CHILD`.

#![allow(clippy::unwrap_used, clippy::expect_used)] // Tests: a failure is a panic.

mod common;

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use common::{body, Rng};
use ferrolite_document::{RevId, RevTree, DEFAULT_KEEP_ANCESTOR_BODIES, DEFAULT_MAX_DEPTH};
use ferrolite_storage::{ChangeFeed, DocumentRecord, RedbStore, Store};
use serde_json::json;

const CHILD_ENV: &str = "FERROLITE_CRASH_CHILD";
const SEED_ENV: &str = "FERROLITE_CRASH_SEED";
const KILLS: u64 = 24;
/// Document IDs the child picks from: small enough that many writes are updates.
const ID_SPACE: u64 = 200;

/// The writer. Does nothing unless started by [`acknowledged_writes_survive_kills`].
#[test]
fn crash_child() {
    let Some(dir) = std::env::var_os(CHILD_ENV) else {
        return;
    };
    let seed: u64 = std::env::var(SEED_ENV).unwrap().parse().unwrap();
    let store = RedbStore::open(Path::new(&dir)).expect("child: open");
    let mut out = std::io::stdout().lock();
    writeln!(out, "READY").unwrap();
    out.flush().unwrap();
    let mut rng = Rng::new(seed);
    let mut counter = 0u64;
    let mut acks: Vec<(String, RevId)> = Vec::new();
    // A safety net should the parent never kill this process.
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline {
        let batch = if rng.below(3) == 0 {
            1
        } else {
            1 + rng.below(50)
        };
        acks.clear();
        store
            .write(&mut |txn| {
                acks.clear();
                for _ in 0..batch {
                    let id = format!("doc-{:03}", rng.below(ID_SPACE));
                    let mut tree = txn.get(&id)?.map_or_else(RevTree::new, |r| r.tree);
                    let parent = tree.current().map(|c| c.id().clone());
                    let sequence = txn.next_sequence()?;
                    counter += 1;
                    let content = body(json!({"seed": seed, "n": counter, "pad": "x".repeat(100)}));
                    let rev = tree.add_child(parent.as_ref(), content, false, sequence)?;
                    tree.prune(DEFAULT_MAX_DEPTH);
                    tree.drop_old_bodies(DEFAULT_KEEP_ANCESTOR_BODIES);
                    txn.put(&DocumentRecord {
                        id: id.clone(),
                        tree,
                        sequence,
                        expiration: None,
                    })?;
                    acks.push((id, rev));
                }
                Ok(())
            })
            .expect("child: write");
        for (id, rev) in &acks {
            writeln!(out, "ACK {id} {rev}").unwrap();
        }
        out.flush().unwrap();
    }
}

/// Kills the child if the parent gives up (panics) before killing it.
struct KillOnDrop(std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

enum Event {
    Ready,
    Line(String),
}

#[test]
fn acknowledged_writes_survive_kills() {
    if std::env::var_os(CHILD_ENV).is_some() {
        return;
    }
    let started = Instant::now();
    let dir = tempfile::TempDir::new().unwrap();
    let exe = std::env::current_exe().unwrap();
    let mut rng = Rng::new(0x00c0_ffee);
    // The last acknowledged revision of each document.
    let mut acked: HashMap<String, RevId> = HashMap::new();
    let mut total_acks = 0;
    let mut rounds_with_acks = 0;
    for round in 0..KILLS {
        let mut child = KillOnDrop(
            Command::new(&exe)
                .args(["--exact", "crash_child", "--nocapture", "--test-threads=1"])
                .env(CHILD_ENV, dir.path())
                .env(SEED_ENV, (round + 1).to_string())
                .stdin(Stdio::null())
                .stdout(Stdio::piped())
                .stderr(Stdio::inherit())
                .spawn()
                .unwrap(),
        );
        let stdout = child.0.stdout.take().unwrap();
        let (events, received) = mpsc::channel();
        let reader = std::thread::spawn(move || {
            let mut stdout = BufReader::new(stdout);
            let mut line = String::new();
            loop {
                line.clear();
                match stdout.read_line(&mut line) {
                    Ok(0) | Err(_) => return,
                    Ok(_) => {}
                }
                // A line cut short by the kill is not an acknowledgement.
                let Some(complete) = line.strip_suffix('\n') else {
                    return;
                };
                // The harness may have printed `test crash_child ... ` before it.
                let event = if complete.ends_with("READY") {
                    Event::Ready
                } else {
                    Event::Line(complete.to_owned())
                };
                if events.send(event).is_err() {
                    return;
                }
            }
        });
        // Half of the kills are timed from the start of the process (some land while it
        // opens and recovers the database), half from when it starts writing.
        let mut lines = Vec::new();
        if round % 2 == 0 {
            loop {
                match received.recv_timeout(Duration::from_secs(20)) {
                    Ok(Event::Ready) => break,
                    Ok(Event::Line(line)) => lines.push(line),
                    Err(e) => panic!("round {round}: the child did not start writing: {e}"),
                }
            }
        }
        std::thread::sleep(Duration::from_millis(rng.below(301)));
        child.0.kill().unwrap();
        child.0.wait().unwrap();
        reader.join().unwrap();
        lines.extend(received.try_iter().filter_map(|event| match event {
            Event::Line(line) => Some(line),
            Event::Ready => None,
        }));

        let mut acks_this_round = 0;
        for line in &lines {
            let Some(ack) = line.strip_prefix("ACK ") else {
                continue;
            };
            let (id, rev) = ack.split_once(' ').unwrap();
            acked.insert(id.to_owned(), RevId::parse(rev).unwrap());
            acks_this_round += 1;
        }
        total_acks += acks_this_round;
        if acks_this_round > 0 {
            rounds_with_acks += 1;
        }

        let store = RedbStore::open(dir.path())
            .unwrap_or_else(|e| panic!("round {round}: reopening after the kill failed: {e}"));
        check(&store, &acked, round);
    }
    eprintln!(
        "{KILLS} kills, {total_acks} acknowledged writes of {} documents in {:?}",
        acked.len(),
        started.elapsed()
    );
    assert!(
        rounds_with_acks >= KILLS / 3,
        "too few rounds wrote anything: {rounds_with_acks}"
    );
}

/// Every acknowledged revision is stored, or a later one; the indexes are consistent.
fn check(store: &RedbStore, acked: &HashMap<String, RevId>, round: u64) {
    for (id, rev) in acked {
        let record = store
            .get(id)
            .unwrap()
            .unwrap_or_else(|| panic!("round {round}: acknowledged document {id} is missing"));
        let current = record.tree.current().unwrap().id();
        assert!(
            current.generation() > rev.generation() || current == rev,
            "round {round}: {id} is at {current}, but {rev} was acknowledged"
        );
        assert!(
            record.tree.contains(rev),
            "round {round}: {id} lost acknowledged revision {rev}"
        );
    }
    let feed: Vec<_> = ChangeFeed::new(store, 0).map(Result::unwrap).collect();
    assert!(feed.len() >= acked.len());
    assert_eq!(store.document_count().unwrap(), feed.len() as u64);
    let last = store.last_sequence().unwrap();
    for change in &feed {
        let record = store.get(&change.id).unwrap().unwrap();
        assert_eq!(record.sequence, change.sequence);
        assert_eq!(record.tree.current().unwrap().id(), &change.rev);
        assert!(change.sequence <= last);
    }
}
