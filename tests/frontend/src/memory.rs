//! Guest memory: one memfd-backed region mapped shared, so the daemon sees exactly the bytes
//! the harness writes (as with QEMU's `memory-backend-memfd,share=on`), plus a small
//! first-fit allocator for buffers in it.

use std::collections::BTreeMap;
use std::ffi::CString;
use std::fs::File;
use std::os::fd::FromRawFd;

use vhost::VhostUserMemoryRegionInfo;
use vm_memory::{
    Bytes, FileOffset, GuestAddress, GuestMemoryBackend, GuestMemoryMmap, GuestMemoryRegion,
};

use crate::error::FrontError;

/// Where the guest's RAM starts in guest-physical space. Deliberately not 0, so a device that
/// confuses offsets with addresses is caught.
pub const GUEST_RAM_BASE: u64 = 0x4000_0000;
const PAGE: u64 = 4096;

/// A range of guest memory handed out by [`GuestRam::alloc`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Alloc {
    pub addr: GuestAddress,
    pub len: u64,
}

/// The guest's RAM and its allocator.
pub struct GuestRam {
    mem: GuestMemoryMmap,
    size: u64,
    /// Free ranges: start → length. Adjacent ranges are always merged.
    free: BTreeMap<u64, u64>,
}

impl GuestRam {
    /// Creates `size` bytes of guest RAM in a memfd. `reserved` bytes at the start (the vrings)
    /// are kept out of the allocator.
    pub fn new(size: usize, reserved: u64) -> Result<GuestRam, FrontError> {
        let name = CString::new("dsproxy-testfront-guest-ram").expect("no NUL in literal");
        // SAFETY: memfd_create takes a valid C string and flags; it returns a new fd or -1.
        let fd = unsafe { libc::memfd_create(name.as_ptr(), libc::MFD_CLOEXEC) };
        if fd < 0 {
            return Err(FrontError::Io(std::io::Error::last_os_error()));
        }
        // SAFETY: fd is a freshly created descriptor that nothing else owns.
        let file = unsafe { File::from_raw_fd(fd) };
        file.set_len(size as u64)?;
        let mem = GuestMemoryMmap::<()>::from_ranges_with_files([(
            GuestAddress(GUEST_RAM_BASE),
            size,
            Some(FileOffset::new(file, 0)),
        )])
        .map_err(|e| FrontError::Memory(e.to_string()))?;
        let reserved = reserved.div_ceil(PAGE) * PAGE;
        if reserved >= size as u64 {
            return Err(FrontError::Memory(format!(
                "guest RAM of {size} bytes cannot hold {reserved} bytes of rings"
            )));
        }
        let mut free = BTreeMap::new();
        free.insert(GUEST_RAM_BASE + reserved, size as u64 - reserved);
        Ok(GuestRam {
            mem,
            size: size as u64,
            free,
        })
    }

    pub fn mem(&self) -> &GuestMemoryMmap {
        &self.mem
    }

    pub fn size(&self) -> u64 {
        self.size
    }

    /// The region description SET_MEM_TABLE sends (the memfd and our mapping's address).
    pub fn region_info(&self) -> Result<VhostUserMemoryRegionInfo, FrontError> {
        let region = self
            .mem
            .find_region(GuestAddress(GUEST_RAM_BASE))
            .ok_or_else(|| FrontError::Memory("guest RAM region missing".into()))?;
        debug_assert_eq!(region.len(), self.size);
        VhostUserMemoryRegionInfo::from_guest_region(region).map_err(FrontError::Vhost)
    }

    /// Our own virtual address of a guest address (what QEMU puts in SET_VRING_ADDR).
    pub fn host_addr(&self, addr: GuestAddress) -> Result<u64, FrontError> {
        self.mem
            .get_host_address(addr)
            .map(|p| p as u64)
            .map_err(|e| FrontError::Memory(e.to_string()))
    }

    /// Allocates `len` bytes aligned to `align` (a power of two).
    pub fn alloc(&mut self, len: u64, align: u64) -> Result<Alloc, FrontError> {
        let len = len.max(1);
        let mut found = None;
        for (&start, &flen) in &self.free {
            let aligned = start.div_ceil(align) * align;
            if aligned + len <= start + flen {
                found = Some((start, flen, aligned));
                break;
            }
        }
        let (start, flen, aligned) = found.ok_or(FrontError::OutOfGuestMemory(len))?;
        self.free.remove(&start);
        if aligned > start {
            self.free.insert(start, aligned - start);
        }
        let end = aligned + len;
        if end < start + flen {
            self.free.insert(end, start + flen - end);
        }
        Ok(Alloc {
            addr: GuestAddress(aligned),
            len,
        })
    }

    /// Returns an allocation to the free list, merging it with its neighbours.
    pub fn free(&mut self, a: Alloc) {
        let mut start = a.addr.0;
        let mut len = a.len;
        if let Some((&pstart, &plen)) = self.free.range(..start).next_back() {
            if pstart + plen == start {
                self.free.remove(&pstart);
                start = pstart;
                len += plen;
            }
        }
        if let Some(&nlen) = self.free.get(&(start + len)) {
            self.free.remove(&(start + len));
            len += nlen;
        }
        self.free.insert(start, len);
    }

    /// Bytes currently free.
    pub fn free_bytes(&self) -> u64 {
        self.free.values().sum()
    }

    pub fn write(&self, addr: GuestAddress, data: &[u8]) -> Result<(), FrontError> {
        self.mem
            .write_slice(data, addr)
            .map_err(|e| FrontError::Memory(e.to_string()))
    }

    pub fn read(&self, addr: GuestAddress, len: usize) -> Result<Vec<u8>, FrontError> {
        let mut v = vec![0u8; len];
        self.mem
            .read_slice(&mut v, addr)
            .map_err(|e| FrontError::Memory(e.to_string()))?;
        Ok(v)
    }

    /// Fills `len` bytes at `addr` with `byte`.
    pub fn fill(&self, addr: GuestAddress, len: usize, byte: u8) -> Result<(), FrontError> {
        self.write(addr, &vec![byte; len])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn alloc_free_merges() {
        let mut ram = GuestRam::new(1 << 20, 3 * PAGE).unwrap();
        let total = ram.free_bytes();
        let a = ram.alloc(100, 8).unwrap();
        let b = ram.alloc(5000, 4096).unwrap();
        let c = ram.alloc(7, 1).unwrap();
        assert_eq!(a.addr.0 % 8, 0);
        assert_eq!(b.addr.0 % 4096, 0);
        assert!(a.addr.0 >= GUEST_RAM_BASE + 3 * PAGE);
        ram.free(b);
        ram.free(a);
        ram.free(c);
        assert_eq!(ram.free_bytes(), total);
        assert_eq!(ram.free.len(), 1);
        assert!(ram.alloc(total + 1, 1).is_err());
    }

    #[test]
    fn memory_is_shared_through_the_memfd() {
        let ram = GuestRam::new(1 << 16, 0).unwrap();
        ram.write(GuestAddress(GUEST_RAM_BASE + 10), b"abc")
            .unwrap();
        assert_eq!(
            ram.read(GuestAddress(GUEST_RAM_BASE + 10), 3).unwrap(),
            b"abc"
        );
        let info = ram.region_info().unwrap();
        assert_eq!(info.guest_phys_addr, GUEST_RAM_BASE);
        assert_eq!(info.memory_size, 1 << 16);
        assert!(info.mmap_handle >= 0);
    }
}
