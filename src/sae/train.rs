//! The training loop (§6.4): per step forward, loss, hand-written backward, decoder
//! renormalisation, gradient projection, clipping and Adam, over any [`RowSource`]. Epochs are
//! shuffled with a ChaCha8 stream derived from (seed, epoch), so a run is fully determined by
//! its configuration and data, which is what makes bit-identical resumption possible.

use std::path::PathBuf;
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, OnceLock};

use candle_core::{Device, Tensor};
use rand::seq::SliceRandom;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use super::config::{Arch, TrainConfig};
use super::loss;
use super::model::Sae;
use super::optim::{clip_grad_norm, Adam};
use super::{Result, SaeError};

pub use super::model::Standardization;

/// A matrix of rows that can be gathered in any order (e.g. a memory-mapped embedding file).
pub trait RowSource: Sync {
    /// Number of rows.
    fn n_rows(&self) -> usize;
    /// Row width.
    fn dim(&self) -> usize;
    /// Copy the given rows, in the given order, into `out` (`rows.len() · dim` values).
    fn gather(&self, rows: &[usize], out: &mut [f32]) -> Result<()>;
}

/// An in-memory row-major matrix.
#[derive(Debug, Clone)]
pub struct MatrixSource {
    data: Vec<f32>,
    dim: usize,
}

impl MatrixSource {
    /// Wrap `data` (row-major, `dim` columns).
    pub fn new(data: Vec<f32>, dim: usize) -> Result<Self> {
        if dim == 0 || !data.len().is_multiple_of(dim) {
            return Err(SaeError::Data(format!(
                "{} values do not form rows of width {dim}",
                data.len()
            )));
        }
        Ok(MatrixSource { data, dim })
    }

    /// The underlying values.
    pub fn data(&self) -> &[f32] {
        &self.data
    }
}

impl RowSource for MatrixSource {
    fn n_rows(&self) -> usize {
        self.data.len() / self.dim
    }

    fn dim(&self) -> usize {
        self.dim
    }

    fn gather(&self, rows: &[usize], out: &mut [f32]) -> Result<()> {
        let d = self.dim;
        if out.len() != rows.len() * d {
            return Err(SaeError::Data("gather buffer has the wrong size".into()));
        }
        for (o, &r) in out.chunks_mut(d).zip(rows) {
            let src = self
                .data
                .get(r * d..(r + 1) * d)
                .ok_or_else(|| SaeError::Data(format!("row {r} out of range")))?;
            o.copy_from_slice(src);
        }
        Ok(())
    }
}

/// A validation matrix with its own standardisation.
pub struct ValidationSet<'a> {
    pub name: String,
    pub source: &'a dyn RowSource,
    pub standardization: Standardization,
}

/// Checkpointing and early-stop options.
#[derive(Debug, Clone, Default)]
pub struct TrainOptions {
    /// Directory for `checkpoint.safetensors`; no checkpoints when None.
    pub checkpoint_dir: Option<PathBuf>,
    /// Checkpoint every this many steps.
    pub checkpoint_every_steps: Option<u64>,
    /// Checkpoint when this many seconds have passed since the last one.
    pub checkpoint_every_secs: Option<u64>,
    /// Continue from the checkpoint in `checkpoint_dir` when one exists.
    pub resume: bool,
    /// Checkpoint and return (unfinished) once this many steps are done in total.
    pub stop_after_steps: Option<u64>,
    /// Use the straightforward dense backward pass even where the sparse CPU fast path
    /// applies (for comparisons; results agree up to floating-point summation order).
    pub dense_backward: bool,
}

/// Progress report passed to the caller's callback after every step.
#[derive(Debug, Clone, Serialize)]
pub struct Progress {
    pub step: u64,
    pub total_steps: u64,
    pub epoch: usize,
    pub loss: f32,
}

/// Mean losses over one logging interval.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct StepRecord {
    pub step: u64,
    pub epoch: usize,
    pub lr: f64,
    pub loss: f64,
    pub rec: f64,
    pub sparsity: f64,
    /// Mean number of active latents per sample in the (first-level) sparse code.
    pub active: f64,
}

/// Dead-latent count at the end of a `check_dead` window.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct DeadRecord {
    pub step: u64,
    pub dead: usize,
}

/// Validation results (unweighted means over batches, as in the reference).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ValidationRecord {
    pub name: String,
    /// Reference validation loss: on the dense outputs.
    pub loss_dense: f64,
    pub rec_sparse: f64,
    pub rec_dense: f64,
    pub active_sparse: f64,
    pub active_dense: f64,
    pub batches: usize,
}

/// End-of-epoch summary.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct EpochRecord {
    pub epoch: usize,
    pub lr: f64,
    pub last_loss: f64,
    pub last_dead: Option<usize>,
    pub validation: Vec<ValidationRecord>,
}

/// Everything logged during training.
#[derive(Debug, Clone, Serialize, Deserialize, Default, PartialEq)]
pub struct TrainLog {
    pub steps: Vec<StepRecord>,
    pub dead: Vec<DeadRecord>,
    pub epochs: Vec<EpochRecord>,
}

/// Result of [`train`].
#[derive(Debug)]
pub struct TrainOutcome {
    pub model: Sae,
    pub log: TrainLog,
    /// False when training stopped early (`stop_after_steps`).
    pub finished: bool,
    pub steps: u64,
}

/// Position of the loop and the running sums of the current logging interval.
#[derive(Debug, Clone, Serialize, Deserialize, Default, PartialEq)]
pub(crate) struct LoopState {
    pub step: u64,
    pub epoch: usize,
    /// Next batch index within the epoch's permutation.
    pub batch: usize,
    pub acc_loss: f64,
    pub acc_rec: f64,
    pub acc_sparsity: f64,
    pub acc_active: f64,
    pub acc_count: u64,
    pub last_loss: f64,
}

/// Raised (by a signal handler: a scheduler's warning before a time limit or pre-emption) to
/// make every training of this process write a checkpoint after its current step and return
/// [`SaeError::Stopped`]; resuming from that checkpoint continues the run exactly.
pub fn stop_requested() -> &'static Arc<AtomicBool> {
    static FLAG: OnceLock<Arc<AtomicBool>> = OnceLock::new();
    FLAG.get_or_init(|| Arc::new(AtomicBool::new(false)))
}

/// Row permutation of epoch `epoch`.
pub fn epoch_permutation(seed: u64, epoch: usize, n: usize) -> Vec<usize> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    rng.set_stream(epoch as u64 + 1);
    let mut p: Vec<usize> = (0..n).collect();
    p.shuffle(&mut rng);
    p
}

pub(super) fn load_batch(
    source: &dyn RowSource,
    rows: &[usize],
    buf: &mut Vec<f32>,
    std: &Standardization,
    device: &Device,
) -> Result<Tensor> {
    let d = source.dim();
    buf.resize(rows.len() * d, 0.0);
    source.gather(rows, buf)?;
    let x = Tensor::from_slice(buf, (rows.len(), d), device)?;
    std.apply(&x)
}

/// Mean of the standardised training rows (the nmse reference vector when data are not
/// mean-centred), accumulated in f64 over chunks.
pub(super) fn standardised_mean(source: &dyn RowSource, std: &Standardization) -> Result<Vec<f32>> {
    let (n, d) = (source.n_rows(), source.dim());
    let mut acc = vec![0f64; d];
    let mut buf = Vec::new();
    let chunk = 8192;
    let mut start = 0;
    while start < n {
        let rows: Vec<usize> = (start..(start + chunk).min(n)).collect();
        buf.resize(rows.len() * d, 0.0);
        source.gather(&rows, &mut buf)?;
        for row in buf.chunks(d) {
            for ((a, &v), &m) in acc.iter_mut().zip(row).zip(&std.mean) {
                *a += ((v - m) * std.scale) as f64;
            }
        }
        start += chunk;
    }
    Ok(acc.iter().map(|a| (a / n.max(1) as f64) as f32).collect())
}

/// Run validation on one set (does not change the weights; may feed the dead-latent counters).
pub fn validate(model: &mut Sae, set: &ValidationSet<'_>) -> Result<ValidationRecord> {
    let cfg = model.config.clone();
    let (n, d) = (set.source.n_rows(), set.source.dim());
    if d != model.d {
        return Err(SaeError::Data(format!(
            "validation set {} has width {d}, model expects {}",
            set.name, model.d
        )));
    }
    let device = model.device().clone();
    let mut buf = Vec::new();
    let mut sums = [0f64; 5];
    let mut batches = 0usize;
    let mut start = 0;
    while start < n {
        let rows: Vec<usize> = (start..(start + cfg.batch_size).min(n)).collect();
        start += cfg.batch_size;
        let x = load_batch(set.source, &rows, &mut buf, &set.standardization, &device)?;
        let out = model.forward_eval(&x)?;
        let rec_dense = loss::reconstruction(cfg.loss, &out.dense_recon, &x, None, false)?.value;
        let rec_sparse = loss::reconstruction(cfg.loss, &out.sparse_recon, &x, None, false)?.value;
        let lambda = cfg.sparsity_weight();
        let mut loss_dense = rec_dense.to_scalar::<f32>()? as f64;
        if cfg.arch == Arch::Relu && lambda != 0.0 {
            let sp = loss::l1(&out.dense_code, &x, false)?
                .value
                .to_scalar::<f32>()? as f64;
            loss_dense += lambda * sp;
        }
        sums[0] += loss_dense;
        sums[1] += rec_sparse.to_scalar::<f32>()? as f64;
        sums[2] += rec_dense.to_scalar::<f32>()? as f64;
        sums[3] += loss::mean_active(&out.sparse_code)?.to_scalar::<f32>()? as f64;
        sums[4] += loss::mean_active(&out.dense_code)?.to_scalar::<f32>()? as f64;
        batches += 1;
        if cfg.dead_count_validation {
            let z = if cfg.arch == Arch::Msae {
                &out.dense_code
            } else {
                &out.sparse_code
            };
            model.update_stats(z)?;
        }
    }
    let b = batches.max(1) as f64;
    Ok(ValidationRecord {
        name: set.name.clone(),
        loss_dense: sums[0] / b,
        rec_sparse: sums[1] / b,
        rec_dense: sums[2] / b,
        active_sparse: sums[3] / b,
        active_dense: sums[4] / b,
        batches,
    })
}

/// Scalars of one training step.
pub(super) struct StepOut {
    pub(super) loss: f64,
    pub(super) rec: f64,
    pub(super) sparsity: f64,
    pub(super) active: f64,
}

/// One optimisation step in the exact reference order (§6.4).
pub(super) fn train_step(
    model: &mut Sae,
    adam: &mut Adam,
    x: &Tensor,
    nmse_ref: Option<&Tensor>,
    lr: f64,
    dense_backward: bool,
) -> Result<StepOut> {
    if !dense_backward && super::sparse::applicable(model) {
        let (parts, mut grads, extra) = super::sparse::loss_and_grads(model, x, nmse_ref)?;
        for (c, e) in model.stats.counts.iter_mut().zip(&extra.counts) {
            *c += *e as u64;
        }
        model.stats.num_updates += x.dim(0)? as u64;
        if model.config.arch == Arch::Batchtopk {
            model.record_batchtopk_min(extra.min_positive);
        }
        // The fast paths' gradients own their storage: the update may take them in place.
        if !super::host_update::apply(model, adam, &mut grads, lr)? {
            model.scale_to_unit_norm()?;
            grads.0[3] = model.project_decoder_grad(&grads.0[3])?;
            clip_grad_norm(&mut grads.0, model.config.clip_grad)?;
            adam.step(&mut model.params_mut(), &grads.0, lr)?;
        }
        return Ok(StepOut {
            loss: parts.total.to_scalar::<f32>()? as f64,
            rec: parts.rec.to_scalar::<f32>()? as f64,
            sparsity: parts.sparsity.to_scalar::<f32>()? as f64,
            active: extra.active,
        });
    }
    let fwd = model.forward_train(x)?;
    let (parts, mut grads) = model.loss_and_grads(&fwd, nmse_ref)?;
    let last = fwd
        .levels
        .last()
        .ok_or_else(|| SaeError::Config("model produced no level".into()))?;
    model.update_stats(&last.z)?;
    if model.config.arch == Arch::Batchtopk {
        model.update_batchtopk_threshold(&fwd.levels[0].z)?;
    }
    let active = loss::mean_active(&fwd.levels[0].z)?;
    drop(fwd);
    model.scale_to_unit_norm()?;
    grads.0[3] = model.project_decoder_grad(&grads.0[3])?;
    clip_grad_norm(&mut grads.0, model.config.clip_grad)?;
    adam.step(&mut model.params_mut(), &grads.0, lr)?;
    Ok(StepOut {
        loss: parts.total.to_scalar::<f32>()? as f64,
        rec: parts.rec.to_scalar::<f32>()? as f64,
        sparsity: parts.sparsity.to_scalar::<f32>()? as f64,
        active: active.to_scalar::<f32>()? as f64,
    })
}

/// Train an SAE on `source` (standardised with `standardization`), validating after every
/// epoch on each of `validation`. See [`TrainOptions`] for checkpointing and resumption.
pub fn train(
    config: &TrainConfig,
    source: &dyn RowSource,
    standardization: &Standardization,
    validation: &[ValidationSet<'_>],
    device: &Device,
    options: &TrainOptions,
    progress: &mut dyn FnMut(&Progress),
) -> Result<TrainOutcome> {
    // One model is a fused training of one: the same loop serves both, so training a model
    // alone and within a group cannot drift apart.
    let member = super::fused::Member {
        config,
        options,
        validation,
        progress,
    };
    let mut out = super::fused::train_fused(source, standardization, device, vec![member])?;
    Ok(out.remove(0))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sae::config::{MsaeWeighting, Schedule};
    use rand::Rng;
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
                let part =
                    train(&cfg, &src, &std, &sets, &Device::Cpu, &opts, &mut |_| {}).unwrap();
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
}
