//! The Slurm executor on a real one-node Slurm cluster that this test starts itself (`munged`,
//! `slurmctld`, `slurmd`; settings from the project's measurements, no systemd, no accounting
//! database). Needs root and Debian's `slurmctld slurmd slurm-client munge` packages (`.ci/run`
//! installs them); without them the test prints a notice and skips.
//!
//! One test function runs the scenarios one after another on one cluster: the same records and
//! bytes as the local executor; with `--max-jobs 1` never two of the run's jobs live in the
//! queue at once; a coordinator killed and restarted finishes without a duplicate job; a job
//! cancelled with `scancel` is reported failed with its log tail and a rerun finishes it; a
//! running training requeued with `scontrol requeue` (its live progress showing an ETA
//! meanwhile), and one sent SIGUSR1 (which checkpoints and requeues itself), complete with the
//! bytes of an uninterrupted run.

use crate::common;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use common::{assert_fails_with, assert_succeeds_with, json_of, text, Env, Synth};

struct Cluster {
    dir: tempfile::TempDir,
    pids: Vec<u32>,
    munged_pid_file: Option<PathBuf>,
}

fn sh(cmd: &str, args: &[&str], conf: &Path) -> Output {
    Command::new(cmd)
        .args(args)
        .env("SLURM_CONF", conf)
        .output()
        .unwrap_or_else(|e| panic!("cannot run {cmd}: {e}"))
}

fn munge_works() -> bool {
    Command::new("munge")
        .arg("-n")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .map(|s| s.success())
        .unwrap_or(false)
}

fn read_pid(path: &Path, limit: Duration) -> u32 {
    let start = Instant::now();
    loop {
        if let Some(pid) = std::fs::read_to_string(path)
            .ok()
            .and_then(|t| t.trim().parse().ok())
        {
            return pid;
        }
        assert!(start.elapsed() < limit, "no pid file {}", path.display());
        std::thread::sleep(Duration::from_millis(50));
    }
}

impl Cluster {
    /// Starts a private cluster, or says why it cannot and returns `None`.
    fn start() -> Option<Cluster> {
        let missing: Vec<&str> = [
            "/usr/sbin/slurmctld",
            "/usr/sbin/slurmd",
            "/usr/bin/sbatch",
            "/usr/sbin/munged",
        ]
        .into_iter()
        .filter(|p| !Path::new(p).exists())
        .collect();
        if !missing.is_empty() {
            eprintln!("skipping the Slurm tests: {} not installed (apt-get install slurmctld slurmd slurm-client munge)", missing.join(", "));
            return None;
        }
        let uid = Command::new("id").arg("-u").output().ok()?;
        if String::from_utf8_lossy(&uid.stdout).trim() != "0" {
            eprintln!("skipping the Slurm tests: starting the daemons needs root");
            return None;
        }
        let mut munged_pid_file = None;
        if !munge_works() {
            if !Path::new("/etc/munge/munge.key").exists() {
                let ok = Command::new("mungekey").arg("--create").status().ok()?;
                assert!(ok.success(), "mungekey --create failed");
                Command::new("chown")
                    .args(["munge:munge", "/etc/munge/munge.key"])
                    .status()
                    .ok()?;
            }
            std::fs::create_dir_all("/run/munge").ok()?;
            Command::new("chown")
                .args(["munge:munge", "/run/munge"])
                .status()
                .ok()?;
            let st = Command::new("runuser")
                .args(["-u", "munge", "--", "/usr/sbin/munged"])
                .status()
                .ok()?;
            assert!(st.success(), "munged did not start");
            munged_pid_file = Some(PathBuf::from("/run/munge/munged.pid"));
            let start = Instant::now();
            while !munge_works() {
                assert!(
                    start.elapsed() < Duration::from_secs(10),
                    "munge never answered"
                );
                std::thread::sleep(Duration::from_millis(50));
            }
        }
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path().display().to_string();
        for sub in ["state", "spool", "log"] {
            std::fs::create_dir_all(dir.path().join(sub)).unwrap();
        }
        // Ports of this process alone, so that another cluster on the machine never answers.
        let port = 20000 + (std::process::id() % 20000) as u16;
        let conf = format!(
            "ClusterName=msaetest
SlurmctldHost=localhost
SlurmctldPort={port}
SlurmdPort={}
SlurmUser=root
AuthType=auth/munge
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/filetxt
JobCompLoc={d}/log/jobcomp.txt
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
ReturnToService=2
MinJobAge=600
SlurmdParameters=config_overrides
StateSaveLocation={d}/state
SlurmdSpoolDir={d}/spool
SlurmctldPidFile={d}/slurmctld.pid
SlurmdPidFile={d}/slurmd.pid
SlurmctldLogFile={d}/log/slurmctld.log
SlurmdLogFile={d}/log/slurmd.log
NodeName=localhost NodeAddr=127.0.0.1 CPUs=2 RealMemory=1000 State=UNKNOWN
PartitionName=debug Nodes=localhost Default=YES MaxTime=INFINITE State=UP
",
            port + 1
        );
        let conf_path = dir.path().join("slurm.conf");
        std::fs::write(&conf_path, conf).unwrap();
        let mut cluster = Cluster {
            dir,
            pids: Vec::new(),
            munged_pid_file,
        };
        let c = conf_path.to_str().unwrap();
        assert!(sh("/usr/sbin/slurmctld", &["-c", "-f", c], &conf_path)
            .status
            .success());
        cluster.pids.push(read_pid(
            &cluster.dir.path().join("slurmctld.pid"),
            Duration::from_secs(10),
        ));
        assert!(sh(
            "/usr/sbin/slurmd",
            &["-N", "localhost", "-f", c],
            &conf_path
        )
        .status
        .success());
        cluster.pids.push(read_pid(
            &cluster.dir.path().join("slurmd.pid"),
            Duration::from_secs(10),
        ));
        let start = Instant::now();
        loop {
            let out = sh("sinfo", &["-h", "-o", "%t"], &conf_path);
            if String::from_utf8_lossy(&out.stdout).trim() == "idle" {
                break;
            }
            assert!(
                start.elapsed() < Duration::from_secs(30),
                "the node never became idle: {}",
                text(&out)
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        eprintln!("Slurm cluster up in {:.1} s", start.elapsed().as_secs_f64());
        Some(cluster)
    }

    fn conf(&self) -> PathBuf {
        self.dir.path().join("slurm.conf")
    }

    fn cmd(&self, cmd: &str, args: &[&str]) -> Output {
        sh(cmd, args, &self.conf())
    }

    /// msae with this cluster's configuration.
    fn msae(&self, env: &Env) -> Command {
        let mut c = env.command();
        c.env("SLURM_CONF", self.conf());
        c
    }

    /// Every job of the cluster: (id, state, comment, name).
    fn jobs(&self) -> Vec<(String, String, String, String)> {
        let out = self.cmd("squeue", &["-h", "-t", "all", "-o", "%i|%T|%k|%j"]);
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter_map(|l| {
                let p: Vec<&str> = l.trim().splitn(4, '|').collect();
                (p.len() == 4).then(|| {
                    (
                        p[0].to_string(),
                        p[1].to_string(),
                        p[2].to_string(),
                        p[3].to_string(),
                    )
                })
            })
            .collect()
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        if std::thread::panicking() {
            let log = std::fs::read_to_string(self.dir.path().join("log/slurmctld.log"))
                .unwrap_or_default();
            let lines: Vec<&str> = log.lines().collect();
            eprintln!(
                "slurmctld log (last 40 lines):\n{}",
                lines[lines.len().saturating_sub(40)..].join("\n")
            );
        }
        for pid in self.pids.iter().rev() {
            Command::new("kill").arg(pid.to_string()).status().ok();
        }
        if let Some(f) = &self.munged_pid_file {
            if let Ok(pid) = std::fs::read_to_string(f) {
                Command::new("kill").arg(pid.trim()).status().ok();
            }
        }
    }
}

const SLURM_ARGS: &[&str] = &[
    "--executor",
    "slurm",
    "--poll",
    "0.5",
    "--poll-max",
    "2",
    "--result-grace",
    "3",
];

fn experiment(epochs: u32, expansions: &str) -> String {
    Synth::new(32, &[64], 4000, 400).experiment_with("cluster", "seed = 5\n")
        + &format!(
            r#"
[steps.sae]
kind = "train"
data = "data.train"
arch = "topk"
k = 4
expansion = {expansions}
epochs = {epochs}
batch_size = 128
checkpoint_steps = 10

[steps.sae.resources]
cpus = 1
time = "30:00"

[steps.score]
kind = "score_topk"
sae = "sae"
data = "data.test"
"#
        )
}

/// `msae run` of `exp` on the cluster, with `extra` options.
fn run_command(cluster: &Cluster, env: &Env, exp: &Path, extra: &[&str]) -> Command {
    let mut c = cluster.msae(env);
    c.arg("run").args(SLURM_ARGS).args(extra).arg(exp);
    c
}

fn run(cluster: &Cluster, env: &Env, exp: &Path, extra: &[&str]) -> Output {
    run_command(cluster, env, exp, extra).output().unwrap()
}

/// [`run`] in the background (a coordinator to watch, kill or wait for), its output captured.
fn spawn(cluster: &Cluster, env: &Env, exp: &Path, extra: &[&str]) -> Child {
    run_command(cluster, env, exp, extra)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

/// `msae cancel` of `exp`'s live jobs.
fn cancel(cluster: &Cluster, env: &Env, exp: &Path) -> Output {
    cluster.msae(env).arg("cancel").arg(exp).output().unwrap()
}

/// Records of every instance: (key, outputs' bytes, metrics without timings).
type Records = BTreeMap<String, (String, BTreeMap<String, Vec<u8>>, String)>;

fn records(env: &Env, experiment: &str) -> Records {
    let store = msae::store::Store::open(&env.cache(), "test reader", true).unwrap();
    let mut out = Records::new();
    for r in store.index.all_records().unwrap() {
        if r.experiment != experiment {
            continue;
        }
        let bytes = r
            .outputs
            .iter()
            .map(|(n, a)| {
                (
                    n.clone(),
                    std::fs::read(store.objects.path(&a.hash)).unwrap(),
                )
            })
            .collect();
        let metrics: BTreeMap<_, _> = r
            .metrics
            .iter()
            .filter(|(k, _)| !k.ends_with("seconds"))
            .collect();
        out.insert(
            r.instance.clone(),
            (
                r.key.clone(),
                bytes,
                serde_json::to_string(&metrics).unwrap(),
            ),
        );
    }
    out
}

fn status(cluster: &Cluster, env: &Env, exp: &Path) -> serde_json::Value {
    json_of(
        &cluster
            .msae(env)
            .args(["status", "--json"])
            .arg(exp)
            .output()
            .unwrap(),
    )
}

/// The log of the job that ran training `sae[expansion=2]` of `env`'s store.
fn job_log(env: &Env) -> String {
    let key = &records(env, "cluster")["sae[expansion=2]"].0;
    std::fs::read_to_string(msae::runner::worker::job_dir(&env.cache(), key).join("log")).unwrap()
}

/// Waits until a training's job runs and has made `min_steps` steps; returns (instance, job id,
/// its live progress as `msae status --json` showed it then).
fn running_training(
    cluster: &Cluster,
    env: &Env,
    exp: &Path,
    min_steps: u64,
) -> (String, String, serde_json::Value) {
    let start = Instant::now();
    loop {
        let s = status(cluster, env, exp);
        for i in s["instances"].as_array().unwrap() {
            if i["step"] == "sae"
                && i["state"] == "running"
                && i["live"]["job"]["state"] == "RUNNING"
                && i["live"]["progress"]["position"].as_u64().unwrap_or(0) >= min_steps
            {
                return (
                    i["name"].as_str().unwrap().to_string(),
                    i["live"]["job"]["id"].as_str().unwrap().to_string(),
                    i["live"]["progress"].clone(),
                );
            }
        }
        assert!(
            start.elapsed() < Duration::from_secs(180),
            "no training was seen running: {s}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn assert_no_duplicate_jobs(cluster: &Cluster, env: &Env, experiment: &str, expected: usize) {
    let name = msae::runner::slurm::job_name(&env.cache(), experiment);
    let jobs: Vec<_> = cluster.jobs().into_iter().filter(|j| j.3 == name).collect();
    let mut per_key: BTreeMap<&str, usize> = BTreeMap::new();
    for j in &jobs {
        *per_key.entry(j.2.as_str()).or_default() += 1;
    }
    assert_eq!(per_key.len(), expected, "{jobs:?}");
    assert!(
        per_key.values().all(|n| *n == 1),
        "a duplicate job: {jobs:?}"
    );
}

/// The instance key (comment) of job `id`.
fn job_key(cluster: &Cluster, id: &str) -> String {
    cluster
        .jobs()
        .into_iter()
        .find(|j| j.0 == id)
        .map(|j| j.2)
        .expect("the job is listed")
}

/// Whether an `msae exec` process of this specification runs.
fn worker_alive(spec: &str) -> bool {
    std::fs::read_dir("/proc")
        .map(|entries| {
            entries.flatten().any(|e| {
                std::fs::read(e.path().join("cmdline"))
                    .map(|c| {
                        let c = String::from_utf8_lossy(&c);
                        c.contains(spec) && c.contains("exec")
                    })
                    .unwrap_or(false)
            })
        })
        .unwrap_or(false)
}

/// Once a requeued job's killed attempt is over, lets it start again at once.
fn release_requeued(cluster: &Cluster, env: &Env, id: &str) {
    // A requeued job waits about two minutes before it may start again; skip the wait, but
    // only once the killed attempt is over (pending again, and its processes given time to
    // exit): made eligible earlier, Slurm can take the old attempt's exit for the new one's.
    let start = Instant::now();
    loop {
        let q = cluster.cmd("squeue", &["-h", "-j", id, "-o", "%T"]);
        if String::from_utf8_lossy(&q.stdout).trim() == "PENDING" {
            break;
        }
        assert!(start.elapsed() < Duration::from_secs(60), "{}", text(&q));
        std::thread::sleep(Duration::from_millis(200));
    }
    // The killed attempt's worker must be gone (on this one node: no process runs its spec).
    let spec = msae::runner::worker::job_dir(&env.cache(), &job_key(cluster, id))
        .join("spec.json")
        .to_string_lossy()
        .to_string();
    let start = Instant::now();
    while worker_alive(&spec) {
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "the killed worker lingers"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    std::thread::sleep(Duration::from_secs(1));
    let out = cluster.cmd(
        "scontrol",
        &["update", &format!("jobid={id}"), "StartTime=now"],
    );
    assert!(out.status.success(), "{}", text(&out));
}

#[test]
fn slurm_executor_on_a_real_cluster() {
    let Some(cluster) = Cluster::start() else {
        return;
    };

    // 1. The same records and bytes as the local executor.
    let local = Env::new();
    let on_slurm = Env::new();
    let text_exp = experiment(2, "[2, 3]");
    let el = local.write("c.toml", &text_exp);
    let es = on_slurm.write("c.toml", &text_exp);
    local.run_json(&el);
    let started = Instant::now();
    assert_succeeds_with(
        &run(&cluster, &on_slurm, &es, &[]),
        &["5 run, 0 cached, 0 failed"],
    );
    eprintln!(
        "5 instances on Slurm: {:.1} s",
        started.elapsed().as_secs_f64()
    );
    let (a, b) = (records(&local, "cluster"), records(&on_slurm, "cluster"));
    assert_eq!(a.len(), 5);
    assert_eq!(
        a, b,
        "the Slurm executor must give the local executor's records and bytes"
    );
    assert_no_duplicate_jobs(&cluster, &on_slurm, "cluster", 5);
    // A second run is a no-op and submits nothing.
    let out = run(&cluster, &on_slurm, &es, &[]);
    assert!(text(&out).contains("0 run, 5 cached"), "{}", text(&out));
    assert_no_duplicate_jobs(&cluster, &on_slurm, "cluster", 5);

    // 1b. `--max-jobs 1`: the grid's two trainings are ready at the same moment, yet the queue,
    //     sampled while the run goes on, never holds two live jobs of the run; same records.
    {
        let env = Env::new();
        let exp = env.write("c.toml", &text_exp);
        let name = msae::runner::slurm::job_name(&env.cache(), "cluster");
        let mut coordinator = spawn(&cluster, &env, &exp, &["--max-jobs", "1"]);
        let mut seen = BTreeSet::new();
        let mut samples = 0;
        let out = loop {
            let exited = coordinator.try_wait().unwrap().is_some();
            let live: Vec<_> = cluster
                .jobs()
                .into_iter()
                .filter(|j| j.3 == name && !msae::runner::slurm::ENDED.contains(&j.1.as_str()))
                .collect();
            assert!(live.len() <= 1, "two live jobs with --max-jobs 1: {live:?}");
            seen.extend(live.into_iter().map(|j| j.2));
            samples += 1;
            if exited {
                break coordinator.wait_with_output().unwrap();
            }
            std::thread::sleep(Duration::from_millis(50));
        };
        assert_succeeds_with(&out, &["5 run, 0 cached, 0 failed"]);
        // The samples saw the jobs come and go, so the bound above was put to the test.
        assert!(seen.len() >= 3, "{samples} samples saw only {seen:?}");
        assert_eq!(records(&env, "cluster"), a);
        assert_no_duplicate_jobs(&cluster, &env, "cluster", 5);
    }

    // 2. The coordinator killed mid-run and started again: re-attaches, no duplicate job.
    let env = Env::new();
    let exp = env.write("c.toml", &experiment(300, "[2, 3]"));
    let mut coordinator = spawn(&cluster, &env, &exp, &[]);
    let (name, id, _) = running_training(&cluster, &env, &exp, 1);
    let seen_running = Instant::now();
    coordinator.kill().unwrap();
    coordinator.wait().unwrap();
    // With no coordinator, status still says a job computes the instance, and which.
    let s = status(&cluster, &env, &exp);
    let row = s["instances"]
        .as_array()
        .unwrap()
        .iter()
        .find(|i| i["name"] == name.as_str())
        .unwrap();
    assert_eq!(row["state"], "running", "{row}");
    assert_eq!(row["orphan_job"], id.as_str(), "{row}");
    let shown = text(&cluster.msae(&env).arg("status").arg(&exp).output().unwrap());
    assert!(
        shown.contains(&format!(
            "on the cluster, job {id} RUNNING, no coordinator: run the same command to re-attach"
        )),
        "{shown}"
    );
    // That job ends while no coordinator watches. The restart takes its result in and records
    // the job's own run time (at least as long as the job was seen running), and the moment it
    // ended, not the time since the restart.
    let result =
        msae::runner::worker::job_dir(&env.cache(), &job_key(&cluster, &id)).join("result.json");
    while !result.exists() {
        assert!(
            seen_running.elapsed() < Duration::from_secs(180),
            "job {id} never ended"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    // The file appeared within one look (0.1 s) of being seen.
    let ran_at_least = seen_running.elapsed().as_secs_f64() - 0.2;
    assert!(
        ran_at_least >= 2.0,
        "the training ran only {ran_at_least:.1} s: too short to tell its run time apart"
    );
    let restarted_unix = msae::store::now_unix();
    let out = run(&cluster, &env, &exp, &[]);
    assert!(out.status.success(), "{}", text(&out));
    assert_no_duplicate_jobs(&cluster, &env, "cluster", 5);
    assert_eq!(records(&env, "cluster").len(), 5);
    let shown_seconds: f64 = text(&out)
        .lines()
        .find_map(|l| l.trim().strip_prefix(&format!("ran     {name} (")))
        .and_then(|rest| rest.strip_suffix(" s)"))
        .unwrap_or_else(|| panic!("no `ran {name}` line: {}", text(&out)))
        .parse()
        .unwrap();
    let record = msae::store::Store::open(&env.cache(), "test reader", true)
        .unwrap()
        .index
        .latest("cluster", &name)
        .unwrap()
        .unwrap();
    for (what, seconds) in [("shown", shown_seconds), ("recorded", record.seconds)] {
        assert!(
            seconds >= ran_at_least,
            "{what} {seconds:.2} s for {name}, which ran at least {ran_at_least:.2} s"
        );
    }
    assert!(
        record.finished_unix <= restarted_unix,
        "recorded as finished at {}, after the restart at {restarted_unix}",
        record.finished_unix
    );
    let s = status(&cluster, &env, &exp);
    let row = s["instances"]
        .as_array()
        .unwrap()
        .iter()
        .find(|i| i["name"] == name.as_str())
        .unwrap();
    assert_eq!(row["seconds"].as_f64(), Some(record.seconds), "{row}");

    // 3. A job cancelled with scancel: reported failed with its log tail; a rerun finishes it.
    let env = Env::new();
    let exp = env.write("c.toml", &experiment(300, "[2]"));
    let coordinator = spawn(&cluster, &env, &exp, &[]);
    let (name, id, _) = running_training(&cluster, &env, &exp, 1);
    assert!(cluster.cmd("scancel", &[&id]).status.success());
    assert_fails_with(
        &coordinator.wait_with_output().unwrap(),
        &[
            &format!(
                "error: {name} failed: Slurm job {id} ended (CANCELLED) without writing a result"
            ),
            "last lines of its log",
            "| msae exec: sae[expansion=2]",
        ],
    );
    assert_succeeds_with(
        &run(&cluster, &env, &exp, &[]),
        &["2 run, 1 cached, 0 failed"],
    );

    // 4. A running training requeued: it resumes from its checkpoints and ends with the bytes
    //    of an uninterrupted run.
    let env = Env::new();
    let exp = env.write("c.toml", &experiment(300, "[2]"));
    let coordinator = spawn(&cluster, &env, &exp, &[]);
    let (_, id, progress) = running_training(&cluster, &env, &exp, 200);
    // The job's progress reaches `msae status` with an estimate of the time left.
    let (position, length) = (
        progress["position"].as_u64().unwrap(),
        progress["length"]
            .as_u64()
            .expect("a training knows its length"),
    );
    assert!(position >= 200 && position < length, "{progress}");
    let eta = progress["eta_seconds"].as_f64().expect("an ETA");
    assert!(eta.is_finite() && eta > 0.0, "{progress}");
    assert!(
        cluster.cmd("scontrol", &["requeue", &id]).status.success(),
        "scontrol requeue failed"
    );
    release_requeued(&cluster, &env, &id);
    let out = coordinator.wait_with_output().unwrap();
    assert!(out.status.success(), "{}", text(&out));
    {
        let show = String::from_utf8_lossy(&cluster.cmd("scontrol", &["show", "job", &id]).stdout)
            .to_string();
        assert!(show.contains("Restarts=1"), "{show}");
        let log = job_log(&env);
        assert!(log.contains("restart 1"), "{log}");
    }
    let clean = Env::new();
    let ce = clean.write("c.toml", &experiment(300, "[2]"));
    clean.run_json(&ce);
    assert_eq!(records(&env, "cluster"), records(&clean, "cluster"));

    // 4b. SIGUSR1, as `--signal=B:USR1@120` sends it before a time limit: the training
    //     checkpoints after its current step and requeues its own job; the next attempt
    //     continues from there and ends with the bytes of an uninterrupted run.
    {
        let env = Env::new();
        let exp = env.write("c.toml", &experiment(300, "[2]"));
        let coordinator = spawn(&cluster, &env, &exp, &[]);
        let (_, id, _) = running_training(&cluster, &env, &exp, 100);
        let out = cluster.cmd("scancel", &["--signal=USR1", "--batch", &id]);
        assert!(out.status.success(), "{}", text(&out));
        release_requeued(&cluster, &env, &id);
        let out = coordinator.wait_with_output().unwrap();
        assert!(out.status.success(), "{}", text(&out));
        let log = job_log(&env);
        assert!(log.contains("stopped on SIGUSR1"), "{log}");
        assert!(log.contains("restart 1"), "{log}");
        assert_eq!(records(&env, "cluster"), records(&clean, "cluster"));
    }

    // `msae cancel` finds nothing left to cancel.
    assert_succeeds_with(&cancel(&cluster, &env, &exp), &["no live Slurm jobs"]);

    // 5. `msae cancel` cancels the run's live jobs; the coordinator reports them failed; the
    //    text status shows the job id and state while it runs.
    let env = Env::new();
    let exp = env.write("c.toml", &experiment(300, "[3]"));
    let coordinator = spawn(&cluster, &env, &exp, &[]);
    let (name, id, _) = running_training(&cluster, &env, &exp, 1);
    let shown = text(&cluster.msae(&env).arg("status").arg(&exp).output().unwrap());
    assert!(shown.contains("slurm executor"), "{shown}");
    assert!(shown.contains(&format!("job {id} RUNNING")), "{shown}");
    assert!(shown.contains(", eta "), "{shown}");
    assert_succeeds_with(
        &cancel(&cluster, &env, &exp),
        &[&format!("cancelled 1 job(s): {id}")],
    );
    assert_fails_with(
        &coordinator.wait_with_output().unwrap(),
        &[&format!(
            "error: {name} failed: Slurm job {id} ended (CANCELLED)"
        )],
    );

    // 5b. A job the scheduler holds is `pending`, not `running`, until it starts.
    {
        let env = Env::new();
        let held = experiment(2, "[2]")
            .replace("time = \"30:00\"", "time = \"30:00\"\nextra = [\"--hold\"]");
        let exp = env.write("c.toml", &held);
        let coordinator = spawn(&cluster, &env, &exp, &[]);
        let start = Instant::now();
        let id = loop {
            let s = status(&cluster, &env, &exp);
            let pending = s["instances"]
                .as_array()
                .unwrap()
                .iter()
                .find(|i| i["step"] == "sae" && i["live"]["job"]["state"] == "PENDING");
            if let Some(row) = pending {
                assert_eq!(row["state"], "pending", "{row}");
                break row["live"]["job"]["id"].as_str().unwrap().to_string();
            }
            assert!(
                start.elapsed() < Duration::from_secs(120),
                "never pending: {s}"
            );
            std::thread::sleep(Duration::from_millis(200));
        };
        assert!(cluster.cmd("scontrol", &["release", &id]).status.success());
        let out = coordinator.wait_with_output().unwrap();
        assert!(out.status.success(), "{}", text(&out));
    }

    // 6. The coordinator killed (SIGKILL) at each step of submitting and of taking results in,
    //    then started again: one job per instance, the bytes of an uninterrupted run, and no
    //    result file left behind. The points, in the order a result passes them:
    //    * slurm-submitted: sbatch returned a job id the coordinator had not remembered → the
    //      restart adopts the job (by name and comment) or takes in its result;
    //    * result-read: a result read, not recorded → its file is still there, taken in again;
    //    * recorded: the record written, the result file not removed → the instance is cached,
    //      and serving it removes the leftover file;
    //    * result-removed: both done → cached.
    for point in [
        "slurm-submitted",
        "result-read",
        "recorded",
        "result-removed",
    ] {
        let env = Env::new();
        let exp = env.write("c.toml", &text_exp);
        let crashed = run_command(&cluster, &env, &exp, &[])
            .env(msae::runner::crash::VARIABLE, point)
            .output()
            .unwrap();
        assert!(!crashed.status.success(), "{point}: {}", text(&crashed));
        assert!(
            text(&crashed).contains(&format!("crash point `{point}` reached")),
            "{point}: {}",
            text(&crashed)
        );
        let out = run(&cluster, &env, &exp, &[]);
        assert!(out.status.success(), "after {point}: {}", text(&out));
        assert_eq!(records(&env, "cluster"), a, "after a crash at {point}");
        assert_no_duplicate_jobs(&cluster, &env, "cluster", 5);
        let leftovers: Vec<_> = common::walk(&env.cache().join("jobs"))
            .into_iter()
            .filter(|p| p.ends_with("result.json"))
            .collect();
        assert!(leftovers.is_empty(), "after {point}: {leftovers:?}");
        eprintln!("crash at {point}: restarted, 5 jobs for 5 instances, same bytes");
    }
}
