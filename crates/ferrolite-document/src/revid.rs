use std::cmp::Ordering;
use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use sha1::{Digest, Sha1};

use crate::DocumentError;

/// A revision ID in revision-tree mode: `<generation>-<lowercase hex digest>`.
///
/// Ordering follows Couchbase Lite: generation first (numerically), then the digest.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct RevId {
    generation: u32,
    text: Box<str>,
}

impl RevId {
    /// Parses `gen-digest`: a generation of 1 to 4 294 967 295 without sign or leading zero,
    /// and an even number (at least 2) of lowercase hex digits.
    pub fn parse(text: &str) -> Result<RevId, DocumentError> {
        let bad = || DocumentError::InvalidRevId(text.to_owned());
        let (gen_text, digest) = text.split_once('-').ok_or_else(bad)?;
        if gen_text.is_empty()
            || gen_text.starts_with('0')
            || !gen_text.bytes().all(|b| b.is_ascii_digit())
        {
            return Err(bad());
        }
        let generation: u32 = gen_text.parse().map_err(|_| bad())?;
        if digest.len() < 2
            || digest.len() % 2 != 0
            || !digest
                .bytes()
                .all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
        {
            return Err(bad());
        }
        Ok(RevId {
            generation,
            text: text.into(),
        })
    }

    /// Computes the ID of a new revision the way Couchbase Lite 3.3 does: SHA-1 over
    /// `len(parent) ‖ parent ‖ deleted ‖ canonical JSON body`, generation = parent's + 1.
    ///
    /// `canonical_body` must be the output of [`crate::canonical_json`].
    pub fn compute(parent: Option<&RevId>, deleted: bool, canonical_body: &[u8]) -> RevId {
        let mut hasher = Sha1::new();
        match parent {
            Some(p) => {
                let bytes = p.as_str().as_bytes();
                let len = bytes.len().min(255);
                hasher.update([len as u8]);
                hasher.update(&bytes[..len]);
            }
            None => hasher.update([0u8]),
        }
        hasher.update([u8::from(deleted)]);
        hasher.update(canonical_body);
        let digest = hasher.finalize();
        let generation = parent.map_or(1, |p| p.generation.saturating_add(1));
        let mut text = String::with_capacity(11 + 40);
        text.push_str(&generation.to_string());
        text.push('-');
        for byte in digest {
            text.push(char::from(HEX[usize::from(byte >> 4)]));
            text.push(char::from(HEX[usize::from(byte & 0xf)]));
        }
        RevId {
            generation,
            text: text.into(),
        }
    }

    /// The generation number (depth in the tree, 1 for a root).
    pub fn generation(&self) -> u32 {
        self.generation
    }

    /// The digest part, after the `-`.
    pub fn digest(&self) -> &str {
        let dash = self.text.find('-').unwrap_or(0);
        &self.text[dash + 1..]
    }

    /// The full text form.
    pub fn as_str(&self) -> &str {
        &self.text
    }
}

const HEX: &[u8; 16] = b"0123456789abcdef";

impl Ord for RevId {
    fn cmp(&self, other: &Self) -> Ordering {
        self.generation
            .cmp(&other.generation)
            .then_with(|| self.digest().cmp(other.digest()))
    }
}

impl PartialOrd for RevId {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl fmt::Display for RevId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

impl fmt::Debug for RevId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "RevId({})", self.text)
    }
}

impl FromStr for RevId {
    type Err = DocumentError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        RevId::parse(s)
    }
}

impl Serialize for RevId {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.text)
    }
}

impl<'de> Deserialize<'de> for RevId {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        RevId::parse(&text).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn worked_examples_from_the_spec() {
        let r1 = RevId::compute(None, false, br#"{"age":30,"name":"Alice"}"#);
        assert_eq!(r1.as_str(), "1-291c8a3c890453134009043aa089fcd9b5f8f217");
        let r2 = RevId::compute(Some(&r1), false, br#"{"age":31,"name":"Alice"}"#);
        assert_eq!(r2.as_str(), "2-a5adf9c3107fd2feb539362efcf947efbd2284ff");
        let r3 = RevId::compute(Some(&r2), true, b"{}");
        assert_eq!(r3.as_str(), "3-7e8a4e770e241993e449409d56e2344e688f9418");
        assert_eq!(r3.generation(), 3);
        assert_eq!(r3.digest(), "7e8a4e770e241993e449409d56e2344e688f9418");
    }

    #[test]
    fn parse_accepts_valid_and_refuses_invalid() {
        for ok in [
            "1-ab",
            "12-2cbcc1ab63c8c99341c2dbe6d6bbfa36",
            "4294967295-00",
        ] {
            assert_eq!(RevId::parse(ok).unwrap().as_str(), ok);
        }
        for bad in [
            "",
            "1",
            "1-",
            "-ab",
            "0-ab",
            "01-ab",
            "+1-ab",
            "1-a",
            "1-AB",
            "1-xy",
            "4294967296-ab",
            "1-ab-cd",
            " 1-ab",
        ] {
            assert!(RevId::parse(bad).is_err(), "{bad:?} should be refused");
        }
    }

    #[test]
    fn ordering_is_generation_then_digest() {
        let a = RevId::parse("2-aa").unwrap();
        let b = RevId::parse("10-00").unwrap();
        let c = RevId::parse("2-ab").unwrap();
        assert!(a < b);
        assert!(a < c);
        assert!(c < b);
    }

    #[test]
    fn serde_round_trip_is_a_string() {
        let r = RevId::parse("3-abcd").unwrap();
        let text = serde_json::to_string(&r).unwrap();
        assert_eq!(text, "\"3-abcd\"");
        let back: RevId = serde_json::from_str(&text).unwrap();
        assert_eq!(back, r);
        assert!(serde_json::from_str::<RevId>("\"3-ABCD\"").is_err());
    }
}
