//! `msae table`: the result tables of the cached instances.

use std::path::Path;
use std::process::ExitCode;

use anyhow::{bail, Result};

use super::args::Global;
use super::shared::{load, open_read};
use crate::report::table;
use crate::runner::plan::cached_records;

pub fn table(
    g: &Global,
    path: &Path,
    format: table::Format,
    kind: Option<&str>,
) -> Result<ExitCode> {
    let (exp, p) = load(path)?;
    let store = open_read(g, "msae table")?;
    let records = cached_records(&p, &store)?;
    let tables = table::build(&p, &records);
    if let Some(k) = kind {
        if !tables.iter().any(|t| t.kind == k) {
            let kinds: Vec<&str> = tables.iter().map(|t| t.kind.as_str()).collect();
            bail!(
                "no table for step kind `{k}` in experiment `{}` (tables: {})",
                exp.name,
                kinds.join(", ")
            );
        }
    }
    if tables.is_empty() {
        eprintln!(
            "no finished instances yet: run `msae run {}` first",
            path.display()
        );
    }
    // JSON is one document: one array for `--kind`, else an object keyed by kind.
    if format == table::Format::Json && kind.is_none() {
        print!("{}", table::render_json_all(&tables));
        return Ok(ExitCode::SUCCESS);
    }
    for t in tables.iter().filter(|t| kind.is_none_or(|k| t.kind == k)) {
        print!("{}", table::render(t, format));
        if format == table::Format::Markdown {
            println!();
        }
    }
    Ok(ExitCode::SUCCESS)
}
