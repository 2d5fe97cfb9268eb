//! The daemon across connections and readers: QEMU going away and coming back, a VM
//! paused and resumed (vrings stopped and restarted), --wait-for-reader holding the clock (but never the control queue), and a clean exit on
//! SIGTERM.

use std::time::{Duration, Instant};

use dsproxy_testfront::proto::*;
use dsproxy_testfront::tap::pcm_of;
use dsproxy_testfront::{play, signal, Completion, Daemon, FrontendOpts, SndFrontend, TapReader};
use dsproxy_wire::record::Record;

const T: Duration = Duration::from_secs(5);

fn daemon(args: &[&str]) -> Daemon {
    Daemon::dsproxy(env!("CARGO_BIN_EXE_dsproxy-device"), args).expect("start dsproxy-device")
}

fn connect(d: &Daemon) -> SndFrontend {
    SndFrontend::connect(&d.socket, FrontendOpts::default())
        .unwrap_or_else(|e| panic!("connect: {e}\n{}", d.log_tail(30)))
}

fn frontend_rec(connected: bool) -> impl FnMut(&Record) -> bool {
    move |r| matches!(r, Record::Frontend { connected: c, .. } if *c == connected)
}

#[test]
fn the_daemon_serves_the_next_connection_after_a_disconnect() {
    let d = daemon(&[]);
    let mut tap = TapReader::connect(&d.tap, 0, 0, T).expect("tap");

    // First connection: a stream running with buffers held by the clock when QEMU stops
    // the device (SET_VRING_ENABLE 0 and GET_VRING_BASE on every ring) and goes away.
    let mut fe = connect(&d);
    tap.wait_for("FRONTEND connected", T, frontend_rec(true))
        .unwrap_or_else(|e| panic!("{e}\n{}", d.log_tail(20)));
    let period = 38_400u32; // 200 ms
    assert_eq!(fe.set_params(0, period * 4, period, 2, 5, 7).unwrap(), S_OK);
    assert_eq!(fe.prepare(0).unwrap(), S_OK);
    let data = signal::lcg_bytes(9, period as usize * 4);
    for ch in data.chunks(period as usize) {
        fe.push_tx(0, ch).unwrap();
    }
    assert_eq!(fe.start(0).unwrap(), S_OK);
    let rep = fe
        .disconnect()
        .unwrap_or_else(|e| panic!("disconnect: {e}\n{}", d.log_tail(30)));
    for q in [CONTROL_QUEUE, TX_QUEUE, RX_QUEUE] {
        assert_eq!(
            rep.vring_bases[q],
            Ok(rep.next_avail[q] as u32),
            "queue {q}: the device saw every buffer ({rep:?})"
        );
    }
    // The device keeps what its clock holds (a stopped ring is not written to; the
    // buffers would play on after a restart), but it answers at once.
    assert!(
        rep.still_in_flight[TX_QUEUE] > 0,
        "the test needs buffers held at the stop: {rep:?}"
    );
    for (q, t) in rep.stop_latency.iter().enumerate() {
        assert!(
            *t < Duration::from_millis(500),
            "GET_VRING_BASE of queue {q} took {t:?} with buffers held"
        );
    }
    assert!(rep.violations.is_empty(), "{:?}", rep.violations);
    tap.wait_for("RELEASE after the disconnect", T, |r| {
        matches!(r, Record::Release { stream: 0, .. })
    })
    .unwrap_or_else(|e| panic!("{e}\n{}", d.log_tail(30)));
    let mut t2 = TapReader::connect(&d.tap, 0, 0, T).expect("second tap");
    tap.wait_for("FRONTEND disconnected", T, frontend_rec(false))
        .unwrap_or_else(|e| panic!("{e}\n{}", d.log_tail(30)));
    assert!(d_alive(&d), "daemon exited after the first frontend left");

    // The snapshot a reader gets now says nothing is running.
    let snap = t2
        .wait_for("SNAPSHOT_END", T, |r| matches!(r, Record::SnapshotEnd))
        .map(|_| t2.history().to_vec())
        .unwrap();
    assert!(
        !snap
            .iter()
            .any(|r| matches!(r.record, Record::Start { .. })),
        "a released stream is reported as started: {}",
        t2.summary()
    );

    // Second connection on the same socket: a full play works.
    let mut fe = connect(&d);
    tap.wait_for("FRONTEND reconnected", T, frontend_rec(true))
        .unwrap_or_else(|e| panic!("{e}\n{}", d.log_tail(20)));
    let mark = tap.history().len();
    assert_eq!(fe.config().streams, 2);
    assert_eq!(fe.set_params(0, 16384, 4096, 2, 5, 7).unwrap(), S_OK);
    assert_eq!(fe.prepare(0).unwrap(), S_OK);
    let data2 = signal::lcg_bytes(10, 4096 * 5);
    let r = play(&mut fe, 0, &data2, 4096).unwrap();
    assert!(r.bad_statuses().is_empty());
    assert_eq!(fe.release(0).unwrap(), S_OK);
    tap.wait_for("RELEASE", T, |r| {
        matches!(r, Record::Release { stream: 0, .. })
    })
    .unwrap();
    let after: Vec<Record> = tap.history()[mark..]
        .iter()
        .map(|r| r.record.clone())
        .collect();
    assert!(
        pcm_of(after.iter(), 0).unwrap() == data2,
        "PCM of the second connection differs"
    );

    // Third: QEMU dies without stopping anything (the socket just closes) mid-stream.
    assert_eq!(fe.set_params(0, 16384, 4096, 2, 5, 7).unwrap(), S_OK);
    assert_eq!(fe.prepare(0).unwrap(), S_OK);
    for ch in data2.chunks(4096).take(4) {
        fe.push_tx(0, ch).unwrap();
    }
    assert_eq!(fe.start(0).unwrap(), S_OK);
    drop(fe);
    tap.wait_for("RELEASE after the crash", T, |r| {
        matches!(r, Record::Release { stream: 0, .. })
    })
    .unwrap_or_else(|e| panic!("{e}\n{}", d.log_tail(30)));
    tap.wait_for("FRONTEND disconnected", T, frontend_rec(false))
        .unwrap();
    let mut fe = connect(&d);
    assert_eq!(fe.pcm_info().unwrap().len(), 2);
    assert!(fe.violations().is_empty(), "{:?}", fe.violations());
}

/// Plays one stream the way the Linux driver does: `depth` periods in flight, each completed
/// one replaced by the next period of the signal.
struct Feeder<'a> {
    chunks: std::slice::Chunks<'a, u8>,
    in_flight: usize,
    depth: usize,
    completed: Vec<Completion>,
}

impl<'a> Feeder<'a> {
    fn new(data: &'a [u8], period: usize, depth: usize) -> Feeder<'a> {
        Feeder {
            chunks: data.chunks(period),
            in_flight: 0,
            depth,
            completed: Vec::new(),
        }
    }

    fn refill(&mut self, fe: &mut SndFrontend) {
        while self.in_flight < self.depth {
            let Some(ch) = self.chunks.next() else { return };
            fe.push_tx(0, ch).unwrap();
            self.in_flight += 1;
        }
    }

    fn take(&mut self, got: Vec<Completion>) {
        self.in_flight -= got.len();
        self.completed.extend(got);
    }

    /// Keeps the ring full until `n` buffers have completed in all.
    fn run_until(&mut self, fe: &mut SndFrontend, d: &Daemon, n: usize) {
        while self.completed.len() < n {
            self.refill(fe);
            let got = fe.wait_used(T).unwrap();
            assert!(
                !got.is_empty(),
                "playback stalled after {} buffers\n{}",
                self.completed.len(),
                d.log_tail(30)
            );
            self.take(got);
        }
    }
}

#[test]
fn a_vring_stop_and_restart_mid_play_plays_every_byte_once() {
    let d = daemon(&[]);
    let mut tap = TapReader::connect(&d.tap, 0, 0, T).expect("tap");
    let mut fe = connect(&d);
    let period = 4_800usize; // 25 ms at 48 kHz S16 stereo
    let periods = 24;
    assert_eq!(
        fe.set_params(0, period as u32 * 4, period as u32, 2, 5, 7)
            .unwrap(),
        S_OK
    );
    assert_eq!(fe.prepare(0).unwrap(), S_OK);
    let data = signal::lcg_bytes(21, period * periods);
    let mut feeder = Feeder::new(&data, period, 4);
    feeder.refill(&mut fe);
    assert_eq!(fe.start(0).unwrap(), S_OK);
    feeder.run_until(&mut fe, &d, 6);

    // The VM pauses (QEMU `stop`): every ring stopped, promptly, with buffers held.
    let stop = fe.stop_rings().expect("stop");
    for (q, t) in stop.latency.iter().enumerate() {
        assert!(
            *t < Duration::from_millis(500),
            "GET_VRING_BASE of queue {q} took {t:?}"
        );
        // The device may not have taken the chains made available just before the stop
        // (the kick raced with SET_VRING_ENABLE 0): they stay in the ring, to be taken
        // after the restart. Never more than that.
        let base = stop.bases[q].clone().expect("GET_VRING_BASE");
        let untaken = fe.next_avail(q).wrapping_sub(base as u16);
        assert!(
            usize::from(untaken) <= stop.still_in_flight[q],
            "queue {q}: GET_VRING_BASE says {base}, the driver is at {} ({stop:?})",
            fe.next_avail(q)
        );
    }
    let returned_at_stop = fe.take_used().unwrap();
    feeder.take(returned_at_stop);
    let held = stop.still_in_flight[TX_QUEUE];
    assert!(held > 0, "no buffer held at the stop: {stop:?}");
    assert_eq!(held, feeder.in_flight);

    // Paused: nothing completes and nothing is played.
    let played_at_stop = feeder.completed.len() * period;
    let quiet = fe.wait_used(Duration::from_millis(400)).unwrap();
    assert!(
        quiet.is_empty(),
        "{} buffers completed on a stopped ring",
        quiet.len()
    );
    tap.drain_for(Duration::from_millis(100));
    assert_eq!(
        tap.pcm(0).unwrap().len(),
        played_at_stop,
        "audio played while the VM was paused"
    );

    // QEMU `cont`: the rings start again where the device left them (and the guest memory
    // is mapped anew); the held buffers play on, re-anchored: no burst to catch up.
    let bases: Vec<u16> = stop
        .bases
        .iter()
        .map(|b| *b.as_ref().unwrap() as u16)
        .collect();
    let restarted = Instant::now();
    fe.restart_rings(&bases).expect("restart");
    let first = fe.wait_used(T).unwrap();
    assert!(
        !first.is_empty(),
        "held buffers never completed after the restart\n{}",
        d.log_tail(30)
    );
    let waited = first[0].completed_at.duration_since(restarted);
    assert!(
        waited >= Duration::from_millis(10),
        "the first held buffer completed {waited:?} after the restart: not re-anchored"
    );
    feeder.take(first);
    feeder.run_until(&mut fe, &d, periods);

    // Every buffer completed once, OK, in the order it was queued.
    assert_eq!(feeder.completed.len(), periods);
    assert!(feeder.completed.iter().all(|c| c.status == S_OK));
    let tokens: Vec<_> = feeder.completed.iter().map(|c| c.token).collect();
    let mut sorted = tokens.clone();
    sorted.sort_unstable();
    assert_eq!(tokens, sorted, "completions out of order");
    // The reader got every byte exactly once, bit-exact, in order.
    assert_eq!(fe.stop(0).unwrap(), S_OK);
    assert_eq!(fe.release(0).unwrap(), S_OK);
    tap.wait_for("RELEASE", T, |r| {
        matches!(r, Record::Release { stream: 0, .. })
    })
    .unwrap_or_else(|e| panic!("{e}\n{}", d.log_tail(30)));
    let got = tap.pcm(0).unwrap();
    assert_eq!(got.len(), data.len(), "{}", tap.summary());
    assert!(got == data, "the audio differs");
    assert!(fe.violations().is_empty(), "{:?}", fe.violations());
}

fn d_alive(d: &Daemon) -> bool {
    d.pid()
        .map(|p| std::path::Path::new(&format!("/proc/{p}")).exists())
        .unwrap_or(false)
}

#[test]
fn wait_for_reader_holds_playback_but_answers_controls_at_once() {
    let d = daemon(&["--wait-for-reader"]);
    let mut fe = connect(&d);
    assert_eq!(fe.set_params(0, 16384, 4096, 2, 5, 7).unwrap(), S_OK);
    assert_eq!(fe.prepare(0).unwrap(), S_OK);
    let data = signal::lcg_bytes(11, 4096 * 4);
    for ch in data.chunks(4096) {
        fe.push_tx(0, ch).unwrap();
    }
    let t0 = Instant::now();
    assert_eq!(fe.start(0).unwrap(), S_OK);
    assert!(
        t0.elapsed() < Duration::from_millis(500),
        "START took {:?}",
        t0.elapsed()
    );

    // No reader: nothing is played (and nothing discarded).
    let early = fe.wait_used(Duration::from_millis(600)).unwrap();
    assert!(
        early.is_empty(),
        "{} buffers completed with no reader",
        early.len()
    );

    // The control queue is answered at once meanwhile (Linux gives up after ~1 s).
    let ctls = fe.ctl_info().unwrap();
    for _ in 0..3 {
        let t = Instant::now();
        assert_eq!(fe.pcm_info().unwrap().len(), 2);
        assert_eq!(
            fe.ctl_read(0, ctls[0].count as usize).unwrap().len(),
            ctls[0].count as usize
        );
        assert!(
            t.elapsed() < Duration::from_millis(500),
            "control requests took {:?}",
            t.elapsed()
        );
    }

    // A reader that connected but did not subscribe does not count.
    let mut tap = TapReader::connect_unsubscribed(&d.tap, T).expect("tap");
    let early = fe.wait_used(Duration::from_millis(300)).unwrap();
    assert!(
        early.is_empty(),
        "an unsubscribed reader released the clock"
    );

    // Subscribing releases it; everything queued is played, from the start.
    tap.subscribe(0, 0).unwrap();
    let tokens_done = fe.wait_used(Duration::from_secs(3)).unwrap();
    let mut n = tokens_done.len();
    let deadline = Instant::now() + Duration::from_secs(3);
    while n < 4 && Instant::now() < deadline {
        n += fe.wait_used(Duration::from_millis(500)).unwrap().len();
    }
    assert_eq!(
        n, 4,
        "held buffers did not complete after a reader subscribed"
    );
    let got = tap.wait_pcm_bytes(0, data.len(), T).unwrap();
    assert!(got == data, "held audio differs");
    let first = tap.history().iter().find_map(|r| match &r.record {
        Record::Pcm { offset, .. } => Some(*offset),
        _ => None,
    });
    assert_eq!(first, Some(0), "held audio starts at offset 0");
}

#[test]
fn sigterm_stops_the_daemon_promptly_and_cleanly() {
    let mut d = daemon(&[]);
    let mut tap = TapReader::connect(&d.tap, 0, 0, T).expect("tap");
    let mut fe = connect(&d);
    assert_eq!(fe.set_params(0, 16384, 4096, 2, 5, 7).unwrap(), S_OK);
    assert_eq!(fe.prepare(0).unwrap(), S_OK);
    for ch in signal::lcg_bytes(12, 4096 * 4).chunks(4096) {
        fe.push_tx(0, ch).unwrap();
    }
    assert_eq!(fe.start(0).unwrap(), S_OK);
    let t = Instant::now();
    let st = d.terminate(Duration::from_secs(3));
    let Some(st) = st else {
        panic!(
            "SIGTERM did not stop the daemon within 3 s\n{}",
            d.log_tail(30)
        );
    };
    assert!(st.success(), "exit status {st}\n{}", d.log_tail(30));
    assert!(t.elapsed() < Duration::from_secs(3));
    assert!(!d.tap.exists(), "the tap socket file was left behind");
    // The reader's connection ends (after whatever was queued for it).
    tap.drain_for(Duration::from_millis(500));
    assert!(
        tap.ended().is_some(),
        "the reader's connection is still open"
    );
    drop(fe);
}
