//! Self-tests of the harness against rust-vmm's vhost-device-sound (null backend), which
//! speaks the same virtio-snd protocol. They need the peer binary, which the benchmark
//! scripts install into build/peer (or point DSPROXY_PEER at one), so they are ignored by
//! default: `cargo test -p dsproxy-testfront -- --ignored`.

use std::path::PathBuf;
use std::time::Duration;

use dsproxy_testfront::proto::*;
use dsproxy_testfront::{play, signal, Daemon, FrontendOpts, SndFrontend};

/// The peer spins forever in its event-queue handler when EVENT_IDX is negotiated and the
/// driver has posted event buffers (its process_event never consumes them, and its EVENT_IDX
/// loop repeats while buffers are available), which starves its control queue. So no event
/// buffers here.
fn peer_opts() -> FrontendOpts {
    FrontendOpts {
        event_buffers: 0,
        ..FrontendOpts::default()
    }
}

fn peer_bin() -> PathBuf {
    std::env::var_os("DSPROXY_PEER")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(env!("CARGO_MANIFEST_DIR"))
                .join("../../build/peer/bin/vhost-device-sound")
        })
}

const NEEDS_PEER: &str = "needs the rust-vmm peer in build/peer (or DSPROXY_PEER)";

#[test]
#[ignore = "needs the rust-vmm peer in build/peer (or DSPROXY_PEER)"]
fn peer_negotiates_and_answers_queries() {
    let _ = NEEDS_PEER;
    let d = Daemon::peer(peer_bin()).expect("start peer");
    let mut fe = SndFrontend::connect(&d.socket, peer_opts()).expect("connect");
    let cfg = fe.config();
    assert_eq!(cfg.streams, 2, "{cfg:?}");
    assert_eq!(cfg.controls, None);
    let pcm = fe.pcm_info().expect("pcm info");
    assert_eq!(pcm.len(), 2);
    assert_eq!(pcm[0].direction, D_OUTPUT);
    assert_eq!(pcm[1].direction, D_INPUT);
    let ch = fe.chmap_info().expect("chmap");
    assert_eq!(ch.len(), 1.max(cfg.chmaps as usize));
    assert!(fe.violations().is_empty(), "{:?}", fe.violations());
    let rep = fe.disconnect().expect("disconnect");
    assert!(rep.vring_bases.iter().all(|b| b.is_ok()), "{rep:?}");
}

#[test]
#[ignore = "needs the rust-vmm peer in build/peer (or DSPROXY_PEER)"]
fn peer_plays_a_signal() {
    let d = Daemon::peer(peer_bin()).expect("start peer");
    let mut fe = SndFrontend::connect(&d.socket, peer_opts()).expect("connect");
    // 48 kHz S16 stereo, 1024-frame periods, 4 periods.
    let st = fe.set_params(0, 16384, 4096, 2, 5, 7).expect("set params");
    assert_eq!(st, S_OK, "{}", status_name(st));
    assert_eq!(fe.prepare(0).unwrap(), S_OK);
    let data = signal::lcg_bytes(7, 192_000 / 4);
    let rep = play(&mut fe, 0, &data, 4096).expect("play");
    assert_eq!(rep.completions.len(), data.len().div_ceil(4096));
    assert!(rep.bad_statuses().is_empty(), "{:?}", rep.bad_statuses());
    let t = rep.timing(4096).unwrap();
    eprintln!("peer timing: {t:?}");
    assert_eq!(fe.release(0).unwrap(), S_OK);
    assert!(fe.violations().is_empty(), "{:?}", fe.violations());
    let _ = Duration::ZERO;
}

#[test]
#[ignore = "needs the rust-vmm peer in build/peer (or DSPROXY_PEER)"]
fn peer_serves_a_second_connection() {
    let d = Daemon::peer(peer_bin()).expect("start peer");
    for round in 0..3 {
        let mut fe = SndFrontend::connect(&d.socket, peer_opts())
            .unwrap_or_else(|e| panic!("round {round}: {e}"));
        assert_eq!(fe.pcm_info().unwrap().len(), 2);
        if round % 2 == 0 {
            fe.disconnect().unwrap();
        }
    }
}
