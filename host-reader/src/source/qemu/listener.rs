//! The D-Bus side of QEMU's audio: an `org.qemu.Display1.AudioOutListener` (and, for
//! `--inject`, an `AudioInListener`) served on a peer-to-peer connection QEMU calls into.
//!
//! Each listener connection is driven by a thread of its own that takes the method calls in
//! the order QEMU made them (a Write never overtakes the Init before it) and turns them into
//! the card's events. The calls QEMU makes carry no reply, except the in-listener's Read,
//! which QEMU waits for in its main loop, and the property and introspection calls its
//! proxy makes when the listener registers; those are answered at once.

use std::collections::HashMap;
use std::io;
use std::os::unix::net::UnixStream;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::Sender;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use dsproxy_wire::record::Direction;
use futures_lite::StreamExt;
use zbus::message::{Flags, Type};
use zbus::zvariant::{Fd, Value};
use zbus::{MatchRule, Message, MessageStream};

use super::capture::CaptureQueue;
use super::card::{PcmInfo, VoiceCard};
use crate::convert::AudioShape;
use crate::source::{Closed, SourceEvent};

pub const OUT_INTERFACE: &str = "org.qemu.Display1.AudioOutListener";
pub const IN_INTERFACE: &str = "org.qemu.Display1.AudioInListener";
/// Method calls queued between the socket and the thread handling them.
const QUEUE: usize = 256;
/// How often voices that stay disabled are looked at (see `card::RELEASE_AFTER`).
const TICK: Duration = Duration::from_millis(100);

/// What both listeners and the ticker share.
pub struct Shared {
    card: Mutex<VoiceCard>,
    /// Events in the order they happened; a forwarding thread hands them to the main loop,
    /// so a listener never waits on it (QEMU waits on Read).
    events: Mutex<Sender<SourceEvent>>,
    pub capture: Option<Arc<CaptureQueue>>,
    pub done: AtomicBool,
}

impl Shared {
    pub fn new(
        card: VoiceCard,
        events: Sender<SourceEvent>,
        capture: Option<Arc<CaptureQueue>>,
    ) -> Shared {
        Shared {
            card: Mutex::new(card),
            events: Mutex::new(events),
            capture,
            done: AtomicBool::new(false),
        }
    }

    fn card(&self) -> MutexGuard<'_, VoiceCard> {
        self.card.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Runs `f` on the card and queues the events it makes, under one lock, so events of
    /// the two listeners and the ticker keep the order of the changes they describe.
    fn apply(&self, f: impl FnOnce(&mut VoiceCard) -> Vec<SourceEvent>) {
        let mut card = self.card();
        let evs = f(&mut card);
        let tx = self.events.lock().unwrap_or_else(|p| p.into_inner());
        for ev in evs {
            let _ = tx.send(ev);
        }
        drop(card);
    }

    pub fn send(&self, ev: SourceEvent) {
        let _ = self
            .events
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .send(ev);
    }
}

/// A listener connection, registered with QEMU and ready to be served.
pub struct Listener {
    conn: zbus::Connection,
    calls: MessageStream,
    /// A second handle on our end of the socket, to shut it down.
    pub socket: UnixStream,
}

/// Registers a listener with QEMU's Audio object (`RegisterOutListener` or
/// `RegisterInListener`) on a fresh socketpair, and connects to QEMU on our end of it.
pub fn register(audio: &zbus::blocking::Proxy<'_>, method: &str) -> Result<Listener, String> {
    let (ours, theirs) = UnixStream::pair().map_err(|e| e.to_string())?;
    audio
        .call_method(method, &(Fd::from(&theirs),))
        .map_err(|e| match e {
            zbus::Error::MethodError(_, Some(d), _) if d.contains("already registered") => {
                format!("{method}: QEMU already has a listener ({d}); is another dsproxy-host-reader attached?")
            }
            e => format!("{method}: {e}"),
        })?;
    drop(theirs);
    let socket = ours.try_clone().map_err(|e| e.to_string())?;
    // No executor thread of zbus's own: ours starts only once the message stream exists, so
    // the first call QEMU makes (its proxy's GetAll, which QEMU waits for) is not missed.
    let conn = zbus::block_on(
        zbus::connection::Builder::async_io_unix_stream(ours)
            .p2p()
            .internal_executor(false)
            .build(),
    )
    .map_err(|e| format!("{method}: connecting the listener: {e}"))?;
    let rule = MatchRule::builder().msg_type(Type::MethodCall).build();
    let calls = zbus::block_on(MessageStream::for_match_rule(rule, &conn, Some(QUEUE)))
        .map_err(|e| format!("{method}: {e}"))?;
    Ok(Listener {
        conn,
        calls,
        socket,
    })
}

/// Serves `listener` on a thread of its own until QEMU closes it. The out-listener's end is
/// the end of the source: `Closed` follows the last of its calls.
pub fn spawn(listener: Listener, direction: Direction, shared: Arc<Shared>) -> io::Result<()> {
    let name = match direction {
        Direction::Output => "qemu-audio-out",
        Direction::Input => "qemu-audio-in",
    };
    std::thread::Builder::new()
        .name(name.into())
        .spawn(move || {
            let Listener {
                conn, mut calls, ..
            } = listener;
            let exec = conn.executor().clone();
            let work = async {
                while let Some(m) = calls.next().await {
                    match m {
                        Ok(msg) => handle(&conn, &msg, direction, &shared).await,
                        Err(e) => return Some(e.to_string()),
                    }
                }
                None
            };
            // The connection's own tasks (reading the socket) run on this thread too.
            let drive = async {
                loop {
                    exec.tick().await;
                }
            };
            let why = zbus::block_on(futures_lite::future::or(work, drive));
            if let Some(why) = &why {
                log::info!("QEMU's audio {name} connection ended: {why}");
            }
            if direction == Direction::Output {
                shared.done.store(true, Ordering::SeqCst);
                if let Some(c) = &shared.capture {
                    c.close();
                }
                shared.send(SourceEvent::Closed(Closed::Gone(None)));
            }
        })
        .map(|_| ())
}

/// Releases voices that stay disabled, until the source ends.
pub fn spawn_ticker(shared: Arc<Shared>) -> io::Result<()> {
    std::thread::Builder::new()
        .name("qemu-audio-tick".into())
        .spawn(move || {
            while !shared.done.load(Ordering::SeqCst) {
                std::thread::sleep(TICK);
                shared.apply(|c| c.tick(std::time::Instant::now()));
            }
        })
        .map(|_| ())
}

type Init = (u64, u8, bool, bool, u32, u8, u32, u32, bool);

async fn handle(conn: &zbus::Connection, msg: &Message, direction: Direction, shared: &Shared) {
    let hdr = msg.header();
    let iface = hdr.interface().map(|i| i.as_str()).unwrap_or("");
    let member = hdr.member().map(|m| m.as_str()).unwrap_or("");
    let ours = match direction {
        Direction::Output => OUT_INTERFACE,
        Direction::Input => IN_INTERFACE,
    };
    let wants_reply = !hdr.primary().flags().contains(Flags::NoReplyExpected);
    let body = msg.body();
    let bad = |e: zbus::Error| {
        log::warn!("QEMU's {iface}.{member} call had an unexpected body: {e}");
    };
    let result: Result<(), zbus::Error> = match (iface, member) {
        (i, "Init") if i == ours => {
            match body.deserialize::<Init>() {
                Ok((id, bits, is_signed, is_float, freq, nchannels, bpf, bps, be)) => {
                    let info = PcmInfo {
                        bits,
                        is_signed,
                        is_float,
                        freq,
                        nchannels,
                        bytes_per_frame: bpf,
                        bytes_per_second: bps,
                        big_endian: be,
                    };
                    shared.apply(|c| {
                        let evs = c.init(direction, id, info);
                        if let (Direction::Input, Some(q)) = (direction, &shared.capture) {
                            if let Some(s) = c.stream_of(direction, id) {
                                q.configure(
                                    s,
                                    c.params_of(s).as_ref().and_then(AudioShape::from_params),
                                );
                            }
                        }
                        evs
                    });
                }
                Err(e) => bad(e),
            }
            reply_empty(conn, msg, wants_reply).await
        }
        (i, "Fini") if i == ours => {
            match body.deserialize::<u64>() {
                Ok(id) => shared.apply(|c| {
                    if let (Direction::Input, Some(q), Some(s)) =
                        (direction, &shared.capture, c.stream_of(direction, id))
                    {
                        q.configure(s, None);
                    }
                    c.fini(direction, id)
                }),
                Err(e) => bad(e),
            }
            reply_empty(conn, msg, wants_reply).await
        }
        (i, "SetEnabled") if i == ours => {
            match body.deserialize::<(u64, bool)>() {
                Ok((id, on)) => shared.apply(|c| {
                    if let (Direction::Input, Some(q), Some(s)) =
                        (direction, &shared.capture, c.stream_of(direction, id))
                    {
                        q.set_enabled(s, on);
                    }
                    c.set_enabled(direction, id, on)
                }),
                Err(e) => bad(e),
            }
            reply_empty(conn, msg, wants_reply).await
        }
        (i, "SetVolume") if i == ours => {
            match body.deserialize::<(u64, bool, Vec<u8>)>() {
                Ok((id, mute, vol)) => shared.apply(|c| c.set_volume(direction, id, mute, &vol)),
                Err(e) => bad(e),
            }
            reply_empty(conn, msg, wants_reply).await
        }
        (OUT_INTERFACE, "Write") if direction == Direction::Output => {
            match body.deserialize::<(u64, Vec<u8>)>() {
                Ok((id, data)) => shared.apply(|c| c.write(id, data)),
                Err(e) => bad(e),
            }
            reply_empty(conn, msg, wants_reply).await
        }
        (IN_INTERFACE, "Read") if direction == Direction::Input => {
            let data = match body.deserialize::<(u64, u64)>() {
                Ok((id, size)) => {
                    let stream = shared.card().stream_of(direction, id);
                    let data = match (stream, &shared.capture) {
                        (Some(s), Some(q)) => q.read(s, size.min(1 << 24) as usize),
                        _ => Vec::new(),
                    };
                    log::trace!(
                        "Read voice {id:#x} (stream {stream:?}): {size} bytes asked, {} given",
                        data.len()
                    );
                    data
                }
                Err(e) => {
                    bad(e);
                    Vec::new()
                }
            };
            conn.reply(&hdr, &(data,)).await
        }
        ("org.freedesktop.DBus.Properties", "GetAll") => {
            conn.reply(&hdr, &HashMap::<&str, Value<'_>>::new()).await
        }
        ("org.freedesktop.DBus.Peer", "Ping") => reply_empty(conn, msg, true).await,
        ("org.freedesktop.DBus.Introspectable", "Introspect") => {
            conn.reply(&hdr, &introspection(ours)).await
        }
        _ if wants_reply => {
            conn.reply_error(
                &hdr,
                "org.freedesktop.DBus.Error.UnknownMethod",
                &format!("no method {iface}.{member} here"),
            )
            .await
        }
        _ => Ok(()),
    };
    if let Err(e) = result {
        log::info!("answering QEMU's {iface}.{member}: {e}");
    }
}

async fn reply_empty(conn: &zbus::Connection, msg: &Message, wants: bool) -> zbus::Result<()> {
    if wants {
        conn.reply(&msg.header(), &()).await
    } else {
        Ok(())
    }
}

fn introspection(iface: &str) -> String {
    let methods = if iface == OUT_INTERFACE {
        "<method name=\"Write\"><arg type=\"t\" name=\"id\" direction=\"in\"/>\
         <arg type=\"ay\" name=\"data\" direction=\"in\"/></method>"
    } else {
        "<method name=\"Read\"><arg type=\"t\" name=\"id\" direction=\"in\"/>\
         <arg type=\"t\" name=\"size\" direction=\"in\"/>\
         <arg type=\"ay\" name=\"data\" direction=\"out\"/></method>"
    };
    format!(
        "<!DOCTYPE node PUBLIC \"-//freedesktop//DTD D-BUS Object Introspection 1.0//EN\" \
         \"http://www.freedesktop.org/standards/dbus/1.0/introspect.dtd\">\
         <node><interface name=\"{iface}\">\
         <method name=\"Init\"><arg type=\"t\" name=\"id\" direction=\"in\"/>\
         <arg type=\"y\" name=\"bits\" direction=\"in\"/>\
         <arg type=\"b\" name=\"is_signed\" direction=\"in\"/>\
         <arg type=\"b\" name=\"is_float\" direction=\"in\"/>\
         <arg type=\"u\" name=\"freq\" direction=\"in\"/>\
         <arg type=\"y\" name=\"nchannels\" direction=\"in\"/>\
         <arg type=\"u\" name=\"bytes_per_frame\" direction=\"in\"/>\
         <arg type=\"u\" name=\"bytes_per_second\" direction=\"in\"/>\
         <arg type=\"b\" name=\"be\" direction=\"in\"/></method>\
         <method name=\"Fini\"><arg type=\"t\" name=\"id\" direction=\"in\"/></method>\
         <method name=\"SetEnabled\"><arg type=\"t\" name=\"id\" direction=\"in\"/>\
         <arg type=\"b\" name=\"enabled\" direction=\"in\"/></method>\
         <method name=\"SetVolume\"><arg type=\"t\" name=\"id\" direction=\"in\"/>\
         <arg type=\"b\" name=\"mute\" direction=\"in\"/>\
         <arg type=\"ay\" name=\"volume\" direction=\"in\"/></method>\
         {methods}</interface></node>"
    )
}
