//! The daemon across connections and readers: QEMU going away and coming back,
//! --wait-for-reader holding the clock (but never the control queue), and a clean exit on
//! SIGTERM.

use std::time::{Duration, Instant};

use dsproxy_testfront::proto::*;
use dsproxy_testfront::tap::pcm_of;
use dsproxy_testfront::{play, signal, Daemon, FrontendOpts, SndFrontend, TapReader};
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
    // the device (GET_VRING_BASE on every ring) and goes away.
    let mut fe = connect(&d);
    tap.wait_for("FRONTEND connected", T, frontend_rec(true))
        .unwrap_or_else(|e| panic!("{e}\n{}", d.log_tail(20)));
    let period = 19_200u32; // 100 ms
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
    assert_eq!(
        rep.still_in_flight[TX_QUEUE], 0,
        "held TX buffers must be returned when the ring stops, or QEMU hangs"
    );
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
