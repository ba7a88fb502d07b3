//! `msae run`: run an experiment's instances that are not cached, locally or on Slurm, then
//! write the result tables and the report page.

use std::process::ExitCode;
use std::time::Duration;

use anyhow::{bail, Result};

use super::args::{ExecutorKind, Global, RunArgs};
use super::device;
use super::shared::{load, open};
use crate::experiment::resources::Resources;
use crate::report::live::LiveReport;
use crate::report::state::PageState;
use crate::report::{self, freshness, table};
use crate::runner::executor::Executor;
use crate::runner::local::Local;
use crate::runner::plan::cached_records;
use crate::runner::slurm::{Slurm, SlurmOptions};
use crate::runner::{self, RunOptions, Status};
use crate::step::progress::Progress;

pub fn run(g: &Global, args: &RunArgs) -> Result<ExitCode> {
    let (exp, p) = load(&args.experiment)?;
    // GPUs are checked here only when the work runs here.
    let resolve = match args.executor {
        ExecutorKind::Local => device::resolve_here,
        ExecutorKind::Slurm => device::resolve_for_nodes,
    };
    let device = resolve(&args.device)?;
    let threads = args.threads.unwrap_or_else(|| {
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1)
    });
    if threads == 0 {
        bail!("--threads must be at least 1");
    }
    rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .build_global()
        .ok();
    let devices = args
        .devices
        .iter()
        .map(|d| resolve(d))
        .collect::<Result<Vec<_>>>()?;
    if devices.iter().any(|d| d == "cpu") {
        bail!("--devices lists GPUs (e.g. cuda:0,cuda:1); for the CPU use --device cpu");
    }
    let command = format!("msae run {}", args.experiment.display());
    let store = open(g, &command)?;
    let progress = if args.json {
        Progress::hidden(g.quiet)
    } else {
        Progress::new(g.quiet)
    };
    let mut executor: Box<dyn Executor> = match args.executor {
        ExecutorKind::Local => Box::new(Local::new(
            super::shared::kinds(),
            args.jobs,
            threads,
            devices,
            args.per_device,
            device.clone(),
            progress.clone(),
        )?),
        ExecutorKind::Slurm => {
            let seconds = |s: f64, what: &str| {
                if s.is_finite() && s >= 0.0 {
                    Ok(Duration::from_secs_f64(s))
                } else {
                    Err(anyhow::anyhow!("{what} must be a number of seconds ≥ 0"))
                }
            };
            Box::new(Slurm::new(
                &store.root,
                &exp.name,
                SlurmOptions {
                    defaults: Resources::from_assignments(&args.resources)?,
                    max_jobs: args.max_jobs,
                    submit_per_second: args.submit_rate,
                    poll_min: seconds(args.poll, "--poll")?.max(Duration::from_millis(100)),
                    poll_max: seconds(args.poll_max, "--poll-max")?.max(Duration::from_millis(100)),
                    result_grace: seconds(args.result_grace, "--result-grace")?,
                    device: device.clone(),
                },
            )?)
        }
    };
    let results_dir = args.results.join(&exp.name);
    // Small SAEs leave a GPU mostly idle, so a grid fills it by training together; on the CPU a
    // training already uses every core, and sharing only the batch reading gains little.
    let fuse = match args.fuse {
        Some(0) => anyhow::bail!("--fuse must be at least 1"),
        Some(n) => n,
        None if device.starts_with("cuda")
            || args.devices.iter().any(|d| d.starts_with("cuda")) =>
        {
            8
        }
        None => 1,
    };
    let upstreams = upstream_stores(g)?;
    let opts = RunOptions {
        upstreams,
        fuse,
        keep_going: args.keep_going,
        verify: args.verify,
        device,
        threads,
        command,
        observer: Some(Box::new(LiveReport::new(results_dir.clone()))),
    };
    let outcomes = runner::run(&exp, &p, &store, &opts, &progress, executor.as_mut())?;
    let count = |s: Status| outcomes.iter().filter(|o| o.status == s).count();
    let (ran, cached, failed, skipped) = (
        count(Status::Ran),
        count(Status::Cached),
        count(Status::Failed),
        count(Status::Skipped),
    );
    let fingerprint = freshness::fingerprint(&exp, &outcomes);
    if !fingerprint
        .as_deref()
        .is_some_and(|f| freshness::is_current(&results_dir, f))
    {
        freshness::forget(&results_dir);
        let records = cached_records(&p, &store)?;
        let tables = table::build(&p, &records);
        table::write_all(&results_dir, &tables)?;
        // The final page: what is cached now, failures with their errors.
        let page = PageState::from_outcomes(&p, &store, &outcomes, &[], false)
            .and_then(|snap| report::page::write(&results_dir, &exp, &p, &snap, &store.objects));
        match (page, fingerprint) {
            (Err(e), _) => eprintln!("warning: the report page could not be written: {e:#}"),
            (Ok(_), Some(f)) => freshness::remember(&results_dir, &f),
            (Ok(_), None) => {}
        }
    }
    if args.json {
        let summary = serde_json::json!({
            "experiment": exp.name,
            "run": ran,
            "cached": cached,
            "failed": failed,
            "skipped": skipped,
            "results": results_dir,
            "instances": outcomes,
        });
        println!("{}", serde_json::to_string_pretty(&summary)?);
    } else {
        for o in outcomes.iter().filter(|o| o.status == Status::Failed) {
            eprintln!(
                "error: {} failed: {}",
                o.name,
                o.error.as_deref().unwrap_or("")
            );
        }
        let mut line = format!("{ran} run, {cached} cached, {failed} failed");
        if skipped > 0 {
            line.push_str(&format!(", {skipped} skipped"));
        }
        println!("{line}");
    }
    Ok(if failed > 0 {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    })
}

/// The `--cache-from` stores, opened through their published indexes; the store itself is not
/// its own upstream.
fn upstream_stores(g: &Global) -> Result<Vec<crate::store::Upstream>> {
    let here = std::fs::canonicalize(&g.cache).ok();
    g.cache_from
        .iter()
        .map(|dir| {
            if here.is_some() && std::fs::canonicalize(dir).ok() == here {
                anyhow::bail!(
                    "--cache-from {} names the store this run writes (--cache); give another store",
                    dir.display()
                );
            }
            crate::store::Upstream::open(dir)
        })
        .collect()
}
