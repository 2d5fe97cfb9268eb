//! dsproxy-host-reader: records, pipes, logs and plays what a dsproxy guest plays.
//!
//! The binary (`src/main.rs`) is a thin shell over these modules, split by concern:
//! command line ([`cli`]), the main loop ([`app`]) and staying attached ([`connector`]),
//! where records come from ([`source`]: the device's tap), per-stream state and dispatch
//! ([`session`], [`stream`]), where audio goes ([`sink`], [`output`], [`wav`]), the `-e` and
//! `-i` logs ([`english`], [`rawlog`], [`mixer`]), host playback ([`playback`]), `--inject`
//! ([`inject`]), `--mixer` ([`mixer_set`]), sample conversion ([`convert`]), the terminal
//! ([`console`]) and CI verdicts and pictures ([`verdict`]: `--expect`, `--report`, `--plot`,
//! `--check`).

pub mod app;
pub mod cli;
pub mod connector;
pub mod console;
pub mod convert;
pub mod english;
pub mod error;
pub mod inject;
pub mod mixer;
pub mod mixer_set;
pub mod output;
pub mod playback;
pub mod rawlog;
pub mod session;
pub mod signals;
pub mod sink;
pub mod source;
pub mod status;
pub mod stream;
pub mod verdict;
pub mod watch;
pub mod wav;
