//! The auxiliary dead-latent loss of the TopK paper (Gao et al. 2024, "Scaling and evaluating
//! sparse autoencoders", "aux-k"), for the top-k family and Matryoshka, with SAELens's
//! selection, scaling and weighting.
//!
//! Given the dead latents D (no activation for more than `aux_dead_steps` training steps, kept
//! by the training loop) and the residual `e = x − x̂` of the main reconstruction (for
//! Matryoshka its last level, which uses every active latent), each row keeps its
//! `k' = min(k_aux, |D|)` largest pre-activations among D, unchanged (SAELens takes the raw
//! pre-activations; with a ReLU the loss would vanish for latents that never turn positive,
//! which are all the dead latents of a Matryoshka code), and decodes them without the decoder
//! bias: `ê = Σ_j z_j W_dec[j]`. The loss is
//!
//! `aux = α · min(|D| / k_aux, 1) · ℓ(ê, e)`,
//!
//! where ℓ normalises the squared error as the main reconstruction loss does (SAELens: the sum
//! over features averaged over rows, both for its main and its auxiliary term): `mse`
//! `Σ(ê − e)² / (B·d)`; `nmse` (and `cosine`, which has no squared error to borrow) the mean
//! over rows of `Σ_k (ê − e)² / Σ_k (x − m)²` with the main loss's denominators. The residual
//! is a constant (detached), so the gradients reach only the selected dead latents: their
//! decoder rows, their encoder columns and latent biases, and through the encoder the pre-bias.
//!
//! This file holds the definition on candle tensors (every device, the dense backward pass)
//! and the per-row arithmetic the CPU fast path shares
//! ([`crate::sae::kernels::sparse`]).

use candle_core::{DType, Tensor};
use rayon::prelude::*;

use crate::sae::config::{AuxValues, RecLoss, TrainConfig};
use crate::sae::model::{activation, Sae};
use crate::sae::Result;

/// What one step's auxiliary loss does, from the configuration and the dead count.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct AuxPlan {
    /// Entries per row: min(k_aux, |D|).
    pub k: usize,
    /// α · min(|D| / k_aux, 1).
    pub weight: f64,
}

/// The step's plan; None when the loss is off or no latent is dead.
pub(crate) fn plan(cfg: &TrainConfig, d: usize, dead: usize) -> Option<AuxPlan> {
    if !cfg.aux_enabled() || dead == 0 {
        return None;
    }
    let k_aux = cfg.aux_k(d);
    Some(AuxPlan {
        k: k_aux.min(dead),
        weight: cfg.aux_k_coef() * (dead as f64 / k_aux as f64).min(1.0),
    })
}

/// The auxiliary loss's share of a step, on tensors.
pub(crate) struct TensorTerms {
    /// The weighted loss (0-d).
    pub value: Tensor,
    /// Its gradient with respect to the pre-activation P, [B, n].
    pub d_p: Tensor,
    /// Its gradient with respect to the decoder, [n, d].
    pub g_dec: Tensor,
}

/// The auxiliary loss and its gradients on tensors of any device: `p` the pre-activation
/// [B, n], `x` the standardised batch, `xhat` the main reconstruction, `dead` the dead latents
/// (ascending), `reference` the nmse reference vector. None when nothing is to be added.
pub(crate) fn tensor_terms(
    model: &Sae,
    p: &Tensor,
    x: &Tensor,
    xhat: &Tensor,
    dead: &[u32],
    reference: Option<&Tensor>,
) -> Result<Option<TensorTerms>> {
    let Some(plan) = plan(&model.config, model.d, dead.len()) else {
        return Ok(None);
    };
    let dev = p.device();
    let (b, n, d) = (p.dim(0)?, model.n, model.d);
    let ids = Tensor::from_slice(dead, dead.len(), dev)?;
    let p_dead = p.index_select(&ids, 1)?.contiguous()?;
    // The code and its derivative; ties go to the lower latent, as everywhere (the dead list
    // is ascending).
    let (z, dz) = match model.config.aux_k_values() {
        AuxValues::Raw => {
            let mask = activation::row_topk_mask(&p_dead, plan.k, false)?;
            ((&p_dead * &mask)?, mask)
        }
        AuxValues::Activation => {
            let c = activation::topk(&p_dead, plan.k, model.config.topk_variant)?;
            (c.z, c.dz)
        }
    };
    let w = model.decoder.index_select(&ids, 0)?;
    let ehat = z.matmul(&w)?;
    let e = (x - xhat)?;
    let diff = (ehat - e)?;
    let (value, grad) = match model.config.loss {
        RecLoss::Mse => (diff.sqr()?.mean_all()?, (&diff * (2.0 / (b * d) as f64))?),
        RecLoss::Nmse | RecLoss::Cosine => {
            let den = match reference {
                Some(m) => x.broadcast_sub(m)?.sqr()?.sum_keepdim(1)?,
                None => x.sqr()?.sum_keepdim(1)?,
            };
            let value = (diff.sqr()?.sum_keepdim(1)? / &den)?.mean_all()?;
            (value, diff.broadcast_div(&(den * (b as f64 / 2.0))?)?)
        }
    };
    let grad = (grad * plan.weight)?;
    let dz = (grad.matmul(&w.t()?)? * &dz)?;
    let g_w = z.t()?.matmul(&grad)?;
    Ok(Some(TensorTerms {
        value: (value * plan.weight)?,
        d_p: Tensor::zeros((b, n), DType::F32, dev)?.index_add(&ids, &dz, 1)?,
        g_dec: Tensor::zeros((n, d), DType::F32, dev)?.index_add(&ids, &g_w, 0)?,
    }))
}

/// The per-row loss arithmetic on host rows (the CPU fast path): `ehat`, `x` and `xhat` are
/// [B, d]. Writes ∂aux/∂ê (weighted) into `grad` and returns the weighted loss; sums are
/// accumulated in f64 per row.
#[allow(clippy::too_many_arguments)]
pub(crate) fn host_rows(
    kind: RecLoss,
    ehat: &[f32],
    x: &[f32],
    xhat: &[f32],
    reference: Option<&[f32]>,
    weight: f64,
    d: usize,
    grad: &mut [f32],
) -> f64 {
    let b = x.len() / d.max(1);
    // Per-row values, summed in row order afterwards: the total does not depend on the thread
    // count.
    let rows: Vec<f64> = grad
        .par_chunks_mut(d)
        .enumerate()
        .map(|(r, g)| {
            let row = r * d..(r + 1) * d;
            let (eh, xr, xh) = (&ehat[row.clone()], &x[row.clone()], &xhat[row]);
            // The residual e = x − x̂ is rounded to f32 as on the tensor path.
            let diff = |k: usize| eh[k] - (xr[k] - xh[k]);
            let num: f64 = (0..d).map(|k| diff(k) as f64 * diff(k) as f64).sum();
            let den = match kind {
                RecLoss::Mse => d as f64,
                RecLoss::Nmse | RecLoss::Cosine => match reference {
                    Some(m) => xr
                        .iter()
                        .zip(m)
                        .map(|(&v, &c)| (v as f64 - c as f64).powi(2))
                        .sum(),
                    None => xr.iter().map(|&v| v as f64 * v as f64).sum(),
                },
            };
            let alpha = (weight * 2.0 / (den * b as f64)) as f32;
            for (k, o) in g.iter_mut().enumerate() {
                *o = alpha * diff(k);
            }
            weight * num / den / b as f64
        })
        .collect();
    rows.iter().sum()
}

#[cfg(test)]
// Index loops mirror the formulas the tests check against.
#[allow(
    clippy::needless_range_loop,
    clippy::type_complexity,
    clippy::useless_vec
)]
mod tests {
    use super::*;
    use crate::sae::config::{Arch, TopkVariant};
    use candle_core::Device;
    use rand::{Rng, SeedableRng};

    const D: usize = 4;
    const N: usize = 10;
    const B: usize = 5;
    const K: usize = 2;
    const DEAD: [u32; 6] = [1, 3, 4, 6, 8, 9];

    /// The parameters and batch in f64: pre-bias, encoder [d][n], latent bias, decoder [n][d], x.
    #[derive(Clone)]
    struct Params {
        b_pre: Vec<f64>,
        enc: Vec<Vec<f64>>,
        b_lat: Vec<f64>,
        dec: Vec<Vec<f64>>,
        x: Vec<Vec<f64>>,
    }

    /// One case: the architecture, its variant, the loss, the values of the auxiliary code
    /// (None: raw) and k_aux.
    #[derive(Clone, Copy, Debug)]
    struct Case {
        arch: Arch,
        variant: TopkVariant,
        kind: RecLoss,
        values: AuxValues,
        k_aux: usize,
    }

    fn to64(t: &Tensor) -> Vec<Vec<f64>> {
        let t = if t.rank() == 1 {
            t.unsqueeze(0).unwrap()
        } else {
            t.clone()
        };
        t.to_vec2::<f32>()
            .unwrap()
            .into_iter()
            .map(|r| r.into_iter().map(f64::from).collect())
            .collect()
    }

    fn pre_activation(q: &Params) -> Vec<Vec<f64>> {
        q.x.iter()
            .map(|xr| {
                (0..N)
                    .map(|j| {
                        let dot: f64 = (0..D).map(|k| (xr[k] - q.b_pre[k]) * q.enc[k][j]).sum();
                        q.b_lat[j] + dot
                    })
                    .collect()
            })
            .collect()
    }

    /// Indices of the `k` largest of `keys` (key descending, then index ascending).
    fn top(keys: &[(f64, usize)], k: usize) -> Vec<usize> {
        let mut v = keys.to_vec();
        v.sort_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)));
        v.iter().take(k).map(|e| e.1).collect()
    }

    /// A per-row top-k variant's ranking key, value and derivative at a pre-activation.
    fn variant_of(v: TopkVariant, p: f64) -> (f64, f64, f64) {
        match v {
            TopkVariant::Plain => (p, p, 1.0),
            TopkVariant::Relu => (p, p.max(0.0), (p > 0.0) as u8 as f64),
            TopkVariant::Abs | TopkVariant::Absrelu => (p.abs(), p.abs(), p.signum()),
        }
    }

    /// The main reconstruction, computed here from its definition: per-row top-k of the
    /// variant, batch-wide top-k·B with ReLU, or (Matryoshka's last level, ReLU) every
    /// positive entry.
    fn main_recon(c: Case, q: &Params, p: &[Vec<f64>]) -> Vec<Vec<f64>> {
        let mut z = vec![vec![0.0; N]; B];
        match c.arch {
            Arch::Topk => {
                for r in 0..B {
                    let keys: Vec<_> = (0..N)
                        .map(|j| (variant_of(c.variant, p[r][j]).0, j))
                        .collect();
                    for j in top(&keys, K) {
                        z[r][j] = variant_of(c.variant, p[r][j]).1;
                    }
                }
            }
            Arch::Batchtopk => {
                assert_eq!(c.variant, TopkVariant::Relu);
                let keys: Vec<_> = (0..B * N).map(|i| (p[i / N][i % N], i)).collect();
                for i in top(&keys, K * B) {
                    z[i / N][i % N] = p[i / N][i % N].max(0.0);
                }
            }
            _ => {
                assert_eq!(c.variant, TopkVariant::Relu);
                for r in 0..B {
                    for j in 0..N {
                        z[r][j] = p[r][j].max(0.0);
                    }
                }
            }
        }
        (0..B)
            .map(|r| {
                (0..D)
                    .map(|k| q.b_pre[k] + (0..N).map(|j| z[r][j] * q.dec[j][k]).sum::<f64>())
                    .collect()
            })
            .collect()
    }

    /// Row r's auxiliary entries: (latent, value, derivative) of its k' dead latents.
    fn aux_entries(c: Case, p: &[f64]) -> Vec<(usize, f64, f64)> {
        let f = |v: f64| match c.values {
            AuxValues::Raw => (v, v, 1.0),
            AuxValues::Activation => variant_of(c.variant, v),
        };
        let keys: Vec<_> = DEAD
            .iter()
            .map(|&j| (f(p[j as usize]).0, j as usize))
            .collect();
        top(&keys, c.k_aux.min(DEAD.len()))
            .into_iter()
            .map(|j| (j, f(p[j]).1, f(p[j]).2))
            .collect()
    }

    /// The nmse (or mse: d) denominator of row r.
    fn den(c: Case, q: &Params, m: Option<&[f64]>, r: usize) -> f64 {
        match c.kind {
            RecLoss::Mse => D as f64,
            _ => (0..D)
                .map(|k| (q.x[r][k] - m.map_or(0.0, |m| m[k])).powi(2))
                .sum(),
        }
    }

    /// The auxiliary loss in f64 with the residual `e` held fixed, straight from its
    /// definition: each row's k' dead latents decoded without bias,
    /// α·min(|D|/k_aux, 1)·ℓ(ê, e).
    fn aux64(c: Case, q: &Params, e: &[Vec<f64>], m: Option<&[f64]>, coef: f64) -> f64 {
        let p = pre_activation(q);
        let scale = (DEAD.len() as f64 / c.k_aux as f64).min(1.0);
        let mut total = 0.0;
        for r in 0..B {
            let mut ehat = vec![0.0; D];
            for (j, z, _) in aux_entries(c, &p[r]) {
                for k in 0..D {
                    ehat[k] += z * q.dec[j][k];
                }
            }
            let sq: f64 = (0..D).map(|k| (ehat[k] - e[r][k]).powi(2)).sum();
            total += sq / den(c, q, m, r) / B as f64;
        }
        coef * scale * total
    }

    /// The gradients of [`aux64`] worked out by hand, in the order pre-bias, encoder, latent
    /// bias, decoder (flattened as the model's tensors).
    fn aux64_grads(
        c: Case,
        q: &Params,
        e: &[Vec<f64>],
        m: Option<&[f64]>,
        coef: f64,
    ) -> [Vec<f64>; 4] {
        let p = pre_activation(q);
        let w = coef * (DEAD.len() as f64 / c.k_aux as f64).min(1.0);
        let (mut g_enc, mut g_lat, mut g_dec) = (vec![0.0; D * N], vec![0.0; N], vec![0.0; N * D]);
        for r in 0..B {
            let entries = aux_entries(c, &p[r]);
            let mut ehat = vec![0.0; D];
            for &(j, z, _) in &entries {
                for k in 0..D {
                    ehat[k] += z * q.dec[j][k];
                }
            }
            // ∂aux/∂ê of this row.
            let dn = den(c, q, m, r);
            let g: Vec<f64> = (0..D)
                .map(|k| w * 2.0 * (ehat[k] - e[r][k]) / (dn * B as f64))
                .collect();
            for &(j, z, dz) in &entries {
                let dp = dz * (0..D).map(|k| g[k] * q.dec[j][k]).sum::<f64>();
                g_lat[j] += dp;
                for k in 0..D {
                    g_dec[j * D + k] += z * g[k];
                    g_enc[k * N + j] += (q.x[r][k] - q.b_pre[k]) * dp;
                }
            }
        }
        let g_pre = (0..D)
            .map(|k| -(0..N).map(|j| q.enc[k][j] * g_lat[j]).sum::<f64>())
            .collect();
        [g_pre, g_enc, g_lat, g_dec]
    }

    fn model(c: Case, coef: f64) -> (Sae, Tensor) {
        let cfg = TrainConfig {
            arch: c.arch,
            topk_variant: c.variant,
            loss: c.kind,
            n_latents: Some(N),
            k: Some(K),
            nesting_start: 2,
            aux_k_coef: Some(coef),
            aux_k: Some(c.k_aux),
            aux_k_values: Some(c.values),
            ..Default::default()
        };
        let dev = Device::Cpu;
        let mut m = Sae::new(&cfg, D, &dev).unwrap();
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(5);
        let mut u = |len: usize, s: f32| -> Vec<f32> {
            (0..len).map(|_| rng.random_range(-s..s)).collect()
        };
        // Encoder and decoder independent of each other, so that a transposition cannot pass.
        m.pre_bias = Tensor::from_vec(u(D, 0.2), D, &dev).unwrap();
        m.encoder = Tensor::from_vec(u(D * N, 1.0), (D, N), &dev).unwrap();
        m.latent_bias = Tensor::from_vec(u(N, 0.3), N, &dev).unwrap();
        m.decoder = Tensor::from_vec(u(N * D, 1.0), (N, D), &dev).unwrap();
        let x = Tensor::from_vec(u(B * D, 1.5), (B, D), &dev).unwrap();
        (m, x)
    }

    fn params(m: &Sae, x: &Tensor) -> Params {
        Params {
            b_pre: to64(&m.pre_bias).remove(0),
            enc: to64(&m.encoder),
            b_lat: to64(&m.latent_bias).remove(0),
            dec: to64(&m.decoder),
            x: to64(x),
        }
    }

    fn flat(t: &Tensor) -> Vec<f64> {
        t.flatten_all()
            .unwrap()
            .to_vec1::<f32>()
            .unwrap()
            .into_iter()
            .map(f64::from)
            .collect()
    }

    fn close(got: f64, want: f64, what: &str) {
        assert!(
            (got - want).abs() <= 2e-5 + 2e-4 * want.abs(),
            "{what}: {got} vs {want}"
        );
    }

    fn cases() -> Vec<Case> {
        let mut out = Vec::new();
        // Raw values (SAELens) for every architecture and loss; k_aux 3 of 6 dead (scale 1)
        // and 8 (k' = 6, scale 6/8).
        for arch in [Arch::Topk, Arch::Batchtopk, Arch::Msae] {
            for kind in [RecLoss::Mse, RecLoss::Nmse, RecLoss::Cosine] {
                for k_aux in [3, 8] {
                    let variant = TopkVariant::Relu;
                    out.push(Case {
                        arch,
                        variant,
                        kind,
                        values: AuxValues::Raw,
                        k_aux,
                    });
                }
            }
        }
        // The activation's values, for each per-row variant.
        for variant in [TopkVariant::Relu, TopkVariant::Plain, TopkVariant::Abs] {
            for k_aux in [3, 8] {
                let (arch, kind) = (Arch::Topk, RecLoss::Nmse);
                out.push(Case {
                    arch,
                    variant,
                    kind,
                    values: AuxValues::Activation,
                    k_aux,
                });
            }
        }
        let (arch, variant, kind) = (Arch::Batchtopk, TopkVariant::Relu, RecLoss::Mse);
        out.push(Case {
            arch,
            variant,
            kind,
            values: AuxValues::Activation,
            k_aux: 3,
        });
        out
    }

    /// The value and every gradient of the auxiliary loss, on the tensor path and on the CPU
    /// fast path (each: with it minus without it), against the float64 definition, whose own
    /// hand-derived gradients are first checked by central differences.
    #[test]
    fn value_and_gradients_match_a_float64_reference() {
        let mref = [0.3f32, -0.1, 0.0, 0.2];
        let mut nonzero_checked = 0;
        for c in cases() {
            for with_ref in [false, true] {
                if with_ref && c.kind == RecLoss::Mse {
                    continue;
                }
                let coef = 0.25;
                let what = format!("{c:?} ref={with_ref}");
                let (m, x) = model(c, coef);
                let q = params(&m, &x);
                let m64: Vec<f64> = mref.iter().map(|&v| v as f64).collect();
                let m64 = with_ref.then_some(&m64[..]);
                let reference = with_ref.then(|| Tensor::new(&mref, &Device::Cpu).unwrap());
                let p = pre_activation(&q);
                let xhat = main_recon(c, &q, &p);
                let e: Vec<Vec<f64>> = (0..B)
                    .map(|r| (0..D).map(|k| q.x[r][k] - xhat[r][k]).collect())
                    .collect();
                let want = aux64(c, &q, &e, m64, coef);
                let want_g = aux64_grads(c, &q, &e, m64, coef);

                // The hand-derived gradients against central differences in f64.
                let h = 1e-6;
                for (pi, g) in want_g.iter().enumerate() {
                    for (i, &gv) in g.iter().enumerate() {
                        let at = |delta: f64| {
                            let mut q2 = q.clone();
                            match pi {
                                0 => q2.b_pre[i] += delta,
                                1 => q2.enc[i / N][i % N] += delta,
                                2 => q2.b_lat[i] += delta,
                                _ => q2.dec[i / D][i % D] += delta,
                            }
                            aux64(c, &q2, &e, m64, coef)
                        };
                        let fd = (at(h) - at(-h)) / (2.0 * h);
                        assert!(
                            (fd - gv).abs() < 1e-6 + 1e-6 * gv.abs(),
                            "{what} reference param {pi}[{i}]: {gv} vs {fd}"
                        );
                    }
                }

                // Tensor path: what the loss adds.
                let fwd = m.forward_train(&x).unwrap();
                let (base, g0) = m.loss_and_grads(&fwd, reference.as_ref()).unwrap();
                let (with, g1, aux) = m
                    .loss_and_grads_aux(&fwd, reference.as_ref(), &DEAD)
                    .unwrap();
                let aux = aux.expect("dead latents: the loss is on");
                close(aux.to_scalar::<f32>().unwrap() as f64, want, &what);
                close(
                    with.total.to_scalar::<f32>().unwrap() as f64
                        - base.total.to_scalar::<f32>().unwrap() as f64,
                    want,
                    &format!("{what} total"),
                );
                // Fast path, likewise.
                let fast = |dead: &[u32]| {
                    crate::sae::kernels::sparse::loss_and_grads(&m, &x, reference.as_ref(), dead)
                        .unwrap()
                };
                let (fb, f0, _, none) = fast(&[]);
                assert!(none.is_none());
                let (fw, f1, _, faux) = fast(&DEAD);
                close(faux.unwrap(), want, &format!("{what} fast"));
                close(
                    fw.total.to_scalar::<f32>().unwrap() as f64
                        - fb.total.to_scalar::<f32>().unwrap() as f64,
                    want,
                    &format!("{what} fast total"),
                );
                for pi in 0..4 {
                    for (path, a, b) in [("tensor", &g1, &g0), ("fast", &f1, &f0)] {
                        let (a, b) = (flat(&a.0[pi]), flat(&b.0[pi]));
                        for (i, wv) in want_g[pi].iter().enumerate() {
                            close(a[i] - b[i], *wv, &format!("{what} {path} grad {pi}[{i}]"));
                            nonzero_checked += (wv.abs() > 1e-3) as usize;
                        }
                    }
                }
            }
        }
        assert!(
            nonzero_checked > 1000,
            "{nonzero_checked} non-zero gradients checked"
        );
    }

    #[test]
    fn off_or_nothing_dead_adds_nothing_and_the_scale_follows_the_dead_count() {
        let c = Case {
            arch: Arch::Topk,
            variant: TopkVariant::Relu,
            kind: RecLoss::Nmse,
            values: AuxValues::Raw,
            k_aux: 3,
        };
        let (m, x) = model(c, 0.25);
        let fwd = m.forward_train(&x).unwrap();
        assert!(m.loss_and_grads_aux(&fwd, None, &[]).unwrap().2.is_none());
        let mut off = m.config.clone();
        off.aux_k_coef = Some(0.0);
        assert_eq!(plan(&off, D, 6), None);
        assert_eq!(plan(&m.config, D, 0), None);
        // k_aux 3: two dead latents → k' = 2 and α·2/3; six → k' = 3 and α.
        let two = plan(&m.config, D, 2).unwrap();
        assert_eq!(two.k, 2);
        assert!((two.weight - 0.25 * 2.0 / 3.0).abs() < 1e-15);
        assert_eq!(plan(&m.config, D, 6), Some(AuxPlan { k: 3, weight: 0.25 }));
        // The default k_aux is d/2.
        let mut default_k = m.config.clone();
        default_k.aux_k = None;
        assert_eq!(plan(&default_k, 768, 1000).unwrap().k, 384);
    }
}
