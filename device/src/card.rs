//! The card: streams, controls, jacks and the event queue, driven by descriptor chains and
//! by the clock. It knows nothing of vhost-user: the caller pops chains off the queues,
//! passes the guest memory and the current CLOCK_MONOTONIC time, and afterwards puts what
//! [`Card::take_used`] returns into the used rings. That makes every handler testable over
//! mock queues with made-up times.

use dsproxy_wire::record::{ControlOrigin, Direction, Record};
use log::{debug, info, warn};
use vm_memory::GuestMemory;

use crate::chain::Chain;
use crate::config::{CardConfig, Pacing};
use crate::controls::Controls;
use crate::error::{Rejected, RequestError};
use crate::event_queue::EventQueue;
use crate::pcm::{Stream, StreamState};
use crate::reject_log::{LineBudget, RejectLog};
use crate::spec::{
    ctl, ctl_notify_bytes, size, CONTROL_QUEUE, EVENT_QUEUE, NUM_QUEUES, RX_QUEUE, TX_QUEUE,
};
use crate::tap::{TapHandle, TapRequest};
use crate::Used;

/// What the card needs of the tap. [`TapHandle`] is the real one; tests record instead.
pub trait CardTap {
    fn publish(&self, rec: &Record);
    fn publish_pcm(&self, stream: u32, offset: u64, time_ns: u64, data: &[u8]);
    fn has_readers(&self) -> bool;
    fn can_accept(&self) -> bool;
    fn no_pacing_requested(&self) -> bool;
    fn take_requests(&self) -> Vec<TapRequest>;
    fn read_inject(&self, stream: u32, out: &mut [u8]) -> usize;
}

impl CardTap for TapHandle {
    fn publish(&self, rec: &Record) {
        TapHandle::publish(self, rec)
    }
    fn publish_pcm(&self, stream: u32, offset: u64, time_ns: u64, data: &[u8]) {
        TapHandle::publish_pcm(self, stream, offset, time_ns, data)
    }
    fn has_readers(&self) -> bool {
        TapHandle::has_readers(self)
    }
    fn can_accept(&self) -> bool {
        TapHandle::can_accept(self)
    }
    fn no_pacing_requested(&self) -> bool {
        TapHandle::no_pacing_requested(self)
    }
    fn take_requests(&self) -> Vec<TapRequest> {
        TapHandle::take_requests(self)
    }
    fn read_inject(&self, stream: u32, out: &mut [u8]) -> usize {
        TapHandle::read_inject(self, stream, out)
    }
}

/// The emulated sound card.
pub struct Card<T: CardTap> {
    pub(crate) cfg: CardConfig,
    pub(crate) tap: T,
    /// CLOCK_MONOTONIC ns at daemon start: tap timestamps count from here.
    epoch_ns: u64,
    /// The driver acknowledged VIRTIO_SND_F_CTLS.
    pub(crate) ctls_negotiated: bool,
    pub(crate) controls: Controls,
    pub(crate) streams: Vec<Stream>,
    pub(crate) events: EventQueue,
    pub(crate) used: Vec<Used>,
    /// Queues the frontend has stopped (GET_VRING_BASE) and not restarted: nothing is put
    /// in their used rings meanwhile.
    stopped: [bool; NUM_QUEUES],
    /// Guest requests refused so far, counted exactly, logged a few a second.
    rejections: RejectLog,
    /// Stream summaries (one per release) logged at info level, a few a second.
    summaries: LineBudget,
    /// The size of each ring (SET_VRING_NUM), which bounds what the card holds from it;
    /// the largest size accepted until the backend says.
    ring_sizes: [u16; NUM_QUEUES],
    /// Lines about the driver and the rings (features, resets, vring stops), a few a
    /// second: a guest can reset its device in a loop.
    device_events: LineBudget,
}

impl<T: CardTap> Card<T> {
    /// A card with its mixer at the defaults.
    pub fn new(cfg: CardConfig, tap: T, epoch_ns: u64) -> Card<T> {
        let controls = cfg.initial_controls();
        Card::with_controls(cfg, tap, epoch_ns, controls)
    }

    /// A card whose mixer is `controls`: the daemon keeps the mixer across frontend
    /// connections and hands it to each connection's card.
    pub fn with_controls(cfg: CardConfig, tap: T, epoch_ns: u64, controls: Controls) -> Card<T> {
        let streams = (0..cfg.num_streams())
            .map(|id| Stream::new(id, cfg.stream_direction(id).unwrap_or(Direction::Output)))
            .collect();
        let ring_sizes = [cfg.queue_size; NUM_QUEUES];
        Card {
            cfg,
            tap,
            epoch_ns,
            ctls_negotiated: false,
            controls,
            streams,
            events: EventQueue::default(),
            used: Vec::new(),
            stopped: [false; NUM_QUEUES],
            ring_sizes,
            rejections: RejectLog::default(),
            summaries: LineBudget::default(),
            device_events: LineBudget::default(),
        }
    }

    /// Ring `queue` has `size` entries (the backend reads it from the vring before it hands
    /// the card the ring's chains).
    pub fn set_ring_size(&mut self, queue: u16, size: u16) {
        if let Some(r) = self.ring_sizes.get_mut(queue as usize) {
            *r = size;
        }
    }

    /// The size of ring `queue`.
    pub fn ring_size(&self, queue: u16) -> u16 {
        self.ring_sizes
            .get(queue as usize)
            .copied()
            .unwrap_or(self.cfg.queue_size)
    }

    pub fn config(&self) -> &CardConfig {
        &self.cfg
    }

    pub fn tap(&self) -> &T {
        &self.tap
    }

    /// Guest requests refused so far (every one, logged or not).
    pub fn rejected(&self) -> u64 {
        self.rejections.total()
    }

    pub fn rejections(&self) -> &RejectLog {
        &self.rejections
    }

    /// Counts and (rate-limited) logs a refused guest request.
    pub(crate) fn reject(&mut self, r: &Rejected, e: &RequestError, now: u64) {
        self.rejections.note(r, e, now);
    }

    /// Logs the summaries of rejections the limiter held back whose second is over. The
    /// worker calls it after each event.
    pub fn flush_reject_log(&mut self, now: u64) {
        self.rejections.flush_expired(now);
    }

    /// Logs every summary the limiter still holds, and the counts by class (the frontend
    /// goes away).
    pub fn finish_reject_log(&mut self) {
        self.rejections.flush_all();
        let held_back = self.summaries.take_held_back();
        if held_back > 0 {
            info!("{held_back} more stream summaries logged at debug level only");
        }
        let held_back = self.device_events.take_held_back();
        if held_back > 0 {
            info!("{held_back} more driver/ring lines logged at debug level only");
        }
    }

    /// Logs a line about the driver or the rings (features acknowledged, a reset, a vring
    /// stopped with buffers in flight): at info level a few times a second at most, the
    /// rest at debug and counted.
    pub fn log_device_event(&mut self, now: u64, line: &str) {
        match self.device_events.take(now) {
            Some(0) => info!("{line}"),
            Some(k) => info!("{line} ({k} earlier driver/ring lines at debug level only)"),
            None => debug!("{line}"),
        }
    }

    /// Logs what stream `idx` did since its last release (bytes, time running, underruns,
    /// queued bytes returned or dropped unplayed) and starts counting afresh. The requests themselves are
    /// logged at debug level; this is the one info line per use of a stream — and at most a
    /// few a second, so a guest looping PREPARE/RELEASE cannot flood the log either.
    pub(crate) fn log_release(&mut self, idx: usize, now: u64, why: &str) {
        let Some(s) = self.streams.get_mut(idx) else {
            return;
        };
        s.stats.stop(now);
        let st = std::mem::take(&mut s.stats);
        let verb = match s.direction {
            Direction::Output => "played",
            Direction::Input => "captured",
        };
        let audio = s
            .params
            .filter(|p| p.byte_rate > 0)
            .map(|p| {
                format!(
                    " ({:.1} ms of {})",
                    st.bytes as f64 * 1000.0 / p.byte_rate as f64,
                    p.shape
                )
            })
            .unwrap_or_default();
        let line = format!(
            "stream {}: released ({why}): {} bytes {verb}{audio}, {} ms running over {} start(s), \
             {} underrun(s), {} queued bytes left unused",
            s.id,
            st.bytes,
            st.running_ns / 1_000_000,
            st.starts,
            st.underruns,
            st.returned_bytes
        );
        match self.summaries.take(now) {
            Some(0) => info!("{line}"),
            Some(k) => info!("{line} ({k} earlier summaries at debug level only)"),
            None => debug!("{line}"),
        }
    }

    /// The features the driver acknowledged.
    pub fn set_features(&mut self, acked: u64) {
        self.ctls_negotiated = self.cfg.controls && acked & crate::spec::VIRTIO_SND_F_CTLS != 0;
    }

    /// Used-ring entries produced since the last call, in order.
    pub fn take_used(&mut self) -> Vec<Used> {
        std::mem::take(&mut self.used)
    }

    pub fn stream_state(&self, id: u32) -> Option<StreamState> {
        self.streams.get(id as usize).map(|s| s.state)
    }

    /// PCM bytes queued on stream `id`.
    pub fn queued_bytes(&self, id: u32) -> Option<u64> {
        self.streams.get(id as usize).map(|s| s.queued_bytes)
    }

    /// Buffers queued on stream `id`.
    pub fn queued_buffers(&self, id: u32) -> Option<usize> {
        self.streams.get(id as usize).map(|s| s.queue.len())
    }

    pub fn stream(&self, id: u32) -> Option<&Stream> {
        self.streams.get(id as usize)
    }

    pub fn controls(&self) -> &Controls {
        &self.controls
    }

    /// Event buffers the driver has posted and the card has not used yet.
    pub fn events_posted(&self) -> usize {
        self.events.len()
    }

    pub fn events_undelivered(&self) -> u64 {
        self.events.undelivered
    }

    /// Device time for the tap: ns since the daemon started.
    pub(crate) fn tap_time(&self, mono_ns: u64) -> u64 {
        mono_ns.saturating_sub(self.epoch_ns)
    }

    pub(crate) fn stream_index(&self, id: u32) -> Result<usize, RequestError> {
        let idx = id as usize;
        if idx < self.streams.len() {
            Ok(idx)
        } else {
            Err(RequestError::UnknownStream(id))
        }
    }

    /// A chain taken off `queue`.
    pub fn handle_chain<M: GuestMemory + ?Sized>(
        &mut self,
        mem: &M,
        queue: u16,
        chain: Chain,
        now: u64,
    ) {
        if chain.broken {
            // Nothing in it can be trusted to be the driver's buffer (a loop repeats the same
            // memory), so nothing is written and the used length is 0 — never more than the
            // memory the chain really covers.
            let queue_name = match queue {
                CONTROL_QUEUE => "control",
                EVENT_QUEUE => "event",
                TX_QUEUE => "tx",
                RX_QUEUE => "rx",
                _ => "unknown",
            };
            self.reject(
                &Rejected {
                    queue: queue_name,
                    head: chain.head,
                    request: None,
                    stream: None,
                    status: None,
                },
                &if chain.too_long {
                    RequestError::TooManyDescriptors {
                        max: crate::chain::MAX_DESCRIPTORS,
                    }
                } else {
                    RequestError::BrokenChain
                },
                now,
            );
            self.used.push(Used {
                queue,
                head: chain.head,
                len: 0,
            });
            return;
        }
        match queue {
            CONTROL_QUEUE => self.handle_control(mem, chain, now),
            EVENT_QUEUE => {
                let head = chain.head;
                let limit = self.ring_size(EVENT_QUEUE) as usize;
                if let Err(e) = self.events.post(mem, chain, limit) {
                    self.reject(
                        &Rejected {
                            queue: "event",
                            head,
                            request: None,
                            stream: None,
                            status: None,
                        },
                        &e,
                        now,
                    );
                    self.used.push(Used {
                        queue: EVENT_QUEUE,
                        head,
                        len: 0,
                    });
                }
            }
            TX_QUEUE | RX_QUEUE => self.handle_xfer(mem, queue, chain, now),
            _ => {
                warn!("chain {} on unknown queue {queue} returned", chain.head);
                self.used.push(Used {
                    queue,
                    head: chain.head,
                    len: 0,
                });
            }
        }
    }

    /// Delivers an event to the driver if it posted a buffer for one.
    pub(crate) fn send_event<M: GuestMemory + ?Sized>(
        &mut self,
        mem: &M,
        event: &[u8; size::EVENT],
    ) -> bool {
        if self.stopped[EVENT_QUEUE as usize] {
            self.events.undelivered = self.events.undelivered.saturating_add(1);
            return false;
        }
        self.events.send(mem, event, &mut self.used)
    }

    /// The queue of stream direction `dir` is stopped.
    fn dir_stopped(&self, dir: Direction) -> bool {
        let q = match dir {
            Direction::Output => TX_QUEUE,
            Direction::Input => RX_QUEUE,
        };
        self.stopped[q as usize]
    }

    /// The card completes TX buffers without the clock (`--pacing none`, or a reader asked).
    fn unpaced(&self) -> bool {
        self.cfg.pacing == Pacing::None || self.tap.no_pacing_requested()
    }

    /// Whether output must wait: `--wait-for-reader` with no reader, or a reader is full.
    fn output_held(&self) -> bool {
        (self.cfg.wait_for_reader && !self.tap.has_readers()) || !self.tap.can_accept()
    }

    /// Completes every buffer of stream `idx` that is due at `now`.
    pub fn service_stream<M: GuestMemory + ?Sized>(&mut self, mem: &M, idx: usize, now: u64) {
        loop {
            let unpaced = self.unpaced();
            let held = self.output_held();
            let Some(dir) = self.streams.get(idx).map(|s| s.direction) else {
                return;
            };
            if self.dir_stopped(dir) {
                return;
            }
            let Some(s) = self.streams.get_mut(idx) else {
                return;
            };
            if s.state != StreamState::Running {
                return;
            }
            let Some(head_len) = s.queue.front().map(|b| b.len as u64) else {
                if s.direction == Direction::Output && unpaced {
                    // Without pacing the clock does not advance with the bytes: the queue
                    // ran dry now (the last buffer's wait ended with nothing behind it).
                    s.clock.starve_at(now);
                } else {
                    s.clock.starve();
                }
                return;
            };
            if s.direction == Direction::Output {
                if unpaced {
                    // Real time no longer applies; the clock restarts when it does again.
                    s.unpaced = true;
                    if held {
                        return;
                    }
                    if s.queued_bytes.saturating_sub(head_len) < s.unpaced_reserve() {
                        // The stream keeps its reserve: the head completes when enough has
                        // arrived behind it or its own duration has passed (ReserveWait).
                        let since = s.reserve_wait.begin(now);
                        let due = since.saturating_add(s.clock.bytes_to_ns(head_len));
                        if due > now {
                            return;
                        }
                    }
                    self.complete_tx_head(mem, idx, now);
                    continue;
                }
                s.reserve_wait.clear();
                if s.unpaced {
                    s.unpaced = false;
                    s.clock.start(now);
                }
                if s.clock.is_held() {
                    if held {
                        return;
                    }
                    if let Some(d) = s.clock.resume(now) {
                        debug!("stream {}: clock resumes after {d} ns held", s.id);
                    }
                }
                let Some(deadline) = s.clock.deadline(head_len) else {
                    return;
                };
                if deadline > now {
                    return;
                }
                if held {
                    debug!("stream {}: clock held (no reader / reader full)", s.id);
                    s.clock.hold(now);
                    return;
                }
                s.clock.complete(head_len);
                self.complete_tx_head(mem, idx, deadline);
            } else {
                if s.clock.is_held() {
                    s.clock.resume(now);
                }
                let Some(deadline) = s.clock.deadline(head_len) else {
                    return;
                };
                if deadline > now {
                    return;
                }
                s.clock.complete(head_len);
                self.complete_rx_head(mem, idx);
            }
        }
    }

    /// Completes whatever is due on every stream.
    pub fn service_all<M: GuestMemory + ?Sized>(&mut self, mem: &M, now: u64) {
        for idx in 0..self.streams.len() {
            self.service_stream(mem, idx, now);
        }
    }

    /// When stream `idx` next needs the worker (its timer's deadline), if it does.
    pub fn next_deadline(&self, idx: usize) -> Option<u64> {
        let s = self.streams.get(idx)?;
        if s.state != StreamState::Running || self.dir_stopped(s.direction) {
            return None;
        }
        if s.direction == Direction::Output && self.unpaced() {
            // Only a waiting head needs the timer (a hold ends with the tap's notifier).
            if self.output_held() {
                return None;
            }
            let head = s.queue.front()?;
            return s.reserve_wait.due(s.clock.bytes_to_ns(head.len as u64));
        }
        let head = s.queue.front()?;
        s.clock.deadline(head.len as u64)
    }

    /// The tap says something changed: reader requests, readers coming or going, room.
    pub fn on_tap_notify<M: GuestMemory + ?Sized>(&mut self, mem: &M, now: u64) {
        for req in self.tap.take_requests() {
            match req {
                TapRequest::SetControl { id, values } => self.reader_set_control(mem, id, values),
            }
        }
        self.service_all(mem, now);
    }

    fn reader_set_control<M: GuestMemory + ?Sized>(&mut self, mem: &M, id: u32, values: Vec<i64>) {
        match self.controls.set_values(id, &values) {
            Ok(false) => debug!("reader set control {id} to its current value"),
            Ok(true) => {
                info!("reader set control {id} to {values:?}");
                self.tap.publish(&Record::Control {
                    id,
                    origin: ControlOrigin::Reader,
                    values,
                });
                if self.ctls_negotiated {
                    if let Ok(cid) = u16::try_from(id) {
                        self.send_event(mem, &ctl_notify_bytes(cid, ctl::EVT_MASK_VALUE));
                    }
                }
            }
            Err(e) => warn!("reader's control change refused: {e}"),
        }
    }

    /// The frontend stops a vring (GET_VRING_BASE: the VM pauses, migrates, or the driver
    /// resets the device). Nothing is put in that ring until it restarts, and the clocks of
    /// its streams stop: buffers stay in flight, as they would in a paused machine, and
    /// either play on after [`restart_queue`](Self::restart_queue) or are forgotten if the
    /// driver turns out to have reset the device.
    ///
    /// Completing them here instead would put them in the used ring while the guest cannot
    /// take the interrupt, and the Linux driver then never sends another buffer; why the
    /// GET_VRING_BASE reply does not "un-pop" them either is explained at
    /// `SndBackend::stop_vring` (backend.rs).
    pub fn stop_queue(&mut self, queue: u16, now: u64) {
        let Some(flag) = self.stopped.get_mut(queue as usize) else {
            return;
        };
        *flag = true;
        let dir = match queue {
            TX_QUEUE => Direction::Output,
            RX_QUEUE => Direction::Input,
            _ => return,
        };
        let mut lines = Vec::new();
        for s in self.streams.iter_mut().filter(|s| s.direction == dir) {
            if s.state == StreamState::Running {
                s.clock.hold(now);
            }
            // Unpaced, a waiting head waits afresh once the ring runs again.
            s.reserve_wait.clear();
            if !s.queue.is_empty() {
                lines.push(format!(
                    "stream {}: queue stopped with {} buffers in flight",
                    s.id,
                    s.queue.len()
                ));
            }
        }
        for l in lines {
            self.log_device_event(now, &l);
        }
    }

    /// A stopped vring runs again. `fresh` says the ring restarted from index 0, i.e. the
    /// driver reset the device and the descriptors the card still held are no longer
    /// anybody's: they are forgotten (not returned — that would corrupt the new ring).
    /// Otherwise the held buffers play on, the clocks re-anchored at `now`.
    pub fn restart_queue<M: GuestMemory + ?Sized>(
        &mut self,
        mem: &M,
        queue: u16,
        fresh: bool,
        now: u64,
    ) {
        let Some(flag) = self.stopped.get_mut(queue as usize) else {
            return;
        };
        *flag = false;
        let dir = match queue {
            EVENT_QUEUE => {
                if fresh {
                    let n = self.events.clear();
                    debug!("event queue restarted from 0: {n} stale event buffers forgotten");
                }
                return;
            }
            CONTROL_QUEUE => {
                if fresh {
                    self.log_device_event(
                        now,
                        "control queue restarted from 0: the driver reset the device",
                    );
                    self.reset_streams::<M>(None, now, "driver reset");
                }
                return;
            }
            TX_QUEUE => Direction::Output,
            RX_QUEUE => Direction::Input,
            _ => return,
        };
        let mut lines = Vec::new();
        for s in self.streams.iter_mut().filter(|s| s.direction == dir) {
            if fresh && !s.queue.is_empty() {
                lines.push(format!(
                    "stream {}: {} buffers of the old ring forgotten (driver reset)",
                    s.id,
                    s.queue.len()
                ));
                s.take_all();
            }
            if s.clock.is_held() && s.direction == Direction::Input {
                s.clock.resume(now);
            }
        }
        for l in lines {
            self.log_device_event(now, &l);
        }
        self.service_all(mem, now);
    }

    /// The queue was stopped and not restarted.
    pub fn queue_stopped(&self, queue: u16) -> bool {
        self.stopped.get(queue as usize).copied().unwrap_or(false)
    }
    /// The device was reset, or the frontend went away: every stream is stopped and
    /// released (readers get the records), held buffers are returned if `mem` is given (the
    /// rings still exist) or forgotten, posted event buffers are forgotten.
    pub fn reset<M: GuestMemory + ?Sized>(&mut self, mem: Option<&M>, now: u64, why: &str) {
        self.reset_streams(mem, now, why);
        self.stopped = [false; NUM_QUEUES];
        let dropped = self.events.clear();
        if dropped > 0 {
            debug!("{dropped} event buffers forgotten ({why})");
        }
    }

    /// Like [`reset`](Self::reset) but leaves the event queue alone: when a driver reset is
    /// noticed on the control queue, the event queue may already hold the new driver's
    /// buffers (its own restart is noticed separately).
    pub fn reset_streams<M: GuestMemory + ?Sized>(&mut self, mem: Option<&M>, now: u64, why: &str) {
        let time_ns = self.tap_time(now);
        for idx in 0..self.streams.len() {
            let Some(s) = self.streams.get_mut(idx) else {
                continue;
            };
            let state = s.state;
            let queued = s.queued_bytes;
            let id = s.id;
            if state == StreamState::Running {
                self.tap.publish(&Record::Stop {
                    stream: id,
                    time_ns,
                    drained: queued == 0,
                    discarded_bytes: queued,
                });
            }
            match mem {
                Some(m) => {
                    self.return_all(m, idx);
                }
                None => {
                    if let Some(s) = self.streams.get_mut(idx) {
                        let gone: u64 = s.take_all().iter().map(|b| b.len as u64).sum();
                        s.stats.returned_bytes = s.stats.returned_bytes.saturating_add(gone);
                    }
                }
            }
            if !matches!(state, StreamState::Idle | StreamState::Released) {
                self.log_release(idx, now, why);
                self.tap.publish(&Record::Release {
                    stream: id,
                    time_ns,
                });
            }
            if let Some(s) = self.streams.get_mut(idx) {
                let fresh = Stream::new(s.id, s.direction);
                *s = fresh;
            }
        }
    }
}
