//! The tap: readers attach here and receive the card's record stream.
//!
//! Threading: `Tap::start` binds the sockets and spawns one tap thread (event-manager based)
//! that accepts readers, writes queued records to them without ever blocking the queue worker,
//! and reads their requests. The queue worker holds a cloneable `TapHandle`.
//!
//! The worker's side never blocks: `publish`/`publish_pcm` encode the record once into a
//! shared buffer, push it onto a lock-free channel and wake the tap thread with at most one
//! eventfd write per tap-thread pass. While no subscribed reader is live and the card runs
//! unpaced, PCM goes in bulk: one wake-up per 256 KiB, a timer the worker arms bringing out
//! the rest within 2 ms (see `shared::Shared::bulk`). Everything else (the state mirror,
//! fan-out to readers, per-reader byte accounting, GAP records for live readers) happens on
//! the tap thread.
//!
//! Files: `card_tap` (the card's `CardTap` over a `TapHandle`), `listener` (sockets), `conn`
//! (one reader: queues, non-blocking I/O, request decoding, gap runs), `mirror` (state mirror
//! and snapshot), `event_loop` (the thread: wake-ups, accept, shutdown), `event_loop/fanout`
//! (fan-out and backpressure accounting), `event_loop/reader_io` (reading readers and their
//! requests), `inject` (input audio buffers), `shared` (what the worker and the thread share),
//! `subscription` (stream selection).
//!
//! Times: the tap has no clock of its own. HELLO carries `hello.time_ns` (set by the core
//! at startup, its device clock) plus the time elapsed since the tap started; GAP carries the
//! time of the first PCM record it replaces. The daemon publishes every control's value once
//! at startup (main.rs) so the snapshot can replay it.

mod card_tap;
mod conn;
mod event_loop;
mod inject;
mod listener;
mod mirror;
mod shared;
mod subscription;
#[cfg(test)]
mod tests;

use std::net::SocketAddr;
use std::os::fd::{AsRawFd, RawFd};
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::{mpsc, Arc};

use dsproxy_wire::record::{encode_pcm_header, Hello, Record, HEADER_LEN, MAX_PCM_CHUNK};
use event_manager::{EventManager, SubscriberOps};

use shared::{Item, Shared};

pub use crate::card::TapRequest;

/// How the tap is set up.
#[derive(Debug, Clone)]
pub struct TapConfig {
    /// Unix socket path (created mode 0600; a stale socket file is replaced).
    pub unix_path: PathBuf,
    /// Optional TCP listen address (`--listen`).
    pub tcp: Option<SocketAddr>,
    /// TCP readers may send SET_CONTROL and INJECT (`--allow-tcp-control`). Without it they
    /// only listen: a reader can set the guest's mixer and feed its microphone, and TCP has
    /// no permissions like the unix socket's 0600.
    pub tcp_control: bool,
    /// The device description sent first to every reader.
    pub hello: Hello,
    /// Bytes queued for one non-live reader above which `can_accept()` turns false.
    pub high_water: usize,
    /// Bytes of injected audio buffered per input stream before the tap stops reading
    /// INJECT records from the reader (TCP/unix flow control then slows the reader down).
    pub inject_limit: usize,
    /// The card runs without pacing whatever readers ask (`--pacing none`): PCM may go to
    /// readers that are not live in bulk (see `shared::Shared::bulk`) even when none of them
    /// asked for SUB_NO_PACING.
    pub unpaced: bool,
}

/// What a TCP reader is told (a NOTICE, level error) when it sends SET_CONTROL or INJECT to a
/// daemon started without `--allow-tcp-control`.
pub const TCP_LISTEN_ONLY: &str = "this tap connection is TCP, and TCP readers only listen: \
    SET_CONTROL and INJECT are refused (they set the guest's mixer and feed its microphone). \
    Attach over the unix socket, or start dsproxy-device with --allow-tcp-control";

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
    thread: Option<std::thread::JoinHandle<()>>,
    socket_file: Option<listener::SocketFile>,
    tcp_addr: Option<SocketAddr>,
}

impl Tap {
    /// Binds the sockets and starts the tap thread.
    pub fn start(cfg: TapConfig) -> Result<Tap, TapError> {
        if let Err(e) = Record::Hello(cfg.hello.clone()).to_bytes() {
            return Err(TapError::Io(std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                format!("device description cannot be sent: {e}"),
            )));
        }
        let shared = Shared::new(cfg.high_water, cfg.inject_limit)?;
        let (unix, socket_file) = listener::bind_unix(&cfg.unix_path)?;
        // From here on the socket file is ours: remove it on every error path.
        let cleanup = |e: TapError| {
            socket_file.remove();
            e
        };
        let tcp = match cfg.tcp {
            Some(addr) => Some(listener::bind_tcp(addr).map_err(cleanup)?),
            None => None,
        };
        let tcp_addr = tcp.as_ref().and_then(|l| l.local_addr().ok());
        if let Some(addr) = tcp_addr.filter(|a| !a.ip().is_loopback()) {
            log::warn!(
                "tap: --listen {addr} accepts readers from other hosts: the audio stream is \
                 unauthenticated and unencrypted{}",
                if cfg.tcp_control {
                    ", and --allow-tcp-control lets any of them set the guest's mixer and \
                     feed its microphone"
                } else {
                    " (TCP readers only listen: no mixer changes, no injected audio)"
                }
            );
        }
        let (tx, rx) = mpsc::channel();
        let mut em = EventManager::<event_loop::TapLoop>::new()
            .map_err(|e| cleanup(TapError::Io(std::io::Error::other(e.to_string()))))?;
        let mut tap_loop =
            event_loop::TapLoop::new(Arc::clone(&shared), rx, Some(unix), tcp, cfg.hello);
        tap_loop.set_tcp_control(cfg.tcp_control);
        tap_loop.set_card_unpaced(cfg.unpaced);
        let id = em.add_subscriber(tap_loop);
        let init_error = em
            .subscriber_mut(id)
            .map_err(|e| cleanup(TapError::Io(std::io::Error::other(e.to_string()))))?
            .take_init_error();
        if let Some(e) = init_error {
            return Err(cleanup(TapError::Io(std::io::Error::other(e))));
        }
        let thread_shared = Arc::clone(&shared);
        let thread = std::thread::Builder::new()
            .name("dsproxy-tap".into())
            .spawn(move || event_loop::run(em, id, thread_shared))
            .map_err(|e| cleanup(TapError::Io(e)))?;
        log::info!(
            "tap: listening on {}{}",
            socket_file.path().display(),
            tcp_addr
                .map(|a| format!(" and tcp {a}"))
                .unwrap_or_default()
        );
        Ok(Tap {
            handle: TapHandle { shared, tx },
            thread: Some(thread),
            socket_file: Some(socket_file),
            tcp_addr,
        })
    }

    pub fn handle(&self) -> TapHandle {
        self.handle.clone()
    }

    /// The TCP address actually bound (useful with port 0), if TCP was asked for.
    pub fn tcp_addr(&self) -> Option<SocketAddr> {
        self.tcp_addr
    }

    /// Stops the thread: flushes what readers can take within ~1 s, closes connections,
    /// removes the unix socket file.
    pub fn shutdown(mut self) {
        self.stop();
    }

    fn stop(&mut self) {
        if let Some(thread) = self.thread.take() {
            self.handle.shared.stop.store(true, Ordering::Release);
            self.handle.shared.force_wake();
            if thread.join().is_err() {
                log::error!("tap: the tap thread panicked");
            }
        }
        if let Some(f) = self.socket_file.take() {
            f.remove();
        }
    }
}

impl Drop for Tap {
    fn drop(&mut self) {
        self.stop();
    }
}

/// See [`TapHandle::defer_wakes`]: the tap thread is woken for what was published when
/// this is dropped.
pub struct DeferredWakes<'a>(&'a TapHandle);

impl Drop for DeferredWakes<'_> {
    fn drop(&mut self) {
        self.0.shared.end_deferring();
    }
}

/// The queue worker's side of the tap. Cheap to clone, `Send + Sync`; no method blocks.
#[derive(Clone)]
pub struct TapHandle {
    shared: Arc<Shared>,
    tx: mpsc::Sender<Item>,
}

impl TapHandle {
    /// Queues a record for every subscribed reader whose stream mask selects it (encoded once,
    /// shared). Also updates the tap's mirror of the card state (params, stream states,
    /// control values) that is replayed to readers that subscribe later.
    pub fn publish(&self, rec: &Record) {
        match rec {
            Record::Pcm {
                stream,
                offset,
                time_ns,
                data,
            } => return self.publish_pcm(*stream, *offset, *time_ns, data),
            Record::Hello(h) => {
                if self.tx.send(Item::Hello(h.clone())).is_ok() {
                    self.shared.wake_tap();
                }
                return;
            }
            Record::Gap { .. }
            | Record::SnapshotEnd
            | Record::Subscribe { .. }
            | Record::SetControl { .. }
            | Record::Inject { .. } => {
                log::warn!(
                    "tap: {} is not a record the card publishes; ignored",
                    rec.kind_name()
                );
                return;
            }
            _ => {}
        }
        let frame = match rec.to_bytes() {
            Ok(b) => Arc::new(b),
            Err(e) => {
                log::warn!("tap: {} record not published: {e}", rec.kind_name());
                return;
            }
        };
        if !self.shared.reserve_event() {
            return;
        }
        let lost = self.shared.take_lost();
        if lost > 0 && self.tx.send(Item::Lost(lost)).is_err() {
            self.shared.release_event();
            return;
        }
        let item = Item::Event {
            rec: rec.clone(),
            frame,
        };
        if self.tx.send(item).is_ok() {
            self.shared.wake_tap();
        } else {
            self.shared.release_event();
        }
    }

    /// Queues PCM bytes the card played, split into records of at most `MAX_PCM_CHUNK` bytes
    /// (see [`publish_pcm_with`](Self::publish_pcm_with), which the card uses).
    pub fn publish_pcm(&self, stream: u32, offset: u64, time_ns: u64, data: &[u8]) {
        let _: Result<(), ()> =
            self.publish_pcm_with(stream, offset, time_ns, data.len(), |at, out| {
                let src = data.get(at..at.saturating_add(out.len())).ok_or(())?;
                out.copy_from_slice(src);
                Ok(())
            });
    }

    /// Hot path: queues `len` PCM bytes the card played, split into records of at most
    /// `MAX_PCM_CHUNK` bytes. `fill(at, out)` writes the bytes from `at` on into `out`, the
    /// data area of a record's frame, so the audio is copied once, from guest memory into the
    /// frame every reader is sent. An error from `fill` stops it (the chunks before are
    /// queued) and is returned. A live reader that has no room gets a GAP record instead.
    pub fn publish_pcm_with<E>(
        &self,
        stream: u32,
        offset: u64,
        time_ns: u64,
        len: usize,
        mut fill: impl FnMut(usize, &mut [u8]) -> Result<(), E>,
    ) -> Result<(), E> {
        // No one connected: the card keeps time and discards (a reader that connects now
        // joins mid-stream anyway).
        if len == 0 || self.shared.connected.load(Ordering::Acquire) == 0 {
            return Ok(());
        }
        let mut at = 0;
        let mut result = Ok(());
        while at < len {
            let n = (len - at).min(MAX_PCM_CHUNK);
            let chunk_offset = offset.wrapping_add(at as u64);
            let mut buf = Vec::with_capacity(HEADER_LEN + 32 + n);
            if let Err(e) = encode_pcm_header(&mut buf, stream, chunk_offset, time_ns, n) {
                log::error!("tap: PCM not published: {e}");
                break;
            }
            let start = buf.len();
            buf.resize(start + n, 0);
            if let Err(e) = fill(at, &mut buf[start..]) {
                result = Err(e);
                break;
            }
            let frame = Arc::new(buf);
            let bytes = frame.len();
            self.shared.add_inflight(bytes);
            let item = Item::Pcm {
                stream,
                offset: chunk_offset,
                time_ns,
                data_len: n,
                frame,
            };
            if self.tx.send(item).is_err() {
                // The tap thread is gone.
                self.shared.sub_inflight(bytes);
                return result;
            }
            at += n;
        }
        if at > 0 {
            self.shared.wake_tap_for_pcm(at);
        }
        result
    }

    /// While the returned guard lives, the PCM the worker publishes wakes the tap thread once
    /// per 64 KiB rather than at every publish; dropping it wakes the tap thread for what is
    /// left. For the worker's polls for the guest (see [`crate::guest_poll`]): it is awake
    /// anyway, and on a small machine each wake-up of the tap thread costs the CPU the guest
    /// and the readers need (a wake-up per 4 KiB period of an unpaced stream).
    pub fn defer_wakes(&self) -> DeferredWakes<'_> {
        self.shared.begin_deferring();
        DeferredWakes(self)
    }

    /// At least one reader has subscribed.
    pub fn has_readers(&self) -> bool {
        self.shared.subscribed.load(Ordering::Acquire) > 0
    }

    /// The card may hand more PCM to the tap: no non-live reader is above the high-water mark.
    pub fn can_accept(&self) -> bool {
        self.shared.can_accept()
    }

    /// Some subscribed reader asked for SUB_NO_PACING.
    pub fn no_pacing_requested(&self) -> bool {
        self.shared.no_pacing.load(Ordering::Acquire)
    }

    /// An eventfd (EFD_NONBLOCK) that becomes readable whenever `has_readers`, `can_accept`,
    /// `no_pacing_requested` may have changed, a request is waiting, or injected audio
    /// arrived. The worker registers it in its epoll and reads it to reset it.
    pub fn notifier_fd(&self) -> RawFd {
        self.shared.notifier_fd().as_raw_fd()
    }

    /// Resets the notifier (reads the eventfd counter).
    pub fn clear_notifier(&self) {
        self.shared.clear_notifier();
    }

    /// Takes the requests readers sent since the last call.
    pub fn take_requests(&self) -> Vec<TapRequest> {
        self.shared.take_requests()
    }

    /// Copies up to `out.len()` bytes of audio injected for input stream `stream` into `out`
    /// and returns how many. Returns 0 if none is buffered.
    pub fn read_inject(&self, stream: u32, out: &mut [u8]) -> usize {
        let n = self.shared.inject.read(stream, out);
        if n > 0 && self.shared.inject.is_waiting() {
            // A reader is paused on a full buffer: there is room again.
            self.shared.wake_tap();
        }
        n
    }
}
