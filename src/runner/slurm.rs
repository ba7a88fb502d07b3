//! The Slurm executor: each ready instance becomes one batch job running `msae exec`.
//!
//! * One job name per run (`msae-<hash of store and experiment>`), the instance key in the
//!   job's comment, one log per instance under `<store>/jobs/<key prefix>/log`.
//! * A job's `result.json` (written last by the worker) decides success; a job that left the
//!   queue without one is a failure, reported with the tail of its log (after a grace period
//!   for slow shared filesystems).
//! * One `squeue` per poll cycle for the whole run, with backoff while nothing changes; no
//!   `sacct` (many clusters have no accounting database). Jobs in flight and submissions per
//!   second are capped; a job counts as in flight until `squeue` no longer lists it live, even
//!   after its result was taken in.
//! * Re-attach: a restarted coordinator takes in finished result files and adopts live jobs
//!   (by name and comment) before it submits anything, so no instance is ever submitted twice
//!   while a job for it lives.
//! * A result file is removed only once its outcome is durably in the index
//!   ([`Executor::recorded`]), so a coordinator that dies at any moment leaves either the record
//!   or the file, never neither (tests/slurm.rs kills it at each [`crate::runner::crash`]
//!   point).

use std::collections::{BTreeMap, VecDeque};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

use crate::experiment::resources::Resources;
use crate::runner::executor::{Executor, InFlight, Task, TaskFinished};
use crate::runner::task::read_json;
use crate::runner::worker::{job_dir, JobResult, LOG, PROGRESS, RESULT, SPEC};
use crate::step::Needs;
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
    ready: Vec<TaskFinished>,
    /// Jobs whose result was taken in while the scheduler still listed them as live (the
    /// worker writes its result just before it exits): key → job id. They still hold a place
    /// on the cluster, so they count against `--max-jobs` until `squeue` no longer shows them
    /// live; otherwise a new submission would join them there, and a site limit on jobs per
    /// user could refuse it.
    finishing: BTreeMap<String, String>,
    pacing: Pacing,
    next_results: Instant,
}

/// The executor's timing decisions, apart from the clock (every method is given `now`): when
/// the next `squeue` is due, and whether the caps on jobs in flight and on submissions per
/// second leave room for another submission.
pub struct Pacing {
    max_jobs: usize,
    submit_per_second: usize,
    poll_min: Duration,
    poll_max: Duration,
    interval: Duration,
    next_poll: Instant,
    /// When the last `submit_per_second` submissions were made (oldest first).
    submitted: VecDeque<Instant>,
}

impl Pacing {
    /// A first poll is due at once.
    pub fn new(
        max_jobs: usize,
        submit_per_second: usize,
        poll_min: Duration,
        poll_max: Duration,
        now: Instant,
    ) -> Pacing {
        Pacing {
            max_jobs,
            submit_per_second,
            poll_min,
            poll_max,
            interval: poll_min,
            next_poll: now,
            submitted: VecDeque::new(),
        }
    }

    /// The wait before the poll after the next one (the current backoff step).
    pub fn interval(&self) -> Duration {
        self.interval
    }

    pub fn poll_due(&self, now: Instant) -> bool {
        now >= self.next_poll
    }

    /// After an answered `squeue`: back to `--poll` if any job changed, else a longer wait,
    /// up to `--poll-max`.
    pub fn polled(&mut self, changed: bool, now: Instant) {
        self.interval = if changed {
            self.poll_min
        } else {
            self.interval.mul_f64(1.5).min(self.poll_max)
        };
        self.next_poll = now + self.interval;
    }

    /// After a `squeue` that failed: the controller may be busy or restarting, so wait twice
    /// as long before asking again (up to `--poll-max`).
    pub fn poll_failed(&mut self, now: Instant) {
        self.interval = (self.interval * 2).min(self.poll_max);
        self.next_poll = now + self.interval;
    }

    /// Whether one more job may be submitted while `in_flight` jobs occupy the scheduler.
    pub fn has_room(&self, in_flight: usize, now: Instant) -> bool {
        let recent = self
            .submitted
            .iter()
            .filter(|t| now.saturating_duration_since(**t) < Duration::from_secs(1))
            .count();
        in_flight < self.max_jobs && recent < self.submit_per_second
    }

    /// A submission is being made (counted whether or not the scheduler accepts it).
    pub fn submitting(&mut self, now: Instant) {
        self.submitted.push_back(now);
        while self.submitted.len() > self.submit_per_second {
            self.submitted.pop_front();
        }
    }

    /// Something is about to change (a new job): look again within `--poll`, however far the
    /// backoff had gone.
    pub fn expect_change(&mut self, now: Instant) {
        self.interval = self.poll_min;
        self.next_poll = self.next_poll.min(now + self.interval);
    }
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

/// Whether `squeue` lists job `id` of `key` in a state from which it may still run.
fn listed_live(queue: &BTreeMap<String, (String, String)>, key: &str, id: &str) -> bool {
    queue
        .get(key)
        .is_some_and(|(i, state)| i == id && !ENDED.contains(&state.as_str()))
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
            pacing: Pacing::new(
                opts.max_jobs,
                opts.submit_per_second,
                opts.poll_min,
                opts.poll_max,
                Instant::now(),
            ),
            opts,
            store_root: store_root.to_path_buf(),
            name: job_name(store_root, experiment),
            exe,
            jobs: BTreeMap::new(),
            queue: None,
            ready: Vec::new(),
            finishing: BTreeMap::new(),
            next_results: Instant::now(),
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
            crate::runner::crash::crash_point("result-read");
            let job = self.jobs.remove(&i).expect("listed");
            // The result file stays until the runner has recorded the outcome
            // ([`Executor::recorded`]): a coordinator that dies before that finds it again.
            if job.state != "GONE" && !ENDED.contains(&job.state.as_str()) && job.id != "?" {
                self.finishing.insert(job.key.clone(), job.id.clone());
                // Its place frees at the next look, due soon.
                self.pacing.expect_change(Instant::now());
            }
            let seconds = r.seconds();
            let finished = r.finished_unix;
            let result = match (r.ok, r.error) {
                // The job's own run time and end, not the time since this coordinator began
                // to watch it (it may have been restarted, or the job pending for long).
                (Some(mut ok), _) => {
                    ok.seconds = seconds.unwrap_or(ok.seconds);
                    ok.finished_unix = finished.map(|t| t as u64).or(ok.finished_unix);
                    Ok(ok)
                }
                (None, e) => Err(format!(
                    "{} (Slurm job {}, log {})",
                    e.unwrap_or_else(|| "unknown error".into()),
                    job.id,
                    job.dir.join(LOG).display()
                )),
            };
            self.ready.push(TaskFinished { index: i, result });
        }
    }

    fn poll(&mut self) {
        let queue = match squeue(&self.name) {
            Ok(q) => q,
            Err(e) => {
                // The controller may be busy or restarting: keep the jobs, try again later.
                tracing::warn!("{e:#}");
                self.pacing.poll_failed(Instant::now());
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
        let finishing = self.finishing.len();
        self.finishing
            .retain(|key, id| listed_live(&queue, key, id));
        changed |= self.finishing.len() != finishing;
        // A result may have landed since the last look: it wins over the scheduler's word.
        self.take_results();
        for i in failed {
            let Some(job) = self.jobs.remove(&i) else {
                continue;
            };
            let log = job.dir.join(LOG);
            self.ready.push(TaskFinished {
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
        self.pacing.polled(changed, Instant::now());
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
        crate::runner::crash::crash_point("slurm-submitted");
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

    fn recorded(&mut self, key: &str) {
        // Taken in and recorded: a later run must not read it again (a failure would be
        // reported twice). A leftover of a crash just before this is harmless: its instance is
        // cached, and serving it from the cache comes here too.
        let result = job_dir(&self.store_root, key).join(RESULT);
        if std::fs::remove_file(&result).is_ok() {
            crate::runner::crash::crash_point("result-removed");
        }
    }

    fn has_room(&self, _needs: Needs) -> bool {
        self.pacing
            .has_room(self.jobs.len() + self.finishing.len(), Instant::now())
    }

    fn start(&mut self, task: Task) -> Result<()> {
        let dir = job_dir(&self.store_root, &task.spec.key);
        self.pacing.submitting(Instant::now());
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
                self.pacing.expect_change(Instant::now());
            }
            Err(e) => self.ready.push(TaskFinished {
                index: task.index,
                result: Err(format!("{e:#}")),
            }),
        }
        Ok(())
    }

    fn wait(&mut self, timeout: Duration) -> Result<Vec<TaskFinished>> {
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
            let watched = !self.jobs.is_empty() || !self.finishing.is_empty();
            if self.ready.is_empty() && self.pacing.poll_due(now) && watched {
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
    fn a_job_holds_its_place_while_squeue_lists_it_live() {
        let q = parse_squeue("4|RUNNING|a\n5|COMPLETING|b\n6|COMPLETED|c\n8|PENDING|d\n");
        assert!(listed_live(&q, "a", "4"));
        assert!(listed_live(&q, "b", "5"), "still on the node");
        assert!(!listed_live(&q, "c", "6"));
        assert!(!listed_live(&q, "d", "7"), "another job of the same key");
        assert!(!listed_live(&q, "e", "9"), "no longer listed");
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

    fn secs(s: f64) -> Duration {
        Duration::from_secs_f64(s)
    }

    /// Polls whenever one is due, each time finding the `changed` given; returns the wait
    /// before each next poll, checked against the moment the poll became due.
    fn poll_waits(p: &mut Pacing, now: &mut Instant, changed: &[bool]) -> Vec<f64> {
        let mut waits = Vec::new();
        for &c in changed {
            assert!(p.poll_due(*now));
            p.polled(c, *now);
            let wait = p.interval();
            assert!(!p.poll_due(*now + wait - Duration::from_millis(1)));
            assert!(p.poll_due(*now + wait));
            waits.push(wait.as_secs_f64());
            *now += wait;
        }
        waits
    }

    #[test]
    fn quiet_polls_back_off_to_poll_max_and_a_change_resets_the_wait() {
        let t0 = Instant::now();
        let mut p = Pacing::new(100, 5, secs(5.0), secs(60.0), t0);
        assert!(p.poll_due(t0), "the first poll is due at once");
        let mut now = t0;
        let waits = poll_waits(&mut p, &mut now, &[false; 8]);
        let expected = [7.5, 11.25, 16.875, 25.3125, 37.96875, 56.953125, 60.0, 60.0];
        for (w, e) in waits.iter().zip(expected) {
            assert!((w - e).abs() < 1e-6, "{waits:?}");
        }
        // A change anywhere in the backoff goes back to --poll, and the backoff starts over.
        let waits = poll_waits(&mut p, &mut now, &[true, false, false, true, true]);
        let expected = [5.0, 7.5, 11.25, 5.0, 5.0];
        for (w, e) in waits.iter().zip(expected) {
            assert!((w - e).abs() < 1e-6, "{waits:?}");
        }
    }

    #[test]
    fn failed_polls_wait_twice_as_long_each_time() {
        let t0 = Instant::now();
        let mut p = Pacing::new(100, 5, secs(5.0), secs(60.0), t0);
        let mut waits = Vec::new();
        for _ in 0..6 {
            p.poll_failed(t0);
            waits.push(p.interval().as_secs_f64());
        }
        assert_eq!(waits, [10.0, 20.0, 40.0, 60.0, 60.0, 60.0]);
        assert!(!p.poll_due(t0 + secs(59.9)) && p.poll_due(t0 + secs(60.0)));
        p.polled(true, t0);
        assert_eq!(p.interval(), secs(5.0));
    }

    #[test]
    fn a_new_job_brings_a_distant_poll_forward_and_never_delays_a_near_one() {
        let t0 = Instant::now();
        let mut p = Pacing::new(100, 5, secs(5.0), secs(60.0), t0);
        p.poll_failed(t0);
        p.poll_failed(t0);
        p.poll_failed(t0);
        assert_eq!(p.interval(), secs(40.0));
        p.expect_change(t0 + secs(1.0));
        assert!(!p.poll_due(t0 + secs(5.9)));
        assert!(
            p.poll_due(t0 + secs(6.0)),
            "due within --poll of the submission"
        );
        // Quiet again: the backoff starts from --poll.
        p.polled(false, t0 + secs(6.0));
        assert_eq!(p.interval(), secs(7.5));
        // A poll due in 2 s stays due in 2 s.
        let mut p = Pacing::new(100, 5, secs(5.0), secs(60.0), t0);
        p.polled(true, t0);
        p.expect_change(t0 + secs(3.0));
        assert!(p.poll_due(t0 + secs(5.0)));
    }

    /// A deterministic stream of job run times between 10 ms and 2 s.
    fn run_times(seed: u64) -> impl FnMut() -> Duration {
        let mut state = seed;
        move || {
            state = state
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            Duration::from_millis(10 + (state >> 33) % 1990)
        }
    }

    #[test]
    fn never_more_than_max_jobs_in_flight() {
        for max_jobs in [1, 3, 10] {
            let t0 = Instant::now();
            let mut p = Pacing::new(max_jobs, 1000, secs(0.5), secs(2.0), t0);
            let mut run_time = run_times(max_jobs as u64);
            let mut ends: Vec<Instant> = Vec::new();
            let (mut started, mut most) = (0, 0);
            for tick in 0..6000 {
                let now = t0 + Duration::from_millis(10 * tick);
                ends.retain(|e| *e > now);
                while p.has_room(ends.len(), now) {
                    p.submitting(now);
                    ends.push(now + run_time());
                    started += 1;
                    assert!(ends.len() <= max_jobs, "{} jobs in flight", ends.len());
                }
                most = most.max(ends.len());
            }
            // Room is given whenever a job ends: the cap is reached, not merely respected.
            assert_eq!(most, max_jobs);
            assert!(started >= 25 * max_jobs, "only {started} jobs started");
        }
    }

    #[test]
    fn submissions_per_second_are_capped_in_every_window() {
        for rate in [1, 5, 20] {
            let t0 = Instant::now();
            let mut p = Pacing::new(100_000, rate, secs(5.0), secs(60.0), t0);
            let mut times = Vec::new();
            // Ticks of 7 ms: submissions land at uneven offsets, not only on whole seconds.
            for tick in 0..1000 {
                let now = t0 + Duration::from_millis(7 * tick);
                while p.has_room(times.len(), now) {
                    p.submitting(now);
                    times.push(now);
                }
            }
            for (i, t) in times.iter().enumerate() {
                let in_window = times[i..]
                    .iter()
                    .take_while(|u| u.duration_since(*t) < Duration::from_secs(1))
                    .count();
                assert!(in_window <= rate, "{in_window} submissions within a second");
            }
            // 7 s of ticks: the full rate in each second, not less.
            assert!(times.len() >= 6 * rate, "{} submissions", times.len());
        }
    }
}
