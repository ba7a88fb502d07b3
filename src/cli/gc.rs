//! `msae gc`: remove what no listed experiment refers to.

use std::collections::BTreeSet;
use std::process::ExitCode;

use anyhow::Result;

use super::args::Global;
use super::shared::{dir_size, human_bytes, load, open};
use crate::experiment::{Experiment, Plan};
use crate::runner::plan::{cached_records, plan};

pub fn gc(g: &Global, experiments: &[std::path::PathBuf], dry_run: bool) -> Result<ExitCode> {
    let loaded: Vec<(Experiment, Plan)> =
        experiments.iter().map(|e| load(e)).collect::<Result<_>>()?;
    let store = open(g, "msae gc")?;
    let mut keep_keys = BTreeSet::new();
    for (exp, p) in &loaded {
        for r in cached_records(p, &store)?.into_iter().flatten() {
            keep_keys.insert(r.key);
        }
        // Checkpoints of instances that will run are worth keeping too.
        for e in plan(exp, p, &store)? {
            if let Some(k) = e.key {
                keep_keys.insert(k);
            }
        }
    }
    let records = store.index.all_records()?;
    let mut live_objects = BTreeSet::new();
    let mut dropped = 0;
    for r in &records {
        if keep_keys.contains(&r.key) {
            live_objects.extend(r.outputs.values().map(|a| a.hash.clone()));
        } else {
            dropped += 1;
            if !dry_run {
                store.index.remove_record(&r.key)?;
            }
        }
    }
    let mut freed = 0u64;
    let mut objects = 0;
    for (hash, size) in store.objects.list()? {
        if !live_objects.contains(&hash) {
            freed += size;
            objects += 1;
            if !dry_run {
                store.objects.discard(&hash);
            }
        }
    }
    let mut partials = 0;
    if let Ok(entries) = std::fs::read_dir(store.root.join("partial")) {
        for e in entries.flatten() {
            let key = e.file_name().to_string_lossy().to_string();
            if !keep_keys.contains(&key) {
                freed += dir_size(&e.path());
                partials += 1;
                if !dry_run {
                    std::fs::remove_dir_all(e.path()).ok();
                }
            }
        }
    }
    if !dry_run {
        store.index.prune_pointers()?;
        store.index.flush()?;
    }
    println!(
        "{}{dropped} record(s), {objects} object(s), {partials} checkpoint folder(s): {} freed",
        if dry_run { "would remove " } else { "removed " },
        human_bytes(freed)
    );
    Ok(ExitCode::SUCCESS)
}
