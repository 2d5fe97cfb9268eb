//! The known Windows virtio-snd drivers against the real daemon, through its vhost-user
//! socket (tests/frontend's personas): ACX "viosnd" on the standard card, aero's Windows 7
//! driver on `--profile aero`. Each plays 5 s, which must come out bit-exact through the tap
//! and take 5 s +- 5 %; each records what a reader injects; and each refuses, as its driver
//! would, what breaks its contract.

use std::time::{Duration, Instant};

use dsproxy_testfront::persona::{aero, viosnd, PersonaError};
use dsproxy_testfront::proto::*;
use dsproxy_testfront::{signal, Daemon, FrontError, PlayReport, TapReader};
use dsproxy_wire::record::Record;

const T: Duration = Duration::from_secs(10);
const PACING_TOLERANCE: f64 = 0.05;

fn daemon(args: &[&str]) -> Daemon {
    Daemon::dsproxy(env!("CARGO_BIN_EXE_dsproxy-device"), args).expect("start dsproxy-device")
}

/// Behind QEMU's line with controls=on, the card has nothing to complain about, though the
/// Windows drivers do not negotiate controls.
fn no_config_complaint(d: &Daemon) {
    let complaint = &dsproxy_device::backend::MISSING_CONTROLS_ON[..60];
    assert!(!d.log_text().contains(complaint), "{}", d.log_tail(20));
}

fn tap(d: &Daemon) -> TapReader {
    let mut tap = TapReader::connect(&d.tap, 0, 0, T).expect("tap reader");
    tap.wait_for("SNAPSHOT_END", T, |r| matches!(r, Record::SnapshotEnd))
        .expect("snapshot end");
    tap
}

/// 5 s of 48 kHz S16 with `channels` channels, every byte position distinct.
fn five_seconds(seed: u64, channels: usize) -> Vec<u8> {
    signal::lcg_bytes(seed, 48_000 * 2 * channels * 5)
}

/// The capture of `stream` is exactly `data`, and the play took its duration +- 5 %.
fn check_played(
    d: &Daemon,
    tap: &mut TapReader,
    stream: u32,
    data: &[u8],
    rep: &PlayReport,
    period: usize,
) {
    assert!(rep.bad_statuses().is_empty(), "{:?}", rep.bad_statuses());
    let got = tap
        .wait_pcm_bytes(stream, data.len(), T)
        .unwrap_or_else(|e| panic!("{e}\n{}", d.log_tail(30)));
    assert!(
        got.len() == data.len() && got == data,
        "the tap's capture differs ({} of {} bytes)",
        got.len(),
        data.len()
    );
    let t = rep.timing(period).expect("timing");
    let ratio = t.elapsed.as_secs_f64() / t.audio.as_secs_f64();
    eprintln!(
        "stream {stream}: {} bytes bit-exact; {:?} of audio took {:?} ({ratio:.4}x), completions every {:.2} ms (period {:.2} ms, stddev {:.2} ms), end drift {:.1} ms",
        data.len(),
        t.audio,
        t.elapsed,
        t.interval_mean_ms,
        t.period_ms,
        t.interval_stddev_ms,
        t.drift_end_ms
    );
    assert!(
        (ratio - 1.0).abs() <= PACING_TOLERANCE,
        "{:?} of audio took {:?} ({ratio:.3}x): {t:?}",
        t.audio,
        t.elapsed
    );
}

/// Injects `audio` into `stream` through the tap once it is prepared.
fn injector(tap: &mut TapReader, audio: Vec<u8>) -> impl FnOnce(u32) + '_ {
    move |stream| {
        tap.wait_for(
            "PREPARE",
            T,
            |r| matches!(r, Record::Prepare { stream: s, .. } if *s == stream),
        )
        .expect("the capture stream was prepared");
        tap.send(&Record::Inject {
            stream,
            data: audio,
        })
        .expect("inject");
    }
}

/// The injected block inside a capture that may start with silence.
fn find_injected(captured: &[u8], audio: &[u8]) {
    let start = captured
        .iter()
        .position(|&b| b != 0)
        .expect("injected audio never reached the guest");
    assert!(
        captured.len() >= start + audio.len(),
        "only {} of {} injected bytes",
        captured.len() - start,
        audio.len()
    );
    assert!(
        captured[start..start + audio.len()] == audio[..],
        "the injected audio arrived altered"
    );
}

// ---- viosnd ----------------------------------------------------------------------------

#[test]
fn viosnd_plays_5s_bit_exact_in_real_time_on_the_standard_card() {
    let d = daemon(&[]);
    let mut tap = tap(&d);
    let mut drv =
        viosnd::Viosnd::start(&d.socket).unwrap_or_else(|e| panic!("{e}\n{}", d.log_tail(30)));
    // The standard card's first output and input both offer S16/48k/2ch.
    assert_eq!((drv.output, drv.input), (Some(0), Some(1)));
    let data = five_seconds(11, 2);
    let t0 = Instant::now();
    let rep = drv
        .play(&data)
        .unwrap_or_else(|e| panic!("{e}\n{}", d.log_tail(30)));
    check_played(&d, &mut tap, 0, &data, &rep, viosnd::PERIOD_BYTES as usize);
    assert_eq!(
        rep.completions.len(),
        data.len().div_ceil(viosnd::PERIOD_BYTES as usize)
    );
    assert!(t0.elapsed() < Duration::from_secs(7));
    // It got what it asked for: VERSION_1 only, 8 event buffers taken (none returned).
    assert_eq!(
        drv.fe.acked_features() & !VHOST_USER_F_PROTOCOL_FEATURES,
        VIRTIO_F_VERSION_1
    );
    assert_eq!(drv.fe.in_flight()[EVENT_QUEUE], viosnd::EVENT_BUFFERS);
    no_config_complaint(&d);
    let rep = drv.fe.disconnect().unwrap();
    assert!(rep.violations.is_empty(), "{:?}", rep.violations);
}

#[test]
fn viosnd_records_what_a_reader_injects() {
    let d = daemon(&[]);
    let mut tap = tap(&d);
    let mut drv =
        viosnd::Viosnd::start(&d.socket).unwrap_or_else(|e| panic!("{e}\n{}", d.log_tail(30)));
    let mut audio = signal::lcg_bytes(12, 96_000); // 0.5 s of S16 stereo
    audio[..4].copy_from_slice(&[1, 2, 3, 4]);
    let want = audio.len() + 4 * viosnd::PERIOD_BYTES as usize;
    let captured = drv
        .record(want, injector(&mut tap, audio.clone()))
        .unwrap_or_else(|e| panic!("{e}\n{}", d.log_tail(30)));
    find_injected(&captured, &audio);
}

#[test]
fn viosnd_refuses_an_event_queue_that_cannot_take_8_buffers() {
    let d = daemon(&[]);
    let mut opts = viosnd::opts();
    opts.queue_sizes = Some([64, 4, 64, 64]);
    match viosnd::Viosnd::start_with(&d.socket, opts) {
        Err(PersonaError::Refused { why, .. }) => assert!(why.contains("event queue"), "{why}"),
        Err(e) => panic!("refused for the wrong reason: {e}"),
        Ok(_) => panic!("viosnd started with a 4-entry event queue"),
    }
}

// ---- aero ------------------------------------------------------------------------------

#[test]
fn aero_plays_5s_bit_exact_in_real_time_on_profile_aero() {
    let d = daemon(&["--profile", "aero"]);
    let mut tap = tap(&d);
    let mut drv =
        aero::Aero::start(&d.socket).unwrap_or_else(|e| panic!("{e}\n{}", d.log_tail(30)));
    assert_eq!(
        (drv.config.jacks, drv.config.streams, drv.config.chmaps),
        (0, 2, 0)
    );
    let data = five_seconds(21, 2);
    let rep = drv
        .play(&data, aero::PERIOD_BYTES)
        .unwrap_or_else(|e| panic!("{e}\n{}", d.log_tail(30)));
    check_played(&d, &mut tap, aero::OUTPUT, &data, &rep, aero::PERIOD_BYTES);
    assert!(
        rep.completions.iter().all(|c| c.status == 0 && c.len == 8),
        "aero's OK is 0, and the used length holds the status"
    );
    // Every multi-descriptor chain (control requests, TX buffers) went through a table.
    assert!(
        drv.fe.indirect_chains() as usize > rep.completions.len(),
        "{}",
        drv.fe.indirect_chains()
    );
    no_config_complaint(&d);
    let rep = drv.fe.disconnect().unwrap();
    assert!(rep.violations.is_empty(), "{:?}", rep.violations);
}

#[test]
fn aero_plays_256_kib_payloads_bit_exact() {
    let d = daemon(&["--profile", "aero"]);
    let mut tap = tap(&d);
    let mut drv =
        aero::Aero::start(&d.socket).unwrap_or_else(|e| panic!("{e}\n{}", d.log_tail(30)));
    // Three full 256 KiB payloads and a shorter last one: 5 s.
    let data = five_seconds(22, 2);
    let rep = drv
        .play(&data, aero::MAX_PAYLOAD)
        .unwrap_or_else(|e| panic!("{e}\n{}", d.log_tail(30)));
    assert_eq!(rep.completions.len(), 4);
    check_played(&d, &mut tap, aero::OUTPUT, &data, &rep, aero::MAX_PAYLOAD);
    // And it never sends more.
    match drv.play(&data, aero::MAX_PAYLOAD + 4) {
        Err(PersonaError::Failed {
            source: FrontError::Usage(_),
            ..
        }) => {}
        other => panic!("a payload over 256 KiB: {other:?}"),
    }
}

#[test]
fn aero_records_what_a_reader_injects() {
    let d = daemon(&["--profile", "aero"]);
    let mut tap = tap(&d);
    let mut drv =
        aero::Aero::start(&d.socket).unwrap_or_else(|e| panic!("{e}\n{}", d.log_tail(30)));
    let mut audio = signal::lcg_bytes(23, 48_000); // 0.5 s of S16 mono
    audio[..2].copy_from_slice(&[1, 2]);
    let period = 960; // 10 ms mono
    let captured = drv
        .record(
            audio.len() + 4 * period,
            period,
            injector(&mut tap, audio.clone()),
        )
        .unwrap_or_else(|e| panic!("{e}\n{}", d.log_tail(30)));
    find_injected(&captured, &audio);
}

#[test]
fn aero_refuses_the_standard_card() {
    let d = daemon(&[]);
    match aero::Aero::start(&d.socket) {
        // 1 output + 1 input: 2 jacks (fine), 2 streams (fine), 2 chmaps (not fine).
        Err(PersonaError::Refused { why, .. }) => assert!(why.contains("2 chmaps"), "{why}"),
        Err(e) => panic!("refused for the wrong reason: {e}"),
        Ok(_) => panic!("aero's driver accepted the standard card"),
    }
}

#[test]
fn aero_stops_streaming_at_the_first_bad_msg() {
    let d = daemon(&["--profile", "aero"]);
    let mut drv =
        aero::Aero::start(&d.socket).unwrap_or_else(|e| panic!("{e}\n{}", d.log_tail(30)));
    // 1922-byte payloads are not whole stereo S16 frames: the card answers BAD_MSG (aero's
    // code 1) to the first, and the driver stops there.
    let data = signal::lcg_bytes(24, 1922 * 8);
    match drv.play_chunks(&data, aero::PERIOD_BYTES, 1922) {
        Err(PersonaError::Failed {
            source: FrontError::Stopped { completed, why, .. },
            ..
        }) => {
            assert_eq!(completed, 0, "stopped at the first completion");
            assert!(why.contains("BAD_MSG"), "{why}");
        }
        other => panic!("{other:?}"),
    }
    assert!(
        d.log_text().contains("not a whole number"),
        "the card logged why\n{}",
        d.log_tail(20)
    );
}
