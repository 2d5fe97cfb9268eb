//! Fan-out and backpressure accounting: what the worker published goes into each selected
//! reader's queue (or, for a live reader without room, into a GAP); after every event the
//! queues are written, the high-water marks checked and the worker's flags updated.

use std::os::fd::RawFd;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use dsproxy_wire::record::{NoticeLevel, Record};
use event_manager::{EventOps, EventSet, Events};

use super::super::conn::{CloseWhy, Reader};
use super::super::shared::{Frame, Item};
use super::TapLoop;

impl TapLoop {
    pub(super) fn dispatch(&mut self, item: Item) {
        match item {
            Item::Hello(h) => match Record::Hello(h.clone()).to_bytes() {
                Ok(_) => self.set_hello(h),
                Err(e) => log::warn!("tap: new device description not usable: {e}"),
            },
            Item::Event { rec, frame } => {
                self.shared.release_event();
                self.fan_out_event(&rec, &frame);
            }
            Item::Lost(n) => {
                let rec = Record::Notice {
                    time_ns: self.time_ns(),
                    level: NoticeLevel::Warning,
                    text: format!(
                        "the tap fell behind the card: {n} records (stream states, mixer \
                         changes, xruns) were not delivered here; the card state shown may be \
                         stale until it next changes"
                    ),
                };
                // Limited like the card's lines: a stall that comes and goes could repeat it.
                if let Some(held) = self.lost_lines.take(crate::clock::monotonic_ns()) {
                    log::warn!(
                        "tap: {n} records dropped, the tap thread was too far behind; readers \
                         told{}",
                        if held > 0 {
                            format!(" ({held} earlier such lines not logged)")
                        } else {
                            String::new()
                        }
                    );
                }
                match rec.to_bytes() {
                    Ok(b) => self.fan_out_event(&rec, &Arc::new(b)),
                    Err(e) => log::error!("tap: cannot encode NOTICE: {e}"),
                }
            }
            Item::Pcm {
                stream,
                offset,
                time_ns,
                data_len,
                frame,
            } => {
                self.shared.sub_inflight(frame.len());
                for r in self.readers.values_mut() {
                    let Some(sub) = r.sub else { continue };
                    if !sub.selects(Some(stream)) {
                        continue;
                    }
                    let fits =
                        |r: &Reader| r.queued().saturating_add(frame.len()) <= self.high_water;
                    if sub.live() && !fits(r) && !r.write_blocked() {
                        if let Err(e) = r.flush() {
                            r.doomed = Some(CloseWhy::Quiet(format!("write failed: {e}")));
                        }
                    }
                    if sub.live() && !fits(r) {
                        // Only dropped when the socket is really full, not because this
                        // batch has not been written out yet.
                        r.record_drop(stream, offset, data_len as u64, time_ns);
                    } else {
                        r.flush_gap(stream);
                        r.push(Arc::clone(&frame));
                    }
                }
            }
        }
    }

    /// A non-PCM record: into the state mirror and every reader that selects it.
    fn fan_out_event(&mut self, rec: &Record, frame: &Frame) {
        self.mirror.update(rec, frame);
        let stream = rec.stream();
        for r in self.readers.values_mut() {
            if r.sub.is_some_and(|s| s.selects(stream)) {
                // Drops reported before what follows them.
                r.flush_all_gaps();
                r.push(Arc::clone(frame));
            }
        }
    }

    // ---- bookkeeping after every event ----

    /// Writes pending output, applies backpressure accounting, reports live readers' gaps,
    /// updates each reader's epoll interest, closes the dead, and publishes the flags the
    /// worker reads.
    pub(super) fn settle(&mut self, ops: &mut EventOps) {
        let hw = self.high_water;
        let stopping = self.stop_deadline.is_some();
        let mut dead: Vec<(RawFd, CloseWhy)> = Vec::new();
        for (&fd, r) in self.readers.iter_mut() {
            if let Some(why) = r.doomed.take() {
                dead.push((fd, why));
                continue;
            }
            if r.detached {
                if r.held_inject.is_none() || stopping {
                    dead.push((fd, CloseWhy::Quiet("disconnected".into())));
                }
                continue;
            }
            if r.is_live() && r.has_gaps() && r.queued() <= hw / 2 {
                r.flush_all_gaps();
            }
            if r.queued() > 0 && !r.interest.contains(EventSet::OUT) {
                if let Err(e) = r.flush() {
                    dead.push((fd, CloseWhy::Quiet(format!("write failed: {e}"))));
                    continue;
                }
            }
            if r.queued() > self.hard_limit {
                dead.push((
                    fd,
                    CloseWhy::Fault(format!(
                        "not reading: {} bytes queued, limit {}",
                        r.queued(),
                        self.hard_limit
                    )),
                ));
                continue;
            }
            if stopping && r.queued() == 0 {
                dead.push((fd, CloseWhy::Quiet("tap shutting down".into())));
                continue;
            }
            if r.sub.is_some() && !r.is_live() {
                if r.queued() > hw {
                    r.over = true;
                } else if r.queued() <= hw / 2 {
                    r.over = false;
                }
            } else {
                r.over = false;
            }
            let mut want = EventSet::empty();
            if !stopping && r.held_inject.is_none() {
                want |= EventSet::IN;
            }
            if r.queued() > 0 {
                want |= EventSet::OUT;
            }
            if want != r.interest {
                match ops.modify(Events::new_raw(fd, want)) {
                    Ok(()) => r.interest = want,
                    Err(e) => dead.push((fd, CloseWhy::Fault(format!("epoll: {e}")))),
                }
            }
        }
        for (fd, why) in dead {
            self.close(fd, why, ops);
        }
        self.publish_flags();
    }

    /// Stores `has_readers`, `no_pacing_requested` and `can_accept` for the worker, and
    /// signals the notifier when one of them changed.
    fn publish_flags(&mut self) {
        let subscribed = self.readers.values().filter(|r| r.sub.is_some()).count();
        let no_pacing = self
            .readers
            .values()
            .any(|r| r.sub.is_some_and(|s| s.no_pacing()));
        let accept = !self.readers.values().any(|r| r.over);
        // See Shared::bulk. Turning it off leaves nothing waiting: bytes published in bulk
        // before have the timer armed for them.
        let bulk = subscribed > 0
            && (no_pacing || self.card_unpaced)
            && self
                .readers
                .values()
                .all(|r| r.sub.is_none() || !r.is_live());
        self.shared.bulk.store(bulk, Ordering::Release);
        let old_sub = self.shared.subscribed.swap(subscribed, Ordering::AcqRel);
        let old_np = self.shared.no_pacing.swap(no_pacing, Ordering::AcqRel);
        let old_acc = self.shared.accept.swap(accept, Ordering::AcqRel);
        if (old_sub > 0) != (subscribed > 0) || old_np != no_pacing || old_acc != accept {
            self.shared.notify();
        }
    }
}
