//! Grid expansion: step definitions → step instances with readable names, and the DAG between
//! them.
//!
//! Naming rule: an instance is called `<step>[k=v,...]` with its grid coordinates sorted by key.
//! Its own coordinates are the parameters written as lists (grid axes) and those set in a
//! `[[variant]]` table. A step that consumes a grid step fans out over its instances and inherits
//! their coordinates, so a score of `sae[arch=topk,k=32]` is `score[arch=topk,k=32]`. When two
//! fanned-out inputs carry the same coordinate it is prefixed by the input's name (`a.seed`,
//! `b.seed`) unless `match` lists it (then both agree and it appears once).

use std::collections::{BTreeMap, BTreeSet};

use petgraph::algo::{kosaraju_scc, toposort};
use petgraph::graph::{DiGraph, NodeIndex};

use crate::diagnostic::Diagnostic;
use crate::experiment::load::{Experiment, SettingValue, StepDef};
use crate::step::spec::{quoted_list, Role};
use crate::step::value::Value;
use crate::step::Step;

#[derive(Debug, Clone, PartialEq)]
pub struct InstanceInput {
    pub instance: usize,
    pub output: String,
}

/// One concrete unit of work: a step kind with fixed parameters and fixed upstream instances.
#[derive(Clone)]
pub struct Instance {
    pub index: usize,
    pub step: String,
    pub kind: &'static dyn Step,
    pub name: String,
    pub coords: BTreeMap<String, Value>,
    /// Every non-input, non-file parameter value (keyed and execution-only).
    pub params: BTreeMap<String, Value>,
    /// External files: the path as written and its resolved location.
    pub files: BTreeMap<String, (String, std::path::PathBuf)>,
    pub inputs: BTreeMap<String, InstanceInput>,
}

/// All instances of an experiment in an order where inputs come first.
pub struct Plan {
    pub instances: Vec<Instance>,
    /// The experiment file's folder: relative paths of resources resolve against it.
    pub base_dir: std::path::PathBuf,
    pub by_step: BTreeMap<String, Vec<usize>>,
    /// Step ids in dependency order.
    pub step_order: Vec<String>,
}

impl Plan {
    pub fn find(&self, name: &str) -> Option<&Instance> {
        self.instances.iter().find(|i| i.name == name)
    }
}

/// Orders the steps so that every step comes after the steps it reads; a cycle is an error
/// that prints the cycle.
fn step_order(exp: &Experiment) -> Result<Vec<usize>, Diagnostic> {
    let mut graph = DiGraph::<usize, ()>::new();
    let nodes: Vec<NodeIndex> = (0..exp.steps.len()).map(|i| graph.add_node(i)).collect();
    for (i, step) in exp.steps.iter().enumerate() {
        for up in upstream_ids(step) {
            let j = exp
                .steps
                .iter()
                .position(|s| s.id == up)
                .expect("checked at load");
            graph.update_edge(nodes[j], nodes[i], ());
        }
    }
    if toposort(&graph, None).is_ok() {
        // Kahn's algorithm taking the earliest step of the file among the ready ones, so the run
        // order follows the file wherever dependencies allow.
        let mut order = Vec::with_capacity(exp.steps.len());
        let mut placed = vec![false; exp.steps.len()];
        while order.len() < exp.steps.len() {
            let next = (0..exp.steps.len())
                .find(|&i| {
                    !placed[i]
                        && graph
                            .neighbors_directed(nodes[i], petgraph::Direction::Incoming)
                            .all(|n| placed[graph[n]])
                })
                .expect("acyclic");
            placed[next] = true;
            order.push(next);
        }
        return Ok(order);
    }
    {
        {
            // The smallest strongly connected component with a cycle, printed in edge order.
            let cycle = kosaraju_scc(&graph)
                .into_iter()
                .filter(|c| c.len() > 1 || graph.contains_edge(c[0], c[0]))
                .min_by_key(|c| c.len())
                .expect("toposort found a cycle");
            let members: BTreeSet<NodeIndex> = cycle.iter().copied().collect();
            let start = *members.iter().next().expect("non-empty");
            let mut path = vec![start];
            let mut cur = start;
            loop {
                let next = graph
                    .neighbors(cur)
                    .filter(|n| members.contains(n))
                    .min()
                    .expect("a cycle member has a successor in the cycle");
                if next == start {
                    break;
                }
                if path.contains(&next) {
                    break;
                }
                path.push(next);
                cur = next;
            }
            let names: Vec<&str> = path
                .iter()
                .map(|n| exp.steps[graph[*n]].id.as_str())
                .collect();
            let first = &exp.steps[graph[start]];
            Err(exp
                .error(
                    format!("the steps form a cycle: {} → {}", names.join(" → "), names[0]),
                    first.id_span.clone(),
                )
                .help("a step can only read outputs of steps that do not read it back; remove one of these references"))
        }
    }
}

fn upstream_ids(step: &StepDef) -> BTreeSet<String> {
    let mut ids = BTreeSet::new();
    for v in &step.variants {
        for s in v.settings.values() {
            if let SettingValue::Refs(refs) = &s.value {
                for (r, _) in refs {
                    ids.insert(r.step.clone());
                }
            }
        }
    }
    ids
}

/// Expands every step into its instances.
pub fn expand(exp: &Experiment) -> Result<Plan, Diagnostic> {
    let order = step_order(exp)?;
    let mut instances: Vec<Instance> = Vec::new();
    let mut by_step: BTreeMap<String, Vec<usize>> = BTreeMap::new();
    for &si in &order {
        let step = &exp.steps[si];
        let own_coord_keys = own_coordinate_keys(step);
        let mut made: Vec<Instance> = Vec::new();
        for variant in &step.variants {
            // Own grid.
            let mut axes: Vec<(String, Vec<Value>)> = Vec::new();
            let mut fixed: BTreeMap<String, Value> = BTreeMap::new();
            let mut inputs: Vec<(String, Vec<InstanceInput>, bool)> = Vec::new();
            for p in step.kind.params() {
                match variant.settings.get(p.name) {
                    Some(setting) => match &setting.value {
                        SettingValue::Single(v) => {
                            fixed.insert(p.name.to_string(), v.clone());
                        }
                        SettingValue::Axis(vs) => axes.push((p.name.to_string(), vs.clone())),
                        SettingValue::Refs(refs) => {
                            let mut cands = Vec::new();
                            let mut steps_seen = BTreeSet::new();
                            for (r, span) in refs {
                                let target = exp.step(&r.step).expect("checked at load");
                                let output = r
                                    .output
                                    .clone()
                                    .unwrap_or_else(|| target.kind.outputs()[0].name.to_string());
                                let pool = by_step.get(&r.step).cloned().unwrap_or_default();
                                let keys: BTreeSet<&String> = pool
                                    .iter()
                                    .flat_map(|&i| instances[i].coords.keys())
                                    .collect();
                                for (k, _) in &r.filter {
                                    if !keys.contains(k) {
                                        let list: Vec<&str> =
                                            keys.iter().map(|s| s.as_str()).collect();
                                        return Err(exp
                                            .error(format!("`{k}` is not a grid coordinate of step `{}`", r.step), span.clone())
                                            .help(if list.is_empty() {
                                                format!("step `{}` has a single instance; drop the filter", r.step)
                                            } else {
                                                format!("its coordinates are {}", quoted_list(&list))
                                            }));
                                    }
                                }
                                let selected: Vec<usize> = pool
                                    .iter()
                                    .copied()
                                    .filter(|&i| {
                                        r.filter.iter().all(|(k, v)| {
                                            instances[i]
                                                .coords
                                                .get(k)
                                                .is_some_and(|c| c.to_string() == *v)
                                        })
                                    })
                                    .collect();
                                if selected.is_empty() {
                                    let names: Vec<&str> =
                                        pool.iter().map(|&i| instances[i].name.as_str()).collect();
                                    return Err(exp
                                        .error(
                                            format!(
                                                "`{r}` selects no instance of step `{}`",
                                                r.step
                                            ),
                                            span.clone(),
                                        )
                                        .note(format!(
                                            "its instances are {}",
                                            quoted_list(&names)
                                        )));
                                }
                                steps_seen.insert(r.step.clone());
                                cands.extend(selected.into_iter().map(|i| InstanceInput {
                                    instance: i,
                                    output: output.clone(),
                                }));
                            }
                            inputs.push((p.name.to_string(), cands, steps_seen.len() > 1));
                        }
                    },
                    None => {
                        if let Some(v) = p.default_value(exp.seed) {
                            if p.role != Role::Input && p.role != Role::File {
                                fixed.insert(p.name.to_string(), v);
                            }
                        }
                    }
                }
            }
            let own_combos = cartesian(&axes);
            let input_combos = input_product(exp, step, &instances, &inputs)?;
            let fan = FanningInputs::new(step, &inputs, &instances);
            for own in &own_combos {
                for combo in &input_combos {
                    let mut coords: BTreeMap<String, Value> = BTreeMap::new();
                    for (k, v) in own {
                        coords.insert(k.clone(), v.clone());
                    }
                    for k in &variant.variant_keys {
                        if let Some(v) = fixed.get(k) {
                            coords.insert(k.clone(), v.clone());
                        }
                    }
                    inherit_coords(
                        &own_coord_keys,
                        &inputs,
                        &fan,
                        combo,
                        &instances,
                        &mut coords,
                    );
                    let mut params = fixed.clone();
                    params.extend(own.iter().cloned());
                    let mut files = BTreeMap::new();
                    let mut keyed_params = BTreeMap::new();
                    for (k, v) in params {
                        let role = step.kind.param(&k).map(|p| p.role);
                        if role == Some(Role::File) {
                            let written = v.as_str().unwrap_or_default().to_string();
                            let resolved = exp.resolve(&written);
                            files.insert(k, (written, resolved));
                        } else {
                            keyed_params.insert(k, v);
                        }
                    }
                    let inputs_map: BTreeMap<String, InstanceInput> = inputs
                        .iter()
                        .zip(combo)
                        .map(|((name, _, _), inp)| (name.clone(), inp.clone()))
                        .collect();
                    made.push(Instance {
                        index: 0,
                        step: step.id.clone(),
                        kind: step.kind,
                        name: instance_name(&step.id, &coords),
                        coords,
                        params: keyed_params,
                        files,
                        inputs: inputs_map,
                    });
                }
            }
        }
        let mut seen = BTreeSet::new();
        for inst in &made {
            if !seen.insert(inst.name.clone()) {
                return Err(exp
                    .error(format!("step `{}` expands to the instance `{}` twice", step.id, inst.name), step.id_span.clone())
                    .help("two variants (or inputs) give the same grid point; make the variants differ"));
            }
        }
        let mut ids = Vec::new();
        for mut inst in made {
            inst.index = instances.len();
            ids.push(inst.index);
            instances.push(inst);
        }
        by_step.insert(step.id.clone(), ids);
    }
    Ok(Plan {
        instances,
        base_dir: exp.dir.clone(),
        by_step,
        step_order: order.iter().map(|&i| exp.steps[i].id.clone()).collect(),
    })
}

fn own_coordinate_keys(step: &StepDef) -> BTreeSet<String> {
    let mut keys = BTreeSet::new();
    for v in &step.variants {
        keys.extend(v.variant_keys.iter().cloned());
        for (k, s) in &v.settings {
            if matches!(s.value, SettingValue::Axis(_)) {
                keys.insert(k.clone());
            }
        }
    }
    keys
}

fn cartesian(axes: &[(String, Vec<Value>)]) -> Vec<Vec<(String, Value)>> {
    let mut combos: Vec<Vec<(String, Value)>> = vec![Vec::new()];
    for (name, values) in axes {
        let mut next = Vec::with_capacity(combos.len() * values.len());
        for c in &combos {
            for v in values {
                let mut c2 = c.clone();
                c2.push((name.clone(), v.clone()));
                next.push(c2);
            }
        }
        combos = next;
    }
    combos
}

/// Every combination of upstream instances, one per input parameter, restricted by `match`.
fn input_product(
    exp: &Experiment,
    step: &StepDef,
    instances: &[Instance],
    inputs: &[(String, Vec<InstanceInput>, bool)],
) -> Result<Vec<Vec<InstanceInput>>, Diagnostic> {
    let mut combos: Vec<Vec<InstanceInput>> = vec![Vec::new()];
    for (_, cands, _) in inputs {
        let mut next = Vec::new();
        for c in &combos {
            for cand in cands {
                let mut c2 = c.clone();
                c2.push(cand.clone());
                next.push(c2);
            }
        }
        combos = next;
    }
    for (key, span) in &step.match_keys {
        let carriers = inputs
            .iter()
            .filter(|(_, cands, _)| {
                cands
                    .iter()
                    .any(|c| instances[c.instance].coords.contains_key(key))
            })
            .count();
        if carriers == 0 {
            return Err(exp
                .error(format!("`match` names `{key}`, which is not a coordinate of any input of step `{}`", step.id), span.clone())
                .help("list coordinates of the fanned-out inputs, e.g. match = [\"arch\"]"));
        }
    }
    if !step.match_keys.is_empty() {
        combos.retain(|combo| {
            step.match_keys.iter().all(|(key, _)| {
                let vals: BTreeSet<String> = combo
                    .iter()
                    .filter_map(|c| instances[c.instance].coords.get(key).map(|v| v.to_string()))
                    .collect();
                vals.len() <= 1
            })
        });
        if combos.is_empty() {
            return Err(exp
                .error(format!("`match` pairs no inputs of step `{}`: no combination agrees on every listed coordinate", step.id), step.id_span.clone()));
        }
    }
    Ok(combos)
}

/// What [`inherit_coords`] needs of a variant's inputs, computed once per variant rather than
/// once per instance (the key sets span every candidate, so per instance it was quadratic).
struct FanningInputs<'a> {
    /// The inputs that fan out (more than one candidate).
    fanning: Vec<usize>,
    /// The coordinate names of each fanning input's candidates.
    key_sets: Vec<BTreeSet<&'a String>>,
    matched: BTreeSet<&'a str>,
}

impl<'a> FanningInputs<'a> {
    fn new(
        step: &'a StepDef,
        inputs: &[(String, Vec<InstanceInput>, bool)],
        instances: &'a [Instance],
    ) -> Self {
        let fanning: Vec<usize> = (0..inputs.len())
            .filter(|&i| inputs[i].1.len() > 1)
            .collect();
        let key_sets = fanning
            .iter()
            .map(|&i| {
                inputs[i]
                    .1
                    .iter()
                    .flat_map(|c| instances[c.instance].coords.keys())
                    .collect()
            })
            .collect();
        let matched = step.match_keys.iter().map(|(k, _)| k.as_str()).collect();
        FanningInputs {
            fanning,
            key_sets,
            matched,
        }
    }
}

fn inherit_coords(
    own_keys: &BTreeSet<String>,
    inputs: &[(String, Vec<InstanceInput>, bool)],
    fan: &FanningInputs,
    combo: &[InstanceInput],
    instances: &[Instance],
    coords: &mut BTreeMap<String, Value>,
) {
    let FanningInputs {
        fanning,
        key_sets,
        matched,
    } = fan;
    for (pos, &i) in fanning.iter().enumerate() {
        let (param, _, multi_step) = &inputs[i];
        let up = &instances[combo[i].instance];
        if *multi_step {
            coords.insert(param.clone(), Value::Str(up.step.clone()));
        }
        for (k, v) in &up.coords {
            let shared = key_sets
                .iter()
                .enumerate()
                .any(|(other, set)| other != pos && set.contains(k));
            let plain = !own_keys.contains(k) && (!shared || matched.contains(k.as_str()));
            let name = if plain {
                k.clone()
            } else {
                format!("{param}.{k}")
            };
            coords.insert(name, v.clone());
        }
    }
}

fn instance_name(step: &str, coords: &BTreeMap<String, Value>) -> String {
    if coords.is_empty() {
        return step.to_string();
    }
    let parts: Vec<String> = coords.iter().map(|(k, v)| format!("{k}={v}")).collect();
    format!("{step}[{}]", parts.join(","))
}
