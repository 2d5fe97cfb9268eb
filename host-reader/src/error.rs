//! Why the reader stops with a non-zero exit. Each variant prints as one line.

use std::io;
use std::path::PathBuf;

use dsproxy_wire::ReadError;
use thiserror::Error;

use crate::wav::WavError;

#[derive(Debug, Error)]
pub enum ReaderError {
    #[error("{0}")]
    Usage(String),
    #[error("cannot attach to {target}: {source}{hint}")]
    Connect {
        target: String,
        source: io::Error,
        hint: &'static str,
    },
    #[error("{target} is not a usable dsproxy tap: {why}")]
    Handshake { target: String, why: String },
    #[error("malformed record stream from {target}: {source}")]
    Malformed { target: String, source: ReadError },
    #[error("protocol error from {target}: {why}")]
    Protocol { target: String, why: String },
    #[error("cannot write {}: {source}", path.display())]
    File { path: PathBuf, source: io::Error },
    #[error("stream {stream} ({path}): {source}")]
    Wav {
        stream: u32,
        path: String,
        source: WavError,
    },
    #[error("writing to stdout: {0}")]
    Stdout(io::Error),
    /// A `--mixer` the device did not confirm.
    #[error("{0}")]
    Mixer(String),
    /// QEMU (`--qmp`) refused or cannot serve what the reader needs.
    #[error("{target}: {why}")]
    Qemu { target: String, why: String },
    #[error("--inject {}: {why}", path.display())]
    Inject { path: PathBuf, why: String },
    /// The files could not be judged (unreadable, not audio).
    #[error("{0}")]
    Verdict(#[from] crate::verdict::VerdictError),
    /// The capture is not what `--expect…` asked for; the verdict line has said how.
    #[error("{0}")]
    Mismatch(String),
}

impl ReaderError {
    pub fn file(path: impl Into<PathBuf>, source: io::Error) -> ReaderError {
        ReaderError::File {
            path: path.into(),
            source,
        }
    }
}
