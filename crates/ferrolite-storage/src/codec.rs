//! Byte encodings of the redb store's values: varints, document records, change entries.
//!
//! The layouts are described in the module documentation of `redb_store`.

use ferrolite_document::{RevId, RevTree};

use crate::{Change, DocumentRecord, Result, StorageError};

/// Record flag: an expiration follows the sequence.
const HAS_EXPIRATION: u8 = 0b01;
/// Record flag: the current revision exists and is not a deletion.
const LIVE: u8 = 0b10;
/// Change flag: the current revision is a deletion.
const DELETED: u8 = 0b01;

/// Appends `value` as an unsigned LEB128 varint (at most 10 bytes).
pub(crate) fn put_varint(out: &mut Vec<u8>, mut value: u64) {
    while value >= 0x80 {
        out.push((value as u8) | 0x80);
        value >>= 7;
    }
    out.push(value as u8);
}

/// Reads an unsigned LEB128 varint at `*pos`, advancing `*pos`. `None` when truncated,
/// longer than 10 bytes or overflowing 64 bits.
pub(crate) fn get_varint(bytes: &[u8], pos: &mut usize) -> Option<u64> {
    let mut value: u64 = 0;
    for i in 0..10 {
        let byte = *bytes.get(*pos + i)?;
        let bits = u64::from(byte & 0x7f);
        if i == 9 && bits > 1 {
            return None;
        }
        value |= bits << (7 * i);
        if byte & 0x80 == 0 {
            *pos += i + 1;
            return Some(value);
        }
    }
    None
}

/// The fixed part of a document record, before the encoded revision tree.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct RecordHeader {
    /// The document's sequence.
    pub(crate) sequence: u64,
    /// Its expiration, ms since the Unix epoch.
    pub(crate) expiration: Option<u64>,
    /// Whether its current revision exists and is not a deletion.
    pub(crate) live: bool,
    /// Where the encoded tree starts.
    pub(crate) tree_offset: usize,
}

/// Appends the header of a document record (the encoded tree follows it).
pub(crate) fn put_record_header(
    out: &mut Vec<u8>,
    sequence: u64,
    expiration: Option<u64>,
    live: bool,
) {
    let mut flags = 0;
    if expiration.is_some() {
        flags |= HAS_EXPIRATION;
    }
    if live {
        flags |= LIVE;
    }
    out.push(flags);
    put_varint(out, sequence);
    if let Some(ms) = expiration {
        put_varint(out, ms);
    }
}

fn corrupt_record(id: &str, what: &str) -> StorageError {
    StorageError::Corrupt(format!("record of document {id:?}: {what}"))
}

/// Reads the header of a document record.
pub(crate) fn get_record_header(id: &str, bytes: &[u8]) -> Result<RecordHeader> {
    let flags = *bytes
        .first()
        .ok_or_else(|| corrupt_record(id, "empty value"))?;
    if flags & !(HAS_EXPIRATION | LIVE) != 0 {
        return Err(corrupt_record(id, "unknown flags"));
    }
    let mut pos = 1;
    let sequence =
        get_varint(bytes, &mut pos).ok_or_else(|| corrupt_record(id, "bad sequence varint"))?;
    let expiration = if flags & HAS_EXPIRATION != 0 {
        Some(get_varint(bytes, &mut pos).ok_or_else(|| corrupt_record(id, "bad expiration"))?)
    } else {
        None
    };
    Ok(RecordHeader {
        sequence,
        expiration,
        live: flags & LIVE != 0,
        tree_offset: pos,
    })
}

/// Decodes a whole document record.
pub(crate) fn decode_record(id: &str, bytes: &[u8]) -> Result<DocumentRecord> {
    let header = get_record_header(id, bytes)?;
    let tree_bytes = bytes.get(header.tree_offset..).unwrap_or_default();
    let tree = RevTree::decode(tree_bytes)
        .map_err(|e| StorageError::Corrupt(format!("record of document {id:?}: {e}")))?;
    Ok(DocumentRecord {
        id: id.to_owned(),
        tree,
        sequence: header.sequence,
        expiration: header.expiration,
    })
}

/// Appends a change entry (the value of the by-sequence table).
pub(crate) fn put_change(out: &mut Vec<u8>, id: &str, rev: &RevId, deleted: bool) {
    out.push(if deleted { DELETED } else { 0 });
    put_varint(out, id.len() as u64);
    out.extend_from_slice(id.as_bytes());
    out.extend_from_slice(rev.as_str().as_bytes());
}

fn corrupt_change(sequence: u64, what: &str) -> StorageError {
    StorageError::Corrupt(format!("change entry at sequence {sequence}: {what}"))
}

/// Splits a change entry into its flags, document ID bytes and rev bytes.
fn split_change(sequence: u64, bytes: &[u8]) -> Result<(u8, &[u8], &[u8])> {
    let flags = *bytes
        .first()
        .ok_or_else(|| corrupt_change(sequence, "empty value"))?;
    if flags & !DELETED != 0 {
        return Err(corrupt_change(sequence, "unknown flags"));
    }
    let mut pos = 1;
    let len = get_varint(bytes, &mut pos)
        .and_then(|len| usize::try_from(len).ok())
        .ok_or_else(|| corrupt_change(sequence, "bad ID length"))?;
    let end = pos
        .checked_add(len)
        .filter(|&end| end <= bytes.len())
        .ok_or_else(|| corrupt_change(sequence, "truncated ID"))?;
    Ok((flags, &bytes[pos..end], &bytes[end..]))
}

/// The document ID of a change entry.
pub(crate) fn change_id(sequence: u64, bytes: &[u8]) -> Result<&str> {
    let (_, id, _) = split_change(sequence, bytes)?;
    std::str::from_utf8(id).map_err(|_| corrupt_change(sequence, "ID is not UTF-8"))
}

/// Decodes a change entry.
pub(crate) fn decode_change(sequence: u64, bytes: &[u8]) -> Result<Change> {
    let (flags, id, rev) = split_change(sequence, bytes)?;
    let id = std::str::from_utf8(id).map_err(|_| corrupt_change(sequence, "ID is not UTF-8"))?;
    let rev = std::str::from_utf8(rev)
        .ok()
        .and_then(|rev| RevId::parse(rev).ok())
        .ok_or_else(|| corrupt_change(sequence, "bad revision ID"))?;
    Ok(Change {
        sequence,
        id: id.to_owned(),
        rev,
        deleted: flags & DELETED != 0,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn varints_round_trip_and_refuse_garbage() {
        for value in [0, 1, 127, 128, 300, 1 << 35, u64::MAX - 1, u64::MAX] {
            let mut out = Vec::new();
            put_varint(&mut out, value);
            let mut pos = 0;
            assert_eq!(get_varint(&out, &mut pos), Some(value));
            assert_eq!(pos, out.len());
            let mut pos = 0;
            assert_eq!(get_varint(&out[..out.len() - 1], &mut pos), None);
        }
        let mut pos = 0;
        assert_eq!(get_varint(&[0xff; 11], &mut pos), None);
        let mut pos = 0;
        assert_eq!(
            get_varint(
                &[0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x02],
                &mut pos
            ),
            None
        );
    }

    #[test]
    fn headers_round_trip() {
        for (sequence, expiration, live) in [
            (1, None, true),
            (u64::MAX, Some(0), false),
            (7, Some(u64::MAX), true),
        ] {
            let mut out = Vec::new();
            put_record_header(&mut out, sequence, expiration, live);
            out.extend_from_slice(b"tree");
            let header = get_record_header("x", &out).unwrap();
            assert_eq!(
                (header.sequence, header.expiration, header.live),
                (sequence, expiration, live)
            );
            assert_eq!(&out[header.tree_offset..], b"tree");
        }
        assert!(get_record_header("x", &[]).is_err());
        assert!(get_record_header("x", &[0x80]).is_err());
        assert!(get_record_header("x", &[0x01, 0x05]).is_err());
    }

    #[test]
    fn changes_round_trip() {
        let rev = RevId::parse("3-abcd").unwrap();
        let mut out = Vec::new();
        put_change(&mut out, "doc-é", &rev, true);
        let change = decode_change(9, &out).unwrap();
        assert_eq!(
            change,
            Change {
                sequence: 9,
                id: "doc-é".into(),
                rev,
                deleted: true
            }
        );
        assert_eq!(change_id(9, &out).unwrap(), "doc-é");
        for bad in [
            &[][..],
            &[0x04, 0][..],
            &[0, 10, b'a'][..],
            &[0, 1, b'a', b'x'][..],
        ] {
            assert!(decode_change(1, bad).is_err(), "{bad:?}");
        }
    }
}
