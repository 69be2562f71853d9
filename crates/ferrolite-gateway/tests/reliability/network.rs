//! Broken networks. Per seed: a gateway (in memory) and two ferrolite clients, each
//! replicating continuously (push and pull) through its own fault [`Proxy`] that cuts,
//! delays, splits and stalls its TCP connections. The gateway (REST writes on its admin
//! port) and both clients (local saves) edit concurrently — updates, blobs, deletions,
//! mostly of the same document IDs, so conflicts happen on every side. Then the edits stop,
//! the proxies heal, and once both replicators are idle all three databases must be
//! identical: the same document IDs, current revision IDs, deleted flags and bodies, and
//! every blob present, readable and matching its digest.
//!
//! 20 seeds (1–20) in four tests; 200 seeds from a time-derived base under
//! `FERROLITE_SOAK=1`; `FERROLITE_FAULT_SEED=N` runs seed N alone (in the first test). A
//! seed fixes the fault plan of every connection and every edit; the interleaving of the
//! threads is up to the machine.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use ferrolite::{
    ActivityLevel, Authenticator, Blob, Database, Endpoint, MutableDocument, Replicator,
    ReplicatorConfiguration, ReplicatorError, ReplicatorStatus, ReplicatorType,
};
use ferrolite_gateway::{Gateway, Storage};
use serde_json::{json, Value};

use crate::proxy::{Faults, Proxy, Stats};
use crate::support::{
    base64, bytes_of, check_blobs, differences, gateway_config, scaled, snapshot, soak, Rng,
    Snapshot, PASSWORD, STEP, USER,
};

const SEED_ENV: &str = "FERROLITE_FAULT_SEED";
/// The seeds are spread over this many tests, so that a test runner can run them side by
/// side.
const GROUPS: u64 = 4;
/// Document IDs every actor edits, and how many of its own each has.
const SHARED_IDS: u64 = 12;
const OWN_IDS: u64 = 6;
/// Edits per actor per seed.
const EDITS: u64 = 50;
/// How long the databases get to converge once the network heals.
const CONVERGE: Duration = Duration::from_secs(120);

/// The seeds of test `group`.
fn seeds(group: u64) -> Vec<u64> {
    if let Ok(seed) = std::env::var(SEED_ENV) {
        let seed: u64 = seed
            .parse()
            .unwrap_or_else(|_| panic!("{SEED_ENV} must be a number"));
        return if group == 0 { vec![seed] } else { Vec::new() };
    }
    let count = scaled(20) as u64;
    let base = if soak() {
        // Fresh seeds on every soak run; each is printed, so any can be replayed.
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(1000, |d| d.as_secs() % 1_000_000 * 1000)
    } else {
        1
    };
    (base..base + count)
        .filter(|s| (s - base) % GROUPS == group)
        .collect()
}

/// What one seed did.
#[derive(Default)]
struct Report {
    documents: usize,
    deleted: usize,
    blobs: usize,
    conflicts: u64,
    faults: Stats,
    converged_after: Duration,
}

/// Prints how to replay the seed if the test panics while this is alive.
struct ReplayHint(u64);

impl Drop for ReplayHint {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!(
                "network faults: seed {} failed; replay it alone with {SEED_ENV}={}",
                self.0, self.0
            );
        }
    }
}

async fn run_group(group: u64) {
    let started = Instant::now();
    let seeds = seeds(group);
    let mut total = Report::default();
    for &seed in &seeds {
        let report = run_seed(seed).await;
        eprintln!(
            "network faults: seed {seed}: {} documents ({} deleted, {} blobs), {} conflicts, \
             {} connections, {} cuts, {} stalls, {} delays, {} KiB, converged {:.1}s after healing",
            report.documents,
            report.deleted,
            report.blobs,
            report.conflicts,
            report.faults.connections,
            report.faults.cuts,
            report.faults.stalls,
            report.faults.delays,
            report.faults.bytes / 1024,
            report.converged_after.as_secs_f64()
        );
        total.documents += report.documents;
        total.conflicts += report.conflicts;
        total.faults.connections += report.faults.connections;
        total.faults.cuts += report.faults.cuts;
        total.faults.stalls += report.faults.stalls;
        total.faults.delays += report.faults.delays;
    }
    eprintln!(
        "network faults: {} seeds in {:.1}s: {} cuts, {} stalls, {} delays, {} conflicts",
        seeds.len(),
        started.elapsed().as_secs_f64(),
        total.faults.cuts,
        total.faults.stalls,
        total.faults.delays,
        total.conflicts
    );
    if seeds.len() >= 5 {
        // The runs proved something only if the faults and the conflicts happened.
        assert!(total.faults.cuts > 0, "no connection was cut");
        assert!(total.faults.stalls > 0, "no connection stalled");
        assert!(total.faults.delays > 0, "no chunk was delayed");
        assert!(total.conflicts > 0, "no conflict happened");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn network_faults_converge_seeds_a() {
    run_group(0).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn network_faults_converge_seeds_b() {
    run_group(1).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn network_faults_converge_seeds_c() {
    run_group(2).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn network_faults_converge_seeds_d() {
    run_group(3).await;
}

/// One client: its database, the proxy it goes through, its replicator.
struct Client {
    db: Database,
    proxy: Proxy,
    replicator: Replicator,
}

async fn run_seed(seed: u64) -> Report {
    let _hint = ReplayHint(seed);
    let rng = Rng::new(seed);
    let gateway = Gateway::start(&gateway_config(), Storage::InMemory)
        .await
        .unwrap();
    let server = gateway.database("db").unwrap();
    let conflicts = Arc::new(AtomicU64::new(0));
    let mut clients = Vec::new();
    for i in 0..2u64 {
        let proxy = Proxy::start(
            gateway.public_addr(),
            rng.fork(100 + i).next_u64(),
            Some(Faults::HOSTILE),
        )
        .await;
        let db = Database::open_in_memory(&format!("client-{seed}-{i}")).unwrap();
        let url = format!("ws://{}/db", proxy.addr());
        let config = ReplicatorConfiguration::new(&db, Endpoint::url(&url).unwrap())
            .replicator_type(ReplicatorType::PushAndPull)
            .continuous(true)
            .authenticator(Authenticator::basic(USER, PASSWORD))
            .max_attempt_wait_time(Duration::from_millis(100));
        let replicator = Replicator::new(config).unwrap();
        let seen = conflicts.clone();
        let _token = replicator.add_document_replication_listener(move |docs| {
            let n = docs
                .iter()
                .filter(|d| matches!(d.error, Some(ReplicatorError::Conflict { .. })))
                .count();
            seen.fetch_add(n as u64, Ordering::SeqCst);
        });
        replicator.start();
        clients.push(Client {
            db,
            proxy,
            replicator,
        });
    }

    // Everyone edits at once, through the faults.
    let mut edits = Vec::new();
    for (i, client) in clients.iter().enumerate() {
        let db = client.db.clone();
        let rng = rng.fork(200 + i as u64);
        let actor = format!("c{i}");
        edits.push(tokio::task::spawn_blocking(move || {
            client_edits(&db, rng, &actor, seed);
        }));
    }
    gateway_edits(gateway.admin_addr(), rng.fork(300), seed).await;
    for edit in edits {
        edit.await.unwrap();
    }

    // The network heals; everyone must end up with the same data.
    let mut report = Report::default();
    for client in &clients {
        client.proxy.heal();
        let stats = client.proxy.stats();
        report.faults.connections += stats.connections;
        report.faults.cuts += stats.cuts;
        report.faults.stalls += stats.stalls;
        report.faults.delays += stats.delays;
        report.faults.bytes += stats.bytes;
    }
    let healed = Instant::now();
    let agreed = wait_until_converged(seed, &server, &clients).await;
    report.converged_after = healed.elapsed();

    for client in &clients {
        client.replicator.stop();
    }
    for (i, client) in clients.iter().enumerate() {
        let status = tokio::time::timeout(STEP, client.replicator.wait_until_stopped_async())
            .await
            .unwrap_or_else(|_| panic!("seed {seed}: client {i} did not stop"));
        assert!(
            status.error.is_none(),
            "seed {seed}: client {i} stopped with {:?}",
            status.error
        );
    }
    // Nothing changed while stopping; the blobs are all there.
    let label = format!("seed {seed}");
    let server_blobs = check_blobs(&server, &agreed, &format!("{label}, gateway"));
    for (i, client) in clients.iter().enumerate() {
        let mine = snapshot(&client.db);
        assert!(
            mine == agreed,
            "{label}: client {i} changed after convergence: {:#?}",
            differences(&mine, &agreed, 5)
        );
        let blobs = check_blobs(&client.db, &mine, &format!("{label}, client {i}"));
        assert_eq!(blobs, server_blobs, "{label}: client {i}: the blobs differ");
    }
    assert_eq!(snapshot(&server), agreed, "{label}: the gateway changed");
    assert!(
        agreed.len() >= SHARED_IDS as usize,
        "{label}: only {} documents",
        agreed.len()
    );
    report.documents = agreed.len();
    report.deleted = agreed.values().filter(|d| d.deleted).count();
    report.blobs = server_blobs.len();
    report.conflicts = conflicts.load(Ordering::SeqCst);
    gateway.shutdown().await;
    report
}

/// Waits until both replicators are idle and the three databases identical, twice in a
/// row; returns the common snapshot. Panics if a replicator stops, or after [`CONVERGE`].
async fn wait_until_converged(seed: u64, server: &Database, clients: &[Client]) -> Snapshot {
    let deadline = Instant::now() + CONVERGE;
    let mut agreed_before: Option<Snapshot> = None;
    loop {
        let statuses: Vec<ReplicatorStatus> =
            clients.iter().map(|c| c.replicator.status()).collect();
        for (i, status) in statuses.iter().enumerate() {
            assert!(
                status.activity != ActivityLevel::Stopped,
                "seed {seed}: client {i} stopped: {:?}",
                status.error
            );
        }
        let idle = statuses.iter().all(|s| s.activity == ActivityLevel::Idle);
        let ours = snapshot(server);
        let theirs: Vec<Snapshot> = clients.iter().map(|c| snapshot(&c.db)).collect();
        let agreed = idle && theirs.iter().all(|s| *s == ours);
        if agreed && agreed_before.as_ref() == Some(&ours) {
            return ours;
        }
        if Instant::now() >= deadline {
            let activities: Vec<_> = statuses.iter().map(|s| s.activity).collect();
            panic!(
                "seed {seed}: not converged {CONVERGE:?} after healing (clients {activities:?}); \
                 gateway vs client 0: {:#?}; gateway vs client 1: {:#?}",
                differences(&ours, &theirs[0], 5),
                differences(&ours, &theirs[1], 5),
            );
        }
        agreed_before = agreed.then_some(ours);
        tokio::time::sleep(Duration::from_millis(150)).await;
    }
}

// ----- the edits -----

/// A document ID: usually one every actor edits, sometimes one of the actor's own.
fn pick_id(rng: &mut Rng, actor: &str) -> String {
    if rng.chance(70) {
        format!("doc-{:02}", rng.below(SHARED_IDS))
    } else {
        format!("{actor}-{:02}", rng.below(OWN_IDS))
    }
}

/// Blob content: mostly a few KiB, sometimes large enough to span many frames.
fn blob_bytes(rng: &mut Rng) -> Vec<u8> {
    let len = if rng.chance(10) {
        rng.between(64 * 1024, 160 * 1024)
    } else {
        rng.between(200, 6000)
    };
    bytes_of(len as usize, rng.next_u64())
}

/// What an edit does, by a draw in 0..100.
enum Op {
    Delete,
    Update,
    UpdateWithBlob,
}

fn pick_op(rng: &mut Rng) -> Op {
    match rng.below(100) {
        0..20 => Op::Delete,
        20..80 => Op::Update,
        _ => Op::UpdateWithBlob,
    }
}

/// Local saves on a client, on top of whatever is current.
fn client_edits(db: &Database, mut rng: Rng, actor: &str, seed: u64) {
    for step in 0..EDITS {
        std::thread::sleep(Duration::from_millis(rng.below(80)));
        let id = pick_id(&mut rng, actor);
        let op = pick_op(&mut rng);
        let current = db.document(&id).unwrap();
        if let Op::Delete = op {
            if let Some(doc) = current {
                db.delete(&doc).unwrap();
            }
            continue;
        }
        let mut doc = current.map_or_else(|| MutableDocument::with_id(&id), |d| d.to_mutable());
        doc.set("by", actor).set("step", step).set("seed", seed);
        if let Op::UpdateWithBlob = op {
            let blob = Blob::from_bytes("application/octet-stream", blob_bytes(&mut rng));
            doc.set_blob("file", blob);
        }
        db.save(&mut doc).unwrap();
    }
}

/// REST writes on the gateway's admin port: read the current revision, write over it; a
/// 409 (or a 404 for a deletion) means a replicated revision came in between, so read again
/// (three tries).
async fn gateway_edits(admin: SocketAddr, mut rng: Rng, seed: u64) {
    let http = reqwest::Client::new();
    for step in 0..EDITS {
        tokio::time::sleep(Duration::from_millis(rng.below(80))).await;
        let id = pick_id(&mut rng, "gw");
        let op = pick_op(&mut rng);
        let blob = matches!(op, Op::UpdateWithBlob).then(|| blob_bytes(&mut rng));
        let url = format!("http://{admin}/db/{id}");
        for _ in 0..3 {
            let current = http.get(&url).send().await.unwrap();
            let rev = if current.status().is_success() {
                let body: Value = current.json().await.unwrap();
                Some(body["_rev"].as_str().unwrap().to_owned())
            } else {
                None
            };
            let response = match (&op, &rev) {
                (Op::Delete, None) => break,
                (Op::Delete, Some(rev)) => http.delete(format!("{url}?rev={rev}")).send(),
                (_, rev) => {
                    let mut body = json!({"by": "gw", "step": step, "seed": seed});
                    if let Some(bytes) = &blob {
                        body["_attachments"] = json!({"file": {
                            "content_type": "application/octet-stream",
                            "data": base64(bytes),
                        }});
                    }
                    let target = match rev {
                        Some(rev) => format!("{url}?rev={rev}"),
                        None => url.clone(),
                    };
                    http.put(target).json(&body).send()
                }
            }
            .await
            .unwrap();
            match response.status().as_u16() {
                200 | 201 => break,
                // A replicated revision (or deletion) came in between.
                409 => continue,
                404 if matches!(op, Op::Delete) => continue,
                status => panic!(
                    "seed {seed}: REST write of {id}: {status} {}",
                    response.text().await.unwrap_or_default()
                ),
            }
        }
    }
}
