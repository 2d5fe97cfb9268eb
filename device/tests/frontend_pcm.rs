//! Playback through the running daemon: what the frontend plays arrives bit-exact at a tap
//! reader, framed by the stream's lifecycle records, and a reader that joins mid-stream is
//! told the stream's state before any audio.

use std::time::{Duration, Instant};

use dsproxy_testfront::check::lifecycle;
use dsproxy_testfront::proto::*;
use dsproxy_testfront::tap::pcm_of;
use dsproxy_testfront::{play, signal, Daemon, FrontendOpts, SndFrontend, TapReader};
use dsproxy_wire::record::{Params, Record};
use dsproxy_wire::{PcmFormat, PcmRate};

const T: Duration = Duration::from_secs(5);

fn daemon(args: &[&str]) -> Daemon {
    Daemon::dsproxy(env!("CARGO_BIN_EXE_dsproxy-device"), args).expect("start dsproxy-device")
}

fn connect(d: &Daemon, opts: FrontendOpts) -> SndFrontend {
    SndFrontend::connect(&d.socket, opts)
        .unwrap_or_else(|e| panic!("connect: {e}\n{}", d.log_tail(30)))
}

/// Plays `data` on output stream 0 with the given parameters and checks that a reader gets
/// exactly that, between PARAMS/PREPARE/START and STOP(drained)/RELEASE.
/// A stream's shape and ring for [`play_and_capture`].
struct Ring {
    format: PcmFormat,
    rate: PcmRate,
    channels: u8,
    period: u32,
    periods: u32,
}

fn play_and_capture(d: &Daemon, opts: FrontendOpts, ring: Ring, data: &[u8]) {
    let Ring {
        format,
        rate,
        channels,
        period,
        periods,
    } = ring;
    let mut tap = TapReader::connect(&d.tap, 0, 0, T).expect("tap reader");
    tap.wait_for("SNAPSHOT_END", T, |r| matches!(r, Record::SnapshotEnd))
        .expect("snapshot end");
    let mut fe = connect(d, opts);
    let st = fe
        .set_params(
            0,
            period * periods,
            period,
            channels,
            format.code(),
            rate.code(),
        )
        .unwrap();
    assert_eq!(st, S_OK, "SET_PARAMS {}", status_name(st));
    assert_eq!(fe.prepare(0).unwrap(), S_OK);
    let rep = play(&mut fe, 0, data, period as usize)
        .unwrap_or_else(|e| panic!("play: {e}\n{}", d.log_tail(30)));
    assert!(rep.bad_statuses().is_empty(), "{:?}", rep.bad_statuses());
    assert_eq!(rep.completions.len(), data.len().div_ceil(period as usize));
    assert_eq!(rep.stop_status, Some(S_OK));
    for c in &rep.completions {
        assert!(
            c.latency_bytes <= period * periods,
            "latency_bytes {} beyond the buffer",
            c.latency_bytes
        );
    }
    assert_eq!(
        rep.completions.last().unwrap().latency_bytes,
        0,
        "nothing is queued after the last buffer"
    );
    assert_eq!(fe.release(0).unwrap(), S_OK);

    tap.wait_for("RELEASE", T, |r| {
        matches!(r, Record::Release { stream: 0, .. })
    })
    .unwrap_or_else(|e| panic!("{e}\n{}", d.log_tail(30)));
    let recs: Vec<Record> = tap.history().iter().map(|r| r.record.clone()).collect();
    let life = lifecycle(recs.iter(), 0);
    assert_eq!(
        life,
        ["PARAMS", "PREPARE", "START", "PCM", "STOP", "RELEASE"],
        "{}",
        tap.summary()
    );
    let params = recs.iter().find_map(|r| match r {
        Record::Params(p) => Some(*p),
        _ => None,
    });
    assert_eq!(
        params,
        Some(Params {
            stream: 0,
            buffer_bytes: period * periods,
            period_bytes: period,
            features: 0,
            channels,
            format: format.code(),
            rate: rate.code(),
        })
    );
    let stop = recs.iter().find_map(|r| match r {
        Record::Stop {
            drained,
            discarded_bytes,
            ..
        } => Some((*drained, *discarded_bytes)),
        _ => None,
    });
    assert_eq!(
        stop,
        Some((true, 0)),
        "every queued buffer was played before STOP"
    );

    let got = pcm_of(recs.iter(), 0).expect("contiguous PCM offsets");
    assert_eq!(got.len(), data.len(), "PCM byte count");
    assert!(got == data, "PCM differs from what was played");
    let first_offset = recs.iter().find_map(|r| match r {
        Record::Pcm { offset, .. } => Some(*offset),
        _ => None,
    });
    assert_eq!(first_offset, Some(0), "offsets count from PREPARE");

    // Device timestamps never go backwards, and PCM is stamped between START and STOP.
    let times: Vec<u64> = recs
        .iter()
        .filter_map(|r| match r {
            Record::Start { time_ns, .. }
            | Record::Stop { time_ns, .. }
            | Record::Pcm { time_ns, .. } => Some(*time_ns),
            _ => None,
        })
        .collect();
    assert!(times.windows(2).all(|w| w[0] <= w[1]), "time_ns: {times:?}");
    assert!(fe.violations().is_empty(), "{:?}", fe.violations());
    assert_eq!(
        fe.late_notifications(),
        0,
        "completions the device never signalled"
    );
}

#[test]
fn s16_stereo_48k_arrives_bit_exact() {
    let d = daemon(&["--pacing", "none"]);
    // 10 periods and a half of 1024 frames; PCM descriptors split at page boundaries.
    let data = signal::lcg_bytes(48, 4096 * 10 + 2048);
    let ring = Ring {
        format: PcmFormat::S16,
        rate: PcmRate::R48000,
        channels: 2,
        period: 4096,
        periods: 4,
    };
    play_and_capture(&d, FrontendOpts::default(), ring, &data);
}

#[test]
fn u8_mono_8k_arrives_bit_exact_through_odd_descriptor_splits() {
    let d = daemon(&[]);
    // 0.6 s of 8 kHz U8 mono at real-time pacing; descriptors split every 100 bytes of
    // guest address space, so a buffer comes in many odd-sized pieces.
    let data = signal::lcg_bytes(8, 4800);
    let opts = FrontendOpts {
        desc_split: 100,
        queue_size: 256,
        ..FrontendOpts::default()
    };
    let ring = Ring {
        format: PcmFormat::U8,
        rate: PcmRate::R8000,
        channels: 1,
        period: 400,
        periods: 3,
    };
    play_and_capture(&d, opts, ring, &data);
}

#[test]
fn s24_3le_six_channels_frames_straddle_descriptors() {
    // 18-byte frames split at 4 KiB boundaries: frames cross descriptors.
    let d = daemon(&["--pacing", "none"]);
    let data = signal::lcg_bytes(24, 18 * 1000 * 3);
    let ring = Ring {
        format: PcmFormat::S24_3,
        rate: PcmRate::R48000,
        channels: 6,
        period: 18 * 1000,
        periods: 2,
    };
    play_and_capture(&d, FrontendOpts::default(), ring, &data);
}

#[test]
fn a_reader_joining_mid_stream_gets_the_state_first() {
    let d = daemon(&[]);
    let mut first = TapReader::connect(&d.tap, 0, 0, T).expect("first reader");
    let mut fe = connect(&d, FrontendOpts::default());
    let period = 1920u32; // 10 ms at 48 kHz S16 stereo
    assert_eq!(fe.set_params(0, period * 4, period, 2, 5, 7).unwrap(), S_OK);
    assert_eq!(fe.prepare(0).unwrap(), S_OK);
    let data = signal::lcg_bytes(5, period as usize * 60); // 0.6 s
    let mut chunks = data.chunks(period as usize);
    let mut in_flight = 0;
    for _ in 0..4 {
        fe.push_tx(0, chunks.next().unwrap()).unwrap();
        in_flight += 1;
    }
    assert_eq!(fe.start(0).unwrap(), S_OK);

    // Let the stream run for a while, keeping its ring full.
    let mut done = 0;
    let mut second: Option<TapReader> = None;
    let deadline = Instant::now() + Duration::from_secs(5);
    while in_flight > 0 {
        assert!(Instant::now() < deadline, "play took too long");
        for c in fe.wait_used(Duration::from_millis(500)).unwrap() {
            assert_eq!(c.status, S_OK);
            in_flight -= 1;
            done += 1;
            if let Some(ch) = chunks.next() {
                fe.push_tx(0, ch).unwrap();
                in_flight += 1;
            }
        }
        if done >= 15 && second.is_none() {
            second = Some(TapReader::connect(&d.tap, 0, 0, T).expect("second reader"));
        }
    }
    assert_eq!(fe.stop(0).unwrap(), S_OK);
    assert_eq!(fe.release(0).unwrap(), S_OK);

    let mut second = second.expect("second reader attached");
    second
        .wait_for("RELEASE", T, |r| {
            matches!(r, Record::Release { stream: 0, .. })
        })
        .unwrap_or_else(|e| panic!("{e}"));
    let recs: Vec<Record> = second.history().iter().map(|r| r.record.clone()).collect();
    // The snapshot: PARAMS, PREPARE, START of the running stream, then the rest.
    let life = lifecycle(recs.iter(), 0);
    assert_eq!(
        life,
        ["PARAMS", "PREPARE", "START", "PCM", "STOP", "RELEASE"],
        "{}",
        second.summary()
    );
    let snap_end = recs
        .iter()
        .position(|r| matches!(r, Record::SnapshotEnd))
        .expect("SNAPSHOT_END");
    let first_pcm = recs
        .iter()
        .position(|r| matches!(r, Record::Pcm { .. }))
        .expect("PCM after joining");
    assert!(snap_end < first_pcm, "{}", second.summary());
    // The snapshot may start with the last FRONTEND record; the stream's part starts with
    // its parameters.
    match recs
        .iter()
        .find(|r| dsproxy_testfront::check::record_stream(r).is_some())
    {
        Some(Record::Params(p)) => {
            assert_eq!((p.stream, p.period_bytes, p.channels), (0, period, 2))
        }
        r => panic!("the snapshot's stream part starts with {r:?}"),
    }
    // It joined in the middle: its audio starts past offset 0, is contiguous, and is the
    // tail of what was played.
    let joined_at = match &recs[first_pcm] {
        Record::Pcm { offset, .. } => *offset,
        _ => unreachable!(),
    };
    assert!(joined_at > 0, "second reader's PCM starts at offset 0");
    let tail = pcm_of(recs.iter(), 0).expect("contiguous");
    assert_eq!(joined_at as usize + tail.len(), data.len());
    assert!(tail == data[joined_at as usize..], "mid-stream PCM differs");

    // The first reader saw everything.
    first
        .wait_for("RELEASE", T, |r| {
            matches!(r, Record::Release { stream: 0, .. })
        })
        .unwrap();
    assert!(first.pcm(0).unwrap() == data, "first reader's PCM differs");
}

#[test]
fn two_streams_interleaved_on_one_queue_stay_apart() {
    let d = daemon(&["--outputs", "2", "--pacing", "none"]);
    let mut all = TapReader::connect(&d.tap, 0, 0, T).expect("reader of all streams");
    let mut only1 = TapReader::connect(&d.tap, 0, 1 << 1, T).expect("reader of stream 1");
    for t in [&mut all, &mut only1] {
        t.wait_for("SNAPSHOT_END", T, |r| matches!(r, Record::SnapshotEnd))
            .unwrap();
    }
    let mut fe = connect(&d, FrontendOpts::default());
    // Stream 0: 48 kHz S16 stereo; stream 1: 44.1 kHz S32 mono.
    assert_eq!(fe.set_params(0, 16384, 4096, 2, 5, 7).unwrap(), S_OK);
    assert_eq!(fe.set_params(1, 8192, 2048, 1, 17, 6).unwrap(), S_OK);
    assert_eq!(fe.prepare(0).unwrap(), S_OK);
    assert_eq!(fe.prepare(1).unwrap(), S_OK);
    let d0 = signal::lcg_bytes(100, 4096 * 8);
    let d1 = signal::lcg_bytes(101, 2048 * 13);
    let mut opts = dsproxy_testfront::PlayOpts::new(2048);
    opts.timeout = Duration::from_secs(10);
    let reps = dsproxy_testfront::play_many(
        &mut fe,
        &[
            dsproxy_testfront::PlayStream {
                stream: 0,
                data: &d0,
            },
            dsproxy_testfront::PlayStream {
                stream: 1,
                data: &d1,
            },
        ],
        &opts,
    )
    .unwrap();
    assert!(reps.iter().all(|r| r.bad_statuses().is_empty()));
    assert_eq!(fe.release(0).unwrap(), S_OK);
    assert_eq!(fe.release(1).unwrap(), S_OK);
    for stream in [0, 1] {
        all.wait_for(
            "RELEASE",
            T,
            |r| matches!(r, Record::Release { stream: s, .. } if *s == stream),
        )
        .unwrap();
    }
    assert!(all.pcm(0).unwrap() == d0, "stream 0 differs");
    assert!(all.pcm(1).unwrap() == d1, "stream 1 differs");
    only1
        .wait_for("RELEASE", T, |r| {
            matches!(r, Record::Release { stream: 1, .. })
        })
        .unwrap();
    assert!(
        only1.pcm(1).unwrap() == d1,
        "stream 1 differs for the masked reader"
    );
    let leaked = only1
        .history()
        .iter()
        .filter(|r| dsproxy_testfront::check::record_stream(&r.record) == Some(0))
        .count();
    assert_eq!(
        leaked, 0,
        "a reader of stream 1 got {leaked} records of stream 0"
    );
}
