//! stderr: log lines, `-e`/`-i` lines and the running-time line, without them trampling
//! each other. The running-time line is only drawn when stderr is a terminal; every other
//! line first erases it.

use std::io::Write;
use std::sync::atomic::{AtomicBool, Ordering};

/// Whether the running-time line is on screen (so the next line must erase it first).
static PROGRESS_SHOWN: AtomicBool = AtomicBool::new(false);

/// The program name that prefixes diagnostics.
pub const PROG: &str = "dsproxy-host-reader";

/// Whether stderr is a terminal.
pub fn stderr_is_tty() -> bool {
    // SAFETY: isatty only inspects the descriptor.
    unsafe { libc::isatty(libc::STDERR_FILENO) == 1 }
}

fn erase_progress(w: &mut impl Write) {
    if PROGRESS_SHOWN.swap(false, Ordering::Relaxed) {
        let _ = w.write_all(b"\r\x1b[K");
    }
}

/// Prints a line on stderr (an `-e`/`-i` line: no prefix).
pub fn line(s: &str) {
    let mut e = std::io::stderr().lock();
    erase_progress(&mut e);
    let _ = writeln!(e, "{s}");
}

/// Prints a diagnostic on stderr, prefixed with the program name.
pub fn note(s: &str) {
    line(&format!("{PROG}: {s}"));
}

/// Redraws the running-time line.
pub fn progress(s: &str) {
    let mut e = std::io::stderr().lock();
    let _ = write!(e, "\r{s}\x1b[K");
    let _ = e.flush();
    PROGRESS_SHOWN.store(true, Ordering::Relaxed);
}

/// Moves past the running-time line (at exit), leaving it on screen.
pub fn finish_progress() {
    if PROGRESS_SHOWN.swap(false, Ordering::Relaxed) {
        let _ = writeln!(std::io::stderr());
    }
}

/// Sets up `log` through env_logger (RUST_LOG; warnings by default), erasing the running-time
/// line before each message.
pub fn init_logging() {
    let env = env_logger::Env::default().default_filter_or("warn");
    let _ = env_logger::Builder::from_env(env)
        .format(|buf, rec| {
            erase_progress(buf);
            match rec.level() {
                log::Level::Warn | log::Level::Error => writeln!(buf, "{PROG}: {}", rec.args()),
                l => writeln!(
                    buf,
                    "{PROG} [{}]: {}",
                    l.as_str().to_lowercase(),
                    rec.args()
                ),
            }
        })
        .try_init();
}

/// `00:01:23.45  48000 Hz S16_LE 2ch  15.3 MiB`
pub fn progress_text(duration_ns: u128, shape: &str, bytes: u64) -> String {
    let cs = duration_ns / 10_000_000;
    let (h, m, s, c) = (cs / 360_000, (cs / 6000) % 60, (cs / 100) % 60, cs % 100);
    format!(
        "{h:02}:{m:02}:{s:02}.{c:02}  {shape}  {:.1} MiB",
        bytes as f64 / (1024.0 * 1024.0)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn progress_format() {
        let ns = (83u128 * 1000 + 450) * 1_000_000;
        assert_eq!(
            progress_text(ns, "48000 Hz S16_LE 2ch", 16_043_212),
            "00:01:23.45  48000 Hz S16_LE 2ch  15.3 MiB"
        );
        assert_eq!(
            progress_text(10 * 3600 * 1_000_000_000, "x", 0),
            "10:00:00.00  x  0.0 MiB"
        );
    }
}
