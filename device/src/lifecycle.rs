//! The card's lifecycle as the frontend drives it: vrings stopped and restarted
//! (GET_VRING_BASE, a VM pause or a driver reset) and the device reset.

use dsproxy_wire::record::{Direction, Record};
use log::debug;
use vm_memory::GuestMemory;

use crate::card::{Card, CardTap};
use crate::pcm::{Stream, StreamState};
use crate::spec::{CONTROL_QUEUE, EVENT_QUEUE, NUM_QUEUES, RX_QUEUE, TX_QUEUE};

impl<T: CardTap> Card<T> {
    /// The queue of stream direction `dir` is stopped.
    pub(crate) fn dir_stopped(&self, dir: Direction) -> bool {
        let q = match dir {
            Direction::Output => TX_QUEUE,
            Direction::Input => RX_QUEUE,
        };
        self.stopped[q as usize]
    }

    /// The frontend stops a vring (GET_VRING_BASE: the VM pauses, migrates, or the driver
    /// resets the device). Nothing is put in that ring until it restarts, and the clocks of
    /// its streams stop: buffers stay in flight, as they would in a paused machine, and
    /// either play on after [`restart_queue`](Self::restart_queue) or are forgotten if the
    /// driver turns out to have reset the device.
    ///
    /// Why they are held rather than completed now or "un-popped" in the GET_VRING_BASE
    /// reply: see `SndBackend::stop_vring` (backend.rs).
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

    /// A stopped vring runs again. `from_zero` says the ring restarted from index 0, i.e. the
    /// driver reset the device and the descriptors the card still held are no longer
    /// anybody's: they are forgotten (not returned — that would corrupt the new ring).
    /// Otherwise the held buffers play on, the clocks re-anchored at `now`.
    pub fn restart_queue<M: GuestMemory + ?Sized>(
        &mut self,
        mem: &M,
        queue: u16,
        from_zero: bool,
        now: u64,
    ) {
        let Some(flag) = self.stopped.get_mut(queue as usize) else {
            return;
        };
        *flag = false;
        let dir = match queue {
            EVENT_QUEUE => {
                if from_zero {
                    let n = self.events.clear();
                    debug!("event queue restarted from 0: {n} stale event buffers forgotten");
                }
                return;
            }
            CONTROL_QUEUE => {
                if from_zero {
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
            if from_zero && !s.queue.is_empty() {
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
                let idle = Stream::new(s.id, s.direction);
                *s = idle;
            }
        }
    }
}
