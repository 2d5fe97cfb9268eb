//! dsproxy-testfront: a real vhost-user frontend for testing virtio-snd backends.
//!
//! It plays the part of QEMU (vhost-user negotiation, memfd guest memory shared through
//! SET_MEM_TABLE, split vrings, kick/call eventfds) and of the Linux virtio_snd driver
//! (control requests, PCM buffers laid out as Linux lays them out, event buffers) against a
//! running daemon, through its unix socket:
//!
//! - [`SndFrontend`]: connect, query, set up streams, push buffers, read completions.
//! - [`play`]: keep a stream's ring full like the driver does and time the completions.
//! - [`TapReader`]: a dsproxy tap reader that collects records on a thread.
//! - [`Daemon`]: run a daemon as a child process in a temporary directory.
//! - [`signal`]: deterministic test signals.
//! - [`persona`]: the known Windows virtio-snd drivers' contracts (viosnd, aero's Windows 7
//!   driver), replayed against a device.
//!
//! The `dsproxy-loadgen` binary uses the same pieces as the benchmark's load generator.

pub mod check;
pub mod daemon;
pub mod dialect;
pub mod error;
pub mod flood;
pub mod frontend;
pub mod memory;
pub mod persona;
pub mod play;
pub mod proto;
pub mod signal;
pub mod tap;
pub mod vring;

pub use daemon::{Daemon, TempDir};
pub use dialect::Dialect;
pub use error::{DaemonError, FrontError, TapError};
pub use frontend::{
    Completion, CtlReply, DisconnectReport, FrontendOpts, RingStop, SndFrontend, TimedEvent, Token,
};
pub use play::{play, play_many, PlayOpts, PlayReport, PlayStream, Timing};
pub use tap::{TapReader, TimedRecord};
