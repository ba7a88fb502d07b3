//! The `msae` command line: parse arguments, call the library, print, choose the exit code.
//!
//! Exit codes: 0 success; 1 a user mistake or a failed step (finished results stay cached);
//! 2 a usage error (clap).

mod args;
mod cancel;
mod commands;
mod device;
mod export;
mod status;

use std::process::ExitCode;

use clap::Parser;

pub use args::Cli;

pub fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging(cli.global.verbose);
    match commands::dispatch(cli) {
        Ok(code) => code,
        Err(e) => {
            if let Some(d) = e.downcast_ref::<crate::diagnostic::Diagnostic>() {
                eprint!("error: {d}");
            } else {
                eprintln!("error: {e:#}");
            }
            ExitCode::from(1)
        }
    }
}

fn init_logging(verbose: u8) {
    let level = match verbose {
        0 => "warn",
        1 => "info",
        2 => "debug",
        _ => "trace",
    };
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(format!("msae={level},warn")));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .without_time()
        .init();
}
