//! Structure-aware: an arbitrary valid record must encode and decode to itself.
//! The body is `dsproxy_fuzz::wire::roundtrip` (tests/fuzz/src), which `cargo test` also runs on
//! this target's corpus (tests/fuzz/corpus/roundtrip/).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| dsproxy_fuzz::wire::roundtrip(data));
