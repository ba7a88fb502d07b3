//! `msae cancel EXP`: cancels the Slurm jobs of the experiment's run on this store. It needs no
//! hold on the store, so it works while the coordinator runs (which then reports the cancelled
//! instances as failed) and after it was killed.

use std::path::Path;
use std::process::{Command, ExitCode};

use anyhow::{bail, Context, Result};

use super::args::Global;
use super::shared::load;
use crate::runner::slurm::{job_name, squeue, ENDED};

pub fn cancel(g: &Global, path: &Path) -> Result<ExitCode> {
    let (exp, _) = load(path)?;
    let name = job_name(&g.cache, &exp.name);
    let live: Vec<String> = squeue(&name)?
        .into_values()
        .filter(|(_, state)| !ENDED.contains(&state.as_str()))
        .map(|(id, _)| id)
        .collect();
    if live.is_empty() {
        println!(
            "no live Slurm jobs for `{}` on this store (job name {name})",
            exp.name
        );
        return Ok(ExitCode::SUCCESS);
    }
    let out = Command::new("scancel")
        .args(&live)
        .output()
        .context("cannot run `scancel`")?;
    if !out.status.success() {
        bail!(
            "`scancel` failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    println!("cancelled {} job(s): {}", live.len(), live.join(" "));
    Ok(ExitCode::SUCCESS)
}
