//! Output files: their names, and one writer per segment.
//!
//! `-f out.wav` names the first segment of the main output stream. The card's other output
//! streams get `out.1.wav`, `out.2.wav`, … (by their place among the card's output streams),
//! and each new segment of a stream — after a format change, a reconnection, or the VM going
//! away and coming back — gets `.segN` before the extension: `out.seg2.wav`,
//! `out.1.seg3.wav`. Raw files (any other extension) are named the same way.
//!
//! `-f /dev/null` is the discard sink: every stream and segment goes there, nothing is
//! written, and the bytes are counted as recorded (the reader's ceiling, for benchmarks).

use std::fs::{File, OpenOptions};
use std::io::{self, BufWriter, Write};
use std::path::{Path, PathBuf};

use crate::convert::AudioShape;
use crate::error::ReaderError;
use crate::sink::{path_is_dev_null, WRITE_BUFFER};
use crate::wav::{WavSpec, WavWriter};

/// What `-f` asked for.
#[derive(Debug, Clone)]
pub struct FileTarget {
    base: PathBuf,
    wav: bool,
    /// The base is the null device: write nothing.
    discard: bool,
}

impl FileTarget {
    pub fn new(base: PathBuf) -> FileTarget {
        let wav = base
            .extension()
            .is_some_and(|e| e.eq_ignore_ascii_case("wav"));
        let discard = path_is_dev_null(&base);
        FileTarget {
            base,
            wav: wav && !discard,
            discard,
        }
    }

    pub fn is_wav(&self) -> bool {
        self.wav
    }

    /// `-f /dev/null`: every segment is taken and dropped.
    pub fn is_discard(&self) -> bool {
        self.discard
    }

    pub fn base(&self) -> &Path {
        &self.base
    }

    /// The file for segment `seg` (1-based) of the output stream at `index` (0 = main).
    pub fn path_for(&self, index: usize, seg: u32) -> PathBuf {
        if self.discard {
            return self.base.clone();
        }
        let stem = self
            .base
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_default();
        let ext = self
            .base
            .extension()
            .map(|e| format!(".{}", e.to_string_lossy()))
            .unwrap_or_default();
        let idx = if index > 0 {
            format!(".{index}")
        } else {
            String::new()
        };
        let seg = if seg > 1 {
            format!(".seg{seg}")
        } else {
            String::new()
        };
        self.base.with_file_name(format!("{stem}{idx}{seg}{ext}"))
    }

    /// Fails early, before attaching, if the first file cannot be created.
    pub fn check_writable(&self) -> Result<(), ReaderError> {
        if self.base.is_dir() {
            return Err(ReaderError::file(
                &self.base,
                io::Error::new(io::ErrorKind::IsADirectory, "is a directory"),
            ));
        }
        OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(false)
            .open(&self.base)
            .map(|_| ())
            .map_err(|e| ReaderError::file(&self.base, e))
    }
}

enum Writer {
    Wav(WavWriter<BufWriter<File>>),
    Raw(BufWriter<File>),
    Discard,
}

/// One open output file.
pub struct Segment {
    pub path: PathBuf,
    pub shape: Option<AudioShape>,
    writer: Writer,
    bytes: u64,
}

impl Segment {
    /// Creates (truncating) the file `path` of `target`. A WAV segment needs the stream's
    /// shape; `stream` is only for the error message.
    pub fn create(
        path: PathBuf,
        target: &FileTarget,
        shape: Option<AudioShape>,
        stream: u32,
    ) -> Result<Segment, ReaderError> {
        if target.is_discard() {
            return Ok(Segment {
                path,
                shape,
                writer: Writer::Discard,
                bytes: 0,
            });
        }
        let spec = if target.is_wav() {
            let shape = shape.ok_or_else(|| ReaderError::Wav {
                stream,
                path: path.display().to_string(),
                source: crate::wav::WavError::Parse("stream format unknown"),
            })?;
            Some(
                WavSpec::for_shape(shape).map_err(|source| ReaderError::Wav {
                    stream,
                    path: path.display().to_string(),
                    source,
                })?,
            )
        } else {
            None
        };
        let file = File::create(&path).map_err(|e| ReaderError::file(&path, e))?;
        let buf = BufWriter::with_capacity(WRITE_BUFFER, file);
        let writer = match spec {
            Some(spec) => {
                Writer::Wav(WavWriter::new(buf, spec).map_err(|e| ReaderError::file(&path, e))?)
            }
            None => Writer::Raw(buf),
        };
        Ok(Segment {
            path,
            shape,
            writer,
            bytes: 0,
        })
    }

    /// Audio bytes written.
    pub fn bytes(&self) -> u64 {
        self.bytes
    }

    pub fn write(&mut self, data: &[u8]) -> Result<(), ReaderError> {
        match &mut self.writer {
            Writer::Wav(w) => w.write(data),
            Writer::Raw(w) => w.write_all(data),
            Writer::Discard => Ok(()),
        }
        .map_err(|e| ReaderError::file(&self.path, e))?;
        self.bytes += data.len() as u64;
        Ok(())
    }

    /// Periodic housekeeping: hands buffered bytes to the OS and, for WAV, patches the
    /// header when it is due.
    pub fn tick(&mut self) -> Result<(), ReaderError> {
        match &mut self.writer {
            Writer::Wav(w) => w.sync_if_due().and_then(|_| w.flush()),
            Writer::Raw(w) => w.flush(),
            Writer::Discard => Ok(()),
        }
        .map_err(|e| ReaderError::file(&self.path, e))
    }

    /// Brings the file fully up to date now (a stream stopped: the guest may be idle for a
    /// long time).
    pub fn sync(&mut self) -> Result<(), ReaderError> {
        match &mut self.writer {
            Writer::Wav(w) => w.sync(),
            Writer::Raw(w) => w.flush(),
            Writer::Discard => Ok(()),
        }
        .map_err(|e| ReaderError::file(&self.path, e))
    }

    /// Finalizes the file (final WAV sizes).
    pub fn finish(self) -> Result<(), ReaderError> {
        let path = self.path;
        match self.writer {
            Writer::Wav(w) => w.finalize().and_then(|mut b| b.flush()),
            Writer::Raw(mut w) => w.flush(),
            Writer::Discard => Ok(()),
        }
        .map_err(|e| ReaderError::file(&path, e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        let t = FileTarget::new("/rec/out.wav".into());
        assert!(t.is_wav());
        assert_eq!(t.path_for(0, 1), PathBuf::from("/rec/out.wav"));
        assert_eq!(t.path_for(1, 1), PathBuf::from("/rec/out.1.wav"));
        assert_eq!(t.path_for(0, 2), PathBuf::from("/rec/out.seg2.wav"));
        assert_eq!(t.path_for(2, 3), PathBuf::from("/rec/out.2.seg3.wav"));
        let t = FileTarget::new("take.PCM".into());
        assert!(!t.is_wav());
        assert_eq!(t.path_for(1, 2), PathBuf::from("take.1.seg2.PCM"));
        let t = FileTarget::new("noext".into());
        assert_eq!(t.path_for(0, 2), PathBuf::from("noext.seg2"));
        assert!(FileTarget::new("X.WAV".into()).is_wav());
    }

    #[test]
    fn unwritable_is_reported() {
        let t = FileTarget::new("/nonexistent-dir-dsproxy/out.wav".into());
        let e = t.check_writable().unwrap_err().to_string();
        assert!(
            e.starts_with("cannot write /nonexistent-dir-dsproxy/out.wav"),
            "{e}"
        );
        let t = FileTarget::new(std::env::temp_dir());
        assert!(t.check_writable().is_err());
    }

    #[test]
    fn dev_null_discards_every_stream() {
        let t = FileTarget::new("/dev/null".into());
        assert!(t.is_discard() && !t.is_wav());
        assert_eq!(t.path_for(2, 3), PathBuf::from("/dev/null"));
        let mut seg = Segment::create(t.path_for(0, 1), &t, None, 0).unwrap();
        seg.write(&[1; 100]).unwrap();
        assert_eq!(seg.bytes(), 100);
        seg.finish().unwrap();
        assert!(!FileTarget::new("/tmp/x.wav".into()).is_discard());
    }
}
