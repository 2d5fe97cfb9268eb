//! QEMU's voices as a card the session understands: each voice a stream, each listener call
//! the records the tap would send for the same thing.
//!
//! A voice is what QEMU's audio layer opens for a card's playback or capture channel
//! (`ac97.po`, an HDA stream, a virtio-sound stream). With `mixing-engine=off` every guest
//! format change closes the voice and opens a new one (Fini, then Init with a new id), and
//! several cards or channels have voices at once. So:
//! - a voice takes the lowest free stream of its direction (a new stream if none is free),
//!   and a voice that closes frees its stream for the next: one playback channel re-opened
//!   in a new format continues in the same stream, and its file gets a new segment;
//! - Init is PARAMS (format, rate, channels; QEMU does not see the guest's fragments, so
//!   they are 0), SetEnabled(true) is PREPARE + START, Write is PCM, SetEnabled(false) is a
//!   drained STOP, and a voice that stays disabled for [`RELEASE_AFTER`] — the guest closed
//!   the device — or is closed (Fini) is a RELEASE;
//! - SetVolume is a CONTROL of the stream's "PCM Playback Volume"/"Switch" (outputs) or
//!   "Capture Volume"/"Switch" (inputs), 0..255 per channel as QEMU has it.

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

use dsproxy_wire::record::{
    ControlDesc, ControlOrigin, Direction, Hello, Params, Record, StreamDesc, MAX_CONTROL_VALUES,
    PROTOCOL_VERSION,
};
use dsproxy_wire::{PcmFormat, PcmRate};

use crate::source::SourceEvent;

/// How long a voice may stay disabled before the reader takes it as closed. Longer than
/// the gap between an OSS program's SYNC and its next write, short enough for `--once`.
pub const RELEASE_AFTER: Duration = Duration::from_millis(500);

/// Linear volume range QEMU reports (per channel, 0..255).
const VOLUME_MAX: i64 = 255;

/// A voice's PCM format as QEMU describes it (AudioOutListener.Init's arguments).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PcmInfo {
    pub bits: u8,
    pub is_signed: bool,
    pub is_float: bool,
    pub freq: u32,
    pub nchannels: u8,
    pub bytes_per_frame: u32,
    pub bytes_per_second: u32,
    pub big_endian: bool,
}

impl PcmInfo {
    /// The virtio-snd format, when the table has one (QEMU's big-endian formats have none).
    pub fn format(&self) -> Option<PcmFormat> {
        let f = match (self.bits, self.is_float, self.is_signed, self.big_endian) {
            (8, false, false, _) => PcmFormat::U8,
            (8, false, true, _) => PcmFormat::S8,
            (16, false, true, false) => PcmFormat::S16,
            (16, false, false, false) => PcmFormat::U16,
            (32, false, true, false) => PcmFormat::S32,
            (32, false, false, false) => PcmFormat::from_code(18)?,
            (32, true, _, false) => PcmFormat::FLOAT,
            _ => return None,
        };
        Some(f)
    }

    /// The params a voice in this format has, or why it cannot be recorded.
    pub fn params(&self, stream: u32) -> Result<Params, String> {
        let format = self.format().ok_or_else(|| {
            format!(
                "{}-bit {}{} {} samples have no virtio-snd format",
                self.bits,
                if self.is_float {
                    "float"
                } else if self.is_signed {
                    "signed"
                } else {
                    "unsigned"
                },
                "",
                if self.big_endian {
                    "big-endian"
                } else {
                    "little-endian"
                },
            )
        })?;
        let rate = PcmRate::from_hz(self.freq)
            .ok_or_else(|| format!("{} Hz is not a virtio-snd rate", self.freq))?;
        let frame = format.sample_bytes().unwrap_or(0) * u32::from(self.nchannels);
        if self.nchannels == 0 || frame != self.bytes_per_frame {
            return Err(format!(
                "{} channels of {} in {}-byte frames do not add up",
                self.nchannels, format, self.bytes_per_frame
            ));
        }
        Ok(Params {
            stream,
            buffer_bytes: 0,
            period_bytes: 0,
            features: 0,
            channels: self.nchannels,
            format: format.code(),
            rate: rate.code(),
        })
    }
}

/// One stream of the card: the voice in it now, and what the session was told.
struct Slot {
    direction: Direction,
    /// The voice QEMU has in this stream now.
    voice: Option<u64>,
    params: Option<Params>,
    enabled: bool,
    /// RELEASE sent (or nothing opened yet): the next enable re-sends PARAMS.
    released: bool,
    /// Disabled at this time; released at RELEASE_AFTER unless enabled again.
    release_at: Option<Instant>,
    /// PCM bytes since the last PREPARE.
    offset: u64,
    volume: Option<Vec<i64>>,
    muted: Option<bool>,
    /// Why this voice cannot be recorded, until it is said (at its first enable or audio:
    /// a card's driver probes rates at load that nothing ever plays at).
    refused: Option<String>,
    refusal_said: bool,
}

/// QEMU's voices as streams, and the events each listener call becomes.
pub struct VoiceCard {
    name: String,
    start: Instant,
    slots: BTreeMap<u32, Slot>,
    descs: Vec<StreamDesc>,
    controls: Vec<ControlDesc>,
    voices: HashMap<(Direction, u64), u32>,
    /// Voices whose Write came before any Init: warned once each.
    unknown_warned: HashMap<u64, ()>,
}

impl VoiceCard {
    pub fn new(name: String) -> VoiceCard {
        VoiceCard {
            name,
            start: Instant::now(),
            slots: BTreeMap::new(),
            descs: Vec::new(),
            controls: Vec::new(),
            voices: HashMap::new(),
            unknown_warned: HashMap::new(),
        }
    }

    /// The card as it is now.
    pub fn hello(&self) -> Hello {
        Hello {
            version: PROTOCOL_VERSION,
            time_ns: self.now_ns(),
            name: self.name.clone(),
            jacks: 0,
            chmaps: 0,
            streams: self.descs.clone(),
            controls: self.controls.clone(),
        }
    }

    fn now_ns(&self) -> u64 {
        self.start.elapsed().as_nanos() as u64
    }

    /// The stream of a voice, if QEMU opened it.
    pub fn stream_of(&self, direction: Direction, voice: u64) -> Option<u32> {
        self.voices.get(&(direction, voice)).copied()
    }

    /// Params of a stream.
    pub fn params_of(&self, stream: u32) -> Option<Params> {
        self.slots.get(&stream).and_then(|s| s.params)
    }

    /// QEMU opened a voice (or told a new listener about one).
    pub fn init(&mut self, direction: Direction, voice: u64, info: PcmInfo) -> Vec<SourceEvent> {
        let mut out = Vec::new();
        let stream = match self.stream_of(direction, voice) {
            Some(s) => s,
            None => {
                let free = self
                    .slots
                    .iter()
                    .find(|(_, s)| s.direction == direction && s.voice.is_none())
                    .map(|(&id, _)| id);
                let id = match free {
                    Some(id) => id,
                    None => {
                        let id = self.add_stream(direction, &info);
                        out.push(SourceEvent::Card(self.hello()));
                        id
                    }
                };
                self.voices.insert((direction, voice), id);
                if let Some(slot) = self.slots.get_mut(&id) {
                    slot.voice = Some(voice);
                }
                id
            }
        };
        let Some(slot) = self.slots.get_mut(&stream) else {
            return out;
        };
        match info.params(stream) {
            Ok(p) => {
                slot.refused = None;
                if slot.params != Some(p) || slot.released {
                    slot.params = Some(p);
                    slot.released = false;
                    out.push(SourceEvent::Record(Record::Params(p)));
                }
            }
            Err(why) => {
                slot.refused = Some(why);
                slot.refusal_said = false;
                slot.params = None;
            }
        }
        out
    }

    /// Says once why a voice that is being used cannot be recorded.
    fn say_refusal(stream: u32, slot: &mut Slot) {
        if let (Some(why), false) = (&slot.refused, slot.refusal_said) {
            crate::console::note(&format!(
                "QEMU voice in stream {stream}: {why}; its audio is not recorded"
            ));
            slot.refusal_said = true;
        }
    }

    fn add_stream(&mut self, direction: Direction, info: &PcmInfo) -> u32 {
        let id = self.slots.len() as u32;
        let index = self
            .slots
            .values()
            .filter(|s| s.direction == direction)
            .count() as u32;
        let fmt = info.format().map_or(0, |f| 1u64 << f.code());
        let rate = PcmRate::from_hz(info.freq).map_or(0, |r| 1u64 << r.code());
        self.descs.push(StreamDesc {
            id,
            direction,
            channels_min: info.nchannels,
            channels_max: info.nchannels,
            formats: fmt,
            rates: rate,
        });
        let (volume, switch) = match direction {
            Direction::Output => ("PCM Playback Volume", "PCM Playback Switch"),
            Direction::Input => ("Capture Volume", "Capture Switch"),
        };
        let count = u32::from(info.nchannels.max(1));
        let ctl = |cid: u32, name: &str, role, ctype, count, max| ControlDesc {
            id: cid,
            name: name.into(),
            index,
            role,
            ctype,
            count,
            min: 0,
            max,
            step: 1,
            db_min: 0,
            db_step: 0,
        };
        self.controls
            .push(ctl(2 * id, volume, 1, 1, count, VOLUME_MAX));
        self.controls.push(ctl(2 * id + 1, switch, 2, 0, 1, 1));
        self.slots.insert(
            id,
            Slot {
                direction,
                voice: None,
                params: None,
                enabled: false,
                released: true,
                release_at: None,
                offset: 0,
                volume: None,
                muted: None,
                refused: None,
                refusal_said: false,
            },
        );
        id
    }

    /// QEMU closed a voice: its stream is released and free for the next voice.
    pub fn fini(&mut self, direction: Direction, voice: u64) -> Vec<SourceEvent> {
        let Some(stream) = self.voices.remove(&(direction, voice)) else {
            return Vec::new();
        };
        let now = self.now_ns();
        let mut out = Vec::new();
        if let Some(slot) = self.slots.get_mut(&stream) {
            if slot.enabled {
                out.push(stop(stream, now));
                slot.enabled = false;
            }
            if !slot.released {
                out.push(SourceEvent::Record(Record::Release {
                    stream,
                    time_ns: now,
                }));
                slot.released = true;
            }
            slot.release_at = None;
            slot.voice = None;
        }
        out
    }

    /// The guest started or stopped the voice.
    pub fn set_enabled(&mut self, direction: Direction, voice: u64, on: bool) -> Vec<SourceEvent> {
        let Some(stream) = self.stream_of(direction, voice) else {
            return Vec::new();
        };
        let now = self.now_ns();
        let mut out = Vec::new();
        let Some(slot) = self.slots.get_mut(&stream) else {
            return out;
        };
        if on {
            Self::say_refusal(stream, slot);
        }
        if on && !slot.enabled {
            if slot.released {
                if let Some(p) = slot.params {
                    out.push(SourceEvent::Record(Record::Params(p)));
                }
                slot.released = false;
            }
            slot.offset = 0;
            slot.enabled = true;
            slot.release_at = None;
            out.push(SourceEvent::Record(Record::Prepare {
                stream,
                time_ns: now,
            }));
            out.push(SourceEvent::Record(Record::Start {
                stream,
                time_ns: now,
            }));
        } else if !on && slot.enabled {
            slot.enabled = false;
            slot.release_at = Some(Instant::now() + RELEASE_AFTER);
            out.push(stop(stream, now));
        }
        out
    }

    /// The guest changed the voice's volume or mute.
    pub fn set_volume(
        &mut self,
        direction: Direction,
        voice: u64,
        mute: bool,
        volume: &[u8],
    ) -> Vec<SourceEvent> {
        let Some(stream) = self.stream_of(direction, voice) else {
            return Vec::new();
        };
        let Some(slot) = self.slots.get_mut(&stream) else {
            return Vec::new();
        };
        let mut out = Vec::new();
        let values: Vec<i64> = volume
            .iter()
            .take(MAX_CONTROL_VALUES)
            .map(|&v| v as i64)
            .collect();
        if !values.is_empty() && slot.volume.as_ref() != Some(&values) {
            slot.volume = Some(values.clone());
            out.push(SourceEvent::Record(Record::Control {
                id: 2 * stream,
                origin: ControlOrigin::Guest,
                values,
            }));
        }
        if slot.muted != Some(mute) {
            slot.muted = Some(mute);
            out.push(SourceEvent::Record(Record::Control {
                id: 2 * stream + 1,
                origin: ControlOrigin::Guest,
                values: vec![i64::from(!mute)],
            }));
        }
        out
    }

    /// Audio QEMU played on a voice.
    pub fn write(&mut self, voice: u64, data: Vec<u8>) -> Vec<SourceEvent> {
        let Some(stream) = self.stream_of(Direction::Output, voice) else {
            if self.unknown_warned.insert(voice, ()).is_none() {
                log::warn!("QEMU wrote audio for voice {voice:#x}, which it never opened; ignored");
            }
            return Vec::new();
        };
        let now = self.now_ns();
        let Some(slot) = self.slots.get_mut(&stream) else {
            return Vec::new();
        };
        if slot.params.is_none() {
            Self::say_refusal(stream, slot);
            return Vec::new();
        }
        let offset = slot.offset;
        slot.offset += data.len() as u64;
        vec![SourceEvent::Record(Record::Pcm {
            stream,
            offset,
            time_ns: now,
            data,
        })]
    }

    /// Releases the streams whose voices stayed disabled long enough: the guest closed them.
    pub fn tick(&mut self, now: Instant) -> Vec<SourceEvent> {
        let ns = self.now_ns();
        let mut out = Vec::new();
        for (&stream, slot) in self.slots.iter_mut() {
            if slot.release_at.is_some_and(|t| now >= t) {
                slot.release_at = None;
                if !slot.released {
                    slot.released = true;
                    out.push(SourceEvent::Record(Record::Release {
                        stream,
                        time_ns: ns,
                    }));
                }
            }
        }
        out
    }
}

fn stop(stream: u32, time_ns: u64) -> SourceEvent {
    SourceEvent::Record(Record::Stop {
        stream,
        time_ns,
        drained: true,
        discarded_bytes: 0,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s16(freq: u32, ch: u8) -> PcmInfo {
        PcmInfo {
            bits: 16,
            is_signed: true,
            is_float: false,
            freq,
            nchannels: ch,
            bytes_per_frame: 2 * ch as u32,
            bytes_per_second: 2 * ch as u32 * freq,
            big_endian: false,
        }
    }

    fn records(evs: Vec<SourceEvent>) -> Vec<Record> {
        evs.into_iter()
            .filter_map(|e| match e {
                SourceEvent::Record(r) => Some(r),
                _ => None,
            })
            .collect()
    }

    fn kinds(evs: &[SourceEvent]) -> Vec<&'static str> {
        evs.iter()
            .map(|e| match e {
                SourceEvent::Record(r) => r.kind_name(),
                SourceEvent::Records { .. } => "RECORDS",
                SourceEvent::Card(_) => "CARD",
                SourceEvent::Closed(_) => "CLOSED",
            })
            .collect()
    }

    #[test]
    fn formats_map_to_the_table_or_are_refused() {
        assert_eq!(s16(48000, 2).format(), Some(PcmFormat::S16));
        let p = s16(44100, 2).params(3).unwrap();
        assert_eq!(
            (p.stream, p.channels, p.format),
            (3, 2, PcmFormat::S16.code())
        );
        assert_eq!(PcmRate::from_code(p.rate).unwrap().hz(), 44100);
        let mut be = s16(48000, 2);
        be.big_endian = true;
        assert!(be.params(0).unwrap_err().contains("big-endian"));
        assert!(s16(24000, 2).params(0).unwrap_err().contains("24000 Hz"));
        let mut bad = s16(48000, 2);
        bad.bytes_per_frame = 6;
        assert!(bad.params(0).is_err());
        let f32i = PcmInfo {
            bits: 32,
            is_signed: true,
            is_float: true,
            ..s16(48000, 2)
        };
        assert_eq!(f32i.format(), Some(PcmFormat::FLOAT));
        let u8i = PcmInfo {
            bits: 8,
            is_signed: false,
            bytes_per_frame: 1,
            ..s16(8000, 1)
        };
        assert_eq!(u8i.params(0).unwrap().format, PcmFormat::U8.code());
    }

    #[test]
    fn a_playback_becomes_params_prepare_start_pcm_stop_release() {
        let mut c = VoiceCard::new("QEMU".into());
        let evs = c.init(Direction::Output, 0x10, s16(48000, 2));
        assert_eq!(kinds(&evs), ["CARD", "PARAMS"]);
        let SourceEvent::Card(h) = &evs[0] else {
            panic!()
        };
        assert_eq!(h.streams.len(), 1);
        assert_eq!(h.controls[0].name, "PCM Playback Volume");
        assert_eq!(h.controls[1].name, "PCM Playback Switch");
        assert_eq!(
            kinds(&c.set_enabled(Direction::Output, 0x10, true)),
            ["PREPARE", "START"]
        );
        let r = records(c.write(0x10, vec![1; 1920]));
        let r2 = records(c.write(0x10, vec![2; 1920]));
        assert!(matches!(
            r[0],
            Record::Pcm {
                stream: 0,
                offset: 0,
                ..
            }
        ));
        assert!(matches!(r2[0], Record::Pcm { offset: 1920, .. }));
        assert_eq!(
            kinds(&c.set_enabled(Direction::Output, 0x10, false)),
            ["STOP"]
        );
        assert!(c.tick(Instant::now()).is_empty());
        let later = Instant::now() + RELEASE_AFTER + Duration::from_millis(1);
        assert_eq!(kinds(&c.tick(later)), ["RELEASE"]);
        assert!(c.tick(later).is_empty());
        // Played again: the stream is opened anew, params first.
        assert_eq!(
            kinds(&c.set_enabled(Direction::Output, 0x10, true)),
            ["PARAMS", "PREPARE", "START"]
        );
        assert!(matches!(
            records(c.write(0x10, vec![1; 4]))[0],
            Record::Pcm { offset: 0, .. }
        ));
    }

    #[test]
    fn a_quick_restart_is_not_a_close() {
        let mut c = VoiceCard::new("QEMU".into());
        c.init(Direction::Output, 1, s16(48000, 2));
        c.set_enabled(Direction::Output, 1, true);
        c.set_enabled(Direction::Output, 1, false);
        assert_eq!(
            kinds(&c.set_enabled(Direction::Output, 1, true)),
            ["PREPARE", "START"]
        );
        let later = Instant::now() + RELEASE_AFTER * 2;
        assert!(c.tick(later).is_empty());
    }

    #[test]
    fn a_reopened_voice_keeps_its_stream_and_a_second_voice_gets_the_next() {
        let mut c = VoiceCard::new("QEMU".into());
        c.init(Direction::Output, 0xa, s16(48000, 2));
        c.set_enabled(Direction::Output, 0xa, true);
        // Format change with mixing-engine=off: Fini, then Init of a new voice.
        assert_eq!(kinds(&c.fini(Direction::Output, 0xa)), ["STOP", "RELEASE"]);
        let evs = c.init(Direction::Output, 0xb, s16(44100, 2));
        assert_eq!(kinds(&evs), ["PARAMS"]);
        assert_eq!(c.stream_of(Direction::Output, 0xb), Some(0));
        // Another card's voice at the same time: a new stream, and the card says so.
        let evs = c.init(Direction::Output, 0xc, s16(48000, 1));
        assert_eq!(kinds(&evs), ["CARD", "PARAMS"]);
        assert_eq!(c.stream_of(Direction::Output, 0xc), Some(1));
        // An input voice: a stream of its own with capture controls.
        let evs = c.init(Direction::Input, 0xd, s16(48000, 2));
        let SourceEvent::Card(h) = &evs[0] else {
            panic!()
        };
        assert_eq!(h.streams[2].direction, Direction::Input);
        assert_eq!(h.controls[4].name, "Capture Volume");
        assert_eq!(h.controls[4].index, 0);
        assert_eq!(
            h.controls[2].index, 1,
            "second output's PCM controls are index 1"
        );
        // The same voice announced twice (a listener registering) changes nothing.
        assert!(c.init(Direction::Input, 0xd, s16(48000, 2)).is_empty());
    }

    #[test]
    fn volume_and_mute_are_controls_sent_on_change() {
        let mut c = VoiceCard::new("QEMU".into());
        c.init(Direction::Output, 1, s16(48000, 2));
        let r = records(c.set_volume(Direction::Output, 1, false, &[255, 128]));
        assert_eq!(
            r,
            vec![
                Record::Control {
                    id: 0,
                    origin: ControlOrigin::Guest,
                    values: vec![255, 128]
                },
                Record::Control {
                    id: 1,
                    origin: ControlOrigin::Guest,
                    values: vec![1]
                }
            ]
        );
        assert!(c
            .set_volume(Direction::Output, 1, false, &[255, 128])
            .is_empty());
        let r = records(c.set_volume(Direction::Output, 1, true, &[255, 128]));
        assert_eq!(r.len(), 1);
        assert!(matches!(&r[0], Record::Control { id: 1, values, .. } if values == &[0]));
    }

    #[test]
    fn unknown_voices_and_refused_formats_record_nothing() {
        let mut c = VoiceCard::new("QEMU".into());
        assert!(c.write(99, vec![0; 4]).is_empty());
        assert!(c.set_enabled(Direction::Output, 99, true).is_empty());
        assert!(c.fini(Direction::Output, 99).is_empty());
        let evs = c.init(Direction::Output, 5, s16(24000, 2));
        assert_eq!(kinds(&evs), ["CARD"]);
        assert!(c.write(5, vec![0; 4]).is_empty());
    }
}
