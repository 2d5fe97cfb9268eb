//! Stopping, pausing and starving a playback stream the way Linux does: STOP with audio still
//! queued drops exactly that audio (returned on RELEASE, never heard by readers), STOP/START
//! (ALSA pause) keeps it, and an underrun is reported to readers as an XRUN, not to the guest.

use std::time::{Duration, Instant};

use dsproxy_testfront::check::lifecycle;
use dsproxy_testfront::proto::*;
use dsproxy_testfront::tap::pcm_of;
use dsproxy_testfront::{signal, Daemon, FrontendOpts, SndFrontend, TapReader};
use dsproxy_wire::record::Record;

const T: Duration = Duration::from_secs(3);
const PERIOD: usize = 9600; // 50 ms of 48 kHz S16 stereo

fn daemon(args: &[&str]) -> Daemon {
    Daemon::dsproxy(env!("CARGO_BIN_EXE_dsproxy-device"), args).expect("start dsproxy-device")
}

fn setup(d: &Daemon) -> (SndFrontend, TapReader) {
    let mut tap = TapReader::connect(&d.tap, 0, 0, T).expect("tap");
    tap.wait_for("SNAPSHOT_END", T, |r| matches!(r, Record::SnapshotEnd))
        .unwrap();
    let mut fe = SndFrontend::connect(&d.socket, FrontendOpts::default())
        .unwrap_or_else(|e| panic!("connect: {e}\n{}", d.log_tail(30)));
    assert_eq!(
        fe.set_params(0, PERIOD as u32 * 8, PERIOD as u32, 2, 5, 7)
            .unwrap(),
        S_OK
    );
    assert_eq!(fe.prepare(0).unwrap(), S_OK);
    (fe, tap)
}

fn records(tap: &mut TapReader) -> Vec<Record> {
    tap.history().iter().map(|r| r.record.clone()).collect()
}

#[test]
fn stop_with_audio_queued_drops_exactly_that_audio() {
    let d = daemon(&[]);
    let (mut fe, mut tap) = setup(&d);
    let data = signal::lcg_bytes(31, PERIOD * 6);
    for ch in data.chunks(PERIOD) {
        fe.push_tx(0, ch).unwrap();
    }
    assert_eq!(fe.start(0).unwrap(), S_OK);
    // Two periods play, then the application stops (snd_pcm_drop).
    let mut played = 0usize;
    let deadline = Instant::now() + T;
    while played < 2 {
        assert!(Instant::now() < deadline, "nothing played");
        for c in fe.wait_used(Duration::from_millis(200)).unwrap() {
            assert_eq!(c.status, S_OK);
            played += 1;
        }
    }
    assert_eq!(fe.stop(0).unwrap(), S_OK);
    // Whatever completed before STOP was answered was played; the rest is held, then
    // returned by RELEASE.
    played += fe.take_used().unwrap().len();
    assert!(played < 6, "everything played before STOP took effect");
    std::thread::sleep(Duration::from_millis(150));
    assert!(
        fe.take_used().unwrap().is_empty(),
        "a stopped stream went on completing buffers"
    );
    assert_eq!(fe.release(0).unwrap(), S_OK);
    let deadline = Instant::now() + Duration::from_secs(1);
    let mut returned = 0;
    while returned < 6 - played && Instant::now() < deadline {
        returned += fe.wait_used(Duration::from_millis(100)).unwrap().len();
    }
    assert_eq!(
        returned,
        6 - played,
        "RELEASE must return every queued buffer"
    );

    tap.wait_for("RELEASE", T, |r| {
        matches!(r, Record::Release { stream: 0, .. })
    })
    .unwrap();
    let recs = records(&mut tap);
    assert_eq!(
        lifecycle(recs.iter(), 0),
        ["PARAMS", "PREPARE", "START", "PCM", "STOP", "RELEASE"],
        "{}",
        tap.summary()
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
        Some((false, ((6 - played) * PERIOD) as u64)),
        "STOP record: drained flag and discarded byte count ({played} of 6 played)"
    );
    let got = pcm_of(recs.iter(), 0).unwrap();
    assert_eq!(
        got.len(),
        played * PERIOD,
        "readers got unplayed audio, or lost some"
    );
    assert!(got == data[..got.len()], "PCM differs");
}

#[test]
fn pause_and_resume_keep_every_byte() {
    let d = daemon(&[]);
    let (mut fe, mut tap) = setup(&d);
    let data = signal::lcg_bytes(32, PERIOD * 6);
    for ch in data.chunks(PERIOD) {
        fe.push_tx(0, ch).unwrap();
    }
    assert_eq!(fe.start(0).unwrap(), S_OK);
    let mut done = 0;
    let deadline = Instant::now() + T;
    while done < 2 {
        assert!(Instant::now() < deadline);
        done += fe.wait_used(Duration::from_millis(200)).unwrap().len();
    }
    assert_eq!(fe.stop(0).unwrap(), S_OK); // ALSA pause push
    done += fe.take_used().unwrap().len();
    let paused = fe.wait_used(Duration::from_millis(250)).unwrap();
    assert!(paused.is_empty(), "buffers completed while paused");
    assert_eq!(fe.start(0).unwrap(), S_OK); // pause release
    let deadline = Instant::now() + T;
    while done < 6 {
        assert!(
            Instant::now() < deadline,
            "only {done} of 6 buffers after resuming"
        );
        for c in fe.wait_used(Duration::from_millis(200)).unwrap() {
            assert_eq!(c.status, S_OK);
            done += 1;
        }
    }
    assert_eq!(fe.stop(0).unwrap(), S_OK);
    assert_eq!(fe.release(0).unwrap(), S_OK);
    tap.wait_for("RELEASE", T, |r| {
        matches!(r, Record::Release { stream: 0, .. })
    })
    .unwrap();
    let recs = records(&mut tap);
    assert_eq!(
        lifecycle(recs.iter(), 0),
        ["PARAMS", "PREPARE", "START", "PCM", "STOP", "START", "PCM", "STOP", "RELEASE"],
        "{}",
        tap.summary()
    );
    let stops: Vec<bool> = recs
        .iter()
        .filter_map(|r| match r {
            Record::Stop { drained, .. } => Some(*drained),
            _ => None,
        })
        .collect();
    assert_eq!(
        stops,
        [false, true],
        "the pause left audio queued; the end did not"
    );
    assert!(
        pcm_of(recs.iter(), 0).unwrap() == data,
        "PCM across the pause differs"
    );
}

#[test]
fn an_underrun_is_an_xrun_record_and_the_clock_restarts_without_a_burst() {
    let d = daemon(&[]);
    let (mut fe, mut tap) = setup(&d);
    let data = signal::lcg_bytes(33, PERIOD * 3);
    let t = fe.push_tx(0, &data[..PERIOD]).unwrap();
    assert_eq!(fe.start(0).unwrap(), S_OK);
    fe.wait_token(t, T).unwrap();
    // The application is late by ~200 ms.
    std::thread::sleep(Duration::from_millis(200));
    let t_resume = Instant::now();
    let t1 = fe.push_tx(0, &data[PERIOD..PERIOD * 2]).unwrap();
    let t2 = fe.push_tx(0, &data[PERIOD * 2..]).unwrap();
    let cs = fe.wait_tokens(&[t1, t2], T).unwrap();
    // No catch-up burst: the two periods take about two periods from when they came.
    let took = cs[1].completed_at.duration_since(t_resume);
    assert!(
        took >= Duration::from_millis(80),
        "after an underrun two 50 ms periods completed in {took:?}"
    );
    assert_eq!(fe.stop(0).unwrap(), S_OK);
    assert_eq!(fe.release(0).unwrap(), S_OK);
    let x = tap
        .wait_for("XRUN", T, |r| matches!(r, Record::Xrun { stream: 0, .. }))
        .unwrap_or_else(|e| panic!("{e}\n{}", d.log_tail(20)));
    match x.record {
        Record::Xrun { duration_ns, .. } => assert!(
            (100_000_000..1_000_000_000).contains(&duration_ns),
            "underrun of {duration_ns} ns"
        ),
        _ => unreachable!(),
    }
    tap.wait_for("RELEASE", T, |r| {
        matches!(r, Record::Release { stream: 0, .. })
    })
    .unwrap();
    assert!(pcm_of(records(&mut tap).iter(), 0).unwrap() == data);
    // The guest is not told: Linux would stop the stream on PCM_XRUN.
    let evs = fe.events().unwrap();
    assert!(
        !evs.iter()
            .any(|e| matches!(e.event, SndEvent::PcmXrun { .. })),
        "{evs:?}"
    );
}
