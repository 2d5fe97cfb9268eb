//! `--mixer` against the in-process fake device: the exact SET_CONTROL records, when they are
//! sent, and how the reader ends.

mod common;

use std::io::Read;
use std::time::{Duration, Instant};

use common::*;
use dsproxy_wire::record::{ControlOrigin, Record, SUB_LIVE};
use dsproxy_wire::PcmFormat;

fn s(p: &std::path::Path) -> &str {
    p.to_str().unwrap()
}

fn set(id: u32, values: &[i64]) -> Record {
    Record::SetControl {
        id,
        values: values.to_vec(),
    }
}

fn echo(id: u32, values: &[i64]) -> Record {
    Record::Control {
        id,
        origin: ControlOrigin::Reader,
        values: values.to_vec(),
    }
}

/// Nothing arrives from the reader within `ms`.
fn assert_silent(c: &mut Conn, ms: u64, what: &str) {
    c.s.set_read_timeout(Some(Duration::from_millis(ms)))
        .unwrap();
    let mut probe = [0u8; 1];
    match c.s.read(&mut probe) {
        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
        Err(e) if e.kind() == std::io::ErrorKind::TimedOut => {}
        other => panic!("{what}: the reader sent something ({other:?})"),
    }
    c.s.set_read_timeout(Some(WAIT)).unwrap();
}

/// The reader is still running after `ms`.
fn assert_running(r: &mut Reader, ms: u64) {
    std::thread::sleep(Duration::from_millis(ms));
    assert!(
        r.child.try_wait().unwrap().is_none(),
        "the reader exited early: {}",
        r.stderr_so_far()
    );
}

#[test]
fn alone_it_sets_after_the_snapshot_waits_for_each_echo_and_exits_zero() {
    let dev = FakeDevice::new("mix-oneshot");
    let mut r = Reader::spawn(&[
        "-u",
        s(&dev.sock),
        "-x",
        "--mixer",
        "pcm=191:128",
        "--mixer",
        "Master Playback Switch=off",
        "--mixer",
        "igain=30",
    ]);
    let (mut c, sub) = dev.accept_subscribed(&hello());
    // It takes no audio, so it never holds the guest back.
    assert_eq!(
        sub,
        Record::Subscribe {
            flags: SUB_LIVE,
            streams: 0
        }
    );
    c.send(&params(0, PcmFormat::S16, 48000, 2, 4096));
    c.send_all(&initial_controls());
    assert_silent(&mut c, 300, "before SNAPSHOT_END");
    c.send(&Record::SnapshotEnd);
    assert_eq!(c.recv(), set(2, &[191, 128]));
    assert_eq!(c.recv(), set(1, &[0]));
    assert_eq!(c.recv(), set(3, &[30, 30]));
    assert_silent(&mut c, 200, "after the three requests");
    // Audio and other readers' news are not the echo it waits for.
    c.send_all(&[prepare(0), start(0), pcm(0, 0, &noise(1, 4096))]);
    c.send(&echo(0, &[10, 10]));
    c.send(&echo(2, &[191, 128]));
    c.send(&echo(1, &[0]));
    assert_running(&mut r, 300);
    c.send(&echo(3, &[30, 30]));
    let f = r.finish();
    assert_eq!(f.status.code(), Some(0), "{}", f.stderr);
    assert!(f.stderr.is_empty(), "{}", f.stderr);
    drop(c);
}

#[test]
fn a_value_the_control_already_holds_needs_no_echo() {
    let dev = FakeDevice::new("mix-same");
    let r = Reader::spawn(&["-u", s(&dev.sock), "-x", "--mixer", "vol=255"]);
    let (mut c, _) = dev.accept_subscribed(&hello());
    c.send_all(&initial_controls());
    c.send(&Record::SnapshotEnd);
    // Still sent: the reader's knowledge may be a record behind a guest write.
    assert_eq!(c.recv(), set(0, &[255, 255]));
    let f = r.finish();
    assert_eq!(f.status.code(), Some(0), "{}", f.stderr);
    assert!(f.stderr.is_empty(), "{}", f.stderr);
}

#[test]
fn a_guest_write_of_the_same_values_confirms_too() {
    let dev = FakeDevice::new("mix-guest");
    let r = Reader::spawn(&["-u", s(&dev.sock), "-x", "--mixer", "pcm=5"]);
    let (mut c, _) = dev.accept_subscribed(&hello());
    c.send_all(&initial_controls());
    c.send(&Record::SnapshotEnd);
    assert_eq!(c.recv(), set(2, &[5, 5]));
    // The guest got there first; the device, finding nothing to change, says nothing more.
    c.send(&Record::Control {
        id: 2,
        origin: ControlOrigin::Guest,
        values: vec![5, 5],
    });
    let f = r.finish();
    assert_eq!(f.status.code(), Some(0), "{}", f.stderr);
}

#[test]
fn no_echo_within_five_seconds_is_an_error() {
    let dev = FakeDevice::new("mix-timeout");
    let r = Reader::spawn(&["-u", s(&dev.sock), "-x", "--mixer", "pcm=10"]);
    let (mut c, _) = dev.accept_subscribed(&hello());
    c.send_all(&initial_controls());
    c.send(&Record::SnapshotEnd);
    let t0 = Instant::now();
    assert_eq!(c.recv(), set(2, &[10, 10]));
    let f = r.finish();
    let waited = t0.elapsed();
    assert_eq!(f.status.code(), Some(1), "{}", f.stderr);
    assert_eq!(
        f.stderr,
        "dsproxy-host-reader: the device did not confirm --mixer pcm=10 (\"PCM Playback \
         Volume\") within 5 s\n"
    );
    assert!(waited >= Duration::from_millis(4500), "{waited:?}");
    drop(c);
}

#[test]
fn the_device_going_away_before_the_echo_is_an_error() {
    let dev = FakeDevice::new("mix-gone");
    let r = Reader::spawn(&["-u", s(&dev.sock), "-x", "--mixer", "vol=mute"]);
    let (mut c, _) = dev.accept_subscribed(&hello());
    c.send_all(&initial_controls());
    c.send(&Record::SnapshotEnd);
    assert_eq!(c.recv(), set(1, &[0]));
    c.close();
    let f = r.finish();
    assert_eq!(f.status.code(), Some(1), "{}", f.stderr);
    assert_eq!(f.stderr.lines().count(), 1, "{}", f.stderr);
    assert!(
        f.stderr
            .contains("went away before confirming --mixer vol=mute"),
        "{}",
        f.stderr
    );
}

#[test]
fn with_reconnect_an_unconfirmed_change_is_sent_again() {
    let dev = FakeDevice::new("mix-reconnect");
    let r = Reader::spawn(&[
        "-u",
        s(&dev.sock),
        "-x",
        "--reconnect",
        "--mixer",
        "pcm=7:8",
    ]);
    let (mut c, _) = dev.accept_subscribed(&hello());
    c.send_all(&initial_controls());
    c.send(&Record::SnapshotEnd);
    assert_eq!(c.recv(), set(2, &[7, 8]));
    c.close();
    let (mut c, _) = dev.accept_subscribed(&hello());
    c.send_all(&initial_controls());
    c.send(&Record::SnapshotEnd);
    assert_eq!(c.recv(), set(2, &[7, 8]));
    c.send(&echo(2, &[7, 8]));
    let f = r.finish();
    assert_eq!(f.status.code(), Some(0), "{}", f.stderr);
    drop(c);
}

#[test]
fn an_unknown_name_or_a_bad_value_is_one_line_naming_what_the_card_has() {
    for (arg, want) in [
        (
            "treble=50",
            "dsproxy-host-reader: --mixer treble=50: the card has no \"Tone Control - Treble\" \
             control (OSS channel TREBLE); available: vol, pcm, igain \
             (OSS channels); \"Master Playback Volume\", \"Master Playback Switch\", \"PCM \
             Playback Volume\", \"Capture Volume\"\n",
        ),
        (
            "Loudness=1",
            "dsproxy-host-reader: --mixer Loudness=1: the card has no such control; available: \
             vol, pcm, igain (OSS channels); \"Master Playback Volume\", \"Master Playback \
             Switch\", \"PCM Playback Volume\", \"Capture Volume\"\n",
        ),
        (
            "igain=101",
            "dsproxy-host-reader: --mixer igain=101: 101 is out of range for \"Capture \
             Volume\" (0..100)\n",
        ),
        (
            "pcm=mute",
            "dsproxy-host-reader: --mixer pcm=mute: the card has no \"PCM\" switch (OSS \
             channel PCM); available: vol, pcm, igain (OSS channels); \
             \"Master Playback Volume\", \"Master Playback Switch\", \"PCM Playback Volume\", \
             \"Capture Volume\"\n",
        ),
    ] {
        let dev = FakeDevice::new("mix-bad");
        let r = Reader::spawn(&["-u", s(&dev.sock), "-x", "--mixer", arg]);
        let mut c = dev.accept();
        c.send(&Record::Hello(hello()));
        let f = r.finish();
        assert_eq!(f.status.code(), Some(2), "{arg}: {}", f.stderr);
        assert_eq!(f.stderr, want, "{arg}");
        // Refused before SUBSCRIBE: nothing was sent.
        let mut rest = Vec::new();
        let _ = c.s.read_to_end(&mut rest);
        assert!(rest.is_empty(), "{arg}: the reader sent {rest:?}");
    }
    // Malformed on the command line: clap's one line, before any connection.
    let f = Reader::spawn(&["-x", "--mixer", "pcm"]).finish();
    assert_eq!(f.status.code(), Some(2));
    assert_eq!(f.stderr.lines().count(), 1, "{}", f.stderr);
    assert!(
        f.stderr.contains("expected NAME=LEFT[:RIGHT]"),
        "{}",
        f.stderr
    );
}

#[test]
fn with_e_and_f_it_sets_says_host_and_keeps_recording() {
    let dev = FakeDevice::new("mix-record");
    let out = dev.dir.join("out.wav");
    let r = Reader::spawn(&[
        "-u",
        s(&dev.sock),
        "-x",
        "-e",
        "-f",
        s(&out),
        "--mixer",
        "pcm=191",
        "--mixer",
        "vol=255",
    ]);
    let (mut c, sub) = dev.accept_subscribed(&hello());
    // A recording reader keeps the normal (lossless) subscription.
    assert_eq!(
        sub,
        Record::Subscribe {
            flags: 0,
            streams: 0
        }
    );
    c.send(&params(0, PcmFormat::S16, 44100, 2, 4096));
    c.send_all(&initial_controls());
    c.send(&Record::SnapshotEnd);
    assert_eq!(c.recv(), set(2, &[191, 191]));
    assert_eq!(c.recv(), set(0, &[255, 255]));
    c.send(&echo(2, &[191, 191]));
    // Another reader's change is not ours.
    c.send(&echo(0, &[0, 255]));
    let audio = noise(7, 4096 * 3);
    c.send_all(&playback(0, &audio, 4096));
    c.close();
    let f = r.finish();
    assert_eq!(f.status.code(), Some(0), "{}", f.stderr);
    assert_eq!(wav_data(&out), audio);
    let lines: Vec<&str> = f.stderr.lines().collect();
    for want in [
        "host: SOUND_MIXER_WRITE_VOLUME => 100:100  (unchanged)",
        "host: SOUND_MIXER_WRITE_PCM => 75:75",
        "SOUND_MIXER_WRITE_VOLUME => 0:100  (set by a host reader)",
    ] {
        assert!(lines.contains(&want), "{want:?} not in:\n{}", f.stderr);
    }
    assert!(
        !f.stderr.contains("SOUND_MIXER_WRITE_PCM => 75:75  (set"),
        "{}",
        f.stderr
    );
}

#[test]
fn with_i_the_request_is_logged_as_sent() {
    let dev = FakeDevice::new("mix-i");
    let r = Reader::spawn(&[
        "-u",
        s(&dev.sock),
        "-x",
        "-i",
        "--mixer",
        "Capture Volume=3:4",
    ]);
    let (mut c, _) = dev.accept_subscribed(&hello());
    c.send_all(&initial_controls());
    c.send(&Record::SnapshotEnd);
    assert_eq!(c.recv(), set(3, &[3, 4]));
    c.send(&echo(3, &[3, 4]));
    c.close();
    let f = r.finish();
    assert_eq!(f.status.code(), Some(0), "{}", f.stderr);
    let lines: Vec<&str> = f.stderr.lines().collect();
    let sent = lines
        .iter()
        .position(|l| *l == "sent SET_CONTROL id=3 values=[3, 4]")
        .unwrap_or_else(|| panic!("{}", f.stderr));
    let end = lines.iter().position(|l| *l == "SNAPSHOT_END").unwrap();
    assert!(end < sent, "{}", f.stderr);
    assert!(lines.contains(&"CONTROL id=3 origin=reader values=3,4"));
}

#[test]
fn with_inject_requests_go_between_whole_inject_records() {
    let dev = FakeDevice::new("mix-inject");
    let src = dev.dir.join("in.raw");
    let audio = noise(9, 200_000);
    std::fs::write(&src, &audio).unwrap();
    let r = Reader::spawn(&[
        "-u",
        s(&dev.sock),
        "-x",
        "--inject",
        s(&src),
        "--mixer",
        "igain=40",
    ]);
    let (mut c, _) = dev.accept_subscribed(&hello());
    // The input stream is already running when the reader attaches: INJECT records start
    // flowing with the snapshot, and the SET_CONTROL must not cut into one.
    c.send(&params(1, PcmFormat::S16, 48000, 2, 1000));
    c.send_all(&[prepare(1), start(1)]);
    c.send_all(&initial_controls());
    c.send(&Record::SnapshotEnd);
    let mut injected = Vec::new();
    let mut sets = Vec::new();
    while injected.len() < audio.len() || sets.is_empty() {
        match c.recv() {
            Record::Inject { stream: 1, data } => injected.extend_from_slice(&data),
            r @ Record::SetControl { .. } => sets.push(r),
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!(sets, vec![set(3, &[40, 40])]);
    assert_eq!(injected, audio);
    c.send(&echo(3, &[40, 40]));
    c.close();
    let f = r.finish();
    assert_eq!(f.status.code(), Some(0), "{}", f.stderr);
}
