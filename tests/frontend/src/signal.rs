//! Deterministic test signals.

use dsproxy_wire::{PcmFormat, PcmShape};

/// `len` pseudo-random bytes from a 64-bit LCG (Knuth's MMIX constants): the same seed gives
/// the same bytes everywhere, and every byte value occurs, so a capture that drops, repeats
/// or reorders anything does not match.
pub fn lcg_bytes(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed ^ 0x9e37_79b9_7f4a_7c15;
    let mut out = Vec::with_capacity(len);
    while out.len() < len {
        x = x
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        let w = (x >> 32) as u32;
        for b in w.to_le_bytes() {
            if out.len() < len {
                out.push(b);
            }
        }
    }
    out
}

/// `frames` frames of silence in `shape` (the format's silence byte).
pub fn silence(shape: &PcmShape, frames: usize) -> Vec<u8> {
    let fb = shape.frame_bytes().unwrap_or(1) as usize;
    vec![shape.format.silence_byte(); frames * fb]
}

/// `frames` frames of a sine at `freq` Hz and half full scale on every channel, for the
/// linear integer and float formats; other formats get the LCG signal (still deterministic).
pub fn sine(shape: &PcmShape, freq: f64, frames: usize) -> Vec<u8> {
    let fb = shape.frame_bytes().unwrap_or(1) as usize;
    let rate = shape.rate.hz() as f64;
    let mut out = Vec::with_capacity(frames * fb);
    for i in 0..frames {
        let v = 0.5 * (2.0 * std::f64::consts::PI * freq * i as f64 / rate).sin();
        for _ in 0..shape.channels {
            match shape.format {
                f if f == PcmFormat::U8 => out.push(((v * 127.0) as i32 + 128) as u8),
                f if f == PcmFormat::S8 => out.push((v * 127.0) as i8 as u8),
                f if f == PcmFormat::S16 => {
                    out.extend_from_slice(&((v * 32767.0) as i16).to_le_bytes())
                }
                f if f == PcmFormat::S24 => {
                    out.extend_from_slice(&((v * 8_388_607.0) as i32).to_le_bytes())
                }
                f if f == PcmFormat::S24_3 => {
                    out.extend_from_slice(&((v * 8_388_607.0) as i32).to_le_bytes()[..3])
                }
                f if f == PcmFormat::S32 => {
                    out.extend_from_slice(&((v * 2_147_483_647.0) as i32).to_le_bytes())
                }
                f if f == PcmFormat::FLOAT => out.extend_from_slice(&(v as f32).to_le_bytes()),
                f if f == PcmFormat::FLOAT64 => out.extend_from_slice(&v.to_le_bytes()),
                _ => return lcg_bytes(freq as u64, frames * fb),
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use dsproxy_wire::PcmRate;

    #[test]
    fn lcg_is_deterministic_and_varied() {
        let a = lcg_bytes(1, 4099);
        assert_eq!(a, lcg_bytes(1, 4099));
        assert_ne!(a, lcg_bytes(2, 4099));
        let mut seen = [false; 256];
        for b in &a {
            seen[*b as usize] = true;
        }
        assert!(seen.iter().all(|&s| s));
    }

    #[test]
    fn sine_has_whole_frames() {
        let s = PcmShape {
            format: PcmFormat::S16,
            rate: PcmRate::R48000,
            channels: 2,
        };
        assert_eq!(sine(&s, 440.0, 100).len(), 400);
        let u = PcmShape {
            format: PcmFormat::U8,
            rate: PcmRate::R8000,
            channels: 1,
        };
        let v = sine(&u, 1000.0, 8);
        assert_eq!(v[0], 128);
        assert!(v.iter().any(|&b| b > 160));
        assert_eq!(silence(&u, 3), vec![0x80; 3]);
    }
}
