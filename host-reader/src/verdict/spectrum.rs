//! The frequency-domain work, all through realfft/rustfft: averaged power spectra (Welch's
//! method, Hann windows) for the dominant frequency and `--expect-tone`, the short-time spectra
//! of the plot's spectrogram, and the cross-correlation that aligns a capture with its golden.

use std::sync::Arc;

use realfft::num_complex::Complex;
use realfft::{RealFftPlanner, RealToComplex};

/// Bins on each side of a tone's peak that count as the tone (a Hann window's main lobe is
/// two bins wide on each side; one more takes a tone between two bins).
const TONE_HALF_WIDTH: usize = 3;
/// Frequencies below this many bins are DC (and an offset is reported as DC, not as a tone).
const DC_BINS: usize = 2;

/// The FFT size for a rate: about 6 Hz per bin, at least 1024 points.
pub fn fft_size(rate: u32) -> usize {
    ((rate as usize) / 6).next_power_of_two().clamp(1024, 32768)
}

/// A Hann window of `n` points.
pub fn hann(n: usize) -> Vec<f32> {
    (0..n)
        .map(|i| {
            let x = std::f64::consts::PI * 2.0 * i as f64 / n as f64;
            (0.5 - 0.5 * x.cos()) as f32
        })
        .collect()
}

/// Power spectra of one window at a time.
pub struct Stft {
    n: usize,
    fft: Arc<dyn RealToComplex<f32>>,
    window: Vec<f32>,
    input: Vec<f32>,
    output: Vec<Complex<f32>>,
    scratch: Vec<Complex<f32>>,
}

impl Stft {
    pub fn new(n: usize) -> Stft {
        let fft = RealFftPlanner::<f32>::new().plan_fft_forward(n);
        Stft {
            n,
            input: fft.make_input_vec(),
            output: fft.make_output_vec(),
            scratch: fft.make_scratch_vec(),
            window: hann(n),
            fft,
        }
    }

    pub fn len(&self) -> usize {
        self.n
    }

    pub fn is_empty(&self) -> bool {
        self.n == 0
    }

    /// Adds the power spectrum (`n/2 + 1` bins) of `samples` (cut to `n`; fewer samples get a
    /// window of their own length and are zero-padded) to `acc`.
    pub fn accumulate(&mut self, samples: &[f32], acc: &mut [f64]) {
        let len = samples.len().min(self.n);
        let short = (len < self.n).then(|| hann(len));
        let window = short.as_deref().unwrap_or(&self.window);
        for (i, x) in self.input.iter_mut().enumerate() {
            *x = if i < len { samples[i] * window[i] } else { 0.0 };
        }
        // The lengths are the planner's own, so the transform cannot fail.
        if self
            .fft
            .process_with_scratch(&mut self.input, &mut self.output, &mut self.scratch)
            .is_ok()
        {
            for (a, c) in acc.iter_mut().zip(&self.output) {
                *a += c.norm_sqr() as f64;
            }
        }
    }
}

/// A power spectrum averaged over many windows, per channel (Welch's method without overlap),
/// plus the mean square of the samples it saw: what the dominant frequency and a tone's level
/// come from. Each window's mean is removed first (a DC offset is reported as such, not as a
/// low tone). Windows that are more than a tenth digital silence are skipped, so leading and
/// trailing silence do not dilute a tone's level.
pub struct Welch {
    rate: u32,
    stft: Stft,
    channels: usize,
    pending: Vec<Vec<f32>>,
    power: Vec<Vec<f64>>,
    sum_sq: Vec<f64>,
    samples: u64,
    windows: u64,
}

impl Welch {
    pub fn new(rate: u32, channels: usize) -> Welch {
        let n = fft_size(rate);
        Welch {
            rate,
            stft: Stft::new(n),
            channels,
            pending: vec![Vec::with_capacity(n); channels],
            power: vec![vec![0.0; n / 2 + 1]; channels],
            sum_sq: vec![0.0; channels],
            samples: 0,
            windows: 0,
        }
    }

    /// Adds interleaved frames.
    pub fn push(&mut self, interleaved: &[f64]) {
        let n = self.stft.len();
        for frame in interleaved.chunks_exact(self.channels) {
            for (p, &v) in self.pending.iter_mut().zip(frame) {
                p.push(v as f32);
            }
            if self.pending[0].len() == n {
                self.flush_window();
            }
        }
    }

    fn flush_window(&mut self) {
        let len = self.pending[0].len();
        let zero_frames = (0..len)
            .filter(|&i| self.pending.iter().all(|p| p[i] == 0.0))
            .count();
        if len > 0 && zero_frames * 10 <= len {
            for c in 0..self.channels {
                let p = &mut self.pending[c];
                let mean = p.iter().map(|&v| v as f64).sum::<f64>() / len as f64;
                for v in p.iter_mut() {
                    *v -= mean as f32;
                }
                self.stft.accumulate(p, &mut self.power[c]);
                self.sum_sq[c] += p.iter().map(|&v| v as f64 * v as f64).sum::<f64>();
            }
            self.samples += len as u64;
            self.windows += 1;
        }
        for p in &mut self.pending {
            p.clear();
        }
    }

    /// Ends the input. A last partial window counts only when there was no whole one (a
    /// short file), with a window of its own length.
    pub fn finish(&mut self) {
        if self.windows == 0 && self.pending[0].len() >= 64 {
            self.flush_window();
        }
        for p in &mut self.pending {
            p.clear();
        }
    }

    pub fn bin_hz(&self) -> f64 {
        self.rate as f64 / self.stft.len() as f64
    }

    /// The power spectrum of `channel`, or of all channels summed (`None`).
    fn spectrum(&self, channel: Option<usize>) -> Vec<f64> {
        match channel {
            Some(c) => self.power[c].clone(),
            None => {
                let mut s = vec![0.0; self.power[0].len()];
                for p in &self.power {
                    for (a, b) in s.iter_mut().zip(p) {
                        *a += b;
                    }
                }
                s
            }
        }
    }

    /// The strongest frequency (DC excluded), interpolated between bins; `None` without sound.
    pub fn dominant_hz(&self, channel: Option<usize>) -> Option<f64> {
        let s = self.spectrum(channel);
        peak_hz(&s, self.bin_hz())
    }

    /// The level of a tone at `hz` in `channel`: the amplitude (peak of the sine, in dBFS, so
    /// a full-scale sine is 0 dBFS) of the power within a few bins of it; and the frequency
    /// of the strongest bin there. `None` without sound.
    pub fn tone_at(&self, channel: usize, hz: f64) -> Option<(f64, f64)> {
        if self.samples == 0 {
            return None;
        }
        let s = &self.power[channel];
        let total: f64 = s.iter().sum();
        if total <= 0.0 {
            return None;
        }
        let k = (hz / self.bin_hz()).round() as usize;
        let lo = k.saturating_sub(TONE_HALF_WIDTH).max(DC_BINS.min(k));
        let hi = (k + TONE_HALF_WIDTH).min(s.len() - 1);
        if lo > hi {
            return None;
        }
        let band: f64 = s[lo..=hi].iter().sum();
        let mean_sq = self.sum_sq[channel] / self.samples as f64;
        let amp = (2.0 * mean_sq * band / total).sqrt();
        let top = (lo..=hi)
            .max_by(|&a, &b| s[a].total_cmp(&s[b]))
            .unwrap_or(k);
        Some((super::dbfs(amp), interpolate(s, top) * self.bin_hz()))
    }

    /// Windows that held sound.
    pub fn windows(&self) -> u64 {
        self.windows
    }
}

/// The strongest bin above DC of a power spectrum, in Hz.
pub fn peak_hz(power: &[f64], bin_hz: f64) -> Option<f64> {
    if power.len() <= DC_BINS + 1 {
        return None;
    }
    let (k, &p) = power
        .iter()
        .enumerate()
        .skip(DC_BINS)
        .max_by(|a, b| a.1.total_cmp(b.1))?;
    // Rounding noise next to a pure DC offset is no frequency.
    let total: f64 = power.iter().sum();
    (p > total * 1e-10).then(|| interpolate(power, k) * bin_hz)
}

/// The peak's position between bins, from the magnitudes of bin `k` and its larger
/// neighbour: for a Hann window the ratio of the two gives the offset exactly (a pure tone's
/// main lobe is |X(d)| ∝ sinc(d)/(1 - d²) for d bins away from it).
fn interpolate(power: &[f64], k: usize) -> f64 {
    if k == 0 || k + 1 >= power.len() {
        return k as f64;
    }
    let (a, b, c) = (power[k - 1].sqrt(), power[k].sqrt(), power[k + 1].sqrt());
    if b <= 0.0 {
        return k as f64;
    }
    let d = if c > a {
        (2.0 * c - b) / (b + c)
    } else {
        -(2.0 * a - b) / (a + b)
    };
    k as f64 + d.clamp(-0.5, 0.5)
}

/// The lag at which `a` best matches `b` (`a[i + lag] ≈ g · b[i]`, either sign of `g`), as
/// an integer lag plus a fraction in (-0.5, 0.5) from the correlation peak's neighbours,
/// found with one FFT-based cross-correlation. `None` if either is empty or silent.
pub fn best_lag(a: &[f32], b: &[f32]) -> Option<(i64, f64)> {
    if a.is_empty() || b.is_empty() {
        return None;
    }
    let n = (a.len() + b.len()).next_power_of_two();
    let mut planner = RealFftPlanner::<f32>::new();
    let fwd = planner.plan_fft_forward(n);
    let inv = planner.plan_fft_inverse(n);
    let spectrum = |x: &[f32]| -> Option<Vec<Complex<f32>>> {
        let mut input = fwd.make_input_vec();
        input[..x.len()].copy_from_slice(x);
        let mut out = fwd.make_output_vec();
        fwd.process(&mut input, &mut out).ok()?;
        Some(out)
    };
    let mut sa = spectrum(a)?;
    let sb = spectrum(b)?;
    for (x, y) in sa.iter_mut().zip(&sb) {
        *x *= y.conj();
    }
    // The DC and Nyquist bins of a real signal's spectrum are real; rounding may leave a
    // trace of imaginary part, which the inverse transform refuses.
    sa[0].im = 0.0;
    if let Some(last) = sa.last_mut() {
        last.im = 0.0;
    }
    let mut corr = inv.make_output_vec();
    inv.process(&mut sa, &mut corr).ok()?;
    // corr[k] = sum a[i + k] b[i] for lags 0..a.len(); negative lags wrap to n - m.
    let lag_of = |k: usize| -> i64 {
        if k < a.len() {
            k as i64
        } else {
            k as i64 - n as i64
        }
    };
    let valid = |k: usize| k < a.len() || k > n - b.len();
    let (k, &peak) = corr
        .iter()
        .enumerate()
        .filter(|(k, _)| valid(*k))
        .max_by(|x, y| x.1.abs().total_cmp(&y.1.abs()))?;
    if peak == 0.0 {
        return None;
    }
    let at = |k: usize| corr[k % n] as f64 * peak.signum() as f64;
    let (l, c, r) = (at(k + n - 1), at(k), at(k + 1));
    let d = l - 2.0 * c + r;
    let frac = if d < 0.0 {
        (0.5 * (l - r) / d).clamp(-0.5, 0.5)
    } else {
        0.0
    };
    Some((lag_of(k), frac))
}

#[cfg(test)]
mod tests {
    use super::super::tests_support::*;
    use super::*;

    #[test]
    fn dominant_frequency_of_a_tone_within_a_fiftieth_of_a_hertz() {
        for (rate, hz) in [
            (48000, 440.0),
            (44100, 1000.0),
            (8000, 1234.5),
            (48000, 15000.0),
        ] {
            let mut w = Welch::new(rate, 2);
            w.push(&tone(rate, 2, hz, 0.5, rate as usize));
            w.finish();
            let got = w.dominant_hz(None).unwrap();
            assert!((got - hz).abs() < 0.02, "{rate} Hz: {hz} read as {got}");
            assert!((w.dominant_hz(Some(1)).unwrap() - hz).abs() < 0.02);
        }
    }

    #[test]
    fn a_tones_level_is_its_amplitude_in_dbfs() {
        let mut w = Welch::new(48000, 1);
        let mut sig = vec![0.0; 48000]; // leading silence must not dilute the level
        sig.extend(tone(48000, 1, 1000.0, 0.5, 48000));
        w.push(&sig);
        w.finish();
        let (db, hz) = w.tone_at(0, 1000.0).unwrap();
        assert!((db - (-6.02)).abs() < 0.1, "{db}");
        assert!((hz - 1000.0).abs() < 0.1, "{hz}");
        // Nothing at 3 kHz.
        let (db, _) = w.tone_at(0, 3000.0).unwrap();
        assert!(db < -60.0, "{db}");
    }

    #[test]
    fn a_dc_offset_is_not_a_tone_and_silence_has_none() {
        let mut w = Welch::new(48000, 1);
        w.push(&vec![0.25; 48000]);
        w.finish();
        assert_eq!(w.dominant_hz(None), None);
        let mut w = Welch::new(48000, 1);
        w.push(&vec![0.0; 48000]);
        w.finish();
        assert_eq!(w.dominant_hz(None), None);
        assert_eq!(w.windows(), 0);
    }

    #[test]
    fn the_lag_of_a_shifted_copy_is_found_either_way() {
        let x: Vec<f32> = noise(7, 5000, 0.5).iter().map(|&v| v as f32).collect();
        let mut later = vec![0.0f32; 123];
        later.extend_from_slice(&x);
        assert_eq!(best_lag(&later, &x).map(|l| l.0), Some(123));
        assert_eq!(best_lag(&x, &later).map(|l| l.0), Some(-123));
        let inverted: Vec<f32> = later.iter().map(|v| -0.25 * v).collect();
        assert_eq!(best_lag(&inverted, &x).map(|l| l.0), Some(123));
        assert_eq!(best_lag(&[0.0; 10], &x), None);
    }
}
