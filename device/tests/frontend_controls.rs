//! The mixer both ways: a guest's control write reaches readers as a CONTROL record, and a
//! reader's SET_CONTROL changes the value the guest reads and notifies it (CTL_NOTIFY).

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
