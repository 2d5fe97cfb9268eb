//! The fuzz targets' entry points, as plain functions of the fuzzer's bytes: cargo-fuzz
//! runs them under libFuzzer (`scripts/fuzz`; the targets are in wire/fuzz, device/fuzz and
//! host-reader/fuzz), and `tests/corpus.rs` replays each target's corpus
//! (`tests/fuzz/corpus/<target>/`) through them in `cargo test` on stable.
//!
//! Each one takes any bytes: an input that runs out early is simply a shorter run.

#[cfg(feature = "device")]
pub mod device;
#[cfg(feature = "reader")]
pub mod reader;
pub mod wire;

/// A fuzz target: its name (the cargo-fuzz binary and the corpus directory) and its entry
/// point.
pub struct Target {
    pub name: &'static str,
    pub run: fn(&[u8]),
}

/// Every target this build has.
pub const TARGETS: &[Target] = &[
    Target {
        name: "decode",
        run: wire::decode,
    },
    Target {
        name: "roundtrip",
        run: wire::roundtrip,
    },
    #[cfg(feature = "device")]
    Target {
        name: "ctl",
        run: device::ctl,
    },
    #[cfg(feature = "device")]
    Target {
        name: "xfer",
        run: device::xfer,
    },
    #[cfg(feature = "device")]
    Target {
        name: "event",
        run: device::event,
    },
    #[cfg(feature = "reader")]
    Target {
        name: "session",
        run: reader::session,
    },
];
