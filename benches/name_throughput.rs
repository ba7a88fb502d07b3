//! Concept-naming throughput: vocabulary rows named per second.
//!
//! ```text
//! cargo bench --bench name_throughput -- [--latents 6144] [--dim 768] [--vocab 8192] [--block 1024]
//! ```
//!
//! Side by side in one process, on the same random decoder and vocabulary (centred mode):
//! * msae: `name_latents`, the computation of the `name` step — the similarity matrix streamed
//!   in blocks of `--block` vocabulary rows (memory `block × n` scores), best and runner-up per
//!   latent kept on the fly;
//! * baseline: the direct tensor formulation a PyTorch user writes — normalise both sides, one
//!   `[vocab, n]` candle matmul for the whole similarity matrix, then `argmax` over the
//!   vocabulary axis.
//!
//! Both must pick the same best entry for every latent; the table reports rows/s, the ratio and
//! the peak memory of the similarity scores each holds.

use std::time::Instant;

use candle_core::{Device, Tensor, D};
use msae::analysis::naming::{name_latents, Dictionary, NamingOptions};
use msae::metrics::MatRef;
use rand::{Rng, SeedableRng};

struct Args {
    latents: usize,
    dim: usize,
    vocab: usize,
    block: usize,
}

fn parse_args() -> Args {
    let mut a = Args {
        latents: 6144,
        dim: 768,
        vocab: 8192,
        block: NamingOptions::default().block_rows,
    };
    let argv: Vec<String> = std::env::args().skip(1).collect();
    let mut i = 0;
    while i < argv.len() {
        let value = |i: usize| -> usize {
            argv.get(i + 1)
                .and_then(|v| v.parse().ok())
                .unwrap_or_else(|| panic!("{} needs a positive integer", argv[i]))
        };
        match argv[i].as_str() {
            "--latents" => a.latents = value(i),
            "--dim" => a.dim = value(i),
            "--vocab" => a.vocab = value(i),
            "--block" => a.block = value(i),
            // `cargo bench` passes `--bench`; anything else is a mistake worth reporting.
            "--bench" => {
                i += 1;
                continue;
            }
            other => panic!("unknown argument {other}"),
        }
        i += 2;
    }
    a
}

fn random(rows: usize, cols: usize, seed: u64) -> Vec<f32> {
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    (0..rows * cols)
        .map(|_| rng.random::<f32>() * 2.0 - 1.0)
        .collect()
}

/// Best vocabulary row per latent with one whole-matrix product.
fn baseline(decoder: &[f32], vocab: &[f32], n: usize, nv: usize, d: usize) -> Vec<usize> {
    let dev = Device::Cpu;
    let unit = |t: Tensor| -> Tensor {
        let norm = t
            .sqr()
            .unwrap()
            .sum_keepdim(D::Minus1)
            .unwrap()
            .sqrt()
            .unwrap();
        t.broadcast_div(&norm).unwrap()
    };
    let w = unit(Tensor::from_slice(decoder, (n, d), &dev).unwrap());
    let v = Tensor::from_slice(vocab, (nv, d), &dev).unwrap();
    let mean = v.mean_keepdim(0).unwrap();
    let v = unit(v.broadcast_sub(&mean).unwrap());
    let sim = v.matmul(&w.t().unwrap()).unwrap();
    let best = sim.argmax(0).unwrap();
    best.to_vec1::<u32>()
        .unwrap()
        .into_iter()
        .map(|b| b as usize)
        .collect()
}

fn main() {
    let a = parse_args();
    let (n, d, nv) = (a.latents, a.dim, a.vocab);
    let decoder = random(n, d, 6);
    let vocab = random(nv, d, 7);
    let zero_mean = vec![0.0f32; d];
    let dict = Dictionary {
        decoder: MatRef::new(&decoder, n, d).unwrap(),
        b_pre: None,
        mean: &zero_mean,
        scale: 1.0,
    };
    let opts = NamingOptions {
        block_rows: a.block,
        ..NamingOptions::default()
    };
    let vocab_ref = MatRef::new(&vocab, nv, d).unwrap();
    eprintln!(
        "naming n = {n}, d = {d}, vocabulary {nv} rows, {} threads",
        rayon::current_num_threads()
    );

    // One untimed round of each warms caches and thread pools.
    let _ = name_latents(&dict, vocab_ref, &opts, None).unwrap();
    let t = Instant::now();
    let names = name_latents(&dict, vocab_ref, &opts, None).unwrap();
    let msae_s = t.elapsed().as_secs_f64();

    let _ = baseline(&decoder, &vocab, n, nv, d);
    let t = Instant::now();
    let best = baseline(&decoder, &vocab, n, nv, d);
    let base_s = t.elapsed().as_secs_f64();

    let agree = names
        .iter()
        .zip(&best)
        .filter(|(m, b)| m.best == **b)
        .count();
    let mib = |values: usize| values as f64 * 4.0 / (1 << 20) as f64;
    println!();
    println!("| method | vocabulary rows/s | seconds | similarity scores held (MiB) | GFLOP/s |");
    println!("|---|---:|---:|---:|---:|");
    let flop = 2.0 * (nv * n * d) as f64 / 1e9;
    println!(
        "| msae `name` (streamed, blocks of {}) | {:.0} | {msae_s:.2} | {:.0} | {:.1} |",
        a.block,
        nv as f64 / msae_s,
        mib(a.block.min(nv) * n),
        flop / msae_s
    );
    println!(
        "| baseline (one candle matmul + argmax) | {:.0} | {base_s:.2} | {:.0} | {:.1} |",
        nv as f64 / base_s,
        mib(nv * n),
        flop / base_s
    );
    println!();
    println!(
        "msae / baseline throughput: {:.2}×; same best entry for {agree} of {n} latents",
        base_s / msae_s
    );
    // Exact ties aside, both compute the same cosines; disagreement means a bug.
    assert!(
        agree as f64 >= 0.999 * n as f64,
        "only {agree} of {n} latents agree"
    );
}
