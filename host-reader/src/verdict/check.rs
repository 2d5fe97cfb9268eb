//! Ending with a verdict: judge a capture's files, write `--report`, `--junit` and `--plot`,
//! and say the verdict in one line on stderr. A live capture does this when it ends;
//! `--check FILE…` does it on existing files (a CI job re-judging its artifacts).

use std::path::{Path, PathBuf};

use super::args::VerdictArgs;
use super::judge::{judge, FileToJudge, Judgement, Outcome};
use super::marks::Mark;
use super::{plot, report, VerdictError};
use crate::console;

/// `--check`: judges the files given, as `args` asks.
pub fn run(args: &VerdictArgs) -> Result<Outcome, VerdictError> {
    let marks = match &args.marks_from {
        Some(p) => Some(read_marks(p)?),
        None => None,
    };
    let files = args
        .check
        .iter()
        .map(|p| {
            let mut f = FileToJudge::plain(p);
            if let Some(m) = &marks {
                if let Some(e) = find_entry(m, p) {
                    f.marks = e.marks.clone();
                    f.stream = e.stream;
                    f.segment = e.segment;
                    f.marks_dropped = e.marks_dropped;
                }
            }
            f
        })
        .collect();
    conclude(files, args)
}

/// Judges `files`, writes what `args` asks for and prints the verdict line (when something
/// was expected). The outcome decides the exit status.
pub fn conclude(files: Vec<FileToJudge>, args: &VerdictArgs) -> Result<Outcome, VerdictError> {
    let exp = args.expectations();
    let analyze = args.report.is_some() || args.plot.is_some();
    let j = judge(files, &exp, analyze)?;
    write_outputs(&j, args)?;
    if j.outcome != Outcome::None {
        console::note(&j.line);
    }
    Ok(j.outcome)
}

fn write_outputs(j: &Judgement, args: &VerdictArgs) -> Result<(), VerdictError> {
    if let Some(p) = &args.report {
        report::write_json(p, j)?;
    }
    if let Some(p) = &args.junit {
        report::write_junit(p, j)?;
    }
    if let Some(p) = &args.plot {
        for (i, f) in j.files.iter().enumerate() {
            plot::plot_judged(
                f,
                args.raw_format,
                (j.outcome, &j.line),
                &plot_path(p, i + 1),
            )?;
        }
    }
    Ok(())
}

/// The picture of the n-th file (1-based): `out.png`, `out.seg2.png`, … (named like the
/// reader's segments).
pub fn plot_path(base: &Path, n: usize) -> PathBuf {
    if n <= 1 {
        return base.to_path_buf();
    }
    let stem = base
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default();
    let ext = base
        .extension()
        .map(|e| format!(".{}", e.to_string_lossy()))
        .unwrap_or_default();
    base.with_file_name(format!("{stem}.seg{n}{ext}"))
}

/// A stream entry of an earlier `--report`.
#[derive(Debug, Clone, serde::Deserialize)]
struct Entry {
    file: PathBuf,
    stream: Option<u32>,
    segment: Option<u32>,
    #[serde(default)]
    marks: Vec<Mark>,
    #[serde(default)]
    marks_dropped: u64,
}

#[derive(Debug, serde::Deserialize)]
struct ReportMarks {
    streams: Vec<Entry>,
}

fn read_marks(path: &Path) -> Result<Vec<Entry>, VerdictError> {
    let text = std::fs::read_to_string(path).map_err(|e| VerdictError::io(path, e))?;
    let r: ReportMarks = serde_json::from_str(&text).map_err(|e| VerdictError::NotAudio {
        path: path.to_path_buf(),
        why: format!("not a dsproxy-host-reader --report: {e}"),
    })?;
    Ok(r.streams)
}

/// The entry for `file`: the same path, or else the same file name (artifacts move).
fn find_entry<'a>(entries: &'a [Entry], file: &Path) -> Option<&'a Entry> {
    entries.iter().find(|e| e.file == file).or_else(|| {
        entries
            .iter()
            .find(|e| e.file.file_name().is_some() && e.file.file_name() == file.file_name())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plot_names_follow_segments() {
        assert_eq!(
            plot_path(Path::new("a/out.png"), 1),
            PathBuf::from("a/out.png")
        );
        assert_eq!(
            plot_path(Path::new("a/out.png"), 3),
            PathBuf::from("a/out.seg3.png")
        );
    }

    #[test]
    fn marks_are_found_by_path_or_name() {
        let json = r#"{"streams":[{"file":"/ci/out.wav","stream":0,"segment":1,
            "marks":[{"kind":"gap","frame":10,"time_s":0.1,"duration_s":0.02,"what":"x"}],
            "marks_dropped":0}]}"#;
        let r: ReportMarks = serde_json::from_str(json).unwrap();
        let e = find_entry(&r.streams, Path::new("artifacts/out.wav")).unwrap();
        assert_eq!(e.marks[0].frame, 10);
        assert!(find_entry(&r.streams, Path::new("other.wav")).is_none());
    }
}
