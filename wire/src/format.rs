//! The PCM format and rate tables: the one place that says what a virtio-snd format or rate
//! code means, how many bytes a sample takes, and which OSS `AFMT_*` value it corresponds to.
//!
//! The codes are those of the virtio-snd specification (virtio 1.2 §5.14.6.6.3), which are
//! also what travels in the tap's `Params` record.

use std::fmt;

/// One row of the format table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FormatInfo {
    /// virtio-snd `VIRTIO_SND_PCM_FMT_*` code.
    pub code: u8,
    /// Short name as ALSA spells it (`S16_LE`, `U8`, …).
    pub name: &'static str,
    /// Significant bits per sample.
    pub bits: u8,
    /// Bytes one sample occupies in the buffer (0 for the 4-bit IMA ADPCM).
    pub bytes: u8,
    /// The OSS `AFMT_*` value, where OSS has one.
    pub oss: Option<u32>,
    /// Whether a WAV file can carry it verbatim, and with which WAVE format tag
    /// (1 PCM, 3 IEEE float, 6 A-law, 7 mu-law).
    pub wave_tag: Option<u16>,
}

/// `AFMT_*` values from `<linux/soundcard.h>` (and OSS 4 for the 24/32-bit ones).
pub mod afmt {
    pub const MU_LAW: u32 = 0x0000_0001;
    pub const A_LAW: u32 = 0x0000_0002;
    pub const IMA_ADPCM: u32 = 0x0000_0004;
    pub const U8: u32 = 0x0000_0008;
    pub const S16_LE: u32 = 0x0000_0010;
    pub const S16_BE: u32 = 0x0000_0020;
    pub const S8: u32 = 0x0000_0040;
    pub const U16_LE: u32 = 0x0000_0080;
    pub const U16_BE: u32 = 0x0000_0100;
    pub const MPEG: u32 = 0x0000_0200;
    pub const AC3: u32 = 0x0000_0400;
    pub const S24_LE: u32 = 0x0000_8000;
    pub const S32_LE: u32 = 0x0000_1000;
    pub const FLOAT: u32 = 0x0000_4000;
    pub const S24_PACKED: u32 = 0x0004_0000;

    /// The `AFMT_*` constant's name, as `<linux/soundcard.h>` spells it.
    pub fn name(v: u32) -> Option<&'static str> {
        Some(match v {
            MU_LAW => "AFMT_MU_LAW",
            A_LAW => "AFMT_A_LAW",
            IMA_ADPCM => "AFMT_IMA_ADPCM",
            U8 => "AFMT_U8",
            S16_LE => "AFMT_S16_LE",
            S16_BE => "AFMT_S16_BE",
            S8 => "AFMT_S8",
            U16_LE => "AFMT_U16_LE",
            U16_BE => "AFMT_U16_BE",
            MPEG => "AFMT_MPEG",
            AC3 => "AFMT_AC3",
            S24_LE => "AFMT_S24_LE",
            S32_LE => "AFMT_S32_LE",
            FLOAT => "AFMT_FLOAT",
            S24_PACKED => "AFMT_S24_PACKED",
            _ => return None,
        })
    }
}

/// The virtio-snd format table, indexed by code.
pub const FORMATS: [FormatInfo; 25] = [
    fi(0, "IMA_ADPCM", 4, 0, Some(afmt::IMA_ADPCM), None),
    fi(1, "MU_LAW", 8, 1, Some(afmt::MU_LAW), Some(7)),
    fi(2, "A_LAW", 8, 1, Some(afmt::A_LAW), Some(6)),
    fi(3, "S8", 8, 1, Some(afmt::S8), None),
    fi(4, "U8", 8, 1, Some(afmt::U8), Some(1)),
    fi(5, "S16_LE", 16, 2, Some(afmt::S16_LE), Some(1)),
    fi(6, "U16_LE", 16, 2, Some(afmt::U16_LE), None),
    fi(7, "S18_3LE", 18, 3, None, None),
    fi(8, "U18_3LE", 18, 3, None, None),
    fi(9, "S20_3LE", 20, 3, None, None),
    fi(10, "U20_3LE", 20, 3, None, None),
    fi(11, "S24_3LE", 24, 3, Some(afmt::S24_PACKED), Some(1)),
    fi(12, "U24_3LE", 24, 3, None, None),
    fi(13, "S20_LE", 20, 4, None, None),
    fi(14, "U20_LE", 20, 4, None, None),
    fi(15, "S24_LE", 24, 4, Some(afmt::S24_LE), None),
    fi(16, "U24_LE", 24, 4, None, None),
    fi(17, "S32_LE", 32, 4, Some(afmt::S32_LE), Some(1)),
    fi(18, "U32_LE", 32, 4, None, None),
    fi(19, "FLOAT_LE", 32, 4, Some(afmt::FLOAT), Some(3)),
    fi(20, "FLOAT64_LE", 64, 8, None, Some(3)),
    fi(21, "DSD_U8", 8, 1, None, None),
    fi(22, "DSD_U16_LE", 16, 2, None, None),
    fi(23, "DSD_U32_LE", 32, 4, None, None),
    fi(24, "IEC958_SUBFRAME_LE", 32, 4, None, None),
];

const fn fi(
    code: u8,
    name: &'static str,
    bits: u8,
    bytes: u8,
    oss: Option<u32>,
    wave_tag: Option<u16>,
) -> FormatInfo {
    FormatInfo {
        code,
        name,
        bits,
        bytes,
        oss,
        wave_tag,
    }
}

/// A virtio-snd PCM format code that is known to the table.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct PcmFormat(u8);

impl PcmFormat {
    pub const MU_LAW: PcmFormat = PcmFormat(1);
    pub const A_LAW: PcmFormat = PcmFormat(2);
    pub const S8: PcmFormat = PcmFormat(3);
    pub const U8: PcmFormat = PcmFormat(4);
    pub const S16: PcmFormat = PcmFormat(5);
    pub const U16: PcmFormat = PcmFormat(6);
    pub const S24_3: PcmFormat = PcmFormat(11);
    pub const S24: PcmFormat = PcmFormat(15);
    pub const S32: PcmFormat = PcmFormat(17);
    pub const FLOAT: PcmFormat = PcmFormat(19);
    pub const FLOAT64: PcmFormat = PcmFormat(20);

    /// The format for a virtio-snd code, if the code is defined.
    pub fn from_code(code: u8) -> Option<PcmFormat> {
        ((code as usize) < FORMATS.len()).then_some(PcmFormat(code))
    }

    /// The format for an OSS `AFMT_*` value, if it maps to one.
    pub fn from_oss(afmt: u32) -> Option<PcmFormat> {
        FORMATS
            .iter()
            .find(|f| f.oss == Some(afmt))
            .map(|f| PcmFormat(f.code))
    }

    /// The format for an ALSA-style name (`S16_LE`, `u8`, …), case-insensitively; `S16`,
    /// `S24`, `S32`, `FLOAT` without the `_LE` are accepted too.
    pub fn from_name(name: &str) -> Option<PcmFormat> {
        let up = name.to_ascii_uppercase();
        FORMATS
            .iter()
            .find(|f| f.name == up || f.name.strip_suffix("_LE") == Some(up.as_str()))
            .map(|f| PcmFormat(f.code))
    }

    pub fn code(self) -> u8 {
        self.0
    }

    pub fn info(self) -> &'static FormatInfo {
        &FORMATS[self.0 as usize]
    }

    /// Bytes per sample in the buffer; `None` for formats that are not byte-addressed
    /// (IMA ADPCM), which the device does not offer.
    pub fn sample_bytes(self) -> Option<u32> {
        match self.info().bytes {
            0 => None,
            b => Some(b as u32),
        }
    }

    /// The byte value a buffer of silence is filled with (unsigned formats center on 0x80,
    /// the companded ones encode zero as 0xff / 0xd5).
    pub fn silence_byte(self) -> u8 {
        match self.0 {
            1 => 0xff,
            2 => 0xd5,
            4 => 0x80,
            _ => 0,
        }
    }

    /// The bit in a virtio-snd `formats` mask.
    pub fn mask_bit(self) -> u64 {
        1u64 << self.0
    }
}

impl fmt::Display for PcmFormat {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.info().name)
    }
}

impl fmt::Debug for PcmFormat {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PcmFormat({})", self.info().name)
    }
}

/// The virtio-snd rate table, indexed by `VIRTIO_SND_PCM_RATE_*` code.
pub const RATES: [u32; 14] = [
    5512, 8000, 11025, 16000, 22050, 32000, 44100, 48000, 64000, 88200, 96000, 176400, 192000,
    384000,
];

/// A virtio-snd PCM rate code that is known to the table.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct PcmRate(u8);

impl PcmRate {
    pub const R8000: PcmRate = PcmRate(1);
    pub const R44100: PcmRate = PcmRate(6);
    pub const R48000: PcmRate = PcmRate(7);
    pub const R192000: PcmRate = PcmRate(12);

    pub fn from_code(code: u8) -> Option<PcmRate> {
        ((code as usize) < RATES.len()).then_some(PcmRate(code))
    }

    /// The rate for an exact frequency in Hz.
    pub fn from_hz(hz: u32) -> Option<PcmRate> {
        RATES
            .iter()
            .position(|&r| r == hz)
            .map(|i| PcmRate(i as u8))
    }

    /// The rate among those in `mask` (a virtio-snd `rates` mask) closest to `hz`, as OSS's
    /// SNDCTL_DSP_SPEED does: it picks a rate the hardware has and returns it.
    pub fn nearest_in_mask(hz: u32, mask: u64) -> Option<PcmRate> {
        RATES
            .iter()
            .enumerate()
            .filter(|(i, _)| mask & (1u64 << i) != 0)
            .min_by_key(|(_, &r)| (r as i64 - hz as i64).unsigned_abs())
            .map(|(i, _)| PcmRate(i as u8))
    }

    pub fn code(self) -> u8 {
        self.0
    }

    pub fn hz(self) -> u32 {
        RATES[self.0 as usize]
    }

    pub fn mask_bit(self) -> u64 {
        1u64 << self.0
    }
}

impl fmt::Display for PcmRate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} Hz", self.hz())
    }
}

impl fmt::Debug for PcmRate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PcmRate({})", self.hz())
    }
}

/// The shape of a PCM stream: what a frame is and how fast frames go.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PcmShape {
    pub format: PcmFormat,
    pub rate: PcmRate,
    pub channels: u8,
}

impl PcmShape {
    /// Bytes per frame (all channels of one sample instant); `None` if the format has no
    /// byte size or there are no channels.
    pub fn frame_bytes(&self) -> Option<u32> {
        let s = self.format.sample_bytes()?;
        (self.channels > 0).then(|| s * self.channels as u32)
    }

    /// Bytes per second at this shape.
    pub fn byte_rate(&self) -> Option<u64> {
        Some(self.frame_bytes()? as u64 * self.rate.hz() as u64)
    }

    /// Nanoseconds that `bytes` of audio last at this shape (rounded down).
    pub fn bytes_to_ns(&self, bytes: u64) -> Option<u64> {
        let br = self.byte_rate()?;
        Some(((bytes as u128 * 1_000_000_000u128) / br as u128) as u64)
    }
}

impl fmt::Display for PcmShape {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} Hz {} {}ch",
            self.rate.hz(),
            self.format,
            self.channels
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_is_indexed_by_code() {
        for (i, f) in FORMATS.iter().enumerate() {
            assert_eq!(f.code as usize, i, "{}", f.name);
        }
    }

    #[test]
    fn oss_round_trip() {
        for f in FORMATS.iter() {
            if let Some(a) = f.oss {
                assert_eq!(PcmFormat::from_oss(a).unwrap().code(), f.code);
            }
        }
        assert_eq!(PcmFormat::from_oss(afmt::S16_LE), Some(PcmFormat::S16));
        assert_eq!(PcmFormat::from_oss(afmt::S16_BE), None);
    }

    #[test]
    fn names() {
        assert_eq!(PcmFormat::from_name("s16_le"), Some(PcmFormat::S16));
        assert_eq!(PcmFormat::from_name("S16"), Some(PcmFormat::S16));
        assert_eq!(PcmFormat::from_name("float"), Some(PcmFormat::FLOAT));
        assert_eq!(PcmFormat::from_name("u8"), Some(PcmFormat::U8));
        assert_eq!(PcmFormat::from_name("nope"), None);
        assert_eq!(PcmFormat::from_code(25), None);
    }

    #[test]
    fn rates() {
        assert_eq!(PcmRate::from_hz(44100), Some(PcmRate::R44100));
        assert_eq!(PcmRate::from_hz(44101), None);
        let mask = PcmRate::R8000.mask_bit() | PcmRate::R48000.mask_bit();
        assert_eq!(PcmRate::nearest_in_mask(44100, mask), Some(PcmRate::R48000));
        assert_eq!(PcmRate::nearest_in_mask(9000, mask), Some(PcmRate::R8000));
        assert_eq!(PcmRate::nearest_in_mask(9000, 0), None);
    }

    #[test]
    fn shape_arithmetic() {
        let s = PcmShape {
            format: PcmFormat::S16,
            rate: PcmRate::R48000,
            channels: 2,
        };
        assert_eq!(s.frame_bytes(), Some(4));
        assert_eq!(s.byte_rate(), Some(192_000));
        assert_eq!(s.bytes_to_ns(192_000), Some(1_000_000_000));
        let adpcm = PcmShape {
            format: PcmFormat::from_code(0).unwrap(),
            ..s
        };
        assert_eq!(adpcm.frame_bytes(), None);
        assert_eq!(PcmFormat::U8.silence_byte(), 0x80);
    }
}
