//! Audio readers inject for the card's input streams, buffered per stream until the queue
//! worker fills the guest's RX buffers with it.
//!
//! Bounded: a record is only taken while it fits under the limit (or the buffer is empty, so
//! one record larger than the limit still passes). When it does not fit, the tap thread holds
//! the record and stops reading that reader; the kernel's socket flow control then slows the
//! injector down. Nothing is dropped.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, MutexGuard};

pub(super) struct InjectBuffers {
    limit: usize,
    streams: Mutex<HashMap<u32, VecDeque<u8>>>,
    /// Some reader is held because a buffer was full: the worker wakes the tap thread when
    /// it takes bytes out.
    waiting: AtomicBool,
}

impl InjectBuffers {
    pub fn new(limit: usize) -> InjectBuffers {
        InjectBuffers {
            limit,
            streams: Mutex::new(HashMap::new()),
            waiting: AtomicBool::new(false),
        }
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<u32, VecDeque<u8>>> {
        // A panic while holding this lock cannot leave a buffer half-updated in a way that
        // matters (bytes are appended or removed whole), so a poisoned lock is still usable.
        self.streams.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Appends `data` to `stream`'s buffer if it fits. Returns false (and takes nothing)
    /// when the buffer is full.
    fn try_push(&self, stream: u32, data: &[u8]) -> bool {
        let mut streams = self.lock();
        let buf = streams.entry(stream).or_default();
        if buf.is_empty() || buf.len().saturating_add(data.len()) <= self.limit {
            buf.extend(data);
            true
        } else {
            false
        }
    }

    /// Tap thread: appends `data`, or marks the tap as waiting for room and returns false.
    /// The flag is raised before the final attempt, so a worker that frees room in between
    /// either leaves room for this attempt or sees the flag and wakes the tap thread.
    pub fn push_or_wait(&self, stream: u32, data: &[u8]) -> bool {
        if self.try_push(stream, data) {
            return true;
        }
        self.waiting.store(true, Ordering::SeqCst);
        self.try_push(stream, data)
    }

    /// Tap thread: no reader is held any more.
    pub fn clear_waiting(&self) {
        self.waiting.store(false, Ordering::SeqCst);
    }

    pub fn is_waiting(&self) -> bool {
        self.waiting.load(Ordering::SeqCst)
    }

    /// Worker: moves up to `out.len()` bytes of `stream`'s audio into `out`.
    pub fn read(&self, stream: u32, out: &mut [u8]) -> usize {
        let mut streams = self.lock();
        let Some(buf) = streams.get_mut(&stream) else {
            return 0;
        };
        let n = buf.len().min(out.len());
        let (front, back) = buf.as_slices();
        let from_front = front.len().min(n);
        out[..from_front].copy_from_slice(&front[..from_front]);
        out[from_front..n].copy_from_slice(&back[..n - from_front]);
        buf.drain(..n);
        n
    }

    /// Bytes buffered for `stream` (tests and logs).
    #[cfg(test)]
    pub fn buffered(&self, stream: u32) -> usize {
        self.lock().get(&stream).map_or(0, VecDeque::len)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bounded_and_in_order() {
        let b = InjectBuffers::new(10);
        assert!(b.push_or_wait(1, &[1, 2, 3, 4, 5, 6]));
        assert!(!b.push_or_wait(1, &[7, 8, 9, 10, 11]), "over the limit");
        assert!(b.is_waiting());
        assert_eq!(b.buffered(1), 6);
        let mut out = [0u8; 4];
        assert_eq!(b.read(1, &mut out), 4);
        assert_eq!(out, [1, 2, 3, 4]);
        assert!(b.push_or_wait(1, &[7, 8, 9, 10, 11]));
        let mut out = [0u8; 16];
        assert_eq!(b.read(1, &mut out), 7);
        assert_eq!(&out[..7], &[5, 6, 7, 8, 9, 10, 11]);
        assert_eq!(b.read(2, &mut out), 0, "unknown stream has nothing");
    }

    #[test]
    fn a_record_larger_than_the_limit_passes_when_empty() {
        let b = InjectBuffers::new(4);
        assert!(b.push_or_wait(0, &[9; 100]));
        assert!(!b.push_or_wait(0, &[1]));
        let mut out = vec![0u8; 100];
        assert_eq!(b.read(0, &mut out), 100);
        assert!(b.push_or_wait(0, &[1]));
    }
}
