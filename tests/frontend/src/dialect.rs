//! How a guest driver writes the messages the spec defines: the spec's own encoding, or the
//! aero project's Windows 7 driver's (`dsproxy-device --profile aero`), which differs in
//! status codes, the PCM transfer header and the PCM_INFO request.

use crate::proto::{query_info, PCM_INFO_LEN, R_PCM_INFO, S_BAD_MSG, S_IO_ERR, S_NOT_SUPP, S_OK};

/// A driver's message dialect.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Dialect {
    /// virtio 1.2 §5.14: status codes 0x8000-0x8003, `virtio_snd_pcm_xfer` {le32
    /// stream_id}, `virtio_snd_query_info` {code, start_id, count, size}.
    #[default]
    Spec,
    /// aero's AERO-W7-VIRTIO v1 (drivers/windows7/virtio-snd/include/virtio_snd_proto.h):
    /// status codes 0-3, a PCM header {le32 stream_id, le32 reserved = 0}, and PCM_INFO
    /// requests {code, start_id, count}.
    Aero,
}

impl Dialect {
    /// The value of VIRTIO_SND_S_OK.
    pub fn ok(self) -> u32 {
        self.encode(S_OK)
    }

    pub fn bad_msg(self) -> u32 {
        self.encode(S_BAD_MSG)
    }

    pub fn not_supp(self) -> u32 {
        self.encode(S_NOT_SUPP)
    }

    /// A spec status code as this dialect writes it.
    pub fn encode(self, spec: u32) -> u32 {
        match self {
            Dialect::Spec => spec,
            Dialect::Aero => spec.wrapping_sub(S_OK),
        }
    }

    /// What a status the device wrote means to this dialect's driver: the spec code, or
    /// None for a value it does not know (aero's driver reads 0x8000 as "other").
    pub fn decode(self, raw: u32) -> Option<u32> {
        let spec = match self {
            Dialect::Spec => raw,
            Dialect::Aero => raw.checked_add(S_OK)?,
        };
        (S_OK..=S_IO_ERR).contains(&spec).then_some(spec)
    }

    /// A readable name of a status as this dialect's driver reads it.
    pub fn status_name(self, raw: u32) -> String {
        match self.decode(raw) {
            Some(s) => crate::proto::status_name(s).to_string(),
            None => format!("unknown status {raw:#x}"),
        }
    }

    /// The bytes before a PCM transfer's data.
    pub fn xfer_header(self, stream: u32) -> Vec<u8> {
        let mut v = stream.to_le_bytes().to_vec();
        if self == Dialect::Aero {
            v.extend_from_slice(&0u32.to_le_bytes());
        }
        v
    }

    /// A PCM_INFO request for `count` streams from `start`.
    pub fn pcm_info_request(self, start: u32, count: u32) -> Vec<u8> {
        let mut v = query_info(R_PCM_INFO, start, count, PCM_INFO_LEN as u32);
        if self == Dialect::Aero {
            v.truncate(12);
        }
        v
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_and_headers() {
        assert_eq!(Dialect::Spec.ok(), 0x8000);
        assert_eq!(Dialect::Aero.ok(), 0);
        assert_eq!(Dialect::Aero.bad_msg(), 1);
        assert_eq!(Dialect::Aero.decode(2), Some(S_NOT_SUPP));
        assert_eq!(Dialect::Aero.decode(0x8000), None);
        assert_eq!(Dialect::Spec.decode(0), None);
        assert_eq!(Dialect::Aero.xfer_header(1), vec![1, 0, 0, 0, 0, 0, 0, 0]);
        assert_eq!(Dialect::Spec.xfer_header(1), vec![1, 0, 0, 0]);
        assert_eq!(Dialect::Aero.pcm_info_request(0, 2).len(), 12);
        assert_eq!(Dialect::Spec.pcm_info_request(0, 2).len(), 16);
    }
}
