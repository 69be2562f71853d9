//! Real Couchbase Lite 3.1 traffic (`fixtures/litecore-3.1`): every binary WebSocket message
//! of every session is decoded, and the result is compared with the annotations of the
//! matching `.txt` file.
//!
//! Each direction is received by its own [`Connection`]: `client` receives the server's frames
//! (s2c), `server` the client's (c2s). When one side receives a complete request, the other
//! side *sends* the same request, so its outgoing-request table matches the real sender's and
//! the response that later comes back is accepted by the production check (a response to no
//! request of ours is an error). The frames of those re-sent requests are discarded; the ACK
//! frames each side owes are collected and compared with the ACKs the real peer sent.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use ferrolite_protocol::blip::{
    flags, Config, Connection, FrameHeader, FrameType, Message, MessageType,
};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Dir {
    C2s,
    S2c,
}

/// What the `.txt` annotation shows of a body.
#[derive(Debug)]
enum Body {
    Empty,
    Json { len: usize, text: String, cut: bool },
    Text { len: usize, text: String },
    Binary { len: usize, hex_prefix: String },
}

/// One complete message as annotated in the `.txt`.
#[derive(Debug)]
struct Annotated {
    dir: Dir,
    number: u64,
    kind: String,
    flags: u8,
    properties: Vec<(String, String)>,
    body: Body,
}

/// One ACK as annotated in the `.txt`.
#[derive(Debug, PartialEq)]
struct AnnotatedAck {
    dir: Dir,
    number: u64,
    on_response: bool,
    bytes: u64,
}

fn fixtures_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fixtures/litecore-3.1")
}

fn hex(s: &str) -> Vec<u8> {
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
        .collect()
}

fn to_hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Parses the frame blocks of a `.txt` annotation file.
fn parse_annotations(text: &str) -> (Vec<Annotated>, Vec<AnnotatedAck>) {
    let mut messages = Vec::new();
    let mut acks = Vec::new();
    let mut lines = text.lines().peekable();
    while let Some(line) = lines.next() {
        if !line.starts_with('[') || !line.contains("ms] ") || !line.contains(" flags=0x") {
            continue;
        }
        let rest = line.split_once("ms] ").unwrap().1;
        let mut words = rest.split_whitespace();
        let dir = match words.next().unwrap() {
            "C->S" => Dir::C2s,
            "S->C" => Dir::S2c,
            other => panic!("direction {other}"),
        };
        let number: u64 = words.next().unwrap()[1..].parse().unwrap();
        let kind = words.next().unwrap().to_string();
        let flags = u8::from_str_radix(&words.next().unwrap()["flags=0x".len()..], 16).unwrap();
        let mut block = Vec::new();
        while let Some(next) = lines.peek() {
            if !next.starts_with("    ") {
                break;
            }
            block.push(lines.next().unwrap()[4..].to_string());
        }
        if kind.starts_with("ACK") {
            let bytes = rest.rsplit("= ").next().unwrap().trim().parse().unwrap();
            acks.push(AnnotatedAck {
                dir,
                number,
                on_response: kind == "ACKRES",
                bytes,
            });
            continue;
        }
        if block.iter().any(|l| l.starts_with("(partial message")) {
            continue;
        }
        let mut properties = Vec::new();
        let mut body = None;
        for l in block {
            if l == "(no properties)" {
                continue;
            }
            if let Some(shown) = l.strip_prefix("body: ") {
                body = Some(parse_body(shown));
                continue;
            }
            let (key, value) = l.split_once(": ").unwrap_or_else(|| {
                // "rev: " with an empty value loses nothing but its trailing space.
                (l.strip_suffix(':').unwrap(), "")
            });
            properties.push((key.to_string(), value.to_string()));
        }
        messages.push(Annotated {
            dir,
            number,
            kind,
            flags,
            properties,
            body: body.expect("a body line"),
        });
    }
    (messages, acks)
}

fn parse_body(shown: &str) -> Body {
    if shown == "(empty)" {
        return Body::Empty;
    }
    let len_of = |s: &str| -> usize {
        let inside = s.split_once('(').unwrap().1;
        let digits: String = inside
            .chars()
            .skip_while(|c| !c.is_ascii_digit())
            .take_while(char::is_ascii_digit)
            .collect();
        digits.parse().unwrap()
    };
    let (text, cut) = match shown.find(" ... [") {
        Some(at) if shown.ends_with("more characters not shown]") => (&shown[..at], true),
        _ => (shown, false),
    };
    let content = text.split_once(") ").map(|(_, c)| c).unwrap_or("");
    if shown.starts_with("JSON") {
        Body::Json {
            len: len_of(shown),
            text: content.to_string(),
            cut,
        }
    } else if shown.starts_with("TEXT") {
        Body::Text {
            len: len_of(shown),
            text: serde_json::from_str(content).unwrap(),
        }
    } else if shown.starts_with("(binary") {
        Body::Binary {
            len: len_of(shown),
            hex_prefix: content.strip_prefix("hex ").unwrap().to_string(),
        }
    } else {
        panic!("unknown body annotation {shown}")
    }
}

fn check_message(fixture: &str, expected: &Annotated, got: &Message) {
    let what = format!(
        "{fixture}: {:?} #{} {}",
        expected.dir, expected.number, expected.kind
    );
    assert_eq!(got.number, expected.number, "{what}");
    let kind = match got.kind {
        MessageType::Request => "REQ",
        MessageType::Response => "RES",
        MessageType::Error => "ERR",
    };
    assert_eq!(kind, expected.kind, "{what}");
    let mut message_flags = FrameType::of(got.kind).bits();
    for (set, bit) in [
        (got.urgent, flags::URGENT),
        (got.no_reply, flags::NO_REPLY),
        (got.compressed, flags::COMPRESSED),
    ] {
        if set {
            message_flags |= bit;
        }
    }
    assert_eq!(
        message_flags,
        expected.flags & !flags::MORE_COMING,
        "{what}"
    );
    let properties: Vec<(String, String)> = got
        .properties
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    assert_eq!(properties, expected.properties, "{what}");
    match &expected.body {
        Body::Empty => assert!(got.body.is_empty(), "{what}"),
        Body::Json { len, text, cut } => {
            assert_eq!(got.body.len(), *len, "{what}");
            if *cut {
                assert!(got.body.starts_with(text.as_bytes()), "{what}");
            } else {
                let want: serde_json::Value = serde_json::from_str(text).unwrap();
                let have: serde_json::Value = serde_json::from_slice(&got.body).unwrap();
                assert_eq!(have, want, "{what}");
            }
        }
        Body::Text { len, text } => {
            assert_eq!(got.body.len(), *len, "{what}");
            assert_eq!(&got.body[..], text.as_bytes(), "{what}");
        }
        Body::Binary { len, hex_prefix } => {
            assert_eq!(got.body.len(), *len, "{what}");
            assert!(to_hex(&got.body).starts_with(hex_prefix.as_str()), "{what}");
        }
    }
}

/// The outcome of replaying one fixture.
struct Replay {
    /// Complete messages, per receiving direction, in completion order.
    messages: HashMap<Dir, Vec<Message>>,
    /// ACK frames the real peers sent, per direction.
    real_acks: HashMap<Dir, Vec<Vec<u8>>>,
    /// ACK frames our connections produced, per direction they would travel.
    our_acks: HashMap<Dir, Vec<Vec<u8>>>,
    /// Binary frames per direction.
    frames: HashMap<Dir, u64>,
    client: Connection,
    server: Connection,
}

/// Sends every frame `conn` has, keeping the ACK frames (they would travel in `dir`).
fn drain(conn: &mut Connection, dir: Dir, our_acks: &mut HashMap<Dir, Vec<Vec<u8>>>) {
    while let Some(frame) = conn.next_frame() {
        if FrameHeader::parse(&frame).unwrap().frame_type().is_ack() {
            our_acks.entry(dir).or_default().push(frame);
        }
    }
}

fn replay(path: &Path) -> Replay {
    let text = std::fs::read_to_string(path).unwrap();
    let mut r = Replay {
        messages: HashMap::new(),
        real_acks: HashMap::new(),
        our_acks: HashMap::new(),
        frames: HashMap::new(),
        client: Connection::new(Config::default()),
        server: Connection::new(Config::default()),
    };
    for line in text.lines() {
        let record: serde_json::Value = serde_json::from_str(line).unwrap();
        if record["opcode"] != "binary" {
            continue;
        }
        let dir = match record["dir"].as_str().unwrap() {
            "c2s" => Dir::C2s,
            "s2c" => Dir::S2c,
            other => panic!("dir {other}"),
        };
        let frame = hex(record["hex"].as_str().unwrap());
        *r.frames.entry(dir).or_default() += 1;
        if FrameHeader::parse(&frame).unwrap().frame_type().is_ack() {
            r.real_acks.entry(dir).or_default().push(frame.clone());
        }
        // `receiver` receives this frame; `sender` stands for the side that sent it.
        let (receiver, sender, back) = match dir {
            Dir::C2s => (&mut r.server, &mut r.client, Dir::S2c),
            Dir::S2c => (&mut r.client, &mut r.server, Dir::C2s),
        };
        let received = receiver
            .receive(&frame)
            .unwrap_or_else(|e| panic!("{}: {dir:?} frame: {e}", path.display()));
        if let Some(message) = received {
            if message.kind == MessageType::Request {
                let number = sender.send(message.clone()).unwrap();
                assert_eq!(number, message.number, "requests numbered in order");
            }
            r.messages.entry(dir).or_default().push(message);
        }
        drain(receiver, back, &mut r.our_acks);
        drain(sender, dir, &mut r.our_acks);
    }
    r
}

fn jsonl_files() -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(fixtures_dir())
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "jsonl"))
        .collect();
    files.sort();
    assert!(files.len() >= 9, "fixtures found: {files:?}");
    files
}

#[test]
fn every_fixture_decodes_as_annotated() {
    let mut total_messages = 0;
    for path in jsonl_files() {
        let name = path.file_stem().unwrap().to_string_lossy().to_string();
        let r = replay(&path);
        let txt = std::fs::read_to_string(path.with_extension("txt")).unwrap();
        let (annotated, annotated_acks) = parse_annotations(&txt);

        for dir in [Dir::C2s, Dir::S2c] {
            let got = r.messages.get(&dir).map(Vec::as_slice).unwrap_or_default();
            let want: Vec<&Annotated> = annotated.iter().filter(|a| a.dir == dir).collect();
            assert_eq!(got.len(), want.len(), "{name} {dir:?}: message count");
            for (expected, message) in want.iter().zip(got) {
                check_message(&name, expected, message);
            }
            total_messages += got.len();

            // Our ACKs are byte for byte those the real peer sent.
            let real = r.real_acks.get(&dir).cloned().unwrap_or_default();
            let ours = r.our_acks.get(&dir).cloned().unwrap_or_default();
            assert_eq!(ours, real, "{name} {dir:?}: ACK frames");
            let annotated_count = annotated_acks.iter().filter(|a| a.dir == dir).count();
            assert_eq!(real.len(), annotated_count, "{name} {dir:?}: ACK count");
        }
        // Every frame was accepted (so every CRC verified); ACKs were recognised as such.
        let c2s_acks = r.real_acks.get(&Dir::C2s).map_or(0, Vec::len) as u64;
        let s2c_acks = r.real_acks.get(&Dir::S2c).map_or(0, Vec::len) as u64;
        let c2s = r.frames.get(&Dir::C2s).copied().unwrap_or(0);
        let s2c = r.frames.get(&Dir::S2c).copied().unwrap_or(0);
        assert_eq!(r.server.stats().frames_received, c2s, "{name}");
        assert_eq!(r.client.stats().frames_received, s2c, "{name}");
        assert_eq!(r.server.stats().acks_received, c2s_acks, "{name}");
        assert_eq!(r.client.stats().acks_received, s2c_acks, "{name}");
        assert!(!r.client.has_failed() && !r.server.has_failed());
        // Every request that wanted a response got one.
        assert!(
            r.client.awaiting_responses().is_empty(),
            "{name}: client awaits"
        );
        assert!(
            r.server.awaiting_responses().is_empty(),
            "{name}: server awaits"
        );
    }
    // The README counts 111 CRC-checked frames; messages are fewer (multi-frame ones).
    assert!(total_messages > 80, "{total_messages}");
}

#[test]
fn pull_basic_spot_checks() {
    let r = replay(&fixtures_dir().join("pull-basic.jsonl"));
    let c2s = &r.messages[&Dir::C2s];
    let first = &c2s[0];
    assert_eq!(first.kind, MessageType::Request);
    assert_eq!(first.number, 1);
    assert_eq!(first.profile(), Some("getCheckpoint"));
    let client = first.property("client").unwrap();
    assert!(client.starts_with("cp-") && client.len() == 31, "{client}");
    assert!(first.body.is_empty());

    let s2c = &r.messages[&Dir::S2c];
    // The missing checkpoint: ERR HTTP 404 answering request #1.
    assert_eq!(s2c[0].kind, MessageType::Error);
    assert_eq!(s2c[0].number, 1);
    assert_eq!(s2c[0].error(), Some(("HTTP", 404)));
    // The first `changes` is compressed and urgent; the caught-up one is urgent + no-reply.
    let changes: Vec<&Message> = s2c
        .iter()
        .filter(|m| m.profile() == Some("changes"))
        .collect();
    assert!(changes[0].compressed && changes[0].urgent && !changes[0].no_reply);
    assert!(changes[1].urgent && changes[1].no_reply && !changes[1].compressed);
    assert_eq!(&changes[1].body[..], b"[]");
    let rev = s2c.iter().find(|m| m.profile() == Some("rev")).unwrap();
    assert_eq!(rev.property("id"), Some("doc1"));
    assert_eq!(&rev.body[..], br#"{"name":"alpha","n":1}"#);
}

#[test]
fn pull_large_multi_frame_and_acks() {
    let r = replay(&fixtures_dir().join("pull-large.jsonl"));
    let s2c = &r.messages[&Dir::S2c];
    let rev = s2c
        .iter()
        .find(|m| m.property("id") == Some("bigdoc"))
        .unwrap();
    assert_eq!(rev.body.len(), 98_024);
    let doc: serde_json::Value = serde_json::from_slice(&rev.body).unwrap();
    assert_eq!(doc["items"].as_array().unwrap().len(), 2800);
    let blob = s2c
        .iter()
        .find(|m| m.kind == MessageType::Response && m.body.len() == 200_000)
        .unwrap();
    assert!(blob.compressed);

    let ours = &r.our_acks[&Dir::C2s];
    let decoded: Vec<(u64, FrameType, u64)> = ours
        .iter()
        .map(|f| {
            let h = FrameHeader::parse(f).unwrap();
            let (bytes, _) = ferrolite_protocol::blip::varint::read(&f[h.len..]).unwrap();
            (h.number, h.frame_type(), bytes)
        })
        .collect();
    assert_eq!(
        decoded,
        [
            (3, FrameType::AckRequest, 55_678),
            (3, FrameType::AckResponse, 65_508),
            (3, FrameType::AckResponse, 131_016),
            (3, FrameType::AckResponse, 196_524),
        ]
    );
}
