//! The live status line on a terminal: elapsed audio time, the stream's params, a level meter
//! per channel in dBFS, the gap count and the bytes recorded — redrawn at most
//! [`STATUS_EVERY`], only when stderr is a terminal, never with `--quiet`.

use std::time::Duration;

use crate::convert::{AudioShape, Decoder};

/// The status line is redrawn at most this often (10 times a second).
pub const STATUS_EVERY: Duration = Duration::from_millis(100);
/// The meter's scale: this many dB below full scale is an empty bar.
const METER_FLOOR_DB: f32 = -60.0;
const METER_WIDTH: usize = 10;
/// Channels shown with a bar; more are summarized by their loudest.
const METER_CHANNELS: usize = 8;

/// Peak levels of the audio since the last look.
#[derive(Default)]
pub struct LevelMeter {
    decoder: Option<(AudioShape, Decoder)>,
    peaks: Vec<f32>,
    scratch: Vec<f32>,
    fresh: bool,
}

impl LevelMeter {
    pub fn new() -> LevelMeter {
        LevelMeter::default()
    }

    /// Audio of `shape` arrived. Formats the reader cannot decode leave the meter empty.
    pub fn push(&mut self, shape: AudioShape, data: &[u8]) {
        if self.decoder.as_ref().map(|d| d.0) != Some(shape) {
            self.decoder = Decoder::new(shape).ok().map(|d| (shape, d));
            self.peaks = vec![0.0; shape.channels as usize];
        }
        let Some((_, dec)) = self.decoder.as_mut() else {
            return;
        };
        self.scratch.clear();
        if dec.push(data, &mut self.scratch).is_err() {
            return;
        }
        let ch = self.peaks.len().max(1);
        for frame in self.scratch.chunks_exact(ch) {
            for (p, &v) in self.peaks.iter_mut().zip(frame) {
                *p = p.max(v.abs());
            }
        }
        self.fresh = true;
    }

    /// The peak of each channel since the last call, in dBFS; `None` if no audio came.
    pub fn take(&mut self) -> Option<Vec<f32>> {
        if !self.fresh {
            return None;
        }
        self.fresh = false;
        let out = self
            .peaks
            .iter()
            .map(|&p| {
                if p > 0.0 {
                    20.0 * p.log10()
                } else {
                    f32::NEG_INFINITY
                }
            })
            .collect();
        for p in &mut self.peaks {
            *p = 0.0;
        }
        Some(out)
    }
}

/// `[#######---] -12`: a bar from -60 to 0 dBFS and the level in whole dB.
pub fn meter(db: f32) -> String {
    let fill = if db.is_finite() {
        (((db - METER_FLOOR_DB) / -METER_FLOOR_DB) * METER_WIDTH as f32)
            .round()
            .clamp(0.0, METER_WIDTH as f32) as usize
    } else {
        0
    };
    let level = if db.is_finite() && db > -100.0 {
        format!("{:>4.0}", db)
    } else {
        "-inf".to_string()
    };
    format!(
        "[{}{}]{level}",
        "#".repeat(fill),
        "-".repeat(METER_WIDTH - fill)
    )
}

/// The whole line, e.g.
/// `00:01:23.45  48000 Hz S16_LE 2ch  L[#######---] -12 R[######----] -18 dBFS  gaps 0  15.3 MiB`.
/// `levels` is `None` while no audio flows (the guest closed the device, or paused).
pub fn status_text(
    duration_ns: u128,
    shape: &str,
    levels: Option<&[f32]>,
    gaps: u64,
    bytes: u64,
) -> String {
    let cs = duration_ns / 10_000_000;
    let (h, m, s, c) = (cs / 360_000, (cs / 6000) % 60, (cs / 100) % 60, cs % 100);
    let meters = match levels {
        None => "(no audio)".to_string(),
        Some(l) => {
            let names: &[&str] = if l.len() == 2 { &["L", "R"] } else { &[] };
            let mut parts: Vec<String> = l
                .iter()
                .take(METER_CHANNELS)
                .enumerate()
                .map(|(i, &db)| {
                    let name = names
                        .get(i)
                        .map(|n| n.to_string())
                        .unwrap_or_else(|| (i + 1).to_string());
                    format!("{name}{}", meter(db))
                })
                .collect();
            if l.len() > METER_CHANNELS {
                let rest = l[METER_CHANNELS..]
                    .iter()
                    .cloned()
                    .fold(f32::NEG_INFINITY, f32::max);
                parts.push(format!(
                    "+{}ch max{}",
                    l.len() - METER_CHANNELS,
                    meter(rest)
                ));
            }
            parts.join(" ") + " dBFS"
        }
    };
    format!(
        "{h:02}:{m:02}:{s:02}.{c:02}  {shape}  {meters}  gaps {gaps}  {:.1} MiB",
        bytes as f64 / (1024.0 * 1024.0)
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use dsproxy_wire::PcmFormat;

    #[test]
    fn meter_follows_the_peak_since_the_last_look() {
        let shape = AudioShape {
            format: PcmFormat::S16,
            rate_hz: 48000,
            channels: 2,
        };
        let mut m = LevelMeter::new();
        assert_eq!(m.take(), None);
        let data: Vec<u8> = [16384i16, -32768, 100, 0]
            .iter()
            .flat_map(|v| v.to_le_bytes())
            .collect();
        m.push(shape, &data);
        let l = m.take().unwrap();
        assert!((l[0] + 6.02).abs() < 0.01, "{l:?}");
        assert_eq!(l[1], 0.0);
        assert_eq!(m.take(), None, "nothing new since");
        m.push(shape, &[0; 8]);
        assert_eq!(m.take().unwrap()[0], f32::NEG_INFINITY);
    }

    #[test]
    fn the_line() {
        assert_eq!(meter(0.0), "[##########]   0");
        assert_eq!(meter(-30.0), "[#####-----] -30");
        assert_eq!(meter(-90.0), "[----------] -90");
        assert_eq!(meter(f32::NEG_INFINITY), "[----------]-inf");
        let ns = (83u128 * 1000 + 450) * 1_000_000;
        assert_eq!(
            status_text(
                ns,
                "48000 Hz S16_LE 2ch",
                Some(&[-12.0, -18.0]),
                1,
                16_043_212
            ),
            "00:01:23.45  48000 Hz S16_LE 2ch  L[########--] -12 R[#######---] -18 dBFS  \
             gaps 1  15.3 MiB"
        );
        assert_eq!(
            status_text(0, "x", None, 0, 0),
            "00:00:00.00  x  (no audio)  gaps 0  0.0 MiB"
        );
        let many: Vec<f32> = (0..10).map(|i| -(i as f32) * 3.0).collect();
        let t = status_text(0, "x", Some(&many), 0, 0);
        assert!(t.contains("8[####") && t.contains("+2ch max"), "{t}");
    }
}
