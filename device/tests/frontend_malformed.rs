//! An untrusted guest: malformed descriptor chains and requests in the wrong state get an
//! error status, and the next good request is still served.

use std::time::Duration;

use dsproxy_testfront::proto::*;
use dsproxy_testfront::vring::Desc;
use dsproxy_testfront::{Daemon, FrontendOpts, SndFrontend, TapReader};
use dsproxy_wire::record::Record;
use vm_memory::GuestAddress;

const T: Duration = Duration::from_secs(3);

/// A raw chain: (bytes, device-writable) per descriptor.
type Chain<'a> = Vec<(&'a [u8], bool)>;

fn daemon(args: &[&str]) -> Daemon {
    Daemon::dsproxy(env!("CARGO_BIN_EXE_dsproxy-device"), args).expect("start dsproxy-device")
}

fn connect(d: &Daemon) -> SndFrontend {
    SndFrontend::connect(&d.socket, FrontendOpts::default())
        .unwrap_or_else(|e| panic!("connect: {e}\n{}", d.log_tail(30)))
}

/// A TX buffer that should be accepted; proves the queue still works.
fn good_tx(fe: &mut SndFrontend, d: &Daemon, after: &str) {
    let tok = fe.push_tx(0, &[7u8; 4096]).unwrap();
    let c = fe
        .wait_token(tok, T)
        .unwrap_or_else(|e| panic!("after {after}: good TX buffer: {e}\n{}", d.log_tail(20)));
    assert_eq!(
        c.status,
        S_OK,
        "after {after}: good TX buffer got {}",
        status_name(c.status)
    );
}

fn tx_status(fe: &mut SndFrontend, d: &Daemon, what: &str, parts: &[(&[u8], bool)]) -> u32 {
    let tok = fe.send_raw_chain(TX_QUEUE, parts).unwrap();
    let c = fe
        .wait_token(tok, T)
        .unwrap_or_else(|e| panic!("{what}: not returned: {e}\n{}", d.log_tail(20)));
    c.status
}

#[test]
fn malformed_tx_chains_get_bad_msg_and_the_queue_survives() {
    let d = daemon(&["--pacing", "none"]);
    let mut fe = connect(&d);
    // Stream 0 running, S16 stereo (4-byte frames).
    assert_eq!(fe.set_params(0, 16384, 4096, 2, 5, 7).unwrap(), S_OK);
    assert_eq!(fe.prepare(0).unwrap(), S_OK);
    assert_eq!(fe.start(0).unwrap(), S_OK);
    good_tx(&mut fe, &d, "start");

    let status = [0xffu8; 8];
    let pcm = [1u8; 4096];
    let (s0, s1, s99) = (0u32.to_le_bytes(), 1u32.to_le_bytes(), 99u32.to_le_bytes());
    let cases: [(&str, Chain<'_>); 6] = [
        (
            "header shorter than stream_id",
            vec![(&[0u8, 0][..], false), (&status[..], true)],
        ),
        (
            "unknown stream id",
            vec![(&s99[..], false), (&pcm[..], false), (&status[..], true)],
        ),
        (
            "input stream on the tx queue",
            vec![(&s1[..], false), (&pcm[..], false), (&status[..], true)],
        ),
        (
            "PCM not a whole number of frames",
            vec![(&s0[..], false), (&pcm[..4095], false), (&status[..], true)],
        ),
        (
            "PCM after the status",
            vec![(&s0[..], false), (&status[..], true), (&pcm[..], false)],
        ),
        (
            "writable PCM on the tx queue",
            vec![(&s0[..], false), (&pcm[..], true), (&status[..], true)],
        ),
    ];
    for (what, parts) in cases {
        let st = tx_status(&mut fe, &d, what, &parts);
        assert_eq!(st, S_BAD_MSG, "{what}: got {:#x} ({})", st, status_name(st));
        good_tx(&mut fe, &d, what);
    }

    // No room for a status at all: the chain must still come back.
    for (what, parts) in [
        (
            "no writable status",
            vec![(&s0[..], false), (&pcm[..], false)],
        ),
        (
            "status of 4 bytes",
            vec![(&s0[..], false), (&pcm[..], false), (&status[..4], true)],
        ),
    ] {
        let tok = fe.send_raw_chain(TX_QUEUE, &parts).unwrap();
        let c = fe
            .wait_token(tok, T)
            .unwrap_or_else(|e| panic!("{what}: not returned: {e}\n{}", d.log_tail(20)));
        assert!(c.status != S_OK, "{what}: accepted");
        good_tx(&mut fe, &d, what);
    }

    // Descriptors pointing outside guest memory.
    let hdr = fe.alloc(&0u32.to_le_bytes()).unwrap();
    let st_buf = fe.alloc(&[0xff; 8]).unwrap();
    let tok = fe
        .send_raw_descs(
            TX_QUEUE,
            &[
                Desc {
                    addr: hdr.addr,
                    len: 4,
                    writable: false,
                },
                Desc {
                    addr: GuestAddress(0x1000),
                    len: 4096,
                    writable: false,
                },
                Desc {
                    addr: st_buf.addr,
                    len: 8,
                    writable: true,
                },
            ],
        )
        .unwrap();
    let c = fe
        .wait_token(tok, T)
        .unwrap_or_else(|e| panic!("unmapped PCM: not returned: {e}\n{}", d.log_tail(20)));
    assert_eq!(
        c.status,
        S_BAD_MSG,
        "unmapped PCM: {}",
        status_name(c.status)
    );
    good_tx(&mut fe, &d, "unmapped PCM");

    // A length that runs off the end of guest memory.
    let tok = fe
        .send_raw_descs(
            TX_QUEUE,
            &[
                Desc {
                    addr: hdr.addr,
                    len: 4,
                    writable: false,
                },
                Desc {
                    addr: hdr.addr,
                    len: u32::MAX,
                    writable: false,
                },
                Desc {
                    addr: st_buf.addr,
                    len: 8,
                    writable: true,
                },
            ],
        )
        .unwrap();
    let c = fe
        .wait_token(tok, T)
        .unwrap_or_else(|e| panic!("huge length: {e}\n{}", d.log_tail(20)));
    assert_ne!(c.status, S_OK, "a 4 GiB buffer was accepted");
    good_tx(&mut fe, &d, "huge length");

    assert_eq!(fe.stop(0).unwrap(), S_OK);
    assert_eq!(fe.release(0).unwrap(), S_OK);
    assert!(fe.violations().is_empty(), "{:?}", fe.violations());
    assert!(d.pid().is_some());
}

#[test]
fn malformed_control_requests_get_errors_and_state_is_kept() {
    let d = daemon(&[]);
    let mut fe = connect(&d);
    let mut tap = TapReader::connect(&d.tap, 0, 0, T).expect("tap");

    // Requests shorter than their structure.
    let r = fe.ctl_request(&[0x01, 0x01], &[4]).unwrap();
    assert_eq!(
        r.status,
        S_BAD_MSG,
        "2-byte request: {}",
        status_name(r.status)
    );
    let r = fe
        .ctl_request(&set_params(0, &params(16384, 4096, 2, 5, 7))[..12], &[4])
        .unwrap();
    assert_eq!(
        r.status,
        S_BAD_MSG,
        "truncated SET_PARAMS: {}",
        status_name(r.status)
    );
    // A response buffer too small for the status: must still come back.
    let tok = fe
        .send_raw_chain(
            CONTROL_QUEUE,
            &[(&pcm_hdr(R_PCM_PREPARE, 0), false), (&[0xff, 0xff], true)],
        )
        .unwrap();
    fe.wait_token(tok, T)
        .unwrap_or_else(|e| panic!("2-byte status buffer: {e}\n{}", d.log_tail(20)));
    // No response buffer at all.
    let tok = fe
        .send_raw_chain(CONTROL_QUEUE, &[(&pcm_hdr(R_PCM_PREPARE, 0), false)])
        .unwrap();
    fe.wait_token(tok, T)
        .unwrap_or_else(|e| panic!("no status buffer: {e}\n{}", d.log_tail(20)));

    // Unknown streams.
    for (what, req) in [
        ("PREPARE", pcm_hdr(R_PCM_PREPARE, 99)),
        ("START", pcm_hdr(R_PCM_START, 2)),
        ("RELEASE", pcm_hdr(R_PCM_RELEASE, u32::MAX)),
        ("SET_PARAMS", set_params(7, &params(16384, 4096, 2, 5, 7))),
    ] {
        let r = fe.ctl_request(&req, &[4]).unwrap();
        assert_eq!(
            r.status,
            S_BAD_MSG,
            "{what} of an unknown stream: {}",
            status_name(r.status)
        );
    }

    // Wrong states: nothing set yet.
    assert_eq!(fe.start(0).unwrap(), S_BAD_MSG, "START before SET_PARAMS");
    assert_eq!(fe.stop(0).unwrap(), S_BAD_MSG, "STOP before SET_PARAMS");

    // Parameters the stream cannot take.
    for (what, p) in [
        ("0 channels", params(16384, 4096, 0, 5, 7)),
        ("9 channels", params(16384, 4096, 9, 5, 7)),
        ("IMA ADPCM", params(16384, 4096, 2, 0, 7)),
        ("format code 30", params(16384, 4096, 2, 30, 7)),
        ("rate code 20", params(16384, 4096, 2, 5, 20)),
        ("0-byte period", params(16384, 0, 2, 5, 7)),
        ("period not whole frames", params(16384, 4094, 2, 5, 7)),
        ("buffer smaller than a period", params(2048, 4096, 2, 5, 7)),
        ("1 GiB buffer", params(1 << 30, 4096, 2, 5, 7)),
    ] {
        let st = fe.set_params_full(0, &p).unwrap();
        assert!(
            st == S_BAD_MSG || st == S_NOT_SUPP,
            "{what}: SET_PARAMS answered {}",
            status_name(st)
        );
    }
    let mut feat = params(16384, 4096, 2, 5, 7);
    feat.features = 1 << 0; // VIRTIO_SND_PCM_F_SHMEM_HOST, not offered
    let st = fe.set_params_full(0, &feat).unwrap();
    assert!(
        st == S_BAD_MSG || st == S_NOT_SUPP,
        "unoffered feature: {}",
        status_name(st)
    );

    // Now good requests, in order; the bad ones left no trace on the stream.
    assert_eq!(fe.set_params(0, 16384, 4096, 2, 5, 7).unwrap(), S_OK);
    assert_eq!(fe.prepare(0).unwrap(), S_OK);
    assert_eq!(fe.stop(0).unwrap(), S_BAD_MSG, "STOP of a prepared stream");
    assert_eq!(fe.start(0).unwrap(), S_OK);
    assert_eq!(fe.start(0).unwrap(), S_BAD_MSG, "START of a running stream");
    assert_eq!(
        fe.set_params(0, 16384, 4096, 2, 5, 7).unwrap(),
        S_BAD_MSG,
        "SET_PARAMS while running"
    );
    assert_eq!(fe.release(0).unwrap(), S_BAD_MSG, "RELEASE while running");
    assert_eq!(fe.stop(0).unwrap(), S_OK);
    assert_eq!(fe.release(0).unwrap(), S_OK);

    // Only the good requests reached the readers.
    tap.wait_for("RELEASE", T, |r| {
        matches!(r, Record::Release { stream: 0, .. })
    })
    .unwrap();
    let recs: Vec<Record> = tap.history().iter().map(|r| r.record.clone()).collect();
    let life = dsproxy_testfront::check::lifecycle(recs.iter(), 0);
    assert_eq!(
        life,
        ["PARAMS", "PREPARE", "START", "STOP", "RELEASE"],
        "{}",
        tap.summary()
    );
    assert!(
        !recs
            .iter()
            .any(|r| dsproxy_testfront::check::record_stream(r).is_some_and(|s| s > 1)),
        "records for streams that do not exist: {}",
        tap.summary()
    );
    assert!(fe.violations().is_empty(), "{:?}", fe.violations());
}

#[test]
fn control_element_requests_are_checked() {
    let d = daemon(&[]);
    let mut fe = connect(&d);
    let n = fe.config().controls.expect("controls");
    let r = fe.ctl_read_raw(n).unwrap();
    assert_eq!(r.0, S_BAD_MSG, "CTL_READ of control {n} (past the end)");
    let st = fe.ctl_write(n + 5, &[1]).unwrap();
    assert_eq!(st, S_BAD_MSG, "CTL_WRITE past the end");
    // Out of range and off the value count.
    let st = fe.ctl_write(0, &[101, 100]).unwrap();
    assert_eq!(st, S_BAD_MSG, "volume 101");
    let st = fe.ctl_write(0, &[-1, 50]).unwrap();
    assert_eq!(st, S_BAD_MSG, "volume -1");
    assert_eq!(
        fe.ctl_read(0, 2).unwrap(),
        vec![100, 100],
        "rejected writes changed the value"
    );
    // Enumerated items of a control that is not enumerated.
    let (st, _) = fe.ctl_enum_items(0, 1).unwrap();
    assert!(
        st == S_BAD_MSG || st == S_NOT_SUPP,
        "ENUM_ITEMS: {}",
        status_name(st)
    );
    // TLV writes are not allowed (no TLV_WRITE access).
    let mut req = ctl_hdr(R_CTL_TLV_WRITE, 0);
    req.extend_from_slice(&[0u8; 16]);
    let r = fe.ctl_request(&req, &[4]).unwrap();
    assert!(
        r.status == S_BAD_MSG || r.status == S_NOT_SUPP,
        "TLV_WRITE: {}",
        status_name(r.status)
    );
    // TLV into a buffer too small for it.
    let (st, _) = fe.ctl_tlv_read(0, 8).unwrap();
    assert_eq!(st, S_BAD_MSG, "TLV_READ into 8 bytes");
    // Still serving.
    assert_eq!(fe.ctl_read(0, 2).unwrap(), vec![100, 100]);
    assert!(fe.violations().is_empty(), "{:?}", fe.violations());
}

fn params(buffer: u32, period: u32, channels: u8, format: u8, rate: u8) -> PcmParams {
    PcmParams {
        buffer_bytes: buffer,
        period_bytes: period,
        features: 0,
        channels,
        format,
        rate,
    }
}

/// A chain whose last descriptor points back to its first never ends: the device returns it
/// with a used length of 0 — never more than the memory it covers — and serves on.
#[test]
fn looped_chains_are_returned_empty() {
    let d = daemon(&["--pacing", "none"]);
    let mut fe = connect(&d);
    assert_eq!(fe.set_params(0, 16384, 4096, 2, 5, 7).unwrap(), S_OK);
    assert_eq!(fe.prepare(0).unwrap(), S_OK);
    assert_eq!(fe.start(0).unwrap(), S_OK);

    let req = fe.alloc(&pcm_hdr(R_PCM_PREPARE, 0)).unwrap();
    let resp = fe.alloc(&[0xff; 4]).unwrap();
    let hdr = fe.alloc(&0u32.to_le_bytes()).unwrap();
    let pcm = fe.alloc(&[3u8; 4096]).unwrap();
    let st = fe.alloc(&[0xff; 8]).unwrap();
    let d_of = |a: dsproxy_testfront::memory::Alloc, writable: bool| Desc {
        addr: a.addr,
        len: a.len as u32,
        writable,
    };
    for (queue, what, descs) in [
        (
            CONTROL_QUEUE,
            "control request",
            vec![d_of(req, false), d_of(resp, true)],
        ),
        (
            TX_QUEUE,
            "TX buffer",
            vec![d_of(hdr, false), d_of(pcm, false), d_of(st, true)],
        ),
    ] {
        let tok = fe.send_looped_descs(queue, &descs).unwrap();
        let c = fe
            .wait_token(tok, T)
            .unwrap_or_else(|e| panic!("looped {what}: not returned: {e}\n{}", d.log_tail(20)));
        assert_eq!(c.len, 0, "looped {what}: used length {}", c.len);
    }
    good_tx(&mut fe, &d, "looped chains");
    assert_eq!(fe.stop(0).unwrap(), S_OK);
    assert!(
        d.log_text().contains("does not end"),
        "no log line: {}",
        d.log_tail(20)
    );
    assert!(fe.violations().is_empty(), "{:?}", fe.violations());
}

/// A head index past the queue size names no descriptor: it cannot be returned, so the
/// device logs it and leaves the queue alone (as a device needing reset would) rather than
/// read garbage; the daemon lives on and serves the next connection.
#[test]
fn a_head_index_past_the_queue_size_stops_the_queue_with_a_log_line() {
    let d = daemon(&["--pacing", "none"]);
    let mut fe = connect(&d);
    assert_eq!(fe.set_params(0, 16384, 4096, 2, 5, 7).unwrap(), S_OK);
    assert_eq!(fe.prepare(0).unwrap(), S_OK);
    assert_eq!(fe.start(0).unwrap(), S_OK);
    good_tx(&mut fe, &d, "start");
    let size = fe.opts().queue_size;
    fe.publish_bogus_head(TX_QUEUE, size + 7).unwrap();
    let tok = fe.push_tx(0, &[7u8; 4096]).unwrap();
    assert!(
        fe.wait_token(tok, Duration::from_millis(500)).is_err(),
        "the queue was still served after a bogus head"
    );
    assert!(
        d.log_text().contains("past the queue size"),
        "no log line: {}",
        d.log_tail(20)
    );
    // The control queue is unaffected.
    assert_eq!(fe.stop(0).unwrap(), S_OK);
    drop(fe);
    let mut fe = connect(&d);
    assert_eq!(fe.set_params(0, 16384, 4096, 2, 5, 7).unwrap(), S_OK);
    assert_eq!(fe.prepare(0).unwrap(), S_OK);
    assert_eq!(fe.start(0).unwrap(), S_OK);
    good_tx(&mut fe, &d, "the next connection");
}
