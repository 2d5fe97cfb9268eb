//! virtio-snd constants and wire layouts (virtio 1.2 §5.14, control elements from 1.3).
//!
//! The installed `<linux/virtio_snd.h>` predates control elements, so the whole vocabulary the
//! card speaks is spelled out here once. Everything on the virtqueues is little-endian.

/// Queue indices.
pub const CONTROL_QUEUE: u16 = 0;
pub const EVENT_QUEUE: u16 = 1;
pub const TX_QUEUE: u16 = 2;
pub const RX_QUEUE: u16 = 3;
pub const NUM_QUEUES: usize = 4;

/// Feature bit: the device has control elements (virtio 1.3).
pub const VIRTIO_SND_F_CTLS: u64 = 1 << 0;

/// Request and event codes.
pub mod code {
    pub const JACK_INFO: u32 = 1;
    pub const JACK_REMAP: u32 = 2;
    pub const PCM_INFO: u32 = 0x0100;
    pub const PCM_SET_PARAMS: u32 = 0x0101;
    pub const PCM_PREPARE: u32 = 0x0102;
    pub const PCM_RELEASE: u32 = 0x0103;
    pub const PCM_START: u32 = 0x0104;
    pub const PCM_STOP: u32 = 0x0105;
    pub const CHMAP_INFO: u32 = 0x0200;
    pub const CTL_INFO: u32 = 0x0300;
    pub const CTL_ENUM_ITEMS: u32 = 0x0301;
    pub const CTL_READ: u32 = 0x0302;
    pub const CTL_WRITE: u32 = 0x0303;
    pub const CTL_TLV_READ: u32 = 0x0304;
    pub const CTL_TLV_WRITE: u32 = 0x0305;
    pub const CTL_TLV_COMMAND: u32 = 0x0306;

    pub const EVT_JACK_CONNECTED: u32 = 0x1000;
    pub const EVT_JACK_DISCONNECTED: u32 = 0x1001;
    pub const EVT_PCM_PERIOD_ELAPSED: u32 = 0x1100;
    pub const EVT_PCM_XRUN: u32 = 0x1101;
    pub const EVT_CTL_NOTIFY: u32 = 0x1200;

    /// The request's name, for logs.
    pub fn name(code: u32) -> &'static str {
        match code {
            JACK_INFO => "JACK_INFO",
            JACK_REMAP => "JACK_REMAP",
            PCM_INFO => "PCM_INFO",
            PCM_SET_PARAMS => "PCM_SET_PARAMS",
            PCM_PREPARE => "PCM_PREPARE",
            PCM_RELEASE => "PCM_RELEASE",
            PCM_START => "PCM_START",
            PCM_STOP => "PCM_STOP",
            CHMAP_INFO => "CHMAP_INFO",
            CTL_INFO => "CTL_INFO",
            CTL_ENUM_ITEMS => "CTL_ENUM_ITEMS",
            CTL_READ => "CTL_READ",
            CTL_WRITE => "CTL_WRITE",
            CTL_TLV_READ => "CTL_TLV_READ",
            CTL_TLV_WRITE => "CTL_TLV_WRITE",
            CTL_TLV_COMMAND => "CTL_TLV_COMMAND",
            _ => "UNKNOWN",
        }
    }
}

/// Response status codes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u32)]
pub enum Status {
    Ok = 0x8000,
    BadMsg = 0x8001,
    NotSupp = 0x8002,
    IoErr = 0x8003,
}

impl Status {
    pub fn code(self) -> u32 {
        self as u32
    }
    pub fn name(self) -> &'static str {
        match self {
            Status::Ok => "OK",
            Status::BadMsg => "BAD_MSG",
            Status::NotSupp => "NOT_SUPP",
            Status::IoErr => "IO_ERR",
        }
    }
}

/// Sizes of the structures on the queues, in bytes.
pub mod size {
    /// `virtio_snd_hdr` (request code or response status).
    pub const HDR: usize = 4;
    /// `virtio_snd_query_info`.
    pub const QUERY_INFO: usize = 16;
    /// `virtio_snd_jack_hdr`.
    pub const JACK_HDR: usize = 8;
    /// `virtio_snd_jack_remap`.
    pub const JACK_REMAP: usize = 16;
    /// `virtio_snd_jack_info`.
    pub const JACK_INFO: usize = 24;
    /// `virtio_snd_pcm_hdr`.
    pub const PCM_HDR: usize = 8;
    /// `virtio_snd_pcm_set_params`.
    pub const PCM_SET_PARAMS: usize = 24;
    /// `virtio_snd_pcm_info`.
    pub const PCM_INFO: usize = 32;
    /// `virtio_snd_chmap_info`.
    pub const CHMAP_INFO: usize = 24;
    /// `virtio_snd_ctl_hdr`.
    pub const CTL_HDR: usize = 8;
    /// `virtio_snd_ctl_info` (4 bytes of padding before the 8-aligned value union).
    pub const CTL_INFO: usize = 96;
    /// `virtio_snd_ctl_enum_item`.
    pub const CTL_ENUM_ITEM: usize = 44;
    /// `virtio_snd_ctl_value`.
    pub const CTL_VALUE: usize = 512;
    /// `virtio_snd_pcm_xfer`.
    pub const PCM_XFER: usize = 4;
    /// `virtio_snd_pcm_status`.
    pub const PCM_STATUS: usize = 8;
    /// `virtio_snd_event`.
    pub const EVENT: usize = 8;
    /// `virtio_snd_config` up to `chmaps` (what a frontend without controls exposes).
    pub const CONFIG_NO_CTLS: usize = 12;
    /// `virtio_snd_config` with `controls` (VIRTIO_SND_F_CTLS).
    pub const CONFIG: usize = 16;
    /// The largest per-item `size` a query may ask for: larger strides are legal in principle
    /// but no driver uses them, and they would let a guest make us build huge responses.
    pub const MAX_QUERY_ITEM: usize = 4096;
}

/// `VIRTIO_SND_D_*` stream directions.
pub const D_OUTPUT: u8 = 0;
pub const D_INPUT: u8 = 1;

/// Channel map positions (`VIRTIO_SND_CHMAP_*`).
pub mod chmap_pos {
    pub const NONE: u8 = 0;
    pub const NA: u8 = 1;
    pub const MONO: u8 = 2;
    pub const FL: u8 = 3;
    pub const FR: u8 = 4;
    pub const RL: u8 = 5;
    pub const RR: u8 = 6;
    pub const FC: u8 = 7;
    pub const LFE: u8 = 8;
    pub const SL: u8 = 9;
    pub const SR: u8 = 10;
    pub const RC: u8 = 11;
}
/// Positions in one `virtio_snd_chmap_info`.
pub const CHMAP_MAX_SIZE: usize = 18;

/// Control element roles, types and access bits.
pub mod ctl {
    pub const ROLE_UNDEFINED: u32 = 0;
    pub const ROLE_VOLUME: u32 = 1;
    pub const ROLE_MUTE: u32 = 2;
    pub const ROLE_GAIN: u32 = 3;

    pub const TYPE_BOOLEAN: u32 = 0;
    pub const TYPE_INTEGER: u32 = 1;
    pub const TYPE_INTEGER64: u32 = 2;
    pub const TYPE_ENUMERATED: u32 = 3;

    pub const ACCESS_READ: u32 = 1 << 0;
    pub const ACCESS_WRITE: u32 = 1 << 1;
    pub const ACCESS_VOLATILE: u32 = 1 << 2;
    pub const ACCESS_INACTIVE: u32 = 1 << 3;
    pub const ACCESS_TLV_READ: u32 = 1 << 4;
    pub const ACCESS_TLV_WRITE: u32 = 1 << 5;
    pub const ACCESS_TLV_COMMAND: u32 = 1 << 6;

    /// CTL_NOTIFY mask bits.
    pub const EVT_MASK_VALUE: u16 = 1 << 0;
    pub const EVT_MASK_INFO: u16 = 1 << 1;
    pub const EVT_MASK_TLV: u16 = 1 << 2;

    /// ALSA TLV type of a dB scale (`SNDRV_CTL_TLVT_DB_SCALE`).
    pub const TLVT_DB_SCALE: u32 = 1;
    /// In a DB_SCALE TLV: the minimum value means mute.
    pub const TLV_DB_SCALE_MUTE: u32 = 0x1_0000;
    /// The name field of a control info.
    pub const NAME_LEN: usize = 44;
    /// Values in a `virtio_snd_ctl_value` (as le32 integers).
    pub const MAX_VALUES: usize = 128;
}

/// A little-endian byte builder for the structures above.
#[derive(Default)]
pub struct LeBuf(pub Vec<u8>);

impl LeBuf {
    pub fn with_capacity(n: usize) -> LeBuf {
        LeBuf(Vec::with_capacity(n))
    }
    pub fn u8(&mut self, v: u8) -> &mut Self {
        self.0.push(v);
        self
    }
    pub fn u16(&mut self, v: u16) -> &mut Self {
        self.0.extend_from_slice(&v.to_le_bytes());
        self
    }
    pub fn u32(&mut self, v: u32) -> &mut Self {
        self.0.extend_from_slice(&v.to_le_bytes());
        self
    }
    pub fn u64(&mut self, v: u64) -> &mut Self {
        self.0.extend_from_slice(&v.to_le_bytes());
        self
    }
    pub fn zeros(&mut self, n: usize) -> &mut Self {
        self.0.resize(self.0.len() + n, 0);
        self
    }
    pub fn bytes(&mut self, b: &[u8]) -> &mut Self {
        self.0.extend_from_slice(b);
        self
    }
    pub fn len(&self) -> usize {
        self.0.len()
    }
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
    pub fn into_vec(self) -> Vec<u8> {
        self.0
    }
}

/// Reads a little-endian u32 at `off` of `b`, if it is there.
pub fn le32(b: &[u8], off: usize) -> Option<u32> {
    let s = b.get(off..off.checked_add(4)?)?;
    Some(u32::from_le_bytes([s[0], s[1], s[2], s[3]]))
}

/// An 8-byte `virtio_snd_event`.
pub fn event_bytes(code: u32, data: u32) -> [u8; size::EVENT] {
    let mut e = [0u8; size::EVENT];
    e[..4].copy_from_slice(&code.to_le_bytes());
    e[4..].copy_from_slice(&data.to_le_bytes());
    e
}

/// A CTL_NOTIFY event: header, le16 control id, le16 mask.
pub fn ctl_notify_bytes(control_id: u16, mask: u16) -> [u8; size::EVENT] {
    let mut e = [0u8; size::EVENT];
    e[..4].copy_from_slice(&code::EVT_CTL_NOTIFY.to_le_bytes());
    e[4..6].copy_from_slice(&control_id.to_le_bytes());
    e[6..].copy_from_slice(&mask.to_le_bytes());
    e
}
