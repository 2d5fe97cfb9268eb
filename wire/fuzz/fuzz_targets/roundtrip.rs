//! Structure-aware: libFuzzer's bytes become a valid record (dsproxy_wire::arbitrary), which
//! must encode and decode to itself. The `decode` target only re-encodes what already
//! decodes; this one reaches every field of every record kind directly.
#![no_main]

use dsproxy_wire::arbitrary::ValidRecord;
use dsproxy_wire::decode;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|v: ValidRecord| {
    let rec = v.0;
    let bytes = rec.to_bytes().expect("a valid record encodes");
    let (back, used) = decode(&bytes)
        .expect("an encoded record decodes")
        .expect("an encoded record is complete");
    assert_eq!(used, bytes.len());
    assert_eq!(back, rec);
});
