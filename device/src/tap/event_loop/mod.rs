//! The tap thread: one `event-manager` subscriber that owns the listening sockets, every
//! reader connection and the state mirror. It is woken by an eventfd when the worker
//! publishes, fans records out to the readers' queues, writes them with non-blocking sends
//! (EPOLLOUT armed only while a reader has output pending), and reads readers' requests.

use std::collections::{HashMap, HashSet};
use std::net::TcpListener;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::os::unix::net::UnixListener;
use std::sync::atomic::Ordering;
use std::sync::mpsc::Receiver;
use std::sync::Arc;
use std::time::{Duration, Instant};

use dsproxy_wire::record::{Direction, Hello, Record};
use event_manager::SubscriberOps;
use event_manager::{EventManager, EventOps, EventSet, Events, MutEventSubscriber, SubscriberId};

use super::conn::{CloseWhy, Reader};
use super::listener::{self, Accepted};
use super::mirror::Mirror;
use super::shared::{Frame, Item, Shared};

mod fanout;
mod reader_io;

/// Connections beyond this are accepted and closed at once (fd exhaustion guard).
const MAX_READERS: usize = 64;
/// Items fanned out per wake-up before the loop serves sockets again.
const MAX_BATCH: usize = 1024;
/// Reads per readable event (level-triggered epoll comes back for the rest).
const READS_PER_EVENT: usize = 4;
/// Connections accepted per readable listener event.
const ACCEPTS_PER_EVENT: usize = 16;
/// What a reader that hung up while paused may leave to be delivered after it is gone.
const DETACHED_INPUT_LIMIT: usize = 16 << 20;
/// How long shutdown keeps writing what readers have not taken yet.
const SHUTDOWN_FLUSH: Duration = Duration::from_secs(1);

pub(super) struct TapLoop {
    shared: Arc<Shared>,
    rx: Receiver<Item>,
    unix: Option<UnixListener>,
    tcp: Option<TcpListener>,
    readers: HashMap<RawFd, Reader>,
    mirror: Mirror,
    hello: Hello,
    /// The instant `hello.time_ns` describes: a reader's HELLO carries it plus the time since.
    hello_base: Instant,
    inputs: HashSet<u32>,
    controls: HashSet<u32>,
    high_water: usize,
    /// A reader whose queue grows past this is not reading at all; it is disconnected
    /// rather than allowed to eat the host's memory with records that are never dropped.
    hard_limit: usize,
    stop_deadline: Option<Instant>,
    init_error: Option<String>,
    /// TCP readers may send SET_CONTROL and INJECT (see [`super::TapConfig::tcp_control`]).
    tcp_control: bool,
    /// Lines about dropped records ([`Item::Lost`]), a few a second.
    lost_lines: crate::reject_log::LineBudget,
    /// See [`super::TapConfig::unpaced`].
    card_unpaced: bool,
}

impl TapLoop {
    pub fn new(
        shared: Arc<Shared>,
        rx: Receiver<Item>,
        unix: Option<UnixListener>,
        tcp: Option<TcpListener>,
        hello: Hello,
    ) -> TapLoop {
        let high_water = shared.high_water;
        let mut lp = TapLoop {
            shared,
            rx,
            unix,
            tcp,
            readers: HashMap::new(),
            mirror: Mirror::default(),
            hello: hello.clone(),
            hello_base: Instant::now(),
            inputs: HashSet::new(),
            controls: HashSet::new(),
            high_water,
            hard_limit: high_water.saturating_mul(4).saturating_add(64 << 20),
            stop_deadline: None,
            init_error: None,
            tcp_control: false,
            lost_lines: Default::default(),
            card_unpaced: false,
        };
        lp.set_hello(hello);
        lp
    }

    pub fn set_tcp_control(&mut self, allowed: bool) {
        self.tcp_control = allowed;
    }

    pub fn set_card_unpaced(&mut self, unpaced: bool) {
        self.card_unpaced = unpaced;
    }

    pub fn take_init_error(&mut self) -> Option<String> {
        self.init_error.take()
    }

    fn set_hello(&mut self, hello: Hello) {
        self.inputs = hello
            .streams
            .iter()
            .filter(|s| s.direction == Direction::Input)
            .map(|s| s.id)
            .collect();
        self.controls = hello.controls.iter().map(|c| c.id).collect();
        self.hello = hello;
        self.hello_base = Instant::now();
    }

    /// The device clock now, as the tap knows it: HELLO's time plus the time since.
    fn time_ns(&self) -> u64 {
        let since = self.hello_base.elapsed().as_nanos();
        self.hello
            .time_ns
            .saturating_add(u64::try_from(since).unwrap_or(u64::MAX))
    }

    fn hello_frame(&self) -> Option<Frame> {
        let mut h = self.hello.clone();
        h.time_ns = self.time_ns();
        match Record::Hello(h).to_bytes() {
            Ok(b) => Some(Arc::new(b)),
            Err(e) => {
                log::error!("tap: cannot encode HELLO: {e}");
                None
            }
        }
    }

    /// Milliseconds the outer loop may sleep in epoll.
    fn poll_timeout_ms(&self) -> i32 {
        match self.stop_deadline {
            None => -1,
            Some(d) => {
                let left = d.saturating_duration_since(Instant::now());
                i32::try_from(left.as_millis() + 1).unwrap_or(i32::MAX)
            }
        }
    }

    fn finished(&self) -> bool {
        self.stop_deadline.is_some() && self.readers.is_empty()
    }

    fn deadline_passed(&self) -> bool {
        self.stop_deadline.is_some_and(|d| Instant::now() >= d)
    }

    // ---- wake-ups: fan-out of what the worker published ----

    fn on_wake(&mut self, ops: &mut EventOps) {
        self.shared.take_wake();
        self.shared.take_bulk();
        if self.shared.stop.load(Ordering::Acquire) && self.stop_deadline.is_none() {
            self.begin_stop(ops);
            return;
        }
        let mut n = 0;
        while n < MAX_BATCH {
            match self.rx.try_recv() {
                Ok(item) => self.dispatch(item),
                Err(_) => break,
            }
            n += 1;
        }
        if n == MAX_BATCH {
            // More may be waiting: come back after serving the sockets.
            self.shared.wake_tap();
        }
        self.shared.release_inflight_block();
        self.retry_held_injects();
    }

    fn begin_stop(&mut self, ops: &mut EventOps) {
        self.stop_deadline = Some(Instant::now() + SHUTDOWN_FLUSH);
        // What the worker published before the stop still goes out (bounded, in case it
        // is still publishing).
        for _ in 0..64 * MAX_BATCH {
            match self.rx.try_recv() {
                Ok(item) => self.dispatch(item),
                Err(_) => break,
            }
        }
        if let Some(l) = self.unix.take() {
            let _ = ops.remove(Events::empty(&l));
        }
        if let Some(l) = self.tcp.take() {
            let _ = ops.remove(Events::empty(&l));
        }
        for r in self.readers.values_mut() {
            r.flush_all_gaps();
            r.held_inject = None;
        }
        log::debug!("tap: stopping; flushing {} readers", self.readers.len());
    }

    // ---- accepting readers ----

    fn on_listener(&mut self, tcp: bool, ops: &mut EventOps) {
        for _ in 0..ACCEPTS_PER_EVENT {
            let res = match (tcp, &self.unix, &self.tcp) {
                (false, Some(l), _) => listener::accept_unix(l),
                (true, _, Some(l)) => listener::accept_tcp(l),
                _ => return,
            };
            match res {
                Ok(Accepted::Reader(fd, peer)) => {
                    let may_control = !tcp || self.tcp_control;
                    self.add_reader(fd, peer, may_control, ops)
                }
                Ok(Accepted::None) => return,
                Err(e) => {
                    // ECONNABORTED and friends concern one connection; EMFILE clears when
                    // a reader leaves. Either way the listener stays.
                    log::warn!("tap: accept failed: {e}");
                    return;
                }
            }
        }
    }

    fn add_reader(&mut self, fd: OwnedFd, peer: String, may_control: bool, ops: &mut EventOps) {
        if self.readers.len() >= MAX_READERS {
            log::warn!("tap: refusing reader ({peer}): {MAX_READERS} readers already attached");
            return;
        }
        let raw = fd.as_raw_fd();
        let mut r = Reader::new(fd, peer);
        r.may_control = may_control;
        if let Err(e) = ops.add(Events::new_raw(raw, EventSet::IN)) {
            log::warn!("tap: cannot watch reader ({}): {e}", r.peer);
            return;
        }
        r.interest = EventSet::IN;
        if let Some(h) = self.hello_frame() {
            r.push(h);
        }
        log::info!("tap: reader connected ({})", r.peer);
        self.readers.insert(raw, r);
        self.shared.connected.fetch_add(1, Ordering::AcqRel);
    }

    fn close(&mut self, fd: RawFd, why: CloseWhy, ops: &mut EventOps) {
        let Some(r) = self.readers.remove(&fd) else {
            return;
        };
        // Out of the epoll set while the fd is still open (the fd number may be reused).
        if !r.detached {
            let _ = ops.remove(Events::empty_raw(fd));
        }
        match why {
            CloseWhy::Quiet(s) => log::info!("tap: reader ({}) closed: {s}", r.peer),
            CloseWhy::Fault(s) => log::warn!("tap: reader ({}) dropped: {s}", r.peer),
        }
        self.shared.connected.fetch_sub(1, Ordering::AcqRel);
        drop(r);
    }
}

fn socket_error(fd: RawFd) -> std::io::Error {
    let mut err: libc::c_int = 0;
    let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
    // SAFETY: getsockopt writes at most `len` bytes into `err`.
    let rc = unsafe {
        libc::getsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_ERROR,
            (&mut err as *mut libc::c_int).cast(),
            &mut len,
        )
    };
    if rc < 0 {
        std::io::Error::last_os_error()
    } else {
        std::io::Error::from_raw_os_error(err)
    }
}

impl MutEventSubscriber for TapLoop {
    fn init(&mut self, ops: &mut EventOps) {
        let mut fds = vec![
            self.shared.wake_fd().as_raw_fd(),
            self.shared.bulk_timer_fd().as_raw_fd(),
        ];
        fds.extend(self.unix.as_ref().map(|l| l.as_raw_fd()));
        fds.extend(self.tcp.as_ref().map(|l| l.as_raw_fd()));
        for fd in fds {
            if let Err(e) = ops.add(Events::new_raw(fd, EventSet::IN)) {
                self.init_error = Some(format!("cannot watch fd {fd}: {e}"));
            }
        }
    }

    fn process(&mut self, events: Events, ops: &mut EventOps) {
        let fd = events.fd();
        let set = events.event_set();
        if fd == self.shared.wake_fd().as_raw_fd() || fd == self.shared.bulk_timer_fd().as_raw_fd()
        {
            // The bulk timer: PCM published in bulk has waited long enough (take_bulk, in
            // on_wake, consumes the expiry).
            self.on_wake(ops);
        } else if self.unix.as_ref().is_some_and(|l| l.as_raw_fd() == fd) {
            self.on_listener(false, ops);
        } else if self.tcp.as_ref().is_some_and(|l| l.as_raw_fd() == fd) {
            self.on_listener(true, ops);
        } else {
            self.on_reader(fd, set, ops);
        }
        self.settle(ops);
    }
}

/// Leaves the worker's flags in the "no reader" state however the tap thread ends (even by
/// a panic), so the card never waits for readers that can no longer be served.
struct ResetFlagsOnExit(Arc<Shared>);

impl Drop for ResetFlagsOnExit {
    fn drop(&mut self) {
        let shared = &self.0;
        shared.connected.store(0, Ordering::Release);
        shared.subscribed.store(0, Ordering::Release);
        shared.no_pacing.store(false, Ordering::Release);
        shared.accept.store(true, Ordering::Release);
        shared.notify();
    }
}

/// The tap thread's body: runs the event loop until shutdown has flushed every reader or
/// its time is up.
pub(super) fn run(mut em: EventManager<TapLoop>, id: SubscriberId, shared: Arc<Shared>) {
    let _reset = ResetFlagsOnExit(shared);
    while let Ok(s) = em.subscriber_mut(id) {
        let timeout = s.poll_timeout_ms();
        if let Err(e) = em.run_with_timeout(timeout) {
            log::error!("tap: event loop failed: {e}; all readers are disconnected");
            break;
        }
        let Ok(s) = em.subscriber_mut(id) else { break };
        if s.finished() {
            break;
        }
        if s.deadline_passed() {
            let left: usize = s.readers.values().map(Reader::queued).sum();
            log::warn!(
                "tap: shutdown: {} readers did not take their last {left} bytes in time",
                s.readers.len()
            );
            break;
        }
    }
    // Dropping the event manager closes every connection and listener (before the flags
    // are reset, so no reader is left connected while they say there is none).
    drop(em);
}
