//! Large sweeps: wall time and peak memory of `msae plan`, `graph`, `status`, `table` and a
//! no-op `run` on experiments of about 2,000, 16,000 and 100,000 instances.
//!
//! Two experiments per size, with the same number of instances:
//! * `sweep`: one `synth` step, a `train` grid (k × seeds) and three steps downstream of each
//!   training (`score_topk`, `recovery`, `validate`), nothing run — `plan`, `graph`, `status`.
//! * `cached`: one `synth` step and a grid of `stats` instances (two grid axes × one variant per
//!   target norm), a cheap kind, run once to fill the store (timed too) — then `plan`, a no-op
//!   `run`, `status` and `table`, every instance cached.
//!
//! Peak memory is the command's maximum resident set as `/usr/bin/time` reports it (a dash
//! where that program is missing). Goals at 100,000 instances: `plan` under 5 s, a no-op `run`
//! under 10 s. Run with `cargo bench --bench plan_scale -- [--sizes 2000,16000,100000]
//! [--cached-up-to N]`; the `cached` experiment is measured only up to N instances (default:
//! every size), as filling the store runs each instance once (about 15 ms each on two cores).

use std::path::Path;
use std::process::Command;
use std::time::Instant;

/// `sweep`: 1 + seeds · 4 trainings · (1 + 3 downstream) = 16 · seeds + 1 instances.
fn sweep(seeds: usize) -> String {
    let list: Vec<String> = (0..seeds).map(|s| s.to_string()).collect();
    format!(
        r#"[experiment]
name = "sweep"
[steps.data]
kind = "synth"
dim = 16
n_features = 32
train = 256
test = 64
[steps.sae]
kind = "train"
data = "data.train"
arch = "topk"
k = [1, 2, 3, 4]
seed = [{}]
[steps.score]
kind = "score_topk"
sae = "sae"
data = "data.test"
[steps.rec]
kind = "recovery"
sae = "sae"
truth = "data.dictionary"
[steps.val]
kind = "validate"
sae = "sae.snapshots"
data = "data.test"
"#,
        list.join(", ")
    )
}

/// `cached`: 1 + 4 · (4 · seeds) `stats` instances = 16 · seeds + 1, like [`sweep`].
fn cached(seeds: usize) -> String {
    let mut text = String::from(
        r#"[experiment]
name = "cached"
[steps.data]
kind = "synth"
dim = 8
n_features = 8
train = 32
test = 8
[steps.st]
kind = "stats"
data = "data.train"
mean_center = [true, false]
scale_rule = ["reference", "corrected"]
"#,
    );
    for v in 0..4 * seeds {
        text += &format!(
            "[[steps.st.variant]]\ntarget_norm = {}\n",
            1.0 + v as f64 / 64.0
        );
    }
    text
}

/// One command's wall seconds and peak resident MB (None without `/usr/bin/time`).
fn measure(dir: &Path, args: &[&str]) -> (f64, Option<f64>) {
    let exe = env!("CARGO_BIN_EXE_msae");
    let rss_file = dir.join("rss.txt");
    let timed = Path::new("/usr/bin/time").exists();
    let mut cmd = if timed {
        let mut c = Command::new("/usr/bin/time");
        c.arg("-f").arg("%M").arg("-o").arg(&rss_file).arg(exe);
        c
    } else {
        Command::new(exe)
    };
    cmd.args(args)
        .current_dir(dir)
        .env("MSAE_CACHE", dir.join("cache"))
        .stdout(std::process::Stdio::null());
    let start = Instant::now();
    let out = cmd.output().expect("msae runs");
    let seconds = start.elapsed().as_secs_f64();
    assert!(
        out.status.success(),
        "msae {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let peak = timed.then(|| {
        let kb: f64 = std::fs::read_to_string(&rss_file)
            .expect("/usr/bin/time wrote its report")
            .trim()
            .lines()
            .last()
            .unwrap_or("")
            .parse()
            .expect("a resident set size in KB");
        kb / 1024.0
    });
    (seconds, peak)
}

fn main() {
    let mut sizes = vec![2_000usize, 16_000, 100_000];
    let args: Vec<String> = std::env::args().collect();
    if let Some(i) = args.iter().position(|a| a == "--sizes") {
        sizes = args[i + 1]
            .split(',')
            .map(|s| s.trim().parse().expect("--sizes takes numbers"))
            .collect();
    }
    let cached_up_to: usize = args
        .iter()
        .position(|a| a == "--cached-up-to")
        .map_or(usize::MAX, |i| {
            args[i + 1].parse().expect("--cached-up-to takes a number")
        });
    let mut rows = Vec::new();
    for size in sizes {
        let seeds = (size / 16).max(1);
        let n = 16 * seeds + 1;
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("sweep.toml"), sweep(seeds)).unwrap();
        std::fs::write(dir.path().join("cached.toml"), cached(seeds)).unwrap();
        let mut row = |what: &str, args: &[&str], goal: Option<f64>| {
            let (s, peak) = measure(dir.path(), args);
            let peak = peak.map_or("—".into(), |p| format!("{p:.0}"));
            let verdict = goal.map_or("—".into(), |g| {
                format!("{g} s: {}", if s < g { "met" } else { "missed" })
            });
            eprintln!("{n} instances, {what}: {s:.2} s, {peak} MB");
            rows.push(format!("| {n} | {what} | {s:.2} | {peak} | {verdict} |"));
        };
        let big = n >= 100_000;
        row(
            "plan (nothing run)",
            &["plan", "sweep.toml"],
            big.then_some(5.0),
        );
        row("graph", &["graph", "sweep.toml"], None);
        row("status (nothing run)", &["status", "sweep.toml"], None);
        if n > cached_up_to {
            continue;
        }
        row(
            "first run (stats grid)",
            &["run", "-q", "cached.toml"],
            None,
        );
        row(
            "plan (all cached)",
            &["plan", "cached.toml"],
            big.then_some(5.0),
        );
        row(
            "no-op run",
            &["run", "-q", "cached.toml"],
            big.then_some(10.0),
        );
        row("status (all cached)", &["status", "cached.toml"], None);
        row("table", &["table", "cached.toml"], None);
    }
    println!("| instances | command | wall s | peak MB | goal |");
    println!("|---:|---|---:|---:|---|");
    for r in rows {
        println!("{r}");
    }
}
