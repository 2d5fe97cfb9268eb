//! Reading readers: their sockets (with the hang-up and error cases), the records they
//! send, and INJECT records waiting for room in an inject buffer.

use std::os::fd::RawFd;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use dsproxy_wire::record::{NoticeLevel, Record, SUB_LIVE, SUB_NO_PACING};
use event_manager::{EventOps, EventSet, Events};

use super::super::conn::{CloseWhy, ReadOutcome};
use super::super::subscription::Subscription;
use super::super::{TapRequest, TCP_LISTEN_ONLY};
use super::{socket_error, TapLoop, DETACHED_INPUT_LIMIT, READS_PER_EVENT};

/// How a round of reading a reader ended.
enum ReadEnd {
    /// The connection was closed (EOF, error, protocol violation).
    Closed,
    /// Nothing more to read now.
    Drained,
    /// An INJECT waits for room; reading is paused.
    Paused,
    /// The per-event budget is spent; there may be more.
    More,
}

impl TapLoop {
    pub(super) fn on_reader(&mut self, fd: RawFd, set: EventSet, ops: &mut EventOps) {
        let stopping = self.stop_deadline.is_some();
        let Some(r) = self.readers.get_mut(&fd) else {
            return;
        };
        let error = set.contains(EventSet::ERROR);
        // On an error the requests the reader sent before it went are read first (the
        // kernel hands out queued data before the error); writing would only fail.
        if set.contains(EventSet::OUT) && !error {
            if let Err(e) = r.flush() {
                self.close(fd, CloseWhy::Quiet(format!("write failed: {e}")), ops);
                return;
            }
        }
        if !set.intersects(EventSet::IN | EventSet::HANG_UP | EventSet::READ_HANG_UP) && !error {
            return;
        }
        let gone = error || set.contains(EventSet::HANG_UP);
        if r.interest.contains(EventSet::IN) {
            match self.read_from(fd, ops) {
                ReadEnd::Closed => return,
                // Level-triggered epoll reports the rest (and the hang-up) again.
                ReadEnd::More => return,
                ReadEnd::Drained if !error => return,
                ReadEnd::Paused if !gone => return,
                ReadEnd::Drained | ReadEnd::Paused => {}
            }
        } else if !gone {
            return;
        }
        // The peer is gone (or the connection failed) and reading did not end it.
        let Some(r) = self.readers.get_mut(&fd) else {
            return;
        };
        if r.held_inject.is_none() || stopping {
            let e = socket_error(fd);
            self.close(fd, CloseWhy::Quiet(format!("hung up ({e})")), ops);
            return;
        }
        // Reading is paused (a full inject buffer) and the peer is gone: take in what it
        // sent (the socket buffer, a bounded amount), leave the epoll set (HUP would fire
        // forever) and deliver it as room appears before closing.
        while r.pending_input() < DETACHED_INPUT_LIMIT {
            match r.fill_input() {
                Ok(ReadOutcome::Data) => {}
                Ok(_) | Err(_) => break,
            }
        }
        if r.pending_input() >= DETACHED_INPUT_LIMIT {
            log::warn!(
                "tap: reader ({}) hung up with more than {DETACHED_INPUT_LIMIT} bytes unread; \
                 the rest is lost",
                r.peer
            );
        }
        if ops.remove(Events::empty_raw(fd)).is_ok() {
            r.detached = true;
            r.discard_output();
            r.interest = EventSet::empty();
            log::debug!("tap: reader ({}) hung up while paused", r.peer);
        } else {
            self.close(fd, CloseWhy::Quiet("hung up".into()), ops);
        }
    }

    /// Reads and handles what the reader sent, up to a few chunks per event.
    fn read_from(&mut self, fd: RawFd, ops: &mut EventOps) -> ReadEnd {
        for _ in 0..READS_PER_EVENT {
            let Some(r) = self.readers.get_mut(&fd) else {
                return ReadEnd::Closed;
            };
            match r.fill_input() {
                Ok(ReadOutcome::Data) => {}
                Ok(ReadOutcome::WouldBlock) => return ReadEnd::Drained,
                Ok(ReadOutcome::Eof) => {
                    let why = match r.pending_input() {
                        0 => "disconnected".to_string(),
                        n => format!("disconnected in the middle of a record ({n} bytes)"),
                    };
                    self.close(fd, CloseWhy::Quiet(why), ops);
                    return ReadEnd::Closed;
                }
                Err(e) => {
                    self.close(fd, CloseWhy::Quiet(format!("read failed: {e}")), ops);
                    return ReadEnd::Closed;
                }
            }
            if let Err(why) = self.process_input(fd) {
                self.close(fd, CloseWhy::Fault(why), ops);
                return ReadEnd::Closed;
            }
            if self
                .readers
                .get(&fd)
                .is_some_and(|r| r.held_inject.is_some())
            {
                return ReadEnd::Paused;
            }
        }
        ReadEnd::More
    }

    /// Handles every complete record in the reader's input buffer, stopping early if an
    /// INJECT has to wait for room. An error closes the reader.
    fn process_input(&mut self, fd: RawFd) -> Result<(), String> {
        loop {
            let Some(r) = self.readers.get_mut(&fd) else {
                return Ok(());
            };
            if r.held_inject.is_some() {
                break;
            }
            match r.next_record() {
                Ok(Some(rec)) => self.handle_request(fd, rec)?,
                Ok(None) => break,
                Err(e) => return Err(format!("malformed record: {e}")),
            }
        }
        if let Some(r) = self.readers.get_mut(&fd) {
            r.compact_input();
        }
        Ok(())
    }

    fn handle_request(&mut self, fd: RawFd, rec: Record) -> Result<(), String> {
        let time_ns = self.time_ns();
        let Some(r) = self.readers.get_mut(&fd) else {
            return Ok(());
        };
        if !r.may_control
            && r.sub.is_some()
            && matches!(rec, Record::SetControl { .. } | Record::Inject { .. })
        {
            // Refused, not a protocol error: the reader goes on listening. Told once (a
            // reader sending INJECT in a loop would otherwise queue a NOTICE per record).
            r.refused = r.refused.saturating_add(1);
            if r.refused == 1 {
                log::warn!(
                    "tap: reader ({}) sent {}: refused, TCP readers only listen \
                     (--allow-tcp-control); told, further ones dropped",
                    r.peer,
                    rec.kind_name()
                );
                let notice = Record::Notice {
                    time_ns,
                    level: NoticeLevel::Error,
                    text: TCP_LISTEN_ONLY.to_string(),
                };
                match notice.to_bytes() {
                    Ok(b) => r.push(Arc::new(b)),
                    Err(e) => log::error!("tap: cannot encode NOTICE: {e}"),
                }
            }
            return Ok(());
        }
        match (rec, r.sub.is_some()) {
            (Record::Subscribe { flags, streams }, false) => {
                if flags & !(SUB_LIVE | SUB_NO_PACING) != 0 {
                    log::debug!(
                        "tap: reader ({}) sent unknown subscribe flags {flags:#x}",
                        r.peer
                    );
                }
                let sub = Subscription { flags, streams };
                r.sub = Some(sub);
                // Counted before the snapshot is taken: the worker only hands over PCM while
                // someone is subscribed, so everything it publishes from now on comes after
                // the snapshot and reaches this reader.
                let first = self.shared.subscribed.fetch_add(1, Ordering::AcqRel) == 0;
                let first_fast =
                    sub.no_pacing() && !self.shared.no_pacing.swap(true, Ordering::AcqRel);
                if first || first_fast {
                    self.shared.notify();
                }
                for f in self.mirror.snapshot(&sub) {
                    r.push(f);
                }
                log::info!(
                    "tap: reader ({}) subscribed: streams {streams:#x}{}{}",
                    r.peer,
                    if sub.live() { ", live" } else { "" },
                    if sub.no_pacing() { ", no pacing" } else { "" }
                );
                Ok(())
            }
            (Record::Subscribe { .. }, true) => Err("SUBSCRIBE sent twice".into()),
            (Record::SetControl { id, values }, true) => {
                if !self.controls.contains(&id) {
                    return Err(format!("SET_CONTROL for unknown control {id}"));
                }
                self.shared
                    .push_request(TapRequest::SetControl { id, values });
                Ok(())
            }
            (Record::Inject { stream, data }, true) => {
                if !self.inputs.contains(&stream) {
                    return Err(format!("INJECT for stream {stream}, which is not an input"));
                }
                if data.is_empty() {
                    return Ok(());
                }
                if self.shared.inject.push_or_wait(stream, &data) {
                    self.shared.notify();
                } else {
                    log::debug!("tap: inject buffer of stream {stream} full; pausing reader");
                    r.held_inject = Some((stream, data));
                }
                Ok(())
            }
            (rec, subscribed) => Err(format!(
                "unexpected {} record{}",
                rec.kind_name(),
                if subscribed { "" } else { " before SUBSCRIBE" }
            )),
        }
    }

    /// Retries INJECT records that waited for room, and resumes those readers.
    pub(super) fn retry_held_injects(&mut self) {
        if !self.shared.inject.is_waiting() {
            return;
        }
        let held: Vec<RawFd> = self
            .readers
            .iter()
            .filter(|(_, r)| r.held_inject.is_some())
            .map(|(&fd, _)| fd)
            .collect();
        let mut still_waiting = false;
        for fd in held {
            let Some(r) = self.readers.get_mut(&fd) else {
                continue;
            };
            let Some((stream, data)) = r.held_inject.take() else {
                continue;
            };
            if !self.shared.inject.push_or_wait(stream, &data) {
                r.held_inject = Some((stream, data));
                still_waiting = true;
                continue;
            }
            self.shared.notify();
            match self.process_input(fd) {
                Ok(()) => {
                    if self
                        .readers
                        .get(&fd)
                        .is_some_and(|r| r.held_inject.is_some())
                    {
                        still_waiting = true;
                    }
                }
                Err(why) => {
                    // Closed in settle (it cannot reach the epoll set from here).
                    if let Some(r) = self.readers.get_mut(&fd) {
                        r.doomed = Some(CloseWhy::Fault(why));
                    }
                }
            }
        }
        if !still_waiting {
            self.shared.inject.clear_waiting();
        }
    }
}
