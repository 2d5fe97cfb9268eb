//! PCM transfers on the tx and rx queues: parsing and checking the guest's buffers, and
//! completing them when the clock says so.
//!
//! A TX chain is `virtio_snd_pcm_xfer {le32 stream_id}` and the PCM bytes (device-readable,
//! possibly over several descriptors), then `virtio_snd_pcm_status {le32 status, le32
//! latency_bytes}` (device-writable, exactly 8 bytes). An RX chain is the readable header,
//! then a device-writable PCM area followed by the status in its last 8 bytes. With
//! `--profile aero` the header is 8 bytes, {stream_id, reserved}.

use dsproxy_wire::record::{Direction, Record};
use log::{debug, warn};
use vm_memory::{Address, GuestMemory, Permissions};

use crate::card::{Card, CardTap};
use crate::chain::{read_segments, slice_segments, write_segments, Chain, Segment};
use crate::config::Pacing;
use crate::error::{Rejected, RequestError};
use crate::pcm::{HoldLimit, PcmBuffer, StreamState};
use crate::profile::Profile;
use crate::spec::{code, event_bytes, size, Status, EVENT_QUEUE, RX_QUEUE, TX_QUEUE};
use crate::Used;

/// The status location of a chain on `queue`, if it has one (the last 8 writable bytes).
fn status_segments(chain: &Chain) -> Option<Vec<Segment>> {
    let w = chain.writable_len();
    let off = w.checked_sub(size::PCM_STATUS as u64)?;
    slice_segments(&chain.writable, off, size::PCM_STATUS as u64)
}

/// Writes a `virtio_snd_pcm_status`, with the status code of the card's profile.
pub fn write_status<M: GuestMemory + ?Sized>(
    mem: &M,
    status_segs: &[Segment],
    status: Status,
    latency_bytes: u32,
    profile: Profile,
) -> Result<(), RequestError> {
    let mut b = [0u8; size::PCM_STATUS];
    b[..4].copy_from_slice(&profile.status_code(status).to_le_bytes());
    b[4..].copy_from_slice(&latency_bytes.to_le_bytes());
    write_segments(status_segs, mem, 0, &b)
}

impl<T: CardTap> Card<T> {
    /// Checks a chain from the tx (`TX_QUEUE`) or rx (`RX_QUEUE`) queue; on success returns
    /// the stream index and the buffer.
    fn parse_xfer<M: GuestMemory + ?Sized>(
        &self,
        mem: &M,
        queue: u16,
        chain: &Chain,
    ) -> Result<(usize, PcmBuffer), (Option<u32>, RequestError)> {
        let output = queue == TX_QUEUE;
        let fail = |stream: Option<u32>, e| Err((stream, e));
        if chain.misordered {
            return fail(None, RequestError::Misordered);
        }
        let wlen = chain.writable_len();
        let rlen = chain.readable_len();
        let hdr_len = self.cfg.profile.xfer_header_len() as u64;
        if output && wlen != size::PCM_STATUS as u64 {
            return fail(
                None,
                RequestError::BadResponseSize {
                    got: wlen,
                    expected: size::PCM_STATUS as u64,
                },
            );
        }
        if !output && wlen < size::PCM_STATUS as u64 {
            return fail(
                None,
                RequestError::ShortResponse {
                    got: wlen,
                    need: size::PCM_STATUS as u64,
                },
            );
        }
        if rlen < hdr_len {
            return fail(
                None,
                RequestError::ShortRequest {
                    got: rlen,
                    need: hdr_len,
                },
            );
        }
        if !output && rlen != hdr_len {
            return fail(
                None,
                RequestError::LongRequest {
                    got: rlen,
                    expected: hdr_len,
                },
            );
        }
        let mut hdr = [0u8; 4];
        chain.read_at(mem, 0, &mut hdr).map_err(|e| (None, e))?;
        let id = u32::from_le_bytes(hdr);
        let idx = self.stream_index(id).map_err(|e| (Some(id), e))?;
        let s = &self.streams[idx];
        let wanted = if output {
            Direction::Output
        } else {
            Direction::Input
        };
        if s.direction != wanted {
            return fail(
                Some(id),
                RequestError::WrongDirection {
                    stream: id,
                    actual: s.direction_name(),
                    wanted: if output { "output" } else { "input" },
                },
            );
        }
        let params = match (s.state.accepts_buffers(), s.params) {
            (true, Some(p)) => p,
            _ => {
                return fail(
                    Some(id),
                    RequestError::BadState {
                        request: if output { "TX buffer" } else { "RX buffer" },
                        state: s.state.name(),
                    },
                )
            }
        };
        let len = if output {
            rlen - hdr_len
        } else {
            wlen - size::PCM_STATUS as u64
        };
        if len == 0 {
            return fail(Some(id), RequestError::EmptyBuffer);
        }
        if len % params.frame_bytes as u64 != 0 {
            return fail(
                Some(id),
                RequestError::NotFrameMultiple {
                    len,
                    frame: params.frame_bytes,
                },
            );
        }
        if len > params.buffer_bytes as u64 {
            return fail(
                Some(id),
                RequestError::Oversize {
                    len,
                    limit: params.buffer_bytes as u64,
                },
            );
        }
        chain.check_mapped(mem).map_err(|e| (Some(id), e))?;
        let data = if output {
            slice_segments(&chain.readable, hdr_len, len)
        } else {
            slice_segments(&chain.writable, 0, len)
        };
        let (data, status) = match (data, status_segments(chain)) {
            (Some(d), Some(s)) => (d, s),
            _ => {
                return fail(
                    Some(id),
                    RequestError::ShortRequest {
                        got: rlen,
                        need: len,
                    },
                )
            }
        };
        let len = u32::try_from(len).map_err(|_| {
            (
                Some(id),
                RequestError::Oversize {
                    len,
                    limit: params.buffer_bytes as u64,
                },
            )
        })?;
        Ok((
            idx,
            PcmBuffer {
                head: chain.head,
                data,
                len,
                status,
            },
        ))
    }

    /// A chain arrived on the tx or rx queue.
    pub(crate) fn handle_xfer<M: GuestMemory + ?Sized>(
        &mut self,
        mem: &M,
        queue: u16,
        chain: Chain,
        now: u64,
    ) {
        let parsed = self.parse_xfer(mem, queue, &chain).and_then(|(idx, buf)| {
            match self.check_hold(queue, idx, &buf) {
                Ok(()) => Ok((idx, buf)),
                Err(e) => Err((self.streams.get(idx).map(|s| s.id), e)),
            }
        });
        let (idx, buf) = match parsed {
            Ok(v) => v,
            Err((stream, e)) => {
                self.reject_xfer(mem, queue, &chain, stream, &e, now);
                return;
            }
        };
        let time_ns = self.tap_time(now);
        let Some(s) = self.streams.get_mut(idx) else {
            return;
        };
        let mut overrun = false;
        if s.state == StreamState::Running {
            let grace = s.grace_ns();
            if let Some(gap) = s.clock.feed(now, grace) {
                debug!(
                    "stream {}: {} ran dry for {gap} ns",
                    s.id,
                    if s.direction == Direction::Output {
                        "playback"
                    } else {
                        "capture"
                    }
                );
                s.stats.underruns = s.stats.underruns.saturating_add(1);
                self.tap.publish(&Record::Xrun {
                    stream: s.id,
                    time_ns,
                    duration_ns: gap,
                });
                overrun = s.direction == Direction::Input;
            }
        }
        let id = s.id;
        s.push(buf);
        if overrun {
            // Real hardware lost capture data: tell the driver, as it would.
            self.send_event(mem, &event_bytes(code::EVT_PCM_XRUN, id));
        }
        self.service_stream(mem, idx, now);
    }

    /// Whether stream `idx` may take `buf` without the queue holding more than a driver can
    /// have in flight there (see [`HoldLimit`]).
    fn check_hold(&self, queue: u16, idx: usize, buf: &PcmBuffer) -> Result<(), RequestError> {
        let Some(s) = self.streams.get(idx) else {
            return Ok(());
        };
        let queue_name = if queue == TX_QUEUE { "tx" } else { "rx" };
        let over = |what, held: u64, limit: u64| {
            if held > limit {
                Err(RequestError::HoldLimit {
                    queue: queue_name,
                    what,
                    held,
                    limit,
                })
            } else {
                Ok(())
            }
        };
        over(
            "PCM bytes of the stream (twice its buffer)",
            s.queued_bytes.saturating_add(buf.len as u64),
            s.max_held_bytes(),
        )?;
        let peers = || self.streams.iter().filter(|t| t.direction == s.direction);
        let limit = HoldLimit::of(self.ring_size(queue), peers());
        let buffers: usize = peers().map(|t| t.queue.len()).sum();
        over("buffers", buffers as u64 + 1, limit.buffers as u64)?;
        let descriptors: usize = peers().map(|t| t.queued_descriptors).sum();
        over(
            "descriptors",
            descriptors.saturating_add(buf.descriptors()) as u64,
            limit.descriptors as u64,
        )
    }

    /// Returns a bad tx/rx chain with BAD_MSG in its status, if it has room for one.
    fn reject_xfer<M: GuestMemory + ?Sized>(
        &mut self,
        mem: &M,
        queue: u16,
        chain: &Chain,
        stream: Option<u32>,
        e: &RequestError,
        now: u64,
    ) {
        let status = status_segments(chain)
            .and_then(|segs| write_status(mem, &segs, e.status(), 0, self.cfg.profile).ok())
            .map(|()| e.status());
        let written = status.is_some();
        self.reject(
            &Rejected {
                queue: if queue == TX_QUEUE { "tx" } else { "rx" },
                head: chain.head,
                request: None,
                stream,
                status,
            },
            e,
            now,
        );
        self.used.push(Used {
            queue,
            head: chain.head,
            len: if written { size::PCM_STATUS as u32 } else { 0 },
        });
    }

    /// The card completes TX buffers without the clock (`--pacing none`, or a reader asked).
    fn pacing_off(&self) -> bool {
        self.cfg.pacing == Pacing::None || self.tap.no_pacing_requested()
    }

    /// Without pacing, an output stream is running and its head buffer waits for the
    /// guest's next one (the reserve, see [`ReserveWait`](crate::clock::ReserveWait)): the
    /// guest is about to send it, and the worker may poll for it (see [`crate::guest_poll`]).
    pub fn awaits_guest(&self) -> bool {
        if !self.pacing_off() || self.output_held() || self.dir_stopped(Direction::Output) {
            return false;
        }
        self.streams.iter().any(|s| {
            s.direction == Direction::Output
                && s.state == StreamState::Running
                && s.reserve_wait.is_waiting()
        })
    }

    /// At real-time pacing, every running output stream has a buffer behind its head and a
    /// deadline armed for the head: the worker wakes at that deadline whatever the guest
    /// does, and buffers the guest adds meanwhile are not needed before it (the stream
    /// cannot run dry), so the guest's kicks only cost wake-ups (see the backend's
    /// `settle_kicks`: each event first takes what the driver added). At least one such
    /// stream, none held, and the TX ring not stopped.
    pub fn tx_kicks_unneeded(&self) -> bool {
        if self.pacing_off() || self.output_held() || self.dir_stopped(Direction::Output) {
            return false;
        }
        let mut running = false;
        for (idx, s) in self.streams.iter().enumerate() {
            if s.direction != Direction::Output || s.state != StreamState::Running {
                continue;
            }
            if s.queue.len() < 2 || self.next_deadline(idx).is_none() {
                return false;
            }
            running = true;
        }
        running
    }

    /// Whether the guest's kicks on `queue` only cost wake-ups, because the worker will look
    /// at the ring before it needs what the guest adds (see the backend's `settle_kicks`;
    /// every event first takes what the driver added without kicking): the TX ring while
    /// [`tx_kicks_unneeded`](Self::tx_kicks_unneeded), the event queue at real-time pacing
    /// while the card holds an event buffer to tell the guest something with (the driver
    /// re-posts one per event: with a period's event per period, that kick was a second
    /// wake-up per period). Not without pacing, measured: with the event queue's kicks off
    /// there, the worker all but stopped polling the TX ring (112 yields instead of 3954 for
    /// the same 96 MB) and an unpaced 4-period stream ran at 179 MiB/s instead of 308
    /// (alternating runs). Our reading: those kicks, pending when a poll episode ends, bring
    /// the worker straight back to polling, which keeps the poll budget from shrinking.
    pub fn kicks_unneeded(&self, queue: u16) -> bool {
        match queue {
            TX_QUEUE => self.tx_kicks_unneeded(),
            EVENT_QUEUE => {
                !self.pacing_off() && !self.events.is_empty() && !self.queue_stopped(EVENT_QUEUE)
            }
            _ => false,
        }
    }

    /// Whether output must wait: `--wait-for-reader` with no reader, or a reader is full.
    fn output_held(&self) -> bool {
        (self.cfg.wait_for_reader && !self.tap.has_readers()) || !self.tap.can_accept()
    }

    /// Completes every buffer of stream `idx` that is due at `now`.
    pub fn service_stream<M: GuestMemory + ?Sized>(&mut self, mem: &M, idx: usize, now: u64) {
        loop {
            let pacing_off = self.pacing_off();
            let held = self.output_held();
            let Some(dir) = self.streams.get(idx).map(|s| s.direction) else {
                return;
            };
            if self.dir_stopped(dir) {
                return;
            }
            let Some(s) = self.streams.get_mut(idx) else {
                return;
            };
            if s.state != StreamState::Running {
                return;
            }
            let Some(head_len) = s.queue.front().map(|b| b.len as u64) else {
                if s.direction == Direction::Output && pacing_off {
                    // Without pacing the clock does not advance with the bytes: the queue
                    // ran dry now (the last buffer's wait ended with nothing behind it).
                    s.clock.starve_at(now);
                } else {
                    s.clock.starve();
                }
                return;
            };
            if s.direction == Direction::Output {
                if pacing_off {
                    // Real time no longer applies; the clock restarts when it does again.
                    s.ran_unpaced = true;
                    if held {
                        return;
                    }
                    if s.queued_bytes.saturating_sub(head_len) < s.unpaced_reserve() {
                        // The stream keeps its reserve: the head completes when enough has
                        // arrived behind it or its own duration has passed (ReserveWait).
                        let since = s.reserve_wait.begin(now);
                        let due = since.saturating_add(s.clock.bytes_to_ns(head_len));
                        if due > now {
                            return;
                        }
                    }
                    self.complete_tx_head(mem, idx, now);
                    continue;
                }
                s.reserve_wait.clear();
                if s.ran_unpaced {
                    s.ran_unpaced = false;
                    s.clock.start(now);
                }
                if s.clock.is_held() {
                    if held {
                        return;
                    }
                    if let Some(d) = s.clock.resume(now) {
                        debug!("stream {}: clock resumes after {d} ns held", s.id);
                    }
                }
                let Some(deadline) = s.clock.deadline(head_len) else {
                    return;
                };
                if deadline > now {
                    return;
                }
                if held {
                    debug!("stream {}: clock held (no reader / reader full)", s.id);
                    s.clock.hold(now);
                    return;
                }
                s.clock.complete(head_len);
                self.complete_tx_head(mem, idx, deadline);
            } else {
                if s.clock.is_held() {
                    s.clock.resume(now);
                }
                let Some(deadline) = s.clock.deadline(head_len) else {
                    return;
                };
                if deadline > now {
                    return;
                }
                s.clock.complete(head_len);
                self.complete_rx_head(mem, idx);
            }
        }
    }

    /// Completes whatever is due on every stream.
    pub fn service_all<M: GuestMemory + ?Sized>(&mut self, mem: &M, now: u64) {
        for idx in 0..self.streams.len() {
            self.service_stream(mem, idx, now);
        }
    }

    /// When stream `idx` next needs the worker (its timer's deadline), if it does.
    pub fn next_deadline(&self, idx: usize) -> Option<u64> {
        let s = self.streams.get(idx)?;
        if s.state != StreamState::Running || self.dir_stopped(s.direction) {
            return None;
        }
        if s.direction == Direction::Output && self.pacing_off() {
            // Only a waiting head needs the timer (a hold ends with the tap's notifier).
            if self.output_held() {
                return None;
            }
            let head = s.queue.front()?;
            return s.reserve_wait.due(s.clock.bytes_to_ns(head.len as u64));
        }
        let head = s.queue.front()?;
        s.clock.deadline(head.len as u64)
    }

    /// Completes the output buffer at the head of stream `idx`: it was played at `play_ns`.
    pub(crate) fn complete_tx_head<M: GuestMemory + ?Sized>(
        &mut self,
        mem: &M,
        idx: usize,
        play_ns: u64,
    ) {
        let time_ns = self.tap_time(play_ns);
        let Some(s) = self.streams.get_mut(idx) else {
            return;
        };
        let Some(buf) = s.pop() else {
            return;
        };
        let mut status = Status::Ok;
        if self.tap.has_readers() {
            // Checked whole first, so an unreadable buffer publishes nothing (the guest's
            // memory map cannot change under `mem` meanwhile).
            let published = match buf
                .data
                .iter()
                .find(|seg| !mem.check_range(seg.addr, seg.len as usize, Permissions::Read))
            {
                Some(seg) => Err(RequestError::Unmapped {
                    addr: seg.addr.raw_value(),
                    len: seg.len as u64,
                }),
                None => self.tap.publish_pcm(
                    s.id,
                    s.offset,
                    time_ns,
                    buf.len as usize,
                    &mut |at, out| read_segments(&buf.data, mem, at as u64, out),
                ),
            };
            if let Err(e) = published {
                warn!("stream {}: TX buffer unreadable at completion: {e}", s.id);
                status = Status::IoErr;
            }
        }
        s.offset = s.offset.saturating_add(buf.len as u64);
        s.stats.bytes = s.stats.bytes.saturating_add(buf.len as u64);
        let latency = u32::try_from(s.queued_bytes).unwrap_or(u32::MAX);
        self.finish_buffer(
            mem,
            TX_QUEUE,
            idx,
            &buf,
            status,
            latency,
            size::PCM_STATUS as u32,
        );
    }

    /// Completes the input buffer at the head of stream `idx` with what readers injected and
    /// silence for the rest.
    pub(crate) fn complete_rx_head<M: GuestMemory + ?Sized>(&mut self, mem: &M, idx: usize) {
        let Some(s) = self.streams.get_mut(idx) else {
            return;
        };
        let Some(buf) = s.pop() else {
            return;
        };
        let silence = s.params.map_or(0, |p| p.shape.format.silence_byte());
        let mut data = vec![silence; buf.len as usize];
        let got = self.tap.read_inject(s.id, &mut data).min(data.len());
        // A partial frame from the reader would shift every later frame: keep whole frames.
        let frame = s.params.map_or(1, |p| p.frame_bytes as usize).max(1);
        let whole = got - got % frame;
        if let Some(tail) = data.get_mut(whole..) {
            tail.fill(silence);
        }
        let (status, used_len) = match write_segments(&buf.data, mem, 0, &data) {
            Ok(()) => (Status::Ok, buf.len + size::PCM_STATUS as u32),
            Err(e) => {
                warn!("stream {}: RX buffer unwritable at completion: {e}", s.id);
                (Status::IoErr, size::PCM_STATUS as u32)
            }
        };
        s.offset = s.offset.saturating_add(buf.len as u64);
        s.stats.bytes = s.stats.bytes.saturating_add(buf.len as u64);
        self.finish_buffer(mem, RX_QUEUE, idx, &buf, status, 0, used_len);
    }

    /// Writes a completed buffer's status, returns it to the guest, and counts periods.
    #[allow(clippy::too_many_arguments)]
    fn finish_buffer<M: GuestMemory + ?Sized>(
        &mut self,
        mem: &M,
        queue: u16,
        idx: usize,
        buf: &PcmBuffer,
        status: Status,
        latency: u32,
        used_len: u32,
    ) {
        let len = match write_status(mem, &buf.status, status, latency, self.cfg.profile) {
            Ok(()) => used_len,
            Err(e) => {
                warn!("PCM buffer {}: status unwritable: {e}", buf.head);
                0
            }
        };
        self.used.push(Used {
            queue,
            head: buf.head,
            len,
        });
        let Some(s) = self.streams.get_mut(idx) else {
            return;
        };
        let period = s.params.map_or(0, |p| p.period_bytes as u64);
        if period == 0 {
            return;
        }
        s.period_progress = s.period_progress.saturating_add(buf.len as u64);
        let id = s.id;
        // A tiny period (the guest chooses it) could mean thousands of periods per buffer:
        // count them arithmetically and send no more events than there are buffers for.
        let periods = s.period_progress / period;
        s.period_progress %= period;
        let deliverable = periods.min(self.events.len() as u64);
        for _ in 0..deliverable {
            self.send_event(mem, &event_bytes(code::EVT_PCM_PERIOD_ELAPSED, id));
        }
        let missed = periods - deliverable;
        if missed > 0 {
            self.events.undelivered = self.events.undelivered.saturating_add(missed);
            debug!("stream {id}: {missed} period events without an event buffer");
        }
    }

    /// Returns every queued buffer of stream `idx` unplayed (status OK, as RELEASE wants).
    /// Returns the bytes discarded.
    pub(crate) fn return_all<M: GuestMemory + ?Sized>(&mut self, mem: &M, idx: usize) -> u64 {
        let Some(s) = self.streams.get_mut(idx) else {
            return 0;
        };
        let queue = match s.direction {
            Direction::Output => TX_QUEUE,
            Direction::Input => RX_QUEUE,
        };
        let bufs = s.take_all();
        let total: u64 = bufs.iter().map(|b| b.len as u64).sum();
        s.stats.returned_bytes = s.stats.returned_bytes.saturating_add(total);
        if self.queue_stopped(queue) {
            // The ring is not ours to write now; the buffers are forgotten.
            return total;
        }
        for b in bufs {
            let len = match write_status(mem, &b.status, Status::Ok, 0, self.cfg.profile) {
                Ok(()) => size::PCM_STATUS as u32,
                Err(e) => {
                    warn!("PCM buffer {}: status unwritable: {e}", b.head);
                    0
                }
            };
            self.used.push(Used {
                queue,
                head: b.head,
                len,
            });
        }
        total
    }
}
