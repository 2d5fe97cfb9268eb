//! stderr: log lines, `-e`/`-i` lines and the status line, without them trampling
//! each other. The status line ([`crate::status`]) is only drawn when stderr is a terminal; every other
//! line first erases it.

use std::io::Write;
use std::sync::atomic::{AtomicBool, Ordering};

/// Whether the status line is on screen (so the next line must erase it first).
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

/// Redraws the status line.
pub fn progress(s: &str) {
    let mut e = std::io::stderr().lock();
    let _ = write!(e, "\r{s}\x1b[K");
    let _ = e.flush();
    PROGRESS_SHOWN.store(true, Ordering::Relaxed);
}

/// Moves past the status line (at exit), leaving it on screen.
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
