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

#[cfg(test)]
mod tests {
    //! Every status and reason of a dry run, against a real store in a temporary folder whose
    //! records are written the way a run writes them.
    use std::collections::BTreeMap;
    use std::path::Path;

    use super::*;
    use crate::runner::keys::Prepared;
    use crate::store::ArtifactRecord;

    const EXP: &str = "[experiment]\nname = \"p\"\n\n[steps.data]\nkind = \"synth\"\ndim = 8\nn_features = 16\ntrain = 100\ntest = 10\n\n[steps.st]\nkind = \"stats\"\ndata = \"data.train\"\n";

    fn setup(dir: &Path, text: &str) -> (Experiment, Plan) {
        let exp = crate::experiment::load::parse(
            &dir.join("e.toml"),
            text.to_string(),
            crate::step::fake::registry(),
        )
        .unwrap();
        let plan = crate::experiment::expand(&exp).unwrap();
        (exp, plan)
    }

    /// What each instance's dry run says: (name, status, reasons as `why` prints them).
    fn statuses(exp: &Experiment, p: &Plan, store: &Store) -> Vec<(String, String, Vec<String>)> {
        plan(exp, p, store)
            .unwrap()
            .into_iter()
            .map(|e| {
                let status = serde_json::to_value(&e.status).unwrap();
                (
                    e.name,
                    status.as_str().unwrap().to_string(),
                    e.reasons.iter().map(|r| r.to_string()).collect(),
                )
            })
            .collect()
    }

    /// Records instance `index` as finished, with one stored object per output (as a run does).
    fn finish(exp: &Experiment, p: &Plan, store: &Store, dir: &Path, index: usize) -> Record {
        let done: Vec<Option<Outputs>> = (0..p.instances.len())
            .map(|i| {
                store
                    .index
                    .latest(&exp.name, &p.instances[i].name)
                    .unwrap()
                    .map(|r| r.outputs)
            })
            .collect();
        let inst = &p.instances[index];
        let Readiness::Ready(Prepared {
            components, key, ..
        }) = prepare(inst, p, &done, store).unwrap()
        else {
            panic!("{} is not ready", inst.name)
        };
        let mut outputs = BTreeMap::new();
        for out in inst.kind.outputs() {
            let file = dir.join(format!("{}-{}", inst.name, out.name));
            // The content depends on the key: a changed instance stores different bytes.
            std::fs::write(&file, format!("{} {} {key}", inst.name, out.name)).unwrap();
            let (hash, size) = store.objects.insert(&file).unwrap();
            outputs.insert(out.name.to_string(), ArtifactRecord { hash, size });
        }
        let record = Record {
            key,
            components,
            experiment: exp.name.clone(),
            instance: inst.name.clone(),
            coords: BTreeMap::new(),
            input_from: inst
                .inputs
                .iter()
                .map(|(k, v)| (k.clone(), p.instances[v.instance].name.clone()))
                .collect(),
            outputs,
            metrics: BTreeMap::new(),
            exec: BTreeMap::new(),
            finished_unix: 0,
            seconds: 0.0,
            msae_version: "test".into(),
        };
        store.index.put(&record).unwrap();
        record
    }

    fn row(name: &str, status: &str, reasons: &[&str]) -> (String, String, Vec<String>) {
        (
            name.to_string(),
            status.to_string(),
            reasons.iter().map(|r| r.to_string()).collect(),
        )
    }

    #[test]
    fn a_new_instance_never_ran_and_its_downstream_waits_for_it() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("cache"), "test", false).unwrap();
        let (exp, p) = setup(dir.path(), EXP);
        assert_eq!(
            statuses(&exp, &p, &store),
            vec![
                row("data", "new", &["never ran"]),
                row("st", "pending", &["waits for data"]),
            ]
        );
    }

    #[test]
    fn finished_instances_are_cached_and_a_missing_object_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("cache"), "test", false).unwrap();
        let (exp, p) = setup(dir.path(), EXP);
        let data = finish(&exp, &p, &store, dir.path(), 0);
        // With data done, st's key is known: it never ran.
        assert_eq!(
            statuses(&exp, &p, &store),
            vec![row("data", "cached", &[]), row("st", "new", &["never ran"])]
        );
        finish(&exp, &p, &store, dir.path(), 1);
        assert_eq!(
            statuses(&exp, &p, &store),
            vec![row("data", "cached", &[]), row("st", "cached", &[])]
        );
        // An output object of data's record disappears: data runs again, st waits for it.
        let (name, lost) = data.outputs.iter().next().unwrap();
        std::fs::remove_file(store.objects.path(&lost.hash)).unwrap();
        let line = format!(
            "output `{name}` of its last run ({}) is missing from the store",
            &lost.hash[..12]
        );
        assert_eq!(
            statuses(&exp, &p, &store),
            vec![
                row("data", "changed", &[&line]),
                row("st", "pending", &["waits for data"]),
            ]
        );
    }

    #[test]
    fn a_changed_instance_lists_what_differs_from_its_last_run() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("cache"), "test", false).unwrap();
        let (exp, p) = setup(dir.path(), EXP);
        finish(&exp, &p, &store, dir.path(), 0);
        finish(&exp, &p, &store, dir.path(), 1);
        let (exp2, p2) = setup(dir.path(), &EXP.replace("train = 100", "train = 120"));
        let got = statuses(&exp2, &p2, &store);
        assert_eq!(got[0], row("data", "changed", &["param train: 100 → 120"]));
        // st's input will have new content only once data has run: until then it waits.
        assert_eq!(got[1], row("st", "pending", &["waits for data"]));
        // Once the changed data is recorded, st differs from its last run by its input.
        let new_data = finish(&exp2, &p2, &store, dir.path(), 0);
        assert_eq!(statuses(&exp2, &p2, &store)[0], row("data", "cached", &[]));
        let got = statuses(&exp2, &p2, &store);
        let (_, status, reasons) = &got[1];
        assert_eq!(status, "changed");
        assert_eq!(reasons.len(), 1, "{reasons:?}");
        let new_hash = &new_data.outputs["train"].hash[..12];
        assert!(
            reasons[0].starts_with("input data: new content (from data; ")
                && reasons[0].ends_with(&format!("→ {new_hash})")),
            "{reasons:?}"
        );
    }

    #[test]
    fn an_instance_that_cannot_run_as_written_is_an_error_with_the_message() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("cache"), "test", false).unwrap();
        let text = "[steps.emb]\nkind = \"import\"\npath = \"absent.npy\"\n\n[steps.st]\nkind = \"stats\"\ndata = \"emb\"\n";
        let (exp, p) = setup(dir.path(), text);
        let got = statuses(&exp, &p, &store);
        assert_eq!(got[0].1, "error");
        assert_eq!(got[0].2.len(), 1);
        assert!(
            got[0].2[0].starts_with(
                "`emb`: the file `absent.npy` given as `path` does not exist (looked for "
            ),
            "{got:?}"
        );
        assert_eq!(got[1], row("st", "pending", &["waits for emb"]));
    }
}
