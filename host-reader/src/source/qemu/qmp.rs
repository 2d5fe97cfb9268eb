//! Attaching to QEMU's D-Bus display through its QMP socket: a socketpair, one end passed
//! to QEMU with `getfd` (SCM_RIGHTS) and handed to the display with
//! `add_client protocol=@dbus-display`; the other end is ours, a peer-to-peer D-Bus
//! connection with QEMU as the server.

use std::io::{self, IoSlice};
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::Duration;

use qapi::qmp;

use crate::error::ReaderError;

/// How long QEMU may take to answer on QMP.
const QMP_TIMEOUT: Duration = Duration::from_secs(10);
/// The name the passed descriptor goes by inside QEMU until `add_client` takes it.
const FD_NAME: &str = "dsproxy-host-reader";

/// What `--qmp` names, for messages.
pub fn target(path: &Path) -> String {
    format!("QEMU (QMP {})", path.display())
}

/// Connects to QMP at `path` and returns our end of a fresh D-Bus display connection.
pub fn attach_display(path: &Path) -> Result<UnixStream, ReaderError> {
    let stream = UnixStream::connect(path).map_err(|source| {
        let hint = match source.kind() {
            io::ErrorKind::NotFound | io::ErrorKind::ConnectionRefused => {
                " (is QEMU running with -qmp unix:PATH,server=on,wait=off?)"
            }
            _ => "",
        };
        ReaderError::Connect {
            target: target(path),
            source,
            hint,
        }
    })?;
    let fail = |why: String| ReaderError::Qemu {
        target: target(path),
        why,
    };
    stream
        .set_read_timeout(Some(QMP_TIMEOUT))
        .map_err(|e| fail(e.to_string()))?;
    // qapi's handshake panics on an immediate end of stream; a peer that closes before its
    // greeting is turned away here.
    let mut first = [0u8; 1];
    // SAFETY: recv writes at most one byte into `first`; MSG_PEEK leaves it for qapi.
    let n = unsafe {
        libc::recv(
            stream.as_raw_fd(),
            first.as_mut_ptr().cast(),
            1,
            libc::MSG_PEEK,
        )
    };
    match n {
        0 => return Err(fail("the socket closed before QMP's greeting".into())),
        n if n < 0 => {
            return Err(fail(format!(
                "no QMP greeting: {}",
                io::Error::last_os_error()
            )))
        }
        _ => {}
    }
    let mut q = qapi::Qmp::from_stream(&stream);
    q.handshake()
        .map_err(|e| fail(format!("not a QMP socket: {e}")))?;

    let (ours, theirs) = UnixStream::pair().map_err(|e| fail(e.to_string()))?;
    send_fd(&stream, theirs.as_raw_fd()).map_err(|e| fail(format!("passing the socket: {e}")))?;
    q.execute(&qmp::getfd {
        fdname: FD_NAME.into(),
    })
    .map_err(|e| fail(format!("getfd: {e}")))?;
    drop(theirs);
    q.execute(&qmp::add_client {
        protocol: "@dbus-display".into(),
        fdname: FD_NAME.into(),
        skipauth: None,
        tls: None,
    })
    .map_err(|e| fail(explain_add_client(&e.to_string())))?;
    Ok(ours)
}

/// `add_client`'s refusals in the words of the QEMU command line that fixes them.
fn explain_add_client(err: &str) -> String {
    if err.contains("not in use") || err.contains("is invalid") || err.contains("not enabled") {
        format!(
            "no D-Bus display ({err}): start QEMU with -display dbus,p2p=yes,audiodev=ID and \
             -audiodev dbus,id=ID"
        )
    } else if err.contains("bus mode") {
        format!("its D-Bus display is on a bus ({err}): give -display dbus p2p=yes")
    } else {
        format!("add_client: {err}")
    }
}

/// Sends one byte of JSON whitespace carrying `fd` (SCM_RIGHTS); QMP's `getfd` then takes
/// the descriptor. std has no stable API for ancillary data yet.
fn send_fd(sock: &UnixStream, fd: RawFd) -> io::Result<()> {
    let byte = [b' '];
    let iov = [IoSlice::new(&byte)];
    // SAFETY: CMSG_SPACE only computes a size.
    let space = unsafe { libc::CMSG_SPACE(std::mem::size_of::<RawFd>() as u32) } as usize;
    let mut control = vec![0u8; space];
    // SAFETY: msghdr is plain data; the pointers set below outlive the sendmsg call, and
    // the control buffer is CMSG_SPACE bytes for one descriptor.
    unsafe {
        let mut msg: libc::msghdr = std::mem::zeroed();
        msg.msg_iov = iov.as_ptr() as *mut libc::iovec;
        msg.msg_iovlen = 1;
        msg.msg_control = control.as_mut_ptr().cast();
        msg.msg_controllen = space as _;
        let cmsg = libc::CMSG_FIRSTHDR(&msg);
        (*cmsg).cmsg_level = libc::SOL_SOCKET;
        (*cmsg).cmsg_type = libc::SCM_RIGHTS;
        (*cmsg).cmsg_len = libc::CMSG_LEN(std::mem::size_of::<RawFd>() as u32) as _;
        std::ptr::copy_nonoverlapping(
            (&fd as *const RawFd).cast::<u8>(),
            libc::CMSG_DATA(cmsg),
            std::mem::size_of::<RawFd>(),
        );
        if libc::sendmsg(sock.as_raw_fd(), &msg, libc::MSG_NOSIGNAL) < 0 {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;
    use std::os::unix::net::UnixListener;

    /// Reads what the client sent, with any descriptors that came along (as QEMU's chardev
    /// does, recvmsg with room for SCM_RIGHTS).
    fn recv_with_fds(s: &UnixStream, fds: &mut Vec<std::os::fd::OwnedFd>) -> Vec<u8> {
        use std::os::fd::FromRawFd;
        let mut buf = [0u8; 4096];
        let mut control = [0u8; 64];
        // SAFETY: the buffers outlive the call; CMSG_* walk only the received control data.
        unsafe {
            let mut iov = libc::iovec {
                iov_base: buf.as_mut_ptr().cast(),
                iov_len: buf.len(),
            };
            let mut msg: libc::msghdr = std::mem::zeroed();
            msg.msg_iov = &mut iov;
            msg.msg_iovlen = 1;
            msg.msg_control = control.as_mut_ptr().cast();
            msg.msg_controllen = control.len() as _;
            let n = libc::recvmsg(s.as_raw_fd(), &mut msg, 0);
            if n <= 0 {
                return Vec::new();
            }
            let mut c = libc::CMSG_FIRSTHDR(&msg);
            while !c.is_null() {
                if (*c).cmsg_level == libc::SOL_SOCKET && (*c).cmsg_type == libc::SCM_RIGHTS {
                    let mut fd: RawFd = -1;
                    std::ptr::copy_nonoverlapping(
                        libc::CMSG_DATA(c),
                        (&mut fd as *mut RawFd).cast::<u8>(),
                        std::mem::size_of::<RawFd>(),
                    );
                    fds.push(std::os::fd::OwnedFd::from_raw_fd(fd));
                }
                c = libc::CMSG_NXTHDR(&msg, c);
            }
            buf[..n as usize].to_vec()
        }
    }

    /// A QMP server that answers the handshake, `getfd` and `add_client` like QEMU: `getfd`
    /// fails unless a descriptor came before it, and `add_client` fails with
    /// `add_client_error`. Returns the descriptor it was given.
    fn fake_qmp(
        path: &Path,
        add_client_error: Option<&'static str>,
    ) -> std::thread::JoinHandle<Option<std::os::fd::OwnedFd>> {
        let l = UnixListener::bind(path).unwrap();
        std::thread::spawn(move || {
            let (mut s, _) = l.accept().unwrap();
            s.write_all(b"{\"QMP\": {\"version\": {\"qemu\": {\"micro\": 2, \"minor\": 0, \"major\": 10}, \"package\": \"\"}, \"capabilities\": []}}\r\n").unwrap();
            let mut fds = Vec::new();
            let mut named = None;
            let mut pending = Vec::new();
            loop {
                let got = recv_with_fds(&s, &mut fds);
                if got.is_empty() {
                    return named;
                }
                pending.extend_from_slice(&got);
                while let Some(nl) = pending.iter().position(|&b| b == b'\n') {
                    let line = String::from_utf8_lossy(&pending[..nl]).into_owned();
                    pending.drain(..=nl);
                    let reply = if line.contains("getfd") {
                        match fds.pop() {
                            Some(fd) => {
                                named = Some(fd);
                                "{\"return\": {}}".to_string()
                            }
                            None => "{\"error\": {\"class\": \"GenericError\", \"desc\": \"No file descriptor supplied via SCM_RIGHTS\"}}".into(),
                        }
                    } else if line.contains("add_client") {
                        match add_client_error {
                            Some(e) => format!(
                                "{{\"error\": {{\"class\": \"GenericError\", \"desc\": \"{e}\"}}}}"
                            ),
                            None => "{\"return\": {}}".into(),
                        }
                    } else {
                        "{\"return\": {}}".into()
                    };
                    s.write_all(format!("{reply}\r\n").as_bytes()).unwrap();
                }
            }
        })
    }

    fn tmp(name: &str) -> std::path::PathBuf {
        let p =
            std::env::temp_dir().join(format!("dsproxy-qmp-{}-{name}.sock", std::process::id()));
        let _ = std::fs::remove_file(&p);
        p
    }

    #[test]
    fn missing_socket_says_how_to_start_qemu() {
        let e = attach_display(&tmp("missing")).unwrap_err().to_string();
        assert!(e.contains("cannot attach to QEMU (QMP "), "{e}");
        assert!(e.contains("-qmp unix:PATH"), "{e}");
    }

    #[test]
    fn handshake_getfd_add_client_hand_qemu_the_other_end() {
        use std::io::Read;
        let p = tmp("ok");
        let t = fake_qmp(&p, None);
        let mut ours = attach_display(&p).unwrap();
        // QEMU's end of the pair reaches ours: what it writes, we read.
        let theirs = UnixStream::from(t.join().unwrap().expect("QEMU got a descriptor"));
        (&theirs).write_all(b"dbus").unwrap();
        let mut got = [0u8; 4];
        ours.read_exact(&mut got).unwrap();
        assert_eq!(&got, b"dbus");
        let _ = std::fs::remove_file(&p);
    }

    #[test]
    fn qemu_without_dbus_display_is_explained() {
        let p = tmp("nodbus");
        let _t = fake_qmp(&p, Some("D-Bus display is not in use"));
        let e = attach_display(&p).unwrap_err().to_string();
        assert!(e.contains("-display dbus,p2p=yes"), "{e}");
        let _ = std::fs::remove_file(&p);
    }

    #[test]
    fn a_peer_that_is_not_qmp_is_refused() {
        let p = tmp("notqmp");
        let l = UnixListener::bind(&p).unwrap();
        let t = std::thread::spawn(move || {
            let (mut s, _) = l.accept().unwrap();
            s.write_all(b"HTTP/1.1 200 OK\r\n\r\n").unwrap();
        });
        let e = attach_display(&p).unwrap_err().to_string();
        assert!(e.contains("not a QMP socket"), "{e}");
        t.join().unwrap();
        let p2 = tmp("closes");
        let l = UnixListener::bind(&p2).unwrap();
        let t = std::thread::spawn(move || drop(l.accept().unwrap()));
        let e = attach_display(&p2).unwrap_err().to_string();
        assert!(e.contains("closed before"), "{e}");
        t.join().unwrap();
        let _ = std::fs::remove_file(&p);
        let _ = std::fs::remove_file(&p2);
    }
}
