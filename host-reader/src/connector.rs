//! Keeps the reader attached to its source: the first attach, a lost connection, and
//! `--reconnect`'s retries every second. The main loop asks it what to do with each event;
//! the session hears of every (re)attach and detach.

use std::sync::mpsc::SyncSender;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::console;
use crate::error::ReaderError;
use crate::inject::{InjectSource, Injector};
use crate::session::Session;
use crate::source::{Backlog, Closed, Event, Link, Outbox, Source};

/// Between reattach attempts.
const RETRY_EVERY: Duration = Duration::from_secs(1);

/// What `--inject` asked for, until the first card says which stream it feeds.
pub struct PendingInject {
    pub source: InjectSource,
    /// `--inject-stream`.
    pub stream: Option<u32>,
}

/// What the main loop should do after a connection ended.
#[derive(Debug)]
pub enum AfterClose {
    /// Keep going: a reattach is scheduled (`--reconnect`).
    Retry,
    /// The source went away and no reattach was asked for: a clean end.
    Done,
}

pub struct Connector {
    source: Box<dyn Source>,
    reconnect: bool,
    tx: SyncSender<Event>,
    backlog: Arc<Backlog>,
    /// Number of the current (or next) connection: events of older ones are stale.
    conn: u64,
    current: Option<Box<dyn Link>>,
    retry_at: Option<Instant>,
    /// A "retrying" note was shown, so an "attached" note follows the next success.
    said_waiting: bool,
    pending_inject: Option<PendingInject>,
}

impl Connector {
    pub fn new(
        source: Box<dyn Source>,
        reconnect: bool,
        tx: SyncSender<Event>,
        backlog: Arc<Backlog>,
        pending_inject: Option<PendingInject>,
    ) -> Connector {
        Connector {
            source,
            reconnect,
            tx,
            backlog,
            conn: 0,
            current: None,
            retry_at: None,
            said_waiting: false,
            pending_inject,
        }
    }

    /// The source as messages name it.
    pub fn target(&self) -> String {
        self.source.target()
    }

    /// The first attach. Failing is an error unless `--reconnect` may retry it.
    pub fn start(&mut self, session: &mut Session) -> Result<(), ReaderError> {
        match self.attach(session) {
            Ok(()) => Ok(()),
            Err(e) if self.reconnect && self.source.retryable(&e) => {
                console::note(&format!("{e}; retrying every second (--reconnect)"));
                self.said_waiting = true;
                self.retry_at = Some(Instant::now() + RETRY_EVERY);
                Ok(())
            }
            Err(e) => Err(e),
        }
    }

    /// Whether events of connection `conn` are current.
    pub fn is_current(&self, conn: u64) -> bool {
        conn == self.conn && self.current.is_some()
    }

    /// The current connection ended: the session finalizes its files, then either a
    /// reattach is scheduled or the run ends.
    pub fn closed(
        &mut self,
        why: Closed,
        session: &mut Session,
    ) -> Result<AfterClose, ReaderError> {
        self.current = None;
        session.detach()?;
        let target = self.target();
        match why {
            Closed::Gone(None) => {}
            Closed::Gone(Some(e)) => log::info!("connection to {target} lost: {e}"),
            Closed::Truncated if self.reconnect => {
                console::note(&format!(
                    "connection to {target} closed in the middle of a record"
                ));
            }
            Closed::Truncated => {
                return Err(ReaderError::Malformed {
                    target,
                    source: dsproxy_wire::ReadError::TruncatedStream,
                })
            }
            Closed::Broken(e) => return Err(e),
        }
        if !self.reconnect {
            return Ok(AfterClose::Done);
        }
        console::note(&format!("lost {target}; reattaching (--reconnect)"));
        self.said_waiting = true;
        self.retry_at = Some(Instant::now() + RETRY_EVERY);
        Ok(AfterClose::Retry)
    }

    /// Reattaches if a retry is due.
    pub fn poll(&mut self, session: &mut Session) -> Result<(), ReaderError> {
        let Some(at) = self.retry_at else {
            return Ok(());
        };
        if Instant::now() < at {
            return Ok(());
        }
        match self.attach(session) {
            Ok(()) => {
                self.retry_at = None;
                if self.said_waiting {
                    console::note(&format!("attached to {}", self.target()));
                    self.said_waiting = false;
                }
                Ok(())
            }
            Err(e) if self.source.retryable(&e) => {
                self.retry_at = Some(Instant::now() + RETRY_EVERY);
                Ok(())
            }
            Err(e) => Err(e),
        }
    }

    /// Shuts the current connection without forgetting it: its thread hands over what it
    /// had read (and what the socket still held), then reports it closed.
    pub fn hang_up(&self) {
        if let Some(l) = &self.current {
            l.shutdown();
        }
    }

    /// Ends the current connection, if any.
    pub fn shutdown(&mut self) {
        if let Some(l) = self.current.take() {
            l.shutdown();
        }
    }

    fn attach(&mut self, session: &mut Session) -> Result<(), ReaderError> {
        let conn = self.conn + 1;
        let grows = self.source.card_grows();
        let pending = &mut self.pending_inject;
        let mut plan = |hello: &dsproxy_wire::record::Hello| {
            // The injector is created once, when the first card is seen.
            if let Some(p) = pending.take() {
                let stream = p.stream.or_else(|| Session::first_input(hello));
                if stream.is_none() && !grows {
                    return Err(ReaderError::Inject {
                        path: p.source.path().to_path_buf(),
                        why: "the card has no input stream to inject into".into(),
                    });
                }
                let path = p.source.path().to_path_buf();
                let mut inj =
                    Injector::spawn(p.source, stream).map_err(|e| ReaderError::Inject {
                        path,
                        why: e.to_string(),
                    })?;
                if p.stream.is_some() {
                    inj.pin();
                }
                session.set_injector(inj);
            }
            session.plan(hello, grows)
        };
        let attached = self.source.attach(
            &mut plan,
            Outbox::new(conn, self.tx.clone(), Arc::clone(&self.backlog)),
        )?;
        self.conn = conn;
        session.log_hello(&attached.hello);
        session.attach(&attached.hello, attached.outlet);
        self.current = Some(attached.link);
        Ok(())
    }
}
