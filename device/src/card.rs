//! The card: streams, controls, jacks and the event queue, driven by descriptor chains and
//! by the clock. It knows nothing of vhost-user: the caller pops chains off the queues,
//! passes the guest memory and the current CLOCK_MONOTONIC time, and afterwards puts what
//! [`Card::take_used`] returns into the used rings. That makes every handler testable over
//! mock queues with made-up times.

use dsproxy_wire::record::{ControlOrigin, Direction, Record};
use log::{debug, info, warn};
use vm_memory::GuestMemory;

use crate::chain::Chain;
use crate::config::CardConfig;
use crate::controls::Controls;
use crate::error::{Rejected, RequestError};
use crate::event_queue::EventQueue;
use crate::pcm::{Stream, StreamState};
use crate::reject_log::{LineBudget, RejectLog};
use crate::spec::{
    ctl, ctl_notify_bytes, size, CONTROL_QUEUE, EVENT_QUEUE, NUM_QUEUES, RX_QUEUE, TX_QUEUE,
};
use crate::Used;

/// A reader's request, handed to the queue worker.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TapRequest {
    SetControl { id: u32, values: Vec<i64> },
}

/// Writes the PCM bytes from offset `at` of a buffer into `out` (see [`CardTap::publish_pcm`]).
pub type PcmFill<'a> = dyn FnMut(usize, &mut [u8]) -> Result<(), RequestError> + 'a;

/// What the card needs of the tap. [`TapHandle`](crate::tap::TapHandle) is the real one; tests record instead.
pub trait CardTap {
    fn publish(&self, rec: &Record);
    /// Publishes `len` PCM bytes the card played. `fill(at, out)` writes the bytes from `at`
    /// on into `out`, a record's data area: the card reads guest memory straight into the
    /// tap's frames, chunk by chunk, with no buffer in between. An error from `fill` stops
    /// the publishing and is returned.
    fn publish_pcm(
        &self,
        stream: u32,
        offset: u64,
        time_ns: u64,
        len: usize,
        fill: &mut PcmFill<'_>,
    ) -> Result<(), RequestError>;
    fn has_readers(&self) -> bool;
    fn can_accept(&self) -> bool;
    fn no_pacing_requested(&self) -> bool;
    fn take_requests(&self) -> Vec<TapRequest>;
    fn read_inject(&self, stream: u32, out: &mut [u8]) -> usize;
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
    pub(crate) stopped: [bool; NUM_QUEUES],
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
    /// queued bytes returned or dropped unplayed) and starts counting afresh. The requests
    /// themselves are logged at debug level; this is the one info line per use of a stream —
    /// and at most a few a second, so a guest looping PREPARE/RELEASE cannot flood the log
    /// either.
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
}
