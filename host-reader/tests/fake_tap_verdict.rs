//! A live capture through the fake device ending by itself (`--once --idle`, `--duration`,
//! `--stop-after-silence`) and judged when it ends (`--expect`, `--report`): whatever the
//! source, these work on the records the session sees.

mod common;

use std::time::{Duration, Instant};

use common::*;
use dsproxy_wire::record::Record;
use dsproxy_wire::PcmFormat;

fn s(p: &std::path::Path) -> &str {
    p.to_str().unwrap()
}

/// 48000 Hz S16 stereo "music": a sine with no silent frame.
fn tone(frames: usize, seed: f64) -> Vec<u8> {
    (0..frames)
        .flat_map(|i| {
            let v = (12000.0
                * (seed + 2.0 * std::f64::consts::PI * 440.0 * i as f64 / 48000.0).sin())
                as i16;
            let v = if v == 0 { 1 } else { v };
            [v, v]
        })
        .flat_map(|v| v.to_le_bytes())
        .collect()
}

fn golden(dir: &TempDir, name: &str, audio: &[u8]) -> std::path::PathBuf {
    let p = dir.join(name);
    let spec = hound::WavSpec {
        channels: 2,
        sample_rate: 48000,
        bits_per_sample: 16,
        sample_format: hound::SampleFormat::Int,
    };
    let mut w = hound::WavWriter::create(&p, spec).unwrap();
    for c in audio.chunks_exact(2) {
        w.write_sample(i16::from_le_bytes([c[0], c[1]])).unwrap();
    }
    w.finalize().unwrap();
    p
}

#[test]
fn once_keeps_recording_across_a_reopen_and_ends_after_the_idle_time() {
    let dev = FakeDevice::new("once-idle");
    let out = dev.dir.join("out.wav");
    let a = tone(4800, 0.3);
    let b = tone(4800, 1.3);
    let mut both = a.clone();
    both.extend(&b);
    let g = golden(&dev.dir, "golden.wav", &both);
    let mut r = Reader::spawn(&[
        "-u",
        s(&dev.sock),
        "-x",
        "--once",
        "--idle",
        "0.6",
        "-f",
        s(&out),
        "--expect",
        s(&g),
        "--report",
        s(&dev.dir.join("r.json")),
    ]);
    let (mut c, _) = dev.accept_subscribed(&hello());
    c.send(&params(0, PcmFormat::S16, 48000, 2, 4096));
    c.send(&Record::SnapshotEnd);
    c.send_all(&playback(0, &a, 4096));
    // mpg321-like: closed for 0.3 s, then open again.
    std::thread::sleep(Duration::from_millis(300));
    assert!(
        !r.exited(),
        "--once ended at the first close: {}",
        r.stderr_so_far()
    );
    // snd-pcm-oss on the way back: the OSS defaults first, then the program's own format.
    c.send(&params(0, PcmFormat::U8, 8000, 1, 4096));
    c.send(&params(0, PcmFormat::S16, 8000, 1, 4096));
    c.send(&params(0, PcmFormat::S16, 48000, 2, 4096));
    c.send_all(&playback(0, &b, 4096));
    let closed = Instant::now();
    let f = r.finish();
    let took = closed.elapsed();
    assert!(f.status.success(), "{}", f.stderr);
    assert!(
        took >= Duration::from_millis(550) && took < Duration::from_secs(5),
        "ended {took:?} after the close, not after --idle 0.6"
    );
    assert_eq!(wav_data(&out), both, "both plays, in one file");
    assert!(
        f.stderr.contains("MATCH: ") && f.stderr.contains("bit-exact"),
        "{}",
        f.stderr
    );
    let rep: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dev.dir.join("r.json")).unwrap()).unwrap();
    let kinds: Vec<&str> = rep["streams"][0]["marks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["kind"].as_str().unwrap())
        .collect();
    assert_eq!(
        kinds,
        ["segment_start", "closed", "opened", "closed"],
        "{rep}"
    );
    assert_eq!(rep["streams"][0]["marks"][1]["frame"], 4800);
    drop(c);
}

#[test]
fn a_live_mismatch_exits_3_after_the_capture_is_complete() {
    let dev = FakeDevice::new("live-mismatch");
    let out = dev.dir.join("out.wav");
    let a = tone(9600, 0.3);
    let mut wrong = a.clone();
    wrong[4 * 5000 + 2] ^= 0x10; // frame 5000, channel 2
    let g = golden(&dev.dir, "wrong.wav", &wrong);
    let r = Reader::spawn(&["-u", s(&dev.sock), "-x", "-f", s(&out), "--expect", s(&g)]);
    let (mut c, _) = dev.accept_subscribed(&hello());
    c.send(&params(0, PcmFormat::S16, 48000, 2, 4096));
    c.send(&Record::SnapshotEnd);
    c.send_all(&playback(0, &a, 4096));
    wait_until("the file to hold the audio", || {
        std::fs::metadata(&out).map(|m| m.len()).unwrap_or(0) > a.len() as u64
    });
    // Ctrl-C ends the capture; the verdict still comes.
    r.signal(libc::SIGINT);
    let f = r.finish();
    assert_eq!(f.status.code(), Some(3), "{}", f.stderr);
    assert_eq!(wav_data(&out), a, "the file is complete and finalized");
    let line = f.stderr.lines().last().unwrap_or("");
    assert!(
        line.starts_with("dsproxy-host-reader: MISMATCH: ")
            && line.contains("(frame 5000): channel 2"),
        "{}",
        f.stderr
    );
    drop(c);
}

#[test]
fn gaps_and_xruns_are_in_the_report_and_the_plot_is_drawn() {
    let dev = FakeDevice::new("live-report");
    let out = dev.dir.join("out.wav");
    let a = tone(4800, 0.3);
    let r = Reader::spawn(&[
        "-u",
        s(&dev.sock),
        "-x",
        "--live",
        "-f",
        s(&out),
        "--report",
        s(&dev.dir.join("r.json")),
        "--plot",
        s(&dev.dir.join("p.png")),
        "--expect-sound",
    ]);
    let (mut c, _) = dev.accept_subscribed(&hello());
    c.send(&params(0, PcmFormat::S16, 48000, 2, 4096));
    c.send(&Record::SnapshotEnd);
    c.send_all(&[prepare(0), start(0), pcm(0, 0, &a[..9600])]);
    c.send(&Record::Gap {
        stream: 0,
        offset: 9600,
        bytes: 4800,
        time_ns: 1,
    });
    c.send(&Record::Xrun {
        stream: 0,
        time_ns: 2,
        duration_ns: 7_000_000,
    });
    c.send_all(&[pcm(0, 14400, &a[9600..]), stop(0, true, 0), release(0)]);
    c.close();
    let f = r.finish();
    assert!(f.status.success(), "{}", f.stderr);
    let rep: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dev.dir.join("r.json")).unwrap()).unwrap();
    let st = &rep["streams"][0];
    assert_eq!(st["gaps"]["count"], 1);
    assert_eq!(st["gaps"]["list"][0]["frame"], 2400);
    assert!((st["gaps"]["total_s"].as_f64().unwrap() - 0.025).abs() < 1e-9);
    assert_eq!(st["xruns"]["count"], 1);
    assert_eq!(st["xruns"]["list"][0]["frame"], 3600);
    assert_eq!(st["frames"], 4800 + 1200);
    assert_eq!(rep["verdict"], "match");
    assert_eq!(&std::fs::read(dev.dir.join("p.png")).unwrap()[1..4], b"PNG");
}

#[test]
fn duration_cuts_the_file_at_exactly_that_much_audio() {
    let dev = FakeDevice::new("duration");
    let out = dev.dir.join("out.wav");
    let a = tone(48000, 0.3);
    let r = Reader::spawn(&[
        "-u",
        s(&dev.sock),
        "-x",
        "--duration",
        "0.25",
        "-f",
        s(&out),
    ]);
    let (mut c, _) = dev.accept_subscribed(&hello());
    c.send(&params(0, PcmFormat::S16, 48000, 2, 4096));
    c.send(&Record::SnapshotEnd);
    // Periods of 4096 bytes: 0.25 s (48000 bytes) ends inside one.
    for rec in playback(0, &a, 4096) {
        if c.try_send(&rec).is_err() {
            break; // the reader has gone
        }
    }
    let f = r.finish();
    assert!(f.status.success(), "{}", f.stderr);
    assert_eq!(wav_data(&out), a[..48000].to_vec());
}

#[test]
fn stop_after_silence_ends_once_the_sound_has_stopped() {
    let dev = FakeDevice::new("silence");
    let out = dev.dir.join("out.wav");
    let mut audio = vec![0u8; 4 * 4800]; // 100 ms of silence first: not the end
    audio.extend(tone(4800, 0.3));
    audio.extend(vec![0u8; 4 * 24000]); // 500 ms of silence
    let r = Reader::spawn(&[
        "-u",
        s(&dev.sock),
        "-x",
        "--stop-after-silence",
        "0.2",
        "-f",
        s(&out),
    ]);
    let (mut c, _) = dev.accept_subscribed(&hello());
    c.send(&params(0, PcmFormat::S16, 48000, 2, 4096));
    c.send(&Record::SnapshotEnd);
    for rec in playback(0, &audio, 4096) {
        if c.try_send(&rec).is_err() {
            break;
        }
    }
    let f = r.finish();
    assert!(f.status.success(), "{}", f.stderr);
    let got = wav_data(&out);
    // It ended in the trailing silence: after the tone plus 0.2 s, within a period.
    let min = 4 * (4800 + 4800 + 9600);
    assert!(
        got.len() >= min && got.len() <= min + 4096,
        "{} bytes, want about {min}",
        got.len()
    );
}

#[test]
fn verdicts_need_a_file_and_idle_needs_once() {
    let (code, err) = run_reader(&["-x", "-s", "--expect", "g.wav"]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("-f FILE"), "{err}");
    let (code, _) = run_reader(&["-x", "-f", "o.wav", "--idle", "2"]);
    assert_eq!(code, 2);
    let (code, _) = run_reader(&["-x", "-f", "o.wav", "--duration", "0"]);
    assert_eq!(code, 2);
}

fn run_reader(args: &[&str]) -> (i32, String) {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_dsproxy-host-reader"))
        .args(args)
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}
