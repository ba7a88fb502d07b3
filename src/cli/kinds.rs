//! `msae kinds [KIND]`: every step kind (or one) with its parameters, outputs and notes.

use std::process::ExitCode;

use anyhow::{bail, Result};

use crate::step::spec::{Default, Role};
use crate::step::Registry;

pub fn kinds(kinds: Registry, only: Option<&str>) -> Result<ExitCode> {
    if let Some(name) = only {
        if kinds.find(name).is_none() {
            let known: Vec<&str> = kinds.kinds().iter().map(|s| s.kind()).collect();
            bail!(
                "unknown step kind `{name}`; the kinds are {}",
                known.join(", ")
            );
        }
    }
    for step in kinds
        .kinds()
        .iter()
        .filter(|s| only.is_none_or(|k| s.kind() == k))
    {
        println!(
            "{} (version {}): {}",
            step.kind(),
            step.version(),
            step.about()
        );
        for p in step.params() {
            let default = match p.default {
                Default::Required => "required".to_string(),
                Default::Absent => "optional".to_string(),
                Default::ExperimentSeed => "default: experiment seed".to_string(),
                other => format!(
                    "default: {}",
                    p.default_value(0)
                        .map(|v| v.to_string())
                        .unwrap_or_else(|| format!("{other:?}"))
                ),
            };
            let role = match p.role {
                Role::Keyed => "",
                Role::Input => ", input",
                Role::File => ", file",
                Role::Exec => ", not keyed",
                Role::Locator => ", locates files (their content is keyed)",
            };
            let grid = if p.gridable { ", grid" } else { "" };
            println!(
                "  {:14} {}{grid}{role} ({default}): {}",
                p.name,
                p.ty.describe(),
                p.doc
            );
        }
        for o in step.outputs() {
            println!(
                "  -> {:11} {}{}",
                o.name,
                o.doc,
                if o.optional { " (optional)" } else { "" }
            );
        }
        for line in step.details().lines() {
            println!("  {line}");
        }
        println!();
    }
    Ok(ExitCode::SUCCESS)
}
