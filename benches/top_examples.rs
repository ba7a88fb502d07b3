//! `top_examples` against the bare encoder product of the same matrix, and its peak memory.
//!
//! Writes a random matrix (default 1,000,000 × 768, 3 GB) and a random TopK SAE (6,144 latents)
//! to a temporary folder, then times, in alternating rounds in this process:
//! * the bare product: every block read from the file and multiplied by the encoder
//!   (`X·W_enc`, candle on the CPU) — the least any ranking of the code must do;
//! * the `top_examples` step itself (its `run`, as `msae run` calls it): read, standardise,
//!   encode, activate, rank, write.
//!
//! Before each step round the process's peak resident set is reset (`/proc/self/clear_refs`), so
//! the peak printed is the step's own. Goal: the step within 1.5× of the product, under 1 GB.
//!
//! `cargo bench --bench top_examples -- [--rows N] [--dim D] [--latents N] [--k K]
//! [--batch B] [--rounds R]`

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Instant;

use candle_core::{Device, Tensor};
use msae::data::npy::NpyWriter;
use msae::data::reader::RowReader;
use msae::kinds::top_examples::TopExamplesKind;
use msae::sae::{Arch, Sae, TrainConfig};
use msae::step::progress::Progress;
use msae::step::value::Value;
use msae::step::{InputArtifact, Step, StepContext};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, StandardNormal};

struct Args {
    rows: usize,
    dim: usize,
    latents: usize,
    k: usize,
    batch: usize,
    rounds: usize,
}

fn args() -> Args {
    let mut a = Args {
        rows: 1_000_000,
        dim: 768,
        latents: 6144,
        k: 64,
        batch: 1024,
        rounds: 2,
    };
    let argv: Vec<String> = std::env::args().skip(1).collect();
    let mut i = 0;
    while i < argv.len() {
        let value = || argv.get(i + 1).and_then(|v| v.parse().ok());
        match argv[i].as_str() {
            "--rows" => a.rows = value().expect("--rows N"),
            "--dim" => a.dim = value().expect("--dim D"),
            "--latents" => a.latents = value().expect("--latents N"),
            "--k" => a.k = value().expect("--k K"),
            "--batch" => a.batch = value().expect("--batch B"),
            "--rounds" => a.rounds = value().expect("--rounds R"),
            _ => {
                i += 1;
                continue;
            }
        }
        i += 2;
    }
    a
}

/// The process's peak resident set in MiB (`VmHWM`).
fn peak_rss_mib() -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        .map_or(f64::NAN, |kb| kb / 1024.0)
}

fn reset_peak_rss() {
    // "5" resets the peak resident set to the current one (Linux).
    std::fs::write("/proc/self/clear_refs", "5").ok();
}

fn write_matrix(path: &Path, rows: usize, dim: usize) {
    let mut w = NpyWriter::create(path, rows, dim).unwrap();
    let mut rng = ChaCha8Rng::seed_from_u64(1);
    let block = 8192;
    for start in (0..rows).step_by(block) {
        let n = block.min(rows - start) * dim;
        let v: Vec<f32> = (0..n).map(|_| StandardNormal.sample(&mut rng)).collect();
        w.write_rows(&v).unwrap();
    }
    w.finish().unwrap();
}

/// Seconds of the bare product over the whole file.
fn bare_product(data: &Path, sae: &Sae, batch: usize) -> f64 {
    let reader = RowReader::open(data).unwrap();
    let (rows, cols) = (reader.rows(), reader.cols());
    let mut block = Vec::new();
    let started = Instant::now();
    for start in (0..rows).step_by(batch) {
        let end = (start + batch).min(rows);
        block.resize((end - start) * cols, 0.0);
        reader.read_range(start, end, &mut block).unwrap();
        let x = Tensor::from_slice(&block, (end - start, cols), &Device::Cpu).unwrap();
        let p = x.matmul(&sae.encoder).unwrap();
        std::hint::black_box(p);
    }
    started.elapsed().as_secs_f64()
}

/// Seconds of one run of the step, and its peak resident set.
fn step_round(dir: &Path, round: usize, batch: usize) -> (f64, f64) {
    let mut params = BTreeMap::new();
    for spec in TopExamplesKind.params() {
        if let Some(v) = spec.default_value(42) {
            params.insert(spec.name.to_string(), v);
        }
    }
    params.insert("batch_size".into(), Value::Int(batch as i64));
    let input = |name: &str| InputArtifact {
        path: dir.join(name),
        hash: String::new(),
        from: name.to_string(),
    };
    let inputs = BTreeMap::from([
        ("sae".to_string(), input("model.safetensors")),
        ("data".to_string(), input("matrix.npy")),
    ]);
    let out = dir.join(format!("out{round}"));
    std::fs::create_dir_all(&out).unwrap();
    let progress = Progress::hidden(true);
    let threads = rayon::current_num_threads();
    let mut ctx = StepContext::new(
        "bench",
        &params,
        inputs,
        BTreeMap::new(),
        "cpu",
        threads,
        dir.join(format!("partial{round}")),
        out,
        &progress,
    );
    reset_peak_rss();
    let started = Instant::now();
    TopExamplesKind.run(&mut ctx).expect("the step runs");
    (started.elapsed().as_secs_f64(), peak_rss_mib())
}

fn main() {
    let a = args();
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("matrix.npy");
    eprintln!("writing a {} × {} matrix …", a.rows, a.dim);
    write_matrix(&data, a.rows, a.dim);
    // Flush the fresh matrix to disk now: its write-back would otherwise run during the first
    // rounds and slow whichever side it lands on.
    std::fs::File::open(&data).unwrap().sync_all().unwrap();
    let config = TrainConfig {
        arch: Arch::Topk,
        n_latents: Some(a.latents),
        k: Some(a.k),
        ..Default::default()
    };
    let sae = Sae::new(&config, a.dim, &Device::Cpu).unwrap();
    sae.save(&dir.path().join("model.safetensors")).unwrap();

    println!(
        "| round | rows | d | latents | product s | product rows/s | top_examples s | top_examples rows/s | ratio | peak RSS MiB |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|");
    for round in 0..a.rounds {
        let product = bare_product(&data, &sae, a.batch);
        let (step, peak) = step_round(dir.path(), round, a.batch);
        println!(
            "| {round} | {} | {} | {} | {product:.2} | {:.0} | {step:.2} | {:.0} | {:.2} | {peak:.0} |",
            a.rows,
            a.dim,
            a.latents,
            a.rows as f64 / product,
            a.rows as f64 / step,
            step / product,
        );
    }
    println!(
        "(threads: {}; the ratio is top_examples time / bare product time; goal ≤ 1.5, peak < 1024 MiB)",
        rayon::current_num_threads()
    );
}
