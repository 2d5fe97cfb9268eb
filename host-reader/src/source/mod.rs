//! Where the reader's records come from.
//!
//! Two sources feed the one session and its sinks: the device's tap ([`tap`]), and QEMU's
//! own emulated cards over QEMU's D-Bus audio. Each hands the main loop the card's
//! description (a [`Hello`]) and then [`SourceEvent`]s in the tap's record vocabulary, so
//! files, stdout, the `-e`/`-i` logs, host playback and `--once` work the same whichever
//! source the audio came from. What a source takes back — `--mixer` requests and `--inject`
//! audio — goes through its [`Outlet`].

pub mod qemu;
pub mod tap;

use std::io;
use std::sync::mpsc::SyncSender;
use std::sync::{Arc, Condvar, Mutex};

use dsproxy_wire::record::{Hello, Record};

use crate::error::ReaderError;

/// What a source tells the main loop.
#[derive(Debug)]
pub enum SourceEvent {
    /// One record.
    Record(Record),
    /// Records in the order they came, handed over together: what one read of the socket
    /// brought (one channel hand-off, so one thread wake-up, for many records). `weight` is
    /// what they count against the [`Backlog`] (see [`batch_bytes`]), worked out once.
    Records { records: Vec<Record>, weight: usize },
    /// The card gained streams or controls after attaching (QEMU opened a new voice): its
    /// whole description now.
    Card(Hello),
    /// The connection ended.
    Closed(Closed),
}

/// How a connection ended.
#[derive(Debug)]
pub enum Closed {
    /// The peer closed it between records, or it was lost (`Some(why)`, worth a log line):
    /// the device or VM went away.
    Gone(Option<String>),
    /// Cut in the middle of a record: lost with `--reconnect`, an error otherwise.
    Truncated,
    /// The peer sent something that is not the protocol: always an error.
    Broken(ReaderError),
}

/// What the main loop waits on: the sources' events and the signal thread.
#[derive(Debug)]
pub enum Event {
    /// An event of connection number `conn`.
    Source { conn: u64, event: SourceEvent },
    /// SIGINT or SIGTERM.
    Signal,
}

/// Where one connection's events go: the main loop's channel, tagged with the connection's
/// number so late events of an old connection can be told apart.
#[derive(Clone)]
pub struct Outbox {
    conn: u64,
    tx: SyncSender<Event>,
    backlog: Arc<Backlog>,
}

impl Outbox {
    pub fn new(conn: u64, tx: SyncSender<Event>, backlog: Arc<Backlog>) -> Outbox {
        Outbox { conn, tx, backlog }
    }

    /// Sends one event, waiting while the main loop is behind (so a slow disk pushes back
    /// on the source). `false` when the main loop is gone.
    pub fn send(&self, event: SourceEvent) -> bool {
        self.tx
            .send(Event::Source {
                conn: self.conn,
                event,
            })
            .is_ok()
    }

    /// Sends records together ([`SourceEvent::Records`]), first waiting while the main loop
    /// has more than [`Backlog`]'s bound of record bytes not yet handled.
    pub fn send_records(&self, records: Vec<Record>) -> bool {
        let weight = batch_bytes(&records);
        self.backlog.take(weight);
        self.send(SourceEvent::Records { records, weight })
    }
}

/// What a batch of records weighs against the [`Backlog`]'s limit: its audio, and a byte for
/// any other record.
pub fn batch_bytes(records: &[Record]) -> usize {
    records
        .iter()
        .map(|r| match r {
            Record::Pcm { data, .. } => data.len().max(1),
            _ => 1,
        })
        .sum()
}

impl SourceEvent {
    /// What the event weighs against the [`Backlog`]: 0 unless it is a batch.
    pub fn backlog_bytes(&self) -> usize {
        match self {
            SourceEvent::Records { weight, .. } => *weight,
            _ => 0,
        }
    }
}

/// Record bytes handed to the main loop in batches and not yet handled. A batch holds what
/// one read of the socket brought, so counting events would not bound the audio between the
/// socket and the sinks: this does, keeping a slow sink's push-back on the source as prompt
/// as when records went one per event.
pub struct Backlog {
    /// Bytes handed over and not yet handled; whether the source thread waits for room.
    state: Mutex<(usize, bool)>,
    room: Condvar,
    limit: usize,
}

/// How much the source reads and hands over at once: in small steps while audio plays on
/// the host, whose sink pushes back on the guest through what waits here; in large ones
/// when it only goes to files, stdout and logs, where each hand-off (a thread wake-up on
/// either side) costs more than the memory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Batching {
    /// Bytes read from the socket at once.
    pub read_buffer: usize,
    /// Payload bytes the main loop may have waiting (with the read buffer and the socket's
    /// own, what a sink that stops taking audio lets through before the device is held).
    pub backlog_limit: usize,
}

impl Batching {
    /// Audio plays on the host.
    pub const PLAYING: Batching = Batching {
        read_buffer: 32 * 1024,
        backlog_limit: 32 * 1024,
    };
    /// Nothing plays on the host: up to 1.4 s of 48 kHz S16 stereo per read.
    pub const BULK: Batching = Batching {
        read_buffer: 256 * 1024,
        backlog_limit: 512 * 1024,
    };
}

// The backlog takes at least one whole read, so a full read never waits on itself.
const _: () = assert!(
    Batching::PLAYING.backlog_limit >= Batching::PLAYING.read_buffer
        && Batching::BULK.backlog_limit >= Batching::BULK.read_buffer
);

impl Backlog {
    pub fn new(limit: usize) -> Arc<Backlog> {
        Arc::new(Backlog {
            state: Mutex::new((0, false)),
            room: Condvar::new(),
            limit,
        })
    }

    /// Source thread: `n` more bytes go to the main loop; waits for room first (a batch
    /// larger than the limit goes alone).
    fn take(&self, n: usize) {
        let mut s = self.state.lock().unwrap_or_else(|p| p.into_inner());
        while s.0 > 0 && s.0 + n > self.limit {
            s.1 = true;
            s = self.room.wait(s).unwrap_or_else(|p| p.into_inner());
        }
        s.0 += n;
    }

    /// Main loop: a batch of `n` bytes was handled (or dropped with its connection).
    pub fn release(&self, n: usize) {
        let mut s = self.state.lock().unwrap_or_else(|p| p.into_inner());
        s.0 = s.0.saturating_sub(n);
        // Only waiting source threads need the wake-up (a syscall); all of them, as an old
        // connection's thread may wait beside the current one.
        if std::mem::take(&mut s.1) {
            drop(s);
            self.room.notify_all();
        }
    }
}

/// Writes back to a source: `--mixer` requests and `--inject` audio. Blocking: a source
/// with no room makes the writer wait, which is how injected audio is paced.
pub trait Outlet: Send {
    /// An encoded request record (SET_CONTROL).
    fn request(&mut self, frame: &[u8]) -> io::Result<()>;
    /// Audio for input stream `stream`, for the guest to read.
    fn inject(&mut self, stream: u32, data: &[u8]) -> io::Result<()>;
}

/// A live connection, for ending it.
pub trait Link: Send {
    /// Ends the connection: threads blocked on it return.
    fn shutdown(&self);
}

/// A connection just made.
pub struct Attached {
    pub hello: Hello,
    /// Writes to the source; `None` when it takes nothing back.
    pub outlet: Option<Box<dyn Outlet>>,
    pub link: Box<dyn Link>,
}

/// Checks a card against the options and returns the streams to subscribe to (a stream
/// mask; 0 = all).
pub type Plan<'a> = dyn FnMut(&Hello) -> Result<u64, ReaderError> + 'a;

/// A place records come from.
pub trait Source {
    /// The source as messages name it (a socket path, `host:port`, a QMP socket).
    fn target(&self) -> String;

    /// Whether the card can gain streams after attaching (QEMU opens voices as the guest
    /// uses its cards), so options naming a stream cannot all be checked at attach time.
    fn card_grows(&self) -> bool {
        false
    }

    /// Connects, reads the card's description, lets `plan` check it, and starts a thread
    /// that delivers the connection's events to `outbox`.
    fn attach(&mut self, plan: &mut Plan<'_>, outbox: Outbox) -> Result<Attached, ReaderError>;

    /// Whether an attach failure is worth retrying with `--reconnect` (the peer is not
    /// there yet), as opposed to a refusal of the options.
    fn retryable(&self, e: &ReaderError) -> bool;
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::mpsc;
    use std::time::Duration;

    #[test]
    fn the_backlog_holds_the_source_only_beyond_its_limit() {
        let b = Backlog::new(64 * 1024);
        b.take(32 * 1024);
        b.take(32 * 1024);
        let (tx, rx) = mpsc::channel();
        let b2 = Arc::clone(&b);
        let t = std::thread::spawn(move || {
            b2.take(1);
            tx.send(()).expect("test alive");
        });
        assert!(
            rx.recv_timeout(Duration::from_millis(100)).is_err(),
            "a byte over the limit waits for the main loop"
        );
        b.release(32 * 1024);
        rx.recv_timeout(Duration::from_secs(5))
            .expect("room again: the source goes on");
        t.join().expect("source thread");
        // A batch larger than the whole limit still goes, alone.
        let c = Backlog::new(1024);
        c.take(256 * 1024);
        c.release(256 * 1024);
        c.take(256 * 1024);
    }
}
