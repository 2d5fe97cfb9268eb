//! A capture or golden file opened for judging: a WAV (RIFF or RF64, as [`crate::wav::parse`]
//! reads them) or a raw file whose shape the user gives. Reads go by frame ranges, so a long
//! capture is never held in memory by the exact comparison or the analysis.

use std::fs::File;
use std::io::{self, BufReader, Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

use crate::convert::{self, AudioShape};
use crate::wav::{self, WavError};

use super::VerdictError;

/// Anything a file's bytes can come from (a `File`, or a `Cursor` in tests).
pub trait Source: Read + Seek {}
impl<T: Read + Seek> Source for T {}

/// One audio file, by frames.
pub struct AudioFile {
    pub path: PathBuf,
    pub shape: AudioShape,
    src: Box<dyn Source>,
    data_offset: u64,
    frames: u64,
    frame_bytes: usize,
}

impl std::fmt::Debug for AudioFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "AudioFile({}, {}, {} frames)",
            self.path.display(),
            self.shape,
            self.frames
        )
    }
}

impl AudioFile {
    /// Opens `path`: a WAV file by its content, anything else as raw audio of `raw` (which
    /// `--raw-format` gives).
    pub fn open(path: &Path, raw: Option<AudioShape>) -> Result<AudioFile, VerdictError> {
        let file = File::open(path).map_err(|e| VerdictError::io(path, e))?;
        AudioFile::from_source(
            path,
            Box::new(BufReader::with_capacity(256 * 1024, file)),
            raw,
        )
    }

    /// Like [`AudioFile::open`], from any seekable source (`path` only names it).
    pub fn from_source(
        path: &Path,
        mut src: Box<dyn Source>,
        raw: Option<AudioShape>,
    ) -> Result<AudioFile, VerdictError> {
        let bad = |why: String| VerdictError::NotAudio {
            path: path.to_path_buf(),
            why,
        };
        let (shape, data_offset, data_len) = match wav::parse(&mut src) {
            Ok(info) => {
                let shape = info.shape().map_err(|e| bad(e.to_string()))?;
                (shape, info.data_offset, info.data_len)
            }
            Err(WavError::Io(e)) => return Err(VerdictError::io(path, e)),
            Err(e) => {
                let is_riff = {
                    let mut magic = [0u8; 4];
                    src.seek(SeekFrom::Start(0))
                        .and_then(|_| src.read_exact(&mut magic))
                        .is_ok()
                        && (&magic == b"RIFF" || &magic == b"RF64")
                };
                match raw {
                    Some(shape) if !is_riff => {
                        let len = src
                            .seek(SeekFrom::End(0))
                            .map_err(|e| VerdictError::io(path, e))?;
                        (shape, 0, len)
                    }
                    Some(_) => return Err(bad(e.to_string())),
                    None if is_riff => return Err(bad(e.to_string())),
                    None => {
                        return Err(bad(
                            "not a WAV file; give a raw file's shape with --raw-format \
                             FORMAT:RATE:CHANNELS"
                                .into(),
                        ))
                    }
                }
            }
        };
        if !convert::is_convertible(shape.format) {
            return Err(bad(format!("{} audio cannot be judged", shape.format)));
        }
        let frame_bytes = shape
            .frame_bytes()
            .ok_or_else(|| bad("no channels".into()))?;
        Ok(AudioFile {
            path: path.to_path_buf(),
            shape,
            src,
            data_offset,
            frames: data_len / frame_bytes as u64,
            frame_bytes,
        })
    }

    /// Whole frames in the file (a trailing partial frame is not audio).
    pub fn frames(&self) -> u64 {
        self.frames
    }

    pub fn channels(&self) -> usize {
        self.shape.channels as usize
    }

    pub fn rate(&self) -> u32 {
        self.shape.rate_hz
    }

    pub fn frame_bytes(&self) -> usize {
        self.frame_bytes
    }

    /// Seconds of audio.
    pub fn duration_s(&self) -> f64 {
        self.frames as f64 / self.shape.rate_hz as f64
    }

    /// The file's name as a verdict line shows it.
    pub fn name(&self) -> String {
        self.path.display().to_string()
    }

    /// Reads the bytes of frames `[start, start + n)` (clamped to the file) into `buf`.
    pub fn read_raw(&mut self, start: u64, n: usize, buf: &mut Vec<u8>) -> io::Result<()> {
        buf.clear();
        let n = n.min(self.frames.saturating_sub(start) as usize);
        if n == 0 {
            return Ok(());
        }
        buf.resize(n * self.frame_bytes, 0);
        self.src.seek(SeekFrom::Start(
            self.data_offset + start * self.frame_bytes as u64,
        ))?;
        self.src.read_exact(buf)
    }

    /// Frames `[start, start + n)` decoded to interleaved `f64` (exact for every format).
    pub fn read_f64(
        &mut self,
        start: u64,
        n: usize,
        scratch: &mut Vec<u8>,
        out: &mut Vec<f64>,
    ) -> Result<(), VerdictError> {
        self.read_raw(start, n, scratch)
            .map_err(|e| VerdictError::io(&self.path, e))?;
        out.clear();
        convert::decode_f64(self.shape.format, scratch, out).map_err(|e| VerdictError::NotAudio {
            path: self.path.clone(),
            why: e.to_string(),
        })
    }

    /// The whole file, one `Vec<f32>` per channel (for the tolerant comparison, which needs
    /// all of it at once).
    pub fn load_planar(&mut self) -> Result<Vec<Vec<f32>>, VerdictError> {
        let ch = self.channels();
        let mut planes = vec![Vec::with_capacity(self.frames as usize); ch];
        let (mut raw, mut dec) = (Vec::new(), Vec::new());
        let mut at = 0;
        while at < self.frames {
            self.read_f64(at, CHUNK_FRAMES, &mut raw, &mut dec)?;
            for frame in dec.chunks_exact(ch) {
                for (p, &v) in planes.iter_mut().zip(frame) {
                    p.push(v as f32);
                }
            }
            at += CHUNK_FRAMES as u64;
        }
        Ok(planes)
    }

    /// A sample value as its format's own integer (S16: -32768..32767; mu-law/A-law: their
    /// 16-bit linear value), or the float itself for float formats.
    pub fn show_value(&self, v: f64) -> String {
        show_value(self.shape.format, v)
    }
}

/// Frames read at a time by the streaming passes.
pub const CHUNK_FRAMES: usize = 64 * 1024;

/// See [`AudioFile::show_value`].
pub fn show_value(format: dsproxy_wire::PcmFormat, v: f64) -> String {
    match convert::code_scale(format) {
        Some(scale) => format!("{}", (v * scale).round() as i64),
        None => format!("{v:.7}"),
    }
}

/// Writes a WAV file of `samples` (interleaved, already in `shape`'s bytes) — for tests and
/// the e2e suite's goldens.
pub fn write_wav(path: &Path, shape: AudioShape, data: &[u8]) -> io::Result<()> {
    let spec = wav::WavSpec::for_shape(shape).map_err(io::Error::other)?;
    let f = std::io::BufWriter::new(File::create(path)?);
    let mut w = wav::WavWriter::new(f, spec)?;
    w.write(data)?;
    w.finalize().map(|_| ())
}

#[cfg(test)]
mod tests {
    use super::*;
    use dsproxy_wire::PcmFormat;
    use std::io::Cursor;

    fn s16(rate: u32, ch: u16) -> AudioShape {
        AudioShape {
            format: PcmFormat::S16,
            rate_hz: rate,
            channels: ch,
        }
    }

    fn wav_bytes(shape: AudioShape, data: &[u8]) -> Vec<u8> {
        let spec = wav::WavSpec::for_shape(shape).unwrap();
        let mut w = wav::WavWriter::new(Cursor::new(Vec::new()), spec).unwrap();
        w.write(data).unwrap();
        w.finalize().unwrap().into_inner()
    }

    #[test]
    fn reads_wav_frames_and_values() {
        let data: Vec<u8> = [0i16, 1, -2, 32767, -32768, 5]
            .iter()
            .flat_map(|v| v.to_le_bytes())
            .collect();
        let bytes = wav_bytes(s16(8000, 2), &data);
        let mut f =
            AudioFile::from_source(Path::new("x.wav"), Box::new(Cursor::new(bytes)), None).unwrap();
        assert_eq!(f.frames(), 3);
        assert_eq!(f.shape, s16(8000, 2));
        let (mut raw, mut out) = (Vec::new(), Vec::new());
        f.read_f64(1, 10, &mut raw, &mut out).unwrap();
        assert_eq!(
            out,
            vec![-2.0 / 32768.0, 32767.0 / 32768.0, -1.0, 5.0 / 32768.0]
        );
        assert_eq!(f.show_value(out[1]), "32767");
        let planes = f.load_planar().unwrap();
        assert_eq!(
            planes[1],
            vec![1.0 / 32768.0, 32767.0 / 32768.0, 5.0 / 32768.0]
        );
    }

    #[test]
    fn raw_needs_a_shape_and_a_broken_wav_is_refused() {
        let raw = vec![0u8; 10];
        let e =
            AudioFile::from_source(Path::new("a.pcm"), Box::new(Cursor::new(raw.clone())), None)
                .unwrap_err()
                .to_string();
        assert!(e.contains("--raw-format"), "{e}");
        let f = AudioFile::from_source(
            Path::new("a.pcm"),
            Box::new(Cursor::new(raw)),
            Some(s16(8000, 2)),
        )
        .unwrap();
        assert_eq!(f.frames(), 2, "a trailing partial frame is not audio");
        let mut broken = b"RIFF\0\0\0\0WAVEjunk".to_vec();
        broken.extend_from_slice(&[0; 8]);
        let e = AudioFile::from_source(
            Path::new("b.wav"),
            Box::new(Cursor::new(broken)),
            Some(s16(8000, 2)),
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("b.wav") && e.contains("WAV"), "{e}");
    }

    #[test]
    fn values_show_in_the_formats_units() {
        assert_eq!(show_value(PcmFormat::U8, -1.0), "-128");
        assert_eq!(show_value(PcmFormat::S24, 0.5), "4194304");
        assert_eq!(show_value(PcmFormat::FLOAT, 0.25), "0.2500000");
    }
}
