//! Personas: the known Windows virtio-snd drivers, each encoded as the contract its driver
//! holds a device to, replayed through a real vhost-user connection. Windows has no in-box
//! virtio-snd driver; these are the two third-party ones:
//!
//! - [`viosnd`]: the ACX driver "viosnd" (binary only; its behaviour as observed).
//! - [`aero`]: the aero project's Windows 7 PortCls/WaveRT driver (its AERO-W7-VIRTIO v1
//!   contract and driver sources: drivers/windows7/virtio-snd in wilsonzlin/aero).
//!
//! A persona does what its driver does at start (feature negotiation, config checks, event
//! buffers, PCM_INFO and the stream choice) and refuses, as the driver would, a device that
//! breaks the contract ([`PersonaError::Refused`]); then it plays and records the way the
//! driver's streaming engine does.

use std::time::{Duration, Instant};

use crate::error::FrontError;
use crate::frontend::SndFrontend;
use crate::proto::{PcmInfo, D_INPUT, D_OUTPUT};

pub mod aero;
pub mod viosnd;

/// Why a persona's driver would not work with the device.
#[derive(Debug, thiserror::Error)]
pub enum PersonaError {
    /// The driver would fail to start (Windows' Code 10) or refuse the stream.
    #[error("{driver} would not start: {why}")]
    Refused { driver: &'static str, why: String },
    /// A step the driver takes failed (a control request refused or timed out, streaming
    /// stopped by an error status...).
    #[error("{driver}: {what}: {source}")]
    Failed {
        driver: &'static str,
        what: String,
        source: FrontError,
    },
}

/// Wraps a harness error with what the persona was doing.
pub(crate) fn step<T>(
    driver: &'static str,
    what: &str,
    r: Result<T, FrontError>,
) -> Result<T, PersonaError> {
    r.map_err(|source| PersonaError::Failed {
        driver,
        what: what.to_string(),
        source,
    })
}

/// A stream offers `channels` channels of `format` at `rate` (virtio-snd codes).
pub fn offers(info: &PcmInfo, format: u8, rate: u8, channels: u8) -> bool {
    info.formats & (1u64 << format) != 0
        && info.rates & (1u64 << rate) != 0
        && info.channels_min <= channels
        && channels <= info.channels_max
}

/// Stream ids of the given direction, in order.
pub fn streams_of(infos: &[PcmInfo], direction: u8) -> impl Iterator<Item = u32> + '_ {
    infos
        .iter()
        .enumerate()
        .filter(move |(_, i)| i.direction == direction)
        .map(|(id, _)| id as u32)
}

/// Whether `dir` is a known stream direction.
pub fn is_direction(dir: u8) -> bool {
    dir == D_OUTPUT || dir == D_INPUT
}

/// Captures on `stream` (prepared, not started): keeps `ring` RX buffers of `period` bytes
/// queued, starts the stream, and collects until `want` bytes have come in or `timeout`.
/// `check` sees each completion first and may end the capture with an error (a driver's
/// reaction to an error status). Stops the stream at the end.
pub fn capture(
    fe: &mut SndFrontend,
    stream: u32,
    period: usize,
    ring: usize,
    want: usize,
    timeout: Duration,
    mut check: impl FnMut(&crate::frontend::Completion) -> Result<(), FrontError>,
) -> Result<Vec<u8>, FrontError> {
    for _ in 0..ring {
        fe.push_rx(stream, period)?;
    }
    let st = fe.start(stream)?;
    if st != fe.dialect().ok() {
        return Err(FrontError::Status {
            what: format!("START of capture stream {stream}"),
            status: st,
        });
    }
    let deadline = Instant::now() + timeout;
    let mut out = Vec::with_capacity(want);
    while out.len() < want {
        let now = Instant::now();
        if now >= deadline {
            return Err(FrontError::Timeout {
                what: format!("{want} captured bytes (have {})", out.len()),
                after: timeout,
            });
        }
        for c in fe.wait_used((deadline - now).min(Duration::from_secs(1)))? {
            check(&c)?;
            let n = (c.len as usize).saturating_sub(crate::proto::PCM_STATUS_LEN);
            out.extend_from_slice(&c.data[..n.min(c.data.len())]);
            if out.len() < want {
                fe.push_rx(stream, period)?;
            }
        }
    }
    let st = fe.stop(stream)?;
    if st != fe.dialect().ok() {
        return Err(FrontError::Status {
            what: format!("STOP of capture stream {stream}"),
            status: st,
        });
    }
    Ok(out)
}
