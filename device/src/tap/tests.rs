//! The tap end to end: a real `Tap` on a temporary socket, plain socket clients speaking the
//! protocol through dsproxy-wire's `RecordReader`.

use std::io::{ErrorKind, Read, Write};
use std::net::TcpStream;
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use dsproxy_wire::record::{
    ControlDesc, ControlOrigin, Direction, Hello, NoticeLevel, Params, Record, StreamDesc,
    MAX_PCM_CHUNK, SUB_LIVE, SUB_NO_PACING,
};
use dsproxy_wire::{ReadError, RecordReader};

use super::*;

const WAIT: Duration = Duration::from_secs(10);

/// A temporary directory for one test's socket, removed afterwards.
struct TestDir(PathBuf);

impl TestDir {
    fn new() -> TestDir {
        static N: AtomicUsize = AtomicUsize::new(0);
        let dir = std::env::temp_dir().join(format!(
            "dsproxy-tap-test-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&dir).expect("create test dir");
        TestDir(dir)
    }

    fn sock(&self) -> PathBuf {
        self.0.join("tap.sock")
    }
}

impl Drop for TestDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn test_hello() -> Hello {
    Hello {
        version: dsproxy_wire::record::PROTOCOL_VERSION,
        time_ns: 1_000,
        name: "dsproxy test card".into(),
        jacks: 2,
        chmaps: 2,
        streams: vec![
            StreamDesc {
                id: 0,
                direction: Direction::Output,
                channels_min: 1,
                channels_max: 8,
                formats: 1 << 5,
                rates: 1 << 7,
            },
            StreamDesc {
                id: 1,
                direction: Direction::Input,
                channels_min: 1,
                channels_max: 2,
                formats: 1 << 5,
                rates: 1 << 7,
            },
        ],
        controls: vec![ControlDesc {
            id: 0,
            name: "Master Playback Volume".into(),
            index: 0,
            role: 1,
            ctype: 1,
            count: 2,
            min: 0,
            max: 100,
            step: 1,
            db_min: -5000,
            db_step: 50,
        }],
    }
}

fn config(dir: &TestDir, high_water: usize, inject_limit: usize) -> TapConfig {
    TapConfig {
        unix_path: dir.sock(),
        tcp: None,
        tcp_control: false,
        hello: test_hello(),
        high_water,
        inject_limit,
        unpaced: false,
    }
}

fn start(dir: &TestDir, high_water: usize, inject_limit: usize) -> Tap {
    Tap::start(config(dir, high_water, inject_limit)).expect("tap starts")
}

fn params(stream: u32) -> Record {
    Record::Params(Params {
        stream,
        buffer_bytes: 16384,
        period_bytes: 4096,
        features: 0,
        channels: 2,
        format: 5,
        rate: 7,
    })
}

/// A reader connection.
struct Client<S: Read + Write> {
    rr: RecordReader<S>,
}

impl Client<UnixStream> {
    fn connect(path: &Path) -> Self {
        let s = UnixStream::connect(path).expect("connect to tap");
        s.set_read_timeout(Some(WAIT)).expect("timeout");
        Client {
            rr: RecordReader::new(s),
        }
    }
}

impl<S: Read + Write> Client<S> {
    fn send(&mut self, rec: &Record) {
        let b = rec.to_bytes().expect("encode");
        self.rr.get_mut().write_all(&b).expect("send to tap");
    }

    fn next(&mut self) -> Record {
        match self.rr.next_record() {
            Ok(Some(r)) => r,
            other => panic!("expected a record, got {other:?}"),
        }
    }

    fn hello(&mut self) -> Hello {
        match self.next() {
            Record::Hello(h) => h,
            other => panic!("expected HELLO, got {other:?}"),
        }
    }

    /// Reads HELLO, subscribes, and returns the snapshot records (without SNAPSHOT_END).
    fn subscribe(&mut self, flags: u32, streams: u64) -> Vec<Record> {
        self.hello();
        self.send(&Record::Subscribe { flags, streams });
        let mut snap = Vec::new();
        loop {
            match self.next() {
                Record::SnapshotEnd => return snap,
                r => snap.push(r),
            }
        }
    }

    /// Reads PCM records from offset 0 up to `end`: each follows the last and carries the
    /// test pattern; anything else fails.
    fn expect_pattern_up_to(&mut self, end: u64) {
        self.expect_pattern_from(0, end);
    }

    /// [`expect_pattern_up_to`](Self::expect_pattern_up_to), from offset `from` on.
    fn expect_pattern_from(&mut self, from: u64, end: u64) {
        let mut next = from;
        while next < end {
            match self.next() {
                Record::Pcm {
                    offset: o, data, ..
                } => {
                    assert_eq!(o, next);
                    check_pattern(o, &data);
                    next += data.len() as u64;
                }
                other => panic!("expected PCM, got {other:?}"),
            }
        }
    }

    /// Whether the tap closed this connection (EOF or reset) within WAIT.
    fn closed_by_tap(&mut self) -> bool {
        loop {
            match self.rr.next_record() {
                Ok(None) => return true,
                Ok(Some(_)) => continue,
                Err(ReadError::Io(e))
                    if matches!(e.kind(), ErrorKind::ConnectionReset | ErrorKind::BrokenPipe) =>
                {
                    return true
                }
                Err(ReadError::TruncatedStream) => return true,
                Err(e) => panic!("expected the tap to close the connection, got {e}"),
            }
        }
    }
}

fn wait_until(mut cond: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + WAIT;
    while Instant::now() < deadline {
        if cond() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    cond()
}

/// The reader requests the card takes next, waiting (up to `WAIT`) until there are some.
fn requests_arrive(h: &TapHandle) -> Vec<TapRequest> {
    let mut got = Vec::new();
    assert!(
        wait_until(|| {
            got.extend(h.take_requests());
            !got.is_empty()
        }),
        "no request reached the card"
    );
    got
}

/// Waits until the notifier fd is readable (or `WAIT` passes).
fn notified(h: &TapHandle) -> bool {
    let mut pfd = libc::pollfd {
        fd: h.notifier_fd(),
        events: libc::POLLIN,
        revents: 0,
    };
    // SAFETY: one valid pollfd.
    let n = unsafe { libc::poll(&mut pfd, 1, WAIT.as_millis() as i32) };
    n == 1
}

/// A non-periodic test signal: byte `o` of a stream.
fn pattern(o: u64) -> u8 {
    (o.wrapping_mul(7) ^ (o >> 9) ^ (o >> 17)) as u8
}

fn pattern_bytes(offset: u64, len: usize) -> Vec<u8> {
    (0..len as u64).map(|i| pattern(offset + i)).collect()
}

fn check_pattern(offset: u64, data: &[u8]) {
    for (i, &b) in data.iter().enumerate() {
        let o = offset + i as u64;
        assert_eq!(b, pattern(o), "PCM byte at offset {o} differs");
    }
}

#[test]
fn hello_then_subscribe_then_snapshot_then_live() {
    let dir = TestDir::new();
    let tap = start(&dir, 1 << 20, 1 << 16);
    let h = tap.handle();
    h.publish(&Record::Frontend {
        connected: true,
        time_ns: 5,
    });
    h.publish(&Record::Control {
        id: 0,
        origin: ControlOrigin::Guest,
        values: vec![80, 70],
    });
    h.publish(&params(0));
    h.publish(&Record::Prepare {
        stream: 0,
        time_ns: 10,
    });

    let mut c = Client::connect(&dir.sock());
    let hello = c.hello();
    let want = test_hello();
    assert_eq!(hello.name, want.name);
    assert_eq!(hello.streams, want.streams);
    assert_eq!(hello.controls, want.controls);
    assert!(hello.time_ns >= want.time_ns);

    // Before SUBSCRIBE the reader gets nothing and does not count.
    h.publish(&Record::Start {
        stream: 0,
        time_ns: 20,
    });
    c.rr.get_ref()
        .set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    match c.rr.next_record() {
        Err(ReadError::Io(e))
            if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
        other => panic!("nothing may arrive before SUBSCRIBE, got {other:?}"),
    }
    assert!(!h.has_readers());
    c.rr.get_ref().set_read_timeout(Some(WAIT)).unwrap();

    c.send(&Record::Subscribe {
        flags: 0,
        streams: 0,
    });
    let expected = [
        Record::Frontend {
            connected: true,
            time_ns: 5,
        },
        params(0),
        Record::Prepare {
            stream: 0,
            time_ns: 10,
        },
        Record::Start {
            stream: 0,
            time_ns: 20,
        },
        Record::Control {
            id: 0,
            origin: ControlOrigin::Initial,
            values: vec![80, 70],
        },
        Record::SnapshotEnd,
    ];
    for e in expected {
        assert_eq!(c.next(), e);
    }
    assert!(wait_until(|| h.has_readers()));

    h.publish(&Record::Stop {
        stream: 0,
        time_ns: 30,
        drained: true,
        discarded_bytes: 0,
    });
    h.publish_pcm(0, 0, 40, &[1, 2, 3, 4]);
    assert!(matches!(c.next(), Record::Stop { drained: true, .. }));
    assert_eq!(
        c.next(),
        Record::Pcm {
            stream: 0,
            offset: 0,
            time_ns: 40,
            data: vec![1, 2, 3, 4]
        }
    );
    tap.shutdown();
}

#[test]
fn reader_joining_mid_stream_gets_the_state_first() {
    let dir = TestDir::new();
    let tap = start(&dir, 1 << 20, 1 << 16);
    let h = tap.handle();
    h.publish(&params(0));
    h.publish(&Record::Prepare {
        stream: 0,
        time_ns: 1,
    });
    h.publish(&Record::Start {
        stream: 0,
        time_ns: 2,
    });
    // No reader yet: discarded.
    h.publish_pcm(0, 0, 3, &pattern_bytes(0, 1000));

    let mut a = Client::connect(&dir.sock());
    let snap = a.subscribe(0, 0);
    assert_eq!(
        snap,
        vec![
            params(0),
            Record::Prepare {
                stream: 0,
                time_ns: 1
            },
            Record::Start {
                stream: 0,
                time_ns: 2
            },
        ]
    );
    h.publish_pcm(0, 1000, 4, &pattern_bytes(1000, 500));
    match a.next() {
        Record::Pcm {
            stream: 0,
            offset: 1000,
            data,
            ..
        } => check_pattern(1000, &data),
        other => panic!("expected PCM, got {other:?}"),
    }

    // Stopped (paused) stream: the replay ends in the same state.
    let stop = Record::Stop {
        stream: 0,
        time_ns: 5,
        drained: false,
        discarded_bytes: 4096,
    };
    h.publish(&stop);
    assert_eq!(a.next(), stop);
    let mut b = Client::connect(&dir.sock());
    let snap = b.subscribe(0, 0);
    assert_eq!(snap.len(), 4);
    assert_eq!(snap[0], params(0));
    assert!(matches!(snap[1], Record::Prepare { .. }));
    assert!(matches!(snap[2], Record::Start { .. }));
    assert_eq!(snap[3], stop);

    // Released: only the parameters remain.
    h.publish(&Record::Release {
        stream: 0,
        time_ns: 6,
    });
    assert!(matches!(a.next(), Record::Release { .. }));
    let mut c = Client::connect(&dir.sock());
    assert_eq!(c.subscribe(0, 0), vec![params(0)]);
    tap.shutdown();
}

#[test]
fn two_readers_get_identical_streams() {
    let dir = TestDir::new();
    let tap = start(&dir, 4 << 20, 1 << 16);
    let h = tap.handle();
    let mut a = Client::connect(&dir.sock());
    let mut b = Client::connect(&dir.sock());
    a.subscribe(0, 0);
    b.subscribe(0, 0);

    h.publish(&params(0));
    h.publish(&Record::Prepare {
        stream: 0,
        time_ns: 1,
    });
    h.publish(&Record::Start {
        stream: 0,
        time_ns: 2,
    });
    let mut offset = 0u64;
    for i in 0..200u64 {
        let len = 100 + (i as usize * 37) % 5000;
        h.publish_pcm(0, offset, 10 + i, &pattern_bytes(offset, len));
        offset += len as u64;
        if i == 100 {
            h.publish(&Record::Control {
                id: 0,
                origin: ControlOrigin::Guest,
                values: vec![1, 2],
            });
        }
    }
    h.publish(&Record::Stop {
        stream: 0,
        time_ns: 999,
        drained: true,
        discarded_bytes: 0,
    });

    let read_all = |c: &mut Client<UnixStream>| {
        let mut v = Vec::new();
        loop {
            let r = c.next();
            let end = matches!(r, Record::Stop { .. });
            v.push(r);
            if end {
                return v;
            }
        }
    };
    let ra = read_all(&mut a);
    let rb = read_all(&mut b);
    assert_eq!(ra, rb);
    let mut next = 0u64;
    for r in &ra {
        if let Record::Pcm {
            offset: o, data, ..
        } = r
        {
            assert_eq!(*o, next);
            check_pattern(*o, data);
            next += data.len() as u64;
        }
    }
    assert_eq!(next, offset);
    tap.shutdown();
}

#[test]
fn slow_reader_holds_the_card_until_it_reads() {
    const HW: usize = 64 * 1024;
    const CHUNK: usize = 16 * 1024;
    let dir = TestDir::new();
    let tap = start(&dir, HW, 1 << 16);
    let h = tap.handle();
    let mut c = Client::connect(&dir.sock());
    c.subscribe(0, 0);
    assert!(h.can_accept());

    // Publish like the worker does while the reader does not read, until the card is held.
    let mut offset = 0u64;
    let deadline = Instant::now() + WAIT;
    while h.can_accept() && Instant::now() < deadline {
        h.publish_pcm(0, offset, offset, &pattern_bytes(offset, CHUNK));
        offset += CHUNK as u64;
        std::thread::sleep(Duration::from_millis(2));
    }
    assert!(
        !h.can_accept(),
        "a reader that does not read must hold the card"
    );
    // It stays held: nothing drains.
    std::thread::sleep(Duration::from_millis(100));
    assert!(!h.can_accept());
    h.clear_notifier();

    // The reader catches up: every byte arrives, in order, and the card is released.
    c.expect_pattern_up_to(offset);
    assert!(
        notified(&h),
        "the notifier must fire when the card may go on"
    );
    assert!(wait_until(|| h.can_accept()));
    tap.shutdown();
}

#[test]
fn live_reader_gets_exact_gaps_and_never_holds_the_card() {
    const HW: usize = 64 * 1024;
    const CHUNK: usize = 4096;
    const CHUNKS: u64 = 2000;
    let dir = TestDir::new();
    let tap = start(&dir, HW, 1 << 16);
    let h = tap.handle();
    let mut c = Client::connect(&dir.sock());
    c.subscribe(SUB_LIVE, 0);
    assert!(wait_until(|| h.has_readers()));

    for i in 0..CHUNKS {
        let offset = i * CHUNK as u64;
        h.publish_pcm(0, offset, offset * 1000, &pattern_bytes(offset, CHUNK));
        assert!(h.can_accept(), "a live reader never holds the card");
    }
    let stop = Record::Stop {
        stream: 0,
        time_ns: 1,
        drained: true,
        discarded_bytes: 0,
    };
    h.publish(&stop);
    std::thread::sleep(Duration::from_millis(50));
    assert!(h.can_accept());

    // PCM and GAP records tile the stream exactly.
    let total = CHUNKS * CHUNK as u64;
    let mut next = 0u64;
    let mut gaps = Vec::new();
    loop {
        match c.next() {
            Record::Pcm { offset, data, .. } => {
                assert_eq!(offset, next, "PCM offset");
                check_pattern(offset, &data);
                next += data.len() as u64;
            }
            Record::Gap {
                stream,
                offset,
                bytes,
                time_ns,
            } => {
                assert_eq!(stream, 0);
                assert_eq!(offset, next, "GAP offset");
                assert_eq!(
                    time_ns,
                    offset * 1000,
                    "GAP time is the first dropped byte's"
                );
                assert!(bytes > 0);
                next += bytes;
                gaps.push(bytes);
            }
            r if r == stop => break,
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!(next, total);
    assert!(
        !gaps.is_empty(),
        "a reader that does not read must miss audio"
    );
    assert!(
        gaps.len() <= 2,
        "consecutive drops are one GAP, got {} GAPs",
        gaps.len()
    );
    tap.shutdown();
}

#[test]
fn set_control_reaches_the_worker() {
    let dir = TestDir::new();
    let tap = start(&dir, 1 << 20, 1 << 16);
    let h = tap.handle();
    let mut c = Client::connect(&dir.sock());
    c.subscribe(0, 0);
    h.clear_notifier();
    c.send(&Record::SetControl {
        id: 0,
        values: vec![10, 20],
    });
    assert!(notified(&h));
    let got = requests_arrive(&h);
    assert_eq!(
        got,
        vec![TapRequest::SetControl {
            id: 0,
            values: vec![10, 20]
        }]
    );
    assert!(h.take_requests().is_empty());
    tap.shutdown();
}

#[test]
fn injected_audio_comes_out_in_order_under_flow_control() {
    const LIMIT: usize = 4096;
    const RECORDS: usize = 200;
    const LEN: usize = 1000;
    let dir = TestDir::new();
    let tap = start(&dir, 1 << 20, LIMIT);
    let h = tap.handle();
    let mut c = Client::connect(&dir.sock());
    c.subscribe(0, 0);
    let mut w = c.rr.get_ref().try_clone().unwrap();
    let writer = std::thread::spawn(move || {
        for i in 0..RECORDS {
            let off = (i * LEN) as u64;
            let rec = Record::Inject {
                stream: 1,
                data: pattern_bytes(off, LEN),
            };
            w.write_all(&rec.to_bytes().unwrap()).unwrap();
        }
    });

    let mut got = Vec::with_capacity(RECORDS * LEN);
    let mut buf = [0u8; 700];
    let deadline = Instant::now() + WAIT;
    while got.len() < RECORDS * LEN && Instant::now() < deadline {
        assert!(
            h.shared.inject.buffered(1) <= LIMIT,
            "inject buffer over its limit"
        );
        let n = h.read_inject(1, &mut buf);
        got.extend_from_slice(&buf[..n]);
        if n == 0 {
            std::thread::sleep(Duration::from_millis(1));
        }
    }
    writer.join().unwrap();
    assert_eq!(got.len(), RECORDS * LEN, "every injected byte arrives");
    check_pattern(0, &got);
    assert_eq!(h.read_inject(1, &mut buf), 0);
    assert_eq!(
        h.read_inject(0, &mut buf),
        0,
        "nothing for the output stream"
    );
    tap.shutdown();
}

#[test]
fn injector_that_hangs_up_while_paused_still_delivers() {
    const LIMIT: usize = 2048;
    const TOTAL: usize = 64 * 1024;
    let dir = TestDir::new();
    let tap = start(&dir, 1 << 20, LIMIT);
    let h = tap.handle();
    let mut c = Client::connect(&dir.sock());
    c.subscribe(0, 0);
    // Records the reader never reads: its close then resets the connection (EPOLLERR on the
    // tap's side), the harder case.
    h.publish(&params(0));
    h.publish_pcm(0, 0, 0, &[0; 4096]);
    std::thread::sleep(Duration::from_millis(20));
    for i in 0..TOTAL / 1024 {
        c.send(&Record::Inject {
            stream: 1,
            data: pattern_bytes((i * 1024) as u64, 1024),
        });
    }
    drop(c);
    std::thread::sleep(Duration::from_millis(50));
    let mut got = Vec::new();
    let mut buf = [0u8; 512];
    let deadline = Instant::now() + WAIT;
    while got.len() < TOTAL && Instant::now() < deadline {
        let n = h.read_inject(1, &mut buf);
        got.extend_from_slice(&buf[..n]);
        if n == 0 {
            std::thread::sleep(Duration::from_millis(1));
        }
    }
    assert_eq!(got.len(), TOTAL);
    check_pattern(0, &got);
    assert!(wait_until(
        || h.shared.connected.load(Ordering::Acquire) == 0
    ));
    tap.shutdown();
}

#[test]
fn misbehaving_readers_are_dropped_without_affecting_others() {
    let dir = TestDir::new();
    let tap = start(&dir, 1 << 20, 1 << 16);
    let h = tap.handle();
    let mut good = Client::connect(&dir.sock());
    good.subscribe(0, 0);

    // Unknown kind.
    let mut bad = Client::connect(&dir.sock());
    bad.hello();
    bad.rr
        .get_mut()
        .write_all(&[0xff, 0xff, 0, 0, 4, 0, 0, 0, 1, 2, 3, 4])
        .unwrap();
    assert!(bad.closed_by_tap());

    // A length over the limit.
    let mut bad = Client::connect(&dir.sock());
    bad.hello();
    let mut hdr = Vec::new();
    hdr.extend_from_slice(&dsproxy_wire::record::kind::INJECT.to_le_bytes());
    hdr.extend_from_slice(&0u16.to_le_bytes());
    hdr.extend_from_slice(&u32::MAX.to_le_bytes());
    bad.rr.get_mut().write_all(&hdr).unwrap();
    assert!(bad.closed_by_tap());

    // A truncated SUBSCRIBE payload.
    let mut bad = Client::connect(&dir.sock());
    bad.hello();
    let mut rec = Vec::new();
    rec.extend_from_slice(&dsproxy_wire::record::kind::SUBSCRIBE.to_le_bytes());
    rec.extend_from_slice(&[0, 0, 3, 0, 0, 0, 1, 2, 3]);
    bad.rr.get_mut().write_all(&rec).unwrap();
    assert!(bad.closed_by_tap());

    // A request before SUBSCRIBE.
    let mut bad = Client::connect(&dir.sock());
    bad.hello();
    bad.send(&Record::SetControl {
        id: 0,
        values: vec![1],
    });
    assert!(bad.closed_by_tap());

    // A device record sent by a reader.
    let mut bad = Client::connect(&dir.sock());
    bad.subscribe(0, 0);
    bad.send(&Record::SnapshotEnd);
    assert!(bad.closed_by_tap());

    // INJECT for an output stream, SET_CONTROL for a control that does not exist.
    let mut bad = Client::connect(&dir.sock());
    bad.subscribe(0, 0);
    bad.send(&Record::Inject {
        stream: 0,
        data: vec![0; 8],
    });
    assert!(bad.closed_by_tap());
    let mut bad = Client::connect(&dir.sock());
    bad.subscribe(0, 0);
    bad.send(&Record::SetControl {
        id: 99,
        values: vec![1],
    });
    assert!(bad.closed_by_tap());

    assert!(wait_until(
        || h.shared.connected.load(Ordering::Acquire) == 1
    ));
    assert!(h.take_requests().is_empty());
    h.publish(&params(0));
    assert_eq!(good.next(), params(0));
    tap.shutdown();
}

#[test]
fn stream_mask_selects_records() {
    let dir = TestDir::new();
    let tap = start(&dir, 1 << 20, 1 << 16);
    let h = tap.handle();
    h.publish(&params(0));
    h.publish(&params(1));
    let mut c = Client::connect(&dir.sock());
    assert_eq!(c.subscribe(0, 1 << 1), vec![params(1)]);
    h.publish_pcm(0, 0, 0, &[1; 8]);
    h.publish_pcm(1, 0, 0, &[2; 8]);
    h.publish(&Record::Xrun {
        stream: 0,
        time_ns: 1,
        duration_ns: 2,
    });
    h.publish(&Record::Control {
        id: 0,
        origin: ControlOrigin::Reader,
        values: vec![3, 3],
    });
    assert!(matches!(c.next(), Record::Pcm { stream: 1, .. }));
    assert!(matches!(
        c.next(),
        Record::Control {
            origin: ControlOrigin::Reader,
            ..
        }
    ));
    tap.shutdown();
}

#[test]
fn flags_follow_subscriptions_and_disconnects() {
    let dir = TestDir::new();
    let tap = start(&dir, 1 << 20, 1 << 16);
    let h = tap.handle();
    assert!(!h.has_readers() && !h.no_pacing_requested());
    let mut plain = Client::connect(&dir.sock());
    plain.hello();
    std::thread::sleep(Duration::from_millis(50));
    assert!(!h.has_readers(), "connected is not subscribed");

    h.clear_notifier();
    let mut fast = Client::connect(&dir.sock());
    fast.subscribe(SUB_NO_PACING, 0);
    assert!(notified(&h));
    assert!(wait_until(|| h.has_readers() && h.no_pacing_requested()));

    h.clear_notifier();
    drop(fast);
    assert!(notified(&h));
    assert!(wait_until(|| !h.has_readers() && !h.no_pacing_requested()));
    drop(plain);
    tap.shutdown();
}

#[test]
fn a_slow_reader_that_leaves_releases_the_card() {
    const HW: usize = 32 * 1024;
    let dir = TestDir::new();
    let tap = start(&dir, HW, 1 << 16);
    let h = tap.handle();
    let mut c = Client::connect(&dir.sock());
    c.subscribe(0, 0);
    let mut offset = 0u64;
    while h.can_accept() && offset < 64 << 20 {
        h.publish_pcm(0, offset, 0, &[0x55; 8192]);
        offset += 8192;
        std::thread::sleep(Duration::from_millis(1));
    }
    assert!(!h.can_accept());
    h.clear_notifier();
    drop(c);
    assert!(notified(&h));
    assert!(wait_until(|| h.can_accept() && !h.has_readers()));
    tap.shutdown();
}

#[test]
fn unix_socket_is_private() {
    let dir = TestDir::new();
    let tap = start(&dir, 1 << 20, 1 << 16);
    let m = std::fs::symlink_metadata(dir.sock()).unwrap();
    assert!(m.file_type().is_socket());
    assert_eq!(m.permissions().mode() & 0o777, 0o600);
    tap.shutdown();
}

#[test]
fn tcp_readers_work_on_an_ephemeral_port() {
    let dir = TestDir::new();
    let mut cfg = config(&dir, 1 << 20, 1 << 16);
    cfg.tcp = Some("127.0.0.1:0".parse().unwrap());
    let tap = Tap::start(cfg).unwrap();
    let addr = tap.tcp_addr().expect("bound TCP address");
    assert_ne!(addr.port(), 0);
    let s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(WAIT)).unwrap();
    let mut c = Client {
        rr: RecordReader::new(s),
    };
    c.subscribe(0, 0);
    let h = tap.handle();
    h.publish_pcm(0, 0, 7, &pattern_bytes(0, 3000));
    match c.next() {
        Record::Pcm { data, .. } => check_pattern(0, &data),
        other => panic!("expected PCM, got {other:?}"),
    }
    tap.shutdown();
}

/// A TCP reader of a tap started with `tcp_control` = `allowed`, subscribed to everything.
fn tcp_reader(dir: &TestDir, allowed: bool) -> (Tap, Client<TcpStream>) {
    let mut cfg = config(dir, 1 << 20, 1 << 16);
    cfg.tcp = Some("127.0.0.1:0".parse().unwrap());
    cfg.tcp_control = allowed;
    let tap = Tap::start(cfg).unwrap();
    let s = TcpStream::connect(tap.tcp_addr().expect("bound TCP address")).unwrap();
    s.set_read_timeout(Some(WAIT)).unwrap();
    let mut c = Client {
        rr: RecordReader::new(s),
    };
    c.subscribe(0, 0);
    (tap, c)
}

#[test]
fn tcp_readers_only_listen_and_are_told_so() {
    let dir = TestDir::new();
    let (tap, mut c) = tcp_reader(&dir, false);
    let h = tap.handle();
    for _ in 0..3 {
        c.send(&Record::SetControl {
            id: 0,
            values: vec![10, 20],
        });
        c.send(&Record::Inject {
            stream: 1,
            data: vec![1, 2, 3, 4],
        });
    }
    // One NOTICE says why, whatever the number of refused requests.
    match c.next() {
        Record::Notice { level, text, .. } => {
            assert_eq!(level, NoticeLevel::Error);
            assert_eq!(text, super::TCP_LISTEN_ONLY);
        }
        other => panic!("expected the listen-only NOTICE, got {other:?}"),
    }
    // Still connected and served: the next record is what the card publishes.
    h.publish_pcm(0, 0, 7, &pattern_bytes(0, 100));
    match c.next() {
        Record::Pcm { data, .. } => check_pattern(0, &data),
        other => panic!("expected PCM after the refusals, got {other:?}"),
    }
    assert!(h.take_requests().is_empty(), "a TCP reader set a control");
    let mut buf = [0u8; 16];
    assert_eq!(h.read_inject(1, &mut buf), 0, "a TCP reader injected audio");
    // A unix reader of the same tap may.
    let mut u = Client::connect(&dir.sock());
    u.subscribe(0, 0);
    u.send(&Record::SetControl {
        id: 0,
        values: vec![1, 2],
    });
    assert!(wait_until(|| !h.take_requests().is_empty()));
    tap.shutdown();
}

#[test]
fn tcp_readers_may_control_with_allow_tcp_control() {
    let dir = TestDir::new();
    let (tap, mut c) = tcp_reader(&dir, true);
    let h = tap.handle();
    c.send(&Record::SetControl {
        id: 0,
        values: vec![10, 20],
    });
    c.send(&Record::Inject {
        stream: 1,
        data: vec![1, 2, 3, 4],
    });
    let got = requests_arrive(&h);
    assert_eq!(
        got,
        vec![TapRequest::SetControl {
            id: 0,
            values: vec![10, 20]
        }]
    );
    let mut buf = [0u8; 16];
    assert!(wait_until(|| h.shared.inject.buffered(1) == 4));
    assert_eq!(h.read_inject(1, &mut buf), 4);
    tap.shutdown();
}

#[test]
fn shutdown_flushes_and_removes_the_socket_file() {
    let dir = TestDir::new();
    let tap = start(&dir, 4 << 20, 1 << 16);
    let h = tap.handle();
    let mut c = Client::connect(&dir.sock());
    c.subscribe(0, 0);
    for i in 0..10u64 {
        h.publish_pcm(0, i * 1000, 0, &pattern_bytes(i * 1000, 1000));
    }
    let t = Instant::now();
    tap.shutdown();
    assert!(t.elapsed() < Duration::from_secs(3), "shutdown is prompt");
    assert!(!dir.sock().exists(), "socket file removed");
    let mut next = 0;
    loop {
        match c.rr.next_record() {
            Ok(Some(Record::Pcm { offset, data, .. })) => {
                assert_eq!(offset, next);
                check_pattern(offset, &data);
                next += data.len() as u64;
            }
            Ok(None) => break,
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!(
        next, 10_000,
        "what was published before shutdown is delivered"
    );
    // The handle outlives the tap harmlessly.
    h.publish_pcm(0, 0, 0, &[1; 4]);
    h.publish(&params(0));
    assert!(!h.has_readers());
}

#[test]
fn shutdown_is_prompt_with_a_reader_that_never_reads() {
    let dir = TestDir::new();
    let tap = start(&dir, 1 << 20, 1 << 16);
    let h = tap.handle();
    let mut c = Client::connect(&dir.sock());
    c.subscribe(0, 0);
    for i in 0..64u64 {
        h.publish_pcm(0, i * 65536, 0, &[0; 65536]);
    }
    std::thread::sleep(Duration::from_millis(50));
    let t = Instant::now();
    drop(tap);
    assert!(t.elapsed() < Duration::from_secs(3), "shutdown is prompt");
    assert!(!dir.sock().exists());
}

#[test]
fn stale_socket_is_replaced_but_a_live_one_is_refused() {
    let dir = TestDir::new();
    // A socket file nobody listens on any more.
    drop(UnixListener::bind(dir.sock()).unwrap());
    assert!(dir.sock().exists());
    let tap = start(&dir, 1 << 20, 1 << 16);

    match Tap::start(config(&dir, 1 << 20, 1 << 16)) {
        Err(TapError::Bind { source, .. }) => assert_eq!(source.kind(), ErrorKind::AddrInUse),
        Err(e) => panic!("wrong error: {e}"),
        Ok(_) => panic!("a second tap must not take over a live socket"),
    }
    // The first tap still serves.
    let mut c = Client::connect(&dir.sock());
    c.subscribe(0, 0);
    tap.shutdown();

    // A path that is not a socket is never replaced.
    std::fs::write(dir.sock(), b"precious").unwrap();
    assert!(matches!(
        Tap::start(config(&dir, 1 << 20, 1 << 16)),
        Err(TapError::Bind { .. })
    ));
    assert_eq!(std::fs::read(dir.sock()).unwrap(), b"precious");
}

/// Not a benchmark: checks that a long stream of PCM (50 MB, with buffers larger than one
/// record) arrives bit-exact and in order while the card respects backpressure. The rate
/// is printed for information only.
#[test]
fn fifty_megabytes_arrive_bit_exact() {
    const TOTAL: u64 = 50 << 20;
    let dir = TestDir::new();
    let tap = start(&dir, 4 << 20, 1 << 16);
    let h = tap.handle();
    let mut c = Client::connect(&dir.sock());
    c.subscribe(0, 0);

    let reader = std::thread::spawn(move || {
        let mut next = 0u64;
        let mut records = 0u64;
        while next < TOTAL {
            match c.next() {
                Record::Pcm { offset, data, .. } => {
                    assert_eq!(offset, next, "in order");
                    assert!(data.len() <= MAX_PCM_CHUNK);
                    check_pattern(offset, &data);
                    next += data.len() as u64;
                    records += 1;
                }
                other => panic!("expected PCM, got {other:?}"),
            }
        }
        records
    });

    // Mostly period-sized buffers, now and then one larger than a record can carry.
    let sizes = [4096usize, 17_640, 1_000, 65_536, 8_192, 3_840];
    let t = Instant::now();
    let mut offset = 0u64;
    let mut i = 0;
    let mut held = 0u64;
    while offset < TOTAL {
        if !h.can_accept() {
            held += 1;
            h.clear_notifier();
            if !h.can_accept() {
                assert!(notified(&h), "the card must be released");
            }
            continue;
        }
        let size = if i % 100 == 99 {
            3 * MAX_PCM_CHUNK / 2
        } else {
            sizes[i % sizes.len()]
        };
        let len = size.min((TOTAL - offset) as usize);
        i += 1;
        h.publish_pcm(0, offset, offset, &pattern_bytes(offset, len));
        offset += len as u64;
    }
    let records = reader.join().expect("reader thread");
    let secs = t.elapsed().as_secs_f64();
    eprintln!(
        "tap: 50 MiB in {records} records, {i} publishes, card held {held} times: \
         {secs:.2} s ({:.0} MiB/s, {} build, pattern generation and checks included)",
        50.0 / secs,
        if cfg!(debug_assertions) {
            "debug"
        } else {
            "release"
        }
    );
    tap.shutdown();
}

#[test]
fn records_split_into_single_bytes_are_reassembled() {
    let dir = TestDir::new();
    let tap = start(&dir, 1 << 20, 1 << 16);
    let h = tap.handle();
    let mut c = Client::connect(&dir.sock());
    c.hello();
    let mut bytes = Record::Subscribe {
        flags: 0,
        streams: 0,
    }
    .to_bytes()
    .unwrap();
    Record::SetControl {
        id: 0,
        values: vec![-1, i64::MAX],
    }
    .encode(&mut bytes)
    .unwrap();
    for b in bytes {
        c.rr.get_mut().write_all(&[b]).unwrap();
        c.rr.get_mut().flush().unwrap();
    }
    assert_eq!(c.next(), Record::SnapshotEnd);
    let got = requests_arrive(&h);
    assert_eq!(
        got,
        vec![TapRequest::SetControl {
            id: 0,
            values: vec![-1, i64::MAX]
        }]
    );
    tap.shutdown();
}

/// Random bytes, and well-framed reader records with random payloads, from many connections:
/// each is dropped or served, none takes the tap down.
#[test]
fn hostile_input_never_takes_the_tap_down() {
    let dir = TestDir::new();
    let tap = start(&dir, 1 << 20, 1 << 16);
    let h = tap.handle();
    let mut good = Client::connect(&dir.sock());
    good.subscribe(0, 0);
    let mut seed = 0x2545_f491_4f6c_dd1du64;
    let mut rand = move || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    for round in 0..200 {
        let s = UnixStream::connect(dir.sock()).unwrap();
        let mut blob = Vec::new();
        if round % 2 == 1 {
            // A valid SUBSCRIBE first, so requests get past the conversation check.
            blob = Record::Subscribe {
                flags: 0,
                streams: 0,
            }
            .to_bytes()
            .unwrap();
            let kind = [0x0101u16, 0x0102, 0x0103][(rand() % 3) as usize];
            let len = (rand() % 64) as u32;
            blob.extend_from_slice(&kind.to_le_bytes());
            blob.extend_from_slice(&0u16.to_le_bytes());
            blob.extend_from_slice(&len.to_le_bytes());
            blob.extend((0..len).map(|_| rand() as u8));
        } else {
            let len = 1 + (rand() % 256) as usize;
            blob.extend((0..len).map(|_| rand() as u8));
        }
        // The tap may already have closed the connection: that is fine.
        let _ = (&s).write_all(&blob);
        drop(s);
    }
    assert!(wait_until(
        || h.shared.connected.load(Ordering::Acquire) == 1
    ));
    // Requests that happened to be valid are harmless; drain them.
    let _ = h.take_requests();
    h.publish(&params(0));
    assert_eq!(good.next(), params(0));
    tap.shutdown();
}

/// A reader sending SET_CONTROL faster than the worker takes them leaves one request per
/// control, with its latest values: the list the worker drains cannot grow without bound.
#[test]
fn pending_set_controls_are_coalesced_per_control() {
    let dir = TestDir::new();
    let tap = start(&dir, 1 << 20, 1 << 16);
    let h = tap.handle();
    let mut c = Client::connect(&dir.sock());
    c.subscribe(0, 0);
    for v in 0..1000i64 {
        c.send(&Record::SetControl {
            id: 0,
            values: vec![v % 97, v % 97],
        });
    }
    c.send(&Record::SetControl {
        id: 0,
        values: vec![100, 100],
    });
    let last = TapRequest::SetControl {
        id: 0,
        values: vec![100, 100],
    };
    assert!(wait_until(|| h
        .shared
        .requests
        .lock()
        .unwrap()
        .contains(&last)));
    assert_eq!(h.take_requests(), vec![last]);
    // Other controls keep their own entry, in order.
    for (id, v) in [(3, 1), (4, 1), (3, 2)] {
        h.shared.push_request(TapRequest::SetControl {
            id,
            values: vec![v],
        });
    }
    assert_eq!(
        h.take_requests(),
        vec![
            TapRequest::SetControl {
                id: 3,
                values: vec![2]
            },
            TapRequest::SetControl {
                id: 4,
                values: vec![1]
            }
        ]
    );
    tap.shutdown();
}

/// The worker never holds more than `EVENTS_INFLIGHT_LIMIT` records for a tap thread that
/// does not take them; the rest are counted, and the count goes out, in place, with the next
/// record that fits.
#[test]
fn records_for_a_stalled_tap_thread_are_bounded_and_the_loss_is_told() {
    use super::shared::{Item, EVENTS_INFLIGHT_LIMIT};
    let shared = Shared::new(1 << 20, 1 << 16).unwrap();
    // No tap thread: nothing takes what the worker sends.
    let (tx, rx) = mpsc::channel();
    let h = TapHandle {
        shared: Arc::clone(&shared),
        tx,
    };
    let xrun = |n: u64| Record::Xrun {
        stream: 0,
        time_ns: n,
        duration_ns: 1,
    };
    for n in 0..EVENTS_INFLIGHT_LIMIT as u64 + 5 {
        h.publish(&xrun(n));
    }
    let queued: Vec<Item> = rx.try_iter().collect();
    assert_eq!(queued.len(), EVENTS_INFLIGHT_LIMIT);
    // The thread takes them all; the next record is preceded by the count of the lost.
    for _ in &queued {
        shared.release_event();
    }
    h.publish(&xrun(1 << 40));
    let next: Vec<Item> = rx.try_iter().collect();
    assert!(
        matches!(next.as_slice(), [Item::Lost(5), Item::Event { rec: Record::Xrun { time_ns, .. }, .. }] if *time_ns == 1 << 40),
        "{} items",
        next.len()
    );
    h.publish(&xrun(7));
    assert!(matches!(
        rx.try_iter().collect::<Vec<_>>().as_slice(),
        [Item::Event { .. }]
    ));
}

/// What a reader is told about records the tap thread never got: a NOTICE (warning) in the
/// stream, kept for the snapshot of readers that join later.
#[test]
fn lost_records_reach_readers_as_a_notice() {
    let dir = TestDir::new();
    let tap = start(&dir, 1 << 20, 1 << 16);
    let h = tap.handle();
    let mut c = Client::connect(&dir.sock());
    c.subscribe(0, 0);
    h.tx.send(super::shared::Item::Lost(7)).unwrap();
    h.shared.wake_tap();
    let told = |rec: &Record| {
        matches!(rec, Record::Notice { level: NoticeLevel::Warning, text, .. }
            if text.contains("7 records") && text.contains("fell behind"))
    };
    let rec = c.next();
    assert!(told(&rec), "{rec:?}");
    let mut late = Client::connect(&dir.sock());
    let snap = late.subscribe(0, 0);
    assert!(snap.iter().any(told), "{snap:?}");
    tap.shutdown();
}

/// The card fills each record's frame from guest memory itself: a buffer over several
/// records whose second part cannot be read sends the first record, stops there, hands the
/// error back, and leaves no bytes counted in flight (the card could otherwise be held
/// forever).
#[test]
fn publish_pcm_with_stops_at_the_first_fill_error() {
    let dir = TestDir::new();
    let tap = start(&dir, 1 << 20, 1 << 16);
    let h = tap.handle();
    let mut c = Client::connect(&dir.sock());
    c.subscribe(0, 0);
    assert!(wait_until(|| h.has_readers()));
    let len = MAX_PCM_CHUNK + 1000;
    let mut calls = Vec::new();
    let r = h.publish_pcm_with(0, 0, 5, len, |at, out: &mut [u8]| {
        calls.push((at, out.len()));
        if at > 0 {
            return Err("unreadable");
        }
        out.copy_from_slice(&pattern_bytes(0, out.len()));
        Ok(())
    });
    assert_eq!(r, Err("unreadable"));
    assert_eq!(calls, vec![(0, MAX_PCM_CHUNK), (MAX_PCM_CHUNK, 1000)]);
    match c.next() {
        Record::Pcm { offset, data, .. } => {
            assert_eq!((offset, data.len()), (0, MAX_PCM_CHUNK));
            check_pattern(0, &data);
        }
        other => panic!("expected PCM, got {other:?}"),
    }
    assert!(wait_until(|| h.shared.inflight.load(Ordering::Acquire) == 0));
    assert!(h.can_accept());
    tap.shutdown();
}

/// Whether `fd` becomes readable within `timeout_ms`.
fn readable(fd: &impl std::os::fd::AsRawFd, timeout_ms: i32) -> bool {
    let mut pfd = libc::pollfd {
        fd: fd.as_raw_fd(),
        events: libc::POLLIN,
        revents: 0,
    };
    // SAFETY: one valid pollfd.
    unsafe { libc::poll(&mut pfd, 1, timeout_ms) == 1 }
}

/// Whether the tap thread's wake-up eventfd has been written (and not yet read).
fn wake_written(s: &shared::Shared) -> bool {
    readable(s.wake_fd(), 0)
}

#[test]
fn deferred_pcm_wakes_the_tap_thread_once_per_64_kib_and_when_the_deferral_ends() {
    let s = shared::Shared::new(4 << 20, 1 << 16).expect("shared");
    s.wake_tap_for_pcm(4096);
    assert!(wake_written(&s), "not deferring: every publish wakes");
    s.take_wake();
    s.begin_deferring();
    for _ in 0..15 {
        s.wake_tap_for_pcm(4096);
    }
    assert!(!wake_written(&s), "60 KiB deferred: no wake-up yet");
    s.wake_tap_for_pcm(4096);
    assert!(wake_written(&s), "64 KiB: the tap thread is woken");
    s.take_wake();
    s.wake_tap_for_pcm(100);
    assert!(!wake_written(&s));
    s.end_deferring();
    assert!(
        wake_written(&s),
        "what was deferred wakes it when the deferral ends"
    );
    s.take_wake();
    s.begin_deferring();
    s.end_deferring();
    assert!(!wake_written(&s), "nothing deferred, no wake-up");
}

#[test]
fn pcm_published_while_wakes_are_deferred_all_reaches_the_reader_in_order() {
    let dir = TestDir::new();
    let tap = start(&dir, 4 << 20, 1 << 16);
    let h = tap.handle();
    let mut a = Client::connect(&dir.sock());
    a.subscribe(0, 0);
    h.publish(&params(0));
    let mut offset = 0u64;
    {
        let _deferred = h.defer_wakes();
        // Less than the 64 KiB that would wake the tap thread, then more, then a little.
        for len in [1000usize, 20_000, 50_000, 4096, 4096, 333] {
            h.publish_pcm(0, offset, offset, &pattern_bytes(offset, len));
            offset += len as u64;
        }
    }
    assert!(matches!(a.next(), Record::Params(_)));
    a.expect_pattern_up_to(offset);
    tap.shutdown();
}

/// Whether the bulk timer fires within 200 ms (or has fired, its expiry not taken).
fn bulk_timer_fired(s: &shared::Shared) -> bool {
    readable(s.bulk_timer_fd(), 200)
}

#[test]
fn bulk_pcm_wakes_the_tap_thread_per_256_kib_and_leaves_the_rest_to_the_timer() {
    let s = shared::Shared::new(4 << 20, 1 << 16).expect("shared");
    s.bulk.store(true, Ordering::Release);
    s.wake_tap_for_pcm(4096);
    assert!(
        !wake_written(&s),
        "in bulk, one period does not wake the tap thread"
    );
    assert!(
        bulk_timer_fired(&s),
        "the first bulk bytes arm the timer, which fires within the bulk delay"
    );
    s.take_bulk();
    assert!(
        !bulk_timer_fired(&s),
        "taking the batch consumes the expiry"
    );
    for _ in 0..63 {
        s.wake_tap_for_pcm(4096);
    }
    assert!(!wake_written(&s), "252 KiB: no wake-up yet");
    s.wake_tap_for_pcm(4096);
    assert!(wake_written(&s), "256 KiB wake the tap thread at once");
    s.take_wake();
    s.wake_tap_for_pcm(4096);
    assert!(
        !wake_written(&s),
        "one wake-up per batch: the next comes with the timer or the next 256 KiB"
    );
    s.take_bulk();
    s.take_wake();
    // Deferring for a poll (see guest_poll) changes nothing in bulk: the timer has the rest.
    s.begin_deferring();
    s.wake_tap_for_pcm(100);
    s.end_deferring();
    assert!(!wake_written(&s));
    assert!(bulk_timer_fired(&s));
    s.take_bulk();
    s.bulk.store(false, Ordering::Release);
    s.wake_tap_for_pcm(4096);
    assert!(wake_written(&s), "out of bulk, every publish wakes again");
}

#[test]
fn the_stream_goes_in_bulk_only_while_no_subscribed_reader_is_live_and_one_is_unpaced() {
    let dir = TestDir::new();
    let tap = start(&dir, 4 << 20, 1 << 16);
    let h = tap.handle();
    let bulk = || h.shared.bulk.load(Ordering::Acquire);
    let mut paced = Client::connect(&dir.sock());
    paced.subscribe(0, 0);
    assert!(wait_until(|| h.has_readers()));
    assert!(
        !bulk(),
        "paced: the card's clock sets the pace, wake-ups are one per period"
    );
    let mut file = Client::connect(&dir.sock());
    file.subscribe(SUB_NO_PACING, 0);
    assert!(wait_until(bulk), "unpaced, nobody live: bulk");
    let mut live = Client::connect(&dir.sock());
    live.subscribe(SUB_LIVE, 0);
    assert!(
        wait_until(|| !bulk()),
        "a live reader gets every period at once"
    );
    drop(live);
    assert!(wait_until(bulk));
    drop(file);
    assert!(wait_until(|| !bulk()), "the unpaced reader left");
    drop(paced);
    tap.shutdown();
}

#[test]
fn a_reader_taking_the_stream_in_bulk_gets_a_lone_period_within_the_delay_and_all_in_order() {
    let dir = TestDir::new();
    let tap = start(&dir, 4 << 20, 1 << 16);
    let h = tap.handle();
    let mut a = Client::connect(&dir.sock());
    a.subscribe(SUB_NO_PACING, 0);
    assert!(wait_until(|| h.shared.bulk.load(Ordering::Acquire)));
    h.publish(&params(0));
    assert!(matches!(a.next(), Record::Params(_)));
    // Far less than a batch: only the timer brings it out.
    h.publish_pcm(0, 0, 0, &pattern_bytes(0, 1000));
    let t = std::time::Instant::now();
    a.expect_pattern_up_to(1000);
    assert!(
        t.elapsed() < Duration::from_secs(1),
        "bulk PCM waited {:?}",
        t.elapsed()
    );
    // More than a batch, in periods, then a remainder.
    let mut offset = 1000u64;
    for len in std::iter::repeat_n(4096usize, 100).chain([333]) {
        h.publish_pcm(0, offset, offset, &pattern_bytes(offset, len));
        offset += len as u64;
    }
    a.expect_pattern_from(1000, offset);
    tap.shutdown();
}

#[test]
fn on_a_card_unpaced_by_its_own_setting_readers_that_are_not_live_take_the_stream_in_bulk() {
    let dir = TestDir::new();
    let tap = Tap::start(TapConfig {
        unpaced: true,
        ..config(&dir, 4 << 20, 1 << 16)
    })
    .expect("tap starts");
    let h = tap.handle();
    let bulk = || h.shared.bulk.load(Ordering::Acquire);
    let mut file = Client::connect(&dir.sock());
    file.subscribe(0, 0);
    assert!(
        wait_until(bulk),
        "--pacing none: no reader needs to ask for it"
    );
    let mut live = Client::connect(&dir.sock());
    live.subscribe(SUB_LIVE, 0);
    assert!(wait_until(|| !bulk()));
    drop(live);
    assert!(wait_until(bulk));
    h.publish(&params(0));
    assert!(matches!(file.next(), Record::Params(_)));
    h.publish_pcm(0, 0, 0, &pattern_bytes(0, 1000));
    file.expect_pattern_up_to(1000);
    tap.shutdown();
}
