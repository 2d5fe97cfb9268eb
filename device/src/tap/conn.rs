//! One reader connection: its outgoing queue (shared encoded frames, written with
//! non-blocking vectored sends), its incoming bytes (decoded with dsproxy-wire's bounded
//! decoder), its subscription and its backpressure/gap bookkeeping.

use std::collections::{BTreeMap, VecDeque};
use std::io::{self, IoSlice};
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::sync::Arc;

use dsproxy_wire::record::{Record, WireError};
use event_manager::EventSet;

use super::shared::Frame;
use super::subscription::Subscription;

/// Bytes asked of the kernel per read.
const READ_CHUNK: usize = 64 * 1024;
/// iovecs per send (well under IOV_MAX).
const MAX_IOV: usize = 64;

/// A frame being written: `pos` bytes of it are already sent.
struct OutChunk {
    frame: Frame,
    pos: usize,
}

/// PCM dropped for a live reader and not yet reported: bytes `offset..offset+bytes` of the
/// stream, the first of which the card played at `time_ns`.
#[derive(Debug, Clone, Copy)]
struct GapRun {
    offset: u64,
    bytes: u64,
    time_ns: u64,
}

/// Why a reader is being closed, for the log line.
pub(super) enum CloseWhy {
    /// Normal end (EOF, a peer that went away, end of shutdown flush): info level.
    Quiet(String),
    /// The reader misbehaved or could not be served: warn level.
    Fault(String),
}

/// What a read from the socket brought.
pub(super) enum ReadOutcome {
    /// Bytes were added to the input buffer.
    Data,
    /// Nothing to read now.
    WouldBlock,
    /// The reader closed its side.
    Eof,
}

pub(super) struct Reader {
    fd: OwnedFd,
    /// "unix" or the TCP peer address, for logs.
    pub peer: String,
    out: VecDeque<OutChunk>,
    queued: usize,
    write_blocked: bool,
    input: Vec<u8>,
    /// Bytes of `input` already decoded.
    input_pos: usize,
    pub sub: Option<Subscription>,
    /// A non-live reader above the high-water mark: it holds the card.
    pub over: bool,
    gaps: BTreeMap<u32, GapRun>,
    /// An INJECT record that did not fit its stream's buffer: reading is paused until it does.
    pub held_inject: Option<(u32, Vec<u8>)>,
    /// The peer hung up while reading was paused: the connection is out of the epoll set and
    /// is closed once its held and buffered records are delivered.
    pub detached: bool,
    /// Found dead or misbehaving where it could not be closed at once: closed next settle.
    pub doomed: Option<CloseWhy>,
    /// Events currently registered in the epoll set.
    pub interest: EventSet,
    /// It may send SET_CONTROL and INJECT (unix readers; TCP ones with
    /// `--allow-tcp-control`). Otherwise they are refused, the first with a NOTICE.
    pub may_control: bool,
    /// Requests refused because the reader only listens.
    pub refused: u64,
}

impl Reader {
    pub fn new(fd: OwnedFd, peer: String) -> Reader {
        Reader {
            fd,
            peer,
            out: VecDeque::new(),
            queued: 0,
            write_blocked: false,
            input: Vec::new(),
            input_pos: 0,
            sub: None,
            over: false,
            gaps: BTreeMap::new(),
            held_inject: None,
            detached: false,
            doomed: None,
            interest: EventSet::empty(),
            may_control: true,
            refused: 0,
        }
    }

    /// Bytes waiting to be written to this reader.
    pub fn queued(&self) -> usize {
        self.queued
    }

    pub fn is_live(&self) -> bool {
        self.sub.is_some_and(|s| s.live())
    }

    pub fn push(&mut self, frame: Frame) {
        if frame.is_empty() {
            return;
        }
        self.queued += frame.len();
        self.out.push_back(OutChunk { frame, pos: 0 });
    }

    /// The last write found the socket full (until the next EPOLLOUT or successful write).
    pub fn write_blocked(&self) -> bool {
        self.write_blocked
    }

    /// Writes as much of the queue as the socket takes without blocking. An error means the
    /// connection is dead (EPIPE, ECONNRESET…).
    pub fn flush(&mut self) -> io::Result<()> {
        self.write_blocked = false;
        while !self.out.is_empty() {
            let iov: Vec<IoSlice<'_>> = self
                .out
                .iter()
                .take(MAX_IOV)
                .map(|c| IoSlice::new(&c.frame[c.pos..]))
                .collect();
            let asked: usize = iov.iter().map(|s| s.len()).sum();
            let sent = match send_nosignal(self.fd.as_raw_fd(), &iov) {
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    self.write_blocked = true;
                    return Ok(());
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            };
            drop(iov);
            self.consume(sent);
            if sent < asked {
                // The socket buffer is full; EPOLLOUT says when there is room.
                self.write_blocked = true;
                return Ok(());
            }
        }
        Ok(())
    }

    fn consume(&mut self, mut n: usize) {
        self.queued -= n;
        while n > 0 {
            let Some(head) = self.out.front_mut() else {
                break;
            };
            let left = head.frame.len() - head.pos;
            if n >= left {
                n -= left;
                self.out.pop_front();
            } else {
                head.pos += n;
                n = 0;
            }
        }
    }

    /// Drops everything queued (the peer is gone).
    pub fn discard_output(&mut self) {
        self.out.clear();
        self.queued = 0;
    }

    /// Reads one chunk from the socket into the input buffer.
    pub fn fill_input(&mut self) -> io::Result<ReadOutcome> {
        let start = self.input.len();
        self.input.resize(start + READ_CHUNK, 0);
        let res = loop {
            match recv_nonblocking(self.fd.as_raw_fd(), &mut self.input[start..]) {
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                other => break other,
            }
        };
        match res {
            Ok(0) => {
                self.input.truncate(start);
                Ok(ReadOutcome::Eof)
            }
            Ok(n) => {
                self.input.truncate(start + n);
                Ok(ReadOutcome::Data)
            }
            Err(e) => {
                self.input.truncate(start);
                if e.kind() == io::ErrorKind::WouldBlock {
                    Ok(ReadOutcome::WouldBlock)
                } else {
                    Err(e)
                }
            }
        }
    }

    /// The next complete record in the input buffer, if any. The header is validated before
    /// anything waits for the payload, so the buffer never holds more than one frame of at
    /// most `MAX_PAYLOAD` bytes plus one read.
    pub fn next_record(&mut self) -> Result<Option<Record>, WireError> {
        match dsproxy_wire::decode(&self.input[self.input_pos..])? {
            Some((rec, used)) => {
                self.input_pos += used;
                Ok(Some(rec))
            }
            None => Ok(None),
        }
    }

    /// Forgets the decoded part of the input buffer.
    pub fn compact_input(&mut self) {
        if self.input_pos > 0 {
            self.input.drain(..self.input_pos);
            self.input_pos = 0;
        }
    }

    /// Bytes received but not decoded (a partial record).
    pub fn pending_input(&self) -> usize {
        self.input.len() - self.input_pos
    }

    /// Live mode: PCM `offset..offset+bytes` of `stream` is not delivered to this reader.
    /// Consecutive drops of a stream become one GAP record.
    pub fn record_drop(&mut self, stream: u32, offset: u64, bytes: u64, time_ns: u64) {
        if let Some(run) = self.gaps.get_mut(&stream) {
            if run.offset.checked_add(run.bytes) == Some(offset) {
                run.bytes = run.bytes.saturating_add(bytes);
                return;
            }
            self.flush_gap(stream);
        }
        self.gaps.insert(
            stream,
            GapRun {
                offset,
                bytes,
                time_ns,
            },
        );
    }

    /// Queues the GAP record of `stream`'s pending drops, if any.
    pub fn flush_gap(&mut self, stream: u32) {
        let Some(run) = self.gaps.remove(&stream) else {
            return;
        };
        let rec = Record::Gap {
            stream,
            offset: run.offset,
            bytes: run.bytes,
            time_ns: run.time_ns,
        };
        match rec.to_bytes() {
            Ok(b) => self.push(Arc::new(b)),
            Err(e) => log::error!("tap: cannot encode GAP: {e}"),
        }
    }

    pub fn has_gaps(&self) -> bool {
        !self.gaps.is_empty()
    }

    /// Queues every pending GAP record.
    pub fn flush_all_gaps(&mut self) {
        let streams: Vec<u32> = self.gaps.keys().copied().collect();
        for s in streams {
            self.flush_gap(s);
        }
    }
}

/// `sendmsg` with MSG_NOSIGNAL: a reader that went away gives EPIPE, never SIGPIPE.
fn send_nosignal(fd: RawFd, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
    // SAFETY: an all-zero msghdr is valid (no name, no control data).
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    // IoSlice is guaranteed ABI-compatible with struct iovec on unix; sendmsg only reads it.
    msg.msg_iov = bufs.as_ptr() as *mut libc::iovec;
    msg.msg_iovlen = bufs.len() as _;
    // SAFETY: msg points to `bufs.len()` valid iovecs that outlive the call.
    let n = unsafe { libc::sendmsg(fd, &msg, libc::MSG_NOSIGNAL | libc::MSG_DONTWAIT) };
    if n < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(n as usize)
    }
}

fn recv_nonblocking(fd: RawFd, buf: &mut [u8]) -> io::Result<usize> {
    // SAFETY: buf is valid for writes of buf.len() bytes.
    let n = unsafe { libc::recv(fd, buf.as_mut_ptr().cast(), buf.len(), libc::MSG_DONTWAIT) };
    if n < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(n as usize)
    }
}
