//! The tap's listening sockets: the unix socket (mode 0600 from the first moment anyone can
//! connect, a stale file replaced, a live daemon's socket left alone) and optional TCP.

use std::io;
use std::net::{SocketAddr, TcpListener};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};

use super::TapError;

const BACKLOG: libc::c_int = 16;

/// The socket file we created, identified by device and inode so shutdown removes only
/// our own file, not one a later daemon put at the same path.
#[derive(Debug)]
pub(super) struct SocketFile {
    path: PathBuf,
    dev: u64,
    ino: u64,
}

impl SocketFile {
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Removes the socket file if it is still the one we bound.
    pub fn remove(&self) {
        match std::fs::symlink_metadata(&self.path) {
            Ok(m) if m.dev() == self.dev && m.ino() == self.ino => {
                if let Err(e) = std::fs::remove_file(&self.path) {
                    log::warn!("tap: cannot remove {}: {e}", self.path.display());
                }
            }
            Ok(_) => log::info!(
                "tap: {} now belongs to someone else; left in place",
                self.path.display()
            ),
            Err(_) => {}
        }
    }
}

fn bind_error(path: &Path, source: io::Error) -> TapError {
    TapError::Bind {
        what: path.display().to_string(),
        source,
    }
}

/// Clears the way for binding `path`: nothing there, or a stale socket (removed). A socket
/// some process still accepts on, or a file that is not a socket, is an error.
fn clear_stale(path: &Path) -> Result<(), TapError> {
    let meta = match std::fs::symlink_metadata(path) {
        Ok(m) => m,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(bind_error(path, e)),
    };
    if !meta.file_type().is_socket() {
        return Err(bind_error(
            path,
            io::Error::new(
                io::ErrorKind::AlreadyExists,
                "the path exists and is not a socket; not replacing it",
            ),
        ));
    }
    match UnixStream::connect(path) {
        Ok(_) => Err(bind_error(
            path,
            io::Error::new(
                io::ErrorKind::AddrInUse,
                "another process (a running dsproxy-device?) is serving this socket",
            ),
        )),
        Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => {
            log::info!("tap: replacing stale socket {}", path.display());
            match std::fs::remove_file(path) {
                Ok(()) => Ok(()),
                Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
                Err(e) => Err(bind_error(path, e)),
            }
        }
        Err(e) => Err(bind_error(path, e)),
    }
}

/// Binds the unix tap socket. The socket is given mode 0600 before bind (so the file is
/// created with at most those bits) and the file is set to exactly 0600 before listen (so
/// no one can connect while it has any other mode).
pub(super) fn bind_unix(path: &Path) -> Result<(UnixListener, SocketFile), TapError> {
    clear_stale(path)?;

    // SAFETY: an all-zero sockaddr_un is valid.
    let mut addr: libc::sockaddr_un = unsafe { std::mem::zeroed() };
    addr.sun_family = libc::AF_UNIX as libc::sa_family_t;
    let bytes = path.as_os_str().as_bytes();
    if bytes.is_empty() || bytes.len() >= addr.sun_path.len() || bytes.contains(&0) {
        return Err(bind_error(
            path,
            io::Error::new(
                io::ErrorKind::InvalidInput,
                format!(
                    "a unix socket path must be 1 to {} bytes without NUL",
                    addr.sun_path.len() - 1
                ),
            ),
        ));
    }
    for (dst, src) in addr.sun_path.iter_mut().zip(bytes) {
        *dst = *src as libc::c_char;
    }

    // SAFETY: plain socket(2); the result is checked and owned right away.
    let raw = unsafe {
        libc::socket(
            libc::AF_UNIX,
            libc::SOCK_STREAM | libc::SOCK_CLOEXEC | libc::SOCK_NONBLOCK,
            0,
        )
    };
    if raw < 0 {
        return Err(bind_error(path, io::Error::last_os_error()));
    }
    // SAFETY: raw is a fresh socket nobody else owns.
    let fd = unsafe { OwnedFd::from_raw_fd(raw) };

    // SAFETY: fchmod on our own socket fd.
    if unsafe { libc::fchmod(fd.as_raw_fd(), 0o600) } < 0 {
        log::debug!("tap: fchmod before bind: {}", io::Error::last_os_error());
    }
    let len = std::mem::size_of::<libc::sa_family_t>() + bytes.len() + 1;
    // SAFETY: addr is a valid sockaddr_un and len does not exceed its size.
    let rc = unsafe {
        libc::bind(
            fd.as_raw_fd(),
            (&addr as *const libc::sockaddr_un).cast(),
            len as libc::socklen_t,
        )
    };
    if rc < 0 {
        return Err(bind_error(path, io::Error::last_os_error()));
    }
    let file = std::fs::symlink_metadata(path)
        .map(|m| SocketFile {
            path: path.to_path_buf(),
            dev: m.dev(),
            ino: m.ino(),
        })
        .map_err(|e| bind_error(path, e))?;
    if let Err(e) = std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)) {
        file.remove();
        return Err(bind_error(path, e));
    }
    // SAFETY: listen(2) on our bound socket.
    if unsafe { libc::listen(fd.as_raw_fd(), BACKLOG) } < 0 {
        let e = io::Error::last_os_error();
        file.remove();
        return Err(bind_error(path, e));
    }
    Ok((UnixListener::from(fd), file))
}

/// Binds the TCP tap socket (non-blocking).
pub(super) fn bind_tcp(addr: SocketAddr) -> Result<TcpListener, TapError> {
    let err = |source| TapError::Bind {
        what: format!("tcp {addr}"),
        source,
    };
    let l = TcpListener::bind(addr).map_err(err)?;
    l.set_nonblocking(true).map_err(err)?;
    Ok(l)
}

/// A newly accepted reader's socket, made non-blocking, and its name for logs.
pub(super) enum Accepted {
    Reader(OwnedFd, String),
    None,
}

pub(super) fn accept_unix(l: &UnixListener) -> io::Result<Accepted> {
    match l.accept() {
        Ok((s, _)) => {
            s.set_nonblocking(true)?;
            Ok(Accepted::Reader(OwnedFd::from(s), "unix".to_string()))
        }
        Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(Accepted::None),
        Err(e) => Err(e),
    }
}

pub(super) fn accept_tcp(l: &TcpListener) -> io::Result<Accepted> {
    match l.accept() {
        Ok((s, peer)) => {
            s.set_nonblocking(true)?;
            // Control records are small and latency matters more than packet count.
            if let Err(e) = s.set_nodelay(true) {
                log::debug!("tap: TCP_NODELAY for {peer}: {e}");
            }
            Ok(Accepted::Reader(OwnedFd::from(s), format!("tcp {peer}")))
        }
        Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(Accepted::None),
        Err(e) => Err(e),
    }
}
