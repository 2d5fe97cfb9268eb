//! `--expect GOLDEN`: is the capture bit-exact to the golden file?
//!
//! Both files are streamed, a chunk at a time, so a capture of any length is compared in
//! bounded memory (same format: the bytes are compared; different formats: the decoded
//! values, which `f64` holds exactly). The rules:
//! - the starts are aligned on the first sample that is not digital silence in each file;
//! - digital silence before that (leading) and after the golden's last sound (trailing) may
//!   differ in length: snd-pcm-oss completes the last period with silence when a program
//!   closes `/dev/dsp`, and a capture may start before the program does. The lengths are
//!   reported;
//! - `strict` allows no such difference: the capture must be the golden, sample for sample,
//!   from the first frame to the last.

use super::audio::{AudioFile, CHUNK_FRAMES};
use super::{secs, Mismatch, VerdictError};

/// What the exact comparison found.
#[derive(Debug, Clone, PartialEq)]
pub struct ExactResult {
    /// Frames compared sample for sample (the golden's sound, or everything when strict).
    pub frames_compared: u64,
    /// Digital silence before the first sound, in frames.
    pub capture_lead: u64,
    pub golden_lead: u64,
    /// Digital silence after the last sound, in frames.
    pub capture_trail: u64,
    pub golden_trail: u64,
    /// `None` on a match.
    pub mismatch: Option<Mismatch>,
}

impl ExactResult {
    pub fn matched(&self) -> bool {
        self.mismatch.is_none()
    }
}

/// Compares `capture` with `golden`; see the module documentation.
pub fn compare(
    capture: &mut AudioFile,
    golden: &mut AudioFile,
    strict: bool,
) -> Result<ExactResult, VerdictError> {
    let mut res = ExactResult {
        frames_compared: 0,
        capture_lead: 0,
        golden_lead: 0,
        capture_trail: 0,
        golden_trail: 0,
        mismatch: None,
    };
    if capture.rate() != golden.rate() || capture.channels() != golden.channels() {
        res.mismatch = Some(Mismatch::at(
            capture,
            0,
            format!(
                "{} is {}, {} is {}: a bit-exact comparison needs the same rate and channels \
                 (--expect-tolerance compares across them)",
                capture.name(),
                capture.shape,
                golden.name(),
                golden.shape
            ),
        ));
        return Ok(res);
    }
    let c_sound = sound_bounds(capture)?;
    let g_sound = sound_bounds(golden)?;
    let (cf, gf) = (capture.frames(), golden.frames());
    let bounds = |s: Option<(u64, u64)>, frames: u64| match s {
        Some((first, last)) => (first, frames - last - 1),
        None => (frames, 0),
    };
    (res.capture_lead, res.capture_trail) = bounds(c_sound, cf);
    (res.golden_lead, res.golden_trail) = bounds(g_sound, gf);

    if strict {
        let n = cf.min(gf);
        res.frames_compared = n;
        res.mismatch = compare_range(capture, 0, golden, 0, n)?;
        if res.mismatch.is_none() && cf != gf {
            res.mismatch = Some(if cf < gf {
                Mismatch::at(
                    capture,
                    cf,
                    format!(
                        "the capture ends at {} but {} goes on to {} (--strict)",
                        secs(cf, capture.rate()),
                        golden.name(),
                        secs(gf, golden.rate())
                    ),
                )
            } else {
                Mismatch::at(
                    capture,
                    gf,
                    format!(
                        "the capture goes on for {} after {} ends (--strict)",
                        secs(cf - gf, capture.rate()),
                        golden.name()
                    ),
                )
            });
        }
        return Ok(res);
    }

    let Some((g_first, g_last)) = g_sound else {
        // A silent golden: the capture must be silent too.
        if let Some((c_first, _)) = c_sound {
            res.mismatch = Some(sound_where_silence_at(capture, c_first, golden)?);
        }
        return Ok(res);
    };
    let Some((c_first, _)) = c_sound else {
        res.mismatch = Some(Mismatch::at(
            capture,
            0,
            format!(
                "the capture is digital silence throughout ({}); {} has sound from {}",
                secs(cf, capture.rate()),
                golden.name(),
                secs(g_first, golden.rate())
            ),
        ));
        return Ok(res);
    };
    // The golden's sound, g_first..=g_last, must be at c_first.. in the capture.
    let sound = g_last - g_first + 1;
    let avail = cf - c_first;
    let n = sound.min(avail);
    res.frames_compared = n;
    res.mismatch = compare_range(capture, c_first, golden, g_first, n)?;
    if res.mismatch.is_some() {
        return Ok(res);
    }
    if avail < sound {
        res.mismatch = Some(Mismatch::at(
            capture,
            cf,
            format!(
                "the capture ends at {}, {} before the end of {}'s sound",
                secs(cf, capture.rate()),
                secs(sound - avail, capture.rate()),
                golden.name()
            ),
        ));
        return Ok(res);
    }
    // After the golden's last sound the capture may only hold silence; by construction of
    // sound_bounds, anything after c_first + sound that is not silence is extra sound.
    let after = c_first + sound;
    if let Some((_, c_last)) = c_sound {
        if c_last >= after {
            let first_extra = first_sound_from(capture, after)?.unwrap_or(after);
            res.mismatch = Some(sound_where_silence_at(capture, first_extra, golden)?);
        }
    }
    Ok(res)
}

/// The first and last frame holding anything but digital silence, or `None` if the file is
/// silent throughout.
pub fn sound_bounds(f: &mut AudioFile) -> Result<Option<(u64, u64)>, VerdictError> {
    let Some(first) = first_sound_from(f, 0)? else {
        return Ok(None);
    };
    let ch = f.channels();
    let (mut raw, mut dec) = (Vec::new(), Vec::new());
    let mut end = f.frames();
    while end > first {
        let start = end.saturating_sub(CHUNK_FRAMES as u64).max(first);
        f.read_f64(start, (end - start) as usize, &mut raw, &mut dec)?;
        if let Some(i) = dec.iter().rposition(|&v| v != 0.0) {
            return Ok(Some((first, start + (i / ch) as u64)));
        }
        end = start;
    }
    Ok(Some((first, first)))
}

/// The first frame at or after `from` that is not digital silence.
pub fn first_sound_from(f: &mut AudioFile, from: u64) -> Result<Option<u64>, VerdictError> {
    let ch = f.channels();
    let (mut raw, mut dec) = (Vec::new(), Vec::new());
    let mut at = from;
    while at < f.frames() {
        f.read_f64(at, CHUNK_FRAMES, &mut raw, &mut dec)?;
        if let Some(i) = dec.iter().position(|&v| v != 0.0) {
            return Ok(Some(at + (i / ch) as u64));
        }
        at += CHUNK_FRAMES as u64;
    }
    Ok(None)
}

/// The capture has sound at frame `at` where the golden has (or implies) silence.
fn sound_where_silence_at(
    capture: &mut AudioFile,
    at: u64,
    golden: &AudioFile,
) -> Result<Mismatch, VerdictError> {
    let (mut raw, mut dec) = (Vec::new(), Vec::new());
    capture.read_f64(at, 1, &mut raw, &mut dec)?;
    let ch = dec.iter().position(|&v| v != 0.0).unwrap_or(0);
    let v = dec.get(ch).copied().unwrap_or(0.0);
    let mut m = Mismatch::at(
        capture,
        at,
        format!(
            "the capture has sound where {} is silent: channel {} is {}, not 0",
            golden.name(),
            ch + 1,
            capture.show_value(v)
        ),
    );
    m.channel = Some(ch as u16 + 1);
    m.capture_value = Some(capture.show_value(v));
    m.golden_value = Some(golden.show_value(0.0));
    Ok(m)
}

/// Compares `n` frames of `a` from `a_at` with `b` from `b_at`; the first difference.
fn compare_range(
    a: &mut AudioFile,
    a_at: u64,
    b: &mut AudioFile,
    b_at: u64,
    n: u64,
) -> Result<Option<Mismatch>, VerdictError> {
    let same_format = a.shape.format == b.shape.format;
    let ch = a.channels();
    let (mut ra, mut rb) = (Vec::new(), Vec::new());
    let (mut da, mut db) = (Vec::new(), Vec::new());
    let mut done = 0u64;
    while done < n {
        let k = (n - done).min(CHUNK_FRAMES as u64) as usize;
        let diff_frame = if same_format {
            a.read_raw(a_at + done, k, &mut ra)
                .map_err(|e| VerdictError::io(&a.path, e))?;
            b.read_raw(b_at + done, k, &mut rb)
                .map_err(|e| VerdictError::io(&b.path, e))?;
            (ra != rb).then(|| {
                let byte = ra.iter().zip(&rb).position(|(x, y)| x != y).unwrap_or(0);
                byte / a.frame_bytes()
            })
        } else {
            a.read_f64(a_at + done, k, &mut ra, &mut da)?;
            b.read_f64(b_at + done, k, &mut rb, &mut db)?;
            da.iter()
                .zip(&db)
                .position(|(x, y)| x.to_bits() != y.to_bits() && x != y)
                .map(|i| i / ch)
        };
        if let Some(f) = diff_frame {
            let fa = a_at + done + f as u64;
            let fb = b_at + done + f as u64;
            a.read_f64(fa, 1, &mut ra, &mut da)?;
            b.read_f64(fb, 1, &mut rb, &mut db)?;
            // Same format: the bytes differ, so some sample does; decoded values can still
            // be equal (mu-law's two zeros), then the first differing byte's sample is shown.
            let c = (0..ch)
                .find(|&c| da[c].to_bits() != db[c].to_bits())
                .unwrap_or(0);
            let (va, vb) = (a.show_value(da[c]), b.show_value(db[c]));
            let mut m = Mismatch::at(
                a,
                fa,
                format!(
                    "channel {}: {} has {}, {} has {}",
                    c + 1,
                    a.name(),
                    va,
                    b.name(),
                    vb
                ),
            );
            m.channel = Some(c as u16 + 1);
            m.capture_value = Some(va);
            m.golden_value = Some(vb);
            m.golden_frame = Some(fb);
            return Ok(Some(m));
        }
        done += k as u64;
    }
    Ok(None)
}

#[cfg(test)]
mod tests {
    use super::super::tests_support::*;
    use super::*;
    use dsproxy_wire::PcmFormat;

    fn run(cap: &[i16], gold: &[i16], ch: u16, strict: bool) -> ExactResult {
        let mut c = file_s16("cap.wav", 48000, ch, cap);
        let mut g = file_s16("gold.wav", 48000, ch, gold);
        compare(&mut c, &mut g, strict).unwrap()
    }

    #[test]
    fn identical_files_match() {
        let sig = tone_i16(48000, 2, 440.0, 0.5, 4800);
        let r = run(&sig, &sig, 2, false);
        assert!(r.matched(), "{r:?}");
        assert_eq!(r.frames_compared, 4800);
        assert!(run(&sig, &sig, 2, true).matched());
    }

    #[test]
    fn one_changed_sample_is_found_with_time_channel_and_values() {
        let sig = tone_i16(48000, 2, 440.0, 0.5, 48000);
        let mut cap = sig.clone();
        let idx = 30000 * 2 + 1; // frame 30000, channel 2
        cap[idx] = cap[idx].wrapping_add(1);
        let r = run(&cap, &sig, 2, false);
        let m = r.mismatch.expect("must FAIL on a one-LSB difference");
        assert_eq!(m.frame, 30000);
        assert_eq!(m.channel, Some(2));
        assert_eq!(m.capture_value, Some(cap[idx].to_string()));
        assert_eq!(m.golden_value, Some(sig[idx].to_string()));
        assert!((m.time_s - 0.625).abs() < 1e-9);
        assert!(m.why.contains("channel 2"), "{}", m.why);
    }

    #[test]
    fn leading_and_trailing_silence_are_allowed_and_reported() {
        let sig = tone_i16(48000, 1, 1000.0, 0.5, 4800);
        let mut cap = vec![0i16; 480];
        cap.extend_from_slice(&sig);
        cap.extend(std::iter::repeat_n(0, 1024));
        let r = run(&cap, &sig, 1, false);
        assert!(r.matched(), "{r:?}");
        assert_eq!(r.capture_lead, 480);
        assert_eq!(r.golden_lead, 0);
        assert_eq!(r.capture_trail, 1024);
        // --strict: the same capture FAILS, at its first frame.
        let r = run(&cap, &sig, 1, true);
        let m = r.mismatch.expect("strict disallows the padding");
        assert_eq!(m.frame, 0);
    }

    #[test]
    fn strict_reports_a_length_difference() {
        let sig = tone_i16(48000, 1, 1000.0, 0.5, 4800);
        let mut cap = sig.clone();
        cap.extend([0i16; 10]);
        let m = run(&cap, &sig, 1, true).mismatch.unwrap();
        assert_eq!(m.frame, 4800);
        assert!(m.why.contains("goes on"), "{}", m.why);
        let m = run(&sig[..4000], &sig, 1, true).mismatch.unwrap();
        assert_eq!(m.frame, 4000);
        assert!(m.why.contains("ends"), "{}", m.why);
    }

    #[test]
    fn a_short_capture_and_extra_sound_fail() {
        let sig = tone_i16(48000, 1, 1000.0, 0.5, 4800);
        let m = run(&sig[..3000], &sig, 1, false).mismatch.unwrap();
        assert_eq!(m.frame, 3000);
        assert!(m.why.contains("ends at"), "{}", m.why);
        let mut cap = sig.clone();
        cap.extend([0i16; 100]);
        cap.push(7);
        let m = run(&cap, &sig, 1, false).mismatch.unwrap();
        assert_eq!(m.frame, 4900);
        assert_eq!(m.capture_value.as_deref(), Some("7"));
    }

    #[test]
    fn silence_against_sound_and_silent_goldens() {
        let sig = tone_i16(48000, 1, 1000.0, 0.5, 4800);
        let m = run(&[0; 4800], &sig, 1, false).mismatch.unwrap();
        assert!(m.why.contains("silence throughout"), "{}", m.why);
        assert!(run(&[0; 100], &[0; 4800], 1, false).matched());
        let m = run(&sig, &[0; 4800], 1, false).mismatch.unwrap();
        assert_eq!(m.frame, 0);
        assert!(m.why.contains("sound where"), "{}", m.why);
    }

    #[test]
    fn different_shapes_are_a_mismatch_not_an_error() {
        let sig = tone_i16(48000, 1, 1000.0, 0.5, 480);
        let mut c = file_s16("cap.wav", 48000, 1, &sig);
        let mut g = file_s16("gold.wav", 44100, 1, &sig);
        let m = compare(&mut c, &mut g, false).unwrap().mismatch.unwrap();
        assert!(m.why.contains("44100 Hz"), "{}", m.why);
    }

    #[test]
    fn different_formats_compare_by_value() {
        // S16 golden, S32 capture holding the same values shifted up: exact in value.
        let sig = tone_i16(8000, 1, 440.0, 0.5, 800);
        let mut g = file_s16("gold.wav", 8000, 1, &sig);
        let wide: Vec<u8> = sig
            .iter()
            .flat_map(|&v| ((v as i32) << 16).to_le_bytes())
            .collect();
        let mut c = file_bytes("cap.wav", PcmFormat::S32, 8000, 1, &wide);
        assert!(compare(&mut c, &mut g, true).unwrap().matched());
        let mut wide2 = wide.clone();
        wide2[400] ^= 1; // the low 16 bits of a sample: a value S16 cannot have
        let mut c = file_bytes("cap.wav", PcmFormat::S32, 8000, 1, &wide2);
        let m = compare(&mut c, &mut g, true).unwrap().mismatch.unwrap();
        assert_eq!(m.frame, 100);
    }

    #[test]
    fn u8_silence_is_0x80() {
        let mut g = file_bytes(
            "gold.wav",
            PcmFormat::U8,
            8000,
            1,
            &[0x80, 0x90, 0x70, 0x80],
        );
        let mut c = file_bytes(
            "cap.wav",
            PcmFormat::U8,
            8000,
            1,
            &[0x80, 0x80, 0x90, 0x70, 0x80, 0x80, 0x80],
        );
        let r = compare(&mut c, &mut g, false).unwrap();
        assert!(r.matched(), "{r:?}");
        assert_eq!((r.capture_lead, r.capture_trail), (2, 3));
    }

    #[test]
    fn long_captures_cross_chunk_boundaries() {
        let n = CHUNK_FRAMES * 2 + 77;
        let sig = tone_i16(48000, 2, 997.0, 0.3, n);
        let mut cap = sig.clone();
        let at = (CHUNK_FRAMES + 5) * 2;
        cap[at] ^= 0x100;
        assert!(run(&sig, &sig, 2, false).matched());
        assert_eq!(
            run(&cap, &sig, 2, false).mismatch.unwrap().frame,
            CHUNK_FRAMES as u64 + 5
        );
    }
}
