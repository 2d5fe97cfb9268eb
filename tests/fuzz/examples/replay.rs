//! Runs fuzz inputs through a target's entry point on stable, to debug a crash without the
//! nightly toolchain:
//!
//!   DSPROXY_FUZZ_TRACE=1 cargo run -p dsproxy-fuzz --example replay -- TARGET FILE...

use std::process::ExitCode;

fn main() -> ExitCode {
    let mut args = std::env::args().skip(1);
    let Some(name) = args.next() else {
        eprintln!("usage: replay TARGET FILE...");
        return ExitCode::from(2);
    };
    let Some(target) = dsproxy_fuzz::TARGETS.iter().find(|t| t.name == name) else {
        let names: Vec<&str> = dsproxy_fuzz::TARGETS.iter().map(|t| t.name).collect();
        eprintln!("no target {name} (targets: {})", names.join(", "));
        return ExitCode::from(2);
    };
    for path in args {
        match std::fs::read(&path) {
            Ok(data) => {
                eprintln!("{name} {path}");
                (target.run)(&data);
            }
            Err(e) => {
                eprintln!("{path}: {e}");
                return ExitCode::FAILURE;
            }
        }
    }
    ExitCode::SUCCESS
}
