//! The mixer both ways: a guest's control write reaches readers as a CONTROL record, and a
//! reader's SET_CONTROL changes the value the guest reads and notifies it (CTL_NOTIFY). Every
//! reader's snapshot has every control's value, from the daemon's start on, and the mixer
//! survives the frontend going away and coming back.

use std::collections::BTreeMap;
use std::time::Duration;

use dsproxy_testfront::check::find_control;
use dsproxy_testfront::proto::*;
use dsproxy_testfront::{Daemon, FrontendOpts, SndFrontend, TapReader};
use dsproxy_wire::record::{ControlOrigin, Record};

const T: Duration = Duration::from_secs(3);

fn daemon(args: &[&str]) -> Daemon {
    Daemon::dsproxy(env!("CARGO_BIN_EXE_dsproxy-device"), args).expect("start dsproxy-device")
}

fn connect(d: &Daemon) -> SndFrontend {
    SndFrontend::connect(&d.socket, FrontendOpts::default())
        .unwrap_or_else(|e| panic!("connect: {e}\n{}", d.log_tail(30)))
}

#[test]
fn a_guest_control_write_reaches_readers_once() {
    let d = daemon(&[]);
    let mut tap = TapReader::connect(&d.tap, 0, 0, T).expect("tap");
    tap.wait_for("SNAPSHOT_END", T, |r| matches!(r, Record::SnapshotEnd))
        .unwrap();
    let mut fe = connect(&d);
    let ctls = fe.ctl_info().unwrap();
    let vol = find_control(&ctls, "Master Playback Volume", 0).expect("master volume");
    let sw = find_control(&ctls, "Master Playback Switch", 0).expect("master switch");

    assert_eq!(fe.ctl_write(vol, &[40, 60]).unwrap(), S_OK);
    let r = tap
        .wait_for("CONTROL", T, |r| matches!(r, Record::Control { .. }))
        .unwrap_or_else(|e| panic!("{e}\n{}", d.log_tail(20)));
    assert_eq!(
        r.record,
        Record::Control {
            id: vol,
            origin: ControlOrigin::Guest,
            values: vec![40, 60]
        }
    );
    assert_eq!(fe.ctl_read(vol, 2).unwrap(), vec![40, 60]);

    // Writing the same values again changes nothing and tells readers nothing; the next
    // record is the switch going off.
    assert_eq!(fe.ctl_write(vol, &[40, 60]).unwrap(), S_OK);
    assert_eq!(fe.ctl_write(sw, &[0]).unwrap(), S_OK);
    let r = tap
        .wait_for("CONTROL", T, |r| matches!(r, Record::Control { .. }))
        .unwrap();
    assert_eq!(
        r.record,
        Record::Control {
            id: sw,
            origin: ControlOrigin::Guest,
            values: vec![0]
        },
        "an unchanged write was published"
    );
    assert_eq!(fe.ctl_read(sw, 1).unwrap(), vec![0]);

    // A reader attaching now is told the current values.
    let mut late = TapReader::connect(&d.tap, 0, 0, T).expect("late reader");
    late.wait_for("SNAPSHOT_END", T, |r| matches!(r, Record::SnapshotEnd))
        .unwrap();
    let init: Vec<(u32, Vec<i64>)> = late
        .history()
        .iter()
        .filter_map(|r| match &r.record {
            Record::Control {
                id,
                origin: ControlOrigin::Initial,
                values,
            } => Some((*id, values.clone())),
            _ => None,
        })
        .collect();
    assert!(init.contains(&(vol, vec![40, 60])), "{init:?}");
    assert!(init.contains(&(sw, vec![0])), "{init:?}");
}

#[test]
fn a_reader_set_control_notifies_the_guest() {
    let d = daemon(&[]);
    let mut fe = connect(&d);
    let ctls = fe.ctl_info().unwrap();
    let pcm_vol = find_control(&ctls, "PCM Playback Volume", 0).expect("PCM volume");
    let cap_sw = find_control(&ctls, "Capture Switch", 0).expect("capture switch");

    let mut tap = TapReader::connect(&d.tap, 0, 0, T).expect("tap");
    tap.wait_for("SNAPSHOT_END", T, |r| matches!(r, Record::SnapshotEnd))
        .unwrap();
    tap.set_control(pcm_vol, &[10, 20]).unwrap();
    let ev = fe
        .wait_event(T, |e| matches!(e, SndEvent::CtlNotify { .. }))
        .unwrap()
        .unwrap_or_else(|| panic!("no CTL_NOTIFY after SET_CONTROL\n{}", d.log_tail(20)));
    match ev.event {
        SndEvent::CtlNotify { control, mask } => {
            assert_eq!(control as u32, pcm_vol);
            assert_ne!(mask & CTL_EVT_MASK_VALUE, 0, "mask {mask:#x} lacks VALUE");
        }
        e => panic!("{e:?}"),
    }
    assert_eq!(fe.ctl_read(pcm_vol, 2).unwrap(), vec![10, 20]);
    let r = tap
        .wait_for("CONTROL", T, |r| matches!(r, Record::Control { .. }))
        .unwrap();
    assert_eq!(
        r.record,
        Record::Control {
            id: pcm_vol,
            origin: ControlOrigin::Reader,
            values: vec![10, 20]
        }
    );

    // A second change, to another element.
    tap.set_control(cap_sw, &[0]).unwrap();
    let ev = fe
        .wait_event(T, |e| matches!(e, SndEvent::CtlNotify { .. }))
        .unwrap()
        .expect("second CTL_NOTIFY");
    assert!(matches!(ev.event, SndEvent::CtlNotify { control, .. } if control as u32 == cap_sw));
    assert_eq!(fe.ctl_read(cap_sw, 1).unwrap(), vec![0]);

    // A value out of range from a reader never reaches the guest as such (refused or
    // clamped: the spec leaves it to the device).
    tap.set_control(pcm_vol, &[500, 500]).unwrap();
    tap.drain_for(Duration::from_millis(300));
    let v = fe.ctl_read(pcm_vol, 2).unwrap();
    assert!(v.iter().all(|x| (0..=100).contains(x)), "volume now {v:?}");
    assert!(fe.violations().is_empty(), "{:?}", fe.violations());
}

/// The CONTROL records (origin Initial) of a reader's snapshot, by id. Waits for SNAPSHOT_END.
fn snapshot_controls(tap: &mut TapReader) -> BTreeMap<u32, Vec<i64>> {
    tap.wait_for("SNAPSHOT_END", T, |r| matches!(r, Record::SnapshotEnd))
        .unwrap();
    let mut out = BTreeMap::new();
    for r in tap.history() {
        match &r.record {
            Record::SnapshotEnd => break,
            Record::Control {
                id,
                origin: ControlOrigin::Initial,
                values,
            } => {
                assert!(
                    out.insert(*id, values.clone()).is_none(),
                    "control {id} twice in the snapshot"
                );
            }
            Record::Control { .. } => panic!("a non-initial CONTROL in the snapshot: {r:?}"),
            _ => {}
        }
    }
    out
}

#[test]
fn every_reader_gets_every_control_and_the_mixer_survives_a_reconnect() {
    let d = daemon(&[]);
    // A reader attaching before anything happened (no frontend yet) is told every
    // control's starting value: volumes at their maximum (0 dB), switches on.
    let mut first = TapReader::connect(&d.tap, 0, 0, T).expect("tap");
    let descs = first.hello.controls.clone();
    assert!(!descs.is_empty(), "the card has no controls");
    let defaults: BTreeMap<u32, Vec<i64>> = descs
        .iter()
        .map(|c| (c.id, vec![c.max; c.count as usize]))
        .collect();
    let snap = snapshot_controls(&mut first);
    assert_eq!(snap, defaults, "{}\n{}", first.summary(), d.log_tail(20));

    // The guest changes one control, a reader another.
    let mut fe = connect(&d);
    let ctls = fe.ctl_info().unwrap();
    let vol = find_control(&ctls, "Master Playback Volume", 0).expect("master volume");
    let pcm_sw = find_control(&ctls, "PCM Playback Switch", 0).expect("PCM switch");
    let cap_vol = find_control(&ctls, "Capture Volume", 0).expect("capture volume");
    assert_eq!(fe.ctl_write(vol, &[40, 60]).unwrap(), S_OK);
    first.set_control(pcm_sw, &[0]).unwrap();
    first
        .wait_for("the reader's CONTROL", T, |r| {
            matches!(r, Record::Control { id, origin: ControlOrigin::Reader, .. } if *id == pcm_sw)
        })
        .unwrap_or_else(|e| panic!("{e}\n{}", d.log_tail(20)));

    // QEMU goes away (stopping the rings first) and comes back: the mixer is card state.
    fe.disconnect().unwrap();
    first
        .wait_for("FRONTEND disconnected", T, |r| {
            matches!(
                r,
                Record::Frontend {
                    connected: false,
                    ..
                }
            )
        })
        .unwrap();
    let mut fe = connect(&d);
    assert_eq!(fe.ctl_read(vol, 2).unwrap(), vec![40, 60]);
    assert_eq!(fe.ctl_read(pcm_sw, 1).unwrap(), vec![0]);
    assert_eq!(fe.ctl_read(cap_vol, 2).unwrap(), vec![100, 100]);

    // A reader attaching now gets the current value of every control, once each.
    let mut late = TapReader::connect(&d.tap, 0, 0, T).expect("late reader");
    let mut want = defaults.clone();
    want.insert(vol, vec![40, 60]);
    want.insert(pcm_sw, vec![0]);
    assert_eq!(snapshot_controls(&mut late), want, "{}", late.summary());
    // ...and so does one attaching while no frontend is connected.
    drop(fe);
    late.wait_for("FRONTEND disconnected", T, |r| {
        matches!(
            r,
            Record::Frontend {
                connected: false,
                ..
            }
        )
    })
    .unwrap();
    let mut later = TapReader::connect(&d.tap, 0, 0, T).expect("reader after the crash");
    assert_eq!(snapshot_controls(&mut later), want, "{}", later.summary());
}
