//! The values `expiry()` accepts: a number of seconds (relative up to 30 days, otherwise a
//! Unix time), the same as a string of digits, or an RFC 3339 date.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde_json::Value;

/// Numbers up to this many seconds (30 days) are relative to now; larger ones are Unix times.
pub const MAX_RELATIVE_EXPIRY: u64 = 2_592_000;

/// What an `expiry()` value asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Expiry {
    /// `0`: the document does not expire.
    Never,
    /// The document expires at this time.
    At(SystemTime),
}

/// Reads an `expiry()` argument, given the current time: a non-negative number or a string
/// of digits (seconds; at most 30 days is relative to `now`, more is a Unix time; `0`
/// means no expiry; fractions are dropped), or an RFC 3339 date such as
/// `2030-01-01T00:00:00Z`. `None` for anything else: negative or non-finite numbers, values
/// past what a 32-bit expiry can hold, dates before 1970, malformed strings, other types.
pub fn parse_expiry(value: &Value, now: SystemTime) -> Option<Expiry> {
    match value {
        Value::Number(n) => {
            let seconds = match n.as_u64() {
                Some(s) => s,
                None => {
                    let f = n.as_f64()?;
                    if !(0.0..4_294_967_296.0).contains(&f) {
                        return None;
                    }
                    // In range and non-negative: the truncation is exact.
                    #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
                    let s = f.trunc() as u64;
                    s
                }
            };
            from_seconds(seconds, now)
        }
        Value::String(s) if !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()) => {
            from_seconds(s.parse().ok()?, now)
        }
        Value::String(s) => {
            let (seconds, nanos) = parse_rfc3339(s)?;
            let seconds = u64::try_from(seconds).ok()?;
            if seconds > u64::from(u32::MAX) {
                return None;
            }
            Some(Expiry::At(
                UNIX_EPOCH + Duration::from_secs(seconds) + Duration::from_nanos(nanos.into()),
            ))
        }
        _ => None,
    }
}

fn from_seconds(seconds: u64, now: SystemTime) -> Option<Expiry> {
    match seconds {
        0 => Some(Expiry::Never),
        s if s <= MAX_RELATIVE_EXPIRY => now.checked_add(Duration::from_secs(s)).map(Expiry::At),
        s if s <= u64::from(u32::MAX) => Some(Expiry::At(UNIX_EPOCH + Duration::from_secs(s))),
        _ => None,
    }
}

/// Parses `YYYY-MM-DDTHH:MM:SS[.fraction](Z|±HH:MM)` (`T` may be `t` or a space, `Z` may be
/// `z`) into seconds and nanoseconds since the Unix epoch.
fn parse_rfc3339(text: &str) -> Option<(i64, u32)> {
    let b = text.as_bytes();
    if b.len() < 20 {
        return None;
    }
    let digits = |range: std::ops::Range<usize>| -> Option<i64> {
        let part = b.get(range)?;
        if part.iter().all(u8::is_ascii_digit) {
            Some(part.iter().fold(0, |n, d| n * 10 + i64::from(d - b'0')))
        } else {
            None
        }
    };
    let year = digits(0..4)?;
    let month = digits(5..7)?;
    let day = digits(8..10)?;
    let hour = digits(11..13)?;
    let minute = digits(14..16)?;
    let second = digits(17..19)?;
    if b[4] != b'-'
        || b[7] != b'-'
        || !matches!(b[10], b'T' | b't' | b' ')
        || b[13] != b':'
        || b[16] != b':'
    {
        return None;
    }
    if !(1..=12).contains(&month)
        || day < 1
        || day > days_in_month(year, month)
        || hour > 23
        || minute > 59
        || second > 60
    {
        return None;
    }
    // Optional fraction: keep nanoseconds, ignore further digits.
    let mut i = 19;
    let mut nanos: u32 = 0;
    if b.get(i) == Some(&b'.') {
        i += 1;
        let start = i;
        while let Some(d) = b.get(i).filter(|d| d.is_ascii_digit()) {
            if i - start < 9 {
                nanos = nanos * 10 + u32::from(d - b'0');
            }
            i += 1;
        }
        if i == start {
            return None;
        }
        for _ in (i - start)..9 {
            nanos *= 10;
        }
    }
    let offset = match b.get(i..)? {
        [b'Z' | b'z'] => 0,
        [sign @ (b'+' | b'-'), _, _, b':', _, _] => {
            let hours = digits(i + 1..i + 3)?;
            let minutes = digits(i + 4..i + 6)?;
            if hours > 23 || minutes > 59 {
                return None;
            }
            let offset = hours * 3600 + minutes * 60;
            if *sign == b'-' {
                -offset
            } else {
                offset
            }
        }
        _ => return None,
    };
    let days = days_from_civil(year, month, day);
    let seconds = days * 86_400 + hour * 3600 + minute * 60 + second - offset;
    if seconds < 0 {
        return None;
    }
    Some((seconds, nanos))
}

fn is_leap(year: i64) -> bool {
    (year % 4 == 0 && year % 100 != 0) || year % 400 == 0
}

fn days_in_month(year: i64, month: i64) -> i64 {
    match month {
        2 if is_leap(year) => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// Days from 1970-01-01 to the given date of the proleptic Gregorian calendar.
fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    // Count years from March, so that the leap day ends the year.
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let year_of_era = y - era * 400;
    let month_from_march = (month + 9) % 12;
    let day_of_year = (153 * month_from_march + 2) / 5 + day - 1;
    let day_of_era = year_of_era * 365 + year_of_era / 4 - year_of_era / 100 + day_of_year;
    era * 146_097 + day_of_era - 719_468
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn at(seconds: u64) -> Option<Expiry> {
        Some(Expiry::At(UNIX_EPOCH + Duration::from_secs(seconds)))
    }

    #[test]
    fn numbers() {
        let now = UNIX_EPOCH + Duration::from_secs(1_800_000_000);
        assert_eq!(parse_expiry(&json!(0), now), Some(Expiry::Never));
        assert_eq!(parse_expiry(&json!(60), now), at(1_800_000_060));
        assert_eq!(parse_expiry(&json!(60.9), now), at(1_800_000_060));
        assert_eq!(
            parse_expiry(&json!(MAX_RELATIVE_EXPIRY), now),
            at(1_800_000_000 + MAX_RELATIVE_EXPIRY)
        );
        assert_eq!(
            parse_expiry(&json!(MAX_RELATIVE_EXPIRY + 1), now),
            at(MAX_RELATIVE_EXPIRY + 1)
        );
        assert_eq!(parse_expiry(&json!(1_900_000_000), now), at(1_900_000_000));
        assert_eq!(parse_expiry(&json!(u32::MAX), now), at(u64::from(u32::MAX)));
        assert_eq!(parse_expiry(&json!(u64::from(u32::MAX) + 1), now), None);
        assert_eq!(parse_expiry(&json!(-1), now), None);
        assert_eq!(parse_expiry(&json!(-0.5), now), None);
        assert_eq!(parse_expiry(&json!("60"), now), at(1_800_000_060));
        assert_eq!(parse_expiry(&json!("1900000000"), now), at(1_900_000_000));
        assert_eq!(parse_expiry(&json!("0"), now), Some(Expiry::Never));
        for bad in [
            json!(""),
            json!(" 60"),
            json!("-60"),
            json!("6e1"),
            json!(true),
        ] {
            assert_eq!(parse_expiry(&bad, now), None, "{bad}");
        }
        assert_eq!(parse_expiry(&json!(null), now), None);
        assert_eq!(parse_expiry(&json!([60]), now), None);
    }

    #[test]
    fn dates() {
        let now = UNIX_EPOCH;
        assert_eq!(parse_expiry(&json!("1970-01-01T00:00:00Z"), now), at(0));
        assert_eq!(
            parse_expiry(&json!("2030-01-01T00:00:00Z"), now),
            at(1_893_456_000)
        );
        assert_eq!(
            parse_expiry(&json!("2030-01-01T02:30:00+02:30"), now),
            at(1_893_456_000)
        );
        assert_eq!(
            parse_expiry(&json!("2029-12-31t23:00:00-01:00"), now),
            at(1_893_456_000)
        );
        assert_eq!(
            parse_expiry(&json!("2024-02-29 12:00:00z"), now),
            at(1_709_208_000)
        );
        assert_eq!(
            parse_expiry(&json!("2030-01-01T00:00:00.250Z"), now),
            Some(Expiry::At(
                UNIX_EPOCH + Duration::from_secs(1_893_456_000) + Duration::from_millis(250)
            ))
        );
        assert_eq!(
            parse_expiry(&json!("2030-01-01T00:00:00.1234567891Z"), now),
            Some(Expiry::At(
                UNIX_EPOCH + Duration::from_secs(1_893_456_000) + Duration::from_nanos(123_456_789)
            ))
        );
        for bad in [
            "2030-01-01",
            "2030-01-01T00:00:00",
            "2030-13-01T00:00:00Z",
            "2023-02-29T00:00:00Z",
            "2030-01-01T24:00:00Z",
            "2030-01-01T00:00:00.Z",
            "2030-01-01T00:00:00+0200",
            "1969-12-31T23:59:59Z",
            "2200-01-01T00:00:00Z",
            "2030-01-01T00:00:00Zjunk",
            "２０３0-01-01T00:00:00Z",
        ] {
            assert_eq!(parse_expiry(&json!(bad), now), None, "{bad}");
        }
    }

    #[test]
    fn civil_days() {
        assert_eq!(days_from_civil(1970, 1, 1), 0);
        assert_eq!(days_from_civil(2000, 3, 1), 11_017);
        assert_eq!(days_from_civil(1969, 12, 31), -1);
    }
}
