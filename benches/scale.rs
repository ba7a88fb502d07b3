//! Parallel instances: wall time of a 24-training CPU grid with `-j 1` and `-j 2` (same thread
//! budget, `--threads 2`), each on a fresh store, alternating so both see the same machine load.
//! Run with `cargo bench --bench scale -- [--rounds R] [--epochs E]`.

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

fn main() {
    let rounds = arg("--rounds", 3);
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
}
