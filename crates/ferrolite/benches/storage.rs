//! Storage benchmark: saving and reading back N documents through the `Database` API, against
//! a raw redb baseline measured in the same run.
//!
//! Run with `cargo xtask bench storage [--docs N] [--batch B] [--seed S] [--reps R] [--quick]`
//! (defaults: N = 100,000, B = 1,000, S = 1, R = 3; `--quick` is N = 10,000). Repetitions
//! alternate raw and API runs; the medians are reported. Both engines get the same redb page
//! cache, `--cache-mb` (default 1,024, redb's own default; a `Database` opens with 2 MiB unless
//! configured otherwise, to keep an app's memory small: `--cache-mb 2` measures that). The
//! documents are the shared workload (`ferrolite_testkit::workload`, ~1 KB each, prefix `user`), generated before
//! any timing starts.
//!
//! - API: a fresh on-disk database; one `in_batch` per B documents; then each document read
//!   back by ID, in order, with `Database::document`.
//! - Raw: a plain redb file with one `&str -> &[u8]` table holding each body's compact JSON;
//!   one write transaction per B documents, committed with the default (durable) durability;
//!   then each document read back by ID, in order.
//!
//! Reads: `Database::document` opens one read transaction per call, so for a like-for-like
//! comparison the raw baseline also opens one read transaction per read.
//!
//! The output ends with one line, `bench storage: docs=N api_write_dps=… …`, for scripts.

use std::error::Error;
use std::hint::black_box;
use std::path::Path;
use std::time::{Duration, Instant};

use ferrolite::{Database, DatabaseConfiguration, MutableDocument};
use ferrolite_testkit::workload::make_doc;
use redb::{ReadableDatabase, TableDefinition};

type BoxError = Box<dyn Error + Send + Sync>;
type Result<T> = std::result::Result<T, BoxError>;

/// The raw baseline's one table: document ID to the body's compact JSON.
const RAW_TABLE: TableDefinition<&str, &[u8]> = TableDefinition::new("docs");

const USAGE: &str =
    "usage: storage [--docs N] [--batch B] [--seed S] [--reps R] [--cache-mb M] [--quick]";

/// The command line.
struct Args {
    docs: u32,
    batch: usize,
    seed: u32,
    reps: usize,
    cache_mb: usize,
}

/// The prepared workload: IDs, documents ready to save, and the raw bodies.
struct Workload {
    ids: Vec<String>,
    docs: Vec<MutableDocument>,
    raw: Vec<Vec<u8>>,
}

/// The figures of one engine.
struct Figures {
    write: Duration,
    read: Duration,
    bytes_read: u64,
    disk_bytes: u64,
}

fn main() -> Result<()> {
    let args = parse_args(std::env::args().skip(1))?;
    let setup = Instant::now();
    let workload = prepare(&args)?;
    let json_bytes: usize = workload.raw.iter().map(Vec::len).sum();
    println!(
        "bench storage: {} docs (mean {:.0} bytes of JSON), batch {}, seed {}; generated in {:.1}s",
        args.docs,
        json_bytes as f64 / f64::from(args.docs.max(1)),
        args.batch,
        args.seed,
        setup.elapsed().as_secs_f64(),
    );
    // Repetitions alternate the two engines so that a burst of load on a shared machine
    // hits both; the figures reported are the medians.
    let (mut apis, mut raws) = (Vec::new(), Vec::new());
    let mut workload = Some(workload);
    for rep in 0..args.reps {
        let Workload { ids, docs, raw } = match workload.take() {
            Some(w) => w,
            None => prepare(&args)?,
        };
        let cache = args.cache_mb << 20;
        raws.push(bench_raw(&ids, &raw, args.batch, cache)?);
        apis.push(bench_api(&ids, docs, args.batch, cache)?);
        println!("rep {}: done", rep + 1);
    }
    report(u64::from(args.docs), &median(&apis), &median(&raws));
    Ok(())
}

/// The median write time and the median read time of several runs.
fn median(runs: &[Figures]) -> Figures {
    let pick = |f: fn(&Figures) -> Duration| {
        let mut times: Vec<Duration> = runs.iter().map(f).collect();
        times.sort();
        times.get(times.len() / 2).copied().unwrap_or_default()
    };
    let last = runs.last();
    Figures {
        write: pick(|f| f.write),
        read: pick(|f| f.read),
        bytes_read: last.map_or(0, |f| f.bytes_read),
        disk_bytes: last.map_or(0, |f| f.disk_bytes),
    }
}

fn parse_args(mut args: impl Iterator<Item = String>) -> Result<Args> {
    let mut parsed = Args {
        docs: 100_000,
        batch: 1000,
        seed: 1,
        reps: 3,
        cache_mb: 1024,
    };
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--docs" => parsed.docs = value(&arg, args.next())?,
            "--batch" => parsed.batch = value(&arg, args.next())?,
            "--seed" => parsed.seed = value(&arg, args.next())?,
            "--reps" => parsed.reps = value(&arg, args.next())?,
            "--cache-mb" => parsed.cache_mb = value(&arg, args.next())?,
            "--quick" => parsed.docs = 10_000,
            // `cargo bench` passes `--bench` to every bench target.
            "--bench" => {}
            "--help" | "-h" => {
                println!("{USAGE}");
                std::process::exit(0);
            }
            other => return Err(format!("unknown argument `{other}`\n{USAGE}").into()),
        }
    }
    if parsed.reps == 0 {
        return Err("--reps must be at least 1".into());
    }
    if parsed.batch == 0 {
        return Err("--batch must be at least 1".into());
    }
    Ok(parsed)
}

fn value<T: std::str::FromStr>(flag: &str, value: Option<String>) -> Result<T> {
    let value = value.ok_or_else(|| format!("{flag} needs a value\n{USAGE}"))?;
    value
        .parse()
        .map_err(|_| format!("{flag}: `{value}` is not a valid number").into())
}

/// Generates the documents (not timed): IDs, `MutableDocument`s for the API and the compact
/// JSON of each body for the raw baseline.
fn prepare(args: &Args) -> Result<Workload> {
    let capacity = args.docs as usize;
    let mut workload = Workload {
        ids: Vec::with_capacity(capacity),
        docs: Vec::with_capacity(capacity),
        raw: Vec::with_capacity(capacity),
    };
    for i in 0..args.docs {
        let (id, body) = make_doc(i, args.seed, "user");
        workload.raw.push(serde_json::to_vec(&body)?);
        let mut doc = MutableDocument::with_id(id.as_str());
        doc.set_properties(body);
        workload.docs.push(doc);
        workload.ids.push(id);
    }
    Ok(workload)
}

fn bench_api(
    ids: &[String],
    mut docs: Vec<MutableDocument>,
    batch: usize,
    cache: usize,
) -> Result<Figures> {
    let dir = tempfile::tempdir()?;
    let config = DatabaseConfiguration::new(dir.path()).with_cache_size(cache);
    let db = Database::open("bench", &config)?;

    let started = Instant::now();
    for chunk in docs.chunks_mut(batch) {
        db.in_batch(|batch| {
            for doc in chunk.iter_mut() {
                batch.save(doc)?;
            }
            Ok(())
        })?;
    }
    let write = started.elapsed();
    check_count("api", db.count()?, ids.len())?;

    let started = Instant::now();
    let mut bytes_read = 0u64;
    for id in ids {
        let doc = db
            .document(id)?
            .ok_or_else(|| format!("api: document {id} not found"))?;
        bytes_read += doc.json().len() as u64;
    }
    let read = started.elapsed();
    black_box(bytes_read);

    drop(db);
    let disk_bytes = dir_size(dir.path())?;
    Ok(Figures {
        write,
        read,
        bytes_read,
        disk_bytes,
    })
}

fn bench_raw(ids: &[String], bodies: &[Vec<u8>], batch: usize, cache: usize) -> Result<Figures> {
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("raw.redb");
    let db = redb::Builder::new().set_cache_size(cache).create(&path)?;

    let started = Instant::now();
    for (id_chunk, body_chunk) in ids.chunks(batch).zip(bodies.chunks(batch)) {
        let txn = db.begin_write()?;
        {
            let mut table = txn.open_table(RAW_TABLE)?;
            for (id, body) in id_chunk.iter().zip(body_chunk) {
                table.insert(id.as_str(), body.as_slice())?;
            }
        }
        txn.commit()?;
    }
    let write = started.elapsed();

    // One read transaction per read, as `Database::document` does.
    let started = Instant::now();
    let mut bytes_read = 0u64;
    for id in ids {
        let txn = db.begin_read()?;
        let table = txn.open_table(RAW_TABLE)?;
        let body = table
            .get(id.as_str())?
            .ok_or_else(|| format!("raw: document {id} not found"))?;
        bytes_read += body.value().len() as u64;
    }
    let read = started.elapsed();
    black_box(bytes_read);

    drop(db);
    let disk_bytes = std::fs::metadata(&path)?.len();
    Ok(Figures {
        write,
        read,
        bytes_read,
        disk_bytes,
    })
}

fn check_count(engine: &str, count: u64, expected: usize) -> Result<()> {
    if count != expected as u64 {
        return Err(format!("{engine}: count is {count}, expected {expected}").into());
    }
    Ok(())
}

/// The total size of the files under `dir` (their lengths; redb grows a file in steps, so
/// two files holding different amounts of data often have the same length).
fn dir_size(dir: &Path) -> Result<u64> {
    let mut total = 0;
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let meta = entry.metadata()?;
        total += if meta.is_dir() {
            dir_size(&entry.path())?
        } else {
            meta.len()
        };
    }
    Ok(total)
}

/// Documents per second.
fn dps(docs: u64, elapsed: Duration) -> f64 {
    docs as f64 / elapsed.as_secs_f64().max(1e-9)
}

fn report(docs: u64, api: &Figures, raw: &Figures) {
    let (api_w, api_r) = (dps(docs, api.write), dps(docs, api.read));
    let (raw_w, raw_r) = (dps(docs, raw.write), dps(docs, raw.read));
    let (write_ratio, read_ratio) = (api_w / raw_w, api_r / raw_r);
    println!();
    println!(
        "{:<20} {:>14} {:>14} {:>10} {:>10} {:>14} {:>14}",
        "", "write docs/s", "read docs/s", "write s", "read s", "bytes read", "bytes on disk"
    );
    for (name, f, w, r) in [
        ("ferrolite Database", api, api_w, api_r),
        ("raw redb", raw, raw_w, raw_r),
    ] {
        println!(
            "{name:<20} {w:>14.0} {r:>14.0} {:>10.2} {:>10.2} {:>14} {:>14}",
            f.write.as_secs_f64(),
            f.read.as_secs_f64(),
            f.bytes_read,
            f.disk_bytes,
        );
    }
    println!(
        "{:<20} {write_ratio:>14.2} {read_ratio:>14.2} {:>10} {:>10} {:>14} {:>14.2}",
        "api / raw",
        "",
        "",
        "",
        api.disk_bytes as f64 / raw.disk_bytes.max(1) as f64,
    );
    println!();
    println!(
        "bench storage: docs={docs} api_write_dps={api_w:.0} api_read_dps={api_r:.0} \
         raw_write_dps={raw_w:.0} raw_read_dps={raw_r:.0} write_ratio={write_ratio:.2} \
         read_ratio={read_ratio:.2} api_bytes={} raw_bytes={}",
        api.disk_bytes, raw.disk_bytes,
    );
}
