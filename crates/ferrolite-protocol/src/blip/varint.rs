//! Unsigned LEB128 varints, the only variable-length integers of BLIP (Go's
//! `binary.PutUvarint` / `binary.Uvarint`).
//!
//! Seven payload bits per byte, least-significant group first, bit `0x80` set on every byte but
//! the last. A `u64` takes at most [`MAX_LEN`] bytes. Decoding accepts non-minimal encodings
//! (as Go and LiteCore do) but refuses input that ends inside a varint and encodings longer than
//! ten bytes or whose value does not fit in 64 bits.

use super::BlipError;

/// The longest encoding of a `u64`: ten bytes.
pub const MAX_LEN: usize = 10;

/// Encodes `value` into `buf`, returning the number of bytes written (1 to [`MAX_LEN`]).
pub fn encode(mut value: u64, buf: &mut [u8; MAX_LEN]) -> usize {
    let mut len = 0;
    for slot in buf.iter_mut() {
        // Truncation intended: the low seven bits.
        let low = (value & 0x7f) as u8;
        value >>= 7;
        len += 1;
        if value == 0 {
            *slot = low;
            break;
        }
        *slot = low | 0x80;
    }
    len
}

/// Appends the encoding of `value` to `out`.
pub fn write(value: u64, out: &mut Vec<u8>) {
    let mut buf = [0u8; MAX_LEN];
    let len = encode(value, &mut buf);
    out.extend_from_slice(&buf[..len]);
}

/// The number of bytes the encoding of `value` takes.
pub fn encoded_len(value: u64) -> usize {
    let bits = 64 - (value | 1).leading_zeros() as usize;
    bits.div_ceil(7)
}

/// Decodes a varint at the start of `input`: its value and the number of bytes it took.
///
/// # Errors
///
/// [`BlipError::TruncatedVarint`] when `input` ends before the last byte of the varint,
/// [`BlipError::VarintOverflow`] when the encoding is longer than ten bytes or the value does
/// not fit in a `u64`.
pub fn read(input: &[u8]) -> Result<(u64, usize), BlipError> {
    let mut value: u64 = 0;
    for (i, &byte) in input.iter().enumerate() {
        if i == MAX_LEN - 1 && byte > 1 {
            return Err(BlipError::VarintOverflow);
        }
        value |= u64::from(byte & 0x7f) << (7 * i);
        if byte & 0x80 == 0 {
            return Ok((value, i + 1));
        }
        if i == MAX_LEN - 1 {
            return Err(BlipError::VarintOverflow);
        }
    }
    Err(BlipError::TruncatedVarint)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn enc(value: u64) -> Vec<u8> {
        let mut out = Vec::new();
        write(value, &mut out);
        out
    }

    #[test]
    fn spec_examples() {
        assert_eq!(enc(0), [0x00]);
        assert_eq!(enc(1), [0x01]);
        assert_eq!(enc(127), [0x7f]);
        assert_eq!(enc(128), [0x80, 0x01]);
        assert_eq!(enc(300), [0xac, 0x02]);
        assert_eq!(enc(50117), [0xc5, 0x87, 0x03]);
        assert_eq!(
            enc(u64::MAX),
            [0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01]
        );
    }

    #[test]
    fn boundaries() {
        for shift in 0..64 {
            for value in [(1u64 << shift) - 1, 1u64 << shift, (1u64 << shift) + 1] {
                let bytes = enc(value);
                assert_eq!(bytes.len(), encoded_len(value), "{value}");
                assert_eq!(read(&bytes).ok(), Some((value, bytes.len())), "{value}");
                // Every strict prefix is truncated.
                for cut in 0..bytes.len() {
                    assert!(matches!(
                        read(&bytes[..cut]),
                        Err(BlipError::TruncatedVarint)
                    ));
                }
            }
        }
    }

    #[test]
    fn refuses_overlong() {
        // Eleven bytes.
        let eleven = [0x80u8; 10]
            .iter()
            .copied()
            .chain([0x00])
            .collect::<Vec<_>>();
        assert!(matches!(read(&eleven), Err(BlipError::VarintOverflow)));
        // Ten bytes whose value needs 65 bits.
        let mut big = vec![0xffu8; 9];
        big.push(0x02);
        assert!(matches!(read(&big), Err(BlipError::VarintOverflow)));
        // A non-minimal but valid encoding is accepted.
        assert_eq!(read(&[0x80, 0x00]).ok(), Some((0, 2)));
    }
}
