//! Verdicts and pictures for CI: is what the guest played what was expected, and what does it
//! look like?
//!
//! - [`audio`]: capture and golden files, read by frame ranges.
//! - [`exact`]: `--expect GOLDEN` — bit-exact after aligning the starts (`--strict`: from the
//!   first frame to the last).
//! - [`tolerant`]: `--expect GOLDEN --expect-tolerance DB` — best alignment and gain, the
//!   residual relative to the signal (across rates and channel counts).
//! - [`spectrum`]: the FFT work (realfft): averaged spectra, dominant frequency, correlation.
//! - [`analysis`]: per-file figures (duration, peak/RMS dBFS, DC, clipping, silent spans,
//!   dominant frequency); `--expect-tone`, `--expect-silence`, `--expect-sound` judge them.
//! - [`marks`]: what happened during a capture (segment starts, gaps, xruns, parameter
//!   changes, the device closing and reopening), placed on the file's own time axis.
//! - [`judge`]: runs the requested checks over a capture's files: the verdict and its line.
//! - [`report`]: `--report FILE.json` and `--junit FILE.xml`.
//! - [`plot`]: `--plot FILE.png` (plotters): each channel's waveform and a spectrogram.
//! - [`check`]: `--check FILE…`, the same on existing files.

pub mod analysis;
pub mod args;
pub mod audio;
pub mod check;
pub mod exact;
pub mod judge;
pub mod marks;
pub mod plot;
pub mod report;
pub mod spectrum;
pub mod tolerant;

use std::io;
use std::path::{Path, PathBuf};

use serde::Serialize;
use thiserror::Error;

use audio::AudioFile;

/// The exit status of a capture or check whose expectations were not met: distinct from the
/// reader's errors (1) and bad usage (2).
pub const EXIT_MISMATCH: u8 = 3;

/// Why a verdict could not be reached (not a mismatch: the files could not be judged).
#[derive(Debug, Error)]
pub enum VerdictError {
    #[error("{}: {source}", path.display())]
    Io { path: PathBuf, source: io::Error },
    #[error("{}: {why}", path.display())]
    NotAudio { path: PathBuf, why: String },
    #[error("{0}")]
    Other(String),
}

impl VerdictError {
    pub fn io(path: &Path, source: io::Error) -> VerdictError {
        VerdictError::Io {
            path: path.to_path_buf(),
            source,
        }
    }
}

/// Where a capture first differs from what was expected.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Mismatch {
    /// The capture file.
    pub file: String,
    /// Frame of the capture (0-based) and its time.
    pub frame: u64,
    pub time_s: f64,
    /// 1-based, when one channel is to blame.
    pub channel: Option<u16>,
    /// The samples, in the files' own units (S16: -32768..32767; float: the value).
    pub capture_value: Option<String>,
    pub golden_value: Option<String>,
    /// The golden's frame that was compared with `frame`.
    pub golden_frame: Option<u64>,
    /// What differs, in words.
    pub why: String,
}

impl Mismatch {
    pub fn at(capture: &AudioFile, frame: u64, why: String) -> Mismatch {
        Mismatch {
            file: capture.name(),
            frame,
            time_s: frame as f64 / capture.rate() as f64,
            channel: None,
            capture_value: None,
            golden_value: None,
            golden_frame: None,
            why,
        }
    }
}

impl std::fmt::Display for Mismatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "at {:.6} s (frame {}): {}",
            self.time_s, self.frame, self.why
        )
    }
}

/// `frames` at `rate` as seconds, e.g. `1.021 s`.
pub fn secs(frames: u64, rate: u32) -> String {
    format!("{:.3} s", frames as f64 / rate.max(1) as f64)
}

/// A linear level in dBFS (`-inf` for zero).
pub fn dbfs(level: f64) -> f64 {
    if level > 0.0 {
        20.0 * level.log10()
    } else {
        f64::NEG_INFINITY
    }
}

/// A dB figure for a line of text: `-6.0 dBFS`, `-inf dBFS`.
pub fn show_db(db: f64, unit: &str) -> String {
    if db.is_finite() {
        format!("{db:.1} {unit}")
    } else if db < 0.0 {
        format!("-inf {unit}")
    } else {
        format!("+inf {unit}")
    }
}

#[cfg(test)]
pub(crate) mod tests_support {
    //! Files made in memory for the verdict tests.
    use super::audio::AudioFile;
    use crate::convert::AudioShape;
    use dsproxy_wire::PcmFormat;
    use std::io::Cursor;
    use std::path::Path;

    pub fn file_bytes(name: &str, format: PcmFormat, rate: u32, ch: u16, data: &[u8]) -> AudioFile {
        let shape = AudioShape {
            format,
            rate_hz: rate,
            channels: ch,
        };
        let spec = crate::wav::WavSpec::for_shape(shape).unwrap();
        let mut w = crate::wav::WavWriter::new(Cursor::new(Vec::new()), spec).unwrap();
        w.write(data).unwrap();
        let bytes = w.finalize().unwrap().into_inner();
        AudioFile::from_source(Path::new(name), Box::new(Cursor::new(bytes)), None).unwrap()
    }

    pub fn file_s16(name: &str, rate: u32, ch: u16, samples: &[i16]) -> AudioFile {
        let data: Vec<u8> = samples.iter().flat_map(|v| v.to_le_bytes()).collect();
        file_bytes(name, PcmFormat::S16, rate, ch, &data)
    }

    pub fn file_f32(name: &str, rate: u32, ch: u16, samples: &[f32]) -> AudioFile {
        let data: Vec<u8> = samples.iter().flat_map(|v| v.to_le_bytes()).collect();
        file_bytes(name, PcmFormat::FLOAT, rate, ch, &data)
    }

    /// `frames` frames of a sine (the same in every channel), starting at a phase whose first
    /// sample is not zero, so the sound starts at frame 0.
    pub fn tone(rate: u32, ch: u16, hz: f64, amp: f64, frames: usize) -> Vec<f64> {
        let mut v = Vec::with_capacity(frames * ch as usize);
        for i in 0..frames {
            let x = amp * (0.3 + 2.0 * std::f64::consts::PI * hz * i as f64 / rate as f64).sin();
            for _ in 0..ch {
                v.push(x);
            }
        }
        v
    }

    pub fn tone_i16(rate: u32, ch: u16, hz: f64, amp: f64, frames: usize) -> Vec<i16> {
        tone(rate, ch, hz, amp, frames)
            .iter()
            .map(|x| (x * 32767.0).round() as i16)
            .collect()
    }

    /// A deterministic pseudo-random sequence in [-amp, amp).
    pub fn noise(seed: u64, n: usize, amp: f64) -> Vec<f64> {
        let mut s = seed
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (0..n)
            .map(|_| {
                s = s
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                ((s >> 11) as f64 / (1u64 << 53) as f64 * 2.0 - 1.0) * amp
            })
            .collect()
    }
}
