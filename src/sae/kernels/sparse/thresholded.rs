//! Host step for the codes that keep every pre-activation above a threshold: ReLU+L1 (the
//! threshold is 0) and JumpReLU (a learned θ_j per latent; one below 0 acts as 0).
//!
//! Such a code keeps about half of the latents when a model starts and far fewer once the
//! sparsity penalty has done its work, so each step measures the density of its batch's code
//! and chooses the products to match. Above [`SPARSE_BELOW`] the four products after the
//! encoder are dense matrix products (gemm into pooled buffers, with the ReLU, the threshold,
//! the L1 gradient and the mask each fused into one pass over the code); below it the code is
//! laid out as the CSR code of the top-k path and shares its cache-blocked sparse products.
//! Either way the step computes the function of `Sae::loss_and_grads` (tested below against
//! it; it is tested against finite differences), and the choice depends only on the batch and
//! the model, so a resumed or re-run training takes the same path at every step.
//!
//! JumpReLU's threshold gradient (`model::jumprelu`) needs the code gradient at every entry
//! whose pre-activation P lies within ε/2 of θ_j, kept or not. The code pass lists those
//! entries; the dense path reads their gradient from the full code-gradient matrix, the sparse
//! path from the kept entries or, for the few below the threshold, as one dot product each.

use candle_core::Tensor;
use rayon::prelude::*;

use crate::matmul::matmul_into;
use crate::sae::config::Arch;
use crate::sae::kernels::host::with_slice;
use crate::sae::kernels::scratch::Scratch;
use crate::sae::kernels::sparse::blocked::Gathered;
use crate::sae::kernels::sparse::format::{Csr, TRANSPOSE_ROWS};
use crate::sae::kernels::sparse::{
    centre_and_encode, code_grad, reconstruct, weight_grads, FastExtras, Paths,
};
use crate::sae::model::{jumprelu, loss};
use crate::sae::model::{Grads, LossParts, Sae};
use crate::sae::{Result, SaeError};

/// Code density (kept entries over B·n) below which a step takes the sparse products; at or
/// above it, dense ones. Measured with `cargo bench --bench train_throughput -- --density F`
/// (README, "Benchmarks").
pub(super) const SPARSE_BELOW: f64 = 0.12;

/// Forced choices for the tests: `sparse` None chooses by density.
#[derive(Clone, Copy, Default)]
pub(super) struct ThresholdPaths {
    pub(super) sparse: Option<bool>,
    pub(super) inner: Paths,
}

/// The code of a batch, from one pass over the biased pre-activations.
struct Code {
    /// B×n code, zero where an entry is not kept.
    z: Scratch<f32>,
    /// Kept entries per row.
    row_kept: Vec<usize>,
    /// Σ_j z_ij per row (the L1 numerator).
    row_sum: Vec<f64>,
    /// JumpReLU: (row, latent) of the entries with |P − θ_j| < ε/2, by row, then latent.
    window: Vec<(u32, u32)>,
}

/// JumpReLU's thresholds and window.
struct Thresholds {
    /// θ_j, the centre of the window.
    theta: Vec<f32>,
    /// θ⁺_j = max(θ_j, 0), what a kept entry must exceed.
    cut: Vec<f32>,
    half_eps: f32,
}

impl Thresholds {
    fn new(theta: Vec<f32>, half_eps: f32) -> Self {
        let cut = theta.iter().map(|&t| t.max(0.0)).collect();
        Thresholds {
            theta,
            cut,
            half_eps,
        }
    }

    /// The window test |P − θ| < ε/2, in f32.
    fn inside(p: f32, t: f32, half_eps: f32) -> bool {
        (p - t).abs() < half_eps
    }

    /// Code value and window listing of one entry: `p` the encoder product, `c` the latent
    /// bias, `t` the threshold, `cut` its positive part.
    #[inline(always)]
    fn entry(&self, p: f32, c: f32, t: f32, cut: f32) -> (bool, f32) {
        let v = p + c;
        let r = v.max(0.0);
        let keep = r > cut;
        (
            Self::inside(v, t, self.half_eps),
            if keep { r } else { 0.0 },
        )
    }

    /// [`Thresholds::entry`] over a lane of sixteen latents, without branches (vectorised);
    /// the code overwrites `v`, and bit l of the result flags latent l for listing.
    #[inline(always)]
    fn lane(
        &self,
        v: &mut [f32; LANE],
        c: &[f32; LANE],
        t: &[f32; LANE],
        cut: &[f32; LANE],
    ) -> u32 {
        let mut listed = 0u32;
        for l in 0..LANE {
            let (flag, code) = self.entry(v[l], c[l], t[l], cut[l]);
            listed |= (flag as u32) << l;
            v[l] = code;
        }
        listed
    }

    /// Appends the latents whose bits are set in `listed`, of the lane starting at `first`.
    #[cold]
    fn list(&self, listed: u32, first: usize, window: &mut Vec<u32>) {
        let flagged = (0..LANE).filter(|&l| listed >> l & 1 == 1);
        window.extend(flagged.map(|l| (first + l) as u32));
    }
}

/// Latents per lane of the code pass (one AVX-512 register of f32).
const LANE: usize = 16;

/// Biases, rectifies and thresholds `p` (B×n, overwritten by the code) in one parallel pass.
/// Written without data-dependent branches on the kept entries (about half of them are kept
/// at the start of training, a branch per entry would be mispredicted half the time).
fn code_pass(mut p: Scratch<f32>, bias: &[f32], thresholds: Option<&Thresholds>) -> Code {
    let n = bias.len();
    let rows: Vec<(usize, f64, Vec<u32>)> = p
        .par_chunks_mut(n)
        .map(|row| {
            let mut window = Vec::new();
            match thresholds {
                None => row
                    .iter_mut()
                    .zip(bias)
                    .for_each(|(v, c)| *v = (*v + c).max(0.0)),
                Some(th) => {
                    // Lanes of sixteen latents: the code and the window test of each lane are
                    // computed without branches (vectorised), and only a lane with a listed
                    // entry, rare as values so close to a threshold are, is looked at again.
                    let split = row.len() / LANE * LANE;
                    let (full, rest) = row.split_at_mut(split);
                    for (lane, v) in full.chunks_exact_mut(LANE).enumerate() {
                        let at = lane * LANE..(lane + 1) * LANE;
                        let v: &mut [f32; LANE] = v.try_into().expect("a full lane");
                        let c: &[f32; LANE] = bias[at.clone()].try_into().expect("a full lane");
                        let t: &[f32; LANE] = th.theta[at.clone()].try_into().expect("a full lane");
                        let cut: &[f32; LANE] = th.cut[at].try_into().expect("a full lane");
                        let listed = th.lane(v, c, t, cut);
                        if listed != 0 {
                            th.list(listed, lane * LANE, &mut window);
                        }
                    }
                    for (l, v) in rest.iter_mut().enumerate() {
                        let j = split + l;
                        let (listed, code) = th.entry(*v, bias[j], th.theta[j], th.cut[j]);
                        *v = code;
                        if listed {
                            window.push(j as u32);
                        }
                    }
                }
            }
            let kept = row.iter().filter(|&&z| z > 0.0).count();
            (kept, lane_sum(row), window)
        })
        .collect();
    let mut code = Code {
        z: p,
        row_kept: Vec::with_capacity(rows.len()),
        row_sum: Vec::with_capacity(rows.len()),
        window: Vec::new(),
    };
    for (r, (kept, sum, window)) in rows.into_iter().enumerate() {
        code.row_kept.push(kept);
        code.row_sum.push(sum);
        code.window
            .extend(window.into_iter().map(|j| (r as u32, j)));
    }
    code
}

/// Sum of a row in sixteen f32 lanes (vectorised; each lane adds under 400 values of a 6,144
/// wide row), then in f64.
fn lane_sum(row: &[f32]) -> f64 {
    let mut lanes = [0f32; 16];
    let chunks = row.chunks_exact(16);
    let tail: f64 = chunks.remainder().iter().map(|&v| v as f64).sum();
    for c in chunks {
        for (l, v) in lanes.iter_mut().zip(c) {
            *l += v;
        }
    }
    lanes.iter().map(|&l| l as f64).sum::<f64>() + tail
}

/// The kept entries of `code` as a one-level CSR code (derivative 1: the ReLU and JumpReLU
/// codes pass the gradient of a kept entry unchanged).
fn to_csr(code: &Code, n: usize) -> Csr {
    let b = code.row_kept.len();
    let mut offsets = Vec::with_capacity(b + 1);
    offsets.push(0);
    for k in &code.row_kept {
        offsets.push(offsets[offsets.len() - 1] + k);
    }
    let total = offsets[b];
    let (mut idx, mut val, mut der) = (
        Scratch::for_overwrite(total),
        Scratch::for_overwrite(total),
        Scratch::for_overwrite(total),
    );
    let mut slices = Vec::with_capacity(b);
    let (mut ri, mut rv, mut rd) = (&mut idx[..], &mut val[..], &mut der[..]);
    for &len in &code.row_kept {
        let (a, ta) = ri.split_at_mut(len);
        let (v, tv) = rv.split_at_mut(len);
        let (g, tg) = rd.split_at_mut(len);
        slices.push((a, v, g));
        (ri, rv, rd) = (ta, tv, tg);
    }
    code.z
        .par_chunks(n)
        .zip(slices)
        .for_each(|(row, (a, v, g))| {
            let mut k = 0;
            for (j, &z) in row.iter().enumerate() {
                if z > 0.0 {
                    a[k] = j as u32;
                    v[k] = z;
                    g[k] = 1.0;
                    k += 1;
                }
            }
        });
    Csr {
        band_end: offsets[1..].to_vec(),
        offsets,
        idx,
        val,
        der,
    }
}

/// Turns the code gradient `dz` (B×n) into the pre-activation gradient in place —
/// `dz + l1_grad[row]` on the kept entries of `z`, 0 elsewhere — and returns its column sums
/// (the latent-bias gradient) and the kept entries per latent. One pass over fixed parts of
/// rows, added in order, so the sums do not depend on the thread count.
fn mask_and_sum(dz: &mut [f32], z: &[f32], l1_grad: &[f32], n: usize) -> (Vec<f32>, Vec<u32>) {
    let parts: Vec<(Vec<f32>, Vec<u32>)> = dz
        .par_chunks_mut(TRANSPOSE_ROWS * n)
        .zip(z.par_chunks(TRANSPOSE_ROWS * n))
        .zip(l1_grad.par_chunks(TRANSPOSE_ROWS))
        .map(|((dz, z), l1)| {
            let (mut sums, mut counts) = (vec![0f32; n], vec![0u32; n]);
            for ((g, z), &l1) in dz.chunks_mut(n).zip(z.chunks(n)).zip(l1) {
                for (((g, &z), s), c) in g.iter_mut().zip(z).zip(&mut sums).zip(&mut counts) {
                    let kept = z > 0.0;
                    *g = if kept { *g + l1 } else { 0.0 };
                    *s += *g;
                    *c += kept as u32;
                }
            }
            (sums, counts)
        })
        .collect();
    let (mut sums, mut counts) = (vec![0f32; n], vec![0u32; n]);
    for (s, c) in parts {
        sums.iter_mut().zip(s).for_each(|(t, v)| *t += v);
        counts.iter_mut().zip(c).for_each(|(t, v)| *t += v);
    }
    (sums, counts)
}

/// Loss and gradients of a ReLU or JumpReLU model on a standardised batch `x`.
pub(super) fn loss_and_grads(
    model: &Sae,
    x: &Tensor,
    nmse_reference: Option<&Tensor>,
    paths: ThresholdPaths,
) -> Result<(LossParts, Grads, FastExtras)> {
    let cfg = &model.config;
    let (b, d) = x.dims2()?;
    let n = model.n;
    let dev = model.device().clone();
    let jump = cfg.arch == Arch::Jumprelu;
    let lambda = cfg.sparsity_weight();
    let pre_bias = model.pre_bias.to_vec1::<f32>()?;
    let x_host = x.flatten_all()?.to_vec1::<f32>()?;
    let (xc, p) = centre_and_encode(model, &x_host, &pre_bias)?;
    let bias = model.latent_bias.to_vec1::<f32>()?;
    let eps = cfg.jumprelu_bandwidth;
    let thresholds = match (model.thresholds()?, jump) {
        (Some(t), true) => Some(Thresholds::new(t.to_vec1::<f32>()?, (eps / 2.0) as f32)),
        (None, true) => return Err(SaeError::Config("JumpReLU model without thresholds".into())),
        _ => None,
    };
    let code = code_pass(p, &bias, thresholds.as_ref());
    let kept: usize = code.row_kept.iter().sum();
    // The L1 gradient of a kept entry, λ / (B·‖x_i‖), per row (ReLU with λ ≠ 0 only).
    let l1_on = cfg.arch == Arch::Relu && lambda != 0.0;
    let x_norm: Vec<f32> = x_host
        .par_chunks(d)
        .map(|r| r.iter().map(|&v| v as f64 * v as f64).sum::<f64>().sqrt() as f32)
        .collect();
    let l1_grad: Vec<f32> = x_norm
        .iter()
        .map(|&xn| {
            if l1_on {
                (lambda / (xn as f64 * b as f64)) as f32
            } else {
                0.0
            }
        })
        .collect();
    let reference = nmse_reference.map(|m| m.to_vec1::<f32>()).transpose()?;
    let w_dec = model.decoder.contiguous()?;
    // A listed window wider than the code is cheaper to read from the dense code gradient.
    let sparse = paths
        .sparse
        .unwrap_or((kept as f64) < SPARSE_BELOW * (b * n) as f64 && code.window.len() <= kept);
    // Code gradient at each listed window entry, filled by the path taken.
    let mut window_grad = vec![0f32; code.window.len()];
    // The reconstruction loss and its gradient c = ∂ℓ/∂X̂ (one level), whichever products
    // built the reconstruction.
    let reconstruction_loss = |recon: &[f32], c: &mut [f32]| {
        loss::nested_levels(cfg.loss, recon, &x_host, reference.as_deref(), &[1.0], d, c)
    };
    let mut c = Scratch::for_overwrite(b * d);
    let (rec_total, c_total, g_enc, g_lat, g_dec, counts) = if sparse {
        let csr = to_csr(&code, n);
        drop(code.z);
        let tiling = paths.inner.tiling;
        let w_gathered = with_slice(&w_dec, |w| Gathered::new(w, d, tiling))?;
        let recon = reconstruct(&csr, &w_gathered, d, &pre_bias, tiling);
        let rec_total = reconstruction_loss(&recon, &mut c);
        drop(recon);
        let c_total = column_total(&c, d);
        let mut dp = code_grad(&csr, &c, &w_gathered, d, tiling);
        drop(w_gathered);
        if jump {
            with_slice(&w_dec, |w| {
                for (g, &(r, j)) in window_grad.iter_mut().zip(&code.window) {
                    let (r, j) = (r as usize, j as usize);
                    let row = &csr.idx[csr.offsets[r]..csr.offsets[r + 1]];
                    *g = match row.binary_search(&(j as u32)) {
                        Ok(k) => dp[csr.offsets[r] + k],
                        Err(_) => dot(&c[r * d..(r + 1) * d], &w[j * d..(j + 1) * d]),
                    };
                }
            })?;
        }
        if l1_on {
            for (r, &g) in l1_grad.iter().enumerate() {
                dp[csr.offsets[r]..csr.offsets[r + 1]]
                    .iter_mut()
                    .for_each(|v| *v += g);
            }
        }
        let mut counts = vec![0u32; n];
        for &j in csr.idx.iter() {
            counts[j as usize] += 1;
        }
        let (g_enc, g_lat, g_dec) = weight_grads(&csr, &dp, c, &xc, model, paths.inner)?;
        (rec_total, c_total, g_enc, g_lat, g_dec, counts)
    } else {
        let z = &code.z;
        let mut recon = Scratch::for_overwrite(b * d);
        with_slice(&w_dec, |w| {
            matmul_into(b, d, n, z, (n, 1), w, (d, 1), &mut recon)
        })?;
        recon.par_chunks_mut(d).for_each(|row| {
            for (o, p) in row.iter_mut().zip(&pre_bias) {
                *o += p;
            }
        });
        let rec_total = reconstruction_loss(&recon, &mut c);
        drop(recon);
        let c_total = column_total(&c, d);
        let mut dz = Scratch::for_overwrite(b * n);
        with_slice(&w_dec, |w| {
            matmul_into(b, n, d, &c, (d, 1), w, (1, d), &mut dz)
        })?;
        for (g, &(r, j)) in window_grad.iter_mut().zip(&code.window) {
            *g = dz[r as usize * n + j as usize];
        }
        let (g_lat, counts) = mask_and_sum(&mut dz, z, &l1_grad, n);
        let mut g_dec = vec![0f32; n * d];
        matmul_into(n, d, b, z, (1, n), &c, (d, 1), &mut g_dec);
        drop(c);
        let mut g_enc = vec![0f32; d * n];
        matmul_into(d, n, b, &xc, (1, d), &dz, (n, 1), &mut g_enc);
        (
            rec_total,
            c_total,
            Tensor::from_vec(g_enc, (d, n), &dev)?,
            Tensor::from_vec(g_lat, n, &dev)?,
            Tensor::from_vec(g_dec, (n, d), &dev)?,
            counts,
        )
    };
    let g_pre_dec: Vec<f32> = c_total.iter().map(|&v| v as f32).collect();
    let g_pre_dec = Tensor::from_vec(g_pre_dec, d, &dev)?;
    // P depends on b_pre through −b_pre·W_enc.
    let g_pre = (g_pre_dec - model.encoder.matmul(&g_lat.unsqueeze(1)?)?.squeeze(1)?)?;
    let mut grads = vec![g_pre, g_enc, g_lat, g_dec];
    // Sparsity before λ: the L1 term (1/B)·Σ_i ‖z_i‖₁/‖x_i‖ for ReLU, the mean number of kept
    // entries per row for JumpReLU.
    let sparsity = if jump {
        kept as f64 / b as f64
    } else if l1_on {
        code.row_sum
            .iter()
            .zip(&x_norm)
            .map(|(&s, &xn)| s / xn as f64)
            .sum::<f64>()
            / b as f64
    } else {
        0.0
    };
    if let Some(th) = &thresholds {
        // Window sums per latent: Σ of the code gradient, and the count.
        let mut rec_sum = vec![0f64; n];
        let mut width = vec![0f64; n];
        for (&g, &(_, j)) in window_grad.iter().zip(&code.window) {
            rec_sum[j as usize] += g as f64;
            width[j as usize] += 1.0;
        }
        let g: Vec<f32> = (0..n)
            .map(|j| {
                let t = th.theta[j] as f64;
                let param = cfg.jumprelu_param;
                jumprelu::param_grad(param, t, rec_sum[j], width[j], eps, lambda, b as f64) as f32
            })
            .collect();
        grads.push(Tensor::from_vec(g, n, &dev)?);
    }
    let rec = rec_total as f32;
    let total = if lambda != 0.0 {
        (rec as f64 + lambda * sparsity) as f32
    } else {
        rec
    };
    Ok((
        LossParts {
            total: Tensor::new(total, &dev)?,
            rec: Tensor::new(rec, &dev)?,
            sparsity: Tensor::new(sparsity as f32, &dev)?,
        },
        Grads(grads),
        FastExtras {
            counts,
            active: kept as f64 / b as f64,
            min_positive: None,
        },
    ))
}

/// Σ over the rows of a B×d matrix, in f64.
fn column_total(m: &[f32], d: usize) -> Vec<f64> {
    let mut s = vec![0f64; d];
    for row in m.chunks(d) {
        s.iter_mut().zip(row).for_each(|(t, &v)| *t += v as f64);
    }
    s
}

/// Dot product of two equal-length rows, accumulated in f32 in order.
fn dot(a: &[f32], b: &[f32]) -> f32 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sae::config::{JumpreluParam, RecLoss, TrainConfig};
    use crate::sae::kernels::sparse::blocked::Tiling;
    use candle_core::Device;
    use rand::{Rng, SeedableRng};

    fn close(a: &Tensor, b: &Tensor, what: &str) {
        let a = a.flatten_all().unwrap().to_vec1::<f32>().unwrap();
        let b = b.flatten_all().unwrap().to_vec1::<f32>().unwrap();
        assert_eq!(a.len(), b.len(), "{what}");
        for (i, (x, y)) in a.iter().zip(&b).enumerate() {
            assert!(
                (x - y).abs() <= 1e-5 + 1e-4 * y.abs(),
                "{what}[{i}]: {x} vs {y}"
            );
        }
    }

    /// A d → n model with random biases and a batch of `b` rows. JumpReLU gets a bandwidth of
    /// 0.2 and thresholds around 0.1, so that many entries fall in the window on both sides of
    /// the threshold; every fourth latent a threshold of 0.05 (below ε/2, so that its window
    /// reaches below 0), and with `direct` thresholds every fourth one 0 or −0.05 instead.
    fn case(arch: Arch, loss: RecLoss, lambda: f64, d: usize, n: usize, b: usize) -> (Sae, Tensor) {
        case_with(arch, loss, lambda, (d, n, b), JumpreluParam::Log)
    }

    fn case_with(
        arch: Arch,
        loss: RecLoss,
        lambda: f64,
        (d, n, b): (usize, usize, usize),
        param: JumpreluParam,
    ) -> (Sae, Tensor) {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(5);
        let cfg = TrainConfig {
            arch,
            loss,
            n_latents: Some(n),
            sparsity_weight: Some(lambda),
            jumprelu_theta0: 0.1,
            jumprelu_bandwidth: 0.2,
            jumprelu_param: param,
            ..Default::default()
        };
        let mut m = Sae::new(&cfg, d, &Device::Cpu).unwrap();
        m.scale_to_unit_norm().unwrap();
        // Unit decoder rows leave the encoder columns at norm 0.01; wider ones spread the
        // pre-activations over the thresholds instead of leaving them at the biases.
        m.encoder = (m.encoder.clone() * 30.0).unwrap();
        let pre: Vec<f32> = (0..d).map(|_| rng.random_range(-0.1..0.1)).collect();
        m.pre_bias = Tensor::from_vec(pre, d, &Device::Cpu).unwrap();
        let lat: Vec<f32> = (0..n).map(|_| rng.random_range(-0.3..0.2)).collect();
        m.latent_bias = Tensor::from_vec(lat, n, &Device::Cpu).unwrap();
        if arch == Arch::Jumprelu {
            let direct = param == JumpreluParam::Direct;
            let t: Vec<f32> = (0..n)
                .map(|j| match (j % 8, direct) {
                    (0, true) => 0.0,
                    (4, true) => -0.05,
                    (0 | 4, false) => 0.05,
                    _ => rng.random_range(0.05f32..0.3),
                })
                .collect();
            let t = Tensor::from_vec(t, n, &Device::Cpu).unwrap();
            m.threshold_param = Some(if direct { t } else { t.log().unwrap() });
        }
        let xs: Vec<f32> = (0..b * d).map(|_| rng.random_range(-1.0..1.0)).collect();
        (m, Tensor::from_vec(xs, (b, d), &Device::Cpu).unwrap())
    }

    #[test]
    fn both_paths_match_the_reference_backward() {
        let (log, direct) = (JumpreluParam::Log, JumpreluParam::Direct);
        let cases = [
            (Arch::Relu, RecLoss::Nmse, 0.003, log),
            (Arch::Relu, RecLoss::Mse, 0.5, log),
            (Arch::Relu, RecLoss::Cosine, 0.0, log),
            (Arch::Jumprelu, RecLoss::Nmse, 0.001, log),
            (Arch::Jumprelu, RecLoss::Mse, 0.3, log),
            (Arch::Jumprelu, RecLoss::Nmse, 0.01, direct),
            (Arch::Jumprelu, RecLoss::Cosine, 0.05, direct),
        ];
        // d = 136: two full 64-column chunks of the sparse kernels and a remainder.
        for (arch, lossk, lambda, param) in cases {
            for (d, n, b) in [(6, 24, 10), (136, 96, 40)] {
                let (m, x) = case_with(arch, lossk, lambda, (d, n, b), param);
                assert!(crate::sae::kernels::sparse::applicable(&m));
                let fwd = m.forward_train(&x).unwrap();
                let (lp, g) = m.loss_and_grads(&fwd, None).unwrap();
                let z = &fwd.levels[0].z;
                let kept = z
                    .gt(0f32)
                    .unwrap()
                    .to_dtype(candle_core::DType::F32)
                    .unwrap();
                let counts: Vec<u32> = kept
                    .sum(0)
                    .unwrap()
                    .to_vec1::<f32>()
                    .unwrap()
                    .iter()
                    .map(|&c| c as u32)
                    .collect();
                let active = kept.sum_all().unwrap().to_scalar::<f32>().unwrap() as f64 / b as f64;
                for (sparse, gather_block) in [(false, 1536), (true, 1536), (true, 7)] {
                    let paths = ThresholdPaths {
                        sparse: Some(sparse),
                        inner: Paths {
                            dense_dp: None,
                            tiling: Tiling {
                                gather_block,
                                out_group: 3,
                            },
                        },
                    };
                    let (fp, fg, extra) = loss_and_grads(&m, &x, None, paths).unwrap();
                    let what =
                        format!("{arch:?} {param:?} {lossk:?} λ={lambda} d={d} sparse={sparse}");
                    close(&fp.total, &lp.total, &what);
                    close(&fp.rec, &lp.rec, &what);
                    close(&fp.sparsity, &lp.sparsity, &what);
                    assert_eq!(fg.0.len(), g.0.len(), "{what}");
                    for (i, (a, b)) in fg.0.iter().zip(&g.0).enumerate() {
                        close(a, b, &format!("{what} grad {i}"));
                    }
                    assert_eq!(extra.counts, counts, "{what}");
                    assert!((extra.active - active).abs() < 1e-9, "{what}");
                }
            }
        }
    }

    #[test]
    fn the_jumprelu_window_covers_both_sides_of_the_threshold() {
        // The cases above must exercise every branch of the window: listed entries kept and
        // not kept, entries below 0 around a threshold under ε/2, and (direct) around a
        // threshold at or below 0, whose latent keeps every positive entry.
        for param in [JumpreluParam::Log, JumpreluParam::Direct] {
            let (m, x) = case_with(Arch::Jumprelu, RecLoss::Nmse, 0.001, (136, 96, 40), param);
            let xs = x.flatten_all().unwrap().to_vec1::<f32>().unwrap();
            let mut xc = Scratch::zeros(xs.len());
            let pre = m.pre_bias.to_vec1::<f32>().unwrap();
            for (i, v) in xc.iter_mut().enumerate() {
                *v = xs[i] - pre[i % 136];
            }
            let mut p = Scratch::zeros(40 * 96);
            let w = m.encoder.flatten_all().unwrap().to_vec1::<f32>().unwrap();
            matmul_into(40, 96, 136, &xc, (136, 1), &w, (96, 1), &mut p);
            let bias = m.latent_bias.to_vec1::<f32>().unwrap();
            let pre_act: Vec<f32> = p
                .iter()
                .enumerate()
                .map(|(i, v)| v + bias[i % 96])
                .collect();
            let theta = m.thresholds().unwrap().unwrap().to_vec1::<f32>().unwrap();
            let th = Thresholds::new(theta.clone(), 0.1);
            let code = code_pass(p, &bias, Some(&th));
            let at = |r: u32, j: u32| r as usize * 96 + j as usize;
            let listed = |f: &dyn Fn(usize, usize) -> bool| {
                code.window.iter().any(|&(r, j)| f(at(r, j), j as usize))
            };
            assert!(listed(&|i, _| code.z[i] > 0.0), "{param:?}");
            assert!(listed(&|i, _| code.z[i] == 0.0), "{param:?}");
            assert!(listed(&|i, _| pre_act[i] < 0.0), "{param:?}");
            if param == JumpreluParam::Direct {
                assert!(listed(&|_, j| theta[j] < 0.0));
                // A latent with θ ≤ 0 keeps exactly the positive pre-activations.
                for (i, &v) in pre_act.iter().enumerate() {
                    if theta[i % 96] <= 0.0 {
                        assert_eq!(code.z[i], v.max(0.0), "entry {i}");
                    }
                }
            }
        }
    }

    #[test]
    fn the_density_chooses_the_products() {
        // A model whose code keeps nearly nothing takes the sparse products, one that keeps
        // about half the dense ones; both agree with the reference (tested above), so the
        // choice is seen through the outputs' agreement with the forced paths.
        for (shift, sparse) in [(-3.0f32, true), (0.0, false)] {
            let (mut m, x) = case(Arch::Relu, RecLoss::Nmse, 0.003, 136, 96, 40);
            m.latent_bias = (m.latent_bias.clone() + shift as f64).unwrap();
            let (_, chosen, _) = loss_and_grads(&m, &x, None, ThresholdPaths::default()).unwrap();
            let forced = ThresholdPaths {
                sparse: Some(sparse),
                ..Default::default()
            };
            let (_, want, _) = loss_and_grads(&m, &x, None, forced).unwrap();
            for (a, b) in chosen.0.iter().zip(&want.0) {
                let a = a.flatten_all().unwrap().to_vec1::<f32>().unwrap();
                let b = b.flatten_all().unwrap().to_vec1::<f32>().unwrap();
                assert_eq!(a, b, "shift {shift}: path other than the density's");
            }
        }
    }

    #[test]
    fn the_code_pass_lists_the_window_of_each_entry_in_full_lanes_and_the_rest() {
        // 37 latents: two full lanes of sixteen and five left over; values crowded around the
        // thresholds so that every lane lists entries, positive thresholds and thresholds below
        // 0 (acting as 0) alternating.
        let (b, n, half) = (9, 37, 0.05f32);
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(11);
        let theta: Vec<f32> = (0..n)
            .map(|j| if j % 3 == 0 { -0.02 } else { 0.2 })
            .collect();
        let bias: Vec<f32> = (0..n).map(|j| 0.01 * (j % 5) as f32).collect();
        let p: Vec<f32> = (0..b * n).map(|_| rng.random_range(-0.1..0.35)).collect();
        let th = Thresholds::new(theta.clone(), half);
        let mut pool = Scratch::for_overwrite(b * n);
        pool.copy_from_slice(&p);
        let code = code_pass(pool, &bias, Some(&th));
        let mut window = Vec::new();
        for r in 0..b {
            for j in 0..n {
                let v = p[r * n + j] + bias[j];
                let keep = v > theta[j].max(0.0);
                assert_eq!(code.z[r * n + j], if keep { v } else { 0.0 }, "({r}, {j})");
                if (v - theta[j]).abs() < half {
                    window.push((r as u32, j as u32));
                }
            }
        }
        assert_eq!(code.window, window);
        assert!(window.iter().any(|&(_, j)| j >= 32) && window.iter().any(|&(_, j)| j < 16));
    }

    #[test]
    fn stale_pooled_buffers_do_not_change_a_step() {
        // Buffers taken for overwriting keep what their last user left; poison every size a
        // step uses with NaN and check that the step's outputs do not change.
        let _lease = crate::sae::kernels::scratch::PoolLease::acquire();
        for arch in [Arch::Relu, Arch::Jumprelu, Arch::Topk] {
            let (m, x) = case(arch, RecLoss::Nmse, 0.003, 136, 96, 40);
            let fresh = crate::sae::kernels::sparse::loss_and_grads(&m, &x, None, &[]).unwrap();
            let mut sizes = vec![40 * 136, 40 * 96, 96 * 136];
            sizes.extend((1..=40 * 96).step_by(97));
            for forced in [Some(true), Some(false), None] {
                let poisoned: Vec<Scratch<f32>> = sizes
                    .iter()
                    .flat_map(|&len| (0..3).map(move |_| len))
                    .map(|len| {
                        let mut s = Scratch::for_overwrite(len);
                        s.fill(f32::NAN);
                        s
                    })
                    .collect();
                drop(poisoned);
                let again = if arch == Arch::Topk {
                    crate::sae::kernels::sparse::loss_and_grads(&m, &x, None, &[])
                        .unwrap()
                        .1
                } else {
                    let paths = ThresholdPaths {
                        sparse: forced,
                        ..Default::default()
                    };
                    let want = loss_and_grads(&m, &x, None, paths).unwrap();
                    let (a, b) = (&want.1 .0, &fresh.1 .0);
                    for (i, (a, b)) in a.iter().zip(b).enumerate() {
                        close(a, b, &format!("{arch:?} {forced:?} grad {i}"));
                    }
                    want.1
                };
                for (i, (a, b)) in again.0.iter().zip(&fresh.1 .0).enumerate() {
                    let a = a.flatten_all().unwrap().to_vec1::<f32>().unwrap();
                    let b = b.flatten_all().unwrap().to_vec1::<f32>().unwrap();
                    assert!(
                        a.iter().all(|v| v.is_finite()),
                        "{arch:?} grad {i} not finite"
                    );
                    if forced.is_none() || arch == Arch::Topk {
                        assert_eq!(a, b, "{arch:?} grad {i} changed by stale buffers");
                    }
                }
            }
        }
    }
}
