//! The command-line options of verdicts and pictures (flattened into [`crate::cli::Cli`]).
//! They apply to a live capture when it ends, and to existing files with `--check`.

use std::path::PathBuf;

use crate::cli::parse_shape;
use crate::convert::AudioShape;

use super::analysis::DEFAULT_SILENCE_DBFS;
use super::judge::{parse_tone, Expectations, ToneSpec};

#[derive(Debug, Clone, Default, clap::Args)]
#[command(next_help_heading = "Verdicts (exit 0 on a match, 3 on a mismatch)")]
pub struct VerdictArgs {
    /// Judge existing files instead of capturing: a capture (WAV, or raw with --raw-format);
    /// repeat it for a capture's segments, in order (out.wav, out.seg2.wav, …)
    #[arg(
        long,
        value_name = "FILE",
        conflicts_with_all = ["file", "stdout", "net", "unix", "inject", "mixer", "english", "records", "once"]
    )]
    pub check: Vec<PathBuf>,

    /// When the capture ends, it must be bit-exact to GOLDEN after aligning the first sound
    /// (leading and trailing digital silence allowed and reported). Repeat for a capture
    /// recorded in several segments: the Nth golden judges the Nth file
    #[arg(long, value_name = "GOLDEN")]
    pub expect: Vec<PathBuf>,

    /// With --expect: no silence slack, the capture must be GOLDEN from first frame to last.
    /// With --expect-silence: digital silence only
    #[arg(long)]
    pub strict: bool,

    /// With --expect: instead of bit-exact, the residual after the best alignment and gain
    /// must be at least DB below the golden's level (for paths that resample or mix)
    #[arg(
        long,
        value_name = "DB",
        requires = "expect",
        conflicts_with = "strict",
        allow_negative_numbers = true,
        value_parser = parse_db
    )]
    pub expect_tolerance: Option<f64>,

    /// Every channel's strongest frequency must be HZ (±1 %), and its level DBFS (±1 dB; a
    /// full-scale sine is 0 dBFS) if given, e.g. 440 or 1000@-6
    #[arg(long, value_name = "HZ[@DBFS]", value_parser = parse_tone)]
    pub expect_tone: Option<ToneSpec>,

    /// Nothing above --silence-below (with --strict: nothing but digital silence); a guest
    /// that never played passes
    #[arg(long, conflicts_with_all = ["expect_sound", "expect_tone"])]
    pub expect_silence: bool,

    /// Something above --silence-below
    #[arg(long)]
    pub expect_sound: bool,

    /// The level below which audio counts as silent, for --expect-silence, --expect-sound
    /// and the report's silent spans
    #[arg(
        long,
        value_name = "DBFS",
        default_value_t = DEFAULT_SILENCE_DBFS,
        allow_negative_numbers = true,
        value_parser = parse_dbfs
    )]
    pub silence_below: f64,

    /// Write each file's figures (duration, peak/RMS dBFS, DC offset, clipping, silent
    /// spans, dominant frequency, gaps, xruns), checks and first mismatch as JSON
    #[arg(long, value_name = "FILE.json")]
    pub report: Option<PathBuf>,

    /// Write the checks as JUnit XML
    #[arg(long, value_name = "FILE.xml")]
    pub junit: Option<PathBuf>,

    /// Draw each channel's waveform and a spectrogram, with gaps, xruns, parameter changes,
    /// segment starts and the first mismatch marked (later files: FILE.seg2.png, …)
    #[arg(long, value_name = "FILE.png")]
    pub plot: Option<PathBuf>,

    /// The shape of raw (non-WAV) files given to --check and --expect, e.g. S16_LE:44100:2
    #[arg(long, value_name = "FORMAT:RATE:CHANNELS", value_parser = parse_shape)]
    pub raw_format: Option<AudioShape>,

    /// With --check: take the files' marks (gaps, xruns, …) from the --report a capture wrote
    #[arg(long, value_name = "REPORT.json", requires = "check")]
    pub marks_from: Option<PathBuf>,
}

fn parse_db(s: &str) -> Result<f64, String> {
    s.trim_end_matches("dB")
        .parse::<f64>()
        .ok()
        .filter(|d| d.is_finite() && *d != 0.0)
        .ok_or_else(|| format!("{s:?}: expected a number of dB, e.g. 40"))
}

fn parse_dbfs(s: &str) -> Result<f64, String> {
    s.trim_end_matches("dBFS")
        .parse::<f64>()
        .ok()
        .filter(|d| d.is_finite() && *d < 0.0)
        .ok_or_else(|| format!("{s:?}: expected a level below 0 dBFS, e.g. -60"))
}

impl VerdictArgs {
    /// What the capture must be.
    pub fn expectations(&self) -> Expectations {
        Expectations {
            goldens: self.expect.clone(),
            tolerance_db: self.expect_tolerance,
            strict: self.strict,
            tone: self.expect_tone,
            silence: self.expect_silence,
            sound: self.expect_sound,
            silence_below_dbfs: self.silence_below,
            raw_format: self.raw_format,
        }
    }

    /// A verdict, a report or a picture was asked for.
    pub fn wanted(&self) -> bool {
        self.expectations().any()
            || self.report.is_some()
            || self.junit.is_some()
            || self.plot.is_some()
    }

    /// Combinations clap cannot express; one line each.
    pub fn validate(&self) -> Result<(), String> {
        if self.strict && self.expect.is_empty() && !self.expect_silence {
            return Err("--strict applies to --expect or --expect-silence".into());
        }
        if !self.check.is_empty() && !self.wanted() {
            return Err(
                "--check needs something to do: --expect, --expect-tone, --expect-silence, \
                 --expect-sound, --report, --junit or --plot"
                    .into(),
            );
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use crate::cli::Cli;
    use clap::Parser;

    #[test]
    fn verdict_flags_parse() {
        let c = Cli::try_parse_from([
            "r",
            "--check",
            "a.wav",
            "--check",
            "a.seg2.wav",
            "--expect",
            "g.wav",
            "--expect",
            "g2.wav",
            "--expect-tolerance",
            "-40",
            "--report",
            "r.json",
            "--plot",
            "p.png",
            "--junit",
            "j.xml",
            "--silence-below",
            "-70",
        ])
        .unwrap();
        let v = &c.verdict;
        assert_eq!(v.check.len(), 2);
        assert_eq!(v.expect.len(), 2);
        assert_eq!(v.expect_tolerance, Some(-40.0));
        assert_eq!(v.silence_below, -70.0);
        assert!(v.validate().is_ok());
        let e = v.expectations();
        assert_eq!(e.tolerance_db, Some(-40.0));

        let c =
            Cli::try_parse_from(["r", "-x", "-f", "o.wav", "--expect-tone", "1000@-6"]).unwrap();
        assert_eq!(c.verdict.expect_tone.unwrap().dbfs, Some(-6.0));
        assert_eq!(c.verdict.silence_below, -60.0);

        for bad in [
            &["r", "--check", "a.wav", "-f", "o.wav", "--report", "r.json"][..],
            &["r", "--expect-tolerance", "40"],
            &[
                "r",
                "--expect",
                "g.wav",
                "--expect-tolerance",
                "40",
                "--strict",
            ],
            &["r", "--expect-silence", "--expect-sound"],
            &["r", "--expect-tone", "x"],
            &["r", "--silence-below", "3"],
            &["r", "--marks-from", "r.json"],
            &["r", "--raw-format", "S16"],
        ] {
            assert!(Cli::try_parse_from(bad).is_err(), "{bad:?}");
        }
        let c = Cli::try_parse_from(["r", "--check", "a.wav"]).unwrap();
        assert!(c
            .verdict
            .validate()
            .unwrap_err()
            .contains("needs something"));
        let c = Cli::try_parse_from(["r", "-f", "o.wav", "--strict"]).unwrap();
        assert!(c.verdict.validate().is_err());
    }
}
