//! What the reader knows of one PCM stream of the card: its description, params, phase,
//! where its audio goes and how much of it has been taken.

use dsproxy_wire::record::{Direction, Params, StreamDesc};

use crate::convert::AudioShape;
use crate::output::Segment;

/// Where a stream is in its open → prepare → start → stop → release cycle.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    Released,
    Prepared,
    Running,
    Stopped,
}

/// One stream's state.
pub struct StreamState {
    pub desc: StreamDesc,
    /// Place among the card's output streams (selects its "PCM Playback" controls).
    pub out_index: Option<usize>,
    /// Names its files: the output index, or 0 for the one `--stream` picked.
    pub file_index: usize,
    /// Audio of this stream goes to files.
    pub recorded: bool,
    pub params: Option<Params>,
    pub phase: Phase,
    /// The offset the next PCM should have; `None` when not known (after a snapshot).
    pub expected: Option<u64>,
    pub segment: Option<Segment>,
    /// Audio bytes taken from this stream (all segments).
    pub total_bytes: u64,
    /// Duration of the audio taken in earlier shapes.
    ns_done: u128,
    bytes_this_shape: u64,
    pub warned_no_params: bool,
}

impl StreamState {
    /// A stream the card has just described; `out_index` is its place among the outputs.
    pub fn new(desc: StreamDesc, out_index: Option<usize>) -> StreamState {
        StreamState {
            desc,
            out_index,
            file_index: out_index.unwrap_or(0),
            recorded: false,
            params: None,
            phase: Phase::Released,
            expected: None,
            segment: None,
            total_bytes: 0,
            ns_done: 0,
            bytes_this_shape: 0,
            warned_no_params: false,
        }
    }

    pub fn id(&self) -> u32 {
        self.desc.id
    }

    pub fn is_output(&self) -> bool {
        self.desc.direction == Direction::Output
    }

    pub fn shape(&self) -> Option<AudioShape> {
        self.params.as_ref().and_then(AudioShape::from_params)
    }

    /// How long `bytes` of this stream's current shape play.
    pub fn bytes_to_ns(&self, bytes: u64) -> Option<u128> {
        self.shape().and_then(|s| s.bytes_to_ns(bytes))
    }

    /// Duration of all the audio taken from this stream.
    pub fn duration_ns(&self) -> u128 {
        self.ns_done + self.bytes_to_ns(self.bytes_this_shape).unwrap_or(0)
    }

    /// Counts `n` audio bytes taken.
    pub fn count(&mut self, n: u64) {
        self.total_bytes += n;
        self.bytes_this_shape += n;
    }

    /// New params: bank the duration so far when the shape changes.
    pub fn set_params(&mut self, p: Params) {
        if self.shape() != AudioShape::from_params(&p) {
            self.ns_done = self.duration_ns();
            self.bytes_this_shape = 0;
        }
        self.params = Some(p);
    }

    /// Whether the guest has the stream open (prepared or running).
    pub fn is_active(&self) -> bool {
        matches!(self.phase, Phase::Prepared | Phase::Running)
    }
}
