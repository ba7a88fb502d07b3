//! The sparse evaluation code of a batch as host rows of (latent, value) entries, for readers
//! that walk the kept entries only (top examples, concept search, bias).
//!
//! A TopK code keeps 1–5 % of the latents of a row. Built from the pre-activation in one
//! parallel pass (per row: select the k best, keep the positive ones), it skips the dense
//! selection mask and the dense code that candle's chain of elementwise operations would
//! write, and a reader of the entries skips the zeros that a dense row would make it scan.

use rayon::prelude::*;

use crate::matmul::matmul_into;
use crate::sae::config::{Arch, TopkVariant};
use crate::sae::kernels::host::with_slice;
use crate::sae::model::{activation, Sae};
use crate::sae::Result;
use candle_core::Tensor;

/// A batch's code in compressed-row form: row r's entries are
/// `latents[offsets[r]..offsets[r + 1]]` (ascending) and the matching `values`, every value
/// positive.
#[derive(Debug, Clone, PartialEq)]
pub struct SparseRows {
    pub offsets: Vec<usize>,
    pub latents: Vec<u32>,
    pub values: Vec<f32>,
}

impl SparseRows {
    pub fn rows(&self) -> usize {
        self.offsets.len() - 1
    }

    /// The code as dense rows of `n` latents (row-major); entries not kept are +0.0.
    pub fn to_dense(&self, n: usize) -> Vec<f32> {
        let mut z = vec![0f32; self.rows() * n];
        z.par_chunks_mut(n.max(1)).enumerate().for_each(|(r, out)| {
            let range = self.offsets[r]..self.offsets[r + 1];
            for (&j, &v) in self.latents[range.clone()].iter().zip(&self.values[range]) {
                out[j as usize] = v;
            }
        });
        z
    }
}

/// Buffers that [`Sae::sparse_rows_with`] keeps between batches: a fresh [B, n] matrix per
/// batch would cost its page faults every time.
#[derive(Default)]
pub struct SparseRowsScratch {
    centred: Vec<f32>,
    pre: Vec<f32>,
    counts: Vec<usize>,
    rows: SparseRows,
}

impl Default for SparseRows {
    fn default() -> Self {
        SparseRows {
            offsets: vec![0],
            latents: Vec::new(),
            values: Vec::new(),
        }
    }
}

impl Sae {
    /// The sparse evaluation code of `x` as [`SparseRows`] where it is a per-row top-k of the
    /// default variant (TopK, and Matryoshka's first level; TopKReLU, no soft cap) on the
    /// CPU; None elsewhere. Its entries are exactly the non-zero entries of
    /// [`Sae::eval_code`]`(x, false)`: the same products and sums in the same order.
    pub fn sparse_rows_host(&self, x: &Tensor) -> Result<Option<SparseRows>> {
        let mut scratch = SparseRowsScratch::default();
        let applies = self.sparse_rows_with(x, &mut scratch)?.is_some();
        Ok(applies.then(|| std::mem::take(&mut scratch.rows)))
    }

    /// As [`Sae::sparse_rows_host`], in buffers kept in `scratch` from one batch to the next.
    pub fn sparse_rows_with<'s>(
        &self,
        x: &Tensor,
        scratch: &'s mut SparseRowsScratch,
    ) -> Result<Option<&'s SparseRows>> {
        let k = match self.config.arch {
            Arch::Topk => self.config.k(),
            Arch::Msae => self.levels[0],
            _ => return Ok(None),
        };
        if !(self.device().is_cpu()
            && self.config.topk_variant == TopkVariant::Relu
            && self.config.soft_cap == 0.0)
        {
            return Ok(None);
        }
        let (n, d) = (self.n.max(1), self.d);
        let k = k.min(n);
        let pre_bias = self.pre_bias.to_vec1::<f32>()?;
        let bias = self.latent_bias.to_vec1::<f32>()?;
        let SparseRowsScratch {
            centred,
            pre,
            counts,
            rows,
        } = scratch;
        // P = (x − b_pre)·W_enc, into kept buffers.
        let b = with_slice(x, |x| {
            let b = x.len() / d.max(1);
            centred.resize(b * d, 0.0);
            centred
                .par_chunks_mut(d.max(1))
                .zip(x.par_chunks(d.max(1)))
                .for_each(|(o, x)| {
                    for ((o, v), m) in o.iter_mut().zip(x).zip(&pre_bias) {
                        *o = v - m;
                    }
                });
            b
        })?;
        pre.resize(b * n, 0.0);
        with_slice(&self.encoder, |w| {
            matmul_into(b, n, d, centred, (d, 1), w, (n, 1), pre)
        })?;
        // Per row: add the latent bias in cache, select the k best, keep the positive ones, in
        // a fixed stride of k, then compact.
        rows.latents.resize(b * k, 0);
        rows.values.resize(b * k, 0.0);
        counts.clear();
        counts.resize(b, 0);
        rows.latents
            .par_chunks_mut(k.max(1))
            .zip(rows.values.par_chunks_mut(k.max(1)))
            .zip(counts.par_iter_mut())
            .zip(pre.par_chunks(n))
            .for_each_init(
                || (vec![0u32; n], vec![0f32; n]),
                |(idx, biased), (((lat, val), count), row)| {
                    for ((o, v), c) in biased.iter_mut().zip(row).zip(&bias) {
                        *o = v + c;
                    }
                    activation::select_row(biased, k, false, idx);
                    let kept = &mut idx[..k];
                    kept.sort_unstable();
                    for &j in kept.iter() {
                        let v = biased[j as usize];
                        if v > 0.0 {
                            lat[*count] = j;
                            val[*count] = v;
                            *count += 1;
                        }
                    }
                },
            );
        rows.offsets.clear();
        rows.offsets.push(0);
        let mut end = 0;
        for (r, &c) in counts.iter().enumerate() {
            rows.latents.copy_within(r * k..r * k + c, end);
            rows.values.copy_within(r * k..r * k + c, end);
            end += c;
            rows.offsets.push(end);
        }
        rows.latents.truncate(end);
        rows.values.truncate(end);
        Ok(Some(rows))
    }
}
