//! Walking the instance DAG: reuse what is cached, run what is not, record everything.
//!
//! Freshness rules, in one place:
//! * An instance's key is BLAKE3 over its kind, the kind's version, its keyed parameters, the
//!   content hashes of its inputs and of the external files it reads ([`keys::prepare`]).
//! * A key with a record whose objects are present (size check; full hash with `verify`) is
//!   cached. A record with a missing or damaged object is not served: the step runs again.
//! * Because keys use input *content*, an upstream re-run that produces the same bytes leaves
//!   everything downstream cached (early cut-off).
//! * A step runs in a scratch folder; only after all its outputs are safely in the object store is
//!   its record written and flushed. A crash at any point leaves finished steps intact.

pub mod keys;
pub mod plan;
pub mod progress;

use std::collections::BTreeMap;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::time::Instant;

use anyhow::{anyhow, Result};
use serde::Serialize;

use crate::experiment::{Experiment, Instance, Plan};
use crate::steps::StepContext;
use crate::store::{now_unix, ArtifactRecord, FailureRecord, Record, Store};
use keys::{prepare, Outputs, Prepared, Readiness};
use progress::Progress;

pub struct RunOptions {
    pub keep_going: bool,
    pub verify: bool,
    pub device: String,
    pub threads: usize,
    /// Told before each instance runs (e.g. to refresh the report page); may be absent.
    pub observer: Option<Box<dyn Observer>>,
}

/// Watches a run: called before each instance that is not cached starts, with the outcomes so
/// far. It must not fail the run; problems are its own to report.
pub trait Observer {
    fn before_instance(
        &self,
        exp: &Experiment,
        plan: &Plan,
        store: &Store,
        outcomes: &[Outcome],
        running: &Instance,
    );
}

#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    Ran,
    Cached,
    Failed,
    /// Not run because an input failed or the run stopped early.
    Skipped,
}

#[derive(Debug, Clone, Serialize)]
pub struct Outcome {
    pub name: String,
    pub key: Option<String>,
    pub status: Status,
    pub seconds: f64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// Why an object of a record cannot be served.
fn damaged_output(store: &Store, record: &Record, verify: bool) -> Result<Option<String>> {
    for (name, a) in &record.outputs {
        let ok = if verify {
            store.objects.verify(&a.hash, a.size)?
        } else {
            store.objects.present(&a.hash, a.size)
        };
        if !ok {
            return Ok(Some(name.clone()));
        }
    }
    Ok(None)
}

/// Runs every instance of the plan that is not cached.
pub fn run(
    exp: &Experiment,
    plan: &Plan,
    store: &Store,
    opts: &RunOptions,
    progress: &Progress,
) -> Result<Vec<Outcome>> {
    store.clear_tmp()?;
    let mut done: Vec<Option<Outputs>> = vec![None; plan.instances.len()];
    let mut outcomes: Vec<Outcome> = Vec::with_capacity(plan.instances.len());
    let overall = progress.bar(plan.instances.len() as u64, &exp.name);
    let mut stop = false;
    for inst in &plan.instances {
        overall.inc(1);
        if stop {
            outcomes.push(skipped(inst, "the run stopped at an earlier failure"));
            continue;
        }
        let prepared = match prepare(inst, plan, &done, store) {
            Ok(Readiness::Ready(p)) => p,
            Ok(Readiness::Waiting { upstream }) => {
                outcomes.push(skipped(inst, &format!("input `{upstream}` did not finish")));
                continue;
            }
            Err(e) => {
                let msg = format!("{e:#}");
                record_failure(exp, store, inst, None, &msg)?;
                progress.println(&format!("failed  {}: {msg}", inst.name));
                outcomes.push(Outcome {
                    name: inst.name.clone(),
                    key: None,
                    status: Status::Failed,
                    seconds: 0.0,
                    error: Some(msg),
                });
                stop = !opts.keep_going;
                continue;
            }
        };
        tracing::debug!(instance = %inst.name, key = %prepared.key, "key computed");
        if let Some(record) = store.index.record(&prepared.key)? {
            match damaged_output(store, &record, opts.verify)? {
                None => {
                    if record.experiment != exp.name || record.instance != inst.name {
                        // Same work under another name: serve it, and remember it for `why`.
                        let mut mine = record.clone();
                        mine.experiment = exp.name.clone();
                        mine.instance = inst.name.clone();
                        mine.coords = coords_json(inst);
                        store.index.put(&mine)?;
                    } else if store.index.latest(&exp.name, &inst.name)?.map(|r| r.key)
                        != Some(record.key.clone())
                    {
                        store.index.put(&record)?;
                    }
                    tracing::info!(instance = %inst.name, "cached");
                    done[inst.index] = Some(record.outputs.clone());
                    outcomes.push(Outcome {
                        name: inst.name.clone(),
                        key: Some(prepared.key.clone()),
                        status: Status::Cached,
                        seconds: 0.0,
                        error: None,
                    });
                    continue;
                }
                Some(output) => {
                    progress.println(&format!(
                        "warning: output `{output}` of {} is missing or damaged in the store; running it again",
                        inst.name
                    ));
                    for a in record.outputs.values() {
                        if !store.objects.verify(&a.hash, a.size).unwrap_or(false) {
                            store.objects.discard(&a.hash);
                        }
                    }
                    store.index.remove_record(&record.key)?;
                }
            }
        }
        tracing::info!(instance = %inst.name, key = %&prepared.key[..12], "running");
        if let Some(observer) = &opts.observer {
            observer.before_instance(exp, plan, store, &outcomes, inst);
        }
        let started = Instant::now();
        match execute(exp, plan, store, opts, progress, inst, &prepared) {
            Ok(outputs) => {
                let seconds = started.elapsed().as_secs_f64();
                progress.println(&format!("ran     {} ({seconds:.2} s)", inst.name));
                done[inst.index] = Some(outputs);
                outcomes.push(Outcome {
                    name: inst.name.clone(),
                    key: Some(prepared.key.clone()),
                    status: Status::Ran,
                    seconds,
                    error: None,
                });
            }
            Err(e) => {
                let msg = format!("{e:#}");
                record_failure(exp, store, inst, Some(&prepared.key), &msg)?;
                progress.println(&format!("failed  {}: {msg}", inst.name));
                outcomes.push(Outcome {
                    name: inst.name.clone(),
                    key: Some(prepared.key.clone()),
                    status: Status::Failed,
                    seconds: started.elapsed().as_secs_f64(),
                    error: Some(msg),
                });
                stop = !opts.keep_going;
            }
        }
    }
    overall.finish_and_clear();
    Ok(outcomes)
}

fn skipped(inst: &Instance, why: &str) -> Outcome {
    Outcome {
        name: inst.name.clone(),
        key: None,
        status: Status::Skipped,
        seconds: 0.0,
        error: Some(why.to_string()),
    }
}

fn record_failure(
    exp: &Experiment,
    store: &Store,
    inst: &Instance,
    key: Option<&str>,
    msg: &str,
) -> Result<()> {
    store.index.put_failure(
        &exp.name,
        &inst.name,
        &FailureRecord {
            key: key.unwrap_or_default().to_string(),
            error: msg.to_string(),
            finished_unix: now_unix(),
        },
    )
}

pub fn coords_json(inst: &Instance) -> BTreeMap<String, serde_json::Value> {
    inst.coords
        .iter()
        .map(|(k, v)| (k.clone(), serde_json::to_value(v).unwrap_or_default()))
        .collect()
}

/// Runs one step in a scratch folder, moves its outputs into the store, writes its record.
fn execute(
    exp: &Experiment,
    plan: &Plan,
    store: &Store,
    opts: &RunOptions,
    progress: &Progress,
    inst: &Instance,
    prepared: &Prepared,
) -> Result<Outputs> {
    let started = Instant::now();
    let scratch = store.scratch(&prepared.key)?;
    let partial = store.partial_dir(&prepared.key);
    let mut ctx = StepContext::new(
        &inst.name,
        &inst.params,
        prepared.inputs.clone(),
        prepared.files.clone(),
        &opts.device,
        opts.threads,
        partial.clone(),
        scratch.clone(),
        progress,
    );
    ctx.resources = prepared.resources.clone();
    let result = catch_unwind(AssertUnwindSafe(|| inst.kind.run(&mut ctx)));
    let metrics = match result {
        Ok(r) => r?,
        Err(panic) => {
            let what = panic
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_else(|| "unknown panic".into());
            return Err(anyhow!(
                "internal error in step `{}`: {what}",
                inst.kind.kind()
            ));
        }
    };
    let mut outputs = BTreeMap::new();
    for spec in inst.kind.outputs() {
        let file = scratch.join(spec.name);
        if file.exists() {
            let (hash, size) = store.objects.insert(&file)?;
            tracing::debug!(output = spec.name, %hash, size, "stored");
            outputs.insert(spec.name.to_string(), ArtifactRecord { hash, size });
        } else if !spec.optional {
            return Err(anyhow!(
                "internal error: step `{}` finished without writing its output `{}`",
                inst.kind.kind(),
                spec.name
            ));
        }
    }
    let input_from = inst
        .inputs
        .iter()
        .map(|(k, v)| (k.clone(), plan.instances[v.instance].name.clone()))
        .collect();
    let exec = inst
        .params
        .iter()
        .filter(|(name, _)| {
            crate::steps::param(inst.kind, name)
                .is_some_and(|p| p.role == crate::steps::spec::Role::Exec)
        })
        .map(|(k, v)| (k.clone(), serde_json::to_value(v).unwrap_or_default()))
        .chain([
            (
                "device".to_string(),
                serde_json::Value::from(opts.device.clone()),
            ),
            ("threads".to_string(), serde_json::Value::from(opts.threads)),
        ])
        .collect();
    let record = Record {
        key: prepared.key.clone(),
        components: prepared.components.clone(),
        experiment: exp.name.clone(),
        instance: inst.name.clone(),
        coords: coords_json(inst),
        input_from,
        outputs: outputs.clone(),
        metrics,
        exec,
        finished_unix: now_unix(),
        seconds: started.elapsed().as_secs_f64(),
        msae_version: env!("CARGO_PKG_VERSION").to_string(),
    };
    store.index.put(&record)?;
    std::fs::remove_dir_all(&scratch).ok();
    if partial.exists() {
        std::fs::remove_dir_all(&partial).ok();
    }
    Ok(outputs)
}
