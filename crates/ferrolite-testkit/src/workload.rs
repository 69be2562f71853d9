//! The shared benchmark workload: deterministic ~1 KB "user profile" JSON documents.
//!
//! A port of `makeDoc(i, seed, prefix)` from the peer harness (`peer-pouchdb/lib/docs.js`,
//! built on the mulberry32 PRNG). For the same `(i, seed, prefix)`, [`make_doc_json`] returns
//! exactly the bytes of JavaScript's `JSON.stringify(makeDoc(i, seed, prefix))`, so every
//! engine measured against the peer handles the same data.
//!
//! Reproducing JavaScript exactly takes care in a few places, each handled by a small helper
//! here: the seed mixing is done in doubles and then wrapped by `ToInt32` (`to_uint32`);
//! integer arithmetic follows `Math.imul`, `|0` and `>>>` (wrapping `u32`); `Math.round`
//! rounds half-way cases up (`js_round`); numbers print as JavaScript prints them
//! (`write_js_number`); dates print as `Date.prototype.toISOString` does (`iso_string`).
//!
//! The data sets in use: prefix `user` for the server's documents, prefix `fresh` for
//! documents created on a client; seed 1.

use std::sync::OnceLock;

use serde_json::{Map, Number, Value};

const FIRST: [&str; 30] = [
    "Ada",
    "Alan",
    "Grace",
    "Linus",
    "Barbara",
    "Edsger",
    "Donald",
    "Frances",
    "Ken",
    "Dennis",
    "Margaret",
    "John",
    "Radia",
    "Leslie",
    "Shafi",
    "Tim",
    "Katherine",
    "Niklaus",
    "Sophie",
    "Yukihiro",
    "Hedy",
    "Claude",
    "Jean",
    "Mary",
    "Guido",
    "Anders",
    "Bjarne",
    "Ivan",
    "Karen",
    "Robin",
];
const LAST: [&str; 30] = [
    "Lovelace",
    "Turing",
    "Hopper",
    "Torvalds",
    "Liskov",
    "Dijkstra",
    "Knuth",
    "Allen",
    "Thompson",
    "Ritchie",
    "Hamilton",
    "McCarthy",
    "Perlman",
    "Lamport",
    "Goldwasser",
    "Berners-Lee",
    "Johnson",
    "Wirth",
    "Wilson",
    "Matsumoto",
    "Lamarr",
    "Shannon",
    "Sammet",
    "Kenyon",
    "Rossum",
    "Hejlsberg",
    "Stroustrup",
    "Sutherland",
    "Jones",
    "Milner",
];
const CITIES: [(&str, &str, &str); 16] = [
    ("Berlin", "BE", "DE"),
    ("Paris", "IDF", "FR"),
    ("Lyon", "ARA", "FR"),
    ("Austin", "TX", "US"),
    ("Boston", "MA", "US"),
    ("Seattle", "WA", "US"),
    ("Toronto", "ON", "CA"),
    ("Zurich", "ZH", "CH"),
    ("Kyoto", "26", "JP"),
    ("Melbourne", "VIC", "AU"),
    ("Madrid", "MD", "ES"),
    ("Oslo", "03", "NO"),
    ("Dublin", "D", "IE"),
    ("Cape Town", "WC", "ZA"),
    ("Sao Paulo", "SP", "BR"),
    ("Pune", "MH", "IN"),
];
const STREETS: [&str; 12] = [
    "Main St",
    "Oak Avenue",
    "Elm Road",
    "Maple Lane",
    "Station Road",
    "High Street",
    "Church Lane",
    "Park Avenue",
    "Mill Road",
    "Lake View",
    "River Walk",
    "Hill Crescent",
];
const UNIS: [&str; 16] = [
    "Massachusetts Institute of Technology",
    "ETH Zurich",
    "University of Cambridge",
    "Stanford University",
    "University of Tokyo",
    "Technical University of Munich",
    "Sorbonne University",
    "University of Toronto",
    "University of Melbourne",
    "Indian Institute of Technology Bombay",
    "University of Cape Town",
    "Universidad Complutense de Madrid",
    "Trinity College Dublin",
    "University of Oslo",
    "Universidade de Sao Paulo",
    "Carnegie Mellon University",
];
const DEGREES: [&str; 8] = [
    "BSc Computer Science",
    "MSc Mathematics",
    "BA Economics",
    "PhD Physics",
    "MEng Electrical",
    "BSc Biology",
    "MA Linguistics",
    "MBA",
];
const COMPANIES: [&str; 10] = [
    "Initech",
    "Globex",
    "Umbrella",
    "Hooli",
    "Vandelay Industries",
    "Acme Corp",
    "Stark Industries",
    "Wayne Enterprises",
    "Soylent",
    "Cyberdyne",
];
const TITLES: [&str; 8] = [
    "Engineer",
    "Senior Engineer",
    "Staff Engineer",
    "Designer",
    "Product Manager",
    "Analyst",
    "Researcher",
    "Director",
];
const DEPTS: [&str; 8] = [
    "Platform",
    "Mobile",
    "Data",
    "Growth",
    "Security",
    "Infrastructure",
    "Research",
    "Support",
];
const LANGS: [&str; 8] = [
    "en-US", "en-GB", "de-DE", "fr-FR", "es-ES", "ja-JP", "pt-BR", "nb-NO",
];
const TZS: [&str; 10] = [
    "Europe/Berlin",
    "Europe/Paris",
    "America/Chicago",
    "America/New_York",
    "America/Los_Angeles",
    "America/Toronto",
    "Asia/Tokyo",
    "Australia/Melbourne",
    "Europe/Madrid",
    "Asia/Kolkata",
];
const TAGS: [&str; 15] = [
    "beta",
    "premium",
    "early-adopter",
    "mobile",
    "desktop",
    "newsletter",
    "verified",
    "student",
    "alumni",
    "mentor",
    "offline-first",
    "sync",
    "admin",
    "moderator",
    "contributor",
];
/// The JavaScript source builds its word list with `.split(' ')` of this text.
const WORDS_TEXT: &str = concat!(
    "lorem ipsum dolor sit amet consectetur adipiscing elit sed do eiusmod tempor incididunt ut ",
    "labore et dolore magna aliqua enim ad minim veniam quis nostrud exercitation ullamco laboris nisi aliquip ",
    "ex ea commodo consequat duis aute irure in reprehenderit voluptate velit esse cillum fugiat nulla pariatur",
);
const EMAIL_TLDS: [&str; 4] = ["com", "org", "net", "io"];
const THEMES: [&str; 3] = ["light", "dark", "system"];
const DIGESTS: [&str; 3] = ["daily", "weekly", "never"];

/// `Date.UTC(2015, 0, 1)`: 2015-01-01T00:00:00Z in milliseconds since the Unix epoch.
const JAN_1_2015_MS: i64 = 1_420_070_400_000;
const DAY_MS: i64 = 86_400_000;

fn words() -> &'static [&'static str] {
    static WORDS: OnceLock<Vec<&'static str>> = OnceLock::new();
    WORDS.get_or_init(|| WORDS_TEXT.split(' ').collect())
}

/// The ID of document `i` of a data set: `prefix:` and `i` zero-padded to 8 digits
/// (`user:00000042`).
pub fn doc_id(prefix: &str, i: u32) -> String {
    format!("{prefix}:{}", pad(&i.to_string(), 8))
}

/// Document `i` of the data set `(seed, prefix)` as JSON text, byte-identical to JavaScript's
/// `JSON.stringify(makeDoc(i, seed, prefix))`: `_id` first, then the body in the order of the
/// JavaScript object literal.
pub fn make_doc_json(i: u32, seed: u32, prefix: &str) -> String {
    let mut out = String::with_capacity(1200);
    write_json(&mut out, &Json::Obj(build(i, seed, prefix)));
    out
}

/// Document `i` of the data set `(seed, prefix)` as its ID and its body (every property but
/// `_id`). Integral numbers in the body are JSON integers, the rest are floats, as parsing the
/// output of [`make_doc_json`] would give.
pub fn make_doc(i: u32, seed: u32, prefix: &str) -> (String, Map<String, Value>) {
    let mut body = Map::new();
    for (key, value) in build(i, seed, prefix) {
        if key != "_id" {
            body.insert(key.to_owned(), to_value(value));
        }
    }
    (doc_id(prefix, i), body)
}

/// The mulberry32 PRNG exactly as the JavaScript reference implements it: a 32-bit state and
/// outputs in `[0, 1)` with 32 bits of randomness.
#[derive(Debug, Clone)]
pub struct Mulberry32 {
    state: u32,
}

impl Mulberry32 {
    /// A generator seeded with `seed` (JavaScript's `mulberry32(seed)` after `seed |= 0`).
    pub fn new(seed: u32) -> Self {
        Mulberry32 { state: seed }
    }

    /// The next output in `[0, 1)`.
    pub fn next_f64(&mut self) -> f64 {
        // `a = (a + 0x6D2B79F5) | 0`; Math.imul and ^ on int32 equal wrapping u32 arithmetic.
        self.state = self.state.wrapping_add(0x6D2B_79F5);
        let a = self.state;
        let mut t = (a ^ (a >> 15)).wrapping_mul(1 | a);
        t = t.wrapping_add((t ^ (t >> 7)).wrapping_mul(61 | t)) ^ t;
        f64::from(t ^ (t >> 14)) / 4_294_967_296.0
    }
}

/// The seed `makeDoc` gives mulberry32: `(seed * 0x9E3779B1) ^ (i * 0x85EBCA77) ^ 0x1234567`.
/// JavaScript multiplies in doubles (the products may exceed 2^53 and round), then `^` applies
/// `ToInt32` to each operand.
fn initial_state(i: u32, seed: u32) -> u32 {
    let a = to_uint32(f64::from(seed) * f64::from(0x9E37_79B1_u32));
    let b = to_uint32(f64::from(i) * f64::from(0x85EB_CA77_u32));
    a ^ b ^ 0x0123_4567
}

/// ECMAScript `ToUint32` (the bits of `ToInt32`): the exact value of `x`, truncated toward
/// zero, modulo 2^32; NaN and infinities give 0.
fn to_uint32(x: f64) -> u32 {
    if !x.is_finite() {
        return 0;
    }
    let t = x.trunc();
    // Every double of magnitude 2^85 or more is a multiple of 2^32, so 2^127 is a safe cut.
    if t.abs() >= 2f64.powi(127) {
        return 0;
    }
    // `as i128` is exact here; `as u32` keeps the low 32 bits, i.e. reduces modulo 2^32.
    (t as i128) as u32
}

/// JavaScript's `Math.round`: the nearest integer, half-way cases toward +infinity
/// (`Math.round(-2.5) == -2`), with no double rounding in `x + 0.5`.
fn js_round(x: f64) -> f64 {
    let up = x.ceil();
    if up - 0.5 > x {
        up - 1.0
    } else {
        up
    }
}

/// `String(n).padStart(width, '0')`.
fn pad(s: &str, width: usize) -> String {
    format!("{s:0>width$}")
}

/// The random choices of `makeDoc`, made in the same order as the JavaScript.
struct Rng(Mulberry32);

impl Rng {
    fn next(&mut self) -> f64 {
        self.0.next_f64()
    }

    /// `arr[Math.floor(r() * arr.length)]`
    fn pick<'a, T>(&mut self, arr: &'a [T]) -> &'a T {
        &arr[(self.next() * arr.len() as f64).floor() as usize]
    }

    /// `lo + Math.floor(r() * (hi - lo + 1))`
    fn int(&mut self, lo: i64, hi: i64) -> i64 {
        lo + (self.next() * (hi - lo + 1) as f64).floor() as i64
    }

    /// `pad(int(lo, hi), width)`
    fn padded(&mut self, lo: i64, hi: i64, width: usize) -> String {
        pad(&self.int(lo, hi).to_string(), width)
    }
}

/// A JSON value that keeps its keys in insertion order and its numbers as JavaScript doubles.
enum Json {
    Str(String),
    Num(f64),
    Bool(bool),
    Arr(Vec<Json>),
    Obj(Vec<(&'static str, Json)>),
}

fn s(v: impl Into<String>) -> Json {
    Json::Str(v.into())
}

fn int(v: i64) -> Json {
    Json::Num(v as f64)
}

/// `makeDoc(i, seed, prefix)` as an ordered list of top-level properties, `_id` first.
fn build(i: u32, seed: u32, prefix: &str) -> Vec<(&'static str, Json)> {
    let mut r = Rng(Mulberry32::new(initial_state(i, seed)));
    let first = *r.pick(&FIRST);
    let last = *r.pick(&LAST);
    let (city, state, country) = *r.pick(&CITIES);
    let username = format!("{first}.{last}{}", r.int(1, 9999)).to_lowercase();
    let created_days = r.int(0, 3000);
    let created_secs = r.int(0, 86_399);
    let created = JAN_1_2015_MS + created_days * DAY_MS + created_secs * 1000;
    let bio: Vec<&str> = (0..22).map(|_| *r.pick(words())).collect();
    let n_tags = r.int(2, 5);
    let mut tags: Vec<&str> = Vec::new();
    for _ in 0..n_tags {
        let t = *r.pick(&TAGS);
        if !tags.contains(&t) {
            tags.push(t);
        }
    }

    let email = format!("{username}@example.{}", r.pick(&EMAIL_TLDS));
    let phone = {
        let country_code = r.int(1, 99);
        let area = r.int(100, 999);
        let exchange = r.int(100, 999);
        let line = r.padded(0, 9999, 4);
        format!("+{country_code}-{area}-{exchange}-{line}")
    };
    let birthdate = {
        let year = r.int(1950, 2005);
        let month = r.padded(1, 12, 2);
        let day = r.padded(1, 28, 2);
        format!("{year}-{month}-{day}")
    };
    let address = {
        let number = r.int(1, 2500);
        let street = format!("{number} {}", r.pick(&STREETS));
        let postcode = r.padded(1000, 99_999, 5);
        let lat = js_round((r.next() * 180.0 - 90.0) * 1e6) / 1e6;
        let lng = js_round((r.next() * 360.0 - 180.0) * 1e6) / 1e6;
        Json::Obj(vec![
            ("street", s(street)),
            ("city", s(city)),
            ("state", s(state)),
            ("postcode", s(postcode)),
            ("country", s(country)),
            (
                "geo",
                Json::Obj(vec![("lat", Json::Num(lat)), ("lng", Json::Num(lng))]),
            ),
        ])
    };
    let university = {
        let name = r.pick(&UNIS);
        let degree = r.pick(&DEGREES);
        let year = r.int(1975, 2024);
        Json::Obj(vec![
            ("name", s(*name)),
            ("degree", s(*degree)),
            ("graduationYear", int(year)),
        ])
    };
    let company = {
        let name = r.pick(&COMPANIES);
        let title = r.pick(&TITLES);
        let department = r.pick(&DEPTS);
        Json::Obj(vec![
            ("name", s(*name)),
            ("title", s(*title)),
            ("department", s(*department)),
        ])
    };
    let preferences = {
        let theme = r.pick(&THEMES);
        let language = r.pick(&LANGS);
        let timezone = r.pick(&TZS);
        let email = r.next() < 0.7;
        let push = r.next() < 0.5;
        let sms = r.next() < 0.1;
        let digest = r.pick(&DIGESTS);
        Json::Obj(vec![
            ("theme", s(*theme)),
            ("language", s(*language)),
            ("timezone", s(*timezone)),
            (
                "notifications",
                Json::Obj(vec![
                    ("email", Json::Bool(email)),
                    ("push", Json::Bool(push)),
                    ("sms", Json::Bool(sms)),
                    ("digest", s(*digest)),
                ]),
            ),
        ])
    };
    let stats = {
        let logins = r.int(0, 5000);
        let score = js_round(r.next() * 10_000.0) / 100.0;
        let last_login = created + r.int(0, 900) * DAY_MS;
        Json::Obj(vec![
            ("logins", int(logins)),
            ("score", Json::Num(score)),
            ("lastLoginAt", s(iso_string(last_login))),
        ])
    };

    vec![
        ("_id", s(doc_id(prefix, i))),
        ("type", s("user")),
        (
            "name",
            Json::Obj(vec![
                ("first", s(first)),
                ("last", s(last)),
                ("display", s(format!("{first} {last}"))),
            ]),
        ),
        ("username", s(username)),
        ("email", s(email)),
        ("phone", s(phone)),
        ("birthdate", s(birthdate)),
        ("address", address),
        ("university", university),
        ("company", company),
        ("preferences", preferences),
        ("tags", Json::Arr(tags.into_iter().map(s).collect())),
        ("bio", s(bio.join(" "))),
        ("stats", stats),
        ("createdAt", s(iso_string(created))),
        ("updatedAt", s(iso_string(created))),
        ("version", int(1)),
    ]
}

/// `new Date(ms).toISOString()`: `YYYY-MM-DDTHH:MM:SS.mmmZ` (years outside 0..=9999 as
/// `±YYYYYY`, as JavaScript writes them).
fn iso_string(ms: i64) -> String {
    let (y, m, d) = civil_from_days(ms.div_euclid(DAY_MS));
    let in_day = ms.rem_euclid(DAY_MS);
    let (hour, minute) = (in_day / 3_600_000, in_day / 60_000 % 60);
    let (second, milli) = (in_day / 1000 % 60, in_day % 1000);
    let year = if (0..=9999).contains(&y) {
        format!("{y:04}")
    } else {
        format!("{}{:06}", if y < 0 { '-' } else { '+' }, y.abs())
    };
    format!("{year}-{m:02}-{d:02}T{hour:02}:{minute:02}:{second:02}.{milli:03}Z")
}

/// The proleptic Gregorian date of a count of days since 1970-01-01 (Howard Hinnant's
/// `civil_from_days`).
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097); // [0, 146096]
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365; // [0, 399]
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100); // [0, 365]
    let mp = (5 * doy + 2) / 153; // [0, 11], March-based
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

fn write_json(out: &mut String, value: &Json) {
    match value {
        Json::Str(v) => write_js_string(out, v),
        Json::Num(v) => write_js_number(out, *v),
        Json::Bool(v) => out.push_str(if *v { "true" } else { "false" }),
        Json::Arr(items) => {
            out.push('[');
            for (n, item) in items.iter().enumerate() {
                if n > 0 {
                    out.push(',');
                }
                write_json(out, item);
            }
            out.push(']');
        }
        Json::Obj(fields) => {
            out.push('{');
            for (n, (key, item)) in fields.iter().enumerate() {
                if n > 0 {
                    out.push(',');
                }
                write_js_string(out, key);
                out.push(':');
                write_json(out, item);
            }
            out.push('}');
        }
    }
}

/// A string as `JSON.stringify` writes it: `"` and `\` escaped, the control characters as
/// `\b \f \n \r \t` or `\u00xx`, everything else (non-ASCII included) as is.
fn write_js_string(out: &mut String, v: &str) {
    out.push('"');
    for c in v.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\u{8}' => out.push_str("\\b"),
            '\u{c}' => out.push_str("\\f"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if c < ' ' => out.push_str(&format!("\\u{:04x}", u32::from(c))),
            c => out.push(c),
        }
    }
    out.push('"');
}

/// A number as `JSON.stringify` writes it: ECMAScript `Number::toString` (the shortest
/// digits that round-trip, plain decimal for 1e-7 < |x| < 1e21, exponent form otherwise),
/// `-0` as `0`, and non-finite values as `null`.
fn write_js_number(out: &mut String, x: f64) {
    if !x.is_finite() {
        out.push_str("null");
        return;
    }
    if x == 0.0 {
        out.push('0');
        return;
    }
    if x < 0.0 {
        out.push('-');
    }
    // Rust's `{:e}` gives the same shortest round-trip digits: `d[.ddd]e<exp>`.
    let sci = format!("{:e}", x.abs());
    let (mantissa, exp) = sci
        .split_once('e')
        .expect("`{:e}` always writes an exponent");
    let exp: i64 = exp.parse().expect("`{:e}` writes a decimal exponent");
    let digits: String = mantissa.chars().filter(|c| *c != '.').collect();
    // In the terms of the specification: the value is 0.<digits> x 10^n, k digits.
    let k = digits.len() as i64;
    let n = exp + 1;
    if k <= n && n <= 21 {
        out.push_str(&digits);
        out.extend(std::iter::repeat_n('0', (n - k) as usize));
    } else if 0 < n && n <= 21 {
        out.push_str(&digits[..n as usize]);
        out.push('.');
        out.push_str(&digits[n as usize..]);
    } else if -6 < n && n <= 0 {
        out.push_str("0.");
        out.extend(std::iter::repeat_n('0', (-n) as usize));
        out.push_str(&digits);
    } else {
        out.push_str(&digits[..1]);
        if k > 1 {
            out.push('.');
            out.push_str(&digits[1..]);
        }
        out.push_str(&format!(
            "e{}{}",
            if n > 0 { '+' } else { '-' },
            (n - 1).abs()
        ));
    }
}

/// The serde_json value of a generated value; integral numbers become JSON integers, as
/// parsing the JavaScript output would make them.
fn to_value(value: Json) -> Value {
    match value {
        Json::Str(v) => Value::String(v),
        Json::Bool(v) => Value::Bool(v),
        Json::Num(v) if v.fract() == 0.0 && v.abs() < 9_007_199_254_740_992.0 => {
            Value::Number(Number::from(v as i64))
        }
        Json::Num(v) => Number::from_f64(v).map_or(Value::Null, Value::Number),
        Json::Arr(items) => Value::Array(items.into_iter().map(to_value).collect()),
        Json::Obj(fields) => Value::Object(
            fields
                .into_iter()
                .map(|(key, item)| (key.to_owned(), to_value(item)))
                .collect(),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn js_number(x: f64) -> String {
        let mut out = String::new();
        write_js_number(&mut out, x);
        out
    }

    #[test]
    fn numbers_print_as_javascript_does() {
        let cases = [
            (0.0, "0"),
            (-0.0, "0"),
            (1.0, "1"),
            (-54.109132, "-54.109132"),
            (78.44, "78.44"),
            (100.0, "100"),
            (0.1 + 0.2, "0.30000000000000004"),
            (0.000001, "0.000001"),
            (0.0000001, "1e-7"),
            (1.5e-9, "1.5e-9"),
            (123456789012345680000.0, "123456789012345680000"),
            (1e21, "1e+21"),
            (1.25e22, "1.25e+22"),
            (f64::NAN, "null"),
            (f64::INFINITY, "null"),
        ];
        for (x, want) in cases {
            assert_eq!(js_number(x), want, "{x:e}");
        }
    }

    #[test]
    fn math_round_matches_javascript() {
        assert_eq!(js_round(2.5), 3.0);
        assert_eq!(js_round(-2.5), -2.0);
        assert_eq!(js_round(-2.6), -3.0);
        assert_eq!(js_round(0.49999999999999994), 0.0);
        assert!(js_round(-0.4).is_sign_negative());
        assert_eq!(js_round(4503599627370497.0), 4503599627370497.0);
    }

    #[test]
    fn to_int32_is_modulo_2_pow_32_of_the_exact_double() {
        assert_eq!(to_uint32(-1.0), u32::MAX);
        assert_eq!(to_uint32(4294967296.0 + 5.0), 5);
        assert_eq!(to_uint32(-4294967297.0), u32::MAX);
        assert_eq!(to_uint32(1.9), 1);
        assert_eq!(to_uint32(-1.9), u32::MAX);
        // 0xFFFFFFFF * 0x9E3779B1 rounds in doubles; the low bits come from the rounded value.
        let product = f64::from(u32::MAX) * f64::from(0x9E37_79B1_u32);
        assert_eq!(product, 11400714780173437000.0);
        assert_eq!(to_uint32(product), 0x61C8_8800);
        assert_eq!(to_uint32(f64::MAX), 0);
        assert_eq!(to_uint32(f64::NAN), 0);
    }

    #[test]
    fn iso_strings_match_javascript() {
        assert_eq!(iso_string(JAN_1_2015_MS), "2015-01-01T00:00:00.000Z");
        assert_eq!(iso_string(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(iso_string(951_782_400_000), "2000-02-29T00:00:00.000Z");
        assert_eq!(iso_string(-1), "1969-12-31T23:59:59.999Z");
        assert_eq!(
            iso_string(253_402_300_800_000),
            "+010000-01-01T00:00:00.000Z"
        );
        assert_eq!(
            iso_string(-62_198_755_200_000),
            "-000001-01-01T00:00:00.000Z"
        );
    }

    #[test]
    fn strings_escape_as_json_stringify() {
        let mut out = String::new();
        write_js_string(&mut out, "a\"b\\c\n\u{1}é\u{2028}/");
        assert_eq!(out, "\"a\\\"b\\\\c\\n\\u0001é\u{2028}/\"");
    }

    #[test]
    fn words_split_as_javascript() {
        assert_eq!(words().len(), 46);
        assert_eq!(words()[0], "lorem");
        assert_eq!(words()[45], "pariatur");
    }

    #[test]
    fn make_doc_agrees_with_make_doc_json() {
        for i in [0, 1, 77, 4_000_000_000] {
            let (id, body) = make_doc(i, 1, "user");
            let parsed: Value = serde_json::from_str(&make_doc_json(i, 1, "user")).unwrap();
            let mut parsed = match parsed {
                Value::Object(map) => map,
                other => panic!("not an object: {other}"),
            };
            assert_eq!(parsed.remove("_id"), Some(Value::String(id)));
            assert_eq!(parsed, body);
        }
    }
}
