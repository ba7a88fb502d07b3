//! `msae cache du` and `msae cache verify`: what the store holds, and whether it is intact.

use std::collections::BTreeMap;
use std::process::ExitCode;

use anyhow::Result;

use super::args::Global;
use super::shared::{dir_size, human_bytes, open, open_read};

/// Records and distinct objects (hash → size) of one (experiment, step, kind).
type DuGroups = BTreeMap<(String, String, String), (usize, BTreeMap<String, u64>)>;

/// One row of `cache du`.
#[derive(serde::Serialize)]
struct DuRow {
    experiment: String,
    step: String,
    kind: String,
    records: usize,
    bytes: u64,
}

pub fn du(g: &Global, json: bool) -> Result<ExitCode> {
    let store = open_read(g, "msae cache du")?;
    let mut groups = DuGroups::new();
    for r in store.index.all_records()? {
        let step = r
            .instance
            .split('[')
            .next()
            .unwrap_or(&r.instance)
            .to_string();
        let entry = groups
            .entry((r.experiment.clone(), step, r.components.kind.clone()))
            .or_default();
        entry.0 += 1;
        for a in r.outputs.values() {
            entry.1.insert(a.hash.clone(), a.size);
        }
    }
    let rows: Vec<DuRow> = groups
        .into_iter()
        .map(|((experiment, step, kind), (records, objs))| DuRow {
            experiment,
            step,
            kind,
            records,
            bytes: objs.values().sum(),
        })
        .collect();
    let objects: u64 = store.objects.list()?.iter().map(|(_, s)| s).sum();
    let checkpoints = dir_size(&store.root.join("partial"));
    if json {
        let report = serde_json::json!({
            "steps": rows,
            "objects_bytes": objects,
            "checkpoints_bytes": checkpoints,
        });
        println!("{}", serde_json::to_string_pretty(&report)?);
        return Ok(ExitCode::SUCCESS);
    }
    println!("| experiment | step | kind | records | bytes |");
    println!("|---|---|---|---|---|");
    for r in &rows {
        println!(
            "| {} | {} | {} | {} | {} |",
            r.experiment,
            r.step,
            r.kind,
            r.records,
            human_bytes(r.bytes)
        );
    }
    println!(
        "\nobjects on disk: {} (identical outputs stored once); checkpoints: {}",
        human_bytes(objects),
        human_bytes(checkpoints)
    );
    Ok(ExitCode::SUCCESS)
}

pub fn verify(g: &Global) -> Result<ExitCode> {
    let store = open(g, "msae cache verify")?;
    let mut checked = BTreeMap::new();
    let mut bad = 0;
    for r in store.index.all_records()? {
        for (name, a) in &r.outputs {
            let ok = match checked.get(&a.hash) {
                Some(ok) => *ok,
                None => {
                    let ok = store.objects.verify(&a.hash, a.size)?;
                    checked.insert(a.hash.clone(), ok);
                    if !ok {
                        store.objects.discard(&a.hash);
                    }
                    ok
                }
            };
            if !ok {
                bad += 1;
                println!(
                    "damaged: output `{name}` of {} ({})",
                    r.instance,
                    &a.hash[..12]
                );
            }
        }
    }
    println!("{} object(s) checked, {bad} damaged", checked.len());
    if bad > 0 {
        println!("damaged objects were removed; the next `msae run` recomputes them");
        return Ok(ExitCode::from(1));
    }
    Ok(ExitCode::SUCCESS)
}
