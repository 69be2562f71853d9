//! Property tests: varints against an oracle, properties round trips, and arbitrary or
//! mutated input to `Connection::receive`, which must return errors and never panic.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use bytes::Bytes;
use ferrolite_protocol::blip::{
    flags, varint, Config, Connection, FrameHeader, Message, MessageType, Properties,
};
use integer_encoding::VarInt;
use proptest::prelude::*;

fn small_config() -> Config {
    let mut config = Config::default();
    config.max_frame_size = 200;
    config.small_frame_size = 100;
    config.max_message_size = 1 << 20;
    config.max_frame_inflate = 1 << 20;
    config
}

/// A message to generate: (compressed, urgent, no_reply, properties, body).
fn message_strategy() -> impl Strategy<Value = Message> {
    (
        any::<bool>(),
        any::<bool>(),
        any::<bool>(),
        prop::collection::vec(("[a-zA-Z-]{0,12}", "[^\u{0}]{0,20}"), 0..4),
        prop_oneof![
            prop::collection::vec(any::<u8>(), 0..600),
            (0usize..3000).prop_map(|n| b"{\"key\":\"value\"}".repeat(n / 15 + 1)[..n].to_vec()),
        ],
    )
        .prop_map(|(compressed, urgent, no_reply, props, body)| {
            let mut m = Message::request("p");
            for (k, v) in props {
                m.properties.set(k, v);
            }
            m.compressed = compressed;
            m.urgent = urgent;
            m.no_reply = no_reply;
            m.body = Bytes::from(body);
            m
        })
}

/// Sends `messages` through a fresh connection; returns the frames.
fn frames_of(messages: &[Message], config: Config) -> Vec<Vec<u8>> {
    let mut a = Connection::new(config);
    for m in messages {
        a.send(m.clone()).unwrap();
    }
    std::iter::from_fn(|| a.next_frame()).collect()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn varint_matches_oracle_on_values(value in any::<u64>()) {
        let mut ours = Vec::new();
        varint::write(value, &mut ours);
        prop_assert_eq!(&ours, &value.encode_var_vec());
        prop_assert_eq!(ours.len(), varint::encoded_len(value));
        prop_assert_eq!(varint::read(&ours).ok(), Some((value, ours.len())));
        prop_assert_eq!(u64::decode_var(&ours), Some((value, ours.len())));
    }

    #[test]
    fn varint_matches_oracle_on_bytes(bytes in prop::collection::vec(any::<u8>(), 0..14)) {
        prop_assert_eq!(varint::read(&bytes).ok(), u64::decode_var(&bytes));
    }

    #[test]
    fn properties_round_trip(pairs in prop::collection::vec(("[^\u{0}]{0,10}", "[^\u{0}]{0,10}"), 0..6)) {
        let props: Properties = pairs.into_iter().collect();
        let mut encoded = Vec::new();
        props.encode_prefixed(&mut encoded).unwrap();
        let (len, prefix) = varint::read(&encoded).unwrap();
        prop_assert_eq!(len as usize, props.encoded_len());
        prop_assert_eq!(Properties::decode(&encoded[prefix..]).unwrap(), props);
    }

    #[test]
    fn arbitrary_bytes_never_panic(frame in prop::collection::vec(any::<u8>(), 0..400)) {
        let mut b = Connection::new(small_config());
        let _ = b.receive(&frame);
        let _ = b.next_frame();
    }

    #[test]
    fn arbitrary_frame_sequences_never_panic(
        frames in prop::collection::vec(
            (0u64..4, any::<u8>(), prop::collection::vec(any::<u8>(), 0..60)),
            0..20,
        )
    ) {
        // Plausible headers (small numbers, any flags) make the assembler's paths reachable.
        let mut b = Connection::new(small_config());
        b.send(Message::request("so responses #1 are expected")).unwrap();
        for (number, frame_flags, data) in frames {
            let mut frame = Vec::new();
            varint::write(number, &mut frame);
            frame.push(frame_flags);
            frame.extend_from_slice(&data);
            if b.receive(&frame).is_err() {
                prop_assert!(b.has_failed());
                break;
            }
            while b.next_frame().is_some() {}
        }
    }

    #[test]
    fn messages_round_trip(messages in prop::collection::vec(message_strategy(), 1..8), max in 64usize..3000) {
        let mut config = small_config();
        config.max_frame_size = max;
        let frames = frames_of(&messages, config);
        let mut b = Connection::new(small_config());
        let mut got = Vec::new();
        for frame in &frames {
            prop_assert!(frame.len() <= max.max(64));
            got.extend(b.receive(frame).unwrap());
        }
        got.sort_by_key(|m| m.number);
        prop_assert_eq!(got.len(), messages.len());
        for (i, (mut got, sent)) in got.into_iter().zip(&messages).enumerate() {
            prop_assert_eq!(got.number, i as u64 + 1);
            prop_assert_eq!(got.kind, MessageType::Request);
            got.number = 0;
            prop_assert_eq!(&got, sent);
        }
    }

    #[test]
    fn mutated_frames_never_panic(
        messages in prop::collection::vec(message_strategy(), 1..5),
        which in any::<prop::sample::Index>(),
        at in any::<prop::sample::Index>(),
        mutation in 0u8..4,
        byte in any::<u8>(),
    ) {
        let mut frames = frames_of(&messages, small_config());
        let index = which.index(frames.len());
        let frame = &mut frames[index];
        let header = FrameHeader::parse(frame).unwrap();
        let compressed = header.has(flags::COMPRESSED);
        let position = at.index(frame.len());
        let mut changed_data = false;
        match mutation {
            0 => {
                let flip = if byte == 0 { 1 } else { byte };
                frame[position] ^= flip;
                changed_data = position >= header.len;
            }
            1 => frame.truncate(position),
            2 => frame.insert(position, byte),
            _ => { frame.remove(position); }
        }
        let mut b = Connection::new(small_config());
        let mut failed = false;
        for frame in &frames {
            if b.receive(frame).is_err() {
                failed = true;
                break;
            }
        }
        // Any change to the data or checksum of an uncompressed frame breaks the CRC.
        // (A compressed frame can absorb a flipped padding bit.)
        if changed_data && !compressed {
            prop_assert!(failed);
        }
    }
}
