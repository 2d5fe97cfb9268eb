//! aero's Windows 7 virtio-snd driver (PortCls + WaveRT), as its AERO-W7-VIRTIO v1 contract
//! and its sources (drivers/windows7/virtio-snd in wilsonzlin/aero) hold a device to it:
//!
//! - PCI revision 1 (a transport matter: QEMU's vhost-user-snd-pci is 1af4:1059 rev 01);
//! - it negotiates VERSION_1 and INDIRECT_DESC (refusing a device without the latter), and
//!   never EVENT_IDX or packed rings; every chain of more than one descriptor goes through
//!   an indirect table;
//! - its queues are exactly 64/64/256/64 entries (control, event, tx, rx);
//! - the config must have 0 or 2 jacks, 2 streams and 0 channel maps;
//! - PCM_INFO(start 0, count 2) must answer stream 0 = output offering 2 ch S16 48 kHz and
//!   stream 1 = input offering 1 ch S16 48 kHz, and the first word of each entry (the spec's
//!   hda_fn_nid) must be the stream id;
//! - SET_PARAMS: stream 0 2 ch, stream 1 1 ch, S16, 48 kHz, features 0;
//! - PCM payloads are at most 256 KiB; a used length under 8 counts as BAD_MSG, and any
//!   BAD_MSG or NOT_SUPP status stops its streaming;
//! - its dialect ([`Dialect::Aero`]): status codes 0-3, an 8-byte PCM header {stream_id,
//!   reserved}, a 12-byte PCM_INFO request.
//!
//! `dsproxy-device --profile aero` serves it.

use std::time::Duration;

use super::{capture, offers, step, PersonaError};
use crate::dialect::Dialect;
use crate::error::FrontError;
use crate::frontend::{FrontendOpts, SndFrontend};
use crate::play::{play_many, PlayOpts, PlayReport, PlayStream};
use crate::proto::*;

pub const DRIVER: &str = "aero virtio-snd (Windows 7)";
pub const QUEUE_SIZES: [u16; NUM_QUEUES] = [64, 64, 256, 64];
pub const MAX_PAYLOAD: usize = 256 << 10;
pub const OUTPUT: u32 = 0;
pub const INPUT: u32 = 1;
pub const FORMAT: u8 = 5; // S16
pub const RATE: u8 = 7; // 48 kHz
/// Event buffers it keeps posted (its pool is indexed below 64).
pub const EVENT_BUFFERS: usize = 64;
/// 10 ms of stereo S16 at 48 kHz: the Windows audio engine's period.
pub const PERIOD_BYTES: usize = 1920;
/// TX buffers its engine keeps (VirtioSndTxInit's default count).
pub const PERIODS: usize = 16;

/// The frontend as aero's driver sets it up.
pub fn opts() -> FrontendOpts {
    FrontendOpts {
        queue_sizes: Some(QUEUE_SIZES),
        want_ctls: false,
        want_event_idx: false,
        want_indirect: true,
        indirect: true,
        dialect: Dialect::Aero,
        // QEMU's vhost-user-snd-pci with controls=on (the README's line) reads 16 bytes of
        // config whatever the driver negotiates.
        config_len: Some(CONFIG_LEN),
        event_buffers: 0,
        ..FrontendOpts::default()
    }
}

fn refused(why: impl Into<String>) -> PersonaError {
    PersonaError::Refused {
        driver: DRIVER,
        why: why.into(),
    }
}

/// What aero's START_DEVICE checks of the config space.
pub fn check_config(cfg: &SndConfig) -> Result<(), PersonaError> {
    if cfg.streams != 2 || cfg.chmaps != 0 || !(cfg.jacks == 0 || cfg.jacks == 2) {
        return Err(refused(format!(
            "config has {} jacks, {} streams, {} chmaps; the contract needs 0 or 2 jacks, 2 streams, 0 chmaps",
            cfg.jacks, cfg.streams, cfg.chmaps
        )));
    }
    Ok(())
}

/// What it checks of the two PCM_INFO entries.
pub fn check_pcm_info(out: &PcmInfo, inp: &PcmInfo) -> Result<(), PersonaError> {
    if out.hda_fn_nid != OUTPUT || inp.hda_fn_nid != INPUT {
        return Err(refused(format!(
            "PCM_INFO entries name streams {} and {}, not 0 and 1",
            out.hda_fn_nid, inp.hda_fn_nid
        )));
    }
    if out.direction != D_OUTPUT || inp.direction != D_INPUT {
        return Err(refused("stream 0 must be an output and stream 1 an input"));
    }
    if !offers(out, FORMAT, RATE, 2) || !offers(inp, FORMAT, RATE, 1) {
        return Err(refused(
            "stream 0 must offer 2 ch S16 48 kHz and stream 1 1 ch S16 48 kHz",
        ));
    }
    Ok(())
}

/// A started aero driver: the device passed its START_DEVICE checks.
pub struct Aero {
    pub fe: SndFrontend,
    pub config: SndConfig,
    pub output: PcmInfo,
    pub input: PcmInfo,
}

impl Aero {
    pub fn start(socket: impl AsRef<std::path::Path>) -> Result<Aero, PersonaError> {
        let mut fe = step(DRIVER, "connect", SndFrontend::connect(socket, opts()))?;
        if !fe.indirect_negotiated() {
            return Err(refused(
                "the device does not offer VIRTIO_F_RING_INDIRECT_DESC",
            ));
        }
        let guest = fe.acked_features() & !VHOST_USER_F_PROTOCOL_FEATURES;
        assert_eq!(
            guest,
            VIRTIO_F_VERSION_1 | VIRTIO_RING_F_INDIRECT_DESC,
            "the persona negotiates exactly VERSION_1 and INDIRECT_DESC"
        );
        for (q, &want) in QUEUE_SIZES.iter().enumerate() {
            if fe.queue_size(q) != want {
                return Err(refused(format!(
                    "queue {q} has {} entries, the contract needs {want}",
                    fe.queue_size(q)
                )));
            }
        }
        let config = fe.config();
        check_config(&config)?;
        // PCM_INFO as the driver sends it: {code, start_id 0, count 2}, one writable buffer
        // for the status and both entries.
        let req = fe.dialect().pcm_info_request(0, 2);
        let r = step(
            DRIVER,
            "PCM_INFO",
            fe.ctl_request(&req, &[4 + 2 * PCM_INFO_LEN]),
        )?;
        if !r.ok() {
            return Err(refused(format!(
                "PCM_INFO answered {}",
                fe.dialect().status_name(r.status)
            )));
        }
        if (r.len as usize) < 4 + 2 * PCM_INFO_LEN {
            return Err(refused(format!(
                "PCM_INFO used length {} < {}",
                r.len,
                4 + 2 * PCM_INFO_LEN
            )));
        }
        let b = &r.bufs[0];
        let output = PcmInfo::parse(&b[4..4 + PCM_INFO_LEN]);
        let input = PcmInfo::parse(&b[4 + PCM_INFO_LEN..4 + 2 * PCM_INFO_LEN]);
        check_pcm_info(&output, &input)?;
        fe.post_event_buffers(EVENT_BUFFERS)
            .map_err(|e| refused(format!("the event queue cannot take its buffers: {e}")))?;
        Ok(Aero {
            fe,
            config,
            output,
            input,
        })
    }

    fn set_up(
        &mut self,
        stream: u32,
        channels: u8,
        period: usize,
        periods: usize,
    ) -> Result<(), PersonaError> {
        if period > MAX_PAYLOAD {
            return Err(PersonaError::Failed {
                driver: DRIVER,
                what: format!("a {period}-byte period"),
                source: FrontError::Usage(format!(
                    "the driver never sends payloads over {MAX_PAYLOAD} bytes"
                )),
            });
        }
        let p = PcmParams {
            buffer_bytes: (period * periods) as u32,
            period_bytes: period as u32,
            features: 0,
            channels,
            format: FORMAT,
            rate: RATE,
        };
        for (what, st) in [
            (
                "SET_PARAMS",
                step(DRIVER, "SET_PARAMS", self.fe.set_params_full(stream, &p))?,
            ),
            ("PREPARE", step(DRIVER, "PREPARE", self.fe.prepare(stream))?),
        ] {
            if st != self.fe.dialect().ok() {
                return Err(PersonaError::Failed {
                    driver: DRIVER,
                    what: format!("{what} of stream {stream}"),
                    source: FrontError::Status {
                        what: format!("{what} ({})", self.fe.dialect().status_name(st)),
                        status: st,
                    },
                });
            }
        }
        Ok(())
    }

    /// Plays `data` on stream 0 in `period`-byte payloads (at most 256 KiB), `PERIODS` in
    /// flight, through indirect descriptors with 8-byte headers; streaming stops at the
    /// first BAD_MSG/NOT_SUPP or short used length.
    pub fn play(&mut self, data: &[u8], period: usize) -> Result<PlayReport, PersonaError> {
        self.play_chunks(data, period, period)
    }

    /// [`play`](Self::play) with TX payloads of `chunk` bytes for a `period` set by
    /// SET_PARAMS (they differ only in tests of the persona's error handling).
    pub fn play_chunks(
        &mut self,
        data: &[u8],
        period: usize,
        chunk: usize,
    ) -> Result<PlayReport, PersonaError> {
        self.set_up(OUTPUT, 2, period, PERIODS.min(16))?;
        let mut opts = PlayOpts::new(chunk);
        opts.stop_on_error = true;
        let mut reports = step(
            DRIVER,
            "playing",
            play_many(
                &mut self.fe,
                &[PlayStream {
                    stream: OUTPUT,
                    data,
                }],
                &opts,
            ),
        )?;
        step(DRIVER, "RELEASE", self.fe.release(OUTPUT))?;
        Ok(reports.remove(0))
    }

    /// Records `bytes` from stream 1 (mono) in `period`-byte buffers; `after_prepare` runs
    /// once the stream is prepared (e.g. to inject audio).
    pub fn record(
        &mut self,
        bytes: usize,
        period: usize,
        after_prepare: impl FnOnce(u32),
    ) -> Result<Vec<u8>, PersonaError> {
        let ring = 8;
        self.set_up(INPUT, 1, period, ring)?;
        after_prepare(INPUT);
        let dialect = self.fe.dialect();
        let data = step(
            DRIVER,
            "capturing",
            capture(
                &mut self.fe,
                INPUT,
                period,
                ring,
                bytes,
                Duration::from_secs(30),
                |c| {
                    // Its RX engine, like its TX one, stops on these.
                    let bad = (c.len as usize) < PCM_STATUS_LEN
                        || matches!(dialect.decode(c.status), Some(S_BAD_MSG) | Some(S_NOT_SUPP));
                    if bad {
                        return Err(FrontError::Stopped {
                            stream: INPUT,
                            completed: 0,
                            why: format!(
                                "RX completed with {} and used length {}",
                                dialect.status_name(c.status),
                                c.len
                            ),
                        });
                    }
                    Ok(())
                },
            ),
        )?;
        step(DRIVER, "RELEASE", self.fe.release(INPUT))?;
        Ok(data)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_check() {
        let ok = |jacks, streams, chmaps| {
            check_config(&SndConfig {
                jacks,
                streams,
                chmaps,
                controls: None,
            })
            .is_ok()
        };
        assert!(ok(0, 2, 0));
        assert!(ok(2, 2, 0));
        assert!(!ok(1, 2, 0));
        assert!(
            !ok(2, 2, 2),
            "the standard card's 1+1 streams have 2 chmaps"
        );
        assert!(!ok(0, 3, 0));
    }
}
