//! dsproxy-device: the daemon. Parses the command line, starts the tap, and serves one
//! vhost-user frontend (QEMU) after another on the same socket until SIGINT/SIGTERM.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::process::ExitCode;
use std::sync::Arc;
use std::thread;

use clap::Parser;
use log::{error, info, warn};
use vhost::vhost_user::Listener;
use vhost_user_backend::VhostUserDaemon;
use vm_memory::{GuestMemoryAtomic, GuestMemoryMmap};
use vmm_sys_util::epoll::EventSet;
use vmm_sys_util::event::{new_event_consumer_and_notifier, EventFlag};

use dsproxy_device::backend::SndBackend;
use dsproxy_device::clock::monotonic_ns;
use dsproxy_device::config::{CardConfig, Cli};
use dsproxy_device::controls::Controls;
use dsproxy_device::error::DeviceError;
use dsproxy_device::tap::{Tap, TapConfig};

fn main() -> ExitCode {
    let cli = Cli::parse();
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info"))
        .format_timestamp_micros()
        .init();
    match run(&cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            // Not through the logger: RUST_LOG may have silenced it.
            eprintln!("dsproxy-device: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: &Cli) -> Result<(), DeviceError> {
    let cfg = CardConfig::from_cli(cli)?;
    // Block the signals before any thread starts, so every thread inherits the mask and
    // they arrive only through the signalfd the main thread polls.
    let signals =
        SignalFd::block_and_open(&[libc::SIGINT, libc::SIGTERM]).map_err(|e| DeviceError::Io {
            what: "cannot set up signal handling",
            source: e,
        })?;
    let epoch = monotonic_ns();
    let tap_path = cli
        .tap
        .clone()
        .unwrap_or_else(dsproxy_wire::default_tap_path);
    let tap = Tap::start(TapConfig {
        unix_path: tap_path.clone(),
        tcp: cli.listen,
        tcp_control: cli.allow_tcp_control,
        hello: cfg.hello(0),
        high_water: cli.high_water,
        inject_limit: cli.inject_limit,
        unpaced: cfg.pacing == dsproxy_device::config::Pacing::None,
    })?;
    let mut listener = match Listener::new(&cli.socket, true) {
        Ok(l) => l,
        Err(e) => {
            tap.shutdown();
            return Err(DeviceError::Listen {
                path: cli.socket.display().to_string(),
                source: e,
            });
        }
    };
    info!(
        "dsproxy-device {}: {} output + {} input streams, controls {}, pacing {:?}, profile {}{}",
        env!("CARGO_PKG_VERSION"),
        cfg.outputs,
        cfg.inputs,
        if cfg.controls { "on" } else { "off" },
        cfg.pacing,
        cfg.profile.name(),
        if cfg.wait_for_reader {
            ", waiting for a reader"
        } else {
            ""
        }
    );
    info!(
        "vhost-user socket {} (QEMU: -chardev socket,id=snd,path={} -device vhost-user-snd-pci,chardev=snd{}); tap {}{}",
        cli.socket.display(),
        cli.socket.display(),
        if cfg.controls { ",controls=on" } else { "" },
        tap_path.display(),
        // The address bound, not the one asked for: with port 0 only the former is useful.
        tap.tcp_addr()
            .or(cli.listen)
            .map(|a| format!(" and tcp {a}"))
            .unwrap_or_default()
    );
    // The mixer is card state: its starting values are published once, so every reader's
    // snapshot has them, and it is kept from one frontend connection to the next.
    let controls = cfg.initial_controls();
    let handle = tap.handle();
    for rec in controls.value_records() {
        handle.publish(&rec);
    }
    let result = serve(&cfg, &tap, &mut listener, &signals, epoch, controls);
    drop(listener); // removes the socket file
    tap.shutdown();
    info!("stopped");
    result
}

/// Serves frontends one after another until a signal arrives.
fn serve(
    cfg: &CardConfig,
    tap: &Tap,
    listener: &mut Listener,
    signals: &SignalFd,
    epoch: u64,
    mut controls: Controls,
) -> Result<(), DeviceError> {
    loop {
        match wait_readable(&[signals.as_raw_fd(), listener.as_raw_fd()], None) {
            Ok(Some(0)) => {
                info!("{}: shutting down", signals.describe());
                return Ok(());
            }
            Ok(_) => {}
            Err(e) => {
                return Err(DeviceError::Io {
                    what: "waiting for a frontend",
                    source: e,
                })
            }
        }
        match serve_connection(cfg, tap, listener, signals, epoch, controls.clone()) {
            Ok(end) => {
                controls = end.controls;
                if end.stop {
                    return Ok(());
                }
            }
            Err(e) => {
                // Out of fds or memory, most likely: this connection is lost, the daemon is
                // not. Back off so a persistent failure does not spin, then serve on.
                error!("a frontend connection could not be served: {e}; still listening");
                match wait_readable(&[signals.as_raw_fd()], Some(CONNECTION_RETRY)) {
                    Ok(Some(_)) => {
                        info!("{}: shutting down", signals.describe());
                        return Ok(());
                    }
                    Ok(None) => {}
                    Err(e) => warn!("waiting to retry: {e}"),
                }
            }
        }
    }
}

/// How long to wait after a connection could not be set up.
const CONNECTION_RETRY: std::time::Duration = std::time::Duration::from_secs(1);

/// How one frontend connection ended.
struct ConnectionEnd {
    /// The mixer as the connection left it (card state, kept for the next one).
    controls: Controls,
    /// A signal asked the daemon to stop.
    stop: bool,
}

/// Accepts one frontend and serves it until it goes away or a signal arrives. Whatever
/// happens, the per-connection fds (including the one vhost-user-backend leaks) are closed
/// before it returns.
fn serve_connection(
    cfg: &CardConfig,
    tap: &Tap,
    listener: &mut Listener,
    signals: &SignalFd,
    epoch: u64,
    controls: Controls,
) -> Result<ConnectionEnd, DeviceError> {
    let mem = GuestMemoryAtomic::new(GuestMemoryMmap::new());
    let backend = Arc::new(
        SndBackend::new(cfg.clone(), tap.handle(), epoch, mem.clone(), controls).map_err(|e| {
            DeviceError::Io {
                what: "cannot create the connection's timers and events",
                source: e,
            }
        })?,
    );
    let result = run_daemon(&backend, mem, listener, signals);
    // The daemon, and with it the vring worker, is gone by now (dropped on every path of
    // run_daemon): close what vhost-user-backend leaks per connection.
    backend.reclaim_exit_events();
    let stop = result?;
    Ok(ConnectionEnd {
        controls: backend.controls(),
        stop,
    })
}

/// Runs the vhost-user daemon for one connection; returns whether a signal asked to stop.
fn run_daemon(
    backend: &Arc<SndBackend>,
    mem: GuestMemoryAtomic<GuestMemoryMmap>,
    listener: &mut Listener,
    signals: &SignalFd,
) -> Result<bool, DeviceError> {
    let (done_consumer, done_notifier) =
        new_event_consumer_and_notifier(EventFlag::NONBLOCK | EventFlag::CLOEXEC).map_err(|e| {
            DeviceError::Io {
                what: "cannot create an eventfd",
                source: e,
            }
        })?;
    let mut daemon = VhostUserDaemon::new("dsproxy-device".into(), backend.clone(), mem)
        .map_err(|e| DeviceError::Daemon(e.to_string()))?;
    register_listeners(&daemon, backend)?;
    daemon
        .start(listener)
        .map_err(|e| DeviceError::Daemon(e.to_string()))?;
    info!("frontend connected");
    backend.connected();

    // The daemon's request loop runs in its own thread; wait for it or for a signal.
    let shutdown = daemon.shutdown_handle();
    let waiter = thread::Builder::new()
        .name("vhost-user-wait".into())
        .spawn(move || {
            let r = daemon.wait();
            // Dropping the daemon stops and joins the vring worker.
            drop(daemon);
            let _ = done_notifier.notify();
            r
        });
    let waiter = match waiter {
        Ok(w) => w,
        Err(e) => {
            // The closure, and the daemon in it, was dropped: the connection is closed.
            backend.disconnected();
            return Err(DeviceError::Io {
                what: "cannot start a thread",
                source: e,
            });
        }
    };
    let mut stop = false;
    match wait_readable(&[signals.as_raw_fd(), done_consumer.as_raw_fd()], None) {
        Ok(Some(0)) => {
            info!("{}: closing the frontend connection", signals.describe());
            stop = true;
            if let Some(s) = &shutdown {
                s.shutdown();
            }
        }
        Ok(_) => {}
        Err(e) => warn!("waiting for the frontend: {e}"),
    }
    match waiter.join() {
        Ok(Ok(())) => info!("frontend disconnected"),
        Ok(Err(e)) => info!("frontend disconnected: {e}"),
        Err(_) => warn!("the vhost-user thread panicked"),
    }
    backend.disconnected();
    Ok(stop)
}

/// Puts the card's timers and the tap's notifier on the vring worker's epoll.
fn register_listeners(
    daemon: &VhostUserDaemon<Arc<SndBackend>>,
    backend: &SndBackend,
) -> Result<(), DeviceError> {
    let handlers = daemon.get_epoll_handlers();
    let worker = handlers
        .first()
        .ok_or_else(|| DeviceError::Daemon("no vring worker".into()))?;
    for (fd, id) in backend.listeners() {
        worker
            .register_listener(fd, EventSet::IN, u64::from(id))
            .map_err(|e| DeviceError::Io {
                what: "cannot register a listener on the vring worker",
                source: e,
            })?;
    }
    Ok(())
}

/// Waits until one of `fds` is readable and returns its index, or `None` once `timeout`
/// has passed (never, without one).
fn wait_readable(fds: &[RawFd], timeout: Option<std::time::Duration>) -> io::Result<Option<usize>> {
    let timeout_ms = timeout.map_or(-1, |t| t.as_millis().min(i32::MAX as u128) as libc::c_int);
    let mut pfds: Vec<libc::pollfd> = fds
        .iter()
        .map(|&fd| libc::pollfd {
            fd,
            events: libc::POLLIN,
            revents: 0,
        })
        .collect();
    loop {
        // SAFETY: pfds is a valid array of pollfd of the given length.
        // (An interrupted wait restarts with the whole timeout: only a backoff uses one.)
        let n = unsafe { libc::poll(pfds.as_mut_ptr(), pfds.len() as libc::nfds_t, timeout_ms) };
        if n == 0 {
            return Ok(None);
        }
        if n < 0 {
            let e = io::Error::last_os_error();
            if e.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return Err(e);
        }
        if let Some(i) = pfds.iter().position(|p| p.revents != 0) {
            return Ok(Some(i));
        }
    }
}

/// SIGINT/SIGTERM delivered through a signalfd.
struct SignalFd {
    fd: OwnedFd,
}

impl SignalFd {
    /// Blocks `signals` in this thread (and threads started later) and opens a signalfd.
    fn block_and_open(signals: &[libc::c_int]) -> io::Result<SignalFd> {
        // SAFETY: sigset_t is plain data; sigemptyset/sigaddset initialise it.
        let mut set: libc::sigset_t = unsafe { std::mem::zeroed() };
        // SAFETY: set is a valid sigset_t we own.
        unsafe { libc::sigemptyset(&mut set) };
        for &s in signals {
            // SAFETY: as above; s is a valid signal number.
            unsafe { libc::sigaddset(&mut set, s) };
        }
        // SAFETY: set is initialised; the old mask is not requested.
        let r = unsafe { libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut()) };
        if r != 0 {
            return Err(io::Error::from_raw_os_error(r));
        }
        // SAFETY: -1 asks for a new signalfd for the initialised set.
        let fd = unsafe { libc::signalfd(-1, &set, libc::SFD_CLOEXEC | libc::SFD_NONBLOCK) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: fd is a fresh descriptor we own.
        Ok(SignalFd {
            fd: unsafe { OwnedFd::from_raw_fd(fd) },
        })
    }

    /// Reads the pending signal and names it.
    fn describe(&self) -> String {
        // SAFETY: signalfd_siginfo is plain data.
        let mut info: libc::signalfd_siginfo = unsafe { std::mem::zeroed() };
        let len = std::mem::size_of::<libc::signalfd_siginfo>();
        // SAFETY: reads at most `len` bytes into `info`, which is that large.
        let n = unsafe {
            libc::read(
                self.fd.as_raw_fd(),
                (&mut info as *mut libc::signalfd_siginfo).cast(),
                len,
            )
        };
        if n as usize != len {
            return "signal".into();
        }
        match info.ssi_signo as libc::c_int {
            libc::SIGINT => "SIGINT".into(),
            libc::SIGTERM => "SIGTERM".into(),
            s => format!("signal {s}"),
        }
    }
}

impl AsRawFd for SignalFd {
    fn as_raw_fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }
}
