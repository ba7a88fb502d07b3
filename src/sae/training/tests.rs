//! End-to-end tests of training: planted dictionaries recovered, resumption bit-identical,
//! checkpoints and stops.

use super::records::*;
use super::source::*;
use super::step::*;
use super::train_loop::train;
use crate::sae::config::{Arch, TrainConfig};
use crate::sae::config::{MsaeWeighting, Schedule};
use crate::sae::model::{Sae, Standardization};
use candle_core::Device;
use rand::Rng;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, StandardNormal};

/// Unit directions `[f, d]` and `rows` samples, each a non-negative combination of 3–4 of
/// them.
pub(crate) fn planted(d: usize, f: usize, rows: usize, seed: u64) -> (Vec<Vec<f32>>, Vec<f32>) {
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
        let active = rng.random_range(3..=4);
        for _ in 0..active {
            let j = rng.random_range(0..f);
            let c: f32 = rng.random_range(0.5..1.5);
            for (o, v) in row.iter_mut().zip(&dirs[j]) {
                *o += c * v;
            }
        }
    }
    (dirs, data)
}

/// Mean over true directions of the best cosine with any decoder row.
fn recovery(dirs: &[Vec<f32>], model: &Sae) -> f64 {
    let w = model.decoder.to_vec2::<f32>().unwrap();
    let norms: Vec<f32> = w
        .iter()
        .map(|r| r.iter().map(|x| x * x).sum::<f32>().sqrt())
        .collect();
    dirs.iter()
        .map(|t| {
            w.iter()
                .zip(&norms)
                .map(|(r, n)| r.iter().zip(t).map(|(a, b)| a * b).sum::<f32>() / n)
                .fold(f32::MIN, f32::max) as f64
        })
        .sum::<f64>()
        / dirs.len() as f64
}

fn quick(arch: Arch) -> TrainConfig {
    TrainConfig {
        arch,
        n_latents: Some(128),
        k: Some(4),
        nesting_start: 4,
        lr: Some(5e-3),
        batch_size: 256,
        epochs: 25,
        schedule: Schedule::Constant,
        log_every: 10,
        check_dead: 50,
        ..Default::default()
    }
}

fn run(cfg: &TrainConfig, src: &MatrixSource) -> TrainOutcome {
    let std = Standardization::identity(src.dim());
    train(
        cfg,
        src,
        &std,
        &[],
        &Device::Cpu,
        &TrainOptions::default(),
        &mut |_| {},
    )
    .unwrap()
}

#[test]
fn planted_dictionary_is_recovered_by_topk_and_matryoshka() {
    // 32 nearly orthogonal directions in 32 dimensions, 3–4 active per sample; 64 latents.
    let (dirs, data) = planted(32, 32, 2048, 7);
    let src = MatrixSource::new(data, 32).unwrap();
    for (arch, epochs) in [(Arch::Topk, 4), (Arch::Msae, 8)] {
        let mut cfg = quick(arch);
        cfg.n_latents = Some(64);
        cfg.batch_size = 64;
        cfg.epochs = epochs;
        cfg.lr = Some(1e-2);
        let out = run(&cfg, &src);
        assert!(out.finished);
        let r = recovery(&dirs, &out.model);
        let first = out.log.steps.first().unwrap().loss;
        let last = out.log.steps.last().unwrap().loss;
        assert!(last < first * 0.3, "{arch:?}: loss {first} → {last}");
        assert!(r >= 0.9, "{arch:?}: mean max cosine {r}");
    }
}

#[test]
fn all_architectures_train_and_validate() {
    let (_, data) = planted(16, 32, 600, 3);
    let src = MatrixSource::new(data.clone(), 16).unwrap();
    let val = MatrixSource::new(data[..16 * 100].to_vec(), 16).unwrap();
    for arch in [
        Arch::Relu,
        Arch::Topk,
        Arch::Batchtopk,
        Arch::Jumprelu,
        Arch::Msae,
    ] {
        let mut cfg = quick(arch);
        cfg.n_latents = Some(32);
        cfg.epochs = 3;
        cfg.batch_size = 128;
        cfg.msae_weighting = MsaeWeighting::Rw;
        let std = Standardization {
            mean: vec![0.01; 16],
            scale: 1.5,
        };
        let sets = [ValidationSet {
            name: "val".into(),
            source: &val,
            standardization: std.clone(),
        }];
        let mut calls = 0;
        let out = train(
            &cfg,
            &src,
            &std,
            &sets,
            &Device::Cpu,
            &TrainOptions::default(),
            &mut |p| {
                calls += 1;
                assert!(p.step <= p.total_steps);
            },
        )
        .unwrap();
        assert_eq!(calls, 15);
        assert_eq!(out.log.epochs.len(), 3);
        let v = &out.log.epochs[2].validation[0];
        assert_eq!(v.batches, 1);
        assert!(
            v.loss_dense.is_finite() && v.rec_sparse.is_finite(),
            "{arch:?}"
        );
        if arch == Arch::Batchtopk {
            assert!(out.model.batchtopk_threshold.unwrap() > 0.0);
        }
        if arch == Arch::Topk {
            assert!(out.log.steps.iter().all(|s| s.active <= 4.0));
        }
    }
}

fn weight_bytes(m: &Sae) -> Vec<Vec<f32>> {
    m.params()
        .iter()
        .map(|t| t.flatten_all().unwrap().to_vec1::<f32>().unwrap())
        .collect()
}

#[test]
fn resume_is_bit_identical() {
    let (_, data) = planted(8, 16, 300, 5);
    let src = MatrixSource::new(data.clone(), 8).unwrap();
    let val = MatrixSource::new(data[..8 * 50].to_vec(), 8).unwrap();
    let std = Standardization::identity(8);
    for arch in [Arch::Msae, Arch::Batchtopk, Arch::Jumprelu] {
        let mut cfg = quick(arch);
        cfg.n_latents = Some(16);
        cfg.batch_size = 64;
        cfg.epochs = 4;
        cfg.log_every = 3;
        cfg.check_dead = 4;
        cfg.schedule = Schedule::LinearDecay;
        let sets = [ValidationSet {
            name: "v".into(),
            source: &val,
            standardization: std.clone(),
        }];
        let full = train(
            &cfg,
            &src,
            &std,
            &sets,
            &Device::Cpu,
            &TrainOptions::default(),
            &mut |_| {},
        )
        .unwrap();
        assert_eq!(full.steps, 20);
        // Crash mid-epoch (step 7) and at an epoch end before validation (step 10).
        for stop in [7u64, 10] {
            let dir = tempfile::tempdir().unwrap();
            let mut opts = TrainOptions {
                checkpoint_dir: Some(dir.path().to_path_buf()),
                checkpoint_every_steps: Some(3),
                resume: true,
                stop_after_steps: Some(stop),
                ..Default::default()
            };
            let part = train(&cfg, &src, &std, &sets, &Device::Cpu, &opts, &mut |_| {}).unwrap();
            assert!(!part.finished);
            assert_eq!(part.steps, stop);
            // A process killed after the stop checkpoint, before its caller used the model,
            // asks for the same stop again: it gets the same model and no extra step.
            let same = train(&cfg, &src, &std, &sets, &Device::Cpu, &opts, &mut |p| {
                panic!("step {} trained past the stop {stop}", p.step)
            })
            .unwrap();
            assert_eq!(same.steps, stop);
            assert_eq!(weight_bytes(&same.model), weight_bytes(&part.model));
            assert_eq!(same.model.stats, part.model.stats);
            opts.stop_after_steps = None;
            let mut first_step = None;
            let rest = train(&cfg, &src, &std, &sets, &Device::Cpu, &opts, &mut |p| {
                first_step.get_or_insert(p.step);
            })
            .unwrap();
            assert!(rest.finished);
            assert_eq!(first_step, Some(stop + 1));
            assert_eq!(
                weight_bytes(&rest.model),
                weight_bytes(&full.model),
                "{arch:?} {stop}"
            );
            assert_eq!(rest.log, full.log);
            assert_eq!(rest.model.stats, full.model.stats);
            assert_eq!(
                rest.model.batchtopk_threshold,
                full.model.batchtopk_threshold
            );
            // A finished checkpoint resumes to the same model without training.
            let again = train(&cfg, &src, &std, &sets, &Device::Cpu, &opts, &mut |_| {
                panic!("no step expected")
            })
            .unwrap();
            assert_eq!(weight_bytes(&again.model), weight_bytes(&full.model));
        }
    }
}

#[test]
fn resume_rejects_other_config_and_bad_inputs() {
    let (_, data) = planted(8, 16, 100, 5);
    let src = MatrixSource::new(data, 8).unwrap();
    let std = Standardization::identity(8);
    let mut cfg = quick(Arch::Topk);
    cfg.n_latents = Some(16);
    cfg.epochs = 1;
    let dir = tempfile::tempdir().unwrap();
    let opts = TrainOptions {
        checkpoint_dir: Some(dir.path().to_path_buf()),
        resume: true,
        ..Default::default()
    };
    train(&cfg, &src, &std, &[], &Device::Cpu, &opts, &mut |_| {}).unwrap();
    cfg.k = Some(5);
    assert!(train(&cfg, &src, &std, &[], &Device::Cpu, &opts, &mut |_| {}).is_err());
    let short = Standardization::identity(3);
    assert!(train(
        &cfg,
        &src,
        &short,
        &[],
        &Device::Cpu,
        &TrainOptions::default(),
        &mut |_| {}
    )
    .is_err());
    assert!(MatrixSource::new(vec![1.0; 7], 2).is_err());
    let mut buf = vec![0.0; 8];
    assert!(src.gather(&[1000], &mut buf).is_err());
}

#[test]
fn permutations_are_seeded_per_epoch() {
    let a = epoch_permutation(42, 0, 100);
    assert_eq!(a, epoch_permutation(42, 0, 100));
    assert_ne!(a, epoch_permutation(42, 1, 100));
    let mut s = a.clone();
    s.sort();
    assert_eq!(s, (0..100).collect::<Vec<_>>());
}

#[test]
fn a_run_that_ends_between_records_returns_its_unlogged_means() {
    let (_, data) = planted(8, 16, 300, 5);
    let src = MatrixSource::new(data, 8).unwrap();
    let mut cfg = quick(Arch::Topk);
    cfg.n_latents = Some(16);
    cfg.batch_size = 64;
    cfg.epochs = 2;
    // 10 steps: one record at step 4 and 8 with log_every 4; the last two steps are the tail.
    cfg.log_every = 4;
    let out = run(&cfg, &src);
    assert_eq!(out.log.steps.len(), 2);
    let tail = out.tail.expect("two steps after the last record");
    // The same training logging every 2 steps records that tail as its last interval.
    cfg.log_every = 2;
    let every2 = run(&cfg, &src);
    assert!(every2.tail.is_none());
    assert_eq!(Some(&tail), every2.log.steps.last());
    assert_eq!(weight_bytes(&out.model), weight_bytes(&every2.model));
}

/// The weights and the log of an outcome, as bytes.
fn outcome_bytes(o: &TrainOutcome) -> (Vec<Vec<u32>>, String) {
    let w = weight_bytes(&o.model)
        .into_iter()
        .map(|t| t.iter().map(|v| v.to_bits()).collect())
        .collect();
    (w, serde_json::to_string(&o.log).unwrap())
}

#[test]
fn the_auxiliary_loss_off_or_idle_trains_as_without_it() {
    let (_, data) = planted(16, 32, 600, 3);
    let src = MatrixSource::new(data, 16).unwrap();
    for arch in [Arch::Topk, Arch::Batchtopk, Arch::Msae] {
        // 128 latents on 200 rows a step, starting below zero: some latents miss whole steps.
        let mut cfg = quick(arch);
        cfg.epochs = 5;
        cfg.batch_size = 200;
        cfg.latent_bias_init = -0.5;
        let base = run(&cfg, &src);
        assert_eq!(base.steps, 15);
        // Explicitly off: the same bytes.
        let mut zero = cfg.clone();
        zero.aux_k_coef = Some(0.0);
        assert!(
            outcome_bytes(&run(&zero, &src)) == outcome_bytes(&base),
            "{arch:?}"
        );
        // On, but no latent can go 16 steps without firing in a 15-step run: the same weights,
        // and the log says the loss added nothing.
        let mut idle = cfg.clone();
        idle.aux_k_coef = Some(1.0);
        idle.aux_dead_steps = Some(15);
        let i = run(&idle, &src);
        assert!(outcome_bytes(&i).0 == outcome_bytes(&base).0, "{arch:?}");
        assert!(i.log.steps.iter().all(|r| r.aux == Some(0.0)), "{arch:?}");
        // Once latents are dead it trains them: other weights.
        idle.aux_dead_steps = Some(1);
        let on = run(&idle, &src);
        assert!(
            on.log.steps.iter().any(|r| r.aux.unwrap() > 0.0),
            "{arch:?}"
        );
        assert!(outcome_bytes(&on).0 != outcome_bytes(&base).0, "{arch:?}");
    }
}

/// Planted data whose mean lies far from the origin while the pre-bias starts at zero: most
/// latents point away from the data, never make the top k and stay dead under plain training.
/// The auxiliary loss brings most of them back within the same 128 steps, with SAELens's
/// values and with the TopK paper's ReLU (measured here: TopK 101 dead of 128 → 10 raw and 14
/// ReLU, BatchTopK 116 → 0 and 28, Matryoshka 62 → 0).
#[test]
fn the_auxiliary_loss_revives_dead_latents() {
    use crate::sae::config::AuxValues;
    let (_, mut data) = planted(32, 128, 2048, 9);
    for row in data.chunks_mut(32) {
        for (j, v) in row.iter_mut().enumerate() {
            *v += if j % 2 == 0 { 0.5 } else { -0.5 };
        }
    }
    let src = MatrixSource::new(data, 32).unwrap();
    for (arch, lr, values) in [
        (Arch::Topk, 2e-2, AuxValues::Raw),
        (Arch::Topk, 2e-2, AuxValues::Activation),
        (Arch::Batchtopk, 2e-2, AuxValues::Raw),
        (Arch::Batchtopk, 2e-2, AuxValues::Activation),
        (Arch::Msae, 1e-2, AuxValues::Raw),
    ] {
        let mut cfg = quick(arch);
        cfg.epochs = 16;
        cfg.check_dead = 32;
        cfg.lr = Some(lr);
        let plain = run(&cfg, &src);
        let mut aux = cfg.clone();
        aux.aux_k_coef = Some(1.0);
        aux.aux_dead_steps = Some(if values == AuxValues::Raw { 16 } else { 4 });
        aux.aux_k_values = Some(values);
        let with = run(&aux, &src);
        let dead = |o: &TrainOutcome| o.log.dead.last().unwrap().dead;
        println!(
            "{arch:?} {values:?}: {} dead plain, {} with aux-k",
            dead(&plain),
            dead(&with)
        );
        assert!(
            dead(&plain) >= 60,
            "{arch:?}: plain training leaves {} dead",
            dead(&plain)
        );
        assert!(
            dead(&with) * 2 <= dead(&plain),
            "{arch:?} {values:?}: {} dead with aux-k, {} without",
            dead(&with),
            dead(&plain)
        );
    }
}
