//! dsproxy-wire: the things the device and its readers must agree on.
//!
//! - [`record`]: the tap's framed record stream (docs/wire-format.md).
//! - [`format`]: the virtio-snd format and rate tables and their OSS equivalents.
//! - [`stream`]: a bounded reader of records from a socket.
//!
//! This crate is portable: the reader builds it on any host, without the Linux-only vhost
//! crates.

pub mod arbitrary;
pub mod format;
pub mod record;
pub mod stream;

pub use format::{PcmFormat, PcmRate, PcmShape};
pub use record::{decode, Record, WireError};
pub use stream::{ReadError, RecordReader};

/// The unix socket path the device listens on and the reader attaches to unless told
/// otherwise: `$XDG_RUNTIME_DIR/dsproxy.sock`, or `/tmp/dsproxy-$UID.sock` without it.
pub fn default_tap_path() -> std::path::PathBuf {
    match std::env::var_os("XDG_RUNTIME_DIR") {
        Some(d) if !d.is_empty() => std::path::Path::new(&d).join("dsproxy.sock"),
        _ => {
            // SAFETY-free way to get the uid: /proc/self is owned by us.
            let uid = std::fs::metadata("/proc/self")
                .map(|m| {
                    #[cfg(unix)]
                    {
                        use std::os::unix::fs::MetadataExt;
                        m.uid()
                    }
                    #[cfg(not(unix))]
                    {
                        let _ = m;
                        0
                    }
                })
                .unwrap_or(0);
            std::path::PathBuf::from(format!("/tmp/dsproxy-{uid}.sock"))
        }
    }
}

/// The traditional dsproxy TCP port.
pub const DEFAULT_TCP_PORT: u16 = 9138;
