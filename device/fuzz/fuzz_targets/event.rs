//! Event buffers from a hostile driver, and the events that fill them.
//! The body is `dsproxy_fuzz::device::event` (tests/fuzz/src), which `cargo test` also runs on
//! this target's corpus (tests/fuzz/corpus/event/).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| dsproxy_fuzz::device::event(data));
