//! Sample conversion: decoding the byte-addressed virtio-snd formats to `f32` and encoding
//! them back, channel remixing, and a linear resampler.
//!
//! Host playback (guest stream → host device) and `--inject` (file → guest capture stream)
//! both go through here. Recording never does: files get the guest's bytes verbatim.
//!
//! The resampler is plain linear interpolation with an exact rational step (no drift over
//! long runs). It is good enough for monitoring and for feeding a guest's capture device; it
//! is not a mastering-quality converter, and the README says so.

use dsproxy_wire::record::Params;
use dsproxy_wire::{PcmFormat, PcmRate};
use thiserror::Error;

/// The shape of an audio stream in plain numbers, so it can describe a file at any rate (a
/// [`dsproxy_wire::PcmShape`] only holds rates from the virtio-snd table).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AudioShape {
    pub format: PcmFormat,
    pub rate_hz: u32,
    pub channels: u16,
}

impl AudioShape {
    /// The shape a guest's `Params` describe, if its format and rate codes are known.
    pub fn from_params(p: &Params) -> Option<AudioShape> {
        Some(AudioShape {
            format: PcmFormat::from_code(p.format)?,
            rate_hz: PcmRate::from_code(p.rate)?.hz(),
            channels: p.channels as u16,
        })
    }

    /// Bytes per frame, or `None` for a format without a byte size or zero channels.
    pub fn frame_bytes(&self) -> Option<usize> {
        let s = self.format.sample_bytes()? as usize;
        (self.channels > 0).then(|| s * self.channels as usize)
    }

    /// Bytes per second.
    pub fn byte_rate(&self) -> Option<u64> {
        Some(self.frame_bytes()? as u64 * self.rate_hz as u64)
    }

    /// How long `bytes` of this shape play, in nanoseconds (`None` without a byte rate).
    pub fn bytes_to_ns(&self, bytes: u64) -> Option<u128> {
        let br = self.byte_rate().filter(|&br| br > 0)?;
        Some(bytes as u128 * 1_000_000_000 / br as u128)
    }
}

impl std::fmt::Display for AudioShape {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} Hz {} {}ch", self.rate_hz, self.format, self.channels)
    }
}

#[derive(Debug, Error, PartialEq, Eq)]
pub enum ConvertError {
    #[error("{0} audio cannot be converted (only linear PCM, float, mu-law and A-law can)")]
    Unsupported(PcmFormat),
    #[error("a stream with no channels or no rate cannot be converted")]
    Empty,
}

/// How one sample of a format is laid out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Codec {
    /// Little-endian integer in `bytes` bytes, of which the low `bits` are significant.
    Int {
        bytes: u8,
        bits: u8,
        signed: bool,
    },
    F32,
    F64,
    MuLaw,
    ALaw,
}

fn codec(f: PcmFormat) -> Option<Codec> {
    let info = f.info();
    match f.code() {
        1 => Some(Codec::MuLaw),
        2 => Some(Codec::ALaw),
        // S8 … U32_LE: the table's bits/bytes say how, the name's first letter the sign.
        3..=18 => Some(Codec::Int {
            bytes: info.bytes,
            bits: info.bits,
            signed: info.name.starts_with('S'),
        }),
        19 => Some(Codec::F32),
        20 => Some(Codec::F64),
        _ => None,
    }
}

/// Whether [`decode`] and [`encode`] handle this format.
pub fn is_convertible(f: PcmFormat) -> bool {
    codec(f).is_some()
}

/// Decodes whole samples of `format` from `bytes` into `out` (appended, nominally in
/// [-1, 1)). Trailing bytes that do not make a whole sample are ignored; callers that stream
/// keep them (see [`Decoder`]).
pub fn decode(format: PcmFormat, bytes: &[u8], out: &mut Vec<f32>) -> Result<(), ConvertError> {
    let c = codec(format).ok_or(ConvertError::Unsupported(format))?;
    let size = format
        .sample_bytes()
        .ok_or(ConvertError::Unsupported(format))? as usize;
    out.reserve(bytes.len() / size);
    for s in bytes.chunks_exact(size) {
        out.push(decode_one(c, s));
    }
    Ok(())
}

/// Like [`decode`], but into `f64`, which holds every sample of every format exactly (32-bit
/// integers included): what a bit-exact comparison of two formats' values needs.
pub fn decode_f64(format: PcmFormat, bytes: &[u8], out: &mut Vec<f64>) -> Result<(), ConvertError> {
    let c = codec(format).ok_or(ConvertError::Unsupported(format))?;
    let size = format
        .sample_bytes()
        .ok_or(ConvertError::Unsupported(format))? as usize;
    out.reserve(bytes.len() / size);
    match c {
        // Nearly every capture is S16: a loop the compiler can unroll, without the per-sample
        // dispatch (a long capture's verdict is mostly this loop).
        Codec::Int {
            bytes: 2,
            bits: 16,
            signed: true,
        } => out.extend(
            bytes
                .chunks_exact(2)
                .map(|s| i16::from_le_bytes([s[0], s[1]]) as f64 / 32768.0),
        ),
        _ => out.extend(bytes.chunks_exact(size).map(|s| decode_one_f64(c, s))),
    }
    Ok(())
}

/// The full-scale magnitude of `format`'s integer code units (2^(bits-1); 32768 for the
/// companded formats, whose linear value is 16-bit), or `None` for float formats: what turns a
/// decoded sample back into the number a user sees in a hex dump or a sample editor.
pub fn code_scale(format: PcmFormat) -> Option<f64> {
    match codec(format)? {
        Codec::Int { bits, .. } => Some((1u64 << (bits - 1)) as f64),
        Codec::MuLaw | Codec::ALaw => Some(32768.0),
        Codec::F32 | Codec::F64 => None,
    }
}

fn decode_one(c: Codec, s: &[u8]) -> f32 {
    decode_one_f64(c, s) as f32
}

fn decode_one_f64(c: Codec, s: &[u8]) -> f64 {
    match c {
        Codec::Int {
            bytes: _,
            bits,
            signed,
        } => {
            let mut raw = [0u8; 4];
            raw[..s.len()].copy_from_slice(s);
            let raw = u32::from_le_bytes(raw);
            let shift = 32 - bits as u32;
            let v: i64 = if signed {
                (((raw << shift) as i32) >> shift) as i64
            } else {
                ((raw << shift) >> shift) as i64 - (1i64 << (bits - 1))
            };
            v as f64 / (1u64 << (bits - 1)) as f64
        }
        Codec::F32 => f32::from_le_bytes(s.try_into().expect("4-byte sample")) as f64,
        Codec::F64 => f64::from_le_bytes(s.try_into().expect("8-byte sample")),
        Codec::MuLaw => ulaw_to_linear(s[0]) as f64 / 32768.0,
        Codec::ALaw => alaw_to_linear(s[0]) as f64 / 32768.0,
    }
}

/// Encodes `samples` (clamped to [-1, 1]) as `format`, appending to `out`.
pub fn encode(format: PcmFormat, samples: &[f32], out: &mut Vec<u8>) -> Result<(), ConvertError> {
    let c = codec(format).ok_or(ConvertError::Unsupported(format))?;
    let size = format
        .sample_bytes()
        .ok_or(ConvertError::Unsupported(format))? as usize;
    out.reserve(samples.len() * size);
    for &v in samples {
        let v = if v.is_nan() { 0.0 } else { v.clamp(-1.0, 1.0) };
        match c {
            Codec::Int {
                bytes,
                bits,
                signed,
            } => {
                let full = 1i64 << (bits - 1);
                let scaled = ((v as f64) * full as f64).round() as i64;
                let scaled = scaled.clamp(-full, full - 1);
                let word = if signed {
                    // Sign-extended into the container, as ALSA's own converters write it.
                    scaled as i32 as u32
                } else {
                    (scaled + full) as u32
                };
                out.extend_from_slice(&word.to_le_bytes()[..bytes as usize]);
            }
            Codec::F32 => out.extend_from_slice(&v.to_le_bytes()),
            Codec::F64 => out.extend_from_slice(&(v as f64).to_le_bytes()),
            Codec::MuLaw => out.push(linear_to_ulaw(to_i16(v))),
            Codec::ALaw => out.push(linear_to_alaw(to_i16(v))),
        }
    }
    Ok(())
}

fn to_i16(v: f32) -> i16 {
    (v * 32768.0).round().clamp(-32768.0, 32767.0) as i16
}

// G.711, after the public-domain Sun reference implementation (g711.c).

/// mu-law code → 16-bit linear.
pub fn ulaw_to_linear(code: u8) -> i16 {
    let u = !code;
    let mut t = ((((u & 0x0f) as i32) << 3) + 0x84) << ((u & 0x70) >> 4);
    t = if u & 0x80 != 0 { 0x84 - t } else { t - 0x84 };
    t as i16
}

/// 16-bit linear → mu-law code.
pub fn linear_to_ulaw(pcm: i16) -> u8 {
    const SEG_END: [i32; 8] = [0x3f, 0x7f, 0xff, 0x1ff, 0x3ff, 0x7ff, 0xfff, 0x1fff];
    let mut v = (pcm as i32) >> 2;
    let mask: u8 = if v < 0 {
        v = -v;
        0x7f
    } else {
        0xff
    };
    v = v.min(8159) + (0x84 >> 2);
    match SEG_END.iter().position(|&e| v <= e) {
        Some(seg) => (((seg as i32) << 4 | ((v >> (seg + 1)) & 0x0f)) as u8) ^ mask,
        None => 0x7f ^ mask,
    }
}

/// A-law code → 16-bit linear.
pub fn alaw_to_linear(code: u8) -> i16 {
    let a = code ^ 0x55;
    let mut t = ((a & 0x0f) as i32) << 4;
    let seg = (a & 0x70) >> 4;
    match seg {
        0 => t += 8,
        1 => t += 0x108,
        _ => t = (t + 0x108) << (seg - 1),
    }
    (if a & 0x80 != 0 { t } else { -t }) as i16
}

/// 16-bit linear → A-law code.
pub fn linear_to_alaw(pcm: i16) -> u8 {
    const SEG_END: [i32; 8] = [0x1f, 0x3f, 0x7f, 0xff, 0x1ff, 0x3ff, 0x7ff, 0xfff];
    let mut v = (pcm as i32) >> 3;
    let mask: u8 = if v >= 0 {
        0xd5
    } else {
        v = -v - 1;
        0x55
    };
    match SEG_END.iter().position(|&e| v <= e) {
        Some(seg) => {
            let mant = if seg < 2 {
                (v >> 1) & 0x0f
            } else {
                (v >> seg) & 0x0f
            };
            (((seg as i32) << 4 | mant) as u8) ^ mask
        }
        None => 0x7f ^ mask,
    }
}

/// Turns interleaved frames of `in_ch` channels into frames of `out_ch` channels, appending
/// to `out`. Mono is spread to every channel; a mono target averages; more channels than the
/// source repeat a stereo/mono source and are silent for a surround one; fewer channels fold
/// source channel k into target channel k mod out_ch and average.
pub fn remix(input: &[f32], in_ch: usize, out_ch: usize, out: &mut Vec<f32>) {
    if in_ch == 0 || out_ch == 0 {
        return;
    }
    if in_ch == out_ch {
        out.extend_from_slice(&input[..input.len() - input.len() % in_ch]);
        return;
    }
    for frame in input.chunks_exact(in_ch) {
        if out_ch < in_ch {
            for j in 0..out_ch {
                let (sum, n) = frame
                    .iter()
                    .skip(j)
                    .step_by(out_ch)
                    .fold((0.0f32, 0u32), |(s, n), &v| (s + v, n + 1));
                out.push(sum / n as f32);
            }
        } else {
            for j in 0..out_ch {
                out.push(if j < in_ch {
                    frame[j]
                } else if in_ch <= 2 {
                    frame[j % in_ch]
                } else {
                    0.0
                });
            }
        }
    }
}

/// Linear-interpolating sample-rate converter over interleaved `f32` frames. It keeps the
/// last input frame between calls, and steps through the input in exact rational increments
/// (`in_rate / out_rate`), so output length never drifts from `input × out_rate / in_rate`.
#[derive(Debug, Clone)]
pub struct LinearResampler {
    channels: usize,
    in_rate: u32,
    out_rate: u32,
    /// Input frames not yet passed; frame 0 is the left neighbour of the next output.
    pending: Vec<f32>,
    /// Position between pending frame 0 and 1, as a fraction `frac / out_rate`.
    frac: u64,
    /// Input frames still to skip before `pending` starts (when downsampling jumped past the
    /// end of the last chunk).
    skip: u64,
}

impl LinearResampler {
    pub fn new(channels: usize, in_rate: u32, out_rate: u32) -> LinearResampler {
        LinearResampler {
            channels: channels.max(1),
            in_rate: in_rate.max(1),
            out_rate: out_rate.max(1),
            pending: Vec::new(),
            frac: 0,
            skip: 0,
        }
    }

    pub fn is_identity(&self) -> bool {
        self.in_rate == self.out_rate
    }

    /// Converts `input` (whole frames) and appends the output frames to `out`.
    pub fn process(&mut self, input: &[f32], out: &mut Vec<f32>) {
        let ch = self.channels;
        let input = &input[..input.len() - input.len() % ch];
        if self.is_identity() {
            out.extend_from_slice(input);
            return;
        }
        let mut input = input;
        if self.skip > 0 {
            let n = (self.skip as usize).min(input.len() / ch);
            input = &input[n * ch..];
            self.skip -= n as u64;
        }
        self.pending.extend_from_slice(input);
        let frames = self.pending.len() / ch;
        let mut idx = 0usize;
        while idx + 1 < frames {
            let f = self.frac as f32 / self.out_rate as f32;
            let (a, b) = (idx * ch, (idx + 1) * ch);
            for c in 0..ch {
                let l = self.pending[a + c];
                let r = self.pending[b + c];
                out.push(l + (r - l) * f);
            }
            self.frac += self.in_rate as u64;
            idx += (self.frac / self.out_rate as u64) as usize;
            self.frac %= self.out_rate as u64;
        }
        let drop = idx.min(frames);
        self.pending.drain(..drop * ch);
        self.skip += (idx - drop) as u64;
    }
}

/// Bytes of one format → `f32` samples, keeping a partial trailing sample frame between calls
/// (a PCM record or a file read need not end on a frame boundary).
#[derive(Debug, Clone)]
pub struct Decoder {
    format: PcmFormat,
    frame_bytes: usize,
    carry: Vec<u8>,
}

impl Decoder {
    pub fn new(shape: AudioShape) -> Result<Decoder, ConvertError> {
        if !is_convertible(shape.format) {
            return Err(ConvertError::Unsupported(shape.format));
        }
        let frame_bytes = shape.frame_bytes().ok_or(ConvertError::Empty)?;
        Ok(Decoder {
            format: shape.format,
            frame_bytes,
            carry: Vec::new(),
        })
    }

    /// Decodes the whole frames now available, appending samples to `out`.
    pub fn push(&mut self, bytes: &[u8], out: &mut Vec<f32>) -> Result<(), ConvertError> {
        if self.carry.is_empty() {
            let whole = bytes.len() - bytes.len() % self.frame_bytes;
            decode(self.format, &bytes[..whole], out)?;
            self.carry.extend_from_slice(&bytes[whole..]);
        } else {
            self.carry.extend_from_slice(bytes);
            let whole = self.carry.len() - self.carry.len() % self.frame_bytes;
            decode(self.format, &self.carry[..whole], out)?;
            self.carry.drain(..whole);
        }
        Ok(())
    }
}

/// A full conversion chain from one shape to another: decode, remix, resample, encode.
/// Passes bytes through untouched when the shapes are equal, so a matching file is delivered
/// bit for bit.
#[derive(Debug, Clone)]
pub struct Converter {
    from: AudioShape,
    to: AudioShape,
    chain: Option<Chain>,
}

#[derive(Debug, Clone)]
struct Chain {
    decoder: Decoder,
    resampler: LinearResampler,
    decoded: Vec<f32>,
    remixed: Vec<f32>,
    resampled: Vec<f32>,
}

impl Converter {
    pub fn new(from: AudioShape, to: AudioShape) -> Result<Converter, ConvertError> {
        if from.rate_hz == 0 || to.rate_hz == 0 || from.channels == 0 || to.channels == 0 {
            return Err(ConvertError::Empty);
        }
        let chain = if from == to {
            None
        } else {
            if !is_convertible(to.format) {
                return Err(ConvertError::Unsupported(to.format));
            }
            Some(Chain {
                decoder: Decoder::new(from)?,
                resampler: LinearResampler::new(to.channels as usize, from.rate_hz, to.rate_hz),
                decoded: Vec::new(),
                remixed: Vec::new(),
                resampled: Vec::new(),
            })
        };
        Ok(Converter { from, to, chain })
    }

    pub fn from(&self) -> AudioShape {
        self.from
    }

    pub fn to(&self) -> AudioShape {
        self.to
    }

    /// Whether bytes pass through unchanged.
    pub fn is_passthrough(&self) -> bool {
        self.chain.is_none()
    }

    /// Converts `input`, appending the result to `out`.
    pub fn convert(&mut self, input: &[u8], out: &mut Vec<u8>) -> Result<(), ConvertError> {
        let Some(c) = self.chain.as_mut() else {
            out.extend_from_slice(input);
            return Ok(());
        };
        c.decoded.clear();
        c.remixed.clear();
        c.resampled.clear();
        c.decoder.push(input, &mut c.decoded)?;
        remix(
            &c.decoded,
            self.from.channels as usize,
            self.to.channels as usize,
            &mut c.remixed,
        );
        c.resampler.process(&c.remixed, &mut c.resampled);
        encode(self.to.format, &c.resampled, out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shape(format: PcmFormat, rate_hz: u32, channels: u16) -> AudioShape {
        AudioShape {
            format,
            rate_hz,
            channels,
        }
    }

    #[test]
    fn s16_round_trip_is_exact() {
        let mut bytes = Vec::new();
        for v in [i16::MIN, -12345, -1, 0, 1, 12345, i16::MAX] {
            bytes.extend_from_slice(&v.to_le_bytes());
        }
        let mut f = Vec::new();
        decode(PcmFormat::S16, &bytes, &mut f).unwrap();
        assert_eq!(f[0], -1.0);
        assert_eq!(f[3], 0.0);
        let mut back = Vec::new();
        encode(PcmFormat::S16, &f, &mut back).unwrap();
        assert_eq!(back, bytes);
    }

    #[test]
    fn unsigned_and_packed_formats() {
        let mut f = Vec::new();
        decode(PcmFormat::U8, &[0x00, 0x80, 0xff], &mut f).unwrap();
        assert_eq!(f, vec![-1.0, 0.0, 127.0 / 128.0]);

        // S24_3LE: -1 and the largest positive value.
        f.clear();
        decode(
            PcmFormat::S24_3,
            &[0xff, 0xff, 0xff, 0xff, 0xff, 0x7f],
            &mut f,
        )
        .unwrap();
        assert_eq!(f[0], -1.0 / 8_388_608.0);
        assert!((f[1] - 1.0).abs() < 1e-6);

        // S24_LE keeps its value in the low three bytes; the top byte is ignored on decode
        // and sign-extended on encode.
        f.clear();
        decode(PcmFormat::S24, &[0x00, 0x00, 0x80, 0x00], &mut f).unwrap();
        assert_eq!(f, vec![-1.0]);
        let mut out = Vec::new();
        encode(PcmFormat::S24, &[-1.0, 0.5], &mut out).unwrap();
        assert_eq!(out, vec![0x00, 0x00, 0x80, 0xff, 0x00, 0x00, 0x40, 0x00]);

        out.clear();
        encode(PcmFormat::U16, &[0.0, -1.0, 1.0], &mut out).unwrap();
        assert_eq!(out, vec![0x00, 0x80, 0x00, 0x00, 0xff, 0xff]);
    }

    #[test]
    fn clamps_and_rejects() {
        let mut out = Vec::new();
        encode(PcmFormat::S16, &[2.0, -2.0, f32::NAN], &mut out).unwrap();
        assert_eq!(out, vec![0xff, 0x7f, 0x00, 0x80, 0x00, 0x00]);
        let adpcm = PcmFormat::from_code(0).unwrap();
        assert_eq!(
            encode(adpcm, &[0.0], &mut out),
            Err(ConvertError::Unsupported(adpcm))
        );
        let dsd = PcmFormat::from_code(21).unwrap();
        assert!(decode(dsd, &[0], &mut Vec::new()).is_err());
    }

    #[test]
    fn g711_codes_round_trip() {
        for code in 0..=255u8 {
            // 0x7f is mu-law's negative zero, which encodes back as positive zero 0xff.
            if code != 0x7f {
                assert_eq!(
                    linear_to_ulaw(ulaw_to_linear(code)),
                    code,
                    "mu-law {code:#x}"
                );
            }
            assert_eq!(
                linear_to_alaw(alaw_to_linear(code)),
                code,
                "A-law {code:#x}"
            );
        }
        assert_eq!(ulaw_to_linear(0xff), 0);
        assert_eq!(linear_to_ulaw(0), 0xff);
        assert_eq!(alaw_to_linear(0xd5), 8);
        assert_eq!(ulaw_to_linear(0x00), -32124);
        assert_eq!(ulaw_to_linear(0x80), 32124);
        assert_eq!(PcmFormat::MU_LAW.silence_byte(), linear_to_ulaw(0));
        assert_eq!(PcmFormat::A_LAW.silence_byte(), linear_to_alaw(0));
    }

    #[test]
    fn remix_cases() {
        let mut out = Vec::new();
        remix(&[0.5, -0.5], 1, 2, &mut out);
        assert_eq!(out, vec![0.5, 0.5, -0.5, -0.5]);
        out.clear();
        remix(&[1.0, 0.0, 0.5, 0.5], 2, 1, &mut out);
        assert_eq!(out, vec![0.5, 0.5]);
        out.clear();
        // 6 → 2 folds even channels left and odd right.
        remix(&[0.6, 0.3, 0.0, 0.3, 0.3, 0.0], 6, 2, &mut out);
        assert!((out[0] - 0.3).abs() < 1e-6 && (out[1] - 0.2).abs() < 1e-6);
        out.clear();
        remix(&[0.1, 0.2, 0.3], 3, 4, &mut out);
        assert_eq!(out, vec![0.1, 0.2, 0.3, 0.0]);
    }

    #[test]
    fn resampler_length_and_values() {
        // 2:1 up: linear midpoints, output length exact over many chunks.
        let mut r = LinearResampler::new(1, 1, 2);
        let mut out = Vec::new();
        r.process(&[0.0, 1.0], &mut out);
        r.process(&[0.0], &mut out);
        assert_eq!(out, vec![0.0, 0.5, 1.0, 0.5]);

        let mut r = LinearResampler::new(2, 44100, 48000);
        let mut total_out = 0usize;
        let chunk = vec![0.25f32; 2 * 441];
        for _ in 0..1000 {
            let mut o = Vec::new();
            r.process(&chunk, &mut o);
            assert!(o.iter().all(|&v| (v - 0.25).abs() < 1e-6));
            total_out += o.len() / 2;
        }
        // 441000 input frames at 44.1k → 480000 at 48k, less the one frame held back.
        assert!((479_998..=480_000).contains(&total_out), "{total_out}");

        // Large downsampling skips across chunk boundaries without losing count.
        let mut r = LinearResampler::new(1, 48000, 8000);
        let mut n = 0;
        for _ in 0..100 {
            let mut o = Vec::new();
            r.process(&[0.0; 5], &mut o);
            n += o.len();
        }
        assert!((82..=84).contains(&n), "{n}");
    }

    #[test]
    fn converter_passthrough_and_full_chain() {
        let s16 = shape(PcmFormat::S16, 44100, 2);
        let mut c = Converter::new(s16, s16).unwrap();
        assert!(c.is_passthrough());
        let mut out = Vec::new();
        c.convert(&[1, 2, 3], &mut out).unwrap();
        assert_eq!(out, vec![1, 2, 3]);

        // U8 mono 8 kHz → S16 stereo 16 kHz, fed in odd-sized pieces.
        let from = shape(PcmFormat::U8, 8000, 1);
        let to = shape(PcmFormat::S16, 16000, 2);
        let mut c = Converter::new(from, to).unwrap();
        let mut out = Vec::new();
        let input: Vec<u8> = vec![0xc0; 101];
        for piece in input.chunks(7) {
            c.convert(piece, &mut out).unwrap();
        }
        assert_eq!(out.len() % 4, 0);
        let frames = out.len() / 4;
        assert!((200..=202).contains(&frames), "{frames}");
        for s in out.chunks_exact(2) {
            assert_eq!(i16::from_le_bytes([s[0], s[1]]), 16384);
        }

        assert_eq!(
            Converter::new(from, shape(PcmFormat::from_code(21).unwrap(), 8000, 1)).err(),
            Some(ConvertError::Unsupported(PcmFormat::from_code(21).unwrap()))
        );
    }
}
