//! No-op latency: `msae run` and `msae table` on a fully cached experiment of 200 instances.
//! Goal: under 100 ms each. Run with `cargo bench --bench noop`.

use std::process::Command;
use std::time::Instant;

fn time_ms(dir: &std::path::Path, args: &[&str], reps: usize) -> Vec<f64> {
    (0..reps)
        .map(|_| {
            let start = Instant::now();
            let out = Command::new(env!("CARGO_BIN_EXE_msae"))
                .args(args)
                .current_dir(dir)
                .env("MSAE_CACHE", dir.join("cache"))
                .output()
                .expect("msae runs");
            assert!(
                out.status.success(),
                "{}",
                String::from_utf8_lossy(&out.stderr)
            );
            start.elapsed().as_secs_f64() * 1e3
        })
        .collect()
}

fn median(mut v: Vec<f64>) -> (f64, f64) {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    (v[v.len() / 2], v[0])
}

fn main() {
    let dir = tempfile::tempdir().unwrap();
    let seeds: Vec<String> = (1..=50).map(|s| s.to_string()).collect();
    let exp = format!(
        "[experiment]\nname = \"bench\"\n\n[steps.data]\nkind = \"synth\"\ndim = [8, 16, 24, 32]\nn_features = 8\ntrain = 16\ntest = 4\nseed = [{}]\n",
        seeds.join(", ")
    );
    std::fs::write(dir.path().join("bench.toml"), exp).unwrap();
    let first = time_ms(dir.path(), &["run", "-q", "bench.toml"], 1);
    let reps = 15;
    let (run_med, run_min) = median(time_ms(dir.path(), &["run", "-q", "bench.toml"], reps));
    let (table_med, table_min) = median(time_ms(dir.path(), &["table", "bench.toml"], reps));
    let (plan_med, plan_min) = median(time_ms(dir.path(), &["plan", "bench.toml"], reps));
    println!("\nNo-op latency on a fully cached experiment of 200 instances ({reps} repetitions; first full run {:.0} ms)\n", first[0]);
    println!("| command | median ms | min ms | goal ms | within goal |");
    println!("|---|---|---|---|---|");
    for (name, med, min) in [
        ("msae run", run_med, run_min),
        ("msae table", table_med, table_min),
        ("msae plan", plan_med, plan_min),
    ] {
        println!(
            "| {name} | {med:.1} | {min:.1} | 100 | {} |",
            if med < 100.0 { "yes" } else { "no" }
        );
    }
}
