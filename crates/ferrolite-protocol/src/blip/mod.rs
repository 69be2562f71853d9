//! BLIP 3 framing, sans I/O: frames in and out of WebSocket binary messages, varints, CRC-32,
//! per-direction deflate, message multiplexing and ACK flow control.
//!
//! # Wire format
//!
//! Every BLIP frame is exactly one binary WebSocket message:
//!
//! ```text
//! uvarint(message number) | uvarint(flags) | frame data | CRC-32 (4 bytes, big-endian)
//! ```
//!
//! - Flags: bits 0–2 the [`FrameType`] (0 request, 1 response, 2 error, 4 ACK of a request,
//!   5 ACK of a response), `0x08` compressed (this frame), `0x10` urgent, `0x20` no-reply,
//!   `0x40` more frames follow. Unknown bits are ignored; frames of undefined types (3, 6, 7)
//!   are dropped.
//! - The frame data of all frames of a message, concatenated and inflated, is the encoded
//!   message `uvarint(P) | P bytes of properties "key\0value\0…" | body`.
//! - The checksum is a **running** CRC-32 per direction, starting at 0 when the connection
//!   opens, over the *uncompressed* data of every non-ACK frame, in frame order.
//! - Compressed frames share one raw-deflate stream per direction for the whole connection;
//!   each frame ends in a sync flush whose `00 00 FF FF` trailer is stripped by the sender and
//!   appended again by the receiver before inflating. The sender may free its compressor
//!   between frames ([`Connection::release_compressor`]); the stream stays valid.
//! - ACK frames are `uvarint(number) | 0x34 or 0x35 | uvarint(bytes received)`: no checksum,
//!   never compressed, never part of the CRC.
//!
//! # State machine
//!
//! A [`Connection`] holds both directions of one WebSocket:
//!
//! - **Receiving** ([`Connection::receive`]): each frame is checked and decoded in arrival
//!   order (CRC, inflate). Frames of a message are assembled per (requests | responses, number):
//!   the peer's requests must arrive numbered 1, 2, 3 …, and a response is accepted only for
//!   one of our requests that awaits it. A complete message is returned; every 50,000 bytes
//!   received of one message queue an ACK frame. Received ACKs resume our paused messages.
//!   What a peer can make us hold is bounded: a message by [`Config::max_message_size`],
//!   what one compressed frame inflates to by [`Config::max_frame_inflate`], all messages
//!   being assembled together by [`Config::max_incomplete_size`], a property block by
//!   [`MAX_PROPERTIES_SIZE`].
//! - **Sending** ([`Connection::send`], [`Connection::next_frame`]): messages wait in an
//!   outbox; each call to `next_frame` yields one frame of the message at the head (ACK frames
//!   go first), then puts the message back at the tail (round robin) unless finished. Urgent
//!   messages are inserted after the last urgent one, leaving one normal message between them;
//!   a message that has sent nothing never overtakes another that has sent nothing, so requests
//!   start in number order. A message with 128,000 unacknowledged bytes pauses until the
//!   peer's ACK comes.
//! - **Streaming** (large blobs): [`Connection::send_streaming`] queues a message whose body
//!   is appended later with [`Connection::extend_body`], in bounded memory;
//!   [`Connection::stream_response`] makes the response to one of our requests come out in
//!   parts ([`Connection::next_response_part`]) as its frames arrive, exempt from the message
//!   size limit.
//!
//! Any error from `receive` is fatal: close the WebSocket with [`BlipError::close_code`].
//!
//! ```
//! use ferrolite_protocol::blip::{Config, Connection, Message};
//!
//! let mut client = Connection::new(Config::default());
//! let mut server = Connection::new(Config::default());
//!
//! let mut request = Message::request("getCheckpoint");
//! request.properties.set("client", "cp-1");
//! let number = client.send(request)?;
//! while let Some(frame) = client.next_frame() {
//!     if let Some(received) = server.receive(&frame)? {
//!         server.send(Message::error_to(&received, "HTTP", 404, ""))?;
//!     }
//! }
//! let frame = server.next_frame().expect("a response frame");
//! let response = client.receive(&frame)?.expect("a complete response");
//! assert_eq!(response.number, number);
//! assert_eq!(response.error(), Some(("HTTP", 404)));
//! # Ok::<(), ferrolite_protocol::blip::BlipError>(())
//! ```

mod codec;
mod connection;
mod frame;
mod message;
pub mod varint;

pub use connection::{Config, Connection, ResponsePart, Stats, INCOMPLETE_MESSAGE_COST};
pub use frame::{encode_ack, flags, FrameHeader, FrameType, CHECKSUM_LEN};
pub use message::{Message, MessageType, Properties, MAX_PROPERTIES_SIZE};

/// WebSocket close code 1009, "message too big".
pub const CLOSE_MESSAGE_TOO_BIG: u16 = 1009;
/// WebSocket close code 1011, "unexpected condition": what LiteCore sends when BLIP parsing
/// fails (bad CRC, bad varint, unexpected message number, deflate error).
pub const CLOSE_UNEXPECTED_CONDITION: u16 = 1011;

/// A BLIP error. Errors from [`Connection::receive`] are protocol violations: the connection
/// can no longer be used and must be closed with [`BlipError::close_code`]. Errors from
/// [`Connection::send`] ([`BlipError::InvalidProperty`], [`BlipError::PropertiesTooLarge`],
/// [`BlipError::NotAwaitingResponse`]) only refuse that message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum BlipError {
    /// A WebSocket message with no bytes at all.
    #[error("empty BLIP frame")]
    EmptyFrame,
    /// The input ends inside a varint.
    #[error("truncated varint")]
    TruncatedVarint,
    /// A varint longer than ten bytes or larger than 64 bits.
    #[error("varint overflows 64 bits")]
    VarintOverflow,
    /// A message frame too short to hold its 4-byte checksum.
    #[error("BLIP frame #{number} is too short for its checksum")]
    FrameTooShort {
        /// The frame's message number.
        number: u64,
    },
    /// The frame's checksum differs from the running CRC-32 of the data received.
    #[error("BLIP frame checksum mismatch (frame says {expected:08x}, data gives {actual:08x})")]
    ChecksumMismatch {
        /// The checksum carried by the frame.
        expected: u32,
        /// The running CRC-32 computed over the received data.
        actual: u32,
    },
    /// Compressed frame data that cannot be inflated.
    #[error("invalid deflate data: {0}")]
    InvalidDeflate(String),
    /// The local compressor failed (never expected; the frame is then sent uncompressed).
    #[error("deflate failed: {0}")]
    Deflate(String),
    /// A request frame whose number is neither a request in progress nor the next one.
    #[error("unexpected incoming request #{number} (expected #{expected} or one in progress)")]
    UnexpectedRequest {
        /// The number in the frame.
        number: u64,
        /// The next new request number allowed.
        expected: u64,
    },
    /// A response or error frame for a number with no request of ours awaiting it.
    #[error("response #{number} answers no outstanding request")]
    UnexpectedResponse {
        /// The number in the frame.
        number: u64,
    },
    /// A property block larger than [`MAX_PROPERTIES_SIZE`].
    #[error("property block of {size} bytes exceeds {max}")]
    PropertiesTooLarge {
        /// The size of the block.
        size: u64,
        /// The limit.
        max: u64,
    },
    /// A property block length pointing past the end of the message.
    #[error("property block of {properties} bytes does not fit in the message")]
    PropertiesExceedMessage {
        /// The announced property block length.
        properties: u64,
    },
    /// A property block without its final NUL or with an odd number of strings.
    #[error("malformed properties: {0}")]
    MalformedProperties(&'static str),
    /// An incoming message larger than [`Config::max_message_size`].
    #[error("incoming message exceeds {max} bytes")]
    MessageTooLarge {
        /// The limit.
        max: u64,
    },
    /// A compressed frame inflating past [`Config::max_frame_inflate`] (a decompression bomb).
    #[error("compressed frame inflates past {max} bytes")]
    InflatedFrameTooLarge {
        /// The limit.
        max: u64,
    },
    /// The incoming messages being assembled hold more than
    /// [`Config::max_incomplete_size`] together (requests started and never finished).
    #[error("incoming messages being assembled exceed {max} bytes together")]
    IncompleteMessagesTooLarge {
        /// The limit.
        max: u64,
    },
    /// [`Connection::send`]: a property key or value contains a NUL byte.
    #[error("property {key:?} contains a NUL byte")]
    InvalidProperty {
        /// The offending key (lossy if the key itself holds the NUL).
        key: String,
    },
    /// [`Connection::send`]: a response or error for a request of the peer that was not
    /// received, was a no-reply request, or was already answered.
    #[error("no incoming request #{number} awaits a response")]
    NotAwaitingResponse {
        /// The response's number.
        number: u64,
    },
    /// [`Connection::extend_body`]: no streamed message with that number is being sent, or
    /// its body was already ended.
    #[error("no streamed message #{number} is being sent")]
    NotStreaming {
        /// The message's number.
        number: u64,
    },
    /// The connection already failed with an earlier error.
    #[error("the BLIP connection already failed")]
    Failed,
}

impl BlipError {
    /// The WebSocket close code the driver must close the connection with after this error:
    /// 1009 (message too big) for size limits, otherwise 1011 (unexpected condition), which is
    /// what LiteCore sends for any BLIP parsing failure, CRC mismatch and deflate error
    /// included. (1002 is reserved for WebSocket-level framing violations, which the WebSocket
    /// layer detects, not this codec.)
    pub fn close_code(&self) -> u16 {
        match self {
            BlipError::MessageTooLarge { .. }
            | BlipError::InflatedFrameTooLarge { .. }
            | BlipError::IncompleteMessagesTooLarge { .. } => CLOSE_MESSAGE_TOO_BIG,
            _ => CLOSE_UNEXPECTED_CONDITION,
        }
    }
}
