//! The `msae` command line: parse arguments, call the library, print, choose the exit code.
//!
//! Exit codes: 0 success; 1 a user mistake or a failed step (finished results stay cached);
//! 2 a usage error (clap).

mod args;
mod cache;
mod cancel;
mod device;
mod export;
mod gc;
mod kinds;
mod plan;
mod publish;
mod report;
mod run;
mod shared;
mod status;
mod table;
mod why;

use std::process::ExitCode;

use anyhow::Result;
use clap::Parser;

use args::{CacheCommand, Command, GraphFormat};
use shared::load;

pub use args::Cli;

pub fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging(cli.global.verbose);
    match dispatch(cli) {
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

fn dispatch(cli: Cli) -> Result<ExitCode> {
    let g = &cli.global;
    match &cli.command {
        Command::Run(args) => run::run(g, args),
        Command::Plan { experiment, json } => plan::plan(g, experiment, *json),
        Command::Why {
            experiment,
            instance,
            json,
        } => why::why(g, experiment, instance, *json),
        Command::Status { experiment, json } => status::status(g, experiment, *json),
        Command::Graph { experiment, format } => {
            let (_, p) = load(experiment)?;
            print!(
                "{}",
                match format {
                    GraphFormat::Dot => crate::report::graph::dot(&p),
                    GraphFormat::Mermaid => crate::report::graph::mermaid(&p),
                }
            );
            Ok(ExitCode::SUCCESS)
        }
        Command::Table {
            experiment,
            format,
            kind,
        } => table::table(g, experiment, *format, kind.as_deref()),
        Command::Gc {
            experiments,
            dry_run,
        } => gc::gc(g, experiments, *dry_run),
        Command::Cache(CacheCommand::Du { json }) => cache::du(g, *json),
        Command::Cache(CacheCommand::Verify) => cache::verify(g),
        Command::Kinds { kind } => kinds::kinds(shared::kinds(), kind.as_deref()),
        Command::Export(args) => export::export(g, args),
        Command::Publish(args) => publish::publish(g, args),
        Command::Cancel { experiment } => cancel::cancel(g, experiment),
        Command::Exec { spec } => crate::runner::worker::exec(spec, shared::kinds()),
        Command::Report {
            experiment,
            results,
        } => report::report(g, experiment, results),
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
