//! Errors of the harness.

use std::time::Duration;

/// Why a harness operation failed.
#[derive(Debug, thiserror::Error)]
pub enum FrontError {
    #[error("i/o: {0}")]
    Io(#[from] std::io::Error),
    #[error("vhost-user: {0}")]
    Vhost(#[from] vhost::Error),
    #[error("guest memory: {0}")]
    Memory(String),
    #[error("guest memory exhausted (wanted {0} bytes)")]
    OutOfGuestMemory(u64),
    #[error("queue {queue} full: chain needs {needed} descriptors, {free} free")]
    QueueFull {
        queue: usize,
        needed: usize,
        free: usize,
    },
    #[error("device protocol: {0}")]
    Protocol(String),
    #[error("timed out after {after:?} waiting for {what}")]
    Timeout { what: String, after: Duration },
    #[error("{what} failed with status {status:#06x} ({name})", name = crate::proto::status_name(*status))]
    Status { what: String, status: u32 },
    #[error("the device does not offer {0}")]
    Missing(&'static str),
    #[error("stream {stream}: streaming stopped after {completed} buffers: {why}")]
    Stopped {
        stream: u32,
        completed: usize,
        why: String,
    },
    #[error("{0}")]
    Usage(String),
}

/// Why a tap reader operation failed.
#[derive(Debug, thiserror::Error)]
pub enum TapError {
    #[error("cannot connect to the tap at {path}: {source}")]
    Connect {
        path: String,
        source: std::io::Error,
    },
    #[error("tap i/o: {0}")]
    Io(#[from] std::io::Error),
    #[error("tap record: {0}")]
    Wire(#[from] dsproxy_wire::WireError),
    #[error("the tap did not start with HELLO (got {0})")]
    NoHello(String),
    #[error("tap connection ended: {0}")]
    Closed(String),
    #[error("timed out after {after:?} waiting for {what}; records seen: {seen}")]
    Timeout {
        what: String,
        after: Duration,
        seen: String,
    },
    #[error(
        "PCM records of stream {stream} are not contiguous: expected offset {expected}, got {got}"
    )]
    Discontiguous {
        stream: u32,
        expected: u64,
        got: u64,
    },
}

/// Why starting a daemon failed.
#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    #[error("cannot start {bin}: {source}")]
    Spawn { bin: String, source: std::io::Error },
    #[error("{bin} exited ({status}) before creating {path}; its log:\n{log}")]
    Exited {
        bin: String,
        status: String,
        path: String,
        log: String,
    },
    #[error("{bin} did not create {path} within {after:?}; its log:\n{log}")]
    NoSocket {
        bin: String,
        path: String,
        after: Duration,
        log: String,
    },
    #[error("i/o: {0}")]
    Io(#[from] std::io::Error),
}
