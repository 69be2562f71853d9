//! The few X.509 fields the pinned and self-signed-only modes need, read from DER.
//!
//! Only the outer structure is walked (RFC 5280 §4.1): the signed `tbsCertificate`
//! bytes, the signature algorithm and value, issuer, validity, subject and the public
//! key. Signature verification itself is done by the rustls crypto provider.

/// Borrowed views into a DER certificate.
#[derive(Debug)]
pub(crate) struct CertView<'a> {
    /// The whole `tbsCertificate` TLV: the signed bytes.
    pub(crate) tbs: &'a [u8],
    /// Contents of the outer `signatureAlgorithm` SEQUENCE.
    pub(crate) signature_alg: &'a [u8],
    /// The signature value (BIT STRING contents without the unused-bits octet).
    pub(crate) signature: &'a [u8],
    /// The whole `issuer` Name TLV.
    pub(crate) issuer: &'a [u8],
    /// The whole `subject` Name TLV.
    pub(crate) subject: &'a [u8],
    /// `notBefore`, seconds since the Unix epoch.
    pub(crate) not_before: i64,
    /// `notAfter`, seconds since the Unix epoch.
    pub(crate) not_after: i64,
    /// Contents of the `subjectPublicKeyInfo.algorithm` SEQUENCE.
    pub(crate) spki_alg: &'a [u8],
    /// The public key (BIT STRING contents without the unused-bits octet).
    pub(crate) spki_key: &'a [u8],
}

const SEQUENCE: u8 = 0x30;
const BIT_STRING: u8 = 0x03;
const INTEGER: u8 = 0x02;
const UTC_TIME: u8 = 0x17;
const GENERALIZED_TIME: u8 = 0x18;
const VERSION_TAG: u8 = 0xa0;

/// One DER element: its tag, its contents, the whole encoding, and what follows it.
struct Tlv<'a> {
    tag: u8,
    contents: &'a [u8],
    whole: &'a [u8],
    rest: &'a [u8],
}

fn read_tlv(input: &[u8]) -> Option<Tlv<'_>> {
    let (&tag, after_tag) = input.split_first()?;
    let (&first, mut after_len) = after_tag.split_first()?;
    let len = if first < 0x80 {
        usize::from(first)
    } else {
        let count = usize::from(first & 0x7f);
        if count == 0 || count > 4 || after_len.len() < count {
            return None;
        }
        let mut len = 0usize;
        for &b in &after_len[..count] {
            len = (len << 8) | usize::from(b);
        }
        after_len = &after_len[count..];
        len
    };
    if after_len.len() < len {
        return None;
    }
    let header = input.len() - after_len.len();
    Some(Tlv {
        tag,
        contents: &after_len[..len],
        whole: &input[..header + len],
        rest: &after_len[len..],
    })
}

fn expect(input: &[u8], tag: u8) -> Option<Tlv<'_>> {
    read_tlv(input).filter(|tlv| tlv.tag == tag)
}

fn bit_string_bytes(contents: &[u8]) -> Option<&[u8]> {
    match contents.split_first() {
        Some((0, bytes)) => Some(bytes),
        _ => None,
    }
}

/// Parses the fields of a DER certificate; `None` if it is malformed.
pub(crate) fn parse(der: &[u8]) -> Option<CertView<'_>> {
    let cert = expect(der, SEQUENCE)?;
    if !cert.rest.is_empty() {
        return None;
    }
    let tbs = expect(cert.contents, SEQUENCE)?;
    let sig_alg = expect(tbs.rest, SEQUENCE)?;
    let sig = expect(sig_alg.rest, BIT_STRING)?;

    let mut fields = tbs.contents;
    let first = read_tlv(fields)?;
    if first.tag == VERSION_TAG {
        fields = first.rest;
    }
    let serial = expect(fields, INTEGER)?;
    let inner_alg = expect(serial.rest, SEQUENCE)?;
    let issuer = expect(inner_alg.rest, SEQUENCE)?;
    let validity = expect(issuer.rest, SEQUENCE)?;
    let subject = expect(validity.rest, SEQUENCE)?;
    let spki = expect(subject.rest, SEQUENCE)?;

    let not_before = read_tlv(validity.contents)?;
    let not_after = read_tlv(not_before.rest)?;
    let spki_alg = expect(spki.contents, SEQUENCE)?;
    let spki_key = expect(spki_alg.rest, BIT_STRING)?;

    Some(CertView {
        tbs: tbs.whole,
        signature_alg: sig_alg.contents,
        signature: bit_string_bytes(sig.contents)?,
        issuer: issuer.whole,
        subject: subject.whole,
        not_before: parse_time(not_before.tag, not_before.contents)?,
        not_after: parse_time(not_after.tag, not_after.contents)?,
        spki_alg: spki_alg.contents,
        spki_key: bit_string_bytes(spki_key.contents)?,
    })
}

/// `UTCTime` (`YYMMDDHHMMSSZ`) or `GeneralizedTime` (`YYYYMMDDHHMMSSZ`) to Unix seconds.
fn parse_time(tag: u8, text: &[u8]) -> Option<i64> {
    let digits = |s: &[u8]| -> Option<i64> {
        s.iter().try_fold(0i64, |acc, &c| {
            c.is_ascii_digit().then(|| acc * 10 + i64::from(c - b'0'))
        })
    };
    let (year, rest) = match tag {
        UTC_TIME if text.len() == 13 => {
            let yy = digits(&text[..2])?;
            (if yy >= 50 { 1900 + yy } else { 2000 + yy }, &text[2..])
        }
        GENERALIZED_TIME if text.len() == 15 => (digits(&text[..4])?, &text[4..]),
        _ => return None,
    };
    if rest.last() != Some(&b'Z') {
        return None;
    }
    let month = digits(&rest[0..2])?;
    let day = digits(&rest[2..4])?;
    let hour = digits(&rest[4..6])?;
    let minute = digits(&rest[6..8])?;
    let second = digits(&rest[8..10])?;
    if !(1..=12).contains(&month) || !(1..=31).contains(&day) || hour > 23 || minute > 59 {
        return None;
    }
    if second > 60 {
        return None;
    }
    Some(days_from_civil(year, month, day) * 86_400 + hour * 3600 + minute * 60 + second)
}

/// Days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant's algorithm).
fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (month + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times() {
        assert_eq!(parse_time(UTC_TIME, b"700101000000Z"), Some(0));
        assert_eq!(parse_time(UTC_TIME, b"000229120000Z"), Some(951_825_600));
        assert_eq!(
            parse_time(GENERALIZED_TIME, b"20380119031408Z"),
            Some(2_147_483_648)
        );
        assert_eq!(parse_time(UTC_TIME, b"491231235959Z"), Some(2_524_607_999));
        assert_eq!(parse_time(UTC_TIME, b"7001010000Z"), None);
        assert_eq!(parse_time(UTC_TIME, b"701301000000Z"), None);
    }

    #[test]
    fn lengths() {
        assert!(read_tlv(&[0x30, 0x81, 0x01, 0x00]).is_some());
        assert!(read_tlv(&[0x30, 0x80]).is_none());
        assert!(read_tlv(&[0x30, 0x05, 0x00]).is_none());
        assert!(parse(&[0x30, 0x00]).is_none());
    }
}
