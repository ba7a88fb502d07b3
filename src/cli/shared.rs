//! Helpers the subcommands share: loading an experiment against the program's step kinds,
//! opening the store, finding an instance by name, and short printed forms.

use std::path::Path;

use anyhow::{bail, Result};

use super::args::Global;
use crate::diagnostic::nearest;
use crate::experiment::{self, Experiment, Plan};
use crate::runner::reasons::Reason;
use crate::step::Registry;
use crate::store::Store;

/// The step kinds of this program. This is the one place where the engine (loader, runner) and
/// the domain (the SAE step kinds) meet: every command hands this registry over.
pub fn kinds() -> Registry {
    crate::kinds::registry()
}

/// Reads an experiment against [`kinds`] and expands its grids.
pub fn load(path: &Path) -> Result<(Experiment, Plan)> {
    let exp = experiment::load(path, kinds())?;
    let plan = experiment::expand(&exp)?;
    Ok((exp, plan))
}

pub fn open(g: &Global, command: &str) -> Result<Store> {
    Store::open(&g.cache, command, g.wait)
}

/// For commands that only read: while a run holds the store, or when it cannot be written, its
/// published snapshot (the latter said on stderr, so `--format json` output stays one document).
pub fn open_read(g: &Global, command: &str) -> Result<Store> {
    let store = Store::open_read(&g.cache, command, g.wait)?;
    if let Some(note) = store.read_only_notice() {
        eprintln!("{note}");
    }
    Ok(store)
}

/// The instance `name` of the plan, or an error that suggests the nearest name.
pub fn find_instance<'p>(
    exp: &Experiment,
    p: &'p Plan,
    name: &str,
) -> Result<&'p crate::experiment::Instance> {
    if let Some(inst) = p.find(name) {
        return Ok(inst);
    }
    let names: Vec<&str> = p.instances.iter().map(|i| i.name.as_str()).collect();
    let hint = match nearest(name, names.iter().copied()) {
        Some(s) => format!("did you mean `{s}`?"),
        None => format!("its instances are: {}", names.join(", ")),
    };
    bail!(
        "experiment `{}` has no instance `{name}`\n  = help: {hint}",
        exp.name
    )
}

pub fn join(reasons: &[Reason]) -> String {
    reasons
        .iter()
        .map(|r| r.to_string())
        .collect::<Vec<_>>()
        .join("; ")
}

pub fn short(key: Option<&str>) -> &str {
    key.map(|k| &k[..k.len().min(12)]).unwrap_or("?")
}

/// Bytes under `path`, folders included (0 where it cannot be read).
pub fn dir_size(path: &Path) -> u64 {
    let Ok(entries) = std::fs::read_dir(path) else {
        return 0;
    };
    entries
        .flatten()
        .map(|e| match e.file_type() {
            Ok(t) if t.is_dir() => dir_size(&e.path()),
            _ => e.metadata().map(|m| m.len()).unwrap_or(0),
        })
        .sum()
}

pub fn human_bytes(b: u64) -> String {
    let units = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = b as f64;
    let mut u = 0;
    while v >= 1024.0 && u < units.len() - 1 {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{b} B")
    } else {
        format!("{v:.1} {}", units[u])
    }
}
