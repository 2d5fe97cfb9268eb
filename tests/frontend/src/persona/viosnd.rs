//! viosnd, the Windows ACX virtio-snd driver (binary only; its contract as observed):
//!
//! - it negotiates VERSION_1 only: no VIRTIO_SND_F_CTLS, no EVENT_IDX, no INDIRECT_DESC;
//! - it posts 8 event buffers and fails to start if the event queue cannot take them;
//! - it picks the first output and the first input stream that offer S16 / 48 kHz / 2
//!   channels, otherwise the first stream of each direction;
//! - its SET_PARAMS is S16 / 48 kHz / 2 channels, 2048-byte periods, a 16-period buffer,
//!   features 0;
//! - its control requests time out after 1 s.
//!
//! It speaks virtio-snd as specified, which the standard card (`--profile standard`, the
//! default) serves.

use std::time::Duration;

use super::{capture, offers, step, streams_of, PersonaError};
use crate::dialect::Dialect;
use crate::frontend::{FrontendOpts, SndFrontend};
use crate::play::{play_many, PlayOpts, PlayReport, PlayStream};
use crate::proto::*;

pub const DRIVER: &str = "viosnd";
pub const EVENT_BUFFERS: usize = 8;
pub const PERIOD_BYTES: u32 = 2048;
pub const PERIODS: u32 = 16;
pub const CHANNELS: u8 = 2;
pub const FORMAT: u8 = 5; // VIRTIO_SND_PCM_FMT_S16
pub const RATE: u8 = 7; // VIRTIO_SND_PCM_RATE_48000
pub const CTL_TIMEOUT: Duration = Duration::from_secs(1);

/// The frontend as QEMU's vhost-user-snd-pci (64-entry queues) and viosnd set it up.
pub fn opts() -> FrontendOpts {
    FrontendOpts {
        queue_size: 64,
        want_ctls: false,
        want_event_idx: false,
        want_indirect: false,
        indirect: false,
        dialect: Dialect::Spec,
        // QEMU's vhost-user-snd-pci with controls=on (the README's line) reads 16 bytes of
        // config whatever the driver negotiates.
        config_len: Some(CONFIG_LEN),
        ctl_timeout: CTL_TIMEOUT,
        // Posted by the persona, which fails as the driver does if they do not fit.
        event_buffers: 0,
        ..FrontendOpts::default()
    }
}

/// viosnd's stream choice: the first stream of each direction offering S16/48k/2ch,
/// otherwise the first stream of that direction.
pub fn choose(infos: &[PcmInfo], direction: u8) -> Option<u32> {
    streams_of(infos, direction)
        .find(|&id| offers(&infos[id as usize], FORMAT, RATE, CHANNELS))
        .or_else(|| streams_of(infos, direction).next())
}

/// A started viosnd: the device accepted its bring-up.
pub struct Viosnd {
    pub fe: SndFrontend,
    pub infos: Vec<PcmInfo>,
    pub output: Option<u32>,
    pub input: Option<u32>,
}

impl Viosnd {
    /// Connects and brings the device up as viosnd does.
    pub fn start(socket: impl AsRef<std::path::Path>) -> Result<Viosnd, PersonaError> {
        Viosnd::start_with(socket, opts())
    }

    /// [`start`](Self::start) with other frontend options (tests of the persona itself).
    pub fn start_with(
        socket: impl AsRef<std::path::Path>,
        opts: FrontendOpts,
    ) -> Result<Viosnd, PersonaError> {
        let mut fe = step(DRIVER, "connect", SndFrontend::connect(socket, opts))?;
        let guest_features = fe.acked_features() & !VHOST_USER_F_PROTOCOL_FEATURES;
        if guest_features != VIRTIO_F_VERSION_1 {
            return Err(PersonaError::Refused {
                driver: DRIVER,
                why: format!("negotiated {guest_features:#x}, viosnd takes VERSION_1 only"),
            });
        }
        fe.post_event_buffers(EVENT_BUFFERS)
            .map_err(|e| PersonaError::Refused {
                driver: DRIVER,
                why: format!("the event queue cannot take {EVENT_BUFFERS} buffers: {e}"),
            })?;
        let infos = step(DRIVER, "PCM_INFO", fe.pcm_info())?;
        let output = choose(&infos, D_OUTPUT);
        let input = choose(&infos, D_INPUT);
        if output.is_none() && input.is_none() {
            return Err(PersonaError::Refused {
                driver: DRIVER,
                why: "no PCM stream".into(),
            });
        }
        Ok(Viosnd {
            fe,
            infos,
            output,
            input,
        })
    }

    fn set_up(&mut self, stream: u32) -> Result<(), PersonaError> {
        let p = PcmParams {
            buffer_bytes: PERIOD_BYTES * PERIODS,
            period_bytes: PERIOD_BYTES,
            features: 0,
            channels: CHANNELS,
            format: FORMAT,
            rate: RATE,
        };
        let st = step(DRIVER, "SET_PARAMS", self.fe.set_params_full(stream, &p))?;
        if st != S_OK {
            return Err(PersonaError::Failed {
                driver: DRIVER,
                what: format!("SET_PARAMS S16/48k/2ch on stream {stream}"),
                source: crate::FrontError::Status {
                    what: "SET_PARAMS".into(),
                    status: st,
                },
            });
        }
        let st = step(DRIVER, "PREPARE", self.fe.prepare(stream))?;
        if st != S_OK {
            return Err(PersonaError::Failed {
                driver: DRIVER,
                what: format!("PREPARE of stream {stream}"),
                source: crate::FrontError::Status {
                    what: "PREPARE".into(),
                    status: st,
                },
            });
        }
        Ok(())
    }

    /// Plays `data` on the chosen output: SET_PARAMS, PREPARE, the 16-period ring kept full
    /// (the first buffer's worth queued before START), STOP after the last period, RELEASE.
    pub fn play(&mut self, data: &[u8]) -> Result<PlayReport, PersonaError> {
        let stream = self.output.ok_or(PersonaError::Refused {
            driver: DRIVER,
            why: "no output stream".into(),
        })?;
        self.set_up(stream)?;
        let mut reports = step(
            DRIVER,
            "playing",
            play_many(
                &mut self.fe,
                &[PlayStream { stream, data }],
                &PlayOpts::new(PERIOD_BYTES as usize),
            ),
        )?;
        step(DRIVER, "RELEASE", self.fe.release(stream))?;
        Ok(reports.remove(0))
    }

    /// Records `bytes` from the chosen input (`after_prepare` runs once it is prepared, e.g.
    /// to inject audio), with its 16-period ring.
    pub fn record(
        &mut self,
        bytes: usize,
        after_prepare: impl FnOnce(u32),
    ) -> Result<Vec<u8>, PersonaError> {
        let stream = self.input.ok_or(PersonaError::Refused {
            driver: DRIVER,
            why: "no input stream".into(),
        })?;
        self.set_up(stream)?;
        after_prepare(stream);
        let data = step(
            DRIVER,
            "capturing",
            capture(
                &mut self.fe,
                stream,
                PERIOD_BYTES as usize,
                PERIODS as usize,
                bytes,
                Duration::from_secs(30),
                |_| Ok(()),
            ),
        )?;
        step(DRIVER, "RELEASE", self.fe.release(stream))?;
        Ok(data)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info(direction: u8, formats: u64, rates: u64, ch: (u8, u8)) -> PcmInfo {
        PcmInfo {
            hda_fn_nid: 0,
            features: 0,
            formats,
            rates,
            direction,
            channels_min: ch.0,
            channels_max: ch.1,
        }
    }

    #[test]
    fn picks_the_first_stream_offering_s16_48k_stereo() {
        let s16 = 1 << FORMAT;
        let r48 = 1 << RATE;
        let infos = [
            info(D_OUTPUT, 1 << 4, r48, (1, 2)), // U8 only
            info(D_INPUT, s16, r48, (1, 1)),     // mono only
            info(D_OUTPUT, s16, r48, (2, 8)),    // the one
            info(D_INPUT, s16, 1 << 6, (1, 2)),  // 44.1k only
            info(D_OUTPUT, s16, r48, (1, 2)),    // also fits, but later
        ];
        assert_eq!(choose(&infos, D_OUTPUT), Some(2));
        // No input fits: the first input stream.
        assert_eq!(choose(&infos, D_INPUT), Some(1));
        assert_eq!(choose(&infos[..1], D_INPUT), None);
    }
}
