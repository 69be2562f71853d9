//! Attacks on a replication server, written once for every server (the gateway's
//! `/_blipsync`, the facade's `UrlEndpointListener`).
//!
//! Each attack panics unless the server reacts as it must: an error reply or a close with
//! the right code, no more than [`MAX_GROWTH`] of resident memory added while it lasts
//! (the server runs in the test process), nothing stored that should not be, and a
//! well-behaved client still replicating with the same server afterwards (the
//! [`Target::check_healthy`] callback). Each returns a [`Report`] with its figures.
//!
//! Run one attack at a time per process (take [`exclusive`] first): memory readings are for
//! the whole process.

use std::collections::BTreeMap;
use std::fmt;
use std::future::Future;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::Engine as _;
use bytes::Bytes;
use ferrolite_document::BlobDigest;
use ferrolite_protocol::blip::{self, flags, FrameHeader, FrameType, Message, MessageType};
use ferrolite_protocol::messages::prove_attachment;
use tokio::sync::{Mutex, MutexGuard};

use super::{
    encode_message, litecore_frames, mib, mutate, resident_bytes, BlipPeer, End, Event,
    FrameWriter, PeakResident, Prng, RawPeer, ZeroFrames,
};

/// Most the process's resident memory may grow while one attack lasts: 100 MiB.
pub const MAX_GROWTH: u64 = 100 << 20;

/// How long a close is waited for after an attack that must be refused.
const CLOSE_WAIT: Duration = Duration::from_secs(10);
/// How long silence is waited for after an attack the server may accept.
const SILENCE: Duration = Duration::from_millis(300);
/// Connections attacking at the same time in the many-connection attacks.
const PARALLEL: usize = 16;

static EXCLUSIVE: Mutex<()> = Mutex::const_new(());

/// Serialises the attacks of one test process (hold the guard for the whole test).
pub async fn exclusive() -> MutexGuard<'static, ()> {
    EXCLUSIVE.lock().await
}

/// A boxed future, for the [`Target`] callbacks.
pub type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;

/// [`Target::check_healthy`].
pub type HealthCheck = Arc<dyn Fn(String) -> BoxFuture<()> + Send + Sync>;

/// [`Target::blob`]: the bytes of a blob, by digest (`sha1-…`) and length.
pub type BlobLookup = Arc<dyn Fn(&str, u64) -> Option<Vec<u8>> + Send + Sync>;

/// The server under attack, as the attacks see it.
#[derive(Clone)]
pub struct Target {
    /// Its address.
    pub addr: SocketAddr,
    /// The database served (`ws://addr/<database>`).
    pub database: String,
    /// Basic credentials of a user who may read and write everything, if needed.
    pub credentials: Option<(String, String)>,
    /// Replicates with a well-behaved client (push a new document named by the argument,
    /// pull everything) and panics unless that succeeds and the document reached the
    /// server.
    pub check_healthy: HealthCheck,
    /// Whether the served database has a document with this ID.
    pub has_document: Arc<dyn Fn(&str) -> bool + Send + Sync>,
    /// The bytes the served database holds for a blob (given as `sha1-…` and length), if
    /// any.
    pub blob: BlobLookup,
    /// Where the database keeps its files, when on disk (checked for leftovers).
    pub storage_dir: Option<PathBuf>,
}

impl fmt::Debug for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Target")
            .field("addr", &self.addr)
            .field("database", &self.database)
            .field("storage_dir", &self.storage_dir)
            .finish_non_exhaustive()
    }
}

impl Target {
    fn credentials(&self) -> Option<(&str, &str)> {
        self.credentials
            .as_ref()
            .map(|(u, p)| (u.as_str(), p.as_str()))
    }

    async fn raw(&self) -> RawPeer {
        RawPeer::connect(self.addr, &self.database, self.credentials())
            .await
            .unwrap_or_else(|e| panic!("cannot connect to {}: {e}", self.addr))
    }

    async fn blip(&self) -> BlipPeer {
        BlipPeer::connect(self.addr, &self.database, self.credentials())
            .await
            .unwrap_or_else(|e| panic!("cannot connect to {}: {e}", self.addr))
    }

    /// Runs [`Target::check_healthy`] with a fresh document ID.
    pub async fn healthy(&self, tag: &str) {
        static COUNTER: AtomicU64 = AtomicU64::new(0);
        let n = COUNTER.fetch_add(1, Ordering::SeqCst);
        (self.check_healthy)(format!("healthy-{tag}-{n}")).await;
    }
}

/// Resident memory before and at the highest point of an attack.
#[derive(Debug, Clone, Copy, Default)]
pub struct Memory {
    /// Before the attack.
    pub baseline: u64,
    /// The highest reading while it lasted.
    pub peak: u64,
}

impl Memory {
    /// How much the process grew.
    pub fn growth(&self) -> u64 {
        self.peak.saturating_sub(self.baseline)
    }
}

/// What an attack did and what the server answered.
#[derive(Debug, Clone, Default)]
pub struct Report {
    /// The attack.
    pub name: String,
    /// Connections or cases.
    pub cases: usize,
    /// Close codes received, with their counts.
    pub closes: BTreeMap<u16, usize>,
    /// Cases the server accepted (a valid frame after all), still open at the end.
    pub accepted: usize,
    /// Free-form figures.
    pub notes: Vec<String>,
    /// Resident memory.
    pub memory: Memory,
    /// Wall time.
    pub elapsed: Duration,
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}: {} cases, closes {:?}, accepted {}, memory {:.1} MiB -> peak {:.1} MiB (+{:.1}), {:.1} s",
            self.name,
            self.cases,
            self.closes,
            self.accepted,
            mib(self.memory.baseline),
            mib(self.memory.peak),
            mib(self.memory.growth()),
            self.elapsed.as_secs_f64()
        )?;
        for note in &self.notes {
            write!(f, "; {note}")?;
        }
        Ok(())
    }
}

/// Measures an attack: memory from now, wall time.
struct Watch {
    name: String,
    baseline: u64,
    peak: PeakResident,
    started: Instant,
}

impl Watch {
    fn start(name: &str) -> Watch {
        Watch {
            name: name.to_owned(),
            baseline: resident_bytes(),
            peak: PeakResident::start(),
            started: Instant::now(),
        }
    }

    /// The growth so far, checked against [`MAX_GROWTH`].
    fn check(&self) -> Memory {
        let memory = Memory {
            baseline: self.baseline,
            peak: self.peak.peak(),
        };
        assert!(
            memory.growth() < MAX_GROWTH,
            "{}: resident memory grew by {:.1} MiB (from {:.1} MiB), more than {:.0} MiB",
            self.name,
            mib(memory.growth()),
            mib(memory.baseline),
            mib(MAX_GROWTH)
        );
        memory
    }

    fn finish(self, mut report: Report) -> Report {
        report.memory = self.check();
        report.name = self.name;
        report.elapsed = self.started.elapsed();
        report
    }
}

// ----- what the server must answer -----

/// One thing sent to the server.
#[derive(Debug, Clone)]
pub enum Sent {
    /// A binary WebSocket message (a BLIP frame, or garbage).
    Binary(Vec<u8>),
    /// A text WebSocket message.
    Text(String),
}

impl Sent {
    fn bytes(&self) -> &[u8] {
        match self {
            Sent::Binary(data) => data,
            Sent::Text(text) => text.as_bytes(),
        }
    }
}

/// The close code a server must answer `sent` with: the error of a fresh BLIP connection
/// receiving the same messages, or `None` when it accepts them all (then the server must
/// not close). Text messages count as their bytes (the transport hands them over as such).
pub fn expected_close(sent: &[Sent]) -> Option<u16> {
    let mut codec = blip::Connection::default();
    for item in sent {
        if let Err(e) = codec.receive(item.bytes()) {
            return Some(e.close_code());
        }
    }
    None
}

fn hex(data: &[u8]) -> String {
    data.iter().map(|b| format!("{b:02x}")).collect()
}

fn describe(sent: &[Sent]) -> String {
    sent.iter()
        .map(|s| match s {
            Sent::Binary(data) if data.len() > 64 => {
                format!("bin[{}] {}…", data.len(), hex(&data[..64]))
            }
            Sent::Binary(data) => format!("bin {}", hex(data)),
            Sent::Text(text) => format!("text {text:?}"),
        })
        .collect::<Vec<_>>()
        .join(" | ")
}

/// Sends `sent` on a new connection and checks the server's reaction against
/// [`expected_close`]. Returns the close code received (`None`: still open).
async fn attack_once(target: &Target, sent: &[Sent], label: &str) -> Option<u16> {
    let expected = expected_close(sent);
    let mut peer = target.raw().await;
    for item in sent {
        let result = match item {
            Sent::Binary(data) => peer.feed(data.clone()).await,
            Sent::Text(text) => peer.flush().await.and(peer.send_text(text).await),
        };
        // The server may close before everything was sent: its close is read below.
        if result.is_err() {
            break;
        }
    }
    let _ = peer.flush().await;
    let wait = if expected.is_some() {
        CLOSE_WAIT
    } else {
        SILENCE
    };
    let outcome = peer.outcome(wait).await;
    match (&expected, &outcome.end) {
        (Some(code), End::Closed(Some(got))) if got == code => {}
        (None, End::Silent) => {}
        _ => panic!(
            "{label}: expected {}, got {:?} after {} frames; sent {}",
            match expected {
                Some(code) => format!("a close with {code}"),
                None => "the connection to stay open".to_owned(),
            },
            outcome.end,
            outcome.frames.len(),
            describe(sent)
        ),
    }
    peer.close().await;
    expected
}

/// Runs many attacks, [`PARALLEL`] connections at a time; counts the closes.
async fn attack_many(target: &Target, attacks: Vec<(String, Vec<Sent>)>, report: &mut Report) {
    let mut pending = attacks.into_iter();
    loop {
        let batch: Vec<(String, Vec<Sent>)> = pending.by_ref().take(PARALLEL).collect();
        if batch.is_empty() {
            break;
        }
        let mut tasks = tokio::task::JoinSet::new();
        for (label, sent) in batch {
            let target = target.clone();
            tasks.spawn(async move { attack_once(&target, &sent, &label).await });
        }
        while let Some(result) = tasks.join_next().await {
            match result {
                Ok(Some(code)) => *report.closes.entry(code).or_default() += 1,
                Ok(None) => report.accepted += 1,
                Err(e) => std::panic::resume_unwind(e.into_panic()),
            }
            report.cases += 1;
        }
    }
}

// ----- the attacks -----

/// `connections` connections each sending one to three binary messages of random bytes
/// (up to 600 each), plus a few text messages.
pub async fn random_bytes(target: &Target, seed: u64, connections: usize) -> Report {
    let watch = Watch::start("random bytes");
    let mut rng = Prng::new(seed);
    let mut attacks: Vec<(String, Vec<Sent>)> = (0..connections)
        .map(|i| {
            let sent = (0..=rng.below(3))
                .map(|_| {
                    let len = rng.below(600);
                    Sent::Binary(rng.bytes(len))
                })
                .collect();
            (format!("random #{i} (seed {seed})"), sent)
        })
        .collect();
    for text in [
        "",
        "hello",
        r#"{"Profile":"getCheckpoint"}"#,
        "\u{1}\u{0}=x",
    ] {
        attacks.push((format!("text {text:?}"), vec![Sent::Text(text.to_owned())]));
    }
    let mut report = Report::default();
    attack_many(target, attacks, &mut report).await;
    target.healthy("after-random").await;
    watch.finish(report)
}

/// The client frames of the LiteCore 3.1 transcripts a server can take without answering
/// with requests of its own: the requests up to the first response, and at most up to the
/// first `subChanges` (after which the server starts sending).
pub fn transcript_prefixes() -> Vec<(&'static str, Vec<Vec<u8>>)> {
    let scenarios = [
        "push-basic",
        "push-existing",
        "bidi-conflict",
        "pull-basic",
        "pull-blob",
        "pull-large",
        "continuous-pull",
    ];
    scenarios
        .into_iter()
        .map(|name| {
            let mut prefix = Vec::new();
            for frame in litecore_frames(name, true) {
                let Ok(header) = FrameHeader::parse(&frame) else {
                    break;
                };
                match header.frame_type() {
                    FrameType::Request => {
                        let sub_changes = frame
                            .windows(b"subChanges".len())
                            .any(|w| w == b"subChanges");
                        prefix.push(frame);
                        if sub_changes {
                            break;
                        }
                    }
                    FrameType::AckRequest | FrameType::AckResponse => prefix.push(frame),
                    _ => break,
                }
            }
            (name, prefix)
        })
        .collect()
}

/// `connections` connections each replaying the start of a real LiteCore session with its
/// last frame mutated (bits flipped, truncated, extended, a byte replaced or bytes
/// inserted).
pub async fn mutated_transcripts(target: &Target, seed: u64, connections: usize) -> Report {
    let watch = Watch::start("mutated LiteCore frames");
    let prefixes = transcript_prefixes();
    let mut rng = Prng::new(seed);
    let attacks = (0..connections)
        .map(|i| {
            let (name, frames) = &prefixes[rng.below(prefixes.len())];
            let at = rng.below(frames.len());
            let mut sent: Vec<Sent> = frames[..at].iter().cloned().map(Sent::Binary).collect();
            sent.push(Sent::Binary(mutate(&frames[at], &mut rng)));
            (
                format!("{name} frame {at} mutated (#{i}, seed {seed})"),
                sent,
            )
        })
        .collect();
    let mut report = Report::default();
    attack_many(target, attacks, &mut report).await;
    report.notes.push(format!(
        "transcripts: {}",
        prefixes
            .iter()
            .map(|(name, frames)| format!("{name} ({} frames)", frames.len()))
            .collect::<Vec<_>>()
            .join(", ")
    ));
    target.healthy("after-mutations").await;
    watch.finish(report)
}

/// The head of a `rev` request (its property block), for bombs.
fn rev_head() -> Vec<u8> {
    encode_message(
        &[("Profile", "rev"), ("id", "bomb"), ("rev", "1-aaaa")],
        b"",
    )
}

/// Decompression bombs: one compressed frame inflating to 2 GiB of zeros (refused at the
/// per-frame limit), a message of compressed frames of 4 MiB each (refused at the message
/// limit), and a WebSocket frame header announcing 1 GiB (refused by the transport before
/// its payload is read). Each must be closed with 1009.
pub async fn decompression_bombs(target: &Target) -> Report {
    let watch = Watch::start("decompression bombs");
    let mut report = Report::default();

    // One frame, 2 GiB inflated.
    let bomb = ZeroFrames::new().frame(1, 0, &rev_head(), 2048);
    report.notes.push(format!(
        "single frame: {} bytes inflating to 2 GiB",
        bomb.len()
    ));
    let mut peer = target.raw().await;
    let _ = peer.send(bomb).await;
    let outcome = peer.outcome(CLOSE_WAIT).await;
    assert_eq!(
        outcome.end,
        End::Closed(Some(blip::CLOSE_MESSAGE_TOO_BIG)),
        "a frame inflating to 2 GiB"
    );
    *report.closes.entry(1009).or_default() += 1;
    peer.close().await;

    // Many frames of 4 MiB each, one message.
    let mut zeros = ZeroFrames::new();
    let mut peer = target.raw().await;
    let mut frames_sent = 0;
    for i in 0..64 {
        let head = if i == 0 { rev_head() } else { Vec::new() };
        if peer
            .send(zeros.frame(1, flags::MORE_COMING, &head, 4))
            .await
            .is_err()
        {
            break;
        }
        frames_sent += 1;
    }
    let outcome = peer.outcome(CLOSE_WAIT).await;
    assert_eq!(
        outcome.end,
        End::Closed(Some(blip::CLOSE_MESSAGE_TOO_BIG)),
        "a message of compressed 4 MiB frames"
    );
    *report.closes.entry(1009).or_default() += 1;
    report.notes.push(format!(
        "multi-frame: closed after {frames_sent} frames of 4 MiB sent"
    ));
    peer.close().await;

    // A WebSocket frame announcing 1 GiB.
    let mut peer = target.raw().await;
    let mut header = vec![0x82, 0xff];
    header.extend_from_slice(&(1u64 << 30).to_be_bytes());
    header.extend_from_slice(&[0x11, 0x22, 0x33, 0x44]);
    header.extend_from_slice(&[0u8; 1024]);
    peer.write_raw(&header)
        .await
        .expect("writing a frame header");
    let outcome = peer.outcome(CLOSE_WAIT).await;
    assert_eq!(
        outcome.end,
        End::Closed(Some(blip::CLOSE_MESSAGE_TOO_BIG)),
        "a WebSocket frame announcing 1 GiB"
    );
    *report.closes.entry(1009).or_default() += 1;
    report.cases = 3;

    target.healthy("after-bombs").await;
    watch.finish(report)
}

/// Malformed frames, each on its own connection and each closed with 1011: properties
/// without their final NUL or with an odd number of strings, a property block over the
/// 100 KiB limit or longer than its message, varints longer than ten bytes (message
/// number, flags, property length), a varint cut short, a frame too short for its checksum,
/// a wrong checksum, a request out of sequence, a response to nothing, an empty message.
pub async fn malformed_frames(target: &Target) -> Report {
    let watch = Watch::start("malformed frames");
    let get_checkpoint = encode_message(&[("Profile", "getCheckpoint"), ("client", "x")], b"");
    let mut cases: Vec<(&str, Vec<u8>)> = Vec::new();
    {
        let mut w = FrameWriter::new();
        let mut data = vec![21];
        data.extend_from_slice(b"Profile\0getCheckpoint");
        cases.push(("properties without their final NUL", w.plain(1, 0, &data)));
    }
    {
        let mut w = FrameWriter::new();
        let mut data = vec![29];
        data.extend_from_slice(b"Profile\0getCheckpoint\0client\0");
        cases.push(("an odd number of property strings", w.plain(1, 0, &data)));
    }
    {
        let mut w = FrameWriter::new();
        let mut data = Vec::new();
        blip::varint::write(blip::MAX_PROPERTIES_SIZE as u64 + 1, &mut data);
        data.extend_from_slice(b"Profile\0rev\0");
        cases.push((
            "a property block 1 byte over 100 KiB",
            w.plain(1, flags::MORE_COMING, &data),
        ));
    }
    {
        let mut w = FrameWriter::new();
        let mut data = Vec::new();
        blip::varint::write(u64::MAX, &mut data);
        data.extend_from_slice(b"Profile\0rev\0");
        cases.push((
            "a property length of 2^64-1",
            w.plain(1, flags::MORE_COMING, &data),
        ));
    }
    {
        let mut w = FrameWriter::new();
        let mut data = vec![200];
        data.extend_from_slice(b"Profile\0getCheckpoint\0");
        cases.push((
            "a property block longer than its message",
            w.plain(1, 0, &data),
        ));
    }
    {
        let mut w = FrameWriter::new();
        let mut data = vec![0x80; 10];
        data.push(0x00);
        data.extend_from_slice(b"Profile\0getCheckpoint\0");
        cases.push(("an 11-byte property length", w.plain(1, 0, &data)));
    }
    {
        let mut frame = vec![0x81; 10];
        frame.push(0x00);
        frame.push(0x00);
        frame.extend_from_slice(&get_checkpoint);
        frame.extend_from_slice(&[0, 0, 0, 0]);
        cases.push(("an 11-byte message number", frame));
    }
    {
        let mut frame = vec![0x01];
        frame.extend_from_slice(&[0x80; 10]);
        frame.push(0x00);
        frame.extend_from_slice(&get_checkpoint);
        frame.extend_from_slice(&[0, 0, 0, 0]);
        cases.push(("11-byte flags", frame));
    }
    cases.push(("a varint cut by the end of the frame", vec![0x81]));
    cases.push(("a frame too short for its checksum", vec![0x01, 0x00, 0xaa]));
    cases.push((
        "a wrong checksum",
        super::frame(1, 0, &get_checkpoint, 0xdead_beef),
    ));
    cases.push((
        "request #7 first",
        FrameWriter::new().plain(7, 0, &get_checkpoint),
    ));
    cases.push((
        "a response to no request",
        FrameWriter::new().plain(1, 1, &[0]),
    ));
    cases.push(("an empty message", Vec::new()));
    let mut report = Report::default();
    for (label, frame) in cases {
        let sent = vec![Sent::Binary(frame)];
        assert_eq!(
            expected_close(&sent),
            Some(blip::CLOSE_UNEXPECTED_CONDITION),
            "{label}: the codec itself must refuse it"
        );
        let code = attack_once(target, &sent, label).await;
        *report.closes.entry(code.unwrap_or_default()).or_default() += 1;
        report.cases += 1;
    }
    target.healthy("after-malformed").await;
    watch.finish(report)
}

/// A `rev` request with raw properties.
fn raw_rev(id: &str, rev: &str, history: Option<&str>, body: &str) -> Message {
    let mut message = Message::request("rev");
    message.properties.set("id", id);
    message.properties.set("rev", rev);
    if let Some(history) = history {
        message.properties.set("history", history);
    }
    message.body = Bytes::copy_from_slice(body.as_bytes());
    message
}

/// An HTTP 4xx error reply: the request itself is refused.
fn is_refusal(reply: &Message) -> bool {
    matches!(reply.error(), Some(("HTTP", 400..=499)))
}

/// An HTTP error reply of any status (a blob the peer would not give is a 502).
fn is_error(reply: &Message) -> bool {
    matches!(reply.error(), Some(("HTTP", 400..=599)))
}

fn error_text(reply: &Message) -> String {
    format!(
        "{:?} {}",
        reply.error(),
        String::from_utf8_lossy(&reply.body)
    )
}

/// `rev`s whose history lies (generations not decreasing one by one, a gap between the
/// revision and its history, repeated or malformed entries): each refused with an HTTP 4xx
/// error and nothing stored; an honest `rev` on the same connection is stored.
pub async fn lying_histories(target: &Target) -> Report {
    let watch = Watch::start("lying rev histories");
    let lies: [(&str, &str, Option<&str>); 8] = [
        ("liar-gap", "3-aaaa", Some("1-bbbb")),
        ("liar-same-generation", "2-aaaa", Some("2-bbbb,1-cccc")),
        ("liar-rising", "4-dddd", Some("3-cccc,2-bbbb,3-aaaa")),
        ("liar-deep-gap", "5-eeee", Some("4-dddd,3-cccc,1-aaaa")),
        ("liar-older-first", "3-aaaa", Some("1-bbbb,2-cccc")),
        ("liar-first-generation", "1-aaaa", Some("1-bbbb")),
        ("liar-malformed", "2-aaaa", Some("1-zz")),
        ("liar-bad-rev", "0-aaaa", None),
    ];
    let mut peer = target.blip().await;
    let mut report = Report::default();
    let mut answer = super::no_answers();
    for (id, rev, history) in lies {
        let reply = peer
            .request(
                raw_rev(id, rev, history, r#"{"lie":true}"#),
                CLOSE_WAIT,
                &mut answer,
            )
            .await
            .unwrap_or_else(|e| panic!("{id}: {e}"));
        assert!(
            is_refusal(&reply),
            "{id} ({rev}, history {history:?}) was not refused: {:?}",
            reply.properties
        );
        assert!(!(target.has_document)(id), "{id} was stored");
        report.notes.push(format!("{id}: {}", error_text(&reply)));
        report.cases += 1;
    }
    let honest = peer
        .request(
            raw_rev(
                "honest-history",
                "2-aaaa",
                Some("1-bbbb"),
                r#"{"honest":true}"#,
            ),
            CLOSE_WAIT,
            &mut answer,
        )
        .await
        .expect("the honest rev");
    assert_eq!(
        honest.kind,
        MessageType::Response,
        "{}",
        error_text(&honest)
    );
    assert!((target.has_document)("honest-history"));
    peer.close().await;
    target.healthy("after-lies").await;
    watch.finish(report)
}

/// A request of the server, answered by the blob attacks.
fn reply_with(request: &Message, body: Vec<u8>) -> Message {
    let mut reply = Message::response_to(request);
    reply.body = Bytes::from(body);
    reply
}

/// Pushed revisions whose blob bytes do not match their digest — a blob (or a legacy
/// attachment stub) whose `getAttachment` is answered with other bytes of the same length,
/// more bytes, fewer bytes or an error, inline attachment data that does not match its
/// digest, and a wrong `proveAttachment` answer for a blob the server has — each refused
/// with an HTTP 4xx error: the document is not stored, neither is a blob under the digest
/// (the honest push that follows stores the right bytes), and no other file holds the
/// wrong bytes.
pub async fn mismatched_blobs(target: &Target) -> Report {
    let watch = Watch::start("blobs not matching their digest");
    let mut rng = Prng::new(0xb10b);
    let good = rng.bytes(10_000);
    let digest = BlobDigest::of(&good).to_string();
    let length = good.len();
    let same_length = rng.bytes(length);
    let longer = rng.bytes(3 * length);
    let shorter = good[..length / 2].to_vec();
    let blob_body = format!(
        r#"{{"photo":{{"@type":"blob","content_type":"application/octet-stream","digest":"{digest}","length":{length}}}}}"#
    );
    let stub_body = format!(
        r#"{{"_attachments":{{"old.bin":{{"stub":true,"revpos":1,"digest":"{digest}","length":{length},"content_type":"application/octet-stream"}}}}}}"#
    );
    let inline_body = format!(
        r#"{{"_attachments":{{"inline.bin":{{"data":"{}","digest":"{digest}","content_type":"application/octet-stream"}}}}}}"#,
        base64::engine::general_purpose::STANDARD.encode(&same_length)
    );
    let wrong: [(&str, &str, Option<Vec<u8>>); 6] = [
        ("blob-same-length", &blob_body, Some(same_length.clone())),
        ("blob-longer", &blob_body, Some(longer.clone())),
        ("blob-shorter", &blob_body, Some(shorter.clone())),
        ("blob-refused", &blob_body, None),
        ("stub-same-length", &stub_body, Some(same_length.clone())),
        ("inline-mismatch", &inline_body, Some(same_length.clone())),
    ];
    let mut peer = target.blip().await;
    let mut report = Report::default();
    for (id, body, bytes) in wrong {
        let fetched = Arc::new(AtomicU64::new(0));
        let counter = fetched.clone();
        let answered = bytes.is_some();
        let mut answer = move |request: &Message| -> Option<Message> {
            match request.profile() {
                Some("getAttachment") => {
                    counter.fetch_add(1, Ordering::SeqCst);
                    Some(match &bytes {
                        Some(bytes) => reply_with(request, bytes.clone()),
                        None => Message::error_to(request, "HTTP", 404, "not here"),
                    })
                }
                _ => None,
            }
        };
        let reply = peer
            .request(raw_rev(id, "1-aaaa", None, body), CLOSE_WAIT, &mut answer)
            .await
            .unwrap_or_else(|e| panic!("{id}: {e}"));
        let refused = if answered {
            is_refusal(&reply)
        } else {
            is_error(&reply)
        };
        assert!(refused, "{id} was not refused: {reply:?}");
        assert!(!(target.has_document)(id), "{id} was stored");
        assert_eq!(
            (target.blob)(&digest, length as u64),
            None,
            "{id}: a blob is stored under the digest"
        );
        report.notes.push(format!(
            "{id}: {} after {} getAttachment",
            error_text(&reply),
            fetched.load(Ordering::SeqCst)
        ));
        report.cases += 1;
    }

    // The honest push stores the right bytes under the digest.
    let good_bytes = good.clone();
    let mut honest = move |request: &Message| -> Option<Message> {
        (request.profile() == Some("getAttachment"))
            .then(|| reply_with(request, good_bytes.clone()))
    };
    let reply = peer
        .request(
            raw_rev("blob-honest", "1-aaaa", None, &blob_body),
            CLOSE_WAIT,
            &mut honest,
        )
        .await
        .expect("the honest blob push");
    assert_eq!(reply.kind, MessageType::Response, "{}", error_text(&reply));
    assert!((target.has_document)("blob-honest"));
    assert_eq!(
        (target.blob)(&digest, length as u64).as_deref(),
        Some(&good[..]),
        "the stored blob"
    );

    // The server has the blob now: a push referencing it must prove it has the bytes.
    let proofs = Arc::new(AtomicU64::new(0));
    let counter = proofs.clone();
    let mut wrong_proof = move |request: &Message| -> Option<Message> {
        match request.profile() {
            Some("proveAttachment") => {
                counter.fetch_add(1, Ordering::SeqCst);
                let proof = prove_attachment(&request.body, b"not the blob");
                Some(reply_with(request, proof.into_bytes()))
            }
            Some("getAttachment") => Some(reply_with(request, b"not the blob".to_vec())),
            _ => None,
        }
    };
    let reply = peer
        .request(
            raw_rev("blob-wrong-proof", "1-aaaa", None, &blob_body),
            CLOSE_WAIT,
            &mut wrong_proof,
        )
        .await
        .expect("the push with a wrong proof");
    assert!(
        is_refusal(&reply),
        "a wrong proof was not refused: {}",
        error_text(&reply)
    );
    assert!(!(target.has_document)("blob-wrong-proof"));
    report.notes.push(format!(
        "blob-wrong-proof: {} after {} proveAttachment",
        error_text(&reply),
        proofs.load(Ordering::SeqCst)
    ));
    report.cases += 1;
    peer.close().await;

    if let Some(dir) = &target.storage_dir {
        let mut files = Vec::new();
        list_files(dir, &mut files);
        for path in &files {
            let name = path.to_string_lossy();
            assert!(!name.ends_with(".tmp"), "a temporary file is left: {name}");
            if let Ok(content) = std::fs::read(path) {
                for bad in [&same_length, &longer, &shorter] {
                    assert!(content != *bad, "{name} holds wrong blob bytes");
                }
            }
        }
        report
            .notes
            .push(format!("{} files checked on disk", files.len()));
    }
    target.healthy("after-blobs").await;
    watch.finish(report)
}

fn list_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        if path.is_dir() {
            list_files(&path, out);
        } else {
            out.push(path);
        }
    }
}

/// The number of the request a complete response or error frame answers.
fn reply_number(frame: &[u8]) -> Option<u64> {
    let header = FrameHeader::parse(frame).ok()?;
    match header.frame_type() {
        FrameType::Response | FrameType::Error if !header.has(flags::MORE_COMING) => {
            Some(header.number)
        }
        _ => None,
    }
}

/// `count` `getCheckpoint` requests sent without reading: while they are pending, the
/// server's memory stays bounded (it stops reading when its replies pile up) and another
/// client replicates; then every request is answered once the replies are read.
pub async fn request_flood(target: &Target, count: u64) -> Report {
    let watch = Watch::start("requests in flight");
    let (mut tx, mut rx) = target.raw().await.split();
    let sent = Arc::new(AtomicU64::new(0));
    let sender = {
        let sent = sent.clone();
        tokio::spawn(async move {
            let mut w = FrameWriter::new();
            let data = encode_message(&[("Profile", "getCheckpoint"), ("client", "flood")], b"");
            for number in 1..=count {
                if let Err(e) = tx.feed(w.plain(number, 0, &data)).await {
                    return Err(format!("after {number} requests: {e}"));
                }
                sent.store(number, Ordering::SeqCst);
            }
            tx.flush().await.map(|()| tx)
        })
    };
    // Nothing is read for a while: the requests pile up on the server or in the sockets.
    let deadline = Instant::now() + Duration::from_secs(8);
    while !sender.is_finished() && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let sent_unread = sent.load(Ordering::SeqCst);
    let memory_unread = watch.check();
    target.healthy("during-flood").await;

    // Now read: every request gets its reply.
    let mut answered = vec![false; count as usize + 1];
    let mut replies = 0u64;
    while replies < count {
        match rx.next_event(Duration::from_secs(30)).await {
            Event::Frame(frame) => {
                if let Some(number) = reply_number(&frame) {
                    let slot = answered
                        .get_mut(number as usize)
                        .unwrap_or_else(|| panic!("a reply to #{number}, never sent"));
                    assert!(!*slot, "two replies to #{number}");
                    *slot = true;
                    replies += 1;
                }
            }
            Event::End(end) => panic!("after {replies} replies of {count}: {end:?}"),
        }
    }
    let tx = sender
        .await
        .expect("the sender task")
        .expect("sending the requests");
    drop((tx, rx));
    let mut report = Report {
        cases: count as usize,
        accepted: replies as usize,
        ..Report::default()
    };
    report.notes.push(format!(
        "{sent_unread} of {count} requests sent before reading (the rest waited for the server), peak +{:.1} MiB meanwhile; all {replies} answered",
        mib(memory_unread.growth())
    ));
    target.healthy("after-flood").await;
    watch.finish(report)
}

/// `count` `getCheckpoint` requests for a 1 MiB checkpoint (so each small request costs
/// the server a large reply), sent without ever reading: the server stops reading instead
/// of holding the replies.
pub async fn amplified_flood(target: &Target, count: u64) -> Report {
    let mut peer = target.blip().await;
    let mut rng = Prng::new(0xa3);
    let pad: String = rng
        .bytes(1 << 20)
        .into_iter()
        .map(|b| char::from(b'a' + b % 26))
        .collect();
    let mut set = Message::request("setCheckpoint");
    set.properties.set("client", "amplify");
    set.body = Bytes::from(format!(r#"{{"pad":"{pad}"}}"#));
    let reply = peer
        .request(set, CLOSE_WAIT, &mut super::no_answers())
        .await
        .expect("setCheckpoint");
    assert_eq!(reply.kind, MessageType::Response, "{}", error_text(&reply));

    peer.close().await;

    // The checkpoint stays: a new connection floods it.
    let watch = Watch::start("amplified requests, never read");
    let (mut tx, rx) = target.raw().await.split();
    let sent = Arc::new(AtomicU64::new(0));
    let sender = {
        let sent = sent.clone();
        tokio::spawn(async move {
            let mut w = FrameWriter::new();
            let data = encode_message(&[("Profile", "getCheckpoint"), ("client", "amplify")], b"");
            for number in 1..=count {
                if tx.feed(w.plain(number, 0, &data)).await.is_err() {
                    return;
                }
                sent.store(number, Ordering::SeqCst);
            }
            let _ = tx.flush().await;
        })
    };
    tokio::time::sleep(Duration::from_secs(8)).await;
    let memory = watch.check();
    target.healthy("during-amplified-flood").await;
    sender.abort();
    drop(rx);
    let mut report = Report {
        cases: count as usize,
        ..Report::default()
    };
    report.notes.push(format!(
        "{} of {count} requests taken by the server or its socket before it stopped reading (peak +{:.1} MiB)",
        sent.load(Ordering::SeqCst),
        mib(memory.growth())
    ));
    target.healthy("after-amplified-flood").await;
    watch.finish(report)
}

/// `count` requests each left incomplete (a first frame with 1 KiB of data and
/// more-coming set, never finished): the server must close with 1009 once they hold too
/// much, not keep them all.
pub async fn incomplete_flood(target: &Target, count: u64) -> Report {
    let watch = Watch::start("incomplete requests");
    let mut peer = target.raw().await;
    let mut w = FrameWriter::new();
    let data = encode_message(
        &[("Profile", "getCheckpoint"), ("client", "x")],
        &[b'x'; 1024],
    );
    let mut sent = 0;
    for number in 1..=count {
        if peer
            .feed(w.plain(number, flags::MORE_COMING, &data))
            .await
            .is_err()
        {
            break;
        }
        sent = number;
    }
    let _ = peer.flush().await;
    let outcome = peer.outcome(CLOSE_WAIT).await;
    assert_eq!(
        outcome.end,
        End::Closed(Some(blip::CLOSE_MESSAGE_TOO_BIG)),
        "{count} incomplete requests ({sent} sent)"
    );
    let mut report = Report {
        cases: count as usize,
        ..Report::default()
    };
    *report.closes.entry(1009).or_default() += 1;
    report
        .notes
        .push(format!("closed after {sent} requests were sent"));
    target.healthy("after-incomplete").await;
    watch.finish(report)
}

/// A client that subscribes to the whole (large) database's changes and asks for a large
/// blob `requests` times, then never reads: the server does not buffer what it cannot
/// send, and another client replicates meanwhile.
pub async fn never_reader(target: &Target, blob: (&str, &str), requests: u64) -> Report {
    let (doc_id, digest) = blob;
    let watch = Watch::start("a client that never reads");
    let mut peer = target.raw().await;
    let mut w = FrameWriter::new();
    let sub = encode_message(
        &[
            ("Profile", "subChanges"),
            ("continuous", "true"),
            ("batch", "200"),
        ],
        b"",
    );
    let get = encode_message(
        &[
            ("Profile", "getAttachment"),
            ("digest", digest),
            ("docID", doc_id),
        ],
        b"",
    );
    let sending = async {
        peer.feed(w.plain(1, 0, &sub)).await?;
        for number in 2..=requests + 1 {
            peer.feed(w.plain(number, 0, &get)).await?;
        }
        peer.flush().await
    };
    let all_sent = tokio::time::timeout(Duration::from_secs(8), sending)
        .await
        .is_ok();
    tokio::time::sleep(Duration::from_secs(3)).await;
    let memory = watch.check();
    target.healthy("during-never-reader").await;
    let mut report = Report {
        cases: requests as usize + 1,
        ..Report::default()
    };
    report.notes.push(format!(
        "subChanges + {requests} getAttachment {}; peak +{:.1} MiB while unread",
        if all_sent {
            "all taken"
        } else {
            "(the server stopped reading)"
        },
        mib(memory.growth())
    ));
    drop(peer);
    target.healthy("after-never-reader").await;
    watch.finish(report)
}
