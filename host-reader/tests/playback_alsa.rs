//! Host playback (no `-x`) end to end, without a sound card: the reader plays through cpal
//! into an ALSA software card, and the tests check the samples that reached it.
//!
//! The card is alsa-lib's `file` plugin in front of a `null` PCM, given to the reader through
//! `ALSA_CONFIG_PATH` (a private configuration that replaces alsa.conf, so nothing of the
//! machine's or the user's ALSA setup is read). `null` alone has no clock: it takes audio as
//! fast as it is written, and cpal's callback would spin writing silence. The `file` plugin
//! writes every frame the application plays to its file, in the writing thread, so its file
//! here is a FIFO that the test reads at the card's byte rate in real time: that reading is
//! the card's clock, and backpressure through the FIFO paces cpal's callback as a DMA
//! pointer would. The test holds the FIFO open for reading and writing, so the reader's opens
//! of the file never block and the pipe can be shrunk to one page before any audio flows (a
//! 64 KiB pipe would swallow a third of a second at once when the device starts, unlike any
//! card). The configuration keeps stock ALSA's 5 ms minimum period (without it `null` runs
//! one-frame periods: a callback per frame).
//!
//! The slave PCM decides how the reader opens the card: `null` takes any format, rate and
//! channel count (the reader opens it as f32 at the guest's shape); `linear` over `null` takes
//! integers only (i16 at the guest's shape). A card that refuses the guest's channel count or
//! rate cannot be built from alsa-lib's software plugins over `null` (`route`, `plug` and a
//! `chmap` restrict nothing; `multi` over `null` runs into an xrun every buffer, because
//! `null`'s pointer never moves for it); cpal itself offers at most 64 channels, so a wider
//! stream takes the reader's own path for shapes a device does not offer.

mod common;

use std::io::Read;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::*;
use dsproxy_wire::record::{ControlOrigin, Record};
use dsproxy_wire::PcmFormat;

/// The slave PCM behind the `file` plugin.
#[derive(Clone, Copy)]
enum Slave {
    /// `null`: any format, rate and channel count, so the reader opens it as f32.
    Any,
    /// `linear` to S16_LE over `null`: integer formats only, so the reader opens it as i16.
    IntegerOnly,
}

impl Slave {
    fn conf(self) -> &'static str {
        match self {
            Slave::Any => "{ type null }",
            Slave::IntegerOnly => "{ type linear slave { pcm { type null } format S16_LE } }",
        }
    }

    /// What the card played, as samples in [-1, 1).
    fn samples(self, bytes: &[u8]) -> Vec<f32> {
        match self {
            Slave::Any => bytes
                .chunks_exact(4)
                .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
                .collect(),
            Slave::IntegerOnly => bytes
                .chunks_exact(2)
                .map(|c| i16::from_le_bytes([c[0], c[1]]) as f32 / 32768.0)
                .collect(),
        }
    }
}

/// What reached the card while the reader ran.
#[derive(Debug, Clone, Default)]
struct Played {
    /// Every byte, in order. Successive opens of the PCM run together: the test holds the FIFO
    /// open throughout, so the opens do not show in it (the reader's log says them: one
    /// `playing … on the host` line per open).
    bytes: Vec<u8>,
    /// The same as samples in [-1, 1).
    samples: Vec<f32>,
    /// The longest a read of the card waited for the reader once audio flowed (the card
    /// starving: a real one would have played an underrun).
    longest_wait: Duration,
}

/// One card plays at a time. Each is a real-time pipeline (the reader's threads, cpal's, the
/// card's); a dozen at once on a 2-core machine starve one another into underruns, which is
/// the machine's overload, not the reader's behaviour.
static ONE_CARD_AT_A_TIME: Mutex<()> = Mutex::new(());

/// An ALSA software card: its configuration and the thread that plays it.
struct SoftCard {
    _one_at_a_time: std::sync::MutexGuard<'static, ()>,
    _dir: TempDir,
    slave: Slave,
    conf: PathBuf,
    played: Arc<Mutex<Played>>,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl SoftCard {
    /// A card whose default PCM (and `dsproxy_test`, which has a hint so ALSA lists it) is
    /// the file plugin over `slave`, played at `byte_rate` bytes a second.
    fn new(tag: &str, slave: Slave, byte_rate: u64) -> SoftCard {
        let one_at_a_time = ONE_CARD_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
        let dir = TempDir::new(&format!("card-{tag}"));
        let fifo = dir.join("card.fifo");
        let c = std::ffi::CString::new(fifo.to_str().unwrap()).unwrap();
        // SAFETY: mkfifo on a NUL-terminated path.
        assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0, "mkfifo");
        let card = format!(
            "type file\n  file \"{}\"\n  format \"raw\"\n  slave.pcm {}",
            fifo.display(),
            slave.conf()
        );
        let conf = dir.join("asound.conf");
        std::fs::write(
            &conf,
            format!(
                "defaults.pcm.minperiodtime 5000\n\
                 pcm.!default {{\n  {card}\n}}\n\
                 pcm.dsproxy_test {{\n  {card}\n  \
                 hint {{ show on description \"dsproxy test card\" }}\n}}\n"
            ),
        )
        .unwrap();
        let played = Arc::new(Mutex::new(Played::default()));
        let stop = Arc::new(AtomicBool::new(false));
        // Opened for reading and writing, so that it opens at once, lives across the reader's
        // opens and closes of the PCM (which then never block), and can be made small before
        // any audio is written to it.
        let mut f = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(&fifo)
            .unwrap();
        // A pipe holds 64 KiB: at the start, cpal's callback would pour that much into it at
        // once (a third of a second at 48 kHz), more than a sound card's buffer. One page is
        // closer to one.
        // SAFETY: fcntl on an open descriptor.
        let size = unsafe { libc::fcntl(f.as_raw_fd(), libc::F_SETPIPE_SZ, 4096) };
        assert!(
            size > 0,
            "F_SETPIPE_SZ: {}",
            std::io::Error::last_os_error()
        );
        let thread = {
            let (played, stop) = (played.clone(), stop.clone());
            std::thread::spawn(move || play(&mut f, byte_rate, &played, &stop))
        };
        SoftCard {
            _one_at_a_time: one_at_a_time,
            _dir: dir,
            slave,
            conf,
            played,
            stop,
            thread: Some(thread),
        }
    }

    /// Runs the reader with this card as its whole ALSA configuration (`RUST_LOG=info` if
    /// `log`, for the `playing … on the host` lines).
    fn reader(&self, args: &[&str], log: bool) -> Reader {
        let conf = self.conf.clone();
        Reader::spawn_with(args, |c| {
            c.env("ALSA_CONFIG_PATH", &conf);
            if log {
                c.env("RUST_LOG", "info");
            }
        })
    }

    /// The bytes the card has played so far.
    fn bytes_so_far(&self) -> Vec<u8> {
        self.played.lock().unwrap().bytes.clone()
    }

    /// What the card played, once the reader has exited (the card plays what is left in
    /// the FIFO first).
    fn finish(mut self) -> Played {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            t.join().unwrap();
        }
        let mut p = std::mem::take(&mut *self.played.lock().unwrap());
        p.samples = self.slave.samples(&p.bytes);
        p
    }
}

impl Drop for SoftCard {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
    }
}

/// How late the card's thread may wake before its clock gives the lost time up.
const CARD_SLACK: Duration = Duration::from_millis(20);

/// Plays the FIFO at `byte_rate` bytes a second until `stop` is set and the FIFO is empty. A
/// card thread the machine left waiting does not catch up in a burst (a real card's clock
/// does not stop, so it never has to; racing to catch up would drain the reader at several
/// times real time): its clock just loses that time.
fn play(f: &mut std::fs::File, byte_rate: u64, played: &Mutex<Played>, stop: &AtomicBool) {
    let mut buf = vec![0u8; 4096];
    let mut next: Option<Instant> = None;
    let mut asked = Instant::now();
    loop {
        let mut pfd = libc::pollfd {
            fd: f.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: poll on one valid pollfd.
        if unsafe { libc::poll(&mut pfd, 1, 10) } <= 0 {
            if stop.load(Ordering::SeqCst) {
                return;
            }
            continue;
        }
        let n = match f.read(&mut buf) {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        {
            let mut p = played.lock().unwrap();
            if !p.bytes.is_empty() {
                p.longest_wait = p.longest_wait.max(asked.elapsed());
            }
            p.bytes.extend_from_slice(&buf[..n]);
        }
        let now = Instant::now();
        let mut due = next.unwrap_or(now);
        if due + CARD_SLACK < now {
            due = now;
        }
        due += Duration::from_secs_f64(n as f64 / byte_rate as f64);
        next = Some(due);
        if let Some(ahead) = due.checked_duration_since(Instant::now()) {
            std::thread::sleep(ahead);
        }
        asked = Instant::now();
    }
}

/// alsa-lib can be built without its PCM plugins; only then may these tests be skipped.
fn file_plugin_missing() -> Option<String> {
    // SAFETY: dlopen/dlsym with NUL-terminated names; the handle is left open (the reader
    // links libasound anyway).
    unsafe {
        let lib = libc::dlopen(c"libasound.so.2".as_ptr(), libc::RTLD_NOW);
        if lib.is_null() {
            return Some("libasound.so.2 cannot be loaded".into());
        }
        if libc::dlsym(lib, c"_snd_pcm_file_open".as_ptr()).is_null() {
            return Some("this alsa-lib was built without its file plugin".into());
        }
    }
    None
}

macro_rules! require_file_plugin {
    () => {
        if let Some(why) = file_plugin_missing() {
            eprintln!("SKIPPED: {why}; host playback cannot be tested without a sound card");
            return;
        }
    };
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// Deterministic S16 audio with no zero sample, so silence on the card is never the guest's.
fn s16_audio(seed: u64, frames: usize, channels: usize) -> Vec<i16> {
    noise(seed, frames * channels * 2)
        .chunks_exact(2)
        .map(|b| match i16::from_le_bytes([b[0], b[1]]) {
            0 => 1,
            v => v,
        })
        .collect()
}

/// The same for U8 (whose silence is 0x80).
fn u8_audio(seed: u64, samples: usize) -> Vec<u8> {
    noise(seed, samples)
        .into_iter()
        .map(|b| if b == 0x80 { 0x81 } else { b })
        .collect()
}

fn s16_bytes(v: &[i16]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

/// S16 as the reader decodes it: v / 32768, which f32 holds exactly.
fn unity(v: &[i16]) -> Vec<f32> {
    v.iter().map(|&x| x as f32 / 32768.0).collect()
}

/// U8 as the reader decodes it: (v - 128) / 128, exactly.
fn u8_unity(v: &[u8]) -> Vec<f32> {
    v.iter().map(|&x| (x as f32 - 128.0) / 128.0).collect()
}

/// Checks that the card played `segments` in order, each sample within `tol` of the one
/// expected, with nothing but silence before, between and after them (the device plays
/// silence until the first audio arrives, and around a close and reopen). Every segment must
/// start with a non-silent frame.
fn assert_played(got: &[f32], channels: usize, segments: &[&[f32]], tol: f32, what: &str) {
    let skip_silence = |mut at: usize| {
        while at + channels <= got.len() && got[at..at + channels].iter().all(|&v| v == 0.0) {
            at += channels;
        }
        at
    };
    let mut at = 0;
    for (i, seg) in segments.iter().enumerate() {
        at = skip_silence(at);
        let have = got.len().saturating_sub(at).min(seg.len());
        if let Some(k) = (0..have).find(|&k| (got[at + k] - seg[k]).abs() > tol) {
            panic!(
                "{what}: segment {i}, sample {k} (card frame {}): played {}, want {}",
                (at + k) / channels,
                got[at + k],
                seg[k]
            );
        }
        assert!(
            have == seg.len(),
            "{what}: segment {i} cut short: {have} of {} samples played",
            seg.len()
        );
        at += seg.len();
    }
    let end = skip_silence(at);
    assert!(
        end >= got.len(),
        "{what}: {} samples played after the last segment, from card frame {}",
        got.len() - at,
        at / channels
    );
}

/// The frames of silence the card played before the first audio.
fn leading_silence(got: &[f32], channels: usize) -> usize {
    got.chunks_exact(channels)
        .take_while(|f| f.iter().all(|&v| v == 0.0))
        .count()
}

/// How many times the reader opened a device (its `RUST_LOG=info` lines).
fn opens(stderr: &str) -> usize {
    stderr.matches(" on the host at ").count()
}

/// The fake device's usual start: the stream's params, the mixer at full volume, the end of
/// the snapshot.
fn attach(dev: &FakeDevice, fmt: PcmFormat, rate: u32, channels: u8, period: u32) -> Conn {
    attach_card(dev, &hello(), fmt, rate, channels, period)
}

fn attach_card(
    dev: &FakeDevice,
    card: &dsproxy_wire::record::Hello,
    fmt: PcmFormat,
    rate: u32,
    channels: u8,
    period: u32,
) -> Conn {
    let (mut c, _) = dev.accept_subscribed(card);
    c.send(&params(0, fmt, rate, channels, period));
    c.send_all(&initial_controls());
    c.send(&Record::SnapshotEnd);
    c
}

/// PCM records of `audio` in `period` pieces from offset `from`.
fn pcm_records(audio: &[u8], period: usize, from: u64) -> Vec<Record> {
    audio
        .chunks(period)
        .enumerate()
        .map(|(i, ch)| pcm(0, from + (i * period) as u64, ch))
        .collect()
}

fn guest_control(id: u32, values: Vec<i64>) -> Record {
    Record::Control {
        id,
        origin: ControlOrigin::Guest,
        values,
    }
}

/// Bytes a second of the card opened at 48 kHz stereo, as i16 and as f32.
const I16_STEREO_48K: u64 = 48_000 * 2 * 2;
const F32_STEREO_48K: u64 = 48_000 * 2 * 4;

#[test]
fn s16_48k_stereo_reaches_an_integer_card_bit_for_bit() {
    require_file_plugin!();
    let card = SoftCard::new("s16", Slave::IntegerOnly, I16_STEREO_48K);
    let dev = FakeDevice::new("play-s16");
    let r = card.reader(&["-u", s(&dev.sock)], true);
    let audio = s16_bytes(&s16_audio(31, 24_000, 2));
    let mut c = attach(&dev, PcmFormat::S16, 48000, 2, 4096);
    c.send_all(&playback(0, &audio, 4096));
    c.close();
    let f = r.finish();
    let played = card.finish();
    assert!(f.status.success(), "{}", f.stderr);
    assert!(
        f.stderr
            .contains("playing 48000 Hz S16_LE 2ch on the host at 48000 Hz, 2 channels"),
        "{}",
        f.stderr
    );
    assert!(!f.stderr.contains("not playing"), "{}", f.stderr);
    assert_eq!(opens(&f.stderr), 1, "{}", f.stderr);
    // Silence while the device starts, then the guest's bytes, every one, the tail included
    // (the reader plays out its queue before it closes the device), then nothing but silence.
    let start = played
        .bytes
        .chunks_exact(4)
        .position(|fr| fr != [0; 4])
        .expect("the card played nothing but silence")
        * 4;
    let body = &played.bytes[start..];
    assert!(
        body.len() >= audio.len() && body[..audio.len()] == audio[..],
        "the card did not get the guest's bytes"
    );
    assert!(body[audio.len()..].iter().all(|&b| b == 0));
}

#[test]
fn u8_at_44k_mono_plays_at_its_own_shape_as_f32() {
    require_file_plugin!();
    let card = SoftCard::new("u8", Slave::Any, 44_100 * 4);
    let dev = FakeDevice::new("play-u8");
    let r = card.reader(&["-u", s(&dev.sock)], true);
    let audio = u8_audio(32, 22_050);
    let mut c = attach(&dev, PcmFormat::U8, 44100, 1, 1024);
    c.send_all(&playback(0, &audio, 1024));
    c.close();
    let f = r.finish();
    let played = card.finish();
    assert!(f.status.success(), "{}", f.stderr);
    assert!(
        f.stderr
            .contains("playing 44100 Hz U8 1ch on the host at 44100 Hz, 1 channels"),
        "{}",
        f.stderr
    );
    let want = u8_unity(&audio);
    assert_played(&played.samples, 1, &[&want], 0.0, "U8 44.1 kHz");
}

#[test]
fn a_shape_the_device_does_not_offer_is_remixed_and_resampled() {
    require_file_plugin!();
    // 72 channels at 16 kHz, wider than cpal offers any device: the reader opens the card at
    // its default configuration (stereo f32 at 48 kHz), folds source channel k into output
    // channel k mod 2 (averaging), and converts the rate by linear interpolation: 3 output
    // frames per input frame.
    let card = SoftCard::new("remix", Slave::Any, F32_STEREO_48K);
    let dev = FakeDevice::new("play-remix");
    let r = card.reader(&["-u", s(&dev.sock)], true);
    let ch = 72;
    let frames = 2_000;
    let audio = u8_audio(33, frames * ch);
    let mut wide = out_stream(0);
    wide.channels_max = ch as u8;
    let mut c = attach_card(
        &dev,
        &hello_with(vec![wide, in_stream(1)]),
        PcmFormat::U8,
        16000,
        ch as u8,
        ch as u32 * 100,
    );
    c.send_all(&playback(0, &audio, ch * 100));
    c.close();
    let f = r.finish();
    let played = card.finish();
    assert!(f.status.success(), "{}", f.stderr);
    assert!(
        f.stderr
            .contains("playing 16000 Hz U8 72ch on the host at 48000 Hz, 2 channels"),
        "{}",
        f.stderr
    );
    let x = u8_unity(&audio);
    let folded: Vec<[f32; 2]> = x
        .chunks_exact(ch)
        .map(|fr| {
            let mean = |c0: usize| fr.iter().skip(c0).step_by(2).sum::<f32>() / (ch / 2) as f32;
            [mean(0), mean(1)]
        })
        .collect();
    // Between input frames k and k+1: x[k], 2/3 x[k] + 1/3 x[k+1], 1/3 x[k] + 2/3 x[k+1].
    // The last input frame waits for a right neighbour that never comes.
    let mut want = Vec::new();
    for pair in folded.windows(2) {
        for j in 0..3 {
            for (l, r) in pair[0].iter().zip(&pair[1]) {
                want.push(l + (r - l) * (j as f32 / 3.0));
            }
        }
    }
    // Averages of 36 values may differ in the last bits with the order of summation.
    assert_played(
        &played.samples,
        2,
        &[&want],
        1e-5,
        "72 channels at 16 kHz on a stereo 48 kHz card",
    );
}

#[test]
fn the_guests_volume_and_mute_reach_the_card() {
    require_file_plugin!();
    let card = SoftCard::new("volume", Slave::Any, F32_STEREO_48K);
    let dev = FakeDevice::new("play-volume");
    let r = card.reader(&["-u", s(&dev.sock)], false);
    let period = 4800; // 25 ms of S16 stereo at 48 kHz
    let part = |seed| s16_audio(seed, 9600, 2);
    let (a, b, cc, d, e) = (part(41), part(42), part(43), part(44), part(45));
    let mut c = attach(&dev, PcmFormat::S16, 48000, 2, period as u32);
    let mut recs = vec![prepare(0), start(0)];
    let mut off = 0u64;
    let mut add = |recs: &mut Vec<Record>, v: &[i16]| {
        let b = s16_bytes(v);
        recs.extend(pcm_records(&b, period, off));
        off += b.len() as u64;
    };
    // The fake card's mixer (common::hello): 0 Master Playback Volume, 1 Master Playback
    // Switch, 2 PCM Playback Volume, volumes 0..255 without a dB scale (linear gain).
    // A at full volume; B with PCM at 0; C with PCM back at 255 but Master switched off;
    // D with Master on and PCM at 51:255 (gain 0.2 on the left only); E at full volume.
    add(&mut recs, &a);
    recs.push(guest_control(2, vec![0, 0]));
    add(&mut recs, &b);
    recs.push(guest_control(2, vec![255, 255]));
    recs.push(guest_control(1, vec![0]));
    add(&mut recs, &cc);
    recs.push(guest_control(1, vec![1]));
    recs.push(guest_control(2, vec![51, 255]));
    add(&mut recs, &d);
    recs.push(guest_control(2, vec![255, 255]));
    add(&mut recs, &e);
    recs.push(stop(0, true, 0));
    recs.push(release(0));
    c.send_all(&recs);
    c.close();
    let f = r.finish();
    let played = card.finish();
    assert!(f.status.success(), "{}", f.stderr);
    assert!(f.stderr.is_empty(), "{}", f.stderr);
    // One segment: the silences of B and C are exactly as long as B and C.
    let mut want = unity(&a);
    want.extend(std::iter::repeat_n(0.0, b.len() + cc.len()));
    want.extend(
        d.chunks_exact(2)
            .flat_map(|fr| [fr[0] as f32 / 32768.0 * 0.2, fr[1] as f32 / 32768.0]),
    );
    want.extend(unity(&e));
    assert_played(&played.samples, 2, &[&want], 1e-6, "volume and mute");
}

#[test]
fn a_stream_reset_reopens_the_card_with_r_and_not_without() {
    require_file_plugin!();
    let period = 4096;
    let a = s16_audio(51, 12_000, 2);
    let b = s16_audio(52, 12_000, 2);
    let run = |tag: &str, args: &[&str]| {
        let card = SoftCard::new(tag, Slave::IntegerOnly, I16_STEREO_48K);
        let dev = FakeDevice::new(tag);
        let mut all = vec!["-u", s(&dev.sock)];
        all.extend_from_slice(args);
        let r = card.reader(&all, true);
        let mut c = attach(&dev, PcmFormat::S16, 48000, 2, period as u32);
        c.send_all(&[prepare(0), start(0)]);
        c.send_all(&pcm_records(&s16_bytes(&a), period, 0));
        // SNDCTL_DSP_RESET: the guest discards what it had queued, and starts again.
        c.send_all(&[stop(0, false, 8192), prepare(0), start(0)]);
        c.send_all(&pcm_records(&s16_bytes(&b), period, 0));
        c.send_all(&[stop(0, true, 0), release(0)]);
        c.close();
        let f = r.finish();
        assert!(f.status.success(), "{}", f.stderr);
        let played = card.finish();
        (f.stderr, played.samples)
    };
    let (a, b) = (unity(&a), unity(&b));

    // Without -r the reset does not touch the host device: A then B at once, one open.
    let (stderr, got) = run("play-noreset", &[]);
    assert_eq!(opens(&stderr), 1, "{stderr}");
    let ab: Vec<f32> = a.iter().chain(&b).copied().collect();
    assert_played(&got, 2, &[&ab], 0.0, "a reset without -r");

    // With -r the device is closed at the reset, dropping what the host had queued (as the
    // guest dropped its own), and opened again for B, which plays whole.
    let (stderr, got) = run("play-reset", &["-r"]);
    assert!(
        stderr.contains("guest reset the stream: host device closed"),
        "{stderr}"
    );
    assert_eq!(opens(&stderr), 2, "{stderr}");
    let lead = leading_silence(&got, 2) * 2;
    let played_of_a = (0..a.len())
        .take_while(|&k| lead + k < got.len() && got[lead + k] == a[k])
        .count();
    assert!(
        played_of_a > 0 && played_of_a < a.len(),
        "-r: {played_of_a} of A's {} samples played before the reset",
        a.len()
    );
    assert_played(
        &got[lead + played_of_a..],
        2,
        &[&b],
        0.0,
        "-r: after the reset",
    );
}

#[test]
fn the_device_starts_with_audio_queued_not_on_the_first_record() {
    require_file_plugin!();
    // A guest whose first period comes alone, the rest 20 ms later (a program computing its
    // sound as it goes). Started on that first record, the device would play it and then
    // silence until the rest came: a gap at the start of the sound. The reader starts the
    // device once enough is queued, so the sound plays whole.
    let card = SoftCard::new("start", Slave::IntegerOnly, I16_STEREO_48K);
    let dev = FakeDevice::new("play-start");
    let r = card.reader(&["-u", s(&dev.sock)], false);
    let audio = s16_audio(91, 14_400, 2);
    let bytes = s16_bytes(&audio);
    let period = 1920; // 10 ms
    let mut c = attach(&dev, PcmFormat::S16, 48000, 2, period as u32);
    let recs = pcm_records(&bytes, period, 0);
    c.send_all(&[prepare(0), start(0), recs[0].clone()]);
    std::thread::sleep(Duration::from_millis(20));
    c.send_all(&recs[1..]);
    c.send_all(&[stop(0, true, 0), release(0)]);
    c.close();
    let f = r.finish();
    let played = card.finish();
    assert!(f.status.success(), "{}", f.stderr);
    assert_played(
        &played.samples,
        2,
        &[&unity(&audio)],
        0.0,
        "a first period alone",
    );
}

#[test]
fn a_short_sound_alone_starts_the_device_too() {
    require_file_plugin!();
    // 50 ms, less than the fill the device waits for, and then nothing while the guest keeps
    // the stream open: the device starts anyway once that audio has waited 150 ms.
    let card = SoftCard::new("short", Slave::IntegerOnly, I16_STEREO_48K);
    let dev = FakeDevice::new("play-short");
    let r = card.reader(&["-u", s(&dev.sock)], false);
    let audio = s16_bytes(&s16_audio(92, 2_400, 2));
    let mut c = attach(&dev, PcmFormat::S16, 48000, 2, 4800);
    c.send_all(&[prepare(0), start(0)]);
    c.send_all(&pcm_records(&audio, 4800, 0));
    wait_until("the short sound on the card", || {
        let b = card.bytes_so_far();
        b.windows(audio.len()).any(|w| w == &audio[..])
    });
    c.close();
    let f = r.finish();
    assert!(f.status.success(), "{}", f.stderr);
    card.finish();
}

#[test]
fn a_new_rate_plays_out_the_old_one_then_reopens() {
    require_file_plugin!();
    let card = SoftCard::new("rate", Slave::Any, F32_STEREO_48K);
    let dev = FakeDevice::new("play-rate");
    let r = card.reader(&["-u", s(&dev.sock)], true);
    let a = s16_audio(61, 9_600, 2);
    let b = s16_audio(62, 8_820, 2);
    let mut c = attach(&dev, PcmFormat::S16, 48000, 2, 4096);
    c.send_all(&playback(0, &s16_bytes(&a), 4096));
    c.send(&params(0, PcmFormat::S16, 44100, 2, 4096));
    c.send_all(&playback(0, &s16_bytes(&b), 4096));
    c.close();
    let f = r.finish();
    let played = card.finish();
    assert!(f.status.success(), "{}", f.stderr);
    assert_eq!(opens(&f.stderr), 2, "{}", f.stderr);
    assert!(
        f.stderr
            .contains("playing 44100 Hz S16_LE 2ch on the host at 44100 Hz, 2 channels"),
        "{}",
        f.stderr
    );
    // A whole (played out before the device was closed), then B whole.
    assert_played(
        &played.samples,
        2,
        &[&unity(&a), &unity(&b)],
        0.0,
        "48 kHz then 44.1 kHz",
    );
}

#[test]
fn device_picks_a_pcm_by_cpal_id_or_by_name() {
    require_file_plugin!();
    let audio = s16_audio(71, 4_800, 2);
    // dsproxy_test has a hint (ALSA lists it); this configuration's default has none.
    for device in ["alsa:dsproxy_test", "dsproxy test card", "alsa:default"] {
        let card = SoftCard::new("pick", Slave::IntegerOnly, I16_STEREO_48K);
        let dev = FakeDevice::new("play-pick");
        let r = card.reader(&["-u", s(&dev.sock), "--device", device], false);
        let mut c = attach(&dev, PcmFormat::S16, 48000, 2, 4096);
        c.send_all(&playback(0, &s16_bytes(&audio), 4096));
        c.close();
        let f = r.finish();
        let played = card.finish();
        assert!(f.status.success(), "--device {device}: {}", f.stderr);
        assert!(f.stderr.is_empty(), "--device {device}: {}", f.stderr);
        assert_played(
            &played.samples,
            2,
            &[&unity(&audio)],
            0.0,
            &format!("--device {device}"),
        );
    }
}

#[test]
fn playback_holds_the_guest_to_the_cards_clock() {
    require_file_plugin!();
    // Three seconds of audio, offered as fast as the reader takes it, to a card that plays in
    // real time: the reader's ring fills and the reader stops reading the tap, so sending
    // takes about as long as playing (less what the buffers on the way hold: the socket,
    // the record queue, the reader's 200 ms ring, the FIFO). Loose bounds: this checks that
    // backpressure exists and follows the card, not how precisely.
    let card = SoftCard::new("pace", Slave::IntegerOnly, I16_STEREO_48K);
    let dev = FakeDevice::new("play-pace");
    let r = card.reader(&["-u", s(&dev.sock)], false);
    let audio = s16_audio(81, 3 * 48_000, 2);
    let period = 1920; // 10 ms
    let mut c = attach(&dev, PcmFormat::S16, 48000, 2, period as u32);
    c.send_all(&[prepare(0), start(0)]);
    let t0 = Instant::now();
    let mut longest_send = (Duration::ZERO, 0);
    let mut sent_at = Vec::new();
    for (i, rec) in pcm_records(&s16_bytes(&audio), period, 0)
        .into_iter()
        .enumerate()
    {
        let t = Instant::now();
        c.send(&rec);
        if t.elapsed() > longest_send.0 {
            longest_send = (t.elapsed(), i);
        }
        sent_at.push(t0.elapsed());
    }
    let sending = t0.elapsed();
    c.send_all(&[stop(0, true, 0), release(0)]);
    c.close();
    let f = r.finish();
    let reader_done = t0.elapsed();
    let played = card.finish();
    assert!(f.status.success(), "{}", f.stderr);
    assert!(f.stderr.is_empty(), "{}", f.stderr);
    let got = played.samples;
    // The pace over the last two thirds of the sending, once the buffers were full: the
    // least-squares slope of send time against audio time. (The socket lets the sender go in
    // bursts: a blocked writer is woken when the reader has taken 3/4 of what it buffers.)
    let n = sent_at.len();
    let pts: Vec<(f64, f64)> = (n / 3..n)
        .map(|i| (i as f64 * 0.010, sent_at[i].as_secs_f64()))
        .collect();
    let mean = |f: fn(&(f64, f64)) -> f64| pts.iter().map(f).sum::<f64>() / pts.len() as f64;
    let (mx, my) = (mean(|p| p.0), mean(|p| p.1));
    let pace = pts.iter().map(|p| (p.0 - mx) * (p.1 - my)).sum::<f64>()
        / pts.iter().map(|p| (p.0 - mx).powi(2)).sum::<f64>();
    eprintln!(
        "pacing: 3.000 s of audio sent in {:.3} s; steady pace {pace:.3} s per s of audio; \
         longest single send {:.1} ms (record {} of {n}); reader done after {:.3} s; \
         the card: {} frames of silence before the audio, longest wait for the reader \
         {:.1} ms, {:.3} s played",
        sending.as_secs_f64(),
        longest_send.0.as_secs_f64() * 1e3,
        longest_send.1,
        reader_done.as_secs_f64(),
        leading_silence(&got, 2),
        played.longest_wait.as_secs_f64() * 1e3,
        got.len() as f64 / 2.0 / 48_000.0,
    );
    assert_played(&got, 2, &[&unity(&audio)], 0.0, "three seconds");
    assert!(
        sending >= Duration::from_millis(1500),
        "3 s of audio were taken in {sending:?}: the card does not pace the reader"
    );
    assert!(
        (0.75..1.33).contains(&pace),
        "the guest was held at {pace:.3} s per second of audio"
    );
}

/// The device binary cargo built next to the reader (`cargo test --workspace` builds it).
fn device_bin() -> PathBuf {
    let p =
        PathBuf::from(env!("CARGO_BIN_EXE_dsproxy-host-reader")).with_file_name("dsproxy-device");
    assert!(
        p.exists(),
        "{} is missing: build it first (cargo build -p dsproxy-device, or cargo test --workspace)",
        p.display()
    );
    p
}

#[test]
fn the_real_device_guest_and_card_stay_in_step() {
    require_file_plugin!();
    use dsproxy_testfront::proto::S_OK;
    use dsproxy_testfront::{play, Daemon, FrontendOpts, SndFrontend};
    use dsproxy_wire::PcmRate;
    // The whole chain: a guest (dsproxy-testfront's virtio-snd driver) plays 3 s into
    // dsproxy-device, paced by its clock; the reader plays it on a card paced by its own.
    // Both clocks are real time here, so the reader must keep up without holding the guest
    // back: the guest's buffers complete on time and the card gets every byte.
    let card = SoftCard::new("device", Slave::IntegerOnly, I16_STEREO_48K);
    let d = Daemon::dsproxy(device_bin(), &["--wait-for-reader"]).expect("start dsproxy-device");
    let r = card.reader(&["-u", s(&d.tap)], false);
    let mut fe = SndFrontend::connect(&d.socket, FrontendOpts::default())
        .unwrap_or_else(|e| panic!("connect: {e}\n{}", d.log_tail(30)));
    let period = 4096u32;
    let audio = s16_audio(101, 3 * 48_000, 2);
    let st = fe
        .set_params(
            0,
            period * 4,
            period,
            2,
            PcmFormat::S16.code(),
            PcmRate::R48000.code(),
        )
        .unwrap();
    assert_eq!(st, S_OK);
    assert_eq!(fe.prepare(0).unwrap(), S_OK);
    let rep = play(&mut fe, 0, &s16_bytes(&audio), period as usize)
        .unwrap_or_else(|e| panic!("play: {e}\n{}", d.log_tail(30)));
    assert!(rep.bad_statuses().is_empty(), "{:?}", rep.bad_statuses());
    assert_eq!(fe.release(0).unwrap(), S_OK);
    let t = rep.timing(period as usize).unwrap();
    // The device going away ends the reader, which plays out what it holds.
    drop(fe);
    drop(d);
    let f = r.finish();
    let played = card.finish();
    eprintln!(
        "device + playback: the guest's 3.000 s completed in {:.3} s (period {:.1} ms: mean \
         interval {:.2} ms, stddev {:.2} ms, worst completion {:.1} ms off the ideal clock); \
         the card: longest wait for the reader {:.1} ms",
        t.elapsed.as_secs_f64(),
        t.period_ms,
        t.interval_mean_ms,
        t.interval_stddev_ms,
        t.max_jitter_ms,
        played.longest_wait.as_secs_f64() * 1e3,
    );
    assert!(f.status.success(), "{}", f.stderr);
    assert!(f.stderr.is_empty(), "{}", f.stderr);
    assert_played(&played.samples, 2, &[&unity(&audio)], 0.0, "guest → card");
    // Loose: the guest is not held back by more than the reader's start (150 ms) and a few
    // periods of scheduling.
    assert!(
        t.elapsed < t.audio + Duration::from_millis(400),
        "the guest took {:?} for {:?} of audio",
        t.elapsed,
        t.audio
    );
}
