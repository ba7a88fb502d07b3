//! The Slurm executor: each ready instance becomes one batch job running `msae exec`.
//!
//! * One job name per run (`msae-<hash of store and experiment>`), the instance key in the
//!   job's comment, one log per instance under `<store>/jobs/<key prefix>/log`.
//! * A job's `result.json` (written last by the worker) decides success; a job that left the
//!   queue without one is a failure, reported with the tail of its log (after a grace period
//!   for slow shared filesystems).
//! * One `squeue` per poll cycle for the whole run, with backoff while nothing changes; no
//!   `sacct` (many clusters have no accounting database). Jobs in flight and submissions per
//!   second are capped.
//! * Re-attach: a restarted coordinator takes in finished result files and adopts live jobs
//!   (by name and comment) before it submits anything, so no instance is ever submitted twice
//!   while a job for it lives.

use std::collections::{BTreeMap, VecDeque};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

use crate::experiment::resources::Resources;
use crate::runner::executor::{Executor, Finished, InFlight, Task};
use crate::runner::task::read_json;
use crate::runner::worker::{job_dir, JobResult, LOG, PROGRESS, RESULT, SPEC};
use crate::steps::Needs;
use crate::store::live::{LiveJob, LiveProgress};
use crate::store::now_unix;
use crate::store::snapshot::write_atomic;

pub struct SlurmOptions {
    /// Resources of steps that set none (`--resource KEY=VALUE`).
    pub defaults: Resources,
    pub max_jobs: usize,
    pub submit_per_second: usize,
    pub poll_min: Duration,
    pub poll_max: Duration,
    /// How long a job may be gone from the queue before its missing result counts as failure.
    pub result_grace: Duration,
    /// The device of device steps whose resources ask for no GPU.
    pub device: String,
}

pub struct Slurm {
    opts: SlurmOptions,
    store_root: PathBuf,
    name: String,
    exe: PathBuf,
    jobs: BTreeMap<usize, Job>,
    /// key → (job id, state) as the last `squeue` showed them.
    queue: Option<BTreeMap<String, (String, String)>>,
    ready: Vec<Finished>,
    interval: Duration,
    next_poll: Instant,
    next_results: Instant,
    submitted: VecDeque<Instant>,
}

struct Job {
    key: String,
    id: String,
    state: String,
    dir: PathBuf,
    gone_since: Option<Instant>,
    started_unix: u64,
}

/// States after which a job never runs again.
pub const ENDED: &[&str] = &[
    "COMPLETED",
    "CANCELLED",
    "FAILED",
    "TIMEOUT",
    "NODE_FAIL",
    "OUT_OF_MEMORY",
    "BOOT_FAIL",
    "DEADLINE",
    "PREEMPTED",
];

/// The job name of every job of one experiment on one store.
pub fn job_name(store_root: &Path, experiment: &str) -> String {
    let root = std::fs::canonicalize(store_root).unwrap_or_else(|_| store_root.to_path_buf());
    let mut h = blake3::Hasher::new();
    h.update(root.to_string_lossy().as_bytes());
    h.update(b"\0");
    h.update(experiment.as_bytes());
    format!("msae-{}", &h.finalize().to_hex()[..12])
}

/// Every job of a run name: key (comment) → (id, state), through one `squeue` call.
pub fn squeue(name: &str) -> Result<BTreeMap<String, (String, String)>> {
    let out = Command::new("squeue")
        .args(["-h", "-t", "all", "--name", name, "-o", "%i|%T|%k"])
        .output()
        .context("cannot run `squeue` (is Slurm installed and on PATH?)")?;
    if !out.status.success() {
        bail!(
            "`squeue` failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(parse_squeue(&String::from_utf8_lossy(&out.stdout)))
}

/// `squeue -o '%i|%T|%k'` lines → key (comment) → (id, state). Of several jobs with one key (an
/// earlier, cancelled attempt and a new one), a live job wins over ended ones.
pub fn parse_squeue(text: &str) -> BTreeMap<String, (String, String)> {
    let mut jobs: BTreeMap<String, (String, String)> = BTreeMap::new();
    for line in text.lines() {
        let mut parts = line.trim().splitn(3, '|');
        let (Some(id), Some(state), Some(key)) = (parts.next(), parts.next(), parts.next()) else {
            continue;
        };
        let live = !ENDED.contains(&state);
        match jobs.get(key) {
            Some((_, s)) if !ENDED.contains(&s.as_str()) && !live => {}
            _ => {
                jobs.insert(key.to_string(), (id.to_string(), state.to_string()));
            }
        }
    }
    jobs
}

/// The last `n` lines of a log file.
fn log_tail(path: &Path, n: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    let start = lines.len().saturating_sub(n);
    if lines.is_empty() {
        return "  (the log is empty)".into();
    }
    lines[start..]
        .iter()
        .map(|l| format!("  | {l}"))
        .collect::<Vec<_>>()
        .join("\n")
}

/// Quotes a path for the job's shell command.
fn shell_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', "'\\''"))
}

impl Slurm {
    pub fn new(store_root: &Path, experiment: &str, opts: SlurmOptions) -> Result<Slurm> {
        if opts.max_jobs == 0 || opts.submit_per_second == 0 {
            bail!("--max-jobs and --submit-rate must be at least 1");
        }
        let exe = std::env::current_exe().context("cannot find the msae executable")?;
        // Fail early and clearly where there is no Slurm at all.
        Command::new("sbatch")
            .arg("--version")
            .output()
            .context("`--executor slurm` needs Slurm's `sbatch` on PATH")?;
        Ok(Slurm {
            interval: opts.poll_min,
            opts,
            store_root: store_root.to_path_buf(),
            name: job_name(store_root, experiment),
            exe,
            jobs: BTreeMap::new(),
            queue: None,
            ready: Vec::new(),
            next_poll: Instant::now(),
            next_results: Instant::now(),
            submitted: VecDeque::new(),
        })
    }

    /// The jobs of this run as the scheduler sees them now (one `squeue`; cached per cycle).
    fn queue(&mut self) -> Result<&BTreeMap<String, (String, String)>> {
        if self.queue.is_none() {
            self.queue = Some(squeue(&self.name)?);
        }
        Ok(self.queue.as_ref().expect("just filled"))
    }

    /// A finished result file of `key`, if there is one.
    fn result_of(dir: &Path, key: &str) -> Option<JobResult> {
        let r: JobResult = read_json(&dir.join(RESULT)).ok()?;
        (r.key == key).then_some(r)
    }

    fn take_results(&mut self) {
        let done: Vec<(usize, JobResult)> = self
            .jobs
            .iter()
            .filter_map(|(i, j)| Some((*i, Slurm::result_of(&j.dir, &j.key)?)))
            .collect();
        for (i, r) in done {
            let job = self.jobs.remove(&i).expect("listed");
            // Taken in: a later run must not read it again (a failure would be reported twice).
            std::fs::remove_file(job.dir.join(RESULT)).ok();
            let result = match (r.ok, r.error) {
                (Some(ok), _) => Ok(ok),
                (None, e) => Err(format!(
                    "{} (Slurm job {}, log {})",
                    e.unwrap_or_else(|| "unknown error".into()),
                    job.id,
                    job.dir.join(LOG).display()
                )),
            };
            self.ready.push(Finished { index: i, result });
        }
    }

    fn poll(&mut self) {
        let queue = match squeue(&self.name) {
            Ok(q) => q,
            Err(e) => {
                // The controller may be busy or restarting: keep the jobs, try again later.
                tracing::warn!("{e:#}");
                self.interval = (self.interval * 2).min(self.opts.poll_max);
                self.next_poll = Instant::now() + self.interval;
                return;
            }
        };
        let mut changed = false;
        let mut failed = Vec::new();
        for (i, job) in self.jobs.iter_mut() {
            let state = queue
                .get(&job.key)
                .filter(|(id, _)| *id == job.id)
                .map(|(_, s)| s.clone())
                .unwrap_or_else(|| "GONE".into());
            if state != job.state {
                changed = true;
                job.state = state.clone();
            }
            if state == "GONE" || ENDED.contains(&state.as_str()) {
                let since = *job.gone_since.get_or_insert_with(Instant::now);
                if since.elapsed() >= self.opts.result_grace {
                    failed.push(*i);
                }
            } else {
                job.gone_since = None;
            }
        }
        // A result may have landed since the last look: it wins over the scheduler's word.
        self.take_results();
        for i in failed {
            let Some(job) = self.jobs.remove(&i) else {
                continue;
            };
            let log = job.dir.join(LOG);
            self.ready.push(Finished {
                index: i,
                result: Err(format!(
                    "Slurm job {} ended ({}) without writing a result; last lines of its log {}:\n{}",
                    job.id,
                    if job.state == "GONE" { "no longer listed" } else { &job.state },
                    log.display(),
                    log_tail(&log, 12)
                )),
            });
            changed = true;
        }
        self.queue = Some(queue);
        self.interval = if changed {
            self.opts.poll_min
        } else {
            (self.interval.mul_f64(1.5)).min(self.opts.poll_max)
        };
        self.next_poll = Instant::now() + self.interval;
    }

    fn submit(&mut self, task: &Task, dir: &Path) -> Result<String> {
        let resources = task.resources.over(&self.opts.defaults);
        let mut spec = task.spec.clone();
        spec.device = if !task.needs.device {
            "cpu".into()
        } else if resources.has_gpus() {
            // The scheduler shows the job only its own GPUs, numbered from 0.
            "cuda:0".into()
        } else {
            self.opts.device.clone()
        };
        spec.threads = if task.needs.threads {
            resources.cpus().unwrap_or(1)
        } else {
            1
        };
        spec.scratch_dir = dir.join("work");
        std::fs::create_dir_all(dir)?;
        std::fs::remove_file(dir.join(RESULT)).ok();
        std::fs::remove_file(dir.join(PROGRESS)).ok();
        write_atomic(&dir.join(SPEC), &serde_json::to_vec_pretty(&spec)?)?;
        let command = format!(
            "exec {} exec {}",
            shell_quote(&self.exe.to_string_lossy()),
            shell_quote(&dir.join(SPEC).to_string_lossy())
        );
        let out = Command::new("sbatch")
            .arg("--parsable")
            .arg(format!("--job-name={}", self.name))
            .arg(format!("--comment={}", spec.key))
            .arg(format!("--output={}", dir.join(LOG).display()))
            .arg("--open-mode=append")
            .arg("--requeue")
            .args(resources.sbatch_args())
            .arg(format!("--wrap={command}"))
            .output()
            .context("cannot run `sbatch`")?;
        if !out.status.success() {
            bail!(
                "`sbatch` refused the job of `{}`: {}\n  = help: check the step's [steps.<id>.resources] and --resource settings",
                spec.instance,
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        let text = String::from_utf8_lossy(&out.stdout);
        let id = text.trim().split(';').next().unwrap_or("").to_string();
        if id.is_empty() {
            bail!("`sbatch` printed no job id");
        }
        Ok(id)
    }
}

impl Executor for Slurm {
    fn name(&self) -> &'static str {
        "slurm"
    }

    fn adopt(&mut self, key: &str, index: usize) -> Result<bool> {
        let dir = job_dir(&self.store_root, key);
        if let Some(r) = Slurm::result_of(&dir, key) {
            if r.ok.is_some() {
                // Finished while no coordinator watched: taken in at the next look.
                self.jobs.insert(
                    index,
                    Job {
                        key: key.to_string(),
                        id: "?".into(),
                        state: "COMPLETED".into(),
                        dir,
                        gone_since: None,
                        started_unix: now_unix(),
                    },
                );
                self.next_results = Instant::now();
                return Ok(true);
            }
            // A failure was reported before; this run tries again.
            std::fs::remove_file(dir.join(RESULT)).ok();
        }
        let live = self
            .queue()?
            .get(key)
            .filter(|(_, state)| !ENDED.contains(&state.as_str()))
            .cloned();
        match live {
            Some((id, state)) => {
                tracing::info!(key, job = %id, "re-attached to a live job");
                self.jobs.insert(
                    index,
                    Job {
                        key: key.to_string(),
                        id,
                        state,
                        dir,
                        gone_since: None,
                        started_unix: now_unix(),
                    },
                );
                Ok(true)
            }
            None => Ok(false),
        }
    }

    fn has_room(&self, _needs: Needs) -> bool {
        let recent = self
            .submitted
            .iter()
            .filter(|t| t.elapsed() < Duration::from_secs(1))
            .count();
        self.jobs.len() < self.opts.max_jobs && recent < self.opts.submit_per_second
    }

    fn start(&mut self, task: Task) -> Result<()> {
        let dir = job_dir(&self.store_root, &task.spec.key);
        self.submitted.push_back(Instant::now());
        while self.submitted.len() > self.opts.submit_per_second {
            self.submitted.pop_front();
        }
        match self.submit(&task, &dir) {
            Ok(id) => {
                tracing::info!(instance = %task.spec.instance, job = %id, "submitted");
                self.jobs.insert(
                    task.index,
                    Job {
                        key: task.spec.key.clone(),
                        id,
                        state: "PENDING".into(),
                        dir,
                        gone_since: None,
                        started_unix: now_unix(),
                    },
                );
                // A new job: look again soon.
                self.interval = self.opts.poll_min;
                self.next_poll = self.next_poll.min(Instant::now() + self.interval);
            }
            Err(e) => self.ready.push(Finished {
                index: task.index,
                result: Err(format!("{e:#}")),
            }),
        }
        Ok(())
    }

    fn wait(&mut self, timeout: Duration) -> Result<Vec<Finished>> {
        let deadline = Instant::now() + timeout;
        loop {
            if !self.ready.is_empty() {
                return Ok(std::mem::take(&mut self.ready));
            }
            let now = Instant::now();
            if now >= self.next_results {
                self.take_results();
                self.next_results = now + Duration::from_millis(500);
            }
            if self.ready.is_empty() && now >= self.next_poll && !self.jobs.is_empty() {
                self.poll();
            }
            if !self.ready.is_empty() {
                return Ok(std::mem::take(&mut self.ready));
            }
            if now >= deadline {
                return Ok(Vec::new());
            }
            std::thread::sleep((deadline - now).min(Duration::from_millis(100)));
        }
    }

    fn in_flight(&self) -> usize {
        self.jobs.len() + self.ready.len()
    }

    fn live(&self) -> BTreeMap<usize, InFlight> {
        self.jobs
            .iter()
            .map(|(i, j)| {
                let progress: Option<LiveProgress> = read_json(&j.dir.join(PROGRESS)).ok();
                (
                    *i,
                    InFlight {
                        progress,
                        job: Some(LiveJob {
                            id: j.id.clone(),
                            state: j.state.clone(),
                        }),
                        device: None,
                        started_unix: j.started_unix,
                    },
                )
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_live_job_wins_over_an_ended_one_of_the_same_key() {
        let q = parse_squeue("7|CANCELLED|abc\n9|RUNNING|abc\n8|COMPLETED|def\nnot a line\n");
        assert_eq!(q["abc"], ("9".to_string(), "RUNNING".to_string()));
        assert_eq!(q["def"], ("8".to_string(), "COMPLETED".to_string()));
        let q = parse_squeue("9|PENDING|abc\n7|CANCELLED|abc\n");
        assert_eq!(q["abc"].0, "9");
        assert_eq!(q.len(), 1);
    }

    #[test]
    fn resources_become_sbatch_flags_and_defaults_fill_gaps() {
        let step = Resources::from_assignments(&["gpus=1".into(), "time=1:00:00".into()]).unwrap();
        let defaults = Resources::from_assignments(&[
            "partition=cpu".into(),
            "time=0:10:00".into(),
            "extra=--qos=low".into(),
        ])
        .unwrap();
        let r = step.over(&defaults);
        assert_eq!(
            r.sbatch_args(),
            ["--partition=cpu", "--gpus=1", "--time=1:00:00", "--qos=low"]
        );
        assert!(r.has_gpus());
        assert!(Resources::from_assignments(&["partion=x".into()]).is_err());
        assert!(Resources::from_assignments(&["cpus".into()]).is_err());
    }

    #[test]
    fn job_names_differ_per_store_and_experiment() {
        let a = job_name(Path::new("/x/cache"), "e");
        assert_eq!(a, job_name(Path::new("/x/cache"), "e"));
        assert_ne!(a, job_name(Path::new("/y/cache"), "e"));
        assert_ne!(a, job_name(Path::new("/x/cache"), "f"));
        assert!(a.starts_with("msae-") && a.len() == 17);
    }

    #[test]
    fn log_tails_keep_the_last_lines() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("log");
        std::fs::write(
            &log,
            (1..=20).map(|i| format!("line {i}\n")).collect::<String>(),
        )
        .unwrap();
        let tail = log_tail(&log, 3);
        assert_eq!(tail, "  | line 18\n  | line 19\n  | line 20");
        assert!(log_tail(&dir.path().join("none"), 3).contains("empty"));
    }
}
