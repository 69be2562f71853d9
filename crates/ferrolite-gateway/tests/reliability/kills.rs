//! Process kills (SIGKILL, through `Child::kill`), at random moments:
//!
//! - a client process during a one-shot **pull** from a gateway: every change its database
//!   reported committed (a change listener prints each one) is there after a reopen, with
//!   its blobs; no revision committed before a kill is transferred again; the next run
//!   starts from the checkpoint of the last completed one (or a later one), never from zero;
//! - a client process saving documents and **pushing** them: every save that returned is
//!   in its database after a reopen, every revision the gateway acknowledged (the document
//!   replication listener reported it without error) is on the gateway, and the next push
//!   starts from the last completed push's checkpoint or later;
//! - the **gateway** process (on a directory) while three clients push to it (continuous
//!   push-and-pull replicators): it restarts on the same directory, holds every revision a
//!   client saw acknowledged, and the clients finish their push (everything ends on the
//!   gateway and on every client, blobs included).
//!
//! The children are this test binary run as `--exact kills::child_process` with
//! `FERROLITE_RELIABILITY_ROLE` set; they report on stdout (see [`crate::report`]). The
//! checkpoint a run starts from is read from the replicator's `starting from checkpoint`
//! record (target `ferrolite::replicator`), which the child turns into a `CHECKPOINT` line.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::fmt;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use ferrolite::{
    ActivityLevel, Authenticator, Blob, Database, DatabaseConfiguration, Direction, Endpoint,
    MutableDocument, Replicator, ReplicatorConfiguration, ReplicatorType,
};
use ferrolite_gateway::{Gateway, Storage};
use serde_json::{json, Value};

use crate::proxy::Proxy;
use crate::report;
use crate::support::{
    base64, bytes_of, check_blobs, differences, digest_of, env, gateway_config, generation, scaled,
    snapshot, ChildProc, Rng, Snapshot, PASSWORD, ROLE_ENV, STEP, USER,
};

/// The children's test: its full name in this binary.
const CHILD_TEST: &str = "kills::child_process";
const DIR_ENV: &str = "FERROLITE_KILL_DIR";
const URL_ENV: &str = "FERROLITE_KILL_URL";
const SEED_ENV: &str = "FERROLITE_KILL_SEED";
/// How many save-and-push rounds a push child runs before exiting (unset: until killed).
const ROUNDS_ENV: &str = "FERROLITE_KILL_ROUNDS";
/// The client database's name in its directory.
const CLIENT_DB: &str = "client";

/// The child roles. Does nothing unless started by one of the tests of this module.
#[test]
fn child_process() {
    let Ok(role) = std::env::var(ROLE_ENV) else {
        return;
    };
    match role.as_str() {
        "pull" => pull_child(),
        "push" => push_child(),
        "gateway" => gateway_child(),
        other => panic!("child: unknown role {other:?}"),
    }
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

fn open_client(dir: &Path) -> Result<Database, ferrolite::Error> {
    Database::open(CLIENT_DB, &DatabaseConfiguration::new(dir))
}

fn client_config(db: &Database, url: &str, kind: ReplicatorType) -> ReplicatorConfiguration {
    ReplicatorConfiguration::new(db, Endpoint::url(url).unwrap())
        .replicator_type(kind)
        .authenticator(Authenticator::basic(USER, PASSWORD))
        .max_attempt_wait_time(Duration::from_millis(200))
}

// ----- what a child reports -----

/// Turns the replicator's `starting from checkpoint` records into `CHECKPOINT <local>
/// <remote>` lines (`remote` is the peer's sequence, 0 for none).
struct CheckpointReporter;

#[derive(Default)]
struct CheckpointFields {
    message: String,
    local: Option<u64>,
    remote: Option<String>,
}

impl tracing::field::Visit for CheckpointFields {
    fn record_u64(&mut self, field: &tracing::field::Field, value: u64) {
        if field.name() == "local" {
            self.local = Some(value);
        }
    }

    fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn fmt::Debug) {
        match field.name() {
            "message" => self.message = format!("{value:?}"),
            "remote" => self.remote = Some(format!("{value:?}")),
            _ => {}
        }
    }
}

/// The first number in `text` (`Some(Sequence(Number(42)))` → 42), 0 for none.
fn first_number(text: &str) -> u64 {
    let digits: String = text
        .chars()
        .skip_while(|c| !c.is_ascii_digit())
        .take_while(char::is_ascii_digit)
        .collect();
    digits.parse().unwrap_or(0)
}

impl tracing::Subscriber for CheckpointReporter {
    fn enabled(&self, metadata: &tracing::Metadata<'_>) -> bool {
        metadata.target() == "ferrolite::replicator" && metadata.is_event()
    }

    fn new_span(&self, _: &tracing::span::Attributes<'_>) -> tracing::span::Id {
        tracing::span::Id::from_u64(1)
    }

    fn record(&self, _: &tracing::span::Id, _: &tracing::span::Record<'_>) {}

    fn record_follows_from(&self, _: &tracing::span::Id, _: &tracing::span::Id) {}

    fn event(&self, event: &tracing::Event<'_>) {
        let mut fields = CheckpointFields::default();
        event.record(&mut fields);
        if fields.message == "starting from checkpoint" {
            let local = fields.local.expect("the checkpoint record has `local`");
            let remote = fields.remote.as_deref().map_or(0, first_number);
            report!("CHECKPOINT {local} {remote}");
        }
    }

    fn enter(&self, _: &tracing::span::Id) {}

    fn exit(&self, _: &tracing::span::Id) {}
}

/// A report line, parsed.
#[derive(Debug)]
enum Line {
    Ready,
    /// A committed change: document, revision, deleted.
    Ack(String, String, bool),
    /// A revision received by the pull.
    Got(String, String),
    /// A revision the gateway acknowledged: document, revision, deleted.
    Pushed(String, String, bool),
    /// A push run finished; everything up to this local sequence was pushed.
    PushDone(u64),
    /// A run started from this checkpoint (local sequence, remote sequence).
    Checkpoint(u64, u64),
    Done,
    Other(String),
}

fn parse(line: &str) -> Line {
    let words: Vec<&str> = line.split(' ').collect();
    match words.as_slice() {
        ["READY", ..] => Line::Ready,
        ["ACK", id, rev, deleted] => Line::Ack((*id).into(), (*rev).into(), *deleted == "true"),
        ["GOT", id, rev] => Line::Got((*id).into(), (*rev).into()),
        ["PUSHED", id, rev, deleted] => {
            Line::Pushed((*id).into(), (*rev).into(), *deleted == "true")
        }
        ["PUSH_DONE", seq] => Line::PushDone(seq.parse().unwrap()),
        ["CHECKPOINT", local, remote] => {
            Line::Checkpoint(local.parse().unwrap(), remote.parse().unwrap())
        }
        ["DONE"] => Line::Done,
        _ => Line::Other(line.to_owned()),
    }
}

/// Reports every change committed after `since`, in order, with its revision.
fn report_changes(db: &Database, since: &mut u64) {
    for change in db.changes(*since).unwrap() {
        let change = change.unwrap();
        *since = (*since).max(change.sequence);
        report!("ACK {} {} {}", change.id, change.rev, change.deleted);
    }
}

// ----- the children -----

/// Pulls once from `FERROLITE_KILL_URL` into the database in `FERROLITE_KILL_DIR`.
fn pull_child() {
    tracing::subscriber::set_global_default(CheckpointReporter).unwrap();
    let dir = env(DIR_ENV);
    let db = open_client(Path::new(&dir)).expect("child: open");
    report!("READY");
    let seen = Arc::new(Mutex::new(db.last_sequence().unwrap()));
    let reader = db.clone();
    let _changes = db.add_change_listener(move |_| {
        report_changes(&reader, &mut seen.lock().unwrap());
    });
    let config = client_config(&db, &env(URL_ENV), ReplicatorType::Pull);
    let replicator = Replicator::new(config).unwrap();
    let _documents = replicator.add_document_replication_listener(|docs| {
        for doc in docs {
            if doc.direction == Direction::Pull && doc.error.is_none() {
                report!("GOT {} {}", doc.id, doc.rev);
            }
        }
    });
    replicator.start();
    let status = replicator
        .wait_until_stopped(Duration::from_secs(120))
        .expect("child: the pull did not finish");
    assert!(status.error.is_none(), "child: the pull failed: {status:?}");
    report!("DONE");
}

/// Document IDs of the push child: small enough that many saves are updates.
const PUSH_IDS: u64 = 150;

/// Saves batches of documents (reporting each save once it returned), pushing after each
/// batch; runs `FERROLITE_KILL_ROUNDS` rounds, or until killed.
fn push_child() {
    tracing::subscriber::set_global_default(CheckpointReporter).unwrap();
    let dir = env(DIR_ENV);
    let mut rng = Rng::new(env(SEED_ENV).parse().unwrap());
    let rounds: Option<u64> = std::env::var(ROUNDS_ENV).ok().map(|r| r.parse().unwrap());
    let db = open_client(Path::new(&dir)).expect("child: open");
    report!("READY");
    let config = client_config(&db, &env(URL_ENV), ReplicatorType::Push);
    let replicator = Replicator::new(config).unwrap();
    let _documents = replicator.add_document_replication_listener(|docs| {
        for doc in docs {
            if doc.direction == Direction::Push && doc.error.is_none() {
                report!("PUSHED {} {} {}", doc.id, doc.rev, doc.deleted);
            }
        }
    });
    let mut since = db.last_sequence().unwrap();
    let deadline = Instant::now() + Duration::from_secs(120);
    let mut round = 0;
    while Instant::now() < deadline && rounds.is_none_or(|r| round < r) {
        round += 1;
        for _ in 0..rng.between(1, 12) {
            let id = format!("p-{:03}", rng.below(PUSH_IDS));
            let current = db.document(&id).unwrap();
            match current {
                Some(doc) if rng.chance(12) => db.delete(&doc).unwrap(),
                _ => {
                    let mut doc = MutableDocument::with_id(&id);
                    doc.set("n", rng.next_u64() >> 11)
                        .set("pad", "p".repeat(rng.below(300) as usize));
                    if rng.chance(20) {
                        let len = rng.between(100, 20_000) as usize;
                        let bytes = bytes_of(len, rng.next_u64());
                        doc.set_blob("file", Blob::from_bytes("application/octet-stream", bytes));
                    }
                    db.save(&mut doc).unwrap();
                }
            }
            report_changes(&db, &mut since);
        }
        let pushed_up_to = db.last_sequence().unwrap();
        replicator.start();
        let status = replicator
            .wait_until_stopped(Duration::from_secs(60))
            .expect("child: the push did not finish");
        if status.error.is_none() {
            report!("PUSH_DONE {pushed_up_to}");
        } else {
            report!("PUSH_FAILED {:?}", status.error);
        }
    }
    report!("DONE");
}

/// Runs a gateway on the directory in `FERROLITE_KILL_DIR` until killed.
fn gateway_child() {
    let dir = env(DIR_ENV);
    let rt = runtime();
    let gateway = rt
        .block_on(Gateway::start(
            &gateway_config(),
            Storage::Directory(dir.into()),
        ))
        .expect("child: the gateway did not start");
    report!("READY {} {}", gateway.public_addr(), gateway.admin_addr());
    std::thread::sleep(Duration::from_secs(300));
}

// ----- the gateway's content -----

/// Writes `docs` with `_bulk_docs` on the admin port; each must succeed.
fn bulk(rt: &tokio::runtime::Runtime, http: &reqwest::Client, admin: SocketAddr, docs: Vec<Value>) {
    rt.block_on(async {
        let response = http
            .post(format!("http://{admin}/db/_bulk_docs"))
            .json(&json!({ "docs": docs }))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status().as_u16(), 201);
        let results: Value = response.json().await.unwrap();
        for result in results.as_array().unwrap() {
            assert!(result.get("error").is_none(), "_bulk_docs: {result}");
        }
    });
}

/// An inline attachment `file` of `len` bytes.
fn attachment(len: usize, seed: u64) -> Value {
    json!({"file": {"content_type": "application/octet-stream", "data": base64(&bytes_of(len, seed))}})
}

/// Round `round` of changes to the gateway: new documents (some with a blob) and, after
/// the first round, updates and deletions of live ones.
fn gateway_changes(rng: &mut Rng, server: &Database, round: u64) -> Vec<Value> {
    let mut docs = Vec::new();
    let new = if round == 0 { 240 } else { 25 };
    for i in 0..new {
        let mut doc = json!({
            "_id": format!("g{round:03}-{i:03}"),
            "round": round,
            "pad": "g".repeat(rng.below(400) as usize),
        });
        if i % 8 == 3 {
            doc["_attachments"] = attachment(rng.between(1000, 24_000) as usize, rng.next_u64());
        }
        docs.push(doc);
    }
    if round > 0 {
        let live: Vec<(String, String)> = snapshot(server)
            .into_iter()
            .filter(|(_, d)| !d.deleted)
            .map(|(id, d)| (id, d.rev))
            .collect();
        let mut picked = HashSet::new();
        for n in 0..14 {
            let (id, rev) = &live[rng.below(live.len() as u64) as usize];
            if !picked.insert(id.clone()) {
                continue;
            }
            docs.push(if n < 4 {
                json!({"_id": id, "_rev": rev, "_deleted": true})
            } else {
                json!({"_id": id, "_rev": rev, "round": round, "updated": true})
            });
        }
    }
    docs
}

// ----- checks -----

/// A revision and whether it is a deletion.
type RevState = (String, bool);

/// The latest acknowledged state of each document.
type Acked = HashMap<String, RevState>;

/// Every acknowledged document is in `snap` at its acknowledged revision, or at a later one
/// (saved or received after the report, before the kill).
fn check_acked(snap: &Snapshot, acked: &Acked, label: &str) {
    for (id, (rev, deleted)) in acked {
        let state = snap
            .get(id)
            .unwrap_or_else(|| panic!("{label}: acknowledged document {id} is missing"));
        if state.rev == *rev {
            assert_eq!(state.deleted, *deleted, "{label}: {id} at {rev}");
        } else {
            assert!(
                generation(&state.rev) > generation(rev),
                "{label}: {id} is at {}, but {rev} was acknowledged",
                state.rev
            );
        }
    }
}

/// Reopens the client database after a kill (it must open), checks it, closes it.
fn reopen_and_check(dir: &Path, acked: &Acked, label: &str) -> Snapshot {
    let db = open_client(dir)
        .unwrap_or_else(|e| panic!("{label}: the database does not reopen after the kill: {e}"));
    let snap = snapshot(&db);
    check_acked(&snap, acked, label);
    check_blobs(&db, &snap, label);
    db.close().unwrap();
    snap
}

/// How a round ends.
#[derive(Clone, Copy, Debug)]
enum Plan {
    /// SIGKILL this long after the process started (maybe before it even opened).
    AfterMillis(u64),
    /// SIGKILL once this many lines satisfying the round's test arrived.
    AfterLines(u64),
    /// Let it finish.
    Finish,
}

/// Runs `child` according to `plan`; returns whether it was killed while running.
fn run_round(child: &mut ChildProc, plan: Plan, counts: impl Fn(&str) -> bool) -> bool {
    match plan {
        Plan::Finish => {
            assert!(
                child.wait_exit(STEP * 2),
                "the child failed: {:?}",
                child.seen
            );
            false
        }
        Plan::AfterMillis(ms) => {
            std::thread::sleep(Duration::from_millis(ms));
            child.kill()
        }
        Plan::AfterLines(n) => {
            let mut seen = 0;
            while seen < n {
                match child.next_line(STEP) {
                    Some(line) if line == "DONE" => break,
                    Some(line) if counts(&line) => seen += 1,
                    Some(_) => {}
                    None => break,
                }
            }
            child.kill()
        }
    }
}

// ----- (a) pull -----

#[test]
fn a_client_killed_during_a_pull_keeps_what_it_acknowledged_and_resumes() {
    if std::env::var_os(ROLE_ENV).is_some() {
        return;
    }
    let started = Instant::now();
    let wanted = scaled(4);
    let rt = runtime();
    let gateway = rt
        .block_on(Gateway::start(&gateway_config(), Storage::InMemory))
        .unwrap();
    let server = gateway.database("db").unwrap();
    let http = reqwest::Client::new();
    let admin = gateway.admin_addr();
    let url = format!("ws://{}/db", gateway.public_addr());
    let dir = tempfile::tempdir().unwrap();
    let dir_text = dir.path().to_str().unwrap().to_owned();
    let mut rng = Rng::new(0x9011);
    bulk(&rt, &http, admin, gateway_changes(&mut rng, &server, 0));

    let mut acked = Acked::new();
    // Every revision committed by an earlier process: never to be transferred again.
    let mut committed: HashSet<(String, String)> = HashSet::new();
    // The gateway's last sequence when a run completed: later runs start there or later.
    let mut completed_at: Option<u64> = None;
    let (mut kills, mut kills_after_completion, mut completions, mut resumed) = (0, 0, 0, 0);
    let mut round = 0;
    while kills < wanted || kills_after_completion == 0 {
        round += 1;
        // Many runs end before their kill (a small pull is quick): a bound, not a target.
        assert!(round <= 8 * wanted as u64 + 10, "too many rounds");
        if round > 1 {
            bulk(&rt, &http, admin, gateway_changes(&mut rng, &server, round));
        }
        let gateway_at = server.last_sequence().unwrap();
        let pending = snapshot(&server)
            .iter()
            .filter(|(id, d)| acked.get(*id) != Some(&(d.rev.clone(), d.deleted)))
            .count() as u64;
        let plan = if round % 4 == 0 {
            Plan::Finish
        } else if rng.chance(35) {
            Plan::AfterMillis(rng.below(700))
        } else {
            // Half of what is pending at most, so that most kills land before the end.
            Plan::AfterLines(rng.between(1, (pending / 2).max(1)))
        };
        let label = format!("pull round {round} ({plan:?})");
        let mut child = ChildProc::spawn(
            CHILD_TEST,
            "pull",
            &[(DIR_ENV, dir_text.clone()), (URL_ENV, url.clone())],
        );
        let killed = run_round(&mut child, plan, |line| line.starts_with("ACK "));
        let mut finished = false;
        let mut first_checkpoint = None;
        for line in &child.seen {
            match parse(line) {
                Line::Ack(id, rev, deleted) => {
                    acked.insert(id, (rev, deleted));
                }
                Line::Got(id, rev) => assert!(
                    !committed.contains(&(id.clone(), rev.clone())),
                    "{label}: {id} {rev} was committed before a kill, and transferred again"
                ),
                Line::Checkpoint(_, remote) => {
                    if let Some(at) = completed_at {
                        assert!(
                            remote >= at,
                            "{label}: started from remote sequence {remote}, but a run \
                             completed at {at}"
                        );
                    }
                    first_checkpoint.get_or_insert(remote);
                }
                Line::Done => finished = true,
                _ => {}
            }
        }
        // A kill that came after the run finished interrupted nothing.
        if killed && !finished {
            kills += 1;
            kills_after_completion += usize::from(completed_at.is_some());
        } else {
            assert!(finished, "{label}: the child ended without finishing");
        }
        if first_checkpoint.is_some_and(|c| c > 0) {
            resumed += 1;
        }
        let snap = reopen_and_check(dir.path(), &acked, &label);
        committed.extend(snap.iter().map(|(id, d)| (id.clone(), d.rev.clone())));
        if finished {
            completions += 1;
            completed_at = Some(gateway_at);
        }
    }

    // A last run to the end: the client then holds what the gateway holds.
    let mut child = ChildProc::spawn(
        CHILD_TEST,
        "pull",
        &[(DIR_ENV, dir_text.clone()), (URL_ENV, url.clone())],
    );
    run_round(&mut child, Plan::Finish, |_| false);
    for line in &child.seen {
        if let Line::Got(id, rev) = parse(line) {
            assert!(
                !committed.contains(&(id.clone(), rev.clone())),
                "last run: {id} {rev} transferred again"
            );
        }
    }
    let db = open_client(dir.path()).unwrap();
    let local = snapshot(&db);
    let remote = snapshot(&server);
    for (id, theirs) in &remote {
        match local.get(id) {
            Some(ours) => assert_eq!(ours, theirs, "last run: {id}"),
            // A first pull into an empty database skips tombstones (activeOnly).
            None => assert!(theirs.deleted, "last run: {id} was not pulled"),
        }
    }
    assert!(
        local.keys().all(|id| remote.contains_key(id)),
        "last run: documents the gateway does not have"
    );
    check_blobs(&db, &local, "last run");
    db.close().unwrap();
    rt.block_on(gateway.shutdown());
    assert!(resumed > 0, "no run started from a saved checkpoint");
    eprintln!(
        "pull kills: {kills} kills ({kills_after_completion} after a completed run), \
         {completions} completed runs, {resumed} runs resumed from a checkpoint, {} \
         documents, in {:.1}s",
        remote.len(),
        started.elapsed().as_secs_f64()
    );
}

// ----- (b) push -----

#[test]
fn a_client_killed_during_a_push_keeps_its_saves_and_the_gateway_what_it_acknowledged() {
    if std::env::var_os(ROLE_ENV).is_some() {
        return;
    }
    let started = Instant::now();
    let wanted = scaled(4);
    let rt = runtime();
    let gateway = rt
        .block_on(Gateway::start(&gateway_config(), Storage::InMemory))
        .unwrap();
    let server = gateway.database("db").unwrap();
    let url = format!("ws://{}/db", gateway.public_addr());
    let dir = tempfile::tempdir().unwrap();
    let dir_text = dir.path().to_str().unwrap().to_owned();
    let mut rng = Rng::new(0xb055);

    let mut saved = Acked::new();
    let mut pushed = Acked::new();
    // The local sequence the last completed push reached: later pushes start there or later.
    let mut done_up_to: Option<u64> = None;
    let (mut kills, mut kills_after_done, mut resumed, mut rounds) = (0, 0, 0, 0u64);
    let (mut saves, mut pushes) = (0, 0);
    while kills < wanted || kills_after_done == 0 {
        rounds += 1;
        assert!(rounds <= 3 * wanted as u64 + 10, "too many rounds");
        let plan = if rng.chance(40) {
            Plan::AfterMillis(rng.between(100, 2500))
        } else {
            Plan::AfterLines(rng.between(1, 40))
        };
        let label = format!("push round {rounds} ({plan:?})");
        let mut child = ChildProc::spawn(
            CHILD_TEST,
            "push",
            &[
                (DIR_ENV, dir_text.clone()),
                (URL_ENV, url.clone()),
                (SEED_ENV, rng.next_u64().to_string()),
            ],
        );
        // Counted: saves and acknowledged pushes, so kills land in both.
        let killed = run_round(&mut child, plan, |line| {
            line.starts_with("ACK ") || line.starts_with("PUSHED ")
        });
        assert!(
            killed,
            "{label}: the child stopped by itself: {:?}",
            child.seen
        );
        kills += 1;
        kills_after_done += usize::from(done_up_to.is_some());
        let mut first_checkpoint = None;
        for line in &child.seen {
            match parse(line) {
                Line::Ack(id, rev, deleted) => {
                    saved.insert(id, (rev, deleted));
                    saves += 1;
                }
                Line::Pushed(id, rev, deleted) => {
                    pushed.insert(id, (rev, deleted));
                    pushes += 1;
                }
                Line::PushDone(up_to) => done_up_to = Some(up_to),
                Line::Checkpoint(local, _) => {
                    if let Some(done) = done_up_to {
                        assert!(
                            local >= done,
                            "{label}: a push started from local sequence {local}, but one \
                             completed up to {done}"
                        );
                    }
                    first_checkpoint.get_or_insert(local);
                }
                _ => {}
            }
        }
        if first_checkpoint.is_some_and(|c| c > 0) {
            resumed += 1;
        }
        reopen_and_check(dir.path(), &saved, &label);
        let on_gateway = snapshot(&server);
        check_acked(&on_gateway, &pushed, &format!("{label}, gateway"));
        check_blobs(&server, &on_gateway, &format!("{label}, gateway"));
    }

    // A last save-and-push round to the end: the gateway then holds everything.
    let mut child = ChildProc::spawn(
        CHILD_TEST,
        "push",
        &[
            (DIR_ENV, dir_text.clone()),
            (URL_ENV, url.clone()),
            (SEED_ENV, rng.next_u64().to_string()),
            (ROUNDS_ENV, "1".to_owned()),
        ],
    );
    run_round(&mut child, Plan::Finish, |_| false);
    assert!(
        child.seen.iter().any(|l| l.starts_with("PUSH_DONE ")),
        "the last push failed: {:?}",
        child.seen
    );
    let db = open_client(dir.path()).unwrap();
    let local = snapshot(&db);
    db.close().unwrap();
    let remote = snapshot(&server);
    assert!(
        local == remote,
        "last push: the gateway differs from the client: {:#?}",
        differences(&local, &remote, 5)
    );
    check_blobs(&server, &remote, "last push, gateway");
    rt.block_on(gateway.shutdown());
    assert!(resumed > 0, "no push started from a saved checkpoint");
    eprintln!(
        "push kills: {kills} kills ({kills_after_done} after a completed push), {resumed} \
         runs resumed from a checkpoint, {saves} saves and {pushes} pushes acknowledged, {} \
         documents, in {:.1}s",
        remote.len(),
        started.elapsed().as_secs_f64()
    );
}

// ----- (c) the gateway -----

/// A gateway process on `dir`, and where it listens.
fn start_gateway_process(dir: &str) -> (ChildProc, SocketAddr, SocketAddr) {
    let mut child = ChildProc::spawn(CHILD_TEST, "gateway", &[(DIR_ENV, dir.to_owned())]);
    child.wait_for("READY", STEP, |line| line.starts_with("READY "));
    let ready = child.seen.last().unwrap().clone();
    let addrs: Vec<SocketAddr> = ready
        .split(' ')
        .skip(1)
        .map(|a| a.parse().unwrap())
        .collect();
    (child, addrs[0], addrs[1])
}

/// Every document on the gateway (admin `_changes`): ID → revision and deleted flag.
fn gateway_state(
    rt: &tokio::runtime::Runtime,
    http: &reqwest::Client,
    admin: SocketAddr,
) -> BTreeMap<String, RevState> {
    rt.block_on(async {
        let body: Value = http
            .get(format!("http://{admin}/db/_changes"))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        body["results"]
            .as_array()
            .unwrap()
            .iter()
            .map(|row| {
                (
                    row["id"].as_str().unwrap().to_owned(),
                    (
                        row["changes"][0]["rev"].as_str().unwrap().to_owned(),
                        row["deleted"].as_bool().unwrap_or(false),
                    ),
                )
            })
            .collect()
    })
}

/// Documents each client of the gateway-kill test edits. A revision the gateway stored but
/// whose acknowledgement the kill lost is not known to be the gateway's; edited more than 20
/// times (the tree depth) before a push succeeds, the document loses it to pruning and its
/// push is refused as a conflict that nothing resolves — a limit of the protocol (Couchbase
/// Lite's too). With 200 documents per client, each is edited about every 1.7 s: 20 edits
/// take half a minute, far longer than the clients take to push again after a restart.
const PUSHER_IDS: u64 = 200;

/// Local saves of client `i` until `stop`: its own documents, some with a blob, some
/// deleted.
fn keep_saving(db: &Database, i: usize, mut rng: Rng, stop: &AtomicBool) {
    while !stop.load(Ordering::SeqCst) {
        std::thread::sleep(Duration::from_millis(rng.between(2, 15)));
        let id = format!("c{i}-{:03}", rng.below(PUSHER_IDS));
        match db.document(&id).unwrap() {
            Some(doc) if rng.chance(10) => db.delete(&doc).unwrap(),
            current => {
                let mut doc =
                    current.map_or_else(|| MutableDocument::with_id(&id), |d| d.to_mutable());
                doc.set("n", rng.next_u64() >> 11);
                if rng.chance(15) {
                    let bytes = bytes_of(rng.between(100, 30_000) as usize, rng.next_u64());
                    doc.set_blob("file", Blob::from_bytes("application/octet-stream", bytes));
                }
                db.save(&mut doc).unwrap();
            }
        }
    }
}

#[test]
fn a_gateway_killed_during_pushes_restarts_with_every_acknowledged_revision() {
    if std::env::var_os(ROLE_ENV).is_some() {
        return;
    }
    let started = Instant::now();
    let wanted = scaled(4);
    let rt = runtime();
    let http = reqwest::Client::new();
    let dir = tempfile::tempdir().unwrap();
    let dir_text = dir.path().to_str().unwrap().to_owned();
    let mut rng = Rng::new(0x6a7e);
    let (mut gateway, public, mut admin) = start_gateway_process(&dir_text);
    // The clients reach the gateway through a plain forwarder, whose target follows the
    // gateway from process to process.
    let proxy = rt.block_on(Proxy::start(public, 0, None));
    let url = format!("ws://{}/db", proxy.addr());

    // Every revision acknowledged by the gateway: (document, revision, deleted).
    let acked: Arc<Mutex<Vec<(String, String, bool)>>> = Arc::default();
    let stop = Arc::new(AtomicBool::new(false));
    let mut clients = Vec::new();
    let mut writers = Vec::new();
    for i in 0..3 {
        let db = Database::open_in_memory(&format!("pusher-{i}")).unwrap();
        // Push and pull, as applications run them: each client also ends with the others'
        // documents.
        let config = client_config(&db, &url, ReplicatorType::PushAndPull)
            .continuous(true)
            .max_attempt_wait_time(Duration::from_millis(100));
        let replicator = Replicator::new(config).unwrap();
        let record = acked.clone();
        let _token = replicator.add_document_replication_listener(move |docs| {
            let mut acked = record.lock().unwrap();
            for doc in docs {
                if doc.direction == Direction::Push && doc.error.is_none() {
                    acked.push((doc.id.clone(), doc.rev.clone(), doc.deleted));
                }
            }
        });
        replicator.start();
        let writer_db = db.clone();
        let writer_rng = rng.fork(i as u64);
        let writer_stop = stop.clone();
        writers.push(std::thread::spawn(move || {
            keep_saving(&writer_db, i, writer_rng, &writer_stop);
        }));
        clients.push((db, replicator));
    }

    let mut checked = 0;
    for round in 1..=wanted {
        std::thread::sleep(Duration::from_millis(rng.between(150, 900)));
        assert!(gateway.kill(), "round {round}: the gateway had stopped");
        // Nothing can be acknowledged from here until the restart.
        let before: Vec<(String, String, bool)> = acked.lock().unwrap().clone();
        let (next, public, next_admin) = start_gateway_process(&dir_text);
        (gateway, admin) = (next, next_admin);
        proxy.set_target(public);
        let state = gateway_state(&rt, &http, admin);
        for (id, rev, deleted) in &before {
            let (current, current_deleted) = state.get(id).unwrap_or_else(|| {
                panic!("round {round}: {id} {rev} was acknowledged, and is not on the gateway")
            });
            if current == rev {
                assert_eq!(current_deleted, deleted, "round {round}: {id} {rev}");
            } else {
                assert!(
                    generation(current) > generation(rev),
                    "round {round}: {id} is at {current} on the gateway, but {rev} was \
                     acknowledged"
                );
            }
        }
        checked += before.len();
    }

    // The edits stop; every client finishes its push (and pulls the others' documents).
    stop.store(true, Ordering::SeqCst);
    for writer in writers {
        writer.join().unwrap();
    }
    let deadline = Instant::now() + STEP * 2;
    loop {
        let state = gateway_state(&rt, &http, admin);
        let idle = clients
            .iter()
            .all(|(_, r)| r.status().activity == ActivityLevel::Idle);
        let mut differ: Vec<(usize, String, Option<RevState>, Option<RevState>)> = Vec::new();
        for (i, (db, _)) in clients.iter().enumerate() {
            let theirs: BTreeMap<String, RevState> = snapshot(db)
                .into_iter()
                .map(|(id, d)| (id, (d.rev, d.deleted)))
                .collect();
            let ids: BTreeSet<&String> = theirs.keys().chain(state.keys()).collect();
            differ.extend(
                ids.into_iter()
                    .filter(|id| theirs.get(*id) != state.get(*id))
                    .map(|id| {
                        (
                            i,
                            id.clone(),
                            theirs.get(id).cloned(),
                            state.get(id).cloned(),
                        )
                    }),
            );
        }
        if idle && differ.is_empty() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the clients and the gateway did not converge ({} differences, clients {:?}): \
             (client, document, client's, gateway's) {:#?}",
            differ.len(),
            clients.iter().map(|(_, r)| r.status()).collect::<Vec<_>>(),
            &differ[..differ.len().min(5)]
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    // The blobs made it too: each attachment's bytes hash to the client's digest.
    let mut blobs = 0;
    for (i, (db, replicator)) in clients.iter().enumerate() {
        let own = format!("c{i}-");
        for (id, d) in snapshot(db) {
            let Some(body) = d.body.filter(|_| id.starts_with(&own)) else {
                continue;
            };
            let body: Value = serde_json::from_str(&body).unwrap();
            let Some(digest) = body["file"]["digest"].as_str() else {
                continue;
            };
            let bytes = rt.block_on(async {
                let response = http
                    .get(format!("http://{admin}/db/{id}/file"))
                    .send()
                    .await
                    .unwrap();
                assert!(response.status().is_success(), "{id}: blob missing");
                response.bytes().await.unwrap()
            });
            assert_eq!(digest_of(&bytes), digest, "{id}: blob content");
            blobs += 1;
        }
        replicator.stop();
    }
    gateway.kill();
    let total: usize = acked.lock().unwrap().len();
    eprintln!(
        "gateway kills: {wanted} kills, {total} revisions acknowledged, {checked} checks of an \
         acknowledged revision after a restart, {blobs} blobs, in {:.1}s",
        started.elapsed().as_secs_f64()
    );
}
