//! A tiny in-process fake device for end-to-end tests of the reader binary: a unix socket
//! speaking the tap protocol with dsproxy-wire records, plus helpers to run the reader and
//! collect its output.

#![allow(dead_code)]

use std::io::{Read, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use dsproxy_wire::record::{
    ControlDesc, ControlOrigin, Direction, Hello, Params, Record, StreamDesc,
};
use dsproxy_wire::{PcmFormat, PcmRate, RecordReader};

pub const WAIT: Duration = Duration::from_secs(20);

static COUNTER: AtomicU32 = AtomicU32::new(0);

/// A private directory, removed on drop.
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new(tag: &str) -> TempDir {
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let p = std::env::temp_dir().join(format!(
            "dsproxy-reader-test-{tag}-{}-{n}",
            std::process::id()
        ));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p).unwrap();
        TempDir(p)
    }
    pub fn join(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// The fake device's listening socket.
pub struct FakeDevice {
    pub dir: TempDir,
    pub sock: PathBuf,
    listener: UnixListener,
}

impl FakeDevice {
    pub fn new(tag: &str) -> FakeDevice {
        let dir = TempDir::new(tag);
        let sock = dir.join("tap.sock");
        let listener = UnixListener::bind(&sock).unwrap();
        listener.set_nonblocking(true).unwrap();
        FakeDevice {
            dir,
            sock,
            listener,
        }
    }

    /// Waits for the reader to connect.
    pub fn accept(&self) -> Conn {
        let deadline = Instant::now() + WAIT;
        loop {
            match self.listener.accept() {
                Ok((s, _)) => {
                    s.set_nonblocking(false).unwrap();
                    s.set_read_timeout(Some(WAIT)).unwrap();
                    return Conn { s };
                }
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                    assert!(Instant::now() < deadline, "the reader never connected");
                    std::thread::sleep(Duration::from_millis(10));
                }
                Err(e) => panic!("accept: {e}"),
            }
        }
    }

    /// Accepts, says HELLO, and returns the reader's SUBSCRIBE.
    pub fn accept_subscribed(&self, hello: &Hello) -> (Conn, Record) {
        let mut c = self.accept();
        c.send(&Record::Hello(hello.clone()));
        let sub = c.recv();
        assert!(matches!(sub, Record::Subscribe { .. }), "{sub:?}");
        (c, sub)
    }
}

/// One connection from the reader.
pub struct Conn {
    pub s: UnixStream,
}

impl Conn {
    pub fn send(&mut self, r: &Record) {
        self.s.write_all(&r.to_bytes().unwrap()).unwrap();
    }
    /// Sends, failing softly when the reader has gone (it may end a capture by itself).
    pub fn try_send(&mut self, r: &Record) -> std::io::Result<()> {
        self.s.write_all(&r.to_bytes().unwrap())
    }
    pub fn send_all(&mut self, rs: &[Record]) {
        let mut buf = Vec::new();
        for r in rs {
            r.encode(&mut buf).unwrap();
        }
        self.s.write_all(&buf).unwrap();
    }
    pub fn send_raw(&mut self, b: &[u8]) {
        self.s.write_all(b).unwrap();
    }
    /// Reads one record from the reader.
    pub fn recv(&mut self) -> Record {
        let mut r = RecordReader::new(&mut self.s);
        r.next_record().unwrap().expect("the reader closed")
    }
    pub fn close(self) {
        let _ = self.s.shutdown(std::net::Shutdown::Both);
    }
}

pub fn out_stream(id: u32) -> StreamDesc {
    StreamDesc {
        id,
        direction: Direction::Output,
        channels_min: 1,
        channels_max: 8,
        formats: u64::MAX >> (64 - 25),
        rates: (1 << 14) - 1,
    }
}

pub fn in_stream(id: u32) -> StreamDesc {
    StreamDesc {
        direction: Direction::Input,
        ..out_stream(id)
    }
}

pub fn control(id: u32, name: &str, index: u32, ctype: u32, count: u32, max: i64) -> ControlDesc {
    ControlDesc {
        id,
        name: name.into(),
        index,
        role: if ctype == 0 { 2 } else { 1 },
        ctype,
        count,
        min: 0,
        max,
        step: 1,
        db_min: 0,
        db_step: 0,
    }
}

/// A card like dsproxy-device's default: one output, one input, a Master/PCM/Capture mixer.
pub fn hello() -> Hello {
    hello_with(vec![out_stream(0), in_stream(1)])
}

pub fn hello_with(streams: Vec<StreamDesc>) -> Hello {
    Hello {
        version: dsproxy_wire::record::PROTOCOL_VERSION,
        time_ns: 1,
        name: "fake".into(),
        jacks: 0,
        chmaps: 0,
        streams,
        controls: vec![
            control(0, "Master Playback Volume", 0, 1, 2, 255),
            control(1, "Master Playback Switch", 0, 0, 1, 1),
            control(2, "PCM Playback Volume", 0, 1, 2, 255),
            control(3, "Capture Volume", 0, 1, 2, 100),
        ],
    }
}

pub fn params(stream: u32, format: PcmFormat, rate: u32, channels: u8, period: u32) -> Record {
    Record::Params(Params {
        stream,
        buffer_bytes: period * 4,
        period_bytes: period,
        features: 0,
        channels,
        format: format.code(),
        rate: PcmRate::from_hz(rate).unwrap().code(),
    })
}

pub fn pcm(stream: u32, offset: u64, data: &[u8]) -> Record {
    Record::Pcm {
        stream,
        offset,
        time_ns: 1_000 + offset,
        data: data.to_vec(),
    }
}

pub fn prepare(stream: u32) -> Record {
    Record::Prepare { stream, time_ns: 2 }
}
pub fn start(stream: u32) -> Record {
    Record::Start { stream, time_ns: 3 }
}
pub fn stop(stream: u32, drained: bool, discarded_bytes: u64) -> Record {
    Record::Stop {
        stream,
        time_ns: 4,
        drained,
        discarded_bytes,
    }
}
pub fn release(stream: u32) -> Record {
    Record::Release { stream, time_ns: 5 }
}
pub fn initial_controls() -> Vec<Record> {
    (0..4)
        .map(|id| Record::Control {
            id,
            origin: ControlOrigin::Initial,
            values: if id == 1 { vec![1] } else { vec![255, 255] },
        })
        .collect()
}

/// The records of a guest playing `audio` (in `period` pieces) on stream 0 from PREPARE to
/// RELEASE.
pub fn playback(stream: u32, audio: &[u8], period: usize) -> Vec<Record> {
    let mut v = vec![prepare(stream), start(stream)];
    let mut off = 0u64;
    for chunk in audio.chunks(period) {
        v.push(pcm(stream, off, chunk));
        off += chunk.len() as u64;
    }
    v.push(stop(stream, true, 0));
    v.push(release(stream));
    v
}

/// Deterministic "audio".
pub fn noise(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
    (0..len)
        .map(|_| {
            x = x
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            (x >> 56) as u8
        })
        .collect()
}

/// A running reader binary with its outputs collected on threads.
pub struct Reader {
    pub child: Child,
    out: Option<JoinHandle<Vec<u8>>>,
    err: Option<JoinHandle<String>>,
    /// stderr as it arrives.
    err_so_far: Arc<Mutex<String>>,
}

pub struct Finished {
    pub status: ExitStatus,
    pub stdout: Vec<u8>,
    pub stderr: String,
}

impl Reader {
    pub fn spawn(args: &[&str]) -> Reader {
        Self::spawn_with(args, |_| {})
    }

    pub fn spawn_with(args: &[&str], f: impl FnOnce(&mut Command)) -> Reader {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_dsproxy-host-reader"));
        cmd.args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .env_remove("RUST_LOG");
        f(&mut cmd);
        let mut child = cmd.spawn().unwrap();
        let mut so = child.stdout.take();
        let se = child.stderr.take().unwrap();
        let out = so.take().map(|mut so| {
            std::thread::spawn(move || {
                let mut v = Vec::new();
                let _ = so.read_to_end(&mut v);
                v
            })
        });
        let (err, err_so_far) = collect_stderr(se);
        Reader {
            child,
            out,
            err: Some(err),
            err_so_far,
        }
    }

    /// What the reader has written to stderr so far.
    pub fn stderr_so_far(&self) -> String {
        self.err_so_far.lock().unwrap().clone()
    }

    /// Takes the child's stdout away (to close it early, for EPIPE tests).
    pub fn without_stdout_thread(args: &[&str]) -> (Reader, std::process::ChildStdout) {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_dsproxy-host-reader"));
        cmd.args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .env_remove("RUST_LOG");
        let mut child = cmd.spawn().unwrap();
        let so = child.stdout.take().unwrap();
        let se = child.stderr.take().unwrap();
        let (err, err_so_far) = collect_stderr(se);
        (
            Reader {
                child,
                out: None,
                err: Some(err),
                err_so_far,
            },
            so,
        )
    }

    /// Whether the reader has exited (by itself).
    pub fn exited(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(Some(_)))
    }

    pub fn signal(&self, sig: i32) {
        // SAFETY: plain kill(2) on our own child.
        unsafe {
            libc::kill(self.child.id() as i32, sig);
        }
    }

    /// Waits for the exit (killing it after `WAIT`, which fails the test).
    pub fn finish(mut self) -> Finished {
        let deadline = Instant::now() + WAIT;
        let status = loop {
            if let Some(s) = self.child.try_wait().unwrap() {
                break s;
            }
            if Instant::now() > deadline {
                let _ = self.child.kill();
                let _ = self.child.wait();
                let err = self
                    .err
                    .take()
                    .map(|h| h.join().unwrap())
                    .unwrap_or_default();
                panic!("the reader did not exit; stderr:\n{err}");
            }
            std::thread::sleep(Duration::from_millis(10));
        };
        let stdout = self
            .out
            .take()
            .map(|h| h.join().unwrap())
            .unwrap_or_default();
        let stderr = self
            .err
            .take()
            .map(|h| h.join().unwrap())
            .unwrap_or_default();
        Finished {
            status,
            stdout,
            stderr,
        }
    }
}

impl Drop for Reader {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// Reads stderr on a thread, keeping a shared copy as it grows.
fn collect_stderr(mut se: std::process::ChildStderr) -> (JoinHandle<String>, Arc<Mutex<String>>) {
    let shared = Arc::new(Mutex::new(String::new()));
    let s2 = shared.clone();
    let h = std::thread::spawn(move || {
        let mut buf = [0u8; 4096];
        loop {
            match se.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => s2
                    .lock()
                    .unwrap()
                    .push_str(&String::from_utf8_lossy(&buf[..n])),
            }
        }
        let s = s2.lock().unwrap().clone();
        s
    });
    (h, shared)
}

/// Waits until `cond` holds (polling), failing after `WAIT`.
pub fn wait_until(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + WAIT;
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The audio of a WAV file we wrote (after the 80-byte PCM header), checking the header's
/// sizes against the file.
pub fn wav_data(path: &Path) -> Vec<u8> {
    let file = std::fs::read(path).unwrap();
    let mut c = std::io::Cursor::new(&file);
    let info = dsproxy_host_reader::wav::parse(&mut c).unwrap();
    let start = info.data_offset as usize;
    let data = file[start..start + info.data_len as usize].to_vec();
    let riff = u32::from_le_bytes(file[4..8].try_into().unwrap()) as usize;
    let pad = data.len() % 2;
    assert_eq!(riff + 8, file.len(), "RIFF size of {}", path.display());
    assert_eq!(start + data.len() + pad, file.len());
    data
}
