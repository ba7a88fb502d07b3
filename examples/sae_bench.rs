//! Throughput of SAE training steps on synthetic data.
//!
//! `cargo run --release --example sae_bench -- <arch> [steps] [d] [ef] [batch] [dense]`
//!
//! With a sixth argument `dense` the straightforward dense backward pass is used instead of the
//! sparse CPU fast path.

use std::time::Instant;

use candle_core::Device;
use msae::sae::training::{train, MatrixSource, TrainOptions};
use msae::sae::Standardization;
use msae::sae::{Arch, TrainConfig};
use rand::{Rng, SeedableRng};

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let arch: Arch = serde_json::from_str(&format!(
        "\"{}\"",
        args.get(1).map(String::as_str).unwrap_or("topk")
    ))?;
    let num = |i: usize, def: usize| -> anyhow::Result<usize> {
        Ok(match args.get(i) {
            Some(s) => s.parse()?,
            None => def,
        })
    };
    let steps = num(2, 5)?;
    let d = num(3, 768)?;
    let ef = num(4, 8)?;
    let batch = num(5, 4096)?;
    let rows = steps * batch;
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(1);
    let data: Vec<f32> = (0..rows * d)
        .map(|_| rng.random_range(-1.0f32..1.0))
        .collect();
    let src = MatrixSource::new(data, d)?;
    let cfg = TrainConfig {
        arch,
        expansion_factor: ef as f64,
        batch_size: batch,
        epochs: 1,
        ..Default::default()
    };
    let mut times = Vec::new();
    let mut last = Instant::now();
    train(
        &cfg,
        &src,
        &Standardization::identity(d),
        &[],
        &Device::Cpu,
        &TrainOptions {
            dense_backward: args.get(6).is_some_and(|a| a == "dense"),
            ..Default::default()
        },
        &mut |p| {
            let now = Instant::now();
            times.push(now.duration_since(last).as_secs_f64());
            last = now;
            eprintln!(
                "step {} loss {:.4} {:.3}s",
                p.step,
                p.loss,
                times.last().unwrap_or(&0.0)
            );
        },
    )?;
    let tail = &times[1.min(times.len())..];
    let mean = tail.iter().sum::<f64>() / tail.len().max(1) as f64;
    println!(
        "{arch:?} d={d} n={} batch={batch}: {mean:.3} s/step ({:.0} rows/s, {} threads)",
        d * ef,
        batch as f64 / mean,
        rayon::current_num_threads()
    );
    Ok(())
}
