//! A daemon that outlives a thousand VMs: thousands of vhost-user connections through the
//! real socket, full play sessions and bare ones mixed, under a small open-file limit, leave
//! the daemon serving with exactly the fds it started with.

use std::os::fd::AsRawFd;
use std::time::{Duration, Instant};

use dsproxy_testfront::proto::*;
use dsproxy_testfront::signal;
use dsproxy_testfront::{Daemon, FrontendOpts, SndFrontend};
use vhost::vhost_user::message::VhostUserProtocolFeatures;
use vhost::vhost_user::{Frontend, VhostUserFrontend};
use vhost::VhostBackend;

const T: Duration = Duration::from_secs(5);
/// What the issue asks for: 3,000 connections under `ulimit -n 256`.
const CONNECTIONS: usize = 3000;
const FD_LIMIT: u64 = 256;

fn daemon(args: &[&str]) -> Daemon {
    Daemon::dsproxy(env!("CARGO_BIN_EXE_dsproxy-device"), args).expect("start dsproxy-device")
}

/// QEMU's first steps, then gone: GET_FEATURES only.
fn bare_connection(d: &Daemon) {
    let deadline = Instant::now() + T;
    loop {
        // A daemon that accepted nothing (out of fds) leaves us in its backlog: time out.
        let r = std::os::unix::net::UnixStream::connect(&d.socket)
            .and_then(|s| s.set_read_timeout(Some(T)).map(|()| s))
            .map_err(|e| e.to_string())
            .and_then(|s| {
                Frontend::from_stream(s, NUM_QUEUES as u64)
                    .get_features()
                    .map_err(|e| e.to_string())
            });
        match r {
            Ok(_) => return,
            // Between two connections the daemon may not be accepting yet.
            Err(e) if Instant::now() < deadline => {
                let _ = e;
                std::thread::sleep(Duration::from_millis(2));
            }
            Err(e) => panic!("bare connection: {e}\n{}", d.log_tail(30)),
        }
    }
}

/// A VM that plays a little and goes away.
fn play_session(d: &Daemon, seed: u64) {
    let mut fe = SndFrontend::connect(&d.socket, FrontendOpts::default())
        .unwrap_or_else(|e| panic!("connect: {e}\n{}", d.log_tail(30)));
    let period = 4096u32;
    assert_eq!(fe.set_params(0, period * 4, period, 2, 5, 7).unwrap(), S_OK);
    assert_eq!(fe.prepare(0).unwrap(), S_OK);
    assert_eq!(fe.start(0).unwrap(), S_OK);
    let data = signal::lcg_bytes(seed, period as usize * 2);
    let toks: Vec<_> = data
        .chunks(period as usize)
        .map(|c| fe.push_tx(0, c).unwrap())
        .collect();
    for t in toks {
        let c = fe
            .wait_token(t, T)
            .unwrap_or_else(|e| panic!("tx: {e}\n{}", d.log_tail(30)));
        assert_eq!(c.status, S_OK);
    }
    assert_eq!(fe.stop(0).unwrap(), S_OK);
    assert_eq!(fe.release(0).unwrap(), S_OK);
    let rep = fe.disconnect().unwrap();
    assert!(rep.violations.is_empty(), "{:?}", rep.violations);
}

/// Waits until the daemon's fd count settles back to `want` (the last disconnect is handled
/// asynchronously); returns the count it ended with.
fn settle_fds(d: &Daemon, want: usize) -> Vec<String> {
    let deadline = Instant::now() + T;
    loop {
        let fds = d.open_fds().expect("daemon fds");
        if fds.len() <= want || Instant::now() >= deadline {
            return fds;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn three_thousand_connections_leak_nothing() {
    // Pacing off so play sessions finish at once; debug logs off (3,000 connections).
    let d = Daemon::dsproxy_logging(
        env!("CARGO_BIN_EXE_dsproxy-device"),
        &["--pacing", "none"],
        Some("info"),
    )
    .expect("start dsproxy-device");
    d.limit_open_files(FD_LIMIT).expect("prlimit");
    // A daemon that stops answering (stuck joining a worker, say) would block the next
    // request forever: kill it after a generous budget, so the test fails instead of hanging.
    let watchdog = Watchdog::arm(d.pid().expect("pid"), Duration::from_secs(150));
    let start = d.open_fds().expect("daemon fds");
    let started = Instant::now();
    let mut sessions = 0;
    for i in 0..CONNECTIONS {
        // One in ten is a VM playing; the rest connect and leave (a QEMU that only probed,
        // or died at start-up) — the leak never depended on what the connection did.
        if i % 10 == 0 {
            play_session(&d, i as u64);
            sessions += 1;
        } else {
            bare_connection(&d);
        }
        if i % 100 == 0 {
            assert!(
                !d.log_text().contains("Too many open files"),
                "connection {i}: the daemon ran out of fds\n{}",
                d.log_tail(20)
            );
        }
    }
    let elapsed = started.elapsed();
    let end = settle_fds(&d, start.len());
    let rss = d.rss_kib();
    eprintln!(
        "{CONNECTIONS} connections ({sessions} play sessions) in {:.1} s: fds {} -> {}, RSS {} KiB",
        elapsed.as_secs_f64(),
        start.len(),
        end.len(),
        rss.map(|r| r.to_string()).unwrap_or_else(|| "?".into())
    );
    assert_eq!(
        end.len(),
        start.len(),
        "fds at start: {start:?}\nfds now: {end:?}"
    );
    // Still serving.
    play_session(&d, 7);
    watchdog.disarm();
}

/// Kills a process after a deadline unless disarmed first.
struct Watchdog {
    disarm: std::sync::mpsc::Sender<()>,
}

impl Watchdog {
    fn arm(pid: u32, after: Duration) -> Watchdog {
        let (tx, rx) = std::sync::mpsc::channel::<()>();
        std::thread::spawn(move || {
            if let Err(std::sync::mpsc::RecvTimeoutError::Timeout) = rx.recv_timeout(after) {
                eprintln!("watchdog: the daemon did not finish in {after:?}; killing it");
                // SAFETY: kill with our own child's pid.
                unsafe { libc::kill(pid as libc::pid_t, libc::SIGKILL) };
            }
        });
        Watchdog { disarm: tx }
    }

    fn disarm(self) {
        let _ = self.disarm.send(());
    }
}

/// A SET_MEM_TABLE whose region is larger than the memfd behind it: the daemon must refuse
/// it rather than map it and die of SIGBUS at the first access past the end of the file.
#[test]
fn a_memory_table_larger_than_its_file_is_refused() {
    let mut d = daemon(&[]);
    // A 64 KiB memfd, declared as 4 MiB of guest RAM.
    let file_len = 64 * 1024u64;
    let declared = 4 << 20;
    let memfd = {
        let name = c"lying-guest-ram";
        // SAFETY: memfd_create with a valid C string.
        let fd = unsafe { libc::memfd_create(name.as_ptr(), libc::MFD_CLOEXEC) };
        assert!(fd >= 0);
        // SAFETY: a fresh fd.
        let f = unsafe { <std::fs::File as std::os::fd::FromRawFd>::from_raw_fd(fd) };
        f.set_len(file_len).unwrap();
        f
    };
    let mut fe = Frontend::connect(&d.socket, NUM_QUEUES as u64).expect("connect");
    let features = fe.get_features().expect("features");
    let proto = fe.get_protocol_features().expect("protocol features");
    let want = proto
        & (VhostUserProtocolFeatures::CONFIG
            | VhostUserProtocolFeatures::MQ
            | VhostUserProtocolFeatures::REPLY_ACK);
    fe.set_protocol_features(want).unwrap();
    if want.contains(VhostUserProtocolFeatures::REPLY_ACK) {
        fe.set_hdr_flags(vhost::vhost_user::message::VhostUserHeaderFlag::NEED_REPLY);
    }
    fe.set_owner().unwrap();
    fe.set_features(features & (VIRTIO_F_VERSION_1 | VHOST_USER_F_PROTOCOL_FEATURES))
        .unwrap();
    let region = vhost::VhostUserMemoryRegionInfo {
        guest_phys_addr: 0x4000_0000,
        memory_size: declared,
        // Only used to translate ring addresses; any value does.
        userspace_addr: 0x7f00_0000_0000,
        mmap_offset: 0,
        mmap_handle: memfd.as_raw_fd(),
    };
    let r = fe.set_mem_table(&[region]);
    // Whatever the frontend hears (an error reply, or the connection closing), it must not
    // be a success, and the rings it would set up next — past the end of the file — must
    // never be touched.
    let ring_gpa = 0x4000_0000 + (declared - 0x10000);
    let ring_uva = 0x7f00_0000_0000 + (declared - 0x10000);
    let more = (|| -> Result<(), vhost::Error> {
        fe.set_vring_num(TX_QUEUE, 64)?;
        fe.set_vring_base(TX_QUEUE, 0)?;
        fe.set_vring_addr(
            TX_QUEUE,
            &vhost::VringConfigData {
                queue_max_size: 64,
                queue_size: 64,
                flags: 0,
                desc_table_addr: ring_uva,
                used_ring_addr: ring_uva + 0x2000,
                avail_ring_addr: ring_uva + 0x1000,
                log_addr: None,
            },
        )?;
        let kick = vmm_sys_util::eventfd::EventFd::new(0).map_err(vhost::Error::IOError)?;
        fe.set_vring_kick(TX_QUEUE, &kick)?;
        fe.set_vring_enable(TX_QUEUE, true)?;
        kick.write(1).map_err(vhost::Error::IOError)?;
        Ok(())
    })();
    let _ = ring_gpa;
    assert!(
        r.is_err() || more.is_err(),
        "the lying table was accepted and the ring set up past the end of the file"
    );
    drop(fe);
    std::thread::sleep(Duration::from_millis(300));
    assert!(
        d.try_wait().is_none(),
        "the daemon died: {}",
        d.log_tail(20)
    );
    assert!(
        d.log_text().contains("guest memory table refused"),
        "no log line: {}",
        d.log_tail(20)
    );
    // The next frontend is served.
    play_session(&d, 3);
}

/// A frontend sets a virtqueue size that is not a power of two: the device says so and
/// leaves the queue alone, and the next connection is served.
#[test]
fn a_queue_size_that_is_not_a_power_of_two_is_refused() {
    let mut d = daemon(&[]);
    {
        let fe = Frontend::connect(&d.socket, NUM_QUEUES as u64).expect("connect");
        fe.get_features().unwrap();
        fe.set_owner().unwrap();
        // The reply (if any) cannot say no: vhost-user-backend answers success.
        let _ = fe.set_vring_num(TX_QUEUE, 100);
        // A round trip, so the daemon has handled the message before we look at its log.
        let _ = fe.get_features();
    }
    std::thread::sleep(Duration::from_millis(100));
    assert!(
        d.log_text().contains("SET_VRING_NUM 100 refused"),
        "{}",
        d.log_tail(20)
    );
    assert!(d.try_wait().is_none());
    play_session(&d, 4);
}

/// vhost-user request codes (the vhost-user spec's front-end message types).
mod req {
    pub const GET_FEATURES: u32 = 1;
    pub const SET_OWNER: u32 = 3;
    pub const SET_MEM_TABLE: u32 = 5;
    pub const SET_VRING_NUM: u32 = 8;
    pub const SET_VRING_ADDR: u32 = 9;
    pub const SET_VRING_BASE: u32 = 10;
    pub const SET_VRING_KICK: u32 = 12;
}

/// One raw vhost-user message: header {request, flags (version 1), size}, `payload`, and
/// `fds` passed alongside (SCM_RIGHTS).
fn raw_message(
    s: &std::os::unix::net::UnixStream,
    request: u32,
    size: u32,
    payload: &[u8],
    fds: &[std::os::fd::RawFd],
) -> Result<(), vmm_sys_util::errno::Error> {
    use vmm_sys_util::sock_ctrl_msg::ScmSocket;
    let mut m = Vec::with_capacity(12 + payload.len());
    for w in [request, 1, size] {
        m.extend_from_slice(&w.to_le_bytes());
    }
    m.extend_from_slice(payload);
    s.send_with_fds(&[&m[..]], fds).map(|_| ())
}

/// Frontends that break the vhost-user protocol — messages out of order, sizes that do not
/// match the message, fds missing or extra, a queue that does not exist, an unknown request —
/// end their own connection at worst: the daemon keeps running, closes every fd they passed,
/// and serves the next VM.
#[test]
fn vhost_user_messages_out_of_order_or_malformed_leave_the_next_vm_served() {
    let mut d = daemon(&[]);
    let start = d.open_fds().expect("daemon fds");
    let eventfd = || vmm_sys_util::eventfd::EventFd::new(0).unwrap();
    let (e1, e2) = (eventfd(), eventfd());
    let u64le = |v: u64| v.to_le_bytes().to_vec();
    let vring_state = |index: u32, num: u32| {
        let mut b = index.to_le_bytes().to_vec();
        b.extend_from_slice(&num.to_le_bytes());
        b
    };
    let mut vring_addr = vring_state(TX_QUEUE as u32, 0);
    for a in [0x1000u64, 0x2000, 0x3000, 0] {
        vring_addr.extend_from_slice(&a.to_le_bytes());
    }
    // A memory table of one region, sent without its fd.
    let mut table = 1u32.to_le_bytes().to_vec();
    table.extend_from_slice(&0u32.to_le_bytes());
    for v in [0u64, 1 << 20, 0x7f00_0000_0000, 0] {
        table.extend_from_slice(&v.to_le_bytes());
    }
    type Case<'a> = (&'a str, Vec<(u32, u32, Vec<u8>, Vec<std::os::fd::RawFd>)>);
    let cases: Vec<Case> = vec![
        (
            "SET_VRING_ADDR before SET_OWNER and SET_MEM_TABLE",
            vec![(
                req::SET_VRING_ADDR,
                vring_addr.len() as u32,
                vring_addr.clone(),
                vec![],
            )],
        ),
        (
            "SET_VRING_KICK of a queue with no memory, no address",
            vec![
                (req::SET_OWNER, 0, vec![], vec![]),
                (
                    req::SET_VRING_KICK,
                    8,
                    u64le(TX_QUEUE as u64),
                    vec![e1.as_raw_fd()],
                ),
            ],
        ),
        (
            "SET_VRING_NUM with a 4-byte body",
            vec![(req::SET_VRING_NUM, 4, vec![2, 0, 0, 0], vec![])],
        ),
        (
            "GET_FEATURES claiming a 4 GiB body",
            vec![(req::GET_FEATURES, u32::MAX, vec![0; 16], vec![])],
        ),
        (
            "SET_VRING_BASE of queue 99",
            vec![
                (req::SET_OWNER, 0, vec![], vec![]),
                (req::SET_VRING_BASE, 8, vring_state(99, 0), vec![]),
            ],
        ),
        (
            "SET_MEM_TABLE with its region's fd missing",
            vec![
                (req::SET_OWNER, 0, vec![], vec![]),
                (
                    req::SET_MEM_TABLE,
                    table.len() as u32,
                    table.clone(),
                    vec![],
                ),
            ],
        ),
        (
            "SET_VRING_KICK with two fds",
            vec![
                (req::SET_OWNER, 0, vec![], vec![]),
                (
                    req::SET_VRING_KICK,
                    8,
                    u64le(TX_QUEUE as u64),
                    vec![e1.as_raw_fd(), e2.as_raw_fd()],
                ),
            ],
        ),
        (
            "an unknown request",
            vec![(0xdead, 0, vec![], vec![e1.as_raw_fd()])],
        ),
    ];
    for (what, msgs) in cases {
        let s = std::os::unix::net::UnixStream::connect(&d.socket).expect("connect");
        s.set_read_timeout(Some(Duration::from_millis(500)))
            .unwrap();
        for (request, size, payload, fds) in &msgs {
            // The daemon may already have hung up on an earlier message of the case.
            let _ = raw_message(&s, *request, *size, payload, fds);
        }
        // Wait for its verdict (an answer, or the connection closed); then leave.
        let mut buf = [0u8; 64];
        let _ = std::io::Read::read(&mut &s, &mut buf);
        drop(s);
        assert!(
            d.try_wait().is_none(),
            "{what}: the daemon died\n{}",
            d.log_tail(20)
        );
        // The next VM is served.
        play_session(&d, 9);
        let fds = settle_fds(&d, start.len());
        assert_eq!(
            fds.len(),
            start.len(),
            "{what}: fds at start {start:?}, now {fds:?}"
        );
    }
}
