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

use dsproxy_wire::record::{Direction, Hello, Record, SUB_LIVE, SUB_NO_PACING};
use event_manager::SubscriberOps;
use event_manager::{EventManager, EventOps, EventSet, Events, MutEventSubscriber, SubscriberId};

use super::conn::{CloseWhy, ReadOutcome, Reader};
use super::listener::{self, Accepted};
use super::mirror::Mirror;
use super::shared::{Frame, Item, Shared};
use super::subscription::{record_stream, Subscription};
use super::TapRequest;

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

/// How a round of reading a reader ended.
enum ReadEnd {
    /// The connection was closed (EOF, error, protocol violation).
    Closed,
    /// Nothing more to read now.
    Drained,
    /// An INJECT waits for room; reading is paused.
    Paused,
    /// The per-event budget is spent; there may be more.
    More,
}

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
        };
        lp.set_hello(hello);
        lp
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

    fn hello_frame(&self) -> Option<Frame> {
        let mut h = self.hello.clone();
        let since = self.hello_base.elapsed().as_nanos();
        h.time_ns = h
            .time_ns
            .saturating_add(u64::try_from(since).unwrap_or(u64::MAX));
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

    fn dispatch(&mut self, item: Item) {
        match item {
            Item::Hello(h) => match Record::Hello(h.clone()).to_bytes() {
                Ok(_) => self.set_hello(h),
                Err(e) => log::warn!("tap: new device description not usable: {e}"),
            },
            Item::Event { rec, frame } => {
                self.mirror.update(&rec, &frame);
                let stream = record_stream(&rec);
                for r in self.readers.values_mut() {
                    if r.sub.is_some_and(|s| s.selects(stream)) {
                        // Drops reported before what follows them.
                        r.flush_all_gaps();
                        r.push(Arc::clone(&frame));
                    }
                }
            }
            Item::Pcm {
                stream,
                offset,
                time_ns,
                data_len,
                frame,
            } => {
                self.shared.sub_inflight(frame.len());
                for r in self.readers.values_mut() {
                    let Some(sub) = r.sub else { continue };
                    if !sub.selects(Some(stream)) {
                        continue;
                    }
                    let fits =
                        |r: &Reader| r.queued().saturating_add(frame.len()) <= self.high_water;
                    if sub.live() && !fits(r) && !r.write_blocked() {
                        if let Err(e) = r.flush() {
                            r.doomed = Some(CloseWhy::Quiet(format!("write failed: {e}")));
                        }
                    }
                    if sub.live() && !fits(r) {
                        // Only dropped when the socket is really full, not because this
                        // batch has not been written out yet.
                        r.record_drop(stream, offset, data_len as u64, time_ns);
                    } else {
                        r.flush_gap(stream);
                        r.push(Arc::clone(&frame));
                    }
                }
            }
        }
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
                Ok(Accepted::Reader(fd, peer)) => self.add_reader(fd, peer, ops),
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

    fn add_reader(&mut self, fd: OwnedFd, peer: String, ops: &mut EventOps) {
        if self.readers.len() >= MAX_READERS {
            log::warn!("tap: refusing reader ({peer}): {MAX_READERS} readers already attached");
            return;
        }
        let raw = fd.as_raw_fd();
        let mut r = Reader::new(fd, peer);
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

    // ---- reader sockets ----

    fn on_reader(&mut self, fd: RawFd, set: EventSet, ops: &mut EventOps) {
        let stopping = self.stop_deadline.is_some();
        let Some(r) = self.readers.get_mut(&fd) else {
            return;
        };
        let error = set.contains(EventSet::ERROR);
        // On an error the requests the reader sent before it went are read first (the
        // kernel hands out queued data before the error); writing would only fail.
        if set.contains(EventSet::OUT) && !error {
            if let Err(e) = r.flush() {
                self.close(fd, CloseWhy::Quiet(format!("write failed: {e}")), ops);
                return;
            }
        }
        if !set.intersects(EventSet::IN | EventSet::HANG_UP | EventSet::READ_HANG_UP) && !error {
            return;
        }
        let gone = error || set.contains(EventSet::HANG_UP);
        if r.interest.contains(EventSet::IN) {
            match self.read_from(fd, ops) {
                ReadEnd::Closed => return,
                // Level-triggered epoll reports the rest (and the hang-up) again.
                ReadEnd::More => return,
                ReadEnd::Drained if !error => return,
                ReadEnd::Paused if !gone => return,
                ReadEnd::Drained | ReadEnd::Paused => {}
            }
        } else if !gone {
            return;
        }
        // The peer is gone (or the connection failed) and reading did not end it.
        let Some(r) = self.readers.get_mut(&fd) else {
            return;
        };
        if r.held_inject.is_none() || stopping {
            let e = socket_error(fd);
            self.close(fd, CloseWhy::Quiet(format!("hung up ({e})")), ops);
            return;
        }
        // Reading is paused (a full inject buffer) and the peer is gone: take in what it
        // sent (the socket buffer, a bounded amount), leave the epoll set (HUP would fire
        // forever) and deliver it as room appears before closing.
        while r.pending_input() < DETACHED_INPUT_LIMIT {
            match r.fill_input() {
                Ok(ReadOutcome::Data) => {}
                Ok(_) | Err(_) => break,
            }
        }
        if r.pending_input() >= DETACHED_INPUT_LIMIT {
            log::warn!(
                "tap: reader ({}) hung up with more than {DETACHED_INPUT_LIMIT} bytes unread; \
                 the rest is lost",
                r.peer
            );
        }
        if ops.remove(Events::empty_raw(fd)).is_ok() {
            r.detached = true;
            r.discard_output();
            r.interest = EventSet::empty();
            log::debug!("tap: reader ({}) hung up while paused", r.peer);
        } else {
            self.close(fd, CloseWhy::Quiet("hung up".into()), ops);
        }
    }

    /// Reads and handles what the reader sent, up to a few chunks per event.
    fn read_from(&mut self, fd: RawFd, ops: &mut EventOps) -> ReadEnd {
        for _ in 0..READS_PER_EVENT {
            let Some(r) = self.readers.get_mut(&fd) else {
                return ReadEnd::Closed;
            };
            match r.fill_input() {
                Ok(ReadOutcome::Data) => {}
                Ok(ReadOutcome::WouldBlock) => return ReadEnd::Drained,
                Ok(ReadOutcome::Eof) => {
                    let why = match r.pending_input() {
                        0 => "disconnected".to_string(),
                        n => format!("disconnected in the middle of a record ({n} bytes)"),
                    };
                    self.close(fd, CloseWhy::Quiet(why), ops);
                    return ReadEnd::Closed;
                }
                Err(e) => {
                    self.close(fd, CloseWhy::Quiet(format!("read failed: {e}")), ops);
                    return ReadEnd::Closed;
                }
            }
            if let Err(why) = self.process_input(fd) {
                self.close(fd, CloseWhy::Fault(why), ops);
                return ReadEnd::Closed;
            }
            if self
                .readers
                .get(&fd)
                .is_some_and(|r| r.held_inject.is_some())
            {
                return ReadEnd::Paused;
            }
        }
        ReadEnd::More
    }

    /// Handles every complete record in the reader's input buffer, stopping early if an
    /// INJECT has to wait for room. An error closes the reader.
    fn process_input(&mut self, fd: RawFd) -> Result<(), String> {
        loop {
            let Some(r) = self.readers.get_mut(&fd) else {
                return Ok(());
            };
            if r.held_inject.is_some() {
                break;
            }
            match r.next_record() {
                Ok(Some(rec)) => self.handle_request(fd, rec)?,
                Ok(None) => break,
                Err(e) => return Err(format!("malformed record: {e}")),
            }
        }
        if let Some(r) = self.readers.get_mut(&fd) {
            r.compact_input();
        }
        Ok(())
    }

    fn handle_request(&mut self, fd: RawFd, rec: Record) -> Result<(), String> {
        let Some(r) = self.readers.get_mut(&fd) else {
            return Ok(());
        };
        match (rec, r.sub.is_some()) {
            (Record::Subscribe { flags, streams }, false) => {
                if flags & !(SUB_LIVE | SUB_NO_PACING) != 0 {
                    log::debug!(
                        "tap: reader ({}) sent unknown subscribe flags {flags:#x}",
                        r.peer
                    );
                }
                let sub = Subscription { flags, streams };
                r.sub = Some(sub);
                // Counted before the snapshot is taken: the worker only hands over PCM while
                // someone is subscribed, so everything it publishes from now on comes after
                // the snapshot and reaches this reader.
                let first = self.shared.subscribed.fetch_add(1, Ordering::AcqRel) == 0;
                let first_fast =
                    sub.no_pacing() && !self.shared.no_pacing.swap(true, Ordering::AcqRel);
                if first || first_fast {
                    self.shared.notify();
                }
                for f in self.mirror.snapshot(&sub) {
                    r.push(f);
                }
                log::info!(
                    "tap: reader ({}) subscribed: streams {streams:#x}{}{}",
                    r.peer,
                    if sub.live() { ", live" } else { "" },
                    if sub.no_pacing() { ", no pacing" } else { "" }
                );
                Ok(())
            }
            (Record::Subscribe { .. }, true) => Err("SUBSCRIBE sent twice".into()),
            (Record::SetControl { id, values }, true) => {
                if !self.controls.contains(&id) {
                    return Err(format!("SET_CONTROL for unknown control {id}"));
                }
                self.shared
                    .push_request(TapRequest::SetControl { id, values });
                Ok(())
            }
            (Record::Inject { stream, data }, true) => {
                if !self.inputs.contains(&stream) {
                    return Err(format!("INJECT for stream {stream}, which is not an input"));
                }
                if data.is_empty() {
                    return Ok(());
                }
                if self.shared.inject.push_or_wait(stream, &data) {
                    self.shared.notify();
                } else {
                    log::debug!("tap: inject buffer of stream {stream} full; pausing reader");
                    r.held_inject = Some((stream, data));
                }
                Ok(())
            }
            (rec, subscribed) => Err(format!(
                "unexpected {} record{}",
                rec.kind_name(),
                if subscribed { "" } else { " before SUBSCRIBE" }
            )),
        }
    }

    /// Retries INJECT records that waited for room, and resumes those readers.
    fn retry_held_injects(&mut self) {
        if !self.shared.inject.is_waiting() {
            return;
        }
        let held: Vec<RawFd> = self
            .readers
            .iter()
            .filter(|(_, r)| r.held_inject.is_some())
            .map(|(&fd, _)| fd)
            .collect();
        let mut still_waiting = false;
        for fd in held {
            let Some(r) = self.readers.get_mut(&fd) else {
                continue;
            };
            let Some((stream, data)) = r.held_inject.take() else {
                continue;
            };
            if !self.shared.inject.push_or_wait(stream, &data) {
                r.held_inject = Some((stream, data));
                still_waiting = true;
                continue;
            }
            self.shared.notify();
            match self.process_input(fd) {
                Ok(()) => {
                    if self
                        .readers
                        .get(&fd)
                        .is_some_and(|r| r.held_inject.is_some())
                    {
                        still_waiting = true;
                    }
                }
                Err(why) => {
                    // Closed in settle (it cannot reach the epoll set from here).
                    if let Some(r) = self.readers.get_mut(&fd) {
                        r.doomed = Some(CloseWhy::Fault(why));
                    }
                }
            }
        }
        if !still_waiting {
            self.shared.inject.clear_waiting();
        }
    }

    // ---- bookkeeping after every event ----

    /// Writes pending output, applies backpressure accounting, reports live readers' gaps,
    /// updates each reader's epoll interest, closes the dead, and publishes the flags the
    /// worker reads.
    fn settle(&mut self, ops: &mut EventOps) {
        let hw = self.high_water;
        let stopping = self.stop_deadline.is_some();
        let mut dead: Vec<(RawFd, CloseWhy)> = Vec::new();
        for (&fd, r) in self.readers.iter_mut() {
            if let Some(why) = r.doomed.take() {
                dead.push((fd, why));
                continue;
            }
            if r.detached {
                if r.held_inject.is_none() || stopping {
                    dead.push((fd, CloseWhy::Quiet("disconnected".into())));
                }
                continue;
            }
            if r.is_live() && r.has_gaps() && r.queued() <= hw / 2 {
                r.flush_all_gaps();
            }
            if r.queued() > 0 && !r.interest.contains(EventSet::OUT) {
                if let Err(e) = r.flush() {
                    dead.push((fd, CloseWhy::Quiet(format!("write failed: {e}"))));
                    continue;
                }
            }
            if r.queued() > self.hard_limit {
                dead.push((
                    fd,
                    CloseWhy::Fault(format!(
                        "not reading: {} bytes queued, limit {}",
                        r.queued(),
                        self.hard_limit
                    )),
                ));
                continue;
            }
            if stopping && r.queued() == 0 {
                dead.push((fd, CloseWhy::Quiet("tap shutting down".into())));
                continue;
            }
            if r.sub.is_some() && !r.is_live() {
                if r.queued() > hw {
                    r.over = true;
                } else if r.queued() <= hw / 2 {
                    r.over = false;
                }
            } else {
                r.over = false;
            }
            let mut want = EventSet::empty();
            if !stopping && r.held_inject.is_none() {
                want |= EventSet::IN;
            }
            if r.queued() > 0 {
                want |= EventSet::OUT;
            }
            if want != r.interest {
                match ops.modify(Events::new_raw(fd, want)) {
                    Ok(()) => r.interest = want,
                    Err(e) => dead.push((fd, CloseWhy::Fault(format!("epoll: {e}")))),
                }
            }
        }
        for (fd, why) in dead {
            self.close(fd, why, ops);
        }
        self.publish_flags();
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

    /// Stores `has_readers`, `no_pacing_requested` and `can_accept` for the worker, and
    /// signals the notifier when one of them changed.
    fn publish_flags(&mut self) {
        let subscribed = self.readers.values().filter(|r| r.sub.is_some()).count();
        let no_pacing = self
            .readers
            .values()
            .any(|r| r.sub.is_some_and(|s| s.no_pacing()));
        let accept = !self.readers.values().any(|r| r.over);
        let old_sub = self.shared.subscribed.swap(subscribed, Ordering::AcqRel);
        let old_np = self.shared.no_pacing.swap(no_pacing, Ordering::AcqRel);
        let old_acc = self.shared.accept.swap(accept, Ordering::AcqRel);
        if (old_sub > 0) != (subscribed > 0) || old_np != no_pacing || old_acc != accept {
            self.shared.notify();
        }
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
        let mut fds = vec![self.shared.wake_fd().as_raw_fd()];
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
        if fd == self.shared.wake_fd().as_raw_fd() {
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
