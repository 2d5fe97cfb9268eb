//! `-e`: what the guest did, in the OSS vocabulary users of the old dsproxy_reader know.
//!
//! virtio-snd does not see the guest's ioctls, only their effect on the card, so each line
//! names the OSS call that has that effect:
//!
//! ```text
//! SNDCTL_DSP_SPEED    => 44100          rate of a PARAMS
//! SNDCTL_DSP_SETFMT   => AFMT_S16_LE    format of a PARAMS
//! SNDCTL_DSP_CHANNELS => 2              channels of a PARAMS
//! SNDCTL_DSP_SETFRAGMENT => 4 x 4096    buffer/period x period of a PARAMS
//! SNDCTL_DSP_SYNC                       STOP after everything queued was played
//! SNDCTL_DSP_RESET    => 4096 bytes discarded    STOP that dropped queued audio
//! SOUND_MIXER_WRITE_PCM => 75:75        a guest write of "PCM Playback Volume" (left:right)
//! -- underrun: 12.500 ms without audio  an XRUN
//! ```
//!
//! The first PARAMS of a stream (and the first after a RELEASE, i.e. a new open) prints all
//! four lines; later ones print only what changed. Lines about a stream other than the
//! reader's main one end in `[stream N]`. `SNDCTL_DSP_POST` has no line: snd-pcm-oss turns
//! it into a start of the stream, which the card cannot tell from the automatic start on the
//! first full buffer.

use std::collections::HashMap;

use dsproxy_wire::format::afmt;
use dsproxy_wire::record::{ControlDesc, ControlOrigin, Direction, Hello, Params, Record};
use dsproxy_wire::{PcmFormat, PcmRate};

use crate::mixer;

/// Formats records as OSS-style lines.
#[derive(Debug, Default)]
pub struct English {
    controls: HashMap<u32, ControlDesc>,
    directions: HashMap<u32, Direction>,
    primary: Option<u32>,
    last: HashMap<u32, Params>,
}

impl English {
    /// `primary` is the stream whose lines carry no `[stream N]` tag.
    pub fn new(hello: &Hello, primary: Option<u32>) -> English {
        let mut e = English {
            primary,
            ..English::default()
        };
        e.set_hello(hello);
        e
    }

    /// A new connection: a new description of the card, and nothing known of its streams.
    pub fn set_hello(&mut self, hello: &Hello) {
        self.controls = hello.controls.iter().map(|c| (c.id, c.clone())).collect();
        self.directions = hello.streams.iter().map(|s| (s.id, s.direction)).collect();
        self.last.clear();
    }

    /// The card gained streams or controls: learn them, forget nothing.
    pub fn add_streams(&mut self, hello: &Hello, primary: Option<u32>) {
        for c in &hello.controls {
            self.controls.entry(c.id).or_insert_with(|| c.clone());
        }
        for s in &hello.streams {
            self.directions.entry(s.id).or_insert(s.direction);
        }
        if self.primary.is_none() {
            self.primary = primary;
        }
    }

    /// The lines for one record (none for most).
    pub fn lines(&mut self, rec: &Record) -> Vec<String> {
        match rec {
            Record::Params(p) => self.params(p),
            Record::Release { stream, .. } => {
                self.last.remove(stream);
                Vec::new()
            }
            Record::Stop {
                stream,
                drained,
                discarded_bytes,
                ..
            } => {
                let line = if *drained {
                    "SNDCTL_DSP_SYNC".to_string()
                } else if *discarded_bytes > 0 {
                    ioctl(
                        "SNDCTL_DSP_RESET",
                        format!("{discarded_bytes} bytes discarded"),
                    )
                } else {
                    "SNDCTL_DSP_RESET".to_string()
                };
                vec![self.tag(*stream, line)]
            }
            Record::Control { id, origin, values } => self.control(*id, *origin, values),
            Record::Xrun {
                stream,
                duration_ns,
                ..
            } => {
                let what = match self.directions.get(stream) {
                    Some(Direction::Input) => "overrun",
                    _ => "underrun",
                };
                let line = format!(
                    "-- {what}: {} ms without {}",
                    millis(*duration_ns),
                    if what == "overrun" { "room" } else { "audio" }
                );
                vec![self.tag(*stream, line)]
            }
            Record::Frontend { connected, .. } => {
                if !connected {
                    // The VM's streams went with it: the next VM's opens say everything.
                    self.last.clear();
                }
                vec![if *connected {
                    "-- VM connected".to_string()
                } else {
                    "-- VM went away".to_string()
                }]
            }
            _ => Vec::new(),
        }
    }

    fn params(&mut self, p: &Params) -> Vec<String> {
        let prev = self.last.insert(p.stream, *p);
        let mut out = Vec::new();
        let all = prev.is_none();
        let prev = prev.unwrap_or(*p);
        if all || prev.rate != p.rate {
            out.push(ioctl("SNDCTL_DSP_SPEED", rate_name(p.rate)));
        }
        if all || prev.format != p.format {
            out.push(ioctl("SNDCTL_DSP_SETFMT", format_name(p.format)));
        }
        if all || prev.channels != p.channels {
            out.push(ioctl("SNDCTL_DSP_CHANNELS", p.channels.to_string()));
        }
        // A source that does not see the guest's fragments (QEMU's D-Bus audio) says 0 x 0:
        // there is nothing to say.
        let fragments_known = p.buffer_bytes != 0 || p.period_bytes != 0;
        if fragments_known
            && (all || prev.buffer_bytes != p.buffer_bytes || prev.period_bytes != p.period_bytes)
        {
            out.push(ioctl(
                "SNDCTL_DSP_SETFRAGMENT",
                fragments(p.buffer_bytes, p.period_bytes),
            ));
        }
        out.into_iter().map(|l| self.tag(p.stream, l)).collect()
    }

    fn control(&self, id: u32, origin: ControlOrigin, values: &[i64]) -> Vec<String> {
        let suffix = match origin {
            // The state at attach time: not something the guest just did.
            ControlOrigin::Initial => return Vec::new(),
            ControlOrigin::Guest => "",
            ControlOrigin::Reader => "  (set by a host reader)",
        };
        let Some(desc) = self.controls.get(&id) else {
            return vec![format!(
                "mixer control #{id} => {}{suffix}",
                join(values.iter().map(|v| v.to_string()), ",")
            )];
        };
        vec![format!("{}{suffix}", control_line(desc, values))]
    }

    fn tag(&self, stream: u32, line: String) -> String {
        if Some(stream) == self.primary {
            line
        } else {
            format!("{line}  [stream {stream}]")
        }
    }
}

/// `NAME => value`, with the name padded as the old reader did (`SNDCTL_DSP_SPEED    => …`).
pub fn ioctl(name: &str, value: impl std::fmt::Display) -> String {
    format!("{name:<19} => {value}")
}

/// A change of a control, as the OSS write with that effect (`SOUND_MIXER_WRITE_PCM =>
/// 75:75`) or, for a control OSS cannot see, by its name (`mixer control "X" => 2`).
pub fn control_line(desc: &ControlDesc, values: &[i64]) -> String {
    let value = mixer_value(desc, values);
    match mixer::oss_channel(&desc.name, desc.index) {
        Some(oss) => ioctl(&format!("SOUND_MIXER_WRITE_{oss}"), value),
        None => format!("mixer control \"{}\" => {value}", desc.name),
    }
}

/// The line logged for a GAP (always, not only with `-e`).
pub fn gap_line(stream: u32, offset: u64, bytes: u64, duration_ns: Option<u64>) -> String {
    let dur = duration_ns
        .map(|ns| format!(" ({} ms)", millis(ns)))
        .unwrap_or_default();
    format!(
        "-- gap: {bytes} bytes{dur} of stream {stream} at offset {offset} were not received; \
         recorded as silence"
    )
}

/// `SNDCTL_DSP_SETFMT` value: the `AFMT_*` name, or the ALSA name when OSS has none.
pub fn format_name(code: u8) -> String {
    let Some(f) = PcmFormat::from_code(code) else {
        return format!("unknown format {code}");
    };
    match f.info().oss.and_then(afmt::name) {
        Some(n) => n.to_string(),
        None => format!("{f} (no AFMT_ equivalent)"),
    }
}

fn rate_name(code: u8) -> String {
    match PcmRate::from_code(code) {
        Some(r) => r.hz().to_string(),
        None => format!("unknown rate code {code}"),
    }
}

/// `SNDCTL_DSP_SETFRAGMENT` value: fragments x fragment size.
pub fn fragments(buffer: u32, period: u32) -> String {
    if period == 0 {
        return format!("0 x 0 (buffer of {buffer} bytes)");
    }
    let (n, rem) = (buffer / period, buffer % period);
    if rem == 0 {
        format!("{n} x {period}")
    } else {
        format!("{n} x {period} (+{rem} bytes)")
    }
}

/// A control's values as OSS shows them: `left:right` percentages for levels, `muted` /
/// `unmuted` for switches, raw numbers for enumerations.
pub fn mixer_value(desc: &ControlDesc, values: &[i64]) -> String {
    let is_switch = mixer::is_switch(desc);
    if values.is_empty() {
        return "(no values)".to_string();
    }
    if is_switch {
        let words: Vec<&str> = values
            .iter()
            .map(|&v| {
                if mixer::switch_is_audible(desc, v) {
                    "unmuted"
                } else {
                    "muted"
                }
            })
            .collect();
        return if words.iter().all(|w| *w == words[0]) {
            words[0].to_string()
        } else {
            words.join(":")
        };
    }
    if desc.ctype == 3 {
        return join(values.iter().map(|v| v.to_string()), ",");
    }
    let pct: Vec<String> = values
        .iter()
        .map(|&v| mixer::to_percent(v, desc.min, desc.max).to_string())
        .collect();
    if pct.len() == 1 {
        format!("{0}:{0}", pct[0])
    } else {
        pct.join(":")
    }
}

fn join(it: impl Iterator<Item = String>, sep: &str) -> String {
    it.collect::<Vec<_>>().join(sep)
}

/// Nanoseconds as milliseconds with three decimals.
fn millis(ns: u64) -> String {
    format!("{}.{:03}", ns / 1_000_000, (ns / 1000) % 1000)
}

#[cfg(test)]
mod tests {
    use super::*;
    use dsproxy_wire::record::StreamDesc;

    fn hello() -> Hello {
        let ctl = |id, name: &str, ctype, count, max| ControlDesc {
            id,
            name: name.into(),
            index: 0,
            role: 1,
            ctype,
            count,
            min: 0,
            max,
            step: 1,
            db_min: 0,
            db_step: 0,
        };
        Hello {
            version: 1,
            time_ns: 0,
            name: "test".into(),
            jacks: 0,
            chmaps: 0,
            streams: vec![
                StreamDesc {
                    id: 0,
                    direction: Direction::Output,
                    channels_min: 1,
                    channels_max: 2,
                    formats: 0,
                    rates: 0,
                },
                StreamDesc {
                    id: 1,
                    direction: Direction::Input,
                    channels_min: 1,
                    channels_max: 2,
                    formats: 0,
                    rates: 0,
                },
            ],
            controls: vec![
                ctl(0, "Master Playback Volume", 1, 2, 100),
                ctl(1, "PCM Playback Volume", 1, 2, 255),
                ctl(2, "Capture Volume", 1, 1, 100),
                ctl(3, "Master Playback Switch", 0, 2, 1),
                ctl(4, "Loudness Mode", 3, 1, 3),
            ],
        }
    }

    fn params(stream: u32, rate: u8, format: u8, channels: u8, buf: u32, per: u32) -> Record {
        Record::Params(Params {
            stream,
            buffer_bytes: buf,
            period_bytes: per,
            features: 0,
            channels,
            format,
            rate,
        })
    }

    #[test]
    fn params_lines_are_exact() {
        let mut e = English::new(&hello(), Some(0));
        assert_eq!(
            e.lines(&params(0, 6, 5, 2, 16384, 4096)),
            vec![
                "SNDCTL_DSP_SPEED    => 44100",
                "SNDCTL_DSP_SETFMT   => AFMT_S16_LE",
                "SNDCTL_DSP_CHANNELS => 2",
                "SNDCTL_DSP_SETFRAGMENT => 4 x 4096",
            ]
        );
        // Same again: nothing changed, nothing said.
        assert!(e.lines(&params(0, 6, 5, 2, 16384, 4096)).is_empty());
        assert_eq!(
            e.lines(&params(0, 7, 5, 2, 16384, 4096)),
            vec!["SNDCTL_DSP_SPEED    => 48000"]
        );
        // A new open after a release says everything again.
        e.lines(&Record::Release {
            stream: 0,
            time_ns: 0,
        });
        assert_eq!(e.lines(&params(0, 7, 5, 2, 16384, 4096)).len(), 4);
        // Another stream is tagged.
        assert_eq!(
            e.lines(&params(1, 1, 4, 1, 1000, 300)),
            vec![
                "SNDCTL_DSP_SPEED    => 8000  [stream 1]",
                "SNDCTL_DSP_SETFMT   => AFMT_U8  [stream 1]",
                "SNDCTL_DSP_CHANNELS => 1  [stream 1]",
                "SNDCTL_DSP_SETFRAGMENT => 3 x 300 (+100 bytes)  [stream 1]",
            ]
        );
    }

    #[test]
    fn format_names() {
        assert_eq!(format_name(1), "AFMT_MU_LAW");
        assert_eq!(format_name(11), "AFMT_S24_PACKED");
        assert_eq!(format_name(15), "AFMT_S24_LE");
        assert_eq!(format_name(17), "AFMT_S32_LE");
        assert_eq!(format_name(19), "AFMT_FLOAT");
        assert_eq!(format_name(9), "S20_3LE (no AFMT_ equivalent)");
        assert_eq!(format_name(99), "unknown format 99");
        assert_eq!(fragments(4096, 0), "0 x 0 (buffer of 4096 bytes)");
        // QEMU's D-Bus audio does not see fragments: 0 x 0 says nothing about them.
        let mut e = English::new(&hello(), Some(0));
        assert_eq!(
            e.lines(&params(0, 7, 5, 2, 0, 0)),
            vec![
                "SNDCTL_DSP_SPEED    => 48000",
                "SNDCTL_DSP_SETFMT   => AFMT_S16_LE",
                "SNDCTL_DSP_CHANNELS => 2",
            ]
        );
    }

    #[test]
    fn stop_lines() {
        let mut e = English::new(&hello(), Some(0));
        let stop = |drained, discarded_bytes| Record::Stop {
            stream: 0,
            time_ns: 5,
            drained,
            discarded_bytes,
        };
        assert_eq!(e.lines(&stop(true, 0)), vec!["SNDCTL_DSP_SYNC"]);
        assert_eq!(
            e.lines(&stop(false, 4096)),
            vec!["SNDCTL_DSP_RESET    => 4096 bytes discarded"]
        );
        assert_eq!(e.lines(&stop(false, 0)), vec!["SNDCTL_DSP_RESET"]);
    }

    #[test]
    fn mixer_lines() {
        let mut e = English::new(&hello(), Some(0));
        let c = |id, origin, values: &[i64]| Record::Control {
            id,
            origin,
            values: values.to_vec(),
        };
        assert_eq!(
            e.lines(&c(1, ControlOrigin::Guest, &[191, 191])),
            vec!["SOUND_MIXER_WRITE_PCM => 75:75"]
        );
        assert_eq!(
            e.lines(&c(0, ControlOrigin::Guest, &[100, 40])),
            vec!["SOUND_MIXER_WRITE_VOLUME => 100:40"]
        );
        assert_eq!(
            e.lines(&c(2, ControlOrigin::Guest, &[30])),
            vec!["SOUND_MIXER_WRITE_IGAIN => 30:30"]
        );
        assert_eq!(
            e.lines(&c(3, ControlOrigin::Guest, &[0, 0])),
            vec!["SOUND_MIXER_WRITE_VOLUME => muted"]
        );
        assert_eq!(
            e.lines(&c(3, ControlOrigin::Reader, &[1, 0])),
            vec!["SOUND_MIXER_WRITE_VOLUME => unmuted:muted  (set by a host reader)"]
        );
        assert_eq!(
            e.lines(&c(4, ControlOrigin::Guest, &[2])),
            vec!["mixer control \"Loudness Mode\" => 2"]
        );
        assert_eq!(
            e.lines(&c(9, ControlOrigin::Guest, &[1, 2])),
            vec!["mixer control #9 => 1,2"]
        );
        assert!(e.lines(&c(1, ControlOrigin::Initial, &[0, 0])).is_empty());
    }

    #[test]
    fn event_lines() {
        let mut e = English::new(&hello(), Some(0));
        assert_eq!(
            e.lines(&Record::Xrun {
                stream: 0,
                time_ns: 1,
                duration_ns: 12_500_000
            }),
            vec!["-- underrun: 12.500 ms without audio"]
        );
        assert_eq!(
            e.lines(&Record::Xrun {
                stream: 1,
                time_ns: 1,
                duration_ns: 1_000
            }),
            vec!["-- overrun: 0.001 ms without room  [stream 1]"]
        );
        assert_eq!(
            e.lines(&Record::Frontend {
                connected: false,
                time_ns: 0
            }),
            vec!["-- VM went away"]
        );
        assert_eq!(
            gap_line(0, 8192, 4096, Some(23_219_954)),
            "-- gap: 4096 bytes (23.219 ms) of stream 0 at offset 8192 were not received; \
             recorded as silence"
        );
        assert!(e
            .lines(&Record::Start {
                stream: 0,
                time_ns: 0
            })
            .is_empty());
    }
}
