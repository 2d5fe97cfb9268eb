//! Valid records from arbitrary bytes, for structure-aware fuzzing: every [`Record`] this
//! builds is one the encoder accepts (names within [`MAX_NAME`], counts within [`MAX_ITEMS`],
//! payloads within [`MAX_PAYLOAD`]), so `decode(encode(r)) == r` must hold for all of them.
//! The cargo-fuzz target `roundtrip` (wire/fuzz) drives it with libFuzzer; the test
//! `wire/tests/roundtrip.rs` replays it on stable with pseudo-random bytes.

use arbitrary::{Arbitrary, Result, Unstructured};

use crate::record::{
    ControlDesc, ControlOrigin, Direction, Hello, NoticeLevel, Params, Record, StreamDesc,
    MAX_ITEMS, MAX_NAME, MAX_NOTICE, MAX_PAYLOAD, MAX_PCM_CHUNK, PROTOCOL_VERSION,
};

/// A record the encoder accepts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ValidRecord(pub Record);

/// Items per list: small mostly (fuzzing speed), up to the limit sometimes.
fn count(u: &mut Unstructured<'_>, max: u32) -> Result<usize> {
    Ok(if u.ratio(1, 16)? {
        u.int_in_range(0..=max)? as usize
    } else {
        u.int_in_range(0..=max.min(8))? as usize
    })
}

fn text(u: &mut Unstructured<'_>, max_bytes: usize) -> Result<String> {
    let mut s: String = u.arbitrary()?;
    // Cut at a char boundary within the byte limit.
    while s.len() > max_bytes {
        s.pop();
    }
    Ok(s)
}

fn bytes(u: &mut Unstructured<'_>, max: usize) -> Result<Vec<u8>> {
    let n = if u.ratio(1, 64)? {
        u.int_in_range(0..=max)?
    } else {
        u.int_in_range(0..=max.min(4096))?
    };
    let mut v = vec![0u8; n];
    // Whatever the input still holds; the rest stays zero (arbitrary's own convention).
    let avail = u.len().min(n);
    v[..avail].copy_from_slice(u.bytes(avail)?);
    Ok(v)
}

fn direction(u: &mut Unstructured<'_>) -> Result<Direction> {
    Ok(if u.arbitrary()? {
        Direction::Output
    } else {
        Direction::Input
    })
}

/// A HELLO the encoder accepts (for fuzzing a reader: the first record of a connection).
pub fn valid_hello(u: &mut Unstructured<'_>) -> Result<Hello> {
    let n = count(u, 64)?;
    let streams = (0..n)
        .map(|_| {
            Ok(StreamDesc {
                id: u.arbitrary()?,
                direction: direction(u)?,
                channels_min: u.arbitrary()?,
                channels_max: u.arbitrary()?,
                formats: u.arbitrary()?,
                rates: u.arbitrary()?,
            })
        })
        .collect::<Result<Vec<_>>>()?;
    let n = count(u, MAX_ITEMS)?;
    let controls = (0..n)
        .map(|_| {
            Ok(ControlDesc {
                id: u.arbitrary()?,
                name: text(u, MAX_NAME)?,
                index: u.arbitrary()?,
                role: u.arbitrary()?,
                ctype: u.arbitrary()?,
                count: u.arbitrary()?,
                min: u.arbitrary()?,
                max: u.arbitrary()?,
                step: u.arbitrary()?,
                db_min: u.arbitrary()?,
                db_step: u.arbitrary()?,
            })
        })
        .collect::<Result<Vec<_>>>()?;
    Ok(Hello {
        version: PROTOCOL_VERSION,
        time_ns: u.arbitrary()?,
        name: text(u, MAX_NAME)?,
        jacks: u.arbitrary()?,
        chmaps: u.arbitrary()?,
        streams,
        controls,
    })
}

fn values(u: &mut Unstructured<'_>) -> Result<Vec<i64>> {
    let n = count(u, MAX_ITEMS)?;
    (0..n).map(|_| u.arbitrary()).collect()
}

impl<'a> Arbitrary<'a> for ValidRecord {
    fn arbitrary(u: &mut Unstructured<'a>) -> Result<Self> {
        let stream: u32 = u.arbitrary()?;
        let time_ns: u64 = u.arbitrary()?;
        let rec = match u.int_in_range(0u8..=15)? {
            0 => Record::Hello(valid_hello(u)?),
            1 => Record::Params(Params {
                stream,
                buffer_bytes: u.arbitrary()?,
                period_bytes: u.arbitrary()?,
                features: u.arbitrary()?,
                channels: u.arbitrary()?,
                format: u.arbitrary()?,
                rate: u.arbitrary()?,
            }),
            2 => Record::Prepare { stream, time_ns },
            3 => Record::Start { stream, time_ns },
            4 => Record::Stop {
                stream,
                time_ns,
                drained: u.arbitrary()?,
                discarded_bytes: u.arbitrary()?,
            },
            5 => Record::Release { stream, time_ns },
            6 => Record::Pcm {
                stream,
                offset: u.arbitrary()?,
                time_ns,
                data: bytes(u, MAX_PCM_CHUNK)?,
            },
            7 => Record::Control {
                id: u.arbitrary()?,
                origin: match u.int_in_range(0u8..=2)? {
                    0 => ControlOrigin::Initial,
                    1 => ControlOrigin::Guest,
                    _ => ControlOrigin::Reader,
                },
                values: values(u)?,
            },
            8 => Record::Xrun {
                stream,
                time_ns,
                duration_ns: u.arbitrary()?,
            },
            9 => Record::Gap {
                stream,
                offset: u.arbitrary()?,
                bytes: u.arbitrary()?,
                time_ns,
            },
            10 => Record::SnapshotEnd,
            11 => Record::Frontend {
                connected: u.arbitrary()?,
                time_ns,
            },
            12 => Record::Notice {
                time_ns,
                level: match u.int_in_range(0u8..=2)? {
                    0 => NoticeLevel::Info,
                    1 => NoticeLevel::Warning,
                    _ => NoticeLevel::Error,
                },
                text: text(u, MAX_NOTICE)?,
            },
            13 => Record::Subscribe {
                flags: u.arbitrary()?,
                streams: u.arbitrary()?,
            },
            14 => Record::SetControl {
                id: u.arbitrary()?,
                values: values(u)?,
            },
            _ => Record::Inject {
                stream,
                data: bytes(u, MAX_PAYLOAD as usize - 4)?,
            },
        };
        Ok(ValidRecord(rec))
    }
}
