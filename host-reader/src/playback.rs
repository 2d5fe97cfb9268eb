//! Playing the guest's audio on the host through cpal, paced by the host device's clock.
//!
//! The main loop converts each PCM record (decode → guest volume/mute → remix → resample) and
//! pushes the samples into a bounded ring (about 200 ms); the device callback drains it. When
//! the ring is full the main loop waits, which stops it reading the tap, which (unless the
//! reader is `--live`) makes the device hold the guest: the guest plays at the host card's
//! speed, as with the old reader's fragment pacing.
//!
//! The device is started once 150 ms is queued (or the first audio queued has waited that
//! long): started on the first record alone, it would play that record and then silence
//! until the next ones were converted — a gap at the start of every stream. With a guest
//! paced by the device's real-time clock the ring stays about as full as it was at the start,
//! so that is also the margin the reader has against being scheduled late, for the whole
//! stream.
//!
//! The device is opened at the guest's rate and channel count when it supports them (as `f32`
//! or `i16`); otherwise at its default configuration, with channels remixed and the rate
//! converted by linear interpolation — adequate for monitoring, not for mastering (files are
//! never converted). No device, or one that fails: one line on stderr, and recording carries
//! on without playback.
//!
//! What is queued is played out before the device is closed at a clean end and before it is
//! reopened for a new rate or channel count (the guest finished that audio; the host should
//! too). A reset with `-r` is the one close that drops it, as the guest dropped its own.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use cpal::traits::{DeviceTrait, HostTrait, StreamTrait};

use crate::console;
use crate::convert::{remix, AudioShape, Decoder, LinearResampler};

/// Audio the ring holds.
const RING_SECONDS: f64 = 0.2;
/// The device starts when this much of the ring (150 ms) is queued…
const START_FILL: f64 = 0.75;
/// …or when the first audio queued has waited this long (a short sound followed by nothing;
/// with a real-time guest, the same moment).
const START_WAIT: Duration = Duration::from_millis(150);
/// How long the device callback may stay away before the device is given up on.
const STALL_TIMEOUT: Duration = Duration::from_secs(2);
/// The longest the reader waits for queued audio to play out (the ring's 200 ms plus what
/// the device holds; a device that stops taking audio is not waited for beyond this).
const PLAY_OUT_LIMIT: Duration = Duration::from_secs(2);

/// A bounded sample queue between the main loop and the device callback.
pub struct Ring {
    state: Mutex<RingState>,
    cv: Condvar,
}

struct RingState {
    buf: VecDeque<f32>,
    cap: usize,
    /// Samples the callback has asked for (played or filled with silence): its heartbeat.
    consumed: u64,
    /// `consumed` up to the last queued sample handed to the device.
    audio_end: u64,
    /// Samples the device may hold after a callback: the largest delay it has reported, plus
    /// one callback's worth. Once the callback has asked for that many more samples after
    /// `audio_end`, the queued audio has been played.
    device_holds: u64,
}

/// The device stopped asking for audio.
#[derive(Debug, PartialEq, Eq)]
pub struct Stalled;

impl Ring {
    pub fn new(cap: usize) -> Ring {
        Ring {
            state: Mutex::new(RingState {
                buf: VecDeque::with_capacity(cap),
                cap: cap.max(1),
                consumed: 0,
                audio_end: 0,
                device_holds: 0,
            }),
            cv: Condvar::new(),
        }
    }

    fn lock(&self) -> MutexGuard<'_, RingState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Fills `out` from the ring, silence where it runs short (an underrun on the host).
    /// `device_delay` is how many samples the device said it holds ahead of what it plays.
    pub fn pop_into(&self, out: &mut [f32], device_delay: u64) {
        let mut s = self.lock();
        let n = out.len().min(s.buf.len());
        for (o, v) in out.iter_mut().zip(s.buf.drain(..n)) {
            *o = v;
        }
        out[n..].fill(0.0);
        if n > 0 {
            s.audio_end = s.consumed + n as u64;
        }
        s.consumed += out.len() as u64;
        s.device_holds = s.device_holds.max(device_delay + out.len() as u64);
        drop(s);
        self.cv.notify_all();
    }

    /// Waits until everything queued has been played: the ring is empty and the callback
    /// has asked for the device's holding after the last of it. Gives up after `limit`, or
    /// when the callback makes no progress for `stall`. Returns whether it all played.
    pub fn play_out(&self, limit: Duration, stall: Duration) -> bool {
        let start = Instant::now();
        let mut s = self.lock();
        let mut progress = (s.consumed, Instant::now());
        loop {
            if s.buf.is_empty() && s.consumed >= s.audio_end + s.device_holds {
                return true;
            }
            if s.consumed != progress.0 {
                progress = (s.consumed, Instant::now());
            }
            if start.elapsed() >= limit || progress.1.elapsed() >= stall {
                return false;
            }
            s = self
                .cv
                .wait_timeout(s, Duration::from_millis(20))
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
    }

    /// Queues `samples`, waiting for room. Fails if the callback makes no progress for
    /// `stall` while the ring is full.
    pub fn push(&self, samples: &[f32], stall: Duration) -> Result<(), Stalled> {
        let mut s = self.lock();
        let mut i = 0;
        let mut progress = (s.consumed, Instant::now());
        while i < samples.len() {
            let room = s.cap - s.buf.len().min(s.cap);
            if room == 0 {
                if s.consumed != progress.0 {
                    progress = (s.consumed, Instant::now());
                } else if progress.1.elapsed() >= stall {
                    return Err(Stalled);
                }
                s = self
                    .cv
                    .wait_timeout(s, Duration::from_millis(50))
                    .unwrap_or_else(|e| e.into_inner())
                    .0;
                continue;
            }
            let n = room.min(samples.len() - i);
            s.buf.extend(&samples[i..i + n]);
            i += n;
        }
        Ok(())
    }

    pub fn len(&self) -> usize {
        self.lock().buf.len()
    }

    pub fn capacity(&self) -> usize {
        self.lock().cap
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Turns a guest stream into device samples: decode, per-channel gain, remix, resample.
pub struct PlaybackChain {
    source: AudioShape,
    dev_channels: usize,
    decoder: Decoder,
    resampler: LinearResampler,
    decoded: Vec<f32>,
    remixed: Vec<f32>,
}

impl PlaybackChain {
    pub fn new(
        source: AudioShape,
        dev_rate: u32,
        dev_channels: u16,
    ) -> Result<PlaybackChain, String> {
        let decoder = Decoder::new(source).map_err(|e| e.to_string())?;
        Ok(PlaybackChain {
            source,
            dev_channels: dev_channels as usize,
            decoder,
            resampler: LinearResampler::new(dev_channels as usize, source.rate_hz, dev_rate),
            decoded: Vec::new(),
            remixed: Vec::new(),
        })
    }

    /// Converts `data`, applying `gains` (one per source channel; missing ones are 1),
    /// appending device samples to `out`.
    pub fn process(&mut self, data: &[u8], gains: &[f32], out: &mut Vec<f32>) {
        self.decoded.clear();
        self.remixed.clear();
        if self.decoder.push(data, &mut self.decoded).is_err() {
            return;
        }
        let ch = self.source.channels as usize;
        if gains.iter().any(|&g| g != 1.0) {
            for frame in self.decoded.chunks_exact_mut(ch) {
                for (v, g) in frame.iter_mut().zip(gains) {
                    *v *= g;
                }
            }
        }
        remix(&self.decoded, ch, self.dev_channels, &mut self.remixed);
        self.resampler.process(&self.remixed, out);
    }
}

/// How playback was asked for.
#[derive(Debug, Clone, Default)]
pub struct PlaybackOptions {
    /// A cpal device id (`alsa:default`) or device name; the default output device if none.
    pub device: Option<String>,
    /// `-r`: close the device when the guest resets the stream; reopen on the next audio.
    pub reopen_on_reset: bool,
}

struct Output {
    stream: cpal::Stream,
    /// `play()` has been called (the callback runs).
    started: bool,
    /// When audio was first queued, while not started.
    queued_at: Option<Instant>,
    ring: Arc<Ring>,
    rate: u32,
    channels: u16,
    chain: Option<PlaybackChain>,
    /// A fatal device error reported by cpal (the first one).
    failure: Arc<Mutex<Option<String>>>,
    /// Underruns and overruns the device recovered from.
    xruns: Arc<AtomicU64>,
}

impl Output {
    /// Starts the device (its callback) if it has not started yet.
    fn start(&mut self) -> Result<(), String> {
        if !self.started {
            self.stream
                .play()
                .map_err(|e| format!("cannot start the host sound device: {e}"))?;
            self.started = true;
            self.queued_at = None;
        }
        Ok(())
    }

    /// Queues `samples`, starting the device once enough is queued (see the module doc).
    /// Blocks while the ring is full, once started.
    fn queue(&mut self, samples: &[f32]) -> Result<(), String> {
        let cap = self.ring.capacity();
        // Pieces of an eighth of the ring: a piece that would fill it starts the device
        // first, so the ring is never full (and never waited on) before the start.
        for piece in samples.chunks((cap / 8).max(1)) {
            if !self.started {
                self.queued_at.get_or_insert_with(Instant::now);
                if self.ring.len() + piece.len() >= cap {
                    self.start()?;
                }
            }
            self.ring
                .push(piece, STALL_TIMEOUT)
                .map_err(|Stalled| "the host sound device stopped taking audio".to_string())?;
            if !self.started && self.ring.len() as f64 >= cap as f64 * START_FILL {
                self.start()?;
            }
        }
        if self.queued_at.is_some_and(|t| t.elapsed() >= START_WAIT) {
            self.start()?;
        }
        Ok(())
    }

    /// Lets what is queued play, then closes the device.
    fn close_played_out(mut self) {
        if !self.ring.is_empty() {
            if let Err(e) = self.start() {
                log::info!("{e}");
            }
        }
        if !self.ring.play_out(PLAY_OUT_LIMIT, STALL_TIMEOUT) {
            log::info!("the host device did not play out its queue; closed anyway");
        }
        self.close();
    }

    /// Closes the device, dropping what it has not played.
    fn close(self) {
        let xruns = self.xruns.load(Ordering::Relaxed);
        if xruns > 0 {
            log::info!("the host device ran short of audio {xruns} times");
        }
        drop(self.stream);
    }
}

/// Host playback of one guest stream.
pub struct Playback {
    opts: PlaybackOptions,
    out: Option<Output>,
    /// Playback gave up (no device, or it failed): recording carries on.
    disabled: bool,
    /// The last stream shape that cannot be played (said once; its audio is skipped).
    unplayable: Option<AudioShape>,
    samples: Vec<f32>,
}

impl Playback {
    pub fn new(opts: PlaybackOptions) -> Playback {
        Playback {
            opts,
            out: None,
            disabled: false,
            unplayable: None,
            samples: Vec::new(),
        }
    }

    pub fn is_disabled(&self) -> bool {
        self.disabled
    }

    fn give_up(&mut self, why: &str) {
        if !self.disabled {
            console::note(&format!(
                "{why}; not playing on the host (recording carries on; -x silences this)"
            ));
        }
        self.disabled = true;
        if let Some(o) = self.out.take() {
            o.close();
        }
    }

    /// Plays `data` of a stream shaped `shape` with per-channel `gains`. Blocks while the
    /// device's ring is full: this is what paces the reader.
    pub fn push(&mut self, shape: AudioShape, gains: &[f32], data: &[u8]) {
        if self.disabled {
            return;
        }
        if let Some(msg) = self.failure() {
            self.give_up(&format!("host sound device failed: {msg}"));
            return;
        }
        // A format the converter cannot read (DSD, IMA ADPCM, …) is the stream's problem,
        // not the device's: say so once and play the next shape that can be played.
        if let Err(why) = Decoder::new(shape) {
            if self.unplayable != Some(shape) {
                console::note(&format!(
                    "cannot play {shape} on the host: {why} (recording carries on)"
                ));
                self.unplayable = Some(shape);
            }
            return;
        }
        // A new rate or channel count: reopen so the device can run at it natively, once
        // the old stream's audio has played.
        if let Some(o) = &self.out {
            let fits = o.chain.as_ref().is_some_and(|c| {
                c.source.rate_hz == shape.rate_hz && c.source.channels == shape.channels
            });
            if !fits && o.chain.is_some() {
                if let Some(o) = self.out.take() {
                    o.close_played_out();
                }
            }
        }
        if self.out.is_none() {
            match quiet_stderr(|| open(&self.opts, shape)) {
                Ok(o) => {
                    log::info!(
                        "playing {shape} on the host at {} Hz, {} channels",
                        o.rate,
                        o.channels
                    );
                    self.out = Some(o);
                }
                Err(why) => {
                    self.give_up(&why);
                    return;
                }
            }
        }
        let Some(o) = self.out.as_mut() else { return };
        if o.chain.as_ref().map(|c| c.source) != Some(shape) {
            match PlaybackChain::new(shape, o.rate, o.channels) {
                Ok(c) => o.chain = Some(c),
                Err(why) => {
                    self.give_up(&format!("cannot play {shape}: {why}"));
                    return;
                }
            }
        }
        self.samples.clear();
        if let Some(c) = o.chain.as_mut() {
            c.process(data, gains, &mut self.samples);
        }
        if let Err(why) = o.queue(&self.samples) {
            self.give_up(&why);
        }
    }

    /// Periodic: starts a device whose first audio has waited long enough (a sound shorter
    /// than the start fill, with nothing after it).
    pub fn tick(&mut self) {
        let Some(o) = self.out.as_mut() else { return };
        if o.queued_at.is_some_and(|t| t.elapsed() >= START_WAIT) {
            if let Err(why) = o.start() {
                self.give_up(&why);
            }
        }
    }

    /// The guest reset the stream (a STOP that discarded audio).
    pub fn reset(&mut self) {
        if !self.opts.reopen_on_reset {
            return;
        }
        if let Some(o) = self.out.take() {
            o.close();
            log::info!("guest reset the stream: host device closed, reopened on the next audio");
        }
    }

    /// A clean end: lets what is queued play (a bounded wait), then closes the device.
    pub fn finish(&mut self) {
        if let Some(o) = self.out.take() {
            o.close_played_out();
        }
    }

    fn failure(&self) -> Option<String> {
        let o = self.out.as_ref()?;
        let f = o.failure.lock().unwrap_or_else(|e| e.into_inner());
        f.clone()
    }
}

/// Runs `f` with file descriptor 2 pointed at /dev/null. alsa-lib prints its own errors
/// (a dozen `ALSA lib confmisc.c:…` lines on a machine without a sound card) straight to
/// stderr while a device is opened; the reader reports the outcome itself, in one line.
/// `RUST_LOG=debug` leaves stderr alone to see them.
fn quiet_stderr<T>(f: impl FnOnce() -> T) -> T {
    use std::os::fd::AsRawFd;
    if log::log_enabled!(log::Level::Debug) {
        return f();
    }
    let Ok(null) = std::fs::OpenOptions::new().write(true).open("/dev/null") else {
        return f();
    };
    // SAFETY: dup/dup2/close on descriptors this function owns or on fd 2, which it puts
    // back before returning.
    let saved = unsafe { libc::dup(libc::STDERR_FILENO) };
    if saved < 0 {
        return f();
    }
    unsafe { libc::dup2(null.as_raw_fd(), libc::STDERR_FILENO) };
    let r = f();
    unsafe {
        libc::dup2(saved, libc::STDERR_FILENO);
        libc::close(saved);
    }
    r
}

/// Finds the device to play on.
fn find_device(opts: &PlaybackOptions) -> Result<cpal::Device, String> {
    let host = cpal::default_host();
    match &opts.device {
        None => host
            .default_output_device()
            .ok_or_else(|| "no sound device on this host".to_string()),
        Some(want) => {
            if let Ok(id) = want.parse::<cpal::DeviceId>() {
                if let Some(d) = host.device_by_id(&id) {
                    return Ok(d);
                }
                // cpal finds ids among the devices ALSA lists, and ALSA lists only PCMs
                // with a hint: a `pcm.!default` of one's own usually has none.
                if let Some(d) = host
                    .default_output_device()
                    .filter(|d| d.id().is_ok_and(|d| d == id))
                {
                    return Ok(d);
                }
            }
            let found = host.output_devices().ok().and_then(|mut it| {
                it.find(|d| d.description().is_ok_and(|desc| desc.name() == want))
            });
            found.ok_or_else(|| format!("no output device {want:?} on this host"))
        }
    }
}

/// Picks the device configuration: the guest's own rate and channels if the device takes
/// them as f32 or i16, else the device's default.
fn choose_config(
    device: &cpal::Device,
    shape: AudioShape,
) -> Result<(cpal::StreamConfig, cpal::SampleFormat), String> {
    use cpal::SampleFormat::{F32, I16};
    let ranges: Vec<cpal::SupportedStreamConfigRange> = device
        .supported_output_configs()
        .map_err(|e| format!("cannot query the host sound device: {e}"))?
        .collect();
    for fmt in [F32, I16] {
        if ranges.iter().any(|r| {
            r.sample_format() == fmt
                && r.channels() == shape.channels
                && (r.min_sample_rate()..=r.max_sample_rate()).contains(&shape.rate_hz)
        }) {
            return Ok((
                cpal::StreamConfig {
                    channels: shape.channels,
                    sample_rate: shape.rate_hz,
                    buffer_size: cpal::BufferSize::Default,
                },
                fmt,
            ));
        }
    }
    let def = device
        .default_output_config()
        .map_err(|e| format!("the host sound device has no usable configuration: {e}"))?;
    let fmt = match def.sample_format() {
        F32 | I16 => def.sample_format(),
        _ => ranges
            .iter()
            .map(|r| r.sample_format())
            .find(|f| *f == F32 || *f == I16)
            .ok_or("the host sound device takes neither f32 nor i16 samples")?,
    };
    Ok((
        cpal::StreamConfig {
            channels: def.channels(),
            sample_rate: def.sample_rate(),
            buffer_size: cpal::BufferSize::Default,
        },
        fmt,
    ))
}

/// Whether a device error ends playback. cpal recovers from xruns itself (and reports them);
/// a rerouted default device or a refused real-time priority still plays.
fn is_fatal(kind: cpal::ErrorKind) -> bool {
    !matches!(
        kind,
        cpal::ErrorKind::Xrun | cpal::ErrorKind::DeviceChanged | cpal::ErrorKind::RealtimeDenied
    )
}

/// Samples the device holds ahead of what it plays, from a callback's timestamps.
fn delay_samples(info: &cpal::OutputCallbackInfo, rate: u32, channels: u16) -> u64 {
    let ts = info.timestamp();
    let delay = ts.playback.duration_since(ts.callback);
    (delay.as_secs_f64() * rate as f64) as u64 * channels as u64
}

fn open(opts: &PlaybackOptions, shape: AudioShape) -> Result<Output, String> {
    let device = find_device(opts)?;
    let (config, fmt) = choose_config(&device, shape)?;
    let cap = ((config.sample_rate as f64 * RING_SECONDS) as usize).max(256)
        * config.channels.max(1) as usize;
    let ring = Arc::new(Ring::new(cap));
    let failure: Arc<Mutex<Option<String>>> = Arc::new(Mutex::new(None));
    let xruns = Arc::new(AtomicU64::new(0));
    let on_error = {
        let failure = failure.clone();
        let xruns = xruns.clone();
        move |e: cpal::Error| {
            if !is_fatal(e.kind()) {
                if e.kind() == cpal::ErrorKind::Xrun {
                    xruns.fetch_add(1, Ordering::Relaxed);
                }
                log::debug!("host sound device: {e}");
                return;
            }
            let mut f = failure.lock().unwrap_or_else(|p| p.into_inner());
            if f.is_none() {
                *f = Some(e.to_string());
            }
        }
    };
    let (rate, channels) = (config.sample_rate, config.channels);
    let timeout = Some(Duration::from_secs(3));
    let stream = match fmt {
        cpal::SampleFormat::I16 => {
            let ring = ring.clone();
            let mut scratch: Vec<f32> = Vec::new();
            device.build_output_stream(
                config,
                move |data: &mut [i16], info: &cpal::OutputCallbackInfo| {
                    scratch.resize(data.len(), 0.0);
                    ring.pop_into(&mut scratch, delay_samples(info, rate, channels));
                    for (d, s) in data.iter_mut().zip(&scratch) {
                        *d = (s * 32768.0).round().clamp(-32768.0, 32767.0) as i16;
                    }
                },
                on_error,
                timeout,
            )
        }
        _ => {
            let ring = ring.clone();
            device.build_output_stream(
                config,
                move |data: &mut [f32], info: &cpal::OutputCallbackInfo| {
                    ring.pop_into(data, delay_samples(info, rate, channels))
                },
                on_error,
                timeout,
            )
        }
    }
    .map_err(|e| format!("cannot open the host sound device: {e}"))?;
    Ok(Output {
        stream,
        started: false,
        queued_at: None,
        ring,
        rate,
        channels,
        chain: None,
        failure,
        xruns,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use dsproxy_wire::PcmFormat;

    #[test]
    fn ring_keeps_order_and_pads_with_silence() {
        let r = Ring::new(4);
        r.push(&[1.0, 2.0, 3.0], Duration::from_millis(10)).unwrap();
        let mut out = [9.0; 5];
        r.pop_into(&mut out, 0);
        assert_eq!(out, [1.0, 2.0, 3.0, 0.0, 0.0]);
        assert!(r.is_empty());
    }

    #[test]
    fn ring_blocks_until_the_callback_drains_and_detects_a_stall() {
        let r = Arc::new(Ring::new(4));
        // Nobody drains: a full ring is a stall.
        assert_eq!(r.push(&[0.5; 6], Duration::from_millis(100)), Err(Stalled));
        // A "device" thread drains: a large push completes, in order.
        let r2 = Arc::new(Ring::new(4));
        let dev = {
            let r2 = r2.clone();
            std::thread::spawn(move || {
                let mut got = Vec::new();
                while got.len() < 100 {
                    let mut b = [0.0f32; 3];
                    r2.pop_into(&mut b, 0);
                    got.extend(b.iter().copied().filter(|&v| v != 0.0));
                    std::thread::sleep(Duration::from_millis(1));
                }
                got
            })
        };
        let samples: Vec<f32> = (1..=100).map(|i| i as f32).collect();
        r2.push(&samples, Duration::from_secs(10)).unwrap();
        assert_eq!(dev.join().unwrap(), samples);
    }

    #[test]
    fn play_out_waits_for_the_device_to_take_what_it_holds() {
        let r = Arc::new(Ring::new(64));
        r.push(&[0.5; 10], Duration::from_millis(10)).unwrap();
        // Nothing consumes: give up after the stall time, not before.
        let t = Instant::now();
        assert!(!r.play_out(Duration::from_secs(5), Duration::from_millis(100)));
        assert!(t.elapsed() >= Duration::from_millis(100));
        // A device taking 4 samples per callback and saying it holds 8 more: the callbacks
        // that take the 10 queued samples end the audio at 10, and the queue counts as
        // played once 8 + 4 more have been asked for.
        let dev = {
            let r = r.clone();
            std::thread::spawn(move || {
                for _ in 0..20 {
                    let mut b = [0.0f32; 4];
                    r.pop_into(&mut b, 8);
                    std::thread::sleep(Duration::from_millis(5));
                }
            })
        };
        assert!(r.play_out(Duration::from_secs(5), Duration::from_secs(1)));
        let consumed = r.lock().consumed;
        assert!(consumed >= 22, "{consumed}");
        dev.join().unwrap();
        // Nothing queued and a device that already ran: played at once.
        assert!(r.play_out(Duration::ZERO, Duration::ZERO));
    }

    #[test]
    fn only_device_losses_end_playback() {
        use cpal::ErrorKind as K;
        for k in [K::Xrun, K::DeviceChanged, K::RealtimeDenied] {
            assert!(!is_fatal(k), "{k:?}");
        }
        for k in [
            K::DeviceNotAvailable,
            K::StreamInvalidated,
            K::BackendError,
            K::HostUnavailable,
        ] {
            assert!(is_fatal(k), "{k:?}");
        }
    }

    #[test]
    fn chain_applies_gain_remix_and_rate() {
        let src = AudioShape {
            format: PcmFormat::S16,
            rate_hz: 24000,
            channels: 2,
        };
        let mut c = PlaybackChain::new(src, 48000, 1).unwrap();
        let mut bytes = Vec::new();
        for _ in 0..10 {
            bytes.extend_from_slice(&16384i16.to_le_bytes());
            bytes.extend_from_slice(&(-16384i16).to_le_bytes());
        }
        let mut out = Vec::new();
        // Left at full volume, right muted: mono = 0.5 / 2.
        c.process(&bytes, &[1.0, 0.0], &mut out);
        assert!((18..=20).contains(&out.len()), "{}", out.len());
        assert!(out.iter().all(|&v| (v - 0.25).abs() < 1e-6), "{out:?}");
    }

    #[test]
    fn a_missing_named_device_is_refused_quietly() {
        let mut p = Playback::new(PlaybackOptions {
            device: Some("dsproxy-test-no-such-device".into()),
            reopen_on_reset: false,
        });
        let shape = AudioShape {
            format: PcmFormat::S16,
            rate_hz: 48000,
            channels: 2,
        };
        p.push(shape, &[1.0, 1.0], &[0; 16]);
        assert!(p.is_disabled());
        // Further audio is dropped without another attempt.
        p.push(shape, &[1.0, 1.0], &[0; 16]);
        assert!(p.is_disabled());
    }
}
