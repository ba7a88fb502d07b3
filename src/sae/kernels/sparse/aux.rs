//! The auxiliary dead-latent loss ([`crate::sae::model::aux_k`]) on the CPU fast path. Each
//! row's k' strongest dead pre-activations form a one-band sparse code, which then goes through
//! the blocked products of the main code: its reconstruction of the residual (k' decoder rows
//! per row), the code gradient at its entries, and the decoder and encoder gradients of the
//! selected latents. Nothing here runs when the loss is off.

use rayon::prelude::*;

use super::blocked::{Gathered, Tiling};
use super::format::Csr;
use super::reconstruct;
use crate::sae::config::RecLoss;
use crate::sae::config::TopkVariant;
use crate::sae::kernels::scratch::Scratch;
use crate::sae::model::activation::{desc_then_index, key, ranks_by_abs};
use crate::sae::model::aux_k;

/// Each row's `k` largest pre-activations among the `dead` latents (ascending), as a one-band
/// code, entries sorted by latent: the raw values with derivative 1 (`variant` None), or as the
/// per-row top-k of `variant` ranks and keeps them (an entry it drops stays, with value and
/// derivative 0). `p` is the B×n pre-activation, without the latent bias when `bias` is given
/// (the per-row selection adds it row by row), with it otherwise.
pub(super) fn select_dead(
    p: &[f32],
    bias: Option<&[f32]>,
    (b, n): (usize, usize),
    dead: &[u32],
    k: usize,
    variant: Option<TopkVariant>,
) -> Csr {
    let by_abs = variant.is_some_and(ranks_by_abs);
    let k = k.min(dead.len());
    let (mut idx, mut val, mut der) = (
        Scratch::zeros(b * k),
        Scratch::zeros(b * k),
        Scratch::zeros(b * k),
    );
    idx.par_chunks_mut(k.max(1))
        .zip(val.par_chunks_mut(k.max(1)))
        .zip(der.par_chunks_mut(k.max(1)))
        .enumerate()
        .for_each_init(
            || Vec::with_capacity(dead.len()),
            |cand: &mut Vec<(f32, u32)>, (r, ((ri, rv), rd))| {
                let row = &p[r * n..(r + 1) * n];
                cand.clear();
                cand.extend(dead.iter().map(|&j| {
                    let v = row[j as usize] + bias.map_or(0.0, |c| c[j as usize]);
                    (v, j)
                }));
                // The order of the dense path: larger key first, then lower latent.
                if k < cand.len() {
                    cand.select_nth_unstable_by(k - 1, |a, b| {
                        desc_then_index(key(a.0, by_abs), a.1, key(b.0, by_abs), b.1)
                    });
                }
                let top = &mut cand[..k];
                top.sort_unstable_by_key(|e| e.1);
                for (t, &(v, j)) in top.iter().enumerate() {
                    let (value, der) = match variant {
                        None | Some(TopkVariant::Plain) => (v, 1.0),
                        Some(TopkVariant::Relu) if v > 0.0 => (v, 1.0),
                        Some(TopkVariant::Relu) => (0.0, 0.0),
                        Some(TopkVariant::Abs | TopkVariant::Absrelu) => {
                            (v.abs(), ((v > 0.0) as i8 - (v < 0.0) as i8) as f32)
                        }
                    };
                    ri[t] = j;
                    rv[t] = value;
                    rd[t] = der;
                }
            },
        );
    let offsets: Vec<usize> = (0..=b).map(|r| r * k).collect();
    Csr {
        band_end: offsets[1..].to_vec(),
        offsets,
        idx,
        val,
        der,
    }
}

/// The weighted auxiliary loss of the code `csr` against the residual `x − xhat` (both B×d)
/// and its gradient with respect to the code's reconstruction ê, as [B, d].
#[allow(clippy::too_many_arguments)]
pub(super) fn residual_loss(
    csr: &Csr,
    w: &Gathered,
    x: &[f32],
    xhat: &[f32],
    reference: Option<&[f32]>,
    kind: RecLoss,
    weight: f64,
    d: usize,
    tiling: Tiling,
) -> (f64, Scratch<f32>) {
    // ê = Σ z_j W_dec[j], without the decoder bias.
    let ehat = reconstruct(csr, w, d, &vec![0.0; d], tiling);
    let mut grad = Scratch::for_overwrite(x.len());
    let value = aux_k::host_rows(kind, &ehat, x, xhat, reference, weight, d, &mut grad);
    (value, grad)
}
