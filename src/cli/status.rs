//! `msae status`: the state of every instance — from the index, and while a run holds the store
//! from what that run publishes (running instances with progress, ETA, device or scheduler job).

use std::path::Path;
use std::process::ExitCode;

use anyhow::Result;
use serde::Serialize;

use super::args::Global;
use super::shared::{load, open_read};
use crate::runner::plan::{plan, PlanStatus};
use crate::store::live::{LiveInstance, LiveState};
use crate::store::now_unix;

#[derive(Serialize)]
struct Row {
    name: String,
    step: String,
    /// done, running, waiting, failed, skipped, new, changed, pending, error
    state: String,
    key: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    seconds: Option<f64>,
    /// Device and precision that computed a finished result, and the msae version.
    #[serde(skip_serializing_if = "Option::is_none")]
    produced_on: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    msae_version: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    live: Option<LiveInstance>,
    /// The scheduler job computing this instance while no coordinator watches it.
    #[serde(skip_serializing_if = "Option::is_none")]
    orphan_job: Option<String>,
}

#[derive(Serialize)]
struct Report {
    experiment: String,
    /// The run that holds the store now, if any.
    run: Option<RunInfo>,
    /// Why the store is read from its published index though no run holds it (it cannot be
    /// written), when that is so.
    #[serde(skip_serializing_if = "Option::is_none")]
    read_only: Option<String>,
    counts: std::collections::BTreeMap<String, usize>,
    instances: Vec<Row>,
}

#[derive(Serialize)]
struct RunInfo {
    pid: u32,
    command: String,
    executor: String,
    started_unix: u64,
    updated_unix: u64,
}

fn duration(seconds: f64) -> String {
    let s = seconds.round() as u64;
    if s >= 3600 {
        format!("{}h{:02}m", s / 3600, (s % 3600) / 60)
    } else if s >= 60 {
        format!("{}m{:02}s", s / 60, s % 60)
    } else {
        format!("{s}s")
    }
}

/// Scheduler states of a job that has not started computing yet (it holds no resources).
fn job_waits(state: &str) -> bool {
    matches!(
        state,
        "PENDING" | "REQUEUED" | "REQUEUE_HOLD" | "REQUEUE_FED" | "RESV_DEL_HOLD" | "SUSPENDED"
    )
}

/// Instances with a live scheduler job of this store and experiment while no coordinator holds
/// the store (it died, or the user stopped it): shown as running (or pending) on the cluster
/// with the job's id, so that nobody reruns or deletes work in progress. Only where the store has
/// job folders, with one `squeue`; a cluster that cannot be asked changes nothing.
fn mark_orphaned_jobs(store: &crate::store::Store, experiment: &str, rows: &mut [Row]) {
    let jobs = store.root.join("jobs");
    let has_jobs = std::fs::read_dir(&jobs).is_ok_and(|mut d| d.next().is_some());
    if !has_jobs {
        return;
    }
    let name = crate::runner::slurm::job_name(&store.root, experiment);
    let Ok(queue) = crate::runner::slurm::squeue(&name) else {
        return;
    };
    for row in rows.iter_mut() {
        if row.state == "done" {
            continue;
        }
        let Some((id, state)) = row.key.as_ref().and_then(|k| queue.get(k)) else {
            continue;
        };
        if crate::runner::slurm::ENDED.contains(&state.as_str()) {
            continue;
        }
        row.state = if job_waits(state) {
            "pending"
        } else {
            "running"
        }
        .into();
        row.error = None;
        row.orphan_job = Some(id.clone());
        // The worker's own progress file (epoch, step, ETA), as a coordinator would show it.
        let progress = row.key.as_ref().and_then(|k| {
            crate::runner::task::read_json(
                &crate::runner::worker::job_dir(&store.root, k)
                    .join(crate::runner::worker::PROGRESS),
            )
            .ok()
        });
        row.live = Some(LiveInstance {
            state: LiveState::Running,
            key: row.key.clone(),
            started_unix: None,
            progress,
            job: Some(crate::store::live::LiveJob {
                id: id.clone(),
                state: state.clone(),
            }),
            device: None,
            error: None,
        });
    }
}

/// "step 120/500, 1m05s elapsed, eta 2m10s, cuda:1, job 42 RUNNING"
fn describe_live(l: &LiveInstance) -> String {
    let mut parts = Vec::new();
    if let Some(p) = &l.progress {
        if !p.message.is_empty() {
            parts.push(p.message.clone());
        }
        match p.length {
            Some(len) => parts.push(format!("{}/{len}", p.position)),
            None if p.position > 0 => parts.push(p.position.to_string()),
            None => {}
        }
        parts.push(format!("{} elapsed", duration(p.elapsed_seconds)));
        if let Some(eta) = p.eta_seconds {
            parts.push(format!("eta {}", duration(eta)));
        }
    } else if let Some(t) = l.started_unix {
        parts.push(format!(
            "{} elapsed",
            duration(now_unix().saturating_sub(t) as f64)
        ));
    }
    if let Some(d) = &l.device {
        parts.push(d.clone());
    }
    if let Some(j) = &l.job {
        parts.push(format!("job {} {}", j.id, j.state));
    }
    parts.join(", ")
}

pub fn status(g: &Global, path: &Path, json: bool) -> Result<ExitCode> {
    let (exp, p) = load(path)?;
    let store = open_read(g, "msae status")?;
    let entries = plan(&exp, &p, &store)?;
    // The holder's run state counts only while the store is held by a run of this experiment.
    let live = store
        .live
        .as_ref()
        .filter(|l| store.is_reader() && !l.finished && l.experiment == exp.name);
    let mut rows = Vec::new();
    for e in &entries {
        let mut row = Row {
            name: e.name.clone(),
            step: e.step.clone(),
            state: format!("{:?}", e.status).to_lowercase(),
            key: e.key.clone(),
            seconds: None,
            produced_on: None,
            msae_version: None,
            error: None,
            live: None,
            orphan_job: None,
        };
        if let (PlanStatus::Cached, Some(k)) = (&e.status, &e.key) {
            row.state = "done".into();
            if let Some(r) = store.index.record(k)? {
                row.seconds = Some(r.seconds);
                row.produced_on = Some(r.produced_on());
                row.msae_version = Some(r.msae_version.clone());
            }
        } else if let Some(f) = store.index.failure(&exp.name, &e.name)? {
            row.state = "failed".into();
            row.error = Some(f.error);
        }
        if let Some(l) = live.and_then(|l| l.instances.get(&e.name)) {
            match l.state {
                LiveState::Running => row.state = "running".into(),
                LiveState::Waiting if row.state != "done" => row.state = "waiting".into(),
                LiveState::Failed => {
                    row.state = "failed".into();
                    row.error = l.error.clone().or(row.error);
                }
                LiveState::Skipped if row.state != "done" => row.state = "skipped".into(),
                _ => {}
            }
            if l.state == LiveState::Running {
                if l.job.as_ref().is_some_and(|j| job_waits(&j.state)) {
                    row.state = "pending".into();
                }
                row.live = Some(l.clone());
            }
        }
        rows.push(row);
    }
    // No coordinator watches this experiment: jobs an earlier one submitted may still run.
    if live.is_none() {
        mark_orphaned_jobs(&store, &exp.name, &mut rows);
    }
    let mut counts = std::collections::BTreeMap::new();
    for r in &rows {
        *counts.entry(r.state.clone()).or_insert(0) += 1;
    }
    let report = Report {
        experiment: exp.name.clone(),
        run: live.map(|l| RunInfo {
            pid: l.pid,
            command: l.command.clone(),
            executor: l.executor.clone(),
            started_unix: l.started_unix,
            updated_unix: l.updated_unix,
        }),
        read_only: store.read_only.clone(),
        counts,
        instances: rows,
    };
    if json {
        println!("{}", serde_json::to_string_pretty(&report)?);
        return Ok(ExitCode::SUCCESS);
    }
    if let Some(r) = &report.run {
        println!(
            "live: `{}` (pid {}, {} executor) running for {}, last update {} ago",
            r.command,
            r.pid,
            r.executor,
            duration(now_unix().saturating_sub(r.started_unix) as f64),
            duration(now_unix().saturating_sub(r.updated_unix) as f64)
        );
    }
    let width = report
        .instances
        .iter()
        .map(|r| r.name.len())
        .max()
        .unwrap_or(0);
    for r in &report.instances {
        let detail = if let Some(id) = &r.orphan_job {
            let state = r
                .live
                .as_ref()
                .and_then(|l| l.job.as_ref())
                .map(|j| j.state.as_str());
            format!(
                "on the cluster, job {id} {}, no coordinator: run the same command to re-attach",
                state.unwrap_or("")
            )
        } else if let Some(l) = &r.live {
            describe_live(l)
        } else if let Some(e) = &r.error {
            e.clone()
        } else if let Some(s) = r.seconds {
            match (&r.produced_on, &r.msae_version) {
                (Some(on), Some(v)) => format!("{s:.2} s on {on}, msae {v}"),
                _ => format!("{s:.2} s"),
            }
        } else {
            String::new()
        };
        println!("{:8} {:width$}  {detail}", r.state, r.name);
    }
    let total = report.instances.len();
    let summary: Vec<String> = report
        .counts
        .iter()
        .map(|(state, n)| format!("{n} {state}"))
        .collect();
    println!("{total} instances: {}", summary.join(", "));
    Ok(ExitCode::SUCCESS)
}
