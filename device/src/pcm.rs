//! PCM streams: PCM_INFO, parameters, and the per-stream state machine of the spec
//! (virtio 1.2 §5.14.6.6.1).

use std::collections::VecDeque;

use dsproxy_wire::format::{PcmFormat, PcmRate, PcmShape};
use dsproxy_wire::record::{Direction, Params, Record};
use log::debug;
use vm_memory::GuestMemory;

use crate::card::{Card, CardTap};
use crate::chain::Segment;
use crate::clock::{PacingClock, ReserveWait};
use crate::config::CardConfig;
use crate::error::RequestError;
use crate::spec::{code, le32, size, LeBuf, D_INPUT, D_OUTPUT};

/// A request that moves a stream through its states. PCM_INFO is a query, not one of these,
/// so it cannot be handed to [`StreamState::after`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PcmCommand {
    SetParams,
    Prepare,
    Start,
    Stop,
    Release,
}

impl PcmCommand {
    /// The request's `code::PCM_*`.
    pub fn code(self) -> u32 {
        match self {
            PcmCommand::SetParams => code::PCM_SET_PARAMS,
            PcmCommand::Prepare => code::PCM_PREPARE,
            PcmCommand::Start => code::PCM_START,
            PcmCommand::Stop => code::PCM_STOP,
            PcmCommand::Release => code::PCM_RELEASE,
        }
    }
}

impl TryFrom<u32> for PcmCommand {
    type Error = RequestError;

    fn try_from(c: u32) -> Result<PcmCommand, RequestError> {
        match c {
            code::PCM_SET_PARAMS => Ok(PcmCommand::SetParams),
            code::PCM_PREPARE => Ok(PcmCommand::Prepare),
            code::PCM_START => Ok(PcmCommand::Start),
            code::PCM_STOP => Ok(PcmCommand::Stop),
            code::PCM_RELEASE => Ok(PcmCommand::Release),
            other => Err(RequestError::UnknownCode(other)),
        }
    }
}

/// Where a stream is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StreamState {
    /// Never configured (or the device was reset).
    Idle,
    ParamsSet,
    Prepared,
    Running,
    Stopped,
    Released,
}

impl StreamState {
    pub fn name(self) -> &'static str {
        match self {
            StreamState::Idle => "IDLE",
            StreamState::ParamsSet => "PARAMS_SET",
            StreamState::Prepared => "PREPARED",
            StreamState::Running => "RUNNING",
            StreamState::Stopped => "STOPPED",
            StreamState::Released => "RELEASED",
        }
    }

    /// The state after `cmd`, if it is allowed.
    ///
    /// SET_PARAMS from the initial state, PARAMS_SET, PREPARED and RELEASED; PREPARE from
    /// PARAMS_SET, PREPARED and RELEASED; START from PREPARED and STOPPED; STOP from RUNNING;
    /// RELEASE from PREPARED and STOPPED (and, leniently, PARAMS_SET).
    pub fn after(self, cmd: PcmCommand) -> Result<StreamState, RequestError> {
        use PcmCommand::*;
        use StreamState::*;
        let next = match (cmd, self) {
            (SetParams, Idle | ParamsSet | Prepared | Released) => ParamsSet,
            (Prepare, ParamsSet | Prepared | Released) => Prepared,
            (Start, Prepared | Stopped) => Running,
            (Stop, Running) => Stopped,
            (Release, ParamsSet | Prepared | Stopped) => Released,
            _ => {
                return Err(RequestError::BadState {
                    request: code::name(cmd.code()),
                    state: self.name(),
                })
            }
        };
        Ok(next)
    }

    /// The guest may queue PCM buffers (pre-buffering while PREPARED, kept while STOPPED).
    pub fn accepts_buffers(self) -> bool {
        matches!(
            self,
            StreamState::Prepared | StreamState::Running | StreamState::Stopped
        )
    }
}

/// Parameters the guest set, checked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StreamParams {
    pub buffer_bytes: u32,
    pub period_bytes: u32,
    pub features: u32,
    pub shape: PcmShape,
    pub frame_bytes: u32,
    pub byte_rate: u64,
}

impl StreamParams {
    pub fn to_record(&self, stream: u32) -> Params {
        Params {
            stream,
            buffer_bytes: self.buffer_bytes,
            period_bytes: self.period_bytes,
            features: self.features,
            channels: self.shape.channels,
            format: self.shape.format.code(),
            rate: self.shape.rate.code(),
        }
    }
}

/// A parsed `virtio_snd_pcm_set_params` (before checking).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SetParams {
    pub stream: u32,
    pub buffer_bytes: u32,
    pub period_bytes: u32,
    pub features: u32,
    pub channels: u8,
    pub format: u8,
    pub rate: u8,
}

impl SetParams {
    /// Parses the 24-byte request.
    pub fn parse(b: &[u8]) -> Option<SetParams> {
        Some(SetParams {
            stream: le32(b, 4)?,
            buffer_bytes: le32(b, 8)?,
            period_bytes: le32(b, 12)?,
            features: le32(b, 16)?,
            channels: *b.get(20)?,
            format: *b.get(21)?,
            rate: *b.get(22)?,
        })
    }

    /// Checks the parameters against what stream `id` offers.
    pub fn check(&self, cfg: &CardConfig) -> Result<StreamParams, RequestError> {
        let bad = |why: String| Err(RequestError::BadParams(why));
        if self.features != 0 {
            return Err(RequestError::NotSupported("PCM features (none offered)"));
        }
        let format = match PcmFormat::from_code(self.format) {
            Some(f) if cfg.formats & f.mask_bit() != 0 && f.sample_bytes().is_some() => f,
            _ => return bad(format!("format {} not offered", self.format)),
        };
        let rate = match PcmRate::from_code(self.rate) {
            Some(r) if cfg.rates & r.mask_bit() != 0 => r,
            _ => return bad(format!("rate code {} not offered", self.rate)),
        };
        let max = cfg.channels_max(self.stream);
        if self.channels < 1 || self.channels > max {
            return bad(format!("{} channels (1..={max})", self.channels));
        }
        let shape = PcmShape {
            format,
            rate,
            channels: self.channels,
        };
        let (frame, byte_rate) = match (shape.frame_bytes(), shape.byte_rate()) {
            (Some(f), Some(r)) => (f, r),
            _ => return bad("format has no frame size".into()),
        };
        if self.period_bytes == 0 || self.buffer_bytes == 0 {
            return bad("zero period or buffer size".into());
        }
        if !self.period_bytes.is_multiple_of(frame) || !self.buffer_bytes.is_multiple_of(frame) {
            return bad(format!(
                "buffer {} / period {} bytes not multiples of the {frame}-byte frame",
                self.buffer_bytes, self.period_bytes
            ));
        }
        if self.period_bytes > self.buffer_bytes {
            return bad(format!(
                "period {} bytes larger than buffer {} bytes",
                self.period_bytes, self.buffer_bytes
            ));
        }
        if self.buffer_bytes > cfg.max_buffer_bytes {
            return bad(format!(
                "buffer {} bytes over the {} limit",
                self.buffer_bytes, cfg.max_buffer_bytes
            ));
        }
        Ok(StreamParams {
            buffer_bytes: self.buffer_bytes,
            period_bytes: self.period_bytes,
            features: self.features,
            shape,
            frame_bytes: frame,
            byte_rate,
        })
    }
}

/// The `virtio_snd_pcm_info` of stream `id`.
pub fn info_bytes(cfg: &CardConfig, id: u32) -> Option<Vec<u8>> {
    let dir = cfg.stream_direction(id)?;
    let mut b = LeBuf::with_capacity(size::PCM_INFO);
    b.u32(cfg.stream_nid(id))
        .u32(0) // features: no shared memory, no message polling
        .u64(cfg.formats)
        .u64(cfg.rates)
        .u8(match dir {
            Direction::Output => D_OUTPUT,
            Direction::Input => D_INPUT,
        })
        .u8(1)
        .u8(cfg.channels_max(id))
        .zeros(5);
    Some(b.into_vec())
}

/// A PCM buffer the guest queued, waiting for the clock.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PcmBuffer {
    pub head: u16,
    /// The PCM bytes: device-readable for output, device-writable for input.
    pub data: Vec<Segment>,
    /// PCM bytes in `data`.
    pub len: u32,
    /// Where the 8-byte status goes.
    pub status: Vec<Segment>,
}

impl PcmBuffer {
    /// The descriptors (PCM and status) the device keeps while it holds the buffer.
    pub fn descriptors(&self) -> usize {
        self.data.len().saturating_add(self.status.len())
    }
}

/// What the buffers held on one PCM queue (tx or rx), all its streams together, may add up
/// to: what a driver can have in flight there. A guest that makes the same descriptor head
/// available again and again would otherwise grow the daemon without bound; the buffers
/// the device holds cost it their descriptors (it keeps guest addresses, not audio), so
/// those are what is counted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HoldLimit {
    /// Chains: a driver has `ring size` descriptors, and every chain takes at least one.
    pub buffers: usize,
    /// Descriptors: per chain its two ends and status (at most 4 beyond the pages of its
    /// PCM), plus one per page of what the queue's streams may hold
    /// ([`Stream::max_held_bytes`]): a driver's PCM lies in pages (ALSA and Windows buffers
    /// are page-backed), and an indirect chain may have more descriptors than the ring.
    pub descriptors: usize,
}

/// Bytes of PCM one descriptor of a driver's buffer covers, but for the ends: a page.
const PAGE_BYTES: u64 = 4096;

impl HoldLimit {
    /// The limit of a queue of `ring_size` entries whose streams are `streams`.
    pub fn of<'a>(ring_size: u16, streams: impl Iterator<Item = &'a Stream>) -> HoldLimit {
        let ring = ring_size as usize;
        let pages: u64 = streams
            .map(|s| s.max_held_bytes().div_ceil(PAGE_BYTES))
            .fold(0u64, u64::saturating_add);
        HoldLimit {
            buffers: ring,
            descriptors: ring
                .saturating_mul(4)
                .saturating_add(usize::try_from(pages).unwrap_or(usize::MAX)),
        }
    }
}

/// One PCM stream of the card.
#[derive(Debug)]
pub struct Stream {
    pub id: u32,
    pub direction: Direction,
    pub state: StreamState,
    pub params: Option<StreamParams>,
    /// Buffers the guest queued, oldest first.
    pub queue: VecDeque<PcmBuffer>,
    /// PCM bytes in `queue`.
    pub queued_bytes: u64,
    /// Descriptors (PCM and status) of the buffers in `queue`: what holding them costs.
    pub queued_descriptors: usize,
    pub clock: PacingClock,
    /// Bytes played (output) or captured (input) since the last PREPARE.
    pub offset: u64,
    /// Bytes towards the next PCM_PERIOD_ELAPSED.
    pub period_progress: u64,
    /// The buffers were last completed without the clock (no pacing); on the way back to
    /// real time the clock re-anchors.
    pub ran_unpaced: bool,
    /// Without pacing: since when the head buffer has been waiting (the stream keeps its
    /// reserve, see [`unpaced_reserve`](Self::unpaced_reserve)).
    pub reserve_wait: ReserveWait,
    /// What the stream did since its last release, for the summary logged then.
    pub stats: StreamStats,
}

/// A stream's figures between two releases, for the summary line
/// `Card::log_release` (card.rs) logs (why one line per use of a stream: see there).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StreamStats {
    /// PCM bytes played (output) or captured (input).
    pub bytes: u64,
    /// Time spent running, ns (START to STOP, summed).
    pub running_ns: u64,
    /// The instant of the START of the current run.
    pub running_since: Option<u64>,
    /// STARTs.
    pub starts: u32,
    /// Times the queue ran dry for longer than the grace (playback) or capture found no
    /// buffer (input).
    pub underruns: u32,
    /// Bytes returned unplayed (RELEASE, new parameters, reset).
    pub returned_bytes: u64,
}

impl StreamStats {
    pub fn start(&mut self, now: u64) {
        self.starts = self.starts.saturating_add(1);
        self.running_since = Some(now);
    }

    pub fn stop(&mut self, now: u64) {
        if let Some(since) = self.running_since.take() {
            self.running_ns = self.running_ns.saturating_add(now.saturating_sub(since));
        }
    }

    /// Whether there is anything to tell.
    pub fn is_empty(&self) -> bool {
        self.starts == 0 && self.bytes == 0 && self.returned_bytes == 0
    }
}

impl Stream {
    pub fn new(id: u32, direction: Direction) -> Stream {
        Stream {
            id,
            direction,
            state: StreamState::Idle,
            params: None,
            queue: VecDeque::new(),
            queued_bytes: 0,
            queued_descriptors: 0,
            clock: PacingClock::default(),
            offset: 0,
            period_progress: 0,
            ran_unpaced: false,
            reserve_wait: ReserveWait::default(),
            stats: StreamStats::default(),
        }
    }

    pub fn direction_name(&self) -> &'static str {
        match self.direction {
            Direction::Output => "output",
            Direction::Input => "input",
        }
    }

    /// Without pacing, the bytes an output stream keeps queued while the guest may still be
    /// writing: two periods, so the guest always sees more than a period in flight (why: see
    /// [`ReserveWait`]). A buffer of two periods or less is then completed at the real-time
    /// rate — slower, but never the guest's silence over its own data.
    pub fn unpaced_reserve(&self) -> u64 {
        self.params
            .map_or(0, |p| 2u64.saturating_mul(p.period_bytes as u64))
    }

    /// The grace the clock allows an empty queue before it calls it an xrun: one period.
    pub fn grace_ns(&self) -> u64 {
        self.params
            .map_or(0, |p| self.clock.bytes_to_ns(p.period_bytes as u64))
    }

    /// The PCM bytes this stream may hold: twice its buffer. A driver keeps at most its
    /// buffer in flight; the second one leaves room for a driver that queues its buffer
    /// again before the device returned the first (a capture resumed after a pause: the
    /// device keeps buffers over STOP). The caps that bound the daemon's memory are the
    /// queue's, in [`HoldLimit`].
    pub fn max_held_bytes(&self) -> u64 {
        self.params
            .map_or(0, |p| 2u64.saturating_mul(p.buffer_bytes as u64))
    }

    pub fn push(&mut self, buf: PcmBuffer) {
        self.queued_bytes = self.queued_bytes.saturating_add(buf.len as u64);
        self.queued_descriptors = self.queued_descriptors.saturating_add(buf.descriptors());
        self.queue.push_back(buf);
    }

    /// Takes every queued buffer out, oldest first.
    pub fn take_all(&mut self) -> Vec<PcmBuffer> {
        self.queued_bytes = 0;
        self.queued_descriptors = 0;
        self.reserve_wait.clear();
        self.queue.drain(..).collect()
    }

    pub fn pop(&mut self) -> Option<PcmBuffer> {
        let b = self.queue.pop_front()?;
        // The next head begins its own wait, if it has to.
        self.reserve_wait.clear();
        self.queued_bytes = self.queued_bytes.saturating_sub(b.len as u64);
        self.queued_descriptors = self.queued_descriptors.saturating_sub(b.descriptors());
        Some(b)
    }
}

impl<T: CardTap> Card<T> {
    pub(crate) fn set_params<M: GuestMemory + ?Sized>(
        &mut self,
        mem: &M,
        p: &SetParams,
    ) -> Result<(), RequestError> {
        let idx = self.stream_index(p.stream)?;
        let state = self.streams[idx].state;
        let next = state.after(PcmCommand::SetParams)?;
        let params = p.check(&self.cfg)?;
        // Buffers pre-queued under the old parameters no longer fit the new ones.
        let returned = self.return_all(mem, idx);
        if returned > 0 {
            debug!(
                "stream {}: new parameters, {returned} queued bytes returned unplayed",
                p.stream
            );
        }
        let s = &mut self.streams[idx];
        s.params = Some(params);
        s.clock = crate::clock::PacingClock::new(params.byte_rate);
        s.state = next;
        debug!(
            "stream {}: params {} buffer {} period {}",
            p.stream, params.shape, params.buffer_bytes, params.period_bytes
        );
        self.tap
            .publish(&Record::Params(params.to_record(p.stream)));
        Ok(())
    }

    pub(crate) fn stream_command<M: GuestMemory + ?Sized>(
        &mut self,
        mem: &M,
        cmd: PcmCommand,
        id: u32,
        now: u64,
    ) -> Result<(), RequestError> {
        let idx = self.stream_index(id)?;
        let time_ns = self.tap_time(now);
        let state = self.streams[idx].state;
        let next = state.after(cmd)?;
        match cmd {
            PcmCommand::Prepare => {
                let s = &mut self.streams[idx];
                s.offset = 0;
                s.period_progress = 0;
                s.state = next;
                debug!("stream {id}: prepared");
                self.tap.publish(&Record::Prepare {
                    stream: id,
                    time_ns,
                });
            }
            PcmCommand::Start => {
                let s = &mut self.streams[idx];
                s.state = next;
                s.clock.start(now);
                s.ran_unpaced = false;
                s.reserve_wait.clear();
                s.stats.start(now);
                debug!("stream {id}: started ({} bytes queued)", s.queued_bytes);
                self.tap.publish(&Record::Start {
                    stream: id,
                    time_ns,
                });
                self.service_stream(mem, idx, now);
            }
            PcmCommand::Stop => {
                let s = &mut self.streams[idx];
                s.state = next;
                s.clock.stop();
                s.reserve_wait.clear();
                s.stats.stop(now);
                let queued = s.queued_bytes;
                debug!("stream {id}: stopped ({queued} bytes still queued)");
                self.tap.publish(&Record::Stop {
                    stream: id,
                    time_ns,
                    drained: queued == 0,
                    discarded_bytes: queued,
                });
            }
            PcmCommand::Release => {
                let returned = self.return_all(mem, idx);
                let s = &mut self.streams[idx];
                s.state = next;
                s.clock.stop();
                debug!("stream {id}: released ({returned} bytes returned unplayed)");
                self.tap.publish(&Record::Release {
                    stream: id,
                    time_ns,
                });
                self.log_release(idx, now, "guest");
            }
            // SET_PARAMS carries parameters: `set_params` does it.
            PcmCommand::SetParams => return Err(RequestError::UnknownCode(cmd.code())),
        }
        debug_assert_ne!(next, StreamState::Idle);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use StreamState::*;

    #[test]
    fn state_machine_matches_spec() {
        use PcmCommand::*;
        let all = [Idle, ParamsSet, Prepared, Running, Stopped, Released];
        fn allowed(cmd: PcmCommand, from: StreamState) -> bool {
            match cmd {
                SetParams => matches!(from, Idle | ParamsSet | Prepared | Released),
                Prepare => matches!(from, ParamsSet | Prepared | Released),
                Start => matches!(from, Prepared | Stopped),
                Stop => matches!(from, Running),
                Release => matches!(from, ParamsSet | Prepared | Stopped),
            }
        }
        for cmd in [SetParams, Prepare, Start, Stop, Release] {
            assert_eq!(PcmCommand::try_from(cmd.code()), Ok(cmd));
            for s in all {
                assert_eq!(s.after(cmd).is_ok(), allowed(cmd, s), "{cmd:?} from {s:?}");
            }
        }
        // PCM_INFO is a query: it never reaches the state machine.
        assert_eq!(
            PcmCommand::try_from(code::PCM_INFO),
            Err(RequestError::UnknownCode(code::PCM_INFO))
        );
        assert_eq!(Prepared.after(Start), Ok(Running));
        assert_eq!(Running.after(Stop), Ok(Stopped));
        assert_eq!(Stopped.after(Release), Ok(Released));
    }

    #[test]
    fn params_are_checked() {
        let cfg = CardConfig::default();
        let good = SetParams {
            stream: 0,
            buffer_bytes: 4 * 1024,
            period_bytes: 1024,
            features: 0,
            channels: 2,
            format: PcmFormat::S16.code(),
            rate: PcmRate::R48000.code(),
        };
        let p = good.check(&cfg).unwrap();
        assert_eq!(p.frame_bytes, 4);
        assert_eq!(p.byte_rate, 192_000);
        let bad = [
            SetParams {
                channels: 0,
                ..good
            },
            SetParams {
                channels: 3,
                stream: 1,
                ..good
            }, // input max 2
            SetParams { format: 0, ..good }, // ADPCM
            SetParams { format: 99, ..good },
            SetParams { rate: 0, ..good }, // 5512 not offered by default
            SetParams { rate: 14, ..good },
            SetParams {
                period_bytes: 0,
                ..good
            },
            SetParams {
                period_bytes: 1022,
                ..good
            },
            SetParams {
                buffer_bytes: 1026,
                ..good
            },
            SetParams {
                period_bytes: 8192,
                ..good
            },
            SetParams {
                buffer_bytes: 32 << 20,
                ..good
            },
        ];
        for b in bad {
            assert!(
                matches!(b.check(&cfg), Err(RequestError::BadParams(_))),
                "{b:?}"
            );
        }
        assert!(matches!(
            SetParams {
                features: 1,
                ..good
            }
            .check(&cfg),
            Err(RequestError::NotSupported(_))
        ));
    }

    #[test]
    fn pcm_info_layout() {
        let cfg = CardConfig::default();
        let i = info_bytes(&cfg, 1).unwrap();
        assert_eq!(i.len(), 32);
        assert_eq!(&i[8..16], &cfg.formats.to_le_bytes());
        assert_eq!(&i[16..24], &cfg.rates.to_le_bytes());
        assert_eq!((i[24], i[25], i[26]), (D_INPUT, 1, 2));
        assert!(info_bytes(&cfg, 2).is_none());
    }
}
