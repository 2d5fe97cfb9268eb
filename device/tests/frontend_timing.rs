//! The card's clock, seen by the driver: playback buffers complete at the stream's rate, not
//! as fast as they come, unless the card is told not to pace. The bounds are loose on
//! purpose: this checks behaviour, the benchmark measures quality.

use std::time::Duration;

use dsproxy_testfront::proto::*;
use dsproxy_testfront::{play, signal, Daemon, FrontendOpts, SndFrontend, TapReader};

fn daemon(args: &[&str]) -> Daemon {
    Daemon::dsproxy(env!("CARGO_BIN_EXE_dsproxy-device"), args).expect("start dsproxy-device")
}

fn connect(d: &Daemon) -> SndFrontend {
    SndFrontend::connect(&d.socket, FrontendOpts::default())
        .unwrap_or_else(|e| panic!("connect: {e}\n{}", d.log_tail(30)))
}

#[test]
fn one_second_of_audio_takes_about_one_second() {
    let d = daemon(&[]);
    let mut fe = connect(&d);
    // 48 kHz S16 stereo, 1024-frame periods (21.3 ms), 4 periods in flight, no reader.
    assert_eq!(fe.set_params(0, 16384, 4096, 2, 5, 7).unwrap(), S_OK);
    assert_eq!(fe.prepare(0).unwrap(), S_OK);
    let data = signal::lcg_bytes(1, 192_000);
    let rep = play(&mut fe, 0, &data, 4096).unwrap_or_else(|e| panic!("{e}\n{}", d.log_tail(30)));
    let t = rep.timing(4096).unwrap();
    assert!(
        t.elapsed >= Duration::from_millis(900) && t.elapsed <= Duration::from_millis(1300),
        "1 s of audio completed in {:?} ({t:?})",
        t.elapsed
    );
    // The first buffer is played a period after START, not at once.
    let first = rep.completions[0]
        .completed_at
        .duration_since(rep.start_sent);
    assert!(
        first >= Duration::from_millis(10),
        "first buffer completed {first:?} after START"
    );
    // Completions come one period apart on average.
    assert!(
        (t.interval_mean_ms - t.period_ms).abs() < t.period_ms * 0.25,
        "{t:?}"
    );
    assert!(rep.bad_statuses().is_empty());
    assert_eq!(fe.release(0).unwrap(), S_OK);
    assert_eq!(
        fe.late_notifications(),
        0,
        "completions the device never signalled"
    );
}

#[test]
fn a_slower_rate_takes_proportionally_longer() {
    let d = daemon(&[]);
    let mut fe = connect(&d);
    // 8 kHz U8 mono: 4000 bytes are half a second.
    assert_eq!(fe.set_params(0, 2000, 500, 1, 4, 1).unwrap(), S_OK);
    assert_eq!(fe.prepare(0).unwrap(), S_OK);
    let data = signal::lcg_bytes(2, 4000);
    let rep = play(&mut fe, 0, &data, 500).unwrap();
    let t = rep.timing(500).unwrap();
    assert!(
        t.elapsed >= Duration::from_millis(450) && t.elapsed <= Duration::from_millis(800),
        "0.5 s of 8 kHz audio completed in {:?}",
        t.elapsed
    );
}

#[test]
fn without_pacing_buffers_complete_as_fast_as_the_reader_takes_them() {
    let d = daemon(&["--pacing", "none"]);
    let mut tap = TapReader::connect(&d.tap, 0, 0, Duration::from_secs(5)).expect("tap");
    let mut fe = connect(&d);
    assert_eq!(fe.set_params(0, 16384, 4096, 2, 5, 7).unwrap(), S_OK);
    assert_eq!(fe.prepare(0).unwrap(), S_OK);
    // Two seconds of audio.
    let data = signal::lcg_bytes(3, 384_000);
    let rep = play(&mut fe, 0, &data, 4096).unwrap();
    let t = rep.timing(4096).unwrap();
    assert!(
        t.elapsed < Duration::from_millis(700),
        "2 s of audio took {:?} without pacing",
        t.elapsed
    );
    assert!(rep.bad_statuses().is_empty());
    // Fast, and still nothing lost.
    let got = tap
        .wait_pcm_bytes(0, data.len(), Duration::from_secs(5))
        .unwrap();
    assert!(got == data, "PCM differs");
}

#[test]
fn a_no_pacing_reader_lifts_the_clock_while_attached() {
    let d = daemon(&[]);
    let mut tap = TapReader::connect(
        &d.tap,
        dsproxy_wire::record::SUB_NO_PACING,
        0,
        Duration::from_secs(5),
    )
    .expect("tap");
    tap.wait_for("SNAPSHOT_END", Duration::from_secs(5), |r| {
        matches!(r, dsproxy_wire::Record::SnapshotEnd)
    })
    .unwrap();
    let mut fe = connect(&d);
    assert_eq!(fe.set_params(0, 16384, 4096, 2, 5, 7).unwrap(), S_OK);
    assert_eq!(fe.prepare(0).unwrap(), S_OK);
    let data = signal::lcg_bytes(4, 384_000);
    let rep = play(&mut fe, 0, &data, 4096).unwrap();
    let t = rep.timing(4096).unwrap();
    assert!(
        t.elapsed < Duration::from_millis(700),
        "2 s of audio took {:?} with a NO_PACING reader",
        t.elapsed
    );
    let got = tap
        .wait_pcm_bytes(0, data.len(), Duration::from_secs(5))
        .unwrap();
    assert!(got == data, "PCM differs");
}
