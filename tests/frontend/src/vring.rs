//! The driver's side of a split virtqueue (virtio 1.2 §2.7), laid out in guest memory:
//! the harness writes descriptors and the available ring and reads the used ring, as the
//! Linux virtio core does.

use std::sync::atomic::Ordering;

use vm_memory::{Bytes, GuestAddress};
use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};

use crate::error::FrontError;
use crate::memory::GuestRam;

pub const VIRTQ_DESC_F_NEXT: u16 = 1;
pub const VIRTQ_DESC_F_WRITE: u16 = 2;
pub const VIRTQ_DESC_F_INDIRECT: u16 = 4;
const DESC_LEN: u64 = 16;
/// Used ring flag: the device asks the driver not to kick (virtio 1.2 §2.7.10).
pub const VRING_USED_F_NO_NOTIFY: u16 = 1;

/// One descriptor of a chain to be added.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Desc {
    pub addr: GuestAddress,
    pub len: u32,
    pub writable: bool,
}

/// Where a ring's three parts live.
#[derive(Debug, Clone, Copy)]
pub struct RingLayout {
    pub desc: GuestAddress,
    pub avail: GuestAddress,
    pub used: GuestAddress,
}

impl RingLayout {
    /// Bytes one ring of `size` entries takes with each part page-aligned.
    pub fn footprint(size: u16) -> u64 {
        let s = size as u64;
        let page = |x: u64| x.div_ceil(4096) * 4096;
        page(DESC_LEN * s) + page(6 + 2 * s) + page(6 + 8 * s)
    }

    pub fn at(base: GuestAddress, size: u16) -> RingLayout {
        let s = size as u64;
        let page = |x: u64| x.div_ceil(4096) * 4096;
        let desc = base;
        let avail = GuestAddress(base.0 + page(DESC_LEN * s));
        let used = GuestAddress(avail.0 + page(6 + 2 * s));
        RingLayout { desc, avail, used }
    }
}

/// An entry the device put in the used ring.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UsedElem {
    pub head: u16,
    pub len: u32,
}

/// The driver side of one split virtqueue.
pub struct DriverRing {
    pub index: usize,
    pub size: u16,
    pub layout: RingLayout,
    pub kick: EventFd,
    pub call: EventFd,
    free: Vec<u16>,
    /// Descriptor indices of each chain in flight, by head.
    chains: Vec<Option<Vec<u16>>>,
    next_avail: u16,
    last_used: u16,
    event_idx: bool,
}

impl DriverRing {
    pub fn new(
        ram: &GuestRam,
        index: usize,
        size: u16,
        base: GuestAddress,
    ) -> Result<DriverRing, FrontError> {
        if size == 0 || !size.is_power_of_two() {
            return Err(FrontError::Protocol(format!(
                "queue size {size} is not a power of two"
            )));
        }
        let layout = RingLayout::at(base, size);
        // A fresh ring: zeroed descriptors, avail flags/idx 0, used flags/idx 0.
        ram.fill(base, RingLayout::footprint(size) as usize, 0)?;
        Ok(DriverRing {
            index,
            size,
            layout,
            kick: EventFd::new(EFD_NONBLOCK)?,
            call: EventFd::new(EFD_NONBLOCK)?,
            free: (0..size).rev().collect(),
            chains: vec![None; size as usize],
            next_avail: 0,
            last_used: 0,
            event_idx: false,
        })
    }

    pub fn set_event_idx(&mut self, on: bool) {
        self.event_idx = on;
    }

    pub fn free_descs(&self) -> usize {
        self.free.len()
    }

    pub fn in_flight(&self) -> usize {
        self.chains.iter().filter(|c| c.is_some()).count()
    }

    /// Writes a chain into the descriptor table and makes it available. Returns its head.
    /// Does not kick.
    pub fn add_chain(&mut self, ram: &GuestRam, descs: &[Desc]) -> Result<u16, FrontError> {
        if descs.is_empty() {
            return Err(FrontError::Protocol("empty descriptor chain".into()));
        }
        let parts: Vec<(GuestAddress, u32, u16)> = descs
            .iter()
            .map(|d| {
                let flags = if d.writable { VIRTQ_DESC_F_WRITE } else { 0 };
                (d.addr, d.len, flags)
            })
            .collect();
        self.publish(ram, &parts)
    }

    /// Writes a chain of (address, length, flags) descriptors into free slots of the
    /// descriptor table, linking them with VIRTQ_DESC_F_NEXT, and publishes its head in the
    /// available ring.
    fn publish(
        &mut self,
        ram: &GuestRam,
        parts: &[(GuestAddress, u32, u16)],
    ) -> Result<u16, FrontError> {
        if parts.len() > self.free.len() {
            return Err(FrontError::QueueFull {
                queue: self.index,
                needed: parts.len(),
                free: self.free.len(),
            });
        }
        let ids: Vec<u16> = (0..parts.len())
            .map(|_| self.free.pop().expect("checked above"))
            .collect();
        for (i, &(addr, len, flags)) in parts.iter().enumerate() {
            let mut flags = flags;
            let next = if i + 1 < parts.len() {
                flags |= VIRTQ_DESC_F_NEXT;
                ids[i + 1]
            } else {
                0
            };
            ram.write(
                GuestAddress(self.layout.desc.0 + DESC_LEN * ids[i] as u64),
                &raw_desc(addr, len, flags, next),
            )?;
        }
        let head = ids[0];
        self.chains[head as usize] = Some(ids);
        let slot = self.next_avail % self.size;
        ram.write(
            GuestAddress(self.layout.avail.0 + 4 + 2 * slot as u64),
            &head.to_le_bytes(),
        )?;
        self.next_avail = self.next_avail.wrapping_add(1);
        // The ring entry must be visible before the index that publishes it.
        ram.mem()
            .store(
                self.next_avail.to_le(),
                GuestAddress(self.layout.avail.0 + 2),
                Ordering::Release,
            )
            .map_err(|e| FrontError::Memory(e.to_string()))?;
        Ok(head)
    }

    /// Makes `head` available as is, whatever it names (negative tests: a head past the
    /// queue size). Nothing is recorded as in flight. Does not kick.
    pub fn publish_raw_head(&mut self, ram: &GuestRam, head: u16) -> Result<(), FrontError> {
        let slot = self.next_avail % self.size;
        ram.write(
            GuestAddress(self.layout.avail.0 + 4 + 2 * slot as u64),
            &head.to_le_bytes(),
        )?;
        self.next_avail = self.next_avail.wrapping_add(1);
        ram.mem()
            .store(
                self.next_avail.to_le(),
                GuestAddress(self.layout.avail.0 + 2),
                Ordering::Release,
            )
            .map_err(|e| FrontError::Memory(e.to_string()))?;
        Ok(())
    }

    /// Like [`add_chain`](Self::add_chain), but the last descriptor's NEXT points back to the
    /// first: a chain that never ends (negative tests).
    pub fn add_looped_chain(&mut self, ram: &GuestRam, descs: &[Desc]) -> Result<u16, FrontError> {
        let head = self.add_chain(ram, descs)?;
        let ids = self.chains[head as usize]
            .clone()
            .ok_or_else(|| FrontError::Protocol("chain just added is missing".into()))?;
        let last = *ids.last().expect("add_chain refuses empty chains");
        let at = GuestAddress(self.layout.desc.0 + DESC_LEN * last as u64 + 12);
        let flags = u16::from_le_bytes(
            ram.read(at, 2)?
                .try_into()
                .map_err(|_| FrontError::Protocol("short read".into()))?,
        ) | VIRTQ_DESC_F_NEXT;
        let mut raw = [0u8; 4];
        raw[0..2].copy_from_slice(&flags.to_le_bytes());
        raw[2..4].copy_from_slice(&head.to_le_bytes());
        ram.write(at, &raw)?;
        Ok(head)
    }

    /// Writes `descs` as an indirect descriptor table at `table` (16 bytes each, `next`
    /// counting within the table) and makes available one chain of a single descriptor with
    /// VIRTQ_DESC_F_INDIRECT naming it. Returns its head. Does not kick.
    pub fn add_indirect(
        &mut self,
        ram: &GuestRam,
        table: GuestAddress,
        descs: &[Desc],
    ) -> Result<u16, FrontError> {
        if descs.is_empty() {
            return Err(FrontError::Protocol("empty indirect table".into()));
        }
        for (i, d) in descs.iter().enumerate() {
            let mut flags = 0u16;
            if d.writable {
                flags |= VIRTQ_DESC_F_WRITE;
            }
            let next = if i + 1 < descs.len() {
                flags |= VIRTQ_DESC_F_NEXT;
                i as u16 + 1
            } else {
                0
            };
            ram.write(
                GuestAddress(table.0 + DESC_LEN * i as u64),
                &raw_desc(d.addr, d.len, flags, next),
            )?;
        }
        let len = u32::try_from(DESC_LEN * descs.len() as u64)
            .map_err(|_| FrontError::Protocol("indirect table too long".into()))?;
        self.publish(ram, &[(table, len, VIRTQ_DESC_F_INDIRECT)])
    }

    /// Notifies the device that buffers are available, as Linux's virtqueue_kick does:
    /// unless the device asked not to be (VRING_USED_F_NO_NOTIFY in the used ring's flags,
    /// virtio 1.2 §2.7.10; with EVENT_IDX, which our device does not offer, the avail_event
    /// would decide instead and is not read: the kick always goes). Returns whether it kicked.
    pub fn notify(&self, ram: &GuestRam) -> Result<bool, FrontError> {
        if !self.event_idx {
            // The new avail idx must be visible before the flags are read (virtio_mb).
            std::sync::atomic::fence(Ordering::SeqCst);
            if self.used_flags(ram)? & VRING_USED_F_NO_NOTIFY != 0 {
                return Ok(false);
            }
        }
        self.kick()?;
        Ok(true)
    }

    /// Kicks regardless of the used ring's flags (hostile drivers, hand-made chains).
    pub fn kick(&self) -> Result<(), FrontError> {
        self.kick.write(1)?;
        Ok(())
    }

    /// Reads the call eventfd counter (0 if it was not signalled).
    pub fn take_call(&self) -> u64 {
        self.call.read().unwrap_or(0)
    }

    /// Takes every entry the device has added to the used ring since the last call.
    /// `bad` receives a description of each entry that breaks the rules (unknown head,
    /// a head that was not in flight).
    pub fn take_used(
        &mut self,
        ram: &GuestRam,
        bad: &mut Vec<String>,
    ) -> Result<Vec<UsedElem>, FrontError> {
        let mut out = Vec::new();
        loop {
            let used_idx = self.used_idx(ram)?;
            let pending = used_idx.wrapping_sub(self.last_used);
            if pending > self.size {
                bad.push(format!(
                    "queue {}: used idx {used_idx} is {pending} entries past our last seen {} (ring size {})",
                    self.index, self.last_used, self.size
                ));
                // Do not trust the ring any further.
                self.last_used = used_idx;
                return Ok(out);
            }
            while self.last_used != used_idx {
                let slot = (self.last_used % self.size) as u64;
                let raw = ram.read(GuestAddress(self.layout.used.0 + 4 + 8 * slot), 8)?;
                let id = u32::from_le_bytes([raw[0], raw[1], raw[2], raw[3]]);
                let len = u32::from_le_bytes([raw[4], raw[5], raw[6], raw[7]]);
                self.last_used = self.last_used.wrapping_add(1);
                if id >= self.size as u32 {
                    bad.push(format!(
                        "queue {}: used entry names descriptor {id}, ring has {}",
                        self.index, self.size
                    ));
                    continue;
                }
                match self.chains[id as usize].take() {
                    Some(ids) => {
                        self.free.extend(ids);
                        out.push(UsedElem {
                            head: id as u16,
                            len,
                        });
                    }
                    None => bad.push(format!(
                        "queue {}: used entry for descriptor {id}, which is not the head of a chain in flight",
                        self.index
                    )),
                }
            }
            if !self.event_idx {
                return Ok(out);
            }
            // used_event: interrupt us as soon as the device uses anything past this. The
            // device may have used more after we read its index and before it sees the new
            // used_event, in which case it does not signal: look again (as Linux's
            // virtqueue_enable_cb does).
            ram.write(
                GuestAddress(self.layout.avail.0 + 4 + 2 * self.size as u64),
                &self.last_used.to_le_bytes(),
            )?;
            std::sync::atomic::fence(Ordering::SeqCst);
            if self.used_idx(ram)? == self.last_used {
                return Ok(out);
            }
        }
    }

    /// The used ring's flags, as the device last wrote them.
    pub fn used_flags(&self, ram: &GuestRam) -> Result<u16, FrontError> {
        Ok(u16::from_le(
            ram.mem()
                .load(self.layout.used, Ordering::Acquire)
                .map_err(|e| FrontError::Memory(e.to_string()))?,
        ))
    }

    fn used_idx(&self, ram: &GuestRam) -> Result<u16, FrontError> {
        Ok(u16::from_le(
            ram.mem()
                .load(GuestAddress(self.layout.used.0 + 2), Ordering::Acquire)
                .map_err(|e| FrontError::Memory(e.to_string()))?,
        ))
    }

    /// The index of the next available-ring slot (what GET_VRING_BASE should report once the
    /// device has seen every chain).
    pub fn next_avail(&self) -> u16 {
        self.next_avail
    }
}

/// One descriptor as the driver writes it: le64 addr, le32 len, le16 flags, le16 next.
fn raw_desc(addr: GuestAddress, len: u32, flags: u16, next: u16) -> [u8; DESC_LEN as usize] {
    let mut raw = [0u8; DESC_LEN as usize];
    raw[0..8].copy_from_slice(&addr.0.to_le_bytes());
    raw[8..12].copy_from_slice(&len.to_le_bytes());
    raw[12..14].copy_from_slice(&flags.to_le_bytes());
    raw[14..16].copy_from_slice(&next.to_le_bytes());
    raw
}
