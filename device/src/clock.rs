//! The card's clock: when a PCM buffer is due, like a DMA engine consuming a ring.
//!
//! Per running stream the clock keeps an anchor instant (CLOCK_MONOTONIC, ns) and the bytes
//! completed since then. The buffer at the head of the queue is due at
//! `anchor + ceil((consumed + head_len) * 1e9 / byte_rate)`: every deadline is computed from
//! the anchor in integer nanoseconds, so rounding never accumulates however many buffers go by.
//!
//! The anchor moves only when the stream (re)starts: at START, after a starvation longer than
//! the grace (no burst to catch up — the gap is reported as an xrun instead), and when a hold
//! (backpressure, `--wait-for-reader`) ends. This module is pure arithmetic on `now` values the
//! caller supplies, so it is tested without sleeping; [`MonotonicTimer`] is the timerfd the
//! worker arms to the next deadline.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

const NS_PER_S: u128 = 1_000_000_000;

/// The pacing state of one stream.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PacingClock {
    byte_rate: u64,
    /// None while the clock does not run (stream not started, or held).
    anchor: Option<u64>,
    /// Bytes completed since the anchor.
    consumed: u64,
    /// The instant the queue ran dry while running.
    starved_at: Option<u64>,
    /// The instant a hold began.
    held_since: Option<u64>,
}

impl PacingClock {
    pub fn new(byte_rate: u64) -> PacingClock {
        PacingClock {
            byte_rate,
            ..PacingClock::default()
        }
    }

    pub fn byte_rate(&self) -> u64 {
        self.byte_rate
    }

    /// Nanoseconds `bytes` last at this rate, rounded up (a buffer is never due early).
    pub fn bytes_to_ns(&self, bytes: u64) -> u64 {
        if self.byte_rate == 0 {
            return u64::MAX;
        }
        let ns = (bytes as u128 * NS_PER_S).div_ceil(self.byte_rate as u128);
        u64::try_from(ns).unwrap_or(u64::MAX)
    }

    /// The clock starts (START, or resumption after a hold) at `now`.
    pub fn start(&mut self, now: u64) {
        self.anchor = Some(now);
        self.consumed = 0;
        self.starved_at = None;
        self.held_since = None;
    }

    /// The clock stops (STOP, RELEASE, reset).
    pub fn stop(&mut self) {
        self.anchor = None;
        self.consumed = 0;
        self.starved_at = None;
        self.held_since = None;
    }

    /// The clock runs or is held (the stream is started).
    pub fn is_started(&self) -> bool {
        self.anchor.is_some() || self.held_since.is_some()
    }

    pub fn is_held(&self) -> bool {
        self.held_since.is_some()
    }

    pub fn is_starved(&self) -> bool {
        self.starved_at.is_some()
    }

    /// When the last completed buffer ended (the anchor if none completed yet).
    pub fn position(&self) -> Option<u64> {
        let a = self.anchor?;
        Some(a.saturating_add(self.bytes_to_ns(self.consumed)))
    }

    /// When a head buffer of `head_len` bytes is due; None if the clock is not running.
    pub fn deadline(&self, head_len: u64) -> Option<u64> {
        if self.starved_at.is_some() || self.held_since.is_some() {
            return None;
        }
        let a = self.anchor?;
        Some(a.saturating_add(self.bytes_to_ns(self.consumed.saturating_add(head_len))))
    }

    /// A buffer of `len` bytes was completed at its deadline.
    pub fn complete(&mut self, len: u64) {
        self.consumed = self.consumed.saturating_add(len);
    }

    /// The queue is empty: the clock ran dry when the last buffer ended.
    pub fn starve(&mut self) {
        if self.starved_at.is_none() && self.held_since.is_none() {
            self.starved_at = self.position();
        }
    }

    /// The queue ran dry at `now` (unpaced playback: the last buffer's wait ended with
    /// nothing behind it). Unlike [`starve`](Self::starve), the instant is not taken from the anchor:
    /// without pacing, completed bytes do not advance the clock.
    pub fn starve_at(&mut self, now: u64) {
        if self.starved_at.is_none() && self.held_since.is_none() {
            self.starved_at = Some(now);
        }
    }

    /// A buffer arrived at `now`. After a starvation of at most `grace_ns` the clock goes on
    /// from its anchor (the device had that much slack, like a FIFO); after a longer one it
    /// re-anchors at `now` and returns how long it ran dry.
    pub fn feed(&mut self, now: u64, grace_ns: u64) -> Option<u64> {
        let since = self.starved_at.take()?;
        let gap = now.saturating_sub(since);
        if gap <= grace_ns {
            return None;
        }
        self.anchor = Some(now);
        self.consumed = 0;
        Some(gap)
    }

    /// The head buffer is due but may not be completed yet (backpressure, no reader): the
    /// clock stops until [`resume`](Self::resume).
    pub fn hold(&mut self, now: u64) {
        if self.held_since.is_none() {
            self.held_since = Some(now);
            self.anchor = None;
            self.consumed = 0;
            self.starved_at = None;
        }
    }

    /// The hold ends at `now`: the clock restarts from `now`. Returns how long it was held.
    pub fn resume(&mut self, now: u64) -> Option<u64> {
        let since = self.held_since.take()?;
        self.anchor = Some(now);
        self.consumed = 0;
        self.starved_at = None;
        Some(now.saturating_sub(since))
    }
}

/// Without pacing, the wait of a running output stream's head buffer while the stream keeps
/// its reserve.
///
/// `--pacing none` completes TX buffers as soon as readers have them — but not all of them:
/// the Linux driver treats each completion as a period played, and what the guest sees in
/// flight must not run low just because the device is fast:
///
/// - If the device completed everything the guest had sent, the guest's ALSA ring would be
///   empty (hw_ptr = appl_ptr) whenever the program is a little late with its next write:
///   ALSA declares an underrun, the OSS emulation re-prepares the stream (one
///   stop/release/prepare/start per period), and now and then a write times out (EIO).
/// - With only one period in flight, a completion still makes snd-pcm-oss top up its silence
///   (it keeps period + 16 frames of data or silence ahead of the hardware): it writes 16
///   frames of silence at appl_ptr — where the program, which our completion has just let
///   write, is copying its next period without the stream lock. The device then reads that
///   period with its first 16 frames zeroed (seen with the stock 6.12 guest).
///
/// So the stream keeps a reserve of two periods queued (see `Stream::unpaced_reserve`): the
/// head completes at once only if at least the reserve stays queued behind it. Otherwise it
/// waits, and completes when enough has arrived behind it (the guest is still writing), or
/// once its own real-time duration has passed since its wait began (the guest has stopped
/// writing — a drain waits for exactly these completions — or is really late, as it would be
/// with real hardware).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ReserveWait {
    /// Since when the head buffer has been waiting; None if it is not.
    since: Option<u64>,
}

impl ReserveWait {
    /// The head buffer may not complete at once at `now`: its wait starts unless it has
    /// already begun. Returns when it began.
    pub fn begin(&mut self, now: u64) -> u64 {
        *self.since.get_or_insert(now)
    }

    /// When the waiting head, which lasts `duration_ns`, is due; None if it is not waiting.
    pub fn due(&self, duration_ns: u64) -> Option<u64> {
        self.since.map(|s| s.saturating_add(duration_ns))
    }

    /// The head buffer changed (completed, returned) or the stream stopped: nothing waits.
    pub fn clear(&mut self) {
        self.since = None;
    }

    pub fn is_waiting(&self) -> bool {
        self.since.is_some()
    }
}

/// The current CLOCK_MONOTONIC time in nanoseconds (the clock timerfds use).
pub fn monotonic_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes into the timespec we own; CLOCK_MONOTONIC always exists.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    (ts.tv_sec as u64)
        .saturating_mul(1_000_000_000)
        .saturating_add(ts.tv_nsec as u64)
}

/// A non-blocking CLOCK_MONOTONIC timerfd armed to absolute deadlines (TFD_TIMER_ABSTIME,
/// so a deadline already past fires at once and no relative error creeps in).
#[derive(Debug)]
pub struct MonotonicTimer {
    fd: OwnedFd,
    armed: Option<u64>,
}

/// A non-blocking CLOCK_MONOTONIC timerfd, disarmed.
pub fn monotonic_timerfd() -> io::Result<OwnedFd> {
    // SAFETY: plain syscall; the result is checked and owned below.
    let fd = unsafe {
        libc::timerfd_create(
            libc::CLOCK_MONOTONIC,
            libc::TFD_NONBLOCK | libc::TFD_CLOEXEC,
        )
    };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: fd is a fresh descriptor nobody else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

impl MonotonicTimer {
    pub fn new() -> io::Result<MonotonicTimer> {
        Ok(MonotonicTimer {
            fd: monotonic_timerfd()?,
            armed: None,
        })
    }

    /// Arms the timer to fire at `deadline_ns` (CLOCK_MONOTONIC), or disarms it with None.
    /// Does nothing if it is already armed that way, or armed earlier: it then fires early,
    /// its owner finds nothing due (streams are serviced at arbitrary times anyway: at every
    /// buffer the driver sends) and arms it again. Unpaced, a waiting head buffer's deadline
    /// moves later at every completion (see [`ReserveWait`]): re-arming each time cost a
    /// syscall per buffer on the worker's round trip; this costs a wake-up per deadline.
    pub fn set(&mut self, deadline_ns: Option<u64>) -> io::Result<()> {
        match (self.armed, deadline_ns) {
            (a, d) if a == d => return Ok(()),
            (Some(a), Some(d)) if a < d => return Ok(()),
            _ => {}
        }
        // A zero it_value disarms a timerfd, so an armed deadline is at least 1 ns.
        let t = deadline_ns.map_or(0, |d| d.max(1));
        let spec = libc::itimerspec {
            it_interval: libc::timespec {
                tv_sec: 0,
                tv_nsec: 0,
            },
            it_value: libc::timespec {
                tv_sec: (t / 1_000_000_000) as libc::time_t,
                tv_nsec: (t % 1_000_000_000) as libc::c_long,
            },
        };
        // SAFETY: the fd is ours; spec is a valid itimerspec; old value not requested.
        let r = unsafe {
            libc::timerfd_settime(
                self.fd.as_raw_fd(),
                libc::TFD_TIMER_ABSTIME,
                &spec,
                std::ptr::null_mut(),
            )
        };
        if r < 0 {
            return Err(io::Error::last_os_error());
        }
        self.armed = deadline_ns;
        Ok(())
    }

    /// Consumes an expiry (the fd is level-triggered in epoll until read).
    pub fn clear(&mut self) {
        let mut buf = [0u8; 8];
        // SAFETY: reads at most 8 bytes into our buffer from our non-blocking fd.
        let _ = unsafe { libc::read(self.fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len()) };
        // An expired absolute timer stays expired: forget it so the next set() re-arms.
        self.armed = None;
    }

    pub fn armed(&self) -> Option<u64> {
        self.armed
    }
}

impl AsRawFd for MonotonicTimer {
    fn as_raw_fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: u64 = 1_000_000_000;

    #[test]
    fn deadlines_come_from_the_anchor() {
        // 44100 Hz S16 stereo: 176400 B/s; 1764 bytes = 10 ms exactly, 1000 bytes is not a
        // whole number of ns.
        let mut c = PacingClock::new(176_400);
        assert_eq!(c.deadline(1764), None);
        c.start(5 * S);
        assert_eq!(c.deadline(1764), Some(5 * S + 10_000_000));
        // 441 buffers of 1000 bytes: the rounding of each is not added up.
        for _ in 0..441 {
            c.complete(1000);
        }
        assert_eq!(c.position(), Some(5 * S + 2_500_000_000));
        assert_eq!(c.deadline(0), Some(5 * S + 2_500_000_000));
        // ceil: 1000 bytes = 5668934.24 ns → 5668935
        let mut d = PacingClock::new(176_400);
        d.start(0);
        assert_eq!(d.deadline(1000), Some(5_668_935));
    }

    #[test]
    fn starvation_reanchors_only_after_grace() {
        let mut c = PacingClock::new(1000); // 1 byte per ms
        c.start(0);
        c.complete(100); // ends at 100 ms
        c.starve();
        assert!(c.is_starved());
        assert_eq!(c.deadline(10), None);
        // back within 5 ms grace: continue from the anchor
        assert_eq!(c.feed(104_000_000, 5_000_000), None);
        assert_eq!(c.deadline(10), Some(110_000_000));
        c.complete(10);
        c.starve();
        // back 50 ms late: xrun of 50 ms, re-anchored
        assert_eq!(c.feed(160_000_000, 5_000_000), Some(50_000_000));
        assert_eq!(c.deadline(10), Some(170_000_000));
        // feeding a clock that is not starved reports nothing
        assert_eq!(c.feed(999 * S, 0), None);
    }

    #[test]
    fn hold_and_resume() {
        let mut c = PacingClock::new(1000);
        c.start(0);
        c.hold(10_000_000);
        assert!(c.is_held());
        assert!(c.is_started());
        assert_eq!(c.deadline(10), None);
        c.starve(); // no effect while held
        assert!(!c.is_starved());
        assert_eq!(c.resume(30_000_000), Some(20_000_000));
        assert_eq!(c.deadline(10), Some(40_000_000));
        assert_eq!(c.resume(31_000_000), None);
        c.stop();
        assert!(!c.is_started());
        assert_eq!(c.deadline(1), None);
    }

    #[test]
    fn unpaced_starvation_counts_from_when_the_queue_ran_dry() {
        let mut c = PacingClock::new(1000);
        c.start(0);
        // unpaced: nothing is added to `consumed`; the queue runs dry at 500 ms
        c.starve_at(500_000_000);
        assert!(c.is_starved());
        c.starve_at(600_000_000); // the first instant stays
        assert_eq!(c.feed(520_000_000, 30_000_000), None, "within the grace");
        c.starve_at(700_000_000);
        assert_eq!(c.feed(800_000_000, 30_000_000), Some(100_000_000));
    }

    #[test]
    fn the_head_waits_from_when_its_wait_began() {
        let mut w = ReserveWait::default();
        assert!(!w.is_waiting());
        assert_eq!(w.due(10), None);
        assert_eq!(w.begin(100), 100);
        // later looks at the same head do not restart its wait
        assert_eq!(w.begin(150), 100);
        assert_eq!(w.due(21_333_334), Some(21_333_434));
        w.clear();
        assert_eq!(w.due(1), None);
        assert_eq!(w.begin(200), 200);
        assert_eq!(w.due(u64::MAX), Some(u64::MAX));
    }

    #[test]
    fn zero_rate_never_due() {
        let mut c = PacingClock::new(0);
        c.start(0);
        assert_eq!(c.deadline(1), Some(u64::MAX));
    }

    #[test]
    fn timer_fires_at_absolute_deadline() {
        let mut t = MonotonicTimer::new().unwrap();
        let now = monotonic_ns();
        t.set(Some(now)).unwrap();
        assert_eq!(t.armed(), Some(now));
        let mut pfd = libc::pollfd {
            fd: t.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: one valid pollfd.
        let n = unsafe { libc::poll(&mut pfd, 1, 1000) };
        assert_eq!(n, 1);
        t.clear();
        assert_eq!(t.armed(), None);
        t.set(None).unwrap();
        // SAFETY: as above.
        let n = unsafe { libc::poll(&mut pfd, 1, 0) };
        assert_eq!(n, 0);
    }

    /// A later deadline leaves an earlier one armed (no syscall): the timer fires at the
    /// earlier one. An earlier deadline, or none, replaces it.
    #[test]
    fn timer_keeps_an_earlier_deadline() {
        let mut t = MonotonicTimer::new().unwrap();
        let soon = monotonic_ns() + 20_000_000;
        t.set(Some(soon)).unwrap();
        t.set(Some(soon + 3_600_000_000_000)).unwrap();
        assert_eq!(t.armed(), Some(soon));
        let mut pfd = libc::pollfd {
            fd: t.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: one valid pollfd.
        let n = unsafe { libc::poll(&mut pfd, 1, 5000) };
        assert_eq!(n, 1, "the earlier deadline fired");
        t.clear();
        let later = monotonic_ns() + 3_600_000_000_000;
        t.set(Some(later)).unwrap();
        t.set(Some(later - 1)).unwrap();
        assert_eq!(t.armed(), Some(later - 1));
        t.set(None).unwrap();
        assert_eq!(t.armed(), None);
        // SAFETY: as above.
        let n = unsafe { libc::poll(&mut pfd, 1, 0) };
        assert_eq!(n, 0);
    }
}
