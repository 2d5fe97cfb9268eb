//! Driver profiles: the shapes and message dialects of the guest drivers the card serves.
//!
//! The standard card is virtio-snd as the virtio 1.2/1.3 spec and Linux's `virtio_snd`
//! describe it; Windows' ACX driver "viosnd" asks nothing more of it (VERSION_1 only, event
//! buffers, a stream with S16/48 kHz/2 channels, control requests answered within a second).
//! The aero project's Windows 7 WaveRT driver speaks a dialect that a standard card cannot
//! serve without costing Linux guests something, so it has a profile of its own.

use clap::ValueEnum;

use crate::spec::{size, Status};

/// Which guest drivers the card is shaped for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, ValueEnum)]
pub enum Profile {
    /// virtio-snd as specified: Linux's virtio_snd, the Windows ACX driver viosnd, and any
    /// driver that follows the spec.
    #[default]
    Standard,
    /// The aero project's Windows 7 virtio-snd driver (its "AERO-W7-VIRTIO" contract v1):
    /// exactly one output and one input stream, no jacks and no channel maps in the config
    /// space, each stream's PCM_INFO `hda_fn_nid` equal to its stream id (the driver reads it
    /// as the id), an 8-byte PCM transfer header {stream_id, reserved} where the spec has
    /// 4 bytes, PCM_INFO requests without the `size` field (12 bytes), and status codes
    /// 0-3 where the spec has 0x8000-0x8003 (OK, BAD_MSG, NOT_SUPP, IO_ERR).
    Aero,
}

impl Profile {
    /// Bytes before the PCM data of a TX/RX chain: `virtio_snd_pcm_xfer` is {le32 stream_id};
    /// aero's driver sends {le32 stream_id, le32 reserved}. Only the stream id is read.
    pub fn xfer_header_len(self) -> usize {
        match self {
            Profile::Standard => size::PCM_XFER,
            Profile::Aero => size::PCM_XFER + 4,
        }
    }

    /// The value a status is written as: the spec's 0x8000 + n; aero's driver (and its
    /// emulator) number them from 0, and read 0x8000 as an unknown status.
    pub fn status_code(self, status: Status) -> u32 {
        match self {
            Profile::Standard => status.code(),
            Profile::Aero => status.code() - Status::Ok.code(),
        }
    }

    /// A query (`virtio_snd_query_info`) may end before its `size` field; the item's
    /// specified size is meant then. Aero's PCM_INFO request is {code, start_id, count}.
    pub fn query_size_optional(self) -> bool {
        self == Profile::Aero
    }

    /// One jack and one channel map per stream (the standard card); aero's driver refuses a
    /// config space with channel maps, and accepts 0 jacks.
    pub fn jacks_and_chmaps(self) -> bool {
        self == Profile::Standard
    }

    /// Output i and input i share HDA function node i (so Linux makes one ALSA PCM device of
    /// the pair); aero's driver takes `hda_fn_nid` for the stream id and requires 0 and 1.
    pub fn paired_nids(self) -> bool {
        self == Profile::Standard
    }

    pub fn name(self) -> &'static str {
        match self {
            Profile::Standard => "standard",
            Profile::Aero => "aero",
        }
    }
}
