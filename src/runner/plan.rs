//! Dry runs: what `msae run` would do for each instance, and why.

use anyhow::Result;
use serde::Serialize;

use crate::experiment::{Experiment, Plan};
use crate::runner::keys::{explain, prepare, Outputs, Readiness};
use crate::runner::reasons::Reason;
use crate::store::{Record, Store};

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum PlanStatus {
    /// A record with this key exists and its outputs are present.
    Cached,
    /// Never ran under this name.
    New,
    /// Ran before with another key; the reasons list what differs.
    Changed,
    /// An upstream instance runs first; only then is this key known.
    Pending,
    /// Cannot run as written (e.g. a missing file).
    Error,
}

#[derive(Debug, Clone, Serialize)]
pub struct PlanEntry {
    pub name: String,
    pub step: String,
    pub status: PlanStatus,
    pub key: Option<String>,
    pub reasons: Vec<Reason>,
}

/// The state of every instance, walking the DAG as `run` would but running nothing.
pub fn plan(exp: &Experiment, plan: &Plan, store: &Store) -> Result<Vec<PlanEntry>> {
    let mut done: Vec<Option<Outputs>> = vec![None; plan.instances.len()];
    let mut out = Vec::new();
    for inst in &plan.instances {
        let entry = |status, key, reasons| PlanEntry {
            name: inst.name.clone(),
            step: inst.step.clone(),
            status,
            key,
            reasons,
        };
        let prepared = match prepare(inst, plan, &done, store) {
            Ok(Readiness::Ready(p)) => p,
            Ok(Readiness::Waiting { upstream }) => {
                out.push(entry(
                    PlanStatus::Pending,
                    None,
                    vec![Reason::Upstream { instance: upstream }],
                ));
                continue;
            }
            Err(e) => {
                out.push(entry(
                    PlanStatus::Error,
                    None,
                    vec![Reason::Error {
                        message: format!("{e:#}"),
                    }],
                ));
                continue;
            }
        };
        let record = store.index.record(&prepared.key)?;
        if let Some(r) = &record {
            let missing = r
                .outputs
                .iter()
                .find(|(_, a)| !store.objects.present(&a.hash, a.size));
            match missing {
                None => {
                    done[inst.index] = Some(r.outputs.clone());
                    out.push(entry(PlanStatus::Cached, Some(prepared.key), Vec::new()));
                }
                Some((output, a)) => out.push(entry(
                    PlanStatus::Changed,
                    Some(prepared.key),
                    vec![Reason::MissingOutput {
                        output: output.clone(),
                        hash: a.hash.clone(),
                    }],
                )),
            }
            continue;
        }
        let new_from = inst
            .inputs
            .iter()
            .map(|(k, v)| (k.clone(), plan.instances[v.instance].name.clone()))
            .collect();
        match store.index.latest(&exp.name, &inst.name)? {
            Some(last) => {
                let reasons = explain(
                    &last.components,
                    &prepared.components,
                    &last.input_from,
                    &new_from,
                );
                out.push(entry(PlanStatus::Changed, Some(prepared.key), reasons));
            }
            None => out.push(entry(
                PlanStatus::New,
                Some(prepared.key),
                vec![Reason::NeverRan],
            )),
        }
    }
    Ok(out)
}

/// Finished records of the instances that are cached now (for tables and gc).
pub fn cached_records(plan: &Plan, store: &Store) -> Result<Vec<Option<Record>>> {
    let mut done: Vec<Option<Outputs>> = vec![None; plan.instances.len()];
    let mut out = Vec::with_capacity(plan.instances.len());
    for inst in &plan.instances {
        let record = match prepare(inst, plan, &done, store) {
            Ok(Readiness::Ready(p)) => store.index.record(&p.key)?,
            _ => None,
        };
        if let Some(r) = &record {
            done[inst.index] = Some(r.outputs.clone());
        }
        out.push(record);
    }
    Ok(out)
}
