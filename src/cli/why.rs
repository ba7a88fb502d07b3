//! `msae why`: why an instance will run (or not), following waits upstream.

use std::collections::BTreeSet;
use std::path::Path;
use std::process::ExitCode;

use anyhow::Result;

use super::args::Global;
use super::shared::{find_instance, join, load, open_read, short};
use crate::runner::plan::{plan, PlanStatus};
use crate::runner::reasons::Reason;

/// One link of a `why` answer: the instance and its plan state.
#[derive(serde::Serialize)]
struct WhyLink {
    instance: String,
    status: PlanStatus,
    key: Option<String>,
    reasons: Vec<Reason>,
}

pub fn why(g: &Global, path: &Path, name: &str, json: bool) -> Result<ExitCode> {
    let (exp, p) = load(path)?;
    find_instance(&exp, &p, name)?;
    let store = open_read(g, "msae why")?;
    let entries = plan(&exp, &p, &store)?;
    // Follow "waits for" links upstream until an instance whose own state explains it.
    let mut chain = Vec::new();
    let mut current = name.to_string();
    let mut seen = BTreeSet::new();
    while seen.insert(current.clone()) {
        let e = entries
            .iter()
            .find(|e| e.name == current)
            .expect("instance of the plan");
        chain.push(WhyLink {
            instance: current.clone(),
            status: e.status.clone(),
            key: e.key.clone(),
            reasons: e.reasons.clone(),
        });
        match e.reasons.first() {
            Some(Reason::Upstream { instance }) if matches!(e.status, PlanStatus::Pending) => {
                current = instance.clone();
            }
            _ => break,
        }
    }
    if json {
        println!("{}", serde_json::to_string_pretty(&chain)?);
        return Ok(ExitCode::SUCCESS);
    }
    for link in &chain {
        let current = &link.instance;
        match link.status {
            PlanStatus::Cached => println!(
                "{current}: cached (key {}): nothing changed since its last run",
                short(link.key.as_deref())
            ),
            PlanStatus::New => println!("{current}: never ran under this name: it will run"),
            PlanStatus::Changed => {
                println!(
                    "{current}: will run again (new key {}) because:",
                    short(link.key.as_deref())
                );
                for r in &link.reasons {
                    println!("  - {r}");
                }
            }
            PlanStatus::Error => println!("{current}: cannot run: {}", join(&link.reasons)),
            PlanStatus::Pending => {
                let upstream = match link.reasons.first() {
                    Some(Reason::Upstream { instance }) => instance.as_str(),
                    _ => "",
                };
                println!("{current}: its key is known only after its input `{upstream}` runs again (if that yields the same bytes, {current} stays cached)");
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}
