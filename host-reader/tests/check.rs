//! `--check`: the reader binary re-judging existing files — exit codes, the verdict line,
//! and the report, JUnit and picture files it leaves.

mod common;

use std::path::Path;
use std::process::Command;

use common::TempDir;

fn reader(args: &[&str], cwd: &Path) -> (i32, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_dsproxy-host-reader"))
        .args(args)
        .current_dir(cwd)
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn write_wav(path: &Path, rate: u32, ch: u16, samples: &[i16]) {
    let spec = hound::WavSpec {
        channels: ch,
        sample_rate: rate,
        bits_per_sample: 16,
        sample_format: hound::SampleFormat::Int,
    };
    let mut w = hound::WavWriter::create(path, spec).unwrap();
    for &s in samples {
        w.write_sample(s).unwrap();
    }
    w.finalize().unwrap();
}

fn tone(frames: usize, hz: f64, amp: f64) -> Vec<i16> {
    (0..frames)
        .flat_map(|i| {
            let v = (amp
                * 32767.0
                * (0.3 + 2.0 * std::f64::consts::PI * hz * i as f64 / 48000.0).sin())
            .round() as i16;
            [v, v]
        })
        .collect()
}

#[test]
fn exit_codes_say_match_mismatch_error_and_usage() {
    let d = TempDir::new("check-codes");
    let gold = tone(48000, 440.0, 0.5);
    write_wav(&d.join("golden.wav"), 48000, 2, &gold);
    // The capture: 10 ms of silence first and a period of padding after (allowed).
    let mut cap = vec![0i16; 2 * 480];
    cap.extend(&gold);
    cap.extend(vec![0i16; 2 * 1024]);
    write_wav(&d.join("out.wav"), 48000, 2, &cap);
    let mut bad = cap.clone();
    bad[2 * (480 + 24000) + 1] += 2;
    write_wav(&d.join("bad.wav"), 48000, 2, &bad);

    let (rc, err) = reader(&["--check", "out.wav", "--expect", "golden.wav"], &d.0);
    assert_eq!(rc, 0, "{err}");
    assert_eq!(err.lines().count(), 1, "one verdict line: {err}");
    assert!(
        err.starts_with("dsproxy-host-reader: MATCH: out.wav is bit-exact to golden.wav")
            && err.contains("0.010 s/0.021 s in the capture"),
        "{err}"
    );

    let (rc, err) = reader(&["--check", "bad.wav", "--expect", "golden.wav"], &d.0);
    assert_eq!(rc, 3, "a mismatch exits 3: {err}");
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(
        err.contains("MISMATCH") && err.contains("at 0.510000 s (frame 24480): channel 2"),
        "{err}"
    );

    let (rc, err) = reader(
        &["--check", "out.wav", "--expect", "golden.wav", "--strict"],
        &d.0,
    );
    assert_eq!(rc, 3, "--strict refuses the padding: {err}");

    let (rc, err) = reader(
        &[
            "--check",
            "out.wav",
            "--expect",
            "golden.wav",
            "--expect-tolerance",
            "50",
        ],
        &d.0,
    );
    assert_eq!(rc, 0, "{err}");
    assert!(err.contains("+0.010000 s"), "{err}");

    let (rc, err) = reader(&["--check", "out.wav", "--expect-tone", "440@-6"], &d.0);
    assert_eq!(rc, 0, "{err}");
    let (rc, err) = reader(&["--check", "out.wav", "--expect-tone", "1000"], &d.0);
    assert_eq!(rc, 3, "{err}");
    let (rc, _) = reader(&["--check", "out.wav", "--expect-silence"], &d.0);
    assert_eq!(rc, 3);
    let (rc, _) = reader(&["--check", "out.wav", "--expect-sound"], &d.0);
    assert_eq!(rc, 0);

    // Errors (1) and usage (2) are never 3.
    let (rc, err) = reader(&["--check", "missing.wav", "--expect", "golden.wav"], &d.0);
    assert_eq!(rc, 1, "{err}");
    assert!(err.contains("missing.wav"), "{err}");
    std::fs::write(d.join("junk.wav"), b"not audio at all").unwrap();
    let (rc, err) = reader(&["--check", "junk.wav", "--expect", "golden.wav"], &d.0);
    assert_eq!(rc, 1, "{err}");
    assert_eq!(err.lines().count(), 1, "{err}");
    let (rc, _) = reader(&["--check", "out.wav"], &d.0);
    assert_eq!(rc, 2);
    let (rc, _) = reader(
        &["--check", "out.wav", "-f", "x.wav", "--expect", "g.wav"],
        &d.0,
    );
    assert_eq!(rc, 2);
}

#[test]
fn report_junit_and_plot_are_written() {
    let d = TempDir::new("check-outputs");
    let gold = tone(24000, 1000.0, 0.25);
    write_wav(&d.join("golden.wav"), 48000, 2, &gold);
    let mut bad = gold.clone();
    bad[2 * 12000] = 0;
    write_wav(&d.join("out.wav"), 48000, 2, &bad);
    let (rc, err) = reader(
        &[
            "--check",
            "out.wav",
            "--expect",
            "golden.wav",
            "--report",
            "r.json",
            "--junit",
            "j.xml",
            "--plot",
            "out.png",
        ],
        &d.0,
    );
    assert_eq!(rc, 3, "{err}");
    let r: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(d.join("r.json")).unwrap()).unwrap();
    assert_eq!(r["verdict"], "mismatch");
    assert_eq!(r["streams"][0]["first_mismatch"]["frame"], 12000);
    assert_eq!(r["streams"][0]["first_mismatch"]["channel"], 1);
    assert!((r["streams"][0]["dominant_hz"].as_f64().unwrap() - 1000.0).abs() < 0.1);
    let x = std::fs::read_to_string(d.join("j.xml")).unwrap();
    assert!(x.contains("failures=\"1\""), "{x}");
    let png = std::fs::read(d.join("out.png")).unwrap();
    assert_eq!(&png[1..4], b"PNG");

    // The marks of an earlier report come back with --marks-from.
    let with_marks = r#"{"streams":[{"file":"elsewhere/out.wav","stream":0,"segment":1,
        "marks":[{"kind":"gap","frame":4800,"time_s":0.1,"duration_s":0.05,"what":"gap"}]}]}"#;
    std::fs::write(d.join("old.json"), with_marks).unwrap();
    let (rc, err) = reader(
        &[
            "--check",
            "out.wav",
            "--marks-from",
            "old.json",
            "--report",
            "r2.json",
        ],
        &d.0,
    );
    assert_eq!(rc, 0, "nothing expected, nothing to fail: {err}");
    assert!(
        err.is_empty(),
        "no verdict line without an expectation: {err}"
    );
    let r: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(d.join("r2.json")).unwrap()).unwrap();
    assert_eq!(r["verdict"], "none");
    assert_eq!(r["streams"][0]["gaps"]["count"], 1);
    assert_eq!(r["streams"][0]["stream"], 0);
}
