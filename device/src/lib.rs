//! dsproxy-device: the emulated virtio-snd card.

pub mod tap;
