//! SIGINT and SIGTERM end a recording cleanly: files are finalized and the exit status is 0.
//!
//! The signals are blocked in every thread (the mask is set before any thread starts, and
//! threads inherit it) and taken synchronously by one thread with `sigwait`, which tells the
//! main loop through a callback. No async-signal-safety puzzles: the handler is ordinary
//! code. A second signal while the first is being handled ends the process at once (the
//! headers are patched every second, so even then little is lost).

use std::io;

fn termination_set() -> libc::sigset_t {
    // SAFETY: sigemptyset/sigaddset initialize and fill a local set.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, libc::SIGINT);
        libc::sigaddset(&mut set, libc::SIGTERM);
        set
    }
}

/// Blocks SIGINT and SIGTERM in the calling thread and every thread it starts afterwards.
/// Call first thing in `main`.
pub fn block_termination_signals() -> io::Result<()> {
    let set = termination_set();
    // SAFETY: set is initialized; the old mask is not needed.
    let rc = unsafe { libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut()) };
    if rc != 0 {
        return Err(io::Error::from_raw_os_error(rc));
    }
    Ok(())
}

/// Starts the thread that waits for the signals and calls `on_signal` with the first one.
pub fn spawn_waiter(on_signal: impl Fn(i32) + Send + 'static) -> io::Result<()> {
    std::thread::Builder::new()
        .name("signals".into())
        .spawn(move || {
            let set = termination_set();
            let mut count = 0;
            loop {
                let mut sig: libc::c_int = 0;
                // SAFETY: set is initialized and blocked in this thread.
                if unsafe { libc::sigwait(&set, &mut sig) } != 0 {
                    continue;
                }
                count += 1;
                if count == 1 {
                    on_signal(sig);
                } else {
                    crate::console::note("second signal: exiting without finishing up");
                    std::process::exit(130);
                }
            }
        })
        .map(|_| ())
}
