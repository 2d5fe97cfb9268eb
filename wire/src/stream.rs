//! Reading records from a byte stream (a socket), with one reused, bounded buffer.

use std::io::{self, Read};

use crate::record::{decode_payload, FrameHeader, Record, WireError, HEADER_LEN};

/// Why reading the next record failed.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    #[error("i/o error: {0}")]
    Io(#[from] io::Error),
    #[error("malformed record: {0}")]
    Wire(#[from] WireError),
    #[error("connection closed in the middle of a record")]
    TruncatedStream,
}

/// Reads framed records from `R`. Never holds more than one payload
/// ([`crate::record::MAX_PAYLOAD`] bytes at most) in memory.
pub struct RecordReader<R> {
    inner: R,
    payload: Vec<u8>,
}

impl<R: Read> RecordReader<R> {
    pub fn new(inner: R) -> Self {
        RecordReader {
            inner,
            payload: Vec::new(),
        }
    }

    pub fn get_ref(&self) -> &R {
        &self.inner
    }

    pub fn get_mut(&mut self) -> &mut R {
        &mut self.inner
    }

    /// The next record, or `Ok(None)` at a clean end of stream (between records).
    pub fn next_record(&mut self) -> Result<Option<Record>, ReadError> {
        let mut hdr = [0u8; HEADER_LEN];
        match read_full(&mut self.inner, &mut hdr)? {
            0 => return Ok(None),
            n if n < HEADER_LEN => return Err(ReadError::TruncatedStream),
            _ => {}
        }
        let h = FrameHeader::parse(&hdr)?;
        // Grow the buffer as bytes arrive rather than reserving `len` up front: a peer that
        // announces a large record and sends nothing costs us nothing.
        self.payload.clear();
        // (read_to_end retries on EINTR itself.)
        let got = (&mut self.inner)
            .take(h.len as u64)
            .read_to_end(&mut self.payload)?;
        if got < h.len as usize {
            return Err(ReadError::TruncatedStream);
        }
        Ok(Some(decode_payload(h.kind, &self.payload)?))
    }
}

/// Reads until `buf` is full or the stream ends; returns how many bytes were read.
fn read_full<R: Read>(r: &mut R, buf: &mut [u8]) -> io::Result<usize> {
    let mut got = 0;
    while got < buf.len() {
        match r.read(&mut buf[got..]) {
            Ok(0) => break,
            Ok(n) => got += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        }
    }
    Ok(got)
}
