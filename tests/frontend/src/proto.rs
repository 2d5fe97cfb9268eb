//! The virtio-snd driver side of the protocol: request encoders and response decoders, written
//! from the specification (virtio 1.2 §5.14, control elements from 1.3) independently of the
//! device's own definitions, so that the harness checks the device rather than mirroring it.
//!
//! All multi-byte fields are little-endian. Layouts are given as byte offsets in comments.

/// virtio device id of a sound card.
pub const VIRTIO_ID_SOUND: u32 = 25;

/// Queue indices.
pub const CONTROL_QUEUE: usize = 0;
pub const EVENT_QUEUE: usize = 1;
pub const TX_QUEUE: usize = 2;
pub const RX_QUEUE: usize = 3;
pub const NUM_QUEUES: usize = 4;

/// Feature bits.
pub const VIRTIO_SND_F_CTLS: u64 = 1 << 0;
pub const VIRTIO_RING_F_INDIRECT_DESC: u64 = 1 << 28;
pub const VIRTIO_RING_F_EVENT_IDX: u64 = 1 << 29;
pub const VHOST_USER_F_PROTOCOL_FEATURES: u64 = 1 << 30;
pub const VIRTIO_F_VERSION_1: u64 = 1 << 32;

/// Request codes.
pub const R_JACK_INFO: u32 = 1;
pub const R_JACK_REMAP: u32 = 2;
pub const R_PCM_INFO: u32 = 0x0100;
pub const R_PCM_SET_PARAMS: u32 = 0x0101;
pub const R_PCM_PREPARE: u32 = 0x0102;
pub const R_PCM_RELEASE: u32 = 0x0103;
pub const R_PCM_START: u32 = 0x0104;
pub const R_PCM_STOP: u32 = 0x0105;
pub const R_CHMAP_INFO: u32 = 0x0200;
pub const R_CTL_INFO: u32 = 0x0300;
pub const R_CTL_ENUM_ITEMS: u32 = 0x0301;
pub const R_CTL_READ: u32 = 0x0302;
pub const R_CTL_WRITE: u32 = 0x0303;
pub const R_CTL_TLV_READ: u32 = 0x0304;
pub const R_CTL_TLV_WRITE: u32 = 0x0305;
pub const R_CTL_TLV_COMMAND: u32 = 0x0306;

/// Event codes.
pub const EVT_JACK_CONNECTED: u32 = 0x1000;
pub const EVT_JACK_DISCONNECTED: u32 = 0x1001;
pub const EVT_PCM_PERIOD_ELAPSED: u32 = 0x1100;
pub const EVT_PCM_XRUN: u32 = 0x1101;
pub const EVT_CTL_NOTIFY: u32 = 0x1200;

/// Status codes.
pub const S_OK: u32 = 0x8000;
pub const S_BAD_MSG: u32 = 0x8001;
pub const S_NOT_SUPP: u32 = 0x8002;
pub const S_IO_ERR: u32 = 0x8003;

/// Stream directions.
pub const D_OUTPUT: u8 = 0;
pub const D_INPUT: u8 = 1;

/// Control element roles, types and access bits.
pub const CTL_ROLE_UNDEFINED: u32 = 0;
pub const CTL_ROLE_VOLUME: u32 = 1;
pub const CTL_ROLE_MUTE: u32 = 2;
pub const CTL_ROLE_GAIN: u32 = 3;
pub const CTL_TYPE_BOOLEAN: u32 = 0;
pub const CTL_TYPE_INTEGER: u32 = 1;
pub const CTL_TYPE_INTEGER64: u32 = 2;
pub const CTL_TYPE_ENUMERATED: u32 = 3;
pub const CTL_ACCESS_READ: u32 = 1 << 0;
pub const CTL_ACCESS_WRITE: u32 = 1 << 1;
pub const CTL_ACCESS_VOLATILE: u32 = 1 << 2;
pub const CTL_ACCESS_INACTIVE: u32 = 1 << 3;
pub const CTL_ACCESS_TLV_READ: u32 = 1 << 4;
pub const CTL_ACCESS_TLV_WRITE: u32 = 1 << 5;
pub const CTL_ACCESS_TLV_COMMAND: u32 = 1 << 6;
/// CTL_NOTIFY mask bits.
pub const CTL_EVT_MASK_VALUE: u16 = 1 << 0;
pub const CTL_EVT_MASK_INFO: u16 = 1 << 1;
pub const CTL_EVT_MASK_TLV: u16 = 1 << 2;
/// ALSA TLV type of a dB scale.
pub const TLV_DB_SCALE: u32 = 1;

/// Channel map positions used by the tests.
pub const CHMAP_NONE: u8 = 0;
pub const CHMAP_MONO: u8 = 2;
pub const CHMAP_FL: u8 = 3;
pub const CHMAP_FR: u8 = 4;
pub const CHMAP_MAX_SIZE: usize = 18;

/// Sizes of the structures on the wire.
pub const QUERY_INFO_LEN: usize = 16;
pub const JACK_INFO_LEN: usize = 24;
pub const PCM_INFO_LEN: usize = 32;
pub const CHMAP_INFO_LEN: usize = 24;
pub const CTL_INFO_LEN: usize = 96;
pub const CTL_VALUE_LEN: usize = 512;
pub const CTL_ENUM_ITEM_LEN: usize = 64;
pub const SET_PARAMS_LEN: usize = 24;
pub const PCM_HDR_LEN: usize = 8;
pub const PCM_XFER_LEN: usize = 4;
pub const PCM_STATUS_LEN: usize = 8;
pub const EVENT_LEN: usize = 8;
pub const CONFIG_LEN_NO_CTLS: usize = 12;
pub const CONFIG_LEN: usize = 16;
pub const CTL_NAME_LEN: usize = 44;

/// A readable name for a status code.
pub fn status_name(s: u32) -> &'static str {
    match s {
        S_OK => "OK",
        S_BAD_MSG => "BAD_MSG",
        S_NOT_SUPP => "NOT_SUPP",
        S_IO_ERR => "IO_ERR",
        _ => "invalid status",
    }
}

pub(crate) fn le32(b: &[u8], at: usize) -> u32 {
    let mut w = [0u8; 4];
    if let Some(s) = b.get(at..at + 4) {
        w.copy_from_slice(s);
    }
    u32::from_le_bytes(w)
}

pub(crate) fn le16(b: &[u8], at: usize) -> u16 {
    let mut w = [0u8; 2];
    if let Some(s) = b.get(at..at + 2) {
        w.copy_from_slice(s);
    }
    u16::from_le_bytes(w)
}

pub(crate) fn le64(b: &[u8], at: usize) -> u64 {
    let mut w = [0u8; 8];
    if let Some(s) = b.get(at..at + 8) {
        w.copy_from_slice(s);
    }
    u64::from_le_bytes(w)
}

fn cstr(b: &[u8]) -> String {
    let end = b.iter().position(|&c| c == 0).unwrap_or(b.len());
    String::from_utf8_lossy(&b[..end]).into_owned()
}

/// The device configuration space (`struct virtio_snd_config`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SndConfig {
    pub jacks: u32,
    pub streams: u32,
    pub chmaps: u32,
    /// Present only when VIRTIO_SND_F_CTLS was negotiated.
    pub controls: Option<u32>,
}

impl SndConfig {
    pub fn parse(b: &[u8]) -> SndConfig {
        SndConfig {
            jacks: le32(b, 0),
            streams: le32(b, 4),
            chmaps: le32(b, 8),
            controls: (b.len() >= CONFIG_LEN).then(|| le32(b, 12)),
        }
    }
}

/// `struct virtio_snd_query_info`: code, start_id, count, size.
pub fn query_info(code: u32, start_id: u32, count: u32, size: u32) -> Vec<u8> {
    let mut v = Vec::with_capacity(QUERY_INFO_LEN);
    for w in [code, start_id, count, size] {
        v.extend_from_slice(&w.to_le_bytes());
    }
    v
}

/// `struct virtio_snd_jack_info` (24 bytes): hda_fn_nid @0, features @4, hda_reg_defconf @8,
/// hda_reg_caps @12, connected @16, padding[7].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct JackInfo {
    pub hda_fn_nid: u32,
    pub features: u32,
    pub hda_reg_defconf: u32,
    pub hda_reg_caps: u32,
    pub connected: u8,
}

impl JackInfo {
    pub fn parse(b: &[u8]) -> JackInfo {
        JackInfo {
            hda_fn_nid: le32(b, 0),
            features: le32(b, 4),
            hda_reg_defconf: le32(b, 8),
            hda_reg_caps: le32(b, 12),
            connected: b.get(16).copied().unwrap_or(0),
        }
    }
}

/// `struct virtio_snd_pcm_info` (32 bytes): hda_fn_nid @0, features @4, formats @8 (le64),
/// rates @16 (le64), direction @24, channels_min @25, channels_max @26, padding[5].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PcmInfo {
    pub hda_fn_nid: u32,
    pub features: u32,
    pub formats: u64,
    pub rates: u64,
    pub direction: u8,
    pub channels_min: u8,
    pub channels_max: u8,
}

impl PcmInfo {
    pub fn parse(b: &[u8]) -> PcmInfo {
        PcmInfo {
            hda_fn_nid: le32(b, 0),
            features: le32(b, 4),
            formats: le64(b, 8),
            rates: le64(b, 16),
            direction: b.get(24).copied().unwrap_or(0xff),
            channels_min: b.get(25).copied().unwrap_or(0),
            channels_max: b.get(26).copied().unwrap_or(0),
        }
    }
}

/// `struct virtio_snd_chmap_info` (24 bytes): hda_fn_nid @0, direction @4, channels @5,
/// positions[18] @6.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChmapInfo {
    pub hda_fn_nid: u32,
    pub direction: u8,
    pub channels: u8,
    pub positions: Vec<u8>,
}

impl ChmapInfo {
    pub fn parse(b: &[u8]) -> ChmapInfo {
        let channels = b.get(5).copied().unwrap_or(0);
        let n = (channels as usize).min(CHMAP_MAX_SIZE);
        ChmapInfo {
            hda_fn_nid: le32(b, 0),
            direction: b.get(4).copied().unwrap_or(0xff),
            channels,
            positions: b.get(6..6 + n).map(|s| s.to_vec()).unwrap_or_default(),
        }
    }
}

/// `struct virtio_snd_ctl_info` (96 bytes): hda_fn_nid @0, role @4, type @8, access @12,
/// count @16, index @20, name[44] @24, 4 bytes of padding @68 (the union holds 64-bit
/// members), value union @72: integer {min, max, step} le32 | integer64 {min, max, step}
/// le64 | enumerated {items} le32.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CtlInfo {
    pub hda_fn_nid: u32,
    pub role: u32,
    pub ctype: u32,
    pub access: u32,
    pub count: u32,
    pub index: u32,
    pub name: String,
    pub min: i64,
    pub max: i64,
    pub step: i64,
    /// For ENUMERATED controls.
    pub items: u32,
}

impl CtlInfo {
    pub fn parse(b: &[u8]) -> CtlInfo {
        let ctype = le32(b, 8);
        let (min, max, step, items) = match ctype {
            CTL_TYPE_INTEGER => (
                le32(b, 72) as i32 as i64,
                le32(b, 76) as i32 as i64,
                le32(b, 80) as i32 as i64,
                0,
            ),
            CTL_TYPE_INTEGER64 => (
                le64(b, 72) as i64,
                le64(b, 80) as i64,
                le64(b, 88) as i64,
                0,
            ),
            CTL_TYPE_ENUMERATED => (0, 0, 0, le32(b, 72)),
            CTL_TYPE_BOOLEAN => (0, 1, 1, 0),
            _ => (0, 0, 0, 0),
        };
        CtlInfo {
            hda_fn_nid: le32(b, 0),
            role: le32(b, 4),
            ctype,
            access: le32(b, 12),
            count: le32(b, 16),
            index: le32(b, 20),
            name: cstr(b.get(24..24 + CTL_NAME_LEN).unwrap_or(&[])),
            min,
            max,
            step,
            items,
        }
    }
}

/// `struct virtio_snd_pcm_hdr`: code, stream_id.
pub fn pcm_hdr(code: u32, stream: u32) -> Vec<u8> {
    let mut v = Vec::with_capacity(PCM_HDR_LEN);
    v.extend_from_slice(&code.to_le_bytes());
    v.extend_from_slice(&stream.to_le_bytes());
    v
}

/// Stream parameters (`struct virtio_snd_pcm_set_params` without the header).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PcmParams {
    pub buffer_bytes: u32,
    pub period_bytes: u32,
    pub features: u32,
    pub channels: u8,
    /// virtio-snd format code.
    pub format: u8,
    /// virtio-snd rate code.
    pub rate: u8,
}

impl PcmParams {
    /// The stream's shape as the format tables of dsproxy-wire describe it.
    pub fn shape(&self) -> Option<dsproxy_wire::PcmShape> {
        Some(dsproxy_wire::PcmShape {
            format: dsproxy_wire::PcmFormat::from_code(self.format)?,
            rate: dsproxy_wire::PcmRate::from_code(self.rate)?,
            channels: self.channels,
        })
    }

    pub fn byte_rate(&self) -> Option<u64> {
        self.shape()?.byte_rate()
    }

    pub fn frame_bytes(&self) -> Option<u32> {
        self.shape()?.frame_bytes()
    }
}

/// `struct virtio_snd_pcm_set_params` (24 bytes): hdr {code @0, stream_id @4},
/// buffer_bytes @8, period_bytes @12, features @16, channels @20, format @21, rate @22, pad.
pub fn set_params(stream: u32, p: &PcmParams) -> Vec<u8> {
    let mut v = pcm_hdr(R_PCM_SET_PARAMS, stream);
    v.extend_from_slice(&p.buffer_bytes.to_le_bytes());
    v.extend_from_slice(&p.period_bytes.to_le_bytes());
    v.extend_from_slice(&p.features.to_le_bytes());
    v.extend_from_slice(&[p.channels, p.format, p.rate, 0]);
    v
}

/// `struct virtio_snd_ctl_hdr`: code, control_id.
pub fn ctl_hdr(code: u32, control: u32) -> Vec<u8> {
    pcm_hdr(code, control)
}

/// A 512-byte `struct virtio_snd_ctl_value` holding `values` as le32 integers (BOOLEAN and
/// INTEGER controls).
pub fn ctl_value_i32(values: &[i32]) -> [u8; CTL_VALUE_LEN] {
    let mut v = [0u8; CTL_VALUE_LEN];
    for (i, x) in values.iter().take(CTL_VALUE_LEN / 4).enumerate() {
        v[i * 4..i * 4 + 4].copy_from_slice(&x.to_le_bytes());
    }
    v
}

/// The first `count` le32 integers of a control value.
pub fn ctl_value_to_i32(b: &[u8], count: usize) -> Vec<i32> {
    (0..count.min(CTL_VALUE_LEN / 4))
        .map(|i| le32(b, i * 4) as i32)
        .collect()
}

/// An event from the event queue.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SndEvent {
    JackConnected { jack: u32 },
    JackDisconnected { jack: u32 },
    PcmPeriodElapsed { stream: u32 },
    PcmXrun { stream: u32 },
    CtlNotify { control: u16, mask: u16 },
    Unknown { code: u32, data: u32 },
}

impl SndEvent {
    /// `struct virtio_snd_event`: hdr {code @0}, data @4 — or for CTL_NOTIFY,
    /// control_id (le16) @4, mask (le16) @6.
    pub fn parse(b: &[u8]) -> SndEvent {
        let code = le32(b, 0);
        let data = le32(b, 4);
        match code {
            EVT_JACK_CONNECTED => SndEvent::JackConnected { jack: data },
            EVT_JACK_DISCONNECTED => SndEvent::JackDisconnected { jack: data },
            EVT_PCM_PERIOD_ELAPSED => SndEvent::PcmPeriodElapsed { stream: data },
            EVT_PCM_XRUN => SndEvent::PcmXrun { stream: data },
            EVT_CTL_NOTIFY => SndEvent::CtlNotify {
                control: le16(b, 4),
                mask: le16(b, 6),
            },
            _ => SndEvent::Unknown { code, data },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn set_params_layout() {
        let b = set_params(
            3,
            &PcmParams {
                buffer_bytes: 0x1000,
                period_bytes: 0x400,
                features: 0,
                channels: 2,
                format: 5,
                rate: 7,
            },
        );
        assert_eq!(b.len(), SET_PARAMS_LEN);
        assert_eq!(le32(&b, 0), R_PCM_SET_PARAMS);
        assert_eq!(le32(&b, 4), 3);
        assert_eq!(le32(&b, 8), 0x1000);
        assert_eq!(le32(&b, 12), 0x400);
        assert_eq!(&b[20..24], &[2, 5, 7, 0]);
    }

    #[test]
    fn ctl_info_union_is_after_padding() {
        let mut b = vec![0u8; CTL_INFO_LEN];
        b[8..12].copy_from_slice(&CTL_TYPE_INTEGER.to_le_bytes());
        b[24..24 + 6].copy_from_slice(b"Master");
        b[72..76].copy_from_slice(&(-5i32).to_le_bytes());
        b[76..80].copy_from_slice(&100i32.to_le_bytes());
        b[80..84].copy_from_slice(&1i32.to_le_bytes());
        let i = CtlInfo::parse(&b);
        assert_eq!(i.name, "Master");
        assert_eq!((i.min, i.max, i.step), (-5, 100, 1));
    }

    #[test]
    fn ctl_notify_event() {
        let mut b = [0u8; 8];
        b[0..4].copy_from_slice(&EVT_CTL_NOTIFY.to_le_bytes());
        b[4..6].copy_from_slice(&7u16.to_le_bytes());
        b[6..8].copy_from_slice(&1u16.to_le_bytes());
        assert_eq!(
            SndEvent::parse(&b),
            SndEvent::CtlNotify {
                control: 7,
                mask: 1
            }
        );
    }

    #[test]
    fn value_round_trip() {
        let v = ctl_value_i32(&[1, -2, 3]);
        assert_eq!(ctl_value_to_i32(&v, 3), vec![1, -2, 3]);
    }
}
