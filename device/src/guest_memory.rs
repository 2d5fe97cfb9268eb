//! Checks on the guest memory a frontend hands over (SET_MEM_TABLE).
//!
//! vhost-user-backend maps each region of the table as the frontend describes it, and the
//! kernel lets a mapping run past the end of its file: the first access there raises SIGBUS
//! and kills the daemon. QEMU never sends such a table, but a frontend is a peer like any
//! other, so every region backed by a regular file (memfd, hugetlbfs, a file on disk) must
//! lie within that file before the card touches it.

use std::os::fd::AsRawFd;

use thiserror::Error;
use vm_memory::{GuestMemoryBackend, GuestMemoryMmap, GuestMemoryRegion};

/// A region the daemon must not touch.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum MemoryError {
    #[error(
        "guest memory region at {gpa:#x} maps {len:#x} bytes at offset {offset:#x} of fd {fd}, \
         but the file is only {file_len:#x} bytes long (an access past its end would be SIGBUS)"
    )]
    PastEndOfFile {
        gpa: u64,
        len: u64,
        offset: u64,
        fd: i32,
        file_len: u64,
    },
    #[error("guest memory region at {gpa:#x}: cannot stat its file: {why}")]
    Stat { gpa: u64, why: String },
}

/// Checks that every file-backed region of `mem` lies within its file.
///
/// Regions without a file (anonymous memory) and files that are not regular (a DAX character
/// device, say, whose size `fstat` does not report) cannot be checked and are accepted.
pub fn check_backing(mem: &GuestMemoryMmap<()>) -> Result<(), MemoryError> {
    for region in mem.iter() {
        let Some(fo) = region.file_offset() else {
            continue;
        };
        let gpa = region.start_addr().0;
        let meta = fo.file().metadata().map_err(|e| MemoryError::Stat {
            gpa,
            why: e.to_string(),
        })?;
        if !meta.file_type().is_file() {
            continue;
        }
        let len = region.len();
        let offset = fo.start();
        let fits = offset.checked_add(len).is_some_and(|end| end <= meta.len());
        if !fits {
            return Err(MemoryError::PastEndOfFile {
                gpa,
                len,
                offset,
                fd: fo.file().as_raw_fd(),
                file_len: meta.len(),
            });
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs::File;
    use vm_memory::{FileOffset, GuestAddress};

    fn memfd(len: u64) -> File {
        let name = c"dsproxy-guest-memory-test";
        // SAFETY: memfd_create with a valid C string.
        let fd = unsafe { libc::memfd_create(name.as_ptr(), libc::MFD_CLOEXEC) };
        assert!(fd >= 0);
        // SAFETY: a fresh fd.
        let f = unsafe { <File as std::os::fd::FromRawFd>::from_raw_fd(fd) };
        f.set_len(len).unwrap();
        f
    }

    fn mapped(file_len: u64, offset: u64, len: usize) -> GuestMemoryMmap<()> {
        GuestMemoryMmap::from_ranges_with_files([(
            GuestAddress(0x4000_0000),
            len,
            Some(FileOffset::new(memfd(file_len), offset)),
        )])
        .unwrap()
    }

    #[test]
    fn a_region_inside_its_file_is_accepted() {
        assert_eq!(check_backing(&mapped(0x20000, 0, 0x20000)), Ok(()));
        assert_eq!(check_backing(&mapped(0x20000, 0x10000, 0x10000)), Ok(()));
        let anon = GuestMemoryMmap::<()>::from_ranges(&[(GuestAddress(0), 0x1000)]).unwrap();
        assert_eq!(check_backing(&anon), Ok(()));
    }

    #[test]
    fn a_region_past_the_end_of_its_file_is_refused() {
        let e = check_backing(&mapped(0x10000, 0, 0x20000)).unwrap_err();
        assert!(matches!(
            e,
            MemoryError::PastEndOfFile {
                len: 0x20000,
                file_len: 0x10000,
                ..
            }
        ));
        let e = check_backing(&mapped(0x20000, 0x10000, 0x20000)).unwrap_err();
        assert!(matches!(
            e,
            MemoryError::PastEndOfFile {
                offset: 0x10000,
                ..
            }
        ));
    }
}
