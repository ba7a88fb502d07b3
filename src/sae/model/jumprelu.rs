//! JumpReLU thresholds: what the optimiser trains for them (`jumprelu_param`: log θ or θ), where
//! they start, how they follow the decoder renormalisation, and the straight-through estimate
//! of the loss gradient with respect to them.
//!
//! The code of latent j is `z = P·H(P − θ⁺)` with `θ⁺ = max(θ, 0)` (a threshold trained
//! directly may cross 0; it then acts as a ReLU). With the rectangle kernel
//! `rect(u) = 1[|u| < ½]` and bandwidth ε, the pseudo-derivatives of the JumpReLU paper are
//! `∂z/∂θ = −(θ⁺/ε)·rect((P − θ)/ε)` and `∂H(P − θ)/∂θ = −(1/ε)·rect((P − θ)/ε)`, so for the
//! loss `rec + λ·(1/B)·Σ_ij H(P_ij − θ⁺_j)`
//!
//! `∂L/∂θ_j = −(θ⁺_j/ε)·Σ_i g_ij·rect_ij − (λ/(ε·B))·Σ_i rect_ij`, with `g = ∂rec/∂z`,
//!
//! and `∂L/∂log θ_j = θ_j·∂L/∂θ_j` under the log parametrisation. Below 0 the count no longer
//! moves with θ, but the kernel's L0 term still pulls θ back up. The kernel reads the
//! pre-activation P, as the paper and SAELens do; the reference code reads `R = max(P, 0)`,
//! which for θ < ε/2 puts every negative pre-activation inside the window (docs/reference.md
//! §4.3).

use candle_core::{DType, Tensor, D};

use crate::sae::config::{JumpreluParam, TrainConfig};
use crate::sae::Result;

/// ε of f32, added to the decoder row norms by the renormalisation (docs/reference.md §4.6).
pub(crate) const EPS_F32: f64 = f32::EPSILON as f64;

/// Name of the threshold parameter in model files and checkpoints.
pub(crate) fn param_name(param: JumpreluParam) -> &'static str {
    match param {
        JumpreluParam::Log => "log_threshold",
        JumpreluParam::Direct => "threshold",
    }
}

/// The renormalisation factors `r_j = ‖W_dec[j]‖ + ε_f32` of `decoder` [n, d].
pub(crate) fn row_factors(decoder: &Tensor) -> Result<Tensor> {
    Ok((decoder.sqr()?.sum(D::Minus1)?.sqrt()? + EPS_F32)?)
}

/// The initial threshold parameter of a model whose decoder is `decoder`: θ₀/r_j, so that the
/// first renormalisation (which multiplies θ_j by r_j, about `init_norm`) leaves every latent
/// at θ₀ in the units of the unit-norm model it trains as from then on.
pub(crate) fn initial_param(config: &TrainConfig, decoder: &Tensor) -> Result<Tensor> {
    let r = row_factors(decoder)?;
    let theta0 = config.jumprelu_theta0;
    Ok(match config.jumprelu_param {
        JumpreluParam::Log => (r.log()?.neg()? + theta0.ln())?,
        JumpreluParam::Direct => (r.recip()? * theta0)?,
    })
}

/// θ from the parameter.
pub(crate) fn theta(param: JumpreluParam, t: &Tensor) -> Result<Tensor> {
    Ok(match param {
        JumpreluParam::Log => t.exp()?,
        JumpreluParam::Direct => t.clone(),
    })
}

/// The parameter after the decoder rows were divided by `r` (and the pre-activations
/// multiplied by it): θ_j·r_j, which keeps every pre-activation where it was relative to its
/// threshold.
pub(crate) fn rescaled(param: JumpreluParam, t: &Tensor, r: &Tensor) -> Result<Tensor> {
    Ok(match param {
        JumpreluParam::Log => (t + r.log()?)?,
        JumpreluParam::Direct => (t * r)?,
    })
}

/// [`rescaled`] in place on host memory.
pub(crate) fn rescale_host(param: JumpreluParam, t: &mut [f32], r: &[f32]) {
    match param {
        JumpreluParam::Log => t.iter_mut().zip(r).for_each(|(v, r)| *v += r.ln()),
        JumpreluParam::Direct => t.iter_mut().zip(r).for_each(|(v, r)| *v *= r),
    }
}

/// The gradient of one latent's threshold parameter from its window sums: `rec_sum`
/// = Σ_i g_ij·rect_ij, `window` = Σ_i rect_ij, over a batch of `b` rows.
pub(crate) fn param_grad(
    param: JumpreluParam,
    theta: f64,
    rec_sum: f64,
    window: f64,
    eps: f64,
    lambda: f64,
    b: f64,
) -> f64 {
    let d_theta = rec_sum * theta.max(0.0) * (-1.0 / eps) + window * (-lambda / (eps * b));
    match param {
        JumpreluParam::Log => d_theta * theta,
        JumpreluParam::Direct => d_theta,
    }
}

/// The gradient of the threshold parameter [n] on a batch with pre-activations `p` [B, n] and
/// code gradient `g` = ∂rec/∂z [B, n]: [`param_grad`] of every latent, as tensor operations.
pub(crate) fn grad(
    config: &TrainConfig,
    theta: &Tensor,
    p: &Tensor,
    g: &Tensor,
    lambda: f64,
) -> Result<Tensor> {
    let eps = config.jumprelu_bandwidth;
    let b = p.dim(0)? as f64;
    let rect = p
        .broadcast_sub(theta)?
        .abs()?
        .lt(eps / 2.0)?
        .to_dtype(DType::F32)?;
    let rec_sum = (g * &rect)?.sum(0)?;
    let window = rect.sum(0)?;
    let d_theta = ((rec_sum * theta.relu()?)? * (-1.0 / eps))?;
    let d_theta = (d_theta + (window * (-lambda / (eps * b)))?)?;
    Ok(match config.jumprelu_param {
        JumpreluParam::Log => (d_theta * theta)?,
        JumpreluParam::Direct => d_theta,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sae::config::{Arch, RecLoss};
    use crate::sae::model::Sae;
    use candle_core::Device;
    use rand::{Rng, SeedableRng};

    #[test]
    fn the_first_renormalisation_lands_on_theta0() {
        // Rows of norms 0.1, 0.5 and 2: after dividing them by r_j (and multiplying θ_j by it)
        // every threshold is θ₀, whichever parametrisation.
        let dev = Device::Cpu;
        let dec = Tensor::new(&[[0.06f32, 0.08], [0.3, -0.4], [0.0, 2.0]], &dev).unwrap();
        for param in [JumpreluParam::Log, JumpreluParam::Direct] {
            let cfg = TrainConfig {
                jumprelu_theta0: 0.25,
                jumprelu_param: param,
                ..Default::default()
            };
            let t = initial_param(&cfg, &dec).unwrap();
            let before = theta(param, &t).unwrap().to_vec1::<f32>().unwrap();
            for (got, norm) in before.iter().zip([0.1f32, 0.5, 2.0]) {
                assert!((got - 0.25 / norm).abs() < 1e-5 * got, "{param:?}: {got}");
            }
            let r = row_factors(&dec).unwrap();
            let after = rescaled(param, &t, &r).unwrap();
            let mut host = t.to_vec1::<f32>().unwrap();
            rescale_host(param, &mut host, &r.to_vec1::<f32>().unwrap());
            let host = Tensor::new(host, &dev).unwrap();
            for th in [theta(param, &after).unwrap(), theta(param, &host).unwrap()] {
                for v in th.to_vec1::<f32>().unwrap() {
                    assert!((v - 0.25).abs() < 1e-6, "{param:?}: {v}");
                }
            }
        }
    }

    #[test]
    fn threshold_gradient_by_hand() {
        // ε = 0.2, λ = 0.3, B = 2. Latent 0 (θ = 0.5): both rows inside the window
        // (|0.55 − 0.5|, |0.45 − 0.5| < 0.1); latent 1 (θ = 0.5): neither; latent 2 (θ = −0.05,
        // acting as 0): row 1's P = −0.1 is inside, row 0's 0.3 is not.
        let dev = Device::Cpu;
        let p = Tensor::new(&[[0.55f32, 2.0, 0.3], [0.45, -1.0, -0.1]], &dev).unwrap();
        let g = Tensor::new(&[[1.0f32, 1.0, 5.0], [2.0, 1.0, 7.0]], &dev).unwrap();
        for (param, want0) in [
            // Latent 0: rec −(θ/ε)(1 + 2) = −7.5, L0 −λ/(ε·B)·2 = −1.5: ∂/∂θ = −9, ∂/∂log θ = −4.5.
            (JumpreluParam::Direct, -9.0),
            (JumpreluParam::Log, -4.5),
        ] {
            let cfg = TrainConfig {
                jumprelu_bandwidth: 0.2,
                jumprelu_param: param,
                ..Default::default()
            };
            let theta = Tensor::new(&[0.5f32, 0.5, -0.05], &dev).unwrap();
            let got = grad(&cfg, &theta, &p, &g, 0.3)
                .unwrap()
                .to_vec1::<f32>()
                .unwrap();
            assert!((got[0] - want0).abs() < 1e-5, "{param:?} {got:?}");
            assert_eq!(got[1], 0.0);
            // Latent 2 (a negative θ exists only when trained directly): θ⁺ = 0 silences the
            // reconstruction part, L0 −0.3/(0.2·2)·1 = −0.75 raises θ back.
            if param == JumpreluParam::Direct {
                assert!((got[2] + 0.75).abs() < 1e-6, "{got:?}");
            }
            for j in 0..3 {
                let (th, rec, win) = [(0.5, 3.0, 2.0), (0.5, 0.0, 0.0), (-0.05, 7.0, 1.0)][j];
                let host = param_grad(param, th, rec, win, 0.2, 0.3, 2.0);
                assert!((host as f32 - got[j]).abs() < 1e-6, "{param:?} latent {j}");
            }
        }
    }

    const LOSSES: [RecLoss; 3] = [RecLoss::Nmse, RecLoss::Mse, RecLoss::Cosine];
    const PARAMS: [JumpreluParam; 2] = [JumpreluParam::Log, JumpreluParam::Direct];

    fn host(t: &Tensor) -> Vec<f64> {
        let v = t.flatten_all().unwrap().to_vec1::<f32>().unwrap();
        v.into_iter().map(f64::from).collect()
    }

    /// A JumpReLU model d → n with random weights, unit decoder rows, random biases and
    /// thresholds spread over the pre-activations (under `direct` also one at 0 and two below
    /// it), λ = 0.05, ε = 0.2; and a batch of `b` rows.
    fn case(param: JumpreluParam, loss: RecLoss, seed: u64) -> (Sae, Tensor) {
        let (d, n, b) = (12, 20, 16);
        let dev = Device::Cpu;
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
        let cfg = TrainConfig {
            arch: Arch::Jumprelu,
            loss,
            n_latents: Some(n),
            sparsity_weight: Some(0.05),
            jumprelu_bandwidth: 0.2,
            jumprelu_param: param,
            ..Default::default()
        };
        let mut m = Sae::new(&cfg, d, &dev).unwrap();
        let mut uniform = |len: usize, lo: f32, hi: f32| -> Vec<f32> {
            (0..len).map(|_| rng.random_range(lo..hi)).collect()
        };
        m.encoder = Tensor::from_vec(uniform(d * n, -0.5, 0.5), (d, n), &dev).unwrap();
        let dec = Tensor::from_vec(uniform(n * d, -1.0, 1.0), (n, d), &dev).unwrap();
        m.decoder = dec
            .broadcast_div(&row_factors(&dec).unwrap().unsqueeze(1).unwrap())
            .unwrap();
        m.pre_bias = Tensor::from_vec(uniform(d, -0.1, 0.1), d, &dev).unwrap();
        m.latent_bias = Tensor::from_vec(uniform(n, -0.3, 0.2), n, &dev).unwrap();
        let mut theta = uniform(n, 0.05, 0.5);
        if param == JumpreluParam::Direct {
            theta[..3].copy_from_slice(&[0.0, -0.05, -0.3]);
        }
        let theta = Tensor::from_vec(theta, n, &dev).unwrap();
        m.threshold_param = Some(match param {
            JumpreluParam::Log => theta.log().unwrap(),
            JumpreluParam::Direct => theta,
        });
        let x = Tensor::from_vec(uniform(b * d, -1.0, 1.0), (b, d), &dev).unwrap();
        (m, x)
    }

    /// The model's parameters in f64, row-major, in optimiser order, θ beside them.
    #[derive(Clone)]
    struct Params {
        d: usize,
        n: usize,
        pre: Vec<f64>,
        enc: Vec<f64>,
        lat: Vec<f64>,
        dec: Vec<f64>,
        theta: Vec<f64>,
    }

    impl Params {
        fn of(m: &Sae) -> Self {
            Params {
                d: m.d,
                n: m.n,
                pre: host(&m.pre_bias),
                enc: host(&m.encoder),
                lat: host(&m.latent_bias),
                dec: host(&m.decoder),
                theta: host(&m.thresholds().unwrap().unwrap()),
            }
        }

        /// The weights and biases in optimiser order.
        fn weight_mut(&mut self, i: usize) -> &mut Vec<f64> {
            [&mut self.pre, &mut self.enc, &mut self.lat, &mut self.dec]
                .into_iter()
                .nth(i)
                .expect("four weights")
        }

        /// Pre-activations P [B, n] of the rows `x` [B, d].
        fn pre_activations(&self, x: &[f64]) -> Vec<f64> {
            let (d, n) = (self.d, self.n);
            let mut p = vec![0f64; x.len() / d * n];
            for (row, out) in x.chunks(d).zip(p.chunks_mut(n)) {
                for (j, o) in out.iter_mut().enumerate() {
                    *o = self.lat[j]
                        + (0..d)
                            .map(|k| (row[k] - self.pre[k]) * self.enc[k * n + j])
                            .sum::<f64>();
                }
            }
            p
        }

        /// Reconstructions `z·W_dec + b_pre` of the codes `z` [B, n].
        fn decode(&self, z: &[f64]) -> Vec<f64> {
            let (d, n) = (self.d, self.n);
            let mut out = vec![0f64; z.len() / n * d];
            for (zr, o) in z.chunks(n).zip(out.chunks_mut(d)) {
                for (k, v) in o.iter_mut().enumerate() {
                    *v = self.pre[k] + (0..n).map(|j| zr[j] * self.dec[j * d + k]).sum::<f64>();
                }
            }
            out
        }
    }

    /// Reconstruction loss of `xh` against `x` (rows of width d) and its gradient in x̂.
    fn rec64(kind: RecLoss, xh: &[f64], x: &[f64], d: usize) -> (f64, Vec<f64>) {
        let b = (x.len() / d) as f64;
        let mut grad = vec![0f64; x.len()];
        let mut value = 0.0;
        for ((h, xr), g) in xh.chunks(d).zip(x.chunks(d)).zip(grad.chunks_mut(d)) {
            let e2: f64 = h.iter().zip(xr).map(|(a, c)| (a - c) * (a - c)).sum();
            let x2: f64 = xr.iter().map(|v| v * v).sum();
            let h2: f64 = h.iter().map(|v| v * v).sum();
            let dot: f64 = h.iter().zip(xr).map(|(a, c)| a * c).sum();
            match kind {
                RecLoss::Mse => {
                    value += e2 / (b * d as f64);
                    for k in 0..d {
                        g[k] = 2.0 * (h[k] - xr[k]) / (b * d as f64);
                    }
                }
                RecLoss::Nmse => {
                    value += e2 / x2 / b;
                    for k in 0..d {
                        g[k] = 2.0 * (h[k] - xr[k]) / (x2 * b);
                    }
                }
                RecLoss::Cosine => {
                    let (nx, nh) = (x2.sqrt(), h2.sqrt());
                    let c = dot / (nx * nh);
                    value += (1.0 - c) * (1.0 - c) / b;
                    for k in 0..d {
                        let dc = xr[k] / (nx * nh) - c * h[k] / h2;
                        g[k] = -2.0 * (1.0 - c) * dc / b;
                    }
                }
            }
        }
        (value, grad)
    }

    /// The JumpReLU loss `rec + λ·(1/B)·Σ H(P − θ⁺)` of the weights `w` on the rows `x` and its
    /// gradients (optimiser order, the threshold's by the straight-through rule in the
    /// parametrisation of `cfg`), all in f64.
    fn reference(cfg: &TrainConfig, w: &Params, x: &[f64]) -> (f64, Vec<Vec<f64>>) {
        let (lambda, eps) = (cfg.sparsity_weight(), cfg.jumprelu_bandwidth);
        let (d, n) = (w.d, w.n);
        let b = x.len() / d;
        let p = w.pre_activations(x);
        let on = |i: usize| p[i] > w.theta[i % n].max(0.0);
        let z: Vec<f64> = (0..b * n).map(|i| if on(i) { p[i] } else { 0.0 }).collect();
        let l0 = (0..b * n).filter(|&i| on(i)).count() as f64 / b as f64;
        let (rec, gx) = rec64(cfg.loss, &w.decode(&z), x, d);
        let mut gz = vec![0f64; b * n];
        for i in 0..b {
            for j in 0..n {
                gz[i * n + j] = (0..d).map(|k| gx[i * d + k] * w.dec[j * d + k]).sum();
            }
        }
        let dp: Vec<f64> = (0..b * n)
            .map(|i| if on(i) { gz[i] } else { 0.0 })
            .collect();
        let g_lat: Vec<f64> = (0..n)
            .map(|j| (0..b).map(|i| dp[i * n + j]).sum())
            .collect();
        let mut g_enc = vec![0f64; d * n];
        let mut g_dec = vec![0f64; n * d];
        for i in 0..b {
            for k in 0..d {
                for j in 0..n {
                    g_enc[k * n + j] += (x[i * d + k] - w.pre[k]) * dp[i * n + j];
                    g_dec[j * d + k] += z[i * n + j] * gx[i * d + k];
                }
            }
        }
        let g_pre: Vec<f64> = (0..d)
            .map(|k| {
                let direct: f64 = (0..b).map(|i| gx[i * d + k]).sum();
                direct - (0..n).map(|j| w.enc[k * n + j] * g_lat[j]).sum::<f64>()
            })
            .collect();
        let g_theta: Vec<f64> = (0..n)
            .map(|j| {
                let th = w.theta[j];
                let inside = |i: usize| (p[i * n + j] - th).abs() < eps / 2.0;
                let rec_sum: f64 = (0..b).filter(|&i| inside(i)).map(|i| gz[i * n + j]).sum();
                let count = (0..b).filter(|&i| inside(i)).count() as f64;
                let d_theta = -(th.max(0.0) / eps) * rec_sum - lambda / (eps * b as f64) * count;
                match cfg.jumprelu_param {
                    JumpreluParam::Log => th * d_theta,
                    JumpreluParam::Direct => d_theta,
                }
            })
            .collect();
        (rec + lambda * l0, vec![g_pre, g_enc, g_lat, g_dec, g_theta])
    }

    fn assert_close(got: &[f64], want: &[f64], what: &str) {
        assert_eq!(got.len(), want.len(), "{what}");
        let scale = want.iter().fold(0f64, |a, v| a.max(v.abs()));
        for (i, (g, w)) in got.iter().zip(want).enumerate() {
            assert!(
                (g - w).abs() <= 1e-5 * scale + 1e-4 * w.abs(),
                "{what}[{i}]: {g} vs {w}"
            );
        }
    }

    #[test]
    fn loss_and_gradients_match_a_float64_reference() {
        // The tensor backward pass and the CPU fast path (both products) against the f64
        // formulas above, for each parametrisation and reconstruction loss.
        for param in PARAMS {
            for kind in LOSSES {
                let (m, x) = case(param, kind, 3);
                let (want_loss, want) = reference(&m.config, &Params::of(&m), &host(&x));
                let fwd = m.forward_train(&x).unwrap();
                let (parts, grads) = m.loss_and_grads(&fwd, None).unwrap();
                let fast = crate::sae::kernels::sparse::loss_and_grads(&m, &x, None, &[]).unwrap();
                for (path, total, grads) in [
                    ("tensor", &parts.total, &grads),
                    ("fast", &fast.0.total, &fast.1),
                ] {
                    let what = format!("{param:?} {kind:?} {path}");
                    let loss = total.to_scalar::<f32>().unwrap() as f64;
                    assert!(
                        (loss - want_loss).abs() < 1e-5 * want_loss,
                        "{what}: {loss}"
                    );
                    assert_eq!(grads.0.len(), 5, "{what}");
                    for (i, (g, w)) in grads.0.iter().zip(&want).enumerate() {
                        assert_close(&host(g), w, &format!("{what} grad {i}"));
                    }
                }
                // The thresholds take part: some gradient entries are not zero.
                assert!(want[4].iter().filter(|v| v.abs() > 1e-6).count() >= 5);
            }
        }
    }

    #[test]
    fn the_reference_gradients_are_the_derivatives_of_its_loss() {
        // Central differences of the f64 loss in every weight and bias: the code is constant
        // near the batch's pre-activations (none within 10⁻⁴ of its threshold), so these are
        // true derivatives.
        for param in PARAMS {
            for kind in LOSSES {
                let (m, x) = case(param, kind, 3);
                let (w, x) = (Params::of(&m), host(&x));
                let p = w.pre_activations(&x);
                let gap = (0..p.len())
                    .map(|i| (p[i] - w.theta[i % w.n].max(0.0)).abs())
                    .fold(f64::MAX, f64::min);
                assert!(gap > 1e-4, "a pre-activation sits on its threshold: {gap}");
                let (_, grads) = reference(&m.config, &w, &x);
                for (pi, g) in grads.iter().enumerate().take(4) {
                    for (idx, &want) in g.iter().enumerate() {
                        let at = |delta: f64| {
                            let mut moved = w.clone();
                            moved.weight_mut(pi)[idx] += delta;
                            reference(&m.config, &moved, &x).0
                        };
                        let h = 1e-6;
                        let fd = (at(h) - at(-h)) / (2.0 * h);
                        assert!(
                            (want - fd).abs() < 1e-7 + 1e-6 * fd.abs(),
                            "{param:?} {kind:?} param {pi}[{idx}]: {want} vs {fd}"
                        );
                    }
                }
            }
        }
    }

    /// The smoothed loss whose derivative in the threshold parameter the straight-through rule
    /// is: every step H(P − θ) replaced by S((P − θ)/ε), S(u) = clamp(u + ½, 0, 1) (the
    /// integral of the rectangle kernel), in the code with the jump height θ⁺ of the point
    /// `at` held fixed and in the L0 term as it is; `t` the threshold parameters.
    fn smoothed(m: &Sae, x: &[f64], at: &[f64], t: &[f64]) -> f64 {
        let cfg = &m.config;
        let (lambda, eps) = (cfg.sparsity_weight(), cfg.jumprelu_bandwidth);
        let w = Params::of(m);
        let (d, n) = (w.d, w.n);
        let b = x.len() / d;
        let p = w.pre_activations(x);
        let s = |u: f64| (u / eps + 0.5).clamp(0.0, 1.0);
        let theta: Vec<f64> = match cfg.jumprelu_param {
            JumpreluParam::Log => t.iter().map(|v| v.exp()).collect(),
            JumpreluParam::Direct => t.to_vec(),
        };
        let mut z = vec![0f64; b * n];
        let mut l0 = 0.0;
        for i in 0..b * n {
            let j = i % n;
            let jump = at[j].max(0.0);
            let kept = if p[i] > jump { p[i] } else { 0.0 };
            z[i] = kept + jump * (s(p[i] - theta[j]) - s(p[i] - at[j]));
            l0 += s(p[i] - theta[j]);
        }
        rec64(cfg.loss, &w.decode(&z), x, d).0 + lambda * l0 / b as f64
    }

    #[test]
    fn the_threshold_gradient_is_the_derivative_of_the_smoothed_loss() {
        // Central differences of the smoothed loss in each threshold parameter (log θ or θ)
        // against the model's threshold gradient, tensor path and fast path. S is linear
        // inside the window, so the differences are exact unless an entry sits on a window
        // edge, which the check below rules out.
        for param in PARAMS {
            for kind in LOSSES {
                let (m, x) = case(param, kind, 3);
                let xs = host(&x);
                let w = Params::of(&m);
                let eps = m.config.jumprelu_bandwidth;
                let p = w.pre_activations(&xs);
                let edge = (0..p.len())
                    .map(|i| ((p[i] - w.theta[i % w.n]).abs() - eps / 2.0).abs())
                    .fold(f64::MAX, f64::min);
                assert!(edge > 1e-4, "an entry sits on a window edge: {edge}");
                let t0 = host(m.threshold_param.as_ref().unwrap());
                let fwd = m.forward_train(&x).unwrap();
                let tensor = host(&m.loss_and_grads(&fwd, None).unwrap().1 .0[4]);
                let fast = crate::sae::kernels::sparse::loss_and_grads(&m, &x, None, &[]).unwrap();
                let fast = host(&fast.1 .0[4]);
                let mut nonzero = 0;
                for j in 0..w.n {
                    let h = 1e-6;
                    let (mut plus, mut minus) = (t0.clone(), t0.clone());
                    plus[j] += h;
                    minus[j] -= h;
                    let fd = (smoothed(&m, &xs, &w.theta, &plus)
                        - smoothed(&m, &xs, &w.theta, &minus))
                        / (2.0 * h);
                    nonzero += (fd.abs() > 1e-4) as usize;
                    for (path, g) in [("tensor", tensor[j]), ("fast", fast[j])] {
                        assert!(
                            (g - fd).abs() < 1e-5 + 1e-4 * fd.abs(),
                            "{param:?} {kind:?} {path} latent {j}: {g} vs {fd}"
                        );
                    }
                }
                assert!(
                    nonzero >= 5,
                    "{param:?} {kind:?}: only {nonzero} thresholds move"
                );
            }
        }
    }
}
