//! Gateway benchmark: many continuous pullers and REST writers against one gateway on
//! 127.0.0.1, and the cost of a JavaScript sync function beside the default routing.
//!
//! Run with `cargo xtask bench gateway [--clients N] [--writes W] [--rate R] [--seconds S]
//! [--rounds K] [--quick]` (defaults: N = 1,000, W = 5,000, R = 200 writes/s, S = 10, K = 3;
//! `--quick` is N = 100, W = 1,000, R = 100, S = 3, K = 1 unless given).
//!
//! Two kinds of process, both this executable:
//!
//! - the **gateway** (`--role server`, `server.rs`): [`ferrolite_gateway::Gateway`] alone
//!   in its process, on-disk databases in a temporary directory, so `/proc/<pid>/status`
//!   (`VmHWM`) and `/proc/<pid>/stat` give its own peak memory and CPU time;
//! - the **harness** (no `--role`): the REST writers (`writers.rs`, reqwest on a tokio
//!   runtime of its own) and the N clients (`clients.rs`, continuous pull replicators on
//!   ferrolite's runtime, each into its own in-memory database).
//!
//! Steps:
//!
//! 1. **setup** (timed, not a headline figure): a gateway with database `bench` (default
//!    routing, `channel(doc.channels)`); users `u<k>` with a password and
//!    `admin_channels: ["c<k>"]` created through the admin REST API, 8 requests in flight
//!    (Argon2id hashing dominates); one session per user (admin `POST /bench/_session`);
//!    then that gateway stops and a new process starts on the same directory (users and
//!    sessions are saved), so the reported peak memory is the one of serving the clients,
//!    not what hashing left behind (reported apart); N continuous pull replicators
//!    authenticated by those sessions, until each has been idle (connected and caught up)
//!    once;
//! 2. **throughput**: W documents `{"channels":"c<k>","t":<µs>,"pad":<200 chars>}`, each
//!    to a random client's channel, written by 16 concurrent `PUT`s as fast as the
//!    gateway accepts them → writes/s; then every document must reach its client;
//! 3. **latency**: R·S documents at R writes/s (16 writers, each write sent at its due
//!    time): for each, the time from just before its `PUT` to the change listener of the
//!    subscribed client's database → median and p99; writes not arrived 15 s after the
//!    last one are `lost`. A client whose replicator went offline, stopped, reconnected or
//!    reported an error after setup is `dropped`;
//! 4. **sync function cost**: a second gateway with two databases, `plain` (default
//!    routing) and `js` (the user-profile example's JavaScript function, read from
//!    `examples/userprofile/gateway-config.json`), no clients; K rounds of W identical
//!    user-profile documents into each (order alternating per round), 16 in flight →
//!    medians of writes/s and `js_cost_ratio` = default ÷ JavaScript.
//!
//! Both processes raise their soft open-file limit to the hard one (N clients hold N
//! sockets on each side).
//!
//! The output is a table, then one line: `bench gateway: clients=N setup_s=…
//! writes_per_s=… p50_ms=… p99_ms=… lost=… dropped=… gateway_peak_mb=… js_writes_per_s=…
//! default_writes_per_s=… js_cost_ratio=…`.

mod clients;
mod procfs;
mod server;
mod writers;

use std::collections::BTreeMap;
use std::error::Error;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::clients::{Clients, Phase, Tracker};
use crate::procfs::Server;
use crate::writers::{Docs, Rest, Written};

type BoxError = Box<dyn Error + Send + Sync>;
type Result<T> = std::result::Result<T, BoxError>;

const USAGE: &str = "usage: gateway [--clients N] [--writes W] [--rate R] [--seconds S] \
                     [--rounds K] [--quick]";

/// The user-profile example's configuration, whose sync function is measured.
const USERPROFILE_CONFIG: &str =
    include_str!("../../../../examples/userprofile/gateway-config.json");

/// Concurrent `PUT`s of the writers.
const WRITERS: usize = 16;
/// Concurrent user and session creations.
const SETUP_INFLIGHT: usize = 8;
/// How long the latency phase waits for its last writes to arrive.
const ARRIVAL_GRACE: Duration = Duration::from_secs(15);
/// How long the throughput phase waits for its writes to arrive.
const DRAIN_LIMIT: Duration = Duration::from_secs(120);

/// The command line.
struct Args {
    clients: usize,
    writes: usize,
    rate: f64,
    seconds: f64,
    rounds: usize,
}

fn main() -> Result<()> {
    let raw: Vec<String> = std::env::args().skip(1).collect();
    if raw.iter().any(|a| a == "--role") {
        let flag = |name: &str| {
            raw.iter()
                .position(|a| a == name)
                .and_then(|i| raw.get(i + 1))
                .map(PathBuf::from)
                .ok_or_else(|| format!("--role server needs {name}"))
        };
        return server::run(&flag("--config")?, &flag("--dir")?);
    }
    let args = parse_args(raw.into_iter())?;
    if !procfs::available() {
        return Err("bench gateway reads /proc for CPU and memory: Linux only".into());
    }
    let nofile = procfs::raise_nofile()?;
    let needed = args.clients as u64 + 256;
    if nofile < needed {
        return Err(format!(
            "{} clients need about {needed} open files; the limit is {nofile} (raise the hard limit)",
            args.clients
        )
        .into());
    }
    let workspace = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let workspace = workspace.canonicalize().unwrap_or(workspace);
    let scratch = target_dir(&workspace).join("bench-gateway");
    std::fs::create_dir_all(&scratch)?;
    let dir = tempfile::Builder::new()
        .prefix("run-")
        .tempdir_in(&scratch)?;
    println!(
        "bench gateway: ferrolite-gateway {} in its own process, {} clients, {} writes, \
         {} writes/s for {} s, {} round(s) of the sync function comparison",
        env!("CARGO_PKG_VERSION"),
        args.clients,
        args.writes,
        args.rate,
        args.seconds,
        args.rounds
    );
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("bench-writer")
        .enable_all()
        .build()?;
    let main = run_main(&args, dir.path(), &runtime)?;
    let compare = run_compare(&args, dir.path(), &runtime)?;
    report(&args, nofile, &main, &compare);
    Ok(())
}

/// The cargo target directory: this executable lives in `<target>/<profile>/deps/`.
fn target_dir(workspace: &Path) -> PathBuf {
    std::env::current_exe()
        .ok()
        .and_then(|exe| exe.ancestors().nth(3).map(Path::to_path_buf))
        .filter(|dir| dir.join("CACHEDIR.TAG").is_file())
        .unwrap_or_else(|| workspace.join("target"))
}

fn parse_args(mut args: impl Iterator<Item = String>) -> Result<Args> {
    let (mut clients, mut writes, mut rate, mut seconds, mut rounds) =
        (None, None, None, None, None);
    let mut quick = false;
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--clients" => clients = Some(value(&arg, args.next())?),
            "--writes" => writes = Some(value(&arg, args.next())?),
            "--rate" => rate = Some(value(&arg, args.next())?),
            "--seconds" => seconds = Some(value(&arg, args.next())?),
            "--rounds" => rounds = Some(value(&arg, args.next())?),
            "--quick" => quick = true,
            // `cargo bench` passes `--bench` to every bench target.
            "--bench" => {}
            "--help" | "-h" => {
                println!("{USAGE}");
                std::process::exit(0);
            }
            other => return Err(format!("unknown argument `{other}`\n{USAGE}").into()),
        }
    }
    let pick = |given: Option<f64>, full: f64, short: f64| {
        given.unwrap_or(if quick { short } else { full })
    };
    let args = Args {
        clients: clients.unwrap_or(if quick { 100 } else { 1000 }),
        writes: writes.unwrap_or(if quick { 1000 } else { 5000 }),
        rate: pick(rate, 200.0, 100.0),
        seconds: pick(seconds, 10.0, 3.0),
        rounds: rounds.unwrap_or(if quick { 1 } else { 3 }),
    };
    if args.clients == 0 || args.writes == 0 || args.rounds == 0 {
        return Err("--clients, --writes and --rounds must be at least 1".into());
    }
    if !(args.rate > 0.0 && args.seconds > 0.0) {
        return Err("--rate and --seconds must be positive".into());
    }
    Ok(args)
}

fn value<T: std::str::FromStr>(flag: &str, value: Option<String>) -> Result<T> {
    let value = value.ok_or_else(|| format!("{flag} needs a value\n{USAGE}"))?;
    value
        .parse()
        .map_err(|_| format!("{flag}: `{value}` is not a valid number").into())
}

/// A small deterministic generator (xorshift64*) for the target channels.
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: usize) -> u32 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        let x = self.0.wrapping_mul(0x2545_F491_4F6C_DD1D);
        u32::try_from(x % n as u64).unwrap_or(0)
    }
}

/// Starts a gateway process on a configuration written to `<dir>/<name>.json`, data in
/// `<dir>/<name>/`; returns it, its admin port and its public port.
fn start_gateway(dir: &Path, name: &str, config: &Value) -> Result<(Server, u64, u64)> {
    let config_path = dir.join(format!("{name}.json"));
    std::fs::write(&config_path, serde_json::to_vec_pretty(config)?)?;
    let data = dir.join(name);
    std::fs::create_dir_all(&data)?;
    let (server, ready) = Server::spawn(&config_path, &data)?;
    let admin = ready
        .get("admin")
        .and_then(Value::as_u64)
        .ok_or("the gateway did not say its admin port")?;
    let public = ready.get("public").and_then(Value::as_u64).unwrap_or(0);
    let nofile = ready.get("nofile").and_then(Value::as_u64).unwrap_or(0);
    eprintln!(
        "gateway `{name}`: pid {}, public 127.0.0.1:{public}, admin 127.0.0.1:{admin}, open-file limit {nofile}",
        server.pid()
    );
    Ok((server, admin, public))
}

/// CPU seconds of a process and of its threads (by name) between two readings.
struct Cpu {
    pid: String,
    total: f64,
    threads: BTreeMap<String, f64>,
}

impl Cpu {
    fn start(pid: &str) -> Result<Cpu> {
        Ok(Cpu {
            pid: pid.to_owned(),
            total: procfs::cpu_seconds(pid)?,
            threads: procfs::thread_cpu(pid),
        })
    }

    /// The process's CPU seconds since `start`, and the busiest thread groups.
    fn since(&self) -> Result<(f64, Vec<(String, f64)>)> {
        let total = procfs::cpu_seconds(&self.pid)? - self.total;
        let mut threads: Vec<(String, f64)> = procfs::thread_cpu(&self.pid)
            .into_iter()
            .map(|(name, cpu)| {
                let before = self.threads.get(&name).copied().unwrap_or(0.0);
                (name, cpu - before)
            })
            .filter(|(_, cpu)| *cpu >= 0.01)
            .collect();
        threads.sort_by(|a, b| b.1.total_cmp(&a.1));
        threads.truncate(5);
        Ok((total, threads))
    }
}

/// What one phase with clients measured.
#[derive(Default)]
struct PhaseResult {
    written: Written,
    arrival_ms: Vec<f64>,
    lost: usize,
    wait_s: f64,
    wall_s: f64,
    gateway_cpu: f64,
    harness_cpu: f64,
    gateway_threads: Vec<(String, f64)>,
    harness_threads: Vec<(String, f64)>,
}

/// What the gateway with clients measured.
#[derive(Default)]
struct MainResult {
    users_s: f64,
    sessions_s: f64,
    connect_s: f64,
    connect_retries: u32,
    setup_peak_mb: f64,
    setup_rss_mb: f64,
    restart_s: f64,
    throughput: PhaseResult,
    latency: PhaseResult,
    dropped: usize,
    drop_reason: Option<String>,
    misrouted: u64,
    unknown: u64,
    peak_mb: f64,
    connected_rss_mb: f64,
    end_rss_mb: f64,
    end_threads: f64,
    harness_peak_mb: f64,
}

/// Steps 1–3: the gateway with N clients.
fn run_main(args: &Args, dir: &Path, runtime: &tokio::runtime::Runtime) -> Result<MainResult> {
    let config = json!({
        "interface": "127.0.0.1:0",
        "adminInterface": "127.0.0.1:0",
        "databases": { "bench": { "users": { "GUEST": { "disabled": true } } } },
    });
    let mut out = MainResult::default();
    let (gateway, admin, _) = start_gateway(dir, "main", &config)?;
    let rest = Rest::new(admin, "bench")?;
    let started = Instant::now();
    runtime.block_on(rest.create_users(args.clients, SETUP_INFLIGHT))?;
    out.users_s = started.elapsed().as_secs_f64();
    let started = Instant::now();
    let sessions = runtime.block_on(rest.create_sessions(args.clients, SETUP_INFLIGHT))?;
    out.sessions_s = started.elapsed().as_secs_f64();
    out.setup_peak_mb = procfs::status_mb(gateway.pid(), "VmHWM")?;
    out.setup_rss_mb = procfs::status_mb(gateway.pid(), "VmRSS")?;
    eprintln!(
        "setup: {} users in {:.1} s, {} sessions in {:.1} s; gateway peak {:.1} MB, now {:.1} MB",
        args.clients,
        out.users_s,
        args.clients,
        out.sessions_s,
        out.setup_peak_mb,
        out.setup_rss_mb
    );
    gateway.quit()?;
    // The gateway that serves the clients starts on the saved users and sessions, so its
    // memory is that of serving them, not what password hashing left behind.
    let started = Instant::now();
    let (gateway, admin, public) = start_gateway(dir, "main", &config)?;
    out.restart_s = started.elapsed().as_secs_f64();
    let rest = Rest::new(admin, "bench")?;

    let mut rng = Rng(0x5EED_0FFE_4401_1E55);
    let mut channels = |n: usize| {
        (0..n)
            .map(|_| rng.below(args.clients))
            .collect::<Vec<u32>>()
    };
    let paced = (args.rate * args.seconds).round().max(1.0) as usize;
    let tracker = Arc::new(Tracker::new(vec![
        Phase::new('t', channels(args.writes)),
        Phase::new('l', channels(paced)),
    ]));
    let started = Instant::now();
    let clients = Clients::start(
        &format!("ws://127.0.0.1:{public}/bench"),
        &sessions,
        &tracker,
    )?;
    let connect_limit = Duration::from_secs(60) + Duration::from_millis(100) * args.clients as u32;
    let mut last_report = Instant::now();
    while clients.idle() < args.clients {
        if started.elapsed() > connect_limit {
            return Err(format!(
                "only {} of {} clients connected within {:.0} s",
                clients.idle(),
                args.clients,
                connect_limit.as_secs_f64()
            )
            .into());
        }
        if last_report.elapsed() > Duration::from_secs(5) {
            eprintln!("  {} of {} clients idle", clients.idle(), args.clients);
            last_report = Instant::now();
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    out.connect_s = started.elapsed().as_secs_f64();
    out.connect_retries = clients.early_offline();
    out.connected_rss_mb = procfs::status_mb(gateway.pid(), "VmRSS")?;
    clients.arm();
    eprintln!(
        "setup: {} clients connected and idle in {:.1} s ({} offline before connecting); gateway RSS {:.1} MB",
        args.clients, out.connect_s, out.connect_retries, out.connected_rss_mb
    );

    // 2. throughput
    let docs = Docs::Tracked {
        tracker: tracker.clone(),
        phase: 0,
    };
    out.throughput = timed_phase(&gateway, &tracker, 0, DRAIN_LIMIT, || {
        runtime.block_on(rest.write(&docs, args.writes, WRITERS, None))
    })?;
    eprintln!(
        "throughput: {} writes in {:.2} s = {:.0} writes/s; all arrived {:.2} s after the last",
        args.writes,
        out.throughput.written.elapsed.as_secs_f64(),
        out.throughput.written.per_second(),
        out.throughput.wait_s
    );

    // 3. latency
    let docs = Docs::Tracked {
        tracker: tracker.clone(),
        phase: 1,
    };
    out.latency = timed_phase(&gateway, &tracker, 1, ARRIVAL_GRACE, || {
        runtime.block_on(rest.write(&docs, paced, WRITERS, Some(args.rate)))
    })?;
    eprintln!(
        "latency: {paced} writes at {} writes/s: median {:.1} ms, p99 {:.1} ms, lost {}",
        args.rate,
        percentile(&out.latency.arrival_ms, 0.5),
        percentile(&out.latency.arrival_ms, 0.99),
        out.latency.lost
    );

    (out.dropped, out.drop_reason) = clients.dropped();
    out.misrouted = tracker.misrouted();
    out.unknown = tracker.unknown();
    out.peak_mb = procfs::status_mb(gateway.pid(), "VmHWM")?;
    out.end_rss_mb = procfs::status_mb(gateway.pid(), "VmRSS")?;
    out.end_threads = procfs::status_value(gateway.pid(), "Threads")?;
    out.harness_peak_mb = procfs::status_mb("self", "VmHWM")?;
    clients.stop(Duration::from_secs(30));
    gateway.quit()?;
    Ok(out)
}

/// Runs `write`, then waits up to `limit` for its documents (phase `index`) to arrive;
/// CPU of both processes over the whole.
fn timed_phase(
    gateway: &Server,
    tracker: &Tracker,
    index: usize,
    limit: Duration,
    write: impl FnOnce() -> Result<Written>,
) -> Result<PhaseResult> {
    let gateway_cpu = Cpu::start(gateway.pid())?;
    let harness_cpu = Cpu::start("self")?;
    let started = Instant::now();
    let written = write()?;
    let waited = tracker.wait_all(index, limit);
    let wall_s = started.elapsed().as_secs_f64();
    let (gateway_total, gateway_threads) = gateway_cpu.since()?;
    let (harness_total, harness_threads) = harness_cpu.since()?;
    let arrivals = tracker.arrivals(index);
    Ok(PhaseResult {
        written,
        arrival_ms: arrivals.ms,
        lost: arrivals.lost,
        wait_s: waited.as_secs_f64(),
        wall_s,
        gateway_cpu: gateway_total,
        harness_cpu: harness_total,
        gateway_threads,
        harness_threads,
    })
}

/// What the sync function comparison measured: writes/s per round.
#[derive(Default)]
struct Compare {
    default: Vec<f64>,
    js: Vec<f64>,
    default_cpu: f64,
    js_cpu: f64,
}

/// Step 4: default routing against the user-profile JavaScript function.
fn run_compare(args: &Args, dir: &Path, runtime: &tokio::runtime::Runtime) -> Result<Compare> {
    let example: Value = serde_json::from_str(USERPROFILE_CONFIG)?;
    let sync = example
        .pointer("/databases/userprofile/sync")
        .and_then(Value::as_str)
        .ok_or("the user-profile example has no sync function")?;
    let config = json!({
        "interface": "127.0.0.1:0",
        "adminInterface": "127.0.0.1:0",
        "databases": { "plain": {}, "js": { "sync": sync } },
    });
    let (gateway, admin, _) = start_gateway(dir, "compare", &config)?;
    let plain = Rest::new(admin, "plain")?;
    let js = Rest::new(admin, "js")?;
    let mut out = Compare::default();
    for round in 0..args.rounds {
        let docs = Docs::Profiles {
            prefix: format!("r{round}w"),
        };
        let order: [(&Rest, bool); 2] = if round % 2 == 0 {
            [(&plain, false), (&js, true)]
        } else {
            [(&js, true), (&plain, false)]
        };
        for (rest, is_js) in order {
            let cpu = procfs::cpu_seconds(gateway.pid())?;
            let written = runtime.block_on(rest.write(&docs, args.writes, WRITERS, None))?;
            let cpu = procfs::cpu_seconds(gateway.pid())? - cpu;
            let (list, total) = if is_js {
                (&mut out.js, &mut out.js_cpu)
            } else {
                (&mut out.default, &mut out.default_cpu)
            };
            list.push(written.per_second());
            *total += cpu;
            eprintln!(
                "compare round {}/{}: {} {:.0} writes/s, gateway CPU {:.2} s",
                round + 1,
                args.rounds,
                if is_js { "js     " } else { "default" },
                written.per_second(),
                cpu
            );
        }
    }
    gateway.quit()?;
    Ok(out)
}

/// Nearest-rank percentile (`p` in 0..=1) of unsorted values; 0 when empty.
fn percentile(values: &[f64], p: f64) -> f64 {
    if values.is_empty() {
        return 0.0;
    }
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    let rank = ((p * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    sorted[rank - 1]
}

fn median(values: &[f64]) -> f64 {
    percentile(values, 0.5)
}

fn threads(list: &[(String, f64)]) -> String {
    list.iter()
        .map(|(name, cpu)| format!("{name} {cpu:.2}"))
        .collect::<Vec<_>>()
        .join(", ")
}

fn report(args: &Args, nofile: u64, main: &MainResult, compare: &Compare) {
    let setup_s = main.users_s + main.sessions_s + main.restart_s + main.connect_s;
    let (t, l) = (&main.throughput, &main.latency);
    let js = median(&compare.js);
    let default = median(&compare.default);
    let ratio = if js > 0.0 { default / js } else { 0.0 };
    let rows: Vec<(&str, String)> = vec![
        (
            "clients (continuous pullers, one channel each)",
            args.clients.to_string(),
        ),
        ("open-file limit (soft, raised to hard)", nofile.to_string()),
        (
            "setup: users (Argon2id, 8 in flight) / sessions / restart / connect, s",
            format!(
                "{:.1} / {:.1} / {:.1} / {:.1}",
                main.users_s, main.sessions_s, main.restart_s, main.connect_s
            ),
        ),
        (
            "setup: connection failures before all were idle",
            main.connect_retries.to_string(),
        ),
        (
            "throughput: writes/s accepted (16 concurrent PUTs)",
            format!(
                "{:.0} ({} in {:.2} s)",
                t.written.per_second(),
                t.written.count,
                t.written.elapsed.as_secs_f64()
            ),
        ),
        (
            "throughput: PUT response median / p99, ms",
            format!(
                "{:.1} / {:.1}",
                median(&t.written.put_ms),
                percentile(&t.written.put_ms, 0.99)
            ),
        ),
        (
            "throughput: arrival median / p99, ms; lost",
            format!(
                "{:.0} / {:.0}; {}",
                median(&t.arrival_ms),
                percentile(&t.arrival_ms, 0.99),
                t.lost
            ),
        ),
        (
            "throughput: last arrival after the last PUT, s",
            format!("{:.2}", t.wait_s),
        ),
        (
            "throughput: CPU s gateway / harness (wall s)",
            format!(
                "{:.2} / {:.2} ({:.2})",
                t.gateway_cpu, t.harness_cpu, t.wall_s
            ),
        ),
        (
            "latency: writes at rate",
            format!("{} at {} writes/s", l.written.count, args.rate),
        ),
        (
            "latency: REST write -> client, median / p99 / max, ms",
            format!(
                "{:.1} / {:.1} / {:.1}",
                median(&l.arrival_ms),
                percentile(&l.arrival_ms, 0.99),
                percentile(&l.arrival_ms, 1.0)
            ),
        ),
        (
            "latency: PUT response median / p99, ms",
            format!(
                "{:.1} / {:.1}",
                median(&l.written.put_ms),
                percentile(&l.written.put_ms, 0.99)
            ),
        ),
        (
            "latency: sends late by > 10 ms",
            l.written
                .late_ms
                .iter()
                .filter(|m| **m > 10.0)
                .count()
                .to_string(),
        ),
        (
            "latency: lost (not arrived 15 s after the last write)",
            l.lost.to_string(),
        ),
        (
            "latency: CPU s gateway / harness (wall s)",
            format!(
                "{:.2} / {:.2} ({:.2})",
                l.gateway_cpu, l.harness_cpu, l.wall_s
            ),
        ),
        ("dropped connections", main.dropped.to_string()),
        (
            "documents at a client not reading their channel / unknown",
            format!("{} / {}", main.misrouted, main.unknown),
        ),
        (
            "gateway peak RSS serving the clients (VmHWM), MB",
            format!("{:.1}", main.peak_mb),
        ),
        (
            "setup gateway: peak RSS / RSS after users and sessions, MB",
            format!("{:.1} / {:.1}", main.setup_peak_mb, main.setup_rss_mb),
        ),
        (
            "gateway RSS with the clients connected / at the end, MB",
            format!("{:.1} / {:.1}", main.connected_rss_mb, main.end_rss_mb),
        ),
        (
            "gateway threads at the end",
            format!("{:.0}", main.end_threads),
        ),
        (
            "harness (clients + writers) peak RSS, MB",
            format!("{:.1}", main.harness_peak_mb),
        ),
        (
            "no clients: default routing writes/s (rounds)",
            format!("{default:.0} ({})", rounds(&compare.default)),
        ),
        (
            "no clients: user-profile JavaScript writes/s (rounds)",
            format!("{js:.0} ({})", rounds(&compare.js)),
        ),
        (
            "no clients: gateway CPU per write default / JavaScript, ms",
            format!(
                "{:.3} / {:.3}",
                per_write_ms(compare.default_cpu, args.writes * compare.default.len()),
                per_write_ms(compare.js_cpu, args.writes * compare.js.len())
            ),
        ),
        (
            "js_cost_ratio (default ÷ JavaScript writes/s)",
            format!("{ratio:.2}"),
        ),
    ];
    let width = rows
        .iter()
        .map(|(k, _)| k.chars().count())
        .max()
        .unwrap_or(0);
    println!();
    println!("| {:<width$} | value |", "figure");
    println!("|{}|---|", "-".repeat(width + 2));
    for (k, v) in &rows {
        println!("| {k:<width$} | {v} |");
    }
    println!();
    println!("CPU s by thread name (threads alive at the end of the phase):");
    println!(
        "gateway CPU by thread, throughput phase: {}",
        threads(&t.gateway_threads)
    );
    println!(
        "gateway CPU by thread, latency phase: {}",
        threads(&l.gateway_threads)
    );
    println!(
        "harness CPU by thread, throughput phase: {}",
        threads(&t.harness_threads)
    );
    println!(
        "harness CPU by thread, latency phase: {}",
        threads(&l.harness_threads)
    );
    if let Some(reason) = &main.drop_reason {
        println!("first dropped connection: {reason}");
    }
    println!(
        "bench gateway: clients={} setup_s={setup_s:.1} writes_per_s={:.0} p50_ms={:.1} p99_ms={:.1} \
         lost={} dropped={} gateway_peak_mb={:.1} js_writes_per_s={js:.0} \
         default_writes_per_s={default:.0} js_cost_ratio={ratio:.2}",
        args.clients,
        t.written.per_second(),
        median(&l.arrival_ms),
        percentile(&l.arrival_ms, 0.99),
        l.lost,
        main.dropped,
        main.peak_mb,
    );
}

/// CPU milliseconds per write.
fn per_write_ms(cpu_s: f64, writes: usize) -> f64 {
    cpu_s * 1e3 / writes.max(1) as f64
}

fn rounds(values: &[f64]) -> String {
    values
        .iter()
        .map(|v| format!("{v:.0}"))
        .collect::<Vec<_>>()
        .join(", ")
}
