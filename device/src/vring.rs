//! The vrings as vhost-user-backend keeps them, plus what the library lets through.
//!
//! vhost-user-backend 0.24 answers SET_VRING_NUM with success for any size from 1 to the
//! maximum: virtio-queue refuses a size that is not a power of two (virtio 1.2 §2.7: "Queue
//! Size value is always a power of 2") only with a log line and keeps the old size, so the
//! device would go on reading the driver's rings with a size the driver does not use. The
//! trait gives the backend no say, hence this wrapper: it remembers the refused size, and
//! the card leaves the queue alone (as a device needing reset would) until the frontend sets
//! a valid one or the device is reset.

use std::fs::File;
use std::io;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;

use log::error;
use vhost_user_backend::{VringRwLock, VringStateGuard, VringStateMutGuard, VringT};
use virtio_queue::{Error as VirtQueError, QueueT};

use crate::backend::GuestMem;

/// A vring whose size the frontend set to something virtio does not allow.
#[derive(Clone)]
pub struct CheckedVring {
    ring: VringRwLock<GuestMem>,
    /// The last size the frontend asked for if it was refused, else 0.
    refused_size: Arc<AtomicU32>,
}

impl CheckedVring {
    /// The size the frontend asked for and the device refused, if any.
    pub fn refused_size(&self) -> Option<u32> {
        match self.refused_size.load(Ordering::Acquire) {
            0 => None,
            n => Some(n),
        }
    }

    /// The device was reset: the refusal is forgotten with the rest of the ring's state.
    pub fn clear_refusal(&self) {
        self.refused_size.store(0, Ordering::Release);
    }
}

/// Whether virtio allows `num` as a split-queue size.
pub fn valid_queue_size(num: u16, max: u16) -> bool {
    num != 0 && num <= max && num.is_power_of_two()
}

impl<'a> VringStateGuard<'a, GuestMem> for CheckedVring {
    type G = <VringRwLock<GuestMem> as VringStateGuard<'a, GuestMem>>::G;
}

impl<'a> VringStateMutGuard<'a, GuestMem> for CheckedVring {
    type G = <VringRwLock<GuestMem> as VringStateMutGuard<'a, GuestMem>>::G;
}

impl VringT<GuestMem> for CheckedVring {
    fn new(mem: GuestMem, max_queue_size: u16) -> Result<Self, VirtQueError> {
        Ok(CheckedVring {
            ring: VringRwLock::new(mem, max_queue_size)?,
            refused_size: Arc::new(AtomicU32::new(0)),
        })
    }

    fn get_ref(&self) -> <Self as VringStateGuard<'_, GuestMem>>::G {
        self.ring.get_ref()
    }

    fn get_mut(&self) -> <Self as VringStateMutGuard<'_, GuestMem>>::G {
        self.ring.get_mut()
    }

    fn add_used(&self, desc_index: u16, len: u32) -> Result<(), VirtQueError> {
        self.ring.add_used(desc_index, len)
    }

    fn signal_used_queue(&self) -> io::Result<()> {
        self.ring.signal_used_queue()
    }

    fn enable_notification(&self) -> Result<bool, VirtQueError> {
        self.ring.enable_notification()
    }

    fn disable_notification(&self) -> Result<(), VirtQueError> {
        self.ring.disable_notification()
    }

    fn needs_notification(&self) -> Result<bool, VirtQueError> {
        self.ring.needs_notification()
    }

    fn set_enabled(&self, enabled: bool) {
        self.ring.set_enabled(enabled)
    }

    fn set_queue_info(
        &self,
        desc_table: u64,
        avail_ring: u64,
        used_ring: u64,
    ) -> Result<(), VirtQueError> {
        self.ring.set_queue_info(desc_table, avail_ring, used_ring)
    }

    fn queue_next_avail(&self) -> u16 {
        self.ring.queue_next_avail()
    }

    fn set_queue_next_avail(&self, base: u16) {
        self.ring.set_queue_next_avail(base)
    }

    fn set_queue_next_used(&self, idx: u16) {
        self.ring.set_queue_next_used(idx)
    }

    fn queue_used_idx(&self) -> Result<u16, VirtQueError> {
        self.ring.queue_used_idx()
    }

    fn set_queue_size(&self, num: u16) {
        let max = self.ring.get_ref().get_queue().max_size();
        if valid_queue_size(num, max) {
            self.refused_size.store(0, Ordering::Release);
            self.ring.set_queue_size(num);
        } else {
            // Once per SET_VRING_NUM, which the frontend (not the guest) sends: no flood.
            error!(
                "SET_VRING_NUM {num} refused: a virtqueue size must be a power of two from 1 to \
                 {max}; the queue stays unused until the frontend sets a valid size"
            );
            self.refused_size
                .store(u32::from(num).max(1), Ordering::Release);
        }
    }

    fn set_queue_event_idx(&self, enabled: bool) {
        self.ring.set_queue_event_idx(enabled)
    }

    fn set_queue_ready(&self, ready: bool) {
        self.ring.set_queue_ready(ready)
    }

    fn set_kick(&self, file: Option<File>) {
        self.ring.set_kick(file)
    }

    fn read_kick(&self) -> io::Result<bool> {
        self.ring.read_kick()
    }

    fn set_call(&self, file: Option<File>) {
        self.ring.set_call(file)
    }

    fn set_err(&self, file: Option<File>) {
        self.ring.set_err(file)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_virtio_allows() {
        assert!(valid_queue_size(1, 1024));
        assert!(valid_queue_size(64, 1024));
        assert!(valid_queue_size(1024, 1024));
        assert!(!valid_queue_size(0, 1024));
        assert!(!valid_queue_size(100, 1024));
        assert!(!valid_queue_size(2048, 1024));
        assert!(!valid_queue_size(3, 1024));
    }
}
