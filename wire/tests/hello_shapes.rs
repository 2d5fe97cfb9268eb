//! Every shape of card a Hello can describe decodes to what was encoded: a card without
//! controls (`dsproxy-device --no-controls`), many streams, no jacks, controls with empty and
//! long names. The decoder's size checks use the same layout constants as the encoder, so a
//! legal Hello is never refused as "over the limit".

use dsproxy_wire::record::{
    ControlDesc, Direction, Hello, StreamDesc, HELLO_CONTROL_MIN_LEN, HELLO_STREAM_LEN, MAX_ITEMS,
    MAX_NAME, PROTOCOL_VERSION,
};
use dsproxy_wire::{decode, Record};

fn stream(id: u32) -> StreamDesc {
    StreamDesc {
        id,
        direction: if id.is_multiple_of(2) {
            Direction::Output
        } else {
            Direction::Input
        },
        channels_min: 1,
        channels_max: 8,
        formats: 0x3f_fff,
        rates: 0x1fff,
    }
}

fn control(id: u32, name: &str) -> ControlDesc {
    ControlDesc {
        id,
        name: name.into(),
        index: id,
        role: 1,
        ctype: 1,
        count: 2,
        min: i64::MIN,
        max: i64::MAX,
        step: 1,
        db_min: -9600,
        db_step: 1,
    }
}

fn hello(jacks: u32, streams: Vec<StreamDesc>, controls: Vec<ControlDesc>) -> Hello {
    Hello {
        version: PROTOCOL_VERSION,
        time_ns: 7,
        name: "dsproxy".into(),
        jacks,
        chmaps: streams.len() as u32,
        streams,
        controls,
    }
}

fn roundtrip(h: Hello) {
    let rec = Record::Hello(h);
    let bytes = rec.to_bytes().expect("encode");
    match decode(&bytes) {
        Ok(Some((back, used))) => {
            assert_eq!(used, bytes.len());
            assert_eq!(back, rec);
        }
        other => panic!("{rec:?} did not decode: {other:?}"),
    }
}

#[test]
fn a_card_without_controls() {
    // What `dsproxy-device --no-controls` sends: 1 output + 1 input, no controls. The
    // decoder once wanted 28 bytes per stream (the encoder writes 24) and refused it.
    roundtrip(hello(2, vec![stream(0), stream(1)], vec![]));
    roundtrip(hello(0, vec![stream(0)], vec![]));
}

#[test]
fn many_streams_no_jacks() {
    roundtrip(hello(0, (0..64).map(stream).collect(), vec![]));
    roundtrip(hello(
        0,
        (0..64).map(stream).collect(),
        vec![control(0, "PCM Playback Volume")],
    ));
}

#[test]
fn no_streams_at_all() {
    roundtrip(hello(0, vec![], vec![]));
}

#[test]
fn controls_with_the_shortest_and_longest_names() {
    roundtrip(hello(2, vec![stream(0)], vec![control(0, "")]));
    roundtrip(hello(
        2,
        vec![stream(0)],
        (0..40).map(|i| control(i, "")).collect(),
    ));
    let long = "x".repeat(MAX_NAME);
    roundtrip(hello(
        2,
        vec![stream(0)],
        vec![control(0, &long), control(1, "")],
    ));
}

#[test]
fn the_item_limit_itself() {
    roundtrip(hello(
        0,
        vec![],
        (0..MAX_ITEMS).map(|i| control(i, "")).collect(),
    ));
}

#[test]
fn the_layout_constants_are_what_the_encoder_writes() {
    let base = Record::Hello(hello(0, vec![], vec![]))
        .to_bytes()
        .unwrap()
        .len();
    let one_stream = Record::Hello(hello(0, vec![stream(0)], vec![]))
        .to_bytes()
        .unwrap()
        .len();
    assert_eq!(one_stream - base, HELLO_STREAM_LEN);
    let one_control = Record::Hello(hello(0, vec![], vec![control(0, "")]))
        .to_bytes()
        .unwrap()
        .len();
    assert_eq!(one_control - base, HELLO_CONTROL_MIN_LEN);
}

#[test]
fn a_count_the_payload_cannot_hold_is_still_refused() {
    let rec = Record::Hello(hello(0, vec![stream(0), stream(1)], vec![]));
    let mut bytes = rec.to_bytes().unwrap();
    // Claim three streams where two are.
    let count_at = bytes.len() - 4 - 2 * HELLO_STREAM_LEN - 4;
    bytes[count_at..count_at + 4].copy_from_slice(&3u32.to_le_bytes());
    assert!(decode(&bytes).is_err());
}
