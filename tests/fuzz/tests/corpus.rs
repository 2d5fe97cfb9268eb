//! Every fuzz target's corpus (tests/fuzz/corpus/<target>/, kept by `scripts/fuzz`: the
//! inputs that reached new code, and the ones that once crashed a target) replayed through
//! the targets' own entry points, on stable, in `cargo test`.

use std::fs;
use std::path::{Path, PathBuf};

use dsproxy_fuzz::{Target, TARGETS};

fn corpus_dir(target: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("corpus")
        .join(target)
}

/// fd 2 on /dev/null while it lives: the reader prints its `-e`/`-i` lines straight to
/// stderr (thousands for a corpus), past the test harness's capture. Panic messages go
/// through the harness, so a failure still shows.
struct QuietStderr {
    saved: libc::c_int,
}

impl QuietStderr {
    fn new() -> QuietStderr {
        let null = fs::File::options()
            .write(true)
            .open("/dev/null")
            .expect("/dev/null");
        // SAFETY: plain descriptor calls on descriptors this process owns; fd 2 is restored
        // in drop.
        let saved = unsafe { libc::dup(2) };
        assert!(saved >= 0, "dup(2)");
        // SAFETY: as above.
        assert!(unsafe { libc::dup2(std::os::fd::AsRawFd::as_raw_fd(&null), 2) } == 2);
        QuietStderr { saved }
    }
}

impl Drop for QuietStderr {
    fn drop(&mut self) {
        // SAFETY: `saved` is the descriptor dup'ed in new, still open.
        unsafe {
            libc::dup2(self.saved, 2);
            libc::close(self.saved);
        }
    }
}

/// Runs every input of `target`'s corpus; returns how many there were.
fn replay(target: &Target) -> usize {
    let dir = corpus_dir(target.name);
    let mut inputs: Vec<PathBuf> = fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.expect("a corpus entry").path())
        .collect();
    inputs.sort();
    for path in &inputs {
        let data = fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        // Named in the failure: the file to hand to `cargo fuzz run <target> <file>`.
        eprintln!("{} {}", target.name, path.display());
        (target.run)(&data);
    }
    inputs.len()
}

fn target(name: &str) -> &'static Target {
    TARGETS
        .iter()
        .find(|t| t.name == name)
        .unwrap_or_else(|| panic!("no target {name}"))
}

/// A target whose corpus is missing or empty would replay nothing and pass.
fn replays_a_corpus(name: &str) {
    let n = replay(target(name));
    assert!(n > 0, "the corpus of {name} is empty");
}

#[test]
fn every_target_has_a_corpus_and_every_corpus_a_target() {
    let dirs: Vec<String> = fs::read_dir(Path::new(env!("CARGO_MANIFEST_DIR")).join("corpus"))
        .expect("tests/fuzz/corpus")
        .map(|e| {
            e.expect("a corpus dir")
                .file_name()
                .to_string_lossy()
                .into_owned()
        })
        .collect();
    for t in TARGETS {
        assert!(dirs.iter().any(|d| d == t.name), "no corpus for {}", t.name);
    }
    for d in &dirs {
        assert!(
            TARGETS.iter().any(|t| t.name == d),
            "a corpus without a target: {d}"
        );
    }
}

#[test]
fn decode() {
    replays_a_corpus("decode");
}

#[test]
fn roundtrip() {
    replays_a_corpus("roundtrip");
}

#[test]
fn ctl() {
    replays_a_corpus("ctl");
}

#[test]
fn xfer() {
    replays_a_corpus("xfer");
}

#[test]
fn event() {
    replays_a_corpus("event");
}

#[test]
fn session() {
    let _quiet = QuietStderr::new();
    replays_a_corpus("session");
}
