//! The reader's state: what it knows of the card's streams and controls, and where each
//! record goes (files, stdout, the `-e`/`-i` logs, host playback, the injector).
//!
//! Rules the files follow:
//! - A stream's file is opened when its first audio arrives (a WAV header needs the params).
//! - Audio in another format, rate or channel count closes the file and opens the next
//!   segment (parameters alone do not: a program reopening the device passes through the
//!   driver's defaults). Losing the device and the VM going away close the file too.
//! - A GAP (audio this reader did not get, in `--live` mode) is written as silence of the
//!   gap's length, so the file keeps its timing, and is logged on stderr. A jump in PCM
//!   offsets without a GAP record is treated the same way.
//! - XRUNs are not filled: the file holds what the guest wrote, and an underrun is time in
//!   which the guest wrote nothing.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use dsproxy_wire::record::{
    ControlDesc, ControlOrigin, Direction, Hello, Params, Record, MAX_CONTROL_VALUES,
};

use crate::console;
use crate::english::{self, English};
use crate::error::ReaderError;
use crate::inject::Injector;
use crate::mixer;
use crate::mixer_set::{self, MixerArg, MixerRequests, MixerSet, Sent};
use crate::output::FileTarget;
use crate::playback::Playback;
use crate::rawlog;
use crate::sink::{self, Bytes, Fill, Outputs};
use crate::source::Outlet;
use crate::stream::{Phase, StreamState};
use crate::verdict::judge::FileToJudge;
use crate::watch::{CaptureWatch, WatchOptions, Wrote};

/// Housekeeping period (flushes, header patches, the running-time line).
pub const TICK: Duration = Duration::from_millis(200);

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
    /// When the capture ends (`--once`'s idle time, `--duration`, `--stop-after-silence`)
    /// and the status line.
    pub watch: WatchOptions,
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

/// The reader's state across records and reconnections.
pub struct Session {
    opts: SessionOptions,
    target: String,
    streams: BTreeMap<u32, StreamState>,
    controls: BTreeMap<u32, (ControlDesc, Vec<i64>)>,
    english: Option<English>,
    outputs: Outputs,
    playback: Option<Playback>,
    injector: Option<Injector>,
    /// `--mixer` and where each stands.
    mixer: MixerRequests,
    /// Where SET_CONTROL records go when there is no injector (with one, they go through its
    /// thread, so they never cut into an INJECT record on the socket).
    outlet: Option<Box<dyn Outlet>>,
    /// The stream `-s`, playback and the running-time line follow.
    main_stream: Option<u32>,
    /// SNAPSHOT_END seen on this connection.
    live: bool,
    /// A playback session (audio or a START on a recorded stream) happened: `--once` ends
    /// at its RELEASE.
    session_seen: bool,
    last_tick: Instant,
    /// Where the capture stands, when it ends, and what happened on the way.
    watch: CaptureWatch,
}

impl Session {
    pub fn new(
        opts: SessionOptions,
        target: String,
        playback: Option<Playback>,
        injector: Option<Injector>,
    ) -> Session {
        let outputs = Outputs::new(
            opts.files.clone(),
            opts.base_created,
            opts.stdout,
            opts.english,
        );
        let mixer = MixerRequests::new(opts.mixer.clone());
        let watch = CaptureWatch::new(opts.watch.clone());
        Session {
            watch,
            opts,
            target,
            mixer,
            outlet: None,
            streams: BTreeMap::new(),
            controls: BTreeMap::new(),
            english: None,
            outputs,
            playback,
            injector,
            main_stream: None,
            live: false,
            session_seen: false,
            last_tick: Instant::now(),
        }
    }

    /// Checks a card against the options (`--stream`, `--inject`, `--mixer`) and returns the
    /// SUBSCRIBE stream mask. A card that `grows` (QEMU's voices) may not have the streams
    /// named yet: they are taken when they appear.
    pub fn plan(&mut self, hello: &Hello, grows: bool) -> Result<u64, ReaderError> {
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
        if let (Some(n), false) = (self.opts.stream, grows) {
            if find(n).map(|s| s.direction) != Some(Direction::Output) {
                return Err(ReaderError::Usage(format!(
                    "--stream {n}: the card has no output stream {n} (its streams: {})",
                    listing()
                )));
            }
        }
        if let (Some(i), false) = (self.injector.as_ref().and_then(|i| i.stream()), grows) {
            if find(i).map(|s| s.direction) != Some(Direction::Input) {
                return Err(ReaderError::Usage(format!(
                    "--inject: the card has no input stream {i} (its streams: {})",
                    listing()
                )));
            }
        }
        self.mixer.plan(hello).map_err(ReaderError::Usage)?;
        // One stream (plus the injected one) when --stream asks and the mask can say so.
        Ok(match self.opts.stream {
            Some(n) if n < 64 => match self.injector.as_ref().map(|i| i.stream()) {
                Some(Some(i)) if i < 64 => (1u64 << n) | (1u64 << i),
                Some(_) => 0,
                None => 1u64 << n,
            },
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

    /// A new connection: take the card's description. `outlet` writes back to the source.
    pub fn attach(&mut self, hello: &Hello, outlet: Option<Box<dyn Outlet>>) {
        self.live = false;
        self.streams.clear();
        self.controls.clear();
        self.main_stream = None;
        self.take_card(hello);
        match &mut self.english {
            Some(e) => e.set_hello(hello),
            None if self.opts.english => self.english = Some(English::new(hello, self.main_stream)),
            None => {}
        }
        match (&self.injector, outlet) {
            (Some(inj), Some(c)) => {
                inj.attach(c);
                inj.update(None, false);
                self.outlet = None;
            }
            (None, c) => self.outlet = c,
            (Some(_), None) => self.outlet = None,
        }
    }

    /// The card gained streams or controls (QEMU opened a voice): take the new ones, keep
    /// everything known of the others.
    pub fn card_changed(&mut self, hello: &Hello) {
        if self.opts.records {
            for l in rawlog::lines(&Record::Hello(hello.clone())) {
                console::line(&format!("card now: {l}"));
            }
        }
        self.take_card(hello);
        if let Some(e) = &mut self.english {
            e.add_streams(hello, self.main_stream);
        }
    }

    /// Adds the streams and controls of `hello` the reader does not know yet.
    fn take_card(&mut self, hello: &Hello) {
        let mut out_index = self.streams.values().filter(|s| s.is_output()).count();
        for s in &hello.streams {
            if self.streams.contains_key(&s.id) {
                continue;
            }
            let idx = (s.direction == Direction::Output).then(|| {
                out_index += 1;
                out_index - 1
            });
            let mut st = StreamState::new(s.clone(), idx);
            // --stream N records N only, and N's files get the plain names.
            st.recorded = match self.opts.stream {
                Some(n) => s.id == n,
                None => st.is_output(),
            };
            if self.opts.stream.is_some() {
                st.file_index = 0;
            }
            self.streams.insert(s.id, st);
        }
        if self.main_stream.is_none() {
            self.main_stream = self.opts.stream.or_else(|| {
                hello
                    .streams
                    .iter()
                    .find(|s| s.direction == Direction::Output)
                    .map(|s| s.id)
            });
        }
        self.watch.set_main(self.main_stream);
        for c in &hello.controls {
            self.controls.entry(c.id).or_insert_with(|| {
                let n = (c.count as usize).min(MAX_CONTROL_VALUES);
                (c.clone(), vec![c.min; n])
            });
        }
        if let Some(inj) = &mut self.injector {
            if inj.stream().is_none() {
                if let Some(i) = Self::first_input(hello) {
                    inj.set_stream(i);
                }
            }
        }
    }

    /// The connection is gone: finalize every file (the next audio starts a new segment).
    pub fn detach(&mut self) -> Result<(), ReaderError> {
        if let Some(inj) = &self.injector {
            inj.detach();
        }
        self.outlet = None;
        self.mixer.connection_lost();
        sink::close_all(self.streams.values_mut())
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
        self.watch.record(&rec, Instant::now());
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
        self.log_english(&rec, confirmed.as_ref());
        let flow = match rec {
            Record::Hello(_) => return Err(self.protocol("a second HELLO")),
            Record::Subscribe { .. } | Record::SetControl { .. } | Record::Inject { .. } => {
                return Err(self.protocol(&format!(
                    "a {} record, which only readers send",
                    rec.kind_name()
                )))
            }
            Record::SnapshotEnd => self.on_snapshot_end(),
            Record::Params(p) => self.on_params(p)?,
            Record::Prepare { stream, .. } => self.on_prepare(stream),
            Record::Start { stream, .. } => self.on_start(stream),
            Record::Stop {
                stream, drained, ..
            } => self.on_stop(stream, drained)?,
            Record::Release { stream, .. } => self.on_release(stream)?,
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
            Record::Control { id, values, .. } => self.on_control(id, values, confirmed),
            Record::Xrun { .. } => Flow::Continue,
            Record::Notice { level, text, .. } => {
                // Always shown, whatever the log options: it says why the guest has no sound.
                console::note(&format!("device {}: {text}", level.name()));
                Flow::Continue
            }
            Record::Frontend { connected, .. } => self.on_frontend(connected)?,
        };
        let tick = self.maybe_tick()?;
        Ok(if flow == Flow::Done { flow } else { tick })
    }

    /// `-e`: the record's lines, or for a reader's change that confirms our `--mixer`, a
    /// `host:` line.
    fn log_english(&mut self, rec: &Record, confirmed: Option<&MixerSet>) {
        let Some(e) = &mut self.english else { return };
        match (rec, confirmed) {
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
                for l in e.lines(rec) {
                    console::line(&l);
                }
            }
        }
    }

    /// The snapshot is over: the reader knows every control, so `--mixer` can be sent.
    fn on_snapshot_end(&mut self) -> Flow {
        self.live = true;
        self.send_mixer();
        self.mixer_flow()
    }

    fn on_prepare(&mut self, stream: u32) -> Flow {
        let live = self.live;
        if let Some(st) = self.stream_mut(stream, "PREPARE") {
            st.phase = Phase::Prepared;
            st.expected = live.then_some(0);
        }
        self.update_injector(stream);
        Flow::Continue
    }

    fn on_start(&mut self, stream: u32) -> Flow {
        if let Some(st) = self.stream_mut(stream, "START") {
            st.phase = Phase::Running;
            if st.recorded {
                self.session_seen = true;
            }
        }
        self.follow_capture(stream);
        self.update_injector(stream);
        Flow::Continue
    }

    /// Without `--inject-stream`, the injected audio goes to the capture the guest starts
    /// when the one it was going to is idle: a card with several inputs (AC97's line in and
    /// microphone are two of QEMU's voices) is recorded from whichever the guest opened.
    fn follow_capture(&mut self, stream: u32) {
        let starts_input = self.streams.get(&stream).is_some_and(|st| !st.is_output());
        let Some(inj) = &mut self.injector else {
            return;
        };
        if !starts_input || inj.is_pinned() || inj.stream() == Some(stream) {
            return;
        }
        let current_idle = inj
            .stream()
            .and_then(|s| self.streams.get(&s))
            .is_none_or(|st| !st.is_active());
        if current_idle {
            if let Some(old) = inj.stream() {
                inj.update(None, false);
                log::info!("--inject: now into input stream {stream} (stream {old} is idle)");
            }
            inj.set_stream(stream);
        }
    }

    fn on_stop(&mut self, stream: u32, drained: bool) -> Result<Flow, ReaderError> {
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
        Ok(Flow::Continue)
    }

    /// The guest closed the stream. `--once` does not end here: programs close and reopen
    /// the device mid-song; the watch ends the capture once the device has stayed closed.
    fn on_release(&mut self, stream: u32) -> Result<Flow, ReaderError> {
        if let Some(st) = self.stream_mut(stream, "RELEASE") {
            st.phase = Phase::Released;
            st.expected = None;
            if let Some(seg) = st.segment.as_mut() {
                seg.sync()?;
            }
        }
        self.update_injector(stream);
        Ok(Flow::Continue)
    }

    fn on_control(&mut self, id: u32, values: Vec<i64>, confirmed: Option<MixerSet>) -> Flow {
        match self.controls.get_mut(&id) {
            Some((_, v)) => *v = values,
            None => log::warn!("CONTROL for control {id}, which the card did not list"),
        }
        if let Some(set) = &confirmed {
            log::info!("--mixer {}: confirmed by the device", set.arg);
        }
        self.mixer_flow()
    }

    /// The VM came or went. When it goes, its streams go with it: files are finalized, and
    /// a new VM's audio goes to new segments.
    fn on_frontend(&mut self, connected: bool) -> Result<Flow, ReaderError> {
        if connected {
            return Ok(Flow::Continue);
        }
        sink::close_all(self.streams.values_mut())?;
        for st in self.streams.values_mut() {
            st.phase = Phase::Released;
            st.expected = None;
            st.params = None;
        }
        if let Some(i) = self.injector.as_ref() {
            i.update(None, false);
        }
        Ok(if self.opts.once && self.session_seen {
            Flow::Done
        } else {
            Flow::Continue
        })
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
        } else if let Some(w) = self.outlet.as_mut() {
            // A failed write means the connection is going; the reader thread reports it and
            // the request is sent again after a reconnection.
            if let Err(e) = w.request(&bytes) {
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

    /// New params. The file is not closed here but when audio of another shape arrives
    /// ([`Outputs::write`]): a program that closes and reopens the device (mpg321, mplayer)
    /// goes through the driver's default format on the way back to its own, without playing
    /// a sample in it.
    fn on_params(&mut self, p: Params) -> Result<Flow, ReaderError> {
        let Some(st) = self.streams.get_mut(&p.stream) else {
            log::warn!(
                "PARAMS for stream {}, which the card did not list; ignored",
                p.stream
            );
            return Ok(Flow::Continue);
        };
        st.set_params(p);
        self.update_injector(p.stream);
        Ok(Flow::Continue)
    }

    fn update_injector(&self, stream: u32) {
        let Some(inj) = &self.injector else { return };
        if inj.stream() != Some(stream) {
            return;
        }
        if let Some(st) = self.streams.get(&stream) {
            inj.update(st.params, st.is_active());
        }
    }

    /// Whether `stream`'s audio goes anywhere (files, or stdout and playback as the main
    /// stream).
    fn wanted(&self, st: &StreamState) -> bool {
        st.is_output() && (st.recorded || Some(st.id()) == self.main_stream)
    }

    fn on_pcm(&mut self, stream: u32, offset: u64, data: &[u8]) -> Result<Flow, ReaderError> {
        let Some(st) = self.streams.get(&stream) else {
            log::warn!("PCM for stream {stream}, which the card did not list; ignored");
            return Ok(Flow::Continue);
        };
        // Input PCM is what the guest captured (the injected audio coming back): not recorded.
        if !self.wanted(st) {
            return Ok(Flow::Continue);
        }
        let Some(st) = self.streams.get_mut(&stream) else {
            return Ok(Flow::Continue);
        };
        if st.recorded {
            self.session_seen = true;
        }
        // The peer's offset: one whose audio would end past u64::MAX counts no real stream.
        let Some(end) = offset.checked_add(data.len() as u64) else {
            log::warn!(
                "stream {stream}: PCM at offset {offset} ends past the last offset; dropped"
            );
            return Ok(Flow::Continue);
        };
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
        // What is left of `data` starts at max(offset, expected) and still ends at `end`.
        st.expected = Some(end);
        if fill > 0 {
            console::line(&english::gap_line(
                stream,
                offset - fill,
                fill,
                st.bytes_to_ns(fill).map(|ns| ns as u64),
            ));
            if self.write_fill(stream, offset - fill, fill)? == Flow::Done {
                return Ok(Flow::Done);
            }
        }
        self.write_audio(stream, data)
    }

    fn on_gap(&mut self, stream: u32, offset: u64, bytes: u64) -> Result<Flow, ReaderError> {
        let Some(st) = self.streams.get(&stream) else {
            log::warn!("GAP for stream {stream}, which the card did not list; ignored");
            return Ok(Flow::Continue);
        };
        if !self.wanted(st) {
            return Ok(Flow::Continue);
        }
        let Some(st) = self.streams.get_mut(&stream) else {
            return Ok(Flow::Continue);
        };
        let dur = st.bytes_to_ns(bytes).map(|ns| ns as u64);
        console::line(&english::gap_line(stream, offset, bytes, dur));
        // The gap's audio is missing up to offset + bytes; anything before that already
        // written is not filled twice.
        let end = offset.saturating_add(bytes);
        let from = st.expected.unwrap_or(offset).min(end);
        st.expected = Some(end.max(st.expected.unwrap_or(0)));
        self.write_fill(stream, from, end - from)
    }

    /// Writes silence for `n` missing bytes of `stream` from offset `at` (files and stdout,
    /// not playback).
    fn write_fill(&mut self, stream: u32, at: u64, n: u64) -> Result<Flow, ReaderError> {
        let Some(st) = self.streams.get(&stream) else {
            return Ok(Flow::Continue);
        };
        // --duration: no more than it allows.
        let fill = Fill::new(stream, st.shape(), at, self.watch.allowed(stream, n));
        if fill.is_empty() {
            return Ok(Flow::Continue);
        }
        self.write_bytes(stream, Bytes::Silence(&fill))
    }

    fn write_audio(&mut self, stream: u32, data: &[u8]) -> Result<Flow, ReaderError> {
        let data = &data[..self.watch.allowed(stream, data.len() as u64) as usize];
        if data.is_empty() {
            return Ok(Flow::Continue);
        }
        let flow = self.write_bytes(stream, Bytes::Audio(data))?;
        // The mixer's gains are only worked out when the host plays the audio (with -x,
        // per record, they were a parse of every control's name for nothing).
        if Some(stream) == self.main_stream && flow == Flow::Continue && self.playback.is_some() {
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

    /// Writes to the stream's file and, for the main stream, to stdout; counts what was
    /// taken.
    fn write_bytes(&mut self, stream: u32, bytes: Bytes<'_>) -> Result<Flow, ReaderError> {
        let is_main = Some(stream) == self.main_stream;
        let Some(st) = self.streams.get_mut(&stream) else {
            return Ok(Flow::Continue);
        };
        let done = self.outputs.write(st, is_main, bytes)?;
        st.count(done.taken);
        let what = match bytes {
            Bytes::Audio(d) => Wrote::Audio(d),
            Bytes::Silence(f) => Wrote::Fill(f.len()),
        };
        let file = st.segment.as_ref().map(|s| (s.path.as_path(), s.bytes()));
        self.watch
            .wrote(stream, st.recorded, file, what, Instant::now());
        Ok(if done.stdout_closed {
            Flow::Done
        } else {
            Flow::Continue
        })
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

    /// [`Session::tick`] if a tick period has passed since the last one; `Done` also when
    /// the capture is to end (`--once`'s idle time, `--duration`, `--stop-after-silence`).
    pub fn maybe_tick(&mut self) -> Result<Flow, ReaderError> {
        self.check_mixer_timeouts()?;
        if self.last_tick.elapsed() >= TICK && self.tick()? == Flow::Done {
            return Ok(Flow::Done);
        }
        if let Some(why) = self.watch.poll(Instant::now()) {
            log::info!("{why}: done");
            return Ok(Flow::Done);
        }
        Ok(Flow::Continue)
    }

    /// Periodic housekeeping: flush files and stdout, patch WAV headers when due. `Done`
    /// when stdout was closed.
    pub fn tick(&mut self) -> Result<Flow, ReaderError> {
        self.last_tick = Instant::now();
        if let Some(p) = self.playback.as_mut() {
            p.tick();
        }
        for st in self.streams.values_mut() {
            if let Some(seg) = st.segment.as_mut() {
                seg.tick()?;
            }
        }
        let stdout_open = self.outputs.flush_stdout()?;
        Ok(if stdout_open {
            Flow::Continue
        } else {
            Flow::Done
        })
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
        self.watch.finish_status();
        let res = sink::close_all(self.streams.values_mut());
        self.outputs.finish(clean);
        res
    }

    /// The streams as the reader knows them (for reports at the end of a capture).
    pub fn streams(&self) -> impl Iterator<Item = &StreamState> {
        self.streams.values()
    }

    /// The main stream's files, in order, with what happened while each was recorded: what
    /// `--expect` judges when the capture ends.
    pub fn capture_files(&self) -> Vec<FileToJudge> {
        self.watch.main_files()
    }
}

#[cfg(test)]
mod tests {
    use dsproxy_wire::record::StreamDesc;

    use super::*;

    fn card() -> Hello {
        Hello {
            version: dsproxy_wire::record::PROTOCOL_VERSION,
            time_ns: 0,
            name: "t".into(),
            jacks: 0,
            chmaps: 0,
            streams: vec![StreamDesc {
                id: 0,
                direction: Direction::Output,
                channels_min: 1,
                channels_max: 2,
                formats: !0,
                rates: !0,
            }],
            controls: vec![],
        }
    }

    /// A device's offsets are its word: audio that would end past u64::MAX is dropped, and
    /// the stream goes on from the offsets that make sense.
    #[test]
    fn pcm_at_the_end_of_the_offset_space_is_dropped() {
        let mut s = Session::new(SessionOptions::default(), "t".into(), None, None);
        let hello = card();
        s.plan(&hello, false).unwrap();
        s.attach(&hello, None);
        let pcm = |offset| Record::Pcm {
            stream: 0,
            offset,
            time_ns: 0,
            data: vec![1, 2, 3, 4],
        };
        assert_eq!(s.handle(pcm(u64::MAX - 1)).unwrap(), Flow::Continue);
        assert_eq!(s.streams[&0].expected, None);
        assert_eq!(s.handle(pcm(u64::MAX - 4)).unwrap(), Flow::Continue);
        assert_eq!(s.streams[&0].expected, Some(u64::MAX));
    }

    /// A HELLO's control may claim any number of values; the reader keeps at most what a
    /// control can have.
    #[test]
    fn a_control_claiming_billions_of_values_gets_the_most_a_control_has() {
        let mut s = Session::new(SessionOptions::default(), "t".into(), None, None);
        let mut hello = card();
        hello.controls.push(ControlDesc {
            id: 0,
            name: "PCM Playback Volume".into(),
            index: 0,
            role: 1,
            ctype: 1,
            count: u32::MAX,
            min: 0,
            max: 100,
            step: 1,
            db_min: 0,
            db_step: 0,
        });
        s.attach(&hello, None);
        assert_eq!(s.controls[&0].1.len(), MAX_CONTROL_VALUES);
    }
}
