//! `--expect GOLDEN --expect-tolerance DB`: for paths that resample or mix, where the capture
//! cannot be bit-exact. The golden is brought to the capture's channel count (the reader's
//! own remix rules) and rate (rubato's FFT resampler), aligned to the capture (FFT
//! cross-correlation, refined to a fraction of a sample), scaled by the best gain per channel
//! (least squares), and subtracted. The residual — including golden audio the capture lacks
//! and capture audio the golden lacks — must be at least DB below the golden's energy.
//!
//! Both files are held in memory as `f32` (4 bytes a sample): fine for the minutes a CI
//! capture lasts.

use rubato::audioadapter_buffers::direct::InterleavedSlice;
use rubato::{Fft, FixedSync, Resampler};

use super::audio::AudioFile;
use super::spectrum::best_lag;
use super::{dbfs, show_db, Mismatch, VerdictError};

/// Seconds of each file the alignment looks at (from each one's first sound).
const ALIGN_WINDOW_S: f64 = 20.0;
/// How far before the capture's first sound the alignment also looks, in seconds.
const ALIGN_SLACK_S: f64 = 1.0;
/// A sound starts where the mono mix first reaches this far below its peak.
const START_BELOW_PEAK_DB: f64 = 40.0;
/// Half the taps of the fractional-delay filter.
const SINC_HALF: i64 = 16;
/// The local residual is judged in blocks this long (seconds).
const BLOCK_S: f64 = 0.010;

/// What the tolerant comparison found.
#[derive(Debug, Clone, PartialEq)]
pub struct TolerantResult {
    /// Residual energy over the golden's energy, in dB (all channels).
    pub residual_db: f64,
    pub channel_residual_db: Vec<f64>,
    /// The gain applied to the golden, per channel, in dB.
    pub gain_db: Vec<f64>,
    /// Where the golden's start lies in the capture, in seconds (positive: the capture is
    /// later).
    pub offset_s: f64,
    /// The golden's rate and channels, when they were converted.
    pub resampled_from: Option<u32>,
    pub remixed_from: Option<u16>,
    pub tolerance_db: f64,
    pub mismatch: Option<Mismatch>,
}

impl TolerantResult {
    pub fn matched(&self) -> bool {
        self.mismatch.is_none()
    }
}

/// Compares; see the module documentation. `tolerance_db` is how far below the signal the
/// residual must be (its sign is ignored: 40 and -40 both mean "-40 dB or less").
pub fn compare(
    capture: &mut AudioFile,
    golden: &mut AudioFile,
    tolerance_db: f64,
) -> Result<TolerantResult, VerdictError> {
    let tol = -tolerance_db.abs();
    let rate = capture.rate();
    let ch = capture.channels();
    let cap = capture.load_planar()?;
    let (gold, resampled_from, remixed_from) = golden_as(golden, rate, ch)?;
    let cap_len = cap[0].len();

    let mut res = TolerantResult {
        residual_db: f64::NEG_INFINITY,
        channel_residual_db: vec![f64::NEG_INFINITY; ch],
        gain_db: vec![0.0; ch],
        offset_s: 0.0,
        resampled_from,
        remixed_from,
        tolerance_db: tol,
        mismatch: None,
    };

    let cm = mono(&cap);
    let gm = mono(&gold);
    let (Some(c0), Some(g0)) = (sound_start(&cm), sound_start(&gm)) else {
        // One of them is silent: then both must be.
        let c_peak = peak(&cm);
        let g_peak = peak(&gm);
        if c_peak == 0.0 && g_peak == 0.0 {
            return Ok(res);
        }
        res.residual_db = 0.0;
        res.mismatch = Some(if g_peak == 0.0 {
            let at = cm.iter().position(|&v| v != 0.0).unwrap_or(0);
            Mismatch::at(
                capture,
                at as u64,
                format!(
                    "the capture has sound ({} peak) where {} is silent",
                    show_db(dbfs(c_peak as f64), "dBFS"),
                    golden.name()
                ),
            )
        } else {
            Mismatch::at(
                capture,
                0,
                format!(
                    "the capture is silent; {} is not ({} peak)",
                    golden.name(),
                    show_db(dbfs(g_peak as f64), "dBFS")
                ),
            )
        });
        return Ok(res);
    };

    // Align: the golden's first seconds of sound against the capture's, with some slack.
    let win = (ALIGN_WINDOW_S * rate as f64) as usize;
    let slack = (ALIGN_SLACK_S * rate as f64) as usize;
    let ca = c0.saturating_sub(slack);
    let a = &cm[ca..(c0 + win).min(cap_len)];
    let b = &gm[g0..(g0 + win).min(gm.len())];
    let (lag, frac) = best_lag(a, b).unwrap_or((0, 0.0));
    // Golden index i sits at capture index i + delay.
    let delay = (ca as f64 - g0 as f64) + lag as f64 + frac;
    res.offset_s = delay / rate as f64;

    let aligned: Vec<Vec<f32>> = gold.iter().map(|g| shift(g, delay, cap_len)).collect();
    // Golden audio that falls outside the capture is missing from it.
    let missing: Vec<f64> = gold
        .iter()
        .map(|g| {
            g.iter()
                .enumerate()
                .filter(|(i, _)| {
                    let j = *i as f64 + delay;
                    j < 0.0 || j >= cap_len as f64
                })
                .map(|(_, &v)| v as f64 * v as f64)
                .sum()
        })
        .collect();

    let mut res_total = 0.0;
    let mut sig_total = 0.0;
    let mut gains = Vec::with_capacity(ch);
    for c in 0..ch {
        let (cc, gg) = (&cap[c], &aligned[c]);
        let cg: f64 = cc.iter().zip(gg).map(|(&x, &y)| x as f64 * y as f64).sum();
        let g2: f64 = gg.iter().map(|&y| y as f64 * y as f64).sum();
        let gain = if g2 > 0.0 { cg / g2 } else { 0.0 };
        let r: f64 = cc
            .iter()
            .zip(gg)
            .map(|(&x, &y)| {
                let d = x as f64 - gain * y as f64;
                d * d
            })
            .sum::<f64>()
            + gain * gain * missing[c];
        let s = gain * gain * (g2 + missing[c]);
        // A channel the golden has but the capture lacks entirely: its energy is residual.
        let (r, s) = if gain == 0.0 {
            let e = g2 + missing[c];
            (r + e, e)
        } else {
            (r, s)
        };
        res.channel_residual_db[c] = ratio_db(r, s);
        res.gain_db[c] = dbfs(gain.abs());
        res_total += r;
        sig_total += s;
        gains.push(gain);
    }
    res.residual_db = ratio_db(res_total, sig_total);
    if res.residual_db <= tol {
        return Ok(res);
    }
    res.mismatch = Some(first_bad_block(
        capture, golden, &cap, &aligned, &gains, &res, delay,
    ));
    Ok(res)
}

/// A golden converted for comparison: its channels, and the rate and channel count it was
/// converted from (when it was).
type Converted = (Vec<Vec<f32>>, Option<u32>, Option<u16>);

/// The golden, converted to the capture's channel count and rate.
fn golden_as(golden: &mut AudioFile, rate: u32, ch: usize) -> Result<Converted, VerdictError> {
    let planes = golden.load_planar()?;
    let g_ch = planes.len();
    let frames = planes[0].len();
    if g_ch == ch && golden.rate() == rate {
        return Ok((planes, None, None));
    }
    let mut inter = Vec::with_capacity(frames * g_ch);
    for i in 0..frames {
        for p in &planes {
            inter.push(p[i]);
        }
    }
    let mut remixed = Vec::with_capacity(frames * ch);
    crate::convert::remix(&inter, g_ch, ch, &mut remixed);
    let remixed_from = (g_ch != ch).then_some(g_ch as u16);
    let resampled_from = (golden.rate() != rate).then_some(golden.rate());
    let out = if resampled_from.is_some() && frames > 0 {
        let fail = |e: String| {
            VerdictError::Other(format!(
                "{}: cannot resample from {} Hz to {rate} Hz: {e}",
                golden.name(),
                golden.rate()
            ))
        };
        let mut rs = Fft::<f32>::new(
            golden.rate() as usize,
            rate as usize,
            1024,
            ch,
            FixedSync::Input,
        )
        .map_err(|e| fail(e.to_string()))?;
        let input = InterleavedSlice::new(&remixed, ch, frames).map_err(|e| fail(e.to_string()))?;
        rs.process_all(&input, frames, None)
            .map_err(|e| fail(e.to_string()))?
            .take_data()
    } else {
        remixed
    };
    let n = out.len() / ch;
    let planes = (0..ch)
        .map(|c| (0..n).map(|i| out[i * ch + c]).collect())
        .collect();
    Ok((planes, resampled_from, remixed_from))
}

fn mono(planes: &[Vec<f32>]) -> Vec<f32> {
    let n = planes[0].len();
    let k = planes.len() as f32;
    (0..n)
        .map(|i| planes.iter().map(|p| p[i]).sum::<f32>() / k)
        .collect()
}

fn peak(x: &[f32]) -> f32 {
    x.iter().fold(0.0f32, |m, &v| m.max(v.abs()))
}

/// Where a signal's sound starts: the first sample within START_BELOW_PEAK_DB of its peak.
fn sound_start(x: &[f32]) -> Option<usize> {
    let p = peak(x);
    if p == 0.0 {
        return None;
    }
    let th = p * 10f32.powf(-(START_BELOW_PEAK_DB as f32) / 20.0);
    x.iter().position(|&v| v.abs() >= th)
}

fn ratio_db(residual: f64, signal: f64) -> f64 {
    if residual <= 0.0 {
        f64::NEG_INFINITY
    } else if signal <= 0.0 {
        f64::INFINITY
    } else {
        10.0 * (residual / signal).log10()
    }
}

/// `g` delayed by `delay` samples (any real number) and cut to `len` samples: integer delays
/// are copies, fractional ones go through a Hann-windowed sinc interpolator.
fn shift(g: &[f32], delay: f64, len: usize) -> Vec<f32> {
    let mut out = vec![0.0f32; len];
    let whole = delay.floor();
    let frac = delay - whole;
    let whole = whole as i64;
    if frac.abs() < 1e-3 || (1.0 - frac).abs() < 1e-3 {
        let whole = whole + (frac > 0.5) as i64;
        for (j, o) in out.iter_mut().enumerate() {
            let i = j as i64 - whole;
            if i >= 0 && (i as usize) < g.len() {
                *o = g[i as usize];
            }
        }
        return out;
    }
    // out[j] = g(j - delay) = g(i0 + t), i0 = j - whole - 1, t = 1 - frac.
    let t = 1.0 - frac;
    let taps: Vec<f32> = (-SINC_HALF + 1..=SINC_HALF)
        .map(|k| {
            let x = k as f64 - t;
            let sinc = if x.abs() < 1e-12 {
                1.0
            } else {
                (std::f64::consts::PI * x).sin() / (std::f64::consts::PI * x)
            };
            let w = 0.5 + 0.5 * (std::f64::consts::PI * x / SINC_HALF as f64).cos();
            (sinc * w) as f32
        })
        .collect();
    for (j, o) in out.iter_mut().enumerate() {
        let i0 = j as i64 - whole - 1;
        if i0 + SINC_HALF < 0 || i0 - SINC_HALF >= g.len() as i64 {
            continue;
        }
        let mut acc = 0.0f32;
        for (n, k) in (-SINC_HALF + 1..=SINC_HALF).enumerate() {
            let i = i0 + k;
            if i >= 0 && (i as usize) < g.len() {
                acc += g[i as usize] * taps[n];
            }
        }
        *o = acc;
    }
    out
}

/// The first 10 ms block whose residual, relative to its own signal (or, in quiet passages,
/// to the golden's average level), exceeds the tolerance; or the capture's end when the
/// golden goes on past it.
fn first_bad_block(
    capture: &AudioFile,
    golden: &AudioFile,
    cap: &[Vec<f32>],
    aligned: &[Vec<f32>],
    gains: &[f64],
    res: &TolerantResult,
    delay: f64,
) -> Mismatch {
    let rate = capture.rate() as f64;
    let len = cap[0].len();
    let block = ((BLOCK_S * rate) as usize).max(1);
    let lin = 10f64.powf(res.tolerance_db / 10.0);
    let sig_energy: f64 = aligned
        .iter()
        .zip(gains)
        .map(|(g, &k)| g.iter().map(|&v| (k * v as f64).powi(2)).sum::<f64>())
        .sum();
    let active = aligned[0].iter().filter(|&&v| v != 0.0).count().max(1);
    let floor = sig_energy / active as f64 * block as f64 / cap.len() as f64;
    let summary = format!(
        "residual {} relative to {} after aligning ({:+.3} s) and scaling ({}), tolerance {}",
        show_db(res.residual_db, "dB"),
        golden.name(),
        res.offset_s,
        res.gain_db
            .iter()
            .map(|g| show_db(*g, "dB"))
            .collect::<Vec<_>>()
            .join(", "),
        show_db(res.tolerance_db, "dB")
    );
    for start in (0..len).step_by(block) {
        let end = (start + block).min(len);
        for c in 0..cap.len() {
            let (mut r, mut s, mut worst, mut worst_at) = (0.0, 0.0, -1.0, start);
            for j in start..end {
                let want = gains[c] * aligned[c][j] as f64;
                let d = cap[c][j] as f64 - want;
                r += d * d;
                s += want * want;
                if d.abs() > worst {
                    worst = d.abs();
                    worst_at = j;
                }
            }
            if r > lin * s.max(floor) {
                let want = gains[c] * aligned[c][worst_at] as f64;
                let mut m = Mismatch::at(
                    capture,
                    worst_at as u64,
                    format!(
                        "channel {}: the capture has {}, {} (aligned, scaled) {}; {summary}",
                        c + 1,
                        capture.show_value(cap[c][worst_at] as f64),
                        golden.name(),
                        capture.show_value(want)
                    ),
                );
                m.channel = Some(c as u16 + 1);
                m.capture_value = Some(capture.show_value(cap[c][worst_at] as f64));
                m.golden_value = Some(capture.show_value(want));
                let gf = worst_at as f64 - delay;
                m.golden_frame =
                    (gf >= 0.0).then(|| (gf * golden.rate() as f64 / rate).round() as u64);
                return m;
            }
        }
    }
    // Every block within tolerance: what is missing lies outside the capture.
    let at = if delay > 0.0 { 0 } else { len as u64 };
    Mismatch::at(
        capture,
        at,
        format!(
            "{} has sound outside the capture ({} {}); {summary}",
            golden.name(),
            if at == 0 {
                "before its start"
            } else {
                "after its end"
            },
            super::secs(at, capture.rate())
        ),
    )
}

#[cfg(test)]
mod tests {
    use super::super::tests_support::*;
    use super::*;

    fn f32s(v: &[f64]) -> Vec<f32> {
        v.iter().map(|&x| x as f32).collect()
    }

    fn music(rate: u32, secs: f64, ch: u16) -> Vec<f64> {
        // Two tones and a little noise: not periodic over the alignment window.
        let n = (rate as f64 * secs) as usize;
        let a = tone(rate, ch, 440.0, 0.3, n);
        let b = tone(rate, ch, 1234.5, 0.2, n);
        let z = noise(3, n * ch as usize, 0.05);
        a.iter()
            .zip(&b)
            .zip(&z)
            .map(|((x, y), w)| x + y + w)
            .collect()
    }

    #[test]
    fn a_delayed_quieter_copy_is_within_tolerance() {
        let g = music(48000, 1.0, 2);
        let mut c = vec![0.0; 2 * 4800]; // 100 ms later
        c.extend(g.iter().map(|v| v * 0.5)); // -6 dB
        let mut cf = file_f32("cap.wav", 48000, 2, &f32s(&c));
        let mut gf = file_f32("gold.wav", 48000, 2, &f32s(&g));
        let r = compare(&mut cf, &mut gf, 60.0).unwrap();
        assert!(r.matched(), "{r:?}");
        assert!((r.offset_s - 0.1).abs() < 1e-6, "{}", r.offset_s);
        assert!((r.gain_db[0] + 6.02).abs() < 0.01, "{:?}", r.gain_db);
        assert!(r.residual_db < -100.0, "{}", r.residual_db);
    }

    #[test]
    fn added_noise_fails_a_tight_tolerance_and_passes_a_loose_one() {
        let g = music(48000, 1.0, 1);
        let z = noise(9, g.len(), 0.02);
        let c: Vec<f64> = g.iter().zip(&z).map(|(a, b)| a + b).collect();
        let mut cf = file_f32("cap.wav", 48000, 1, &f32s(&c));
        let mut gf = file_f32("gold.wav", 48000, 1, &f32s(&g));
        let r = compare(&mut cf, &mut gf, 40.0).unwrap();
        let m = r
            .mismatch
            .clone()
            .expect("-26 dB of noise must FAIL a 40 dB tolerance");
        assert!(
            r.residual_db > -30.0 && r.residual_db < -20.0,
            "{}",
            r.residual_db
        );
        assert_eq!(m.channel, Some(1));
        assert!(m.why.contains("tolerance -40.0 dB"), "{}", m.why);
        let mut cf = file_f32("cap.wav", 48000, 1, &f32s(&c));
        let mut gf = file_f32("gold.wav", 48000, 1, &f32s(&g));
        assert!(compare(&mut cf, &mut gf, 20.0).unwrap().matched());
    }

    #[test]
    fn a_dropout_is_located() {
        let g = music(48000, 1.0, 1);
        let mut c = g.clone();
        for v in &mut c[30000..30480] {
            *v = 0.0; // 10 ms lost at 0.625 s
        }
        let mut cf = file_f32("cap.wav", 48000, 1, &f32s(&c));
        let mut gf = file_f32("gold.wav", 48000, 1, &f32s(&g));
        let r = compare(&mut cf, &mut gf, 30.0).unwrap();
        let m = r.mismatch.expect("a dropout must FAIL");
        assert!((m.time_s - 0.625).abs() < 0.011, "{}", m.time_s);
    }

    #[test]
    fn a_truncated_capture_fails() {
        let g = music(48000, 1.0, 1);
        let mut cf = file_f32("cap.wav", 48000, 1, &f32s(&g[..24000]));
        let mut gf = file_f32("gold.wav", 48000, 1, &f32s(&g));
        let r = compare(&mut cf, &mut gf, 20.0).unwrap();
        assert!(
            r.residual_db > -4.0,
            "half the golden is missing: {}",
            r.residual_db
        );
        assert!(!r.matched());
    }

    #[test]
    fn across_rates_and_channels() {
        // A 44.1 kHz mono golden; the capture is the same signal at 48 kHz in stereo.
        let g = music(44100, 1.0, 1);
        let c = music(48000, 1.0, 2);
        let mut cf = file_f32("cap.wav", 48000, 2, &f32s(&c));
        let mut gf = file_f32("gold.wav", 44100, 1, &f32s(&g));
        let r = compare(&mut cf, &mut gf, 20.0).unwrap();
        // The noise is not the same noise at the other rate; the tones are.
        assert!(r.residual_db < -10.0, "{r:?}");
        assert_eq!(r.resampled_from, Some(44100));
        assert_eq!(r.remixed_from, Some(1));
        let tones = |rate: u32, ch: u16| -> Vec<f64> {
            let n = rate as usize;
            tone(rate, ch, 440.0, 0.3, n)
                .iter()
                .zip(tone(rate, ch, 1234.5, 0.2, n))
                .map(|(a, b)| a + b)
                .collect()
        };
        let mut cf = file_f32("cap.wav", 48000, 2, &f32s(&tones(48000, 2)));
        let mut gf = file_f32("gold.wav", 44100, 1, &f32s(&tones(44100, 1)));
        let r = compare(&mut cf, &mut gf, 40.0).unwrap();
        assert!(r.matched(), "{r:?}");
    }

    #[test]
    fn a_fraction_of_a_sample_is_aligned() {
        let rate = 48000;
        let n = 48000;
        let g = music(rate, 1.0, 1);
        // The capture: the golden's tones half a sample later.
        let late: Vec<f64> = (0..n)
            .map(|i| {
                let t = (i as f64 - 0.5) / rate as f64;
                0.3 * (0.3 + 2.0 * std::f64::consts::PI * 440.0 * t).sin()
                    + 0.2 * (0.3 + 2.0 * std::f64::consts::PI * 1234.5 * t).sin()
            })
            .collect();
        let tones: Vec<f64> = (0..n)
            .map(|i| {
                let t = i as f64 / rate as f64;
                0.3 * (0.3 + 2.0 * std::f64::consts::PI * 440.0 * t).sin()
                    + 0.2 * (0.3 + 2.0 * std::f64::consts::PI * 1234.5 * t).sin()
            })
            .collect();
        let _ = g;
        let mut cf = file_f32("cap.wav", rate, 1, &f32s(&late));
        let mut gf = file_f32("gold.wav", rate, 1, &f32s(&tones));
        let r = compare(&mut cf, &mut gf, 40.0).unwrap();
        assert!(r.matched(), "{r:?}");
        assert!(
            (r.offset_s * rate as f64 - 0.5).abs() < 0.1,
            "{}",
            r.offset_s * 48000.0
        );
    }

    #[test]
    fn silence_against_silence_and_against_sound() {
        let g = music(8000, 0.5, 1);
        let z = vec![0.0; g.len()];
        let mut cf = file_f32("cap.wav", 8000, 1, &f32s(&z));
        let mut gf = file_f32("gold.wav", 8000, 1, &f32s(&z));
        assert!(compare(&mut cf, &mut gf, 20.0).unwrap().matched());
        let mut cf = file_f32("cap.wav", 8000, 1, &f32s(&z));
        let mut gf = file_f32("gold.wav", 8000, 1, &f32s(&g));
        let m = compare(&mut cf, &mut gf, 20.0).unwrap().mismatch.unwrap();
        assert!(m.why.contains("silent"), "{}", m.why);
    }
}
