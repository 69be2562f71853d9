//! BLIP benchmark: `rev` messages encoded by one `Connection` and decoded by another, with and
//! without compression, against raw deflate of the same documents measured in the same run.
//!
//! Run with `cargo xtask bench protocol [--docs N] [--quick]` (default N = 20,000; `--quick`
//! is N = 2,000). The documents are the shared workload
//! (`ferrolite_testkit::workload::make_doc_json(i, 1, "user")`, ~1 KB of JSON each), generated,
//! and the messages built, before any timing starts.
//!
//! - `plain`: each document as a `rev` request (`Profile`, `id`, `rev`, `sequence`, body = the
//!   JSON) through `Connection::send` + `next_frame` on one side and `receive` on the other.
//! - `compressed`: the same with `Message::compressed` (one deflate stream per direction, a
//!   sync flush per frame, CRC over the uncompressed bytes).
//! - `raw deflate`: flate2 `Compress` (level 6, raw) with a sync flush per document, then
//!   `Decompress` of that output: the floor for `compressed`.
//!
//! Throughput is JSON bytes per second. Each case runs three times; the fastest run counts.
//! `overhead` = compressed time / raw deflate time. The output ends with one line,
//! `bench protocol: docs=N plain_mbps=… compressed_mbps=… raw_deflate_mbps=… overhead=…`.

use std::error::Error;
use std::hint::black_box;
use std::time::{Duration, Instant};

use bytes::Bytes;
use ferrolite_protocol::blip::{Config, Connection, Message};
use ferrolite_testkit::workload::{doc_id, make_doc_json};
use flate2::{Compress, Compression, Decompress, FlushCompress, FlushDecompress};

type Result<T> = std::result::Result<T, Box<dyn Error + Send + Sync>>;

const USAGE: &str = "usage: protocol [--docs N] [--quick]";
const RUNS: usize = 3;

/// One case's best run.
struct Figures {
    time: Duration,
    frames: u64,
    wire_bytes: u64,
}

fn main() -> Result<()> {
    let docs = parse_args(std::env::args().skip(1))?;
    let setup = Instant::now();
    let bodies: Vec<Bytes> = (0..docs)
        .map(|i| Bytes::from(make_doc_json(i, 1, "user")))
        .collect();
    let json_bytes: usize = bodies.iter().map(Bytes::len).sum();
    let plain_messages = build_messages(&bodies, false);
    let compressed_messages = build_messages(&bodies, true);
    println!(
        "bench protocol: {docs} docs (mean {:.0} bytes of JSON, {:.1} MB); generated in {:.1}s",
        json_bytes as f64 / f64::from(docs.max(1)),
        json_bytes as f64 / 1e6,
        setup.elapsed().as_secs_f64(),
    );

    let plain = best_of(|| blip_run(plain_messages.clone()))?;
    let compressed = best_of(|| blip_run(compressed_messages.clone()))?;
    let raw = best_of(|| raw_deflate_run(&bodies))?;

    let mbps = |f: &Figures| json_bytes as f64 / 1e6 / f.time.as_secs_f64().max(1e-9);
    println!();
    println!(
        "{:<22} {:>10} {:>10} {:>9} {:>12} {:>7}",
        "case", "time ms", "MB/s", "frames", "wire bytes", "ratio"
    );
    for (name, f) in [
        ("blip plain", &plain),
        ("blip compressed", &compressed),
        ("raw deflate+inflate", &raw),
    ] {
        println!(
            "{:<22} {:>10.1} {:>10.1} {:>9} {:>12} {:>7.3}",
            name,
            f.time.as_secs_f64() * 1e3,
            mbps(f),
            f.frames,
            f.wire_bytes,
            f.wire_bytes as f64 / json_bytes as f64,
        );
    }
    let overhead = compressed.time.as_secs_f64() / raw.time.as_secs_f64().max(1e-9);
    println!();
    println!(
        "bench protocol: docs={docs} plain_mbps={:.1} compressed_mbps={:.1} raw_deflate_mbps={:.1} overhead={overhead:.2}",
        mbps(&plain),
        mbps(&compressed),
        mbps(&raw),
    );
    Ok(())
}

fn parse_args(mut args: impl Iterator<Item = String>) -> Result<u32> {
    let mut docs = 20_000;
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--docs" => {
                docs = args
                    .next()
                    .ok_or_else(|| format!("`--docs` needs a value\n{USAGE}"))?
                    .parse()
                    .map_err(|e| format!("`--docs`: {e}\n{USAGE}"))?;
            }
            "--quick" => docs = 2_000,
            // `cargo bench` passes `--bench` to every bench target.
            "--bench" => {}
            "--help" | "-h" => {
                println!("{USAGE}");
                std::process::exit(0);
            }
            other => return Err(format!("unknown argument `{other}`\n{USAGE}").into()),
        }
    }
    Ok(docs)
}

/// The `rev` request of document `i`, as the replicator sends it.
fn build_messages(bodies: &[Bytes], compressed: bool) -> Vec<Message> {
    bodies
        .iter()
        .zip(0u32..)
        .map(|(body, i)| {
            let mut m = Message::request("rev");
            m.properties.set("id", doc_id("user", i));
            m.properties
                .set("rev", format!("1-{:040x}", u64::from(i) * 0x9e37_79b9));
            m.properties.set("sequence", (i + 1).to_string());
            m.compressed = compressed;
            m.body = body.clone();
            m
        })
        .collect()
}

fn best_of(mut run: impl FnMut() -> Result<Figures>) -> Result<Figures> {
    let mut best: Option<Figures> = None;
    for _ in 0..RUNS {
        let figures = run()?;
        if best.as_ref().is_none_or(|b| figures.time < b.time) {
            best = Some(figures);
        }
    }
    best.ok_or_else(|| "no run".into())
}

/// Every message through a fresh pair of connections.
fn blip_run(messages: Vec<Message>) -> Result<Figures> {
    let mut sender = Connection::new(Config::default());
    let mut receiver = Connection::new(Config::default());
    let count = messages.len();
    let mut received = 0;
    let start = Instant::now();
    for message in messages {
        sender.send(message)?;
        while let Some(frame) = sender.next_frame() {
            if let Some(message) = receiver.receive(&frame)? {
                black_box(&message);
                received += 1;
            }
        }
    }
    let time = start.elapsed();
    if received != count {
        return Err(format!("received {received} of {count} messages").into());
    }
    Ok(Figures {
        time,
        frames: sender.stats().frames_sent,
        wire_bytes: sender.stats().bytes_sent,
    })
}

/// Raw deflate with a sync flush per document, then inflate of that output.
fn raw_deflate_run(bodies: &[Bytes]) -> Result<Figures> {
    let mut compress = Compress::new(Compression::new(6), false);
    let mut decompress = Decompress::new(false);
    let mut deflated = Vec::with_capacity(64 * 1024);
    let mut inflated = Vec::with_capacity(64 * 1024);
    let mut wire_bytes = 0u64;
    let start = Instant::now();
    for body in bodies {
        deflated.clear();
        deflated.reserve(body.len() + body.len() / 8 + 64);
        compress.compress_vec(body, &mut deflated, FlushCompress::Sync)?;
        wire_bytes += deflated.len() as u64;
        inflated.clear();
        inflated.reserve(body.len() + 64);
        decompress.decompress_vec(&deflated, &mut inflated, FlushDecompress::Sync)?;
        if inflated.len() != body.len() {
            return Err("raw deflate round trip lost bytes".into());
        }
        black_box(&inflated);
    }
    Ok(Figures {
        time: start.elapsed(),
        frames: bodies.len() as u64,
        wire_bytes,
    })
}
