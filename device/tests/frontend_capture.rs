//! Capture through the running daemon: RX buffers are filled at the stream's rate, with
//! silence until a reader injects audio, and then with exactly the injected bytes.

use std::time::{Duration, Instant};

use dsproxy_testfront::proto::*;
use dsproxy_testfront::{signal, Daemon, FrontendOpts, SndFrontend, TapReader};
use dsproxy_wire::record::Record;

const T: Duration = Duration::from_secs(3);
const INPUT: u32 = 1;
const PERIOD: usize = 400; // 50 ms of 8 kHz U8 mono

fn daemon(args: &[&str]) -> Daemon {
    Daemon::dsproxy(env!("CARGO_BIN_EXE_dsproxy-device"), args).expect("start dsproxy-device")
}

#[test]
fn capture_is_silence_then_exactly_the_injected_audio() {
    let d = daemon(&[]);
    let mut fe = SndFrontend::connect(&d.socket, FrontendOpts::default())
        .unwrap_or_else(|e| panic!("connect: {e}\n{}", d.log_tail(30)));
    assert_eq!(
        fe.set_params(INPUT, PERIOD as u32 * 4, PERIOD as u32, 1, 4, 1)
            .unwrap(),
        S_OK
    );
    assert_eq!(fe.prepare(INPUT).unwrap(), S_OK);
    for _ in 0..4 {
        fe.push_rx(INPUT, PERIOD).unwrap();
    }
    let t0 = Instant::now();
    assert_eq!(fe.start(INPUT).unwrap(), S_OK);

    // Nobody injects: 4 periods of silence, at the stream's pace.
    let mut captured = Vec::new();
    let mut got = 0;
    while got < 4 {
        assert!(
            t0.elapsed() < T,
            "RX buffers did not complete\n{}",
            d.log_tail(20)
        );
        for c in fe.wait_used(Duration::from_millis(500)).unwrap() {
            assert_eq!(c.status, S_OK, "RX status {}", status_name(c.status));
            assert_eq!(
                c.len as usize,
                PERIOD + PCM_STATUS_LEN,
                "used length of an RX buffer"
            );
            captured.extend_from_slice(&c.data);
            got += 1;
        }
    }
    let took = t0.elapsed();
    assert!(
        took >= Duration::from_millis(150),
        "4 × 50 ms of capture completed in {took:?}"
    );
    assert!(captured.iter().all(|&b| b == 0x80), "U8 silence is 0x80");

    // A reader supplies audio; keep the capture ring full until it has come through.
    let mut tap = TapReader::connect(&d.tap, 0, 0, T).expect("tap");
    tap.wait_for("SNAPSHOT_END", T, |r| matches!(r, Record::SnapshotEnd))
        .unwrap();
    let mut audio = signal::lcg_bytes(77, 1000);
    audio[0] = 0x01; // so the start of the block is not mistaken for silence
    *audio.last_mut().unwrap() = 0x02;
    tap.send(&Record::Inject {
        stream: INPUT,
        data: audio.clone(),
    })
    .unwrap();
    let mut captured = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(4);
    for _ in 0..4 {
        fe.push_rx(INPUT, PERIOD).unwrap();
    }
    while Instant::now() < deadline {
        for c in fe.wait_used(Duration::from_millis(200)).unwrap() {
            assert_eq!(c.status, S_OK);
            captured.extend_from_slice(&c.data);
            fe.push_rx(INPUT, PERIOD).unwrap();
        }
        // Stop once the block and some silence after it are in.
        if let Some(start) = captured.iter().position(|&b| b != 0x80) {
            if captured.len() >= start + audio.len() + PERIOD {
                break;
            }
        }
    }
    let start = captured
        .iter()
        .position(|&b| b != 0x80)
        .unwrap_or_else(|| panic!("injected audio never reached the guest\n{}", d.log_tail(20)));
    assert!(
        captured.len() >= start + audio.len(),
        "only {} of {} injected bytes captured",
        captured.len() - start,
        audio.len()
    );
    assert!(
        captured[start..start + audio.len()] == audio[..],
        "injected audio arrived altered"
    );
    assert!(
        captured[start + audio.len()..].iter().all(|&b| b == 0x80),
        "after the injected audio the capture is silence again"
    );

    assert_eq!(fe.stop(INPUT).unwrap(), S_OK);
    assert_eq!(fe.release(INPUT).unwrap(), S_OK);
    // RELEASE returns every RX buffer still queued.
    let deadline = Instant::now() + Duration::from_secs(1);
    while fe.in_flight()[RX_QUEUE] > 0 && Instant::now() < deadline {
        fe.wait_used(Duration::from_millis(100)).unwrap();
    }
    assert_eq!(fe.in_flight()[RX_QUEUE], 0, "RX buffers kept after RELEASE");
    assert!(fe.violations().is_empty(), "{:?}", fe.violations());
}
