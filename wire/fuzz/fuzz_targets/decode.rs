//! Fuzzes the tap record decoder: arbitrary bytes must never panic or over-allocate, and
//! whatever decodes must re-encode to bytes that decode to the same record.
#![no_main]

use dsproxy_wire::{decode, RecordReader};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let mut rest = data;
    while let Ok(Some((rec, used))) = decode(rest) {
        let again = rec.to_bytes().expect("a decoded record re-encodes");
        let (back, _) = decode(&again)
            .expect("re-encoded record decodes")
            .expect("re-encoded record is complete");
        assert_eq!(back, rec);
        rest = &rest[used..];
    }
    let mut reader = RecordReader::new(data);
    while let Ok(Some(_)) = reader.next_record() {}
});
