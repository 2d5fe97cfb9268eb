//! A reader that vanishes while the tap is writing to it must not kill the daemon, even where
//! SIGPIPE has its default action (Rust ignores it before `main`, an embedding might not).
//! Its own test binary: the SIGPIPE disposition is process-wide.

use std::io::Write;
use std::net::Shutdown;
use std::os::unix::net::UnixStream;
use std::time::{Duration, Instant};

use dsproxy_device::tap::{Tap, TapConfig};
use dsproxy_wire::record::{Hello, Record, PROTOCOL_VERSION};
use dsproxy_wire::RecordReader;

#[test]
fn a_reader_vanishing_mid_write_does_not_raise_sigpipe() {
    // SAFETY: restoring the default disposition; this binary runs only this test.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
    let dir = std::env::temp_dir().join(format!("dsproxy-tap-sigpipe-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("tap.sock");
    let tap = Tap::start(TapConfig {
        unix_path: path.clone(),
        tcp: None,
        tcp_control: false,
        unpaced: false,
        hello: Hello {
            version: PROTOCOL_VERSION,
            time_ns: 0,
            name: "sigpipe".into(),
            jacks: 0,
            chmaps: 0,
            streams: Vec::new(),
            controls: Vec::new(),
        },
        high_water: 64 << 20,
        inject_limit: 1 << 16,
    })
    .unwrap();
    let h = tap.handle();

    for round in 0..3 {
        let s = UnixStream::connect(&path).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let mut rr = RecordReader::new(s);
        assert!(matches!(rr.next_record(), Ok(Some(Record::Hello(_)))));
        let sub = Record::Subscribe {
            flags: 0,
            streams: 0,
        };
        rr.get_mut().write_all(&sub.to_bytes().unwrap()).unwrap();
        assert!(matches!(rr.next_record(), Ok(Some(Record::SnapshotEnd))));
        let mut offset = 0;
        let mut publish = |n: usize| {
            for _ in 0..n {
                h.publish_pcm(0, offset, 0, &[0x5a; 65536]);
                offset += 65536;
            }
        };
        // Three ways to vanish. Shutting down the read side leaves the socket open but makes
        // the tap's next write fail with EPIPE (the signal-raising case); closing with unread
        // data resets the connection (the tap is mid-write, EPOLLOUT armed); closing after
        // shutdown(Both) is a plain hang-up.
        let keep = match round {
            0 => {
                rr.get_ref().shutdown(Shutdown::Read).unwrap();
                std::thread::sleep(Duration::from_millis(20));
                publish(16);
                Some(rr)
            }
            1 => {
                publish(64);
                std::thread::sleep(Duration::from_millis(50));
                drop(rr);
                publish(16);
                None
            }
            _ => {
                publish(64);
                std::thread::sleep(Duration::from_millis(50));
                rr.get_ref().shutdown(Shutdown::Both).unwrap();
                drop(rr);
                publish(16);
                None
            }
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        while h.has_readers() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(1));
        }
        assert!(
            !h.has_readers(),
            "the vanished reader is removed (round {round})"
        );
        drop(keep);
    }
    // Still alive, and the tap still serves.
    let s = UnixStream::connect(&path).unwrap();
    let mut rr = RecordReader::new(s);
    assert!(matches!(rr.next_record(), Ok(Some(Record::Hello(_)))));
    tap.shutdown();
    let _ = std::fs::remove_dir_all(&dir);
}
