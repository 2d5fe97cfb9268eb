//! The QEMU lines users copy: `-device vhost-user-snd-pci,chardev=…` without `controls=on`
//! gives the guest a 12-byte config while the card offers control elements. The daemon cannot
//! fix that in time (QEMU reads the config only when the guest's driver does, after it chose
//! its features), so it must say so: one error line in its log and a NOTICE record that every
//! reader gets, also readers that attach later.

use std::time::Duration;

use dsproxy_testfront::{Daemon, FrontendOpts, SndFrontend, TapReader};
use dsproxy_wire::record::{NoticeLevel, Record};

const T: Duration = Duration::from_secs(5);

fn daemon(args: &[&str]) -> Daemon {
    Daemon::dsproxy(env!("CARGO_BIN_EXE_dsproxy-device"), args).expect("start dsproxy-device")
}

/// Connects like QEMU behind a line with or without `controls=on` (which decides how much
/// config QEMU reads: 16 or 12 bytes), with a driver that takes control elements when
/// offered (`new_driver`, Linux 6.9+) or one that does not (Linux 5.13–6.8, Windows).
fn qemu(d: &Daemon, controls_on: bool, new_driver: bool) -> SndFrontend {
    SndFrontend::connect(
        &d.socket,
        FrontendOpts {
            want_ctls: new_driver,
            config_len: Some(if controls_on { 16 } else { 12 }),
            ..FrontendOpts::default()
        },
    )
    .unwrap_or_else(|e| panic!("connect: {e}\n{}", d.log_tail(30)))
}

fn notices(tap: &mut TapReader) -> Vec<(NoticeLevel, String)> {
    tap.history()
        .iter()
        .filter_map(|r| match &r.record {
            Record::Notice { level, text, .. } => Some((*level, text.clone())),
            _ => None,
        })
        .collect()
}

fn frontend_gone(r: &Record) -> bool {
    matches!(
        r,
        Record::Frontend {
            connected: false,
            ..
        }
    )
}

#[test]
fn a_qemu_line_without_controls_on_is_reported_to_the_log_and_every_reader() {
    let d = daemon(&[]);
    let mut early = TapReader::connect(&d.tap, 0, 0, T).expect("tap");
    let fe = qemu(&d, false, true);
    let rec = early
        .wait_for("NOTICE", T, |r| matches!(r, Record::Notice { .. }))
        .unwrap_or_else(|e| panic!("{e}\n{}", d.log_tail(20)));
    let Record::Notice { level, text, .. } = rec.record.clone() else {
        unreachable!()
    };

    assert_eq!(level, NoticeLevel::Error);
    assert!(
        text.contains("controls=on") && text.contains("--no-controls"),
        "the notice must name both fixes: {text}"
    );
    let log = d.log_text();
    assert_eq!(
        log.lines()
            .filter(|l| l.contains("controls=on, but"))
            .count(),
        1,
        "one error line in the log:\n{log}"
    );
    assert!(log
        .lines()
        .any(|l| l.contains("ERROR") && l.contains("controls=on, but")));

    // A reader that attaches afterwards gets it in its snapshot.
    let mut late = TapReader::connect(&d.tap, 0, 0, T).expect("late tap");
    late.wait_for("SNAPSHOT_END", T, |r| matches!(r, Record::SnapshotEnd))
        .unwrap();
    assert_eq!(notices(&mut late).len(), 1, "{}", late.summary());

    // The next VM (a new QEMU with the right line) starts clean: no notice in its snapshot.
    drop(fe);
    early.wait_for("FRONTEND gone", T, frontend_gone).unwrap();
    let _fe = qemu(&d, true, true);
    let mut third = TapReader::connect(&d.tap, 0, 0, T).expect("third tap");
    third
        .wait_for("SNAPSHOT_END", T, |r| matches!(r, Record::SnapshotEnd))
        .unwrap();
    assert!(notices(&mut third).is_empty(), "{}", third.summary());
}

#[test]
fn the_right_lines_say_nothing() {
    // controls=on with a card that has controls.
    let d = daemon(&[]);
    let mut tap = TapReader::connect(&d.tap, 0, 0, T).expect("tap");
    let fe = qemu(&d, true, true);
    assert!(fe.ctls(), "controls were negotiated");
    drop(fe);
    tap.wait_for("FRONTEND gone", T, frontend_gone).unwrap();
    assert!(notices(&mut tap).is_empty(), "{}", tap.summary());

    // No controls=on with a card started --no-controls.
    let d = daemon(&["--no-controls"]);
    let mut tap = TapReader::connect(&d.tap, 0, 0, T).expect("tap");
    let fe = qemu(&d, false, true);
    drop(fe);
    tap.wait_for("FRONTEND gone", T, frontend_gone).unwrap();
    assert!(notices(&mut tap).is_empty(), "{}", tap.summary());
    assert!(!d.log_text().contains("controls=on, but"));
}

/// A driver that does not take control elements (Linux before 6.9, the Windows drivers)
/// plays behind the line without controls=on: the card says so, in either order of
/// SET_FEATURES and GET_CONFIG, and never reports the error for it.
#[test]
fn a_driver_without_controls_behind_that_line_gets_an_all_clear() {
    let d = daemon(&[]);
    let mut tap = TapReader::connect(&d.tap, 0, 0, T).expect("tap");
    // The test frontend acknowledges features before it reads the config.
    let fe = qemu(&d, false, false);
    let rec = tap
        .wait_for("NOTICE", T, |r| matches!(r, Record::Notice { .. }))
        .unwrap_or_else(|e| panic!("{e}\n{}", d.log_tail(20)));
    let Record::Notice { level, text, .. } = rec.record.clone() else {
        unreachable!()
    };
    assert_eq!(level, NoticeLevel::Info, "{text}");
    assert!(
        text.contains("not affected") && text.contains("controls=on"),
        "{text}"
    );
    drop(fe);
    tap.wait_for("FRONTEND gone", T, frontend_gone).unwrap();
    assert_eq!(notices(&mut tap).len(), 1, "{}", tap.summary());
    assert!(!d.log_text().contains("ERROR"), "{}", d.log_tail(20));
}

/// QEMU's own order: GET_CONFIG when the guest's driver probes, SET_FEATURES only when it
/// starts the device. A driver without controls gets the error first (nothing else is known
/// yet), then the all-clear.
#[test]
fn in_qemus_order_the_error_is_followed_by_the_all_clear() {
    use vhost::vhost_user::message::VhostUserConfigFlags;
    use vhost::vhost_user::{Frontend, VhostUserFrontend};
    use vhost::VhostBackend;
    let d = daemon(&[]);
    let mut tap = TapReader::connect(&d.tap, 0, 0, T).expect("tap");
    let mut fe = Frontend::connect(&d.socket, 4).expect("connect");
    let offered = fe.get_features().unwrap();
    let proto = fe.get_protocol_features().unwrap();
    fe.set_protocol_features(proto).unwrap();
    fe.set_owner().unwrap();
    fe.get_config(0, 12, VhostUserConfigFlags::empty(), &[0u8; 12])
        .unwrap();
    tap.wait_for("the error", T, |r| {
        matches!(
            r,
            Record::Notice {
                level: NoticeLevel::Error,
                ..
            }
        )
    })
    .unwrap_or_else(|e| panic!("{e}\n{}", d.log_tail(20)));
    // Version 1 and protocol features only: no VIRTIO_SND_F_CTLS (bit 0).
    fe.set_features(offered & !1).unwrap();
    tap.wait_for("the all-clear", T, |r| {
        matches!(
            r,
            Record::Notice {
                level: NoticeLevel::Info,
                ..
            }
        )
    })
    .unwrap_or_else(|e| panic!("{e}\n{}", d.log_tail(20)));
}
