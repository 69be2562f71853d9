//! Hostile peers, for the robustness tests of the replication servers (the gateway's
//! `/_blipsync` and the facade's `UrlEndpointListener`): a raw WebSocket client that sends
//! whatever bytes it is given ([`RawPeer`]), one that speaks BLIP through the protocol
//! crate's codec but answers the server's requests as the test decides ([`BlipPeer`]),
//! hand-built frames with a correct running checksum ([`FrameWriter`]), decompression bombs
//! ([`ZeroFrames`]), real frames from the LiteCore transcripts ([`litecore_frames`]) and
//! their seeded mutations ([`mutate`]), and readings of the process's resident memory
//! ([`resident_bytes`], [`PeakResident`]) — the servers run inside the test process.
//!
//! ```no_run
//! # async fn demo(addr: std::net::SocketAddr) -> Result<(), String> {
//! use std::time::Duration;
//! use ferrolite_testkit::hostile::{End, RawPeer};
//!
//! let mut peer = RawPeer::connect(addr, "db", Some(("alice", "secret"))).await?;
//! peer.send(vec![0xff; 12]).await?;
//! let outcome = peer.outcome(Duration::from_secs(5)).await;
//! assert!(matches!(outcome.end, End::Closed(Some(1011))));
//! # Ok(()) }
//! ```

pub mod attacks;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use base64::Engine as _;
use bytes::Bytes;
use ferrolite_protocol::blip::{self, flags, varint, Message, MessageType};
use flate2::{Compress, Compression, FlushCompress};
use futures_util::stream::{SplitSink, SplitStream};
use futures_util::{SinkExt, StreamExt};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::{Error as WsError, Message as WsMessage};
use tokio_tungstenite::WebSocketStream;

/// The subprotocol the peers ask for.
pub const SUBPROTOCOL: &str = "BLIP_3+CBMobile_3";

// ----- randomness -----

/// A small seeded pseudo-random generator (SplitMix64): the same seed gives the same inputs
/// on every run and every machine.
#[derive(Debug, Clone)]
pub struct Prng(u64);

impl Prng {
    /// A generator starting from `seed`.
    pub fn new(seed: u64) -> Prng {
        Prng(seed)
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// A number in `0..n` (0 when `n` is 0).
    pub fn below(&mut self, n: usize) -> usize {
        if n == 0 {
            return 0;
        }
        (self.next_u64() % n as u64) as usize
    }

    /// `n` random bytes.
    pub fn bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n).map(|_| (self.next_u64() >> 24) as u8).collect()
    }
}

/// A random change to a frame: flipped bits, a truncation, random bytes appended or
/// inserted, or a byte replaced.
pub fn mutate(frame: &[u8], rng: &mut Prng) -> Vec<u8> {
    let mut out = frame.to_vec();
    match rng.below(5) {
        0 => {
            for _ in 0..=rng.below(4) {
                if !out.is_empty() {
                    let i = rng.below(out.len());
                    out[i] ^= 1 << rng.below(8);
                }
            }
        }
        1 => out.truncate(rng.below(out.len().max(1))),
        2 => {
            let n = 1 + rng.below(64);
            let extra = rng.bytes(n);
            out.extend(extra);
        }
        3 => {
            if !out.is_empty() {
                let i = rng.below(out.len());
                out[i] = (rng.next_u64() >> 40) as u8;
            }
        }
        _ => {
            let at = rng.below(out.len() + 1);
            let n = 1 + rng.below(16);
            let extra = rng.bytes(n);
            out.splice(at..at, extra);
        }
    }
    out
}

// ----- memory -----

/// The resident memory of this process in bytes (`VmRSS` of `/proc/self/status`); 0 where
/// that file does not exist.
pub fn resident_bytes() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|value| value.trim().strip_suffix("kB"))
        .and_then(|kb| kb.trim().parse::<u64>().ok())
        .map_or(0, |kb| kb * 1024)
}

/// Bytes as mebibytes, for messages.
pub fn mib(bytes: u64) -> f64 {
    bytes as f64 / f64::from(1u32 << 20)
}

/// The highest resident memory of this process while it runs: a thread reads
/// [`resident_bytes`] every 5 ms.
#[derive(Debug)]
pub struct PeakResident {
    peak: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl PeakResident {
    /// Starts sampling.
    pub fn start() -> PeakResident {
        let peak = Arc::new(AtomicU64::new(resident_bytes()));
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let peak = peak.clone();
            let stop = stop.clone();
            std::thread::spawn(move || {
                while !stop.load(Ordering::SeqCst) {
                    peak.fetch_max(resident_bytes(), Ordering::SeqCst);
                    std::thread::sleep(Duration::from_millis(5));
                }
            })
        };
        PeakResident {
            peak,
            stop,
            thread: Some(thread),
        }
    }

    /// The highest reading so far (a fresh one included).
    pub fn peak(&self) -> u64 {
        self.peak.fetch_max(resident_bytes(), Ordering::SeqCst);
        self.peak.load(Ordering::SeqCst)
    }

    /// Stops sampling and returns the highest reading.
    pub fn finish(mut self) -> u64 {
        self.halt();
        self.peak.load(Ordering::SeqCst)
    }

    fn halt(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
        self.peak.fetch_max(resident_bytes(), Ordering::SeqCst);
    }
}

impl Drop for PeakResident {
    fn drop(&mut self) {
        self.halt();
    }
}

// ----- fixtures -----

/// The directory of the LiteCore 3.1 transcripts.
pub fn litecore_fixtures() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../fixtures/litecore-3.1")
}

/// The binary WebSocket messages (BLIP frames) of one transcript (`push-basic`,
/// `pull-blob`, …), in order: those the client sent (`from_client`) or the server's.
pub fn litecore_frames(scenario: &str, from_client: bool) -> Vec<Vec<u8>> {
    let path = litecore_fixtures().join(format!("{scenario}.jsonl"));
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("cannot read the transcript {scenario}: {e}"));
    let direction = if from_client { "c2s" } else { "s2c" };
    text.lines()
        .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
        .filter(|entry| entry["dir"] == direction && entry["opcode"] == "binary")
        .filter_map(|entry| entry["hex"].as_str().map(hex))
        .collect()
}

fn hex(text: &str) -> Vec<u8> {
    text.as_bytes()
        .chunks(2)
        .filter_map(|pair| {
            let pair = std::str::from_utf8(pair).ok()?;
            u8::from_str_radix(pair, 16).ok()
        })
        .collect()
}

// ----- frames -----

/// An encoded BLIP message, `uvarint(P) | properties | body`, with the properties written
/// as given (no check).
pub fn encode_message(properties: &[(&str, &str)], body: &[u8]) -> Vec<u8> {
    let mut block = Vec::new();
    for (key, value) in properties {
        block.extend_from_slice(key.as_bytes());
        block.push(0);
        block.extend_from_slice(value.as_bytes());
        block.push(0);
    }
    let mut out = Vec::with_capacity(block.len() + body.len() + varint::MAX_LEN);
    varint::write(block.len() as u64, &mut out);
    out.extend_from_slice(&block);
    out.extend_from_slice(body);
    out
}

/// A frame: `uvarint(number) | flags | data | checksum` (big-endian).
pub fn frame(number: u64, frame_flags: u8, data: &[u8], checksum: u32) -> Vec<u8> {
    let mut out = Vec::with_capacity(data.len() + 16);
    varint::write(number, &mut out);
    out.push(frame_flags);
    out.extend_from_slice(data);
    out.extend_from_slice(&checksum.to_be_bytes());
    out
}

/// Builds frames by hand with the running checksum (and deflate stream) a receiver
/// expects, so that only what a test breaks on purpose is wrong.
#[derive(Debug)]
pub struct FrameWriter {
    crc: crc32fast::Hasher,
    deflate: Compress,
}

impl Default for FrameWriter {
    fn default() -> Self {
        FrameWriter::new()
    }
}

impl FrameWriter {
    /// A writer for the first frame of a connection (checksum 0, fresh deflate stream).
    pub fn new() -> FrameWriter {
        FrameWriter {
            crc: crc32fast::Hasher::new(),
            deflate: Compress::new(Compression::default(), false),
        }
    }

    /// The running checksum so far.
    pub fn checksum(&self) -> u32 {
        self.crc.clone().finalize()
    }

    /// An uncompressed frame carrying `data`.
    pub fn plain(&mut self, number: u64, frame_flags: u8, data: &[u8]) -> Vec<u8> {
        self.crc.update(data);
        frame(
            number,
            frame_flags & !flags::COMPRESSED,
            data,
            self.checksum(),
        )
    }

    /// A compressed frame carrying `data` (deflated through the connection's stream).
    pub fn deflated(&mut self, number: u64, frame_flags: u8, data: &[u8]) -> Vec<u8> {
        let mut compressed = deflate_sync(&mut self.deflate, data);
        strip_trailer(&mut compressed);
        self.crc.update(data);
        frame(
            number,
            frame_flags | flags::COMPRESSED,
            &compressed,
            self.checksum(),
        )
    }

    /// Adds `data` to the running checksum without producing a frame (for frames built
    /// another way).
    pub fn account(&mut self, data: &[u8]) {
        self.crc.update(data);
    }
}

/// Deflates `input` with a sync flush at the end (the `00 00 FF FF` trailer kept).
fn deflate_sync(deflate: &mut Compress, input: &[u8]) -> Vec<u8> {
    let start = deflate.total_in();
    let mut out = Vec::with_capacity(input.len() / 64 + 1024);
    loop {
        if out.len() == out.capacity() {
            out.reserve(out.capacity().max(1024));
        }
        let consumed = (deflate.total_in() - start) as usize;
        if let Err(e) = deflate.compress_vec(&input[consumed..], &mut out, FlushCompress::Sync) {
            panic!("deflate failed: {e}");
        }
        let consumed = (deflate.total_in() - start) as usize;
        if consumed == input.len() && out.len() < out.capacity() {
            return out;
        }
    }
}

fn strip_trailer(data: &mut Vec<u8>) {
    if data.ends_with(&[0, 0, 0xff, 0xff]) {
        data.truncate(data.len() - 4);
    }
}

/// Frames whose deflated data inflate to runs of zeros (decompression bombs), built
/// without compressing the zeros: once the window holds only zeros, the deflate of one
/// more MiB of zeros is always the same bytes (about 1 KiB), so they are repeated. The
/// frames share one deflate stream and carry the right running checksum, so a receiver
/// that does not stop them early inflates them all.
#[derive(Debug)]
pub struct ZeroFrames {
    deflate: Compress,
    /// The deflate of one MiB of zeros after a window of zeros, sync-flushed.
    repeated: Option<Vec<u8>>,
    crc: crc32fast::Hasher,
    /// The CRC state of one MiB of zeros, to combine.
    mib_crc: crc32fast::Hasher,
}

impl Default for ZeroFrames {
    fn default() -> Self {
        ZeroFrames::new()
    }
}

impl ZeroFrames {
    const MIB: usize = 1 << 20;

    /// A fresh stream (the first compressed frame of a connection).
    pub fn new() -> ZeroFrames {
        let mut mib_crc = crc32fast::Hasher::new();
        mib_crc.update(&vec![0u8; Self::MIB]);
        ZeroFrames {
            deflate: Compress::new(Compression::best(), false),
            repeated: None,
            crc: crc32fast::Hasher::new(),
            mib_crc,
        }
    }

    /// A compressed frame whose data inflates to `head` followed by `mebibytes` MiB of
    /// zeros (at least 1). `head` may be non-empty only in the first frame.
    pub fn frame(&mut self, number: u64, frame_flags: u8, head: &[u8], mebibytes: u64) -> Vec<u8> {
        let mebibytes = mebibytes.max(1);
        let mut data;
        let mut remaining = mebibytes;
        match &self.repeated {
            None => {
                let mut first = head.to_vec();
                first.extend_from_slice(&vec![0u8; Self::MIB]);
                data = deflate_sync(&mut self.deflate, &first);
                self.crc.update(&first);
                remaining -= 1;
                self.repeated = Some(deflate_sync(&mut self.deflate, &vec![0u8; Self::MIB]));
            }
            Some(_) => {
                assert!(head.is_empty(), "only the first frame carries a head");
                data = Vec::new();
            }
        }
        if let Some(repeated) = &self.repeated {
            for _ in 0..remaining {
                data.extend_from_slice(repeated);
                self.crc.combine(&self.mib_crc);
            }
        }
        strip_trailer(&mut data);
        frame(
            number,
            frame_flags | flags::COMPRESSED,
            &data,
            self.crc.clone().finalize(),
        )
    }
}

// ----- the raw WebSocket peer -----

/// How a connection ended, or what it did last (see [`RawPeer::outcome`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum End {
    /// The server sent a close frame, with this code.
    Closed(Option<u16>),
    /// The TCP connection ended without a close frame.
    Ended,
    /// Reading failed (reset, protocol error…).
    Failed(String),
    /// Nothing came for the whole wait: the connection is still open.
    Silent,
}

/// What came back after an attack: the frames received, then how it ended.
#[derive(Debug, Clone)]
pub struct Outcome {
    /// Binary messages received.
    pub frames: Vec<Bytes>,
    /// The close, the end, or silence.
    pub end: End,
}

/// One event read from the server.
#[derive(Debug, Clone)]
pub enum Event {
    /// A binary message (a BLIP frame).
    Frame(Bytes),
    /// The connection ended (or nothing came in time: [`End::Silent`]).
    End(End),
}

type Ws = WebSocketStream<TcpStream>;

async fn next_event<S>(stream: &mut S, wait: Duration) -> Event
where
    S: futures_util::Stream<Item = Result<WsMessage, WsError>> + Unpin,
{
    let deadline = tokio::time::Instant::now() + wait;
    loop {
        let next = match tokio::time::timeout_at(deadline, stream.next()).await {
            Ok(next) => next,
            Err(_) => return Event::End(End::Silent),
        };
        return match next {
            Some(Ok(WsMessage::Binary(data))) => Event::Frame(data),
            Some(Ok(WsMessage::Close(frame))) => {
                Event::End(End::Closed(frame.map(|f| u16::from(f.code))))
            }
            Some(Ok(_)) => continue,
            None | Some(Err(WsError::ConnectionClosed | WsError::AlreadyClosed)) => {
                Event::End(End::Ended)
            }
            Some(Err(e)) => Event::End(End::Failed(e.to_string())),
        };
    }
}

/// A WebSocket client of `/<db>/_blipsync` that sends whatever bytes it is given.
pub struct RawPeer {
    ws: Ws,
}

impl std::fmt::Debug for RawPeer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RawPeer").finish_non_exhaustive()
    }
}

impl RawPeer {
    /// Opens `ws://<addr>/<database>/_blipsync` asking for `BLIP_3+CBMobile_3`, with Basic
    /// credentials if given.
    pub async fn connect(
        addr: SocketAddr,
        database: &str,
        credentials: Option<(&str, &str)>,
    ) -> Result<RawPeer, String> {
        let mut request = format!("ws://{addr}/{database}/_blipsync")
            .into_client_request()
            .map_err(|e| e.to_string())?;
        let headers = request.headers_mut();
        headers.insert(
            "Sec-WebSocket-Protocol",
            HeaderValue::from_static(SUBPROTOCOL),
        );
        if let Some((user, password)) = credentials {
            let token =
                base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
            let value =
                HeaderValue::from_str(&format!("Basic {token}")).map_err(|e| e.to_string())?;
            headers.insert("Authorization", value);
        }
        let tcp = TcpStream::connect(addr).await.map_err(|e| e.to_string())?;
        let (ws, _response) = tokio_tungstenite::client_async(request, tcp)
            .await
            .map_err(|e| e.to_string())?;
        Ok(RawPeer { ws })
    }

    /// Sends one binary message and flushes it.
    pub async fn send(&mut self, data: Vec<u8>) -> Result<(), String> {
        self.ws
            .send(WsMessage::Binary(Bytes::from(data)))
            .await
            .map_err(|e| e.to_string())
    }

    /// Queues one binary message, writing to the socket only when the buffer is full (and
    /// then waiting while the server does not read).
    pub async fn feed(&mut self, data: Vec<u8>) -> Result<(), String> {
        self.ws
            .feed(WsMessage::Binary(Bytes::from(data)))
            .await
            .map_err(|e| e.to_string())
    }

    /// Writes everything queued.
    pub async fn flush(&mut self) -> Result<(), String> {
        self.ws.flush().await.map_err(|e| e.to_string())
    }

    /// Sends one text message.
    pub async fn send_text(&mut self, text: &str) -> Result<(), String> {
        self.ws
            .send(WsMessage::text(text))
            .await
            .map_err(|e| e.to_string())
    }

    /// Writes bytes straight to the TCP connection, under the WebSocket framing (for frame
    /// headers no WebSocket library would write). Flush first.
    pub async fn write_raw(&mut self, bytes: &[u8]) -> Result<(), String> {
        self.ws
            .get_mut()
            .write_all(bytes)
            .await
            .map_err(|e| e.to_string())
    }

    /// The next binary message or the end, waiting at most `wait` ([`End::Silent`] then).
    /// Pings, pongs and text are skipped.
    pub async fn next_event(&mut self, wait: Duration) -> Event {
        next_event(&mut self.ws, wait).await
    }

    /// Reads until the server closes or the connection ends, or until nothing came for
    /// `wait`.
    pub async fn outcome(&mut self, wait: Duration) -> Outcome {
        let mut frames = Vec::new();
        loop {
            match self.next_event(wait).await {
                Event::Frame(frame) => frames.push(frame),
                Event::End(end) => return Outcome { frames, end },
            }
        }
    }

    /// Splits into a sending and a receiving half, to be used from different tasks.
    pub fn split(self) -> (RawSender, RawReceiver) {
        let (sink, stream) = self.ws.split();
        (RawSender(sink), RawReceiver(stream))
    }

    /// Closes with 1000 (best effort).
    pub async fn close(mut self) {
        let _ = tokio::time::timeout(Duration::from_secs(2), self.ws.close(None)).await;
    }
}

/// The sending half of a [`RawPeer`].
pub struct RawSender(SplitSink<Ws, WsMessage>);

impl std::fmt::Debug for RawSender {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RawSender").finish_non_exhaustive()
    }
}

impl RawSender {
    /// See [`RawPeer::feed`].
    pub async fn feed(&mut self, data: Vec<u8>) -> Result<(), String> {
        self.0
            .feed(WsMessage::Binary(Bytes::from(data)))
            .await
            .map_err(|e| e.to_string())
    }

    /// See [`RawPeer::flush`].
    pub async fn flush(&mut self) -> Result<(), String> {
        self.0.flush().await.map_err(|e| e.to_string())
    }
}

/// The receiving half of a [`RawPeer`].
pub struct RawReceiver(SplitStream<Ws>);

impl std::fmt::Debug for RawReceiver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RawReceiver").finish_non_exhaustive()
    }
}

impl RawReceiver {
    /// See [`RawPeer::next_event`].
    pub async fn next_event(&mut self, wait: Duration) -> Event {
        next_event(&mut self.0, wait).await
    }
}

// ----- the BLIP peer -----

/// A peer that speaks BLIP correctly (through the protocol crate's codec) but says what
/// the test wants: requests built by hand, and answers to the server's requests chosen by
/// a callback (wrong blob bytes, wrong proofs…).
pub struct BlipPeer {
    raw: RawPeer,
    codec: blip::Connection,
}

impl std::fmt::Debug for BlipPeer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BlipPeer")
            .field("codec", &self.codec)
            .finish_non_exhaustive()
    }
}

/// What a [`BlipPeer`] answers to a request of the server: `None` leaves it unanswered.
pub type Answer<'a> = &'a mut (dyn FnMut(&Message) -> Option<Message> + Send);

impl BlipPeer {
    /// Connects like [`RawPeer::connect`].
    pub async fn connect(
        addr: SocketAddr,
        database: &str,
        credentials: Option<(&str, &str)>,
    ) -> Result<BlipPeer, String> {
        Ok(BlipPeer {
            raw: RawPeer::connect(addr, database, credentials).await?,
            codec: blip::Connection::default(),
        })
    }

    /// Sends every frame the codec has to send.
    pub async fn flush(&mut self) -> Result<(), String> {
        while let Some(frame) = self.codec.next_frame() {
            self.raw.feed(frame).await?;
        }
        self.raw.flush().await
    }

    /// Sends `request` and waits (at most `wait` between two frames) for its response,
    /// answering the server's requests meanwhile with `answer`. An error reply is returned
    /// as a message too; `Err` when the connection ends or stays silent.
    pub async fn request(
        &mut self,
        request: Message,
        wait: Duration,
        answer: Answer<'_>,
    ) -> Result<Message, String> {
        let number = self.codec.send(request).map_err(|e| e.to_string())?;
        loop {
            self.flush().await?;
            let frame = match self.raw.next_event(wait).await {
                Event::Frame(frame) => frame,
                Event::End(end) => return Err(format!("no response to #{number}: {end:?}")),
            };
            let Some(message) = self.codec.receive(&frame).map_err(|e| e.to_string())? else {
                continue;
            };
            match message.kind {
                MessageType::Request => {
                    if let Some(reply) = answer(&message) {
                        if !message.no_reply {
                            self.codec.send(reply).map_err(|e| e.to_string())?;
                        }
                    }
                }
                MessageType::Response | MessageType::Error if message.number == number => {
                    return Ok(message);
                }
                _ => {}
            }
        }
    }

    /// Closes with 1000 (best effort).
    pub async fn close(self) {
        self.raw.close().await;
    }
}

/// Answers nothing (see [`BlipPeer::request`]).
pub fn no_answers() -> impl FnMut(&Message) -> Option<Message> + Send {
    |_| None
}
