//! Running a vhost-user sound daemon (dsproxy-device, or the rust-vmm peer) as a child
//! process in a private temporary directory, killed when dropped.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use crate::error::DaemonError;

static COUNTER: AtomicU32 = AtomicU32::new(0);

/// A private directory under the system temp dir, removed on drop.
pub struct TempDir {
    path: PathBuf,
}

impl TempDir {
    pub fn new(tag: &str) -> std::io::Result<TempDir> {
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0);
        let path = std::env::temp_dir().join(format!(
            "dsproxy-{tag}-{}-{n}-{nanos:08x}",
            std::process::id()
        ));
        std::fs::create_dir_all(&path)?;
        Ok(TempDir { path })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.path);
    }
}

/// A daemon child process.
pub struct Daemon {
    child: Option<Child>,
    bin: String,
    /// The vhost-user socket.
    pub socket: PathBuf,
    /// The tap socket (dsproxy-device only).
    pub tap: PathBuf,
    log: PathBuf,
    dir: TempDir,
}

impl Daemon {
    /// Starts dsproxy-device with `--socket` and `--tap` in a fresh directory plus `extra`
    /// arguments, and waits until both sockets exist.
    pub fn dsproxy(bin: impl AsRef<Path>, extra: &[&str]) -> Result<Daemon, DaemonError> {
        Self::dsproxy_logging(bin, extra, None)
    }

    /// [`dsproxy`](Self::dsproxy) with `RUST_LOG` set to `log` (default: the caller's
    /// RUST_LOG, else debug) — e.g. "info" for a test that makes thousands of connections.
    pub fn dsproxy_logging(
        bin: impl AsRef<Path>,
        extra: &[&str],
        log: Option<&str>,
    ) -> Result<Daemon, DaemonError> {
        let dir = TempDir::new("dev")?;
        let tap = dir.path().join("tap.sock");
        Self::dsproxy_with_tap(bin, extra, log, dir, tap)
    }

    /// [`dsproxy_logging`](Self::dsproxy_logging) with the tap socket at `tap` (a daemon
    /// restarted where readers expect it).
    pub fn dsproxy_at(
        bin: impl AsRef<Path>,
        extra: &[&str],
        tap: &Path,
    ) -> Result<Daemon, DaemonError> {
        let dir = TempDir::new("dev")?;
        Self::dsproxy_with_tap(bin, extra, None, dir, tap.to_path_buf())
    }

    fn dsproxy_with_tap(
        bin: impl AsRef<Path>,
        extra: &[&str],
        log: Option<&str>,
        dir: TempDir,
        tap: PathBuf,
    ) -> Result<Daemon, DaemonError> {
        let socket = dir.path().join("vhost.sock");
        let mut args: Vec<String> = vec![
            "--socket".into(),
            socket.display().to_string(),
            "--tap".into(),
            tap.display().to_string(),
        ];
        args.extend(extra.iter().map(|s| s.to_string()));
        Self::spawn(bin.as_ref(), &args, dir, socket, tap.clone(), &[tap], log)
    }

    /// Starts rust-vmm's vhost-device-sound with the null backend.
    pub fn peer(bin: impl AsRef<Path>) -> Result<Daemon, DaemonError> {
        let dir = TempDir::new("peer")?;
        let socket = dir.path().join("vhost.sock");
        let args = vec![
            "--socket".to_string(),
            socket.display().to_string(),
            "--backend".into(),
            "null".into(),
        ];
        let tap = dir.path().join("no-tap");
        Self::spawn(bin.as_ref(), &args, dir, socket, tap, &[], None)
    }

    fn spawn(
        bin: &Path,
        args: &[String],
        dir: TempDir,
        socket: PathBuf,
        tap: PathBuf,
        more_paths: &[PathBuf],
        log_level: Option<&str>,
    ) -> Result<Daemon, DaemonError> {
        let log = dir.path().join("daemon.log");
        let out = File::create(&log)?;
        let err = out.try_clone()?;
        let mut cmd = Command::new(bin);
        cmd.args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::from(out))
            .stderr(Stdio::from(err));
        if let Some(level) = log_level {
            cmd.env("RUST_LOG", level);
        } else if std::env::var_os("RUST_LOG").is_none() {
            cmd.env("RUST_LOG", "debug");
        }
        let child = cmd.spawn().map_err(|e| DaemonError::Spawn {
            bin: bin.display().to_string(),
            source: e,
        })?;
        let mut d = Daemon {
            child: Some(child),
            bin: bin.display().to_string(),
            socket,
            tap,
            log,
            dir,
        };
        let mut wait: Vec<PathBuf> = vec![d.socket.clone()];
        wait.extend(more_paths.iter().cloned());
        for p in wait {
            d.wait_path(&p, Duration::from_secs(10))?;
        }
        Ok(d)
    }

    /// Waits until `path` exists (the daemon is listening).
    pub fn wait_path(&mut self, path: &Path, timeout: Duration) -> Result<(), DaemonError> {
        let deadline = Instant::now() + timeout;
        loop {
            if path.exists() {
                return Ok(());
            }
            if let Some(st) = self.try_wait() {
                return Err(DaemonError::Exited {
                    bin: self.bin.clone(),
                    status: st,
                    path: path.display().to_string(),
                    log: self.log_text(),
                });
            }
            if Instant::now() >= deadline {
                return Err(DaemonError::NoSocket {
                    bin: self.bin.clone(),
                    path: path.display().to_string(),
                    after: timeout,
                    log: self.log_text(),
                });
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// The exit status if the daemon has exited.
    pub fn try_wait(&mut self) -> Option<String> {
        let c = self.child.as_mut()?;
        match c.try_wait() {
            Ok(Some(st)) => Some(st.to_string()),
            _ => None,
        }
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(|c| c.id())
    }

    /// Limits the daemon's open files (RLIMIT_NOFILE, soft and hard), as `ulimit -n` would.
    pub fn limit_open_files(&self, n: u64) -> std::io::Result<()> {
        let pid = self
            .pid()
            .ok_or_else(|| std::io::Error::other("daemon not running"))?;
        let lim = libc::rlimit {
            rlim_cur: n,
            rlim_max: n,
        };
        // SAFETY: prlimit on our own child with a valid rlimit and no old-value pointer.
        let r = unsafe {
            libc::prlimit(
                pid as libc::pid_t,
                libc::RLIMIT_NOFILE,
                &lim,
                std::ptr::null_mut(),
            )
        };
        if r != 0 {
            return Err(std::io::Error::last_os_error());
        }
        Ok(())
    }

    /// What each of the daemon's open fds refers to (`/proc/PID/fd` link targets).
    pub fn open_fds(&self) -> std::io::Result<Vec<String>> {
        let pid = self
            .pid()
            .ok_or_else(|| std::io::Error::other("daemon not running"))?;
        let mut v = Vec::new();
        for e in std::fs::read_dir(format!("/proc/{pid}/fd"))? {
            let e = e?;
            // An fd closed between the listing and the readlink is simply gone.
            if let Ok(t) = std::fs::read_link(e.path()) {
                v.push(t.display().to_string());
            }
        }
        Ok(v)
    }

    /// The daemon's resident set size in KiB (VmRSS).
    pub fn rss_kib(&self) -> Option<u64> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid()?)).ok()?;
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
    }

    /// The daemon's peak resident set size so far in KiB (VmHWM).
    pub fn peak_rss_kib(&self) -> Option<u64> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid()?)).ok()?;
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmHWM:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
    }

    /// What the daemon has logged so far.
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// The last `n` lines of the log (for assertion messages).
    pub fn log_tail(&self, n: usize) -> String {
        let t = self.log_text();
        let lines: Vec<&str> = t.lines().collect();
        lines[lines.len().saturating_sub(n)..].join("\n")
    }

    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// Sends a signal to the daemon.
    pub fn signal(&self, sig: i32) {
        if let Some(pid) = self.pid() {
            // SAFETY: kill with the pid of our own child process.
            unsafe {
                libc::kill(pid as libc::pid_t, sig);
            }
        }
    }

    /// SIGTERM, then waits up to `timeout`; returns the exit status, or None if it had to be
    /// killed.
    pub fn terminate(&mut self, timeout: Duration) -> Option<std::process::ExitStatus> {
        let mut child = self.child.take()?;
        self.signal_child(&child, libc::SIGTERM);
        let deadline = Instant::now() + timeout;
        loop {
            if let Ok(Some(st)) = child.try_wait() {
                return Some(st);
            }
            if Instant::now() >= deadline {
                let _ = child.kill();
                let _ = child.wait();
                return None;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    fn signal_child(&self, child: &Child, sig: i32) {
        // SAFETY: kill with the pid of our own child process.
        unsafe {
            libc::kill(child.id() as libc::pid_t, sig);
        }
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if self.child.is_some() {
            self.terminate(Duration::from_secs(2));
        }
        if std::env::var_os("DSPROXY_KEEP_LOGS").is_some() {
            let keep = std::env::temp_dir().join(format!(
                "dsproxy-daemon-{}.log",
                self.dir
                    .path()
                    .file_name()
                    .map(|s| s.to_string_lossy().into_owned())
                    .unwrap_or_default()
            ));
            let _ = std::fs::copy(&self.log, keep);
        }
    }
}
