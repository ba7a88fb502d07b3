//! `msae kinds`: every step kind with its parameters and outputs.

use std::process::ExitCode;

use anyhow::Result;

use crate::step::spec::{Default, Role};
use crate::step::Registry;

pub fn kinds(kinds: Registry) -> Result<ExitCode> {
    for step in kinds.kinds() {
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
        println!();
    }
    Ok(ExitCode::SUCCESS)
}
