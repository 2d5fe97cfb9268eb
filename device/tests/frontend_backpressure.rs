//! A reader that does not keep up: a normal reader holds the card (the guest waits, nothing
//! is lost); a live reader never does, and is told what it missed with GAP records.

use std::os::unix::net::UnixStream;
use std::time::{Duration, Instant};

use dsproxy_testfront::proto::*;
use dsproxy_testfront::{signal, Daemon, FrontendOpts, SndFrontend};
use dsproxy_wire::record::{Record, SUB_LIVE};
use dsproxy_wire::RecordReader;

const PERIOD: usize = 4096;
const PERIODS: usize = 500; // 2 MB, 10.7 s of audio: far more than the high-water mark

fn daemon(args: &[&str]) -> Daemon {
    Daemon::dsproxy(env!("CARGO_BIN_EXE_dsproxy-device"), args).expect("start dsproxy-device")
}

/// Subscribes on a raw connection and then reads nothing.
fn stalled_reader(d: &Daemon, flags: u32) -> UnixStream {
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut s = loop {
        match UnixStream::connect(&d.tap) {
            Ok(s) => break s,
            Err(e) if Instant::now() < deadline => {
                let _ = e;
                std::thread::sleep(Duration::from_millis(20));
            }
            Err(e) => panic!("tap: {e}"),
        }
    };
    let before = subscriptions(d);
    let sub = Record::Subscribe { flags, streams: 0 }.to_bytes().unwrap();
    std::io::Write::write_all(&mut s, &sub).unwrap();
    // Only a subscribed reader holds the card: wait until the tap has taken the SUBSCRIBE,
    // or a loaded machine lets the stream run before there is anyone to hold it.
    while subscriptions(d) == before {
        assert!(
            Instant::now() < deadline,
            "the tap never took the SUBSCRIBE"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    s
}

fn subscriptions(d: &Daemon) -> usize {
    d.log_text()
        .lines()
        .filter(|l| l.contains("tap: reader") && l.contains("subscribed"))
        .count()
}

/// Reads records until RELEASE of stream 0; returns them.
fn read_until_release(s: UnixStream) -> Vec<Record> {
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut r = RecordReader::new(s);
    let mut out = Vec::new();
    loop {
        match r.next_record() {
            Ok(Some(rec)) => {
                let end = matches!(rec, Record::Release { stream: 0, .. });
                out.push(rec);
                if end {
                    return out;
                }
            }
            Ok(None) => panic!("tap closed before RELEASE"),
            Err(e) => panic!("tap: {e}"),
        }
    }
}

fn start_stream(d: &Daemon) -> SndFrontend {
    let mut fe = SndFrontend::connect(&d.socket, FrontendOpts::default())
        .unwrap_or_else(|e| panic!("connect: {e}\n{}", d.log_tail(30)));
    assert_eq!(
        fe.set_params(0, (PERIOD * 4) as u32, PERIOD as u32, 2, 5, 7)
            .unwrap(),
        S_OK
    );
    assert_eq!(fe.prepare(0).unwrap(), S_OK);
    fe
}

/// Keeps 4 periods in flight until `until` or the data is done; returns buffers completed.
fn pump(fe: &mut SndFrontend, data: &[u8], next: &mut usize, done: &mut usize, until: Instant) {
    while *done < PERIODS && Instant::now() < until {
        while *next < PERIODS && *next - *done < 4 {
            fe.push_tx(0, &data[*next * PERIOD..(*next + 1) * PERIOD])
                .unwrap();
            *next += 1;
        }
        for c in fe.wait_used(Duration::from_millis(50)).unwrap() {
            assert_eq!(c.status, S_OK);
            *done += 1;
        }
    }
}

#[test]
fn a_stalled_reader_holds_the_card_and_loses_nothing() {
    let d = daemon(&["--pacing", "none", "--high-water", "65536"]);
    let reader = stalled_reader(&d, 0);
    let mut fe = start_stream(&d);
    let data = signal::lcg_bytes(41, PERIOD * PERIODS);
    let (mut next, mut done) = (0, 0);
    for _ in 0..4 {
        fe.push_tx(0, &data[next * PERIOD..(next + 1) * PERIOD])
            .unwrap();
        next += 1;
    }
    assert_eq!(fe.start(0).unwrap(), S_OK);
    pump(
        &mut fe,
        &data,
        &mut next,
        &mut done,
        Instant::now() + Duration::from_millis(800),
    );
    assert!(
        done < PERIODS / 2,
        "{done} of {PERIODS} buffers completed while the only reader read nothing"
    );
    // Control requests are still answered while the card waits for the reader.
    let t = Instant::now();
    assert_eq!(fe.pcm_info().unwrap().len(), 2);
    assert!(t.elapsed() < Duration::from_millis(500));

    // The reader wakes up: the card goes on, and the reader gets every byte.
    let th = std::thread::spawn(move || read_until_release(reader));
    pump(
        &mut fe,
        &data,
        &mut next,
        &mut done,
        Instant::now() + Duration::from_secs(8),
    );
    assert_eq!(
        done, PERIODS,
        "playback did not finish once the reader read"
    );
    assert_eq!(fe.stop(0).unwrap(), S_OK);
    assert_eq!(fe.release(0).unwrap(), S_OK);
    let recs = th.join().unwrap();
    assert!(
        !recs.iter().any(|r| matches!(r, Record::Gap { .. })),
        "a normal reader was sent GAPs"
    );
    let got = dsproxy_testfront::tap::pcm_of(recs.iter(), 0).unwrap();
    assert_eq!(got.len(), data.len());
    assert!(got == data, "PCM differs");
}

#[test]
fn a_live_reader_never_holds_the_card_and_is_told_what_it_missed() {
    let d = daemon(&["--pacing", "none", "--high-water", "65536"]);
    let reader = stalled_reader(&d, SUB_LIVE);
    let mut fe = start_stream(&d);
    let data = signal::lcg_bytes(42, PERIOD * PERIODS);
    let (mut next, mut done) = (0, 0);
    assert_eq!(fe.start(0).unwrap(), S_OK);
    pump(
        &mut fe,
        &data,
        &mut next,
        &mut done,
        Instant::now() + Duration::from_secs(5),
    );
    assert_eq!(
        done, PERIODS,
        "a live reader that reads nothing held the card"
    );
    assert_eq!(fe.stop(0).unwrap(), S_OK);
    assert_eq!(fe.release(0).unwrap(), S_OK);

    let recs = read_until_release(reader);
    // PCM and GAP records of the stream tile [0, total) without hole or overlap, and the
    // PCM that did arrive is the right audio.
    let mut at = 0u64;
    let mut gaps = 0;
    for r in &recs {
        match r {
            Record::Pcm {
                stream: 0,
                offset,
                data: pcm,
                ..
            } => {
                assert_eq!(*offset, at, "PCM at {offset}, expected {at}");
                let o = *offset as usize;
                assert!(pcm[..] == data[o..o + pcm.len()], "PCM at {o} differs");
                at += pcm.len() as u64;
            }
            Record::Gap {
                stream: 0,
                offset,
                bytes,
                ..
            } => {
                assert_eq!(*offset, at, "GAP at {offset}, expected {at}");
                at += bytes;
                gaps += 1;
            }
            _ => {}
        }
    }
    assert_eq!(at, data.len() as u64, "PCM + GAP cover the whole stream");
    assert!(
        gaps > 0,
        "a reader that read nothing for 2 MB was not told of a gap"
    );
}
