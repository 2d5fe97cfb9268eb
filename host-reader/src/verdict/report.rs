//! `--report FILE.json` (one entry per judged file: its figures, marks, checks and verdict)
//! and `--junit FILE.xml` (one test case per check, for CI systems that show JUnit results).
//!
//! Levels of digital silence (minus infinity) are written as `null`.

use std::io::Write;
use std::path::Path;

use serde::Serialize;

use super::analysis::Analysis;
use super::judge::{CheckResult, JudgedFile, Judgement, Outcome};
use super::marks::{Mark, MarkKind};
use super::{Mismatch, VerdictError};

#[derive(Serialize)]
struct Report<'a> {
    tool: &'static str,
    version: &'static str,
    verdict: Outcome,
    line: &'a str,
    /// Checks about the capture as a whole.
    capture_checks: &'a [CheckResult],
    streams: Vec<StreamEntry<'a>>,
}

#[derive(Serialize)]
struct Events {
    count: usize,
    total_s: f64,
    list: Vec<Mark>,
}

impl Events {
    fn of(marks: &[Mark], kind: MarkKind) -> Events {
        let list: Vec<Mark> = marks.iter().filter(|m| m.kind == kind).cloned().collect();
        Events {
            count: list.len(),
            total_s: list
                .iter()
                .filter_map(|m| m.duration_s)
                .fold(0.0, |a, b| a + b),
            list,
        }
    }
}

#[derive(Serialize)]
struct StreamEntry<'a> {
    file: String,
    stream: Option<u32>,
    segment: Option<u32>,
    #[serde(flatten)]
    analysis: Option<&'a Analysis>,
    gaps: Events,
    xruns: Events,
    param_changes: Events,
    /// Every mark, in order (segment start, gaps, xruns, parameter changes, close/reopen).
    marks: &'a [Mark],
    marks_dropped: u64,
    verdict: Outcome,
    checks: &'a [CheckResult],
    first_mismatch: Option<&'a Mismatch>,
}

fn entry(f: &JudgedFile) -> StreamEntry<'_> {
    let m = &f.file.marks;
    StreamEntry {
        file: f.file.path.display().to_string(),
        stream: f.file.stream,
        segment: f.file.segment,
        analysis: f.analysis.as_ref(),
        gaps: Events::of(m, MarkKind::Gap),
        xruns: Events::of(m, MarkKind::Xrun),
        param_changes: Events::of(m, MarkKind::Params),
        marks: m,
        marks_dropped: f.file.marks_dropped,
        verdict: if f.checks.is_empty() {
            Outcome::None
        } else if f.passed() {
            Outcome::Match
        } else {
            Outcome::Mismatch
        },
        checks: &f.checks,
        first_mismatch: f.first_mismatch(),
    }
}

/// The report as JSON text.
pub fn json(j: &Judgement) -> String {
    let r = Report {
        tool: "dsproxy-host-reader",
        version: env!("CARGO_PKG_VERSION"),
        verdict: j.outcome,
        line: &j.line,
        capture_checks: &j.capture_checks,
        streams: j.files.iter().map(entry).collect(),
    };
    serde_json::to_string_pretty(&r).unwrap_or_else(|e| format!("{{\"error\": \"{e}\"}}"))
}

/// Writes `--report`.
pub fn write_json(path: &Path, j: &Judgement) -> Result<(), VerdictError> {
    write_file(path, json(j).as_bytes())
}

fn write_file(path: &Path, bytes: &[u8]) -> Result<(), VerdictError> {
    let mut f = std::fs::File::create(path).map_err(|e| VerdictError::io(path, e))?;
    f.write_all(bytes)
        .and_then(|_| f.write_all(b"\n"))
        .map_err(|e| VerdictError::io(path, e))
}

fn xml_escape(s: &str) -> String {
    let mut o = String::with_capacity(s.len());
    for ch in s.chars() {
        match ch {
            '&' => o.push_str("&amp;"),
            '<' => o.push_str("&lt;"),
            '>' => o.push_str("&gt;"),
            '"' => o.push_str("&quot;"),
            '\'' => o.push_str("&apos;"),
            // XML 1.0 has no way to carry other control characters.
            c if (c as u32) < 0x20 && c != '\n' && c != '\t' => o.push(' '),
            c => o.push(c),
        }
    }
    o
}

/// The checks as JUnit XML: one test case per check. With nothing expected, one passing
/// case says so (a CI system shows "0 tests" as a failure of its own).
pub fn junit(j: &Judgement) -> String {
    let checks: Vec<&CheckResult> = j.all_checks().collect();
    let failures = checks.iter().filter(|c| !c.passed).count();
    let tests = checks.len().max(1);
    let mut x = String::from("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n");
    x += &format!(
        "<testsuites name=\"dsproxy-host-reader\" tests=\"{tests}\" failures=\"{failures}\" errors=\"0\">\n"
    );
    x += &format!(
        "  <testsuite name=\"dsproxy-host-reader verdict\" tests=\"{tests}\" failures=\"{failures}\" errors=\"0\" skipped=\"0\">\n"
    );
    if checks.is_empty() {
        x += "    <testcase classname=\"dsproxy\" name=\"capture (nothing was expected)\"/>\n";
    }
    for c in checks {
        x += &format!(
            "    <testcase classname=\"dsproxy\" name=\"{}\">\n",
            xml_escape(&c.name)
        );
        if c.passed {
            x += &format!(
                "      <system-out>{}</system-out>\n",
                xml_escape(&c.summary)
            );
        } else {
            x += &format!(
                "      <failure message=\"{}\" type=\"mismatch\">{}</failure>\n",
                xml_escape(&c.summary),
                xml_escape(&c.summary)
            );
        }
        x += "    </testcase>\n";
    }
    x += "  </testsuite>\n</testsuites>\n";
    x
}

/// Writes `--junit`.
pub fn write_junit(path: &Path, j: &Judgement) -> Result<(), VerdictError> {
    write_file(path, junit(j).trim_end().as_bytes())
}

#[cfg(test)]
mod tests {
    use super::super::judge::{judge, Expectations, FileToJudge};
    use super::super::marks::CaptureLog;
    use super::*;
    use crate::convert::AudioShape;
    use dsproxy_wire::PcmFormat;

    fn capture() -> (std::path::PathBuf, std::path::PathBuf, FileToJudge) {
        let d = std::env::temp_dir().join(format!("dsproxy-report-{}", std::process::id()));
        std::fs::create_dir_all(&d).unwrap();
        let shape = AudioShape {
            format: PcmFormat::S16,
            rate_hz: 8000,
            channels: 1,
        };
        let sig = super::super::tests_support::tone_i16(8000, 1, 500.0, 0.5, 8000);
        let mut data: Vec<u8> = sig.iter().flat_map(|v| v.to_le_bytes()).collect();
        let g = d.join("g.wav");
        super::super::audio::write_wav(&g, shape, &data).unwrap();
        data[1000] ^= 0x40;
        let c = d.join("c.wav");
        super::super::audio::write_wav(&c, shape, &data).unwrap();
        let mut log = CaptureLog::new();
        log.segment_started(0, &c, 1, Some(shape));
        log.mark(0, 4000, MarkKind::Gap, Some(20_000_000), "gap".into());
        log.mark(0, 6000, MarkKind::Xrun, Some(5_000_000), "xrun".into());
        let f = &log.files()[0];
        let file = FileToJudge {
            path: c.clone(),
            stream: Some(0),
            segment: Some(1),
            marks: f.marks.clone(),
            marks_dropped: 0,
        };
        (g, c, file)
    }

    #[test]
    fn json_report_has_the_figures_events_and_first_mismatch() {
        let (g, _, file) = capture();
        let exp = Expectations {
            goldens: vec![g],
            ..Default::default()
        };
        let j = judge(vec![file], &exp, true).unwrap();
        let v: serde_json::Value = serde_json::from_str(&json(&j)).unwrap();
        assert_eq!(v["verdict"], "mismatch");
        let s = &v["streams"][0];
        assert_eq!(s["stream"], 0);
        assert_eq!(s["rate"], 8000);
        assert_eq!(s["frames"], 8000);
        assert_eq!(s["duration_s"], 1.0);
        assert!((s["channel_stats"][0]["peak_dbfs"].as_f64().unwrap() + 6.02).abs() < 0.05);
        assert!((s["dominant_hz"].as_f64().unwrap() - 500.0).abs() < 0.5);
        assert_eq!(s["gaps"]["count"], 1);
        assert_eq!(s["gaps"]["list"][0]["frame"], 2000);
        assert_eq!(s["xruns"]["count"], 1);
        assert_eq!(s["verdict"], "mismatch");
        assert_eq!(s["first_mismatch"]["frame"], 500);
        assert_eq!(s["checks"][0]["passed"], false);
        assert!(s["silent_spans"].is_array());
    }

    #[test]
    fn junit_has_one_case_per_check_and_escapes() {
        let (g, _, file) = capture();
        let exp = Expectations {
            goldens: vec![g],
            sound: true,
            ..Default::default()
        };
        let j = judge(vec![file], &exp, false).unwrap();
        let x = junit(&j);
        assert!(x.contains("tests=\"2\" failures=\"1\""), "{x}");
        assert_eq!(x.matches("<testcase ").count(), 2);
        assert_eq!(x.matches("<failure ").count(), 1);
        assert_eq!(
            xml_escape("a<b & \"c\"\u{1}"),
            "a&lt;b &amp; &quot;c&quot; "
        );
    }
}
