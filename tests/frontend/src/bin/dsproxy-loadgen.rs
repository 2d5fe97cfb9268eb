//! dsproxy-loadgen: plays a signal into a vhost-user sound device the way QEMU and the Linux
//! virtio_snd driver would, and reports how the device paced it.
//!
//! Works with any virtio-snd vhost-user backend: dsproxy-device, or rust-vmm's
//! vhost-device-sound (`--backend null`; see --event-buffers below).

use std::process::ExitCode;
use std::time::{Duration, Instant};

use clap::Parser;
use dsproxy_testfront::flood::{flood, FloodTarget};
use dsproxy_testfront::proto::{status_name, D_OUTPUT, S_OK};
use dsproxy_testfront::{play_many, signal, FrontendOpts, PlayOpts, PlayStream, SndFrontend};
use dsproxy_wire::{PcmFormat, PcmRate, PcmShape};

#[derive(Parser, Debug)]
#[command(
    version,
    about = "Plays N seconds of audio into a vhost-user virtio-snd device like QEMU + Linux would, and reports completion timing",
    after_help = "Examples:\n  \
        dsproxy-loadgen --socket /tmp/snd.sock --seconds 5\n  \
        dsproxy-loadgen --socket /tmp/peer.sock --rate 44100 --format s16 --channels 2 --event-buffers 0\n\n\
        rust-vmm's vhost-device-sound 0.3 busy-loops on its event queue when EVENT_IDX is\n\
        negotiated and event buffers are posted; give it --event-buffers 0 (or --no-event-idx)."
)]
struct Args {
    /// The device's vhost-user socket.
    #[arg(long)]
    socket: std::path::PathBuf,
    /// Seconds of audio per stream (rounded up to whole periods).
    #[arg(long, default_value_t = 5.0)]
    seconds: f64,
    /// Sample rate in Hz (must be one the device offers).
    #[arg(long, default_value_t = 48000)]
    rate: u32,
    /// Sample format: u8, s16, s24, s32, float, mu_law, a_law, ...
    #[arg(long, default_value = "s16")]
    format: String,
    #[arg(long, default_value_t = 2)]
    channels: u8,
    /// Frames per period (one TX message).
    #[arg(long, default_value_t = 1024)]
    period_frames: u32,
    /// Periods per buffer (= TX messages in flight per stream).
    #[arg(long, default_value_t = 4)]
    periods: u32,
    /// Output streams to play at once (the first K output streams of the device).
    #[arg(long, default_value_t = 1)]
    streams: usize,
    /// Generate at most this many seconds of the signal (whole periods) and play it over and
    /// over to make up --seconds: long runs without holding all of their audio in memory.
    #[arg(long, value_name = "S")]
    loop_seconds: Option<f64>,
    /// lcg (pseudo-random bytes), sine (440 Hz) or silence.
    #[arg(long, default_value = "sine")]
    signal: String,
    /// Virtqueue size.
    #[arg(long, default_value_t = 64)]
    queue_size: u16,
    /// Event buffers to post (Linux posts a queue's worth).
    #[arg(long, default_value_t = 16)]
    event_buffers: usize,
    /// Do not negotiate VIRTIO_RING_F_EVENT_IDX.
    #[arg(long)]
    no_event_idx: bool,
    /// Do not negotiate VIRTIO_SND_F_CTLS.
    #[arg(long)]
    no_ctls: bool,
    /// Also report the CPU time this process id (the daemon) used during the run.
    #[arg(long)]
    daemon_pid: Option<u32>,
    /// Print one JSON object instead of text.
    #[arg(long)]
    json: bool,
    /// Also print one line per completed buffer: stream, index, ideal and actual completion
    /// time since START (ms), their difference, and the latency_bytes the device reported.
    #[arg(long)]
    dump_completions: bool,
    /// Instead of playing: a hostile driver floods this queue (control, event, tx or rx) for
    /// --seconds, making one valid chain available again and again, and reports the peak RSS
    /// of --daemon-pid.
    #[arg(long)]
    flood: Option<String>,
    /// A label for the figures (e.g. the device's name).
    #[arg(long, default_value = "")]
    label: String,
}

#[derive(Debug, thiserror::Error)]
enum LoadgenError {
    #[error("{0}")]
    Usage(String),
    #[error(transparent)]
    Front(#[from] dsproxy_testfront::FrontError),
}

/// User + system CPU time of this process.
fn self_cpu() -> Duration {
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: getrusage fills the struct we pass.
    let rc = unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut ru) };
    if rc != 0 {
        return Duration::ZERO;
    }
    let tv = |t: libc::timeval| Duration::new(t.tv_sec as u64, t.tv_usec as u32 * 1000);
    tv(ru.ru_utime) + tv(ru.ru_stime)
}

/// User + system CPU time of another process, from /proc/PID/stat.
fn proc_cpu(pid: u32) -> Option<Duration> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the parenthesised command name; utime and stime are fields 14 and 15.
    let rest = &s[s.rfind(')')? + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ut: u64 = f.get(11)?.parse().ok()?;
    let st: u64 = f.get(12)?.parse().ok()?;
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    let hz = if hz > 0 { hz as u64 } else { 100 };
    Some(Duration::from_nanos((ut + st) * 1_000_000_000 / hz))
}

/// The peak resident set size of process `pid` in KiB (VmHWM).
fn peak_rss_kib(pid: u32) -> Option<u64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    s.lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
}

/// `--flood`: see [`dsproxy_testfront::flood`].
fn run_flood(a: &Args, queue: &str) -> Result<(), LoadgenError> {
    let target = FloodTarget::parse(queue).ok_or_else(|| {
        LoadgenError::Usage(format!(
            "--flood {queue:?}: not one of control, event, tx, rx"
        ))
    })?;
    let opts = FrontendOpts {
        queue_size: a.queue_size,
        want_ctls: !a.no_ctls,
        want_event_idx: !a.no_event_idx,
        event_buffers: 0,
        ..FrontendOpts::default()
    };
    let mut fe = SndFrontend::connect(&a.socket, opts)?;
    let before = a.daemon_pid.and_then(peak_rss_kib);
    let r = flood(&mut fe, target, Duration::from_secs_f64(a.seconds), || {})?;
    let peak = a.daemon_pid.and_then(peak_rss_kib);
    let kib = |v: Option<u64>| v.map_or_else(|| "?".to_string(), |k| k.to_string());
    println!(
        "flood {:<8} queue size {:>5}: {:>9} chains in {:.1} s, daemon peak RSS {} KiB (before: {} KiB)",
        target.name(),
        a.queue_size,
        r.posted,
        r.elapsed.as_secs_f64(),
        kib(peak),
        kib(before)
    );
    drop(fe.disconnect());
    Ok(())
}

fn run(a: &Args) -> Result<(), LoadgenError> {
    if let Some(q) = &a.flood {
        return run_flood(a, q);
    }
    let format = PcmFormat::from_name(&a.format)
        .ok_or_else(|| LoadgenError::Usage(format!("unknown format {:?}", a.format)))?;
    let rate = PcmRate::from_hz(a.rate)
        .ok_or_else(|| LoadgenError::Usage(format!("{} Hz is not a virtio-snd rate", a.rate)))?;
    let shape = PcmShape {
        format,
        rate,
        channels: a.channels,
    };
    let frame = shape
        .frame_bytes()
        .ok_or_else(|| LoadgenError::Usage(format!("{format} has no byte size")))?;
    if a.period_frames == 0 || a.periods == 0 || a.streams == 0 || a.seconds <= 0.0 {
        return Err(LoadgenError::Usage(
            "--period-frames, --periods, --streams and --seconds must be positive".into(),
        ));
    }
    let period_bytes = a.period_frames * frame;
    let buffer_bytes = period_bytes * a.periods;
    // Whole periods, as an ALSA application writing period-sized chunks would.
    let whole_periods = |seconds: f64| {
        ((seconds * a.rate as f64).round() as usize).div_ceil(a.period_frames as usize)
            * a.period_frames as usize
    };
    let frames = whole_periods(a.seconds);
    let signal_frames = match a.loop_seconds {
        Some(s) if s > 0.0 => whole_periods(s).min(frames),
        Some(_) => {
            return Err(LoadgenError::Usage(
                "--loop-seconds must be positive".into(),
            ))
        }
        None => frames,
    };
    let data = match a.signal.as_str() {
        "lcg" => signal::lcg_bytes(1, signal_frames * frame as usize),
        "sine" => signal::sine(&shape, 440.0, signal_frames),
        "silence" => signal::silence(&shape, signal_frames),
        s => return Err(LoadgenError::Usage(format!("unknown signal {s:?}"))),
    };

    let opts = FrontendOpts {
        queue_size: a.queue_size,
        want_ctls: !a.no_ctls,
        want_event_idx: !a.no_event_idx,
        event_buffers: a.event_buffers,
        // Enough room for every stream's ring plus headroom.
        mem_size: ((buffer_bytes as usize * a.streams * 2) + (8 << 20)).next_power_of_two(),
        ..FrontendOpts::default()
    };
    let mut fe = SndFrontend::connect(&a.socket, opts)?;
    let infos = fe.pcm_info()?;
    let outputs: Vec<u32> = infos
        .iter()
        .enumerate()
        .filter(|(_, i)| i.direction == D_OUTPUT)
        .map(|(n, _)| n as u32)
        .take(a.streams)
        .collect();
    if outputs.len() < a.streams {
        return Err(LoadgenError::Usage(format!(
            "the device has {} output streams, --streams asked for {}",
            outputs.len(),
            a.streams
        )));
    }
    for &s in &outputs {
        let i = &infos[s as usize];
        if i.formats & format.mask_bit() == 0 || i.rates & rate.mask_bit() == 0 {
            return Err(LoadgenError::Usage(format!(
                "stream {s} does not offer {shape} (formats {:#x}, rates {:#x})",
                i.formats, i.rates
            )));
        }
        let st = fe.set_params(
            s,
            buffer_bytes,
            period_bytes,
            a.channels,
            format.code(),
            rate.code(),
        )?;
        if st != S_OK {
            return Err(LoadgenError::Usage(format!(
                "SET_PARAMS on stream {s} answered {}",
                status_name(st)
            )));
        }
        let st = fe.prepare(s)?;
        if st != S_OK {
            return Err(LoadgenError::Usage(format!(
                "PREPARE on stream {s} answered {}",
                status_name(st)
            )));
        }
    }

    let cpu0 = self_cpu();
    let dcpu0 = a.daemon_pid.and_then(proc_cpu);
    let wall0 = Instant::now();
    let streams: Vec<PlayStream<'_>> = outputs
        .iter()
        .map(|&stream| PlayStream {
            stream,
            data: &data,
        })
        .collect();
    let mut popts = PlayOpts::new(period_bytes as usize);
    popts.timeout = Duration::from_secs_f64(a.seconds * 4.0 + 10.0);
    if signal_frames < frames {
        popts.bytes_per_stream = Some(frames as u64 * frame as u64);
    }
    let reports = play_many(&mut fe, &streams, &popts)?;
    let wall = wall0.elapsed();
    let cpu = self_cpu().saturating_sub(cpu0);
    let dcpu = match (dcpu0, a.daemon_pid.and_then(proc_cpu)) {
        (Some(x), Some(y)) => Some(y.saturating_sub(x)),
        _ => None,
    };
    for &s in &outputs {
        let st = fe.release(s)?;
        if st != S_OK {
            eprintln!(
                "warning: RELEASE of stream {s} answered {}",
                status_name(st)
            );
        }
    }
    let violations = fe.violations().to_vec();
    let late = fe.late_notifications();
    let kicks_suppressed = fe.kicks_suppressed();
    let _ = fe.disconnect();

    if a.dump_completions {
        println!("# stream index ideal_ms actual_ms diff_ms latency_bytes");
        for r in &reports {
            let mut cum = 0u64;
            for (i, c) in r.completions.iter().enumerate() {
                cum = (cum + period_bytes as u64).min(r.bytes);
                let ideal = cum as f64 * 1e3 / r.byte_rate.max(1) as f64;
                let actual = c.completed_at.duration_since(r.start_sent).as_secs_f64() * 1e3;
                println!(
                    "{} {i} {ideal:.3} {actual:.3} {:+.3} {}",
                    r.stream,
                    actual - ideal,
                    c.latency_bytes
                );
            }
        }
    }
    let total_bytes: u64 = reports.iter().map(|r| r.bytes).sum();
    let bad: usize = reports.iter().map(|r| r.bad_statuses().len()).sum();
    if a.json {
        let mut per = Vec::new();
        for r in &reports {
            let t = r.timing(period_bytes as usize);
            let f = |x: Option<f64>| {
                x.map(|v| format!("{v:.3}"))
                    .unwrap_or_else(|| "null".into())
            };
            per.push(format!(
                "{{\"stream\":{},\"bytes\":{},\"buffers\":{},\"elapsed_ms\":{},\"audio_ms\":{},\"interval_mean_ms\":{},\"interval_stddev_ms\":{},\"period_ms\":{},\"max_jitter_ms\":{},\"jitter_p50_ms\":{},\"jitter_p99_ms\":{},\"drift_end_ms\":{},\"drift_ppm\":{},\"bad_status\":{}}}",
                r.stream,
                r.bytes,
                r.completions.len(),
                f(t.map(|t| t.elapsed.as_secs_f64() * 1e3)),
                f(t.map(|t| t.audio.as_secs_f64() * 1e3)),
                f(t.map(|t| t.interval_mean_ms)),
                f(t.map(|t| t.interval_stddev_ms)),
                f(t.map(|t| t.period_ms)),
                f(t.map(|t| t.max_jitter_ms)),
                f(t.map(|t| t.jitter_p50_ms)),
                f(t.map(|t| t.jitter_p99_ms)),
                f(t.map(|t| t.drift_end_ms)),
                f(t.and_then(|t| t.drift_ppm)),
                r.bad_statuses().len()
            ));
        }
        println!(
            "{{\"label\":{:?},\"rate\":{},\"format\":{:?},\"channels\":{},\"period_bytes\":{},\"buffer_bytes\":{},\"streams\":{},\"bytes\":{},\"wall_ms\":{:.3},\"cpu_ms\":{:.3},\"daemon_cpu_ms\":{},\"bad_status\":{},\"violations\":{},\"late_notifications\":{},\"kicks_suppressed\":{},\"per_stream\":[{}]}}",
            a.label,
            a.rate,
            format.to_string(),
            a.channels,
            period_bytes,
            buffer_bytes,
            a.streams,
            total_bytes,
            wall.as_secs_f64() * 1e3,
            cpu.as_secs_f64() * 1e3,
            dcpu.map(|d| format!("{:.3}", d.as_secs_f64() * 1e3)).unwrap_or_else(|| "null".into()),
            bad,
            violations.len(),
            late,
            kicks_suppressed,
            per.join(",")
        );
    } else {
        let label = if a.label.is_empty() {
            a.socket.display().to_string()
        } else {
            a.label.clone()
        };
        println!("device:        {label}");
        println!(
            "stream shape:  {shape}, period {period_bytes} B, buffer {buffer_bytes} B, {} stream(s)",
            a.streams
        );
        println!("bytes:         {total_bytes}");
        println!("wall time:     {:.3} s", wall.as_secs_f64());
        println!("loadgen CPU:   {:.1} ms", cpu.as_secs_f64() * 1e3);
        if let Some(d) = dcpu {
            println!("daemon CPU:    {:.1} ms", d.as_secs_f64() * 1e3);
        }
        println!("kicks left out: {kicks_suppressed} (the device polled: VRING_USED_F_NO_NOTIFY)");
        for r in &reports {
            match r.timing(period_bytes as usize) {
                Some(t) => println!(
                    "stream {}: {} buffers in {:.3} s for {:.3} s of audio; interval mean {:.3} ms (ideal {:.3}), stddev from ideal {:.3} ms; jitter p50/p99/max {:.3}/{:.3}/{:.3} ms; drift at end {:+.3} ms ({} ppm)",
                    r.stream,
                    r.completions.len(),
                    t.elapsed.as_secs_f64(),
                    t.audio.as_secs_f64(),
                    t.interval_mean_ms,
                    t.period_ms,
                    t.interval_stddev_ms,
                    t.jitter_p50_ms,
                    t.jitter_p99_ms,
                    t.max_jitter_ms,
                    t.drift_end_ms,
                    t.drift_ppm
                        .map(|p| format!("{p:+.2}"))
                        .unwrap_or_else(|| "n/a".into())
                ),
                None => println!("stream {}: no completions", r.stream),
            }
        }
        if bad > 0 {
            println!("buffers with a non-OK status: {bad}");
        }
        if !violations.is_empty() {
            println!("protocol violations seen: {}", violations.len());
            for v in violations.iter().take(5) {
                println!("  {v}");
            }
        }
        if late > 0 {
            println!("completions found without a notification: {late}");
        }
    }
    if bad > 0 || !violations.is_empty() {
        return Err(LoadgenError::Usage(format!(
            "{bad} buffers failed and {} protocol violations were seen",
            violations.len()
        )));
    }
    Ok(())
}

fn main() -> ExitCode {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("warn")).init();
    let a = Args::parse();
    match run(&a) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("dsproxy-loadgen: {e}");
            if let LoadgenError::Front(dsproxy_testfront::FrontError::Timeout { .. }) = e {
                eprintln!(
                    "hint: a device that never answers may be spinning on its event queue; try --event-buffers 0"
                );
            }
            ExitCode::FAILURE
        }
    }
}
