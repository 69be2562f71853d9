//! The frame header: message number, flags, and the frame types.

use super::{varint, BlipError, MessageType};

/// Frame flag bits (the low three bits are the [`FrameType`]).
pub mod flags {
    /// Mask of the 3-bit frame type.
    pub const TYPE_MASK: u8 = 0x07;
    /// This frame's data is deflated.
    pub const COMPRESSED: u8 = 0x08;
    /// Scheduled ahead of normal messages; a response copies it from its request.
    pub const URGENT: u8 = 0x10;
    /// A request that must not be answered.
    pub const NO_REPLY: u8 = 0x20;
    /// More frames of this message follow.
    pub const MORE_COMING: u8 = 0x40;
}

/// The length of the checksum at the end of every non-ACK frame.
pub const CHECKSUM_LEN: usize = 4;

/// The type field of a frame's flags.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FrameType {
    /// 0: a request (`MSG`, `REQ`).
    Request,
    /// 1: a success response (`RPY`, `RES`).
    Response,
    /// 2: an error response (`ERR`).
    Error,
    /// 4: flow-control acknowledgement of a request being received (`ACKMSG`, `ACKREQ`).
    AckRequest,
    /// 5: flow-control acknowledgement of a response being received (`ACKRPY`, `AKRES`).
    AckResponse,
    /// 3, 6 or 7: undefined; such frames are ignored.
    Unknown(u8),
}

impl FrameType {
    /// The type encoded in the low three bits of `flags`.
    pub fn from_flags(flags: u8) -> FrameType {
        match flags & flags::TYPE_MASK {
            0 => FrameType::Request,
            1 => FrameType::Response,
            2 => FrameType::Error,
            4 => FrameType::AckRequest,
            5 => FrameType::AckResponse,
            other => FrameType::Unknown(other),
        }
    }

    /// The 3-bit value of this type.
    pub fn bits(self) -> u8 {
        match self {
            FrameType::Request => 0,
            FrameType::Response => 1,
            FrameType::Error => 2,
            FrameType::AckRequest => 4,
            FrameType::AckResponse => 5,
            FrameType::Unknown(bits) => bits & flags::TYPE_MASK,
        }
    }

    /// The frame type that carries messages of `kind`.
    pub fn of(kind: MessageType) -> FrameType {
        match kind {
            MessageType::Request => FrameType::Request,
            MessageType::Response => FrameType::Response,
            MessageType::Error => FrameType::Error,
        }
    }

    /// The message type carried by frames of this type (`None` for ACKs and unknown types).
    pub fn message_type(self) -> Option<MessageType> {
        match self {
            FrameType::Request => Some(MessageType::Request),
            FrameType::Response => Some(MessageType::Response),
            FrameType::Error => Some(MessageType::Error),
            _ => None,
        }
    }

    /// Whether this is an ACK frame (no checksum, not compressed, not part of the CRC).
    pub fn is_ack(self) -> bool {
        matches!(self, FrameType::AckRequest | FrameType::AckResponse)
    }
}

/// The decoded header of one frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FrameHeader {
    /// The message number.
    pub number: u64,
    /// The flags byte (bits above `0x7f` of the flags varint are dropped: none is defined).
    pub flags: u8,
    /// The number of header bytes (message-number varint plus flags varint).
    pub len: usize,
}

impl FrameHeader {
    /// Parses the header at the start of a frame (one WebSocket binary message).
    ///
    /// # Errors
    ///
    /// [`BlipError::EmptyFrame`] for an empty frame, a varint error when the number or the
    /// flags are truncated or overlong.
    pub fn parse(frame: &[u8]) -> Result<FrameHeader, BlipError> {
        if frame.is_empty() {
            return Err(BlipError::EmptyFrame);
        }
        let (number, number_len) = varint::read(frame)?;
        let (flags, flags_len) = varint::read(&frame[number_len..])?;
        Ok(FrameHeader {
            number,
            // Truncation intended: no flag bit above 0x40 is defined.
            flags: (flags & 0xff) as u8,
            len: number_len + flags_len,
        })
    }

    /// The frame type.
    pub fn frame_type(&self) -> FrameType {
        FrameType::from_flags(self.flags)
    }

    /// Whether the given flag bit(s) (see [`flags`]) are all set.
    pub fn has(&self, flag: u8) -> bool {
        self.flags & flag == flag
    }
}

/// Encodes an ACK frame: `uvarint(number) || flags || uvarint(bytes_received)`, with flags
/// `0x34` for a request being received (`on_response == false`) or `0x35` for a response.
pub fn encode_ack(number: u64, on_response: bool, bytes_received: u64) -> Vec<u8> {
    let mut out = Vec::with_capacity(2 * varint::MAX_LEN + 1);
    varint::write(number, &mut out);
    let kind = if on_response {
        FrameType::AckResponse
    } else {
        FrameType::AckRequest
    };
    out.push(kind.bits() | flags::URGENT | flags::NO_REPLY);
    varint::write(bytes_received, &mut out);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ack_example() {
        assert_eq!(encode_ack(3, false, 50117), [0x03, 0x34, 0xc5, 0x87, 0x03]);
        assert_eq!(encode_ack(3, true, 65508)[1], 0x35);
    }

    #[test]
    fn header() {
        let header = FrameHeader::parse(&[0x80, 0x01, 0x49, 0xff]).ok();
        assert_eq!(
            header,
            Some(FrameHeader {
                number: 128,
                flags: 0x49,
                len: 3
            })
        );
        let header = header.unwrap_or(FrameHeader {
            number: 0,
            flags: 0,
            len: 0,
        });
        assert_eq!(header.frame_type(), FrameType::Response);
        assert!(header.has(flags::COMPRESSED | flags::MORE_COMING));
        assert!(!header.has(flags::URGENT));
        assert!(matches!(
            FrameHeader::parse(&[]),
            Err(BlipError::EmptyFrame)
        ));
        assert!(matches!(
            FrameHeader::parse(&[0x01]),
            Err(BlipError::TruncatedVarint)
        ));
        for bits in 0..8u8 {
            assert_eq!(FrameType::from_flags(bits | 0xf8).bits(), bits);
        }
    }
}
