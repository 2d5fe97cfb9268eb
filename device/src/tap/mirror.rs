//! The tap's mirror of the card state, built from the records that pass through `publish`,
//! and the snapshot a reader gets when it subscribes.
//!
//! The mirror is updated by the tap thread in the order the records were published, and the
//! snapshot is taken between two records, so a reader sees the state as of some point of the
//! stream and everything after it: nothing twice, nothing missing.

use std::collections::BTreeMap;
use std::sync::Arc;

use dsproxy_wire::record::{ControlOrigin, Record};

use super::shared::Frame;
use super::subscription::Subscription;

/// A stream's state as the records told it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
enum StreamState {
    /// Parameters set (or nothing known yet), not prepared.
    #[default]
    Idle,
    Prepared,
    Running,
    Stopped,
    Released,
}

/// The records that rebuild one stream's state, kept as sent (with their original times).
#[derive(Default)]
struct StreamMirror {
    state: StreamState,
    params: Option<Frame>,
    prepare: Option<Frame>,
    start: Option<Frame>,
    stop: Option<Frame>,
}

#[derive(Default)]
pub(super) struct Mirror {
    streams: BTreeMap<u32, StreamMirror>,
    controls: BTreeMap<u32, Vec<i64>>,
    frontend: Option<Frame>,
    /// NOTICE records since the last FRONTEND (they are about that frontend), newest last.
    notices: Vec<Frame>,
}

/// NOTICE records kept for the snapshot; older ones are dropped first.
const NOTICES_KEPT: usize = 8;

impl Mirror {
    /// Takes in a published non-PCM record.
    pub fn update(&mut self, rec: &Record, frame: &Frame) {
        match rec {
            Record::Params(p) => {
                let s = self.streams.entry(p.stream).or_default();
                s.params = Some(Arc::clone(frame));
                s.state = StreamState::Idle;
            }
            Record::Prepare { stream, .. } => {
                let s = self.streams.entry(*stream).or_default();
                s.prepare = Some(Arc::clone(frame));
                s.state = StreamState::Prepared;
            }
            Record::Start { stream, .. } => {
                let s = self.streams.entry(*stream).or_default();
                s.start = Some(Arc::clone(frame));
                s.state = StreamState::Running;
            }
            Record::Stop { stream, .. } => {
                let s = self.streams.entry(*stream).or_default();
                s.stop = Some(Arc::clone(frame));
                s.state = StreamState::Stopped;
            }
            Record::Release { stream, .. } => {
                let s = self.streams.entry(*stream).or_default();
                s.state = StreamState::Released;
            }
            Record::Control { id, values, .. } => {
                self.controls.insert(*id, values.clone());
            }
            Record::Frontend { .. } => {
                self.frontend = Some(Arc::clone(frame));
                self.notices.clear();
            }
            Record::Notice { .. } => {
                if self.notices.len() == NOTICES_KEPT {
                    self.notices.remove(0);
                }
                self.notices.push(Arc::clone(frame));
            }
            _ => {}
        }
    }

    /// The records that bring a new reader up to date, ending with SNAPSHOT_END:
    /// the last FRONTEND record and the NOTICEs since it; per selected stream that has parameters, PARAMS, then
    /// PREPARE if prepared, + START if running, + START and STOP if stopped; a CONTROL with
    /// origin Initial per control; SNAPSHOT_END.
    pub fn snapshot(&self, sub: &Subscription) -> Vec<Frame> {
        let mut out = Vec::new();
        if let Some(f) = &self.frontend {
            out.push(Arc::clone(f));
        }
        out.extend(self.notices.iter().map(Arc::clone));
        for (&id, s) in &self.streams {
            if !sub.selects(Some(id)) {
                continue;
            }
            let Some(params) = &s.params else { continue };
            out.push(Arc::clone(params));
            let replay: &[&Option<Frame>] = match s.state {
                StreamState::Idle | StreamState::Released => &[],
                StreamState::Prepared => &[&s.prepare],
                StreamState::Running => &[&s.prepare, &s.start],
                StreamState::Stopped => &[&s.prepare, &s.start, &s.stop],
            };
            out.extend(replay.iter().filter_map(|f| f.as_ref().map(Arc::clone)));
        }
        for (&id, values) in &self.controls {
            let rec = Record::Control {
                id,
                origin: ControlOrigin::Initial,
                values: values.clone(),
            };
            match rec.to_bytes() {
                Ok(b) => out.push(Arc::new(b)),
                // Cannot happen: the same values were encoded when they were published.
                Err(e) => log::warn!("tap: control {id} left out of the snapshot: {e}"),
            }
        }
        match Record::SnapshotEnd.to_bytes() {
            Ok(b) => out.push(Arc::new(b)),
            Err(e) => log::error!("tap: cannot encode SNAPSHOT_END: {e}"),
        }
        out
    }
}
