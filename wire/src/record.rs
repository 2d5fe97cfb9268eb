//! The tap record stream: what `dsproxy-device` tells its readers, and what readers may ask
//! of it. docs/wire-format.md is the prose version of this file; keep them in step.
//!
//! Every record is a frame: an 8-byte header — `kind: u16 LE`, `flags: u16 LE` (reserved,
//! sent as 0, ignored), `len: u32 LE` — followed by `len` bytes of payload. All integers are
//! little-endian. A decoder never allocates more than [`MAX_PAYLOAD`] bytes for one record,
//! and rejects unknown kinds, oversize lengths and payloads that are too short or too long
//! for their kind.

use thiserror::Error;

/// The protocol version the Hello record carries. Readers refuse a different version.
/// Version 2 added NOTICE.
pub const PROTOCOL_VERSION: u16 = 2;
/// The magic at the start of a Hello payload, so a reader attached to the wrong socket says so.
pub const MAGIC: [u8; 4] = *b"DSPX";
/// Bytes in a frame header.
pub const HEADER_LEN: usize = 8;
/// The largest payload a frame may carry. A PCM record carries at most one guest buffer, and
/// the device splits larger ones, so this also bounds what a hostile peer can make us allocate.
pub const MAX_PAYLOAD: u32 = 1 << 20;
/// The most PCM bytes one `Pcm` record carries (the payload limit less the record's fields).
pub const MAX_PCM_CHUNK: usize = MAX_PAYLOAD as usize - PCM_FIXED_LEN;
/// The most names, streams, controls or values a single record may list.
pub const MAX_ITEMS: u32 = 4096;
/// The most values a control element has: a virtio-snd `virtio_snd_ctl_value` holds 128, as
/// does an ALSA integer control. A HELLO's [`ControlDesc::count`] is the peer's word and may
/// say anything; readers size what they keep per control by this instead.
pub const MAX_CONTROL_VALUES: usize = 128;
/// The longest string (a device or control name) in bytes.
pub const MAX_NAME: usize = 255;
/// The longest notice text in bytes.
pub const MAX_NOTICE: usize = 2048;

const PCM_FIXED_LEN: usize = 4 + 8 + 8;
/// Bytes of one stream entry in a Hello: id u32, direction u8, channels_min u8,
/// channels_max u8, pad u8, formats u64, rates u64.
pub const HELLO_STREAM_LEN: usize = 4 + 1 + 1 + 1 + 1 + 8 + 8;
/// Bytes of one control entry in a Hello when its name is empty: id, index, role, ctype,
/// count (u32 each), min, max, step (u64 each), db_min, db_step (u32 each), then the name as
/// a length byte and that many bytes.
pub const HELLO_CONTROL_MIN_LEN: usize = 5 * 4 + 3 * 8 + 2 * 4 + 1;

/// Record kinds. 0x00xx travel from the device to readers, 0x01xx from readers to the device.
pub mod kind {
    pub const HELLO: u16 = 0x0001;
    pub const PARAMS: u16 = 0x0002;
    pub const PREPARE: u16 = 0x0003;
    pub const START: u16 = 0x0004;
    pub const STOP: u16 = 0x0005;
    pub const RELEASE: u16 = 0x0006;
    pub const PCM: u16 = 0x0007;
    pub const CONTROL: u16 = 0x0008;
    pub const XRUN: u16 = 0x0009;
    pub const GAP: u16 = 0x000a;
    pub const SNAPSHOT_END: u16 = 0x000b;
    pub const FRONTEND: u16 = 0x000c;
    pub const NOTICE: u16 = 0x000d;

    pub const SUBSCRIBE: u16 = 0x0101;
    pub const SET_CONTROL: u16 = 0x0102;
    pub const INJECT: u16 = 0x0103;
}

/// Stream direction, as virtio-snd numbers it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Direction {
    Output = 0,
    Input = 1,
}

/// What a reader is told about one PCM stream of the card.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamDesc {
    pub id: u32,
    pub direction: Direction,
    pub channels_min: u8,
    pub channels_max: u8,
    /// virtio-snd format mask (bit n = format code n).
    pub formats: u64,
    /// virtio-snd rate mask (bit n = rate code n).
    pub rates: u64,
}

/// What a reader is told about one control element (a mixer control).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ControlDesc {
    pub id: u32,
    /// ALSA-style name, e.g. "Master Playback Volume".
    pub name: String,
    /// ALSA control index (the output/input stream number for per-stream controls).
    pub index: u32,
    /// virtio-snd role: 0 undefined, 1 volume, 2 mute, 3 gain.
    pub role: u32,
    /// virtio-snd type: 0 boolean, 1 integer, 2 integer64, 3 enumerated.
    pub ctype: u32,
    /// Number of values (channels).
    pub count: u32,
    pub min: i64,
    pub max: i64,
    pub step: i64,
    /// dB scale of an INTEGER control in 1/100 dB: the value `min` is `db_min` and each step
    /// adds `db_step`. Both 0 when the control has no dB scale.
    pub db_min: i32,
    pub db_step: i32,
}

/// The first record on every connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hello {
    pub version: u16,
    /// The device's clock (ns since the daemon started) when it said hello.
    pub time_ns: u64,
    pub name: String,
    pub jacks: u32,
    pub chmaps: u32,
    pub streams: Vec<StreamDesc>,
    pub controls: Vec<ControlDesc>,
}

/// A stream's parameters as the guest set them (VIRTIO_SND_R_PCM_SET_PARAMS): the OSS
/// SPEED/SETFMT/CHANNELS/SETFRAGMENT equivalents.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Params {
    pub stream: u32,
    pub buffer_bytes: u32,
    pub period_bytes: u32,
    pub features: u32,
    pub channels: u8,
    /// virtio-snd format code (see [`crate::format::FORMATS`]).
    pub format: u8,
    /// virtio-snd rate code (see [`crate::format::RATES`]).
    pub rate: u8,
}

/// How serious a [`Record::Notice`] is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NoticeLevel {
    Info = 0,
    Warning = 1,
    /// Something is set up wrong and the guest will not get sound (or a mixer) until it is
    /// fixed.
    Error = 2,
}

impl NoticeLevel {
    pub fn name(self) -> &'static str {
        match self {
            NoticeLevel::Info => "info",
            NoticeLevel::Warning => "warning",
            NoticeLevel::Error => "error",
        }
    }
}

/// Who changed a control.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ControlOrigin {
    /// The current value, sent in a snapshot.
    Initial = 0,
    /// The guest wrote it (VIRTIO_SND_R_CTL_WRITE).
    Guest = 1,
    /// A reader set it (SetControl).
    Reader = 2,
}

/// Subscribe flag: live mode — the device never waits for this reader; what it cannot take in
/// time is dropped and reported to it as a `Gap`.
pub const SUB_LIVE: u32 = 1 << 0;
/// Subscribe flag: ask the device to complete guest buffers as soon as the readers have taken
/// them (faster-than-real-time capture) for as long as this reader is attached.
pub const SUB_NO_PACING: u32 = 1 << 1;

/// One record of the tap protocol.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Record {
    Hello(Hello),
    Params(Params),
    Prepare {
        stream: u32,
        time_ns: u64,
    },
    Start {
        stream: u32,
        time_ns: u64,
    },
    /// The guest stopped the stream. `drained` is true when every buffer the guest queued had
    /// been played (an OSS SYNC/close); otherwise `discarded_bytes` were returned unplayed, as
    /// real hardware drops what is still in its ring on RESET/HALT.
    Stop {
        stream: u32,
        time_ns: u64,
        drained: bool,
        discarded_bytes: u64,
    },
    Release {
        stream: u32,
        time_ns: u64,
    },
    /// PCM bytes the card played (output) at `time_ns`; `offset` counts bytes since the
    /// stream's last PREPARE.
    Pcm {
        stream: u32,
        offset: u64,
        time_ns: u64,
        data: Vec<u8>,
    },
    Control {
        id: u32,
        origin: ControlOrigin,
        values: Vec<i64>,
    },
    /// The card's clock ran with no buffer (output underrun) or no room (input overrun) for
    /// `duration_ns`.
    Xrun {
        stream: u32,
        time_ns: u64,
        duration_ns: u64,
    },
    /// `bytes` of this stream starting at `offset` were not delivered to this reader (live
    /// mode, the reader fell behind). The audio itself was played; only this copy lacks it.
    Gap {
        stream: u32,
        offset: u64,
        bytes: u64,
        time_ns: u64,
    },
    /// The end of the replay of the current state that follows a Subscribe.
    SnapshotEnd,
    /// The VMM (QEMU) connected to or went away from the device.
    Frontend {
        connected: bool,
        time_ns: u64,
    },
    /// Something the device wants the people running readers to know, in a sentence (a QEMU
    /// line that cannot work with this card, say). Readers print it.
    Notice {
        time_ns: u64,
        level: NoticeLevel,
        text: String,
    },
    Subscribe {
        flags: u32,
        /// Bit n selects stream n; 0 selects every stream.
        streams: u64,
    },
    SetControl {
        id: u32,
        values: Vec<i64>,
    },
    /// Audio for an input stream: the guest reads it from its capture device.
    Inject {
        stream: u32,
        data: Vec<u8>,
    },
}

impl Record {
    pub fn kind(&self) -> u16 {
        match self {
            Record::Hello(_) => kind::HELLO,
            Record::Params(_) => kind::PARAMS,
            Record::Prepare { .. } => kind::PREPARE,
            Record::Start { .. } => kind::START,
            Record::Stop { .. } => kind::STOP,
            Record::Release { .. } => kind::RELEASE,
            Record::Pcm { .. } => kind::PCM,
            Record::Control { .. } => kind::CONTROL,
            Record::Xrun { .. } => kind::XRUN,
            Record::Gap { .. } => kind::GAP,
            Record::SnapshotEnd => kind::SNAPSHOT_END,
            Record::Frontend { .. } => kind::FRONTEND,
            Record::Notice { .. } => kind::NOTICE,
            Record::Subscribe { .. } => kind::SUBSCRIBE,
            Record::SetControl { .. } => kind::SET_CONTROL,
            Record::Inject { .. } => kind::INJECT,
        }
    }

    /// The PCM stream the record is about, or `None` for card-wide records (hello, controls,
    /// snapshot end, frontend, subscribe).
    pub fn stream(&self) -> Option<u32> {
        match self {
            Record::Params(p) => Some(p.stream),
            Record::Prepare { stream, .. }
            | Record::Start { stream, .. }
            | Record::Stop { stream, .. }
            | Record::Release { stream, .. }
            | Record::Pcm { stream, .. }
            | Record::Xrun { stream, .. }
            | Record::Gap { stream, .. }
            | Record::Inject { stream, .. } => Some(*stream),
            Record::Hello(_)
            | Record::Control { .. }
            | Record::SnapshotEnd
            | Record::Frontend { .. }
            | Record::Notice { .. }
            | Record::Subscribe { .. }
            | Record::SetControl { .. } => None,
        }
    }

    /// The short name used in logs (`dsproxy-host-reader -i`).
    pub fn kind_name(&self) -> &'static str {
        kind_name(self.kind())
    }

    /// Appends the framed record to `out`. Fails only if the record cannot be represented
    /// (a payload over [`MAX_PAYLOAD`], too many items, a name over [`MAX_NAME`]).
    pub fn encode(&self, out: &mut Vec<u8>) -> Result<(), WireError> {
        let start = out.len();
        out.extend_from_slice(&self.kind().to_le_bytes());
        out.extend_from_slice(&0u16.to_le_bytes());
        out.extend_from_slice(&0u32.to_le_bytes());
        let res = self.encode_payload(out);
        if let Err(e) = res {
            out.truncate(start);
            return Err(e);
        }
        let len = out.len() - start - HEADER_LEN;
        if len > MAX_PAYLOAD as usize {
            out.truncate(start);
            return Err(WireError::TooLong(len as u64));
        }
        out[start + 4..start + 8].copy_from_slice(&(len as u32).to_le_bytes());
        Ok(())
    }

    /// The framed record as a new buffer.
    pub fn to_bytes(&self) -> Result<Vec<u8>, WireError> {
        let mut v = Vec::new();
        self.encode(&mut v)?;
        Ok(v)
    }

    fn encode_payload(&self, o: &mut Vec<u8>) -> Result<(), WireError> {
        match self {
            Record::Hello(h) => {
                o.extend_from_slice(&MAGIC);
                put_u16(o, h.version);
                put_u16(o, 0);
                put_u64(o, h.time_ns);
                put_str(o, &h.name)?;
                put_u32(o, h.jacks);
                put_u32(o, h.chmaps);
                put_count(o, h.streams.len())?;
                for s in &h.streams {
                    let at = o.len();
                    put_u32(o, s.id);
                    o.push(s.direction as u8);
                    o.push(s.channels_min);
                    o.push(s.channels_max);
                    o.push(0);
                    put_u64(o, s.formats);
                    put_u64(o, s.rates);
                    debug_assert_eq!(o.len() - at, HELLO_STREAM_LEN);
                }
                put_count(o, h.controls.len())?;
                for c in &h.controls {
                    let at = o.len();
                    put_u32(o, c.id);
                    put_u32(o, c.index);
                    put_u32(o, c.role);
                    put_u32(o, c.ctype);
                    put_u32(o, c.count);
                    put_u64(o, c.min as u64);
                    put_u64(o, c.max as u64);
                    put_u64(o, c.step as u64);
                    put_u32(o, c.db_min as u32);
                    put_u32(o, c.db_step as u32);
                    put_str(o, &c.name)?;
                    debug_assert_eq!(o.len() - at, HELLO_CONTROL_MIN_LEN + c.name.len());
                }
            }
            Record::Params(p) => {
                put_u32(o, p.stream);
                put_u32(o, p.buffer_bytes);
                put_u32(o, p.period_bytes);
                put_u32(o, p.features);
                o.extend_from_slice(&[p.channels, p.format, p.rate, 0]);
            }
            Record::Prepare { stream, time_ns }
            | Record::Start { stream, time_ns }
            | Record::Release { stream, time_ns } => {
                put_u32(o, *stream);
                put_u64(o, *time_ns);
            }
            Record::Stop {
                stream,
                time_ns,
                drained,
                discarded_bytes,
            } => {
                put_u32(o, *stream);
                put_u64(o, *time_ns);
                put_u64(o, *discarded_bytes);
                o.push(*drained as u8);
            }
            Record::Pcm {
                stream,
                offset,
                time_ns,
                data,
            } => {
                if data.len() > MAX_PCM_CHUNK {
                    return Err(WireError::TooLong(data.len() as u64));
                }
                encode_pcm_fields(o, *stream, *offset, *time_ns);
                o.extend_from_slice(data);
            }
            Record::Control { id, origin, values } => {
                put_u32(o, *id);
                o.push(*origin as u8);
                put_count(o, values.len())?;
                for v in values {
                    put_u64(o, *v as u64);
                }
            }
            Record::Xrun {
                stream,
                time_ns,
                duration_ns,
            } => {
                put_u32(o, *stream);
                put_u64(o, *time_ns);
                put_u64(o, *duration_ns);
            }
            Record::Gap {
                stream,
                offset,
                bytes,
                time_ns,
            } => {
                put_u32(o, *stream);
                put_u64(o, *offset);
                put_u64(o, *bytes);
                put_u64(o, *time_ns);
            }
            Record::SnapshotEnd => {}
            Record::Frontend { connected, time_ns } => {
                o.push(*connected as u8);
                put_u64(o, *time_ns);
            }
            Record::Notice {
                time_ns,
                level,
                text,
            } => {
                if text.len() > MAX_NOTICE {
                    return Err(WireError::TooLong(text.len() as u64));
                }
                put_u64(o, *time_ns);
                o.push(*level as u8);
                put_u16(o, text.len() as u16);
                o.extend_from_slice(text.as_bytes());
            }
            Record::Subscribe { flags, streams } => {
                put_u32(o, *flags);
                put_u64(o, *streams);
            }
            Record::SetControl { id, values } => {
                put_u32(o, *id);
                put_count(o, values.len())?;
                for v in values {
                    put_u64(o, *v as u64);
                }
            }
            Record::Inject { stream, data } => {
                if data.len() > MAX_PAYLOAD as usize - 4 {
                    return Err(WireError::TooLong(data.len() as u64));
                }
                put_u32(o, *stream);
                o.extend_from_slice(data);
            }
        }
        Ok(())
    }
}

/// Writes the header and fixed fields of a `Pcm` record carrying `data_len` bytes, so a
/// caller can append the audio straight from guest memory without building a `Record`.
pub fn encode_pcm_header(
    out: &mut Vec<u8>,
    stream: u32,
    offset: u64,
    time_ns: u64,
    data_len: usize,
) -> Result<(), WireError> {
    if data_len > MAX_PCM_CHUNK {
        return Err(WireError::TooLong(data_len as u64));
    }
    put_u16(out, kind::PCM);
    put_u16(out, 0);
    put_u32(out, (PCM_FIXED_LEN + data_len) as u32);
    encode_pcm_fields(out, stream, offset, time_ns);
    Ok(())
}

fn encode_pcm_fields(o: &mut Vec<u8>, stream: u32, offset: u64, time_ns: u64) {
    put_u32(o, stream);
    put_u64(o, offset);
    put_u64(o, time_ns);
}

/// The name of a record kind, for logs.
pub fn kind_name(k: u16) -> &'static str {
    match k {
        kind::HELLO => "HELLO",
        kind::PARAMS => "PARAMS",
        kind::PREPARE => "PREPARE",
        kind::START => "START",
        kind::STOP => "STOP",
        kind::RELEASE => "RELEASE",
        kind::PCM => "PCM",
        kind::CONTROL => "CONTROL",
        kind::XRUN => "XRUN",
        kind::GAP => "GAP",
        kind::SNAPSHOT_END => "SNAPSHOT_END",
        kind::FRONTEND => "FRONTEND",
        kind::NOTICE => "NOTICE",
        kind::SUBSCRIBE => "SUBSCRIBE",
        kind::SET_CONTROL => "SET_CONTROL",
        kind::INJECT => "INJECT",
        _ => "UNKNOWN",
    }
}

/// Why a record could not be encoded or decoded.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum WireError {
    #[error("record payload of {0} bytes exceeds the limit of {MAX_PAYLOAD}")]
    TooLong(u64),
    #[error("unknown record kind 0x{0:04x}")]
    UnknownKind(u16),
    #[error("{kind} record truncated: payload of {len} bytes is too short")]
    Truncated { kind: &'static str, len: usize },
    #[error("{kind} record has {extra} unexpected trailing bytes")]
    Trailing { kind: &'static str, extra: usize },
    #[error("{what} count {count} is over the limit or does not fit the payload")]
    BadCount { what: &'static str, count: u32 },
    #[error("bad value in {kind} record: {why}")]
    BadValue {
        kind: &'static str,
        why: &'static str,
    },
    #[error("not a dsproxy tap (bad magic in hello)")]
    BadMagic,
    #[error("tap protocol version {0} is not supported (this build speaks {PROTOCOL_VERSION})")]
    Version(u16),
}

/// A validated frame header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FrameHeader {
    pub kind: u16,
    pub len: u32,
}

impl FrameHeader {
    /// Parses and validates a header: the kind must be known and the length within limits,
    /// so the caller may allocate `len` bytes safely.
    pub fn parse(h: &[u8; HEADER_LEN]) -> Result<FrameHeader, WireError> {
        let kind = u16::from_le_bytes([h[0], h[1]]);
        let len = u32::from_le_bytes([h[4], h[5], h[6], h[7]]);
        if kind_name(kind) == "UNKNOWN" {
            return Err(WireError::UnknownKind(kind));
        }
        if len > MAX_PAYLOAD {
            return Err(WireError::TooLong(len as u64));
        }
        Ok(FrameHeader { kind, len })
    }

    /// Whether `buf` begins with a whole frame (header and payload), or with a header that
    /// does not parse: either way, reading the next record from it needs no more bytes. A
    /// reader that batches what it has already received asks this before it would block.
    pub fn frame_ready(buf: &[u8]) -> bool {
        let Some(h) = buf.first_chunk::<HEADER_LEN>() else {
            return false;
        };
        match FrameHeader::parse(h) {
            Ok(h) => buf.len() - HEADER_LEN >= h.len as usize,
            Err(_) => true,
        }
    }
}

/// Decodes one record from the front of `buf`. Returns `Ok(None)` when `buf` holds only part
/// of a frame, and the record with the bytes it used otherwise.
pub fn decode(buf: &[u8]) -> Result<Option<(Record, usize)>, WireError> {
    let Some(hdr) = buf.get(..HEADER_LEN) else {
        return Ok(None);
    };
    let hdr = FrameHeader::parse(hdr.try_into().expect("slice of HEADER_LEN"))?;
    let total = HEADER_LEN + hdr.len as usize;
    let Some(payload) = buf.get(HEADER_LEN..total) else {
        return Ok(None);
    };
    Ok(Some((decode_payload(hdr.kind, payload)?, total)))
}

/// Decodes the payload of a frame whose header said `kind`.
pub fn decode_payload(k: u16, payload: &[u8]) -> Result<Record, WireError> {
    let name = kind_name(k);
    let mut c = Cursor {
        buf: payload,
        pos: 0,
        kind: name,
    };
    let rec = match k {
        kind::HELLO => Record::Hello(decode_hello(&mut c)?),
        kind::PARAMS => {
            let stream = c.u32()?;
            let buffer_bytes = c.u32()?;
            let period_bytes = c.u32()?;
            let features = c.u32()?;
            let channels = c.u8()?;
            let format = c.u8()?;
            let rate = c.u8()?;
            let _pad = c.u8()?;
            Record::Params(Params {
                stream,
                buffer_bytes,
                period_bytes,
                features,
                channels,
                format,
                rate,
            })
        }
        kind::PREPARE | kind::START | kind::RELEASE => {
            let stream = c.u32()?;
            let time_ns = c.u64()?;
            match k {
                kind::PREPARE => Record::Prepare { stream, time_ns },
                kind::START => Record::Start { stream, time_ns },
                _ => Record::Release { stream, time_ns },
            }
        }
        kind::STOP => {
            let stream = c.u32()?;
            let time_ns = c.u64()?;
            let discarded_bytes = c.u64()?;
            let drained = c.bool()?;
            Record::Stop {
                stream,
                time_ns,
                drained,
                discarded_bytes,
            }
        }
        kind::PCM => {
            let stream = c.u32()?;
            let offset = c.u64()?;
            let time_ns = c.u64()?;
            let data = c.rest().to_vec();
            Record::Pcm {
                stream,
                offset,
                time_ns,
                data,
            }
        }
        kind::CONTROL => {
            let id = c.u32()?;
            let origin = match c.u8()? {
                0 => ControlOrigin::Initial,
                1 => ControlOrigin::Guest,
                2 => ControlOrigin::Reader,
                _ => return Err(c.bad("control origin")),
            };
            let values = c.values()?;
            Record::Control { id, origin, values }
        }
        kind::XRUN => Record::Xrun {
            stream: c.u32()?,
            time_ns: c.u64()?,
            duration_ns: c.u64()?,
        },
        kind::GAP => Record::Gap {
            stream: c.u32()?,
            offset: c.u64()?,
            bytes: c.u64()?,
            time_ns: c.u64()?,
        },
        kind::SNAPSHOT_END => Record::SnapshotEnd,
        kind::FRONTEND => Record::Frontend {
            connected: c.bool()?,
            time_ns: c.u64()?,
        },
        kind::NOTICE => {
            let time_ns = c.u64()?;
            let level = match c.u8()? {
                0 => NoticeLevel::Info,
                1 => NoticeLevel::Warning,
                2 => NoticeLevel::Error,
                _ => return Err(c.bad("notice level")),
            };
            let n = c.u16()? as usize;
            if n > MAX_NOTICE {
                return Err(c.bad("notice text over the limit"));
            }
            let b = c.take(n)?;
            let text = std::str::from_utf8(b)
                .map(str::to_owned)
                .map_err(|_| c.bad("notice text is not UTF-8"))?;
            Record::Notice {
                time_ns,
                level,
                text,
            }
        }
        kind::SUBSCRIBE => Record::Subscribe {
            flags: c.u32()?,
            streams: c.u64()?,
        },
        kind::SET_CONTROL => {
            let id = c.u32()?;
            let values = c.values()?;
            Record::SetControl { id, values }
        }
        kind::INJECT => {
            let stream = c.u32()?;
            let data = c.rest().to_vec();
            Record::Inject { stream, data }
        }
        other => return Err(WireError::UnknownKind(other)),
    };
    c.finish()?;
    Ok(rec)
}

/// The Hello payload: magic, version, the card's streams and controls.
fn decode_hello(c: &mut Cursor<'_>) -> Result<Hello, WireError> {
    if c.take(4)? != MAGIC {
        return Err(WireError::BadMagic);
    }
    let version = c.u16()?;
    if version != PROTOCOL_VERSION {
        return Err(WireError::Version(version));
    }
    let _reserved = c.u16()?;
    let time_ns = c.u64()?;
    let name = c.string()?;
    let jacks = c.u32()?;
    let chmaps = c.u32()?;
    let n = c.count("stream", HELLO_STREAM_LEN)?;
    let mut streams = Vec::with_capacity(n);
    for _ in 0..n {
        let id = c.u32()?;
        let direction = match c.u8()? {
            0 => Direction::Output,
            1 => Direction::Input,
            _ => return Err(c.bad("stream direction")),
        };
        let channels_min = c.u8()?;
        let channels_max = c.u8()?;
        let _pad = c.u8()?;
        let formats = c.u64()?;
        let rates = c.u64()?;
        streams.push(StreamDesc {
            id,
            direction,
            channels_min,
            channels_max,
            formats,
            rates,
        });
    }
    let n = c.count("control", HELLO_CONTROL_MIN_LEN)?;
    let mut controls = Vec::with_capacity(n);
    for _ in 0..n {
        let id = c.u32()?;
        let index = c.u32()?;
        let role = c.u32()?;
        let ctype = c.u32()?;
        let count = c.u32()?;
        let min = c.u64()? as i64;
        let max = c.u64()? as i64;
        let step = c.u64()? as i64;
        let db_min = c.u32()? as i32;
        let db_step = c.u32()? as i32;
        let name = c.string()?;
        controls.push(ControlDesc {
            id,
            name,
            index,
            role,
            ctype,
            count,
            min,
            max,
            step,
            db_min,
            db_step,
        });
    }
    Ok(Hello {
        version,
        time_ns,
        name,
        jacks,
        chmaps,
        streams,
        controls,
    })
}

struct Cursor<'a> {
    buf: &'a [u8],
    pos: usize,
    kind: &'static str,
}

impl<'a> Cursor<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], WireError> {
        let end = self.pos.checked_add(n).filter(|&e| e <= self.buf.len());
        match end {
            Some(end) => {
                let s = &self.buf[self.pos..end];
                self.pos = end;
                Ok(s)
            }
            None => Err(WireError::Truncated {
                kind: self.kind,
                len: self.buf.len(),
            }),
        }
    }
    fn u8(&mut self) -> Result<u8, WireError> {
        Ok(self.take(1)?[0])
    }
    fn bool(&mut self) -> Result<bool, WireError> {
        match self.u8()? {
            0 => Ok(false),
            1 => Ok(true),
            _ => Err(self.bad("boolean is neither 0 nor 1")),
        }
    }
    fn u16(&mut self) -> Result<u16, WireError> {
        let b = self.take(2)?;
        Ok(u16::from_le_bytes([b[0], b[1]]))
    }
    fn u32(&mut self) -> Result<u32, WireError> {
        let b = self.take(4)?;
        Ok(u32::from_le_bytes(b.try_into().expect("4 bytes")))
    }
    fn u64(&mut self) -> Result<u64, WireError> {
        let b = self.take(8)?;
        Ok(u64::from_le_bytes(b.try_into().expect("8 bytes")))
    }
    fn string(&mut self) -> Result<String, WireError> {
        let n = self.u8()? as usize;
        let b = self.take(n)?;
        std::str::from_utf8(b)
            .map(str::to_owned)
            .map_err(|_| self.bad("name is not UTF-8"))
    }
    /// A count of items each at least `min_size` bytes: checked against the limit and the
    /// bytes left, so a hostile count cannot make us reserve memory the payload cannot fill.
    fn count(&mut self, what: &'static str, min_size: usize) -> Result<usize, WireError> {
        let n = self.u32()?;
        let left = self.buf.len() - self.pos;
        if n > MAX_ITEMS || (n as usize).saturating_mul(min_size) > left {
            return Err(WireError::BadCount { what, count: n });
        }
        Ok(n as usize)
    }
    fn values(&mut self) -> Result<Vec<i64>, WireError> {
        let n = self.count("value", 8)?;
        (0..n).map(|_| self.u64().map(|v| v as i64)).collect()
    }
    fn rest(&mut self) -> &'a [u8] {
        let s = &self.buf[self.pos..];
        self.pos = self.buf.len();
        s
    }
    fn bad(&self, why: &'static str) -> WireError {
        WireError::BadValue {
            kind: self.kind,
            why,
        }
    }
    fn finish(&self) -> Result<(), WireError> {
        match self.buf.len() - self.pos {
            0 => Ok(()),
            extra => Err(WireError::Trailing {
                kind: self.kind,
                extra,
            }),
        }
    }
}

fn put_u16(o: &mut Vec<u8>, v: u16) {
    o.extend_from_slice(&v.to_le_bytes());
}
fn put_u32(o: &mut Vec<u8>, v: u32) {
    o.extend_from_slice(&v.to_le_bytes());
}
fn put_u64(o: &mut Vec<u8>, v: u64) {
    o.extend_from_slice(&v.to_le_bytes());
}
fn put_str(o: &mut Vec<u8>, s: &str) -> Result<(), WireError> {
    if s.len() > MAX_NAME {
        return Err(WireError::TooLong(s.len() as u64));
    }
    o.push(s.len() as u8);
    o.extend_from_slice(s.as_bytes());
    Ok(())
}
fn put_count(o: &mut Vec<u8>, n: usize) -> Result<(), WireError> {
    if n > MAX_ITEMS as usize {
        return Err(WireError::BadCount {
            what: "item",
            count: n.min(u32::MAX as usize) as u32,
        });
    }
    put_u32(o, n as u32);
    Ok(())
}
