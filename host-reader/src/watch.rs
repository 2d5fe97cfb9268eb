//! Watches a capture as it is recorded, whatever the source: where each file's audio stands,
//! what happened on the way (the marks the report and the plot show), when the capture should
//! end (`--once` after `--idle`, `--duration`, `--stop-after-silence`), and the live status
//! line.
//!
//! The session tells it three things: every record (the stream's lifecycle, underruns), every
//! write to a stream's file (audio or gap fill, with the file's path and size after it), and
//! asks it how much of a write `--duration` still allows. It keeps no file of its own.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use dsproxy_wire::record::{Params, Record};

use crate::console;
use crate::convert::{AudioShape, Decoder};
use crate::status::{self, LevelMeter, STATUS_EVERY};
use crate::verdict::judge::FileToJudge;
use crate::verdict::marks::{CaptureLog, MarkKind};

/// The command-line options of ending a capture (flattened into [`crate::cli::Cli`]).
#[derive(Debug, Clone, Default, clap::Args)]
#[command(next_help_heading = "Ending a capture")]
pub struct WatchArgs {
    /// With --once: how long the guest must keep the device closed, after playing, for the
    /// capture to end (programs like mpg321 and mplayer close and reopen /dev/dsp mid-song)
    /// [default: 1]
    #[arg(long, value_name = "SECS", requires = "once", value_parser = parse_secs)]
    pub idle: Option<Duration>,

    /// End after SECS of audio of the main stream (the file holds exactly that much)
    #[arg(long, value_name = "SECS", value_parser = parse_secs)]
    pub duration: Option<Duration>,

    /// End once the main stream, after some sound, has stayed below --silence-below for
    /// SECS (time with the device closed counts)
    #[arg(long, value_name = "SECS", value_parser = parse_secs)]
    pub stop_after_silence: Option<Duration>,

    /// No status line on the terminal
    #[arg(long)]
    pub quiet: bool,
}

fn parse_secs(s: &str) -> Result<Duration, String> {
    s.trim_end_matches('s')
        .parse::<f64>()
        .ok()
        .filter(|v| v.is_finite() && *v > 0.0 && *v < 1e9)
        .map(Duration::from_secs_f64)
        .ok_or_else(|| format!("{s:?}: expected a number of seconds above 0, e.g. 1.5"))
}

/// What ends a capture, and whether to draw the status line.
#[derive(Debug, Clone)]
pub struct WatchOptions {
    /// `--once`: end once the guest, having played, keeps every recorded stream closed for
    /// `idle` (or the VM goes away: the session ends that).
    pub once: bool,
    pub idle: Duration,
    /// `--duration`: end after this much audio of the main stream.
    pub duration: Option<Duration>,
    /// `--stop-after-silence`: end once the main stream, having had sound, stays below
    /// `silence_below_dbfs` this long (time with the device closed counts).
    pub stop_after_silence: Option<Duration>,
    pub silence_below_dbfs: f64,
    /// Draw the status line (stderr is a terminal, no `--quiet`).
    pub status: bool,
}

impl Default for WatchOptions {
    fn default() -> Self {
        WatchOptions {
            once: false,
            idle: Duration::from_secs(1),
            duration: None,
            stop_after_silence: None,
            silence_below_dbfs: crate::verdict::analysis::DEFAULT_SILENCE_DBFS,
            status: false,
        }
    }
}

/// What was written to a stream's file.
#[derive(Debug, Clone, Copy)]
pub enum Wrote<'a> {
    Audio(&'a [u8]),
    /// Silence for audio the reader did not get (a gap), this many bytes.
    Fill(u64),
}

#[derive(Debug, Default)]
struct StreamWatch {
    shape: Option<AudioShape>,
    params: Option<Params>,
    open: bool,
    /// The file being written, and its audio bytes so far.
    file: Option<PathBuf>,
    file_bytes: u64,
    files: u32,
}

/// See the module documentation.
pub struct CaptureWatch {
    opts: WatchOptions,
    log: CaptureLog,
    streams: HashMap<u32, StreamWatch>,
    main: Option<u32>,
    /// A recorded stream had audio.
    played: bool,
    /// Since when no recorded stream is open (after playing).
    closed_since: Option<Instant>,
    /// The main stream's audio so far: from earlier shapes (ns), and in its current shape
    /// (frames).
    ns_before: u128,
    frames_now: u64,
    shape_now: Option<AudioShape>,
    total_bytes: u64,
    /// `--stop-after-silence`: sound was heard; frames of silence at the end so far.
    heard: bool,
    silent_frames: u64,
    decoder: Option<(AudioShape, Decoder)>,
    scratch: Vec<f32>,
    meter: LevelMeter,
    last_status: Option<Instant>,
    gaps: u64,
    /// Why the capture is to end.
    done: Option<String>,
}

impl CaptureWatch {
    pub fn new(opts: WatchOptions) -> CaptureWatch {
        CaptureWatch {
            opts,
            log: CaptureLog::new(),
            streams: HashMap::new(),
            main: None,
            played: false,
            closed_since: None,
            ns_before: 0,
            frames_now: 0,
            shape_now: None,
            total_bytes: 0,
            heard: false,
            silent_frames: 0,
            decoder: None,
            scratch: Vec::new(),
            meter: LevelMeter::new(),
            last_status: None,
            gaps: 0,
            done: None,
        }
    }

    /// The stream `-s`, playback, `--duration` and the status line follow.
    pub fn set_main(&mut self, main: Option<u32>) {
        self.main = main;
    }

    /// A record from the source.
    pub fn record(&mut self, rec: &Record, now: Instant) {
        match rec {
            Record::Params(p) => {
                let s = self.streams.entry(p.stream).or_default();
                let shape = AudioShape::from_params(p);
                let changed = s.params.is_some_and(|old| {
                    (old.buffer_bytes, old.period_bytes) != (p.buffer_bytes, p.period_bytes)
                });
                if changed && shape == s.shape && s.file.is_some() {
                    let what = format!(
                        "buffer {} bytes, period {} bytes",
                        p.buffer_bytes, p.period_bytes
                    );
                    let at = s.file_bytes;
                    self.log.mark(p.stream, at, MarkKind::Params, None, what);
                }
                let s = self.streams.entry(p.stream).or_default();
                s.params = Some(*p);
                s.shape = shape;
            }
            Record::Prepare { stream, .. } | Record::Start { stream, .. } => {
                let s = self.streams.entry(*stream).or_default();
                if !s.open && s.file.is_some() && matches!(rec, Record::Prepare { .. }) {
                    let at = s.file_bytes;
                    self.log.mark(
                        *stream,
                        at,
                        MarkKind::Opened,
                        None,
                        "the guest opened the device again".into(),
                    );
                }
                let s = self.streams.entry(*stream).or_default();
                s.open = true;
                self.closed_since = None;
            }
            Record::Release { stream, .. } => {
                let s = self.streams.entry(*stream).or_default();
                let was_open = s.open;
                s.open = false;
                if was_open && s.file.is_some() {
                    let at = s.file_bytes;
                    self.log.mark(
                        *stream,
                        at,
                        MarkKind::Closed,
                        None,
                        "the guest closed the device".into(),
                    );
                }
                if self.streams.values().all(|s| !s.open) {
                    self.closed_since.get_or_insert(now);
                }
            }
            Record::Xrun {
                stream,
                duration_ns,
                ..
            } => {
                if let Some(s) = self.streams.get(stream) {
                    let at = s.file_bytes;
                    self.log.mark(
                        *stream,
                        at,
                        MarkKind::Xrun,
                        Some(*duration_ns),
                        format!(
                            "underrun: {:.3} ms without audio",
                            *duration_ns as f64 / 1e6
                        ),
                    );
                }
            }
            Record::Frontend {
                connected: false, ..
            } => {
                for (id, s) in self.streams.iter_mut() {
                    if s.open && s.file.is_some() {
                        self.log.mark(
                            *id,
                            s.file_bytes,
                            MarkKind::Closed,
                            None,
                            "the VM went away".into(),
                        );
                    }
                    s.open = false;
                }
                self.closed_since.get_or_insert(now);
            }
            _ => {}
        }
    }

    /// How many of `len` bytes of `stream` may still be written (`--duration`): all, or what
    /// is left of the duration in whole frames.
    pub fn allowed(&self, stream: u32, len: u64) -> u64 {
        let (Some(limit), true) = (self.opts.duration, Some(stream) == self.main) else {
            return len;
        };
        let Some(shape) = self.streams.get(&stream).and_then(|s| s.shape) else {
            return len;
        };
        let (Some(fb), rate) = (shape.frame_bytes(), shape.rate_hz as u128) else {
            return len;
        };
        let left_ns = limit.as_nanos().saturating_sub(self.ns_before);
        let want_frames = ((left_ns * rate + 500_000_000) / 1_000_000_000) as u64;
        let frames_now = if self.shape_now == Some(shape) {
            self.frames_now
        } else {
            0
        };
        let left = want_frames.saturating_sub(frames_now) * fb as u64;
        len.min(left)
    }

    /// Bytes were written to `stream`'s file `file` (its size after the write: `file_bytes`),
    /// or only to stdout (`file` is `None`). `recorded`: the stream is recorded to files.
    pub fn wrote(
        &mut self,
        stream: u32,
        recorded: bool,
        file: Option<(&Path, u64)>,
        what: Wrote<'_>,
        now: Instant,
    ) {
        let n = match what {
            Wrote::Audio(d) => d.len() as u64,
            Wrote::Fill(n) => n,
        };
        let s = self.streams.entry(stream).or_default();
        let shape = s.shape;
        if let Some((path, after)) = file {
            // The bytes, not Path's component-wise comparison: this runs per record.
            if s.file.as_deref().map(Path::as_os_str) != Some(path.as_os_str()) {
                s.files += 1;
                s.file = Some(path.to_path_buf());
                self.log.segment_started(stream, path, s.files, shape);
            }
            let s = self.streams.entry(stream).or_default();
            s.file_bytes = after;
            if let Wrote::Fill(n) = what {
                let ns = shape
                    .and_then(|sh| sh.bytes_to_ns(n))
                    .map(|ns| u64::try_from(ns).unwrap_or(u64::MAX));
                self.gaps += 1;
                self.log.mark(
                    stream,
                    after.saturating_sub(n),
                    MarkKind::Gap,
                    ns,
                    format!("{n} bytes the reader did not get, written as silence"),
                );
            }
        } else if let Wrote::Fill(_) = what {
            self.gaps += 1;
        }
        if recorded && n > 0 {
            self.played = true;
        }
        if Some(stream) != self.main {
            return;
        }
        // The main stream's time, for --duration and the status line.
        if let Some(shape) = shape {
            if self.shape_now != Some(shape) {
                if let (Some(old), true) = (self.shape_now, self.frames_now > 0) {
                    self.ns_before +=
                        self.frames_now as u128 * 1_000_000_000 / old.rate_hz.max(1) as u128;
                }
                self.shape_now = Some(shape);
                self.frames_now = 0;
            }
            if let Some(fb) = shape.frame_bytes() {
                self.frames_now += n / fb as u64;
            }
            if let Some(limit) = self.opts.duration {
                if self.elapsed_ns() >= limit.as_nanos() && self.done.is_none() {
                    self.done = Some(format!("--duration {:.3} s reached", limit.as_secs_f64()));
                }
            }
        }
        self.total_bytes += n;
        match (what, shape) {
            (Wrote::Audio(d), Some(shape)) => {
                if self.opts.status {
                    self.meter.push(shape, d);
                }
                if self.opts.stop_after_silence.is_some() {
                    self.track_silence(shape, d);
                }
            }
            (Wrote::Fill(n), Some(shape)) => {
                if let Some(fb) = shape.frame_bytes() {
                    self.silent_frames += n / fb as u64;
                }
            }
            _ => {}
        }
        self.check_silence(now);
    }

    fn track_silence(&mut self, shape: AudioShape, data: &[u8]) {
        if self.decoder.as_ref().map(|d| d.0) != Some(shape) {
            self.decoder = Decoder::new(shape).ok().map(|d| (shape, d));
        }
        let Some((_, dec)) = self.decoder.as_mut() else {
            return;
        };
        self.scratch.clear();
        if dec.push(data, &mut self.scratch).is_err() {
            return;
        }
        let th = 10f32.powf(self.opts.silence_below_dbfs as f32 / 20.0);
        let ch = shape.channels.max(1) as usize;
        for frame in self.scratch.chunks_exact(ch) {
            if frame.iter().all(|v| v.abs() <= th) {
                self.silent_frames += 1;
            } else {
                self.heard = true;
                self.silent_frames = 0;
            }
        }
    }

    fn check_silence(&mut self, now: Instant) {
        let Some(limit) = self.opts.stop_after_silence else {
            return;
        };
        if !self.heard || self.done.is_some() {
            return;
        }
        let rate = self.shape_now.map(|s| s.rate_hz).unwrap_or(48000).max(1);
        let audio = Duration::from_nanos(self.silent_frames * 1_000_000_000 / rate as u64);
        let closed = self
            .closed_since
            .map(|t| now.saturating_duration_since(t))
            .unwrap_or_default();
        if audio + closed >= limit {
            self.done = Some(format!(
                "--stop-after-silence: {:.3} s below {:.0} dBFS",
                limit.as_secs_f64(),
                self.opts.silence_below_dbfs
            ));
        }
    }

    fn elapsed_ns(&self) -> u128 {
        let now = match self.shape_now {
            Some(s) => self.frames_now as u128 * 1_000_000_000 / s.rate_hz.max(1) as u128,
            None => 0,
        };
        self.ns_before + now
    }

    /// Called often: `Some(why)` when the capture should end now; redraws the status line
    /// when due.
    pub fn poll(&mut self, now: Instant) -> Option<String> {
        if self.opts.status
            && self
                .last_status
                .is_none_or(|t| now.duration_since(t) >= STATUS_EVERY)
            && self.total_bytes > 0
        {
            self.last_status = Some(now);
            self.draw_status();
        }
        self.check_silence(now);
        if self.done.is_none() && self.opts.once && self.played {
            if let Some(t) = self.closed_since {
                if now.saturating_duration_since(t) >= self.opts.idle {
                    self.done = Some(format!(
                        "--once: the guest kept the device closed for {:.1} s",
                        self.opts.idle.as_secs_f64()
                    ));
                }
            }
        }
        self.done.clone()
    }

    fn draw_status(&mut self) {
        let levels = self.meter.take();
        let shape = self
            .shape_now
            .map(|s| s.to_string())
            .unwrap_or_else(|| "?".into());
        console::progress(&status::status_text(
            self.elapsed_ns(),
            &shape,
            levels.as_deref(),
            self.gaps,
            self.total_bytes,
        ));
    }

    /// The last status line, before the capture's end is reported.
    pub fn finish_status(&mut self) {
        if self.opts.status && self.total_bytes > 0 {
            self.draw_status();
        }
        console::finish_progress();
    }

    /// The files the main stream was recorded to, in order, with their marks: what a
    /// verdict judges.
    pub fn main_files(&self) -> Vec<FileToJudge> {
        let Some(main) = self.main else {
            return Vec::new();
        };
        self.log
            .files_of(main)
            .into_iter()
            .filter(|f| f.path.exists())
            .map(|f| FileToJudge {
                path: f.path.clone(),
                stream: Some(f.stream),
                segment: Some(f.segment),
                marks: f.marks.clone(),
                marks_dropped: f.marks_dropped,
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use dsproxy_wire::PcmFormat;

    fn params(stream: u32, rate_code: u8, period: u32) -> Record {
        Record::Params(Params {
            stream,
            buffer_bytes: period * 4,
            period_bytes: period,
            features: 0,
            channels: 2,
            format: PcmFormat::S16.code(),
            rate: rate_code,
        })
    }

    fn rate_48k() -> u8 {
        dsproxy_wire::PcmRate::from_hz(48000).unwrap().code()
    }

    #[test]
    fn once_waits_for_the_idle_time_across_a_reopen() {
        let t0 = Instant::now();
        let ms = |m: u64| t0 + Duration::from_millis(m);
        let mut w = CaptureWatch::new(WatchOptions {
            once: true,
            idle: Duration::from_millis(1000),
            ..Default::default()
        });
        w.set_main(Some(0));
        w.record(&params(0, rate_48k(), 4096), ms(0));
        w.record(
            &Record::Prepare {
                stream: 0,
                time_ns: 0,
            },
            ms(0),
        );
        w.wrote(
            0,
            true,
            Some((Path::new("o.wav"), 4096)),
            Wrote::Audio(&[1; 4096]),
            ms(10),
        );
        w.record(
            &Record::Release {
                stream: 0,
                time_ns: 0,
            },
            ms(100),
        );
        assert_eq!(w.poll(ms(900)), None, "closed for 0.8 s only");
        w.record(
            &Record::Prepare {
                stream: 0,
                time_ns: 0,
            },
            ms(1000),
        );
        assert_eq!(w.poll(ms(1500)), None, "reopened: no end");
        w.wrote(
            0,
            true,
            Some((Path::new("o.wav"), 8192)),
            Wrote::Audio(&[1; 4096]),
            ms(1600),
        );
        w.record(
            &Record::Release {
                stream: 0,
                time_ns: 0,
            },
            ms(2000),
        );
        assert_eq!(w.poll(ms(2999)), None);
        assert!(w.poll(ms(3000)).unwrap().contains("--once"));
        let files = w.main_files();
        assert!(files.is_empty(), "o.wav does not exist here");
        let f = &w.log.files()[0];
        let kinds: Vec<_> = f.marks.iter().map(|m| (m.kind, m.frame)).collect();
        assert_eq!(
            kinds,
            vec![
                (MarkKind::SegmentStart, 0),
                (MarkKind::Closed, 1024),
                (MarkKind::Opened, 1024),
                (MarkKind::Closed, 2048)
            ]
        );
    }

    #[test]
    fn once_needs_audio_first() {
        let t0 = Instant::now();
        let mut w = CaptureWatch::new(WatchOptions {
            once: true,
            ..Default::default()
        });
        w.set_main(Some(0));
        w.record(
            &Record::Prepare {
                stream: 0,
                time_ns: 0,
            },
            t0,
        );
        w.record(
            &Record::Release {
                stream: 0,
                time_ns: 0,
            },
            t0,
        );
        assert_eq!(w.poll(t0 + Duration::from_secs(5)), None);
    }

    #[test]
    fn duration_allows_whole_frames_up_to_the_limit() {
        let t0 = Instant::now();
        let mut w = CaptureWatch::new(WatchOptions {
            duration: Some(Duration::from_millis(500)),
            ..Default::default()
        });
        w.set_main(Some(0));
        w.record(&params(0, rate_48k(), 4096), t0);
        assert_eq!(w.allowed(0, 100_000), 96_000);
        assert_eq!(
            w.allowed(1, 100_000),
            100_000,
            "other streams are not limited"
        );
        w.wrote(
            0,
            true,
            Some((Path::new("o.wav"), 90_000)),
            Wrote::Audio(&[0; 90_000]),
            t0,
        );
        assert_eq!(w.allowed(0, 10_000), 6_000);
        assert_eq!(w.poll(t0), None);
        w.wrote(
            0,
            true,
            Some((Path::new("o.wav"), 96_000)),
            Wrote::Fill(6_000),
            t0,
        );
        assert_eq!(w.allowed(0, 10_000), 0);
        assert!(w.poll(t0).unwrap().contains("--duration"));
        assert_eq!(w.log.files()[0].marks[1].kind, MarkKind::Gap);
    }

    #[test]
    fn stop_after_silence_counts_quiet_audio_and_closed_time_after_sound() {
        let t0 = Instant::now();
        let mut w = CaptureWatch::new(WatchOptions {
            stop_after_silence: Some(Duration::from_millis(500)),
            ..Default::default()
        });
        w.set_main(Some(0));
        w.record(&params(0, rate_48k(), 4096), t0);
        let silence = vec![0u8; 48000 * 4];
        w.wrote(0, true, None, Wrote::Audio(&silence), t0);
        assert_eq!(w.poll(t0), None, "silence before any sound does not count");
        let loud: Vec<u8> = [10000i16, -10000]
            .iter()
            .cycle()
            .take(4800)
            .flat_map(|v| v.to_le_bytes())
            .collect();
        w.wrote(0, true, None, Wrote::Audio(&loud), t0);
        w.wrote(0, true, None, Wrote::Audio(&silence[..4 * 12000]), t0);
        assert_eq!(w.poll(t0), None, "250 ms so far");
        w.record(
            &Record::Release {
                stream: 0,
                time_ns: 0,
            },
            t0,
        );
        assert_eq!(w.poll(t0 + Duration::from_millis(200)), None);
        assert!(w
            .poll(t0 + Duration::from_millis(260))
            .unwrap()
            .contains("--stop-after-silence"));
    }

    #[test]
    fn marks_for_params_and_xruns_land_at_the_files_position() {
        let t0 = Instant::now();
        let mut w = CaptureWatch::new(WatchOptions::default());
        w.set_main(Some(0));
        w.record(&params(0, rate_48k(), 4096), t0);
        w.wrote(
            0,
            true,
            Some((Path::new("a.wav"), 4000)),
            Wrote::Audio(&[0; 4000]),
            t0,
        );
        w.record(
            &Record::Xrun {
                stream: 0,
                time_ns: 0,
                duration_ns: 5_000_000,
            },
            t0,
        );
        w.record(&params(0, rate_48k(), 2048), t0);
        w.wrote(
            0,
            true,
            Some((Path::new("a.seg2.wav"), 40)),
            Wrote::Audio(&[0; 40]),
            t0,
        );
        let f = w.log.files();
        assert_eq!(f.len(), 2);
        let kinds: Vec<_> = f[0].marks.iter().map(|m| (m.kind, m.frame)).collect();
        assert_eq!(
            kinds,
            vec![
                (MarkKind::SegmentStart, 0),
                (MarkKind::Xrun, 1000),
                (MarkKind::Params, 1000)
            ]
        );
        assert_eq!(f[1].segment, 2);
    }
}
