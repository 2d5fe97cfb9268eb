//! End-to-end tests of the reader binary against an in-process fake device.

mod common;

use std::io::Read;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::*;
use dsproxy_wire::record::{ControlOrigin, Record, SUB_LIVE, SUB_NO_PACING};
use dsproxy_wire::PcmFormat;

fn s(p: &std::path::Path) -> &str {
    p.to_str().unwrap()
}

/// Plays `audio` through the fake device and returns what the reader did.
fn record_once(dev: &FakeDevice, args: &[&str], audio: &[u8], fmt: PcmFormat) -> Finished {
    let mut all = vec!["-u", s(&dev.sock)];
    all.extend_from_slice(args);
    let r = Reader::spawn(&all);
    let (mut c, _) = dev.accept_subscribed(&hello());
    c.send(&params(0, fmt, 44100, 2, 4096));
    c.send_all(&initial_controls());
    c.send(&Record::SnapshotEnd);
    c.send_all(&playback(0, audio, 4096));
    c.close();
    r.finish()
}

#[test]
fn wav_recording_is_bit_exact_and_hound_reads_it() {
    let dev = FakeDevice::new("wav");
    let out = dev.dir.join("out.wav");
    let audio = noise(1, 4096 * 10 + 1000);
    let f = record_once(&dev, &["-x", "-f", s(&out)], &audio, PcmFormat::S16);
    assert!(f.status.success(), "{}", f.stderr);
    assert!(f.stderr.is_empty(), "{}", f.stderr);
    assert_eq!(wav_data(&out), audio);
    let file = std::fs::read(&out).unwrap();
    assert_eq!(file.len(), 80 + audio.len());
    let r = hound::WavReader::open(&out).unwrap();
    assert_eq!(r.spec().sample_rate, 44100);
    assert_eq!(r.spec().channels, 2);
    assert_eq!(r.spec().bits_per_sample, 16);
    assert_eq!(r.len() as usize, audio.len() / 2);
}

#[test]
fn raw_file_and_stdout_carry_the_guests_bytes() {
    let dev = FakeDevice::new("raw");
    let out = dev.dir.join("out.pcm");
    let audio = noise(2, 30_000);
    let f = record_once(&dev, &["-x", "-s", "-f", s(&out)], &audio, PcmFormat::S16);
    assert!(f.status.success(), "{}", f.stderr);
    assert_eq!(std::fs::read(&out).unwrap(), audio);
    assert_eq!(f.stdout, audio);
}

#[test]
fn english_lines_use_the_oss_vocabulary() {
    let dev = FakeDevice::new("english");
    let r = Reader::spawn(&["-u", s(&dev.sock), "-x", "-e"]);
    let (mut c, _) = dev.accept_subscribed(&hello());
    c.send_all(&initial_controls());
    c.send(&Record::SnapshotEnd);
    c.send(&params(0, PcmFormat::S16, 44100, 2, 4096));
    c.send(&Record::Control {
        id: 2,
        origin: ControlOrigin::Guest,
        values: vec![191, 191],
    });
    c.send(&Record::Control {
        id: 1,
        origin: ControlOrigin::Guest,
        values: vec![0],
    });
    c.send(&Record::Control {
        id: 3,
        origin: ControlOrigin::Guest,
        values: vec![50, 25],
    });
    c.send_all(&[prepare(0), start(0), pcm(0, 0, &[0; 64])]);
    c.send(&Record::Xrun {
        stream: 0,
        time_ns: 9,
        duration_ns: 12_500_000,
    });
    c.send_all(&[stop(0, false, 4096), start(0), stop(0, true, 0), release(0)]);
    c.send(&params(0, PcmFormat::U8, 8000, 1, 1024));
    c.send(&Record::Frontend {
        connected: false,
        time_ns: 10,
    });
    c.send(&Record::Frontend {
        connected: true,
        time_ns: 11,
    });
    c.send(&params(0, PcmFormat::U8, 8000, 1, 1024));
    c.close();
    let f = r.finish();
    assert!(f.status.success(), "{}", f.stderr);
    let lines: Vec<&str> = f.stderr.lines().collect();
    assert_eq!(
        lines,
        vec![
            "SNDCTL_DSP_SPEED    => 44100",
            "SNDCTL_DSP_SETFMT   => AFMT_S16_LE",
            "SNDCTL_DSP_CHANNELS => 2",
            "SNDCTL_DSP_SETFRAGMENT => 4 x 4096",
            "SOUND_MIXER_WRITE_PCM => 75:75",
            "SOUND_MIXER_WRITE_VOLUME => muted",
            "SOUND_MIXER_WRITE_IGAIN => 50:25",
            "-- underrun: 12.500 ms without audio",
            "SNDCTL_DSP_RESET    => 4096 bytes discarded",
            "SNDCTL_DSP_SYNC",
            "SNDCTL_DSP_SPEED    => 8000",
            "SNDCTL_DSP_SETFMT   => AFMT_U8",
            "SNDCTL_DSP_CHANNELS => 1",
            "SNDCTL_DSP_SETFRAGMENT => 4 x 1024",
            "-- VM went away",
            // A new VM's first open says everything again.
            "-- VM connected",
            "SNDCTL_DSP_SPEED    => 8000",
            "SNDCTL_DSP_SETFMT   => AFMT_U8",
            "SNDCTL_DSP_CHANNELS => 1",
            "SNDCTL_DSP_SETFRAGMENT => 4 x 1024",
        ]
    );
}

#[test]
fn record_log_shows_every_record() {
    let dev = FakeDevice::new("rawlog");
    let r = Reader::spawn(&["-u", s(&dev.sock), "-x", "-i"]);
    let (mut c, _) = dev.accept_subscribed(&hello());
    c.send(&Record::SnapshotEnd);
    c.send(&params(0, PcmFormat::S16, 48000, 2, 4096));
    c.send(&pcm(0, 0, &[0; 4096]));
    c.close();
    let f = r.finish();
    assert!(f.status.success(), "{}", f.stderr);
    let lines: Vec<&str> = f.stderr.lines().collect();
    assert!(
        lines[0].starts_with(&format!(
            "HELLO version={} ",
            dsproxy_wire::record::PROTOCOL_VERSION
        )),
        "{lines:?}"
    );
    assert!(lines.contains(&"SNAPSHOT_END"));
    assert!(lines.contains(
        &"PARAMS stream=0 buffer=16384 period=4096 features=0x0 channels=2 format=S16_LE \
          rate=48000"
    ));
    assert!(lines.contains(&"PCM stream=0 offset=0 time=0.000001000 len=4096"));
}

#[test]
fn a_format_change_starts_a_new_segment() {
    let dev = FakeDevice::new("segment");
    let out = dev.dir.join("out.wav");
    let r = Reader::spawn(&["-u", s(&dev.sock), "-x", "-e", "-f", s(&out)]);
    let (mut c, _) = dev.accept_subscribed(&hello());
    c.send(&Record::SnapshotEnd);
    let a = noise(3, 8000);
    let b = noise(4, 3001);
    c.send(&params(0, PcmFormat::S16, 44100, 2, 4000));
    c.send_all(&playback(0, &a, 4000));
    // Same shape, new period size: same file.
    c.send(&params(0, PcmFormat::S16, 44100, 2, 2000));
    c.send_all(&playback(0, &a, 2000));
    c.send(&params(0, PcmFormat::U8, 8000, 1, 1000));
    c.send_all(&playback(0, &b, 1000));
    c.close();
    let f = r.finish();
    assert!(f.status.success(), "{}", f.stderr);
    let mut first = a.clone();
    first.extend_from_slice(&a);
    assert_eq!(wav_data(&out), first);
    let seg2 = dev.dir.join("out.seg2.wav");
    assert_eq!(wav_data(&seg2), b);
    let r = hound::WavReader::open(&seg2).unwrap();
    assert_eq!((r.spec().sample_rate, r.spec().channels), (8000, 1));
    assert!(f.stderr.contains(&format!(
        "-- recording stream 0 to {} (8000 Hz U8 1ch)",
        seg2.display()
    )));
    assert!(f.stderr.contains("-- format changed:"), "{}", f.stderr);
}

#[test]
fn every_output_stream_gets_its_file_and_stream_picks_one() {
    let dev = FakeDevice::new("multi");
    let h = hello_with(vec![out_stream(0), in_stream(1), out_stream(2)]);
    let out = dev.dir.join("out.wav");
    let a = noise(5, 5000);
    let b = noise(6, 7000);
    let feed = |c: &mut Conn| {
        c.send(&Record::SnapshotEnd);
        c.send(&params(0, PcmFormat::S16, 48000, 2, 1000));
        c.send(&params(2, PcmFormat::S16, 22050, 1, 1000));
        c.send_all(&[prepare(0), prepare(2), start(0), start(2)]);
        for i in 0..5 {
            c.send(&pcm(
                0,
                i * 1000,
                &a[i as usize * 1000..(i as usize + 1) * 1000],
            ));
            c.send(&pcm(
                2,
                i * 1400,
                &b[i as usize * 1400..(i as usize + 1) * 1400],
            ));
        }
    };
    let r = Reader::spawn(&["-u", s(&dev.sock), "-x", "-f", s(&out)]);
    let (mut c, sub) = dev.accept_subscribed(&h);
    assert_eq!(
        sub,
        Record::Subscribe {
            flags: 0,
            streams: 0
        }
    );
    feed(&mut c);
    c.close();
    let f = r.finish();
    assert!(f.status.success(), "{}", f.stderr);
    assert_eq!(wav_data(&out), a);
    assert_eq!(wav_data(&dev.dir.join("out.1.wav")), b);

    // --stream 2: only it, under the plain name, and the subscription says so.
    let out2 = dev.dir.join("only.wav");
    let r = Reader::spawn(&["-u", s(&dev.sock), "-x", "--stream", "2", "-f", s(&out2)]);
    let (mut c, sub) = dev.accept_subscribed(&h);
    assert_eq!(
        sub,
        Record::Subscribe {
            flags: 0,
            streams: 1 << 2
        }
    );
    feed(&mut c);
    c.close();
    let f = r.finish();
    assert!(f.status.success(), "{}", f.stderr);
    assert_eq!(wav_data(&out2), b);
    assert!(!dev.dir.join("only.1.wav").exists());

    // --stream naming an input stream is refused with a clear message.
    let r = Reader::spawn(&["-u", s(&dev.sock), "-x", "--stream", "1", "-e"]);
    let (c, _) = {
        let mut c = dev.accept();
        c.send(&Record::Hello(h.clone()));
        (c, ())
    };
    let f = r.finish();
    drop(c);
    assert_eq!(f.status.code(), Some(2), "{}", f.stderr);
    assert!(f
        .stderr
        .contains("--stream 1: the card has no output stream 1"));
}

#[test]
fn subscribe_flags_follow_d_and_live() {
    let dev = FakeDevice::new("flags");
    let r = Reader::spawn(&["-u", s(&dev.sock), "-x", "-e", "-d", "--live"]);
    let (c, sub) = dev.accept_subscribed(&hello());
    assert_eq!(
        sub,
        Record::Subscribe {
            flags: SUB_LIVE | SUB_NO_PACING,
            streams: 0
        }
    );
    c.close();
    assert!(r.finish().status.success());
}

#[test]
fn gaps_are_written_as_silence_and_logged() {
    let dev = FakeDevice::new("gap");
    let out = dev.dir.join("out.wav");
    let r = Reader::spawn(&["-u", s(&dev.sock), "-x", "--live", "-f", s(&out)]);
    let (mut c, _) = dev.accept_subscribed(&hello());
    c.send(&Record::SnapshotEnd);
    c.send(&params(0, PcmFormat::U8, 8000, 1, 1000));
    let a = noise(7, 1000);
    c.send_all(&[prepare(0), start(0), pcm(0, 0, &a)]);
    c.send(&Record::Gap {
        stream: 0,
        offset: 1000,
        bytes: 2000,
        time_ns: 5,
    });
    c.send(&pcm(0, 3000, &a));
    // A jump without a GAP record is a gap too.
    c.send(&pcm(0, 4500, &a));
    c.close();
    let f = r.finish();
    assert!(f.status.success(), "{}", f.stderr);
    let mut want = a.clone();
    want.extend(std::iter::repeat_n(0x80u8, 2000));
    want.extend_from_slice(&a);
    want.extend(std::iter::repeat_n(0x80u8, 500));
    want.extend_from_slice(&a);
    assert_eq!(wav_data(&out), want);
    let gaps: Vec<&str> = f
        .stderr
        .lines()
        .filter(|l| l.starts_with("-- gap:"))
        .collect();
    assert_eq!(
        gaps,
        vec![
            "-- gap: 2000 bytes (250.000 ms) of stream 0 at offset 1000 were not received; \
             recorded as silence",
            "-- gap: 500 bytes (62.500 ms) of stream 0 at offset 4000 were not received; \
             recorded as silence",
        ]
    );
}

#[test]
fn sigterm_finalizes_the_file_and_exits_zero() {
    let dev = FakeDevice::new("sigterm");
    let out = dev.dir.join("out.wav");
    let r = Reader::spawn(&["-u", s(&dev.sock), "-x", "-f", s(&out)]);
    let (mut c, _) = dev.accept_subscribed(&hello());
    c.send(&Record::SnapshotEnd);
    c.send(&params(0, PcmFormat::S16, 48000, 2, 4096));
    let audio = noise(8, 4096 * 5 + 3);
    c.send_all(&[prepare(0), start(0)]);
    for (i, ch) in audio.chunks(4096).enumerate() {
        c.send(&pcm(0, i as u64 * 4096, ch));
    }
    // The raw log would be nicer, but the file itself tells when all arrived.
    wait_until("the audio reaching the file", || {
        std::fs::metadata(&out).map(|m| m.len()).unwrap_or(0) >= 80 + audio.len() as u64
    });
    r.signal(libc::SIGTERM);
    let f = r.finish();
    assert_eq!(f.status.code(), Some(0), "{}", f.stderr);
    // Odd length: padded, RIFF size includes the pad.
    assert_eq!(wav_data(&out), audio);
    drop(c);
}

#[test]
fn sigint_works_like_sigterm() {
    let dev = FakeDevice::new("sigint");
    let out = dev.dir.join("out.pcm");
    let r = Reader::spawn(&["-u", s(&dev.sock), "-x", "-f", s(&out)]);
    let (mut c, _) = dev.accept_subscribed(&hello());
    c.send(&Record::SnapshotEnd);
    c.send(&params(0, PcmFormat::S16, 48000, 2, 4096));
    let audio = noise(9, 1000);
    c.send_all(&[prepare(0), start(0), pcm(0, 0, &audio)]);
    wait_until("the audio reaching the file", || {
        std::fs::metadata(&out).map(|m| m.len()).unwrap_or(0) >= 1000
    });
    r.signal(libc::SIGINT);
    let f = r.finish();
    assert_eq!(f.status.code(), Some(0), "{}", f.stderr);
    assert_eq!(std::fs::read(&out).unwrap(), audio);
    drop(c);
}

#[test]
fn sigkill_leaves_a_header_that_covers_the_audio() {
    let dev = FakeDevice::new("sigkill");
    let out = dev.dir.join("out.wav");
    let r = Reader::spawn(&["-u", s(&dev.sock), "-x", "-f", s(&out)]);
    let (mut c, _) = dev.accept_subscribed(&hello());
    c.send(&Record::SnapshotEnd);
    c.send(&params(0, PcmFormat::S16, 48000, 2, 4096));
    let audio = noise(10, 4096 * 8);
    c.send_all(&[prepare(0), start(0)]);
    for (i, ch) in audio.chunks(4096).enumerate() {
        c.send(&pcm(0, i as u64 * 4096, ch));
    }
    // The header is patched about once a second while the stream plays on.
    wait_until("the header to cover the audio", || {
        let Ok(b) = std::fs::read(&out) else {
            return false;
        };
        b.len() >= 80 && u32::from_le_bytes(b[76..80].try_into().unwrap()) as usize == audio.len()
    });
    r.signal(libc::SIGKILL);
    let f = r.finish();
    assert!(!f.status.success());
    assert_eq!(wav_data(&out), audio);
    let h = hound::WavReader::open(&out).unwrap();
    assert_eq!(h.len() as usize, audio.len() / 2);
    drop(c);
}

#[test]
fn malformed_streams_end_with_an_error_not_a_panic() {
    let hdr = |kind: u16, len: u32| {
        let mut v = kind.to_le_bytes().to_vec();
        v.extend_from_slice(&0u16.to_le_bytes());
        v.extend_from_slice(&len.to_le_bytes());
        v
    };
    let cases: Vec<(&str, Vec<u8>, &str)> = vec![
        (
            "truncated",
            {
                let mut v = hdr(0x0007, 100);
                v.extend_from_slice(&[0; 10]);
                v
            },
            "closed in the middle of a record",
        ),
        ("oversize", hdr(0x0007, 2 << 20), "exceeds the limit"),
        ("unknown", hdr(0x0042, 0), "unknown record kind 0x0042"),
        (
            "short",
            {
                let mut v = hdr(0x0002, 3);
                v.extend_from_slice(&[0; 3]);
                v
            },
            "PARAMS record truncated",
        ),
        (
            "reader-only",
            Record::Subscribe {
                flags: 0,
                streams: 0,
            }
            .to_bytes()
            .unwrap(),
            "SUBSCRIBE record, which only readers send",
        ),
        (
            "second hello",
            Record::Hello(hello()).to_bytes().unwrap(),
            "a second HELLO",
        ),
    ];
    for (name, bytes, want) in cases {
        let dev = FakeDevice::new(name);
        let out = dev.dir.join("out.wav");
        let r = Reader::spawn(&["-u", s(&dev.sock), "-x", "-f", s(&out)]);
        let (mut c, _) = dev.accept_subscribed(&hello());
        c.send(&Record::SnapshotEnd);
        c.send(&params(0, PcmFormat::S16, 48000, 2, 4096));
        let audio = noise(11, 4096);
        c.send_all(&[prepare(0), start(0), pcm(0, 0, &audio)]);
        c.send_raw(&bytes);
        c.close();
        let f = r.finish();
        assert_eq!(f.status.code(), Some(1), "{name}: {}", f.stderr);
        assert!(!f.stderr.contains("panicked"), "{name}: {}", f.stderr);
        assert_eq!(f.stderr.lines().count(), 1, "{name}: {}", f.stderr);
        assert!(f.stderr.contains(want), "{name}: {}", f.stderr);
        // What arrived before the bad record is kept, in a valid file.
        assert_eq!(wav_data(&out), audio, "{name}");
    }
}

#[test]
fn a_wrong_peer_or_missing_device_is_one_line_and_nonzero() {
    let dir = TempDir::new("missing");
    let out = dir.join("out.wav");
    let r = Reader::spawn(&["-u", s(&dir.join("nope.sock")), "-x", "-f", s(&out)]);
    let f = r.finish();
    assert_eq!(f.status.code(), Some(1));
    assert_eq!(f.stderr.lines().count(), 1, "{}", f.stderr);
    assert!(f.stderr.contains("cannot attach to"), "{}", f.stderr);
    assert!(!out.exists(), "an empty file was left behind");

    let dev = FakeDevice::new("peer");
    let r = Reader::spawn(&["-u", s(&dev.sock), "-x", "-e"]);
    let mut c = dev.accept();
    c.send_raw(b"SSH-2.0-OpenSSH_9.2\r\n");
    let f = r.finish();
    assert_eq!(f.status.code(), Some(1));
    assert!(
        f.stderr.contains("is not a usable dsproxy tap"),
        "{}",
        f.stderr
    );
}

#[test]
fn bad_flags_and_unwritable_files_fail_early() {
    let f = Reader::spawn(&["--bogus"]).finish();
    assert_eq!(f.status.code(), Some(2));
    assert_eq!(
        f.stderr,
        "dsproxy-host-reader: unexpected argument '--bogus' found (see --help)\n"
    );
    let f = Reader::spawn(&["-u", "/x", "-n", "host"]).finish();
    assert_eq!(f.status.code(), Some(2));
    assert_eq!(f.stderr.lines().count(), 1, "{}", f.stderr);
    let f = Reader::spawn(&["--help"]).finish();
    assert_eq!(f.status.code(), Some(0));
    assert!(String::from_utf8_lossy(&f.stdout).contains("-f, --file <FILE>"));
    let f = Reader::spawn(&["-n", "host:notaport", "-x", "-e"]).finish();
    assert_eq!(f.status.code(), Some(2), "{}", f.stderr);
    let f = Reader::spawn(&["-x"]).finish();
    assert_eq!(f.status.code(), Some(2));
    assert!(f.stderr.contains("nothing to do"));
    let f = Reader::spawn(&["-x", "-f", "/nonexistent-dsproxy-dir/out.wav"]).finish();
    assert_eq!(f.status.code(), Some(1));
    assert_eq!(f.stderr.lines().count(), 1, "{}", f.stderr);
    assert!(f
        .stderr
        .contains("cannot write /nonexistent-dsproxy-dir/out.wav"));
    let f = Reader::spawn(&["-x", "-e", "--inject", "/nonexistent-dsproxy.wav"]).finish();
    assert_eq!(f.status.code(), Some(1));
    assert!(f.stderr.contains("--inject /nonexistent-dsproxy.wav"));
}

#[test]
fn a_format_wav_cannot_carry_is_a_clear_error() {
    let dev = FakeDevice::new("s8");
    let out = dev.dir.join("out.wav");
    let r = Reader::spawn(&["-u", s(&dev.sock), "-x", "-f", s(&out)]);
    let (mut c, _) = dev.accept_subscribed(&hello());
    c.send(&Record::SnapshotEnd);
    c.send(&params(0, PcmFormat::S8, 8000, 1, 1000));
    c.send_all(&[prepare(0), start(0), pcm(0, 0, &[1; 100])]);
    let f = r.finish();
    assert_eq!(f.status.code(), Some(1), "{}", f.stderr);
    assert!(f.stderr.contains("cannot carry S8"), "{}", f.stderr);
    assert!(f.stderr.contains("-f out.pcm"), "{}", f.stderr);
    drop(c);
}

#[test]
fn a_closed_stdout_pipe_ends_cleanly() {
    let dev = FakeDevice::new("epipe");
    let (r, so) = Reader::without_stdout_thread(&["-u", s(&dev.sock), "-x", "-s"]);
    let (mut c, _) = dev.accept_subscribed(&hello());
    c.send(&Record::SnapshotEnd);
    c.send(&params(0, PcmFormat::S16, 48000, 2, 4096));
    c.send_all(&[prepare(0), start(0), pcm(0, 0, &[1; 4096])]);
    drop(so);
    // Keep playing until the reader notices.
    let mut off = 4096;
    for _ in 0..2000 {
        if c.s
            .set_write_timeout(Some(Duration::from_millis(200)))
            .is_err()
        {
            break;
        }
        let rec = pcm(0, off, &[2; 4096]).to_bytes().unwrap();
        if std::io::Write::write_all(&mut c.s, &rec).is_err() {
            break;
        }
        off += 4096;
        let mut probe = [0u8; 1];
        c.s.set_nonblocking(true).unwrap();
        let gone = matches!(c.s.read(&mut probe), Ok(0));
        c.s.set_nonblocking(false).unwrap();
        if gone {
            break;
        }
    }
    let f = r.finish();
    assert_eq!(f.status.code(), Some(0), "{}", f.stderr);
    assert!(!f.stderr.contains("panicked"));
}

#[test]
fn without_x_a_missing_sound_device_is_one_line_and_recording_goes_on() {
    let dev = FakeDevice::new("nodev");
    let out = dev.dir.join("out.wav");
    let audio = noise(12, 4096 * 3);
    let f = record_once(
        &dev,
        &["--device", "dsproxy-test-no-such-device", "-f", s(&out)],
        &audio,
        PcmFormat::S16,
    );
    assert!(f.status.success(), "{}", f.stderr);
    assert_eq!(f.stderr.lines().count(), 1, "{}", f.stderr);
    assert!(f.stderr.contains("not playing on the host"), "{}", f.stderr);
    assert_eq!(wav_data(&out), audio);
}

#[test]
fn without_x_the_default_device_never_stops_the_recording() {
    // Whatever this machine has (CI has no sound card): the file is complete either way, and
    // a missing device is reported at most once.
    let dev = FakeDevice::new("defdev");
    let out = dev.dir.join("out.wav");
    let audio = noise(13, 4096 * 3);
    let f = record_once(&dev, &["-f", s(&out)], &audio, PcmFormat::S16);
    assert!(f.status.success(), "{}", f.stderr);
    assert_eq!(wav_data(&out), audio);
    // Nothing but that one line (alsa-lib's own chatter is kept off stderr).
    assert!(f.stderr.lines().count() <= 1, "{}", f.stderr);
}

#[test]
fn once_exits_after_the_first_session() {
    let dev = FakeDevice::new("once");
    let out = dev.dir.join("out.wav");
    let r = Reader::spawn(&["-u", s(&dev.sock), "-x", "--once", "-f", s(&out)]);
    let (mut c, _) = dev.accept_subscribed(&hello());
    // The snapshot shows a stream prepared earlier: not yet a session of ours.
    c.send(&params(0, PcmFormat::S16, 48000, 2, 4096));
    c.send(&prepare(0));
    c.send(&Record::SnapshotEnd);
    c.send(&release(0));
    let audio = noise(14, 8192);
    c.send_all(&playback(0, &audio, 4096));
    // The reader exits without the connection closing.
    let f = r.finish();
    assert!(f.status.success(), "{}", f.stderr);
    assert_eq!(wav_data(&out), audio);
    drop(c);
}

#[test]
fn reconnect_continues_into_the_next_segment() {
    let dev = FakeDevice::new("reconnect");
    let out = dev.dir.join("out.wav");
    let r = Reader::spawn(&["-u", s(&dev.sock), "-x", "--reconnect", "-f", s(&out)]);
    let a = noise(15, 6000);
    let b = noise(16, 5000);
    let (mut c, _) = dev.accept_subscribed(&hello());
    c.send(&Record::SnapshotEnd);
    c.send(&params(0, PcmFormat::S16, 48000, 2, 1000));
    c.send_all(&[prepare(0), start(0), pcm(0, 0, &a)]);
    c.close();
    // The device comes back; the stream is still running mid-way.
    let (mut c, _) = dev.accept_subscribed(&hello());
    c.send(&params(0, PcmFormat::S16, 48000, 2, 1000));
    c.send_all(&[prepare(0), start(0)]);
    c.send(&Record::SnapshotEnd);
    c.send(&pcm(0, 96_000, &b));
    let seg2 = dev.dir.join("out.seg2.wav");
    wait_until("the second segment", || {
        std::fs::metadata(&seg2).map(|m| m.len()).unwrap_or(0) >= 80 + b.len() as u64
    });
    // The first segment was finalized when the connection went.
    assert_eq!(wav_data(&out), a);
    r.signal(libc::SIGTERM);
    let f = r.finish();
    assert_eq!(f.status.code(), Some(0), "{}", f.stderr);
    assert_eq!(wav_data(&seg2), b);
    assert!(f.stderr.contains("reattaching"), "{}", f.stderr);
}

#[test]
fn without_reconnect_the_device_going_away_is_a_clean_end() {
    let dev = FakeDevice::new("goaway");
    let out = dev.dir.join("out.wav");
    let r = Reader::spawn(&["-u", s(&dev.sock), "-x", "-f", s(&out)]);
    let (mut c, _) = dev.accept_subscribed(&hello());
    c.send(&Record::SnapshotEnd);
    c.send(&params(0, PcmFormat::S16, 48000, 2, 1000));
    let a = noise(17, 2000);
    c.send_all(&[prepare(0), start(0), pcm(0, 0, &a)]);
    c.close();
    let f = r.finish();
    assert_eq!(f.status.code(), Some(0), "{}", f.stderr);
    assert_eq!(wav_data(&out), a);
}

#[test]
fn the_vm_going_away_closes_the_segment() {
    let dev = FakeDevice::new("vmgone");
    let out = dev.dir.join("out.wav");
    let r = Reader::spawn(&["-u", s(&dev.sock), "-x", "-f", s(&out)]);
    let (mut c, _) = dev.accept_subscribed(&hello());
    c.send(&Record::SnapshotEnd);
    let a = noise(18, 2000);
    c.send(&params(0, PcmFormat::S16, 48000, 2, 1000));
    c.send_all(&[prepare(0), start(0), pcm(0, 0, &a)]);
    c.send(&Record::Frontend {
        connected: false,
        time_ns: 7,
    });
    // Finalized at once, while the reader runs on.
    wait_until("the first file to be final", || {
        std::fs::read(&out)
            .map(|b| b.len() == 80 + a.len() && b[76..80] == (a.len() as u32).to_le_bytes())
            .unwrap_or(false)
    });
    c.send(&Record::Frontend {
        connected: true,
        time_ns: 8,
    });
    c.send(&params(0, PcmFormat::S16, 48000, 2, 1000));
    c.send_all(&playback(0, &a, 1000));
    c.close();
    let f = r.finish();
    assert!(f.status.success(), "{}", f.stderr);
    assert_eq!(wav_data(&out), a);
    assert_eq!(wav_data(&dev.dir.join("out.seg2.wav")), a);
}

#[test]
fn nothing_recorded_leaves_no_empty_file() {
    let dev = FakeDevice::new("empty");
    let out = dev.dir.join("out.wav");
    let r = Reader::spawn(&["-u", s(&dev.sock), "-x", "-f", s(&out)]);
    let (mut c, _) = dev.accept_subscribed(&hello());
    c.send(&Record::SnapshotEnd);
    c.close();
    let f = r.finish();
    assert!(f.status.success(), "{}", f.stderr);
    assert!(!out.exists());
    assert!(f.stderr.contains("no audio was recorded"), "{}", f.stderr);
}

#[test]
fn inject_sends_the_file_converted_to_the_input_streams_params() {
    use dsproxy_host_reader::convert::{AudioShape, Converter};
    let dev = FakeDevice::new("inject");
    // A 8 kHz mono S16 WAV, to a guest capturing 16 kHz stereo S16.
    let src = dev.dir.join("in.wav");
    let from = AudioShape {
        format: PcmFormat::S16,
        rate_hz: 8000,
        channels: 1,
    };
    let samples: Vec<u8> = (0..4000i16).flat_map(|i| (i * 7).to_le_bytes()).collect();
    {
        let f = std::io::BufWriter::new(std::fs::File::create(&src).unwrap());
        let spec = dsproxy_host_reader::wav::WavSpec::for_shape(from).unwrap();
        let mut w = dsproxy_host_reader::wav::WavWriter::new(f, spec).unwrap();
        w.write(&samples).unwrap();
        w.finalize().unwrap();
    }
    let to = AudioShape {
        format: PcmFormat::S16,
        rate_hz: 16000,
        channels: 2,
    };
    let mut want = Vec::new();
    let mut conv = Converter::new(from, to).unwrap();
    for ch in samples.chunks(1024) {
        conv.convert(ch, &mut want).unwrap();
    }

    let r = Reader::spawn(&["-u", s(&dev.sock), "-x", "-e", "--inject", s(&src)]);
    let (mut c, _) = dev.accept_subscribed(&hello());
    c.send(&Record::SnapshotEnd);
    c.send(&params(1, PcmFormat::S16, 16000, 2, 2048));
    c.send_all(&[prepare(1), start(1)]);
    let mut got = Vec::new();
    while got.len() < want.len() - 8 {
        match c.recv() {
            Record::Inject { stream, data } => {
                assert_eq!(stream, 1);
                assert!(data.len() <= 2048 && data.len() % 4 == 0, "{}", data.len());
                got.extend_from_slice(&data);
            }
            other => panic!("unexpected {other:?}"),
        }
    }
    c.close();
    let f = r.finish();
    assert!(f.status.success(), "{}", f.stderr);
    // The same conversion, chunking aside: values equal where both have them.
    assert!(got.len() <= want.len() + 8 && got.len() + 8 >= want.len());
    let n = got.len().min(want.len()) / 2;
    let sample = |v: &[u8], i: usize| i16::from_le_bytes([v[2 * i], v[2 * i + 1]]);
    for i in 0..n {
        assert!(
            (sample(&got, i) as i32 - sample(&want, i) as i32).abs() <= 1,
            "at {i}"
        );
    }
    // Stereo from mono: both channels the same.
    for fr in got.chunks_exact(4) {
        assert_eq!(fr[0..2], fr[2..4]);
    }
}

#[test]
fn inject_waits_for_the_stream_and_passes_a_matching_file_through() {
    let dev = FakeDevice::new("inject2");
    let src = dev.dir.join("in.raw");
    let audio = noise(19, 10_000);
    std::fs::write(&src, &audio).unwrap();
    let r = Reader::spawn(&["-u", s(&dev.sock), "-x", "-e", "--inject", s(&src)]);
    let (mut c, _) = dev.accept_subscribed(&hello());
    c.send(&Record::SnapshotEnd);
    c.send(&params(1, PcmFormat::U8, 8000, 1, 1000));
    // Not prepared yet: nothing may come.
    c.s.set_read_timeout(Some(Duration::from_millis(300)))
        .unwrap();
    let mut probe = [0u8; 1];
    assert!(
        c.s.read(&mut probe).is_err(),
        "inject before the stream was prepared"
    );
    c.s.set_read_timeout(Some(WAIT)).unwrap();
    c.send(&prepare(1));
    let mut got = Vec::new();
    while got.len() < audio.len() {
        match c.recv() {
            Record::Inject { stream: 1, data } => got.extend_from_slice(&data),
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!(got, audio);
    c.close();
    assert!(r.finish().status.success());
}

#[test]
fn tcp_attach_with_n_host_port() {
    use std::io::Write;
    use std::net::TcpListener;
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    let dir = TempDir::new("tcp");
    let out = dir.join("out.pcm");
    let target = format!("127.0.0.1:{port}");
    let r = Reader::spawn(&["-n", &target, "-x", "-f", s(&out)]);
    let (mut sock, _) = l.accept().unwrap();
    sock.set_read_timeout(Some(WAIT)).unwrap();
    sock.write_all(&Record::Hello(hello()).to_bytes().unwrap())
        .unwrap();
    let sub = dsproxy_wire::RecordReader::new(&mut sock)
        .next_record()
        .unwrap()
        .unwrap();
    assert!(matches!(sub, Record::Subscribe { .. }));
    let audio = noise(20, 9000);
    let mut buf = Vec::new();
    for rec in [
        Record::SnapshotEnd,
        params(0, PcmFormat::S16, 48000, 2, 1000),
    ]
    .into_iter()
    .chain(playback(0, &audio, 1000))
    {
        rec.encode(&mut buf).unwrap();
    }
    sock.write_all(&buf).unwrap();
    drop(sock);
    let f = r.finish();
    assert!(f.status.success(), "{}", f.stderr);
    assert_eq!(std::fs::read(&out).unwrap(), audio);

    // Nobody listening: one line, non-zero.
    drop(l);
    let f = Reader::spawn(&["-n", &target, "-x", "-e"]).finish();
    assert_eq!(f.status.code(), Some(1));
    assert!(
        f.stderr.contains(&format!("cannot attach to {target}")),
        "{}",
        f.stderr
    );
}

#[test]
fn gap_silence_is_the_formats_own_and_keeps_alignment() {
    // U16_LE (raw: WAV cannot hold it): silence is 0x8000, and a gap that starts in the
    // middle of a sample continues it.
    let dev = FakeDevice::new("gapu16");
    let out = dev.dir.join("out.raw");
    let r = Reader::spawn(&["-u", s(&dev.sock), "-x", "--live", "-f", s(&out)]);
    let (mut c, _) = dev.accept_subscribed(&hello());
    c.send(&Record::SnapshotEnd);
    c.send(&params(0, PcmFormat::U16, 8000, 1, 1000));
    c.send_all(&[prepare(0), start(0), pcm(0, 0, &[1, 2, 3])]);
    c.send(&Record::Gap {
        stream: 0,
        offset: 3,
        bytes: 5,
        time_ns: 5,
    });
    c.send(&pcm(0, 8, &[9, 9]));
    c.close();
    let f = r.finish();
    assert!(f.status.success(), "{}", f.stderr);
    assert_eq!(
        std::fs::read(&out).unwrap(),
        vec![1, 2, 3, 0x80, 0x00, 0x80, 0x00, 0x80, 9, 9]
    );
}

#[test]
fn records_for_streams_the_card_did_not_list_are_ignored() {
    let dev = FakeDevice::new("unlisted");
    let out = dev.dir.join("out.wav");
    let r = Reader::spawn(&["-u", s(&dev.sock), "-x", "-f", s(&out)]);
    let (mut c, _) = dev.accept_subscribed(&hello());
    c.send(&Record::SnapshotEnd);
    let a = noise(21, 4000);
    c.send(&params(0, PcmFormat::S16, 48000, 2, 1000));
    c.send_all(&[prepare(0), start(0), pcm(0, 0, &a[..2000])]);
    // Stream 7 does not exist; stream 1 is an input (its PCM is not recorded).
    c.send_all(&[
        params(7, PcmFormat::U8, 8000, 1, 100),
        prepare(7),
        pcm(7, 0, &[1; 100]),
        Record::Gap {
            stream: 7,
            offset: 0,
            bytes: 10,
            time_ns: 1,
        },
        pcm(1, 0, &[1; 100]),
        Record::Control {
            id: 99,
            origin: ControlOrigin::Guest,
            values: vec![1],
        },
    ]);
    c.send(&pcm(0, 2000, &a[2000..]));
    c.close();
    let f = r.finish();
    assert!(f.status.success(), "{}", f.stderr);
    assert_eq!(wav_data(&out), a);
    assert!(!dev.dir.join("out.1.wav").exists());
}

#[test]
fn a_signal_still_writes_the_audio_already_received() {
    let dev = FakeDevice::new("sigtake");
    let out = dev.dir.join("out.pcm");
    // stdout is not read until after the signal: the main loop blocks on it, with records
    // received from the socket (and more waiting in it) not yet written.
    let (r, mut stdout) =
        Reader::without_stdout_thread(&["-u", s(&dev.sock), "-x", "-s", "-f", s(&out)]);
    let (mut c, _) = dev.accept_subscribed(&hello());
    c.send(&Record::SnapshotEnd);
    c.send(&params(0, PcmFormat::S16, 48000, 2, 4096));
    c.send_all(&[prepare(0), start(0)]);
    let audio = noise(11, 4096 * 1024);
    let sent = Arc::new(AtomicUsize::new(0));
    let sender = {
        let (audio, sent) = (audio.clone(), Arc::clone(&sent));
        std::thread::spawn(move || {
            for (i, ch) in audio.chunks(4096).enumerate() {
                if c.try_send(&pcm(0, i as u64 * 4096, ch)).is_err() {
                    break;
                }
                sent.fetch_add(ch.len(), Ordering::SeqCst);
            }
            c
        })
    };
    // Until the sender is held: the pipe, the reader's buffers and the socket are full.
    let mut last = usize::MAX;
    wait_until("the reader to stop taking audio", || {
        std::thread::sleep(Duration::from_millis(300));
        let now = sent.load(Ordering::SeqCst);
        std::mem::replace(&mut last, now) == now
    });
    assert!(last > 256 * 1024 && last < audio.len(), "{last} bytes sent");
    r.signal(libc::SIGINT);
    std::thread::sleep(Duration::from_millis(200));
    let drain = std::thread::spawn(move || {
        let mut v = Vec::new();
        let _ = stdout.read_to_end(&mut v);
        v
    });
    let f = r.finish();
    assert_eq!(f.status.code(), Some(0), "{}", f.stderr);
    let _c = sender.join().expect("sender");
    let taken = sent.load(Ordering::SeqCst);
    let file = std::fs::read(&out).unwrap();
    assert_eq!(
        file.len(),
        taken,
        "every record sent before the signal is in the file ({} of {taken} bytes)",
        file.len()
    );
    assert_eq!(file, audio[..taken]);
    assert_eq!(drain.join().expect("stdout"), file);
}
