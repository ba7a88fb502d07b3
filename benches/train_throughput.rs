//! Training throughput of msae next to a PyTorch implementation of the same recipe.
//!
//! `cargo bench --bench train_throughput -- [--threads N] [--steps S] [--archs topk,msae,...]
//! [--d D] [--n N] [--batch B]`
//!
//! For every architecture msae trains on an in-memory matrix of standard-normal rows (one
//! warm-up step, then `steps` timed steps through the progress callback); then
//! `benches/torch_sae.py` runs the same recipe with the same thread count. The Python
//! interpreter is `$MSAE_TORCH_PYTHON` (default `python3`); without PyTorch only the msae
//! column is printed.

use std::process::Command;
use std::time::Instant;

use candle_core::Device;
use msae::sae::train::{train, MatrixSource, Standardization, TrainOptions};
use msae::sae::{Arch, TrainConfig};
use rand::SeedableRng;
use rand_distr::{Distribution, StandardNormal};

struct Args {
    threads: usize,
    steps: usize,
    archs: Vec<String>,
    d: usize,
    n: usize,
    batch: usize,
}

fn parse_args() -> Args {
    let mut a = Args {
        threads: std::thread::available_parallelism().map_or(1, |n| n.get()),
        steps: 5,
        archs: ["relu", "topk", "batchtopk", "jumprelu", "msae"]
            .map(String::from)
            .to_vec(),
        d: 768,
        n: 6144,
        batch: 4096,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || it.next().unwrap_or_else(|| panic!("{flag} needs a value"));
        let num = |v: String| -> usize { v.parse().unwrap_or_else(|_| panic!("bad number {v}")) };
        match flag.as_str() {
            "--threads" => a.threads = num(value()),
            "--steps" => a.steps = num(value()),
            "--archs" => a.archs = value().split(',').map(|s| s.trim().to_string()).collect(),
            "--d" => a.d = num(value()),
            "--n" => a.n = num(value()),
            "--batch" => a.batch = num(value()),
            // Flags that cargo passes to every bench target.
            "--bench" => {}
            other => panic!("unknown argument {other}"),
        }
    }
    a
}

/// Samples per second of msae training for `arch` (mean over the timed steps).
fn msae_throughput(arch: Arch, a: &Args, data: &MatrixSource) -> anyhow::Result<f64> {
    let rows = data.data().len() / a.d;
    let steps_per_epoch = rows.div_ceil(a.batch);
    let cfg = TrainConfig {
        arch,
        n_latents: Some(a.n),
        batch_size: a.batch,
        epochs: (a.steps + 1).div_ceil(steps_per_epoch),
        ..Default::default()
    };
    // Progress is reported after every step: the first report closes the warm-up step.
    let mut started: Option<Instant> = None;
    let mut timed = 0usize;
    let mut elapsed = 0.0;
    train(
        &cfg,
        data,
        &Standardization::identity(a.d),
        &[],
        &Device::Cpu,
        &TrainOptions {
            stop_after_steps: Some(a.steps as u64 + 1),
            ..Default::default()
        },
        &mut |_| match started {
            None => started = Some(Instant::now()),
            Some(t) => {
                timed += 1;
                elapsed = t.elapsed().as_secs_f64();
            }
        },
    )?;
    anyhow::ensure!(timed > 0, "no timed step ran");
    Ok((timed * a.batch) as f64 / elapsed)
}

/// PyTorch samples/s per architecture, or the reason there are none.
fn torch_throughput(a: &Args) -> Result<Vec<(String, f64)>, String> {
    let python = std::env::var("MSAE_TORCH_PYTHON").unwrap_or_else(|_| "python3".into());
    let probe = Command::new(&python)
        .args(["-c", "import torch"])
        .output()
        .map_err(|e| format!("cannot run {python}: {e}"))?;
    if !probe.status.success() {
        return Err(format!(
            "{python} cannot import torch; install it with `{python} -m pip install torch` \
             (or `pip install torch`), or point MSAE_TORCH_PYTHON at an interpreter that has it"
        ));
    }
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/benches/torch_sae.py");
    let out = Command::new(&python)
        .arg(script)
        .args(
            [a.threads, a.d, a.n, a.batch, a.steps]
                .iter()
                .map(|v| v.to_string()),
        )
        .args(&a.archs)
        .output()
        .map_err(|e| format!("cannot run {script}: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "{script} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    let mut res = Vec::new();
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let v: serde_json::Value =
            serde_json::from_str(line).map_err(|e| format!("bad output line {line:?}: {e}"))?;
        match (v["arch"].as_str(), v["samples_per_s"].as_f64()) {
            (Some(arch), Some(s)) => res.push((arch.to_string(), s)),
            _ => return Err(format!("bad output line {line:?}")),
        }
    }
    Ok(res)
}

/// Throughput goal of msae relative to PyTorch.
fn goal(arch: &str) -> Option<f64> {
    match arch {
        "topk" | "batchtopk" => Some(2.0),
        "msae" => Some(4.0),
        _ => None,
    }
}

fn main() -> anyhow::Result<()> {
    let a = parse_args();
    rayon::ThreadPoolBuilder::new()
        .num_threads(a.threads)
        .build_global()?;
    // Two batches of standard-normal rows: the epochs alternate between them.
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(1);
    let rows = 2 * a.batch;
    let data: Vec<f32> = (0..rows * a.d)
        .map(|_| StandardNormal.sample(&mut rng))
        .collect();
    let data = MatrixSource::new(data, a.d)?;

    let mut ours = Vec::new();
    for name in &a.archs {
        let arch: Arch = serde_json::from_str(&format!("\"{name}\""))
            .map_err(|_| anyhow::anyhow!("unknown architecture {name}"))?;
        let s = msae_throughput(arch, &a, &data)?;
        eprintln!("msae {name}: {s:.0} samples/s");
        ours.push((name.clone(), s));
    }
    let torch = torch_throughput(&a);
    if let Ok(t) = &torch {
        for (arch, s) in t {
            eprintln!("pytorch {arch}: {s:.0} samples/s");
        }
    }

    println!(
        "\nTraining throughput, d = {}, n = {}, batch {}, {} threads, {} timed steps after one warm-up step\n",
        a.d, a.n, a.batch, a.threads, a.steps
    );
    match torch {
        Ok(t) => {
            println!("| arch | msae samples/s | PyTorch samples/s | ratio | goal | met? |");
            println!("|---|---|---|---|---|---|");
            for (name, s) in &ours {
                let theirs = t.iter().find(|(n, _)| n == name).map(|p| p.1);
                let ratio = theirs.map(|p| s / p);
                let (goal_s, met) = match (goal(name), ratio) {
                    (Some(g), Some(r)) => (format!("{g}×"), if r >= g { "yes" } else { "no" }),
                    (Some(g), None) => (format!("{g}×"), "?"),
                    (None, _) => ("none".to_string(), "—"),
                };
                println!(
                    "| {name} | {s:.0} | {} | {} | {goal_s} | {met} |",
                    theirs.map_or("—".into(), |p| format!("{p:.0}")),
                    ratio.map_or("—".into(), |r| format!("{r:.2}")),
                );
            }
        }
        Err(why) => {
            println!("PyTorch column skipped: {why}\n");
            println!("| arch | msae samples/s |");
            println!("|---|---|");
            for (name, s) in &ours {
                println!("| {name} | {s:.0} |");
            }
        }
    }
    Ok(())
}
