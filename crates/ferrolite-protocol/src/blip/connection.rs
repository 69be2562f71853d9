//! The BLIP connection state machine: assembly of incoming frames, the outbox and its
//! multiplexing, ACK flow control.

use std::collections::{HashMap, HashSet, VecDeque};

use bytes::Bytes;

use super::codec::{deflate_bound, Decoder, Encoder, InflateLimits};
use super::frame::{encode_ack, flags, FrameHeader, FrameType, CHECKSUM_LEN};
use super::message::MAX_PROPERTIES_SIZE;
use super::{varint, BlipError, Message, MessageType, Properties};

/// The smallest frame size a [`Config`] may ask for: room for the largest header, the
/// checksum and some data.
const MIN_FRAME_SIZE: usize = 64;

/// What each incoming message still being assembled counts against
/// [`Config::max_incomplete_size`] on top of its data: about what its bookkeeping costs, so
/// that many tiny incomplete messages are bounded too.
pub const INCOMPLETE_MESSAGE_COST: usize = 256;

/// Limits and tuning of a [`Connection`]. Build one from [`Config::default`] and change fields.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Config {
    /// Largest frame (WebSocket message) sent, header and checksum included. Default 16,384,
    /// LiteCore's big frame; Sync Gateway refuses WebSocket messages over 32,768 bytes.
    /// Values below 64 are treated as 64.
    pub max_frame_size: usize,
    /// Frame size used for a normal message while an urgent one waits behind it, so the urgent
    /// one goes out sooner. Default 4,096, LiteCore's normal frame. Capped at `max_frame_size`.
    pub small_frame_size: usize,
    /// Deflate level (1–9) for messages sent with [`Message::compressed`]. 0 sends every
    /// message uncompressed. Default 6, like LiteCore and Sync Gateway.
    pub compression_level: u32,
    /// Largest incoming message (property length prefix, properties and body, after
    /// inflation); a bigger one is refused with [`BlipError::MessageTooLarge`].
    /// Default 32 MiB. Responses delivered in parts ([`Connection::stream_response`]) are
    /// exempt.
    pub max_message_size: usize,
    /// Most bytes one compressed frame may inflate to; more is refused with
    /// [`BlipError::InflatedFrameTooLarge`] before it is allocated (decompression bombs).
    /// Default 8 MiB (a real 16 KiB frame inflates to under 32 KiB).
    pub max_frame_inflate: usize,
    /// Most bytes the incoming messages still being assembled may hold together (a peer
    /// sends several interleaved), each counting its data received so far plus
    /// [`INCOMPLETE_MESSAGE_COST`]; more is refused with
    /// [`BlipError::IncompleteMessagesTooLarge`]. Without it a peer could start any number of
    /// requests and never finish them. Default 64 MiB (two messages of the largest size).
    pub max_incomplete_size: usize,
    /// Outgoing flow control: a message with this many bytes sent and not yet acknowledged
    /// by the peer pauses until an ACK comes. Default 128,000 (LiteCore `kMaxUnackedBytes`).
    pub max_unacked_bytes: u64,
    /// Incoming flow control: an ACK is sent each time this many bytes of one message arrived
    /// since the last ACK of it. Default 50,000 (LiteCore `kIncomingAckThreshold`).
    pub ack_threshold: u64,
}

impl Default for Config {
    fn default() -> Config {
        Config {
            max_frame_size: 16_384,
            small_frame_size: 4_096,
            compression_level: 6,
            max_message_size: 32 << 20,
            max_frame_inflate: 8 << 20,
            max_incomplete_size: 64 << 20,
            max_unacked_bytes: 128_000,
            ack_threshold: 50_000,
        }
    }
}

/// Counters of a [`Connection`], for logs and tests.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Stats {
    /// Frames yielded by [`Connection::next_frame`], ACKs included.
    pub frames_sent: u64,
    /// Bytes of those frames.
    pub bytes_sent: u64,
    /// Messages whose last frame was yielded.
    pub messages_sent: u64,
    /// ACK frames yielded.
    pub acks_sent: u64,
    /// Frames passed to [`Connection::receive`] that were accepted, ACKs included.
    pub frames_received: u64,
    /// Bytes of those frames.
    pub bytes_received: u64,
    /// Complete messages returned by [`Connection::receive`].
    pub messages_received: u64,
    /// ACK frames received.
    pub acks_received: u64,
    /// Frames of undefined types (3, 6, 7) received and ignored.
    pub unknown_frames_received: u64,
    /// Times an outgoing message paused for lack of ACKs.
    pub flow_control_pauses: u64,
}

/// A piece of a response delivered in parts (see [`Connection::stream_response`]).
///
/// The first part of a response carries its properties; every part carries the body bytes
/// that arrived since the previous one (possibly none); the last part has `last` set.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct ResponsePart {
    /// The number of our request this response answers.
    pub number: u64,
    /// The response's properties, in its first part only.
    pub properties: Option<Properties>,
    /// Body bytes, in order.
    pub body: Bytes,
    /// Whether this completes the response.
    pub last: bool,
}

/// An outgoing message in the outbox: its encoded form and progress.
struct Outgoing {
    number: u64,
    /// Type bits, urgent, no-reply, compressed: every frame's flags but more-coming.
    flags: u8,
    /// The property length prefix and the properties.
    head: Vec<u8>,
    body: Bytes,
    /// Bytes of `head` + `body` already sent.
    pos: usize,
    /// Frame data bytes sent (after the flags, checksum included): what the peer's ACKs count.
    bytes_sent: u64,
    /// Of those, bytes not acknowledged yet.
    unacked: u64,
    /// More body will be appended ([`Connection::extend_body`]): a streamed message.
    open: bool,
}

impl Outgoing {
    fn total(&self) -> usize {
        self.head.len() + self.body.len()
    }

    fn remaining(&self) -> usize {
        self.total() - self.pos
    }

    fn urgent(&self) -> bool {
        self.flags & flags::URGENT != 0
    }

    fn is_new(&self) -> bool {
        self.bytes_sent == 0
    }

    /// Whether this is a response or error (which live in their own number space).
    fn is_response(&self) -> bool {
        FrameType::from_flags(self.flags) != FrameType::Request
    }

    /// Whether this is the message `kind` #`number`.
    fn is(&self, kind: MessageType, number: u64) -> bool {
        self.number == number && self.is_response() == (kind != MessageType::Request)
    }

    /// Appends body bytes to a streamed message, dropping the part of the body already sent
    /// (so a long stream never keeps more than its unsent bytes).
    fn append(&mut self, data: Bytes) {
        let head_len = self.head.len();
        if self.pos <= head_len {
            if self.body.is_empty() {
                self.body = data;
            } else if !data.is_empty() {
                let mut joined = Vec::with_capacity(self.body.len() + data.len());
                joined.extend_from_slice(&self.body);
                joined.extend_from_slice(&data);
                self.body = Bytes::from(joined);
            }
            return;
        }
        let sent = self.pos - head_len;
        let tail = self.body.slice(sent..);
        self.body = if tail.is_empty() {
            data
        } else {
            let mut joined = Vec::with_capacity(tail.len() + data.len());
            joined.extend_from_slice(&tail);
            joined.extend_from_slice(&data);
            Bytes::from(joined)
        };
        self.pos = head_len;
    }

    /// The unsent bytes, as up to two slices.
    fn unsent(&self) -> [&[u8]; 2] {
        let head_len = self.head.len();
        if self.pos >= head_len {
            [&[], &self.body[self.pos - head_len..]]
        } else {
            [&self.head[self.pos..], &self.body[..]]
        }
    }
}

/// A queued ACK frame.
struct Ack {
    number: u64,
    on_response: bool,
    bytes: u64,
}

/// An incoming message being assembled.
struct Incoming {
    kind: MessageType,
    /// The first frame's flags, without more-coming.
    flags: u8,
    /// The encoded message received so far, uncompressed.
    data: Vec<u8>,
    /// Frame data bytes received (checksums included), for ACKs.
    received: u64,
    /// Bytes received since the last ACK.
    unacked: u64,
    /// Whether the property length prefix was read and checked.
    checked_properties_length: bool,
    /// A response delivered in parts ([`Connection::stream_response`]): `data` holds only
    /// what was not handed out yet.
    streamed: bool,
    /// For a streamed response: the properties were decoded and handed out.
    properties_done: bool,
}

impl Incoming {
    fn new(kind: MessageType, flags: u8) -> Incoming {
        Incoming {
            kind,
            flags: flags & !flags::MORE_COMING,
            data: Vec::new(),
            received: 0,
            unacked: 0,
            checked_properties_length: false,
            streamed: false,
            properties_done: false,
        }
    }

    /// For a streamed response: decodes the properties once they are complete and takes
    /// them out of `data`.
    fn take_properties(&mut self) -> Result<Option<Properties>, BlipError> {
        if self.properties_done {
            return Ok(None);
        }
        let (len, prefix_len) = match varint::read(&self.data) {
            Ok(read) => read,
            Err(BlipError::TruncatedVarint) => return Ok(None),
            Err(err) => return Err(err),
        };
        let end = usize::try_from(len)
            .ok()
            .and_then(|len| len.checked_add(prefix_len))
            .ok_or(BlipError::PropertiesExceedMessage { properties: len })?;
        if end > self.data.len() {
            return Ok(None);
        }
        let properties = Properties::decode(&self.data[prefix_len..end])?;
        self.data.drain(..end);
        self.properties_done = true;
        Ok(Some(properties))
    }

    /// Checks the property length as soon as its varint is complete.
    fn check_properties_length(&mut self) -> Result<(), BlipError> {
        if self.checked_properties_length {
            return Ok(());
        }
        match varint::read(&self.data) {
            Ok((len, _)) => {
                if len > MAX_PROPERTIES_SIZE as u64 {
                    return Err(BlipError::PropertiesTooLarge {
                        size: len,
                        max: MAX_PROPERTIES_SIZE as u64,
                    });
                }
                self.checked_properties_length = true;
                Ok(())
            }
            // More data may complete it; `finish` refuses a message that ends inside it.
            Err(BlipError::TruncatedVarint) => Ok(()),
            Err(err) => Err(err),
        }
    }

    /// The complete message.
    fn finish(self, number: u64) -> Result<Message, BlipError> {
        let (properties_len, prefix_len) = varint::read(&self.data)?;
        let end = usize::try_from(properties_len)
            .ok()
            .and_then(|len| len.checked_add(prefix_len))
            .filter(|&end| end <= self.data.len())
            .ok_or(BlipError::PropertiesExceedMessage {
                properties: properties_len,
            })?;
        let properties = Properties::decode(&self.data[prefix_len..end])?;
        let body = Bytes::from(self.data).slice(end..);
        Ok(Message {
            kind: self.kind,
            number,
            urgent: self.flags & flags::URGENT != 0,
            compressed: self.flags & flags::COMPRESSED != 0,
            no_reply: self.kind == MessageType::Request && self.flags & flags::NO_REPLY != 0,
            properties,
            body,
        })
    }
}

/// Both directions of one BLIP connection (one WebSocket), without I/O.
///
/// Feed every binary WebSocket message received to [`receive`](Connection::receive); queue
/// messages with [`send`](Connection::send); after either, send every frame that
/// [`next_frame`](Connection::next_frame) yields, in order, each as one binary WebSocket
/// message.
pub struct Connection {
    config: Config,
    encoder: Encoder,
    decoder: Decoder,
    /// Compression disabled after a local deflate failure (never expected).
    deflate_broken: bool,
    /// The number of the last request we queued.
    last_request_sent: u64,
    /// The number of the last request of the peer that began arriving.
    last_request_received: u64,
    /// Our requests whose response has not completely arrived.
    awaiting_response: HashSet<u64>,
    /// The peer's requests that we must still answer.
    unanswered: HashSet<u64>,
    incoming_requests: HashMap<u64, Incoming>,
    incoming_responses: HashMap<u64, Incoming>,
    /// What the incoming messages being assembled count against
    /// [`Config::max_incomplete_size`].
    incomplete_size: usize,
    acks: VecDeque<Ack>,
    outbox: VecDeque<Outgoing>,
    /// Messages paused until the peer acknowledges enough of them.
    icebox: Vec<Outgoing>,
    /// Streamed messages whose body sent so far is all gone out: they wait for
    /// [`Connection::extend_body`].
    starved: Vec<Outgoing>,
    /// Our requests whose response is delivered in parts.
    streamed: HashSet<u64>,
    /// Parts of streamed responses not yet taken by [`Connection::next_response_part`].
    parts: VecDeque<ResponsePart>,
    stats: Stats,
    failed: bool,
}

impl std::fmt::Debug for Connection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Connection")
            .field("last_request_sent", &self.last_request_sent)
            .field("last_request_received", &self.last_request_received)
            .field("awaiting_response", &self.awaiting_response.len())
            .field("unanswered", &self.unanswered.len())
            .field("outbox", &self.outbox.len())
            .field("paused", &self.icebox.len())
            .field("starved", &self.starved.len())
            .field("response_parts", &self.parts.len())
            .field("acks", &self.acks.len())
            .field("failed", &self.failed)
            .finish()
    }
}

impl Default for Connection {
    fn default() -> Connection {
        Connection::new(Config::default())
    }
}

impl Connection {
    /// A connection that has exchanged nothing yet: CRCs at 0, fresh deflate streams, the
    /// first request to send and to receive both #1.
    pub fn new(config: Config) -> Connection {
        let mut config = config;
        config.max_frame_size = config.max_frame_size.max(MIN_FRAME_SIZE);
        config.small_frame_size = config
            .small_frame_size
            .clamp(MIN_FRAME_SIZE, config.max_frame_size);
        Connection {
            encoder: Encoder::new(config.compression_level),
            decoder: Decoder::new(),
            config,
            deflate_broken: false,
            last_request_sent: 0,
            last_request_received: 0,
            awaiting_response: HashSet::new(),
            unanswered: HashSet::new(),
            incoming_requests: HashMap::new(),
            incoming_responses: HashMap::new(),
            incomplete_size: 0,
            acks: VecDeque::new(),
            outbox: VecDeque::new(),
            icebox: Vec::new(),
            starved: Vec::new(),
            streamed: HashSet::new(),
            parts: VecDeque::new(),
            stats: Stats::default(),
            failed: false,
        }
    }

    /// The configuration in force (frame sizes clamped to their allowed range).
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// Counters of what went through this connection.
    pub fn stats(&self) -> &Stats {
        &self.stats
    }

    /// Whether a [`receive`](Connection::receive) failed: the connection must be closed.
    pub fn has_failed(&self) -> bool {
        self.failed
    }

    // ----- sending -----

    /// Queues `message` and returns its number.
    ///
    /// A request gets the next request number (1, 2, 3 …; its `number` field is ignored) and,
    /// unless it is no-reply, is remembered until its response arrives
    /// ([`is_awaiting_response`](Connection::is_awaiting_response)). A response or error keeps
    /// its `number`: that of the peer's request it answers (see [`Message::response_to`]).
    /// `compressed` is honoured unless [`Config::compression_level`] is 0; `no_reply` only
    /// applies to requests.
    ///
    /// # Errors
    ///
    /// [`BlipError::InvalidProperty`] or [`BlipError::PropertiesTooLarge`] when the properties
    /// cannot be encoded; [`BlipError::NotAwaitingResponse`] for a response to a request that
    /// was not received, is no-reply, or was already answered. Nothing is queued then.
    pub fn send(&mut self, message: Message) -> Result<u64, BlipError> {
        self.queue(message, false)
    }

    /// Queues `message` like [`send`](Connection::send), as a **streamed** message: its body
    /// is what `message.body` holds (often nothing) plus whatever
    /// [`extend_body`](Connection::extend_body) appends later, until a call with `last`.
    /// Frames go out as body bytes become available; the message waits (without blocking
    /// others) while everything appended so far was sent. Only the unsent part of the body
    /// is kept, so a large body (a blob) goes through in bounded memory when the caller
    /// appends a chunk each time [`unsent_len`](Connection::unsent_len) runs low.
    ///
    /// # Errors
    ///
    /// As [`send`](Connection::send).
    pub fn send_streaming(&mut self, message: Message) -> Result<u64, BlipError> {
        self.queue(message, true)
    }

    /// Appends `data` to the body of the streamed message `kind` #`number` (see
    /// [`send_streaming`](Connection::send_streaming)); `last` ends its body. For a response
    /// or error, `number` is the request it answers.
    ///
    /// # Errors
    ///
    /// [`BlipError::NotStreaming`] when no such message is being sent or its body was already
    /// ended. Nothing changes then.
    pub fn extend_body(
        &mut self,
        kind: MessageType,
        number: u64,
        data: Bytes,
        last: bool,
    ) -> Result<(), BlipError> {
        let not_streaming = BlipError::NotStreaming { number };
        if let Some(index) = self.starved.iter().position(|m| m.is(kind, number)) {
            let mut message = self.starved.swap_remove(index);
            message.append(data);
            message.open = !last;
            if message.remaining() == 0 && message.open {
                self.starved.push(message);
            } else if message.unacked >= self.config.max_unacked_bytes {
                self.icebox.push(message);
            } else {
                self.requeue(message);
            }
            return Ok(());
        }
        let message = self
            .outbox
            .iter_mut()
            .chain(self.icebox.iter_mut())
            .find(|m| m.is(kind, number))
            .filter(|m| m.open)
            .ok_or(not_streaming)?;
        message.append(data);
        message.open = !last;
        Ok(())
    }

    /// How many bytes of the message `kind` #`number` are queued and not sent yet (its
    /// properties included until they are sent), or `None` when no such message is being
    /// sent (it was completely sent, or never queued). A streamed message's producer
    /// appends its next chunk when this runs low.
    pub fn unsent_len(&self, kind: MessageType, number: u64) -> Option<usize> {
        self.outbox
            .iter()
            .chain(&self.icebox)
            .chain(&self.starved)
            .find(|m| m.is(kind, number))
            .map(Outgoing::remaining)
    }

    fn queue(&mut self, message: Message, open: bool) -> Result<u64, BlipError> {
        let Message {
            kind,
            number,
            urgent,
            compressed,
            no_reply,
            properties,
            body,
        } = message;
        let mut head = Vec::new();
        properties.encode_prefixed(&mut head)?;
        let number = match kind {
            MessageType::Request => {
                self.last_request_sent += 1;
                if !no_reply {
                    self.awaiting_response.insert(self.last_request_sent);
                }
                self.last_request_sent
            }
            MessageType::Response | MessageType::Error => {
                if !self.unanswered.remove(&number) {
                    return Err(BlipError::NotAwaitingResponse { number });
                }
                number
            }
        };
        let mut frame_flags = FrameType::of(kind).bits();
        if urgent {
            frame_flags |= flags::URGENT;
        }
        if no_reply && kind == MessageType::Request {
            frame_flags |= flags::NO_REPLY;
        }
        if compressed && self.config.compression_level > 0 {
            frame_flags |= flags::COMPRESSED;
        }
        self.requeue(Outgoing {
            number,
            flags: frame_flags,
            head,
            body,
            pos: 0,
            bytes_sent: 0,
            unacked: 0,
            open,
        });
        Ok(number)
    }

    /// Whether [`next_frame`](Connection::next_frame) has something to yield now (messages
    /// paused by flow control do not count).
    pub fn wants_to_send(&self) -> bool {
        !self.acks.is_empty() || !self.outbox.is_empty()
    }

    /// Whether the sending direction holds a compressor (a few hundred KiB, allocated by the
    /// first compressed frame and kept for the frames after it).
    pub fn holds_compressor(&self) -> bool {
        self.encoder.holds_compressor()
    }

    /// Frees the sending direction's compressor, for a connection that has gone quiet; the
    /// next compressed frame allocates a new one. Compressed frames stay readable by the
    /// peer's inflater (each ends on a sync-flushed block boundary, and a new compressor never
    /// refers back to earlier data), as with WebSocket `permessage-deflate` without context
    /// takeover. Compression of later messages then starts without the earlier ones as
    /// history.
    pub fn release_compressor(&mut self) {
        self.encoder.release_compressor();
    }

    /// Number of outgoing messages paused until the peer's ACK arrives.
    pub fn paused_messages(&self) -> usize {
        self.icebox.len()
    }

    /// Responses and errors queued and not completely sent (paused and streamed ones
    /// included): how many, and how many of their bytes (properties and body) are still to
    /// be sent. A driver stops taking the peer's requests while these pile up, so a peer
    /// that sends requests without reading the replies cannot make it hold them all.
    pub fn unsent_responses(&self) -> (usize, usize) {
        self.outbox
            .iter()
            .chain(&self.icebox)
            .chain(&self.starved)
            .filter(|m| m.is_response())
            .fold((0, 0), |(count, bytes), m| {
                (count + 1, bytes + m.remaining())
            })
    }

    /// The next frame to send, as the payload of one binary WebSocket message, or `None` when
    /// nothing can be sent now. ACK frames come first; then one frame of the message at the
    /// head of the outbox, which goes back in line if it has more.
    pub fn next_frame(&mut self) -> Option<Vec<u8>> {
        if self.failed {
            return None;
        }
        if let Some(ack) = self.acks.pop_front() {
            let frame = encode_ack(ack.number, ack.on_response, ack.bytes);
            self.stats.acks_sent += 1;
            self.count_sent(&frame);
            return Some(frame);
        }
        let mut message = self.outbox.pop_front()?;
        let max_size = match self.outbox.front() {
            Some(next) if !message.urgent() && next.urgent() => self.config.small_frame_size,
            _ => self.config.max_frame_size,
        };
        let frame = self.write_frame(&mut message, max_size);
        self.count_sent(&frame);
        if message.remaining() > 0 {
            if message.unacked >= self.config.max_unacked_bytes {
                self.stats.flow_control_pauses += 1;
                self.icebox.push(message);
            } else {
                self.requeue(message);
            }
        } else if message.open {
            // A streamed message waiting for more body.
            self.starved.push(message);
        } else {
            self.stats.messages_sent += 1;
        }
        Some(frame)
    }

    fn count_sent(&mut self, frame: &[u8]) {
        self.stats.frames_sent += 1;
        self.stats.bytes_sent += frame.len() as u64;
    }

    /// Encodes the next frame of `message`, at most `max_size` bytes long.
    fn write_frame(&mut self, message: &mut Outgoing, max_size: usize) -> Vec<u8> {
        let mut header = [0u8; varint::MAX_LEN];
        let number_len = varint::encode(message.number, &mut header);
        let header_len = number_len + 1;
        let room = max_size - header_len - CHECKSUM_LEN;
        let remaining = message.remaining();
        let mut frame_flags = message.flags;
        let mut frame = Vec::new();
        let mut consumed = 0;
        if frame_flags & flags::COMPRESSED != 0 && !self.deflate_broken && remaining > 0 {
            let room = room.min(deflate_bound(remaining));
            frame.reserve_exact(header_len + room + CHECKSUM_LEN);
            frame.extend_from_slice(&header[..number_len]);
            frame.push(0);
            match self
                .encoder
                .write_compressed(message.unsent(), room, &mut frame)
            {
                Ok(n) if n > 0 => consumed = n,
                // Never expected: send this and every later frame uncompressed (the deflate
                // stream can no longer be trusted), which BLIP allows frame by frame.
                _ => {
                    self.deflate_broken = true;
                    frame.truncate(header_len);
                }
            }
        }
        if consumed == 0 {
            frame_flags &= !flags::COMPRESSED;
            let n = remaining.min(room);
            let [a, b] = message.unsent();
            let a = &a[..a.len().min(n)];
            let b = &b[..n - a.len()];
            if frame.is_empty() {
                frame.reserve_exact(header_len + n + CHECKSUM_LEN);
                frame.extend_from_slice(&header[..number_len]);
                frame.push(0);
            }
            self.encoder.write_raw([a, b], &mut frame);
            consumed = n;
        }
        message.pos += consumed;
        if message.remaining() > 0 || message.open {
            frame_flags |= flags::MORE_COMING;
        }
        frame[number_len] = frame_flags;
        frame.extend_from_slice(&self.encoder.checksum().to_be_bytes());
        let data_len = (frame.len() - header_len) as u64;
        message.bytes_sent += data_len;
        message.unacked += data_len;
        frame
    }

    /// Puts `message` in the outbox, LiteCore's way: normal messages at the tail; urgent ones
    /// after the last urgent message, leaving one normal message between them when possible,
    /// but never ahead of a message that has sent nothing when `message` has sent nothing.
    fn requeue(&mut self, message: Outgoing) {
        let mut i = self.outbox.len();
        if message.urgent() && self.outbox.len() > 1 {
            let is_new = message.is_new();
            loop {
                i -= 1;
                let queued = &self.outbox[i];
                if queued.urgent() {
                    if i + 1 != self.outbox.len() {
                        i += 1;
                    }
                    break;
                } else if is_new && queued.is_new() {
                    break;
                }
                if i == 0 {
                    break;
                }
            }
            i += 1;
        }
        self.outbox.insert(i, message);
    }

    /// Applies a received ACK to our outgoing message, resuming it if it was paused.
    fn receive_ack(&mut self, number: u64, on_response: bool, bytes: u64) {
        let matches = |m: &Outgoing| m.number == number && m.is_response() == on_response;
        let update = |m: &mut Outgoing| {
            if bytes <= m.bytes_sent {
                m.unacked = m.unacked.min(m.bytes_sent - bytes);
            }
        };
        if let Some(message) = self
            .outbox
            .iter_mut()
            .chain(self.starved.iter_mut())
            .find(|m| matches(m))
        {
            update(message);
        } else if let Some(index) = self.icebox.iter().position(matches) {
            let message = &mut self.icebox[index];
            update(message);
            if message.unacked < self.config.max_unacked_bytes {
                let message = self.icebox.swap_remove(index);
                self.requeue(message);
            }
        }
        // ACKs of finished or unknown messages are ignored.
    }

    // ----- receiving -----

    /// Whether our request `number` still awaits its (complete) response.
    pub fn is_awaiting_response(&self, number: u64) -> bool {
        self.awaiting_response.contains(&number)
    }

    /// Numbers of our requests still awaiting their response, in ascending order.
    pub fn awaiting_responses(&self) -> Vec<u64> {
        let mut numbers: Vec<u64> = self.awaiting_response.iter().copied().collect();
        numbers.sort_unstable();
        numbers
    }

    /// Whether the peer's request `number` was received and still needs our response.
    pub fn is_unanswered(&self, number: u64) -> bool {
        self.unanswered.contains(&number)
    }

    /// Processes one binary WebSocket message from the peer: a BLIP frame.
    ///
    /// Returns the message this frame completes, if any: a request of the peer, or the
    /// response or error answering one of our requests (its `number` is that request's).
    /// ACKs the peer sent are applied internally; ACKs we owe are queued: call
    /// [`next_frame`](Connection::next_frame) afterwards.
    ///
    /// # Errors
    ///
    /// Any protocol violation: malformed frame, checksum mismatch, bad deflate data, request
    /// out of sequence, response to no request of ours, size limits. The connection is then
    /// unusable (later calls return [`BlipError::Failed`]); close the WebSocket with
    /// [`BlipError::close_code`].
    pub fn receive(&mut self, frame: &[u8]) -> Result<Option<Message>, BlipError> {
        if self.failed {
            return Err(BlipError::Failed);
        }
        let result = self.receive_frame(frame);
        match &result {
            Ok(_) => {
                self.stats.frames_received += 1;
                self.stats.bytes_received += frame.len() as u64;
            }
            Err(_) => self.failed = true,
        }
        result
    }

    fn receive_frame(&mut self, frame: &[u8]) -> Result<Option<Message>, BlipError> {
        let header = FrameHeader::parse(frame)?;
        let payload = &frame[header.len..];
        let number = header.number;
        let kind = match header.frame_type() {
            FrameType::AckRequest | FrameType::AckResponse => {
                let (bytes, _) = varint::read(payload)?;
                self.stats.acks_received += 1;
                let on_response = header.frame_type() == FrameType::AckResponse;
                self.receive_ack(number, on_response, bytes);
                return Ok(None);
            }
            FrameType::Unknown(_) => {
                self.stats.unknown_frames_received += 1;
                return Ok(None);
            }
            FrameType::Request => MessageType::Request,
            FrameType::Response => MessageType::Response,
            FrameType::Error => MessageType::Error,
        };
        let Some(data_len) = payload.len().checked_sub(CHECKSUM_LEN) else {
            return Err(BlipError::FrameTooShort { number });
        };
        let (data, checksum) = payload.split_at(data_len);
        let checksum = u32::from_be_bytes([checksum[0], checksum[1], checksum[2], checksum[3]]);

        let mut incoming = if kind == MessageType::Request {
            match self.incoming_requests.remove(&number) {
                Some(incoming) => self.uncount(incoming),
                None if number == self.last_request_received.wrapping_add(1) => {
                    self.last_request_received = number;
                    Incoming::new(kind, header.flags)
                }
                None => {
                    return Err(BlipError::UnexpectedRequest {
                        number,
                        expected: self.last_request_received.wrapping_add(1),
                    })
                }
            }
        } else {
            match self.incoming_responses.remove(&number) {
                Some(incoming) => self.uncount(incoming),
                None if self.awaiting_response.contains(&number) => {
                    let mut incoming = Incoming::new(kind, header.flags);
                    // Only a successful response streams; an error is assembled whole.
                    incoming.streamed =
                        kind == MessageType::Response && self.streamed.contains(&number);
                    incoming
                }
                None => return Err(BlipError::UnexpectedResponse { number }),
            }
        };

        // Flow control first, as LiteCore does: count the frame's data and checksum.
        incoming.received += payload.len() as u64;
        incoming.unacked += payload.len() as u64;
        if incoming.unacked >= self.config.ack_threshold {
            incoming.unacked = 0;
            self.queue_ack(number, kind != MessageType::Request, incoming.received);
        }

        // A streamed response holds at most its properties and one frame's data at a time,
        // so only the per-frame limit applies to it.
        let max_size = if incoming.streamed {
            usize::MAX / 2
        } else {
            self.config.max_message_size
        };
        if header.has(flags::COMPRESSED) {
            let limits = InflateLimits {
                frame: self.config.max_frame_inflate,
                total: max_size,
            };
            self.decoder
                .read_compressed(data, &mut incoming.data, limits)?;
        } else {
            if incoming.data.len() + data.len() > max_size {
                return Err(BlipError::MessageTooLarge {
                    max: self.config.max_message_size as u64,
                });
            }
            self.decoder.read_raw(data, &mut incoming.data);
        }
        self.decoder.verify(checksum)?;
        incoming.check_properties_length()?;

        if incoming.streamed {
            return self.stream_part(number, incoming, header.has(flags::MORE_COMING));
        }
        if header.has(flags::MORE_COMING) {
            self.count_incomplete(&incoming)?;
            if kind == MessageType::Request {
                self.incoming_requests.insert(number, incoming);
            } else {
                self.incoming_responses.insert(number, incoming);
            }
            return Ok(None);
        }
        let message = incoming.finish(number)?;
        if message.kind == MessageType::Request {
            if !message.no_reply {
                self.unanswered.insert(number);
            }
        } else {
            self.awaiting_response.remove(&number);
            self.streamed.remove(&number);
        }
        self.stats.messages_received += 1;
        Ok(Some(message))
    }

    /// Hands out what a frame of a streamed response brought.
    fn stream_part(
        &mut self,
        number: u64,
        mut incoming: Incoming,
        more_coming: bool,
    ) -> Result<Option<Message>, BlipError> {
        let properties = incoming.take_properties()?;
        if !incoming.properties_done && !more_coming {
            let (properties, _) = varint::read(&incoming.data)?;
            return Err(BlipError::PropertiesExceedMessage { properties });
        }
        if incoming.properties_done {
            let body = Bytes::from(std::mem::take(&mut incoming.data));
            if properties.is_some() || !body.is_empty() || !more_coming {
                self.parts.push_back(ResponsePart {
                    number,
                    properties,
                    body,
                    last: !more_coming,
                });
            }
        }
        if more_coming {
            self.count_incomplete(&incoming)?;
            self.incoming_responses.insert(number, incoming);
        } else {
            self.awaiting_response.remove(&number);
            self.streamed.remove(&number);
            self.stats.messages_received += 1;
        }
        Ok(None)
    }

    /// Asks for the response to our request `number` to be delivered in parts, as its
    /// frames arrive, through [`next_response_part`](Connection::next_response_part) instead
    /// of whole from [`receive`](Connection::receive): what a large `getAttachment` reply
    /// needs to be written to disk without being held in memory. Such a response is exempt
    /// from [`Config::max_message_size`] (each frame is still limited by
    /// [`Config::max_frame_inflate`]); the caller bounds what it keeps. An **error** response
    /// is still returned whole by `receive`.
    ///
    /// Call it right after [`send`](Connection::send) returned `number`, before feeding more
    /// frames. Returns `false` (and does nothing) when request `number` awaits no response
    /// or its response already began arriving.
    pub fn stream_response(&mut self, number: u64) -> bool {
        if !self.awaiting_response.contains(&number)
            || self.incoming_responses.contains_key(&number)
        {
            return false;
        }
        self.streamed.insert(number);
        true
    }

    /// The next piece of a streamed response (see
    /// [`stream_response`](Connection::stream_response)), in arrival order. After every
    /// [`receive`](Connection::receive), take them all.
    pub fn next_response_part(&mut self) -> Option<ResponsePart> {
        self.parts.pop_front()
    }

    /// Counts a message that stays incomplete against [`Config::max_incomplete_size`].
    fn count_incomplete(&mut self, incoming: &Incoming) -> Result<(), BlipError> {
        self.incomplete_size = self
            .incomplete_size
            .saturating_add(incoming.data.len() + INCOMPLETE_MESSAGE_COST);
        if self.incomplete_size > self.config.max_incomplete_size {
            return Err(BlipError::IncompleteMessagesTooLarge {
                max: self.config.max_incomplete_size as u64,
            });
        }
        Ok(())
    }

    /// Takes a message taken out of the incomplete ones off the count.
    fn uncount(&mut self, incoming: Incoming) -> Incoming {
        self.incomplete_size = self
            .incomplete_size
            .saturating_sub(incoming.data.len() + INCOMPLETE_MESSAGE_COST);
        incoming
    }

    /// Queues an ACK frame, replacing a queued one for the same message.
    fn queue_ack(&mut self, number: u64, on_response: bool, bytes: u64) {
        if let Some(ack) = self
            .acks
            .iter_mut()
            .find(|a| a.number == number && a.on_response == on_response)
        {
            ack.bytes = bytes;
        } else {
            self.acks.push_back(Ack {
                number,
                on_response,
                bytes,
            });
        }
    }
}
