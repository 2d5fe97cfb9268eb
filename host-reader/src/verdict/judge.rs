//! Runs the requested checks over the files of a capture (the main stream's segments, in
//! order) and reaches one verdict, with the one line that says it.
//!
//! - `--expect GOLDEN` (repeatable): the i-th golden judges the i-th file; a different number
//!   of files is itself a mismatch. Bit-exact by default, `--strict` without silence slack,
//!   `--expect-tolerance DB` tolerant.
//! - `--expect-tone HZ[@DBFS]`, `--expect-silence`, `--expect-sound`: judge every file.
//! - Nothing recorded fails every expectation but `--expect-silence`.

use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::convert::AudioShape;

use super::analysis::{self, Analysis};
use super::audio::AudioFile;
use super::marks::Mark;
use super::{dbfs, exact, secs, show_db, tolerant, Mismatch, VerdictError};

/// How close a tone's frequency must be: this fraction of it, or one FFT bin if that is more.
pub const TONE_FREQ_TOLERANCE: f64 = 0.01;
/// How close a tone's level must be, in dB.
pub const TONE_LEVEL_TOLERANCE_DB: f64 = 1.0;

/// `--expect-tone HZ[@DBFS]`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ToneSpec {
    pub hz: f64,
    pub dbfs: Option<f64>,
}

/// Parses `HZ` or `HZ@DBFS` (e.g. `440`, `1000@-6`, `997.5@-20.5`).
pub fn parse_tone(s: &str) -> Result<ToneSpec, String> {
    let (hz, db) = match s.split_once('@') {
        Some((h, d)) => (h, Some(d)),
        None => (s, None),
    };
    let hz: f64 = hz
        .trim()
        .parse()
        .ok()
        .filter(|h: &f64| h.is_finite() && *h > 0.0)
        .ok_or_else(|| format!("{s:?}: expected HZ or HZ@DBFS, e.g. 440 or 1000@-6"))?;
    let dbfs = match db {
        Some(d) => Some(
            d.trim()
                .trim_end_matches("dBFS")
                .trim_end_matches("dbfs")
                .parse::<f64>()
                .ok()
                .filter(|d| d.is_finite() && *d <= 0.0)
                .ok_or_else(|| format!("{s:?}: the level after @ is in dBFS, 0 or below"))?,
        ),
        None => None,
    };
    Ok(ToneSpec { hz, dbfs })
}

/// What the capture must be.
#[derive(Debug, Clone)]
pub struct Expectations {
    pub goldens: Vec<PathBuf>,
    pub tolerance_db: Option<f64>,
    pub strict: bool,
    pub tone: Option<ToneSpec>,
    pub silence: bool,
    pub sound: bool,
    pub silence_below_dbfs: f64,
    /// The shape of raw (non-WAV) files.
    pub raw_format: Option<AudioShape>,
}

impl Default for Expectations {
    fn default() -> Self {
        Expectations {
            goldens: Vec::new(),
            tolerance_db: None,
            strict: false,
            tone: None,
            silence: false,
            sound: false,
            silence_below_dbfs: analysis::DEFAULT_SILENCE_DBFS,
            raw_format: None,
        }
    }
}

impl Expectations {
    /// Anything to judge at all.
    pub fn any(&self) -> bool {
        !self.goldens.is_empty() || self.tone.is_some() || self.silence || self.sound
    }
}

/// One check's result.
#[derive(Debug, Clone, Serialize)]
pub struct CheckResult {
    /// What was checked, e.g. `out.wav is bit-exact to golden.wav`.
    pub name: String,
    pub passed: bool,
    /// What was found, in one sentence.
    pub summary: String,
    pub mismatch: Option<Mismatch>,
    /// The figures behind it (residual, offset, measured tone…).
    #[serde(skip_serializing_if = "serde_json::Value::is_null")]
    pub details: serde_json::Value,
}

/// A file to judge: where it is, and what the capture knows about it.
#[derive(Debug, Clone, Default)]
pub struct FileToJudge {
    pub path: PathBuf,
    pub stream: Option<u32>,
    pub segment: Option<u32>,
    pub marks: Vec<Mark>,
    pub marks_dropped: u64,
}

impl FileToJudge {
    pub fn plain(path: &Path) -> FileToJudge {
        FileToJudge {
            path: path.to_path_buf(),
            ..Default::default()
        }
    }
}

/// One judged file.
#[derive(Debug)]
pub struct JudgedFile {
    pub file: FileToJudge,
    pub analysis: Option<Analysis>,
    pub checks: Vec<CheckResult>,
}

impl JudgedFile {
    pub fn passed(&self) -> bool {
        self.checks.iter().all(|c| c.passed)
    }

    pub fn first_mismatch(&self) -> Option<&Mismatch> {
        self.checks
            .iter()
            .filter(|c| !c.passed)
            .find_map(|c| c.mismatch.as_ref())
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    Match,
    Mismatch,
    /// Nothing was asked.
    None,
}

/// The verdict over a capture.
#[derive(Debug)]
pub struct Judgement {
    pub files: Vec<JudgedFile>,
    /// Checks about the capture as a whole (nothing recorded, a different number of files).
    pub capture_checks: Vec<CheckResult>,
    pub outcome: Outcome,
    /// The verdict line (without the program's prefix).
    pub line: String,
}

impl Judgement {
    /// Every check, the capture's first.
    pub fn all_checks(&self) -> impl Iterator<Item = &CheckResult> {
        self.capture_checks
            .iter()
            .chain(self.files.iter().flat_map(|f| f.checks.iter()))
    }
}

/// Judges `files` against `exp`. `analyze` computes every file's figures even when no
/// check needs them (for `--report` and `--plot`).
pub fn judge(
    files: Vec<FileToJudge>,
    exp: &Expectations,
    analyze: bool,
) -> Result<Judgement, VerdictError> {
    let mut capture_checks = Vec::new();
    if files.is_empty() && exp.any() {
        let silence_only =
            exp.silence && exp.goldens.is_empty() && exp.tone.is_none() && !exp.sound;
        capture_checks.push(CheckResult {
            name: "audio was recorded".into(),
            passed: silence_only,
            summary: if silence_only {
                "no audio was recorded: the guest was silent".into()
            } else {
                format!(
                    "no audio was recorded{}",
                    match exp.goldens.first() {
                        Some(g) => format!(", but {} was expected", g.display()),
                        None => String::new(),
                    }
                )
            },
            mismatch: None,
            details: serde_json::Value::Null,
        });
    } else if !exp.goldens.is_empty() && exp.goldens.len() != files.len() {
        let names = |v: Vec<String>| v.join(", ");
        capture_checks.push(CheckResult {
            name: "one file per golden".into(),
            passed: false,
            summary: format!(
                "the capture has {} file(s) ({}) but {} golden file(s) were given ({}): a \
                 format change starts a new file; give one --expect per file",
                files.len(),
                names(files.iter().map(|f| f.path.display().to_string()).collect()),
                exp.goldens.len(),
                names(
                    exp.goldens
                        .iter()
                        .map(|g| g.display().to_string())
                        .collect()
                )
            ),
            mismatch: None,
            details: serde_json::Value::Null,
        });
    }

    let need_analysis = analyze || exp.tone.is_some() || exp.silence || exp.sound;
    let mut judged = Vec::with_capacity(files.len());
    for (i, file) in files.into_iter().enumerate() {
        let mut checks = Vec::new();
        let analysis = if need_analysis {
            let mut f = AudioFile::open(&file.path, exp.raw_format)?;
            Some(analysis::analyze(&mut f, exp.silence_below_dbfs)?)
        } else {
            None
        };
        if let Some(golden) = exp.goldens.get(i) {
            let mut c = AudioFile::open(&file.path, exp.raw_format)?;
            let mut g = AudioFile::open(golden, exp.raw_format)?;
            checks.push(match exp.tolerance_db {
                Some(db) => tolerance_check(&mut c, &mut g, db)?,
                None => exact_check(&mut c, &mut g, exp.strict)?,
            });
        }
        if let Some(a) = &analysis {
            let f = AudioFile::open(&file.path, exp.raw_format)?;
            if let Some(t) = exp.tone {
                checks.push(tone_check(&f, a, t));
            }
            if exp.silence {
                checks.push(silence_check(&f, a, exp.strict));
            }
            if exp.sound {
                checks.push(sound_check(&f, a));
            }
        }
        judged.push(JudgedFile {
            file,
            analysis,
            checks,
        });
    }

    let all: Vec<&CheckResult> = capture_checks
        .iter()
        .chain(judged.iter().flat_map(|f| f.checks.iter()))
        .collect();
    let (outcome, line) = if all.is_empty() {
        (Outcome::None, "nothing was expected".to_string())
    } else if let Some(first) = all.iter().find(|c| !c.passed) {
        let more = all.iter().filter(|c| !c.passed).count() - 1;
        (
            Outcome::Mismatch,
            format!(
                "MISMATCH: {}{}",
                first.summary,
                if more > 0 {
                    format!(" (and {more} more failed check(s))")
                } else {
                    String::new()
                }
            ),
        )
    } else {
        (
            Outcome::Match,
            format!(
                "MATCH: {}",
                all.iter()
                    .map(|c| c.summary.as_str())
                    .collect::<Vec<_>>()
                    .join("; ")
            ),
        )
    };
    Ok(Judgement {
        files: judged,
        capture_checks,
        outcome,
        line,
    })
}

fn exact_check(
    c: &mut AudioFile,
    g: &mut AudioFile,
    strict: bool,
) -> Result<CheckResult, VerdictError> {
    let r = exact::compare(c, g, strict)?;
    let rate = c.rate();
    let name = format!(
        "{} is bit-exact to {}{}",
        c.name(),
        g.name(),
        if strict { " (--strict)" } else { "" }
    );
    let summary = match &r.mismatch {
        None => {
            let mut s = format!(
                "{} is bit-exact to {} ({} of {}",
                c.name(),
                g.name(),
                secs(r.frames_compared, rate),
                c.shape
            );
            if !strict {
                s += &format!(
                    "; silence before/after: {}/{} in the capture, {}/{} in {}",
                    secs(r.capture_lead, rate),
                    secs(r.capture_trail, rate),
                    secs(r.golden_lead, g.rate()),
                    secs(r.golden_trail, g.rate()),
                    g.name()
                );
            }
            s + ")"
        }
        Some(m) => format!("{} differs from {}: {m}", c.name(), g.name()),
    };
    let details = serde_json::json!({
        "mode": if strict { "strict" } else { "exact" },
        "golden": g.name(),
        "frames_compared": r.frames_compared,
        "capture_leading_silence_s": r.capture_lead as f64 / rate as f64,
        "capture_trailing_silence_s": r.capture_trail as f64 / rate as f64,
        "golden_leading_silence_s": r.golden_lead as f64 / g.rate() as f64,
        "golden_trailing_silence_s": r.golden_trail as f64 / g.rate() as f64,
    });
    Ok(CheckResult {
        name,
        passed: r.matched(),
        summary,
        mismatch: r.mismatch,
        details,
    })
}

fn tolerance_check(
    c: &mut AudioFile,
    g: &mut AudioFile,
    db: f64,
) -> Result<CheckResult, VerdictError> {
    let r = tolerant::compare(c, g, db)?;
    let conv = match (r.resampled_from, r.remixed_from) {
        (None, None) => String::new(),
        (Some(rate), None) => format!("; {} resampled from {rate} Hz", g.name()),
        (None, Some(ch)) => format!("; {} remixed from {ch} channel(s)", g.name()),
        (Some(rate), Some(ch)) => format!(
            "; {} resampled from {rate} Hz and remixed from {ch} channel(s)",
            g.name()
        ),
    };
    let gains = r
        .gain_db
        .iter()
        .map(|x| show_db(*x, "dB"))
        .collect::<Vec<_>>()
        .join(", ");
    let summary = match &r.mismatch {
        None => format!(
            "{} matches {} within {} (residual {} after aligning {:+.6} s and a gain of {}{conv})",
            c.name(),
            g.name(),
            show_db(r.tolerance_db, "dB"),
            show_db(r.residual_db, "dB"),
            r.offset_s,
            gains
        ),
        Some(m) => format!(
            "{} differs from {} beyond {}: {m}{conv}",
            c.name(),
            g.name(),
            show_db(r.tolerance_db, "dB")
        ),
    };
    let finite = |x: f64| if x.is_finite() { Some(x) } else { None };
    let details = serde_json::json!({
        "mode": "tolerance",
        "golden": g.name(),
        "tolerance_db": r.tolerance_db,
        "residual_db": finite(r.residual_db),
        "channel_residual_db": r.channel_residual_db.iter().map(|x| finite(*x)).collect::<Vec<_>>(),
        "gain_db": r.gain_db.iter().map(|x| finite(*x)).collect::<Vec<_>>(),
        "offset_s": r.offset_s,
        "golden_resampled_from_hz": r.resampled_from,
        "golden_remixed_from_channels": r.remixed_from,
    });
    Ok(CheckResult {
        name: format!(
            "{} matches {} within {}",
            c.name(),
            g.name(),
            show_db(r.tolerance_db, "dB")
        ),
        passed: r.matched(),
        summary,
        mismatch: r.mismatch,
        details,
    })
}

fn tone_check(f: &AudioFile, a: &Analysis, t: ToneSpec) -> CheckResult {
    let bin = a.spectra.bin_hz();
    let tol = (t.hz * TONE_FREQ_TOLERANCE).max(bin);
    let want = match t.dbfs {
        Some(d) => format!("a {:.1} Hz tone at {}", t.hz, show_db(d, "dBFS")),
        None => format!("a {:.1} Hz tone", t.hz),
    };
    let name = format!("{} holds {want}", f.name());
    let mut measured = Vec::new();
    let mut failure: Option<(u16, String)> = None;
    for c in 0..f.channels() {
        let ch = c as u16 + 1;
        let dominant = a.spectra.dominant_hz(Some(c));
        let level = a.spectra.tone_at(c, t.hz);
        measured.push(serde_json::json!({
            "channel": ch,
            "dominant_hz": dominant,
            "tone_dbfs": level.map(|l| l.0).filter(|x| x.is_finite()),
        }));
        if failure.is_some() {
            continue;
        }
        failure = match (dominant, level) {
            (None, _) | (_, None) => Some((ch, format!("channel {ch} is silent"))),
            (Some(d), _) if (d - t.hz).abs() > tol => Some((
                ch,
                format!(
                    "channel {ch}'s strongest frequency is {d:.1} Hz, not {:.1} Hz (±{tol:.1} Hz)",
                    t.hz
                ),
            )),
            (_, Some((l, _))) => match t.dbfs {
                Some(w) if (l - w).abs() > TONE_LEVEL_TOLERANCE_DB => Some((
                    ch,
                    format!(
                        "channel {ch}'s {:.1} Hz tone is at {}, not {} (±{TONE_LEVEL_TOLERANCE_DB} dB)",
                        t.hz,
                        show_db(l, "dBFS"),
                        show_db(w, "dBFS")
                    ),
                )),
                _ => None,
            },
        };
    }
    let details = serde_json::json!({ "hz": t.hz, "dbfs": t.dbfs, "tolerance_hz": tol, "channels": measured });
    match failure {
        None => {
            let levels = (0..f.channels())
                .filter_map(|c| a.spectra.tone_at(c, t.hz))
                .map(|(l, hz)| format!("{hz:.1} Hz {}", show_db(l, "dBFS")))
                .collect::<Vec<_>>()
                .join(", ");
            CheckResult {
                name,
                passed: true,
                summary: format!("{} holds {want} (measured {levels})", f.name()),
                mismatch: None,
                details,
            }
        }
        Some((ch, why)) => {
            let at = a.first_nonzero.map(|x| x.0).unwrap_or(0);
            let mut m = Mismatch::at(f, at, why.clone());
            m.channel = Some(ch);
            CheckResult {
                name,
                passed: false,
                summary: format!("{} does not hold {want}: {why}", f.name()),
                mismatch: Some(m),
                details,
            }
        }
    }
}

fn silence_check(f: &AudioFile, a: &Analysis, strict: bool) -> CheckResult {
    let (name, first) = if strict {
        (
            format!("{} is digital silence (--strict)", f.name()),
            a.first_nonzero,
        )
    } else {
        (
            format!(
                "{} stays at or below {}",
                f.name(),
                show_db(a.silence_below_dbfs, "dBFS")
            ),
            a.first_loud,
        )
    };
    match first {
        None => CheckResult {
            summary: format!(
                "{} is silent ({} of {}, peak {})",
                f.name(),
                secs(a.frames, a.rate),
                f.shape,
                show_db(a.peak_dbfs, "dBFS")
            ),
            name,
            passed: true,
            mismatch: None,
            details: serde_json::Value::Null,
        },
        Some((frame, ch, v)) => {
            let why = format!(
                "channel {ch} is {} ({}){}",
                f.show_value(v),
                show_db(dbfs(v.abs()), "dBFS"),
                if strict {
                    String::new()
                } else {
                    format!(", above {}", show_db(a.silence_below_dbfs, "dBFS"))
                }
            );
            let mut m = Mismatch::at(f, frame, why);
            m.channel = Some(ch);
            m.capture_value = Some(f.show_value(v));
            CheckResult {
                summary: format!("{} is not silent: {m}", f.name()),
                name,
                passed: false,
                mismatch: Some(m),
                details: serde_json::Value::Null,
            }
        }
    }
}

fn sound_check(f: &AudioFile, a: &Analysis) -> CheckResult {
    let passed = a.louder_than(a.silence_below_dbfs);
    CheckResult {
        name: format!(
            "{} has sound above {}",
            f.name(),
            show_db(a.silence_below_dbfs, "dBFS")
        ),
        passed,
        summary: if passed {
            format!(
                "{} has sound (peak {}{})",
                f.name(),
                show_db(a.peak_dbfs, "dBFS"),
                a.first_loud
                    .map(|(n, _, _)| format!(" from {}", secs(n, a.rate)))
                    .unwrap_or_default()
            )
        } else {
            format!(
                "{} is silent: its peak is {}, not above {} ({} of {})",
                f.name(),
                show_db(a.peak_dbfs, "dBFS"),
                show_db(a.silence_below_dbfs, "dBFS"),
                secs(a.frames, a.rate),
                f.shape
            )
        },
        mismatch: (!passed).then(|| Mismatch::at(f, 0, "no sound".into())),
        details: serde_json::Value::Null,
    }
}

#[cfg(test)]
mod tests {
    use super::super::tests_support::*;
    use super::*;

    fn write(dir: &Path, name: &str, rate: u32, ch: u16, s: &[i16]) -> PathBuf {
        let p = dir.join(name);
        let data: Vec<u8> = s.iter().flat_map(|v| v.to_le_bytes()).collect();
        super::super::audio::write_wav(
            &p,
            AudioShape {
                format: dsproxy_wire::PcmFormat::S16,
                rate_hz: rate,
                channels: ch,
            },
            &data,
        )
        .unwrap();
        p
    }

    fn tmp(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("dsproxy-judge-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    #[test]
    fn tone_specs() {
        assert_eq!(
            parse_tone("440"),
            Ok(ToneSpec {
                hz: 440.0,
                dbfs: None
            })
        );
        assert_eq!(
            parse_tone("1000@-6"),
            Ok(ToneSpec {
                hz: 1000.0,
                dbfs: Some(-6.0)
            })
        );
        assert_eq!(parse_tone("1000@-6dBFS").unwrap().dbfs, Some(-6.0));
        for bad in ["", "x", "-5", "0", "440@", "440@+3", "440@loud", "nan"] {
            assert!(parse_tone(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn exact_match_and_mismatch_make_the_line() {
        let d = tmp("exact");
        let sig = tone_i16(48000, 2, 440.0, 0.5, 4800);
        let g = write(&d, "gold.wav", 48000, 2, &sig);
        let c = write(&d, "out.wav", 48000, 2, &sig);
        let exp = Expectations {
            goldens: vec![g.clone()],
            ..Default::default()
        };
        let j = judge(vec![FileToJudge::plain(&c)], &exp, false).unwrap();
        assert_eq!(j.outcome, Outcome::Match, "{}", j.line);
        assert!(
            j.line.starts_with("MATCH: ") && j.line.contains("bit-exact"),
            "{}",
            j.line
        );
        assert!(j.files[0].analysis.is_none());
        let mut bad = sig.clone();
        bad[2001] = bad[2001].wrapping_add(3);
        let c2 = write(&d, "bad.wav", 48000, 2, &bad);
        let j = judge(vec![FileToJudge::plain(&c2)], &exp, true).unwrap();
        assert_eq!(j.outcome, Outcome::Mismatch);
        assert!(
            j.line.contains("frame 1000") && j.line.contains("channel 2"),
            "{}",
            j.line
        );
        assert!(j.files[0].analysis.is_some());
        assert_eq!(j.files[0].first_mismatch().unwrap().frame, 1000);
    }

    #[test]
    fn goldens_pair_with_files_in_order() {
        let d = tmp("pairs");
        let a = tone_i16(8000, 1, 440.0, 0.5, 800);
        let b = tone_i16(8000, 1, 880.0, 0.5, 800);
        let (ga, gb) = (
            write(&d, "ga.wav", 8000, 1, &a),
            write(&d, "gb.wav", 8000, 1, &b),
        );
        let (ca, cb) = (
            write(&d, "ca.wav", 8000, 1, &a),
            write(&d, "cb.wav", 8000, 1, &b),
        );
        let exp = Expectations {
            goldens: vec![ga.clone(), gb.clone()],
            ..Default::default()
        };
        let files = vec![FileToJudge::plain(&ca), FileToJudge::plain(&cb)];
        assert_eq!(judge(files, &exp, false).unwrap().outcome, Outcome::Match);
        let files = vec![FileToJudge::plain(&cb), FileToJudge::plain(&ca)];
        assert_eq!(
            judge(files, &exp, false).unwrap().outcome,
            Outcome::Mismatch
        );
        let j = judge(vec![FileToJudge::plain(&ca)], &exp, false).unwrap();
        assert_eq!(j.outcome, Outcome::Mismatch);
        assert!(
            j.line.contains("1 file(s)") && j.line.contains("2 golden"),
            "{}",
            j.line
        );
    }

    #[test]
    fn nothing_recorded() {
        let exp = Expectations {
            goldens: vec!["g.wav".into()],
            ..Default::default()
        };
        let j = judge(vec![], &exp, false).unwrap();
        assert_eq!(j.outcome, Outcome::Mismatch);
        assert!(j.line.contains("no audio was recorded"), "{}", j.line);
        let exp = Expectations {
            silence: true,
            ..Default::default()
        };
        assert_eq!(judge(vec![], &exp, false).unwrap().outcome, Outcome::Match);
        let exp = Expectations {
            sound: true,
            ..Default::default()
        };
        assert_eq!(
            judge(vec![], &exp, false).unwrap().outcome,
            Outcome::Mismatch
        );
        assert_eq!(
            judge(vec![], &Expectations::default(), false)
                .unwrap()
                .outcome,
            Outcome::None
        );
    }

    #[test]
    fn tone_silence_and_sound_checks() {
        let d = tmp("tone");
        let sig = tone_i16(48000, 2, 1000.0, 0.5, 48000);
        let c = write(&d, "t.wav", 48000, 2, &sig);
        let run = |e: Expectations| judge(vec![FileToJudge::plain(&c)], &e, false).unwrap();
        let tone = |hz, db| Expectations {
            tone: Some(ToneSpec { hz, dbfs: db }),
            ..Default::default()
        };
        assert_eq!(run(tone(1000.0, None)).outcome, Outcome::Match);
        assert_eq!(run(tone(1000.0, Some(-6.0))).outcome, Outcome::Match);
        let j = run(tone(1000.0, Some(-12.0)));
        assert_eq!(j.outcome, Outcome::Mismatch, "a 6 dB level error must FAIL");
        assert!(j.line.contains("-6.0 dBFS, not -12.0 dBFS"), "{}", j.line);
        let j = run(tone(440.0, None));
        assert_eq!(j.outcome, Outcome::Mismatch);
        assert!(
            j.line
                .contains("strongest frequency is 1000.0 Hz, not 440.0 Hz"),
            "{}",
            j.line
        );
        let sound = Expectations {
            sound: true,
            ..Default::default()
        };
        assert_eq!(run(sound).outcome, Outcome::Match);
        let silence = Expectations {
            silence: true,
            ..Default::default()
        };
        let j = run(silence);
        assert_eq!(j.outcome, Outcome::Mismatch);
        assert!(j.line.contains("not silent"), "{}", j.line);

        // A -80 dBFS hum: silent by the default level, not digital silence (--strict).
        let hum: Vec<i16> = tone_i16(48000, 1, 50.0, 0.0001, 4800);
        let h = write(&d, "h.wav", 48000, 1, &hum);
        let runh = |e: Expectations| judge(vec![FileToJudge::plain(&h)], &e, false).unwrap();
        assert_eq!(
            runh(Expectations {
                silence: true,
                ..Default::default()
            })
            .outcome,
            Outcome::Match
        );
        assert_eq!(
            runh(Expectations {
                silence: true,
                strict: true,
                ..Default::default()
            })
            .outcome,
            Outcome::Mismatch
        );
        let j = runh(Expectations {
            sound: true,
            ..Default::default()
        });
        assert_eq!(j.outcome, Outcome::Mismatch);
        assert!(j.line.contains("is silent"), "{}", j.line);
        let z = write(&d, "z.wav", 48000, 1, &[0; 4800]);
        let j = judge(
            vec![FileToJudge::plain(&z)],
            &Expectations {
                tone: Some(ToneSpec {
                    hz: 440.0,
                    dbfs: None,
                }),
                ..Default::default()
            },
            false,
        )
        .unwrap();
        assert!(j.line.contains("channel 1 is silent"), "{}", j.line);
    }

    #[test]
    fn a_missing_golden_is_an_error_not_a_mismatch() {
        let d = tmp("missing");
        let c = write(&d, "c.wav", 8000, 1, &[1, 2, 3]);
        let exp = Expectations {
            goldens: vec![d.join("nope.wav")],
            ..Default::default()
        };
        let e = judge(vec![FileToJudge::plain(&c)], &exp, false).unwrap_err();
        assert!(e.to_string().contains("nope.wav"), "{e}");
    }
}
