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
//!
//! One scheduling loop ([`run`]) serves every executor: it keys each instance as soon as its
//! inputs are known, serves cached ones, hands ready ones to an [`executor::Executor`] (threads
//! here, or scheduler jobs) and alone writes records into the index. It publishes the index
//! snapshot and the live state of the run for readers while it works.

pub mod crash;
pub mod executor;
pub mod keys;
pub mod live_board;
pub mod local;
pub mod plan;
pub mod progress;
pub mod reasons;
pub mod slurm;
pub mod task;
pub mod worker;

use std::collections::{BTreeMap, VecDeque};
use std::time::{Duration, Instant};

use anyhow::Result;
use serde::Serialize;

use crate::experiment::{Experiment, Instance, Plan};
use crate::step::progress::Progress;
use crate::store::live::LiveState;
use crate::store::{now_unix, FailureRecord, Fetched, Record, Store, Upstream};
use executor::{Executor, Task, TaskFinished};
use keys::{prepare, Outputs, Prepared, Readiness};
use live_board::LiveBoard;
use task::{TaskResult, TaskSpec};

pub struct RunOptions {
    pub keep_going: bool,
    pub verify: bool,
    /// The device of steps that use one when no executor assigns another.
    pub device: String,
    pub threads: usize,
    /// The command line, published for readers.
    pub command: String,
    /// Most instances trained together in one pass over their data (1: every instance alone).
    pub fuse: usize,
    /// Told before each instance runs (e.g. to refresh the report page); may be absent.
    pub observer: Option<Box<dyn Observer>>,
    /// Stores asked, in order, for results this one lacks (`--cache-from`).
    pub upstreams: Vec<Upstream>,
}

/// Watches a run: called before each instance that is not cached starts, with the outcomes so
/// far and the instances in flight (that one included). It must not fail the run; problems are its own to report.
pub trait Observer {
    /// Whether `before_instance` would act now. The runner asks first, so that an observer
    /// that skips most calls does not cost a copy of every finished outcome per instance (on a
    /// sweep of many short instances that copy alone made the run quadratic).
    fn due(&self) -> bool {
        true
    }

    fn before_instance(
        &self,
        exp: &Experiment,
        plan: &Plan,
        store: &Store,
        outcomes: &[InstanceOutcome],
        running: &[usize],
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
pub struct InstanceOutcome {
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

/// The cached outputs of a prepared instance, if its record can be served (re-pointing the
/// instance's name at it); a damaged record is dropped so that the step runs again.
fn serve_cached(
    exp: &Experiment,
    store: &Store,
    inst: &Instance,
    prepared: &Prepared,
    opts: &RunOptions,
    progress: &Progress,
) -> Result<Option<Outputs>> {
    let record = match store.index.record(&prepared.key)? {
        Some(record) => record,
        None => match fetch_upstream(store, inst, prepared, opts, progress)? {
            Some(record) => record,
            None => return Ok(None),
        },
    };
    match damaged_output(store, &record, opts.verify)? {
        None => {
            if record.experiment != exp.name || record.instance != inst.name {
                // Same work under another name: serve it, and remember it for `why`.
                let mut mine = record.clone();
                mine.experiment = exp.name.clone();
                mine.instance = inst.name.clone();
                mine.coords = coords_json(inst);
                store.index.put(&mine)?;
            } else if store.index.latest_key(&exp.name, &inst.name)?.as_ref() != Some(&record.key) {
                store.index.put(&record)?;
            }
            tracing::info!(instance = %inst.name, "cached");
            Ok(Some(record.outputs))
        }
        Some(output) => {
            progress.warn(&format!(
                "warning: output `{output}` of {} is missing or damaged in the store; running it again",
                inst.name
            ));
            for a in record.outputs.values() {
                if !store.objects.verify(&a.hash, a.size).unwrap_or(false) {
                    store.objects.discard(&a.hash);
                }
            }
            store.index.remove_record(&record.key)?;
            Ok(None)
        }
    }
}

/// The record of a key from the first upstream store that has it intact, now in the local store
/// (objects first, then the record). Damaged upstream copies are reported and passed over.
fn fetch_upstream(
    store: &Store,
    inst: &Instance,
    prepared: &Prepared,
    opts: &RunOptions,
    progress: &Progress,
) -> Result<Option<Record>> {
    for upstream in &opts.upstreams {
        match upstream.fetch(&prepared.key, store)? {
            Fetched::Absent => {}
            Fetched::Served(record) => {
                store.index.put(&record)?;
                tracing::info!(instance = %inst.name, upstream = %upstream.root.display(), "served by an upstream store");
                progress.println(&format!(
                    "copied  {} from {}",
                    inst.name,
                    upstream.root.display()
                ));
                return Ok(Some(*record));
            }
            Fetched::Damaged { output, why } => progress.warn(&format!(
                "warning: output `{output}` of {} in the upstream store {} is damaged ({why}); not copied",
                inst.name,
                upstream.root.display()
            )),
        }
    }
    Ok(None)
}

/// The self-contained description of a ready instance's work.
fn task_spec(exp: &Experiment, store: &Store, inst: &Instance, prepared: &Prepared) -> TaskSpec {
    TaskSpec {
        experiment: exp.name.clone(),
        instance: inst.name.clone(),
        kind: inst.kind.kind().to_string(),
        key: prepared.key.clone(),
        params: inst.params.clone(),
        inputs: prepared.inputs.clone(),
        files: prepared.files.clone(),
        resources: prepared.resources.clone(),
        device: String::new(),
        threads: 1,
        partial_dir: store.partial_dir(&prepared.key),
        scratch_dir: store.root.join("tmp").join(&prepared.key[..16]),
        objects_dir: store.root.join("objects"),
    }
}

/// Runs every instance of the plan that is not cached, on `executor`.
pub fn run(
    exp: &Experiment,
    plan: &Plan,
    store: &Store,
    opts: &RunOptions,
    progress: &Progress,
    executor: &mut dyn Executor,
) -> Result<Vec<InstanceOutcome>> {
    store.clear_tmp()?;
    let n = plan.instances.len();
    let mut done: Vec<Option<Outputs>> = vec![None; n];
    let mut outcomes: Vec<Option<InstanceOutcome>> = vec![None; n];
    let mut prepared: BTreeMap<usize, Prepared> = BTreeMap::new();
    let mut started: BTreeMap<usize, Instant> = BTreeMap::new();
    let mut ready: VecDeque<usize> = VecDeque::new();
    let mut stop = false;
    let overall = progress.bar(n as u64, &exp.name);
    let mut board = LiveBoard::new(exp, plan, &opts.command, executor.name());
    loop {
        // Decide every instance whose inputs are known (plan order is topological, so one pass
        // sees the effect of cached instances on their consumers).
        for inst in &plan.instances {
            let i = inst.index;
            if outcomes[i].is_some() || prepared.contains_key(&i) {
                continue;
            }
            let failed_input = inst.inputs.values().find(|input| {
                matches!(&outcomes[input.instance], Some(o) if matches!(o.status, Status::Failed | Status::Skipped))
            });
            if let Some(input) = failed_input {
                let upstream = &plan.instances[input.instance].name;
                outcomes[i] = Some(skipped(inst, &format!("input `{upstream}` did not finish")));
                board.set(i, LiveState::Skipped, None);
                overall.inc(1);
                continue;
            }
            if stop {
                continue;
            }
            let p = match prepare(inst, plan, &done, store) {
                Ok(Readiness::Ready(p)) => p,
                Ok(Readiness::Waiting { .. }) => continue,
                Err(e) => {
                    let msg = format!("{e:#}");
                    record_failure(exp, store, inst, None, &msg)?;
                    progress.println(&format!("failed  {}: {msg}", inst.name));
                    board.fail(i, &msg);
                    outcomes[i] = Some(InstanceOutcome {
                        name: inst.name.clone(),
                        key: None,
                        status: Status::Failed,
                        seconds: 0.0,
                        error: Some(msg),
                    });
                    overall.inc(1);
                    stop = !opts.keep_going;
                    continue;
                }
            };
            tracing::debug!(instance = %inst.name, key = %p.key, "key computed");
            if let Some(outputs) = serve_cached(exp, store, inst, &p, opts, progress)? {
                // A result file left by a coordinator that died after recording it.
                executor.recorded(&p.key);
                done[i] = Some(outputs);
                board.set(i, LiveState::Cached, Some(&p.key));
                outcomes[i] = Some(InstanceOutcome {
                    name: inst.name.clone(),
                    key: Some(p.key.clone()),
                    status: Status::Cached,
                    seconds: 0.0,
                    error: None,
                });
                overall.inc(1);
                continue;
            }
            if executor.adopt(&p.key, i)? {
                // A job of an earlier coordinator runs (or ran) it: wait for that one.
                started.insert(i, Instant::now());
                board.set(i, LiveState::Running, Some(&p.key));
                prepared.insert(i, p);
            } else {
                // A training that may share its batches waits for the rest of this pass,
                // so that the instances of its grid become ready and start together.
                let joins = opts.fuse > 1
                    && executor.fuses()
                    && inst.kind.fusion_key(&inst.params, &p.inputs).is_some();
                ready.push_back(i);
                prepared.insert(i, p);
                if joins {
                    continue;
                }
                // Start at once where there is room, so that work before a failing instance
                // in plan order still runs (as it does in a one-at-a-time run).
                start_ready(
                    exp,
                    plan,
                    store,
                    &mut ready,
                    &prepared,
                    executor,
                    &mut started,
                    &mut board,
                    opts,
                    &outcomes,
                )?;
            }
        }
        if !stop {
            start_ready(
                exp,
                plan,
                store,
                &mut ready,
                &prepared,
                executor,
                &mut started,
                &mut board,
                opts,
                &outcomes,
            )?;
        }
        if executor.in_flight() == 0 && (ready.is_empty() || stop) {
            break;
        }
        board.publish(store, executor, false);
        for TaskFinished { index: i, result } in executor.wait(Duration::from_millis(500))? {
            let inst = &plan.instances[i];
            let p = prepared.get(&i).expect("a started instance was prepared");
            let seconds = started
                .get(&i)
                .map(|t| t.elapsed().as_secs_f64())
                .unwrap_or_default();
            overall.inc(1);
            match result {
                Ok(result) => {
                    // The executor's measure of the work itself (a job's own run time), the
                    // same as the record's.
                    let seconds = result.seconds;
                    let outputs = result.outputs.clone();
                    store.index.put(&record_of(exp, plan, inst, p, result))?;
                    crash::crash_point("recorded");
                    // Only now may the executor drop what it kept of the result (a job's
                    // result file): a crash before this line leaves it to be taken in again.
                    executor.recorded(&p.key);
                    let partial = store.partial_dir(&p.key);
                    if partial.exists() {
                        std::fs::remove_dir_all(&partial).ok();
                    }
                    progress.println(&format!("ran     {} ({seconds:.2} s)", inst.name));
                    done[i] = Some(outputs);
                    board.set(i, LiveState::Ran, Some(&p.key));
                    outcomes[i] = Some(InstanceOutcome {
                        name: inst.name.clone(),
                        key: Some(p.key.clone()),
                        status: Status::Ran,
                        seconds,
                        error: None,
                    });
                }
                Err(msg) => {
                    record_failure(exp, store, inst, Some(&p.key), &msg)?;
                    executor.recorded(&p.key);
                    progress.println(&format!("failed  {}: {msg}", inst.name));
                    board.fail(i, &msg);
                    outcomes[i] = Some(InstanceOutcome {
                        name: inst.name.clone(),
                        key: Some(p.key.clone()),
                        status: Status::Failed,
                        seconds,
                        error: Some(msg),
                    });
                    stop = !opts.keep_going;
                }
            }
        }
    }
    let outcomes: Vec<InstanceOutcome> = plan
        .instances
        .iter()
        .map(|inst| {
            outcomes[inst.index].take().unwrap_or_else(|| {
                board.set(inst.index, LiveState::Skipped, None);
                skipped(inst, "the run stopped at an earlier failure")
            })
        })
        .collect();
    overall.finish_and_clear();
    board.publish(store, executor, true);
    Ok(outcomes)
}

/// Hands ready instances to the executor while it has room for them (in plan order, skipping
/// those whose needs cannot be met now).
#[allow(clippy::too_many_arguments)]
fn start_ready(
    exp: &Experiment,
    plan: &Plan,
    store: &Store,
    ready: &mut VecDeque<usize>,
    prepared: &BTreeMap<usize, Prepared>,
    executor: &mut dyn Executor,
    started: &mut BTreeMap<usize, Instant>,
    board: &mut LiveBoard,
    opts: &RunOptions,
    outcomes: &[Option<InstanceOutcome>],
) -> Result<()> {
    let mut k = 0;
    while k < ready.len() {
        let i = ready[k];
        let inst = &plan.instances[i];
        let needs = inst.kind.needs();
        if !executor.has_room(needs) {
            k += 1;
            continue;
        }
        ready.remove(k);
        let p = &prepared[&i];
        tracing::info!(instance = %inst.name, key = %&p.key[..12], "running");
        // Ready instances that read the same batches as this one run with it in one pass.
        let mut also = Vec::new();
        if opts.fuse > 1 && executor.fuses() {
            if let Some(key) = inst.kind.fusion_key(&inst.params, &p.inputs) {
                let mut q = k;
                while q < ready.len() && also.len() + 1 < opts.fuse {
                    let j = ready[q];
                    let other = &plan.instances[j];
                    if other.kind.kind() == inst.kind.kind()
                        && other
                            .kind
                            .fusion_key(&other.params, &prepared[&j].inputs)
                            .as_ref()
                            == Some(&key)
                    {
                        ready.remove(q);
                        also.push((j, task_spec(exp, store, other, &prepared[&j])));
                    } else {
                        q += 1;
                    }
                }
            }
        }
        if let Some(observer) = opts.observer.as_ref().filter(|o| o.due()) {
            let finished: Vec<InstanceOutcome> = outcomes.iter().flatten().cloned().collect();
            let mut running: Vec<usize> = started.keys().copied().collect();
            running.push(i);
            running.extend(also.iter().map(|(j, _)| *j));
            observer.before_instance(exp, plan, store, &finished, &running);
        }
        executor.start(Task {
            index: i,
            needs,
            spec: task_spec(exp, store, inst, p),
            resources: exp
                .step(&inst.step)
                .map(|s| s.resources.clone())
                .unwrap_or_default(),
            also: also.clone(),
        })?;
        started.insert(i, Instant::now());
        board.set(i, LiveState::Running, Some(&p.key));
        for (j, spec) in &also {
            tracing::info!(instance = %spec.instance, with = %inst.name, "running fused");
            started.insert(*j, Instant::now());
            board.set(*j, LiveState::Running, Some(&spec.key));
        }
    }
    Ok(())
}

/// The floating-point type every step computes in on every device (metrics accumulate in f64);
/// recorded with each result next to the device.
pub const COMPUTE_PRECISION: &str = "f32";

/// The index record of an instance that just ran.
fn record_of(
    exp: &Experiment,
    plan: &Plan,
    inst: &Instance,
    prepared: &Prepared,
    result: TaskResult,
) -> Record {
    let input_from = inst
        .inputs
        .iter()
        .map(|(k, v)| (k.clone(), plan.instances[v.instance].name.clone()))
        .collect();
    let exec = inst
        .params
        .iter()
        .filter(|(name, _)| {
            inst.kind
                .param(name)
                .is_some_and(|p| p.role == crate::step::spec::Role::Exec)
        })
        .map(|(k, v)| (k.clone(), serde_json::to_value(v).unwrap_or_default()))
        .chain([
            ("device".to_string(), serde_json::Value::from(result.device)),
            (
                "threads".to_string(),
                serde_json::Value::from(result.threads),
            ),
            (
                "precision".to_string(),
                serde_json::Value::from(COMPUTE_PRECISION),
            ),
        ])
        .collect();
    Record {
        key: prepared.key.clone(),
        components: prepared.components.clone(),
        experiment: exp.name.clone(),
        instance: inst.name.clone(),
        coords: coords_json(inst),
        input_from,
        outputs: result.outputs,
        metrics: result.metrics,
        exec,
        finished_unix: result.finished_unix.unwrap_or_else(now_unix),
        seconds: result.seconds,
        msae_version: env!("CARGO_PKG_VERSION").to_string(),
    }
}

fn skipped(inst: &Instance, why: &str) -> InstanceOutcome {
    InstanceOutcome {
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
