//! Sparse activations (docs/reference.md §4.3): ReLU, per-row TopK, batch-level BatchTopK and
//! JumpReLU, each returning the code together with its elementwise derivative dZ/dP, which is all
//! the manual backward pass needs (the selection itself is piecewise constant).
//!
//! candle has no top-k operation and `arg_sort_last_dim` sorts whole rows, so on the CPU the
//! selection is a custom op (rayon over rows; per row a bound from block maxima when k ≪ n,
//! else O(n) `select_nth_unstable_by`; see `select_row`). Other
//! devices (and non-f32 data) use `topk_generic`, built from candle operations only.
//!
//! One rule on every device: entries are ordered by key descending (IEEE total order, so −0
//! ranks below +0) and then by index ascending, and exactly k are selected (BatchTopK: exactly
//! k·B over the batch), so equal keys are resolved towards the lower index.

use candle_core::{CpuStorage, CustomOp1, DType, Layout, Shape, Tensor};
use rayon::prelude::*;

use crate::sae::config::TopkVariant;
use crate::sae::model::topk_generic::exact_topk_mask;
use crate::sae::Result;

/// A sparse code and its elementwise derivative with respect to the pre-activation.
#[derive(Debug, Clone)]
pub struct Coded {
    /// Code Z (before any soft cap).
    pub z: Tensor,
    /// dZ/dP elementwise (0 outside the selection).
    pub dz: Tensor,
}

fn to_f32(t: &Tensor) -> Result<Tensor> {
    Ok(t.to_dtype(DType::F32)?)
}

/// ReLU code.
pub fn relu(p: &Tensor) -> Result<Coded> {
    Ok(Coded {
        z: p.relu()?,
        dz: to_f32(&p.gt(0f32)?)?,
    })
}

/// Whether the variant ranks by absolute value.
pub(crate) fn ranks_by_abs(v: TopkVariant) -> bool {
    matches!(v, TopkVariant::Abs | TopkVariant::Absrelu)
}

/// Total order used for selection: larger key first, then lower index.
#[inline]
pub(crate) fn desc_then_index(ka: f32, a: u32, kb: f32, b: u32) -> std::cmp::Ordering {
    kb.total_cmp(&ka).then(a.cmp(&b))
}

#[inline]
pub(crate) fn key(x: f32, by_abs: bool) -> f32 {
    if by_abs {
        x.abs()
    } else {
        x
    }
}

/// Indices (unordered) of the `k` largest keys of `row`, written into `idx[..k]`.
/// `idx` must have length `row.len()`.
pub(crate) fn select_row(row: &[f32], k: usize, by_abs: bool, idx: &mut [u32]) {
    if k > 0 && k.saturating_mul(BLOCK_RATIO) <= row.len() {
        select_row_blocks(row, k, by_abs, idx)
    } else {
        select_row_quick(row, k, by_abs, idx)
    }
}

/// [`select_row`] by quickselect over all indices.
fn select_row_quick(row: &[f32], k: usize, by_abs: bool, idx: &mut [u32]) {
    for (i, v) in idx.iter_mut().enumerate() {
        *v = i as u32;
    }
    if k == 0 || k >= row.len() {
        return;
    }
    idx.select_nth_unstable_by(k - 1, |&a, &b| {
        desc_then_index(
            key(row[a as usize], by_abs),
            a,
            key(row[b as usize], by_abs),
            b,
        )
    });
}

/// Entries per block of [`select_row_blocks`].
const BLOCK: usize = 16;

/// From n ≥ BLOCK_RATIO·k on, [`select_row`] bounds the selection by block maxima instead of
/// running quickselect over the row (a TopK code keeps 1–3 % of its latents).
const BLOCK_RATIO: usize = 2 * BLOCK;

/// A key in IEEE total order as an integer (the bits `total_cmp` compares).
#[inline]
fn ordered(v: f32) -> i32 {
    let bits = v.to_bits() as i32;
    bits ^ ((((bits >> 31) as u32) >> 1) as i32)
}

/// The rank of entry `j` with ordered key `o` as one integer, larger = better: the key above
/// the complement of the index, so that equal keys rank the lower index higher.
#[inline]
fn packed_rank(o: i32, j: usize) -> u64 {
    (((o as u32) ^ 0x8000_0000) as u64) << 32 | (u32::MAX - j as u32) as u64
}

/// [`select_row`] for k ≪ n. The k-th largest of the blocks' maxima is a lower bound of the
/// k-th largest key (those k blocks hold k distinct entries at or above it), so only entries
/// of blocks whose maximum reaches it can be selected — about k of them. One vectorised pass
/// takes the maxima, a selection among n/BLOCK maxima gives the bound, and the exact
/// selection runs on the few entries at or above it.
fn select_row_blocks(row: &[f32], k: usize, by_abs: bool, idx: &mut [u32]) {
    let maxima: Vec<i32> = row
        .chunks(BLOCK)
        .map(|c| {
            c.iter()
                .fold(i32::MIN, |m, &v| m.max(ordered(key(v, by_abs))))
        })
        .collect();
    let mut bound = maxima.clone();
    let bound = *bound.select_nth_unstable_by(k - 1, |a, b| b.cmp(a)).1;
    let mut candidates: Vec<u64> = Vec::with_capacity(2 * k);
    for (b, (c, &m)) in row.chunks(BLOCK).zip(&maxima).enumerate() {
        if m >= bound {
            for (i, &v) in c.iter().enumerate() {
                let o = ordered(key(v, by_abs));
                if o >= bound {
                    candidates.push(packed_rank(o, b * BLOCK + i));
                }
            }
        }
    }
    candidates.select_nth_unstable_by(k - 1, |a, b| b.cmp(a));
    for (o, r) in idx.iter_mut().zip(&candidates[..k]) {
        *o = u32::MAX - (*r as u32);
    }
}

fn contiguous_f32<'a>(s: &'a CpuStorage, l: &Layout) -> candle_core::Result<&'a [f32]> {
    let data = s.as_slice::<f32>()?;
    match l.contiguous_offsets() {
        Some((a, b)) => Ok(&data[a..b]),
        None => candle_core::bail!("top-k selection needs a contiguous tensor"),
    }
}

/// CPU op: 0/1 mask of the k largest keys of each row.
struct RowTopkMask {
    k: usize,
    by_abs: bool,
}

impl CustomOp1 for RowTopkMask {
    fn name(&self) -> &'static str {
        "row-topk-mask"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> candle_core::Result<(CpuStorage, Shape)> {
        let data = contiguous_f32(s, l)?;
        let (_, n) = l.shape().dims2()?;
        let mut out = vec![0f32; data.len()];
        let k = self.k.min(n);
        out.par_chunks_mut(n.max(1))
            .zip(data.par_chunks(n.max(1)))
            .for_each_init(
                || vec![0u32; n],
                |idx, (o, row)| {
                    select_row(row, k, self.by_abs, idx);
                    for &j in &idx[..k] {
                        o[j as usize] = 1.0;
                    }
                },
            );
        Ok((CpuStorage::F32(out), l.shape().clone()))
    }
}

/// CPU op: 0/1 mask of the `total` largest keys of the whole tensor.
struct GlobalTopkMask {
    total: usize,
    by_abs: bool,
}

impl CustomOp1 for GlobalTopkMask {
    fn name(&self) -> &'static str {
        "global-topk-mask"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> candle_core::Result<(CpuStorage, Shape)> {
        let data = contiguous_f32(s, l)?;
        let mut out = vec![0f32; data.len()];
        let total = self.total.min(data.len());
        let mut idx = vec![0u32; data.len()];
        select_row(data, total, self.by_abs, &mut idx);
        for &j in &idx[..total] {
            out[j as usize] = 1.0;
        }
        Ok((CpuStorage::F32(out), l.shape().clone()))
    }
}

/// 0/1 mask of the k largest entries (by value or |value|) of every row of `p` [B, n].
pub fn row_topk_mask(p: &Tensor, k: usize, by_abs: bool) -> Result<Tensor> {
    let p = p.contiguous()?;
    if p.device().is_cpu() && p.dtype() == DType::F32 {
        return Ok(p.apply_op1_no_bwd(&RowTopkMask { k, by_abs })?);
    }
    let key = if by_abs { p.abs()? } else { p };
    exact_topk_mask(&key, k)
}

/// 0/1 mask of the `total` largest entries (by value or |value|) of the whole tensor `p`.
pub fn global_topk_mask(p: &Tensor, total: usize, by_abs: bool) -> Result<Tensor> {
    let p = p.contiguous()?;
    if p.device().is_cpu() && p.dtype() == DType::F32 {
        return Ok(p.apply_op1_no_bwd(&GlobalTopkMask { total, by_abs })?);
    }
    let shape = p.shape().clone();
    let key = if by_abs { p.abs()? } else { p };
    let flat = key.flatten_all()?.unsqueeze(0)?;
    Ok(exact_topk_mask(&flat, total)?.reshape(shape)?)
}

/// Per-row TopK code (reference `TopK`, `TopKReLU`, `TopKabs`, `TopKabsReLU`).
pub fn topk(p: &Tensor, k: usize, variant: TopkVariant) -> Result<Coded> {
    let mask = row_topk_mask(p, k, ranks_by_abs(variant))?;
    select_code(p, &mask, variant, false)
}

/// BatchTopK training code: the k·B largest entries of the whole batch.
pub fn batch_topk(p: &Tensor, k: usize, variant: TopkVariant) -> Result<Coded> {
    let (b, n) = p.dims2()?;
    let mask = global_topk_mask(p, (k * b).min(b * n), ranks_by_abs(variant))?;
    select_code(p, &mask, variant, true)
}

/// BatchTopK inference code with a global threshold θ: entries whose ranking key exceeds θ.
pub fn batch_threshold(p: &Tensor, theta: f32, variant: TopkVariant) -> Result<Coded> {
    let keyed = if ranks_by_abs(variant) {
        p.abs()?
    } else {
        p.clone()
    };
    let mask = to_f32(&keyed.gt(theta)?)?;
    select_code(p, &mask, variant, true)
}

/// Code of a selection `mask` under `variant`. Per-row TopK keeps |P| for the abs variants,
/// BatchTopK keeps the signed value (reference behaviour, docs/reference.md §11 item 14).
fn select_code(p: &Tensor, mask: &Tensor, variant: TopkVariant, batch: bool) -> Result<Coded> {
    let (z, dz) = match (variant, batch) {
        (TopkVariant::Plain, _) | (TopkVariant::Abs, true) => ((p * mask)?, mask.clone()),
        (TopkVariant::Relu, _) | (TopkVariant::Absrelu, true) => {
            let pos = to_f32(&p.gt(0f32)?)?;
            let m = (mask * pos)?;
            ((p * &m)?, m)
        }
        (TopkVariant::Abs | TopkVariant::Absrelu, false) => {
            let sign = (to_f32(&p.gt(0f32)?)? - to_f32(&p.lt(0f32)?)?)?;
            ((p.abs()? * mask)?, (sign * mask)?)
        }
    };
    Ok(Coded { z, dz })
}

/// "Eval form" of the top-k family: the secondary function applied without selection.
pub fn eval_form(p: &Tensor, variant: TopkVariant) -> Result<Tensor> {
    Ok(match variant {
        TopkVariant::Plain => p.clone(),
        TopkVariant::Relu => p.relu()?,
        TopkVariant::Abs | TopkVariant::Absrelu => p.abs()?,
    })
}

/// JumpReLU code `R·1[R > θ]` with `R = ReLU(P)`; θ is \[n\] (≥ 0, so the code is P·H(P − θ)).
/// The derivative with respect to P is `1[R > θ]`; the threshold's gradient is in `jumprelu`.
pub fn jumprelu(p: &Tensor, theta: &Tensor) -> Result<Coded> {
    let r = p.relu()?;
    let h = to_f32(&r.broadcast_gt(theta)?)?;
    Ok(Coded {
        z: (&r * &h)?,
        dz: h,
    })
}

/// Soft cap `c·tanh(z/c)` and its derivative `1 − tanh²(z/c)`; identity for c ≤ 0.
pub fn soft_cap(z: &Tensor, c: f64) -> Result<(Tensor, Option<Tensor>)> {
    if c <= 0.0 {
        return Ok((z.clone(), None));
    }
    let t = (z / c)?.tanh()?;
    let d = (1.0 - t.sqr()?)?;
    Ok(((t * c)?, Some(d)))
}

/// Smallest strictly positive value of `z` (None if there is none). Used for the BatchTopK
/// threshold estimate.
pub fn min_positive(z: &Tensor) -> Result<Option<f32>> {
    let big = f32::MAX;
    let pos = z.gt(0f32)?;
    let filled = pos.where_cond(z, &Tensor::full(big, z.shape(), z.device())?)?;
    let m = filled.flatten_all()?.min(0)?.to_scalar::<f32>()?;
    Ok(if m < big { Some(m) } else { None })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sae::test_support::rows as t;
    use candle_core::Device;

    fn v2(t: &Tensor) -> Vec<Vec<f32>> {
        t.to_vec2::<f32>().unwrap()
    }

    #[test]
    fn topk_variants_by_hand() {
        let p = t(&[
            &[0.5, -2.0, 1.5, -0.1, 0.7],
            &[-1.0, -3.0, -0.5, -0.2, -4.0],
        ]);
        let c = topk(&p, 2, TopkVariant::Plain).unwrap();
        assert_eq!(
            v2(&c.z),
            vec![
                vec![0.0, 0.0, 1.5, 0.0, 0.7],
                vec![0.0, 0.0, -0.5, -0.2, 0.0]
            ]
        );
        let c = topk(&p, 2, TopkVariant::Relu).unwrap();
        assert_eq!(v2(&c.z), vec![vec![0.0, 0.0, 1.5, 0.0, 0.7], vec![0.0; 5]]);
        assert_eq!(v2(&c.dz), vec![vec![0.0, 0.0, 1.0, 0.0, 1.0], vec![0.0; 5]]);
        let c = topk(&p, 2, TopkVariant::Abs).unwrap();
        assert_eq!(
            v2(&c.z),
            vec![vec![0.0, 2.0, 1.5, 0.0, 0.0], vec![0.0, 3.0, 0.0, 0.0, 4.0]]
        );
        assert_eq!(
            v2(&c.dz),
            vec![
                vec![0.0, -1.0, 1.0, 0.0, 0.0],
                vec![0.0, -1.0, 0.0, 0.0, -1.0]
            ]
        );
        let c2 = topk(&p, 2, TopkVariant::Absrelu).unwrap();
        assert_eq!(v2(&c2.z), v2(&c.z));
    }

    #[test]
    fn ties_resolve_to_lower_index_with_exactly_k() {
        let p = t(&[&[1.0, 2.0, 2.0, 2.0, 0.0]]);
        let m = row_topk_mask(&p, 2, false).unwrap();
        assert_eq!(v2(&m), vec![vec![0.0, 1.0, 1.0, 0.0, 0.0]]);
        let m = global_topk_mask(&p, 1, false).unwrap();
        assert_eq!(v2(&m), vec![vec![0.0, 1.0, 0.0, 0.0, 0.0]]);
        // k ≥ n keeps everything.
        let m = row_topk_mask(&p, 9, false).unwrap();
        assert_eq!(v2(&m), vec![vec![1.0; 5]]);
    }

    #[test]
    fn batch_topk_variants_by_hand() {
        // k = 1, B = 2 → keep the 2 largest of the whole batch.
        let p = t(&[&[3.0, -5.0, 0.1], &[2.0, 1.0, -0.5]]);
        let c = batch_topk(&p, 1, TopkVariant::Plain).unwrap();
        assert_eq!(v2(&c.z), vec![vec![3.0, 0.0, 0.0], vec![2.0, 0.0, 0.0]]);
        // abs ranks by |P| but keeps the signed value.
        let c = batch_topk(&p, 1, TopkVariant::Abs).unwrap();
        assert_eq!(v2(&c.z), vec![vec![3.0, -5.0, 0.0], vec![0.0, 0.0, 0.0]]);
        let c = batch_topk(&p, 1, TopkVariant::Absrelu).unwrap();
        assert_eq!(v2(&c.z), vec![vec![3.0, 0.0, 0.0], vec![0.0, 0.0, 0.0]]);
        assert_eq!(v2(&c.dz), vec![vec![1.0, 0.0, 0.0], vec![0.0, 0.0, 0.0]]);
        let c = batch_threshold(&p, 1.5, TopkVariant::Relu).unwrap();
        assert_eq!(v2(&c.z), vec![vec![3.0, 0.0, 0.0], vec![2.0, 0.0, 0.0]]);
        assert_eq!(min_positive(&c.z).unwrap(), Some(2.0));
        assert_eq!(min_positive(&(c.z * 0.0).unwrap()).unwrap(), None);
    }

    /// The device-independent path (what GPUs run) selects exactly what the CPU kernel selects,
    /// also on rows full of ties and signed zeros, for both ranking keys and both scopes.
    #[test]
    fn generic_path_matches_cpu_kernel_with_ties() {
        let vals: Vec<f32> = (0..240)
            .map(|i| match i % 7 {
                0 => 0.0,
                1 => -0.0,
                _ => ((i * 37 % 11) as f32 - 5.0) * 0.5,
            })
            .collect();
        let p = Tensor::from_vec(vals, (8, 30), &Device::Cpu).unwrap();
        for by_abs in [false, true] {
            let key = if by_abs { p.abs().unwrap() } else { p.clone() };
            for k in [1, 3, 4, 10, 29] {
                let a = row_topk_mask(&p, k, by_abs).unwrap();
                let b = exact_topk_mask(&key, k).unwrap();
                assert_eq!(v2(&a), v2(&b), "row k {k} abs {by_abs}");
                let total = k * 8;
                let a = global_topk_mask(&p, total, by_abs).unwrap();
                let b = exact_topk_mask(&key.flatten_all().unwrap().unsqueeze(0).unwrap(), total)
                    .unwrap()
                    .reshape((8, 30))
                    .unwrap();
                assert_eq!(v2(&a), v2(&b), "global k {k} abs {by_abs}");
                let kept: f32 = v2(&a).iter().flatten().sum();
                assert_eq!(kept as usize, total);
            }
        }
        // Non-f32 data on the CPU takes the generic path through the public functions.
        let p64 = p.to_dtype(DType::F64).unwrap();
        for k in [2, 5] {
            assert_eq!(
                v2(&row_topk_mask(&p64, k, false).unwrap()),
                v2(&row_topk_mask(&p, k, false).unwrap())
            );
            assert_eq!(
                v2(&global_topk_mask(&p64, k * 8, true).unwrap()),
                v2(&global_topk_mask(&p, k * 8, true).unwrap())
            );
        }
    }

    /// The block-bounded selection picks the set quickselect picks, on rows full of ties,
    /// signed zeros, infinities and NaN, for both keys and every k it is used for.
    #[test]
    fn block_bound_and_quickselect_select_the_same_entries() {
        use rand::{Rng, SeedableRng};
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(3);
        let specials = [
            0.0,
            -0.0,
            f32::INFINITY,
            f32::NEG_INFINITY,
            f32::NAN,
            1.5,
            -1.5,
        ];
        for trial in 0..200 {
            let n = rng.random_range(32..700);
            let row: Vec<f32> = (0..n)
                .map(|_| {
                    if trial % 2 == 0 && rng.random_bool(0.2) {
                        specials[rng.random_range(0..specials.len())]
                    } else {
                        rng.random_range(-4..5) as f32 * 0.5
                    }
                })
                .collect();
            for by_abs in [false, true] {
                for k in 1..=n / BLOCK_RATIO {
                    let (mut a, mut b) = (vec![0u32; n], vec![0u32; n]);
                    select_row_blocks(&row, k, by_abs, &mut a);
                    select_row_quick(&row, k, by_abs, &mut b);
                    a[..k].sort_unstable();
                    b[..k].sort_unstable();
                    assert_eq!(a[..k], b[..k], "trial {trial} n {n} k {k} abs {by_abs}");
                }
            }
        }
    }

    #[test]
    fn relu_jumprelu_softcap() {
        let p = t(&[&[-1.0, 0.0005, 0.5, 2.0]]);
        let c = relu(&p).unwrap();
        assert_eq!(v2(&c.z), vec![vec![0.0, 0.0005, 0.5, 2.0]]);
        assert_eq!(v2(&c.dz), vec![vec![0.0, 1.0, 1.0, 1.0]]);
        let theta = Tensor::new(&[0.001f32, 0.001, 0.6, 0.001], &Device::Cpu).unwrap();
        let c = jumprelu(&p, &theta).unwrap();
        assert_eq!(v2(&c.z), vec![vec![0.0, 0.0, 0.0, 2.0]]);
        assert_eq!(v2(&c.dz), vec![vec![0.0, 0.0, 0.0, 1.0]]);
        let (z, d) = soft_cap(&p, 2.0).unwrap();
        let z = v2(&z);
        let d = v2(&d.unwrap());
        for (i, x) in [-1.0f64, 0.0005, 0.5, 2.0].iter().enumerate() {
            let th = (x / 2.0).tanh();
            assert!((z[0][i] as f64 - 2.0 * th).abs() < 1e-6);
            assert!((d[0][i] as f64 - (1.0 - th * th)).abs() < 1e-6);
        }
        assert!(soft_cap(&p, 0.0).unwrap().1.is_none());
        assert_eq!(
            v2(&eval_form(&p, TopkVariant::Abs).unwrap()),
            vec![vec![1.0, 0.0005, 0.5, 2.0]]
        );
    }
}
