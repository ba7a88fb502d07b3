//! Computing an instance's key from its parameters and the content of its inputs, and explaining
//! how it differs from the key of the instance's last run.

use std::collections::BTreeMap;
use std::path::PathBuf;

use anyhow::Result;

use crate::experiment::{Instance, Plan};
use crate::steps::spec::Role;
use crate::steps::{InputArtifact, Resource};
use crate::store::{ArtifactRecord, FileComponent, KeyComponents, Store};

/// The outputs of an instance that finished (ran or was cached) in this walk.
pub type Outputs = BTreeMap<String, ArtifactRecord>;

pub enum Readiness {
    /// All inputs are known: the key can be computed.
    Ready(Prepared),
    /// An upstream instance has not finished (it will run first, or it failed).
    Waiting { upstream: String },
}

pub struct Prepared {
    pub components: KeyComponents,
    pub key: String,
    pub inputs: BTreeMap<String, InputArtifact>,
    pub files: BTreeMap<String, PathBuf>,
    pub resources: BTreeMap<String, Resource>,
}

/// Gathers what the key needs. Fails for a missing external file or an output the upstream step
/// did not produce.
pub fn prepare(
    inst: &Instance,
    plan: &Plan,
    done: &[Option<Outputs>],
    store: &Store,
) -> Result<Readiness> {
    let mut inputs = BTreeMap::new();
    let mut input_hashes = BTreeMap::new();
    for (param, input) in &inst.inputs {
        let upstream = &plan.instances[input.instance];
        let Some(outputs) = &done[input.instance] else {
            return Ok(Readiness::Waiting {
                upstream: upstream.name.clone(),
            });
        };
        let Some(artifact) = outputs.get(&input.output) else {
            anyhow::bail!(
                "`{}` reads output `{}` of `{}`, which that instance did not produce",
                inst.name,
                input.output,
                upstream.name
            );
        };
        input_hashes.insert(param.clone(), artifact.hash.clone());
        inputs.insert(
            param.clone(),
            InputArtifact {
                path: store.objects.path(&artifact.hash),
                hash: artifact.hash.clone(),
                from: upstream.name.clone(),
            },
        );
    }
    let mut files = BTreeMap::new();
    let mut file_components = BTreeMap::new();
    for (param, (written, resolved)) in &inst.files {
        if !resolved.is_file() {
            anyhow::bail!(
                "`{}`: the file `{written}` given as `{param}` does not exist (looked for {})",
                inst.name,
                resolved.display()
            );
        }
        let hash = store.index.file_hash(resolved)?;
        file_components.insert(
            param.clone(),
            FileComponent {
                path: written.clone(),
                hash,
            },
        );
        files.insert(param.clone(), resolved.clone());
    }
    let mut resources = BTreeMap::new();
    for resource in inst.kind.resources(&inst.params, &plan.base_dir)? {
        let hash = resource_hash(&resource, store)?;
        // Where a resource was found is not part of its identity: the same weights in a folder
        // or in the hub cache, the same images under another root, give the same key.
        file_components.insert(
            resource.name.clone(),
            FileComponent {
                path: String::new(),
                hash,
            },
        );
        resources.insert(resource.name.clone(), resource);
    }
    let params = inst
        .params
        .iter()
        .filter(|(name, _)| {
            crate::steps::param(inst.kind, name).is_some_and(|p| p.role == Role::Keyed)
        })
        .map(|(k, v)| (k.clone(), v.canonical()))
        .collect();
    let components = KeyComponents {
        kind: inst.kind.kind().to_string(),
        version: inst.kind.version(),
        params,
        inputs: input_hashes,
        files: file_components,
    };
    let key = components.key();
    Ok(Readiness::Ready(Prepared {
        components,
        key,
        inputs,
        files,
        resources,
    }))
}

/// One hash over a resource group: every file's name and content hash, in order.
fn resource_hash(resource: &Resource, store: &Store) -> Result<String> {
    let mut h = blake3::Hasher::new();
    for (name, path) in &resource.files {
        let hash = store.index.file_hash(path).map_err(|e| {
            anyhow::anyhow!(
                "`{}` ({}): cannot read {}: {e:#}",
                resource.name,
                resource.described,
                path.display()
            )
        })?;
        h.update(name.as_bytes());
        h.update(b"\0");
        h.update(hash.as_bytes());
        h.update(b"\n");
    }
    for (name, identity) in &resource.identities {
        h.update(name.as_bytes());
        h.update(b"\0");
        h.update(identity.as_bytes());
        h.update(b"\n");
    }
    Ok(h.finalize().to_hex().to_string())
}

fn show(v: &serde_json::Value) -> String {
    match v {
        serde_json::Value::String(s) => s.strip_prefix("f:").unwrap_or(s).to_string(),
        other => other.to_string(),
    }
}

fn short(hash: &str) -> &str {
    &hash[..hash.len().min(12)]
}

/// Each difference between the last run's key components and the current ones, in words.
pub fn explain(
    old: &KeyComponents,
    new: &KeyComponents,
    old_from: &BTreeMap<String, String>,
    new_from: &BTreeMap<String, String>,
) -> Vec<String> {
    let mut out = Vec::new();
    if old.kind != new.kind {
        out.push(format!("step kind {} → {}", old.kind, new.kind));
    }
    if old.version != new.version {
        out.push(format!(
            "step version {} → {} (msae changed how `{}` computes its results)",
            old.version, new.version, new.kind
        ));
    }
    let names: std::collections::BTreeSet<&String> =
        old.params.keys().chain(new.params.keys()).collect();
    for name in names {
        match (old.params.get(name), new.params.get(name)) {
            (Some(a), Some(b)) if a != b => {
                out.push(format!("param {name}: {} → {}", show(a), show(b)))
            }
            (None, Some(b)) => out.push(format!("param {name}: (not set) → {}", show(b))),
            (Some(a), None) => out.push(format!("param {name}: {} → (not set)", show(a))),
            _ => {}
        }
    }
    let names: std::collections::BTreeSet<&String> =
        old.inputs.keys().chain(new.inputs.keys()).collect();
    for name in names {
        match (old.inputs.get(name), new.inputs.get(name)) {
            (Some(a), Some(b)) if a != b => {
                let from_old = old_from.get(name).map(String::as_str).unwrap_or("?");
                let from_new = new_from.get(name).map(String::as_str).unwrap_or("?");
                let source = if from_old == from_new {
                    format!("from {from_new}")
                } else {
                    format!("from {from_old} → {from_new}")
                };
                out.push(format!(
                    "input {name}: new content ({source}; {} → {})",
                    short(a),
                    short(b)
                ));
            }
            (None, Some(_)) => out.push(format!("input {name}: added")),
            (Some(_), None) => out.push(format!("input {name}: removed")),
            _ => {}
        }
    }
    let names: std::collections::BTreeSet<&String> =
        old.files.keys().chain(new.files.keys()).collect();
    for name in names {
        match (old.files.get(name), new.files.get(name)) {
            (Some(a), Some(b)) => {
                if a.path != b.path {
                    out.push(format!("file {name}: path {} → {}", a.path, b.path));
                }
                if a.hash != b.hash {
                    out.push(format!(
                        "file {name}: content changed ({} → {})",
                        short(&a.hash),
                        short(&b.hash)
                    ));
                }
            }
            (None, Some(b)) => out.push(format!("file {name}: added ({})", b.path)),
            (Some(a), None) => out.push(format!("file {name}: removed ({})", a.path)),
            _ => {}
        }
    }
    out
}
