//! `msae plan`: what a run would do, and why, without running anything.

use std::path::Path;
use std::process::ExitCode;

use anyhow::Result;

use super::args::Global;
use super::shared::{join, load, open_read};
use crate::runner::plan::{plan as plan_of, PlanStatus};

pub fn plan(g: &Global, path: &Path, json: bool) -> Result<ExitCode> {
    let (exp, p) = load(path)?;
    let store = open_read(g, "msae plan")?;
    let entries = plan_of(&exp, &p, &store)?;
    if json {
        println!("{}", serde_json::to_string_pretty(&entries)?);
        return Ok(ExitCode::SUCCESS);
    }
    let width = entries.iter().map(|e| e.name.len()).max().unwrap_or(0);
    for e in &entries {
        let status = format!("{:?}", e.status).to_lowercase();
        println!("{status:8} {:width$}  {}", e.name, join(&e.reasons));
    }
    let n = |s: PlanStatus| {
        entries
            .iter()
            .filter(|e| std::mem::discriminant(&e.status) == std::mem::discriminant(&s))
            .count()
    };
    println!(
        "{} cached, {} new, {} changed, {} pending, {} error",
        n(PlanStatus::Cached),
        n(PlanStatus::New),
        n(PlanStatus::Changed),
        n(PlanStatus::Pending),
        n(PlanStatus::Error)
    );
    Ok(ExitCode::SUCCESS)
}
