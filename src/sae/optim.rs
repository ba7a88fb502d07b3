//! Adam(W) with PyTorch semantics and global gradient-norm clipping, over plain candle tensors so
//! that the whole state (m, v, step) can be checkpointed and restored exactly.

use candle_core::Tensor;

use crate::sae::kernels::host::{is_host_f32, with_slice, with_slice_mut};
use crate::sae::Result;

/// Adam / AdamW state (PyTorch `torch.optim.AdamW`, single-tensor implementation).
///
/// Per step t (1-based) with gradient g and learning rate lr:
/// `p ← p·(1 − lr·wd)`; `m ← m + (1 − β1)(g − m)`; `v ← β2·v + (1 − β2)·g²`;
/// `p ← p − (lr / (1 − β1^t)) · m / (√v / √(1 − β2^t) + eps)`.
#[derive(Debug)]
pub struct Adam {
    pub beta1: f64,
    pub beta2: f64,
    pub eps: f64,
    pub weight_decay: f64,
    /// Number of steps taken so far.
    pub step: u64,
    /// First moments, one per parameter.
    pub m: Vec<Tensor>,
    /// Second moments, one per parameter.
    pub v: Vec<Tensor>,
}

impl Adam {
    /// Fresh state (zero moments) for `params`.
    pub fn new(
        params: &[&Tensor],
        beta1: f64,
        beta2: f64,
        eps: f64,
        weight_decay: f64,
    ) -> Result<Self> {
        let m = params
            .iter()
            .map(|p| p.zeros_like())
            .collect::<candle_core::Result<Vec<_>>>()?;
        // Separate storage for each moment: the host update writes them in place.
        let v = params
            .iter()
            .map(|p| p.zeros_like())
            .collect::<candle_core::Result<Vec<_>>>()?;
        Ok(Adam {
            beta1,
            beta2,
            eps,
            weight_decay,
            step: 0,
            m,
            v,
        })
    }

    /// One update of every parameter with its gradient.
    pub fn step(&mut self, params: &mut [&mut Tensor], grads: &[Tensor], lr: f64) -> Result<()> {
        self.step_scaled(params, grads, lr, None)
    }

    /// One update of every parameter with its gradient multiplied by `grad_scale` (the
    /// clipping factor, applied inside the update rather than as a pass of its own). Host
    /// tensors are updated in place, parameters and moments alike.
    pub fn step_scaled(
        &mut self,
        params: &mut [&mut Tensor],
        grads: &[Tensor],
        lr: f64,
        grad_scale: Option<f32>,
    ) -> Result<()> {
        if params.len() != grads.len() || params.len() != self.m.len() {
            return Err(crate::sae::SaeError::Config(format!(
                "optimizer holds {} tensors, got {} parameters and {} gradients",
                self.m.len(),
                params.len(),
                grads.len()
            )));
        }
        self.step += 1;
        let t = self.step as i32;
        let bc1 = 1.0 - self.beta1.powi(t);
        let bc2 = 1.0 - self.beta2.powi(t);
        let k = Constants {
            decay: (1.0 - lr * self.weight_decay) as f32,
            weight_decay: self.weight_decay != 0.0,
            one_minus_beta1: (1.0 - self.beta1) as f32,
            beta2: self.beta2 as f32,
            one_minus_beta2: (1.0 - self.beta2) as f32,
            inv_bc2_sqrt: (1.0 / bc2.sqrt()) as f32,
            eps: self.eps as f32,
            step_size: (lr / bc1) as f32,
            grad_scale: grad_scale.unwrap_or(1.0),
        };
        for (i, (p, g)) in params.iter_mut().zip(grads).enumerate() {
            if self.step_host(p, g, i, &k)? {
                continue;
            }
            let g = match grad_scale {
                Some(s) => g.affine(s as f64, 0.0)?,
                None => g.clone(),
            };
            if self.weight_decay != 0.0 {
                **p = p.affine(1.0 - lr * self.weight_decay, 0.0)?;
            }
            // lerp: m + (1 − β1)(g − m)
            let m = ((&g - &self.m[i])?.affine(1.0 - self.beta1, 0.0)? + &self.m[i])?;
            let v =
                (self.v[i].affine(self.beta2, 0.0)? + g.sqr()?.affine(1.0 - self.beta2, 0.0)?)?;
            let denom = v.sqrt()?.affine(1.0 / bc2.sqrt(), self.eps)?;
            let upd = (&m / denom)?.affine(lr / bc1, 0.0)?;
            **p = (&**p - upd)?;
            self.m[i] = m;
            self.v[i] = v;
        }
        Ok(())
    }

    /// The same update as the tensor-op path in one pass over host memory, in place; false
    /// (nothing changed) unless the parameter, gradient and moments are contiguous f32 host
    /// tensors.
    fn step_host(&self, p: &Tensor, g: &Tensor, i: usize, k: &Constants) -> Result<bool> {
        use rayon::prelude::*;
        let (m, v) = (&self.m[i], &self.v[i]);
        if ![p, g, m, v].into_iter().all(is_host_f32) {
            return Ok(false);
        }
        let len = p.elem_count();
        if [g, m, v].into_iter().any(|t| t.elem_count() != len) {
            return Err(crate::sae::SaeError::Config(format!(
                "optimizer tensor {i}: parameter, gradient and moments differ in size"
            )));
        }
        with_slice(g, |gv| {
            with_slice_mut(p, |pv| {
                with_slice_mut(m, |mv| {
                    with_slice_mut(v, |vv| {
                        pv.par_chunks_mut(CHUNK)
                            .zip(mv.par_chunks_mut(CHUNK))
                            .zip(vv.par_chunks_mut(CHUNK))
                            .zip(gv.par_chunks(CHUNK))
                            .for_each(|(((pc, mc), vc), gc)| k.update(pc, gc, mc, vc));
                    })
                })
            })
        })????;
        Ok(true)
    }
}

/// Elements per parallel task of the host update.
const CHUNK: usize = 4096;

/// The scalars of one Adam step, in f32 as the host update uses them.
struct Constants {
    decay: f32,
    weight_decay: bool,
    one_minus_beta1: f32,
    beta2: f32,
    one_minus_beta2: f32,
    inv_bc2_sqrt: f32,
    eps: f32,
    step_size: f32,
    grad_scale: f32,
}

impl Constants {
    /// Updates parameters `p` and moments `m`, `v` with gradients `g`, element by element.
    fn update(&self, p: &mut [f32], g: &[f32], m: &mut [f32], v: &mut [f32]) {
        for (((p, &g), m), v) in p.iter_mut().zip(g).zip(m).zip(v) {
            if self.weight_decay {
                *p *= self.decay;
            }
            let g = g * self.grad_scale;
            *m += (g - *m) * self.one_minus_beta1;
            *v = *v * self.beta2 + g * g * self.one_minus_beta2;
            let denom = v.sqrt() * self.inv_bc2_sqrt + self.eps;
            *p -= (*m / denom) * self.step_size;
        }
    }
}

/// Scale all gradients by `min(1, max_norm / (‖g‖ + 1e-6))` where ‖g‖ is the L2 norm over all
/// of them together (PyTorch `clip_grad_norm_`). Returns the total norm before clipping as a
/// 0-d tensor. `max_norm ≤ 0` disables clipping.
pub fn clip_grad_norm(grads: &mut [Tensor], max_norm: f64) -> Result<Tensor> {
    let mut sq = Vec::with_capacity(grads.len());
    for g in grads.iter() {
        sq.push(g.sqr()?.sum_all()?);
    }
    let total = Tensor::stack(&sq, 0)?.sum_all()?.sqrt()?;
    if max_norm > 0.0 {
        let coef = ((total.affine(1.0, 1e-6)?.recip()? * max_norm)?).minimum(1f32)?;
        for g in grads.iter_mut() {
            *g = g.broadcast_mul(&coef)?;
        }
    }
    Ok(total)
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    #[test]
    fn one_and_two_steps_by_hand() {
        let mut p = Tensor::new(&[1.0f32, -2.0, 0.5], &Device::Cpu).unwrap();
        let g = Tensor::new(&[0.5f32, -0.25, 0.0], &Device::Cpu).unwrap();
        let mut opt = Adam::new(&[&p], 0.9, 0.999, 1e-8, 0.0).unwrap();
        opt.step(&mut [&mut p], std::slice::from_ref(&g), 0.1)
            .unwrap();
        // Step 1: m̂ = g, v̂ = g², update = lr·g/(|g| + eps) ≈ lr·sign(g).
        let got = p.to_vec1::<f32>().unwrap();
        let want = [
            1.0 - 0.1 * 0.5 / (0.5 + 1e-8),
            -2.0 + 0.1 * 0.25 / (0.25 + 1e-8),
            0.5,
        ];
        for (a, b) in got.iter().zip(want) {
            assert!((*a as f64 - b).abs() < 1e-6);
        }
        // Step 2 with gradient g2: compute in f64.
        let g2 = [0.1f64, 0.3, -1.0];
        opt.step(
            &mut [&mut p],
            &[Tensor::new(&[0.1f32, 0.3, -1.0], &Device::Cpu).unwrap()],
            0.1,
        )
        .unwrap();
        let got = p.to_vec1::<f32>().unwrap();
        let g1 = [0.5f64, -0.25, 0.0];
        for i in 0..3 {
            let m = 0.9 * (0.1 * g1[i]) + 0.1 * g2[i];
            let v = 0.999 * (0.001 * g1[i] * g1[i]) + 0.001 * g2[i] * g2[i];
            let mh = m / (1.0 - 0.81);
            let denom = v.sqrt() / (1.0 - 0.999f64 * 0.999).sqrt() + 1e-8;
            let want = want[i] - 0.1 * mh / denom;
            assert!(
                (got[i] as f64 - want).abs() < 1e-5,
                "{i}: {} vs {want}",
                got[i]
            );
        }
        assert_eq!(opt.step, 2);
    }

    #[test]
    fn weight_decay_is_decoupled() {
        let mut p = Tensor::new(&[2.0f32], &Device::Cpu).unwrap();
        let mut opt = Adam::new(&[&p], 0.9, 0.999, 1e-8, 0.5).unwrap();
        opt.step(
            &mut [&mut p],
            &[Tensor::new(&[0.0f32], &Device::Cpu).unwrap()],
            0.1,
        )
        .unwrap();
        assert!((p.to_vec1::<f32>().unwrap()[0] - 2.0 * 0.95).abs() < 1e-6);
    }

    #[test]
    fn clipping() {
        let mut g = vec![
            Tensor::new(&[3.0f32], &Device::Cpu).unwrap(),
            Tensor::new(&[0.0f32, 4.0], &Device::Cpu).unwrap(),
        ];
        let n = clip_grad_norm(&mut g, 1.0)
            .unwrap()
            .to_scalar::<f32>()
            .unwrap();
        assert_eq!(n, 5.0);
        let c = 1.0 / (5.0 + 1e-6);
        assert!((g[0].to_vec1::<f32>().unwrap()[0] - 3.0 * c as f32).abs() < 1e-7);
        assert!((g[1].to_vec1::<f32>().unwrap()[1] - 4.0 * c as f32).abs() < 1e-7);
        // Small gradients are left unchanged (factor exactly 1).
        let mut g = vec![Tensor::new(&[0.3f32, 0.4], &Device::Cpu).unwrap()];
        clip_grad_norm(&mut g, 1.0).unwrap();
        assert_eq!(g[0].to_vec1::<f32>().unwrap(), vec![0.3, 0.4]);
    }
}
