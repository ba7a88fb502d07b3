//! Adam(W) with PyTorch semantics and global gradient-norm clipping, over plain candle tensors so
//! that the whole state (m, v, step) can be checkpointed and restored exactly.

use candle_core::Tensor;

use super::Result;

/// Adam / AdamW state (PyTorch `torch.optim.AdamW`, single-tensor implementation).
///
/// Per step t (1-based) with gradient g and learning rate lr:
/// `p ← p·(1 − lr·wd)`; `m ← m + (1 − β1)(g − m)`; `v ← β2·v + (1 − β2)·g²`;
/// `p ← p − (lr / (1 − β1^t)) · m / (√v / √(1 − β2^t) + eps)`.
#[derive(Debug, Clone)]
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
        let v = m.clone();
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
        if params.len() != grads.len() || params.len() != self.m.len() {
            return Err(super::SaeError::Config(format!(
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
        let step_size = lr / bc1;
        let bc2_sqrt = bc2.sqrt();
        for (i, (p, g)) in params.iter_mut().zip(grads).enumerate() {
            if let Some((np, nm, nv)) = self.fused_cpu(p, g, i, lr, step_size, bc2_sqrt)? {
                **p = np;
                self.m[i] = nm;
                self.v[i] = nv;
                continue;
            }
            if self.weight_decay != 0.0 {
                **p = p.affine(1.0 - lr * self.weight_decay, 0.0)?;
            }
            // lerp: m + (1 − β1)(g − m)
            let m = ((g - &self.m[i])?.affine(1.0 - self.beta1, 0.0)? + &self.m[i])?;
            let v =
                (self.v[i].affine(self.beta2, 0.0)? + g.sqr()?.affine(1.0 - self.beta2, 0.0)?)?;
            let denom = v.sqrt()?.affine(1.0 / bc2_sqrt, self.eps)?;
            let upd = (&m / denom)?.affine(step_size, 0.0)?;
            **p = (&**p - upd)?;
            self.m[i] = m;
            self.v[i] = v;
        }
        Ok(())
    }
}

impl Adam {
    /// The same update as the tensor-op path in one pass over host memory (CPU tensors only);
    /// None when the tensors are not f32 on the CPU.
    fn fused_cpu(
        &self,
        p: &Tensor,
        g: &Tensor,
        i: usize,
        lr: f64,
        step_size: f64,
        bc2_sqrt: f64,
    ) -> Result<Option<(Tensor, Tensor, Tensor)>> {
        use candle_core::{DType, Storage};
        use rayon::prelude::*;
        let all = [p, g, &self.m[i], &self.v[i]];
        if all
            .iter()
            .any(|t| !t.device().is_cpu() || t.dtype() != DType::F32)
        {
            return Ok(None);
        }
        let host = |t: &Tensor| -> Result<Vec<f32>> {
            let t = t.contiguous()?;
            let (st, layout) = t.storage_and_layout();
            match (&*st, layout.contiguous_offsets()) {
                (Storage::Cpu(c), Some((a, b))) => Ok(c.as_slice::<f32>()?[a..b].to_vec()),
                _ => Err(super::SaeError::Data(
                    "expected a contiguous CPU tensor".into(),
                )),
            }
        };
        let (mut pv, gv, mut mv, mut vv) =
            (host(p)?, host(g)?, host(&self.m[i])?, host(&self.v[i])?);
        let decay = (1.0 - lr * self.weight_decay) as f32;
        let (c1, b2, c2) = (
            (1.0 - self.beta1) as f32,
            self.beta2 as f32,
            (1.0 - self.beta2) as f32,
        );
        let (inv_bc2, eps, ss) = ((1.0 / bc2_sqrt) as f32, self.eps as f32, step_size as f32);
        let wd = self.weight_decay != 0.0;
        pv.par_chunks_mut(4096)
            .zip(mv.par_chunks_mut(4096))
            .zip(vv.par_chunks_mut(4096))
            .zip(gv.par_chunks(4096))
            .for_each(|(((pc, mc), vc), gc)| {
                for j in 0..pc.len() {
                    if wd {
                        pc[j] *= decay;
                    }
                    let g = gc[j];
                    mc[j] += (g - mc[j]) * c1;
                    vc[j] = vc[j] * b2 + g * g * c2;
                    let denom = vc[j].sqrt() * inv_bc2 + eps;
                    pc[j] -= (mc[j] / denom) * ss;
                }
            });
        let shape = p.shape().clone();
        let dev = p.device();
        Ok(Some((
            Tensor::from_vec(pv, shape.clone(), dev)?,
            Tensor::from_vec(mv, shape.clone(), dev)?,
            Tensor::from_vec(vv, shape, dev)?,
        )))
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
