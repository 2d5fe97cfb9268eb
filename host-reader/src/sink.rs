//! Where a stream's audio bytes go — its segment file and, for the main stream, stdout — and
//! the silence that stands in for a gap.
//!
//! Both sinks write in large buffered writes: a segment through its own buffer
//! ([`crate::output`]), stdout through [`WRITE_BUFFER`] bytes handed on when full and at each
//! housekeeping tick. `-f /dev/null` and `-s > /dev/null` take the bytes and write nothing,
//! so a capture into them measures the reader's own ceiling.

use std::collections::HashMap;
use std::io::{self, BufWriter, Write};
use std::os::unix::fs::{FileTypeExt, MetadataExt};

use dsproxy_wire::PcmFormat;

use crate::console;
use crate::convert::AudioShape;
use crate::error::ReaderError;
use crate::output::{FileTarget, Segment};
use crate::stream::StreamState;

/// Bytes buffered for stdout (and for each segment file) before they are written.
pub const WRITE_BUFFER: usize = 256 * 1024;
/// Bytes of silence written per call while filling a gap.
const FILL_CHUNK: usize = 8192;
/// The most silence one gap may add: an hour of audio (or 1 GiB if the rate is unknown). A
/// larger claim is a broken peer, not a gap.
const MAX_FILL_SECONDS: u64 = 3600;
const MAX_FILL_UNKNOWN: u64 = 1 << 30;

/// Something audio bytes can be written to: a segment file or stdout.
pub trait Sink {
    fn write(&mut self, data: &[u8]) -> io::Result<()>;
}

struct SegmentSink<'a>(&'a mut Segment);

impl Sink for SegmentSink<'_> {
    fn write(&mut self, data: &[u8]) -> io::Result<()> {
        self.0.write(data).map_err(io::Error::other)
    }
}

/// `-s`: the main stream's raw bytes on stdout.
pub struct Stdout {
    out: BufWriter<io::Stdout>,
    /// Stdout is /dev/null: count the bytes, write nothing.
    discard: bool,
    written: u64,
}

impl Stdout {
    pub fn new() -> Stdout {
        Stdout {
            out: BufWriter::with_capacity(WRITE_BUFFER, io::stdout()),
            discard: fd_is_dev_null(libc::STDOUT_FILENO),
            written: 0,
        }
    }

    pub fn flush(&mut self) -> io::Result<()> {
        self.out.flush()
    }
}

impl Default for Stdout {
    fn default() -> Self {
        Stdout::new()
    }
}

impl Sink for Stdout {
    fn write(&mut self, data: &[u8]) -> io::Result<()> {
        if !self.discard {
            self.out.write_all(data)?;
        }
        self.written += data.len() as u64;
        Ok(())
    }
}

/// Whether descriptor `fd` is the null device.
fn fd_is_dev_null(fd: i32) -> bool {
    // SAFETY: fstat writes only into the stat buffer we own.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    if unsafe { libc::fstat(fd, &mut st) } != 0 {
        return false;
    }
    (st.st_mode & libc::S_IFMT) == libc::S_IFCHR && is_null_rdev(st.st_rdev)
}

/// Whether `path` is the null device (`/dev/null`, or another node of it).
pub fn path_is_dev_null(path: &std::path::Path) -> bool {
    std::fs::metadata(path).is_ok_and(|m| m.file_type().is_char_device() && is_null_rdev(m.rdev()))
}

fn is_null_rdev(rdev: u64) -> bool {
    std::fs::metadata("/dev/null").is_ok_and(|m| m.rdev() == rdev)
}

/// Silence standing for `bytes` missing bytes of a stream, from stream offset `at`: exactly
/// that many bytes, so everything after keeps its frame alignment, in the format's own
/// silence (0x80 for U8, 0x8000 for U16, 0xff for mu-law…), starting at the right byte of
/// the sample.
pub struct Fill {
    bytes: u64,
    /// Whole samples, starting at `at`'s phase.
    chunk: Vec<u8>,
}

impl Fill {
    /// The fill for `n` bytes of a stream in `shape` at offset `at`, cut to a plausible size
    /// (with a note when cut).
    pub fn new(stream: u32, shape: Option<AudioShape>, at: u64, n: u64) -> Fill {
        let limit = fill_limit(shape);
        let bytes = if n > limit {
            console::note(&format!(
                "stream {stream}: a gap of {n} bytes is implausible; filling only {limit}"
            ));
            limit
        } else {
            n
        };
        let sample = shape
            .map(|s| silence_sample(s.format))
            .unwrap_or_else(|| vec![0]);
        let phase = (at % sample.len() as u64) as usize;
        let mut chunk: Vec<u8> = sample
            .iter()
            .cycle()
            .skip(phase)
            .take(FILL_CHUNK.min(bytes as usize))
            .copied()
            .collect();
        // Whole samples per chunk, so each chunk continues where the last one ended.
        if bytes as usize > FILL_CHUNK {
            chunk.truncate(FILL_CHUNK - FILL_CHUNK % sample.len());
        }
        Fill { bytes, chunk }
    }

    pub fn is_empty(&self) -> bool {
        self.bytes == 0
    }

    /// Bytes of silence.
    pub fn len(&self) -> u64 {
        self.bytes
    }

    /// Writes the silence by repeating the chunk and cutting the last repetition short.
    fn write_to(&self, sink: &mut dyn Sink) -> io::Result<()> {
        let mut left = self.bytes;
        while left > 0 {
            let k = left.min(self.chunk.len() as u64) as usize;
            sink.write(&self.chunk[..k])?;
            left -= k as u64;
        }
        Ok(())
    }
}

/// The most silence a gap in a stream of `shape` may add.
fn fill_limit(shape: Option<AudioShape>) -> u64 {
    shape
        .and_then(|s| s.byte_rate())
        .map(|br| br * MAX_FILL_SECONDS)
        .unwrap_or(MAX_FILL_UNKNOWN)
}

/// One sample of silence in `format`.
fn silence_sample(format: PcmFormat) -> Vec<u8> {
    let mut v = Vec::new();
    if crate::convert::encode(format, &[0.0], &mut v).is_err() || v.is_empty() {
        v = vec![format.silence_byte()];
    }
    v
}

/// What to write.
#[derive(Clone, Copy)]
pub enum Bytes<'a> {
    Audio(&'a [u8]),
    Silence(&'a Fill),
}

impl Bytes<'_> {
    fn write_to(&self, sink: &mut dyn Sink) -> io::Result<()> {
        match self {
            Bytes::Audio(d) => sink.write(d),
            Bytes::Silence(f) => f.write_to(sink),
        }
    }
}

/// What one write did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Written {
    /// Bytes taken from the stream (into its file or, failing that, stdout).
    pub taken: u64,
    /// Stdout was closed by its reader: the run ends.
    pub stdout_closed: bool,
}

/// The files (`-f`) and stdout (`-s`), across streams and reconnections.
pub struct Outputs {
    files: Option<FileTarget>,
    /// `-f`'s first file did not exist before the reader created it.
    base_created: bool,
    base_used: bool,
    /// Segments opened so far, per file index (persists across reconnections).
    seg_counters: HashMap<usize, u32>,
    stdout: Option<Stdout>,
    /// `-e`: say when a file is opened or closed.
    announce: bool,
}

impl Outputs {
    pub fn new(
        files: Option<FileTarget>,
        base_created: bool,
        stdout: bool,
        announce: bool,
    ) -> Outputs {
        Outputs {
            files,
            base_created,
            base_used: false,
            seg_counters: HashMap::new(),
            stdout: stdout.then(Stdout::new),
            announce,
        }
    }

    /// Writes `bytes` to the stream's file (opening a segment if needed) and, for the main
    /// stream, to stdout.
    pub fn write(
        &mut self,
        st: &mut StreamState,
        is_main: bool,
        bytes: Bytes<'_>,
    ) -> Result<Written, ReaderError> {
        let mut done = Written::default();
        let mut to_file = 0;
        if st
            .segment
            .as_ref()
            .is_some_and(|seg| seg.shape != st.shape())
        {
            // Audio in a new format: the file of the old one is complete.
            self.reshape(st)?;
        }
        if let (true, Some(files)) = (st.recorded, &self.files) {
            if st.segment.is_none() {
                if files.is_wav() && st.params.is_none() {
                    if !st.warned_no_params {
                        console::note(&format!(
                            "stream {}: audio before its parameters; dropped",
                            st.id()
                        ));
                        st.warned_no_params = true;
                    }
                    return Ok(done);
                }
                let index = st.file_index;
                let seg_no = self.seg_counters.entry(index).or_insert(0);
                *seg_no += 1;
                let path = files.path_for(index, *seg_no);
                if path == files.base() {
                    self.base_used = true;
                }
                let seg = Segment::create(path, files, st.shape(), st.id())?;
                if self.announce {
                    console::line(&format!(
                        "-- recording stream {} to {}{}",
                        st.id(),
                        seg.path.display(),
                        st.shape().map(|s| format!(" ({s})")).unwrap_or_default()
                    ));
                }
                st.segment = Some(seg);
            }
            if let Some(seg) = st.segment.as_mut() {
                let before = seg.bytes();
                bytes
                    .write_to(&mut SegmentSink(seg))
                    .map_err(|e| match e.downcast() {
                        Ok(re) => re,
                        Err(e) => ReaderError::file(&seg.path, e),
                    })?;
                to_file = seg.bytes() - before;
            }
        }
        if let (true, Some(out)) = (is_main, self.stdout.as_mut()) {
            let before = out.written;
            match bytes.write_to(out) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::BrokenPipe => {
                    log::info!("stdout closed: ending");
                    self.stdout = None;
                    done.stdout_closed = true;
                }
                Err(e) => return Err(ReaderError::Stdout(e)),
            }
            if to_file == 0 {
                done.taken = self.stdout.as_ref().map_or(0, |o| o.written - before);
            }
        }
        if to_file > 0 {
            done.taken = to_file;
        }
        Ok(done)
    }

    /// Closes a stream's file because its format changed (the next audio opens the next
    /// segment).
    pub fn reshape(&self, st: &mut StreamState) -> Result<(), ReaderError> {
        if let Some(seg) = st.segment.take() {
            let path = seg.path.clone();
            seg.finish()?;
            if self.announce {
                console::line(&format!(
                    "-- format changed: {} closed, the next audio starts a new segment",
                    path.display()
                ));
            }
        }
        Ok(())
    }

    /// Hands what stdout holds to its reader. `Ok(false)` when stdout was closed.
    pub fn flush_stdout(&mut self) -> Result<bool, ReaderError> {
        let Some(out) = self.stdout.as_mut() else {
            return Ok(true);
        };
        match out.flush() {
            Ok(()) => Ok(true),
            Err(e) if e.kind() == io::ErrorKind::BrokenPipe => {
                log::info!("stdout closed: ending");
                self.stdout = None;
                Ok(false)
            }
            Err(e) => Err(ReaderError::Stdout(e)),
        }
    }

    /// The end: flush stdout, and remove `-f`'s file if the reader created it and nothing
    /// was ever recorded to it (saying so if `clean`).
    pub fn finish(&mut self, clean: bool) {
        if let Some(out) = self.stdout.as_mut() {
            let _ = out.flush();
        }
        if let Some(files) = &self.files {
            if !self.base_used && self.base_created && !files.is_discard() {
                let _ = std::fs::remove_file(files.base());
                if clean {
                    console::note(&format!(
                        "no audio was recorded; {} not written",
                        files.base().display()
                    ));
                }
            }
        }
    }
}

/// Finalizes every stream's file; the first error is returned after all were tried.
pub fn close_all<'a>(
    streams: impl Iterator<Item = &'a mut StreamState>,
) -> Result<(), ReaderError> {
    let mut first_err = None;
    for st in streams {
        if let Some(seg) = st.segment.take() {
            let path = seg.path.clone();
            let bytes = seg.bytes();
            match seg.finish() {
                Ok(()) => log::info!("{}: {bytes} bytes", path.display()),
                Err(e) => {
                    first_err.get_or_insert(e);
                }
            }
        }
    }
    match first_err {
        Some(e) => Err(e),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Collect(Vec<u8>);
    impl Sink for Collect {
        fn write(&mut self, data: &[u8]) -> io::Result<()> {
            self.0.extend_from_slice(data);
            Ok(())
        }
    }

    fn shape(format: PcmFormat) -> Option<AudioShape> {
        Some(AudioShape {
            format,
            rate_hz: 8000,
            channels: 1,
        })
    }

    #[test]
    fn fill_keeps_the_sample_phase_across_chunks() {
        // U16: silence is 0x8000, little-endian 00 80. Starting at an odd offset begins with
        // the high byte.
        let f = Fill::new(0, shape(PcmFormat::U16), 1, FILL_CHUNK as u64 * 2 + 3);
        let mut c = Collect(Vec::new());
        f.write_to(&mut c).unwrap();
        assert_eq!(c.0.len(), FILL_CHUNK * 2 + 3);
        for (i, b) in c.0.iter().enumerate() {
            assert_eq!(*b, if (i + 1) % 2 == 0 { 0x00 } else { 0x80 }, "byte {i}");
        }
        let f = Fill::new(0, shape(PcmFormat::MU_LAW), 0, 5);
        let mut c = Collect(Vec::new());
        f.write_to(&mut c).unwrap();
        assert_eq!(c.0, [0xff; 5]);
    }

    #[test]
    fn implausible_gaps_are_cut() {
        let f = Fill::new(0, shape(PcmFormat::U8), 0, u64::MAX);
        assert_eq!(f.bytes, 8000 * MAX_FILL_SECONDS);
        assert!(Fill::new(0, None, 0, 0).is_empty());
    }

    #[test]
    fn stdout_on_dev_null_is_recognised() {
        use std::os::fd::AsRawFd;
        let null = std::fs::File::create("/dev/null").unwrap();
        assert!(fd_is_dev_null(null.as_raw_fd()));
        let zero = std::fs::File::open("/dev/zero").unwrap();
        assert!(!fd_is_dev_null(zero.as_raw_fd()));
        let (a, _b) = std::os::unix::net::UnixStream::pair().unwrap();
        assert!(!fd_is_dev_null(a.as_raw_fd()));
    }

    #[test]
    fn dev_null_is_recognised() {
        assert!(path_is_dev_null(std::path::Path::new("/dev/null")));
        assert!(!path_is_dev_null(std::path::Path::new("/dev/zero")));
        assert!(!path_is_dev_null(&std::env::temp_dir()));
    }
}
