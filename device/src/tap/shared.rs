//! What the queue worker (through `TapHandle`) and the tap thread share: the wake-up and
//! notifier eventfds, the flags the worker reads on its hot path, the request list and the
//! inject buffers. Everything here is either atomic or behind a lock held for a few copies.

use std::io;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use dsproxy_wire::record::{Hello, Record};
use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};

use super::inject::InjectBuffers;
use super::TapRequest;

/// An encoded record, shared by every reader queue it is in (encoded once per publish).
pub(super) type Frame = Arc<Vec<u8>>;

/// What the worker hands the tap thread, in the order the card produced it.
pub(super) enum Item {
    /// A record other than PCM: kept whole for the state mirror, and its encoding.
    Event { rec: Record, frame: Frame },
    /// One PCM record (at most `MAX_PCM_CHUNK` bytes of audio), already encoded.
    Pcm {
        stream: u32,
        offset: u64,
        time_ns: u64,
        data_len: usize,
        frame: Frame,
    },
    /// A new device description for readers that connect from now on.
    Hello(Hello),
    /// This many records were not handed over here (the tap thread was too far behind, see
    /// [`EVENTS_INFLIGHT_LIMIT`]): readers are told, at this point of the stream.
    Lost(u64),
}

/// Records other than PCM the worker may have handed the tap thread and the thread not yet
/// taken. Far more than a thread that runs ever lets pile up (it takes 1024 per wake-up);
/// the bound only matters if it stalls while a guest makes the card publish in a loop (a
/// control request at a time), which would otherwise grow the daemon without bound. Beyond
/// it, records are counted as lost and readers told ([`Item::Lost`]); the worker never
/// waits.
pub(super) const EVENTS_INFLIGHT_LIMIT: usize = 16 * 1024;

/// While the worker polls for the guest, the PCM it publishes before it wakes the tap thread:
/// sixteen 4 KiB periods. A poll episode is at most a millisecond (see
/// [`crate::guest_poll::EPISODE_MAX_NS`]), which bounds the delay a reader sees.
pub(super) const DEFERRED_WAKE_BYTES: usize = 64 * 1024;

/// The smallest bound on PCM in flight between the worker and the tap thread.
const MIN_INFLIGHT_LIMIT: usize = 16 << 20;

pub(super) struct Shared {
    /// Wakes the tap thread (new items, room in an inject buffer, shutdown).
    wake: EventFd,
    /// Set while a wake-up is pending, so a burst of publishes costs one eventfd write.
    wake_pending: AtomicBool,
    /// The worker is polling for the guest's next buffer (it is awake anyway): PCM it
    /// publishes wakes the tap thread once per [`DEFERRED_WAKE_BYTES`], or when the poll
    /// ends, not at every publish (see [`TapHandle::defer_wakes`](super::TapHandle::defer_wakes)).
    deferring: AtomicBool,
    /// PCM bytes published since the last wake-up while deferring.
    deferred_bytes: AtomicUsize,
    /// Tells the queue worker that a flag changed, a request or injected audio arrived.
    notifier: EventFd,
    /// Tap::shutdown asked the thread to stop.
    pub stop: AtomicBool,
    /// Readers connected (subscribed or not): PCM is only encoded when there may be a taker.
    pub connected: AtomicUsize,
    /// Readers that sent SUBSCRIBE.
    pub subscribed: AtomicUsize,
    /// Some subscribed reader asked for SUB_NO_PACING.
    pub no_pacing: AtomicBool,
    /// No non-live reader is above the high-water mark.
    pub accept: AtomicBool,
    /// PCM bytes published but not yet fanned out by the tap thread: bounds what the tap
    /// holds if its thread falls behind the worker (e.g. starved of CPU).
    pub inflight: AtomicUsize,
    /// The bound on `inflight`: generous, so only a stalled tap thread reaches it (a live
    /// reader must not hold the card because the tap thread was briefly descheduled).
    inflight_limit: usize,
    /// The worker saw `inflight` above its bound; the tap thread notifies the
    /// worker when it drains below it.
    pub inflight_blocked: AtomicBool,
    pub high_water: usize,
    /// Records other than PCM handed to the tap thread and not yet taken by it.
    events_inflight: AtomicUsize,
    /// Records not handed over since the last [`Item::Lost`].
    events_lost: AtomicU64,
    /// Requests the worker has not taken yet: at most one per control (see
    /// [`push_request`](Self::push_request)), so bounded by the card's controls.
    pub requests: Mutex<Vec<TapRequest>>,
    pub inject: InjectBuffers,
}

impl Shared {
    pub fn new(high_water: usize, inject_limit: usize) -> io::Result<Arc<Shared>> {
        Ok(Arc::new(Shared {
            wake: EventFd::new(EFD_NONBLOCK)?,
            wake_pending: AtomicBool::new(false),
            deferring: AtomicBool::new(false),
            deferred_bytes: AtomicUsize::new(0),
            notifier: EventFd::new(EFD_NONBLOCK)?,
            stop: AtomicBool::new(false),
            connected: AtomicUsize::new(0),
            subscribed: AtomicUsize::new(0),
            no_pacing: AtomicBool::new(false),
            accept: AtomicBool::new(true),
            inflight: AtomicUsize::new(0),
            inflight_limit: high_water.saturating_mul(2).max(MIN_INFLIGHT_LIMIT),
            inflight_blocked: AtomicBool::new(false),
            high_water,
            events_inflight: AtomicUsize::new(0),
            events_lost: AtomicU64::new(0),
            requests: Mutex::new(Vec::new()),
            inject: InjectBuffers::new(inject_limit),
        }))
    }

    pub fn wake_fd(&self) -> &EventFd {
        &self.wake
    }

    pub fn notifier_fd(&self) -> &EventFd {
        &self.notifier
    }

    /// Wakes the tap thread unless a wake-up is already pending. The only syscall the
    /// worker's publish path makes, and at most once per tap-thread pass.
    pub fn wake_tap(&self) {
        if !self.wake_pending.swap(true, Ordering::AcqRel) {
            self.force_wake();
        }
    }

    /// The worker published `bytes` of PCM: wakes the tap thread, at once unless the worker
    /// defers its wake-ups, in which case once [`DEFERRED_WAKE_BYTES`] have piled up.
    pub fn wake_tap_for_pcm(&self, bytes: usize) {
        if self.deferring.load(Ordering::Acquire) {
            let piled = self.deferred_bytes.fetch_add(bytes, Ordering::AcqRel) + bytes;
            if piled < DEFERRED_WAKE_BYTES {
                return;
            }
            self.deferred_bytes.store(0, Ordering::Release);
        }
        self.wake_tap();
    }

    /// Worker: from now on PCM publishes wake the tap thread per [`DEFERRED_WAKE_BYTES`].
    pub fn begin_deferring(&self) {
        self.deferring.store(true, Ordering::Release);
    }

    /// Worker: publishes wake the tap thread at once again; what was deferred wakes it now.
    pub fn end_deferring(&self) {
        self.deferring.store(false, Ordering::Release);
        if self.deferred_bytes.swap(0, Ordering::AcqRel) > 0 {
            self.wake_tap();
        }
    }

    /// Wakes the tap thread unconditionally (shutdown).
    pub fn force_wake(&self) {
        if let Err(e) = self.wake.write(1) {
            // EAGAIN: the counter is saturated, the thread is certainly awake.
            if e.kind() != io::ErrorKind::WouldBlock {
                log::warn!("tap: cannot wake the tap thread: {e}");
            }
        }
    }

    /// Tap thread: consumes the wake-up. Items sent after this are seen by the caller's
    /// following drain or wake it again.
    pub fn take_wake(&self) {
        let _ = self.wake.read();
        self.wake_pending.swap(false, Ordering::AcqRel);
    }

    /// Tells the worker something changed.
    pub fn notify(&self) {
        if let Err(e) = self.notifier.write(1) {
            if e.kind() != io::ErrorKind::WouldBlock {
                log::warn!("tap: cannot signal the notifier: {e}");
            }
        }
    }

    pub fn clear_notifier(&self) {
        let _ = self.notifier.read();
    }

    pub fn can_accept(&self) -> bool {
        self.accept.load(Ordering::Acquire)
            && self.inflight.load(Ordering::Acquire) <= self.inflight_limit
    }

    /// Worker: `bytes` of PCM are on their way to the tap thread.
    pub fn add_inflight(&self, bytes: usize) {
        let now = self.inflight.fetch_add(bytes, Ordering::AcqRel) + bytes;
        if now > self.inflight_limit {
            self.inflight_blocked.store(true, Ordering::Release);
        }
    }

    /// Tap thread (or a failed send): `bytes` of PCM left the in-flight queue.
    pub fn sub_inflight(&self, bytes: usize) {
        self.inflight.fetch_sub(bytes, Ordering::AcqRel);
    }

    /// Tap thread, after a drain: if the worker stopped because of the in-flight bound and
    /// the bound is met again, tell it.
    pub fn release_inflight_block(&self) {
        if self.inflight_blocked.load(Ordering::Acquire)
            && self.inflight.load(Ordering::Acquire) <= self.inflight_limit
        {
            self.inflight_blocked.store(false, Ordering::Release);
            self.notify();
        }
    }

    /// Worker: room for one more non-PCM record? If not, it is counted as lost (readers
    /// learn the count from the [`Item::Lost`] sent with the next record that fits, and the
    /// tap thread logs it then).
    pub fn reserve_event(&self) -> bool {
        if self.events_inflight.fetch_add(1, Ordering::AcqRel) < EVENTS_INFLIGHT_LIMIT {
            return true;
        }
        self.events_inflight.fetch_sub(1, Ordering::AcqRel);
        self.events_lost.fetch_add(1, Ordering::AcqRel);
        false
    }

    /// A reserved record was not sent after all (the tap thread is gone), or the tap thread
    /// took one.
    pub fn release_event(&self) {
        self.events_inflight.fetch_sub(1, Ordering::AcqRel);
    }

    /// Worker: the records lost since the last call.
    pub fn take_lost(&self) -> u64 {
        self.events_lost.swap(0, Ordering::AcqRel)
    }

    /// Queues a reader's request for the worker. A SET_CONTROL replaces one for the same
    /// control that the worker has not taken yet: the card would apply both in turn and end
    /// at the later values, so only those are kept, and a reader sending faster than the
    /// worker takes them cannot grow the list beyond one entry per control.
    pub fn push_request(&self, req: TapRequest) {
        let push = |q: &mut Vec<TapRequest>| {
            let TapRequest::SetControl { id, .. } = &req;
            match q
                .iter_mut()
                .find(|r| matches!(r, TapRequest::SetControl { id: i, .. } if i == id))
            {
                Some(pending) => *pending = req,
                None => q.push(req),
            }
        };
        match self.requests.lock() {
            Ok(mut q) => push(&mut q),
            Err(poisoned) => push(&mut poisoned.into_inner()),
        }
        self.notify();
    }

    pub fn take_requests(&self) -> Vec<TapRequest> {
        match self.requests.lock() {
            Ok(mut q) => std::mem::take(&mut *q),
            Err(poisoned) => std::mem::take(&mut *poisoned.into_inner()),
        }
    }
}
