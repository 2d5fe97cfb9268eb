//! A hostile driver that floods one queue: it makes one valid chain available again and
//! again (the same descriptor head, never waiting for the device to return it), as fast as
//! the device takes them. Without a cap on what the device holds, every copy the device keeps
//! grows its memory.
//!
//! The flood never lets the available ring run more than the ring size ahead of the device
//! (virtio-queue then refuses the ring, and the flood would stop being one): it publishes half
//! a ring at a time and waits until the device has taken the kick of the previous half (the
//! backend reads the kick before it walks the ring).

use std::time::{Duration, Instant};

use crate::error::FrontError;
use crate::frontend::SndFrontend;
use crate::proto::*;

/// The queue a flood hits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FloodTarget {
    /// PCM_INFO requests (each one is answered at once).
    Control,
    /// Event buffers (the device keeps each until it has an event to send).
    Event,
    /// TX buffers of output stream 0, prepared and never started (the device keeps them).
    Tx,
    /// RX buffers of the first input stream, prepared and never started.
    Rx,
}

impl FloodTarget {
    pub const ALL: [FloodTarget; 4] = [
        FloodTarget::Control,
        FloodTarget::Event,
        FloodTarget::Tx,
        FloodTarget::Rx,
    ];

    pub fn name(self) -> &'static str {
        match self {
            FloodTarget::Control => "control",
            FloodTarget::Event => "event",
            FloodTarget::Tx => "tx",
            FloodTarget::Rx => "rx",
        }
    }

    pub fn parse(s: &str) -> Option<FloodTarget> {
        FloodTarget::ALL.into_iter().find(|t| t.name() == s)
    }

    pub fn queue(self) -> usize {
        match self {
            FloodTarget::Control => CONTROL_QUEUE,
            FloodTarget::Event => EVENT_QUEUE,
            FloodTarget::Tx => TX_QUEUE,
            FloodTarget::Rx => RX_QUEUE,
        }
    }
}

/// What a flood did.
#[derive(Debug, Clone, Copy, Default)]
pub struct FloodReport {
    /// Copies of the chain made available.
    pub posted: u64,
    pub elapsed: Duration,
}

/// How long the device may take to pick up a kick before the flood gives up: it has stopped
/// serving the queue.
const KICK_TIMEOUT: Duration = Duration::from_secs(5);

/// Sets up what `target` needs on a connected frontend (stream parameters, PREPARE) and
/// sends the chain the flood repeats. Returns its head.
fn first_chain(fe: &mut SndFrontend, target: FloodTarget) -> Result<u16, FrontError> {
    // 48 kHz S16 stereo: 4096-byte periods, four of them.
    let (format, rate, channels, period) = (5u8, 7u8, 2u8, 4096u32);
    let token = match target {
        FloodTarget::Control => {
            let req = query_info(R_PCM_INFO, 0, 1, PCM_INFO_LEN as u32);
            fe.send_raw_chain(
                CONTROL_QUEUE,
                &[(&req, false), (&[0u8; 4 + PCM_INFO_LEN], true)],
            )?
        }
        FloodTarget::Event => fe.send_raw_chain(EVENT_QUEUE, &[(&[0u8; EVENT_LEN], true)])?,
        FloodTarget::Tx | FloodTarget::Rx => {
            let want = if target == FloodTarget::Tx {
                D_OUTPUT
            } else {
                D_INPUT
            };
            let stream = fe
                .pcm_info()?
                .iter()
                .position(|i| i.direction == want)
                .ok_or(FrontError::Missing("a stream of the flooded direction"))?
                as u32;
            for (what, st) in [
                (
                    "SET_PARAMS",
                    fe.set_params(stream, period * 4, period, channels, format, rate)?,
                ),
                ("PREPARE", fe.prepare(stream)?),
            ] {
                if st != S_OK {
                    return Err(FrontError::Status {
                        what: format!("{what} of stream {stream}"),
                        status: st,
                    });
                }
            }
            if target == FloodTarget::Tx {
                fe.push_tx(stream, &[0u8; 4096])?
            } else {
                fe.push_rx(stream, period as usize)?
            }
        }
    };
    fe.head_of(target.queue(), token)
        .ok_or_else(|| FrontError::Protocol("the flood's first chain is not in flight".into()))
}

/// Floods `target` for `duration`; `sample` is called between batches (e.g. to sample the
/// daemon's RSS). The frontend is good for nothing but [`SndFrontend::disconnect`] after.
pub fn flood(
    fe: &mut SndFrontend,
    target: FloodTarget,
    duration: Duration,
    mut sample: impl FnMut(),
) -> Result<FloodReport, FrontError> {
    let queue = target.queue();
    let head = first_chain(fe, target)?;
    let batch = (fe.queue_size(queue) / 2).max(1);
    let start = Instant::now();
    let mut posted = 0u64;
    while start.elapsed() < duration {
        fe.repost_head(queue, head, batch)?;
        posted += batch as u64;
        let asked = Instant::now();
        while fe.kick_pending(queue)? {
            if asked.elapsed() > KICK_TIMEOUT {
                return Err(FrontError::Protocol(format!(
                    "queue {queue}: the device took no kick for {KICK_TIMEOUT:?} \
                     ({posted} chains made available)"
                )));
            }
            std::thread::yield_now();
        }
        sample();
    }
    Ok(FloodReport {
        posted,
        elapsed: start.elapsed(),
    })
}
