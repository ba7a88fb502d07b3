//! Losses of §5 with their analytic gradients (the trainer back-propagates by hand).
//!
//! Every function returns the scalar loss as a 0-d tensor (kept on the device, so the hot path
//! does not synchronise) and, when asked, the gradient with respect to its first argument.

use candle_core::{DType, Tensor, D};

use super::config::RecLoss;
use super::Result;

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
