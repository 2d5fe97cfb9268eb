//! dsproxy-device: the emulated virtio-snd card.
//!
//! - [`card`]: the card model, driven by descriptor chains and the clock (no vhost-user).
//! - [`lifecycle`]: vrings stopped and restarted, the device reset.
//! - [`ctl_queue`], [`xfer`], [`event_queue`]: the four virtqueues' requests.
//! - [`pcm`], [`jack`], [`chmap`], [`controls`]: what the card is made of.
//! - [`clock`]: pacing arithmetic and the timerfd.
//! - [`guest_poll`]: without pacing, how long the worker polls for the guest's next buffer.
//! - [`profile`]: the guest drivers the card is shaped for (`--profile`).
//! - [`tap`]: the reader fan-out.

pub mod backend;
pub mod card;
pub mod chain;
pub mod chmap;
pub mod clock;
pub mod config;
pub mod controls;
pub mod ctl_queue;
pub mod error;
pub mod event_queue;
pub mod exit_event;
pub mod guest_memory;
pub mod guest_poll;
pub mod jack;
pub mod lifecycle;
pub mod pcm;
pub mod profile;
pub mod reject_log;
pub mod spec;
pub mod tap;
pub mod vring;
pub mod xfer;

pub use card::{Card, CardTap};
pub use chain::Chain;
pub use config::CardConfig;
pub use error::{DeviceError, RequestError};

/// A used-ring entry the card produced: descriptor chain `head` of `queue` is returned with
/// `len` bytes written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Used {
    pub queue: u16,
    pub head: u16,
    pub len: u32,
}
