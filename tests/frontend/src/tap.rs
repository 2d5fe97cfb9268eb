//! A tap reader for tests: connects to the device's tap socket, subscribes, and collects the
//! records on a background thread so the test can drive the frontend meanwhile.

use std::io::Write;
use std::net::Shutdown;
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use dsproxy_wire::record::{Hello, Record};
use dsproxy_wire::RecordReader;

use crate::error::TapError;

/// A record and when the reader thread received it.
#[derive(Debug, Clone)]
pub struct TimedRecord {
    pub at: Instant,
    pub record: Record,
}

enum Msg {
    Record(TimedRecord),
    End(String),
}

/// A connected tap reader.
pub struct TapReader {
    sock: UnixStream,
    rx: Receiver<Msg>,
    thread: Option<JoinHandle<()>>,
    pub hello: Hello,
    /// Every record received after HELLO, in order.
    history: Vec<TimedRecord>,
    /// How many records of `history` `next` has handed out.
    cursor: usize,
    ended: Option<String>,
}

impl TapReader {
    /// Connects (retrying until `timeout` while the socket does not exist or refuses), reads
    /// HELLO and subscribes with `flags` to the streams in `streams` (0 = all).
    pub fn connect(
        path: impl AsRef<Path>,
        flags: u32,
        streams: u64,
        timeout: Duration,
    ) -> Result<TapReader, TapError> {
        let mut r = Self::connect_unsubscribed(path, timeout)?;
        r.subscribe(flags, streams)?;
        Ok(r)
    }

    /// Connects and reads HELLO, without subscribing (such a reader does not count as
    /// attached).
    pub fn connect_unsubscribed(
        path: impl AsRef<Path>,
        timeout: Duration,
    ) -> Result<TapReader, TapError> {
        let path = path.as_ref();
        let deadline = Instant::now() + timeout;
        let sock = loop {
            match UnixStream::connect(path) {
                Ok(s) => break s,
                Err(e) if Instant::now() < deadline => {
                    log::debug!("tap connect {}: {e}; retrying", path.display());
                    std::thread::sleep(Duration::from_millis(20));
                }
                Err(e) => {
                    return Err(TapError::Connect {
                        path: path.display().to_string(),
                        source: e,
                    })
                }
            }
        };
        let read_side = sock.try_clone()?;
        let (tx, rx) = mpsc::channel();
        let thread = std::thread::Builder::new()
            .name("tap-reader".into())
            .spawn(move || {
                let mut rr = RecordReader::new(read_side);
                loop {
                    match rr.next_record() {
                        Ok(Some(record)) => {
                            let m = Msg::Record(TimedRecord {
                                at: Instant::now(),
                                record,
                            });
                            if tx.send(m).is_err() {
                                return;
                            }
                        }
                        Ok(None) => {
                            let _ = tx.send(Msg::End("closed by the device".into()));
                            return;
                        }
                        Err(e) => {
                            let _ = tx.send(Msg::End(e.to_string()));
                            return;
                        }
                    }
                }
            })?;
        let hello = match rx.recv_timeout(timeout.max(Duration::from_secs(1))) {
            Ok(Msg::Record(TimedRecord {
                record: Record::Hello(h),
                ..
            })) => h,
            Ok(Msg::Record(r)) => return Err(TapError::NoHello(r.record.kind_name().into())),
            Ok(Msg::End(e)) => return Err(TapError::Closed(e)),
            Err(_) => return Err(TapError::NoHello("nothing".into())),
        };
        Ok(TapReader {
            sock,
            rx,
            thread: Some(thread),
            hello,
            history: Vec::new(),
            cursor: 0,
            ended: None,
        })
    }

    /// Sends SUBSCRIBE.
    pub fn subscribe(&mut self, flags: u32, streams: u64) -> Result<(), TapError> {
        self.send(&Record::Subscribe { flags, streams })
    }

    /// Sends a record (SUBSCRIBE, SET_CONTROL, INJECT) to the device.
    pub fn send(&mut self, rec: &Record) -> Result<(), TapError> {
        let b = rec.to_bytes()?;
        self.sock.write_all(&b)?;
        Ok(())
    }

    pub fn set_control(&mut self, id: u32, values: &[i64]) -> Result<(), TapError> {
        self.send(&Record::SetControl {
            id,
            values: values.to_vec(),
        })
    }

    /// Moves records that have arrived into the history; waits up to `timeout` for one.
    fn pull(&mut self, timeout: Duration) -> bool {
        if self.ended.is_some() {
            return false;
        }
        let first = match self.rx.recv_timeout(timeout) {
            Ok(m) => m,
            Err(RecvTimeoutError::Timeout) => return false,
            Err(RecvTimeoutError::Disconnected) => {
                self.ended = Some("reader thread gone".into());
                return false;
            }
        };
        let mut m = Some(first);
        while let Some(msg) = m.take() {
            match msg {
                Msg::Record(r) => self.history.push(r),
                Msg::End(e) => {
                    self.ended = Some(e);
                    break;
                }
            }
            m = self.rx.try_recv().ok();
        }
        true
    }

    /// The next record not yet handed out, waiting up to `timeout`.
    pub fn next(&mut self, timeout: Duration) -> Option<TimedRecord> {
        let deadline = Instant::now() + timeout;
        while self.cursor >= self.history.len() {
            let now = Instant::now();
            if (now >= deadline || !self.pull(deadline - now)) && self.cursor >= self.history.len()
            {
                return None;
            }
        }
        self.cursor += 1;
        Some(self.history[self.cursor - 1].clone())
    }

    /// Skips forward to the first not-yet-handed-out record matching `pred`, waiting up to
    /// `timeout`.
    pub fn wait_for(
        &mut self,
        what: &str,
        timeout: Duration,
        mut pred: impl FnMut(&Record) -> bool,
    ) -> Result<TimedRecord, TapError> {
        let deadline = Instant::now() + timeout;
        loop {
            while self.cursor < self.history.len() {
                self.cursor += 1;
                if pred(&self.history[self.cursor - 1].record) {
                    return Ok(self.history[self.cursor - 1].clone());
                }
            }
            let now = Instant::now();
            if now >= deadline {
                return Err(self.timeout(what, timeout));
            }
            if !self.pull(deadline - now) {
                if let Some(e) = &self.ended {
                    if self.cursor >= self.history.len() {
                        return Err(TapError::Closed(format!(
                            "{e} while waiting for {what}; records seen: {}",
                            self.summary()
                        )));
                    }
                }
            }
        }
    }

    fn timeout(&self, what: &str, after: Duration) -> TapError {
        TapError::Timeout {
            what: what.into(),
            after,
            seen: self.summary(),
        }
    }

    /// Collects everything that arrives within `dur`.
    pub fn drain_for(&mut self, dur: Duration) {
        let deadline = Instant::now() + dur;
        loop {
            let now = Instant::now();
            if now >= deadline {
                break;
            }
            self.pull(deadline - now);
            if self.ended.is_some() {
                break;
            }
        }
    }

    /// Every record received so far (after HELLO).
    pub fn history(&mut self) -> &[TimedRecord] {
        while self.pull(Duration::ZERO) {}
        &self.history
    }

    /// Record kinds seen so far, compressed ("PCM×12"), for failure messages.
    pub fn summary(&self) -> String {
        let mut out: Vec<(String, usize)> = Vec::new();
        for r in &self.history {
            let name = match &r.record {
                Record::Pcm { stream, .. } => format!("PCM[{stream}]"),
                Record::Params(p) => format!("PARAMS[{}]", p.stream),
                Record::Prepare { stream, .. } => format!("PREPARE[{stream}]"),
                Record::Start { stream, .. } => format!("START[{stream}]"),
                Record::Stop {
                    stream, drained, ..
                } => format!("STOP[{stream}{}]", if *drained { ",drained" } else { "" }),
                Record::Release { stream, .. } => format!("RELEASE[{stream}]"),
                Record::Frontend { connected, .. } => format!("FRONTEND[{connected}]"),
                r => r.kind_name().to_string(),
            };
            match out.last_mut() {
                Some((n, c)) if *n == name => *c += 1,
                _ => out.push((name, 1)),
            }
        }
        let mut s: Vec<String> = out
            .into_iter()
            .map(|(n, c)| if c > 1 { format!("{n}×{c}") } else { n })
            .collect();
        if let Some(e) = &self.ended {
            s.push(format!("<end: {e}>"));
        }
        s.join(" ")
    }

    /// The PCM bytes of `stream` received so far, in order, checking that each record starts
    /// where the previous ended (offsets restart at 0 after a PREPARE).
    pub fn pcm(&mut self, stream: u32) -> Result<Vec<u8>, TapError> {
        while self.pull(Duration::ZERO) {}
        pcm_of(self.history.iter().map(|r| &r.record), stream)
    }

    /// Waits until `bytes` PCM bytes of `stream` have arrived (counted since the start of the
    /// history).
    pub fn wait_pcm_bytes(
        &mut self,
        stream: u32,
        bytes: usize,
        timeout: Duration,
    ) -> Result<Vec<u8>, TapError> {
        let deadline = Instant::now() + timeout;
        loop {
            let got = self.pcm(stream)?;
            if got.len() >= bytes {
                return Ok(got);
            }
            let now = Instant::now();
            if now >= deadline {
                return Err(self.timeout(
                    &format!("{bytes} PCM bytes of stream {stream} (have {})", got.len()),
                    timeout,
                ));
            }
            self.pull(deadline - now);
            if self.ended.is_some() && !self.pull(Duration::ZERO) {
                return Err(TapError::Closed(format!(
                    "{} after {} of {bytes} PCM bytes",
                    self.ended.clone().unwrap_or_default(),
                    got.len()
                )));
            }
        }
    }

    /// Whether the device closed the connection.
    pub fn ended(&self) -> Option<&str> {
        self.ended.as_deref()
    }
}

/// Concatenates the PCM records of `stream`, checking offsets.
pub fn pcm_of<'a>(
    records: impl Iterator<Item = &'a Record>,
    stream: u32,
) -> Result<Vec<u8>, TapError> {
    let mut out = Vec::new();
    let mut expected = 0u64;
    let mut base = 0usize;
    for r in records {
        match r {
            Record::Prepare { stream: s, .. } if *s == stream => {
                expected = 0;
                base = out.len();
            }
            Record::Pcm {
                stream: s,
                offset,
                data,
                ..
            } if *s == stream => {
                if *offset != expected {
                    // A reader joining mid-stream starts at whatever offset the card is at.
                    if out.len() == base && expected == 0 {
                        expected = *offset;
                    } else {
                        return Err(TapError::Discontiguous {
                            stream,
                            expected,
                            got: *offset,
                        });
                    }
                }
                out.extend_from_slice(data);
                expected += data.len() as u64;
            }
            _ => {}
        }
    }
    Ok(out)
}

impl Drop for TapReader {
    fn drop(&mut self) {
        let _ = self.sock.shutdown(Shutdown::Both);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}
