//! Control requests from a hostile driver, over mock split virtqueues.
//! The body is `dsproxy_fuzz::device::ctl` (tests/fuzz/src), which `cargo test` also runs on
//! this target's corpus (tests/fuzz/corpus/ctl/).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| dsproxy_fuzz::device::ctl(data));
