//! What a reader asked for in its SUBSCRIBE, and which records that selects.

use dsproxy_wire::record::{SUB_LIVE, SUB_NO_PACING};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Subscription {
    pub flags: u32,
    /// Bit n selects stream n; 0 selects every stream.
    pub streams: u64,
}

impl Subscription {
    pub fn live(&self) -> bool {
        self.flags & SUB_LIVE != 0
    }

    pub fn no_pacing(&self) -> bool {
        self.flags & SUB_NO_PACING != 0
    }

    /// Whether a record about `stream` (None: about the whole card) goes to this reader.
    /// Streams 64 and up cannot be named in the mask; only the all-streams mask selects them.
    pub fn selects(&self, stream: Option<u32>) -> bool {
        match stream {
            None => true,
            Some(_) if self.streams == 0 => true,
            Some(s) => s < 64 && self.streams & (1u64 << s) != 0,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mask_selects_streams() {
        let all = Subscription {
            flags: 0,
            streams: 0,
        };
        assert!(all.selects(Some(0)) && all.selects(Some(70)) && all.selects(None));
        let one = Subscription {
            flags: SUB_LIVE,
            streams: 0b10,
        };
        assert!(one.live() && !one.no_pacing());
        assert!(one.selects(Some(1)) && one.selects(None));
        assert!(!one.selects(Some(0)) && !one.selects(Some(64)) && !one.selects(Some(65)));
    }
}
