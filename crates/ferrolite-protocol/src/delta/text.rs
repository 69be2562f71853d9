//! String edits: the `"<ops>"` of `["<ops>",0,2]`, created from a character diff and applied
//! over UTF-8 bytes.

use dissimilar::Chunk;

/// The shortest new string (in bytes) for which a string edit is tried (Fleece's
/// `gMinStringDiffLength`, also Sync Gateway's setting).
pub(super) const MIN_STRING_DIFF_LEN: usize = 60;

/// Strings longer than this (old or new, in bytes) are replaced, never diffed (Sync Gateway's
/// limit).
pub(super) const MAX_STRING_DIFF_LEN: usize = 1 << 20;

/// The most characters (old plus new) of the differing middle — what is left after the common
/// prefix and suffix — handed to the diff algorithm. Myers' diff costs O((N+M)·D), which is
/// quadratic for unrelated texts: this budget stands in for the time limits of Fleece (0.25 s)
/// and Sync Gateway (1 ms), and keeps the worst case near 30 ms in a release build. A larger
/// middle becomes one deletion and one insertion between the common prefix and suffix, which is
/// what diff-match-patch itself falls back to when its time runs out.
const MAX_DIFF_MIDDLE_CHARS: usize = 4096;

/// Fleece gives up on a string edit once `ops.len() + 6 >= new.len()` (the trailing copy
/// operation not counted).
const MIN_SAVINGS: usize = 6;

/// Encodes a string edit turning `old` into `new`, or `None` when a plain replacement should be
/// used: the new string is too short to gain anything, a string is too long to diff, or the edit
/// would not be shorter than the new string by more than [`MIN_SAVINGS`] bytes.
///
/// The diff runs on characters, so an insertion never splits a multi-byte character; the counts
/// written are UTF-8 byte counts.
pub(super) fn encode(old: &str, new: &str) -> Option<String> {
    if new.len() < MIN_STRING_DIFF_LEN
        || new.len() > MAX_STRING_DIFF_LEN
        || old.len() > MAX_STRING_DIFF_LEN
        || old == new
    {
        return None;
    }
    let chunks = bounded_diff(old, new)?;
    let mut ops = String::new();
    let mut pending_copy = 0usize;
    for chunk in chunks {
        match chunk {
            Chunk::Equal(text) => pending_copy += text.len(),
            Chunk::Delete(text) | Chunk::Insert(text) if text.is_empty() => {}
            Chunk::Delete(text) => {
                flush_copy(&mut ops, &mut pending_copy);
                ops.push_str(&text.len().to_string());
                ops.push('-');
            }
            Chunk::Insert(text) => {
                flush_copy(&mut ops, &mut pending_copy);
                ops.push_str(&text.len().to_string());
                ops.push('+');
                ops.push_str(text);
                ops.push('|');
            }
        }
        if ops.len() + MIN_SAVINGS >= new.len() {
            return None;
        }
    }
    flush_copy(&mut ops, &mut pending_copy);
    (!ops.is_empty()).then_some(ops)
}

fn flush_copy(ops: &mut String, pending_copy: &mut usize) {
    if *pending_copy > 0 {
        ops.push_str(&pending_copy.to_string());
        ops.push('=');
        *pending_copy = 0;
    }
}

/// A character diff of `old` and `new` whose cost is bounded by [`MAX_DIFF_MIDDLE_CHARS`].
fn bounded_diff<'a>(old: &'a str, new: &'a str) -> Option<Vec<Chunk<'a>>> {
    let prefix: usize = old
        .chars()
        .zip(new.chars())
        .take_while(|(a, b)| a == b)
        .map(|(a, _)| a.len_utf8())
        .sum();
    let (old_rest, new_rest) = (old.get(prefix..)?, new.get(prefix..)?);
    let suffix: usize = old_rest
        .chars()
        .rev()
        .zip(new_rest.chars().rev())
        .take_while(|(a, b)| a == b)
        .map(|(a, _)| a.len_utf8())
        .sum();
    let old_middle = old_rest.get(..old_rest.len() - suffix)?;
    let new_middle = new_rest.get(..new_rest.len() - suffix)?;
    let middle_chars = old_middle
        .chars()
        .chain(new_middle.chars())
        .take(MAX_DIFF_MIDDLE_CHARS + 1)
        .count();
    if middle_chars <= MAX_DIFF_MIDDLE_CHARS {
        return Some(dissimilar::diff(old, new));
    }
    let chunks = [
        Chunk::Equal(old.get(..prefix)?),
        Chunk::Delete(old_middle),
        Chunk::Insert(new_middle),
        Chunk::Equal(old_rest.get(old_rest.len() - suffix..)?),
    ];
    Some(
        chunks
            .into_iter()
            .filter(|c| !chunk_text(c).is_empty())
            .collect(),
    )
}

fn chunk_text<'a>(chunk: &Chunk<'a>) -> &'a str {
    match *chunk {
        Chunk::Equal(text) | Chunk::Delete(text) | Chunk::Insert(text) => text,
    }
}

/// Why a string edit's operations are invalid: the byte offset in the operations and what is
/// wrong.
pub(super) type EditFault = (usize, String);

/// Applies string edit operations to `old`, over its UTF-8 bytes. The byte counts must cover
/// `old` exactly; the result is raw bytes that the caller checks for UTF-8.
pub(super) fn apply(old: &str, ops: &str) -> Result<Vec<u8>, EditFault> {
    let old = old.as_bytes();
    let ops = ops.as_bytes();
    if ops.is_empty() {
        return Err((0, "the operations are empty".to_owned()));
    }
    let mut out = Vec::with_capacity(old.len() + ops.len());
    let mut pos = 0usize; // in `old`
    let mut at = 0usize; // in `ops`
    while at < ops.len() {
        let start = at;
        let mut count = 0usize;
        while let Some(digit) = ops.get(at).filter(|b| b.is_ascii_digit()) {
            count = count
                .checked_mul(10)
                .and_then(|c| c.checked_add(usize::from(digit - b'0')))
                .ok_or_else(|| (start, "the byte count overflows".to_owned()))?;
            at += 1;
        }
        if at == start {
            return Err((at, "expected a decimal byte count".to_owned()));
        }
        let Some(&op) = ops.get(at) else {
            return Err((at, "the operations end after a byte count".to_owned()));
        };
        at += 1;
        match op {
            b'=' | b'-' => {
                let end = pos
                    .checked_add(count)
                    .filter(|&end| end <= old.len())
                    .ok_or_else(|| {
                        let verb = if op == b'=' { "copying" } else { "skipping" };
                        (
                            start,
                            format!(
                                "{verb} {count} bytes at byte {pos} runs past the end of the \
                                 {}-byte old string",
                                old.len()
                            ),
                        )
                    })?;
                if op == b'=' {
                    out.extend_from_slice(&old[pos..end]);
                }
                pos = end;
            }
            b'+' => {
                let inserted = at
                    .checked_add(count)
                    .and_then(|end| ops.get(at..end))
                    .ok_or_else(|| {
                        (
                            start,
                            format!(
                                "the insertion of {count} bytes runs past the end of the \
                                 operations"
                            ),
                        )
                    })?;
                out.extend_from_slice(inserted);
                at += count;
                if ops.get(at) != Some(&b'|') {
                    return Err((
                        at,
                        "the '|' check byte after the inserted bytes is missing".to_owned(),
                    ));
                }
                at += 1;
            }
            other => {
                return Err((
                    at - 1,
                    format!(
                        "unknown operation {:?} (expected '=', '-' or '+')",
                        char::from(other)
                    ),
                ));
            }
        }
    }
    if pos != old.len() {
        return Err((
            ops.len(),
            format!(
                "the operations cover {pos} bytes of the {}-byte old string",
                old.len()
            ),
        ));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn apply_checks_byte_accounting() {
        assert_eq!(apply("hello", "5=").unwrap(), b"hello");
        assert_eq!(apply("hello", "1-2+ja|4=").unwrap(), b"jaello");
        assert_eq!(apply("", "3+abc|").unwrap(), b"abc");
        assert!(apply("hello", "4=").is_err());
        assert!(apply("hello", "6=").is_err());
        assert!(apply("hello", "5=1+x").is_err());
        assert!(apply("hello", "5=1+xy").is_err());
        assert!(apply("hello", "5=x").is_err());
        assert!(apply("hello", "=5").is_err());
        assert!(apply("hello", "5").is_err());
        assert!(apply("hello", "").is_err());
        assert!(apply("hello", "99999999999999999999999999=").is_err());
        assert!(apply("hello", "18446744073709551615-").is_err());
        assert!(apply("hello", "2=18446744073709551615+|").is_err());
    }

    #[test]
    fn encode_counts_bytes_and_keeps_characters_whole() {
        // 'é' and 'è' are both 0xC3 followed by a different byte: a byte-level diff would keep
        // the 0xC3 and insert half a character.
        let old = "é".repeat(40);
        let new = format!("{}è{}", "é".repeat(20), "é".repeat(19));
        let ops = encode(&old, &new).unwrap();
        assert_eq!(ops, "40=2-2+è|38=");
        assert_eq!(apply(&old, &ops).unwrap(), new.as_bytes());
    }

    #[test]
    fn encode_declines_short_or_unprofitable_edits() {
        assert_eq!(encode("abc", "abd"), None);
        let old = "a".repeat(70);
        let new = "b".repeat(70);
        assert_eq!(encode(&old, &new), None);
    }

    #[test]
    fn oversized_middles_fall_back_to_one_replacement() {
        let old = format!("{}{}{}", "p".repeat(100), "x".repeat(5000), "s".repeat(100));
        let new = format!("{}{}{}", "p".repeat(100), "y".repeat(5000), "s".repeat(100));
        assert_eq!(bounded_diff(&old, &new).unwrap().len(), 4);
        let ops = encode(&old, &new).unwrap();
        assert_eq!(ops, format!("100=5000-5000+{}|100=", "y".repeat(5000)));
        let old = format!(
            "{}{}{}",
            "p".repeat(100),
            "x".repeat(5000),
            "s".repeat(5000)
        );
        let new = format!("{}{}{}", "p".repeat(100), "y".repeat(10), "s".repeat(5000));
        let ops = encode(&old, &new).unwrap();
        assert_eq!(ops, "100=5000-10+yyyyyyyyyy|5000=");
    }
}
