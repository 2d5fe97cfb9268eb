//! The tap: readers attach here and receive the card's record stream.
//!
//! INTERFACE CONTRACT between the queue worker (device core) and the tap thread. The bodies
//! below are placeholders until the tap is implemented; the signatures are the contract.
//!
//! Threading: `Tap::start` binds the sockets and spawns one tap thread (event-manager based)
//! that accepts readers, writes queued records to them without ever blocking the queue worker,
//! and reads their requests. The queue worker holds a cloneable `TapHandle`.

use std::net::SocketAddr;
use std::os::fd::RawFd;
use std::path::PathBuf;

use dsproxy_wire::record::{Hello, Record};

/// How the tap is set up.
#[derive(Debug, Clone)]
pub struct TapConfig {
    /// Unix socket path (created mode 0600; a stale socket file is replaced).
    pub unix_path: PathBuf,
    /// Optional TCP listen address (`--listen`).
    pub tcp: Option<SocketAddr>,
    /// The device description sent first to every reader.
    pub hello: Hello,
    /// Bytes queued for one non-live reader above which `can_accept()` turns false.
    pub high_water: usize,
    /// Bytes of injected audio buffered per input stream before the tap stops reading
    /// INJECT records from the reader (TCP/unix flow control then slows the reader down).
    pub inject_limit: usize,
}

/// A reader's request, handed to the queue worker.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TapRequest {
    SetControl { id: u32, values: Vec<i64> },
}

#[derive(Debug, thiserror::Error)]
pub enum TapError {
    #[error("cannot listen on {what}: {source}")]
    Bind {
        what: String,
        source: std::io::Error,
    },
    #[error("tap thread: {0}")]
    Io(#[from] std::io::Error),
}

/// The running tap (owned by main).
pub struct Tap {
    handle: TapHandle,
}

impl Tap {
    /// Binds the sockets and starts the tap thread.
    pub fn start(_cfg: TapConfig) -> Result<Tap, TapError> {
        Ok(Tap {
            handle: TapHandle {},
        })
    }

    pub fn handle(&self) -> TapHandle {
        self.handle.clone()
    }

    /// Stops the thread: flushes what readers can take within ~1 s, closes connections,
    /// removes the unix socket file.
    pub fn shutdown(self) {}
}

/// The queue worker's side of the tap. Cheap to clone, `Send + Sync`; no method blocks.
#[derive(Clone)]
pub struct TapHandle {}

impl TapHandle {
    /// Queues a record for every subscribed reader whose stream mask selects it (encoded once,
    /// shared). Also updates the tap's mirror of the card state (params, stream states,
    /// control values) that is replayed to readers that subscribe later.
    pub fn publish(&self, _rec: &Record) {}

    /// Hot path: queues PCM bytes the card played, split into records of at most
    /// `MAX_PCM_CHUNK` bytes. A live reader that has no room gets a GAP record instead.
    pub fn publish_pcm(&self, _stream: u32, _offset: u64, _time_ns: u64, _data: &[u8]) {}

    /// At least one reader has subscribed.
    pub fn has_readers(&self) -> bool {
        false
    }

    /// The card may hand more PCM to the tap: no non-live reader is above the high-water mark.
    pub fn can_accept(&self) -> bool {
        true
    }

    /// Some subscribed reader asked for SUB_NO_PACING.
    pub fn no_pacing_requested(&self) -> bool {
        false
    }

    /// An eventfd (EFD_NONBLOCK) that becomes readable whenever `has_readers`, `can_accept`,
    /// `no_pacing_requested` may have changed, a request is waiting, or injected audio
    /// arrived. The worker registers it in its epoll and reads it to reset it.
    pub fn notifier_fd(&self) -> RawFd {
        -1
    }

    /// Resets the notifier (reads the eventfd counter).
    pub fn clear_notifier(&self) {}

    /// Takes the requests readers sent since the last call.
    pub fn take_requests(&self) -> Vec<TapRequest> {
        Vec::new()
    }

    /// Copies up to `out.len()` bytes of audio injected for input stream `stream` into `out`
    /// and returns how many. Returns 0 if none is buffered.
    pub fn read_inject(&self, _stream: u32, _out: &mut [u8]) -> usize {
        0
    }
}
