//! The parameter update that follows a CPU step's gradients, in place on host memory.
//!
//! After the gradients the reference step (docs/reference.md §6.4) rescales every decoder row
//! to unit norm (the encoder columns, latent biases and JumpReLU thresholds take the inverse
//! scale, so the model's function is unchanged), removes from each decoder-row gradient its
//! component along the row, clips the global gradient norm and takes an Adam step. Written as
//! candle tensor operations each of these allocates and writes fresh copies of the 19 MB
//! matrices (about a tenth of a ReLU step at the paper's size). Here the three operations on a
//! decoder row share one pass over that row, the clipping factor scales each gradient inside
//! Adam's pass, and every buffer is written where it lies (`host`).
//!
//! Sums run in f64 over fixed parts in a fixed order, so the result does not depend on the
//! number of threads. The update computes the function of `Sae::scale_to_unit_norm`,
//! `Sae::project_decoder_grad`, `clip_grad_norm` and `Adam::step` (tested below against them).

use rayon::prelude::*;

use crate::sae::kernels::host::{is_host_f32, with_slice, with_slice_mut};
use crate::sae::model::{jumprelu, Grads, Sae};
use crate::sae::optim::Adam;
use crate::sae::Result;

/// Renormalises, projects, clips and steps in place. Returns false, having changed nothing,
/// unless every parameter and gradient is a contiguous f32 host tensor; the caller then takes
/// the tensor path. The gradients must own their storage (the CPU fast paths' do): the decoder
/// gradient is projected where it lies.
pub(crate) fn apply(model: &mut Sae, adam: &mut Adam, grads: &mut Grads, lr: f64) -> Result<bool> {
    if !model.params().into_iter().all(is_host_f32) || !grads.0.iter().all(is_host_f32) {
        return Ok(false);
    }
    let d = model.d;
    // Decoder rows: norm, rescale, project the row's gradient, and the gradient's square sum.
    let rows: Vec<(f32, f64)> = with_slice_mut(&model.decoder, |w| {
        with_slice_mut(&grads.0[3], |g| {
            w.par_chunks_mut(d)
                .zip(g.par_chunks_mut(d))
                .map(|(w, g)| unit_row_and_project(w, g))
                .collect()
        })
    })??;
    let scale: Vec<f32> = rows.iter().map(|&(r, _)| r).collect();
    // The encoder's columns, the latent biases and the JumpReLU thresholds take the row norms
    // (a log-threshold their logarithm), so that every pre-activation keeps its value relative
    // to its threshold.
    with_slice_mut(&model.encoder, |w| {
        w.par_chunks_mut(scale.len()).for_each(|row| {
            row.iter_mut().zip(&scale).for_each(|(v, r)| *v *= r);
        })
    })?;
    with_slice_mut(&model.latent_bias, |b| {
        b.iter_mut().zip(&scale).for_each(|(v, r)| *v *= r)
    })?;
    if let Some(t) = &model.threshold_param {
        let param = model.config.jumprelu_param;
        with_slice_mut(t, |t| jumprelu::rescale_host(param, t, &scale))?;
    }
    let clip = model.config.clip_grad;
    let grad_scale = if clip > 0.0 {
        let mut square_sum = 0f64;
        for (i, g) in grads.0.iter().enumerate() {
            square_sum += if i == 3 {
                rows.iter().map(|&(_, s)| s).sum()
            } else {
                with_slice(g, square_sum_of)?
            };
        }
        Some(clip_factor(square_sum.sqrt() as f32, clip))
    } else {
        None
    };
    adam.step_scaled(&mut model.params_mut(), &grads.0, lr, grad_scale)?;
    Ok(true)
}

/// Rescales decoder row `w` to unit norm and removes from its gradient `g` the component along
/// the rescaled row; returns the norm (plus f32 ε, as the reference adds it) and the square sum
/// of the projected gradient.
fn unit_row_and_project(w: &mut [f32], g: &mut [f32]) -> (f32, f64) {
    let norm = w.iter().map(|&v| v as f64 * v as f64).sum::<f64>().sqrt() as f32 + f32::EPSILON;
    w.iter_mut().for_each(|v| *v /= norm);
    let along = w
        .iter()
        .zip(g.iter())
        .map(|(&w, &g)| w as f64 * g as f64)
        .sum::<f64>() as f32;
    g.iter_mut()
        .zip(w.iter())
        .for_each(|(g, &w)| *g -= w * along);
    (norm, g.iter().map(|&v| v as f64 * v as f64).sum())
}

/// Σ v² in f64 over fixed parts summed in order (independent of the thread count).
fn square_sum_of(v: &[f32]) -> f64 {
    const PART: usize = 1 << 14;
    v.par_chunks(PART)
        .map(|c| c.iter().map(|&x| x as f64 * x as f64).sum::<f64>())
        .collect::<Vec<_>>()
        .into_iter()
        .sum()
}

/// The factor PyTorch's `clip_grad_norm_` scales every gradient by: max / (‖g‖ + 10⁻⁶), at most 1.
fn clip_factor(norm: f32, max_norm: f64) -> f32 {
    ((1.0 / (norm + 1e-6)) * max_norm as f32).min(1.0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sae::config::JumpreluParam;
    use crate::sae::optim::clip_grad_norm;
    use crate::sae::{Arch, TrainConfig};
    use candle_core::{Device, Tensor};
    use rand::{Rng, SeedableRng};

    fn model(arch: Arch, clip: f64) -> Sae {
        model_with(arch, clip, JumpreluParam::Log)
    }

    fn model_with(arch: Arch, clip: f64, jumprelu_param: JumpreluParam) -> Sae {
        let cfg = TrainConfig {
            arch,
            n_latents: Some(24),
            k: Some(3),
            nesting_start: 4,
            clip_grad: clip,
            jumprelu_param,
            ..Default::default()
        };
        let m = Sae::new(&cfg, 10, &Device::Cpu).unwrap();
        // Rows of unequal norms, so that the rescaling matters.
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(3);
        let w: Vec<f32> = (0..24 * 10).map(|_| rng.random_range(-0.5..0.5)).collect();
        Sae {
            decoder: Tensor::from_vec(w, (24, 10), &Device::Cpu).unwrap(),
            latent_bias: Tensor::from_vec(
                (0..24).map(|j| j as f32 * 0.01 - 0.1).collect(),
                24,
                &Device::Cpu,
            )
            .unwrap(),
            ..m
        }
    }

    fn grads(m: &Sae, scale: f32, seed: u64) -> Grads {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
        Grads(
            m.params()
                .iter()
                .map(|p| {
                    let v: Vec<f32> = (0..p.elem_count())
                        .map(|_| rng.random_range(-1.0..1.0f32) * scale)
                        .collect();
                    Tensor::from_vec(v, p.shape(), &Device::Cpu).unwrap()
                })
                .collect(),
        )
    }

    /// The tensor-operation path of the training step.
    fn by_tensor_ops(m: &mut Sae, adam: &mut Adam, g: &Grads, lr: f64) {
        let mut g = Grads(g.0.iter().map(|t| t.copy().unwrap()).collect());
        m.scale_to_unit_norm().unwrap();
        g.0[3] = m.project_decoder_grad(&g.0[3]).unwrap();
        clip_grad_norm(&mut g.0, m.config.clip_grad).unwrap();
        adam.step(&mut m.params_mut(), &g.0, lr).unwrap();
    }

    fn flat(t: &Tensor) -> Vec<f32> {
        t.flatten_all().unwrap().to_vec1().unwrap()
    }

    #[test]
    fn matches_the_tensor_operations() {
        // Clipping active (gradients large), inactive (small) and off; with and without
        // JumpReLU thresholds; three steps so that the moments matter.
        let (log, direct) = (JumpreluParam::Log, JumpreluParam::Direct);
        for (arch, clip, size, param) in [
            (Arch::Relu, 1.0, 5.0, log),
            (Arch::Relu, 1.0, 1e-3, log),
            (Arch::Jumprelu, 0.0, 1.0, log),
            (Arch::Jumprelu, 1.0, 1.0, direct),
            (Arch::Topk, 1.0, 5.0, log),
        ] {
            let mut a = model_with(arch, clip, param);
            let mut b = a.copy().unwrap();
            let mut adam_a = Adam::new(&a.params(), 0.9, 0.999, 1e-8, 0.01).unwrap();
            let mut adam_b = Adam::new(&b.params(), 0.9, 0.999, 1e-8, 0.01).unwrap();
            for step in 0..3 {
                let mut g = grads(&a, size, step);
                let before = flat(&g.0[3]);
                assert!(apply(&mut a, &mut adam_a, &mut g, 1e-2).unwrap());
                by_tensor_ops(&mut b, &mut adam_b, &g, 1e-2);
                // The decoder gradient is projected in place: it changed.
                assert_ne!(before, flat(&g.0[3]), "{arch:?}");
            }
            for (i, (pa, pb)) in a.params().iter().zip(b.params()).enumerate() {
                for (x, y) in flat(pa).iter().zip(flat(pb)) {
                    assert!(
                        (x - y).abs() <= 2e-6 * (1.0 + y.abs()),
                        "{arch:?} clip {clip} size {size}, param {i}: {x} vs {y}"
                    );
                }
            }
            for (ma, mb) in adam_a
                .m
                .iter()
                .zip(&adam_b.m)
                .chain(adam_a.v.iter().zip(&adam_b.v))
            {
                for (x, y) in flat(ma).iter().zip(flat(mb)) {
                    assert!((x - y).abs() <= 2e-6 * (1.0 + y.abs()), "{arch:?} moments");
                }
            }
            // Unit decoder rows after the update's renormalisation (before its Adam step they
            // were exactly unit; the step moves them by at most lr per entry).
            let w = flat(&a.decoder);
            for row in w.chunks(10) {
                let norm = row.iter().map(|v| v * v).sum::<f32>().sqrt();
                assert!((norm - 1.0).abs() < 0.1, "{norm}");
            }
        }
    }

    #[test]
    fn clipping_bounds_the_step_and_small_gradients_pass_unscaled() {
        assert_eq!(clip_factor(0.5, 1.0), 1.0);
        let f = clip_factor(4.0, 1.0);
        assert!((f - 0.25).abs() < 1e-6, "{f}");
        assert_eq!(square_sum_of(&[3.0, 4.0]), 25.0);
    }

    #[test]
    fn other_devices_or_views_take_the_tensor_path() {
        let mut a = model(Arch::Relu, 1.0);
        let mut adam = Adam::new(&a.params(), 0.9, 0.999, 1e-8, 0.0).unwrap();
        let mut g = grads(&a, 1.0, 0);
        // A transposed (non-contiguous) gradient: nothing is changed.
        g.0[3] = g.0[3].t().unwrap().contiguous().unwrap().t().unwrap();
        let w = flat(&a.decoder);
        assert!(!apply(&mut a, &mut adam, &mut g, 1e-2).unwrap());
        assert_eq!(w, flat(&a.decoder));
        assert_eq!(adam.step, 0);
    }
}
