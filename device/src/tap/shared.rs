//! What the queue worker (through `TapHandle`) and the tap thread share: the wake-up and
//! notifier eventfds, the flags the worker reads on its hot path, the request list and the
//! inject buffers. Everything here is either atomic or behind a lock held for a few copies.

use std::io;
use std::os::fd::{AsRawFd, OwnedFd};
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

/// While every subscribed reader takes the stream in bulk (see [`Shared::bulk`]), the PCM
/// the worker publishes before it wakes the tap thread itself: a quarter of a MiB, 1.4 s of
/// 48 kHz S16 stereo, so an unpaced stream that runs at hundreds of MiB/s wakes the tap
/// thread (and, through its sends, the reader) a few thousand times a second, not one
/// period at a time.
pub(super) const BULK_WAKE_BYTES: usize = 256 * 1024;

/// While readers take the stream in bulk, the longest PCM waits before the tap thread takes
/// it (its timer: [`Shared::bulk_timer_fd`]). What a file capture notices of the batching.
pub(super) const BULK_DELAY_NS: i64 = 2_000_000;

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
    /// Every subscribed reader takes the stream in bulk: none is live (none is shown a gap
    /// when it falls behind, so none is in a hurry) and the card runs unpaced (`--pacing
    /// none`, or a reader asked for SUB_NO_PACING). The worker then wakes the tap thread per [`BULK_WAKE_BYTES`] and leaves the
    /// rest to [`bulk_timer`](Self::bulk_timer): a file capture gets its audio in large
    /// sends rather than a wake-up of three threads per 4 KiB period. Set by the tap thread.
    pub bulk: AtomicBool,
    /// PCM bytes published in bulk since the tap thread last took what was published.
    bulk_pending: AtomicUsize,
    /// A one-shot timerfd the worker arms for [`BULK_DELAY_NS`] when it publishes the first
    /// bulk bytes after the tap thread has taken the last: it bounds how long they wait.
    bulk_timer: OwnedFd,
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
            bulk: AtomicBool::new(false),
            bulk_pending: AtomicUsize::new(0),
            bulk_timer: crate::clock::monotonic_timerfd()?,
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

    pub fn bulk_timer_fd(&self) -> &OwnedFd {
        &self.bulk_timer
    }

    /// Wakes the tap thread unless a wake-up is already pending. The only syscall the
    /// worker's publish path makes, and at most once per tap-thread pass.
    pub fn wake_tap(&self) {
        if !self.wake_pending.swap(true, Ordering::AcqRel) {
            self.force_wake();
        }
    }

    /// The worker published `bytes` of PCM: wakes the tap thread, at once unless readers take
    /// the stream in bulk (then per [`BULK_WAKE_BYTES`], the timer taking the rest) or the
    /// worker defers its wake-ups (then per [`DEFERRED_WAKE_BYTES`]).
    pub fn wake_tap_for_pcm(&self, bytes: usize) {
        if self.bulk.load(Ordering::Acquire) {
            let before = self.bulk_pending.fetch_add(bytes, Ordering::AcqRel);
            if before == 0 {
                // The first since the tap thread took the last: what follows waits at most
                // BULK_DELAY_NS. (Published just as the tap thread took the pending count,
                // these bytes may already be on their way: the timer then finds nothing.)
                self.arm_bulk_timer();
            }
            if before < BULK_WAKE_BYTES && before + bytes >= BULK_WAKE_BYTES {
                self.wake_tap();
            }
            return;
        }
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

    fn arm_bulk_timer(&self) {
        let spec = libc::itimerspec {
            it_interval: libc::timespec {
                tv_sec: 0,
                tv_nsec: 0,
            },
            it_value: libc::timespec {
                tv_sec: 0,
                tv_nsec: BULK_DELAY_NS as libc::c_long,
            },
        };
        // SAFETY: the fd is ours; spec is a valid itimerspec; the old value is not asked for.
        let r = unsafe {
            libc::timerfd_settime(self.bulk_timer.as_raw_fd(), 0, &spec, std::ptr::null_mut())
        };
        if r < 0 {
            // Cannot happen with a valid fd and spec; should it, wake the thread now rather
            // than leave the audio waiting.
            log::warn!(
                "tap: cannot arm the bulk timer: {}",
                io::Error::last_os_error()
            );
            self.wake_tap();
        }
    }

    /// Tap thread, before it takes what the worker published: later bulk publishes start a
    /// new batch (and arm the timer again). Consumes a timer expiry.
    pub fn take_bulk(&self) {
        self.bulk_pending.store(0, Ordering::Release);
        let mut buf = [0u8; 8];
        // SAFETY: reads at most 8 bytes into our buffer from our non-blocking timerfd.
        let _ = unsafe { libc::read(self.bulk_timer.as_raw_fd(), buf.as_mut_ptr().cast(), 8) };
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
