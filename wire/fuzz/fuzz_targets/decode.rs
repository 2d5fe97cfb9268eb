//! Arbitrary bytes through the tap record decoder and `RecordReader`.
//! The body is `dsproxy_fuzz::wire::decode` (tests/fuzz/src), which `cargo test` also runs on
//! this target's corpus (tests/fuzz/corpus/decode/).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| dsproxy_fuzz::wire::decode(data));
