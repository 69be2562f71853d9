//! Per-direction frame-data codecs: the running CRC-32 and the connection-wide raw-deflate
//! stream (one compressor for what we send, one inflater for what we receive).

use flate2::{Compress, Compression, Decompress, FlushCompress, FlushDecompress, Status};

use super::BlipError;

/// The empty stored block that ends every sync flush; the sender strips it from each
/// compressed frame and the receiver appends it again before inflating.
const SYNC_TRAILER: [u8; 4] = [0x00, 0x00, 0xff, 0xff];

/// A conservative upper bound on the raw-deflate output for `n` input bytes followed by a sync
/// flush, starting on a byte boundary (which every previous sync flush leaves). Covers
/// fixed-Huffman expansion (9 bits per literal), block headers, the stored-block fallback and
/// the flush's empty stored block.
pub(crate) fn deflate_bound(n: usize) -> usize {
    n + (n >> 3) + (n >> 6) + 24
}

/// The largest input whose [`deflate_bound`] fits in `room` output bytes.
fn max_input_for(room: usize) -> usize {
    let mut n = room.saturating_sub(24) / 73 * 64;
    // Rounding left a little room; take it while the bound still fits.
    while deflate_bound(n + 1) <= room {
        n += 1;
    }
    n
}

/// The sending half: CRC of everything sent, and the deflate stream.
pub(crate) struct Encoder {
    crc: crc32fast::Hasher,
    deflate: Option<Compress>,
    level: u32,
}

impl Encoder {
    /// A fresh encoder compressing at `level` (1–9) when asked to.
    pub(crate) fn new(level: u32) -> Encoder {
        Encoder {
            crc: crc32fast::Hasher::new(),
            deflate: None,
            level: level.min(9),
        }
    }

    /// Whether a compressor is allocated (after a compressed frame, until
    /// [`release_compressor`](Self::release_compressor)).
    pub(crate) fn holds_compressor(&self) -> bool {
        self.deflate.is_some()
    }

    /// Frees the compressor (a few hundred KiB); the next compressed frame starts a new one.
    /// The stream stays valid for the peer: every frame ends with a sync flush, on a block
    /// boundary, and a new compressor never refers back to data sent before it.
    pub(crate) fn release_compressor(&mut self) {
        self.deflate = None;
    }

    /// The running checksum after everything written so far.
    pub(crate) fn checksum(&self) -> u32 {
        self.crc.clone().finalize()
    }

    /// Copies `parts` to `out` uncompressed, adding them to the checksum.
    pub(crate) fn write_raw(&mut self, parts: [&[u8]; 2], out: &mut Vec<u8>) {
        for part in parts {
            self.crc.update(part);
            out.extend_from_slice(part);
        }
    }

    /// Deflates as much of `input` (two consecutive slices of the message) as fits into `room`
    /// bytes appended to `out`, ending with a sync flush whose 4-byte trailer is removed.
    /// Returns the number of input bytes consumed (at least one if `input` is not empty).
    /// On error nothing is appended and the checksum is unchanged, but the deflate stream
    /// must not be used again.
    pub(crate) fn write_compressed(
        &mut self,
        input: [&[u8]; 2],
        room: usize,
        out: &mut Vec<u8>,
    ) -> Result<usize, BlipError> {
        let start = out.len();
        let saved_crc = self.crc.clone();
        let result = self.deflate_into(input, room, out);
        if result.is_err() {
            out.truncate(start);
            self.crc = saved_crc;
        }
        result
    }

    fn deflate_into(
        &mut self,
        input: [&[u8]; 2],
        room: usize,
        out: &mut Vec<u8>,
    ) -> Result<usize, BlipError> {
        let level = self.level;
        let deflate = self
            .deflate
            .get_or_insert_with(|| Compress::new(Compression::new(level), false));
        let start = out.len();
        let total = input[0].len() + input[1].len();
        // Stop adding deflate steps once less than this much room is left: each step ends a
        // deflate block, so tiny steps cost more than they save.
        let min_step_room = (room / 4).clamp(32, 1024);
        let mut consumed = 0;
        loop {
            let written = out.len() - start;
            let avail = room - written;
            let n = max_input_for(avail).min(total - consumed);
            if n == 0 {
                break;
            }
            let (a, b) = split_range(input, consumed, n);
            let base = out.len();
            out.resize(base + avail, 0);
            let produced = deflate_step(deflate, a, b, &mut out[base..])?;
            out.truncate(base + produced);
            self.crc.update(a);
            self.crc.update(b);
            consumed += n;
            if consumed == total || room - (out.len() - start) < min_step_room {
                break;
            }
        }
        if consumed > 0 {
            if !out.ends_with(&SYNC_TRAILER) {
                return Err(BlipError::Deflate(
                    "sync flush did not end with 00 00 FF FF".into(),
                ));
            }
            out.truncate(out.len() - SYNC_TRAILER.len());
        }
        Ok(consumed)
    }
}

/// `n` bytes from offset `from` of the concatenation of `parts`, as up to two slices.
fn split_range(parts: [&[u8]; 2], from: usize, n: usize) -> (&[u8], &[u8]) {
    let first_len = parts[0].len();
    if from >= first_len {
        let b = &parts[1][from - first_len..from - first_len + n];
        (&[], b)
    } else {
        let a_end = (from + n).min(first_len);
        let a = &parts[0][from..a_end];
        let b = &parts[1][..n - (a_end - from)];
        (a, b)
    }
}

/// Deflates `a` then `b` into `out` with one sync flush at the end; returns the output size.
fn deflate_step(
    deflate: &mut Compress,
    a: &[u8],
    b: &[u8],
    out: &mut [u8],
) -> Result<usize, BlipError> {
    let in_before = deflate.total_in();
    let out_before = deflate.total_out();
    let map = |e: flate2::CompressError| BlipError::Deflate(e.to_string());
    if a.is_empty() || b.is_empty() {
        let only = if a.is_empty() { b } else { a };
        deflate
            .compress(only, out, FlushCompress::Sync)
            .map_err(map)?;
    } else {
        deflate.compress(a, out, FlushCompress::None).map_err(map)?;
        let mid = usize::try_from(deflate.total_out() - out_before).unwrap_or(usize::MAX);
        let rest = out.get_mut(mid..).unwrap_or_default();
        deflate
            .compress(b, rest, FlushCompress::Sync)
            .map_err(map)?;
    }
    let consumed = deflate.total_in() - in_before;
    let produced = usize::try_from(deflate.total_out() - out_before).unwrap_or(usize::MAX);
    // The bound leaves slack, so a full buffer means the flush may not have completed.
    if consumed != (a.len() + b.len()) as u64 || produced >= out.len() {
        return Err(BlipError::Deflate(
            "compressed data exceeded the frame's room".into(),
        ));
    }
    Ok(produced)
}

/// The receiving half: CRC of everything received, and the inflate stream.
pub(crate) struct Decoder {
    crc: crc32fast::Hasher,
    inflate: Option<Decompress>,
}

/// Limits on the output of one [`Decoder::read_compressed`] call.
#[derive(Clone, Copy)]
pub(crate) struct InflateLimits {
    /// Most bytes one frame may inflate to.
    pub(crate) frame: usize,
    /// Most bytes the whole buffer (the message so far) may hold.
    pub(crate) total: usize,
}

impl Decoder {
    /// A fresh decoder.
    pub(crate) fn new() -> Decoder {
        Decoder {
            crc: crc32fast::Hasher::new(),
            inflate: None,
        }
    }

    /// Appends uncompressed frame data to `out`, adding it to the checksum.
    pub(crate) fn read_raw(&mut self, data: &[u8], out: &mut Vec<u8>) {
        self.crc.update(data);
        out.extend_from_slice(data);
    }

    /// Inflates one compressed frame's data (without its trailer) onto the end of `out`,
    /// adding the output to the checksum. Refuses to produce more than the limits allow.
    pub(crate) fn read_compressed(
        &mut self,
        data: &[u8],
        out: &mut Vec<u8>,
        limits: InflateLimits,
    ) -> Result<(), BlipError> {
        let inflate = self.inflate.get_or_insert_with(|| Decompress::new(false));
        let start = out.len();
        for (mut input, flush) in [
            (data, FlushDecompress::None),
            (&SYNC_TRAILER[..], FlushDecompress::Sync),
        ] {
            loop {
                if out.len() == out.capacity() {
                    let produced = out.len() - start;
                    // One byte past a limit is enough to know it was exceeded.
                    let room = (limits.frame + 1)
                        .saturating_sub(produced)
                        .min((limits.total + 1).saturating_sub(out.len()));
                    let step = out.len().max(input.len() * 4).max(4096);
                    out.reserve_exact(step.min(room).max(1));
                }
                let in_before = inflate.total_in();
                let out_before = inflate.total_out();
                let status = inflate
                    .decompress_vec(input, out, flush)
                    .map_err(|e| BlipError::InvalidDeflate(e.to_string()))?;
                let consumed =
                    usize::try_from(inflate.total_in() - in_before).unwrap_or(usize::MAX);
                let progressed = consumed > 0 || inflate.total_out() > out_before;
                input = input.get(consumed..).unwrap_or_default();
                let produced = out.len() - start;
                if out.len() > limits.total {
                    return Err(BlipError::MessageTooLarge {
                        max: limits.total as u64,
                    });
                }
                if produced > limits.frame {
                    return Err(BlipError::InflatedFrameTooLarge {
                        max: limits.frame as u64,
                    });
                }
                if status == Status::StreamEnd {
                    return Err(BlipError::InvalidDeflate(
                        "the deflate stream ended (final block)".into(),
                    ));
                }
                if input.is_empty() && out.len() < out.capacity() {
                    break;
                }
                if !progressed {
                    return Err(BlipError::InvalidDeflate("inflate made no progress".into()));
                }
            }
        }
        self.crc.update(&out[start..]);
        Ok(())
    }

    /// Checks the frame's checksum against the running value.
    pub(crate) fn verify(&self, expected: u32) -> Result<(), BlipError> {
        let actual = self.crc.clone().finalize();
        if actual == expected {
            Ok(())
        } else {
            Err(BlipError::ChecksumMismatch { expected, actual })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bound_inverse() {
        for room in 0..5000 {
            let n = max_input_for(room);
            if n > 0 {
                assert!(deflate_bound(n) <= room);
            }
            assert!(deflate_bound(n + 1) > room);
        }
    }

    #[test]
    fn split() {
        let parts: [&[u8]; 2] = [b"abc", b"defg"];
        assert_eq!(split_range(parts, 0, 2), (&b"ab"[..], &b""[..]));
        assert_eq!(split_range(parts, 1, 4), (&b"bc"[..], &b"de"[..]));
        assert_eq!(split_range(parts, 3, 4), (&b""[..], &b"defg"[..]));
        assert_eq!(split_range(parts, 5, 2), (&b""[..], &b"fg"[..]));
    }

    #[test]
    fn incompressible_fills_room_without_overflow() {
        let mut state = 0x1234_5678u32;
        let data: Vec<u8> = (0..100_000)
            .map(|_| {
                state ^= state << 13;
                state ^= state >> 17;
                state ^= state << 5;
                (state >> 24) as u8
            })
            .collect();
        let mut enc = Encoder::new(6);
        let mut dec = Decoder::new();
        let mut sent = 0;
        let mut received = Vec::new();
        while sent < data.len() {
            let mut frame = Vec::new();
            let n = enc
                .write_compressed(
                    [&data[sent..sent + 10], &data[sent + 10..]],
                    16_000,
                    &mut frame,
                )
                .unwrap();
            assert!(n > 0);
            assert!(frame.len() <= 16_000);
            sent += n;
            let limits = InflateLimits {
                frame: 1 << 20,
                total: 1 << 20,
            };
            dec.read_compressed(&frame, &mut received, limits).unwrap();
            dec.verify(enc.checksum()).unwrap();
            if sent + 10 >= data.len() {
                break;
            }
        }
        assert_eq!(received, data[..sent]);
    }
}
