//! `msae report`: write the report page of what is cached.

use std::path::Path;
use std::process::ExitCode;

use anyhow::Result;

use super::args::Global;
use super::shared::{load, open_read};
use crate::report::state::PageState;
use crate::report::{self};

pub fn report(g: &Global, path: &Path, results: &Path) -> Result<ExitCode> {
    let (exp, p) = load(path)?;
    let store = open_read(g, "msae report")?;
    let snap = PageState::from_store(&exp, &p, &store)?;
    let page = report::page::write(&results.join(&exp.name), &exp, &p, &snap, &store.objects)?;
    println!("{}", page.display());
    Ok(ExitCode::SUCCESS)
}
