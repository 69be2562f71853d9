//! Helpers shared by the storage tests.
#![allow(dead_code, unreachable_pub)]

use std::io::{self, Read};
use std::time::{SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use ferrolite_document::{canonical_json, RevTree};
use ferrolite_storage::{DocumentRecord, Result, Store};
use serde_json::Value;

/// Canonical JSON bytes of a value.
pub fn body(value: Value) -> Bytes {
    canonical_json(&value).into()
}

/// Wall-clock time in ms since the Unix epoch.
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

/// Saves a new revision of `id` (a child of its current revision, or a first revision) in one
/// write, with a new sequence, keeping the stored expiration unless `expiration` is given.
pub fn save(
    store: &dyn Store,
    id: &str,
    value: Value,
    deleted: bool,
    expiration: Option<Option<u64>>,
) -> Result<DocumentRecord> {
    let mut saved = None;
    store.write(&mut |txn| {
        let existing = txn.get(id)?;
        let (mut tree, old_expiration) = match existing {
            Some(record) => (record.tree, record.expiration),
            None => (RevTree::new(), None),
        };
        let parent = tree.current().map(|c| c.id().clone());
        let sequence = txn.next_sequence()?;
        tree.add_child(parent.as_ref(), body(value.clone()), deleted, sequence)?;
        let record = DocumentRecord {
            id: id.to_owned(),
            tree,
            sequence,
            expiration: expiration.unwrap_or(old_expiration),
        };
        txn.put(&record)?;
        saved = Some(record);
        Ok(())
    })?;
    Ok(saved.expect("saved"))
}

/// A tiny deterministic random number generator (xorshift64*).
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1)
    }

    pub fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// A number in `0..n` (`n > 0`).
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n
    }
}

/// A reader that makes `len` pseudo-random bytes on the fly; byte `i` depends only on the seed
/// and `i`, whatever the sizes of the reads.
pub struct GeneratedReader {
    seed: u64,
    pos: u64,
    len: u64,
}

impl GeneratedReader {
    pub fn new(seed: u64, len: u64) -> GeneratedReader {
        GeneratedReader { seed, pos: 0, len }
    }

    fn word(&self, index: u64) -> [u8; 8] {
        // splitmix64
        let mut z = self
            .seed
            .wrapping_add(index.wrapping_mul(0x9e37_79b9_7f4a_7c15));
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        (z ^ (z >> 31)).to_le_bytes()
    }
}

impl Read for GeneratedReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        // Odd-sized reads, to exercise chunk boundaries.
        let n = (buf.len() as u64).min(self.len - self.pos).min(50_001) as usize;
        let mut filled = 0;
        while filled < n {
            let word = self.word(self.pos / 8);
            let offset = (self.pos % 8) as usize;
            let take = (8 - offset).min(n - filled);
            buf[filled..filled + take].copy_from_slice(&word[offset..offset + take]);
            filled += take;
            self.pos += take as u64;
        }
        Ok(n)
    }
}
