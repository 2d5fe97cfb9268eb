//! The main loop: attach, pump the source's events into the session, tick, stop.
//!
//! Threads: the source's (one reads records from the current connection and passes them
//! through a small bounded channel — the tap's in batches, what one read brought, bounded
//! in bytes by the [`Backlog`] — so a slow disk or host device still pushes back on the
//! socket); one waits for SIGINT/SIGTERM; the injector, if any. The main thread owns the
//! session and every file.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::sync::Arc;
use std::time::Duration;

use crate::cli::Cli;
use crate::connector::{AfterClose, Connector, PendingInject};
use crate::console;
use crate::error::ReaderError;
use crate::inject::InjectSource;
use crate::output::FileTarget;
use crate::playback::{Playback, PlaybackOptions};
use crate::session::{Flow, Session, SessionOptions, TICK};
use crate::signals;
use crate::source::qemu::QemuSource;
use crate::source::tap::{SubscribeOptions, TapSource};
use crate::source::{Backlog, Batching, Event, Source, SourceEvent};
use crate::watch::WatchOptions;

/// Events in flight between the source's threads and the main loop.
const QUEUE_DEPTH: usize = 16;
/// After a signal, how long the records already received may take to be written, and the
/// longest pause between two hand-offs of them (see `take_what_arrived`).
const LAST_RECORDS_WAIT: Duration = Duration::from_secs(2);
const LAST_RECORDS_PAUSE: Duration = Duration::from_millis(100);

/// Runs the reader until a clean end (`Ok`) or an error.
pub fn run(cli: Cli) -> Result<(), ReaderError> {
    cli.verdict.validate().map_err(ReaderError::Usage)?;
    if !cli.verdict.check.is_empty() {
        return verdict_result(crate::verdict::check::run(&cli.verdict)?);
    }
    if cli.verdict.wanted() && cli.file.is_none() {
        return Err(ReaderError::Usage(
            "--expect…, --report, --junit and --plot judge the capture's files: give -f FILE \
             (or --check FILE for existing ones)"
                .into(),
        ));
    }
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
    let pending_inject = match &cli.inject {
        Some(p) => Some(PendingInject {
            source: InjectSource::open(p, cli.inject_raw)?,
            stream: cli.inject_stream,
        }),
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
        watch: WatchOptions {
            once: cli.once,
            idle: cli.watch.idle.unwrap_or(Duration::from_secs(1)),
            duration: cli.watch.duration,
            stop_after_silence: cli.watch.stop_after_silence,
            silence_below_dbfs: cli.verdict.silence_below,
            // A --mixer-only run has no running time to show.
            status: console::stderr_is_tty() && !mixer_only && !cli.watch.quiet,
        },
        mixer: cli.mixer.clone(),
        mixer_only,
    };
    let playback = (!cli.no_play).then(|| {
        Playback::new(PlaybackOptions {
            device: cli.device.clone(),
            reopen_on_reset: cli.reopen,
        })
    });
    let batching = if playback.is_some() {
        Batching::PLAYING
    } else {
        Batching::BULK
    };
    let source: Box<dyn Source> = match &cli.qmp {
        Some(qmp) => Box::new(QemuSource {
            qmp: qmp.clone(),
            inject: cli.inject.is_some(),
        }),
        None => Box::new(TapSource {
            target,
            sub: SubscribeOptions {
                // A --mixer-only run takes no audio, so it never holds the guest back.
                live: cli.live || mixer_only,
                no_pacing: cli.no_pacing,
            },
            read_buffer: batching.read_buffer,
        }),
    };

    let backlog = Backlog::new(batching.backlog_limit);
    let mut connector = Connector::new(
        source,
        cli.reconnect,
        tx,
        Arc::clone(&backlog),
        pending_inject,
    );
    let mut session = Session::new(opts, connector.target(), playback, None);
    if let Err(e) = connector.start(&mut session) {
        let _ = session.finish(false);
        return Err(e);
    }

    let result = loop {
        if stop.load(Ordering::SeqCst) {
            break Ok(());
        }
        let ev = rx.recv_timeout(TICK);
        if stop.load(Ordering::SeqCst) {
            break Ok(());
        }
        let flow = match ev {
            Ok(Event::Source { conn, event }) => {
                let handled = event.backlog_bytes();
                let flow = if connector.is_current(conn) {
                    on_event(event, &mut session, &mut connector, mixer_only)
                } else {
                    Ok(Flow::Continue)
                };
                backlog.release(handled);
                flow
            }
            Ok(Event::Signal) | Err(RecvTimeoutError::Disconnected) => Ok(Flow::Done),
            Err(RecvTimeoutError::Timeout) => Ok(Flow::Continue),
        };
        let flow = match flow {
            Ok(Flow::Continue) => session.maybe_tick(),
            ended => ended,
        };
        match flow {
            Ok(Flow::Continue) => {}
            Ok(Flow::Done) => break Ok(()),
            Err(e) => break Err(e),
        }
        if let Err(e) = connector.poll(&mut session) {
            break Err(e);
        }
    };

    if result.is_ok() && stop.load(Ordering::SeqCst) {
        take_what_arrived(&rx, &mut session, &connector, &backlog);
    }
    let finished = session.finish(result.is_ok());
    connector.shutdown();
    // Files first, the device let go; then, unless Ctrl-C or SIGTERM asked to stop now, the
    // host device plays what is still queued for it (the guest finished that audio).
    if result.is_ok() && !stop.load(Ordering::SeqCst) {
        session.play_out();
    }
    result.and(finished)?;
    // The capture is complete (however it ended): judge it, if asked.
    if cli.verdict.wanted() && !mixer_only {
        return verdict_result(crate::verdict::check::conclude(
            session.capture_files(),
            &cli.verdict,
        )?);
    }
    Ok(())
}

/// After Ctrl-C or SIGTERM: the records the reader had already taken from the device (read
/// from the socket, or waiting in it) go into the files as well, rather than being dropped
/// with the process (up to a read buffer and a backlog of audio). The connection is shut
/// first, so the device sends nothing new and the source's thread ends once it has handed
/// over the rest; a second signal still ends the process at once.
fn take_what_arrived(
    rx: &mpsc::Receiver<Event>,
    session: &mut Session,
    connector: &Connector,
    backlog: &Backlog,
) {
    connector.hang_up();
    let deadline = std::time::Instant::now() + LAST_RECORDS_WAIT;
    let mut taken = 0usize;
    loop {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        // A source whose thread ends without a word (QEMU's, told to stop) costs this
        // pause, no more.
        let Ok(ev) = rx.recv_timeout(left.min(LAST_RECORDS_PAUSE)) else {
            break;
        };
        let Event::Source { conn, event } = ev else {
            continue;
        };
        let handled = event.backlog_bytes();
        let records = match event {
            _ if !connector.is_current(conn) => Vec::new(),
            SourceEvent::Record(rec) => vec![rec],
            SourceEvent::Records { records, .. } => records,
            SourceEvent::Card(hello) => {
                session.card_changed(&hello);
                Vec::new()
            }
            // The thread has handed over everything.
            SourceEvent::Closed(_) => break,
        };
        backlog.release(handled);
        for rec in records {
            match session.handle(rec) {
                Ok(Flow::Continue) => taken += 1,
                Ok(Flow::Done) => return,
                Err(e) => {
                    log::warn!("after the signal: {e}");
                    return;
                }
            }
        }
    }
    log::debug!("after the signal: {taken} records already received were written");
}

/// A verdict as the run's result: a mismatch exits with its own status.
fn verdict_result(outcome: crate::verdict::judge::Outcome) -> Result<(), ReaderError> {
    match outcome {
        crate::verdict::judge::Outcome::Mismatch => Err(ReaderError::Mismatch(
            "the capture is not what was expected".into(),
        )),
        _ => Ok(()),
    }
}

/// One event of the current connection.
fn on_event(
    event: SourceEvent,
    session: &mut Session,
    connector: &mut Connector,
    mixer_only: bool,
) -> Result<Flow, ReaderError> {
    match event {
        SourceEvent::Record(rec) => session.handle(rec),
        SourceEvent::Records { records, .. } => {
            for rec in records {
                match session.handle(rec)? {
                    Flow::Continue => {}
                    Flow::Done => return Ok(Flow::Done),
                }
            }
            Ok(Flow::Continue)
        }
        SourceEvent::Card(hello) => {
            session.card_changed(&hello);
            Ok(Flow::Continue)
        }
        SourceEvent::Closed(why) => match connector.closed(why, session)? {
            AfterClose::Retry => Ok(Flow::Continue),
            AfterClose::Done => {
                if mixer_only {
                    if let Some(left) = session.mixer_unfinished() {
                        return Err(ReaderError::Mixer(format!(
                            "{} went away before confirming {left}",
                            connector.target()
                        )));
                    }
                }
                log::info!("the device went away: done");
                Ok(Flow::Done)
            }
        },
    }
}
