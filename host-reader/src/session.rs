//! The reader's state: what it knows of the card's streams and controls, and where each
//! record goes (files, stdout, the `-e`/`-i` logs, host playback, the injector).
//!
//! Rules the files follow:
//! - A stream's file is opened when its first audio arrives (a WAV header needs the params).
//! - A change of format, rate or channel count closes the file; the next audio opens the
//!   next segment. So do losing the device and the VM going away.
//! - A GAP (audio this reader did not get, in `--live` mode) is written as silence of the
//!   gap's length, so the file keeps its timing, and is logged on stderr. A jump in PCM
//!   offsets without a GAP record is treated the same way.
//! - XRUNs are not filled: the file holds what the guest wrote, and an underrun is time in
//!   which the guest wrote nothing.

use std::collections::{BTreeMap, HashMap};
use std::io::{self, BufWriter, Stdout, Write};
use std::time::{Duration, Instant};

use dsproxy_wire::record::{
    ControlDesc, ControlOrigin, Direction, Hello, Params, Record, StreamDesc,
};

use crate::connection::TapStream;
use crate::console;
use crate::convert::AudioShape;
use crate::english::{self, English};
use crate::error::ReaderError;
use crate::inject::Injector;
use crate::mixer;
use crate::mixer_set::{self, MixerArg, MixerRequests, MixerSet, Sent};
use crate::output::{FileTarget, Segment};
use crate::playback::Playback;
use crate::rawlog;

/// Housekeeping period (flushes, header patches, the running-time line).
pub const TICK: Duration = Duration::from_millis(200);
/// The most silence one gap may add: an hour of audio (or 1 GiB if the rate is unknown). A
/// larger claim is a broken peer, not a gap.
const MAX_FILL_SECONDS: u64 = 3600;
const MAX_FILL_UNKNOWN: u64 = 1 << 30;

/// What the session was asked to do.
#[derive(Debug, Clone, Default)]
pub struct SessionOptions {
    pub files: Option<FileTarget>,
    /// `-f`'s first file did not exist before the reader created it (so it may be removed if
    /// nothing is ever recorded to it).
    pub base_created: bool,
    pub stdout: bool,
    pub english: bool,
    pub records: bool,
    /// `--stream N`.
    pub stream: Option<u32>,
    pub once: bool,
    /// Draw the running-time line (stderr is a terminal).
    pub progress: bool,
    /// `--mixer`: controls to set once the first snapshot is in.
    pub mixer: Vec<MixerArg>,
    /// `--mixer` is the only job: done when the device has confirmed every change, and a
    /// change it does not confirm is an error.
    pub mixer_only: bool,
}

/// Whether to go on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flow {
    Continue,
    /// A clean end: `--once` saw its session end, stdout was closed, or a `--mixer`-only
    /// run had every change confirmed.
    Done,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Released,
    Prepared,
    Running,
    Stopped,
}

struct StreamState {
    desc: StreamDesc,
    /// Place among the card's output streams (selects its "PCM Playback" controls).
    out_index: Option<usize>,
    /// Names its files: the output index, or 0 for the one `--stream` picked.
    file_index: usize,
    /// Audio of this stream goes to files.
    recorded: bool,
    params: Option<Params>,
    phase: Phase,
    /// The offset the next PCM should have; `None` when not known (after a snapshot).
    expected: Option<u64>,
    segment: Option<Segment>,
    /// Audio bytes taken from this stream (all segments), and its duration.
    total_bytes: u64,
    ns_done: u128,
    bytes_this_shape: u64,
    warned_no_params: bool,
}

impl StreamState {
    fn shape(&self) -> Option<AudioShape> {
        self.params.as_ref().and_then(AudioShape::from_params)
    }

    fn duration_ns(&self) -> u128 {
        let cur = match self.shape().and_then(|s| s.byte_rate()) {
            Some(br) if br > 0 => self.bytes_this_shape as u128 * 1_000_000_000 / br as u128,
            _ => 0,
        };
        self.ns_done + cur
    }

    /// The shape is changing: bank the duration so far.
    fn bank_duration(&mut self) {
        self.ns_done = self.duration_ns();
        self.bytes_this_shape = 0;
    }
}

/// The reader's state across records and reconnections.
pub struct Session {
    opts: SessionOptions,
    target: String,
    streams: BTreeMap<u32, StreamState>,
    controls: BTreeMap<u32, (ControlDesc, Vec<i64>)>,
    english: Option<English>,
    stdout: Option<BufWriter<Stdout>>,
    playback: Option<Playback>,
    injector: Option<Injector>,
    /// `--mixer` and where each stands.
    mixer: MixerRequests,
    /// Where SET_CONTROL records go when there is no injector (with one, they go through its
    /// thread, so they never cut into an INJECT record on the socket).
    tap_writer: Option<TapStream>,
    /// The stream `-s`, playback and the running-time line follow.
    main_stream: Option<u32>,
    /// SNAPSHOT_END seen on this connection.
    live: bool,
    /// Segments opened so far, per output index (persists across reconnections).
    seg_counters: HashMap<usize, u32>,
    base_used: bool,
    /// A playback session (audio or a START on a recorded stream) happened: `--once` ends
    /// at its RELEASE.
    session_seen: bool,
    last_tick: Instant,
}

impl Session {
    pub fn new(
        opts: SessionOptions,
        target: String,
        playback: Option<Playback>,
        injector: Option<Injector>,
    ) -> Session {
        let stdout = opts
            .stdout
            .then(|| BufWriter::with_capacity(64 * 1024, io::stdout()));
        let mixer = MixerRequests::new(opts.mixer.clone());
        Session {
            opts,
            target,
            mixer,
            tap_writer: None,
            streams: BTreeMap::new(),
            controls: BTreeMap::new(),
            english: None,
            stdout,
            playback,
            injector,
            main_stream: None,
            live: false,
            seg_counters: HashMap::new(),
            base_used: false,
            session_seen: false,
            last_tick: Instant::now(),
        }
    }

    /// Checks a card against the options (`--stream`, `--inject`, `--mixer`) and returns the
    /// SUBSCRIBE stream mask.
    pub fn plan(&mut self, hello: &Hello) -> Result<u64, ReaderError> {
        let listing = || {
            hello
                .streams
                .iter()
                .map(|s| {
                    format!(
                        "{} {}",
                        s.id,
                        match s.direction {
                            Direction::Output => "out",
                            Direction::Input => "in",
                        }
                    )
                })
                .collect::<Vec<_>>()
                .join(", ")
        };
        let find = |id: u32| hello.streams.iter().find(|s| s.id == id);
        if let Some(n) = self.opts.stream {
            if find(n).map(|s| s.direction) != Some(Direction::Output) {
                return Err(ReaderError::Usage(format!(
                    "--stream {n}: the card has no output stream {n} (its streams: {})",
                    listing()
                )));
            }
        }
        if let Some(inj) = &self.injector {
            if find(inj.stream()).map(|s| s.direction) != Some(Direction::Input) {
                return Err(ReaderError::Usage(format!(
                    "--inject: the card has no input stream {} (its streams: {})",
                    inj.stream(),
                    listing()
                )));
            }
        }
        self.mixer.plan(hello).map_err(ReaderError::Usage)?;
        // One stream (plus the injected one) when --stream asks and the mask can say so.
        Ok(match self.opts.stream {
            Some(n) if n < 64 => {
                let inj = self.injector.as_ref().map(|i| i.stream());
                match inj {
                    Some(i) if i >= 64 => 0,
                    Some(i) => (1u64 << n) | (1u64 << i),
                    None => 1u64 << n,
                }
            }
            _ => 0,
        })
    }

    /// Takes the injector (created once the first card said which stream it feeds).
    pub fn set_injector(&mut self, inj: Injector) {
        self.injector = Some(inj);
    }

    /// `-i` shows the HELLO too (it is read while attaching, before [`Session::handle`]).
    pub fn log_hello(&self, hello: &Hello) {
        if self.opts.records {
            for l in rawlog::lines(&Record::Hello(hello.clone())) {
                console::line(&l);
            }
        }
    }

    /// The first input stream of a card (the default `--inject` target).
    pub fn first_input(hello: &Hello) -> Option<u32> {
        hello
            .streams
            .iter()
            .find(|s| s.direction == Direction::Input)
            .map(|s| s.id)
    }

    /// A new connection: take the card's description. `control` writes on its socket.
    pub fn attach(&mut self, hello: &Hello, control: Option<TapStream>) {
        self.live = false;
        self.streams.clear();
        let mut out_index = 0;
        for s in &hello.streams {
            let idx = (s.direction == Direction::Output).then(|| {
                out_index += 1;
                out_index - 1
            });
            self.streams.insert(
                s.id,
                StreamState {
                    desc: s.clone(),
                    out_index: idx,
                    file_index: idx.unwrap_or(0),
                    recorded: false,
                    params: None,
                    phase: Phase::Released,
                    expected: None,
                    segment: None,
                    total_bytes: 0,
                    ns_done: 0,
                    bytes_this_shape: 0,
                    warned_no_params: false,
                },
            );
        }
        self.main_stream = self.opts.stream.or_else(|| {
            hello
                .streams
                .iter()
                .find(|s| s.direction == Direction::Output)
                .map(|s| s.id)
        });
        // --stream N records N only, and N's files get the plain names.
        let main = self.main_stream;
        for st in self.streams.values_mut() {
            st.recorded = match self.opts.stream {
                Some(n) => st.desc.id == n,
                None => st.out_index.is_some(),
            };
            if self.opts.stream.is_some() {
                st.file_index = 0;
            }
        }
        self.controls = hello
            .controls
            .iter()
            .map(|c| (c.id, (c.clone(), vec![c.min; c.count.min(128) as usize])))
            .collect();
        match &mut self.english {
            Some(e) => e.set_hello(hello),
            None if self.opts.english => self.english = Some(English::new(hello, main)),
            None => {}
        }
        match (&self.injector, control) {
            (Some(inj), Some(c)) => {
                inj.attach(c);
                inj.update(None, false);
                self.tap_writer = None;
            }
            (None, c) => self.tap_writer = c,
            (Some(_), None) => self.tap_writer = None,
        }
    }

    /// The connection is gone: finalize every file (the next audio starts a new segment).
    pub fn detach(&mut self) -> Result<(), ReaderError> {
        if let Some(inj) = &self.injector {
            inj.detach();
        }
        self.tap_writer = None;
        self.mixer.connection_lost();
        self.close_all_segments()
    }

    /// The `--mixer` requests not confirmed yet, as one line (`None` when all are done).
    pub fn mixer_unfinished(&self) -> Option<String> {
        let left = self.mixer.unfinished();
        (!left.is_empty()).then(|| {
            left.iter()
                .map(|a| format!("--mixer {a}"))
                .collect::<Vec<_>>()
                .join(", ")
        })
    }

    /// Handles one record from the device.
    pub fn handle(&mut self, rec: Record) -> Result<Flow, ReaderError> {
        if self.opts.records {
            for l in rawlog::lines(&rec) {
                console::line(&l);
            }
        }
        // A CONTROL may confirm one of our --mixer changes; its -e line then says so.
        let confirmed = match &rec {
            Record::Control { id, values, .. } => self.mixer.on_control(*id, values),
            _ => None,
        };
        if let Some(e) = &mut self.english {
            match (&rec, &confirmed) {
                (
                    Record::Control {
                        origin: ControlOrigin::Reader,
                        values,
                        ..
                    },
                    Some(set),
                ) => console::line(&format!(
                    "host: {}",
                    english::control_line(&set.desc, values)
                )),
                _ => {
                    for l in e.lines(&rec) {
                        console::line(&l);
                    }
                }
            }
        }
        let flow = match rec {
            Record::Hello(_) => return Err(self.protocol("a second HELLO")),
            Record::Subscribe { .. } | Record::SetControl { .. } | Record::Inject { .. } => {
                return Err(self.protocol(&format!(
                    "a {} record, which only readers send",
                    rec.kind_name()
                )))
            }
            Record::SnapshotEnd => {
                self.live = true;
                self.send_mixer();
                self.mixer_flow()
            }
            Record::Params(p) => {
                self.on_params(p)?;
                Flow::Continue
            }
            Record::Prepare { stream, .. } => {
                let live = self.live;
                if let Some(st) = self.stream_mut(stream, "PREPARE") {
                    st.phase = Phase::Prepared;
                    st.expected = live.then_some(0);
                }
                self.update_injector(stream);
                Flow::Continue
            }
            Record::Start { stream, .. } => {
                if let Some(st) = self.stream_mut(stream, "START") {
                    st.phase = Phase::Running;
                    if st.recorded {
                        self.session_seen = true;
                    }
                }
                self.update_injector(stream);
                Flow::Continue
            }
            Record::Stop {
                stream, drained, ..
            } => {
                if let Some(st) = self.stream_mut(stream, "STOP") {
                    st.phase = Phase::Stopped;
                    if !drained {
                        // Whether discarded audio counts in later offsets is the device's
                        // business: resynchronize on the next PCM instead of guessing.
                        st.expected = None;
                    }
                    if let Some(seg) = st.segment.as_mut() {
                        seg.sync()?;
                    }
                }
                if !drained && Some(stream) == self.main_stream {
                    if let Some(p) = &mut self.playback {
                        p.reset();
                    }
                }
                self.update_injector(stream);
                Flow::Continue
            }
            Record::Release { stream, .. } => {
                let mut end = false;
                if let Some(st) = self.stream_mut(stream, "RELEASE") {
                    st.phase = Phase::Released;
                    st.expected = None;
                    if let Some(seg) = st.segment.as_mut() {
                        seg.sync()?;
                    }
                    end = st.recorded;
                }
                self.update_injector(stream);
                if end && self.opts.once && self.session_seen {
                    Flow::Done
                } else {
                    Flow::Continue
                }
            }
            Record::Pcm {
                stream,
                offset,
                data,
                ..
            } => self.on_pcm(stream, offset, &data)?,
            Record::Gap {
                stream,
                offset,
                bytes,
                ..
            } => self.on_gap(stream, offset, bytes)?,
            Record::Control { id, values, .. } => {
                match self.controls.get_mut(&id) {
                    Some((_, v)) => *v = values,
                    None => log::warn!("CONTROL for control {id}, which the card did not list"),
                }
                if let Some(set) = &confirmed {
                    log::info!("--mixer {}: confirmed by the device", set.arg);
                }
                self.mixer_flow()
            }
            Record::Xrun { .. } => Flow::Continue,
            Record::Notice { level, text, .. } => {
                // Always shown, whatever the log options: it says why the guest has no sound.
                console::note(&format!("device {}: {text}", level.name()));
                Flow::Continue
            }
            Record::Frontend { connected, .. } => {
                if connected {
                    Flow::Continue
                } else {
                    // The VM is gone: its streams with it. Files are finalized; a new VM's
                    // audio goes to new segments.
                    self.close_all_segments()?;
                    for st in self.streams.values_mut() {
                        st.phase = Phase::Released;
                        st.expected = None;
                        st.params = None;
                    }
                    if let Some(i) = self.injector.as_ref() {
                        i.update(None, false);
                    }
                    if self.opts.once && self.session_seen {
                        Flow::Done
                    } else {
                        Flow::Continue
                    }
                }
            }
        };
        self.maybe_tick()?;
        Ok(flow)
    }

    /// Sends the `--mixer` changes not sent yet (the snapshot has just told the reader every
    /// control's value).
    fn send_mixer(&mut self) {
        for sent in self.mixer.take_unsent(Instant::now()) {
            let set = match &sent {
                Sent::Changing(s) | Sent::AlreadySo(s) => s,
            };
            // Sent even when the control already holds the values: the reader's knowledge may
            // be a record behind a guest write.
            self.send_request(&set.record());
            if let (Sent::AlreadySo(set), true) = (&sent, self.opts.english) {
                console::line(&format!(
                    "host: {}  (unchanged)",
                    english::control_line(&set.desc, &set.values)
                ));
            }
        }
    }

    /// A request to the device, on the socket or through the injector's thread.
    fn send_request(&mut self, rec: &Record) {
        if self.opts.records {
            for l in rawlog::lines(rec) {
                console::line(&format!("sent {l}"));
            }
        }
        let bytes = match rec.to_bytes() {
            Ok(b) => b,
            Err(e) => {
                log::warn!("cannot encode {}: {e}", rec.kind_name());
                return;
            }
        };
        if let Some(inj) = &self.injector {
            inj.request(bytes);
        } else if let Some(w) = self.tap_writer.as_mut() {
            // A failed write means the connection is going; the reader thread reports it and
            // the request is sent again after a reconnection.
            if let Err(e) = w.write_all(&bytes) {
                log::info!("sending {}: {e}", rec.kind_name());
            }
        }
    }

    /// Done when `--mixer` is the only job and every change is confirmed.
    fn mixer_flow(&self) -> Flow {
        if self.opts.mixer_only && self.mixer.all_done() {
            Flow::Done
        } else {
            Flow::Continue
        }
    }

    /// `--mixer` changes the device has not confirmed in time: an error when they are the
    /// only job, otherwise a note (the recording goes on).
    fn check_mixer_timeouts(&mut self) -> Result<(), ReaderError> {
        let late: Vec<MixerSet> = self.mixer.take_timed_out(Instant::now());
        if late.is_empty() {
            return Ok(());
        }
        let what = late
            .iter()
            .map(|s| format!("--mixer {} ({})", s.arg, mixer_set::display_name(&s.desc)))
            .collect::<Vec<_>>()
            .join(", ");
        let why = format!(
            "the device did not confirm {what} within {} s",
            mixer_set::CONFIRM_TIMEOUT.as_secs()
        );
        if self.opts.mixer_only {
            return Err(ReaderError::Mixer(why));
        }
        console::note(&why);
        Ok(())
    }

    fn protocol(&self, why: &str) -> ReaderError {
        ReaderError::Protocol {
            target: self.target.clone(),
            why: format!("the device sent {why}"),
        }
    }

    fn stream_mut(&mut self, stream: u32, what: &str) -> Option<&mut StreamState> {
        let st = self.streams.get_mut(&stream);
        if st.is_none() {
            log::warn!("{what} for stream {stream}, which the card did not list; ignored");
        }
        st
    }

    fn on_params(&mut self, p: Params) -> Result<(), ReaderError> {
        let Some(st) = self.stream_mut(p.stream, "PARAMS") else {
            return Ok(());
        };
        let old_shape = st.shape();
        let new_shape = AudioShape::from_params(&p);
        if old_shape != new_shape {
            st.bank_duration();
        }
        st.params = Some(p);
        let reshape = st
            .segment
            .as_ref()
            .is_some_and(|seg| seg.bytes() > 0 && seg.shape != new_shape);
        if reshape {
            if let Some(seg) = st.segment.take() {
                let path = seg.path.clone();
                seg.finish()?;
                if self.opts.english {
                    console::line(&format!(
                        "-- format changed: {} closed, the next audio starts a new segment",
                        path.display()
                    ));
                }
            }
        } else if let Some(seg) = st.segment.as_mut() {
            // An empty segment can simply be re-created with the new shape.
            if seg.shape != new_shape && seg.bytes() == 0 {
                st.segment = None;
            }
        }
        self.update_injector(p.stream);
        Ok(())
    }

    fn update_injector(&self, stream: u32) {
        let Some(inj) = &self.injector else { return };
        if inj.stream() != stream {
            return;
        }
        if let Some(st) = self.streams.get(&stream) {
            inj.update(
                st.params,
                matches!(st.phase, Phase::Prepared | Phase::Running),
            );
        }
    }

    /// The most silence a gap in `st` may add.
    fn fill_limit(st: &StreamState) -> u64 {
        st.shape()
            .and_then(|s| s.byte_rate())
            .map(|br| br * MAX_FILL_SECONDS)
            .unwrap_or(MAX_FILL_UNKNOWN)
    }

    fn on_pcm(&mut self, stream: u32, offset: u64, data: &[u8]) -> Result<Flow, ReaderError> {
        let Some(st) = self.streams.get_mut(&stream) else {
            log::warn!("PCM for stream {stream}, which the card did not list; ignored");
            return Ok(Flow::Continue);
        };
        if st.desc.direction != Direction::Output {
            // What the guest captured: the injected audio coming back. Not recorded.
            return Ok(Flow::Continue);
        }
        let is_main = Some(stream) == self.main_stream;
        if !st.recorded && !is_main {
            return Ok(Flow::Continue);
        }
        if st.recorded {
            self.session_seen = true;
        }
        // Offsets: fill a jump as a gap, drop what was already written.
        let mut data = data;
        let mut fill = 0u64;
        match st.expected {
            Some(e) if offset > e => fill = offset - e,
            Some(e) if offset < e => {
                let dup = e - offset;
                if dup >= data.len() as u64 {
                    log::warn!("stream {stream}: PCM at offset {offset} repeats audio; dropped");
                    return Ok(Flow::Continue);
                }
                log::warn!("stream {stream}: PCM at offset {offset} overlaps by {dup} bytes");
                data = &data[dup as usize..];
            }
            _ => {}
        }
        let start = offset.max(st.expected.unwrap_or(0));
        st.expected = Some(start + data.len() as u64);
        if fill > 0 {
            console::line(&english::gap_line(
                stream,
                offset - fill,
                fill,
                st.shape()
                    .and_then(|s| s.byte_rate())
                    .map(|br| (fill as u128 * 1_000_000_000 / br.max(1) as u128) as u64),
            ));
            let flow = self.write_fill(stream, offset - fill, fill)?;
            if flow == Flow::Done {
                return Ok(flow);
            }
        }
        self.write_audio(stream, data)
    }

    fn on_gap(&mut self, stream: u32, offset: u64, bytes: u64) -> Result<Flow, ReaderError> {
        let Some(st) = self.streams.get_mut(&stream) else {
            log::warn!("GAP for stream {stream}, which the card did not list; ignored");
            return Ok(Flow::Continue);
        };
        if st.desc.direction != Direction::Output
            || (!st.recorded && Some(stream) != self.main_stream)
        {
            return Ok(Flow::Continue);
        }
        let dur = st
            .shape()
            .and_then(|s| s.byte_rate())
            .map(|br| (bytes as u128 * 1_000_000_000 / br.max(1) as u128) as u64);
        console::line(&english::gap_line(stream, offset, bytes, dur));
        // The gap's audio is missing up to offset + bytes; anything before that already
        // written is not filled twice.
        let end = offset.saturating_add(bytes);
        let from = st.expected.unwrap_or(offset).min(end);
        st.expected = Some(end.max(st.expected.unwrap_or(0)));
        self.write_fill(stream, from, end - from)
    }

    /// Writes `n` bytes of silence for `stream` (files and stdout, not playback), as if they
    /// were the stream's bytes from offset `at`: exactly `n` bytes, so everything after keeps
    /// its frame alignment, in the format's own silence (0x80 for U8, 0x8000 for U16, 0xff
    /// for mu-law…), starting at the right byte of the sample.
    fn write_fill(&mut self, stream: u32, at: u64, n: u64) -> Result<Flow, ReaderError> {
        let Some(st) = self.streams.get_mut(&stream) else {
            return Ok(Flow::Continue);
        };
        let limit = Self::fill_limit(st);
        let n = if n > limit {
            console::note(&format!(
                "stream {stream}: a gap of {n} bytes is implausible; filling only {limit}"
            ));
            limit
        } else {
            n
        };
        if n == 0 {
            return Ok(Flow::Continue);
        }
        let sample = st
            .shape()
            .map(|s| silence_sample(s.format))
            .unwrap_or_else(|| vec![0]);
        let phase = (at % sample.len() as u64) as usize;
        let mut chunk: Vec<u8> = sample
            .iter()
            .cycle()
            .skip(phase)
            .take(FILL_CHUNK.min(n as usize))
            .copied()
            .collect();
        // Whole samples per chunk, so each chunk continues where the last one ended.
        if n as usize > FILL_CHUNK {
            chunk.truncate(FILL_CHUNK - FILL_CHUNK % sample.len());
        }
        self.write_bytes(stream, |sink| sink.fill(n, &chunk))
    }

    fn write_audio(&mut self, stream: u32, data: &[u8]) -> Result<Flow, ReaderError> {
        if data.is_empty() {
            return Ok(Flow::Continue);
        }
        let flow = self.write_bytes(stream, |sink| sink.write(data))?;
        if Some(stream) == self.main_stream && flow == Flow::Continue {
            let gains = self.gains_for(stream);
            if let (Some(p), Some(shape)) = (
                self.playback.as_mut(),
                self.streams.get(&stream).and_then(|s| s.shape()),
            ) {
                p.push(shape, &gains, data);
            }
        }
        Ok(flow)
    }

    /// Writes to the stream's file (opening a segment if needed) and, for the main stream,
    /// to stdout.
    fn write_bytes(
        &mut self,
        stream: u32,
        op: impl Fn(&mut dyn Sink) -> io::Result<()>,
    ) -> Result<Flow, ReaderError> {
        let Some(st) = self.streams.get_mut(&stream) else {
            return Ok(Flow::Continue);
        };
        let before = st.segment.as_ref().map(|s| s.bytes());
        if st.recorded {
            if let Some(files) = &self.opts.files {
                if st.segment.is_none() {
                    if files.is_wav() && st.params.is_none() {
                        if !st.warned_no_params {
                            console::note(&format!(
                                "stream {stream}: audio before its parameters; dropped"
                            ));
                            st.warned_no_params = true;
                        }
                        return Ok(Flow::Continue);
                    }
                    let index = st.file_index;
                    let seg_no = self.seg_counters.entry(index).or_insert(0);
                    *seg_no += 1;
                    let path = files.path_for(index, *seg_no);
                    if path == files.base() {
                        self.base_used = true;
                    }
                    let seg = Segment::create(path, files.is_wav(), st.shape(), stream)?;
                    if self.opts.english {
                        console::line(&format!(
                            "-- recording stream {stream} to {}{}",
                            seg.path.display(),
                            st.shape().map(|s| format!(" ({s})")).unwrap_or_default()
                        ));
                    }
                    st.segment = Some(seg);
                }
                if let Some(seg) = st.segment.as_mut() {
                    op(&mut SegmentSink(seg)).map_err(|e| match e.downcast() {
                        Ok(re) => re,
                        Err(e) => ReaderError::file(&seg.path, e),
                    })?;
                }
            }
        }
        let added = match (before, st.segment.as_ref()) {
            (Some(b), Some(s)) => s.bytes() - b,
            (None, Some(s)) => s.bytes(),
            _ => 0,
        };
        let mut flow = Flow::Continue;
        if Some(stream) == self.main_stream {
            if let Some(out) = self.stdout.as_mut() {
                let mut sink = StdoutSink { out, written: 0 };
                let res = op(&mut sink).and_then(|_| sink.out.flush());
                let written = sink.written;
                match res {
                    Ok(()) => {}
                    Err(e) if e.kind() == io::ErrorKind::BrokenPipe => {
                        log::info!("stdout closed: ending");
                        self.stdout = None;
                        flow = Flow::Done;
                    }
                    Err(e) => return Err(ReaderError::Stdout(e)),
                }
                if added == 0 {
                    self.count(stream, written);
                }
            }
        }
        if added > 0 {
            self.count(stream, added);
        }
        Ok(flow)
    }

    fn count(&mut self, stream: u32, n: u64) {
        if let Some(st) = self.streams.get_mut(&stream) {
            st.total_bytes += n;
            st.bytes_this_shape += n;
        }
    }

    fn gains_for(&self, stream: u32) -> Vec<f32> {
        let Some(st) = self.streams.get(&stream) else {
            return Vec::new();
        };
        let ch = st.params.map(|p| p.channels as usize).unwrap_or(0);
        mixer::playback_gains(
            self.controls.values().map(|(d, v)| (d, v.as_slice())),
            st.out_index.unwrap_or(0) as u32,
            ch,
        )
    }

    fn close_all_segments(&mut self) -> Result<(), ReaderError> {
        let mut first_err = None;
        for st in self.streams.values_mut() {
            if let Some(seg) = st.segment.take() {
                let path = seg.path.clone();
                let bytes = seg.bytes();
                match seg.finish() {
                    Ok(()) => log::info!("{}: {bytes} bytes", path.display()),
                    Err(e) => {
                        first_err.get_or_insert(e);
                    }
                }
            }
        }
        match first_err {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }

    /// [`Session::tick`] if a tick period has passed since the last one.
    pub fn maybe_tick(&mut self) -> Result<(), ReaderError> {
        self.check_mixer_timeouts()?;
        if self.last_tick.elapsed() >= TICK {
            self.tick()?;
        }
        Ok(())
    }

    /// Periodic housekeeping: flush files, patch WAV headers when due, redraw the
    /// running-time line.
    pub fn tick(&mut self) -> Result<(), ReaderError> {
        self.last_tick = Instant::now();
        if let Some(p) = self.playback.as_mut() {
            p.tick();
        }
        for st in self.streams.values_mut() {
            if let Some(seg) = st.segment.as_mut() {
                seg.tick()?;
            }
        }
        if self.opts.progress {
            let shown = self
                .main_stream
                .and_then(|m| self.streams.get(&m))
                .filter(|st| st.total_bytes > 0)
                .or_else(|| self.streams.values().find(|st| st.total_bytes > 0));
            if let Some(st) = shown {
                let shape = st
                    .shape()
                    .map(|s| s.to_string())
                    .unwrap_or_else(|| "?".into());
                console::progress(&console::progress_text(
                    st.duration_ns(),
                    &shape,
                    st.total_bytes,
                ));
            }
        }
        Ok(())
    }

    /// A clean end that was not an interruption: let host playback play what it has queued.
    pub fn play_out(&mut self) {
        if let Some(p) = self.playback.as_mut() {
            p.finish();
        }
    }

    /// The end: finalize every file, flush stdout, and remove `-f`'s file if the reader
    /// created it and nothing was ever recorded to it (saying so if `clean`: an error exit
    /// has its own one line to say).
    pub fn finish(&mut self, clean: bool) -> Result<(), ReaderError> {
        if self.opts.progress {
            let _ = self.tick();
        }
        console::finish_progress();
        let res = self.close_all_segments();
        if let Some(out) = self.stdout.as_mut() {
            let _ = out.flush();
        }
        if let Some(files) = &self.opts.files {
            if !self.base_used && self.opts.base_created {
                let _ = std::fs::remove_file(files.base());
                if clean {
                    console::note(&format!(
                        "no audio was recorded; {} not written",
                        files.base().display()
                    ));
                }
            }
        }
        res
    }
}

/// Bytes of silence written per call while filling a gap.
const FILL_CHUNK: usize = 8192;

/// One sample of silence in `format`.
fn silence_sample(format: dsproxy_wire::PcmFormat) -> Vec<u8> {
    let mut v = Vec::new();
    if crate::convert::encode(format, &[0.0], &mut v).is_err() || v.is_empty() {
        v = vec![format.silence_byte()];
    }
    v
}

/// Something audio bytes can be written to: a segment file or stdout.
trait Sink {
    fn write(&mut self, data: &[u8]) -> io::Result<()>;

    /// Writes `n` bytes by repeating `chunk` (which holds whole samples, starting at the
    /// right phase) and cutting the last repetition short.
    fn fill(&mut self, n: u64, chunk: &[u8]) -> io::Result<()> {
        let mut left = n;
        while left > 0 {
            let k = left.min(chunk.len() as u64) as usize;
            self.write(&chunk[..k])?;
            left -= k as u64;
        }
        Ok(())
    }
}

struct SegmentSink<'a>(&'a mut Segment);

impl Sink for SegmentSink<'_> {
    fn write(&mut self, data: &[u8]) -> io::Result<()> {
        self.0.write(data).map_err(io::Error::other)
    }
}

struct StdoutSink<'a> {
    out: &'a mut BufWriter<Stdout>,
    written: u64,
}

impl Sink for StdoutSink<'_> {
    fn write(&mut self, data: &[u8]) -> io::Result<()> {
        self.out.write_all(data)?;
        self.written += data.len() as u64;
        Ok(())
    }
}
