//! The card's clock, seen by the driver: playback buffers complete at the stream's rate, not
//! as fast as they come, unless the card is told not to pace. The bounds are loose on
//! purpose: this checks behaviour, the benchmark measures quality.

use std::time::{Duration, Instant};

use dsproxy_testfront::proto::*;
use dsproxy_testfront::vring::VRING_USED_F_NO_NOTIFY;
use dsproxy_testfront::{
    play, play_many, signal, Daemon, FrontendOpts, PlayOpts, PlayReport, PlayStream, SndFrontend,
    TapReader, Timing,
};

fn daemon(args: &[&str]) -> Daemon {
    Daemon::dsproxy(env!("CARGO_BIN_EXE_dsproxy-device"), args).expect("start dsproxy-device")
}

fn connect(d: &Daemon) -> SndFrontend {
    SndFrontend::connect(&d.socket, FrontendOpts::default())
        .unwrap_or_else(|e| panic!("connect: {e}\n{}", d.log_tail(30)))
}

/// The timing of a 1-second play in 4096-byte periods, which must have taken 0.9–1.3 s.
fn about_one_second(rep: &PlayReport) -> Timing {
    let t = rep.timing(4096).expect("completions");
    assert!(
        t.elapsed >= Duration::from_millis(900) && t.elapsed <= Duration::from_millis(1300),
        "1 s of audio completed in {:?} ({t:?})",
        t.elapsed
    );
    t
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
    let t = about_one_second(&rep);
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

/// `--pacing none`, 48 kHz S16 stereo with 16384-byte periods (85.3 ms): long periods, so a
/// busy test machine does not make the player late by a whole period.
const LONG_PERIOD: usize = 16384;

fn unpaced_stream(d: &Daemon) -> SndFrontend {
    let mut fe = connect(d);
    assert_eq!(
        fe.set_params(0, 4 * LONG_PERIOD as u32, LONG_PERIOD as u32, 2, 5, 7)
            .unwrap(),
        S_OK
    );
    assert_eq!(fe.prepare(0).unwrap(), S_OK);
    fe
}

#[test]
fn without_pacing_two_periods_stay_queued_until_more_arrive_or_they_play() {
    let d = daemon(&["--pacing", "none"]);
    let mut tap = TapReader::connect(&d.tap, 0, 0, Duration::from_secs(5)).expect("tap");
    let mut fe = unpaced_stream(&d);
    let data = signal::lcg_bytes(5, 3 * LONG_PERIOD);
    let chunk = |i: usize| &data[i * LONG_PERIOD..(i + 1) * LONG_PERIOD];
    let a = fe.push_tx(0, chunk(0)).unwrap();
    assert_eq!(fe.start(0).unwrap(), S_OK);
    // The guest's last two periods are not completed although the reader has room.
    let early = fe.wait_used(Duration::from_millis(30)).unwrap();
    assert!(
        early.is_empty(),
        "completed with nothing behind it: {early:?}"
    );
    let b = fe.push_tx(0, chunk(1)).unwrap();
    let early = fe.wait_used(Duration::from_millis(30)).unwrap();
    assert!(
        early.is_empty(),
        "completed with one period behind it: {early:?}"
    );
    // A third arrives: the first completes at once, the other two wait.
    let pushed_c = Instant::now();
    let c = fe.push_tx(0, chunk(2)).unwrap();
    let got = fe.wait_token(a, Duration::from_secs(2)).unwrap();
    assert_eq!(got.status, S_OK);
    let first_after = got.completed_at.duration_since(pushed_c);
    assert!(
        first_after < Duration::from_millis(60),
        "the first buffer completed {first_after:?} after two were behind it"
    );
    // Nothing else comes: the other two complete as they would play, 85 ms each.
    let got_b = fe.wait_token(b, Duration::from_secs(2)).unwrap();
    let got_c = fe.wait_token(c, Duration::from_secs(2)).unwrap();
    let b_after = got_b.completed_at.duration_since(pushed_c);
    let c_after = got_c.completed_at.duration_since(pushed_c);
    assert!(
        b_after >= Duration::from_millis(75) && c_after >= Duration::from_millis(160),
        "the last two completed {b_after:?} and {c_after:?} after the third arrived"
    );
    assert!(c_after < Duration::from_secs(1), "{c_after:?}");
    assert_eq!(fe.stop(0).unwrap(), S_OK);
    let stop = tap
        .wait_for("STOP", Duration::from_secs(5), |r| {
            matches!(r, dsproxy_wire::Record::Stop { .. })
        })
        .unwrap();
    assert!(
        matches!(
            stop.record,
            dsproxy_wire::Record::Stop {
                drained: true,
                discarded_bytes: 0,
                ..
            }
        ),
        "{:?}",
        stop.record
    );
    let got = tap
        .wait_pcm_bytes(0, data.len(), Duration::from_secs(5))
        .unwrap();
    assert!(got == data, "PCM differs");
}

/// Linux's virtio_snd under the OSS emulation: the stream starts once the first period is
/// written, the program keeps writing, the driver keeps up to buffer/period periods in flight
/// and counts each completion as a period played. If every period it sent were completed,
/// its ring would be empty and ALSA would call it an underrun; with less than a period and
/// 16 frames in flight, snd-pcm-oss writes silence where the program writes next. Without
/// pacing neither may happen while the program still has data — and it must still go far
/// faster than real time, bit-exact.
#[test]
fn without_pacing_a_linux_like_player_never_sees_its_ring_drained() {
    let d = daemon(&["--pacing", "none"]);
    let mut tap = TapReader::connect(&d.tap, 0, 0, Duration::from_secs(5)).expect("tap");
    let mut fe = unpaced_stream(&d);
    // 5 s of audio
    let data = signal::lcg_bytes(6, 960_000);
    let periods: Vec<&[u8]> = data.chunks(LONG_PERIOD).collect();
    let mut in_flight = std::collections::VecDeque::new();
    in_flight.push_back(fe.push_tx(0, periods[0]).unwrap());
    let mut next = 1;
    let t0 = Instant::now();
    assert_eq!(fe.start(0).unwrap(), S_OK);
    let mut completions = 0usize;
    while next < periods.len() || !in_flight.is_empty() {
        while in_flight.len() < 4 && next < periods.len() {
            in_flight.push_back(fe.push_tx(0, periods[next]).unwrap());
            next += 1;
        }
        let mut used = fe
            .wait_used(Duration::from_secs(2))
            .unwrap_or_else(|e| panic!("{e}\n{}", d.log_tail(20)));
        assert!(!used.is_empty(), "no completion in 2 s\n{}", d.log_tail(20));
        // The program is a little late with its next write (and the driver has taken every
        // completion by then): whatever the device was going to complete, it has.
        std::thread::sleep(Duration::from_millis(5));
        used.extend(fe.take_used().unwrap());
        for c in used {
            assert_eq!(c.status, S_OK);
            assert_eq!(in_flight.pop_front(), Some(c.token), "completion order");
            completions += 1;
        }
        // snd-pcm-oss's silence threshold: a period and 16 frames (64 bytes here)
        assert!(
            next >= periods.len() || in_flight.len() * LONG_PERIOD >= LONG_PERIOD + 64,
            "{} periods in flight after {completions} completions of {}, with {} periods \
             left to send",
            in_flight.len(),
            periods.len(),
            periods.len() - next
        );
    }
    let took = t0.elapsed();
    eprintln!("5 s of audio took {took:?} without pacing");
    assert_eq!(completions, periods.len());
    assert!(
        took < Duration::from_millis(2500),
        "5 s of audio took {took:?} without pacing"
    );
    assert_eq!(fe.stop(0).unwrap(), S_OK);
    let got = tap
        .wait_pcm_bytes(0, data.len(), Duration::from_secs(5))
        .unwrap();
    assert!(got == data, "PCM differs");
    tap.wait_for("STOP", Duration::from_secs(5), |r| {
        matches!(r, dsproxy_wire::Record::Stop { .. })
    })
    .unwrap();
    let recs: Vec<_> = tap.history().iter().map(|r| r.record.clone()).collect();
    assert!(
        !recs
            .iter()
            .any(|r| matches!(r, dsproxy_wire::Record::Xrun { .. })),
        "an underrun was reported"
    );
    assert!(recs.iter().any(|r| matches!(
        r,
        dsproxy_wire::Record::Stop {
            drained: true,
            discarded_bytes: 0,
            ..
        }
    )));
    assert_eq!(
        recs.iter()
            .filter(|r| matches!(r, dsproxy_wire::Record::Start { .. }))
            .count(),
        1,
        "one START: no stop/prepare/start cycles"
    );
}

/// Without pacing, the worker polls for the guest's next buffer and meanwhile asks the
/// driver not to kick (VRING_USED_F_NO_NOTIFY), which this frontend honours as Linux does. A
/// flag left set when the worker goes back to sleep would strand the driver's next buffer:
/// every buffer of two runs must complete (the second after a STOP, so after the worker
/// slept), and once the stream is stopped the used ring must allow kicks again.
#[test]
fn without_pacing_the_device_may_suppress_kicks_but_never_strands_a_buffer() {
    let d = daemon(&["--pacing", "none"]);
    let mut fe = connect(&d);
    assert_eq!(fe.set_params(0, 16384, 4096, 2, 5, 7).unwrap(), S_OK);
    assert_eq!(fe.prepare(0).unwrap(), S_OK);
    let opts = PlayOpts {
        timeout: Duration::from_secs(20),
        ..PlayOpts::new(4096)
    };
    for run in 0..2u64 {
        // 4 s of audio, 4 periods in flight: the worker polls through most of it.
        let data = signal::lcg_bytes(10 + run, 192 * 4096);
        let rep = play_many(
            &mut fe,
            &[PlayStream {
                stream: 0,
                data: &data,
            }],
            &opts,
        )
        .unwrap_or_else(|e| panic!("run {run}: {e}\n{}", d.log_tail(30)));
        assert_eq!(rep[0].completions.len(), 192, "run {run}");
        assert!(rep[0].bad_statuses().is_empty(), "run {run}");
        // play_many ends with STOP, which the worker handles after its last poll.
        assert_eq!(
            fe.used_flags(TX_QUEUE).unwrap() & VRING_USED_F_NO_NOTIFY,
            0,
            "run {run}: the device still says \"do not kick\" after STOP"
        );
    }
    eprintln!("kicks left out: {}", fe.kicks_suppressed());
    assert!(fe.violations().is_empty(), "{:?}", fe.violations());
    assert_eq!(fe.release(0).unwrap(), S_OK);
}

/// At real-time pacing, while every running stream has a buffer behind the one playing, the
/// device asks the driver not to kick the TX ring, and while it holds event buffers not to
/// kick the event queue: it wakes at the head's deadline anyway and takes the driver's new
/// buffers first. The stream must keep its timing and lose nothing, most of the driver's
/// kicks (two per period: its next buffer, the event buffer it re-posts after the period's
/// event) are left out, and after STOP the used ring allows kicks.
#[test]
fn at_real_time_the_device_wakes_once_per_period_not_twice() {
    let d = daemon(&[]);
    let mut tap = TapReader::connect(&d.tap, 0, 0, Duration::from_secs(5)).expect("tap");
    let mut fe = connect(&d);
    assert_eq!(fe.set_params(0, 16384, 4096, 2, 5, 7).unwrap(), S_OK);
    assert_eq!(fe.prepare(0).unwrap(), S_OK);
    // 1 s of audio in 47 periods, 4 in flight.
    let data = signal::lcg_bytes(12, 47 * 4096);
    let rep = play(&mut fe, 0, &data, 4096).unwrap_or_else(|e| panic!("{e}\n{}", d.log_tail(30)));
    about_one_second(&rep);
    assert!(rep.bad_statuses().is_empty());
    // 43 refills find three buffers queued; a busy machine may let a few run low. The
    // frontend keeps 16 event buffers posted and re-posts one per event.
    for (q, what) in [(TX_QUEUE, "TX"), (EVENT_QUEUE, "event")] {
        assert!(
            fe.kicks_suppressed_on(q) >= 20,
            "only {} of ~43 {what} kicks left out",
            fe.kicks_suppressed_on(q)
        );
    }
    assert_eq!(
        fe.used_flags(TX_QUEUE).unwrap() & VRING_USED_F_NO_NOTIFY,
        0,
        "the device still says \"do not kick\" after STOP"
    );
    let got = tap
        .wait_pcm_bytes(0, data.len(), Duration::from_secs(5))
        .unwrap();
    assert!(got == data, "PCM differs");
    assert_eq!(fe.late_notifications(), 0);
    assert!(fe.violations().is_empty(), "{:?}", fe.violations());
}
