//! The figures of one file, in one streaming pass: duration, peak and RMS level in dBFS, DC
//! offset, clipped samples, silent spans, dominant frequency — per channel and overall. They
//! go into `--report`, and `--expect-tone`, `--expect-silence` and `--expect-sound` judge them.
//!
//! Levels are 20·log10 of the linear value relative to full scale: a full-scale sine has a
//! 0 dBFS peak and a -3.01 dBFS RMS.

use serde::Serialize;

use super::audio::{AudioFile, CHUNK_FRAMES};
use super::spectrum::Welch;
use super::{dbfs, VerdictError};

/// Silence shorter than this is not a span worth reporting (seconds).
pub const MIN_SILENT_SPAN_S: f64 = 0.050;
/// Spans listed in a report (the count says how many there were).
const MAX_SPANS_LISTED: usize = 200;
/// The default level below which a frame counts as silent (`--silence-below`).
pub const DEFAULT_SILENCE_DBFS: f64 = -60.0;

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ChannelStats {
    /// 1-based.
    pub channel: u16,
    /// `null` (minus infinity) for digital silence.
    pub peak_dbfs: f64,
    pub rms_dbfs: f64,
    /// The mean, as a fraction of full scale.
    pub dc_offset: f64,
    /// Samples at the format's largest or smallest value (or beyond ±1.0 for float).
    pub clipped_samples: u64,
    pub dominant_hz: Option<f64>,
}

/// A stretch in which every channel stays below the silence level.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SilentSpan {
    pub start_s: f64,
    pub end_s: f64,
    pub start_frame: u64,
    pub frames: u64,
    /// Every sample in it is exactly zero (digital silence: a gap the reader filled, a
    /// driver's padding) rather than merely quiet.
    pub digital: bool,
}

/// One file's figures.
#[derive(Serialize)]
pub struct Analysis {
    /// The file (the report names it once, beside the stream).
    #[serde(skip)]
    pub file: String,
    pub format: String,
    pub rate: u32,
    pub channels: u16,
    pub frames: u64,
    pub duration_s: f64,
    pub peak_dbfs: f64,
    pub rms_dbfs: f64,
    pub dominant_hz: Option<f64>,
    pub channel_stats: Vec<ChannelStats>,
    /// Digital silence at the start and at the end, in seconds.
    pub leading_silence_s: f64,
    pub trailing_silence_s: f64,
    /// The level the spans are judged against.
    pub silence_below_dbfs: f64,
    pub silent_spans: Vec<SilentSpan>,
    /// All spans, including those not listed.
    pub silent_spans_total: usize,
    #[serde(skip)]
    pub spectra: Welch,
    /// The first sample above the silence level, and the first that is not zero: (frame,
    /// 1-based channel, value).
    #[serde(skip)]
    pub first_loud: Option<(u64, u16, f64)>,
    #[serde(skip)]
    pub first_nonzero: Option<(u64, u16, f64)>,
}

impl std::fmt::Debug for Analysis {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "Analysis({}, {} frames, peak {:.1} dBFS)",
            self.file, self.frames, self.peak_dbfs
        )
    }
}

impl Analysis {
    /// The file has a sample louder than `dbfs_level` in some channel.
    pub fn louder_than(&self, dbfs_level: f64) -> bool {
        self.peak_dbfs > dbfs_level
    }

    pub fn is_digital_silence(&self) -> bool {
        self.peak_dbfs == f64::NEG_INFINITY
    }
}

/// Reads `f` once and computes its figures; frames whose every channel is at or below
/// `silence_below_dbfs` are silent.
pub fn analyze(f: &mut AudioFile, silence_below_dbfs: f64) -> Result<Analysis, VerdictError> {
    let ch = f.channels();
    let rate = f.rate();
    let th = 10f64.powf(silence_below_dbfs / 20.0);
    let top = match crate::convert::code_scale(f.shape.format) {
        Some(scale) => (scale - 1.0) / scale,
        None => 1.0,
    };
    let min_span = (MIN_SILENT_SPAN_S * rate as f64).ceil() as u64;

    let mut peak = vec![0.0f64; ch];
    let mut sum = vec![0.0f64; ch];
    let mut sum_sq = vec![0.0f64; ch];
    let mut clipped = vec![0u64; ch];
    let mut welch = Welch::new(rate, ch);
    let mut spans = Vec::new();
    let mut spans_total = 0usize;
    // The current silent run: start frame, and whether it is all zeros.
    let mut run: Option<(u64, bool)> = None;
    let mut first_sound: Option<u64> = None;
    let mut first_loud: Option<(u64, u16, f64)> = None;
    let mut first_nonzero: Option<(u64, u16, f64)> = None;
    let mut last_sound: Option<u64> = None;
    let mut close_run = |run: &mut Option<(u64, bool)>, end: u64| {
        if let Some((start, digital)) = run.take() {
            if end - start >= min_span {
                spans_total += 1;
                if spans.len() < MAX_SPANS_LISTED {
                    spans.push(SilentSpan {
                        start_s: start as f64 / rate as f64,
                        end_s: end as f64 / rate as f64,
                        start_frame: start,
                        frames: end - start,
                        digital,
                    });
                }
            }
        }
    };

    let (mut raw, mut dec) = (Vec::new(), Vec::new());
    let mut at = 0u64;
    while at < f.frames() {
        f.read_f64(at, CHUNK_FRAMES, &mut raw, &mut dec)?;
        for (i, frame) in dec.chunks_exact(ch).enumerate() {
            let n = at + i as u64;
            let mut silent = true;
            let mut zero = true;
            for (c, &v) in frame.iter().enumerate() {
                let a = v.abs();
                peak[c] = peak[c].max(a);
                sum[c] += v;
                sum_sq[c] += v * v;
                if v >= top || v <= -1.0 {
                    clipped[c] += 1;
                }
                if a > th && first_loud.is_none() {
                    first_loud = Some((n, c as u16 + 1, v));
                }
                if v != 0.0 && first_nonzero.is_none() {
                    first_nonzero = Some((n, c as u16 + 1, v));
                }
                silent &= a <= th;
                zero &= v == 0.0;
            }
            if !zero {
                first_sound.get_or_insert(n);
                last_sound = Some(n);
            }
            match (&mut run, silent) {
                (Some((_, digital)), true) => *digital &= zero,
                (None, true) => run = Some((n, zero)),
                (Some(_), false) => close_run(&mut run, n),
                (None, false) => {}
            }
        }
        welch.push(&dec);
        at += CHUNK_FRAMES as u64;
    }
    close_run(&mut run, f.frames());
    welch.finish();

    let frames = f.frames();
    let nf = frames.max(1) as f64;
    let channel_stats: Vec<ChannelStats> = (0..ch)
        .map(|c| ChannelStats {
            channel: c as u16 + 1,
            peak_dbfs: dbfs(peak[c]),
            rms_dbfs: dbfs((sum_sq[c] / nf).sqrt()),
            dc_offset: sum[c] / nf,
            clipped_samples: clipped[c],
            dominant_hz: welch.dominant_hz(Some(c)),
        })
        .collect();
    let total_sq: f64 = sum_sq.iter().sum();
    let (lead, trail) = match (first_sound, last_sound) {
        (Some(a), Some(b)) => (a, frames - b - 1),
        _ => (frames, 0),
    };
    Ok(Analysis {
        file: f.name(),
        format: f.shape.format.to_string(),
        rate,
        channels: ch as u16,
        frames,
        duration_s: f.duration_s(),
        peak_dbfs: dbfs(peak.iter().cloned().fold(0.0, f64::max)),
        rms_dbfs: dbfs((total_sq / (nf * ch as f64)).sqrt()),
        dominant_hz: welch.dominant_hz(None),
        channel_stats,
        leading_silence_s: lead as f64 / rate as f64,
        trailing_silence_s: trail as f64 / rate as f64,
        silence_below_dbfs,
        silent_spans: spans,
        silent_spans_total: spans_total,
        spectra: welch,
        first_loud,
        first_nonzero,
    })
}

#[cfg(test)]
mod tests {
    use super::super::tests_support::*;
    use super::*;

    #[test]
    fn levels_dc_clipping_and_frequency() {
        // Channel 1: a -6 dBFS 1 kHz sine; channel 2: a DC offset of +0.25 with 3 clipped
        // samples at +full scale.
        let n = 48000;
        let t = tone(48000, 1, 1000.0, 0.5, n);
        let mut s = Vec::with_capacity(2 * n);
        for (i, v) in t.iter().enumerate() {
            s.push((v * 32767.0).round() as i16);
            s.push(if i < 3 { 32767 } else { 8192 });
        }
        let mut f = file_s16("a.wav", 48000, 2, &s);
        let a = analyze(&mut f, -60.0).unwrap();
        assert_eq!(a.frames, 48000);
        assert!((a.duration_s - 1.0).abs() < 1e-12);
        let c1 = &a.channel_stats[0];
        assert!((c1.peak_dbfs + 6.02).abs() < 0.01, "{c1:?}");
        assert!((c1.rms_dbfs + 9.03).abs() < 0.01, "{c1:?}");
        assert!(c1.dc_offset.abs() < 1e-4);
        assert_eq!(c1.clipped_samples, 0);
        assert!((c1.dominant_hz.unwrap() - 1000.0).abs() < 0.1);
        let c2 = &a.channel_stats[1];
        assert_eq!(c2.clipped_samples, 3);
        assert!((c2.dc_offset - 0.25).abs() < 1e-3, "{c2:?}");
        assert_eq!(c2.dominant_hz, None, "a DC offset has no frequency");
        assert!((a.peak_dbfs - 0.0).abs() < 0.01);
        assert!(a.silent_spans.is_empty());
    }

    #[test]
    fn silent_spans_leading_and_trailing_silence() {
        // 100 ms digital silence, 200 ms tone, 100 ms at -80 dBFS (quiet, not digital),
        // 20 ms zeros (too short to list), 200 ms tone, 60 ms zeros.
        let rate = 8000;
        let ms = |m: usize| rate as usize * m / 1000;
        let mut s: Vec<f64> = vec![0.0; ms(100)];
        s.extend(tone(rate, 1, 440.0, 0.5, ms(200)));
        s.extend(vec![0.0001; ms(100)]);
        s.extend(tone(rate, 1, 440.0, 0.5, ms(200)).iter().take(5));
        s.extend(vec![0.0; ms(20)]);
        s.extend(tone(rate, 1, 440.0, 0.5, ms(200)));
        s.extend(vec![0.0; ms(60)]);
        let samples: Vec<f32> = s.iter().map(|&v| v as f32).collect();
        let mut f = file_f32("s.wav", rate, 1, &samples);
        let a = analyze(&mut f, -60.0).unwrap();
        let spans: Vec<(u64, u64, bool)> = a
            .silent_spans
            .iter()
            .map(|s| (s.start_frame, s.frames, s.digital))
            .collect();
        let t1 = (ms(100) + ms(200)) as u64;
        let t3 = t1 + ms(100) as u64 + 5 + ms(20) as u64 + ms(200) as u64;
        assert_eq!(
            spans,
            vec![
                (0, ms(100) as u64, true),
                (t1, ms(100) as u64, false),
                (t3, ms(60) as u64, true)
            ]
        );
        assert_eq!(a.silent_spans_total, 3);
        assert!((a.leading_silence_s - 0.1).abs() < 1e-9);
        assert!((a.trailing_silence_s - 0.06).abs() < 1e-9);
    }

    #[test]
    fn digital_silence_reads_minus_infinity() {
        let mut f = file_s16("z.wav", 8000, 2, &[0; 1600]);
        let a = analyze(&mut f, -60.0).unwrap();
        assert!(a.is_digital_silence());
        assert!(!a.louder_than(-200.0));
        assert_eq!(a.rms_dbfs, f64::NEG_INFINITY);
        assert_eq!(a.dominant_hz, None);
        let json = serde_json::to_string(&a).unwrap();
        assert!(json.contains("\"peak_dbfs\":null"), "{json}");
    }
}
