//! Error types: why a guest request was refused, and why the daemon could not start.

use thiserror::Error;

use crate::spec::Status;

/// Why a guest request was refused. Each maps to the status the guest gets back
/// ([`RequestError::status`]); the message is what the log line says.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum RequestError {
    #[error("request too short: {got} device-readable bytes, need {need}")]
    ShortRequest { got: u64, need: u64 },
    #[error("device-readable part too long: {got} bytes, expected {expected}")]
    LongRequest { got: u64, expected: u64 },
    #[error("response does not fit: {got} device-writable bytes, need {need}")]
    ShortResponse { got: u64, need: u64 },
    #[error("device-writable part has the wrong size: {got} bytes, expected {expected}")]
    BadResponseSize { got: u64, expected: u64 },
    #[error("device-readable descriptor after a device-writable one")]
    Misordered,
    #[error("descriptor chain longer than {max} descriptors")]
    TooManyDescriptors { max: usize },
    #[error("guest memory {addr:#x}+{len} is not mapped")]
    Unmapped { addr: u64, len: u64 },
    #[error("unknown request code {0:#06x}")]
    UnknownCode(u32),
    #[error("unknown stream id {0}")]
    UnknownStream(u32),
    #[error("stream {stream} is an {actual} stream, request needs {wanted}")]
    WrongDirection {
        stream: u32,
        actual: &'static str,
        wanted: &'static str,
    },
    #[error("{request} not allowed in state {state}")]
    BadState {
        request: &'static str,
        state: &'static str,
    },
    #[error("invalid parameters: {0}")]
    BadParams(String),
    #[error("PCM buffer of {len} bytes is not a whole number of {frame}-byte frames")]
    NotFrameMultiple { len: u64, frame: u32 },
    #[error("empty PCM buffer")]
    EmptyBuffer,
    #[error("PCM buffer of {len} bytes exceeds the stream's {limit}-byte buffer")]
    Oversize { len: u64, limit: u64 },
    #[error(
        "bad query: start {start} count {count} of {items} items, item size {size} (min {min})"
    )]
    BadQuery {
        start: u32,
        count: u32,
        items: u32,
        size: u32,
        min: u32,
    },
    #[error("unknown jack id {0}")]
    UnknownJack(u32),
    #[error("unknown control id {0}")]
    UnknownControl(u32),
    #[error("control {id}: {why}")]
    BadControlValue { id: u32, why: String },
    #[error("not supported: {0}")]
    NotSupported(&'static str),
    #[error("control elements were not negotiated (VIRTIO_SND_F_CTLS)")]
    ControlsNotNegotiated,
    #[error(
        "descriptor chain does not end (a loop, a next index past the queue, or an unreadable \
         indirect table): returned with nothing written"
    )]
    BrokenChain,
    #[error(
        "{queue} queue full: taking this buffer would hold {held} {what}, over the {limit} a \
         driver can have in flight (the same descriptor head posted again?)"
    )]
    HoldLimit {
        queue: &'static str,
        what: &'static str,
        held: u64,
        limit: u64,
    },
}

impl RequestError {
    /// The kind of error, as a short name: rejections are rate-limited per class in the log
    /// (see [`crate::reject_log`]).
    pub fn class(&self) -> &'static str {
        match self {
            RequestError::ShortRequest { .. } => "short_request",
            RequestError::LongRequest { .. } => "long_request",
            RequestError::ShortResponse { .. } => "short_response",
            RequestError::BadResponseSize { .. } => "bad_response_size",
            RequestError::Misordered => "misordered",
            RequestError::TooManyDescriptors { .. } => "too_many_descriptors",
            RequestError::Unmapped { .. } => "unmapped",
            RequestError::UnknownCode(_) => "unknown_code",
            RequestError::UnknownStream(_) => "unknown_stream",
            RequestError::WrongDirection { .. } => "wrong_direction",
            RequestError::BadState { .. } => "bad_state",
            RequestError::BadParams(_) => "bad_params",
            RequestError::NotFrameMultiple { .. } => "not_frame_multiple",
            RequestError::EmptyBuffer => "empty_buffer",
            RequestError::Oversize { .. } => "oversize",
            RequestError::BadQuery { .. } => "bad_query",
            RequestError::UnknownJack(_) => "unknown_jack",
            RequestError::UnknownControl(_) => "unknown_control",
            RequestError::BadControlValue { .. } => "bad_control_value",
            RequestError::NotSupported(_) => "not_supported",
            RequestError::ControlsNotNegotiated => "controls_not_negotiated",
            RequestError::BrokenChain => "broken_chain",
            RequestError::HoldLimit { .. } => "hold_limit",
        }
    }

    /// The status the guest is told.
    pub fn status(&self) -> Status {
        match self {
            RequestError::NotSupported(_) | RequestError::ControlsNotNegotiated => Status::NotSupp,
            RequestError::UnknownCode(_) => Status::NotSupp,
            // Well formed, but more than the device takes: an I/O error, not a bad message.
            RequestError::HoldLimit { .. } => Status::IoErr,
            _ => Status::BadMsg,
        }
    }
}

/// Why the daemon could not start or keep serving.
#[derive(Debug, Error)]
pub enum DeviceError {
    #[error("invalid configuration: {0}")]
    Config(String),
    #[error("cannot listen on vhost-user socket {path}: {source}")]
    Listen {
        path: String,
        source: vhost::vhost_user::Error,
    },
    #[error("vhost-user daemon: {0}")]
    Daemon(String),
    #[error("tap: {0}")]
    Tap(#[from] crate::tap::TapError),
    #[error("{what}: {source}")]
    Io {
        what: &'static str,
        source: std::io::Error,
    },
}

/// The log target of rejection lines (`RUST_LOG=dsproxy_device::reject=off` silences them).
pub const REJECT_TARGET: &str = "dsproxy_device::reject";

/// What a rejection log line says about the request.
#[derive(Debug, Clone, Copy)]
pub struct Rejected {
    /// "control", "event", "tx" or "rx".
    pub queue: &'static str,
    /// The chain's head descriptor.
    pub head: u16,
    /// The request code, if it could be read.
    pub request: Option<u32>,
    /// The stream (or control/jack) the request was about, if known.
    pub stream: Option<u32>,
    /// The status written back; None if the chain had no room for one.
    pub status: Option<Status>,
}

/// Logs one refused guest request as one structured line:
/// `rejected queue=control head=3 request=PCM_START code=0x0104 stream=5 status=BAD_MSG
/// reason="unknown stream id 5"`. The card logs through [`crate::reject_log::RejectLog`],
/// which limits how many such lines a flood of bad requests produces.
pub fn log_rejection(r: &Rejected, e: &RequestError) {
    use std::fmt::Write;
    let mut line = format!("rejected queue={} head={}", r.queue, r.head);
    if let Some(c) = r.request {
        let _ = write!(
            line,
            " request={} code={c:#06x}",
            crate::spec::code::name(c)
        );
    }
    if let Some(s) = r.stream {
        let _ = write!(line, " stream={s}");
    }
    match r.status {
        Some(st) => {
            let _ = write!(line, " status={}", st.name());
        }
        None => line.push_str(" status=none"),
    }
    log::warn!(target: REJECT_TARGET, "{line} reason=\"{e}\"");
}
