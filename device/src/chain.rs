//! A descriptor chain taken off a virtqueue, as two byte streams: what the device may read
//! (the request) and what it may write (the response), each possibly scattered over several
//! descriptors. Reads and writes go through vm-memory's checked accessors only.

use virtio_queue::desc::split::Descriptor;
use virtio_queue::DescriptorChain;
use vm_memory::{Address, Bytes, GuestAddress, GuestMemory, Permissions};

use crate::config::MAX_BUFFER_BYTES;
use crate::error::RequestError;

/// The most descriptors a chain may have. virtio-queue bounds a direct chain by the queue
/// size, but an indirect table may hold 65535 descriptors, and every available entry may
/// point at the same table: collected whole, a guest's 1 MiB table would cost 1 MiB of
/// segments per chain, times the queue size. The largest legitimate chain is a PCM buffer of
/// `MAX_BUFFER_BYTES` described page by page, plus its header and status.
pub const MAX_DESCRIPTORS: usize = MAX_BUFFER_BYTES as usize / 4096 + 4;

/// One descriptor: a guest-physical range.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Segment {
    pub addr: GuestAddress,
    pub len: u32,
}

/// A chain, split by direction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Chain {
    /// The head descriptor index: what goes back in the used ring.
    pub head: u16,
    pub readable: Vec<Segment>,
    pub writable: Vec<Segment>,
    /// A device-readable descriptor came after a device-writable one (the spec forbids it).
    pub misordered: bool,
    /// The chain does not end: its last descriptor still had VIRTQ_DESC_F_NEXT when the walk
    /// stopped (a loop, which virtio-queue cuts after queue-size descriptors; a next index
    /// past the queue; an unreadable or nested indirect table; over 4 GiB), or it had no
    /// descriptor at all (a head past the queue or an unreadable table). Its segments are not
    /// what the driver meant: a loop lists the same memory again and again.
    pub broken: bool,
    /// The chain has more than [`MAX_DESCRIPTORS`] descriptors (the rest were not read; the
    /// chain is [`broken`](Self::broken) too).
    pub too_long: bool,
}

impl Chain {
    /// Collects a chain's descriptors, at most [`MAX_DESCRIPTORS`]. virtio-queue's iterator
    /// follows an indirect table (refusing a nested one, a table whose length is not a
    /// multiple of 16 or that does not map, and bounding the walk by the table's length),
    /// bounds a direct chain by the queue size and any chain's total length by 4 GiB, and
    /// ends early on an unreadable descriptor; a walk that ended before a descriptor without
    /// NEXT, or was cut at the cap, marks the chain [`broken`](Self::broken).
    pub fn from_descriptors<I: IntoIterator<Item = Descriptor>>(head: u16, descs: I) -> Chain {
        let mut chain = Chain {
            head,
            readable: Vec::new(),
            writable: Vec::new(),
            misordered: false,
            broken: true,
            too_long: false,
        };
        for (i, d) in descs.into_iter().enumerate() {
            if i == MAX_DESCRIPTORS {
                chain.too_long = true;
                chain.broken = true;
                break;
            }
            chain.broken = d.has_next();
            let seg = Segment {
                addr: d.addr(),
                len: d.len(),
            };
            if d.is_write_only() {
                chain.writable.push(seg);
            } else {
                if !chain.writable.is_empty() {
                    chain.misordered = true;
                }
                chain.readable.push(seg);
            }
        }
        chain
    }

    /// Takes a chain from virtio-queue.
    pub fn from_desc_chain<M>(dc: DescriptorChain<M>) -> Chain
    where
        M: std::ops::Deref,
        M::Target: GuestMemory,
    {
        let head = dc.head_index();
        Chain::from_descriptors(head, dc)
    }

    /// Bytes the device may read.
    pub fn readable_len(&self) -> u64 {
        self.readable.iter().map(|s| s.len as u64).sum()
    }

    /// Bytes the device may write.
    pub fn writable_len(&self) -> u64 {
        self.writable.iter().map(|s| s.len as u64).sum()
    }

    /// Every descriptor lies in mapped guest memory.
    pub fn check_mapped<M: GuestMemory + ?Sized>(&self, mem: &M) -> Result<(), RequestError> {
        let check = |segs: &[Segment], access| {
            for s in segs {
                if s.len > 0 && !mem.check_range(s.addr, s.len as usize, access) {
                    return Err(RequestError::Unmapped {
                        addr: s.addr.raw_value(),
                        len: s.len as u64,
                    });
                }
            }
            Ok(())
        };
        check(&self.readable, Permissions::Read)?;
        check(&self.writable, Permissions::Write)
    }

    /// Reads `buf.len()` bytes starting `offset` bytes into the readable stream.
    pub fn read_at<M: GuestMemory + ?Sized>(
        &self,
        mem: &M,
        offset: u64,
        buf: &mut [u8],
    ) -> Result<(), RequestError> {
        read_segments(&self.readable, mem, offset, buf)
    }

    /// Reads the first `n` readable bytes into a new buffer (`n` is bounded by the caller).
    pub fn read_vec<M: GuestMemory + ?Sized>(
        &self,
        mem: &M,
        offset: u64,
        n: usize,
    ) -> Result<Vec<u8>, RequestError> {
        let mut v = vec![0u8; n];
        self.read_at(mem, offset, &mut v)?;
        Ok(v)
    }

    /// Writes `data` starting `offset` bytes into the writable stream.
    pub fn write_at<M: GuestMemory + ?Sized>(
        &self,
        mem: &M,
        offset: u64,
        data: &[u8],
    ) -> Result<(), RequestError> {
        write_segments(&self.writable, mem, offset, data)
    }
}

/// Writes `data` at `offset` of the byte stream formed by `segs`.
pub fn write_segments<M: GuestMemory + ?Sized>(
    segs: &[Segment],
    mem: &M,
    offset: u64,
    data: &[u8],
) -> Result<(), RequestError> {
    let total: u64 = segs.iter().map(|s| s.len as u64).sum();
    copy_segments(segs, offset, data.len(), |seg_addr, pos, n| {
        let src = data.get(pos..pos + n).ok_or(RequestError::ShortResponse {
            got: pos as u64,
            need: (pos + n) as u64,
        })?;
        mem.write_slice(src, seg_addr)
            .map_err(|_| RequestError::Unmapped {
                addr: seg_addr.raw_value(),
                len: n as u64,
            })
    })
    .map_err(|e| match e {
        CopyError::Short => RequestError::ShortResponse {
            got: total,
            need: offset.saturating_add(data.len() as u64),
        },
        CopyError::Inner(e) => e,
    })
}

/// Reads `buf.len()` bytes at `offset` of the byte stream formed by `segs`.
pub fn read_segments<M: GuestMemory + ?Sized>(
    segs: &[Segment],
    mem: &M,
    offset: u64,
    buf: &mut [u8],
) -> Result<(), RequestError> {
    let total: u64 = segs.iter().map(|s| s.len as u64).sum();
    let want = buf.len();
    copy_segments(segs, offset, want, |seg_addr, pos, n| {
        let dst = buf
            .get_mut(pos..pos + n)
            .ok_or(RequestError::ShortRequest {
                got: pos as u64,
                need: (pos + n) as u64,
            })?;
        mem.read_slice(dst, seg_addr)
            .map_err(|_| RequestError::Unmapped {
                addr: seg_addr.raw_value(),
                len: n as u64,
            })
    })
    .map_err(|e| match e {
        CopyError::Short => RequestError::ShortRequest {
            got: total,
            need: offset.saturating_add(want as u64),
        },
        CopyError::Inner(e) => e,
    })
}

enum CopyError {
    Short,
    Inner(RequestError),
}

/// Walks `len` bytes of the stream formed by `segs` from `offset`, calling `f(address,
/// position in the caller's buffer, byte count)` for each contiguous piece.
fn copy_segments<F>(segs: &[Segment], offset: u64, len: usize, mut f: F) -> Result<(), CopyError>
where
    F: FnMut(GuestAddress, usize, usize) -> Result<(), RequestError>,
{
    let mut skip = offset;
    let mut done = 0usize;
    for s in segs {
        if done == len {
            break;
        }
        let seg_len = s.len as u64;
        if skip >= seg_len {
            skip -= seg_len;
            continue;
        }
        let avail = seg_len - skip;
        let n = avail.min((len - done) as u64) as usize;
        let addr = s
            .addr
            .checked_add(skip)
            .ok_or(CopyError::Inner(RequestError::Unmapped {
                addr: s.addr.raw_value(),
                len: seg_len,
            }))?;
        f(addr, done, n).map_err(CopyError::Inner)?;
        done += n;
        skip = 0;
    }
    if done == len {
        Ok(())
    } else {
        Err(CopyError::Short)
    }
}

/// The sub-range `[offset, offset + len)` of the stream formed by `segs`, as segments.
pub fn slice_segments(segs: &[Segment], offset: u64, len: u64) -> Option<Vec<Segment>> {
    let mut out = Vec::new();
    let mut skip = offset;
    let mut left = len;
    for s in segs {
        if left == 0 {
            break;
        }
        let seg_len = s.len as u64;
        if skip >= seg_len {
            skip -= seg_len;
            continue;
        }
        let n = (seg_len - skip).min(left);
        out.push(Segment {
            addr: s.addr.checked_add(skip)?,
            len: u32::try_from(n).ok()?,
        });
        left -= n;
        skip = 0;
    }
    (left == 0).then_some(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use vm_memory::GuestMemoryMmap;

    fn mem() -> GuestMemoryMmap<()> {
        GuestMemoryMmap::from_ranges(&[(GuestAddress(0), 0x10000)]).unwrap()
    }

    #[test]
    fn scattered_read_and_write() {
        let m = mem();
        m.write_slice(&[1, 2, 3], GuestAddress(0x100)).unwrap();
        m.write_slice(&[4, 5], GuestAddress(0x200)).unwrap();
        let c = Chain {
            head: 0,
            readable: vec![
                Segment {
                    addr: GuestAddress(0x100),
                    len: 3,
                },
                Segment {
                    addr: GuestAddress(0x200),
                    len: 2,
                },
            ],
            writable: vec![
                Segment {
                    addr: GuestAddress(0x300),
                    len: 1,
                },
                Segment {
                    addr: GuestAddress(0x400),
                    len: 3,
                },
            ],
            misordered: false,
            broken: false,
            too_long: false,
        };
        let mut b = [0u8; 3];
        c.read_at(&m, 2, &mut b).unwrap();
        assert_eq!(b, [3, 4, 5]);
        assert!(matches!(
            c.read_at(&m, 3, &mut b),
            Err(RequestError::ShortRequest { got: 5, need: 6 })
        ));
        c.write_at(&m, 0, &[9, 8, 7, 6]).unwrap();
        let mut o = [0u8; 3];
        m.read_slice(&mut o, GuestAddress(0x400)).unwrap();
        assert_eq!(o, [8, 7, 6]);
        assert!(c.write_at(&m, 1, &[0; 4]).is_err());
        let s = slice_segments(&c.writable, 0, 2).unwrap();
        assert_eq!(s.len(), 2);
        assert_eq!(s[1].len, 1);
        assert!(slice_segments(&c.writable, 2, 5).is_none());
    }

    #[test]
    fn unmapped_is_reported() {
        let m = mem();
        let c = Chain {
            head: 0,
            readable: vec![Segment {
                addr: GuestAddress(0xfff0),
                len: 0x20,
            }],
            writable: vec![],
            misordered: false,
            broken: false,
            too_long: false,
        };
        assert!(matches!(
            c.check_mapped(&m),
            Err(RequestError::Unmapped { .. })
        ));
        let mut b = [0u8; 0x20];
        assert!(c.read_at(&m, 0, &mut b).is_err());
    }
}
