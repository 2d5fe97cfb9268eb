//! The tap as the card sees it: [`TapHandle`] is the card's real [`CardTap`].

use dsproxy_wire::record::Record;

use super::{TapHandle, TapRequest};
use crate::card::{CardTap, PcmFill};
use crate::error::RequestError;

impl CardTap for TapHandle {
    fn publish(&self, rec: &Record) {
        TapHandle::publish(self, rec)
    }
    fn publish_pcm(
        &self,
        stream: u32,
        offset: u64,
        time_ns: u64,
        len: usize,
        fill: &mut PcmFill<'_>,
    ) -> Result<(), RequestError> {
        TapHandle::publish_pcm_with(self, stream, offset, time_ns, len, fill)
    }
    fn has_readers(&self) -> bool {
        TapHandle::has_readers(self)
    }
    fn can_accept(&self) -> bool {
        TapHandle::can_accept(self)
    }
    fn no_pacing_requested(&self) -> bool {
        TapHandle::no_pacing_requested(self)
    }
    fn take_requests(&self) -> Vec<TapRequest> {
        TapHandle::take_requests(self)
    }
    fn read_inject(&self, stream: u32, out: &mut [u8]) -> usize {
        TapHandle::read_inject(self, stream, out)
    }
}
