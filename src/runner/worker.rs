//! `msae exec SPEC`: the work of one instance inside a scheduler job.
//!
//! The job's folder (`<store>/jobs/<key prefix>/`) holds the [`TaskSpec`] the coordinator
//! wrote, the job's log, `progress.json` (rewritten every few seconds for `msae status`) and,
//! written last (temporary file + rename), `result.json`: the outputs and metrics, or the error,
//! with the moments the worker started and ended, so that a coordinator that takes the result in
//! later (one restarted after the job ended) records the job's own run time.
//! The worker never opens the index: only the coordinator does. A requeued or pre-empted job
//! runs again from the start of this function; a training then resumes from its checkpoints in
//! `partial/<key>/`. SIGUSR1 (e.g. `--signal=B:USR1@120`, sent before the time limit) makes a
//! running training checkpoint after its current step; the worker then requeues its own job
//! (`scontrol requeue`) and leaves no result, so the next attempt continues from that step.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};

use crate::runner::task::{read_json, run_task, with_threads, TaskResult, TaskSpec};
use crate::step::progress::Progress;
use crate::step::{Registry, StopRequest};
use crate::store::snapshot::write_atomic;

pub const SPEC: &str = "spec.json";
pub const RESULT: &str = "result.json";
pub const PROGRESS: &str = "progress.json";
pub const LOG: &str = "log";

/// What a job leaves behind: decides success, whatever the scheduler says.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct JobResult {
    pub key: String,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub ok: Option<TaskResult>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub error: Option<String>,
    /// When this attempt of the worker started and when it ended (Unix seconds, fractional);
    /// absent in results of older versions.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub started_unix: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub finished_unix: Option<f64>,
}

impl JobResult {
    /// The worker's run time, start to end, where the result says.
    pub fn seconds(&self) -> Option<f64> {
        Some((self.finished_unix? - self.started_unix?).max(0.0))
    }
}

/// Now, in fractional Unix seconds.
fn unix_now() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or_default()
}

/// The folder of an instance's jobs.
pub fn job_dir(store_root: &Path, key: &str) -> PathBuf {
    store_root.join("jobs").join(&key[..16])
}

pub fn exec(spec_path: &Path, kinds: Registry) -> Result<ExitCode> {
    let started_unix = unix_now();
    let spec: TaskSpec = read_json(spec_path)?;
    let dir = spec_path
        .parent()
        .context("the specification has no folder")?
        .to_path_buf();
    // The scheduler's CPU grant wins over the coordinator's guess.
    let threads = std::env::var("SLURM_CPUS_PER_TASK")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(spec.threads)
        .max(1);
    let attempt = std::env::var("SLURM_RESTART_COUNT").unwrap_or_else(|_| "0".into());
    eprintln!(
        "msae exec: {} (key {}), {threads} thread(s), device {}, restart {attempt}",
        spec.instance,
        &spec.key[..12],
        spec.device
    );
    let mut spec = spec;
    spec.threads = threads;
    let progress = Progress::hidden(true).for_instance(&spec.instance);
    let stop = Arc::new(AtomicBool::new(false));
    let reporter = {
        let (progress, stop, path) = (progress.clone(), stop.clone(), dir.join(PROGRESS));
        std::thread::spawn(move || {
            while !stop.load(Ordering::SeqCst) {
                if let Some(p) = crate::runner::progress::snapshot(&progress) {
                    if let Ok(bytes) = serde_json::to_vec(&p) {
                        write_atomic(&path, &bytes).ok();
                    }
                }
                for _ in 0..20 {
                    if stop.load(Ordering::SeqCst) {
                        break;
                    }
                    std::thread::sleep(Duration::from_millis(100));
                }
            }
        })
    };
    let asked_to_stop = StopRequest::default();
    signal_hook::flag::register(signal_hook::consts::SIGUSR1, asked_to_stop.flag().clone())
        .context("cannot install the SIGUSR1 handler")?;
    let outcome = with_threads(threads, || {
        run_task(kinds, &spec, &progress, &asked_to_stop)
    })
    .and_then(|r| r);
    stop.store(true, Ordering::SeqCst);
    reporter.join().ok();
    if outcome.is_err() && asked_to_stop.is_raised() {
        if let Some(code) = requeue_after_stop(&spec.instance) {
            return Ok(code);
        }
    }
    let (result, code) = match outcome {
        Ok(r) => (
            JobResult {
                key: spec.key.clone(),
                ok: Some(r),
                error: None,
                started_unix: Some(started_unix),
                finished_unix: Some(unix_now()),
            },
            ExitCode::SUCCESS,
        ),
        Err(e) => {
            eprintln!("msae exec: {} failed: {e:#}", spec.instance);
            (
                JobResult {
                    key: spec.key.clone(),
                    ok: None,
                    error: Some(format!("{e:#}")),
                    started_unix: Some(started_unix),
                    finished_unix: Some(unix_now()),
                },
                ExitCode::from(1),
            )
        }
    };
    write_atomic(&dir.join(RESULT), &serde_json::to_vec_pretty(&result)?)?;
    eprintln!("msae exec: result written");
    Ok(code)
}

/// After a training stopped on SIGUSR1 (its checkpoint written): puts this Slurm job back in the
/// queue and ends without a result, so that the coordinator waits for the next attempt. Outside
/// Slurm, or when the scheduler refuses, returns None and the stop is reported as the
/// instance's error.
fn requeue_after_stop(instance: &str) -> Option<ExitCode> {
    let id = std::env::var("SLURM_JOB_ID").ok()?;
    eprintln!(
        "msae exec: {instance} stopped on SIGUSR1 with its checkpoint written; requeueing job {id}"
    );
    match std::process::Command::new("scontrol")
        .args(["requeue", &id])
        .output()
    {
        // Slurm ends this attempt now; the next one resumes from the checkpoint.
        Ok(out) if out.status.success() => Some(ExitCode::from(3)),
        Ok(out) => {
            eprintln!(
                "msae exec: `scontrol requeue {id}` refused: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            );
            None
        }
        Err(e) => {
            eprintln!("msae exec: cannot run `scontrol`: {e}");
            None
        }
    }
}
