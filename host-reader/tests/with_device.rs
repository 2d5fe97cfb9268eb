//! The reader against the real device: `dsproxy-device` runs as a child process and
//! `dsproxy-testfront` plays QEMU + the guest's virtio_snd driver into it.
//!
//! The device binary is the one cargo built next to the reader (`cargo test --workspace`
//! builds it; for this crate alone, `cargo build -p dsproxy-device` first).

mod common;

use std::os::unix::process::ExitStatusExt;
use std::path::PathBuf;
use std::time::Duration;

use common::{wav_data, Reader};
use dsproxy_testfront::proto::S_OK;
use dsproxy_testfront::{play, signal, Daemon, FrontendOpts, SndFrontend};
use dsproxy_wire::{PcmFormat, PcmRate};

fn device_bin() -> PathBuf {
    let p =
        PathBuf::from(env!("CARGO_BIN_EXE_dsproxy-host-reader")).with_file_name("dsproxy-device");
    assert!(
        p.exists(),
        "{} is missing: build it first (cargo build -p dsproxy-device, or cargo test --workspace)",
        p.display()
    );
    p
}

/// A daemon whose clock waits for a reader, so nothing plays before the reader is attached.
fn daemon() -> Daemon {
    Daemon::dsproxy(device_bin(), &["--wait-for-reader"]).expect("start dsproxy-device")
}

fn frontend(d: &Daemon) -> SndFrontend {
    SndFrontend::connect(&d.socket, FrontendOpts::default())
        .unwrap_or_else(|e| panic!("connect: {e}\n{}", d.log_tail(30)))
}

fn s(p: &std::path::Path) -> &str {
    p.to_str().unwrap()
}

/// Plays `data` on output stream 0 from SET_PARAMS to RELEASE.
fn play_session(
    fe: &mut SndFrontend,
    d: &Daemon,
    format: PcmFormat,
    rate: PcmRate,
    channels: u8,
    period: u32,
    data: &[u8],
) {
    play_unreleased(fe, d, format, rate, channels, period, data);
    assert_eq!(fe.release(0).unwrap(), S_OK);
}

/// Plays `data` on output stream 0 from SET_PARAMS on, leaving the stream prepared (for the
/// tests where the VMM or the daemon dies in the middle of a stream).
fn play_unreleased(
    fe: &mut SndFrontend,
    d: &Daemon,
    format: PcmFormat,
    rate: PcmRate,
    channels: u8,
    period: u32,
    data: &[u8],
) {
    let st = fe
        .set_params(0, period * 4, period, channels, format.code(), rate.code())
        .unwrap();
    assert_eq!(st, S_OK, "SET_PARAMS");
    assert_eq!(fe.prepare(0).unwrap(), S_OK);
    let rep = play(fe, 0, data, period as usize)
        .unwrap_or_else(|e| panic!("play: {e}\n{}", d.log_tail(30)));
    assert!(rep.bad_statuses().is_empty(), "{:?}", rep.bad_statuses());
}

fn shape(format: PcmFormat, rate: PcmRate, channels: u8) -> dsproxy_wire::PcmShape {
    dsproxy_wire::PcmShape {
        format,
        rate,
        channels,
    }
}

#[test]
fn the_guests_audio_reaches_wav_and_stdout_bit_exact_with_e_lines() {
    let d = daemon();
    let dir = common::TempDir::new("dev-wav");
    let out = dir.join("out.wav");
    let r = Reader::spawn(&["-u", s(&d.tap), "-x", "-e", "-s", "-f", s(&out)]);
    let mut fe = frontend(&d);
    let data = signal::lcg_bytes(1, 4096 * 24 + 1024);
    play_session(&mut fe, &d, PcmFormat::S16, PcmRate::R48000, 2, 4096, &data);
    // A mixer change by the guest.
    assert_eq!(fe.ctl_write(2, &[75, 50]).unwrap(), S_OK);
    fe.disconnect().unwrap();
    common::wait_until("the reader to see the VM go", || {
        r.stderr_so_far().contains("-- VM went away")
    });
    r.signal(libc::SIGTERM);
    let f = r.finish();
    assert_eq!(f.status.code(), Some(0), "{}", f.stderr);
    assert_eq!(wav_data(&out), data);
    assert_eq!(f.stdout, data);
    for want in [
        "SNDCTL_DSP_SPEED    => 48000",
        "SNDCTL_DSP_SETFMT   => AFMT_S16_LE",
        "SNDCTL_DSP_CHANNELS => 2",
        "SNDCTL_DSP_SETFRAGMENT => 4 x 4096",
        "SNDCTL_DSP_SYNC",
        "SOUND_MIXER_WRITE_PCM => 75:50",
        "-- VM went away",
    ] {
        assert!(
            f.stderr.lines().any(|l| l == want),
            "{want:?} not in:\n{}",
            f.stderr
        );
    }
}

#[test]
fn a_format_change_on_the_device_starts_a_segment() {
    let d = daemon();
    let dir = common::TempDir::new("dev-seg");
    let out = dir.join("out.wav");
    let r = Reader::spawn(&["-u", s(&d.tap), "-x", "-f", s(&out)]);
    let mut fe = frontend(&d);
    let a = signal::sine(&shape(PcmFormat::S16, PcmRate::R44100, 2), 440.0, 4410);
    let b = signal::lcg_bytes(2, 8000);
    play_session(&mut fe, &d, PcmFormat::S16, PcmRate::R44100, 2, 1764, &a);
    play_session(&mut fe, &d, PcmFormat::U8, PcmRate::R8000, 1, 800, &b);
    fe.disconnect().unwrap();
    let seg2 = dir.join("out.seg2.wav");
    common::wait_until("the second segment", || {
        std::fs::metadata(&seg2).map(|m| m.len()).unwrap_or(0) >= 80 + b.len() as u64
    });
    r.signal(libc::SIGTERM);
    let f = r.finish();
    assert_eq!(f.status.code(), Some(0), "{}", f.stderr);
    assert_eq!(wav_data(&out), a);
    assert_eq!(wav_data(&seg2), b);
}

#[test]
fn the_frontend_dying_and_the_reader_being_terminated_leave_final_files() {
    let d = daemon();
    let dir = common::TempDir::new("dev-kill");
    let out = dir.join("out.wav");
    let r = Reader::spawn(&["-u", s(&d.tap), "-x", "-f", s(&out)]);
    let mut fe = frontend(&d);
    let data = signal::lcg_bytes(3, 4096 * 8);
    play_unreleased(&mut fe, &d, PcmFormat::S16, PcmRate::R48000, 2, 4096, &data);
    // The VMM vanishes without stopping anything (as QEMU killed with SIGKILL).
    drop(fe);
    common::wait_until("the file to be finalized", || {
        std::fs::read(&out)
            .map(|b| b.len() == 80 + data.len() && b[76..80] == (data.len() as u32).to_le_bytes())
            .unwrap_or(false)
    });
    r.signal(libc::SIGTERM);
    let f = r.finish();
    assert_eq!(f.status.code(), Some(0), "{}", f.stderr);
    assert_eq!(wav_data(&out), data);
}

#[test]
fn without_x_and_without_a_sound_card_recording_goes_on() {
    let d = daemon();
    let dir = common::TempDir::new("dev-noplay");
    let out = dir.join("out.pcm");
    let r = Reader::spawn(&[
        "-u",
        s(&d.tap),
        "--device",
        "dsproxy-test-no-such-device",
        "-f",
        s(&out),
        "--once",
    ]);
    let mut fe = frontend(&d);
    let data = signal::lcg_bytes(4, 4096 * 4);
    play_session(&mut fe, &d, PcmFormat::S16, PcmRate::R48000, 2, 4096, &data);
    let f = r.finish();
    assert_eq!(f.status.code(), Some(0), "{}", f.stderr);
    assert_eq!(std::fs::read(&out).unwrap(), data);
    assert_eq!(f.stderr.lines().count(), 1, "{}", f.stderr);
    drop(fe);
}

#[test]
fn inject_reaches_the_guests_capture_buffers_bit_exact() {
    let d = daemon();
    let dir = common::TempDir::new("dev-inject");
    // Raw, already in the capture stream's params: sent as is.
    let src = dir.join("mic.raw");
    let data = signal::lcg_bytes(5, 4096 * 6);
    std::fs::write(&src, &data).unwrap();
    let r = Reader::spawn(&["-u", s(&d.tap), "-x", "-e", "--inject", s(&src)]);
    let mut fe = frontend(&d);
    let period = 4096u32;
    let st = fe
        .set_params(
            1,
            period * 4,
            period,
            2,
            PcmFormat::S16.code(),
            PcmRate::R48000.code(),
        )
        .unwrap();
    assert_eq!(st, S_OK);
    assert_eq!(fe.prepare(1).unwrap(), S_OK);
    for _ in 0..4 {
        fe.push_rx(1, period as usize).unwrap();
    }
    assert_eq!(fe.start(1).unwrap(), S_OK);
    // Capture until the injected audio has gone by (leading silence while it was on its way
    // is fine; what follows must be the file, byte for byte).
    let mut captured = Vec::new();
    let found = |c: &[u8]| c.windows(64).position(|w| w == &data[..64]);
    for _ in 0..200 {
        for c in fe.wait_used(Duration::from_secs(5)).unwrap() {
            if c.stream == Some(1) {
                assert_eq!(c.status, S_OK);
                captured.extend_from_slice(&c.data);
                fe.push_rx(1, period as usize).unwrap();
            }
        }
        if let Some(at) = found(&captured) {
            if captured.len() >= at + data.len() {
                break;
            }
        }
    }
    let at = found(&captured).expect("the injected audio never arrived");
    assert!(
        captured[..at].iter().all(|&b| b == 0),
        "non-silence before the audio"
    );
    assert_eq!(&captured[at..at + data.len()], &data[..]);
    let _ = fe.stop(1);
    drop(fe);
    r.signal(libc::SIGTERM);
    let f = r.finish();
    assert_eq!(f.status.code(), Some(0), "{}", f.stderr);
}

#[test]
fn mixer_changes_reach_the_guest_and_other_readers() {
    use dsproxy_testfront::check::find_control;
    use dsproxy_testfront::proto::SndEvent;
    let d = daemon();
    let mut fe = frontend(&d);
    let ctls = fe.ctl_info().unwrap();
    let pcm_vol = find_control(&ctls, "PCM Playback Volume", 0).expect("PCM volume");
    let master_sw = find_control(&ctls, "Master Playback Switch", 0).expect("master switch");
    let cap_vol = find_control(&ctls, "Capture Volume", 0).expect("capture volume");
    // A second reader watches in OSS terms (-i to see when it is attached).
    let watcher = Reader::spawn(&["-u", s(&d.tap), "-x", "-e", "-i"]);
    common::wait_until("the watcher to attach", || {
        watcher.stderr_so_far().lines().any(|l| l == "SNAPSHOT_END")
    });

    // The one-shot form: set, wait for the device's confirmation, exit 0.
    let f = Reader::spawn(&[
        "-u",
        s(&d.tap),
        "-x",
        "--mixer",
        "pcm=50:25",
        "--mixer",
        "Master Playback Switch=off",
        "--mixer",
        "IGAIN=30",
    ])
    .finish();
    assert_eq!(f.status.code(), Some(0), "{}\n{}", f.stderr, d.log_tail(20));
    assert!(f.stderr.is_empty(), "{}", f.stderr);
    // The guest was told, and reads the new values.
    let mut notified = Vec::new();
    while notified.len() < 3 {
        let ev = fe
            .wait_event(Duration::from_secs(5), |e| {
                matches!(e, SndEvent::CtlNotify { .. })
            })
            .unwrap()
            .unwrap_or_else(|| panic!("CTL_NOTIFY missing after {notified:?}"));
        if let SndEvent::CtlNotify { control, .. } = ev.event {
            notified.push(control as u32);
        }
    }
    assert_eq!(notified, vec![pcm_vol, master_sw, cap_vol]);
    assert_eq!(fe.ctl_read(pcm_vol, 2).unwrap(), vec![50, 25]);
    assert_eq!(fe.ctl_read(master_sw, 1).unwrap(), vec![0]);
    assert_eq!(fe.ctl_read(cap_vol, 2).unwrap(), vec![30, 30]);
    common::wait_until("the watcher to see the changes", || {
        watcher
            .stderr_so_far()
            .contains("SOUND_MIXER_WRITE_IGAIN => 30:30  (set by a host reader)")
    });
    for want in [
        "SOUND_MIXER_WRITE_PCM => 50:25  (set by a host reader)",
        "SOUND_MIXER_WRITE_VOLUME => muted  (set by a host reader)",
    ] {
        assert!(
            watcher.stderr_so_far().lines().any(|l| l == want),
            "{want:?} not in:\n{}",
            watcher.stderr_so_far()
        );
    }

    // Again with the same value: nothing to change, nothing to wait for.
    let f = Reader::spawn(&["-u", s(&d.tap), "-x", "--mixer", "pcm=50:25"]).finish();
    assert_eq!(f.status.code(), Some(0), "{}", f.stderr);
    // With -e, the reader that made the change says so as host:, and carries on.
    let r = Reader::spawn(&["-u", s(&d.tap), "-x", "-e", "--mixer", "vol=on"]);
    common::wait_until("the host: line", || {
        r.stderr_so_far()
            .lines()
            .any(|l| l == "host: SOUND_MIXER_WRITE_VOLUME => unmuted")
    });
    assert_eq!(fe.ctl_read(master_sw, 1).unwrap(), vec![1]);
    r.signal(libc::SIGTERM);
    let f = r.finish();
    assert_eq!(f.status.code(), Some(0), "{}", f.stderr);
    // A value out of the card's range never leaves the reader.
    let f = Reader::spawn(&["-u", s(&d.tap), "-x", "--mixer", "pcm=101"]).finish();
    assert_eq!(f.status.code(), Some(2), "{}", f.stderr);
    assert_eq!(
        f.stderr,
        "dsproxy-host-reader: --mixer pcm=101: 101 is out of range for \"PCM Playback Volume\" \
         (0..100)\n"
    );
    assert_eq!(fe.ctl_read(pcm_vol, 2).unwrap(), vec![50, 25]);
    watcher.signal(libc::SIGTERM);
    assert_eq!(watcher.finish().status.code(), Some(0));
    drop(fe);
}

/// A card started with `--no-controls` (whose HELLO lists no controls) is read and recorded
/// like any other; a QEMU line without `controls=on` in front of a card with controls makes
/// the reader print the device's explanation, whatever the log options.
#[test]
fn no_controls_cards_are_recorded_and_the_controls_on_notice_is_printed() {
    let d = Daemon::dsproxy(device_bin(), &["--wait-for-reader", "--no-controls"])
        .expect("start dsproxy-device");
    let dir = common::TempDir::new("dev-noctl");
    let out = dir.join("out.wav");
    let r = Reader::spawn(&["-u", s(&d.tap), "-x", "-f", s(&out)]);
    let mut fe = SndFrontend::connect(
        &d.socket,
        FrontendOpts {
            want_ctls: false,
            ..FrontendOpts::default()
        },
    )
    .unwrap_or_else(|e| panic!("connect: {e}\n{}", d.log_tail(30)));
    let data = signal::lcg_bytes(5, 4096 * 6);
    play_session(&mut fe, &d, PcmFormat::S16, PcmRate::R48000, 2, 4096, &data);
    fe.disconnect().unwrap();
    common::wait_until("the capture", || {
        std::fs::metadata(&out).map(|m| m.len()).unwrap_or(0) >= 80 + data.len() as u64
    });
    r.signal(libc::SIGTERM);
    let f = r.finish();
    assert_eq!(f.status.code(), Some(0), "{}", f.stderr);
    assert_eq!(wav_data(&out), data);
    assert!(!f.stderr.contains("device error"), "{}", f.stderr);

    // The card has controls; QEMU's line does not say controls=on.
    let d = daemon();
    let r = Reader::spawn(&["-u", s(&d.tap), "-x", "-f", s(&dir.join("b.wav"))]);
    // Subscribed (the notice is about this frontend, and a reader attaching after it left
    // would rightly not see it).
    common::wait_until("the reader to subscribe", || {
        d.log_text().contains("subscribed")
    });
    let fe = SndFrontend::connect(
        &d.socket,
        FrontendOpts {
            // A driver that takes controls (Linux 6.9+) behind QEMU's 12-byte config.
            want_ctls: true,
            config_len: Some(12),
            ..FrontendOpts::default()
        },
    )
    .unwrap_or_else(|e| panic!("connect: {e}\n{}", d.log_tail(30)));
    fe.disconnect().unwrap();
    common::wait_until("the notice on stderr", || {
        r.stderr_so_far().contains("device error:")
    });
    r.signal(libc::SIGTERM);
    let f = r.finish();
    assert_eq!(f.status.code(), Some(0), "{}", f.stderr);
    assert!(
        f.stderr
            .contains("device error: the frontend's virtio-snd config space is 12 bytes")
            && f.stderr.contains("add controls=on"),
        "{}",
        f.stderr
    );
}

/// The TCP address the daemon's tap bound (`--listen` with port 0), from its log.
fn tcp_addr(d: &Daemon) -> String {
    let log = d.log_text();
    log.lines()
        .find_map(|l| l.split(" and tcp ").nth(1))
        .map(|a| a.split_whitespace().next().unwrap_or(a).to_string())
        .unwrap_or_else(|| panic!("no TCP address in the daemon's log:\n{log}"))
}

/// A reader over TCP (`--listen`) only listens: its `--mixer` is refused, the reader prints
/// the device's reason and fails, the guest's mixer is untouched. With
/// `--allow-tcp-control` the same reader sets it.
#[test]
fn tcp_readers_only_listen_unless_the_daemon_allows_control() {
    use dsproxy_testfront::check::find_control;
    for allowed in [false, true] {
        let mut args = vec!["--listen", "127.0.0.1:0"];
        if allowed {
            args.push("--allow-tcp-control");
        }
        let d = Daemon::dsproxy(device_bin(), &args).expect("start dsproxy-device");
        let addr = tcp_addr(&d);
        let mut fe = frontend(&d);
        let ctls = fe.ctl_info().unwrap();
        let pcm_vol = find_control(&ctls, "PCM Playback Volume", 0).expect("PCM volume");
        let before = fe.ctl_read(pcm_vol, 2).unwrap();
        assert_ne!(before, vec![37, 21]);
        let f = Reader::spawn(&["-n", &addr, "-x", "--mixer", "pcm=37:21"]).finish();
        if allowed {
            assert_eq!(f.status.code(), Some(0), "{}\n{}", f.stderr, d.log_tail(20));
            assert_eq!(fe.ctl_read(pcm_vol, 2).unwrap(), vec![37, 21]);
        } else {
            assert_ne!(f.status.code(), Some(0), "{}", f.stderr);
            assert!(
                f.stderr.contains(
                    "device error: this tap connection is TCP, and TCP readers only listen"
                ) && f.stderr.contains("--allow-tcp-control"),
                "{}",
                f.stderr
            );
            assert_eq!(fe.ctl_read(pcm_vol, 2).unwrap(), before);
            assert!(
                d.log_text().contains("refused, TCP readers only listen"),
                "{}",
                d.log_tail(20)
            );
        }
        // Bound to loopback: no warning about other hosts.
        assert!(!d.log_text().contains("accepts readers from other hosts"));
        drop(fe);
    }
}

/// Plays `data` on output stream 0 as S16 stereo 48 kHz in 4096-byte periods.
fn play_s16(fe: &mut SndFrontend, d: &Daemon, data: &[u8]) {
    play_session(fe, d, PcmFormat::S16, PcmRate::R48000, 2, 4096, data);
}

/// Until the file at `path` is a final WAV of `len` data bytes (its header says so).
fn wait_final_wav(path: &std::path::Path, len: usize) {
    common::wait_until("the file to be finalized", || {
        std::fs::read(path)
            .map(|b| b.len() == 80 + len && b[76..80] == (len as u32).to_le_bytes())
            .unwrap_or(false)
    });
}

/// The daemon restarts (SIGTERM, then a new one on the same tap socket) under a reader
/// with --reconnect: the first file is final, the reader reattaches by itself and records
/// what the next VM plays into the next segment.
#[test]
fn a_daemon_restart_under_a_reader_continues_into_a_new_segment() {
    let dir = common::TempDir::new("dev-restart");
    let tap = dir.join("tap.sock");
    let out = dir.join("out.wav");
    let mut d = Daemon::dsproxy_at(device_bin(), &["--wait-for-reader"], &tap)
        .expect("start dsproxy-device");
    let r = Reader::spawn(&["-u", s(&tap), "-x", "--reconnect", "-f", s(&out)]);
    let a = signal::lcg_bytes(21, 4096 * 6);
    let mut fe = frontend(&d);
    play_s16(&mut fe, &d, &a);
    drop(fe);
    wait_final_wav(&out, a.len());
    assert!(d.terminate(Duration::from_secs(5)).is_some(), "daemon exit");
    let d = Daemon::dsproxy_at(device_bin(), &["--wait-for-reader"], &tap)
        .expect("restart dsproxy-device");
    // --wait-for-reader: nothing plays before the reader is back.
    let b = signal::lcg_bytes(22, 4096 * 5);
    let mut fe = frontend(&d);
    play_s16(&mut fe, &d, &b);
    drop(fe);
    let seg2 = dir.join("out.seg2.wav");
    wait_final_wav(&seg2, b.len());
    r.signal(libc::SIGTERM);
    let f = r.finish();
    assert_eq!(f.status.code(), Some(0), "{}", f.stderr);
    assert_eq!(wav_data(&out), a);
    assert_eq!(wav_data(&seg2), b);
    assert!(f.stderr.contains("reattaching"), "{}", f.stderr);
}

/// A reader SIGKILLed while the guest plays: the guest plays on (every buffer completes
/// OK, in time), and the next reader gets the next session bit-exact.
#[test]
fn a_reader_killed_mid_stream_leaves_the_guest_playing_and_the_next_reader_served() {
    // Not --wait-for-reader: that would (rightly) hold the guest once the reader is gone.
    let d = Daemon::dsproxy(device_bin(), &[]).expect("start dsproxy-device");
    let dir = common::TempDir::new("dev-rkill");
    let first = Reader::spawn(&["-u", s(&d.tap), "-x", "-f", s(&dir.join("first.wav"))]);
    common::wait_until("the first reader to subscribe", || {
        d.log_text().contains("subscribed")
    });
    let pid = first.child.id();
    let killer = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(300));
        // SAFETY: kill(2) on the reader we spawned.
        unsafe { libc::kill(pid as i32, libc::SIGKILL) };
    });
    // One second of audio, paced: the kill lands in the middle.
    let a = signal::lcg_bytes(23, 4096 * 47);
    let mut fe = frontend(&d);
    play_s16(&mut fe, &d, &a);
    killer.join().unwrap();
    let f = first.finish();
    assert_eq!(f.status.signal(), Some(libc::SIGKILL));
    let out = dir.join("second.wav");
    let second = Reader::spawn(&["-u", s(&d.tap), "-x", "-f", s(&out)]);
    common::wait_until("the second reader to subscribe", || {
        d.log_text().matches("subscribed").count() >= 2
    });
    let b = signal::lcg_bytes(24, 4096 * 6);
    play_s16(&mut fe, &d, &b);
    drop(fe);
    wait_final_wav(&out, b.len());
    second.signal(libc::SIGTERM);
    let f = second.finish();
    assert_eq!(f.status.code(), Some(0), "{}", f.stderr);
    assert_eq!(wav_data(&out), b);
}

/// The daemon SIGKILLed mid-stream: the reader (without --reconnect) sees its device go,
/// finalizes the file with everything it received and exits 0.
#[test]
fn the_daemon_sigkilled_leaves_the_reader_done_with_a_final_file() {
    let d = daemon();
    let dir = common::TempDir::new("dev-dkill");
    let out = dir.join("out.wav");
    let r = Reader::spawn(&["-u", s(&d.tap), "-x", "-f", s(&out)]);
    let data = signal::lcg_bytes(25, 4096 * 6);
    let mut fe = frontend(&d);
    play_unreleased(&mut fe, &d, PcmFormat::S16, PcmRate::R48000, 2, 4096, &data);
    // The stream is still prepared (no RELEASE): the daemon dies in the middle of it.
    common::wait_until("the audio in the file", || {
        std::fs::metadata(&out).map(|m| m.len()).unwrap_or(0) >= 80 + data.len() as u64
    });
    d.signal(libc::SIGKILL);
    let f = r.finish();
    assert_eq!(f.status.code(), Some(0), "{}", f.stderr);
    wait_final_wav(&out, data.len());
    assert_eq!(wav_data(&out), data);
    drop(fe);
}
