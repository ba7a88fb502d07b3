//! Parallel instances: wall time of a 24-training CPU grid with `-j 1` and `-j 2` (same thread
//! budget, `--threads 2`), each on a fresh store, alternating so both see the same machine load.
//! Then, where a Slurm cluster answers (`sinfo`; e.g. `SLURM_CONF` of a local test cluster),
//! the per-instance overhead of the Slurm executor: ten trivial instances with the local
//! executor and with `--executor slurm`, side by side.
//! Run with `cargo bench --bench scale -- [--rounds R] [--epochs E] [--no-grid]`.

use std::path::Path;
use std::process::Command;
use std::time::Instant;

fn grid(epochs: u32) -> String {
    format!(
        r#"
[experiment]
name = "scale"
seed = 1

[steps.data]
kind = "synth"
dim = 64
n_features = 128
train = 8192
test = 512

[steps.sae]
kind = "train"
data = "data.train"
expansion = [2, 4, 8]
seed = [1, 2, 3, 4]
epochs = {epochs}
batch_size = 256

[[steps.sae.variant]]
arch = "topk"
k = 8

[[steps.sae.variant]]
arch = "relu"
l1 = 0.003
"#
    )
}

/// Seconds of one `msae run` on a fresh store.
fn timed_run(dir: &Path, store: &str, extra: &[&str]) -> f64 {
    let cache = dir.join(store);
    std::fs::remove_dir_all(&cache).ok();
    let start = Instant::now();
    let out = Command::new(env!("CARGO_BIN_EXE_msae"))
        .args(["-q", "run", "--threads", "2"])
        .args(extra)
        .arg("scale.toml")
        .current_dir(dir)
        .env("MSAE_CACHE", &cache)
        .output()
        .expect("msae runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("25 run, 0 cached, 0 failed"), "{stdout}");
    start.elapsed().as_secs_f64()
}

fn arg(name: &str, default: u32) -> u32 {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    v[v.len() / 2]
}

fn load() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|l| l.split_whitespace().next().unwrap_or("?").to_string())
        .unwrap_or_else(|_| "?".into())
}

/// Ten independent trivial instances.
const TRIVIAL: &str = "[experiment]\nname = \"trivial\"\n\n[steps.data]\nkind = \"synth\"\ndim = 8\nn_features = 8\ntrain = 64\ntest = 8\nseed = [1, 2, 3, 4, 5, 6, 7, 8, 9, 10]\n";

fn slurm_overhead(rounds: u32) {
    let up = Command::new("sinfo")
        .args(["-h", "-o", "%t"])
        .output()
        .map(|o| o.status.success() && !o.stdout.is_empty())
        .unwrap_or(false);
    if !up {
        println!("\n(no Slurm cluster answers `sinfo`: the Slurm overhead row is left out)");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("trivial.toml"), TRIVIAL).unwrap();
    let timed = |store: &str, extra: &[&str]| {
        let cache = dir.path().join(store);
        std::fs::remove_dir_all(&cache).ok();
        let start = Instant::now();
        let out = Command::new(env!("CARGO_BIN_EXE_msae"))
            .args(["-q", "run"])
            .args(extra)
            .arg("trivial.toml")
            .current_dir(dir.path())
            .env("MSAE_CACHE", &cache)
            .output()
            .expect("msae runs");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        start.elapsed().as_secs_f64()
    };
    let (mut local, mut slurm) = (Vec::new(), Vec::new());
    for _ in 0..rounds {
        local.push(timed("local", &["-j", "2"]));
        slurm.push(timed(
            "slurm",
            &["--executor", "slurm", "--poll", "0.5", "--poll-max", "2"],
        ));
    }
    let (l, s) = (median(local), median(slurm));
    println!("\nSlurm executor against the local one: 10 trivial instances (one `synth` each), median of {rounds} rounds; local `-j 2`, Slurm on the cluster that `sinfo` answers for, `--poll 0.5`\n");
    println!("| executor | wall s | s per instance | overhead per instance vs local (s) |");
    println!("|---|---:|---:|---:|");
    println!("| local -j 2 | {l:.2} | {:.3} | — |", l / 10.0);
    println!(
        "| slurm | {s:.2} | {:.3} | {:.3} |",
        s / 10.0,
        (s - l) / 10.0
    );
}

fn main() {
    let rounds = arg("--rounds", 3);
    if std::env::args().any(|a| a == "--no-grid") {
        slurm_overhead(rounds);
        return;
    }
    let epochs = arg("--epochs", 3);
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("scale.toml"), grid(epochs)).unwrap();
    let load_start = load();
    let (mut one, mut two) = (Vec::new(), Vec::new());
    for _ in 0..rounds {
        one.push(timed_run(dir.path(), "j1", &["-j", "1"]));
        two.push(timed_run(dir.path(), "j2", &["-j", "2"]));
    }
    let (m1, m2) = (median(one.clone()), median(two.clone()));
    println!(
        "\n24 trainings + their data (25 instances), {epochs} epochs each, --threads 2, {rounds} alternating rounds, load average {load_start} → {}\n",
        load()
    );
    println!("| -j | wall s (median) | rounds s | instances/s | speed-up vs -j 1 |");
    println!("|---|---:|---|---:|---:|");
    for (j, m, all) in [(1, m1, &one), (2, m2, &two)] {
        let rounds: Vec<String> = all.iter().map(|s| format!("{s:.1}")).collect();
        println!(
            "| {j} | {m:.1} | {} | {:.2} | {:.2}× |",
            rounds.join(", "),
            25.0 / m,
            m1 / m
        );
    }
    slurm_overhead(rounds);
}
