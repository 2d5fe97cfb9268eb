//! What the daemon tells its operator in the log: the addresses it really listens on, and
//! refused guest requests — every one counted, but a flood of them kept to a few lines.

use std::io::{BufRead, BufReader};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use dsproxy_device::reject_log::LINES_PER_WINDOW;
use dsproxy_testfront::proto::*;
use dsproxy_testfront::{Daemon, FrontendOpts, SndFrontend};
use dsproxy_wire::record::Record;
use dsproxy_wire::RecordReader;

fn daemon(args: &[&str]) -> Daemon {
    Daemon::dsproxy(env!("CARGO_BIN_EXE_dsproxy-device"), args).expect("start dsproxy-device")
}

/// Waits until the daemon's log has a line containing every one of `parts`.
fn wait_log_line(d: &Daemon, parts: &[&str]) -> String {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let text = d.log_text();
        if let Some(l) = BufReader::new(text.as_bytes())
            .lines()
            .map_while(Result::ok)
            .find(|l| parts.iter().all(|p| l.contains(p)))
        {
            return l;
        }
        assert!(
            Instant::now() < deadline,
            "no log line with {parts:?}:\n{}",
            d.log_tail(30)
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn the_startup_line_names_the_tcp_port_really_bound() {
    let d = daemon(&["--listen", "127.0.0.1:0"]);
    // The line that shows the QEMU command line and where readers attach.
    let line = wait_log_line(&d, &["vhost-user socket", "and tcp "]);
    let addr = line
        .rsplit("and tcp ")
        .next()
        .and_then(|a| a.split_whitespace().next())
        .unwrap_or_default();
    let addr: SocketAddr = addr
        .parse()
        .unwrap_or_else(|e| panic!("{addr:?} in {line:?}: {e}"));
    assert_ne!(addr.port(), 0, "the log names port 0: {line}");
    // A reader can attach there.
    let sock = TcpStream::connect_timeout(&addr, Duration::from_secs(2))
        .unwrap_or_else(|e| panic!("connect {addr}: {e}\n{}", d.log_tail(20)));
    sock.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
    let mut rr = RecordReader::new(sock);
    match rr.next_record() {
        Ok(Some(Record::Hello(h))) => assert!(!h.streams.is_empty()),
        other => panic!("expected HELLO from {addr}, got {other:?}"),
    }
}

#[test]
fn a_guest_flooding_bad_requests_does_not_flood_the_log() {
    let d = daemon(&[]);
    let mut fe = SndFrontend::connect(&d.socket, FrontendOpts::default())
        .unwrap_or_else(|e| panic!("connect: {e}\n{}", d.log_tail(30)));
    let n = 300;
    let t = Instant::now();
    for _ in 0..n {
        assert_eq!(fe.start(99).unwrap(), S_BAD_MSG, "every request answered");
    }
    let seconds = t.elapsed().as_secs() + 1;
    assert_eq!(fe.pcm_info().unwrap().len(), 2, "still served");
    fe.disconnect().unwrap();
    let total = wait_log_line(&d, &["guest requests rejected in all"]);
    assert!(
        total.contains(&format!("{n} guest requests rejected"))
            && total.contains(&format!("control/unknown_stream={n}")),
        "{total}"
    );
    let log = d.log_text();
    let lines = log
        .lines()
        .filter(|l| l.contains("rejected queue=control"))
        .count() as u64;
    assert!(
        lines >= 1 && lines <= LINES_PER_WINDOW as u64 * seconds && lines < n / 4,
        "{lines} rejection lines for {n} rejections in {seconds} s"
    );
    let suppressed: u64 = log
        .lines()
        .filter_map(|l| {
            let rest = l.split("suppressed ").nth(1)?;
            rest.split_whitespace().next()?.parse::<u64>().ok()
        })
        .sum();
    assert_eq!(
        lines + suppressed,
        n,
        "logged and summed-up rejections do not add up"
    );
}
