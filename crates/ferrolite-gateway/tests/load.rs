//! Load: many continuous ferrolite clients against one gateway for a while, with writers on
//! REST and on `_blipsync`.
//!
//! 100 clients for a minute of writing; with `FERROLITE_SOAK=1`, 1,000 clients for 10
//! minutes. The gateway (database `db`, four channels `c0`…`c3`, one user
//! reading each) runs in this test's process; the clients run in a child process (this
//! very test binary, run with `--exact load_child`), so that the resident memory read here
//! is the gateway's (and the REST writer's), not the clients'.
//!
//! - Client `k` authenticates with a session of the user reading channel `c<k mod 4>` and
//!   replicates continuously into its own in-memory database: every fifth client pushes
//!   and pulls and writes a document to its channel in turn (4 documents a second across
//!   them), the others pull.
//! - The test writes 4 documents a second over the admin REST API, channels in turn.
//! - Every status change of every replicator after they all connected is watched: a
//!   replication error, an offline or stopped replicator fails the test.
//! - When the writing ends, every document the gateway holds must be one that was written
//!   (the gateway lost none), and every client must hold exactly the documents of its
//!   channel.
//! - The gateway's memory does not grow with the traffic, only (slightly) with the
//!   documents stored. The bytes this process has allocated and not freed (counted by its
//!   global allocator: the gateway's heap) when the clients have converged must be within
//!   10% of their level at the baseline, and so must its resident memory. The baseline is
//!   read 10 s into the writing in the one-minute run, after the first minute in the soak
//!   run. Resident memory creeps up under load even with a flat heap (the allocator keeps
//!   freed memory for reuse), fastest in the first minutes.
//! - Three seconds after the clients converged, still connected but quiet, the heap is at
//!   least 128 KiB per client lower: idle connections free their compressors.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use cap::Cap;
use ferrolite::{
    ActivityLevel, Authenticator, Database, Endpoint, ListenerToken, MutableDocument, Replicator,
    ReplicatorConfiguration, ReplicatorStatus, ReplicatorType,
};
use ferrolite_gateway::{Gateway, GatewayConfig, Storage};
use ferrolite_testkit::hostile::{mib, resident_bytes, PeakResident};
use serde_json::{json, Value};

const CHANNELS: usize = 4;
/// Documents written per second, over REST and over `_blipsync` each.
const WRITES_PER_SECOND: u64 = 4;
/// How much the heap and the resident memory may grow from the baseline to the end.
const MAX_GROWTH: f64 = 0.10;

/// Counts what this process allocates: the gateway's heap (the clients run in a child).
#[global_allocator]
static ALLOCATOR: Cap<std::alloc::System> = Cap::new(std::alloc::System, usize::MAX);

fn heap_bytes() -> u64 {
    ALLOCATOR.allocated() as u64
}

const CHILD_ENV: &str = "FERROLITE_LOAD_CHILD";
const ADMIN_ENV: &str = "FERROLITE_LOAD_ADMIN";

/// The size of the run.
#[derive(Debug, Clone, Copy)]
struct Scale {
    clients: usize,
    writing: Duration,
    /// How long the clients may take to connect, and to converge at the end.
    patience: Duration,
    /// When the memory baseline is read, after the writing started.
    baseline_after: Duration,
}

impl Scale {
    fn from_env() -> Scale {
        if std::env::var("FERROLITE_SOAK").is_ok_and(|v| v == "1") {
            Scale {
                clients: 1_000,
                writing: Duration::from_secs(600),
                patience: Duration::from_secs(300),
                baseline_after: Duration::from_secs(60),
            }
        } else {
            Scale {
                clients: 100,
                writing: Duration::from_secs(60),
                patience: Duration::from_secs(60),
                baseline_after: Duration::from_secs(10),
            }
        }
    }
}

fn user(channel: usize) -> String {
    format!("reader-c{channel}")
}

/// The channel a document ID names: `rest-c<n>-…` or `push-c<n>-…`.
fn channel_of(id: &str) -> Option<usize> {
    let rest = id
        .strip_prefix("rest-c")
        .or_else(|| id.strip_prefix("push-c"))?;
    rest.split('-').next()?.parse().ok()
}

/// Clients hold sockets on each side: make room for them.
fn raise_open_files() {
    use rustix::process::{getrlimit, setrlimit, Resource, Rlimit};
    let limit = getrlimit(Resource::Nofile);
    if limit.current != limit.maximum {
        let _ = setrlimit(
            Resource::Nofile,
            Rlimit {
                current: limit.maximum,
                maximum: limit.maximum,
            },
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn continuous_clients_under_load_keep_up_in_bounded_memory() {
    let scale = Scale::from_env();
    raise_open_files();
    let users: serde_json::Map<String, Value> = (0..CHANNELS)
        .map(|c| {
            (
                user(c),
                json!({"password": "pw", "admin_channels": [format!("c{c}")]}),
            )
        })
        .collect();
    let config = json!({"interface": "127.0.0.1:0", "adminInterface": "127.0.0.1:0",
        "databases": {"db": {"users": users}}});
    let g = Gateway::start(
        &GatewayConfig::from_json(&config.to_string()).unwrap(),
        Storage::InMemory,
    )
    .await
    .unwrap();

    let started = Instant::now();
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "load_child", "--nocapture", "--test-threads=1"])
        .env(CHILD_ENV, g.public_addr().to_string())
        .env(ADMIN_ENV, g.admin_addr().to_string())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut to_child = child.stdin.take().unwrap();
    let (lines_tx, lines) = std::sync::mpsc::channel::<String>();
    let stdout = child.stdout.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if lines_tx.send(line).is_err() {
                return;
            }
        }
    });
    let wait_for = |prefix: &str, limit: Duration| -> String {
        let deadline = Instant::now() + limit;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match lines.recv_timeout(left) {
                // libtest may print `test load_child ... ` before the child's first line.
                Ok(line) if line.contains(prefix) => {
                    return line[line.find(prefix).unwrap_or(0)..].to_owned()
                }
                Ok(_) => {}
                Err(e) => panic!("no {prefix} from the clients: {e}"),
            }
        }
    };

    wait_for("READY", scale.patience);
    let connected = started.elapsed();
    let peak = PeakResident::start();
    // The resident memory every 5 s, to show its trend.
    let samples = {
        let stop = Arc::new(AtomicBool::new(false));
        let series = Arc::new(Mutex::new(Vec::new()));
        let (stop2, series2) = (stop.clone(), series.clone());
        let sampler = tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(5));
            while !stop2.load(Ordering::SeqCst) {
                tick.tick().await;
                let rss = mib(resident_bytes());
                let heap = mib(heap_bytes());
                series2
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .push(format!("{rss:.0}/{heap:.0}"));
            }
        });
        (stop, series, sampler)
    };

    // The REST writer: WRITES_PER_SECOND documents a second, channels in turn.
    let stop = Arc::new(AtomicBool::new(false));
    let written = Arc::new(AtomicU64::new(0));
    let writer = {
        let stop = stop.clone();
        let written = written.clone();
        let admin = g.admin_addr();
        tokio::spawn(async move {
            let http = reqwest::Client::new();
            let mut tick = tokio::time::interval(Duration::from_millis(1000 / WRITES_PER_SECOND));
            let mut n = 0u64;
            while !stop.load(Ordering::SeqCst) {
                tick.tick().await;
                let channel = n as usize % CHANNELS;
                let id = format!("rest-c{channel}-{n:07}");
                let response = http
                    .put(format!("http://{admin}/db/{id}"))
                    .json(&json!({"channels": [format!("c{channel}")], "n": n, "via": "rest"}))
                    .send()
                    .await
                    .unwrap();
                assert_eq!(response.status(), reqwest::StatusCode::CREATED, "{id}");
                n += 1;
                written.store(n, Ordering::SeqCst);
            }
        })
    };

    tokio::time::sleep(scale.baseline_after).await;
    let baseline = resident_bytes();
    let heap_baseline = heap_bytes();
    tokio::time::sleep(scale.writing.saturating_sub(scale.baseline_after)).await;
    stop.store(true, Ordering::SeqCst);
    writer.await.unwrap();
    let rest_written = written.load(Ordering::SeqCst);
    writeln!(to_child, "DONE {rest_written}").unwrap();
    to_child.flush().unwrap();

    let converged = wait_for("CONVERGED", scale.patience * 2);
    let end = resident_bytes();
    let heap_end = heap_bytes();
    // Quiet, still connected: each connection frees its compressor after 2 s idle.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let heap_idle = heap_bytes();
    let peak = peak.finish();
    samples.0.store(true, Ordering::SeqCst);
    samples.2.abort();
    let series = samples
        .1
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .join(" ");
    writeln!(to_child, "STOP").unwrap();
    to_child.flush().unwrap();
    let result = wait_for("RESULT", Duration::from_secs(60));
    let status = child.wait().unwrap();
    assert!(status.success(), "the clients failed: {status}");

    let on_gateway = g.database("db").unwrap().count().unwrap();
    eprintln!(
        "load: {} clients connected in {:.1} s; {rest_written} REST writes; {converged}; {result}; \
         gateway holds {on_gateway} documents; heap {:.1} MiB after {:.0} s of writing, {:.1} MiB \
         at the end ({:+.1}%); resident memory {:.1} MiB then, {:.1} MiB at the end \
         ({:+.1}%), peak {:.1} MiB; heap {:.1} MiB after 3 s of quiet; every 5 s (resident/heap): {series} MiB; {:.1} s in all",
        scale.clients,
        connected.as_secs_f64(),
        mib(heap_baseline),
        scale.baseline_after.as_secs_f64(),
        mib(heap_end),
        (heap_end as f64 / heap_baseline as f64 - 1.0) * 100.0,
        mib(baseline),
        mib(end),
        (end as f64 / baseline as f64 - 1.0) * 100.0,
        mib(peak),
        mib(heap_idle),
        started.elapsed().as_secs_f64()
    );
    // Each connection's compressor (about 256 KiB) is freed once it is quiet.
    let freed = heap_end.saturating_sub(heap_idle);
    assert!(
        freed >= scale.clients as u64 * 128 * 1024,
        "quiet connections kept their compressors: the heap went from {:.1} to {:.1} MiB",
        mib(heap_end),
        mib(heap_idle)
    );
    assert!(
        heap_end as f64 <= heap_baseline as f64 * (1.0 + MAX_GROWTH),
        "the heap grew from {:.1} MiB to {:.1} MiB",
        mib(heap_baseline),
        mib(heap_end)
    );
    assert!(
        end as f64 <= baseline as f64 * (1.0 + MAX_GROWTH),
        "resident memory grew from {:.1} MiB to {:.1} MiB",
        mib(baseline),
        mib(end)
    );
    g.shutdown().await;
}

// ----- the clients (child process) -----

/// What the status listener of one client saw after all had connected.
#[derive(Default)]
struct Health {
    armed: AtomicBool,
    idle_once: AtomicBool,
    errors: AtomicU64,
    offline: AtomicU64,
    stopped: AtomicU64,
    first_error: Mutex<Option<String>>,
}

impl Health {
    fn observe(&self, status: &ReplicatorStatus) {
        if status.activity == ActivityLevel::Idle {
            self.idle_once.store(true, Ordering::SeqCst);
        }
        if !self.armed.load(Ordering::SeqCst) {
            return;
        }
        if let Some(error) = &status.error {
            self.errors.fetch_add(1, Ordering::SeqCst);
            self.first_error
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .get_or_insert_with(|| error.to_string());
        }
        match status.activity {
            ActivityLevel::Offline => {
                self.offline.fetch_add(1, Ordering::SeqCst);
            }
            ActivityLevel::Stopped => {
                self.stopped.fetch_add(1, Ordering::SeqCst);
            }
            _ => {}
        }
    }
}

struct Client {
    channel: usize,
    pushes: bool,
    db: Database,
    replicator: Replicator,
    health: Arc<Health>,
    _token: ListenerToken,
}

/// The clients. Does nothing unless started by the load test.
#[test]
fn load_child() {
    let Ok(public) = std::env::var(CHILD_ENV) else {
        return;
    };
    let admin = std::env::var(ADMIN_ENV).unwrap();
    let scale = Scale::from_env();
    raise_open_files();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let http = reqwest::Client::new();
    let session = |channel: usize| {
        let http = http.clone();
        let admin = admin.clone();
        runtime.block_on(async move {
            let reply: Value = http
                .post(format!("http://{admin}/db/_session"))
                .json(&json!({"name": user(channel)}))
                .send()
                .await
                .unwrap()
                .json()
                .await
                .unwrap();
            reply["session_id"].as_str().unwrap().to_owned()
        })
    };

    let url = format!("ws://{public}/db");
    let clients: Vec<Client> = (0..scale.clients)
        .map(|k| {
            let channel = k % CHANNELS;
            let pushes = k % 5 == 0;
            let db = Database::open_in_memory(&format!("client{k}")).unwrap();
            let config = ReplicatorConfiguration::new(&db, Endpoint::url(&url).unwrap())
                .replicator_type(if pushes {
                    ReplicatorType::PushAndPull
                } else {
                    ReplicatorType::Pull
                })
                .continuous(true)
                .authenticator(Authenticator::session(session(channel)));
            let replicator = Replicator::new(config).unwrap();
            let health = Arc::new(Health::default());
            let watched = health.clone();
            let token = replicator.add_change_listener(move |status| watched.observe(status));
            replicator.start();
            Client {
                channel,
                pushes,
                db,
                replicator,
                health,
                _token: token,
            }
        })
        .collect();
    let deadline = Instant::now() + scale.patience;
    while clients
        .iter()
        .any(|c| !c.health.idle_once.load(Ordering::SeqCst))
    {
        assert!(Instant::now() < deadline, "the clients did not all connect");
        std::thread::sleep(Duration::from_millis(100));
    }
    for client in &clients {
        client.health.armed.store(true, Ordering::SeqCst);
    }
    println!("READY");

    // Writes over _blipsync: the pushing clients in turn, WRITES_PER_SECOND a second.
    let pushers: Vec<&Client> = clients.iter().filter(|c| c.pushes).collect();
    let writing = Instant::now();
    let mut pushed = 0u64;
    while writing.elapsed() < scale.writing {
        let client = pushers[pushed as usize % pushers.len()];
        let id = format!("push-c{}-{pushed:07}", client.channel);
        client
            .db
            .save(
                MutableDocument::with_id(&id)
                    .set("channels", vec![format!("c{}", client.channel)])
                    .set("n", pushed)
                    .set("via", "blipsync"),
            )
            .unwrap();
        pushed += 1;
        std::thread::sleep(Duration::from_millis(1000 / WRITES_PER_SECOND));
    }

    // The REST writer is done too: everything written is known.
    let mut stdin = std::io::stdin().lock();
    let mut line = String::new();
    stdin.read_line(&mut line).unwrap();
    let rest_written: u64 = line
        .trim()
        .strip_prefix("DONE ")
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("expected DONE, got {line:?}"));
    let mut expected: BTreeMap<usize, BTreeSet<String>> = BTreeMap::new();
    for n in 0..rest_written {
        let channel = n as usize % CHANNELS;
        expected
            .entry(channel)
            .or_default()
            .insert(format!("rest-c{channel}-{n:07}"));
    }
    for n in 0..pushed {
        let channel = pushers[n as usize % pushers.len()].channel;
        expected
            .entry(channel)
            .or_default()
            .insert(format!("push-c{channel}-{n:07}"));
    }

    // Every client ends with exactly the documents of its channel.
    let waiting = Instant::now();
    let lagging = |clients: &[Client]| -> Vec<(usize, usize, usize)> {
        clients
            .iter()
            .enumerate()
            .filter_map(|(k, c)| {
                let want = &expected[&c.channel];
                let have = c.db.count().unwrap() as usize;
                let complete = have == want.len()
                    && want.iter().all(|id| c.db.document(id).unwrap().is_some());
                (!complete).then_some((k, have, want.len()))
            })
            .collect()
    };
    loop {
        let behind = lagging(&clients);
        if behind.is_empty() {
            break;
        }
        assert!(
            waiting.elapsed() < scale.patience,
            "{} clients did not converge, e.g. (client, has, expected) {:?}",
            behind.len(),
            &behind[..behind.len().min(5)]
        );
        std::thread::sleep(Duration::from_millis(250));
    }
    let converged = waiting.elapsed();
    // No document on the gateway that nobody wrote, none in the wrong channel.
    let all: Value = runtime.block_on(async {
        http.get(format!("http://{admin}/db/_all_docs"))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap()
    });
    let on_gateway: BTreeSet<String> = all["rows"]
        .as_array()
        .unwrap()
        .iter()
        .map(|row| row["id"].as_str().unwrap().to_owned())
        .collect();
    let written: BTreeSet<String> = expected.values().flatten().cloned().collect();
    assert_eq!(on_gateway, written, "the gateway's documents");
    assert!(written.iter().all(|id| channel_of(id).is_some()));

    let errors: u64 = clients
        .iter()
        .map(|c| c.health.errors.load(Ordering::SeqCst))
        .sum();
    let offline: u64 = clients
        .iter()
        .map(|c| c.health.offline.load(Ordering::SeqCst))
        .sum();
    let stopped: u64 = clients
        .iter()
        .map(|c| c.health.stopped.load(Ordering::SeqCst))
        .sum();
    let first_error = clients.iter().find_map(|c| {
        c.health
            .first_error
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    });
    let connected = clients
        .iter()
        .filter(|c| {
            matches!(
                c.replicator.status().activity,
                ActivityLevel::Idle | ActivityLevel::Busy
            )
        })
        .count();
    println!(
        "CONVERGED in {:.1} s after the writing ended ({} documents, {pushed} pushed by {} clients)",
        converged.as_secs_f64(),
        written.len(),
        pushers.len()
    );
    line.clear();
    stdin.read_line(&mut line).unwrap();
    assert_eq!(line.trim(), "STOP");

    for client in &clients {
        client.health.armed.store(false, Ordering::SeqCst);
        client.replicator.stop();
    }
    for client in &clients {
        client
            .replicator
            .wait_until_stopped(Duration::from_secs(10));
    }
    println!(
        "RESULT errors={errors} offline={offline} stopped={stopped} connected={connected}/{}",
        clients.len()
    );
    assert_eq!(
        (errors, offline, stopped),
        (0, 0, 0),
        "replication errors, offline or stopped replicators; first error: {first_error:?}"
    );
    assert_eq!(connected, clients.len(), "clients not connected at the end");
}
