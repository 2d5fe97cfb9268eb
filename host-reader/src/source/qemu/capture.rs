//! `--inject` into QEMU's capture voices: the injector fills a queue for its input stream,
//! QEMU's `AudioInListener.Read` calls empty it. A card's other capture voices (AC97 has a
//! microphone besides its line in) read silence.
//!
//! QEMU calls Read synchronously from its main loop, so an answer never waits: it is what
//! the queue holds, padded with silence when the queue runs dry (before the first injected
//! audio, and after the file ends), as a microphone would give. QEMU's D-Bus backend does
//! not pace capture itself (its rate limit in `dbus_read` is commented out), so the reader
//! does: a voice gets at most its rate's worth of bytes since it was enabled, plus
//! [`HEADROOM`]; the guest's capture then runs at real time by the host's clock. Time is
//! counted in steps of [`STEP`]: QEMU's card models (AC97's `read_audio`) call Read in a loop
//! until it returns nothing, holding QEMU's lock — answered by the microsecond, that loop
//! would spin for a whole buffer descriptor and starve the guest of its interrupts.

use std::collections::{HashMap, VecDeque};
use std::io;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use crate::convert::AudioShape;
use crate::source::Outlet;

/// How far ahead of real time a capture voice may read (QEMU asks a little ahead).
pub const HEADROOM: Duration = Duration::from_millis(20);
/// The granularity of the capture clock.
pub const STEP: Duration = Duration::from_millis(5);
/// How much injected audio the queue holds ahead of QEMU's reads.
const QUEUE_SECONDS: f64 = 0.5;

struct Voice {
    frame: usize,
    byte_rate: u64,
    silence: Vec<u8>,
    enabled_at: Option<Instant>,
    given: u64,
}

#[derive(Default)]
struct State {
    /// The capture voices by stream.
    voices: HashMap<u32, Voice>,
    /// Injected audio, for `queue_stream`.
    queue: VecDeque<u8>,
    queue_stream: Option<u32>,
    closed: bool,
}

/// Shared between the injector (through [`CaptureOutlet`]) and the in-listener.
#[derive(Default)]
pub struct CaptureQueue {
    state: Mutex<State>,
    room: Condvar,
}

impl CaptureQueue {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Input stream `stream` now has this shape (`None`: its voice is gone); what is queued
    /// for it in an older shape goes.
    pub fn configure(&self, stream: u32, shape: Option<AudioShape>) {
        let mut st = self.lock();
        if st.queue_stream == Some(stream) {
            st.queue.clear();
        }
        let voice = shape.and_then(|s| {
            let frame = s.frame_bytes()?;
            let mut silence = Vec::new();
            crate::convert::encode(s.format, &vec![0.0; s.channels as usize], &mut silence).ok()?;
            Some(Voice {
                frame,
                byte_rate: s.byte_rate()?,
                silence,
                enabled_at: None,
                given: 0,
            })
        });
        match voice {
            Some(v) => st.voices.insert(stream, v),
            None => st.voices.remove(&stream),
        };
        self.room.notify_all();
    }

    /// The guest started (or stopped) capturing.
    pub fn set_enabled(&self, stream: u32, on: bool) {
        let mut st = self.lock();
        if let Some(v) = st.voices.get_mut(&stream) {
            v.enabled_at = on.then(Instant::now);
            v.given = 0;
        }
    }

    /// Answers QEMU's Read of up to `size` bytes for `stream`: whole frames, no more than
    /// real time allows.
    pub fn read(&self, stream: u32, size: usize) -> Vec<u8> {
        self.read_at(stream, size, Instant::now())
    }

    fn read_at(&self, stream: u32, size: usize, now: Instant) -> Vec<u8> {
        let mut st = self.lock();
        let State {
            voices,
            queue,
            queue_stream,
            ..
        } = &mut *st;
        let Some(v) = voices.get_mut(&stream) else {
            return Vec::new();
        };
        let ours = *queue_stream == Some(stream);
        let elapsed = v
            .enabled_at
            .map_or(Duration::ZERO, |t| now.saturating_duration_since(t));
        let steps = (elapsed.as_nanos() / STEP.as_nanos()) as u32;
        let since = STEP * steps + HEADROOM;
        let due = (since.as_nanos() * v.byte_rate as u128 / 1_000_000_000) as u64;
        let allowed = due.saturating_sub(v.given) as usize;
        let n = size.min(allowed);
        let n = n - n % v.frame.max(1);
        let mut out: Vec<u8> = if ours {
            queue.drain(..n.min(queue.len())).collect()
        } else {
            Vec::new()
        };
        while out.len() < n {
            let k = (n - out.len()).min(v.silence.len());
            out.extend_from_slice(&v.silence[..k]);
        }
        v.given += n as u64;
        drop(st);
        self.room.notify_all();
        out
    }

    /// The connection is gone: a waiting injector gives up.
    pub fn close(&self) {
        self.lock().closed = true;
        self.room.notify_all();
    }

    /// Queues injected audio, waiting for room.
    fn push(&self, stream: u32, data: &[u8]) -> io::Result<()> {
        let mut st = self.lock();
        loop {
            if st.closed {
                return Err(io::Error::new(io::ErrorKind::BrokenPipe, "QEMU went away"));
            }
            if st.queue_stream != Some(stream) {
                st.queue.clear();
                st.queue_stream = Some(stream);
            }
            let cap = match st.voices.get(&stream) {
                Some(v) => (v.byte_rate as f64 * QUEUE_SECONDS) as usize,
                // The voice went away under the injector: drop this piece.
                None => return Ok(()),
            };
            if st.queue.is_empty() || st.queue.len() + data.len() <= cap {
                st.queue.extend(data);
                return Ok(());
            }
            st = self
                .room
                .wait_timeout(st, Duration::from_millis(100))
                .unwrap_or_else(|p| p.into_inner())
                .0;
        }
    }
}

/// The injector's way into QEMU: audio goes to the queue; QEMU has no requests to take.
pub struct CaptureOutlet(pub Arc<CaptureQueue>);

impl Outlet for CaptureOutlet {
    fn request(&mut self, _frame: &[u8]) -> io::Result<()> {
        Err(io::Error::new(
            io::ErrorKind::Unsupported,
            "QEMU's D-Bus audio takes no mixer requests",
        ))
    }

    fn inject(&mut self, stream: u32, data: &[u8]) -> io::Result<()> {
        self.0.push(stream, data)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use dsproxy_wire::PcmFormat;

    fn shape(format: PcmFormat, rate_hz: u32) -> Option<AudioShape> {
        Some(AudioShape {
            format,
            rate_hz,
            channels: 2,
        })
    }

    #[test]
    fn reads_are_paced_to_real_time_and_padded_with_silence() {
        let q = CaptureQueue::default();
        q.configure(1, shape(PcmFormat::S16, 48000));
        let t0 = Instant::now();
        q.lock().voices.get_mut(&1).unwrap().enabled_at = Some(t0);
        q.push(1, &[7; 100]).unwrap();
        // At t0 only the headroom is due: 20 ms = 960 frames = 3840 bytes.
        let got = q.read_at(1, 100_000, t0);
        assert_eq!(got.len(), 3840);
        assert_eq!(&got[..100], &[7; 100]);
        assert!(got[100..].iter().all(|&b| b == 0));
        // Nothing more until time passes — not even after 4 ms, less than a step, so QEMU's
        // read loops end; then exactly the time's worth, whole frames.
        assert!(q.read_at(1, 100_000, t0).is_empty());
        assert!(q
            .read_at(1, 100_000, t0 + Duration::from_millis(4))
            .is_empty());
        let got = q.read_at(1, 100_000, t0 + Duration::from_millis(10));
        assert_eq!(got.len(), 1920);
        // QEMU's own limit wins when smaller; odd sizes are cut to frames.
        let got = q.read_at(1, 7, t0 + Duration::from_secs(1));
        assert_eq!(got.len(), 4);
        // A stream with no voice: nothing. Another capture voice: silence, paced the same.
        assert!(q.read_at(2, 100, t0 + Duration::from_secs(1)).is_empty());
        q.configure(2, shape(PcmFormat::S16, 48000));
        q.lock().voices.get_mut(&2).unwrap().enabled_at = Some(t0);
        q.push(1, &[5; 8]).unwrap();
        let got = q.read_at(2, 100, t0 + Duration::from_secs(1));
        assert_eq!(got, vec![0; 100]);
        assert_eq!(
            q.lock().queue.len(),
            8,
            "the injected stream's audio stays for it"
        );
    }

    #[test]
    fn silence_is_the_formats_own() {
        let q = CaptureQueue::default();
        q.configure(0, shape(PcmFormat::U8, 8000));
        q.set_enabled(0, true);
        let got = q.read(0, 10);
        assert_eq!(got, vec![0x80; 10]);
    }

    #[test]
    fn the_queue_waits_for_room_and_gives_up_when_closed() {
        let q = Arc::new(CaptureQueue::default());
        q.configure(0, shape(PcmFormat::S16, 8000)); // 0.5 s = 16000 bytes
        q.push(0, &[1; 16000]).unwrap();
        let q2 = q.clone();
        let t = std::thread::spawn(move || CaptureOutlet(q2).inject(0, &[2; 4000]));
        std::thread::sleep(Duration::from_millis(50));
        assert!(!t.is_finished(), "a full queue makes the injector wait");
        q.set_enabled(0, true);
        std::thread::sleep(Duration::from_millis(200));
        let _ = q.read(0, 8000);
        assert!(t.join().unwrap().is_ok());
        let q = Arc::new(CaptureQueue::default());
        q.configure(0, shape(PcmFormat::S16, 8000));
        q.push(0, &[3; 16000]).unwrap();
        let q3 = q.clone();
        let t = std::thread::spawn(move || q3.push(0, &[4; 16000]));
        q.close();
        assert!(t.join().unwrap().is_err());
        // A new shape drops what was queued for the old one.
        let q = CaptureQueue::default();
        q.configure(0, shape(PcmFormat::S16, 8000));
        q.push(0, &[9; 10]).unwrap();
        q.configure(0, shape(PcmFormat::S16, 16000));
        assert!(q.lock().queue.is_empty());
    }
}
