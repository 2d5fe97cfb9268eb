//! The tap through the real daemon: the unix socket is private (0600), and `--listen`
//! beyond loopback is warned about, saying whether TCP readers may control the guest.
//! (What TCP readers may do is tested in src/tap/tests.rs and, with the real reader, in
//! host-reader/tests/with_device.rs.)

use std::os::unix::fs::PermissionsExt;

use dsproxy_testfront::Daemon;

fn daemon(args: &[&str]) -> Daemon {
    Daemon::dsproxy(env!("CARGO_BIN_EXE_dsproxy-device"), args).expect("start dsproxy-device")
}

#[test]
fn the_unix_tap_socket_is_0600() {
    let d = daemon(&[]);
    let m = std::fs::metadata(&d.tap).unwrap();
    assert_eq!(m.permissions().mode() & 0o777, 0o600);
}

#[test]
fn listen_beyond_loopback_is_warned_about() {
    const WARNING: &str = "accepts readers from other hosts";
    let d = daemon(&["--listen", "127.0.0.1:0"]);
    assert!(!d.log_text().contains(WARNING), "{}", d.log_text());
    let d = daemon(&["--listen", "0.0.0.0:0"]);
    let log = d.log_text();
    assert!(
        log.lines()
            .any(|l| l.contains("WARN") && l.contains(WARNING) && l.contains("only listen")),
        "{log}"
    );
    let d = daemon(&["--listen", "0.0.0.0:0", "--allow-tcp-control"]);
    let log = d.log_text();
    assert!(
        log.lines().any(|l| l.contains(WARNING)
            && l.contains("--allow-tcp-control lets any of them set the guest's mixer")),
        "{log}"
    );
}
