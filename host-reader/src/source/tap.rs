//! The device's tap as a source: connect over a unix socket or TCP, read its HELLO, send
//! SUBSCRIBE, then read records on a thread of their own. `--mixer` requests and `--inject`
//! audio go back on the same socket as records.

use std::io::{self, BufReader, Read, Write};
use std::net::{Shutdown, TcpStream, ToSocketAddrs};
use std::os::unix::net::UnixStream;
use std::time::Duration;

use dsproxy_wire::record::{FrameHeader, Hello, Record, MAX_PAYLOAD, SUB_LIVE, SUB_NO_PACING};
use dsproxy_wire::{ReadError, RecordReader, WireError};

use super::{Attached, Closed, Link, Outbox, Outlet, Plan, Source, SourceEvent};
use crate::cli::Target;
use crate::error::ReaderError;

/// How long the device may take to say HELLO (it sends it at once).
const HELLO_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a TCP connect may take per address.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// Reads the tap's records through one buffer (from HELLO on, so nothing read ahead is lost).
pub type TapReader = RecordReader<BufReader<TapStream>>;

/// A connected tap socket of either kind.
#[derive(Debug)]
pub enum TapStream {
    Unix(UnixStream),
    Tcp(TcpStream),
}

impl TapStream {
    pub fn try_clone(&self) -> io::Result<TapStream> {
        Ok(match self {
            TapStream::Unix(s) => TapStream::Unix(s.try_clone()?),
            TapStream::Tcp(s) => TapStream::Tcp(s.try_clone()?),
        })
    }

    /// Shuts both directions: a thread blocked reading or writing it returns.
    pub fn shutdown(&self) {
        let _ = match self {
            TapStream::Unix(s) => s.shutdown(Shutdown::Both),
            TapStream::Tcp(s) => s.shutdown(Shutdown::Both),
        };
    }

    fn set_read_timeout(&self, t: Option<Duration>) -> io::Result<()> {
        match self {
            TapStream::Unix(s) => s.set_read_timeout(t),
            TapStream::Tcp(s) => s.set_read_timeout(t),
        }
    }
}

impl Read for TapStream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            TapStream::Unix(s) => s.read(buf),
            TapStream::Tcp(s) => s.read(buf),
        }
    }
}

impl Write for TapStream {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            TapStream::Unix(s) => s.write(buf),
            TapStream::Tcp(s) => s.write(buf),
        }
    }
    fn flush(&mut self) -> io::Result<()> {
        match self {
            TapStream::Unix(s) => s.flush(),
            TapStream::Tcp(s) => s.flush(),
        }
    }
}

impl Outlet for TapStream {
    fn request(&mut self, frame: &[u8]) -> io::Result<()> {
        self.write_all(frame)
    }

    /// INJECT records of at most one payload each. The device stops reading them while its
    /// buffer for the stream is full, so the socket's flow control paces the writer.
    fn inject(&mut self, stream: u32, data: &[u8]) -> io::Result<()> {
        let mut frame = Vec::new();
        for piece in data.chunks(MAX_PAYLOAD as usize - 4) {
            frame.clear();
            Record::Inject {
                stream,
                data: piece.to_vec(),
            }
            .encode(&mut frame)
            .map_err(io::Error::other)?;
            self.write_all(&frame)?;
        }
        Ok(())
    }
}

impl Link for TapStream {
    fn shutdown(&self) {
        TapStream::shutdown(self)
    }
}

/// The tap of a dsproxy-device.
pub struct TapSource {
    pub target: Target,
    pub sub: SubscribeOptions,
    /// Bytes read from the socket at once: many records per read when the device sends fast
    /// ([`Batching::read_buffer`](super::Batching)).
    pub read_buffer: usize,
}

impl Source for TapSource {
    fn target(&self) -> String {
        self.target.to_string()
    }

    fn attach(&mut self, plan: &mut Plan<'_>, outbox: Outbox) -> Result<Attached, ReaderError> {
        let Subscribed {
            hello,
            reader,
            control,
        } = subscribe(&self.target, self.sub, self.read_buffer, plan)?;
        let outlet = control.try_clone().map_err(|e| ReaderError::Handshake {
            target: self.target(),
            why: e.to_string(),
        })?;
        spawn_reader(reader, outbox, self.target()).map_err(|e| ReaderError::Connect {
            target: "the tap".into(),
            source: e,
            hint: " (cannot start the socket thread)",
        })?;
        Ok(Attached {
            hello,
            outlet: Some(Box::new(outlet)),
            link: Box::new(control),
        })
    }

    fn retryable(&self, e: &ReaderError) -> bool {
        matches!(
            e,
            ReaderError::Connect { .. } | ReaderError::Handshake { .. }
        )
    }
}

/// Reads records until the connection ends, passing them to the main loop: every record
/// already in the read buffer goes in one batch, so the hand-off (a thread wake-up) is paid
/// per read of the socket, not per record, and a record waits only while the next one is
/// being decoded from memory — never for the socket.
fn spawn_reader(mut reader: TapReader, outbox: Outbox, target: String) -> io::Result<()> {
    std::thread::Builder::new()
        .name("tap".into())
        .spawn(move || {
            let mut batch = Vec::new();
            loop {
                let closed = match reader.next_record() {
                    Ok(Some(rec)) => {
                        batch.push(rec);
                        if FrameHeader::frame_ready(reader.get_ref().buffer()) {
                            continue;
                        }
                        None
                    }
                    Ok(None) => Some(Closed::Gone(None)),
                    Err(ReadError::Io(e)) => Some(Closed::Gone(Some(e.to_string()))),
                    Err(ReadError::TruncatedStream) => Some(Closed::Truncated),
                    Err(e) => Some(Closed::Broken(ReaderError::Malformed {
                        target: target.clone(),
                        source: e,
                    })),
                };
                if !batch.is_empty() && !outbox.send_records(std::mem::take(&mut batch)) {
                    return;
                }
                if let Some(why) = closed {
                    outbox.send(SourceEvent::Closed(why));
                    return;
                }
            }
        })
        .map(|_| ())
}

/// What to ask of the device.
#[derive(Debug, Clone, Copy, Default)]
pub struct SubscribeOptions {
    pub live: bool,
    pub no_pacing: bool,
}

impl SubscribeOptions {
    pub fn flags(&self) -> u32 {
        (if self.live { SUB_LIVE } else { 0 }) | (if self.no_pacing { SUB_NO_PACING } else { 0 })
    }
}

/// An attached, subscribed tap.
pub struct Subscribed {
    pub hello: Hello,
    /// Reads the records that follow.
    pub reader: TapReader,
    /// A second handle on the socket: for INJECT records and for shutting it down.
    pub control: TapStream,
}

/// Opens the socket.
pub fn connect(target: &Target) -> Result<TapStream, ReaderError> {
    let fail = |source: io::Error| {
        let hint = match (target, source.kind()) {
            (Target::Unix(_), io::ErrorKind::NotFound | io::ErrorKind::ConnectionRefused) => {
                " (is dsproxy-device running? -u PATH names another socket)"
            }
            (Target::Tcp { .. }, io::ErrorKind::ConnectionRefused) => {
                " (is dsproxy-device listening there with --listen?)"
            }
            _ => "",
        };
        ReaderError::Connect {
            target: target.to_string(),
            source,
            hint,
        }
    };
    match target {
        Target::Unix(p) => UnixStream::connect(p).map(TapStream::Unix).map_err(fail),
        Target::Tcp { host, port } => {
            let addrs = (host.as_str(), *port).to_socket_addrs().map_err(fail)?;
            let mut last = io::Error::new(io::ErrorKind::NotFound, "no address for that host");
            for a in addrs {
                match TcpStream::connect_timeout(&a, CONNECT_TIMEOUT) {
                    Ok(s) => {
                        let _ = s.set_nodelay(true);
                        return Ok(TapStream::Tcp(s));
                    }
                    Err(e) => last = e,
                }
            }
            Err(fail(last))
        }
    }
}

/// Connects, reads HELLO and subscribes to `streams` (a stream mask; 0 = all). `choose`
/// sees the HELLO first and returns the stream mask, or refuses the card.
pub fn subscribe(
    target: &Target,
    opts: SubscribeOptions,
    read_buffer: usize,
    choose: &mut Plan<'_>,
) -> Result<Subscribed, ReaderError> {
    let stream = connect(target)?;
    let handshake = |why: String| ReaderError::Handshake {
        target: target.to_string(),
        why,
    };
    stream
        .set_read_timeout(Some(HELLO_TIMEOUT))
        .map_err(|e| handshake(e.to_string()))?;
    let control = stream.try_clone().map_err(|e| handshake(e.to_string()))?;
    let mut reader = RecordReader::new(BufReader::with_capacity(read_buffer, stream));
    let hello = match reader.next_record() {
        Ok(Some(Record::Hello(h))) => h,
        Ok(Some(other)) => {
            return Err(handshake(format!(
                "it sent {} where HELLO was expected",
                other.kind_name()
            )))
        }
        Ok(None) => return Err(handshake("it closed the connection before HELLO".into())),
        Err(ReadError::Io(e))
            if matches!(
                e.kind(),
                io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
            ) =>
        {
            return Err(handshake("no HELLO within 5 s".into()))
        }
        Err(ReadError::Wire(WireError::BadMagic)) => {
            return Err(handshake("not a dsproxy tap (bad magic in HELLO)".into()))
        }
        Err(e) => return Err(handshake(e.to_string())),
    };
    let streams = choose(&hello)?;
    reader
        .get_ref()
        .get_ref()
        .set_read_timeout(None)
        .map_err(|e| handshake(e.to_string()))?;
    let sub = Record::Subscribe {
        flags: opts.flags(),
        streams,
    }
    .to_bytes()
    .expect("a SUBSCRIBE record always encodes");
    let mut w = control.try_clone().map_err(|e| handshake(e.to_string()))?;
    w.write_all(&sub)
        .map_err(|e| handshake(format!("sending SUBSCRIBE: {e}")))?;
    Ok(Subscribed {
        hello,
        reader,
        control,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::source::Batching;
    use std::os::unix::net::UnixListener;

    fn tmp_sock(name: &str) -> std::path::PathBuf {
        let p = std::env::temp_dir().join(format!(
            "dsproxy-reader-conn-{}-{name}.sock",
            std::process::id()
        ));
        let _ = std::fs::remove_file(&p);
        p
    }

    #[test]
    fn missing_socket_is_a_clear_error() {
        let p = tmp_sock("missing");
        let e = subscribe(
            &Target::Unix(p.clone()),
            SubscribeOptions::default(),
            Batching::PLAYING.read_buffer,
            &mut |_| Ok(0),
        )
        .err()
        .unwrap();
        let msg = e.to_string();
        assert!(msg.contains(&p.display().to_string()), "{msg}");
        assert!(msg.contains("is dsproxy-device running"), "{msg}");
    }

    #[test]
    fn wrong_peer_is_refused() {
        let p = tmp_sock("wrong");
        let l = UnixListener::bind(&p).unwrap();
        let t = std::thread::spawn(move || {
            let (mut s, _) = l.accept().unwrap();
            s.write_all(b"HTTP/1.1 200 OK\r\n\r\n").unwrap();
        });
        let e = subscribe(
            &Target::Unix(p.clone()),
            SubscribeOptions::default(),
            Batching::PLAYING.read_buffer,
            &mut |_| Ok(0),
        )
        .err()
        .unwrap();
        t.join().unwrap();
        assert!(matches!(e, ReaderError::Handshake { .. }), "{e}");
        let _ = std::fs::remove_file(&p);
    }

    #[test]
    fn subscribe_carries_flags_and_mask() {
        let p = tmp_sock("sub");
        let l = UnixListener::bind(&p).unwrap();
        let t = std::thread::spawn(move || {
            let (mut s, _) = l.accept().unwrap();
            let hello = Record::Hello(Hello {
                version: dsproxy_wire::record::PROTOCOL_VERSION,
                time_ns: 0,
                name: "x".into(),
                jacks: 0,
                chmaps: 0,
                streams: vec![],
                controls: vec![],
            });
            s.write_all(&hello.to_bytes().unwrap()).unwrap();
            RecordReader::new(s).next_record().unwrap().unwrap()
        });
        let opts = SubscribeOptions {
            live: true,
            no_pacing: true,
        };
        let a = subscribe(&Target::Unix(p.clone()), opts, 4096, &mut |h| {
            assert_eq!(h.name, "x");
            Ok(0b101)
        })
        .unwrap();
        assert_eq!(
            t.join().unwrap(),
            Record::Subscribe {
                flags: SUB_LIVE | SUB_NO_PACING,
                streams: 0b101
            }
        );
        drop(a);
        let _ = std::fs::remove_file(&p);
    }
}
