//! The tap record decoder ([`decode`]) and encoder ([`roundtrip`]): what every reader and the
//! device's tap run on bytes from the other side.

use arbitrary::{Arbitrary, Unstructured};
use dsproxy_wire::arbitrary::ValidRecord;
use dsproxy_wire::{decode as decode_record, RecordReader};

/// Arbitrary bytes must never panic or over-allocate, and whatever decodes must re-encode to
/// bytes that decode to the same record. The allocation bound is the decoder's own: it
/// checks a frame's length against `MAX_PAYLOAD` and every count against the bytes left
/// before reserving anything.
pub fn decode(data: &[u8]) {
    let mut rest = data;
    while let Ok(Some((rec, used))) = decode_record(rest) {
        let again = rec.to_bytes().expect("a decoded record re-encodes");
        let (back, _) = decode_record(&again)
            .expect("re-encoded record decodes")
            .expect("re-encoded record is complete");
        assert_eq!(back, rec);
        rest = &rest[used..];
    }
    let mut reader = RecordReader::new(data);
    while let Ok(Some(_)) = reader.next_record() {}
}

/// Structure-aware: the bytes become a valid record ([`ValidRecord`]), which must encode
/// and decode to itself. [`decode`] only re-encodes what already decodes; this reaches every
/// field of every record kind directly (the HELLO of a card without controls once did not
/// survive it).
pub fn roundtrip(data: &[u8]) {
    let Ok(ValidRecord(rec)) = ValidRecord::arbitrary_take_rest(Unstructured::new(data)) else {
        return;
    };
    let bytes = rec.to_bytes().expect("a valid record encodes");
    let (back, used) = decode_record(&bytes)
        .expect("an encoded record decodes")
        .expect("an encoded record is complete");
    assert_eq!(used, bytes.len());
    assert_eq!(back, rec);
}
