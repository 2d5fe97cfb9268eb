//! The vring worker's exit event, and the one fd vhost-user-backend 0.24 leaks with it.
//!
//! `VringEpollHandler::new` registers the consumer end of the exit event on its epoll with
//! `consumer.into_raw_fd()` and never closes it (docs/upstream/vhost-user-backend-exit-event-leak.md).
//! The daemon builds a new `VhostUserDaemon`, hence a new exit event, per frontend connection,
//! so without this every connection left one eventfd open and the daemon died with EMFILE
//! after about a thousand VMs.
//!
//! The fix here: remember which fd number the library took, keep a duplicate of it as a
//! witness, and once the library's worker thread has been joined (the daemon dropped), close
//! that number — but only if it still refers to the same open file as the witness. A library
//! that one day closes the fd itself therefore never has an unrelated fd closed behind its
//! back: the number would by then be free or belong to another file, and the check fails.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::sync::Mutex;

use log::{debug, warn};
use vmm_sys_util::event::{
    new_event_consumer_and_notifier, EventConsumer, EventFlag, EventNotifier,
};

/// Exit events handed to vhost-user-backend, to be reclaimed when its worker is gone.
#[derive(Default)]
pub struct ExitEvents {
    handed_out: Mutex<Vec<HandedOut>>,
    /// One made in advance by [`prepare`](Self::prepare).
    prepared: Mutex<Option<(EventConsumer, EventNotifier)>>,
}

/// An exit event's consumer as the library took it.
struct HandedOut {
    /// The fd number the library registered and leaks.
    raw: RawFd,
    /// A duplicate of it (same open file description), ours to keep and close.
    witness: OwnedFd,
}

impl ExitEvents {
    /// Makes the next exit event now, while a failure can still be reported.
    ///
    /// `VhostUserBackend::exit_event` can only answer `None` when it fails, and a vring
    /// worker without an exit event can never be told to stop: the daemon would hang joining
    /// it at the end of the connection. Creating it before the `VhostUserDaemon` turns that
    /// (e.g. EMFILE) into an error for this connection instead.
    pub fn prepare(&self) -> io::Result<()> {
        let pair = self.create()?;
        *self.prepared.lock().unwrap_or_else(|p| p.into_inner()) = Some(pair);
        Ok(())
    }

    /// The prepared exit event, or a new one (`VhostUserBackend::exit_event`).
    pub fn take(&self) -> io::Result<(EventConsumer, EventNotifier)> {
        let prepared = self
            .prepared
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take();
        match prepared {
            Some(pair) => Ok(pair),
            None => self.create(),
        }
    }

    /// A new exit event for a vring worker.
    pub fn create(&self) -> io::Result<(EventConsumer, EventNotifier)> {
        let (consumer, notifier) =
            new_event_consumer_and_notifier(EventFlag::NONBLOCK | EventFlag::CLOEXEC)?;
        let witness = dup_cloexec(consumer.as_raw_fd())?;
        self.lock().push(HandedOut {
            raw: consumer.as_raw_fd(),
            witness,
        });
        Ok((consumer, notifier))
    }

    /// Closes the consumers the library leaked. Call only once the `VhostUserDaemon` they
    /// were created for has been dropped: its worker threads are joined then, and nothing
    /// uses the fds any more. Returns how many were closed.
    pub fn reclaim(&self) -> usize {
        // One prepared but never taken (the daemon failed before its worker started) is
        // still owned here and closes normally. Its number is still listed below; the
        // identity check sees it is no longer the witness's file and leaves it alone.
        drop(
            self.prepared
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .take(),
        );
        let handed_out = std::mem::take(&mut *self.lock());
        let mut closed = 0;
        for h in handed_out {
            match same_open_file(h.raw, h.witness.as_raw_fd()) {
                Ok(true) => {
                    // SAFETY: `raw` is the consumer fd we created in `create`; the library
                    // only registered it on an epoll (now closed) and never closes it, and we
                    // just checked the number still refers to that same file. Taking
                    // ownership closes it exactly once.
                    drop(unsafe { OwnedFd::from_raw_fd(h.raw) });
                    closed += 1;
                }
                Ok(false) => debug!(
                    "exit event fd {} was already closed by vhost-user-backend; nothing to reclaim",
                    h.raw
                ),
                Err(e) => warn!(
                    "cannot tell whether fd {} is still the worker's exit event ({e}); left open",
                    h.raw
                ),
            }
            // The witness closes here.
        }
        closed
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<HandedOut>> {
        self.handed_out.lock().unwrap_or_else(|p| p.into_inner())
    }
}

fn dup_cloexec(fd: RawFd) -> io::Result<OwnedFd> {
    // SAFETY: F_DUPFD_CLOEXEC on a valid fd returns a new fd or -1; no memory is involved.
    let n = unsafe { libc::fcntl(fd, libc::F_DUPFD_CLOEXEC, 0) };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: n is a fresh fd nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(n) })
}

/// Whether fd numbers `a` and `b` of this process refer to the same open file description.
///
/// `kcmp(KCMP_FILE)` answers exactly that; where it is unavailable (seccomp, a kernel
/// without CONFIG_KCMP) the shared file status flags tell: duplicates share O_NONBLOCK, so
/// toggling it on `b` must show on `a`, both ways, and nothing else can make that happen.
fn same_open_file(a: RawFd, b: RawFd) -> io::Result<bool> {
    const KCMP_FILE: libc::c_long = 0;
    // SAFETY: kcmp only compares kernel objects of the given pids and fds.
    let pid = unsafe { libc::getpid() } as libc::c_long;
    let r = unsafe {
        libc::syscall(
            libc::SYS_kcmp,
            pid,
            pid,
            KCMP_FILE,
            a as libc::c_long,
            b as libc::c_long,
        )
    };
    match r {
        0 => return Ok(true),
        // 1 and 2 order the two files, 3 says they differ without an order.
        1..=3 => return Ok(false),
        _ => {}
    }
    let err = io::Error::last_os_error();
    if err.raw_os_error() == Some(libc::EBADF) {
        return Ok(false);
    }
    flags_shared(a, b)
}

fn get_fl(fd: RawFd) -> io::Result<libc::c_int> {
    // SAFETY: F_GETFL reads the fd's status flags.
    let f = unsafe { libc::fcntl(fd, libc::F_GETFL) };
    if f < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(f)
    }
}

fn set_fl(fd: RawFd, flags: libc::c_int) -> io::Result<()> {
    // SAFETY: F_SETFL sets the fd's status flags.
    if unsafe { libc::fcntl(fd, libc::F_SETFL, flags) } < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

fn flags_shared(a: RawFd, b: RawFd) -> io::Result<bool> {
    match get_fl(a) {
        Ok(_) => {}
        Err(e) if e.raw_os_error() == Some(libc::EBADF) => return Ok(false),
        Err(e) => return Err(e),
    }
    let fb = get_fl(b)?;
    let mut shared = true;
    // Flip and restore: `b` ends as it was, and so does `a` (changed only if shared).
    for flags in [fb ^ libc::O_NONBLOCK, fb] {
        set_fl(b, flags)?;
        shared &= get_fl(a)? & libc::O_NONBLOCK == flags & libc::O_NONBLOCK;
    }
    Ok(shared)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_fd_closed_meanwhile_is_not_closed_again() {
        let events = ExitEvents::default();
        let (consumer, notifier) = events.create().unwrap();
        let raw = consumer.as_raw_fd();
        // A fixed library closes the consumer; the number is then reused by another file.
        drop(consumer);
        drop(notifier);
        let other = std::fs::File::open("/proc/self/stat").unwrap();
        let reused = other.as_raw_fd() == raw;
        assert_eq!(events.reclaim(), 0);
        // The other file is still open.
        assert!(get_fl(other.as_raw_fd()).is_ok(), "reused={reused}");
    }

    #[test]
    fn flag_fallback_tells_duplicates_from_strangers() {
        let (c, _n) = new_event_consumer_and_notifier(EventFlag::NONBLOCK).unwrap();
        let dup = dup_cloexec(c.as_raw_fd()).unwrap();
        assert!(flags_shared(c.as_raw_fd(), dup.as_raw_fd()).unwrap());
        let (c2, _n2) = new_event_consumer_and_notifier(EventFlag::NONBLOCK).unwrap();
        assert!(!flags_shared(c.as_raw_fd(), c2.as_raw_fd()).unwrap());
        assert!(get_fl(c.as_raw_fd()).unwrap() & libc::O_NONBLOCK != 0);
    }
}
