//! Without pacing, the queue worker polls the TX ring for the guest's next buffer for a few
//! tens of microseconds before it sleeps in epoll.
//!
//! Why: `--pacing none` keeps a reserve of two periods queued (see
//! [`ReserveWait`](crate::clock::ReserveWait)), so once the card has completed down to it,
//! every further completion waits for the guest's next buffer: device and guest run in
//! lock-step, one round trip per buffer or two. Each round trip then costs two wake-ups of a
//! sleeping thread, and on a virtual machine a halted CPU takes tens of microseconds to wake
//! (on the 2-core build machine, an unpaced 4-period stream with no reader ran at ~150 MiB/s
//! sleeping, ~870 MiB/s polling). Polling saves the device's half of each round trip.
//!
//! How long to poll adapts as QEMU's `aio_poll` does: the budget is the time the guest took
//! to send its next buffer, measured from when the worker started waiting, when that was
//! under [`POLL_MAX_NS`] (the poll would have caught it: grow), and shrinks when the guest
//! took longer (polling only burned the CPU the guest needs: a slow, emulated guest soon
//! gets no polling at all). It never polls at real-time pacing, where the clock, not the
//! guest, decides when buffers complete.
//!
//! The worker polls without the card's lock (the frontend's messages, e.g. a vring stop, are
//! not held up), yielding the CPU between looks at the ring (on a small machine the tap
//! thread and the readers need it: they are woken once per 64 KiB meanwhile, see
//! [`TapHandle::defer_wakes`](crate::tap::TapHandle::defer_wakes)), and an episode of
//! back-to-back polls ends after [`EPISODE_MAX_NS`] so the other queues and the timers are
//! served at least that often while a guest keeps the TX ring busy. While it polls, the
//! driver is asked not to kick (VRING_USED_F_NO_NOTIFY: see `SndBackend::poll_guest`): the
//! kick would cost the guest a VM exit and the worker a wake-up for a buffer it finds anyway
//! (BENCHMARKS.md has the figures).

/// The longest a single poll waits for the guest's next buffer.
pub const POLL_MAX_NS: u64 = 50_000;
/// The first budget once polling turns out to pay.
pub const POLL_START_NS: u64 = 4_000;
/// The longest the worker keeps polling (finding buffers each time) before it goes back to
/// epoll, where the other queues' kicks, the timers and the tap's notifier wait.
pub const EPISODE_MAX_NS: u64 = 1_000_000;

/// The adaptive poll budget of one worker.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct GuestPoll {
    /// How long the next poll may last, ns (0: do not poll).
    budget_ns: u64,
    /// When the worker began waiting for the guest (a poll started, or would have with a
    /// budget of 0); None when it is not waiting.
    waiting_since: Option<u64>,
}

impl GuestPoll {
    /// How long the next poll may last.
    pub fn budget_ns(&self) -> u64 {
        self.budget_ns
    }

    /// The worker starts waiting for the guest at `now` (it polls for the budget, then
    /// sleeps).
    pub fn wait_from(&mut self, now: u64) {
        self.waiting_since = Some(now);
    }

    /// The guest's buffer arrived at `now` (found by polling, or its kick woke the worker):
    /// adjust the budget to how long the guest took.
    pub fn arrived(&mut self, now: u64) {
        let Some(since) = self.waiting_since.take() else {
            return;
        };
        let took = now.saturating_sub(since);
        if took <= self.budget_ns {
            // Polling caught it.
        } else if took > POLL_MAX_NS {
            // Longer than polling ever waits: it would only have burned CPU.
            self.budget_ns /= 2;
            if self.budget_ns < POLL_START_NS {
                self.budget_ns = 0;
            }
        } else {
            // A little longer polling would have caught it.
            self.budget_ns = self
                .budget_ns
                .saturating_mul(2)
                .clamp(POLL_START_NS, POLL_MAX_NS);
        }
    }

    /// The worker stopped waiting for the guest for another reason (the stream stopped, a
    /// reader held it): the next arrival says nothing about the guest's round trip.
    pub fn forget(&mut self) {
        self.waiting_since = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `n` round trips in which the guest answers `took` ns after the worker starts waiting,
    /// from time `*t` on: the budget after each.
    fn rounds(p: &mut GuestPoll, t: &mut u64, took: u64, n: usize) -> Vec<u64> {
        (0..n)
            .map(|_| {
                p.wait_from(*t);
                *t += took;
                p.arrived(*t);
                p.budget_ns()
            })
            .collect()
    }

    #[test]
    fn a_guest_that_answers_within_the_maximum_grows_the_budget_to_catch_it() {
        let mut p = GuestPoll::default();
        assert_eq!(p.budget_ns(), 0);
        let mut t = 1_000_000;
        assert_eq!(
            rounds(&mut p, &mut t, 30_000, 6),
            [4_000, 8_000, 16_000, 32_000, 32_000, 32_000]
        );
    }

    #[test]
    fn a_slow_guest_soon_gets_no_polling() {
        let mut p = GuestPoll::default();
        let mut t = 0;
        rounds(&mut p, &mut t, 20_000, 5);
        assert_eq!(p.budget_ns(), 32_000);
        // Now the guest takes 2 ms (an emulated guest, or one writing at real time).
        assert_eq!(
            rounds(&mut p, &mut t, 2_000_000, 5),
            [16_000, 8_000, 4_000, 0, 0]
        );
    }

    #[test]
    fn the_budget_never_passes_the_maximum_and_arrivals_without_a_wait_change_nothing() {
        let mut p = GuestPoll::default();
        let mut t = 0;
        let budgets = rounds(&mut p, &mut t, POLL_MAX_NS, 20);
        assert!(budgets.iter().all(|&b| b <= POLL_MAX_NS), "{budgets:?}");
        assert_eq!(p.budget_ns(), POLL_MAX_NS);
        let before = p;
        p.arrived(t + 10_000_000);
        assert_eq!(p, before, "no wait had begun");
        p.wait_from(t);
        p.forget();
        p.arrived(t + 10_000_000);
        assert_eq!(p, before, "the wait was forgotten");
    }
}
