//! Large-blob benchmark: one document holding a blob of N MB (default 50, more than BLIP's
//! 32 MiB message limit) is pulled over a real WebSocket on 127.0.0.1 from a
//! `UrlEndpointListener` into a fresh database, then pushed from there to a second
//! listener's database. Both ends run in this process, so the peak resident memory (Linux
//! `VmHWM`) measured across the two transfers covers the sender and the receiver of each.
//!
//! Run with `cargo xtask bench blobs [--mb N] [--quick]` (`--quick` is 5 MB). The blob is
//! written from a generator (never whole in memory), checked by digest at both ends, and the
//! run fails when the peak memory grew by as much as the blob: a `getAttachment` reply is
//! streamed frame by frame into the blob store, and a served blob is read from disk in
//! 64 KiB chunks as the BLIP codec sends them.
//!
//! The output ends with one line, `bench blobs: mb=N pull_s=… push_s=… …`, for scripts.

use std::error::Error;
use std::io::Read;
use std::time::{Duration, Instant};

use ferrolite::{
    Blob, BlobDigest, Database, DatabaseConfiguration, Endpoint, MutableDocument, Replicator,
    ReplicatorConfiguration, ReplicatorType, UrlEndpointListener, UrlEndpointListenerConfiguration,
};
use ferrolite_document::BlobDigester;

type BoxError = Box<dyn Error + Send + Sync>;
type Result<T> = std::result::Result<T, BoxError>;

const USAGE: &str = "usage: blobs [--mb N] [--quick]";

/// Incompressible bytes from a xorshift generator, `remaining` of them.
struct Noise {
    state: u64,
    remaining: u64,
}

impl Read for Noise {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = buf
            .len()
            .min(usize::try_from(self.remaining).unwrap_or(usize::MAX));
        for chunk in buf[..n].chunks_mut(8) {
            self.state ^= self.state << 13;
            self.state ^= self.state >> 7;
            self.state ^= self.state << 17;
            let bytes = self.state.to_le_bytes();
            chunk.copy_from_slice(&bytes[..chunk.len()]);
        }
        self.remaining -= n as u64;
        Ok(n)
    }
}

/// Peak resident set size of this process in bytes (Linux), if known.
fn peak_rss() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

fn parse_args(mut args: impl Iterator<Item = String>) -> Result<u64> {
    let mut mb = 50;
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--mb" => {
                mb = args
                    .next()
                    .and_then(|v| v.parse().ok())
                    .ok_or("--mb takes a number")?;
            }
            "--quick" => mb = 5,
            // `cargo bench` passes `--bench` to every bench target.
            "--bench" => {}
            "--help" | "-h" => {
                println!("{USAGE}");
                std::process::exit(0);
            }
            other => return Err(format!("unknown argument `{other}`\n{USAGE}").into()),
        }
    }
    Ok(mb)
}

/// Runs a one-shot replication to the end.
fn replicate(db: &Database, endpoint: Endpoint, kind: ReplicatorType) -> Result<Duration> {
    let started = Instant::now();
    let replicator =
        Replicator::new(ReplicatorConfiguration::new(db, endpoint).replicator_type(kind))?;
    replicator.start();
    let status = replicator
        .wait_until_stopped(Duration::from_secs(600))
        .ok_or("the replication did not finish in 10 minutes")?;
    if let Some(error) = status.error {
        return Err(format!("replication failed: {error}").into());
    }
    Ok(started.elapsed())
}

/// The digest and length of the blob `key` of document `id`, read back from `db`.
fn read_back(db: &Database, id: &str, key: &str) -> Result<(BlobDigest, u64)> {
    let doc = db.document(id)?.ok_or("the document is missing")?;
    let blob = doc.blob(key).ok_or("the blob is missing")?;
    let mut reader = db.blob_reader(&blob)?;
    let mut digester = BlobDigester::new();
    let mut buf = vec![0u8; 1 << 16];
    loop {
        let n = reader.read(&mut buf)?;
        if n == 0 {
            break;
        }
        digester.update(&buf[..n]);
    }
    let length = digester.length();
    Ok((digester.finish(), length))
}

fn listen(db: &Database) -> Result<(UrlEndpointListener, Endpoint)> {
    let listener = UrlEndpointListener::start(
        UrlEndpointListenerConfiguration::new(vec![db.clone()]).network_interface("127.0.0.1"),
    )?;
    let endpoint = Endpoint::url(&listener.url(db.name()))?;
    Ok((listener, endpoint))
}

fn main() -> Result<()> {
    let mb = parse_args(std::env::args().skip(1))?;
    let size = mb << 20;
    let dir = tempfile::tempdir()?;
    let open =
        |name: &str| Database::open(name, &DatabaseConfiguration::new(dir.path().join(name)));
    let server = open("server")?;
    let phone = open("phone")?;
    let target = open("target")?;

    let mut doc = MutableDocument::with_id("movie");
    doc.set("title", "a large blob");
    doc.set_blob(
        "file",
        Blob::from_reader(
            "video/mp4",
            Noise {
                state: 0x9e37_79b9_7f4a_7c15,
                remaining: size,
            },
        ),
    );
    server.save(&mut doc)?;
    let (digest, length) = read_back(&server, "movie", "file")?;
    if length != size {
        return Err(format!("the server blob has {length} bytes, not {size}").into());
    }

    let before = peak_rss();
    let (server_listener, server_endpoint) = listen(&server)?;
    let pull = replicate(&phone, server_endpoint, ReplicatorType::Pull)?;
    let (target_listener, target_endpoint) = listen(&target)?;
    let push = replicate(&phone, target_endpoint, ReplicatorType::Push)?;
    let after = peak_rss();
    server_listener.stop();
    target_listener.stop();
    for (name, db) in [("phone", &phone), ("target", &target)] {
        let got = read_back(db, "movie", "file")?;
        if got != (digest, size) {
            return Err(
                format!("{name}: blob {got:?} differs from {digest} ({size} bytes)").into(),
            );
        }
    }
    let mbps = |took: Duration| mb as f64 / took.as_secs_f64().max(1e-9);
    let growth = match (before, after) {
        (Some(before), Some(after)) => Some(after.saturating_sub(before)),
        _ => None,
    };
    println!(
        "{mb} MB blob: pulled over WebSocket in {:.2} s ({:.0} MB/s), pushed in {:.2} s ({:.0} MB/s)",
        pull.as_secs_f64(),
        mbps(pull),
        push.as_secs_f64(),
        mbps(push),
    );
    let growth_mb = growth.map_or_else(
        || "n/a".to_owned(),
        |g| format!("{:.1}", g as f64 / 1048576.0),
    );
    println!("peak resident memory growth during both transfers: {growth_mb} MB");
    println!(
        "bench blobs: mb={mb} pull_s={:.3} push_s={:.3} pull_mbps={:.1} push_mbps={:.1} peak_rss_growth_mb={growth_mb}",
        pull.as_secs_f64(),
        push.as_secs_f64(),
        mbps(pull),
        mbps(push),
    );
    if let Some(growth) = growth {
        if mb >= 20 && growth >= size / 2 {
            return Err(format!(
                "peak memory grew by {growth} bytes for a {size}-byte blob: not streamed"
            )
            .into());
        }
    }
    Ok(())
}
