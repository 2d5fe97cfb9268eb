//! dsproxy-host-reader: see the README and `--help`.

use std::process::ExitCode;

use clap::Parser;
use dsproxy_host_reader::{app, cli::Cli, console, error::ReaderError, signals, verdict};

fn main() -> ExitCode {
    // Before any thread exists, so every thread inherits the mask.
    if let Err(e) = signals::block_termination_signals() {
        console::note(&format!("cannot block SIGINT/SIGTERM: {e}"));
        return ExitCode::from(1);
    }
    console::init_logging();
    let cli = match Cli::try_parse() {
        Ok(c) => c,
        Err(e) if !e.use_stderr() => e.exit(), // --help, --version
        Err(e) => {
            // One line, like every other failure: clap's first line without its "error: ".
            let text = e.render().to_string();
            let first = text.lines().next().unwrap_or("bad command line");
            let first = first.strip_prefix("error: ").unwrap_or(first);
            console::note(&format!("{first} (see --help)"));
            return ExitCode::from(2);
        }
    };
    match app::run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        // The verdict line is out already.
        Err(ReaderError::Mismatch(_)) => ExitCode::from(verdict::EXIT_MISMATCH),
        Err(e) => {
            console::finish_progress();
            console::note(&e.to_string());
            ExitCode::from(match e {
                ReaderError::Usage(_) => 2,
                _ => 1,
            })
        }
    }
}
