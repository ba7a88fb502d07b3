//! One instance's work, self-contained: everything a step needs to run (without the index), and
//! what it produced. The local executor runs a [`TaskSpec`] in a thread; `msae exec` runs the
//! same specification in a scheduler job. Either way the outputs land in the object store the
//! same way, and only the coordinator writes the record.

use std::collections::BTreeMap;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{anyhow, Context, Result};
use serde::{Deserialize, Serialize};

use crate::step::progress::Progress;
use crate::step::value::Value;
use crate::step::{InputArtifact, Metrics, Registry, Resource, StepContext, StopRequest};
use crate::store::{ArtifactRecord, Objects};

/// Everything needed to run one instance.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TaskSpec {
    pub experiment: String,
    pub instance: String,
    pub kind: String,
    pub key: String,
    pub params: BTreeMap<String, Value>,
    pub inputs: BTreeMap<String, InputArtifact>,
    pub files: BTreeMap<String, PathBuf>,
    pub resources: BTreeMap<String, Resource>,
    /// Set by the executor: the device and thread count this run gets.
    pub device: String,
    pub threads: usize,
    /// Checkpoints that survive an interrupted run of this key.
    pub partial_dir: PathBuf,
    /// A fresh folder the step writes its outputs into.
    pub scratch_dir: PathBuf,
    pub objects_dir: PathBuf,
}

/// What a finished step produced (already in the object store).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TaskResult {
    pub outputs: BTreeMap<String, ArtifactRecord>,
    pub metrics: Metrics,
    pub seconds: f64,
    pub device: String,
    pub threads: usize,
    /// When the work ended (Unix seconds), where it ended before the coordinator took the
    /// result in (a scheduler job); the record's finish time. None: now.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub finished_unix: Option<u64>,
}

/// Runs the step (found in `kinds`) in its scratch folder and moves its outputs into the object
/// store; `stop` is handed to the step (see [`StopRequest`]).
pub fn run_task(
    kinds: Registry,
    spec: &TaskSpec,
    progress: &Progress,
    stop: &StopRequest,
) -> Result<TaskResult> {
    run_task_group(
        kinds,
        std::slice::from_ref(spec),
        std::slice::from_ref(progress),
        stop,
    )
    .remove(0)
}

/// Runs instances of one step kind that share a fusion key together (one pass over their
/// data, see [`crate::step::Step::run_group`]); each gets its own scratch folder, outputs and
/// result, in the order of `specs`. `progress` holds one line per instance.
pub fn run_task_group(
    kinds: Registry,
    specs: &[TaskSpec],
    progress: &[Progress],
    stop: &StopRequest,
) -> Vec<Result<TaskResult>> {
    let started = Instant::now();
    let Some(first) = specs.first() else {
        return Vec::new();
    };
    let Some(kind) = kinds.find(&first.kind) else {
        return specs
            .iter()
            .map(|s| Err(anyhow!("this msae has no step kind `{}`", s.kind)))
            .collect();
    };
    for spec in specs {
        if spec.scratch_dir.exists() {
            std::fs::remove_dir_all(&spec.scratch_dir).ok();
        }
        if let Err(e) = std::fs::create_dir_all(&spec.scratch_dir) {
            let msg = format!("cannot create {}: {e}", spec.scratch_dir.display());
            return specs.iter().map(|_| Err(anyhow!("{msg}"))).collect();
        }
    }
    let mut ctxs: Vec<StepContext> = specs
        .iter()
        .zip(progress)
        .map(|(spec, line)| {
            let mut ctx = StepContext::new(
                &spec.instance,
                &spec.params,
                spec.inputs.clone(),
                spec.files.clone(),
                &spec.device,
                spec.threads,
                spec.partial_dir.clone(),
                spec.scratch_dir.clone(),
                line,
            );
            ctx.resources = spec.resources.clone();
            ctx.stop = stop.clone();
            ctx
        })
        .collect();
    let result = catch_unwind(AssertUnwindSafe(|| {
        if ctxs.len() == 1 {
            vec![kind.run(&mut ctxs[0])]
        } else {
            kind.run_group(&mut ctxs)
        }
    }));
    let metrics = match result {
        Ok(r) => r,
        Err(panic) => {
            let what = panic
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_else(|| "unknown panic".into());
            return specs
                .iter()
                .map(|s| Err(anyhow!("internal error in step `{}`: {what}", s.kind)))
                .collect();
        }
    };
    let seconds = started.elapsed().as_secs_f64();
    specs
        .iter()
        .zip(metrics)
        .map(|(spec, metrics)| store_outputs(spec, kind, metrics?, seconds))
        .collect()
}

/// Moves a finished instance's outputs from its scratch folder into the object store.
fn store_outputs(
    spec: &TaskSpec,
    kind: &dyn crate::step::Step,
    metrics: Metrics,
    seconds: f64,
) -> Result<TaskResult> {
    let objects = Objects::new(spec.objects_dir.clone());
    let mut outputs = BTreeMap::new();
    for out in kind.outputs() {
        let file = spec.scratch_dir.join(out.name);
        if file.exists() {
            let (hash, size) = objects.insert(&file)?;
            tracing::debug!(output = out.name, %hash, size, "stored");
            outputs.insert(out.name.to_string(), ArtifactRecord { hash, size });
        } else if !out.optional {
            return Err(anyhow!(
                "internal error: step `{}` finished without writing its output `{}`",
                spec.kind,
                out.name
            ));
        }
    }
    std::fs::remove_dir_all(&spec.scratch_dir).ok();
    Ok(TaskResult {
        outputs,
        metrics,
        seconds,
        device: spec.device.clone(),
        threads: spec.threads,
        finished_unix: None,
    })
}

/// Runs `f` with `threads` rayon workers of its own, so that instances running side by side
/// share the machine instead of each assuming all of it.
pub fn with_threads<T: Send>(threads: usize, f: impl FnOnce() -> T + Send) -> Result<T> {
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(threads.max(1))
        .build()
        .context("cannot start the worker threads")?;
    Ok(pool.install(f))
}

/// Reads a JSON file written by [`crate::store::snapshot::write_atomic`].
pub fn read_json<T: for<'de> Deserialize<'de>>(path: &Path) -> Result<T> {
    let bytes = std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
    serde_json::from_slice(&bytes).with_context(|| format!("{} is unreadable", path.display()))
}
