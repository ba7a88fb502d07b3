//! Losses of docs/reference.md §5 with their analytic gradients (the trainer back-propagates by
//! hand).
//!
//! Every function returns the scalar loss as a 0-d tensor (kept on the device, so the hot path
//! does not synchronise) and, when asked, the gradient with respect to its first argument.

use candle_core::{DType, Tensor, D};

use crate::sae::config::RecLoss;
use crate::sae::Result;

/// Loss value and optional gradient.
pub struct LossGrad {
    /// Scalar (0-d) loss.
    pub value: Tensor,
    /// d loss / d input, same shape as the input.
    pub grad: Option<Tensor>,
}

/// Reconstruction loss of `xhat` against `x` ([B, d]).
///
/// * `mse`: mean over all entries of the squared error.
/// * `nmse`: per sample `Σ_j (x̂−x)² / Σ_j (m−x)²`, averaged over samples; `m` is `reference`
///   (zero when `None`, i.e. mean-centred data).
/// * `cosine`: mean over samples of `(1 − cos(x, x̂))²` (no epsilon, as in the reference).
pub fn reconstruction(
    kind: RecLoss,
    xhat: &Tensor,
    x: &Tensor,
    reference: Option<&Tensor>,
    with_grad: bool,
) -> Result<LossGrad> {
    let (b, d) = x.dims2()?;
    let diff = (xhat - x)?;
    match kind {
        RecLoss::Mse => {
            let value = diff.sqr()?.mean_all()?;
            let grad = if with_grad {
                Some((&diff * (2.0 / (b * d) as f64))?)
            } else {
                None
            };
            Ok(LossGrad { value, grad })
        }
        RecLoss::Nmse => {
            let den = match reference {
                Some(m) => x.broadcast_sub(m)?.sqr()?.sum_keepdim(1)?,
                None => x.sqr()?.sum_keepdim(1)?,
            };
            let num = diff.sqr()?.sum_keepdim(1)?;
            let value = (num / &den)?.mean_all()?;
            let grad = if with_grad {
                Some(diff.broadcast_div(&(den * (b as f64 / 2.0))?)?)
            } else {
                None
            };
            Ok(LossGrad { value, grad })
        }
        RecLoss::Cosine => {
            let nx = x.sqr()?.sum_keepdim(1)?.sqrt()?;
            let nh = xhat.sqr()?.sum_keepdim(1)?.sqrt()?;
            let dot = (x * xhat)?.sum_keepdim(1)?;
            let nxnh = (&nx * &nh)?;
            let c = (&dot / &nxnh)?;
            let one_minus = (1.0 - &c)?;
            let value = one_minus.sqr()?.mean_all()?;
            let grad = if with_grad {
                // d(1−c)²/dx̂ = −2(1−c)·(x/(‖x‖‖x̂‖) − c·x̂/‖x̂‖²), averaged over B.
                let dc = (x.broadcast_div(&nxnh)? - xhat.broadcast_mul(&(&c / nh.sqr()?)?)?)?;
                Some(dc.broadcast_mul(&(one_minus * (-2.0 / b as f64))?)?)
            } else {
                None
            };
            Ok(LossGrad { value, grad })
        }
    }
}

/// Weighted sum over nested levels of [`reconstruction`], computed on host slices row by row
/// in parallel (the CPU fast path): `recon` is [L, B, d], `x` is [B, d], `reference` the nmse
/// reference vector (length d) or None. Returns Σ_l w_l ℓ_l and writes the suffix sums
/// C_l = Σ_{i ≥ l} w_i ∂ℓ_i/∂X̂_i into `c` as [B, L, d] (row r's levels contiguous), the same
/// values as [`reconstruction`] per level (sums accumulated in f64).
pub fn nested_levels(
    kind: RecLoss,
    recon: &[f32],
    x: &[f32],
    reference: Option<&[f32]>,
    weights: &[f64],
    d: usize,
    c: &mut [f32],
) -> f64 {
    use rayon::prelude::*;
    let nl = weights.len();
    let b = x.len() / d.max(1);
    assert_eq!(c.len(), b * nl * d, "C must be [B, L, d]");
    assert_eq!(recon.len(), b * nl * d, "reconstructions must be [L, B, d]");
    let bd = (b * d) as f64;
    c.par_chunks_mut(nl * d)
        .enumerate()
        .map(|(r, cr)| {
            let xr = &x[r * d..(r + 1) * d];
            let mut loss = 0.0;
            for l in (0..nl).rev() {
                let xh = &recon[(l * b + r) * d..(l * b + r + 1) * d];
                let w = weights[l];
                // Per-row loss share and gradient factor: grad = α·(x̂ − x) + β·x + γ·x̂.
                let (value, alpha, beta, gamma) = match kind {
                    RecLoss::Mse => {
                        let num: f64 = sq_dist(xh, xr);
                        (num / bd, 2.0 / bd, 0.0, 0.0)
                    }
                    RecLoss::Nmse => {
                        let den: f64 = match reference {
                            Some(m) => sq_dist(xr, m),
                            None => xr.iter().map(|&v| v as f64 * v as f64).sum(),
                        };
                        let num = sq_dist(xh, xr);
                        (num / den / b as f64, 2.0 / (den * b as f64), 0.0, 0.0)
                    }
                    RecLoss::Cosine => {
                        let nx = xr.iter().map(|&v| v as f64 * v as f64).sum::<f64>().sqrt();
                        let nh = xh.iter().map(|&v| v as f64 * v as f64).sum::<f64>().sqrt();
                        let dot: f64 = xr.iter().zip(xh).map(|(&a, &h)| a as f64 * h as f64).sum();
                        let cos = dot / (nx * nh);
                        let f = -2.0 * (1.0 - cos) / b as f64;
                        (
                            (1.0 - cos) * (1.0 - cos) / b as f64,
                            0.0,
                            f / (nx * nh),
                            -f * cos / (nh * nh),
                        )
                    }
                };
                loss += w * value;
                let (a, be, g) = ((w * alpha) as f32, (w * beta) as f32, (w * gamma) as f32);
                let (lower, upper) = cr.split_at_mut((l + 1) * d);
                let cl = &mut lower[l * d..];
                for k in 0..d {
                    let above = if l + 1 < nl { upper[k] } else { 0.0 };
                    cl[k] = above + a * (xh[k] - xr[k]) + be * xr[k] + g * xh[k];
                }
            }
            loss
        })
        .sum()
}

fn sq_dist(a: &[f32], b: &[f32]) -> f64 {
    a.iter()
        .zip(b)
        .map(|(&p, &q)| {
            let t = p as f64 - q as f64;
            t * t
        })
        .sum()
}

/// L1 sparsity `(1/B) Σ_i ‖z_i‖₁ / ‖x_i‖₂` (x = standardised input) and its gradient w.r.t. z.
pub fn l1(z: &Tensor, x: &Tensor, with_grad: bool) -> Result<LossGrad> {
    let b = z.dim(0)?;
    let xn = x.sqr()?.sum_keepdim(1)?.sqrt()?;
    let value = z.abs()?.sum_keepdim(1)?.broadcast_div(&xn)?.mean_all()?;
    let grad = if with_grad {
        let sign = (z.gt(0f32)?.to_dtype(DType::F32)? - z.lt(0f32)?.to_dtype(DType::F32)?)?;
        Some(sign.broadcast_div(&(xn * b as f64)?)?)
    } else {
        None
    };
    Ok(LossGrad { value, grad })
}

/// Reference "l0": `(1/B) Σ_ij z_ij`, meaningful on a 0/1 step code (mean active count).
pub fn l0(step: &Tensor) -> Result<Tensor> {
    let b = step.dim(0)?;
    Ok((step.sum_all()? / b as f64)?)
}

/// Mean number of non-zero entries per row.
pub fn mean_active(z: &Tensor) -> Result<Tensor> {
    Ok(z.ne(0f32)?
        .to_dtype(DType::F32)?
        .sum(D::Minus1)?
        .mean_all()?)
}

/// Matryoshka level weights normalised to sum 1.
pub fn normalised_weights(w: &[f64]) -> Vec<f64> {
    let s: f64 = w.iter().sum();
    w.iter().map(|x| x / s).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sae::test_support::rows as t;
    use candle_core::Device;

    fn s(t: &Tensor) -> f64 {
        t.to_scalar::<f32>().unwrap() as f64
    }

    const X: [[f32; 3]; 2] = [[1.0, 2.0, 2.0], [0.0, -3.0, 4.0]];
    const XH: [[f32; 3]; 2] = [[1.5, 2.0, 1.0], [1.0, -3.0, 3.0]];

    fn loss64(kind: RecLoss, xh: &[[f64; 3]; 2]) -> f64 {
        let mut tot = 0.0;
        for i in 0..2 {
            let x: Vec<f64> = X[i].iter().map(|&v| v as f64).collect();
            let h = &xh[i];
            let e2: f64 = (0..3).map(|j| (h[j] - x[j]).powi(2)).sum();
            let x2: f64 = x.iter().map(|v| v * v).sum();
            let h2: f64 = h.iter().map(|v| v * v).sum();
            let dot: f64 = (0..3).map(|j| h[j] * x[j]).sum();
            tot += match kind {
                RecLoss::Mse => e2 / 6.0 * 2.0,
                RecLoss::Nmse => e2 / x2,
                RecLoss::Cosine => (1.0 - dot / (x2.sqrt() * h2.sqrt())).powi(2),
            };
        }
        tot / 2.0
    }

    #[test]
    fn reconstruction_values_and_gradients_match_float64() {
        let x = t(&[&X[0], &X[1]]);
        let xh = t(&[&XH[0], &XH[1]]);
        let base: [[f64; 3]; 2] = [
            [XH[0][0] as f64, XH[0][1] as f64, XH[0][2] as f64],
            [XH[1][0] as f64, XH[1][1] as f64, XH[1][2] as f64],
        ];
        // Hand values: nmse = (1.25/9 + 2/25)/2; mse = (1.25 + 2)/6.
        assert!((loss64(RecLoss::Nmse, &base) - (1.25 / 9.0 + 2.0 / 25.0) / 2.0).abs() < 1e-12);
        assert!((loss64(RecLoss::Mse, &base) - 3.25 / 6.0).abs() < 1e-12);
        for kind in [RecLoss::Mse, RecLoss::Nmse, RecLoss::Cosine] {
            let lg = reconstruction(kind, &xh, &x, None, true).unwrap();
            assert!(
                (s(&lg.value) - loss64(kind, &base)).abs() < 1e-6,
                "{kind:?}"
            );
            let g = lg.grad.unwrap().to_vec2::<f32>().unwrap();
            for i in 0..2 {
                for j in 0..3 {
                    let h = 1e-6;
                    let mut p = base;
                    p[i][j] += h;
                    let mut m = base;
                    m[i][j] -= h;
                    let fd = (loss64(kind, &p) - loss64(kind, &m)) / (2.0 * h);
                    assert!((g[i][j] as f64 - fd).abs() < 1e-5, "{kind:?} {i} {j}");
                }
            }
        }
    }

    #[test]
    fn nested_levels_match_the_tensor_losses() {
        // Three levels of reconstructions of two rows, unequal weights, with and without an
        // nmse reference: the value is Σ w_l ℓ_l and C_l the suffix sums of w_i ∂ℓ_i/∂X̂_i.
        let x = t(&[&X[0], &X[1]]);
        let levels = [
            t(&[&XH[0], &XH[1]]),
            t(&[&[1.0, 1.5, 2.5], &[0.5, -2.0, 4.5]]),
            t(&[&[0.9, 2.1, 2.0], &[0.1, -2.9, 3.8]]),
        ];
        let weights = [0.5, 0.25, 2.0];
        let recon: Vec<f32> = levels
            .iter()
            .flat_map(|l| l.flatten_all().unwrap().to_vec1::<f32>().unwrap())
            .collect();
        let xs = x.flatten_all().unwrap().to_vec1::<f32>().unwrap();
        let m = Tensor::new(&[1.0f32, 0.0, -0.5], &Device::Cpu).unwrap();
        let mv = m.to_vec1::<f32>().unwrap();
        for kind in [RecLoss::Mse, RecLoss::Nmse, RecLoss::Cosine] {
            for reference in [None, Some(&m)] {
                let mut c = vec![0f32; 2 * 3 * 3];
                let total = nested_levels(
                    kind,
                    &recon,
                    &xs,
                    reference.map(|_| &mv[..]),
                    &weights,
                    3,
                    &mut c,
                );
                let mut want_total = 0.0;
                let mut suffix = vec![vec![0f64; 6]; 4];
                for l in (0..3).rev() {
                    let lg = reconstruction(kind, &levels[l], &x, reference, true).unwrap();
                    want_total += weights[l] * s(&lg.value);
                    let g = lg
                        .grad
                        .unwrap()
                        .flatten_all()
                        .unwrap()
                        .to_vec1::<f32>()
                        .unwrap();
                    suffix[l] = (0..6)
                        .map(|i| suffix[l + 1][i] + weights[l] * g[i] as f64)
                        .collect();
                }
                assert!((total - want_total).abs() < 1e-6, "{kind:?} total");
                for r in 0..2 {
                    for l in 0..3 {
                        for k in 0..3 {
                            let got = c[(r * 3 + l) * 3 + k] as f64;
                            let want = suffix[l][r * 3 + k];
                            assert!((got - want).abs() < 1e-5, "{kind:?} {r} {l} {k}");
                        }
                    }
                }
            }
        }
    }

    #[test]
    fn nmse_with_reference_vector() {
        let x = t(&[&X[0], &X[1]]);
        let xh = t(&[&XH[0], &XH[1]]);
        let m = Tensor::new(&[1.0f32, 0.0, 0.0], &Device::Cpu).unwrap();
        let v = s(&reconstruction(RecLoss::Nmse, &xh, &x, Some(&m), false)
            .unwrap()
            .value);
        // Denominators: (0+4+4)=8 and (1+9+16)=26.
        assert!((v - (1.25 / 8.0 + 2.0 / 26.0) / 2.0).abs() < 1e-6);
    }

    #[test]
    fn l1_and_l0() {
        let x = t(&[&X[0], &X[1]]);
        let z = t(&[&[0.0, 2.0, -1.0, 0.0], &[1.0, 0.0, 0.0, 4.0]]);
        let lg = l1(&z, &x, true).unwrap();
        assert!((s(&lg.value) - (3.0 / 3.0 + 5.0 / 5.0) / 2.0).abs() < 1e-6);
        let g = lg.grad.unwrap().to_vec2::<f32>().unwrap();
        assert_eq!(g[0], vec![0.0, 1.0 / 6.0, -1.0 / 6.0, 0.0]);
        assert_eq!(g[1], vec![0.1, 0.0, 0.0, 0.1]);
        let step = t(&[&[0.0, 1.0, 1.0, 0.0], &[1.0, 0.0, 0.0, 0.0]]);
        assert_eq!(s(&l0(&step).unwrap()), 1.5);
        assert_eq!(s(&mean_active(&z).unwrap()), 2.0);
        assert_eq!(normalised_weights(&[3.0, 1.0]), vec![0.75, 0.25]);
    }
}
