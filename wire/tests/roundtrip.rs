//! Every record survives encode → decode, and hostile bytes never panic or over-allocate.

use dsproxy_wire::record::{
    self, ControlDesc, ControlOrigin, Direction, Hello, Params, StreamDesc, HEADER_LEN, MAX_PAYLOAD,
};
use dsproxy_wire::{decode, Record, RecordReader, WireError};

fn samples() -> Vec<Record> {
    vec![
        Record::Hello(Hello {
            version: record::PROTOCOL_VERSION,
            time_ns: 42,
            name: "dsproxy".into(),
            jacks: 2,
            chmaps: 2,
            streams: vec![
                StreamDesc {
                    id: 0,
                    direction: Direction::Output,
                    channels_min: 1,
                    channels_max: 8,
                    formats: 0xfff,
                    rates: 0x1ffe,
                },
                StreamDesc {
                    id: 1,
                    direction: Direction::Input,
                    channels_min: 1,
                    channels_max: 2,
                    formats: 0x20,
                    rates: 0x80,
                },
            ],
            controls: vec![ControlDesc {
                id: 0,
                name: "Master Playback Volume".into(),
                index: 0,
                role: 1,
                ctype: 1,
                count: 2,
                min: 0,
                max: 100,
                step: 1,
                db_min: -5000,
                db_step: 50,
            }],
        }),
        Record::Params(Params {
            stream: 0,
            buffer_bytes: 16384,
            period_bytes: 4096,
            features: 0,
            channels: 2,
            format: 5,
            rate: 6,
        }),
        Record::Prepare {
            stream: 0,
            time_ns: 1,
        },
        Record::Start {
            stream: 0,
            time_ns: 2,
        },
        Record::Stop {
            stream: 0,
            time_ns: 3,
            drained: true,
            discarded_bytes: 0,
        },
        Record::Release {
            stream: 0,
            time_ns: 4,
        },
        Record::Pcm {
            stream: 0,
            offset: 4096,
            time_ns: 5,
            data: (0..=255u8).collect(),
        },
        Record::Control {
            id: 3,
            origin: ControlOrigin::Guest,
            values: vec![75, -75],
        },
        Record::Xrun {
            stream: 1,
            time_ns: 6,
            duration_ns: 7,
        },
        Record::Gap {
            stream: 0,
            offset: 8,
            bytes: 9,
            time_ns: 10,
        },
        Record::SnapshotEnd,
        Record::Frontend {
            connected: true,
            time_ns: 11,
        },
        Record::Subscribe {
            flags: record::SUB_LIVE,
            streams: 0,
        },
        Record::SetControl {
            id: 1,
            values: vec![0],
        },
        Record::Inject {
            stream: 1,
            data: vec![1, 2, 3, 4],
        },
    ]
}

#[test]
fn every_record_round_trips() {
    let mut all = Vec::new();
    for r in samples() {
        let bytes = r.to_bytes().unwrap();
        let (back, used) = decode(&bytes).unwrap().unwrap();
        assert_eq!(back, r);
        assert_eq!(used, bytes.len());
        // Every strict prefix is "need more", never an error or a wrong record.
        for cut in 0..bytes.len() {
            assert_eq!(decode(&bytes[..cut]).unwrap(), None, "{r:?} cut at {cut}");
        }
        all.extend_from_slice(&bytes);
    }
    let mut rr = RecordReader::new(&all[..]);
    for r in samples() {
        assert_eq!(rr.next_record().unwrap().unwrap(), r);
    }
    assert!(rr.next_record().unwrap().is_none());
}

#[test]
fn pcm_header_helper_matches_record() {
    let data = vec![7u8; 1000];
    let r = Record::Pcm {
        stream: 2,
        offset: 99,
        time_ns: 123,
        data: data.clone(),
    };
    let mut v = Vec::new();
    record::encode_pcm_header(&mut v, 2, 99, 123, data.len()).unwrap();
    v.extend_from_slice(&data);
    assert_eq!(v, r.to_bytes().unwrap());
}

#[test]
fn oversize_and_unknown_are_rejected_before_allocation() {
    let mut h = vec![0x07, 0x00, 0, 0];
    h.extend_from_slice(&(MAX_PAYLOAD + 1).to_le_bytes());
    assert_eq!(decode(&h), Err(WireError::TooLong(MAX_PAYLOAD as u64 + 1)));
    let mut rr = RecordReader::new(&h[..]);
    assert!(rr.next_record().is_err());

    let unknown = [0x77, 0x77, 0, 0, 0, 0, 0, 0];
    assert_eq!(decode(&unknown), Err(WireError::UnknownKind(0x7777)));

    // A hello claiming 4 billion streams in a tiny payload.
    let mut bytes = samples()[0].to_bytes().unwrap();
    let count_at = HEADER_LEN + 4 + 2 + 2 + 8 + 1 + "dsproxy".len() + 4 + 4;
    bytes[count_at..count_at + 4].copy_from_slice(&u32::MAX.to_le_bytes());
    assert!(matches!(
        decode(&bytes),
        Err(WireError::BadCount { what: "stream", .. })
    ));
}

#[test]
fn trailing_and_truncated_payloads_are_errors() {
    let mut bytes = Record::Start {
        stream: 1,
        time_ns: 2,
    }
    .to_bytes()
    .unwrap();
    bytes.push(0);
    bytes[4] += 1;
    assert!(matches!(decode(&bytes), Err(WireError::Trailing { .. })));
    let short = [0x04, 0x00, 0, 0, 2, 0, 0, 0, 1, 2];
    assert!(matches!(decode(&short), Err(WireError::Truncated { .. })));
    // A stream that ends inside a record.
    let full = Record::SnapshotEnd.to_bytes().unwrap();
    let mut rr = RecordReader::new(&full[..5]);
    assert!(rr.next_record().is_err());
}

/// A small deterministic fuzz loop: random bytes and mutated valid records never panic,
/// and whatever decodes re-encodes to the same bytes.
#[test]
fn random_and_mutated_input_never_panics() {
    let mut seed = 0x9e37_79b9_7f4a_7c15u64;
    let mut rnd = move || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    let valid: Vec<Vec<u8>> = samples().iter().map(|r| r.to_bytes().unwrap()).collect();
    for i in 0..20_000 {
        let mut buf = if i % 2 == 0 {
            valid[(rnd() as usize) % valid.len()].clone()
        } else {
            let n = (rnd() % 64) as usize;
            (0..n).map(|_| rnd() as u8).collect()
        };
        if !buf.is_empty() {
            for _ in 0..(rnd() % 4) {
                let at = (rnd() as usize) % buf.len();
                buf[at] = rnd() as u8;
            }
        }
        if let Ok(Some((rec, used))) = decode(&buf) {
            let again = rec.to_bytes().unwrap();
            let (rec2, _) = decode(&again).unwrap().unwrap();
            assert_eq!(rec, rec2);
            assert!(used <= buf.len());
        }
        let mut rr = RecordReader::new(&buf[..]);
        while let Ok(Some(_)) = rr.next_record() {}
    }
}

#[test]
fn stream_of_a_record() {
    for r in samples() {
        let expected = match &r {
            Record::Params(p) => Some(p.stream),
            Record::Hello(_)
            | Record::Control { .. }
            | Record::SnapshotEnd
            | Record::Frontend { .. }
            | Record::Subscribe { .. }
            | Record::SetControl { .. } => None,
            _ => r.stream(),
        };
        assert_eq!(r.stream(), expected);
    }
    let gap = Record::Gap {
        stream: 7,
        offset: 0,
        bytes: 1,
        time_ns: 0,
    };
    assert_eq!(gap.stream(), Some(7));
    assert_eq!(
        dsproxy_wire::format::afmt::name(dsproxy_wire::format::afmt::S16_LE),
        Some("AFMT_S16_LE")
    );
    assert_eq!(dsproxy_wire::format::afmt::name(0x4000_0000), None);
}

/// The structure-aware fuzz target (wire/fuzz `roundtrip`) on stable: arbitrary valid records
/// from pseudo-random bytes must encode, and decode to themselves.
#[test]
fn arbitrary_valid_records_round_trip() {
    use arbitrary::{Arbitrary, Unstructured};
    use dsproxy_wire::arbitrary::ValidRecord;
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut kinds = std::collections::HashSet::new();
    for _ in 0..3000 {
        let buf: Vec<u8> = (0..512)
            .map(|_| {
                x = x
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                (x >> 56) as u8
            })
            .collect();
        let mut u = Unstructured::new(&buf);
        let Ok(ValidRecord(rec)) = ValidRecord::arbitrary(&mut u) else {
            continue;
        };
        kinds.insert(rec.kind());
        let bytes = rec
            .to_bytes()
            .unwrap_or_else(|e| panic!("{rec:?} does not encode: {e}"));
        let (back, used) = decode(&bytes)
            .unwrap_or_else(|e| panic!("{rec:?} does not decode: {e}"))
            .expect("complete");
        assert_eq!(used, bytes.len());
        assert_eq!(back, rec);
    }
    assert_eq!(
        kinds.len(),
        16,
        "every record kind was generated: {kinds:?}"
    );
}

#[test]
fn frame_ready_says_whether_the_next_record_is_whole_in_memory() {
    use dsproxy_wire::record::FrameHeader;
    let mut two = Vec::new();
    for r in samples().into_iter().take(2) {
        two.extend(r.to_bytes().unwrap());
    }
    let first = samples()[0].to_bytes().unwrap().len();
    assert!(FrameHeader::frame_ready(&two));
    assert!(FrameHeader::frame_ready(&two[..first]));
    assert!(!FrameHeader::frame_ready(&two[..first - 1]));
    assert!(!FrameHeader::frame_ready(&two[..HEADER_LEN - 1]));
    assert!(!FrameHeader::frame_ready(&[]));
    // The second record alone, cut anywhere: ready only when whole.
    let second = &two[first..];
    for cut in 0..second.len() {
        assert!(!FrameHeader::frame_ready(&second[..cut]), "cut at {cut}");
    }
    assert!(FrameHeader::frame_ready(second));
    // A header that does not parse needs no more bytes: the reader reports it at once.
    let mut bad = two[..HEADER_LEN].to_vec();
    bad[0] = 0xee;
    bad[1] = 0xee;
    assert!(FrameHeader::frame_ready(&bad));
}
