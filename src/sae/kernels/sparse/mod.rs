//! CPU fast path of the training step for every architecture: TopK, BatchTopK and Matryoshka
//! here, ReLU and JumpReLU in [`thresholded`] (dense or sparse products by the code's density).
//!
//! With a top-k code only k of n latents are non-zero per row (k·B per batch for BatchTopK),
//! so everything after the encoder matrix product is a sparse-dense product: the
//! reconstruction touches k decoder rows, the gradient of the code is needed only at the kept
//! entries, and the decoder/encoder gradients are sums over the kept entries of each latent.
//! For Matryoshka all levels share one ranking of the positive pre-activations, so each row's
//! entries are split into nested bands and the L reconstructions are built incrementally
//! (level l+1 = level l + the next band); the code gradient of an entry in band l is
//! `C_l · W_dec[j]` with `C_l = Σ_{i ≥ l} w_i ∂ℓ_i/∂X̂_i`.
//!
//! BatchTopK selects the k·B largest entries of the whole batch exactly (same order and ties
//! as the dense path) and then shares the TopK code path.
//!
//! The three sparse products — reconstruction (band sums Z_l·W_dec), code gradient (C_l·W_decᵀ
//! at the kept entries) and decoder gradient (Σ_l Z_lᵀ·C_l over latents) — are cache-blocked
//! sparse-dense products ([`blocked::blocked_spmm`], [`blocked::blocked_sddmm`]) over the
//! gathered matrix laid out chunk-major, with register-resident inner loops
//! ([`gather`](super::gather)). A Matryoshka code keeps about half of the latents in its last
//! level, and every band still goes through these products: at a sixth of the latents per band,
//! the blocked products beat dense matrix products that would multiply all the zeros of a band.
//!
//! The encoder product is dense (gemm, the routine of candle's CPU matmul), and so is the
//! encoder gradient once the code is dense enough. The nested-level losses and their
//! gradients take one pass over the rows ([`loss::nested_levels`]). Every large array of a
//! step comes from the pool of [`Scratch`] buffers, so steps do not pay page faults on fresh
//! memory. The result equals `Sae::loss_and_grads` up to floating-point summation order
//! (tested below).

//!
//! The parts: [`select`] finds the kept entries (per row, or over the batch for BatchTopK) and
//! returns them as a [`format::Csr`] code; [`format`] holds that layout and its by-latent
//! transpose; [`blocked`] holds the cache-blocked products; [`thresholded`] drives the step of
//! the ReLU and JumpReLU codes; this file drives the top-k family's step.

use candle_core::Tensor;
use rayon::prelude::*;

use crate::matmul::matmul_into;
use crate::sae::config::{Arch, AuxValues, TopkVariant};
use crate::sae::kernels::host::with_slice;
use crate::sae::kernels::scratch::Scratch;
use crate::sae::model::loss;
use crate::sae::model::{Grads, LossParts, Sae};
use crate::sae::Result;

mod aux;
mod blocked;
mod format;
mod select;
mod thresholded;

use blocked::{blocked_sddmm, blocked_spmm, Gathered, Tiling, TILING};
use format::{Csc, Csr, TRANSPOSE_ROWS};
use select::{select_batch, select_rows};

/// Outputs of the fast step besides losses and gradients.
pub(crate) struct FastExtras {
    /// Per-latent number of non-zero activations in the last level.
    pub counts: Vec<u32>,
    /// Mean number of non-zero activations per row in the first level.
    pub active: f64,
    /// BatchTopK: smallest positive code value (feeds the threshold estimate); otherwise None.
    pub min_positive: Option<f32>,
}

/// Whether the fast path handles this model on its device: every architecture on the CPU
/// without a soft cap (Matryoshka with its reference ReLU variant).
pub(crate) fn applicable(model: &Sae) -> bool {
    model.device().is_cpu()
        && model.config.soft_cap <= 0.0
        && match model.config.arch {
            Arch::Topk | Arch::Batchtopk | Arch::Relu | Arch::Jumprelu => true,
            Arch::Msae => model.config.topk_variant == TopkVariant::Relu,
        }
}

/// Choice between the sparse and the dense encoder-gradient product, and the cache blocking
/// (tests force each path and small blocks).
#[derive(Clone, Copy)]
struct Paths {
    /// Dense encoder-gradient product (x − b_pre)ᵀ·dP; None: chosen by the density of the code.
    dense_dp: Option<bool>,
    tiling: Tiling,
}

impl Default for Paths {
    fn default() -> Self {
        Paths {
            dense_dp: None,
            tiling: TILING,
        }
    }
}

/// Reconstructions of every level, [L, B, d]: band sums from one blocked product (band l of
/// row r is output row l·B + r), then level l = b_pre + bands 0..=l.
fn reconstruct(
    csr: &Csr,
    w: &Gathered,
    d: usize,
    pre_bias: &[f32],
    tiling: Tiling,
) -> Scratch<f32> {
    let (b, nl) = (csr.rows(), csr.levels());
    let mut out = Scratch::zeros(b * nl * d);
    let range = |o: usize| csr.band(o % b, o / b);
    blocked_spmm(range, &csr.idx, &csr.val, w, d, &mut out, tiling);
    for l in 0..nl {
        let (prev, cur) = out.split_at_mut(l * b * d);
        let cur = &mut cur[..b * d];
        if l == 0 {
            cur.par_chunks_mut(d).for_each(|row| {
                for (o, p) in row.iter_mut().zip(pre_bias) {
                    *o += p;
                }
            });
        } else {
            cur.par_chunks_mut(d)
                .zip(prev[(l - 1) * b * d..].par_chunks(d))
                .for_each(|(row, p)| {
                    for (o, p) in row.iter_mut().zip(p) {
                        *o += p;
                    }
                });
        }
    }
    out
}

/// Code gradient at every entry (CSR order): dP_e = der_e · C_{lev(e)}[row] · W_dec[j], from
/// `c` = C as [B, L, d] (row r·L + l of C is band l of row r), one blocked product.
fn code_grad(csr: &Csr, c: &[f32], w: &Gathered, d: usize, tiling: Tiling) -> Scratch<f32> {
    let mut dp = Scratch::zeros(csr.idx.len());
    let starts: Vec<usize> = std::iter::once(csr.offsets[0])
        .chain(csr.band_end.iter().copied())
        .collect();
    blocked_sddmm(&starts, &csr.idx, c, w, d, &mut dp, tiling);
    dp.par_iter_mut()
        .zip(csr.der.par_iter())
        .for_each(|(o, g)| *o *= g);
    dp
}

/// Σ over the batch of the per-entry values `v` (CSR order) for each latent: parts of
/// [`TRANSPOSE_ROWS`] rows sum in parallel, then the parts are added in order.
fn latent_sums(csr: &Csr, v: &[f32], n: usize, dev: &candle_core::Device) -> Result<Tensor> {
    let b = csr.rows();
    let parts: Vec<Vec<f32>> = (0..b)
        .step_by(TRANSPOSE_ROWS)
        .collect::<Vec<_>>()
        .par_iter()
        .map(|&r0| {
            let mut sums = vec![0f32; n];
            for e in csr.offsets[r0]..csr.offsets[(r0 + TRANSPOSE_ROWS).min(b)] {
                sums[csr.idx[e] as usize] += v[e];
            }
            sums
        })
        .collect();
    let mut total = vec![0f32; n];
    for part in parts {
        for (t, p) in total.iter_mut().zip(part) {
            *t += p;
        }
    }
    Ok(Tensor::from_vec(total, n, dev)?)
}

/// The centred input `x − b_pre` and the encoder product `(x − b_pre)·W_enc` (without the latent
/// bias) of a standardised batch `x` (B×d, row-major), both in pooled buffers.
fn centre_and_encode(
    model: &Sae,
    x: &[f32],
    pre_bias: &[f32],
) -> Result<(Scratch<f32>, Scratch<f32>)> {
    let (n, d) = (model.n, model.d);
    let b = x.len() / d;
    let mut xc = Scratch::for_overwrite(b * d);
    xc.par_chunks_mut(d)
        .zip(x.par_chunks(d))
        .for_each(|(o, x)| {
            for ((o, v), m) in o.iter_mut().zip(x).zip(pre_bias) {
                *o = v - m;
            }
        });
    let mut p = Scratch::for_overwrite(b * n);
    with_slice(&model.encoder, |w| {
        matmul_into(b, n, d, &xc, (d, 1), w, (n, 1), &mut p)
    })?;
    Ok((xc, p))
}

/// Decoder, encoder and latent-bias gradients `(g_enc, g_lat, g_dec)` of a sparse code: `dp`
/// is the pre-activation gradient at every entry (CSR order), `c` the reconstruction gradients
/// as [B, L, d] and `xc` the centred input [B, d]. Consumes `c`, whose memory goes back to the
/// pool before the encoder gradient needs its own.
fn weight_grads(
    csr: &Csr,
    dp: &[f32],
    c: Scratch<f32>,
    xc: &[f32],
    model: &Sae,
    paths: Paths,
) -> Result<(Tensor, Tensor, Tensor)> {
    let (b, nl) = (csr.rows(), csr.levels());
    let (n, d) = (model.n, model.d);
    let dev = model.device().clone();
    // A code dense enough makes the encoder gradient (x − b_pre)ᵀ·dP cheaper as one dense
    // matrix product than as per-latent sums of gathered rows.
    let dense_dp = paths.dense_dp.unwrap_or(csr.idx.len() * 4 > b * n);
    let csc = Csc::new(csr, n, !dense_dp);
    let mut g_dec = vec![0f32; n * d];
    let range = |j: usize| csc.start[j]..csc.start[j + 1];
    let c_gathered = Gathered::new(&c, d, paths.tiling);
    blocked_spmm(
        range,
        &csc.vrow,
        &csc.val,
        &c_gathered,
        d,
        &mut g_dec,
        paths.tiling,
    );
    drop(c_gathered);
    drop(c);
    let g_dec = Tensor::from_vec(g_dec, (n, d), &dev)?;
    let (g_enc, g_lat) = if dense_dp {
        let mut dense = Scratch::zeros(b * n);
        dense.par_chunks_mut(n).enumerate().for_each(|(r, row)| {
            for e in csr.offsets[r]..csr.offsets[r + 1] {
                row[csr.idx[e] as usize] = dp[e];
            }
        });
        let mut g_enc = vec![0f32; d * n];
        matmul_into(d, n, b, xc, (1, d), &dense, (n, 1), &mut g_enc);
        (
            Tensor::from_vec(g_enc, (d, n), &dev)?,
            latent_sums(csr, dp, n, &dev)?,
        )
    } else {
        let dp_t: Vec<f32> = csc.entry.iter().map(|&e| dp[e as usize]).collect();
        let g_lat: Vec<f32> = (0..n)
            .map(|j| dp_t[csc.start[j]..csc.start[j + 1]].iter().sum())
            .collect();
        // Batch row of each entry; with one level it is the row of C.
        let rows: Vec<u32> = if nl == 1 {
            csc.vrow.to_vec()
        } else {
            csc.vrow.iter().map(|&v| v / nl as u32).collect()
        };
        let mut g_enc_t = vec![0f32; n * d];
        let range = |j: usize| csc.start[j]..csc.start[j + 1];
        let xc_gathered = Gathered::new(xc, d, paths.tiling);
        blocked_spmm(
            range,
            &rows,
            &dp_t,
            &xc_gathered,
            d,
            &mut g_enc_t,
            paths.tiling,
        );
        (
            Tensor::from_vec(g_enc_t, (n, d), &dev)?.t()?.contiguous()?,
            Tensor::from_vec(g_lat, n, &dev)?,
        )
    };
    Ok((g_enc, g_lat, g_dec))
}

/// Loss and gradients of a model the fast path handles ([`applicable`]) on a standardised
/// batch `x`, with the auxiliary dead-latent loss over `dead` (ascending) when the
/// configuration turns it on; its weighted value comes last (the total includes it).
pub(crate) fn loss_and_grads(
    model: &Sae,
    x: &Tensor,
    nmse_reference: Option<&Tensor>,
    dead: &[u32],
) -> Result<(LossParts, Grads, FastExtras, Option<f64>)> {
    match model.config.arch {
        Arch::Relu | Arch::Jumprelu => thresholded::loss_and_grads(
            model,
            x,
            nmse_reference,
            thresholded::ThresholdPaths::default(),
        )
        .map(|(parts, grads, extra)| (parts, grads, extra, None)),
        _ => loss_and_grads_aux(model, x, nmse_reference, dead, Paths::default()),
    }
}

/// As [`loss_and_grads`] without the auxiliary loss, with the sparse / dense choices of
/// `paths`.
#[cfg(test)]
fn loss_and_grads_with(
    model: &Sae,
    x: &Tensor,
    nmse_reference: Option<&Tensor>,
    paths: Paths,
) -> Result<(LossParts, Grads, FastExtras)> {
    let (parts, grads, extra, _) = loss_and_grads_aux(model, x, nmse_reference, &[], paths)?;
    Ok((parts, grads, extra))
}

/// The top-k family's fast step, with the sparse / dense choices of `paths`.
fn loss_and_grads_aux(
    model: &Sae,
    x: &Tensor,
    nmse_reference: Option<&Tensor>,
    dead: &[u32],
    paths: Paths,
) -> Result<(LossParts, Grads, FastExtras, Option<f64>)> {
    let (b, d) = x.dims2()?;
    let n = model.n;
    let dev = model.device().clone();
    let pre_bias = model.pre_bias.to_vec1::<f32>()?;
    let (xc, mut p) = with_slice(x, |x| centre_and_encode(model, x, &pre_bias))??;
    // Per-row selection adds the latent bias row by row, in cache; the batch-wide one needs
    // the whole biased matrix.
    let bias = model.latent_bias.to_vec1::<f32>()?;
    let csr = if model.config.arch == Arch::Batchtopk {
        p.par_chunks_mut(n).for_each(|row| {
            for (v, c) in row.iter_mut().zip(&bias) {
                *v += c;
            }
        });
        select_batch(&p, b, n, model)
    } else {
        select_rows(&p, &bias, b, n, model)
    };
    // The auxiliary code of the dead latents, from the same pre-activations.
    let aux_plan = crate::sae::model::aux_k::plan(&model.config, d, dead.len());
    let aux_csr = aux_plan.map(|a| {
        let unbiased = model.config.arch != Arch::Batchtopk;
        let variant = match model.config.aux_k_values() {
            AuxValues::Raw => None,
            AuxValues::Activation => Some(model.config.topk_variant),
        };
        aux::select_dead(
            &p,
            unbiased.then_some(&bias[..]),
            (b, n),
            dead,
            a.k,
            variant,
        )
    });
    drop(p);
    let nl = model.level_weights.len();
    let w_dec = model
        .decoder
        .to_dtype(candle_core::DType::F32)?
        .contiguous()?;
    // One chunk-major copy of the decoder serves the reconstruction and the code gradient.
    let w_gathered = with_slice(&w_dec, |w| Gathered::new(w, d, paths.tiling))?;
    let recon = reconstruct(&csr, &w_gathered, d, &pre_bias, paths.tiling);

    // Losses and C_l = Σ_{i ≥ l} w_i ∂ℓ_i/∂X̂_i (suffix sums), C as [B, L, d].
    let reference = nmse_reference.map(|m| m.to_vec1::<f32>()).transpose()?;
    let mut c = Scratch::for_overwrite(b * nl * d);
    let rec_total = with_slice(x, |x| {
        loss::nested_levels(
            model.config.loss,
            &recon,
            x,
            reference.as_deref(),
            &model.level_weights,
            d,
            &mut c,
        )
    })?;
    // Against the residual of the last (fullest) level.
    let aux_loss = match (&aux_csr, aux_plan) {
        (Some(csr_aux), Some(plan)) => Some(with_slice(x, |x| {
            aux::residual_loss(
                csr_aux,
                &w_gathered,
                x,
                &recon[(nl - 1) * b * d..nl * b * d],
                reference.as_deref(),
                model.config.loss,
                plan.weight,
                d,
                paths.tiling,
            )
        })?),
        _ => None,
    };
    drop(recon);
    let mut g_pre_dec = vec![0f32; d];
    for row in c.chunks(nl * d) {
        for (g, v) in g_pre_dec.iter_mut().zip(&row[..d]) {
            *g += v;
        }
    }
    let g_pre_dec = Tensor::from_vec(g_pre_dec, d, &dev)?;

    let dp = code_grad(&csr, &c, &w_gathered, d, paths.tiling);
    let aux_dp = match (&aux_csr, &aux_loss) {
        (Some(csr_aux), Some((_, grad))) => {
            Some(code_grad(csr_aux, grad, &w_gathered, d, paths.tiling))
        }
        _ => None,
    };
    drop(w_gathered);

    let mut counts = vec![0u32; n];
    for (&j, &v) in csr.idx.iter().zip(csr.val.iter()) {
        if v != 0.0 {
            counts[j as usize] += 1;
        }
    }
    let active = (0..b)
        .map(|r| csr.band(r, 0).filter(|&e| csr.val[e] != 0.0).count())
        .sum::<usize>() as f64
        / b as f64;
    let min_positive = if model.config.arch == Arch::Batchtopk {
        csr.val
            .iter()
            .copied()
            .filter(|&v| v > 0.0)
            .min_by(f32::total_cmp)
    } else {
        None
    };

    let (mut g_enc, mut g_lat, mut g_dec) = weight_grads(&csr, &dp, c, &xc, model, paths)?;
    let mut aux_value = None;
    if let (Some(csr_aux), Some((value, grad)), Some(dp_aux)) = (&aux_csr, aux_loss, aux_dp) {
        let (e, l, w) = weight_grads(csr_aux, &dp_aux, grad, &xc, model, paths)?;
        g_enc = (g_enc + e)?;
        g_lat = (g_lat + l)?;
        g_dec = (g_dec + w)?;
        aux_value = Some(value);
    }
    let g_pre = (g_pre_dec - model.encoder.matmul(&g_lat.unsqueeze(1)?)?.squeeze(1)?)?;
    let rec = Tensor::new(rec_total as f32, &dev)?;
    let total = match aux_value {
        Some(a) => Tensor::new((rec_total + a) as f32, &dev)?,
        None => rec.clone(),
    };
    let zero = Tensor::zeros((), candle_core::DType::F32, &dev)?;
    Ok((
        LossParts {
            total,
            rec,
            sparsity: zero,
        },
        Grads(vec![g_pre, g_enc, g_lat, g_dec]),
        FastExtras {
            counts,
            active,
            min_positive,
        },
        aux_value,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sae::config::{MsaeWeighting, RecLoss, TrainConfig};
    use candle_core::Device;

    fn close(a: &Tensor, b: &Tensor, what: &str) {
        let a = a.flatten_all().unwrap().to_vec1::<f32>().unwrap();
        let b = b.flatten_all().unwrap().to_vec1::<f32>().unwrap();
        assert_eq!(a.len(), b.len());
        for (i, (x, y)) in a.iter().zip(&b).enumerate() {
            assert!(
                (x - y).abs() <= 1e-5 + 1e-4 * y.abs(),
                "{what}[{i}]: {x} vs {y}"
            );
        }
    }

    /// A 6 → 24 model with k = 5 (Matryoshka levels 3, 6, 12, 24) and a batch of 10 rows.
    fn small_case(
        arch: Arch,
        variant: TopkVariant,
        weighting: MsaeWeighting,
        lossk: RecLoss,
    ) -> (Sae, Tensor) {
        let cfg = TrainConfig {
            arch,
            topk_variant: variant,
            msae_weighting: weighting,
            loss: lossk,
            n_latents: Some(24),
            k: Some(5),
            nesting_start: 3,
            ..Default::default()
        };
        let mut m = Sae::new(&cfg, 6, &Device::Cpu).unwrap();
        m.scale_to_unit_norm().unwrap();
        m.pre_bias = Tensor::new(&[0.1f32, -0.2, 0.05, 0.0, 0.3, 0.1], &Device::Cpu).unwrap();
        let lat: Vec<f32> = (0..24).map(|i| ((i * 5 % 7) as f32 - 3.0) * 0.05).collect();
        m.latent_bias = Tensor::from_vec(lat, 24, &Device::Cpu).unwrap();
        let xs: Vec<f32> = (0..60).map(|i| ((i * 7 % 13) as f32 - 6.0) * 0.3).collect();
        (m, Tensor::from_vec(xs, (10, 6), &Device::Cpu).unwrap())
    }

    #[test]
    fn fast_path_matches_reference_backward() {
        let cases = [
            (
                Arch::Topk,
                TopkVariant::Relu,
                MsaeWeighting::Uw,
                RecLoss::Nmse,
            ),
            (
                Arch::Topk,
                TopkVariant::Plain,
                MsaeWeighting::Uw,
                RecLoss::Mse,
            ),
            (
                Arch::Topk,
                TopkVariant::Abs,
                MsaeWeighting::Uw,
                RecLoss::Cosine,
            ),
            (
                Arch::Msae,
                TopkVariant::Relu,
                MsaeWeighting::Uw,
                RecLoss::Nmse,
            ),
            (
                Arch::Msae,
                TopkVariant::Relu,
                MsaeWeighting::Rw,
                RecLoss::Mse,
            ),
            (
                Arch::Batchtopk,
                TopkVariant::Relu,
                MsaeWeighting::Uw,
                RecLoss::Nmse,
            ),
            (
                Arch::Batchtopk,
                TopkVariant::Plain,
                MsaeWeighting::Uw,
                RecLoss::Mse,
            ),
            (
                Arch::Batchtopk,
                TopkVariant::Abs,
                MsaeWeighting::Uw,
                RecLoss::Nmse,
            ),
            (
                Arch::Batchtopk,
                TopkVariant::Absrelu,
                MsaeWeighting::Uw,
                RecLoss::Cosine,
            ),
        ];
        for (arch, variant, weighting, lossk) in cases {
            let (m, x) = small_case(arch, variant, weighting, lossk);
            assert!(applicable(&m));
            let fwd = m.forward_train(&x).unwrap();
            let (lp, g) = m.loss_and_grads(&fwd, None).unwrap();
            // Small blocks and groups, so that the blocking itself is exercised.
            let tilings = [
                TILING,
                Tiling {
                    gather_block: 5,
                    out_group: 3,
                },
            ];
            for (dense_dp, tiling) in [false, true]
                .into_iter()
                .flat_map(|dp| tilings.map(|t| (dp, t)))
            {
                let paths = Paths {
                    dense_dp: Some(dense_dp),
                    tiling,
                };
                let (fp, fg, extra) = loss_and_grads_with(&m, &x, None, paths).unwrap();
                let what = format!(
                    "{arch:?} {variant:?} {weighting:?} {lossk:?} {dense_dp} {}",
                    tiling.gather_block
                );
                close(&fp.total, &lp.total, &what);
                for (i, (a, b)) in fg.0.iter().zip(&g.0).enumerate() {
                    close(a, b, &format!("{what} grad {i}"));
                }
                let mut stats = crate::sae::model::ActivationStats {
                    counts: vec![0; 24],
                    ..Default::default()
                };
                stats.update(&fwd.levels.last().unwrap().z).unwrap();
                assert_eq!(
                    stats.counts,
                    extra.counts.iter().map(|&c| c as u64).collect::<Vec<_>>()
                );
                let act = loss::mean_active(&fwd.levels[0].z)
                    .unwrap()
                    .to_scalar::<f32>()
                    .unwrap();
                assert!((extra.active - act as f64).abs() < 1e-6);
                if arch == Arch::Batchtopk {
                    assert_eq!(
                        extra.min_positive,
                        crate::sae::model::activation::min_positive(&fwd.levels[0].z).unwrap()
                    );
                }
            }
        }
    }

    #[test]
    fn fast_path_matches_reference_backward_on_full_chunks() {
        // d = 136: two full 64-column chunks (the AVX2 kernels where available) and a
        // remainder; 40 rows × 5 levels give more gathered rows than a small block holds.
        use rand::{Rng, SeedableRng};
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(11);
        for (arch, variant) in [
            (Arch::Msae, TopkVariant::Relu),
            (Arch::Topk, TopkVariant::Relu),
            (Arch::Batchtopk, TopkVariant::Abs),
        ] {
            let cfg = TrainConfig {
                arch,
                topk_variant: variant,
                n_latents: Some(96),
                k: Some(12),
                nesting_start: 6,
                ..Default::default()
            };
            let (d, b) = (136, 40);
            let mut m = Sae::new(&cfg, d, &Device::Cpu).unwrap();
            m.scale_to_unit_norm().unwrap();
            let lat: Vec<f32> = (0..96).map(|_| rng.random_range(-0.05..0.05)).collect();
            m.latent_bias = Tensor::from_vec(lat, 96, &Device::Cpu).unwrap();
            let xs: Vec<f32> = (0..b * d).map(|_| rng.random_range(-1.0..1.0)).collect();
            let x = Tensor::from_vec(xs, (b, d), &Device::Cpu).unwrap();
            let fwd = m.forward_train(&x).unwrap();
            let (lp, g) = m.loss_and_grads(&fwd, None).unwrap();
            for (dense_dp, gather_block) in [(false, 1536), (false, 7), (true, 7)] {
                let paths = Paths {
                    dense_dp: Some(dense_dp),
                    tiling: Tiling {
                        gather_block,
                        out_group: 4,
                    },
                };
                let (fp, fg, _) = loss_and_grads_with(&m, &x, None, paths).unwrap();
                let what = format!("{arch:?} {dense_dp} {gather_block}");
                close(&fp.total, &lp.total, &what);
                for (i, (a, b)) in fg.0.iter().zip(&g.0).enumerate() {
                    close(a, b, &format!("{what} grad {i}"));
                }
            }
        }
    }
}
