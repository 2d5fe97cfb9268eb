//! Channel maps: one per stream, the standard positions for its largest channel count.

use dsproxy_wire::record::Direction;

use crate::config::CardConfig;
use crate::error::RequestError;
use crate::spec::{chmap_pos as p, size, LeBuf, CHMAP_MAX_SIZE, D_INPUT, D_OUTPUT};

/// The conventional layout of `channels` channels (ALSA's, as WAVE_FORMAT_EXTENSIBLE orders
/// them up to 7.1).
pub fn standard_positions(channels: u8) -> [u8; CHMAP_MAX_SIZE] {
    let layout: &[u8] = match channels {
        1 => &[p::MONO],
        2 => &[p::FL, p::FR],
        3 => &[p::FL, p::FR, p::LFE],
        4 => &[p::FL, p::FR, p::RL, p::RR],
        5 => &[p::FL, p::FR, p::RL, p::RR, p::FC],
        6 => &[p::FL, p::FR, p::RL, p::RR, p::FC, p::LFE],
        7 => &[p::FL, p::FR, p::RL, p::RR, p::FC, p::LFE, p::RC],
        8 => &[p::FL, p::FR, p::RL, p::RR, p::FC, p::LFE, p::SL, p::SR],
        _ => &[],
    };
    let mut pos = [p::NONE; CHMAP_MAX_SIZE];
    pos[..layout.len()].copy_from_slice(layout);
    pos
}

/// The `virtio_snd_chmap_info` of chmap `id` (which belongs to stream `id`).
pub fn info_bytes(cfg: &CardConfig, id: u32) -> Result<Vec<u8>, RequestError> {
    let dir = cfg.stream_direction(id).ok_or(RequestError::BadQuery {
        start: id,
        count: 1,
        items: cfg.num_streams(),
        size: size::CHMAP_INFO as u32,
        min: size::CHMAP_INFO as u32,
    })?;
    let channels = cfg.channels_max(id);
    let mut b = LeBuf::with_capacity(size::CHMAP_INFO);
    b.u32(cfg.stream_nid(id))
        .u8(match dir {
            Direction::Output => D_OUTPUT,
            Direction::Input => D_INPUT,
        })
        .u8(channels)
        .bytes(&standard_positions(channels));
    Ok(b.into_vec())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layouts() {
        assert_eq!(&standard_positions(2)[..3], &[p::FL, p::FR, p::NONE]);
        assert_eq!(standard_positions(8)[7], p::SR);
        let cfg = CardConfig::default();
        let c = info_bytes(&cfg, 0).unwrap();
        assert_eq!(c.len(), 24);
        assert_eq!(c[4], D_OUTPUT);
        assert_eq!(c[5], 8);
        assert_eq!(c[6], p::FL);
        let c = info_bytes(&cfg, 1).unwrap();
        assert_eq!((c[4], c[5]), (D_INPUT, 2));
    }
}
