//! JumpReLU training on planted sparse data: the code becomes sparse within a short run, and a
//! threshold above every pre-activation is reported.

use super::records::TrainOptions;
use super::source::MatrixSource;
use super::train_loop::train;
use crate::sae::config::{Arch, JumpreluParam, Schedule, TrainConfig};
use crate::sae::model::Standardization;
use candle_core::Device;
use rand::Rng;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, StandardNormal};

/// `rows` rows of width `d`, each a sum of about `active` of `f` random unit directions with
/// coefficients in [0.5, 1.5] (each direction present with probability active/f), and the
/// standardisation that centres them and scales them to mean squared norm d (`scale_rule =
/// "corrected"`), as the `train` step would.
fn planted(
    d: usize,
    f: usize,
    active: f64,
    rows: usize,
    seed: u64,
) -> (MatrixSource, Standardization) {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let dirs: Vec<Vec<f32>> = (0..f)
        .map(|_| {
            let v: Vec<f32> = (0..d).map(|_| StandardNormal.sample(&mut rng)).collect();
            let n = v.iter().map(|x| x * x).sum::<f32>().sqrt();
            v.iter().map(|x| x / n).collect()
        })
        .collect();
    let mut data = vec![0f32; rows * d];
    for row in data.chunks_mut(d) {
        for dir in &dirs {
            if rng.random_bool(active / f as f64) {
                let c: f32 = rng.random_range(0.5..1.5);
                row.iter_mut().zip(dir).for_each(|(o, v)| *o += c * v);
            }
        }
    }
    let mut mean = vec![0f64; d];
    for row in data.chunks(d) {
        mean.iter_mut()
            .zip(row)
            .for_each(|(m, &v)| *m += v as f64 / rows as f64);
    }
    let sq: f64 = data
        .chunks(d)
        .map(|r| {
            r.iter()
                .zip(&mean)
                .map(|(&v, m)| (v as f64 - m).powi(2))
                .sum::<f64>()
        })
        .sum::<f64>()
        / rows as f64;
    let std = Standardization {
        mean: mean.iter().map(|&m| m as f32).collect(),
        scale: ((d as f64).sqrt() / sq.sqrt()) as f32,
    };
    (MatrixSource::new(data, d).unwrap(), std)
}

/// The training configuration of the tests: 128 latents on 32 dimensions, batches of 256,
/// constant lr 5·10⁻³, λ = 0.01, θ₀ = ε = 0.01.
fn config(param: JumpreluParam, epochs: usize) -> TrainConfig {
    TrainConfig {
        arch: Arch::Jumprelu,
        n_latents: Some(128),
        jumprelu_param: param,
        jumprelu_theta0: 0.01,
        jumprelu_bandwidth: 0.01,
        sparsity_weight: Some(0.01),
        lr: Some(5e-3),
        batch_size: 256,
        epochs,
        schedule: Schedule::Constant,
        log_every: 1,
        check_dead: 320,
        ..Default::default()
    }
}

/// Mean of the per-step active counts over the steps `range` (1-based, inclusive).
fn mean_active(log: &super::records::TrainLog, range: std::ops::RangeInclusive<u64>) -> f64 {
    let steps: Vec<f64> = log
        .steps
        .iter()
        .filter(|s| range.contains(&s.step))
        .map(|s| s.active)
        .collect();
    steps.iter().sum::<f64>() / steps.len() as f64
}

#[test]
fn a_directly_trained_threshold_makes_the_code_sparse_in_a_short_run() {
    // 8,192 rows of 32 dimensions, each a sum of about 5 of 64 planted directions. 640 steps
    // with thresholds trained directly: the code starts with about half of its 128 latents
    // firing (54.4 per row on the first ten steps) and ends at 11.7 on the last ten, with
    // nmse 0.082 and no latent dead. Trained as log θ with the same settings, θ grows by a
    // factor of about e^(lr) per step at most and stays far behind the pre-activations it has
    // to cut (62.1 → 57.0).
    let (src, std) = planted(32, 64, 5.0, 8192, 1);
    let run = |param| {
        let cfg = config(param, 20);
        train(
            &cfg,
            &src,
            &std,
            &[],
            &Device::Cpu,
            &TrainOptions::default(),
            &mut |_| {},
        )
        .unwrap()
    };
    let direct = run(JumpreluParam::Direct);
    assert_eq!(direct.steps, 640);
    let (first, last) = (
        mean_active(&direct.log, 1..=10),
        mean_active(&direct.log, 631..=640),
    );
    let rec = direct.log.steps.last().unwrap().rec;
    let dead = direct.log.dead.last().unwrap().dead;
    eprintln!("direct: active {first:.1} → {last:.1}, nmse {rec:.3}, dead {dead}");
    assert!(first > 40.0, "{first}");
    assert!(last < 0.3 * first && last < 16.0, "active {first} → {last}");
    assert!(rec < 0.15, "nmse {rec}");
    assert!(dead <= 4, "{dead} dead latents");
    assert!(direct.log.warnings.is_empty(), "{:?}", direct.log.warnings);
    let log = run(JumpreluParam::Log);
    let log_last = mean_active(&log.log, 631..=640);
    eprintln!(
        "log: active {:.1} → {log_last:.1}",
        mean_active(&log.log, 1..=10)
    );
    assert!(log_last > 2.0 * last, "log θ: {log_last}, θ: {last}");
}

#[test]
fn a_threshold_above_every_pre_activation_is_reported() {
    // θ₀ = 1 against pre-activations that spread about 0.01 in a fresh model: no latent fires
    // on the first batch, none ever receives a gradient, and the log says so at the first
    // and at the last step.
    let (src, std) = planted(32, 64, 5.0, 1024, 2);
    let cfg = TrainConfig {
        jumprelu_theta0: 1.0,
        ..config(JumpreluParam::Direct, 2)
    };
    let out = train(
        &cfg,
        &src,
        &std,
        &[],
        &Device::Cpu,
        &TrainOptions::default(),
        &mut |_| {},
    )
    .unwrap();
    assert!(out.log.steps.iter().all(|s| s.active == 0.0));
    let steps: Vec<u64> = out.log.warnings.iter().map(|w| w.step).collect();
    assert_eq!(steps, vec![1, 8], "{:?}", out.log.warnings);
    assert!(out.log.warnings[0].message.contains("jumprelu_theta0 = 1"));
}
