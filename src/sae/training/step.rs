//! One training step (docs/reference.md §6.4): forward, loss, hand-written backward, decoder
//! renormalisation, gradient projection, clipping and Adam; and the pieces the loop builds on
//! it — the epoch's row permutation, batch loading and validation. Epochs are shuffled with a
//! ChaCha8 stream derived from (seed, epoch), so a run is fully determined by its configuration
//! and data, which is what makes bit-identical resumption possible.

use candle_core::{Device, Tensor};
use rand::seq::SliceRandom;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

use crate::sae::config::Arch;
use crate::sae::model::loss;
use crate::sae::model::{Sae, Standardization};
use crate::sae::optim::{clip_grad_norm, Adam};
use crate::sae::training::records::{ValidationRecord, ValidationSet};
use crate::sae::training::source::RowSource;
use crate::sae::{Result, SaeError};

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
    /// The auxiliary dead-latent loss as added to `loss` (0 when off or nothing is dead).
    pub(super) aux: f64,
}

/// One optimisation step in the exact reference order (docs/reference.md §6.4); `dead` lists
/// the latents the auxiliary dead-latent loss works on (empty: none, or the loss is off).
pub(super) fn train_step(
    model: &mut Sae,
    adam: &mut Adam,
    x: &Tensor,
    nmse_ref: Option<&Tensor>,
    lr: f64,
    dense_backward: bool,
    dead: &[u32],
) -> Result<StepOut> {
    if !dense_backward && crate::sae::kernels::sparse::applicable(model) {
        let (parts, mut grads, extra, aux) =
            crate::sae::kernels::sparse::loss_and_grads(model, x, nmse_ref, dead)?;
        for (c, e) in model.stats.counts.iter_mut().zip(&extra.counts) {
            *c += *e as u64;
        }
        model.stats.num_updates += x.dim(0)? as u64;
        if model.config.arch == Arch::Batchtopk {
            model.record_batchtopk_min(extra.min_positive);
        }
        // The fast paths' gradients own their storage: the update may take them in place.
        if !crate::sae::kernels::host_update::apply(model, adam, &mut grads, lr)? {
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
            aux: aux.unwrap_or(0.0),
        });
    }
    let fwd = model.forward_train(x)?;
    let (parts, mut grads, aux) = model.loss_and_grads_aux(&fwd, nmse_ref, dead)?;
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
        aux: match aux {
            Some(a) => a.to_scalar::<f32>()? as f64,
            None => 0.0,
        },
    })
}
