//! WAV files: a writer that keeps its header valid while it records, and a parser for
//! `--inject`.
//!
//! Layout the writer produces (all sizes little-endian):
//!
//! ```text
//! RIFF <size> WAVE
//! JUNK <28> 28 zero bytes        ← reserved: becomes "ds64" if the file passes 4 GiB
//! fmt  <16|18|40> …              ← PCM, IEEE float, A-law or mu-law; EXTENSIBLE when needed
//! fact <4> <frames>              ← only for non-PCM formats (float, A-law, mu-law)
//! data <size> the guest's bytes, verbatim
//! ```
//!
//! The sizes are rewritten every [`DEFAULT_PATCH_INTERVAL`] and when the file is finalized, so
//! a reader killed with SIGKILL leaves a file whose header covers everything up to the last
//! patch. When the RIFF size would pass 4 GiB the file is turned, in place, into an RF64 file
//! (EBU Tech 3306): the magic becomes `RF64`, the 32-bit sizes become 0xFFFFFFFF and the JUNK
//! chunk becomes the `ds64` chunk carrying the 64-bit sizes.

use std::io::{self, Read, Seek, SeekFrom, Write};
use std::time::{Duration, Instant};

use dsproxy_wire::PcmFormat;
use thiserror::Error;

use crate::convert::AudioShape;

/// How often a recording's header is brought up to date.
pub const DEFAULT_PATCH_INTERVAL: Duration = Duration::from_secs(1);

pub const WAVE_FORMAT_PCM: u16 = 1;
pub const WAVE_FORMAT_IEEE_FLOAT: u16 = 3;
pub const WAVE_FORMAT_ALAW: u16 = 6;
pub const WAVE_FORMAT_MULAW: u16 = 7;
pub const WAVE_FORMAT_EXTENSIBLE: u16 = 0xfffe;

/// The tail shared by the KSDATAFORMAT_SUBTYPE_* GUIDs; the first two bytes are the tag.
const GUID_TAIL: [u8; 14] = [
    0x00, 0x00, 0x00, 0x00, 0x10, 0x00, 0x80, 0x00, 0x00, 0xaa, 0x00, 0x38, 0x9b, 0x71,
];

/// Payload bytes of the ds64 chunk without a table: riff, data and sample counts + table len.
const DS64_LEN: u32 = 28;

#[derive(Debug, Error)]
pub enum WavError {
    #[error("a WAV file cannot carry {0} audio verbatim; record it raw instead (e.g. -f out.pcm)")]
    Unsupported(PcmFormat),
    #[error("a WAV file cannot describe a stream with {0} channels")]
    Channels(u16),
    #[error("{0}")]
    Io(#[from] io::Error),
    #[error("not a usable WAV file: {0}")]
    Parse(&'static str),
}

/// What the `fmt ` chunk says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WavSpec {
    /// WAVE_FORMAT_PCM, _IEEE_FLOAT, _ALAW or _MULAW (the subformat when extensible).
    pub tag: u16,
    pub channels: u16,
    pub sample_rate: u32,
    /// Bits each sample occupies.
    pub container_bits: u16,
    /// Significant bits (equal to the container for everything the writer produces).
    pub valid_bits: u16,
    /// Written as WAVE_FORMAT_EXTENSIBLE.
    pub extensible: bool,
}

impl WavSpec {
    /// The spec for recording a stream verbatim, or why a WAV file cannot hold it (the
    /// format table in dsproxy-wire says which formats have a WAVE tag). EXTENSIBLE is used
    /// for more than two channels and for integer PCM wider than 16 bits, as Microsoft's
    /// WAVEFORMATEXTENSIBLE guidance asks.
    pub fn for_shape(shape: AudioShape) -> Result<WavSpec, WavError> {
        let info = shape.format.info();
        let tag = info.wave_tag.ok_or(WavError::Unsupported(shape.format))?;
        if shape.channels == 0 {
            return Err(WavError::Channels(0));
        }
        let bits = info.bytes as u16 * 8;
        Ok(WavSpec {
            tag,
            channels: shape.channels,
            sample_rate: shape.rate_hz,
            container_bits: bits,
            valid_bits: info.bits as u16,
            extensible: shape.channels > 2 || (tag == WAVE_FORMAT_PCM && bits > 16),
        })
    }

    pub fn block_align(&self) -> u16 {
        self.channels * (self.container_bits / 8)
    }

    pub fn byte_rate(&self) -> u32 {
        self.sample_rate.saturating_mul(self.block_align() as u32)
    }

    /// Everything but integer PCM needs a `fact` chunk (frames count).
    fn needs_fact(&self) -> bool {
        self.tag != WAVE_FORMAT_PCM
    }

    /// Speaker mask for EXTENSIBLE: front centre for mono, front left/right for stereo, and
    /// none ("not assigned") beyond that, because the guest's channel order (ALSA's) is not
    /// the WAVE order and the tap does not say which speakers the guest meant.
    fn channel_mask(&self) -> u32 {
        match self.channels {
            1 => 0x4,
            2 => 0x3,
            _ => 0,
        }
    }

    /// The `fmt ` chunk payload.
    fn fmt_payload(&self) -> Vec<u8> {
        let mut p = Vec::with_capacity(40);
        let tag = if self.extensible {
            WAVE_FORMAT_EXTENSIBLE
        } else {
            self.tag
        };
        p.extend_from_slice(&tag.to_le_bytes());
        p.extend_from_slice(&self.channels.to_le_bytes());
        p.extend_from_slice(&self.sample_rate.to_le_bytes());
        p.extend_from_slice(&self.byte_rate().to_le_bytes());
        p.extend_from_slice(&self.block_align().to_le_bytes());
        p.extend_from_slice(&self.container_bits.to_le_bytes());
        if self.extensible {
            p.extend_from_slice(&22u16.to_le_bytes());
            p.extend_from_slice(&self.valid_bits.to_le_bytes());
            p.extend_from_slice(&self.channel_mask().to_le_bytes());
            p.extend_from_slice(&self.tag.to_le_bytes());
            p.extend_from_slice(&GUID_TAIL);
        } else if self.tag != WAVE_FORMAT_PCM {
            // WAVEFORMATEX: non-PCM formats carry cbSize.
            p.extend_from_slice(&0u16.to_le_bytes());
        }
        p
    }
}

/// Writes a WAV file to `W`, keeping the header valid as it goes. The caller buffers `W`
/// (a `BufWriter<File>`); the writer seeks only to patch the header.
pub struct WavWriter<W: Write + Seek> {
    out: W,
    spec: WavSpec,
    /// Bytes before the audio (the header).
    header_len: u64,
    fact_pos: Option<u64>,
    data_size_pos: u64,
    data_bytes: u64,
    rf64: bool,
    patch_interval: Duration,
    last_patch: Instant,
    /// The header on disk is up to date with `data_bytes`.
    clean: bool,
}

impl<W: Write + Seek> WavWriter<W> {
    /// Writes the header at the start of `out`.
    pub fn new(mut out: W, spec: WavSpec) -> io::Result<WavWriter<W>> {
        let fmt = spec.fmt_payload();
        let mut h = Vec::with_capacity(128);
        h.extend_from_slice(b"RIFF");
        h.extend_from_slice(&0u32.to_le_bytes());
        h.extend_from_slice(b"WAVE");
        h.extend_from_slice(b"JUNK");
        h.extend_from_slice(&DS64_LEN.to_le_bytes());
        h.extend_from_slice(&[0u8; DS64_LEN as usize]);
        h.extend_from_slice(b"fmt ");
        h.extend_from_slice(&(fmt.len() as u32).to_le_bytes());
        h.extend_from_slice(&fmt);
        let fact_pos = if spec.needs_fact() {
            h.extend_from_slice(b"fact");
            h.extend_from_slice(&4u32.to_le_bytes());
            let pos = h.len() as u64;
            h.extend_from_slice(&0u32.to_le_bytes());
            Some(pos)
        } else {
            None
        };
        h.extend_from_slice(b"data");
        let data_size_pos = h.len() as u64;
        h.extend_from_slice(&0u32.to_le_bytes());
        let header_len = h.len() as u64;
        out.seek(SeekFrom::Start(0))?;
        out.write_all(&h)?;
        let mut w = WavWriter {
            out,
            spec,
            header_len,
            fact_pos,
            data_size_pos,
            data_bytes: 0,
            rf64: false,
            patch_interval: DEFAULT_PATCH_INTERVAL,
            last_patch: Instant::now(),
            clean: false,
        };
        w.patch_header(false)?;
        Ok(w)
    }

    /// Changes how often [`WavWriter::sync_if_due`] patches the header.
    pub fn set_patch_interval(&mut self, d: Duration) {
        self.patch_interval = d;
    }

    pub fn spec(&self) -> WavSpec {
        self.spec
    }

    /// Audio bytes written so far.
    pub fn data_bytes(&self) -> u64 {
        self.data_bytes
    }

    pub fn header_len(&self) -> u64 {
        self.header_len
    }

    pub fn is_rf64(&self) -> bool {
        self.rf64
    }

    /// Appends audio bytes.
    pub fn write(&mut self, data: &[u8]) -> io::Result<()> {
        self.grow_to(self.data_bytes + data.len() as u64)?;
        self.out.write_all(data)?;
        self.data_bytes += data.len() as u64;
        self.clean = false;
        Ok(())
    }

    /// Upgrades to RF64 before the RIFF size (header, data and a possible pad byte) would
    /// stop fitting in 32 bits.
    fn grow_to(&mut self, data_bytes: u64) -> io::Result<()> {
        if !self.rf64 && self.header_len - 8 + data_bytes + 1 > u32::MAX as u64 {
            self.rf64 = true;
            self.patch_header(false)?;
        }
        Ok(())
    }

    /// Brings the header up to date if the patch interval has passed; returns whether it did.
    pub fn sync_if_due(&mut self) -> io::Result<bool> {
        if self.clean || self.last_patch.elapsed() < self.patch_interval {
            return Ok(false);
        }
        self.sync()?;
        Ok(true)
    }

    /// Brings the header up to date and hands everything to the OS (not fsync: the point is
    /// surviving the death of this process, and the kernel still has the pages).
    pub fn sync(&mut self) -> io::Result<()> {
        self.patch_header(false)?;
        self.out.flush()
    }

    /// Hands buffered audio to the OS without touching the header.
    pub fn flush(&mut self) -> io::Result<()> {
        self.out.flush()
    }

    /// Pads the data chunk to an even length, writes the final sizes and returns the sink.
    pub fn finalize(mut self) -> io::Result<W> {
        let pad = self.data_bytes % 2 == 1;
        if pad {
            self.grow_to(self.data_bytes + 1)?;
            self.out.write_all(&[0])?;
        }
        self.patch_header(pad)?;
        self.out.flush()?;
        Ok(self.out)
    }

    fn patch_header(&mut self, padded: bool) -> io::Result<()> {
        let riff_size = self.header_len - 8 + self.data_bytes + padded as u64;
        let frames = self.data_bytes / self.spec.block_align().max(1) as u64;
        let end = self.header_len + self.data_bytes + padded as u64;
        if self.rf64 {
            self.put(0, b"RF64")?;
            self.put(4, &u32::MAX.to_le_bytes())?;
            let mut ds64 = Vec::with_capacity(36);
            ds64.extend_from_slice(b"ds64");
            ds64.extend_from_slice(&DS64_LEN.to_le_bytes());
            ds64.extend_from_slice(&riff_size.to_le_bytes());
            ds64.extend_from_slice(&self.data_bytes.to_le_bytes());
            ds64.extend_from_slice(&frames.to_le_bytes());
            ds64.extend_from_slice(&0u32.to_le_bytes());
            self.put(12, &ds64)?;
            if let Some(p) = self.fact_pos {
                self.put(p, &u32::MAX.to_le_bytes())?;
            }
            self.put(self.data_size_pos, &u32::MAX.to_le_bytes())?;
        } else {
            self.put(4, &(riff_size as u32).to_le_bytes())?;
            if let Some(p) = self.fact_pos {
                self.put(p, &(frames as u32).to_le_bytes())?;
            }
            self.put(self.data_size_pos, &(self.data_bytes as u32).to_le_bytes())?;
        }
        self.out.seek(SeekFrom::Start(end))?;
        self.last_patch = Instant::now();
        self.clean = true;
        Ok(())
    }

    fn put(&mut self, pos: u64, bytes: &[u8]) -> io::Result<()> {
        self.out.seek(SeekFrom::Start(pos))?;
        self.out.write_all(bytes)
    }
}

/// What [`parse`] found in a WAV file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WavInfo {
    pub spec: WavSpec,
    pub rf64: bool,
    /// Where the audio starts.
    pub data_offset: u64,
    /// Audio bytes (clamped to what the file holds, so a file from a killed recorder reads).
    pub data_len: u64,
}

impl WavInfo {
    /// The sample format of the data, if it is one of those the reader can convert.
    pub fn shape(&self) -> Result<AudioShape, WavError> {
        let s = &self.spec;
        let format = match (s.tag, s.container_bits) {
            (WAVE_FORMAT_PCM, 8) => PcmFormat::U8,
            (WAVE_FORMAT_PCM, 16) => PcmFormat::S16,
            (WAVE_FORMAT_PCM, 24) => PcmFormat::S24_3,
            // Samples are left-justified in WAV, so 24-in-32 reads as S32.
            (WAVE_FORMAT_PCM, 32) => PcmFormat::S32,
            (WAVE_FORMAT_IEEE_FLOAT, 32) => PcmFormat::FLOAT,
            (WAVE_FORMAT_IEEE_FLOAT, 64) => PcmFormat::FLOAT64,
            (WAVE_FORMAT_ALAW, 8) => PcmFormat::A_LAW,
            (WAVE_FORMAT_MULAW, 8) => PcmFormat::MU_LAW,
            _ => return Err(WavError::Parse("unsupported sample format")),
        };
        if s.channels == 0 || s.sample_rate == 0 {
            return Err(WavError::Parse("no channels or a zero sample rate"));
        }
        Ok(AudioShape {
            format,
            rate_hz: s.sample_rate,
            channels: s.channels,
        })
    }
}

/// Reads the header of a RIFF/WAVE or RF64 file and finds its audio.
pub fn parse<R: Read + Seek>(r: &mut R) -> Result<WavInfo, WavError> {
    let file_len = r.seek(SeekFrom::End(0))?;
    r.seek(SeekFrom::Start(0))?;
    let mut head = [0u8; 12];
    r.read_exact(&mut head)
        .map_err(|_| WavError::Parse("shorter than a RIFF header"))?;
    let rf64 = match &head[0..4] {
        b"RIFF" => false,
        b"RF64" => true,
        _ => return Err(WavError::Parse("no RIFF or RF64 magic")),
    };
    if &head[8..12] != b"WAVE" {
        return Err(WavError::Parse("RIFF file is not WAVE"));
    }
    let mut pos = 12u64;
    let mut ds64_data: Option<u64> = None;
    let mut spec: Option<WavSpec> = None;
    loop {
        let mut ch = [0u8; 8];
        r.seek(SeekFrom::Start(pos))?;
        if r.read_exact(&mut ch).is_err() {
            return Err(WavError::Parse("no data chunk"));
        }
        let id = [ch[0], ch[1], ch[2], ch[3]];
        let size = u32::from_le_bytes([ch[4], ch[5], ch[6], ch[7]]) as u64;
        let body = pos + 8;
        match &id {
            b"ds64" => {
                if size < 24 {
                    return Err(WavError::Parse("ds64 chunk too short"));
                }
                let mut b = [0u8; 24];
                r.read_exact(&mut b)
                    .map_err(|_| WavError::Parse("ds64 chunk truncated"))?;
                ds64_data = Some(u64::from_le_bytes(b[8..16].try_into().expect("8 bytes")));
            }
            b"fmt " => {
                if !(16..=1024).contains(&size) {
                    return Err(WavError::Parse("fmt chunk has a bad size"));
                }
                let mut b = vec![0u8; size as usize];
                r.read_exact(&mut b)
                    .map_err(|_| WavError::Parse("fmt chunk truncated"))?;
                spec = Some(parse_fmt(&b)?);
            }
            b"data" => {
                let spec = spec.ok_or(WavError::Parse("data chunk before fmt chunk"))?;
                let declared = match (rf64, ds64_data) {
                    (true, Some(d)) if size == u32::MAX as u64 => d,
                    _ => size,
                };
                let avail = file_len.saturating_sub(body);
                return Ok(WavInfo {
                    spec,
                    rf64,
                    data_offset: body,
                    data_len: declared.min(avail),
                });
            }
            _ => {}
        }
        pos = body + size + (size & 1);
    }
}

fn parse_fmt(b: &[u8]) -> Result<WavSpec, WavError> {
    let u16_at = |i: usize| u16::from_le_bytes([b[i], b[i + 1]]);
    let u32_at = |i: usize| u32::from_le_bytes([b[i], b[i + 1], b[i + 2], b[i + 3]]);
    let mut tag = u16_at(0);
    let channels = u16_at(2);
    let sample_rate = u32_at(4);
    let container_bits = u16_at(14);
    let mut valid_bits = container_bits;
    let extensible = tag == WAVE_FORMAT_EXTENSIBLE;
    if extensible {
        if b.len() < 40 {
            return Err(WavError::Parse("EXTENSIBLE fmt chunk too short"));
        }
        valid_bits = u16_at(18);
        if b[26..40] != GUID_TAIL {
            return Err(WavError::Parse("unknown EXTENSIBLE subformat"));
        }
        tag = u16_at(24);
    }
    if container_bits == 0 || container_bits % 8 != 0 {
        return Err(WavError::Parse("sample size is not whole bytes"));
    }
    Ok(WavSpec {
        tag,
        channels,
        sample_rate,
        container_bits,
        valid_bits,
        extensible,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Cursor;

    fn shape(format: PcmFormat, rate_hz: u32, channels: u16) -> AudioShape {
        AudioShape {
            format,
            rate_hz,
            channels,
        }
    }

    fn le16(v: u16) -> [u8; 2] {
        v.to_le_bytes()
    }
    fn le32(v: u32) -> [u8; 4] {
        v.to_le_bytes()
    }

    fn junk() -> Vec<u8> {
        let mut v = b"JUNK".to_vec();
        v.extend_from_slice(&le32(28));
        v.extend_from_slice(&[0; 28]);
        v
    }

    fn record(shape: AudioShape, data: &[u8]) -> Vec<u8> {
        let spec = WavSpec::for_shape(shape).unwrap();
        let mut w = WavWriter::new(Cursor::new(Vec::new()), spec).unwrap();
        w.write(data).unwrap();
        w.finalize().unwrap().into_inner()
    }

    #[test]
    fn s16_stereo_header_is_byte_exact() {
        let file = record(shape(PcmFormat::S16, 44100, 2), &[1, 2, 3, 4, 5, 6, 7, 8]);
        let mut want = b"RIFF".to_vec();
        want.extend_from_slice(&le32(80 - 8 + 8));
        want.extend_from_slice(b"WAVE");
        want.extend_from_slice(&junk());
        want.extend_from_slice(b"fmt ");
        want.extend_from_slice(&le32(16));
        want.extend_from_slice(&le16(1));
        want.extend_from_slice(&le16(2));
        want.extend_from_slice(&le32(44100));
        want.extend_from_slice(&le32(176400));
        want.extend_from_slice(&le16(4));
        want.extend_from_slice(&le16(16));
        want.extend_from_slice(b"data");
        want.extend_from_slice(&le32(8));
        want.extend_from_slice(&[1, 2, 3, 4, 5, 6, 7, 8]);
        assert_eq!(file, want);
    }

    #[test]
    fn odd_u8_mono_is_padded() {
        let file = record(shape(PcmFormat::U8, 8000, 1), &[0x80, 0x81, 0x82]);
        // header 80 + 3 data + 1 pad
        assert_eq!(file.len(), 84);
        assert_eq!(&file[4..8], &le32(84 - 8));
        assert_eq!(&file[72..76], b"data");
        assert_eq!(&file[76..80], &le32(3));
        assert_eq!(&file[56..58], &le16(WAVE_FORMAT_PCM));
        assert_eq!(file[83], 0);
    }

    #[test]
    fn float_stereo_has_fmt18_and_fact() {
        let data: Vec<u8> = [0.5f32, -0.5, 0.25, -0.25]
            .iter()
            .flat_map(|v| v.to_le_bytes())
            .collect();
        let file = record(shape(PcmFormat::FLOAT, 48000, 2), &data);
        let mut want = b"RIFF".to_vec();
        want.extend_from_slice(&le32(12 + 36 + 26 + 12 + 8 + 16 - 8));
        want.extend_from_slice(b"WAVE");
        want.extend_from_slice(&junk());
        want.extend_from_slice(b"fmt ");
        want.extend_from_slice(&le32(18));
        want.extend_from_slice(&le16(3));
        want.extend_from_slice(&le16(2));
        want.extend_from_slice(&le32(48000));
        want.extend_from_slice(&le32(384000));
        want.extend_from_slice(&le16(8));
        want.extend_from_slice(&le16(32));
        want.extend_from_slice(&le16(0));
        want.extend_from_slice(b"fact");
        want.extend_from_slice(&le32(4));
        want.extend_from_slice(&le32(2));
        want.extend_from_slice(b"data");
        want.extend_from_slice(&le32(16));
        want.extend_from_slice(&data);
        assert_eq!(file, want);
    }

    #[test]
    fn s24_3_six_channels_is_extensible() {
        let data = vec![0u8; 18 * 2];
        let file = record(shape(PcmFormat::S24_3, 96000, 6), &data);
        let mut want = b"RIFF".to_vec();
        want.extend_from_slice(&le32(12 + 36 + 48 + 8 + 36 - 8));
        want.extend_from_slice(b"WAVE");
        want.extend_from_slice(&junk());
        want.extend_from_slice(b"fmt ");
        want.extend_from_slice(&le32(40));
        want.extend_from_slice(&le16(0xfffe));
        want.extend_from_slice(&le16(6));
        want.extend_from_slice(&le32(96000));
        want.extend_from_slice(&le32(96000 * 18));
        want.extend_from_slice(&le16(18));
        want.extend_from_slice(&le16(24));
        want.extend_from_slice(&le16(22));
        want.extend_from_slice(&le16(24));
        want.extend_from_slice(&le32(0));
        want.extend_from_slice(&[
            0x01, 0x00, 0x00, 0x00, 0x00, 0x00, 0x10, 0x00, 0x80, 0x00, 0x00, 0xaa, 0x00, 0x38,
            0x9b, 0x71,
        ]);
        want.extend_from_slice(b"data");
        want.extend_from_slice(&le32(36));
        want.extend_from_slice(&data);
        assert_eq!(file, want);
    }

    #[test]
    fn mulaw_and_s32_tags() {
        let file = record(shape(PcmFormat::MU_LAW, 8000, 1), &[0xff; 4]);
        assert_eq!(&file[56..58], &le16(7));
        assert_eq!(&file[74..78], b"fact");
        let file = record(shape(PcmFormat::A_LAW, 8000, 2), &[0xd5; 4]);
        assert_eq!(&file[56..58], &le16(6));
        let file = record(shape(PcmFormat::S32, 48000, 2), &[0; 8]);
        assert_eq!(&file[56..58], &le16(0xfffe));
        assert_eq!(&file[80..82], &le16(1)); // subformat PCM
    }

    #[test]
    fn formats_wav_cannot_carry_are_refused() {
        for f in [
            PcmFormat::S8,
            PcmFormat::U16,
            PcmFormat::S24,
            PcmFormat::from_code(0).unwrap(),
        ] {
            let e = WavSpec::for_shape(shape(f, 48000, 2)).unwrap_err();
            assert!(e.to_string().contains("-f out.pcm"), "{e}");
        }
    }

    #[test]
    fn parse_reads_back_what_was_written() {
        for (s, data) in [
            (shape(PcmFormat::S16, 44100, 2), vec![7u8; 40]),
            (shape(PcmFormat::FLOAT, 22050, 1), vec![0u8; 12]),
            (shape(PcmFormat::S24_3, 96000, 6), vec![1u8; 36]),
            (shape(PcmFormat::U8, 8000, 1), vec![0x80; 5]),
        ] {
            let file = record(s, &data);
            let info = parse(&mut Cursor::new(&file)).unwrap();
            assert_eq!(info.shape().unwrap(), s);
            assert_eq!(info.data_len, data.len() as u64);
            let off = info.data_offset as usize;
            assert_eq!(&file[off..off + data.len()], &data[..]);
        }
        assert!(parse(&mut Cursor::new(b"RIFF\0\0\0\0AVI ".to_vec())).is_err());
        assert!(parse(&mut Cursor::new(b"RIFF".to_vec())).is_err());
    }

    #[test]
    fn hound_reads_our_files() {
        let samples: Vec<i16> = (0..64).map(|i| (i * 300 - 9000) as i16).collect();
        let bytes: Vec<u8> = samples.iter().flat_map(|s| s.to_le_bytes()).collect();
        let file = record(shape(PcmFormat::S16, 48000, 2), &bytes);
        let mut r = hound::WavReader::new(Cursor::new(file)).unwrap();
        assert_eq!(r.spec().channels, 2);
        assert_eq!(r.spec().sample_rate, 48000);
        let got: Vec<i16> = r.samples::<i16>().map(|s| s.unwrap()).collect();
        assert_eq!(got, samples);

        let fl: Vec<f32> = vec![0.5, -0.25, 0.125, 1.0];
        let bytes: Vec<u8> = fl.iter().flat_map(|s| s.to_le_bytes()).collect();
        let file = record(shape(PcmFormat::FLOAT, 44100, 1), &bytes);
        let mut r = hound::WavReader::new(Cursor::new(file)).unwrap();
        let got: Vec<f32> = r.samples::<f32>().map(|s| s.unwrap()).collect();
        assert_eq!(got, fl);

        let bytes = vec![0u8, 0, 0x80, 0xff, 0xff, 0x7f]; // S24_3LE: -2^23, 2^23-1
        let file = record(shape(PcmFormat::S24_3, 48000, 1), &bytes);
        let mut r = hound::WavReader::new(Cursor::new(file)).unwrap();
        let got: Vec<i32> = r.samples::<i32>().map(|s| s.unwrap()).collect();
        assert_eq!(got, vec![-8_388_608, 8_388_607]);
    }

    /// A sink that keeps only the first `keep` bytes and the length: lets the >4 GiB path run
    /// without 4 GiB of memory or disk.
    struct HeaderOnly {
        head: Vec<u8>,
        pos: u64,
        len: u64,
    }
    const KEEP: usize = 4096;

    impl Write for HeaderOnly {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            let start = self.pos as usize;
            if start < KEEP {
                let n = buf.len().min(KEEP - start);
                if self.head.len() < start + n {
                    self.head.resize(start + n, 0);
                }
                self.head[start..start + n].copy_from_slice(&buf[..n]);
            }
            self.pos += buf.len() as u64;
            self.len = self.len.max(self.pos);
            Ok(buf.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }
    impl Seek for HeaderOnly {
        fn seek(&mut self, to: SeekFrom) -> io::Result<u64> {
            self.pos = match to {
                SeekFrom::Start(p) => p,
                SeekFrom::End(d) => (self.len as i64 + d) as u64,
                SeekFrom::Current(d) => (self.pos as i64 + d) as u64,
            };
            Ok(self.pos)
        }
    }

    #[test]
    fn passing_4_gib_upgrades_to_rf64_in_place() {
        let spec = WavSpec::for_shape(shape(PcmFormat::S16, 48000, 2)).unwrap();
        let sink = HeaderOnly {
            head: Vec::new(),
            pos: 0,
            len: 0,
        };
        let mut w = WavWriter::new(sink, spec).unwrap();
        let chunk = vec![0u8; 1 << 20];
        // Just under the limit: still RIFF, exact 32-bit sizes.
        let below = (u32::MAX as u64 - (80 - 8) - 1) / (1 << 20);
        for _ in 0..below {
            w.write(&chunk).unwrap();
        }
        w.sync().unwrap();
        assert!(!w.is_rf64());
        let data_so_far = below << 20;
        {
            let h = &w.out.head;
            assert_eq!(&h[0..4], b"RIFF");
            assert_eq!(
                u32::from_le_bytes(h[4..8].try_into().unwrap()) as u64,
                72 + data_so_far
            );
            assert_eq!(&h[12..16], b"JUNK");
        }
        // Past it.
        for _ in 0..3 {
            w.write(&chunk).unwrap();
        }
        w.write(&[1, 2, 3]).unwrap();
        assert!(w.is_rf64());
        let total = data_so_far + 3 * (1 << 20) + 3;
        let sink = w.finalize().unwrap();
        let h = &sink.head;
        assert_eq!(&h[0..4], b"RF64");
        assert_eq!(&h[4..8], &le32(u32::MAX));
        assert_eq!(&h[8..12], b"WAVE");
        assert_eq!(&h[12..16], b"ds64");
        assert_eq!(&h[16..20], &le32(28));
        let riff = u64::from_le_bytes(h[20..28].try_into().unwrap());
        let data = u64::from_le_bytes(h[28..36].try_into().unwrap());
        let frames = u64::from_le_bytes(h[36..44].try_into().unwrap());
        assert_eq!(data, total);
        assert_eq!(riff, 72 + total + 1); // odd length: one pad byte
        assert_eq!(frames, total / 4);
        assert_eq!(&h[44..48], &le32(0));
        assert_eq!(&h[72..76], b"data");
        assert_eq!(&h[76..80], &le32(u32::MAX));
        assert_eq!(sink.len, 80 + total + 1);

        // And the parser understands it (the stored head plus a fake length).
        let mut file = h.clone();
        file.truncate(80);
        let info = parse(&mut Cursor::new(&file)).unwrap();
        assert!(info.rf64);
        assert_eq!(info.data_offset, 80);
    }

    #[test]
    fn a_killed_writer_leaves_a_header_covering_the_last_patch() {
        let spec = WavSpec::for_shape(shape(PcmFormat::S16, 8000, 1)).unwrap();
        let mut w = WavWriter::new(Cursor::new(Vec::new()), spec).unwrap();
        w.set_patch_interval(Duration::ZERO);
        w.write(&[1, 0, 2, 0]).unwrap();
        assert!(w.sync_if_due().unwrap());
        assert!(!w.sync_if_due().unwrap(), "nothing new, nothing to patch");
        // More data arrives, then the process dies before the next patch: nothing finalizes.
        w.write(&[3, 0]).unwrap();
        let file = w.out.get_ref().clone();
        std::mem::forget(w);
        assert_eq!(file.len(), 86);
        assert_eq!(&file[76..80], &le32(4));
        assert_eq!(&file[4..8], &le32(76));
        let info = parse(&mut Cursor::new(&file)).unwrap();
        assert_eq!(info.data_len, 4);
        let r = hound::WavReader::new(Cursor::new(file)).unwrap();
        assert_eq!(r.len(), 2);
    }

    #[test]
    fn a_fresh_file_is_already_valid() {
        let spec = WavSpec::for_shape(shape(PcmFormat::S16, 8000, 1)).unwrap();
        let w = WavWriter::new(Cursor::new(Vec::new()), spec).unwrap();
        let file = w.out.get_ref().clone();
        assert_eq!(&file[4..8], &le32(72));
        assert_eq!(hound::WavReader::new(Cursor::new(file)).unwrap().len(), 0);
    }
}
