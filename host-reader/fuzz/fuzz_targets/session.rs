//! The host reader's session against a hostile device: HELLOs, records, reconnections.
//! The body is `dsproxy_fuzz::reader::session` (tests/fuzz/src), which `cargo test` also runs on
//! this target's corpus (tests/fuzz/corpus/session/).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| dsproxy_fuzz::reader::session(data));
