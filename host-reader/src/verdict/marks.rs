//! What happened while a file was being recorded, placed on the file's own time axis: the
//! segment's start, gaps the reader filled with silence, the guest's underruns, parameter
//! changes that did not start a new file, and the guest closing and reopening the device
//! (mpg321 and mplayer do that in the middle of a song). The report lists them and the plot
//! draws them.
//!
//! Whatever records into a file (the tap session, or another source) tells the log where it
//! is in the file, in bytes: the log turns that into frames and seconds.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::convert::AudioShape;

/// Marks kept per file; a guest that underruns a million times gets a count, not a million
/// marks.
pub const MAX_MARKS: usize = 10_000;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MarkKind {
    SegmentStart,
    /// Audio the reader did not get, written as silence.
    Gap,
    /// The guest did not write in time (nothing is in the file for it).
    Xrun,
    /// Parameters changed without changing the file's shape (buffer or period size).
    Params,
    /// The guest closed (released) the stream.
    Closed,
    /// The guest opened (prepared) it again.
    Opened,
}

impl MarkKind {
    pub fn label(self) -> &'static str {
        match self {
            MarkKind::SegmentStart => "segment start",
            MarkKind::Gap => "gap",
            MarkKind::Xrun => "xrun",
            MarkKind::Params => "params",
            MarkKind::Closed => "closed",
            MarkKind::Opened => "reopened",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Mark {
    pub kind: MarkKind,
    pub frame: u64,
    pub time_s: f64,
    /// How long (gaps: the silence written; xruns: the time without audio).
    pub duration_s: Option<f64>,
    pub what: String,
}

/// A file a capture wrote, and its marks.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CapturedFile {
    pub path: PathBuf,
    pub stream: u32,
    /// 1 for the stream's first file, 2 for `.seg2`, …
    pub segment: u32,
    pub marks: Vec<Mark>,
    /// Marks not kept (past [`MAX_MARKS`]).
    pub marks_dropped: u64,
    #[serde(skip)]
    shape: Option<AudioShape>,
}

impl CapturedFile {
    pub fn new(path: &Path, stream: u32, segment: u32, shape: Option<AudioShape>) -> Self {
        CapturedFile {
            path: path.to_path_buf(),
            stream,
            segment,
            marks: Vec::new(),
            marks_dropped: 0,
            shape,
        }
    }

    /// The marks of a kind.
    pub fn of(&self, kind: MarkKind) -> impl Iterator<Item = &Mark> {
        self.marks.iter().filter(move |m| m.kind == kind)
    }
}

/// The files of a capture, in the order they were opened, with their marks.
#[derive(Debug, Default)]
pub struct CaptureLog {
    files: Vec<CapturedFile>,
    /// Stream → its open file (index into `files`).
    open: HashMap<u32, usize>,
}

impl CaptureLog {
    pub fn new() -> CaptureLog {
        CaptureLog::default()
    }

    /// `stream` started writing `path` (segment number `segment`) in `shape`.
    pub fn segment_started(
        &mut self,
        stream: u32,
        path: &Path,
        segment: u32,
        shape: Option<AudioShape>,
    ) {
        let mut f = CapturedFile::new(path, stream, segment, shape);
        f.marks.push(Mark {
            kind: MarkKind::SegmentStart,
            frame: 0,
            time_s: 0.0,
            duration_s: None,
            what: match shape {
                Some(s) => format!("segment {segment}: {s}"),
                None => format!("segment {segment}"),
            },
        });
        self.open.insert(stream, self.files.len());
        self.files.push(f);
    }

    /// `stream`'s file was closed: marks for it wait for its next file.
    pub fn segment_ended(&mut self, stream: u32) {
        self.open.remove(&stream);
    }

    /// Every file is closed (the connection or the VM went away).
    pub fn all_ended(&mut self) {
        self.open.clear();
    }

    /// Something happened on `stream` at byte `at_byte` of its open file (ignored when it has
    /// none). `duration_ns` is how long it lasted, if it did.
    pub fn mark(
        &mut self,
        stream: u32,
        at_byte: u64,
        kind: MarkKind,
        duration_ns: Option<u64>,
        what: String,
    ) {
        let Some(&i) = self.open.get(&stream) else {
            return;
        };
        let f = &mut self.files[i];
        if f.marks.len() >= MAX_MARKS {
            f.marks_dropped += 1;
            return;
        }
        let (frame, time_s) = match f.shape.and_then(|s| Some((s.frame_bytes()?, s.rate_hz))) {
            Some((fb, rate)) => {
                let frame = at_byte / fb as u64;
                (frame, frame as f64 / rate as f64)
            }
            None => (0, 0.0),
        };
        f.marks.push(Mark {
            kind,
            frame,
            time_s,
            duration_s: duration_ns.map(|ns| ns as f64 / 1e9),
            what,
        });
    }

    pub fn files(&self) -> &[CapturedFile] {
        &self.files
    }

    /// The files of one stream, in order.
    pub fn files_of(&self, stream: u32) -> Vec<&CapturedFile> {
        self.files.iter().filter(|f| f.stream == stream).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use dsproxy_wire::PcmFormat;

    #[test]
    fn marks_land_in_the_open_file_at_their_time() {
        let shape = AudioShape {
            format: PcmFormat::S16,
            rate_hz: 48000,
            channels: 2,
        };
        let mut log = CaptureLog::new();
        log.mark(0, 0, MarkKind::Xrun, None, "before any file".into());
        log.segment_started(0, Path::new("out.wav"), 1, Some(shape));
        log.mark(0, 192_000, MarkKind::Gap, Some(10_000_000), "10 ms".into());
        log.mark(1, 0, MarkKind::Gap, None, "another stream".into());
        log.segment_ended(0);
        log.mark(0, 4, MarkKind::Closed, None, "after".into());
        log.segment_started(0, Path::new("out.seg2.wav"), 2, Some(shape));
        log.mark(0, 4, MarkKind::Params, None, "period".into());
        let files = log.files_of(0);
        assert_eq!(files.len(), 2);
        let m: Vec<_> = files[0].marks.iter().map(|m| (m.kind, m.frame)).collect();
        assert_eq!(m, vec![(MarkKind::SegmentStart, 0), (MarkKind::Gap, 48000)]);
        assert_eq!(files[0].marks[1].time_s, 1.0);
        assert_eq!(files[0].marks[1].duration_s, Some(0.01));
        assert_eq!(files[1].marks[1].frame, 1);
        assert_eq!(files[1].segment, 2);
    }

    #[test]
    fn a_mark_storm_is_counted_not_kept() {
        let mut log = CaptureLog::new();
        log.segment_started(0, Path::new("o.wav"), 1, None);
        for _ in 0..MAX_MARKS + 5 {
            log.mark(0, 0, MarkKind::Xrun, None, String::new());
        }
        assert_eq!(log.files()[0].marks.len(), MAX_MARKS);
        assert_eq!(log.files()[0].marks_dropped, 6);
    }
}
