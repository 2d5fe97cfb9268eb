//! Jacks: one per stream (none with `--profile aero`), always connected (JACK_INFO), not
//! remappable (JACK_REMAP).

use dsproxy_wire::record::Direction;

use crate::config::CardConfig;
use crate::error::RequestError;
use crate::spec::{size, LeBuf};

/// HDA pin default configuration of an output jack: jack connectivity, external rear,
/// line out, 1/8" stereo, green, association 1.
const DEFCONF_LINE_OUT: u32 = 0x0101_4010;
/// ... of an input jack: line in, blue, association 2.
const DEFCONF_LINE_IN: u32 = 0x0181_3020;
/// HDA pin capabilities: presence detect (bit 2) plus output (bit 4) or input (bit 5).
const CAPS_OUT: u32 = 0x14;
const CAPS_IN: u32 = 0x24;

/// The `virtio_snd_jack_info` of jack `id`.
pub fn info_bytes(cfg: &CardConfig, id: u32) -> Result<Vec<u8>, RequestError> {
    if id >= cfg.jacks() {
        return Err(RequestError::UnknownJack(id));
    }
    let dir = cfg
        .stream_direction(id)
        .ok_or(RequestError::UnknownJack(id))?;
    let (defconf, caps) = match dir {
        Direction::Output => (DEFCONF_LINE_OUT, CAPS_OUT),
        Direction::Input => (DEFCONF_LINE_IN, CAPS_IN),
    };
    let mut b = LeBuf::with_capacity(size::JACK_INFO);
    b.u32(cfg.stream_nid(id))
        .u32(0) // features: no remapping
        .u32(defconf)
        .u32(caps)
        .u8(1) // connected
        .zeros(7);
    Ok(b.into_vec())
}

/// JACK_REMAP: the card does not offer VIRTIO_SND_JACK_F_REMAP.
pub fn remap(cfg: &CardConfig, id: u32) -> Result<(), RequestError> {
    if id >= cfg.jacks() {
        return Err(RequestError::UnknownJack(id));
    }
    Err(RequestError::NotSupported("jack remapping"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jack_info_layout() {
        let cfg = CardConfig::default();
        let j = info_bytes(&cfg, 1).unwrap();
        assert_eq!(j.len(), 24);
        assert_eq!(&j[0..4], &0u32.to_le_bytes()); // input 0 shares nid 0 with output 0
        assert_eq!(&j[8..12], &DEFCONF_LINE_IN.to_le_bytes());
        assert_eq!(j[16], 1);
        assert!(info_bytes(&cfg, 2).is_err());
        assert!(matches!(remap(&cfg, 0), Err(RequestError::NotSupported(_))));
        assert!(matches!(remap(&cfg, 7), Err(RequestError::UnknownJack(7))));
    }
}
