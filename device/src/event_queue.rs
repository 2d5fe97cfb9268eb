//! The event queue: buffers the driver posts for the device to fill with notifications
//! (PCM period elapsed / xrun, control changed).

use std::collections::VecDeque;

use crate::chain::{write_segments, Chain, Segment};
use crate::error::RequestError;
use crate::spec::{size, EVENT_QUEUE};
use crate::Used;

/// A posted event buffer.
#[derive(Debug, Clone, PartialEq, Eq)]
struct EventBuffer {
    head: u16,
    writable: Vec<Segment>,
}

/// Event buffers the driver posted, oldest first.
#[derive(Debug, Default)]
pub struct EventQueue {
    posted: VecDeque<EventBuffer>,
    /// Events that found no posted buffer.
    pub undelivered: u64,
}

impl EventQueue {
    /// Takes a buffer the driver posted. A buffer that cannot carry an event is refused (the
    /// caller returns it at once, with nothing written), and so is one beyond `limit` (the
    /// ring size: a driver cannot have more buffers posted, so the excess is the same head
    /// made available again, which must not grow the daemon).
    pub fn post<M: vm_memory::GuestMemory + ?Sized>(
        &mut self,
        mem: &M,
        chain: Chain,
        limit: usize,
    ) -> Result<(), RequestError> {
        if self.posted.len() >= limit {
            return Err(RequestError::HoldLimit {
                queue: "event",
                what: "event buffers",
                held: self.posted.len() as u64 + 1,
                limit: limit as u64,
            });
        }
        if !chain.readable.is_empty() {
            return Err(RequestError::LongRequest {
                got: chain.readable_len(),
                expected: 0,
            });
        }
        if chain.writable_len() < size::EVENT as u64 {
            return Err(RequestError::ShortResponse {
                got: chain.writable_len(),
                need: size::EVENT as u64,
            });
        }
        chain.check_mapped(mem)?;
        self.posted.push_back(EventBuffer {
            head: chain.head,
            writable: chain.writable,
        });
        Ok(())
    }

    /// Delivers one event in the oldest posted buffer. Returns false if there was none (the
    /// event is counted in `undelivered`).
    pub fn send<M: vm_memory::GuestMemory + ?Sized>(
        &mut self,
        mem: &M,
        event: &[u8; size::EVENT],
        used: &mut Vec<Used>,
    ) -> bool {
        while let Some(buf) = self.posted.pop_front() {
            match write_segments(&buf.writable, mem, 0, event) {
                Ok(()) => {
                    used.push(Used {
                        queue: EVENT_QUEUE,
                        head: buf.head,
                        len: size::EVENT as u32,
                    });
                    return true;
                }
                Err(e) => {
                    log::warn!("event buffer {} unusable, returned empty: {e}", buf.head);
                    used.push(Used {
                        queue: EVENT_QUEUE,
                        head: buf.head,
                        len: 0,
                    });
                }
            }
        }
        self.undelivered += 1;
        false
    }

    /// Buffers waiting for an event.
    pub fn len(&self) -> usize {
        self.posted.len()
    }

    pub fn is_empty(&self) -> bool {
        self.posted.is_empty()
    }

    /// Forgets every posted buffer (the driver was reset; they are no longer ours).
    pub fn clear(&mut self) -> usize {
        let n = self.posted.len();
        self.posted.clear();
        n
    }
}
