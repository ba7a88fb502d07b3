//! Top-k selection built only from candle operations every device has (comparisons,
//! `where_cond`, min/max/sum reductions, affine arithmetic), used wherever the CPU kernel of
//! `activation.rs` does not apply (GPU tensors, non-f32 data).
//!
//! It selects exactly the entries the CPU kernel selects: per row of `key` [G, m], the `count`
//! largest keys, ties resolved towards the lower index, `-0.0` ranked below `+0.0` (IEEE total
//! order, as `f32::total_cmp`). Sorting is avoided on purpose: candle's GPU sort keeps a whole row
//! in shared memory and so cannot sort rows of paper size (24,576 latents, or a whole flattened
//! batch for BatchTopK).
//!
//! Two exact searches, both on f64 copies of the keys (every f32 is exactly representable, and
//! counts stay exact far beyond 2^24):
//! 1. the threshold `v`, the `count`-th largest key: a bisection whose lower end always snaps
//!    to a key that is present, so it ends on `v` itself rather than near it;
//! 2. among the keys equal to `v`, the `r` = `count` − #{key > v} first ones in the order
//!    (+0 before −0, then index): a bisection over the integer rank `index + m·[key is −0]`.
//!
//! Keys must be free of NaN (a NaN pre-activation means training has already diverged).

use candle_core::{DType, Device, Tensor};

use crate::sae::Result;

/// Iterations of the threshold search between two convergence checks (each check copies one
/// flag to the host).
const CHECK_EVERY: usize = 8;
/// Bisection on f64 midpoints between f32 values needs at most ~300 halvings (exponent range
/// plus mantissa); far more means the keys are not finite numbers.
const MAX_ITERATIONS: usize = 1024;

/// 0/1 f32 mask of the `count` largest entries of every row of `key` [G, m], exactly `count`
/// per row (all of them when `count ≥ m`).
pub fn exact_topk_mask(key: &Tensor, count: usize) -> Result<Tensor> {
    let (g, m) = key.dims2()?;
    let dev = key.device();
    if count >= m {
        return Ok(Tensor::ones((g, m), DType::F32, dev)?);
    }
    if count == 0 {
        return Ok(Tensor::zeros((g, m), DType::F32, dev)?);
    }
    let key = key.to_dtype(DType::F64)?;
    let v = kth_largest(&key, count)?;
    let above = key.broadcast_gt(&v)?;
    let tied = key.broadcast_eq(&v)?;
    let n_above = count_true(&above)?;
    let n_tied = count_true(&tied)?;
    // How many of the tied entries are still needed (≥ 1 per row).
    let needed = n_above.affine(-1.0, count as f64)?;
    let excess = (n_tied - &needed)?
        .flatten_all()?
        .max(0)?
        .to_scalar::<f64>()?;
    if excess == 0.0 {
        // Every tied entry is needed: the selection is simply key ≥ v.
        return Ok(key.broadcast_ge(&v)?.to_dtype(DType::F32)?);
    }
    let rank = tie_rank(&key, m, dev)?;
    let cutoff = rank_cutoff(&rank, &tied, &needed, m)?;
    let chosen_ties =
        (tied.to_dtype(DType::F64)? * rank.broadcast_le(&cutoff)?.to_dtype(DType::F64)?)?;
    Ok((above.to_dtype(DType::F64)? + chosen_ties)?.to_dtype(DType::F32)?)
}

/// Number of true entries of a 0/1 mask per row, as f64 [G, 1].
fn count_true(mask: &Tensor) -> Result<Tensor> {
    Ok(mask.to_dtype(DType::F64)?.sum_keepdim(1)?)
}

/// The `count`-th largest key of every row (f64 [G, 1]), found by bisection.
///
/// Invariants per row: `lo` is a present key with #{key ≥ lo} ≥ count, and #{key ≥ hi} < count
/// (or `hi` = `lo` = max once the maximum itself is the answer). The row is done when
/// #{key > lo} < count, i.e. `lo` is the answer.
fn kth_largest(key: &Tensor, count: usize) -> Result<Tensor> {
    let count = count as f64;
    let dev = key.device();
    // Ends are clamped to finite values before taking the midpoint, so that ±∞ keys neither
    // stall the search nor make a NaN midpoint (−∞ + ∞).
    let span = f32::MAX as f64 * 2.0;
    let mut lo = key.min_keepdim(1)?;
    let mut hi = key.max_keepdim(1)?;
    let inf = Tensor::full(f64::INFINITY, key.shape(), dev)?;
    for iteration in 0..MAX_ITERATIONS {
        if iteration % CHECK_EVERY == 0 {
            let open = count_true(&key.broadcast_gt(&lo)?)?.ge(count)?;
            if open
                .to_dtype(DType::F64)?
                .flatten_all()?
                .max(0)?
                .to_scalar::<f64>()?
                == 0.0
            {
                return Ok(lo);
            }
        }
        let mid = ((lo.clamp(-span, span)? * 0.5)? + (hi.clamp(-span, span)? * 0.5)?)?;
        let at_or_above = key.broadcast_ge(&mid)?;
        let enough = count_true(&at_or_above)?.ge(count)?;
        // The smallest present key ≥ mid: moving `lo` there keeps #{key ≥ lo} unchanged.
        let snapped = at_or_above.where_cond(key, &inf)?.min_keepdim(1)?;
        lo = enough.where_cond(&snapped, &lo)?;
        hi = enough.where_cond(&hi, &mid)?;
    }
    Err(candle_core::Error::Msg(
        "top-k threshold search did not converge: are the keys finite?".into(),
    )
    .into())
}

/// Position of every entry in the tie order: its index, pushed behind all +0 entries when the
/// key is −0 (so ties follow `f32::total_cmp`, then the index). f64 [1, m].
fn tie_rank(key: &Tensor, m: usize, dev: &Device) -> Result<Tensor> {
    let index = Tensor::arange(0u32, m as u32, dev)?
        .to_dtype(DType::F64)?
        .unsqueeze(0)?;
    // 1/−0 = −∞ is the only way to see the sign of a zero with arithmetic.
    let negative_zero =
        (key.eq(0.0)?.to_dtype(DType::F64)? * key.recip()?.lt(0.0)?.to_dtype(DType::F64)?)?;
    Ok(index.broadcast_add(&(negative_zero * m as f64)?)?)
}

/// Per row, the smallest rank `c` such that `needed` tied entries have rank ≤ c: integer
/// bisection over [0, 2m), exact in f64.
fn rank_cutoff(rank: &Tensor, tied: &Tensor, needed: &Tensor, m: usize) -> Result<Tensor> {
    let g = tied.dim(0)?;
    let dev = tied.device();
    let tied = tied.to_dtype(DType::F64)?;
    // Invariant: #{tied, rank ≤ lo} < needed ≤ #{tied, rank ≤ hi}.
    let mut lo = Tensor::full(-1f64, (g, 1), dev)?;
    let mut hi = Tensor::full((2 * m) as f64, (g, 1), dev)?;
    let steps = (usize::BITS - (2 * m + 1).leading_zeros()) as usize + 1;
    for _ in 0..steps {
        let mid = ((&lo + &hi)? * 0.5)?.floor()?;
        let within = (&tied * rank.broadcast_le(&mid)?.to_dtype(DType::F64)?)?.sum_keepdim(1)?;
        let enough = within.ge(needed)?;
        hi = enough.where_cond(&mid, &hi)?;
        lo = enough.where_cond(&lo, &mid)?;
    }
    Ok(hi)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{Rng, SeedableRng};

    /// Independent reference: sort (key, index) pairs in f64 with the documented rule and keep
    /// the first `count` of each row.
    fn reference(rows: &[Vec<f32>], count: usize) -> Vec<Vec<f32>> {
        rows.iter()
            .map(|row| {
                let mut order: Vec<usize> = (0..row.len()).collect();
                let rank = |x: f32| -> (f64, bool) { (x as f64, x == 0.0 && x.is_sign_positive()) };
                order.sort_by(|&a, &b| {
                    let (ka, pa) = rank(row[a]);
                    let (kb, pb) = rank(row[b]);
                    kb.partial_cmp(&ka)
                        .unwrap()
                        .then(pb.cmp(&pa))
                        .then(a.cmp(&b))
                });
                let mut out = vec![0f32; row.len()];
                for &i in order.iter().take(count) {
                    out[i] = 1.0;
                }
                out
            })
            .collect()
    }

    fn tensor(rows: &[Vec<f32>]) -> Tensor {
        let n = rows[0].len();
        let flat: Vec<f32> = rows.iter().flatten().copied().collect();
        Tensor::from_vec(flat, (rows.len(), n), &Device::Cpu).unwrap()
    }

    fn tie_heavy(seed: u64, g: usize, m: usize, levels: i32) -> Vec<Vec<f32>> {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
        (0..g)
            .map(|_| {
                (0..m)
                    .map(|_| match rng.random_range(0..10) {
                        0 => 0.0,
                        1 => -0.0,
                        2 => rng.random_range(-1e-3f32..1e-3),
                        _ => rng.random_range(-levels..=levels) as f32 * 0.25,
                    })
                    .collect()
            })
            .collect()
    }

    #[test]
    fn matches_sorted_reference_on_tie_heavy_rows() {
        for (seed, g, m, levels) in [
            (1, 7, 33, 2),
            (2, 5, 200, 6),
            (3, 1, 1000, 3),
            (4, 16, 64, 0),
        ] {
            let rows = tie_heavy(seed, g, m, levels);
            let t = tensor(&rows);
            for count in [1, 2, 5, m / 3, m / 2, m - 1, m, m + 3] {
                let got = exact_topk_mask(&t, count)
                    .unwrap()
                    .to_vec2::<f32>()
                    .unwrap();
                assert_eq!(got, reference(&rows, count), "seed {seed} count {count}");
                // The CPU kernel follows the same rule.
                let kernel = crate::sae::model::activation::row_topk_mask(&t, count, false)
                    .unwrap()
                    .to_vec2::<f32>()
                    .unwrap();
                assert_eq!(kernel, got, "kernel, seed {seed} count {count}");
                for row in &got {
                    let kept = row.iter().filter(|&&x| x == 1.0).count();
                    assert_eq!(kept, count.min(m));
                }
            }
        }
    }

    #[test]
    fn infinities_and_extremes_are_ranked() {
        let rows = vec![vec![
            f32::INFINITY,
            f32::NEG_INFINITY,
            f32::MAX,
            -f32::MAX,
            f32::MIN_POSITIVE,
            1e-45,
            -1e-45,
            f32::INFINITY,
            0.0,
        ]];
        let t = tensor(&rows);
        for count in 0..=9 {
            let got = exact_topk_mask(&t, count)
                .unwrap()
                .to_vec2::<f32>()
                .unwrap();
            assert_eq!(got, reference(&rows, count), "count {count}");
        }
    }
}
