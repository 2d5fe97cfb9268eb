//! `--inject FILE`: feeds the guest's capture stream, so reads of `/dev/dsp` in the guest
//! return the file.
//!
//! A WAV file is converted from its own shape to the input stream's current params (format,
//! channels and rate — see [`crate::convert`]); a raw file is taken to be in the shape given
//! by `--inject-raw`, or, without it, already in the stream's params (sent unchanged). A
//! file whose shape matches the stream is sent bit for bit.
//!
//! The audio goes to the source's [`Outlet`] in pieces of about one guest period, only while
//! the input stream is prepared or running. A thread of its own writes them with blocking
//! writes: the source takes no more while its buffer for the stream is full (the device
//! stops reading INJECT records), so the file goes at the speed the guest reads.

use std::fs::File;
use std::io::{self, BufReader, Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::sync::mpsc;

use dsproxy_wire::record::Params;

use crate::console;
use crate::convert::{AudioShape, Converter};
use crate::error::ReaderError;
use crate::source::Outlet;
use crate::wav;

/// The file being injected, positioned at its audio.
pub struct InjectSource {
    path: PathBuf,
    file: BufReader<File>,
    /// Audio bytes not yet read.
    remaining: u64,
    /// The file's shape; `None` for a raw file in the stream's own params.
    shape: Option<AudioShape>,
}

impl InjectSource {
    /// Opens `path`: a `.wav` (or any RIFF/RF64 WAVE file) by its header, anything else as
    /// raw audio of `raw_shape`.
    pub fn open(path: &Path, raw_shape: Option<AudioShape>) -> Result<InjectSource, ReaderError> {
        let err = |why: String| ReaderError::Inject {
            path: path.to_path_buf(),
            why,
        };
        let mut file = File::open(path).map_err(|e| err(e.to_string()))?;
        let mut magic = [0u8; 4];
        let n = file.read(&mut magic).map_err(|e| err(e.to_string()))?;
        let is_wav = n == 4 && (&magic == b"RIFF" || &magic == b"RF64");
        let (offset, len, shape) = if is_wav {
            let info = wav::parse(&mut file).map_err(|e| err(e.to_string()))?;
            let shape = info.shape().map_err(|e| err(e.to_string()))?;
            if raw_shape.is_some() {
                return Err(err(
                    "--inject-raw is for raw files; this is a WAV file".into()
                ));
            }
            (info.data_offset, info.data_len, Some(shape))
        } else {
            let len = file.metadata().map_err(|e| err(e.to_string()))?.len();
            (0, len, raw_shape)
        };
        file.seek(SeekFrom::Start(offset))
            .map_err(|e| err(e.to_string()))?;
        Ok(InjectSource {
            path: path.to_path_buf(),
            file: BufReader::new(file),
            remaining: len,
            shape,
        })
    }

    pub fn shape(&self) -> Option<AudioShape> {
        self.shape
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Reads up to `max` bytes (fewer only at the end).
    fn read_chunk(&mut self, max: usize, out: &mut Vec<u8>) -> io::Result<usize> {
        let want = (max as u64).min(self.remaining) as usize;
        out.resize(want, 0);
        let mut got = 0;
        while got < want {
            match self.file.read(&mut out[got..]) {
                Ok(0) => break,
                Ok(n) => got += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        out.truncate(got);
        self.remaining = if got < want {
            0
        } else {
            self.remaining - got as u64
        };
        Ok(got)
    }
}

/// Audio of one guest period (or a sane default), as a byte count in `shape`, whole frames.
fn chunk_bytes(period_bytes: u32, target: AudioShape, source: AudioShape) -> usize {
    let tfb = target.frame_bytes().unwrap_or(1).max(1) as u64;
    let period = if (64..=256 * 1024).contains(&period_bytes) {
        period_bytes as u64
    } else {
        4096
    };
    let frames = (period / tfb).max(1);
    let src_frames = (frames * source.rate_hz as u64 / target.rate_hz.max(1) as u64).max(1);
    (src_frames * source.frame_bytes().unwrap_or(1).max(1) as u64) as usize
}

enum Msg {
    Attach(Box<dyn Outlet>),
    Detach,
    /// A whole record for the device (SET_CONTROL), written between two pieces of audio.
    Request(Vec<u8>),
    Stream {
        stream: u32,
        params: Option<Params>,
        active: bool,
    },
}

/// The handle the session uses to steer the injecting thread.
pub struct Injector {
    /// `None` until the card has an input stream (QEMU opens its input voices late).
    stream: Option<u32>,
    /// `--inject-stream` named it: it never moves.
    pinned: bool,
    tx: mpsc::Sender<Msg>,
}

impl Injector {
    /// Starts the thread that injects `source` into input stream `stream` (or, if `None`,
    /// the one [`Injector::set_stream`] names later).
    pub fn spawn(source: InjectSource, stream: Option<u32>) -> io::Result<Injector> {
        let (tx, rx) = mpsc::channel();
        std::thread::Builder::new()
            .name("inject".into())
            .spawn(move || run(source, rx))?;
        Ok(Injector {
            stream,
            pinned: false,
            tx,
        })
    }

    /// `--inject-stream`: the stream is the user's choice, not the card's first.
    pub fn pin(&mut self) {
        self.pinned = true;
    }

    /// Whether the stream was named by `--inject-stream`.
    pub fn is_pinned(&self) -> bool {
        self.pinned
    }

    /// The input stream this injects into.
    pub fn stream(&self) -> Option<u32> {
        self.stream
    }

    /// Names the input stream, once the card has one.
    pub fn set_stream(&mut self, stream: u32) {
        self.stream = Some(stream);
    }

    /// A (new) connection to write on.
    pub fn attach(&self, w: Box<dyn Outlet>) {
        let _ = self.tx.send(Msg::Attach(w));
    }

    /// The connection is gone.
    pub fn detach(&self) {
        let _ = self.tx.send(Msg::Detach);
    }

    /// Writes a request record (an encoded SET_CONTROL) on the connection, between two INJECT
    /// records: the socket carries both, and a record must not cut into another.
    pub fn request(&self, frame: Vec<u8>) {
        let _ = self.tx.send(Msg::Request(frame));
    }

    /// The input stream's params and whether it is prepared or running.
    pub fn update(&self, params: Option<Params>, active: bool) {
        let Some(stream) = self.stream else { return };
        let _ = self.tx.send(Msg::Stream {
            stream,
            params,
            active,
        });
    }
}

fn run(mut src: InjectSource, rx: mpsc::Receiver<Msg>) {
    let mut writer: Option<Box<dyn Outlet>> = None;
    let mut stream = 0;
    let mut params: Option<Params> = None;
    let mut active = false;
    let mut conv: Option<Converter> = None;
    let mut complained_about: Option<Params> = None;
    let mut sent: u64 = 0;
    let mut raw = Vec::new();
    let mut converted = Vec::new();
    loop {
        let ready = active && writer.is_some() && conv.is_some() && src.remaining > 0;
        let msg = if ready {
            match rx.try_recv() {
                Ok(m) => Some(m),
                Err(mpsc::TryRecvError::Empty) => None,
                Err(mpsc::TryRecvError::Disconnected) => return,
            }
        } else {
            match rx.recv() {
                Ok(m) => Some(m),
                Err(_) => return,
            }
        };
        if let Some(m) = msg {
            match m {
                Msg::Attach(w) => writer = Some(w),
                Msg::Detach => writer = None,
                Msg::Request(frame) => {
                    if let Some(w) = writer.as_mut() {
                        if let Err(e) = w.request(&frame) {
                            log::info!("sending a request: {e}");
                            writer = None;
                        }
                    }
                }
                Msg::Stream {
                    stream: s,
                    params: p,
                    active: a,
                } => {
                    stream = s;
                    active = a;
                    if p != params {
                        params = p;
                        conv = params.and_then(|p| match converter_for(&src, &p) {
                            Ok(c) => Some(c),
                            Err(why) => {
                                if complained_about != Some(p) {
                                    console::note(&format!(
                                        "--inject {}: {why}",
                                        src.path().display()
                                    ));
                                    complained_about = Some(p);
                                }
                                None
                            }
                        });
                    }
                }
            }
            continue;
        }
        // Ready: one chunk.
        let (Some(c), Some(p), Some(w)) = (conv.as_mut(), params, writer.as_mut()) else {
            continue;
        };
        let want = chunk_bytes(p.period_bytes, c.to(), c.from());
        if let Err(e) = src.read_chunk(want, &mut raw) {
            console::note(&format!("--inject {}: {e}", src.path().display()));
            src.remaining = 0;
            continue;
        }
        converted.clear();
        if let Err(e) = c.convert(&raw, &mut converted) {
            console::note(&format!("--inject {}: {e}", src.path().display()));
            src.remaining = 0;
            continue;
        }
        let failed = w.inject(stream, &converted).is_err();
        if !failed {
            sent += converted.len() as u64;
        }
        if failed {
            // The connection went away; a reconnection attaches a new one.
            writer = None;
        } else if src.remaining == 0 {
            log::info!(
                "--inject {}: done, {sent} bytes sent to stream {stream}",
                src.path().display()
            );
        }
    }
}

fn converter_for(src: &InjectSource, p: &Params) -> Result<Converter, String> {
    let target = AudioShape::from_params(p).ok_or_else(|| {
        format!(
            "the input stream's params (format {}, rate code {}) are not ones the reader knows",
            p.format, p.rate
        )
    })?;
    let from = src.shape().unwrap_or(target);
    Converter::new(from, target).map_err(|e| format!("cannot convert {from} to {target}: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wav::{WavSpec, WavWriter};
    use dsproxy_wire::PcmFormat;

    fn tmp(name: &str) -> PathBuf {
        std::env::temp_dir().join(format!("dsproxy-inject-{}-{name}", std::process::id()))
    }

    fn write_wav(path: &Path, shape: AudioShape, data: &[u8]) {
        let f = std::io::BufWriter::new(File::create(path).unwrap());
        let mut w = WavWriter::new(f, WavSpec::for_shape(shape).unwrap()).unwrap();
        w.write(data).unwrap();
        w.finalize().unwrap();
    }

    #[test]
    fn wav_source_is_found_and_converted() {
        let p = tmp("a.wav");
        let shape = AudioShape {
            format: PcmFormat::S16,
            rate_hz: 8000,
            channels: 1,
        };
        let data: Vec<u8> = (0..800i16).flat_map(|i| (i * 10).to_le_bytes()).collect();
        write_wav(&p, shape, &data);
        let mut src = InjectSource::open(&p, None).unwrap();
        assert_eq!(src.shape(), Some(shape));
        assert_eq!(src.remaining, data.len() as u64);

        // Target: U8 stereo 16 kHz.
        let params = Params {
            stream: 1,
            buffer_bytes: 4096,
            period_bytes: 1024,
            features: 0,
            channels: 2,
            format: PcmFormat::U8.code(),
            rate: dsproxy_wire::PcmRate::from_hz(16000).unwrap().code(),
        };
        let mut c = converter_for(&src, &params).unwrap();
        assert!(!c.is_passthrough());
        // One period of the target (512 frames) is 256 source frames.
        assert_eq!(chunk_bytes(1024, c.to(), c.from()), 512);
        let mut raw = Vec::new();
        let mut out = Vec::new();
        while src.read_chunk(512, &mut raw).unwrap() > 0 {
            c.convert(&raw, &mut out).unwrap();
        }
        assert_eq!(src.remaining, 0);
        let frames = out.len() / 2;
        assert!((1598..=1600).contains(&frames), "{frames}");
        // Both channels equal, rising like the source.
        for f in out.chunks_exact(2) {
            assert_eq!(f[0], f[1]);
        }
        assert!(out[0] == 0x80 && out[out.len() - 2] > 0x80 + 30);
        std::fs::remove_file(&p).unwrap();
    }

    #[test]
    fn matching_wav_passes_through_and_raw_defaults_to_stream_params() {
        let p = tmp("b.wav");
        let shape = AudioShape {
            format: PcmFormat::S16,
            rate_hz: 48000,
            channels: 2,
        };
        write_wav(&p, shape, &[1, 2, 3, 4]);
        let src = InjectSource::open(&p, None).unwrap();
        let params = Params {
            stream: 1,
            buffer_bytes: 0,
            period_bytes: 0,
            features: 0,
            channels: 2,
            format: PcmFormat::S16.code(),
            rate: dsproxy_wire::PcmRate::R48000.code(),
        };
        assert!(converter_for(&src, &params).unwrap().is_passthrough());
        assert!(InjectSource::open(&p, Some(shape)).is_err());
        std::fs::remove_file(&p).unwrap();

        let p = tmp("c.raw");
        std::fs::write(&p, [9u8; 10]).unwrap();
        let src = InjectSource::open(&p, None).unwrap();
        assert_eq!(src.shape(), None);
        assert!(converter_for(&src, &params).unwrap().is_passthrough());
        std::fs::remove_file(&p).unwrap();

        let e = InjectSource::open(&tmp("missing"), None).err().unwrap();
        assert!(e.to_string().starts_with("--inject "), "{e}");
    }
}
