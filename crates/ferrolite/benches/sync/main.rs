//! Sync benchmark: the shared benchmark scenarios S1–S6 between a
//! ferrolite server process and a ferrolite client process over loopback WebSocket, and
//! optionally the PouchDB peer harness in the same run.
//!
//! Run with `cargo xtask bench sync [--docs N] [--samples K] [--reps R] [--peer] [--quick]`
//! (defaults: N = 10,000, K = 20, R = 1; `--quick` is N = 2,000, K = 5 unless given).
//!
//! Three kinds of process, all this executable:
//!
//! - the **harness** (no `--role`): starts the others, counts bytes through a loopback TCP
//!   proxy (tokio, 127.0.0.1), reads `/proc/<pid>/stat` (CPU) and `/proc/<pid>/status`
//!   (`VmRSS`, `VmHWM`), checks the results and prints the table;
//! - the **server** (`--role server`, `server.rs`): on-disk databases `src` (seeded with N
//!   workload documents, prefix `user`, seed 1), `push_timed` and `push_bytes` (empty),
//!   served by `UrlEndpointListener` on 127.0.0.1 (port 0, printed), controlled over
//!   stdin/stdout JSON lines (seed, S3's update, stats, quit);
//! - the **client** (`--role client`, `client.rs`): a fresh on-disk database per phase,
//!   one-shot pulls and pushes through `ferrolite::sync_once`, each timed inside the client
//!   around that call (the time an application sees).
//!
//! Each repetition starts a new server. Per repetition, as in the peer harness:
//!
//! 1. timed pull phase, a new client connected directly: S1 (initial pull of N; client and
//!    server CPU, client `VmHWM` = S6), K × S2 (no-op pull), K × S3 (one document updated on
//!    the server, untimed, then a pull);
//! 2. bytes pass (first repetition only), a new client connected through the proxy: S1,
//!    5 × S2, 5 × S3, then a push of N into `push_bytes` (S5); its timings are not reported
//!    as S1–S4, so the proxy's extra hop never slows the timed figures;
//! 3. timed push phase, a new client: N documents created locally (prefix `fresh`, seed 1001
//!    as in the peer harness, untimed), then S4, a one-shot push into the empty `push_timed`.
//!
//! Checks: after S1 the client holds N documents and sampled documents carry the server's
//! revision IDs; every S2 pull writes nothing, every S3 pull writes one document; the last
//! updated document's revision and `version` match the server's; after S4 the server holds N.
//!
//! The output is a table (ferrolite, and PouchDB with ratios when `--peer` ran), then one
//! line: `bench sync: docs=N s1_dps=… s2_ms=… s3_ms=… s4_dps=… s5_bytes_per_doc=…
//! s6_peak_mb=… [s1_ratio=… s2_ratio=… s3_ratio=… s4_ratio=…]`, ratios being ferrolite's
//! advantage (throughput ÷ PouchDB's, PouchDB's latency ÷ ours), only with `--peer`.

mod client;
mod lines;
mod peer;
mod proxy;
mod server;

use std::error::Error;
use std::path::{Path, PathBuf};

use ferrolite_testkit::workload::doc_id;
use serde_json::{json, Value};

use crate::lines::{procfs, Proc};
use crate::proxy::{Bytes, Proxy};

type BoxError = Box<dyn Error + Send + Sync>;
type Result<T> = std::result::Result<T, BoxError>;

const USAGE: &str =
    "usage: sync [--docs N] [--samples K] [--reps R] [--peer] [--quick] [--role server|client]";

/// Seed of the server's data set (prefix `user`).
const SEED: u32 = 1;
/// Seed of the data created on the client for S4 (prefix `fresh`): the peer harness uses
/// its seed + 1000.
const FRESH_SEED: u32 = SEED + 1000;
/// S2 and S3 pulls in the bytes pass (the peer's `--bytes-samples`).
const BYTES_SAMPLES: u32 = 5;
/// Documents whose revision IDs are compared after S1.
const SPOT_CHECKS: u32 = 16;

/// The command line.
struct Args {
    docs: u32,
    samples: u32,
    reps: u32,
    peer: bool,
}

/// What one repetition measured.
#[derive(Default)]
struct Rep {
    s1_ms: f64,
    s1_client_cpu: f64,
    s1_server_cpu: f64,
    s1_peak_mb: f64,
    s1_baseline_mb: f64,
    s2_ms: Vec<f64>,
    s3_ms: Vec<f64>,
    s4_ms: f64,
    s4_client_cpu: f64,
    s4_server_cpu: f64,
    s4_peak_mb: f64,
    bytes: Option<BytesPass>,
    server_peak_mb: f64,
}

/// The proxied pass of S5.
#[derive(Default)]
struct BytesPass {
    s1: Bytes,
    s2: Vec<Bytes>,
    s3: Vec<Bytes>,
    s4: Bytes,
}

/// What a pull phase measured.
#[derive(Default)]
struct Pull {
    s1_ms: f64,
    s1_client_cpu: f64,
    s1_server_cpu: f64,
    s1_peak_mb: f64,
    s1_baseline_mb: f64,
    s1_bytes: Bytes,
    s2_ms: Vec<f64>,
    s2_bytes: Vec<Bytes>,
    s3_ms: Vec<f64>,
    s3_bytes: Vec<Bytes>,
}

/// What a push phase measured.
#[derive(Default)]
struct Push {
    ms: f64,
    client_cpu: f64,
    server_cpu: f64,
    peak_mb: f64,
    bytes: Bytes,
}

fn main() -> Result<()> {
    let raw: Vec<String> = std::env::args().skip(1).collect();
    if let Some(i) = raw.iter().position(|a| a == "--role") {
        return match raw.get(i + 1).map(String::as_str) {
            Some("server") => {
                let dir = raw
                    .iter()
                    .position(|a| a == "--dir")
                    .and_then(|i| raw.get(i + 1))
                    .ok_or("--role server needs --dir")?;
                server::run(PathBuf::from(dir))
            }
            Some("client") => client::run(),
            _ => Err(format!("--role must be server or client\n{USAGE}").into()),
        };
    }
    let args = parse_args(raw.into_iter())?;
    if !procfs::available() {
        return Err("bench sync reads /proc for CPU and memory: Linux only".into());
    }
    let workspace = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let workspace = workspace.canonicalize().unwrap_or(workspace);
    let target = target_dir(&workspace);
    let scratch = target.join("bench-sync");
    std::fs::create_dir_all(&scratch)?;
    println!(
        "bench sync: ferrolite {} server and client processes, N={} docs, {} samples, {} rep(s)",
        env!("CARGO_PKG_VERSION"),
        args.docs,
        args.samples,
        args.reps
    );
    let mut reps = Vec::new();
    for rep in 0..args.reps {
        let dir = tempfile::Builder::new()
            .prefix("run-")
            .tempdir_in(&scratch)?;
        reps.push(run_rep(&args, rep, dir.path())?);
    }
    let peer = if args.peer {
        match peer::run(&target, args.docs, args.reps, args.samples) {
            Ok(outcome) => Some(outcome),
            Err(error) => Some(peer::Outcome::Skipped(format!("peer run failed: {error}"))),
        }
    } else {
        None
    };
    report(&args, &reps, peer.as_ref());
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
    let (mut docs, mut samples, mut reps, mut peer, mut quick) = (None, None, 1, false, false);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--docs" => docs = Some(value(&arg, args.next())?),
            "--samples" => samples = Some(value(&arg, args.next())?),
            "--reps" => reps = value(&arg, args.next())?,
            "--peer" => peer = true,
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
    let args = Args {
        docs: docs.unwrap_or(if quick { 2000 } else { 10_000 }),
        samples: samples.unwrap_or(if quick { 5 } else { 20 }),
        reps,
        peer,
    };
    if args.docs == 0 || args.samples == 0 || args.reps == 0 {
        return Err("--docs, --samples and --reps must be at least 1".into());
    }
    Ok(args)
}

fn value<T: std::str::FromStr>(flag: &str, value: Option<String>) -> Result<T> {
    let value = value.ok_or_else(|| format!("{flag} needs a value\n{USAGE}"))?;
    value
        .parse()
        .map_err(|_| format!("{flag}: `{value}` is not a valid number").into())
}

/// One repetition: a new server, the timed pull phase, the bytes pass (first repetition),
/// the timed push phase.
fn run_rep(args: &Args, rep: u32, dir: &Path) -> Result<Rep> {
    let server_dir = dir.join("server");
    let server_dir = server_dir.to_str().ok_or("non-UTF-8 scratch path")?;
    let mut server = Proc::spawn("server", "server", &["--dir", server_dir])?;
    let port = server
        .read_line()?
        .get("listening")
        .and_then(Value::as_u64)
        .ok_or("the server did not say its port")?;
    let seeded = server.call(
        "seed",
        json!({ "db": "src", "docs": args.docs, "seed": SEED, "prefix": "user" }),
    )?;
    eprintln!(
        "rep {}/{}: server pid {} on 127.0.0.1:{port}; seeded {} docs in {:.1} s (untimed)",
        rep + 1,
        args.reps,
        server.pid(),
        args.docs,
        seeded.get("ms").and_then(Value::as_f64).unwrap_or(0.0) / 1e3
    );
    // S3's update counter continues across phases so every update is a new revision.
    let mut update = u64::from(rep) * 1000;
    let direct = format!("ws://127.0.0.1:{port}");
    let timed = pull_phase(
        args,
        &mut server,
        &direct,
        None,
        dir,
        "timed",
        args.samples,
        &mut update,
    )?;
    eprintln!(
        "  S1 {:.0} ms ({:.0} docs/s); S2 median {:.2} ms; S3 median {:.2} ms",
        timed.s1_ms,
        dps(args.docs, timed.s1_ms),
        median(&timed.s2_ms),
        median(&timed.s3_ms)
    );
    let bytes = if rep == 0 {
        let proxy = Proxy::start(u16::try_from(port)?)?;
        let via = format!("ws://127.0.0.1:{}", proxy.port());
        let pull = pull_phase(
            args,
            &mut server,
            &via,
            Some(&proxy),
            dir,
            "bytes",
            BYTES_SAMPLES,
            &mut update,
        )?;
        let push = push_phase(args, &mut server, &via, Some(&proxy), dir, "bytes")?;
        proxy.stop();
        eprintln!(
            "  bytes pass: S1 {} bytes ({:.1}/doc), S2 {} bytes/pull, S3 {} bytes/pull, S4 {} bytes",
            pull.s1_bytes.total(),
            pull.s1_bytes.total() as f64 / f64::from(args.docs),
            median_bytes(&pull.s2_bytes),
            median_bytes(&pull.s3_bytes),
            push.bytes.total()
        );
        Some(BytesPass {
            s1: pull.s1_bytes,
            s2: pull.s2_bytes,
            s3: pull.s3_bytes,
            s4: push.bytes,
        })
    } else {
        None
    };
    let push = push_phase(args, &mut server, &direct, None, dir, "timed")?;
    eprintln!(
        "  S4 {:.0} ms ({:.0} docs/s)",
        push.ms,
        dps(args.docs, push.ms)
    );
    let server_peak_mb = procfs::status_mb(server.pid(), "VmHWM")?;
    server.finish("quit")?;
    Ok(Rep {
        s1_ms: timed.s1_ms,
        s1_client_cpu: timed.s1_client_cpu,
        s1_server_cpu: timed.s1_server_cpu,
        s1_peak_mb: timed.s1_peak_mb,
        s1_baseline_mb: timed.s1_baseline_mb,
        s2_ms: timed.s2_ms,
        s3_ms: timed.s3_ms,
        s4_ms: push.ms,
        s4_client_cpu: push.client_cpu,
        s4_server_cpu: push.server_cpu,
        s4_peak_mb: push.peak_mb,
        bytes,
        server_peak_mb,
    })
}

/// S1, then `samples` × S2 and × S3, with a new client (through the proxy when given).
#[allow(clippy::too_many_arguments)]
fn pull_phase(
    args: &Args,
    server: &mut Proc,
    base: &str,
    proxy: Option<&Proxy>,
    dir: &Path,
    tag: &str,
    samples: u32,
    update: &mut u64,
) -> Result<Pull> {
    let url = format!("{base}/src");
    let mut client = Proc::spawn("client", "client", &[])?;
    let client_dir = dir.join("client");
    client.call(
        "open",
        json!({ "dir": client_dir, "name": format!("pull-{tag}") }),
    )?;
    let mut out = Pull {
        s1_baseline_mb: procfs::status_mb(client.pid(), "VmRSS")?,
        ..Pull::default()
    };
    let snapshot = |proxy: Option<&Proxy>| proxy.map(Proxy::snapshot).unwrap_or_default();

    // S1
    let cpu = (
        procfs::cpu_seconds(client.pid())?,
        procfs::cpu_seconds(server.pid())?,
    );
    if let Some(proxy) = proxy {
        proxy.reset();
    }
    let pulled = client.call("pull", json!({ "url": url }))?;
    out.s1_peak_mb = procfs::status_mb(client.pid(), "VmHWM")?;
    out.s1_client_cpu = procfs::cpu_seconds(client.pid())? - cpu.0;
    out.s1_server_cpu = procfs::cpu_seconds(server.pid())? - cpu.1;
    out.s1_bytes = snapshot(proxy);
    out.s1_ms = number(&pulled, "ms")?;
    let count = number(&client.call("info", json!({}))?, "doc_count")?;
    if count as u64 != u64::from(args.docs) {
        return Err(format!("S1: the client has {count} docs, expected {}", args.docs).into());
    }
    for k in 0..=SPOT_CHECKS {
        let id = doc_id(
            "user",
            (u64::from(args.docs - 1) * u64::from(k) / u64::from(SPOT_CHECKS)) as u32,
        );
        let ours = client.call("get", json!({ "docid": id }))?;
        let theirs = server.call("get", json!({ "db": "src", "docid": id }))?;
        if ours.get("rev").is_none() || ours.get("rev") != theirs.get("rev") {
            return Err(format!("S1: {id} is {ours} on the client, {theirs} on the server").into());
        }
    }

    // S2
    for _ in 0..samples {
        if let Some(proxy) = proxy {
            proxy.reset();
        }
        let pulled = client.call("pull", json!({ "url": url }))?;
        if number(&pulled, "docs_written")? != 0.0 {
            return Err(format!("S2: a no-op pull wrote documents: {pulled}").into());
        }
        out.s2_ms.push(number(&pulled, "ms")?);
        out.s2_bytes.push(snapshot(proxy));
    }

    // S3
    let mut last = None;
    for _ in 0..samples {
        let j = *update;
        *update += 1;
        let id = doc_id("user", ((j * 7919 + 13) % u64::from(args.docs)) as u32);
        let updated = server.call("update", json!({ "db": "src", "docid": id, "j": j }))?;
        if let Some(proxy) = proxy {
            proxy.reset();
        }
        let pulled = client.call("pull", json!({ "url": url }))?;
        if number(&pulled, "docs_written")? != 1.0 {
            return Err(
                format!("S3: the pull did not write exactly one document: {pulled}").into(),
            );
        }
        out.s3_ms.push(number(&pulled, "ms")?);
        out.s3_bytes.push(snapshot(proxy));
        last = Some((id, updated));
    }
    if let Some((id, updated)) = last {
        let ours = client.call("get", json!({ "docid": id }))?;
        if ours.get("rev") != updated.get("rev") || ours.get("version") != updated.get("version") {
            return Err(
                format!("S3: {id} is {ours} on the client, the server wrote {updated}").into(),
            );
        }
    }
    client.finish("close")?;
    Ok(out)
}

/// N documents created on a new client (untimed), then one one-shot push into the server's
/// empty `push_<tag>` database.
fn push_phase(
    args: &Args,
    server: &mut Proc,
    base: &str,
    proxy: Option<&Proxy>,
    dir: &Path,
    tag: &str,
) -> Result<Push> {
    let db = format!("push_{tag}");
    let mut client = Proc::spawn("client", "client", &[])?;
    client.call(
        "open",
        json!({ "dir": dir.join("client"), "name": format!("push-{tag}") }),
    )?;
    let loaded = client.call(
        "load_docs",
        json!({ "docs": args.docs, "seed": FRESH_SEED, "prefix": "fresh" }),
    )?;
    if number(&loaded, "count")? as u64 != u64::from(args.docs) {
        return Err(format!("load_docs: {loaded}").into());
    }
    let cpu = (
        procfs::cpu_seconds(client.pid())?,
        procfs::cpu_seconds(server.pid())?,
    );
    if let Some(proxy) = proxy {
        proxy.reset();
    }
    let pushed = client.call("push", json!({ "url": format!("{base}/{db}") }))?;
    let mut out = Push {
        ms: number(&pushed, "ms")?,
        client_cpu: procfs::cpu_seconds(client.pid())? - cpu.0,
        server_cpu: procfs::cpu_seconds(server.pid())? - cpu.1,
        peak_mb: procfs::status_mb(client.pid(), "VmHWM")?,
        ..Push::default()
    };
    if let Some(proxy) = proxy {
        out.bytes = proxy.snapshot();
    }
    let stats = server.call("stats", json!({ "db": db }))?;
    if number(&stats, "doc_count")? as u64 != u64::from(args.docs) {
        return Err(format!(
            "S4: the server's {db} holds {stats}, expected {}",
            args.docs
        )
        .into());
    }
    client.finish("close")?;
    Ok(out)
}

/// A number in a response.
fn number(response: &Value, key: &str) -> Result<f64> {
    response
        .get(key)
        .and_then(Value::as_f64)
        .ok_or_else(|| format!("no number `{key}` in {response}").into())
}

/// `2025-01-01T00:00:00.000Z` plus `seconds`, as JavaScript's `toISOString` prints it.
fn iso_after_2025(seconds: u64) -> String {
    const JAN_1_2025: i64 = 1_735_689_600;
    let t = JAN_1_2025 + seconds as i64;
    let (days, secs) = (t.div_euclid(86_400), t.rem_euclid(86_400));
    // Howard Hinnant's civil_from_days.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.000Z",
        secs / 3600,
        secs % 3600 / 60,
        secs % 60
    )
}

fn median(values: &[f64]) -> f64 {
    let mut sorted: Vec<f64> = values.iter().copied().filter(|v| v.is_finite()).collect();
    sorted.sort_by(f64::total_cmp);
    match sorted.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => sorted[n / 2],
        n => (sorted[n / 2 - 1] + sorted[n / 2]) / 2.0,
    }
}

fn median_bytes(values: &[Bytes]) -> f64 {
    median(&values.iter().map(|b| b.total() as f64).collect::<Vec<_>>())
}

/// Documents per second for `docs` in `ms` milliseconds.
fn dps(docs: u32, ms: f64) -> f64 {
    f64::from(docs) / (ms / 1e3)
}

/// Which way a figure is better, for the ratio column (ferrolite's advantage).
#[derive(Clone, Copy)]
enum Better {
    Higher,
    Lower,
    Neither,
}

/// One row of the table.
struct Row {
    id: &'static str,
    metric: String,
    unit: &'static str,
    ours: f64,
    peer: Option<f64>,
    better: Better,
}

impl Row {
    fn ratio(&self) -> Option<f64> {
        let peer = self.peer?;
        let ratio = match self.better {
            Better::Higher => self.ours / peer,
            Better::Lower => peer / self.ours,
            Better::Neither => return None,
        };
        ratio.is_finite().then_some(ratio)
    }
}

/// Prints the table and the summary line.
fn report(args: &Args, reps: &[Rep], peer: Option<&peer::Outcome>) {
    let n = args.docs;
    let across = |f: &dyn Fn(&Rep) -> f64| median(&reps.iter().map(f).collect::<Vec<_>>());
    let bytes: Option<&BytesPass> = reps.iter().find_map(|r| r.bytes.as_ref());
    let summary: &[Value] = match peer {
        Some(peer::Outcome::Ran { summary, .. }) => summary,
        _ => &[],
    };
    let theirs = |id: &str, what: &str| peer::figure(summary, id, what);
    let k = args.samples;
    let mut rows = vec![
        Row {
            id: "S1",
            metric: "initial pull throughput (N / wall time)".into(),
            unit: "docs/s",
            ours: across(&|r| dps(n, r.s1_ms)),
            peer: theirs("S1", "initial pull throughput"),
            better: Better::Higher,
        },
        Row {
            id: "S1",
            metric: "initial pull wall time".into(),
            unit: "s",
            ours: across(&|r| r.s1_ms / 1e3),
            peer: theirs("S1", "initial pull wall time"),
            better: Better::Lower,
        },
        Row {
            id: "S1",
            metric: "initial pull client CPU".into(),
            unit: "s",
            ours: across(&|r| r.s1_client_cpu),
            peer: theirs("S1", "initial pull client CPU"),
            better: Better::Lower,
        },
        Row {
            id: "S1",
            metric: "initial pull server CPU".into(),
            unit: "s",
            ours: across(&|r| r.s1_server_cpu),
            peer: theirs("S1", "initial pull server CPU"),
            better: Better::Lower,
        },
        Row {
            id: "S2",
            metric: format!("no-op pull latency (median of {k})"),
            unit: "ms",
            ours: across(&|r| median(&r.s2_ms)),
            peer: theirs("S2", "no-op pull latency"),
            better: Better::Lower,
        },
        Row {
            id: "S3",
            metric: format!("1-doc update pull latency (median of {k})"),
            unit: "ms",
            ours: across(&|r| median(&r.s3_ms)),
            peer: theirs("S3", "1-doc update pull latency"),
            better: Better::Lower,
        },
        Row {
            id: "S4",
            metric: "push throughput (N / wall time)".into(),
            unit: "docs/s",
            ours: across(&|r| dps(n, r.s4_ms)),
            peer: theirs("S4", "push throughput"),
            better: Better::Higher,
        },
        Row {
            id: "S4",
            metric: "push wall time".into(),
            unit: "s",
            ours: across(&|r| r.s4_ms / 1e3),
            peer: theirs("S4", "push wall time"),
            better: Better::Lower,
        },
        Row {
            id: "S4",
            metric: "push client CPU".into(),
            unit: "s",
            ours: across(&|r| r.s4_client_cpu),
            peer: theirs("S4", "push client CPU"),
            better: Better::Lower,
        },
        Row {
            id: "S4",
            metric: "push server CPU".into(),
            unit: "s",
            ours: across(&|r| r.s4_server_cpu),
            peer: theirs("S4", "push server CPU"),
            better: Better::Lower,
        },
    ];
    if let Some(b) = bytes {
        rows.extend([
            Row {
                id: "S5",
                metric: "S1 bytes client->server".into(),
                unit: "bytes",
                ours: b.s1.up as f64,
                peer: theirs("S5", "S1 bytes client->server"),
                better: Better::Lower,
            },
            Row {
                id: "S5",
                metric: "S1 bytes server->client".into(),
                unit: "bytes",
                ours: b.s1.down as f64,
                peer: theirs("S5", "S1 bytes server->client"),
                better: Better::Lower,
            },
            Row {
                id: "S5",
                metric: "S1 bytes total".into(),
                unit: "bytes",
                ours: b.s1.total() as f64,
                peer: theirs("S5", "S1 bytes total"),
                better: Better::Lower,
            },
            Row {
                id: "S5",
                metric: "S1 bytes total per doc".into(),
                unit: "bytes/doc",
                ours: b.s1.total() as f64 / f64::from(n),
                peer: theirs("S5", "S1 bytes total per doc"),
                better: Better::Lower,
            },
            Row {
                id: "S5",
                metric: "S2 bytes total (median/no-op pull)".into(),
                unit: "bytes",
                ours: median_bytes(&b.s2),
                peer: theirs("S5", "S2 bytes total"),
                better: Better::Lower,
            },
            Row {
                id: "S5",
                metric: "S3 bytes total (median/pull)".into(),
                unit: "bytes",
                ours: median_bytes(&b.s3),
                peer: theirs("S5", "S3 bytes total"),
                better: Better::Lower,
            },
            Row {
                id: "S5",
                metric: "S4 bytes total (push)".into(),
                unit: "bytes",
                ours: b.s4.total() as f64,
                peer: theirs("S5", "S4 bytes total"),
                better: Better::Lower,
            },
            Row {
                id: "S5",
                metric: "TCP connections per pull (S2)".into(),
                unit: "count",
                ours: median(
                    &b.s2
                        .iter()
                        .map(|b| b.connections as f64)
                        .collect::<Vec<_>>(),
                ),
                peer: None,
                better: Better::Neither,
            },
        ]);
    }
    rows.extend([
        Row {
            id: "S6",
            metric: "client peak RSS during S1 (VmHWM)".into(),
            unit: "MB",
            ours: across(&|r| r.s1_peak_mb),
            peer: theirs("S6", "client peak RSS during S1"),
            better: Better::Lower,
        },
        Row {
            id: "S6",
            metric: "client RSS before S1 (baseline)".into(),
            unit: "MB",
            ours: across(&|r| r.s1_baseline_mb),
            peer: theirs("S6", "client RSS before S1"),
            better: Better::Lower,
        },
        Row {
            id: "S6",
            metric: "client peak RSS, S4 process (load+push)".into(),
            unit: "MB",
            ours: across(&|r| r.s4_peak_mb),
            peer: theirs("S6", "client peak RSS, S4"),
            better: Better::Lower,
        },
        Row {
            id: "--",
            metric: "server peak RSS over the whole rep".into(),
            unit: "MB",
            ours: across(&|r| r.server_peak_mb),
            peer: theirs("--", "server peak RSS"),
            better: Better::Lower,
        },
    ]);

    let with_peer = matches!(peer, Some(peer::Outcome::Ran { .. }));
    println!();
    println!(
        "ferrolite (redb client + redb server, WebSocket/BLIP on 127.0.0.1), N={n}, reps={}, medians across reps",
        reps.len()
    );
    if with_peer {
        println!(
            "{:<4} | {:<42} | {:<9} | {:>12} | {:>12} | {:>9}",
            "id", "metric", "unit", "ferrolite", "pouchdb", "advantage"
        );
    } else {
        println!(
            "{:<4} | {:<42} | {:<9} | {:>12}",
            "id", "metric", "unit", "ferrolite"
        );
    }
    println!("{}", "-".repeat(if with_peer { 104 } else { 74 }));
    for row in &rows {
        let d = if row.unit == "ms" { 2 } else { 1 };
        if with_peer {
            println!(
                "{:<4} | {:<42} | {:<9} | {:>12} | {:>12} | {:>9}",
                row.id,
                row.metric,
                row.unit,
                fmt(row.ours, d),
                row.peer.map_or("-".into(), |p| fmt(p, d)),
                row.ratio().map_or("-".into(), |r| format!("{r:.1}x")),
            );
        } else {
            println!(
                "{:<4} | {:<42} | {:<9} | {:>12}",
                row.id,
                row.metric,
                row.unit,
                fmt(row.ours, d)
            );
        }
    }
    match peer {
        Some(peer::Outcome::Ran { file, .. }) => {
            println!(
                "pouchdb: the peer harness run just now; results {}",
                file.display()
            );
        }
        Some(peer::Outcome::Skipped(why)) => println!("pouchdb: skipped: {why}"),
        None => {}
    }

    let find = |id: &str, prefix: &str| {
        rows.iter()
            .find(|r| r.id == id && r.metric.starts_with(prefix))
    };
    let ours = |id: &str, prefix: &str| find(id, prefix).map_or(f64::NAN, |r| r.ours);
    let ratio = |id: &str, prefix: &str| find(id, prefix).and_then(Row::ratio);
    let mut line = format!(
        "bench sync: docs={n} s1_dps={:.0} s2_ms={:.2} s3_ms={:.2} s4_dps={:.0} \
         s5_bytes_per_doc={:.1} s6_peak_mb={:.1}",
        ours("S1", "initial pull throughput"),
        ours("S2", "no-op"),
        ours("S3", "1-doc"),
        ours("S4", "push throughput"),
        ours("S5", "S1 bytes total per doc"),
        ours("S6", "client peak RSS during S1"),
    );
    if with_peer {
        let r =
            |id: &str, prefix: &str| ratio(id, prefix).map_or("-".into(), |r| format!("{r:.1}"));
        line.push_str(&format!(
            " s1_ratio={} s2_ratio={} s3_ratio={} s4_ratio={}",
            r("S1", "initial pull throughput"),
            r("S2", "no-op"),
            r("S3", "1-doc"),
            r("S4", "push throughput"),
        ));
    }
    println!();
    println!("{line}");
}

/// A figure as the peer's table prints it: thousands separated when ≥ 1,000.
fn fmt(x: f64, decimals: usize) -> String {
    if !x.is_finite() {
        return "-".into();
    }
    if x.abs() >= 1000.0 {
        let digits = format!("{:.0}", x.abs());
        let mut out = String::new();
        for (i, c) in digits.chars().enumerate() {
            if i > 0 && (digits.len() - i) % 3 == 0 {
                out.push(',');
            }
            out.push(c);
        }
        if x < 0.0 {
            out.insert(0, '-');
        }
        out
    } else {
        format!("{x:.decimals$}")
    }
}
