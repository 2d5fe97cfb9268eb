//! QEMU's own emulated cards as a source (`--qmp PATH`): Intel HDA, AC97, virtio-sound-pci
//! or any other card on a `-audiodev dbus`, the cards Windows guests drive in-box.
//!
//! The reader attaches through QEMU's QMP socket ([`qmp`]), checks that QEMU's D-Bus display
//! exports an Audio object, and registers as its `AudioOutListener` (and `AudioInListener`
//! for `--inject`) ([`listener`]). What QEMU reports of its voices becomes the tap's records
//! ([`card`]), so the session, files, logs and playback are the same as for the tap.
//!
//! QEMU paces these cards itself: `-d` (no pacing) and `--live` do not apply. With
//! `out.mixing-engine=off` QEMU hands each voice over in the guest's own format, unmixed and
//! not resampled; with its mixing engine on (QEMU's default) the listener gets one mix in
//! the audiodev's `out.frequency/channels/format`, resampled.

pub mod capture;
pub mod card;
pub mod listener;
pub mod qmp;

use std::collections::HashMap;
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::mpsc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use dsproxy_wire::record::{Direction, Record};
use zbus::zvariant::OwnedObjectPath;

use super::{Attached, Link, Outbox, Plan, Source, SourceEvent};
use crate::error::ReaderError;
use capture::{CaptureOutlet, CaptureQueue};
use card::VoiceCard;
use listener::Shared;

const ROOT: &str = "/org/qemu/Display1";
const AUDIO_PATH: &str = "/org/qemu/Display1/Audio";
const VM_PATH: &str = "/org/qemu/Display1/VM";
/// How long QEMU may take to export its objects on a new display connection.
const EXPORT_WAIT: Duration = Duration::from_secs(3);

/// QEMU, reached through its QMP socket.
pub struct QemuSource {
    pub qmp: PathBuf,
    /// `--inject`: also register as the capture voices' listener.
    pub inject: bool,
}

impl Source for QemuSource {
    fn target(&self) -> String {
        qmp::target(&self.qmp)
    }

    fn card_grows(&self) -> bool {
        true
    }

    fn attach(&mut self, plan: &mut Plan<'_>, outbox: Outbox) -> Result<Attached, ReaderError> {
        let fail = |why: String| ReaderError::Qemu {
            target: self.target(),
            why,
        };
        let sock = qmp::attach_display(&self.qmp)?;
        let display_sock = sock.try_clone().map_err(|e| fail(e.to_string()))?;
        let display = zbus::blocking::connection::Builder::async_io_unix_stream(sock)
            .p2p()
            .build()
            .map_err(|e| fail(format!("D-Bus connection to the display: {e}")))?;
        let name = check_audio(&display).map_err(fail)?;

        let card = VoiceCard::new(name);
        let hello = card.hello();
        plan(&hello)?;

        let audio = zbus::blocking::proxy::Builder::<zbus::blocking::Proxy<'_>>::new(&display)
            .destination("org.qemu")
            .and_then(|b| b.path(AUDIO_PATH))
            .and_then(|b| b.interface("org.qemu.Display1.Audio"))
            .map(|b| b.cache_properties(zbus::proxy::CacheProperties::No))
            .and_then(|b| b.build())
            .map_err(|e| fail(e.to_string()))?;
        let capture = self.inject.then(|| Arc::new(CaptureQueue::default()));
        let (tx, rx) = mpsc::channel();
        let shared = Arc::new(Shared::new(card, tx, capture.clone()));
        // The card is described in full as voices appear: nothing to replay.
        shared.send(SourceEvent::Record(Record::SnapshotEnd));
        spawn_forwarder(rx, outbox).map_err(|e| fail(e.to_string()))?;

        let out = listener::register(&audio, "RegisterOutListener").map_err(fail)?;
        let mut sockets = vec![
            display_sock,
            out.socket.try_clone().map_err(|e| fail(e.to_string()))?,
        ];
        listener::spawn(out, Direction::Output, shared.clone()).map_err(|e| fail(e.to_string()))?;
        if self.inject {
            let inl = listener::register(&audio, "RegisterInListener").map_err(fail)?;
            sockets.push(inl.socket.try_clone().map_err(|e| fail(e.to_string()))?);
            listener::spawn(inl, Direction::Input, shared.clone())
                .map_err(|e| fail(e.to_string()))?;
        }
        listener::spawn_ticker(shared.clone()).map_err(|e| fail(e.to_string()))?;
        Ok(Attached {
            hello,
            outlet: capture.map(|c| Box::new(CaptureOutlet(c)) as Box<dyn super::Outlet>),
            link: Box::new(QemuLink {
                sockets,
                shared,
                _display: display,
            }),
        })
    }

    fn retryable(&self, e: &ReaderError) -> bool {
        matches!(e, ReaderError::Connect { .. })
    }
}

/// The display connection must export QEMU's Audio object (a `-display dbus` whose
/// `audiodev=` names a `-audiodev dbus`). Returns the VM's name for the card.
fn check_audio(display: &zbus::blocking::Connection) -> Result<String, String> {
    let om = zbus::blocking::fdo::ObjectManagerProxy::builder(display)
        .destination("org.qemu")
        .and_then(|b| b.path(ROOT))
        .map(|b| b.cache_properties(zbus::proxy::CacheProperties::No))
        .and_then(|b| b.build())
        .map_err(|e| e.to_string())?;
    // QEMU exports its objects on a new client connection once the handshake is done, a
    // moment after our side of it: ask again for a short while.
    let deadline = Instant::now() + EXPORT_WAIT;
    let objects = loop {
        match om.get_managed_objects() {
            Ok(o) if !o.is_empty() => break o,
            Ok(_) | Err(_) if Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(50))
            }
            Ok(_) => break HashMap::new(),
            Err(e) => return Err(format!("its D-Bus display does not answer: {e}")),
        }
    };
    let audio = OwnedObjectPath::try_from(AUDIO_PATH).map_err(|e| e.to_string())?;
    if !objects.contains_key(&audio) {
        return Err(
            "its D-Bus display has no audio: -display dbus needs audiodev=ID naming \
                    an -audiodev dbus,id=ID (an audiodev of another driver cannot be listened \
                    to)"
            .into(),
        );
    }
    let name = OwnedObjectPath::try_from(VM_PATH)
        .ok()
        .and_then(|p| objects.get(&p).cloned())
        .and_then(|ifaces| {
            ifaces
                .iter()
                .find(|(i, _)| i.as_str() == "org.qemu.Display1.VM")
                .and_then(|(_, props)| props.get("Name").cloned())
        })
        .and_then(|v| String::try_from(v).ok())
        .unwrap_or_else(|| "QEMU".into());
    Ok(name)
}

/// Hands the source's events to the main loop, waiting when it is behind.
fn spawn_forwarder(rx: mpsc::Receiver<SourceEvent>, outbox: Outbox) -> std::io::Result<()> {
    std::thread::Builder::new()
        .name("qemu-audio-events".into())
        .spawn(move || {
            for ev in rx {
                let last = matches!(ev, SourceEvent::Closed(_));
                if !outbox.send(ev) || last {
                    return;
                }
            }
        })
        .map(|_| ())
}

struct QemuLink {
    sockets: Vec<UnixStream>,
    shared: Arc<Shared>,
    _display: zbus::blocking::Connection,
}

impl Link for QemuLink {
    fn shutdown(&self) {
        self.shared.done.store(true, Ordering::SeqCst);
        if let Some(c) = &self.shared.capture {
            c.close();
        }
        for s in &self.sockets {
            let _ = s.shutdown(std::net::Shutdown::Both);
        }
    }
}
