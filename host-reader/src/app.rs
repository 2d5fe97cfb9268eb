//! The main loop: attach, pump records into the session, tick, reattach, stop.
//!
//! Threads: one reads records from the current connection and passes them through a small
//! bounded channel (so a slow disk or host device still pushes back on the socket); one
//! waits for SIGINT/SIGTERM; the injector, if any. The main thread owns the session and
//! every file.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, RecvTimeoutError, SyncSender};
use std::sync::Arc;
use std::time::{Duration, Instant};

use dsproxy_wire::{ReadError, Record, RecordReader};

use crate::cli::{Cli, Target};
use crate::connection::{self, SubscribeOptions, TapStream};
use crate::console;
use crate::error::ReaderError;
use crate::inject::{InjectSource, Injector};
use crate::output::FileTarget;
use crate::playback::{Playback, PlaybackOptions};
use crate::session::{Flow, Session, SessionOptions, TICK};
use crate::signals;

/// Records in flight between the socket thread and the main loop.
const QUEUE_DEPTH: usize = 16;
/// Between reattach attempts.
const RETRY_EVERY: Duration = Duration::from_secs(1);

enum Event {
    Record(u64, Record),
    /// The connection ended: cleanly (`None`) or not.
    Closed(u64, Option<ReadError>),
    Signal,
}

/// Runs the reader until a clean end (`Ok`) or an error.
pub fn run(cli: Cli) -> Result<(), ReaderError> {
    let target = cli.target().map_err(ReaderError::Usage)?;
    if cli.no_play
        && cli.file.is_none()
        && !cli.stdout
        && !cli.english
        && !cli.records
        && cli.inject.is_none()
        && cli.mixer.is_empty()
    {
        return Err(ReaderError::Usage(
            "nothing to do: with -x, give -f FILE, -s, -e, -i, --inject or --mixer".into(),
        ));
    }
    let mixer_only = cli.mixer_only();
    let files = cli.file.clone().map(FileTarget::new);
    let mut base_created = false;
    if let Some(f) = &files {
        base_created = !f.base().exists();
        f.check_writable()?;
    }
    let inject_source = match &cli.inject {
        Some(p) => Some(InjectSource::open(p, cli.inject_raw)?),
        None => None,
    };

    let (tx, rx) = mpsc::sync_channel::<Event>(QUEUE_DEPTH);
    let stop = Arc::new(AtomicBool::new(false));
    {
        let tx = tx.clone();
        let stop = stop.clone();
        signals::spawn_waiter(move |_sig| {
            stop.store(true, Ordering::SeqCst);
            let _ = tx.try_send(Event::Signal);
        })
        .map_err(|e| ReaderError::Usage(format!("cannot start the signal thread: {e}")))?;
    }

    let opts = SessionOptions {
        files,
        base_created,
        stdout: cli.stdout,
        english: cli.english,
        records: cli.records,
        stream: cli.stream,
        once: cli.once,
        // A --mixer-only run has no running time to show.
        progress: console::stderr_is_tty() && !mixer_only,
        mixer: cli.mixer.clone(),
        mixer_only,
    };
    let playback = (!cli.no_play).then(|| {
        Playback::new(PlaybackOptions {
            device: cli.device.clone(),
            reopen_on_reset: cli.reopen,
        })
    });
    let sub = SubscribeOptions {
        // A --mixer-only run takes no audio, so it never holds the guest back.
        live: cli.live || mixer_only,
        no_pacing: cli.no_pacing,
    };

    // The first attach also decides the injector's stream.
    let mut pending_source = inject_source;
    let mut session = Session::new(opts, target.to_string(), playback, None);
    let mut conn_id = 0u64;
    let mut current: Option<TapStream> = None;
    let mut retry_at: Option<Instant> = None;
    let mut said_waiting = false;

    match attach_once(&target, sub, &mut session, &mut pending_source, &cli) {
        Ok(a) => {
            current = Some(start_reader(a, &mut session, conn_id, &tx)?);
        }
        Err(e) if cli.reconnect && retryable(&e) => {
            console::note(&format!("{e}; retrying every second (--reconnect)"));
            said_waiting = true;
            retry_at = Some(Instant::now() + RETRY_EVERY);
        }
        Err(e) => {
            let _ = session.finish(false);
            return Err(e);
        }
    }

    let result = loop {
        if stop.load(Ordering::SeqCst) {
            break Ok(());
        }
        let ev = rx.recv_timeout(TICK);
        if stop.load(Ordering::SeqCst) {
            break Ok(());
        }
        match ev {
            Ok(Event::Record(id, rec)) if id == conn_id && current.is_some() => {
                match session.handle(rec) {
                    Ok(Flow::Continue) => {}
                    Ok(Flow::Done) => break Ok(()),
                    Err(e) => break Err(e),
                }
            }
            Ok(Event::Record(..)) => {}
            Ok(Event::Closed(id, why)) if id == conn_id && current.is_some() => {
                current = None;
                if let Err(e) = session.detach() {
                    break Err(e);
                }
                match why {
                    None => {}
                    Some(ReadError::Io(e)) => {
                        log::info!("connection to {target} lost: {e}");
                    }
                    Some(ReadError::TruncatedStream) if cli.reconnect => {
                        console::note(&format!(
                            "connection to {target} closed in the middle of a record"
                        ));
                    }
                    Some(e) => {
                        break Err(ReaderError::Malformed {
                            target: target.to_string(),
                            source: e,
                        })
                    }
                }
                if !cli.reconnect {
                    if mixer_only {
                        if let Some(left) = session.mixer_unfinished() {
                            break Err(ReaderError::Mixer(format!(
                                "{target} went away before confirming {left}"
                            )));
                        }
                    }
                    log::info!("the device went away: done");
                    break Ok(());
                }
                console::note(&format!("lost {target}; reattaching (--reconnect)"));
                said_waiting = true;
                retry_at = Some(Instant::now() + RETRY_EVERY);
            }
            Ok(Event::Closed(..)) => {}
            Ok(Event::Signal) => break Ok(()),
            Err(RecvTimeoutError::Timeout) => {}
            Err(RecvTimeoutError::Disconnected) => break Ok(()),
        }
        match session.maybe_tick() {
            Ok(Flow::Continue) => {}
            Ok(Flow::Done) => break Ok(()),
            Err(e) => break Err(e),
        }
        if let Some(at) = retry_at {
            if Instant::now() >= at {
                match attach_once(&target, sub, &mut session, &mut pending_source, &cli) {
                    Ok(a) => {
                        conn_id += 1;
                        match start_reader(a, &mut session, conn_id, &tx) {
                            Ok(c) => current = Some(c),
                            Err(e) => break Err(e),
                        }
                        retry_at = None;
                        if said_waiting {
                            console::note(&format!("attached to {target}"));
                            said_waiting = false;
                        }
                    }
                    Err(e) if retryable(&e) => retry_at = Some(Instant::now() + RETRY_EVERY),
                    Err(e) => break Err(e),
                }
            }
        }
    };

    let finished = session.finish(result.is_ok());
    if let Some(c) = current {
        c.shutdown();
    }
    // Files first, the device let go; then, unless Ctrl-C or SIGTERM asked to stop now, the
    // host device plays what is still queued for it (the guest finished that audio).
    if result.is_ok() && !stop.load(Ordering::SeqCst) {
        session.play_out();
    }
    result.and(finished)
}

/// Connection problems are worth retrying with --reconnect; refusals of the options are not.
fn retryable(e: &ReaderError) -> bool {
    matches!(
        e,
        ReaderError::Connect { .. } | ReaderError::Handshake { .. }
    )
}

fn attach_once(
    target: &Target,
    sub: SubscribeOptions,
    session: &mut Session,
    pending_source: &mut Option<InjectSource>,
    cli: &Cli,
) -> Result<connection::Attached, ReaderError> {
    let mut a = None;
    connection::attach(target, sub, |hello| {
        // The injector is created once, when the first card says which stream to feed.
        if let Some(src) = pending_source.take() {
            let stream = match cli.inject_stream.or_else(|| Session::first_input(hello)) {
                Some(s) => s,
                None => {
                    return Err(ReaderError::Inject {
                        path: src.path().to_path_buf(),
                        why: "the card has no input stream to inject into".into(),
                    })
                }
            };
            let inj = Injector::spawn(src, stream).map_err(|e| ReaderError::Inject {
                path: cli.inject.clone().unwrap_or_default(),
                why: e.to_string(),
            })?;
            a = Some(inj);
        }
        if let Some(inj) = a.take() {
            session.set_injector(inj);
        }
        session.plan(hello)
    })
}

fn start_reader(
    a: connection::Attached,
    session: &mut Session,
    conn_id: u64,
    tx: &SyncSender<Event>,
) -> Result<TapStream, ReaderError> {
    let connection::Attached {
        hello,
        reader,
        control,
    } = a;
    let inject_handle = control.try_clone().ok();
    session.log_hello(&hello);
    session.attach(&hello, inject_handle);
    spawn_reader(reader, conn_id, tx.clone()).map_err(|e| ReaderError::Connect {
        target: "the tap".into(),
        source: e,
        hint: " (cannot start the socket thread)",
    })?;
    Ok(control)
}

fn spawn_reader(
    mut reader: RecordReader<TapStream>,
    id: u64,
    tx: SyncSender<Event>,
) -> std::io::Result<()> {
    std::thread::Builder::new()
        .name(format!("tap-{id}"))
        .spawn(move || loop {
            match reader.next_record() {
                Ok(Some(rec)) => {
                    if tx.send(Event::Record(id, rec)).is_err() {
                        return;
                    }
                }
                Ok(None) => {
                    let _ = tx.send(Event::Closed(id, None));
                    return;
                }
                Err(e) => {
                    let _ = tx.send(Event::Closed(id, Some(e)));
                    return;
                }
            }
        })
        .map(|_| ())
}
