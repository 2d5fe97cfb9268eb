//! dsproxy-host-reader: records, pipes, logs and plays what a dsproxy guest plays.
//!
//! The binary (`src/main.rs`) is a thin shell over these modules, split by concern:
//! command line ([`cli`]), the tap connection ([`connection`]), per-stream state and
//! dispatch ([`session`]), output files ([`output`], [`wav`]), the `-e` and `-i` logs
//! ([`english`], [`rawlog`], [`mixer`]), host playback ([`playback`]), `--inject`
//! ([`inject`]), `--mixer` ([`mixer_set`]), sample conversion ([`convert`]) and the terminal ([`console`]).

pub mod app;
pub mod cli;
pub mod connection;
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
pub mod stream;
pub mod wav;
