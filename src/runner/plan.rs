//! Dry runs: what `msae run` would do for each instance, and why.

use anyhow::Result;
use serde::Serialize;

use crate::experiment::{Experiment, Plan};
use crate::runner::keys::{explain, prepare, Outputs, Readiness};
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
    pub reasons: Vec<String>,
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
                    vec![format!("waits for {upstream}")],
                ));
                continue;
            }
            Err(e) => {
                out.push(entry(PlanStatus::Error, None, vec![format!("{e:#}")]));
                continue;
            }
        };
        let record = store.index.record(&prepared.key)?;
        if let Some(r) = record.filter(|r| {
            r.outputs
                .values()
                .all(|a| store.objects.present(&a.hash, a.size))
        }) {
            done[inst.index] = Some(r.outputs.clone());
            out.push(entry(PlanStatus::Cached, Some(prepared.key), Vec::new()));
            continue;
        }
        let new_from = inst
            .inputs
            .iter()
            .map(|(k, v)| (k.clone(), plan.instances[v.instance].name.clone()))
            .collect();
        match store.index.latest(&exp.name, &inst.name)? {
            Some(last) => {
                let mut reasons = explain(
                    &last.components,
                    &prepared.components,
                    &last.input_from,
                    &new_from,
                );
                if reasons.is_empty() {
                    reasons.push("an output of its last run is missing from the store".into());
                }
                out.push(entry(PlanStatus::Changed, Some(prepared.key), reasons));
            }
            None => out.push(entry(
                PlanStatus::New,
                Some(prepared.key),
                vec!["never ran".into()],
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
