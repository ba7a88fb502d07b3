//! Benchmark of dictionary alignment against SciPy.
//!
//! ```text
//! MSAE_SCIPY_PYTHON=python3 cargo run --release --example bench_assignment -- \
//!     [SIZES...] [--dim 768] [--no-scipy]
//! ```
//!
//! For each size `n` two sets of `n` random unit vectors in `dim` dimensions
//! are drawn; a share of the second set are noisy copies of a permutation of
//! the first, so the matching is non-trivial. Two comparisons, side by side:
//!
//! * the whole computation of the `align` step
//!   (`msae::analysis::alignment::align`: cosine matrix `C = U1 · U2ᵀ` plus the
//!   optimal matching) against NumPy's `U1 @ U2.T` plus
//!   `scipy.optimize.linear_sum_assignment(C, maximize=True)` on the same
//!   vector sets;
//! * the solver alone (`msae::assignment::solve_max`) against
//!   `linear_sum_assignment` on the very same matrix, with wall-clock and CPU
//!   seconds (CPU seconds are the fairer comparison on a busy machine; msae's
//!   come from `/proc` with 10 ms resolution).
//!
//! Data travels to Python through temporary `.npy` files; the interpreter is
//! `MSAE_SCIPY_PYTHON` (default `python3`). Without SciPy only the msae
//! columns are filled. `RUST_LOG=msae=debug` adds the solver's phase timings.

use anyhow::{bail, Context, Result};
use clap::Parser;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rand_distr::StandardNormal;
use rayon::prelude::*;
use std::io::Write;
use std::path::Path;
use std::process::Command;
use std::time::Instant;

#[derive(Parser)]
#[command(about = "Time the msae assignment solver against SciPy")]
struct Args {
    /// Matrix sizes (n for an n × n problem).
    #[arg(default_values_t = vec![1024usize, 6144, 24576])]
    sizes: Vec<usize>,
    /// Dimension of the latent direction vectors.
    #[arg(long, default_value_t = 768)]
    dim: usize,
    /// Share of the second set that are perturbed copies of the first.
    #[arg(long, default_value_t = 0.5)]
    copied: f64,
    /// Random seed.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Skip SciPy even if it is installed.
    #[arg(long)]
    no_scipy: bool,
}

const SCIPY_SCRIPT: &str = r#"
import sys, time
import numpy as np
from scipy.optimize import linear_sum_assignment
U1, U2 = np.load(sys.argv[1]), np.load(sys.argv[2])
t0 = time.perf_counter()
C = U1 @ U2.T
t1, cpu = time.perf_counter(), time.process_time()
r, c = linear_sum_assignment(C, maximize=True)
t2, cpu = time.perf_counter(), time.process_time() - cpu
print(t2 - t1, cpu, repr(float(C[r, c].astype(np.float64).sum())), t2 - t0)
"#;

fn python() -> String {
    std::env::var("MSAE_SCIPY_PYTHON").unwrap_or_else(|_| "python3".into())
}

struct Scipy {
    wall: f64,
    cpu: f64,
    total: f64,
    /// NumPy cosine matrix plus the solver.
    with_cosines: f64,
}

struct Row {
    n: usize,
    align_s: f64,
    build_s: f64,
    msae_s: f64,
    msae_cpu: Option<f64>,
    msae_total: f64,
    scipy: Option<Scipy>,
}

fn main() -> Result<()> {
    let args = Args::parse();
    // `RUST_LOG=msae=debug` shows the solver's phase timings.
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_writer(std::io::stderr)
        .init();
    let scipy = !args.no_scipy && scipy_available();
    if !args.no_scipy && !scipy {
        eprintln!(
            "SciPy not found (interpreter: MSAE_SCIPY_PYTHON or python3); install it with \
             `pip install scipy numpy` to get the comparison columns. Timing msae only."
        );
    }
    eprintln!("rayon threads: {}", rayon::current_num_threads());
    let dir = tempfile::tempdir().context("creating a temporary directory")?;

    let mut rows = Vec::new();
    for &n in &args.sizes {
        if n == 0 {
            bail!("sizes must be positive");
        }
        eprintln!("n = {n}: building the {n} x {n} cosine-similarity matrix ...");
        let mut rng = ChaCha8Rng::seed_from_u64(args.seed ^ n as u64);
        let (u1, u2) = latent_sets(&mut rng, n, args.dim, args.copied);
        let npys = [1, 2].map(|i| dir.path().join(format!("u{i}_{n}.npy")));
        if scipy {
            write_npy(&npys[0], &u1, n, args.dim)?;
            write_npy(&npys[1], &u2, n, args.dim)?;
        }

        eprintln!("n = {n}: msae align (cosines + matching, as the step computes them) ...");
        let t = Instant::now();
        let aligned = msae::analysis::alignment::align(&u1, &u2, args.dim, 512)?;
        let align_s = t.elapsed().as_secs_f64();
        drop(aligned);

        let t = Instant::now();
        let c = similarity(&u1, &u2, n, args.dim);
        let build_s = t.elapsed().as_secs_f64();
        drop((u1, u2));

        eprintln!("n = {n}: msae solve_max ...");
        let (t, cpu) = (Instant::now(), cpu_seconds());
        let a = msae::assignment::solve_max(&c, n, n)?;
        let msae_s = t.elapsed().as_secs_f64();
        let msae_cpu = cpu_seconds().zip(cpu).map(|(b, a)| b - a);
        eprintln!(
            "n = {n}: msae {msae_s:.3} s wall, {} CPU, total {:.6}",
            msae_cpu.map_or("?".into(), |c| format!("{c:.3} s")),
            a.total
        );
        drop(c);

        let scipy_result = if scipy {
            eprintln!("n = {n}: scipy linear_sum_assignment ...");
            let r = run_scipy(&npys[0], &npys[1])?;
            eprintln!(
                "n = {n}: scipy {:.3} s wall, {:.3} s CPU, total {:.6}; with NumPy cosines {:.3} s",
                r.wall, r.cpu, r.total, r.with_cosines
            );
            npys.iter().for_each(|p| {
                std::fs::remove_file(p).ok();
            });
            Some(r)
        } else {
            None
        };
        rows.push(Row {
            n,
            align_s,
            build_s,
            msae_s,
            msae_cpu,
            msae_total: a.total,
            scipy: scipy_result,
        });
    }

    let secs = |x: Option<f64>| x.map_or("–".to_string(), |x| format!("{x:.3}"));
    println!();
    println!("Whole alignment (cosine matrix + optimal matching):");
    println!();
    println!("| n | msae align (s) | NumPy cosines + SciPy (s) | SciPy / msae |");
    println!("|---:|---:|---:|---:|");
    for r in &rows {
        let (theirs, ratio) = match &r.scipy {
            Some(s) => (
                format!("{:.3}", s.with_cosines),
                format!("{:.2}", s.with_cosines / r.align_s),
            ),
            None => ("–".into(), "–".into()),
        };
        println!("| {} | {:.3} | {theirs} | {ratio} |", r.n, r.align_s);
    }
    println!();
    println!("Solver alone, on the same matrix:");
    println!();
    println!(
        "| n | build C (s) | msae wall (s) | msae CPU (s) | SciPy wall (s) | SciPy CPU (s) \
         | SciPy / msae (wall) | msae total | SciPy total | totals equal |"
    );
    println!("|---:|---:|---:|---:|---:|---:|---:|---:|---:|:---:|");
    for r in &rows {
        match &r.scipy {
            Some(s) => {
                let rel = (s.total - r.msae_total).abs() / s.total.abs().max(1e-12);
                println!(
                    "| {} | {:.3} | {:.3} | {} | {:.3} | {:.3} | {:.2} | {:.4} | {:.4} | {} |",
                    r.n,
                    r.build_s,
                    r.msae_s,
                    secs(r.msae_cpu),
                    s.wall,
                    s.cpu,
                    s.wall / r.msae_s,
                    r.msae_total,
                    s.total,
                    if rel <= 1e-3 { "yes" } else { "NO" }
                );
            }
            None => println!(
                "| {} | {:.3} | {:.3} | {} | – | – | – | {:.4} | – | – |",
                r.n,
                r.build_s,
                r.msae_s,
                secs(r.msae_cpu),
                r.msae_total
            ),
        }
    }
    Ok(())
}

/// Two `n × dim` row-major sets of unit vectors; a share `copied` of the
/// second set are noisy copies of randomly permuted rows of the first.
fn latent_sets(rng: &mut ChaCha8Rng, n: usize, dim: usize, copied: f64) -> (Vec<f32>, Vec<f32>) {
    let mut gaussian = |len: usize| -> Vec<f32> {
        (0..len)
            .map(|_| rng.sample::<f32, _>(StandardNormal))
            .collect()
    };
    let mut u1 = gaussian(n * dim);
    let mut u2 = gaussian(n * dim);
    u1.par_chunks_mut(dim).for_each(normalize);
    u2.par_chunks_mut(dim).for_each(normalize);

    let mut perm: Vec<usize> = (0..n).collect();
    for i in (1..n).rev() {
        perm.swap(i, rng.random_range(0..=i));
    }
    for (i, &p) in perm.iter().enumerate() {
        if rng.random::<f64>() < copied {
            // Noise of norm 0.3..1.5 relative to the copied direction gives
            // cosine similarities of roughly 0.55..0.95.
            let scale = rng.random_range(0.3f32..1.5);
            let (src, dst) = (p * dim, i * dim);
            for k in 0..dim {
                u2[dst + k] = u1[src + k] + scale * u2[dst + k];
            }
            normalize(&mut u2[dst..dst + dim]);
        }
    }
    (u1, u2)
}

fn normalize(v: &mut [f32]) {
    let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt();
    if norm > 0.0 {
        v.iter_mut().for_each(|x| *x /= norm);
    }
}

/// `C = U1 · U2ᵀ` with a blocked SGEMM per band of rows, bands in parallel.
fn similarity(u1: &[f32], u2: &[f32], n: usize, dim: usize) -> Vec<f32> {
    const BAND: usize = 256;
    let mut c = vec![0.0f32; n * n];
    c.par_chunks_mut(BAND * n).enumerate().for_each(|(b, out)| {
        let rows = out.len() / n;
        let a = &u1[b * BAND * dim..(b * BAND + rows) * dim];
        // SAFETY: `a` is rows × dim row-major, `u2` read as its transpose
        // is dim × n (row stride 1, column stride dim), `out` is rows × n
        // row-major; all slices are long enough for these strides.
        unsafe {
            matrixmultiply::sgemm(
                rows,
                dim,
                n,
                1.0,
                a.as_ptr(),
                dim as isize,
                1,
                u2.as_ptr(),
                1,
                dim as isize,
                0.0,
                out.as_mut_ptr(),
                n as isize,
                1,
            );
        }
    });
    c
}

/// Writes a row-major `f32` matrix as a version 1.0 `.npy` file.
fn write_npy(path: &Path, data: &[f32], rows: usize, cols: usize) -> Result<()> {
    let mut header =
        format!("{{'descr': '<f4', 'fortran_order': False, 'shape': ({rows}, {cols}), }}");
    // magic (6) + version (2) + header length (2) + header, a multiple of 64.
    let unpadded = 10 + header.len() + 1;
    header.push_str(&" ".repeat(unpadded.next_multiple_of(64) - unpadded));
    header.push('\n');
    let header_len = u16::try_from(header.len()).context("npy header too long")?;

    let file =
        std::fs::File::create(path).with_context(|| format!("creating {}", path.display()))?;
    let mut w = std::io::BufWriter::with_capacity(1 << 22, file);
    w.write_all(b"\x93NUMPY\x01\x00")?;
    w.write_all(&header_len.to_le_bytes())?;
    w.write_all(header.as_bytes())?;
    let mut buf = Vec::with_capacity(1 << 20);
    for chunk in data.chunks(1 << 18) {
        buf.clear();
        buf.extend(chunk.iter().flat_map(|x| x.to_le_bytes()));
        w.write_all(&buf)?;
    }
    w.flush()?;
    Ok(())
}

/// User + system CPU time of this process so far (Linux `/proc`), to tell
/// the solver's own cost apart from waiting on a busy machine.
fn cpu_seconds() -> Option<f64> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // Fields after the parenthesised command name; utime and stime are the
    // 14th and 15th fields overall.
    let rest = stat.get(stat.rfind(')')? + 2..)?;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let utime: f64 = fields.get(11)?.parse().ok()?;
    let stime: f64 = fields.get(12)?.parse().ok()?;
    // Clock ticks are 100 Hz on Linux builds in practice.
    Some((utime + stime) / 100.0)
}

fn scipy_available() -> bool {
    Command::new(python())
        .args(["-c", "import numpy, scipy.optimize"])
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false)
}

/// Runs SciPy on the saved matrix.
fn run_scipy(u1: &Path, u2: &Path) -> Result<Scipy> {
    let out = Command::new(python())
        .arg("-c")
        .arg(SCIPY_SCRIPT)
        .arg(u1)
        .arg(u2)
        .output()
        .context("running Python")?;
    if !out.status.success() {
        bail!(
            "SciPy run failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    let text = String::from_utf8_lossy(&out.stdout);
    let mut it = text.split_whitespace();
    let mut num = || it.next().and_then(|s| s.parse::<f64>().ok());
    match (num(), num(), num(), num()) {
        (Some(wall), Some(cpu), Some(total), Some(with_cosines)) => Ok(Scipy {
            wall,
            cpu,
            total,
            with_cosines,
        }),
        _ => bail!("unexpected SciPy output: {text}"),
    }
}
