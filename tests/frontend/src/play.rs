//! Playing a signal the way Linux's virtio_snd driver does: the ALSA ring is sliced into
//! period-sized TX messages, the ring is kept full (periods in flight = buffer / period), and
//! each completed message is one period elapsed, which lets the application write the next.

use std::time::{Duration, Instant};

use crate::dialect::Dialect;
use crate::error::FrontError;
use crate::frontend::{Completion, SndFrontend, Token};
use crate::proto::{PCM_STATUS_LEN, S_BAD_MSG, S_NOT_SUPP};

/// One stream to play.
#[derive(Debug, Clone, Copy)]
pub struct PlayStream<'a> {
    pub stream: u32,
    pub data: &'a [u8],
}

/// How to play.
#[derive(Debug, Clone)]
pub struct PlayOpts {
    /// Bytes per TX message.
    pub period_bytes: usize,
    /// Queue the first buffer's worth before START (ALSA's start threshold: the application
    /// fills the ring, then the stream starts).
    pub prefill: bool,
    /// Send STOP once every buffer has completed (a drain).
    pub stop: bool,
    /// Give up if the whole play takes longer than this.
    pub timeout: Duration,
    /// Stop streaming at the first completion whose status is BAD_MSG or NOT_SUPP, or whose
    /// used length is shorter than the status (which aero's driver counts as BAD_MSG): no
    /// more buffers, no STOP, and play returns `FrontError::Stopped`.
    pub stop_on_error: bool,
    /// Play each stream's data over and over until this many bytes have been sent (a long
    /// run without holding all of its audio in memory); the data must then be whole periods.
    /// None: the data once.
    pub bytes_per_stream: Option<u64>,
}

impl PlayOpts {
    pub fn new(period_bytes: usize) -> PlayOpts {
        PlayOpts {
            period_bytes,
            prefill: true,
            stop: true,
            timeout: Duration::from_secs(60),
            stop_on_error: false,
            bytes_per_stream: None,
        }
    }
}

/// What happened to one stream.
#[derive(Debug, Clone)]
pub struct PlayReport {
    pub stream: u32,
    pub bytes: u64,
    /// Bytes per second of the stream's parameters.
    pub byte_rate: u64,
    /// Just before START was sent (the device's clock starts between this and `start_acked`).
    pub start_sent: Instant,
    pub start_acked: Instant,
    pub start_status: u32,
    /// STOP's status, if one was sent.
    pub stop_status: Option<u32>,
    /// Every TX completion, in completion order.
    pub completions: Vec<Completion>,
    /// VIRTIO_SND_S_OK in the frontend's dialect.
    pub ok_status: u32,
}

/// Completion timing against the ideal clock.
#[derive(Debug, Clone, Copy)]
pub struct Timing {
    /// From START to the last completion.
    pub elapsed: Duration,
    /// How long the audio lasts at the stream's rate.
    pub audio: Duration,
    /// Mean of the intervals between completions, in ms.
    pub interval_mean_ms: f64,
    /// Standard deviation of each interval from its ideal (the duration of that buffer), ms.
    pub interval_stddev_ms: f64,
    /// The ideal interval (one period), in ms.
    pub period_ms: f64,
    /// The largest |actual - ideal| completion time over all buffers, in ms, where buffer i
    /// ideally completes when the bytes up to its end have played.
    pub max_jitter_ms: f64,
    /// The median and 99th percentile of the same |actual - ideal|, in ms.
    pub jitter_p50_ms: f64,
    pub jitter_p99_ms: f64,
    /// Last completion minus the ideal end, in ms (positive: late).
    pub drift_end_ms: f64,
    /// The rate of the device's completions against the stream's rate, in parts per million
    /// (positive: slow): the least-squares slope of actual against ideal completion times,
    /// so a constant start-up latency does not count. None with fewer than two completions.
    pub drift_ppm: Option<f64>,
}

impl PlayReport {
    /// Completions whose status was not OK (in the dialect the stream was played in).
    pub fn bad_statuses(&self) -> Vec<(Token, u32)> {
        self.completions
            .iter()
            .filter(|c| c.status != self.ok_status)
            .map(|c| (c.token, c.status))
            .collect()
    }

    /// Timing figures (None without completions or byte rate).
    pub fn timing(&self, period_bytes: usize) -> Option<Timing> {
        let last = self.completions.last()?;
        if self.byte_rate == 0 {
            return None;
        }
        let t0 = self.start_sent;
        let ns = |bytes: u64| {
            Duration::from_nanos((bytes as u128 * 1_000_000_000 / self.byte_rate as u128) as u64)
        };
        let secs = |t: Instant| t.saturating_duration_since(t0).as_secs_f64();
        let mut intervals = Vec::new();
        let mut deviations = Vec::new();
        let mut prev = t0;
        let mut cum = 0u64;
        let mut max_jitter = 0f64;
        let mut jitters = Vec::with_capacity(self.completions.len());
        let mut points = Vec::with_capacity(self.completions.len());
        // Completions are in submission order on a single stream; the bytes of each are the
        // period (the last may be shorter).
        let mut remaining = self.bytes;
        for c in &self.completions {
            let b = (period_bytes as u64).min(remaining);
            remaining -= b;
            cum += b;
            let ideal = ns(cum).as_secs_f64();
            let actual = secs(c.completed_at);
            max_jitter = max_jitter.max((actual - ideal).abs());
            jitters.push((actual - ideal).abs());
            points.push((ideal, actual));
            let interval = c.completed_at.saturating_duration_since(prev).as_secs_f64();
            intervals.push(interval);
            deviations.push(interval - ns(b).as_secs_f64());
            prev = c.completed_at;
        }
        // The first interval runs from START and is a period long, like the rest.
        let n = intervals.len() as f64;
        let mean = intervals.iter().sum::<f64>() / n;
        let var = deviations.iter().map(|x| x.powi(2)).sum::<f64>() / n;
        let audio = ns(self.bytes);
        let elapsed = last.completed_at.saturating_duration_since(t0);
        jitters.sort_by(f64::total_cmp);
        let percentile = |q: f64| {
            let i = ((jitters.len() as f64 - 1.0) * q).round() as usize;
            jitters.get(i).copied().unwrap_or(0.0)
        };
        Some(Timing {
            elapsed,
            audio,
            interval_mean_ms: mean * 1e3,
            interval_stddev_ms: var.sqrt() * 1e3,
            period_ms: ns(period_bytes as u64).as_secs_f64() * 1e3,
            max_jitter_ms: max_jitter * 1e3,
            jitter_p50_ms: percentile(0.5) * 1e3,
            jitter_p99_ms: percentile(0.99) * 1e3,
            drift_end_ms: (elapsed.as_secs_f64() - audio.as_secs_f64()) * 1e3,
            drift_ppm: slope(&points).map(|s| (s - 1.0) * 1e6),
        })
    }
}

/// The least-squares slope of y on x; None without two distinct x.
fn slope(points: &[(f64, f64)]) -> Option<f64> {
    let n = points.len() as f64;
    let (sx, sy) = points
        .iter()
        .fold((0.0, 0.0), |(a, b), (x, y)| (a + x, b + y));
    let (mx, my) = (sx / n, sy / n);
    let (sxy, sxx) = points.iter().fold((0.0, 0.0), |(a, b), (x, y)| {
        (a + (x - mx) * (y - my), b + (x - mx) * (x - mx))
    });
    (points.len() >= 2 && sxx > 0.0).then(|| sxy / sxx)
}

struct Playing<'a> {
    s: PlayStream<'a>,
    limit: usize,
    /// Bytes to send in all.
    total: u64,
    /// Bytes sent so far.
    next: u64,
    in_flight: Vec<Token>,
    report: PlayReport,
}

/// Plays one stream (already SET_PARAMS'd and PREPAREd) and returns its report.
pub fn play(
    fe: &mut SndFrontend,
    stream: u32,
    data: &[u8],
    period_bytes: usize,
) -> Result<PlayReport, FrontError> {
    let mut r = play_many(
        fe,
        &[PlayStream { stream, data }],
        &PlayOpts::new(period_bytes),
    )?;
    Ok(r.remove(0))
}

/// Plays several streams at once on the shared TX queue. Each stream must have parameters
/// (SET_PARAMS through this frontend) and be prepared; periods in flight per stream =
/// buffer_bytes / period_bytes of its parameters.
pub fn play_many(
    fe: &mut SndFrontend,
    streams: &[PlayStream<'_>],
    opts: &PlayOpts,
) -> Result<Vec<PlayReport>, FrontError> {
    if opts.period_bytes == 0 {
        return Err(FrontError::Usage("period of 0 bytes".into()));
    }
    let now = Instant::now();
    let mut ps = Vec::with_capacity(streams.len());
    for s in streams {
        let p = fe.params(s.stream).ok_or_else(|| {
            FrontError::Usage(format!("stream {} has no parameters set", s.stream))
        })?;
        let limit = (p.buffer_bytes as usize / opts.period_bytes).max(1);
        let total = match opts.bytes_per_stream {
            None => s.data.len() as u64,
            Some(_) if s.data.is_empty() || s.data.len() % opts.period_bytes != 0 => {
                return Err(FrontError::Usage(format!(
                    "looping stream {}: {} bytes of data are not whole {}-byte periods",
                    s.stream,
                    s.data.len(),
                    opts.period_bytes
                )))
            }
            Some(n) => n,
        };
        ps.push(Playing {
            s: *s,
            limit,
            total,
            next: 0,
            in_flight: Vec::new(),
            report: PlayReport {
                stream: s.stream,
                bytes: total,
                byte_rate: p.byte_rate().unwrap_or(0),
                start_sent: now,
                start_acked: now,
                start_status: 0,
                stop_status: None,
                completions: Vec::new(),
                ok_status: fe.dialect().ok(),
            },
        });
    }
    let deadline = Instant::now() + opts.timeout;

    let refill = |fe: &mut SndFrontend, ps: &mut [Playing<'_>]| -> Result<(), FrontError> {
        for p in ps.iter_mut() {
            while p.in_flight.len() < p.limit && p.next < p.total {
                // Within the data when it loops: its length is whole periods.
                let at = (p.next % p.s.data.len() as u64) as usize;
                let left = usize::try_from(p.total - p.next).unwrap_or(usize::MAX);
                let end = (at + opts.period_bytes).min(p.s.data.len()).min(at + left);
                match fe.push_tx(p.s.stream, &p.s.data[at..end]) {
                    Ok(t) => {
                        p.in_flight.push(t);
                        p.next += (end - at) as u64;
                    }
                    // The shared ring is full: wait for completions.
                    Err(FrontError::QueueFull { .. }) => return Ok(()),
                    Err(e) => return Err(e),
                }
            }
        }
        Ok(())
    };

    if opts.prefill {
        refill(fe, &mut ps)?;
    }
    for p in ps.iter_mut() {
        p.report.start_sent = Instant::now();
        p.report.start_status = fe.start(p.s.stream)?;
        p.report.start_acked = Instant::now();
        if p.report.start_status != fe.dialect().ok() {
            return Err(FrontError::Status {
                what: format!("START of stream {}", p.s.stream),
                status: p.report.start_status,
            });
        }
    }
    loop {
        refill(fe, &mut ps)?;
        if ps
            .iter()
            .all(|p| p.in_flight.is_empty() && p.next >= p.total)
        {
            break;
        }
        let now = Instant::now();
        if now >= deadline {
            let left: usize = ps.iter().map(|p| p.in_flight.len()).sum();
            return Err(FrontError::Timeout {
                what: format!("{left} TX buffers to complete"),
                after: opts.timeout,
            });
        }
        for c in fe.wait_used((deadline - now).min(Duration::from_secs(1)))? {
            let Some(p) = ps.iter_mut().find(|p| p.in_flight.contains(&c.token)) else {
                log::warn!("completion of token {} that play() did not submit", c.token);
                continue;
            };
            p.in_flight.retain(|t| *t != c.token);
            if opts.stop_on_error {
                if let Some(why) = fatal(fe.dialect(), &c) {
                    return Err(FrontError::Stopped {
                        stream: p.s.stream,
                        completed: p.report.completions.len(),
                        why,
                    });
                }
            }
            if c.status != fe.dialect().ok() {
                log::warn!(
                    "stream {}: TX buffer completed with {}",
                    p.s.stream,
                    fe.dialect().status_name(c.status)
                );
            }
            p.report.completions.push(c);
        }
    }
    if opts.stop {
        for p in ps.iter_mut() {
            p.report.stop_status = Some(fe.stop(p.s.stream)?);
        }
    }
    Ok(ps.into_iter().map(|p| p.report).collect())
}

/// Why a completion ends streaming for a driver that stops on errors (aero's): BAD_MSG or
/// NOT_SUPP, or a used length too short to hold the status.
fn fatal(dialect: Dialect, c: &Completion) -> Option<String> {
    if (c.len as usize) < PCM_STATUS_LEN {
        return Some(format!(
            "used length {} is shorter than the {PCM_STATUS_LEN}-byte status",
            c.len
        ));
    }
    match dialect.decode(c.status) {
        Some(S_BAD_MSG) | Some(S_NOT_SUPP) => Some(format!(
            "the device answered {}",
            dialect.status_name(c.status)
        )),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::slope;

    #[test]
    fn slope_ignores_a_constant_offset() {
        // A device 20 ppm slow that also answers 3 ms late throughout.
        let pts: Vec<(f64, f64)> = (0..1000)
            .map(|i| {
                let x = i as f64 * 0.02;
                (x, x * 1.000_02 + 0.003)
            })
            .collect();
        let ppm = (slope(&pts).unwrap() - 1.0) * 1e6;
        assert!((ppm - 20.0).abs() < 1e-3, "{ppm}");
        assert_eq!(slope(&pts[..1]), None);
        assert_eq!(slope(&[(1.0, 1.0), (1.0, 2.0)]), None);
    }
}
