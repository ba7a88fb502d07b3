//! Computing an instance's key from its parameters and the content of its inputs, and explaining
//! how it differs from the key of the instance's last run.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;

use anyhow::Result;

use super::reasons::Reason;
use crate::experiment::{Instance, Plan};
use crate::step::spec::Role;
use crate::step::{InputArtifact, Resource};
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
        .filter(|(name, _)| inst.kind.param(name).is_some_and(|p| p.role == Role::Keyed))
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

/// Each difference between the last run's key components and the current ones.
pub fn explain(
    old: &KeyComponents,
    new: &KeyComponents,
    old_from: &BTreeMap<String, String>,
    new_from: &BTreeMap<String, String>,
) -> Vec<Reason> {
    let mut out = Vec::new();
    if old.kind != new.kind {
        out.push(Reason::Kind {
            old: old.kind.clone(),
            new: new.kind.clone(),
        });
    }
    if old.version != new.version {
        out.push(Reason::Version {
            kind: new.kind.clone(),
            old: old.version,
            new: new.version,
        });
    }
    let names: BTreeSet<&String> = old.params.keys().chain(new.params.keys()).collect();
    for name in names {
        let (a, b) = (old.params.get(name), new.params.get(name));
        if a != b {
            out.push(Reason::Parameter {
                name: name.clone(),
                old: a.cloned(),
                new: b.cloned(),
            });
        }
    }
    let names: BTreeSet<&String> = old.inputs.keys().chain(new.inputs.keys()).collect();
    for name in names {
        let (a, b) = (old.inputs.get(name), new.inputs.get(name));
        if a != b {
            out.push(Reason::Input {
                name: name.clone(),
                old: a.cloned(),
                new: b.cloned(),
                old_from: a.and(old_from.get(name).cloned()),
                new_from: b.and(new_from.get(name).cloned()),
            });
        }
    }
    let names: BTreeSet<&String> = old.files.keys().chain(new.files.keys()).collect();
    for name in names {
        let (a, b) = (old.files.get(name), new.files.get(name));
        if a != b {
            out.push(Reason::File {
                name: name.clone(),
                old: a.cloned(),
                new: b.cloned(),
            });
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn components() -> KeyComponents {
        KeyComponents {
            kind: "train".into(),
            version: 3,
            params: BTreeMap::from([
                ("lr".to_string(), json!("f:0.001")),
                ("k".to_string(), json!(8)),
            ]),
            inputs: BTreeMap::from([("data".to_string(), "a".repeat(64))]),
            files: BTreeMap::from([(
                "path".to_string(),
                FileComponent {
                    path: "x.npy".into(),
                    hash: "1".repeat(64),
                },
            )]),
        }
    }

    fn from(name: &str) -> BTreeMap<String, String> {
        BTreeMap::from([("data".to_string(), name.to_string())])
    }

    /// The reasons, and the lines `why` prints for them.
    fn explained(old: &KeyComponents, new: &KeyComponents) -> (Vec<Reason>, Vec<String>) {
        let reasons = explain(old, new, &from("data"), &from("data2"));
        let lines = reasons.iter().map(|r| r.to_string()).collect();
        (reasons, lines)
    }

    #[test]
    fn identical_components_give_no_reason() {
        let c = components();
        assert_eq!(explained(&c, &c.clone()).0, vec![]);
    }

    #[test]
    fn a_changed_kind_is_named_with_both_kinds() {
        let old = components();
        let new = KeyComponents {
            kind: "import".into(),
            ..components()
        };
        let (reasons, lines) = explained(&old, &new);
        assert_eq!(
            reasons,
            vec![Reason::Kind {
                old: "train".into(),
                new: "import".into()
            }]
        );
        assert_eq!(lines, vec!["step kind train → import"]);
    }

    #[test]
    fn a_changed_version_names_the_step_kind() {
        let new = KeyComponents {
            version: 4,
            ..components()
        };
        let (reasons, lines) = explained(&components(), &new);
        assert_eq!(
            reasons,
            vec![Reason::Version {
                kind: "train".into(),
                old: 3,
                new: 4
            }]
        );
        assert_eq!(
            lines,
            vec!["step version 3 → 4 (msae changed how `train` computes its results)"]
        );
    }

    #[test]
    fn parameters_changed_added_and_removed_are_each_listed_by_name() {
        let mut new = components();
        new.params.insert("lr".into(), json!("f:0.0005"));
        new.params.remove("k");
        new.params.insert("epochs".into(), json!(2));
        let (reasons, lines) = explained(&components(), &new);
        // In name order: epochs (added), k (removed), lr (changed).
        assert_eq!(
            reasons,
            vec![
                Reason::Parameter {
                    name: "epochs".into(),
                    old: None,
                    new: Some(json!(2))
                },
                Reason::Parameter {
                    name: "k".into(),
                    old: Some(json!(8)),
                    new: None
                },
                Reason::Parameter {
                    name: "lr".into(),
                    old: Some(json!("f:0.001")),
                    new: Some(json!("f:0.0005"))
                },
            ]
        );
        assert_eq!(
            lines,
            vec![
                "param epochs: (not set) → 2",
                "param k: 8 → (not set)",
                "param lr: 0.001 → 0.0005"
            ]
        );
    }

    #[test]
    fn an_input_with_new_content_names_its_upstream_instances() {
        let mut new = components();
        new.inputs.insert("data".into(), "b".repeat(64));
        let (reasons, lines) = explained(&components(), &new);
        assert_eq!(
            reasons,
            vec![Reason::Input {
                name: "data".into(),
                old: Some("a".repeat(64)),
                new: Some("b".repeat(64)),
                old_from: Some("data".into()),
                new_from: Some("data2".into()),
            }]
        );
        assert_eq!(
            lines,
            vec!["input data: new content (from data → data2; aaaaaaaaaaaa → bbbbbbbbbbbb)"]
        );
        // The same upstream instance is named once.
        let same = explain(&components(), &new, &from("up"), &from("up"));
        assert_eq!(
            same[0].to_string(),
            "input data: new content (from up; aaaaaaaaaaaa → bbbbbbbbbbbb)"
        );
    }

    #[test]
    fn inputs_added_and_removed_are_listed_without_an_upstream_for_the_absent_side() {
        let mut new = components();
        new.inputs.remove("data");
        let (reasons, lines) = explained(&components(), &new);
        assert_eq!(
            reasons,
            vec![Reason::Input {
                name: "data".into(),
                old: Some("a".repeat(64)),
                new: None,
                old_from: Some("data".into()),
                new_from: None,
            }]
        );
        assert_eq!(lines, vec!["input data: removed"]);
        let (reasons, lines) = explained(&new, &components());
        assert!(matches!(
            &reasons[..],
            [Reason::Input { old: None, old_from: None, new_from: Some(n), .. }] if n == "data2"
        ));
        assert_eq!(lines, vec!["input data: added"]);
    }

    #[test]
    fn a_file_change_says_whether_the_path_or_the_content_changed() {
        let file = |path: &str, hash: char| FileComponent {
            path: path.into(),
            hash: hash.to_string().repeat(64),
        };
        let with = |f: Option<FileComponent>| {
            let mut c = components();
            match f {
                Some(f) => c.files.insert("path".into(), f),
                None => c.files.remove("path"),
            };
            c
        };
        let old = with(Some(file("x.npy", '1')));
        let cases = [
            (Some(file("y.npy", '1')), "file path: path x.npy → y.npy"),
            (
                Some(file("x.npy", '2')),
                "file path: content changed (111111111111 → 222222222222)",
            ),
            (
                Some(file("y.npy", '2')),
                "file path: path x.npy → y.npy; file path: content changed (111111111111 → 222222222222)",
            ),
            (None, "file path: removed (x.npy)"),
        ];
        for (new_file, line) in cases {
            let (reasons, lines) = explained(&old, &with(new_file.clone()));
            assert_eq!(
                reasons,
                vec![Reason::File {
                    name: "path".into(),
                    old: Some(file("x.npy", '1')),
                    new: new_file,
                }]
            );
            assert_eq!(lines, vec![line]);
        }
        let (_, lines) = explained(&with(None), &old);
        assert_eq!(lines, vec!["file path: added (x.npy)"]);
    }

    #[test]
    fn several_differences_are_all_listed_in_a_fixed_order() {
        let mut new = components();
        new.version = 4;
        new.params.insert("k".into(), json!(16));
        new.inputs.insert("data".into(), "c".repeat(64));
        new.files.clear();
        let kinds: Vec<&str> = explain(&components(), &new, &from("d"), &from("d"))
            .iter()
            .map(|r| match r {
                Reason::Version { .. } => "version",
                Reason::Parameter { .. } => "parameter",
                Reason::Input { .. } => "input",
                Reason::File { .. } => "file",
                _ => "other",
            })
            .collect();
        assert_eq!(kinds, vec!["version", "parameter", "input", "file"]);
    }
}
