//! The reader's QEMU source (`--qmp`) against a fake QEMU: a QMP socket that takes the
//! descriptor and `add_client` as QEMU does, a D-Bus display served on it (ObjectManager,
//! VM, Audio), and listener calls made the way QEMU's dbus audio backend makes them (no
//! reply expected, the proxy's GetAll first, Read answered synchronously).

mod common;

use std::io::Write;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use common::*;
use zbus::zvariant::OwnedFd as ZFd;

const OUT: &str = "org.qemu.Display1.AudioOutListener";
const IN: &str = "org.qemu.Display1.AudioInListener";

/// One thing the fake QEMU does on a listener connection.
#[derive(Clone)]
enum Step {
    /// Init(id, S16 LE, rate, channels)
    Init(u64, u32, u8),
    Enable(u64, bool),
    Volume(u64, bool, Vec<u8>),
    Write(u64, Vec<u8>),
    Fini(u64),
    Sleep(u64),
    /// Read(id, size) every `every` ms for `ms` ms; the answers are kept.
    ReadFor {
        id: u64,
        size: u64,
        every: u64,
        ms: u64,
    },
}

#[derive(Clone, Default)]
struct Script {
    out: Vec<Step>,
    input: Vec<Step>,
    /// Refuse `add_client` with this QMP error.
    add_client_error: Option<&'static str>,
    /// Serve no Audio object (an audiodev that is not dbus).
    no_audio: bool,
    /// Stay up this long after the out script before going away.
    linger_ms: u64,
}

/// What the fake saw.
#[derive(Default)]
struct Seen {
    read_back: Vec<u8>,
    read_calls: u32,
    read_ms: u64,
    get_all_answered: bool,
}

struct FakeQemu {
    dir: TempDir,
    qmp: PathBuf,
    seen: Arc<Mutex<Seen>>,
    thread: Option<JoinHandle<()>>,
}

impl FakeQemu {
    fn start(tag: &str, script: Script) -> FakeQemu {
        let dir = TempDir::new(tag);
        let qmp = dir.join("qmp.sock");
        let listener = UnixListener::bind(&qmp).unwrap();
        let seen = Arc::new(Mutex::new(Seen::default()));
        let seen2 = seen.clone();
        let thread = std::thread::spawn(move || serve_qmp(listener, script, seen2));
        FakeQemu {
            dir,
            qmp,
            seen,
            thread: Some(thread),
        }
    }

    fn qmp(&self) -> &str {
        self.qmp.to_str().unwrap()
    }

    /// Waits for the fake to finish its scripts.
    fn join(&mut self) {
        if let Some(t) = self.thread.take() {
            t.join().unwrap();
        }
    }
}

fn recv_with_fds(s: &UnixStream, fds: &mut Vec<OwnedFd>) -> Vec<u8> {
    let mut buf = [0u8; 4096];
    let mut control = [0u8; 64];
    // SAFETY: the buffers outlive the call; CMSG_* walk only the received control data.
    unsafe {
        let mut iov = libc::iovec {
            iov_base: buf.as_mut_ptr().cast(),
            iov_len: buf.len(),
        };
        let mut msg: libc::msghdr = std::mem::zeroed();
        msg.msg_iov = &mut iov;
        msg.msg_iovlen = 1;
        msg.msg_control = control.as_mut_ptr().cast();
        msg.msg_controllen = control.len() as _;
        let n = libc::recvmsg(s.as_raw_fd(), &mut msg, 0);
        if n <= 0 {
            return Vec::new();
        }
        let mut c = libc::CMSG_FIRSTHDR(&msg);
        while !c.is_null() {
            if (*c).cmsg_level == libc::SOL_SOCKET && (*c).cmsg_type == libc::SCM_RIGHTS {
                let mut fd: RawFd = -1;
                std::ptr::copy_nonoverlapping(
                    libc::CMSG_DATA(c),
                    (&mut fd as *mut RawFd).cast::<u8>(),
                    std::mem::size_of::<RawFd>(),
                );
                fds.push(OwnedFd::from_raw_fd(fd));
            }
            c = libc::CMSG_NXTHDR(&msg, c);
        }
        buf[..n as usize].to_vec()
    }
}

/// QMP until `add_client`, then the display on the descriptor, until the scripts end.
fn serve_qmp(listener: UnixListener, script: Script, seen: Arc<Mutex<Seen>>) {
    let (mut s, _) = listener.accept().unwrap();
    s.write_all(b"{\"QMP\": {\"version\": {\"qemu\": {\"micro\": 2, \"minor\": 0, \"major\": 10}, \"package\": \"\"}, \"capabilities\": []}}\r\n").unwrap();
    let mut fds = Vec::new();
    let mut named = None;
    let mut pending = Vec::new();
    loop {
        let got = recv_with_fds(&s, &mut fds);
        if got.is_empty() {
            return;
        }
        pending.extend_from_slice(&got);
        while let Some(nl) = pending.iter().position(|&b| b == b'\n') {
            let line = String::from_utf8_lossy(&pending[..nl]).into_owned();
            pending.drain(..=nl);
            if line.contains("add_client") {
                if let Some(e) = script.add_client_error {
                    let r = format!(
                        "{{\"error\": {{\"class\": \"GenericError\", \"desc\": \"{e}\"}}}}\r\n"
                    );
                    s.write_all(r.as_bytes()).unwrap();
                    continue;
                }
                s.write_all(b"{\"return\": {}}\r\n").unwrap();
                let fd: OwnedFd = named.take().expect("getfd before add_client");
                serve_display(UnixStream::from(fd), script.clone(), seen.clone());
                return;
            }
            if line.contains("getfd") {
                named = fds.pop();
            }
            s.write_all(b"{\"return\": {}}\r\n").unwrap();
        }
    }
}

struct Vm;

#[zbus::interface(name = "org.qemu.Display1.VM")]
impl Vm {
    #[zbus(property)]
    fn name(&self) -> String {
        "fake".into()
    }
}

struct Audio {
    script: Script,
    seen: Arc<Mutex<Seen>>,
    threads: Arc<Mutex<Vec<JoinHandle<()>>>>,
}

#[zbus::interface(name = "org.qemu.Display1.Audio")]
impl Audio {
    fn register_out_listener(&self, listener: ZFd) {
        let (steps, seen, linger) = (
            self.script.out.clone(),
            self.seen.clone(),
            self.script.linger_ms,
        );
        let fd: OwnedFd = listener.into();
        // QEMU answers first, then sets up the listener's connection (as its server).
        self.threads
            .lock()
            .unwrap()
            .push(std::thread::spawn(move || {
                run_listener(UnixStream::from(fd), OUT, steps, seen, linger)
            }));
    }

    fn register_in_listener(&self, listener: ZFd) {
        let (steps, seen) = (self.script.input.clone(), self.seen.clone());
        let fd: OwnedFd = listener.into();
        self.threads
            .lock()
            .unwrap()
            .push(std::thread::spawn(move || {
                run_listener(UnixStream::from(fd), IN, steps, seen, 0)
            }));
    }

    #[zbus(property, name = "NSamples")]
    fn nsamples(&self) -> u32 {
        480
    }
}

fn serve_display(sock: UnixStream, script: Script, seen: Arc<Mutex<Seen>>) {
    let threads = Arc::new(Mutex::new(Vec::new()));
    let mut b = zbus::blocking::connection::Builder::async_io_unix_stream(sock)
        .server(zbus::Guid::generate())
        .unwrap()
        .p2p()
        .serve_at("/org/qemu/Display1", zbus::fdo::ObjectManager)
        .unwrap()
        .serve_at("/org/qemu/Display1/VM", Vm)
        .unwrap();
    let wants_in = !script.input.is_empty();
    if !script.no_audio {
        b = b
            .serve_at(
                "/org/qemu/Display1/Audio",
                Audio {
                    script,
                    seen,
                    threads: threads.clone(),
                },
            )
            .unwrap();
    }
    let conn = b.build().unwrap();
    // Wait for the listeners to register, then for their scripts to end.
    let deadline = Instant::now() + WAIT;
    let want = 1 + wants_in as usize;
    loop {
        let n = threads.lock().unwrap().len();
        if n >= want || Instant::now() > deadline {
            break;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    let hs: Vec<_> = std::mem::take(&mut *threads.lock().unwrap());
    for h in hs {
        h.join().unwrap();
    }
    drop(conn);
}

fn run_listener(
    sock: UnixStream,
    iface: &str,
    steps: Vec<Step>,
    seen: Arc<Mutex<Seen>>,
    linger: u64,
) {
    let conn = zbus::blocking::connection::Builder::async_io_unix_stream(sock)
        .server(zbus::Guid::generate())
        .unwrap()
        .p2p()
        .build()
        .unwrap();
    let path = if iface == OUT {
        "/org/qemu/Display1/AudioOutListener"
    } else {
        "/org/qemu/Display1/AudioInListener"
    };
    // What GDBusProxy does when QEMU creates its listener proxy.
    let props = zbus::blocking::fdo::PropertiesProxy::builder(&conn)
        .destination("org.qemu")
        .unwrap()
        .path(path)
        .unwrap()
        .build()
        .unwrap();
    let iface_name = zbus::names::InterfaceName::try_from(iface).unwrap();
    let all = props.get_all(iface_name).unwrap();
    assert!(all.is_empty());
    seen.lock().unwrap().get_all_answered = true;
    let p = zbus::blocking::Proxy::new(&conn, "org.qemu", path, iface).unwrap();
    for s in steps {
        match s {
            Step::Init(id, rate, ch) => p
                .call_noreply(
                    "Init",
                    &(
                        id,
                        16u8,
                        true,
                        false,
                        rate,
                        ch,
                        2 * ch as u32,
                        2 * ch as u32 * rate,
                        false,
                    ),
                )
                .unwrap(),
            Step::Enable(id, on) => p.call_noreply("SetEnabled", &(id, on)).unwrap(),
            Step::Volume(id, mute, v) => p.call_noreply("SetVolume", &(id, mute, v)).unwrap(),
            Step::Write(id, d) => p.call_noreply("Write", &(id, d)).unwrap(),
            Step::Fini(id) => p.call_noreply("Fini", &(id,)).unwrap(),
            Step::Sleep(ms) => std::thread::sleep(Duration::from_millis(ms)),
            Step::ReadFor {
                id,
                size,
                every,
                ms,
            } => {
                let t0 = Instant::now();
                while t0.elapsed() < Duration::from_millis(ms) {
                    let m = p.call_method("Read", &(id, size)).unwrap();
                    let data: Vec<u8> = m.body().deserialize().unwrap();
                    assert!(data.len() as u64 <= size);
                    let mut s = seen.lock().unwrap();
                    s.read_back.extend_from_slice(&data);
                    s.read_calls += 1;
                    drop(s);
                    std::thread::sleep(Duration::from_millis(every));
                }
                seen.lock().unwrap().read_ms = t0.elapsed().as_millis() as u64;
            }
        }
    }
    std::thread::sleep(Duration::from_millis(linger));
    drop(conn);
}

fn writes(id: u64, audio: &[u8], chunk: usize) -> Vec<Step> {
    audio
        .chunks(chunk)
        .map(|c| Step::Write(id, c.to_vec()))
        .collect()
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

fn wav_rate(path: &Path) -> u32 {
    hound::WavReader::open(path).unwrap().spec().sample_rate
}

#[test]
fn a_voice_is_recorded_bit_exact_with_its_params_in_oss_words() {
    let audio = noise(11, 1920 * 50);
    let mut out = vec![Step::Init(0xa0, 48000, 2), Step::Enable(0xa0, true)];
    out.extend(writes(0xa0, &audio, 1920));
    out.extend([
        Step::Enable(0xa0, false),
        Step::Sleep(700),
        Step::Fini(0xa0),
    ]);
    let mut q = FakeQemu::start(
        "exact",
        Script {
            out,
            ..Script::default()
        },
    );
    let wav = q.dir.join("out.wav");
    let r = Reader::spawn(&["--qmp", q.qmp(), "-x", "-s", "-e", "-f", s(&wav)]);
    q.join();
    let f = r.finish();
    assert!(f.status.success(), "{}", f.stderr);
    assert_eq!(wav_data(&wav), audio);
    assert_eq!(f.stdout, audio);
    assert_eq!(wav_rate(&wav), 48000);
    for want in [
        "SNDCTL_DSP_SPEED    => 48000",
        "SNDCTL_DSP_SETFMT   => AFMT_S16_LE",
        "SNDCTL_DSP_CHANNELS => 2",
        "SNDCTL_DSP_SYNC",
    ] {
        assert!(f.stderr.contains(want), "no {want:?} in:\n{}", f.stderr);
    }
    // QEMU does not see the guest's fragments: no made-up SETFRAGMENT line.
    assert!(!f.stderr.contains("SETFRAGMENT"), "{}", f.stderr);
    assert!(q.seen.lock().unwrap().get_all_answered);
}

#[test]
fn a_format_change_is_a_new_segment_and_a_second_voice_a_second_file() {
    let a = noise(1, 1920 * 10);
    let b = noise(2, 1764 * 10);
    let c = noise(3, 960 * 10);
    let mut out = vec![Step::Init(1, 48000, 2), Step::Enable(1, true)];
    out.extend(writes(1, &a, 1920));
    // mixing-engine=off: the guest's new format is a new voice (Fini, Init with a new id).
    out.extend([
        Step::Enable(1, false),
        Step::Fini(1),
        Step::Init(2, 44100, 2),
    ]);
    out.push(Step::Enable(2, true));
    // Meanwhile another card's voice.
    out.extend([Step::Init(3, 48000, 1), Step::Enable(3, true)]);
    for (x, y) in b.chunks(1764).zip(c.chunks(960)) {
        out.push(Step::Write(2, x.to_vec()));
        out.push(Step::Write(3, y.to_vec()));
    }
    out.extend([Step::Enable(2, false), Step::Enable(3, false)]);
    let mut q = FakeQemu::start(
        "segments",
        Script {
            out,
            ..Script::default()
        },
    );
    let wav = q.dir.join("out.wav");
    let r = Reader::spawn(&["--qmp", q.qmp(), "-x", "-e", "-f", s(&wav)]);
    q.join();
    let f = r.finish();
    assert!(f.status.success(), "{}", f.stderr);
    assert_eq!(wav_data(&wav), a);
    assert_eq!(wav_rate(&wav), 48000);
    let seg2 = q.dir.join("out.seg2.wav");
    assert_eq!(wav_data(&seg2), b);
    assert_eq!(wav_rate(&seg2), 44100);
    let other = q.dir.join("out.1.wav");
    assert_eq!(wav_data(&other), c);
    assert!(
        f.stderr.contains("SNDCTL_DSP_SPEED    => 44100"),
        "{}",
        f.stderr
    );
    assert!(
        f.stderr.contains("SNDCTL_DSP_CHANNELS => 1  [stream 1]"),
        "{}",
        f.stderr
    );
}

#[test]
fn volume_and_mute_are_mixer_lines() {
    let out = vec![
        Step::Init(1, 48000, 2),
        Step::Volume(1, false, vec![255, 255]),
        Step::Volume(1, false, vec![128, 64]),
        Step::Volume(1, true, vec![128, 64]),
    ];
    let mut q = FakeQemu::start(
        "volume",
        Script {
            out,
            ..Script::default()
        },
    );
    let r = Reader::spawn(&["--qmp", q.qmp(), "-x", "-e"]);
    q.join();
    let f = r.finish();
    assert!(f.status.success(), "{}", f.stderr);
    for want in [
        "SOUND_MIXER_WRITE_PCM => 100:100",
        "SOUND_MIXER_WRITE_PCM => 50:25",
        "SOUND_MIXER_WRITE_PCM => muted",
    ] {
        assert!(f.stderr.contains(want), "no {want:?} in:\n{}", f.stderr);
    }
}

#[test]
fn once_ends_when_the_guest_has_stopped_playing() {
    let audio = noise(4, 1920 * 20);
    let mut out = vec![Step::Init(7, 48000, 2), Step::Enable(7, true)];
    out.extend(writes(7, &audio, 1920));
    out.push(Step::Enable(7, false));
    // QEMU stays up long after: the reader must not wait for it.
    let mut q = FakeQemu::start(
        "once",
        Script {
            out,
            linger_ms: 8000,
            ..Script::default()
        },
    );
    let wav = q.dir.join("out.wav");
    let t0 = Instant::now();
    let r = Reader::spawn(&["--qmp", q.qmp(), "-x", "--once", "-f", s(&wav)]);
    let f = r.finish();
    assert!(f.status.success(), "{}", f.stderr);
    assert!(t0.elapsed() < Duration::from_secs(7), "{:?}", t0.elapsed());
    assert_eq!(wav_data(&wav), audio);
    q.join();
}

#[test]
fn qemu_going_away_mid_stream_leaves_finished_files() {
    let audio = noise(5, 1920 * 30);
    let mut out = vec![Step::Init(9, 48000, 2), Step::Enable(9, true)];
    out.extend(writes(9, &audio, 1920));
    let mut q = FakeQemu::start(
        "gone",
        Script {
            out,
            ..Script::default()
        },
    );
    let wav = q.dir.join("out.wav");
    let r = Reader::spawn(&["--qmp", q.qmp(), "-x", "-f", s(&wav)]);
    q.join();
    let f = r.finish();
    assert!(f.status.success(), "{}", f.stderr);
    assert_eq!(wav_data(&wav), audio);
    let r = hound::WavReader::open(&wav).unwrap();
    assert_eq!(r.len() as usize, audio.len() / 2);
}

#[test]
fn inject_is_read_back_by_the_guest_in_real_time() {
    let dir = TempDir::new("inject-src");
    let inj = dir.join("in.wav");
    let audio = noise(6, 48000 * 4 / 2); // 0.5 s of S16 stereo 48 kHz
    {
        let spec = hound::WavSpec {
            channels: 2,
            sample_rate: 48000,
            bits_per_sample: 16,
            sample_format: hound::SampleFormat::Int,
        };
        let mut w = hound::WavWriter::create(&inj, spec).unwrap();
        for s in audio.chunks(2) {
            w.write_sample(i16::from_le_bytes([s[0], s[1]])).unwrap();
        }
        w.finalize().unwrap();
    }
    let out = vec![Step::Init(1, 48000, 2), Step::Sleep(1500)];
    let input = vec![
        Step::Init(0x70, 48000, 2),
        // The injector needs the stream's params before the guest starts reading.
        Step::Sleep(300),
        Step::Enable(0x70, true),
        Step::ReadFor {
            id: 0x70,
            size: 7680,
            every: 10,
            ms: 1000,
        },
        Step::Enable(0x70, false),
    ];
    let mut q = FakeQemu::start(
        "inject",
        Script {
            out,
            input,
            ..Script::default()
        },
    );
    let r = Reader::spawn(&["--qmp", q.qmp(), "-x", "-e", "--inject", s(&inj)]);
    q.join();
    let f = r.finish();
    assert!(f.status.success(), "{}", f.stderr);
    let seen = q.seen.lock().unwrap();
    let got = &seen.read_back;
    // Whole frames, never ahead of real time (plus the reader's 20 ms of headroom).
    assert_eq!(got.len() % 4, 0);
    let limit = (seen.read_ms + 20 + 15) * 192;
    assert!(
        (got.len() as u64) <= limit,
        "{} bytes in {} ms",
        got.len(),
        seen.read_ms
    );
    // Silence until the injected audio is there, then the file, bit for bit, then silence.
    let start = got
        .iter()
        .position(|&b| b != 0)
        .expect("the injected audio arrived");
    let start = start - start % 4;
    assert!(
        got.len() >= start + audio.len(),
        "only {} bytes after the silence",
        got.len() - start
    );
    assert!(
        got[start..start + audio.len()] == audio[..],
        "injected audio differs"
    );
    assert!(got[start + audio.len()..].iter().all(|&b| b == 0));
}

#[test]
fn a_qemu_without_dbus_display_or_audio_is_one_clear_line() {
    let mut q = FakeQemu::start(
        "nodisplay",
        Script {
            add_client_error: Some("D-Bus display is not in use"),
            ..Script::default()
        },
    );
    let f = Reader::spawn(&["--qmp", q.qmp(), "-x", "-e"]).finish();
    assert_eq!(f.status.code(), Some(1), "{}", f.stderr);
    assert_eq!(f.stderr.lines().count(), 1, "{}", f.stderr);
    assert!(f.stderr.contains("-display dbus,p2p=yes"), "{}", f.stderr);
    q.join();

    let mut q = FakeQemu::start(
        "noaudio",
        Script {
            no_audio: true,
            ..Script::default()
        },
    );
    let f = Reader::spawn(&["--qmp", q.qmp(), "-x", "-e"]).finish();
    assert_eq!(f.status.code(), Some(1), "{}", f.stderr);
    assert_eq!(f.stderr.lines().count(), 1, "{}", f.stderr);
    assert!(f.stderr.contains("has no audio"), "{}", f.stderr);
    drop(q.thread.take());

    let dir = TempDir::new("noqmp");
    let f = Reader::spawn(&["--qmp", s(&dir.join("none.sock")), "-x", "-e"]).finish();
    assert_eq!(f.status.code(), Some(1), "{}", f.stderr);
    assert!(
        f.stderr.contains("is QEMU running with -qmp"),
        "{}",
        f.stderr
    );
}

#[test]
fn options_that_do_not_apply_to_qemu_are_refused() {
    for bad in [
        &["-d"][..],
        &["--live"],
        &["-u", "/x"],
        &["--mixer", "pcm=5"],
    ] {
        let mut args = vec!["--qmp", "/nonexistent", "-x", "-e"];
        args.extend_from_slice(bad);
        let f = Reader::spawn(&args).finish();
        assert_eq!(f.status.code(), Some(2), "{bad:?}: {}", f.stderr);
        assert_eq!(f.stderr.lines().count(), 1, "{}", f.stderr);
    }
}

/// The D-Bus path's own ceiling, for `scripts/bench`: the fake QEMU sends 60 s of 48 kHz S16
/// stereo in QEMU's 480-frame Writes as fast as the reader takes them, into `-f /dev/null`
/// and into a WAV file. Prints audio seconds captured per wall second. Not a pass/fail
/// timing: `cargo test --release -p dsproxy-host-reader --test qemu_dbus -- --ignored
/// --nocapture dbus_ceiling`.
#[test]
#[ignore]
fn dbus_ceiling() {
    const SECONDS: usize = 60;
    let chunk = noise(12, 1920);
    for (label, target) in [("discard", "/dev/null"), ("file", "")] {
        let mut out = vec![Step::Init(1, 48000, 2), Step::Enable(1, true)];
        out.extend((0..SECONDS * 100).map(|_| Step::Write(1, chunk.clone())));
        out.push(Step::Enable(1, false));
        let mut q = FakeQemu::start(
            "ceiling",
            Script {
                out,
                ..Script::default()
            },
        );
        let file = q.dir.join("out.wav");
        let target = if target.is_empty() {
            s(&file).to_string()
        } else {
            target.to_string()
        };
        let t0 = Instant::now();
        let r = Reader::spawn(&["--qmp", q.qmp(), "-x", "-f", &target]);
        q.join();
        let f = r.finish();
        let wall = t0.elapsed().as_secs_f64();
        assert!(f.status.success(), "{}", f.stderr);
        if label == "file" {
            assert_eq!(wav_data(&file).len(), SECONDS * 192_000);
        }
        println!(
            "dbus ceiling ({label}): {SECONDS} s of 48 kHz S16 stereo in {wall:.2} s wall = {:.0} audio s per wall s",
            SECONDS as f64 / wall
        );
    }
}
